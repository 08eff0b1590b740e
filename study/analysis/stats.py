"""Statistics over seeds: arrays or tidy frames in, numbers out, seedable. No plotting, no TensorFlow.

Modelled on rliable's small API: point estimates that are robust to a stray seed (median, interquartile mean),
percentile-bootstrap intervals, paired comparisons against a baseline with a multiple-comparison correction, and
an effect size that reads as a probability. The heavy lifting is scipy's and statsmodels'.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05
N_RESAMPLES = 4000


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of values (rliable's recommended point estimate)."""
    return float(stats.trim_mean(np.asarray(values, dtype=float), 0.25))


def interval(values: np.ndarray, seed: int = 0, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean; (nan, nan) for fewer than two values."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return np.nan, np.nan
    result = stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=confidence,
        n_resamples=N_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def describe(values: np.ndarray, seed: int = 0) -> dict[str, float]:
    """n, mean, sd, median, IQM and the 95% bootstrap interval of the mean of one configuration's seeds."""
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

    Paired on the seeds they share (Wilcoxon signed-rank test, bootstrap of the mean paired difference) when
    they share at least two; otherwise unpaired (Mann-Whitney U, bootstrap of the difference of means).
    """
    shared = treatment.index.intersection(reference.index)
    if len(shared) >= 2:
        d = treatment.loc[shared].to_numpy(float) - reference.loc[shared].to_numpy(float)
        low, high = interval(d, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns when every difference is zero
            p = float(stats.wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
        better = float(np.mean(d > 0) + 0.5 * np.mean(d == 0))
        return Comparison(True, len(d), float(d.mean()), low, high, p, "Wilcoxon signed-rank", better)
    a, b = treatment.to_numpy(float), reference.to_numpy(float)
    if len(a) < 2 or len(b) < 2:
        difference = float(a.mean() - b.mean()) if len(a) and len(b) else np.nan
        return Comparison(
            False, min(len(a), len(b)), difference, np.nan, np.nan, np.nan, "none (too few seeds)", np.nan
        )
    result = stats.bootstrap(
        (a, b),
        lambda x, y, axis: x.mean(axis) - y.mean(axis),
        paired=False,
        confidence_level=CONFIDENCE,
        n_resamples=N_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    u = stats.mannwhitneyu(a, b, alternative="two-sided")
    return Comparison(
        False,
        min(len(a), len(b)),
        float(a.mean() - b.mean()),
        float(result.confidence_interval.low),
        float(result.confidence_interval.high),
        float(u.pvalue),
        "Mann-Whitney U",
        float(u.statistic / (len(a) * len(b))),
    )


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
    """The smallest two-sided p-value a signed-rank (or sign-flip) test can reach with n pairs: 2 / 2**n."""
    return 2.0 / 2.0**n_pairs


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
