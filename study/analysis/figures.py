"""Seaborn figures of a study. Each function draws one PNG from tidy frames and returns its path.

Colours mean the same thing everywhere: test is solid, train dashed; a numeric hue (a rate) uses the sequential
viridis palette, weak to strong; on/off and other categories the colour-blind-safe palette, in level order. Every
figure draws the metric it is given (`metrics.Metric`: test accuracy unless the report measures another), labelled
with its name and direction; in a heatmap the brightest cell is the best whichever way is better.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen needed

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from study.analysis import metrics, stats
from study.analysis.tables import AXIS_LABELS, AXIS_NAMES, NUMERIC_AXES, level_label, levels


def T_INTERVAL(values: pd.Series) -> tuple[float, float]:  # noqa: N802  (seaborn's `errorbar` callable)
    """The 95% Student t interval of the mean that the statistics use, for figure bands."""
    low, high = stats.interval(np.asarray(values, dtype=float))
    mean = float(np.mean(values))
    return (mean, mean) if np.isnan(low) else (low, high)


SPLIT_COLOURS = {"test": "#1f77b4", "train": "#ff7f0e", "validation": "#2ca02c"}
SPLIT_LINES = {"test": "-", "train": "--", "validation": ":"}
SPLIT_DASHES = {"test": "", "train": (4, 2)}
MAX_CURVE_POINTS = 500
DPI = 120


def _theme() -> None:
    sns.set_theme(context="notebook", style="whitegrid", font_scale=1.0)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _palette(trials: pd.DataFrame, hue: str) -> dict[str, tuple]:
    names = [level_label(hue, v) for v in levels(trials, hue)]
    colours = sns.color_palette("viridis" if hue in NUMERIC_AXES else "colorblind", len(names))
    return dict(zip(names, colours, strict=True))


def _positions(trials: pd.DataFrame, axis: str) -> tuple[pd.Series, list[float], list[str]]:
    """x coordinates of an axis: the values themselves for rates, evenly spaced level positions otherwise."""
    order = levels(trials, axis)
    if axis in NUMERIC_AXES:
        return trials[axis].astype(float), [float(v) for v in order], [level_label(axis, v) for v in order]
    index = {level_label(axis, v): i for i, v in enumerate(order)}
    x = trials[axis].map(lambda v: index[level_label(axis, v)]).astype(float)
    return x, list(range(len(order))), list(index)


ACCURACY = metrics.get("test_accuracy")


def metric_vs_axis(
    trials: pd.DataFrame,
    axis: str,
    path: Path,
    metric: metrics.Metric = ACCURACY,
    train: str | None = "train_accuracy",
    hue: str | None = None,
    facet: str | None = None,
    note: str = "",
) -> Path:
    """Test (solid) and, where `train` names its train column, train (dashed) `metric` against `axis`: mean and
    95% t interval over seeds.

    One line pair per value of `hue`, one panel per value of `facet`. `note` goes under the title (which
    axes were held fixed).
    """
    _theme()
    data = trials.copy()
    data["_x"], ticks, tick_labels = _positions(trials, axis)
    id_vars = ["_x", "seed", *(c for c in (hue, facet) if c)]
    columns = {metric.name: "test", **({train: "train"} if train else {})}
    long = data.melt(id_vars=id_vars, value_vars=list(columns), value_name="value")
    long["split"] = long.pop("variable").map(columns)
    kwargs = {"hue": "split", "palette": SPLIT_COLOURS}
    if hue:  # the column takes the axis's display name: seaborn writes it as the legend's heading
        long[AXIS_NAMES[hue]] = long.pop(hue).map(lambda v: level_label(hue, v))
        palette = _palette(trials, hue)
        kwargs = {"hue": AXIS_NAMES[hue], "hue_order": list(palette), "palette": palette}
    if facet:
        names = [f"{AXIS_NAMES[facet]} {level_label(facet, v)}" for v in levels(trials, facet)]
        long[facet] = long[facet].map(lambda v: f"{AXIS_NAMES[facet]} {level_label(facet, v)}")
        kwargs.update(col=facet, col_order=names)
    grid = sns.relplot(
        data=long,
        kind="line",
        x="_x",
        y="value",
        style="split",
        style_order=["test", "train"][: len(columns)],
        dashes=SPLIT_DASHES,
        markers={"test": "o", "train": "s"},
        errorbar=T_INTERVAL,
        height=4.6,
        aspect=1.25 if facet else 1.6,
        facet_kws={"sharey": True},
        **kwargs,
    )
    for ax in grid.axes.flat:
        ax.set_xticks(ticks, tick_labels)
        ax.set_xlabel(AXIS_LABELS.get(axis, axis))
        if axis not in NUMERIC_AXES:
            ax.margins(x=0.15)  # categories: keep the end points off the frame
    grid.set_ylabels(metric.axis_label(split=not train))
    grid.set_titles("{col_name}" if facet else "")
    n_seeds = int(trials.groupby("config_key")["seed"].nunique().median())
    what = _capital(metric.label.removeprefix("test ") if train else metric.label)
    title = f"{what} against {AXIS_NAMES[axis]}: mean and 95% t interval over {n_seeds} seeds"
    grid.figure.suptitle(title + (f"\n({note})" if note else ""), y=1.1 if note else 1.04)
    return _save(grid.figure, path)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def heatmap(
    trials: pd.DataFrame, x: str, y: str, path: Path, metric: metrics.Metric = ACCURACY, note: str = ""
) -> Path:
    """Mean `metric` over seeds for every pair of values of two axes, annotated; the brightest cell is the best
    (the colour scale is reversed where lower is better)."""
    _theme()
    data = trials.assign(_x=trials[x].map(lambda v: level_label(x, v)), _y=trials[y].map(lambda v: level_label(y, v)))
    table = data.pivot_table(index="_y", columns="_x", values=metric.name, aggfunc="mean")
    table = table.reindex(
        index=[level_label(y, v) for v in levels(trials, y)], columns=[level_label(x, v) for v in levels(trials, x)]
    )
    fig, ax = plt.subplots(figsize=(1.1 * table.shape[1] + 3, 0.7 * table.shape[0] + 2.2))
    fmt = ".3f" if metric.measure.unit_range else ".3g"
    cmap = "viridis" if metric.higher_is_better else "viridis_r"
    label = f"Mean {metric.label} ({metric.direction})"
    sns.heatmap(table, annot=True, fmt=fmt, cmap=cmap, cbar_kws={"label": label}, ax=ax)
    ax.set_xlabel(AXIS_LABELS.get(x, x))
    ax.set_ylabel(AXIS_LABELS.get(y, y))
    ax.invert_yaxis()  # weakest regularisation at the bottom left
    ax.set_title(f"Mean {metric.label}: {AXIS_NAMES[x]} x {AXIS_NAMES[y]}" + (f"\n{note}" if note else ""))
    return _save(fig, path)


def learning_curves(
    curves: pd.DataFrame, panels: dict[str, list[str]], path: Path, metric: metrics.Metric = ACCURACY
) -> Path:
    """Train (dashed), test (solid) and, where recorded, validation (dotted) `metric` per epoch (its columns
    `<split>_<measure>` of the curves), one panel per configuration.

    Each panel shows the mean over the configuration's seeds with a 95% band (mean ± 1.96 standard errors).
    `panels` maps a panel title to the trial keys (seeds) of one configuration.
    """
    _theme()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.5), sharey=True, layout="constrained")
    axes = np.atleast_1d(axes)
    for ax, (title, keys) in zip(axes, panels.items(), strict=True):
        part = curves[curves["trial_key"].isin(keys)]
        column = {split: metric.column(split) for split in ("train", "test", "validation")}
        splits = [s for s in column if s == "test" or metrics.recorded_any(part, column[s])]
        by_epoch = part.groupby("epoch")[[column[split] for split in splits]].agg(["mean", "std", "count"])
        epochs = by_epoch.index.to_numpy()
        step = max(1, len(epochs) // MAX_CURVE_POINTS)
        shown = np.unique(np.r_[np.arange(0, len(epochs), step), len(epochs) - 1])
        for split in splits:
            s = by_epoch[column[split]].iloc[shown]
            half = 1.96 * s["std"].fillna(0) / np.sqrt(s["count"])
            x = epochs[shown]
            ax.plot(x, s["mean"], color=SPLIT_COLOURS[split], ls=SPLIT_LINES[split], label=split)
            ax.fill_between(x, s["mean"] - half, s["mean"] + half, color=SPLIT_COLOURS[split], alpha=0.2, lw=0)
        ax.set_title(f"{_wrap(title)}\n({len(keys)} seeds)", fontsize=11)
        ax.set_xlabel("Epoch")
        if metric.measure.unit_range:
            ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel(metric.axis_label(split=False))
    axes[0].legend(loc="lower right" if metric.higher_is_better else "upper right", frameon=True)
    fig.suptitle("Learning curves: mean and 95% band over seeds (train with dropout active, as Keras reports it)")
    return _save(fig, path)


def seed_spread(trials: pd.DataFrame, labels: dict[str, str], path: Path, metric: metrics.Metric = ACCURACY) -> Path:
    """Every seed's `metric` per configuration (points over a box), configurations in the given order."""
    data = trials[trials["config_key"].isin(labels)].assign(configuration=lambda d: d["config_key"].map(labels))
    return _seeds_per_configuration(
        data,
        metric.name,
        list(labels.values()),
        SPLIT_COLOURS["test"],
        f"{metric.axis_label()}, one point per seed",
        f"Seed-to-seed spread of {metric.label}",
        path,
    )


def paired_differences(differences: pd.DataFrame, path: Path, metric: metrics.Metric = ACCURACY) -> Path:
    """Per-seed differences in `metric` against the baseline (columns: configuration, difference)."""
    side = "right" if metric.higher_is_better else "left"
    return _seeds_per_configuration(
        differences,
        "difference",
        list(dict.fromkeys(differences["configuration"])),
        "#2ca02c",
        f"{_capital(metric.label)} minus the baseline's, same seed ({side} of 0: better than no regularisation)",
        "Paired differences against the unregularised baseline",
        path,
        zero_line=True,
    )


def _seeds_per_configuration(
    data: pd.DataFrame, x: str, order: list[str], colour, xlabel: str, title: str, path: Path, zero_line: bool = False
) -> Path:
    """One row per configuration: a box over its seeds and every seed as a point."""
    _theme()
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(order) + 1.8))
    if zero_line:
        ax.axvline(0, color="0.3", lw=1)
    sns.boxplot(data=data, x=x, y="configuration", order=order, color="0.9", fliersize=0, ax=ax)
    points = {"size": 4, "alpha": 0.7, "jitter": 0.2}
    sns.stripplot(data=data, x=x, y="configuration", order=order, color=colour, ax=ax, **points)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("")
    ax.set_title(title)
    return _save(fig, path)


def _wrap(text: str, width: int = 42) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def isolation(rows: pd.DataFrame, axis: str, nuisance: str, path: Path, metric: metrics.Metric = ACCURACY) -> Path:
    """The playbook's isolation plot: `metric` (a column of `rows`) against `axis` for each fixed nuisance value
    (thin lines) and at the best nuisance value per setting (thick black line); means and 95% t intervals over
    seeds."""
    _theme()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    x, ticks, tick_labels = _positions(rows, axis)
    data = rows.assign(_x=x)
    fixed = data[data["curve"] != "best per setting"]
    order = [f"{AXIS_NAMES[nuisance]} {level_label(nuisance, v)}" for v in levels(fixed, nuisance)]
    palette = dict(zip(order, sns.color_palette("viridis", len(order)), strict=True))
    line = {"x": "_x", "y": metric.name, "errorbar": T_INTERVAL, "ax": ax}
    sns.lineplot(data=fixed, hue="curve", hue_order=order, palette=palette, marker="o", linewidth=1.2, **line)
    tuned = data[data["curve"] == "best per setting"]
    label = f"best {AXIS_NAMES[nuisance]} per setting"
    sns.lineplot(data=tuned, color="black", marker="D", linewidth=2.6, label=label, **line)
    ax.set_xticks(ticks, tick_labels)
    ax.set_xlabel(AXIS_LABELS.get(axis, axis))
    ax.set_ylabel(metric.axis_label())
    ax.set_title(
        f"{_capital(metric.label)} against {AXIS_NAMES[axis]}: at each {AXIS_NAMES[nuisance]}, and at the best one"
    )
    ax.legend(title=None, fontsize="small")
    return _save(fig, path)


KIND_NAMES = {"deterministic": "deterministic", "mc": "MC dropout"}  # a prediction pass, as the legends write it
KIND_COLOURS = {"deterministic": "#1f77b4", "mc": "#d62728"}
KIND_DASHES = {"deterministic": "", "mc": (4, 2)}


def calibration_vs_dropout(rows: pd.DataFrame, path: Path, note: str = "") -> Path:
    """Test ECE and test NLL (one panel each, `findings.calibration_by_dropout`'s tidy rows) against the dropout
    rate: mean and 95% t interval over seeds, the deterministic pass solid and MC dropout dashed."""
    _theme()
    data = rows.assign(
        _x=rows["dropout_rate"].astype(float),
        kind=rows["kind"].map(KIND_NAMES),
        measure=rows["measure"].map(lambda m: metrics.get(f"test_{m}").axis_label()),
    )
    kinds = [KIND_NAMES[k] for k in KIND_NAMES if k in set(rows["kind"])]
    panels = [metrics.get(f"test_{m}").axis_label() for m in ("ece", "nll") if m in set(rows["measure"])]
    grid = sns.relplot(
        data=data,
        kind="line",
        x="_x",
        y="value",
        hue="kind",
        hue_order=kinds,
        palette={KIND_NAMES[k]: c for k, c in KIND_COLOURS.items()},
        style="kind",
        style_order=kinds,
        dashes={KIND_NAMES[k]: d for k, d in KIND_DASHES.items()},
        markers={KIND_NAMES["deterministic"]: "o", KIND_NAMES["mc"]: "s"},
        col="measure",
        col_order=panels,
        errorbar=T_INTERVAL,
        height=4.2,
        aspect=1.2,
        facet_kws={"sharey": False},
    )
    ticks = sorted(rows["dropout_rate"].astype(float).unique())
    for ax, label in zip(grid.axes.flat, panels, strict=True):
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xlabel(AXIS_LABELS.get("dropout_rate", "dropout rate"))
        ax.set_ylabel(label)
    grid.set_titles("")
    grid.legend.set_title(None)
    grid.figure.subplots_adjust(wspace=0.3)  # each panel has its own value axis and label
    n_seeds = int(rows.groupby(["config_key", "kind", "measure"])["seed"].nunique().median())
    title = f"Calibration against dropout rate: mean and 95% t interval over {n_seeds} seeds (lower is better)"
    grid.figure.suptitle(title + (f"\n({note})" if note else ""), y=1.1 if note else 1.04)
    return _save(grid.figure, path)


def reliability(panels: list[tuple[str, pd.DataFrame]], path: Path) -> Path:
    """Reliability diagrams, one panel per (title, pooled bins) pair (`findings.pool_bins`: kind, bin, count,
    confidence, accuracy): each non-empty bin's accuracy against its mean confidence, deterministic and MC dropout,
    with the diagonal of perfect calibration; below each, the share of predictions in each bin."""
    _theme()
    fig, axes = plt.subplots(
        2, len(panels), figsize=(5.2 * len(panels), 6.2), sharex=True, squeeze=False,
        gridspec_kw={"height_ratios": [3, 1]}, layout="constrained",
    )  # fmt: skip
    full_bins = [b.loc[b["count"] > 0, "bin"].astype(int) for _, b in panels]
    n_bins = max(int(b["bin"].max()) + 1 for _, b in panels)
    first = min((int(b.min()) for b in full_bins if len(b)), default=0)
    left_edge = np.floor(10 * first / n_bins) / 10  # two classes: no confidence below 0.5, so start there
    for column, (title, bins) in enumerate(panels):
        top, bottom = axes[0, column], axes[1, column]
        top.plot([0, 1], [0, 1], color="0.5", ls=":", lw=1, label="perfect calibration")
        kinds = [k for k in KIND_NAMES if k in set(bins["kind"])]
        width = 1.0 / n_bins
        for offset, kind in enumerate(kinds):
            part = bins[bins["kind"] == kind].sort_values("bin")
            full = part[part["count"] > 0]
            colour, line = KIND_COLOURS[kind], "--" if kind == "mc" else "-"
            marker = "s" if kind == "mc" else "o"
            top.plot(full["confidence"], full["accuracy"], color=colour, ls=line, marker=marker, label=KIND_NAMES[kind])
            share = part["count"] / max(int(part["count"].sum()), 1)
            left = part["bin"] * width + offset * width / len(kinds)
            bottom.bar(left, share, width=width / len(kinds), align="edge", color=colour, alpha=0.6)
        top.set_xlim(left_edge, 1)
        top.set_ylim(0, 1.02)
        top.set_title("\n".join(_wrap(line, 48) for line in title.split("\n")), fontsize=10.5)
        top.set_ylabel("Accuracy in the bin" if column == 0 else "")
        bottom.set_xlabel("Confidence (top-label probability)")
        bottom.set_ylabel("Share of rows" if column == 0 else "")
    axes[0, 0].legend(loc="upper left", fontsize="small", frameon=True)
    fig.suptitle("Reliability diagrams (test set, seeds pooled): below the diagonal is overconfident")
    return _save(fig, path)
