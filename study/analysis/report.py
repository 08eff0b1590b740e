"""`python -m study report`: figures/, summary.csv and report.md for one study, read from its store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from study.analysis import figures
from study.analysis.tables import baseline_mask, completed, summary, varying_axes
from study.errors import StudyError
from study.space import load_space
from study.store import MANIFEST, ResultsStore, study_folder


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


def build_report(folder: Path) -> dict[str, Path]:
    """Write the report files into `folder` and return their paths by name."""
    store = ResultsStore(folder)
    manifest = store.manifest()
    trials = store.trials()
    done = completed(trials)
    if done.empty:
        raise StudyError(f"{folder} has no finished trials yet: run the search first")
    out_dir = folder / "figures"
    out_dir.mkdir(exist_ok=True)
    paths: dict[str, Path] = {}
    notes: list[str] = []

    table = summary(trials)
    paths["summary"] = folder / "summary.csv"
    table.to_csv(paths["summary"], index=False)

    axes = varying_axes(done)
    if "dropout_rate" in axes:
        others = [a for a in axes if a != "dropout_rate"]
        hue = others[0] if len(others) == 1 else None
        data = done if hue else done[baseline_mask(done, except_axis="dropout_rate")]
        path = out_dir / "accuracy_vs_dropout_rate.png"
        paths["accuracy_vs_dropout_rate"] = figures.accuracy_vs_axis(data, "dropout_rate", path, hue=hue)
        if not hue and others:
            notes.append("The dropout figure shows the trials with every other regulariser off.")
    else:
        notes.append("No accuracy-vs-dropout figure: the study has only one dropout rate.")

    panels = _learning_curve_panels(done)
    if panels:
        keys = [k for ks in panels.values() for k in ks]
        paths["learning_curves"] = figures.learning_curves(store.curves(keys), panels, out_dir / "learning_curves.png")
    else:
        notes.append("No learning-curve figure: the study has no unregularised configuration.")

    paths["report"] = folder / "report.md"
    paths["report"].write_text(_markdown(manifest, trials, table, paths, notes, folder))
    return paths


def _learning_curve_panels(done: pd.DataFrame) -> dict[str, list[str]]:
    """The unregularised configuration and the best one that adds only dropout."""
    base = done[baseline_mask(done)]
    if base.empty:
        return {}
    base_key = base["config_key"].iloc[0]
    panels = {"No regularisation": base.loc[base["config_key"] == base_key, "trial_key"].tolist()}
    dropout_only = done[baseline_mask(done, except_axis="dropout_rate") & (done["dropout_rate"] > 0)]
    if not dropout_only.empty:
        best = dropout_only.groupby("config_key")["test_accuracy"].mean().idxmax()
        rows = dropout_only[dropout_only["config_key"] == best]
        panels[f"Dropout {rows['dropout_rate'].iloc[0]:g} (best dropout-only)"] = rows["trial_key"].tolist()
    return panels


def _markdown(
    manifest: dict, trials: pd.DataFrame, table: pd.DataFrame, paths: dict[str, Path], notes: list[str], folder: Path
) -> str:
    done = completed(trials)
    failed = len(trials) - len(done)
    planned = manifest.get("n_trials", len(trials))
    first = done.iloc[0]
    lines = [f"# Study `{manifest['study']}`", ""]
    if manifest.get("description"):
        lines += [manifest["description"], ""]
    lines += [
        f"Based on **{len(done)} of {planned}** planned trials"
        + (f" ({failed} failed, see `trials.csv`)" if failed else "")
        + f". Engine: {', '.join(sorted(done['engine'].unique()))}. "
        f"Data: `{first['dataset']}` ({int(first['n_train'])} train / {int(first['n_test'])} test rows); "
        f"model `{first['model']}`; {int(first['epochs'])} epochs, batch size {int(first['batch_size'])}.",
        "",
    ]
    if len(done) < planned:
        lines += ["> The study is incomplete: the figures use the trials finished so far.", ""]
    for name, title in (
        ("accuracy_vs_dropout_rate", "Accuracy against dropout rate"),
        ("learning_curves", "Learning curves"),
    ):
        if name in paths:
            lines += [f"## {title}", "", f"![{title}]({paths[name].relative_to(folder).as_posix()})", ""]
    lines += [
        "Solid lines are test accuracy, dashed lines train accuracy (final, in inference mode for the first "
        "figure; per epoch with dropout active for the learning curves, as Keras reports them).",
        "",
    ]
    for note in notes:
        lines += [f"- {note}"]
    lines += ["", "## Configurations (best mean test accuracy first)", ""]
    shown = table.drop(columns=["config_key"]).head(30)
    lines += [shown.to_markdown(index=False, floatfmt=".4g"), ""]
    if len(table) > 30:
        lines += [f"{len(table) - 30} more configurations in `summary.csv`.", ""]
    return "\n".join(lines)
