"""One-line prompts (group, map, unmap, DMA, command, filter).

The prompt checks the text as it is typed and explains what is wrong inline; Enter
runs it through the app, and a refusal keeps the prompt open with the reason.
Escape closes it without changing anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from rich.cells import cell_len
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.events import Resize, ScreenResume, ScreenSuspend
from textual.geometry import Region
from textual.screen import ModalScreen, Screen
from textual.widgets import Input, Static

from ..textsafe import clip, printable

# The hint is a line or two under the field: a refusal quoting a huge text is cut.
HINT_LIMIT = 1000

# check(text) → (ok, hint); submit(text) → error message or None when done.
Check = Callable[[str], tuple[bool, str]]
Submit = Callable[[str], str | None]


@runtime_checkable
class Uncovered(Protocol):
    """A screen that can repaint only what a closed prompt covered (the main screen)."""

    def uncover(self, region: Region | None) -> None: ...


class PromptBox(Vertical):
    """The prompt's box; it tells its screen where it was drawn."""

    def on_resize(self, event: Resize) -> None:
        self.screen.cover(self.region)  # type: ignore[attr-defined]


class PromptScreen(ModalScreen[bool]):
    """The one prompt screen of the app, installed once and shown again for each
    prompt: building, styling and laying out a new screen per prompt was most of
    what a prompt cost (a replay types hundreds of them)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self) -> None:
        super().__init__()
        self._styled_for: tuple = ()  # _style_token() when last restyled whole
        self._covered = Region()  # every cell the box was drawn on since it opened
        self._lines: dict[str, str] = {}  # what the box's lines show, by selector
        self._hint_error = False
        self._below: Screen | None = None
        self.open("", "", lambda text: (True, ""), lambda text: None)

    def open(self, title: str, usage: str, check: Check, submit: Submit, value: str = "") -> PromptScreen:
        """Set up the next prompt; the caller pushes the screen."""
        self.title_text, self.usage, self.check, self.submit = title, usage, check, submit
        self.value = value
        self._ready = False
        self._dismissed = False
        self._pending: list[tuple[str, str | None]] = []
        self._fresh = True  # shown next: set up the fields (see _on_screen_resume)
        return self

    def compose(self) -> ComposeResult:
        with PromptBox(id="prompt"):
            # What is typed comes back in these ('[x=' is text here, not markup).
            yield Static(id="prompt-title", markup=False)
            yield Static(id="prompt-usage", markup=False)
            yield Input(id="prompt-input")
            yield Static("", id="prompt-hint", markup=False)
            yield Static("Enter runs it · Escape cancels", id="prompt-keys")

    def _on_screen_resume(self, event: ScreenResume) -> None:
        # Textual restyles a pushed screen whole (it may have missed a theme or CSS
        # change while off the stack): for this screen, shown again and again, only
        # when something it is styled by changed since it was last styled.  Every
        # class and focus change of its widgets restyles them as it happens.  (One
        # handler: Textual calls _on_screen_resume or on_screen_resume of a class,
        # not both; Screen's own runs after this one and reads refresh_styles.)
        token = self._style_token()
        if token == self._styled_for:
            event.refresh_styles = False
        self._styled_for = token
        if not self._fresh:  # back from the palette or help over it: keep what was typed
            return
        self._fresh = False
        # The title names the group's device (the scenario's text): no control characters.
        self._set_line("#prompt-title", printable(clip(self.title_text, HINT_LIMIT)))
        self._set_line("#prompt-usage", self.usage)
        field = self.query_one(Input)
        if field.placeholder != self.usage:
            # The field's size is its box's, whatever it says: no layout (a reactive
            # with layout=True would lay the screen out after its first frame).
            field.set_reactive(Input.placeholder, self.usage)
            field.refresh()
        if field.value != self.value:  # emptied as the last prompt closed (_close)
            with field.prevent(Input.Changed):
                field.value = self.value
        field.focus()
        field.select_all()  # as a new Input does on focus: typing replaces the old text
        self._show(*self.check(self.value)) if self.value else self._show(True, "")
        # Textual paints a screen it shows whole (Screen's resume, after this): the
        # box's widgets need not ask the screen for their own repaint, which would
        # come after that frame, as a second one.  (textual < 8.3, pinned.)
        for widget in (box := self.query_one(PromptBox), *box.query("*")):
            widget._repaint_required = False
        self.call_after_refresh(self._drain)

    def _style_token(self) -> tuple:
        """What the styles of this screen's widgets come from besides their own
        classes and focus: the stylesheet (a new rules list when reparsed), Textual's
        count of CSS invalidations (a theme change), and the app's pseudo-classes."""
        app = self.app
        return (getattr(app.stylesheet, "_rules", None), app._css_update_count, app.current_theme.name,
                app.app_focus, app.native_ansi_color, app.no_color, app.is_inline)

    @property
    def ready(self) -> bool:
        """The input has focus and takes keys directly."""
        return self._ready

    def hold(self, key: str, character: str | None) -> bool:
        """Keep a key that arrived before the input is ready (a fast typist, a
        replay); True when it was kept.  The app calls this before dispatching."""
        if self._ready:
            return False
        self._pending.append((key, character))
        return True

    def cover(self, region: Region) -> None:
        self._covered = self._covered.union(region) if self._covered else region

    def _close(self, result: bool) -> None:
        # The screen below repaints only the cells the box covered (the prompt dims
        # nothing): Textual would repaint all of them (MainScreen.uncover).
        self._dismissed = True
        self.cover(self.query_one(PromptBox).region)
        stack = self.app.screen_stack
        below = stack[-2] if len(stack) > 1 and stack[-1] is self else None
        self._below = below if isinstance(below, Uncovered) else None
        if self._below is not None:
            self._below.uncover(self._covered)
        self._covered = Region()
        field = self.query_one(Input)
        with field.prevent(Input.Changed):
            field.value = ""  # now, not as the next prompt opens: its first frame shows it
        self.dismiss(result)

    def _on_screen_suspend(self, event: ScreenSuspend) -> None:
        # Textual asks the screen below for its repaints before this (see MainScreen.uncover).
        if self._below is not None:
            self._below.uncover(None)
            self._below = None

    def _drain(self) -> None:
        self._ready = True
        self.cover(self.query_one(PromptBox).region)
        field = self.query_one(Input)
        pending, self._pending = self._pending, []
        for i, (key, ch) in enumerate(pending):
            if key == "escape":
                self.action_cancel()
            elif key == "enter":
                self.on_input_submitted(Input.Submitted(field, field.value))
            elif ch and ch.isprintable():
                field.insert_text_at_cursor(ch)
            elif key == "backspace":
                field.action_delete_left()
            if self._dismissed:
                # The rest was typed for whatever comes after this prompt.
                for key, ch in pending[i + 1:]:
                    self.app.inject_key(key, ch)  # type: ignore[attr-defined]
                return

    def _set_line(self, selector: str, text: str) -> bool:
        """Show `text` in a line of the box; False when it shows it already.  A text
        that stays on one line keeps the box's size: no layout of the screen, which
        Textual does after the frame it was asked in (a second frame per key)."""
        old = self._lines.get(selector)
        if old == text:
            return False
        w = self.query_one(selector, Static)
        width = w.content_region.width
        one_line = {cell_len(t) < width and "\n" not in t for t in (text, old or "")}
        self._lines[selector] = text
        w.update(text, layout=old is None or one_line != {True})
        return True

    def _show(self, ok: bool, hint: str) -> None:
        # Most keys typed leave the hint as it was: then nothing is repainted.
        if self._set_line("#prompt-hint", printable(clip(hint, HINT_LIMIT))) or ok == self._hint_error:
            self.query_one("#prompt-hint", Static).set_class(not ok, "-error")
            self._hint_error = not ok

    def tell(self, message: str) -> bool:
        """Show an error about the text in the hint line; False while the prompt is
        not on screen yet (the caller says it elsewhere)."""
        if not self._ready or self._dismissed:
            return False
        self._show(False, message)
        return True

    def on_input_changed(self, event: Input.Changed) -> None:
        self._show(*self.check(event.value)) if event.value.strip() else self._show(True, "")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self._dismissed:
            return
        error = self.submit(event.value)
        if error is None:
            self._close(True)
        else:
            self._show(False, error)

    def action_cancel(self) -> None:
        if not self._dismissed:
            self._close(False)
