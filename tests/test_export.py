"""`python -m study export --tensorboard DIR`: a fabricated study's trials as HParams runs, read back by TensorBoard."""

from __future__ import annotations

import json
import re
import subprocess

import pandas as pd
import pytest
from conftest import PYTHON, ROOT, fake_result, tiny_space_dict
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import api_pb2, metadata

from study.errors import StudyError
from study.export import MARKER, export_tensorboard
from study.space import parse_space
from study.store import ResultsStore

EPOCHS = 6


def make_study(tmp_path, space_dict: dict, fraction: float = 1.0) -> ResultsStore:
    """A fabricated study with the first `fraction` of its trials finished (as tests/test_report.py makes them)."""
    space = parse_space(space_dict)
    store = ResultsStore(tmp_path / "results" / space.name)
    store.begin(space, engine="fake")
    trials = space.trials()[: int(len(space.trials()) * fraction)]
    store.commit([fake_result(t, 0.6 + 0.3 * t.config["dropout_rate"], epochs=EPOCHS) for t in trials])
    store.finish(len(trials), 0)
    return store


def read_back(folder) -> EventMultiplexer:
    """The log directory as TensorBoard loads it: one run per folder holding event files, '.' for the top."""
    return EventMultiplexer().AddRunsFromDirectory(str(folder)).Reload()


def hparams_of(mux: EventMultiplexer, run: str) -> dict:
    content = mux.GetAccumulator(run).PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
    start = metadata.parse_session_start_info_plugin_data(content)
    return {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}


@pytest.mark.parametrize("validation_size", [None, 10])
def test_export_writes_one_hparams_run_per_trial_that_tensorboard_reads(tmp_path, validation_size) -> None:
    split = {"train_size": 30, "validation_size": validation_size} if validation_size else {"train_size": 30}
    axes = {"dropout_rate": [0.0, 0.5], "max_norm": [None, 3.0]}
    store = make_study(tmp_path, tiny_space_dict(axes=axes, dataset={"name": "circles", "split": split}))
    out = tmp_path / "tb"
    done = export_tensorboard(store.folder, out)
    trials = store.trials()
    assert done.runs == len(trials) == 8 and done.hparams == ("dropout_rate", "max_norm", "seed")

    mux = read_back(out)
    assert set(mux.Runs()) == {".", *trials["trial_key"]}  # the experiment at the top, a run per trial
    curves = store.curves()
    for row in trials.itertuples():
        hparams = hparams_of(mux, row.trial_key)
        max_norm = 0.0 if pd.isna(row.max_norm) else row.max_norm  # none as 0: a limit is positive
        assert hparams == {"dropout_rate": row.dropout_rate, "max_norm": max_norm, "seed": row.seed}
        run = mux.GetAccumulator(row.trial_key)
        epochs = int((curves["trial_key"] == row.trial_key).sum())
        assert epochs == EPOCHS
        series = [f"epoch/{m}" for m in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")]
        series += [f"epoch/validation_{m}" for m in ("loss", "accuracy") if validation_size]
        assert sorted(t for t in run.Tags()["scalars"] if t.startswith("epoch/")) == sorted(series)  # NaN: skipped
        for tag in series:
            assert [e.step for e in run.Scalars(tag)] == list(range(1, epochs + 1))
        assert run.Scalars("final/test_accuracy")[-1].value == pytest.approx(row.test_accuracy, abs=1e-6)
        assert run.Scalars("final/test_accuracy")[-1].step == epochs
        end = metadata.parse_session_end_info_plugin_data(
            run.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_END_INFO_TAG]
        )
        assert end.status == api_pb2.STATUS_SUCCESS

    content = mux.GetAccumulator(".").PluginTagToContent(metadata.PLUGIN_NAME)[metadata.EXPERIMENT_TAG]
    experiment = metadata.parse_experiment_plugin_data(content)
    metrics = ["train_accuracy", "train_loss"]  # every metric column the trials record, in trials.csv's order
    metrics += ["validation_accuracy", "validation_loss"] if validation_size else []
    metrics += ["test_accuracy", "test_loss"]
    assert [m.name.tag for m in experiment.metric_infos] == [f"final/{m}" for m in metrics]
    domains = {h.name: h for h in experiment.hparam_infos}
    assert list(domains) == ["dropout_rate", "max_norm", "seed"]
    assert list(domains["dropout_rate"].domain_discrete) == [0.0, 0.5]
    assert list(domains["max_norm"].domain_discrete) == [0.0, 3.0]
    assert (domains["seed"].domain_interval.min_value, domains["seed"].domain_interval.max_value) == (0, 1)


def test_widths_are_written_as_trials_csv_writes_them(tmp_path) -> None:
    store = make_study(tmp_path, tiny_space_dict(axes={"dropout_rate": [0.5], "hidden_units": [[8], [16, 8]]}))
    export_tensorboard(store.folder, tmp_path / "tb")
    mux = read_back(tmp_path / "tb")
    widths = {hparams_of(mux, key)["hidden_units"] for key in store.trials()["trial_key"]}
    assert widths == {"8", "16-8"} == set(store.trials()["hidden_units"])
    assert "dropout_rate" not in hparams_of(mux, store.trials()["trial_key"][0])  # only the axes the study varies


def test_a_rerun_replaces_the_runs_of_a_partly_finished_study(tmp_path) -> None:
    space_dict = tiny_space_dict(seeds=4)
    store = make_study(tmp_path, space_dict, fraction=0.5)
    out = tmp_path / "tb"
    assert export_tensorboard(store.folder, out).runs == 4
    rest = parse_space(space_dict).trials()[4:]
    store.commit([fake_result(t, 0.7, epochs=EPOCHS) for t in rest])
    done = export_tensorboard(store.folder, out)
    assert (done.runs, done.planned) == (8, 8)
    export_tensorboard(store.folder, out)  # and once more: the same runs, never a second copy
    mux = read_back(out)
    assert len(mux.Runs()) == 9
    for key in store.trials()["trial_key"]:
        assert len(list((out / key).glob("events.out.tfevents.*"))) == 1
        assert len(mux.GetAccumulator(key).Scalars("epoch/test_accuracy")) == EPOCHS
    assert json.loads((out / MARKER).read_text())["runs"] == sorted(store.trials()["trial_key"])


def test_a_folder_that_is_no_export_of_the_study_is_refused(tmp_path) -> None:
    store = make_study(tmp_path, tiny_space_dict())
    other = make_study(tmp_path, tiny_space_dict(name="other"))
    export_tensorboard(other.folder, tmp_path / "tb-other")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    (tmp_path / "a-file").write_text("")
    refusals = {
        "tb-other": "holds an export of another study ('other'",
        "notes": "is not empty and holds no earlier export",
        "a-file": "is a file, not a folder",
    }
    for name, message in refusals.items():
        with pytest.raises(StudyError, match=re.escape(message)):
            export_tensorboard(store.folder, tmp_path / name)
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["keep.txt"]
    empty = ResultsStore(tmp_path / "results" / "empty")
    empty.begin(parse_space(tiny_space_dict(name="empty")), engine="fake")
    with pytest.raises(StudyError, match="has no finished trials yet"):
        export_tensorboard(empty.folder, tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


def test_export_of_a_missing_study_is_one_line_and_exit_status_2(tmp_path) -> None:
    command = [PYTHON, "-m", "study", "export", "--tensorboard", str(tmp_path / "tb"), str(tmp_path / "nothing")]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert str(tmp_path / "nothing") in proc.stderr and not (tmp_path / "tb").exists()


def test_the_export_command_never_imports_tensorflow_or_jax(tmp_path) -> None:
    store = make_study(tmp_path, tiny_space_dict())
    code = (
        "import sys; from study.cli import main; "
        "rc = main(['export', '--tensorboard', sys.argv[2], '--results-dir', sys.argv[1]]); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow imported'; "
        "assert 'jax' not in sys.modules, 'JAX imported'; "
        "raise SystemExit(rc)"
    )
    proc = subprocess.run(
        [PYTHON, "-c", code, str(store.folder.parent), str(tmp_path / "tb")], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert "4 of 4 planned trial(s)" in proc.stdout and "tensorboard --logdir" in proc.stdout
