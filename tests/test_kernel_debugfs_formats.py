"""kernel/debugfs.py: domain_translation_struct (every era) and invalidation_queue (128-
and 256-bit), written with debugfs.c's format strings and read back; samples written
for these tests."""

from __future__ import annotations

import re

import pytest

from vtdtui.kernel.debugfs import read_debugfs_file, read_domain_translation_struct, read_invalidation_queue


def printk(fmt: str, *args) -> str:
    return re.sub(r"(%[-0-9]*)l+", r"\1", fmt) % args


# ≈v5.10 / ≈v5.15 global file (torvalds/linux@4b4193256c8d show_device_domain_translation)
OLD_HEADER = "IOVA_PFN\t\tPML5E\t\t\tPML4E\t\t\tPDPE\t\t\tPDE\t\t\tPTE\n"
FULL_ROW = "0x%013lx |\t0x%016llx\t0x%016llx\t0x%016llx\t0x%016llx\t0x%016llx\n"
# ≈v6.7+ per device (NEW domain_translation_struct_show / dump_page_info)
NEW_HEADER = printk("%-17s\t%-18s\t%-18s\t%-18s\t%-18s\t%-s\n", "IOVA_PFN", "PML5E", "PML4E", "PDPE", "PDE", "PTE")


def new_row(pfn, path):
    row = printk("0x%013lx |\t0x%016llx\t0x%016llx\t0x%016llx", pfn, path[5], path[4], path[3])
    if path[2]:
        row += printk("\t0x%016llx", path[2])
        if path[1]:
            row += printk("\t0x%016llx", path[1])
    return row + "\n"


PML4, PDP, PD = 0x20A001003, 0x20A002003, 0x20A003003


def test_v510_global_file_with_default_pasid_in_decimal():
    text = (printk("Device %s with pasid %d @0x%llx\n", "0000:00:02.0", 12, 0x20A000000) + OLD_HEADER
            + printk(FULL_ROW, 0x100, 0, PML4, PDP, PD, 0x3F0100003)
            + printk(FULL_ROW, 0x40000, 0, PML4, PDP, 0x3F0200083, 0) + "\n"
            + printk("Device %s with pasid %d @0x%llx\n", "0000:00:14.0", -1, 0x20B000000) + OLD_HEADER + "\n")
    gpu, usb = devs = read_domain_translation_struct(text, "d")
    assert devs.unparsed == [] and devs.not_enabled == []
    assert (gpu.name, gpu.bdf, gpu.segment, gpu.pasid, gpu.pgd, gpu.layout) == (
        "0000:00:02.0", "00:02.0", 0, 12, 0x20A000000, "5.10")      # 12 decimal, not 0x12
    assert [(r.iova, r.leaf_level) for r in gpu.rows] == [(0x100000, 1), (0x40000000, 2)]
    assert gpu.rows[0].entries == {4: PML4, 3: PDP, 2: PD, 1: 0x3F0100003}
    assert gpu.rows[1].line == 4
    assert (usb.pasid, usb.rows) == (-1, [])


def test_v515_global_file_without_pasid():
    text = (printk("Device %s @0x%llx\n", "0000:01:00.0", 0x20A000000) + OLD_HEADER
            + printk(FULL_ROW, 0x0, 0, PML4, 0x3C0000083, 0, 0) + "\n")
    (d,) = read_domain_translation_struct(text, "d")
    assert (d.layout, d.pasid, d.rows[0].leaf_level, d.rows[0].columns) == ("5.15", None, 3, (0, PML4, 0x3C0000083, 0, 0))


def test_per_device_file_short_superpage_rows_and_units_without_translation():
    path4k = [0, 0x3F0100003, PD, PDP, PML4, 0]
    path2m = [0, 0, 0x3F0200083, PDP, PML4, 0]
    path1g = [0, 0, 0, 0x3C0000083, PML4, 0]
    text = (printk("DMA Remapping is not enabled on %s\n", "dmar0")
            + printk("Device %04x:%02x:%02x.%x ", 0, 0x3A, 0, 0) + printk("@0x%llx\n", 0x20A000000) + NEW_HEADER
            + new_row(0x100, path4k) + new_row(0x40000, path2m) + new_row(0x80000, path1g))
    devs = read_domain_translation_struct(text, "d")
    (d,) = devs
    assert devs.not_enabled == [("dmar0", 1)] and (d.bdf, d.pasid, d.layout) == ("3a:00.0", None, "6.7")
    assert [len([c for c in r.columns if c is not None]) for r in d.rows] == [5, 4, 3]
    assert [r.leaf_level for r in d.rows] == [1, 2, 3]
    assert d.rows[2].entries == {4: PML4, 3: 0x3C0000083}


def test_per_pasid_file_prints_the_pasid_in_hex():
    text = (printk("Device %04x:%02x:%02x.%x ", 0, 0x10, 1, 0) + printk("with pasid %x @0x%llx\n", 0x1F, 0x20A000000)
            + NEW_HEADER + new_row(0x7F, [0, 0x3F0007027, PD, PDP, PML4, 0x20B000027]))
    (d,) = read_domain_translation_struct(text, "d")
    assert (d.pasid, d.rows[0].entries[5]) == (0x1F, 0x20B000027)


def test_empty_file_is_a_device_without_translation():
    assert list(read_domain_translation_struct("", "d")) == []


@pytest.mark.parametrize("text, needle", [
    ("nothing here\n", "not a domain_translation_struct file"),
    ("Device 0000:00:02.0 @0x1000\n" + NEW_HEADER + "0x0000000000100 |\t0x0000", "d:3: truncated or garbled"),
    ("Device 0000:00:02.0 @0x1000\n" + OLD_HEADER + printk(FULL_ROW, 1, 0, 1, 2, 3, 4)[:-20] + "\n", "d:3:"),
    ("Device 0000:00:02.0 with pasid 100000 @0x1000\n" + NEW_HEADER, "does not fit 20 bits"),
    ("Device 0000:00:02.0 @0x1000\n" + OLD_HEADER + printk(FULL_ROW, 1, 0, 1, 2, 0, 4), "empty PDE"),
])
def test_domain_bad_input(text, needle):
    with pytest.raises(ValueError) as exc:
        read_domain_translation_struct(text, "d")
    assert needle in str(exc.value)


def test_domain_unparsed_line_keeps_the_rest():
    text = ("Device 0000:00:02.0 @0x1000\n" + NEW_HEADER + "\x1b[31mnoise\n"
            + new_row(1, [0, 0x2003, 0x3003, 0x4003, 0x5003, 0]))
    devs = read_domain_translation_struct(text, "d")
    assert devs.unparsed == [3] and devs[0].rows[0].line == 4


# invalidation_queue (NEW invalidation_queue_show / invalidation_queue_entry_show)
ROW128 = "%5d\t%016llx\t%016llx\t%016x\n"
ROW256 = "%5d\t%016llx\t%016llx\t%016llx\t%016llx\t%016x\n"


def queue_text(name, wide, slots):
    out = printk("Invalidation queue on IOMMU: %s\n", name)
    out += printk(" Base: 0x%llx\tHead: %lld\tTail: %lld\n", 0x20C000000, 3, 3)
    out += ("Index\t\tqw0\t\t\tqw1\t\t\tqw2\t\t\tqw3\t\t\tstatus\n" if wide else "Index\t\tqw0\t\t\tqw1\t\t\tstatus\n")
    for i in range(256):
        qw = slots.get(i, (0, 0, 0, 0))
        out += printk(ROW256, i, *qw, i % 4) if wide else printk(ROW128, i, qw[0], qw[1], i % 4)
    return out + "\n"


def test_invalidation_queue_128_and_256_bit():
    text = (queue_text("dmar0", False, {0: (0x2000000010, 0, 0, 0), 1: (0x200000025, 0x20C00100C, 0, 0)})
            + queue_text("dmar1", True, {2: (0x37, 0, 0x11, 0x22)}))
    narrow, wide = units = read_invalidation_queue(text, "q")
    assert units.unparsed == []
    assert (narrow.name, narrow.base, narrow.head, narrow.tail, narrow.wide) == ("dmar0", 0x20C000000, 3, 3, False)
    assert len(narrow.rows) == 256 and narrow.rows[1].qw == (0x200000025, 0x20C00100C)
    assert [r.status for r in narrow.rows[:5]] == [0, 1, 2, 3, 0]
    assert wide.wide and wide.rows[2].qw == (0x37, 0, 0x11, 0x22) and wide.rows[2].line == 261 + 3 + 2  # head, Base, header, then slots 0, 1


@pytest.mark.parametrize("mangle, needle", [
    (lambda t: t.replace("\n  255\t", "\n  256\t"), "beyond the 256-slot queue"),
    (lambda t: t[: t.index("\n   12\t") + 12], "truncated or garbled"),
    (lambda t: "", "not an invalidation_queue file"),
    (lambda t: t.replace("Head: 3", "Head: 999"), "above the 256-slot queue"),
])
def test_invalidation_queue_bad_input(mangle, needle):
    with pytest.raises(ValueError) as exc:
        read_invalidation_queue(mangle(queue_text("dmar0", False, {})), "q")
    assert needle in str(exc.value)


def test_read_debugfs_file_is_bounded_and_names_the_kind(tmp_path):
    p = tmp_path / "invalidation_queue"
    p.write_text(queue_text("dmar0", True, {}))
    kind, units = read_debugfs_file(str(p))
    assert kind == "invalidation_queue" and units[0].wide
    with pytest.raises(ValueError, match="not a debugfs file"):
        read_debugfs_file(str(tmp_path / "x\x1b"))
    big = tmp_path / "iommu_regset"
    big.write_bytes(b"x" * ((32 << 20) + 1))
    with pytest.raises(ValueError, match="MAX_DEBUGFS_BYTES"):
        read_debugfs_file(str(big))
