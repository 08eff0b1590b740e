"""`python -m study report`: figures/, summary.csv, report.md and report.html for one study, read from its store."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from study.analysis import figures, findings, metrics, stats
from study.analysis.tables import (
    AXIS_NAMES,
    OFF_VALUES,
    baseline_key,
    completed,
    engines_used,
    hold_others_off,
    is_off,
    level_label,
    summary,
    varying_axes,
)
from study.errors import StudyError
from study.store import MANIFEST, ResultsStore
from study.yaml_file import read_yaml

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
    if space_file:  # only its name: validating it again would import a custom model's module (and TensorFlow)
        raw = read_yaml(space_file)
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise StudyError(f"{space_file} has no valid `name:`, so its study's folder is unknown: name a RESULTS_DIR")
        return Path(results_root) / name
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
    folder: Path,
    hue: str | None = None,
    facet: str | None = None,
    curves: tuple[str, ...] = (),
    metric: str | None = None,
) -> dict[str, Path]:
    """Write the report files into `folder` and return their paths by name.

    `hue` and `facet` choose the axes that colour the lines and split the panels of the axis figures
    (default: the first other varying regulariser, and batch norm); `curves` adds configurations to the
    learning-curve figure, each a config key or 'axis=value,...' (unnamed regularisers off); `metric` is the
    test column every statistic and figure measures (default: test accuracy, or test RMSE for a regression).
    """
    store = ResultsStore(folder)
    manifest = store.manifest()
    trials = store.trials()
    done = completed(trials) if not trials.empty else trials
    if done.empty:
        raise StudyError(f"{folder} has no finished trials yet: run the search first")
    measured = metrics.resolve(done, metric)
    protocol = findings.protocol_info(done, manifest.get("space", {}), measured.name)
    every_nuisance = done
    done = findings.tune_nuisance(done, protocol.nuisance, protocol.selection_metric)
    axes = varying_axes(done)  # a nuisance axis is tuned away: no longer an axis of the report
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

    table = summary(done, metric=measured.name)
    report.paths["summary"] = folder / "summary.csv"
    table.to_csv(report.paths["summary"], index=False)
    planned = findings.planned_effects(done, metric=measured.name)
    recommendation = findings.recommendation_info(done, table)
    found = findings.Findings(
        protocol=protocol,
        planned=planned,
        recommendation=recommendation,
        variance=_variance(report, done, axes, measured),
        power=findings.power_info(done, table, planned),
        calibration=findings.calibration_info(done, table, recommendation),
        mc_dropout=findings.mc_effects(done, table, recommendation),
    )

    _axis_figures(report, done, axes, hue, facet, measured, out_dir)
    _isolation_figure(report, every_nuisance, protocol, out_dir)
    _heatmaps(report, done, axes, measured, out_dir)
    _learning_curves(report, store, done, table, chosen, measured, out_dir)
    _spread_figures(report, done, table, measured, out_dir)
    _calibration_figures(report, store, done, table, found, _mc_samples(manifest), out_dir)

    report.paths["report"] = folder / "report.md"
    text = _markdown(report, manifest, trials, every_nuisance, table, axes, found, metrics.available(done))
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


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]  # "LSTM dropout", "RMSE" keep their capitals


def _axis_figures(
    report: Report, done: pd.DataFrame, axes: list[str], hue, facet, metric: metrics.Metric, out_dir: Path
) -> None:
    """The metric (and its train counterpart) against every varying axis, dropout first."""
    if "dropout_rate" not in axes:
        report.skipped.append(f"No {metric.short}-vs-dropout figure: the study has only one dropout rate.")
    train = metrics.train_column(done, metric.name)
    what = f"test (solid) and train (dashed) {metric.measure.label}" if train else metric.label
    for axis in sorted(axes, key=lambda a: a != "dropout_rate"):
        colour, panel = _hue_and_facet(axis, axes, hue, facet)
        data, held, pooled = hold_others_off(done, (axis, colour, panel))
        note = _held_note(held, pooled)
        name = f"{metric.short}_vs_{axis}"
        path = figures.metric_vs_axis(data, axis, out_dir / f"{name}.png", metric, train, colour, panel, note)
        caption = (
            f"Final {what} against {AXIS_NAMES[axis]} ({metric.direction})"
            + (f", one colour per {AXIS_NAMES[colour]}" if colour else "")
            + (f", one panel per {AXIS_NAMES[panel]} setting" if panel else "")
            + (f" ({note})" if note else "")
            + ". Points are means over seeds, bands 95% t intervals of the mean."
        )
        report.figure(name, f"{_capital(metric.measure.label)} against {AXIS_NAMES[axis]}", path, caption)


def _isolation_figure(report: Report, every: pd.DataFrame, protocol: findings.Protocol, out_dir: Path) -> None:
    """For each nuisance axis, the playbook's isolation plot against dropout (or the first regulariser swept)."""
    axes = varying_axes(every)
    scientific = next((a for a in ["dropout_rate", *OFF_VALUES] if a in axes), None)
    for nuisance in (n for n in protocol.nuisance if n in axes):
        if scientific is None:
            report.skipped.append(f"No isolation plot for {AXIS_NAMES[nuisance]}: the study varies no regulariser.")
            continue
        rows = findings.isolation_info(every, scientific, nuisance, protocol.selection_metric, protocol.metric)
        name = f"isolation_{scientific}_{nuisance}"
        metric = metrics.get(protocol.metric)
        path = figures.isolation(rows, scientific, nuisance, out_dir / f"{name}.png", metric)
        caption = (
            f"{_capital(metric.label)} ({metric.direction}) against {AXIS_NAMES[scientific]} at each fixed "
            f"{AXIS_NAMES[nuisance]} (coloured) and at the {AXIS_NAMES[nuisance]} that is best for each "
            f"{AXIS_NAMES[scientific]} setting, chosen on {_label(protocol.selection_metric)} (black): if the "
            "black curve's best setting differs from a "
            f"coloured curve's, a study at that fixed {AXIS_NAMES[nuisance]} would have recommended the wrong "
            "setting. Other regularisers off; means and 95% t intervals over seeds."
        )
        report.figure(name, f"Isolation plot: {AXIS_NAMES[scientific]} with {AXIS_NAMES[nuisance]} tuned", path,
                      caption)  # fmt: skip


def _heatmaps(report: Report, done: pd.DataFrame, axes: list[str], metric: metrics.Metric, out_dir: Path) -> None:
    for x, y in HEATMAP_PAIRS:
        if x in axes and y in axes:
            data, held, pooled = hold_others_off(done, (x, y))
            note = _held_note(held, pooled)
            name = f"heatmap_{x}_x_{y}"
            path = figures.heatmap(data, x, y, out_dir / f"{name}.png", metric, note)
            title = f"Mean {metric.label}, {AXIS_NAMES[x]} x {AXIS_NAMES[y]}"
            caption = f"Mean over seeds{f' ({note})' if note else ''}; {metric.direction}, the brightest cell is best."
            report.figure(name, title, path, caption)


def _learning_curves(
    report: Report, store: ResultsStore, done: pd.DataFrame, table: pd.DataFrame, chosen, metric, out_dir: Path
) -> None:
    wanted = findings.curve_panels(done, table, chosen)
    panels = {title: done.loc[done["config_key"] == key, "trial_key"].tolist() for key, title in wanted.items()}
    curves = store.curves([k for ks in panels.values() for k in ks])
    drawn = metrics.get(findings.curve_metric(curves, metric.name))
    path = figures.learning_curves(curves, panels, out_dir / "learning_curves.png", drawn)
    has_validation = metrics.recorded_any(curves, drawn.column("validation"))
    instead = (
        f" (no per-epoch {metric.label} is recorded: the curves show the {drawn.label})" if drawn != metric else ""
    )
    caption = (
        f"Train (dashed, with dropout active, as Keras reports it), test (solid)"
        f"{' and validation (dotted)' if has_validation else ''} {drawn.measure.label} per epoch{instead}, "
        f"{drawn.direction}: mean over seeds and a 95% band (mean ± 1.96 standard errors). Panels: "
        + "; ".join(panels)
        + "."
    )
    if baseline_key(done) is None:
        report.skipped.append("The learning curves have no unregularised panel: the grid has no such configuration.")
    report.figure("learning_curves", "Learning curves", path, caption)


def _spread_figures(report: Report, done: pd.DataFrame, table: pd.DataFrame, metric, out_dir: Path) -> None:
    top = table.head(SPREAD_CONFIGS)
    labels = dict(zip(top["config_key"], top["configuration"], strict=True))
    base = baseline_key(done)
    if base is not None and base not in labels:
        labels[base] = table.loc[table.config_key == base, "configuration"].iloc[0]
    best = f"the {len(top)} best of {len(table)} configurations"
    which = best + (" and the baseline" if base else "")
    path = figures.seed_spread(done, labels, out_dir / "seed_spread.png", metric)
    caption = f"{_capital(metric.label)} ({metric.direction}) of every seed for {which}, best first."
    report.figure("seed_spread", "Seed-to-seed spread", path, caption)
    if base is None:
        report.skipped.append("No paired-difference figure: the grid has no unregularised baseline.")
        return
    diffs = findings.paired_differences(done, table, list(labels))
    if diffs.empty:
        report.skipped.append("No paired-difference figure: no configuration shares seeds with the baseline.")
        return
    diffs["configuration"] = diffs["config_key"].map(labels)
    path = figures.paired_differences(diffs, out_dir / "paired_differences.png", metric)
    side = "right" if metric.higher_is_better else "left"
    caption = (
        f"Per seed, {metric.label} minus that of the configuration's own baseline (same context, regularisers off) "
        f"with the same seed, for {best}; {metric.direction}, so boxes {side} of 0 beat no regularisation."
    )
    report.figure("paired_differences", "Paired differences against the baseline", path, caption)


def _mc_samples(manifest: dict) -> int:
    """The Monte Carlo dropout passes the space asked for (0: none, or a study run before they could be)."""
    evaluation = manifest.get("space", {}).get("evaluation") or {}
    return int(evaluation.get("mc_samples") or 0)


def _passes(mc_samples: int) -> str:
    return f"{mc_samples} passes" if mc_samples else "several passes"


def _calibration_figures(
    report: Report, store: ResultsStore, done: pd.DataFrame, table: pd.DataFrame, found, mc_samples: int, out_dir
) -> None:
    """Test ECE and NLL against the dropout rate, and the reliability diagrams of the baseline and the
    recommended configuration; skipped with a reason where the study records no calibration."""
    if not findings.has_calibration(done):
        n_classes = done["n_classes"].iloc[0] if "n_classes" in done else np.nan
        why = (
            "a regression has no class probabilities to calibrate"
            if pd.isna(n_classes) or int(n_classes) < 2
            else "its trials record no calibration (test ECE and NLL): the study ran before the engines recorded "
            "it, or with an engine that does not"
        )
        report.skipped.append(f"No calibration figures (ECE and NLL against dropout, reliability diagram): {why}.")
        return
    unscored = int(done["test_nll"].isna().sum())
    left_out = f" {unscored} trial(s) run before calibration was recorded are left out." if unscored else ""
    mc = f"Monte Carlo dropout (dashed: probabilities averaged over {_passes(mc_samples)} with dropout on)"
    if "dropout_rate" not in varying_axes(done):
        report.skipped.append("No calibration-vs-dropout figure: the study has only one dropout rate.")
    else:
        curve = findings.calibration_by_dropout(done)
        if curve.rows.empty:
            report.skipped.append(
                "No calibration-vs-dropout figure: no trial with the other regularisers off records calibration."
            )
        else:
            note = _held_note(curve.held, curve.pooled)
            path = figures.calibration_vs_dropout(curve.rows, out_dir / "calibration_vs_dropout_rate.png", note)
            passes = (
                f"the deterministic pass (solid) and {mc}"
                if curve.mc
                else "the deterministic pass only (add `evaluation: {mc_samples: 30}` to the space for Monte Carlo "
                "dropout)"
            )
            caption = (
                "Test ECE (expected calibration error: the gap between confidence and accuracy over 15 equal-width "
                "confidence bins) and test NLL (negative log-likelihood of the true class, without the L2 penalty) "
                f"of the final model against the dropout rate, lower is better for both: {passes}"
                + (f" ({note})" if note else "")
                + ". Points are means over seeds, bands 95% t intervals of the mean. A dropout rate that raises "
                "accuracy can still worsen the probabilities: read it with the accuracy figure." + left_out
            )
            report.figure("calibration_vs_dropout_rate", "Calibration against dropout rate", path, caption)
    roles = findings.recommended_and_baseline(done, table, found.recommendation.best_key)
    keys = done.loc[done["config_key"].isin(set(roles.values())), "trial_key"]
    panels = findings.reliability_panels(done, store.calibration(keys), table, found.recommendation)
    if not panels:
        report.skipped.append(
            "No reliability diagram: no reliability bins are stored for the baseline or the recommended "
            "configuration (`calibration/` in the study's folder)."
        )
        return
    ece = metrics.get("test_ece")

    def title(panel: findings.ReliabilityPanel) -> str:
        mc_ece = f", MC dropout {ece.value(panel.mc_ece)}" if not np.isnan(panel.mc_ece) else ""
        return f"{_capital(_role_words(panel.role, panel.configuration))}, {panel.seeds} seeds\n" + (
            f"mean test ECE {ece.value(panel.ece)}{mc_ece}"
        )

    path = figures.reliability([(title(p), p.bins) for p in panels], out_dir / "reliability.png")
    with_mc = any(not np.isnan(p.mc_ece) for p in panels)
    missing = [role for role in roles if role not in {p.role for p in panels}]
    caption = (
        "Reliability diagrams of "
        + " and of ".join(_role_words(p.role, p.configuration) for p in panels)
        + ": the test rows of every seed pooled into 15 equal-width bins of top-label confidence (counts summed, "
        "confidence and accuracy weighted by count); each point is a bin's accuracy against its mean confidence, "
        + (f"the deterministic pass (solid) and {mc}, " if with_mc else "")
        + "the dotted diagonal perfect calibration. Points below the diagonal are overconfident (the model is "
        "surer than it is right), above underconfident; the bars below show where the predictions fall. Each panel "
        "states its mean test ECE over seeds."
        + (f" No bins are stored for the {', '.join(missing)} configuration." if missing else "")
    )
    report.figure("reliability", "Reliability diagram: baseline and recommendation", path, caption)


def _variance(report: Report, done: pd.DataFrame, axes: list[str], metric) -> findings.VarianceFindings | None:
    if not axes:
        report.skipped.append("No variance decomposition: the study varies no axis.")
        return None
    try:
        return findings.variance_info(done, axes, metric.name)
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


def _label(metric: str) -> str:
    """How a metric column is written: 'validation accuracy', 'test RMSE'."""
    return metrics.get(metric).label


def _lower(metric: metrics.Metric) -> str:
    """' (lower is better)' after a lower-is-better metric's name in a sentence; nothing for the usual direction."""
    return "" if metric.higher_is_better else " (lower is better)"


def _conclusions(found: findings.Findings, mc_samples: int = 0) -> list[str]:
    """Plain-language answers, each written from a findings record."""
    lines = []
    if not found.planned:
        lines.append(
            "No regulariser could be compared with an unregularised configuration of the same context: the grid "
            "has no configuration with every varying regulariser off."
        )
    for effect in found.planned:
        lines.append(_effect_sentence(effect, found.protocol))
    lines.append(_recommendation_sentence(found.recommendation, found.protocol))
    if found.calibration is not None:
        lines.append(_calibration_sentence(found.calibration, found.recommendation))
    if found.mc_dropout:
        lines.append(_mc_sentence(found.mc_dropout, mc_samples))
    if found.variance is not None:
        lines.append(_variance_sentence(found.variance))
    if found.power is not None:
        lines.append(_power_sentence(found.power))
    return lines


def _effect_sentence(e: findings.Effect, protocol: findings.Protocol) -> str:
    name = _capital(AXIS_NAMES[e.axis])
    m = metrics.get(protocol.metric)
    where = f" (at {e.context})" if e.context else ""
    test = "paired" if e.paired else "unpaired (seeds not shared)"
    words = {
        "helps": "larger than seed noise: it helps",
        "hurts": "larger than seed noise: it hurts",
        "noise": f"not distinguishable from seed noise with {e.seeds} seeds",
    }
    verdict = words.get(e.verdict)
    if verdict is None:  # probably helps / hurts: the corrected interval excludes zero, the test did not pass
        verdict = f"its corrected interval excludes zero, so it {e.verdict}" + (
            f", but with {e.seeds} seeds no paired signed-rank test can pass the correction over {e.family_size} "
            "comparisons: confirm with more seeds"
            if not e.reachable
            else ""
        )
    return (
        f"**{name} alone**{where} -- the setting chosen on {_label(protocol.selection_metric)}, "
        f"{e.configuration}, changes mean {m.label}{_lower(m)} by {m.difference(e.difference)}{m.unit} (95% CI "
        f"corrected for {e.family_size} planned comparisons {m.difference(e.ci_low)} to {m.difference(e.ci_high)}) "
        f"against no regularisation; a seed does better with it {e.prob_better:.0%} of the time ({test} test p = "
        f"{e.p_value:.2g}, Holm-adjusted p = {e.p_adjusted:.2g}): {verdict}."
    )


def _recommendation_sentence(r: findings.Recommendation, protocol: findings.Protocol) -> str:
    m, chooser = metrics.get(r.metric), metrics.get(r.selected_on)
    chosen = f"{chooser.label}{_lower(chooser)}"
    text = (
        f"**Recommendation** -- chosen on {chosen}: {r.best}"
        + (f" (at its best {r.tuned})" if r.tuned else "")
        + f", {m.label} {m.value(r.best_test_mean)} (95% CI "
        f"{m.value(r.best_test_ci[0])} to {m.value(r.best_test_ci[1])}, {r.seeds} seeds)"
    )
    if r.baseline_test is not None:
        mean, low, high = r.baseline_test
        text += f" against {m.value(mean)} ({m.value(low)} to {m.value(high)}) for its unregularised baseline"
    text += "."
    within = chooser.tolerance_words(r.tolerance)
    if len(r.as_good) > 1:
        spans = "; ".join(f"{AXIS_NAMES[a]} {v}" for a, v in r.ranges.items())
        text += (
            f" {len(r.as_good) - 1} other configuration(s) are within {within} of it on {chooser.label} (paired "
            f"non-inferiority, one-sided 95%): together they span {spans}."
        )
    else:
        text += (
            f" No other configuration is shown to be within {within} of it on {chooser.label} (paired "
            "non-inferiority, one-sided 95%)."
        )
    if r.prob_best:
        text += (
            " Probability of being the best (seeds resampled jointly): "
            + ", ".join(f"{name} {p:.0%}" for name, p in r.prob_best)
            + "."
        )
    text += (
        f" {r.indistinguishable} other configuration(s) are not separable from it by a corrected paired test"
        + (f"; {r.untested} could not be tested (too few shared seeds)" if r.untested else "")
        + "."
    )
    if protocol.optimistic:
        text += (
            " The choice was made on the test set itself (no validation split), so the selected configuration's "
            f"{m.label} reads {'high' if m.higher_is_better else 'low'} (winner's curse)."
        )
    return text


def _calibration_sentence(c: findings.Calibration, r: findings.Recommendation) -> str:
    """How much dropout gives the best-calibrated model, against the baseline and the recommendation."""
    nll, ece, chooser = metrics.get("test_nll"), metrics.get("test_ece"), metrics.get(c.selected_on)

    def scores(x: findings.ConfigurationCalibration) -> str:
        return (
            f"test NLL {nll.value(x.nll[0])} (95% CI {nll.value(x.nll[1])} to {nll.value(x.nll[2])}) and test ECE "
            f"{ece.value(x.ece[0])} ({ece.value(x.ece[1])} to {ece.value(x.ece[2])})"
        )

    best = c.best
    named = [("no regularisation", c.baseline), ("the recommendation", c.recommended)]
    named = [(name, x) for name, x in named if x is not None]
    same = [name for name, x in named if x.config_key == best.config_key]
    text = (
        f"**Calibration** -- the best-calibrated configuration (lowest mean {chooser.label}) is {best.configuration}"
        + (f", which is also {' and '.join(same)}" if same else "")
        + f": {scores(best)} over {best.seeds} seeds (deterministic pass; lower is better for both)"
    )
    chosen_on = metrics.get(r.selected_on).label
    shown = [
        f"{name}{f' on {chosen_on}' if name == 'the recommendation' else ''}"
        + (f" ({x.configuration})" if x.configuration != name else "")
        + f": {scores(x)}"
        for name, x in named
        if x.config_key != best.config_key
    ]
    text += ("; against " + "; ".join(shown) if shown else "") + "."
    if c.optimistic:
        text += (
            " It was chosen on the test set itself (no validation split), so its test NLL reads low (winner's curse)."
        )
    return text


def _role_words(role: str, configuration: str) -> str:
    """'the recommended configuration (dropout 0.5)', 'no regularisation', 'no regularisation (width 64)'."""
    if role == "recommended":
        return f"the recommended configuration ({configuration})"
    name, _, also = role.partition(" (")
    return (
        name
        + (f" ({configuration})" if configuration != name else "")
        + (f", {also.removesuffix(')')}," if also else "")
    )


def _mc_sentence(effects: list[findings.McEffect], mc_samples: int) -> str:
    """Does MC dropout lower the NLL over the deterministic pass, at the recommendation and at its baseline."""
    nll, accuracy = metrics.get("test_nll"), metrics.get("test_accuracy")
    m = effects[0].family_size
    words = {
        "helps": "MC dropout lowers the NLL",
        "hurts": "MC dropout raises the NLL",
        "probably helps": "MC dropout probably lowers the NLL",
        "probably hurts": "MC dropout probably raises the NLL",
    }
    parts = []
    for e in effects:
        if e.verdict == "noise":
            verdict = f"not distinguishable from seed noise with {e.seeds} seeds"
        elif e.verdict.startswith("probably"):
            verdict = f"its corrected interval excludes zero, so {words[e.verdict]}" + (
                f", but with {e.seeds} seeds no signed-rank test can pass the correction over {m}: confirm with "
                "more seeds"
                if not e.reachable
                else ""
            )
        else:
            verdict = words[e.verdict]
        text = (
            f"at {_role_words(e.role, e.configuration)} MC dropout changes mean test NLL (lower is better) by "
            f"{nll.difference(e.difference)} (95% CI corrected for {m} comparison(s) {nll.difference(e.ci_low)} to "
            f"{nll.difference(e.ci_high)}); its NLL is the lower for {e.prob_better:.0%} of seeds (paired Wilcoxon "
            f"p = {e.p_value:.2g}, Holm-adjusted p = {e.p_adjusted:.2g}): {verdict}"
        )
        if not np.isnan(e.accuracy_difference):
            low, high = e.accuracy_ci
            ci = "" if np.isnan(low) else f" (95% CI {accuracy.difference(low)} to {accuracy.difference(high)})"
            text += f"; it changes test accuracy by {accuracy.difference(e.accuracy_difference)} points{ci}"
        parts.append(text)
    return (
        f"**MC dropout** -- against the deterministic pass of the same trials (probabilities averaged over "
        f"{_passes(mc_samples)} with dropout on and batch norm in inference mode; per-seed differences, MC minus "
        f"deterministic, Holm over {m} configuration(s)): " + "; ".join(parts) + "."
    )


def _variance_sentence(v: findings.VarianceFindings) -> str:
    terms = v.shares.table[v.shares.table["term"] != "residual"].sort_values("share", ascending=False)
    described = [
        f"{_term_words(t)} {s:.0%} ({_p(p)})"
        for t, s, p in zip(terms["term"], terms["share"], terms["p_value"], strict=True)
        if s >= 0.01
    ]
    residual = float(v.shares.table.loc[v.shares.table["term"] == "residual", "share"].iloc[0])
    what = "seed noise" if v.residual_is_seed_noise else "interactions of three or more axes, and seed noise"
    return (
        f"**What matters most** -- share of the variance of {_label(v.metric)}: "
        + (", ".join(described[:6]) if described else "no term above 1%")
        + f"; residual ({what}) {residual:.0%}; seed noise alone (variation between seeds within a "
        f"configuration) {v.seed_noise:.0%}."
        + (
            ""
            if v.shares.balanced
            else " The design is unbalanced (unequal seeds per configuration), so the shares depend on the order "
            "of terms and need not add up to 100%."
        )
    )


def _power_sentence(p: findings.Power) -> str:
    m = metrics.get(p.metric)
    text = (
        f"**Power** -- the seed-to-seed standard deviation of a paired difference in {m.label} is typically "
        f"{m.amount(p.spread)} here. With {p.seeds} seeds a single paired comparison detects a true "
        f"difference of about {m.amount(p.single)} 80% of the time (paired t-test approximation, alpha "
        f"{stats.ALPHA}); after correcting for the {p.comparisons} planned comparison(s), about "
        f"{m.amount(p.corrected)}."
    )
    if not p.reachable:
        text += (
            f" Note: with {p.seeds} seeds the signed-rank test cannot reach a p-value below "
            f"{stats.smallest_p_value(p.seeds):.2g}, so after correction over {p.comparisons} comparisons no "
            "difference can be declared significant however large it is; run more seeds."
        )
    return text


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def _term_words(term: str) -> str:
    return " x ".join("seed" if part == "seed" else AXIS_NAMES.get(part, part) for part in term.split(" x "))


def _protocol_note(p: findings.Protocol) -> str:
    if p.optimistic:
        chose = (
            "**Protocol** -- there is no validation split: early stopping (where on) and every choice in this report "
            "(the best configuration, each regulariser's best setting) used the test set, as in the tutorial, so "
            "the selected results are optimistic. Set `dataset.split.validation_size` to choose on held-out "
            "training rows instead."
        )
    else:
        chose = (
            f"**Protocol** -- {p.n_validation} of the training rows are held out for validation: early stopping "
            f"and every choice in this report use them (choices on {_label(p.selection_metric)}); the test set only "
            "measures what was chosen."
        )
    varied = ", ".join(p.varied) or "nothing"
    fixed = f"; fixed across seeds: {', '.join(p.fixed)}" if p.fixed else ""
    settings = f" Conclusions hold for {', '.join(p.settings)}." if p.settings else ""
    nuisance = (
        f" Tuned per setting (best on {_label(p.selection_metric)}): {', '.join(AXIS_NAMES[a] for a in p.nuisance)}."
        if p.nuisance
        else ""
    )
    rows = (
        f"One test row is worth {p.test_row_points:.2g} accuracy points ({p.n_test} test rows)."
        if metrics.get(p.metric).key == "accuracy"
        else f"{p.n_test} test rows."
    )
    return f"{chose} The seed varies: {varied}{fixed}. {rows}{settings}{nuisance}"


def _measure_note(p: findings.Protocol, available: list[str]) -> str:
    """What every number below measures, which way is better, and what else could be measured."""
    m = metrics.get(p.metric)
    better = "raises" if m.higher_is_better else "lowers"
    units = "accuracy points (percent)" if m.key == "accuracy" else ("points (percent)" if m.unit else "its own units")
    others = [name for name in available if name != p.metric]
    return (
        f"**Metric** -- every statistic and figure below is of {m.label}, {m.direction} (a regulariser that "
        f"{better} it helps); choices are made on {_label(p.selection_metric)}. Differences are configuration minus "
        f"baseline, in {units}."
        + (f" Also recorded: {', '.join(f'`{o}`' for o in others)} (`--metric NAME`)." if others else "")
    )


def _metric_note(n_classes, metric: str, class_names=None) -> str:
    """What the recorded metrics mean for this output layer, as Keras computes them (and a file's class names)."""
    if metrics.get(metric).key in ("rmse", "mae", "r2") or pd.isna(n_classes) or int(n_classes) < 2:
        return "Metrics (regression): RMSE, MAE and R² of the predictions."
    n_classes = int(n_classes)
    names = str(class_names).split("|") if isinstance(class_names, str) and class_names else []
    labels = f"; classes {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}" if names else ""
    if n_classes == 2:
        return f"Metrics: binary accuracy (sigmoid output thresholded at 0.5{labels}) and binary cross-entropy."
    return (
        f"Metrics: categorical accuracy (the most probable of {n_classes} softmax classes is the prediction{labels}) "
        "and sparse categorical cross-entropy."
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


def _markdown(report: Report, manifest: dict, trials, done, table: pd.DataFrame, axes, found, available) -> str:
    failed = len(trials) - len(done)
    planned = manifest.get("n_trials", len(trials))
    first = done.iloc[0]
    p = found.protocol
    rows = f"{p.n_train} train / " + (f"{p.n_validation} validation / " if p.n_validation else "") + f"{p.n_test} test"
    lines = [f"# Study `{manifest['study']}`", ""]
    if manifest.get("description"):
        lines += [manifest["description"], ""]
    lines += [
        f"Based on **{len(done)} of {planned}** planned trials"
        + (f" ({failed} failed, see `trials.csv`)" if failed else "")
        + f", {len(table)} configurations. {_engine_note(done)} "
        f"Data: `{first['dataset']}` ({rows} rows); model `{first['model']}`. "
        f"Axes varied: {', '.join(AXIS_NAMES[a] for a in axes) or 'none'}. "
        f"{_metric_note(first['n_classes'], p.metric, first.get('class_names'))}",
        "",
        _protocol_note(p),
        "",
        _measure_note(p, available),
        "",
    ]
    if len(done) < planned:
        lines += ["> The study is incomplete: every number and figure uses the trials finished so far.", ""]
    improving = table["still_improving_share"].fillna(0)
    if (improving > 0).any():
        lines += [
            f"> {int((improving > 0).sum())} configuration(s) have seeds still improving at the last epoch (their "
            "held-out loss was lowest in the last tenth of the run): more epochs might change their results.",
            "",
        ]
    lines += ["## Conclusions", ""]
    lines += [f"- {line}" for line in _conclusions(found, _mc_samples(manifest))]
    lines += [
        "",
        "Methods: intervals are 95% Student t intervals of the mean over seeds (Welch's for unpaired "
        "differences); comparisons pair the configurations' runs with the same seed (Wilcoxon signed-rank test, "
        f"differences in {'accuracy points = percent' if metrics.get(p.metric).key == 'accuracy' else _label(p.metric)}"
        "), or fall back to unpaired Mann-Whitney U tests where seeds are "
        "not shared. Each configuration is compared with the unregularised configuration of its own context. The "
        "planned comparisons (each regulariser alone) are Holm-corrected as one family, with Bonferroni-corrected "
        "intervals; the table's p-values are Holm-corrected over every configuration (the exploratory family). "
        "'A seed does better' is the probability of improvement (ties count half). IQM is the interquartile mean.",
        "",
    ]
    for name, title, caption in report.sections:
        rel = report.paths[name].relative_to(report.folder).as_posix()
        lines += [f"## {title}", "", f"![{title}]({rel})", "", caption, ""]
    if report.skipped:
        lines += ["## Not drawn", ""] + [f"- {note}" for note in report.skipped] + [""]
    if found.variance is not None:
        shares = found.variance.shares
        residual = "residual" if found.variance.residual_is_seed_noise else "residual (3+-way interactions, seeds)"
        shown = shares.table.assign(
            term=shares.table["term"].map(lambda t: residual if t == "residual" else _term_words(t))
        )
        lines += [
            f"## Variance of {_label(p.metric)} explained",
            "",
            "Two-way ANOVA (type II) with every axis as a factor"
            + (" and the seed as a block" if "seed" in set(shares.table["term"]) else "")
            + f". Seed noise measured on its own (within configurations): {found.variance.seed_noise:.3g} of the "
            "total.",
            "",
        ]
        lines += [shown.to_markdown(index=False, floatfmt=".3g", headers=["term", "share of variance", "p-value"]), ""]
    chooser = metrics.get(p.selection_metric)
    order = "highest" if chooser.higher_is_better else "lowest"
    lines += [
        f"## Configurations ({order} mean {chooser.label} first"
        + (f", top {TABLE_ROWS})" if len(table) > TABLE_ROWS else ")"),
        "",
    ]
    lines += [_configuration_table(table.head(TABLE_ROWS)), ""]
    if len(table) > TABLE_ROWS:
        lines += [f"{len(table) - TABLE_ROWS} more configurations in `summary.csv`.", ""]
    return "\n".join(lines)


def _configuration_table(table: pd.DataFrame) -> str:
    m = metrics.get(str(table["metric"].iloc[0]))
    chooser = metrics.get(str(table["selected_on"].iloc[0]))
    train = m.column("train")

    def interval(mean: float, low: float, high: float, write) -> str:
        return "" if pd.isna(mean) else f"{write(mean)} [{write(low)}, {write(high)}]"

    def head(metric: metrics.Metric) -> str:
        return f"{metric.split} acc." if metric.key == "accuracy" and not metric.mc else metric.label

    rows = list(table.itertuples())
    tuned = any(c.startswith("tuned_") for c in table.columns)
    tolerance = float(table["tolerance"].iloc[0])
    within = f"{100 * tolerance:g} pts" if chooser.measure.points else f"{tolerance:.2g}"
    out = pd.DataFrame(
        {
            "configuration": table["configuration"],
            **({"tuned": [findings.tuned_label(r) for _, r in table.iterrows()]} if tuned else {}),
            "seeds": table["seeds"],
            **({head(chooser): table[f"{chooser.name}_mean"].map(chooser.value)} if chooser.name != m.name else {}),
            f"{head(m)} [95% CI]": [
                interval(*(getattr(r, f"{m.name}_{k}") for k in ("mean", "ci_low", "ci_high")), m.value) for r in rows
            ],
            "IQM": table[f"{m.name}_iqm"].map(m.value),
            **({head(metrics.get(train)): table[f"{train}_mean"].map(m.value)} if f"{train}_mean" in table else {}),
            f"vs baseline{',' + m.unit if m.unit else ''} [95% CI]": [
                interval(r.vs_baseline_difference, r.vs_baseline_ci_low, r.vs_baseline_ci_high, m.difference)
                for r in rows
            ],
            "p (Holm)": table["vs_baseline_p_holm"].map(lambda p: "" if pd.isna(p) else f"{p:.2g}"),
            "P(seed better)": table["vs_baseline_prob_better"].map(lambda p: "" if pd.isna(p) else f"{p:.0%}"),
            f"within {within} of best": table["within_tolerance_of_best"].map({True: "yes", False: ""}),
            "P(best)": table["prob_best"].map(lambda p: "" if pd.isna(p) else f"{p:.0%}"),
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
