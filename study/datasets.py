"""Offline datasets (scikit-learn generators and bundled sets), their validation, and the train/test split.

Nothing is downloaded: every dataset is generated or ships with scikit-learn. A search space's dataset is made
once while the file is validated, so every generator parameter is checked by the generator's own rules, and the
split's sizes against the real row count, before anything trains.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from sklearn import datasets as skd


def _digits(**params: Any) -> tuple[np.ndarray, np.ndarray]:
    """8x8 digit images flattened to 64 features, scaled from 0..16 to [0, 1]."""
    x, y = skd.load_digits(return_X_y=True, **params)
    return x / 16.0, y


def _breast_cancer(**params: Any) -> tuple[np.ndarray, np.ndarray]:
    return skd.load_breast_cancer(return_X_y=True, **params)


def _diabetes(**params: Any) -> tuple[np.ndarray, np.ndarray]:
    return skd.load_diabetes(return_X_y=True, **params)


@dataclass(frozen=True)
class DatasetInfo:
    """How to make one dataset, its default parameters and its default number of training rows."""

    make: Callable[..., tuple[np.ndarray, np.ndarray]]
    defaults: dict[str, Any]
    train_size: int | float
    description: str
    image_shape: tuple[int, int] | None = None  # (height, width) when the features are an image's pixels, row-major
    task: str = "classification"  # or "regression": a real-valued target

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
    "diabetes": DatasetInfo(
        _diabetes, {}, 0.5, "diabetes progression, 442 rows, 10 features, a real-valued target", task="regression"
    ),
    "regression": DatasetInfo(
        skd.make_regression,
        {"n_samples": 500, "n_features": 10, "n_informative": 5, "noise": 10.0, "random_state": 1},
        0.5,
        "scikit-learn make_regression: a noisy linear target, 10 features by default",
        task="regression",
    ),
    "friedman1": DatasetInfo(
        skd.make_friedman1,
        {"n_samples": 500, "noise": 1.0, "random_state": 1},
        0.5,
        "Friedman #1: a non-linear target of 5 of 10 uniform features, plus noise",
        task="regression",
    ),
}
# The bundled loaders take no generator parameters.
_NO_PARAMS = {"breast_cancer", "digits", "diabetes"}


# Upper bounds on the generator parameters that size a dataset (the generator itself checks every other rule), so
# that no search space can make the driver allocate without bound. Far above what a CPU study trains on.
SIZE_LIMITS = {
    "n_samples": 1_000_000,
    "n_features": 10_000,
    "n_informative": 10_000,
    "n_redundant": 10_000,
    "n_repeated": 10_000,
    "n_classes": 1_000,
    "n_clusters_per_class": 100,
}
MAX_VALUES = 50_000_000  # rows x features of a dataset (200 MB as float32)
MAX_GENERATOR_WORK = 2e9  # make_classification's arithmetic: a few seconds
FLOAT32_LIMIT = 1e30  # features train in float32 (largest 3.4e38), with room for their products
MAX_LIST_LENGTH = 10_000  # a list-valued parameter (weights, shift, scale)


NO_VALUE = object()  # a DataError about the parameters together, shown without a value


class DataError(ValueError):
    """A problem with a search space's data, naming the field under `dataset` it comes from."""

    def __init__(self, field: str, value: Any, rule: str):
        super().__init__(rule)
        self.field, self.value, self.rule = field, value, rule


def allowed_params(name: str) -> list[str]:
    """Parameter names a search space may set for dataset `name`."""
    return [] if name in _NO_PARAMS else DATASETS[name].allowed_params()


def check_params(params: dict[str, Any]) -> None:
    """Refuse parameter values that are not plain data (finite numbers, strings, flat lists) or that would make
    a dataset too large to generate, before generating it."""
    for key, value in params.items():
        if isinstance(value, list) and len(value) > MAX_LIST_LENGTH:
            raise DataError(f"params.{key}", f"a list of {len(value)}", f"must hold at most {MAX_LIST_LENGTH} values")
        if isinstance(value, list) and not all(_is_scalar(v) for v in value):
            raise DataError(
                f"params.{key}", value, "must be a flat list of finite numbers, strings or booleans (no nesting)"
            )
        if not isinstance(value, list) and not _is_scalar(value):
            raise DataError(
                f"params.{key}", value, "must be a finite number, a string, a boolean, null or a flat list of these"
            )
        if key == "random_state" and (isinstance(value, bool) or not isinstance(value, int)):
            raise DataError(
                "params.random_state", value, "must be an integer, so that every run and worker sees the same data"
            )
        limit = SIZE_LIMITS.get(key)
        if limit is None:
            continue
        counts = value if isinstance(value, list) else [value]
        if any(isinstance(v, bool) for v in counts):
            raise DataError(f"params.{key}", value, "must be a whole number, not true or false")
        total = sum(v for v in counts if isinstance(v, int))
        if total > limit:
            raise DataError(f"params.{key}", value, f"must be at most {limit:,} for a study on this tool")
    sizes = {key: _count(params.get(key)) for key in SIZE_LIMITS}
    rows, features = sizes["n_samples"], sizes["n_features"] or 1
    if rows and rows * features > MAX_VALUES:
        raise DataError(
            "params", NO_VALUE, f"{rows:,} rows x {features:,} features; at most {MAX_VALUES:,} values in all"
        )
    informative = sizes["n_informative"] or 0
    clusters = (sizes["n_classes"] or 1) * (sizes["n_clusters_per_class"] or 1)
    work = (rows or 0) * informative * (informative + (sizes["n_redundant"] or 0)) + clusters * informative**2
    if work > MAX_GENERATOR_WORK:
        raise DataError(
            "params", NO_VALUE, "make_classification would need about "
            f"{work:.1e} operations (n_samples x n_informative x (n_informative + n_redundant) + clusters x "
            f"n_informative^2); at most {MAX_GENERATOR_WORK:.0e}: use fewer rows, informative features or clusters",
        )  # fmt: skip


def _count(value: Any) -> int | None:
    """A size parameter as a number (a list of counts summed), or None when it is not a whole number."""
    counts = value if isinstance(value, list) else [value]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
        return sum(counts)
    return None


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value))


def make_dataset(name: str, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Features (float64) and integer labels (a regression dataset: real targets) of dataset `name` with `params`
    over its defaults.

    Raises DataError naming the parameter for anything the generator refuses or makes unusable."""
    info = DATASETS[name]
    params = {**info.defaults, **params}
    check_params(params)
    # YAML has no tuples; circles and moons take an (outer, inner) tuple for n_samples.
    call = {k: tuple(v) if k == "n_samples" and isinstance(v, list) else v for k, v in params.items()}
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # overflow warnings: the result is checked below
            x, y = info.make(**call)
            x = np.asarray(x, dtype=np.float64)
            y = np.asarray(y).astype(np.int64 if info.task == "classification" else np.float64)
    except Exception as exc:  # the generator's own validation, whatever it raises
        raise _generator_error(info, exc) from None
    if x.ndim != 2 or len(x) < 2:
        raise DataError("params", NO_VALUE, f"the generator made {len(x)} row(s); a study needs at least 2")
    if not (np.isfinite(x).all() and np.abs(x).max() < FLOAT32_LIMIT):
        raise DataError(
            "params",
            NO_VALUE,
            "the generated features overflow float32 (is the noise or scale too large?)",
        )
    if info.task == "regression" and not (np.isfinite(y).all() and np.abs(y).max() < FLOAT32_LIMIT):
        raise DataError("params", NO_VALUE, "the generated target overflows float32 (is the noise too large?)")
    if len(np.unique(y)) < 2:
        raise DataError("params", NO_VALUE, "the generated labels have one class; a classifier needs at least 2")
    return x, y


def _generator_error(info: DatasetInfo, exc: Exception) -> DataError:
    """The generator's complaint, under the name of the parameter it is about when it says so."""
    text = str(exc).strip() or type(exc).__name__
    name = getattr(info.make, "__name__", "the generator")
    match = re.match(r"The '(\w+)' parameter of \w+ (must be .*?)\. Got (.*) instead\.?$", text, re.DOTALL)
    if match:
        return DataError(f"params.{match[1]}", _Shown(match[3]), f"{match[2]} ({name}'s rule)")
    return DataError("params", NO_VALUE, f"{name} refused them: {text}")


class _Shown(str):
    """A value to print as is (the generator already quoted it)."""

    def __repr__(self) -> str:
        return str(self)


def train_rows(train_size: int | float | None, n_rows: int, default: int | float) -> int:
    """How many rows train: an int is a count, a float a fraction; at least one row must remain to test on."""
    size = default if train_size is None else train_size
    n_train = round(size * n_rows) if isinstance(size, float) else int(size)
    if n_train >= n_rows:
        raise DataError(
            "split.train_size",
            size,
            f"leaves no test rows: the dataset has {n_rows} rows; use fewer than {n_rows} or a fraction such as 0.5",
        )
    if n_train < 1:
        raise DataError("split.train_size", size, f"leaves no training rows out of {n_rows}; use a larger fraction")
    return n_train


def validation_rows(validation_size: int | float | None, n_train: int) -> int:
    """How many of the training rows are held out for validation: an int is a count, a float a fraction."""
    if validation_size is None:
        return 0
    n_val = round(validation_size * n_train) if isinstance(validation_size, float) else int(validation_size)
    if not 1 <= n_val < n_train:
        raise DataError(
            "split.validation_size",
            validation_size,
            f"must leave at least one training and one validation row out of the {n_train} training rows; "
            f"use fewer than {n_train} rows or a fraction such as 0.2",
        )
    return n_val


@dataclass(frozen=True)
class Split:
    """Train, validation and test rows, ready for any engine: float32 features, integer labels (a regression's
    targets: floats).

    Without validation rows (`has_validation` false) early stopping and selection can only use the test rows."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    image_shape: tuple[int, int] | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None  # a file's labels, in the order of the encoded classes
    task: str = "classification"  # or "regression": float targets, n_classes 0

    @property
    def n_outputs(self) -> int:
        """Units of the output layer: one sigmoid for two classes, a softmax over more, one linear for regression."""
        return 1 if self.task == "regression" or self.n_classes == 2 else self.n_classes

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def has_validation(self) -> bool:
        return self.x_val is not None

    @property
    def shape(self) -> dict[str, int]:
        """The row counts and sizes trials.csv records."""
        return {
            "n_train": len(self.x_train),
            "n_validation": len(self.x_val) if self.has_validation else 0,
            "n_test": len(self.x_test),
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "class_names": "|".join(self.class_names) if self.class_names else "",
        }


def split_rows(
    y: np.ndarray,
    train_size: int | float | None,
    default_train: int | float,
    validation_size: int | float | None,
    shuffle: bool,
    split_seed: int,
    stratify: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of the train, validation and test parts.

    Without `shuffle` the split is by position (the first rows train), as in the reference experiment; the
    validation rows are the last `validation_size` of the training rows. With `stratify` (shuffled splits only)
    every part keeps the class proportions (scikit-learn's train_test_split)."""
    n_train = train_rows(train_size, len(y), default_train)
    training, test = divide(np.arange(len(y)), y, n_train, shuffle, split_seed, stratify)
    train, val = divide(training, y, n_train - validation_rows(validation_size, n_train), False, split_seed, stratify)
    return train, val, test


def divide(
    rows: np.ndarray, y: np.ndarray, n_first: int, shuffle: bool, seed: int, stratify: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """`rows` in two parts, the first of `n_first` rows: by position, shuffled with `seed`, or (with `stratify`)
    shuffled keeping the class proportions of `y` in both."""
    if n_first == len(rows):
        return rows, rows[:0]
    if not stratify:
        order = rows[np.random.default_rng(seed).permutation(len(rows))] if shuffle else rows
        return order[:n_first], order[n_first:]
    from sklearn.model_selection import train_test_split

    try:
        first, second = train_test_split(rows, train_size=n_first, random_state=seed, stratify=y[rows])
    except ValueError as exc:  # a class too small to be in every part
        raise DataError("split.stratify", True, f"cannot stratify: {exc}; use shuffle without stratify") from None
    return first, second


def load_split(
    name: str,
    params: dict[str, Any],
    train_size: int | float | None,
    shuffle: bool,
    split_seed: int,
    standardize: bool,
    validation_size: int | float | None = None,
    stratify: bool = False,
) -> Split:
    """Make the dataset and split it (see `split_rows`). With `standardize`, features -- and a regression target --
    are scaled by the training rows' mean and standard deviation (RMSE and MAE are then in target standard
    deviations)."""
    info = DATASETS[name]
    x, y = make_dataset(name, params)
    if stratify and info.task == "regression":
        raise DataError("split.stratify", True, "a regression target has no classes to stratify by; remove it")
    train, val, test = split_rows(y, train_size, info.train_size, validation_size, shuffle, split_seed, stratify)
    parts = [x[train], x[val], x[test]]
    if standardize:
        parts = _standardized(parts)
    regression = info.task == "regression"
    targets = [y[train], y[val], y[test]]
    if standardize and regression:
        targets = _standardized([t[:, None] for t in targets])
        targets = [t[:, 0].astype(np.float32) for t in targets]
    x_train, x_val, x_test = (p.astype(np.float32) for p in parts)
    y_train, y_val, y_test = targets
    return Split(
        x_train,
        y_train,
        x_test,
        y_test,
        n_classes=0 if regression else int(y.max()) + 1,
        image_shape=info.image_shape,
        x_val=x_val if len(val) else None,
        y_val=y_val if len(val) else None,
        task=info.task,
    )


def _standardized(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Every part scaled by the first (training) part's mean and standard deviation, column by column."""
    mean, std = parts[0].mean(axis=0), parts[0].std(axis=0)
    std[std == 0] = 1.0
    return [(p - mean) / std for p in parts]


def split_of(dataset: dict[str, Any], split_seed: int) -> Split:
    """The split of a search space's `dataset` section (as JSON data) for one split seed; made once per process."""
    return _cached_split(json.dumps(dataset, sort_keys=True), split_seed)


@lru_cache(maxsize=64)
def _cached_split(spec_json: str, split_seed: int) -> Split:
    spec = json.loads(spec_json)
    split = spec["split"]
    if spec.get("file"):
        from study.data_files import load_file_split

        return load_file_split(spec, split_seed)
    return load_split(
        spec["name"],
        spec["params"],
        split["train_size"],
        shuffle=split["shuffle"] or split["per_seed"],
        split_seed=split_seed,
        standardize=spec["standardize"],
        validation_size=split.get("validation_size"),
        stratify=split.get("stratify", False),
    )
