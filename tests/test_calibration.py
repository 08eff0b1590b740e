"""study/calibration.py against scikit-learn and against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from study import calibration

RNG = np.random.default_rng(16)


def sigmoid_outputs(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """A sigmoid head's [rows, 1] float32 probabilities (some extreme) and 0/1 labels."""
    p = RNG.uniform(0, 1, n)
    p[:4] = [0.0, 1.0, 1e-9, 1 - 1e-9]
    return p.astype(np.float32).reshape(-1, 1), RNG.integers(0, 2, n)


def softmax_outputs(n: int = 200, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    probs = RNG.dirichlet(np.full(k, 0.5), n)
    probs[0] = np.eye(k)[0]  # one row certain
    return probs, RNG.integers(0, k, n)


def test_nll_is_sklearns_log_loss_with_keras_clipping() -> None:
    p, y = sigmoid_outputs()
    clipped = np.clip(p.astype(np.float64).ravel(), 1e-7, 1 - 1e-7)
    assert calibration.nll(p, y) == pytest.approx(log_loss(y, clipped), rel=1e-9)
    probs, y = softmax_outputs()
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    expected = -np.mean(np.log(clipped[np.arange(len(y)), y]))  # clipped, not renormalized, as Keras does
    assert calibration.nll(probs, y) == pytest.approx(expected, rel=1e-12)
    inner = probs[1:]  # away from 0 and 1 the clipping does nothing: plain log loss
    assert calibration.nll(inner, y[1:]) == pytest.approx(log_loss(y[1:], inner, labels=range(4)), rel=1e-9)


def test_nll_of_a_certain_wrong_answer_is_the_clipped_log() -> None:
    assert calibration.nll(np.array([[0.0]]), np.array([1])) == pytest.approx(-math.log(1e-7))
    assert calibration.nll(np.array([[1.0, 0.0]]), np.array([1])) == pytest.approx(-math.log(1e-7))


def test_brier_is_sklearns_for_two_classes_and_the_summed_squared_error_for_more() -> None:
    p, y = sigmoid_outputs()
    assert calibration.brier(p, y) == pytest.approx(brier_score_loss(y, p.ravel().astype(np.float64)), rel=1e-9)
    softmax_two = np.column_stack([1 - p.ravel(), p.ravel()])  # the same model as a two-class softmax
    assert calibration.brier(softmax_two, y) == pytest.approx(calibration.brier(p, y), rel=1e-9)
    probs, y = softmax_outputs()
    by_hand = np.mean(np.sum(np.square(probs - np.eye(4)[y]), axis=1))
    assert calibration.brier(probs, y) == pytest.approx(by_hand, rel=1e-12)
    assert calibration.brier(probs, y) == pytest.approx(brier_score_loss(y, probs, labels=range(4)), rel=1e-9)


def test_auc_is_sklearns_for_two_classes_and_nan_otherwise() -> None:
    p, y = sigmoid_outputs()
    assert calibration.auc(p, y) == pytest.approx(roc_auc_score(y, p.ravel()), rel=1e-12)
    assert calibration.auc(p, y.reshape(-1, 1).astype(np.float32)) == calibration.auc(p, y)  # labels as Keras's
    assert math.isnan(calibration.auc(*softmax_outputs()))
    assert math.isnan(calibration.auc(p, np.ones_like(y)))  # one class only: no ROC curve


def test_ece_and_bins_by_hand() -> None:
    # sigmoid p, label: confidence max(p, 1 - p); bin floor(15 * confidence), confidence 1.0 in the last.
    p = np.array([1.0, 0.0, 0.9, 0.25, 0.55, 0.58]).reshape(-1, 1)
    y = np.array([1, 1, 1, 1, 0, 1])
    bins = calibration.reliability_bins(p, y)
    assert list(bins.columns) == list(calibration.BIN_COLUMNS) and len(bins) == 15
    full = bins[bins["count"] > 0].set_index("bin")
    assert full["count"].to_dict() == {8: 2, 11: 1, 13: 1, 14: 2}
    assert full.loc[14, "confidence"] == 1.0 and full.loc[14, "accuracy"] == 0.5  # p=0 says class 0, wrongly
    assert full.loc[13, "accuracy"] == 1.0 and full.loc[11, "accuracy"] == 0.0
    assert full.loc[8, "confidence"] == pytest.approx(0.565) and full.loc[8, "accuracy"] == 0.5
    assert bins.loc[bins["count"] == 0, ["confidence", "accuracy"]].isna().all().all()  # empty bins: NaN
    # (2 * |0.5 - 1| + |1 - 0.9| + |0 - 0.75| + 2 * |0.5 - 0.565|) / 6
    assert calibration.ece(p, y) == pytest.approx((1.0 + 0.1 + 0.75 + 0.13) / 6)


def test_ece_uses_the_top_label_of_a_softmax() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    y = np.array([0, 1, 2])
    # bins 10 (0.7, right), 12 (0.8, wrong), 6 (0.4, right)
    assert calibration.ece(probs, y) == pytest.approx((0.3 + 0.8 + 0.6) / 3)


def test_entropy_by_hand() -> None:
    assert calibration.entropy(np.array([[0.5], [1.0], [0.0]])) == pytest.approx(math.log(2) / 3)
    assert calibration.entropy(np.full((5, 4), 0.25)) == pytest.approx(math.log(4))
    p = np.array([[0.2, 0.8]])
    assert calibration.entropy(p) == pytest.approx(-(0.2 * math.log(0.2) + 0.8 * math.log(0.8)))
    assert calibration.entropy(np.array([[0.8]])) == calibration.entropy(p)


@pytest.mark.parametrize("classes", [2, 5])
def test_a_calibrated_predictor_has_a_small_ece_and_an_overconfident_one_does_not(classes: int) -> None:
    n = 50_000
    probs = RNG.dirichlet(np.ones(classes), n)
    y = (RNG.uniform(size=(n, 1)) > np.cumsum(probs, axis=1)).sum(axis=1)  # drawn from the stated probabilities
    overconfident = probs**4 / np.sum(probs**4, axis=1, keepdims=True)  # same ranking, sharper
    head = probs[:, 1:] if classes == 2 else probs  # two classes as a sigmoid's column
    sharp = overconfident[:, 1:] if classes == 2 else overconfident
    assert calibration.ece(head, y) < 0.015
    assert calibration.ece(sharp, y) > 0.08
    assert calibration.nll(sharp, y) > calibration.nll(head, y)
    assert calibration.brier(sharp, y) > calibration.brier(head, y)


def test_metrics_names_each_column_once_and_columns_lists_them() -> None:
    p, y = sigmoid_outputs()
    deterministic = calibration.metrics(p, y, "test_")
    assert list(deterministic) == ["test_nll", "test_brier", "test_ece", "test_auc"]
    mc = calibration.metrics(p, y, "mc_validation_")
    assert list(mc) == [f"mc_validation_{m}" for m in ("nll", "brier", "ece", "auc", "accuracy", "entropy")]
    assert mc["mc_validation_accuracy"] == pytest.approx(np.mean((p.ravel() > 0.5) == y))
    assert set(deterministic) | set(mc) <= set(calibration.columns())
    assert len(calibration.columns()) == len(set(calibration.columns())) == 20


def test_diverged_probabilities_score_nan_and_fill_no_bin() -> None:
    p = np.full((4, 1), np.nan)
    y = np.array([0, 1, 0, 1])
    assert all(math.isnan(v) for v in calibration.metrics(p, y, "mc_test_").values())
    assert calibration.reliability_bins(p, y)["count"].sum() == 0
