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

import re
from typing import TYPE_CHECKING

from ..hw.sm_entries import PGTT_NESTED
from ..machine import Machine
from ..sw.journal import Event
from ..textsafe import clip, printable
from ..views.journal import JumpTarget, detail_view, event_text
from ..views.style import Line, plain, wrap
from .rows import RowsPane

if TYPE_CHECKING:
    from ..kernel.translate import Walk

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
            self.set_rows(d.lines + dma_walk_lines(self.machine, self.event, width))
            self.screen.refresh_bindings()  # the footer offers 1-9 only when there is an entry


# The hardware's records of a DMA (Machine._cmd_dma), in the event's reason:
# "02:00.0 read 0x1000 → …" for a translation, dmar_fault_do_one()'s line (hw/faults.py log_line) for a fault.
_DMA = re.compile(r"^([0-9a-f]{2}):([0-9a-f]{2})\.([0-7]) (read|write) (0x[0-9a-f]+) →")
_FAULT = re.compile(r"\[DMA (Read|Write) (?:NO_PASID|PASID (0x[0-9a-f]+))\] Request device "
                    r"\[([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])\] fault addr (0x[0-9a-f]+)")


def dma_request(e: Event) -> tuple[int, int, bool, int | None] | None:
    """(source id, address, write, PASID) of the DMA a hw `dma` or `fault` event records."""
    if e.actor != "hw":
        return None
    if e.op == "dma":
        mt = _DMA.match(e.reason)
        if mt is None:
            return None
        bus, dev, fn, kind, addr = mt.groups()
        return int(bus, 16) << 8 | int(dev, 16) << 3 | int(fn), int(addr, 16), kind == "write", None
    mt = _FAULT.search(e.reason)
    if mt is None:
        return None
    kind, pasid, bus, dev, fn, addr = mt.groups()
    return (int(bus, 16) << 8 | int(dev, 16) << 3 | int(fn), int(addr, 16), kind == "Write",
            None if pasid is None else int(pasid, 16))


def dma_walk_lines(machine: Machine, e: Event, width: int) -> list[Line]:
    """A DMA event's walk through the tables as they are now (kernel/translate.py,
    the unit's own walk without side effects).  Under a nested PASID entry (PGTT 3)
    both stages show: each first-stage read of the guest's tables is preceded by the
    second-stage walk of that table's GPA through the nest parent, and the output GPA
    is walked through the parent last."""
    req = dma_request(e)
    unit = machine.units.get(e.unit) if req is not None else None
    if unit is None:
        return []
    sid, addr, write, pasid = req
    try:
        from ..kernel.translate import translate  # the walk's drill-down only: not at startup

        walk = translate(unit, sid, addr, write, pasid, unit_level=machine.level_of(e.unit))
    except ValueError:
        return []
    return walk_lines(walk, width)


def walk_lines(walk: Walk, width: int) -> list[Line]:
    out: list[Line] = [(("the walk, through the tables as they are now (no cache, no side effect)", "head"),)]
    nested = walk.pgtt == PGTT_NESTED
    if nested:
        out += wrap(plain("nested (PGTT 3): the guest's first-stage tables hold GPAs; the nest parent's second "
                          "stage translates each table's GPA, then the output GPA", "dim"), width, 2)
    for i, st in enumerate(walk.steps, 1):
        # The second stage's reads of a nested walk sit under the first-stage step
        # they serve: indented, so the two stages read apart.
        indent = "    " if nested and st.stage == "second" else ""
        index = f"[{(st.address & 0xFFF) >> 3}]" if st.level is not None else ""
        tone = "key" if st.stage != "second" or not nested else "dim"
        head: Line = ((f"{indent}{i:>2} ", "dim"), (printable(st.what), tone), (f"{index} @ {st.address:#x}", "addr"))
        out += wrap(head, width, len(indent) + 3)
        if st.words is not None:
            value = " ".join(f"{w:#018x}" for w in st.words)
            out += wrap(((f"{indent}     {value}", "addr"),), width, len(indent) + 5)
        bad = "NOT present" in st.says or st.words is None
        out += wrap(((f"{indent}     {printable(st.says)}", "bad" if bad else ""),), width, len(indent) + 5)
    for n in walk.notes:
        out += wrap(plain(f"   · {printable(n)}", "dim"), width, 5)
    if walk.ok:
        where = "guest-physical" if walk.unit_level == "guest" else "host-physical"
        out += wrap(plain(f"→ translated: {walk.hpa:#x} ({where}){', SNP' if walk.snp else ''}", "on"), width, 2)
    else:
        out += wrap(plain(f"→ fault {walk.reason:#04x}" + ("" if walk.recorded else " (FPD: not recorded)"), "bad"),
                    width, 2)
    return out


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
