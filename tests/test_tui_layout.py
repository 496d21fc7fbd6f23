"""Any width: the 120x40 talk layout (five panes; the pane last chosen in each column
gets the room), the one-pane layout at 80x24, a status line that is never cut, and
every shipped fixture at 120x40."""

from __future__ import annotations

from pathlib import Path

import pytest

from vtdtui.cli import main
from vtdtui.tui.mainscreen import TALK, WIDE
from vtdtui.tui.panes import CachesPane, GraphPane, IoptePane, JournalPane, RegistersPane, TablesPane, VmPane

from tuikit import started

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted((ROOT / "fixtures").glob("*.keys"))
PROJECTOR_SIZE = (120, 40)


def on_screen(app) -> list[type]:
    return [type(p) for p in app.panes if p.region.height > 0 and p.region.width > 0]


def pane(app, cls):
    return app.main.query_one(cls)


async def test_120x40_shows_the_story_panes_side_by_side():
    assert TALK[0] <= PROJECTOR_SIZE[0] < WIDE[0]
    async with started(size=PROJECTOR_SIZE) as (app, pilot):
        assert app.main.has_class("-talk") and not app.main.has_class("-single")
        assert set(on_screen(app)) == {RegistersPane, TablesPane, VmPane, IoptePane, JournalPane}
        regs, tables, vm, slot, journal = (pane(app, c) for c in (RegistersPane, TablesPane, VmPane, IoptePane,
                                                                  JournalPane))
        # Registers over the VM pane on the left; the tables over the slot on the right.
        assert regs.region.x == vm.region.x < tables.region.x == slot.region.x
        assert regs.region.y < vm.region.y and tables.region.y < slot.region.y
        assert journal.region.width >= 110 and journal.region.y > vm.region.y
        assert vm.region.height > regs.region.height and tables.region.height > slot.region.height
        assert all(p.region.width >= 50 for p in (regs, tables, vm, slot))
        assert "3 caches · 5 ioptes · 6 graph" in str(slot.border_subtitle)


async def test_the_talk_layout_gives_the_chosen_pane_the_room():
    async with started(size=PROJECTOR_SIZE) as (app, pilot):
        await pilot.press("1")
        await pilot.pause()
        regs, vm = pane(app, RegistersPane), pane(app, VmPane)
        assert regs.region.height > vm.region.height and regs.region.x == vm.region.x
        await pilot.press("3")  # the caches take the slot, and the room on the right
        await pilot.pause()
        caches, tables = pane(app, CachesPane), pane(app, TablesPane)
        assert set(on_screen(app)) == {RegistersPane, TablesPane, VmPane, CachesPane, JournalPane}
        assert caches.region.height > tables.region.height and caches.region.x == tables.region.x
        assert regs.region.x == vm.region.x  # the columns stay put
        await pilot.press("6")
        await pilot.pause()
        assert GraphPane in on_screen(app) and CachesPane not in on_screen(app)
        await pilot.press("4", "2")
        await pilot.pause()
        assert vm.region.height > regs.region.height and tables.region.height > pane(app, GraphPane).region.height


async def test_resize_walks_through_the_three_layouts():
    async with started() as (app, pilot):
        assert not app.main.has_class("-talk") and len(on_screen(app)) == 7
        await pilot.resize_terminal(*PROJECTOR_SIZE)
        await pilot.pause()
        assert app.main.has_class("-talk") and len(on_screen(app)) == 5
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert app.main.has_class("-single") and not app.main.has_class("-talk") and len(on_screen(app)) == 1
        await pilot.resize_terminal(160, 50)
        await pilot.pause()
        assert len(on_screen(app)) == 7
        # Back in the order of PANES: caches top right, the VM pane below the registers.
        assert pane(app, VmPane).region.x == pane(app, RegistersPane).region.x
        assert pane(app, CachesPane).region.y == pane(app, RegistersPane).region.y


async def test_the_status_line_is_never_cut():
    async with started(size=(80, 24)) as (app, pilot):
        long = "word " * 40 + "END"
        app.say(long)
        await pilot.pause()
        status = app.main.query_one("#status")
        assert status.region.height >= 3
        rows = [line.rstrip() for line in app.export_screenshot().splitlines()]
        assert rows  # drawn
        from vtdtui.tui.replayer import screen_lines

        text = " ".join(screen_lines(app))
        assert "END" in text
        app.say("short")
        await pilot.pause()
        assert app.main.query_one("#status").region.height == 1


async def test_the_context_line_wraps_at_80_columns():
    async with started(size=(80, 24), commands=("select-group 5", "attach 5")) as (app, pilot):
        from vtdtui.tui.replayer import screen_lines

        screen = screen_lines(app)
        assert "Ethernet" in "".join(screen[:2]) and "u undoes" in "".join(screen[:2])
        assert "tab 1-7" in "".join(screen) or "1-7 switch" in "".join(screen)


def test_a_wrapped_status_line_satisfies_an_expect(tmp_path, capsys):
    fx = tmp_path / "wrap.keys"
    fx.write_text("size 80x24\nkeys g\ntype 5\nkeys enter a t\ntype 0x200000\nkeys enter\n"
                  "expect DMA read from 02:00.0 at 0x200000 faulted: reason 0x06, PTE Read access is not set\n")
    assert len("  DMA read from 02:00.0 at 0x200000 faulted: reason 0x06, PTE Read access is not set") > 80
    assert main(["replay", str(fx), "--headless"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_shipped_fixture_replays_at_120x40(path, capsys):
    rc = main(["replay", str(path), "--headless", "--size", "120x40"])
    assert rc == 0, capsys.readouterr().err
