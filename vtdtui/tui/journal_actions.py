"""The journal's keys: o cycles the outcome shown, / filters by op, unit, actor, rule."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..views.journal import OUTCOMES, JournalFilter
from ..views.prompts import check_filter
from .mainscreen import MainScreen
from .panes import JournalPane

if TYPE_CHECKING:
    from textual.screen import Screen

    from .prompt import PromptScreen


class JournalActions:
    """Mixed into the app: the journal pane's global keys."""

    main: MainScreen

    if TYPE_CHECKING:
        @property
        def prompt(self) -> PromptScreen: ...

        def push_screen(self, screen: Screen) -> object: ...

        def say(self, text: str, error: bool = False) -> None: ...

    def journal(self) -> JournalPane:
        return self.main.query_one(JournalPane)

    def action_cycle_outcome(self) -> None:
        j = self.journal()
        f = j.view.filter
        nxt = OUTCOMES[(OUTCOMES.index(f.outcome) + 1) % len(OUTCOMES)]
        j.view.set_filter(JournalFilter(nxt, f.op, f.unit, f.actor, f.rule))
        j.follow = True
        j.update_view()
        self.say(f"journal shows {nxt} events · filter: {j.view.filter.describe()}")

    def action_journal_filter(self) -> None:
        j = self.journal()

        def submit(text: str) -> str | None:
            ok, hint = check_filter(text)
            if not ok:
                return hint
            j.view.set_filter(JournalFilter.parse(text, keep_outcome=j.view.filter.outcome))
            j.follow = True
            j.update_view()
            self.say(f"journal filter: {j.view.filter.describe()} · {len(j.view.indices)} event(s)")
            return None

        usage = "KEY=VALUE …  keys: outcome op unit actor rule   e.g. op=iotlb unit=dmar1"
        current = " ".join(p for p in j.view.filter.describe().split() if not p.startswith("outcome=")
                           ) if j.view.filter.describe() != "none" else ""
        self.push_screen(self.prompt.open("Filter the journal", usage, check_filter, submit, value=current))
