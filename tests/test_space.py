"""Search-space files: shipped spaces are valid, and every kind of bad input gets one clear message."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import PYTHON, ROOT, tiny_space_dict

from study.axes import ADDED_AXES, AXES
from study.errors import StudyError
from study.space import load_space, parse_space

# The tiny space's first trial key and fingerprint as computed before the cnn/rnn families existed.
KEY_BEFORE_FAMILIES = "5625187708a5-s0"
FINGERPRINT_BEFORE_FAMILIES = "02ac1d8ddafb98f9aa1ee50c18c49067cfc69df1599376e29a51fc01ff0227a5"


@pytest.mark.parametrize(
    ("file", "trials"),
    [
        ("tutorial.yaml", 300),
        ("regularization.yaml", 2700),
        ("tabular.yaml", 480),
        ("smoke.yaml", 12),
        ("learning_rate.yaml", 200),
        ("csv_example.yaml", 80),
        ("regression.yaml", 100),
    ],
)
def test_shipped_spaces_are_valid_with_expected_trial_counts(file: str, trials: int) -> None:
    space = load_space(ROOT / "search_spaces" / file)
    assert space.n_trials == trials == len(space.trials())
    assert len({t.key for t in space.trials()}) == trials


def test_tutorial_is_the_reference_experiment() -> None:
    space = load_space(ROOT / "search_spaces" / "tutorial.yaml")
    assert space.dataset.name == "circles" and space.dataset.params == {
        "n_samples": 100,
        "noise": 0.1,
        "random_state": 1,
    }
    assert space.dataset.split.train_size == 30 and not space.dataset.split.shuffle
    assert space.model.hidden_units == [500] and space.model.activation == "relu"
    assert space.training.epochs == 4000 and space.training.batch_size == 32
    assert space.swept_axes() == {"dropout_rate": [round(0.1 * i, 1) for i in range(10)]}
    assert space.seeds == list(range(30))


def _problems(**overrides) -> str:
    with pytest.raises(StudyError) as info:
        parse_space(tiny_space_dict(**overrides), source="bad.yaml")
    return str(info.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"axes": {"dropout_rte": [0.1]}}, "unknown key 'dropout_rte' in axes (did you mean 'dropout_rate'?)"),
        ({"trainig": {"epochs": 3}}, "unknown key 'trainig' (did you mean 'training'?)"),
        ({"axes": {"dropout_rate": [0.0, 1.0]}}, "axes.dropout_rate[1] = 1.0: a rate must be in [0, 0.999]"),
        ({"axes": {"input_dropout": [-0.1]}}, "axes.input_dropout[0] = -0.1: a rate must be in [0, 0.999]"),
        ({"axes": {"max_norm": [None, 0]}}, "axes.max_norm[1] = 0: a max-norm must be from 1e-06 to 1e6"),
        ({"axes": {"l2": [-1e-3]}}, "axes.l2[0] = -0.001: an L2 strength must be from 0 to 100"),
        ({"axes": {"l2": []}}, "axes.l2: an axis needs at least one value"),
        ({"axes": {"dropout_rate": [0.1, 0.2, 0.1]}}, "duplicate value 0.1"),
        ({"dataset": {"name": "circels"}}, "dataset.name = 'circels': unknown dataset (did you mean 'circles'?)"),
        ({"dataset": {"name": "moons", "params": {"nois": 0.1}}}, "unknown parameter 'nois' for dataset 'moons'"),
        ({"model": {"family": "cnnn"}}, "model.family = 'cnnn': unknown model family"),
        ({"seeds": [1, 2.5]}, "seeds: seeds must be integers from 0 to 4294967295 (32-bit); 2.5 is not"),
        ({"seeds": [3, 3]}, "duplicate seed 3"),
        ({"seeds": 0}, "seeds = 0: a seed count must be a positive integer"),
        ({"training": {"epochs": 0}}, "training.epochs = 0"),
        ({"axes": {"batch_norm": ["yes"]}}, "axes.batch_norm[0] = 'yes': Input should be a valid boolean"),
    ],
)
def test_bad_input_gets_a_message_naming_field_value_and_rule(overrides: dict, expected: str) -> None:
    assert expected in _problems(**overrides)


def test_every_problem_is_listed_once() -> None:
    message = _problems(axes={"dropout_rate": [1.5], "l2": [-1.0]}, seeds=[1, 1])
    assert "(3 problems)" in message
    assert message.count("dropout_rate") == 1 and message.count("axes.l2") == 1


def test_unreadable_yaml_names_the_line(write_space) -> None:
    path = write_space("name: x\naxes: {dropout_rate: [0.1, 0.2\n")
    with pytest.raises(StudyError, match=r"is not valid YAML at line \d+, column \d+"):
        load_space(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match=r"cannot read search space .*nope\.yaml"):
        load_space(tmp_path / "nope.yaml")


def test_cli_reports_bad_space_without_traceback_and_exits_non_zero(write_space) -> None:
    path = write_space(tiny_space_dict(axes={"dropout_rate": [1.2]}))
    proc = subprocess.run(
        [PYTHON, "-m", "study", "search", str(path), "--dry-run"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2
    assert "a rate must be in [0, 0.999]" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_axes_not_swept_take_their_off_values_and_the_training_settings(tiny_space) -> None:
    config = tiny_space.configurations()[0]
    assert set(config) == set(AXES)
    assert config | {"dropout_rate": 0.0} == {
        "dropout_rate": 0.0,
        "input_dropout": 0.0,
        "conv_dropout": 0.0,
        "pool_dropout": 0.0,
        "spatial_dropout": 0.0,
        "lstm_dropout": 0.0,
        "recurrent_dropout": 0.0,
        "max_norm": None,
        "l2": 0.0,
        "batch_norm": False,
        "hidden_units": (8,),
        "early_stopping": False,
        "learning_rate": tiny_space.training.optimizer.learning_rate,
        "epochs": tiny_space.training.epochs,
        "batch_size": tiny_space.training.batch_size,
    }


DIGITS = {"name": "digits"}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"axes": {"spatial_dropout": [0.1]}}, "axes.spatial_dropout does not apply to model family mlp"),
        (
            {"dataset": DIGITS, "model": {"family": "rnn", "hidden_units": [8]}, "axes": {"batch_norm": [True]}},
            "axes.batch_norm does not apply to model family rnn",
        ),
        (
            {"dataset": DIGITS, "model": {"family": "cnn", "hidden_units": [8]}, "axes": {"recurrent_dropout": [0.2]}},
            "applies to rnn",
        ),
        ({"model": {"family": "cnn", "hidden_units": [8]}}, "model family cnn needs an image dataset (digits)"),
        ({"dataset": DIGITS, "model": {"family": "rnn", "hidden_units": [8, 4]}}, "one LSTM layer"),
        ({"model": {"family": "mlp", "filters": [8]}}, "filters applies to model family cnn only"),
        (
            {"dataset": DIGITS, "model": {"family": "cnn", "hidden_units": [8]}, "axes": {"conv_dropout": [1.0]}},
            "axes.conv_dropout[0] = 1.0: a rate must be in [0, 0.999]",
        ),
    ],
)
def test_family_axes_and_models_are_validated(overrides: dict, message: str) -> None:
    with pytest.raises(StudyError) as err:
        parse_space(tiny_space_dict(**overrides))
    assert message in str(err.value)


def test_cnn_and_rnn_get_their_family_defaults() -> None:
    cnn = parse_space(tiny_space_dict(dataset=DIGITS, model={"family": "cnn"}, axes={"spatial_dropout": [0, 0.2]}))
    assert cnn.model.filters == [16, 32] and cnn.model.activation == "relu"
    rnn = parse_space(tiny_space_dict(dataset=DIGITS, model={"family": "rnn", "hidden_units": [32]}))
    assert rnn.model.activation == "tanh" and rnn.model.filters is None


def test_mlp_keys_and_fingerprints_did_not_change_when_families_were_added(tiny_space) -> None:
    # Recorded before the cnn/rnn axes existed: results folders written then must still resume.
    assert tiny_space.trials()[0].key == KEY_BEFORE_FAMILIES
    assert tiny_space.fingerprint() == FINGERPRINT_BEFORE_FAMILIES


def test_width_axis_int_sets_every_hidden_layer() -> None:
    space = parse_space(tiny_space_dict(model={"hidden_units": [16, 8]}, axes={"hidden_units": [4, [6, 2]]}))
    assert space.swept_axes()["hidden_units"] == [(4, 4), (6, 2)]


def test_trial_keys_are_stable_and_distinguish_seed_and_configuration(tiny_space) -> None:
    keys = [t.key for t in tiny_space.trials()]
    again = [t.key for t in parse_space(tiny_space_dict()).trials()]
    assert keys == again and len(set(keys)) == 4
    other_epochs = parse_space(tiny_space_dict(training={"epochs": 6})).trials()
    assert not set(keys) & {t.key for t in other_epochs}


# --- every field checked before anything runs, the data included; nothing unbounded -----------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"dataset": {"name": "circles", "split": {"train_size": 100}}},
            "dataset.split.train_size = 100: leaves no test",
        ),
        ({"dataset": {"name": "circles", "split": {"train_size": 0.999}}}, "train_size = 0.999: leaves no test rows"),
        ({"dataset": {"name": "circles", "split": {"train_size": 0.001}}}, "leaves no training rows out of 100"),
        (
            {"dataset": {"name": "circles", "split": {"train_size": True}}},
            "train_size = True: must be a number of rows",
        ),
        (
            {"dataset": {"name": "circles", "split": {"train_size": 30, "validation_size": 30}}},
            "dataset.split.validation_size = 30: must leave at least one training and one validation row",
        ),
        (
            {"dataset": {"name": "circles", "split": {"train_size": 30, "validation_size": 0.001}}},
            "validation_size = 0.001: must leave at least one training and one validation row",
        ),
        ({"dataset": {"name": "digits", "redraw_data": True}}, "digits is a fixed dataset, not drawn from a generator"),
        (
            {"dataset": {"name": "circles", "redraw_data": True, "params": {"random_state": 3}}},
            "redraw_data replaces params.random_state with each seed",
        ),
        ({"nuisance": ["dropout_rate"]}, "nuisance[0]: dropout_rate is a regulariser"),
        ({"nuisance": ["learning_rate"]}, "nuisance[0]: learning_rate must be swept"),
        ({"nuisance": ["learnin_rate"]}, "nuisance[0]: unknown axis 'learnin_rate' (did you mean 'learning_rate'?)"),
        ({"axes": {"learning_rate": [0.0]}}, "axes.learning_rate[0] = 0.0: Input should be greater than 0"),
        ({"axes": {"epochs": [10, 0]}}, "axes.epochs[1] = 0: Input should be greater than 0"),
        (
            {"dataset": {"name": "circles", "params": {"noise": "high"}}},
            "dataset.params.noise = 'high': must be a float in the range [0.0, inf) or None (make_circles's rule)",
        ),
        (
            {"dataset": {"name": "circles", "params": {"n_samples": -5}}},
            "dataset.params.n_samples = -5: must be an int",
        ),
        ({"dataset": {"name": "moons", "params": {"n_samples": 10**11}}}, "n_samples = 100000000000: must be at most"),
        ({"dataset": {"name": "circles", "params": {"noise": float("inf")}}}, "noise = inf: must be a finite number"),
        ({"dataset": {"name": "circles", "params": {"random_state": None}}}, "random_state = None: must be an integer"),
        ({"dataset": {"name": "circles", "params": {"n_samples": [5, 5, 5]}}}, "make_circles refused them"),
        ({"dataset": {"name": "classification", "params": {"n_features": 3}}}, "make_classification refused them"),
        ({"dataset": {"name": "classification", "params": {"n_classes": 1}}}, "labels have one class"),
        ({"dataset": {"name": "moons", "params": {"noise": 1e308}}}, "features overflow float32"),
        ({"dataset": {"name": "classification", "params": {"scale": 1e300}}}, "features overflow float32"),
        ({"dataset": {"name": "circles", "params": {"n_samples": True}}}, "n_samples = True: must be a whole number"),
        (
            {
                "dataset": {
                    "name": "classification",
                    "params": {
                        "n_classes": 1000,
                        "n_clusters_per_class": 100,
                        "n_informative": 2000,
                        "n_features": 2000,
                    },
                }
            },
            "make_classification would need about",
        ),
        ({"model": {"family": "cnn", "filters": None}, "dataset": {"name": "digits"}}, "a cnn needs model.filters"),
        ({"model": {"hidden_units": [4]}, "axes": {"hidden_units": [4, [4]]}}, "4 and [4] are the same setting"),
        ({"axes": {"dropout_rate": [-0.0, 0.0]}}, "duplicate value 0.0"),
        ({"axes": {"dropout_rate": [0.99999999]}}, "a rate must be in [0, 0.999]"),
        ({"training": {"epochs": 3, "optimizer": {"beta_1": 0.99999999999}}}, "beta_1 = 0.99999999999: Input should"),
        ({"training": {"epochs": 3, "optimizer": {"learning_rate": 1e300}}}, "learning_rate = 1e+300: Input should"),
        ({"axes": {"l2": [1e300]}}, "an L2 strength must be from 0 to 100"),
        ({"axes": {"max_norm": [1e-320]}}, "a max-norm must be from 1e-06 to 1e6"),
        ({"dataset": {"name": "classification", "params": {"weights": [[0.5], 0.5]}}}, "weights = [[0.5], 0.5]: must"),
        ({"seeds": 1_000_000_000}, "seeds = 1000000000: at most 10,000 seeds"),
        ({"seeds": [2**32]}, "seeds must be integers from 0 to 4294967295 (32-bit); 4294967296 is not"),
        ({"training": {"epochs": 10**7}}, "training.epochs = 10000000: Input should be less than or equal to 1000000"),
        (
            {"training": {"epochs": 3, "optimizer": {"learning_rate": float("nan")}}},
            "learning_rate = nan: Input should",
        ),
        ({"axes": {"max_norm": [float("inf")]}}, "axes.max_norm[0] = inf: Input should be a finite number"),
        ({"model": {"hidden_units": [8000, 8000, 8000]}}, "model: 128,048,001 weights per trial"),
        ({"model": {"hidden_units": [8] * 17}}, "model.hidden_units: List should have at most 16 items"),
        ({"axes": {"hidden_units": [[8] * 17]}}, "at most 16 layers of at most 8192 units each"),
        ({"name": "a b"}, "name = 'a b': must be 1 to 80 letters, digits"),
        ({"model": [1, 2]}, "model: Input should be a valid dictionary"),
        (
            {
                "axes": {"dropout_rate": [i / 100 for i in range(100)], "l2": [i / 100 for i in range(100)]},
                "seeds": 200,
            },
            "the grid has 2,000,000 trials (10,000 configurations x 200 seeds); at most 1,000,000 per study",
        ),
        (
            {"dataset": {"name": "digits"}, "model": {"family": "cnn", "filters": [4, 4, 4, 4], "hidden_units": [8]}},
            "model.filters: 4 conv blocks pool the 8x8 image below one pixel",
        ),
    ],
)
def test_every_field_is_checked_before_anything_runs(overrides: dict, expected: str) -> None:
    message = _problems(**overrides)
    assert expected in message
    assert "Traceback" not in message and len(message.splitlines()) == 2, "one line per problem"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\nseeds: 2\nseeds: 3\n", "key 'seeds' appears twice in one mapping"),
        ("a: " + "[" * 20000 + "]" * 20000, "nests too deeply"),
        (b"\xff\xfe".decode("latin-1"), "is not UTF-8 text"),
        ("name: !!python/object:os.system ls\n", "could not determine a constructor"),
        ("- a\n- b\n", "must be a YAML mapping"),
        ("name: x\nseeds: !!int abc\n", "at line 2, column 8: cannot read 'abc' as a int"),
        ("name: x\ndescription: 2024-13-45\n", "at line 2, column 14: cannot read '2024-13-45' as a timestamp"),
        ("name: x\nseeds: 0x" + "f" * 40 + "\n", "integer too large"),
        ("name: x\n1: 2\n", "key 1 is not a name"),
        ("name: x\x00\n", "character #x0000 at byte 7"),
        (
            "a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
            "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
            "e: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
            "expands to more than 100,000",
        ),
        ("name: x\nseeds: &s [1, *s]\n", "an alias \\(\\*name\\) inside the value it names"),
    ],
    ids=[
        "duplicate-key",
        "deep",
        "binary",
        "python-tag",
        "list",
        "bad-int-tag",
        "bad-date",
        "huge-int",
        "int-key",
        "nul",
        "alias-bomb",
        "alias-cycle",
    ],
)
def test_malformed_files_get_one_message(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(StudyError, match=expected):
        load_space(path)


def test_an_oversized_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("# " + "x" * 2_000_000)
    with pytest.raises(StudyError, match="is larger than 1,000,000 bytes"):
        load_space(path)


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/dev/zero", "not a regular file"), ("", "no search-space file named")],
    ids=["device", "empty"],
)
def test_only_a_regular_file_is_read(path: str, expected: str) -> None:
    with pytest.raises(StudyError, match=expected):
        load_space(path)


def test_a_pipe_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "space.yaml"
    os.mkfifo(fifo)
    with pytest.raises(StudyError, match="not a regular file"):
        load_space(fifo)


def test_a_list_of_many_bad_values_is_reported_in_a_few_lines() -> None:
    message = _problems(axes={"dropout_rate": list(range(2, 1000))})
    assert "axes.dropout_rate: 995 more problem(s) like these" in message
    assert len(message.splitlines()) == 5


def test_yaml_merge_keys_and_base_60_lookalikes_read_as_yaml_1_2_would(write_space) -> None:
    text = (
        "name: merged\ndataset: {name: circles, split: {train_size: 30}}\ntraining: {epochs: 3}\nseeds: 2\n"
        "model: {<<: {hidden_units: [8], activation: relu}, activation: tanh}\ndescription: 1:30\n"
    )
    space = load_space(write_space(text))
    assert space.model.hidden_units == [8] and space.model.activation == "tanh"  # merged, then overridden
    assert space.description == "1:30"  # YAML 1.1 would read 90


@pytest.mark.parametrize(
    "space",
    [
        tiny_space_dict(seeds=1_000_000_000),
        tiny_space_dict(dataset={"name": "classification", "params": {"n_samples": 10**10, "n_features": 10**6}}),
        tiny_space_dict(axes={"dropout_rate": [i / 1000 for i in range(1000)], "l2": [i / 1000 for i in range(1000)]}),
    ],
    ids=["seeds", "rows", "grid"],
)
def test_a_dry_run_of_any_size_answers_at_once_with_exit_status_2(space: dict, write_space, tmp_path: Path) -> None:
    path = write_space(space)
    proc = subprocess.run(
        [PYTHON, "-m", "study", "search", str(path), "--dry-run", "--results-dir", str(tmp_path / "results")],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "at most" in proc.stderr
    assert not (tmp_path / "results").exists(), "nothing is written for bad input"


def test_the_largest_allowed_grid_dry_runs_in_seconds(write_space, tmp_path: Path) -> None:
    rates = [i / 100 for i in range(100)]
    path = write_space(tiny_space_dict(axes={"dropout_rate": rates, "l2": rates}, seeds=100))  # 1,000,000 trials
    proc = subprocess.run(
        [PYTHON, "-m", "study", "search", str(path), "--dry-run", "--results-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "= 1000000" in proc.stdout


def test_a_validation_split_holds_out_training_rows_and_redraw_data_follows_the_seed() -> None:
    from study.engines.base import split_for

    space = parse_space(
        tiny_space_dict(dataset={"name": "circles", "split": {"train_size": 40, "validation_size": 0.25},
                                 "redraw_data": True})
    )  # fmt: skip
    first, second = (split_for(t) for t in space.trials()[::2][:2])
    assert first.shape["n_train"] == 30 and first.shape["n_validation"] == 10 and first.shape["n_test"] == 60
    assert not np.array_equal(first.x_train, second.x_train)  # seeds 0 and 1 draw different data


def test_sweeping_a_training_setting_keeps_other_studies_keys_and_sets_the_trial() -> None:
    plain = parse_space(tiny_space_dict())
    swept = parse_space(tiny_space_dict(axes={"dropout_rate": [0.0, 0.5], "learning_rate": [0.001, 0.01]}))
    assert "learning_rate" not in plain.keyed_axes and "learning_rate" in swept.keyed_axes
    assert sorted({t.learning_rate for t in swept.trials()}) == [0.001, 0.01]
    definition = plain.definition()
    assert "validation_size" not in definition["dataset"]["split"] and "redraw_data" not in definition["dataset"]
    assert "nuisance" not in definition and not set(ADDED_AXES) & set(definition["axes"])
