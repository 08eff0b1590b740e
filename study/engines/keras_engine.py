"""Engine `keras`: one real Keras model per trial, trained with plain `model.fit`.

This is the reference every faster engine is tested against, so it stays deliberately plain.
"""

from __future__ import annotations

import study.quiet_tf  # noqa: F401  (silences TensorFlow's start-up; must come first)

# isort: split

import inspect
import math
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from study.datasets import Split
from study.engines.base import Engine, split_for
from study.schema import History, Predictions, TrialResult, completed_result, failed_result
from study.space import SearchSpace, Trial

ENGINE_VERSION = f"tensorflow {tf.__version__}, keras {keras.__version__}"

# Measured on a 2-core machine, reference model (2-500-1, 30 rows, one step per epoch): ~60 ms per epoch with
# validation, about half of it the validation pass; building and compiling a model ~1 s.
_SECONDS_PER_STEP = 0.03
_SECONDS_PER_VALIDATION = 0.03
_SECONDS_PER_TRIAL = 1.0
# One pass of `predict_probabilities` over a held-out split (deterministic or Monte Carlo): ~4 ms per batch of
# PREDICT_BATCH rows (an MLP on digits; model.predict's own set-up would add ~70 ms a pass), and tracing the
# predict function and copying the model for Monte Carlo dropout ~0.3 s a split.
_SECONDS_PER_PREDICT_BATCH = 0.004
_SECONDS_PER_PREDICT_SETUP = 0.3
PREDICT_BATCH = 1024  # rows per predict step, deterministic and Monte Carlo alike (their rows then match exactly)


def build_model(trial: Trial, data: Split) -> keras.Model:
    """The trial's model, compiled. Call `keras.utils.set_random_seed(trial.seed)` first for its weights.

    Dropout layers are present even at rate 0 (where they are the identity), so a seed gives the same
    initial weights whatever the dropout rates -- seeds pair up across configurations. Family custom is the user's
    build(hp) (study/custom_model.py).
    """
    if trial.space.model.family == "custom":
        from study.custom_model import build_custom

        return build_custom(trial, data)
    config = trial.config
    inputs = keras.Input(shape=(data.n_features,), name="features")
    x = keras.layers.Dropout(config["input_dropout"], name="input_dropout")(inputs)
    body = {"mlp": _mlp_body, "cnn": _cnn_body, "rnn": _rnn_body}[trial.space.model.family]
    x = body(trial, data, x)
    head = output_head(data)
    outputs = keras.layers.Dense(
        data.n_outputs, activation=head.activation, kernel_regularizer=_l2(config), name="output"
    )(x)
    model = keras.Model(inputs, outputs, name=f"trial_{trial.key}")
    opt = trial.space.training.optimizer
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=trial.learning_rate, beta_1=opt.beta_1, beta_2=opt.beta_2, epsilon=opt.epsilon
        ),
        loss=head.loss,
        metrics=head.metrics(),
    )
    return model


class OutputHead(NamedTuple):
    """The output layer's activation, the loss and the metrics of a task, as a Keras user compiles them."""

    activation: str
    loss: str
    metrics: Callable[[], list]  # fresh metric objects per model
    scores: tuple[str, ...]  # the metrics' names in fit's history and evaluate's dict


def output_head(data: Split) -> OutputHead:
    if data.task == "regression":
        return OutputHead(
            "linear",
            "mean_squared_error",
            lambda: [
                keras.metrics.RootMeanSquaredError(name="rmse"),
                keras.metrics.MeanAbsoluteError(name="mae"),
                keras.metrics.R2Score(name="r2"),
            ],
            ("rmse", "mae", "r2"),
        )
    if data.n_classes == 2:
        return OutputHead("sigmoid", "binary_crossentropy", lambda: ["accuracy"], ("accuracy",))
    return OutputHead("softmax", "sparse_categorical_crossentropy", lambda: ["accuracy"], ("accuracy",))


def _l2(config: dict) -> keras.regularizers.Regularizer | None:
    return keras.regularizers.L2(config["l2"]) if config["l2"] > 0 else None


def _max_norm(config: dict, axis: int | list[int] = 0) -> keras.constraints.Constraint | None:
    return keras.constraints.MaxNorm(config["max_norm"], axis=axis) if config["max_norm"] else None


def _dense_head(trial: Trial, x: keras.KerasTensor) -> keras.KerasTensor:
    """Dense -> [BatchNormalization] -> Dropout(dropout_rate) per hidden width: the MLP, and the CNN's head."""
    config = trial.config
    for i, width in enumerate(config["hidden_units"], start=1):
        x = keras.layers.Dense(
            width,
            activation=trial.space.model.activation,
            kernel_constraint=_max_norm(config),
            kernel_regularizer=_l2(config),
            name=f"hidden_{i}",
        )(x)
        if config["batch_norm"]:
            x = keras.layers.BatchNormalization(name=f"batch_norm_{i}")(x)
        x = keras.layers.Dropout(config["dropout_rate"], name=f"dropout_{i}")(x)
    return x


def _mlp_body(trial: Trial, data: Split, x: keras.KerasTensor) -> keras.KerasTensor:
    return _dense_head(trial, x)


def _cnn_body(trial: Trial, data: Split, x: keras.KerasTensor) -> keras.KerasTensor:
    """Per block: Conv2D(3x3, same) -> [BatchNormalization] -> SpatialDropout2D -> Dropout -> MaxPooling2D(2) ->
    Dropout; then Flatten and the dense head. Max-norm on a conv kernel bounds each filter (axis [0, 1, 2])."""
    config, model = trial.config, trial.space.model
    x = keras.layers.Reshape((*data.image_shape, 1), name="image")(x)
    for b, filters in enumerate(model.filters, start=1):
        x = keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            activation=model.activation,
            kernel_constraint=_max_norm(config, axis=[0, 1, 2]),
            kernel_regularizer=_l2(config),
            name=f"conv_{b}",
        )(x)
        if config["batch_norm"]:
            x = keras.layers.BatchNormalization(name=f"conv_batch_norm_{b}")(x)
        x = keras.layers.SpatialDropout2D(config["spatial_dropout"], name=f"spatial_dropout_{b}")(x)
        x = keras.layers.Dropout(config["conv_dropout"], name=f"conv_dropout_{b}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool_{b}")(x)
        x = keras.layers.Dropout(config["pool_dropout"], name=f"pool_dropout_{b}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return _dense_head(trial, x)


def _rnn_body(trial: Trial, data: Split, x: keras.KerasTensor) -> keras.KerasTensor:
    """The image's rows as time steps -> LSTM(dropout, recurrent_dropout) -> Dropout(dropout_rate) on its output.

    Max-norm and L2 apply to both the input and the recurrent kernel."""
    config = trial.config
    x = keras.layers.Reshape(data.image_shape, name="sequence")(x)
    x = keras.layers.LSTM(
        config["hidden_units"][0],
        activation=trial.space.model.activation,
        dropout=config["lstm_dropout"],
        recurrent_dropout=config["recurrent_dropout"],
        kernel_constraint=_max_norm(config),
        recurrent_constraint=_max_norm(config),
        kernel_regularizer=_l2(config),
        recurrent_regularizer=_l2(config),
        name="lstm",
    )(x)
    return keras.layers.Dropout(config["dropout_rate"], name="dropout_1")(x)


def labels(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Labels shaped for the loss: a float column for sigmoid and linear (regression, n_classes 0) outputs,
    integer classes for softmax."""
    return y.astype(np.float32).reshape(-1, 1) if n_classes in (0, 2) else y.astype(np.int64)


def callbacks(trial: Trial) -> list[keras.callbacks.Callback]:
    es = trial.early_stopping
    if es is None:
        return []
    return [
        keras.callbacks.EarlyStopping(
            monitor=es.monitor,
            patience=es.patience,
            min_delta=es.min_delta,
            restore_best_weights=es.restore_best_weights,
        )
    ]


class TestCurve(keras.callbacks.Callback):
    """The test set's loss and score (accuracy, or RMSE for a regression) at the end of every epoch, when
    `validation_data` is the validation set (fit reports only one held-out set per epoch)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, score: str = "accuracy"):
        super().__init__()
        self.x, self.y, self.score_name = x, y, score
        self.loss: list[float] = []
        self.score: list[float] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = self.model.evaluate(self.x, self.y, verbose=0, return_dict=True)
        self.loss.append(metrics["loss"])
        self.score.append(metrics[self.score_name])


def train(trial: Trial, data: Split) -> tuple[keras.Model, History]:
    """Seed, build and fit the trial's model exactly as a Keras user would: the validation rows are fit's
    `validation_data` (what early stopping watches); without them, the test rows are, as in the tutorial."""
    keras.utils.set_random_seed(trial.seed)
    model = build_model(trial, data)
    score = output_head(data).scores[0]
    y_train, y_test = labels(data.y_train, data.n_classes), labels(data.y_test, data.n_classes)
    test_curve = TestCurve(data.x_test, y_test, score) if data.has_validation else None
    held_out = (data.x_val, labels(data.y_val, data.n_classes)) if data.has_validation else (data.x_test, y_test)
    fit = model.fit(
        data.x_train,
        y_train,
        epochs=trial.epochs,
        batch_size=trial.batch_size,
        validation_data=held_out,
        shuffle=True,
        callbacks=[*callbacks(trial), *([test_curve] if test_curve else [])],
        verbose=0,
    )
    return model, history_of(fit.history, score, test_curve)


def history_of(h: dict, score: str, test_curve: TestCurve | None = None) -> History:
    """fit's history as the results schema's: `val_*` is the test set's, or the validation set's when the test set
    has its own `TestCurve`."""
    curves = {"train_loss": h["loss"], f"train_{score}": h[score]}
    held_out = "test" if test_curve is None else "validation"
    curves |= {f"{held_out}_loss": h["val_loss"], f"{held_out}_{score}": h[f"val_{score}"]}
    if test_curve is not None:
        curves |= {"test_loss": test_curve.loss, f"test_{score}": test_curve.score}
    return History(**curves)


def evaluate(model: keras.Model, data: Split) -> dict[str, float]:
    """Final train, validation and test metrics in inference mode (dropout off, batch-norm moving averages):
    loss and accuracy, or for a regression loss, RMSE, MAE and R2."""
    parts = [("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)]
    if data.has_validation:
        parts.append(("validation", data.x_val, data.y_val))
    out = {}
    for part, x, y in parts:
        metrics = model.evaluate(x, labels(y, data.n_classes), verbose=0, return_dict=True)
        for name in ("loss", *output_head(data).scores):
            out[f"{part}_{name}"] = metrics[name]
    return out


# Layers whose `training` flag switches only their dropout on: Dropout and its subclasses (SpatialDropout1D/2D/3D),
# GaussianDropout, AlphaDropout, and the recurrent layers' `dropout` and `recurrent_dropout` (an LSTM's, GRU's or
# SimpleRNN's training flag reaches nothing else: keras/src/layers/rnn/lstm.py). Batch norm is not among them.
MC_DROPOUT_LAYERS = (
    keras.layers.Dropout,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.LSTM,
    keras.layers.GRU,
    keras.layers.SimpleRNN,
)
_ALWAYS_TRAINING: dict[type, type] = {}


def always_training(cls: type) -> type:
    """A subclass of the layer class `cls` whose `call` always runs with `training=True` (its signature kept, so
    Keras still passes a mask where the layer takes one)."""
    if cls not in _ALWAYS_TRAINING:

        def call(self, *args, **kwargs):
            kwargs["training"] = True
            return cls.call(self, *args, **kwargs)

        call.__signature__ = inspect.signature(cls.call)
        _ALWAYS_TRAINING[cls] = type(f"MonteCarlo{cls.__name__}", (cls,), {"call": call})
    return _ALWAYS_TRAINING[cls]


def _clone_for_mc(layer: keras.layers.Layer) -> keras.layers.Layer:
    cls = always_training(type(layer)) if isinstance(layer, MC_DROPOUT_LAYERS) else type(layer)
    return cls.from_config(layer.get_config())


def mc_dropout_model(model: keras.Model) -> keras.Model:
    """A copy of a trained functional or Sequential `model` (nested ones included) with the trained weights in which
    every dropout of `MC_DROPOUT_LAYERS` is on even in inference mode, and everything else (batch norm's moving
    averages) stays in it: call it with training=False (or `predict`) for one Monte Carlo dropout pass. A subclassed
    model cannot be copied so (ValueError). Its dropout layers draw their masks from seeds taken when it is built:
    seed Keras first (`keras.utils.set_random_seed`) for reproducible passes."""
    mc = keras.models.clone_model(model, clone_function=_clone_for_mc, recursive=True)
    if not mc.built:
        mc.build(model.input_shape)
    mc.set_weights(model.get_weights())
    return mc


def mc_probabilities(model: keras.Model, x: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Monte Carlo dropout: the probabilities ([rows, outputs], float64) of `samples` stochastic passes over `x`,
    averaged -- dropout on, batch norm in inference mode, masks reproducible for a seed (it reseeds Keras's global
    random state with it). With every dropout rate 0 it equals `predict_probabilities(model, x)` exactly."""
    keras.utils.set_random_seed(seed)
    mc = mc_dropout_model(model)
    total = np.zeros((len(x), *mc.output_shape[1:]), dtype=np.float64)
    for _ in range(samples):
        total += predict_probabilities(mc, x)
    return total / samples


def predict_probabilities(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """`model.predict(x, batch_size=PREDICT_BATCH)` (inference mode), without predict's per-call set-up: one
    compiled `predict_on_batch` per PREDICT_BATCH rows."""
    return np.concatenate(
        [np.asarray(model.predict_on_batch(x[i : i + PREDICT_BATCH])) for i in range(0, len(x), PREDICT_BATCH)]
    )


def predictions(model: keras.Model, data: Split, trial: Trial) -> Predictions | None:
    """A classifier's final probabilities on the test and (if any) validation rows, deterministic and, when the
    space asks for `evaluation.mc_samples` passes, Monte Carlo dropout's; None for a regression."""
    if data.task == "regression":
        return None
    splits = {"test": (data.x_test, data.y_test)}
    if data.has_validation:
        splits["validation"] = (data.x_val, data.y_val)
    labels_ = {split: y for split, (_, y) in splits.items()}
    deterministic = {split: predict_probabilities(model, x) for split, (x, _) in splits.items()}
    samples = trial.space.evaluation.mc_samples
    if not samples:
        return Predictions(labels_, deterministic)
    mc = {split: mc_probabilities(model, x, samples, trial.seed) for split, (x, _) in splits.items()}
    return Predictions(labels_, deterministic, mc)


class KerasEngine(Engine):
    name = "keras"
    version = ENGINE_VERSION

    def batch_size(self, space: SearchSpace) -> int:
        return 1

    def check(self, space: SearchSpace) -> None:
        """Family custom: the first trial's model is built and evaluated on two rows (one line if it fails)."""
        if space.model.family == "custom":
            from study.custom_model import check_build

            check_build(space)

    def run(self, trials: list[Trial]) -> Iterator[list[TrialResult]]:
        for trial in trials:
            yield [self._run_one(trial)]

    def _run_one(self, trial: Trial) -> TrialResult:
        start = time.perf_counter()
        try:
            data = split_for(trial)
            model, history = train(trial, data)
            final = evaluate(model, data)
            scored = predictions(model, data, trial)
            return completed_result(
                trial,
                self.name,
                history,
                final,
                data.shape,
                time.perf_counter() - start,
                engine_version=self.version,
                predictions=scored,
            )
        except Exception as exc:  # a trial's failure is recorded and reported, never swallowed
            return failed_result(trial, self.name, exc, time.perf_counter() - start)
        finally:
            keras.backend.clear_session()

    def estimate_seconds(self, space: SearchSpace, n_trials: int) -> tuple[float, str]:
        trial = space.first_trial()
        data = split_for(trial)
        steps = math.ceil(len(data.x_train) / trial.batch_size)
        per_epoch = steps * _SECONDS_PER_STEP + _SECONDS_PER_VALIDATION * (2 if data.has_validation else 1)
        seconds = n_trials * (trial.epochs * per_epoch + _SECONDS_PER_TRIAL)
        basis = (
            f"~{per_epoch * 1e3:.0f} ms per epoch ({steps} step(s) + validation) as measured for plain "
            f"model.fit on a 2-core machine; early stopping would shorten it"
        )
        samples = space.evaluation.mc_samples
        if samples and data.task != "regression":
            held_out = [len(data.x_test)] + ([len(data.x_val)] if data.has_validation else [])
            batches = sum(math.ceil(rows / PREDICT_BATCH) for rows in held_out)
            per_trial = len(held_out) * _SECONDS_PER_PREDICT_SETUP + samples * batches * _SECONDS_PER_PREDICT_BATCH
            seconds += n_trials * per_trial
            basis += f"; Monte Carlo dropout ~{per_trial:.1f} s per trial ({samples} passes)"
        return seconds, basis
