"""Dropout on: the population engine and plain Keras agree in distribution over seeds, and the test can fail.

A module of its own: its Keras reference (20 trials of plain Keras, one `train_on_batch` per epoch) is computed once
per test process, and the suite's processes split work by file.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_space_dict
from fidelity import keras_full_batch_training
from scipy import stats

from study.engines import masks, population
from study.engines.base import split_for
from study.space import parse_space

CIRCLES = {"name": "circles", "split": {"train_size": 30}}


SEEDS = 20
# Declared before running: the population engine's mean must be within these of Keras's mean, and a two-sample
# Kolmogorov-Smirnov test must not reject equality at the 1% level.
TOLERANCE = {"final_test_accuracy": 0.04, "last_epoch_train_loss": 0.04}


def _statistics(results: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"final_test_accuracy": results["test_accuracy"], "last_epoch_train_loss": results["train_loss"]}


def _dropout_space():
    return parse_space(
        tiny_space_dict(
            dataset=CIRCLES,
            axes={"dropout_rate": [0.5], "input_dropout": [0.2]},
            seeds=SEEDS,
            # The reference experiment, shortened: 100 epochs at 10x the learning rate reach the regime where the
            # network fits the circles (at lr 1e-3 it takes hundreds of epochs).
            training={"epochs": 100, "optimizer": {"learning_rate": 0.01}},
            model={"hidden_units": [100]},
        )
    )


def _population_distribution(trials) -> dict[str, np.ndarray]:
    result = population.train_population(trials, [split_for(t) for t in trials])
    history, final = result.history, result.final
    return {"test_accuracy": final[:, 3], "train_loss": history[-1, :, 0]}


def _agrees(a: np.ndarray, b: np.ndarray, tolerance: float) -> bool:
    return abs(a.mean() - b.mean()) <= tolerance and stats.ks_2samp(a, b).pvalue >= 0.01


@pytest.fixture(scope="module")
def keras_distribution() -> dict[str, np.ndarray]:
    rows = [keras_full_batch_training(t) for t in _dropout_space().trials()]
    return {
        "test_accuracy": np.array([r["test_accuracy"] for r in rows]),
        "train_loss": np.array([r["last_epoch_train_loss"] for r in rows]),
    }


def test_dropout_statistics_agree_with_keras_over_seeds(keras_distribution) -> None:
    ours = _statistics(_population_distribution(_dropout_space().trials()))
    theirs = _statistics(keras_distribution)
    for name, tolerance in TOLERANCE.items():
        assert _agrees(ours[name], theirs[name], tolerance), (
            f"{name}: population mean {ours[name].mean():.4f} vs keras {theirs[name].mean():.4f}"
        )


def test_the_statistical_test_catches_wrong_dropout_scaling(keras_distribution, monkeypatch) -> None:
    import jax.numpy as jnp

    monkeypatch.setattr(masks, "inverted_dropout_scale", jnp.ones_like)  # forgets 1/(1-rate)
    monkeypatch.setattr(population, "_EXECUTABLES", {})  # compile afresh with the broken scaling
    ours = _statistics(_population_distribution(_dropout_space().trials()))
    theirs = _statistics(keras_distribution)
    assert not all(_agrees(ours[n], theirs[n], t) for n, t in TOLERANCE.items())
