"""The population engine against plain Keras.

Exact where no randomness is involved (dropout off, same initial weights, same data order); statistical where it
is (dropout on: distributions over seeds); and a trial's result never depends on the trials that share its batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import tiny_space_dict
from fidelity import keras_order, keras_reference, keras_weights, metric_names, stacked_from_keras
from scipy import stats

from study.engines import population
from study.engines.base import split_for
from study.engines.training import EXTRAS
from study.space import parse_space

# Float32 rounding accumulates over epochs; measured differences are ~1e-7 after 40 epochs.
EXACT_ATOL = 1e-5

MOONS = {"name": "moons", "params": {"n_samples": 200, "noise": 0.3}, "split": {"train_size": 100}}
CIRCLES = {"name": "circles", "split": {"train_size": 30}}


def compare_exactly(space_dict: dict) -> int:
    trial = parse_space(space_dict).trials()[0]
    initial, history, final, model = keras_reference(trial)
    ours = population.train_population(
        [trial], [split_for(trial)], initial=stacked_from_keras(model, initial), shuffle=False
    )
    p_hist, epochs_run, p_final, p_flat = ours.history, ours.epochs_run, ours.final, ours.params
    assert epochs_run[0] == len(history), "stopped at a different epoch"
    pairs = zip(keras_weights(model), keras_order(p_flat, model), strict=True)
    for i, (keras_w, pop_w) in enumerate(pairs):
        np.testing.assert_allclose(pop_w, keras_w, atol=EXACT_ATOL, err_msg=f"weight {i} (Keras layer order)")
    np.testing.assert_allclose(p_hist[:, 0, :], history, atol=EXACT_ATOL, err_msg="per-epoch history")
    data = split_for(trial)
    keras_final = [final.get(m, np.nan) for m in metric_names(data)]
    np.testing.assert_allclose(p_final[0], keras_final, atol=EXACT_ATOL, err_msg="final evaluation")
    if data.task == "regression":
        keras_extras = [final.get(m, np.nan) for m in EXTRAS]
        np.testing.assert_allclose(ours.extras[0], keras_extras, atol=EXACT_ATOL, err_msg="final MAE and R2")
    return int(epochs_run[0])


@pytest.mark.parametrize("data", [CIRCLES, MOONS], ids=["one-minibatch", "four-minibatches"])
@pytest.mark.parametrize(
    "axes",
    [
        {},
        {"l2": [1e-3]},
        {"max_norm": [0.5]},
        {"batch_norm": [True]},
        {"l2": [1e-3], "max_norm": [0.5], "batch_norm": [True]},
        {"learning_rate": [0.01], "batch_size": [16], "epochs": [12]},
    ],
    ids=["none", "l2", "max_norm", "batch_norm", "combined", "training-axes"],
)
def test_matches_keras_exactly_without_dropout(axes: dict, data: dict) -> None:
    compare_exactly(
        tiny_space_dict(dataset=data, axes=axes, seeds=[3], training={"epochs": 25}, model={"hidden_units": [16, 8]})
    )


@pytest.mark.parametrize(
    "early_stopping",
    [
        {"monitor": "val_loss", "patience": 3},
        {"monitor": "val_accuracy", "patience": 2, "min_delta": 0.01},
        {"monitor": "val_loss", "patience": 3, "restore_best_weights": False},
    ],
    ids=["val_loss-restore", "val_accuracy-min_delta", "no-restore"],
)
def test_matches_keras_early_stopping_epoch_for_epoch(early_stopping: dict) -> None:
    space = tiny_space_dict(
        dataset={"name": "moons", "params": {"n_samples": 120, "noise": 0.45}, "split": {"train_size": 20}},
        axes={"early_stopping": [True]},
        seeds=[5],
        training={"epochs": 200, "early_stopping": early_stopping},
        model={"hidden_units": [128]},
    )
    assert compare_exactly(space) < 200, "the case should stop early to test stopping"


@pytest.mark.parametrize(
    "axes", [{}, {"l2": [1e-3], "batch_norm": [True], "max_norm": [0.5]}], ids=["plain", "regularised"]
)
def test_a_regression_matches_keras_exactly(axes: dict) -> None:
    # Mean squared error, a linear output, RMSE per epoch, and RMSE, MAE and R2 at the end, with validation rows.
    dataset = {"name": "friedman1", "params": {"n_samples": 160}, "standardize": True,
               "split": {"train_size": 100, "validation_size": 20}}  # fmt: skip
    training, model = {"epochs": 15, "batch_size": 32}, {"hidden_units": [16, 8]}
    compare_exactly(tiny_space_dict(dataset=dataset, axes=axes, seeds=[2], training=training, model=model))


def test_early_stopping_watches_the_validation_rows_as_keras_does() -> None:
    split = {"train_size": 80, "validation_size": 0.5}
    space = tiny_space_dict(
        dataset={"name": "moons", "params": {"n_samples": 200, "noise": 0.45}, "split": split},
        axes={"early_stopping": [True]},
        seeds=[5],
        training={"epochs": 200, "early_stopping": {"monitor": "val_loss", "patience": 3}},
        model={"hidden_units": [128]},
    )
    assert compare_exactly(space) < 200, "the case should stop early to test stopping"


def test_matches_keras_exactly_for_softmax_outputs() -> None:
    compare_exactly(
        tiny_space_dict(
            dataset={"name": "digits", "split": {"train_size": 100}},
            axes={"l2": [1e-4]},
            seeds=[1],
            training={"epochs": 10},
            model={"hidden_units": [16]},
        )
    )


DIGITS = {"name": "digits", "split": {"train_size": 100}}


@pytest.mark.parametrize(
    "axes",
    [{}, {"l2": [1e-3], "max_norm": [0.5]}, {"batch_norm": [True]}],
    ids=["none", "l2-max_norm", "batch_norm"],
)
def test_cnn_matches_keras_exactly_without_dropout(axes: dict) -> None:
    compare_exactly(
        tiny_space_dict(
            dataset=DIGITS,
            axes=axes,
            seeds=[2],
            training={"epochs": 6},
            model={"family": "cnn", "filters": [4, 8], "hidden_units": [16]},
        )
    )


@pytest.mark.parametrize("axes", [{}, {"l2": [1e-3], "max_norm": [0.5]}], ids=["none", "l2-max_norm"])
def test_rnn_matches_keras_exactly_without_dropout(axes: dict) -> None:
    compare_exactly(
        tiny_space_dict(
            dataset=DIGITS, axes=axes, seeds=[2], training={"epochs": 6}, model={"family": "rnn", "hidden_units": [8]}
        )
    )


def test_a_trials_result_does_not_depend_on_its_batch() -> None:
    space = parse_space(
        tiny_space_dict(
            dataset=MOONS,
            axes={"dropout_rate": [0.0, 0.3, 0.6, 0.8], "input_dropout": [0.0, 0.2], "max_norm": [None, 1.0]},
            seeds=4,
            training={"epochs": 15},
            model={"hidden_units": [32]},
        )
    )
    trials = space.trials()
    assert len(trials) == 64
    target = 37
    alone = population.train_population([trials[target]], [split_for(trials[target])])
    together = population.train_population(trials, [split_for(t) for t in trials])
    np.testing.assert_allclose(together.history[:, target], alone.history[:, 0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(together.final[target], alone.final[0], rtol=1e-6, atol=1e-7)


def test_a_trials_result_does_not_depend_on_the_number_of_devices() -> None:
    import jax
    import jax.numpy as jnp

    from study.engines import networks, training, xla

    if len(xla.devices()) < 2:
        pytest.skip("one device on this machine: nothing to split over")
    space = parse_space(
        tiny_space_dict(dataset=MOONS, axes={"dropout_rate": [0.0, 0.5], "batch_norm": [True]}, seeds=2,
                        training={"epochs": 10}, model={"hidden_units": [16]})
    )  # fmt: skip
    trials = space.trials()
    splits = [split_for(t) for t in trials]
    arch = population.architecture(trials[0], splits[0])
    net = networks.network(arch)
    settings = population._settings(trials, splits, net.dropout_streams, shuffle=True)
    args = (
        [jnp.asarray(p) for p in net.initial([t.seed for t in trials])],
        population._data(splits, settings.shared_data),
        jnp.asarray(np.array([t.seed for t in trials], np.uint32)),
        jax.tree.map(jnp.asarray, population.hyperparameters(trials, net.dropout_streams)),
    )
    one = training.compile_training(arch, settings, xla.devices()[:1])(*args)
    two = training.compile_training(arch, settings, xla.devices()[:2])(*args)
    for name, a, b in zip(("history", "epochs run", "final"), one[:3], two[:3], strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-7, err_msg=name)


# --- dropout on, CNN and RNN: the distribution of a sample's training-mode loss over dropout masks -------------

DRAWS = 4000
ONE_ROW = {"name": "digits", "split": {"train_size": 1}}


def _one_row_space(family: str, axes: dict, seeds: int = DRAWS):
    model = {"family": family, "hidden_units": [16], **({"filters": [4, 8]} if family == "cnn" else {})}
    return parse_space(
        tiny_space_dict(dataset=ONE_ROW, axes=axes, seeds=seeds, training={"epochs": 1, "batch_size": 1}, model=model)
    )


def _keras_mask_losses(family: str, axes: dict) -> tuple[np.ndarray, list[np.ndarray], object]:
    """Keras: one model, called DRAWS times in training mode on the one training row (new masks each call)."""
    import keras

    from study.engines import keras_engine

    trial = _one_row_space(family, axes, seeds=1).trials()[0]
    data = split_for(trial)
    keras.utils.set_random_seed(0)
    model = keras_engine.build_model(trial, data)
    # Masks are drawn per sample, so DRAWS copies of the row in one call are DRAWS independent draws.
    probs = model(np.repeat(data.x_train[:1], DRAWS, axis=0), training=True).numpy()
    losses = -np.log(np.clip(probs[:, data.y_train[0]], 1e-7, 1.0))
    return losses, keras_weights(model), model


def _population_mask_losses(family: str, axes: dict, weights: list[np.ndarray], model) -> np.ndarray:
    """The population engine: DRAWS trials (seeds) with the same weights; epoch 1's train loss is the loss of the
    one row under that trial's masks, before any update."""
    trials = _one_row_space(family, axes).trials()
    data = split_for(trials[0])
    one_row = dataclasses.replace(data, x_test=data.x_test[:2], y_test=data.y_test[:2])  # skip a large evaluation
    initial = [np.repeat(w, len(trials), axis=0) for w in stacked_from_keras(model, weights)]
    return population.train_population(trials, [one_row] * len(trials), initial=initial).history[0, :, 0]


MASK_CASES = {
    "spatial": ("cnn", {"spatial_dropout": [0.5]}),
    "conv-and-pool": ("cnn", {"conv_dropout": [0.3], "pool_dropout": [0.3], "input_dropout": [0.1]}),
    "lstm-input": ("rnn", {"lstm_dropout": [0.5]}),
    "lstm-recurrent": ("rnn", {"lstm_dropout": [0.3], "recurrent_dropout": [0.5], "dropout_rate": [0.2]}),
}


@pytest.mark.parametrize("case", list(MASK_CASES))
def test_cnn_and_rnn_dropout_masks_agree_with_keras_in_distribution(case: str) -> None:
    family, axes = MASK_CASES[case]
    theirs, weights, model = _keras_mask_losses(family, axes)
    ours = _population_mask_losses(family, axes, weights, model)
    assert theirs.std() > 0.01, "dropout should spread the loss for the test to mean anything"
    # Declared before running: KS at the 1% level, and means within 5% of the loss's spread.
    assert stats.ks_2samp(ours, theirs).pvalue >= 0.01, f"{case}: KS rejects equality"
    assert abs(ours.mean() - theirs.mean()) <= 0.05 * theirs.std() + 3 * theirs.std() / np.sqrt(DRAWS)


def test_the_mask_test_tells_spatial_from_elementwise_dropout() -> None:
    theirs, weights, model = _keras_mask_losses("cnn", {"spatial_dropout": [0.5]})
    elementwise = _population_mask_losses("cnn", {"conv_dropout": [0.5]}, weights, model)
    assert stats.ks_2samp(elementwise, theirs).pvalue < 0.01


def test_the_mask_test_tells_recurrent_from_input_dropout() -> None:
    theirs, weights, model = _keras_mask_losses("rnn", {"recurrent_dropout": [0.5]})
    other = _population_mask_losses("rnn", {"lstm_dropout": [0.5]}, weights, model)
    assert stats.ks_2samp(other, theirs).pvalue < 0.01
