"""The population engine's networks: T networks of one architecture computed together, one per model family.

Every parameter is stacked along a leading trial axis and kept rank 3 ([T, in, out] kernels, [T, 1, n] vectors),
so per-trial selections broadcast the same way for every parameter. Each family mirrors its Keras model in
`keras_engine` layer for layer:

- mlp: Dropout(input) -> per hidden width: Dense -> [BatchNormalization] -> Dropout(dropout_rate) -> output Dense.
- cnn: Dropout(input) -> per block: Conv2D(3x3, same) -> [BN] -> SpatialDropout2D -> Dropout(conv_dropout) ->
  MaxPooling2D(2) -> Dropout(pool_dropout); Flatten -> the MLP's dense head. A conv kernel is kept as
  [T, 3*3*channels_in, filters] (Keras' kernel reshaped) and the T convolutions run as one grouped convolution.
- rnn: Dropout(input) -> LSTM over the image rows -> Dropout(dropout_rate) -> output Dense. As in Keras 3, the
  LSTM's input and recurrent dropout draw one mask per sample for all time steps; with recurrent dropout on
  (Keras' implementation 1) each of the four gates has its own input and recurrent mask, otherwise one input
  mask serves all gates.

Kernels are initialised glorot-uniform (the LSTM's recurrent kernel orthogonal), biases zero (the LSTM's forget
gate bias one), from the trial's seed alone, so seeds pair up across configurations. Max-norm applies to every
kernel but the output layer's (for a conv kernel: each filter, Keras axis [0, 1, 2]); L2 to every kernel.
"""

from __future__ import annotations

import study.quiet_tf  # noqa: F401  (silences TensorFlow's start-up; must come first)

# isort: split

import itertools
import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from study.engines import masks

BN_EPSILON = 1e-3
KERNEL_SIZE, POOL_SIZE = 3, 2

# Mask stream ids: input 0 and dense hidden layer i -> i (as before families existed, so MLP masks are unchanged);
# conv block b -> 1000 + 10 b + {0 spatial, 1 conv, 2 pool}; LSTM gate g -> 2000 + g (input), 2010 + g (recurrent).
_CONV_STREAM, _LSTM_INPUT_STREAM, _LSTM_RECURRENT_STREAM = 1000, 2000, 2010


@dataclass(frozen=True)
class Architecture:
    """What trials must share to be stacked together."""

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


@dataclass
class Params:
    """Stacked parameters, flattened (for the graph's loop state) in the order kernels, biases, gammas, betas,
    moving means, moving variances -- the first four groups are the trainable ones."""

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
    def from_flat(values: list, n_kernels: int, n_biases: int, n_bn: int) -> Params:
        cuts = np.cumsum([0, n_kernels, n_biases, n_bn, n_bn, n_bn, n_bn])
        return Params(*(list(values[a:b]) for a, b in itertools.pairwise(cuts)))


def activation_fn(name: str):
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


def _apply(x, mask_and_scale):
    """Inverted dropout with a keep mask that broadcasts over x (e.g. one value per feature map)."""
    if mask_and_scale is None:
        return x
    keep, scale = mask_and_scale
    scale = tf.reshape(scale, (-1,) + (1,) * (len(x.shape) - 1))
    return tf.where(keep, x * scale, 0.0)


class StackedNet:
    """One family's stacked forward pass. `dropout(stream, unit_shape)` gives (keep mask [T, rows, *unit_shape],
    1/(1-rate) [T]) for a mask stream, or None when no trial uses it."""

    # mask stream id -> the axis whose rate it uses
    dropout_streams: dict[int, str]

    def __init__(self, arch: Architecture):
        self.arch = arch
        self.act = activation_fn(arch.activation)
        self.n_bn = 0

    # --- shape of the parameters ---------------------------------------------------------------------

    def kernel_specs(self) -> list[tuple[int, int, int, int, str]]:
        """Per kernel (in stacked form [in, out]): rows, cols, fan_in, fan_out, initializer."""
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
        """Live floats per row (activations and their temporaries), for sizing chunks."""
        raise NotImplementedError

    def params(self, flat: list) -> Params:
        return Params.from_flat(flat, self.n_kernels, self.n_biases, self.n_bn)

    def initial(self, seeds: list[int]) -> list[np.ndarray]:
        """Initial flat parameters per trial, drawn from each trial's seed alone."""
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
        ones = lambda: [np.ones((len(seeds), 1, w), np.float32) for w in widths]  # noqa: E731
        zeros = lambda: [np.zeros((len(seeds), 1, w), np.float32) for w in widths]  # noqa: E731
        return [*kernels, *biases, *ones(), *zeros(), *zeros(), *ones()]

    # --- computation ---------------------------------------------------------------------------------

    def forward(self, p: Params, x, training: bool, dropout=None, hyper=None):
        """Logits [T, rows, outputs]; in training also the batch statistics [(mean, var)] for the moving averages.

        `hyper` holds the per-trial hyperparameters, for semantics that depend on them beyond a rate."""
        raise NotImplementedError

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
        return tf.add_n([l2 * tf.reduce_sum(tf.square(k), axis=[1, 2]) for k in p.kernels])

    def evaluate(self, p: Params, x, y, l2):
        """Inference-mode loss (with penalty) and accuracy per trial."""
        logits, _ = self.forward(p, x, training=False)
        loss, correct = self.data_loss_and_correct(logits, y)
        return loss + self.penalty(p, l2), correct / tf.cast(tf.shape(x)[1], tf.float32)

    # --- layers shared by the families ---------------------------------------------------------------

    @staticmethod
    def _dense(x, kernel, bias, scale=None):
        product = tf.matmul(x, kernel)
        return (product if scale is None else product * scale) + bias

    def _batch_norm(self, x, p: Params, i: int, training: bool, batch_stats: list, axes: list[int]):
        """BatchNormalization over `axes` (rows, and pixels for feature maps) with [T, 1, C] parameters."""
        shape = (-1,) + (1,) * (len(x.shape) - 2) + (x.shape[-1],)
        if training:
            mean, var = tf.nn.moments(x, axes=axes, keepdims=True)
            batch_stats.append((tf.reshape(mean, (-1, 1, x.shape[-1])), tf.reshape(var, (-1, 1, x.shape[-1]))))
        else:
            mean, var = tf.reshape(p.moving_means[i], shape), tf.reshape(p.moving_vars[i], shape)
        beta, gamma = tf.reshape(p.betas[i], shape), tf.reshape(p.gammas[i], shape)
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, BN_EPSILON)

    def _dense_head(self, p: Params, x, first: int, training: bool, dropout, batch_stats: list, scale=None):
        """Hidden Dense -> [BN] -> Dropout layers, then the output Dense; `first` is the first dense kernel's index.

        Dropped units are zeroed with one `where`; the inverted-dropout scale is applied after the next matrix
        product, on its (usually much smaller) output: (m*x*s) @ W == ((m*x) @ W) * s, and exactly x @ W if s == 1.
        """
        hidden = self.arch.hidden_units
        for i, width in enumerate(hidden):
            x = self.act(self._dense(x, p.kernels[first + i], p.biases[first + i], scale))
            scale = None
            if self.arch.batch_norm:
                x = self._batch_norm(x, p, first + i, training, batch_stats, axes=[1])
            if training and dropout is not None:
                x, scale = _drop_deferred(x, dropout(i + 1, (width,)))
        return self._dense(x, p.kernels[-1], p.biases[-1], scale)

    def _dense_specs(self, n_in: int) -> list[tuple[int, int, int, int, str]]:
        widths = (n_in, *self.arch.hidden_units, self.arch.n_outputs)
        return [(a, b, a, b, "glorot") for a, b in itertools.pairwise(widths)]

    def _dense_biases(self) -> list[np.ndarray]:
        return [np.zeros((1, w)) for w in (*self.arch.hidden_units, self.arch.n_outputs)]


def _drop_deferred(x, mask_and_scale):
    if mask_and_scale is None:
        return x, None
    keep, scale = mask_and_scale
    return tf.where(keep, x, 0.0), tf.reshape(scale, (-1, 1, 1))


def _orthogonal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """keras.initializers.Orthogonal(gain=1) for a [rows, cols] kernel."""
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    return (q.T if rows < cols else q).astype(np.float32)


class StackedMLP(StackedNet):
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
        return 40 * max(self.arch.hidden_units)

    def forward(self, p: Params, x, training: bool, dropout=None, hyper=None):
        batch_stats: list = []
        scale = None
        if training and dropout is not None:
            x, scale = _drop_deferred(x, dropout(masks.INPUT_LAYER, (self.arch.n_features,)))
        return self._dense_head(p, x, 0, training, dropout, batch_stats, scale), batch_stats


class StackedCNN(StackedNet):
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
        return sum(h * w * f * 2 for h, w, _, f in self._block_shapes()) + max(self.arch.hidden_units)

    def forward(self, p: Params, x, training: bool, dropout=None, hyper=None):
        """The conv blocks run in a grouped layout [rows, h, w, T*channels]: each trial is one group of a grouped
        convolution (TensorFlow's fastest batched conv on CPU), and pooling and batch norm act per channel."""
        batch_stats: list = []
        drop = training and dropout is not None
        if drop:
            x = _apply(x, dropout(masks.INPUT_LAYER, (self.arch.n_features,)))
        t, rows = tf.shape(x)[0], tf.shape(x)[1]
        h, w = self.arch.image_shape
        x = tf.reshape(tf.transpose(x, [1, 0, 2]), (rows, t, h, w))
        x = tf.transpose(x, [0, 2, 3, 1])  # [rows, h, w, T * 1 channel]
        for b, (h, w, c, f) in enumerate(self._block_shapes()):
            x = self.act(_grouped_conv(x, p.kernels[b], p.biases[b], c))
            if self.arch.batch_norm:
                x = self._grouped_batch_norm(x, p, b, training, batch_stats)
            stream = _CONV_STREAM + 10 * b
            if drop:
                x = _apply_grouped(x, dropout(stream, (1, 1, f)))  # SpatialDropout2D: whole feature maps
                x = _apply_grouped(x, dropout(stream + 1, (h, w, f)))
            x = tf.nn.max_pool2d(x, POOL_SIZE, POOL_SIZE, "VALID")  # per channel, so per trial
            if drop:
                x = _apply_grouped(x, dropout(stream + 2, (h // POOL_SIZE, w // POOL_SIZE, f)))
        x = _ungroup(x, self.arch.filters[-1])  # [T, rows, h, w, f], flattened as Keras' Flatten does
        x = tf.reshape(x, (t, rows, self._flat_size()))
        return self._dense_head(p, x, self.n_blocks, training, dropout, batch_stats), batch_stats

    def _grouped_batch_norm(self, x, p: Params, i: int, training: bool, batch_stats: list):
        """BatchNormalization of feature maps: statistics per trial and channel over rows and pixels."""
        if training:
            mean, var = tf.nn.moments(x, axes=[0, 1, 2])
            t = tf.shape(p.gammas[i])[0]
            batch_stats.append((tf.reshape(mean, (t, 1, -1)), tf.reshape(var, (t, 1, -1))))
        else:
            mean, var = tf.reshape(p.moving_means[i], [-1]), tf.reshape(p.moving_vars[i], [-1])
        beta, gamma = tf.reshape(p.betas[i], [-1]), tf.reshape(p.gammas[i], [-1])
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, BN_EPSILON)


def _grouped_conv(x, kernel, bias, c: int):
    """Conv2D(3x3, padding="same") of every trial at once: x [rows, h, w, T*c], kernel [T, 9c, f] (im2col form)."""
    return _grouped_conv_no_bias(x, kernel, c) + tf.reshape(bias, [-1])


def _grouped_conv_no_bias(x, kernel, c: int):
    """The grouped convolution with a gradient of our own: TensorFlow's Eigen kernels (its CPU path when oneDNN is
    off, as on CPUs without AVX-512) run a grouped convolution forward but have no gradient for it.

    The input's gradient is again a grouped convolution (of the output's gradient with the kernel flipped and its
    channel axes swapped); the kernel's is a per-trial matrix product of the input's 3x3 patches with the output's
    gradient, which is the kernel's stored [T, 9c, f] form directly.
    """

    @tf.custom_gradient
    def conv(x, kernel):
        t, f = tf.shape(kernel)[0], kernel.shape[-1]
        k = tf.reshape(kernel, (t, KERNEL_SIZE, KERNEL_SIZE, c, f))
        forward_kernel = tf.reshape(tf.transpose(k, [1, 2, 3, 0, 4]), (KERNEL_SIZE, KERNEL_SIZE, c, t * f))

        def grad(dy):
            flipped = tf.reverse(k, axis=[1, 2])  # [T, 3, 3, c, f] -> [3, 3, f, T*c]
            backward_kernel = tf.reshape(tf.transpose(flipped, [1, 2, 4, 0, 3]), (KERNEL_SIZE, KERNEL_SIZE, f, t * c))
            dx = tf.nn.conv2d(dy, backward_kernel, 1, "SAME")
            patches = tf.image.extract_patches(x, [1, KERNEL_SIZE, KERNEL_SIZE, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME")
            patches = tf.reshape(patches, (-1, KERNEL_SIZE * KERNEL_SIZE, t, c))  # [rows*h*w, 9, T, c]
            patches = tf.reshape(tf.transpose(patches, [2, 1, 3, 0]), (t, KERNEL_SIZE * KERNEL_SIZE * c, -1))
            dy_per_trial = tf.transpose(tf.reshape(dy, (-1, t, f)), [1, 0, 2])  # [T, rows*h*w, f]
            return dx, tf.matmul(patches, dy_per_trial)

        return tf.nn.conv2d(x, forward_kernel, 1, "SAME"), grad

    return conv(x, kernel)


def _ungroup(x, channels: int):
    """[rows, h, w, T*channels] -> [T, rows, h, w, channels]."""
    shape = tf.shape(x)
    x = tf.reshape(x, (shape[0], shape[1], shape[2], -1, channels))
    return tf.transpose(x, [3, 0, 1, 2, 4])


def _apply_grouped(x, mask_and_scale):
    """Inverted dropout in the grouped layout, from a keep mask [T, rows, h|1, w|1, channels]."""
    if mask_and_scale is None:
        return x
    keep, scale = mask_and_scale
    mask_shape = tf.shape(keep)
    keep = tf.transpose(tf.cast(keep, tf.uint8), [1, 2, 3, 0, 4])  # (oneDNN transposes no bool on our CPUs)
    keep = tf.reshape(keep, (mask_shape[1], mask_shape[2], mask_shape[3], -1)) > 0
    channels = tf.reshape(tf.repeat(scale, mask_shape[4]), [-1])
    return tf.where(keep, x * channels, 0.0)


class StackedRNN(StackedNet):
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
        return steps * (features * 4 + 4 * self.units * 3)

    def forward(self, p: Params, x, training: bool, dropout=None, hyper=None):
        """Trials with recurrent dropout (Keras' implementation 1) get four input masks, one per gate."""
        steps, features = self.arch.image_shape
        u = self.units
        drop = training and dropout is not None
        if drop:
            x = _apply(x, dropout(masks.INPUT_LAYER, (self.arch.n_features,)))
        t, rows = tf.shape(x)[0], tf.shape(x)[1]
        x = tf.reshape(x, (t, rows, steps, features))
        kernel, recurrent, bias = p.kernels[0], p.kernels[1], p.biases[0]

        input_masks = [dropout(_LSTM_INPUT_STREAM + g, (1, features)) for g in range(4)] if drop else [None] * 4
        if input_masks[0] is not None:
            # Keras' implementation 2 (no recurrent dropout) uses one input mask for all four gates.
            one = tf.reshape(hyper["recurrent_dropout"] > 0, (-1, 1, 1, 1))
            input_masks = [(tf.where(one, keep, input_masks[0][0]), s) for keep, s in input_masks]
            flat = [tf.reshape(_apply(x, m), (t, rows * steps, features)) for m in input_masks]
            gates_x = [
                tf.reshape(tf.matmul(xg, kernel[:, :, g * u : (g + 1) * u]), (t, rows, steps, u))
                for g, xg in enumerate(flat)
            ]
            projected = tf.concat(gates_x, axis=-1)
        else:
            projected = tf.matmul(tf.reshape(x, (t, rows * steps, features)), kernel)
            projected = tf.reshape(projected, (t, rows, steps, 4 * u))
        projected = projected + bias[:, :, None, :]

        rec_masks = [dropout(_LSTM_RECURRENT_STREAM + g, (u,)) for g in range(4)] if drop else [None]
        h = tf.zeros((t, rows, u))
        c = tf.zeros((t, rows, u))
        for step in range(steps):
            if rec_masks[0] is None:
                z = projected[:, :, step] + tf.matmul(h, recurrent)
            else:
                z = projected[:, :, step] + tf.concat(
                    [tf.matmul(_apply(h, m), recurrent[:, :, g * u : (g + 1) * u]) for g, m in enumerate(rec_masks)],
                    axis=-1,
                )
            i, f, g_, o = tf.split(z, 4, axis=-1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * self.act(g_)
            h = tf.sigmoid(o) * self.act(c)
        scale = None
        if drop:
            h, scale = _drop_deferred(h, dropout(1, (u,)))
        return self._dense(h, p.kernels[-1], p.biases[-1], scale), []


def stacked_net(arch: Architecture) -> StackedNet:
    return {"mlp": StackedMLP, "cnn": StackedCNN, "rnn": StackedRNN}[arch.family](arch)
