"""Build: `--scenario server --devices 4096 --map 4G:4K` (1,048,576 leaf entries).

Time is the wall time of Machine.from_scenario() (parse, generate, attach, map, and
the undo base).  Memory is what tracemalloc sees the machine hold once built, per
mapped page, three ways:
  tables    the second-level tables as stored (PhysMem pages) plus the dirty lines of
            them the CPU cache holds (C=1: the driver never flushes them);
  marginal  everything the 4G:4K map adds to the same 4,096-device machine without it;
  total     the whole machine, devices, journal and undo base included.
Timing runs without tracemalloc (it slows allocation several times); memory is a
second build under it.
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc

from vtdtui.hw.memory import CpuCache, PhysMem
from vtdtui.machine import Machine

from .common import Figures, report, verdict

DEVICES, MAP = 4096, "4G:4K"
TIME_TARGET_S = 10.0
BYTES_TARGET = 32  # per page beyond the 8-byte entry


def _build(devices: int, spec: str | None) -> Machine:
    return Machine.from_scenario("server", devices=devices, map_spec=spec)


def _traced(devices: int, spec: str | None) -> tuple[Machine, int]:
    gc.collect()
    tracemalloc.start()
    m = _build(devices, spec)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return m, held


def _table_bytes(m: Machine) -> int:
    """Bytes of the tables' storage: PhysMem pages and the CPU cache's lines."""
    n = 0
    for w in m.worlds.values():
        for page in w.mem._pages.values():
            n += sys.getsizeof(page) + (sum(sys.getsizeof(v) for v in page.values()) if isinstance(page, dict) else 0)
        n += sys.getsizeof(w.mem._pages)
        n += sum(sys.getsizeof(line) for line in w.cache._lines.values()) + sys.getsizeof(w.cache._lines)
    return n


def run(quick: bool = False) -> Figures:
    devices, spec = (1024, "1G:4K") if quick else (DEVICES, MAP)
    gc.collect()
    t0 = time.perf_counter()
    m = _build(devices, spec)
    build_s = time.perf_counter() - t0
    pages = sum(g.domain.mapped_pages for g in m.groups.values() if g.domain)
    tables = _table_bytes(m)
    del m
    m0, held0 = _traced(devices, None)
    del m0
    m1, held1 = _traced(devices, spec)
    assert isinstance(m1.worlds["host"].mem, PhysMem) and isinstance(m1.worlds["host"].cache, CpuCache)
    del m1
    per_tables = tables / pages
    per_marginal = (held1 - held0) / pages
    per_total = held1 / pages
    fig = {
        "devices": devices, "map": spec, "mapped_pages": pages,
        "build_s": round(build_s, 2),
        "table_bytes_per_page": round(per_tables, 1),
        "marginal_bytes_per_page": round(per_marginal, 1),
        "total_bytes_per_page": round(per_total, 1),
        "held_mib": round(held1 / 2**20, 1),
    }
    summary = [
        f"server, {devices} devices, map {spec}: {pages:,} pages of 4 KiB",
        f"build                      {build_s:8.2f} s   (target <{TIME_TARGET_S:g} s: {verdict(build_s < TIME_TARGET_S)})",
        f"tables per page            {per_tables:8.1f} B   (target ≤8+{BYTES_TARGET}: {verdict(per_tables <= 8 + BYTES_TARGET)})",
        f"all the map adds, per page {per_marginal:8.1f} B   (tables, CPU-cache lines, journal, undo base)",
        f"whole machine, per page    {per_total:8.1f} B   ({held1 / 2**20:.1f} MiB)",
    ]
    return report("build", fig, summary)


if __name__ == "__main__":
    run()
