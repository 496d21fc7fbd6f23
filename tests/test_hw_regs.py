"""CAP / ECAP field tables (VT-d spec §11.4.2-3, REFERENCE.md §1) against hand-decoded values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hwkit import CAP_BASE, ECAP_BASE, Rig
from vtdtui.hw import regs
from vtdtui.hw.regs import CAP, ECAP, linux_view, parse_reg_value

# The spec's bit positions, copied from REFERENCE.md §1 (name: (hi, lo)).
SPEC_CAP_BITS = {
    "ND": (2, 0), "AFL": (3, 3), "RWBF": (4, 4), "PLMR": (5, 5), "PHMR": (6, 6),
    "CM": (7, 7), "SAGAW": (12, 8), "MGAW": (21, 16), "ZLR": (22, 22), "FRO": (33, 24),
    "SLLPS": (37, 34), "PSI": (39, 39), "NFR": (47, 40), "MAMV": (53, 48),
    "DWD": (54, 54), "DRD": (55, 55), "FL1GP": (56, 56), "PI": (59, 59),
    "FL5LP": (60, 60), "ESIRTPS": (62, 62), "ESRTPS": (63, 63),
}
SPEC_ECAP_BITS = {
    "C": (0, 0), "QI": (1, 1), "DT": (2, 2), "IR": (3, 3), "EIM": (4, 4), "PT": (6, 6),
    "SC": (7, 7), "IRO": (17, 8), "MHMV": (23, 20), "MTS": (25, 25), "NEST": (26, 26),
    "PRS": (29, 29), "ERS": (30, 30), "SRS": (31, 31), "NWFS": (33, 33), "EAFS": (34, 34),
    "PSS": (39, 35), "PASID": (40, 40), "DIT": (41, 41), "PDS": (42, 42), "SMTS": (43, 43),
    "SLADS": (45, 45), "SLTS": (46, 46), "FLTS": (47, 47), "SMPWC": (48, 48), "RPS": (49, 49),
}


def test_cap_field_positions_are_the_spec_ones():
    assert {f.name: (f.hi, f.lo) for f in CAP} == SPEC_CAP_BITS


def test_ecap_field_positions_are_the_spec_ones():
    assert {f.name: (f.hi, f.lo) for f in ECAP} == SPEC_ECAP_BITS


def test_decode_client_cap_d2008c40660462():
    # cap 0x00d2008c40660462 split in bytes: 00 d2 00 8c 40 66 04 62
    #   0x62 = 0110 0010: ND(2:0)=010=2, RWBF(4)=0, PLMR(5)=1, PHMR(6)=1, CM(7)=0
    #   bits 15:8 = 0x04 -> SAGAW(12:8)=0b00100=4 (48-bit, 4-level)
    #   bits 23:16 = 0x66 = 0110 0110 -> MGAW(21:16)=0x26=38, ZLR(22)=1
    #   cap >> 24 = 0xd2008c40, & 0x3ff = 0x040 -> FRO 0x40 (registers at 0x400)
    #   bits 39:32 = 0x8c = 1000 1100 -> SLLPS(37:34)=0b0011, PSI(39)=1
    #   bits 47:40 = 0x00 -> NFR=0; bits 55:48 = 0xd2 = 1101 0010 -> MAMV=0x12, DWD=1, DRD=1
    d = CAP.decode(0xD2008C40660462)
    assert d == {
        "ND": 2, "AFL": 0, "RWBF": 0, "PLMR": 1, "PHMR": 1, "CM": 0, "SAGAW": 4,
        "MGAW": 38, "ZLR": 1, "FRO": 0x40, "SLLPS": 3, "PSI": 1, "NFR": 0, "MAMV": 18,
        "DWD": 1, "DRD": 1, "FL1GP": 0, "PI": 0, "FL5LP": 0, "ESIRTPS": 0, "ESRTPS": 0,
    }


def test_decode_qemu_cap_80d2008c222f0686():
    # QEMU vtd_cap_init, aw=48, caching-mode=on (REFERENCE.md §1):
    #   0x86 = 1000 0110: ND=6, CM(7)=1;  bits 15:8 = 0x06 -> SAGAW=0b00110 (39|48)
    #   bits 23:16 = 0x2f -> MGAW=47, ZLR=0;  bits 33:24 = 0x22 -> FRO=0x22 (0x220)
    #   bits 39:32 = 0x8c -> SLLPS=3 (2M+1G), PSI=1;  NFR=0;  0xd2 -> MAMV=18, DWD, DRD
    #   bits 63:56 = 0x80 -> ESRTPS(63)=1
    d = CAP.decode(0x80D2008C222F0686)
    assert d == {
        "ND": 6, "AFL": 0, "RWBF": 0, "PLMR": 0, "PHMR": 0, "CM": 1, "SAGAW": 6,
        "MGAW": 47, "ZLR": 0, "FRO": 0x22, "SLLPS": 3, "PSI": 1, "NFR": 0, "MAMV": 18,
        "DWD": 1, "DRD": 1, "FL1GP": 0, "PI": 0, "FL5LP": 0, "ESIRTPS": 0, "ESRTPS": 1,
    }


def test_decode_client_ecap_f050da():
    # 0xf050da: 0xda = 1101 1010 -> C=0, QI=1, DT=0, IR=1, EIM=1, PT(6)=1, SC(7)=1
    #           IRO(17:8) = (0xf050da >> 8) & 0x3ff = 0x050 -> IOTLB regs at 0x500
    #           MHMV(23:20) = 0xf
    d = ECAP.decode(0xF050DA)
    assert {k: d[k] for k in ("C", "QI", "DT", "IR", "EIM", "PT", "SC", "IRO", "MHMV")} == {
        "C": 0, "QI": 1, "DT": 0, "IR": 1, "EIM": 1, "PT": 1, "SC": 1, "IRO": 0x50, "MHMV": 15,
    }
    assert all(v == 0 for k, v in d.items() if k not in ("QI", "IR", "EIM", "PT", "SC", "IRO", "MHMV"))


def test_decode_qemu_ecap_f00f5a():
    # 0xf00f5a: 0x5a = 0101 1010 -> QI, IR, EIM, PT; SC(7)=0 (snoop-control off)
    #           IRO = 0x00f (0xf0), MHMV = 0xf
    d = ECAP.decode(0xF00F5A)
    assert {k: d[k] for k in ("C", "QI", "DT", "IR", "EIM", "PT", "SC", "IRO", "MHMV")} == {
        "C": 0, "QI": 1, "DT": 0, "IR": 1, "EIM": 1, "PT": 1, "SC": 0, "IRO": 0xF, "MHMV": 15,
    }


def test_linux_view_client():
    v = linux_view(0xD2008C40660462, 0xF050DA)
    assert v["cap_ndoms"] == 256  # 2^(4 + 2*2)
    assert v["cap_mgaw"] == 39  # 38 + 1
    assert v["cap_sagaw"] == 4
    assert v["cap_fault_reg_offset"] == 0x400  # 0x40 * 16
    assert v["cap_super_page_val"] == 3
    assert v["cap_num_fault_regs"] == 1  # NFR 0 + 1
    assert v["cap_max_amask_val"] == 18
    assert v["cap_pgsel_inv"] == 1
    assert v["cap_caching_mode"] == 0
    assert v["ecap_qis"] == 2  # unshifted: e & 2
    assert v["ecap_iotlb_offset"] == 0x500  # 0x50 * 16
    assert v["ecap_sc_support"] == 1
    assert v["ecap_coherent"] == 0


def test_linux_view_qemu():
    v = linux_view(0x80D2008C222F0686, 0xF00F5A)
    assert v["cap_ndoms"] == 65536  # 2^(4 + 2*6)
    assert v["cap_mgaw"] == 48
    assert v["cap_fault_reg_offset"] == 0x220
    assert v["cap_caching_mode"] == 1
    assert v["ecap_iotlb_offset"] == 0xF0
    assert v["ecap_sc_support"] == 0
    assert v["ecap_pass_through"] == 1


def test_encode_by_name():
    # ND=2 | CM (bit 7) | SAGAW=4 (bits 12:8) | MGAW=38 (0x26 << 16)
    #  = 0x2 + 0x80 + 0x400 + 0x260000 = 0x260482
    assert CAP.encode({"ND": 2, "CM": 1, "SAGAW": 4, "MGAW": 38}) == 0x260482
    # IRO 0xf -> 0xf00, plus QI (0x2)
    assert ECAP.encode({"IRO": 0xF, "QI": 1}) == 0xF02


def test_field_overflow_and_unknown_name_rejected():
    with pytest.raises(ValueError):
        CAP.encode({"ND": 8})  # 3 bits
    with pytest.raises(ValueError):
        CAP.encode({"MGAW": 64})  # 6 bits
    with pytest.raises(KeyError):
        CAP.field("NOPE")


def test_toggle():
    assert CAP.toggle(0, "CM") == 0x80
    assert CAP.toggle(0x80, "CM") == 0
    assert ECAP.toggle(0xF050DA, "SC") == 0xF0505A  # clear bit 7
    with pytest.raises(ValueError):
        CAP.toggle(0, "SAGAW")


def test_parse_reg_value():
    assert parse_reg_value("d2008c40660462", "cap") == 0xD2008C40660462
    assert parse_reg_value(" 0xF050DA\n", "ecap") == 0xF050DA
    for bad in ("", "0x", "xyz", "1" * 17):
        with pytest.raises(ValueError):
            parse_reg_value(bad, "cap")


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_cap_decode_encode_roundtrip(value):
    assert CAP.encode(CAP.decode(value)) == value & CAP.defined_mask


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_ecap_decode_encode_roundtrip(value):
    assert ECAP.encode(ECAP.decode(value)) == value & ECAP.defined_mask


@given(st.dictionaries(st.sampled_from(sorted(SPEC_CAP_BITS)), st.integers(min_value=0, max_value=1023)))
def test_cap_encode_decode_roundtrip(fields):
    fields = {k: v & ((1 << (SPEC_CAP_BITS[k][0] - SPEC_CAP_BITS[k][1] + 1)) - 1) for k, v in fields.items()}
    value = CAP.encode(fields)
    # each field lands at the spec position
    expect = 0
    for k, v in fields.items():
        expect |= v << SPEC_CAP_BITS[k][1]
    assert value == expect
    decoded = CAP.decode(value)
    assert {k: decoded[k] for k in fields} == fields


def test_unit_register_file_reports_cap_ecap_and_offsets():
    rig = Rig()
    u = rig.unit
    assert u.mmio_read(regs.CAP_REG) == CAP_BASE
    assert u.mmio_read(regs.ECAP_REG) == ECAP_BASE
    assert u.fault_reg == 0x220  # FRO 0x22 * 16
    assert u.iotlb_reg == 0x500  # IRO 0x50 * 16
    assert u.num_fault_regs == 4  # NFR 3 + 1
    assert u.mgaw_bits == 48
    assert u.mamv == 9
    assert u.ndoms == 256
    # GSTS after set_root_table + enable_translation: TES (31) and RTPS (30)
    assert u.mmio_read(regs.GSTS_REG) == 0xC0000000
    assert u.mmio_read(regs.RTADDR_REG) == rig.root


def test_gcmd_te_off_disables_translation():
    rig = Rig()
    rig.unit.mmio_write(regs.GCMD_REG, 0)
    assert rig.unit.mmio_read(regs.GSTS_REG) & (1 << 31) == 0
    t = rig.dma(0x1234)
    assert t.ok and t.hpa == 0x1234  # no remapping with TES=0
