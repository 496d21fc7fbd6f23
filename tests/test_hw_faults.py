"""Fault reasons 0x1-0xD, the lines Linux prints for them, FPD and the FRCD registers.

Reason codes and strings: drivers/iommu/intel/dmar.c dma_remap_fault_reasons[];
log line: dmar_fault_do_one(); dump: dmar_fault_dump_ptes()/pgtable_walk();
qualified faults: VT-d spec §7.1.3 and QEMU vtd_qualified_faults[] (REFERENCE.md §4).
"""

from __future__ import annotations

import pytest

from hwkit import (
    CAP_BASE, CAP_SLLPS_2M, ECAP_BASE, ECAP_DT, ECAP_PT, ECAP_SC, SID, Rig,
)
from vtdtui.hw import regs

# CAP_BASE with MGAW=38 (39-bit): 0x2F << 16 replaced by 0x26 << 16
CAP_MGAW39 = 0x0009_0380_2226_0602
SMALL = 0x1000000  # 16 MiB of memory: the rig's allocator range ends here
FAR = 0x4000_0000  # 1 GiB: below 2^39 (HAW) but beyond SMALL


def only_fault(rig, t, reason):
    assert not t.ok and t.hpa is None
    assert t.fault is not None and t.fault.reason == reason
    assert rig.unit.faults[-1] is t.fault
    return t.fault


def dump_of(rig, f):
    """dmar_fault_dump_ptes() for a fault: the hardware records no dump; the driver
    prints it (with CONFIG_DMAR_DEBUG) from the kernel's view of the tables."""
    assert f.dump == []
    return rig.unit.fault_dump(f.source_id, f.iova)


# ------------------------------------------------------------------ exact log lines
def test_reason_1_root_not_present_line_and_dump():
    rig = Rig()
    f = only_fault(rig, rig.dma(0x1FFF), 0x1)
    assert f.message == (
        "DMAR: [DMA Read NO_PASID] Request device [03:00.0] fault addr 0x1000 "
        "[fault reason 0x01] Present bit in root entry is clear"
    )
    assert dump_of(rig, f) == [
        "DMAR: Dump dmar1 table entries for IOVA 0x1000",
        "DMAR: root entry: 0x0000000000000000",
        "DMAR: context table is not present",
    ]


def test_reason_2_context_not_present_line_and_dump():
    rig = Rig()
    assert rig.root == 0x100000  # first page of the rig's allocator
    rig.set_root_raw(3, 0x2000001)  # bus 3 -> context table 0x2000000, P
    f = only_fault(rig, rig.dma(0x1234), 0x2)
    assert f.message == (
        "DMAR: [DMA Read NO_PASID] Request device [03:00.0] fault addr 0x1000 "
        "[fault reason 0x02] Present bit in context entry is clear"
    )
    assert f.iova == 0x1000  # recorded page aligned
    assert dump_of(rig, f) == [
        "DMAR: Dump dmar1 table entries for IOVA 0x1000",
        "DMAR: root entry: 0x0000000002000001",
        "DMAR: context entry: hi 0x0000000000000000, low 0x0000000000000000",
        "DMAR: legacy mode page table is not present",
    ]
    w = rig.dma(0x1234, write=True).fault
    assert w.message.startswith("DMAR: [DMA Write NO_PASID] Request device [03:00.0] fault addr 0x1000 ")


def _hand_built_four_level(rig):
    """bus 3 -> ctx 0x2000000; 03:00.0 -> DID 5 AW 2 SLPTPTR 0x2001000; L4[0] -> L3[0] -> L2."""
    rig.set_root_raw(3, 0x2000001)
    rig.wq(0x2000000, 0x2001001)  # context lo: SLPTPTR 0x2001000 | P
    rig.wq(0x2000008, 0x502)  # context hi: DID 5 << 8 | AW 2
    rig.wq(0x2001000, 0x2002003)  # L4[0] -> 0x2002000 RW
    rig.wq(0x2002000, 0x2003003)  # L3[0] -> 0x2003000 RW


def test_reason_6_line_and_dump_with_missing_level_1_table():
    rig = Rig()
    _hand_built_four_level(rig)
    # iova 0x200abc: L4[0], L3[0], L2[1] (0x200000 >> 21 = 1) which is empty
    f = only_fault(rig, rig.dma(0x200ABC), 0x6)
    assert f.message == (
        "DMAR: [DMA Read NO_PASID] Request device [03:00.0] fault addr 0x200000 "
        "[fault reason 0x06] PTE Read access is not set"
    )
    assert dump_of(rig, f) == [
        "DMAR: Dump dmar1 table entries for IOVA 0x200000",
        "DMAR: root entry: 0x0000000002000001",
        "DMAR: context entry: hi 0x0000000000000502, low 0x0000000002001001",
        "DMAR: pte level: 4, pte value: 0x0000000002002003",
        "DMAR: pte level: 3, pte value: 0x0000000002003003",
        "DMAR: pte level: 2, pte value: 0x0000000000000000",
        "DMAR: page table not present at level 1",
    ]
    # FRCD 0: lo = fault info (page), hi = F(63) | T(62)=1 read | FR 6 << 32 | SID 0x0300
    assert rig.unit.frcd[0] == (0x200000, 0xC000_0006_0000_0300)


def test_reason_5_line_and_dump_to_the_leaf():
    rig = Rig()
    _hand_built_four_level(rig)
    rig.wq(0x2003008, 0x2004003)  # L2[1] -> 0x2004000
    rig.wq(0x2004000, 0x4000_0001)  # L1[0]: 0x40000000 read-only
    assert rig.dma(0x200ABC).hpa == 0x4000_0ABC
    f = only_fault(rig, rig.dma(0x200ABC, write=True), 0x5)
    assert f.message == (
        "DMAR: [DMA Write NO_PASID] Request device [03:00.0] fault addr 0x200000 "
        "[fault reason 0x05] PTE Write access is not set"
    )
    assert dump_of(rig, f)[-2:] == [
        "DMAR: pte level: 2, pte value: 0x0000000002004003",
        "DMAR: pte level: 1, pte value: 0x0000000040000001",
    ]
    # FRCD 0: F | T=0 (write) | FR 5 << 32 | SID 0x0300
    assert rig.unit.frcd[0] == (0x200000, 0x8000_0005_0000_0300)


def test_dump_stops_at_a_superpage():
    rig = Rig(CAP_BASE | CAP_SLLPS_2M)
    _hand_built_four_level(rig)
    rig.wq(0x2003008, 0x8000_0081)  # L2[1]: 2 MiB at 0x80000000, PS | R
    f = only_fault(rig, rig.dma(0x2FF000, write=True), 0x5)
    assert dump_of(rig, f)[-1] == "DMAR: pte level: 2, pte value: 0x0000000080000081"
    assert f.iova == 0x2FF000


# ------------------------------------------------------------------ every reason
def test_reason_3_invalid_context_cases():
    for ecap, kw in (
        (ECAP_BASE, dict(tt=3)),  # reserved TT
        (ECAP_BASE, dict(aw=0)),  # AW 0 not in SAGAW 0b00110
        (ECAP_BASE, dict(aw=4)),  # AW 4 not in SAGAW
        (ECAP_BASE & ~ECAP_PT, dict(tt=2)),  # pass-through without ECAP.PT
        (ECAP_BASE, dict(tt=1)),  # device-TLB type without ECAP.DT
    ):
        rig = Rig(CAP_BASE, ecap)
        rig.set_context(**kw)
        f = only_fault(rig, rig.dma(0x1000), 0x3)
        assert f.message.endswith("[fault reason 0x03] Invalid context entry")


def test_tt1_with_ecap_dt_is_valid():
    rig = Rig(CAP_BASE, ECAP_BASE | ECAP_DT)
    pgd = rig.set_context(tt=1)
    rig.map(pgd, 0x1000, 0x9000)
    assert rig.dma(0x1000).hpa == 0x9000


def test_reason_4_beyond_mgaw():
    rig = Rig(CAP_MGAW39)  # MGAW+1 = 39 < AGAW 48 of AW 2
    rig.domain(aw=2)
    f = only_fault(rig, rig.dma(1 << 39), 0x4)
    assert f.message.endswith("[fault reason 0x04] Access beyond MGAW")
    assert rig.dma((1 << 39) - 0x1000).fault.reason == 0x6  # the last page is inside


def test_reason_4_beyond_agaw():
    rig = Rig(CAP_BASE)  # MGAW 47, but AW 1 gives a 39-bit AGAW
    rig.domain(aw=1)
    only_fault(rig, rig.dma(0x80_0000_0000), 0x4)  # 2^39
    assert rig.dma(0x7F_FFFF_F000).fault.reason == 0x6


def test_reason_6_for_write_only_page():
    rig = Rig()
    pgd = rig.domain()
    rig.map(pgd, 0x3000, 0x9000, r=False, w=True)
    assert rig.dma(0x3000, write=True).hpa == 0x9000
    f = only_fault(rig, rig.dma(0x3000), 0x6)
    assert f.message.endswith("[fault reason 0x06] PTE Read access is not set")


def test_reason_5_and_6_for_not_present_follow_the_access():
    rig = Rig()
    rig.domain()
    assert rig.dma(0x5000).fault.reason == 0x6
    assert rig.dma(0x5000, write=True).fault.reason == 0x5


def test_reason_7_page_table_pointer_beyond_memory():
    rig = Rig(mem_size=SMALL)
    pgd = rig.domain()
    rig.wq(pgd, FAR | 3)  # L4[0] points at 1 GiB: no memory there
    f = only_fault(rig, rig.dma(0x1000), 0x7)
    assert f.message.endswith("[fault reason 0x07] Next page table ptr is invalid")


def test_reason_8_root_table_beyond_memory():
    rig = Rig(mem_size=SMALL, enable=False)
    rig.unit.set_root_table(FAR)
    rig.unit.enable_translation()
    f = only_fault(rig, rig.dma(0x1000), 0x8)
    assert f.message.endswith("[fault reason 0x08] Root table address invalid")


def test_reason_9_context_table_beyond_memory():
    rig = Rig(mem_size=SMALL)
    rig.set_root_raw(3, FAR | 1)
    f = only_fault(rig, rig.dma(0x1000), 0x9)
    assert f.message.endswith("[fault reason 0x09] Context table ptr is invalid")


@pytest.mark.parametrize(
    "lo_extra,hi,ctp",
    [
        (0x2, 0, None),  # lo bit 1
        (0x800, 0, None),  # lo bit 11
        (0, 1, None),  # hi must be zero
        (0, 0, 1 << 39),  # context-table pointer above HAW 39
    ],
)
def test_reason_a_root_entry_reserved(lo_extra, hi, ctp):
    rig = Rig()
    ct = rig.alloc.alloc() if ctp is None else ctp
    rig.set_root_raw(3, ct | 1 | lo_extra, hi)
    f = only_fault(rig, rig.dma(0x1000), 0xA)
    assert f.message.endswith("[fault reason 0x0a] non-zero reserved fields in RTP")


@pytest.mark.parametrize(
    "lo,hi",
    [
        (0x1001 | 1 << 4, 0x502),  # lo bit 4 (bits 11:4 reserved)
        (0x1001, 0x502 | 1 << 30),  # hi bit 30
        (0x1001, 0x502 | 1 << 7),  # hi bit 7
        ((1 << 39) | 1, 0x502),  # SLPTPTR above HAW 39
    ],
)
def test_reason_b_context_entry_reserved(lo, hi):
    rig = Rig()
    rig.set_context_raw(SID, lo, hi)
    f = only_fault(rig, rig.dma(0x1000), 0xB)
    assert f.message.endswith("[fault reason 0x0b] non-zero reserved fields in CTP")


def test_reason_c_leaf_address_above_haw():
    rig = Rig(haw=39)
    pgd = rig.domain()
    rig.map(pgd, 0x1000, 1 << 39)
    f = only_fault(rig, rig.dma(0x1000), 0xC)
    assert f.message.endswith("[fault reason 0x0c] non-zero reserved fields in PTE")
    # the same address is fine with HAW 46
    rig = Rig(haw=46)
    pgd = rig.domain()
    rig.map(pgd, 0x1000, 1 << 39)
    assert rig.dma(0x1000).hpa == 1 << 39


def test_reason_c_next_table_pointer_above_haw():
    rig = Rig(haw=39)
    pgd = rig.domain()
    rig.wq(pgd, (1 << 40) | 3)
    only_fault(rig, rig.dma(0x1000), 0xC)


def test_reason_c_snp_needs_ecap_sc():
    rig = Rig(CAP_BASE, ECAP_BASE)  # SC = 0
    pgd = rig.domain()
    rig.map(pgd, 0x1000, 0x9000, snp=True)
    only_fault(rig, rig.dma(0x1000), 0xC)
    rig = Rig(CAP_BASE, ECAP_BASE | ECAP_SC)
    pgd = rig.domain()
    rig.map(pgd, 0x1000, 0x9000, snp=True)
    t = rig.dma(0x1000)
    assert t.ok and t.snp and t.hpa == 0x9000


def test_reason_c_tm_needs_ecap_dt():
    rig = Rig(CAP_BASE, ECAP_BASE)
    pgd = rig.domain()
    rig.map(pgd, 0x1000, 0x9000, tm=True)
    only_fault(rig, rig.dma(0x1000), 0xC)
    rig = Rig(CAP_BASE, ECAP_BASE | ECAP_DT)
    pgd = rig.domain()
    rig.map(pgd, 0x1000, 0x9000, tm=True)
    assert rig.dma(0x1000).ok


def test_reason_d_translation_request_through_tt0():
    rig = Rig(CAP_BASE, ECAP_BASE | ECAP_DT)
    pgd = rig.domain()  # TT 0
    rig.map(pgd, 0x1000, 0x9000)
    f = only_fault(rig, rig.dma(0x1000, translation_request=True), 0xD)
    assert f.message.endswith("[fault reason 0x0d] PCE for translation request specifies blocking")
    assert rig.dma(0x1000).ok  # an untranslated request is fine


def test_translation_request_through_tt1_fills_the_device_tlb():
    rig = Rig(CAP_BASE, ECAP_BASE | ECAP_DT)
    pgd = rig.set_context(tt=1)
    rig.map(pgd, 0x1000, 0x9000)
    t = rig.dma(0x1234, translation_request=True)
    assert t.ok and t.hpa == 0x9234
    assert rig.unit.device_tlb == {SID: {0x1: (0x9000, True, True)}}


# ------------------------------------------------------------------ FPD
def _case(reason, fpd):
    """A minimal rig + request producing `reason`, with FPD in the context entry."""
    ecap = ECAP_BASE | (ECAP_DT if reason == 0xD else 0)
    rig = Rig(CAP_BASE, ecap, mem_size=SMALL)
    kw = {}
    if reason == 0x2:
        rig.set_context(fpd=fpd, present=False)
    elif reason == 0x3:
        rig.set_context(fpd=fpd, tt=3)
    elif reason == 0x4:
        rig.set_context(fpd=fpd, aw=1)
        return rig, (1 << 39, False, kw)
    else:
        pgd = rig.set_context(fpd=fpd)
        if reason == 0x5:
            rig.map(pgd, 0x1000, 0x9000, w=False)
            return rig, (0x1000, True, kw)
        if reason == 0x7:
            rig.wq(pgd, FAR | 3)
        if reason == 0xC:
            rig.map(pgd, 0x1000, 0x9000, snp=True)  # ECAP.SC = 0
        if reason == 0xD:
            rig.map(pgd, 0x1000, 0x9000)
            kw = dict(translation_request=True)
    return rig, (0x1000, False, kw)


QUALIFIED = [0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0xC, 0xD]


@pytest.mark.parametrize("reason", QUALIFIED)
def test_fpd_suppresses_qualified_faults(reason):
    rig, (iova, write, kw) = _case(reason, fpd=True)
    t = rig.dma(iova, write, **kw)
    f = only_fault(rig, t, reason)
    assert f.recorded is False and f.suppressed_by_fpd
    assert rig.unit.faults == [f]  # kept in the history
    assert all(hi >> 63 == 0 for _, hi in rig.unit.frcd)
    assert rig.unit.mmio_read(regs.FSTS_REG) & 0x2 == 0  # no PPF


@pytest.mark.parametrize("reason", QUALIFIED)
def test_without_fpd_the_same_faults_are_recorded(reason):
    rig, (iova, write, kw) = _case(reason, fpd=False)
    f = only_fault(rig, rig.dma(iova, write, **kw), reason)
    assert f.recorded is True and not f.suppressed_by_fpd
    assert rig.unit.frcd[0][1] >> 63 == 1
    assert (rig.unit.frcd[0][1] >> 32) & 0xFF == reason
    assert rig.unit.mmio_read(regs.FSTS_REG) & 0x2 == 0x2


def test_fpd_does_not_suppress_reserved_context_fault():
    rig = Rig()
    # FPD | P with hi bit 30: 0xB is not a qualified fault
    rig.set_context_raw(SID, 0x1003, 0x502 | 1 << 30)
    f = only_fault(rig, rig.dma(0x1000), 0xB)
    assert f.recorded is True


def test_fpd_is_per_context_entry():
    rig = Rig()
    rig.set_context(SID, fpd=True)
    rig.set_context(SID | 1, fpd=False)
    assert rig.dma(0x1000).fault.recorded is False
    assert rig.unit.translate(SID | 1, 0x1000, False).fault.recorded is True
    # 03:00.2 has a not-present, FPD=0 context entry: 0x2 is recorded
    f = rig.unit.translate(SID | 2, 0x1000, False).fault
    assert f.reason == 0x2 and f.recorded is True


# ------------------------------------------------------------------ FRCD registers
def test_fault_recording_registers_overflow_and_clear():
    rig = Rig()  # NFR 3: four FRCD registers at FRO 0x22 * 16 = 0x220
    rig.domain()
    u = rig.unit
    frcd_lo = lambda i: u.mmio_read(0x220 + 16 * i)  # noqa: E731
    frcd_hi = lambda i: u.mmio_read(0x220 + 16 * i + 8)  # noqa: E731
    for n in range(4):
        assert rig.dma(0x1000 * (n + 1)).fault.recorded
    for i in range(4):
        assert frcd_lo(i) == 0x1000 * (i + 1)
        assert frcd_hi(i) == 0xC000_0006_0000_0300  # F | T(read) | FR 6 | 03:00.0
    # PPF (bit 1) set, FRI (15:8) wrapped back to 0
    assert u.mmio_read(regs.FSTS_REG) == 0x2

    # a fifth fault finds FRCD 0 still holding F: overflow, PFO (bit 0), not recorded
    f5 = rig.dma(0x5000).fault
    assert f5.recorded is False and not f5.suppressed_by_fpd
    assert u.mmio_read(regs.FSTS_REG) == 0x3
    assert frcd_lo(0) == 0x1000
    assert len(u.faults) == 5  # but kept in the history

    # software clears F of FRCD 0 (write 1 to bit 127 = hi bit 63)
    assert u.mmio_write(0x220 + 8, 1 << 63) == 0x4000_0006_0000_0300
    assert frcd_hi(0) >> 63 == 0
    # PFO still set: nothing new is recorded
    assert rig.dma(0x6000).fault.recorded is False
    # clear PFO (write 1 to FSTS bit 0)
    assert u.mmio_write(regs.FSTS_REG, 0x1) == 0x2
    f7 = rig.dma(0x7000, write=True).fault
    assert f7.recorded is True
    assert (frcd_lo(0), frcd_hi(0)) == (0x7000, 0x8000_0005_0000_0300)  # write: T = 0
    # PPF was still set (FRCDs 1-3 pending): FRI keeps pointing at the first pending
    # fault; it is latched only when PPF goes 0 → 1 (QEMU vtd_report_frcd_fault).
    assert u.mmio_read(regs.FSTS_REG) == 0x002
    for i in range(4):
        u.mmio_write(0x220 + 16 * i + 8, 1 << 63)
    assert u.mmio_read(regs.FSTS_REG) == 0x000  # PPF clears with the last F
    # The next fault goes to FRCD 1 (the write pointer moved on past FRCD 0), and
    # PPF rising latches FRI = 1: dmar_fault() starts reading there.
    f8 = rig.dma(0x8000).fault
    assert f8.recorded and f8.frcd == 1 and frcd_lo(1) == 0x8000
    assert u.mmio_read(regs.FSTS_REG) == 0x102


def test_single_frcd_unit_qemu_style():
    # NFR = 0: one fault-recording register (QEMU); CAP_BASE minus NFR 3 << 40
    rig = Rig(CAP_BASE & ~(0xFF << 40))
    rig.domain()
    assert rig.unit.num_fault_regs == 1
    assert rig.dma(0x1000).fault.recorded
    assert rig.dma(0x2000).fault.recorded is False
    assert rig.unit.mmio_read(regs.FSTS_REG) & 0x1
    with pytest.raises(ValueError):
        rig.unit.mmio_read(0x220 + 16)  # no second register


def test_fault_json():
    rig = Rig()
    rig.domain()
    f = rig.dma(0x1234, write=True).fault
    assert f.to_json() == {
        "bdf": "03:00.0", "iova": "0x1000", "reason": 5, "access": "write",
        "message": "DMAR: [DMA Write NO_PASID] Request device [03:00.0] fault addr 0x1000 "
        "[fault reason 0x05] PTE Write access is not set",
    }
    assert f.reason_name == "WRITE" and f.unit == "dmar1" and f.source_id == SID
