"""Helpers shared by the fidelity tests: run one trial through plain Keras and through the population engine."""

from __future__ import annotations

import study.quiet_tf  # noqa: F401  (before keras)

# isort: split

import keras
import numpy as np

from study.engines import keras_engine
from study.engines.base import split_for
from study.engines.training import METRICS, REGRESSION_METRICS
from study.space import Trial


def keras_reference(trial: Trial, shuffle: bool = False):
    """Plain Keras: initial weights, per-epoch history (columns `metric_names(data)`; validation NaN without
    validation rows), final weights and final metrics. Held-out data as the keras engine gives it to fit: the
    validation rows where there are some, else the test rows."""
    data = split_for(trial)
    keras.utils.set_random_seed(trial.seed)
    model = _without_xla(keras_engine.build_model(trial, data))
    initial = keras_weights(model)
    y_train = keras_engine.labels(data.y_train, data.n_classes)
    y_test = keras_engine.labels(data.y_test, data.n_classes)
    score = keras_engine.output_head(data).scores[0]
    test_curve = keras_engine.TestCurve(data.x_test, y_test, score) if data.has_validation else None
    held_out = (data.x_val, keras_engine.labels(data.y_val, data.n_classes)) if data.has_validation else None
    fit = model.fit(
        data.x_train,
        y_train,
        epochs=trial.epochs,
        batch_size=trial.batch_size,
        validation_data=held_out or (data.x_test, y_test),
        shuffle=shuffle,
        callbacks=[*keras_engine.callbacks(trial), *([test_curve] if test_curve else [])],
        verbose=0,
    )
    curves = keras_engine.history_of(fit.history, score, test_curve)
    blank = np.full(len(curves.train_loss), np.nan)
    history = np.stack([blank if getattr(curves, m) is None else getattr(curves, m) for m in metric_names(data)], 1)
    final = keras_engine.evaluate(model, data)
    keras.backend.clear_session()
    return initial, history, final, model


def metric_names(data) -> tuple[str, ...]:
    """The columns of the population engine's history and final metrics for this data's task."""
    return REGRESSION_METRICS if data.task == "regression" else METRICS


def _without_xla(model: keras.Model) -> keras.Model:
    """The model with Keras's train step run as a TensorFlow graph rather than XLA-compiled (`jit_compile="auto"`,
    Keras' default): the same operations, rounding aside, and about two seconds less per model, which adds up over
    the fidelity tests' fifty models."""
    model.jit_compile = False
    return model


def keras_full_batch_training(trial: Trial) -> dict[str, float]:
    """Plain Keras for a trial whose whole training set is one minibatch: `train_on_batch` once per epoch, the step
    `model.fit` takes (the same compiled train function, dropout layers and optimizer), without fit's per-epoch
    overhead (callbacks, data adapters: 30 times the step itself here). With one minibatch, fit's shuffle only
    reorders rows inside it. Returns the last epoch's training loss (dropout active, penalty included, before that
    epoch's update, as fit's history reports it) and the final inference-mode metrics."""
    data = split_for(trial)
    assert trial.space.training.batch_size >= len(data.x_train), "one minibatch per epoch"
    assert trial.early_stopping is None, "no callbacks"
    keras.utils.set_random_seed(trial.seed)
    model = _without_xla(keras_engine.build_model(trial, data))
    y_train = keras_engine.labels(data.y_train, data.n_classes)
    for _ in range(trial.space.training.epochs):
        logs = model.train_on_batch(data.x_train, y_train, return_dict=True)
    final = keras_engine.evaluate(model, data)
    keras.backend.clear_session()
    return {"last_epoch_train_loss": float(logs["loss"]), **final}


def _groups(model: keras.Model) -> list[tuple[str, list]]:
    """The model's weights, per layer, each tagged with the population group it belongs to."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            out += [("gammas", layer.gamma), ("betas", layer.beta)]
            out += [("means", layer.moving_mean), ("variances", layer.moving_variance)]
        elif isinstance(layer, keras.layers.LSTM):
            cell = layer.cell
            out += [("kernels", cell.kernel), ("kernels", cell.recurrent_kernel), ("biases", cell.bias)]
        elif layer.weights:
            out += [("kernels", layer.kernel), ("biases", layer.bias)]
    return out


GROUP_ORDER = ("kernels", "biases", "gammas", "betas", "means", "variances")


def stacked_from_keras(model: keras.Model, weights: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Keras weights (the model's own, or `weights` in its order) -> population flat order for one trial.

    Kernels become [1, in, out] (a conv kernel [3, 3, c, f] its im2col form [1, 9c, f]), vectors [1, 1, n]."""
    groups = _groups(model)
    values = weights if weights is not None else [v.numpy() for _, v in groups]
    by_group: dict[str, list] = {g: [] for g in GROUP_ORDER}
    for (group, _), value in zip(groups, values, strict=True):
        by_group[group].append(value.reshape(1, -1, value.shape[-1]) if group == "kernels" else value[None, None])
    return [v for g in GROUP_ORDER for v in by_group[g]]


def keras_order(flat: list[np.ndarray], model: keras.Model) -> list[np.ndarray]:
    """Population flat order (one trial) -> the model's weights in `_groups` order, in Keras shapes."""
    groups = _groups(model)
    counts = {g: sum(1 for group, _ in groups if group == g) for g in GROUP_ORDER}
    cuts = np.cumsum([0, *counts.values()])
    by_group = {g: list(flat[a:b]) for g, a, b in zip(GROUP_ORDER, cuts[:-1], cuts[1:], strict=True)}
    return [by_group[group].pop(0)[0].reshape(v.shape) for group, v in groups]


def keras_weights(model: keras.Model) -> list[np.ndarray]:
    """The model's weights in `_groups` order."""
    return [v.numpy() for _, v in _groups(model)]
