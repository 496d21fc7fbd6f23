"""kernel/importer.py: a machine built from debugfs files and kernel logs holds each
entry read at its physical address, exactly as read; what is not read is unknown.

The debugfs folders are written by kernel/debugfs_write.py from a model machine (the
newest kernel's formats); the kernel logs are written here from the kernel's format
strings (dmar.c dmar_parse_one_drhd's unit line, dmar_fault_do_one, iommu.c
dmar_fault_dump_ptes / pgtable_walk; REFERENCE-2 §13.3) with values read from the
model's memory.  Every check compares with the original machine's memory, not with
numbers written into the test.
"""

from __future__ import annotations

import pytest

from vtdtui.hw.entries import parse_bdf
from vtdtui.hw.sm_entries import PasidEntry
from vtdtui.hw.regs import RTADDR_SMT
from vtdtui.kernel.debugfs_write import write_debugfs
from vtdtui.kernel.importer import NOT_KNOWN, ImportError_, import_machine, state_json
from vtdtui.machine import CommandError, Machine
from vtdtui.machine.state import pasid_entry_json, to_json

PAGE = ~0xFFF & ((1 << 64) - 1)


def _machine(scenario: str, *commands: str) -> Machine:
    m = Machine.from_scenario(scenario)
    for c in commands:
        m.execute(c)
    return m


@pytest.fixture(scope="module")
def desktop(tmp_path_factory):
    m = _machine("desktop", "attach 5", "map 5 0x200000 64K rw")
    d = tmp_path_factory.mktemp("desktop") / "debugfs"
    write_debugfs(m, str(d))
    return m, d


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    m = _machine("server", "map 0 0x200000 64K rw", "map 1 0x40000000 2M rw")
    d = tmp_path_factory.mktemp("server") / "debugfs"
    write_debugfs(m, str(d))
    return m, d


def _group_of(m, bdf: str) -> int:
    sid = parse_bdf(bdf)
    return next(g.spec_id for g in m.groups.values() if any(s == sid for s, _ in g.devices))


def _same_words_as(orig: Machine, imported) -> int:
    """Every word the import placed is the original's word at that address."""
    n = 0
    for e in imported.imported["entries"]:
        addr, value = int(e["address"], 16), int(e["value"], 16)
        assert orig.worlds["host"].cache.cpu_read_q(addr) == value, e
        n += 1
    return n


# ----------------------------------------------------------------------------- legacy mode


def test_desktop_debugfs_round_trip_places_every_entry_where_the_machine_holds_it(desktop):
    orig, d = desktop
    m = import_machine([str(d)])
    assert _same_words_as(orig, m) > 256       # the queues (2 x 256 slots) and the tables
    want, got = to_json(orig), state_json(m)
    for wu in want["units"]:
        gu = next(u for u in got["units"] if u["name"] == wu["name"])
        assert (gu["cap"], gu["ecap"], gu["mode"]) == (wu["cap"], wu["ecap"], wu["mode"])
        assert gu["context_entries"] == wu["context_entries"]
        # dmar_translation_struct prints rows of present context entries only: the root
        # entries of the other buses are not in it.
        buses = {int(c["bdf"][:2], 16) for c in wu["context_entries"]}
        assert gu["root_entries"] == [r for r in wu["root_entries"] if r["bus"] in buses]
        assert orig.units[wu["name"]].rtaddr == m.units[wu["name"]].rtaddr
        assert m.units[wu["name"]].rta_latched == orig.units[wu["name"]].rta_latched
    # Every leaf of the mapping, at its address, with the original's value.
    u = orig.units["dmar1"]
    dom = orig.domain_of(orig.groups[5])
    for iova in range(0x200000, 0x210000, 0x1000):
        table = dom.pgd
        for level in range(dom.levels, 0, -1):
            addr = table + ((iova >> (12 + 9 * (level - 1))) & 511) * 8
            value = u.cpu_read_q(addr)
            assert m.units["dmar1"].cpu_read_q(addr) == value != 0
            table = value & PAGE
    got_dom = next(x for x in got["domains"] if x["devices"] == ["02:00.0"])
    assert (got_dom["did"], got_dom["pgd"], got_dom["owner"], got_dom["mapped_pages"]) == (
        dom.dids["dmar1"], f"{dom.pgd:#x}", "imported", 16)
    assert "import" in got and got["import"]["sources"][0]["kind"] == "debugfs"


def test_a_dma_on_the_imported_machine_gives_the_original_hpa(desktop):
    orig, d = desktop
    m = import_machine([str(d)])
    for iova in (0x200000, 0x20F000 + 0x123):
        want = orig.execute(f"dma 5 {iova:#x} w").translation
        got = m.execute(f"dma {_group_of(m, '02:00.0')} {iova:#x} w").translation
        assert want.ok and got.ok and got.hpa == want.hpa


def test_a_walk_through_words_not_read_says_so(desktop):
    _orig, d = desktop
    m = import_machine([str(d)])
    out = m.execute(f"dma {_group_of(m, '02:00.0')} 0x300000 r")
    assert not out.translation.ok
    assert "the input did not hold" in out.message


def test_commands_that_need_the_drivers_books_are_refused(desktop):
    _orig, d = desktop
    m = import_machine([str(d)])
    g = _group_of(m, "02:00.0")
    for line in (f"attach {g}", f"detach {g}", f"map {g} 0x0 4K", f"unmap {g} 0x200000 4K", "flush-queue"):
        with pytest.raises(CommandError, match="driver's state is not known"):
            m.execute(line)
    assert NOT_KNOWN.startswith("imported machine")
    m.execute("toggle dmar1 CM")   # a hardware what-if still works
    m.undo()


def test_the_unknown_parts_are_listed(desktop):
    _orig, d = desktop
    unknown = " ".join(import_machine([str(d)]).imported["unknown"])
    assert "root entries of buses with no present context entry" in unknown
    assert "haw" in unknown and "driver's books" in unknown


# ----------------------------------------------------------------------------- scalable mode


def test_server_debugfs_round_trip_root_context_pasid_and_first_stage_entries(server):
    orig, d = server
    m = import_machine([str(d)])
    assert _same_words_as(orig, m)
    want, got = to_json(orig), state_json(m)
    wu, gu = want["units"][0], got["units"][0]
    assert gu["mode"] == wu["mode"] == "scalable"
    assert m.units["dmar0"].rta_latched & RTADDR_SMT
    assert gu["context_entries"] == wu["context_entries"]
    buses = {int(c["bdf"][:2], 16) for c in wu["context_entries"]}
    assert gu["root_entries"] == [r for r in wu["root_entries"] if r["bus"] in buses]
    # The PASID entries: val[0..2] as the machine holds them (their address is not in
    # debugfs: the PASID directory entry is not printed).
    read = {(e["bdf"], e["pasid"]): [int(v, 16) for v in e["val"]] for e in got["import"]["pasid_entries"]}
    assert len(read) == len(wu["pasid_entries"]) > 0
    want_pes = {(e["bdf"], e["pasid"]): e for e in wu["pasid_entries"]}
    for (bdf, pasid), val in read.items():
        assert pasid_entry_json(bdf, pasid, PasidEntry.decode(val + [0] * 5)) == want_pes[(bdf, pasid)]
    for wd in want["domains"]:
        gd = next(x for x in got["domains"] if x["devices"] == wd["devices"])
        assert (gd["did"], gd["pgd"], gd["stage"], gd["levels"]) == (wd["did"], wd["pgd"], wd["stage"], wd["levels"])
    # First-stage leaves of the 4K and 2M mappings, where the machine holds them.
    for bdf, iova, pages in (("10:00.0", 0x200000, 16), ("10:01.0", 0x40000000, 512)):
        gd = next(x for x in got["domains"] if x["devices"] == [bdf])
        assert gd["mapped_pages"] == pages
        walk = _fs_walk(orig.units["dmar0"], int(gd["pgd"], 16), gd["levels"], iova + 0x1000)
        assert walk[-1][1] & 1 and _fs_walk(m.units["dmar0"], int(gd["pgd"], 16), gd["levels"], iova + 0x1000) == walk
    assert any("PASID directory entry" in x for x in got["import"]["unknown"])


def _fs_walk(u, pgd: int, levels: int, iova: int) -> list[tuple[int, int]]:
    """(level, value) of each entry a first-stage walk of `iova` meets, down to its leaf."""
    out, table = [], pgd
    for level in range(levels, 0, -1):
        value = u.cpu_read_q(table + ((iova >> (12 + 9 * (level - 1))) & 511) * 8)
        out.append((level, value))
        if level == 1 or value & (1 << 7) or not value & 1:
            break
        table = value & PAGE & ~(1 << 63)
    return out


def _dump_log(orig: Machine, unit: str, bdf: str, iova: int) -> str:
    """A boot line and a fault with its dmar_fault_dump_ptes() dump, in the kernel's
    formats (dmar.c, iommu.c ≈v6.13), values from the model's memory."""
    u = orig.units[unit]
    sid = parse_bdf(bdf)
    bus, devfn = sid >> 8, sid & 0xFF
    rta = u.rta_latched & PAGE
    rlo, rhi = u.cpu_read_q(rta + bus * 16), u.cpu_read_q(rta + bus * 16 + 8)
    lines = [f"[    0.012345] DMAR: {unit}: reg_base_addr {u.base:x} ver 1:0 cap {u.cap:x} ecap {u.ecap:x}",
             f"[   12.000001] DMAR: DRHD: handling fault status reg 2",
             f"[   12.000002] DMAR: [DMA Read NO_PASID] Request device [{bdf}] fault addr {iova:#x} "
             f"[fault reason 0x05] PTE Write access is not set",
             f"[   12.000003] DMAR: Dump {unit} table entries for IOVA {iova:#x}"]
    if rta and u.rta_latched & RTADDR_SMT:
        lines.append(f"[   12.000004] DMAR: scalable mode root entry: hi 0x{rhi:016x}, low 0x{rlo:016x}")
        table = (rhi if devfn >= 0x80 else rlo) & PAGE
        ctx = table + (devfn & 0x7F) * 32
        clo, chi = u.cpu_read_q(ctx), u.cpu_read_q(ctx + 8)
        lines.append(f"[   12.000005] DMAR: context entry: hi 0x{chi:016x}, low 0x{clo:016x}")
        de = u.cpu_read_q(clo & PAGE)                # PASID 0 (IOMMU_NO_PASID): directory entry 0
        lines.append(f"[   12.000006] DMAR: pasid dir entry: 0x{de:016x}")
        val = [u.cpu_read_q((de & PAGE) + 8 * i) for i in range(8)]
        lines += [f"[   12.000007] DMAR: pasid table entry[{i}]: 0x{v:016x}" for i, v in enumerate(val)]
        pgd, levels = val[2] & PAGE, 5 if val[2] & (1 << 2) else 4
    else:
        lines.append(f"[   12.000004] DMAR: root entry: 0x{rlo:016x}")
        ctx = (rlo & PAGE) + devfn * 16
        clo, chi = u.cpu_read_q(ctx), u.cpu_read_q(ctx + 8)
        lines.append(f"[   12.000005] DMAR: context entry: hi 0x{chi:016x}, low 0x{clo:016x}")
        pgd, levels = clo & PAGE, (chi & 7) + 2
    for level, value in _fs_walk(u, pgd, levels, iova):
        lines.append(f"[   12.000008] DMAR: pte level: {level}, pte value: 0x{value:016x}")
    return "\n".join(lines) + "\n"


def test_a_fault_dump_gives_the_pasid_directory_entry_and_the_dma_then_translates(server, tmp_path):
    orig, d = server
    log = tmp_path / "dmesg.txt"
    log.write_text(_dump_log(orig, "dmar0", "10:00.0", 0x203000))
    m = import_machine([str(d), str(log)])
    assert _same_words_as(orig, m)
    placed = [e for e in m.imported["pasid_entries"] if e["bdf"] == "10:00.0" and e["pasid"] == 0]
    assert placed and placed[0]["address"] is not None
    want = orig.execute("dma 0 0x203456 r").translation
    got = m.execute(f"dma {_group_of(m, '10:00.0')} 0x203456 r")
    assert want.ok and got.translation.ok and got.translation.hpa == want.hpa
    pe = next(p for p in state_json(m)["units"][0]["pasid_entries"] if p["bdf"] == "10:00.0")
    want_pe = next(p for p in to_json(orig)["units"][0]["pasid_entries"] if p["bdf"] == "10:00.0" and p["pasid"] == 0)
    assert pe == want_pe


def test_a_kernel_log_alone_places_context_and_ptes_but_not_the_root_entry(desktop, tmp_path):
    orig, _d = desktop
    log = tmp_path / "kern.log"
    log.write_text("Jan 01 00:00:00 host kernel: Linux version 6.8.0\n" + _dump_log(orig, "dmar1", "02:00.0", 0x205000))
    m = import_machine([str(log)])
    assert _same_words_as(orig, m) == 2 + 4     # context entry and four levels, no root entry
    assert any("root table" in x for x in m.imported["unknown"])
    assert m.units["dmar1"].cap == orig.units["dmar1"].cap
    assert [g.bdfs for g in m.groups.values()] == [["02:00.0"]]


# ----------------------------------------------------------------------------- bad input


def test_a_unit_nothing_describes_is_refused(desktop, tmp_path):
    _orig, d = desktop
    only = tmp_path / "dmar_translation_struct"
    only.write_text((d / "dmar_translation_struct").read_text())
    with pytest.raises(ImportError_, match=r"dmar0: named in the input, but nothing says what the unit is"):
        import_machine([str(only)])


def test_unparsed_lines_are_listed_with_file_and_line(desktop, tmp_path):
    _orig, d = desktop
    f = tmp_path / "iommu_regset"
    f.write_text("a stray line\n" + (d / "iommu_regset").read_text())
    m = import_machine([str(f)])
    assert m.imported["unparsed"] == [f"{f}:1"]


def test_a_truncated_row_is_one_line_naming_file_and_line(desktop, tmp_path):
    _orig, d = desktop
    f = tmp_path / "dmar_translation_struct"
    text = (d / "dmar_translation_struct").read_text()
    row = next(i for i, line in enumerate(text.split("\n")) if line.startswith("02:00.0"))
    lines = text.split("\n")
    lines[row] = lines[row][:30]
    f.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=rf"{f}:{row + 1}: truncated"):
        import_machine([str(f), str(d / "iommu_regset")])


def test_an_address_beyond_the_models_memory_is_refused(desktop, tmp_path):
    _orig, d = desktop
    f = tmp_path / "dmar_translation_struct"
    text = (d / "dmar_translation_struct").read_text().replace("Root Table Address: 0x1003000",
                                                               "Root Table Address: 0xfff0000000000000")
    f.write_text(text)
    with pytest.raises(ImportError_, match="beyond the model's memory"):
        import_machine([str(f), str(_regset_without_rtaddr(d, tmp_path))])


def _regset_without_rtaddr(d, tmp_path):
    """iommu_regset without its RTADDR rows (so the Root Table Address line is used)."""
    out = tmp_path / "regs" / "iommu_regset"
    out.parent.mkdir()
    out.write_text("\n".join(line for line in (d / "iommu_regset").read_text().split("\n")
                             if not line.startswith("RTADDR")))
    return out


def test_conflicting_reads_keep_the_first_and_say_so(desktop, tmp_path):
    orig, d = desktop
    log = tmp_path / "dmesg.txt"
    text = _dump_log(orig, "dmar1", "02:00.0", 0x205000)
    u = orig.units["dmar1"]
    rlo = u.cpu_read_q((u.rta_latched & PAGE) + 2 * 16)
    log.write_text(text.replace(f"root entry: 0x{rlo:016x}", f"root entry: 0x{rlo | 0x800:016x}"))
    m = import_machine([str(d), str(log)])
    assert any("the first read is kept" in c for c in m.imported["conflicts"])
    assert m.units["dmar1"].cpu_read_q((u.rta_latched & PAGE) + 2 * 16) == rlo


def test_a_file_that_is_no_kernel_text_is_refused(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("nothing of the IOMMU here\n")
    with pytest.raises(ImportError_, match="not a kernel log"):
        import_machine([str(f)])
    with pytest.raises(ImportError_, match="no such file"):
        import_machine([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImportError_, match="no debugfs file"):
        import_machine([str(tmp_path / "empty")])


# ----------------------------------------------------------------------------- translate from domain_translation_struct


def _without_translation_struct(d, tmp_path):
    """The debugfs folder without dmar_translation_struct: no root, context or PASID entry."""
    import shutil

    out = tmp_path / "debugfs"
    shutil.copytree(d, out)
    (out / "dmar_translation_struct").unlink()
    return out


def test_translate_walks_from_the_domain_table_when_no_context_entry_is_known(desktop, tmp_path):
    from vtdtui.kernel.translate import translate

    orig, d = desktop
    m = import_machine([str(_without_translation_struct(d, tmp_path))])
    sid = parse_bdf("02:00.0")
    # Two units, no context entry: which unit 02:00.0 sits behind is not in the input.
    table = m.domain_tables[(None, sid, None)]
    dom = orig.domain_of(orig.groups[5])
    assert (table.pgd, table.levels, table.stage) == (dom.pgd, dom.levels, "second")
    for iova, write in ((0x203456, True), (0x20F000, False)):
        want = orig.execute(f"dma 5 {iova:#x} {'w' if write else 'r'}").translation
        walk = translate(m.units["dmar1"], sid, iova, write, tables=m.domain_tables)
        assert want.ok and walk.ok and walk.hpa == want.hpa and walk.leaf_level == 1
        given = [s for s in walk.steps if s.given]
        assert len(given) == 1 and given[0].address == dom.pgd
        assert "context entry not known" in given[0].says and f"{dom.levels}-level" in given[0].says
        assert walk.steps[0].unknown and walk.to_json()["result"] == "translated"
    # Without the tables, the same walk stops at the unknown root entry.
    bare = translate(m.units["dmar1"], sid, 0x203456, True)
    assert not bare.ok and bare.reason == 0x01
    # An IOVA the table does not map faults in the page table, not at the root entry.
    miss = translate(m.units["dmar1"], sid, 0x300000, False, tables=m.domain_tables)
    assert not miss.ok and miss.steps[-1].level is not None and miss.reason != 0x01


def test_a_known_context_entry_is_walked_as_the_unit_walks_it(desktop):
    from vtdtui.kernel.translate import translate

    _orig, d = desktop
    m = import_machine([str(d)])
    walk = translate(m.units["dmar1"], parse_bdf("02:00.0"), 0x203456, True, tables=m.domain_tables)
    assert walk.ok and not any(s.given for s in walk.steps)
    assert [s.what for s in walk.steps[:2]] == ["root entry", "context entry"]


def test_scalable_first_stage_from_the_domain_table_without_any_pasid_entry(server, tmp_path):
    from vtdtui.kernel.translate import translate

    orig, d = server
    m = import_machine([str(_without_translation_struct(d, tmp_path))])
    sid = parse_bdf("10:00.0")
    table = m.domain_tables[("dmar0", sid, 0)]
    dom = orig.domain_of(orig.groups[0])
    assert (table.pgd, table.levels, table.stage) == (dom.pgd, dom.levels, dom.stage) == (dom.pgd, dom.levels, "first")
    assert "US" in table.stage_from and table.pasid_entry is None
    want = orig.execute("dma 0 0x203456 r").translation
    walk = translate(m.units["dmar0"], sid, 0x203456, False, tables=m.domain_tables)
    assert want.ok and walk.ok and walk.hpa == want.hpa
    assert walk.mode == "scalable" and walk.did is None and walk.pgtt == 1
    assert [s.stage for s in walk.steps if s.level is not None] == ["first"] * dom.levels
    assert "context and PASID entries not known" in next(s for s in walk.steps if s.given).says


def test_scalable_pasid_entry_read_but_not_placed_gives_did_and_pgtt(server):
    from vtdtui.kernel.translate import translate

    orig, d = server
    m = import_machine([str(d)])       # dmar_translation_struct: context and PASID entries, no directory entry
    sid = parse_bdf("10:01.0")
    dom = orig.domain_of(orig.groups[1])
    want = orig.execute("dma 1 0x40123456 w").translation
    walk = translate(m.units["dmar0"], sid, 0x40123456, True, tables=m.domain_tables)
    assert want.ok and walk.ok and walk.hpa == want.hpa and walk.leaf_level == 2
    assert walk.did == dom.dids["dmar0"] and walk.pgtt == 1
    stopped = [s for s in walk.steps if s.unknown]
    assert stopped and stopped[-1].what == "PASID dir entry"
    assert "PASID entry not known" in next(s for s in walk.steps if s.given).says


def test_a_fault_of_a_known_entry_is_not_walked_past(server):
    """The context entry's low 128 bits are in dmar_translation_struct: its PASIDE=0
    fault is the unit's answer, not a gap to walk around."""
    from vtdtui.kernel.translate import translate

    orig, d = server
    m = import_machine([str(d)])
    sid = parse_bdf("10:00.0")
    want = orig.units["dmar0"].translate(sid, 0x203456, pasid=5)
    walk = translate(m.units["dmar0"], sid, 0x203456, pasid=5, tables=m.domain_tables)
    assert not want.ok and not walk.ok and walk.reason == want.fault.reason
    assert not any(s.given for s in walk.steps)
