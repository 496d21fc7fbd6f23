"""The key table (tui/bindings.py): one row per key behind the bindings, the footer,
help and palette; every binding has an id, so that a keymap can move it."""

from __future__ import annotations

from tuikit import started
from vtdtui.tui.app import VtdApp
from vtdtui.tui.bindings import ACTIONS, BINDINGS, help_rows


def test_every_binding_has_its_own_id():
    ids = [b.id for b in BINDINGS]
    assert all(ids) and len(set(ids)) == len(ids), ids
    # The app's bindings are the table's: nothing bound that help and palette do not list.
    assert VtdApp.BINDINGS is BINDINGS
    listed = {a.action for a in ACTIONS if a.action}
    assert {b.action for b in BINDINGS if not b.action.startswith("pane_to(")} == listed


def test_help_lists_every_row_as_typed():
    rows = dict(help_rows())
    assert len(rows) == len(ACTIONS)
    assert rows["?"].startswith("Help") and rows[":"].startswith("Run any machine command")


async def test_a_keymap_moves_a_key_by_its_id():
    async with started() as (app, pilot):
        app.set_keymap({"toggle-cm": "M"})
        await pilot.press("m")
        assert app.machine.log == []
        await pilot.press("M")
        assert app.machine.log == ["toggle dmar0 CM"]
