"""Context cache and IOTLB behaviour: caching mode, page-walk coherency, the write
buffer, staleness, IOTLB capacity (REFERENCE.md §3)."""

from __future__ import annotations

from hwkit import CAP_BASE, CAP_CM, CAP_RWBF, DID, ECAP_BASE, ECAP_C, SID, Rig
from vtdtui.hw import regs
from vtdtui.hw.caches import Iotlb, IotlbEntry
from vtdtui.hw.entries import ContextEntry, Pte

ECAP_NONCOHERENT = ECAP_BASE & ~ECAP_C


# ------------------------------------------------------------------ caching mode: context
def test_cm1_caches_a_not_present_context_entry_with_did_0():
    rig = Rig(CAP_BASE | CAP_CM)
    rig.context_table(3)  # root present, context entry zero
    assert rig.dma(0x1000).fault.reason == 0x2
    (e,) = list(rig.unit.context_cache)
    assert (e.source_id, e.did, e.present, e.fault_reason) == (SID, 0, False, 0x2)


def test_cm0_never_caches_a_not_present_context_entry():
    rig = Rig(CAP_BASE)
    rig.context_table(3)
    assert rig.dma(0x1000).fault.reason == 0x2
    assert len(rig.unit.context_cache) == 0
    # so making it present is seen at once
    pgd = rig.domain()
    rig.map(pgd, 0x1000, 0x9000)
    assert rig.dma(0x1000).hpa == 0x9000


def test_cm1_invalid_context_entry_is_cached_with_did_0_not_its_own_did():
    rig = Rig(CAP_BASE | CAP_CM)
    rig.set_context(did=DID, tt=3)  # present, DID 5, reserved TT: invalid (0x3)
    assert rig.dma(0x1000).fault.reason == 0x3
    (e,) = list(rig.unit.context_cache)
    assert (e.did, e.present, e.fault_reason) == (0, False, 0x3)
    pgd = rig.set_context(did=DID)  # fixed, clflushed
    rig.map(pgd, 0x1000, 0x9000)
    rig.unit.invalidate_context(regs.GRAN_DOMAIN, did=DID)  # the entry is not DID 5's
    assert rig.dma(0x1000).fault.reason == 0x3
    rig.unit.invalidate_context(regs.GRAN_DOMAIN, did=0)
    assert rig.dma(0x1000).hpa == 0x9000


def test_cm1_root_not_present_is_cached_too():
    rig = Rig(CAP_BASE | CAP_CM)
    rig.dma(0x1000)
    (e,) = list(rig.unit.context_cache)
    assert (e.did, e.present, e.fault_reason) == (0, False, 0x1)


def test_cm1_keeps_faulting_until_device_selective_invalidation_with_did_0():
    rig = Rig(CAP_BASE | CAP_CM)
    rig.context_table(3)
    assert rig.dma(0x1000).fault.reason == 0x2
    # software makes the entry present (clflushed) and maps a page
    pgd = rig.domain(did=DID)
    rig.map(pgd, 0x1000, 0x9000)
    t = rig.dma(0x1000)
    assert t.fault.reason == 0x2 and t.context_hit
    # device-selective for the new DID: the cached entry is tagged DID 0, stays
    rig.unit.invalidate_context(regs.GRAN_DEVICE, did=DID, source_id=SID, fm=0)
    assert rig.dma(0x1000).fault.reason == 0x2
    # device-selective with DID 0 (Linux context_present_cache_flush)
    rig.unit.invalidate_context(regs.GRAN_DEVICE, did=0, source_id=SID, fm=0)
    t = rig.dma(0x1000)
    assert t.ok and t.hpa == 0x9000
    (e,) = list(rig.unit.context_cache)
    assert (e.did, e.present) == (DID, True)


def test_cm1_caches_a_not_present_leaf_as_negative_iotlb_entry():
    rig = Rig(CAP_BASE | CAP_CM)
    pgd = rig.domain()
    assert rig.dma(0x4000).fault.reason == 0x6
    (e,) = list(rig.unit.iotlb)
    assert (e.did, e.iova, e.shift, e.present) == (DID, 0x4000, 12, False)
    rig.map(pgd, 0x4000, 0x9000)  # the map, clflushed, no invalidation
    t = rig.dma(0x4000)
    assert t.fault.reason == 0x6 and t.iotlb_hit
    # PSI for another DID, and for another page of this DID: no effect
    rig.unit.invalidate_iotlb(regs.GRAN_PAGE, did=DID + 1, addr=0x4000, am=0)
    rig.unit.invalidate_iotlb(regs.GRAN_PAGE, did=DID, addr=0x5000, am=0)
    assert rig.dma(0x4000).fault.reason == 0x6
    rig.unit.invalidate_iotlb(regs.GRAN_PAGE, did=DID, addr=0x4000, am=0)
    assert rig.dma(0x4000).hpa == 0x9000


def test_cm1_negative_iotlb_entry_goes_with_dsi():
    rig = Rig(CAP_BASE | CAP_CM)
    pgd = rig.domain()
    rig.dma(0x4000)
    rig.map(pgd, 0x4000, 0x9000)
    assert not rig.dma(0x4000).ok
    rig.unit.invalidate_iotlb(regs.GRAN_DOMAIN, did=DID)
    assert rig.dma(0x4000).ok


def test_cm1_negative_entry_reports_the_access_of_the_new_request():
    # A write that hits a not-present entry cached by an earlier read is a write
    # fault (0x5), exactly as the uncached walk would report it.
    rig = Rig(CAP_BASE | CAP_CM)
    rig.domain()
    assert rig.dma(0x4000).fault.reason == 0x6
    t = rig.dma(0x4000, write=True)
    assert t.iotlb_hit and t.fault.reason == 0x5


def test_cm0_does_not_cache_not_present_leaves():
    rig = Rig(CAP_BASE)
    pgd = rig.domain()
    assert not rig.dma(0x4000).ok
    assert len(rig.unit.iotlb) == 0
    rig.map(pgd, 0x4000, 0x9000)
    assert rig.dma(0x4000).hpa == 0x9000


def test_permission_faults_are_not_cached():
    rig = Rig(CAP_BASE | CAP_CM)
    pgd = rig.domain()
    rig.map(pgd, 0x4000, 0x9000, w=False)
    assert rig.dma(0x4000, write=True).fault.reason == 0x5
    assert len(rig.unit.iotlb) == 0


# ------------------------------------------------------------------ page-walk coherency
def test_non_coherent_unit_reads_stale_entry_until_clflush():
    rig = Rig(CAP_BASE, ECAP_NONCOHERENT)
    pgd = rig.domain()
    a = rig.map(pgd, 0x4000, 0x9000, flush=False)  # leaf left dirty in the CPU cache
    assert rig.cache.is_dirty(a)
    assert rig.dma(0x4000).fault.reason == 0x6  # memory still holds zero
    rig.cache.clflush(a, 8)
    assert rig.dma(0x4000).hpa == 0x9000


def test_non_coherent_unit_context_entry_needs_clflush_too():
    rig = Rig(CAP_BASE, ECAP_NONCOHERENT)
    rig.context_table(3)
    pgd = rig.set_context(flush=False)
    rig.map(pgd, 0x4000, 0x9000)
    assert rig.dma(0x4000).fault.reason == 0x2
    rig.cache.clflush(rig.context_addr(SID), 16)
    assert rig.dma(0x4000).ok


def test_coherent_unit_sees_the_entry_without_clflush():
    rig = Rig(CAP_BASE, ECAP_BASE)  # ECAP.C = 1
    pgd = rig.domain()
    a = rig.map(pgd, 0x4000, 0x9000, flush=False)
    assert rig.cache.is_dirty(a)
    assert rig.dma(0x4000).hpa == 0x9000


# ------------------------------------------------------------------ write buffer
def test_rwbf_unit_needs_a_write_buffer_flush():
    rig = Rig(CAP_BASE | CAP_RWBF)
    pgd = rig.domain()
    rig.unit.flush_write_buffer()  # setup done
    rig.map(pgd, 0x4000, 0x9000)  # clflushed, still posted
    assert rig.dma(0x4000).fault.reason == 0x6
    rig.unit.flush_write_buffer()
    assert rig.dma(0x4000).hpa == 0x9000


def test_rwbf_flush_through_gcmd_wbf():
    rig = Rig(CAP_BASE | CAP_RWBF)
    pgd = rig.domain()
    rig.unit.mmio_write(regs.GCMD_REG, rig.unit.gcmd | regs.GCMD_WBF)
    rig.map(pgd, 0x4000, 0x9000)
    assert not rig.dma(0x4000).ok
    gsts = rig.unit.mmio_write(regs.GCMD_REG, rig.unit.gcmd | regs.GCMD_WBF)  # bit 27
    assert gsts & (1 << 31)  # TE stays on across the one-shot command
    assert rig.dma(0x4000).hpa == 0x9000


def test_no_rwbf_sees_the_update_at_once():
    rig = Rig(CAP_BASE)
    pgd = rig.domain()
    rig.map(pgd, 0x4000, 0x9000)
    assert rig.dma(0x4000).hpa == 0x9000


# ------------------------------------------------------------------ staleness
def test_iotlb_stale_names_the_changed_entry_until_psi():
    rig = Rig()
    pgd = rig.domain()
    a = rig.map(pgd, 0x4000, 0x9000)
    assert rig.dma(0x4123).hpa == 0x9123
    (e,) = list(rig.unit.iotlb)
    assert rig.unit.iotlb_stale(e) is None
    rig.wq(a, Pte.encode(0xA000))  # remapped without invalidation
    assert rig.dma(0x4123).hpa == 0x9123  # hardware uses the cached translation
    why = rig.unit.iotlb_stale(e)
    assert why is not None and "0xa000" in why
    rig.unit.invalidate_iotlb(regs.GRAN_PAGE, did=DID, addr=0x4000, am=0)
    assert list(rig.unit.iotlb) == []
    assert rig.dma(0x4123).hpa == 0xA123
    (e2,) = list(rig.unit.iotlb)
    assert rig.unit.iotlb_stale(e2) is None


def test_iotlb_stale_after_unmap_and_permission_change():
    rig = Rig()
    pgd = rig.domain()
    a = rig.map(pgd, 0x4000, 0x9000)
    rig.dma(0x4000)
    (e,) = list(rig.unit.iotlb)
    rig.wq(a, Pte.encode(0x9000, w=False))
    assert rig.unit.iotlb_stale(e) is not None  # same page, now read-only
    rig.wq(a, 0)
    assert rig.unit.iotlb_stale(e) == "memory now says not present"


def test_context_cache_stale():
    rig = Rig()
    pgd = rig.domain(did=5)
    rig.dma(0x1000)
    (c,) = list(rig.unit.context_cache)
    assert rig.unit.context_cache_stale(c) is None
    lo, hi = ContextEntry.encode(did=7, aw=2, slptptr=pgd)
    rig.set_context_raw(SID, lo, hi)
    assert "DID 7" in rig.unit.context_cache_stale(c)
    assert rig.dma(0x1000).did == 5  # still the cached one


# ------------------------------------------------------------------ IOTLB capacity
def _entry(did, n):
    return IotlbEntry(did, n << 12, 12, 0x100000 + (n << 12), True, True, False)


def test_iotlb_default_capacity_and_flush_all_when_full():
    rig = Rig()
    t = rig.unit.iotlb
    assert t.capacity == 1024
    for n in range(1024):
        t.insert(_entry(1, n))
    assert len(t) == 1024 and t.full_flushes == 0
    t.insert(_entry(1, 5000))  # the 1025th empties the table first (QEMU vtd_update_iotlb)
    assert len(t) == 1 and t.full_flushes == 1
    assert t.lookup(1, 5000 << 12) is not None and t.lookup(1, 0) is None


def test_iotlb_capacity_through_translation():
    rig = Rig(iotlb_capacity=4)
    pgd = rig.domain()
    for n in range(5):
        rig.map(pgd, n << 12, 0x10000 + (n << 12))
    for n in range(4):
        rig.dma(n << 12)
    assert len(rig.unit.iotlb) == 4
    rig.dma(4 << 12)
    assert [e.iova for e in rig.unit.iotlb] == [0x4000]


def test_iotlb_lookup_finds_large_entries():
    t = Iotlb()
    t.insert(IotlbEntry(3, 0x4000_0000, 30, 0x8000_0000, True, False, False))
    assert t.lookup(3, 0x7FFF_FFFF).hpa == 0x8000_0000
    assert t.lookup(3, 0x8000_0000) is None
    assert t.lookup(4, 0x4000_0000) is None  # tagged by DID


# ------------------------------------------------------------------ unit options
def _unit_rig(**kw):
    """A rig whose unit is rebuilt with extra DmarUnit options (same memory)."""
    from vtdtui.hw import DmarUnit

    rig = Rig(kw.pop("cap", CAP_BASE), kw.pop("ecap", ECAP_BASE), enable=False)
    rig.unit = DmarUnit("dmar1", 0xFED91000, rig.unit.cap, rig.unit.ecap, rig.mem, rig.cache, **kw)
    rig.unit.set_root_table(rig.root)
    rig.unit.enable_translation()
    return rig


def test_cm1_unit_that_does_not_cache_negative_entries():
    rig = _unit_rig(cap=CAP_BASE | CAP_CM, caches_negative=False)
    rig.context_table(3)
    assert rig.dma(0x1000).fault.reason == 0x2
    assert len(rig.unit.context_cache) == 0
    pgd = rig.domain()
    assert rig.dma(0x1000).fault.reason == 0x6
    assert len(rig.unit.iotlb) == 0
    rig.map(pgd, 0x1000, 0x9000)
    assert rig.dma(0x1000).hpa == 0x9000


def test_qemu_emulated_unit_reads_through_the_cpu_cache_and_caches_no_negatives():
    # QEMU's vIOMMU: ECAP.C = 0 is advertised, yet its reads are coherent.
    rig = _unit_rig(cap=CAP_BASE | CAP_CM, ecap=ECAP_NONCOHERENT, emulated_by_qemu=True)
    pgd = rig.domain()
    assert not rig.dma(0x1000).ok
    assert len(rig.unit.iotlb) == 0  # CM=1 but nothing negative cached
    rig.map(pgd, 0x1000, 0x9000, flush=False)
    assert rig.dma(0x1000).hpa == 0x9000


def test_invalidation_listeners_see_the_performed_granularity():
    rig = Rig(CAP_BASE & ~(1 << 39))  # no PSI
    seen = []
    rig.unit.invalidation_listeners.append(lambda unit, kind, f: seen.append((unit.name, kind, f)))
    rig.unit.invalidate_iotlb(regs.GRAN_PAGE, did=5, addr=0x1000, am=0)
    rig.unit.invalidate_context(regs.GRAN_DEVICE, did=0, source_id=SID, fm=3)
    assert seen == [
        ("dmar1", "iotlb", dict(gran=2, did=5, addr=0x1000, am=0, ih=False)),
        ("dmar1", "context", dict(gran=3, did=0, source_id=SID, fm=3)),
    ]


def test_negative_entries_are_stale_once_memory_is_present():
    rig = Rig(CAP_BASE | CAP_CM)
    rig.context_table(3)
    rig.dma(0x1000)
    (c,) = list(rig.unit.context_cache)
    assert rig.unit.context_cache_stale(c) is None  # memory agrees: not present
    pgd = rig.domain()
    assert rig.unit.context_cache_stale(c) == "now present in memory; still cached as not present"
    rig.unit.invalidate_context(regs.GRAN_GLOBAL)
    rig.dma(0x4000)
    (e,) = list(rig.unit.iotlb)
    assert not e.present and rig.unit.iotlb_stale(e) is None
    rig.map(pgd, 0x4000, 0x9000)
    assert rig.unit.iotlb_stale(e) == "now present in memory; still cached as not present"
