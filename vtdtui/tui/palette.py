"""The command palette (ctrl+p): every key's action, every switch value, every unit."""

from __future__ import annotations

from functools import partial

from textual.command import CommandList, CommandPalette, DiscoveryHit, Hit, Hits, Provider
from textual.content import Content

from ..machine import OPTIONS
from ..textsafe import markup, printable
from ..views.status import OPTION_HELP
from .bindings import ACTIONS
from .messages import Host, RunAction, RunCommand


class VtdCommands(Provider):
    def _post(self, message: type[RunAction | RunCommand], what: str) -> None:
        # The app runs what was chosen; the palette only names it (no import of the app).
        self.app.post_message(message(what))

    def _entries(self) -> list[tuple[str, str, object]]:
        out: list[tuple[str, str, object]] = []
        keymap = getattr(self.app, "_keymap", None) or {}  # config.toml [keys]: the keys now
        for a in ACTIONS:
            if a.action:
                key = keymap.get(a.id, a.key) if a.id else a.key
                out.append((a.description, f"key {key}", partial(self._post, RunAction, a.action)))
        # Enter on a journal row has no app key (the pane has it): named here.
        out.append(("Journal: show the selected event whole (descriptors, entries touched, jumps)",
                    "key enter on a journal row", partial(self._post, RunAction, "journal_detail")))
        host: Host = self.app  # type: ignore[assignment]
        m = host.machine
        run = partial(self._post, RunCommand)
        for opt, values in OPTIONS.items():
            if m.option_value(opt) is None:
                continue
            for v in values:
                out.append((f"set {opt} {v}", OPTION_HELP[opt], partial(run, f"set {opt} {v}")))
        for name in m.units:
            for bit in ("CM", "C", "SC", "RWBF", "PSI"):
                out.append((f"toggle {name} {bit}", f"flip {bit} of {name}", partial(run, f"toggle {name} {bit}")))
            out.append((f"select-unit {name}", "show this unit in the panes", partial(run, f"select-unit {name}")))
        return out

    # The palette reads a title and its help as markup; they hold unit names (the
    # scenario's text), so both go in escaped.
    async def discover(self) -> Hits:
        for title, help_, cb in self._entries():
            yield DiscoveryHit(Content(printable(title)), cb, text=title, help=markup(help_))

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_, cb in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(markup(title)), cb, text=title, help=markup(help_))


class VtdCommandPalette(CommandPalette):
    """Textual's palette, safe against a key that comes before its first frame."""

    def _action_command_list(self, action: str) -> None:
        # textual 8.2: the option list pages with a line index it builds only once it
        # has a size, so pageup typed before the palette's first frame raised KeyError
        # and ended the app (found by tests/test_fuzz_keys.py).  Before that frame
        # there is nothing on screen to move through.
        if not self.query_one(CommandList).scrollable_content_region:
            return
        super()._action_command_list(action)
