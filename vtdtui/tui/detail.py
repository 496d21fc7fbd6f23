"""The event detail screen: one journal event whole (Enter on a journal row).

The lines are views.journal.detail_view's, wrapped at the screen's width, so nothing
is cut at 80 columns.  The entries the event touched are numbered: their number (or
Enter on their line) closes the screen with that JumpTarget, and the app shows the
entry in its pane; c does the same for the unit's caches.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from ..machine import Machine
from ..sw.journal import Event
from ..textsafe import clip, printable
from ..views.journal import JumpTarget, detail_view, event_text
from .rows import RowsPane

# The caches pane as a target: it has no entry of its own, only a unit.
CACHES = "caches"


class DetailBody(RowsPane):
    """The event's lines, laid out again when the width changes."""

    def __init__(self, machine: Machine, event: Event, **kwargs) -> None:
        super().__init__(**kwargs)
        self.machine, self.event = machine, event
        self.targets: list[JumpTarget] = []
        self._laid_out = -1  # the width the lines were wrapped at

    def on_resize(self) -> None:
        width = self.scrollable_content_region.width
        if width > 0 and width != self._laid_out:
            self._laid_out = width
            d = detail_view(self.machine, self.event, width)
            self.targets = d.targets
            self.set_rows(d.lines)
            self.screen.refresh_bindings()  # the footer offers 1-9 only when there is an entry


class EventDetailScreen(ModalScreen[JumpTarget | None]):
    DEFAULT_CSS = """
    EventDetailScreen {
        align: center middle;
        background: $background 60%;
    }
    #detail {
        width: 100%;
        max-width: 132;
        height: 100%;
        border: thick $primary;
        border-title-color: $primary;
        border-title-style: bold;
        background: $surface;
    }
    #detail DetailBody {
        height: 1fr;
        scrollbar-size-vertical: 1;
        overflow-x: hidden;
    }
    #detail-hint {
        height: auto;
        padding: 0 1;
        color: $text-muted;
    }
    #detail-hint.-error {
        color: $text-error;
        text-style: bold;
    }
    """

    BINDINGS = [
        Binding("escape", "close", "close", id="detail-close"),
        Binding("1", "jump(1)", "jump to an entry", key_display="1-9", id="detail-jump"),
        *[Binding(str(n), f"jump({n})", f"jump to entry {n}", show=False) for n in range(2, 10)],
        Binding("c", "caches", "caches", id="detail-caches"),
        Binding("y", "copy", "copy", id="detail-copy"),
    ]

    def __init__(self, machine: Machine, event: Event) -> None:
        super().__init__()
        self.machine, self.event = machine, event

    def compose(self) -> ComposeResult:
        with Vertical(id="detail") as box:
            box.border_title = f"event {self.event.seq} · {printable(clip(self.event.op, 60))}"
            yield DetailBody(self.machine, self.event)
            yield Static("", id="detail-hint", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DetailBody).focus()
        self._hint()

    @property
    def targets(self) -> list[JumpTarget]:
        return self.query_one(DetailBody).targets

    def _hint(self, text: str = "", error: bool = False) -> None:
        if not text:
            n = len(self.event.data.entries) if self.event.data is not None else 0
            text = (f"{n} entr{'y' if n == 1 else 'ies'} touched: its number, or Enter on its line, shows it · "
                    if n else "") + "c: the caches of " + self.event.unit + " · Escape closes"
        w = self.query_one("#detail-hint", Static)
        w.update(printable(clip(text, 400)))
        w.set_class(error, "-error")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "jump":
            bodies = self.query(DetailBody)
            return bool(bodies and bodies.first().targets)
        return True

    def action_close(self) -> None:
        self.dismiss(None)

    def action_jump(self, n: int) -> None:
        t = next((t for t in self.targets if t.n == n), None)
        if t is None:
            have = len(self.targets)
            self._hint(f"no entry [{n}]: this event touched {have or 'no'} entr{'y' if have == 1 else 'ies'}",
                       error=True)
        elif not t.found:
            self._hint(f"entry [{n}] is no longer in any table (freed since this event)", error=True)
        else:
            self.dismiss(t)

    def action_caches(self) -> None:
        self.dismiss(JumpTarget(0, -1, CACHES, self.event.unit, 0, 0))

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(event_text(self.event))
        self._hint(f"event {self.event.seq} copied to the clipboard (OSC 52)")

    def on_rows_pane_activated(self, event: RowsPane.Activated) -> None:
        event.stop()
        t = next((t for t in self.targets if t.row <= event.index < self._end(t)), None)
        if t is None:
            self._hint("nothing to open on this line: Enter works on a numbered entry", error=True)
        else:
            self.action_jump(t.n)

    def _end(self, t: JumpTarget) -> int:
        """The line after target `t`'s (its text may wrap over several)."""
        later = [u.row for u in self.targets if u.row > t.row]
        return min(later) if later else len(self.query_one(DetailBody).rows)
