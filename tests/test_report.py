"""The report: figures and tables from a small fabricated study, without TensorFlow."""

from __future__ import annotations

import json
import re
import subprocess
import zlib

import numpy as np
import pandas as pd
import pytest
from conftest import PYTHON, ROOT, fake_predictions, fake_result, tiny_space_dict

import study.store
from study.analysis.report import build_report, find_study_folder
from study.api import load
from study.errors import StudyError
from study.space import parse_space
from study.store import ResultsStore


def make_study(tmp_path, space_dict: dict, fraction: float = 1.0, accuracy=None, keep=None, predictions=None):
    """A fabricated study: `accuracy(trial)` gives each trial's final test accuracy, `keep(trial)` which to commit,
    `predictions(trial, accuracy)` its predicted probabilities (`fake_predictions`: calibration columns and bins)."""
    space = parse_space(space_dict)
    store = ResultsStore(tmp_path / space.name)
    store.begin(space, engine="fake")
    trials = space.trials()[: int(len(space.trials()) * fraction)]
    trials = [t for t in trials if keep is None or keep(t)]
    accuracy = accuracy or (lambda t: 0.6 + 0.3 * t.config["dropout_rate"])
    scored = predictions or (lambda trial, accuracy: None)
    store.commit([fake_result(t, accuracy(t), epochs=20, predictions=scored(t, accuracy(t))) for t in trials])
    store.finish(len(trials), 0)
    return store.folder


def noisy(effect: float):
    """Test accuracy 0.8 plus a seed effect, per-trial noise, and `effect` for every dropout rate above 0."""

    def accuracy(trial) -> float:
        rng = np.random.default_rng(zlib.crc32(trial.key.encode()))
        return 0.8 + 0.01 * (trial.seed % 4) + rng.normal(0, 0.01) + (effect if trial.config["dropout_rate"] else 0)

    return accuracy


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


def test_a_study_resumed_on_another_engine_says_so(tmp_path) -> None:
    space = parse_space(tiny_space_dict(seeds=4))
    store = ResultsStore(tmp_path / space.name)
    store.begin(space, engine="population")
    trials = space.trials()
    store.commit([fake_result(t, engine="population", engine_version="") for t in trials[:3]])  # TensorFlow era
    store.commit([fake_result(t, engine="population", engine_version="jax 0.10.2 (cpu x2)") for t in trials[3:]])
    store.finish(len(trials), 0)
    report = build_report(store.folder)["report"].read_text()
    assert "population (TensorFlow, before the XLA engine): 3 trials" in report
    assert "population (jax 0.10.2 (cpu x2)): 5 trials" in report and "more than one engine" in report


def test_the_report_never_imports_tensorflow_or_jax(tmp_path) -> None:
    folder = make_study(tmp_path, tiny_space_dict())
    code = (
        "import sys; from study.cli import main; rc = main(['report', sys.argv[1]]); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow imported'; "
        "assert 'jax' not in sys.modules, 'JAX imported'; "
        "raise SystemExit(rc)"
    )
    proc = subprocess.run([PYTHON, "-c", code, str(folder)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_multi_axis_study_gets_every_figure_a_self_contained_html_and_variance_shares(tmp_path) -> None:
    axes = {"dropout_rate": [0.0, 0.5], "max_norm": [None, 3.0], "l2": [0.0, 0.01], "batch_norm": [False, True]}
    folder = make_study(tmp_path, tiny_space_dict(axes=axes, seeds=4), accuracy=noisy(0.05))
    paths = build_report(folder)
    expected = [f"accuracy_vs_{a}" for a in axes] + [
        "heatmap_dropout_rate_x_l2",
        "heatmap_dropout_rate_x_max_norm",
        "learning_curves",
        "seed_spread",
        "paired_differences",
    ]
    for name in expected:
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == len(expected) and 'src="figures/' not in html
    report = paths["report"].read_text()
    assert "## Variance of test accuracy explained" in report and "| dropout " in report
    summary = pd.read_csv(paths["summary"])
    for column in ("test_accuracy_iqm", "test_accuracy_ci_low", "gap_mean", "vs_baseline_p_holm", "vs_best_p_holm"):
        assert column in summary.columns


def test_conclusions_say_a_large_effect_helps_and_report_its_size(tmp_path) -> None:
    folder = make_study(tmp_path, tiny_space_dict(axes={"dropout_rate": [0.0, 0.5]}, seeds=12), accuracy=noisy(0.1))
    report = build_report(folder)["report"].read_text()
    line = next(line for line in report.splitlines() if line.startswith("- **Dropout alone**"))
    assert "dropout 0.5" in line and "+10." in line and "100% of the time" in line
    assert "larger than seed noise: it helps" in line
    assert "- **Power**" in report


def test_conclusions_say_when_a_difference_is_within_seed_noise(tmp_path) -> None:
    folder = make_study(tmp_path, tiny_space_dict(axes={"dropout_rate": [0.0, 0.5]}, seeds=12), accuracy=noisy(0.0))
    report = build_report(folder)["report"].read_text()
    assert "not distinguishable from seed noise with 12 seeds" in report


def test_conclusions_say_when_too_few_seeds_make_significance_unreachable(tmp_path) -> None:
    # 4 seeds: the signed-rank test cannot go below p = 2/16, so even a clear +10 points is "probably", not proven
    folder = make_study(tmp_path, tiny_space_dict(axes={"dropout_rate": [0.0, 0.5]}, seeds=4), accuracy=noisy(0.1))
    report = build_report(folder)["report"].read_text()
    assert "corrected interval excludes zero, so it probably helps, but with 4 seeds no paired signed-rank" in report


def test_configurations_without_shared_seeds_fall_back_to_unpaired_tests(tmp_path) -> None:
    space = tiny_space_dict(axes={"dropout_rate": [0.0, 0.5]}, seeds=8)
    keep = lambda t: (t.seed < 4) == (t.config["dropout_rate"] == 0.0)  # noqa: E731
    folder = make_study(tmp_path, space, accuracy=noisy(0.1), keep=keep)
    paths = build_report(folder)
    assert "unpaired (seeds not shared)" in paths["report"].read_text()
    assert "no configuration shares seeds with the baseline" in paths["report"].read_text()
    assert pd.read_csv(paths["summary"])["vs_baseline_paired"].dropna().eq(False).all()


def test_learning_curves_of_a_chosen_configuration_by_axis_values(tmp_path) -> None:
    axes = {"dropout_rate": [0.0, 0.2, 0.5], "l2": [0.0, 0.01]}
    folder = make_study(tmp_path, tiny_space_dict(axes=axes, seeds=2))
    build_report(folder, curves=("dropout_rate=0.2,l2=0.01",))
    assert "Chosen: dropout 0.2, L2 0.01" in (folder / "report.md").read_text()  # named in the figure's caption
    with pytest.raises(StudyError, match="matches no finished configuration"):
        build_report(folder, curves=("dropout_rate=0.3",))
    with pytest.raises(StudyError, match="'width' is not an axis this study varies"):
        build_report(folder, curves=("width=3",))


@pytest.mark.parametrize("option", ["--hue", "--facet"])
def test_an_axis_option_the_study_does_not_vary_is_a_clear_error(tmp_path, option: str) -> None:
    folder = make_study(tmp_path, tiny_space_dict(axes={"dropout_rate": [0.0, 0.5], "l2": [0.0, 0.1]}))
    proc = subprocess.run(
        [PYTHON, "-m", "study", "report", str(folder), option, "batch_norm"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2
    assert f"{option} 'batch_norm' is not an axis this study varies; choose one of: dropout_rate, l2" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("damage", ["figures-is-a-file", "manifest-without-study", "text-in-a-metric", "a-file"])
def test_a_damaged_study_is_refused_before_the_report_writes_anything(tmp_path, damage: str) -> None:
    folder = make_study(tmp_path, tiny_space_dict())
    target = folder
    if damage == "figures-is-a-file":
        (folder / "figures").write_text("")
    elif damage == "manifest-without-study":
        manifest = json.loads((folder / "manifest.json").read_text())
        del manifest["study"]
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "text-in-a-metric":
        batch = next((folder / "batches").glob("*.csv"))
        frame = pd.read_csv(batch)
        frame["test_accuracy"] = frame["test_accuracy"].astype(object)
        frame.loc[0, "test_accuracy"] = "abc"
        frame.to_csv(batch, index=False)
    else:
        target = folder / "manifest.json"
    proc = subprocess.run([PYTHON, "-m", "study", "report", str(target)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert not (folder / "summary.csv").exists() and not (folder / "report.md").exists()


def test_results_written_before_validation_columns_existed_still_report(tmp_path) -> None:
    folder = make_study(tmp_path, tiny_space_dict(axes={"dropout_rate": [0.0, 0.5]}, seeds=4), accuracy=noisy(0.05))
    new_columns = ["n_validation", "validation_accuracy", "validation_loss", "still_improving"]
    for path in (folder / "batches").glob("*.csv"):
        pd.read_csv(path).drop(columns=new_columns).to_csv(path, index=False)
    for path in (folder / "curves").glob("*.parquet"):
        pd.read_parquet(path).drop(columns=["validation_loss", "validation_accuracy"]).to_parquet(path)
    report = build_report(folder)["report"].read_text()
    assert "there is no validation split" in report and "**Dropout alone**" in report


def test_with_a_validation_split_the_report_says_the_test_set_only_measured(tmp_path) -> None:
    split = {"train_size": 40, "validation_size": 10}
    space = tiny_space_dict(dataset={"name": "circles", "split": split}, axes={"dropout_rate": [0.0, 0.5]}, seeds=4)
    folder = make_study(tmp_path, space, accuracy=noisy(0.05))
    text = build_report(folder)["report"].read_text()
    assert "10 of the training rows are held out for validation" in text
    assert "chosen on validation accuracy" in text and "winner's curse" not in text
    assert pd.read_csv(folder / "summary.csv")["selected_on"].eq("validation_accuracy").all()


# --- other metrics ------------------------------------------------------------------------------------------


def make_metric_study(tmp_path, monkeypatch, space_dict: dict, row, curves=None):
    """A fabricated study whose trials also carry other metrics' columns: `row(trial)` gives the row's values
    (test_rmse, test_nll, ...) and `curves(trial, epochs)` the per-epoch ones. The store keeps those columns, as it
    does once the schema lists them."""
    space = parse_space(space_dict)
    results = []
    for trial in space.trials():
        result = fake_result(trial, epochs=20)
        result.row.update(row(trial))
        for column, values in (curves(trial, 20) if curves else {}).items():
            result.curves[column] = values
        results.append(result)
    trial_columns = [c for c in results[0].row if c not in study.store.TRIAL_COLUMNS]
    curve_columns = [c for c in results[0].curves.columns if c not in study.store.CURVE_COLUMNS]
    monkeypatch.setattr(study.store, "TRIAL_COLUMNS", (*study.store.TRIAL_COLUMNS, *trial_columns))
    monkeypatch.setattr(study.store, "CURVE_COLUMNS", (*study.store.CURVE_COLUMNS, *curve_columns))
    store = ResultsStore(tmp_path / space.name)
    store.begin(space, engine="fake")
    store.commit(results)
    store.finish(len(results), 0)
    return store.folder


def test_a_regression_study_reports_on_rmse_by_default(tmp_path, monkeypatch) -> None:
    def error(trial) -> float:  # dropout lowers the RMSE by 0.1, the larger learning rate raises it; L2 does nothing
        return 1.8 - noisy(0.1)(trial) + (0.05 if trial.config["learning_rate"] > 0.001 else 0.0)

    def row(trial) -> dict:  # accuracy is blank
        blank = dict.fromkeys(["train_accuracy", "test_accuracy", "validation_accuracy", "best_test_accuracy"])
        rmse = {"test_rmse": error(trial), "validation_rmse": error(trial) + 0.01, "train_rmse": 0.3}
        return {**blank, **rmse, "n_classes": 0, "test_mae": 0.8, "test_r2": 0.5}

    def curves(trial, epochs: int) -> dict:
        falling = np.linspace(2.0, error(trial), epochs)
        blank = dict.fromkeys(["train_accuracy", "test_accuracy", "validation_accuracy"], np.nan)
        return {**blank, "train_rmse": falling / 3, "test_rmse": falling, "validation_rmse": falling + 0.01}

    split = {"train_size": 40, "validation_size": 10}
    axes = {"dropout_rate": [0.0, 0.5], "l2": [0.0, 0.01], "learning_rate": [0.001, 0.01]}
    space = tiny_space_dict(dataset={"name": "circles", "split": split}, axes=axes, nuisance=["learning_rate"], seeds=8)
    folder = make_metric_study(tmp_path, monkeypatch, space, row, curves)
    paths = build_report(folder)
    summary = pd.read_csv(paths["summary"])
    assert summary["metric"].eq("test_rmse").all() and not summary["higher_is_better"].any()
    assert summary["selected_on"].eq("validation_rmse").all() and summary["tuned_learning_rate"].eq(0.001).all()
    assert summary.iloc[0]["dropout_rate"] == 0.5  # the lowest mean RMSE first
    assert summary.iloc[0]["vs_baseline_difference"] == pytest.approx(-0.1, abs=0.02)
    assert summary["gap_mean"].gt(0).all()  # test RMSE above train RMSE
    report = paths["report"].read_text()
    line = next(line for line in report.splitlines() if line.startswith("- **Dropout alone**"))
    assert re.search(r"mean test RMSE \(lower is better\) by -0\.(09|10)\d* \(95% CI", line), line
    assert "larger than seed noise: it helps" in line
    assert "chosen on validation RMSE" in line and "Tuned per setting (best on validation RMSE)" in report
    assert "Metrics (regression)" in report and "One test row is worth" not in report
    assert "and validation (dotted) RMSE per epoch" in report and "## Variance of test RMSE explained" in report
    assert "Also recorded: `test_mae`, `test_r2`" in report
    assert "accuracy_vs_dropout_rate" not in paths
    for name in (
        "rmse_vs_dropout_rate",
        "rmse_vs_l2",
        "heatmap_dropout_rate_x_l2",
        "isolation_dropout_rate_learning_rate",
    ):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_metric_test_nll_turns_the_conclusions_to_nll(tmp_path, monkeypatch) -> None:
    def nll(trial) -> float:  # dropout raises accuracy by 10 points and makes the probabilities worse
        return 0.5 + 0.01 * (trial.seed % 4) + 0.05 * bool(trial.config["dropout_rate"]) + 0.001 * noisy(0)(trial)

    split = {"train_size": 40, "validation_size": 10}
    space = tiny_space_dict(dataset={"name": "circles", "split": split}, axes={"dropout_rate": [0.0, 0.5]}, seeds=12)
    accuracy = noisy(0.1)

    def row(trial) -> dict:
        return {"test_accuracy": accuracy(trial), "test_nll": nll(trial), "validation_nll": nll(trial) + 0.01}

    folder = make_metric_study(tmp_path, monkeypatch, space, row)
    default = build_report(folder)["report"].read_text()
    assert "it helps" in next(line for line in default.splitlines() if line.startswith("- **Dropout alone**"))
    assert "Also recorded: `test_nll`" in default

    paths = build_report(folder, metric="test_nll")
    report = paths["report"].read_text()
    line = next(line for line in report.splitlines() if line.startswith("- **Dropout alone**"))
    assert "chosen on validation NLL" in line and "mean test NLL (lower is better) by +0.05" in line
    assert "larger than seed noise: it hurts" in line
    assert "every statistic and figure below is of test NLL, lower is better" in report
    assert "**Recommendation** -- chosen on validation NLL (lower is better): no regularisation" in report
    assert "of the best configuration's mean validation NLL" in report  # the tolerance, stated
    assert "no per-epoch test NLL is recorded: the curves show the test loss" in report
    assert "## Variance of test NLL explained" in report and "points" not in line
    summary = pd.read_csv(paths["summary"])
    assert summary["metric"].eq("test_nll").all() and summary["selected_on"].eq("validation_nll").all()
    assert summary.iloc[0]["dropout_rate"] == 0.0 and "test_nll_mean" in summary and "test_accuracy_mean" not in summary
    assert paths["nll_vs_dropout_rate"].exists() and "accuracy_vs_dropout_rate" not in paths
    assert load(folder).summary(metric="test_nll")["configuration"].iloc[0] == "no regularisation"


def test_an_unknown_metric_is_one_line_and_exit_2(tmp_path) -> None:
    folder = make_study(tmp_path, tiny_space_dict())
    proc = subprocess.run(
        [PYTHON, "-m", "study", "report", str(folder), "--metric", "test_nll"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "error: --metric 'test_nll' is not a metric this study records for every finished trial; choose one of: "
        "test_accuracy\n"
    )
    assert not (folder / "summary.csv").exists() and not (folder / "figures").exists()
    with pytest.raises(StudyError, match="--metric 'validation_accuracy' is not a metric"):  # measured on test only
        build_report(folder, metric="validation_accuracy")
    # Keras's loss includes the L2 penalty: the data loss is the one to compare.
    with pytest.raises(StudyError, match=r"includes the L2 penalty.*compare the data loss instead: test_nll"):
        build_report(folder, metric="test_loss")


# --- calibration and MC dropout -----------------------------------------------------------------------------


def test_a_study_without_calibration_columns_says_why_the_calibration_figures_are_missing(tmp_path) -> None:
    folder = make_study(tmp_path, tiny_space_dict(axes={"dropout_rate": [0.0, 0.5]}, seeds=4), accuracy=noisy(0.05))
    paths = build_report(folder)
    assert "calibration_vs_dropout_rate" not in paths and "reliability" not in paths
    report = paths["report"].read_text()
    not_drawn = report[report.index("## Not drawn") :]
    assert "No calibration figures (ECE and NLL against dropout, reliability diagram): its trials record no " in (
        not_drawn
    )
    assert "**Calibration**" not in report and "**MC dropout**" not in report


def test_calibration_figures_reliability_diagram_and_mc_line_from_stored_predictions(tmp_path) -> None:
    # Without dropout the model is sure (0.97) and right 80% of the time: overconfident, and MC dropout's averaged
    # probabilities (0.85) lower its NLL for every seed. Dropout 0.5 is 5 points more accurate (the recommendation)
    # and about as sure (0.82) as it is right; MC dropout makes it underconfident (0.80), raising its NLL for every
    # seed. 8 seeds let a paired test pass Holm over the two comparisons.
    split = {"train_size": 40, "validation_size": 10}
    space = tiny_space_dict(
        dataset={"name": "circles", "split": split}, axes={"dropout_rate": [0.0, 0.5]}, seeds=8,
        evaluation={"mc_samples": 30},
    )  # fmt: skip

    def predictions(trial, accuracy):
        rate = trial.config["dropout_rate"]
        return fake_predictions(trial, accuracy, confidence=0.97 - 0.3 * rate, mc_confidence=0.85 - 0.1 * rate)

    folder = make_study(tmp_path, space, accuracy=noisy(0.05), predictions=predictions)
    bins = ResultsStore(folder).calibration()
    assert set(bins["kind"]) == {"deterministic", "mc"} and set(bins["split"]) == {"test", "validation"}
    paths = build_report(folder)
    for name in ("calibration_vs_dropout_rate", "reliability"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    report = paths["report"].read_text()
    assert "averaged over 30 passes with dropout on" in report and "No calibration" not in report
    mc = next(line for line in report.splitlines() if line.startswith("- **MC dropout**"))
    at_baseline = mc[mc.index("at no regularisation") :]
    assert re.search(r"changes mean test NLL \(lower is better\) by -0\.\d+", at_baseline), at_baseline
    assert "the lower for 100% of seeds" in at_baseline and "MC dropout lowers the NLL" in at_baseline
    assert "Holm over 2 configuration(s)" in mc and "at the recommended configuration (dropout 0.5)" in mc
    at_recommended = mc[: mc.index("at no regularisation")]
    assert re.search(r"by \+0\.\d+ .*MC dropout raises the NLL", at_recommended), at_recommended
    assert "changes test accuracy by" in mc
    calibration = next(line for line in report.splitlines() if line.startswith("- **Calibration**"))
    assert "(lowest mean validation NLL) is dropout 0.5" in calibration, calibration
    assert "against no regularisation: test NLL" in calibration
    assert "Reliability diagrams of no regularisation and of the recommended configuration (dropout 0.5)" in report
