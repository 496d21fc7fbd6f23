"""The footer, recomposed only when the keys it shows change.

Textual's Footer rebuilds its FooterKey widgets on every focus change; with our two
dozen keys that is ~60 ms of widget churn per Tab between panes whose shown keys
are the same, and twice per prompt.  This one compares what it would show with what
it shows, and waits while a prompt covers it.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer
from textual.widgets._footer import FooterKey


class KeyFooter(Footer):
    def _shown_keys(self) -> tuple:
        return tuple(
            (b.key, b.description, enabled, tooltip)
            for (_, b, enabled, tooltip) in self.screen.active_bindings.values() if b.show
        )

    def compose(self):
        if self._bindings_ready:
            self._shown = self._shown_keys()
        compact = self.compact
        for widget in super().compose():
            if isinstance(widget, FooterKey) and "compact" in (widget._reactive_connect or {}):
                # Born with the footer's compact value and class: Textual's FooterKey
                # starts compact (its watcher adds the class, a restyle) and the data
                # binding then sets the footer's value (another restyle when that
                # differs): two restyles per key, fifty per recompose.  (The palette
                # key is not bound: it stays compact, as Textual has it.)
                widget.set_reactive(FooterKey.compact, compact)
                widget.set_class(compact, "-compact", update=False)
            yield widget

    def bindings_changed(self, screen: Screen) -> None:
        if self._bindings_ready and self.is_attached and screen is self.screen:
            if self.app.screen is not screen:
                # Under a prompt (which disables the global keys) the footer is
                # behind the dimmed background: redrawn when its screen is back.
                return
            if getattr(self, "_shown", None) == self._shown_keys():
                return
        super().bindings_changed(screen)
