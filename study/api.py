"""The Python API, for notebooks and scripts: run a study, then read it.

    import study
    result = study.run("search_spaces/smoke.yaml", results_dir="results")
    result.trials            # the tidy table: one row per trial (trials.csv)
    result.summary()         # one row per configuration, best first (summary.csv)
    result.curves()          # per-epoch curves, long format
    result.report()          # report.md, report.html, summary.csv, figures/ -> their paths
    study.load("results/smoke")   # the same object for a study already run

`run` is the CLI's `search`: the same validation, results folder, resume and growth. The keras engine needs Keras on
TensorFlow, the population engine loads it on JAX: in one process Keras has one backend, so use the keras engine
in a fresh process.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from study.store import ResultsStore


@dataclass
class Study:
    """A study's results folder, read on demand (nothing is loaded until asked for)."""

    folder: Path

    @cached_property
    def store(self) -> ResultsStore:
        store = ResultsStore(self.folder)
        store.manifest()  # refuses a folder that is not a study's, with the fix
        return store

    @property
    def manifest(self) -> dict:
        return self.store.manifest()

    @property
    def trials(self) -> pd.DataFrame:
        """Every trial (completed and failed), as trials.csv holds them."""
        return self.store.trials()

    def curves(self, trial_keys: list[str] | None = None) -> pd.DataFrame:
        """Per-epoch curves of the completed trials (all, or those in `trial_keys`)."""
        return self.store.curves(trial_keys)

    def summary(self, metric: str | None = None) -> pd.DataFrame:
        """One row per configuration, best on the selection metric first: the report's summary.csv (nuisance axes
        tuned as the report tunes them), measuring `metric` (default: test accuracy, or test RMSE for a
        regression; a metric the study does not record raises StudyError)."""
        from study.analysis import findings, metrics
        from study.analysis.tables import completed, selection_metric, summary
        from study.errors import StudyError

        done = completed(self.trials) if not self.trials.empty else self.trials
        if done.empty:
            raise StudyError(f"{self.folder} has no finished trials yet: run the search first")
        measured = metrics.resolve(done, metric).name
        nuisance = tuple(self.manifest.get("space", {}).get("nuisance", []))
        return summary(findings.tune_nuisance(done, nuisance, selection_metric(done, measured)), metric=measured)

    def report(self, **options) -> dict[str, Path]:
        """Write the report (options as `build_report`'s: hue, facet, curves, metric) and return its files by
        name."""
        from study.analysis.report import build_report

        return build_report(self.folder, **options)

    def __repr__(self) -> str:
        return f"Study({str(self.folder)!r})"


def load(folder: str | Path) -> Study:
    """A study already run (or running), from its results folder."""
    result = Study(Path(folder))
    result.store  # noqa: B018  (fail now, with the fix, rather than at the first read)
    return result


def run(
    space_file: str | Path,
    engine: str | None = None,
    results_dir: str | Path = "results",
    max_trials: int | None = None,
    trials_per_batch: int | None = None,
    progress: bool = True,
    overrides: list[str] | tuple[str, ...] = (),
) -> Study:
    """Run (or resume) the study of `space_file` and return it; `overrides` as on the command line
    ('training.epochs=1000'). Bad input raises `study.errors.StudyError` with the command line's one-line
    messages."""
    from study.engines import choose_keras_backend, get_engine
    from study.search import run_search
    from study.space import default_engine, load_space

    engine = engine or default_engine(space_file, overrides)
    choose_keras_backend(engine)
    space = load_space(space_file, overrides)
    chosen = get_engine(engine, trials_per_batch)
    chosen.check(space)
    summary = run_search(
        space,
        chosen,
        results_root=results_dir,
        max_trials=max_trials,
        space_file=str(space_file),
        progress=progress,
    )
    return Study(summary.folder)
