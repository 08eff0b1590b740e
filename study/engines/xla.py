"""JAX set-up for the population engine: every CPU core an XLA device, and compiled programs cached on disk.

It must run before JAX starts its backends, so the engine modules import it first. On a machine with a GPU that
JAX finds (the `gpu` extra), the GPU is the device; the same code runs there.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import jax

from study.engines.batching import CPU, Device


def usable_cores() -> int:
    """The cores this process may run on (a container or `taskset` can allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cache_dir() -> Path:
    """Where compiled programs are kept between runs ($DROPOUT_STUDY_CACHE, else the user's cache folder)."""
    root = os.environ.get("DROPOUT_STUDY_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(root) / "dropout-study" / "xla"


def _configure() -> None:
    with contextlib.suppress(RuntimeError):  # JAX already started by the embedding program: keep its devices
        jax.config.update("jax_num_cpu_devices", usable_cores())
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
    except OSError:  # no writable cache: compile every run
        return
    jax.config.update("jax_compilation_cache_dir", str(cache_dir()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


_configure()


def devices() -> list:
    """The devices a batch is split over: the GPUs JAX found, else every CPU core."""
    return jax.devices()


def batch_limits() -> Device:
    """Batch sizes for this machine's devices: the CPU defaults, or on a GPU thousands of trials within a quarter of
    its memory."""
    first = devices()[0]
    if first.platform == "cpu":
        return CPU
    stats = first.memory_stats() or {}
    return Device(start=256, most=8192, memory_bytes=int(stats.get("bytes_limit", 16 << 30)) // 4)


def describe() -> str:
    found = devices()
    return f"{found[0].platform} x{len(found)}" if found else "none"
