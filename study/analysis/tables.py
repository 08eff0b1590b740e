"""Tidy views of a study's trials: which axes vary, which configuration is the baseline, per-config summaries."""

from __future__ import annotations

import pandas as pd

from study.schema import COMPLETED
from study.space import AXES

# The value of each regulariser axis that means "not regularised".
OFF_VALUES = {"dropout_rate": 0.0, "input_dropout": 0.0, "max_norm": None, "l2": 0.0, "batch_norm": False}
OFF_VALUES["early_stopping"] = False

AXIS_LABELS = {
    "dropout_rate": "Dropout rate (fraction of hidden units zeroed)",
    "input_dropout": "Input dropout rate (fraction of inputs zeroed)",
    "max_norm": "Max-norm limit on incoming weights",
    "l2": "L2 strength (λ)",
    "batch_norm": "Batch normalisation",
    "hidden_units": "Hidden units per layer",
    "early_stopping": "Early stopping",
}


def completed(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["status"] == COMPLETED].reset_index(drop=True)


def varying_axes(trials: pd.DataFrame) -> list[str]:
    """The axes that take more than one value among these trials, in schema order."""
    return [a for a in AXES if trials[a].nunique(dropna=False) > 1]


def is_off(trials: pd.DataFrame, axis: str) -> pd.Series:
    """Rows where `axis` is at its 'not regularised' value (axes without one count as off)."""
    if axis not in OFF_VALUES:
        return pd.Series(True, index=trials.index)
    off = OFF_VALUES[axis]
    return trials[axis].isna() if off is None else trials[axis] == off


def baseline_mask(trials: pd.DataFrame, except_axis: str | None = None) -> pd.Series:
    """Rows with every regulariser axis off (optionally leaving `except_axis` free)."""
    mask = pd.Series(True, index=trials.index)
    for axis in OFF_VALUES:
        if axis != except_axis:
            mask &= is_off(trials, axis)
    return mask


def summary(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: the varying axes, seed count, and test/train accuracy over seeds."""
    done = completed(trials)
    axes = varying_axes(done)
    keys = ["config_key", *axes]
    grouped = done.groupby(keys, dropna=False, sort=False)
    table = grouped.agg(
        seeds=("seed", "nunique"),
        test_accuracy_mean=("test_accuracy", "mean"),
        test_accuracy_sd=("test_accuracy", "std"),
        train_accuracy_mean=("train_accuracy", "mean"),
        best_test_accuracy_mean=("best_test_accuracy", "mean"),
        best_epoch_median=("best_epoch", "median"),
        epochs_run_mean=("epochs_run", "mean"),
    ).reset_index()
    return table.sort_values("test_accuracy_mean", ascending=False, kind="stable").reset_index(drop=True)
