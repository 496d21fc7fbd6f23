"""Startup (issue 16): what the default `vtdtui` start does before its first frame.

Counted, not timed (bench/terminal.py times it).  The app module and the default
scenario's machine load none of the modules only other scenarios, other screens or
later keys use; the panes hold their rows before the first layout, so the first frame
shows them; and that start costs no second paint of the panes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from textual.widget import Widget

from vtdtui.machine import Machine
from vtdtui.tui.app import VtdApp
from vtdtui.tui.panes import GraphPane, Pane

# Loaded when first needed, never by the default start (`import vtdtui.tui.app` and
# the default machine): networkx (the graph pane draws its first rows from a graph.Lite
# and builds the networkx graph once the start has settled), the help screen, the
# replayer and the SVG writer.
DEFERRED_TUI = ["networkx", "vtdtui.tui.help", "vtdtui.tui.replayer", "vtdtui.tui.svg"]
# Never by the machine's own import and the default machine (the core commands): iommufd
# and QEMU's x-flts device load with the scenarios that build them.  (The TUI still
# loads them through views/status.py's import of QemuAccel.)
DEFERRED_CORE = ["networkx", "vtdtui.sw.iommufd", "vtdtui.sw.qemu_accel", "vtdtui.kernel"]

PROBE = r"""
import importlib, json, sys
importlib.import_module(sys.argv[1])
from vtdtui.machine import Machine
Machine.from_scenario(sys.argv[2] if len(sys.argv) > 2 else None)
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("vtdtui", "networkx")))))
"""


def loaded(module: str, *scenario: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, module, *scenario], capture_output=True, text=True,
                         check=True, timeout=60)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_default_start_loads_nothing_deferred() -> None:
    mods = loaded("vtdtui.tui.app")
    assert {"vtdtui.tui.app", "vtdtui.machine.machine", "vtdtui.sw.linux"} <= mods
    assert sorted(set(DEFERRED_TUI) & mods) == []
    assert not any(m.startswith("networkx.") for m in mods)


def test_the_default_machine_loads_nothing_deferred() -> None:
    mods = loaded("vtdtui.machine")
    assert sorted(set(DEFERRED_CORE) & mods) == []
    assert not any(m.startswith(("networkx.", "vtdtui.kernel.")) for m in mods)


def test_a_scenario_that_needs_iommufd_loads_it() -> None:
    # The probe can fail: the modules the machine imports lazily load with the
    # scenario that builds their objects.
    mods = loaded("vtdtui.machine", "viommu-nested")
    assert {"vtdtui.sw.iommufd", "vtdtui.sw.qemu_accel"} <= mods


@pytest.mark.asyncio
async def test_panes_have_rows_at_the_first_layout_and_are_painted_once(monkeypatch) -> None:
    rows_at_first_resize: dict[str, int] = {}
    repaints_after: list[str] = []
    orig_resize, orig_refresh = Pane.on_resize, Widget.refresh

    def on_resize(self) -> None:
        rows_at_first_resize.setdefault(self.id, len(self.rows))
        orig_resize(self)

    def refresh(self, *regions, **kwargs):
        # A whole-pane repaint after the pane was laid out (and so painted whole);
        # the graph pane's first build, after the first frame, is one by design.
        if isinstance(self, Pane) and not isinstance(self, GraphPane) and self.id in rows_at_first_resize \
                and not regions:
            repaints_after.append(self.id)
        return orig_refresh(self, *regions, **kwargs)

    monkeypatch.setattr(Pane, "on_resize", on_resize)
    monkeypatch.setattr(Widget, "refresh", refresh)
    app = VtdApp(Machine.from_scenario(None))
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        panes = app.main.panes
        assert len(panes) == 7
        assert {p.id: rows_at_first_resize.get(p.id, 0) > 0 for p in panes} == {p.id: True for p in panes}
        assert repaints_after == []


# The app run headless until the graph pane builds its networkx graph: what was imported
# and drawn by then (the first frames, from the Lite graph), and after.
APP_PROBE = r"""
import asyncio, json, sys
from textual.screen import Screen
from vtdtui.machine import Machine
from vtdtui.tui.app import VtdApp
from vtdtui.tui.panes import GraphPane

frames, seen = [0], {}
real_refresh, real_adopt = Screen._compositor_refresh, GraphPane._adopt

def counted(self):
    frames[0] += 1
    return real_refresh(self)

def adopt(self):
    seen.update(frames=frames[0], networkx="networkx" in sys.modules, rows=len(self.rows),
                lite=self.view.built and not self.view.networkx)
    real_adopt(self)

Screen._compositor_refresh, GraphPane._adopt = counted, adopt

async def main():
    app = VtdApp(Machine.from_scenario(None))
    async with app.run_test(headless=True, size=(160, 50)) as pilot:
        pane = app.main.query_one(GraphPane)
        for _ in range(1000):
            if pane.view.networkx:
                break
            await pilot.pause(0.01)
        seen["after"] = [pane.view.networkx, "networkx" in sys.modules]

asyncio.run(main())
print(json.dumps(seen))
"""


def test_the_start_imports_no_networkx_and_the_graph_pane_builds_it_after():
    out = subprocess.run([sys.executable, "-c", APP_PROBE], capture_output=True, text=True, check=True, timeout=120)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    # The start's frames were drawn, the graph pane's rows among them, from the Lite
    # graph, with no networkx loaded; then the pane built the networkx graph.
    assert seen["frames"] >= 1 and seen["rows"] > 1 and seen["lite"] is True
    assert seen["networkx"] is False
    assert seen["after"] == [True, True]
