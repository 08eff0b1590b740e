"""How good a model's probabilities are, not only its decisions: arrays of predicted probabilities in, numbers out.

Both engines hand over the final model's predicted probabilities (deterministic, and averaged over Monte Carlo
dropout passes when asked) and these functions turn them into the calibration columns of trials.csv and the
reliability bins of the report, so the two engines cannot differ in how a metric is computed:

- NLL: the mean negative log-likelihood of the true class (the data loss, without any L2 penalty), probabilities
  clipped to [1e-7, 1 - 1e-7] as Keras's cross-entropy does for probabilities (for saturated float32 outputs Keras's
  own loss, computed from the logits, is larger);
- Brier score: the mean squared error of the probability vector against the one-hot label (for two classes, of
  the positive class's probability -- scikit-learn's `brier_score_loss`);
- ECE: expected calibration error of the top-label confidence over 15 equal-width bins on [0, 1] (Guo et al.
  2017), and the bins themselves for reliability diagrams;
- ROC AUC for two classes (scikit-learn's `roc_auc_score`); accuracy; mean predictive entropy (nats).

Labels are class indices (any shape with one per row). A bin holds the confidences in [k/15, (k+1)/15), the last
one also 1.0. Probabilities that are not all finite (a run that diverged) score NaN everywhere and fill no bin.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ECE_BINS = 15
EPSILON = 1e-7  # keras.backend.epsilon(): Keras clips probabilities so before taking logs
BIN_COLUMNS = ("bin", "count", "confidence", "accuracy")


def as_matrix(probs: np.ndarray) -> np.ndarray:
    """Probabilities as [rows, classes]: a sigmoid's one column p becomes [1 - p, p]."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1 or probs.shape[1] == 1:
        p = probs.reshape(-1)
        return np.column_stack([1.0 - p, p])
    return probs


def classes(y: np.ndarray) -> np.ndarray:
    """Labels as a flat array of class indices ([rows], [rows, 1] and float labels alike)."""
    return np.asarray(y).reshape(-1).astype(int)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    y = classes(y)
    p = np.clip(as_matrix(probs)[np.arange(len(y)), y], EPSILON, 1.0 - EPSILON)
    return float(-np.mean(np.log(p)))


def brier(probs: np.ndarray, y: np.ndarray) -> float:
    matrix = as_matrix(probs)
    onehot = np.eye(matrix.shape[1])[classes(y)]
    if matrix.shape[1] == 2:
        return float(np.mean(np.square(matrix[:, 1] - onehot[:, 1])))
    return float(np.mean(np.sum(np.square(matrix - onehot), axis=1)))


def reliability_bins(probs: np.ndarray, y: np.ndarray, n_bins: int = ECE_BINS) -> pd.DataFrame:
    """Top-label confidence and accuracy in each of `n_bins` equal-width bins (empty bins have count 0)."""
    matrix = as_matrix(probs)
    if not np.isfinite(matrix).all():  # a diverged run: nothing to bin
        matrix = matrix[:0]
    confidence = matrix.max(axis=1)
    correct = (matrix.argmax(axis=1) == classes(y)[: len(matrix)]).astype(float)
    index = np.minimum((confidence * n_bins).astype(int), n_bins - 1)  # confidence 1.0 in the last bin
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(index, confidence, n_bins) / count
        accuracy = np.bincount(index, correct, n_bins) / count
    return pd.DataFrame({"bin": np.arange(n_bins), "count": count, "confidence": mean_confidence,
                         "accuracy": accuracy})  # fmt: skip


def ece(probs: np.ndarray, y: np.ndarray, n_bins: int = ECE_BINS) -> float:
    bins = reliability_bins(probs, y, n_bins)
    full = bins[bins["count"] > 0]
    if full.empty:
        return float("nan")
    return float(np.sum(full["count"] * np.abs(full["accuracy"] - full["confidence"])) / bins["count"].sum())


def auc(probs: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC of the positive class for two classes; NaN for more classes or a one-class sample."""
    from sklearn.metrics import roc_auc_score

    matrix, y = as_matrix(probs), classes(y)
    if matrix.shape[1] != 2 or len(np.unique(y)) < 2 or not np.isfinite(matrix).all():
        return float("nan")
    return float(roc_auc_score(y, matrix[:, 1]))


def entropy(probs: np.ndarray) -> float:
    """Mean predictive entropy in nats (of the averaged probabilities, for MC dropout)."""
    matrix = np.clip(as_matrix(probs), 1e-12, 1.0)
    return float(np.mean(-np.sum(matrix * np.log(matrix), axis=1)))


def metrics(probs: np.ndarray, y: np.ndarray, prefix: str) -> dict[str, float]:
    """Every calibration column for one split, e.g. prefix 'test_' or 'mc_validation_'."""
    matrix = as_matrix(probs)
    if not np.isfinite(matrix).all():  # a diverged run: no score means anything
        names = ("nll", "brier", "ece", "auc") + (("accuracy", "entropy") if prefix.startswith("mc_") else ())
        return {f"{prefix}{name}": float("nan") for name in names}
    values = {
        "nll": nll(matrix, y),
        "brier": brier(matrix, y),
        "ece": ece(matrix, y),
        "auc": auc(matrix, y),
    }
    if prefix.startswith("mc_"):
        values["accuracy"] = float(np.mean(matrix.argmax(axis=1) == classes(y)))
        values["entropy"] = entropy(matrix)
    return {f"{prefix}{name}": value for name, value in values.items()}


def columns() -> tuple[str, ...]:
    """The trials.csv columns `metrics` fills, in order."""
    out = []
    for mc in ("", "mc_"):
        for part in ("validation", "test"):
            names = ("nll", "brier", "ece", "auc") + (("accuracy", "entropy") if mc else ())
            out += [f"{mc}{part}_{name}" for name in names]
    return tuple(out)
