"""The seven panes.  Each asks its view for lines; none changes the machine itself —
what a pane asks for goes to the app as a message (messages.py), which runs it."""

from __future__ import annotations

import gc
from collections.abc import Sequence

from textual.binding import Binding
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..hw.entries import bdf_str, level_shift
from ..machine import Machine
from ..machine.machine import Changes
from ..views import caches, graph, registers, status, tables
from ..views.ioptes import PteRow, PteTree, stage_of
from ..sw.journal import Event
from ..views.journal import JournalSearch, JournalView, row_line, row_lines
from ..views.style import Line, plain
from .messages import BackToTables, Host, OpenEvent, OpenPageTables, Say
from .rows import RowsPane


class Pane(RowsPane):
    DRAWN_SCROLLBAR = True  # app.tcss: Pane { overflow-y: hidden } (rows.py says why)

    # What the commands changed since this pane last updated (machine.Changes; None:
    # nothing): a pane that keeps its rows recomputes only that.  MainScreen.note().
    pending: Changes | None = None

    @property
    def machine(self) -> Machine:
        host: Host = self.app  # type: ignore[assignment]
        return host.machine

    def on_resize(self) -> None:
        # A new size repaints the whole pane (Textual marks it dirty in the layout that
        # sent this), so what it shows is what it holds now.  Without this, the rows set
        # before the first layout (at size 0: MainScreen.on_mount) would count as not
        # shown, and the cursor move below would repaint every pane in a frame of its own.
        self._shown = self._visible_signature()
        super().on_resize()


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

    def show_entry(self, bus: int | None, key: tuple[str, int] | None) -> bool:
        """Open the tables at `bus` (its context table under the root table) with the
        cursor on `key` (("bus", n) or ("sid", n); None: the first device of the bus);
        False when that row is not in the tables now."""
        self._unit, self.bus = self.machine.selected_unit, bus
        self.update_view()
        if key is None:
            key = next((k for k in self.keys if k and k[0] == "sid"), None)
        if key not in self.keys:
            return False
        self.move_cursor(self.keys.index(key))
        return True

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
        if stage_of(ce.levels) == "first":  # scalable mode, PGTT first-stage: IA-32e entries
            head = [plain(f"FSPTPTR {ce.slptptr:#x} · →/← expand/collapse · P W U A D PS XD → output address, raw",
                          "dim")]
        else:
            ptr = "SSPTPTR" if getattr(ce, "entry", None) is not None else "SLPTPTR"  # SmTranslation
            head = [plain(f"{ptr} {ce.slptptr:#x} · →/← expand/collapse · R W SNP → output address, raw", "dim")]
        rows = [r.line for r in self.prow] or [plain("no present entries: map something (n)", "dim")]
        self.set_rows(rows, header=head)

    def show_node(self, unit: str, sid: int, key: tuple[int, int] | None) -> bool:
        """The page tables of device `sid` on `unit`, opened down to node `key` (a
        (level, IOVA base) entry; None: the top-level table), the cursor on it; False
        when the node is not in the tree now."""
        self.pinned = (unit, sid)
        self.update_view()
        tree, ce = self.shown_tree, tables.context_entry(self.machine, unit, sid)
        if tree is None or ce is None:
            return False
        if key is not None:
            level, base = key
            # Open every table on the way down, and the node itself when it is a table.
            tree.expanded.update((lv, base & ~((1 << level_shift(lv)) - 1)) for lv in range(level, ce.levels + 1))
            tree.touched = True
            self.update_view()
        row = 0 if key is None else next((i for i, r in enumerate(self.prow) if r.key == key), None)
        if row is None:
            return False
        self.move_cursor(row)
        return True

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
    # The networkx graph (an ~85 ms import, then the build) is built once the start
    # has settled: SETTLED_POLLS looks in a row, POLL_S apart, that find the screen
    # with nothing to lay out, paint or call back.  The start's later frames (the
    # footer's) then never wait for it; it runs 20-40 ms after the start's last frame
    # (a key pressed in that window, before the user could have read the screen, waits
    # for it once).  Until then the rows come from the Lite graph (the same rows).
    POLL_S = 0.02
    SETTLED_POLLS = 2

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # The first rows come from a graph.Lite, so the first frame has them without
        # networkx; the networkx graph replaces it after the start (_adopt).
        self.view = graph.GraphView(lite=True)

    def update_view(self) -> None:
        first = not self.view.built
        changes, self.pending = self.pending, None
        self.set_rows(self.view.lines(self.machine, changes))
        if first:
            # Built after VtdApp.start() froze the machine: out of the collector's
            # sight too (a full collection walking it cost 55 ms at 7,680 devices).
            gc.freeze()
            self._calm = 0
            self.call_after_refresh(self._watch_start)

    def _watch_start(self) -> None:
        self._poll = self.set_interval(self.POLL_S, self._adopt_when_settled)

    def _adopt_when_settled(self) -> None:
        s = self.app.screen
        busy = (getattr(s, "_layout_required", False) or getattr(s, "_repaint_required", False)
                or getattr(s, "_scroll_required", False) or getattr(s, "_recompose_required", False)
                or getattr(s, "_dirty_widgets", None) or getattr(s, "_callbacks", None)
                or getattr(self.app, "_batch_count", 0))
        self._calm = 0 if busy else self._calm + 1
        if self._calm >= self.SETTLED_POLLS:
            self._poll.stop()
            self._adopt()

    def _adopt(self) -> None:
        self.view.adopt_networkx(self.machine)
        # The graph and its rows live as long as the app, like the machine that
        # VtdApp.start() put out of the cyclic collector's sight.
        gc.freeze()
        self.update_view()  # the same rows: nothing is repainted


class VmPane(Pane):
    TITLE = "KVM · VFIO · QEMU · switches"
    SHORT = "vm"

    def update_view(self) -> None:
        self.set_rows(status.vm_lines(self.machine))


class _JournalRows(Sequence):
    """The filtered journal as a lazy sequence of rows: only drawn rows are built."""

    def __init__(self, view: JournalView, events) -> None:
        self.view, self.events = view, events

    def __len__(self) -> int:
        return len(self.view.indices)

    def __getitem__(self, i):  # type: ignore[override]
        return row_line(self.events[self.view.indices[i]])


class JournalPane(Pane):
    """The journal, one row per event (cut at the pane's edge), or wrapped: each
    event over as many lines as it needs, the cursor still moving by event.

    Wrapped, the scroll position counts events, not lines (the line count of the
    whole journal would cost a wrap of every event): the pane draws from the event
    at the top down, and the scroll range ends where the last event can sit at the
    bottom.  Enter opens the whole event (messages.OpenEvent)."""

    TITLE = "journal · issued and skipped, and why · Enter: the whole event · W wrap · F find"
    SHORT = "journal"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.view = JournalView()
        self.follow = True  # keep the newest event in sight until the user moves away
        self.wrap = False
        self.search: JournalSearch | None = None  # the last search (F), for next / previous
        self._wrapped: dict[tuple[int, int], tuple[object, list[Line]]] = {}  # (id(event), width) → lines
        self._window_key: tuple = ()
        self._window: list[tuple[Line, int]] = []  # (line, row) from the top event down
        self._wstrips: dict[tuple, Strip] = {}  # rendered wrapped lines, in the theme's `_wpalette`
        self._wpalette: object = None

    @property
    def events(self) -> list[Event]:
        return self.machine.journal.events

    def event_index(self, row: int | None = None) -> int | None:
        """The journal index of the event on `row` (default: the cursor's), or None."""
        row = self.cursor if row is None else row
        indices = self.view.indices
        return indices[row] if 0 <= row < len(indices) and len(self.rows) else None

    def selected_event(self) -> Event | None:
        i = self.event_index()
        return self.events[i] if i is not None else None

    def update_view(self) -> None:
        m = self.machine
        at_end = self.cursor >= len(self.rows) - 1
        changes, self.pending = self.pending, None
        self.view.update(m.journal, changes.journal[0] if changes is not None else None)
        self.set_rows(_JournalRows(self.view, m.journal.events), header=[self.view.counter_line()])
        if self.follow or at_end:
            self.follow = True
            self.move_cursor(len(self.rows) - 1)
            # Scrolling waits for the new height to be laid out; keys that arrive before
            # that frame (a fast typist, a paste, tmux send-keys) win over it.
            self.call_after_refresh(self._follow_end)

    def _follow_end(self) -> None:
        # Only where the move above could not settle it (the scroll range waited for a
        # layout): a move that changes nothing would cost a second frame.
        if self.follow and not self._end_in_view():
            self.move_cursor(len(self.rows) - 1)

    def _end_in_view(self) -> bool:
        """The cursor on the newest event, and that event's row (all of its lines,
        wrapped) on screen."""
        n = len(self.rows)
        if not n or self.cursor != n - 1:
            return not n
        top = round(self.scroll_y)
        if self.wrap:  # as _move_cursor places the last event: its end at the bottom or above
            return self._top_for_bottom(self.cursor) <= top <= self.cursor
        return top <= self.cursor < top + self.body_height


    def on_rows_pane_activated(self, event: RowsPane.Activated) -> None:
        if event.pane is self:
            event.stop()
            i = self.event_index(event.index)
            if i is not None:
                self.post_message(OpenEvent(i))

    # ------------------------------------------------------------ wrap
    def set_wrap(self, on: bool) -> None:
        self.wrap = on
        self._window_key = ()
        self.set_title(self.TITLE + (" · wrapped" if on else ""))
        self.set_rows(self.rows, self.header)
        self.move_cursor(self.cursor)
        self.refresh()

    def _partial_repaint(self) -> bool:
        return not self.wrap  # wrapped, a row is several lines

    def set_rows(self, rows: Sequence[Line], header: list[Line] | None = None) -> None:
        super().set_rows(rows, header)
        if self.wrap:
            self._wrap_range()

    @property
    def _width(self) -> int:
        return max(1, self.text_width)

    def _lines(self, row: int) -> list[Line]:
        """The event on `row` wrapped at the pane's width (cached: rows scroll by)."""
        e, width = self.events[self.view.indices[row]], self._width
        hit = self._wrapped.get((id(e), width))
        if hit is None or hit[0] is not e:
            if len(self._wrapped) > 4 * 1024:
                self._wrapped.clear()
            hit = self._wrapped[id(e), width] = (e, row_lines(e, width))
        return hit[1]

    def _top_for_bottom(self, row: int) -> int:
        """The top row that puts `row`'s last line at the bottom of the pane."""
        room, top = self.body_height - len(self._lines(row)), row
        while top > 0 and room >= len(self._lines(top - 1)):
            top -= 1
            room -= len(self._lines(top))
        return top

    def _wrap_range(self) -> None:
        # Scroll positions are rows; the last one is where the newest event ends the pane.
        n = len(self.rows)
        end = self._top_for_bottom(n - 1) if n else 0
        size = Size(0, len(self.header) + max(n, end + self.body_height))
        if size != self.virtual_size:
            bars = (self.show_vertical_scrollbar, self.show_horizontal_scrollbar)
            self.set_reactive(ScrollView.virtual_size, size)  # as RowsPane.set_rows: no layout
            self._scroll_update(size)
            if (self.show_vertical_scrollbar, self.show_horizontal_scrollbar) != bars:
                self.refresh(layout=True)

    def _window_lines(self) -> list[tuple[Line, int]]:
        top, height = round(self.scroll_y), self.body_height
        key = (top, self._width, height, id(self.view.indices), len(self.rows))
        if key != self._window_key:
            out: list[tuple[Line, int]] = []
            row = top
            while len(out) < height and row < len(self.rows):
                out += [(line, row) for line in self._lines(row)]
                row += 1
            self._window_key, self._window = key, out[:height]
        return self._window

    def _render_text_line(self, y: int) -> Strip:
        if not self.wrap or y < len(self.header):
            return super()._render_text_line(y)
        window, width, palette = self._window_lines(), self._width, self.palette
        line, row = window[y - len(self.header)] if y - len(self.header) < len(window) else ((), -1)
        cursor = row == self.cursor  # every line of the cursor's event: the cursor is an event
        if palette is not self._wpalette or len(self._wstrips) > 4 * 1024:  # a new theme, or rows scrolled by
            self._wpalette, self._wstrips = palette, {}
        key = (line, width, cursor and self.has_focus, cursor)
        strip = self._wstrips.get(key)
        if strip is None:
            strip = self._wstrips[key] = self._strip(line, width, 0, cursor, palette)
        return strip

    def move_cursor(self, index: int) -> None:
        self._move_cursor(index)
        # Any move (keys, search, a jump) decides whether the pane keeps following.
        self.follow = self.cursor >= len(self.rows) - 1

    def _move_cursor(self, index: int) -> None:
        if not self.wrap:
            super().move_cursor(index)
            return
        n = len(self.rows)
        if not n:
            return
        self.cursor = max(0, min(index, n - 1))
        top = round(self.scroll_y)
        if self.cursor < top:
            top = self.cursor
        elif not any(row > self.cursor for _, row in self._window_lines()):
            # The cursor's event does not end inside the pane: bring its end in.
            top = max(top, self._top_for_bottom(self.cursor))
        if top != round(self.scroll_y):
            self.scroll_to(y=top, animate=False, immediate=True)
        self.refresh()

    def on_resize(self) -> None:
        if self.wrap:  # a new width wraps differently: the scroll range follows
            self._wrap_range()

    def action_page(self, direction: int) -> None:
        if not self.wrap:
            super().action_page(direction)
            return
        shown = {row for _, row in self._window_lines()}
        self.move_cursor(self.cursor + direction * max(1, len(shown) - 1))


PANES: tuple[type[Pane], ...] = (RegistersPane, TablesPane, CachesPane, VmPane, IoptePane, GraphPane, JournalPane)
