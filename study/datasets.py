"""Offline datasets (scikit-learn generators and bundled sets) and the train/test split.

Nothing is downloaded: every dataset is generated or ships with scikit-learn.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import datasets as skd


def _digits(**params: Any) -> tuple[np.ndarray, np.ndarray]:
    """8x8 digit images flattened to 64 features, scaled from 0..16 to [0, 1]."""
    x, y = skd.load_digits(return_X_y=True, **params)
    return x / 16.0, y


def _breast_cancer(**params: Any) -> tuple[np.ndarray, np.ndarray]:
    return skd.load_breast_cancer(return_X_y=True, **params)


@dataclass(frozen=True)
class DatasetInfo:
    """How to make one dataset, its default parameters and its default number of training rows."""

    make: Callable[..., tuple[np.ndarray, np.ndarray]]
    defaults: dict[str, Any]
    train_size: int | float
    description: str
    image_shape: tuple[int, int] | None = None  # (height, width) when the features are an image's pixels, row-major

    def allowed_params(self) -> list[str]:
        signature = inspect.signature(self.make)
        names = [
            name
            for name, p in signature.parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and name not in ("return_X_y", "as_frame")
        ]
        return names or list(self.defaults)


DATASETS: dict[str, DatasetInfo] = {
    "circles": DatasetInfo(
        skd.make_circles,
        {"n_samples": 100, "noise": 0.1, "random_state": 1},
        30,
        "two noisy concentric circles, 2 features, binary (the reference experiment)",
    ),
    "moons": DatasetInfo(
        skd.make_moons,
        {"n_samples": 100, "noise": 0.2, "random_state": 1},
        30,
        "two interleaving half-moons, 2 features, binary",
    ),
    "classification": DatasetInfo(
        skd.make_classification,
        {"n_samples": 1000, "n_features": 20, "n_informative": 10, "n_redundant": 5, "random_state": 1},
        0.5,
        "scikit-learn make_classification: Gaussian clusters, 20 features by default",
    ),
    "breast_cancer": DatasetInfo(_breast_cancer, {}, 0.5, "Wisconsin breast cancer, 569 rows, 30 features, binary"),
    "digits": DatasetInfo(
        _digits, {}, 0.5, "8x8 handwritten digits, 1797 rows, 64 features (pixels), 10 classes", image_shape=(8, 8)
    ),
}
# The bundled loaders take no generator parameters.
_NO_PARAMS = {"breast_cancer", "digits"}


def allowed_params(name: str) -> list[str]:
    """Parameter names a search space may set for dataset `name`."""
    return [] if name in _NO_PARAMS else DATASETS[name].allowed_params()


@dataclass(frozen=True)
class Split:
    """A train/test split, ready for any engine: float32 features, integer labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    image_shape: tuple[int, int] | None = None

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def load_split(
    name: str,
    params: dict[str, Any],
    train_size: int | float | None,
    shuffle: bool,
    split_seed: int,
    standardize: bool,
) -> Split:
    """Make the dataset and split it.

    Without `shuffle` the split is by position (the first rows train), as in the reference experiment.
    With `standardize`, features are scaled by the training rows' mean and standard deviation.
    """
    info = DATASETS[name]
    x, y = info.make(**{**info.defaults, **params})
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y).astype(np.int64)
    n = len(x)
    size = info.train_size if train_size is None else train_size
    n_train = round(size * n) if isinstance(size, float) else int(size)
    if not 0 < n_train < n:
        raise ValueError(f"train_size {size} leaves no training or no test rows for {n} rows")
    order = np.random.default_rng(split_seed).permutation(n) if shuffle else np.arange(n)
    train, test = order[:n_train], order[n_train:]
    x_train, x_test = x[train], x[test]
    if standardize:
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std[std == 0] = 1.0
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return Split(
        x_train.astype(np.float32),
        y[train],
        x_test.astype(np.float32),
        y[test],
        n_classes=int(y.max()) + 1,
        image_shape=info.image_shape,
    )
