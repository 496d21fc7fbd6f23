"""Invalidation granularities, through the API and through the registers
(CCMD at 0x28, IVA/IOTLB at ECAP.IRO*16; VT-d spec §6.5.1, §11.4.4-5)."""

from __future__ import annotations

import pytest

from hwkit import CAP_BASE, CAP_ESRTPS, CAP_PSI, DID, Rig
from vtdtui.hw import regs
from vtdtui.hw.caches import ContextCache, ContextCacheEntry, Iotlb, IotlbEntry


# ------------------------------------------------------------------ context cache
def cc_entry(sid, did):
    return ContextCacheEntry(sid, did, True, 0x1001, did << 8 | 2)


def filled_context_cache(rig=None):
    # 00:1f.0 .. 00:1f.7 (sid 0x00f8 .. 0x00ff) DID 5, except 00:1f.3 (0x00fb) DID 6;
    # 00:1e.0 (0x00f0) DID 5; 01:1f.0 (0x01f8) DID 5.
    cc = rig.unit.context_cache if rig else ContextCache()
    for fn in range(8):
        cc.insert(cc_entry(0x00F8 | fn, 6 if fn == 3 else 5))
    cc.insert(cc_entry(0x00F0, 5))
    cc.insert(cc_entry(0x01F8, 5))
    return cc


def sids(cc):
    return {e.source_id for e in cc}


ALL = {0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF, 0xF0, 0x1F8}


def test_context_global():
    rig = Rig()
    cc = filled_context_cache(rig)
    assert rig.unit.invalidate_context(regs.GRAN_GLOBAL) == 1
    assert len(cc) == 0


def test_context_domain_selective():
    rig = Rig()
    cc = filled_context_cache(rig)
    assert rig.unit.invalidate_context(regs.GRAN_DOMAIN, did=6) == 2
    assert sids(cc) == ALL - {0xFB}
    rig.unit.invalidate_context(regs.GRAN_DOMAIN, did=5)
    assert sids(cc) == set()


@pytest.mark.parametrize(
    "sid,did,fm,gone",
    [
        (0x00F8, 5, 0, {0xF8}),  # FM 0: exactly 00:1f.0
        (0x00FB, 5, 0, set()),  # 00:1f.3 is in DID 6, not 5
        (0x00FB, 6, 0, {0xFB}),
        (0x00F9, 5, 1, {0xF9, 0xFD}),  # FM 1 masks fn bit 2: fn 1 and 5
        (0x00F8, 5, 2, {0xF8, 0xFA, 0xFC, 0xFE}),  # FM 2 masks fn bits 2:1: fn 0,2,4,6
        (0x00F8, 5, 3, {0xF8, 0xF9, 0xFA, 0xFC, 0xFD, 0xFE, 0xFF}),  # FM 3: all fns of DID 5
        (0x00FF, 6, 3, {0xFB}),  # FM 3 for DID 6: only 00:1f.3
        (0x01F8, 5, 3, {0x1F8}),  # other bus
    ],
)
def test_context_device_selective_with_function_mask(sid, did, fm, gone):
    rig = Rig()
    cc = filled_context_cache(rig)
    assert rig.unit.invalidate_context(regs.GRAN_DEVICE, did=did, source_id=sid, fm=fm) == 3
    assert sids(cc) == ALL - gone


def test_context_reserved_granularity_rejected():
    with pytest.raises(ValueError):
        Rig().unit.invalidate_context(0)


def test_ccmd_register_device_selective():
    rig = Rig()
    cc = filled_context_cache(rig)
    # ICC (63) | CIRG 3 (62:61) | FM 3 (33:32) | SID 0x00f8 (31:16) | DID 5 (15:0)
    #  = 0x8000.. | 0x6000.. | 0x3_0000_0000 | 0xf8_0000 | 0x5
    value = 0xE000_0003_00F8_0005
    back = rig.unit.mmio_write(regs.CCMD_REG, value)
    # ICC clear, CAIG (60:59) = 3 -> 0x1800_0000_0000_0000
    assert back == 0x7800_0003_00F8_0005
    assert sids(cc) == ALL - {0xF8, 0xF9, 0xFA, 0xFC, 0xFD, 0xFE, 0xFF}


def test_ccmd_register_global_and_domain():
    rig = Rig()
    cc = filled_context_cache(rig)
    # ICC | CIRG 2 (0x4000..) | DID 6 -> read back CAIG 2 (0x1000..)
    assert rig.unit.mmio_write(regs.CCMD_REG, 0xC000_0000_0000_0006) == 0x5000_0000_0000_0006
    assert sids(cc) == ALL - {0xFB}
    # ICC | CIRG 1 (0x2000..) -> read back 0x2000.. | CAIG 1 (0x0800..)
    assert rig.unit.mmio_write(regs.CCMD_REG, 0xA000_0000_0000_0000) == 0x2800_0000_0000_0000
    assert len(cc) == 0


def test_ccmd_without_icc_does_nothing():
    rig = Rig()
    cc = filled_context_cache(rig)
    rig.unit.mmio_write(regs.CCMD_REG, 0x2000_0000_0000_0000)  # CIRG global, ICC clear
    assert len(cc) == 10


# ------------------------------------------------------------------ IOTLB
def tlb_entry(did, iova, shift=12):
    return IotlbEntry(did, iova, shift, 0x4000_0000 + iova, True, True, False)


def filled_iotlb(rig):
    t = rig.unit.iotlb
    for iova in (0xF000, 0x10000, 0x11000, 0x12000, 0x13000, 0x14000):
        t.insert(tlb_entry(5, iova))
    t.insert(tlb_entry(6, 0x10000))
    t.insert(tlb_entry(5, 0x200000, 21))  # 2 MiB page 0x200000..0x3fffff
    t.insert(tlb_entry(5, 0x4000_0000, 30))  # 1 GiB page 0x40000000..0x7fffffff
    return t


def keys(t):
    return {(e.did, e.iova) for e in t}


ALL_TLB = {
    (5, 0xF000), (5, 0x10000), (5, 0x11000), (5, 0x12000), (5, 0x13000), (5, 0x14000),
    (6, 0x10000), (5, 0x200000), (5, 0x4000_0000),
}


def test_iotlb_global():
    rig = Rig()
    t = filled_iotlb(rig)
    assert rig.unit.invalidate_iotlb(regs.GRAN_GLOBAL) == 1
    assert len(t) == 0


def test_iotlb_domain_selective_only_that_did():
    rig = Rig()
    t = filled_iotlb(rig)
    assert rig.unit.invalidate_iotlb(regs.GRAN_DOMAIN, did=5) == 2
    assert keys(t) == {(6, 0x10000)}


@pytest.mark.parametrize(
    "addr,am,gone",
    [
        (0x10000, 0, {(5, 0x10000)}),
        (0x10000, 2, {(5, 0x10000), (5, 0x11000), (5, 0x12000), (5, 0x13000)}),  # 4 pages
        (0x12000, 2, {(5, 0x10000), (5, 0x11000), (5, 0x12000), (5, 0x13000)}),  # low bits ignored
        (0x201000, 0, {(5, 0x200000)}),  # one 4 KiB page inside the 2 MiB entry
        (0x3FF000, 0, {(5, 0x200000)}),  # its last page
        (0x400000, 0, set()),  # just past it
        (0x7FFF_F000, 0, {(5, 0x4000_0000)}),  # last page of the 1 GiB entry
        (0x0, 9, {(5, 0xF000), (5, 0x10000), (5, 0x11000), (5, 0x12000), (5, 0x13000), (5, 0x14000)}),
        (0x200000, 9, {(5, 0x200000)}),  # 2^9 pages = 2 MiB from 0x200000
    ],
)
def test_iotlb_page_selective(addr, am, gone):
    rig = Rig()  # CAP.PSI, MAMV 9
    t = filled_iotlb(rig)
    assert rig.unit.invalidate_iotlb(regs.GRAN_PAGE, did=5, addr=addr, am=am) == 3
    assert keys(t) == ALL_TLB - gone
    assert (6, 0x10000) in keys(t)  # other DIDs untouched


def test_psi_without_cap_psi_is_domain_selective():
    rig = Rig(CAP_BASE & ~CAP_PSI)
    t = filled_iotlb(rig)
    assert rig.unit.invalidate_iotlb(regs.GRAN_PAGE, did=5, addr=0x10000, am=0) == 2
    assert keys(t) == {(6, 0x10000)}


def test_psi_with_am_above_mamv_is_domain_selective():
    rig = Rig()  # MAMV 9
    t = filled_iotlb(rig)
    assert rig.unit.invalidate_iotlb(regs.GRAN_PAGE, did=5, addr=0x0, am=10) == 2
    assert keys(t) == {(6, 0x10000)}


def test_iotlb_registers_psi():
    rig = Rig()
    t = filled_iotlb(rig)
    iva, reg = 0x500, 0x508  # ECAP.IRO 0x50 * 16
    assert rig.unit.iotlb_reg == iva
    # IVA: ADDR 0x10000 | IH (bit 6) | AM 2
    rig.unit.mmio_write(iva, 0x10000 | 0x40 | 2)
    assert rig.unit.mmio_read(iva) == 0x10042
    # IVT (63) | IIRG 3 (61:60) | DID 5 (47:32) = 0x8000.. | 0x3000.. | 0x5_0000_0000
    back = rig.unit.mmio_write(reg, 0xB000_0005_0000_0000)
    # IVT clear, IAIG (58:57) = 3 -> 0x0600_0000_0000_0000
    assert back == 0x3600_0005_0000_0000
    assert keys(t) == ALL_TLB - {(5, 0x10000), (5, 0x11000), (5, 0x12000), (5, 0x13000)}


def test_iotlb_registers_psi_without_cap_psi_reports_iaig_domain():
    rig = Rig(CAP_BASE & ~CAP_PSI)
    t = filled_iotlb(rig)
    rig.unit.mmio_write(0x500, 0x10000)
    back = rig.unit.mmio_write(0x508, 0xB000_0005_0000_0000)
    assert back == 0x3400_0005_0000_0000  # IAIG 2 = 0x0400_0000_0000_0000
    assert keys(t) == {(6, 0x10000)}


def test_iotlb_registers_global_and_dsi():
    rig = Rig()
    t = filled_iotlb(rig)
    # IVT | IIRG 2 (0x2000..) | DID 6 -> read back 0x2000.. | IAIG 2 (0x0400..) | DID
    assert rig.unit.mmio_write(0x508, 0xA000_0006_0000_0000) == 0x2400_0006_0000_0000
    assert (6, 0x10000) not in keys(t) and len(t) == 8
    # IVT | IIRG 1 (0x1000..) -> 0x1000.. | IAIG 1 (0x0200..)
    assert rig.unit.mmio_write(0x508, 0x9000_0000_0000_0000) == 0x1200_0000_0000_0000
    assert len(t) == 0


def test_iotlb_register_without_ivt_does_nothing():
    rig = Rig()
    t = filled_iotlb(rig)
    rig.unit.mmio_write(0x508, 0x1000_0000_0000_0000)
    assert len(t) == 9


def test_invalidation_really_drops_translations_the_unit_made():
    rig = Rig()
    pgd = rig.domain()
    pgd7 = rig.domain(0x0400, did=7)
    rig.map(pgd, 0x1000, 0x9000)
    rig.map(pgd7, 0x1000, 0xA000)
    rig.dma(0x1000)
    rig.unit.translate(0x0400, 0x1000, False)
    assert keys(rig.unit.iotlb) == {(DID, 0x1000), (7, 0x1000)}
    rig.unit.invalidate_iotlb(regs.GRAN_PAGE, did=7, addr=0x1000, am=0)
    assert keys(rig.unit.iotlb) == {(DID, 0x1000)}


# ------------------------------------------------------------------ SRTP
def test_srtp_with_esrtps_invalidates_the_caches():
    rig = Rig(CAP_BASE | CAP_ESRTPS)
    filled_iotlb(rig)
    filled_context_cache(rig)
    rig.unit.set_root_table(rig.root)
    assert len(rig.unit.iotlb) == 0 and len(rig.unit.context_cache) == 0


def test_srtp_without_esrtps_leaves_the_caches():
    rig = Rig(CAP_BASE)
    filled_iotlb(rig)
    filled_context_cache(rig)
    rig.unit.set_root_table(rig.root)
    assert len(rig.unit.iotlb) == 9 and len(rig.unit.context_cache) == 10


def test_iotlb_class_directly():
    t = Iotlb(None)  # unbounded
    for n in range(2000):
        t.insert(tlb_entry(1, n << 12))
    assert len(t) == 2000 and t.full_flushes == 0
    assert t.invalidate_page(1, 0x0, 4) == 16
    assert t.invalidate_domain(2) == 0
