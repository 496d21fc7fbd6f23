"""Scalable-mode faults: each SM reason a minimal table produces, FPD in the context,
PASID-directory and PASID entries, the FRCD's PP/PASID fields as dmar_fault() reads
them, and the dmar_fault_dump_ptes() lines of the 2026 kernel (REFERENCE-2 §13)."""

from __future__ import annotations

import pytest

from hwsmkit import CAP_SM, DID, ECAP_DT, ECAP_SM, ECAP_SMTS, FS_LEAF_RW, FS_TABLE, SID, SID_UPPER, SmRig

T0, T1, T2, T3 = 0x2000000, 0x2001000, 0x2002000, 0x2003000


def frcd_hi(rig, i=0):
    return rig.unit.mmio_read(rig.unit.fault_reg + 16 * i + 8)


def test_root_and_context_faults():
    rig = SmRig()
    assert rig.dma(0x0).fault.reason == 0x39  # root entry lo (LP) clear
    rig.set_context(SID)
    assert rig.dma(0x0, sid=SID_UPPER).fault.reason == 0x39  # UP clear: the upper half is separate
    rig.set_context(SID_UPPER, present=False)
    assert rig.dma(0x0, sid=SID_UPPER).fault.reason == 0x41
    rig.wq(rig.root + 3 * 16, rig.rq(rig.root + 3 * 16) | 1 << 4)  # root lo bit 4: reserved
    t = rig.dma(0x0)
    assert t.fault.reason == 0x3A and "SM: Non-zero reserved field set in Root Entry" in t.fault.message


def test_context_entry_checks():
    rig = SmRig(ecap=ECAP_SM & ~ECAP_DT)
    rig.set_context_raw(SID, (rig.alloc.alloc() | 1, 0, 0, 1))  # word 3 reserved
    assert rig.dma(0x0).fault.reason == 0x42
    rig.unit.context_cache.invalidate_global()
    rig.set_context(SID, dte=True)  # DTE on a unit without ECAP.DT
    assert rig.dma(0x0).fault.reason == 0x43


def test_dte_paside_and_pasid_limit():
    rig = SmRig()
    rig.set_context(SID, pdts=0)  # 128 directory entries: PASIDs below 8192
    rig.set_pasid(pgtt=4, did=1)
    assert rig.dma(0x0, translation_request=True).fault.reason == 0x44
    assert rig.dma(0x0, pasid=3).fault.reason == 0x45
    rig.set_context(SID, pdts=0, paside=True)
    rig.unit.context_cache.invalidate_global()
    assert rig.dma(0x0, pasid=8192).fault.reason == 0x46
    t = rig.dma(0x0, pasid=8191)
    assert t.fault.reason == 0x51  # directory entry 127 not present
    assert t.fault.message == ("DMAR: [DMA Read PASID 0x1fff] Request device [03:00.0] fault addr 0x0 "
                               "[fault reason 0x51] SM: Present bit in Directory Entry is clear")
    rig.set_pasid(SID, 64, pgtt=4, did=1, present=False)
    assert rig.dma(0x0, pasid=64).fault.reason == 0x59
    rig.set_pasid(SID, 65, pgtt=5, did=1)  # PGTT 5 is reserved
    assert rig.dma(0x0, pasid=65).fault.reason == 0x5B
    a = rig.set_pasid(SID, 66, pgtt=4, did=1)
    rig.wq(a + 8 * 5, 1)  # val[5]: reserved
    assert rig.dma(0x0, pasid=66).fault.reason == 0x5A
    rig.wq(rig.pasid_dirs[SID] + 8, rig.rq(rig.pasid_dirs[SID] + 8) | 1 << 4)  # dir entry bit 4
    assert rig.dma(0x0, pasid=67).fault.reason == 0x52


def test_pasid_request_to_a_legacy_mode_unit():
    rig = SmRig(ecap=ECAP_SM & ~ECAP_SMTS)  # SMT written but not latched without SMTS
    assert not rig.unit.sm_active and rig.unit.rta_latched == rig.root
    t = rig.dma(0x0, pasid=2)
    assert t.fault.reason == 0x31 and "SM: TTM 0 for request with PASID" in t.fault.message
    assert rig.dma(0x0).fault.reason == 0x01  # a request without PASID: the legacy walk


def test_frcd_pp_and_pasid_as_dmar_fault_reads_them():
    rig = SmRig()
    rig.set_context(SID, paside=True)
    rig.set_pasid(SID, 0x1234, pgtt=1, fsptptr=T0)
    rig.dma(0x5000, True, pasid=0x1234)
    hi = frcd_hi(rig)
    dword8, dword12 = hi & 0xFFFF_FFFF, hi >> 32
    assert dword8 >> 31 == 1 and dword8 & 0xFFFF == SID  # PP, SID
    assert (dword12 >> 8) & 0xFFFFF == 0x1234 and dword12 & 0xFF == 0x71  # PASID, FR
    assert dword12 >> 30 & 1 == 0  # T: write
    f = rig.unit.faults[-1]
    assert f.pasid == 0x1234 and f.to_json()["pasid"] == 0x1234
    rig.unit.mmio_write(rig.unit.fault_reg + 8, 1 << 63)
    rig.set_pasid(SID, 0, pgtt=1, fsptptr=T0)
    rig.dma(0x5000)
    hi = frcd_hi(rig, 1)
    assert hi >> 31 & 1 == 0 and hi >> 40 & 0xFFFFF == 0  # without PASID: PP=0
    assert "NO_PASID" in rig.unit.faults[-1].message and rig.unit.faults[-1].pasid is None


@pytest.mark.parametrize("where", ["context", "dir", "entry"])
def test_fpd_anywhere_on_the_path_suppresses_qualified_faults(where):
    rig = SmRig()
    rig.set_context(SID, fpd=where == "context")
    rig.set_pasid(pgtt=1, fsptptr=T0, fpd=where == "entry")
    if where == "dir":
        rig.wq(rig.pasid_dirs[SID], rig.rq(rig.pasid_dirs[SID]) | 2)
    t = rig.dma(0x1000)
    assert t.fault.reason == 0x71 and t.fault.suppressed_by_fpd and not rig.unit.fsts & 2
    t = rig.dma(0x1000)  # from the caches now: still suppressed
    assert t.fault.suppressed_by_fpd


def test_fpd_does_not_hide_unqualified_faults():
    rig = SmRig()
    rig.set_context_raw(SID, (rig.alloc.alloc() | 3, 1 << 30, 0, 0))  # FPD=1, hi bit 30 reserved
    t = rig.dma(0x0)
    assert t.fault.reason == 0x42 and t.fault.recorded


def test_fault_dump_first_stage():
    rig = SmRig()
    rig.set_context(SID, paside=True)
    rig.set_pasid(SID, 5, pgtt=1, fsptptr=T0, did=DID)
    rig.wq(T0, T1 | FS_TABLE)
    rig.wq(T1, T2 | FS_TABLE | 0x80 * 0)
    rig.wq(T2, T3 | FS_TABLE)
    root = rig.root + 3 * 16
    ctx = rig.context_addr(SID)
    pdir = rig.pasid_dirs[SID]
    ptab = rig.pasid_tables[(SID, 0)]
    lines = rig.unit.fault_dump(SID, 0x1000, pasid=5)
    assert lines == [
        "DMAR: Dump dmar0 table entries for IOVA 0x1000",
        f"DMAR: scalable mode root entry: hi 0x{0:016x}, low 0x{rig.rq(root):016x}",
        f"DMAR: context entry: hi 0x{0:016x}, low 0x{pdir | 0x9:016x}",
        f"DMAR: pasid dir entry: 0x{ptab | 1:016x}",
        f"DMAR: pasid table entry[0]: 0x{T0 * 0 | 1 << 6 | 2 << 2 | 1:016x}",
        f"DMAR: pasid table entry[1]: 0x{DID | 1 << 23:016x}",
        f"DMAR: pasid table entry[2]: 0x{T0:016x}",
        *[f"DMAR: pasid table entry[{i}]: 0x{0:016x}" for i in range(3, 8)],
        f"DMAR: pte level: 4, pte value: 0x{T1 | FS_TABLE:016x}",
        f"DMAR: pte level: 3, pte value: 0x{T2 | FS_TABLE:016x}",
        f"DMAR: pte level: 2, pte value: 0x{T3 | FS_TABLE:016x}",
        f"DMAR: pte level: 1, pte value: 0x{0:016x}",
        "DMAR: page table not present at level 0",
    ]
    assert ctx == rig.ctx_tables[(3, False)]


def test_fault_dump_stops_where_the_kernel_does():
    rig = SmRig()
    assert rig.unit.fault_dump(SID_UPPER, 0)[2:] == ["DMAR: context table is not present"]
    rig.set_context(SID, present=False)
    assert rig.unit.fault_dump(SID, 0)[-1] == "DMAR: pasid directory table is not present"
    rig.set_context(SID)
    assert rig.unit.fault_dump(SID, 0)[-2:] == ["DMAR: pasid dir entry: 0x0000000000000000",
                                               "DMAR: pasid table is not present"]
    rig.set_pasid(pgtt=2, ssptptr=T0, present=False)
    lines = rig.unit.fault_dump(SID, 0)
    assert len(lines) == 13 and lines[-1] == "DMAR: scalable mode page table is not present"
    # A second stage: level from AW (agaw_to_level), table from val[0].
    rig.set_pasid(pgtt=2, ssptptr=T0, aw=1)
    assert rig.unit.fault_dump(SID, 0)[-2:] == ["DMAR: pte level: 3, pte value: 0x0000000000000000",
                                               "DMAR: page table not present at level 2"]


def test_reason_names_for_state_json():
    rig = SmRig()
    rig.set_context()
    rig.set_pasid(pgtt=1, fsptptr=T0)
    assert rig.dma(0x0, True).fault.reason_name == "FS_PAGING_ENTRY_P"
    assert CAP_SM and FS_LEAF_RW
