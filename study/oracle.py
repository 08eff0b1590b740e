"""The Oracle: which trials to run next.

keras-tuner's `GridSearchOracle` derives new grid points from finished trials (so it hands out about two at a
time) and `executions_per_trial` averages seeds away. `GridOracle` instead enumerates the full factorial grid,
seed included, deterministically and hands out as many trials as an engine asks for.

Its own bookkeeping files (trial.json per trial, oracle.json rewritten on every call) and console display cost
tens of milliseconds per trial, a large share of a fast engine's budget, so they are switched off: the results
store, not the Oracle, is the record of what is done.
"""

from __future__ import annotations

import study.quiet_tf  # noqa: F401  (silences TensorFlow's start-up; must come first)

# isort: split

import time
from collections.abc import Iterable
from typing import Any

import keras_tuner as kt

from study.axes import AXES, AXIS
from study.space import SearchSpace, Trial


def hyperparameters(space: SearchSpace, axes: Iterable[str] = AXES) -> kt.HyperParameters:
    """The study's search space as keras-tuner HyperParameters: one Choice per axis (of `axes`), and the seed."""
    hp = kt.HyperParameters()
    values = space.axis_values()
    for axis in axes:
        hp.Choice(axis, [AXIS[axis].encode(v) for v in values[axis]], ordered=False)
    hp.Choice("seed", list(space.seeds), ordered=False)
    return hp


def trial_from_values(space: SearchSpace, values: dict[str, Any]) -> Trial:
    """The study trial a keras-tuner trial's hyperparameter values stand for."""
    config = {axis: AXIS[axis].decode(values[axis]) for axis in AXES}
    return Trial(space, config, int(values["seed"]))


FINGERPRINT_HP = "study_fingerprint"
RUNNING, IDLE, STOPPED = (kt.engine.trial.TrialStatus.RUNNING, kt.engine.trial.TrialStatus.IDLE,
                          kt.engine.trial.TrialStatus.STOPPED)  # fmt: skip


class GridOracle(kt.Oracle):
    """Hands out every (configuration, seed) of the grid once, in `SearchSpace.trials()` order, under its trial key.

    `done` holds the keys of trials already in the results store; they are never handed out. A trial handed out
    and not ended within `lease_seconds` (a worker that died) is handed out again; when every trial is handed out
    but some are still in flight, a request gets an IDLE trial (ask again later) rather than STOPPED.
    The study's fingerprint travels in the search space, so a worker can check it runs the chief's study.
    """

    def __init__(self, space: SearchSpace, done: Iterable[str] = (), lease_seconds: float | None = None):
        hp = hyperparameters(space)
        hp.Fixed(FINGERPRINT_HP, space.fingerprint())
        super().__init__(
            hyperparameters=hp,
            allow_new_entries=False,
            tune_new_entries=False,
            max_consecutive_failed_trials=None,
        )
        self.verbose = 0
        self.space = space
        self.lease_seconds = lease_seconds
        done = set(done)
        self._pending = {t.key: t for t in space.trials() if t.key not in done}  # in grid order
        self._in_flight: dict[str, tuple[Trial, float]] = {}  # key -> (trial, when handed out)
        self.finished: set[str] = set()  # keys ended during this run (completed or failed)

    # --- what to run next --------------------------------------------------------------------------

    @kt.synchronized
    def create_trial(self, tuner_id: str) -> kt.engine.trial.Trial:
        trial = self._expired_lease() or (self._pending.pop(next(iter(self._pending))) if self._pending else None)
        if trial is None:
            status = IDLE if self._in_flight else STOPPED
            return kt.engine.trial.Trial(self.hyperparameters.copy(), trial_id=status, status=status)
        self._in_flight[trial.key] = (trial, time.monotonic())
        hp = self.hyperparameters.copy()
        hp.values = {**{axis: AXIS[axis].encode(trial.config[axis]) for axis in AXES}, "seed": trial.seed}
        hp.values[FINGERPRINT_HP] = self.space.fingerprint()
        return kt.engine.trial.Trial(hp, trial_id=trial.key, status=RUNNING)

    def _expired_lease(self) -> Trial | None:
        if self.lease_seconds is None:
            return None
        now = time.monotonic()
        for trial, handed_at in self._in_flight.values():
            if now - handed_at > self.lease_seconds:
                return trial
        return None

    def create_trials(self, tuner_id: str, n: int) -> list[tuple[kt.engine.trial.Trial, Trial]]:
        """Up to `n` trials for one worker (fewer when the grid runs out)."""
        handed = []
        for _ in range(n):
            kt_trial = self.create_trial(tuner_id)
            if kt_trial.status != RUNNING:
                break
            handed.append((kt_trial, trial_from_values(self.space, kt_trial.hyperparameters.values)))
        return handed

    @property
    def remaining(self) -> int:
        """Trials not yet handed out."""
        return len(self._pending)

    @property
    def complete(self) -> bool:
        """Every trial of the grid handed out and ended."""
        return not self._pending and not self._in_flight

    # --- what is finished --------------------------------------------------------------------------

    @kt.synchronized
    def end_trial(self, trial: kt.engine.trial.Trial) -> None:
        """Mark a trial finished (its result is in the store). Works for trials handed out by an earlier chief."""
        key = trial.trial_id
        self._in_flight.pop(key, None)
        self._pending.pop(key, None)
        self.finished.add(key)

    # --- keras-tuner's per-trial files are off: the results store is the record ---------------------

    def _save_trial(self, trial: kt.engine.trial.Trial) -> None:
        pass

    def save(self) -> None:
        pass
