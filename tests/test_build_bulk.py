"""The map path's bulk writes equal the per-entry path they replace.

map_range() fills a table's run of leaf entries in one cpu_write_run() of
stepped_words(), and evicted lines go back a page's run at a time (write_lines).  With
each of those swapped for what it stands for — cpu_write_q of each entry, an array of
range(), write_line of each line — the machine must end up the same: state JSON, journal, memory (contents and how each
page is stored) and the CPU cache's dirty lines in order.
"""

from __future__ import annotations

import os
from array import array
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from machinekit import dumps
from vtdtui.hw.memory import CpuCache, PhysMem, stepped_words
from vtdtui.machine import CommandError, Machine
from vtdtui.sw import linux

# Unaligned starts and ends, runs crossing tables, 2M and 1G pages, unmap and map
# again (switch_to_super_page), C=0 (clflush journaled and done), skip-clflush, C=1
# again on domains allocated non-coherent (flush_cache's "kept" reasons).
COMMANDS = (
    "map 3 0x40000000 2M rw", "map 3 0x80001000 3M r", "unmap 3 0x0 64K", "map 3 0x0 64K w",
    "toggle dmar0 C", "map 5 0x100000000 1G", "unmap 5 0x100000000 2M", "map 5 0x100000000 2M",
    "map 4 0x7ff000 0x403000 rw", "set skip-clflush on", "map 6 0x1000 0x200000 rw", "toggle dmar0 C",
    "map 7 0x3ff000 0x1802000 rw", "unmap 7 0x400000 0x200000", "map 7 0x400000 0x200000 w",
)


def _server(tmp_path, sm: bool) -> str:
    if sm:
        return "server"
    src = resources.files("vtdtui.scenarios").joinpath("server.toml").read_text()
    path = os.path.join(tmp_path, "server-legacy.toml")
    with open(path, "w") as f:
        f.write(src.replace('sm = "on"', 'sm = "off"'))
    return path


def _look(m: Machine, outcomes: list[str]) -> tuple:
    out = [outcomes, dumps(m), m.journal.to_json()]
    for w in m.worlds.values():
        pages = w.mem._pages
        out.append({p: (type(pg).__name__, w.mem.read_page(p << 12)) for p, pg in sorted(pages.items())})
        out.append([(b, list(words)) for b, words in w.cache._lines.items()])
    return tuple(out)


def _run(scenario: str, spec: str | None, commands, devices: int | None = 16) -> tuple:
    m = Machine.from_scenario(scenario, devices=devices, map_spec=spec)
    outcomes = []
    for line in commands:
        try:
            m.execute(line)
            outcomes.append("ok")
        except CommandError as exc:
            outcomes.append(str(exc))
    return _look(m, outcomes)


def _per_entry(monkeypatch) -> None:
    """Every bulk step of the map path replaced by the per-entry one it stands for."""

    def word_by_word(self, addr, values):
        for i, v in enumerate(values):
            self.cpu_write_q(addr + i * 8, v)

    def line_by_line(self, items):
        for line, words in items:
            self.write_line(line, words)

    monkeypatch.setattr(CpuCache, "cpu_write_run", word_by_word)
    monkeypatch.setattr(PhysMem, "write_lines", line_by_line)
    monkeypatch.setattr(linux, "stepped_words", lambda first, n, step: array("Q", range(first, first + n * step, step)))


@pytest.mark.parametrize("sm", [False, True], ids=["legacy", "scalable"])
@pytest.mark.parametrize("spec", ["8M:4K", "3M:4K", "64M:2M", "16G:1G", None])
def test_server_maps_equal_the_per_entry_path(tmp_path, monkeypatch, sm, spec):
    scenario = _server(tmp_path, sm)
    bulk = _run(scenario, spec, COMMANDS)
    _per_entry(monkeypatch)
    assert _run(scenario, spec, COMMANDS) == bulk


def test_a_build_past_the_cache_capacity_equals_the_per_entry_path(tmp_path, monkeypatch):
    """1,040 devices of 256 pages: more dirty lines than the cache holds, so the runs
    evict one another's lines (write_lines of whole leaf tables)."""
    scenario = _server(tmp_path, False)
    bulk = _run(scenario, "1040M:4K", ("map 9 0x3ff000 0x5000 rw",), devices=1040)
    assert len(bulk[4]) == CpuCache(PhysMem()).capacity  # the host's dirty lines: the cache is full
    _per_entry(monkeypatch)
    assert _run(scenario, "1040M:4K", ("map 9 0x3ff000 0x5000 rw",), devices=1040) == bulk


@pytest.mark.parametrize("name", ["desktop", "viommu", "viommu-sm"])
def test_other_scenarios_map_as_the_per_entry_path(monkeypatch, name):
    """Non-coherent units, CM=1 (QEMU's vIOMMU: the IOTLB invalidation batch)."""
    commands = ("attach 1", "attach 2", "map 1 0x1000 0x400000 rw", "map 2 0x3ff000 0x202000 r",
                "toggle dmar0 C", "map 1 0x40000000 0x40000000 rw", "unmap 1 0x2000 0x1000")
    bulk = _run(name, None, commands, devices=None)
    _per_entry(monkeypatch)
    assert _run(name, None, commands, devices=None) == bulk


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.integers(0, (1 << 64) - 1), st.integers(1, 512), st.sampled_from([1 << 12, 1 << 21, 1 << 30, 8]))
def test_stepped_words_are_the_range(first, n, step):
    try:
        expected = array("Q", range(first, first + n * step, step))
    except OverflowError:
        with pytest.raises(OverflowError):
            stepped_words(first, n, step)
        return
    assert stepped_words(first, n, step) == expected
