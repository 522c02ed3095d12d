"""Helpers the benchmark scripts share (run them as ``python benchmarks/NAME.py``:
this folder is then on the import path)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def peak_mib() -> float:
    """The peak resident memory of this process (``VmHWM``), MiB; NaN off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def median_time(f: Callable[[], object], repeats: int, *, warmup: int = 1,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """The median time of ``repeats`` calls of ``f`` after ``warmup`` calls."""
    for _ in range(warmup):
        f()
    out = []
    for _ in range(repeats):
        t0 = clock()
        f()
        out.append(clock() - t0)
    return statistics.median(out)
