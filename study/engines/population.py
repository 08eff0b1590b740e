"""Engine `population`: many trials trained together as one stacked TensorFlow computation.

Trials of the same architecture (hidden widths, batch norm on/off) and data shape are stacked along a leading
axis: every weight, optimizer slot and batch-norm statistic has shape [T, ...], every hyperparameter is a [T]
tensor, and the whole epoch loop -- minibatches, dropout, Adam, max-norm, per-epoch test evaluation, early
stopping -- runs inside one `tf.function`. Every operation is per trial, and the random numbers are a hash of
the trial's own seed (`masks.py`), so a trial's result does not depend on which trials share its batch.

Fidelity to Keras (pinned by tests against `keras_engine`): glorot-uniform kernels and zero biases; Dense as
matmul + bias + activation; binary/sparse-categorical cross-entropy computed from logits as Keras does; L2 as
l2 * sum(w^2) on every kernel, included in train and test loss; Keras 3 Adam (epsilon added to sqrt(v), bias
correction folded into the step size); MaxNorm(c, axis=0) on hidden kernels after every update; BatchNormalization
(momentum 0.99, epsilon 1e-3) with batch statistics in training and moving averages at inference; inverted
dropout; train metrics averaged over the epoch's batches with dropout active, test metrics in inference mode;
EarlyStopping with Keras's wait/patience rule and restore of the best weights.
"""

from __future__ import annotations

import study.quiet_tf  # noqa: F401  (silences TensorFlow's start-up; must come first)

# isort: split

import itertools
import math
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from study.datasets import Split
from study.engines import masks
from study.engines.base import Engine, split_for
from study.schema import History, TrialResult, completed_result, failed_result
from study.space import SearchSpace, Trial

BN_MOMENTUM, BN_EPSILON = 0.99, 1e-3
KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), used by MaxNorm
DEFAULT_TRIALS_PER_BATCH = 64
MEMORY_BUDGET_BYTES = 1 << 30  # activations of one batch; the process stays well under 4 GiB


@dataclass(frozen=True)
class Architecture:
    """What trials must share to be stacked together."""

    n_features: int
    hidden_units: tuple[int, ...]
    n_outputs: int
    batch_norm: bool
    activation: str
    n_train: int
    n_test: int


@dataclass
class Params:
    """Stacked parameters of T networks: kernels [T, in, out], biases/gammas/betas/statistics [T, 1, out].

    Flattened (for the graph's loop state) in the order kernels, biases, gammas, betas, moving means, moving
    variances -- the first four groups are the trainable ones.
    """

    kernels: list
    biases: list
    gammas: list
    betas: list
    moving_means: list
    moving_vars: list

    def trainable(self) -> list:
        return [*self.kernels, *self.biases, *self.gammas, *self.betas]

    def flat(self) -> list:
        return [*self.trainable(), *self.moving_means, *self.moving_vars]

    @staticmethod
    def from_flat(values: list, n_layers: int, n_bn: int) -> Params:
        cuts = np.cumsum([0, n_layers, n_layers, n_bn, n_bn, n_bn, n_bn])
        return Params(*(list(values[a:b]) for a, b in itertools.pairwise(cuts)))


def glorot_params(arch: Architecture, seeds: list[int]) -> list[np.ndarray]:
    """Initial parameters per trial: glorot-uniform kernels, zero biases, BN gamma 1, beta 0, mean 0, var 1.

    Drawn from the trial's seed alone (not its configuration), so seeds pair up across configurations.
    """
    widths = (arch.n_features, *arch.hidden_units, arch.n_outputs)
    kernels = [np.empty((len(seeds), a, b), np.float32) for a, b in itertools.pairwise(widths)]
    for t, seed in enumerate(seeds):
        rng = np.random.Generator(np.random.Philox(key=seed))
        for kernel in kernels:
            fan_in, fan_out = kernel.shape[1:]
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            kernel[t] = rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)
    biases = [np.zeros((len(seeds), 1, w), np.float32) for w in widths[1:]]
    hidden = arch.hidden_units if arch.batch_norm else ()
    ones = [np.ones((len(seeds), 1, w), np.float32) for w in hidden]
    zeros = [np.zeros((len(seeds), 1, w), np.float32) for w in hidden]
    return [*kernels, *biases, *ones, *[z.copy() for z in zeros], *[z.copy() for z in zeros], *[o.copy() for o in ones]]


def _activation(name: str):
    return {
        "relu": tf.nn.relu,
        "tanh": tf.tanh,
        "sigmoid": tf.sigmoid,
        "elu": tf.nn.elu,
        "selu": tf.nn.selu,
        "gelu": lambda x: tf.nn.gelu(x, approximate=False),
        "swish": tf.nn.silu,
        "softplus": tf.nn.softplus,
        "linear": tf.identity,
    }[name]


class StackedMLP:
    """Forward pass, loss and metrics of T stacked MLPs (one architecture)."""

    def __init__(self, arch: Architecture):
        self.arch = arch
        self.act = _activation(arch.activation)
        self.n_layers = len(arch.hidden_units) + 1
        self.n_bn = len(arch.hidden_units) if arch.batch_norm else 0

    def forward(self, p: Params, x, training: bool, dropout=None):
        """Logits [T, rows, outputs]; in training also the batch statistics for the moving averages.

        `dropout(layer, width)` returns (keep mask, 1/(1-rate) per trial) for that layer, or None. Dropped units
        are zeroed with one `where`; the inverted-dropout scale is applied after the next matrix product, on its
        (usually much smaller) output: (m*x*s) @ W == ((m*x) @ W) * s, and exactly x @ W when s == 1.
        """
        scale = None
        if training and dropout is not None:
            x, scale = self._drop(x, dropout(masks.INPUT_LAYER, self.arch.n_features))
        batch_stats = []
        for i in range(self.n_layers - 1):
            x = self.act(self._dense(x, p.kernels[i], p.biases[i], scale))
            scale = None
            if self.arch.batch_norm:
                if training:
                    mean, var = tf.nn.moments(x, axes=[1], keepdims=True)
                    batch_stats.append((mean, var))
                else:
                    mean, var = p.moving_means[i], p.moving_vars[i]
                x = tf.nn.batch_normalization(x, mean, var, p.betas[i], p.gammas[i], BN_EPSILON)
            if training and dropout is not None:
                x, scale = self._drop(x, dropout(i + 1, self.arch.hidden_units[i]))
        logits = self._dense(x, p.kernels[-1], p.biases[-1], scale)
        return logits, batch_stats

    @staticmethod
    def _drop(x, mask_and_scale):
        if mask_and_scale is None:
            return x, None
        keep, scale = mask_and_scale
        return tf.where(keep, x, 0.0), tf.reshape(scale, (-1, 1, 1))

    @staticmethod
    def _dense(x, kernel, bias, scale=None):
        product = tf.matmul(x, kernel)
        return (product if scale is None else product * scale) + bias

    def data_loss_and_correct(self, logits, y):
        """Per-trial mean cross-entropy [T] and number of correct predictions [T], as Keras computes them."""
        if self.arch.n_outputs == 1:
            loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)[..., 0]
            predicted = tf.cast(tf.sigmoid(logits) > 0.5, tf.float32)
            correct = tf.cast(tf.equal(predicted, y), tf.float32)[..., 0]
        else:
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            predicted = tf.argmax(tf.nn.softmax(logits), axis=-1, output_type=tf.int64)
            correct = tf.cast(tf.equal(predicted, y), tf.float32)
        return tf.reduce_mean(loss, axis=1), tf.reduce_sum(correct, axis=1)

    @staticmethod
    def penalty(p: Params, l2):
        """L2 penalty per trial [T]: l2 * sum(w^2) over every kernel."""
        total = tf.add_n([l2 * tf.reduce_sum(tf.square(k), axis=[1, 2]) for k in p.kernels])
        return total

    def evaluate(self, p: Params, x, y, l2):
        """Inference-mode loss (with penalty) and accuracy per trial."""
        logits, _ = self.forward(p, x, training=False)
        loss, correct = self.data_loss_and_correct(logits, y)
        return loss + self.penalty(p, l2), correct / tf.cast(tf.shape(x)[1], tf.float32)


class TrainingLoop:
    """The whole training of a stacked batch as one `tf.function` (traced once per architecture and settings)."""

    def __init__(self, arch: Architecture, epochs: int, batch_size: int, lr, beta_1, beta_2, epsilon, shuffle=True):
        self.net = StackedMLP(arch)
        self.arch, self.epochs, self.batch_size, self.shuffle = arch, epochs, batch_size, shuffle
        self.lr, self.beta_1, self.beta_2, self.epsilon = lr, beta_1, beta_2, epsilon
        self.steps = [(s, min(s + batch_size, arch.n_train)) for s in range(0, arch.n_train, batch_size)]
        self.run = tf.function(self._run, reduce_retracing=True)

    def _adam(self, values, grads, ms, vs, step):
        """Keras 3 Adam, op for op."""
        t = tf.cast(step + 1, tf.float32)
        beta_1_power = tf.pow(tf.constant(self.beta_1, tf.float32), t)
        beta_2_power = tf.pow(tf.constant(self.beta_2, tf.float32), t)
        alpha = self.lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        out_values, out_ms, out_vs = [], [], []
        for value, grad, m, v in zip(values, grads, ms, vs, strict=True):
            m = m + (grad - m) * (1 - self.beta_1)
            v = v + (tf.square(grad) - v) * (1 - self.beta_2)
            value = value - (m * alpha) / (tf.sqrt(v) + self.epsilon)
            out_values.append(value)
            out_ms.append(m)
            out_vs.append(v)
        return out_values, out_ms, out_vs

    @staticmethod
    def _max_norm(kernel, max_norm):
        """keras.constraints.MaxNorm(c, axis=0) where c > 0; kernels of trials without a constraint unchanged."""
        norms = tf.sqrt(tf.reduce_sum(tf.square(kernel), axis=1, keepdims=True))
        c = tf.reshape(max_norm, (-1, 1, 1))
        constrained = kernel * (tf.clip_by_value(norms, 0.0, c) / (KERAS_EPSILON + norms))
        return tf.where(c > 0, constrained, kernel)

    def _run(self, flat_params, x_train, y_train, x_test, y_test, seeds, hyper):
        """Train; return per-epoch history [epochs, T, 4], epochs run [T], final metrics [T, 4], final params."""
        net, arch = self.net, self.arch
        n_layers, n_bn, n_hidden = net.n_layers, net.n_bn, len(arch.hidden_units)
        n_trainable = 2 * n_layers + 2 * n_bn
        T = tf.shape(seeds)[0]
        state = list(flat_params)  # trainable values, then BN moving means and variances
        ms = [tf.zeros_like(v) for v in state[:n_trainable]]
        vs = [tf.zeros_like(v) for v in state[:n_trainable]]
        best_state = list(state)
        l2, max_norm = hyper["l2"], hyper["max_norm"]
        rates = {masks.INPUT_LAYER: hyper["input_dropout"], **{i + 1: hyper["dropout_rate"] for i in range(n_hidden)}}
        scales = {k: masks.inverted_dropout_scale(r) for k, r in rates.items()}

        es_on, es_maximize = hyper["es_on"], hyper["es_maximize"]
        sign = tf.where(es_maximize, -1.0, 1.0)  # compare -accuracy like a loss
        best = tf.fill([T], np.inf)
        wait = tf.zeros([T], tf.int32)
        active = tf.ones([T], tf.bool)
        epochs_run = tf.zeros([T], tf.int32)
        history = tf.TensorArray(tf.float32, size=self.epochs, element_shape=tf.TensorShape([None, 4]))
        step_count = tf.constant(0, tf.int32)
        multiple_steps = self.shuffle and len(self.steps) > 1

        for epoch in tf.range(self.epochs):
            if not tf.reduce_any(active):
                break
            shuffle_keys = masks.stream_keys(seeds, epoch, 0, masks.SHUFFLE_LAYER)
            order = masks.permutations(shuffle_keys, arch.n_train) if multiple_steps else None
            loss_sum = tf.zeros([T])
            correct_sum = tf.zeros([T])
            for step, (start, stop) in enumerate(self.steps):
                if multiple_steps:
                    rows = order[:, start:stop]
                    xb = tf.gather(x_train, rows, axis=1, batch_dims=1)
                    yb = tf.gather(y_train, rows, axis=1, batch_dims=1)
                else:
                    xb, yb = x_train[:, start:stop], y_train[:, start:stop]
                n_rows = stop - start

                def dropout(layer, width, epoch=epoch, step=step, n_rows=n_rows):
                    if not hyper[f"any_{layer}"]:
                        return None
                    keys = masks.stream_keys(seeds, epoch, step, layer)
                    return masks.keep_mask(keys, hyper[f"threshold_{layer}"], (n_rows, width)), scales[layer]

                trainable = state[:n_trainable]
                with tf.GradientTape() as tape:
                    tape.watch(trainable)
                    p = Params.from_flat(state, n_layers, n_bn)
                    logits, batch_stats = net.forward(p, xb, training=True, dropout=dropout)
                    data_loss, correct = net.data_loss_and_correct(logits, yb)
                    loss = data_loss + net.penalty(p, l2)
                    total = tf.reduce_sum(loss)
                grads = tape.gradient(total, trainable)
                new, new_ms, new_vs = self._adam(trainable, grads, ms, vs, step_count)
                if hyper["any_max_norm"]:
                    new[:n_hidden] = [self._max_norm(k, max_norm) for k in new[:n_hidden]]
                if n_bn:
                    new += [
                        mm * BN_MOMENTUM + mean * (1.0 - BN_MOMENTUM)
                        for mm, (mean, _) in zip(p.moving_means, batch_stats, strict=True)
                    ]
                    new += [
                        mv * BN_MOMENTUM + var * (1.0 - BN_MOMENTUM)
                        for mv, (_, var) in zip(p.moving_vars, batch_stats, strict=True)
                    ]
                # Trials that have stopped early keep their weights, optimizer state and statistics.
                keep = tf.reshape(active, (-1, 1, 1))
                state = [tf.where(keep, n, o) for n, o in zip(new, state, strict=True)]
                ms = [tf.where(keep, n, o) for n, o in zip(new_ms, ms, strict=True)]
                vs = [tf.where(keep, n, o) for n, o in zip(new_vs, vs, strict=True)]
                step_count += 1
                loss_sum += loss * float(n_rows)
                correct_sum += correct
            p = Params.from_flat(state, n_layers, n_bn)
            train_loss = loss_sum / float(arch.n_train)
            train_acc = correct_sum / float(arch.n_train)
            test_loss, test_acc = net.evaluate(p, x_test, y_test, l2)
            history = history.write(epoch, tf.stack([train_loss, train_acc, test_loss, test_acc], axis=1))
            epochs_run = tf.where(active, epoch + 1, epochs_run)

            # keras.callbacks.EarlyStopping.on_epoch_end, per trial.
            current = tf.where(es_maximize, test_acc, test_loss) * sign
            improved = (current + hyper["es_min_delta"]) < best
            watch = es_on & active
            wait = tf.where(watch, wait + 1, wait)
            best = tf.where(watch & improved, current, best)
            take = tf.reshape(watch & improved, (-1, 1, 1))
            best_state = [tf.where(take, now, old) for now, old in zip(state, best_state, strict=True)]
            wait = tf.where(watch & improved, 0, wait)
            stop = watch & ~improved & (wait >= hyper["es_patience"]) & (epoch > 0)
            active = active & ~stop

        restore = tf.reshape(es_on & hyper["es_restore"], (-1, 1, 1))
        state = [tf.where(restore, b, now) for b, now in zip(best_state, state, strict=True)]
        p = Params.from_flat(state, n_layers, n_bn)
        train_loss, train_acc = net.evaluate(p, x_train, y_train, l2)
        test_loss, test_acc = net.evaluate(p, x_test, y_test, l2)
        final = tf.stack([train_loss, train_acc, test_loss, test_acc], axis=1)
        trained_epochs = tf.reduce_max(epochs_run)
        return history.gather(tf.range(trained_epochs)), epochs_run, final, state


def architecture(trial: Trial, data: Split) -> Architecture:
    return Architecture(
        n_features=data.n_features,
        hidden_units=tuple(trial.config["hidden_units"]),
        n_outputs=1 if data.n_classes == 2 else data.n_classes,
        batch_norm=bool(trial.config["batch_norm"]),
        activation=trial.space.model.activation,
        n_train=len(data.x_train),
        n_test=len(data.x_test),
    )


def hyperparameters(trials: list[Trial]) -> dict[str, tf.Tensor]:
    """Per-trial hyperparameters as [T] tensors (and static 'any' flags that let the graph skip unused work)."""
    col = lambda key: np.array([t.config[key] for t in trials])  # noqa: E731
    dropout, input_dropout = col("dropout_rate").astype(np.float32), col("input_dropout").astype(np.float32)
    max_norm = np.array([t.config["max_norm"] or 0.0 for t in trials], np.float32)
    es = [t.early_stopping for t in trials]
    n_hidden = len(trials[0].config["hidden_units"])
    hyper = {
        "dropout_rate": tf.constant(dropout),
        "input_dropout": tf.constant(input_dropout),
        "max_norm": tf.constant(max_norm),
        "l2": tf.constant(col("l2").astype(np.float32)),
        "any_max_norm": bool((max_norm > 0).any()),
        "threshold_0": tf.constant(masks.keep_thresholds(input_dropout)),
        "any_0": bool((input_dropout > 0).any()),
        "es_on": tf.constant([e is not None for e in es]),
        "es_patience": tf.constant([e.patience if e else 0 for e in es], tf.int32),
        "es_min_delta": tf.constant([e.min_delta if e else 0.0 for e in es], tf.float32),
        "es_maximize": tf.constant([bool(e) and e.monitor == "val_accuracy" for e in es]),
        "es_restore": tf.constant([bool(e) and e.restore_best_weights for e in es]),
    }
    for layer in range(1, n_hidden + 1):
        hyper[f"threshold_{layer}"] = tf.constant(masks.keep_thresholds(dropout))
        hyper[f"any_{layer}"] = bool((dropout > 0).any())
    return hyper


def stack_data(trials: list[Trial], splits: list[Split]) -> tuple[tf.Tensor, ...]:
    """Per-trial data [T, rows, ...] (trials may have their own split when it is redrawn per seed)."""

    def y(part: np.ndarray, n_classes: int) -> np.ndarray:
        return part.astype(np.float32)[:, None] if n_classes == 2 else part.astype(np.int64)

    return (
        tf.constant(np.stack([s.x_train for s in splits])),
        tf.constant(np.stack([y(s.y_train, s.n_classes) for s in splits])),
        tf.constant(np.stack([s.x_test for s in splits])),
        tf.constant(np.stack([y(s.y_test, s.n_classes) for s in splits])),
    )


def train_population(
    trials: list[Trial], splits: list[Split], initial: list[np.ndarray] | None = None, shuffle: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Train trials of one architecture together. `initial` (stacked params) replaces the glorot draw (tests)."""
    arch = architecture(trials[0], splits[0])
    training = trials[0].space.training
    opt = training.optimizer
    loop = _loop(
        arch, training.epochs, training.batch_size, opt.learning_rate, opt.beta_1, opt.beta_2, opt.epsilon, shuffle
    )
    params = initial if initial is not None else glorot_params(arch, [t.seed for t in trials])
    seeds = tf.constant(np.array([t.seed for t in trials], dtype=np.uint64).astype(np.uint32))
    history, epochs_run, final, final_params = loop.run(
        [tf.constant(p) for p in params], *stack_data(trials, splits), seeds, hyperparameters(trials)
    )
    return history.numpy(), epochs_run.numpy(), final.numpy(), [p.numpy() for p in final_params]


_LOOPS: dict[tuple, TrainingLoop] = {}


def _loop(*key) -> TrainingLoop:
    """One TrainingLoop (one traced graph) per architecture and training settings."""
    if key not in _LOOPS:
        _LOOPS[key] = TrainingLoop(*key)
    return _LOOPS[key]


class PopulationEngine(Engine):
    name = "population"

    def __init__(self, trials_per_batch: int | None = None):
        self.trials_per_batch = trials_per_batch

    def batch_size(self, space: SearchSpace) -> int:
        """Trials handed out at once: enough for every architecture group to fill its chunks."""
        n_architectures = len(space.axis_values()["hidden_units"]) * len(space.axis_values()["batch_norm"])
        return self._chunk(space) * n_architectures * 2

    def _chunk(self, space: SearchSpace) -> int:
        if self.trials_per_batch:
            return self.trials_per_batch
        data = split_for(space.trials()[0])
        widest = max(max(v) for v in space.axis_values()["hidden_units"])
        rows = len(data.x_train) + len(data.x_test)
        per_trial = rows * widest * 4 * 40  # ~40 live float32 activations per unit and row
        return max(1, min(DEFAULT_TRIALS_PER_BATCH, MEMORY_BUDGET_BYTES // per_trial))

    def run(self, trials: list[Trial]) -> Iterator[list[TrialResult]]:
        groups: dict[Architecture, list[tuple[Trial, Split]]] = defaultdict(list)
        failed = []
        for trial in trials:
            try:
                data = split_for(trial)
                groups[architecture(trial, data)].append((trial, data))
            except Exception as exc:
                failed.append(failed_result(trial, self.name, exc, 0.0))
        if failed:
            yield failed
        chunk = self._chunk(trials[0].space) if trials else 1
        for members in groups.values():
            for start in range(0, len(members), chunk):
                part = members[start : start + chunk]
                yield self._run_chunk([t for t, _ in part], [d for _, d in part])

    def _run_chunk(self, trials: list[Trial], splits: list[Split]) -> list[TrialResult]:
        start = time.perf_counter()
        try:
            history, epochs_run, final, _ = train_population(trials, splits)
        except Exception as exc:  # the whole chunk failed: every trial in it is reported
            return [failed_result(t, self.name, exc, time.perf_counter() - start) for t in trials]
        per_trial = (time.perf_counter() - start) / len(trials)
        out = []
        for i, (trial, data) in enumerate(zip(trials, splits, strict=True)):
            n = int(epochs_run[i])
            h = History(*(history[:n, i, j] for j in range(4)))
            metrics = dict(zip(("train_loss", "train_accuracy", "test_loss", "test_accuracy"), final[i], strict=True))
            shape = {
                "n_train": len(data.x_train),
                "n_test": len(data.x_test),
                "n_features": data.n_features,
                "n_classes": data.n_classes,
            }
            out.append(completed_result(trial, self.name, h, metrics, shape, per_trial))
        return out

    def estimate_seconds(self, space: SearchSpace, n_trials: int) -> tuple[float, str]:
        data = split_for(space.trials()[0])
        rows = len(data.x_train) + len(data.x_test)
        work = space.training.epochs * rows * sum(space.model.hidden_units)
        # Measured by `make bench`/`make search` on a 2-core machine: 0.24-0.40 s per reference trial
        # (4000 epochs, 100 rows, 500 units) in batches of 64; traces cost a few seconds per architecture.
        seconds = n_trials * 0.35 * work / (4000 * 100 * 500) + 10.0
        return seconds, "~0.35 s per 4000-epoch reference trial in batches of 64, scaled by epochs x rows x units"
