"""The main screen: the context line, the replay caption, the tab strip, the seven
panes, the status line and the footer; and how they are laid out: all panes at the
160x50 talk size, five in sight at 120x40 (the VM pane and one of caches / IOPTEs /
graph where a pane fits), one at a time below that or when zoomed."""

from __future__ import annotations

from typing import Self

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.content import Content
from textual.geometry import Region
from textual.reactive import Reactive
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Static

from ..machine.machine import Changes
from ..textsafe import clip, markup, printable
from ..views.status import WHAT_IFS
from .compositor import BandCompositor
from .footer import KeyFooter
from .messages import Host
from .panes import PANES, CachesPane, GraphPane, IoptePane, JournalPane, Pane, RegistersPane, TablesPane, VmPane

# All seven panes side by side from here (the layout a 160x50 talk is made for).
WIDE = (140, 40)
# Five panes from here (the 120x40 talk layout: a projector at a readable font);
# below it one pane at a time, with tabs.
TALK = (100, 34)
# The talk layout's panes; the last place shows one of SLOT, the one last chosen.
TALK_PANES = (RegistersPane, TablesPane, VmPane, JournalPane)
SLOT = (CachesPane, IoptePane, GraphPane)

# The status line wraps to what it says; a refusal that quotes a pasted megabyte is
# cut here first.
STATUS_LIMIT = 1000
# A name in the context line (scenario, unit, device), cut so that the rest still shows.
NAME_LIMIT = 60


class MainScreen(Screen):
    # Textual repaints the whole screen when the focus moves; the panes that gain and
    # lose it repaint themselves (and focus styles are updated), so Tab between panes
    # costs two panes, not 160x50 cells.  (textual < 8.3, pinned.)
    focused: Reactive[Widget | None] = Reactive(None, repaint=False)

    # tab / shift+tab walk the panes in a fixed order, shown or not.
    BINDINGS = [
        Binding("tab", "app.pane(1)", "Next pane", show=False, id="next-pane"),
        Binding("shift+tab", "app.pane(-1)", "Previous pane", show=False, id="previous-pane"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._compositor = BandCompositor()  # a key's frame renders the rows it changed
        self.panes: list[Pane] = []  # in the order of PANES, once mounted
        self.zoomed = False
        self.slot: type[Pane] = IoptePane  # the talk layout's fourth pane
        # The talk layout's tall pane in each column: the one last chosen there.
        self.left_tall: type[Pane] = VmPane
        self.right_tall_slot = False  # the tables, or the slot's pane
        self._first_focus = True  # the registers, focused at start: no one's choice yet
        self._layout = ""
        self._order_key: tuple = (False, False)  # the document order: PANES
        self._status = ""
        self._wrapped: dict[str, str] = {}  # widget id → the whole text it shows, wrapped
        self._tabs_text = ""
        self._context_key: tuple = ()  # (markup, width) the context line shows
        self._uncovering: Region | None = None  # see uncover

    @property
    def host(self) -> Host:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static("", id="context")
        yield Static("", id="caption")
        yield Static("", id="tabs")
        with Container(id="panes"):
            for cls in PANES:
                yield cls(id=cls.SHORT)
        yield Static("", id="status", markup=False)  # says what the user typed: '[' is text
        yield KeyFooter()

    def on_mount(self) -> None:
        # The app starts as soon as the panes exist, not a message later: their rows
        # are set before the first layout, so the first frame shows them (before, two
        # frames of empty borders came first).
        self.app.start()  # type: ignore[attr-defined]

    def begin(self) -> None:
        """Lay out the panes, the first one focused (the app calls this as it starts)."""
        self.panes = list(self.query(Pane))
        self.panes[0].focus()
        self.relayout()

    def on_descendant_focus(self) -> None:
        self.relayout()

    # ------------------------------------------------------------ a prompt closes
    def uncover(self, region: Region | None) -> None:
        """A prompt over this screen closes; until it is gone (None), a repaint of
        the whole screen is one of `region`, the cells its box was drawn on.  Textual
        repaints the screen below a closed screen whole: asked for when the prompt
        was pushed, and again by its resume and by the old screen's removal.  Right
        for a screen that dims what it covers, and most of the Enter that ran the
        prompt's command; the prompt dims nothing, and the widgets that changed
        below it (the panes the command changed) repaint themselves.
        (textual < 8.3, pinned.)"""
        self._uncovering = region
        if region is None or self._size != self.app.size:
            return
        self._repaint_required = False  # the whole screen, asked for by the push
        self._repaint_regions.clear()
        # The widgets under the box repaint its cells; the screen's own repaint
        # would stand for all of its widgets (Screen._on_timer_update).
        for widget, (where, clip) in self._compositor.visible_widgets.items():
            overlap = region.intersection(clip)
            if widget is not self and overlap:
                offset = where.offset + widget.content_offset
                widget.refresh(overlap.translate((-offset.x, -offset.y)))

    def refresh(self, *regions: Region, repaint: bool = True, layout: bool = False,
                recompose: bool = False) -> Self:
        if (self._uncovering is None or regions or layout or recompose or not repaint
                or self._size != self.app.size):
            return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)
        return self  # the cells the prompt covered are being repainted (uncover)

    def on_resize(self) -> None:
        self.relayout()
        self._fit_status()
        self.update_context_line()

    # ------------------------------------------------------------ layout
    def layout_name(self) -> str:
        """"wide" (all panes), "talk" (five) or "single" (one, with tabs)."""
        w, h = self.app.size
        if self.zoomed or w < TALK[0] or h < TALK[1]:
            return "single"
        return "wide" if w >= WIDE[0] and h >= WIDE[1] else "talk"

    def single(self) -> bool:
        return self.layout_name() == "single"

    def shown(self, pane: Pane) -> bool:
        """Whether the layout has `pane` on screen now."""
        name = self.layout_name()
        return name == "wide" or pane.has_class("-shown")

    def relayout(self) -> None:
        if not self.panes:
            return
        name = self.layout_name()
        single = name == "single"
        focused = self.current_pane()
        kind = type(focused)
        if self._first_focus and focused is self.panes[0]:
            kind = Pane  # the focus the app gave at start changes no tall pane
        else:
            self._first_focus = False
        if kind in SLOT:
            self.slot, self.right_tall_slot = kind, True
        elif kind is TablesPane:
            self.right_tall_slot = False
        elif kind in (RegistersPane, VmPane):
            self.left_tall = kind
        self._order(name)
        self._layout = name
        self.set_class(single, "-single")
        self.set_class(name == "talk", "-talk")
        self.query_one(KeyFooter).compact = name != "wide"
        # -shown only matters to the stylesheet of the talk and single-pane layouts.
        for p in self.panes:
            if single:
                p.set_class(p is focused, "-shown")
            elif name == "talk":
                p.set_class(type(p) in TALK_PANES or type(p) is self.slot, "-shown")
                p.set_class(type(p) is self.left_tall or type(p) is (self.slot if self.right_tall_slot else TablesPane),
                            "-tall")
        self._tabs()
        self.refresh_panes()

    def _order(self, name: str) -> None:
        """The grid places panes in document order, each in the first free cell: the
        others want the order of PANES; the talk layout wants the registers and the
        tables first, then the VM pane and the slot's, the slot's first when it
        alone would fill the free cell of the second row (a tall registers pane, a
        short tables pane).  The slot's subtitle says which keys fill its place."""
        talk = name == "talk"
        slot_first = talk and self.left_tall is RegistersPane and self.right_tall_slot
        key = (talk, slot_first)
        if key == self._order_key:
            return
        self._order_key = key
        container = self.query_one("#panes", Container)
        vm = self.query_one(VmPane)
        slots = [p for p in self.panes if type(p) in SLOT]
        if not talk:  # PANES: the VM pane right after the caches
            container.move_child(vm, after=self.query_one(CachesPane))
        elif slot_first:
            container.move_child(vm, after=slots[-1])
        else:
            container.move_child(vm, before=slots[0])
        keys = " · ".join(f"{PANES.index(c) + 1} {c.SHORT}" for c in SLOT)
        for p in slots:
            p.border_subtitle = keys if talk else ""

    def current_pane(self) -> Pane:
        f = self.focused
        return f if isinstance(f, Pane) else self.panes[0]

    def _tabs(self) -> None:
        cur = self.current_pane()
        parts = []
        for i, p in enumerate(self.panes, 1):
            label = f" {i} {p.SHORT} "
            parts.append(f"[reverse bold]{label}[/]" if p is cur else label)
        # At 80 columns the labels leave 14: the hint shortens rather than being cut.
        roomy = self.app.size.width >= 90
        hint = ("   tab / 1-7 switch" if roomy else "  tab 1-7") + (
            ("   z: all panes" if roomy else "  z: all") if self.zoomed else "")
        text = "".join(parts) + f"[dim]{hint}[/]"
        if text != self._tabs_text:  # the same text again would still repaint (a frame of its own)
            self._tabs_text = text
            # One row high by the stylesheet: no layout pass for a new text.
            self.query_one("#tabs", Static).update(text, layout=False)

    def show_pane(self, i: int) -> None:
        if 0 <= i < len(self.panes):
            self._first_focus = False  # a choice: the talk layout gives this pane the room
            pane = self.panes[i]
            pane.add_class("-shown")
            # Focus now, and lay out for it now: Widget.focus() would move the focus
            # later, and the layout would follow it (on_descendant_focus) after the
            # first frame, in a second one.  The focus event then finds it done.
            self.set_focus(pane)
            self.relayout()

    def next_pane(self, delta: int) -> None:
        self.show_pane((self.panes.index(self.current_pane()) + delta) % len(self.panes))

    def zoom(self) -> str:
        """z: one pane, or all again; what the status line says."""
        w, h = self.app.size
        if not self.zoomed and self.single():
            return (f"the terminal is {w}x{h}: one pane at a time already (five panes from {TALK[0]}x{TALK[1]}, "
                    f"all from {WIDE[0]}x{WIDE[1]})")
        self.zoomed = not self.zoomed
        self.relayout()
        return "zoomed: one pane, z again for all" if self.zoomed else "all panes"

    # ------------------------------------------------------------ refresh
    def note(self, changes: Changes) -> None:
        """A command changed `changes`: each pane keeps it until it next updates."""
        for p in self.panes:
            p.pending = changes if p.pending is None else p.pending | changes

    def refresh_panes(self) -> None:
        """Recompute what is on screen; panes the layout hides wait."""
        wide = self.layout_name() == "wide"
        version = self.host.version
        for p in self.panes:
            if (wide or p.has_class("-shown")) and p.seen != version:
                p.seen = version
                p.update_view()
        self.update_context_line()

    def update_context_line(self) -> None:
        host = self.host
        m = host.machine
        g = m.groups.get(m.selected_group)
        d = m.domain_of(g) if g else None
        gtext = "no group"
        if g is not None:
            devs = ", ".join(f"{s}" for s in g.bdfs[:2]) + (" …" if len(g.bdfs) > 2 else "")
            dom = f"domain {d.id}" if d else "detached"
            gtext = markup(f"group {g.spec_id} ({devs}, {clip(g.devices[0][1], NAME_LIMIT)}) → {dom}")
        undo = f" · {len(m.log)} command(s), u undoes" if m.log else ""
        recorder = host.recorder
        rec = f"[bold $vtd-rec]● REC[/] {markup(clip(recorder.path.name, NAME_LIMIT))} · " if recorder else ""
        # A what-if is not the real rule: the audience must see that one is on.
        whatifs = [opt for opt in WHAT_IFS if m.option_value(opt) == "on"]
        badge = (f"[bold $vtd-whatif-text on $vtd-whatif] WHAT-IF: {' · '.join(whatifs)} [/] "
                 if whatifs else "")
        # Names are the scenario file's text: never markup (a unit called '[b]' is a name).
        scenario, unit = markup(clip(m.scenario.name, NAME_LIMIT)), markup(clip(m.selected_unit, NAME_LIMIT))
        hint = "  [dim]? help · ctrl+p palette[/]" if self.app.size.width >= WIDE[0] else ""
        text = f"{badge}{rec}[b]vtdtui[/] · scenario [b]{scenario}[/] · unit [b]{unit}[/] · {gtext}{undo}{hint}"
        key = (text, self.app.size.width)
        if key == self._context_key:
            # Unchanged (most keys, and every focus move): Static.update would repaint
            # it anyway, and after a focus move that repaint is a frame of its own.
            return
        self._context_key = key
        w = self.query_one("#context", Static)
        content = Content.from_markup(text)
        # Wrapped to the rows it needs (two at 80 columns): a layout only when that changes.
        self._fit(w, content, 3)
        w.update(content, layout=False)
        self._wrapped["context"] = content.plain

    # ------------------------------------------------------------ lines
    def show_status(self, text: str, error: bool) -> None:
        """The status line, as many rows as `text` needs (the widget's no-markup:
        `text` is printable and clipped already)."""
        w = self.query_one("#status", Static)
        self._status = text
        self._fit_status()
        w.update(text, layout=False)
        w.set_class(error, "-error")

    def _fit_status(self) -> None:
        # Up to a quarter of the screen (three rows at least); past that it scrolls.
        whole = self._fit(self.query_one("#status", Static), Content(self._status), max(3, self.app.size.height // 4))
        self._wrapped["status"] = self._status if whole else ""

    def _fit(self, widget: Static, content: Content, most: int) -> bool:
        """Give `widget` the rows `content` wraps to, at most `most`; True when
        that is all of it."""
        width = max(1, self.app.size.width - widget.styles.padding.width)
        need = len(content.wrap(width)) if content.cell_length > width else 1
        rows = max(1, min(most, need))
        if widget.styles.height is None or widget.styles.height.value != rows:
            widget.styles.height = rows
        return need <= rows

    def wrapped_texts(self) -> list[str]:
        """The whole texts of the lines that wrap (status, context) while all of each
        is on screen: a fixture's `expect` of a status message holds at any width."""
        return [t for t in self._wrapped.values() if t]

    def show_caption(self, caption: str, state: str, hint: str, error: str = "") -> None:
        """The replay banner: the current caption, progress, and the presenter's keys."""
        w = self.query_one("#caption", Static)
        parts: list[tuple[str, str] | str] = [(f" {state} ", "reverse"), "  ",
                                              (printable(clip(caption, STATUS_LIMIT)), "bold")]
        if error:
            parts.append(("\n" + printable(clip(error, STATUS_LIMIT)), "bold"))
        elif hint:
            parts.append((f"\n{hint}", "dim"))
        w.update(Content.assemble(*parts))
        w.add_class("-on")
        w.set_class(bool(error), "-error")
