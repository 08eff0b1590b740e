"""Monte Carlo dropout on the population engine: inside the compiled computation, masks from the counter hash in a
stream of their own, and a trial's result independent of its batch."""

from __future__ import annotations

import numpy as np
from conftest import tiny_space_dict

from study.engines import population
from study.engines.base import split_for
from study.space import parse_space

MOONS = {
    "name": "moons",
    "params": {"n_samples": 160, "noise": 0.3},
    "split": {"train_size": 80, "validation_size": 20},
}


def train(axes: dict, mc_samples: int = 20, seeds=(0, 1)):
    settings = {"training": {"epochs": 20}, "evaluation": {"mc_samples": mc_samples}, "model": {"hidden_units": [16]}}
    space = parse_space(tiny_space_dict(dataset=MOONS, axes=axes, seeds=list(seeds), **settings))
    trials = space.trials()
    return trials, population.train_population(trials, [split_for(t) for t in trials])


def test_without_dropout_mc_is_the_deterministic_pass_and_batch_norm_stays_in_inference_mode() -> None:
    _, result = train({"batch_norm": [True]})
    p = result.predictions
    np.testing.assert_allclose(p["mc_test"], p["test"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(p["mc_validation"], p["validation"], rtol=1e-6, atol=1e-7)


def test_with_dropout_mc_averages_stochastic_passes_reproducibly() -> None:
    _, first = train({"dropout_rate": [0.5], "input_dropout": [0.2]})
    _, again = train({"dropout_rate": [0.5], "input_dropout": [0.2]})
    assert np.abs(first.predictions["mc_test"] - first.predictions["test"]).max() > 1e-3
    np.testing.assert_array_equal(first.predictions["mc_test"], again.predictions["mc_test"])
    assert np.all((first.predictions["mc_test"] >= 0) & (first.predictions["mc_test"] <= 1))


def test_a_trials_mc_result_does_not_depend_on_its_batch() -> None:
    trials, together = train({"dropout_rate": [0.0, 0.5]}, seeds=(0, 1, 2))
    target = next(i for i, t in enumerate(trials) if t.seed == 1 and t.config["dropout_rate"] == 0.5)
    alone = population.train_population([trials[target]], [split_for(trials[target])])
    np.testing.assert_allclose(together.predictions["mc_test"][target], alone.predictions["mc_test"][0], atol=1e-6)


def test_mc_writes_calibration_columns_and_bins_for_every_trial() -> None:
    trials, _ = train({"dropout_rate": [0.5]}, mc_samples=5)
    results = population.PopulationEngine().run_all(trials)
    for result in results:
        row = result.row
        assert 0 <= row["mc_test_accuracy"] <= 1 and row["mc_test_nll"] > 0 and 0 <= row["mc_validation_ece"] <= 1
        assert set(result.calibration["kind"]) == {"deterministic", "mc"}
        assert set(result.calibration["split"]) == {"test", "validation"}


def mc_agreement(ours: np.ndarray, theirs: np.ndarray) -> float:
    """p-value of 'the two engines' single MC passes have the same mean probability on every row': per row a
    two-sample z statistic of the pass means (passes are independent draws), summed in squares, chi-square with
    one degree of freedom per row whose passes vary."""
    from scipy import stats as scipy_stats

    ours, theirs = ours.reshape(len(ours), -1), theirs.reshape(len(theirs), -1)
    variance = ours.var(axis=0, ddof=1) / len(ours) + theirs.var(axis=0, ddof=1) / len(theirs)
    varies = variance > 1e-12
    z2 = np.square(ours.mean(axis=0) - theirs.mean(axis=0))[varies] / variance[varies]
    return float(scipy_stats.chi2.sf(z2.sum(), int(varies.sum())))


def test_mc_dropout_agrees_with_keras_forced_training_dropout_and_catches_a_wrong_scale(monkeypatch) -> None:
    import keras
    from fidelity import _groups, keras_order

    from study.engines import keras_engine, masks

    axes = {"dropout_rate": [0.5], "input_dropout": [0.2], "batch_norm": [True]}
    trials, result = train(axes, mc_samples=0, seeds=(3,))
    trial, data = trials[0], split_for(trials[0])
    params = [p[0] for p in result.params]
    model = keras_engine.build_model(trial, data)
    for (_, variable), value in zip(_groups(model), keras_order([p[None] for p in params], model), strict=True):
        variable.assign(value)
    n = 300
    keras.utils.set_random_seed(trial.seed)
    mc = keras_engine.mc_dropout_model(model)  # each call draws new masks: the passes are independent
    theirs = np.stack([keras_engine.predict_probabilities(mc, data.x_test) for _ in range(n)])
    keras.backend.clear_session()
    ours = population.mc_passes(trial, data, params, n)
    assert mc_agreement(ours, theirs) > 1e-3
    # The test can fail: masks without the 1/(1 - rate) scaling of inverted dropout are caught.
    monkeypatch.setattr(masks, "inverted_dropout_scale", lambda rate: 1.0 + 0.0 * rate)
    wrong = population.mc_passes(trial, data, params, n)
    assert mc_agreement(wrong, theirs) < 1e-6


def test_mc_without_dropout_stays_exact_for_saturated_probabilities() -> None:
    # 4000 epochs of the reference network saturate its outputs; a float32 sum of 30 equal passes divided by 30
    # would move them by an ulp, which their clipped log-likelihood magnifies. The running mean keeps them exact.
    from study import bench

    trials = bench._reference(epochs=1500, seeds=1, dropout=[0.0, 0.5], mc_samples=30).trials()
    result = population.train_population(trials, [split_for(t) for t in trials])
    off = next(i for i, t in enumerate(trials) if t.config["dropout_rate"] == 0.0)
    np.testing.assert_array_equal(result.predictions["mc_test"][off], result.predictions["test"][off])
