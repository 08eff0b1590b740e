"""Engine `population`: many trials trained together as one stacked TensorFlow computation.

Trials of the same architecture (model family, widths, batch norm on/off) and data shape are stacked along a leading
axis: every weight, optimizer slot and batch-norm statistic has shape [T, ...], every hyperparameter is a [T]
tensor, and the whole epoch loop -- minibatches, dropout, Adam, max-norm, per-epoch test evaluation, early
stopping -- runs inside one `tf.function`. Every operation is per trial, and the random numbers are a hash of
the trial's own seed (`masks.py`), so a trial's result does not depend on which trials share its batch.

The networks of each model family (mlp, cnn, rnn) are in `stacked.py`. Fidelity to Keras (pinned by tests
against `keras_engine`): Keras' initializers; Dense as matmul + bias + activation; binary/sparse-categorical
cross-entropy computed from logits as Keras does; L2 as l2 * sum(w^2) on every kernel, included in train and
test loss; Keras 3 Adam (epsilon added to sqrt(v), bias correction folded into the step size); MaxNorm on every
kernel but the output's after every update; BatchNormalization (momentum 0.99, epsilon 1e-3) with batch
statistics in training and moving averages at inference; inverted dropout; train metrics averaged over the
epoch's batches with dropout active, test metrics in inference mode; EarlyStopping with Keras's wait/patience
rule and restore of the best weights.
"""

from __future__ import annotations

import study.quiet_tf  # noqa: F401  (silences TensorFlow's start-up; must come first)

# isort: split

import time
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from study.datasets import Split
from study.engines import masks
from study.engines.base import Engine, split_for
from study.engines.stacked import Architecture, stacked_net
from study.schema import History, TrialResult, completed_result, failed_result
from study.space import RATE_AXES, SearchSpace, Trial

BN_MOMENTUM = 0.99
KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), used by MaxNorm
DEFAULT_TRIALS_PER_BATCH = 64
MEMORY_BUDGET_BYTES = 1 << 30  # activations of one batch; the process stays well under 4 GiB


class TrainingLoop:
    """The whole training of a stacked batch as one `tf.function` (traced once per architecture and settings)."""

    def __init__(self, arch: Architecture, epochs: int, batch_size: int, lr, beta_1, beta_2, epsilon, shuffle=True):
        self.net = stacked_net(arch)
        self.arch, self.epochs, self.batch_size, self.shuffle = arch, epochs, batch_size, shuffle
        self.lr, self.beta_1, self.beta_2, self.epsilon = lr, beta_1, beta_2, epsilon
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
        n_bn, n_constrained = net.n_bn, net.n_kernels - 1  # max-norm: every kernel but the output layer's
        n_trainable = net.n_kernels + net.n_biases + 2 * n_bn
        T = tf.shape(seeds)[0]
        state = list(flat_params)  # trainable values, then BN moving means and variances
        ms = [tf.zeros_like(v) for v in state[:n_trainable]]
        vs = [tf.zeros_like(v) for v in state[:n_trainable]]
        best_state = list(state)
        l2, max_norm = hyper["l2"], hyper["max_norm"]
        scales = {stream: masks.inverted_dropout_scale(hyper[axis]) for stream, axis in net.dropout_streams.items()}

        es_on, es_maximize = hyper["es_on"], hyper["es_maximize"]
        sign = tf.where(es_maximize, -1.0, 1.0)  # compare -accuracy like a loss
        best = tf.fill([T], np.inf)
        wait = tf.zeros([T], tf.int32)
        active = tf.ones([T], tf.bool)
        epochs_run = tf.zeros([T], tf.int32)
        history = tf.TensorArray(tf.float32, size=self.epochs, element_shape=tf.TensorShape([None, 4]))
        step_count = tf.constant(0, tf.int32)
        multiple_steps = self.shuffle and arch.n_train > self.batch_size

        n_full, n_last = divmod(arch.n_train, self.batch_size)

        def train_step(state, ms, vs, step_count, loss_sum, correct_sum, epoch, step, order, active, n_rows: int):
            """One minibatch (rows step*batch_size onwards, in this epoch's order): forward, backward, Adam,
            max-norm, batch-norm statistics; trials that have stopped early keep everything as it was."""
            start = step * self.batch_size
            if multiple_steps:
                rows = order[:, start : start + n_rows]
                xb = tf.gather(x_train, rows, axis=1, batch_dims=1)
                yb = tf.gather(y_train, rows, axis=1, batch_dims=1)
            else:
                xb, yb = x_train[:, start : start + n_rows], y_train[:, start : start + n_rows]

            def dropout(stream, unit_shape):
                if not hyper[f"any_{stream}"]:
                    return None
                keys = masks.stream_keys(seeds, epoch, step, stream)
                return masks.keep_mask(keys, hyper[f"threshold_{stream}"], (n_rows, *unit_shape)), scales[stream]

            trainable = state[:n_trainable]
            with tf.GradientTape() as tape:
                tape.watch(trainable)
                p = net.params(state)
                logits, batch_stats = net.forward(p, xb, training=True, dropout=dropout, hyper=hyper)
                data_loss, correct = net.data_loss_and_correct(logits, yb)
                loss = data_loss + net.penalty(p, l2)
                total = tf.reduce_sum(loss)
            grads = tape.gradient(total, trainable)
            new, new_ms, new_vs = self._adam(trainable, grads, ms, vs, step_count)
            if hyper["any_max_norm"]:
                new[:n_constrained] = [self._max_norm(k, max_norm) for k in new[:n_constrained]]
            if n_bn:
                new += [
                    mm * BN_MOMENTUM + mean * (1.0 - BN_MOMENTUM)
                    for mm, (mean, _) in zip(p.moving_means, batch_stats, strict=True)
                ]
                new += [
                    mv * BN_MOMENTUM + var * (1.0 - BN_MOMENTUM)
                    for mv, (_, var) in zip(p.moving_vars, batch_stats, strict=True)
                ]
            keep = tf.reshape(active, (-1, 1, 1))
            state = [tf.where(keep, n, o) for n, o in zip(new, state, strict=True)]
            ms = [tf.where(keep, n, o) for n, o in zip(new_ms, ms, strict=True)]
            vs = [tf.where(keep, n, o) for n, o in zip(new_vs, vs, strict=True)]
            return state, ms, vs, step_count + 1, loss_sum + loss * float(n_rows), correct_sum + correct

        for epoch in tf.range(self.epochs):
            if not tf.reduce_any(active):
                break
            shuffle_keys = masks.stream_keys(seeds, epoch, 0, masks.SHUFFLE_LAYER)
            order = masks.permutations(shuffle_keys, arch.n_train) if multiple_steps else tf.zeros([T, 0], tf.int32)
            loss_sum = tf.zeros([T])
            correct_sum = tf.zeros([T])
            # Full minibatches run in a graph loop (a small graph traces in seconds even at hundreds of steps);
            # the last, partial one (if any) runs once after it.
            if n_full:
                for step in tf.range(n_full):
                    state, ms, vs, step_count, loss_sum, correct_sum = train_step(
                        state, ms, vs, step_count, loss_sum, correct_sum, epoch, step, order, active, self.batch_size
                    )
            if n_last:
                state, ms, vs, step_count, loss_sum, correct_sum = train_step(
                    state, ms, vs, step_count, loss_sum, correct_sum, epoch, tf.constant(n_full), order, active, n_last
                )
            p = net.params(state)
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
        p = net.params(state)
        train_loss, train_acc = net.evaluate(p, x_train, y_train, l2)
        test_loss, test_acc = net.evaluate(p, x_test, y_test, l2)
        final = tf.stack([train_loss, train_acc, test_loss, test_acc], axis=1)
        trained_epochs = tf.reduce_max(epochs_run)
        return history.gather(tf.range(trained_epochs)), epochs_run, final, state


def architecture(trial: Trial, data: Split) -> Architecture:
    model = trial.space.model
    return Architecture(
        family=model.family,
        filters=tuple(model.filters or ()),
        image_shape=data.image_shape,
        n_features=data.n_features,
        hidden_units=tuple(trial.config["hidden_units"]),
        n_outputs=1 if data.n_classes == 2 else data.n_classes,
        batch_norm=bool(trial.config["batch_norm"]),
        activation=trial.space.model.activation,
        n_train=len(data.x_train),
        n_test=len(data.x_test),
    )


def hyperparameters(trials: list[Trial], streams: dict[int, str]) -> dict[str, tf.Tensor]:
    """Per-trial hyperparameters as [T] tensors, a keep threshold per dropout mask stream, and static 'any'
    flags that let the graph skip unused work."""
    col = lambda key: np.array([t.config[key] for t in trials])  # noqa: E731
    max_norm = np.array([t.config["max_norm"] or 0.0 for t in trials], np.float32)
    es = [t.early_stopping for t in trials]
    hyper = {
        **{axis: tf.constant(col(axis).astype(np.float32)) for axis in RATE_AXES},
        "max_norm": tf.constant(max_norm),
        "l2": tf.constant(col("l2").astype(np.float32)),
        "any_max_norm": bool((max_norm > 0).any()),
        "es_on": tf.constant([e is not None for e in es]),
        "es_patience": tf.constant([e.patience if e else 0 for e in es], tf.int32),
        "es_min_delta": tf.constant([e.min_delta if e else 0.0 for e in es], tf.float32),
        "es_maximize": tf.constant([bool(e) and e.monitor == "val_accuracy" for e in es]),
        "es_restore": tf.constant([bool(e) and e.restore_best_weights for e in es]),
    }
    for stream, axis in streams.items():
        rates = col(axis).astype(np.float32)
        hyper[f"threshold_{stream}"] = tf.constant(masks.keep_thresholds(rates))
        hyper[f"any_{stream}"] = bool((rates > 0).any())
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
    params = initial if initial is not None else loop.net.initial([t.seed for t in trials])
    seeds = tf.constant(np.array([t.seed for t in trials], dtype=np.uint64).astype(np.uint32))
    history, epochs_run, final, final_params = loop.run(
        [tf.constant(p) for p in params],
        *stack_data(trials, splits),
        seeds,
        hyperparameters(trials, loop.net.dropout_streams),
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
        trial = space.first_trial()
        data = split_for(trial)
        widest = max(max(v) for v in space.axis_values()["hidden_units"])
        net = stacked_net(architecture(Trial(space, {**trial.config, "hidden_units": (widest,)}, 0), data))
        rows = len(data.x_train) + len(data.x_test)
        per_trial = rows * net.activation_units() * 4  # float32
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
        trial = space.first_trial()
        data = split_for(trial)
        rows = len(data.x_train) + len(data.x_test)
        units = stacked_net(architecture(trial, data)).activation_units()
        per_row, reference_units, basis = SECONDS_PER_EPOCH_AND_ROW[space.model.family]
        seconds = n_trials * space.training.epochs * rows * per_row * units / reference_units + 10.0
        return seconds, f"{basis}, scaled by epochs x rows x model size"


# Seconds per epoch and data row of one trial in a full batch, the model size they were measured at, and where
# from (2-core machine, `make search`/`make bench`); traces add a few seconds per architecture.
SECONDS_PER_EPOCH_AND_ROW = {
    "mlp": (0.35 / (4000 * 100), 40 * 500, "~0.35 s per 4000-epoch reference trial (2-500-1 MLP) in batches of 64"),
    "cnn": (360.0 / 432 / (50 * 1797), 3136, "cnn.yaml: 432 trials of 50 epochs in 360 s"),
    "rnn": (253.0 / 216 / (40 * 1797), 3328, "rnn.yaml: 216 trials of 40 epochs in 253 s"),
}
