"""The journal as lines: every event newest last, filtered, with counters per op.

Filtering is incremental: the journal only grows between commands, so each refresh
scans just the new events.  Undo rebuilds the machine with a new Journal object,
which resets the scan.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..sw.journal import ISSUED, Event, Journal
from .style import Line

FILTER_KEYS = ("outcome", "op", "unit", "actor", "rule")
OUTCOMES = ("all", "issued", "skipped")


class FilterError(ValueError):
    pass


@dataclass
class JournalFilter:
    outcome: str = "all"
    op: str = ""  # substring of the op: "iotlb" matches iotlb-invalidation
    unit: str = ""
    actor: str = ""
    rule: str = ""

    @classmethod
    def parse(cls, text: str, keep_outcome: str = "all") -> JournalFilter:
        """`op=iotlb unit=dmar1 actor=driver outcome=skipped rule=clflush`; empty clears."""
        f = cls(outcome=keep_outcome)
        for word in text.split():
            k, sep, v = word.partition("=")
            k = k.lower()
            if not sep or not v:
                raise FilterError(f"{word!r}: write KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)}")
            if k not in FILTER_KEYS:
                raise FilterError(f"unknown filter key {k!r} (keys: {', '.join(FILTER_KEYS)})")
            if k == "outcome" and v.lower() not in OUTCOMES:
                raise FilterError(f"outcome is one of {', '.join(OUTCOMES)}, not {v!r}")
            setattr(f, k, v.lower())
        return f

    def matches(self, e: Event) -> bool:
        return ((self.outcome == "all" or e.outcome == self.outcome)
                and (not self.op or self.op in e.op)
                and (not self.unit or e.unit.lower() == self.unit)
                and (not self.actor or e.actor == self.actor)
                and (not self.rule or self.rule in e.rule))

    def describe(self) -> str:
        parts = [f"{k}={getattr(self, k)}" for k in FILTER_KEYS if getattr(self, k) and getattr(self, k) != "all"]
        return " ".join(parts) or "none"


@dataclass
class JournalView:
    filter: JournalFilter = field(default_factory=JournalFilter)
    indices: list[int] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # (op, outcome) → n over all events
    decisions: Counter = field(default_factory=Counter)  # outcome → n, software actors only
    _journal: Journal | None = None  # held, not an id(): undo's new journal may reuse an address
    _seen: int = 0

    def set_filter(self, f: JournalFilter) -> None:
        self.filter = f
        self._journal = None  # rescan

    def update(self, journal: Journal) -> None:
        if journal is not self._journal or len(journal) < self._seen:
            self._journal, self._seen = journal, 0
            self.indices, self.counts, self.decisions = [], Counter(), Counter()
        events = journal.events
        for i in range(self._seen, len(events)):
            e = events[i]
            self.counts[e.op, e.outcome] += 1
            if e.is_decision:
                self.decisions[e.outcome] += 1
            if self.filter.matches(e):
                self.indices.append(i)
        self._seen = len(events)

    def totals(self) -> tuple[int, int]:
        """Decisions by the software actors: (issued, skipped)."""
        return self.decisions[ISSUED], self.decisions["skipped"]

    def counter_line(self) -> Line:
        issued, skipped = self.totals()
        segs = [("decisions: issued ", "dim"), (str(issued), "issued"), (" skipped ", "dim"), (str(skipped), "skipped"),
                (f" · filter: {self.filter.describe()} · shown {len(self.indices)}", "dim"), (" · per op: ", "dim")]
        ops = sorted({op for op, _ in self.counts})
        for op in ops:
            segs += [(f"{op} ", "dim"), (str(self.counts[op, ISSUED]), "issued"), ("/", "dim"),
                     (str(self.counts[op, "skipped"]), "skipped"), ("  ", "")]
        return tuple(segs)

    @staticmethod
    def event_line(e: Event) -> Line:
        tok = "issued" if e.outcome == ISSUED else "skipped"
        scope = f"[{e.scope}]" if e.scope else ""
        return ((f"{e.seq:5d} ", "dim"), (f"{e.unit:<11}", "key"), (f"{e.actor:<7}", "dim"), (f"{e.outcome:<8}", tok),
                (f"{e.op}{scope} ", tok), (f"{e.rule}: ", "head"), (e.reason, ""),
                (f" ({e.detail})" if e.detail else "", "dim"))
