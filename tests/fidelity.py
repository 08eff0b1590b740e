"""Helpers shared by the fidelity tests: run one trial through plain Keras and through the population engine."""

from __future__ import annotations

import study.quiet_tf  # noqa: F401  (before keras)

# isort: split

import keras
import numpy as np

from study.engines import keras_engine, population
from study.engines.base import split_for
from study.space import Trial


def keras_reference(trial: Trial, shuffle: bool = False):
    """Plain Keras: initial weights, per-epoch history, final weights and final metrics."""
    data = split_for(trial)
    keras.utils.set_random_seed(trial.seed)
    model = keras_engine.build_model(trial, data.n_features, data.n_classes)
    initial = [w.copy() for w in model.get_weights()]
    y_train = keras_engine.labels(data.y_train, data.n_classes)
    y_test = keras_engine.labels(data.y_test, data.n_classes)
    fit = model.fit(
        data.x_train,
        y_train,
        epochs=trial.space.training.epochs,
        batch_size=trial.space.training.batch_size,
        validation_data=(data.x_test, y_test),
        shuffle=shuffle,
        callbacks=keras_engine.callbacks(trial),
        verbose=0,
    )
    h = fit.history
    history = np.stack([h["loss"], h["accuracy"], h["val_loss"], h["val_accuracy"]], axis=1)
    final = keras_engine.evaluate(model, data)
    keras.backend.clear_session()
    return initial, history, final, model


def stacked_from_keras(weights: list[np.ndarray], trial: Trial) -> list[np.ndarray]:
    """Keras get_weights() order (per layer: kernel, bias, [gamma, beta, mean, var]) -> population flat order."""
    n_hidden = len(trial.config["hidden_units"])
    bn = trial.config["batch_norm"]
    kernels, biases, gammas, betas, means, variances = [], [], [], [], [], []
    it = iter(weights)
    for _ in range(n_hidden):
        kernels.append(next(it))
        biases.append(next(it))
        if bn:
            gammas.append(next(it))
            betas.append(next(it))
            means.append(next(it))
            variances.append(next(it))
    kernels.append(next(it))
    biases.append(next(it))
    vectors = [*biases, *gammas, *betas, *means, *variances]
    return [k[None] for k in kernels] + [v[None, None, :] for v in vectors]


def keras_order(flat: list[np.ndarray], trial: Trial) -> list[np.ndarray]:
    """Population flat order (one trial) -> Keras get_weights() order."""
    n_hidden = len(trial.config["hidden_units"])
    n_layers, n_bn = n_hidden + 1, (n_hidden if trial.config["batch_norm"] else 0)
    p = population.Params.from_flat([f[0] for f in flat], n_layers, n_bn)
    out = []
    for i in range(n_hidden):
        out += [p.kernels[i], p.biases[i][0]]
        if n_bn:
            out += [p.gammas[i][0], p.betas[i][0], p.moving_means[i][0], p.moving_vars[i][0]]
    return [*out, p.kernels[-1], p.biases[-1][0]]
