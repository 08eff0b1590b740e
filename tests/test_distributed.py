"""Distributed mode on loopback: a chief and workers as real processes, killed and restarted mid-study."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PYTHON, ROOT, tiny_space_dict

pytestmark = pytest.mark.slow

METRICS = ["train_accuracy", "train_loss", "test_accuracy", "test_loss", "best_test_accuracy"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_space(tmp_path: Path, name: str = "dist", file: str = "space.yaml", **overrides) -> Path:
    settings = {"name": name, "axes": {"dropout_rate": [0.0, 0.5], "l2": [0.0, 0.01]}, "seeds": 4, **overrides}
    space = tiny_space_dict(**settings)
    path = tmp_path / file
    path.write_text(yaml.safe_dump(space))
    return path


def study(space: Path, results: Path, *args: str, **popen) -> subprocess.Popen:
    command = [PYTHON, "-m", "study", "search", str(space), "--results-dir", str(results), "--quiet", *args]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def wait_for_batches(folder: Path, n: int, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while len(list((folder / "batches").glob("*.csv"))) < n:
        assert time.monotonic() < end, "no batch committed in time"
        time.sleep(0.2)


def table(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "trials.csv").sort_values("trial_key").reset_index(drop=True)


def assert_every_trial_exactly_once(folder: Path, n: int) -> None:
    trials = table(folder)
    assert len(trials) == n and trials["trial_key"].is_unique and (trials["status"] == "completed").all()
    curves = pd.read_parquet(folder / "curves")
    assert set(curves["trial_key"]) == set(trials["trial_key"])


def test_a_chief_and_two_workers_produce_the_single_process_table(tmp_path) -> None:
    space = write_space(tmp_path)
    code, log = finish(study(space, tmp_path / "single"))
    assert code == 0, log
    port = str(free_port())
    code, log = finish(study(space, tmp_path / "dist", "--chief", "--port", port, "--local-workers", "2",
                             "--trials-per-batch", "3"))  # fmt: skip
    assert code == 0, log
    single, dist = table(tmp_path / "single" / "dist"), table(tmp_path / "dist" / "dist")
    assert list(single["trial_key"]) == list(dist["trial_key"]) and len(dist) == 16
    assert (single["epochs_run"] == dist["epochs_run"]).all()
    np.testing.assert_allclose(dist[METRICS], single[METRICS], rtol=1e-5, atol=1e-6)


def test_a_worker_killed_mid_batch_loses_nothing(tmp_path) -> None:
    space, results, port = write_space(tmp_path, seeds=2), tmp_path / "r", str(free_port())
    chief = study(space, results, "--chief", "--port", port, "--lease", "3")
    workers = [
        study(space, results, "--worker", "--oracle", f"127.0.0.1:{port}", "--engine", "keras") for _ in range(2)
    ]
    wait_for_batches(results / "dist", 2)
    workers[0].send_signal(signal.SIGKILL)
    code, log = finish(workers[1])
    assert code == 0, log
    code, log = finish(chief)
    assert code == 0, log
    assert_every_trial_exactly_once(results / "dist", 8)


def test_a_chief_killed_and_restarted_resumes(tmp_path) -> None:
    space, results, port = write_space(tmp_path, seeds=2), tmp_path / "r", str(free_port())
    chief_args = ("--chief", "--port", port, "--lease", "3")
    chief = study(space, results, *chief_args)
    workers = [
        study(space, results, "--worker", "--oracle", f"127.0.0.1:{port}", "--engine", "keras", "--patience", "60")
        for _ in range(2)
    ]
    wait_for_batches(results / "dist", 2)
    chief.send_signal(signal.SIGKILL)
    chief.communicate()
    time.sleep(1)
    code, log = finish(study(space, results, *chief_args))
    assert code == 0, log
    for worker in workers:
        code, log = finish(worker)
        assert code == 0, log
    assert_every_trial_exactly_once(results / "dist", 8)


def test_a_worker_of_another_study_is_refused(tmp_path) -> None:
    results, port = tmp_path / "r", str(free_port())
    chief = study(write_space(tmp_path), results, "--chief", "--port", port)
    other = write_space(tmp_path, file="other.yaml", training={"epochs": 6, "batch_size": 32})  # same name
    try:
        code, log = finish(study(other, results, "--worker", "--oracle", f"127.0.0.1:{port}", "--patience", "60"))
    finally:
        chief.kill()
    assert code == 2 and "serves a different study" in log and "Traceback" not in log


def test_an_unreachable_chief_is_a_clear_error_after_retrying(tmp_path) -> None:
    start = time.monotonic()
    proc = study(write_space(tmp_path), tmp_path / "r", "--worker", "--oracle", f"127.0.0.1:{free_port()}",
                 "--patience", "3")  # fmt: skip
    code, log = finish(proc)
    assert code == 2 and "cannot reach the chief at 127.0.0.1:" in log and "Traceback" not in log
    assert time.monotonic() - start >= 3  # it retried before giving up


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--worker", "--oracle", "nohostport"), "--oracle 'nohostport' is not HOST:PORT"),
        (("--chief", "--max-trials", "3"), "--max-trials applies to a single-process search"),
    ],
)
def test_bad_distributed_options_are_clear_errors(tmp_path, args, message) -> None:
    code, log = finish(study(write_space(tmp_path), tmp_path / "r", *args))
    assert code == 2 and message in log and "Traceback" not in log


def test_a_bad_port_in_keras_tuners_environment_variable_is_a_clear_error(tmp_path) -> None:
    proc = study(write_space(tmp_path), tmp_path / "r", "--chief", "--dry-run",
                 env={**os.environ, "KERASTUNER_ORACLE_PORT": "abc"})  # fmt: skip
    code, log = finish(proc)
    assert code == 2 and "KERASTUNER_ORACLE_PORT 'abc' is not a port number" in log and "Traceback" not in log
