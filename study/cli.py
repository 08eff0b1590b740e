"""Command line (`dropout-study` or `python -m study`): search, report, export, bench.

Bad input ends with one clear message on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import NoReturn

from study import __version__
from study.engines import ENGINES
from study.errors import StudyError, shown
from study.space import SearchSpace, default_engine, load_space

EXIT_BAD_INPUT = 2
EXIT_TRIALS_FAILED = 1
MAX_TRIALS_PER_BATCH = 4096  # far above what fits in memory at once for any model worth stacking


def _whole_number(low: int = 1, high: int = 10**9):
    """An argparse type: a whole number in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{shown(text)} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high:,}, got {value}")
        return value

    return parse


_positive_int = _whole_number()


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a number") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {shown(text)}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with its refusals in the one-line form of every other error (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dropout-study" if Path(sys.argv[0]).name == "dropout-study" else "python -m study",
        description="Grid studies of dropout and related regularisers over many seeds.",
    )
    parser.add_argument("--version", action="version", version=f"dropout-study {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    search = commands.add_parser(
        "search",
        help="run (or resume) a study",
        description="Run every (configuration, seed) trial of a search space not yet in its results folder.",
    )
    search.add_argument("space_file", metavar="SPACE_FILE", help="a search-space YAML file")
    search.add_argument(
        "overrides",
        nargs="*",
        metavar="FIELD=VALUE",
        help="replace a field of the file, validated like it: seeds=30, training.epochs=1000, "
        "axes.dropout_rate=[0.0,0.5] (values are YAML)",
    )
    search.add_argument(
        "--engine",
        choices=ENGINES,
        help="population: many trials at once as one XLA program, held to plain Keras by tests (the default); "
        "keras: plain model.fit (the default for a custom model, which only it can build)",
    )
    search.add_argument(
        "--trials-per-batch",
        type=_whole_number(1, MAX_TRIALS_PER_BATCH),
        metavar="N",
        help="population engine: trials trained together (default: measured on this machine)",
    )
    search.add_argument(
        "--results-dir",
        default="results",
        metavar="DIR",
        help="folder that holds one sub-folder per study (default: results)",
    )
    search.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the file, print the grid and a run-time estimate, stop",
    )
    search.add_argument("--max-trials", type=_positive_int, metavar="N", help="run at most N new trials")
    search.add_argument("--quiet", action="store_true", help="no progress bar")
    scale = search.add_argument_group(
        "distributed mode (keras-tuner's chief/worker protocol over gRPC; unauthenticated: trusted networks only)"
    )
    role = scale.add_mutually_exclusive_group()
    role.add_argument("--chief", action="store_true", help="serve the study's trials to workers until all are done")
    role.add_argument("--worker", action="store_true", help="run trials handed out by a chief (see --oracle)")
    scale.add_argument(
        "--port", type=_whole_number(1, 65535), metavar="P", help="chief: port to listen on (default 8000)"
    )
    scale.add_argument("--bind", metavar="HOST", help="chief: address to listen on (default 127.0.0.1, loopback only)")
    scale.add_argument(
        "--lease", type=_positive_float, default=1800.0, metavar="S",
        help="chief: seconds after which a trial handed out but not reported is handed out again (default 1800)",
    )  # fmt: skip
    scale.add_argument(
        "--local-workers", type=_whole_number(1, 256), default=0, metavar="N", help="chief: also start N workers here"
    )
    scale.add_argument("--oracle", metavar="HOST:PORT", help="worker: the chief's address (or KERASTUNER_ORACLE_*)")
    scale.add_argument(
        "--patience", type=_positive_float, default=120.0, metavar="S",
        help="worker: how long to keep retrying an unreachable chief before giving up (default 120)",
    )  # fmt: skip

    report = commands.add_parser(
        "report",
        help="build figures and a report from a study's results",
        description="Build figures/ and report.md in a study's results folder from its trials and curves.",
    )
    report.add_argument(
        "results",
        nargs="?",
        metavar="RESULTS_DIR",
        help="a study's results folder (default: the latest study)",
    )
    report.add_argument("--space", metavar="SPACE_FILE", help="report the study of this search-space file")
    report.add_argument("--results-dir", default="results", metavar="DIR", help="where studies live (default: results)")
    report.add_argument("--hue", metavar="AXIS", help="axis that colours the lines of the axis figures")
    report.add_argument("--facet", metavar="AXIS", help="axis that splits the axis figures into panels")
    report.add_argument(
        "--curves",
        action="append",
        default=[],
        metavar="CONFIG",
        help="also draw the learning curves of this configuration: a config_key from summary.csv or "
        "'axis=value,...' with unnamed regularisers off (repeatable)",
    )
    report.add_argument(
        "--metric",
        metavar="NAME",
        help="the test column every statistic and figure measures, e.g. test_nll or mc_test_accuracy; choices are "
        "made on its validation counterpart (default: test_accuracy, or test_rmse for a regression)",
    )
    export = commands.add_parser(
        "export",
        help="write a study's trials as TensorBoard HParams runs",
        description="Write one TensorBoard run per finished trial (its hyperparameters, final metrics and per-epoch "
        "curves) and the HParams experiment into a log directory; open it with `tensorboard --logdir DIR`.",
    )
    export.add_argument(
        "--tensorboard",
        required=True,
        metavar="DIR",
        help="log directory to write: new, empty, or an earlier export of the same study (its runs are replaced)",
    )
    export.add_argument(
        "results", nargs="?", metavar="RESULTS_DIR", help="a study's results folder (default: the latest study)"
    )
    export.add_argument("--space", metavar="SPACE_FILE", help="export the study of this search-space file")
    export.add_argument("--results-dir", default="results", metavar="DIR", help="where studies live (default: results)")
    bench = commands.add_parser(
        "bench",
        help="measure the population engine against plain model.fit",
        description="Seconds per reference trial for plain model.fit and the population engine, measured side "
        "by side in one run, and the wall time of a complete study.",
    )
    bench.add_argument(
        "--keras-epochs",
        type=_whole_number(1, 4000),
        default=200,
        metavar="N",
        help="epochs of plain model.fit to time",
    )
    bench.add_argument(
        "--study",
        nargs="*",
        default=[str(f) for f in ("search_spaces/tutorial.yaml", "search_spaces/regularization.yaml")],
        metavar="SPACE_FILE",
        help="studies to run completely for their wall time (default: tutorial and regularization; '' for none)",
    )
    bench.add_argument("--profile", action="store_true", help="also break a batch's time down by ablation")
    bench.add_argument(
        "--families",
        nargs="*",
        choices=["cnn", "rnn"],
        default=["cnn", "rnn"],
        metavar="FAMILY",
        help="model families whose study trial to measure too (cnn, rnn; none with an empty list)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "search":
            return _search(args)
        if args.command == "bench":
            from study.bench import main as bench

            return bench(args.keras_epochs, tuple(args.study), args.profile, tuple(args.families))
        if args.command == "export":
            return _export(args)
        return _report(args)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\ninterrupted: finished trials are saved; run the same command again to resume", file=sys.stderr)
        return 130


def _search(args: argparse.Namespace) -> int:
    """Everything a run would refuse is checked first, so a dry run answers as the run would."""
    from study.engines import choose_keras_backend

    args.engine = args.engine or default_engine(args.space_file, args.overrides)
    choose_keras_backend(args.engine)
    space = load_space(args.space_file, args.overrides)
    role = _role(args)
    results = Path(args.results_dir)
    _check_results_folder(results, space)
    if role == "worker":
        from study.distributed import oracle_address

        address = oracle_address(args.oracle)
    if role == "chief":
        _chief_port(args)
    from study.engines import get_engine  # engines import TensorFlow or JAX: only once the input is valid

    engine = get_engine(args.engine, args.trials_per_batch)
    engine.check(space)
    if args.dry_run:
        print(describe(space, args.space_file, engine, results))
        return 0
    _check_writable(results)
    if role == "chief":
        summary = _chief(args, space, engine)
    elif role == "worker":
        from study.distributed import run_worker

        summary = run_worker(space, engine, args.results_dir, address, args.patience)
    else:
        from study.search import run_search

        summary = run_search(
            space,
            engine,
            results_root=args.results_dir,
            max_trials=args.max_trials,
            space_file=args.space_file,
            progress=not args.quiet,
        )
    if role == "worker":  # the chief reports the study; a worker reports what it ran, and its failures
        print(f"{space.name}: worker ran {summary.run} trial(s) in {summary.wall_time_s:.1f} s on engine {engine.name}")
        return EXIT_TRIALS_FAILED if summary.failed else 0
    print(
        f"{space.name}: ran {summary.run} trial(s) in {summary.wall_time_s:.1f} s on engine {engine.name}; "
        f"{summary.total - summary.remaining}/{summary.total} done; results in {summary.folder}"
    )
    if summary.failed:
        print(
            f"{len(summary.failed)} trial(s) failed (kept as failed rows; a rerun retries them):",
            file=sys.stderr,
        )
        for key, error in summary.failed[:20]:
            print(f"  {key}: {error}", file=sys.stderr)
        if len(summary.failed) > 20:
            print(f"  ... and {len(summary.failed) - 20} more (see the error column)", file=sys.stderr)
        return EXIT_TRIALS_FAILED
    if summary.remaining:
        print(f"{summary.remaining} trial(s) left: run the same command again to continue")
    return 0


def _check_results_folder(results: Path, space: SearchSpace) -> None:
    """Refuse, without writing anything, a results folder the run could not use: a file in its place, or a study
    folder whose manifest is unreadable or belongs to another search space."""
    from study.store import MANIFEST, ResultsStore, study_folder

    if results.exists() and not results.is_dir():
        raise StudyError(f"--results-dir {results} is a file, not a folder; pass a folder (it is created if missing)")
    folder = study_folder(results, space)
    if folder.exists() and not folder.is_dir():
        raise StudyError(f"{folder} is a file where the study keeps its folder: move it away or pass another "
                         "--results-dir")  # fmt: skip
    if (folder / MANIFEST).exists() or (folder / MANIFEST).is_symlink():
        ResultsStore(folder).check(space)


def _check_writable(folder: Path) -> None:
    """Refuse a results folder that cannot be written before anything trains (not after the first batch)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, "permission denied")
    except OSError as exc:
        raise StudyError(
            f"--results-dir {folder}: cannot write there ({exc.strerror or exc}); pass a folder you can write to"
        ) from None


def _role(args: argparse.Namespace) -> str:
    """chief, worker or single: from the flags, else from keras-tuner's environment variables."""
    role = "chief" if args.chief else "worker" if args.worker else "single"
    if role == "single" and os.environ.get("KERASTUNER_ORACLE_IP"):
        role = "chief" if os.environ.get("KERASTUNER_TUNER_ID", "chief") == "chief" else "worker"
    if role != "single" and args.max_trials:
        raise StudyError("--max-trials applies to a single-process search, not to --chief or --worker")
    return role


def _chief_port(args: argparse.Namespace) -> int:
    from study.distributed import DEFAULT_PORT, port_number

    if args.port:
        return args.port
    return port_number(os.environ.get("KERASTUNER_ORACLE_PORT", str(DEFAULT_PORT)), "KERASTUNER_ORACLE_PORT")


def _chief(args: argparse.Namespace, space: SearchSpace, engine):
    from study.distributed import ChiefSettings, run_chief

    worker_args = [args.space_file, *args.overrides, "--engine", args.engine, "--results-dir", args.results_dir]
    if args.trials_per_batch:
        worker_args += ["--trials-per-batch", str(args.trials_per_batch)]
    settings = ChiefSettings(
        bind=args.bind or os.environ.get("KERASTUNER_ORACLE_IP") or "127.0.0.1",
        port=_chief_port(args),
        lease_s=args.lease,
        local_workers=args.local_workers,
        worker_args=tuple(worker_args),
    )
    return run_chief(
        space, engine.name, args.results_dir, settings, args.space_file, not args.quiet, engine_version=engine.version
    )


def _data_line(space: SearchSpace) -> str:
    """The rows, features and classes of the first trial's data (made while the file was validated)."""
    from study.engines.base import split_for

    data = split_for(space.first_trial())
    rows = data.shape
    names = f": {', '.join(data.class_names[:10])}" if data.class_names else ""
    target = f"target {space.dataset.target or 'y'}, " if space.dataset.file else ""
    inferred = not (space.dataset.task or space.dataset.name)
    given = " (inferred from the target; set dataset.task to choose)" if inferred else ""
    task = (
        f"regression{given}: linear output, mean squared error, RMSE / MAE / R2"
        if data.task == "regression"
        else f"classification{given}, {data.n_classes} classes{names}"
    )
    return (
        f"data: {rows['n_train']} train / {rows['n_validation']} validation / {rows['n_test']} test rows, "
        f"{rows['n_features']} features{' after encoding' if space.dataset.file else ''}, {target}{task}"
    )


def describe(space: SearchSpace, space_file: str, engine, results_root: Path) -> str:
    """The dry-run text: what the study is, its grid, and how long it should take."""
    from study.store import SAME_TRIALS, ResultsStore, study_folder

    lines = [f"study {space.name!r} from {space_file}"]
    if space.description:
        lines.append(f"  {space.description}")
    split = space.dataset.split
    validation = (
        f", validation_size={split.validation_size} (early stopping and selection on it)"
        if split.validation_size
        else ", no validation rows (early stopping and selection use the test rows)"
    )
    lines.append(
        f"dataset: {space.dataset.label} {space.dataset.params or ''} train_size={split.train_size or 'default'}"
        f"{' (split redrawn per seed)' if split.per_seed else ''}{validation}"
        f"{'; data redrawn per seed (random_state = seed)' if space.dataset.redraw_data else ''}"
    )
    lines.append(_data_line(space))
    t, es = space.training, space.training.early_stopping
    stopping = f", early stopping on {es.monitor} (patience {es.patience})" if es else ""
    m = space.model
    built = f"custom {m.build} (build(hp) checked: it compiles and fits the data)" if m.build else ""
    lines.append(
        f"model: {built or f'{m.family} hidden {m.hidden_units} {m.activation}'}; "
        f"{t.epochs} epochs, batch {t.batch_size}, adam lr {t.optimizer.learning_rate}{stopping}"
    )
    if space.evaluation.mc_samples:
        lines.append(
            f"evaluation: Monte Carlo dropout, {space.evaluation.mc_samples} passes at the end of training (dropout "
            "on, batch norm in inference mode; NLL, Brier, ECE, AUC, accuracy, entropy as mc_* columns)"
        )
    swept = space.swept_axes()
    if space.nuisance:
        lines.append(f"nuisance (tuned per setting of the others): {', '.join(space.nuisance)}")
    lines.append("axes:")
    for axis, values in space.axis_values().items():
        listed = ", ".join(
            "none" if v is None else "-".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in values
        )
        tag = f"{len(values)} value(s)" if axis in swept else "fixed"
        lines.append(f"  {axis:<17} {tag:<11} {listed}")
    n_configs = space.n_configurations
    lines.append(f"seeds: {len(space.seeds)} ({_short_list(space.seeds)})")
    lines.append(f"trials: {n_configs} configuration(s) x {len(space.seeds)} seed(s) = {space.n_trials}")
    folder = study_folder(results_root, space)
    done, added = 0, None
    if (folder / "manifest.json").exists():
        store = ResultsStore(folder)  # it holds this study, or one this space grows (checked before)
        done, added = len(store.completed_keys()), store.growth(space)
    if added in (None, SAME_TRIALS):
        lines.append(f"already done in {folder}: {done}")
    else:
        lines.append(
            f"{folder}: {done} trials done; the study grows to {space.n_trials} trials ({added}): "
            f"{space.n_trials - done} to run"
        )
    seconds, basis = engine.estimate_seconds(space, space.n_trials - done)
    lines.append(f"estimated run time on engine {engine.name!r}: {_duration(seconds)} ({basis})")
    return "\n".join(lines)


def _short_list(values: list[int]) -> str:
    if values == list(range(values[0], values[0] + len(values))) and len(values) > 3:
        return f"{values[0]}..{values[-1]}"
    return ", ".join(map(str, values))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"~{seconds:.0f} s"
    if seconds < 7200:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def _report(args: argparse.Namespace) -> int:
    from study.analysis.report import build_report, find_study_folder

    folder = find_study_folder(args.results, args.space, args.results_dir)
    paths = build_report(folder, hue=args.hue, facet=args.facet, curves=tuple(args.curves), metric=args.metric)
    print(f"report: {paths['report']}")
    for name, path in paths.items():
        if name != "report":
            print(f"  {name}: {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from study.analysis.report import find_study_folder
    from study.export import export_tensorboard

    folder = find_study_folder(args.results, args.space, args.results_dir)
    done = export_tensorboard(folder, args.tensorboard)
    planned = f" of {done.planned} planned" if done.planned else ""
    print(
        f"tensorboard: {done.runs}{planned} trial(s) of {folder} written as runs to {done.folder}; "
        f"open it with `tensorboard --logdir {done.folder}` (HParams tab)"
    )
    return 0
