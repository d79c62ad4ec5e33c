"""Wall-clock timing of the benchmark scripts, with the device's queue drained around each timing.

CUDA kernels run asynchronously: a clock read without ``torch.cuda.synchronize`` times the
launches, not the work. Import it from a script in this folder (``from timing import timed``; the
script's folder is on ``sys.path`` when it runs). The package keeps only the timings it records at
run time (epoch seconds in the training history, k-means' phases, the complexity table's images/s).
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar, Union

import torch

T = TypeVar("T")
Device = Union[str, torch.device]


def sync(device: Device) -> None:
    """Wait for the work queued on ``device`` (a no-op off CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: Device = "cpu") -> tuple[T, float]:
    """``(fn(), seconds of that one call)``."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def seconds_per_call(fn: Callable[[], object], steps: int, device: Device = "cpu", warmup: int = 1) -> float:
    """Mean seconds per call of ``fn`` over ``steps`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / steps
