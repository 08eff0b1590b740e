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

from study.errors import StudyError, shown
from study.schema import COMPLETED, CURVE_COLUMNS, TRIAL_COLUMNS, TrialResult, machine, versions
from study.space import SearchSpace

MANIFEST = "manifest.json"
# Columns that hold numbers: a value that is not one means the file was damaged.
NUMERIC_COLUMNS = frozenset({
    "seed", "n_train", "n_validation", "n_test", "n_features", "n_classes", "epochs", "epochs_run", "batch_size",
    "learning_rate", "train_accuracy", "train_loss", "validation_accuracy", "validation_loss", "test_accuracy",
    "test_loss", "best_test_accuracy", "best_epoch", "wall_time_s",
})  # fmt: skip
TRIALS = "trials.csv"


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
        self._rows: pd.DataFrame | None = None
        self._seq = 0

    # --- starting and finishing a run --------------------------------------------------------------

    def begin(self, space: SearchSpace, engine: str, space_file: str = "", engine_version: str = "") -> None:
        """Open the folder for a run of `space`: create it, or check it holds the same study. The manifest records
        every run's engine and its version, so a study resumed on another engine says so."""
        manifest = self.check(space) if (self.folder / MANIFEST).exists() else None
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
                "n_trials": space.n_trials,
                "space": space.model_dump(mode="json"),
                "created_at": _now(),
                "runs": [],
            }
        manifest["runs"].append(
            {
                "engine": engine,
                "engine_version": engine_version,
                "started_at": _now(),
                "finished_at": None,
                "machine": machine(),
                **versions(),
            }
        )
        self._write_manifest(manifest)

    def check(self, space: SearchSpace) -> dict[str, Any]:
        """The manifest, after checking that the folder holds results of this very search space."""
        manifest = self.manifest()
        if manifest.get("fingerprint") != space.fingerprint():
            raise StudyError(
                f"{self.folder} holds results of a different search space (its manifest was written for "
                f"{manifest.get('space_file') or 'another file'}). Changing the grid, data, model or training "
                f"would mix incomparable trials. Give the study a new `name:` in the YAML, pass another "
                f"--results-dir, or delete {self.folder} to start over."
            )
        return manifest

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
