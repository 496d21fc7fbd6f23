"""The journal as lines: every event newest last, filtered, with counters per op.

Filtering is incremental: the journal only grows between commands, so each refresh
scans just the new events, and an undo cuts it back in place (the view goes back to
a mark).  From the first filter on, the view keeps an index of the events per value
of each filter key (op, unit, actor, outcome, rule), so a new filter costs the events
of its most selective key, not a walk of the journal.

The pane is a Line-API view over possibly 100k events, so a row (`row_line`) and its
wrap (`row_lines`) are built for one event at a time, when it is visible; only search
and export walk the (filtered) journal.  `event_detail` is the whole of one event.
"""

from __future__ import annotations

import bisect
import heapq
import json
from array import array
import re
from collections import Counter
from dataclasses import dataclass, field

from ..hw import qi, regs
from ..hw.entries import PTE_ADDR_MASK, PTE_PS, bdf_str, level_shift
from ..hw.memory import MemoryError_
from ..sw.journal import ISSUED, Event, Journal, QiWords, RegWrite, Touched
from ..sw.rules import rule as rule_of
from ..textsafe import printable
from .style import Line, wrap

FILTER_KEYS = ("outcome", "op", "unit", "actor", "rule")
INDEX_KEYS = ("op", "unit", "actor", "outcome", "rule")  # JournalView._index, in _scan's order
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
    counts: Counter = field(default_factory=Counter)  # (op, outcome) → n, software decisions only
    decisions: Counter = field(default_factory=Counter)  # outcome → n, software actors only
    records: Counter = field(default_factory=Counter)  # op → n: hardware records and switches
    _journal: Journal | None = None  # held, not an id(): undo's new journal may reuse an address
    _seen: int = 0

    # Event indices (ascending) per value of each filter key: op, unit (lower case),
    # actor, outcome, rule → value → array of indices.  Built at the first filter (a
    # pass over what was scanned: building it with the startup scan would double the
    # cost of the first frame), then extended as events are scanned and cut back with
    # the view on an undo.
    _index: dict = field(default_factory=dict)
    _refilter: bool = False

    def set_filter(self, f: JournalFilter) -> None:
        """A new filter: the events shown so far come from the index (the cost of the
        filter's most selective key), the events still unseen from the next update."""
        self.filter = f
        self._refilter = True  # at the next update, once it knows what an undo cut back

    def _select(self, f: JournalFilter) -> list[int]:
        """The indices below _seen that `f` shows, from the index: the smallest candidate
        list (an exact key's, or the merge of the values a substring key matches),
        tested against the whole filter when other keys narrow it further."""
        if not self._index and self._seen:  # the first filter: index what is scanned
            self._index_events(self._journal.events, 0, self._seen)
        idx = self._index
        cands: list[tuple[int, list]] = []  # (size, lists to merge)
        for key, want in (("outcome", f.outcome if f.outcome != "all" else ""), ("unit", f.unit),
                          ("actor", f.actor)):
            if want:
                lst = idx.get(key, {}).get(want)
                cands.append((len(lst), [lst]) if lst is not None else (0, []))
        for key, part in (("op", f.op), ("rule", f.rule)):
            if part:
                lists = [lst for v, lst in idx.get(key, {}).items() if part in v]
                cands.append((sum(map(len, lists)), lists))
        if not cands:
            return list(range(self._seen))
        size, lists = min(cands, key=lambda c: c[0])
        if not size:
            return []
        rows = list(lists[0]) if len(lists) == 1 else list(heapq.merge(*lists))
        if len(cands) > 1:
            events, match = self._journal.events, f.matches
            rows = [i for i in rows if match(events[i])]
        return rows

    def _index_events(self, events: list[Event], start: int, end: int) -> None:
        idx = self._index
        if not idx:
            idx.update({k: {} for k in INDEX_KEYS})
        by_op, by_unit, by_actor, by_outcome, by_rule = (idx[k] for k in INDEX_KEYS)
        for i in range(start, end):
            e = events[i]
            for per, value in ((by_op, e.op), (by_unit, e.unit.lower()), (by_actor, e.actor),
                               (by_outcome, e.outcome), (by_rule, e.rule)):
                lst = per.get(value)
                if lst is None:
                    lst = per[value] = array("q")
                lst.append(i)

    def _cut_index(self, n: int) -> None:
        """Drop the indexed events from `n` on (an undo cut the journal back)."""
        for per in self._index.values():
            for value in [v for v, lst in per.items() if lst and lst[-1] >= n]:
                lst = per[value]
                del lst[bisect.bisect_left(lst, n):]
                if not lst:
                    del per[value]

    # (events seen, counts, decisions, records) at each of the last updates: an undo
    # cuts the same journal back to one of them, and the view goes back with it
    # instead of scanning the whole journal again.
    _marks: list = field(default_factory=list)
    MARKS = 256

    def update(self, journal: Journal, since: int | None = None) -> None:
        """Scan what the journal gained; `since`: the first index that may differ from
        the last scan (an undo cut the journal back there, and it may have grown
        again since; machine.Changes.journal), None: the journal only grew, or
        was cut back (which the view sees).  After set_filter the events already
        scanned are selected from the index, the new ones tested as they come."""
        cut = min(len(journal), since if since is not None else len(journal))
        if journal is self._journal and cut < self._seen:
            self._back_to(cut)
        if journal is not self._journal or len(journal) < self._seen:
            self._journal, self._seen, self._marks, self._index = journal, 0, [], {}
            self.indices, self.counts, self.decisions, self.records = [], Counter(), Counter(), Counter()
        if self._seen and (not self._marks or self._marks[-1][0] != self._seen):
            self._marks.append((self._seen, self.counts.copy(), self.decisions.copy(), self.records.copy()))
            if len(self._marks) > self.MARKS:
                del self._marks[: self.MARKS // 2]
        if self._refilter:
            self._refilter = False
            self.indices = self._select(self.filter)
        events = journal.events
        if self._seen < len(events):
            self._scan(events, self._seen, len(events))
        self._seen = len(events)

    def _scan(self, events: list[Event], start: int, end: int) -> None:
        """Count, index and filter events[start:end] (one pass, the index inlined: this
        is the whole journal at startup)."""
        counts, decisions, records = self.counts, self.decisions, self.records
        for i in range(start, end):
            e = events[i]
            op, outcome = e.op, e.outcome
            if e.actor != "hw":  # Event.is_decision
                counts[op, outcome] += 1
                decisions[outcome] += 1
            else:  # a DMA, a fault, a toggle, a switch: no software chose it
                records[op] += 1
        if self._index:  # kept from the first filter on (it would double the first scan)
            self._index_events(events, start, end)
        f = self.filter
        if f.outcome == "all" and not (f.op or f.unit or f.actor or f.rule):
            self.indices.extend(range(start, end))
        else:
            match = f.matches
            self.indices += [i for i in range(start, end) if match(events[i])]

    def _back_to(self, n: int) -> None:
        """The journal was cut back to `n` events: the counts as they were at the last
        mark at or before it (the scan goes on from there); none: a whole rescan."""
        while self._marks and self._marks[-1][0] > n:
            self._marks.pop()
        if not self._marks:
            self._journal = None  # rescan
            return
        seen, counts, decisions, records = self._marks[-1]
        del self.indices[bisect.bisect_left(self.indices, seen):]
        self._cut_index(seen)
        self._seen, self.counts, self.decisions, self.records = seen, counts.copy(), decisions.copy(), records.copy()

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
        if self.records:  # kept apart: a DMA or a toggle is not an invalidation issued
            segs.append(("· records: " + "  ".join(f"{op} {n}" for op, n in sorted(self.records.items())), "dim"))
        return tuple(segs)

    @staticmethod
    def event_line(e: Event) -> Line:
        """One row of the pane: `row_line` (kept by this name for callers of the view)."""
        return row_line(e)


# ----------------------------------------------------------------------------- rows
ROW_INDENT = 6  # continuation lines of a wrapped row start under the reason
KINDS = ("decision", "hardware", "policy")


def event_kind(e: Event) -> str:
    """decision (a software actor chose), hardware (a record: toggle, DMA, fault) or
    policy (a user switched a policy or what-if): the three look different."""
    if e.op == "policy-change":
        return "policy"
    return "decision" if e.is_decision else "hardware"


def _mark(e: Event) -> tuple[str, str]:
    kind = event_kind(e)
    if kind == "policy":
        return "policy ", "warn"
    if kind == "hardware":
        return "hw     ", "bad" if e.op == "fault" else "key"
    return (f"{e.outcome:<7}", "issued" if e.outcome == ISSUED else "skipped")


def _what(e: Event) -> str:
    """op[scope] and the rule, the rule left out where it only repeats the op."""
    scope = f"[{e.scope}]" if e.scope else ""
    same = e.rule == e.op or e.rule in e.op.split("-")
    return f"{e.op}{scope}" + ("" if same or not e.rule else f" {e.rule}")


def row_line(e: Event) -> Line:
    """One journal row, the reason first: `seq mark reason · op[scope] rule · unit actor
    · detail`.  The mark says issued / skipped for a decision, hw for a hardware
    record, policy for a switch a user turned; the rule is left out where it repeats
    the op (`clflush`, not `clflush clflush`).  Text from outside is made printable."""
    mark, tok = _mark(e)
    segs = [(f"{e.seq:5d} ", "dim"), (mark + " ", tok), (printable(e.reason), ""),
            (" · ", "dim"), (_what(e), tok if event_kind(e) == "decision" else "head"),
            (" · ", "dim"), (e.unit, "key"), (f" {e.actor}", "dim")]
    if e.detail:
        segs += [(" · ", "dim"), (printable(e.detail), "dim")]
    return tuple(segs)


def row_lines(e: Event, width: int) -> list[Line]:
    """`row_line(e)` wrapped to `width` cells: the wrap mode of the journal pane.
    Nothing is cut; continuation lines are indented under the reason."""
    return wrap(row_line(e), width, ROW_INDENT + 2)


# ----------------------------------------------------------------------------- whole event as text
def _desc_text(w: QiWords) -> str:
    return f"{w.hi:016x}:{w.lo:016x}" + (f"@{w.slot}" if w.slot is not None else "")


def event_text(e: Event) -> str:
    """The whole event on one line, nothing clipped: what search matches and what the
    text export writes.  Descriptor words, register writes, entries and the functions
    of the rule are in it, so `0x1008000` or `cache_tag_flush_range_np` finds it."""
    scope = f"[{e.scope}]" if e.scope else ""
    parts = [f"{e.seq} {e.unit} {e.actor} {e.outcome} {e.op}{scope} {e.rule}: {e.reason}"]
    if e.detail:
        parts.append(f"({e.detail})")
    d = e.data
    if d is not None:
        if d.descriptors:
            parts.append("qi " + " ".join(_desc_text(w) for w in d.descriptors))
        if d.wait is not None:
            parts.append("wait " + _desc_text(d.wait))
        for r in d.registers:
            parts.append(f"{r.name}@{r.offset:#x}={r.value:#x}")
    for t in e.entries:
        parts.append(f"{t.kind} {t.addr:#x}+{t.size:#x}")
    r = rule_of(e.rule) if e.is_decision else None
    if r is not None:
        parts.append("by " + ", ".join(f"{name}() {src}" for name, src in r.functions))
    return printable(" ".join(parts))


class SearchError(ValueError):
    """A search pattern that is not a valid regular expression."""


def matcher(pattern: str, regex: bool = False):
    """A predicate over event_text: a case-insensitive substring, or with `regex` a
    case-insensitive regular expression.  Raises SearchError for a bad regex, with
    the reason and where."""
    if not regex:
        needle = pattern.lower()
        return lambda text: needle in text.lower()
    try:
        rx = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise SearchError(f"bad regular expression {printable(pattern)!r}: {exc.msg}{where}") from None
    return lambda text: rx.search(text) is not None


def search_pattern(text: str) -> tuple[str, bool]:
    """What the search prompt's text asks for: `/regex/` a regular expression,
    anything else a substring (surrounding spaces dropped)."""
    t = text.strip()
    if len(t) > 2 and t.startswith("/") and t.endswith("/"):
        return t[1:-1], True
    return t, False


def check_search(text: str) -> tuple[bool, str]:
    """The search prompt's inline check: a bad regex is refused as it is typed."""
    pattern, regex = search_pattern(text)
    if not pattern:
        return False, "type text to find, or /regex/"
    try:
        matcher(pattern, regex)
    except SearchError as exc:
        return False, str(exc)
    return True, ("regular expression" if regex else "text") + ", anywhere in the event: Enter finds the next match"


@dataclass
class JournalSearch:
    """One search over a JournalView's rows, kept up to date as the journal grows:
    only rows added since the last look are matched (like JournalView.update), so
    next / previous match cost a bisect, not a walk of the journal."""

    pattern: str
    regex: bool = False
    rows: list[int] = field(default_factory=list)
    _indices: list[int] | None = None  # the view's list it matched (a new filter or undo: a new list)
    _seen: int = 0

    def __post_init__(self) -> None:
        self._match = matcher(self.pattern, self.regex)  # SearchError for a bad regex

    def describe(self) -> str:
        return f"/{self.pattern}/" if self.regex else repr(self.pattern)

    def update(self, events: list[Event], indices: list[int]) -> list[int]:
        if indices is not self._indices or len(indices) < self._seen:
            self._indices, self._seen, self.rows = indices, 0, []
        match = self._match
        self.rows += [row for row in range(self._seen, len(indices)) if match(event_text(events[indices[row]]))]
        self._seen = len(indices)
        return self.rows

    def next_row(self, events: list[Event], indices: list[int], row: int, step: int) -> tuple[int, bool] | None:
        """The first match after `row` (`step` 1) or before it (-1), wrapping around
        the ends: (row, wrapped), or None when nothing matches."""
        rows = self.update(events, indices)
        if not rows:
            return None
        if step > 0:
            i = bisect.bisect_right(rows, row)
            return (rows[i], False) if i < len(rows) else (rows[0], True)
        i = bisect.bisect_left(rows, row) - 1
        return (rows[i], False) if i >= 0 else (rows[-1], True)


def search(events: list[Event], indices: list[int], pattern: str, regex: bool = False) -> list[int]:
    """Rows (positions in `indices`, the filtered view) whose event matches `pattern`
    anywhere in event_text: substring, or regex with `regex`.  Empty pattern: none."""
    if not pattern:
        return []
    match = matcher(pattern, regex)
    return [row for row, i in enumerate(indices) if match(event_text(events[i]))]


# ----------------------------------------------------------------------------- export
EXPORT_SCHEMA = "vtdtui.journal/1"


def export_text(events: list[Event], indices: list[int]) -> str:
    """The shown events (the filter honoured), one whole event per line."""
    return "".join(event_text(events[i]) + "\n" for i in indices)


def export_json(events: list[Event], indices: list[int], filter_: JournalFilter | None = None) -> str:
    """`{"schema": "vtdtui.journal/1", "filter": "...", "journal": [...]}`: the state
    JSON's journal entries (with their added keys) of the shown events."""
    doc = {"schema": EXPORT_SCHEMA, "filter": (filter_ or JournalFilter()).describe(),
           "journal": [events[i].to_json() for i in indices]}
    return json.dumps(doc, indent=1) + "\n"


# ----------------------------------------------------------------------------- one event, whole
@dataclass(frozen=True)
class JumpTarget:
    """An entry an event touched, for the TUI to show.  `row` is the detail line that
    names it; `n` its number (1-based, a key).  The location is as the tables are now:
      root           unit, bus                  → the root table row of `bus`
      context        unit, bus, sid             → the context table of `bus`, row `sid`
      root-table     unit                       → the root table
      context-table  unit, bus                  → the context table of `bus`
      pte            unit, domain, key          → the domain's page-table tree, node `key`
      page-table     unit, domain, key          → `key` is the entry pointing at the table
                                                  (None: the top-level table)
    `found` is False where the entry is no longer in any table (freed since)."""

    n: int
    row: int
    kind: str
    unit: str
    addr: int
    size: int
    bus: int | None = None
    sid: int | None = None
    domain: int | None = None
    key: tuple[int, int] | None = None  # (level, IOVA base), views.ioptes' node key
    found: bool = True


@dataclass(frozen=True)
class EventDetail:
    lines: list[Line]
    targets: list[JumpTarget]


GRANS_CC = {1: "global", 2: "domain", 3: "device"}
GRANS_IOTLB = {1: "global", 2: "domain (DSI)", 3: "page (PSI)"}
GRANS_PC = {0: "all PASIDs of DID", 1: "PASID-selective", 3: "global"}
GRANS_PIOTLB = {2: "PASID-selective", 3: "page-selective within PASID"}


def describe_descriptor(lo: int, hi: int) -> str:
    """A queued-invalidation descriptor in words, with every field hw.qi decodes."""
    try:
        d = qi.decode(lo, hi)
    except ValueError as exc:
        return f"invalid: {exc}"
    if isinstance(d, qi.CcDesc):
        return (f"context-cache G={d.gran} {GRANS_CC.get(d.gran, '?')} DID {d.did} "
                f"SID {bdf_str(d.sid)} FM {d.fm}")
    if isinstance(d, qi.IotlbDesc):
        return (f"iotlb G={d.gran} {GRANS_IOTLB.get(d.gran, '?')} DID {d.did} addr {d.addr:#x} "
                f"AM {d.am} ({(1 << d.am) * 4}K) IH {int(d.ih)} DR {int(d.dr)} DW {int(d.dw)}")
    if isinstance(d, qi.DevTlbDesc):
        return (f"device-tlb SID {bdf_str(d.sid)} addr {d.addr:#x} S {int(d.size)} "
                f"QDEP {d.qdep} PFSID {d.pfsid:#x}")
    if isinstance(d, qi.IecDesc):
        return f"iec {'index' if d.index_selective else 'global'} IIDX {d.iidx} IM {d.im}"
    if isinstance(d, qi.PcDesc):
        return f"pasid-cache G={d.gran} {GRANS_PC.get(d.gran, '?')} DID {d.did} PASID {d.pasid:#x}"
    if isinstance(d, qi.PiotlbDesc):
        return (f"piotlb G={d.gran} {GRANS_PIOTLB.get(d.gran, '?')} DID {d.did} PASID {d.pasid:#x} "
                f"addr {d.addr:#x} AM {d.am} ({(1 << d.am) * 4}K) IH {int(d.ih)}")
    if isinstance(d, qi.PasidDevTlbDesc):
        return (f"pasid-device-tlb SID {bdf_str(d.sid)} PASID {d.pasid:#x} addr {d.addr:#x} "
                f"S {int(d.size)} G {int(d.glob)} QDEP {d.qdep} PFSID {d.pfsid:#x}")
    return (f"wait SW {int(d.status_write)} IF {int(d.interrupt)} FN {int(d.fence)} "
            f"status data {d.status_data:#x} → {d.status_addr:#x}")


def describe_register(r: RegWrite) -> str:
    """A register-based invalidation write in words (Linux DMA_CCMD_* / DMA_TLB_*)."""
    v, b = r.value, r.readback
    if r.name == "CCMD":
        return (f"ICC {v >> 63} CIRG {(v >> regs.CCMD_CIRG_SHIFT) & 3} {GRANS_CC.get((v >> regs.CCMD_CIRG_SHIFT) & 3, '?')}"
                f" FM {(v >> 32) & 3} SID {bdf_str((v >> 16) & 0xFFFF)} DID {v & 0xFFFF}; "
                f"read back CAIG {(b >> regs.CCMD_CAIG_SHIFT) & 3} ICC {b >> 63}")
    if r.name == "IOTLB":
        g = (v >> regs.IOTLB_IIRG_SHIFT) & 3
        return (f"IVT {v >> 63} IIRG {g} {GRANS_IOTLB.get(g, '?')} DID {(v >> 32) & 0xFFFF} "
                f"DR {(v >> 49) & 1} DW {(v >> 48) & 1}; read back IAIG {(b >> regs.IOTLB_IAIG_SHIFT) & 3} IVT {b >> 63}")
    if r.name == "IVA":
        return f"ADDR {v & ~0xFFF:#x} IH {(v >> 6) & 1} AM {v & 0x3F}"
    return f"{v:#x}"


def _field(label: str, text: str, width: int, token: str = "") -> list[Line]:
    """`label  text`, wrapped under the text."""
    pad = 10
    return wrap(((f"{label:<{pad}}", "key"), (text, token)), width, pad)


def _locate(read, pgd: int, levels: int, table: int) -> tuple[int, int, int | None] | None:
    """Where page `table` hangs in a domain's tree now: (its level, IOVA base, level of
    the entry pointing at it or None for the top).  Reads tables only (never leaves)."""
    if table == pgd:
        return levels, 0, None

    def down(t: int, level: int, base: int):
        if level == 1:
            return None
        try:
            words = read(t)
        except MemoryError_:
            return None
        span = 1 << level_shift(level)
        for i, pte in enumerate(words):
            if not pte & 3 or pte & PTE_PS:
                continue
            child, cbase = pte & PTE_ADDR_MASK, base + i * span
            if child == table:
                return level - 1, cbase, level
            hit = down(child, level - 1, cbase)
            if hit:
                return hit
        return None

    return down(pgd, levels, 0)


def _target(machine, e: Event, t: Touched, n: int, row: int) -> JumpTarget:
    base = JumpTarget(n, row, t.kind, e.unit, t.addr, t.size, t.bus, t.sid, t.domain)
    if t.kind not in ("pte", "page-table") or machine is None:
        return base
    try:
        drv = machine.driver_for(e.unit)
    except (KeyError, AttributeError):
        return JumpTarget(**{**base.__dict__, "found": False})
    unit = machine.units.get(e.unit)
    page = t.addr & ~0xFFF
    doms = sorted(drv.domains.values(), key=lambda d: (d.id != t.domain, d.id))
    for d in doms:
        hit = _locate(unit.cpu_read_page, d.pgd, d.levels, page)
        if hit is None:
            continue
        level, tbase, parent = hit
        if t.kind == "page-table":
            key = (parent, tbase) if parent is not None else None
        else:
            key = (level, tbase + ((t.addr & 0xFFF) // 8) * (1 << level_shift(level)))
        return JumpTarget(**{**base.__dict__, "domain": d.id, "key": key})
    return JumpTarget(**{**base.__dict__, "found": False})


def device_of(machine, unit: str, domain: int | None) -> int | None:
    """A device (source id) whose context entry on `unit` points at the page tables
    of the driver's domain `domain` now: what the IOPTE pane opens to show a jump
    target of kind pte / page-table.  None when no device uses that domain."""
    if unit not in machine.units:
        return None
    drv, u = machine.driver_for(unit), machine.units[unit]
    d = next((d for d in drv.domains.values() if d.id == domain), None)
    if d is None:
        return None
    for g in machine.groups.values():
        if g.unit != unit:
            continue
        for sid, _ in g.devices:
            ce = u.read_context(sid, u.cpu_read_q).entry
            if ce is not None and ce.present and ce.tt != 2 and ce.slptptr == d.pgd:
                return sid
    return None


def _touched_text(t: Touched) -> str:
    where = {"root": f"root entry bus {t.bus:02x}" if t.bus is not None else "root entry",
             "context": f"context entry {bdf_str(t.sid)}" if t.sid is not None else "context entry",
             "root-table": "root table",
             "context-table": f"context table bus {t.bus:02x}" if t.bus is not None else "context table",
             "page-table": f"L{t.level} page table" if t.level else "page table",
             "pte": f"{t.count} L{t.level} PTE(s)" if t.level else f"{t.count} PTE(s)"}.get(t.kind, t.kind)
    return f"{where} @ {t.addr:#x}+{t.size:#x}" + (f" ({printable(t.what)})" if t.what else "")


def detail_view(machine, e: Event, width: int) -> EventDetail:
    """The whole event `e` as lines no wider than `width`, and the entries it touched
    as jump targets (numbered 1.., each naming the line that shows it).  `machine`
    (may be None) resolves page-table entries to where they are now."""
    width = max(width, 20)
    lines: list[Line] = []
    mark, tok = _mark(e)
    kind = event_kind(e)
    head = ((f"event {e.seq} ", "head"), (mark.strip(), tok),
            (f" · {kind}" + (f" by {e.actor}" if kind == "decision" else ""), "dim"), (f" on {e.unit}", "key"))
    lines += wrap(head, width, 2)
    lines += _field("reason", printable(e.reason), width)
    r = rule_of(e.rule) if e.is_decision else None
    if r is not None:
        lines += _field("rule", f"{e.rule}: {r.decision}", width)
        for name, src in r.functions:
            lines += _field("decided", f"{name}()  {src}", width, "addr")
        if r.note:
            lines += _field("", r.note, width, "dim")
    else:
        lines += _field("rule", e.rule + ("" if e.is_decision else " (a hardware record: no software decision)"),
                        width)
    lines += _field("actor", e.actor, width)
    lines += _field("unit", e.unit, width)
    lines += _field("op", e.op, width)
    if e.scope:
        lines += _field("scope", e.scope, width)
    lines += _field("outcome", e.outcome, width, "issued" if e.outcome == ISSUED else "skipped")
    if e.detail:
        lines += _field("detail", printable(e.detail), width, "dim")
    d = e.data
    targets: list[JumpTarget] = []
    if d is not None:
        if d.descriptors or d.wait is not None:
            lines.append((("queued invalidation (qword 1:qword 0, queue slot)", "head"),))
            for w in d.descriptors + ((d.wait,) if d.wait is not None else ()):
                slot = f"slot {w.slot:3d}" if w.slot is not None else "not sent"
                lines += _field(slot, f"{w.hi:016x}:{w.lo:016x}", width, "addr")
                lines += _field("", describe_descriptor(w.lo, w.hi), width)
        if d.registers:
            lines.append((("register writes", "head"),))
            for reg in d.registers:
                lines += _field(reg.name, f"@{reg.offset:#x} ← {reg.value:#018x}", width, "addr")
                lines += _field("", describe_register(reg), width)
    if e.entries:
        lines.append((("entries touched (number: jump)", "head"),))
        for t in e.entries:
            n = len(targets) + 1
            target = _target(machine, e, t, n, len(lines))
            text = _touched_text(t)
            if not target.found:
                text += " · no longer in any table"
            elif target.domain is not None and t.kind in ("pte", "page-table"):
                text += f" · domain {target.domain}"
            lines += _field(f"[{n}]", text, width, "addr")
            targets.append(target)
    return EventDetail(lines, targets)


def event_detail(machine, e: Event, width: int) -> list[Line]:
    """The whole event as lines no wider than `width` (see detail_view for targets)."""
    return detail_view(machine, e, width).lines
