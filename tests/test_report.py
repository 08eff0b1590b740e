"""The report: figures and tables from a small fabricated study, without TensorFlow."""

from __future__ import annotations

import subprocess

import pandas as pd
import pytest
from conftest import PYTHON, ROOT, fake_result, tiny_space_dict

from study.analysis.report import build_report, find_study_folder
from study.errors import StudyError
from study.space import parse_space
from study.store import ResultsStore


def make_study(tmp_path, space_dict: dict, fraction: float = 1.0):
    space = parse_space(space_dict)
    store = ResultsStore(tmp_path / space.name)
    store.begin(space, engine="fake")
    trials = space.trials()[: int(len(space.trials()) * fraction)]
    store.commit([fake_result(t, 0.6 + 0.3 * t.config["dropout_rate"], epochs=20) for t in trials])
    store.finish(len(trials), 0)
    return store.folder


def test_report_draws_dropout_figure_learning_curves_and_summary(tmp_path) -> None:
    folder = make_study(tmp_path, tiny_space_dict(axes={"dropout_rate": [0.0, 0.2, 0.5]}, seeds=4))
    paths = build_report(folder)
    for name in ("accuracy_vs_dropout_rate", "learning_curves"):
        assert paths[name].exists() and paths[name].stat().st_size > 10_000
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = pd.read_csv(paths["summary"])
    assert len(summary) == 3 and summary["seeds"].eq(4).all()
    assert summary.iloc[0]["dropout_rate"] == 0.5  # best mean test accuracy first
    report = paths["report"].read_text()
    assert "Based on **12 of 12** planned trials" in report
    assert "figures/accuracy_vs_dropout_rate.png" in report and "figures/learning_curves.png" in report


def test_report_of_an_unfinished_study_says_how_much_it_is_based_on(tmp_path) -> None:
    folder = make_study(tmp_path, tiny_space_dict(axes={"dropout_rate": [0.0, 0.5]}, seeds=4), fraction=0.5)
    report = build_report(folder)["report"].read_text()
    assert "Based on **4 of 8** planned trials" in report and "incomplete" in report


def test_a_figure_that_cannot_be_drawn_is_skipped_with_a_reason(tmp_path) -> None:
    folder = make_study(tmp_path, tiny_space_dict(axes={"l2": [0.0, 0.01]}, seeds=2))
    paths = build_report(folder)
    assert "accuracy_vs_dropout_rate" not in paths
    assert "only one dropout rate" in paths["report"].read_text()


def test_latest_study_is_found_and_an_empty_results_dir_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(StudyError, match="no study in"):
        find_study_folder(None, None, tmp_path)
    folder = make_study(tmp_path, tiny_space_dict())
    assert find_study_folder(None, None, tmp_path) == folder


def test_the_report_never_imports_tensorflow(tmp_path) -> None:
    folder = make_study(tmp_path, tiny_space_dict())
    code = (
        "import sys; from study.cli import main; rc = main(['report', sys.argv[1]]); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow imported'; "
        "raise SystemExit(rc)"
    )
    proc = subprocess.run([PYTHON, "-c", code, str(folder)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
