"""The grid Oracle: full factorial, deterministic order, many trials in flight at once, nothing twice."""

from __future__ import annotations

import itertools

import pytest
from conftest import tiny_space_dict

from study.axes import AXIS
from study.oracle import GridOracle
from study.space import parse_space


@pytest.fixture
def space():
    return parse_space(
        tiny_space_dict(
            axes={"dropout_rate": [0.0, 0.5], "max_norm": [None, 3.0], "hidden_units": [8, 4]},
            seeds=[7, 1, 3],
        )
    )


def drain(oracle: GridOracle, tuner: str, n: int) -> list:
    out = []
    while batch := oracle.create_trials(tuner, n):
        for kt_trial, trial in batch:
            kt_trial.status = "COMPLETED"
            oracle.end_trial(kt_trial)
            out.append(trial)
    return out


def test_hands_out_the_full_grid_in_order_seeds_outermost(space) -> None:
    trials = drain(GridOracle(space), "w", 5)
    assert len(trials) == 2 * 2 * 2 * 3 == space.n_trials
    expected = [
        (seed, d, m, h) for seed, d, m, h in itertools.product([7, 1, 3], [0.0, 0.5], [None, 3.0], [(8,), (4,)])
    ]
    got = [(t.seed, t.config["dropout_rate"], t.config["max_norm"], t.config["hidden_units"]) for t in trials]
    assert got == expected


def test_order_is_deterministic_and_independent_of_batch_size(space) -> None:
    one = [t.key for t in drain(GridOracle(space), "a", 1)]
    many = [t.key for t in drain(GridOracle(space), "b", 7)]
    assert one == many == [t.key for t in space.trials()]


def test_many_trials_are_in_flight_at_once(space) -> None:
    oracle = GridOracle(space)
    batch = oracle.create_trials("worker", 20)
    assert len(batch) == 20 and len({trial.key for _, trial in batch}) == 20
    rest = oracle.create_trials("worker2", 100)
    assert len(rest) == 4 and oracle.create_trials("worker3", 5) == []
    assert oracle.create_trial("worker3").status == "IDLE"  # all handed out, none finished: ask again later
    for kt_trial, _ in batch + rest:
        oracle.end_trial(kt_trial)
    assert oracle.complete and oracle.create_trial("worker3").status == "STOPPED"


def test_trials_already_in_the_store_are_skipped(space) -> None:
    done = {t.key for t in space.trials()[::2]}
    handed = drain(GridOracle(space, done=done), "w", 4)
    assert {t.key for t in handed} == {t.key for t in space.trials()} - done


def test_hyperparameters_round_trip_through_keras_tuner_values(space) -> None:
    cases = [("max_norm", None), ("max_norm", 3.0), ("hidden_units", (6, 2)), ("dropout_rate", 0.5), ("epochs", 9)]
    for axis, value in cases:
        assert AXIS[axis].decode(AXIS[axis].encode(value)) == value
    oracle = GridOracle(space)
    names = {hp.name for hp in oracle.get_space().space}
    assert {"dropout_rate", "max_norm", "hidden_units", "seed"} <= names


def test_a_trial_whose_lease_expires_is_handed_out_again(space, monkeypatch) -> None:
    import study.oracle as oracle_module

    clock = [0.0]
    monkeypatch.setattr(oracle_module.time, "monotonic", lambda: clock[0])
    oracle = GridOracle(space, lease_seconds=10)
    (lost, _), (kept, _) = oracle.create_trials("dies", 2)
    clock[0] = 5.0
    oracle.end_trial(kept)
    assert oracle.create_trials("other", 1)[0][0].trial_id != lost.trial_id  # lease still running
    clock[0] = 11.0
    again = oracle.create_trials("other", 1)[0][1]
    assert again.key == lost.trial_id  # the dead worker's trial, under the same key


def test_trials_ended_by_a_worker_of_an_earlier_chief_are_not_handed_out(space) -> None:
    first = space.trials()[0]
    oracle = GridOracle(space)  # a restarted chief: the trial is pending again
    from keras_tuner.engine.trial import Trial as KtTrial

    oracle.end_trial(KtTrial(oracle.get_space(), trial_id=first.key, status="COMPLETED"))
    assert first.key not in {t.key for t in drain(oracle, "w", 10)}


def test_the_space_carries_the_study_fingerprint(space) -> None:
    from study.oracle import FINGERPRINT_HP

    assert GridOracle(space).get_space().values[FINGERPRINT_HP] == space.fingerprint()
