"""`python -m study bench`: the population engine against plain `model.fit` and the fastest outside implementation,
measured side by side in one run on one machine, which it names.

It prints seconds per 4000-epoch reference trial for plain Keras (measured on a few hundred epochs and scaled, as
the output says), for the population engine alone and at every batch size it may choose, and for the peer
(`../shared/peers/jax_pop.py`) when it is there; the same for a trial of each other model family's study; the cold
compile time of each architecture; and the wall time and peak memory of complete studies run as `make search`
runs them (a fresh process and an empty compilation cache, curves written).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from study import machine
from study.axes import RATE_AXES
from study.engines import get_engine
from study.engines.base import split_for
from study.schema import versions
from study.space import SearchSpace, Trial, load_space, parse_space

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"
REFERENCE = SPACES / "tutorial.yaml"
FAMILY_SPACES = {"cnn": SPACES / "cnn.yaml", "rnn": SPACES / "rnn.yaml"}
DEFAULT_STUDIES = (SPACES / "tutorial.yaml", SPACES / "regularization.yaml")
PEER = ROOT.parent / "shared" / "peers" / "jax_pop.py"


MC_SAMPLES = 30  # Monte Carlo dropout passes measured against the plain reference batch


def _reference(
    epochs: int | None = None, seeds: int = 1, dropout: list[float] | None = None, mc_samples: int = 0
) -> SearchSpace:
    raw = load_space(REFERENCE).model_dump(mode="json")
    raw["evaluation"] = {"mc_samples": mc_samples}
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


def population_seconds_per_trial(trials: list[Trial], repeats: int = 2, splits=None) -> float:
    """Running time per trial (compiling excluded: the first call compiles), best of `repeats`."""
    from study.engines.population import train_population

    splits = splits or [split_for(t) for t in trials]
    train_population(trials, splits)
    return min(train_population(trials, splits).seconds for _ in range(repeats)) / len(trials)


def cold_compile_seconds(trials: list[Trial]) -> float:
    """Seconds XLA takes to compile this batch's training with no cache (what a study's first batch pays)."""
    import jax

    from study.engines import population

    jax.config.update("jax_enable_compilation_cache", False)
    population._EXECUTABLES.clear()
    try:
        start = time.perf_counter()
        population.train_population(trials, [split_for(t) for t in trials])
        total = time.perf_counter() - start
        running = population.train_population(trials, [split_for(t) for t in trials]).seconds
    finally:
        jax.config.update("jax_enable_compilation_cache", True)
    return total - running


def batch_sizes() -> list[int]:
    """The sizes the engine's batch sizer may choose from on this machine."""
    from study.engines import xla

    n, most = len(xla.devices()), xla.batch_limits().most
    return [n * 2**k for k in range(20) if 2**k <= most]


def batch_table(space: SearchSpace, label: str) -> tuple[int, float]:
    """Seconds per trial at each batch size the engine may choose (trials of `space`), up to the first that is
    slower than the best so far (the engine stops looking there too); the best size and its time."""
    from study.engines.batching import GAIN

    trials = space.trials()
    best = (0, float("inf"))
    for size in batch_sizes():
        if size > len(trials):
            break
        per_trial = population_seconds_per_trial(trials[:size], repeats=2)
        print(f"  population, {size:3d} trials     {per_trial:9.4f} s/trial  ({label})")
        if per_trial < best[1]:
            best = (size, per_trial)
        elif per_trial * GAIN > best[1]:
            break
    return best


def peer_seconds_per_trial() -> float | None:
    """The peer's own figure (per 4000-epoch trial, compile excluded) on this machine, in this run: its documented
    command line, with as many devices as we use; the faster of its two layer variants."""
    from study.engines import xla

    if not PEER.exists():
        print(f"  peer                       (not found at {PEER})")
        return None
    best = None
    for layer in ("ew", "dot"):
        command = [sys.executable, str(PEER), "--P", "16", "--epochs", "1000", "--prng", "hash",
                   "--devices", str(len(xla.devices())), "--reps", "3", "--layer", layer]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            print(f"  peer ({layer})                 failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        seconds = json.loads(done.stdout.strip().splitlines()[-1])["per_trial_4000_s"]
        print(f"  peer jax_pop.py ({layer}), 16   {seconds:9.4f} s/trial  (its --P 16 --epochs 1000, scaled)")
        best = seconds if best is None else min(best, seconds)
    return best


def _single_configuration(space: SearchSpace, config: dict, epochs: int, seeds: int = 1) -> SearchSpace:
    raw = space.model_dump(mode="json")
    raw["training"]["epochs"] = epochs
    raw["axes"] = {a: [list(v) if isinstance(v, tuple) else v] for a, v in config.items() if a in space.swept_axes()}
    raw["seeds"] = seeds
    return parse_space(raw)


def family_bench(family: str) -> None:
    """One model family's study trial (every dropout of the study's grid at its largest rate) through plain
    model.fit and through the population engine, alone and at each batch size, measured side by side."""
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
    data = split_for(trial[0])
    setting = ", ".join(f"{a} {heavy[a]:g}" for a in RATE_AXES if heavy[a] > 0)
    print(
        f"\n{family}: {space.name}.yaml's trial -- {data.image_shape[0]}x{data.image_shape[1]} digits "
        f"{len(data.x_train)}/{len(data.x_test)}, {space.model.family} "
        f"{'filters ' + str(space.model.filters) + ', ' if space.model.filters else ''}"
        f"hidden {space.model.hidden_units}, {epochs} epochs, batch {space.training.batch_size}; {setting}"
    )
    print(
        f"  plain model.fit            {keras_s:9.3f} s/trial  (build + {epochs} x {per_epoch:.3f} s/epoch, "
        f"measured on {short} and {long} epochs)"
    )
    compile_s = cold_compile_seconds(trial)
    single_s = population_seconds_per_trial(trial, repeats=1)
    print(
        f"  population, 1 trial        {single_s:9.3f} s/trial  ({epochs} epochs, measured; compile {compile_s:.1f} s)"
    )
    mixed = _single_configuration(space, heavy, epochs, seeds=batch_sizes()[-1])  # the heaviest trial, many seeds
    size, batch_s = batch_table(mixed, f"{epochs} epochs, measured")
    print(f"  speed-up, 1 trial          {keras_s / single_s:9.1f}x  over plain model.fit")
    print(f"  speed-up, {size} trials      {keras_s / batch_s:9.1f}x  over plain model.fit")


def profile(size: int, epochs: int = 1000) -> None:
    """Where a population batch's time goes, by ablation on the reference trial, against the arithmetic floor.

    Each line is seconds per 4000-epoch trial at `size` trials per batch, best of three runs of `epochs` epochs."""
    import jax
    import jax.numpy as jnp

    from study.engines.networks import network
    from study.engines.population import architecture

    def per_trial(space: SearchSpace, shrink_test: bool = False) -> float:
        trials = space.trials()[:size]
        splits = [split_for(t) for t in trials]
        if shrink_test:  # a one-row test set: the per-epoch evaluation costs next to nothing
            one = dataclasses.replace(splits[0], x_test=splits[0].x_test[:1], y_test=splits[0].y_test[:1])
            splits = [one] * len(trials)
        return population_seconds_per_trial(trials, 3, splits) * 4000 / epochs

    def space(dropout: float, input_dropout: float) -> SearchSpace:
        raw = _reference(epochs=epochs, seeds=size, dropout=[dropout]).model_dump(mode="json")
        raw["axes"]["input_dropout"] = [input_dropout]
        return parse_space(raw)

    full = per_trial(space(0.5, 0.2))
    no_dropout = per_trial(space(0.0, 0.0))
    no_eval = per_trial(space(0.5, 0.2), shrink_test=True)

    # The floor: every multiply-add of the matrix products (forward, and twice that backward, on the 30 training
    # rows; forward on the 70 test rows), 4000 epochs, at the rate this machine multiplies large matrices.
    trial = _reference().trials()[0]
    data = split_for(trial)
    macs = sum(rows * cols for rows, cols, *_ in network(architecture(trial, data)).kernel_specs())
    flops = 4000 * 2 * macs * (3 * len(data.x_train) + len(data.x_test))
    a = jnp.ones((2048, 2048), jnp.float32)
    product = jax.jit(lambda a: a @ a)
    product(a).block_until_ready()
    rate = 2 * 2048**3 / _best_of(5, lambda: product(a).block_until_ready())
    print(f"\nwhere the time goes ({size} trials per batch, s per 4000-epoch trial, ablations of {epochs} epochs):")
    print(f"  whole trial                          {full:7.3f}")
    print(f"  dropout masks (generate and apply)   {full - no_dropout:7.3f}  (full minus dropout off)")
    print(f"  per-epoch test evaluation + metrics  {full - no_eval:7.3f}  (full minus a one-row test set)")
    print(f"  arithmetic floor                     {flops / rate:7.3f}  ({flops / 1e9:.2f} GFLOP of matrix products "
          f"at {rate / 1e9:.0f} GFLOP/s, this machine's float32 rate on a large product)")  # fmt: skip
    print("  (differences under ~0.01 s are within run-to-run noise)")


def study_wall_time(space_file: Path) -> None:
    """A complete study as `make search` runs it: a fresh process, an empty compilation cache, curves written."""
    space = load_space(space_file)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DROPOUT_STUDY_CACHE": str(Path(tmp) / "cache")}
        search = [sys.executable, "-m", "study", "search", str(space_file), "--results-dir", str(Path(tmp) / "r"),
                  "--quiet"]  # fmt: skip
        # A wrapper process whose only child is the search, so that its children's peak memory is the search's.
        wrapper = (
            "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
        )
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", wrapper, *search], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        peak = int(done.stdout.strip().splitlines()[-1]) / 2**20 if done.stdout.strip() else float("nan")  # GiB
    status = "" if done.returncode == 0 else f", exit status {done.returncode}: {done.stderr.strip()[-300:]}"
    print(
        f"study {space.name}: {space.n_trials} trials x {space.training.epochs} epochs in {wall:.1f} s "
        f"({wall / 60:.1f} min, {space.n_trials / wall:.2f} trials/s), peak memory {peak:.2f} GiB, "
        f"process start and compiling included{status}"
    )


def main(
    keras_epochs: int = 200,
    studies: tuple[str, ...] = tuple(str(s) for s in DEFAULT_STUDIES),
    with_profile: bool = False,
    families: tuple[str, ...] = tuple(FAMILY_SPACES),
) -> int:
    studies = tuple(s for s in studies if s)
    for file in studies:
        load_space(file)  # a bad file is refused before minutes of timing
    from study.engines import xla

    v = versions()
    print(f"machine: {machine.describe()}")
    print(f"         {platform.platform()}; TensorFlow {v['tensorflow_version']}, Keras {v['keras_version']}, "
          f"JAX {v['jax_version']} on {xla.describe()}")  # fmt: skip
    print("reference trial: circles 30/70, mlp 2-500-1 relu, adam, batch 32, 4000 epochs, per-epoch test metrics\n")

    keras_s = keras_seconds_per_trial(keras_epochs)
    print(f"  plain model.fit            {keras_s:9.3f} s/trial  (measured on {keras_epochs} epochs, scaled to 4000)")
    single = _reference(seeds=1).trials()
    compile_s = cold_compile_seconds(single)
    single_s = population_seconds_per_trial(single)
    print(f"  population, 1 trial        {single_s:9.4f} s/trial  (4000 epochs, measured; compile {compile_s:.1f} s)")
    mixed = _reference(seeds=batch_sizes()[-1] // 10 + 1, dropout=[round(0.1 * i, 1) for i in range(10)])
    size, batch_s = batch_table(mixed, "4000 epochs, dropout 0.0-0.9 mixed, measured")
    peer_s = peer_seconds_per_trial()
    print()
    print(f"  speed-up, 1 trial          {keras_s / single_s:9.0f}x  over plain model.fit")
    print(f"  speed-up, {size} trials      {keras_s / batch_s:9.0f}x  over plain model.fit")
    if peer_s:
        print(f"  against the peer           {peer_s / batch_s:9.2f}x  (its best per-trial time / ours, same run)")
    with_mc = _reference(seeds=size, dropout=[0.5], mc_samples=MC_SAMPLES).trials()
    mc_s = population_seconds_per_trial(with_mc)
    cost = mc_s / population_seconds_per_trial(_reference(seeds=size, dropout=[0.5]).trials()) - 1
    print(f"  with MC dropout, {MC_SAMPLES} passes {mc_s:9.4f} s/trial  ({size} trials of dropout 0.5: {cost:+.0%} "
          "over the same batch without MC)")  # fmt: skip

    if with_profile:
        profile(size)

    for family in families:
        family_bench(family)

    print()
    for file in studies:
        study_wall_time(Path(file))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB on Linux
    print(f"\npeak memory of this process (the per-trial benchmarks): {peak:.2f} GiB")
    return 0
