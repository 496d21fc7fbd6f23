"""One frame per key (issue 16): what made keys take two to four frames stays gone.

Counted, not timed: bench/frametrace.py showed the extra frames came from (1) a pane
whose row count crossed its height, so that Textual's ScrollBar widget appeared or
went, which lays out the whole screen, and the ScrollBar widgets repaint from their
own tasks after the screen's frame; (2) a focus move whose layout and context line
followed in on_descendant_focus, after the first frame.  Panes now draw their own
scrollbar and repaint only the lines that changed, so these tests also check that a
partial repaint shows what a full one shows.
"""

from __future__ import annotations

import pytest
from textual.screen import Screen

from vtdtui.machine import Machine
from vtdtui.tui.app import VtdApp
from vtdtui.tui.panes import IoptePane, JournalPane, Pane

SIZE = (160, 50)


def screen_lines(app: VtdApp) -> list[str]:
    """The main screen as drawn (text and styles of every cell)."""
    comp = app.screen._compositor
    return ["".join(f"{s.text}\x00{s.style}\x01" for s in strip) for strip in comp.render_strips()]


@pytest.fixture
def layouts(monkeypatch):
    """Layout passes of the main screen, counted."""
    count = {"n": 0}
    orig = Screen._refresh_layout

    def counting(self, size=None, scroll=False):
        if type(self).__name__ == "MainScreen":
            count["n"] += 1
        return orig(self, size, scroll)

    monkeypatch.setattr(Screen, "_refresh_layout", counting)
    return count


async def test_rows_crossing_the_pane_height_need_no_layout(layouts) -> None:
    app = VtdApp(Machine.from_scenario(None))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("g", *"5", "enter", "a")
        await pilot.pause()
        ioptes = app.main.query_one(IoptePane)
        before_rows = len(ioptes.rows)
        before = layouts["n"]
        await pilot.press("n", *"0x40000000 64K rw", "enter")
        await pilot.pause()
        assert "mapped" in app.last_status or "map" in app.last_status, app.last_status
        height = ioptes.scrollable_content_region.height
        # The map made the IOPTE pane's rows overflow it: its scrollbar appeared ...
        assert before_rows + len(ioptes.header) <= height < len(ioptes.rows) + len(ioptes.header)
        # ... drawn by the pane, without a layout of the screen (Textual's ScrollBar
        # widget would have needed one, and a second frame for its own repaint).
        assert layouts["n"] == before
        assert ioptes.has_bar and ioptes.text_width == ioptes.scrollable_content_region.width - 1
        assert not ioptes.show_vertical_scrollbar
        await pilot.press("u")
        await pilot.pause()
        assert not ioptes.has_bar
        assert layouts["n"] == before


async def test_tab_moves_focus_and_layout_in_the_key() -> None:
    app = VtdApp(Machine.from_scenario(None))
    async with app.run_test(size=(90, 30)) as pilot:  # one pane at a time: tab shows another
        await pilot.pause()
        main = app.main
        first = main.current_pane()
        main.next_pane(1)
        # Before any message is handled: the focus and the layout moved already.
        assert main.focused is main.panes[1] and main.panes[1] is not first
        assert main.panes[1].has_class("-shown") and not first.has_class("-shown")
        await pilot.pause()
        assert main.current_pane() is main.panes[1]


@pytest.mark.parametrize("keys", [
    ["m", "c", "s", "]", "["],
    ["7", "up", "up", "down", "pageup", "end"],
    ["g", "5", "enter", "a", "n", *"0x40000000 64K rw", "enter", "5", "right", "down", "space", "u", "ctrl+r", "d"],
])
async def test_partial_repaint_shows_what_a_full_one_does(keys) -> None:
    app = VtdApp(Machine.from_scenario(None))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for k in keys:
            await pilot.press(k)
            await pilot.pause()
            partial = screen_lines(app)
            for p in app.main.query(Pane):
                p.refresh()
            await pilot.pause()
            assert screen_lines(app) == partial, f"a pane kept a stale line after {k!r}"


async def test_a_toggle_repaints_only_changed_lines(monkeypatch) -> None:
    app = VtdApp(Machine.from_scenario(None))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        regs = app.main.panes[0]
        calls: list[tuple] = []
        orig = type(regs).refresh

        def spy(self, *regions, **kw):
            if self is regs:
                calls.append(regions)
            return orig(self, *regions, **kw)

        monkeypatch.setattr(type(regs), "refresh", spy)
        await pilot.press("c")  # ECAP.C of dmar0: one badge and one field change
        await pilot.pause()
        assert calls and all(regions for regions in calls), "the registers pane was repainted whole"
        assert sum(len(r) for r in calls) < regs.scrollable_content_region.height // 2
        assert app.main.query_one(JournalPane).seen == app.version
