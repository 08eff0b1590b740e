"""`python -m study bench`: the population engine against plain `model.fit`, measured side by side in one run.

Prints seconds per 4000-epoch reference trial for plain Keras (measured on a few hundred epochs and scaled, as the
output says), for the population engine alone and at its chosen batch size, the ratios, and the wall time of a
complete study (per-epoch curves included) run through the real search driver.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

from study.engines import get_engine
from study.engines.base import split_for
from study.engines.population import PopulationEngine, train_population
from study.search import run_search
from study.space import SearchSpace, Trial, load_space, parse_space

REFERENCE = Path(__file__).resolve().parents[1] / "search_spaces" / "tutorial.yaml"


def _reference(epochs: int | None = None, seeds: int = 1, dropout: list[float] | None = None) -> SearchSpace:
    raw = load_space(REFERENCE).model_dump(mode="json")
    if epochs is not None:
        raw["training"]["epochs"] = epochs
    raw["axes"] = {"dropout_rate": dropout or [0.5]}
    raw["seeds"] = seeds
    raw["name"] = "bench"
    return parse_space(raw)


def _best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def keras_seconds_per_trial(epochs: int) -> float:
    """Plain model.fit on the reference trial (dropout 0.5), `epochs` epochs, scaled to the full 4000."""
    engine = get_engine("keras")
    space = _reference(epochs=epochs)
    engine.run_all(space.trials())  # warm-up: TensorFlow's first graph build
    seconds = _best_of(1, lambda: engine.run_all(space.trials()))
    return seconds * 4000 / epochs


def population_seconds_per_trial(trials: list[Trial], repeats: int = 2) -> float:
    splits = [split_for(t) for t in trials]
    train_population(trials, splits)  # trace once, as a study does per architecture
    return _best_of(repeats, lambda: train_population(trials, splits)) / len(trials)


def main(keras_epochs: int = 200, study_file: str | None = None) -> int:
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print("reference trial: circles 30/70, mlp 2-500-1 relu, adam, batch 32, 4000 epochs, per-epoch test metrics\n")

    keras_s = keras_seconds_per_trial(keras_epochs)
    print(f"plain model.fit            {keras_s:9.3f} s/trial  (measured on {keras_epochs} epochs, scaled to 4000)")

    single = _reference(seeds=1).trials()
    single_s = population_seconds_per_trial(single)
    print(f"population, 1 trial        {single_s:9.3f} s/trial  (4000 epochs, measured)")

    chunk = PopulationEngine()._chunk(_reference())
    mixed = _reference(seeds=(chunk + 9) // 10, dropout=[round(0.1 * i, 1) for i in range(10)]).trials()[:chunk]
    batch_s = population_seconds_per_trial(mixed)
    print(f"population, {chunk:3d} trials     {batch_s:9.3f} s/trial  (4000 epochs, dropout 0.0-0.9 mixed, measured)")
    print()
    print(f"speed-up, 1 trial          {keras_s / single_s:9.0f}x  over plain model.fit")
    print(f"speed-up, {chunk} trials      {keras_s / batch_s:9.0f}x  over plain model.fit")
    print(f"batching gain              {single_s / batch_s:9.1f}x  ({chunk} trials vs 1)")

    if study_file:
        space = load_space(study_file)
        with tempfile.TemporaryDirectory() as results:
            start = time.perf_counter()
            summary = run_search(space, get_engine("population"), results_root=results, progress=False)
            wall = time.perf_counter() - start
        print()
        print(
            f"study {space.name}: {summary.run} trials x {space.training.epochs} epochs with per-epoch curves "
            f"in {wall:.0f} s ({wall / 60:.1f} min), {summary.run / wall:.2f} trials/s, "
            f"{len(summary.failed)} failed"
        )
    return 0
