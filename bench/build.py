"""Build: `--scenario server --devices 4096 --map 4G:4K` (1,048,576 leaf entries).

Time is the wall time of Machine.from_scenario() (parse, generate, attach, map, and
the undo base).

Scaling: the same 1 MiB of 4 KiB pages per device (256 pages each) at 64, 512, 4,096
and 7,680 devices, each build in a fresh process; time per page should be flat.  The
1M-page build and the scaling builds also run from a baseline tree, the last commit
before issue 16 (BASELINE_REV, exported with `git archive` into a temporary folder;
`--baseline DIR` for another), taking turns with this tree's, so "≤ 1/3 of today's
time" is a ratio from one run.  Memory is what tracemalloc sees the machine hold once built, per
mapped page, three ways:
  tables    the tables as stored (PhysMem pages) plus the dirty lines of them the CPU
            cache holds (C=1: the driver never flushes them); in legacy mode (second-
            level tables, root and context tables: the baseline's work) and as the
            server ships (scalable mode: first-stage tables, and a PASID directory and
            table per device, which the map does not add: "map's tables" leaves out
            what the same machine without the map holds);
  marginal  everything the 4G:4K map adds to the same 4,096-device machine without it;
  total     the whole machine, devices, journal and undo base included.
Timing runs without tracemalloc (it slows allocation several times); memory is a
second build under it.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from importlib import resources

from vtdtui.hw.memory import CpuCache, PhysMem
from vtdtui.machine import Machine

from .common import BASELINE_REV, Figures, baseline_tree, child_env, report, verdict, vtdtui_tree

DEVICES, MAP = 4096, "4G:4K"
SCALING = (64, 512, 4096, 7680)  # devices, 256 pages of 4 KiB each
BUILD_TARGET = 1 / 3  # 1M pages: this tree's time over the baseline's
FLAT_TARGET = 1.5  # time per page at 7,680 devices over 64
# argv: devices, map spec, mode.  "legacy" builds the server booted with
# intel_iommu=sm_off (the work the baseline tree, which predates scalable mode, does:
# the like-for-like ratio); "default" builds the scenario as it ships (scalable mode
# and first-stage tables in this tree).
CHILD = (
    "import json, os, sys, tempfile, time\n"
    "from importlib import resources\n"
    "from vtdtui.machine import Machine\n"
    "n, spec, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]\n"
    "name = 'server'\n"
    "src = resources.files('vtdtui.scenarios').joinpath('server.toml').read_text()\n"
    "if mode == 'legacy' and 'sm = \"on\"' in src:\n"
    "    fd, name = tempfile.mkstemp(suffix='.toml')\n"
    "    os.write(fd, src.replace('sm = \"on\"', 'sm = \"off\"').encode()); os.close(fd)\n"
    "t0 = time.perf_counter()\n"
    "m = Machine.from_scenario(name, devices=n, map_spec=spec or None)\n"
    "dt = time.perf_counter() - t0\n"
    "if name != 'server': os.unlink(name)\n"
    "print(json.dumps([dt, sum(g.domain.mapped_pages for g in m.groups.values() if g.domain)]))\n"
)
TIME_TARGET_S = 10.0
BYTES_TARGET = 32  # per page beyond the 8-byte entry


def _build(devices: int, spec: str | None, mode: str = "default") -> Machine:
    """The server as it ships, or with `mode` "legacy" booted with sm = "off"."""
    if mode == "default":
        return Machine.from_scenario("server", devices=devices, map_spec=spec)
    src = resources.files("vtdtui.scenarios").joinpath("server.toml").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "server.toml")
        with open(path, "w") as f:
            f.write(src.replace('sm = "on"', 'sm = "off"'))
        return Machine.from_scenario(path, devices=devices, map_spec=spec)


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


def _timed_in_child(tree: str, devices: int, spec: str, mode: str = "default") -> tuple[float, int]:
    """Seconds of Machine.from_scenario() in a fresh process running `tree`, and pages."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(devices), spec, mode], env=child_env(tree),
                         cwd=tempfile.gettempdir(),
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"bench build: {devices} devices from {tree} failed:\n{out.stderr}")
    dt, pages = json.loads(out.stdout)
    return dt, pages


def scaling(quick: bool) -> tuple[Figures, list[str]]:
    """Build time per page from 64 to 7,680 devices, and the 1M-page build, this tree
    against the baseline's, in turns."""
    sizes = (64, 512, 1024) if quick else SCALING
    repeat = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="vtdtui-baseline-") as tmp:
        base = baseline_tree(tmp)
        now = vtdtui_tree()
        # "now": legacy mode, the baseline's work; "sm": as the server ships today.
        trees = {"now": (now, "legacy"), "sm": (now, "default"), **({"baseline": (base, "default")} if base else {})}
        best: dict[tuple[str, int], float] = {}
        pages_of: dict[int, int] = {}
        for _ in range(repeat):
            for n in sizes:
                for name, (tree, mode) in trees.items():
                    dt, pages = _timed_in_child(tree, n, f"{n}M:4K", mode)
                    best[name, n] = min(best.get((name, n), dt), dt)
                    pages_of[n] = pages
                    dt, _ = _timed_in_child(tree, n, "", mode)  # the devices alone, no map
                    best[name, -n] = min(best.get((name, -n), dt), dt)
    fig: Figures = {"scaling_pages_per_device": 256, "baseline": base and BASELINE_REV}
    lines = [f"build, 256 pages of 4 KiB per device, fresh process, best of {repeat}; this tree in legacy mode"
             " (server with sm = \"off\"; in scalable mode, as it ships, in the last column)"
             + (f" vs {BASELINE_REV} (before issue 16)" if base else " (no baseline tree: not a git checkout)")]
    for n in sizes:
        per = best["now", n] / pages_of[n] * 1e9
        fig[f"build_{n}_s"] = round(best["now", n], 3)
        fig[f"build_{n}_ns_per_page"] = round(per)
        line = f"  {n:5d} devices, {pages_of[n]:9,} pages: {best['now', n]:7.2f} s, {per:6.0f} ns/page"
        if base:
            bper = best["baseline", n] / pages_of[n] * 1e9
            fig[f"baseline_build_{n}_s"] = round(best["baseline", n], 3)
            fig[f"baseline_build_{n}_ns_per_page"] = round(bper)
            line += f"   baseline {best['baseline', n]:7.2f} s, {bper:6.0f} ns/page ({best['now', n] / best['baseline', n]:.2f}x)"
        sper = best["sm", n] / pages_of[n] * 1e9
        fig[f"build_sm_{n}_s"] = round(best["sm", n], 3)
        fig[f"build_sm_{n}_ns_per_page"] = round(sper)
        line += f"   scalable {best['sm', n]:6.2f} s, {sper:5.0f} ns/page"
        lines.append(line)
    for n in sizes:
        per = best["now", -n] / n * 1e6
        fig[f"build_{n}_devices_only_us_per_device"] = round(per, 1)
        line = f"  {n:5d} devices, no map:  {best['now', -n]:7.2f} s, {per:6.1f} µs/device"
        if base:
            fig[f"baseline_build_{n}_devices_only_us_per_device"] = round(best["baseline", -n] / n * 1e6, 1)
            line += f"   baseline {best['baseline', -n]:7.2f} s, {best['baseline', -n] / n * 1e6:6.1f} µs/device"
        fig[f"build_sm_{n}_devices_only_us_per_device"] = round(best["sm", -n] / n * 1e6, 1)
        line += f"   scalable {best['sm', -n] / n * 1e6:6.1f} µs/device"
        lines.append(line)
    lo, hi = sizes[0], sizes[-1]
    flat = (best["now", hi] / pages_of[hi]) / (best["now", lo] / pages_of[lo])
    fig["per_page_ratio_last_first"] = round(flat, 2)
    lines.append(f"time per page, {hi} devices over {lo}: {flat:.2f}x (target ≤{FLAT_TARGET}x, flat: {verdict(flat <= FLAT_TARGET)})")
    if base and not quick:
        r = best["now", 4096] / best["baseline", 4096]
        fig["build_1m_vs_baseline"] = round(r, 2)
        lines.append(f"1M pages (4,096 devices, 4G:4K): {best['now', 4096]:.2f} s vs {best['baseline', 4096]:.2f} s: "
                     f"{r:.2f}x (target ≤{BUILD_TARGET:.2f}x: {verdict(r <= BUILD_TARGET)})")
    return fig, lines


def run(quick: bool = False) -> Figures:
    scale_fig, scale_lines = scaling(quick)
    devices, spec = (1024, "1G:4K") if quick else (DEVICES, MAP)
    gc.collect()
    t0 = time.perf_counter()
    m = _build(devices, spec)
    build_s = time.perf_counter() - t0
    pages = sum(g.domain.mapped_pages for g in m.groups.values() if g.domain)
    tables = _table_bytes(m)
    del m
    tables_legacy = _table_bytes(_build(devices, spec, "legacy"))
    tables_unmapped = _table_bytes(_build(devices, None))
    m0, held0 = _traced(devices, None)
    del m0
    m1, held1 = _traced(devices, spec)
    assert isinstance(m1.worlds["host"].mem, PhysMem) and isinstance(m1.worlds["host"].cache, CpuCache)
    del m1
    per_tables = tables / pages
    per_tables_legacy = tables_legacy / pages
    per_tables_map = (tables - tables_unmapped) / pages
    per_marginal = (held1 - held0) / pages
    per_total = held1 / pages
    fig = {
        "devices": devices, "map": spec, "mapped_pages": pages,
        "build_s": round(build_s, 2),
        "table_bytes_per_page": round(per_tables, 1),
        "table_bytes_per_page_legacy": round(per_tables_legacy, 1),
        "map_table_bytes_per_page": round(per_tables_map, 1),
        "marginal_bytes_per_page": round(per_marginal, 1),
        "total_bytes_per_page": round(per_total, 1),
        "held_mib": round(held1 / 2**20, 1),
        **scale_fig,
    }
    summary = [
        f"server, {devices} devices, map {spec}: {pages:,} pages of 4 KiB",
        f"build                      {build_s:8.2f} s   (target <{TIME_TARGET_S:g} s: {verdict(build_s < TIME_TARGET_S)})",
        f"tables per page            {per_tables:8.1f} B   (target ≤8+{BYTES_TARGET}: {verdict(per_tables <= 8 + BYTES_TARGET)})",
        f"  legacy mode              {per_tables_legacy:8.1f} B   (the baseline's work, like for like)",
        f"  the map's tables         {per_tables_map:8.1f} B   (scalable mode, less the same machine unmapped)",
        f"all the map adds, per page {per_marginal:8.1f} B   (tables, CPU-cache lines, journal, undo base)",
        f"whole machine, per page    {per_total:8.1f} B   ({held1 / 2**20:.1f} MiB)",
        *scale_lines,
    ]
    return report("build", fig, summary)


if __name__ == "__main__":
    run()
