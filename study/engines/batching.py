"""How many trials the population engine trains together: chosen by measuring on the machine at hand.

Per-trial cost falls with batch size while the batch's activations fit in cache and rises again when they spill
out of it; where that happens depends on the model, the data and the CPU (or GPU). So for each architecture the
sizer starts from the best size it measured before on this machine (kept in the compilation cache folder), or
from a small one, and while the study runs it doubles the size as long as the time per trial keeps falling by
more than the noise. Sizes are powers of two times the device count, so a study compiles only a few shapes, and
a last, partial batch is padded up to one of them instead of compiled again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from study.engines.networks import Architecture, Network


@dataclass(frozen=True)
class Device:
    """Where the search starts and how far it may go, per device: a CPU core wants a few trials whose activations
    fit its cache; a GPU wants thousands to fill it, within a share of its memory."""

    start: int = 8
    most: int = 256
    memory_bytes: int = 1 << 30  # a batch's arrays, all devices together: the process stays well under 4 GiB


CPU = Device()
GAIN = 0.95  # a larger size must cut the time per trial by 5% to count as better (run-to-run noise is ~2%)


@dataclass
class _Search:
    """What is known about one architecture: seconds per trial-epoch at each size measured, and whether the
    search is over."""

    measured: dict[int, float] = field(default_factory=dict)
    settled: bool = False

    @property
    def best(self) -> int:
        """The smallest size that no larger one beats by more than the noise (smaller pads less, uses less memory)."""
        best = min(self.measured)
        for size in sorted(self.measured):
            if self.measured[size] < self.measured[best] * GAIN:
                best = size
        return best


class BatchSizer:
    def __init__(
        self,
        fixed: int | None = None,
        multiple: int = 1,
        memory: Path | None = None,
        machine: str = "",
        device: Device = CPU,
    ):
        """`fixed`: always this many (--trials-per-batch); `multiple`: sizes are multiples of it (the device
        count); `memory`: a JSON file remembering the best size per architecture and `machine` between runs;
        `device`: the kind of device's starting size, largest size and memory budget."""
        self.fixed, self.multiple, self.memory, self.machine, self.device = fixed, multiple, memory, machine, device
        self.searches: dict[str, _Search] = {}

    # --- sizes ---------------------------------------------------------------------------------------

    def memory_cap(self, net: Network, n_train: int, n_test: int, batch_rows: int) -> int:
        """The most trials whose parameters, optimizer slots and live activations fit the memory budget."""
        per_trial = 4 * (6 * net.parameter_count() + max(batch_rows, n_train, n_test) * net.activation_units())
        return max(self.multiple, min(self.device.most * self.multiple, self.device.memory_bytes // per_trial))

    def largest(self, cap: int) -> int:
        """The largest batch this sizer may ask for."""
        return self.fixed or self._round_down(cap)

    def _round_down(self, n: int) -> int:
        size = self.multiple
        while size * 2 <= n:
            size *= 2
        return size

    def _fit(self, size: int, remaining: int) -> int:
        """The smallest candidate size (a power of two times the device count) holding `remaining`, at most `size`."""
        fit = self.multiple
        while fit < remaining and fit < size:
            fit *= 2
        return min(fit, size) if not self.fixed else min(fit, self.fixed)

    def next_size(self, arch: Architecture, remaining: int, cap: int) -> int:
        """The batch size for the next batch of `remaining` trials of `arch`."""
        if self.fixed:
            return self._fit(self.fixed, remaining) if remaining < self.fixed else self.fixed
        search = self._search(arch)
        largest = self._round_down(cap)
        if not search.measured:
            size = min(self._remembered(arch) or self.device.start * self.multiple, largest)
        elif search.settled:
            size = min(search.best, largest)
        else:
            size = min(search.best * 2, largest)
            if size == search.best or size in search.measured:
                search.settled = True
        if remaining < size:  # the study's last trials of this architecture: no exploring on a partial batch
            return self._fit(size, remaining)
        return size

    # --- measurements --------------------------------------------------------------------------------

    def record(self, arch: Architecture, size: int, seconds: float, epochs: int) -> None:
        """A batch of `size` trials (padding included) took `seconds` of running (compiling excluded)."""
        if self.fixed:
            return
        search = self._search(arch)
        per_trial = seconds / size / max(epochs, 1)
        if size < max(search.measured, default=0):  # a padded last batch: not part of the search
            return
        previous_best = search.measured[search.best] if search.measured else None
        search.measured[size] = min(per_trial, search.measured.get(size, per_trial))
        if previous_best and per_trial > previous_best * GAIN:
            search.settled = True  # doubling stopped paying
        self._remember(arch, search.best)

    def _search(self, arch: Architecture) -> _Search:
        return self.searches.setdefault(_signature(arch), _Search())

    def _key(self, arch: Architecture) -> str:
        return f"{self.machine}/{self.multiple} devices/{_signature(arch)}"

    def _remembered(self, arch: Architecture) -> int | None:
        if self.memory is None or not self.memory.exists():
            return None
        try:
            best = json.loads(self.memory.read_text()).get(self._key(arch))
        except (OSError, ValueError):
            return None
        return best if isinstance(best, int) and best > 0 and best % self.multiple == 0 else None

    def _remember(self, arch: Architecture, best: int) -> None:
        if self.memory is None:
            return
        try:
            known = json.loads(self.memory.read_text()) if self.memory.exists() else {}
            known[self._key(arch)] = best
            self.memory.write_text(json.dumps(known, indent=1, sort_keys=True))
        except (OSError, ValueError):
            pass  # a cache, not a record: losing it only costs a new search


def _signature(arch: Architecture) -> str:
    widths = "-".join(map(str, arch.hidden_units))
    conv = "c" + "-".join(map(str, arch.filters)) if arch.filters else ""
    return (
        f"{arch.family}{conv}-h{widths}-o{arch.n_outputs}-f{arch.n_features}-bn{int(arch.batch_norm)}"
        f"-{arch.activation}-n{arch.n_train}x{arch.n_test}"
    )
