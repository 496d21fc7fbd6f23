"""The seven panes.  Each asks its view for lines; none changes the machine itself —
what a pane asks for goes to the app as a message (messages.py), which runs it."""

from __future__ import annotations

from collections.abc import Sequence

from textual.binding import Binding

from ..hw.entries import bdf_str
from ..machine import Machine
from ..views import caches, graph, registers, status, tables
from ..views.ioptes import PteRow, PteTree
from ..views.journal import JournalView
from ..views.style import Line, plain
from .messages import BackToTables, Host, OpenPageTables, Say
from .rows import RowsPane


class Pane(RowsPane):
    @property
    def machine(self) -> Machine:
        host: Host = self.app  # type: ignore[assignment]
        return host.machine


class UnitPane(Pane):
    """A pane that shows one view of the selected unit."""

    @staticmethod
    def view(m: Machine, unit: str) -> list[Line]:
        raise NotImplementedError

    def update_view(self) -> None:
        m = self.machine
        self.set_title(f"{self.TITLE} · {m.selected_unit}")
        self.set_rows(self.view(m, m.selected_unit))


class RegistersPane(UnitPane):
    TITLE = "unit & registers"
    SHORT = "regs"
    view = staticmethod(registers.registers)


class TablesPane(Pane):
    """Root table, then the context table of one bus; Enter drills down."""

    TITLE = "root / context tables"
    SHORT = "tables"
    BINDINGS = [Binding("backspace", "back", "Back to root table", show=False)]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bus: int | None = None  # the context table shown; None: follow the selected group
        self.keys: list[tuple[str, int] | None] = []
        self._unit = ""

    def shown_bus(self) -> int | None:
        m = self.machine
        if self.bus is not None:
            return self.bus
        g = m.groups.get(m.selected_group)
        if g is not None and g.unit == m.selected_unit:
            return g.devices[0][0] >> 8
        return None

    def update_view(self) -> None:
        m = self.machine
        if m.selected_unit != self._unit:
            self._unit, self.bus = m.selected_unit, None
        roots = tables.root_rows(m, m.selected_unit)
        bus = self.shown_bus()
        if bus is None:
            bus = next((r.key for r in roots if r.key is not None), None)
        rows: list[Line] = []
        keys: list[tuple[str, int] | None] = []
        for r in roots:
            rows.append(r.line)
            keys.append(("bus", r.key) if r.key is not None else None)
        if bus is not None:
            rows.append(plain(""))
            keys.append(None)
            for r in tables.context_rows(m, m.selected_unit, bus):
                rows.append(r.line)
                keys.append(("sid", r.key) if r.key is not None else None)
        self.keys = keys
        self.set_title(f"{self.TITLE} · {m.selected_unit}" + (f" · bus {bus:02x}" if bus is not None else ""))
        self.set_rows(rows)
        if self.cursor >= len(keys) or keys[self.cursor] is None:
            # Rest the cursor where Enter does something: the selected group's device first.
            g = m.groups.get(m.selected_group)
            want = ("sid", g.devices[0][0]) if g else None
            keyed = [i for i, k in enumerate(keys) if k is not None]
            spot = next((i for i in keyed if keys[i] == want), keyed[0] if keyed else 0)
            self.move_cursor(spot)

    def on_rows_pane_activated(self, event: RowsPane.Activated) -> None:
        if event.pane is not self:
            return
        event.stop()
        key = self.keys[event.index] if event.index < len(self.keys) else None
        if key is None:
            self.post_message(Say("nothing to open on this row: Enter works on a bus or a device", error=True))
        elif key[0] == "bus":
            self.bus = key[1]
            self.update_view()
            first = next((i for i, k in enumerate(self.keys) if k and k[0] == "sid"), None)
            if first is not None:
                self.move_cursor(first)
            self.post_message(Say(f"context table of bus {key[1]:02x} on {self._unit}"))
        else:
            self.post_message(OpenPageTables(self._unit, key[1]))

    def action_back(self) -> None:
        self.bus = None
        self.update_view()
        self.move_cursor(0)
        self.post_message(Say(f"root table of {self._unit}; the context table follows the selected group"))


class IoptePane(Pane):
    """The second-level tables of the selected group's domain, or of the device
    opened from the context table."""

    TITLE = "IOPTEs"
    SHORT = "ioptes"
    BINDINGS = [
        Binding("right", "expand(True)", "Expand", show=False),
        Binding("left", "expand(False)", "Collapse", show=False),
        Binding("space", "toggle_node", "Expand/collapse", show=False),
        Binding("backspace", "back", "Back to the tables", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pinned: tuple[str, int] | None = None  # (unit, source id) opened by drill-down
        self.trees: dict[tuple, PteTree] = {}
        self.shown_tree: PteTree | None = None  # the tree on screen
        self.prow: list[PteRow] = []

    def target(self) -> tuple[str, int] | None:
        m = self.machine
        if self.pinned is not None:
            return self.pinned
        g = m.groups.get(m.selected_group)
        return (g.unit, g.devices[0][0]) if g else None

    def update_view(self) -> None:
        m = self.machine
        t = self.target()
        ce = tables.context_entry(m, *t) if t else None
        if t is None or ce is None or ce.tt == 2:
            what = "pass-through: no page tables" if ce is not None else "no present context entry"
            g = m.groups.get(m.selected_group)
            who = f"{bdf_str(t[1])} on {t[0]}" if t else "no device"
            self.set_title(f"{self.TITLE} · {who}")
            self.shown_tree, self.prow = None, []
            hint = " — attach its group (a) and map (n)" if g and m.domain_of(g) is None else ""
            self.set_rows([plain(f"{who}: {what}{hint}", "dim")])
            return
        unit = m.units[t[0]]
        dom = m.driver_for(t[0]).attached_domain(t[1], unit)
        tree = self.shown_tree = self.trees.setdefault((t[0], ce.did, ce.slptptr), PteTree())
        if not tree.touched and not tree.expanded:
            tree.expand_first_path(ce.slptptr, ce.levels, unit.cpu_read_q)
        self.prow = tree.rows(ce.slptptr, ce.levels, unit.cpu_read_page, unit.hw_read_page)
        dname = f"domain {dom.id} · {dom.mapped_pages} pages · " if dom else ""
        self.set_title(f"{self.TITLE} · {dname}{bdf_str(t[1])} on {t[0]} DID {ce.did} · {ce.levels}-level")
        head = [plain(f"SLPTPTR {ce.slptptr:#x} · →/← expand/collapse · R W SNP → output address, raw", "dim")]
        rows = [r.line for r in self.prow] or [plain("no present entries: map something (n)", "dim")]
        self.set_rows(rows, header=head)

    def _expand(self, open_: bool | None) -> None:
        if not self.prow or self.cursor >= len(self.prow):
            return
        row = self.prow[self.cursor]
        tree = self.shown_tree
        if not row.expandable or tree is None or row.key is None:
            return
        if open_ is None or (row.key in tree.expanded) != open_:
            tree.toggle(row.key)
            self.update_view()

    def action_expand(self, open_: bool) -> None:
        self._expand(open_)

    def action_toggle_node(self) -> None:
        self._expand(None)

    def action_back(self) -> None:
        self.pinned = None
        self.post_message(BackToTables())

    def on_rows_pane_activated(self, event: RowsPane.Activated) -> None:
        if event.pane is self:
            event.stop()
            self._expand(None)


class CachesPane(UnitPane):
    TITLE = "IOTLB & context cache"
    SHORT = "caches"
    view = staticmethod(caches.cache_lines)


class GraphPane(Pane):
    TITLE = "domains · groups · devices · VM"
    SHORT = "graph"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.view = graph.GraphView()

    def update_view(self) -> None:
        self.set_rows(self.view.lines(self.machine))


class VmPane(Pane):
    TITLE = "KVM · VFIO · QEMU · switches"
    SHORT = "vm"

    def update_view(self) -> None:
        self.set_rows(status.vm_lines(self.machine))


class _JournalRows(Sequence):
    """The filtered journal as a lazy sequence of lines: only drawn rows are built."""

    def __init__(self, view: JournalView, events) -> None:
        self.view, self.events = view, events

    def __len__(self) -> int:
        return len(self.view.indices)

    def __getitem__(self, i):  # type: ignore[override]
        return JournalView.event_line(self.events[self.view.indices[i]])


class JournalPane(Pane):
    TITLE = "journal · issued and skipped, with the rule that decided"
    SHORT = "journal"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.view = JournalView()
        self.follow = True  # keep the newest event in sight until the user moves away

    def update_view(self) -> None:
        m = self.machine
        at_end = self.cursor >= len(self.rows) - 1
        self.view.update(m.journal)
        self.set_rows(_JournalRows(self.view, m.journal.events), header=[self.view.counter_line()])
        if self.follow or at_end:
            self.move_cursor(len(self.rows) - 1)
            # Scrolling waits for the new height to be laid out.
            self.call_after_refresh(lambda: self.move_cursor(len(self.rows) - 1))

    def action_cursor(self, delta: int) -> None:
        super().action_cursor(delta)
        self.follow = self.cursor >= len(self.rows) - 1


PANES: tuple[type[Pane], ...] = (RegistersPane, TablesPane, CachesPane, VmPane, IoptePane, GraphPane, JournalPane)
