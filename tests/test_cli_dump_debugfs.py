"""`vtdtui dump --debugfs DIR` (DESIGN.md "The kernel's own text, in and out"): the files
written byte for byte in the newest kernel's formats, read back with kernel/debugfs.py
to the same entries the machine holds (round trip)."""

from __future__ import annotations

import os
import re

import pytest

from machinekit import run
from vtdtui import cli
from vtdtui.hw.entries import ContextEntry, RootEntry
from vtdtui.kernel.debugfs import (read_domain_translation_struct, read_invalidation_queue, read_regset,
                                   read_translation_struct)
from vtdtui.kernel.debugfs_write import debugfs_files, write_debugfs
import vtdtui.machine.state as S

PAGE = ~0xFFF & (1 << 64) - 1
DESKTOP = ("attach 5", "map 5 0x100000 64K rw", "map 5 0x40000000 2M rw", "attach 0", "map 0 0x0 8K r", "detach 0",
           "attach 3", "map 3 0x7000 4K w")


def printk(fmt: str, *args) -> str:
    return re.sub(r"(%[-0-9]*)l+", r"\1", fmt) % args


def _dump(tmp_path, *argv):
    out = tmp_path / "dfs"
    rc = cli.main(["dump", *argv, "--debugfs", str(out)])
    return rc, out


def _read(folder, rel, reader):
    return reader((folder / rel).read_text(), rel)


@pytest.fixture(scope="module")
def desktop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("desktop")
    argv = [a for c in DESKTOP for a in ("--do", c)]
    rc, out = _dump(tmp, *argv)
    assert rc == 0
    m, _ = run(None, *DESKTOP)
    return m, out


def test_regset_is_the_kernels_text_byte_for_byte(desktop):
    m, out = desktop
    # iommu_regs_32[] / iommu_regs_64[] of the newest debugfs.c (no CCMD, AFLOG, VC*).
    regs32 = "VER 0 GCMD 18 GSTS 1c FSTS 34 FECTL 38 FEDATA 3c FEADDR 40 FEUADDR 44 PMEN 64 PLMBASE 68 " \
             "PLMLIMIT 6c ICS 9c PRS dc PECTL e0 PEDATA e4 PEADDR e8 PEUADDR ec".split()
    regs64 = ("CAP 8 ECAP 10 RTADDR 20 PHMBASE 70 PHMLIMIT 78 IQH 80 IQT 88 IQA 90 IRTA b8 PQH c0 PQT c8 PQA d0 "
              "MTRRCAP 100 MTRRDEF 108 MTRR_FIX64K_00000 120 MTRR_FIX16K_80000 128 MTRR_FIX16K_A0000 130 "
              "MTRR_FIX4K_C0000 138 MTRR_FIX4K_C8000 140 MTRR_FIX4K_D0000 148 MTRR_FIX4K_D8000 150 "
              "MTRR_FIX4K_E0000 158 MTRR_FIX4K_E8000 160 MTRR_FIX4K_F0000 168 MTRR_FIX4K_F8000 170").split()
    regs64 += [x for n in range(10) for x in (f"MTRR_PHYSBASE{n}", f"{0x180 + 16 * n:x}",
                                              f"MTRR_PHYSMASK{n}", f"{0x188 + 16 * n:x}")]
    known = {"VER", "GSTS", "FSTS", "FECTL", "ICS", "CAP", "ECAP", "RTADDR", "IQH", "IQT", "IQA"}
    want = ""
    for u in m.units.values():
        want += printk("IOMMU: %s Register Base Address: %llx\n", u.name, u.base) + "Name\t\t\tOffset\t\tContents\n"
        for width, names in ((32, regs32), (64, regs64)):
            for name, off in zip(names[::2], names[1::2]):
                v = u.mmio_read(int(off, 16)) if name in known else 0
                want += printk("%-16s\t0x%02x\t\t0x%016llx\n", name, int(off, 16), v & ((1 << width) - 1))
        want += "\n"
    assert (out / "iommu_regset").read_text() == want
    units = _read(out, "iommu_regset", read_regset)
    assert [(u.name, u.base, u.registers["RTADDR"][1]) for u in units] == [
        (u.name, u.base, u.rtaddr) for u in m.units.values()]


def _legacy_rows(u):
    rta = u.rtaddr & PAGE
    rows = []
    for bus, _a, re_ in u.present_entries(rta, RootEntry.decode):
        for devfn, addr, _ce in u.present_entries(re_.ctp, ContextEntry.decode):
            rows.append((f"{bus:02x}:{devfn >> 3:02x}.{devfn & 7}", u.cpu_read_q(rta + 16 * bus),
                         u.cpu_read_q(rta + 16 * bus + 8), u.cpu_read_q(addr), u.cpu_read_q(addr + 8)))
    return rows


def test_translation_struct_reads_back_the_machines_root_and_context_entries(desktop):
    m, out = desktop
    units = _read(out, "dmar_translation_struct", read_translation_struct)
    assert units.unparsed == [] and [t.name for t in units] == list(m.units)
    for t, u in zip(units, m.units.values()):
        assert (t.enabled, t.root_table) == (True, u.rtaddr & PAGE)
        assert [(r.bdf, r.root_lo, r.root_hi, r.context_lo, r.context_hi) for r in t.rows] == _legacy_rows(u)
        assert all(r.pasid is None for r in t.rows)
    assert any(t.rows for t in units)


def test_invalidation_queue_reads_back_the_queue_in_memory(desktop):
    m, out = desktop
    units = _read(out, "invalidation_queue", read_invalidation_queue)
    assert [q.name for q in units] == list(m.units)
    for q, u in zip(units, m.units.values()):
        base = u.iqa & PAGE
        assert (q.base, q.head, q.tail, q.wide) == (base, u.iqh >> 4, u.iqt >> 4, False)
        assert [r.qw for r in q.rows] == [(u.cpu_read_q(base + 16 * i), u.cpu_read_q(base + 16 * i + 8))
                                          for i in range(256)]
    assert any(any(r.qw[0] for r in q.rows) for q in units)  # detach 0 queued invalidations


def _check_rows(u, pgd, levels, rows):
    """Each row's columns are the entries of the walk for its IOVA, from `pgd` down."""
    for r in rows:
        table = pgd
        for level in range(levels, 0, -1):
            index = (r.iova >> (12 + 9 * (level - 1))) & 511
            entry = u.cpu_read_q(table + 8 * index)
            assert r.columns[5 - level] == entry, (hex(r.iova), level)
            if level == r.leaf_level:
                break
            table = entry & PAGE & ~(1 << 63)


def test_device_files_read_back_every_mapping_with_its_walk(desktop):
    m, out = desktop
    dmar1 = m.units["dmar1"]
    seen = {}
    for bdf in ("02:00.0", "00:1f.0", "00:02.0", "01:00.0"):
        rel = f"0000:{bdf}/domain_translation_struct"
        devs = _read(out, rel, read_domain_translation_struct)
        seen[bdf] = devs
    assert list(seen["00:02.0"]) == [] and list(seen["01:00.0"]) == []  # detached / never attached: no context
    (nic,) = seen["02:00.0"]   # group 5
    (isa,) = seen["00:1f.0"]   # group 3
    ce = ContextEntry.decode(dmar1.cpu_read_q(_ctx_addr(dmar1, 0x02, 0)), dmar1.cpu_read_q(_ctx_addr(dmar1, 0x02, 0) + 8))
    assert (nic.name, nic.pgd, nic.pasid, nic.layout) == ("0000:02:00.0", ce.slptptr, None, "6.7")
    iovas = {r.iova: r.leaf_level for r in nic.rows}
    assert all(iovas.get(0x100000 + i * 4096) == 1 for i in range(16)) and iovas[0x40000000] == 2
    _check_rows(dmar1, nic.pgd, ce.aw + 2, nic.rows)
    for r in nic.rows:   # the leaf is where the unit translates the IOVA to
        t = dmar1.translate(0x0200, r.iova, write=not r.entries[r.leaf_level] & 1)  # "w" only: a write
        assert t.ok and t.hpa == (r.entries[r.leaf_level] & PAGE & ((1 << 52) - 1)) | (r.iova & 0xFFF)
    assert 0x7000 in {r.iova for r in isa.rows}


def _ctx_addr(u, bus, devfn):
    root = u.cpu_read_q((u.rtaddr & PAGE) + 16 * bus)
    return (root & PAGE) + 16 * devfn


def test_scalable_mode_round_trip():
    m, _ = run("server", "map 1 0x100000 16K rw", "map 1 0x200000 2M rw")
    files = debugfs_files(m)
    (u,) = m.units.values()
    (t,) = read_translation_struct(files["dmar_translation_struct"], "t")
    got = {(r.bdf, r.pasid): r.pasid_entry for r in t.rows}
    want = {}
    for bus, _a, root in S.sm_roots(u):
        for devfn, _a, ce in S.sm_contexts(u, bus, root):
            for pasid, _a, pe in S.pasid_entries(u, ce):
                if pe.present:
                    want[(f"{bus:02x}:{devfn >> 3:02x}.{devfn & 7}", pasid)] = pe.val[:3]
    assert got == want and got
    (q,) = read_invalidation_queue(files["invalidation_queue"], "q")
    base = u.iqa & PAGE
    assert q.wide and q.rows[1].qw == tuple(u.cpu_read_q(base + 32 + 8 * i) for i in range(4))
    (d,) = read_domain_translation_struct(files["0000:10:01.0/domain_translation_struct"], "d")
    pe = next(pe for p, _a, pe in S.pasid_entries(u, S.sm_context(u, 0x1008)) if p == 0 and pe.present)
    assert d.pasid == 0 and d.pgd == pe.fsptptr
    assert {r.iova: r.leaf_level for r in d.rows} == {0x100000: 1, 0x101000: 1, 0x102000: 1, 0x103000: 1,
                                                      0x200000: 2}
    _check_rows(u, d.pgd, ((pe.val[0] >> 2) & 7) + 2, d.rows)


def test_bad_folders_give_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    (tmp_path / "file").write_text("")
    for name in ("full", "file"):
        rc = cli.main(["dump", "--debugfs", str(tmp_path / name)])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and err.startswith("vtdtui: error: --debugfs "), err
    assert cli.main(["dump"]) == 2
    assert "required: --json OUT|- or --debugfs DIR" in capsys.readouterr().err
    assert os.listdir(tmp_path / "full") == ["x"]


def test_writer_refuses_a_non_empty_folder_before_writing(tmp_path):
    m, _ = run(None)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "iommu_regset").symlink_to("/etc/passwd")
    with pytest.raises(ValueError, match="not empty"):
        write_debugfs(m, str(tmp_path / "d"))
    written = write_debugfs(m, str(tmp_path / "e"))
    assert sorted(os.path.relpath(p, tmp_path / "e") for p in written)[:3] == [
        "0000:00:00.0/domain_translation_struct", "0000:00:02.0/domain_translation_struct",
        "0000:00:14.0/domain_translation_struct"]
