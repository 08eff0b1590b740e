"""Statistics over seeds: arrays or tidy frames in, numbers out, seedable. No plotting, no TensorFlow.

Modelled on rliable's small API, for the handful of seeds (4-30) a study can afford:

- point estimates robust to a stray seed (median, interquartile mean);
- Student t intervals of a mean and Welch t intervals of a difference of means, because the percentile
  bootstrap they replace under-covers at these seed counts (about 80% at 4 seeds and 91% at 10 for a nominal
  95%); neither fixes bimodal results where a few seeds collapse (see `interval`);
- paired comparisons against a reference (Wilcoxon signed-rank) with the smallest p-value the test can reach
  for given differences, so a report can say when no correction could ever let a difference through;
- family-wise corrections: Holm, and Westfall-Young max-T over sign flips of shared seeds, which keeps the
  correlation between comparisons that share a baseline and so is less conservative than Holm;
- a paired non-inferiority test ("no worse than the best by more than a margin");
- an effect size that reads as a probability, and the probability that each configuration is the best;
- variance shares (ANOVA) and the minimum detectable difference at a seed count.

Randomness is always an explicit argument (`seed` or `rng`). The heavy lifting is scipy's and statsmodels'.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05
N_RESAMPLES = 4000  # bootstrap resamples, for callers; the intervals here are t intervals and need none


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of values (rliable's recommended point estimate)."""
    return float(stats.trim_mean(np.asarray(values, dtype=float), 0.25))


def interval(values: np.ndarray, seed: int = 0, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student t confidence interval of the mean; (mean, mean) when every value is equal, (nan, nan) below two.

    The t interval holds its coverage at 5-30 seeds for normal-ish results (accuracies over a test set of a few
    hundred examples or more), where the percentile bootstrap it replaces does not. It does not hold when a few
    seeds collapse (say 1 in 10 stuck at chance): such a mean is not near normal at any seed count a study runs,
    and no interval of the mean fixes that; report the collapse rate instead. `seed` is accepted for callers of
    the bootstrap version and unused: the interval is deterministic.
    """
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return np.nan, np.nan
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(confidence)
    return float(ci.low), float(ci.high)


def describe(values: np.ndarray, seed: int = 0) -> dict[str, float]:
    """n, mean, sd, median, IQM and the 95% t interval of the mean of one configuration's seeds."""
    values = np.asarray(values, dtype=float)
    low, high = interval(values, seed)
    return {
        "n": len(values),
        "mean": float(np.mean(values)),
        "sd": float(np.std(values, ddof=1)) if len(values) > 1 else np.nan,
        "median": float(np.median(values)),
        "iqm": iqm(values),
        "ci_low": low,
        "ci_high": high,
    }


@dataclass(frozen=True)
class Comparison:
    """A configuration against a reference (the baseline, or the best configuration).

    `difference` is treatment minus reference. `prob_better` is the probability that a seed of the treatment
    beats the reference (ties count half): over the shared seeds when paired, over all pairs of seeds otherwise.
    """

    paired: bool
    n: int
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    prob_better: float


def compare(treatment: pd.Series, reference: pd.Series, seed: int = 0) -> Comparison:
    """Compare two configurations' per-seed values (Series indexed by seed).

    Paired on the seeds they share when they share at least two: Wilcoxon signed-rank p-value, t interval of the
    mean paired difference. Otherwise unpaired: Mann-Whitney U p-value, Welch t interval of the difference of
    means. The p-values are rank tests (robust to a stray seed); the intervals are t intervals because they cover
    at these seed counts. `seed` is accepted for callers of the bootstrap version and unused.
    """
    shared = treatment.index.intersection(reference.index)
    if len(shared) >= 2:
        d = treatment.loc[shared].to_numpy(float) - reference.loc[shared].to_numpy(float)
        low, high = interval(d)
        better = float(np.mean(d > 0) + 0.5 * np.mean(d == 0))
        return Comparison(True, len(d), float(d.mean()), low, high, _signed_rank_p(d), "Wilcoxon signed-rank", better)
    a, b = treatment.to_numpy(float), reference.to_numpy(float)
    if len(a) < 2 or len(b) < 2:
        difference = float(a.mean() - b.mean()) if len(a) and len(b) else np.nan
        return Comparison(
            False, min(len(a), len(b)), difference, np.nan, np.nan, np.nan, "none (too few seeds)", np.nan
        )
    low, high = _welch_interval(a, b, CONFIDENCE)
    u = stats.mannwhitneyu(a, b, alternative="two-sided")
    return Comparison(
        False,
        min(len(a), len(b)),
        float(a.mean() - b.mean()),
        low,
        high,
        float(u.pvalue),
        "Mann-Whitney U",
        float(u.statistic / (len(a) * len(b))),
    )


def _welch_interval(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[float, float]:
    """Welch t interval of mean(a) - mean(b): unequal variances, as two configurations' seeds usually have."""
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread at all: the difference is known
        difference = float(a[0] - b[0])
        return difference, difference
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence)
    return float(ci.low), float(ci.high)


def _signed_rank_p(d: np.ndarray) -> float:
    """scipy's two-sided Wilcoxon signed-rank p-value with its defaults; 1.0 when every difference is zero.

    The defaults (scipy >= 1.15): zeros are dropped from the ranking; without ties or zeros the exact null
    distribution for up to 50 pairs; with ties or zeros an exact sign-flip permutation test for up to 13 pairs,
    else the normal approximation (no continuity correction).
    """
    if not np.any(d != 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's precision warnings for nearly equal differences
        return float(stats.wilcoxon(d).pvalue)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (family-wise error control); NaN entries stay NaN and are not counted."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        adjusted[ok] = multipletests(p[ok], alpha=ALPHA, method="holm")[1]
    return adjusted


def smallest_p_value(n_pairs: int) -> float:
    """The smallest two-sided p-value a signed-rank (or sign-flip) test can reach with n pairs: 2 / 2**n.

    Exact for differences without ties or zeros (what `compare` reaches for up to 50 pairs); zeros and, past 13
    pairs, ties raise the floor: see `smallest_p_value_of`.
    """
    return 2.0 / 2.0**n_pairs


def smallest_p_value_of(differences: np.ndarray) -> float:
    """The smallest two-sided p-value `compare`'s signed-rank test can give for these paired differences.

    The floor depends on their tie and zero structure, not only on their number: scipy drops zero differences
    (each costs a pair: the floor becomes 2 / 2**(nonzero pairs)), and past 13 pairs ties switch it to the normal
    approximation, whose floor is far above 2 / 2**n. The most extreme outcome for given magnitudes is every
    difference of one sign, so this is scipy's p-value for |differences|. 1.0 when every difference is zero.
    """
    return _signed_rank_p(np.abs(np.asarray(differences, dtype=float)))


def max_t_adjusted(differences: np.ndarray, n_flips: int = 10000, rng: np.random.Generator | None = None) -> np.ndarray:
    """Westfall-Young single-step max-T adjusted p-values for m paired comparisons over shared seeds.

    `differences` is [n_seeds, m]: column j holds comparison j's paired differences, row i the same seed in every
    comparison (a seed missing from one comparison must be dropped from all: NaN raises). The statistic is each
    column's one-sample t (a column with no spread: 0 if its mean is 0, else infinite). Under the null every
    seed's differences are symmetric about 0, so the sign of a whole seed row can be flipped; flipping rows
    jointly keeps the correlation between comparisons (they share a baseline), which is what makes max-T less
    conservative than Holm while still controlling the family-wise error. Adjusted p_j is the share of flips
    whose largest |t| over all m columns reaches |t_j|: all 2**n flips exactly when 2**n <= n_flips, else
    (1 + count) / (1 + n_flips) over n_flips random flips from `rng` (None: a fixed seed, so reports
    reproduce). NaN for fewer than two seeds.
    """
    d = np.asarray(differences, dtype=float)
    if d.ndim != 2:
        raise ValueError(f"differences must be [n_seeds, m], got shape {d.shape}")
    if np.isnan(d).any():
        raise ValueError("differences contain NaN: drop the seeds missing from any comparison first")
    n, m = d.shape
    if n < 2 or m == 0:
        return np.full(m, np.nan)
    exact = 2**n <= n_flips
    if exact:  # every flip, the identity (no flip) first
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    else:  # the identity, then random flips
        bits = np.vstack([np.zeros((1, n), dtype=int), _generator(rng).integers(0, 2, size=(n_flips, n))])
    t = np.abs(_t_of_flips(1.0 - 2.0 * bits, d))
    observed = t[0]  # from the same product as the flips, so the identity reaches it exactly
    null_max = np.sort(t.max(axis=1) if exact else t[1:].max(axis=1))
    # Flips that tie the observed value in exact arithmetic may differ by rounding: count them as reaching it.
    reached = len(null_max) - np.searchsorted(null_max, observed * (1 - 1e-9), side="left")
    return reached / len(null_max) if exact else (1 + reached) / (1 + n_flips)


def _t_of_flips(signs: np.ndarray, d: np.ndarray) -> np.ndarray:
    """One-sample t of every column of d under every row of signs ([flips, n]) -> [flips, m], one matrix product.

    Flipping signs leaves each column's sum of squares unchanged, so the variance needs only the flipped mean.
    """
    n = d.shape[0]
    mean = signs @ d / n
    variance = np.maximum(((d**2).sum(axis=0) - n * mean**2) / (n - 1), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / np.sqrt(variance / n)
    return np.where(variance > 0, t, np.where(mean == 0, 0.0, np.copysign(np.inf, mean)))


@dataclass(frozen=True)
class NonInferiority:
    """A paired non-inferiority test of a setting against the best: is it worse by less than `margin`?

    `mean` and `lower` are of the differences setting minus best; `lower` is the one-sided (1 - alpha) lower t
    bound of their mean. `p_value` is the one-sided t test of H0: mean <= -margin; `non_inferior` is
    lower > -margin (the same decision as p_value < alpha).
    """

    n: int
    mean: float
    lower: float
    margin: float
    p_value: float
    non_inferior: bool


def non_inferior(differences: np.ndarray, margin: float, alpha: float = ALPHA) -> NonInferiority:
    """Paired non-inferiority: differences (setting minus best, one per shared seed) against a positive margin.

    Failing to find a difference is not evidence of no difference; this is. The bound is one-sided because only
    "worse than the best by the margin or more" is being ruled out: a two-sided (1 - alpha) interval would test at
    alpha / 2. `margin` is in the metric's units (0.005 is half a point of accuracy). Fewer than two differences:
    NaN bound and p-value, not non-inferior.
    """
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0 (in the metric's units: how much worse is acceptable), got {margin}")
    d = np.asarray(differences, dtype=float)
    mean = float(d.mean()) if len(d) else np.nan
    if len(d) < 2:
        return NonInferiority(len(d), mean, np.nan, margin, np.nan, False)
    if np.ptp(d) == 0:  # no spread: the mean difference is known exactly
        p = 0.0 if mean > -margin else 1.0
        return NonInferiority(len(d), mean, mean, margin, p, mean > -margin)
    result = stats.ttest_1samp(d, -margin, alternative="greater")
    lower = float(result.confidence_interval(1 - alpha).low)
    return NonInferiority(len(d), mean, lower, margin, float(result.pvalue), lower > -margin)


def probability_best(values: np.ndarray, n_resamples: int = 2000, rng: np.random.Generator | None = None) -> np.ndarray:
    """The bootstrap probability that each of k configurations has the highest mean over shared seeds.

    `values` is [n_seeds, k], a row per seed shared by all k configurations (NaN raises: drop seeds missing from
    any). Seed rows are resampled jointly, so a configuration that beats another on every seed wins every
    resample even when seed-to-seed noise dwarfs the gap. Configurations tied for the best in a resample share
    it equally; the result sums to 1. `rng`: None uses a fixed seed, so reports reproduce.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise ValueError(f"values must be [n_seeds, k], got shape {v.shape}")
    if np.isnan(v).any():
        raise ValueError("values contain NaN: drop the seeds missing from any configuration first")
    n, k = v.shape
    if n == 0 or k == 0:
        return np.full(k, np.nan)
    draws = _generator(rng).multinomial(n, np.full(n, 1 / n), size=n_resamples)  # times each seed is drawn
    means = draws @ v / n
    best = np.isclose(means, means.max(axis=1, keepdims=True), rtol=1e-12, atol=0)
    return (best / best.sum(axis=1, keepdims=True)).mean(axis=0)


def _generator(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng(0)


@dataclass(frozen=True)
class VarianceShares:
    """Share of the total sum of squares of a response explained by each term of a linear model."""

    table: pd.DataFrame  # term, share, p_value; "residual" last
    balanced: bool


def variance_explained(
    frame: pd.DataFrame, response: str, factors: list[str], block: str | None = None
) -> VarianceShares:
    """Two-way ANOVA (type II) of `response` on the factors, their pairwise interactions and an optional block.

    Every factor is treated as categorical. The block (the seed) enters as a main effect only: it absorbs
    seed-to-seed variation common to all configurations, the "seed noise" a reader compares effects against.
    Shares are sums of squares over the total sum of squares (eta squared), so they add up to 1 only when the
    design is balanced; `balanced` says whether every cell of the factorial has the same number of rows.
    """
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    data = pd.DataFrame({"y": frame[response].to_numpy(float)})
    names = {}
    for i, column in enumerate([*factors, *([block] if block else [])]):
        names[f"f{i}"] = column
        # As labels, with missing values (max-norm "none") a level of their own rather than rows dropped.
        data[f"f{i}"] = [("none" if pd.isna(v) else str(v)) for v in frame[column]]
    factor_terms = [f"C(f{i})" for i in range(len(factors))]
    formula = "y ~ " + (f"({' + '.join(factor_terms)})**2" if len(factor_terms) > 1 else factor_terms[0])
    if block:
        formula += f" + C(f{len(factors)})"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels warns about near-singular designs; shares stay meaningful
        table = anova_lm(smf.ols(formula, data=data).fit(), typ=2)
    total = float(((data["y"] - data["y"].mean()) ** 2).sum())

    def label(term: str) -> str:
        if term == "Residual":
            return "residual"
        parts = [names[p.removeprefix("C(").removesuffix(")")] for p in term.split(":")]
        return " x ".join(parts)

    shares = pd.DataFrame(
        {
            "term": [label(t) for t in table.index],
            "share": table["sum_sq"].to_numpy() / total if total > 0 else np.nan,
            "p_value": table["PR(>F)"].to_numpy(),
        }
    )
    cells = frame.groupby(factors, dropna=False).size()
    full = int(np.prod([frame[f].nunique(dropna=False) for f in factors]))
    return VarianceShares(shares, balanced=bool(len(cells) == full and cells.nunique() == 1))


def minimum_detectable_difference(sd_of_differences: float, n: int, alpha: float = ALPHA, power: float = 0.8) -> float:
    """The smallest true mean paired difference a two-sided paired t-test detects with `power`, given n seeds."""
    from statsmodels.stats.power import TTestPower

    if n < 2 or not np.isfinite(sd_of_differences):
        return np.nan
    effect = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided")
    return float(effect * sd_of_differences)
