"""SVG snapshots of the main screen: the talk layout (160x50) and a laptop terminal
(80x24), on the default and viommu scenarios, after a short story of commands.

Update after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`
and look at the SVGs under tests/__snapshots__/ before committing them."""

from __future__ import annotations

import pytest

from vtdtui.machine import Machine
from vtdtui.tui.app import VtdApp

STORIES = {
    # The integrated GPU and the NIC attached, mapped, one DMA each.
    "desktop": ("attach 0", "map 0 0x100000 64K rw", "dma 0 0x100000", "select-group 5", "attach 5",
                "map 5 0x200000 2M rw", "dma 5 0x200000 w"),
    # The assigned NIC mapped by the guest, shadowed by QEMU.
    "viommu": ("select-group 3", "attach 3", "map 3 0x100000 16K rw", "dma 3 0x100000"),
}


def app_for(scenario: str) -> VtdApp:
    m = Machine.from_scenario(scenario)
    for line in STORIES[scenario]:
        m.execute(line)
    return VtdApp(m)


@pytest.mark.parametrize("scenario", sorted(STORIES))
@pytest.mark.parametrize("size", [(160, 50), (80, 24)], ids=["160x50", "80x24"])
def test_main_screen(snap_compare, scenario, size):
    assert snap_compare(app_for(scenario), terminal_size=size)


def test_small_terminal_on_the_journal(snap_compare):
    assert snap_compare(app_for("desktop"), terminal_size=(80, 24), press=["7"])


# Themes and the 120x40 talk layout.  A theme changes every pane (tests/test_tui_themes.py
# checks that no old dark colour is left under a light one); these show it.
@pytest.mark.parametrize("theme", ["textual-light", "vtdtui-projector"])
def test_light_themes(snap_compare, theme):
    app = app_for("desktop")
    app.theme = theme
    assert snap_compare(app, terminal_size=(160, 50))


def test_talk_layout_at_120x40(snap_compare):
    assert snap_compare(app_for("viommu"), terminal_size=(120, 40))


def test_what_if_badge(snap_compare):
    app = app_for("desktop")
    app.machine.execute("set skip-clflush on")
    assert snap_compare(app, terminal_size=(120, 40))
