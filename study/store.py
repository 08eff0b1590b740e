"""The results store: a study's folder, written so that a kill at any moment loses only trials in flight.

    results/<study>/
      manifest.json   the search space as run, its fingerprint, versions, machine, start/end of every run
      batches/        the record: one CSV per committed batch of finished trials (never edited)
      curves/         per-epoch curves, long format, one Parquet file per committed batch
      trials.csv      the tidy table, one row per trial, rebuilt from batches/ after every commit

Every file is written to a temporary name and renamed into place, so a reader never sees half a file and
concurrent writers (several workers on one shared folder) never interleave. A batch is committed when its
batches/ file appears; curves are written first, so a committed trial always has its curves, and curves of
a batch killed before its commit are ignored. If the same trial is committed twice (a worker that came back
late), the first completed row wins. The store knows nothing about engines.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from study import calibration
from study.axes import TRAINING_AXES
from study.errors import StudyError, shown
from study.schema import (
    CALIBRATION_COLUMNS,
    COMPLETED,
    CURVE_COLUMNS,
    TRIAL_COLUMNS,
    TrialResult,
    machine,
    versions,
)
from study.space import SearchSpace

MANIFEST = "manifest.json"
# Columns that hold numbers: a value that is not one means the file was damaged.
NUMERIC_COLUMNS = frozenset({
    "seed", "n_train", "n_validation", "n_test", "n_features", "n_classes", "epochs", "epochs_run", "batch_size",
    "learning_rate", "train_accuracy", "train_loss", "validation_accuracy", "validation_loss", "test_accuracy",
    "test_loss", "best_test_accuracy", "best_epoch", "wall_time_s",
    *(f"{part}_{m}" for part in ("train", "validation", "test") for m in ("rmse", "mae", "r2")),
    *calibration.columns(),
})  # fmt: skip
TRIALS = "trials.csv"
SAME_TRIALS = "no trials added"  # what `growth` says of a changed space with the same trials (reordered, say)


def study_folder(results_root: str | Path, space: SearchSpace) -> Path:
    """Where a study's results live: <results root>/<study name>."""
    return Path(results_root) / space.name


def write_atomically(path: Path, write: Any) -> None:
    """Call `write(tmp_path)`, flush it to disk, then rename it over `path` in one step."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class ResultsStore:
    """Reads and writes one study's results folder."""

    def __init__(self, folder: str | Path, rebuild_table: bool = True):
        """`rebuild_table=False` for a worker sharing the folder: it writes only its batches and curves, and the
        process that owns the run (the chief) rebuilds trials.csv."""
        self.folder = Path(folder)
        self.rebuild_table = rebuild_table
        self.batches = self.folder / "batches"
        self.curves_dir = self.folder / "curves"
        self.calibration_dir = self.folder / "calibration"
        self._rows: pd.DataFrame | None = None
        self._seq = 0

    # --- starting and finishing a run --------------------------------------------------------------

    def begin(self, space: SearchSpace, engine: str, space_file: str = "", engine_version: str = "") -> None:
        """Open the folder for a run of `space`: create it, or check it holds the same study. The manifest records
        every run's engine and its version, so a study resumed on another engine says so."""
        manifest = self.manifest() if (self.folder / MANIFEST).exists() else None
        added = None if manifest is None else self.growth(space, manifest)
        for folder in (self.folder, self.batches, self.curves_dir):
            if folder.exists() and not folder.is_dir():
                raise StudyError(f"{folder} is a file where the study keeps a folder: move it away, or pass another "
                                 "--results-dir")  # fmt: skip
        try:
            self.batches.mkdir(parents=True, exist_ok=True)
            self.curves_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudyError(
                f"cannot create {self.folder}: {exc.strerror or exc}; pass another --results-dir"
            ) from None
        if manifest is None:
            manifest = {
                "study": space.name,
                "description": space.description,
                "space_file": space_file,
                "fingerprint": space.fingerprint(),
                "trial_fingerprint": space.trial_fingerprint(),
                "n_trials": space.n_trials,
                "space": space.model_dump(mode="json"),
                "created_at": _now(),
                "runs": [],
            }
        manifest.setdefault("trial_fingerprint", space.trial_fingerprint())  # a manifest written before it existed
        run: dict[str, Any] = {}
        if added is not None:  # the study grows: it is now the study of this space, and the run says from what
            run = {"grown_from": manifest["fingerprint"], "added": added}
            manifest.update(
                description=space.description,
                space_file=space_file or manifest.get("space_file", ""),
                fingerprint=space.fingerprint(),
                trial_fingerprint=space.trial_fingerprint(),
                n_trials=space.n_trials,
                space=space.model_dump(mode="json"),
            )
        manifest["runs"].append(
            {
                "engine": engine,
                "engine_version": engine_version,
                "started_at": _now(),
                "finished_at": None,
                "machine": machine(),
                **versions(),
                **run,
            }
        )
        self._write_manifest(manifest)

    def check(self, space: SearchSpace) -> dict[str, Any]:
        """The manifest, after checking that the folder holds results of this search space or of one it grows."""
        manifest = self.manifest()
        self.growth(space, manifest)
        return manifest

    def growth(self, space: SearchSpace, manifest: dict[str, Any] | None = None) -> str | None:
        """None when the folder holds results of this very search space; else what `space` adds to the study there,
        e.g. "seeds 3 -> 5, dropout_rate +[0.7]" (SAME_TRIALS when only an order or the nuisance axes changed).

        A study may gain seeds and axis values: every finished trial keeps its key and its meaning. A change of what
        a trial means (data, model, training, which training settings are swept) or a seed or value removed (its
        trials would silently leave the study) is refused, naming what changed."""
        manifest = self.manifest() if manifest is None else manifest
        if manifest["fingerprint"] == space.fingerprint():
            return None
        start_over = (
            f"give the study a new `name:` in the YAML, pass another --results-dir, or delete {self.folder} to "
            "start over"
        )
        start_over_sentence = start_over[0].upper() + start_over[1:]
        try:
            old = SearchSpace.model_validate(manifest.get("space"))
            # A manifest written before trial fingerprints existed: its space gives it.
            old_trials = manifest.get("trial_fingerprint") or old.trial_fingerprint()
        except (ValueError, TypeError):  # a manifest of another version, or damaged: nothing to compare with
            raise StudyError(
                f"{self.folder} holds results of a different search space (its manifest was written for "
                f"{manifest.get('space_file') or 'another file'}). Changing the grid, data, model or training "
                f"would mix incomparable trials. {start_over_sentence}."
            ) from None
        if old_trials != space.trial_fingerprint():
            raise StudyError(
                f"{self.folder} holds results of a different search space ({_changes(old, space)}): that changes "
                f"what every finished trial means, and a study may only gain seeds and axis values. "
                f"{start_over_sentence}."
            )
        removed, added = _grid_changes(old, space)
        if removed:
            raise StudyError(
                f"{self.folder} holds trials this search space leaves out ({', '.join(removed)}): their results "
                f"would silently leave the study, which may only gain seeds and axis values. Put them back, or "
                f"{start_over}."
            )
        return ", ".join(added) or SAME_TRIALS

    def finish(self, trials_run: int, failed: int) -> None:
        """Record the end of the run in the manifest and leave trials.csv complete."""
        self.refresh()  # other workers may have committed to the same folder
        manifest = self.manifest()
        manifest["runs"][-1].update(finished_at=_now(), trials_run=trials_run, failed=failed)
        manifest["completed_trials"] = len(self.completed_keys())
        self._write_manifest(manifest)
        self._write_trials_csv()

    # --- writing -----------------------------------------------------------------------------------

    def commit(self, results: list[TrialResult]) -> None:
        """Durably record a batch of finished trials (completed or failed) as one unit."""
        if not results:
            return
        self._seq += 1
        batch_id = f"{pd.Timestamp.now(tz='UTC'):%Y%m%dT%H%M%S%f}-{socket.gethostname()}-{os.getpid()}-{self._seq}"
        curves = [r.curves for r in results if r.ok and len(r.curves)]
        if curves:
            frame = pd.concat(curves, ignore_index=True)[list(CURVE_COLUMNS)]
            write_atomically(self.curves_dir / f"{batch_id}.parquet", lambda p: frame.to_parquet(p, index=False))
        bins = [r.calibration for r in results if r.ok and len(r.calibration)]
        if bins:
            self.calibration_dir.mkdir(exist_ok=True)
            table = pd.concat(bins, ignore_index=True)[list(CALIBRATION_COLUMNS)]
            write_atomically(self.calibration_dir / f"{batch_id}.parquet", lambda p: table.to_parquet(p, index=False))
        rows = pd.DataFrame([r.row for r in results], columns=list(TRIAL_COLUMNS))
        write_atomically(self.batches / f"{batch_id}.csv", lambda p: rows.to_csv(p, index=False))
        self._rows = None if self._rows is None else pd.concat([self._rows, rows], ignore_index=True)
        if self.rebuild_table:
            self._write_trials_csv()

    # --- reading -----------------------------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        path = self.folder / MANIFEST
        fix = f"restore it, or delete {self.folder} and run the study again"
        if not self.folder.is_dir():
            raise StudyError(f"{self.folder} is not a study's results folder (not a folder): name one under results/")
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError:
            raise StudyError(
                f"{self.folder} is not a study's results folder (no {MANIFEST}): run `make search` first"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StudyError(f"{path} is corrupt ({exc}): {fix}") from None
        except OSError as exc:
            raise StudyError(f"cannot read {path} ({exc.strerror or exc}): {fix}") from None
        if not isinstance(manifest, dict):
            raise StudyError(f"{path} is corrupt (not a JSON object): {fix}")
        expected = {"study": str, "fingerprint": str, "runs": list}
        wrong = [key for key, kind in expected.items() if not isinstance(manifest.get(key), kind)]
        if wrong:
            raise StudyError(f"{path} is corrupt (no valid {wrong[0]!r}): {fix}")
        return manifest

    def trials(self, include_failed: bool = True) -> pd.DataFrame:
        """The tidy trials table, one row per trial key, in commit order."""
        rows = self._all_rows()
        if rows.empty:
            return rows
        completed_first = rows.assign(_rank=(rows["status"] != COMPLETED).astype(int)).sort_values(
            "_rank", kind="stable"
        )
        # A completed row beats a failed one; among completed rows the first committed wins;
        # among failed ones (the trial never completed) the latest error is the one to show.
        completed = completed_first[completed_first["status"] == COMPLETED].drop_duplicates("trial_key")
        failed = rows[(rows["status"] != COMPLETED) & ~rows["trial_key"].isin(completed["trial_key"])]
        failed = failed.drop_duplicates("trial_key", keep="last")
        table = pd.concat([completed.drop(columns="_rank"), failed]) if include_failed else completed
        return table.sort_index().reset_index(drop=True)[list(TRIAL_COLUMNS)]

    def refresh(self) -> None:
        """Forget what was read: the next read sees batches other processes committed since."""
        self._rows = None

    def failed_keys(self) -> set[str]:
        """Trials whose only records are failures."""
        table = self.trials()
        return set(table.loc[table["status"] != COMPLETED, "trial_key"]) if not table.empty else set()

    def completed_keys(self) -> set[str]:
        rows = self._all_rows()
        return set(rows.loc[rows["status"] == COMPLETED, "trial_key"]) if not rows.empty else set()

    def curves(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """Per-epoch curves of committed, completed trials (all of them, or those in `keys`)."""
        wanted = set(self.completed_keys() if keys is None else keys) & self.completed_keys()
        frames = []
        for path in sorted(self.curves_dir.glob("*.parquet")):
            try:
                frame = pd.read_parquet(path, filters=[("trial_key", "in", sorted(wanted))] if wanted else None)
            except Exception as exc:
                raise StudyError(
                    f"{path} is corrupt ({type(exc).__name__}: {exc}): delete it and the CSV of the same name "
                    f"in {self.batches}, then rerun the search to redo those trials"
                ) from None
            frames.append(frame[frame["trial_key"].isin(wanted)])
        if not frames:
            return pd.DataFrame(columns=list(CURVE_COLUMNS))
        curves = pd.concat(frames, ignore_index=True).drop_duplicates(["trial_key", "epoch"])
        curves = curves.reindex(columns=list(CURVE_COLUMNS))  # curves written before a column existed: blank
        return curves.sort_values(["trial_key", "epoch"], kind="stable").reset_index(drop=True)

    def calibration(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """Reliability bins of committed, completed trials (all, or those in `keys`); empty when none recorded."""
        wanted = set(self.completed_keys() if keys is None else keys) & self.completed_keys()
        frames = []
        for path in sorted(self.calibration_dir.glob("*.parquet")) if self.calibration_dir.is_dir() else []:
            try:
                frame = pd.read_parquet(path)
            except Exception as exc:
                raise StudyError(f"{path} is corrupt ({type(exc).__name__}: {exc}): delete it (the report then "
                                 "draws no reliability diagram for its trials)") from None  # fmt: skip
            frames.append(frame[frame["trial_key"].isin(wanted)])
        if not frames:
            return pd.DataFrame(columns=list(CALIBRATION_COLUMNS))
        return pd.concat(frames, ignore_index=True).drop_duplicates(["trial_key", "split", "kind", "bin"])

    # --- internals ---------------------------------------------------------------------------------

    def _all_rows(self) -> pd.DataFrame:
        if self._rows is None:
            frames = [self._read_batch(p) for p in sorted(self.batches.glob("*.csv"))]
            frames = [f for f in frames if not f.empty]
            self._rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(TRIAL_COLUMNS))
        return self._rows

    def _read_batch(self, path: Path) -> pd.DataFrame:
        fix = "delete it and rerun the search to redo its trials"
        try:
            frame = pd.read_csv(path, keep_default_na=True, dtype={"hidden_units": str, "error": str})
        except Exception as exc:
            raise StudyError(f"{path} is corrupt ({type(exc).__name__}: {exc}): {fix}") from None
        missing = [c for c in ("trial_key", "status", "seed") if c not in frame.columns]
        if missing:
            raise StudyError(f"{path} is corrupt (no column {missing[0]!r}): {fix}")
        for column in NUMERIC_COLUMNS.intersection(frame.columns):
            values = pd.to_numeric(frame[column], errors="coerce")
            bad = frame[column].notna() & values.isna()
            if bad.any():
                raise StudyError(
                    f"{path} is corrupt (column {column!r} holds {shown(frame[column][bad].iloc[0])}): {fix}"
                )
            frame[column] = values
        return frame.reindex(columns=list(TRIAL_COLUMNS))

    def _write_trials_csv(self) -> None:
        table = self.trials()
        write_atomically(self.folder / TRIALS, lambda p: table.to_csv(p, index=False))

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest, indent=2, sort_keys=False)
        write_atomically(self.folder / MANIFEST, lambda p: p.write_text(text))


def _now() -> str:
    return pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")


def _changes(old: SearchSpace, new: SearchSpace) -> str:
    """What changes the meaning of trials from `old` to `new`, e.g. "training.epochs 5 -> 50, axes.epochs now
    swept" (their sections as written: a data file's digest is not in the manifest, and `old`'s file may be gone)."""
    sections = {"dataset", "model", "training"}
    changes = _differences(old.model_dump(mode="json", include=sections), new.model_dump(mode="json", include=sections))
    was, now = ([a for a in TRAINING_AXES if a in space.keyed_axes] for space in (old, new))
    changes += [f"axes.{axis} now swept" for axis in now if axis not in was]
    changes += [f"axes.{axis} no longer swept" for axis in was if axis not in now]
    if not changes:
        return "a data file's or model.build module's content, or another setting the search-space file does not show"
    more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
    return ", ".join(changes[:3]) + more


_UNSET = object()


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Each setting (as a dotted path) that two JSON-able definitions differ in, with its old and new value."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = [*old, *(key for key in new if key not in old)]
        return [
            change
            for key in keys
            for change in _differences(old.get(key, _UNSET), new.get(key, _UNSET), f"{path}.{key}" if path else key)
        ]
    before, after = ("unset" if v is _UNSET else _cut(json.dumps(v)) for v in (old, new))
    return [] if before == after else [f"{path} {before} -> {after}"]


def _grid_changes(old: SearchSpace, new: SearchSpace) -> tuple[list[str], list[str]]:
    """The seeds and axis values `new` removes from the grid of `old`, and those it adds, as short phrases."""
    removed, added = [], []
    gone = [seed for seed in old.seeds if seed not in set(new.seeds)]
    if gone:
        removed.append(f"seeds -{_listed(gone)}")
    if set(new.seeds) - set(old.seeds):
        added.append(f"seeds {len(old.seeds)} -> {len(new.seeds)}")
    old_values, new_values = old.axis_values(), new.axis_values()
    for axis, values in new_values.items():
        # Values are told apart as the config key tells them (0 and 0.0 are two settings to it).
        before = {json.dumps(v): v for v in old_values[axis]}
        after = {json.dumps(v): v for v in values}
        if gone := [v for key, v in before.items() if key not in after]:
            removed.append(f"{axis} -{_listed(gone)}")
        if plus := [v for key, v in after.items() if key not in before]:
            added.append(f"{axis} +{_listed(plus)}")
    return removed, added


def _cut(text: str, most: int = 50) -> str:
    return text if len(text) <= most else text[: most - 3] + "..."


def _listed(values: list[Any], most: int = 5) -> str:
    """Values as a message lists them: [0.7, none, 8-8], the first few of a long list."""
    shown_values = ["none" if v is None else "-".join(map(str, v)) if isinstance(v, tuple) else json.dumps(v)
                    for v in values[:most]]  # fmt: skip
    more = f", ... ({len(values)} in all)" if len(values) > most else ""
    return f"[{', '.join(shown_values)}{more}]"
