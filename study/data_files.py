"""A study's data from the user's own file: CSV, Parquet or NumPy `.npz`, read with pandas/NumPy and prepared
with scikit-learn, fitted on the training rows only.

Numeric columns are standardised; categorical ones (strings, booleans, pandas categories, or those listed under
`categorical:`) one-hot encoded, categories first seen in validation or test rows ignored. Missing feature values
are refused with the columns and counts, or imputed (`impute: median | most_frequent`). Class labels of any type
are encoded 0..k-1 in sorted order and their names kept. Every problem is a `DataError` naming the field.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from study.datasets import MAX_VALUES, NO_VALUE, DataError, Split, divide, split_rows, validation_rows

SUFFIXES = (".csv", ".parquet", ".pq", ".npz")
MAX_FILE_BYTES = 2_000_000_000
MAX_ROWS = 1_000_000


def file_digest(path: Path, field: str = "file", written: str | None = None) -> str:
    """The SHA-256 of a data file's bytes: it goes into the study's fingerprint, so a changed file is a new study.
    `written` is the path as the space file gives it (for messages)."""
    _check_path(path, field, written)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_path(path: Path, field: str, written: str | None = None) -> None:
    value = written or str(path)
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(field, value, f"must be a .csv, .parquet or .npz file (got {path.suffix or 'no suffix'})")
    if not path.exists():
        raise DataError(field, value, f"no such file: looked for {path} (a relative path starts at the search-space "
                        "file's folder)")  # fmt: skip
    if not path.is_file():
        raise DataError(field, value, "is not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise DataError(field, value, "is empty")
    if size > MAX_FILE_BYTES:
        raise DataError(field, value, f"is {size:,} bytes; at most {MAX_FILE_BYTES:,}")


def read_table(path: Path, field: str = "file", written: str | None = None) -> pd.DataFrame:
    """The file as a DataFrame (an .npz's `x` columns as x0, x1, ... and its `y` as column `y`)."""
    _check_path(path, field, written)
    value = written or str(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = _read_npz(path, value)
    except DataError:
        raise
    except Exception as exc:  # whatever the reader says about a damaged or foreign file
        raise DataError(field, value, f"cannot be read as {suffix[1:]}: {type(exc).__name__}: {exc}") from None
    if frame.empty or not len(frame.columns):
        raise DataError(field, value, "holds no rows")
    if len(frame) > MAX_ROWS or frame.size > MAX_VALUES:
        raise DataError(field, value, f"{frame.shape[0]:,} rows x {frame.shape[1]:,} columns; at most "
                        f"{MAX_ROWS:,} rows and {MAX_VALUES:,} values")  # fmt: skip
    return frame


def _read_npz(path: Path, value: str) -> pd.DataFrame:
    with np.load(path, allow_pickle=False) as npz:
        if "x" not in npz or "y" not in npz:
            raise DataError("file", value, f"an .npz needs arrays 'x' and 'y'; it has {', '.join(npz) or 'none'}")
        x, y = npz["x"], npz["y"]
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise DataError("file", value, f"x must be 2-D and y 1-D with one label per row; got {x.shape}, {y.shape}")
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
    frame["y"] = y
    return frame


def columns_of(frame: pd.DataFrame, spec: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The feature columns (all but the target unless `features` names them) and which of them are categorical."""
    target = spec.get("target") or ("y" if "y" in frame.columns else None)
    available = [str(c) for c in frame.columns]
    if target is None or target not in frame.columns:
        shown = target if target is not None else "(none)"
        raise DataError("target", shown, f"is not a column of the file; columns: {_listed(available)}")
    features = spec.get("features") or [c for c in available if c != target]
    unknown = [c for c in features if c not in frame.columns]
    if unknown:
        raise DataError("features", unknown, f"not columns of the file; columns: {_listed(available)}")
    if target in features:
        raise DataError("features", target, "the target cannot also be a feature")
    listed = spec.get("categorical") or []
    unknown = [c for c in listed if c not in features]
    if unknown:
        raise DataError("categorical", unknown, f"not feature columns; features: {_listed(features)}")
    categorical = [
        c
        for c in features
        if c in listed or not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])
    ]
    return features, categorical


def _listed(names: list[str], most: int = 20) -> str:
    return ", ".join(names[:most]) + (f", ... ({len(names)} in all)" if len(names) > most else "")


def _missing(frame: pd.DataFrame, columns: list[str], impute: str | None, field: str) -> None:
    counts = frame[columns].isna().sum()
    counts = counts[counts > 0]
    if len(counts) and impute is None:
        found = ", ".join(f"{c} ({n})" for c, n in counts.items())
        raise DataError(field, NO_VALUE, f"missing values in {found}: fill them, or set dataset.impute: median (or "
                        "most_frequent) to impute them from the training rows")  # fmt: skip


MAX_CLASSES_INFERRED = 20  # an integer target with more distinct values than this is taken as a quantity


def infer_task(target: pd.Series) -> str:
    """Regression for a numeric target with fractional values or many distinct values; classification otherwise."""
    values = target.dropna()
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "classification"
    whole = bool(np.all(np.mod(values.to_numpy(float), 1) == 0))
    return "classification" if whole and values.nunique() <= MAX_CLASSES_INFERRED else "regression"


def _targets(target: pd.Series, field: str) -> np.ndarray:
    """A regression target as float64: numeric, finite, without missing values."""
    if target.isna().any():
        raise DataError(field, NO_VALUE, f"the target has {int(target.isna().sum())} missing value(s): drop those rows")
    if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
        example = target.iloc[0]
        raise DataError(field, NO_VALUE, f"a regression target must be numeric; it holds {example!r}: use "
                        "task: classification, or another column")  # fmt: skip
    y = target.to_numpy(np.float64)
    if not np.isfinite(y).all():
        raise DataError(field, NO_VALUE, "the target holds infinite values")
    return y


def _labels(target: pd.Series, field: str) -> tuple[np.ndarray, tuple[str, ...]]:
    if target.isna().any():
        raise DataError(field, NO_VALUE, f"the target has {int(target.isna().sum())} missing value(s): drop those rows")
    classes, y = np.unique(target.astype(str) if target.dtype == object else target, return_inverse=True)
    if len(classes) < 2:
        raise DataError(field, NO_VALUE, f"the target has one class ({classes[0]!s}); a classifier needs at least 2")
    return y.astype(np.int64), tuple(str(c) for c in classes)


def _transformer(numeric: list[str], categorical: list[str], impute: str | None):
    """Standardise numeric columns, one-hot encode categorical ones (after imputing, if asked)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    def steps(*last):
        return make_pipeline(*([SimpleImputer(strategy=impute)] if impute else []), *last)

    parts = []
    if numeric:
        parts.append(("numeric", steps(StandardScaler()), numeric))
    if categorical:
        encode = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32)
        imputer = [SimpleImputer(strategy="most_frequent")] if impute else []
        parts.append(("categorical", make_pipeline(*imputer, encode), categorical))
    return ColumnTransformer(parts)


def load_file_split(spec: dict[str, Any], split_seed: int) -> Split:
    """The split of a file dataset: `spec` is the dataset section as JSON data with `path` (and `test_path`)
    resolved against the search-space file (see `DatasetSpec.source`)."""
    frame = read_table(Path(spec["path"]), "file", spec["file"])
    features, categorical = columns_of(frame, spec)
    target = spec.get("target") or "y"
    impute = spec.get("impute")
    _missing(frame, features, impute, "file")
    split = spec["split"]
    task = spec.get("task") or infer_task(frame[target])
    if task == "regression" and split.get("stratify"):
        raise DataError("split.stratify", True, "a regression target has no classes to stratify by; remove it")
    encode = (lambda t, f: (_targets(t, f), None)) if task == "regression" else _labels
    if spec.get("test_path"):
        test = read_table(Path(spec["test_path"]), "test_file", spec["test_file"])
        absent = [c for c in [*features, target] if c not in test.columns]
        if absent:
            raise DataError("test_file", absent, "columns of the training file missing from the test file")
        _missing(test, features, impute, "test_file")
        y_all, names = encode(pd.concat([frame[target], test[target]], ignore_index=True), "target")
        y, y_test = y_all[: len(frame)], y_all[len(frame) :]
        n_val = validation_rows(split.get("validation_size"), len(frame))
        train, val = divide(np.arange(len(frame)), y, len(frame) - n_val, True, split_seed, split.get("stratify"))
        x_test_frame = test[features]
    else:
        y, names = encode(frame[target], "target")
        shuffle = split["shuffle"] or split["per_seed"]
        train, val, rows_test = split_rows(
            y, split.get("train_size"), 0.5, split.get("validation_size"), shuffle, split_seed, split.get("stratify")
        )
        x_test_frame, y_test = frame[features].iloc[rows_test], y[rows_test]
    x = frame[features]
    numeric = [c for c in features if c not in categorical]
    transformer = _transformer(numeric, categorical, impute).fit(x.iloc[train])
    as_float = lambda part: np.asarray(transformer.transform(part), dtype=np.float32)  # noqa: E731
    x_train, x_test = as_float(x.iloc[train]), as_float(x_test_frame)
    if not np.isfinite(x_train).all() or not np.isfinite(x_test).all():
        raise DataError("file", NO_VALUE, "features hold infinite values (or overflow float32)")
    return Split(
        x_train,
        y[train],
        x_test,
        y_test,
        n_classes=0 if names is None else len(names),
        x_val=as_float(x.iloc[val]) if len(val) else None,
        y_val=y[val] if len(val) else None,
        class_names=names,
        task=task,
    )
