"""The batch sizer: how many trials train together is chosen from measured times, never a constant."""

from __future__ import annotations

from study.engines.batching import CPU, BatchSizer
from study.engines.networks import Architecture

ARCH = Architecture("mlp", 2, (500,), 1, False, "relu", 30, 70)
OTHER = Architecture("mlp", 2, (64,), 1, False, "relu", 30, 70)
CAP = 10_000


def _run(sizer: BatchSizer, seconds_per_trial: dict[int, float], batches: int, arch=ARCH) -> list[int]:
    """Feed the sizer `batches` full batches whose time per trial follows `seconds_per_trial`; the sizes it chose."""
    sizes = []
    for _ in range(batches):
        size = sizer.next_size(arch, remaining=1000, cap=CAP)
        sizes.append(size)
        sizer.record(arch, size, seconds_per_trial[size] * size, epochs=1)
    return sizes


def test_it_doubles_while_the_time_per_trial_falls_and_keeps_the_best() -> None:
    times = {16: 1.0, 32: 0.8, 64: 0.7, 128: 0.72, 256: 0.5}
    sizes = _run(BatchSizer(multiple=2), times, batches=6)
    assert sizes == [16, 32, 64, 128, 64, 64]  # 128 was no better than 64: it stops looking (and never sees 256)


def test_a_gain_within_the_noise_does_not_count() -> None:
    times = {16: 1.0, 32: 0.97, 64: 0.5}
    assert _run(BatchSizer(multiple=2), times, batches=4) == [16, 32, 16, 16]


def test_sizes_are_multiples_of_the_device_count_and_within_the_memory_cap() -> None:
    sizer = BatchSizer(multiple=3)
    assert sizer.next_size(ARCH, remaining=1000, cap=CAP) == CPU.start * 3
    assert sizer.next_size(ARCH, remaining=1000, cap=7) == 6


def test_a_last_partial_batch_is_padded_to_a_size_already_in_the_family() -> None:
    sizer = BatchSizer(multiple=2)
    _run(sizer, {16: 1.0, 32: 0.5, 64: 0.4, 128: 0.45}, batches=5)
    assert sizer.next_size(ARCH, remaining=20, cap=CAP) == 32
    assert sizer.next_size(ARCH, remaining=3, cap=CAP) == 4


def test_the_best_size_is_remembered_per_machine_and_architecture(tmp_path) -> None:
    memory = tmp_path / "batch_sizes.json"
    _run(BatchSizer(multiple=2, memory=memory, machine="cpu A"), {16: 1.0, 32: 0.5, 64: 0.6}, batches=3)
    assert BatchSizer(multiple=2, memory=memory, machine="cpu A").next_size(ARCH, 1000, CAP) == 32
    assert BatchSizer(multiple=2, memory=memory, machine="cpu B").next_size(ARCH, 1000, CAP) == 16
    assert BatchSizer(multiple=2, memory=memory, machine="cpu A").next_size(OTHER, 1000, CAP) == 16


def test_a_fixed_size_is_kept_and_only_the_last_batch_shrinks() -> None:
    sizer = BatchSizer(fixed=24, multiple=2)
    assert sizer.next_size(ARCH, remaining=1000, cap=CAP) == 24
    sizer.record(ARCH, 24, 1.0, epochs=1)
    assert sizer.next_size(ARCH, remaining=1000, cap=CAP) == 24
    assert sizer.next_size(ARCH, remaining=5, cap=CAP) == 8
