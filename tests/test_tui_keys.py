"""Each key of the DESIGN.md contract, driven through Pilot: the state changes as
expected and the journal and status line say so."""

from __future__ import annotations

from textual.command import CommandPalette

from tuikit import journal_ops, pane_text, prompt, started, status
from vtdtui.tui.help import HelpScreen
from vtdtui.tui.panes import CachesPane, RegistersPane


async def test_m_c_s_toggle_the_selected_units_bits_and_badges():
    async with started() as (app, pilot):
        u = app.machine.units["dmar0"]
        regs = app.main.query_one(RegistersPane)
        for key, bit, get in (("m", "CM", lambda: u.cm), ("c", "C", lambda: u.coherent), ("s", "SC", lambda: u.sc)):
            before = get()
            n = len(app.machine.journal)
            await pilot.press(key)
            assert get() is (not before)
            last = app.machine.journal.events[-1]
            assert len(app.machine.journal) == n + 1 and last.op == "capability-change"
            assert f".{bit}={int(not before)}" in status(app)
            badge = next(seg for seg in regs.rows[2] if seg[0].strip().startswith(bit + " "))
            assert badge == (f" {bit} {int(not before)} ", "badge-on" if not before else "badge-off")


async def test_brackets_select_next_and_previous_unit():
    async with started() as (app, pilot):
        assert app.machine.selected_unit == "dmar0"
        await pilot.press("right_square_bracket")
        assert app.machine.selected_unit == "dmar1"
        assert app.main.query_one(CachesPane).border_title.endswith("dmar1")
        await pilot.press("left_square_bracket")
        assert app.machine.selected_unit == "dmar0"


async def test_g_selects_a_group_and_its_unit():
    async with started() as (app, pilot):
        await prompt(pilot, "g", "5")
        assert app.machine.selected_group == 5 and app.machine.selected_unit == "dmar1"
        assert "group 5" in str(app.main.query_one("#context").render())


async def test_a_n_t_x_d_attach_map_dma_unmap_detach():
    async with started() as (app, pilot):
        m = app.machine
        await prompt(pilot, "g", "5")
        await pilot.press("a")
        d = m.domain_of(m.groups[5])
        assert d is not None
        assert status(app).startswith(f"attached group 5 to domain {d.id} (DID 2) on dmar1: ")
        assert ("domain-reuse", "issued") in journal_ops(app)

        await prompt(pilot, "n", "0x100000 64K rw")
        assert d.mapped_pages == 16 and status(app).startswith("mapped 0x100000+64K rw")

        await prompt(pilot, "t", "0x100000 w")
        assert status(app).startswith("DMA write from 02:00.0 at 0x100000 → ")
        assert any(e.iova == 0x100000 for e in m.units["dmar1"].iotlb)
        assert any("DID 2" in line and "0x000000100000" in line for line in pane_text(app.main.query_one(CachesPane)))

        await prompt(pilot, "x", "0x100000 64K")
        assert d.mapped_pages == 0 and status(app).startswith("unmapped 0x100000+64K")

        await pilot.press("d")
        assert m.domain_of(m.groups[5]) is None
        assert status(app).startswith(f"detached group 5 from domain {d.id} on dmar1")


async def test_tab_and_shift_tab_move_focus_between_panes():
    async with started() as (app, pilot):
        order = [p.id for p in app.panes]
        assert app.focused.id == order[0]
        await pilot.press("tab")
        assert app.focused.id == order[1]
        await pilot.press("tab", "tab")
        assert app.focused.id == order[3]
        await pilot.press("shift+tab")
        assert app.focused.id == order[2]
        await pilot.press("shift+tab", "shift+tab", "shift+tab")
        assert app.focused.id == order[-1]


async def test_question_mark_opens_help_with_every_key():
    async with started() as (app, pilot):
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        keys = [k for k, _d in app.screen.bindings]
        for k in ("m", "c", "s", "]", "[", "g", "a", "d", "n", "x", "t", "tab / shift+tab", "?", "ctrl+p", "q"):
            assert k in keys
        await pilot.press("escape")
        assert app.screen is app.main


async def test_ctrl_p_palette_runs_a_switch():
    async with started() as (app, pilot):
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"set reuse prefer")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert app.machine.vfio.policy == "prefer-reuse"
        assert status(app) == "reuse = prefer-reuse"  # a switch is not a decision: no counts


async def test_q_quits():
    async with started() as (app, pilot):
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


async def test_keys_do_nothing_to_the_machine_while_a_prompt_is_open():
    async with started() as (app, pilot):
        n = len(app.machine.journal)
        await prompt(pilot, "colon", "mcs", submit=False)
        assert app.machine.units["dmar0"].cm is False and len(app.machine.journal) == n
        await pilot.press("escape")
        assert app.screen is app.main
