"""The journal's keys: o cycles the outcome shown, / filters by op, unit, actor, rule;
Enter opens an event whole (and jumps to the entries it touched), W wraps, F / N / B
search, e exports, y copies the selected row."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..hw.entries import bdf_str
from ..machine import Machine
from ..outfile import write_atomic
from ..views.journal import (
    OUTCOMES, JournalFilter, JournalSearch, JumpTarget, check_search, device_of, event_text, export_json, export_text,
    search_pattern,
)
from ..views.prompts import check_filter
from .detail import CACHES, EventDetailScreen
from .mainscreen import MainScreen
from .messages import OpenEvent
from .panes import CachesPane, IoptePane, JournalPane, Pane, TablesPane

if TYPE_CHECKING:
    from textual.screen import Screen

    from .prompt import PromptScreen

SEARCH_USAGE = "text, or /regex/ (case-insensitive; anywhere in the event: reason, rule, function, address)"


def export_stem() -> str:
    """`vtdtui_journal_<date>T<time>`, as ctrl+s names a screenshot."""
    from textual._files import generate_datetime_filename

    return generate_datetime_filename("vtdtui journal", "")


def _entry_name(t: JumpTarget) -> str:
    """`context entry 02:00.0 @ 0x1009000`: what a jump shows, for the status line."""
    name = {"root": f"root entry bus {t.bus or 0:02x}", "context": f"context entry {bdf_str(t.sid or 0)}",
            "context-table": f"context table of bus {t.bus or 0:02x}", "root-table": "root table",
            "pte": f"L{t.key[0]} entry {t.key[1]:#x}" if t.key else "PTE",
            "page-table": f"the table under L{t.key[0]} entry {t.key[1]:#x}" if t.key else "top-level table",
            }.get(t.kind, t.kind)
    return f"{name} @ {t.addr:#x}"


class JournalActions:
    """Mixed into the app: the journal pane's global keys."""

    main: MainScreen
    machine: Machine
    version: int

    if TYPE_CHECKING:
        @property
        def prompt(self) -> PromptScreen: ...

        def push_screen(self, screen: Screen, callback=None) -> object: ...

        def say(self, text: str, error: bool = False) -> None: ...

        def run_command(self, line: str) -> str | None: ...

        def copy_to_clipboard(self, text: str) -> None: ...

    def journal(self) -> JournalPane:
        return self.main.query_one(JournalPane)

    def _fresh_journal(self) -> JournalPane:
        # A journal hidden by the one-pane layout waits for its view; a key about its
        # rows brings it up to date first (incremental: only new events are scanned).
        j = self.journal()
        if j.seen != self.version:
            j.seen = self.version
            j.update_view()
        return j

    def _show(self, pane: Pane) -> None:
        self.main.show_pane(self.main.panes.index(pane))

    # ------------------------------------------------------------ filter
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

    # ------------------------------------------------------------ wrap
    def action_journal_wrap(self) -> None:
        j = self.journal()
        j.set_wrap(not j.wrap)
        self.say("journal rows wrapped: every event in full (W again: one line each)" if j.wrap
                 else "journal rows on one line each, cut at the pane's edge (W wraps; Enter shows one whole)")

    # ------------------------------------------------------------ search
    def action_journal_search(self) -> None:
        j = self.journal()

        def submit(text: str) -> str | None:
            pattern, regex = search_pattern(text)
            ok, hint = check_search(text)
            if not ok:
                return hint
            found = JournalSearch(pattern, regex)
            error = self._find(j, found, 1, first=True)
            if error is None:
                j.search = found
            return error

        current = "" if j.search is None else (f"/{j.search.pattern}/" if j.search.regex else j.search.pattern)
        self.push_screen(self.prompt.open("Find in the journal (N next, B previous)", SEARCH_USAGE, check_search,
                                          submit, value=current))

    def action_journal_next(self, step: int) -> None:
        j = self.journal()
        if j.search is None:
            self.say("no search yet: F finds text or /regex/ in the journal", error=True)
            return
        error = self._find(j, j.search, step)
        if error is not None:
            self.say(error, error=True)

    def _find(self, j: JournalPane, found: JournalSearch, step: int, first: bool = False) -> str | None:
        """Move the journal's cursor to the next match; the refusal, or None."""
        j = self._fresh_journal()
        events, indices = self.machine.journal.events, j.view.indices
        # A new search starts at the cursor's own row: the event in view may be the one.
        start = j.cursor - 1 if first and step > 0 else j.cursor
        hit = found.next_row(events, indices, start, step)
        shown = f"filter: {j.view.filter.describe()}"
        if hit is None:
            return f"no event matches {found.describe()} ({shown}, {len(indices)} event(s))"
        row, wrapped = hit
        j.follow = row >= len(indices) - 1
        j.move_cursor(row)
        self._show(j)
        n = found.rows.index(row) + 1
        around = (" (from the top again)" if step > 0 else " (from the bottom again)") if wrapped else ""
        self.say(f"match {n} of {len(found.rows)} for {found.describe()}: event {events[indices[row]].seq}{around}"
                 f" · N next, B previous · {shown}")
        return None

    # ------------------------------------------------------------ export and copy
    def action_journal_export(self) -> None:
        j = self._fresh_journal()
        events, indices = self.machine.journal.events, j.view.indices
        stem = Path(export_stem())
        try:  # each whole or not at all: a full disk leaves no half file behind
            stem = Path.cwd() / stem  # the folder may be gone (removed under the session)
            paths = (stem.with_suffix(".txt"), stem.with_suffix(".json"))
            write_atomic(paths[0], export_text(events, indices))
            write_atomic(paths[1], export_json(events, indices, j.view.filter))
        except OSError as exc:  # a read-only, full or removed folder: say so, keep going
            self.say(f"journal not exported: {exc.filename or stem}: {exc.strerror or exc}", error=True)
            return
        self.say(f"journal exported: {len(indices)} event(s), filter {j.view.filter.describe()}, "
                 f"to {paths[0]} and {paths[1].name}")

    def action_journal_copy(self) -> None:
        j = self._fresh_journal()
        e = j.selected_event()
        if e is None:
            self.say("nothing to copy: the journal shows no event (o and / change what it shows)", error=True)
            return
        self.copy_to_clipboard(event_text(e))
        self.say(f"event {e.seq} copied to the clipboard (OSC 52: the terminal, or tmux set-clipboard, must allow it)")

    # ------------------------------------------------------------ one event, whole
    def action_journal_detail(self) -> None:
        i = self._fresh_journal().event_index()
        if i is None:
            self.say("no event to open: the journal shows none", error=True)
            return
        self.open_event(i)

    def on_open_event(self, message: OpenEvent) -> None:
        self.open_event(message.index)

    def open_event(self, index: int) -> None:
        e = self.machine.journal.events[index]
        self.push_screen(EventDetailScreen(self.machine, e), callback=self.jump_to)

    def jump_to(self, target: JumpTarget | None) -> None:
        """Show an entry an event touched (the detail screen's number keys) in its pane."""
        if target is None:
            return
        m = self.machine
        if target.unit not in m.units:
            self.say(f"{target.unit}: no such unit in this scenario", error=True)
            return
        if not target.found:
            self.say(f"entry [{target.n}] ({target.kind} @ {target.addr:#x}) is no longer in any table (freed since)",
                     error=True)
            return
        if target.unit != m.selected_unit and self.run_command(f"select-unit {target.unit}") is not None:
            return
        where = _entry_name(target)
        if target.kind == CACHES:
            self._show(self.main.query_one(CachesPane))
            self.say(f"the IOTLB and context cache of {target.unit}")
            return
        if target.kind in ("root", "root-table", "context", "context-table"):
            tp = self.main.query_one(TablesPane)
            if target.kind == "root-table":
                ok = tp.show_entry(None, None) or True
                tp.move_cursor(0)
            else:
                ok = tp.show_entry(target.bus, {"root": ("bus", target.bus), "context": ("sid", target.sid)}.get(
                    target.kind))
            self._show(tp)
            self.say(f"[{target.n}] {where} on {target.unit}" + ("" if ok else ": not in the tables now"),
                     error=not ok)
            return
        sid = device_of(m, target.unit, target.domain)
        if sid is None:
            self.say(f"[{target.n}] {where}: no device on {target.unit} uses domain {target.domain} now", error=True)
            return
        ip = self.main.query_one(IoptePane)
        ok = ip.show_node(target.unit, sid, target.key)
        self._show(ip)
        self.say(f"[{target.n}] {where} in domain {target.domain}, through {bdf_str(sid)} on {target.unit}"
                 + ("" if ok else ": not in the tree now"), error=not ok)
