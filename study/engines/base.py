"""What every engine shares: the interface, and the data a trial trains on."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from study.datasets import Split, split_of
from study.schema import TrialResult
from study.space import SearchSpace, Trial


class Engine(ABC):
    """Runs trials. A trial's failure is returned as a failed `TrialResult`, never raised."""

    name: str
    version: str = ""  # what computes the trials, e.g. 'jax 0.10.2 (cpu x2)': recorded per trial and per run

    @abstractmethod
    def batch_size(self, space: SearchSpace) -> int:
        """How many trials this engine wants handed out at once."""

    @abstractmethod
    def run(self, trials: list[Trial]) -> Iterator[list[TrialResult]]:
        """Train `trials` (all from one study), yielding results as each group of them finishes.

        Every trial gets exactly one result; the driver commits each yielded group at once, so a kill loses
        only the group in flight.
        """

    def run_all(self, trials: list[Trial]) -> list[TrialResult]:
        """All results of `run`, in the order of `trials`."""
        by_key = {r.key: r for results in self.run(trials) for r in results}
        return [by_key[t.key] for t in trials]

    def check(self, space: SearchSpace) -> None:  # noqa: B027  (optional: an engine that runs every study keeps it)
        """Refuse (StudyError, one line) a study this engine cannot run: called before anything trains, the dry run
        included."""

    @abstractmethod
    def estimate_seconds(self, space: SearchSpace, n_trials: int) -> tuple[float, str]:
        """A rough run-time estimate for `n_trials` trials of `space`, and what it is based on."""


def split_for(trial: Trial) -> Split:
    """The data a trial trains, validates and is tested on: the split follows the seed only when `split.per_seed`,
    the data itself only when `redraw_data` (the generator's random_state is the seed)."""
    spec = trial.space.dataset
    dataset = spec.source()
    if spec.redraw_data:
        dataset["params"] = {**dataset["params"], "random_state": trial.seed}
    return split_of(dataset, trial.seed if spec.split.per_seed else spec.split.split_seed)
