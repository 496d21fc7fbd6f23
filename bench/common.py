"""What the benchmarks share: timing, the dict.get baseline, and output."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from typing import Callable

Figures = dict[str, object]


def best_rate(fn: Callable[[], int], *, repeat: int = 5) -> float:
    """Operations per second of `fn` (which returns how many it did), best of `repeat`.

    Best-of rather than mean: the other core's noise only ever makes a run slower.
    """
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        dt = time.perf_counter() - t0
        best = max(best, n / dt)
    return best


def dict_get_rate(keys: list, *, repeat: int = 5) -> float:
    """The baseline: a plain `dict.get` loop over the same number of keys."""
    table = {k: k for k in keys}

    def loop() -> int:
        get = table.get
        for k in keys:
            get(k)
        return len(keys)

    return best_rate(loop, repeat=repeat)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil without floats
    return ordered[int(rank) - 1]


def machine_line() -> str:
    return f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs"


def report(name: str, figures: Figures, summary: list[str], out=None) -> Figures:
    """One JSON line (what scripts read), then the summary for people."""
    out = out or sys.stdout
    record = {"bench": name, **figures, "machine": machine_line()}
    print(json.dumps(record, sort_keys=True), file=out)
    for line in summary:
        print(f"  {line}", file=out)
    out.flush()
    return record


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"
