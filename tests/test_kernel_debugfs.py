"""vtdtui/kernel/debugfs.py: debugfs text written with debugfs.c's format strings, read back."""

from __future__ import annotations

import re

import pytest

from vtdtui.kernel.debugfs import read_regset, read_translation_struct


def printk(fmt: str, *args) -> str:
    return re.sub(r"(%[-0-9]*)ll", r"\1", fmt) % args


REGS = [("VER", 0x0, 0x10), ("GCMD", 0x18, 0), ("GSTS", 0x1C, 0xC7000000), ("CAP", 0x8, 0xD2008C40660462),
        ("ECAP", 0x10, 0xF050DA), ("RTADDR", 0x20, 0x10A3C5000), ("MTRR_FIX64K_00000", 0x120, 0x0606060606060606),
        ("VCRSP", 0xE10, 0)]


def regset_text(units):
    out = []
    for name, base in units:
        out.append(printk("IOMMU: %s Register Base Address: %llx\n", name, base))
        out.append("Name\t\t\tOffset\t\tContents\n")
        out += [printk("%-16s\t0x%02x\t\t0x%016llx\n", n, off, v) for n, off, v in REGS]
        out.append("\n")
    return "".join(out)


def test_regset_round_trip():
    units = read_regset(regset_text([("dmar0", 0xFED90000), ("dmar1", 0xFED91000)]), "iommu_regset")
    assert [(u.name, u.base) for u in units] == [("dmar0", 0xFED90000), ("dmar1", 0xFED91000)]
    assert units[1].registers["CAP"] == (0x8, 0xD2008C40660462)
    assert units[0].registers["VCRSP"] == (0xE10, 0)  # %02x prints 3 digits for >= 0x100
    assert units[0].registers["MTRR_FIX64K_00000"][0] == 0x120


ROW = "%02x:%02x.%x\t0x%016llx:0x%016llx\t0x%016llx:0x%016llx\t"
PASID = "%-6d\t0x%016llx:0x%016llx:0x%016llx\n"
HEAD = "B.D.F\tRoot_entry\t\t\t\tContext_entry\t\t\t\tPASID\tPASID_table_entry\n"


def test_translation_struct_legacy_and_scalable():
    text = (printk("IOMMU %s: Root Table Address: 0x%llx\n", "dmar0", 0x10A3C5000) + HEAD
            + printk(ROW, 0, 2, 0, 0, 0x10B7E2001, 0x301, 0x10C000001) + printk(PASID, -1, 0, 0, 0)
            + "\n" + printk("DMA Remapping is not enabled on %s\n", "dmar2")
            + printk("IOMMU %s: Root Table Address: 0x%llx\n", "dmar1", 0x112340000) + HEAD
            # val[2]:val[1]:val[0] (the 2019 fix reversed the first version's order)
            + printk(ROW, 0x3A, 0, 0, 0, 0x112340001, 0, 0x112350201) + printk(PASID, 5, 0x112380001, 0x7, 0x49)
            + "\n")
    legacy, off, sm = read_translation_struct(text, "dmar_translation_struct")
    assert (legacy.name, legacy.enabled, legacy.root_table) == ("dmar0", True, 0x10A3C5000)
    (row,) = legacy.rows
    assert (row.bdf, row.root_lo, row.context_hi, row.context_lo, row.pasid, row.pasid_entry) == (
        "00:02.0", 0x10B7E2001, 0x301, 0x10C000001, None, None)
    assert (off.name, off.enabled, off.rows) == ("dmar2", False, [])
    (row,) = sm.rows
    assert (row.bdf, row.pasid, row.pasid_entry) == ("3a:00.0", 5, (0x49, 0x7, 0x112380001))


def test_translation_struct_of_2018_without_pasid_columns():
    text = ("IOMMU dmar0: Root Table Address: 0x1000\nB.D.F\tRoot_entry\t\t\t\tContext_entry\n"
            + printk(ROW, 0, 0x1F, 3, 0, 0x2001, 0x102, 0x3001).rstrip("\t") + "\n")
    (unit,) = read_translation_struct(text, "x")
    assert [(r.bdf, r.pasid) for r in unit.rows] == [("00:1f.3", None)]


@pytest.mark.parametrize("text, needle", [
    ("", "not a dmar_translation_struct file"),
    ("garbage\n", "x: no 'IOMMU NAME: Root Table Address:' line"),
    ("IOMMU dmar0: Root Table Address: 0x1000\n" + printk(ROW, 0, 2, 0, 0, 1, 0, 1)[:30] + "\n", "x:2:"),
    ("IOMMU dmar0: Root Table Address: 0x1000\n" + printk(ROW, 0, 2, 0, 0, 1, 0, 1) + printk(PASID, 1 << 20, 0, 0, 1),
     "does not fit 20 bits"),
    ("IOMMU dmar0: Root Table Address: 0x1000\n" + printk(ROW, 0, 0x20, 0, 0, 1, 0, 1) + "\n", "above 1f"),
    ("\x00\xff" * 100, "not a dmar_translation_struct file"),
])
def test_translation_struct_bad_input(text, needle):
    with pytest.raises(ValueError) as exc:
        read_translation_struct(text, "x")
    assert needle in str(exc.value)


def test_lines_not_understood_are_listed_and_the_rest_reads():
    text = ("IOMMU dmar0: Root Table Address: 0x1000\n" + HEAD + "-- pasted by hand --\n"
            + printk(ROW, 0, 2, 0, 0, 0x2001, 0x102, 0x3001) + printk(PASID, -1, 0, 0, 0))
    (unit,) = units = read_translation_struct(text, "x")
    assert units.unparsed == [3] and [(r.bdf, r.line) for r in unit.rows] == [("00:02.0", 4)]
    text = "IOMMU: dmar0 Register Base Address: fed90000\nVER 0x0\n" + printk("%-16s\t0x%02x\t\t0x%016llx\n", "CAP", 8, 5)
    (u,) = units = read_regset(text, "r")
    assert units.unparsed == [2] and u.registers == {"CAP": (8, 5)} and u.line == 1


def test_regset_truncated_row():
    text = regset_text([("dmar0", 0xFED90000)])
    cut = text[: text.index("ECAP") + 24]
    with pytest.raises(ValueError, match=r"^r:\d+: truncated or garbled register row"):
        read_regset(cut, "r")


@pytest.mark.parametrize("text", ["", "garbage\nVER 0x0\n", "\x1b[2J\n"])
def test_regset_bad_input(text):
    with pytest.raises(ValueError) as exc:
        read_regset(text, "r")
    assert str(exc.value).startswith("r") and "\x1b" not in str(exc.value)
