"""Tidy views of a study's trials: axes and their levels, the baseline, per-configuration statistics."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from study.analysis import metrics, stats
from study.axes import AXES, AXIS, SCIENTIFIC_AXES
from study.schema import COMPLETED

# From the axis registry (study/axes.py): the value of each regulariser axis that means "not regularised" (a blank
# value -- an axis of another model family -- counts as off too), and how axes are written.
OFF_VALUES = {name: AXIS[name].off for name in SCIENTIFIC_AXES}
AXIS_LABELS = {name: AXIS[name].label for name in AXES}
AXIS_NAMES = {name: AXIS[name].short for name in AXES}
# Axes drawn on a numeric x scale; the others are drawn as ordered categories.
NUMERIC_AXES = tuple(name for name in AXES if AXIS[name].numeric)


def completed(trials: pd.DataFrame) -> pd.DataFrame:
    """Finished trials (the summary adds the train-test gap of the metric it describes)."""
    return trials[trials["status"] == COMPLETED].reset_index(drop=True)


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
    """Rows with every regulariser the study varies off, except those in `except_axes`. A regulariser on in every
    trial (early stopping always on, say) is part of every configuration, baseline included."""
    mask = pd.Series(True, index=trials.index)
    for axis in varying_axes(trials):
        if axis in OFF_VALUES and axis not in except_axes:
            mask &= is_off(trials, axis)
    return mask


def context_axes(trials: pd.DataFrame, nuisance: tuple[str, ...] = ()) -> list[str]:
    """The varying axes that are not regularisers and not tuned away (width, learning rate, epochs, ...):
    configurations are compared only with configurations of the same context."""
    return [a for a in varying_axes(trials) if a not in OFF_VALUES and a not in nuisance]


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


def baselines(done: pd.DataFrame) -> dict[str, str | None]:
    """For every configuration, the configuration of its own context (same width, learning rate, ...) with every
    varying regulariser off; None where the grid has no such configuration."""
    context = context_axes(done)
    first = done.drop_duplicates("config_key")
    contexts = [tuple(str(v) for v in values) for values in first[context].itertuples(index=False)]
    is_base = baseline_mask(first).to_numpy()
    base_of_context = {c: key for c, key, base in zip(contexts, first["config_key"], is_base, strict=True) if base}
    return {key: base_of_context.get(c) for key, c in zip(first["config_key"], contexts, strict=True)}


def baseline_key(done: pd.DataFrame) -> str | None:
    """The configuration with every varying regulariser off (the first context's, if several)."""
    base = done[baseline_mask(done)]
    return None if base.empty else str(base["config_key"].iloc[0])


def per_seed(done: pd.DataFrame, config_key: str, metric: str = "test_accuracy") -> pd.Series:
    """One configuration's metric indexed by seed."""
    rows = done[done["config_key"] == config_key]
    return pd.Series(rows[metric].to_numpy(float), index=rows["seed"].to_numpy())


def compare(treatment: pd.Series, reference: pd.Series, metric: str, seed: int = 0) -> stats.Comparison:
    """`stats.compare` on `metric`: the difference stays treatment minus reference in the metric's units, and
    `prob_better` is the probability that a seed of the treatment is better -- lower, where lower is better."""
    found = stats.compare(treatment, reference, seed)
    return found if metrics.get(metric).higher_is_better else replace(found, prob_better=1 - found.prob_better)


def selection_metric(done: pd.DataFrame, metric: str | None = None) -> str:
    """What chooses between configurations when `metric` (default: the study's, `metrics.default`) is measured:
    its validation counterpart where every trial has validation rows, else the metric itself (the tutorial's
    protocol, optimistic: the report says so)."""
    return metrics.selection(done, metric or metrics.default(done))


def summary(done: pd.DataFrame, seed: int = 0, metric: str | None = None) -> pd.DataFrame:
    """One row per configuration, best mean of the selection metric (`selection_metric`) first.

    `metric` is what is measured (default: the study's, test accuracy or, for a regression, test RMSE); `metric`
    and `higher_is_better` columns say which, and every comparison knows its direction. Columns: the varying axes;
    `seeds`; for the metric, its train counterpart, the train-test gap (positive: train better than test) where
    the train column is recorded, and the selection metric where it differs (validation), their mean, sd, median,
    IQM and 95% t interval of the mean; median best epoch, mean epochs run, the share of seeds still improving at
    the last epoch; against the configuration's own baseline (its context's configuration with the varying
    regularisers off) the mean difference in the metric (configuration minus baseline, in its units) with its
    interval, the paired test's p-value, its Holm-adjusted value across all configurations (the exploratory
    family) and the probability that a seed does better; against the best configuration on the selection metric
    the Holm-adjusted p-value, whether it is statistically indistinguishable from it (only where a test could be
    made), whether it is within `tolerance` of it by a paired non-inferiority test, and the probability that it is
    the best (seeds resampled jointly).
    """
    measured = metrics.get(metric or metrics.default(done))
    metric = measured.name
    axes = varying_axes(done)
    select = selection_metric(done, metric)
    chooser = metrics.get(select)
    train = metrics.train_column(done, metric)
    gap = metrics.gap(done, metric)
    if gap is not None:
        done = done.assign(gap=gap)
    described_columns = [metric, *([train, "gap"] if train else []), *([select] if select != metric else [])]
    rows = []
    for key, group in done.groupby("config_key", sort=False):
        row = {"config_key": key, **{a: group[a].iloc[0] for a in axes}}
        row["configuration"] = config_label(row, axes)
        row["seeds"] = group["seed"].nunique()
        for column in described_columns:
            described = stats.describe(group[column].to_numpy(float), seed)
            row.update({f"{column}_{k}": v for k, v in described.items() if k != "n"})
        row.update({c: group[c].iloc[0] for c in group.columns if c.startswith("tuned_")})  # nuisance values chosen
        row["best_epoch_median"] = group["best_epoch"].median()
        row["epochs_run_mean"] = group["epochs_run"].mean()
        row["still_improving_share"] = group["still_improving"].astype(float).mean()
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(f"{select}_mean", ascending=not chooser.higher_is_better, kind="stable")
    table = table.reset_index(drop=True)
    table["metric"] = metric
    table["higher_is_better"] = measured.higher_is_better
    table["selected_on"] = select

    base_of = baselines(done)
    table["baseline_key"] = table["config_key"].map(base_of)
    found = [
        compare(per_seed(done, k, metric), per_seed(done, b, metric), metric, seed)
        if b is not None and b != k
        else None
        for k, b in zip(table["config_key"], table["baseline_key"], strict=True)
    ]
    table["vs_baseline_difference"] = [c.difference if c else np.nan for c in found]
    table["vs_baseline_ci_low"] = [c.ci_low if c else np.nan for c in found]
    table["vs_baseline_ci_high"] = [c.ci_high if c else np.nan for c in found]
    table["vs_baseline_p"] = [c.p_value if c else np.nan for c in found]
    table["vs_baseline_p_holm"] = stats.holm(table["vs_baseline_p"].to_numpy())
    table["vs_baseline_prob_better"] = [c.prob_better if c else np.nan for c in found]
    table["vs_baseline_paired"] = [c.paired if c else pd.NA for c in found]
    table["vs_baseline_p_maxt"] = _max_t(done, table, metric, seed)

    best_key = table.config_key.iloc[0]
    best = per_seed(done, best_key, select)
    vs_best = [stats.compare(per_seed(done, k, select), best, seed) for k in table.config_key.iloc[1:]]
    table["vs_best_p_holm"] = np.r_[np.nan, stats.holm(np.asarray([c.p_value for c in vs_best]))]
    tested = np.r_[True, [np.isfinite(c.p_value) for c in vs_best]]
    table["indistinguishable_from_best"] = tested & ~(table["vs_best_p_holm"] < stats.ALPHA)
    tolerance = chooser.tolerance(table[f"{select}_mean"].iloc[0])
    within = [True]
    for key in table.config_key.iloc[1:]:
        mine = per_seed(done, key, select)
        shared = mine.index.intersection(best.index)
        differences = chooser.sign * (mine[shared] - best[shared]).to_numpy()  # positive: better than the best
        within.append(stats.non_inferior(differences, tolerance).non_inferior)
    table["tolerance"] = tolerance
    table["within_tolerance_of_best"] = within
    table["prob_best"] = _probability_best(done, table["config_key"].tolist(), select, seed)
    return table


def _probability_best(done: pd.DataFrame, keys: list[str], metric: str, seed: int) -> np.ndarray:
    """Each configuration's probability of having the best mean (the lowest, where lower is better), over the
    seeds every configuration has."""
    wide = done.pivot_table(index="seed", columns="config_key", values=metric, aggfunc="first")[keys].dropna()
    if len(wide) < 2:
        return np.full(len(keys), np.nan)
    oriented = metrics.get(metric).sign * wide.to_numpy(float)  # the best has the highest value
    return stats.probability_best(oriented, rng=np.random.default_rng(seed))


def _max_t(done: pd.DataFrame, table: pd.DataFrame, metric: str, seed: int) -> np.ndarray:
    """Westfall-Young max-T adjusted p-values of every configuration against its baseline on `metric` (sign flips
    of whole seeds keep the comparisons' correlation, so it is less conservative than Holm; two-sided, so the
    direction does not matter); NaN unless every configuration has every seed."""
    wide = done.pivot_table(index="seed", columns="config_key", values=metric, aggfunc="first")
    out = np.full(len(table), np.nan)
    pairs = [
        (i, k, b)
        for i, (k, b) in enumerate(zip(table["config_key"], table["baseline_key"], strict=True))
        if isinstance(b, str) and b != k
    ]
    if not pairs or len(wide) < 2 or wide.isna().any().any():
        return out
    differences = np.column_stack([(wide[k] - wide[b]).to_numpy(float) for _, k, b in pairs])
    adjusted = stats.max_t_adjusted(differences, rng=np.random.default_rng(seed))
    out[[i for i, _, _ in pairs]] = adjusted
    return out
