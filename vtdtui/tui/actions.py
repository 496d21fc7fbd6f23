"""What the keys do to the machine, and the status line that says what it did.

Every state change is a machine command, so what a key does is exactly what a
fixture line or `vtdtui dump --do` does.  After each command the visible panes
recompute their views; hidden ones wait until they are shown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hw.entries import bdf_str
from ..machine import CommandError, Machine, Outcome
from ..machine.machine import OPTIONS, Changes

NOTHING = Changes()
from ..textsafe import clip, printable
from ..views.prompts import PROMPTS
from ..views.status import sentence
from .mainscreen import STATUS_LIMIT, MainScreen
from .panes import IoptePane, TablesPane

if TYPE_CHECKING:
    from textual.screen import Screen

    from .prompt import PromptScreen
    from .session import KeyLogs


class CommandActions:
    """Mixed into the app: running machine commands, the prompts that build them, the
    status line."""

    machine: Machine
    main: MainScreen
    logs: KeyLogs
    check_invariants: bool
    version: int
    last_status: str
    _said, _said_error = "", False

    if TYPE_CHECKING:
        @property
        def prompt(self) -> PromptScreen: ...

        def push_screen(self, screen: Screen) -> object: ...

    # ------------------------------------------------------------ the status line
    def say(self, text: str, error: bool = False) -> None:
        self._said, self._said_error = text, error
        # One row, no markup (the widget's), no control character: the text quotes
        # names and typed or pasted input.
        text = clip(text, STATUS_LIMIT)
        if self.logs.trouble:  # a log behind its keys is news until it catches up
            text += "  ⚠ " + "; ".join(self.logs.trouble.values()) + " (kept; written when it can be)"
            error = True
        text = printable(text)
        self.last_status = text
        self.main.show_status(text, error)

    def say_again(self) -> None:
        """The last line again, with a log's trouble (or without it, now it is gone)."""
        if self.main.is_mounted:
            self.say(self._said, error=bool(self.logs.trouble) or self._said_error)

    # ------------------------------------------------------------ running commands
    def run_command(self, line: str, then=None) -> str | None:
        """Run one machine command; the status line says what it did. Returns the
        refusal (state unchanged) or None.  `then`: called when it ran, before the
        panes are refreshed (one refresh for all the key did)."""
        try:
            outcome = self.machine.execute(line)
        except CommandError as exc:
            self.say(f"{line}: {exc}", error=True)
            return str(exc)
        if then is not None:
            then()
        self._after(outcome)
        return None

    def _after(self, outcome: Outcome) -> None:
        self.say(sentence(outcome))
        if self.check_invariants:
            from ..machine.invariants import check, check_command

            broken = check(self.machine)
            if outcome.command not in ("undo", "redo"):  # those replay commands already checked
                broken += check_command(self.machine, outcome.command, outcome.events)
            if broken:
                more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
                self.say(f"INVARIANT BROKEN after {outcome.command!r}: {broken[0]}{more}", error=True)
        self.changed(outcome.changed)

    def changed(self, changes: Changes = NOTHING) -> None:
        """The panes show the state again; `changes`: what in the machine changed
        (machine.Changes; the default: nothing, only what the panes show of it)."""
        self.version += 1
        self.main.note(changes)
        self.main.refresh_panes()

    def action_toggle(self, bit: str) -> None:
        self.run_command(f"toggle {self.machine.selected_unit} {bit}")

    def action_command(self, line: str) -> None:
        self.run_command(line)

    def action_group_command(self, verb: str) -> None:
        self.run_command(f"{verb} {self.machine.selected_group}")

    def action_undo(self) -> None:
        self._history(self.machine.undo)

    def action_redo(self) -> None:
        self._history(self.machine.redo)

    def _history(self, step) -> None:
        try:
            outcome = step()
        except CommandError as exc:
            self.say(str(exc), error=True)
            return
        self._after(outcome)

    def action_cycle_option(self, opt: str) -> None:
        if opt not in OPTIONS:  # a keymap or fixture naming an option this build lacks
            self.say(f"{opt}: no such option (options: {', '.join(OPTIONS)})", error=True)
            return
        value = self.machine.option_value(opt)
        if value is None:
            self.say(f"{opt}: this scenario has nothing it applies to", error=True)
            return
        values = OPTIONS[opt]
        self.run_command(f"set {opt} {values[(values.index(value) + 1) % len(values)]}")

    # ------------------------------------------------------------ prompts
    def action_prompt(self, name: str) -> None:
        spec = PROMPTS[name]
        m = self.machine
        title = spec.title
        if name in ("map", "unmap", "dma"):
            g = m.groups[m.selected_group]
            d = m.domain_of(g)
            if d is None and name != "dma":  # a DMA from a detached device is a fair question
                self.say(f"group {g.spec_id} is not attached: attach it first (a), or pick another (g)", error=True)
                return
            where = f"domain {d.id}" if d else "detached: attach it first (a)"
            title = f"{spec.title}: group {g.spec_id} ({g.bdfs[0]}) · {where}"

        def submit(text: str) -> str | None:
            ok, hint = spec.validate(text)
            if not ok:
                return hint
            return self.run_command(spec.command(text, m.selected_group),
                                    self._follow_group if name == "group" else None)

        self.push_screen(self.prompt.open(title, spec.usage, spec.validate, submit))

    def _follow_group(self) -> None:
        """A group picked with g: the tables and the IOPTEs follow it again (the
        command's own refresh shows it)."""
        for p in self.main.panes:
            if isinstance(p, IoptePane):
                p.pinned = None
            if isinstance(p, TablesPane):
                p.bus = None

    # ------------------------------------------------------------ drill-down
    def show_page_tables(self, unit: str, sid: int) -> None:
        """Drill-down from a context entry: that device's page tables, focused."""
        ioptes = self.main.query_one(IoptePane)
        ioptes.pinned = (unit, sid)
        ioptes.update_view()
        ioptes.move_cursor(0)
        self.main.show_pane(self.main.panes.index(ioptes))
        self.say(f"page tables of {bdf_str(sid)} on {unit}; g or a group change goes back to the selected group")

    def back_to_tables(self) -> None:
        """Out of a drill-down: the tables pane again; the IOPTEs follow the selected group."""
        self.main.show_pane(self.main.panes.index(self.main.query_one(TablesPane)))
        self.changed()
        self.say("back to the tables; the IOPTE pane follows the selected group again")
