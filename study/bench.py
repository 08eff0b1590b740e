"""`python -m study bench`: the population engine against plain `model.fit`, measured side by side in one run.

Prints seconds per 4000-epoch reference trial for plain Keras (measured on a few hundred epochs and scaled, as the
output says), for the population engine alone and at its chosen batch size, the ratios; the same for a trial of
each other model family's study (cnn.yaml, rnn.yaml); and the wall time of a complete study (per-epoch curves
included) run through the real search driver.
"""

from __future__ import annotations

import platform
import resource
import tempfile
import time
from pathlib import Path

from study import machine
from study.engines import get_engine
from study.engines.base import split_for
from study.engines.population import PopulationEngine, train_population
from study.schema import versions
from study.search import run_search
from study.space import RATE_AXES, SearchSpace, Trial, load_space, parse_space

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
REFERENCE = SPACES / "tutorial.yaml"
FAMILY_SPACES = {"cnn": SPACES / "cnn.yaml", "rnn": SPACES / "rnn.yaml"}


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


def _single_configuration(space: SearchSpace, config: dict, epochs: int) -> SearchSpace:
    raw = space.model_dump(mode="json")
    raw["training"]["epochs"] = epochs
    raw["axes"] = {a: [list(v) if isinstance(v, tuple) else v] for a, v in config.items() if a in space.swept_axes()}
    raw["seeds"] = 1
    return parse_space(raw)


def family_bench(family: str) -> None:
    """One model family's study trial (every dropout of the study's grid at its largest rate) through plain
    model.fit and through the population engine, alone and at the engine's batch size, measured side by side."""
    space = load_space(FAMILY_SPACES[family])
    configs = space.configurations()
    heavy = max(configs, key=lambda c: sum(c[a] for a in RATE_AXES))
    epochs = space.training.epochs
    engine = get_engine("keras")
    short, long = 2, 6
    engine.run_all(_single_configuration(space, heavy, 1).trials())  # warm-up
    t_short = _best_of(1, lambda: engine.run_all(_single_configuration(space, heavy, short).trials()))
    t_long = _best_of(1, lambda: engine.run_all(_single_configuration(space, heavy, long).trials()))
    per_epoch = (t_long - t_short) / (long - short)
    keras_s = t_short - short * per_epoch + epochs * per_epoch  # build + evaluate once, then per epoch

    trial = _single_configuration(space, heavy, epochs).trials()
    single_s = population_seconds_per_trial(trial, repeats=1)
    chunk = PopulationEngine()._chunk(space)
    batch_s = population_seconds_per_trial(space.trials()[:chunk], repeats=1)
    data = split_for(trial[0])
    setting = ", ".join(f"{a} {heavy[a]:g}" for a in RATE_AXES if heavy[a] > 0)
    print(
        f"\n{family}: {space.name}.yaml's trial -- {data.image_shape[0]}x{data.image_shape[1]} digits "
        f"{len(data.x_train)}/{len(data.x_test)}, {trial[0].space.model.family} "
        f"{'filters ' + str(space.model.filters) + ', ' if space.model.filters else ''}"
        f"hidden {space.model.hidden_units}, {epochs} epochs, batch {space.training.batch_size}; {setting}"
    )
    print(
        f"  plain model.fit            {keras_s:9.3f} s/trial  (build + {epochs} x {per_epoch:.3f} s/epoch, "
        f"measured on {short} and {long} epochs)"
    )
    print(f"  population, 1 trial        {single_s:9.3f} s/trial  ({epochs} epochs, measured)")
    print(f"  population, {chunk:3d} trials     {batch_s:9.3f} s/trial  (the study's first {chunk} trials, measured)")
    print(f"  speed-up, 1 trial          {keras_s / single_s:9.1f}x  over plain model.fit")
    print(f"  speed-up, {chunk} trials      {keras_s / batch_s:9.1f}x  over plain model.fit")


def profile(chunk: int, epochs: int = 400) -> None:
    """Where a population batch's time goes, by ablation on the reference trial (dropout 0.5, input dropout 0.2).

    Each line is seconds per 4000-epoch trial at `chunk` trials per batch, best of three runs of `epochs` epochs.
    """
    import dataclasses

    import tensorflow as tf

    def per_trial(space: SearchSpace, shrink_test: bool = False) -> float:
        trials = space.trials()[:chunk]
        splits = [split_for(t) for t in trials]
        if shrink_test:  # a one-row test set: the per-epoch evaluation costs next to nothing
            splits = [dataclasses.replace(s, x_test=s.x_test[:1], y_test=s.y_test[:1]) for s in splits]
        train_population(trials, splits)
        return _best_of(3, lambda: train_population(trials, splits)) / len(trials) * 4000 / epochs

    def space(dropout: float, input_dropout: float) -> SearchSpace:
        raw = _reference(epochs=epochs, seeds=chunk, dropout=[dropout]).model_dump(mode="json")
        raw["axes"]["input_dropout"] = [input_dropout]
        return parse_space(raw)

    full = per_trial(space(0.5, 0.2))
    no_dropout = per_trial(space(0.0, 0.0))
    no_eval = per_trial(space(0.5, 0.2), shrink_test=True)

    @tf.function
    def matmuls(x_train, x_test, w1, w2, n):
        # The epoch's matrix products: forward, both backward products per layer, and the test forward pass.
        for _ in tf.range(n):
            h = tf.matmul(x_train, w1)
            o = tf.matmul(h, w2)
            tf.matmul(o, w2, transpose_b=True)
            tf.matmul(h, o, transpose_a=True)
            tf.matmul(x_train, h, transpose_a=True)
            tf.matmul(tf.matmul(x_test, w1), w2)
        return n

    args = [tf.random.normal(shape) for shape in ((chunk, 30, 2), (chunk, 70, 2), (chunk, 2, 500), (chunk, 500, 1))]
    matmuls(*args, tf.constant(2))
    products = _best_of(3, lambda: matmuls(*args, tf.constant(epochs))) / chunk * 4000 / epochs
    print(f"\nwhere the time goes ({chunk} trials per batch, s per 4000-epoch trial, ablations of {epochs} epochs):")
    print(f"  whole trial                          {full:7.3f}")
    print(f"  dropout masks (generate and apply)   {full - no_dropout:7.3f}  (full minus dropout off)")
    print(f"  per-epoch test evaluation + metrics  {full - no_eval:7.3f}  (full minus a one-row test set)")
    print(f"  matrix products alone                {products:7.3f}  (the same matmuls in a bare loop)")
    rest = full - (full - no_dropout) - (full - no_eval) - products
    print(f"  everything else                      {rest:7.3f}  (elementwise forward/backward, Adam, loop)")


def main(
    keras_epochs: int = 200,
    study_file: str | None = None,
    with_profile: bool = False,
    families: tuple[str, ...] = tuple(FAMILY_SPACES),
) -> int:
    study = load_space(study_file) if study_file else None  # a bad file is refused before minutes of timing
    print(f"machine: {machine.describe()}")
    v = versions()
    print(f"         {platform.platform()}, TensorFlow {v['tensorflow_version']}, Keras {v['keras_version']}")
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

    if with_profile:
        profile(chunk)

    for family in families:
        family_bench(family)

    if study:
        space = study
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
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB on Linux
    print(f"\npeak memory of this process (benchmarks and study together): {peak:.2f} GiB")
    return 0
