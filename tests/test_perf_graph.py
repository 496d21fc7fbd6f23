"""The graph pane at any size (issue 16): an attach or a detach lays out only the
domains it changed and splices their rows into the kept kernel part (no rebuild of
the pane's body from every domain's block), the selected group's row is found by
bisection rather than a walk of every row, and the graph, built after the app froze
the machine, is put out of the cyclic collector's sight too.  What the rows are is
tests/test_incremental.py's property (incremental rows equal a fresh build after
random sessions); here, what they cost, counted rather than timed."""

from __future__ import annotations

import gc

import pytest

from vtdtui import graph as G
from vtdtui.machine import Machine
from vtdtui.views import graph as views_graph
from vtdtui.views.graph import GraphView, graph_lines


@pytest.fixture(scope="module")
def server() -> Machine:
    return Machine.from_scenario("server", devices=512)


def _laid_out(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = views_graph._block

    def counted(g, did, last):
        calls.append(did)
        return real(g, did, last)

    monkeypatch.setattr(views_graph, "_block", counted)
    return calls


def test_an_attach_or_detach_splices_only_its_domains(server, monkeypatch):
    m = server
    view = GraphView()
    list(view.lines(m, None))
    kernel = view._kernel
    calls = _laid_out(monkeypatch)
    monkeypatch.setattr(GraphView, "_flatten", lambda self: pytest.fail("the whole body laid out again"))
    groups = sorted(m.groups)
    last = max(groups, key=lambda gid: m.domain_of(m.groups[gid]).id)  # the last kernel block's group
    # A middle group out and back in (its new domain is the last block: the old last one
    # is laid out again without └─), the last block's group out (the one before it
    # becomes last), a first group, and undo of each (domains come back in the middle).
    steps = [f"detach {groups[200]}", f"attach {groups[200]}", f"detach {last}", f"detach {groups[0]}",
             f"attach {groups[0]}", f"select-group {groups[0]}", "undo", "undo", "undo", "undo", "undo"]
    try:
        for line in steps:
            calls.clear()
            o = m.undo() if line == "undo" else m.execute(line)
            rows = list(view.lines(m, o.changed))
            assert len(calls) <= 2 * len(o.changed.domains), (line, calls)
            assert view._kernel is kernel  # spliced in place
            assert view._owner == sorted(view._owner)
            assert rows == graph_lines(m), line
    finally:
        while m.log:
            m.undo()


def test_the_selected_row_is_found_without_a_walk_of_every_row(server, monkeypatch):
    m = server
    view = GraphView()
    walked: list[int] = []
    real = views_graph._group_rows
    monkeypatch.setattr(views_graph, "_group_rows", lambda body: walked.append(len(body)) or real(body))
    for gid in sorted(m.groups)[::97]:
        o = m.execute(f"select-group {gid}")
        rows = view.lines(m, o.changed)
        marked = [i for i in range(len(rows)) if len(rows[i]) > 1 and rows[i][1][0].startswith("▶")]
        assert marked == [rows.mark] and rows[rows.mark][1][0] == f"▶group {gid}"
    assert all(n <= len(rows.head) for n in walked)  # at most the VM's rows, never the kernel's
    while m.log:
        m.undo()


@pytest.mark.parametrize("scenario, lines", [
    ("desktop", ["set backend iommufd", "attach 5", "attach 0", "detach 5", "detach 0", "set backend type1"]),
    ("desktop", ["attach 0", "attach 5", "attach 3"]),
    ("viommu-nested", ["attach 3", "detach 3", "attach 3"]),
    ("viommu", ["attach 3", "map 3 0x100000 16K"]),
])
def test_claimed_domains_from_the_holders_equal_a_walk_of_every_node(scenario, lines):
    m = Machine.from_scenario(scenario)
    g = G.build(m)
    assert views_graph._claimed(g) == views_graph.claimed_domains(g)
    for line in lines:
        G.update(g, m, m.execute(line).changed)
        assert views_graph._claimed(g) == views_graph.claimed_domains(g), line


async def test_the_graph_pane_freezes_the_graph_it_built():
    # Built after VtdApp.start() froze the machine, the graph and its rows were what a
    # full collection walked: 55 ms in the middle of a key every few dozen keys at
    # 7,680 devices.  Frozen objects are in no generation gc.get_objects() lists.
    from vtdtui.tui.app import VtdApp
    from vtdtui.tui.panes import GraphPane
    from vtdtui.tui.replayer import settle

    app = VtdApp(Machine.from_scenario("server", devices=64))
    async with app.run_test(headless=True, size=(160, 50)) as pilot:
        await settle(app, redraw=True)
        await pilot.pause(0.05)
        pane = app.main.query_one(GraphPane)
        assert pane.view.built
        tracked = {id(o) for o in gc.get_objects()}
        assert id(pane.view.g._adj) not in tracked and id(pane.view._kernel) not in tracked
