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
