"""The journal in the TUI, readable: rows reason first, Enter opens an event whole
and jumps to the entries it touched, W wraps, F / N / B search, e exports, y copies."""

from __future__ import annotations

import json

from tuikit import SMALL, hint, prompt, started, status
from vtdtui.tui.bindings import help_rows
from vtdtui.tui.detail import DetailBody, EventDetailScreen
from vtdtui.tui.help import HelpScreen
from vtdtui.tui.messages import RunAction
from vtdtui.tui.palette import VtdCommands
from vtdtui.tui.panes import CachesPane, IoptePane, JournalPane, TablesPane
from vtdtui.tui.prompt import PromptScreen
from vtdtui.views.journal import event_text, row_line
from vtdtui.views.style import text_of

MAPPED_5 = ("attach 5", "map 5 0x100000 64K rw")
SID5 = 0x0200


def _row_of(app, pred) -> int:
    """The journal row (in the filtered view) of the last event matching `pred`."""
    j = app.main.query_one(JournalPane)
    events = app.machine.journal.events
    return max(r for r, i in enumerate(j.view.indices) if pred(events[i]))


def _touches(kind: str):
    return lambda e: any(t.kind == kind for t in e.entries)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _shown(pane) -> str:
    """What the pane draws now, its lines joined (wrapped lines read as one text)."""
    return _flat(" ".join(pane.render_line(y).text for y in range(pane.scrollable_content_region.height)))


async def test_journal_rows_put_the_reason_first_and_say_a_repeated_rule_once():
    async with started(commands=MAPPED_5) as (app, pilot):
        j = app.main.query_one(JournalPane)
        rows = [text_of(j.rows[r]) for r in range(len(j.rows))]
        skipped = next(r for r in rows if "map-np2p" in r)
        assert skipped.split()[1:3] == ["skipped", "CM=0:"]  # mark, then the reason
        assert not any("clflush clflush" in r for r in rows)
        assert j.rows[-1] == row_line(app.machine.journal.events[-1])


async def test_enter_opens_the_whole_event_and_its_number_opens_the_context_entry():
    async with started(commands=("attach 5",)) as (app, pilot):
        j = app.main.query_one(JournalPane)
        await pilot.press("7")
        j.move_cursor(_row_of(app, _touches("context")))
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, EventDetailScreen)
        body = screen.query_one(DetailBody)
        text = "\n".join(text_of(line) for line in body.rows)
        assert "reason    ECAP.C=0: page walks read memory, not the CPU cache" in text
        assert "decided   __iommu_flush_cache()" in text and "[1]       context entry 02:00.0 @ " in text
        assert "1-9" in "\n".join(line.text for line in screen._compositor.render_strips())  # the footer
        (target,) = screen.targets
        await pilot.press("1")
        await pilot.pause()
        tables = app.main.query_one(TablesPane)
        assert app.screen is app.main and app.focused is tables
        assert tables.keys[tables.cursor] == ("sid", SID5) and tables.shown_bus() == 2
        assert status(app) == f"[1] context entry 02:00.0 @ {target.addr:#x} on dmar1"


async def test_a_number_opens_the_page_table_node_c_the_caches_and_escape_nothing():
    async with started(commands=MAPPED_5) as (app, pilot):
        index = j_index = app.main.query_one(JournalPane).view.indices[_row_of(app, _touches("pte"))]
        app.open_event(index)
        await pilot.pause()
        (target,) = app.screen.targets
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.main and not isinstance(app.focused, IoptePane)
        app.open_event(j_index)
        await pilot.pause()
        await pilot.press("1")
        await pilot.pause()
        ioptes = app.main.query_one(IoptePane)
        assert app.focused is ioptes and ioptes.pinned == ("dmar1", SID5)
        assert ioptes.prow[ioptes.cursor].key == target.key == (1, 0x100000)
        app.open_event(j_index)
        await pilot.pause()
        await pilot.press("5")  # no entry 5: said in the screen, which stays
        await pilot.pause()
        assert isinstance(app.screen, EventDetailScreen)
        assert "no entry [5]" in str(app.screen.query_one("#detail-hint").render())
        await pilot.press("c")
        await pilot.pause()
        assert app.screen is app.main and isinstance(app.focused, CachesPane)


async def test_wrap_shows_every_event_whole_at_80_columns_and_the_cursor_moves_by_event():
    async with started(size=SMALL, commands=MAPPED_5) as (app, pilot):
        j = app.main.query_one(JournalPane)
        await pilot.press("7")
        await pilot.pause()
        events = app.machine.journal.events
        whole = _flat(text_of(row_line(events[j.view.indices[-2]])))
        assert whole not in _shown(j)  # one line each: cut at the pane's edge
        await pilot.press("W")
        await pilot.pause()
        assert j.wrap and whole in _shown(j)
        last = j.cursor
        await pilot.press("up")
        await pilot.pause()
        assert j.cursor == last - 1 and whole in _shown(j)
        await pilot.press("W")
        await pilot.pause()
        assert not j.wrap and whole not in _shown(j)


async def test_search_finds_the_next_match_n_and_b_step_and_a_bad_regex_is_refused_inline():
    async with started(commands=MAPPED_5 + ("unmap 5 0x100000 64K",)) as (app, pilot):
        j = app.main.query_one(JournalPane)
        events = app.machine.journal.events
        matches = [r for r, i in enumerate(j.view.indices) if "iotlb" in event_text(events[i]).lower()]
        assert len(matches) >= 2
        j.move_cursor(0)
        await prompt(pilot, "F", "IOTLB")  # any case
        assert app.screen is app.main and j.cursor == matches[0]
        assert status(app).startswith(f"match 1 of {len(matches)}")
        await pilot.press("N")
        assert j.cursor == matches[1]
        await pilot.press("B", "B")
        assert j.cursor == matches[-1] and "from the bottom again" in status(app)
        await prompt(pilot, "F", "/a[/")
        assert isinstance(app.screen, PromptScreen) and "bad regular expression" in hint(app)
        await pilot.press("escape")
        await prompt(pilot, "F", "zzz")
        assert isinstance(app.screen, PromptScreen) and "no event matches 'zzz'" in hint(app)


async def test_export_writes_the_shown_events_as_text_and_json_and_a_failure_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    async with started(commands=MAPPED_5) as (app, pilot):
        j = app.main.query_one(JournalPane)
        await prompt(pilot, "slash", "op=iotlb")
        await pilot.press("e")
        (txt,), (js,) = tmp_path.glob("vtdtui_journal_*.txt"), tmp_path.glob("vtdtui_journal_*.json")
        assert txt.stem == js.stem and str(txt) in status(app)
        events = app.machine.journal.events
        assert txt.read_text().splitlines() == [event_text(events[i]) for i in j.view.indices]
        doc = json.loads(js.read_text())
        assert doc["filter"] == "op=iotlb" and len(doc["journal"]) == len(j.view.indices) > 0
        gone = tmp_path / "gone"
        gone.mkdir()
        monkeypatch.chdir(gone)
        gone.rmdir()
        await pilot.press("e")
        assert status(app).startswith("journal not exported") and "\n" not in status(app)


async def test_y_copies_the_selected_event_and_an_empty_journal_says_so():
    async with started(commands=MAPPED_5) as (app, pilot):
        j = app.main.query_one(JournalPane)
        j.move_cursor(3)
        await pilot.press("y")
        e = app.machine.journal.events[j.view.indices[3]]
        assert app.clipboard == event_text(e) and f"event {e.seq} copied" in status(app)
        await prompt(pilot, "slash", "unit=x")
        await pilot.press("y")
        assert status(app).startswith("nothing to copy")


async def test_help_and_palette_name_the_journal_keys_and_the_palette_opens_an_event():
    rows = dict(help_rows())
    for key in ("F", "N", "B", "W", "e", "y"):
        assert rows[key].startswith("Journal: ")
    assert "journal: the whole event" in rows["enter"]
    async with started(commands=MAPPED_5) as (app, pilot):
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen) and ("y", rows["y"]) in app.screen.bindings
        await pilot.press("escape")
        titles = [title for title, _, _ in VtdCommands(app.main, None)._entries()]
        assert {rows["e"], rows["y"], rows["F"]} <= set(titles)
        assert any(t.startswith("Journal: show the selected event whole") for t in titles)
        app.post_message(RunAction("journal_detail"))
        await pilot.pause()
        await pilot.pause()
        assert isinstance(app.screen, EventDetailScreen)
        assert app.screen.event is app.machine.journal.events[-1]


async def test_keys_before_the_next_frame_win_over_following_the_newest_event():
    # A new event makes the pane follow the end once the layout has settled (after the
    # next refresh); keys typed before that frame (a fast typist, tmux send-keys) must
    # not be undone by it, or Enter opens the newest event instead of the selected one.
    async with started(commands=("attach 5",)) as (app, pilot):
        j = app.main.query_one(JournalPane)
        j.update_view()
        j.action_cursor(-6)
        await pilot.pause()
        assert j.cursor == len(j.rows) - 7 and not j.follow
        j.action_jump(-1)  # back at the end: following again
        assert j.follow
