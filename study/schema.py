"""The one results schema every engine writes and the store and analysis read.

Kept free of TensorFlow so that the analysis (which reads only the store) builds a report in seconds.
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

from study import calibration
from study.axes import AXES, AXIS, TRAINING_AXES
from study.space import SearchSpace, Trial

COMPLETED, FAILED = "completed", "failed"

# trials.csv, one row per trial, in this column order.
TRIAL_COLUMNS = (
    "trial_key",
    "config_key",
    "study",
    "status",
    *(axis for axis in AXES if axis not in TRAINING_AXES),  # those have their own columns below
    "seed",
    "dataset",
    "dataset_params",
    "n_train",
    "n_validation",
    "n_test",
    "n_features",
    "n_classes",
    "class_names",
    "model",
    "epochs",
    "epochs_run",
    "batch_size",
    "learning_rate",
    "train_accuracy",
    "train_loss",
    "validation_accuracy",
    "validation_loss",
    "test_accuracy",
    "test_loss",
    *(f"{part}_{m}" for part in ("train", "validation", "test") for m in ("rmse", "mae", "r2")),  # regression
    *calibration.columns(),  # a classifier's probabilities: NLL, Brier, ECE, AUC; with MC dropout mc_*
    "best_test_accuracy",
    "best_epoch",
    "still_improving",
    "wall_time_s",
    "engine",
    "engine_version",
    "finished_at",
    "python_version",
    "tensorflow_version",
    "keras_version",
    "keras_tuner_version",
    "jax_version",
    "error",
)

# curves/*.parquet, long format: one row per (trial, epoch). Epochs count from 1, as Keras prints them. The
# validation columns are blank without a validation split (and in curves written before there was one).
CURVE_COLUMNS = (
    "trial_key",
    "epoch",
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "validation_loss",
    "validation_accuracy",
    "train_rmse",  # regression: the accuracy columns are blank, these hold the score
    "test_rmse",
    "validation_rmse",
)
CURVE_METRICS = CURVE_COLUMNS[2:]
# A trial is flagged `still_improving` when its best monitored loss came in the last tenth of a full run.
STILL_IMPROVING_TAIL = 0.1


def versions() -> dict[str, str]:
    """Versions that decide whether a result can be reproduced."""

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "python_version": platform.python_version(),
        "tensorflow_version": version("tensorflow"),
        "keras_version": version("keras"),
        "keras_tuner_version": version("keras-tuner"),
        "jax_version": version("jax"),
    }


def machine() -> dict[str, Any]:
    """What the study ran on, for the manifest."""
    import os

    from study.machine import cpu_model, vector_extensions

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_model(),
        "vector_extensions": " ".join(vector_extensions()),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "hostname": platform.node(),
    }


def model_description(space: SearchSpace, config: dict[str, Any], n_features: int, n_classes: int) -> str:
    """A short, human-readable architecture string, e.g. 'mlp 2-500-1 relu', 'cnn conv16-32 dense64-10 relu',
    'custom my_models:build' (the user's build function)."""
    model = space.model
    if model.family == "custom":
        return f"custom {model.build}"
    outputs = 1 if n_classes in (0, 2) else n_classes  # 0: a regression's one linear output
    head = "-".join(str(w) for w in (*config["hidden_units"], outputs))
    if model.family == "cnn":
        return f"cnn conv{'-'.join(str(f) for f in model.filters)} dense{head} {model.activation}"
    if model.family == "rnn":
        return f"rnn lstm{config['hidden_units'][0]} dense{outputs} {model.activation}"
    return f"mlp {n_features}-{head} {model.activation}"


@dataclass
class History:
    """Per-epoch metrics of one trial, as `model.fit`'s history reports them (train under dropout). The score is
    accuracy, or RMSE for a regression (the other is None); the validation curves are None without a validation
    split."""

    train_loss: np.ndarray
    test_loss: np.ndarray
    train_accuracy: np.ndarray | None = None
    test_accuracy: np.ndarray | None = None
    validation_loss: np.ndarray | None = None
    validation_accuracy: np.ndarray | None = None
    train_rmse: np.ndarray | None = None
    test_rmse: np.ndarray | None = None
    validation_rmse: np.ndarray | None = None

    @property
    def selection(self) -> tuple[np.ndarray, np.ndarray]:
        """The (loss, score) curves that early stopping and model selection may look at -- validation when there
        is a validation split, else test (the tutorial's protocol, optimistic) -- the score higher-is-better
        (accuracy, or minus the RMSE)."""
        part = "validation" if self.validation_loss is not None else "test"
        accuracy, rmse = getattr(self, f"{part}_accuracy"), getattr(self, f"{part}_rmse")
        score = np.asarray(accuracy) if accuracy is not None else -np.asarray(rmse)
        return np.asarray(getattr(self, f"{part}_loss")), score


# calibration/*.parquet: a classifier's reliability bins, one row per (trial, split, kind, bin).
CALIBRATION_COLUMNS = ("trial_key", "split", "kind", *calibration.BIN_COLUMNS)


@dataclass
class Predictions:
    """A classifier's final predicted probabilities ([rows, outputs], as the output layer gives them) on the
    held-out splits, deterministic and averaged over Monte Carlo dropout passes (None when not asked for), with
    the labels they are scored against."""

    labels: dict[str, np.ndarray]  # split -> labels ("test", and "validation" where there is one)
    deterministic: dict[str, np.ndarray]
    mc: dict[str, np.ndarray] | None = None

    def columns_and_bins(self, trial_key: str) -> tuple[dict[str, float], pd.DataFrame]:
        """The calibration columns of trials.csv and the reliability bins, computed one way for every engine."""
        row: dict[str, float] = {}
        frames = []
        for kind, probs in (("deterministic", self.deterministic), ("mc", self.mc)):
            for split, p in (probs or {}).items():
                y = self.labels[split]
                row |= calibration.metrics(p, y, f"{'mc_' if kind == 'mc' else ''}{split}_")
                bins = calibration.reliability_bins(p, y)
                frames.append(bins.assign(trial_key=trial_key, split=split, kind=kind))
        bins = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CALIBRATION_COLUMNS)
        return row, bins[list(CALIBRATION_COLUMNS)]


@dataclass
class TrialResult:
    """What an engine returns for one trial: a row for trials.csv, its per-epoch curves and (a classifier's)
    reliability bins."""

    row: dict[str, Any]
    curves: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(CURVE_COLUMNS)))
    calibration: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(CALIBRATION_COLUMNS)))

    @property
    def key(self) -> str:
        return self.row["trial_key"]

    @property
    def ok(self) -> bool:
        return self.row["status"] == COMPLETED


def _base_row(trial: Trial, engine: str, engine_version: str = "") -> dict[str, Any]:
    space = trial.space
    row: dict[str, Any] = dict.fromkeys(TRIAL_COLUMNS)
    row.update(
        trial_key=trial.key,
        config_key=trial.config_key,
        study=space.name,
        seed=trial.seed,
        dataset=space.dataset.label,
        dataset_params=json.dumps(space.dataset.params, sort_keys=True),
        epochs=trial.epochs,
        batch_size=trial.batch_size,
        learning_rate=trial.learning_rate,
        engine=engine,
        engine_version=engine_version,
        finished_at=pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        **versions(),
    )
    for axis in space.applicable_axes:  # axes of other model families stay blank
        if axis not in TRAINING_AXES:
            row[axis] = AXIS[axis].stored(trial.config[axis])
    return row


def completed_result(
    trial: Trial,
    engine: str,
    history: History,
    final: dict[str, float],
    data_shape: dict[str, int],
    wall_time_s: float,
    engine_version: str = "",
    predictions: Predictions | None = None,
) -> TrialResult:
    """Build a completed trial's row and curves; `final` holds inference-mode train, test (and validation) accuracy
    and loss; `data_shape` the split's `shape`; `engine_version` what computed it (e.g. 'jax 0.10.2 (cpu x2)').

    `best_test_accuracy` is the highest test accuracy of any epoch: a diagnostic chosen on the test curve, never
    a result. `best_epoch` is the epoch of the best selection accuracy (validation, or test without a validation
    split); `still_improving` says the monitored loss was at its best in the last tenth of a run that used
    every epoch -- more epochs (or a higher learning rate) might have helped."""
    row = _base_row(trial, engine, engine_version)
    test_acc = np.asarray(history.test_accuracy if history.test_accuracy is not None else [], dtype=np.float64)
    epochs_run = len(history.train_loss)
    selection_loss, selection_acc = history.selection
    best = int(np.argmax(selection_acc)) if epochs_run else 0
    lowest = int(np.nanargmin(selection_loss)) + 1 if epochs_run and np.isfinite(selection_loss).any() else 0
    full_run = epochs_run == trial.epochs
    row.update(
        status=COMPLETED,
        model=model_description(trial.space, trial.config, data_shape["n_features"], data_shape["n_classes"]),
        epochs_run=epochs_run,
        best_test_accuracy=float(test_acc.max()) if len(test_acc) else float("nan"),
        best_epoch=best + 1,
        still_improving=bool(full_run and lowest > epochs_run * (1 - STILL_IMPROVING_TAIL)),
        wall_time_s=round(wall_time_s, 4),
        error="",
        **data_shape,
        **{k: float(v) for k, v in final.items()},
    )
    blank = np.full(epochs_run, np.nan, dtype=np.float32)
    curves = pd.DataFrame(
        {
            "trial_key": trial.key,
            "epoch": np.arange(1, epochs_run + 1, dtype=np.int32),
            **{
                m: blank if getattr(history, m) is None else np.asarray(getattr(history, m), dtype=np.float32)
                for m in CURVE_METRICS
            },
        }
    )
    if predictions is None:
        return TrialResult(row, curves)
    scores, bins = predictions.columns_and_bins(trial.key)
    row.update(scores)
    return TrialResult(row, curves, bins)


def failed_result(trial: Trial, engine: str, error: BaseException, wall_time_s: float) -> TrialResult:
    """A failed trial's row: kept in the table (so it is reported), rerun by the next search."""
    row = _base_row(trial, engine)
    row.update(status=FAILED, wall_time_s=round(wall_time_s, 4), error=f"{type(error).__name__}: {error}")
    return TrialResult(row)
