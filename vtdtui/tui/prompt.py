"""One-line prompts (group, map, unmap, DMA, command, filter).

The prompt checks the text as it is typed and explains what is wrong inline; Enter
runs it through the app, and a refusal keeps the prompt open with the reason.
Escape closes it without changing anything.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.events import ScreenResume
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from ..textsafe import clip, printable

# The hint is a line or two under the field: a refusal quoting a huge text is cut.
HINT_LIMIT = 1000

# check(text) → (ok, hint); submit(text) → error message or None when done.
Check = Callable[[str], tuple[bool, str]]
Submit = Callable[[str], str | None]


class PromptScreen(ModalScreen[bool]):
    """The one prompt screen of the app, installed once and shown again for each
    prompt: building, styling and laying out a new screen per prompt was most of
    what a prompt cost (a replay types hundreds of them)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self) -> None:
        super().__init__()
        self._styled_for: tuple = ()  # _style_token() when last restyled whole
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
        with Vertical(id="prompt"):
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
        self.query_one("#prompt-title", Static).update(printable(clip(self.title_text, HINT_LIMIT)))
        self.query_one("#prompt-usage", Static).update(self.usage)
        field = self.query_one(Input)
        field.placeholder = self.usage
        with field.prevent(Input.Changed):
            field.value = self.value
        field.focus()
        field.select_all()  # as a new Input does on focus: typing replaces the old text
        self._show(*self.check(self.value)) if self.value else self._show(True, "")
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

    def _drain(self) -> None:
        self._ready = True
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

    def _show(self, ok: bool, hint: str) -> None:
        w = self.query_one("#prompt-hint", Static)
        w.update(printable(clip(hint, HINT_LIMIT)))  # a refusal may quote what was typed
        w.set_class(not ok, "-error")

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
            self._dismissed = True
            self.dismiss(True)
        else:
            self._show(False, error)

    def action_cancel(self) -> None:
        if not self._dismissed:
            self._dismissed = True
            self.dismiss(False)
