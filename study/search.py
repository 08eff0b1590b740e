"""The search driver: the Oracle hands out trials, an engine runs them, the store keeps them.

The driver asks for as many trials as the engine wants at once and commits each batch as one unit, so the
Oracle's bookkeeping and the store's writes stay off the per-trial hot path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from study.engines.base import Engine
from study.oracle import GridOracle
from study.space import SearchSpace
from study.store import ResultsStore, study_folder


@dataclass
class SearchSummary:
    """What one search run did."""

    folder: Path
    total: int
    done_before: int
    run: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (trial key, error)
    wall_time_s: float = 0.0

    @property
    def remaining(self) -> int:
        return self.total - self.done_before - (self.run - len(self.failed))


def run_search(
    space: SearchSpace,
    engine: Engine,
    results_root: str | Path = "results",
    max_trials: int | None = None,
    space_file: str = "",
    progress: bool = True,
) -> SearchSummary:
    """Run every trial of `space` not yet in the store (at most `max_trials` of them) on `engine`."""
    store = ResultsStore(study_folder(results_root, space))
    store.begin(space, engine.name, space_file, engine_version=engine.version)
    done = store.completed_keys() & {t.key for t in space.trials()}
    oracle = GridOracle(space, done=done)
    budget = oracle.remaining if max_trials is None else min(max_trials, oracle.remaining)
    summary = SearchSummary(store.folder, space.n_trials, len(done))
    start = time.perf_counter()
    bar = tqdm(
        total=space.n_trials,
        initial=len(done),
        unit="trial",
        desc=space.name,
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        while budget > 0:
            handed = oracle.create_trials("main", min(engine.batch_size(space), budget))
            if not handed:
                break
            run_batch(handed, engine, store, oracle, summary, bar)
            budget -= len(handed)
    finally:
        bar.close()
        summary.wall_time_s = time.perf_counter() - start
        store.finish(trials_run=summary.run, failed=len(summary.failed))
    return summary


def run_batch(handed: list, engine: Engine, store: ResultsStore, oracle, summary: SearchSummary, bar=None) -> None:
    """Run trials handed out by an Oracle (local or remote), commit each finished group, then report it ended.

    Commit comes first: a trial the Oracle hears about is always in the store, and one whose report is lost (a
    killed worker) is handed out again and its duplicate discarded by the store.
    """
    kt_trials = {trial.key: kt_trial for kt_trial, trial in handed}
    for results in engine.run([trial for _, trial in handed]):
        store.commit(results)
        for result in results:
            kt_trial = kt_trials[result.key]
            kt_trial.status = "COMPLETED" if result.ok else "FAILED"
            kt_trial.message = result.row["error"] or None
            oracle.end_trial(kt_trial)
        summary.run += len(results)
        summary.failed += [(r.key, r.row["error"]) for r in results if not r.ok]
        if bar is not None:
            bar.update(sum(r.ok for r in results))
            if summary.failed:
                bar.set_postfix(failed=len(summary.failed))
