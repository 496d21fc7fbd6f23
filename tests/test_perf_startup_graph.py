"""Startup without networkx (issue 16): the graph pane's first rows come from a
graph.Lite (plain dicts, filled by the same code as the networkx graph), and the
networkx graph takes its place once the start has settled (GraphPane._adopt).

The rows must not tell the two apart: for every built-in scenario, and after random
commands (undo and redo included), the Lite graph kept up to date in place holds the
networkx graph's nodes and edges, the rows drawn from it are the networkx path's, and
a view that adopts networkx at any step goes on with the same rows.  In the TUI, the
adoption repaints nothing.  (tests/test_startup_imports.py: the start imports no
networkx; bench/terminal.py times it.)
"""

from __future__ import annotations

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from vtdtui import graph as G
from vtdtui.machine import BUILTIN, CommandError, Machine
from vtdtui.views.graph import GraphView, graph_lines

K4 = 0x1000


def graph_data(g) -> tuple[dict, dict]:
    return dict(g.nodes(data=True)), {(u, v): d for u, v, d in g.edges(data=True)}


def lines(m: Machine) -> list[str]:
    """Commands worth trying on `m`: on its groups, units, switches; undo and redo."""
    out = ["undo", "redo", "set reuse prefer-reuse", "set reuse mainline", "set lazy off", "device-del",
           "device-add", "flush-queue", "set backend iommufd", "set backend type1", "next-unit"]
    for gid in sorted(m.groups)[:6]:
        out += [f"attach {gid}", f"detach {gid}", f"map {gid} 0x{K4:x} 64K", f"unmap {gid} 0 2M",
                f"dma {gid} 0x1000 w", f"select-group {gid}"]
    for unit in sorted(m.units):
        out += [f"toggle {unit} SC", f"toggle {unit} C"]
    return out


def run(m: Machine, line: str):
    try:
        if line == "undo":
            return m.undo() if m.log else None
        if line == "redo":
            return m.redo() if m.redo_stack else None
        return m.execute(line)
    except CommandError as exc:
        note(f"refused {line}: {exc}")
        return None


@pytest.mark.parametrize("scenario", BUILTIN)
def test_the_lite_graph_is_the_networkx_graph_for_every_scenario(scenario):
    m = Machine.from_scenario(scenario)
    lite, nx = G.build(m, lite=True), G.build(m)
    assert isinstance(lite, G.Lite) and not isinstance(nx, G.Lite)
    assert graph_data(lite) == graph_data(nx)
    assert list(lite) == list(nx)  # node order too: the rows' order follows it
    assert graph_lines(m, lite) == graph_lines(m)
    view = GraphView(lite=True)
    assert list(view.lines(m)) == graph_lines(m) and not view.networkx
    # The graph module's questions answer the same from either.
    assert G.devices_sharing_domain(lite) == G.devices_sharing_domain(nx)
    assert G.noncoherent_domains(lite) == G.noncoherent_domains(nx)


@pytest.mark.parametrize("scenario", BUILTIN)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_rows_before_and_after_networkx_are_equal_after_random_commands(scenario, data):
    m = Machine.from_scenario(scenario)
    view = GraphView(lite=True)
    rows = list(view.lines(m, None))
    vocabulary = lines(m)
    steps = data.draw(st.lists(st.sampled_from(vocabulary), min_size=1, max_size=14), label="commands")
    adopt_at = data.draw(st.integers(0, len(steps)), label="adopt at")
    pending = None
    for i, line in enumerate(steps):
        if i == adopt_at:
            if data.draw(st.booleans(), label="shown before the adoption"):
                rows, pending = list(view.lines(m, pending)), None
            view.adopt_networkx(m)  # as GraphPane._adopt: then the rows with what is pending
            assert view.networkx
            after = list(view.lines(m, pending))
            assert after == graph_lines(m)
            if pending is None:
                assert after == rows  # what the pane showed: nothing moved
            pending = None
        o = run(m, line)
        if o is not None:
            note(f"ran {o.command}")
            pending = o.changed if pending is None else pending | o.changed
        if data.draw(st.booleans(), label="shown"):  # a hidden pane is given the union later
            rows = list(view.lines(m, pending))
            pending = None
            assert rows == graph_lines(m), line
            assert graph_data(view.g) == graph_data(G.build(m)), line
            assert view.networkx == (adopt_at <= i)
    view.adopt_networkx(m)
    assert list(view.lines(m, pending)) == graph_lines(m)


def test_adopting_twice_keeps_the_networkx_graph():
    m = Machine.from_scenario("desktop")
    view = GraphView(lite=True)
    view.lines(m)
    view.adopt_networkx(m)
    g = view.g
    view.adopt_networkx(m)
    assert view.g is g and view.networkx
    assert not GraphView(lite=True).networkx  # nothing built yet: nothing to adopt either


@pytest.mark.asyncio
async def test_the_pane_shows_the_same_rows_and_repaints_nothing_when_networkx_arrives(monkeypatch):
    from textual.widget import Widget

    from vtdtui.tui.app import VtdApp
    from vtdtui.tui.panes import GraphPane

    repaints: list[str] = []
    orig_refresh = Widget.refresh
    real_adopt = GraphPane._adopt
    seen: dict = {}

    def refresh(self, *regions, **kwargs):
        if isinstance(self, GraphPane) and seen.get("adopting"):
            repaints.append(f"{regions or 'whole'}")
        return orig_refresh(self, *regions, **kwargs)

    def adopt(self):
        seen["before"] = list(self.rows)
        seen["was_lite"] = self.view.built and not self.view.networkx
        seen["adopting"] = True
        real_adopt(self)
        seen["adopting"] = False
        seen["after"] = list(self.rows)

    monkeypatch.setattr(Widget, "refresh", refresh)
    monkeypatch.setattr(GraphPane, "_adopt", adopt)
    app = VtdApp(Machine.from_scenario("viommu"))
    async with app.run_test(headless=True, size=(160, 50)) as pilot:
        pane = app.main.query_one(GraphPane)
        for _ in range(500):  # the adoption waits for the start to settle (a few polls)
            if pane.view.networkx:
                break
            await pilot.pause(0.01)
        assert pane.view.networkx and seen["was_lite"]
        assert seen["before"] == seen["after"] == graph_lines(app.machine)
        assert repaints == []
