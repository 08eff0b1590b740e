"""`python -m study export --tensorboard DIR`: a study's finished trials as TensorBoard HParams runs.

    DIR/
      events.out.tfevents.*.dropout-study   the experiment: each hyperparameter with its values, and the metrics
      <trial_key>/events.out.tfevents.*.dropout-study
                        one run per finished trial: its hyperparameters (the axes the study varies, as trials.csv
                        writes them, and the seed), its per-epoch curves (`epoch/<metric>`, step = epoch) and its
                        final metrics (`final/<metric>`, step = the last epoch)
      study-export.json which study DIR holds, so that a rerun replaces its runs instead of adding to them

Every trial is a session group of its own: the seed is one of its hyperparameters, and TensorBoard groups only runs
whose hyperparameters are all equal. The events are built from TensorBoard's protos and written in its record
format directly: TensorBoard's own EventFileWriter imports TensorFlow when it is installed (seconds at every start),
and the analysis never does.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.summary.writer.record_writer import RecordWriter

from study.analysis import metrics as metric_names
from study.analysis.tables import completed, varying_axes
from study.axes import AXIS
from study.errors import StudyError, shown
from study.schema import CURVE_METRICS, TRIAL_COLUMNS
from study.store import ResultsStore

MARKER = "study-export.json"
SUFFIX = ".dropout-study"  # ends every event file this module writes; a rerun removes only files named so


def final_metrics(done: pd.DataFrame) -> dict[str, tuple[str, Any]]:
    """The final metrics a study records (every metric column of trials.csv with a value: accuracy or a regression's
    RMSE/MAE/R2, calibration and MC-dropout columns, losses), each with its description and HParams dataset type;
    the train ones are measured in inference mode (no dropout)."""
    kinds = {"train": hp.Metric.TRAINING, "validation": hp.Metric.VALIDATION}
    found = {}
    for column in TRIAL_COLUMNS:
        if metric_names.is_metric(column) and column in done and done[column].notna().any():
            metric = metric_names.get(column)
            found[column] = (f"{metric.label} of the final model ({metric.direction})", kinds.get(metric.split))
    return found


_RUN_NAME = re.compile(r"\w[\w.-]*")  # a trial key is '<config_key>-s<seed>': a folder name, never a path


@dataclass(frozen=True)
class Export:
    """What `export_tensorboard` wrote."""

    folder: Path  # the TensorBoard log directory
    runs: int  # finished trials written, one run each
    planned: int  # trials the study plans (0 where its manifest does not say)
    hparams: tuple[str, ...]
    metrics: tuple[str, ...]


def export_tensorboard(study_folder: str | Path, out: str | Path) -> Export:
    """Write the finished trials of the study in `study_folder` into the TensorBoard log directory `out`.

    `out` must be missing, empty, or an earlier export of the same study, whose runs are then replaced."""
    store = ResultsStore(study_folder)
    manifest = store.manifest()
    trials = store.trials()
    done = completed(trials) if not trials.empty else trials
    if done.empty:
        raise StudyError(f"{store.folder} has no finished trials yet: run the search first, then export it")
    out = Path(out)
    previous = _previous_runs(out, manifest)
    keys = [str(k) for k in done["trial_key"]]
    bad = next((k for k in keys if not _RUN_NAME.fullmatch(k)), None)
    if bad is not None:
        raise StudyError(
            f"{store.folder} holds a trial key that is no folder name ({shown(bad)}): its batches/ "
            "are damaged; delete the CSV that holds it and rerun the search"
        )

    axes = varying_axes(done)
    values = {axis: [_hparam_value(axis, v) for v in done[axis]] for axis in axes}
    hparams = [_hparam(axis, values[axis]) for axis in axes]
    hparams.append(
        hp.HParam(
            "seed",
            hp.IntInterval(int(done["seed"].min()), int(done["seed"].max())),
            description="the trial's random seed",
        )
    )
    described = final_metrics(done)
    metrics = list(described)
    created = _seconds(manifest.get("created_at"), 0.0)
    experiment = hp.hparams_config_pb(
        hparams,
        [
            hp.Metric(f"final/{m}", display_name=m, description=described[m][0], dataset_type=described[m][1])
            for m in metrics
        ],
        time_created_secs=created,
    )
    curves = store.curves(keys)
    by_trial = {key: frame for key, frame in curves.groupby("trial_key", sort=False)}

    try:
        _remove_runs(out, [*previous, ""])
        out.mkdir(parents=True, exist_ok=True)
        marker = {
            "study": manifest["study"],
            "fingerprint": manifest["fingerprint"],
            "trial_fingerprint": manifest.get("trial_fingerprint"),
            "results": str(store.folder),
            "runs": sorted(keys),
        }
        (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        _write_events(out, created, [_event(created, 0, experiment)])
        for i, row in enumerate(done.itertuples(index=False)):
            trial_hparams = {axis: values[axis][i] for axis in axes if values[axis][i] is not None}
            trial_hparams["seed"] = int(row.seed)
            frame = by_trial.get(row.trial_key, curves.iloc[0:0])
            start, events = _run_events(row, trial_hparams, frame, metrics, created)
            _write_events(out / row.trial_key, start, events)
    except OSError as exc:
        raise StudyError(
            f"cannot write to --tensorboard {out} ({exc.strerror or exc}): pass a folder you can write to"
        ) from None
    planned = manifest.get("n_trials")
    return Export(
        folder=out,
        runs=len(done),
        planned=planned if isinstance(planned, int) else 0,
        hparams=(*axes, "seed"),
        metrics=tuple(metrics),
    )


def _previous_runs(out: Path, manifest: dict[str, Any]) -> list[str]:
    """The runs of an earlier export of this study in `out` (none for a missing or empty folder); anything else in
    the way is refused before a file is written."""
    if out.exists() and not out.is_dir():
        raise StudyError(f"--tensorboard {out} is a file, not a folder: pass a new or empty folder")
    try:
        if not out.exists() or not any(out.iterdir()):
            return []
        text = (out / MARKER).read_text()
    except FileNotFoundError:
        raise StudyError(
            f"--tensorboard {out} is not empty and holds no earlier export ({MARKER}): pass a new or empty folder"
        ) from None
    except OSError as exc:
        raise StudyError(f"cannot read --tensorboard {out} ({exc.strerror or exc}): pass another folder") from None
    try:
        previous = json.loads(text)
    except ValueError:
        previous = None
    runs = previous.get("runs") if isinstance(previous, dict) else None
    if not isinstance(runs, list) or not all(isinstance(r, str) and _RUN_NAME.fullmatch(r) for r in runs):
        raise StudyError(f"{out / MARKER} is corrupt: delete {out} (or pass another folder) and export again")
    if not _same_study(previous, manifest):
        raise StudyError(
            f"--tensorboard {out} holds an export of another study ({shown(previous.get('study'))}, another search "
            f"space): pass another folder, or delete it to export {manifest['study']!r} there"
        )
    return runs


def _same_study(marker: dict[str, Any], manifest: dict[str, Any]) -> bool:
    """Whether an export's marker names this study: its very search space, or one it grew from (more seeds or axis
    values keep the trial fingerprint, and every finished trial its key)."""
    if marker.get("study") != manifest["study"]:
        return False
    if marker.get("fingerprint") == manifest["fingerprint"]:
        return True
    trials = manifest.get("trial_fingerprint")
    return bool(trials) and marker.get("trial_fingerprint") == trials


def _remove_runs(out: Path, runs: Iterable[str]) -> None:
    """Delete the event files an earlier export wrote (its runs' folders too, once empty): a rerun writes them anew
    and never adds a second copy of a run."""
    for run in runs:
        folder = out / run
        if not folder.is_dir():
            continue
        for path in folder.glob(f"events.out.tfevents.*{SUFFIX}"):
            path.unlink()
        if run and not any(folder.iterdir()):
            folder.rmdir()


def _hparam_value(axis: str, value: Any) -> bool | float | str | None:
    """A trials.csv value as an HParams value: widths as written ('128-64'), no max-norm as 0 (a limit is positive,
    so 0 means none, as in the keras-tuner encoding), switches as booleans, the rest as numbers; None for a blank."""
    if axis == "max_norm":
        return 0.0 if pd.isna(value) else float(value)
    if pd.isna(value):
        return None
    if axis == "hidden_units":
        return str(value)
    if AXIS[axis].value_type is bool:
        return value.strip().lower() == "true" if isinstance(value, str) else bool(value)
    return float(value)


def _hparam(axis: str, values: list) -> hp.HParam:
    """An axis as an HParam whose domain is the values its trials took."""
    seen = sorted({v for v in values if v is not None})
    description = AXIS[axis].label + (", written 0 here" if axis == "max_norm" else "")
    domain = hp.Discrete(seen, dtype=type(seen[0])) if seen else None
    return hp.HParam(axis, domain, description=description)


def _run_events(row: Any, hparams: dict[str, Any], curves: pd.DataFrame, metrics: list[str], fallback: float):
    """A trial's events: its hyperparameters, each epoch's curves (blanks skipped), its final metrics, its end.
    Wall times run from the trial's start to its `finished_at` (epochs spread evenly between), so a rerun writes the
    same events."""
    end = _seconds(row.finished_at, fallback)
    duration = float(row.wall_time_s) if np.isfinite(row.wall_time_s) and row.wall_time_s > 0 else 0.0
    start = end - duration
    epochs = curves["epoch"].to_numpy(dtype=np.int64)
    runs = int(row.epochs_run) if np.isfinite(row.epochs_run) else 0
    last = max(runs, int(epochs.max()) if len(epochs) else 0)
    events = [_event(start, 0, hp.hparams_pb(hparams, trial_id=row.trial_key, start_time_secs=start))]
    columns = {m: curves[m].to_numpy(dtype=np.float64) for m in CURVE_METRICS}
    for i, epoch in enumerate(epochs):
        values = [
            summary_pb2.Summary.Value(tag=f"epoch/{m}", simple_value=float(column[i]))
            for m, column in columns.items()
            if math.isfinite(column[i])
        ]
        if values:
            events.append(
                _event(start + duration * epoch / max(last, 1), int(epoch), summary_pb2.Summary(value=values))
            )
    finals = [
        summary_pb2.Summary.Value(tag=f"final/{m}", simple_value=float(getattr(row, m)))
        for m in metrics
        if math.isfinite(getattr(row, m))
    ]
    events.append(_event(end, last, summary_pb2.Summary(value=finals)))
    end_info = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=end)
    events.append(_event(end, last, _hparams_summary(metadata.SESSION_END_INFO_TAG, end_info)))
    return start, events


def _hparams_summary(tag: str, end_info: plugin_data_pb2.SessionEndInfo) -> summary_pb2.Summary:
    """The session-end summary, as `tensorboard.plugins.hparams.summary.session_end_pb` builds it (that module
    imports TensorFlow)."""
    plugin_data = plugin_data_pb2.HParamsPluginData(session_end_info=end_info)
    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=metadata.create_summary_metadata(plugin_data), tensor=metadata.NULL_TENSOR)
    return summary


def _event(wall_time: float, step: int, summary: summary_pb2.Summary) -> event_pb2.Event:
    return event_pb2.Event(wall_time=wall_time, step=step, summary=summary)


def _write_events(folder: Path, start: float, events: list[event_pb2.Event]) -> None:
    """One event file, led by the file-version record every reader expects; named from the run's start time (not
    the clock), written under a temporary name and renamed into place, so a reader never sees half of it."""
    folder.mkdir(parents=True, exist_ok=True)
    head = event_pb2.Event(wall_time=start, file_version="brain.Event:2")
    tmp = folder / f".export-{uuid.uuid4().hex[:8]}.tmp"  # no 'tfevents' in the name: no reader picks it up
    try:
        with open(tmp, "wb") as handle:
            writer = RecordWriter(handle)
            for event in (head, *events):
                writer.write(event.SerializeToString())
        os.replace(tmp, folder / f"events.out.tfevents.{max(int(start), 0):010d}{SUFFIX}")
    finally:
        tmp.unlink(missing_ok=True)


def _seconds(timestamp: Any, fallback: float) -> float:
    """An ISO time (as the store writes them) in seconds since the epoch; `fallback` for a blank or bad one."""
    try:
        seconds = pd.Timestamp(timestamp).timestamp()
    except (TypeError, ValueError, OverflowError):
        return fallback
    return seconds if math.isfinite(seconds) else fallback
