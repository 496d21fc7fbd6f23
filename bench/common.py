"""What the benchmarks share: timing, the dict.get baseline, and output."""

from __future__ import annotations

import json
import os
import platform
import subprocess
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


def dict_get_loop(keys: list) -> Callable[[], int]:
    """The baseline: a plain `dict.get` loop over the same number of keys."""
    table = {k: k for k in keys}

    def loop() -> int:
        get = table.get
        for k in keys:
            get(k)
        return len(keys)

    return loop


def dict_get_rate(keys: list, *, repeat: int = 5) -> float:
    return best_rate(dict_get_loop(keys), repeat=repeat)


def paired_rates(fn: Callable[[], int], baseline: Callable[[], int], *, repeat: int = 5) -> tuple[float, float]:
    """(best rate of `fn`, best rate of `baseline`), the two timed in turn, run after
    run, so that what slows one (the other core, the CPU's clock) slows the other."""
    best_fn = best_base = 0.0
    for _ in range(repeat):
        best_base = max(best_base, best_rate(baseline, repeat=1))
        best_fn = max(best_fn, best_rate(fn, repeat=1))
    return best_fn, best_base


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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def vtdtui_tree() -> str:
    """The source tree of the vtdtui this process imports (this checkout, or whatever
    PYTHONPATH puts first): what the benchmarks' child processes run as "now"."""
    import vtdtui

    return os.path.dirname(os.path.dirname(os.path.abspath(vtdtui.__file__)))


def child_env(tree: str) -> dict[str, str]:
    """The environment of a child process that runs `tree`'s vtdtui and this bench/."""
    env = {k: v for k, v in os.environ.items() if k != "TEXTUAL_FPS"}
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([tree, ROOT]))
    return env
BASELINE_REV = "087481d"  # the last commit before issue 16: what "today" means in its targets


def baseline_tree(where: str) -> str | None:
    """The source tree to compare with: `--baseline DIR`, or BASELINE_REV's vtdtui/ and
    fixtures/ exported into `where` (`git archive`, which changes nothing in the
    checkout); None outside a git checkout that has that commit."""
    if "--baseline" in sys.argv:
        return os.path.abspath(sys.argv[sys.argv.index("--baseline") + 1])
    if os.path.isdir(os.path.join(where, "vtdtui")):
        return where
    try:
        archive = subprocess.run(["git", "-C", ROOT, "archive", BASELINE_REV, "vtdtui", "fixtures"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", where], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return where
