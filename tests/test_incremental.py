"""Incremental views: what a command reports it changed keeps every view exact.

Each command's Outcome says what it changed (machine.Changes); the graph view updates
its networkx graph in place and lays out again only the domains named.  The property
test runs random sessions (undo and redo included) and, after each step, holds the
incremental graph and rows against a fresh computation; the view is sometimes left
behind for a few steps (a hidden pane) and then given the union of the changes.
The TUI half: a key is one frame, and the graph pane keeps its graph between keys.
"""

from __future__ import annotations

import asyncio
import sys

import pytest
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from vtdtui import graph as G
from vtdtui.machine import CommandError, Machine
from vtdtui.machine.machine import EVERYTHING, Changes
from vtdtui.views.graph import GraphView, graph_lines
from vtdtui.views.journal import JournalView

K4 = 0x1000


def graph_data(g) -> tuple[dict, dict]:
    return dict(g.nodes(data=True)), {(u, v): d for u, v, d in g.edges(data=True)}


def rows_of(view: GraphView, m: Machine, changes) -> list:
    return list(view.lines(m, changes))


# ----------------------------------------------------------------------------- what commands report


def test_commands_report_what_they_changed():
    m = Machine.from_scenario("desktop")
    o = m.execute("attach 5")
    assert o.changed.groups == {5} and "dmar1" in o.changed.units and not o.changed.everything
    d = m.domain_of(m.groups[5])
    assert d.id in o.changed.domains
    assert o.changed.journal == (o.changed.journal[0], len(m.journal)) and o.events
    assert m.execute("map 5 0x100000 64K").changed.domains == {d.id}
    m.execute("attach 0")  # a second VFIO domain: a map goes into every one of the container's
    gpu = m.domain_of(m.groups[0]).id
    assert m.execute("map 5 0x200000 4K").changed.domains == {d.id, gpu}
    o = m.execute("detach 5")
    assert d.id in o.changed.domains and o.changed.groups == {5}
    assert m.execute("toggle dmar0 SC").changed == Changes(units=frozenset({"dmar0"}),
                                                           journal=(len(m.journal) - 1, len(m.journal)))
    assert m.execute("select-group 3").changed.units == frozenset()
    assert m.execute("set reuse prefer-reuse").changed.everything  # not tracked piece by piece
    assert m.undo().changed.everything  # the switch undone
    assert m.undo().changed == Changes(journal=(len(m.journal), len(m.journal)))  # select-group 3
    assert Changes() | Changes() == Changes()  # nothing, and no journal range
    assert m.undo().changed == Changes(units=frozenset({"dmar0"}), journal=(len(m.journal), len(m.journal)))
    o = m.undo()  # detach 5 undone: attached again, to the same domain
    assert o.changed.groups == {5} and d.id in o.changed.domains


def test_an_update_in_place_equals_a_fresh_build():
    m = Machine.from_scenario("desktop")
    g = G.build(m)
    for line in ("attach 0", "attach 5", "map 5 0 2M", "toggle dmar1 SC", "detach 0", "set reuse prefer-reuse",
                 "attach 0", "attach 3"):
        G.update(g, m, m.execute(line).changed)
        assert graph_data(g) == graph_data(G.build(m)), line


def test_an_update_without_the_changes_is_stale():
    # The property test below could not fail if update() ignored what it was told.
    m = Machine.from_scenario("desktop")
    g = G.build(m)
    m.execute("attach 5")
    G.update(g, m, Changes())
    assert graph_data(g) != graph_data(G.build(m))


def test_an_undo_takes_the_journal_view_back_without_a_rescan():
    m = Machine.from_scenario("desktop")
    view = JournalView()
    view.update(m.journal)
    for line in ("attach 5", "map 5 0 64K", "toggle dmar1 SC"):
        m.execute(line)
        view.update(m.journal)
    m.undo()
    m.undo()
    scanned = []
    real = view.filter.matches
    view.filter.matches = lambda e: scanned.append(e) or real(e)
    view.update(m.journal)  # back to the mark after "attach 5": nothing to scan
    assert scanned == []
    fresh = JournalView()
    fresh.update(m.journal)
    assert (view.indices, view.counts, view.records) == (fresh.indices, fresh.counts, fresh.records)


def test_a_toggle_lays_out_no_domain_again_yet_the_rows_say_the_new_bit():
    m = Machine.from_scenario("server", devices=64)
    view = GraphView()
    rows_of(view, m, None)
    blocks = dict(view._blocks)
    o = m.execute("toggle dmar0 SC")
    rows = rows_of(view, m, o.changed)
    assert all(view._blocks[i] is blocks[i] for i in blocks)  # nothing laid out again
    assert rows == graph_lines(m)


# ----------------------------------------------------------------------------- the property


class Views(RuleBasedStateMachine):
    SCENARIO = "desktop"
    DEVICES: int | None = None
    LITE = False  # the graph pane's start: a graph.Lite kept up to date the same way

    @initialize()
    def boot(self):
        self.m = Machine.from_scenario(self.SCENARIO, devices=self.DEVICES)
        self.view = GraphView(lite=self.LITE)
        self.rows = rows_of(self.view, self.m, None)
        self.journal = JournalView()
        self.journal.update(self.m.journal)
        self.pending: Changes | None = None
        self.behind = False

    def group(self, data, attached: bool | None = None) -> int:
        """One of the first groups; mostly an attached (or detached) one when asked."""
        groups = sorted(self.m.groups)[:8]
        fit = [g for g in groups if (self.m.domain_of(self.m.groups[g]) is not None) == attached]
        if fit and data.draw(st.integers(0, 4), label="prefer") < 4:
            groups = fit
        return data.draw(st.sampled_from(groups), label="group")

    def run(self, step) -> None:
        try:
            o = step()
        except CommandError as exc:
            note(f"refused: {exc}")
            return
        note(f"ran: {o.command}")
        self.pending = o.changed if self.pending is None else self.pending | o.changed

    @rule(data=st.data(), verb=st.sampled_from(["attach", "detach", "attach", "detach", "flush-queue"]))
    def group_command(self, data, verb):
        gid = self.group(data, attached=verb != "attach")
        self.run(lambda: self.m.execute(f"{verb} {gid}"))

    @rule(data=st.data(), page=st.integers(0, 600), pages=st.integers(1, 700), unmap=st.booleans())
    def map_unmap(self, data, page, pages, unmap):
        gid = self.group(data, attached=True)
        verb = "unmap" if unmap else "map"
        self.run(lambda: self.m.execute(f"{verb} {gid} {page * K4:#x} {pages * K4:#x}"))

    @rule(data=st.data(), field=st.sampled_from(["SC", "C", "CM", "SC"]))
    def toggle(self, data, field):
        unit = data.draw(st.sampled_from(sorted(self.m.units)), label="unit")
        self.run(lambda: self.m.execute(f"toggle {unit} {field}"))

    @rule(data=st.data(), write=st.booleans())
    def dma(self, data, write):
        gid = self.group(data)
        self.run(lambda: self.m.execute(f"dma {gid} 0x1000 {'w' if write else 'r'}"))

    @rule(data=st.data())
    def select(self, data):
        line = data.draw(st.sampled_from(["next-unit", "prev-unit", f"select-group {self.group(data)}"]))
        self.run(lambda: self.m.execute(line))

    @rule(line=st.sampled_from(["set reuse prefer-reuse", "set reuse mainline", "set lazy off", "device-del",
                                "device-add", "flush-queue", "attach 99", "map 0 0x1000 0",
                                "set backend iommufd", "set backend type1"]))
    def other(self, line):
        self.run(lambda: self.m.execute(line))

    @precondition(lambda self: self.m.log)
    @rule()
    def undo(self):
        self.run(self.m.undo)

    @precondition(lambda self: self.m.redo_stack)
    @rule()
    def redo(self):
        self.run(self.m.redo)

    @rule(behind=st.booleans())
    def hide(self, behind):
        """A hidden pane: it is given the union of the changes when it shows again."""
        self.behind = behind

    @invariant()
    def the_view_equals_a_fresh_computation(self):
        if self.behind:
            return
        since = self.pending.journal[0] if self.pending is not None else None
        self.rows = rows_of(self.view, self.m, self.pending)
        self.pending = None
        assert graph_data(self.view.g) == graph_data(G.build(self.m))
        assert self.rows == graph_lines(self.m)
        self.journal.update(self.m.journal, since)  # an undo cuts it back: the view goes back with it
        fresh = JournalView()
        fresh.update(self.m.journal)
        assert (self.journal.indices, self.journal.counts, self.journal.decisions, self.journal.records) == (
            fresh.indices, fresh.counts, fresh.decisions, fresh.records)
        assert self.journal.counter_line() == fresh.counter_line()


def _on(scenario: str, devices: int | None = None, lite: bool = False):
    machine = type(f"Views_{scenario}", (Views,), {"SCENARIO": scenario, "DEVICES": devices, "LITE": lite})
    return settings(settings(), max_examples=max(1, settings().max_examples // 3))(machine).TestCase


TestViewsDesktop = _on("desktop")
TestViewsViommu = _on("viommu")
TestViewsViommuNested = _on("viommu-nested")
TestViewsServer = _on("server", devices=64)
TestViewsViommuNestedLite = _on("viommu-nested", lite=True)


# ----------------------------------------------------------------------------- in the TUI


async def test_a_key_that_adds_a_journal_event_is_one_frame():
    # The journal follows its newest event before the first paint: no second frame
    # (it was two: a deferred scroll that moved nothing still repainted).
    from textual.screen import Screen

    from vtdtui.tui.app import VtdApp
    from vtdtui.tui.panes import JournalPane
    from vtdtui.tui.replayer import settle

    app = VtdApp(Machine.from_scenario(None))
    n = [0]
    real = Screen._compositor_refresh

    def counted(self):
        n[0] += 1
        return real(self)

    async with app.run_test(headless=True, size=(160, 50)) as pilot:
        await settle(app, redraw=True)
        await pilot.pause(0.1)
        journal = app.main.query_one(JournalPane)
        frames = []
        Screen._compositor_refresh = counted
        try:
            for key in ["m", "m", "s", "a", "d", "u"] * 2:
                n[0] = 0
                app.inject_key(key, key)
                await settle(app)
                await pilot.pause(0.05)  # time for a second frame, were one asked for
                frames.append(n[0])
                assert journal.cursor == len(journal.rows) - 1 and journal._end_in_view()
        finally:
            Screen._compositor_refresh = real
    assert frames == [1] * len(frames)


async def test_the_graph_pane_updates_its_graph_in_place():
    from vtdtui.tui.app import VtdApp
    from vtdtui.tui.panes import GraphPane
    from vtdtui.tui.replayer import settle

    app = VtdApp(Machine.from_scenario("server", devices=64))
    async with app.run_test(headless=True, size=(160, 50)) as pilot:
        await settle(app, redraw=True)
        pane = app.main.query_one(GraphPane)
        for _ in range(500):  # the networkx graph replaces the start's Lite one once it settled
            if pane.view.networkx:
                break
            await pilot.pause(0.01)
        g = pane.view.g
        assert pane.view.networkx
        for key in ["d", "s", "a", "m"]:
            app.inject_key(key, key)
            await settle(app, redraw=True)
        assert pane.view.g is g
        assert graph_data(g) == graph_data(G.build(app.machine))
        assert list(pane.rows) == graph_lines(app.machine)


def test_the_app_imports_no_networkx_before_its_first_frame():
    import subprocess

    code = ("import sys; import vtdtui.tui.app, vtdtui.cli; "
            "print('networkx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("changes", [None, EVERYTHING])
def test_graph_view_first_call_builds_whatever_it_is_told(changes):
    m = Machine.from_scenario("viommu")
    assert rows_of(GraphView(), m, changes) == graph_lines(m)
