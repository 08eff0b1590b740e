"""Scale out with keras-tuner's distributed mode: a chief serves the GridOracle over gRPC, workers ask it for trials.

The protocol, the servicer and the environment variables (KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP,
KERASTUNER_ORACLE_PORT) are keras-tuner's own; what is ours is that a worker asks for a whole batch (the population
engine trains many trials at once), that every call retries with back-off and ends with a clear message, and that
the results store, not the Oracle, is the record: workers commit finished batches straight to the shared results
folder (atomic, duplicates discarded) and only then tell the chief. So a worker killed mid-batch loses only its
lease (its trials are handed out again when the lease expires), and a chief killed and restarted rebuilds its state
from the store. The gRPC channel is unauthenticated and unencrypted: keep it inside a trusted network.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from keras_tuner.src import protos
from keras_tuner.src.distribute.oracle_chief import OracleServicer
from keras_tuner.src.engine import hyperparameters as hp_module
from keras_tuner.src.engine import trial as trial_module
from tqdm import tqdm

from study.engines.base import Engine
from study.errors import StudyError, shown
from study.oracle import FINGERPRINT_HP, RUNNING, STOPPED, GridOracle, trial_from_values
from study.search import SearchSummary, run_batch
from study.space import SearchSpace
from study.store import MANIFEST, ResultsStore, study_folder

DEFAULT_PORT = 8000
DEFAULT_LEASE_S = 1800.0
DEFAULT_PATIENCE_S = 120.0
CALL_TIMEOUT_S = 10.0
IDLE_POLL_S = 1.0


def port_number(text: str, source: str) -> int:
    """A TCP port (1-65535) given as text by `source` (an option or an environment variable)."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise StudyError(f"{source} {shown(text)} is not a port number: use a whole number from 1 to 65535")
    return int(text)


def oracle_address(given: str | None) -> str:
    """HOST:PORT of the chief, from --oracle or keras-tuner's KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT."""
    if given:
        host, _, port = given.rpartition(":")
        if not host or not port.isdigit():
            raise StudyError(f"--oracle {shown(given)} is not HOST:PORT (e.g. 10.0.0.5:{DEFAULT_PORT})")
        port_number(port, "--oracle's port")
        return given
    ip, port = os.environ.get("KERASTUNER_ORACLE_IP"), os.environ.get("KERASTUNER_ORACLE_PORT")
    if not ip or not port:
        raise StudyError(
            "a worker needs the chief's address: pass --oracle HOST:PORT or set KERASTUNER_ORACLE_IP and "
            "KERASTUNER_ORACLE_PORT"
        )
    return f"{ip}:{port_number(port, 'KERASTUNER_ORACLE_PORT')}"


def tuner_id() -> str:
    """This worker's name for the chief: KERASTUNER_TUNER_ID, or host and process id."""
    return os.environ.get("KERASTUNER_TUNER_ID") or f"{socket.gethostname()}-{os.getpid()}"


class RemoteOracle:
    """A worker's handle on the chief's GridOracle over keras-tuner's gRPC service, with retries and back-off."""

    def __init__(self, address: str, space: SearchSpace, patience_s: float = DEFAULT_PATIENCE_S):
        self.address = address
        self.space = space
        self.patience_s = patience_s
        self.stub = protos.get_service_grpc().OracleStub(grpc.insecure_channel(address))
        self.service = protos.get_service()
        self.stopped = False
        hps = hp_module.HyperParameters.from_proto(
            self._call("GetSpace", self.service.GetSpaceRequest()).hyperparameters
        )
        theirs = hps.values.get(FINGERPRINT_HP)
        if theirs != space.fingerprint():
            raise StudyError(
                f"the chief at {address} serves a different study (fingerprint {theirs}, this worker's "
                f"{space.name!r} is {space.fingerprint()}): start the worker with the chief's search-space file"
            )

    def _call(self, method: str, request):
        """One RPC, retried with exponential back-off while the chief is unreachable, for at most `patience_s`."""
        deadline = time.monotonic() + self.patience_s
        wait = 0.5
        while True:
            try:
                return getattr(self.stub, method)(request, timeout=CALL_TIMEOUT_S)
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise StudyError(f"the chief at {self.address} refused {method}: {exc.details()}") from None
                if time.monotonic() + wait > deadline:
                    raise StudyError(
                        f"cannot reach the chief at {self.address} (tried for {self.patience_s:.0f} s: "
                        f"{exc.details()}). Start it with `python -m study search SPACE --chief`, check the "
                        "address and port, or wait longer with --patience SECONDS"
                    ) from None
                time.sleep(wait)
                wait = min(wait * 2, 10.0)

    def create_trials(self, worker: str, n: int) -> list:
        """Up to `n` trials; none when every trial is in flight elsewhere (ask again) or the study is done
        (`stopped` is then set)."""
        handed = []
        for _ in range(n):
            response = self._call("CreateTrial", self.service.CreateTrialRequest(tuner_id=worker))
            kt_trial = trial_module.Trial.from_proto(response.trial)
            if kt_trial.status != RUNNING:
                self.stopped = kt_trial.status == STOPPED
                break
            handed.append((kt_trial, trial_from_values(self.space, kt_trial.hyperparameters.values)))
        return handed

    def end_trial(self, kt_trial) -> None:
        self._call("EndTrial", self.service.EndTrialRequest(trial=kt_trial.to_proto()))


def run_worker(
    space: SearchSpace,
    engine: Engine,
    results_root: str | Path,
    address: str,
    patience_s: float = DEFAULT_PATIENCE_S,
) -> SearchSummary:
    """Ask the chief for batches, run them, commit them to the shared results folder, report them; until done."""
    oracle = RemoteOracle(address, space, patience_s)
    store = ResultsStore(study_folder(results_root, space), rebuild_table=False)
    if not (store.folder / MANIFEST).exists():
        raise StudyError(
            f"{store.folder} does not exist here: a worker writes into the chief's results folder, so it must see "
            "the same folder (a shared filesystem) and be given the same --results-dir"
        )
    store.check(space)
    summary = SearchSummary(store.folder, space.n_trials, 0)
    start, worker = time.perf_counter(), tuner_id()
    while not oracle.stopped:
        try:
            handed = oracle.create_trials(worker, engine.batch_size(space))
            if not handed:
                time.sleep(0 if oracle.stopped else IDLE_POLL_S)  # the last trials are in flight on other workers
                continue
            run_batch(handed, engine, store, oracle, summary)  # commits before it reports to the chief
        except StudyError:
            store.refresh()
            if store.completed_keys() >= {t.key for t in space.trials()}:
                break  # the chief finished and left while this worker waited for, or ran, the last trials
            raise
    summary.wall_time_s = time.perf_counter() - start
    return summary


@dataclass
class ChiefSettings:
    bind: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    lease_s: float = DEFAULT_LEASE_S
    local_workers: int = 0
    worker_args: tuple[str, ...] = ()  # search arguments passed on to local workers (space file, engine, ...)


def run_chief(
    space: SearchSpace,
    engine_name: str,
    results_root: str | Path,
    settings: ChiefSettings,
    space_file: str = "",
    progress: bool = True,
    engine_version: str = "",
) -> SearchSummary:
    """Serve the study's Oracle until every trial is finished; optionally start local workers on loopback."""
    store = ResultsStore(study_folder(results_root, space))
    store.begin(space, f"{engine_name} (distributed)", space_file, engine_version=engine_version)
    done = store.completed_keys() & {t.key for t in space.trials()}
    oracle = GridOracle(space, done=done, lease_seconds=settings.lease_s)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    protos.get_service_grpc().add_OracleServicer_to_server(OracleServicer(oracle), server)
    if server.add_insecure_port(f"{settings.bind}:{settings.port}") == 0:
        raise StudyError(f"cannot listen on {settings.bind}:{settings.port} (in use?): choose another --port")
    server.start()
    summary = SearchSummary(store.folder, space.n_trials, len(done))
    start = time.perf_counter()
    workers = [_start_worker(settings, i) for i in range(settings.local_workers)]
    bar = tqdm(total=space.n_trials, initial=len(done), unit="trial", desc=space.name, disable=not progress)
    try:
        while True:
            if len(oracle.finished) > bar.n - len(done):
                bar.update(len(oracle.finished) - (bar.n - len(done)))
            if oracle.complete:
                break
            time.sleep(0.5)
            if workers and all(w.poll() is not None for w in workers):
                raise StudyError(
                    "every local worker exited before the study was complete (see their messages above); "
                    "rerun the same command to resume"
                )
        for w in workers:  # they are told STOPPED on their next request
            w.wait(timeout=60)
        time.sleep(2 if not workers else 0)  # let remote workers hear STOPPED before the server goes
    finally:
        bar.close()
        for w in workers:
            if w.poll() is None:
                w.terminate()
        server.stop(grace=1)
        store.refresh()
        table = store.trials()
        failed = table[table["trial_key"].isin(store.failed_keys() & oracle.finished)]
        summary.failed = list(zip(failed["trial_key"], failed["error"].astype(str), strict=True))
        summary.run = len(oracle.finished)
        summary.wall_time_s = time.perf_counter() - start
        store.finish(trials_run=summary.run, failed=len(summary.failed))
    return summary


def _start_worker(settings: ChiefSettings, index: int) -> subprocess.Popen:
    env = {**os.environ, "KERASTUNER_TUNER_ID": f"local-{index}"}
    command = [
        sys.executable,
        "-m",
        "study",
        "search",
        *settings.worker_args,
        "--worker",
        "--oracle",
        f"127.0.0.1:{settings.port}",
        "--quiet",
    ]
    return subprocess.Popen(command, env=env)
