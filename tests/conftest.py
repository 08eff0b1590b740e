"""Shared fixtures: tiny search spaces and fabricated results (no training) for store and report tests."""

from __future__ import annotations

import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from study.schema import History, Predictions, TrialResult, completed_result
from study.space import SearchSpace, parse_space

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def tiny_space_dict(**overrides: Any) -> dict[str, Any]:
    """A few-second study on the reference data: 2 dropout rates x 2 seeds, 5 epochs, 8 hidden units."""
    space = {
        "name": "tiny",
        "dataset": {"name": "circles", "split": {"train_size": 30}},
        "model": {"family": "mlp", "hidden_units": [8]},
        "training": {"epochs": 5, "batch_size": 32},
        "axes": {"dropout_rate": [0.0, 0.5]},
        "seeds": 2,
    }
    space.update(overrides)
    return space


@pytest.fixture
def tiny_space() -> SearchSpace:
    return parse_space(tiny_space_dict())


@pytest.fixture
def write_space(tmp_path: Path):
    """Write a search-space mapping (or raw text) to a YAML file and return its path."""

    def write(content: dict[str, Any] | str, name: str = "space.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
        return path

    return write


def fake_result(
    trial,
    test_accuracy: float = 0.8,
    epochs: int = 5,
    engine: str = "fake",
    engine_version: str = "fake 1.0",
    predictions: Predictions | None = None,
) -> TrialResult:
    """A completed result with made-up but well-formed numbers, for tests that need no training; with
    `predictions` (`fake_predictions`) also its calibration columns and reliability bins."""
    rng = np.random.default_rng(zlib.crc32(trial.key.encode()))
    ramp = np.linspace(0.5, 1.0, epochs)
    history = History(
        train_loss=1 - ramp,
        train_accuracy=ramp,
        test_loss=1 - ramp * 0.8,
        test_accuracy=np.clip(ramp * test_accuracy + rng.normal(0, 0.01, epochs), 0, 1),
    )
    final = {"train_accuracy": 1.0, "train_loss": 0.01, "test_accuracy": test_accuracy, "test_loss": 0.5}
    shape = {"n_train": 30, "n_validation": 0, "n_test": 70, "n_features": 2, "n_classes": 2}
    if trial.space.dataset.split.validation_size:  # validation accuracy tracks test accuracy, with its own noise
        history.validation_loss, history.validation_accuracy = history.test_loss, history.test_accuracy + 0.01
        final.update(validation_accuracy=test_accuracy + rng.normal(0, 0.005), validation_loss=0.5)
        shape["n_validation"] = trial.space.dataset.split.validation_size
    return completed_result(
        trial, engine, history, final, shape, wall_time_s=0.01, engine_version=engine_version, predictions=predictions
    )


def fake_predictions(
    trial, accuracy: float = 0.8, confidence: float = 0.95, mc_confidence: float | None = None, rows: int = 70
) -> Predictions:
    """Made-up sigmoid outputs with a known answer: `accuracy` of the rows predicted right, each predicted with a
    probability of about `confidence` (the same rows with `mc_confidence` for the MC-dropout average; None: no MC
    passes), on the test split and, where the space has one, the validation split."""
    rng = np.random.default_rng(zlib.crc32(trial.key.encode()) + 1)
    sizes = {"test": rows}
    if trial.space.dataset.split.validation_size:
        sizes["validation"] = trial.space.dataset.split.validation_size
    labels, deterministic, mc = {}, {}, {}
    for split, n in sizes.items():
        y = rng.integers(0, 2, n)
        predicted = np.where(np.arange(n) < round(accuracy * n), y, 1 - y)
        jitter = rng.normal(0, 0.01, n)
        sure = {kind: np.clip(c + jitter, 0.5, 0.999) for kind, c in (("plain", confidence), ("mc", mc_confidence))
                if c is not None}  # fmt: skip
        probs = {kind: np.where(predicted == 1, p, 1 - p)[:, None] for kind, p in sure.items()}
        labels[split], deterministic[split] = y, probs["plain"]
        if "mc" in probs:
            mc[split] = probs["mc"]
    return Predictions(labels, deterministic, mc or None)
