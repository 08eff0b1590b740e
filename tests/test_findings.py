"""The analysis' findings on synthetic tables whose answer is known: baselines per architecture, a regulariser on
in every trial, selection on validation, the residual's label, untestable configurations, nuisance tuning."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from study.analysis import findings, metrics, stats
from study.analysis.tables import completed, summary
from study.axes import AXES, AXIS
from study.errors import StudyError
from study.schema import COMPLETED


def synthetic(
    grid: dict[str, list], seeds: int, accuracy, validation=None, rng_seed: int = 0, extra: dict | None = None
) -> pd.DataFrame:
    """A finished study's table: every (configuration, seed) of `grid` (other axes at their defaults), test accuracy
    `accuracy(config, seed, rng)` (None: a regression's, blank accuracy columns), validation accuracy
    `validation(config, seed, rng)` when given, and each `extra` column (test_rmse, validation_nll, ...) from its
    function of (config, seed, rng)."""
    rng = np.random.default_rng(rng_seed)
    extra = extra or {}
    defaults = {a: (AXIS[a].off if AXIS[a].scientific else None) for a in AXES}
    defaults.update(hidden_units="8", learning_rate=1e-3, epochs=100, batch_size=32)
    rows = []
    names = list(grid)
    for seed in range(seeds):
        for values in itertools.product(*grid.values()):
            config = {**defaults, **dict(zip(names, values, strict=True))}
            key = "-".join(f"{k}{v}" for k, v in config.items() if k in names)
            test = accuracy(config, seed, rng) if accuracy else np.nan
            validated = validation or any(c.startswith("validation_") for c in extra)
            rows.append(
                {
                    **config,
                    "config_key": key,
                    "trial_key": f"{key}-s{seed}",
                    "seed": seed,
                    "status": COMPLETED,
                    "test_accuracy": test,
                    "train_accuracy": 1.0 if accuracy else np.nan,
                    "validation_accuracy": validation(config, seed, rng) if validation else np.nan,
                    "best_epoch": 50,
                    "epochs_run": 100,
                    "still_improving": False,
                    "n_train": 300,
                    "n_validation": 100 if validated else 0,
                    "n_test": 200,
                    **{column: value(config, seed, rng) for column, value in extra.items()},
                }
            )
    return completed(pd.DataFrame(rows))


def seed_effect(seed: int) -> float:
    return 0.01 * (seed % 5)


def test_each_width_is_compared_with_its_own_unregularised_run() -> None:
    # The wide network is 5 points better whatever the dropout; dropout itself does nothing.
    def accuracy(config, seed, rng):
        return 0.80 + (0.05 if config["hidden_units"] == "64" else 0) + seed_effect(seed) + rng.normal(0, 0.002)

    done = synthetic({"dropout_rate": [0.0, 0.5], "hidden_units": ["8", "64"]}, 10, accuracy)
    table = summary(done).set_index("config_key")
    wide_dropout = table.loc["dropout_rate0.5-hidden_units64"]
    assert wide_dropout.baseline_key == "dropout_rate0.0-hidden_units64"
    assert abs(wide_dropout.vs_baseline_difference) < 0.005  # not the +5 points of the width
    planned = findings.planned_effects(done)
    assert sorted(e.context for e in planned) == ["width 64", "width 8"]
    assert all(e.verdict == "noise" for e in planned)


def test_a_regulariser_on_in_every_trial_still_leaves_a_baseline() -> None:
    # Early stopping is on in every trial (as in the overfitting Q&A's set-up): it is part of the baseline.
    def accuracy(config, seed, rng):
        return 0.80 + 0.04 * (config["dropout_rate"] > 0) + seed_effect(seed) + rng.normal(0, 0.002)

    done = synthetic({"dropout_rate": [0.0, 0.5], "early_stopping": [True]}, 10, accuracy)
    table = summary(done)
    assert table["baseline_key"].notna().all()
    (effect,) = findings.planned_effects(done)
    assert effect.verdict == "helps" and effect.difference == pytest.approx(0.04, abs=0.003)
    assert findings.power_info(done, table, [effect]) is not None


def test_selection_uses_validation_and_reports_the_test_result_of_what_it_chose() -> None:
    # Dropout 0.2 is best on validation; dropout 0.5 happens to read best on test. The report picks 0.2.
    def validation(config, seed, rng):
        return 0.80 + {0.0: 0.0, 0.2: 0.03, 0.5: 0.01}[config["dropout_rate"]] + rng.normal(0, 0.002)

    def accuracy(config, seed, rng):
        return 0.80 + {0.0: 0.0, 0.2: 0.01, 0.5: 0.03}[config["dropout_rate"]] + rng.normal(0, 0.002)

    done = synthetic({"dropout_rate": [0.0, 0.2, 0.5]}, 8, accuracy, validation)
    table = summary(done)
    assert table["selected_on"].iloc[0] == "validation_accuracy"
    recommendation = findings.recommendation_info(done, table)
    assert recommendation.best == "dropout 0.2"
    assert recommendation.best_test_mean == pytest.approx(0.81, abs=0.003)
    (effect,) = findings.planned_effects(done)
    assert effect.configuration == "dropout 0.2"
    protocol = findings.protocol_info(done, {})
    assert not protocol.optimistic and protocol.test_row_points == pytest.approx(0.5)


def test_without_validation_rows_the_protocol_says_selection_used_the_test_set() -> None:
    done = synthetic({"dropout_rate": [0.0, 0.5]}, 4, lambda c, s, r: 0.8 + r.normal(0, 0.01))
    protocol = findings.protocol_info(done, {"dataset": {"split": {"per_seed": True}}})
    assert protocol.optimistic and protocol.selection_metric == "test_accuracy"
    assert "train/test split" in protocol.varied and "data draw" in protocol.fixed
    assert "Adam at learning rate 0.001" in protocol.settings


def test_the_anova_residual_is_not_called_seed_noise_when_it_holds_three_way_interactions() -> None:
    def accuracy(config, seed, rng):
        return 0.8 + 0.02 * config["dropout_rate"] + rng.normal(0, 0.01)

    grid = {"dropout_rate": [0.0, 0.5], "input_dropout": [0.0, 0.2], "l2": [0.0, 0.01]}
    done = synthetic(grid, 6, accuracy)
    three = findings.variance_info(done, list(grid))
    assert not three.residual_is_seed_noise
    y = done["test_accuracy"]
    within = done.groupby("config_key")["test_accuracy"].transform(lambda v: v - v.mean())
    assert three.seed_noise == pytest.approx((within**2).sum() / ((y - y.mean()) ** 2).sum())
    assert findings.variance_info(done, ["dropout_rate", "l2"]).residual_is_seed_noise


def test_a_configuration_with_too_few_seeds_is_untested_not_indistinguishable() -> None:
    done = synthetic({"dropout_rate": [0.0, 0.2, 0.5]}, 6, lambda c, s, r: 0.8 + 0.05 * c["dropout_rate"])
    done = done[~((done["dropout_rate"] == 0.0) & (done["seed"] > 0))]  # the baseline has one seed
    table = summary(done).set_index("config_key")
    assert not table.loc["dropout_rate0.0", "indistinguishable_from_best"]
    recommendation = findings.recommendation_info(done, summary(done))
    assert recommendation.untested == 1


def test_seeds_without_a_difference_raise_the_floor_of_the_signed_rank_test() -> None:
    # Two of seven seeds come out exactly equal (a common thing with 70 test rows): the signed-rank test drops them,
    # so its floor is that of five pairs, 2/2**5 > 0.05, and significance is out of reach, which 2/2**7 hid.
    def accuracy(config, seed, rng):
        return 0.8 + seed_effect(seed) + (0.01 * (seed > 1) if config["dropout_rate"] > 0 else 0.0)

    done = synthetic({"dropout_rate": [0.0, 0.5]}, 7, accuracy)
    differences = np.array([0, 0, 0.01, 0.01, 0.01, 0.01, 0.01])
    assert stats.smallest_p_value_of(differences) == pytest.approx(stats.smallest_p_value(5))
    (dropout,) = findings.planned_effects(done)
    assert not dropout.reachable and dropout.verdict == "probably helps"
    assert findings.significance_reachable(stats.smallest_p_value(7), 1)  # what the old floor claimed


def test_power_note_and_conclusions_share_one_reachability_rule() -> None:
    def accuracy(config, seed, rng):
        return 0.8 + 0.03 * (config["dropout_rate"] > 0) + rng.normal(0, 0.005)

    for seeds in (4, 5, 6, 10):
        done = synthetic({"dropout_rate": [0.0, 0.2, 0.5], "l2": [0.0, 0.001]}, seeds, accuracy)
        table = summary(done)
        planned = findings.planned_effects(done)
        power = findings.power_info(done, table, planned)
        assert power.reachable == all(e.reachable for e in planned), seeds


def test_a_nuisance_axis_is_tuned_per_setting_on_validation() -> None:
    # The best learning rate moves with dropout: 1e-3 without dropout, 1e-2 with it.
    def validation(config, seed, rng):
        best = 1e-2 if config["dropout_rate"] > 0 else 1e-3
        return 0.85 - (0.0 if config["learning_rate"] == best else 0.05) + rng.normal(0, 0.002)

    def accuracy(config, seed, rng):
        return validation(config, seed, rng)

    done = synthetic({"dropout_rate": [0.0, 0.5], "learning_rate": [1e-3, 1e-2]}, 5, accuracy, validation)
    tuned = findings.tune_nuisance(done, ("learning_rate",), "validation_accuracy")
    chosen = tuned.drop_duplicates("config_key").set_index("dropout_rate")["tuned_learning_rate"]
    assert tuned["learning_rate"].isna().all()  # no longer an axis of the tuned table
    assert chosen.to_dict() == {0.0: 1e-3, 0.5: 1e-2}
    rows = findings.isolation_info(done, "dropout_rate", "learning_rate", "validation_accuracy")
    best = rows[rows["curve"] == findings.TUNED].drop_duplicates("dropout_rate").set_index("dropout_rate")
    assert best["learning_rate"].to_dict() == {0.0: 1e-3, 0.5: 1e-2}
    assert set(rows["curve"]) == {findings.TUNED, "learning rate 0.001", "learning rate 0.01"}


def test_max_t_adjusts_the_exploratory_family_where_every_configuration_has_every_seed() -> None:
    def accuracy(config, seed, rng):
        return 0.8 + 0.03 * (config["dropout_rate"] == 0.5) + seed_effect(seed) + rng.normal(0, 0.003)

    done = synthetic({"dropout_rate": [0.0, 0.2, 0.5], "l2": [0.0, 0.001]}, 10, accuracy)
    table = summary(done).set_index("config_key")
    assert table.loc["dropout_rate0.5-l20.0", "vs_baseline_p_maxt"] < 0.01
    assert table.loc["dropout_rate0.2-l20.001", "vs_baseline_p_maxt"] > 0.05
    assert np.isnan(table.loc["dropout_rate0.0-l20.0", "vs_baseline_p_maxt"])  # the baseline itself
    holes = summary(done.iloc[1:])  # one trial missing: no max-T
    assert holes["vs_baseline_p_maxt"].isna().all()


# --- other metrics: lower is better ------------------------------------------------------------------------


def rmse(effects: dict[float, float], noise: float = 0.005):
    """An RMSE of 1.0 plus a seed effect, `effects[dropout rate]` and noise (a regression's error)."""

    def value(config, seed, rng):
        return 1.0 + 0.02 * (seed % 5) + effects[config["dropout_rate"]] + rng.normal(0, noise)

    return value


def regression(grid: dict[str, list], seeds: int, test, validation=None, train=None) -> pd.DataFrame:
    """A regression study's table: accuracy blank, test (and validation, train) RMSE from the given functions."""
    extra = {"test_rmse": test, "test_mae": lambda c, s, r: 0.8, "test_r2": lambda c, s, r: 0.5}
    extra.update({"validation_rmse": validation} if validation else {})
    extra.update({"train_rmse": train} if train else {})
    return synthetic(grid, seeds, None, extra=extra)


def test_the_metric_registry_knows_names_directions_and_counterparts() -> None:
    nll = metrics.get("mc_test_nll")
    assert (nll.label, nll.higher_is_better, nll.short) == ("MC-dropout test NLL", False, "mc_nll")
    assert nll.column("validation") == "mc_validation_nll" and nll.column("train") == "mc_train_nll"
    accuracy = metrics.get("test_accuracy")
    assert accuracy.difference(0.012) == "+1.2" and accuracy.unit == " points" and accuracy.tolerance(0.9) == 0.005
    rmse_ = metrics.get("validation_rmse")
    assert rmse_.tolerance(2.0) == pytest.approx(0.02)  # 1% of the best configuration's mean
    assert "1% of the best configuration's mean validation RMSE" in rmse_.tolerance_words(0.02)
    assert metrics.get("test_r2").higher_is_better and not metrics.get("test_ece").higher_is_better
    assert not metrics.is_metric("test_foo") and not metrics.is_metric("best_test_accuracy")


def test_the_default_metric_is_accuracy_for_a_classification_and_rmse_for_a_regression() -> None:
    classification = synthetic({"dropout_rate": [0.0, 0.5]}, 3, lambda c, s, r: 0.8)
    assert metrics.default(classification) == "test_accuracy"
    done = regression({"dropout_rate": [0.0, 0.5]}, 3, rmse({0.0: 0.0, 0.5: -0.1}))
    assert metrics.default(done) == "test_rmse"
    assert metrics.available(done) == ["test_rmse", "test_mae", "test_r2"]  # accuracy is blank: not offered
    protocol = findings.protocol_info(done, {})
    assert (protocol.metric, protocol.selection_metric, protocol.optimistic) == ("test_rmse", "test_rmse", True)
    with pytest.raises(
        StudyError, match=r"^--metric 'test_accuracy' is not a metric .*: test_rmse, test_mae, test_r2$"
    ):
        metrics.resolve(done, "test_accuracy")


def test_a_lower_is_better_metric_picks_the_configuration_with_the_smallest_mean() -> None:
    # Dropout 0.2 has the lowest validation RMSE; 0.5 happens to read lowest on test. Selection picks 0.2.
    validation = rmse({0.0: 0.0, 0.2: -0.15, 0.5: -0.05})
    test = rmse({0.0: 0.0, 0.2: -0.05, 0.5: -0.15})
    done = regression({"dropout_rate": [0.0, 0.2, 0.5]}, 8, test, validation)
    table = summary(done)
    assert table["metric"].eq("test_rmse").all() and not table["higher_is_better"].any()
    assert table["selected_on"].iloc[0] == "validation_rmse"
    assert table["configuration"].tolist() == ["dropout 0.2", "dropout 0.5", "no regularisation"]  # lowest first
    assert table["prob_best"].iloc[0] > 0.9
    assert table["tolerance"].iloc[0] == pytest.approx(0.01 * table["validation_rmse_mean"].iloc[0])
    assert table["within_tolerance_of_best"].tolist() == [True, False, False]
    recommendation = findings.recommendation_info(done, table)
    assert recommendation.best == "dropout 0.2" and recommendation.metric == "test_rmse"
    assert recommendation.best_test_mean == pytest.approx(table["test_rmse_mean"].iloc[0])
    (effect,) = findings.planned_effects(done)
    assert effect.configuration == "dropout 0.2"


def test_a_regulariser_that_lowers_rmse_helps() -> None:
    done = regression({"dropout_rate": [0.0, 0.5]}, 10, rmse({0.0: 0.0, 0.5: -0.1}), train=lambda c, s, r: 0.5)
    (effect,) = findings.planned_effects(done)
    assert effect.difference == pytest.approx(-0.1, abs=0.01) and effect.ci_high < 0
    assert effect.verdict == "helps" and effect.prob_better == 1.0
    table = summary(done).set_index("configuration")
    assert table.loc["dropout 0.5", "vs_baseline_prob_better"] == 1.0
    assert table.loc["dropout 0.5", "vs_baseline_difference"] == pytest.approx(-0.1, abs=0.01)
    # The gap is positive when train is better than test: test RMSE minus train RMSE.
    assert table.loc["no regularisation", "gap_mean"] == pytest.approx(0.54, abs=0.01)
    power = findings.power_info(done, summary(done), [effect])
    assert power.metric == "test_rmse" and power.spread < 0.02  # in RMSE units, not points
    assert findings.variance_info(done, ["dropout_rate"]).metric == "test_rmse"
    worse = regression({"dropout_rate": [0.0, 0.5]}, 10, rmse({0.0: 0.0, 0.5: 0.1}))
    assert findings.planned_effects(worse)[0].verdict == "hurts"


def test_a_nuisance_axis_is_tuned_to_the_lowest_validation_rmse() -> None:
    # The best learning rate moves with dropout: 1e-3 without dropout, 1e-2 with it.
    def error(config, seed, rng):
        best = 1e-2 if config["dropout_rate"] > 0 else 1e-3
        return 1.0 + (0.0 if config["learning_rate"] == best else 0.2) + rng.normal(0, 0.005)

    done = regression({"dropout_rate": [0.0, 0.5], "learning_rate": [1e-3, 1e-2]}, 5, error, error)
    tuned = findings.tune_nuisance(done, ("learning_rate",), "validation_rmse")
    chosen = tuned.drop_duplicates("config_key").set_index("dropout_rate")["tuned_learning_rate"]
    assert chosen.to_dict() == {0.0: 1e-3, 0.5: 1e-2}
    rows = findings.isolation_info(done, "dropout_rate", "learning_rate", "validation_rmse")
    assert "test_rmse" in rows.columns
    best = rows[rows["curve"] == findings.TUNED].drop_duplicates("dropout_rate").set_index("dropout_rate")
    assert best["learning_rate"].to_dict() == {0.0: 1e-3, 0.5: 1e-2}


def test_naming_nll_measures_every_statistic_on_nll() -> None:
    # Dropout raises accuracy and worsens NLL; L2 lowers NLL and leaves accuracy alone.
    def accuracy(config, seed, rng):
        return 0.8 + 0.05 * (config["dropout_rate"] > 0) + seed_effect(seed) + rng.normal(0, 0.003)

    def nll(config, seed, rng):
        return 0.5 + 0.05 * (config["dropout_rate"] > 0) - 0.1 * (config["l2"] > 0) + rng.normal(0, 0.005)

    grid = {"dropout_rate": [0.0, 0.5], "l2": [0.0, 0.01]}
    done = synthetic(grid, 10, accuracy, accuracy, extra={"test_nll": nll, "validation_nll": nll})
    assert metrics.available(done) == ["test_accuracy", "test_nll"]
    by_accuracy = {e.axis: e.verdict for e in findings.planned_effects(done)}
    assert by_accuracy == {"dropout_rate": "helps", "l2": "noise"}
    by_nll = {e.axis: e.verdict for e in findings.planned_effects(done, metric="test_nll")}
    assert by_nll == {"dropout_rate": "hurts", "l2": "helps"}
    table = summary(done, metric="test_nll")
    assert table["configuration"].iloc[0] == "L2 0.01" and table["selected_on"].iloc[0] == "validation_nll"
    assert "gap_mean" not in table and "train_accuracy_mean" not in table  # no train NLL recorded
    assert findings.recommendation_info(done, table).best == "L2 0.01"
    assert summary(done)["configuration"].iloc[0].startswith("dropout 0.5")


# --- calibration and MC dropout ----------------------------------------------------------------------------


def calibrated(grid: dict[str, list], seeds: int, nll, mc_nll=None, validation_nll=None, accuracy=None):
    """A classification table with calibration columns: test accuracy 0.8 (or `accuracy`) with validation accuracy
    tracking it, test NLL `nll`, test ECE a tenth of it, and where given MC-dropout NLL (MC accuracy 1 point above
    the deterministic one) and validation NLL, each a function of (config, seed, rng)."""
    accuracy = accuracy or (lambda c, s, r: 0.8 + seed_effect(s))
    extra = {"test_nll": nll, "test_ece": lambda c, s, r: 0.1 * nll(c, s, r)}
    if mc_nll:
        extra.update(mc_test_nll=mc_nll, mc_test_ece=lambda c, s, r: 0.05)
    if validation_nll:
        extra.update(validation_nll=validation_nll)
    done = synthetic(grid, seeds, accuracy, accuracy if validation_nll else None, extra=extra)
    if mc_nll:
        done["mc_test_accuracy"] = done["test_accuracy"] + 0.01
    return done


def test_pooled_reliability_bins_sum_counts_and_weight_by_count() -> None:
    # Hand-checked: bin 10 holds 2 rows of trial a (confidence 0.70, accuracy 0.5) and 6 of trial b (0.74, 1.0), so
    # 8 rows at confidence (2 * 0.70 + 6 * 0.74) / 8 = 0.73 and accuracy (1 + 6) / 8 = 0.875; bin 13 only a's row;
    # bin 14 is empty in both (NaN, count 0). Trial c, the validation split and the MC kind stay out.
    def rows(trial, split, kind, bins):
        return [
            {"trial_key": trial, "split": split, "kind": kind, "bin": b, "count": n, "confidence": c, "accuracy": a}
            for b, n, c, a in bins
        ]

    nan = np.nan
    bins = pd.DataFrame(
        rows("a", "test", "deterministic", [(10, 2, 0.70, 0.5), (13, 1, 0.90, 0.0), (14, 0, nan, nan)])
        + rows("b", "test", "deterministic", [(10, 6, 0.74, 1.0), (13, 0, nan, nan), (14, 0, nan, nan)])
        + rows("c", "test", "deterministic", [(10, 100, 0.71, 0.0)])
        + rows("a", "validation", "deterministic", [(10, 50, 0.72, 0.0)])
        + rows("a", "test", "mc", [(10, 3, 0.68, 1.0)])
    )
    pooled = findings.pool_bins(bins, ["a", "b"]).set_index(["kind", "bin"])
    assert pooled.loc[("deterministic", 10)].tolist() == pytest.approx([8, 0.73, 0.875])
    assert pooled.loc[("deterministic", 13)].tolist() == pytest.approx([1, 0.90, 0.0])
    assert pooled.loc[("deterministic", 14), "count"] == 0 and pooled.loc[("deterministic", 14)].iloc[1:].isna().all()
    assert pooled.loc[("mc", 10)].tolist() == pytest.approx([3, 0.68, 1.0])
    assert len(findings.pool_bins(bins, ["nobody"])) == 0


def test_mc_dropout_that_lowers_nll_for_every_seed_is_reported_as_helping() -> None:
    # MC dropout lowers the NLL of seed s by 0.05 + 0.001 s (mean 0.0545), at every dropout rate; its accuracy is
    # 1 point higher. Dropout 0.5 is 5 points more accurate: the recommendation.
    def accuracy(config, seed, rng):
        return 0.8 + 0.05 * (config["dropout_rate"] > 0) + seed_effect(seed) + rng.normal(0, 0.002)

    def nll(config, seed, rng):
        return 0.5 + 0.02 * (seed % 3) + rng.normal(0, 0.002)

    done = calibrated({"dropout_rate": [0.0, 0.5]}, 10, nll, lambda c, s, r: 0.0, accuracy=accuracy)
    done["mc_test_nll"] = done["test_nll"] - 0.05 - 0.001 * done["seed"]
    table = summary(done)
    recommendation = findings.recommendation_info(done, table)
    effects = findings.mc_effects(done, table, recommendation)
    assert [e.role for e in effects] == ["recommended", "no regularisation"]
    assert [e.configuration for e in effects] == ["dropout 0.5", "no regularisation"]
    for effect in effects:
        assert effect.difference == pytest.approx(-0.0545) and effect.ci_high < 0  # negative: MC lowers the NLL
        assert effect.verdict == "helps" and effect.prob_better == 1.0 and effect.family_size == 2
        assert effect.p_value == pytest.approx(stats.smallest_p_value(10))  # Wilcoxon: every seed one way
        assert effect.p_adjusted == pytest.approx(2 * stats.smallest_p_value(10))  # Holm over the two
        assert effect.accuracy_difference == pytest.approx(0.01) and effect.accuracy_ci == pytest.approx((0.01, 0.01))
    worse = done.assign(mc_test_nll=done["test_nll"] + 0.05 + 0.001 * done["seed"])
    assert {e.verdict for e in findings.mc_effects(worse, table, recommendation)} == {"hurts"}
    plain = done.assign(mc_test_nll=np.nan)
    assert findings.mc_effects(plain, table, recommendation) == []  # no MC columns: no MC line


def test_the_best_calibrated_configuration_is_chosen_on_validation_nll() -> None:
    # Dropout 0.5 is most accurate (the recommendation); dropout 0.2 has the lowest validation NLL although 0.5 reads
    # lowest on test: the calibration answer is dropout 0.2, with its test NLL and ECE.
    def validation_nll(config, seed, rng):
        return 0.6 + {0.0: 0.0, 0.2: -0.2, 0.5: -0.1}[config["dropout_rate"]] + rng.normal(0, 0.005)

    def nll(config, seed, rng):
        return 0.6 + {0.0: 0.0, 0.2: -0.1, 0.5: -0.2}[config["dropout_rate"]] + rng.normal(0, 0.005)

    def accuracy(config, seed, rng):
        return 0.8 + 0.1 * config["dropout_rate"] + rng.normal(0, 0.002)

    grid = {"dropout_rate": [0.0, 0.2, 0.5]}
    done = calibrated(grid, 8, nll, validation_nll=validation_nll, accuracy=accuracy)
    table = summary(done)
    recommendation = findings.recommendation_info(done, table)
    found = findings.calibration_info(done, table, recommendation)
    assert (found.selected_on, found.optimistic) == ("validation_nll", False)
    assert found.best.configuration == "dropout 0.2" and found.best.dropout_rate == 0.2
    assert found.recommended.configuration == "dropout 0.5" and found.baseline.configuration == "no regularisation"
    assert found.best.nll[0] == pytest.approx(0.5, abs=0.005) and found.best.nll[1] < 0.5 < found.best.nll[2]
    assert found.best.ece[0] == pytest.approx(0.05, abs=0.001) and found.best.seeds == 8
    assert found.baseline.nll[0] == pytest.approx(0.6, abs=0.005)
    without_validation = calibrated(grid, 8, nll, accuracy=accuracy)
    fallback = findings.calibration_info(without_validation, summary(without_validation), recommendation)
    assert (fallback.selected_on, fallback.optimistic) == ("test_nll", True)
    assert fallback.best.configuration == "dropout 0.5"
    assert findings.calibration_info(synthetic(grid, 3, accuracy), table, recommendation) is None  # none recorded


def test_calibration_against_dropout_holds_the_other_regularisers_off() -> None:
    def nll(config, seed, rng):
        return 0.6 - 0.2 * config["dropout_rate"] + 1.0 * config["l2"] + 0.01 * seed

    done = calibrated({"dropout_rate": [0.0, 0.5], "l2": [0.0, 0.1]}, 4, nll, mc_nll=lambda c, s, r: 0.3)
    curve = findings.calibration_by_dropout(done)
    assert curve.held == ["l2"] and curve.pooled == [] and curve.mc
    assert set(curve.rows["config_key"]) == {"dropout_rate0.0-l20.0", "dropout_rate0.5-l20.0"}
    means = curve.means.set_index(["kind", "measure", "dropout_rate"])
    assert means.loc[("deterministic", "nll", 0.5), "mean"] == pytest.approx(0.515)  # 0.5 + mean seed 0.015
    assert means.loc[("deterministic", "ece", 0.0), "mean"] == pytest.approx(0.0615)
    assert means.loc[("mc", "nll", 0.0), ["mean", "ci_low", "ci_high"]].tolist() == pytest.approx([0.3] * 3)
    assert means["seeds"].eq(4).all() and len(means) == 8


def test_a_recommendation_spanning_max_norm_none_is_written_without_error() -> None:
    # Every setting equal: all configurations are within the tolerance of the best, max-norm "none" among them.
    done = synthetic({"max_norm": [None, 3.0, 1.0]}, 6, lambda c, s, r: 0.8 + 0.001 * seed_effect(s))
    recommendation = findings.recommendation_info(done, summary(done))
    assert recommendation.ranges["max_norm"] == "none, 3, 1"
