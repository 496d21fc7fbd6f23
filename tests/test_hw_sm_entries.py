"""Scalable-mode structures and descriptors, bit-exact: every field of
vtdtui.hw.sm_entries and the type 6/7/8 descriptors against words computed by hand
from REFERENCE-2 §11 (Linux iommu.h / pasid.h, QEMU intel_iommu_internal.h) and §12.2."""

from __future__ import annotations

import pytest

from vtdtui.hw import qi
from vtdtui.hw.sm_entries import (
    FsPte, PasidDirEntry, PasidEntry, SmContextEntry, SmRootEntry, canonical, context_get_sm_pds, context_slot,
)


def test_sm_root_entry_halves():
    # lo: LP bit 0, LCTP 63:12; hi: UP bit 0, UCTP 63:12 (root_entry_lctp / _uctp)
    lo, hi = SmRootEntry.encode(lctp=0x1234_5000, uctp=0x6789_a000)
    assert (lo, hi) == (0x1234_5001, 0x6789_a001)
    r = SmRootEntry.decode(lo, hi)
    assert r.half(0x7F) == (True, 0x1234_5000) and r.half(0x80) == (True, 0x6789_a000)
    assert SmRootEntry.encode(lctp=0x5000) == (0x5001, 0)
    assert SmRootEntry.decode(0x5001 | 1 << 11, 0).reserved_set  # bits 11:1 reserved
    assert not SmRootEntry.decode(0x5001, 0x7001).reserved_set


@pytest.mark.parametrize("devfn,upper,off", [(0x00, False, 0), (0x7F, False, 0x7F * 32), (0x80, True, 0),
                                             (0xFF, True, 0x7F * 32), (0x81, True, 32)])
def test_context_slot(devfn, upper, off):
    # iommu_context_addr: devfn >= 0x80 → hi, devfn -= 0x80; devfn *= 2 (16-byte slots)
    assert context_slot(devfn) == (upper, off)


def test_sm_context_entry_every_field():
    # lo: P 0, FPD 1, DTE 2, PASIDE 3, PRE 4, PDTS 11:9, PASIDDIRPTR 63:12; hi: RID_PASID 19:0
    w = SmContextEntry.encode(pasiddirptr=0xABCD_E000, pdts=5, rid_pasid=0xFFFFF, dte=True, paside=True,
                              pre=True, fpd=True)
    assert w == (0xABCD_E000 | 5 << 9 | 0x10 | 0x8 | 0x4 | 0x2 | 0x1, 0xFFFFF, 0, 0)
    c = SmContextEntry.decode(*w)
    assert (c.present, c.fpd, c.dte, c.paside, c.pre, c.pdts, c.pasiddirptr, c.rid_pasid) == (
        True, True, True, True, True, 5, 0xABCD_E000, 0xFFFFF)
    assert c.dir_entries == 1 << 12 and c.max_pasid == 1 << 18
    assert not c.reserved_set
    assert SmContextEntry.decode(w[0] | 1 << 5, w[1]).reserved_set  # lo 8:5 (VTD_SM_CONTEXT_ENTRY_RSVD_VAL0)
    assert SmContextEntry.decode(w[0], 1 << 21).reserved_set  # hi 63:21 (RSVD_VAL1)
    assert SmContextEntry.decode(w[0], w[1], 1, 0).reserved_set  # words 2/3 reserved
    assert not SmContextEntry.decode(w[0], 1 << 20).reserved_set  # hi bit 20: not in RSVD_VAL1


def test_context_get_sm_pds():
    # pds = find_first_bit(max_pasid >> 6); < 7 → 0 else pds - 7
    assert context_get_sm_pds(1 << 20) == 14 - 7
    assert context_get_sm_pds(1 << 13) == 0  # max_pde 128 → bit 7 → 0
    assert context_get_sm_pds(1 << 10) == 0  # bit 4 < 7


def test_pasid_dir_entry():
    raw = PasidDirEntry.encode(0x7000_0000, fpd=True)
    assert raw == 0x7000_0003
    d = PasidDirEntry.decode(raw)
    assert (d.present, d.fpd, d.table) == (True, True, 0x7000_0000)
    assert PasidDirEntry.decode(0x7000_0001 | 1 << 5).reserved_set


def test_pasid_entry_every_field():
    val = PasidEntry.encode(pgtt=3, did=0xBEEF, aw=3, ssptptr=0x1_2345_6000, fsptptr=0x9_8765_4000, flpm=1,
                            pgsnp=True, pwsnp=True, sre=True, wpe=True, eafe=True, ssade=True, fpd=True)
    # val[0]: P 0, FPD 1, AW 4:2, PGTT 8:6, SSADE 9, SSPTPTR 63:12
    assert val[0] == 0x1_2345_6000 | 1 << 9 | 3 << 6 | 3 << 2 | 2 | 1
    # val[1]: DID 15:0, PWSNP 23 (entry bit 87), PGSNP 24 (entry bit 88)
    assert val[1] == 0xBEEF | 1 << 23 | 1 << 24
    # val[2]: SRE 0 (bit 128), FLPM 3:2, WPE 4, EAFE 7, FSPTPTR 63:12
    assert val[2] == 0x9_8765_4000 | 1 << 7 | 1 << 4 | 1 << 2 | 1
    assert val[3:] == (0,) * 5
    p = PasidEntry.decode(val)
    assert (p.present, p.fpd, p.aw, p.pgtt, p.ssade, p.ssptptr, p.did, p.pwsnp, p.pgsnp, p.sre, p.flpm,
            p.wpe, p.eafe, p.fsptptr) == (True, True, 3, 3, True, 0x1_2345_6000, 0xBEEF, True, True, True, 1,
                                          True, True, 0x9_8765_4000)
    assert p.pgtt_name == "nested" and p.fs_levels == 5 and p.ss_levels == 5
    assert PasidEntry.decode((0,) * 8).pgtt_name == "reserved (0)"
    assert PasidEntry.decode((1, 0, 2, 0, 0, 0, 0, 0)).ere  # ERE: val[2] bit 1
    assert PasidEntry.decode((1, 0, 0, 0, 0, 0, 0, 1)).reserved_set  # val[3..7] reserved
    assert not p.reserved_set


def test_fs_pte_as_linux_writes_it():
    # leaf: P | US | A (+ R/W and D when writable); table: P | R/W | US | A
    assert FsPte.encode(0x5000) == 0x5000 | 0x1 | 0x2 | 0x4 | 0x20 | 0x40
    assert FsPte.encode(0x5000, w=False) == 0x5000 | 0x1 | 0x4 | 0x20
    assert FsPte.encode(0x20_0000, ps=True, xd=True) == 0x20_0000 | 0x67 | 0x80 | 1 << 63
    assert FsPte.encode(0x6000, leaf=False) == 0x6000 | 0x27
    e = FsPte(0x8000_0000_0000_50E7)
    assert (e.present, e.w, e.us, e.a, e.d, e.ps, e.xd, e.addr) == (True, True, True, True, True, True, True, 0x5000)


def test_canonical():
    assert canonical(0x7FFF_FFFF_F000, 4) and canonical(0xFFFF_8000_0000_0000, 4)
    assert not canonical(0x8000_0000_0000, 4) and canonical(0x8000_0000_0000, 5)
    assert not canonical(0x0100_0000_0000_0000, 5) and canonical(0xFF00_0000_0000_0000, 5)


def test_piotlb_pc_pasid_devtlb_descriptors():
    # type 6: PASID 51:32, DID 31:16, G 5:4; qw1 ADDR 63:12, IH 6, AM 5:0
    assert qi.PiotlbDesc(3, 0x12, 0xABCDE, 0x7F000_0000, 2, True).encode() == (
        0x6 | 3 << 4 | 0x12 << 16 | 0xABCDE << 32, 0x7F000_0000 | 1 << 6 | 2)
    assert qi.PiotlbDesc(2, 7, 1).encode() == (0x6 | 2 << 4 | 7 << 16 | 1 << 32, 0)
    # type 7: PASID 51:32, DID 31:16, G 5:4
    assert qi.PcDesc(1, 9, 0x33).encode() == (0x7 | 1 << 4 | 9 << 16 | 0x33 << 32, 0)
    # type 8: PASID 51:32, SID 31:16, QDEP 8:4, PFSID 15:12 / 63:52; qw1 ADDR, S 11, G 0
    lo, hi = qi.PasidDevTlbDesc(0x0300, 5, 0x1000, True, 0x1F, 0x0302, True).encode()
    assert lo == 0x8 | 0x1F << 4 | 0x2 << 12 | 0x0300 << 16 | 5 << 32 | 0x030 << 52
    assert hi == 0x1000 | 1 << 11 | 1
    for d in (qi.PiotlbDesc(3, 0x12, 0xABCDE, 0x7F000_0000, 2, True), qi.PcDesc(1, 9, 0x33),
              qi.PasidDevTlbDesc(0x0300, 5, 0x1000, True, 0x1F, 0x0302, True)):
        assert qi.decode(*d.encode()) == d
    assert qi.check(*qi.PiotlbDesc(1, 1, 1).encode())  # P_IOTLB G0/G1 reserved
    assert qi.check(*qi.PcDesc(2, 1, 1).encode())  # PC G2 reserved
    assert qi.check_256((0x7, 0, 0, 1))  # qw3 reserved
