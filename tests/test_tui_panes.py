"""Drill-down, prompts that refuse, journal filters, undo/redo, layouts, and scale."""

from __future__ import annotations

from textual import events

from machinekit import SERVER_UNIT
from tuikit import SMALL, hint, pane_text, prompt, started, status
from vtdtui.tui.panes import GraphPane, IoptePane, JournalPane, TablesPane, VmPane
from vtdtui.tui.prompt import PromptScreen

ATTACHED_5 = ("select-group 5", "attach 5", "map 5 0x100000 16K rw")


# ------------------------------------------------------------------ drill-down
async def test_enter_drills_root_to_context_to_page_tables_and_backspace_returns():
    async with started(commands=ATTACHED_5) as (app, pilot):
        tables = app.main.query_one(TablesPane)
        await pilot.press("2")
        assert app.focused is tables
        # Root rows first: put the cursor on bus 02 and open it.
        bus_row = tables.keys.index(("bus", 2))
        tables.move_cursor(bus_row)
        await pilot.press("enter")
        assert tables.bus == 2 and "bus 02" in tables.border_title
        assert tables.keys[tables.cursor] == ("sid", 0x0200)
        text = pane_text(tables)
        assert any(line.startswith("02:00.0 DID 2") for line in text)
        # Enter on the device: its page tables, focused.
        await pilot.press("enter")
        ioptes = app.main.query_one(IoptePane)
        assert app.focused is ioptes and ioptes.pinned == ("dmar1", 0x0200)
        assert "02:00.0 on dmar1 DID 2" in ioptes.border_title
        leaves = [line for line in pane_text(ioptes) if " 4K " in line]
        assert len(leaves) == 4 and "→ 0x100100000" in leaves[0]
        # Back to the root table.
        await pilot.press("2", "backspace")
        assert tables.bus is None


async def test_iopte_tree_collapses_and_expands_with_arrows():
    async with started(commands=ATTACHED_5) as (app, pilot):
        ioptes = app.main.query_one(IoptePane)
        await pilot.press("5")
        assert app.focused is ioptes
        n_open = len(ioptes.rows)
        ioptes.move_cursor(0)  # the L4 entry: a table
        await pilot.press("left")
        assert len(ioptes.rows) == 1 and "▸ L4" in pane_text(ioptes)[1]
        await pilot.press("right")
        assert "▾ L4" in pane_text(ioptes)[1] and 1 < len(ioptes.rows) <= n_open


async def test_large_leaf_shows_as_such():
    async with started(commands=("select-group 5", "attach 5", "map 5 0x200000 2M rw")) as (app, pilot):
        lines = pane_text(app.main.query_one(IoptePane))
        assert any("2M leaf (PS)" in line and "→ 0x100200000" in line for line in lines)


async def test_enter_on_a_row_with_nothing_under_it_says_so():
    async with started() as (app, pilot):
        await pilot.press("2")
        tables = app.main.query_one(TablesPane)
        tables.move_cursor(tables.keys.index(None))
        await pilot.press("enter")
        assert "nothing to open" in status(app)


# ------------------------------------------------------------------ prompts
async def test_prompt_explains_bad_input_inline_and_escape_changes_nothing():
    async with started(commands=ATTACHED_5) as (app, pilot):
        before = (len(app.machine.journal), list(app.machine.log))
        await prompt(pilot, "n", "0x100001 4K")
        assert isinstance(app.screen, PromptScreen)
        assert "not 4 KiB aligned" in hint(app)
        await pilot.press("escape")
        assert app.screen is app.main
        assert (len(app.machine.journal), list(app.machine.log)) == before


async def test_prompt_checks_as_you_type():
    async with started(commands=ATTACHED_5) as (app, pilot):
        await prompt(pilot, "n", "0x100000 0", submit=False)
        assert "non-zero multiple of 4K" in hint(app)
        await pilot.press("backspace", "6", "4", "K")
        assert hint(app) == "map 0x100000+64K rw"
        await pilot.press("escape")


async def test_a_refusal_from_the_machine_keeps_the_prompt_open():
    async with started(commands=ATTACHED_5) as (app, pilot):
        log = list(app.machine.log)
        await prompt(pilot, "n", "0x102000 4K")  # inside the 16K already mapped
        assert isinstance(app.screen, PromptScreen)
        assert "overlaps the mapping at 0x100000" in hint(app)
        assert app.machine.log == log
        await pilot.press("escape")


async def test_map_on_a_detached_group_is_refused_before_the_prompt():
    async with started() as (app, pilot):  # group 0 is not attached
        await pilot.press("n")
        await pilot.pause()
        assert app.screen is app.main
        assert "group 0 is not attached: attach it first (a)" in status(app)
        assert app.machine.log == []


async def test_a_bad_group_number_names_the_groups():
    async with started() as (app, pilot):
        await prompt(pilot, "g", "42")
        assert "no group 42 (groups: 0, 1, 2, 3, 4, 5, 6)" in hint(app)
        await pilot.press("escape")
        assert app.machine.selected_group == 0


async def test_keys_typed_before_the_prompt_is_ready_reach_it():
    async with started(commands=ATTACHED_5) as (app, pilot):
        # A burst, as a paced replay or a fast typist delivers it: no waiting between keys.
        for ch in "n0x200000 4K":
            key = {" ": "space"}.get(ch, ch)
            app.post_message(events.Key(key, ch))
        app.post_message(events.Key("enter", "\r"))
        await pilot.pause(0.3)
        assert app.screen is app.main
        assert app.machine.log[-1] == "map 5 0x200000 4K"


async def test_colon_runs_any_command():
    async with started() as (app, pilot):
        await prompt(pilot, "colon", "set lazy off")
        assert app.machine.option_value("lazy") == "off"
        assert "lazy               off" in "\n".join(pane_text(app.main.query_one(VmPane)))


# ------------------------------------------------------------------ journal filters
async def test_o_cycles_the_outcome_filter():
    async with started(commands=ATTACHED_5) as (app, pilot):
        j = app.main.query_one(JournalPane)
        events_ = app.machine.journal.events
        total = len(j.rows)
        await pilot.press("o")
        assert j.view.filter.outcome == "issued"
        assert [events_[i].outcome for i in j.view.indices] == ["issued"] * len(j.rows)
        await pilot.press("o")
        assert {events_[i].outcome for i in j.view.indices} == {"skipped"}
        await pilot.press("o")
        assert len(j.rows) == total


async def test_slash_filters_by_op_and_unit_and_refuses_bad_keys():
    async with started(commands=ATTACHED_5) as (app, pilot):
        j = app.main.query_one(JournalPane)
        await prompt(pilot, "slash", "op=iotlb unit=dmar1")
        assert app.screen is app.main
        shown = [app.machine.journal.events[i] for i in j.view.indices]
        assert shown and all(e.op == "iotlb-invalidation" and e.unit == "dmar1" for e in shown)
        assert "filter: op=iotlb unit=dmar1" in pane_text(j)[0]
        await prompt(pilot, "slash", "colour=red")
        assert "unknown filter key 'colour'" in hint(app)
        await pilot.press("escape")
        # An empty filter clears it.
        await pilot.press("slash")
        await pilot.pause()
        await pilot.press("ctrl+u", "enter")
        await pilot.pause()
        assert j.view.filter.describe() == "none"


async def test_new_events_follow_the_filter():
    async with started(commands=ATTACHED_5) as (app, pilot):
        j = app.main.query_one(JournalPane)
        await prompt(pilot, "slash", "actor=hw")
        before = len(j.rows)
        await prompt(pilot, "t", "0x100000")
        assert len(j.rows) == before + 1 and "translate" in pane_text(j)[-1]


# ------------------------------------------------------------------ undo / redo
async def test_u_undoes_and_ctrl_r_redoes():
    async with started() as (app, pilot):
        m = app.machine
        await prompt(pilot, "g", "5")
        await pilot.press("a")
        attached_journal = len(m.journal)
        await pilot.press("u")
        assert m.domain_of(m.groups[5]) is None and len(m.journal) < attached_journal
        assert status(app) == "undid: attach 5"
        assert "⚠" not in "\n".join(pane_text(app.main.query_one(GraphPane)))
        await pilot.press("ctrl+r")
        assert m.domain_of(m.groups[5]) is not None and len(m.journal) == attached_journal
        await pilot.press("u", "u", "u")
        assert status(app) == "nothing to undo" and m.log == []


# ------------------------------------------------------------------ layout
async def test_talk_layout_shows_every_pane():
    async with started() as (app, pilot):
        assert not app.main.has_class("-single")
        assert all(p.region.width > 20 and p.region.height >= 8 for p in app.panes)


async def test_small_terminal_shows_one_pane_with_tabs():
    async with started(size=SMALL) as (app, pilot):
        assert app.main.has_class("-single")
        shown = [p for p in app.panes if p.region.height > 0]
        assert shown == [app.panes[0]]
        await pilot.press("tab")
        shown = [p for p in app.panes if p.region.height > 0]
        assert shown == [app.panes[1]] and app.focused is app.panes[1]
        assert "2 tables" in str(app.main.query_one("#tabs").render())
        await pilot.press("7")
        assert [p for p in app.panes if p.region.height > 0] == [app.panes[6]]


async def test_z_zooms_the_focused_pane_and_back():
    async with started() as (app, pilot):
        await pilot.press("6", "z")
        assert app.main.has_class("-single")
        assert [p for p in app.panes if p.region.height > 0] == [app.main.query_one(GraphPane)]
        await pilot.press("z")
        assert not app.main.has_class("-single")


async def test_resize_switches_layouts():
    async with started() as (app, pilot):
        await pilot.resize_terminal(*SMALL)
        await pilot.pause()
        assert app.main.has_class("-single")
        await pilot.resize_terminal(160, 50)
        await pilot.pause()
        assert not app.main.has_class("-single")


# ------------------------------------------------------------------ scale
LARGE = """
name = "large"
owner = "driver"
""" + SERVER_UNIT + """
[generate]
devices = 4096
first_bus = 0x10
unit = "dmar0"
"""


async def test_a_large_scenario_opens_and_scrolls(tmp_path):
    path = tmp_path / "large.toml"
    path.write_text(LARGE)
    async with started(str(path)) as (app, pilot):
        m = app.machine
        assert len(m.groups) == 4096
        graph = app.main.query_one(GraphPane)
        await pilot.press("6")
        assert len(graph.rows) > 8192
        await pilot.press("end")
        assert graph.scroll_y > 8000 and graph.cursor == len(graph.rows) - 1
        assert "dmar0" in pane_text(graph)[-1]
        journal = app.main.query_one(JournalPane)
        await pilot.press("7", "home", "pagedown")
        assert journal.cursor > 0
        await prompt(pilot, "g", "4095")
        await pilot.press("m")
        assert m.units["dmar0"].cm and m.selected_group == 4095


async def test_footer_is_not_rebuilt_by_tab_or_a_prompt_and_still_shows_the_keys():
    """KeyFooter recomposes only when the keys it shows change (Textual's rebuilds on
    every focus change: most of what a Tab cost)."""
    from textual.widgets._footer import FooterKey

    async with started() as (app, pilot):
        keys = list(app.main.query(FooterKey))
        shown = {k.key for k in keys}
        assert {"m", "c", "s", "a", "d"} <= shown
        await pilot.press("tab", "tab")
        await prompt(pilot, "g", "5")
        await pilot.pause()
        assert app.screen is app.main
        assert list(app.main.query(FooterKey)) == keys  # the same widgets: not rebuilt
        await pilot.press("z")  # the compact footer of the zoomed layout is a change
        await pilot.pause()
        assert {k.key for k in app.main.query(FooterKey)} == shown


async def test_a_prompt_opens_clean_each_time():
    """The prompt screen is kept between prompts: each opens with its own title, an
    empty field (or the filter's current text, selected) and no old hint."""
    async with started(commands=ATTACHED_5) as (app, pilot):
        await prompt(pilot, "n", "0x1000 zz", submit=True)  # refused: stays open with a hint
        assert hint(app)  # the refusal, inline
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, PromptScreen)
        assert app.screen.query_one("Input").value == ""
        assert hint(app) == ""
        assert "DMA" in str(app.screen.query_one("#prompt-title").render())


async def test_page_keys_typed_before_the_palette_is_drawn_do_not_end_the_app():
    """Found by keystroke fuzzing: Textual's option list pages with a line index it
    builds only once laid out, so ctrl+p then pageup in the same instant raised
    KeyError and ended the app."""
    async with started() as (app, pilot):
        app.action_command_palette()
        for key in ("pageup", "pagedown", "pageup"):
            app.post_message(events.Key(key, None))
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.main and app.is_running


async def test_typed_brackets_are_text_not_markup():
    """Found by keystroke fuzzing: a command typed with '[x=' came back in the prompt's
    hint and the status line, which read it as markup and ended the app."""
    async with started() as (app, pilot):
        await prompt(pilot, "colon", "z6[ag=5 [b]x")
        assert "unknown command 'z6[ag=5'" in hint(app)
        await pilot.press("escape")
        await pilot.pause()
        app.run_command("[red]=x[/]")
        await pilot.pause()
        assert app.last_status.startswith("[red]=x[/]: unknown command")
        assert app.is_running


async def test_a_prompt_keeps_what_was_typed_under_the_palette():
    async with started(commands=ATTACHED_5) as (app, pilot):
        await prompt(pilot, "n", "0x2000 4K", submit=False)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, PromptScreen)
        assert app.screen.query_one("Input").value == "0x2000 4K"
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is app.main and "mapped 0x2000+4K" in status(app)


async def test_check_invariants_switch_says_when_the_machine_is_broken():
    """--check-invariants: after every command the app checks the machine's invariants
    and a broken one takes the status line (here KVM's count is bent behind its back)."""
    async with started() as (app, pilot):
        app.check_invariants = True
        await pilot.press("m")
        await pilot.pause()
        assert "INVARIANT" not in status(app)
        app.machine.kvm.noncoherent_dma_count += 1
        await pilot.press("m")
        await pilot.pause()
        assert status(app).startswith("INVARIANT BROKEN after 'toggle dmar0 CM': KVM noncoherent_dma_count is 1")
        assert "kvm" in status(app).lower()
