"""Counter-based random numbers for the population engine's dropout masks and shuffles.

Every number is a hash of (trial seed, epoch, step, layer, element index), so a trial's masks depend on its own
seed only -- never on which trials share its batch or how large the batch is -- and no generator state has to be
carried through the training loop. The hash is `lowbias32` (a well-tested 32-bit integer mixer), about twice as
fast per number on our CPUs as TensorFlow's stateless Philox. `tests/test_masks.py` pins its independence.
"""

from __future__ import annotations

import study.quiet_tf  # noqa: F401  (silences TensorFlow's start-up; must come first)

# isort: split

import numpy as np
import tensorflow as tf

_GOLDEN = 0x9E3779B9
_KEY_MULTIPLIERS = (0x85EBCA6B, 0xC2B2AE35, 0x27D4EB2F, 0x165667B1)  # seed, epoch, step, layer
INPUT_LAYER = 0  # layer index of the input dropout; hidden layer l uses l; shuffles use SHUFFLE_LAYER
SHUFFLE_LAYER = 0xFFFF


def mix(x: tf.Tensor) -> tf.Tensor:
    """lowbias32: a bijective 32-bit mixer with low avalanche bias."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def stream_keys(seeds: tf.Tensor, epoch: tf.Tensor, step: int | tf.Tensor, layer: int) -> tf.Tensor:
    """One 32-bit key per trial for the numbers of one (epoch, step, layer): shape [T]."""
    parts = (seeds, tf.cast(epoch, tf.uint32), tf.cast(step, tf.uint32), tf.constant(layer, tf.uint32))
    key = tf.zeros_like(seeds)
    for part, multiplier in zip(parts, _KEY_MULTIPLIERS, strict=True):
        key = mix(key + part * tf.constant(multiplier, tf.uint32))
    return key


def _mix_np(x: np.ndarray) -> np.ndarray:
    """`mix` in NumPy, for the constant tables."""
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def element_offsets(n: int) -> tf.Tensor:
    """Element i's random-looking 32-bit label mix(i * golden ratio), a constant of shape [n].

    XOR-ing a stream key into labels that are themselves hashes means two streams can only coincide at
    isolated elements (as independent random numbers do), never as shifted copies of each other.
    """
    counters = (np.arange(n, dtype=np.uint64) * _GOLDEN % 2**32).astype(np.uint32)
    return tf.constant(_mix_np(counters))


def random_bits(keys: tf.Tensor, shape: tuple[int, ...]) -> tf.Tensor:
    """Uniform 32-bit integers of shape [T, *shape], one independent stream per trial key."""
    n = int(np.prod(shape))
    x = mix(tf.bitwise.bitwise_xor(element_offsets(n)[None, :], keys[:, None]))
    return tf.reshape(x, (-1, *shape))


def keep_thresholds(rates: np.ndarray) -> np.ndarray:
    """uint32 thresholds t with P(bits >= t) = 1 - rate to within 2**-32 (a unit is dropped when bits < t)."""
    return np.minimum(np.round(np.asarray(rates, dtype=np.float64) * 2.0**32), 2**32 - 1).astype(np.uint32)


def inverted_dropout_scale(rates: tf.Tensor) -> tf.Tensor:
    """What kept units are multiplied by: 1/(1-rate), so a unit's expected value is unchanged."""
    return 1.0 / (1.0 - rates)


def keep_mask(keys: tf.Tensor, thresholds: tf.Tensor, shape: tuple[int, ...]) -> tf.Tensor:
    """True for kept units, [T, *shape]: unit dropped with probability `rate` (thresholds from `keep_thresholds`)."""
    expand = (-1,) + (1,) * len(shape)
    return random_bits(keys, shape) >= tf.reshape(thresholds, expand)


def dropout_mask(keys: tf.Tensor, thresholds: tf.Tensor, rates: tf.Tensor, shape: tuple[int, ...]) -> tf.Tensor:
    """Inverted-dropout multipliers [T, *shape]: 0 for a dropped unit, 1/(1-rate) for a kept one."""
    expand = (-1,) + (1,) * len(shape)
    scale = tf.reshape(inverted_dropout_scale(rates), expand)
    return tf.cast(keep_mask(keys, thresholds, shape), tf.float32) * scale


def permutations(keys: tf.Tensor, n: int) -> tf.Tensor:
    """A uniformly random order of n rows per trial: shape [T, n], int32."""
    bits = random_bits(keys, (n,))
    return tf.argsort(tf.cast(tf.bitwise.right_shift(bits, 1), tf.int32), axis=1, stable=True)
