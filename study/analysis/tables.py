"""Tidy views of a study's trials: axes and their levels, the baseline, per-configuration statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd

from study.analysis import stats
from study.schema import COMPLETED
from study.space import AXES, RATE_AXES

# The value of each regulariser axis that means "not regularised". A blank value (an axis of another model
# family) counts as off too.
OFF_VALUES = {
    **dict.fromkeys(RATE_AXES, 0.0),
    "max_norm": None,
    "l2": 0.0,
    "batch_norm": False,
    "early_stopping": False,
}

AXIS_LABELS = {
    "dropout_rate": "Dropout rate (fraction of hidden units zeroed)",
    "input_dropout": "Input dropout rate (fraction of inputs zeroed)",
    "conv_dropout": "Dropout after each convolution (fraction of activations zeroed)",
    "pool_dropout": "Dropout after each pooling (fraction of activations zeroed)",
    "spatial_dropout": "SpatialDropout2D rate (fraction of feature maps zeroed)",
    "lstm_dropout": "LSTM input dropout (one mask per sample for all time steps)",
    "recurrent_dropout": "LSTM recurrent dropout (one mask per sample for all time steps)",
    "max_norm": "Max-norm limit on incoming weights (none = unconstrained)",
    "l2": "L2 strength (λ)",
    "batch_norm": "Batch normalisation",
    "hidden_units": "Hidden units per layer",
    "early_stopping": "Early stopping",
}
AXIS_NAMES = {
    "dropout_rate": "dropout",
    "input_dropout": "input dropout",
    "conv_dropout": "conv dropout",
    "pool_dropout": "pool dropout",
    "spatial_dropout": "spatial dropout",
    "lstm_dropout": "LSTM dropout",
    "recurrent_dropout": "recurrent dropout",
    "max_norm": "max-norm",
    "l2": "L2",
    "batch_norm": "batch norm",
    "hidden_units": "width",
    "early_stopping": "early stopping",
}
# Axes drawn on a numeric x scale; the others are drawn as ordered categories.
NUMERIC_AXES = RATE_AXES
METRICS = {"test_accuracy": "test accuracy", "train_accuracy": "train accuracy", "gap": "train-test gap"}


def completed(trials: pd.DataFrame) -> pd.DataFrame:
    """Finished trials, with the train-test accuracy gap added."""
    done = trials[trials["status"] == COMPLETED].reset_index(drop=True)
    return done.assign(gap=done["train_accuracy"] - done["test_accuracy"])


def engines_used(done: pd.DataFrame) -> dict[str, int]:
    """How many trials each engine (and its version) computed, e.g. {'population (jax 0.10.2 (cpu x2))': 300}.

    Rows written before trials recorded an engine version came from the TensorFlow population engine (or a keras
    engine of that time) and are named so."""
    version = done.get("engine_version", pd.Series(np.nan, index=done.index)).fillna("").astype(str)
    before = done["engine"].map({"population": "TensorFlow, before the XLA engine"}).fillna("version not recorded")
    label = done["engine"].astype(str) + " (" + version.where(version != "", before) + ")"
    return label.value_counts().to_dict()


def varying_axes(trials: pd.DataFrame) -> list[str]:
    """The axes that take more than one value among these trials, in schema order."""
    return [a for a in AXES if trials[a].nunique(dropna=False) > 1]


def level_label(axis: str, value) -> str:
    """How a value of an axis is written in figures and sentences."""
    if axis == "max_norm" and pd.isna(value):
        return "none"
    if isinstance(value, bool | np.bool_):
        return "on" if value else "off"
    if isinstance(value, float | np.floating):
        return f"{value:g}"
    return str(value)


def levels(trials: pd.DataFrame, axis: str) -> list:
    """The axis's values, off first, then from weakest to strongest regularisation."""
    values = trials[axis].drop_duplicates().tolist()
    if axis == "max_norm":  # none, then large (loose) to small (tight) limits
        return [v for v in values if pd.isna(v)] + sorted((v for v in values if not pd.isna(v)), reverse=True)
    if axis == "hidden_units":
        return sorted(values, key=lambda v: (sum(int(u) for u in str(v).split("-")), str(v)))
    return sorted(values)


def config_label(row: pd.Series | dict, axes: list[str]) -> str:
    """A configuration in words, e.g. 'dropout 0.4, L2 0.001, batch norm on'; 'no regularisation' for the baseline."""
    parts = [f"{AXIS_NAMES[a]} {level_label(a, row[a])}" for a in axes if not _is_off_value(a, row[a])]
    return ", ".join(parts) if parts else "no regularisation"


def _is_off_value(axis: str, value) -> bool:
    if axis not in OFF_VALUES:
        return False
    off = OFF_VALUES[axis]
    return bool(pd.isna(value)) or bool(value == off)


def is_off(trials: pd.DataFrame, axis: str) -> pd.Series:
    """Rows where `axis` is at its 'not regularised' value (axes without one count as off)."""
    if axis not in OFF_VALUES:
        return pd.Series(True, index=trials.index)
    off = OFF_VALUES[axis]
    return trials[axis].isna() if off is None else trials[axis].isna() | (trials[axis] == off)


def baseline_mask(trials: pd.DataFrame, except_axes: tuple[str, ...] = ()) -> pd.Series:
    """Rows with every regulariser axis off, except those in `except_axes`."""
    mask = pd.Series(True, index=trials.index)
    for axis in OFF_VALUES:
        if axis not in except_axes:
            mask &= is_off(trials, axis)
    return mask


def hold_others_off(trials: pd.DataFrame, shown: tuple[str, ...]) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The trials to draw when only the `shown` axes vary in a figure.

    Every other varying axis is held at its 'off' value when the grid has it, otherwise pooled (averaged over).
    Returns the rows and the names of the held and the pooled axes, for the caption.
    """
    held, pooled = [], []
    rows = trials
    for axis in varying_axes(trials):
        if axis in shown:
            continue
        off = rows[is_off(rows, axis)] if axis in OFF_VALUES else rows.iloc[0:0]
        if off.empty:
            pooled.append(axis)
        else:
            rows = off
            held.append(axis)
    return rows, held, pooled


def baseline_key(done: pd.DataFrame) -> str | None:
    """The configuration with every regulariser off (the first, if the grid varies something else too)."""
    base = done[baseline_mask(done)]
    return None if base.empty else str(base["config_key"].iloc[0])


def per_seed(done: pd.DataFrame, config_key: str, metric: str = "test_accuracy") -> pd.Series:
    """One configuration's metric indexed by seed."""
    rows = done[done["config_key"] == config_key]
    return pd.Series(rows[metric].to_numpy(float), index=rows["seed"].to_numpy())


def summary(done: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per configuration, best mean test accuracy first.

    Columns: the varying axes; `seeds`; for test accuracy, train accuracy and the train-test gap their mean, sd,
    median, IQM and 95% bootstrap interval of the mean; median best epoch; against the baseline (all regularisers
    off) the mean difference in test accuracy with its interval, the paired test's p-value, its Holm-adjusted
    value across all configurations and the probability that a seed does better; and against the best
    configuration the Holm-adjusted p-value and whether it is statistically indistinguishable from it.
    """
    axes = varying_axes(done)
    rows = []
    for key, group in done.groupby("config_key", sort=False):
        row = {"config_key": key, **{a: group[a].iloc[0] for a in axes}}
        row["configuration"] = config_label(row, axes)
        row["seeds"] = group["seed"].nunique()
        for metric in METRICS:
            described = stats.describe(group[metric].to_numpy(float), seed)
            row.update({f"{metric}_{k}": v for k, v in described.items() if k != "n"})
        row["best_epoch_median"] = group["best_epoch"].median()
        row["epochs_run_mean"] = group["epochs_run"].mean()
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("test_accuracy_mean", ascending=False, kind="stable")
    table = table.reset_index(drop=True)

    base = baseline_key(done)
    columns = ("vs_baseline_difference", "vs_baseline_ci_low", "vs_baseline_ci_high", "vs_baseline_p")
    if base is None:
        for c in (*columns, "vs_baseline_p_holm", "vs_baseline_prob_better"):
            table[c] = np.nan
        table["vs_baseline_paired"] = pd.NA
    else:
        reference = per_seed(done, base)
        found = [stats.compare(per_seed(done, k), reference, seed) if k != base else None for k in table.config_key]
        table["vs_baseline_difference"] = [c.difference if c else np.nan for c in found]
        table["vs_baseline_ci_low"] = [c.ci_low if c else np.nan for c in found]
        table["vs_baseline_ci_high"] = [c.ci_high if c else np.nan for c in found]
        table["vs_baseline_p"] = [c.p_value if c else np.nan for c in found]
        table["vs_baseline_p_holm"] = stats.holm(table["vs_baseline_p"].to_numpy())
        table["vs_baseline_prob_better"] = [c.prob_better if c else np.nan for c in found]
        table["vs_baseline_paired"] = [c.paired if c else pd.NA for c in found]

    best = per_seed(done, table.config_key.iloc[0])
    vs_best = [stats.compare(per_seed(done, k), best, seed).p_value for k in table.config_key.iloc[1:]]
    table["vs_best_p_holm"] = np.r_[np.nan, stats.holm(np.asarray(vs_best))]
    table["indistinguishable_from_best"] = ~(table["vs_best_p_holm"] < stats.ALPHA)
    return table
