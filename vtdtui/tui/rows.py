"""A pane of view lines drawn with Textual's Line API.

Only the rows on screen are turned into strips, so a pane over thousands of rows
costs what its height costs.  Rows may be any sequence (a lazy one too); a few
header lines stay put while the body scrolls under them.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..textsafe import clip, markup, printable
from ..views.style import Line
from .theme import THEME, token_styles

# A pane title is one border row: what is longer is never seen, only paid for.
TITLE_LIMIT = 400


def to_strip(line: Line, palette: dict[str, Style] = THEME) -> Strip:
    # Segments go to the terminal as they are: a name holding ESC or CR (a scenario's
    # unit or device name) would act on the terminal and take no cells in the layout.
    return Strip([Segment(printable(text), palette.get(tok, palette[""])) for text, tok in line if text])


class RowsPane(ScrollView, can_focus=True):
    """Base of every pane: header lines, scrolling body rows, one cursor row."""

    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "Top", show=False),
        Binding("end", "jump(-1)", "Bottom", show=False),
    ]
    TITLE = ""
    SHORT = ""  # the name on the tab strip at small sizes

    class Activated(Message):
        """Enter on a row (panes that drill down handle it)."""

        def __init__(self, pane: RowsPane, index: int) -> None:
            super().__init__()
            self.pane = pane
            self.index = index

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.header: list[Line] = []
        self.rows: Sequence[Line] = []
        self.cursor = 0
        self.seen = -1  # the app's state version this pane last rendered
        self._shown: tuple = ()  # what set_rows last painted (see there)
        # Rendered lines by (line, width, scroll, cursor): most rows of a repaint are
        # rows the pane showed before (a journal that moved up by one event).
        self._strips: dict[tuple, Strip] = {}
        self._title = self.border_title = self.TITLE
        self._palette: dict[str, Style] = THEME
        self._palette_of: object = None  # the app's theme variables it was made from

    # ------------------------------------------------------------ theme
    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, self._retheme)

    def _retheme(self, _theme: object) -> None:
        self._shown = ()
        self.refresh()

    @property
    def palette(self) -> dict[str, Style]:
        """Token → Rich style in the app's theme (a new theme, new styles: the
        rendered lines cached in the old ones go)."""
        variables = self.app.theme_variables
        if variables is not self._palette_of:
            self._palette_of = variables
            self._palette = token_styles(variables) if variables else THEME
            self._strips.clear()
        return self._palette

    # ------------------------------------------------------------ content
    def set_rows(self, rows: Sequence[Line], header: list[Line] | None = None) -> None:
        self.header = header or []
        self.rows = rows
        self.cursor = max(0, min(self.cursor, len(rows) - 1))
        # No horizontal scrolling (cut lines end in …), so the width is the pane's:
        # nothing here may cost more than the rows on screen.
        size = Size(0, len(self.header) + len(rows))
        if size != self.virtual_size:
            # A pane's box never depends on its rows, so a new row count needs no
            # layout of the whole screen (which `virtual_size = ` asks for, and which
            # repaints every widget): only this pane's scroll range changes, unless
            # that shows or hides its scrollbar.  (textual < 8.3, pinned.)
            bars = (self.show_vertical_scrollbar, self.show_horizontal_scrollbar)
            self.set_reactive(ScrollView.virtual_size, size)
            self._scroll_update(size)
            if (self.show_vertical_scrollbar, self.show_horizontal_scrollbar) != bars:
                self.refresh(layout=True)
        # Most commands change two or three panes; a pane whose visible rows are what
        # it shows already need not be painted again (a repaint of every pane is
        # most of a keystroke's cost).
        shown = self._visible_signature()
        if shown != self._shown:
            self._shown = shown
            self.refresh()

    def _visible_signature(self) -> tuple:
        top = self.scroll_offset.y
        rows = self.rows
        end = min(len(rows), top + self.scrollable_content_region.height)
        return (len(rows), self.cursor, top, self.has_focus, tuple(map(tuple, self.header)),
                tuple(tuple(rows[i]) for i in range(top, end)))

    def set_title(self, title: str) -> None:
        # Assigning border_title repaints the pane even when the text is the same.
        if title != self._title:
            self._title = title
            # Textual parses a border title as markup; the title holds unit and
            # scenario names, which are the user's text.
            self.border_title = markup(clip(title, TITLE_LIMIT))

    def update_view(self) -> None:
        """Recompute this pane's rows from the machine (subclasses)."""

    @property
    def body_height(self) -> int:
        return max(1, self.scrollable_content_region.height - len(self.header))

    # ------------------------------------------------------------ Line API
    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        scroll_x, scroll_y = self.scroll_offset
        palette = self.palette
        if y < len(self.header):
            line, cursor = self.header[y], False
        else:
            i = y - len(self.header) + scroll_y
            if i >= len(self.rows):
                return Strip.blank(width, self.rich_style + palette[""])
            line, cursor = self.rows[i], i == self.cursor
        key = (line, width, scroll_x, cursor and self.has_focus, cursor)
        strip = self._strips.get(key)
        if strip is None:
            if len(self._strips) > 4 * 1024:  # a few screens' worth: rows scroll by
                self._strips.clear()
            strip = self._strips[key] = self._strip(line, width, scroll_x, cursor, palette)
        return strip

    def _strip(self, line: Line, width: int, scroll_x: int, cursor: bool, palette: dict[str, Style]) -> Strip:
        full = to_strip(line, palette)
        strip = full.crop_extend(scroll_x, scroll_x + width, palette[""])
        if full.cell_length > scroll_x + width and width > 1:
            # Say that the line goes on: a cut number must not read as another number.
            strip = Strip.join([strip.crop(0, width - 1), Strip([Segment("…", palette["dim"])])])
        if cursor:
            strip = strip.apply_style(palette["cursor"] if self.has_focus else palette["cursor-blurred"])
        # The pane's own background under every cell, as Textual's line widgets do:
        # a cell without one would show the terminal's default (dark under a light theme).
        return strip.apply_style(self.rich_style)

    def on_focus(self) -> None:
        self.refresh()

    def on_resize(self) -> None:
        # A pane hidden by zoom or the tab layout loses its scroll position; the
        # cursor (the journal's newest event, when following) comes back into view.
        self.call_after_refresh(lambda: self.move_cursor(self.cursor))  # the cursor then, not now

    def on_blur(self) -> None:
        self.refresh()

    # ------------------------------------------------------------ cursor
    def move_cursor(self, index: int) -> None:
        n = len(self.rows)
        if not n:
            return
        self.cursor = max(0, min(index, n - 1))
        top = round(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + self.body_height:
            self.scroll_to(y=self.cursor - self.body_height + 1, animate=False, immediate=True)
        self.refresh()

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor + direction * self.body_height)

    def action_jump(self, where: int) -> None:
        self.move_cursor(where if where >= 0 else len(self.rows) - 1)

    def key_enter(self) -> None:
        if self.rows:
            self.post_message(self.Activated(self, self.cursor))
