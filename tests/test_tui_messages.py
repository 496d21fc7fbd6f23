"""Panes and the palette ask the app for things through messages (tui/messages.py):
each request arrives and does what the key did when they called the app directly."""

from __future__ import annotations

from textual.command import CommandPalette

from tuikit import started, status
from vtdtui.tui.panes import IoptePane, TablesPane

ATTACHED_5 = ("select-group 5", "attach 5", "map 5 0x100000 16K rw")


async def test_backspace_in_drilled_down_page_tables_goes_back_to_the_tables():
    async with started(commands=ATTACHED_5) as (app, pilot):
        tables, ioptes = app.main.query_one(TablesPane), app.main.query_one(IoptePane)
        await pilot.press("2")
        tables.move_cursor(tables.keys.index(("sid", 0x0200)))
        await pilot.press("enter")  # OpenPageTables
        await pilot.pause()
        assert app.focused is ioptes and ioptes.pinned == ("dmar1", 0x0200)
        assert status(app).startswith("page tables of 02:00.0 on dmar1")
        await pilot.press("backspace")  # BackToTables
        await pilot.pause()
        assert app.focused is tables and ioptes.pinned is None
        assert status(app).startswith("back to the tables")


async def test_enter_on_a_row_with_nothing_to_open_says_so():
    async with started(commands=ATTACHED_5) as (app, pilot):
        tables = app.main.query_one(TablesPane)
        await pilot.press("2")
        tables.move_cursor(tables.keys.index(None))  # the blank row between the tables
        await pilot.press("enter")  # Say, as an error
        await pilot.pause()
        assert status(app).startswith("nothing to open on this row")
        assert app.main.query_one("#status").has_class("-error")


async def test_the_palette_runs_a_keys_action():
    async with started() as (app, pilot):
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"Toggle CAP.CM")
        await pilot.pause(0.3)
        await pilot.press("enter")  # RunAction("toggle('CM')")
        await pilot.pause(0.3)
        assert app.machine.log == ["toggle dmar0 CM"]
