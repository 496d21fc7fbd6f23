"""The tables view keeps its scalable-mode rows between keys (views/tables.py _CACHE):
rows are kept keyed by the words they were read from, so after any command the kept
rows must equal a build from scratch, a changed word must show at once, and a row
the unit would read differently (a "⚠ unit reads" line) is never served from the
cache.  Cheap: the machine is driven directly, no app."""

from __future__ import annotations

import pytest

from vtdtui.hw.sm_entries import PasidEntry
from vtdtui.machine import CommandError, Machine
from vtdtui.machine.state import pasid_entries, sm_contexts, sm_roots
from vtdtui.views import tables


def _fresh(fn, *args):
    kept = dict(tables._CACHE)
    tables._CACHE.clear()
    try:
        return fn(*args)
    finally:
        tables._CACHE.clear()
        tables._CACHE.update(kept)


def _all_rows(m: Machine, fresh: bool) -> dict:
    """Root rows and every present bus's context rows of every unit."""
    out = {}
    for name, u in m.units.items():
        call = (lambda f, *a: _fresh(f, *a)) if fresh else (lambda f, *a: f(*a))
        out[name] = call(tables.root_rows, m, name)
        for bus, _a, _r in sm_roots(u):
            out[name, bus] = call(tables.context_rows, m, name, bus)
    return out


@pytest.fixture(scope="module")
def server() -> Machine:
    return Machine.from_scenario("server")


SESSION = ["attach 1", "map 1 0x100000 64K", "detach 0", "toggle dmar0 C", "attach 0", "map 0 0 4K", "undo",
           "toggle dmar0 RWBF", "detach 1", "undo", "undo", "redo", "set reuse prefer-reuse", "attach 2",
           "toggle dmar0 C", "detach 2", "undo"]


def test_kept_rows_equal_a_fresh_build_after_every_command():
    m = Machine.from_scenario("server")
    tables._CACHE.clear()
    assert _all_rows(m, fresh=False) == _all_rows(m, fresh=True)
    ran = 0
    for line in SESSION:
        try:
            if line == "undo":
                m.undo()
            elif line == "redo":
                m.redo()
            else:
                m.execute(line)
            ran += 1
        except CommandError:
            continue
        assert _all_rows(m, fresh=False) == _all_rows(m, fresh=True), f"after {line!r}"
    assert ran >= len(SESSION) - 3  # the session did change things


def test_a_second_key_builds_no_rows_and_a_command_rebuilds_only_its_device(server, monkeypatch):
    m = server
    name = m.selected_unit
    bus = next(b for b, _a, _r in sm_roots(m.units[name]))
    tables._CACHE.clear()
    built: list[int] = []
    real = tables._sm_device_rows_read
    monkeypatch.setattr(tables, "_sm_device_rows_read", lambda u, sid, *a: built.append(sid) or real(u, sid, *a))
    first = tables.context_rows(m, name, bus)
    devices = len(list(sm_contexts(m.units[name], bus, next(r for b, _a, r in sm_roots(m.units[name]) if b == bus))))
    assert len(built) == devices > 1
    built.clear()
    assert tables.context_rows(m, name, bus) == first and built == []  # the same words: kept rows
    # A PASID entry changed behind the view's back (as a command's write would):
    # only that device is read again, and its rows say the new DID.
    u = m.units[name]
    sid, _c, ce = next(iter(sm_contexts(u, bus, next(r for b, _a, r in sm_roots(u) if b == bus))))
    sid = bus << 8 | sid
    pasid, addr, pe = next(pasid_entries(u, ce))
    words = list(pe.val)
    old = u.cpu_read_q(addr + 8)
    u.cache.cpu_write_q(addr + 8, (old & ~0xFFFF) | 0x1234)  # DID: val[1] bits 15:0
    u.cache.clflush(addr + 8)
    try:
        rows = tables.context_rows(m, name, bus)
        assert built == [sid]
        assert any("DID 4660" in "".join(t for t, _s in r.line) for r in rows)
        assert rows == _fresh(tables.context_rows, m, name, bus)
    finally:
        u.cache.cpu_write_q(addr + 8, old)
        u.cache.clflush(addr + 8)
    assert PasidEntry.decode(words).did == pe.did


def test_a_row_the_unit_reads_differently_is_never_kept():
    # A non-coherent unit and a PASID entry written but not flushed: the rows carry
    # "⚠ unit reads" and must be built from the unit's state every time (the CPU
    # words alone do not say what the unit reads).
    m = Machine.from_scenario("server")
    name = m.selected_unit
    u = m.units[name]
    if u.coherent:
        m.execute(f"toggle {name} C")
    assert not u.coherent
    # The tables were written while the unit snooped: their lines may still be dirty
    # (then the rows rightly warn).  Write them back to start from a clean view.
    u.cache.wbinvd()
    bus, _a, re_ = next(iter(sm_roots(u)))
    _devfn, _c, ce = next(iter(sm_contexts(u, bus, re_)))
    _p, addr, pe = next(pasid_entries(u, ce))
    tables._CACHE.clear()
    clean = tables.context_rows(m, name, bus)
    assert not any("unit reads" in "".join(t for t, _s in r.line) for r in clean)
    old = u.cpu_read_q(addr + 8)
    u.cache.cpu_write_q(addr + 8, old ^ 0x1)  # left dirty in the CPU cache
    stale = tables.context_rows(m, name, bus)
    assert any("unit reads" in "".join(t for t, _s in r.line) for r in stale)
    assert stale == _fresh(tables.context_rows, m, name, bus)
    u.cache.clflush(addr + 8)  # now the unit reads it too: no warning
    flushed = tables.context_rows(m, name, bus)
    assert not any("unit reads" in "".join(t for t, _s in r.line) for r in flushed)
    assert flushed == _fresh(tables.context_rows, m, name, bus) and flushed != clean


def test_kept_rows_equal_a_fresh_build_along_a_random_session():
    # Seeded random commands (attach/detach/map/unmap on the first groups, toggles that
    # change what the unit reads, undo and redo); after each, every unit's rows.
    import random

    rng = random.Random(16)
    m = Machine.from_scenario("server")
    groups = sorted(m.groups)[:6]
    verbs = [lambda g: f"attach {g}", lambda g: f"detach {g}", lambda g: f"map {g} {rng.randrange(16) << 16:#x} 64K",
             lambda g: f"unmap {g} 0 1M", lambda g: f"toggle {m.selected_unit} {rng.choice(['C', 'RWBF', 'CM'])}",
             "undo", "redo"]
    ran = 0
    for step in range(30):
        v = rng.choice(verbs)
        try:
            if v == "undo":
                m.undo()
            elif v == "redo":
                m.redo()
            else:
                m.execute(v(rng.choice(groups)))
        except CommandError:
            continue
        ran += 1
        assert _all_rows(m, fresh=False) == _all_rows(m, fresh=True), f"step {step}: {m.log[-1:]}"
    assert ran >= 15, ran
