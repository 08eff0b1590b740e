"""The population engine's training loop: Keras' `model.fit` for one trial, written so that XLA compiles the whole
of it -- every epoch, minibatch, dropout mask, Adam update and evaluation -- and runs many trials at once.

One trial's loop is small functions over a named state: `train_step` (one minibatch: forward, backward, Adam,
max-norm, batch-norm statistics), `evaluate` (inference mode), `early_stopping` (Keras' EarlyStopping rule) and
`run_epoch`, which strings them together. `compile_training` maps the epoch over the trials of a batch with
`jax.vmap`, splits the batch over the machine's devices with `jax.shard_map`, and loops over epochs in a
`lax.while_loop` that ends when every trial has stopped. Trials that stopped early keep their state unchanged.

Fidelity to Keras 3 (pinned by tests against `keras_engine`): Keras 3 Adam (epsilon added to sqrt(v), the bias
correction folded into the step size); MaxNorm after every update (`w * clip(n, 0, c) / (1e-7 + n)`); batch norm
moving averages with momentum 0.99; train metrics averaged over the epoch's batches with dropout active (the
loss weighted by rows, as Keras' running mean does), test metrics in inference mode at the end of the epoch;
EarlyStopping's wait/patience/min_delta rule and restore of the best weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, PartitionSpec

from study.engines import masks
from study.engines.networks import Architecture, Network, network

BN_MOMENTUM = 0.99
KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), used by MaxNorm
# The columns of a history row and of the final metrics (the validation ones are NaN without validation rows); a
# regression's score is the RMSE (REGRESSION_METRICS), and its final MAE and R2 come as EXTRAS.
METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "validation_loss", "validation_accuracy")
REGRESSION_METRICS = tuple(m.replace("accuracy", "rmse") for m in METRICS)
EXTRAS = ("train_mae", "train_r2", "test_mae", "test_r2", "validation_mae", "validation_r2")


@dataclass(frozen=True)
class Settings:
    """What a compiled training loop is specialised for, besides the architecture: the batch's training settings
    (the learning rate is per trial), which dropout streams any trial of the batch uses (the others cost nothing),
    whether any trial has a max-norm, whether every trial trains on the same data (held once rather than per
    trial), and whether there are validation rows (then early stopping watches them instead of the test rows)."""

    epochs: int
    batch_size: int
    beta_1: float
    beta_2: float
    epsilon: float
    streams: frozenset[int]
    max_norm: bool
    shared_data: bool
    shuffle: bool = True
    validation: bool = False
    mc_samples: int = 0  # Monte Carlo dropout passes over the final model


class TrialState(NamedTuple):
    """One trial's training state, carried from minibatch to minibatch and epoch to epoch."""

    params: list  # flat: trainable values, then batch-norm moving means and variances
    m: list  # Adam's first moments of the trainable values
    v: list  # Adam's second moments
    step: jnp.ndarray  # optimizer steps taken (Keras' `iterations`)
    best_params: list  # the weights early stopping would restore
    best: jnp.ndarray  # the best monitored value so far (accuracy negated, so lower is better)
    wait: jnp.ndarray  # epochs since the last improvement
    active: jnp.ndarray  # still training (early stopping has not stopped it)
    epochs_run: jnp.ndarray


class Data(NamedTuple):
    x_train: jnp.ndarray
    y_train: jnp.ndarray
    x_test: jnp.ndarray
    y_test: jnp.ndarray
    x_val: jnp.ndarray  # one empty row without validation rows
    y_val: jnp.ndarray


class TrainResult(NamedTuple):
    """What training a batch gives: per-epoch history [epochs, T, 6] (columns `METRICS`, or `REGRESSION_METRICS`;
    up to the last epoch any trial ran), epochs each trial ran [T], final inference-mode metrics [T, 6], a
    regression's final `EXTRAS` [T, 6] (else [T, 0]), final flat parameters (each [T, ...]), and the seconds it
    ran."""

    history: np.ndarray
    epochs_run: np.ndarray
    final: np.ndarray
    extras: np.ndarray
    params: list[np.ndarray]
    seconds: float  # running time, compiling excluded
    predictions: dict[str, np.ndarray] | None = None  # a classifier's probabilities, split -> [T, rows, outputs]


class Loop:
    """The training of one trial, for one architecture and settings (see the module docstring)."""

    def __init__(self, arch: Architecture, settings: Settings):
        self.arch, self.settings = arch, settings
        self.net: Network = network(arch)
        self.n_trainable = self.net.n_kernels + self.net.n_biases + 2 * self.net.n_bn
        self.n_full, self.n_last = divmod(arch.n_train, settings.batch_size)
        self.multiple_steps = settings.shuffle and arch.n_train > settings.batch_size

    # --- one minibatch -------------------------------------------------------------------------------

    def _dropout(self, seed, epoch, step, hyper, rows: int):
        """The `dropout(stream, unit shape)` callback of the networks: this trial's masks for one minibatch."""

        def dropout(stream: int, unit_shape: tuple[int, ...]):
            if stream not in self.settings.streams:
                return None
            key = masks.stream_key(seed, epoch, step, stream)
            keep = masks.keep_mask(key, hyper["thresholds"][stream], (rows, *unit_shape))
            return keep, masks.inverted_dropout_scale(hyper[self.net.dropout_streams[stream]])

        return dropout

    def _adam(self, values, grads, m, v, step, learning_rate):
        """Keras 3 Adam, op for op."""
        s = self.settings
        t = (step + 1).astype(jnp.float32)
        alpha = learning_rate * jnp.sqrt(1 - s.beta_2**t) / (1 - s.beta_1**t)
        new_m = [mi + (g - mi) * (1 - s.beta_1) for mi, g in zip(m, grads, strict=True)]
        new_v = [vi + (jnp.square(g) - vi) * (1 - s.beta_2) for vi, g in zip(v, grads, strict=True)]
        new = [w - (mi * alpha) / (jnp.sqrt(vi) + s.epsilon) for w, mi, vi in zip(values, new_m, new_v, strict=True)]
        return new, new_m, new_v

    @staticmethod
    def _max_norm(kernel, max_norm):
        """keras.constraints.MaxNorm(c, axis=0) where c > 0; a trial without a constraint keeps its kernel."""
        norms = jnp.sqrt(jnp.sum(jnp.square(kernel), axis=0, keepdims=True))
        constrained = kernel * (jnp.clip(norms, 0.0, max_norm) / (KERAS_EPSILON + norms))
        return jnp.where(max_norm > 0, constrained, kernel)

    def train_step(
        self, state: TrialState, xb, yb, seed, epoch, step, hyper
    ) -> tuple[TrialState, jnp.ndarray, jnp.ndarray]:
        """One minibatch: forward, backward, Adam, max-norm, batch-norm statistics. Returns the new state (the old
        one if the trial has stopped) and the minibatch's loss and number of correct predictions."""
        net = self.net
        dropout = self._dropout(seed, epoch, step, hyper, rows=xb.shape[0])
        trainable, moving = state.params[: self.n_trainable], state.params[self.n_trainable :]

        def loss_fn(trainable):
            p = net.params([*trainable, *moving])
            logits, batch_stats = net.forward(p, xb, training=True, dropout=dropout, hyper=hyper)
            data_loss, correct = net.data_loss_and_correct(logits, yb)
            return data_loss + net.penalty(p, hyper["l2"]), (correct, batch_stats)

        (loss, (correct, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        new, m, v = self._adam(trainable, grads, state.m, state.v, state.step, hyper["learning_rate"])
        if self.settings.max_norm:
            n_constrained = net.n_kernels - 1  # every kernel but the output layer's
            new[:n_constrained] = [self._max_norm(k, hyper["max_norm"]) for k in new[:n_constrained]]
        if net.n_bn:
            p = net.params(state.params)
            new += [
                mm * BN_MOMENTUM + mean * (1.0 - BN_MOMENTUM)
                for mm, (mean, _) in zip(p.moving_means, batch_stats, strict=True)
            ]
            new += [
                mv * BN_MOMENTUM + var * (1.0 - BN_MOMENTUM)
                for mv, (_, var) in zip(p.moving_vars, batch_stats, strict=True)
            ]
        keep = lambda now, before: jax.tree.map(lambda a, b: jnp.where(state.active, a, b), now, before)  # noqa: E731
        updated = state._replace(params=keep(new, state.params), m=keep(m, state.m), v=keep(v, state.v),
                                 step=state.step + 1)  # fmt: skip
        return updated, loss, correct

    # --- one epoch -----------------------------------------------------------------------------------

    def evaluate(self, params: list, x, y, l2) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Inference-mode loss (with the L2 penalty) and accuracy, as `model.evaluate` reports them."""
        return self.net.evaluate(self.net.params(params), x, y, l2)

    @staticmethod
    def early_stopping(state: TrialState, epoch, val_loss, val_acc, hyper) -> TrialState:
        """keras.callbacks.EarlyStopping.on_epoch_end on fit's held-out set: track the best monitored value, count
        epochs without improvement, stop after `patience` of them (never after the first epoch)."""
        watch = hyper["es_on"] & state.active
        current = jnp.where(hyper["es_maximize"], -val_acc, val_loss)
        improved = (current + hyper["es_min_delta"]) < state.best
        take = watch & improved
        wait = jnp.where(take, 0, jnp.where(watch, state.wait + 1, state.wait))
        stop = watch & ~improved & (wait >= hyper["es_patience"]) & (epoch > 0)
        return state._replace(
            best=jnp.where(take, current, state.best),
            best_params=jax.tree.map(lambda now, old: jnp.where(take, now, old), state.params, state.best_params),
            wait=wait,
            active=state.active & ~stop,
        )

    def held_out(self, params: list, data: Data, l2) -> tuple[jnp.ndarray, ...]:
        """Test loss and accuracy, then validation loss and accuracy (NaN without validation rows)."""
        test = self.evaluate(params, data.x_test, data.y_test, l2)
        if not self.settings.validation:
            return (*test, jnp.float32(jnp.nan), jnp.float32(jnp.nan))
        return (*test, *self.evaluate(params, data.x_val, data.y_val, l2))

    def run_epoch(self, state: TrialState, data: Data, seed, hyper, epoch) -> tuple[TrialState, jnp.ndarray]:
        """One epoch of one trial: its shuffled minibatches, then the held-out evaluations and early stopping
        (on the validation rows, or on the test rows without them, as fit's validation_data).
        Returns the new state and the epoch's history row (columns `METRICS`)."""
        size, n_train = self.settings.batch_size, self.arch.n_train
        if self.multiple_steps:
            order = masks.permutation(masks.stream_key(seed, epoch, 0, masks.SHUFFLE_LAYER), n_train)
            x_all, y_all = data.x_train[order], data.y_train[order]
        else:
            x_all, y_all = data.x_train, data.y_train
        was_active = state.active

        def step(i, carry):
            state, loss_sum, correct_sum = carry
            xb = jax.lax.dynamic_slice_in_dim(x_all, i * size, size)
            yb = jax.lax.dynamic_slice_in_dim(y_all, i * size, size)
            state, loss, correct = self.train_step(state, xb, yb, seed, epoch, i, hyper)
            return state, loss_sum + loss * float(size), correct_sum + correct

        carry = (state, jnp.float32(0.0), jnp.float32(0.0))
        if self.n_full:
            carry = jax.lax.fori_loop(0, self.n_full, step, carry)
        state, loss_sum, correct_sum = carry
        if self.n_last:  # the last, partial minibatch
            start = self.n_full * size
            state, loss, correct = self.train_step(state, x_all[start:], y_all[start:], seed, epoch, self.n_full, hyper)
            loss_sum, correct_sum = loss_sum + loss * float(self.n_last), correct_sum + correct
        test_loss, test_acc, val_loss, val_acc = self.held_out(state.params, data, hyper["l2"])
        train_score = self.net.score(correct_sum, n_train)
        row = jnp.stack([loss_sum / n_train, train_score, test_loss, test_acc, val_loss, val_acc])
        state = state._replace(epochs_run=jnp.where(was_active, epoch + 1, state.epochs_run))
        watched = (val_loss, val_acc) if self.settings.validation else (test_loss, test_acc)
        return self.early_stopping(state, epoch, *watched, hyper), row

    # --- the whole training of a batch ---------------------------------------------------------------

    def initial_state(self, params: list) -> TrialState:
        zeros = [jnp.zeros_like(w) for w in params[: self.n_trainable]]
        return TrialState(params=list(params), m=zeros, v=list(zeros), step=jnp.int32(0), best_params=list(params),
                          best=jnp.float32(np.inf), wait=jnp.int32(0), active=jnp.bool_(True),
                          epochs_run=jnp.int32(0))  # fmt: skip

    def train_batch(self, params: list, data: Data, seeds, hyper):
        """Train a batch of trials (leading axis T on every argument; on `data` only without shared data)."""
        data_axis = None if self.settings.shared_data else 0
        epoch_fn = jax.vmap(self.run_epoch, in_axes=(0, Data(*[data_axis] * 6), 0, 0, None))
        state = jax.vmap(self.initial_state)(params)
        n_trials = seeds.shape[0]
        history = jnp.zeros((self.settings.epochs, n_trials, len(METRICS)), jnp.float32)

        def not_done(carry):
            state, _, epoch = carry
            return (epoch < self.settings.epochs) & jnp.any(state.active)

        def one_epoch(carry):
            state, history, epoch = carry
            state, rows = epoch_fn(state, data, seeds, hyper, epoch)
            return state, history.at[epoch].set(rows), epoch + 1

        state, history, _ = jax.lax.while_loop(not_done, one_epoch, (state, history, jnp.int32(0)))
        restore = hyper["es_on"] & hyper["es_restore"]
        final_params = jax.tree.map(
            lambda best, now: jnp.where(restore.reshape((-1,) + (1,) * (now.ndim - 1)), best, now),
            state.best_params, state.params,
        )  # fmt: skip
        evaluate = jax.vmap(self.evaluate, in_axes=(0, data_axis, data_axis, 0))
        held_out = jax.vmap(self.held_out, in_axes=(0, Data(*[data_axis] * 6), 0))
        train_loss, train_acc = evaluate(final_params, data.x_train, data.y_train, hyper["l2"])
        final = jnp.stack([train_loss, train_acc, *held_out(final_params, data, hyper["l2"])], axis=1)
        predict = jax.vmap(self.predictions, in_axes=(0, Data(*[data_axis] * 6), 0, 0))
        predictions = predict(final_params, data, seeds, hyper)
        return history, state.epochs_run, final, self.extras(final_params, data), final_params, predictions

    # --- the final model's probabilities ---------------------------------------------------------------

    def probabilities(self, params: list, x, dropout=None, hyper=None):
        """The output layer's probabilities [rows, outputs] (sigmoid or softmax), batch norm in inference mode;
        with `dropout`, one Monte Carlo pass (every dropout of the network on)."""
        logits, _ = self.net.forward(self.net.params(params), x, training=False, dropout=dropout, hyper=hyper)
        return jax.nn.sigmoid(logits) if self.arch.n_outputs == 1 else jax.nn.softmax(logits, axis=-1)

    def mc_pass(self, params: list, x, seed, hyper, split: int, s):
        """Monte Carlo dropout pass s: its masks are the counter hash of (seed, MC_EPOCH + split, s, layer,
        element), a stream of their own apart from every training epoch's, so a trial's MC result depends on its
        seed alone."""
        dropout = self._dropout(seed, masks.MC_EPOCH + split, s, hyper, rows=x.shape[0])
        return self.probabilities(params, x, dropout, hyper)

    def mc_probabilities(self, params: list, x, seed, hyper, split: int):
        """Monte Carlo dropout: the probabilities averaged over `mc_samples` passes (one pass in memory at a time).
        A running mean, which stays exactly the deterministic probability when no unit is dropped: a float32 sum
        divided by the count would not, and saturated probabilities' log-likelihoods magnify the difference."""

        def one_pass(s, mean):
            return mean + (self.mc_pass(params, x, seed, hyper, split, s) - mean) / (s + 1).astype(jnp.float32)

        zeros = jnp.zeros((x.shape[0], self.arch.n_outputs), jnp.float32)
        return jax.lax.fori_loop(0, self.settings.mc_samples, one_pass, zeros)

    def predictions(self, params: list, data: Data, seed, hyper) -> dict:
        """A classifier's final probabilities on the held-out rows, deterministic and (with `mc_samples`) Monte
        Carlo; empty for a regression. Validation entries hold a placeholder row without validation rows."""
        if self.arch.regression:
            return {}
        out = {"test": self.probabilities(params, data.x_test), "validation": self.probabilities(params, data.x_val)}
        if self.settings.mc_samples:
            out["mc_test"] = self.mc_probabilities(params, data.x_test, seed, hyper, 0)
            out["mc_validation"] = self.mc_probabilities(params, data.x_val, seed, hyper, 1)
        return out

    def extras(self, params, data: Data) -> jnp.ndarray:
        """A regression's final MAE and R2 on train, test and validation rows [T, 6] (NaN without validation rows);
        [T, 0] for a classifier."""
        n_trials = params[0].shape[0]
        if not self.arch.regression:
            return jnp.zeros((n_trials, 0), jnp.float32)
        data_axis = None if self.settings.shared_data else 0
        measure = jax.vmap(lambda p, x, y: self.net.regression_extras(self.net.params(p), x, y),
                           in_axes=(0, data_axis, data_axis))  # fmt: skip
        parts = [measure(params, data.x_train, data.y_train), measure(params, data.x_test, data.y_test)]
        if self.settings.validation:
            parts.append(measure(params, data.x_val, data.y_val))
        else:
            parts.append((jnp.full(n_trials, jnp.nan), jnp.full(n_trials, jnp.nan)))
        return jnp.stack([value for part in parts for value in part], axis=1)


def compile_training(arch: Architecture, settings: Settings, devices: list):
    """`train(params, data, seeds, hyper)` for batches of this architecture and settings, compiled by XLA on first
    call per batch size; with several devices each trains its share of the batch (the batch size must be a
    multiple of their number)."""
    loop = Loop(arch, settings)
    if len(devices) == 1:
        return jax.jit(loop.train_batch)
    mesh = jax.make_mesh((len(devices),), ("trials",), axis_types=(AxisType.Auto,), devices=devices)
    trials = PartitionSpec("trials")
    data_spec = PartitionSpec() if settings.shared_data else trials
    sharded = jax.shard_map(
        loop.train_batch,
        mesh=mesh,
        in_specs=(trials, Data(*[data_spec] * 6), trials, trials),
        out_specs=(PartitionSpec(None, "trials"), trials, trials, trials, trials, trials),
        check_vma=False,
    )
    return jax.jit(sharded)
