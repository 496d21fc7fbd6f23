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

from dataclasses import dataclass

ISSUED = "issued"
SKIPPED = "skipped"

# Ops beyond the contract's list (allowed: "more ops may be added").
OP_CAPABILITY = "capability-change"  # a user toggled CAP/ECAP: actor hw
OP_POLICY = "policy-change"  # a user switched a policy or what-if
OP_DOMAIN = "domain-reuse"  # VFIO's choice of a domain for a group
OP_ENFORCE = "enforce-cache-coherency"
OP_DMA = "dma"  # a DMA that translated: actor hw
OP_FLUSH_QUEUE = "flush-queue"  # lazy unmap deferred


@dataclass(frozen=True, slots=True)
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

    def __deepcopy__(self, memo) -> "Event":
        return self  # immutable: a snapshot of the journal shares its events

    @property
    def is_decision(self) -> bool:
        """A software actor's choice; actor hw events are records (toggles, DMAs, faults)."""
        return self.actor != "hw"

    def to_json(self) -> dict:
        return {
            "seq": self.seq, "unit": self.unit, "actor": self.actor, "op": self.op,
            "scope": self.scope, "outcome": self.outcome, "rule": self.rule,
            "reason": self.reason, "detail": self.detail,
        }

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

    def __len__(self) -> int:
        return len(self.events)

    def __deepcopy__(self, memo) -> "Journal":
        new = Journal()
        new.events = list(self.events)
        memo[id(self)] = new
        return new

    def __iter__(self):
        return iter(self.events)

    def record(
        self, unit: str, actor: str, op: str, outcome: str, rule: str, reason: str,
        scope: str = "", detail: str = "",
    ) -> Event:
        if outcome not in (ISSUED, SKIPPED):
            raise ValueError(f"outcome must be issued or skipped, not {outcome!r}")
        e = Event(len(self.events) + 1, unit, actor, op, scope, outcome, rule, reason, detail)
        self.events.append(e)
        return e

    def issued(self, unit: str, actor: str, op: str, rule: str, reason: str, scope: str = "", detail: str = "") -> Event:
        return self.record(unit, actor, op, ISSUED, rule, reason, scope, detail)

    def skipped(self, unit: str, actor: str, op: str, rule: str, reason: str, scope: str = "", detail: str = "") -> Event:
        return self.record(unit, actor, op, SKIPPED, rule, reason, scope, detail)

    def since(self, mark: int) -> list[Event]:
        return self.events[mark:]

    def to_json(self) -> list[dict]:
        return [e.to_json() for e in self.events]
