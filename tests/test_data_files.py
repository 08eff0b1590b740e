"""Data from the user's own file: CSV, Parquet and .npz, prepared on the training rows only, and every bad file
refused with one line naming the field."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import PYTHON, ROOT, tiny_space_dict

from study.engines.base import split_for
from study.errors import StudyError
from study.space import load_space, parse_space


def table(rows: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "size": rng.normal(10, 3, rows),
            "count": rng.integers(0, 5, rows),
            "colour": rng.choice(["red", "green", "blue"], rows),
            "flag": rng.random(rows) < 0.5,
            "label": np.where(np.arange(rows) % 3 == 0, "yes", "no"),
        }
    )


def space_on(path: Path, **dataset) -> dict:
    return tiny_space_dict(dataset={"file": path.name, "target": "label", "split": {"train_size": 40}, **dataset})


def load(tmp_path: Path, frame: pd.DataFrame, name: str = "data.csv", **dataset):
    path = tmp_path / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    elif name.endswith(".parquet"):
        frame.to_parquet(path)
    space = parse_space(space_on(path, **dataset), root=tmp_path)
    return space, split_for(space.first_trial())


def test_the_shipped_csv_example_encodes_categories_and_keeps_its_class_names() -> None:
    space = load_space(ROOT / "search_spaces" / "csv_example.yaml")
    data = split_for(space.first_trial())
    assert data.class_names == ("no", "yes")
    assert data.shape == {"n_train": 400, "n_validation": 100, "n_test": 300, "n_features": 15, "n_classes": 2,
                          "class_names": "no|yes"}  # fmt: skip
    assert space.first_trial().config_key  # the file's digest enters the key


def test_numeric_columns_are_standardised_on_the_training_rows_only(tmp_path) -> None:
    _, data = load(tmp_path, table())
    size = data.x_train[:, 0]
    assert abs(size.mean()) < 1e-5 and abs(size.std() - 1) < 1e-4  # fitted on these rows
    assert abs(data.x_test[:, 0].mean()) > 1e-3  # the test rows are only transformed
    # colour one-hot (3) + flag one-hot (2) + the two numeric columns
    assert data.n_features == 7 and set(np.unique(data.x_train[:, 2:])) <= {0.0, 1.0}


def test_csv_parquet_and_npz_give_the_same_data(tmp_path) -> None:
    frame = table()[["size", "count", "label"]].assign(label=lambda f: (f["label"] == "yes").astype(int))
    _, csv = load(tmp_path, frame)
    _, parquet = load(tmp_path, frame, "data.parquet")
    np.savez(tmp_path / "data.npz", x=frame[["size", "count"]].to_numpy(), y=frame["label"].to_numpy())
    npz = split_for(parse_space(space_on(tmp_path / "data.npz", target=None), root=tmp_path).first_trial())
    for other in (parquet, npz):
        np.testing.assert_allclose(other.x_train, csv.x_train, rtol=1e-6)
        np.testing.assert_array_equal(other.y_test, csv.y_test)


def test_a_changed_file_is_a_different_study(tmp_path) -> None:
    first, _ = load(tmp_path, table())
    second, _ = load(tmp_path, table().assign(size=lambda f: f["size"] + 1))
    assert first.fingerprint() != second.fingerprint()
    assert first.first_trial().key != second.first_trial().key


def test_a_test_file_holds_the_test_rows_and_unknown_categories_are_ignored(tmp_path) -> None:
    frame = table()
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.head(10).assign(colour="purple").to_csv(tmp_path / "test.csv", index=False)
    dataset = {"file": "train.csv", "test_file": "test.csv", "target": "label", "split": {"validation_size": 10}}
    data = split_for(parse_space(tiny_space_dict(dataset=dataset), root=tmp_path).first_trial())
    assert data.shape["n_train"] == 50 and data.shape["n_validation"] == 10 and data.shape["n_test"] == 10
    assert (data.x_test[:, 2:5] == 0).all()  # purple is no known colour


def test_missing_values_are_imputed_from_the_training_rows_when_asked(tmp_path) -> None:
    frame = table()
    frame.loc[[1, 2], "size"] = np.nan
    _, data = load(tmp_path, frame, impute="median")
    assert np.isfinite(data.x_train).all()


def test_a_stratified_split_keeps_the_class_proportions(tmp_path) -> None:
    _, data = load(tmp_path, table(90), split={"train_size": 60, "validation_size": 30, "stratify": True})
    for part in (data.y_train, data.y_val, data.y_test):
        assert part.mean() == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ({"file": "nope.csv"}, "dataset.file = 'nope.csv': no such file"),
        ({"file": "empty.csv"}, "dataset.file = 'empty.csv': is empty"),
        ({"file": "junk.parquet"}, "cannot be read as parquet"),
        ({"file": "data.txt"}, "must be a .csv, .parquet or .npz file"),
        ({"target": "labl"}, "dataset.target = 'labl': is not a column of the file; columns: size, count"),
        ({"features": ["size", "weight"]}, "dataset.features = ['weight']: not columns of the file"),
        ({"target": "flag", "features": ["size"], "file": "one_class.csv"}, "the target has one class"),
        ({"file": "holes.csv"}, "missing values in size (2): fill them, or set dataset.impute: median"),
        ({"name": "circles"}, "dataset needs either `name`"),
        ({"params": {"noise": 0.1}}, "dataset.params and redraw_data apply to built-in datasets"),
        ({"split": {"train_size": 40, "stratify": True, "shuffle": False}}, "stratify needs shuffle: true"),
    ],
    ids=["missing", "empty", "unreadable", "suffix", "target", "feature", "one-class", "holes", "both", "params",
         "stratify"],
)  # fmt: skip
def test_a_bad_data_file_gets_one_line_naming_the_field(tmp_path, dataset: dict, expected: str) -> None:
    table().to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "junk.parquet").write_bytes(b"not a parquet file at all")
    (tmp_path / "data.txt").write_text("x")
    table().assign(flag=True).to_csv(tmp_path / "one_class.csv", index=False)
    table().assign(size=lambda f: f["size"].where(f.index > 1)).to_csv(tmp_path / "holes.csv", index=False)
    space = tiny_space_dict(dataset={"file": "data.csv", "target": "label", "split": {"train_size": 40}, **dataset})
    with pytest.raises(StudyError) as info:
        parse_space(space, root=tmp_path)
    assert expected in str(info.value)


def test_a_cnn_on_a_table_and_a_bad_file_from_the_command_line_exit_2_without_traceback(tmp_path) -> None:
    table().to_csv(tmp_path / "data.csv", index=False)
    path = tmp_path / "space.yaml"
    path.write_text("name: t\ndataset: {file: data.csv, target: colour}\nmodel: {family: cnn}\ntraining: {epochs: 1}\n"
                    "seeds: 1\n")  # fmt: skip
    proc = subprocess.run([PYTHON, "-m", "study", "search", str(path), "--dry-run"], capture_output=True, text=True,
                          cwd=ROOT)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "model family cnn needs an image dataset" in proc.stderr and "data.csv has none" in proc.stderr


def test_a_real_valued_target_is_a_regression_and_an_integer_label_a_class(tmp_path) -> None:
    frame = table().assign(price=lambda f: 3.0 * f["size"] + np.random.default_rng(1).normal(0, 1, len(f)))
    _, data = load(tmp_path, frame.drop(columns="label"), target="price")
    assert data.task == "regression" and data.n_outputs == 1 and data.y_train.dtype.kind == "f"
    _, data = load(tmp_path, frame.drop(columns="label"), target="count")  # 0..4: five classes
    assert data.task == "classification" and data.n_classes == 5
    _, data = load(tmp_path, frame.drop(columns="label"), target="count", task="regression")
    assert data.task == "regression"


@pytest.mark.parametrize(
    ("dataset", "training", "expected"),
    [
        ({"target": "label", "task": "regression"}, {}, "a regression target must be numeric; it holds 'yes'"),
        (
            {"target": "size", "split": {"train_size": 40, "stratify": True}},
            {},
            "a regression target has no classes to stratify by",
        ),
        (
            {"target": "size"},
            {"early_stopping": {"monitor": "val_accuracy"}},
            "training.early_stopping.monitor = 'val_accuracy': a regression has no accuracy; use val_loss",
        ),
    ],
    ids=["text-target", "stratify", "monitor"],
)
def test_a_regression_that_cannot_be_gets_one_line(tmp_path, dataset: dict, training: dict, expected: str) -> None:
    table().to_csv(tmp_path / "data.csv", index=False)
    space = tiny_space_dict(
        dataset={"file": "data.csv", "split": {"train_size": 40}, **dataset},
        training={"epochs": 2, "batch_size": 32, **training},
    )
    with pytest.raises(StudyError, match=re.escape(expected)):
        parse_space(space, root=tmp_path)


def test_a_built_in_regression_dataset_refuses_another_task() -> None:
    with pytest.raises(StudyError, match="diabetes is a regression dataset"):
        parse_space(tiny_space_dict(dataset={"name": "diabetes", "task": "classification"}))
