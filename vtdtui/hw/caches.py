"""The unit's context cache and IOTLB (VT-d spec §6.1–6.2).

Both are tagged by domain id.  Entries carry the raw value they were filled from, so
a view can compare them with what memory says now and call them stale.  A negative
entry (present=False) is what caching-mode hardware keeps for a not-present or
invalid structure; the unit only ever inserts one when CAP.CM=1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

PAGE_SHIFTS = (12, 21, 30)  # 4 KiB, 2 MiB, 1 GiB translations


@dataclass(frozen=True)
class ContextCacheEntry:
    source_id: int
    did: int
    present: bool
    lo: int  # the context entry as read when cached
    hi: int
    fault_reason: int = 0  # for a negative entry: the fault it stands for
    # The decoded ContextEntry of (lo, hi), kept so that a hit does not decode again.
    decoded: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class IotlbEntry:
    did: int
    iova: int  # aligned to the page size
    shift: int  # 12, 21 or 30
    hpa: int
    r: bool
    w: bool
    snp: bool
    present: bool = True
    source_id: int = 0  # the requester whose walk filled it (for the views)
    pte: int = 0  # the leaf entry as read when cached
    pte_addr: int = 0  # where that leaf lives, for staleness checks
    fault_reason: int = 0  # for a negative entry

    @property
    def size(self) -> int:
        return 1 << self.shift


def fm_mask(fm: int) -> int:
    """The source-id mask of a device-selective invalidation's function mask: FM
    masks the low bits of the function number — 0 none, 1 bit 2, 2 bits 2:1,
    3 bits 2:0 (spec §10.4.7, CCMD.FM)."""
    return ~(0, 0b100, 0b110, 0b111)[fm & 3] & 0xFFFF


class ContextCache:
    """Context entries per source id, tagged with the DID they were read with."""

    def __init__(self) -> None:
        self._entries: dict[int, ContextCacheEntry] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[ContextCacheEntry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.source_id))

    def lookup(self, source_id: int) -> ContextCacheEntry | None:
        e = self._entries.get(source_id)
        if e is None:
            self.misses += 1
        else:
            self.hits += 1
        return e

    def insert(self, entry: ContextCacheEntry) -> None:
        self._entries[entry.source_id] = entry

    def invalidate_global(self) -> int:
        n = len(self._entries)
        self._entries.clear()
        return n

    def invalidate_domain(self, did: int) -> int:
        return self._drop(lambda e: e.did == did)

    def invalidate_device(self, did: int, source_id: int, fm: int) -> int:
        """Device-selective: entries of `source_id` (function bits masked by FM) and `did`."""
        mask = fm_mask(fm)
        want = source_id & mask
        return self._drop(lambda e: e.did == did and (e.source_id & mask) == want)

    def _drop(self, pred) -> int:
        gone = [k for k, e in self._entries.items() if pred(e)]
        for k in gone:
            del self._entries[k]
        return len(gone)


class Iotlb:
    """Translations keyed by (DID, page-aligned IOVA, page shift).

    Default capacity and policy follow QEMU's vtd_update_iotlb(): at most 1024
    entries, and an insert that finds the table full empties it first.
    """

    def __init__(self, capacity: int | None = 1024):
        self.capacity = capacity
        self._entries: dict[tuple[int, int, int], IotlbEntry] = {}
        self.hits = 0
        self.misses = 0
        self.full_flushes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[IotlbEntry]:
        return iter(sorted(self._entries.values(), key=lambda e: (e.did, e.iova, e.shift)))

    def lookup(self, did: int, iova: int) -> IotlbEntry | None:
        get = self._entries.get
        for shift in PAGE_SHIFTS:
            e = get((did, iova >> shift << shift, shift))
            if e is not None:
                self.hits += 1
                return e
        self.misses += 1
        return None

    def insert(self, entry: IotlbEntry) -> None:
        if self.capacity is not None and len(self._entries) >= self.capacity:
            self._entries.clear()
            self.full_flushes += 1
        self._entries[(entry.did, entry.iova, entry.shift)] = entry

    def invalidate_global(self) -> int:
        n = len(self._entries)
        self._entries.clear()
        return n

    def invalidate_domain(self, did: int) -> int:
        return self._drop(lambda e: e.did == did)

    def invalidate_page(self, did: int, addr: int, am: int) -> int:
        """PSI: every entry of `did` overlapping the 2^AM pages from `addr`.

        The address is taken as aligned down to the mask (hardware ignores the low
        bits), and a large-page entry goes as soon as any part of it is covered.
        """
        span = 1 << (12 + am)
        lo = addr & ~(span - 1)
        hi = lo + span
        return self._drop(lambda e: e.did == did and e.iova < hi and lo < e.iova + e.size)

    def _drop(self, pred) -> int:
        gone = [k for k, e in self._entries.items() if pred(e)]
        for k in gone:
            del self._entries[k]
        return len(gone)
