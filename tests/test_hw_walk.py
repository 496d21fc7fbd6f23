"""Second-level walks through every level count and page size (VT-d spec §3.7, §9.8).

Tables are written at literal addresses (0x2000000 upwards, outside the rig's
allocator) so that every entry address below is hand-computed: entry address =
table + 8 * index, index = the 9 IOVA bits of that level.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hwkit import (
    CAP_5LEVEL, CAP_BASE, CAP_SLLPS_1G, CAP_SLLPS_2M, DID, ECAP_BASE, ECAP_PT, SID, Rig,
)

T0, T1, T2, T3, T4 = 0x2000000, 0x2001000, 0x2002000, 0x2003000, 0x2004000


def test_three_level_walk_aw1():
    rig = Rig()
    rig.set_context(aw=1, pgd=T0)  # AW=1: 39-bit AGAW, 3 levels
    # iova = 3 << 30 | 5 << 21 | 7 << 12 | 0x123 = 0xc0a07123
    rig.wq(T0 + 3 * 8, T1 | 3)  # L3[3] @0x2000018
    rig.wq(T1 + 5 * 8, T2 | 3)  # L2[5] @0x2001028
    rig.wq(T2 + 7 * 8, 0x2_3456_7003)  # L1[7] @0x2002038 -> 0x234567000 RW
    t = rig.dma(0xC0A07123)
    assert t.ok and t.hpa == 0x2_3456_7123 and t.did == DID
    (e,) = list(rig.unit.iotlb)
    assert (e.did, e.iova, e.shift, e.hpa, e.pte_addr, e.pte) == (
        DID, 0xC0A07000, 12, 0x2_3456_7000, 0x2002038, 0x2_3456_7003,
    )
    assert rig.dma(0xC0A07FFF, write=True).hpa == 0x2_3456_7FFF


def test_four_level_walk_aw2():
    rig = Rig()
    rig.set_context(aw=2, pgd=T0)
    # iova = 1 << 39 | 2 << 30 | 3 << 21 | 4 << 12 | 0x56 = 0x80_8060_4056
    rig.wq(T0 + 1 * 8, T1 | 3)  # L4[1]
    rig.wq(T1 + 2 * 8, T2 | 3)  # L3[2]
    rig.wq(T2 + 3 * 8, T3 | 3)  # L2[3]
    rig.wq(T3 + 4 * 8, 0x3000_0003)  # L1[4]
    t = rig.dma(0x80_8060_4056)
    assert t.ok and t.hpa == 0x3000_0056
    # a neighbour page at L1[5] is not mapped
    assert rig.dma(0x80_8060_5056).fault.reason == 0x6


def test_five_level_walk_aw3():
    rig = Rig(CAP_5LEVEL)  # SAGAW bit 3, MGAW 56
    rig.set_context(aw=3, pgd=T0)
    # iova = 1 << 48 | 2 << 39 | 0x123 = 0x1_0100_0000_0123
    rig.wq(T0 + 1 * 8, T1 | 3)  # L5[1]
    rig.wq(T1 + 2 * 8, T2 | 3)  # L4[2]
    rig.wq(T2, T3 | 3)  # L3[0]
    rig.wq(T3, T4 | 3)  # L2[0]
    rig.wq(T4, 0x5000_0003)  # L1[0]
    t = rig.dma(0x1_0100_0000_0123)
    assert t.ok and t.hpa == 0x5000_0123


def test_five_level_needs_sagaw_bit3():
    rig = Rig(CAP_BASE)  # SAGAW = 0b00110: no 57-bit
    rig.set_context(aw=3, pgd=T0)
    assert rig.dma(0x1000).fault.reason == 0x3


def test_two_mib_leaf_includes_offset():
    rig = Rig(CAP_BASE | CAP_SLLPS_2M)
    rig.set_context(aw=2, pgd=T0)
    # iova 0x4020_0000: L4[0], L3[1], L2[1]
    rig.wq(T0, T1 | 3)
    rig.wq(T1 + 8, T2 | 3)
    rig.wq(T2 + 8, 0x8000_0083)  # 2 MiB page at 0x80000000, PS|W|R
    t = rig.dma(0x4021_2345)
    assert t.ok and t.hpa == 0x8001_2345  # offset 0x12345 within the 2 MiB page
    (e,) = list(rig.unit.iotlb)
    assert (e.iova, e.shift, e.hpa) == (0x4020_0000, 21, 0x8000_0000)
    t2 = rig.dma(0x403F_FFFF, write=True)  # last byte, served by the IOTLB
    assert t2.ok and t2.iotlb_hit and t2.hpa == 0x801F_FFFF
    assert rig.dma(0x4040_0000).fault.reason == 0x6  # next 2 MiB: L2[2] empty


def test_one_gib_leaf_includes_offset():
    rig = Rig(CAP_BASE | CAP_SLLPS_2M | CAP_SLLPS_1G)
    rig.set_context(aw=2, pgd=T0)
    # iova 0x80_4000_0000: L4[1], L3[1]
    rig.wq(T0 + 8, T1 | 3)
    rig.wq(T1 + 8, 0x1_C000_0083)  # 1 GiB page at 0x1c0000000
    t = rig.dma(0x80_4345_6789)
    assert t.ok and t.hpa == 0x1_C345_6789
    (e,) = list(rig.unit.iotlb)
    assert (e.iova, e.shift, e.hpa) == (0x80_4000_0000, 30, 0x1_C000_0000)


def test_large_pages_without_sllps_fault_0xc():
    # PS at level 2 with SLLPS = 0
    rig = Rig(CAP_BASE)
    rig.set_context(aw=2, pgd=T0)
    rig.wq(T0, T1 | 3)
    rig.wq(T1 + 8, T2 | 3)
    rig.wq(T2 + 8, 0x8000_0083)
    assert rig.dma(0x4020_0000).fault.reason == 0xC
    # PS at level 3 with only the 2 MiB bit of SLLPS
    rig = Rig(CAP_BASE | CAP_SLLPS_2M)
    rig.set_context(aw=2, pgd=T0)
    rig.wq(T0 + 8, T1 | 3)
    rig.wq(T1 + 8, 0x1_C000_0083)
    assert rig.dma(0x80_4000_0000).fault.reason == 0xC


def test_ps_at_level_4_faults_0xc_even_with_all_sllps():
    rig = Rig(CAP_BASE | CAP_SLLPS_2M | CAP_SLLPS_1G)
    rig.set_context(aw=2, pgd=T0)
    rig.wq(T0, 0x80_0000_0083)  # L4[0] with PS
    assert rig.dma(0x1000).fault.reason == 0xC
    # even if the reserved upper SLLPS bits (36, 37) were set: no 512 GiB pages
    rig = Rig(CAP_BASE | 0xF << 34)
    rig.set_context(aw=2, pgd=T0)
    rig.wq(T0, 0x83)  # a would-be 512 GiB page at 0
    assert rig.dma(0x1000).fault.reason == 0xC


def test_large_page_with_address_bits_below_its_size_faults_0xc():
    rig = Rig(CAP_BASE | CAP_SLLPS_2M)
    rig.set_context(aw=2, pgd=T0)
    rig.wq(T0, T1 | 3)
    rig.wq(T1 + 8, T2 | 3)
    rig.wq(T2 + 8, 0x8000_1083)  # bit 12 set in a 2 MiB leaf: bits 20:12 reserved
    assert rig.dma(0x4020_0000).fault.reason == 0xC


def test_pass_through_output_equals_input():
    rig = Rig(CAP_BASE, ECAP_BASE)  # ECAP.PT set
    rig.set_context(tt=2, aw=2, pgd=T0)  # T0 stays empty: not walked
    t = rig.dma(0x1234_5678, write=True)
    assert t.ok and t.hpa == 0x1234_5678
    assert len(rig.unit.iotlb) == 0


def test_pass_through_without_ecap_pt_is_invalid_context():
    rig = Rig(CAP_BASE, ECAP_BASE & ~ECAP_PT)
    rig.set_context(tt=2, aw=2)
    assert rig.dma(0x1000).fault.reason == 0x3


def test_pass_through_with_unsupported_aw_is_invalid_context():
    # QEMU vtd_dev_to_context_entry checks the level for every legacy context entry
    # (pass-through included); the spec asks for the largest supported AGAW there.
    rig = Rig(CAP_BASE, ECAP_BASE)
    rig.set_context(tt=2, aw=0)  # AW=0 (30-bit): SAGAW bit 0 clear
    assert rig.dma(0x1000).fault.reason == 0x3


def test_permissions_are_anded_across_levels():
    rig = Rig()
    rig.set_context(aw=2, pgd=T0)
    rig.wq(T0, T1 | 1)  # L4[0] read-only
    rig.wq(T1, T2 | 3)
    rig.wq(T2, T3 | 3)
    rig.wq(T3 + 8, 0x6000_0003)  # leaf RW at iova 0x1000
    assert rig.dma(0x1000).hpa == 0x6000_0000
    t = rig.dma(0x1000, write=True)
    assert not t.ok and t.fault.reason == 0x5


def test_iotlb_entry_carries_the_anded_permissions():
    # read through a read-only L4: the cached translation is read-only, so a later
    # write that hits the IOTLB faults 0x5
    rig = Rig()
    rig.set_context(aw=2, pgd=T0)
    rig.wq(T0, T1 | 1)
    rig.wq(T1, T2 | 3)
    rig.wq(T2, T3 | 3)
    rig.wq(T3 + 8, 0x6000_0003)
    assert rig.dma(0x1000).ok
    (e,) = list(rig.unit.iotlb)
    assert (e.r, e.w) == (True, False)
    t = rig.dma(0x1000, write=True)
    assert t.iotlb_hit and t.fault.reason == 0x5
    # write through a write-only L4: cached write-only, a later read faults 0x6
    rig = Rig()
    rig.set_context(aw=2, pgd=T0)
    rig.wq(T0, T1 | 2)
    rig.wq(T1, T2 | 3)
    rig.wq(T2, T3 | 3)
    rig.wq(T3 + 8, 0x6000_0003)
    assert rig.dma(0x1000, write=True).ok
    (e,) = list(rig.unit.iotlb)
    assert (e.r, e.w) == (False, True)
    t = rig.dma(0x1000)
    assert t.iotlb_hit and t.fault.reason == 0x6


def test_translation_disabled_passes_addresses_through():
    rig = Rig(enable=False)
    t = rig.dma(0xDEAD_B000)
    assert t.ok and t.hpa == 0xDEAD_B000 and t.fault is None


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, (1 << 36) - 1).map(lambda p: p << 12),  # 48-bit page-aligned IOVA
    st.integers(0, (1 << 27) - 1).map(lambda p: p << 12),  # 39-bit HPA (HAW 39)
    st.integers(0, 0xFFF),
)
def test_random_four_level_mappings(iova, hpa, off):
    rig = Rig()
    pgd = rig.domain()
    rig.map(pgd, iova, hpa)
    t = rig.dma(iova | off)
    assert t.ok and t.hpa == hpa | off
    assert rig.dma(iova ^ 0x1000).fault.reason == 0x6  # the buddy page is unmapped


def test_sid_used_for_context_lookup():
    rig = Rig()
    pgd = rig.domain()
    rig.map(pgd, 0x1000, 0x7000)
    assert rig.dma(0x1000).ok
    # 03:00.1 has no context entry in the same context table
    assert rig.unit.translate(SID | 1, 0x1000, False).fault.reason == 0x2


def test_translation_steps_are_worded_when_read():
    """The steps of a translation are kept as arguments and worded on reading: the
    words are those of the walk (the views and tests read them; a DMA in a loop
    does not pay for them)."""
    rig = Rig()
    pgd = rig.domain()
    rig.map(pgd, 0x4000, 0x9000)
    first = rig.dma(0x4000)
    again = rig.dma(0x4000)
    assert first.ok and again.ok and again.iotlb_hit
    assert any(s.startswith("L1[4] @") for s in first.steps)
    assert any(s == "IOTLB hit: 0x4000/0x1000 → 0x9000" for s in again.steps)
    assert all(isinstance(s, str) for s in first.steps + again.steps)
