"""Nested translation in the Linux intel-iommu driver model (sw/linux.py, sw/pasid.py,
sw/cache_tag.py): NEST_PARENT / DIRTY_TRACKING second stages, nested domains over them,
their PGTT-3 PASID entries, the parent's NESTING cache tags and the user invalidations
of IOMMU_HWPT_INVALIDATE (REFERENCE-2 §14.4, §14.5, §14.8, §16; drivers/iommu/intel/
nested.c, pasid.c pasid_pte_config_nestd, cache.c).

The unit is the Sapphire Rapids one of tests/test_sw_sm_driver.py: CAP
0x19ed008c40780c66, ECAP 0x3ee9e86f050df — SMTS FLTS SLTS NEST SRS EAFS SLADS SMPWC C SC
DT, CM=0, FL5LP, SAGAW 48/57 bits, MGAW 56, DRD/DWD.  Variants flip single bits at the
VT-d spec positions.  Expected PASID-entry and descriptor words are written out here
from the spec layouts (REFERENCE-2 §11–12), not from vtdtui's encoders.
"""

from __future__ import annotations

import pytest

from vtdtui.hw import CpuCache, DmarUnit, PageAllocator, PhysMem
from vtdtui.hw.sm_entries import PasidEntry
from vtdtui.sw.iommufd_uapi import (
    IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17, IOMMU_HWPT_DATA_ARM_SMMUV3, IOMMU_HWPT_DATA_VTD_S1,
    IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, IOMMU_VTD_INV_FLAGS_LEAF, IOMMU_VTD_S1_EAFE, IOMMU_VTD_S1_SRE,
    IOMMU_VTD_S1_WPE, U64_MAX, VtdS1, VtdS1Invalidate,
)
from vtdtui.sw.journal import Journal
from vtdtui.sw.linux import DriverError, IntelIommuDriver
from vtdtui.sw.rules import RULES

CAP = 0x19ED008C40780C66
ECAP = 0x3EE9E86F050DF
CAP_CM, CAP_FL5LP = 1 << 7, 1 << 60
ECAP_NEST, ECAP_SRS, ECAP_EAFS, ECAP_SLADS, ECAP_SMPWC, ECAP_SMTS = (
    1 << 26, 1 << 31, 1 << 34, 1 << 45, 1 << 48, 1 << 43)
NVME, NIC = 0x0100, 0x0200
BASE = 0x0100_0000
GUEST_RAM = 0x4000_0000  # HPA of guest-physical 0 (the parent maps GPA → HPA)
RAM_SIZE = 0x20_0000
S1_PGD = 0x10000  # GPA of the guest's first-stage PML4
# IOTLB (type 2) descriptor low word with DW=DR=1 (CAP bits 54/55 set on this unit).
IOTLB_DRW = 2 | 1 << 6 | 1 << 7


def rig(cap=CAP, ecap=ECAP, *, sm=True, ats=(), extra=None):
    mem = PhysMem(1 << 36)
    cache = CpuCache(mem)
    alloc = PageAllocator(mem, cache, BASE, 0x3000_0000)
    units = [DmarUnit("dmar0", 0xFBFFC000, cap, ecap, mem, cache, haw=46)]
    if extra is not None:
        units.append(DmarUnit("dmar1", 0xFBFFD000, extra[0], extra[1], mem, cache, haw=46))
    j = Journal()
    drv = IntelIommuDriver(j, cache, alloc, units, intel_iommu_sm=sm, ats=set(ats))
    for u in units:
        drv.init_unit(u)
    drv.probe_device(units[0], NVME)
    if extra is not None:
        drv.probe_device(units[1], NIC)
    return drv, units[0], j


def since(j, mark, **want):
    return [e for e in j.events[mark:] if all(getattr(e, k) == v for k, v in want.items())]


def words(e):
    return [(w.lo, w.hi) for w in e.data.descriptors]


def parent_with_ram(drv, unit, **kw):
    """A NEST_PARENT second stage mapping guest RAM (GPA 0 → GUEST_RAM), attached to
    NVME as QEMU's default HWPT is before the guest programs its PASID entry."""
    p = drv.domain_alloc("iommufd", unit, nest_parent=True, **kw)
    drv.attach_device(p, unit, NVME)
    drv.map_range(p, 0, GUEST_RAM, RAM_SIZE, True, True)
    return p


def nested(drv, p, unit, flags=0, width=48, pgtbl=S1_PGD):
    return drv.nested_domain_alloc(p, IOMMU_HWPT_DATA_VTD_S1, VtdS1(flags, pgtbl, width), unit=unit)


# ----------------------------------------------------------------------------- allocation
def test_nest_parent_is_a_second_stage_and_needs_ecap_nest():
    drv, unit, _ = rig()
    assert drv.domain_alloc("iommufd", unit).stage == "first"  # FLTS: first stage by default
    p = drv.domain_alloc("iommufd", unit, nest_parent=True)
    assert (p.stage, p.nest_parent, p.dirty_tracking) == ("second", True, False)
    with pytest.raises(DriverError, match=r"only a second stage.*-EOPNOTSUPP"):
        drv.domain_alloc("iommufd", unit, "first", nest_parent=True)
    drv, unit, _ = rig(ecap=ECAP & ~ECAP_NEST)
    n = len(drv.domains)
    with pytest.raises(DriverError, match=r"ECAP\.NEST=0 \(-EOPNOTSUPP\)"):
        drv.domain_alloc("iommufd", unit, nest_parent=True)
    assert len(drv.domains) == n
    drv, unit, _ = rig(sm=False)
    with pytest.raises(DriverError, match=r"not in scalable mode \(-EOPNOTSUPP\)"):
        drv.domain_alloc("iommufd", unit, nest_parent=True)


@pytest.mark.parametrize("clear", [ECAP_SLADS, ECAP_SMPWC])
def test_dirty_tracking_needs_slads_and_smpwc(clear):
    drv, unit, _ = rig()
    d = drv.domain_alloc("iommufd", unit, dirty_tracking=True)
    assert (d.stage, d.dirty_tracking, d.dirty_enabled) == ("second", True, False)
    assert drv.capable(unit, "dirty_tracking")
    drv, unit, _ = rig(ecap=ECAP & ~clear)
    assert not drv.capable(unit, "dirty_tracking")
    with pytest.raises(DriverError, match=r"DIRTY_TRACKING needs ssads_supported.*-EOPNOTSUPP"):
        drv.domain_alloc("iommufd", unit, nest_parent=True, dirty_tracking=True)


def test_dirty_tracking_allocation_leaves_ssade_off_until_enabled():
    """The DIRTY_TRACKING flag only sets dirty_ops; SSADE follows dmar_domain->dirty_tracking
    (IOMMU_HWPT_SET_DIRTY_TRACKING), here set as that ioctl would leave it."""
    drv, unit, _ = rig()
    p = drv.domain_alloc("iommufd", unit, nest_parent=True, dirty_tracking=True)
    drv.attach_device(p, unit, NVME)
    assert drv.read_pasid(unit, NVME).ssade is False
    p.dirty_enabled = True
    n = nested(drv, p, unit)
    drv.attach_device(n, unit, NVME)
    assert drv.read_pasid(unit, NVME).val[0] >> 9 & 1 == 1  # SSADE, entry bit 9


def test_read_only_map_into_a_nest_parent_is_refused_and_nothing_written():
    drv, unit, j = rig()
    p = drv.domain_alloc("iommufd", unit, nest_parent=True)
    drv.attach_device(p, unit, NVME)
    mark, pages = len(j.events), drv.alloc.allocated
    with pytest.raises(DriverError) as exc:
        drv.map_range(p, 0x1000, GUEST_RAM, 0x1000, True, False)
    assert str(exc.value) == ("Read-only mapping is disallowed on the domain which serves as the parent in a "
                              "nested configuration, due to HW errata (ERRATA_772415_SPR17) (-EINVAL)")
    assert (p.mapped_pages, p.has_mappings, drv.iova_to_phys(p, 0x1000)) == (0, False, None)
    assert (len(j.events), drv.alloc.allocated) == (mark, pages)
    other = drv.domain_alloc("iommufd", unit, "second")
    drv.map_range(other, 0x1000, GUEST_RAM, 0x1000, True, False)  # an ordinary domain takes it
    assert drv.iova_to_phys(other, 0x1000) == (GUEST_RAM, 1)


def test_nested_alloc_checks_type_parent_and_unit():
    drv, unit, _ = rig()
    p = drv.domain_alloc("iommufd", unit, nest_parent=True)
    plain = drv.domain_alloc("iommufd", unit, "second")
    s1 = VtdS1(0, S1_PGD, 48)
    with pytest.raises(DriverError, match=r"-EINVAL\)$"):
        drv.nested_domain_alloc(plain, IOMMU_HWPT_DATA_VTD_S1, s1)
    with pytest.raises(DriverError, match=r"-EINVAL\)$"):
        drv.nested_domain_alloc(drv.domain_alloc("iommufd", unit), IOMMU_HWPT_DATA_VTD_S1, s1)  # first stage
    with pytest.raises(DriverError, match=r"-EOPNOTSUPP\)$"):
        drv.nested_domain_alloc(p, IOMMU_HWPT_DATA_ARM_SMMUV3, s1)
    assert p.s1_domains == []
    # __reserved inside the struct is copied, not checked (iommu_copy_struct_from_user).
    n = drv.nested_domain_alloc(p, IOMMU_HWPT_DATA_VTD_S1, VtdS1(0, S1_PGD, 48, reserved=7))
    assert (n.stage, n.parent, n.pgd, n.levels, p.s1_domains) == ("nested", p, S1_PGD, 4, [n.id])
    assert drv.domains[n.id] is n
    drv2, unit2, _ = rig(ecap=ECAP & ~ECAP_NEST)
    p2 = drv2.domain_alloc("iommufd", unit2, "second")
    p2.nest_parent = True  # a parent made where NEST exists; the device's unit has none
    with pytest.raises(DriverError, match=r"nested_supported: ECAP\.NEST=0\) \(-EOPNOTSUPP\)"):
        drv2.nested_domain_alloc(p2, IOMMU_HWPT_DATA_VTD_S1, s1, unit=unit2)


def test_free_parent_with_children_is_busy_and_children_unlink():
    drv, unit, _ = rig()
    p = drv.domain_alloc("iommufd", unit, nest_parent=True)
    n = nested(drv, p, unit)
    with pytest.raises(DriverError, match=r"parent of nested domain\(s\) .*-EBUSY"):
        drv.domain_free(p)
    free_before = len(drv.domains)
    drv.domain_free(n)  # frees no page: the pgd is the guest's
    assert (p.s1_domains, len(drv.domains)) == ([], free_before - 1)
    drv.domain_free(p)
    assert p.id not in drv.domains


# ----------------------------------------------------------------------------- attach
def test_nested_attach_writes_the_pgtt3_entry_and_flushes_under_cm():
    drv, unit, j = rig(cap=CAP | CAP_CM)
    p = parent_with_ram(drv, unit)
    parent_did = p.dids["dmar0"]
    n = nested(drv, p, unit, IOMMU_VTD_S1_SRE | IOMMU_VTD_S1_WPE | IOMMU_VTD_S1_EAFE)
    mark = len(j.events)
    drv.attach_device(n, unit, NVME)
    did = n.dids["dmar0"]
    assert "dmar0" not in p.dids  # device_block_translation dropped the parent's DID
    pe = drv.read_pasid(unit, NVME)
    # Word 0: SSPTPTR | PGTT 3 (bits 8:6) | AW (4:2) | P; word 1: DID | PWSNP (bit 23:
    # SMPWC=1, the parent's table is coherent); word 2: FSPTPTR | EAFE 7 | WPE 4 | FLPM 0 | SRE 0.
    assert pe.val == (p.pgd | 3 << 6 | p.agaw << 2 | 1, did | 1 << 23, S1_PGD | 1 << 7 | 1 << 4 | 1, 0, 0, 0, 0, 0)
    assert (pe.pgtt, pe.fsptptr, pe.ssptptr, pe.pgsnp, pe.ssade, pe.flpm) == (3, S1_PGD, p.pgd, False, False, 0)
    torn = since(j, mark, rule="pasid-teardown", op="iotlb-invalidation")
    assert [(e.scope, e.did) for e in torn] == [("domain", parent_did)]  # the old PGTT-2 entry: DSI
    pc = since(j, mark, rule="pasid-np2p", op="pasid-cache-invalidation", outcome="issued")
    pi = since(j, mark, rule="pasid-np2p", op="piotlb-invalidation", outcome="issued")
    assert words(pc[0]) == [(7 | 1 << 4 | did << 16, 0)]  # PC, PASID-selective, PASID 0
    assert words(pi[0]) == [(6 | 2 << 4 | did << 16, 0)]  # P_IOTLB, PASID-selective
    assert [t.kind for t in n.tags] == ["iotlb"]
    assert [(t.kind, t.did) for t in p.tags] == [("nesting_iotlb", did)]


def test_nested_attach_without_cm_flushes_the_write_buffer_only():
    drv, unit, j = rig()
    p = parent_with_ram(drv, unit)
    n = nested(drv, p, unit)
    mark = len(j.events)
    drv.attach_device(n, unit, NVME)
    assert not since(j, mark, rule="pasid-np2p", outcome="issued")
    assert since(j, mark, rule="pasid-np2p", op="pasid-cache-invalidation", outcome="skipped")


def test_force_snooping_parent_sets_pgsnp_and_57_bit_s1_sets_flpm():
    drv, unit, _ = rig()
    p = drv.domain_alloc("iommufd", unit, nest_parent=True)
    assert drv.enforce_cache_coherency(p)
    n = nested(drv, p, unit, width=57)
    drv.attach_device(n, unit, NVME)
    pe = drv.read_pasid(unit, NVME)
    assert (pe.pgsnp, pe.flpm, pe.val[1] >> 24 & 1, pe.val[2] >> 2 & 3) == (True, 1, 1, 1)


@pytest.mark.parametrize("cap, ecap, flags, width, msg", [
    (CAP, ECAP, 0, 39, r"Invalid stage-1 address width 39 \(-EINVAL\)"),
    (CAP & ~CAP_FL5LP, ECAP, 0, 57, r"5-level paging not supported \(-EINVAL\)"),
    (CAP, ECAP & ~ECAP_SRS, IOMMU_VTD_S1_SRE, 48, r"No supervisor request support on dmar0 \(-EINVAL\)"),
    (CAP, ECAP & ~ECAP_EAFS, IOMMU_VTD_S1_EAFE, 48, r"No extended access flag support on dmar0 \(-EINVAL\)"),
])
def test_nested_attach_refusals_leave_the_old_domain(cap, ecap, flags, width, msg):
    drv, unit, j = rig(cap=cap, ecap=ecap)
    p = parent_with_ram(drv, unit)
    n = nested(drv, p, unit, flags, width)
    before = drv.read_pasid(unit, NVME).val
    mark = len(j.events)
    with pytest.raises(DriverError, match=msg):
        drv.attach_device(n, unit, NVME)
    assert drv.attached_domain(NVME, unit) is p and drv.read_pasid(unit, NVME).val == before
    assert (n.dids, n.tags, len(j.events)) == ({}, [], mark)


def test_nested_attach_on_a_legacy_unit_and_an_incompatible_parent():
    legacy = (CAP, ECAP & ~ECAP_SMTS)
    drv, unit, _ = rig(extra=legacy)
    p = drv.domain_alloc("iommufd", unit, nest_parent=True)
    n = nested(drv, p, unit)
    with pytest.raises(DriverError, match=r"dmar1 is not in scalable mode.*\(-ENODEV\)"):
        drv.attach_device(n, drv.units["dmar1"], NIC)
    # A second SM unit without snoop control cannot take a force-snooping parent.
    drv, unit, _ = rig(extra=(CAP, ECAP & ~(1 << 7)))
    p = drv.domain_alloc("iommufd", unit, nest_parent=True)
    assert drv.enforce_cache_coherency(p)
    n = nested(drv, p, unit)
    with pytest.raises(DriverError, match=r"^s2 domain is not compatible: dmar1 has no snoop control.*\(-EINVAL\)$"):
        drv.attach_device(n, drv.units["dmar1"], NIC)


# ----------------------------------------------------------------------------- parent flushes
def test_parent_unmap_flushes_with_the_nested_did_and_whole_devtlb():
    drv, unit, j = rig(ats=(NVME,))
    p = parent_with_ram(drv, unit)
    n = nested(drv, p, unit)
    drv.attach_device(n, unit, NVME)
    did = n.dids["dmar0"]
    assert [(t.kind, t.did, t.sid) for t in p.tags] == [("nesting_iotlb", did, None), ("nesting_devtlb", did, NVME)]
    mark = len(j.events)
    drv.unmap_range(p, 0, RAM_SIZE)  # one 2M leaf
    io = since(j, mark, rule="nesting-tags", op="iotlb-invalidation", outcome="issued")
    dev = since(j, mark, rule="nesting-tags", op="device-tlb-invalidation", outcome="issued")
    assert [e.did for e in io] == [did]
    # PSI (gran 3) of 0..2M: addr 0, AM 9; qi_desc_iotlb carries IH 0.
    assert words(io[0]) == [(IOTLB_DRW | 3 << 4 | did << 16, 9)]
    assert dev[0].scope == "all"
    # Device-TLB, S=1, address with bits 62:12 set and bit 63 clear: the whole device.
    lo, hi = words(dev[0])[0]
    assert (lo & 0xF, lo >> 32 & 0xFFFF, hi) == (3, NVME, ((1 << 51) - 1) << 12 | 1)


def test_parent_map_under_cm_flushes_nesting_iotlb_and_not_without():
    drv, unit, j = rig(cap=CAP | CAP_CM)
    p = parent_with_ram(drv, unit)
    n = nested(drv, p, unit)
    drv.attach_device(n, unit, NVME)
    did = n.dids["dmar0"]
    mark = len(j.events)
    drv.map_range(p, 0x4000_0000, 0x8000_0000, 0x1000, True, True)
    io = since(j, mark, rule="nesting-tags", op="iotlb-invalidation", outcome="issued")
    assert words(io[0]) == [(IOTLB_DRW | 3 << 4 | did << 16, 0x4000_0000)]
    drv, unit, j = rig()
    p = parent_with_ram(drv, unit)
    drv.attach_device(nested(drv, p, unit), unit, NVME)
    mark = len(j.events)
    drv.map_range(p, 0x4000_0000, 0x8000_0000, 0x1000, True, True)
    assert not since(j, mark, op="iotlb-invalidation", outcome="issued")
    assert since(j, mark, rule="nesting-tags", outcome="skipped")


# ----------------------------------------------------------------------------- user invalidation
def _attached(cm=False):
    drv, unit, j = rig(cap=CAP | (CAP_CM if cm else 0))
    p = parent_with_ram(drv, unit)
    n = nested(drv, p, unit)
    drv.attach_device(n, unit, NVME)
    return drv, n, j, n.dids["dmar0"]


def _piotlbs(j, mark):
    return [w for e in since(j, mark, op="piotlb-invalidation", rule="nested-invalidate", outcome="issued")
            for w in words(e)]


def test_invalidate_user_page_leaf_and_all_make_p_iotlb_descriptors():
    drv, n, j, did = _attached()
    mark = len(j.events)
    entries = [VtdS1Invalidate(0x2000, 2), VtdS1Invalidate(0x5000, 1, IOMMU_VTD_INV_FLAGS_LEAF),
               VtdS1Invalidate(0, U64_MAX)]
    assert drv.nested_cache_invalidate_user(n, IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, entries) == (3, None)
    lo_psi, lo_all = 6 | 3 << 4 | did << 16, 6 | 2 << 4 | did << 16
    assert _piotlbs(j, mark) == [(lo_psi, 0x2000 | 1), (lo_psi, 0x5000 | 1 << 6), (lo_all, 0)]


@pytest.mark.parametrize("entry, done, errno", [
    (VtdS1Invalidate(0x1000, 1, flags=2), 1, "-EOPNOTSUPP"),
    (VtdS1Invalidate(0x1000, 1, reserved=1), 1, "-EOPNOTSUPP"),
    (VtdS1Invalidate(0x1001, 1), 1, "-EINVAL"),
    (VtdS1Invalidate(0x1000, U64_MAX), 1, "-EINVAL"),
    (VtdS1Invalidate(-0x1000, 1), 1, "-EINVAL"),
])
def test_invalidate_user_stops_at_the_first_bad_entry(entry, done, errno):
    drv, n, j, did = _attached()
    mark = len(j.events)
    processed, err = drv.nested_cache_invalidate_user(
        n, IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, [VtdS1Invalidate(0x3000, 1), entry, VtdS1Invalidate(0, U64_MAX)])
    assert processed == done and err.startswith("entry 1: ") and err.endswith(f"({errno})")
    assert _piotlbs(j, mark) == [(6 | 3 << 4 | did << 16, 0x3000)]
    assert since(j, mark, op="piotlb-invalidation", outcome="skipped", rule="nested-invalidate")


def test_invalidate_user_wrong_type_and_wrapping_range():
    drv, n, j, did = _attached()
    assert drv.nested_cache_invalidate_user(n, 1, [VtdS1Invalidate(0, 1)])[1].endswith("(-EINVAL)")
    mark = len(j.events)
    # addr + npages * 4K wraps past 2^64 as the kernel's unsigned long does: never a crash.
    top = U64_MAX & ~0xFFF
    assert drv.nested_cache_invalidate_user(n, 0, [VtdS1Invalidate(top, 2), VtdS1Invalidate(0x1000, 1 << 60)]) == (
        2, None)
    assert len(_piotlbs(j, mark)) == 2


def test_invalidate_user_on_a_cm_unit_matches_and_paging_domain_is_refused():
    drv, n, j, did = _attached(cm=True)
    mark = len(j.events)
    assert drv.nested_cache_invalidate_user(n, 0, [VtdS1Invalidate(0x8000, 8)]) == (1, None)
    assert _piotlbs(j, mark) == [(6 | 3 << 4 | did << 16, 0x8000 | 3)]
    assert drv.nested_cache_invalidate_user(n.parent, 0, [])[1].endswith("(-EOPNOTSUPP)")


# ----------------------------------------------------------------------------- detach, DMA, info
def test_detach_tears_down_with_dsi_of_the_nested_did():
    drv, n, j, did = _attached()
    p = n.parent
    mark = len(j.events)
    drv.detach_device(n, drv.units["dmar0"], NVME)
    torn = since(j, mark, rule="pasid-teardown", op="iotlb-invalidation")
    assert [(e.scope, e.did) for e in torn] == [("domain", did)]
    assert words(torn[0]) == [(IOTLB_DRW | 2 << 4 | did << 16, 0)]
    assert (n.tags, p.tags, n.dids, drv.read_pasid(drv.units["dmar0"], NVME).present) == ([], [], {}, False)
    assert drv._alloc_did(drv.units["dmar0"]) == did  # the DID went back to the IDA


def _write_guest_fs(drv, iova, gpa_leaf):
    """The guest's 4-level first stage (IA-32e entries P|R/W|U/S|A, leaf +D) at GPAs
    S1_PGD.., written where the parent puts those GPAs: GUEST_RAM + GPA."""
    tables = [S1_PGD + 0x1000 * i for i in range(4)]
    for level, table in zip((4, 3, 2, 1), tables):
        idx = iova >> (12 + 9 * (level - 1)) & 0x1FF
        value = (tables[4 - level + 1] | 0x27) if level > 1 else (gpa_leaf | 0x67)
        drv.cache.cpu_write_q(GUEST_RAM + table + idx * 8, value)
        drv.cache.clflush(GUEST_RAM + table + idx * 8, 8)


def test_end_to_end_nested_dma_through_guest_first_stage_and_parent():
    drv, n, j, did = _attached()
    unit = drv.units["dmar0"]
    _write_guest_fs(drv, 0x7000_0000, 0x5000)
    t = unit.translate(NVME, 0x7000_0123, write=True)
    assert t.ok and t.hpa == GUEST_RAM + 0x5123
    drv.unmap_range(n.parent, 0, RAM_SIZE)  # the parent drops guest RAM: the walk now faults
    assert not unit.translate(NVME, 0x7000_0123).ok


def test_hw_info_and_capable():
    drv, unit, _ = rig()
    info = drv.hw_info(unit)
    assert (info.flags, info.cap_reg, info.ecap_reg, info.type) == (IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17, CAP, ECAP, 1)
    assert drv.capable(unit, "cache_coherency") and drv.capable(unit, "enforce_cache_coherency")
    drv, unit, _ = rig(ecap=ECAP & ~(1 << 7))
    assert drv.capable(unit, "cache_coherency") and not drv.capable(unit, "enforce_cache_coherency")
    assert drv.hw_info(unit).flags == IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17  # unconditional


def test_rules_used_exist():
    assert {"nested-invalidate", "nesting-tags", "pasid-np2p", "pasid-teardown"} <= set(RULES)
