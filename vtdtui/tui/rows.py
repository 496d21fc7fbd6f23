"""A pane of view lines drawn with Textual's Line API.

Only the rows on screen are turned into strips, so a pane over thousands of rows
costs what its height costs.  Rows may be any sequence (a lazy one too); a few
header lines stay put while the body scrolls under them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.scrollbar import ScrollBarRender
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


class _Pass(NamedTuple):
    """What a render pass of a pane's lines reads, read once (see render_lines)."""

    has_bar: bool
    width: int
    height: int
    style: Style


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
    # The pane draws its vertical scrollbar in its own last column (the stylesheet
    # gives it `overflow-y: hidden`, so Textual shows no ScrollBar widget).  Textual's
    # scrollbar is a widget of its own: a row count that crosses the pane's height
    # shows or hides it, which lays out the whole screen, and every layout or focus
    # change repaints each pane's ScrollBar from its own task, after the screen's
    # frame: a second frame (bench/frametrace.py shows both).  Drawn here, with
    # Textual's own renderer and colours, it is part of the pane's lines.
    DRAWN_SCROLLBAR = False

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
        self._bar_key: tuple = ()
        self._bar: list[Segment] = []
        self._pass: _Pass | None = None  # set while Textual renders this pane's lines

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
        self._repaint()

    def _repaint(self) -> None:
        """Repaint what changed on screen: nothing when the visible lines are what the
        pane shows already; else only the lines that differ, when they are few (a
        toggled bit, a moved cursor): Textual renders a whole pane, border and all,
        line by line, and a key's frame is mostly that rendering."""
        shown = self._visible_signature()
        old, self._shown = self._shown, shown
        if shown == old:
            return
        if old and old[:-1] == shown[:-1] and self._partial_repaint():
            before, after = old[-1], shown[-1]
            changed = [y for y in range(len(after)) if y >= len(before) or before[y] != after[y]]
            changed += range(len(after), len(before))
            if len(changed) * 2 <= len(after):
                width = self.scrollable_content_region.width
                self.refresh(*(Region(0, y, width, 1) for y in changed))
                return
        self.refresh()

    def _partial_repaint(self) -> bool:
        """Whether a line of the signature is a line on screen (a wrapping pane says no)."""
        return True

    def _visible_signature(self) -> tuple:
        """What the pane shows: (scroll, focus, scrollbar, size, each line on screen
        with whether it is the cursor's)."""
        top = self.scroll_offset.y
        rows = self.rows
        height = self.scrollable_content_region.height
        lines = [(tuple(h), False) for h in self.header[:height]]
        end = min(len(rows), top + height - len(lines))
        lines += [(tuple(rows[i]), i == self.cursor) for i in range(top, end)]
        bar = self.virtual_size.height if self.has_bar else 0
        return (top, self.has_focus, bar, self.size, tuple(lines))

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
    @property
    def has_bar(self) -> bool:
        """The pane draws its scrollbar now (its rows do not fit)."""
        if self._pass is not None:
            return self._pass.has_bar
        return self.DRAWN_SCROLLBAR and self.virtual_size.height > self.scrollable_content_region.height

    @property
    def text_width(self) -> int:
        """The cells a row gets: the content region less the drawn scrollbar."""
        if self._pass is not None:
            return self._pass.width
        return max(0, self.scrollable_content_region.width - self.has_bar)

    def render_lines(self, crop: Region) -> list[Strip]:
        # What every line of a pass reads (the pane's style walks all its ancestors'
        # styles, the regions are computed properties) is read once per pass: it
        # was a third of a key's frame, for lines that mostly come from the cache.
        region = self.scrollable_content_region
        has_bar = self.DRAWN_SCROLLBAR and self.virtual_size.height > region.height
        self._pass = _Pass(has_bar, max(0, region.width - has_bar), region.height, self.rich_style)
        try:
            return super().render_lines(crop)
        finally:
            self._pass = None

    @property
    def line_style(self) -> Style:
        """The pane's own style (its background under every cell), once per pass."""
        return self._pass.style if self._pass is not None else self.rich_style

    def _bar_segment(self, y: int) -> Segment:
        """Row `y` of the drawn scrollbar: what Textual's ScrollBar.render draws."""
        height = self.scrollable_content_region.height if self._pass is None else self._pass.height
        styles = self.styles
        background, color = styles.scrollbar_background, styles.scrollbar_color
        if background.a < 1:
            background = self.background_colors[0] + background
        color = background + color
        key = (height, self.virtual_size.height, self.scroll_offset.y, color, background)
        if key != self._bar_key:
            self._bar_key = key
            bar = ScrollBarRender.render_bar(
                size=height, virtual_size=self.virtual_size.height, window_size=height,
                position=self.scroll_offset.y, thickness=1, vertical=True,
                back_color=background.rich_color, bar_color=color.rich_color)
            # On the pane's own style, as the compositor puts a ScrollBar widget's
            # cells; without the mouse meta of Textual's (no ScrollBar takes a click).
            base = self.line_style
            self._bar = [Segment(seg.text, base + seg.style.clear_meta_and_links()) if seg.style else seg
                         for seg in bar.segments]
        return self._bar[y] if y < len(self._bar) else Segment(" ")

    def render_line(self, y: int) -> Strip:
        strip = self._render_text_line(y)
        if self.has_bar:
            strip = Strip([*strip, self._bar_segment(y)], strip.cell_length + 1)
        return strip

    def _render_text_line(self, y: int) -> Strip:
        width = self.text_width
        scroll_x, scroll_y = self.scroll_offset
        palette = self.palette
        if y < len(self.header):
            line, cursor = self.header[y], False
        else:
            i = y - len(self.header) + scroll_y
            if i >= len(self.rows):
                return Strip.blank(width, self.line_style + palette[""])
            line, cursor = self.rows[i], i == self.cursor
        key = (line, width, scroll_x, cursor and self.has_focus, cursor)
        strip = self._strips.get(key)
        if strip is None:
            if len(self._strips) > 4 * 1024:  # a few screens' worth: rows scroll by
                self._strips.clear()
            strip = self._strips[key] = self._strip(line, width, scroll_x, cursor, palette)
        return strip

    @property
    def allow_vertical_scroll(self) -> bool:
        # The mouse wheel scrolls a pane whose scrollbar it draws itself.
        if self.DRAWN_SCROLLBAR:
            return not self.disabled and self.max_scroll_y > 0
        return super().allow_vertical_scroll

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
        return strip.apply_style(self.line_style)

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
        self._repaint()  # the two cursor lines, or all when it scrolled

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor + direction * self.body_height)

    def action_jump(self, where: int) -> None:
        self.move_cursor(where if where >= 0 else len(self.rows) - 1)

    def key_enter(self) -> None:
        if self.rows:
            self.post_message(self.Activated(self, self.cursor))
