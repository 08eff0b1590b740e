"""The population engine's networks, one per model family, written for one trial in JAX (the engine maps them
over trials with `jax.vmap`).

Each family mirrors its Keras model in `keras_engine` layer for layer:

- mlp: Dropout(input) -> per hidden width: Dense -> [BatchNormalization] -> Dropout(dropout_rate) -> output Dense.
- cnn: Dropout(input) -> per block: Conv2D(3x3, same) -> [BN] -> SpatialDropout2D -> Dropout(conv_dropout) ->
  MaxPooling2D(2) -> Dropout(pool_dropout); Flatten -> the MLP's dense head. A conv kernel is kept as [3*3*c, f]
  (Keras' [3, 3, c, f] reshaped), so every kernel is a matrix and max-norm is one rule for all of them.
- rnn: Dropout(input) -> LSTM over the image rows -> Dropout(dropout_rate) -> output Dense. As in Keras 3, the
  LSTM's input and recurrent dropout draw one mask per sample for all time steps; with recurrent dropout on
  (Keras' implementation 1) each of the four gates has its own input and recurrent mask, otherwise one input
  mask serves all gates.

Kernels are initialised glorot-uniform (the LSTM's recurrent kernel orthogonal), biases zero (the LSTM's forget
gate bias one), from the trial's seed alone (NumPy's Philox), so seeds pair up across configurations. Max-norm
applies to every kernel but the output layer's (for a conv kernel: each filter, Keras axis [0, 1, 2]); L2 to every
kernel. Operations follow Keras 3's TensorFlow backend op for op (cross-entropy from logits, batch norm's
`x * inv + (beta - mean * inv)`), so that with dropout off the two agree to float32 rounding.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from study.engines import masks

BN_EPSILON = 1e-3
KERNEL_SIZE, POOL_SIZE = 3, 2

# Mask stream ids: input 0 and dense hidden layer i -> i; conv block b -> 1000 + 10 b + {0 spatial, 1 conv,
# 2 pool}; LSTM gate g -> 2000 + g (input), 2010 + g (recurrent). The same ids as the TensorFlow engine had.
_CONV_STREAM, _LSTM_INPUT_STREAM, _LSTM_RECURRENT_STREAM = 1000, 2000, 2010

# dropout(stream id, unit shape) -> (keep mask [rows, *unit shape], 1/(1-rate)), or None when the stream is off
Dropout = Callable[[int, tuple[int, ...]], tuple[jnp.ndarray, jnp.ndarray] | None]


@dataclass(frozen=True)
class Architecture:
    """What trials must share to be trained together."""

    family: str
    n_features: int
    hidden_units: tuple[int, ...]
    n_outputs: int
    batch_norm: bool
    activation: str
    n_train: int
    n_test: int
    filters: tuple[int, ...] = ()
    image_shape: tuple[int, int] | None = None
    n_validation: int = 0
    regression: bool = False  # one linear output, mean squared error


class Params(NamedTuple):
    """One trial's parameters (a JAX pytree). `flat()` orders them kernels, biases, gammas, betas, moving means,
    moving variances -- the first four groups are the trainable ones."""

    kernels: list
    biases: list
    gammas: list
    betas: list
    moving_means: list
    moving_vars: list

    def trainable(self) -> tuple[list, list, list, list]:
        return self.kernels, self.biases, self.gammas, self.betas

    def flat(self) -> list:
        return [*self.kernels, *self.biases, *self.gammas, *self.betas, *self.moving_means, *self.moving_vars]

    @staticmethod
    def from_flat(values: list, n_kernels: int, n_biases: int, n_bn: int) -> Params:
        cuts = np.cumsum([0, n_kernels, n_biases, n_bn, n_bn, n_bn, n_bn])
        return Params(*(list(values[a:b]) for a, b in itertools.pairwise(cuts)))


ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "swish": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "linear": lambda x: x,
}


def _apply(x, mask_and_scale):
    """Inverted dropout with a keep mask that broadcasts over x (e.g. one value per feature map)."""
    if mask_and_scale is None:
        return x
    keep, scale = mask_and_scale
    return jnp.where(keep, x * scale, 0.0)


def _drop_deferred(x, mask_and_scale):
    """Zero the dropped units and return the scale to apply after the next matrix product:
    (m*x*s) @ W == ((m*x) @ W) * s, on the product's (usually much smaller) output."""
    if mask_and_scale is None:
        return x, None
    keep, scale = mask_and_scale
    return jnp.where(keep, x, 0.0), scale


def _dense(x, kernel, bias, scale=None):
    product = x @ kernel
    return (product if scale is None else product * scale) + bias


def _orthogonal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """keras.initializers.Orthogonal(gain=1) for a [rows, cols] kernel."""
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    return (q.T if rows < cols else q).astype(np.float32)


class Network:
    """One family's network for one trial."""

    dropout_streams: dict[int, str]  # mask stream id -> the axis whose rate it uses

    def __init__(self, arch: Architecture):
        self.arch = arch
        self.act = ACTIVATIONS[arch.activation]
        self.n_bn = 0

    # --- shape of the parameters ---------------------------------------------------------------------

    def kernel_specs(self) -> list[tuple[int, int, int, int, str]]:
        """Per kernel (as a matrix [in, out]): rows, cols, fan_in, fan_out, initializer."""
        raise NotImplementedError

    def bias_inits(self) -> list[np.ndarray]:
        raise NotImplementedError

    def bn_widths(self) -> list[int]:
        return []

    @property
    def n_kernels(self) -> int:
        return len(self.kernel_specs())

    @property
    def n_biases(self) -> int:
        return len(self.bias_inits())

    def activation_units(self) -> int:
        """Live floats per data row (activations and their temporaries), for sizing batches."""
        raise NotImplementedError

    def parameter_count(self) -> int:
        return sum(r * c for r, c, *_ in self.kernel_specs()) + sum(b.size for b in self.bias_inits())

    def params(self, flat: list) -> Params:
        return Params.from_flat(flat, self.n_kernels, self.n_biases, self.n_bn)

    def initial(self, seeds: list[int]) -> list[np.ndarray]:
        """Initial flat parameters of each trial, stacked [T, ...], drawn from each trial's seed alone."""
        specs = self.kernel_specs()
        kernels = [np.empty((len(seeds), rows, cols), np.float32) for rows, cols, *_ in specs]
        for t, seed in enumerate(seeds):
            rng = np.random.Generator(np.random.Philox(key=seed))
            for kernel, (rows, cols, fan_in, fan_out, init) in zip(kernels, specs, strict=True):
                if init == "orthogonal":
                    kernel[t] = _orthogonal(rng, rows, cols)
                else:
                    limit = math.sqrt(6.0 / (fan_in + fan_out))
                    kernel[t] = rng.uniform(-limit, limit, size=(rows, cols)).astype(np.float32)
        biases = [np.tile(b.astype(np.float32), (len(seeds), 1, 1)) for b in self.bias_inits()]
        widths = self.bn_widths()
        ones = [np.ones((len(seeds), 1, w), np.float32) for w in widths]
        zeros = [np.zeros((len(seeds), 1, w), np.float32) for w in widths]
        return [*kernels, *biases, *ones, *zeros, *zeros, *ones]

    # --- computation ---------------------------------------------------------------------------------

    def forward(self, p: Params, x, training: bool, dropout: Dropout | None = None, hyper=None):
        """Logits [rows, outputs]; in training also the batch statistics [(mean, var)] for the moving averages.

        `hyper` holds the trial's hyperparameters, for semantics that depend on them beyond a rate."""
        raise NotImplementedError

    def data_loss_and_correct(self, logits, y):
        """Mean cross-entropy and the number of correct predictions, as Keras computes them (from the logits;
        accuracy from the probabilities). A regression: mean squared error and the sum of squared errors."""
        if self.arch.regression:
            squared = jnp.square(logits[:, 0] - y)
            return jnp.mean(squared), jnp.sum(squared)
        if self.arch.n_outputs == 1:
            z = logits[:, 0]
            loss = jnp.maximum(z, 0.0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))  # tf's sigmoid cross-entropy
            predicted = (jax.nn.sigmoid(z) > 0.5).astype(jnp.float32)
        else:
            loss = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
            predicted = jnp.argmax(jax.nn.softmax(logits), axis=-1)
        return jnp.mean(loss), jnp.sum((predicted == y).astype(jnp.float32))

    @staticmethod
    def penalty(p: Params, l2):
        """L2 penalty: l2 * sum(w^2) over every kernel."""
        return sum(l2 * jnp.sum(jnp.square(k)) for k in p.kernels)

    def evaluate(self, p: Params, x, y, l2):
        """Inference-mode loss (with penalty) and score: accuracy, or a regression's RMSE."""
        logits, _ = self.forward(p, x, training=False)
        loss, correct = self.data_loss_and_correct(logits, y)
        return loss + self.penalty(p, l2), self.score(correct, x.shape[0])

    def score(self, total, rows: int):
        """Accuracy from the number correct, or RMSE from the sum of squared errors (as Keras's running metrics)."""
        return jnp.sqrt(total / rows) if self.arch.regression else total / rows

    def regression_extras(self, p: Params, x, y):
        """MAE and R2 in inference mode, as keras.metrics.MeanAbsoluteError and R2Score compute them."""
        logits, _ = self.forward(p, x, training=False)
        error = logits[:, 0] - y
        r2 = 1.0 - jnp.sum(jnp.square(error)) / jnp.sum(jnp.square(y - jnp.mean(y)))
        return jnp.mean(jnp.abs(error)), r2

    # --- layers shared by the families ---------------------------------------------------------------

    def _batch_norm(self, x, p: Params, i: int, training: bool, batch_stats: list):
        """BatchNormalization over every axis but the last (rows, and pixels for feature maps), as
        tf.nn.moments and tf.nn.batch_normalization compute it."""
        shape = (1,) * (x.ndim - 1) + (x.shape[-1],)
        if training:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axis=axes, keepdims=True)
            var = jnp.mean(jnp.square(x - jax.lax.stop_gradient(mean)), axis=axes, keepdims=True)
            batch_stats.append((mean.reshape(1, -1), var.reshape(1, -1)))
        else:
            mean, var = p.moving_means[i].reshape(shape), p.moving_vars[i].reshape(shape)
        inv = jax.lax.rsqrt(var + BN_EPSILON) * p.gammas[i].reshape(shape)
        return x * inv + (p.betas[i].reshape(shape) - mean * inv)

    def _dense_head(self, p: Params, x, first: int, training: bool, dropout, batch_stats: list, scale=None):
        """Hidden Dense -> [BN] -> Dropout layers, then the output Dense; `first` is the first dense kernel's index."""
        for i, width in enumerate(self.arch.hidden_units):
            x = self.act(_dense(x, p.kernels[first + i], p.biases[first + i], scale))
            scale = None
            if self.arch.batch_norm:
                x = self._batch_norm(x, p, first + i, training, batch_stats)
            if dropout is not None:
                x, scale = _drop_deferred(x, dropout(i + 1, (width,)))
        return _dense(x, p.kernels[-1], p.biases[-1], scale)

    def _dense_specs(self, n_in: int) -> list[tuple[int, int, int, int, str]]:
        widths = (n_in, *self.arch.hidden_units, self.arch.n_outputs)
        return [(a, b, a, b, "glorot") for a, b in itertools.pairwise(widths)]

    def _dense_biases(self) -> list[np.ndarray]:
        return [np.zeros((1, w)) for w in (*self.arch.hidden_units, self.arch.n_outputs)]


class MLP(Network):
    def __init__(self, arch: Architecture):
        super().__init__(arch)
        self.n_bn = len(arch.hidden_units) if arch.batch_norm else 0
        self.dropout_streams = {masks.INPUT_LAYER: "input_dropout"}
        self.dropout_streams.update({i + 1: "dropout_rate" for i in range(len(arch.hidden_units))})

    def kernel_specs(self):
        return self._dense_specs(self.arch.n_features)

    def bias_inits(self):
        return self._dense_biases()

    def bn_widths(self):
        return list(self.arch.hidden_units) if self.arch.batch_norm else []

    def activation_units(self) -> int:
        return 12 * sum(self.arch.hidden_units) + self.arch.n_features

    def forward(self, p: Params, x, training: bool, dropout=None, hyper=None):
        batch_stats: list = []
        scale = None
        if dropout is not None:
            x, scale = _drop_deferred(x, dropout(masks.INPUT_LAYER, (self.arch.n_features,)))
        return self._dense_head(p, x, 0, training, dropout, batch_stats, scale), batch_stats


class CNN(Network):
    def __init__(self, arch: Architecture):
        super().__init__(arch)
        self.n_blocks = len(arch.filters)
        self.n_bn = (self.n_blocks + len(arch.hidden_units)) if arch.batch_norm else 0
        self.dropout_streams = {masks.INPUT_LAYER: "input_dropout"}
        for b in range(self.n_blocks):
            for offset, axis in enumerate(("spatial_dropout", "conv_dropout", "pool_dropout")):
                self.dropout_streams[_CONV_STREAM + 10 * b + offset] = axis
        self.dropout_streams.update({i + 1: "dropout_rate" for i in range(len(arch.hidden_units))})

    def _block_shapes(self) -> list[tuple[int, int, int, int]]:
        """(height, width, channels in, filters) of each conv block's input."""
        (h, w), c, out = self.arch.image_shape, 1, []
        for f in self.arch.filters:
            out.append((h, w, c, f))
            h, w, c = h // POOL_SIZE, w // POOL_SIZE, f
        return out

    def _flat_size(self) -> int:
        h, w, _, f = self._block_shapes()[-1]
        return (h // POOL_SIZE) * (w // POOL_SIZE) * f

    def kernel_specs(self):
        k2 = KERNEL_SIZE * KERNEL_SIZE
        conv = [(k2 * c, f, k2 * c, k2 * f, "glorot") for _, _, c, f in self._block_shapes()]
        return conv + self._dense_specs(self._flat_size())

    def bias_inits(self):
        return [np.zeros((1, f)) for f in self.arch.filters] + self._dense_biases()

    def bn_widths(self):
        return [*self.arch.filters, *self.arch.hidden_units] if self.arch.batch_norm else []

    def activation_units(self) -> int:
        return sum(h * w * f * 6 for h, w, _, f in self._block_shapes()) + 12 * sum(self.arch.hidden_units)

    def forward(self, p: Params, x, training: bool, dropout=None, hyper=None):
        batch_stats: list = []
        drop = dropout is not None
        if drop:
            x = _apply(x, dropout(masks.INPUT_LAYER, (self.arch.n_features,)))
        h, w = self.arch.image_shape
        x = x.reshape(x.shape[0], h, w, 1)
        for b, (h, w, _, f) in enumerate(self._block_shapes()):
            x = self.act(_conv3x3(x, p.kernels[b]) + p.biases[b].reshape(1, 1, 1, f))
            if self.arch.batch_norm:
                x = self._batch_norm(x, p, b, training, batch_stats)
            stream = _CONV_STREAM + 10 * b
            if drop:
                x = _apply(x, dropout(stream, (1, 1, f)))  # SpatialDropout2D: whole feature maps
                x = _apply(x, dropout(stream + 1, (h, w, f)))
            x = _max_pool(x)
            if drop:
                x = _apply(x, dropout(stream + 2, (h // POOL_SIZE, w // POOL_SIZE, f)))
        x = x.reshape(x.shape[0], self._flat_size())  # row-major h, w, channels: Keras' Flatten
        return self._dense_head(p, x, self.n_blocks, training, dropout, batch_stats), batch_stats


def _conv3x3(x, kernel):
    """Conv2D(3x3, padding="same") as one matrix product of the image's 3x3 patches with the kernel in its
    [9c, f] form -- on a CPU, for these small images and a kernel per trial, several times faster than XLA's
    convolution (a grouped convolution once mapped over trials)."""
    rows, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = [padded[:, i : i + h, j : j + w, :] for i in range(KERNEL_SIZE) for j in range(KERNEL_SIZE)]
    columns = jnp.concatenate(patches, axis=-1).reshape(rows * h * w, KERNEL_SIZE * KERNEL_SIZE * c)
    return (columns @ kernel).reshape(rows, h, w, kernel.shape[-1])


def _max_pool(x):
    """MaxPooling2D(2) (valid padding) as a max over a reshape: XLA differentiates it far faster than a windowed
    reduction. Where a window's maximum is tied, the gradient is shared among the ties instead of going to the
    first; the ties are zeros from ReLU or dropout, whose gradient goes no further, so the weights' gradients agree."""
    rows, h, w, c = x.shape
    h2, w2 = h // POOL_SIZE, w // POOL_SIZE
    x = x[:, : h2 * POOL_SIZE, : w2 * POOL_SIZE]
    return jnp.max(x.reshape(rows, h2, POOL_SIZE, w2, POOL_SIZE, c), axis=(2, 4))


class RNN(Network):
    def __init__(self, arch: Architecture):
        super().__init__(arch)
        self.units = arch.hidden_units[0]
        self.dropout_streams = {masks.INPUT_LAYER: "input_dropout", 1: "dropout_rate"}
        for g in range(4):
            self.dropout_streams[_LSTM_INPUT_STREAM + g] = "lstm_dropout"
            self.dropout_streams[_LSTM_RECURRENT_STREAM + g] = "recurrent_dropout"

    def kernel_specs(self):
        features = self.arch.image_shape[1]
        u, n_out = self.units, self.arch.n_outputs
        return [
            (features, 4 * u, features, 4 * u, "glorot"),
            (u, 4 * u, u, 4 * u, "orthogonal"),
            (u, n_out, u, n_out, "glorot"),
        ]

    def bias_inits(self):
        u = self.units
        lstm = np.concatenate([np.zeros(u), np.ones(u), np.zeros(2 * u)])[None, :]  # unit_forget_bias
        return [lstm, np.zeros((1, self.arch.n_outputs))]

    def activation_units(self) -> int:
        steps, features = self.arch.image_shape
        return steps * (features * 4 + 4 * self.units * 4)

    def forward(self, p: Params, x, training: bool, dropout=None, hyper=None):
        """Trials with recurrent dropout (Keras' implementation 1) get four input masks, one per gate."""
        steps, features = self.arch.image_shape
        u = self.units
        drop = dropout is not None
        if drop:
            x = _apply(x, dropout(masks.INPUT_LAYER, (self.arch.n_features,)))
        rows = x.shape[0]
        x = x.reshape(rows, steps, features)
        kernel, recurrent, bias = p.kernels[0], p.kernels[1], p.biases[0]

        input_masks = [dropout(_LSTM_INPUT_STREAM + g, (1, features)) for g in range(4)] if drop else [None] * 4
        if input_masks[0] is not None:
            # Keras' implementation 2 (no recurrent dropout) uses one input mask for all four gates.
            one = hyper["recurrent_dropout"] > 0
            input_masks = [(jnp.where(one, keep, input_masks[0][0]), s) for keep, s in input_masks]
            projected = jnp.concatenate(
                [_apply(x, m) @ kernel[:, g * u : (g + 1) * u] for g, m in enumerate(input_masks)], axis=-1
            )
        else:
            projected = x @ kernel
        projected = projected + bias  # [rows, steps, 4u]

        rec_masks = [dropout(_LSTM_RECURRENT_STREAM + g, (u,)) for g in range(4)] if drop else [None]
        gate_kernels = [recurrent[:, g * u : (g + 1) * u] for g in range(4)]

        def step(carry, z_x):
            h, c = carry
            if rec_masks[0] is None:
                z = z_x + h @ recurrent
            else:
                z = z_x + jnp.concatenate([_apply(h, m) @ k for m, k in zip(rec_masks, gate_kernels, strict=True)], -1)
            i, f, g_, o = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * self.act(g_)
            return (jax.nn.sigmoid(o) * self.act(c), c), None

        zeros = jnp.zeros((rows, u))
        (h, _), _ = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(projected, 0, 1))  # over the time steps
        scale = None
        if drop:
            h, scale = _drop_deferred(h, dropout(1, (u,)))
        return _dense(h, p.kernels[-1], p.biases[-1], scale), []


def network(arch: Architecture) -> Network:
    return {"mlp": MLP, "cnn": CNN, "rnn": RNN}[arch.family](arch)
