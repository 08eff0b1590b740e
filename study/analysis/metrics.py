"""Facts about each metric a study records, in one place (as study/axes.py keeps the facts about each axis): how
it is written, which direction is better, how its differences are written, the tolerance of "as good as the best",
and the validation column that chooses when it is the one measured.

A metric is a column of trials.csv named `[mc_]<split>_<measure>`: `test_accuracy`, `validation_rmse`,
`mc_test_nll` (MC dropout). The report measures on a test column and chooses on its validation counterpart
(`test_X` -> `validation_X`, `mc_test_X` -> `mc_validation_X`), or on the test column itself where the validation
column is missing or blank (the tutorial's protocol, optimistic: the report says so).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from study.errors import StudyError


@dataclass(frozen=True)
class Measure:
    """What is measured, whatever the split: accuracy, RMSE, NLL, ..."""

    label: str  # as written in sentences: "accuracy", "RMSE"
    higher_is_better: bool
    points: bool  # a fraction read as percent: differences written x100 as "points"
    tolerance: float  # how much worse than the best still counts as as good (paired non-inferiority margin)
    relative: bool  # `tolerance` is a fraction of the best configuration's mean (scale-dependent measures)
    unit_range: bool  # the values lie in [0, 1] (figures fix their y range)
    note: str = ""  # what the value is, for the figures' value axis: "fraction correct"


# Accuracy's half a point is the margin the report has always used. Bounded scores (AUC, R², ECE) take an absolute
# margin of the same size; scale-dependent ones (RMSE, MAE, NLL, Brier, loss) 1% of the best configuration's mean.
MEASURES = {
    "accuracy": Measure("accuracy", True, True, 0.005, False, True, "fraction correct"),
    "auc": Measure("AUC", True, False, 0.005, False, True, "ROC"),
    "r2": Measure("R²", True, False, 0.005, False, False, "fraction of variance explained"),
    "rmse": Measure("RMSE", False, False, 0.01, True, False),
    "mae": Measure("MAE", False, False, 0.01, True, False),
    "nll": Measure("NLL", False, False, 0.01, True, False, "nats per example"),
    "brier": Measure("Brier score", False, False, 0.01, True, False),
    "ece": Measure("ECE", False, True, 0.005, False, True, "expected calibration error"),
    "loss": Measure("loss", False, False, 0.01, True, False),
}
SPLITS = ("train", "validation", "test")
_NAME = re.compile(rf"^(mc_)?({'|'.join(SPLITS)})_({'|'.join(MEASURES)})$")
# The metric a study is reported on when none is named: the first one it records for every finished trial.
DEFAULTS = ("test_accuracy", "test_rmse")


@dataclass(frozen=True)
class Metric:
    """One column of trials.csv, e.g. `test_rmse`, with its measure's facts."""

    name: str
    mc: bool  # measured with dropout active at prediction time (MC dropout)
    split: str
    key: str  # the measure's key in MEASURES: "accuracy", "rmse", ...
    measure: Measure

    @property
    def label(self) -> str:
        """e.g. 'test accuracy', 'validation RMSE', 'MC-dropout test NLL'."""
        return f"{'MC-dropout ' if self.mc else ''}{self.split} {self.measure.label}"

    @property
    def short(self) -> str:
        """The name without its split, for file names: 'accuracy', 'rmse', 'mc_nll'."""
        return f"{'mc_' if self.mc else ''}{self.key}"

    @property
    def higher_is_better(self) -> bool:
        return self.measure.higher_is_better

    @property
    def sign(self) -> float:
        """+1 where higher is better, -1 where lower is: `sign * difference > 0` means better."""
        return 1.0 if self.higher_is_better else -1.0

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    @property
    def unit(self) -> str:
        """What a difference is written in: ' points' (appended to a number) or '' (the metric's own units)."""
        return " points" if self.measure.points else ""

    def axis_label(self, split: bool = True) -> str:
        """A figure's value axis: 'Test accuracy (fraction correct)', 'RMSE (lower is better)'."""
        text = self.label if split else f"{'MC-dropout ' if self.mc else ''}{self.measure.label}"
        notes = [n for n in (self.measure.note, "" if self.higher_is_better else self.direction) if n]
        return text[:1].upper() + text[1:] + (f" ({'; '.join(notes)})" if notes else "")

    def column(self, split: str) -> str:
        """The same measure on another split: `test_rmse` -> `validation_rmse`, `mc_test_nll` -> `mc_train_nll`."""
        return f"{'mc_' if self.mc else ''}{split}_{self.key}"

    def value(self, x: float) -> str:
        """A value: 0.912 for a fraction, 4 significant digits otherwise (trailing zeros kept: 0.8910, 1.001)."""
        return f"{x:.3f}" if self.measure.unit_range else f"{x:#.4g}".rstrip(".")

    def difference(self, x: float) -> str:
        """A signed difference without its unit: '+1.2' (points) or '-0.0523'."""
        return f"{100 * x:+.1f}" if self.measure.points else f"{x:+.3g}"

    def amount(self, x: float) -> str:
        """An unsigned amount with its unit: '1.2 points' or '0.0523'."""
        return f"{100 * x:.1f} points" if self.measure.points else f"{x:.3g}"

    def tolerance(self, best_mean: float) -> float:
        """The non-inferiority margin on this metric, given the best configuration's mean."""
        if self.measure.relative:
            return self.measure.tolerance * abs(float(best_mean)) if np.isfinite(best_mean) else np.nan
        return self.measure.tolerance

    def tolerance_words(self, tolerance: float) -> str:
        """e.g. '0.5 points', '0.0042 (1% of the best configuration's mean validation RMSE)'."""
        if self.measure.relative:
            share = f"{100 * self.measure.tolerance:g}%"
            return f"{tolerance:.2g} ({share} of the best configuration's mean {self.label})"
        return self.amount(tolerance)

    def best(self, means: pd.Series):
        """The index of the best of `means` (the largest, or the smallest where lower is better)."""
        return means.idxmax() if self.higher_is_better else means.idxmin()


def get(name: str) -> Metric:
    """The facts about a metric column; KeyError for a name that is not `[mc_]<split>_<measure>`."""
    match = _NAME.match(name)
    if match is None:
        raise KeyError(name)
    mc, split, key = match.groups()
    return Metric(name, bool(mc), split, key, MEASURES[key])


def is_metric(name: str) -> bool:
    return _NAME.match(name) is not None


def recorded(done: pd.DataFrame, column: str) -> bool:
    """Whether every finished trial has a value in `column` (and there is at least one)."""
    return column in done and not done.empty and bool(done[column].notna().all())


def recorded_any(frame: pd.DataFrame, column: str) -> bool:
    """Whether `column` exists with at least one value (per-epoch curves: the validation ones may be blank)."""
    return column in frame and bool(frame[column].notna().any())


def available(done: pd.DataFrame) -> list[str]:
    """The metrics a report can measure on: test columns (MC dropout included) of a known measure that every
    finished trial records, in the table's order."""
    return [
        c
        for c in done.columns
        if is_metric(c)
        and get(c).split == "test"
        and get(c).key != "loss"  # Keras's loss includes the L2 penalty: compared across L2 settings it misleads
        and recorded(done, c)
        and done[c].dtype.kind in "fiu"
    ]


def default(done: pd.DataFrame) -> str:
    """The metric of a study when none is named: test accuracy for a classification, test RMSE for a regression
    (accuracy blank), else the first metric recorded; test accuracy for an empty table."""
    found = available(done)
    return next((m for m in DEFAULTS if m in found), found[0] if found else DEFAULTS[0])


def resolve(done: pd.DataFrame, name: str | None = None) -> Metric:
    """The metric to report on: `name`, or the study's default. A name the study does not record for every
    finished trial is a StudyError listing those it does."""
    if name is None:
        return get(default(done))
    if is_metric(name) and get(name).key == "loss":
        raise StudyError(
            f"--metric {name!r} is Keras's loss, which includes the L2 penalty, so configurations with different L2 "
            "strengths would be compared on different objectives; compare the data loss instead: test_nll for a "
            "classifier, test_rmse for a regression"
        )
    if name not in available(done):
        found = ", ".join(available(done)) or "none"
        raise StudyError(
            f"--metric {name!r} is not a metric this study records for every finished trial; choose one of: {found}"
        )
    return get(name)


def selection(done: pd.DataFrame, metric: str) -> str:
    """What chooses between configurations when `metric` is measured: its validation counterpart where every
    finished trial has one, else `metric` itself (selection on the test set: optimistic)."""
    counterpart = get(metric).column("validation")
    return counterpart if recorded(done, counterpart) else metric


def train_column(done: pd.DataFrame, metric: str) -> str | None:
    """The metric's train counterpart where every finished trial records it, else None."""
    train = get(metric).column("train")
    return train if recorded(done, train) else None


def gap(done: pd.DataFrame, metric: str) -> pd.Series | None:
    """The train-test gap of `metric`, positive when train is better than test (train - test where higher is
    better, test - train where lower is): how much the model overfits. None without the train column."""
    train = train_column(done, metric)
    if train is None:
        return None
    return get(metric).sign * (done[train] - done[metric])
