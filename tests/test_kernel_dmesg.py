"""vtdtui/kernel/dmesg.py and faults.py: kernel log lines written with the kernel's own
format strings (drivers/iommu/intel/dmar.c dmar_fault_do_one / dmar_fault, iommu.c
dmar_fault_dump_ptes / pgtable_walk, drivers/iommu/iommu.c) and read back, on every era."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from vtdtui.hw.faults import IRQ_REASONS, REASONS, SM_REASONS
from vtdtui.kernel import faults as kfaults
from vtdtui.kernel.dmesg import (DUMP_GEN_NEW, DUMP_GEN_OLD, ERA_54, ERA_513, ERA_514, ERA_NEW, ERA_TWO_LINE,
                                 describe_dump, log_to_json, read_kernel_log)
from vtdtui.limits import MAX_LINE_CHARS

DATA = Path(__file__).parent / "data" / "kernel"


def printk(fmt: str, *args) -> str:
    """C printf as the kernel's vsnprintf does it for these formats (%llx is %x)."""
    return re.sub(r"(%[-0-9]*)ll", r"\1", fmt) % args


# The kernel's format strings, era by era (pr_fmt "DMAR: " in front of each).
NEW_NO_PASID = "[%s NO_PASID] Request device [%02x:%02x.%d] fault addr 0x%llx [fault reason 0x%02x] %s"
NEW_PASID = "[%s PASID 0x%x] Request device [%02x:%02x.%d] fault addr 0x%llx [fault reason 0x%02x] %s"
NEW_INTR = "[INTR-REMAP] Request device [%02x:%02x.%d] fault index 0x%llx [fault reason 0x%02x] %s"
V514_NO_PASID = ("[%s NO_PASID] Request device [0x%02x:0x%02x.%d] fault addr 0x%llx "
                 "[fault reason 0x%02x] %s")
V514_PASID = "[%s PASID 0x%x] Request device [0x%02x:0x%02x.%d] fault addr 0x%llx [fault reason 0x%02x] %s"
V514_INTR = "[INTR-REMAP] Request device [0x%02x:0x%02x.%d] fault index 0x%llx [fault reason 0x%02x] %s"
V513_DMA = "[%s] Request device [%02x:%02x.%d] PASID %x fault addr %llx [fault reason %02d] %s"
V513_INTR = "[INTR-REMAP] Request device [%02x:%02x.%d] fault index %llx [fault reason %02d] %s"
V54_DMA = "[%s] Request device [%02x:%02x.%d] fault addr %llx [fault reason %02d] %s"
OLD_DMA = "DMAR:[%s] Request device [%02x:%02x.%d] fault addr %llx \nDMAR:[fault reason %02d] %s"
OLD_INTR = "INTR-REMAP: Request device [[%02x:%02x.%d] fault index %llx\nINTR-REMAP:[fault reason %02d] %s"

PREFIXES = [
    "DMAR: ",
    "[   42.123456] DMAR: ",
    "[Tue Mar  3 10:00:00 2020] DMAR: ",
    "Aug 02 09:15:01 testbox kernel: DMAR: ",
    "<3>[ 1.000000] dmar: ",
    "2024-05-01T10:00:00.123456+00:00 host kernel: Dmar: ",
]


def read(text: str):
    return read_kernel_log(text, "test.log")


def one(text: str):
    log = read(text)
    assert log.unparsed == [], log.unparsed
    assert len(log.faults) == 1, log.faults
    return log.faults[0]


def dma_line(fmt: str, write: bool, sid: int, addr: int, reason: int, pasid: int | None = None) -> str:
    kind = "DMA Write" if write else "DMA Read"
    bus, slot, fn = sid >> 8, (sid >> 3) & 0x1F, sid & 7
    text = kfaults.reason_text(reason)
    if fmt in (NEW_PASID, V514_PASID):
        return printk(fmt, kind, pasid, bus, slot, fn, addr, reason, text)
    if fmt == V513_DMA:
        return printk(fmt, kind, bus, slot, fn, 0xFFFFFFFF if pasid is None else pasid, addr, reason, text)
    return printk(fmt, kind, bus, slot, fn, addr, reason, text)


# --- every era, written with its format and read back --------------------------------

@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("fmt, era, pasid", [
    (NEW_NO_PASID, ERA_NEW, None),
    (NEW_PASID, ERA_NEW, 0x5),
    (V514_NO_PASID, ERA_514, None),
    (V514_PASID, ERA_514, 0xFFFFF),
    (V513_DMA, ERA_513, None),
    (V513_DMA, ERA_513, 0x1F),
    (V54_DMA, ERA_54, None),
])
def test_dma_fault_of_every_era_behind_every_prefix(prefix, fmt, era, pasid):
    f = one(prefix + dma_line(fmt, True, 0x3A00 | (0x1C << 3) | 5, 0x7F001000, 0x85, pasid) + "\n")
    assert (f.kind, f.access, f.bdf, f.pasid, f.addr, f.index) == ("dma", "write", "3a:1c.5", pasid, 0x7F001000, None)
    assert (f.reason, f.era, f.line) == (0x85, era, 1)
    assert f.reason_text == "SM: No write permission for Write/AtomicOp request"


@pytest.mark.parametrize("fmt, era", [(NEW_INTR, ERA_NEW), (V514_INTR, ERA_514), (V513_INTR, ERA_54)])
def test_interrupt_remapping_fault_of_every_era(fmt, era):
    f = one("[ 5.0] DMAR: " + printk(fmt, 0xF0, 0x1F, 0, 0x15, 0x26, IRQ_REASONS[0x26]))
    assert (f.kind, f.access, f.bdf, f.addr, f.index, f.pasid) == ("intr-remap", None, "f0:1f.0", None, 0x15, None)
    assert (f.reason, f.era) == (0x26, era)
    assert "source-id" in f.explain


def test_the_old_two_line_reports():
    text = ("x kernel: dmar: " + printk(OLD_DMA, "DMA Read", 0, 2, 0, 0x7FEE000, 6, "PTE Read access is not set")
            + "\nx kernel: dmar: " + printk(OLD_INTR, 0xF0, 0x1F, 0, 3, 0x22, "Present field in the IRTE entry is clear")
            + "\n")
    log = read(text)
    assert log.unparsed == []
    dma, intr = log.faults
    assert (dma.line, dma.kind, dma.access, dma.bdf, dma.addr, dma.reason, dma.era) == (
        1, "dma", "read", "00:02.0", 0x7FEE000, 0x06, ERA_TWO_LINE)
    # %02d of 0x22 prints "34"
    assert (intr.line, intr.kind, intr.index, intr.reason, intr.reason_printed) == (3, "intr-remap", 3, 0x22, "34")


def test_a_two_line_report_without_its_second_half_is_unparsed():
    first = printk(OLD_DMA, "DMA Read", 0, 2, 0, 0x1000, 6, "x").split("\n")[0]
    log = read(f"DMAR: {first}\nunrelated\nDMAR:[fault reason 06] orphan\n")
    assert log.faults == [] and log.unparsed == [1, 3]


@pytest.mark.parametrize("code", range(256))
def test_every_code_round_trips_in_decimal_and_hex_eras(code):
    # Old logs printed the hex code with %02d: the digits are its decimal value.
    for fmt in (V54_DMA, V513_DMA, NEW_NO_PASID, V514_NO_PASID):
        f = one("DMAR: " + dma_line(fmt, False, 0x0010, 0x1000, code))
        assert f.reason == code, (fmt, code)
        assert f.reason_text == kfaults.reason_text(code)
        assert f.explain


@pytest.mark.parametrize("printed, hex_era, code", [
    ("89", False, 0x59), ("06", False, 0x06), ("37", False, 0x25), ("133", False, 0x85),
    ("0x59", True, 0x59), ("0x06", True, 0x06), ("59h", True, 0x59),
    ("5a", False, None), ("300", False, None), ("0x100", True, None), ("0x59", False, None), ("", True, None),
    ("٣", False, None),
])
def test_true_reason(printed, hex_era, code):
    assert kfaults.true_reason(printed, hex_era) == code


def test_decimal_and_hex_are_told_apart_by_the_line_shape():
    old = one("DMAR: [DMA Read] Request device [00:02.0] fault addr 1000 [fault reason 89] SM: Present bit")
    new = one("DMAR: [DMA Read NO_PASID] Request device [00:02.0] fault addr 0x1000 [fault reason 0x59] SM: P")
    assert old.reason == new.reason == 0x59
    # In the v5.14+ shape the digits are hex even without 0x (nothing prints that, but it is not decimal)
    odd = one("DMAR: [DMA Read NO_PASID] Request device [00:02.0] fault addr 0x1000 [fault reason 10] x")
    assert odd.reason == 0x10


def test_pasid_minus_one_of_v5_5_to_v5_13_means_no_pasid():
    assert one("DMAR: " + dma_line(V513_DMA, False, 0x10, 0x1000, 6, None)).pasid is None
    assert "PASID ffffffff" in dma_line(V513_DMA, False, 0x10, 0x1000, 6, None)
    assert one("DMAR: " + dma_line(V513_DMA, False, 0x10, 0x1000, 6, 0)).pasid == 0


def test_unknown_codes_are_named_unknown_and_still_explained():
    for code in (0x33, 0x5F, 0x88, 0x0E, 0x1F, 0x91, 0xFF):
        f = one("DMAR: " + dma_line(NEW_NO_PASID, False, 0x10, 0x1000, code))
        assert f.reason_text == "Unknown", code
        assert "Unknown" in f.explain


def test_every_named_code_has_its_own_explanation():
    named = set(REASONS) | set(SM_REASONS) | set(IRQ_REASONS) | {0}
    missing = sorted(hex(c) for c in named if c not in kfaults.EXPLAIN)
    assert not missing
    assert len({kfaults.explain(c) for c in named}) == len(named)  # not one sentence for all
    assert "use-after-unmap" in kfaults.explain(0x06) and "attach" in kfaults.explain(0x02)
    assert "RMRR" in kfaults.explain(0x05) and "PASID" in kfaults.explain(0x59)


def test_values_that_do_not_fit_their_field_are_unparsed():
    lines = [
        "DMAR: [DMA Read] Request device [1ff:02.0] fault addr 1000 [fault reason 06] x",     # bus
        "DMAR: [DMA Read] Request device [00:20.0] fault addr 1000 [fault reason 06] x",      # slot
        "DMAR: [DMA Read] Request device [00:02.8] fault addr 1000 [fault reason 06] x",      # function
        "DMAR: [DMA Read] Request device [00:02.0] fault addr 1000 [fault reason 256] x",     # u8
        "DMAR: [DMA Read] Request device [00:02.0] fault addr 1000 [fault reason 5a] x",      # not %02d
        "DMAR: [DMA Read PASID 0x100000] Request device [00:02.0] fault addr 0x1 [fault reason 0x06] x",
        "DMAR: [DMA Read NO_PASID] Request device [00:02.0] fault addr 0x1ffffffffffffffff [fault reason 0x06] x",
        "DMAR: [INTR-REMAP] Request device [f0:1f.0] fault index 0x10000 [fault reason 0x22] x",
        "DMAR: [DMA Read NO_PASID] Request device [00:02.0] fault addr 0x1000",               # truncated
        "DMAR: DRHD: handling fault status reg zz",
        "DMAR: pte level: 2, pte value: 0x3",                                                 # no dump open
        "DMAR: dmar0: reg_base_addr fed90000 ver 1:0 cap zz ecap 0",
    ]
    log = read("\n".join(lines) + "\n")
    assert log.faults == []
    assert log.unparsed == list(range(1, len(lines) + 1))


def test_what_is_not_an_iommu_report_is_not_unparsed():
    log = read("\n".join([
        "DMAR: Host address width 39",
        "DMAR: RMRR base: 0x0000007c000000 end: 0x000000803fffff",
        "DMAR-IR: Enabled IRQ remapping in x2apic mode",
        "usb 1-2: new high-speed USB device number 3 using xhci_hcd",
        "some page fault addr elsewhere",
        "",
    ]))
    assert (log.faults, log.unparsed) == ([], [])


# --- status, units, groups --------------------------------------------------------------

def test_drhd_lines_open_a_batch():
    text = "\n".join([
        "DMAR: " + printk("DRHD: handling fault status reg %x", 0x302),
        "DMAR: " + dma_line(NEW_NO_PASID, False, 0x10, 0x1000, 6),
        "DMAR: " + dma_line(NEW_NO_PASID, True, 0x10, 0x2000, 5),
    ])
    log = read(text)
    assert [(s.line, s.fsts) for s in log.status] == [(1, 0x302)]
    assert [f.status_line for f in log.faults] == [1, 1]


def test_units_come_from_decodes_reader_and_groups_from_iommu_c():
    log = read("\n".join([
        "[0.1] DMAR: dmar1: reg_base_addr fed91000 ver 1:0 cap d2008c40660462 ecap f050da",
        "[0.2] pci 0000:00:02.0: " + printk("Adding to iommu group %d", 3),
        "[0.3] platform INT34C5:00: Adding to iommu group 17",
        "[0.4] iommu: " + printk("Adding device %s to group %d", "0000:00:1f.3", 9),
        "[0.5] pci 0000:00:02.0: Removing from iommu group 3",
        "[0.6] pci 0000:00:03.0: Failed to add to iommu group 4: -22",
    ]))
    assert [(u.name, u.cap, u.line) for u in log.units] == [("dmar1", 0xD2008C40660462, 1)]
    assert [(g.line, g.device, g.group, g.added) for g in log.groups] == [
        (2, "0000:00:02.0", 3, True), (3, "INT34C5:00", 17, True), (4, "0000:00:1f.3", 9, True),
        (5, "0000:00:02.0", 3, False)]
    assert log.unparsed == [] and log.faults == []


# --- dumps: both string generations ---------------------------------------------------------

def _dump_lines_2022_legacy(iova):
    # iommu.c ≈v5.17-v6.12, legacy mode; the root entry's format has no newline.
    return ["DMAR: " + printk("Dump %s table entries for IOVA 0x%llx", "dmar0", iova),
            "DMAR: " + printk("root entry: 0x%016llx", 0x10A3C5001),
            "DMAR: " + printk("context entry: hi 0x%016llx, low 0x%016llx", 0x301, 0x10B7E2001),
            "DMAR: " + printk("pte level: %d, pte value: 0x%016llx", 3, 0x10C001003),
            "DMAR: " + printk("PTE not present at level %d", 2)]


def _dump_lines_2024_sm(iova):
    entries = [0x49, 0x7, 0x112380001, 0, 0, 0, 0, 0]
    return (["DMAR: " + printk("Dump %s table entries for IOVA 0x%llx", "dmar1", iova),
             "DMAR: " + printk("scalable mode root entry: hi 0x%016llx, low 0x%016llx", 0, 0x112340001),
             "DMAR: " + printk("context entry: hi 0x%016llx, low 0x%016llx", 0, 0x112350201),
             "DMAR: " + printk("pasid dir entry: 0x%016llx", 0x112360001)]
            + ["DMAR: " + printk("pasid table entry[%d]: 0x%016llx", i, v) for i, v in enumerate(entries)]
            + ["DMAR: " + printk("pte level: %d, pte value: 0x%016llx", 4, 0x112390007),
               "DMAR: " + printk("pte level: %d, pte value: 0x%016llx", 3, 0),
               "DMAR: " + printk("page table not present at level %d", 2)])


def test_a_legacy_dump_of_the_first_generation():
    lines = ["DMAR: " + dma_line(NEW_NO_PASID, False, 0x10, 0x7F001000, 6)] + _dump_lines_2022_legacy(0x7F001000)
    f = one("\n".join(f"[ 1.{i:06d}] {s}" for i, s in enumerate(lines)))
    d = f.dump
    assert d is not None and not d.scalable and d.unit == "dmar0" and d.iova == 0x7F001000
    assert (d.root, d.context_hi, d.context_lo) == (0x10A3C5001, 0x301, 0x10B7E2001)
    assert d.ptes == [(3, 0x10C001003)] and d.notes == ["PTE not present at level 2"]
    assert d.generation == DUMP_GEN_OLD and d.lines == [2, 3, 4, 5, 6]
    text = "\n".join(describe_dump(d))
    assert "present, context table 0x10a3c5000" in text and "DID 3 AW 1 (3-level, 39-bit)" in text


def test_a_scalable_dump_of_the_second_generation_json():
    lines = ["DMAR: " + dma_line(NEW_PASID, True, 0x3A00, 0x7F001000, 0x85, 5)] + _dump_lines_2024_sm(0x7F001000)
    log = read("\n".join(lines))
    assert log.unparsed == []
    d = log_to_json(log)["faults"][0]["dump"]
    assert d["root"] == "0x0000000112340001" and d["root_hi"] == "0x0000000000000000"
    assert (d["context_hi"], d["context_lo"]) == ("0x0000000000000000", "0x0000000112350201")
    assert d["ptes"][:2] == [{"level": 4, "value": "0x0000000112390007"}, {"level": 3, "value": "0x0000000000000000"}]
    assert d["pasid_dir"] == "0x0000000112360001" and d["pasid_entry"][0] == "0x0000000000000049"
    assert (d["mode"], d["generation"], d["notes"]) == ("scalable", DUMP_GEN_NEW, ["page table not present at level 2"])
    # PGTT 1 in val[0]: the walk is first-stage, its entries decoded as such
    assert any("first-stage" in s for s in describe_dump(log.faults[0].dump))


def test_a_dump_line_merged_with_the_next_is_read_whole():
    # "root entry: 0x%016llx" has no "\n": a log may show the next statement on its line.
    text = "\n".join(["DMAR: " + dma_line(NEW_NO_PASID, False, 0x10, 0x1000, 2),
                      "DMAR: Dump dmar0 table entries for IOVA 0x1000",
                      "DMAR: root entry: 0x0000000104d00001DMAR: context entry: hi 0x0000000000000000, low 0x0"])
    d = one(text).dump
    assert (d.root, d.context_hi, d.context_lo) == (0x104D00001, 0, 0)


def test_a_dump_for_another_address_is_not_attached():
    text = "\n".join(["DMAR: " + dma_line(NEW_NO_PASID, False, 0x10, 0x1000, 6)] + _dump_lines_2022_legacy(0x2000))
    log = read(text)
    assert log.faults[0].dump is None and len(log.orphan_dumps) == 1 and log.unparsed == []


# --- the sample logs ------------------------------------------------------------------------

@pytest.mark.parametrize("name, faults, unparsed", [
    ("era-new.dmesg", [(13, "00:02.0", 0x06), (22, "3a:00.0", 0x85), (39, "f0:1f.0", 0x22), (41, "00:14.0", 0x02)], []),
    ("era-514.log", [(3, "02:00.1", 0x05), (4, "00:02.0", 0x59), (5, "f0:1f.0", 0x26)], []),
    ("era-513.log", [(2, "00:02.0", 0x06), (3, "00:02.0", 0x59), (4, "f0:1f.0", 0x25)], []),
    ("era-54.dmesg", [(2, "02:00.0", 0x05), (3, "00:1f.2", 0x0C), (4, "f0:1f.0", 0x22)], []),
    ("two-line.log", [(2, "00:02.0", 0x06), (4, "f0:1f.0", 0x22)], []),
    ("dump-old.dmesg", [(2, "00:02.0", 0x71), (17, "00:17.0", 0x02)], []),
    ("unparsed.dmesg", [(2, "00:02.0", 0x06)], [1, 3, 4, 5, 6, 7, 8, 9, 12, 13]),
    ("no-faults.dmesg", [], []),
])
def test_sample_logs(name, faults, unparsed):
    log = read_kernel_log((DATA / name).read_text(), name)
    assert [(f.line, f.bdf, f.reason) for f in log.faults] == faults
    assert log.unparsed == unparsed


# --- bad input ------------------------------------------------------------------------------

def test_binary_garbage_never_crashes():
    rng = random.Random(18)
    good = "DMAR: " + dma_line(NEW_NO_PASID, False, 0x10, 0x1000, 6)
    for _ in range(200):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        text = (blob + b"\n" + good.encode() + b"\n" + blob).decode("utf-8", "replace")
        log = read(text)
        assert [f.reason for f in log.faults] == [6] or any(f.reason == 6 for f in log.faults)


def test_mutated_fault_lines_never_crash():
    rng = random.Random(5)
    base = "[ 1.0] DMAR: " + dma_line(NEW_PASID, True, 0x3A00, 0x7F001000, 0x85, 5)
    for _ in range(2000):
        chars = list(base)
        for _ in range(rng.randrange(1, 4)):
            chars[rng.randrange(len(chars))] = rng.choice("0x[]:.\x00\x1b fF9 ")
        read("".join(chars))  # any outcome but an exception


def test_a_long_line_is_looked_at_not_searched():
    long_fault = "DMAR: " + "x" * MAX_LINE_CHARS + dma_line(NEW_NO_PASID, False, 0x10, 0x1000, 6)
    long_other = "y" * (MAX_LINE_CHARS * 2)
    log = read(long_other + "\n" + long_fault + "\nDMAR: " + "request device " * 2000 + "\n")
    assert log.faults == [] and log.unparsed == [3]


def test_control_characters_in_kept_text_are_escaped_in_the_description():
    text = "\n".join(["DMAR: " + dma_line(NEW_NO_PASID, False, 0x10, 0x1000, 6),
                      "DMAR: Dump dm\x1b[2Jar0 table entries for IOVA 0x1000"])
    f = one(text)
    assert f.dump is not None and "\x1b" not in f.dump.unit
    assert not any("\x1b" in s for s in describe_dump(f.dump))


def test_the_reader_is_linear_on_a_large_log():
    import time
    line = "[ 1.000000] DMAR: " + dma_line(NEW_NO_PASID, False, 0x10, 0x1000, 6) + "\n"
    text = line * 20000 + ("[ 1.0] filler line of an ordinary boot\n" * 100000)
    start = time.perf_counter()
    log = read(text)
    assert len(log.faults) == 20000
    assert time.perf_counter() - start < 20


def test_the_format_strings_here_are_the_kernels():
    # Guard against a typo in the formats above making every test agree with itself.
    assert re.fullmatch(r"\[DMA Read NO_PASID\] Request device \[00:02\.0\] fault addr 0x1000 "
                        r"\[fault reason 0x06\] PTE Read access is not set",
                        dma_line(NEW_NO_PASID, False, 0x10, 0x1000, 6))
    assert dma_line(V54_DMA, False, 0x10, 0x1000, 0x59).endswith("fault addr 1000 [fault reason 89] "
                                                                  "SM: Present bit in PASID Table Entry is clear")
