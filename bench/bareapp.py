"""The baseline app of bench/terminal.py: a bare Textual app with vtdtui's panes and footer.

Seven bordered panes in vtdtui's places (a status line, then registers | tables |
caches on top, KVM | IOPTEs | graph in the middle, the journal across the bottom), each
holding a screenful of plain lines, and Textual's Footer showing vtdtui's own key table
(vtdtui.tui.bindings: the same keys, words and ids).  Every key of that table that
changes something in vtdtui repaints exactly one pane here (the registers pane gets a
new line of text); the rest are no-ops.  Run as a whole process in a terminal:

    python bench/bareapp.py

It imports Textual and vtdtui's key table (Textual's Binding only), nothing heavier, so
its startup is Textual's own.
"""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.containers import Horizontal
from textual.widgets import Footer, Static

from vtdtui.tui.bindings import BINDINGS, PANE_COUNT

TITLES = ("registers", "tables", "caches", "KVM · VFIO", "IOPTEs", "domains · groups · devices", "journal")
LINES = 40  # lines of text in each pane: more than any pane shows at 160x50


class BareApp(App):
    BINDINGS = BINDINGS
    CSS = """
    #status { height: 1; }
    .row { height: 1fr; }
    .pane { border: round $accent; width: 1fr; height: 1fr; overflow: hidden; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.presses = 0

    def compose(self) -> ComposeResult:
        assert len(TITLES) == PANE_COUNT
        yield Static("bare · the baseline of bench/terminal.py", id="status")
        panes = [Static(self._text(i), classes="pane", id=f"pane{i}") for i in range(PANE_COUNT)]
        panes[-1].styles.height = "1fr"
        for p, title in zip(panes, TITLES):
            p.border_title = title
        with Horizontal(classes="row"):
            yield from panes[0:3]
        with Horizontal(classes="row"):
            yield from panes[3:6]
        yield panes[6]
        yield Footer()

    def _text(self, pane: int) -> str:
        return "\n".join(f"pane {pane} line {n:3d} · {self.presses:5d} · " + "x" * 24 for n in range(LINES))

    def _repaint_one(self, *_args: object) -> None:
        self.presses += 1
        self.query_one("#pane0", Static).update(self._text(0))

    # vtdtui's actions: each repaints one pane.
    action_toggle = action_command = action_group_command = _repaint_one
    action_undo = action_redo = action_cycle_option = action_cycle_outcome = _repaint_one
    action_pane = action_pane_to = _repaint_one

    def action_prompt(self, *_args: object) -> None:
        pass

    def action_zoom(self) -> None:
        pass


if __name__ == "__main__":
    BareApp().run()
