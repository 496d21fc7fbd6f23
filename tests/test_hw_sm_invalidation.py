"""Scalable-mode caches and their invalidation: the PASID cache, PASID-tagged IOTLB
entries and which descriptor granularity drops which (QEMU vtd_hash_remove_by_page
/ _by_pasid / _by_page_piotlb), caching-mode negative entries, device-TLBs, and the
256-bit invalidation queue (IQA.DW: 32-byte slots, IQH/IQT index << 5)."""

from __future__ import annotations

from hwsmkit import CAP_CM, CAP_SM, DID, ECAP_SM, FS_LEAF_RO, FS_LEAF_RW, SID, SmRig

from vtdtui.hw import qi
import vtdtui.machine.state as S

T0 = 0x2000000


def fs_rig(**kw):
    rig = SmRig(**kw)
    pgd = rig.fs_domain()
    return rig, pgd


def test_stale_pasid_entry_used_until_the_pasid_cache_is_invalidated():
    rig, pgd = fs_rig()
    rig.fs_map(pgd, 0x1000, 0x9000)
    assert rig.dma(0x1000).ok
    a = rig.set_pasid(pgtt=1, fsptptr=pgd, present=False)  # torn down in memory
    (e,) = list(rig.unit.pasid_cache)
    assert rig.unit.pasid_cache_stale(e) == "memory now gives fault 0x59 (SM: Present bit in PASID Table Entry is clear)"
    rig.unit.iotlb.invalidate_global()
    assert rig.dma(0x1000).ok  # the cached PASID entry is still used
    rig.unit.invalidate_pasid_cache(1, DID + 1, 0)  # wrong DID: stays
    rig.unit.invalidate_pasid_cache(1, DID, 1)  # wrong PASID: stays
    assert len(rig.unit.pasid_cache) == 1
    rig.unit.invalidate_pasid_cache(1, DID, 0)
    assert len(rig.unit.pasid_cache) == 0 and rig.dma(0x1000).fault.reason == 0x59
    assert a == rig.pasid_entry_addr(SID, 0)


def test_pasid_cache_domain_and_global_granularity():
    rig = SmRig()
    rig.set_context(SID, paside=True)
    for p, did in ((1, 7), (2, 7), (3, 8)):
        rig.set_pasid(SID, p, pgtt=4, did=did)
        assert rig.dma(0x0, pasid=p).ok
    rig.unit.invalidate_pasid_cache(0, 7)  # G0: all PASIDs of DID 7
    assert [e.pasid for e in rig.unit.pasid_cache] == [3]
    rig.unit.invalidate_pasid_cache(3)  # G3: global
    assert len(rig.unit.pasid_cache) == 0


def test_first_stage_iotlb_entry_and_which_descriptor_drops_it():
    rig, pgd = fs_rig()
    rig.fs_map(pgd, 0x1000, 0x9000)
    rig.fs_map(pgd, 0x40_0000, 0xA000)
    assert rig.dma(0x1000).ok and rig.dma(0x40_0000).ok
    rig.fs_map(pgd, 0x1000, 0xB000)  # remapped in memory, no invalidation
    e = next(x for x in rig.unit.iotlb if x.iova == 0x1000)
    assert rig.unit.iotlb_stale(e) == "memory now maps 0x1000 to 0xb000 (RW)"
    assert rig.dma(0x1000).hpa == 0x9000  # the stale entry is used
    rig.unit.invalidate_piotlb(3, DID, 1, 0x1000, 0)  # another PASID: stays
    rig.unit.invalidate_piotlb(3, DID + 1, 0, 0x1000, 0)  # another DID: stays
    rig.unit.invalidate_piotlb(3, DID, 0, 0x2000, 0)  # another page: stays
    assert rig.dma(0x1000).hpa == 0x9000
    rig.unit.invalidate_piotlb(3, DID, 0, 0x1000, 0)
    assert rig.dma(0x1000).hpa == 0xB000
    assert {x.iova for x in rig.unit.iotlb} == {0x1000, 0x40_0000}
    rig.unit.invalidate_piotlb(2, DID, 0)  # PASID-selective: all of (DID, PASID)
    assert len(rig.unit.iotlb) == 0


def test_type2_psi_drops_every_first_stage_entry_of_the_domain():
    # vtd_hash_remove_by_page: first-stage entries of the DID go whatever the address.
    rig, pgd = fs_rig()
    rig.fs_map(pgd, 0x1000, 0x9000)
    rig.fs_map(pgd, 0x40_0000, 0xA000)
    rig.dma(0x1000), rig.dma(0x40_0000)
    rig.unit.invalidate_iotlb(3, DID, 0x8000_0000, 0)
    assert len(rig.unit.iotlb) == 0
    rig.dma(0x1000)
    rig.unit.invalidate_iotlb(2, DID + 1)  # DSI of another domain: stays
    assert len(rig.unit.iotlb) == 1
    rig.unit.invalidate_iotlb(2, DID)  # DSI drops first-stage entries too
    assert len(rig.unit.iotlb) == 0


def test_second_stage_entries_survive_piotlb_psi_but_not_dsi():
    rig = SmRig()
    pgd = rig.ss_domain()
    rig.ss_map(pgd, 0x1000, 0x7000)
    rig.ss_map(pgd, 0x2000, 0x8000)
    rig.dma(0x1000), rig.dma(0x2000)
    rig.unit.invalidate_piotlb(3, DID, 0, 0x1000, 0)  # page-selective P_IOTLB: not second stage
    assert len(rig.unit.iotlb) == 2
    rig.unit.invalidate_iotlb(3, DID, 0x1000, 0)  # type-2 PSI: that page only
    assert [e.iova for e in rig.unit.iotlb] == [0x2000]
    rig.unit.invalidate_piotlb(2, DID, 0)  # PASID-selective (QEMU: any PGTT)
    assert len(rig.unit.iotlb) == 0


def test_caching_mode_caches_not_present_entries():
    rig = SmRig(cap=CAP_SM | CAP_CM)
    rig.set_context(SID, present=False)
    assert rig.dma(0x0).fault.reason == 0x41
    rig.set_context(SID)
    assert rig.dma(0x0).fault.reason == 0x41  # negative context entry used
    (c,) = list(rig.unit.context_cache)
    assert rig.unit.context_cache_stale(c) == "now present in memory; still cached as not present"
    rig.unit.invalidate_context(3, 0, SID)  # device-selective, DID ignored in SM
    assert rig.dma(0x0).fault.reason == 0x51
    rig.unit.invalidate_pasid_cache(3)
    pgd = rig.alloc.alloc()
    rig.set_pasid(pgtt=1, fsptptr=pgd, present=False)
    assert rig.dma(0x0).fault.reason == 0x59
    rig.set_pasid(pgtt=1, fsptptr=pgd)
    assert rig.dma(0x0).fault.reason == 0x59  # negative PASID-cache entry
    rig.unit.invalidate_pasid_cache(1, DID, 0)  # pasid_flush_caches: PC with the new DID drops it
    assert rig.dma(0x0).fault.reason == 0x71
    assert rig.dma(0x0).fault.reason == 0x71 and rig.unit.iotlb.hits == 1  # negative IOTLB entry
    rig.fs_map(pgd, 0x0, 0x9000)
    assert not rig.dma(0x0).ok
    rig.unit.invalidate_piotlb(2, DID, 0)
    assert rig.dma(0x0).hpa == 0x9000


def test_no_negative_caching_without_cm():
    rig = SmRig()
    rig.set_context(SID, present=False)
    rig.dma(0x0)
    assert len(rig.unit.context_cache) == 0 and len(rig.unit.pasid_cache) == 0


def test_read_only_first_stage_entry_and_stale_permission():
    rig, pgd = fs_rig()
    a = rig.fs_map(pgd, 0x3000, 0x9000, bits=FS_LEAF_RW)
    rig.dma(0x3000, True)
    rig.wq(a, 0x9000 | FS_LEAF_RO)
    e = next(iter(rig.unit.iotlb))
    assert rig.unit.iotlb_stale(e) == "memory now maps 0x3000 to 0x9000 (R-)"
    assert rig.dma(0x3000, True).ok  # stale write permission used


def _qi(rig):
    q = rig.enable_qi(qs=1)  # 8 KiB: 256 slots of 32 bytes
    assert rig.unit.queue_entries == 256 and rig.unit.qi_shift == 5
    return q


def test_256_bit_queue_geometry_and_processing():
    rig, pgd = fs_rig()
    rig.fs_map(pgd, 0x1000, 0x9000)
    rig.dma(0x1000)
    q = _qi(rig)
    rig.unit.submit(qi.PiotlbDesc(2, DID, 0), qi.PcDesc(1, DID, 0),
                    qi.WaitDesc(status_write=True, status_data=2, status_addr=0x3000000))
    u = rig.unit
    assert u.iqt == 3 << 5 and u.iqh == 3 << 5 and not u.fsts & 0x10
    assert len(u.iotlb) == 0 and len(u.pasid_cache) == 0
    # slot 1 at q + 32: qw0 of the PC descriptor, qw2/qw3 written as 0
    assert [rig.rq(q + 32 + 8 * i) for i in range(4)] == [0x7 | 1 << 4 | DID << 16, 0, 0, 0]
    assert rig.rq(0x3000000) & 0xFFFF_FFFF == 2


def test_256_bit_queue_wraps():
    rig = SmRig()
    _qi(rig)
    u = rig.unit
    u.iqh = u.iqt = 255 << 5
    u.submit(qi.PcDesc(3), qi.PcDesc(3))
    assert u.iqt == 1 << 5 and u.iqh == 1 << 5 and u.counters["pc-global"] == 2


def test_256_bit_queue_errors():
    rig = SmRig()
    q = _qi(rig)
    u = rig.unit
    u.mmio_write(0x88, 0x10)  # IQT bit 4: reserved with DW=1
    assert u.fsts & 0x10
    rig2 = SmRig()
    q = _qi(rig2)
    for i, w in enumerate((0x7 | 3 << 4, 0, 0, 1)):  # a PC descriptor with qw3 set
        rig2.wq(q + 8 * i, w)
    rig2.unit.mmio_write(0x88, 1 << 5)
    assert rig2.unit.fsts & 0x10 and rig2.unit.iqh == 0 and "upper 128 bits" in rig2.unit.last_queue_error
    rig3 = SmRig()
    rig3.unit.enable_qi(0x4000000)  # 128-bit queue
    rig3.unit.submit(qi.PcDesc(3))
    assert rig3.unit.fsts & 0x10 and "128-bit queue" in rig3.unit.last_queue_error


def test_dw_needs_smts():
    rig = SmRig(ecap=ECAP_SM & ~(1 << 43))
    rig.unit.enable_qi(0x4000000, 0, dw=True)
    assert not rig.unit.iq_dw and rig.unit.qi_shift == 4 and rig.unit.queue_entries == 256


def test_device_tlbs_with_and_without_pasid():
    rig = SmRig()
    rig.set_context(SID, dte=True, paside=True)
    rig.set_pasid(SID, 0, pgtt=4, did=1)
    rig.set_pasid(SID, 9, pgtt=4, did=1)
    assert rig.dma(0x5000, translation_request=True).ok
    assert rig.dma(0x6000, pasid=9, translation_request=True).ok
    assert rig.unit.device_tlb == {SID: {5: (0x5000, True, True)}}
    assert rig.unit.pasid_device_tlb == {(SID, 9): {6: (0x6000, True, True)}}
    _qi(rig)
    rig.unit.submit(qi.PasidDevTlbDesc(SID, 8, 0x6000))  # another PASID: stays
    assert rig.unit.pasid_device_tlb[(SID, 9)]
    rig.unit.submit(qi.PasidDevTlbDesc(SID, 9, 0x6000))
    assert not rig.unit.pasid_device_tlb[(SID, 9)] and rig.unit.device_tlb[SID]
    rig.unit.submit(qi.DevTlbDesc(SID, 0x5000))
    assert not rig.unit.device_tlb[SID]


def test_views_list_what_the_cpu_wrote():
    rig = SmRig(ecap=ECAP_SM)
    rig.set_context(SID, paside=True, pdts=1)
    rig.set_pasid(SID, 0, pgtt=4, did=1)
    rig.set_pasid(SID, 200, pgtt=2, did=3, ssptptr=T0, flush=False)
    u = rig.unit
    assert [(b << 8 | f, e.pdts) for b, _, r in S.sm_roots(u) for f, _, e in S.sm_contexts(u, b, r)] == [(SID, 1)]
    got = [(p, a, e.pgtt, e.did) for p, a, e in S.pasid_entries(u, S.sm_context(u, SID)) if e.present]
    assert got == [(0, rig.pasid_entry_addr(SID, 0), 4, 1), (200, rig.pasid_entry_addr(SID, 200), 2, 3)]
    assert CAP_SM and FS_LEAF_RO
