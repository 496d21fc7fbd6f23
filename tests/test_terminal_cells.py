"""What the terminal shows after each key equals what a full repaint shows.

Keys repaint only what changed (a pane's changed lines, the box a closed prompt
covered): a region forgotten would leave stale cells on the user's terminal that no
snapshot sees (an SVG snapshot renders the screen whole).  These tests keep a model
of the terminal, fed with every frame Textual writes (its compositor updates, as
they go to the driver), and compare it with the whole screen rendered afresh.
"""

from __future__ import annotations

import functools

import pytest
from rich.console import Console
from rich.segment import ControlType
from rich.style import Style
from textual.app import App
from textual.command import CommandPalette
from textual.widgets import Input

from vtdtui.machine import Machine
from vtdtui.tui.app import VtdApp

SIZE = (160, 50)


@functools.lru_cache(maxsize=65536)
def seen(ch: str, style: Style | None) -> tuple[str, str]:
    """A cell as the eye sees it: a blank shows only its background (a screen shown
    through a transparent one gives its blanks a foreground colour, which no one sees)."""
    style = style or Style()
    if ch == " " and not (style.underline or style.reverse or style.strike or style.overline):
        return (" ", str(style.bgcolor or ""))
    return (ch, str(style))


class Terminal:
    """Cells (text, style) as a terminal would hold them after the frames written."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.cells = [[seen(" ", None)] * width for _ in range(height)]
        self.frames = 0

    def apply(self, update) -> None:
        self.frames += 1
        console = Console(width=self.width, height=self.height, legacy_windows=False)
        x = y = 0
        for seg in console.render(update):
            if seg.control:
                for code in seg.control:
                    if code[0] == ControlType.CURSOR_MOVE_TO:
                        x, y = code[1], code[2]
                continue
            if seg.text == "\n":
                x, y = 0, y + 1
                continue
            for ch in seg.text:
                if 0 <= y < self.height and 0 <= x < self.width:
                    self.cells[y][x] = seen(ch, seg.style)
                x += 1

    def lines(self) -> list[list[tuple[str, str]]]:
        return [list(row) for row in self.cells]


def rendered(app: App) -> list[list[tuple[str, str]]]:
    """The whole screen (and the screens it shows through), rendered now."""
    screen = app.screen
    update = screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    t = Terminal(*app.size)
    t.apply(update)
    return t.lines()


@pytest.fixture
def terminal(monkeypatch):
    holder: dict[str, Terminal] = {}
    orig = App._display

    def display(self, screen, renderable):
        if renderable is not None and not self._batch_count:
            term = holder.setdefault("t", Terminal(*self.size))
            term.apply(renderable)
        return orig(self, screen, renderable)

    monkeypatch.setattr(App, "_display", display)
    return holder


def diff(a, b) -> list[str]:
    out = []
    for y, (ra, rb) in enumerate(zip(a, b)):
        if ra != rb:
            xs = [x for x, (ca, cb) in enumerate(zip(ra, rb)) if ca != cb]
            out.append(f"row {y}: cells {xs[0]}..{xs[-1]}: {''.join(c for c, _ in ra)!r} != {''.join(c for c, _ in rb)!r}")
    return out


KEYS = [
    ["g", *"5", "enter"], ["a"], ["n", *"0x40000000 64K rw", "enter"], ["t", *"0x40000000 r", "enter"],
    ["x", *"0x40000000 64K", "enter"], ["n", *"0x4", "escape"], ["m"], ["s"], ["question_mark"], ["escape"],
    ["d"], ["u"], ["ctrl+r"], ["slash", *"actor=driver", "enter"], ["slash", "ctrl+u", "enter"], ["tab"],
    ["n"], [*"0x40"], ["backspace"], ["escape"], ["x"], [*"zz"], ["enter"], ["escape"], ["g"], ["escape"],
    ["right_square_bracket"], ["left_square_bracket"], ["z"], ["z"],
    ["7"], ["pagedown"], ["home"], ["enter"], ["escape"], ["end"], ["ctrl+p"], ["escape"], ["1"], ["c"], ["c"],
]


# At 80x24 (one pane at a time, the prompt over most of it) the first half suffices.
@pytest.mark.parametrize("size, script", [((160, 50), KEYS), ((80, 24), KEYS[:16])])
async def test_the_terminal_shows_what_a_full_repaint_shows(terminal, size, script) -> None:
    app = VtdApp(Machine.from_scenario(None))
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        for keys in script:
            await pilot.press(*keys)
            for field in app.screen.query(Input):
                field.cursor_blink = False  # it blinks on its own clock: shown steady, then compared
            await pilot.pause()
            if isinstance(app.screen, CommandPalette):
                continue  # Textual's own screen (its search field paints apart from its frames)
            term = terminal["t"]
            # A timer's change (the graph pane's networkx build after the start, say)
            # may be between its state and its frame: settled, a stale cell stays.
            for _ in range(20):
                stale = diff(term.lines(), rendered(app))
                if not stale:
                    break
                await pilot.pause(0.05)
            assert not stale, (keys, stale[:5])
