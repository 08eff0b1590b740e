"""Engine `keras`'s calibration: deterministic and Monte Carlo dropout probabilities into trials.csv and the bins."""

from __future__ import annotations

import math
import re
import textwrap

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_space_dict

from study import calibration, cli
from study.errors import StudyError
from study.space import parse_space

keras_engine = pytest.importorskip("study.engines.keras_engine")
keras = pytest.importorskip("keras")

DIGITS = {"name": "digits", "split": {"train_size": 200}}
FAMILIES = {
    "mlp": {"family": "mlp", "hidden_units": [16]},
    "cnn": {"family": "cnn", "filters": [4], "hidden_units": [8]},
    "rnn": {"family": "rnn", "hidden_units": [8]},
}


def untrained(family: str, axes: dict, dataset: dict = DIGITS):
    """The family's model as the engine builds it (initial weights for seed 0) and its test rows."""
    from study.engines.base import split_for

    trial = parse_space(tiny_space_dict(dataset=dataset, model=FAMILIES[family], axes=axes, seeds=1)).trials()[0]
    data = split_for(trial)
    keras.utils.set_random_seed(trial.seed)
    return keras_engine.build_model(trial, data), data.x_test[:300]


def test_a_search_with_mc_samples_writes_every_calibration_column_and_the_bins(write_space, tmp_path, capsys) -> None:
    from study.store import ResultsStore

    space = tiny_space_dict(
        dataset={"name": "circles", "split": {"train_size": 60, "validation_size": 40}},
        axes={"dropout_rate": [0.0, 0.5]},
        seeds=1,
        evaluation={"mc_samples": 20},
    )
    path = write_space(space)
    argv = ["search", str(path), "--engine", "keras", "--results-dir", str(tmp_path)]
    assert cli.main([*argv, "--dry-run"]) == 0
    assert "evaluation: Monte Carlo dropout, 20 passes at the end of training" in capsys.readouterr().out
    assert cli.main([*argv, "--quiet"]) == 0
    folder = tmp_path / "tiny"
    table = pd.read_csv(folder / "trials.csv")
    assert len(table) == 2 and set(table["status"]) == {"completed"}
    columns = table[list(calibration.columns())]
    assert np.isfinite(columns.to_numpy()).all()
    for name in columns:
        low, high = 0.0, math.log(2) if name.endswith("entropy") else 1.0
        if not name.endswith("nll"):
            assert columns[name].between(low, high).all(), name
    assert (columns.filter(like="nll") > 0).all().all()
    # Without L2, the NLL is the loss Keras reports; at dropout 0, Monte Carlo changes nothing.
    assert table["test_nll"].to_numpy() == pytest.approx(table["test_loss"].to_numpy(), rel=1e-4)
    assert table["validation_nll"].to_numpy() == pytest.approx(table["validation_loss"].to_numpy(), rel=1e-4)
    deterministic = table[table["dropout_rate"] == 0.0].iloc[0]
    for name in ("nll", "brier", "ece", "auc"):
        for split in ("test", "validation"):
            assert deterministic[f"mc_{split}_{name}"] == deterministic[f"{split}_{name}"]
    assert deterministic["mc_test_accuracy"] == pytest.approx(deterministic["test_accuracy"])

    bins = ResultsStore(folder).calibration()
    assert len(bins) == 2 * 2 * 2 * calibration.ECE_BINS  # trials x splits x (deterministic, mc) x bins
    counts = bins.groupby(["trial_key", "split", "kind"])["count"].sum()
    assert set(counts.xs("test", level="split")) == {table["n_test"].iloc[0]}
    assert set(counts.xs("validation", level="split")) == {40}


def test_calibration_columns_are_blank_where_they_do_not_apply() -> None:
    space = parse_space(tiny_space_dict(seeds=1, axes={"dropout_rate": [0.5]}))
    row = keras_engine.KerasEngine().run_all(space.trials())[0].row
    assert np.isfinite([row["test_nll"], row["test_ece"], row["test_auc"]]).all()
    assert all(pd.isna(row.get(name)) for name in calibration.columns() if name.startswith("mc_"))
    regression = parse_space(tiny_space_dict(dataset={"name": "diabetes", "split": {"train_size": 30}}, seeds=1))
    result = keras_engine.KerasEngine().run_all(regression.trials()[:1])[0]
    assert result.ok and np.isfinite(result.row["test_rmse"]), result.row["error"]
    assert all(pd.isna(result.row.get(name)) for name in calibration.columns()) and result.calibration.empty
    with pytest.raises(StudyError, match=re.escape("evaluation.mc_samples = 30: Monte Carlo dropout's calibration")):
        parse_space(tiny_space_dict(dataset={"name": "diabetes"}, evaluation={"mc_samples": 30}))


@pytest.mark.parametrize("family", ["mlp", "cnn", "rnn"])
def test_mc_with_every_dropout_rate_zero_equals_the_deterministic_probabilities_exactly(family: str) -> None:
    axes = {"batch_norm": [True]} if family != "rnn" else {}
    model, x = untrained(family, axes)
    mc = keras_engine.mc_probabilities(model, x, samples=5, seed=3)
    assert mc.shape == (len(x), 10) and mc.dtype == np.float64
    assert np.array_equal(mc, keras_engine.predict_probabilities(model, x))


def test_mc_passes_keep_batch_norm_in_inference_mode() -> None:
    model, x = untrained("mlp", {"batch_norm": [True]})
    norm = model.get_layer("batch_norm_1")
    norm.moving_mean.assign(np.full(norm.moving_mean.shape, 0.3, np.float32))
    norm.moving_variance.assign(np.full(norm.moving_variance.shape, 2.0, np.float32))
    deterministic = keras_engine.predict_probabilities(model, x)
    assert np.array_equal(keras_engine.mc_probabilities(model, x, samples=3, seed=0), deterministic)
    # The control: batch norm in training mode (batch statistics) would change the probabilities.
    mc = keras_engine.mc_dropout_model(model)
    assert not np.allclose(np.asarray(mc(x, training=True)), deterministic, atol=1e-3)


@pytest.mark.parametrize(
    "family, axis",
    [
        ("mlp", "dropout_rate"),
        ("mlp", "input_dropout"),
        ("cnn", "spatial_dropout"),
        ("cnn", "conv_dropout"),
        ("cnn", "pool_dropout"),
        ("rnn", "lstm_dropout"),
        ("rnn", "recurrent_dropout"),
    ],
)
def test_every_dropout_is_on_in_mc_passes_and_reproducible_for_a_seed(family: str, axis: str) -> None:
    model, x = untrained(family, {axis: [0.5], **({"batch_norm": [True]} if family != "rnn" else {})})
    deterministic = keras_engine.predict_probabilities(model, x)
    once = keras_engine.mc_probabilities(model, x, samples=2, seed=1)
    assert np.abs(once - deterministic).max() > 1e-3, f"{axis} is not on in the Monte Carlo passes"
    assert np.array_equal(once, keras_engine.mc_probabilities(model, x, samples=2, seed=1))
    assert not np.array_equal(once, keras_engine.mc_probabilities(model, x, samples=2, seed=2))
    assert np.allclose(once.sum(axis=1), 1.0, atol=1e-5)
    # The model itself still predicts deterministically afterwards.
    assert np.array_equal(keras_engine.predict_probabilities(model, x), deterministic)


def test_more_passes_average_towards_the_mc_mean() -> None:
    model, x = untrained("mlp", {"dropout_rate": [0.5]})
    few = keras_engine.mc_probabilities(model, x, samples=2, seed=1)
    many = keras_engine.mc_probabilities(model, x, samples=200, seed=2)
    other = keras_engine.mc_probabilities(model, x, samples=200, seed=3)
    assert np.abs(many - other).mean() < np.abs(few - other).mean() / 3  # the spread shrinks like 1/sqrt(T)


def test_a_sequential_model_without_an_input_layer_is_copied_too() -> None:
    model = keras.Sequential([keras.layers.Dense(4), keras.layers.Dropout(0.5), keras.layers.Dense(1, "sigmoid")])
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    model.predict(x, verbose=0)
    mc = keras_engine.mc_dropout_model(model)
    assert [type(layer).__name__ for layer in mc.layers] == ["Dense", "MonteCarloDropout", "Dense"]
    assert keras_engine.mc_probabilities(model, x, 3, seed=0).shape == (50, 1)


def test_the_estimate_grows_with_mc_samples() -> None:
    engine = keras_engine.KerasEngine()
    plain = parse_space(tiny_space_dict())
    mc = parse_space(tiny_space_dict(evaluation={"mc_samples": 100}))
    (without, _), (with_mc, basis) = engine.estimate_seconds(plain, 4), engine.estimate_seconds(mc, 4)
    assert with_mc > without and "Monte Carlo dropout" in basis and "100 passes" in basis


SUBCLASSED = """
import keras


class Net(keras.Model):
    def __init__(self, rate):
        super().__init__()
        self.hidden, self.drop = keras.layers.Dense(4, activation="relu"), keras.layers.Dropout(rate)
        self.out = keras.layers.Dense(1, activation="sigmoid")

    def call(self, x, training=False):
        return self.out(self.drop(self.hidden(x), training=training))


def build(hp):
    model = Net(hp.get("dropout_rate"))
    model.compile(optimizer=keras.optimizers.Adam(hp.get("learning_rate")), loss="binary_crossentropy",
                  metrics=["accuracy"])
    return model
"""

FUNCTIONAL = """
import keras


def build(hp):
    inputs = keras.Input((hp.get("n_features"),))
    x = keras.layers.Dropout(hp.get("dropout_rate"))(keras.layers.Dense(4, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile(optimizer=keras.optimizers.Adam(hp.get("learning_rate")), loss="binary_crossentropy",
                  metrics=["accuracy"])
    return model
"""


def custom(tmp_path, source: str):
    (tmp_path / "mine.py").write_text(textwrap.dedent(source))
    space = tiny_space_dict(
        model={"family": "custom", "build": "mine:build"}, evaluation={"mc_samples": 5}, seeds=1, training={"epochs": 2}
    )
    return parse_space(space, source="custom.yaml", root=tmp_path)


def test_a_custom_functional_model_gets_mc_and_a_subclassed_one_is_refused_in_one_line(tmp_path) -> None:
    space = custom(tmp_path, FUNCTIONAL)
    engine = keras_engine.KerasEngine()
    engine.check(space)
    rows = [r.row for r in engine.run_all(space.trials())]
    assert all(row["status"] == "completed" for row in rows), [row["error"] for row in rows]
    assert all(np.isfinite([row["mc_test_nll"], row["mc_test_entropy"]]).all() for row in rows)
    assert rows[1]["mc_test_nll"] != rows[1]["test_nll"]  # dropout 0.5: the passes differ

    space = custom(tmp_path, SUBCLASSED)
    with pytest.raises(StudyError) as refused:
        engine.check(space)
    message = str(refused.value)
    assert "\n" not in message and "evaluation.mc_samples = 5" in message and "functional or Sequential" in message
