"""Engine `population`: many trials trained at once as one XLA computation (JAX).

Trials of the same architecture (model family, widths, batch norm on/off), data shape, epochs and minibatch size are
trained together: every weight, optimizer slot and batch-norm statistic has a leading trial axis, every
hyperparameter (the learning rate included) is a per-trial array, and the whole of `model.fit` -- epochs,
minibatches, dropout, Adam, max-norm, per-epoch test and validation evaluation, early stopping, and at the end the
held-out probabilities with Monte Carlo dropout -- is one compiled program (`training.py`), split over the
machine's cores (or run on its GPU).
Every operation is per trial and the random numbers are a hash of the trial's own seed (`masks.py`), so a trial's
result does not depend on which trials share its batch, the batch's size or the number of devices.

How many trials train together is measured, not fixed (`batching.py`); a batch is padded to a size already
compiled rather than compiled again for a few trials.
"""

from __future__ import annotations

import study.engines.xla as xla  # (configures JAX's devices and compilation cache: must come first)

# isort: split

import time
from collections import defaultdict
from collections.abc import Iterator
from importlib import metadata

import jax
import jax.numpy as jnp
import numpy as np

from study.axes import RATE_AXES
from study.datasets import Split
from study.engines import masks
from study.engines.base import Engine, split_for
from study.engines.batching import BatchSizer
from study.engines.networks import Architecture, network
from study.engines.training import (
    EXTRAS,
    METRICS,
    REGRESSION_METRICS,
    Data,
    Loop,
    Settings,
    TrainResult,
    compile_training,
)
from study.machine import cpu_model
from study.schema import History, Predictions, TrialResult, completed_result, failed_result
from study.space import SearchSpace, Trial


def architecture(trial: Trial, data: Split) -> Architecture:
    model = trial.space.model
    return Architecture(
        family=model.family,
        filters=tuple(model.filters or ()),
        image_shape=data.image_shape,
        n_features=data.n_features,
        hidden_units=tuple(trial.config["hidden_units"]),
        n_outputs=data.n_outputs,
        batch_norm=bool(trial.config["batch_norm"]),
        activation=trial.space.model.activation,
        n_train=len(data.x_train),
        n_test=len(data.x_test),
        n_validation=data.shape["n_validation"],
        regression=data.task == "regression",
    )


def hyperparameters(trials: list[Trial], streams: dict[int, str]) -> dict:
    """Per-trial hyperparameters as [T] arrays, and a keep threshold per dropout mask stream."""
    col = lambda key: np.array([t.config[key] for t in trials])  # noqa: E731
    es = [t.early_stopping for t in trials]
    rates = {axis: col(axis).astype(np.float32) for axis in RATE_AXES}
    return {
        **rates,
        "learning_rate": col("learning_rate").astype(np.float32),
        "max_norm": np.array([t.config["max_norm"] or 0.0 for t in trials], np.float32),
        "l2": col("l2").astype(np.float32),
        "es_on": np.array([e is not None for e in es]),
        "es_patience": np.array([e.patience if e else 0 for e in es], np.int32),
        "es_min_delta": np.array([e.min_delta if e else 0.0 for e in es], np.float32),
        "es_maximize": np.array([bool(e) and e.monitor == "val_accuracy" for e in es]),
        "es_restore": np.array([bool(e) and e.restore_best_weights for e in es]),
        "thresholds": {stream: masks.keep_thresholds(rates[axis]) for stream, axis in streams.items()},
    }


def _settings(trials: list[Trial], splits: list[Split], streams: dict[int, str], shuffle: bool) -> Settings:
    opt = trials[0].space.training.optimizer
    return Settings(
        epochs=trials[0].epochs,
        batch_size=trials[0].batch_size,
        beta_1=opt.beta_1,
        beta_2=opt.beta_2,
        epsilon=opt.epsilon,
        streams=frozenset(s for s, axis in streams.items() if any(t.config[axis] > 0 for t in trials)),
        max_norm=any(t.config["max_norm"] for t in trials),
        shared_data=all(s is splits[0] for s in splits),
        shuffle=shuffle,
        validation=splits[0].has_validation,
        mc_samples=trials[0].space.evaluation.mc_samples,
    )


def _labels(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Float targets for a sigmoid or linear (regression: n_classes 0) output, integer classes for softmax."""
    return y.astype(np.float32) if n_classes in (0, 2) else y.astype(np.int32)


def _data(splits: list[Split], shared: bool) -> Data:
    """The data of a batch: held once when every trial trains on the same split, else stacked per trial."""

    def arrays(s: Split) -> tuple[np.ndarray, ...]:
        x_val, y_val = (s.x_val, s.y_val) if s.has_validation else (s.x_test[:1], s.y_test[:1])  # unused
        parts = (s.y_train, s.y_test, y_val)
        y_train, y_test, y_val = (_labels(y, s.n_classes) for y in parts)
        return s.x_train, y_train, s.x_test, y_test, x_val, y_val

    parts = [arrays(s) for s in (splits[:1] if shared else splits)]
    return Data(*(jnp.asarray(p[0] if shared else np.stack(p)) for p in zip(*parts, strict=True)))


_EXECUTABLES: dict[tuple, object] = {}


def _executable(arch: Architecture, settings: Settings, size: int, args: tuple):
    """The training program for this architecture, settings and batch size, compiled once per process (and
    loaded from the on-disk cache when an earlier run compiled it)."""
    key = (arch, settings, size)
    if key not in _EXECUTABLES:
        _EXECUTABLES[key] = compile_training(arch, settings, xla.devices()).lower(*args).compile()
    return _EXECUTABLES[key]


def padded_size(n: int) -> int:
    """The batch size `n` trials are trained at: a multiple of the device count (each device gets a share)."""
    d = len(xla.devices())
    return -(-n // d) * d


def train_population(
    trials: list[Trial],
    splits: list[Split],
    initial: list[np.ndarray] | None = None,
    shuffle: bool = True,
    pad_to: int | None = None,
) -> TrainResult:
    """Train trials of one architecture together. `initial` (stacked flat params) replaces the glorot draw
    (tests); the batch is padded with copies of its last trial to `pad_to` (default: a multiple of the devices)."""
    arch = architecture(trials[0], splits[0])
    net = network(arch)
    settings = _settings(trials, splits, net.dropout_streams, shuffle)
    n = len(trials)
    size = max(pad_to or 0, padded_size(n))
    padded, padded_splits = trials + [trials[-1]] * (size - n), splits + [splits[-1]] * (size - n)
    params = initial if initial is not None else net.initial([t.seed for t in trials])
    params = [np.concatenate([p, np.repeat(p[-1:], size - n, axis=0)]) if size > n else p for p in params]
    seeds = np.array([t.seed for t in padded], dtype=np.uint64).astype(np.uint32)
    hyper = jax.tree.map(jnp.asarray, hyperparameters(padded, net.dropout_streams))
    args = ([jnp.asarray(p) for p in params], _data(padded_splits, settings.shared_data), jnp.asarray(seeds), hyper)
    program = _executable(arch, settings, size, args)
    start = time.perf_counter()
    history, epochs_run, final, extras, final_params, predictions = jax.block_until_ready(program(*args))
    running = time.perf_counter() - start
    epochs_run = np.asarray(epochs_run)[:n]
    trained = int(epochs_run.max())
    return TrainResult(
        history=np.asarray(history)[:trained, :n],
        epochs_run=epochs_run,
        final=np.asarray(final)[:n],
        extras=np.asarray(extras)[:n],
        predictions={split: np.asarray(p)[:n] for split, p in predictions.items()},
        params=[np.asarray(p)[:n] for p in final_params],
        seconds=running,
    )


def _predictions(probabilities: dict[str, np.ndarray] | None, i: int, data: Split) -> Predictions | None:
    """Trial i's final probabilities as the schema's `Predictions` (None for a regression)."""
    if not probabilities:
        return None
    splits = ["test", *(["validation"] if data.has_validation else [])]
    labels = {"test": data.y_test, "validation": data.y_val}
    mc = {split: probabilities[f"mc_{split}"][i] for split in splits} if "mc_test" in probabilities else None
    return Predictions(
        labels={split: labels[split] for split in splits},
        deterministic={split: probabilities[split][i] for split in splits},
        mc=mc,
    )


def mc_passes(trial: Trial, data: Split, params: list[np.ndarray], samples: int) -> np.ndarray:
    """Single Monte Carlo dropout passes of one trial's network with the given flat parameters (one trial, no
    leading axis) on its test rows, [samples, rows, outputs]: the engine's own `mc_pass`, for the fidelity test."""
    arch = architecture(trial, data)
    net = network(arch)
    settings = _settings([trial], [data], net.dropout_streams, shuffle=False)
    loop = Loop(arch, settings)
    hyper = jax.tree.map(lambda a: jnp.asarray(a)[0], hyperparameters([trial], net.dropout_streams))
    seed = jnp.uint32(trial.seed)
    one = jax.jit(lambda s: loop.mc_pass([jnp.asarray(p) for p in params], jnp.asarray(data.x_test), seed, hyper, 0, s))
    return np.stack([np.asarray(one(s)) for s in range(samples)])


def engine_version() -> str:
    """What the `engine_version` column records for this engine's trials."""
    return f"jax {metadata.version('jax')} ({xla.describe()})"


class PopulationEngine(Engine):
    name = "population"

    def __init__(self, trials_per_batch: int | None = None):
        self.version = engine_version()
        self.sizer = BatchSizer(
            fixed=trials_per_batch,
            multiple=len(xla.devices()),
            memory=xla.cache_dir().parent / "batch_sizes.json",
            machine=f"{cpu_model()} {xla.describe()}",
            device=xla.batch_limits(),
        )

    def check(self, space: SearchSpace) -> None:
        if space.model.family == "custom":
            from study.errors import StudyError

            raise StudyError(
                f"model.family custom ({space.model.build}) runs on the keras engine only: the population engine "
                "trains the built-in families, whose networks it writes itself; pass --engine keras"
            )

    def batch_size(self, space: SearchSpace) -> int:
        """Trials handed out at once: enough for every architecture group to fill a few batches."""
        values = space.axis_values()
        n_groups = np.prod([len(values[a]) for a in ("hidden_units", "batch_norm", "epochs", "batch_size")])
        return self.sizer.largest(self._memory_cap(space)) * int(n_groups) * 2

    def _memory_cap(self, space: SearchSpace) -> int:
        trial = space.first_trial()
        data = split_for(trial)
        widest = max(max(v) for v in space.axis_values()["hidden_units"])
        net = network(architecture(Trial(space, {**trial.config, "hidden_units": (widest,)}, 0), data))
        rows = max(len(data.x_test), data.shape["n_validation"])
        return self.sizer.memory_cap(net, len(data.x_train), rows, max(space.axis_values()["batch_size"]))

    def run(self, trials: list[Trial]) -> Iterator[list[TrialResult]]:
        """Trials train together when they share an architecture, epochs and minibatch size (one program)."""
        groups: dict[tuple[Architecture, int, int], list[tuple[Trial, Split]]] = defaultdict(list)
        failed = []
        for trial in trials:
            try:
                data = split_for(trial)
                groups[architecture(trial, data), trial.epochs, trial.batch_size].append((trial, data))
            except Exception as exc:
                failed.append(failed_result(trial, self.name, exc, 0.0))
        if failed:
            yield failed
        cap = self._memory_cap(trials[0].space) if trials else 1
        for (arch, _, _), members in groups.items():
            while members:
                size = self.sizer.next_size(arch, len(members), cap)
                part, members = members[:size], members[size:]
                yield self._run_batch(arch, [t for t, _ in part], [d for _, d in part], size)

    def _run_batch(self, arch: Architecture, trials: list[Trial], splits: list[Split], size: int) -> list[TrialResult]:
        start = time.perf_counter()
        try:
            result = train_population(trials, splits, pad_to=size)
        except Exception as exc:  # the whole batch failed: every trial in it is reported
            return [failed_result(t, self.name, exc, time.perf_counter() - start) for t in trials]
        self.sizer.record(arch, size, result.seconds, trials[0].epochs)
        per_trial = (time.perf_counter() - start) / len(trials)
        out = []
        for i, (trial, data) in enumerate(zip(trials, splits, strict=True)):
            n = int(result.epochs_run[i])
            names = REGRESSION_METRICS if data.task == "regression" else METRICS
            curves = {m: result.history[:n, i, j] for j, m in enumerate(names)}
            metrics = dict(zip(names, result.final[i], strict=True))
            metrics |= dict(zip(EXTRAS, result.extras[i], strict=False))  # a regression's MAE and R2
            if not data.has_validation:
                for m in [*names, *EXTRAS]:
                    if m.startswith("validation_"):
                        curves.pop(m, None)
                        metrics.pop(m, None)
            history = History(**curves)
            row = completed_result(trial, self.name, history, metrics, data.shape, per_trial, self.version,
                                   _predictions(result.predictions, i, data))  # fmt: skip
            out.append(row)
        return out

    def estimate_seconds(self, space: SearchSpace, n_trials: int) -> tuple[float, str]:
        trial = space.first_trial()
        data = split_for(trial)
        rows = len(data.x_train) + len(data.x_test) + data.shape["n_validation"]
        units = network(architecture(trial, data)).activation_units()
        per_row, reference_units, basis = SECONDS_PER_EPOCH_AND_ROW[space.model.family]
        epochs = np.mean(space.axis_values()["epochs"])
        seconds = n_trials * epochs * rows * per_row * units / reference_units + 10.0
        return seconds, f"{basis}, scaled by epochs x rows x model size"


# Seconds per epoch and data row of one trial in a chosen batch, the model size they were measured at, and where from
# (a 2-core AMD EPYC, `make search`/`make bench`, 2026-11-26); compiling adds a few seconds per architecture.
SECONDS_PER_EPOCH_AND_ROW = {
    "mlp": (0.08 / (4000 * 100), 6002, "~0.08 s per 4000-epoch reference trial (2-500-1 MLP), 2-core CPU"),
    "cnn": (262.0 / 432 / (50 * 1797), 9984, "cnn.yaml: 432 trials of 50 epochs in 262 s, 2-core CPU"),
    "rnn": (97.0 / 216 / (40 * 1797), 4352, "rnn.yaml: 216 trials of 40 epochs in 97 s, 2-core CPU"),
}
