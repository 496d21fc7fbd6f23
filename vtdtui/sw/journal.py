"""The journal: every flush or invalidation software considered, issued or skipped.

Vocabulary (DESIGN.md, public contract):
  actor   driver | vfio | kvm | qemu | hw
  outcome issued | skipped
  op      context-cache-invalidation, iotlb-invalidation, device-tlb-invalidation,
          write-buffer-flush, clflush, cpu-cache-flush, noncoherent-dma-register,
          noncoherent-dma-unregister, shadow-map, shadow-unmap, fault, and the
          additions below.
Rule ids are REFERENCE.md §5–8's; keep them stable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

ISSUED = "issued"
SKIPPED = "skipped"

# Ops beyond the contract's list (allowed: "more ops may be added").
OP_CAPABILITY = "capability-change"  # a user toggled CAP/ECAP: actor hw
OP_POLICY = "policy-change"  # a user switched a policy or what-if
OP_DOMAIN = "domain-reuse"  # VFIO's choice of a domain for a group
OP_ENFORCE = "enforce-cache-coherency"
OP_DMA = "dma"  # a DMA that translated: actor hw
OP_FLUSH_QUEUE = "flush-queue"  # lazy unmap deferred
# Scalable mode (DESIGN.md "Scalable mode"): PASID-cache invalidation (scope pasid |
# domain | global) and PASID-based IOTLB invalidation (scope pasid | page).
OP_PASID_CACHE = "pasid-cache-invalidation"
OP_PIOTLB = "piotlb-invalidation"
# Every event of these ops carries "did", "pasid" and "bdf" in its JSON (null where the
# descriptor has no such field): the contract's invalidation ops.
INVALIDATION_OPS = frozenset({"context-cache-invalidation", "iotlb-invalidation", OP_PASID_CACHE, OP_PIOTLB,
                              "device-tlb-invalidation"})


@dataclass(frozen=True, slots=True)
class QiWords:
    """One 128-bit descriptor as software wrote it into the invalidation queue."""

    lo: int
    hi: int
    slot: int | None = None  # queue index; known once qi_submit_sync() writes it

    def to_json(self) -> dict:
        return {"lo": f"{self.lo:#x}", "hi": f"{self.hi:#x}", "slot": self.slot}


@dataclass(frozen=True, slots=True)
class RegWrite:
    """One register write of register-based invalidation, and what a read-back showed."""

    name: str  # CCMD, IVA, IOTLB
    offset: int
    value: int
    readback: int

    def to_json(self) -> dict:
        return {"name": self.name, "offset": f"{self.offset:#x}", "value": f"{self.value:#x}",
                "readback": f"{self.readback:#x}"}


# Kinds of Touched: one root / context entry, a run of page-table entries, a whole
# table page (root table, a bus's context table, a page table of `level`).
TOUCHED_KINDS = ("root", "context", "pte", "root-table", "context-table", "page-table", "memory")


@dataclass(frozen=True, slots=True)
class Touched:
    """Entries software wrote and then flushed (or not): where they are in memory.
    bus / sid / level / domain are set where the writer knew them."""

    kind: str
    addr: int  # physical address of the first byte
    size: int  # bytes
    what: str = ""  # the writer's own words ("context entry 02:00.0")
    bus: int | None = None
    sid: int | None = None  # source id (bus << 8 | devfn) of a context entry
    level: int | None = None  # page-table level of the entries (1 = 4 KiB leaves)
    domain: int | None = None

    @property
    def count(self) -> int:
        """Entries touched: 16-byte root / context entries, 8-byte PTEs."""
        return max(1, self.size // (16 if self.kind in ("root", "context", "root-table", "context-table") else 8))

    def to_json(self) -> dict:
        return {"kind": self.kind, "address": f"{self.addr:#x}", "size": self.size, "what": self.what,
                "bus": self.bus, "sid": self.sid, "level": self.level, "domain": self.domain}


_FLUSH = re.compile(r"^(.*) (0x[0-9a-f]+)\+(0x[0-9a-f]+)$")
_BDF = re.compile(r"\b([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])\b")
_BUS = re.compile(r"\bbus ([0-9a-f]{2})\b")
_LEVEL = re.compile(r"\bL([1-5])\b")
_DOMAIN = re.compile(r"\bdomain (\d+)\b")


def touched_from_flush(detail: str) -> Touched | None:
    """What a clflush covered, from the driver's words in its detail: "root table",
    "root entry bus 02", "new context table bus 02", "context entry 02:00.0", and
    otherwise a domain's page table ("new L1 table", "16 leaf PTE(s) L1", ...)."""
    m = _FLUSH.match(detail)
    if m is None:
        return None
    what, addr, size = m.group(1), int(m.group(2), 16), int(m.group(3), 16)
    whole = size >= 4096 and not addr & 0xFFF
    bm = _BUS.search(what)
    bus = int(bm.group(1), 16) if bm else None
    if what.startswith("root"):
        return Touched("root-table" if whole else "root", addr, size, what, bus=bus)
    if what.startswith(("context entry", "new context table")):
        dm = _BDF.search(what)
        sid = (int(dm.group(1), 16) << 8 | int(dm.group(2), 16) << 3 | int(dm.group(3))) if dm else None
        bus = bus if bus is not None else (sid >> 8 if sid is not None else None)
        return Touched("context-table" if whole else "context", addr, size, what, bus=bus, sid=sid)
    lm, dm = _LEVEL.search(what), _DOMAIN.search(what)
    return Touched("page-table" if whole else "pte", addr, size, what, level=int(lm.group(1)) if lm else None,
                   domain=int(dm.group(1)) if dm else None)


@dataclass(frozen=True, slots=True)
class EventData:
    """What the actor knew beyond words: the descriptors it queued (and the wait
    descriptor that closed their submission), the registers it wrote, the entries it
    flushed.  Most events have none; Event.data is None then."""

    descriptors: tuple[QiWords, ...] = ()
    wait: QiWords | None = None
    registers: tuple[RegWrite, ...] = ()
    entries: tuple[Touched, ...] = ()


# Immutable by use (Journal.amend replaces an event, never changes it), not frozen:
# a frozen dataclass's __init__ sets each of the 13 fields through object.__setattr__,
# 1.2 µs of every event a 1M-page build records 65,000 of.
@dataclass(slots=True, unsafe_hash=True)
class Event:
    seq: int
    unit: str
    actor: str
    op: str
    scope: str
    outcome: str
    rule: str
    reason: str
    detail: str = ""  # the arguments (DID, address, mask …) for the curious
    data: EventData | None = None  # structured facts (Journal.amend adds them)
    # The descriptor's fields an invalidation names (None where it has none): domain
    # id, PASID, and the source id as "bb:dd.f".
    did: int | None = None
    pasid: int | None = None
    bdf: str | None = None

    def __deepcopy__(self, memo) -> "Event":
        return self  # immutable: a snapshot of the journal shares its events

    @property
    def is_decision(self) -> bool:
        """A software actor's choice; actor hw events are records (toggles, DMAs, faults)."""
        return self.actor != "hw"

    def to_json(self) -> dict:
        """The state JSON's journal entry.  Beyond the contract's keys: "detail", and
        "descriptors" / "wait" / "registers" / "entries" (always present: [] or null
        where the event has none), addresses and words as hex strings."""
        d = self.data
        out = {
            "seq": self.seq, "unit": self.unit, "actor": self.actor, "op": self.op,
            "scope": self.scope, "outcome": self.outcome, "rule": self.rule,
            "reason": self.reason, "detail": self.detail,
            "descriptors": [w.to_json() for w in d.descriptors] if d else [],
            "wait": d.wait.to_json() if d and d.wait else None,
            "registers": [r.to_json() for r in d.registers] if d else [],
            "entries": [t.to_json() for t in self.entries],
        }
        if self.op in INVALIDATION_OPS:
            out.update(did=self.did, pasid=self.pasid, bdf=self.bdf)
        return out

    @property
    def entries(self) -> tuple[Touched, ...]:
        """The entries the event's writer touched: stored ones, else, for a clflush,
        read from its detail ("WHAT 0xADDR+0xSIZE") — a clflush event is written for
        every table run a map writes, so storing an object for each would cost the
        journal some 12 bytes per mapped page."""
        if self.data is not None and self.data.entries:
            return self.data.entries
        if self.op == "clflush":
            t = touched_from_flush(self.detail)
            return (t,) if t is not None else ()
        return ()

    def line(self) -> str:
        scope = f"[{self.scope}]" if self.scope else ""
        extra = f" ({self.detail})" if self.detail else ""
        return (
            f"{self.seq:5d} {self.unit:<8} {self.actor:<6} {self.outcome:<7} "
            f"{self.op}{scope} {self.rule}: {self.reason}{extra}"
        )


class Journal:
    def __init__(self) -> None:
        self.events: list[Event] = []
        # While a command runs (begin_undo): its first event's index, and the events
        # before it that amend() replaced, as they were, so undo can put them back.
        self._undo_mark: int | None = None
        self._undo_amended: list[tuple[int, Event]] = []

    def __len__(self) -> int:
        return len(self.events)

    def __deepcopy__(self, memo) -> "Journal":
        new = Journal()
        new.events = list(self.events)
        memo[id(self)] = new
        return new

    # Undo: the journal object survives, cut back, so whatever is keyed on it stays.
    def truncate(self, n: int) -> None:
        """Keep the first `n` events (the same list object, cut in place)."""
        del self.events[n:]

    def begin_undo(self) -> None:
        self._undo_mark, self._undo_amended = len(self.events), []

    def end_undo(self) -> tuple[int, list[tuple[int, Event]]]:
        """Stop recording; (length then, earlier events amended since) for rollback()."""
        mark, amended = self._undo_mark, self._undo_amended
        self._undo_mark, self._undo_amended = None, []
        return (len(self.events) if mark is None else mark), amended

    def rollback(self, record: tuple[int, list[tuple[int, Event]]]) -> None:
        mark, amended = record
        self.truncate(mark)
        for i, old in reversed(amended):
            self.events[i] = old

    def __iter__(self):
        return iter(self.events)

    def record(
        self, unit: str, actor: str, op: str, outcome: str, rule: str, reason: str,
        scope: str = "", detail: str = "", data: EventData | None = None, *,
        did: int | None = None, pasid: int | None = None, bdf: str | None = None,
    ) -> Event:
        if outcome not in (ISSUED, SKIPPED):
            raise ValueError(f"outcome must be issued or skipped, not {outcome!r}")
        e = Event(len(self.events) + 1, unit, actor, op, scope, outcome, rule, reason, detail, data, did, pasid, bdf)
        self.events.append(e)
        return e

    def issued(self, unit: str, actor: str, op: str, rule: str, reason: str, scope: str = "", detail: str = "",
               data: EventData | None = None, **keys) -> Event:
        return self.record(unit, actor, op, ISSUED, rule, reason, scope, detail, data, **keys)

    def skipped(self, unit: str, actor: str, op: str, rule: str, reason: str, scope: str = "", detail: str = "",
                data: EventData | None = None, **keys) -> Event:
        return self.record(unit, actor, op, SKIPPED, rule, reason, scope, detail, data, **keys)

    def amend(self, event: Event, *, descriptors: tuple[QiWords, ...] = (), wait: QiWords | None = None,
              registers: tuple[RegWrite, ...] = (), entries: tuple[Touched, ...] = (),
              slots: tuple[int, ...] = ()) -> Event:
        """Add structured data to an event already recorded: descriptors, registers and
        entries are appended; `wait` is set; `slots` gives the queue index of each
        descriptor still without one, in order.  The event is replaced, not changed, so
        a snapshot holding the old one keeps it.  Returns the event now in the journal
        (the given one, unchanged, when it is not this journal's)."""
        i = event.seq - 1
        if not (0 <= i < len(self.events)) or self.events[i] is not event:
            return event
        d = event.data or EventData()
        descs = d.descriptors + descriptors
        if slots:
            it = iter(slots)
            descs = tuple(w if w.slot is not None else replace(w, slot=next(it, None)) for w in descs)
        new = replace(event, data=EventData(descs, wait if wait is not None else d.wait,
                                            d.registers + registers, d.entries + entries))
        if self._undo_mark is not None and i < self._undo_mark:
            self._undo_amended.append((i, event))
        self.events[i] = new
        return new

    def since(self, mark: int) -> list[Event]:
        return self.events[mark:]

    def to_json(self) -> list[dict]:
        return [e.to_json() for e in self.events]
