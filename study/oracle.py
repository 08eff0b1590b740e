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

from collections.abc import Iterable
from typing import Any

import keras_tuner as kt

from study.space import AXES, SearchSpace, Trial

# keras-tuner's Choice holds one type of plain value; these encode the axis values that are not.
_NO_MAX_NORM = 0.0  # a max-norm must be positive, so 0 unambiguously means "no constraint"


def encode(axis: str, value: Any) -> Any:
    """An axis value as a keras-tuner Choice value."""
    if axis == "max_norm":
        return _NO_MAX_NORM if value is None else float(value)
    if axis == "hidden_units":
        return "-".join(str(w) for w in value)
    return value


def decode(axis: str, value: Any) -> Any:
    """The inverse of `encode`."""
    if axis == "max_norm":
        return None if value == _NO_MAX_NORM else float(value)
    if axis == "hidden_units":
        return tuple(int(w) for w in str(value).split("-"))
    return value


def hyperparameters(space: SearchSpace) -> kt.HyperParameters:
    """The study's search space as keras-tuner HyperParameters: one Choice per axis, and the seed."""
    hp = kt.HyperParameters()
    for axis, values in space.axis_values().items():
        hp.Choice(axis, [encode(axis, v) for v in values], ordered=False)
    hp.Choice("seed", list(space.seeds), ordered=False)
    return hp


def trial_from_values(space: SearchSpace, values: dict[str, Any]) -> Trial:
    """The study trial a keras-tuner trial's hyperparameter values stand for."""
    config = {axis: decode(axis, values[axis]) for axis in AXES}
    return Trial(space, config, int(values["seed"]))


class GridOracle(kt.Oracle):
    """Hands out every (configuration, seed) of the grid exactly once, in `SearchSpace.trials()` order.

    `done` holds the keys of trials already in the results store; they are never handed out again.
    """

    def __init__(self, space: SearchSpace, done: Iterable[str] = ()):
        super().__init__(
            hyperparameters=hyperparameters(space),
            allow_new_entries=False,
            tune_new_entries=False,
            max_consecutive_failed_trials=None,
        )
        self.verbose = 0
        self.space = space
        done = set(done)
        self._pending = [t for t in space.trials() if t.key not in done]
        self._next = 0
        self._by_id: dict[str, Trial] = {}

    # --- what to run next --------------------------------------------------------------------------

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        if self._next >= len(self._pending):
            return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
        trial = self._pending[self._next]
        self._next += 1
        values = {axis: encode(axis, trial.config[axis]) for axis in AXES}
        values["seed"] = trial.seed
        return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": values}

    def create_trials(self, tuner_id: str, n: int) -> list[tuple[kt.engine.trial.Trial, Trial]]:
        """Up to `n` trials for one worker, each under its own sub-id so they can be in flight together."""
        handed: list[tuple[kt.engine.trial.Trial, Trial]] = []
        for slot in range(n):
            kt_trial = self.create_trial(f"{tuner_id}/{slot}")
            if kt_trial.status != kt.engine.trial.TrialStatus.RUNNING:
                break
            trial = trial_from_values(self.space, kt_trial.hyperparameters.values)
            self._by_id[kt_trial.trial_id] = trial
            handed.append((kt_trial, trial))
        return handed

    @property
    def remaining(self) -> int:
        """Trials not yet handed out."""
        return len(self._pending) - self._next

    # --- what is finished --------------------------------------------------------------------------

    @kt.synchronized
    def end_trial(self, trial: kt.engine.trial.Trial) -> None:
        """Mark a handed-out trial finished; its result lives in the store, so no score is kept here."""
        own = self.trials[trial.trial_id]
        own.status = trial.status
        own.message = trial.message
        self.end_order.append(trial.trial_id)
        for tuner_id, ongoing in list(self.ongoing_trials.items()):
            if ongoing.trial_id == trial.trial_id:
                del self.ongoing_trials[tuner_id]
                break

    # --- keras-tuner's per-trial files are off: the results store is the record ---------------------

    def _save_trial(self, trial: kt.engine.trial.Trial) -> None:
        pass

    def save(self) -> None:
        pass
