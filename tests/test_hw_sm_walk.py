"""Scalable-mode translation: first-stage (IA-32e) walks at every level and page
size, the first-stage checks (QEMU vtd_iova_to_flpte, REFERENCE-2 §11.5), second
stage and pass-through under a PASID entry, nested, snooping (PGSNP / SNP / PWSNP).

First-stage tables at literal addresses so every entry address is hand-computed:
entry = table + 8 * index, index = the 9 IOVA bits of that level."""

from __future__ import annotations

from hwsmkit import (
    CAP_5LVL_SAGAW, CAP_FL5LP, CAP_FS1GP, CAP_SLLPS, CAP_SM, DID, ECAP_C, ECAP_NEST, ECAP_SC, ECAP_SM,
    ECAP_SMPWC, FS_LEAF_RO, FS_LEAF_RW, FS_TABLE, SID, A, D, P, PS, RW, SmRig, US,
)

T = [0x2000000 + 0x1000 * i for i in range(8)]


def fs_rig(cap=CAP_SM, ecap=ECAP_SM, **pasid):
    rig = SmRig(cap, ecap)
    rig.set_context()
    rig.set_pasid(pgtt=1, fsptptr=T[0], **pasid)
    return rig


def test_fs_4k_walk_four_levels():
    rig = fs_rig()
    # iova 0x7f12_3456_7abc: L4 idx 0xFE (bits 47:39), L3 0x48, L2 0x1A2, L1 0x167
    iova = 0x7F12_3456_7ABC
    assert [(iova >> s) & 0x1FF for s in (39, 30, 21, 12)] == [0xFE, 0x48, 0x1A2, 0x167]
    rig.wq(T[0] + 0xFE * 8, T[1] | FS_TABLE)
    rig.wq(T[1] + 0x48 * 8, T[2] | FS_TABLE)
    rig.wq(T[2] + 0x1A2 * 8, T[3] | FS_TABLE)
    rig.wq(T[3] + 0x167 * 8, 0x8_8888_8000 | FS_LEAF_RW)
    t = rig.dma(iova, True)
    assert t.ok and t.hpa == 0x8_8888_8ABC and (t.did, t.pasid, t.pgtt) == (DID, 0, 1)
    assert "FS L1[359] @0x2003b38 = 0x0000000888888067" in t.steps
    (e,) = list(rig.unit.iotlb)
    assert (e.did, e.pasid, e.pgtt, e.iova, e.shift, e.hpa, e.r, e.w) == (
        DID, 0, 1, 0x7F12_3456_7000, 12, 0x8_8888_8000, True, True)


def test_fs_2m_and_1g_leaves():
    rig = fs_rig()
    rig.wq(T[0], T[1] | FS_TABLE)
    rig.wq(T[1] + 1 * 8, 0x4000_0000 | FS_LEAF_RW | PS)  # L3[1]: 1 GiB at 1 GiB
    rig.wq(T[1] + 2 * 8, T[2] | FS_TABLE)
    rig.wq(T[2] + 3 * 8, 0x60_0000 | FS_LEAF_RO | PS)  # L2[3]: 2 MiB, read-only
    t = rig.dma(0x4123_4567)
    assert t.ok and t.hpa == 0x4123_4567
    t = rig.dma(2 << 30 | 3 << 21 | 0x1_2345)
    assert t.ok and t.hpa == 0x60_0000 | 0x1_2345
    shifts = sorted((e.iova, e.shift) for e in rig.unit.iotlb)
    assert shifts == [(0x4000_0000, 30), (2 << 30 | 3 << 21, 21)]


def test_fs_1g_without_fs1gp_is_reserved():
    rig = fs_rig(cap=CAP_SM & ~CAP_FS1GP)
    rig.wq(T[0], T[1] | FS_TABLE)
    rig.wq(T[1] + 8, 0x4000_0000 | FS_LEAF_RW | PS)
    t = rig.dma(0x4000_0000)
    assert not t.ok and t.fault.reason == 0x72
    assert "SM: Non-zero reserved field set in first-level paging entry" in t.fault.message


def test_fs_reserved_bits():
    rig = fs_rig()  # HAW 46
    rig.wq(T[0], T[1] | FS_TABLE)
    rig.wq(T[1], T[2] | FS_TABLE)
    rig.wq(T[2], 0x20_0000 | 1 << 13 | FS_LEAF_RW | PS)  # 2 MiB leaf with address bit 13 set
    rig.wq(T[2] + 8, T[3] | FS_TABLE)
    rig.wq(T[3], 1 << 46 | FS_LEAF_RW)  # address bit 46 ≥ HAW
    rig.wq(T[3] + 8, 1 << 62 | 0x9000 | FS_LEAF_RW)  # bits 62:52 are ignored
    assert rig.dma(0x0).fault.reason == 0x72
    assert rig.dma(0x20_0000).fault.reason == 0x72
    t = rig.dma(0x20_1000)
    assert t.ok and t.hpa == 0x9000
    rig2 = fs_rig()
    rig2.wq(T[0], T[1] | FS_TABLE | PS)  # PS at level 4 is reserved
    assert rig2.dma(0x0).fault.reason == 0x72


def test_fs_not_present_and_non_canonical():
    rig = fs_rig()
    t = rig.dma(0x1000)
    assert t.fault.reason == 0x71 and "SM: Present bit in first-level paging entry is clear" in t.fault.message
    t = rig.dma(0x8000_0000_0000)  # bit 47 set, 63:48 clear: not canonical for 4 levels
    assert t.fault.reason == 0x80
    # The high half is canonical: index 0x100 of the PML4 (bit 47), sign bits ignored.
    rig.wq(T[0] + 0x100 * 8, T[1] | FS_TABLE)
    rig.wq(T[1], T[2] | FS_TABLE)
    rig.wq(T[2], T[3] | FS_TABLE)
    rig.wq(T[3], 0xA000 | FS_LEAF_RW)
    t = rig.dma(0xFFFF_8000_0000_0010)
    assert t.ok and t.hpa == 0xA010


def test_fs_write_to_read_only_and_user_supervisor():
    rig = fs_rig()
    rig.wq(T[0], T[1] | P | US | A)  # table entry without R/W: the AND across levels denies writes
    rig.wq(T[1], T[2] | FS_TABLE)
    rig.wq(T[2], T[3] | FS_TABLE)
    rig.wq(T[3], 0x9000 | FS_LEAF_RW)
    rig.wq(T[3] + 8, 0xA000 | P | RW | A | D)  # leaf without U/S
    assert rig.dma(0x0).ok
    t = rig.dma(0x0, True)
    assert t.fault.reason == 0x85 and "SM: No write permission for Write/AtomicOp request" in t.fault.message
    assert rig.dma(0x1000).fault.reason == 0x81  # user request, U/S=0
    # A supervisor request needs SRE; with it, U/S=0 is fine and WPE=0 ignores R/W.
    assert rig.dma(0x1000, privileged=True).fault.reason == 0x5D
    rig.set_pasid(pgtt=1, fsptptr=T[0], sre=True)
    rig.unit.pasid_cache.invalidate_global()
    assert rig.dma(0x1000, privileged=True).ok
    assert rig.dma(0x0, True, privileged=True).ok


def test_fs_five_level_needs_fl5lp():
    iova = 0x01_0000_0000_3000  # bit 48: L5 index 1
    rig = fs_rig(cap=CAP_SM | CAP_FL5LP, flpm=1)
    rig.wq(T[0] + 8, T[1] | FS_TABLE)
    for a, b in ((T[1], T[2]), (T[2], T[3]), (T[3], T[4])):
        rig.wq(a, b | FS_TABLE)
    rig.wq(T[4] + 3 * 8, 0xB000 | FS_LEAF_RW)
    t = rig.dma(iova)
    assert t.ok and t.hpa == 0xB000 and "FS L5[1] @0x2000008" in t.steps[3]
    assert rig.dma(0x0100_0000_0000_0000).fault.reason == 0x80  # bit 56 set, 63:57 clear
    rig5 = fs_rig(flpm=1)  # no CAP.FL5LP: the PASID entry is invalid
    t = rig5.dma(iova)
    assert t.fault.reason == 0x5B and "SM: Invalid Scalable-Mode PASID Table Entry" in t.fault.message


def _one_page(rig, bits):
    rig.wq(T[0], T[1] | FS_TABLE)
    rig.wq(T[1], T[2] | FS_TABLE)
    rig.wq(T[2], T[3] | FS_TABLE)
    rig.wq(T[3], 0x9000 | bits)


def test_fs_accessed_dirty_set_by_a_snooped_walk():
    rig = fs_rig()  # PWSNP=1 on a unit with SMPWC
    _one_page(rig, P | RW | US)  # no A, no D
    rig.wq(T[2], T[3] | P | RW | US)  # table entry without A
    assert rig.dma(0x0, True).ok
    assert rig.rq(T[3]) == 0x9000 | P | RW | US | A | D
    assert rig.rq(T[2]) == T[3] | P | RW | US | A
    assert rig.mem.read_q(T[3]) == 0x9000 | P | RW | US | A | D  # the write went to memory too


def test_fs_accessed_update_in_no_snoop_faults():
    rig = fs_rig(pwsnp=False)
    _one_page(rig, P | RW | US | A)  # A set, D clear
    assert rig.dma(0x0).ok  # a read needs no update
    rig.unit.iotlb.invalidate_global()
    t = rig.dma(0x0, True)
    assert t.fault.reason == 0x90
    assert "SM: A/D bit update needed in first-level entry when set up in no snoop" in t.fault.message
    assert rig.rq(T[3]) == 0x9000 | P | RW | US | A  # nothing written


def test_fs_page_walk_snoop_follows_pwsnp_and_smpwc():
    # Root/context/PASID follow ECAP.C (set here); paging entries PWSNP with SMPWC.
    for pwsnp, ecap, stale in ((True, ECAP_SM, False), (False, ECAP_SM, True), (True, ECAP_SM & ~ECAP_SMPWC, True)):
        rig = fs_rig(ecap=ecap, pwsnp=pwsnp)
        rig.wq(T[0], T[1] | FS_TABLE)
        rig.wq(T[1], T[2] | FS_TABLE)
        rig.wq(T[2], T[3] | FS_TABLE)
        rig.wq(T[3], 0x9000 | FS_LEAF_RW, flush=False)  # the clflush skipped
        t = rig.dma(0x0)
        assert (not t.ok and t.fault.reason == 0x71) == stale, (pwsnp, hex(ecap))


def test_pasid_structures_snoop_follows_ecap_c():
    rig = SmRig(ecap=ECAP_SM & ~ECAP_C)
    rig.set_context()
    rig.set_pasid(pgtt=1, fsptptr=T[0], flush=False)  # PASID entry left in the CPU cache
    assert rig.dma(0x0).fault.reason == 0x59
    rig.cache.clflush(rig.pasid_entry_addr(SID, 0), 64)
    assert rig.dma(0x0).fault.reason == 0x71  # now the walk reaches the (empty) tables


def test_pgsnp_forces_snoop_for_first_stage():
    rig = fs_rig()
    _one_page(rig, FS_LEAF_RW)
    assert rig.dma(0x0).snp is False
    rig2 = fs_rig(pgsnp=True)
    _one_page(rig2, FS_LEAF_RW)
    t = rig2.dma(0x0)
    assert t.snp is True and next(iter(rig2.unit.iotlb)).snp
    rig3 = fs_rig(ecap=ECAP_SM & ~ECAP_SC, pgsnp=True)  # PGSNP reserved without SC
    assert rig3.dma(0x0).fault.reason == 0x5A


def test_second_stage_under_pasid_entry():
    rig = SmRig()
    pgd = rig.ss_domain(aw=2)
    rig.ss_map(pgd, 0x1000, 0x7000, snp=True)
    rig.ss_map(pgd, 0x40_0000, 0x80_0000, level=2, w=False)
    t = rig.dma(0x1234, True)
    assert t.ok and t.hpa == 0x7234 and t.snp and t.pgtt == 2
    t = rig.dma(0x40_0010)
    assert t.ok and t.hpa == 0x80_0010
    t = rig.dma(0x40_0010, True)  # read-only 2 MiB leaf, IOTLB hit
    assert t.iotlb_hit and t.fault.reason == 0x85
    assert rig.dma(0x2000).fault.reason == 0x86  # not present → read permission
    assert rig.dma(1 << 48).fault.reason == 0x83  # beyond AGAW 48
    e = {x.iova: x for x in rig.unit.iotlb}[0x1000]
    assert (e.pasid, e.pgtt, e.did, e.snp) == (0, 2, DID, True)


def test_second_stage_snp_reserved_without_sc_and_bad_aw():
    rig = SmRig(ecap=ECAP_SM & ~ECAP_SC)
    pgd = rig.ss_domain()
    rig.ss_map(pgd, 0x0, 0x7000, snp=True)
    assert rig.dma(0x0).fault.reason == 0x7A
    rig2 = SmRig()
    rig2.ss_domain(aw=3)  # 5-level second stage: SAGAW bit 3 not set in CAP_SM
    assert rig2.dma(0x0).fault.reason == 0x5B
    rig3 = SmRig(cap=CAP_5LVL_SAGAW | CAP_SLLPS)
    pgd = rig3.ss_domain(aw=3)
    rig3.ss_map(pgd, 1 << 50, 0x7000, levels=5)
    assert rig3.dma(1 << 50).hpa == 0x7000


def test_pass_through_and_its_capability():
    rig = SmRig()
    rig.set_context()
    rig.set_pasid(pgtt=4, did=1)
    t = rig.dma(0x1234_5678, True)
    assert t.ok and t.hpa == 0x1234_5678 and t.pgtt == 4 and len(rig.unit.iotlb) == 0
    rig2 = SmRig(ecap=ECAP_SM & ~0x40)  # no ECAP.PT
    rig2.set_context()
    rig2.set_pasid(pgtt=4, did=1)
    assert rig2.dma(0x0).fault.reason == 0x5B


def test_nested_translates_table_addresses_through_the_second_stage():
    rig = SmRig()
    rig.set_context()
    ss = rig.alloc.alloc()
    # The guest's first-stage tables live at GPAs 0x10000.. mapped to T[..] by the second stage.
    gpa = [0x10000 + 0x1000 * i for i in range(4)]
    for g, h in zip(gpa, T):
        rig.ss_map(ss, g, h)
    rig.ss_map(ss, 0x50000, 0xC000)  # the data page's GPA
    rig.set_pasid(pgtt=3, ssptptr=ss, fsptptr=gpa[0])
    rig.wq(T[0], gpa[1] | FS_TABLE)
    rig.wq(T[1], gpa[2] | FS_TABLE)
    rig.wq(T[2], gpa[3] | FS_TABLE)
    rig.wq(T[3], 0x50000 | FS_LEAF_RW)
    t = rig.dma(0x123, True)
    assert t.ok and t.hpa == 0xC123 and t.pgtt == 3
    rig.wq(rig.ss_map(ss, gpa[2], 0, r=False, w=False), 0)  # unmap the GPA of the L2 table
    rig.unit.iotlb.invalidate_global()
    assert rig.dma(0x123).fault.reason == 0x76
    rig3 = SmRig(ecap=ECAP_SM & ~ECAP_NEST)
    rig3.set_context()
    rig3.set_pasid(pgtt=3, ssptptr=ss, fsptptr=gpa[0])
    assert rig3.dma(0x0).fault.reason == 0x5B


def test_first_stage_needs_flts():
    rig = fs_rig(ecap=ECAP_SM & ~(1 << 47))
    assert rig.dma(0x0).fault.reason == 0x5B
    assert CAP_FS1GP == 1 << 56 and CAP_FL5LP == 1 << 60  # the bits FS1GP / FL5LP sit at
