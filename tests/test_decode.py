"""CAP/ECAP decoding and the boot-log reader.

The expected field values below were computed by hand, byte by byte, from the bit
positions in REFERENCE.md §1 (not by running the decoder), e.g. for CAP 0xd2008c40660462:
bytes from bit 0 up are 62 04 66 40 8c 00 d2 00, so ND = 0x62 & 7 = 2, CM = bit 7 of 0x62 = 0,
SAGAW = 0x04, MGAW = 0x66 & 0x3f = 38, ZLR = bit 6 of 0x66 = 1, FRO = 0x40 | (0x8c & 3) << 8
= 0x40, SLLPS = (0x8c >> 2) & 0xf = 3, PSI = bit 7 of 0x8c = 1, NFR = 0x00, MAMV = 0xd2 & 0x3f
= 18, DWD/DRD = bits 6/7 of 0xd2 = 1/1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from vtdtui.decode import DecodedUnit, parse_dmesg, render_table, unit_to_json
from vtdtui.hw.regs import CAP, ECAP

DATA = Path(__file__).parent / "data" / "dmesg"

CAP_ZERO = {f.name: 0 for f in CAP}
ECAP_ZERO = {f.name: 0 for f in ECAP}

# Desktop dmar1 (everything but the GPU).
DESKTOP_DMAR1_CAP = 0xD2008C40660462
DESKTOP_DMAR1_CAP_FIELDS = CAP_ZERO | dict(
    ND=2, PLMR=1, PHMR=1, CM=0, RWBF=0, SAGAW=0x4, MGAW=38, ZLR=1, FRO=0x40, SLLPS=0x3,
    PSI=1, NFR=0, MAMV=18, DWD=1, DRD=1,
)
DESKTOP_DMAR1_ECAP = 0xF050DA
# 0xda = 1101_1010
DESKTOP_DMAR1_ECAP_FIELDS = ECAP_ZERO | dict(
    C=0, QI=1, DT=0, IR=1, EIM=1, PT=1, SC=1, IRO=0x50, MHMV=0xF,
)

# Desktop dmar0 (integrated GPU): bytes 62 04 66 40 0c 00 c0 01.
DESKTOP_DMAR0_CAP = 0x1C0000C40660462
DESKTOP_DMAR0_CAP_FIELDS = CAP_ZERO | dict(
    ND=2, PLMR=1, PHMR=1, SAGAW=0x4, MGAW=38, ZLR=1, FRO=0x40, SLLPS=0x3, PSI=0,
    MAMV=0, DWD=1, DRD=1, FL1GP=1,
)
# bytes 5e 50 f0 2f 9e 01: 0x2f sets bits 24 (undefined here), 25, 26, 27 (undefined), 29;
# 0x9e sets 33, 34 and PSS = 0x9e >> 3 & 0x1f = 19; 0x01 sets PASID.
DESKTOP_DMAR0_ECAP = 0x19E2FF0505E
DESKTOP_DMAR0_ECAP_FIELDS = ECAP_ZERO | dict(
    QI=1, DT=1, IR=1, EIM=1, PT=1, SC=0, C=0, IRO=0x50, MHMV=0xF, MTS=1, NEST=1, PRS=1,
    NWFS=1, EAFS=1, PSS=19, PASID=1,
)

# QEMU intel-iommu, aw-bits=48, caching-mode=on: bytes 86 06 2f 22 8c 00 d2 80.
QEMU_CAP = 0x80D2008C222F0686
QEMU_CAP_FIELDS = CAP_ZERO | dict(
    ND=6, CM=1, SAGAW=0x6, MGAW=47, ZLR=0, FRO=0x22, SLLPS=3, PSI=1, NFR=0, MAMV=18,
    DWD=1, DRD=1, ESRTPS=1,
)
# bytes 5a 0f f0; 0x5a = 0101_1010
QEMU_ECAP = 0xF00F5A
QEMU_ECAP_FIELDS = ECAP_ZERO | dict(
    C=0, QI=1, DT=0, IR=1, EIM=1, PT=1, SC=0, IRO=0xF, MHMV=0xF,
)

# Old Sandy Bridge machine: bytes 62 04 66 20 00 00 c0 / 62 02 66 20 80 00 c9.
OLD0_CAP, OLD0_ECAP = 0xC0000020660462, 0xF0101A
OLD1_CAP, OLD1_ECAP = 0xC9008020660262, 0xF0105A


@pytest.mark.parametrize(
    "layout, value, expected",
    [
        (CAP, DESKTOP_DMAR1_CAP, DESKTOP_DMAR1_CAP_FIELDS),
        (ECAP, DESKTOP_DMAR1_ECAP, DESKTOP_DMAR1_ECAP_FIELDS),
        (CAP, DESKTOP_DMAR0_CAP, DESKTOP_DMAR0_CAP_FIELDS),
        (ECAP, DESKTOP_DMAR0_ECAP, DESKTOP_DMAR0_ECAP_FIELDS),
        (CAP, QEMU_CAP, QEMU_CAP_FIELDS),
        (ECAP, QEMU_ECAP, QEMU_ECAP_FIELDS),
        (CAP, OLD0_CAP, CAP_ZERO | dict(ND=2, PLMR=1, PHMR=1, SAGAW=4, MGAW=38, ZLR=1, FRO=0x20, DWD=1, DRD=1)),
        (ECAP, OLD0_ECAP, ECAP_ZERO | dict(QI=1, IR=1, EIM=1, IRO=0x10, MHMV=0xF)),
        (CAP, OLD1_CAP, CAP_ZERO | dict(ND=2, PLMR=1, PHMR=1, SAGAW=2, MGAW=38, ZLR=1, FRO=0x20, PSI=1, MAMV=9, DWD=1, DRD=1)),
        (ECAP, OLD1_ECAP, ECAP_ZERO | dict(QI=1, IR=1, EIM=1, PT=1, IRO=0x10, MHMV=0xF)),
    ],
    ids=["dmar1-cap", "dmar1-ecap", "dmar0-cap", "dmar0-ecap", "qemu-cap", "qemu-ecap",
         "old0-cap", "old0-ecap", "old1-cap", "old1-ecap"],
)
def test_hand_computed_fields(layout, value, expected):
    assert layout.decode(value) == expected


def test_hand_computed_values_hold_no_undefined_bits_except_dmar0_ecap():
    # Guards the tables above: each field set really came from the value.
    for layout, value, fields in [
        (CAP, DESKTOP_DMAR1_CAP, DESKTOP_DMAR1_CAP_FIELDS),
        (ECAP, DESKTOP_DMAR1_ECAP, DESKTOP_DMAR1_ECAP_FIELDS),
        (CAP, DESKTOP_DMAR0_CAP, DESKTOP_DMAR0_CAP_FIELDS),
        (CAP, QEMU_CAP, QEMU_CAP_FIELDS),
        (ECAP, QEMU_ECAP, QEMU_ECAP_FIELDS),
    ]:
        assert layout.encode(fields) == value
    # Bits 24 (ECS) and 27 (DIS) are set on real Tiger Lake hardware but are not fields here.
    assert ECAP.encode(DESKTOP_DMAR0_ECAP_FIELDS) == DESKTOP_DMAR0_ECAP & ~((1 << 24) | (1 << 27))


def test_linux_view_desktop_dmar1():
    u = DecodedUnit("dmar1", DESKTOP_DMAR1_CAP, DESKTOP_DMAR1_ECAP)
    linux = unit_to_json(u)["linux"]
    assert linux["cap_mgaw"] == 39
    assert linux["cap_fault_reg_offset"] == 0x400
    assert linux["cap_ndoms"] == 256
    assert linux["cap_num_fault_regs"] == 1
    assert linux["ecap_qis"] == 2  # the kernel's macro does not shift the bit down
    assert linux["ecap_iotlb_offset"] == 0x500
    assert linux["ecap_sc_support"] == 1
    assert linux["ecap_coherent"] == 0


def test_linux_view_qemu():
    linux = unit_to_json(DecodedUnit("dmar0", QEMU_CAP, QEMU_ECAP))["linux"]
    assert linux["cap_mgaw"] == 48
    assert linux["cap_ndoms"] == 1 << 16
    assert linux["cap_fault_reg_offset"] == 0x220
    assert linux["cap_caching_mode"] == 1
    assert linux["ecap_iotlb_offset"] == 0xF0


# --- register layout properties ---------------------------------------------------

@pytest.mark.parametrize("layout", [CAP, ECAP], ids=["CAP", "ECAP"])
@given(x=st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_encode_decode_round_trip(layout, x):
    defined = x & layout.defined_mask
    assert layout.encode(layout.decode(defined)) == defined
    # Bits outside the fields are neither reported nor invented.
    assert layout.encode(layout.decode(x)) == defined


@given(x=st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_toggle_cm_flips_bit_7_only(x):
    assert CAP.toggle(x, "CM") ^ x == 1 << 7
    assert CAP.toggle(CAP.toggle(x, "CM"), "CM") == x


def test_toggle_c_and_sc_flip_their_bits():
    assert ECAP.toggle(DESKTOP_DMAR1_ECAP, "SC") == DESKTOP_DMAR1_ECAP & ~0x80
    assert ECAP.toggle(DESKTOP_DMAR1_ECAP, "C") == DESKTOP_DMAR1_ECAP | 1


@pytest.mark.parametrize("name", ["SAGAW", "MGAW", "FRO", "ND"])
def test_toggle_multi_bit_field_raises(name):
    with pytest.raises(ValueError, match=name):
        CAP.toggle(DESKTOP_DMAR1_CAP, name)


# --- the boot-log reader ------------------------------------------------------------

def _units(path: Path):
    return parse_dmesg(path.read_text(), str(path))


def test_modern_desktop_log():
    units = _units(DATA / "desktop.dmesg")
    assert [(u.name, u.base, u.ver, u.cap, u.ecap) for u in units] == [
        ("dmar0", 0xFED90000, "1:0", DESKTOP_DMAR0_CAP, DESKTOP_DMAR0_ECAP),
        ("dmar1", 0xFED91000, "1:0", DESKTOP_DMAR1_CAP, DESKTOP_DMAR1_ECAP),
    ]
    assert [u.line for u in units] == [9, 11]


def test_old_kernel_log_names_units_dmarN():
    units = _units(DATA / "old-kernel.dmesg")
    assert [(u.name, u.base, u.cap, u.ecap) for u in units] == [
        ("dmar0", 0xFED90000, OLD0_CAP, OLD0_ECAP),
        ("dmar1", 0xFED91000, OLD1_CAP, OLD1_ECAP),
    ]


def test_qemu_guest_log():
    (u,) = _units(DATA / "qemu-guest.dmesg")
    assert (u.name, u.cap, u.ecap) == ("dmar0", QEMU_CAP, QEMU_ECAP)
    assert CAP.get(u.cap, "CM") == 1


def test_journalctl_mixed_case_log():
    units = _units(DATA / "journalctl-mixed-case.log")
    assert [(u.name, u.base, u.cap, u.ecap, u.line) for u in units] == [
        ("dmar0", 0xFED90000, DESKTOP_DMAR0_CAP, DESKTOP_DMAR0_ECAP, 6),
        ("dmar1", 0xFED91000, DESKTOP_DMAR1_CAP, DESKTOP_DMAR1_ECAP, 8),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "DMAR: dmar1: reg_base_addr fed91000 ver 1:0 cap d2008c40660462 ecap f050da",
        "[    0.110266] DMAR: dmar1: reg_base_addr fed91000 ver 1:0 cap d2008c40660462 ecap f050da",
        "[12345.678901] DMAR: dmar1: reg_base_addr fed91000 ver 1:0 cap d2008c40660462 ecap f050da",
        "[Thu Nov 21 10:00:00 2024] DMAR: dmar1: reg_base_addr fed91000 ver 1:0 cap d2008c40660462 ecap f050da",
        "Nov 21 10:00:00 host kernel: DMAR: dmar1: reg_base_addr fed91000 ver 1:0 cap d2008c40660462 ecap f050da",
        "<6>[    0.110266] DMAR: dmar1: reg_base_addr fed91000 ver 1:0 cap d2008c40660462 ecap f050da",
        "kern  :info  : [    0.110266] DMAR: dmar1: reg_base_addr fed91000 ver 1:0 cap d2008c40660462 ecap f050da",
        "2024-11-21T10:00:00.123456+01:00 host kernel: [    0.110266] DMAR: dmar1: reg_base_addr fed91000 ver 1:0 cap d2008c40660462 ecap f050da",
        "dmar: IOMMU 1: reg_base_addr fed91000 ver 1:0 cap d2008c40660462 ecap f050da",
        "DMAR: IOMMU 1: reg_base_addr fed91000 ver 1:0 cap d2008c40660462 ecap f050da",
        "DMAR: DMAR1: REG_BASE_ADDR FED91000 VER 1:0 CAP D2008C40660462 ECAP F050DA",
        "dmar: iommu 1: reg_base_addr fed91000 ver 1:0 cap 0xd2008c40660462 ecap 0XF050DA",
        "DMAR: dmar1: reg_base_addr fed91000 ver 1:0 cap d2008c40660462 ecap f050da\r",
        "DMAR:  dmar1:\treg_base_addr  fed91000  ver 1:0  cap d2008c40660462\tecap f050da  ",
    ],
)
def test_line_forms(line):
    (u,) = parse_dmesg(f"noise\n{line}\nmore noise\n", "log")
    assert (u.name, u.base, u.ver, u.cap, u.ecap, u.line) == (
        "dmar1", 0xFED91000, "1:0", DESKTOP_DMAR1_CAP, DESKTOP_DMAR1_ECAP, 2,
    )


def test_lines_that_mention_dmar_are_not_units():
    text = (DATA / "bad-no-dmar.dmesg").read_text() + (
        "DMAR: DRHD base: 0x000000fed91000 flags: 0x1\n"
        "DMAR-IR: IOAPIC id 2 under DRHD base  0xfed91000 IOMMU 1\n"
        "IOMMU 1 0xfed91000: using Queued invalidation\n"
    )
    with pytest.raises(ValueError, match="no 'DMAR: dmarN: reg_base_addr"):
        parse_dmesg(text, "x")


def test_repeated_unit_keeps_every_occurrence_in_order():
    boot = (DATA / "desktop.dmesg").read_text()
    units = parse_dmesg(boot + boot, "two-boots")
    assert [u.name for u in units] == ["dmar0", "dmar1", "dmar0", "dmar1"]
    n = boot.count("\n")
    assert [u.line for u in units] == [9, 11, 9 + n, 11 + n]


def test_non_utf8_bytes_around_a_valid_line():
    text = (DATA / "nonutf8.dmesg").read_bytes().decode("utf-8", errors="replace")
    (u,) = parse_dmesg(text, "nonutf8.dmesg")
    assert (u.name, u.cap, u.ecap, u.line) == ("dmar1", DESKTOP_DMAR1_CAP, DESKTOP_DMAR1_ECAP, 3)


@pytest.mark.parametrize("name", ["bad-empty.dmesg", "bad-no-dmar.dmesg"])
def test_no_unit_line_names_the_file(name):
    path = DATA / name
    with pytest.raises(ValueError) as info:
        _units(path)
    assert str(info.value) == (
        f"{path}: no 'DMAR: dmarN: reg_base_addr ... cap ... ecap ...' line found"
    )


def test_malformed_cap_names_file_and_line():
    path = DATA / "bad-malformed-cap.dmesg"
    with pytest.raises(ValueError) as info:
        _units(path)
    assert str(info.value).startswith(f"{path}:3: cap: 'zz12'")


@pytest.mark.parametrize(
    "tail, where, what",
    [
        ("cap 1ffffffffffffffff ecap f050da", "cap", "wider than 64 bits"),
        ("cap d2008c40660462 ecap f050dx", "ecap", "not a hexadecimal"),
        ("cap d2008c40660462 ecap 0x", "ecap", "not a hexadecimal"),
        ("cap d2008c40660462 ecap -1", "ecap", "not a hexadecimal"),
    ],
)
def test_malformed_values(tail, where, what):
    text = f"a\nb\nDMAR: dmar1: reg_base_addr fed91000 ver 1:0 {tail}\n"
    with pytest.raises(ValueError, match=rf"^f\.log:3: {where}: .*{what}"):
        parse_dmesg(text, "f.log")


def test_truncated_unit_line_is_bad_input():
    text = "DMAR: dmar1: reg_base_addr fed91000 ver 1:0 cap d2008c40660462\n"
    with pytest.raises(ValueError, match=r"^f\.log:1: expected 'reg_base_addr"):
        parse_dmesg(text, "f.log")


# --- JSON and table ---------------------------------------------------------------

def test_json_shape_matches_contract():
    (_, u) = _units(DATA / "desktop.dmesg")
    obj = unit_to_json(u)
    assert set(obj) >= {"name", "cap", "ecap"}
    assert obj["name"] == "dmar1"
    assert obj["cap"] == {"raw": "0xd2008c40660462", "fields": DESKTOP_DMAR1_CAP_FIELDS}
    assert obj["ecap"] == {"raw": "0xf050da", "fields": DESKTOP_DMAR1_ECAP_FIELDS}
    assert list(obj["cap"]["fields"]) == [f.name for f in CAP]
    assert list(obj["ecap"]["fields"]) == [f.name for f in ECAP]
    assert obj["cap"]["fields"]["MGAW"] == 38  # raw, not scaled
    assert (obj["base"], obj["ver"], obj["line"]) == ("0xfed91000", "1:0", 11)
    assert obj["linux"]["cap_mgaw"] == 39
    assert json.loads(json.dumps(obj)) == obj


def test_json_raw_is_lowercase_hex():
    obj = unit_to_json(DecodedUnit("x", QEMU_CAP, QEMU_ECAP))
    assert obj["cap"]["raw"] == "0x80d2008c222f0686"
    assert obj["ecap"]["raw"] == "0xf00f5a"


def test_json_missing_register_is_null():
    obj = unit_to_json(DecodedUnit("cmdline", None, QEMU_ECAP))
    assert obj["cap"] is None and obj["base"] is None and obj["line"] is None
    assert obj["ecap"]["fields"]["QI"] == 1
    assert "cap_mgaw" not in obj["linux"] and obj["linux"]["ecap_qis"] == 2


def _render_text(units) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(render_table(units))
    return console.export_text()


def test_table_shows_fields_bits_meanings_and_linux_differences():
    text = _render_text(_units(DATA / "desktop.dmesg"))
    for needle in ["dmar0", "dmar1", "reg_base_addr 0xfed91000", "MGAW", "21:16",
                   "0x26 (38)", "cap_mgaw = 39", "ecap_qis = 2", "cap_ndoms = 256",
                   "cap_fault_reg_offset = 0x400", "ecap_iotlb_offset = 0x500",
                   "snoop control", "SAGAW"]:
        assert needle in text, needle
    # Undefined set bits (ECS, DIS on dmar0) are shown, not silently dropped.
    assert "0x9000000" in text


def test_table_omits_absent_register():
    text = _render_text([DecodedUnit("cmdline", QEMU_CAP, None)])
    assert "CAP 0x80d2008c222f0686" in text and "ECAP" not in text


def test_core_imports_neither_textual_nor_rich():
    code = (
        "import sys, vtdtui.decode, vtdtui.cli; "
        "bad = [m for m in ('textual', 'rich') if m in sys.modules]; "
        "print(bad); raise SystemExit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
