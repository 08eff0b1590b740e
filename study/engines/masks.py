"""Counter-based random numbers for the population engine's dropout masks and shuffles, in JAX.

Every number is a hash of (trial seed, epoch, step, layer, element index), so a trial's masks depend on its own
seed only -- never on which trials share its batch, how large the batch is, or how many devices it is split over
-- and no generator state has to be carried through the training loop. The hash is `lowbias32` (a well-tested
32-bit integer mixer): a few integer operations per number, far cheaper on a CPU than a cryptographic generator.
The functions work on one trial (a scalar seed); the engine maps them over trials. `tests/test_masks.py` pins
their independence.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

_GOLDEN = 0x9E3779B9
_KEY_MULTIPLIERS = (0x85EBCA6B, 0xC2B2AE35, 0x27D4EB2F, 0x165667B1)  # seed, epoch, step, layer
INPUT_LAYER = 0  # layer index of the input dropout; hidden layer l uses l; shuffles use SHUFFLE_LAYER
SHUFFLE_LAYER = 0xFFFF
MC_EPOCH = 0x7FFFFF00  # the "epoch" of Monte Carlo dropout passes (+ 0 test, + 1 validation): beyond any real epoch


def mix(x: jnp.ndarray) -> jnp.ndarray:
    """lowbias32: a bijective 32-bit mixer with low avalanche bias."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def stream_key(seed: jnp.ndarray, epoch: jnp.ndarray, step: int | jnp.ndarray, layer: int) -> jnp.ndarray:
    """The 32-bit key of one trial's numbers for one (epoch, step, layer)."""
    key = jnp.uint32(0)
    for part, multiplier in zip((seed, epoch, step, layer), _KEY_MULTIPLIERS, strict=True):
        key = mix(key + jnp.asarray(part).astype(jnp.uint32) * jnp.uint32(multiplier))
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


def element_offsets(n: int) -> np.ndarray:
    """Element i's random-looking 32-bit label mix(i * golden ratio), a constant of shape [n].

    XOR-ing a stream key into labels that are themselves hashes means two streams can only coincide at
    isolated elements (as independent random numbers do), never as shifted copies of each other.
    """
    counters = (np.arange(n, dtype=np.uint64) * _GOLDEN % 2**32).astype(np.uint32)
    return _mix_np(counters)


def random_bits(key: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
    """Uniform 32-bit integers of `shape` from one trial's stream key."""
    offsets = element_offsets(int(np.prod(shape))).reshape(shape)
    return mix(jnp.asarray(offsets) ^ key)


def keep_thresholds(rates: np.ndarray) -> np.ndarray:
    """uint32 thresholds t with P(bits >= t) = 1 - rate to within 2**-32 (a unit is dropped when bits < t)."""
    return np.minimum(np.round(np.asarray(rates, dtype=np.float64) * 2.0**32), 2**32 - 1).astype(np.uint32)


def inverted_dropout_scale(rate: jnp.ndarray) -> jnp.ndarray:
    """What kept units are multiplied by: 1/(1-rate), so a unit's expected value is unchanged."""
    return 1.0 / (1.0 - rate)


def keep_mask(key: jnp.ndarray, threshold: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
    """True for kept units: each dropped with probability `rate` (threshold from `keep_thresholds`)."""
    return random_bits(key, shape) >= threshold


def dropout_mask(key: jnp.ndarray, threshold: jnp.ndarray, rate: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
    """Inverted-dropout multipliers: 0 for a dropped unit, 1/(1-rate) for a kept one."""
    return keep_mask(key, threshold, shape).astype(jnp.float32) * inverted_dropout_scale(rate)


def permutation(key: jnp.ndarray, n: int) -> jnp.ndarray:
    """A uniformly random order of n rows (int32), from one trial's stream key."""
    bits = random_bits(key, (n,))
    return jnp.argsort((bits >> 1).astype(jnp.int32), stable=True)
