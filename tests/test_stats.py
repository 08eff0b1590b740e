"""The statistics module against hand-computed values and against scipy/statsmodels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from study.analysis import stats


def test_iqm_is_the_mean_of_the_middle_half() -> None:
    assert stats.iqm(np.array([8, 1, 7, 2, 6, 3, 5, 4])) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert stats.iqm(np.array([0.0, 0.5, 0.5, 0.5, 100.0, 0.5, 0.5, 0.5])) == pytest.approx(0.5)  # outliers ignored


def test_describe_matches_numpy_and_its_interval_brackets_the_mean() -> None:
    values = np.array([0.81, 0.84, 0.79, 0.90, 0.86, 0.83])
    d = stats.describe(values)
    assert d["n"] == 6
    assert d["mean"] == pytest.approx(values.mean())
    assert d["sd"] == pytest.approx(values.std(ddof=1))
    assert d["median"] == pytest.approx(np.median(values))
    assert d["ci_low"] < d["mean"] < d["ci_high"]
    assert values.min() <= d["ci_low"] and d["ci_high"] <= values.max()


def test_interval_is_reproducible_for_a_seed_and_degenerate_cases_are_explicit() -> None:
    values = np.random.default_rng(1).normal(0.8, 0.05, 12)
    assert stats.interval(values, seed=3) == stats.interval(values, seed=3)
    assert stats.interval(np.full(5, 0.7)) == (pytest.approx(0.7), pytest.approx(0.7))
    assert all(np.isnan(stats.interval(np.array([0.7]))))


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    covered = [
        low <= 0.5 <= high for low, high in (stats.interval(rng.normal(0.5, 0.1, 30), seed=i) for i in range(300))
    ]
    assert 0.90 <= np.mean(covered) <= 0.99  # percentile bootstrap at n=30 covers slightly under 95%


def test_paired_comparison_hand_computed() -> None:
    seeds = [0, 1, 2, 3, 4, 5]
    reference = pd.Series([0.80, 0.82, 0.78, 0.85, 0.81, 0.79], index=seeds)
    treatment = reference + pd.Series([0.01, 0.02, 0.03, 0.04, 0.05, 0.06], index=seeds)
    c = stats.compare(treatment, reference)
    assert c.paired and c.n == 6 and c.test == "Wilcoxon signed-rank"
    assert c.difference == pytest.approx(0.035)
    assert c.p_value == pytest.approx(2 / 2**6)  # all six ranks positive: exact two-sided p = 2/64
    assert c.prob_better == 1.0
    assert c.ci_low > 0


def test_paired_comparison_uses_only_shared_seeds_and_counts_ties_half() -> None:
    reference = pd.Series([0.5, 0.5, 0.5, 0.5, 0.9], index=[0, 1, 2, 3, 9])
    treatment = pd.Series([0.6, 0.5, 0.4, 0.6], index=[0, 1, 2, 3])  # differences +0.1, 0, -0.1, +0.1
    c = stats.compare(treatment, reference)
    assert c.n == 4
    assert c.prob_better == pytest.approx((2 + 0.5) / 4)
    assert c.difference == pytest.approx(0.025)
    assert c.p_value == pytest.approx(scipy_stats.wilcoxon([0.1, 0.0, -0.1, 0.1]).pvalue)


def test_identical_configurations_have_p_value_one() -> None:
    s = pd.Series([0.7, 0.8, 0.9], index=[0, 1, 2])
    c = stats.compare(s, s)
    assert c.p_value == 1.0 and c.difference == 0.0 and c.prob_better == 0.5


def test_unpaired_fallback_when_seeds_are_not_shared() -> None:
    treatment = pd.Series([3.0, 4.0, 5.0], index=[10, 11, 12])
    reference = pd.Series([1.0, 2.0, 3.0], index=[0, 1, 2])
    c = stats.compare(treatment, reference)
    assert not c.paired and c.test == "Mann-Whitney U"
    assert c.difference == pytest.approx(2.0)
    assert c.prob_better == pytest.approx(8.5 / 9)  # 8 of 9 pairs better, one tie counted half
    assert c.p_value == pytest.approx(scipy_stats.mannwhitneyu([3, 4, 5], [1, 2, 3], alternative="two-sided").pvalue)


def test_holm_hand_computed_and_nan_untouched() -> None:
    # sorted: 0.01*3 = 0.03; 0.03*2 = 0.06; 0.04*1 = 0.04 -> raised to 0.06 to keep the order
    adjusted = stats.holm(np.array([0.01, 0.04, np.nan, 0.03]))
    np.testing.assert_allclose(adjusted[[0, 1, 3]], [0.03, 0.06, 0.06])
    assert np.isnan(adjusted[2])


def test_smallest_p_value_is_what_the_signed_rank_test_reaches() -> None:
    assert stats.smallest_p_value(10) == pytest.approx(scipy_stats.wilcoxon(np.arange(1, 11) / 100).pvalue)


def _factorial(rng, n_seeds: int = 6) -> pd.DataFrame:
    rows = [
        {"a": a, "b": b, "seed": s}
        for a in (0.0, 0.5)
        for b in (np.nan, 3.0, 1.0)  # a missing level, like max-norm "none"
        for s in range(n_seeds)
    ]
    frame = pd.DataFrame(rows)
    frame["y"] = 0.1 * frame["a"] + 0.02 * frame["seed"] + rng.normal(0, 0.01, len(frame))
    return frame


def test_variance_shares_of_a_balanced_design_match_hand_computed_sums_of_squares() -> None:
    frame = _factorial(np.random.default_rng(0))
    shares = stats.variance_explained(frame, "y", ["a", "b"], block="seed")
    table = shares.table.set_index("term")
    total = ((frame.y - frame.y.mean()) ** 2).sum()
    ss_a = (frame.groupby("a").y.transform("mean") - frame.y.mean()).pow(2).sum()
    ss_seed = (frame.groupby("seed").y.transform("mean") - frame.y.mean()).pow(2).sum()
    assert shares.balanced
    assert table.loc["a", "share"] == pytest.approx(ss_a / total)
    assert table.loc["seed", "share"] == pytest.approx(ss_seed / total)
    assert table["share"].sum() == pytest.approx(1.0)  # the missing level is a level, no row dropped
    assert table.loc["a", "p_value"] < 1e-6 and table.loc["b", "p_value"] > 0.001
    assert list(table.index) == ["a", "b", "seed", "a x b", "residual"]


def test_an_unbalanced_design_is_flagged() -> None:
    frame = _factorial(np.random.default_rng(0)).iloc[:-2]
    assert not stats.variance_explained(frame, "y", ["a", "b"]).balanced


def test_minimum_detectable_difference_matches_statsmodels_and_the_normal_approximation() -> None:
    from statsmodels.stats.power import TTestPower

    mdd = stats.minimum_detectable_difference(0.02, 30)
    assert TTestPower().power(effect_size=mdd / 0.02, nobs=30, alpha=0.05) == pytest.approx(0.8, abs=1e-4)
    assert mdd == pytest.approx((1.96 + 0.8416) * 0.02 / np.sqrt(30), rel=0.05)
    assert stats.minimum_detectable_difference(0.02, 10, alpha=0.001) > stats.minimum_detectable_difference(0.02, 10)
