"""The main screen: the context line, the replay caption, the tab strip, the seven
panes, the status line and the footer; and how they are laid out (all panes at the
talk size, one at a time below it or when zoomed)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.reactive import Reactive
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Static

from ..textsafe import clip, markup, printable
from .footer import KeyFooter
from .messages import Host, MainReady
from .panes import PANES, Pane

# Below this the panes do not fit side by side: one pane at a time, with tabs.
WIDE = (140, 40)

# The status line is one row: a refusal that quotes a pasted megabyte is cut here.
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
        self.panes: list[Pane] = []  # in the order of PANES, once mounted
        self.zoomed = False

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
        self.post_message(MainReady())

    def begin(self) -> None:
        """Lay out the panes, the first one focused (the app calls this as it starts)."""
        self.panes = list(self.query(Pane))
        self.panes[0].focus()
        self.relayout()

    def on_descendant_focus(self) -> None:
        self.relayout()

    def on_resize(self) -> None:
        self.relayout()

    # ------------------------------------------------------------ layout
    def single(self) -> bool:
        w, h = self.app.size
        return self.zoomed or w < WIDE[0] or h < WIDE[1]

    def relayout(self) -> None:
        if not self.panes:
            return
        single = self.single()
        self.set_class(single, "-single")
        self.query_one(KeyFooter).compact = single
        if single:  # -shown only matters to the single-pane layout's stylesheet
            focused = self.current_pane()
            for p in self.panes:
                p.set_class(p is focused, "-shown")
        self._tabs()
        self.refresh_panes()

    def current_pane(self) -> Pane:
        f = self.focused
        return f if isinstance(f, Pane) else self.panes[0]

    def _tabs(self) -> None:
        cur = self.current_pane()
        parts = []
        for i, p in enumerate(self.panes, 1):
            label = f" {i} {p.SHORT} "
            parts.append(f"[reverse bold]{label}[/]" if p is cur else label)
        hint = "   tab / 1-7 switch" + ("   z: all panes" if self.zoomed else "")
        # One row high by the stylesheet: no layout pass for a new text.
        self.query_one("#tabs", Static).update("".join(parts) + f"[dim]{hint}[/]", layout=False)

    def show_pane(self, i: int) -> None:
        if 0 <= i < len(self.panes):
            self.panes[i].add_class("-shown")
            self.panes[i].focus()

    def next_pane(self, delta: int) -> None:
        self.show_pane((self.panes.index(self.current_pane()) + delta) % len(self.panes))

    def zoom(self) -> str:
        """z: one pane, or all again; what the status line says."""
        w, h = self.app.size
        if not self.zoomed and (w < WIDE[0] or h < WIDE[1]):
            return f"the terminal is {w}x{h}: one pane at a time already (all panes from {WIDE[0]}x{WIDE[1]})"
        self.zoomed = not self.zoomed
        self.relayout()
        return "zoomed: one pane, z again for all" if self.zoomed else "all panes"

    # ------------------------------------------------------------ refresh
    def refresh_panes(self) -> None:
        """Recompute what is on screen; panes hidden by the single-pane layout wait."""
        single = self.single()
        cur = self.current_pane()
        version = self.host.version
        for p in self.panes:
            if (not single or p is cur) and p.seen != version:
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
        rec = f"[bold red]● REC[/] {markup(clip(recorder.path.name, NAME_LIMIT))} · " if recorder else ""
        # Names are the scenario file's text: never markup (a unit called '[b]' is a name).
        scenario, unit = markup(clip(m.scenario.name, NAME_LIMIT)), markup(clip(m.selected_unit, NAME_LIMIT))
        text = (f"{rec}[b]vtdtui[/] · scenario [b]{scenario}[/] · unit [b]{unit}[/] · {gtext}{undo}"
                "  [dim]? help · ctrl+p palette[/]")
        self.query_one("#context", Static).update(text, layout=False)

    # ------------------------------------------------------------ lines
    def show_status(self, text: str, error: bool) -> None:
        """One row, the widget's no-markup: `text` is printable and clipped already."""
        w = self.query_one("#status", Static)
        w.update(text, layout=False)
        w.set_class(error, "-error")

    def show_caption(self, caption: str, state: str, hint: str, error: str = "") -> None:
        """The replay banner: the current caption, progress, and the presenter's keys."""
        w = self.query_one("#caption", Static)
        text = Text.assemble((f" {state} ", "reverse"), "  ", (printable(clip(caption, STATUS_LIMIT)), "bold"))
        if error:
            text.append("\n" + printable(clip(error, STATUS_LIMIT)), "bold red")
        elif hint:
            text.append(f"\n{hint}", "dim")
        w.update(text)
        w.add_class("-on")
        w.set_class(bool(error), "-error")
