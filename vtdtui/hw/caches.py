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
PGTT_FL_ONLY, PGTT_NESTED = 1, 3  # sm_entries.PGTT_* (not imported: caches stay leaf-level)


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
    # A scalable-mode context entry (256 bits; lo/hi are its low 128, the upper 128
    # are reserved and must read 0).  There is no DID in it: `did` is 0.
    sm: bool = False


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
    # Scalable mode: the PASID the translation was made for (RID_PASID for a request
    # without one) and the PGTT of the PASID entry it came through; None / 0 in
    # legacy mode.  QEMU keeps both (VTDIOTLBEntry.pasid, .pgtt) because the
    # invalidation descriptors select by them (vtd_hash_remove_by_page[_piotlb]).
    pasid: int | None = None
    pgtt: int = 0
    user: bool = True  # first stage: U/S at every level (a supervisor walk may cache U/S=0)

    @property
    def size(self) -> int:
        return 1 << self.shift

    @property
    def first_stage(self) -> bool:
        """Cached through a first-stage or nested PASID entry (PGTT 1 or 3)."""
        return self.pgtt in (PGTT_FL_ONLY, PGTT_NESTED)


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

    def invalidate_device(self, did: int, source_id: int, fm: int, *, ignore_did: bool = False) -> int:
        """Device-selective: entries of `source_id` (function bits masked by FM) and `did`.

        `ignore_did`: scalable mode, where "The Domain-ID field of the Context-cache
        Invalidate Descriptor is ignored by hardware" (pasid.c
        intel_context_flush_no_pasid) — SM context entries carry no DID."""
        mask = fm_mask(fm)
        want = source_id & mask
        return self._drop(lambda e: (ignore_did or e.did == did) and (e.source_id & mask) == want)

    def _drop(self, pred) -> int:
        gone = [k for k, e in self._entries.items() if pred(e)]
        for k in gone:
            del self._entries[k]
        return len(gone)


def _span(addr: int, am: int) -> tuple[int, int]:
    span = 1 << (12 + am)
    lo = addr & ~(span - 1)
    return lo, lo + span


class Iotlb:
    """Translations keyed by (DID, PASID, page-aligned IOVA, page shift); PASID is
    None in legacy mode.

    Default capacity and policy follow QEMU's vtd_update_iotlb(): at most 1024
    entries, and an insert that finds the table full empties it first.
    """

    def __init__(self, capacity: int | None = 1024):
        self.capacity = capacity
        self._entries: dict[tuple[int, int | None, int, int], IotlbEntry] = {}
        self.hits = 0
        self.misses = 0
        self.full_flushes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[IotlbEntry]:
        return iter(sorted(self._entries.values(),
                           key=lambda e: (e.did, e.iova, e.shift, -1 if e.pasid is None else e.pasid)))

    def lookup(self, did: int, iova: int, pasid: int | None = None) -> IotlbEntry | None:
        get = self._entries.get
        for shift in PAGE_SHIFTS:
            e = get((did, pasid, iova >> shift << shift, shift))
            if e is not None:
                self.hits += 1
                return e
        self.misses += 1
        return None

    def insert(self, entry: IotlbEntry) -> None:
        if self.capacity is not None and len(self._entries) >= self.capacity:
            self._entries.clear()
            self.full_flushes += 1
        self._entries[(entry.did, entry.pasid, entry.iova, entry.shift)] = entry

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
        Scalable mode: a page-selective IOTLB descriptor (type 2) drops *every*
        first-stage or nested entry of the DID, whatever its address — QEMU
        vtd_hash_remove_by_page: "According to spec, IOTLB entries caching
        first-stage (PGTT=001b) or nested (PGTT=011b) mapping associated with
        specified domain-id are invalidated."
        """
        lo, hi = _span(addr, am)
        return self._drop(lambda e: e.did == did and (e.first_stage or (e.iova < hi and lo < e.iova + e.size)))

    def invalidate_pasid(self, did: int, pasid: int) -> int:
        """PASID-based IOTLB invalidation, G=2 (PASID-selective within DID): every
        entry of (DID, PASID), whatever its PGTT (QEMU vtd_hash_remove_by_pasid)."""
        return self._drop(lambda e: e.did == did and e.pasid == pasid)

    def invalidate_pasid_page(self, did: int, pasid: int, addr: int, am: int) -> int:
        """PASID-based IOTLB invalidation, G=3 (page-selective within PASID): the
        first-stage and nested entries of (DID, PASID) overlapping the 2^AM pages.
        Second-stage and pass-through entries stay (QEMU
        vtd_hash_remove_by_page_piotlb: "PASID-based-IOTLB Invalidation in page
        granularity doesn't invalidate IOTLB entries caching second-stage
        (PGTT=010b) or pass-through (PGTT=100b) mappings")."""
        lo, hi = _span(addr, am)
        return self._drop(lambda e: e.did == did and e.pasid == pasid and e.first_stage
                          and e.iova < hi and lo < e.iova + e.size)

    def _drop(self, pred) -> int:
        gone = [k for k, e in self._entries.items() if pred(e)]
        for k in gone:
            del self._entries[k]
        return len(gone)


@dataclass(frozen=True)
class PasidCacheEntry:
    """A cached PASID-table entry (scalable mode).

    Tagged, as the spec tags PASID-cache entries, by the DID of the entry and its
    PASID; found on a translation by (source id, PASID) because the hardware
    reaches it through that requester's context entry.  `val` holds the eight
    words as read, so a view can compare them with memory and call them stale."""

    source_id: int
    pasid: int
    did: int
    present: bool
    val: tuple[int, ...]
    fault_reason: int = 0  # for a negative entry (CM=1): the fault it stands for
    decoded: object = field(default=None, compare=False, repr=False)
    fpd: bool = False  # FPD of the directory entry or the PASID entry as read


class PasidCache:
    """PASID entries per (source id, PASID), invalidated by DID / PASID (type-7
    descriptors: G0 all PASIDs of a DID, G1 one PASID of a DID, G3 global)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, int], PasidCacheEntry] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[PasidCacheEntry]:
        return iter(sorted(self._entries.values(), key=lambda e: (e.source_id, e.pasid)))

    def lookup(self, source_id: int, pasid: int) -> PasidCacheEntry | None:
        e = self._entries.get((source_id, pasid))
        if e is None:
            self.misses += 1
        else:
            self.hits += 1
        return e

    def insert(self, entry: PasidCacheEntry) -> None:
        self._entries[(entry.source_id, entry.pasid)] = entry

    def invalidate_global(self) -> int:
        n = len(self._entries)
        self._entries.clear()
        return n

    # A negative entry (a not-present PASID entry cached under CM=1) holds no
    # meaningful DID: the not-present entry's DID field is whatever was there (0
    # for a cleared entry).  Linux's pasid_flush_caches() follows the set-up of
    # such an entry with a PASID-selective invalidation naming the *new* DID, so a
    # negative entry is matched by PASID alone — else the flush the kernel relies
    # on would leave it (spec, unverified: the spec text on CM and the PASID cache
    # was not read).
    def invalidate_domain(self, did: int) -> int:
        return self._drop(lambda e: e.did == did or not e.present)

    def invalidate_pasid(self, did: int, pasid: int) -> int:
        return self._drop(lambda e: e.pasid == pasid and (e.did == did or not e.present))

    def _drop(self, pred) -> int:
        gone = [k for k, e in self._entries.items() if pred(e)]
        for k in gone:
            del self._entries[k]
        return len(gone)
