"""What a study found, as records: pure functions of the trials table (and the space as run), no drawing, no words.

`report.py` turns these records into sentences; the tests check the records. The protocol they follow:

- One metric is measured (`metrics.py`: test accuracy by default, test RMSE for a regression, or the one named):
  every comparison knows whether higher or lower is better ("helps", the best, the tolerance, the tuning).
- Selection (the best configuration, each regulariser's best setting, the recommendation) uses the metric's
  validation counterpart; the test set only measures what was selected. Without a validation split it falls back
  to the test metric and `Protocol.optimistic` says so.
- Each configuration is compared with the unregularised configuration of its own context (same width, learning
  rate, epochs, ...), paired over seeds.
- The planned family -- each regulariser alone, at its best setting, against the baseline, in each context -- is
  corrected (Holm) over its own few comparisons, so 10 seeds can reach significance; every other configuration
  belongs to the exploratory family, corrected over all of them (the summary table's `vs_baseline_p_holm`).
- "Probably helps" needs a corrected (Bonferroni) interval that excludes zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from study.analysis import metrics, stats
from study.analysis.tables import (
    AXIS_NAMES,
    NUMERIC_AXES,
    OFF_VALUES,
    baseline_key,
    baseline_mask,
    baselines,
    compare,
    config_label,
    context_axes,
    hold_others_off,
    is_off,
    level_label,
    levels,
    per_seed,
    selection_metric,
    varying_axes,
)
from study.axes import RATE_AXES

# --- the protocol ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    """How the study's numbers were obtained: what chose, what measured, what varied between seeds."""

    metric: str  # what is measured: test_accuracy, test_rmse, test_nll, ...
    selection_metric: str  # its validation counterpart, or the metric itself without a validation split
    optimistic: bool  # selection and early stopping looked at the test set
    n_train: int
    n_validation: int
    n_test: int
    test_row_points: float  # one test row's worth of accuracy, in points
    varied: tuple[str, ...]  # sources of randomness that change with the seed
    fixed: tuple[str, ...]  # sources that do not
    settings: tuple[str, ...]  # training settings no axis sweeps: the conclusions hold for these
    nuisance: tuple[str, ...]  # axes tuned away (best value per setting of the others, on validation)


def protocol_info(done: pd.DataFrame, space: dict, metric: str | None = None) -> Protocol:
    """The protocol record of a study's finished trials and its space as run (the manifest's `space`), measuring
    `metric` (default: the study's)."""
    first = done.iloc[0]
    split = space.get("dataset", {}).get("split", {})
    metric = metric or metrics.default(done)
    select = selection_metric(done, metric)
    swept = varying_axes(done)
    sources = {
        "initial weights": True,
        "minibatch order": bool((done["batch_size"] < done["n_train"]).any()),
        "dropout masks": bool((done[list(RATE_AXES)].fillna(0) > 0).to_numpy().any()),
        "train/test split": bool(split.get("per_seed", False)),
        "data draw": bool(space.get("dataset", {}).get("redraw_data", False)),
    }
    training = space.get("training", {})
    optimizer = training.get("optimizer", {})
    settings = []
    if "learning_rate" not in swept:
        settings.append(f"Adam at learning rate {float(first['learning_rate']):g}")
    if "epochs" not in swept:
        stopping = " (at most, with early stopping)" if done["early_stopping"].astype(bool).any() else ""
        settings.append(f"{int(first['epochs'])} epochs{stopping}")
    if "batch_size" not in swept:
        settings.append(f"batch size {int(first['batch_size'])}")
    if "hidden_units" not in swept:
        settings.append(f"width {first['hidden_units']}")
    if optimizer and (optimizer.get("beta_1", 0.9), optimizer.get("beta_2", 0.999)) != (0.9, 0.999):
        settings.append(f"Adam betas {optimizer['beta_1']:g}/{optimizer['beta_2']:g}")
    n_val = first.get("n_validation")
    return Protocol(
        metric=metric,
        selection_metric=select,
        optimistic=select == metric,
        n_train=int(first["n_train"]),
        n_validation=0 if pd.isna(n_val) else int(n_val),
        n_test=int(first["n_test"]),
        test_row_points=100.0 / int(first["n_test"]),
        varied=tuple(k for k, v in sources.items() if v),
        fixed=tuple(k for k, v in sources.items() if not v),
        settings=tuple(settings),
        nuisance=tuple(space.get("nuisance", [])),
    )


# --- nuisance axes -----------------------------------------------------------------------------------------


def tune_nuisance(done: pd.DataFrame, nuisance: tuple[str, ...], metric: str) -> pd.DataFrame:
    """The trials at the best nuisance value for every setting of the other axes (best mean `metric` -- the
    highest, or the lowest where lower is better -- the selection metric, validation where there is a validation
    split): what the report compares when axes are tuned away.

    The nuisance column is blanked (so no analysis sees it as an axis) and its chosen value kept as `tuned_<axis>`.
    """
    nuisance = tuple(a for a in nuisance if a in varying_axes(done))
    if not nuisance:
        return done
    others = [a for a in varying_axes(done) if a not in nuisance]
    first = done.drop_duplicates("config_key").set_index("config_key")
    first = first.assign(_mean=done.groupby("config_key", sort=False)[metric].mean())
    best = metrics.get(metric).best
    if others:
        keep = first.groupby([first[a].astype(str) for a in others], sort=False)["_mean"].agg(best)
    else:
        keep = pd.Series([best(first["_mean"])])
    tuned = done[done["config_key"].isin(set(keep))].reset_index(drop=True)
    return tuned.assign(**{f"tuned_{a}": tuned[a] for a in nuisance}, **{a: np.nan for a in nuisance})


def tuned_label(row: pd.Series) -> str:
    """The nuisance values chosen for a configuration, e.g. 'learning rate 0.01'; empty when nothing was tuned."""
    tuned = [c.removeprefix("tuned_") for c in row.index if c.startswith("tuned_")]
    return ", ".join(f"{AXIS_NAMES[a]} {level_label(a, row[f'tuned_{a}'])}" for a in tuned)


# --- comparisons -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Effect:
    """One configuration against its own baseline, on the measured metric (paired over shared seeds)."""

    axis: str  # the regulariser it shows alone (planned family), or "" (exploratory)
    context: str  # e.g. "width 64" (empty when the study varies no context axis)
    config_key: str
    configuration: str
    baseline_key: str
    seeds: int
    paired: bool
    difference: float  # the metric, configuration minus baseline, in its units (negative is better where lower is)
    ci_low: float  # corrected for the family (Bonferroni), t interval
    ci_high: float
    p_value: float
    p_adjusted: float  # Holm over the family
    family_size: int
    prob_better: float  # the probability that a seed does better (lower, where lower is better)
    reachable: bool  # can any result of the paired test survive the family's correction at these seeds?
    verdict: str  # helps, hurts, probably helps, probably hurts, noise


def _context_label(row: pd.Series, context: list[str]) -> str:
    return ", ".join(f"{AXIS_NAMES[a]} {level_label(a, row[a])}" for a in context)


def planned_effects(done: pd.DataFrame, seed: int = 0, metric: str | None = None) -> list[Effect]:
    """Each varying regulariser alone (every other varying regulariser off), at its best setting chosen on the
    selection metric, against the baseline of its context, on `metric` (default: the study's): one family,
    Holm-corrected."""
    metric = metric or metrics.default(done)
    select = selection_metric(done, metric)
    best = metrics.get(select).best
    context = context_axes(done)
    base_of = baselines(done)
    axes = varying_axes(done)
    chosen = []
    for axis in (a for a in axes if a in OFF_VALUES):
        alone = done[baseline_mask(done, except_axes=(axis,)) & ~is_off(done, axis)]
        groups = alone.groupby([alone[a].astype(str) for a in context], sort=False) if context else [("", alone)]
        for _, rows in groups:
            key = best(rows.groupby("config_key")[select].mean())
            base = base_of.get(key)
            if base is not None:
                chosen.append((axis, rows[rows.config_key == key].iloc[0], base))
    return _family(done, chosen, context, axes, metric, seed)


def _family(
    done: pd.DataFrame, chosen: list, context: list[str], axes: list[str], metric: str, seed: int
) -> list[Effect]:
    m = len(chosen)
    if not m:
        return []
    level = 1 - stats.ALPHA / m  # Bonferroni: simultaneous coverage of the family's intervals
    found = []
    for axis, row, base in chosen:
        treatment, reference = per_seed(done, row.config_key, metric), per_seed(done, base, metric)
        comparison = compare(treatment, reference, metric, seed)
        shared = treatment.index.intersection(reference.index)
        differences = (treatment[shared] - reference[shared]).to_numpy()
        if comparison.paired:
            low, high = stats.interval(differences, confidence=level)
            floor = stats.smallest_p_value_of(differences)
        else:
            low, high, floor = comparison.ci_low, comparison.ci_high, np.nan
        found.append((axis, row, base, comparison, low, high, floor))
    adjusted = stats.holm(np.array([f[3].p_value for f in found]))
    effects = []
    for (axis, row, base, c, low, high, floor), p_adj in zip(found, adjusted, strict=True):
        reachable = bool(np.isfinite(floor) and significance_reachable(floor, m))
        effects.append(
            Effect(
                axis=axis,
                context=_context_label(row, context),
                config_key=str(row.config_key),
                configuration=config_label(row, axes),
                baseline_key=str(base),
                seeds=c.n,
                paired=c.paired,
                difference=c.difference,
                ci_low=low,
                ci_high=high,
                p_value=c.p_value,
                p_adjusted=float(p_adj),
                family_size=m,
                prob_better=c.prob_better,
                reachable=reachable,
                verdict=_verdict(metrics.get(metric).sign * c.difference, float(p_adj), low, high),
            )
        )
    return effects


def significance_reachable(smallest_p: float, comparisons: int) -> bool:
    """Whether the most extreme result of a test whose floor is `smallest_p` survives Holm over `comparisons`
    (its first step is Bonferroni): the one rule the conclusions and the power note share."""
    return smallest_p * comparisons < stats.ALPHA


def _verdict(improvement: float, p_adjusted: float, low: float, high: float) -> str:
    """`improvement` is the difference signed so that positive is better; the interval's sign does not matter."""
    direction = "helps" if improvement > 0 else "hurts"
    if p_adjusted < stats.ALPHA:
        return direction
    if low > 0 or high < 0:
        return f"probably {direction}"
    return "noise"


# --- the best configuration and the recommendation ---------------------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    """The settings as good as the best on the selection metric, and the selected one's test result (on the
    measured `metric`)."""

    metric: str
    selected_on: str
    tolerance: float  # in the selection metric's units (`metrics.Metric.tolerance_words` writes it)
    best_key: str
    best: str
    tuned: str  # the nuisance values chosen for the best configuration, e.g. "learning rate 0.01"
    best_test_mean: float
    best_test_ci: tuple[float, float]
    best_selection_mean: float
    seeds: int
    as_good: list[str]  # configurations within `tolerance` of the best (paired non-inferiority), best first
    ranges: dict[str, str]  # per scientific axis: the values among `as_good`, e.g. {"dropout_rate": "0.2-0.5"}
    prob_best: list[tuple[str, float]]  # the likeliest best configurations, with their probabilities
    indistinguishable: int  # others not separable from the best by a corrected paired test
    untested: int  # others with too few shared seeds for any test
    baseline_test: tuple[float, float, float] | None = None  # the best's own baseline: mean, CI low, CI high


def _table_metric(table: pd.DataFrame) -> str:
    """The metric a summary table measures (tables written before it said so measured test accuracy)."""
    return str(table["metric"].iloc[0]) if "metric" in table else "test_accuracy"


def recommendation_info(done: pd.DataFrame, table: pd.DataFrame) -> Recommendation:
    """From the summary table (best first on the selection metric)."""
    metric = _table_metric(table)
    best = table.iloc[0]
    good = table[table["within_tolerance_of_best"].astype(bool)]
    ranges = {}
    for axis in (a for a in varying_axes(done) if a in OFF_VALUES):
        values = [v for v in levels(table, axis) if v in set(good[axis]) or (pd.isna(v) and good[axis].isna().any())]
        names = [level_label(axis, v) for v in values]
        positions = [levels(table, axis).index(v) for v in values] if not good[axis].isna().any() else []
        contiguous = (
            len(names) > 2 and bool(positions) and positions == list(range(positions[0], positions[0] + len(positions)))
        )
        if names:
            ranges[axis] = f"{names[0]}-{names[-1]}" if axis in NUMERIC_AXES and contiguous else ", ".join(names)
    ranked = table.dropna(subset=["prob_best"]).sort_values("prob_best", ascending=False)
    prob_best = [(r.configuration, float(r.prob_best)) for r in ranked.head(3).itertuples() if r.prob_best > 0]
    base = best.baseline_key
    baseline_test = None
    if isinstance(base, str) and base != best.config_key:
        row = table.set_index("config_key").loc[base]
        baseline_test = (row[f"{metric}_mean"], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"])
    others = table.iloc[1:]
    untested = int((~others["indistinguishable_from_best"] & others["vs_best_p_holm"].isna()).sum())
    tolerance = best["tolerance"] if "tolerance" in table else metrics.get(str(best.selected_on)).tolerance(np.nan)
    return Recommendation(
        metric=metric,
        selected_on=str(best.selected_on),
        tolerance=float(tolerance),
        best_key=str(best.config_key),
        best=str(best.configuration),
        tuned=tuned_label(best),
        best_test_mean=float(best[f"{metric}_mean"]),
        best_test_ci=(float(best[f"{metric}_ci_low"]), float(best[f"{metric}_ci_high"])),
        best_selection_mean=float(best[f"{best.selected_on}_mean"]),
        seeds=int(best.seeds),
        as_good=good["configuration"].tolist(),
        ranges=ranges,
        prob_best=prob_best,
        indistinguishable=int(others["indistinguishable_from_best"].sum()),
        untested=untested,
        baseline_test=baseline_test,
    )


# --- where the variance is ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VarianceFindings:
    """ANOVA shares of the measured metric, and the seed noise measured on its own."""

    metric: str
    shares: stats.VarianceShares
    seed_noise: float  # share of the total sum of squares within configurations (seed to seed)
    residual_is_seed_noise: bool  # the ANOVA has no 3-way or higher terms to fold into its residual


def variance_info(done: pd.DataFrame, axes: list[str], metric: str | None = None) -> VarianceFindings:
    """The variance decomposition of `metric` (default: the study's). Raises ValueError when there are too few
    trials for the model's degrees of freedom."""
    metric = metric or metrics.default(done)
    shared_seeds = done.groupby("seed")["config_key"].nunique().gt(1).all() and done["seed"].nunique() > 1
    shares = stats.variance_explained(done, metric, axes, block="seed" if shared_seeds else None)
    y = done[metric].to_numpy(float)
    total = float(((y - y.mean()) ** 2).sum())
    within = float(done.groupby("config_key")[metric].transform(lambda v: (v - v.mean()) ** 2).sum())
    seed_noise = within / total if total > 0 else np.nan
    return VarianceFindings(metric, shares, seed_noise, residual_is_seed_noise=len(axes) <= 2)


# --- power -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Power:
    metric: str  # the measured metric: every amount below is in its units
    spread: float  # typical seed-to-seed sd of a paired difference
    seeds: int
    comparisons: int  # the planned family's size
    single: float  # smallest difference one paired comparison detects 80% of the time
    corrected: float  # the same after correcting for the family
    reachable: bool  # can the family's correction be passed at all with these seeds


def power_info(done: pd.DataFrame, table: pd.DataFrame, planned: list[Effect]) -> Power | None:
    """The power note, on the metric the summary `table` measures."""
    metric = _table_metric(table)
    base_of = table.set_index("config_key")["baseline_key"]
    spreads = []
    for key, base in base_of.items():
        if isinstance(base, str) and base != key:
            mine, ref = per_seed(done, key, metric), per_seed(done, base, metric)
            shared = mine.index.intersection(ref.index)
            if len(shared) >= 2:
                spreads.append(float(np.std((mine[shared] - ref[shared]).to_numpy(), ddof=1)))
    if not spreads or not planned:
        return None
    spread = float(np.median(spreads))
    n = int(table["seeds"].median())
    m = len(planned)
    return Power(
        metric=metric,
        spread=spread,
        seeds=n,
        comparisons=m,
        single=stats.minimum_detectable_difference(spread, n),
        corrected=stats.minimum_detectable_difference(spread, n, alpha=stats.ALPHA / m),
        reachable=significance_reachable(stats.smallest_p_value(n), m),
    )


@dataclass
class Findings:
    """Everything the report says, computed once."""

    protocol: Protocol
    planned: list[Effect]
    recommendation: Recommendation
    variance: VarianceFindings | None
    power: Power | None
    notes: list[str] = field(default_factory=list)
    calibration: Calibration | None = None  # without calibration columns (a regression, an older study): None
    mc_dropout: list[McEffect] = field(default_factory=list)  # without MC-dropout columns: empty


# --- what the figures show -------------------------------------------------------------------------------


def curve_panels(done: pd.DataFrame, table: pd.DataFrame, chosen: list[str]) -> dict[str, str]:
    """The learning-curve panels, config key -> title: the baseline, the best configuration, the best dropout-only
    one (both on the selection metric) and the user's `chosen` ones, each once."""
    axes = varying_axes(done)
    wanted: dict[str, str] = {}
    base = table.loc[table["baseline_key"] == table["config_key"], "config_key"]
    if not base.empty:
        wanted[str(base.iloc[0])] = "No regularisation"
    wanted.setdefault(str(table["config_key"].iloc[0]), f"Best: {table['configuration'].iloc[0]}")
    dropout_only = table[
        table["config_key"].isin(done.loc[baseline_mask(done, except_axes=("dropout_rate",)), "config_key"])
        & (table.get("dropout_rate", pd.Series(0.0, index=table.index)).fillna(0) > 0)
    ]
    if not dropout_only.empty:  # the table is sorted best first
        wanted.setdefault(
            str(dropout_only["config_key"].iloc[0]), f"Best dropout-only: {dropout_only['configuration'].iloc[0]}"
        )
    for key in chosen:
        wanted.setdefault(key, f"Chosen: {config_label(done[done.config_key == key].iloc[0], axes)}")
    return wanted


def curve_metric(curves: pd.DataFrame, metric: str) -> str:
    """The metric the learning curves draw for `metric`: itself where the curves record it per epoch, else its
    plain (not MC-dropout) counterpart, else the loss (which every engine records)."""
    plain = metrics.get(metric).column("test").removeprefix("mc_")
    return next((m for m in (metric, plain) if metrics.recorded_any(curves, m)), "test_loss")


def paired_differences(done: pd.DataFrame, table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per-seed differences of `keys` against each one's own baseline (shared seeds only), on the metric the
    summary `table` measures, configuration minus baseline in its units: config_key, seed, difference."""
    metric = _table_metric(table)
    base_of = table.set_index("config_key")["baseline_key"]
    frames = []
    for key in keys:
        base = base_of.get(key)
        if not isinstance(base, str) or base == key:
            continue
        mine, reference = per_seed(done, key, metric), per_seed(done, base, metric)
        shared = mine.index.intersection(reference.index)
        difference = (mine[shared] - reference[shared]).to_numpy()
        frames.append(pd.DataFrame({"config_key": key, "seed": shared, "difference": difference}))
    empty = pd.DataFrame(columns=["config_key", "seed", "difference"])
    return pd.concat(frames, ignore_index=True) if frames else empty


# --- the isolation plot (Google's tuning playbook) ---------------------------------------------------------

TUNED = "best per setting"


def isolation_info(done: pd.DataFrame, axis: str, nuisance: str, metric: str, shown: str | None = None) -> pd.DataFrame:
    """The `shown` metric (default: the test counterpart of `metric`) against the scientific `axis` at each fixed
    value of the `nuisance` axis, and at the nuisance value that is best on `metric` (the selection metric:
    highest, or lowest where lower is better) for each setting of `axis`: the tidy rows (axis value, curve, seed,
    `shown`, nuisance value) of the playbook's isolation plot. Other varying regularisers are held off."""
    shown = shown or metrics.get(metric).column("test")
    rows = done[baseline_mask(done, except_axes=(axis,))]
    fixed = rows.assign(curve=rows[nuisance].map(lambda v: f"{AXIS_NAMES[nuisance]} {level_label(nuisance, v)}"))
    means = rows.groupby("config_key")[metric].mean()
    pick = "max" if metrics.get(metric).higher_is_better else "min"
    best = rows.assign(_mean=rows["config_key"].map(means)).groupby(axis, dropna=False)["_mean"].transform(pick)
    tuned = rows[rows["config_key"].map(means) == best].assign(curve=TUNED)
    columns = [axis, "curve", "seed", shown, nuisance]
    return pd.concat([fixed[columns], tuned[columns]], ignore_index=True)


# --- calibration and MC dropout ----------------------------------------------------------------------------

CALIBRATION_MEASURES = ("ece", "nll")  # what the calibration figure draws, in panel order
KINDS = {"deterministic": "", "mc": "mc_"}  # the reliability bins' `kind` -> the prefix of its trials.csv columns


def has_calibration(done: pd.DataFrame) -> bool:
    """Whether finished trials record test ECE and NLL (a classifier's probabilities were scored; a regression and
    a study run before the engines recorded them have none)."""
    return all(metrics.recorded_any(done, f"test_{m}") for m in CALIBRATION_MEASURES)


def has_mc(done: pd.DataFrame) -> bool:
    """Whether finished trials record Monte Carlo dropout scores (`evaluation: {mc_samples: N}` in the space)."""
    return metrics.recorded_any(done, "mc_test_nll")


@dataclass(frozen=True)
class CalibrationByDropout:
    """Test ECE and NLL against the dropout rate, other regularisers held off (as the axis figures hold them)."""

    rows: pd.DataFrame  # tidy: dropout_rate, seed, config_key, kind (deterministic, mc), measure (ece, nll), value
    means: pd.DataFrame  # per kind, measure, dropout_rate: seeds, mean, ci_low, ci_high (95% t interval)
    held: list[str]  # axes held at their off value
    pooled: list[str]  # axes averaged over (no off value in the grid)
    mc: bool  # MC-dropout scores are among the rows


def calibration_by_dropout(done: pd.DataFrame) -> CalibrationByDropout:
    """Every finished trial's test ECE and NLL, deterministic and (where recorded) MC dropout, against the dropout
    rate with every other varying axis held off (or pooled where the grid has no off value), and their means with
    95% t intervals over seeds. Trials without the scores are left out."""
    data, held, pooled = hold_others_off(done, ("dropout_rate",))
    frames = []
    for kind, prefix in KINDS.items():
        for measure in CALIBRATION_MEASURES:
            column = f"{prefix}test_{measure}"
            if metrics.recorded_any(data, column):
                part = data[["dropout_rate", "seed", "config_key", column]].dropna(subset=[column])
                frames.append(part.rename(columns={column: "value"}).assign(kind=kind, measure=measure))
    columns = ["dropout_rate", "seed", "config_key", "value", "kind", "measure"]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    described = [
        {"kind": kind, "measure": measure, "dropout_rate": rate, "seeds": len(values),
         **{k: v for k, v in stats.describe(values.to_numpy(float)).items() if k in ("mean", "ci_low", "ci_high")}}
        for (kind, measure, rate), values in rows.groupby(["kind", "measure", "dropout_rate"], sort=True)["value"]
    ]  # fmt: skip
    means = pd.DataFrame(described, columns=["kind", "measure", "dropout_rate", "seeds", "mean", "ci_low", "ci_high"])
    return CalibrationByDropout(rows, means, held, pooled, mc=bool((rows["kind"] == "mc").any()))


def pool_bins(bins: pd.DataFrame, trial_keys, split: str = "test") -> pd.DataFrame:
    """Reliability bins of several trials (a configuration's seeds) pooled per kind and bin: counts summed, mean
    confidence and accuracy weighted by each trial's count in the bin (every prediction counts once), NaN in a bin
    no trial has a prediction in. Columns: kind, bin, count, confidence, accuracy."""
    columns = ["kind", "bin", "count", "confidence", "accuracy"]
    part = bins[bins["trial_key"].isin(set(trial_keys)) & (bins["split"] == split)]
    if part.empty:
        return pd.DataFrame(columns=columns)
    count = part["count"].astype(float)
    weighted = pd.DataFrame({
        "kind": part["kind"], "bin": part["bin"].astype(int), "count": count,
        "confidence": part["confidence"].astype(float).fillna(0.0) * count,
        "accuracy": part["accuracy"].astype(float).fillna(0.0) * count,
    })  # fmt: skip
    pooled = weighted.groupby(["kind", "bin"], sort=True).sum().reset_index()
    full = pooled["count"] > 0
    for column in ("confidence", "accuracy"):
        pooled[column] = (pooled[column] / pooled["count"].where(full)).astype(float)
    return pooled.assign(count=pooled["count"].astype(int))[columns]


@dataclass(frozen=True)
class ReliabilityPanel:
    """One configuration's reliability diagram: its seeds' test bins pooled."""

    config_key: str
    role: str  # "no regularisation", "recommended", or both
    configuration: str
    seeds: int  # trials whose bins are stored
    ece: float  # mean test ECE over its seeds (trials.csv), the deterministic pass
    mc_ece: float  # the same with MC dropout; NaN without
    bins: pd.DataFrame  # `pool_bins` of its seeds' test bins


def recommended_and_baseline(done: pd.DataFrame, table: pd.DataFrame, best_key: str) -> dict[str, str]:
    """role -> config key: the recommended configuration and its own baseline (its context's configuration with
    every regulariser off; the first context's where its own has none), each once."""
    base = table.set_index("config_key")["baseline_key"].get(best_key)
    if not isinstance(base, str):
        base = baseline_key(done)
    if base == best_key:
        return {"no regularisation (also the recommendation)": best_key}
    return {**({"no regularisation": base} if base is not None else {}), "recommended": best_key}


def reliability_panels(
    done: pd.DataFrame, bins: pd.DataFrame, table: pd.DataFrame, recommendation: Recommendation
) -> list[ReliabilityPanel]:
    """The reliability panels of the baseline and the recommended configuration (those with stored test bins)."""
    labels = table.set_index("config_key")["configuration"]
    panels = []
    for role, key in recommended_and_baseline(done, table, recommendation.best_key).items():
        rows = done[done["config_key"] == key]
        pooled = pool_bins(bins, rows["trial_key"])
        if pooled.empty:
            continue
        stored = bins.loc[bins["trial_key"].isin(set(rows["trial_key"])) & (bins["split"] == "test"), "trial_key"]
        mc_ece = rows["mc_test_ece"].mean() if metrics.recorded_any(rows, "mc_test_ece") else np.nan
        panels.append(
            ReliabilityPanel(
                config_key=key,
                role=role,
                configuration=str(labels.get(key, key)),
                seeds=int(stored.nunique()),
                ece=float(rows["test_ece"].mean()) if metrics.recorded_any(rows, "test_ece") else np.nan,
                mc_ece=float(mc_ece),
                bins=pooled,
            )
        )
    return panels


@dataclass(frozen=True)
class McEffect:
    """Does averaging MC-dropout passes lower the test NLL of one configuration's trials? Paired within trials."""

    role: str  # "recommended", "no regularisation", ...
    config_key: str
    configuration: str
    seeds: int
    difference: float  # mean of mc_test_nll - test_nll over the seeds (negative: MC dropout lowers the NLL)
    ci_low: float  # t interval, corrected for the family (Bonferroni)
    ci_high: float
    p_value: float  # Wilcoxon signed-rank
    p_adjusted: float  # Holm over the family
    family_size: int
    prob_better: float  # the share of seeds whose MC NLL is lower (ties count half)
    reachable: bool  # can the most extreme signed-rank result pass the family's correction at these seeds?
    verdict: str  # helps (MC lowers the NLL), hurts, probably helps, probably hurts, noise
    accuracy_difference: float  # mean of mc_test_accuracy - test_accuracy; NaN where not recorded
    accuracy_ci: tuple[float, float]  # its 95% t interval (uncorrected: a description, not a test)


def mc_effects(done: pd.DataFrame, table: pd.DataFrame, recommendation: Recommendation) -> list[McEffect]:
    """MC dropout against the deterministic pass of the same trials, on test NLL, at the recommended configuration
    and at its baseline: a family of (at most) two paired comparisons, Holm-corrected, with Bonferroni-corrected t
    intervals. Empty without MC-dropout columns; a configuration with fewer than two scored trials is left out."""
    if not has_mc(done):
        return []
    chosen = []
    roles = recommended_and_baseline(done, table, recommendation.best_key)
    for role, key in sorted(roles.items(), key=lambda item: item[0] != "recommended"):  # the recommendation first
        rows = done[done["config_key"] == key].dropna(subset=["mc_test_nll", "test_nll"])
        if len(rows) >= 2:
            chosen.append((role, key, rows))
    m = len(chosen)
    labels = table.set_index("config_key")["configuration"]
    found = []
    for role, key, rows in chosen:
        mc = pd.Series(rows["mc_test_nll"].to_numpy(float), index=rows["seed"].to_numpy())
        plain = pd.Series(rows["test_nll"].to_numpy(float), index=rows["seed"].to_numpy())
        comparison = compare(mc, plain, "test_nll")
        differences = (mc - plain).to_numpy()
        low, high = stats.interval(differences, confidence=1 - stats.ALPHA / m)
        both = "mc_test_accuracy" in rows and "test_accuracy" in rows
        accuracy_change = (rows["mc_test_accuracy"] - rows["test_accuracy"]).dropna().to_numpy(float) if both else []
        found.append((role, key, comparison, low, high, stats.smallest_p_value_of(differences), accuracy_change))
    adjusted = stats.holm(np.array([f[2].p_value for f in found]))
    effects = []
    for (role, key, c, low, high, floor, accuracy_change), p_adj in zip(found, adjusted, strict=True):
        effects.append(
            McEffect(
                role=role,
                config_key=key,
                configuration=str(labels.get(key, key)),
                seeds=c.n,
                difference=c.difference,
                ci_low=low,
                ci_high=high,
                p_value=c.p_value,
                p_adjusted=float(p_adj),
                family_size=m,
                prob_better=c.prob_better,
                reachable=significance_reachable(floor, m),
                verdict=_verdict(-c.difference, float(p_adj), low, high),
                accuracy_difference=float(np.mean(accuracy_change)) if len(accuracy_change) else np.nan,
                accuracy_ci=stats.interval(accuracy_change),
            )
        )
    return effects


@dataclass(frozen=True)
class ConfigurationCalibration:
    """One configuration's deterministic test NLL and ECE: means and 95% t intervals over its seeds."""

    config_key: str
    configuration: str
    seeds: int
    dropout_rate: float  # NaN where the configuration has no dropout rate
    nll: tuple[float, float, float]  # mean, CI low, CI high
    ece: tuple[float, float, float]


@dataclass(frozen=True)
class Calibration:
    """How much dropout gives the best-calibrated model: the configuration with the lowest mean selection NLL
    (validation; test without a validation split, optimistic) against the baseline and the recommendation."""

    selected_on: str  # validation_nll, or test_nll
    optimistic: bool  # chosen on the test set itself
    best: ConfigurationCalibration
    recommended: ConfigurationCalibration | None  # the report's recommendation (on its own metric)
    baseline: ConfigurationCalibration | None  # the recommendation's own baseline; None where the grid has none


def _configuration_calibration(
    scored: pd.DataFrame, key: str | None, labels: pd.Series
) -> ConfigurationCalibration | None:
    rows = scored[scored["config_key"] == key]
    if key is None or rows.empty:
        return None

    def described(column: str) -> tuple[float, float, float]:
        d = stats.describe(rows[column].to_numpy(float))
        return d["mean"], d["ci_low"], d["ci_high"]

    rate = rows["dropout_rate"].iloc[0] if "dropout_rate" in rows else np.nan
    return ConfigurationCalibration(
        config_key=str(key),
        configuration=str(labels.get(key, key)),
        seeds=int(rows["seed"].nunique()),
        dropout_rate=float(rate) if pd.notna(rate) else np.nan,
        nll=described("test_nll"),
        ece=described("test_ece"),
    )


def calibration_info(done: pd.DataFrame, table: pd.DataFrame, recommendation: Recommendation) -> Calibration | None:
    """The calibration record of the trials that record test NLL and ECE; None where none do."""
    if not has_calibration(done):
        return None
    scored = done.dropna(subset=["test_nll", "test_ece"])
    select = selection_metric(scored, "test_nll")
    means = scored.groupby("config_key", sort=False)[select].mean()
    labels = table.set_index("config_key")["configuration"]
    roles = recommended_and_baseline(done, table, recommendation.best_key)
    base = next((key for role, key in roles.items() if role.startswith("no regularisation")), None)
    return Calibration(
        selected_on=select,
        optimistic=select == "test_nll",
        best=_configuration_calibration(scored, metrics.get(select).best(means), labels),
        recommended=_configuration_calibration(scored, recommendation.best_key, labels),
        baseline=_configuration_calibration(scored, base, labels),
    )
