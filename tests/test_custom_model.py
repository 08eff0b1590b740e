"""Model family custom: the user's compiled Keras model from a keras-tuner-style build(hp) next to the space file."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import PYTHON, ROOT, tiny_space_dict

from study.errors import StudyError
from study.space import load_space, parse_space

keras_engine = pytest.importorskip("study.engines.keras_engine")

EXAMPLE = ROOT / "search_spaces" / "custom_model.yaml"

# A build that records what it saw (hp values, the first kernel's initial sum) next to itself, one JSON line a call.
RECORDER = """
import json
from pathlib import Path

import keras


def build(hp):
    model = keras.Sequential([keras.Input((hp.get("n_features"),)), keras.layers.Dropout(hp.get("dropout_rate")),
                              keras.layers.Dense(hp.get("n_outputs"), activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(hp.get("learning_rate")), loss="binary_crossentropy",
                  metrics=["accuracy"])
    seen = {**hp.values, "kernel_sum": float(model.get_weights()[0].sum())}
    with open(Path(__file__).with_name("seen.jsonl"), "a") as out:
        out.write(json.dumps(seen) + "\\n")
    return model
"""


def custom_space(tmp_path: Path, source: str, build: str = "mine:build", **overrides):
    """The tiny space with model family custom, its build module `mine.py` (holding `source`) in tmp_path."""
    (tmp_path / "mine.py").write_text(textwrap.dedent(source))
    space = tiny_space_dict(model={"family": "custom", "build": build}, **overrides)
    return parse_space(space, source="custom.yaml", root=tmp_path)


def test_the_shipped_example_trains_on_the_keras_engine_and_says_custom() -> None:
    space = load_space(EXAMPLE, ["training.epochs=1", "seeds=1"])
    engine = keras_engine.KerasEngine()
    engine.check(space)
    results = engine.run_all(space.trials())
    assert len(results) == 2
    for result in results:
        assert result.row["status"] == "completed", result.row["error"]
        assert result.row["model"] == "custom my_models:build" and result.row["epochs_run"] == 1
        assert 0.0 <= result.row["test_accuracy"] <= 1.0 and len(result.curves) == 1


def test_hp_values_and_the_seed_reach_the_build(tmp_path: Path) -> None:
    space = custom_space(
        tmp_path,
        RECORDER,
        axes={"dropout_rate": [0.0, 0.5], "hidden_units": [[3, 2]], "learning_rate": [0.01]},
        seeds=[0, 7],
        training={"epochs": 1},
    )
    results = keras_engine.KerasEngine().run_all([*space.trials(), space.trials()[0]])
    assert all(r.ok for r in results), [r.row["error"] for r in results]
    seen = [json.loads(line) for line in (tmp_path / "seen.jsonl").read_text().splitlines()]
    assert [(s["dropout_rate"], s["seed"]) for s in seen] == [(0.0, 0), (0.5, 0), (0.0, 7), (0.5, 7), (0.0, 0)]
    first = seen[0]
    assert first["hidden_units"] == "3-2" and first["learning_rate"] == 0.01 and first["max_norm"] == 0.0
    assert (first["n_features"], first["n_classes"], first["n_outputs"]) == (2, 2, 1)
    assert first["task"] == "classification" and first["activation"] == "relu"
    assert "lstm_dropout" not in first and "conv_dropout" not in first, "another family's axis is not in hp"
    sums = [s["kernel_sum"] for s in seen]
    assert sums[0] == sums[4] != sums[2], "the initial weights follow the trial's seed"


def test_the_population_engine_is_refused_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [PYTHON, "-m", "study", "search", str(EXAMPLE), "--engine", "population", "--dry-run", "--results-dir",
         str(tmp_path / "results")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: model.family custom (my_models:build) runs on the keras engine only")
    assert proc.stderr.rstrip().endswith("pass --engine keras")
    assert not (tmp_path / "results").exists()


def test_a_missing_build_module_exits_2_from_the_cli(write_space, tmp_path: Path) -> None:
    path = write_space(tiny_space_dict(model={"family": "custom", "build": "nope:build"}))
    proc = subprocess.run(
        [PYTHON, "-m", "study", "search", str(path), "--engine", "keras", "--dry-run"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"model.build = 'nope:build': no module file nope.py in {tmp_path}" in proc.stderr


COMPILED = """
import keras


def model(n_in, n_out, **compile_args):
    net = keras.Sequential([keras.Input((n_in,)), keras.layers.Dense(n_out, activation="sigmoid")])
    net.compile(**compile_args)
    return net
"""
GOOD = {"optimizer": "adam", "loss": "binary_crossentropy", "metrics": ["accuracy"]}


@pytest.mark.parametrize(
    ("source", "build", "expected"),
    [
        ("def build(hp):\n    pass\n", "missing:build", "model.build = 'missing:build': no module file missing.py in "),
        ("import not_a_module_xyz\n", "mine:build", "importing mine.py failed: ModuleNotFoundError: No module named "
                                                    "'not_a_module_xyz'"),
        ("def build(hp):\n    pass\n", "mine:buld", "mine.py has no 'buld' (did you mean 'build'?)"),
        ("build = 3\n", "mine:build", "mine.build is 3, not a function: model.build names a build(hp)"),
        ("def build(hp):\n    raise ValueError('boom')\n", "mine:build", "build(hp) raised ValueError: boom"),
        ("def build(hp):\n    return hp.get('lstm_dropout')\n", "mine:build",
         "build(hp) raised KeyError: 'lstm_dropout does not exist.' (hp holds: dropout_rate, input_dropout, "),
        ("def build(hp):\n    return 42\n", "mine:build", "build(hp) returned 42, not a keras.Model"),
        (COMPILED + "def build(hp):\n    return model(2, 1)\n", "mine:build", "the model build(hp) returned is not "
                                                                              "compiled: call model.compile("),
        (COMPILED + "def build(hp):\n    return model(5, 1, **GOOD)\n", "mine:build",
         "the model does not fit the data (2 features in, 1 output(s) and labels for 2 classes; hp.get('n_features'), "
         "hp.get('n_outputs')): ValueError: Input 0 with name 'None' of layer '"),
        (COMPILED + "def build(hp):\n    return model(2, 1, optimizer='adam', loss='binary_crossentropy')\n",
         "mine:build", "the model reports no 'accuracy', which the engine records for every epoch: compile it with "
                       "metrics=['accuracy'] (it reports loss)"),
    ],
    ids=["module-missing", "import-fails", "attribute-missing", "not-callable", "raises", "unknown-hp",
         "not-a-model", "not-compiled", "wrong-shape", "no-accuracy"],
)  # fmt: skip
def test_each_bad_build_gets_one_line_naming_model_build(source: str, build: str, expected: str, tmp_path) -> None:
    with pytest.raises(StudyError) as info:
        keras_engine.KerasEngine().check(custom_space(tmp_path, source.replace("**GOOD", f"**{GOOD}"), build))
    message = str(info.value)
    assert expected in message
    assert f"model.build = '{build}': " in message
    assert message.count("\n") <= 1, "at most the search space's heading line and the problem's"


def test_the_module_s_content_is_in_the_fingerprint_and_other_studies_keep_theirs(tmp_path: Path) -> None:
    first = custom_space(tmp_path, RECORDER)
    again = custom_space(tmp_path, RECORDER)
    changed = custom_space(tmp_path, RECORDER + "\n# a changed build is a different study\n")
    assert first.fingerprint() == again.fingerprint() != changed.fingerprint()
    assert first.trials()[0].key == again.trials()[0].key != changed.trials()[0].key
    assert "build" not in parse_space(tiny_space_dict()).definition()["model"], "unset: left out of hashes"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"family": "custom"}, "model family custom needs model.build: 'module:function'"),
        ({"family": "mlp", "build": "mine:build"}, "model.build applies to model family custom only"),
        ({"family": "custom", "build": "mine.py"}, "model.build = 'mine.py': must be 'module:function'"),
    ],
)
def test_model_build_is_required_for_custom_and_only_there(model: dict, expected: str, tmp_path: Path) -> None:
    with pytest.raises(StudyError, match=re.escape(expected)):
        parse_space(tiny_space_dict(model=model), root=tmp_path)


def test_custom_takes_the_regularisation_axes_but_not_another_family_s(tmp_path: Path) -> None:
    space = custom_space(tmp_path, RECORDER, axes={"batch_norm": [False, True], "max_norm": [None, 3.0]})
    assert space.n_configurations == 4
    with pytest.raises(StudyError, match=r"axes\.lstm_dropout does not apply to model family custom"):
        custom_space(tmp_path, RECORDER, axes={"lstm_dropout": [0.0, 0.2]})


def test_a_custom_model_runs_on_plain_keras_when_no_engine_is_named() -> None:
    proc = subprocess.run([PYTHON, "-m", "study", "search", "search_spaces/custom_model.yaml", "--dry-run"],
                          capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "on engine 'keras'" in proc.stdout
