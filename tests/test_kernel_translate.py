"""vtdtui/kernel/translate.py: one request's walk, step by step (DESIGN.md, "The kernel's
own text, in and out", `translate`).

Two kinds of test.  Agreement: on every built-in scenario, after random maps, the
walk's answer (translation or fault reason, address) is the one DmarUnit.translate()
gives for the same request.  Structure: on hand-built tables (tests/hwkit.py,
tests/hwsmkit.py: entries written from the spec's bit positions) each step is the
entry at the address the spec's index arithmetic gives, and the walk has no side
effects on the unit.
"""

from __future__ import annotations

import random
import re

import pytest
from rich.console import Console

from hwkit import ECAP_BASE, SID, Rig, idx
from hwsmkit import (
    A, D, ECAP_SM, ECAP_SMPWC, FS_LEAF_RO, FS_LEAF_RW, FS_TABLE, P, RW, US, SmRig, fs_idx,
)
from hwsmkit import SID as SM_SID
from vtdtui.kernel.translate import device_units, render, translate
from vtdtui.machine import CommandError, Machine

CONTRACT_KEYS = {"bdf", "iova", "result", "hpa", "r", "w", "level", "steps", "fault"}
HEX = re.compile(r"^0x[0-9a-f]+$")


# ------------------------------------------------------------------------ agreement
def _randomly_mapped(name: str, seed: int) -> tuple[Machine, list[tuple[int, int]]]:
    """Scenario `name` with every group attached that can be and a few random maps in
    each attached one; returns the machine and the (group, iova) ranges mapped."""
    rng = random.Random(seed)
    m = Machine.from_scenario(name)
    mapped = []
    for gid in list(m.groups)[:8]:
        if m.groups[gid].domain is None:
            try:
                m.execute(f"attach {gid}")
            except CommandError:
                continue
        for _ in range(3):
            iova = rng.randrange(0, 1 << 30, 1 << 12)
            size = rng.choice([0x1000, 0x3000, 0x10000, 0x200000])
            iova = iova // size * size if size == 0x200000 else iova
            perms = rng.choice(["r", "w", "rw"])
            try:
                m.execute(f"map {gid} {iova:#x} {size:#x} {perms}")
            except CommandError:
                continue
            mapped.append((gid, iova))
    return m, mapped


def _requests(m: Machine, mapped, rng: random.Random, n: int):
    """(unit, source id, iova, write): inside mapped ranges, next to them, and anywhere
    (beyond the address width too), from every device of every group."""
    devices = [(g.unit, sid) for g in m.groups.values() for sid, _ in g.devices][:24]
    if m.host_group is not None:
        devices += [(m.host_group.unit, sid) for sid in m.host_group.devices]
    for _ in range(n):
        kind = rng.random()
        if mapped and kind < 0.5:
            gid, base = rng.choice(mapped)
            unit, sid = m.groups[gid].unit, m.groups[gid].devices[0][0]
            iova = base + rng.randrange(0, 0x20000)
        else:
            unit, sid = rng.choice(devices)
            iova = rng.choice([rng.randrange(0, 1 << 32), rng.randrange(0, 1 << 64), 1 << 48, (1 << 47) + 0x1000])
        yield m.units[unit], sid, iova, rng.random() < 0.5


@pytest.mark.parametrize("name", ["desktop", "server", "notebook", "viommu", "viommu-sm"])
def test_the_walk_agrees_with_the_unit_on_random_requests(name):
    m, mapped = _randomly_mapped(name, seed=sum(map(ord, name)))
    rng = random.Random(7)
    seen = set()
    for unit, sid, iova, write in _requests(m, mapped, rng, 150):
        walk = translate(unit, sid, iova, write)
        t = unit.translate(sid, iova, write)  # after the walk: it fills the caches the walk must not
        where = f"{name} {unit.name} {sid:#06x} {'w' if write else 'r'} {iova:#x}"
        assert walk.ok == t.ok, where
        if t.ok:
            assert walk.hpa == t.hpa, where
            seen.add("ok")
        else:
            assert walk.reason == t.fault.reason, where
            assert walk.message == t.fault.message, where
            assert walk.recorded == (not t.fault.suppressed_by_fpd), where
            seen.add(t.fault.reason)
    assert "ok" in seen and len(seen) >= 2, f"{name}: the requests hit too few cases: {seen}"


def test_the_scalable_scenarios_walk_in_scalable_mode():
    # The agreement above must cover both modes: server is first stage, desktop legacy.
    m, mapped = _randomly_mapped("server", 1)
    gid, iova = mapped[0]
    g = m.groups[gid]
    walk = translate(m.units[g.unit], g.devices[0][0], iova)
    assert walk.mode == "scalable" and walk.pgtt == 1
    assert [s.what for s in walk.steps[:4]] == ["root entry", "context entry", "PASID dir entry", "PASID entry"]
    assert all(s.stage == "first" for s in walk.steps[4:])
    m2 = Machine.from_scenario("desktop")
    assert translate(m2.units["dmar1"], 0x0200, 0).mode == "legacy"


# ------------------------------------------------------------------------ legacy structure
def test_legacy_steps_are_the_entries_at_the_spec_addresses():
    rig = Rig()
    iova, hpa = 0x12_3456_7000, 0x8_8000_0000
    pgd = rig.domain(SID, aw=2)  # 4-level
    leaf = rig.map(pgd, iova, hpa, w=False)
    walk = translate(rig.unit, SID, iova + 0x123)
    assert walk.ok and walk.hpa == hpa + 0x123 and walk.leaf_level == 1
    assert (walk.r, walk.w) == (True, False)
    root, ctx, *ptes = walk.steps
    assert root.address == rig.root + (SID >> 8) * 16 and root.level is None
    assert ctx.address == rig.context_table(SID >> 8) + (SID & 0xFF) * 16
    assert ctx.words == (rig.rq(ctx.address), rig.rq(ctx.address + 8))
    assert [s.level for s in ptes] == [4, 3, 2, 1]
    assert ptes[-1].address == leaf and ptes[-1].words == (rig.rq(leaf),)
    for s in ptes:
        assert (s.address & 0xFFF) >> 3 == idx(iova, s.level)
    j = walk.to_json()
    assert CONTRACT_KEYS <= set(j) and j["result"] == "translated" and j["fault"] is None
    assert j["hpa"] == f"{hpa + 0x123:#x}" and j["level"] == 1
    assert all(HEX.match(s["address"]) and HEX.match(s["entry"]) for s in j["steps"])
    assert j["steps"][0]["level"] is None and j["steps"][-1]["level"] == 1


def test_legacy_superpage_leaf_level_and_a_fault_that_stops_the_walk():
    rig = Rig(cap=0x0009_0380_222F_0602 | 1 << 34)  # SLLPS: 2 MiB
    pgd = rig.domain(SID, aw=2)
    rig.map(pgd, 0x4000_0000, 0x2_0000_0000, level=2)
    walk = translate(rig.unit, SID, 0x4001_2345, True)
    assert walk.ok and walk.leaf_level == 2 and walk.hpa == 0x2_0001_2345
    assert [s.level for s in walk.steps[2:]] == [4, 3, 2]
    miss = translate(rig.unit, SID, 0x8000_0000)  # L3 entry 2 is empty: the walk stops there
    assert not miss.ok and miss.reason == 0x06 and miss.steps[-1].level == 3 and miss.steps[-1].words == (0,)
    assert miss.message == ("DMAR: [DMA Read NO_PASID] Request device [03:00.0] fault addr 0x80000000 "
                            "[fault reason 0x06] PTE Read access is not set")
    assert miss.to_json()["fault"]["reason"] == 0x06 and miss.hpa is None


def test_the_walk_has_no_side_effects():
    rig = Rig()
    pgd = rig.domain(SID)
    rig.map(pgd, 0x1000, 0x9000_0000)
    before = list(rig.unit.frcd), rig.unit.fsts
    for iova in (0x1000, 0x5000, 1 << 50):
        translate(rig.unit, SID, iova, True)
    assert not rig.unit.faults and (list(rig.unit.frcd), rig.unit.fsts) == before
    assert rig.unit.context_cache.lookup(SID) is None and rig.unit.iotlb.lookup(5, 0x1000) is None


def test_fpd_faults_are_marked_unrecorded_as_the_unit_does():
    rig = Rig()
    rig.domain(SID, fpd=True)
    walk = translate(rig.unit, SID, 0x1000)
    t = rig.unit.translate(SID, 0x1000)
    assert walk.reason == t.fault.reason == 0x06
    assert not walk.recorded and t.fault.suppressed_by_fpd
    assert walk.to_json()["fault"]["recorded"] is False


def test_a_non_coherent_unit_reads_memory_and_the_step_shows_the_cpu_view():
    rig = Rig(ecap=ECAP_BASE & ~1)  # ECAP.C=0: walks read memory, not the CPU cache
    pgd = rig.domain(SID)
    leaf = rig.map(pgd, 0x1000, 0x9000_0000, flush=False)  # the driver forgot clflush
    walk = translate(rig.unit, SID, 0x1000)
    assert not walk.ok and walk.reason == 0x06
    last = walk.steps[-1]
    assert last.address == leaf and last.words == (0,) and last.cpu_words == (rig.rq(leaf),)
    assert walk.to_json()["steps"][-1]["cpu_words"] == [f"0x{rig.rq(leaf):016x}"]


def test_legacy_pass_through_and_a_request_with_pasid():
    rig = Rig()
    rig.set_context(SID, tt=2)
    walk = translate(rig.unit, SID, 0x1234_5678, True)
    assert walk.ok and walk.hpa == 0x1234_5678 and walk.leaf_level is None and len(walk.steps) == 2
    blocked = translate(rig.unit, SID, 0x1000, False, pasid=5)
    assert blocked.reason == 0x31 and "[DMA Read PASID 0x5]" in blocked.message


# ------------------------------------------------------------------------ scalable structure
def test_first_stage_steps_and_a_1g_page():
    rig = SmRig()
    pgd = rig.fs_domain(SM_SID)
    rig.fs_map(pgd, 0x4000_0000, 0x3_0000_0000, level=3, bits=FS_LEAF_RO)
    walk = translate(rig.unit, SM_SID, 0x4567_8000)
    t = rig.unit.translate(SM_SID, 0x4567_8000)
    assert walk.ok and walk.hpa == t.hpa == 0x3_0567_8000 and walk.leaf_level == 3
    root, ctx, pde, pe, *fs = walk.steps
    assert root.address == rig.root + (SM_SID >> 8) * 16 and len(root.words) == 2
    assert ctx.address == rig.context_addr(SM_SID) and len(ctx.words) == 4
    assert pde.address == rig.pasid_dirs[SM_SID] and pe.address == rig.pasid_entry_addr(SM_SID, 0)
    assert len(pe.words) == 8 and pe.words[0] & 0x1C0 == 1 << 6  # PGTT 1 in bits 8:6
    assert [s.level for s in fs] == [4, 3] and all(s.stage == "first" for s in fs)
    assert [(s.address & 0xFFF) >> 3 for s in fs] == [fs_idx(0x4567_8000, 4), fs_idx(0x4567_8000, 3)]
    j = walk.to_json()
    assert j["steps"][3]["words"][0] == f"0x{pe.words[0]:016x}" and len(j["steps"][3]["entry"]) == 2 + 128
    assert j["pgtt"] == 1 and j["pasid"] is None and j["pasid_used"] == 0


def test_first_stage_write_to_a_read_only_page_and_a_request_with_pasid():
    rig = SmRig()
    rig.set_context(SM_SID, paside=True)
    pgd = rig.alloc.alloc()
    rig.set_pasid(SM_SID, 5, pgtt=1, fsptptr=pgd)
    rig.fs_map(pgd, 0x10000, 0x7000_0000, bits=FS_LEAF_RO)
    walk = translate(rig.unit, SM_SID, 0x10000, True, pasid=5)
    t = rig.unit.translate(SM_SID, 0x10000, True, pasid=5)
    assert walk.reason == t.fault.reason == 0x85
    assert walk.message == t.fault.message and "[DMA Write PASID 0x5]" in walk.message
    assert walk.steps[3].address == rig.pasid_entry_addr(SM_SID, 5)


def test_scalable_context_faults_paside_and_pdts():
    rig = SmRig()
    rig.fs_domain(SM_SID)  # PASIDE=0, PDTS 0: PASIDs below 2^(0+7) * 64 = 8192
    no_paside = translate(rig.unit, SM_SID, 0x1000, pasid=3)
    assert no_paside.reason == rig.unit.translate(SM_SID, 0x1000, pasid=3).fault.reason == 0x45
    assert [s.what for s in no_paside.steps] == ["root entry", "context entry"]
    rig.set_context(SM_SID, paside=True)  # no context-cache invalidation yet
    beyond = translate(rig.unit, SM_SID, 0x1000, pasid=8192)
    assert beyond.reason == 0x46  # the tables say: PASID beyond the directory
    assert any("context cache holds an older entry for 03:00.0" in n for n in beyond.notes)
    assert rig.unit.translate(SM_SID, 0x1000, pasid=8192).fault.reason == 0x45  # the stale entry answers
    rig.unit.invalidate_context(1)  # global
    beyond = translate(rig.unit, SM_SID, 0x1000, pasid=8192)
    assert not any("context cache" in n for n in beyond.notes)
    assert beyond.reason == rig.unit.translate(SM_SID, 0x1000, pasid=8192).fault.reason == 0x46


def test_second_stage_and_pass_through_pasid_entries():
    rig = SmRig()
    pgd = rig.ss_domain(SM_SID, aw=2)
    rig.ss_map(pgd, 0x20_0000, 0x5_0000_0000, level=2)
    walk = translate(rig.unit, SM_SID, 0x21_2345, True)
    assert walk.ok and walk.hpa == 0x5_0001_2345 and walk.leaf_level == 2
    assert [s.stage for s in walk.steps[4:]] == ["second"] * 3
    rig2 = SmRig()
    rig2.set_context(SM_SID)
    rig2.set_pasid(SM_SID, 0, pgtt=4, pgsnp=True)
    pt = translate(rig2.unit, SM_SID, 0xABC_D000)
    assert pt.ok and pt.hpa == 0xABC_D000 and pt.snp and pt.leaf_level is None and len(pt.steps) == 4


def test_nested_steps_translate_each_first_stage_table_through_the_second_stage():
    rig = SmRig()
    rig.set_context(SM_SID)
    ss = rig.alloc.alloc()
    fs_gpa = 0x4000_0000  # the first-stage tables live at GPAs 0x4000_0000 + k * 4K
    # Each first-stage table page: GPA fs_gpa + k * 4K -> HPA of a page we allocate.
    pages = [rig.alloc.alloc() for _ in range(4)]
    for k, hpa in enumerate(pages):
        rig.ss_map(ss, fs_gpa + k * 0x1000, hpa, w=True)
    iova, out_gpa, out_hpa = 0x7000, 0x5000_0000, 0x6_0000_0000
    for k in range(3):  # L4 -> L3 -> L2 -> L1 tables, pointers are GPAs
        rig.wq(pages[k] + fs_idx(iova, 4 - k) * 8, (fs_gpa + (k + 1) * 0x1000) | FS_TABLE)
    rig.wq(pages[3] + fs_idx(iova, 1) * 8, out_gpa | FS_LEAF_RW)
    rig.ss_map(ss, out_gpa, out_hpa)
    rig.set_pasid(SM_SID, 0, pgtt=3, aw=2, ssptptr=ss, fsptptr=fs_gpa)
    walk = translate(rig.unit, SM_SID, iova + 0x10, True)
    t = rig.unit.translate(SM_SID, iova + 0x10, True)
    assert walk.ok and walk.hpa == t.hpa == out_hpa + 0x10
    paging = walk.steps[4:]
    # 4 x (4 second-stage reads for the table's GPA, then the first-stage entry), then 4 for the output.
    assert len(paging) == 4 * 5 + 4
    fs_steps = [s for s in paging if s.stage == "first"]
    assert [s.level for s in fs_steps] == [4, 3, 2, 1]
    assert [s.address for s in fs_steps] == [pages[k] + fs_idx(iova, 4 - k) * 8 for k in range(4)]
    assert "output GPA" in paging[-1].what and paging[-1].level == 1
    assert "first-stage L4 entry" in paging[0].what
    # A first-stage table whose GPA the second stage does not map: 0x75 at the top.
    rig.set_pasid(SM_SID, 0, pgtt=3, aw=2, ssptptr=ss, fsptptr=0x7000_0000)
    rig.unit.invalidate_pasid_cache(3)
    rig.unit.iotlb.invalidate_global()
    bad = translate(rig.unit, SM_SID, iova)
    assert bad.reason == rig.unit.translate(SM_SID, iova).fault.reason == 0x75


@pytest.mark.parametrize("pwsnp", [False, True])
def test_first_stage_ad_bits_clear(pwsnp):
    """A first-stage entry with A clear: a snooping walk sets it (translate() does;
    the walk here must not), a non-snooping one faults 0x90 there."""
    rig = SmRig(ecap=ECAP_SM | ECAP_SMPWC)
    pgd = rig.fs_domain(SM_SID, pwsnp=pwsnp)
    leaf = rig.fs_map(pgd, 0x3000, 0x7000_0000, bits=P | RW | US)  # no A, no D
    before = rig.rq(leaf)
    walk = translate(rig.unit, SM_SID, 0x3000, True)
    assert rig.rq(leaf) == before  # no A/D written by the walk
    t = rig.unit.translate(SM_SID, 0x3000, True)
    assert walk.ok == t.ok
    if pwsnp:
        assert walk.ok and any("would set A/D in the L1" in n for n in walk.notes)
        assert rig.rq(leaf) & (A | D) == A | D  # the DMA itself did
    else:
        assert walk.reason == t.fault.reason == 0x90 and walk.steps[-1].address == leaf


# ------------------------------------------------------------------------ devices and text
def test_device_units_finds_groups_and_the_qemu_host_device():
    m = Machine.from_scenario("viommu")
    # 00:03.0: source id = bus << 8 | device << 3 | function = 0x18
    assert device_units(m, 0x0018) == [("dmar0", "group 3: Ethernet (assigned from the host)")]
    host = m.host_group.devices[0]
    assert [u for u, _ in device_units(m, host)] == ["host-dmar1"]
    assert device_units(m, 0x0900) == []


def test_text_view_fits_80_columns_and_says_what_linux_prints():
    rig = SmRig()
    pgd = rig.fs_domain(SM_SID)
    rig.fs_map(pgd, 0x1000, 0x7000_0000)
    walk = translate(rig.unit, SM_SID, 0x9000, device="test NIC")
    console = Console(width=80, record=True, color_system=None)
    console.print(render(walk), soft_wrap=True)
    text = console.export_text()
    # Every line fits 80 columns but the kernel's fault line, kept whole on one line.
    assert len(walk.message) > 80 and walk.message in text.splitlines()
    assert max(len(line) for line in text.splitlines() if line != walk.message) <= 80
    assert "root entry" in text and "PASID entry" in text and "L1 (first stage)" in text
    assert "fault 0x71" in text and "test NIC" in text
