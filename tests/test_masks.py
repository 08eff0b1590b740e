"""Dropout masks: exact inverted-dropout scaling, the right keep rate, independence across trials, units,
samples, epochs and layers, and valid per-trial shuffles."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from study.engines import masks

ROWS, UNITS = 64, 500


def mask(seeds, rate: float, epoch=0, step=0, layer=1, shape=(ROWS, UNITS)) -> np.ndarray:
    """One mask per seed, [len(seeds), *shape], as the engine draws them (one trial at a time, mapped)."""

    def one(seed):
        key = masks.stream_key(seed, jnp.int32(epoch), step, layer)
        threshold = masks.keep_thresholds(np.array(rate))
        return masks.dropout_mask(key, jnp.asarray(threshold), jnp.float32(rate), shape)

    return np.asarray(jax.vmap(one)(jnp.asarray(np.asarray(seeds, dtype=np.uint32))))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_kept_units_are_scaled_by_exactly_one_over_keep_probability(rate: float) -> None:
    m = mask([1, 2], rate)
    kept = m[m != 0]
    assert np.all(kept == np.float32(1.0) / (np.float32(1.0) - np.float32(rate)))


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 0.9])
def test_the_fraction_dropped_is_the_rate(rate: float) -> None:
    m = mask(list(range(16)), rate)
    dropped = (m == 0).mean()
    n = m.size
    assert abs(dropped - rate) <= 5 * np.sqrt(rate * (1 - rate) / n) + 1e-12


def _independent(a: np.ndarray, b: np.ndarray) -> bool:
    """2x2 contingency of two binary samples: chi-square does not reject independence at the 0.1% level."""
    a, b = a.ravel() != 0, b.ravel() != 0
    table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
    return stats.chi2_contingency(table).pvalue > 1e-3


def test_masks_are_independent_across_trials_epochs_steps_and_layers() -> None:
    base = mask([7], 0.5)[0]
    assert _independent(base, mask([8], 0.5)[0]), "trials"
    assert _independent(base, mask([7], 0.5, epoch=1)[0]), "epochs"
    assert _independent(base, mask([7], 0.5, step=1)[0]), "steps"
    assert _independent(base, mask([7], 0.5, layer=2)[0]), "layers"


@pytest.mark.parametrize(
    ("lag", "what"), [(1, "adjacent units"), (UNITS // 2, "distant units"), (UNITS, "adjacent samples")]
)
def test_masks_are_independent_across_units_and_samples(lag: int, what: str) -> None:
    # The correlation between element i and i+lag, as a z-score, in 20 independent batches of 8 trials:
    # independence means the z-scores look standard normal (mean ~0, spread ~1).
    z = []
    for batch in range(20):
        m = (mask(list(range(8 * batch, 8 * batch + 8)), 0.5) != 0).reshape(8, -1)
        a, b = m[:, :-lag].ravel(), m[:, lag:].ravel()
        z.append(np.corrcoef(a, b)[0, 1] * np.sqrt(a.size))
    assert abs(np.mean(z)) * np.sqrt(len(z)) < 4, what
    assert 0.5 < np.std(z) < 1.6, what


def test_many_trials_masks_have_no_pairwise_correlation() -> None:
    m = mask(list(range(100)), 0.5).reshape(100, -1) != 0
    corr = np.corrcoef(m.astype(np.float64))
    off_diagonal = corr[~np.eye(100, dtype=bool)]
    assert np.abs(off_diagonal).max() < 6 / np.sqrt(m.shape[1])


def test_a_trials_mask_depends_only_on_its_own_seed() -> None:
    alone = mask([42], 0.3)[0]
    in_batch = mask([1, 2, 42, 9], 0.3)[2]
    assert np.array_equal(alone, in_batch)
    assert not np.array_equal(mask([42], 0.3)[0], mask([43], 0.3)[0])


def test_shuffles_are_permutations_with_uniform_positions() -> None:
    seeds = jnp.arange(4000, dtype=jnp.uint32)
    keys = masks.stream_key(seeds, jnp.int32(0), 0, masks.SHUFFLE_LAYER)
    orders = np.asarray(jax.vmap(lambda key: masks.permutation(key, 10))(keys))
    assert all(sorted(row) == list(range(10)) for row in orders)
    where_zero = np.argmax(orders == 0, axis=1)
    assert stats.chisquare(np.bincount(where_zero, minlength=10)).pvalue > 1e-3
