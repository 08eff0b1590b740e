"""What machine a figure was measured on: CPU model, its vector extensions, cores, and TensorFlow's kernel path.

Speed depends on all of them (TensorFlow turns its oneDNN kernels on only on some CPUs), so every benchmark
prints this line and every published figure names it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# The x86 extensions that decide which kernels run, in the order a reader compares them.
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields from /proc/cpuinfo (empty where there is none: macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_model() -> str:
    info = _cpuinfo()
    return info.get("model name") or platform.processor() or platform.machine()


def vector_extensions() -> list[str]:
    """The CPU's vector extensions among `VECTOR_FLAGS` (ARM's NEON/SVE etc. from the 'Features' line)."""
    info = _cpuinfo()
    flags = set((info.get("flags") or "").split())
    if flags:
        return [f for f in VECTOR_FLAGS if f in flags]
    return (info.get("Features") or "").split()


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN kernels in this process (None if TensorFlow cannot say)."""
    try:
        import study.quiet_tf  # noqa: F401  (TensorFlow without its start-up chatter)
    except ImportError:
        return None
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def describe(with_tensorflow: bool = True) -> str:
    """One line naming the machine, e.g. 'AMD EPYC (avx avx2 fma avx512f), 2 cores, Linux x86_64; TF oneDNN on'."""
    extensions = " ".join(vector_extensions()) or "no vector extensions listed"
    line = f"{cpu_model()} ({extensions}), {os.cpu_count()} cores, {platform.system()} {platform.machine()}"
    if with_tensorflow:
        state = onednn_enabled()
        line += "; TensorFlow oneDNN " + {True: "on", False: "off", None: "unknown"}[state]
    return line
