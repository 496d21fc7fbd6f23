"""iommufd and nesting in the VM pane, the backend key, and a DMA's walk under a
nested PASID entry in the event detail (two Pilot tests; the rest drive the views)."""

from __future__ import annotations

from tuikit import pane_text, prompt, started
from vtdtui.hw.sm_entries import PGTT_NESTED
from vtdtui.machine import Machine
from vtdtui.tui.bindings import ACTIONS
from vtdtui.tui.detail import dma_request, dma_walk_lines
from vtdtui.tui.panes import VmPane
from vtdtui.views.status import OPTION_HELP, vm_lines
from vtdtui.views.style import text_of


def texts(lines) -> list[str]:
    return [text_of(line) for line in lines]


def test_b_cycles_the_backend_and_every_option_has_help():
    row = next(a for a in ACTIONS if a.key == "b")
    assert (row.action, row.id) == ("cycle_option('backend')", "backend")
    from vtdtui.machine import OPTIONS
    assert set(OPTIONS) <= set(OPTION_HELP)


def test_vm_pane_lists_ioas_and_hwpts_of_the_desktop_on_iommufd():
    m = Machine.from_scenario("desktop")
    assert "KVM · VFIO backend type1" in texts(vm_lines(m))
    for line in ("set backend iommufd", "attach 5", "attach 0", "map 5 0x100000 64K"):
        m.execute(line)
    t = texts(vm_lines(m))
    assert t[0] == "KVM · VFIO backend iommufd"
    assert "VFIO type1 container · unused: backend iommufd" in t
    fd = m.iommufd
    (ioas,) = fd.ioas
    nic = fd.objects[next(d for d in fd.devices if d.bdf == "02:00.0").hwpt]
    gpu = fd.objects[next(d for d in fd.devices if d.bdf == "00:02.0").hwpt]
    head = f"  IOAS {ioas.id} · {len(ioas.areas)} area(s)"
    assert any(s.startswith(head) and s.endswith(f"HWPTs {nic.id}, {gpu.id}") for s in t)
    at = t.index(f"  HWPT {nic.id} paging · auto · IOAS {ioas.id}")
    d = nic.domain
    assert t[at + 1] == f"    domain {d.id} · dmar1 DID {d.dids['dmar1']} · enforce_cache_coherency ✓"
    assert t[at + 2] == "    devices 02:00.0"
    at = t.index(f"  HWPT {gpu.id} paging · auto · IOAS {ioas.id}")
    assert t[at + 1].endswith("enforce_cache_coherency ✗") and t[at + 2] == "    devices 00:02.0"


def _nested_machine() -> Machine:
    m = Machine.from_scenario("viommu-nested")
    for line in ("attach 3", "map 3 0x1000 0x2000", "dma 3 0x1000", "dma 3 0x9000 w"):
        m.execute(line)
    return m


def test_vm_pane_shows_the_nested_hwpt_over_its_parent():
    m = _nested_machine()
    q = m.qemu
    nested, parent = m.iommufd.objects[q.fs_hwpt], m.iommufd.objects[q.parent_hwpt]
    t = texts(vm_lines(m))
    at = t.index(f"  HWPT {nested.id} nested on parent HWPT {parent.id}")
    assert f"s1 pgtbl_addr {m.domain_of(m.groups[3]).pgd:#x} (GPA, 48-bit)" in t[at + 1]
    assert t[at + 2] == "    devices 02:00.0"
    assert any(s.startswith(f"  HWPT {parent.id} paging · explicit") and "NEST_PARENT" in s for s in t)
    assert "QEMU vIOMMU (x-flts) → host nested HWPT" in t
    assert f"  nesting: fs HWPT {nested.id} over parent HWPT {parent.id}, {q.traps} trap(s), 0 for maps" in t


def test_a_dma_through_a_nested_pasid_entry_shows_both_stages():
    m = _nested_machine()
    dma, fault = [e for e in m.journal.events if e.actor == "hw" and e.op in ("dma", "fault")]
    assert dma_request(dma) == (0x0200, 0x1000, False, None)
    assert dma_request(fault) == (0x0200, 0x9000, True, None)
    t = texts(dma_walk_lines(m, dma, 120))
    assert t[1].startswith("nested (PGTT 3)")
    fs = [s for s in t if "(first stage)" in s]
    gpa = [s for s in t if "(second stage, for the first-stage" in s]
    out = [s for s in t if "(second stage, for the output GPA 0x40001000)" in s]
    pe = m.units["host-dmar1"]
    assert len(fs) == 4  # a 4-level guest first stage
    # Each first-stage table's GPA goes through the parent's second stage first: a
    # walk per table, as many reads as the parent has levels; the output GPA last.
    assert len(gpa) == len(fs) * len(out) and out and all(s.startswith("    ") for s in gpa + out)
    # Just before the first first-stage read: the parent's leaf for the guest's top
    # table (its GPA is the nested HWPT's s1 pgtbl_addr), each step three lines.
    i = t.index(fs[0])
    pgtbl = m.iommufd.objects[m.qemu.fs_hwpt].s1.pgtbl_addr
    assert f"for the first-stage L4 entry at GPA {pgtbl:#x})" in t[i - 3] and "-> page" in t[i - 1]
    assert t[-1] == f"→ translated: {0x40001000 + m.scenario.qemu.host_ram_base:#x} (host-physical), SNP"
    assert pe.name == dma.unit
    ft = texts(dma_walk_lines(m, fault, 120))
    assert ft[-1].startswith("→ fault 0x71") and sum("(first stage)" in s for s in ft) == 4


def test_a_dma_of_a_second_stage_domain_is_one_stage():
    m = Machine.from_scenario("desktop")
    for line in ("attach 5", "map 5 0x1000 0x1000", "dma 5 0x1000"):
        m.execute(line)
    (dma,) = [e for e in m.journal.events if e.op == "dma"]
    t = texts(dma_walk_lines(m, dma, 120))
    assert not any("nested" in s for s in t) and sum("(second stage)" in s for s in t) == 4
    assert t[-1].startswith("→ translated: ") and dma_request(m.journal.events[0]) is None


async def test_b_then_attach_shows_the_hwpts_in_the_vm_pane():
    async with started("desktop") as (app, pilot):
        await pilot.press("b")
        await pilot.pause()
        assert app.machine.backend == "iommufd"
        await prompt(pilot, "g", "0")
        await pilot.press("a")
        await prompt(pilot, "g", "5")
        await pilot.press("a")
        await pilot.pause()
        t = pane_text(app.main.query_one(VmPane))
        assert t[0] == "KVM · VFIO backend iommufd"
        # The GPU's HWPT came first, without enforce_cache_coherency (dmar0 has no SC);
        # the NIC joins it: since 6.7 nothing upgrades an HWPT at attach.
        hwpts = [i for i, s in enumerate(t) if s.startswith("  HWPT ") and " paging · auto" in s]
        assert len(hwpts) == 1
        assert t[hwpts[0] + 1].endswith("enforce_cache_coherency ✗")
        assert t[hwpts[0] + 2] == "    devices 00:02.0, 02:00.0"


async def test_viommu_nested_vm_pane_shows_the_nested_hwpt():
    async with started("viommu-nested", commands=("attach 3",)) as (app, pilot):
        t = pane_text(app.main.query_one(VmPane))
        q = app.machine.qemu
        assert f"  HWPT {q.fs_hwpt} nested on parent HWPT {q.parent_hwpt}" in t
        assert any(s.startswith("  nesting: fs HWPT") for s in t)
