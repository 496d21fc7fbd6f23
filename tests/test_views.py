"""The core views (vtdtui/views/): a Machine turned into plain lines of (text, token).

Every expectation below is derived by hand from the scenarios (DESIGN.md's tables),
the VT-d entry formats and the journal the commands produce, never read back from
the view under test.  Numbers worth knowing:

- desktop: RAM at HPA 0x100000000 (IOVA = GPA); dmar1 CAP 0xd2008c40660462 gives
  SAGAW 0x4 (4-level, 48-bit), MGAW 0x26 (39-bit), SLLPS 0x3 (2M and 1G pages);
  ECAP 0xf050da gives C=0, QI=1, SC=1.  Domains get DID 2 on each unit (DIDs 0 and 1
  are reserved), so a context entry's high word is DID << 8 | AW 2 = 0x202.
- a 4K leaf written by the driver is HPA | SNP (bit 11, when SC) | W | R; a 2M leaf
  also has PS (bit 7).
"""

from __future__ import annotations

import json

import pytest

from vtdtui.hw.memory import MemoryError_, PhysMem
from vtdtui.machine import Machine
from vtdtui.machine.state import to_json
from vtdtui.sw.journal import Journal
from vtdtui.views import caches, graph, registers, status, tables
from vtdtui.views.ioptes import PteTree
from vtdtui.views.journal import (
    FilterError, JournalFilter, JournalSearch, JournalView, SearchError, check_search, device_of, row_line, search,
    search_pattern,
)
from vtdtui.views.prompts import PROMPTS, check_filter
from vtdtui.views.style import TOKENS, Line, badge, plain, text_of

NIC = 0x200  # 02:00.0, desktop group 5
NVME = 0x100  # 01:00.0, desktop group 4
IGPU = 0x010  # 00:02.0, desktop group 0

# ----------------------------------------------------------------------------- helpers


def machine(scenario: str, *commands: str) -> Machine:
    m = Machine.from_scenario(scenario)
    for c in commands:
        m.execute(c)
    return m


def texts(lines) -> list[str]:
    """Text of each line; accepts Lines, tables.Row or ioptes.PteRow."""
    return [text_of(getattr(x, "line", x)) for x in lines]


def having(lines, needle: str) -> list[Line]:
    return [getattr(x, "line", x) for x in lines if needle in text_of(getattr(x, "line", x))]


def the(lines, needle: str) -> Line:
    """The single line containing `needle`."""
    found = having(lines, needle)
    assert len(found) == 1, f"{len(found)} lines contain {needle!r}:\n" + "\n".join(texts(lines))
    return found[0]


def tok(line: Line, needle: str) -> str:
    """The token of the (first) segment whose text contains `needle`."""
    for text, token in line:
        if needle in text:
            return token
    raise AssertionError(f"no segment contains {needle!r} in {line!r}")


def field_row(lines, name: str) -> Line:
    """The CAP/ECAP field row of the registers pane for field `name`."""
    found = [x for x in lines if x and x[0] == (f"  {name:<7}", "key")]
    assert len(found) == 1, f"{len(found)} rows for field {name}"
    return found[0]


def badges(line: Line) -> dict[str, str]:
    """{"CM": "badge-off", ...} from a badge line."""
    return {text.split()[0]: token for text, token in line if token.startswith("badge")}


def pte_rows(m: Machine, unit: str, sid: int, tree: PteTree | None = None, first_path: bool = True):
    """(tree, rows) for the device's page tables, opened as the TUI opens them."""
    u = m.units[unit]
    ce = tables.context_entry(m, unit, sid)
    assert ce is not None, f"{unit} has no present context entry for {sid:#x}"
    tree = tree if tree is not None else PteTree()
    if first_path:
        tree.expand_first_path(ce.slptptr, ce.levels, u.cpu_read_q)
    return tree, tree.rows(ce.slptptr, ce.levels, u.cpu_read_page, u.hw_read_page)


def context_addr(m: Machine, unit: str, sid: int) -> int:
    """Address of the context entry for sid, from the root entry the view shows."""
    bus_row = next(r for r in tables.root_rows(m, unit) if r.key == sid >> 8)
    ctp = int(text_of(bus_row.line).split("CTP ")[1].split()[0], 16)
    return ctp + (sid & 0xFF) * 16


def all_view_lines(m: Machine) -> list[Line]:
    out: list[Line] = []
    for name in m.units:
        out += registers.registers(m, name)
        out += caches.cache_lines(m, name)
        for r in tables.root_rows(m, name):
            out.append(r.line)
            if r.key is not None:
                out += [c.line for c in tables.context_rows(m, name, r.key)]
    out += graph.graph_lines(m)
    out += status.vm_lines(m)
    return out


# ----------------------------------------------------------------------------- style


def test_text_of_joins_segments_and_plain_makes_one_segment():
    assert text_of((("ab", "dim"), ("", "on"), ("c", ""))) == "abc"
    assert plain("hello", "warn") == (("hello", "warn"),)
    assert plain("x") == (("x", ""),)


def test_badge_text_and_tokens():
    assert badge("CM", True) == (" CM 1 ", "badge-on")
    assert badge("SC", False) == (" SC 0 ", "badge-off")


@pytest.mark.parametrize("scenario, commands", [
    ("desktop", ["toggle dmar1 CM", "attach 0", "attach 5", "map 5 0x100000 64K", "dma 5 0x100000",
                 "dma 5 0x900000", "dma 6 0x0", "set skip-clflush on", "attach 4"]),
    ("viommu", ["set qemu-force on", "toggle dmar0 CM", "attach 3", "map 3 0x100000 16K"]),
    ("server", ["map 3 0x100000 64K", "dma 3 0x100000", "unmap 3 0x100000 64K"]),
])
def test_every_view_uses_only_declared_tokens(scenario, commands):
    m = machine(scenario, *commands)
    used = {t for line in all_view_lines(m) for _, t in line}
    assert used <= set(TOKENS), used - set(TOKENS)


# ----------------------------------------------------------------------------- registers


def test_registers_header_marks_the_shown_unit():
    m = machine("desktop")
    lines = registers.registers(m, "dmar1")
    assert text_of(lines[0]) == "units  dmar0  ▶dmar1  ([ ] to switch)"
    assert tok(lines[0], "▶dmar1") == "sel"
    assert tok(lines[0], "dmar0") == "dim"
    assert text_of(lines[1]) == "dmar1 · host · base 0xfed91000 · 39-bit MGAW"


def test_guest_unit_header_says_emulated_by_qemu():
    m = machine("viommu")
    lines = registers.registers(m, "dmar0")
    assert text_of(lines[1]).startswith("dmar0 · guest · base 0xfed90000")
    assert text_of(lines[1]).endswith(" · emulated by QEMU")
    assert "emulated" not in text_of(registers.registers(m, "host-dmar1")[1])


def test_badges_of_the_desktop_units():
    m = machine("desktop")
    assert text_of(registers.unit_badges(m, "dmar1")) == " CM 0   C 0   SC 1   RWBF 0   PSI 1   QI 1  "
    assert badges(registers.unit_badges(m, "dmar1")) == {
        "CM": "badge-off", "C": "badge-off", "SC": "badge-on", "RWBF": "badge-off", "PSI": "badge-on", "QI": "badge-on"}
    # dmar0: no SC, no C, no PSI
    assert badges(registers.unit_badges(m, "dmar0")) == {
        "CM": "badge-off", "C": "badge-off", "SC": "badge-off", "RWBF": "badge-off", "PSI": "badge-off", "QI": "badge-on"}
    # the badges line is the third line of the registers pane
    assert registers.registers(m, "dmar1")[2] == registers.unit_badges(m, "dmar1")


def test_viommu_guest_unit_has_cm_badge_on():
    m = machine("viommu")
    assert badges(registers.unit_badges(m, "dmar0"))["CM"] == "badge-on"
    assert badges(registers.unit_badges(m, "host-dmar1"))["CM"] == "badge-off"


def test_toggle_cm_flips_only_the_cm_badge_and_undo_flips_it_back():
    m = machine("desktop")
    before = badges(registers.unit_badges(m, "dmar1"))
    m.execute("toggle dmar1 CM")
    after = badges(registers.unit_badges(m, "dmar1"))
    assert after["CM"] == "badge-on"
    assert " CM 1 " in text_of(registers.unit_badges(m, "dmar1"))
    assert {k: v for k, v in after.items() if k != "CM"} == {k: v for k, v in before.items() if k != "CM"}
    assert badges(registers.unit_badges(m, "dmar0"))["CM"] == "badge-off"  # the other unit is untouched
    m.undo()
    assert badges(registers.unit_badges(m, "dmar1")) == before


def test_cap_and_ecap_raw_values_and_multi_bit_fields():
    lines = registers.registers(machine("desktop"), "dmar1")
    assert text_of(the(lines, " CAP 0x")) == " CAP 0x00d2008c40660462"
    assert text_of(the(lines, " ECAP 0x")) == " ECAP 0x0000000000f050da"
    sagaw = text_of(field_row(lines, "SAGAW"))
    assert sagaw.split()[:3] == ["SAGAW", "0x4", "12:8"]
    assert text_of(field_row(lines, "MGAW")).split()[:3] == ["MGAW", "0x26", "21:16"]
    assert text_of(field_row(lines, "SLLPS")).split()[:3] == ["SLLPS", "0x3", "37:34"]
    assert text_of(field_row(lines, "IRO")).split()[:3] == ["IRO", "0x50", "17:8"]


def test_one_bit_field_rows_use_on_and_dim_tokens():
    lines = registers.registers(machine("desktop"), "dmar1")
    sc = field_row(lines, "SC")  # ECAP.SC = 1
    assert text_of(sc).split()[:3] == ["SC", "1", "7"]
    assert tok(sc, "1 ") == "on"
    c = field_row(lines, "C")  # ECAP.C = 0
    assert text_of(c).split()[:3] == ["C", "0", "0"]
    assert tok(c, "0 ") == "dim"
    cm = field_row(lines, "CM")
    assert text_of(cm).split()[:3] == ["CM", "0", "7"]


def test_toggle_shows_in_the_raw_register_and_the_field_row():
    m = machine("desktop", "toggle dmar1 C")
    lines = registers.registers(m, "dmar1")
    assert text_of(the(lines, " ECAP 0x")) == " ECAP 0x0000000000f050db"  # bit 0 set
    c = field_row(lines, "C")
    assert text_of(c).split()[:2] == ["C", "1"]
    assert tok(c, "1 ") == "on"
    assert badges(registers.unit_badges(m, "dmar1"))["C"] == "badge-on"


def test_gsts_and_fsts_rows():
    lines = registers.registers(machine("desktop"), "dmar1")
    # translation enabled, root table pointer set, queued invalidation enabled: bits 31, 30, 26
    assert text_of(lines[3]) == " GSTS 0xc4000000 TES RTPS QIES"
    assert text_of(lines[4]) == " FSTS 0x00000000 - FRI 0"
    assert tok(lines[4], "-") == ""


def test_no_fault_lines_without_faults():
    m = machine("desktop", "attach 5", "map 5 0x100000 64K", "dma 5 0x100000")
    assert having(registers.registers(m, "dmar1"), "faults:") == []


def test_read_fault_on_an_unmapped_iova_is_listed():
    m = machine("desktop", "attach 5", "map 5 0x100000 64K", "dma 5 0x900000")
    lines = registers.registers(m, "dmar1")
    head = the(lines, "faults:")
    assert text_of(head) == " faults: 1 recorded, newest last"
    assert tok(head, "faults") == "bad"
    row = the(lines, "02:00.0 read")
    assert text_of(row) == "  02:00.0 read 0x900000 reason 0x6 PTE Read access is not set"
    assert tok(row, "02:00.0") == "bad"
    assert having(registers.registers(m, "dmar0"), "faults:") == []  # only the unit that faulted


def test_write_fault_and_context_fault_reasons():
    m = machine("desktop", "attach 5", "dma 5 0x2000 w", "dma 6 0x0")
    lines = registers.registers(m, "dmar1")
    assert text_of(the(lines, "faults:")) == " faults: 2 recorded, newest last"
    assert "  02:00.0 write 0x2000 reason 0x5 PTE Write access is not set" in texts(lines)
    # group 6 (03:00.0 Wi-Fi) is not attached: its context entry is not present
    assert "  03:00.0 read 0x0 reason 0x2 Present bit in context entry is clear" in texts(lines)


def test_only_the_three_newest_faults_are_listed():
    m = machine("desktop", "attach 5", "dma 5 0x1000", "dma 5 0x2000", "dma 5 0x3000", "dma 5 0x4000")
    lines = registers.registers(m, "dmar1")
    assert text_of(the(lines, "faults:")) == " faults: 4 recorded, newest last"
    listed = [t for t in texts(lines) if t.startswith("  02:00.0 read")]
    assert [t.split()[2] for t in listed] == ["0x2000", "0x3000", "0x4000"]


# ----------------------------------------------------------------------------- root / context tables


def test_root_rows_list_the_buses_with_devices():
    m = machine("desktop")
    rows = tables.root_rows(m, "dmar1")
    assert rows[0].key is None and "root table @ 0x" in text_of(rows[0].line)
    # dmar1's devices sit on buses 00 (host bridge, USB, ISA...), 01 (NVMe), 02 (NIC), 03 (Wi-Fi)
    assert [r.key for r in rows[1:]] == [0, 1, 2, 3]
    assert [r.key for r in tables.root_rows(m, "dmar0")[1:]] == [0]  # only 00:02.0


def test_root_row_encodes_ctp_with_the_present_bit():
    for r in tables.root_rows(machine("desktop"), "dmar1")[1:]:
        t = text_of(r.line)
        assert t.startswith(f"bus {r.key:02x}  P=1 CTP 0x")
        assert tok(r.line, "P=1") == "on"
        ctp = int(t.split("CTP ")[1].split()[0], 16)
        hi, lo = t.split()[-1].split(":")
        assert (int(hi, 16), int(lo, 16)) == (0, ctp | 1)
        assert ctp & 0xFFF == 0


def test_context_rows_are_empty_before_attach():
    rows = tables.context_rows(machine("desktop"), "dmar1", 2)
    assert rows[0].key is None and text_of(rows[0].line).startswith("context table of bus 02 @ 0x")
    assert texts(rows[1:]) == ["no present context entries on this bus (attach a group: g, a)"]
    assert tables.context_entry(machine("desktop"), "dmar1", NIC) is None


def test_context_rows_of_an_attached_nic():
    m = machine("desktop", "attach 5")
    rows = tables.context_rows(m, "dmar1", 2)
    assert [r.key for r in rows] == [None, NIC, NIC]
    t = text_of(rows[1].line)
    assert t.startswith("02:00.0 DID 2    TT 0 AW 2 (48-bit) SLPTPTR 0x")
    assert t.endswith("multi-level  grp 5 Ethernet controller")
    assert tok(rows[1].line, "DID") == "head"
    assert tok(rows[1].line, "SLPTPTR") == "addr"
    slptptr = int(t.split("SLPTPTR ")[1].split()[0], 16)
    # raw entry hi:lo: DID 2 << 8 | AW 2, SLPTPTR | P
    assert text_of(rows[2].line).strip() == f"{0x202:016x}:{slptptr | 1:016x}"
    ce = tables.context_entry(m, "dmar1", NIC)
    assert (ce.did, ce.slptptr, ce.levels) == (2, slptptr, 4)


def test_context_rows_of_a_two_device_group_share_the_domain():
    m = machine("desktop", "attach 2")  # 00:14.0 USB xHCI, 00:14.2 shared SRAM
    rows = [r for r in tables.context_rows(m, "dmar1", 0) if "grp" in text_of(r.line)]
    assert [r.key for r in rows] == [0xA0, 0xA2]
    assert text_of(rows[0].line).startswith("00:14.0 DID 2 ")
    assert text_of(rows[0].line).endswith("grp 2 USB xHCI")
    assert text_of(rows[1].line).startswith("00:14.2 DID 2 ")
    assert text_of(rows[1].line).endswith("grp 2 shared SRAM")


def test_context_rows_of_a_bus_without_root_entry():
    rows = tables.context_rows(machine("desktop"), "dmar1", 0x10)
    assert len(rows) == 1 and rows[0].key is None
    assert text_of(rows[0].line) == "bus 10 has no present root entry · Backspace: root table"
    assert tok(rows[0].line, "bus 10") == "warn"


def test_no_unit_reads_row_when_the_driver_flushes():
    m = machine("desktop", "attach 5", "map 5 0x100000 64K", "attach 4", "attach 0")
    for unit in ("dmar0", "dmar1"):
        rows = tables.root_rows(m, unit)
        assert having(rows, "⚠") == []
        for bus in [r.key for r in rows if r.key is not None]:
            assert having(tables.context_rows(m, unit, bus), "⚠ unit reads") == []
    assert tables.unit_view_differs(m.units["dmar1"], context_addr(m, "dmar1", NIC)) == ""


def test_skip_clflush_shows_what_the_non_coherent_unit_reads():
    m = machine("desktop", "set skip-clflush on", "attach 5")
    rows = tables.context_rows(m, "dmar1", 2)
    warn = [r for r in rows if "⚠ unit reads" in text_of(r.line)]
    assert len(warn) == 1 and warn[0].key == NIC
    # the entry never reached memory: the unit still reads zeros
    assert text_of(warn[0].line).strip() == "⚠ unit reads 0000000000000000:0000000000000000 (not flushed from the CPU cache)"
    assert warn[0].line[0][1] == "stale"
    # it follows the entry row and its raw row
    assert rows.index(warn[0]) == 3 and "grp 5" in text_of(rows[1].line)
    diff = tables.unit_view_differs(m.units["dmar1"], context_addr(m, "dmar1", NIC))
    assert diff.startswith("⚠ unit reads 0000000000000000:0000000000000000")


def test_skip_clflush_on_a_coherent_unit_shows_no_difference():
    # with ECAP.C=1 the walk snoops the CPU cache, so a skipped clflush is harmless
    m = machine("desktop", "toggle dmar1 C", "set skip-clflush on", "attach 5")
    assert having(tables.context_rows(m, "dmar1", 2), "⚠") == []


# ----------------------------------------------------------------------------- page-table tree


def test_expand_first_path_opens_the_tables_down_to_the_first_leaf():
    m = machine("desktop", "attach 5", "map 5 0x100000 16K rw")
    tree, rows = pte_rows(m, "dmar1", NIC)
    # 4-level tables; 0x100000 lies in L4[0], L3[0], L2[0], L1[256]
    assert tree.expanded == {(4, 0), (3, 0), (2, 0)}
    assert [r.key for r in rows] == [(4, 0), (3, 0), (2, 0), (1, 0x100000), (1, 0x101000), (1, 0x102000), (1, 0x103000)]
    assert [r.expandable for r in rows] == [True, True, True, False, False, False, False]
    assert text_of(rows[0].line).startswith("▾ L4[  0] 0x000000000000-0x007fffffffff RW table 0x")
    assert text_of(rows[2].line).startswith("    ▾ L2[  0] 0x000000000000-0x0000001fffff RW table 0x")


def test_4k_leaf_rows_show_size_perms_snp_output_and_raw():
    m = machine("desktop", "attach 5", "map 5 0x100000 16K rw")
    _, rows = pte_rows(m, "dmar1", NIC)
    leaves = [text_of(r.line).split() for r in rows if r.key[0] == 1]
    assert leaves[0] == ["L1[256]", "0x000000100000", "4K", "RW", "SNP", "→", "0x100100000", "0000000100100803"]
    assert leaves[3] == ["L1[259]", "0x000000103000", "4K", "RW", "SNP", "→", "0x100103000", "0000000100103803"]


def test_leaf_without_snoop_control_and_read_only_leaf():
    m = machine("desktop", "attach 0", "map 0 0x0 4K rw")  # dmar0 has no SC: no SNP bit
    _, rows = pte_rows(m, "dmar0", IGPU)
    assert text_of(rows[-1].line).split() == ["L1[", "0]", "0x000000000000", "4K", "RW", "→", "0x100000000",
                                              "0000000100000003"]
    m = machine("desktop", "attach 5", "map 5 0x100000 4K r")
    _, rows = pte_rows(m, "dmar1", NIC)
    assert text_of(rows[-1].line).split()[2:5] == ["4K", "R-", "SNP"]
    assert text_of(rows[-1].line).split()[-1] == "0000000100100801"


def test_2m_mapping_is_a_ps_leaf_at_level_2():
    m = machine("desktop", "attach 5", "map 5 0x100000 16K rw", "map 5 0x200000 2M rw")
    _, rows = pte_rows(m, "dmar1", NIC)
    big = [r for r in rows if "leaf (PS)" in text_of(r.line)]
    assert len(big) == 1
    assert big[0].key == (2, 0x200000) and not big[0].expandable
    assert text_of(big[0].line).split() == ["L2[", "1]", "0x000000200000", "2M", "leaf", "(PS)", "RW", "SNP", "→",
                                            "0x100200000", "0000000100200883"]
    assert rows.index(big[0]) == len(rows) - 1  # after L2[0]'s 4K leaves


def test_expand_first_path_stops_at_a_large_page():
    m = machine("desktop", "attach 5", "map 5 0x200000 2M rw")
    tree, rows = pte_rows(m, "dmar1", NIC)
    assert tree.expanded == {(4, 0), (3, 0)}
    assert [r.key for r in rows] == [(4, 0), (3, 0), (2, 0x200000)]


def test_toggle_collapses_and_reopens_a_table():
    m = machine("desktop", "attach 5", "map 5 0x100000 16K rw", "map 5 0x200000 2M rw")
    tree, rows = pte_rows(m, "dmar1", NIC)
    assert len(rows) == 8
    tree.toggle((2, 0))
    _, rows = pte_rows(m, "dmar1", NIC, tree, first_path=False)
    assert [r.key for r in rows] == [(4, 0), (3, 0), (2, 0), (2, 0x200000)]
    assert text_of(rows[2].line).startswith("    ▸ L2[  0]")
    tree.toggle((2, 0))
    _, rows = pte_rows(m, "dmar1", NIC, tree, first_path=False)
    assert len(rows) == 8 and text_of(rows[2].line).startswith("    ▾ L2[  0]")
    tree.toggle((4, 0))  # collapsing the top hides everything below, keeping the inner state
    _, rows = pte_rows(m, "dmar1", NIC, tree, first_path=False)
    assert texts(rows)[0].startswith("▸ L4[  0]") and len(rows) == 1
    assert (3, 0) in tree.expanded


def test_a_closed_tree_shows_only_the_top_level():
    m = machine("desktop", "attach 5", "map 5 0x100000 4K")
    _, rows = pte_rows(m, "dmar1", NIC, first_path=False)
    assert [r.key for r in rows] == [(4, 0)]


def test_empty_domain_has_no_rows_and_nothing_to_expand():
    m = machine("desktop", "attach 5")
    tree, rows = pte_rows(m, "dmar1", NIC)
    assert tree.expanded == set() and rows == []


def test_unreadable_memory_reads_as_empty():
    def read(addr):
        raise MemoryError_("outside memory")

    tree = PteTree()
    tree.expand_first_path(0x1000, 4, read)
    assert tree.expanded == set()
    small = PhysMem(0x1000)  # the table at 0x1000 lies beyond it
    assert small.read_page(0x1000) == [0] * 512
    assert tree.rows(0x1000, 4, small.read_page, small.read_page) == []


def test_no_unit_reads_rows_when_the_driver_flushes():
    m = machine("desktop", "attach 5", "map 5 0x100000 4K", "map 5 0x101000 4K", "unmap 5 0x101000 4K")
    _, rows = pte_rows(m, "dmar1", NIC)
    assert having(rows, "⚠") == []
    assert having(rows, "not present") == []  # cleared in memory too: the slot is not listed


def test_skip_clflush_unmap_leaves_the_entry_visible_to_the_unit():
    m = machine("desktop", "attach 5", "map 5 0x100000 4K", "map 5 0x101000 4K", "set skip-clflush on",
                "unmap 5 0x101000 4K")
    _, rows = pte_rows(m, "dmar1", NIC)
    np_ = [r for r in rows if r.key == (1, 0x101000)]
    assert [text_of(r.line).strip() for r in np_] == [
        "L1[257] 0x000000101000 not present",
        "⚠ the unit reads 0000000100101803: the write is not yet visible to it",
    ]
    assert tok(np_[0].line, "not present") == "np"
    assert np_[1].line[0][1] == "stale" and not np_[1].expandable
    assert having(rows, "L1[256]")  # the other page is untouched


def test_skip_clflush_map_shows_every_new_level_unseen():
    m = machine("desktop", "set skip-clflush on", "attach 4", "map 4 0x0 4K")
    _, rows = pte_rows(m, "dmar1", NVME)
    warn = [r.key for r in rows if "⚠ the unit reads 0000000000000000" in text_of(r.line)]
    assert warn == [(4, 0), (3, 0), (2, 0), (1, 0)]


def test_expand_first_path_skips_tables_emptied_by_unmap():
    m = machine("desktop", "attach 5", "map 5 0x100000 4K", "unmap 5 0x100000 4K", "map 5 0x40000000 4K")
    _, rows = pte_rows(m, "dmar1", NIC)
    # the only leaf: L4[0] → L3[1] → L2[0] → L1[0] at IOVA 0x40000000
    assert any(r.key == (1, 0x40000000) for r in rows), "\n".join(texts(rows))


def test_tree_keys_survive_undo():
    m = machine("desktop", "attach 5", "map 5 0x100000 16K", "map 5 0x200000 2M")
    tree, _ = pte_rows(m, "dmar1", NIC)
    tree.toggle((2, 0))
    _, before = pte_rows(m, "dmar1", NIC, tree, first_path=False)
    m.execute("dma 5 0x100000")
    m.undo()
    _, after = pte_rows(m, "dmar1", NIC, tree, first_path=False)
    assert texts(after) == texts(before)


# ----------------------------------------------------------------------------- caches


def test_caches_empty_after_attach():
    lines = caches.cache_lines(machine("desktop", "attach 5"), "dmar1")
    assert texts(lines) == [
        "dmar1 context cache 0 · IOTLB 0/1024 · none stale · negative entries not cached",
        "context cache", "  (empty)", "IOTLB", "  (empty)",
    ]


def test_dma_fills_context_cache_and_iotlb():
    m = machine("desktop", "attach 5", "map 5 0x100000 64K rw", "dma 5 0x100000")
    lines = caches.cache_lines(m, "dmar1")
    assert text_of(lines[0]) == "dmar1 context cache 1 · IOTLB 1/1024 · none stale · negative entries not cached"
    slptptr = tables.context_entry(m, "dmar1", NIC).slptptr
    ctx = the(lines, "02:00.0 DID")
    assert text_of(ctx) == f"  02:00.0 DID 2    {0x202:016x}:{slptptr | 1:016x}"
    tlb = the(lines, "  DID 2 ")
    assert text_of(tlb).split() == ["DID", "2", "0x000000100000+4K", "→", "0x100100000", "RW", "SNP", "(02:00.0)"]
    assert tok(tlb, "RW") == "on"
    assert having(lines, "stale:") == []


def test_iotlb_entry_of_a_large_page_and_of_a_non_snooping_unit():
    m = machine("desktop", "attach 5", "map 5 0x200000 2M", "dma 5 0x234000 w")
    assert "0x000000200000+2M   → 0x100200000 RW SNP" in text_of(the(caches.cache_lines(m, "dmar1"), "  DID 2 "))
    m = machine("desktop", "attach 0", "map 0 0x0 4K r", "dma 0 0x0")
    assert text_of(the(caches.cache_lines(m, "dmar0"), "  DID 2 ")).split() == [
        "DID", "2", "0x000000000000+4K", "→", "0x100000000", "R-", "(00:02.0)"]


def test_cm0_does_not_cache_not_present_entries():
    m = machine("desktop", "attach 5", "dma 5 0x900000", "dma 6 0x0")
    lines = caches.cache_lines(m, "dmar1")
    assert text_of(lines[0]).endswith("negative entries not cached")
    assert having(lines, "NP") == []
    assert text_of(lines[-1]) == "  (empty)"


def test_cm1_caches_not_present_entries_as_np():
    m = machine("desktop", "toggle dmar1 CM", "attach 5", "map 5 0x100000 64K", "dma 5 0x900000", "dma 6 0x0")
    lines = caches.cache_lines(m, "dmar1")
    assert text_of(lines[0]) == ("dmar1 context cache 2 · IOTLB 1/1024 · none stale · "
                                 "negative entries cached (CM=1)")
    ctx = the(lines, "03:00.0")
    assert text_of(ctx) == "  03:00.0 NP  cached not-present: fault 0x2 Present bit in context entry is clear"
    assert tok(ctx, "NP") == "np"
    tlb = the(lines, "0x000000900000")
    assert text_of(tlb) == "  DID 2    0x000000900000+4K   NP cached not-present: fault 0x6"
    assert tok(tlb, "NP") == "np"


def test_qemu_emulated_unit_caches_no_negatives_even_with_cm1():
    m = machine("viommu", "attach 2", "dma 2 0x900000", "dma 1 0x0")
    lines = caches.cache_lines(m, "dmar0")
    assert text_of(lines[0]).endswith("negative entries not cached")
    assert having(lines, "NP") == []


def test_skipped_caching_mode_invalidation_leaves_negative_entries_stale():
    m = machine("desktop", "toggle dmar1 CM", "attach 5", "dma 5 0x900000", "dma 6 0x0",
                "set skip-invalidation on", "map 5 0x900000 4K", "attach 6")
    lines = caches.cache_lines(m, "dmar1")
    assert text_of(lines[0]) == "dmar1 context cache 2 · IOTLB 1/1024 · 2 stale · negative entries cached (CM=1)"
    assert tok(lines[0], "2 stale") == "stale"
    t = texts(lines)
    # each stale entry is followed by the reason
    for entry in ("  03:00.0 NP", "  DID 2    0x000000900000+4K   NP"):
        i = next(k for k, x in enumerate(t) if x.startswith(entry))
        assert t[i + 1] == "    ✗ stale: now present in memory; still cached as not present"
        assert lines[i + 1][0][1] == "stale"


def test_caching_mode_invalidation_removes_negative_entries():
    m = machine("desktop", "toggle dmar1 CM", "attach 5", "dma 5 0x900000", "dma 6 0x0",
                "map 5 0x900000 4K", "attach 6")
    lines = caches.cache_lines(m, "dmar1")
    assert "none stale" in text_of(lines[0])
    assert having(lines, "NP") == [] and having(lines, "✗") == []


def test_skip_invalidation_does_not_skip_the_unmap_flush():
    # The what-if only skips caching-mode (not-present → present) invalidations;
    # the unmap's page-selective invalidation is still issued, so nothing goes stale.
    m = machine("desktop", "attach 5", "map 5 0x100000 64K", "dma 5 0x100000", "set skip-invalidation on",
                "unmap 5 0x100000 64K")
    lines = caches.cache_lines(m, "dmar1")
    assert text_of(lines[0]).startswith("dmar1 context cache 1 · IOTLB 0/1024 · none stale")


def test_lazy_unmap_leaves_a_stale_iotlb_entry_until_the_flush_queue_fires():
    m = machine("server", "map 3 0x100000 4K rw", "dma 3 0x100000", "unmap 3 0x100000 4K")
    lines = caches.cache_lines(m, "dmar0")
    assert "IOTLB 1/1024 · 1 stale" in text_of(lines[0])
    t = texts(lines)
    i = next(k for k, x in enumerate(t) if "0x000000100000+4K" in x)
    # server runs scalable mode: the entry is tagged with the PASID (RID_PASID 0) too.
    assert t[i].split()[:7] == ["DID", "5", "PASID", "0", "0x000000100000+4K", "→", "0x100100000"]
    assert t[i + 1] == "    ✗ stale: memory now says not present"
    m.execute("flush-queue")
    assert "IOTLB 0/1024 · none stale" in text_of(caches.cache_lines(m, "dmar0")[0])


def test_lazy_unmap_then_remap_read_only_names_the_new_translation():
    m = machine("server", "map 3 0x100000 4K rw", "dma 3 0x100000", "unmap 3 0x100000 4K", "map 3 0x100000 4K r")
    assert "    ✗ stale: memory now maps 0x100000 to 0x100100000 (R-)" in texts(caches.cache_lines(m, "dmar0"))


# ----------------------------------------------------------------------------- graph


def test_graph_of_a_fresh_desktop():
    lines = graph.graph_lines(machine("desktop"))
    t = texts(lines)
    assert t[0] == "KVM VM · noncoherent DMA count 0 · WBINVD no-op · RAM WB|IPAT"
    assert tok(lines[0], "0") == "on"
    assert t[2] == "└─ VFIO container (mainline) · VFIO_DMA_CC_IOMMU yes"
    assert "domain" not in " ".join(t)
    assert t[-2] == "├─ dmar0 host  CM 0   C 0   SC 0  · detached: 0"
    assert t[-1] == "└─ dmar1 host  CM 0   C 0   SC 1  · detached: 1, 2, 3, 4, 5, 6"


def test_graph_igpu_and_nic_show_the_noncoherent_chain():
    m = machine("desktop", "attach 0", "attach 5")
    lines = graph.graph_lines(m)
    t = texts(lines)
    kvm = lines[0]
    assert t[0] == "KVM VM · noncoherent DMA count 1 · WBINVD emulated · RAM WB"
    assert tok(kvm, "1") == "warn" and tok(kvm, "emulated") == "warn"
    assert "why: group 0 sits behind dmar0" in t[1] and lines[1][0][1] == "warn"
    assert "VFIO_DMA_CC_IOMMU no" in t[2] and tok(lines[2], "VFIO_DMA_CC_IOMMU") == "warn"
    g0 = next(i for i, x in enumerate(t) if "group 0 ─ 00:02.0 integrated GPU" in x)
    g5 = next(i for i, x in enumerate(t) if "group 5 ─ 02:00.0 Ethernet controller" in x)
    # each group hangs under its own domain line
    assert "dmar0 DID 2" in t[g0 - 1] and "⚠ non-coherent" in t[g0 - 1]
    assert tok(lines[g0 - 1], "⚠ non-coherent") == "warn"
    assert "dmar1 DID 2" in t[g5 - 1] and "enforce_cache_coherency (SNP set)" in t[g5 - 1]
    assert tok(lines[g5 - 1], "enforce_cache_coherency") == "on"
    assert len(having(lines, "· 0 pages ·")) == 2


def test_graph_marks_the_selected_group():
    m = machine("desktop", "attach 0", "attach 5", "select-group 5")
    lines = graph.graph_lines(m)
    assert tok(the(lines, "group 5 ─"), "group 5") == "sel"
    assert "▶group 5" in text_of(the(lines, "group 5 ─"))
    assert tok(the(lines, "group 0 ─"), "group 0") == "key"
    assert "▶" not in text_of(the(lines, "group 0 ─"))
    assert tok(the(lines, "dmar1 host"), "dmar1") == "sel"


def test_graph_mainline_keeps_igpu_and_nic_apart_prefer_reuse_joins_them():
    main = graph.graph_lines(machine("desktop", "attach 0", "attach 5"))
    assert len(having(main, " DID 2 · ")) == 2
    reuse = graph.graph_lines(machine("desktop", "set reuse prefer-reuse", "attach 0", "attach 5"))
    dom = the(reuse, " DID 2")
    assert "dmar0 DID 2, dmar1 DID 2" in text_of(dom) and "⚠ non-coherent" in text_of(dom)
    t = texts(reuse)
    i = t.index(text_of(dom))
    assert "group 0 ─" in t[i + 1] and t[i + 1].lstrip("│ ").startswith("├─")
    assert "group 5 ─" in t[i + 2] and t[i + 2].lstrip("│ ").startswith("└─")
    assert "VFIO container (prefer-reuse)" in t[2]


def test_graph_mainline_reuses_a_domain_of_equal_coherency():
    # groups 4 and 5 both sit behind dmar1 (SC=1): mainline shares one domain as well
    for policy in ("mainline", "prefer-reuse"):
        lines = graph.graph_lines(machine("desktop", f"set reuse {policy}", "attach 4", "attach 5"))
        t = texts(lines)
        doms = [i for i, x in enumerate(t) if "dmar1 DID 2" in x]
        assert len(doms) == 1, policy
        assert "group 4 ─ 01:00.0 NVMe SSD" in t[doms[0] + 1]
        assert "group 5 ─ 02:00.0 Ethernet controller" in t[doms[0] + 2]
        assert t[-1].endswith("detached: 1, 2, 3, 6")


def test_graph_counts_mapped_pages():
    lines = graph.graph_lines(machine("desktop", "attach 5", "map 5 0x100000 64K"))
    assert "· 16 pages ·" in text_of(the(lines, "dmar1 DID 2"))


def test_graph_multi_device_group_lists_its_devices():
    t = texts(graph.graph_lines(machine("desktop", "attach 2")))
    i = next(k for k, x in enumerate(t) if x.rstrip().endswith("group 2"))
    assert t[i + 1].endswith("├─ 00:14.0 USB xHCI")
    assert t[i + 2].endswith("└─ 00:14.2 shared SRAM")


def test_graph_viommu_shows_the_host_group_and_the_guest_unit():
    lines = graph.graph_lines(machine("viommu"))
    t = texts(lines)
    host = the(lines, "host group")
    assert text_of(host).endswith("host group (VM's NIC) ─ 02:00.0 assigned NIC (host)")
    i = t.index(text_of(host))
    assert "host-dmar1 DID 2" in t[i - 1] and "enforce_cache_coherency (SNP set)" in t[i - 1]
    guest = the(lines, "dmar0 guest")
    assert badges(guest) == {"CM": "badge-on", "C": "badge-off", "SC": "badge-off"}
    assert text_of(guest).endswith("detached: 0, 1, 2, 3, 4")
    assert having(lines, "kernel DMA-API domains") == []


def test_graph_viommu_guest_domain_is_a_kernel_dma_api_domain():
    lines = graph.graph_lines(machine("viommu", "attach 3", "map 3 0x100000 16K"))
    t = texts(lines)
    k = t.index("kernel DMA-API domains (owner driver)")
    assert "dmar0 DID 2 · 4 pages · guest domain: QEMU emulates the unit" in t[k + 1]
    assert t[k + 2].endswith("group 3 ─ 00:03.0 Ethernet (assigned from the host)")


def test_graph_truncates_long_detached_lists():
    m = machine("server", *[f"detach {g}" for g in range(30)])
    unit = text_of(graph.graph_lines(m)[-1])
    assert unit.startswith("└─ dmar0 host  CM 0   C 1   SC 1 ")
    assert unit.endswith("detached: " + ", ".join(map(str, range(24))) + " …")
    assert having(graph.graph_lines(m), "KVM VM") == []  # the server has no VM


# ----------------------------------------------------------------------------- status


def test_vm_lines_of_a_fresh_desktop():
    lines = status.vm_lines(machine("desktop"))
    t = texts(lines)
    assert t[:5] == ["KVM · VFIO backend type1", "  noncoherent DMA count 0  (EPT zaps 0)", "  WBINVD a no-op", "  EPT memtype RAM WB|IPAT",
                     "  EPT memtype MMIO UC"]
    assert tok(lines[1], "0") == "on"
    assert "  reuse policy mainline · domains 0" in t
    assert "  VFIO_DMA_CC_IOMMU yes" in t
    assert "  DMA mappings 0" in t
    switches = t[t.index("switches (: set OPTION VALUE, or the palette)") + 1:]
    assert [s.split()[0] for s in switches] == ["reuse", "kvm-model", "ignore-guest-pat", "vfio-flush",
                                                "virtio-noncoherent", "cr0-cd", "lazy", "skip-clflush",
                                                "skip-invalidation", "backend"]  # no QEMU on desktop
    assert having(lines, "QEMU") == []


def test_vm_lines_after_attaching_the_igpu():
    m = machine("desktop", "attach 0", "attach 5", "map 5 0x100000 64K")
    lines = status.vm_lines(m)
    assert text_of(lines[1]) == "  noncoherent DMA count 1  (EPT zaps 1)"
    assert tok(lines[1], "1") == "warn"
    assert text_of(lines[2]) == "  WBINVD emulated: flushes caches"
    assert text_of(lines[3]) == "  EPT memtype RAM WB"
    assert "  VFIO_DMA_CC_IOMMU no" in texts(lines)
    assert tok(the(lines, "VFIO_DMA_CC_IOMMU"), "no") == "warn"
    assert "  DMA mappings 1  (64K)" in texts(lines)
    assert "  reuse policy mainline · domains 2" in texts(lines)


def test_what_if_switches_are_marked_bad_when_on():
    m = machine("desktop", "set skip-clflush on", "set lazy off")
    lines = status.vm_lines(m)
    sc = the(lines, "skip-clflush")
    assert text_of(sc) == "  skip-clflush       on" and sc[1][1] == "bad"
    lazy = the(lines, "  lazy ")
    assert text_of(lazy).split() == ["lazy", "off"] and lazy[1][1] == ""
    assert the(lines, "skip-invalidation")[1] == ("off", "")


def test_server_status_has_only_the_driver_switches():
    t = texts(status.vm_lines(machine("server")))
    assert t == ["switches (: set OPTION VALUE, or the palette)", "  lazy               on",
                 "  skip-clflush       off", "  skip-invalidation  off"]


def test_viommu_with_caching_mode_keeps_the_host_shadow_in_sync():
    m = machine("viommu")
    lines = status.qemu_lines(m)
    assert texts(lines)[:3] == ["QEMU vIOMMU → host shadow", "  assigned 00:03.0 via host host-dmar1",
                                "  guest CAP.CM 1  assignment allowed"]
    ok = the(lines, "host shadow matches")
    assert text_of(ok) == "  ✓ host shadow matches the guest's tables" and ok[0][1] == "on"
    m.execute("attach 3")
    m.execute("map 3 0x100000 16K rw")
    lines = status.qemu_lines(m)
    assert "shadow 4 mapping(s)  guest maps 4" in text_of(the(lines, "traps"))
    assert having(lines, "✓ host shadow matches")
    assert having(status.vm_lines(m), "QEMU vIOMMU → host shadow")  # vm_lines includes the QEMU block


def test_viommu_forced_without_caching_mode_goes_out_of_sync():
    m = machine("viommu", "set qemu-force on", "toggle dmar0 CM", "attach 3", "map 3 0x100000 64K rw")
    lines = status.qemu_lines(m)
    cm = the(lines, "guest CAP.CM")
    assert text_of(cm) == "  guest CAP.CM 0  assignment forced (what-if)"
    assert tok(cm, "0") == "warn" and tok(cm, "forced") == "warn"
    assert "shadow 0 mapping(s)  guest maps 16" in text_of(the(lines, "traps"))
    bad = the(lines, "out of sync")
    assert text_of(bad) == "  ✗ host out of sync: 16 guest mapping(s) missing (first 0x100000)"
    assert bad[0][1] == "stale"
    assert having(lines, "✓") == []


def test_viommu_unmap_without_caching_mode_leaves_stale_shadow():
    m = machine("viommu", "attach 3", "map 3 0x100000 16K rw", "set qemu-force on", "toggle dmar0 CM",
                "unmap 3 0x100000 16K")
    assert "  ✗ host out of sync: 0 guest mapping(s) missing, 4 stale" in texts(status.qemu_lines(m))


def test_viommu_refuses_assignment_without_caching_mode():
    # QEMU will not start with caching-mode=off and a vfio-pci device; unplugged, CM may be
    # turned off, and the hot-plug of the NIC is refused while the VM runs on.
    m = machine("viommu", "device-del", "toggle dmar0 CM", "device-add")
    lines = status.qemu_lines(m)
    cm = the(lines, "guest CAP.CM")
    assert text_of(cm) == "  guest CAP.CM 0  assignment refused at hot-plug"
    assert tok(cm, "refused at hot-plug") == "bad"
    assert having(lines, "requires caching mode: Operation not supported")


def test_sentence_counts_issued_and_skipped():
    m = Machine.from_scenario("desktop")
    # attach 5, CM=0: clflush ×2, enforce-cache-coherency, domain-reuse issued;
    # ctx-np2p context + IOTLB invalidation, write-buffer flush, KVM unregister skipped
    assert status.sentence(m.execute("attach 5")) == "attached group 5 to domain 1 (DID 2) on dmar1: 4 issued, 4 skipped"
    assert status.sentence(m.execute("select-unit dmar0")) == "selected dmar0"  # no events: no counts
    assert status.sentence(m.undo()) == "undid: select-unit dmar0"


# ----------------------------------------------------------------------------- journal


def _journal(*events) -> Journal:
    j = Journal()
    for unit, actor, op, outcome, rule in events:
        j.record(unit, actor, op, outcome, rule, f"reason {len(j) + 1}")
    return j


EVENTS = (
    ("dmar1", "driver", "clflush", "issued", "clflush"),
    ("dmar1", "driver", "iotlb-invalidation", "skipped", "map-np2p"),
    ("dmar0", "vfio", "domain-reuse", "issued", "vfio-reuse"),
    ("dmar1", "driver", "context-cache-invalidation", "skipped", "ctx-np2p"),
    ("dmar0", "driver", "iotlb-invalidation", "issued", "unmap"),
)


def test_journal_view_counts_and_totals():
    v = JournalView()
    v.update(_journal(*EVENTS))
    assert v.indices == [0, 1, 2, 3, 4]
    assert v.totals() == (3, 2)
    assert v.counts[("iotlb-invalidation", "issued")] == 1 and v.counts[("iotlb-invalidation", "skipped")] == 1
    assert text_of(v.counter_line()) == (
        "decisions: issued 3 skipped 2 · filter: none · shown 5 · per op: "
        "clflush 1/0  context-cache-invalidation 0/1  domain-reuse 1/0  iotlb-invalidation 1/1  ")


def test_journal_totals_count_software_decisions_not_hw_records():
    v = JournalView()
    v.update(_journal(*EVENTS, ("dmar1", "hw", "dma", "issued", "translate")))
    assert v.totals() == (3, 2) and v.counts[("dma", "issued")] == 0 and v.records["dma"] == 1
    assert tok(v.counter_line(), "3") == "issued"
    assert text_of(v.counter_line()).endswith("· records: dma 1")  # apart from the decisions


def test_journal_view_scans_only_new_events():
    j = _journal(*EVENTS[:2])
    v = JournalView(JournalFilter(outcome="issued"))
    v.update(j)
    assert v.indices == [0] and v.totals() == (1, 1)
    v.update(j)  # nothing new: nothing counted twice
    assert v.indices == [0] and v.totals() == (1, 1)
    for e in EVENTS[2:]:
        j.record(*e[:3], e[3], e[4], "later")
    v.update(j)
    assert v.indices == [0, 2, 4] and v.totals() == (3, 2)


@pytest.mark.parametrize("text, shown", [
    ("outcome=skipped", [1, 3]),
    ("outcome=issued", [0, 2, 4]),
    ("op=iotlb", [1, 4]),
    ("op=invalidation", [1, 3, 4]),
    ("unit=DMAR0", [2, 4]),
    ("actor=vfio", [2]),
    ("actor=Driver", [0, 1, 3, 4]),
    ("rule=np2p", [1, 3]),
    ("unit=dmar1 outcome=skipped op=context", [3]),
    ("actor=kvm", []),
    ("", [0, 1, 2, 3, 4]),
])
def test_journal_filters(text, shown):
    v = JournalView(JournalFilter.parse(text))
    v.update(_journal(*EVENTS))
    assert v.indices == shown
    assert v.totals() == (3, 2)  # counters cover every event, whatever the filter
    assert f"shown {len(shown)}" in text_of(v.counter_line())


def test_set_filter_rescans_the_same_journal():
    j = _journal(*EVENTS)
    v = JournalView()
    v.update(j)
    v.set_filter(JournalFilter.parse("op=clflush"))
    v.update(j)
    assert v.indices == [0] and v.totals() == (3, 2)
    assert "filter: op=clflush · shown 1" in text_of(v.counter_line())


def test_a_shorter_journal_resets_the_scan():
    j = _journal(*EVENTS)
    v = JournalView()
    v.update(j)
    j.events = j.events[:2]
    v.update(j)
    assert v.indices == [0, 1] and v.totals() == (1, 1)


@pytest.mark.parametrize("text, message", [
    ("op", "write KEY=VALUE"),
    ("op=", "write KEY=VALUE"),
    ("colour=red", "unknown filter key 'colour'"),
    ("=dmar1", "unknown filter key ''"),
    ("outcome=maybe", "outcome is one of all, issued, skipped, not 'maybe'"),
    ("unit=dmar1 bogus", "'bogus'"),
])
def test_filter_parse_errors(text, message):
    with pytest.raises(FilterError, match=message.replace("(", r"\(")):
        JournalFilter.parse(text)
    assert issubclass(FilterError, ValueError)


def test_filter_parse_lowercases_and_keeps_the_outcome():
    f = JournalFilter.parse("OP=IOTLB Unit=DMAR1", keep_outcome="skipped")
    assert (f.outcome, f.op, f.unit, f.actor, f.rule) == ("skipped", "iotlb", "dmar1", "", "")
    assert f.describe() == "outcome=skipped op=iotlb unit=dmar1"
    assert JournalFilter.parse("outcome=ALL").describe() == "none"
    assert JournalFilter.parse("outcome=issued", keep_outcome="skipped").outcome == "issued"


def test_event_line_is_the_row_reason_first_with_kinds_apart():
    j = Journal()
    e = j.skipped("dmar1", "driver", "iotlb-invalidation", "map-np2p", "CM=0: nothing cached", "page", "DID 2")
    line = JournalView.event_line(e)
    assert line == row_line(e)
    assert text_of(line) == ("    1 skipped CM=0: nothing cached · iotlb-invalidation[page] map-np2p · dmar1 driver "
                             "· DID 2")
    assert tok(line, "skipped") == "skipped" and tok(line, "iotlb-invalidation") == "skipped"
    # A rule that only repeats the op is said once.
    c = j.issued("dmar1", "driver", "clflush", "clflush", "ECAP.C=0")
    assert "clflush clflush" not in text_of(row_line(c)) and " · clflush · " in text_of(row_line(c))
    # A hardware record reads apart from a decision: hw mark, its op not in a decision's colour.
    e2 = j.issued("dmar0", "hw", "fault", "read", "a fault")
    assert text_of(JournalView.event_line(e2)) == "    3 hw      a fault · fault read · dmar0 hw"
    assert tok(JournalView.event_line(e2), "hw") == "bad" and tok(row_line(e2), "fault read") == "head"


def test_search_pattern_takes_slashes_as_a_regex_and_the_check_refuses_a_bad_one():
    assert search_pattern("  clflush ") == ("clflush", False)
    assert search_pattern("/CM=[01]/") == ("CM=[01]", True)
    assert search_pattern("/") == ("/", False) and search_pattern("//") == ("//", False)
    ok, hint = check_search("/CM=(/")
    assert not ok and "bad regular expression 'CM=('" in hint and "position" in hint
    assert check_search("/CM=[01]/")[0] and check_search("0x100000")[0]
    assert check_search("   ") == (False, "type text to find, or /regex/")


def test_journal_search_matches_only_new_rows_as_the_journal_grows_and_wraps_around():
    m = machine("desktop", "attach 5")
    v = JournalView()
    v.update(m.journal)
    s = JournalSearch("map-np2p")
    assert s.next_row(m.journal.events, v.indices, 0, 1) is None  # nothing mapped yet
    m.execute("map 5 0x100000 64K rw")
    m.execute("map 5 0x200000 4K rw")
    v.update(m.journal)
    events = m.journal.events
    rows = s.update(events, v.indices)
    assert rows == search(events, v.indices, "map-np2p") and len(rows) == 2  # one skipped PSI per map
    first, last = rows[0], rows[-1]
    assert s.next_row(events, v.indices, first, 1) == (rows[1], False)
    assert s.next_row(events, v.indices, last, 1) == (first, True)  # past the end: from the top
    assert s.next_row(events, v.indices, first, -1) == (last, True)
    # The rows already matched are not matched again: a search over a grown journal
    # looks at the new events only (a matcher that counts its calls).
    calls = []
    s._match = lambda text: calls.append(text) or "map-np2p" in text
    before = len(v.indices)
    m.execute("dma 5 0x100000")
    v.update(m.journal)
    s.update(m.journal.events, v.indices)
    assert len(calls) == len(v.indices) - before > 0
    # A new filter is a new list of rows: the search starts over.
    v.set_filter(JournalFilter.parse("rule=wbf"))
    v.update(m.journal)
    assert s.update(m.journal.events, v.indices) == search(m.journal.events, v.indices, "map-np2p")
    with pytest.raises(SearchError):
        JournalSearch("(", regex=True)


def test_device_of_finds_who_sees_a_domain_and_none_when_nobody_does():
    m = machine("desktop", "attach 5")
    drv = m.driver_for("dmar1")
    d = m.domain_of(m.groups[5])
    assert device_of(m, "dmar1", d.id) == 0x0200
    assert device_of(m, "dmar1", max(x.id for x in drv.domains.values()) + 99) is None
    assert device_of(m, "no-such-unit", d.id) is None
    m.execute("detach 5")
    assert device_of(m, "dmar1", d.id) is None


def test_journal_view_follows_the_machine_across_undo():
    m = Machine.from_scenario("desktop")
    v = JournalView(JournalFilter.parse("unit=dmar1 outcome=skipped"))
    v.update(m.journal)
    base_shown, base_totals, mark = list(v.indices), v.totals(), len(m.journal)
    m.execute("attach 5")
    v.update(m.journal)
    # attach 5's skipped events on dmar1: ctx-np2p context + IOTLB, write-buffer flush, KVM
    assert v.indices[len(base_shown):] == [mark + 2, mark + 3, mark + 4, mark + 7]
    assert v.totals() == (base_totals[0] + 4, base_totals[1] + 4)
    m.execute("map 5 0x100000 64K")
    v.update(m.journal)
    m.undo()  # a new Journal object, shorter
    m.undo()
    m.execute("toggle dmar1 CM")  # the journal grows again, with other events
    v.update(m.journal)
    assert v.indices == base_shown
    assert v.totals() == base_totals  # the toggle is a hw record, not a software decision
    assert v.records["capability-change"] == 1
    assert v.indices == [i for i, e in enumerate(m.journal.events)
                         if e.unit == "dmar1" and e.outcome == "skipped"]


def test_journal_view_after_undo_of_one_command_equals_a_fresh_scan():
    m = machine("desktop", "attach 5", "map 5 0x100000 64K", "dma 5 0x100000")
    v = JournalView(JournalFilter.parse("op=iotlb"))
    v.update(m.journal)
    m.undo()
    m.execute("dma 5 0x200000")
    m.execute("dma 5 0x300000")  # longer than before the undo
    v.update(m.journal)
    fresh = JournalView(JournalFilter.parse("op=iotlb"))
    fresh.update(m.journal)
    assert (v.indices, v.counts) == (fresh.indices, fresh.counts)


# ----------------------------------------------------------------------------- prompts


@pytest.mark.parametrize("text, hint", [
    ("0x100000 64K rw", "map 0x100000+64K rw"),
    ("0x100000 2M", "map 0x100000+2M rw"),
    ("1048576 4096 r", "map 0x100000+4K r"),
    ("0x0 0x1000 w", "map 0x0+4K w"),
])
def test_map_prompt_accepts(text, hint):
    assert PROMPTS["map"].validate(text) == (True, hint)


@pytest.mark.parametrize("text, hint", [
    ("0x100800 4K", "IOVA 0x100800 is not 4 KiB aligned (try 0x100000)"),
    ("0x100000 0", "size 0 must be a non-zero multiple of 4K"),
    ("0x100000 6000", "size 6000 must be a non-zero multiple of 4K"),
    ("0x100000 4K x", "permissions: 'x' must be r, w or rw"),
    ("0x100000", "expected IOVA SIZE [r|w|rw]"),
    ("0x100000 4K rw extra", "expected IOVA SIZE [r|w|rw]"),
    ("", "expected IOVA SIZE [r|w|rw]"),
    ("zz 4K", "IOVA: 'zz' is not a number"),
    ("0x100000 4Q", "is not a number"),
    ("'0x100000 4K", "No closing quotation"),
])
def test_map_prompt_rejects(text, hint):
    ok, msg = PROMPTS["map"].validate(text)
    assert not ok
    assert hint in msg


def test_unmap_prompt():
    assert PROMPTS["unmap"].validate("0x100000 64K") == (True, "unmap 0x100000+64K")
    assert PROMPTS["unmap"].validate("0x100000 64K rw") == (False, "expected IOVA SIZE   e.g. 0x100000 64K")
    ok, msg = PROMPTS["unmap"].validate("0x100001 4K")
    assert not ok and "not 4 KiB aligned (try 0x100000)" in msg
    ok, msg = PROMPTS["unmap"].validate("0x100000 0K")
    assert not ok and "non-zero multiple of 4K" in msg


def test_dma_prompt():
    assert PROMPTS["dma"].validate("0x100000") == (True, "DMA read at 0x100000")
    assert PROMPTS["dma"].validate("0x100000 w") == (True, "DMA write at 0x100000")
    assert PROMPTS["dma"].validate("0x100010 r") == (True, "DMA read at 0x100010")  # a DMA needs no alignment
    ok, msg = PROMPTS["dma"].validate("0x100000 x")
    assert not ok and msg == "access: 'x' must be r or w"
    ok, msg = PROMPTS["dma"].validate("-1")
    assert not ok and "negative" in msg
    assert PROMPTS["dma"].validate("")[0] is False
    assert PROMPTS["dma"].validate("0x1 r w")[0] is False


def test_group_prompt():
    assert PROMPTS["group"].validate("5") == (True, "select group 5")
    assert PROMPTS["group"].validate(" 0x3 ") == (True, "select group 3")
    ok, msg = PROMPTS["group"].validate("five")
    assert not ok and "group: 'five' is not a number" in msg
    assert PROMPTS["group"].validate("1 2") == (False, "expected N (a group number)")


def test_command_prompt():
    # Short of the usage: the usage; once the arguments fit: what Enter runs; too many: refused.
    assert PROMPTS["command"].validate("set reuse") == (True, "usage: set OPTION VALUE")
    assert PROMPTS["command"].validate("set reuse prefer-reuse") == (True, "runs: set reuse prefer-reuse")
    assert PROMPTS["command"].validate("MAP 5") == (True, "usage: map GROUP IOVA SIZE [r|w|rw]")
    assert PROMPTS["command"].validate("map 5 0x1000 4K") == (True, "runs: map 5 0x1000 4K")
    assert PROMPTS["command"].validate("device-del") == (True, "runs: device-del")
    assert PROMPTS["command"].validate("attach 1 2") == (False, "too many arguments: usage: attach GROUP")
    ok, msg = PROMPTS["command"].validate("frobnicate 5")
    assert not ok and msg.startswith("unknown command 'frobnicate' (commands: select-unit,")


def test_prompt_commands_run_on_the_machine():
    m = Machine.from_scenario("desktop")
    m.execute(PROMPTS["group"].command(" 5 ", 0))
    assert m.selected_group == 5
    m.execute("attach 5")
    for kind, text in (("map", " 0x100000 64K rw "), ("dma", "0x100000 w"), ("unmap", "0x100000 64K")):
        ok, hint = PROMPTS[kind].validate(text)
        assert ok, hint
        cmd = PROMPTS[kind].command(text, m.selected_group)
        assert cmd == f"{kind} 5 {text.strip()}"
        m.execute(cmd)
    assert PROMPTS["command"].command("  toggle dmar1 CM ", 5) == "toggle dmar1 CM"


def test_check_filter():
    assert check_filter("   ") == (True, "empty: clear the filters")
    assert check_filter("op=iotlb outcome=skipped") == (True, "filter: outcome=skipped op=iotlb")
    ok, msg = check_filter("outcome=maybe")
    assert not ok and "outcome is one of all, issued, skipped" in msg
    ok, msg = check_filter("colour=red")
    assert not ok and "unknown filter key" in msg


def test_views_do_not_change_the_machine():
    m = machine("desktop", "toggle dmar1 CM", "attach 0", "attach 5", "map 5 0x100000 64K", "dma 5 0x100000",
                "dma 5 0x900000", "set skip-clflush on", "attach 4", "map 4 0x0 4K")
    before = json.dumps(to_json(m), sort_keys=True)
    all_view_lines(m)
    pte_rows(m, "dmar1", NIC)
    pte_rows(m, "dmar1", NVME)
    status.qemu_lines(machine("viommu"))
    assert json.dumps(to_json(m), sort_keys=True) == before


@pytest.mark.parametrize("scenario, commands", [
    ("desktop", ("attach 0", "select-group 5", "attach 5", "toggle dmar1 SC", "set reuse prefer-reuse", "attach 4",
                 "map 4 0x100000 8K", "toggle dmar0 CM", "detach 0", "select-group 2")),
    ("viommu", ("select-group 3", "attach 3", "set qemu-force on", "toggle dmar0 CM", "map 3 0x100000 4K", "detach 3")),
])
def test_cached_graph_view_always_equals_a_fresh_drawing(scenario, commands):
    # Each command's reported changes update the view in place (tests/test_incremental.py
    # holds the same against random sessions).
    m = Machine.from_scenario(scenario)
    view = graph.GraphView()
    assert list(view.lines(m)) == graph.graph_lines(m)
    for c in commands:
        changes = m.execute(c).changed
        assert list(view.lines(m, changes)) == graph.graph_lines(m), c
    assert list(view.lines(m, m.undo().changed)) == graph.graph_lines(m)


# ----------------------------------------------------------------------------- wrap (views.style)
def test_wrap_breaks_at_spaces_keeps_tokens_and_indents():
    from vtdtui.views.style import cells, wrap

    line = (("alpha beta ", "head"), ("gamma delta epsilon", "addr"))
    out = wrap(line, 12, 2)
    assert [text_of(x) for x in out] == ["alpha beta", "  gamma", "  delta", "  epsilon"]
    assert tok(out[1], "gamma") == "addr" and tok(out[0], "alpha") == "head"
    assert wrap(plain("short"), 80) == [plain("short")]
    assert cells("0x界") == 4 and all(cells(text_of(x)) <= 5 for x in wrap(plain("界界界界界"), 5))


def test_pte_rows_kept_while_the_tables_read_are_unchanged():
    """PteTree.rows returns its last rows when every table it reads holds the same
    words (a toggle, a DMA): equal to a fresh tree's after each of a run of commands
    that change tables, open and close them, and clflush or not."""
    import random

    from vtdtui.machine.machine import CommandError

    rng = random.Random(7)
    m = machine("desktop", "attach 5", "map 5 0x100000 64K")
    kept = PteTree()
    commands = ["map 5 0x200000 8K", "unmap 5 0x200000 8K", "map 5 0x40000000 2M", "unmap 5 0x100000 4K",
                "toggle dmar1 C", "toggle dmar1 C", "toggle dmar1 CM", "toggle dmar1 SC",
                "dma 5 0x100000 r", "map 5 0x101000 4K rw"]
    _, rows = pte_rows(m, "dmar1", NIC, kept)
    hits = 0
    for step in range(40):
        line = rng.choice(commands)
        try:
            m.execute(line)
        except CommandError:
            continue  # an unmap of nothing, a map over a map: refused, nothing changed
        if rng.random() < 0.3 and rows and any(r.key for r in rows):
            key = rng.choice([r.key for r in rows if r.key is not None])
            kept.toggle(key)
        before = rows
        _, rows = pte_rows(m, "dmar1", NIC, kept, first_path=False)
        fresh = PteTree(expanded=set(kept.expanded), touched=True)
        _, again = pte_rows(m, "dmar1", NIC, fresh, first_path=False)
        assert [(r.key, r.line, r.expandable) for r in rows] == [(r.key, r.line, r.expandable) for r in again], line
        hits += rows is before
    assert hits > 0  # some commands changed no table: their rows were not rebuilt
