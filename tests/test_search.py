"""The search driver end to end: results on disk, resume after SIGKILL, failures in the exit status."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pandas as pd
import pytest
from conftest import PYTHON, ROOT, tiny_space_dict

from study import cli
from study.space import parse_space

pytest.importorskip("study.engines.keras_engine")


def test_search_writes_table_curves_and_manifest_then_resumes_with_nothing_to_do(write_space, tmp_path) -> None:
    path = write_space(tiny_space_dict())
    assert cli.main(["search", str(path), "--results-dir", str(tmp_path), "--quiet"]) == 0
    folder = tmp_path / "tiny"
    table = pd.read_csv(folder / "trials.csv")
    assert len(table) == 4 and set(table["status"]) == {"completed"} and table["trial_key"].is_unique
    assert (folder / "manifest.json").exists() and list((folder / "curves").glob("*.parquet"))
    before = (folder / "trials.csv").read_text()
    assert cli.main(["search", str(path), "--results-dir", str(tmp_path), "--quiet"]) == 0
    assert (folder / "trials.csv").read_text() == before


def test_a_study_grown_by_seeds_and_an_axis_value_runs_only_the_new_trials(write_space, tmp_path, capsys) -> None:
    path = write_space(tiny_space_dict(seeds=3))
    argv = ["search", str(path), "--results-dir", str(tmp_path), "--quiet"]
    assert cli.main(argv) == 0
    folder = tmp_path / "tiny"
    before = pd.read_csv(folder / "trials.csv").set_index("trial_key")["finished_at"]
    grown = tiny_space_dict(seeds=5, axes={"dropout_rate": [0.0, 0.5, 0.7]})
    write_space(grown)
    capsys.readouterr()
    assert cli.main([*argv, "--dry-run"]) == 0
    grows = f"{folder}: 6 trials done; the study grows to 15 trials (seeds 3 -> 5, dropout_rate +[0.7]): 9 to run"
    assert grows in capsys.readouterr().out
    assert cli.main(argv) == 0
    assert "ran 9 trial(s)" in capsys.readouterr().out
    table = pd.read_csv(folder / "trials.csv")
    assert set(table["trial_key"]) == {t.key for t in parse_space(grown).trials()} and table["trial_key"].is_unique
    assert table.set_index("trial_key").loc[before.index, "finished_at"].tolist() == before.tolist(), "trials redone"
    run = json.loads((folder / "manifest.json").read_text())["runs"][-1]
    assert run["trials_run"] == 9 and run["added"] == "seeds 3 -> 5, dropout_rate +[0.7]"

    for changed, message in [
        ({**grown, "training": {"epochs": 6}}, "(training.epochs 5 -> 6): that changes what every finished trial"),
        ({**grown, "seeds": 4}, "leaves out (seeds -[4])"),
    ]:
        write_space(changed)
        for dry_run in (["--dry-run"], []):
            assert cli.main([*argv, *dry_run]) == 2
            err = capsys.readouterr().err
            assert err.startswith("error: ") and len(err.splitlines()) == 1 and message in err
    assert len(pd.read_csv(folder / "trials.csv")) == 15


@pytest.mark.parametrize(
    "model, axes",
    [
        ({"family": "cnn", "filters": [4], "hidden_units": [8]}, {"spatial_dropout": [0.0, 0.2]}),
        ({"family": "rnn", "hidden_units": [8]}, {"recurrent_dropout": [0.0, 0.2]}),
    ],
    ids=["cnn", "rnn"],
)
def test_cnn_and_rnn_studies_run_end_to_end_and_report(model, axes, write_space, tmp_path) -> None:
    space = tiny_space_dict(dataset={"name": "digits", "split": {"train_size": 100}}, model=model, axes=axes)
    path = write_space(space)
    assert cli.main(["search", str(path), "--results-dir", str(tmp_path), "--quiet"]) == 0
    folder = tmp_path / "tiny"
    table = pd.read_csv(folder / "trials.csv")
    assert len(table) == 4 and set(table["status"]) == {"completed"}
    (axis,) = axes
    assert sorted(table[axis].unique()) == [0.0, 0.2]
    other = "conv_dropout" if model["family"] == "rnn" else "lstm_dropout"
    assert table[other].isna().all(), "axes of another model family stay blank"
    assert cli.main(["report", str(folder)]) == 0
    assert (folder / "figures" / f"accuracy_vs_{axis}.png").exists()
    assert "categorical accuracy" in (folder / "report.md").read_text()


def test_max_trials_limits_one_run(write_space, tmp_path) -> None:
    path = write_space(tiny_space_dict())
    assert cli.main(["search", str(path), "--results-dir", str(tmp_path), "--max-trials", "3", "--quiet"]) == 0
    assert len(pd.read_csv(tmp_path / "tiny" / "trials.csv")) == 3


def test_dry_run_prints_the_grid_and_an_estimate_and_trains_nothing(write_space, tmp_path, capsys) -> None:
    path = write_space(tiny_space_dict())
    assert cli.main(["search", str(path), "--engine", "keras", "--results-dir", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"dropout_rate\s+2 value\(s\)\s+0.0, 0.5", out)
    assert "trials: 2 configuration(s) x 2 seed(s) = 4" in out
    assert "estimated run time on engine 'keras'" in out
    assert not (tmp_path / "tiny").exists()


def test_failed_trials_are_reported_and_set_the_exit_status(write_space, tmp_path, monkeypatch, capsys) -> None:
    from study.engines import keras_engine

    def broken(trial, data):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(keras_engine, "train", broken)
    path = write_space(tiny_space_dict())
    argv = ["search", str(path), "--engine", "keras", "--results-dir", str(tmp_path), "--quiet"]
    assert cli.main(argv) == cli.EXIT_TRIALS_FAILED
    err = capsys.readouterr().err
    assert "4 trial(s) failed" in err and "RuntimeError: simulated failure" in err
    table = pd.read_csv(tmp_path / "tiny" / "trials.csv")
    assert set(table["status"]) == {"failed"} and len(table) == 4


def test_a_search_killed_mid_run_resumes_to_a_complete_table_without_duplicates(write_space, tmp_path) -> None:
    space_dict = tiny_space_dict(axes={"dropout_rate": [0.0, 0.3, 0.6]}, seeds=3)
    path = write_space(space_dict)
    folder = tmp_path / "tiny"
    # The keras engine commits one trial at a time, so the kill lands between commits.
    command = [
        PYTHON,
        "-m",
        "study",
        "search",
        str(path),
        "--engine",
        "keras",
        "--results-dir",
        str(tmp_path),
        "--quiet",
    ]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((folder / "batches").glob("*.csv"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = pd.concat(pd.read_csv(p) for p in (folder / "batches").glob("*.csv"))
    assert 3 <= len(committed) < 9, "the kill should land mid-run"

    assert cli.main(["search", str(path), "--engine", "keras", "--results-dir", str(tmp_path), "--quiet"]) == 0
    table = pd.read_csv(folder / "trials.csv")
    expected = {t.key for t in parse_space(space_dict).trials()}
    assert set(table["trial_key"]) == expected and table["trial_key"].is_unique
    assert (table["status"] == "completed").all()
    kept = table.set_index("trial_key").loc[committed["trial_key"], "finished_at"]
    assert kept.tolist() == committed["finished_at"].tolist(), "trials finished before the kill were redone"
    from study.store import ResultsStore

    curves = ResultsStore(folder).curves()
    assert curves.groupby("trial_key").size().eq(5).all() and set(curves["trial_key"]) == expected


def test_population_engine_failures_are_reported_per_trial(write_space, tmp_path, monkeypatch, capsys) -> None:
    from study.engines import population

    def broken(trials, splits, **kwargs):
        raise RuntimeError("simulated graph failure")

    monkeypatch.setattr(population, "train_population", broken)
    path = write_space(tiny_space_dict())
    argv = ["search", str(path), "--engine", "population", "--results-dir", str(tmp_path), "--quiet"]
    assert cli.main(argv) == cli.EXIT_TRIALS_FAILED
    assert "4 trial(s) failed" in capsys.readouterr().err
    assert set(pd.read_csv(tmp_path / "tiny" / "trials.csv")["status"]) == {"failed"}


def test_both_engines_write_the_same_schema(write_space, tmp_path) -> None:
    path = write_space(tiny_space_dict())
    for engine in ("keras", "population"):
        argv = ["search", str(path), "--engine", engine, "--results-dir", str(tmp_path / engine), "--quiet"]
        assert cli.main(argv) == 0
    keras_table = pd.read_csv(tmp_path / "keras" / "tiny" / "trials.csv")
    population_table = pd.read_csv(tmp_path / "population" / "tiny" / "trials.csv")
    assert list(keras_table.columns) == list(population_table.columns)
    assert keras_table["trial_key"].tolist() == population_table["trial_key"].tolist()
    assert set(population_table["engine"]) == {"population"} and population_table["epochs_run"].eq(5).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--results-dir", "{file}"), "is a file, not a folder"),
        (("--trials-per-batch", "100000"), "--trials-per-batch: must be a whole number from 1 to 4,096"),
        (("--chief", "--port", "70000"), "--port: must be a whole number from 1 to 65,535"),
        (("--chief", "--lease", "inf"), "--lease: must be a positive number of seconds"),
        (("--max-trials", "0"), "--max-trials: must be a whole number from 1"),
    ],
    ids=["results-dir-is-a-file", "trials-per-batch", "port", "lease", "max-trials"],
)
def test_bad_options_are_refused_before_anything_trains(args, message, write_space, tmp_path, capsys) -> None:
    path = write_space(tiny_space_dict())
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    argv = ["search", str(path), "--quiet", *(a.format(file=a_file) for a in args)]
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse refuses an option this way
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not list(tmp_path.glob("**/manifest.json")), "nothing is written for bad input"


def _exit_status(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:  # argparse
        return exc.code


@pytest.mark.parametrize(
    "damage",
    ["study-folder-is-a-file", "batches-is-a-file", "manifest-is-a-folder", "manifest-without-runs", "manifest-empty"],
)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_a_damaged_results_folder_is_refused_the_same_way_by_a_dry_run_and_a_run(
    damage: str, dry_run: bool, write_space, tmp_path, capsys
) -> None:
    path = write_space(tiny_space_dict())
    results = tmp_path / "results"
    folder = results / "tiny"
    assert cli.main(["search", str(path), "--results-dir", str(results), "--quiet", "--max-trials", "1"]) == 0
    manifest = folder / "manifest.json"
    if damage == "study-folder-is-a-file":
        shutil.rmtree(folder)
        folder.write_text("")
    elif damage == "batches-is-a-file":
        shutil.rmtree(folder / "batches")
        (folder / "batches").write_text("")
    elif damage == "manifest-is-a-folder":
        manifest.unlink()
        manifest.mkdir()
    else:
        manifest.write_text("{}" if damage == "manifest-empty" else '{"study": "tiny", "fingerprint": "x"}')
    capsys.readouterr()
    code = _exit_status(["search", str(path), "--results-dir", str(results), "--quiet", *(["--dry-run"] * dry_run)])
    err = capsys.readouterr().err
    if damage == "batches-is-a-file" and dry_run:
        assert code == 0  # nothing a dry run reads; the run refuses it
        return
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err


def test_argparse_refusals_are_one_error_line_with_exit_status_2(write_space, capsys) -> None:
    path = write_space(tiny_space_dict())
    for argv in (["search", str(path), "--trials-per-batch", "9" * 5000], ["search"], ["serch", str(path)]):
        assert _exit_status(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and len(err) < 400, err
