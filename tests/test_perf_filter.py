"""The journal filter's index (issue 16): a filter change reads the events per value of
its keys, kept as the journal grows and cut back on undo, instead of scanning every
event.  After random sessions of commands, undos, redos and filter changes, the view
shows exactly what a fresh scan of the journal with the same filter shows."""

from __future__ import annotations

import random

import pytest

from vtdtui.machine import CommandError, Machine
from vtdtui.views.journal import JournalFilter, JournalView

FILTERS = ["", "op=iotlb", "op=invalidation", "op=clflush", "unit=dmar1", "unit=DMAR0", "actor=driver",
           "actor=vfio", "actor=hw", "outcome=skipped", "outcome=issued", "rule=cm", "rule=np", "rule=nosuchrule",
           "op=context unit=dmar1", "actor=driver outcome=skipped op=iotlb", "rule=c op=flush", "op=fault",
           "op=fault unit=dmar0", "unit=host-dmar1 actor=driver", "op=pasid", "op=i actor=driver rule=s"]

LINES = ["attach {g}", "detach {g}", "map {g} 0x100000 64K rw", "map {g} 0x0 2M", "unmap {g} 0x100000 64K",
         "dma {g} 0x100000 r", "dma {g} 0x900000 w", "toggle {u} CM", "toggle {u} C", "toggle {u} SC",
         "set lazy off", "set lazy on", "flush-queue", "device-del", "device-add"]


def _fresh(m: Machine, text: str) -> list[int]:
    f = JournalFilter.parse(text)
    return [i for i, e in enumerate(m.journal.events) if f.matches(e)]


@pytest.mark.parametrize("scenario", ["desktop", "server", "viommu", "notebook"])
def test_the_index_shows_what_a_fresh_scan_shows(scenario):
    rnd = random.Random(f"filter-{scenario}")
    m = Machine.from_scenario(scenario)
    view, text = JournalView(), ""
    view.update(m.journal)
    checked, since = 0, None
    for step in range(160):
        r = rnd.random()
        cut = None
        if r < 0.2 and m.log:
            cut = m.undo().changed.journal[0]
        elif r < 0.25 and m.redo_stack:
            cut = m.redo().changed.journal[0]
        elif r < 0.5:
            text = rnd.choice(FILTERS)
            view.set_filter(JournalFilter.parse(text, keep_outcome=rnd.choice(["all", "all", "issued", "skipped"])))
            text = " ".join(p for p in (text, f"outcome={view.filter.outcome}") if p)
        else:
            g, u = rnd.choice(sorted(m.groups)[:6]), rnd.choice(list(m.units))
            try:
                cut = m.execute(rnd.choice(LINES).format(g=g, u=u)).changed.journal[0]
            except CommandError:
                pass
        if cut is not None:  # a hidden pane is given the union of what changed meanwhile
            since = cut if since is None else min(since, cut)
        if rnd.random() < 0.3:
            continue  # the pane is hidden: the view catches up later
        view.update(m.journal, since)
        since = None
        assert view.indices == _fresh(m, text), (step, text, m.log[-3:])
        # the index holds every event once per key, nothing past the journal's end
        for per in view._index.values():
            assert sum(map(len, per.values())) == len(m.journal)
        checked += 1
    assert checked > 80


def test_a_filter_change_reads_the_index_not_the_journal(monkeypatch):
    """A change of filter tests at most the events of its most selective key."""
    m = Machine.from_scenario("server", devices=256)
    for g in range(0, 40):
        m.execute(f"dma {g} 0x{0x100000 + g * 0x1000:x} r")  # nothing mapped: a fault each
    faults, on_dmar0 = _fresh(m, "op=fault"), _fresh(m, "op=fault unit=dmar0")
    assert len(faults) >= 40 and on_dmar0
    view = JournalView()
    view.update(m.journal)
    calls = []
    real = JournalFilter.matches
    monkeypatch.setattr(JournalFilter, "matches", lambda self, e: calls.append(1) or real(self, e))
    view.set_filter(JournalFilter.parse("op=fault"))
    view.update(m.journal)
    assert not calls and view.indices == faults  # one key: no event tested at all
    view.set_filter(JournalFilter.parse("op=fault unit=dmar0"))
    view.update(m.journal)
    assert len(calls) == len(faults) < len(m.journal) // 10  # the fault lists, not the journal
    assert view.indices == on_dmar0
    calls.clear()
    view.set_filter(JournalFilter.parse("actor=nobody op=fault"))
    view.update(m.journal)
    assert view.indices == [] and not calls
