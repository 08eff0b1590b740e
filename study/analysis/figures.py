"""Seaborn figures of a study. Each function draws one PNG from tidy frames and returns its path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen needed

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from study.analysis.tables import AXIS_LABELS

SPLIT_COLOURS = {"test": "#1f77b4", "train": "#ff7f0e"}
SPLIT_DASHES = {"test": "", "train": (4, 2)}
MAX_CURVE_POINTS = 500


def _theme() -> None:
    sns.set_theme(context="notebook", style="whitegrid", font_scale=1.0)


def accuracy_vs_axis(trials: pd.DataFrame, axis: str, path: Path, hue: str | None = None) -> Path:
    """Test (solid) and train (dashed) accuracy against `axis`: mean and 95% bootstrap CI over seeds."""
    _theme()
    long = trials.melt(
        id_vars=[c for c in (axis, hue, "seed") if c],
        value_vars=["test_accuracy", "train_accuracy"],
        var_name="split",
        value_name="accuracy",
    )
    long["split"] = long["split"].str.removesuffix("_accuracy")
    fig, ax = plt.subplots(figsize=(9.5, 5), layout="constrained")
    hue_col = hue or "split"
    sns.lineplot(
        data=long,
        x=axis,
        y="accuracy",
        hue=hue_col,
        style="split",
        dashes=SPLIT_DASHES,
        markers={"test": "o", "train": "s"},
        palette=SPLIT_COLOURS if hue is None else "viridis",
        errorbar=("ci", 95),
        n_boot=1000,
        seed=0,
        ax=ax,
    )
    n_seeds = int(trials.groupby("config_key")["seed"].nunique().median())
    ax.set_xlabel(AXIS_LABELS.get(axis, axis))
    ax.set_ylabel("Accuracy (fraction correct)")
    ax.set_title(f"Accuracy against {axis.replace('_', ' ')}\nmean and 95% bootstrap CI over {n_seeds} seeds")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), title=None, frameon=False)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def learning_curves(curves: pd.DataFrame, panels: dict[str, list[str]], path: Path) -> Path:
    """Train (dashed) and test (solid) accuracy per epoch, one panel per configuration.

    Each panel shows the mean over the configuration's seeds with a 95% band (mean ± 1.96 standard errors).
    `panels` maps a panel title to the trial keys (seeds) of one configuration.
    """
    _theme()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), sharey=True, layout="constrained")
    axes = np.atleast_1d(axes)
    for ax, (title, keys) in zip(axes, panels.items(), strict=True):
        part = curves[curves["trial_key"].isin(keys)]
        stats = part.groupby("epoch")[["train_accuracy", "test_accuracy"]].agg(["mean", "std", "count"])
        epochs = stats.index.to_numpy()
        step = max(1, len(epochs) // MAX_CURVE_POINTS)
        shown = np.unique(np.r_[np.arange(0, len(epochs), step), len(epochs) - 1])
        for split in ("train", "test"):
            s = stats[f"{split}_accuracy"].iloc[shown]
            half = 1.96 * s["std"].fillna(0) / np.sqrt(s["count"])
            x = epochs[shown]
            ax.plot(x, s["mean"], color=SPLIT_COLOURS[split], ls="--" if split == "train" else "-", label=split)
            ax.fill_between(x, s["mean"] - half, s["mean"] + half, color=SPLIT_COLOURS[split], alpha=0.2, lw=0)
        ax.set_title(f"{title}\n({len(keys)} seeds)")
        ax.set_xlabel("Epoch")
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("Accuracy (fraction correct)")
    axes[0].legend(loc="lower right", frameon=True)
    fig.suptitle("Learning curves: mean and 95% band over seeds")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
