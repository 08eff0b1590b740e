"""`python -m study report`: figures/, summary.csv, report.md and report.html for one study, read from its store."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from study.analysis import figures, stats
from study.analysis.tables import (
    AXIS_NAMES,
    OFF_VALUES,
    baseline_key,
    baseline_mask,
    completed,
    config_label,
    engines_used,
    hold_others_off,
    is_off,
    level_label,
    per_seed,
    summary,
    varying_axes,
)
from study.errors import StudyError
from study.space import load_space
from study.store import MANIFEST, ResultsStore, study_folder

SPREAD_CONFIGS = 12  # configurations in the seed-spread and paired-difference figures
TABLE_ROWS = 25  # configurations listed in report.md (all are in summary.csv)
HEATMAP_PAIRS = (
    ("dropout_rate", "l2"),
    ("dropout_rate", "input_dropout"),
    ("dropout_rate", "max_norm"),
    ("dropout_rate", "spatial_dropout"),
    ("conv_dropout", "pool_dropout"),
    ("recurrent_dropout", "lstm_dropout"),
    ("dropout_rate", "recurrent_dropout"),
)
HUE_PREFERENCE = (
    "input_dropout",
    "spatial_dropout",
    "recurrent_dropout",
    "conv_dropout",
    "lstm_dropout",
    "pool_dropout",
    "max_norm",
    "l2",
    "hidden_units",
    "early_stopping",
    "batch_norm",
)


def find_study_folder(results: str | None, space_file: str | None, results_root: str | Path) -> Path:
    """The folder to report: given, the one of a search-space file, or the most recently run study."""
    if results:
        return Path(results)
    if space_file:
        return study_folder(results_root, load_space(space_file))
    manifests = sorted(Path(results_root).glob(f"*/{MANIFEST}"), key=lambda p: p.stat().st_mtime)
    if not manifests:
        raise StudyError(f"no study in {results_root}/ yet: run `make search` first (or name RESULTS_DIR)")
    return manifests[-1].parent


@dataclass
class Report:
    """What the report says, gathered while the figures are drawn, then written as Markdown."""

    folder: Path
    paths: dict[str, Path] = field(default_factory=dict)
    sections: list[tuple[str, str, str]] = field(default_factory=list)  # (figure name, title, caption)
    skipped: list[str] = field(default_factory=list)

    def figure(self, name: str, title: str, path: Path, caption: str) -> None:
        self.paths[name] = path
        self.sections.append((name, title, caption))


def build_report(
    folder: Path, hue: str | None = None, facet: str | None = None, curves: tuple[str, ...] = ()
) -> dict[str, Path]:
    """Write the report files into `folder` and return their paths by name.

    `hue` and `facet` choose the axes that colour the lines and split the panels of the axis figures
    (default: the first other varying regulariser, and batch norm); `curves` adds configurations to the
    learning-curve figure, each a config key or 'axis=value,...' (unnamed regularisers off).
    """
    store = ResultsStore(folder)
    manifest = store.manifest()
    trials = store.trials()
    done = completed(trials) if not trials.empty else trials
    if done.empty:
        raise StudyError(f"{folder} has no finished trials yet: run the search first")
    axes = varying_axes(done)
    for name, value in (("--hue", hue), ("--facet", facet)):
        if value is not None and value not in axes:
            raise StudyError(f"{name} {value!r} is not an axis this study varies; choose one of: {', '.join(axes)}")
    chosen = [_find_config(done, spec, axes) for spec in curves]

    out_dir = folder / "figures"
    _check_outputs(folder, out_dir)
    out_dir.mkdir(exist_ok=True)
    for old in out_dir.glob("*.png"):  # figures of an earlier report that may no longer apply
        old.unlink()
    report = Report(folder)

    table = summary(done)
    report.paths["summary"] = folder / "summary.csv"
    table.to_csv(report.paths["summary"], index=False)

    _axis_figures(report, done, axes, hue, facet, out_dir)
    _heatmaps(report, done, axes, out_dir)
    _learning_curves(report, store, done, table, axes, chosen, out_dir)
    _spread_figures(report, done, table, out_dir)
    shares = _variance_shares(report, done, axes)

    report.paths["report"] = folder / "report.md"
    text = _markdown(report, manifest, trials, done, table, axes, shares)
    report.paths["report"].write_text(text)
    report.paths["html"] = folder / "report.html"
    report.paths["html"].write_text(_html(text, folder, manifest["study"]))
    return report.paths


# --- figures -----------------------------------------------------------------------------------------


def _held_note(held: list[str], pooled: list[str]) -> str:
    parts = []
    if held:
        parts.append("other axes off: " + ", ".join(AXIS_NAMES[a] for a in held))
    if pooled:
        parts.append("averaged over: " + ", ".join(AXIS_NAMES[a] for a in pooled))
    return "; ".join(parts)


def _hue_and_facet(axis: str, axes: list[str], hue: str | None, facet: str | None) -> tuple[str | None, str | None]:
    """The axes that colour the lines and split the panels of `axis`'s figure: the user's choice where it
    applies; by default batch norm as panels and dropout (or the first other regulariser) as colours."""
    others = [a for a in axes if a != axis]
    panel = facet if facet in others else ("batch_norm" if facet is None and "batch_norm" in others else None)
    order = [hue] if hue else ["dropout_rate", *HUE_PREFERENCE]
    colour = next((a for a in order if a in others and a != panel), None)
    return colour, panel


def _axis_figures(report: Report, done: pd.DataFrame, axes: list[str], hue, facet, out_dir: Path) -> None:
    """Accuracy against every varying axis, dropout first."""
    if "dropout_rate" not in axes:
        report.skipped.append("No accuracy-vs-dropout figure: the study has only one dropout rate.")
    for axis in sorted(axes, key=lambda a: a != "dropout_rate"):
        colour, panel = _hue_and_facet(axis, axes, hue, facet)
        data, held, pooled = hold_others_off(done, (axis, colour, panel))
        note = _held_note(held, pooled)
        path = figures.accuracy_vs_axis(data, axis, out_dir / f"accuracy_vs_{axis}.png", colour, panel, note)
        caption = (
            f"Final test (solid) and train (dashed) accuracy against {AXIS_NAMES[axis]}"
            + (f", one colour per {AXIS_NAMES[colour]}" if colour else "")
            + (f", one panel per {AXIS_NAMES[panel]} setting" if panel else "")
            + (f" ({note})" if note else "")
            + ". Points are means over seeds, bands 95% bootstrap intervals."
        )
        report.figure(f"accuracy_vs_{axis}", f"Accuracy against {AXIS_NAMES[axis]}", path, caption)


def _heatmaps(report: Report, done: pd.DataFrame, axes: list[str], out_dir: Path) -> None:
    for x, y in HEATMAP_PAIRS:
        if x in axes and y in axes:
            data, held, pooled = hold_others_off(done, (x, y))
            note = _held_note(held, pooled)
            name = f"heatmap_{x}_x_{y}"
            path = figures.heatmap(data, x, y, out_dir / f"{name}.png", note)
            title = f"Mean test accuracy, {AXIS_NAMES[x]} x {AXIS_NAMES[y]}"
            report.figure(name, title, path, f"Mean over seeds{f' ({note})' if note else ''}.")


def _learning_curves(
    report: Report, store: ResultsStore, done: pd.DataFrame, table: pd.DataFrame, axes, chosen, out_dir: Path
) -> None:
    """Baseline, best, best dropout-only and the chosen configurations, each once."""
    wanted: dict[str, str] = {}
    base = baseline_key(done)
    if base is not None:
        wanted[base] = "No regularisation"
    wanted.setdefault(table["config_key"].iloc[0], f"Best: {table['configuration'].iloc[0]}")
    dropout_only = done[baseline_mask(done, except_axes=("dropout_rate",)) & (done["dropout_rate"] > 0)]
    if not dropout_only.empty:
        key = dropout_only.groupby("config_key")["test_accuracy"].mean().idxmax()
        wanted.setdefault(key, f"Best dropout-only: {config_label(done[done.config_key == key].iloc[0], axes)}")
    for key in chosen:
        wanted.setdefault(key, f"Chosen: {config_label(done[done.config_key == key].iloc[0], axes)}")
    panels = {title: done.loc[done["config_key"] == key, "trial_key"].tolist() for key, title in wanted.items()}
    path = figures.learning_curves(
        store.curves([k for ks in panels.values() for k in ks]), panels, out_dir / "learning_curves.png"
    )
    caption = (
        "Train (dashed, with dropout active, as Keras reports it) and test (solid) accuracy per epoch: mean over "
        "seeds and a 95% band (mean ± 1.96 standard errors). Panels: " + "; ".join(panels) + "."
    )
    if base is None:
        report.skipped.append("The learning curves have no unregularised panel: the grid has no such configuration.")
    report.figure("learning_curves", "Learning curves", path, caption)


def _paired_differences(done: pd.DataFrame, base: str, keys: list[str]) -> pd.DataFrame:
    """Per-seed test-accuracy differences against the baseline (shared seeds only): config_key, seed, difference."""
    reference = per_seed(done, base)
    frames = []
    for key in keys:
        mine = per_seed(done, key)
        shared = mine.index.intersection(reference.index)
        frames.append(
            pd.DataFrame({"config_key": key, "seed": shared, "difference": (mine - reference)[shared].to_numpy()})
        )
    return (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["config_key", "seed", "difference"])
    )


def _spread_figures(report: Report, done: pd.DataFrame, table: pd.DataFrame, out_dir: Path) -> None:
    top = table.head(SPREAD_CONFIGS)
    labels = dict(zip(top["config_key"], top["configuration"], strict=True))
    base = baseline_key(done)
    if base is not None and base not in labels:
        labels[base] = table.loc[table.config_key == base, "configuration"].iloc[0]
    best = f"the {len(top)} best of {len(table)} configurations"
    which = best + (" and the baseline" if base else "")
    path = figures.seed_spread(done, labels, out_dir / "seed_spread.png")
    report.figure("seed_spread", "Seed-to-seed spread", path, f"Test accuracy of every seed for {which}, best first.")
    if base is None:
        report.skipped.append("No paired-difference figure: the grid has no unregularised baseline.")
        return
    diffs = _paired_differences(done, base, [k for k in labels if k != base])
    if diffs.empty:
        report.skipped.append("No paired-difference figure: no configuration shares seeds with the baseline.")
        return
    diffs["configuration"] = diffs["config_key"].map(labels)
    path = figures.paired_differences(diffs, out_dir / "paired_differences.png")
    caption = f"Per seed, test accuracy minus the baseline's with the same seed, for {best}."
    report.figure("paired_differences", "Paired differences against the baseline", path, caption)


def _variance_shares(report: Report, done: pd.DataFrame, axes: list[str]) -> stats.VarianceShares | None:
    if not axes:
        report.skipped.append("No variance decomposition: the study varies no axis.")
        return None
    shared_seeds = done.groupby("seed")["config_key"].nunique().gt(1).all() and done["seed"].nunique() > 1
    try:
        return stats.variance_explained(done, "test_accuracy", axes, block="seed" if shared_seeds else None)
    except ValueError as exc:  # too few trials for the model's degrees of freedom
        report.skipped.append(f"No variance decomposition: {exc}.")
        return None


# --- words -------------------------------------------------------------------------------------------


def _check_outputs(folder: Path, figures: Path) -> None:
    """Refuse before writing anything when an output's place is taken by something of the other kind."""
    if figures.exists() and not figures.is_dir():
        raise StudyError(f"{figures} is a file where the report puts its figures: move it away and run again")
    for name in ("summary.csv", "report.md", "report.html"):
        if (folder / name).is_dir():
            raise StudyError(f"{folder / name} is a folder where the report writes a file: move it away")


def _find_config(done: pd.DataFrame, spec: str, axes: list[str]) -> str:
    """A configuration named by its key or by 'axis=value,...' (regularisers not named are off)."""
    if spec in set(done["config_key"]):
        return spec
    if "=" not in spec:
        raise StudyError(
            f"--curves {spec!r} is neither a config_key of this study (see summary.csv) nor axis=value pairs "
            f"(axes: {', '.join(axes)})"
        )
    rows = done
    named = set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        axis, _, value = part.partition("=")
        axis = axis.strip()
        if axis not in axes:
            raise StudyError(f"--curves {spec!r}: {axis!r} is not an axis this study varies ({', '.join(axes)})")
        named.add(axis)
        rows = rows[rows[axis].map(lambda v, a=axis: level_label(a, v)) == level_label(axis, _parse(value.strip()))]
    for axis in OFF_VALUES:
        if axis in axes and axis not in named:
            rows = rows[is_off(rows, axis)]
    keys = rows["config_key"].unique()
    if len(keys) != 1:
        found = "no finished configuration" if len(keys) == 0 else f"{len(keys)} configurations"
        raise StudyError(
            f"--curves {spec!r} matches {found}; name a config_key from summary.csv or every varying axis as "
            f"axis=value separated by commas (axes: {', '.join(axes)})"
        )
    return str(keys[0])


def _parse(text: str):
    lowered = text.lower()
    if lowered in ("none", "null"):
        return np.nan
    if lowered in ("on", "true", "off", "false"):
        return lowered in ("on", "true")
    try:
        return float(text)
    except ValueError:
        return text


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def _conclusions(done: pd.DataFrame, table: pd.DataFrame, axes: list[str], shares) -> list[str]:
    """Plain-language answers, each generated from the numbers in the summary table."""
    lines = []
    by_key = table.set_index("config_key")
    base = baseline_key(done)
    n_configs = len(table)
    if base is None:
        lines.append(
            "The grid has no configuration with every regulariser off, so nothing is compared against a baseline."
        )
    else:
        for axis in (a for a in axes if a in OFF_VALUES):
            alone = done[baseline_mask(done, except_axes=(axis,)) & ~is_off(done, axis)]
            if alone.empty:
                continue
            key = alone.groupby("config_key")["test_accuracy"].mean().idxmax()
            row = by_key.loc[key]
            verdict = _verdict(row, n_configs - 1)
            test = "paired" if row.vs_baseline_paired is True else "unpaired (seeds not shared)"
            name = AXIS_NAMES[axis][:1].upper() + AXIS_NAMES[axis][1:]  # "LSTM dropout" keeps its capitals
            lines.append(
                f"**{name} alone** -- the best setting, {row.configuration}, changes mean "
                f"test accuracy by {_points(row.vs_baseline_difference)} points (95% CI "
                f"{_points(row.vs_baseline_ci_low)} to {_points(row.vs_baseline_ci_high)}) against no "
                f"regularisation; a seed does better with it {row.vs_baseline_prob_better:.0%} of the time "
                f"({test} test p = {row.vs_baseline_p:.2g}, Holm-adjusted over {n_configs - 1} comparisons "
                f"p = {row.vs_baseline_p_holm:.2g}): {verdict}."
            )
    best = table.iloc[0]
    others = int(table["indistinguishable_from_best"].sum()) - 1
    lines.append(
        f"**Best configuration** -- {best.configuration}: mean test accuracy {best.test_accuracy_mean:.3f} "
        f"(95% CI {best.test_accuracy_ci_low:.3f} to {best.test_accuracy_ci_high:.3f}, IQM "
        f"{best.test_accuracy_iqm:.3f}, {int(best.seeds)} seeds). {others} of the other {n_configs - 1} "
        "configurations are statistically indistinguishable from it (paired tests against it, Holm-adjusted, "
        f"p >= {stats.ALPHA})"
        + (
            f"; with {int(best.seeds)} seeds no paired test can reach significance after that correction, so this "
            "count says only that the study is too small to separate them."
            if _significance_unreachable(int(best.seeds), n_configs - 1)
            else "."
        )
    )
    if shares is not None:
        terms = shares.table[shares.table["term"] != "residual"].sort_values("share", ascending=False)
        described = [
            f"{_term_words(t)} {s:.0%} ({_p(p)})"
            for t, s, p in zip(terms["term"], terms["share"], terms["p_value"], strict=True)
            if s >= 0.01
        ]
        residual = float(shares.table.loc[shares.table["term"] == "residual", "share"].iloc[0])
        lines.append(
            "**What matters most** -- share of the variance of test accuracy: "
            + (", ".join(described[:6]) if described else "no term above 1%")
            + f"; left unexplained (seed noise within a configuration) {residual:.0%}."
            + (
                ""
                if shares.balanced
                else " The design is unbalanced (unequal seeds per configuration), so the "
                "shares depend on the order of terms and need not add up to 100%."
            )
        )
    return lines


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def _significance_unreachable(n_seeds: int, comparisons: int) -> bool:
    """True when even the most extreme signed-rank result cannot survive Holm correction over `comparisons`."""
    return stats.smallest_p_value(n_seeds) * comparisons >= stats.ALPHA


def _verdict(row: pd.Series, comparisons: int) -> str:
    """Whether a difference from the baseline is larger than seed noise, in words."""
    direction = "helps" if row.vs_baseline_difference > 0 else "hurts"
    if row.vs_baseline_p_holm < stats.ALPHA:
        return f"larger than seed noise: it {direction}"
    excludes_zero = row.vs_baseline_ci_low > 0 or row.vs_baseline_ci_high < 0
    if excludes_zero and row.vs_baseline_paired is True and _significance_unreachable(int(row.seeds), comparisons):
        return (
            f"its interval excludes zero, so it probably {direction}, but with {int(row.seeds)} seeds no paired test "
            f"can reach significance after correction over {comparisons} comparisons: confirm with more seeds"
        )
    return f"not distinguishable from seed noise with {int(row.seeds)} seeds"


def _term_words(term: str) -> str:
    return " x ".join("seed" if part == "seed" else AXIS_NAMES.get(part, part) for part in term.split(" x "))


def _power_note(done: pd.DataFrame, table: pd.DataFrame) -> str:
    base = baseline_key(done)
    n = int(table["seeds"].median())
    m = max(1, len(table) - 1)
    if base is None or len(table) < 2:
        return ""
    diffs = _paired_differences(done, base, [k for k in table["config_key"] if k != base])
    spread = diffs.groupby("config_key")["difference"].std().median() if not diffs.empty else np.nan
    if not np.isfinite(spread):
        return ""
    single = stats.minimum_detectable_difference(spread, n)
    corrected = stats.minimum_detectable_difference(spread, n, alpha=stats.ALPHA / m)
    text = (
        f"**Power** -- the seed-to-seed standard deviation of a paired difference is typically "
        f"{100 * spread:.1f} points here. With {n} seeds a single paired comparison detects a true difference of "
        f"about {100 * single:.1f} points 80% of the time (paired t-test approximation, alpha {stats.ALPHA}); "
        f"after correcting for {m} comparisons, about {100 * corrected:.1f} points."
    )
    if stats.smallest_p_value(n) * m > stats.ALPHA:
        text += (
            f" Note: with {n} seeds the signed-rank test cannot reach a p-value below "
            f"{stats.smallest_p_value(n):.2g}, so after Holm correction over {m} comparisons no difference can be "
            f"declared significant however large it is; run more seeds or compare fewer configurations."
        )
    return text


def _metric_note(n_classes: int) -> str:
    """What 'accuracy' and 'loss' mean for this output layer, as Keras computes them."""
    if n_classes == 2:
        return "Metrics: binary accuracy (sigmoid output thresholded at 0.5) and binary cross-entropy."
    return (
        f"Metrics: categorical accuracy (the most probable of {n_classes} softmax classes is the prediction) and "
        "sparse categorical cross-entropy."
    )


def _engine_note(done: pd.DataFrame) -> str:
    engines = engines_used(done)
    if len(engines) == 1:
        return f"Engine: {next(iter(engines))}."
    parts = ", ".join(f"{name}: {n} trials" for name, n in engines.items())
    return (
        f"Engines: {parts} -- this study was run (or resumed) on more than one engine; their trials agree in "
        "distribution (the fidelity tests), not bit for bit."
    )


def _markdown(report: Report, manifest: dict, trials, done, table: pd.DataFrame, axes, shares) -> str:
    failed = len(trials) - len(done)
    planned = manifest.get("n_trials", len(trials))
    first = done.iloc[0]
    lines = [f"# Study `{manifest['study']}`", ""]
    if manifest.get("description"):
        lines += [manifest["description"], ""]
    lines += [
        f"Based on **{len(done)} of {planned}** planned trials"
        + (f" ({failed} failed, see `trials.csv`)" if failed else "")
        + f", {len(table)} configurations. {_engine_note(done)} "
        f"Data: `{first['dataset']}` ({int(first['n_train'])} train / {int(first['n_test'])} test rows); "
        f"model `{first['model']}`; {int(first['epochs'])} epochs, batch size {int(first['batch_size'])}. "
        f"Axes varied: {', '.join(AXIS_NAMES[a] for a in axes) or 'none'}. {_metric_note(int(first['n_classes']))}",
        "",
    ]
    if len(done) < planned:
        lines += ["> The study is incomplete: every number and figure uses the trials finished so far.", ""]
    lines += ["## Conclusions", ""]
    lines += [f"- {line}" for line in _conclusions(done, table, axes, shares)]
    power = _power_note(done, table)
    if power:
        lines += [f"- {power}"]
    lines += [
        "",
        "Methods: intervals are 95% percentile-bootstrap intervals of the mean over seeds; comparisons pair the "
        "configurations' runs with the same seed (Wilcoxon signed-rank test, differences in accuracy points = "
        "percent), or fall back to unpaired Mann-Whitney U tests where seeds are not shared; p-values are "
        "Holm-corrected across all configurations; 'a seed does better' is the probability of improvement "
        "(ties count half). IQM is the interquartile mean.",
        "",
    ]
    for name, title, caption in report.sections:
        rel = report.paths[name].relative_to(report.folder).as_posix()
        lines += [f"## {title}", "", f"![{title}]({rel})", "", caption, ""]
    if report.skipped:
        lines += ["## Not drawn", ""] + [f"- {note}" for note in report.skipped] + [""]
    if shares is not None:
        shown = shares.table.assign(
            term=shares.table["term"].map(lambda t: "residual" if t == "residual" else _term_words(t))
        )
        lines += [
            "## Variance of test accuracy explained",
            "",
            "Two-way ANOVA (type II) with every axis as a factor"
            + (" and the seed as a block" if "seed" in set(shares.table["term"]) else "")
            + ".",
            "",
        ]
        lines += [shown.to_markdown(index=False, floatfmt=".3g", headers=["term", "share of variance", "p-value"]), ""]
    lines += [
        "## Configurations (best mean test accuracy first"
        + (f", top {TABLE_ROWS})" if len(table) > TABLE_ROWS else ")"),
        "",
    ]
    lines += [_configuration_table(table.head(TABLE_ROWS)), ""]
    if len(table) > TABLE_ROWS:
        lines += [f"{len(table) - TABLE_ROWS} more configurations in `summary.csv`.", ""]
    return "\n".join(lines)


def _configuration_table(table: pd.DataFrame) -> str:
    def interval(mean: float, low: float, high: float, fmt: str) -> str:
        return "" if pd.isna(mean) else f"{mean:{fmt}} [{low:{fmt}}, {high:{fmt}}]"

    rows = list(table.itertuples())
    out = pd.DataFrame(
        {
            "configuration": table["configuration"],
            "seeds": table["seeds"],
            "test acc. [95% CI]": [
                interval(r.test_accuracy_mean, r.test_accuracy_ci_low, r.test_accuracy_ci_high, ".3f") for r in rows
            ],
            "IQM": table["test_accuracy_iqm"].map("{:.3f}".format),
            "train acc.": table["train_accuracy_mean"].map("{:.3f}".format),
            "vs baseline, points [95% CI]": [
                interval(
                    *(100 * v for v in (r.vs_baseline_difference, r.vs_baseline_ci_low, r.vs_baseline_ci_high)), "+.1f"
                )
                for r in rows
            ],
            "p (Holm)": table["vs_baseline_p_holm"].map(lambda p: "" if pd.isna(p) else f"{p:.2g}"),
            "P(seed better)": table["vs_baseline_prob_better"].map(lambda p: "" if pd.isna(p) else f"{p:.0%}"),
            "~ best": table["indistinguishable_from_best"].map({True: "yes", False: ""}),
        }
    )
    return out.to_markdown(index=False)


def _html(markdown_text: str, folder: Path, study: str) -> str:
    """The report as one self-contained HTML page: figures embedded as data URIs."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"])

    def embed(match: re.Match) -> str:
        data = base64.b64encode((folder / match.group(1)).read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="(figures/[^"]+\.png)"', embed, body)
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
        "img{max-width:100%}table{border-collapse:collapse;font-size:90%}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}blockquote{color:#a33}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Study {study}</title>'
        f"<style>{style}</style></head><body>\n{body}\n</body></html>\n"
    )
