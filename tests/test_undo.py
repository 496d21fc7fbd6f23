"""Undo without copying the machine (issue 16): per-command checkpoints of what a command
changed, the journal object kept (cut back), memory and cache undo records; and the page
tables written a table's run at a time, bit-exact with the word-by-word writes."""

from __future__ import annotations

import copy
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from machinekit import dumps
from vtdtui.hw.memory import CpuCache, PhysMem
from vtdtui.machine import CommandError, Machine
from vtdtui.sw.linux import IntelIommuDriver

# ----------------------------------------------------------------------------- the journal survives undo


def test_undo_keeps_the_journal_object_cut_back():
    m = Machine.from_scenario("desktop")
    j, events = m.journal, list(m.journal.events)
    m.execute("attach 5")
    m.execute("map 5 0x100000 64K rw")
    m.undo()
    m.undo()
    assert m.journal is j and m.journal.events == events
    # Every actor still records into that same object.
    m.execute("attach 5")
    assert m.journal is j and len(j) > len(events)
    assert all(w.driver.journal is j for w in m.worlds.values()) and m.vfio.journal is j


def test_a_refused_command_keeps_the_journal_object_and_the_state():
    m = Machine.from_scenario("desktop")
    m.execute("attach 5")
    m.execute("map 5 0x100000 64K rw")
    j, before = m.journal, dumps(m)
    with pytest.raises(CommandError):
        m.execute("map 5 0x108000 64K rw")  # overlaps
    with pytest.raises(CommandError):
        m.execute("toggle dmar1 NOPE")
    assert m.journal is j and dumps(m) == before


def test_rollback_puts_back_an_earlier_event_amended_since():
    """An event amended by a later command is put back as it was by that command's undo."""
    m = Machine.from_scenario("desktop")
    m.execute("attach 5")
    j = m.journal
    j.begin_undo()
    first = j.events[0]
    j.amend(first, registers=())
    j.amend(j.events[0], entries=())
    record = j.end_undo()
    assert record[1] and record[1][0][1] is first
    j.rollback(record)
    assert j.events[0] is first


# ----------------------------------------------------------------------------- undo holds the change only


def _server(devices: int, spec: str) -> Machine:
    return Machine.from_scenario("server", devices=devices, map_spec=spec)


def _kept(m: Machine) -> tuple[int, int, int]:
    """(objects, memory pages, cache-line ops) the last command's checkpoint keeps."""
    cp = m._undo_stack[-1]
    pages = sum(len(r) for x, r in cp.undo_records if isinstance(x, PhysMem))
    lines = sum(len(r.ops) + len(r.orig) + (len(r.full) if r.full is not None else 0)
                for x, r in cp.undo_records if isinstance(x, CpuCache))
    return len(cp.objs), pages, lines


def test_the_undo_record_follows_the_change_not_the_machine():
    small, big = _server(64, "64M:4K"), _server(1024, "1G:4K")
    assert big._base is None and small._base is None  # no copy of the machine at boot
    for m in (small, big):
        g = sorted(m.groups)[-1]
        m.execute("toggle dmar0 SC")
        objs, pages, lines = _kept(m)
        assert pages == 0 and lines == 0 and objs <= 2  # the unit (and the driver's open event)
        m.execute(f"map {g} 0x200000000 64K rw")
        objs, pages, lines = _kept(m)
        assert pages <= 8 and lines <= 8 and objs <= 6
    # The same commands keep about as much on 1,024 devices as on 64 (the bigger one's
    # cache is full: the map's new lines evict, and write back, a few old ones).
    assert _kept(small)[0] == _kept(big)[0]


@pytest.mark.parametrize("scenario", ["desktop", "viommu", "server"])
def test_undo_then_the_same_commands_give_the_same_machine(scenario):
    """Hidden state (allocator, dirty-line order, DIDs) comes back too: the commands
    after an undo behave exactly as on a machine that never ran the undone one."""
    script = {
        "desktop": ["attach 5", "map 5 0x100000 64K rw", "dma 5 0x100000 r", "toggle dmar1 CM", "detach 5",
                    "attach 4", "map 4 0x0 2M", "unmap 4 0x0 2M"],
        "viommu": ["attach 3", "map 3 0x100000 16K rw", "dma 3 0x101000 w", "attach 2", "map 2 0x0 8K",
                   "unmap 3 0x100000 16K", "device-del", "device-add"],
        "server": ["map 3 0x100000 64K rw", "dma 3 0x100000 r", "unmap 3 0x100000 64K", "detach 7",
                   "attach 7", "flush-queue", "set lazy off", "map 7 0x0 2M"],
    }[scenario]
    ref = Machine.from_scenario(scenario)
    m = Machine.from_scenario(scenario)
    for i, line in enumerate(script):
        for x in (ref, m):
            try:
                x.execute(line)
            except CommandError:
                pass
        if i % 2 == 0:  # an extra command, undone at once, must leave no trace
            try:
                m.execute(script[(i + 3) % len(script)])
                m.undo()
            except CommandError:
                pass
        assert dumps(m) == dumps(ref), f"after {line!r}"
        for wr, wm in zip(ref.worlds.values(), m.worlds.values()):
            assert list(wr.cache._lines) == list(wm.cache._lines)
            assert wr.alloc._next == wm.alloc._next and sorted(wr.alloc._free) == sorted(wm.alloc._free)


# ----------------------------------------------------------------------------- memory and cache undo records

OPS = st.lists(st.tuples(st.sampled_from(["q", "run", "flush", "discard", "wbinvd", "dev", "copy"]),
                         st.integers(0, 5 * 4096 // 8 - 1), st.integers(1, 40), st.integers(0, 3)),
               min_size=1, max_size=25)


def _apply(cache: CpuCache, keep: list, op) -> None:
    kind, word, n, v = op
    addr = 0x10000 + word * 8
    if kind == "q":
        cache.cpu_write_q(addr, v + word)
    elif kind == "run":
        cache.cpu_write_run(addr, [v * 1000 + i for i in range(n)])
    elif kind == "flush":
        cache.clflush(addr, n * 8)
    elif kind == "discard":
        cache.discard(addr & ~0xFFF, 4096)
        cache.mem.free_page(addr >> 12)
    elif kind == "wbinvd":
        cache.wbinvd()
    elif kind == "dev":
        cache.device_write_q(addr, v)
    else:
        keep.append(copy.deepcopy(cache))  # a copy shares pages and lines (copy-on-write)


def _look(cache: CpuCache):
    mem = cache.mem
    return ([(b, list(a)) for b, a in cache._lines.items()],
            {p: mem.read_page(p << 12) for p in sorted(mem._pages)}, cache.clflushes)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(OPS, min_size=1, max_size=4), st.integers(2, 40))
def test_cache_and_memory_roll_back_exactly(commands, capacity):
    mem = PhysMem(1 << 24)
    cache = CpuCache(mem, capacity=capacity)
    keep: list = []
    looks, records = [_look(cache)], []
    for ops in commands:
        mem.begin_undo()
        cache.begin_undo()
        for op in ops:
            _apply(cache, keep, op)
        records.append((mem.end_undo(), cache.end_undo()))
        looks.append(_look(cache))
    copies = [_look(c) for c in keep]
    while records:
        mrec, crec = records.pop()
        cache.rollback(crec)
        mem.rollback(mrec)
        looks.pop()
        assert _look(cache) == looks[-1]
    # The state rolled back to keeps copy-on-write: writing it changes no copy.
    for w in range(0, 5 * 4096, 8):
        cache.cpu_write_q(0x10000 + w, 0xDEAD)
    cache.wbinvd()
    assert [_look(c) for c in keep] == copies


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(0, 4096 // 8 - 1), st.integers(1, 700), st.integers(1, 20),
       st.lists(st.integers(0, 4096 // 8 - 1), max_size=30), st.booleans())
def test_a_run_write_is_the_word_writes(word, n, capacity, before, shared):
    """cpu_write_run: the same dirty lines, in the same order, the same evictions and
    write-backs as cpu_write_q of each word."""
    looks = []
    for bulk in (False, True):
        mem = PhysMem(1 << 24)
        cache = CpuCache(mem, capacity=capacity)
        for w in before:
            cache.cpu_write_q(0x20000 + w * 8, w + 1)
        other = copy.deepcopy(cache) if shared else None
        values = [(0x1000 * i) | 3 for i in range(n)]
        if bulk:
            cache.cpu_write_run(0x20000 + word * 8, values)
        else:
            for i, v in enumerate(values):
                cache.cpu_write_q(0x20000 + (word + i) * 8, v)
        looks.append((_look(cache), _look(other) if other is not None else None))
    assert looks[0] == looks[1]


# ----------------------------------------------------------------------------- map_range, a run at a time


def test_run_length_is_what_largest_level_decides():
    rnd = random.Random(16)
    d = type("D", (), {})()
    for _ in range(3000):
        d.superpage_level = rnd.choice([1, 2, 3])
        level = rnd.randint(1, d.superpage_level)
        step = 1 << (12 + 9 * (level - 1))
        cur = rnd.randrange(0, 1 << 40, step)
        pa = rnd.randrange(0, 1 << 40, step) if rnd.random() < 0.5 else cur + (rnd.randrange(0, 8) << 30)
        end = cur + rnd.randrange(1, 2000) * (1 << 12)
        if IntelIommuDriver._largest_level(d, cur, pa, end - cur) != level:
            continue
        first = (cur >> (12 + 9 * (level - 1))) & 511
        n, c, p = 0, cur, pa
        while first + n < 512 and c < end and IntelIommuDriver._largest_level(d, c, p, end - c) == level:
            n, c, p = n + 1, c + step, p + step
        assert IntelIommuDriver._run_length(None, d, cur, pa, end, level, first) == n, (level, cur, pa, end)


def test_tables_written_by_runs_are_the_word_by_word_tables(monkeypatch):
    def build():
        m = _server(64, "256M:4K")
        for line in ("map 3 0x40000000 2M rw", "map 3 0x80001000 3M r", "unmap 3 0x0 64K", "map 3 0x0 64K w",
                     "toggle dmar0 C", "map 5 0x100000000 1G", "unmap 5 0x100000000 2M", "map 5 0x100000000 2M"):
            m.execute(line)
        mem = m.worlds["host"].mem
        return dumps(m), {p: mem.read_page(p << 12) for p in sorted(mem._pages)}, \
            [(b, list(a)) for b, a in m.worlds["host"].cache._lines.items()]

    fast = build()

    def word_by_word(self, addr, values):
        for i, v in enumerate(values):
            self.cpu_write_q(addr + i * 8, v)

    monkeypatch.setattr(CpuCache, "cpu_write_run", word_by_word)
    assert build() == fast


@pytest.mark.parametrize("drop", ["clflush", "discard", "wbinvd"])
@pytest.mark.parametrize("bulk", [False, True])
def test_a_line_written_after_the_whole_record_is_taken_rolls_back(drop, bulk):
    mem = PhysMem(1 << 24)
    cache = CpuCache(mem, capacity=8)
    for a in (0x10000, 0x11000, 0x11040):
        cache.cpu_write_q(a, a | 1)
    start = _look(cache)
    mem.begin_undo()
    cache.begin_undo()
    cache.cpu_write_q(0x11040, 7)  # written in place before the record is taken whole
    {"clflush": lambda: cache.clflush(0x10000), "discard": lambda: cache.discard(0x10000, 4096),
     "wbinvd": lambda: cache.wbinvd()}[drop]()
    for a in (0x11000, 0x11040, 0x12000):  # in place after it (those still dirty), and new
        cache.cpu_write_run(a, [5, 6]) if bulk else cache.cpu_write_q(a, 5)
    records = mem.end_undo(), cache.end_undo()
    cache.rollback(records[1])
    mem.rollback(records[0])
    assert _look(cache) == start


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 3 * 64 - 1), st.lists(st.integers(0, 2), min_size=8, max_size=8)),
                min_size=1, max_size=80, unique_by=lambda t: t[0]),
       st.lists(st.tuples(st.integers(0, 3 * 512 - 1), st.integers(0, 3)), max_size=60))
@example([(n, [1] * 8) for n in range(3)], [])  # 24 words: the page stays sparse
@example([(n, [1] * 8) for n in range(8)], [])  # 64: dense
@example([(n, [n % 2] * 8) for n in range(14)], [(w, 1) for w in range(40)])  # zeros pop words
@example([(n, [0] * 8) for n in range(7)], [(w, 1) for w in range(40)])  # ... and the page stays sparse
def test_write_lines_is_write_line_of_each(items, before):
    """PhysMem.write_lines: the same pages, stored the same way (sparse or dense), and
    the observers told of the same lines in the same order, as write_line of each."""
    out = []
    for bulk in (False, True):
        mem = PhysMem(1 << 24)
        for w, v in before:
            mem.write_q(w * 8, v)
        seen: list[int] = []
        mem.add_write_observer(seen.append)
        lines = [(n * 64, array_q(words)) for n, words in sorted(items)]  # runs of lines in a page
        if bulk:
            mem.write_lines(lines)
        else:
            for line, words in lines:
                mem.write_line(line, words)
        out.append((seen, {p: (type(pg).__name__, dict(pg) if isinstance(pg, dict) else list(pg))
                           for p, pg in sorted(mem._pages.items())}))
    assert out[0] == out[1]


def array_q(words):
    from array import array

    return array("Q", words)


def test_a_command_changing_a_guarded_collection_is_caught(monkeypatch):
    """Commands other than attach / detach / device-add / device-del get a guard, not a
    copy, on the driver's machine-sized collections; one that changed them anyway
    could not be undone, so it fails loudly instead of leaving a wrong undo behind.
    (`set` saves every actor; a toggle saves its unit only, and the footprint audit of
    tests/test_perf_undo.py is what holds it to that.)"""
    m = _server(64, "64M:4K")
    driver = m.worlds["host"].driver
    m.execute("set lazy off")  # fine: nothing guarded changes
    real = Machine._cmd_set

    def set_and_forget_a_domain(self, *args):
        driver.domains.pop(next(iter(driver.domains)))
        return real(self, *args)

    monkeypatch.setattr(Machine, "_cmd_set", set_and_forget_a_domain)
    with pytest.raises(RuntimeError, match="undo"):
        m.execute("set lazy on")
