"""Cache tags and the flushes that walk them (drivers/iommu/intel/cache.c, NEW copy:
intel-lab-lkp/linux@0b01758c4064), for domains attached in scalable mode.

A mixin of IntelIommuDriver.  A domain keeps one CACHE_TAG_IOTLB tag per (unit, DID,
PASID) and one CACHE_TAG_DEVTLB tag per ATS-enabled device; tags of one unit sit
together so a flush batches per unit (cache_tag_assign: "Link cache tags of same iommu
unit together").  Legacy-mode domains keep the older per-unit loops of sw/linux.py.

A nested domain (IOMMU_DOMAIN_NESTED) also puts CACHE_TAG_NESTING_IOTLB / _DEVTLB tags,
carrying the nested domain's DID, on its parent (__cache_tag_assign_parent_domain), so a
change to the parent's second stage reaches every translation cached through it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..hw import regs
from ..hw.entries import bdf_str

MAX_AGAW_PFN_WIDTH = 52  # iommu.h
IOTLB_KINDS = ("iotlb", "nesting_iotlb")  # cache_tage_match(): matched by unit, not device


@dataclass
class CacheTag:
    # "iotlb" | "devtlb" | "nesting_iotlb" | "nesting_devtlb" (CACHE_TAG_IOTLB, _DEVTLB,
    # _NESTING_IOTLB, _NESTING_DEVTLB); a nesting tag sits on a nest parent and carries
    # the DID of the nested domain that put it there.
    kind: str
    unit: str
    did: int
    pasid: int
    sid: int | None = None  # the device of a DEVTLB tag
    users: int = 1


def calculate_psi_aligned_address(start: int, last: int) -> tuple[int, int]:
    """cache.c calculate_psi_aligned_address() (NEW): `sz_lg2 = fls_long(start ^ last)`;
    ≤ 12 → order 0 at start; ≥ MAX_AGAW_PFN_WIDTH → (0, 52); else the aligned block of
    2^sz_lg2 bytes that holds both ends.  Returns (address, size order)."""
    start &= ~0xFFF
    sz = (start ^ last).bit_length()
    if sz <= 12:
        return start, 0
    if sz >= MAX_AGAW_PFN_WIDTH:
        return 0, MAX_AGAW_PFN_WIDTH
    return start & ~((1 << sz) - 1), sz - 12


class CacheTags:
    """Cache-tag policy of IntelIommuDriver (attributes are the driver's)."""

    # ------------------------------------------------------------ assign / unassign
    def _cache_tag_assign(self, d, kind: str, unit, did: int, pasid: int, sid: int | None) -> None:
        """cache_tag_assign(): reuse a matching tag (users++), else insert it after the
        last tag of the same unit, or at the head when the unit has none (list_add)."""
        for t in d.tags:
            if (t.kind, t.did, t.pasid) == (kind, did, pasid) and (t.unit == unit.name if kind in IOTLB_KINDS
                                                                   else t.sid == sid):
                t.users += 1
                return
        at = 0
        for i, t in enumerate(d.tags):
            if t.unit == unit.name:
                at = i + 1
        d.tags.insert(at, CacheTag(kind, unit.name, did, pasid, sid))

    def _cache_tag_unassign(self, d, kind: str, unit, did: int, pasid: int, sid: int | None) -> None:
        for i, t in enumerate(d.tags):
            if (t.kind, t.did, t.pasid) == (kind, did, pasid) and (t.unit == unit.name if kind in IOTLB_KINDS
                                                                   else t.sid == sid):
                t.users -= 1
                if not t.users:
                    del d.tags[i]
                return

    def _domain_tags(self, d, unit, sid: int):
        """The tags attaching `sid` gives: (domain, kind, DID, device) — an IOTLB tag, a
        DEVTLB tag iff info->ats_enabled, and for a nested domain NESTING_IOTLB (and,
        with ATS, NESTING_DEVTLB) tags on its parent with the nested domain's DID
        (__cache_tag_assign_parent_domain)."""
        did = d.dids[unit.name]
        yield d, "iotlb", did, None
        if sid in self.ats:
            yield d, "devtlb", did, sid
        if d.stage == "nested":
            yield d.parent, "nesting_iotlb", did, None
            if sid in self.ats:
                yield d.parent, "nesting_devtlb", did, sid

    def _cache_tag_assign_domain(self, d, unit, sid: int, pasid: int = 0) -> None:
        """cache_tag_assign_domain()."""
        for owner, kind, did, dev in self._domain_tags(d, unit, sid):
            self._cache_tag_assign(owner, kind, unit, did, pasid, dev)

    def _cache_tag_unassign_domain(self, d, unit, sid: int, pasid: int = 0) -> None:
        """cache_tag_unassign_domain() (and __cache_tag_unassign_parent_domain)."""
        for owner, kind, did, dev in self._domain_tags(d, unit, sid):
            self._cache_tag_unassign(owner, kind, unit, did, pasid, dev)

    # ------------------------------------------------------------ flushes
    @staticmethod
    def use_piotlb(d) -> bool:
        """intel_domain_use_piotlb() (upstream 04b1b069f151 "Flush piotlb for SVM and
        Nested domain", Dec 2025): SVA, NESTED or first-stage paging flush with P_IOTLB.
        Before it (G17) a nested domain was not fs paging and got a type-2 IOTLB
        invalidation with its DID; the model follows the newest."""
        return d.stage in ("first", "nested")

    def _tag_iotlb(self, d, tag: CacheTag, addr: int, mask: int, ih: bool, rule: str, why: str, detail: str) -> None:
        """cache_tag_flush_iotlb(): first stage or nested (intel_domain_use_piotlb) →
        P_IOTLB, PASID-selective when mask ≥ 52 else page-selective-within-PASID (no
        CAP.PSI or MAMV test); second stage → PSI, or DSI when !CAP.PSI or mask > MAMV.
        A parent's NESTING_IOTLB tag takes the parent's (second-stage) branch with the
        nested domain's DID."""
        from ..hw import qi

        unit = self.units[tag.unit]
        did, pasid = tag.did, tag.pasid
        if self.use_piotlb(d):
            if mask >= MAX_AGAW_PFN_WIDTH:
                ev = self._ev(unit, "piotlb-invalidation", True, rule, f"{why} (qi_batch_add_piotlb_all)", "pasid",
                              f"DID {did} PASID {pasid}", did=did, pasid=pasid)
                self._qi_send(unit, qi.PiotlbDesc(qi.PIOTLB_PASID, did, pasid), ev)
            else:
                ev = self._ev(unit, "piotlb-invalidation", True, rule, why, "page",
                              f"DID {did} PASID {pasid} {detail} → addr {addr:#x} AM {mask}{' IH' if ih else ''}",
                              did=did, pasid=pasid)
                self._qi_send(unit, qi.PiotlbDesc(qi.PIOTLB_PSI, did, pasid, addr, mask, ih), ev)
            return
        if not unit.psi or mask > unit.mamv:
            cause = "CAP.PSI=0: no page-selective invalidation" if not unit.psi else \
                f"mask {mask} > MAMV {unit.mamv}: range too large for one PSI"
            self._ev(unit, "iotlb-invalidation", False, "psi-fallback", cause, "page", f"DID {did} {detail}", did=did)
            ev = self._ev(unit, "iotlb-invalidation", True, rule, f"{why} (domain-selective)", "domain", f"DID {did}",
                          did=did)
            self._flush_iotlb(unit, regs.GRAN_DOMAIN, did, ev=ev)
            return
        # qi_desc_iotlb() ignores the IH argument: type-2 PSI descriptors carry IH=0.
        ev = self._ev(unit, "iotlb-invalidation", True, rule, why, "page",
                      f"DID {did} {detail} → addr {addr:#x} AM {mask}", did=did)
        self._flush_iotlb(unit, regs.GRAN_PAGE, did, addr, mask, False, ev=ev)

    def _tag_devtlb(self, tag: CacheTag, addr: int, mask: int, rule: str) -> None:
        """cache_tag_flush_devtlb_psi(): PASID 0 → dev-TLB (type 3), else the PASID form."""
        unit = self.units[tag.unit]
        if tag.pasid == 0:
            self._devtlb(unit, tag.sid, addr, mask, rule)
        else:
            self._devtlb_pasid(unit, tag.sid, tag.pasid, addr, mask, rule)

    def cache_tag_flush_range(self, d, start: int, last: int, ih: bool, rule: str, why: str) -> None:
        """cache_tag_flush_range(domain, start, end, ih): every tag, batched per unit.

        NESTING_DEVTLB: "There is no easy way to identify the exact set of nested
        translations affected by a change in S2. So just flush the entire device cache":
        the kernel sets its loop's `addr = 0; mask = MAX_AGAW_PFN_WIDTH;` and falls
        through — those locals stay so for every tag after it in the list, as here."""
        addr, mask = calculate_psi_aligned_address(start, last)
        detail = f"{start:#x}..{last:#x}"
        with self.qi_batch():
            for tag in list(d.tags):
                if tag.kind == "iotlb":
                    self._tag_iotlb(d, tag, addr, mask, ih, rule, why, detail)
                elif tag.kind == "nesting_iotlb":
                    self._tag_iotlb(d, tag, addr, mask, ih, "nesting-tags", self._nesting_why(d, tag, why), detail)
                elif tag.kind == "nesting_devtlb":
                    addr, mask = 0, MAX_AGAW_PFN_WIDTH
                    self._tag_devtlb(tag, addr, mask, "nesting-tags")
                else:
                    self._tag_devtlb(tag, addr, mask, rule)

    @staticmethod
    def _nesting_why(d, tag: CacheTag, why: str) -> str:
        return (f"{why}; nest parent domain {d.id}: a nested domain (DID {tag.did}) caches translations "
                "through this second stage (CACHE_TAG_NESTING_IOTLB)")

    def cache_tag_flush_all(self, d, rule: str, why: str) -> None:
        """cache_tag_flush_all() (G17/NEW): cache_tag_flush_range(domain, 0, ULONG_MAX, 0)."""
        self.cache_tag_flush_range(d, 0, (1 << 64) - 1, False, rule, why)

    def cache_tag_flush_range_np(self, d, start: int, last: int) -> None:
        """cache_tag_flush_range_np(): per tag, `!cap_caching_mode || intel_domain_is_fs_paging`
        → iommu_flush_write_buffer() only ("any software updates to remapping structures
        other than first-stage mapping requires explicit invalidation"); else the IOTLB
        tags get cache_tag_flush_iotlb(..., ih=0) and DEVTLB tags nothing."""
        addr, mask = calculate_psi_aligned_address(start, last)
        detail = f"{start:#x}..{last:#x}"
        with self.qi_batch():
            for tag in list(d.tags):
                unit = self.units[tag.unit]
                fs = d.stage == "first"
                if not unit.cm or fs:
                    if tag.kind == "iotlb":
                        op = "piotlb-invalidation" if fs else "iotlb-invalidation"
                        if fs and unit.cm:
                            self._ev(unit, op, False, "map-fs",
                                     "first stage: CM does not cover first-stage mappings (cache.c "
                                     "cache_tag_flush_range_np)", "page", f"DID {tag.did} PASID {tag.pasid} {detail}",
                                     did=tag.did, pasid=tag.pasid)
                        else:
                            self._ev(unit, op, False, "map-fs" if fs else "map-np2p",
                                     "CM=0: hardware does not cache not-present entries", "page",
                                     f"DID {tag.did} {detail}", did=tag.did, pasid=tag.pasid if fs else None)
                    elif tag.kind == "nesting_iotlb":
                        self._ev(unit, "iotlb-invalidation", False, "nesting-tags",
                                 self._nesting_why(d, tag, "CM=0: hardware does not cache not-present entries"),
                                 "page", f"DID {tag.did} {detail}", did=tag.did)
                    self.flush_write_buffer(unit, "cache_tag_flush_range_np(): a write-buffer flush makes the new "
                                                  "entries visible")
                    continue
                if tag.kind not in IOTLB_KINDS:
                    continue
                rule = "map-np2p" if tag.kind == "iotlb" else "nesting-tags"
                if self.skip_invalidation:
                    self._ev(unit, "iotlb-invalidation", False, rule,
                             "what-if: driver skips the caching-mode invalidation", "page",
                             f"DID {tag.did} {detail}", did=tag.did)
                    continue
                why = "CM=1: hardware may have cached the not-present entries"
                if tag.kind == "nesting_iotlb":  # "tag->type == CACHE_TAG_IOTLB || ... NESTING_IOTLB"
                    why = self._nesting_why(d, tag, why)
                self._tag_iotlb(d, tag, addr, mask, False, rule, why, detail)
