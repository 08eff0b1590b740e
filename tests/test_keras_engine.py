"""Engine `keras`: real models train, the same seed repeats exactly, failures are reported."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_space_dict

from study.space import parse_space

keras_engine = pytest.importorskip("study.engines.keras_engine")


def run(space_dict: dict, n: int | None = None):
    space = parse_space(space_dict)
    return keras_engine.KerasEngine().run_all(space.trials()[:n])


def test_a_tiny_study_trains_with_sane_metrics() -> None:
    results = run(tiny_space_dict(), n=2)
    for result in results:
        row = result.row
        assert row["status"] == "completed", row["error"]
        assert row["epochs_run"] == 5 and len(result.curves) == 5
        for metric in ("train_accuracy", "test_accuracy", "best_test_accuracy"):
            assert 0.0 <= row[metric] <= 1.0
        assert np.isfinite([row["train_loss"], row["test_loss"]]).all()
        assert row["best_test_accuracy"] == pytest.approx(result.curves["test_accuracy"].max())
        assert row["model"] == "mlp 2-8-1 relu" and row["n_train"] == 30 and row["n_test"] == 70


def test_the_same_seed_gives_the_same_result_twice() -> None:
    first, second = run(tiny_space_dict(), n=1)[0], run(tiny_space_dict(), n=1)[0]
    for metric in ("train_loss", "test_loss", "test_accuracy"):
        assert first.row[metric] == second.row[metric]
    assert np.array_equal(first.curves["train_loss"], second.curves["train_loss"])


def test_multiclass_data_uses_a_softmax_output() -> None:
    space = tiny_space_dict(dataset={"name": "digits", "split": {"train_size": 200}}, seeds=1)
    row = run(space, n=1)[0].row
    assert row["status"] == "completed", row["error"]
    assert row["n_classes"] == 10 and row["model"] == "mlp 64-8-10 relu"
    assert 0.0 <= row["test_accuracy"] <= 1.0


def test_early_stopping_stops_and_restores_the_best_weights() -> None:
    space = tiny_space_dict(
        training={"epochs": 60, "early_stopping": {"patience": 2, "monitor": "val_loss"}},
        model={"hidden_units": [64]},
        axes={"early_stopping": [True]},
        seeds=1,
    )
    result = run(space, n=1)[0]
    row, curves = result.row, result.curves
    assert row["epochs_run"] < 60
    best = curves["test_loss"].idxmin()
    # Keras restores the weights of the epoch with the lowest validation loss, so the final test loss is it.
    assert row["test_loss"] == pytest.approx(curves.loc[best, "test_loss"], rel=1e-4)


def test_a_failing_trial_is_returned_as_failed_not_raised(monkeypatch) -> None:
    def broken(trial, data):
        raise RuntimeError("simulated failure inside the trial")

    monkeypatch.setattr(keras_engine, "train", broken)
    result = run(tiny_space_dict(), n=1)[0]
    assert result.row["status"] == "failed"
    assert result.row["error"] == "RuntimeError: simulated failure inside the trial"


def test_keras_tuners_tensorboard_import_is_satisfied() -> None:
    # keras-tuner 1.4.8 imports this inside every trial; without it every trial fails silently.
    from tensorboard.plugins.hparams import api  # noqa: F401


@pytest.mark.parametrize(
    "model, axes, description",
    [
        (
            {"family": "cnn", "filters": [4, 8], "hidden_units": [16]},
            {"spatial_dropout": [0.2], "conv_dropout": [0.1], "pool_dropout": [0.1], "batch_norm": [True]},
            "cnn conv4-8 dense16-10 relu",
        ),
        (
            {"family": "rnn", "hidden_units": [8]},
            {"lstm_dropout": [0.2], "recurrent_dropout": [0.2], "dropout_rate": [0.3]},
            "rnn lstm8 dense10 tanh",
        ),
    ],
    ids=["cnn", "rnn"],
)
def test_cnn_and_rnn_families_train_real_keras_layers(model: dict, axes: dict, description: str) -> None:
    space = tiny_space_dict(dataset={"name": "digits", "split": {"train_size": 200}}, model=model, axes=axes, seeds=1)
    result = run(space, n=1)[0]
    row = result.row
    assert row["status"] == "completed", row["error"]
    assert row["model"] == description and row["n_classes"] == 10
    assert row["epochs_run"] == 5 and 0.0 <= row["test_accuracy"] <= 1.0
    for axis, values in axes.items():
        assert row[axis] == values[0]
    assert row["max_norm"] is None and row["l2"] == 0.0


def test_keras_model_layers_follow_the_family() -> None:
    import keras

    from study.engines.base import split_for

    cnn = parse_space(
        tiny_space_dict(
            dataset={"name": "digits"},
            model={"family": "cnn", "filters": [4, 8], "hidden_units": [16]},
            axes={"max_norm": [2.0]},
        )
    ).trials()[0]
    model = keras_engine.build_model(cnn, split_for(cnn))
    kinds = [type(layer).__name__ for layer in model.layers]
    block = ["Conv2D", "SpatialDropout2D", "Dropout", "MaxPooling2D", "Dropout"]
    assert kinds == ["InputLayer", "Dropout", "Reshape", *block, *block, "Flatten", "Dense", "Dropout", "Dense"]
    assert model.get_layer("conv_1").kernel_constraint.axis == [0, 1, 2]
    assert model.get_layer("output").kernel_constraint is None
    keras.backend.clear_session()

    rnn = parse_space(
        tiny_space_dict(
            dataset={"name": "digits"},
            model={"family": "rnn", "hidden_units": [8]},
            axes={"recurrent_dropout": [0.3], "l2": [1e-3]},
        )
    ).trials()[0]
    lstm = keras_engine.build_model(rnn, split_for(rnn)).get_layer("lstm")
    assert lstm.recurrent_dropout == 0.3 and lstm.dropout == 0.0
    assert lstm.cell.recurrent_regularizer is not None and lstm.cell.kernel_regularizer is not None
    keras.backend.clear_session()
