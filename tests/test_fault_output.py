"""What the kernel prints for a DMA fault, and who prints it (issue 13, item 8).

drivers/iommu/intel/dmar.c dmar_fault(): read FSTS once, pr_err/pr_info
"DRHD: handling fault status reg %x" with that value when it is not 0, then from
FSTS.FRI each FRCD with F set: clear F, dmar_fault_do_one() — whose
dmar_fault_dump_ptes() (drivers/iommu/intel/iommu.c) prints only in a kernel built with
CONFIG_DMAR_DEBUG, the scenario's `[kernel] dmar_debug`.  The hardware only records
FRCD/FSTS (QEMU vtd_report_frcd_fault: FRI is latched when PPF goes 0 → 1).
"""

from __future__ import annotations

from pathlib import Path

from machinekit import events, run, state, unit_state
from vtdtui.hw import regs
from vtdtui.machine import Machine
from vtdtui.machine.invariants import check_command

DESKTOP = Path(__file__).resolve().parent.parent / "vtdtui" / "scenarios" / "desktop.toml"
FAULT_LINE = ("DMAR: [DMA Read NO_PASID] Request device [02:00.0] fault addr 0x300000 "
              "[fault reason 0x06] PTE Read access is not set")


def desktop_file(tmp_path, *, dmar_debug: bool | None = None, nfr: int = 0) -> str:
    """The built-in desktop scenario, optionally with a [kernel] table and more FRCDs on dmar1."""
    text = DESKTOP.read_text(encoding="utf-8")
    if nfr:
        text = text.replace('cap = "0xd2008c40660462"', f'cap = "{0xd2008c40660462 | nfr << 40:#x}"')
    if dmar_debug is not None:
        text += f"\n[kernel]\ndmar_debug = {'true' if dmar_debug else 'false'}\n"
    path = tmp_path / "desktop-kernel.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_drhd_line_comes_first_and_no_dump_by_default():
    m, (_, o) = run("desktop", "attach 5", "dma 5 0x300000 r")
    f = o.translation.fault
    assert f.log == ["DMAR: DRHD: handling fault status reg 2", FAULT_LINE]
    assert f.message == FAULT_LINE and f.dump == []
    (j,) = unit_state(state(m), "dmar1")["faults"]
    assert j["message"] == FAULT_LINE and j["log"] == f.log and "dump" not in j
    # The journal: the hardware's record, then the driver's handler, which says what it printed first.
    hw, drv = o.events
    assert (hw.actor, hw.op, hw.reason, hw.detail) == ("hw", "fault", FAULT_LINE, "FRCD 0")
    assert (drv.actor, drv.op, drv.rule, drv.outcome) == ("driver", "fault", "dmar-fault", "issued")
    assert drv.reason == "DMAR: DRHD: handling fault status reg 2"
    assert "CONFIG_DMAR_DEBUG is not set" in drv.detail
    # dmar_fault() cleared F and PPF: the unit is ready for the next fault.
    u = m.units["dmar1"]
    assert u.frcd[0][1] >> 63 == 0 and u.fsts == 0
    assert check_command(m, "dma 5 0x300000 r", o.events) == []


def test_dmar_debug_prints_the_walk_after_the_fault_line(tmp_path):
    m = Machine.from_scenario(desktop_file(tmp_path, dmar_debug=True))
    assert m.scenario.dmar_debug is True
    m.execute("attach 5")
    o = m.execute("dma 5 0x300000 r")
    f = o.translation.fault
    u = m.units["dmar1"]
    walk = u.fault_dump(f.source_id, f.iova)
    assert walk[0] == "DMAR: Dump dmar1 table entries for IOVA 0x300000"
    assert walk[-2].startswith("DMAR: pte level: ") and walk[-2].endswith("0x0000000000000000")
    level = int(walk[-2].split("pte level: ")[1].split(",")[0])
    assert walk[-1] == f"DMAR: page table not present at level {level - 1}"  # an empty top entry of a fresh domain
    assert f.dump == walk
    assert f.log == ["DMAR: DRHD: handling fault status reg 2", FAULT_LINE, *walk]
    (j,) = unit_state(state(m), "dmar1")["faults"]
    assert j["dump"] == walk and j["log"] == f.log
    (drv,) = events(o, actor="driver", rule="dmar-fault")
    assert "CONFIG_DMAR_DEBUG=y" in drv.detail
    assert check_command(m, "dma 5 0x300000 r", o.events) == []


def test_dmar_debug_false_is_the_default(tmp_path):
    m = Machine.from_scenario(desktop_file(tmp_path, dmar_debug=False))
    m.execute("attach 5")
    assert m.execute("dma 5 0x300000 r").translation.fault.log == [
        "DMAR: DRHD: handling fault status reg 2", FAULT_LINE]


def test_the_fsts_printed_is_the_value_read_on_entry_with_fri(tmp_path):
    # Four FRCDs: the second fault goes to FRCD 1, PPF rises again and latches FRI = 1,
    # so dmar_fault() reads FSTS 0x102 and prints it as "102" (lore: "handling fault
    # status reg 302/402/502" from a host with many faults).
    m = Machine.from_scenario(desktop_file(tmp_path, nfr=3))
    assert m.units["dmar1"].num_fault_regs == 4
    m.execute("attach 5")
    first = m.execute("dma 5 0x300000 r").translation.fault
    second = m.execute("dma 5 0x301000 w").translation.fault
    assert (first.frcd, second.frcd) == (0, 1)
    assert first.log[0] == "DMAR: DRHD: handling fault status reg 2"
    assert second.log[0] == "DMAR: DRHD: handling fault status reg 102"
    assert m.units["dmar1"].mmio_read(regs.FSTS_REG) & 3 == 0


def test_one_batch_reads_from_fri_and_wraps(tmp_path):
    # Faults that pile up before the interrupt is handled: one DRHD line, then each
    # record in FRCD order from FRI, wrapping at cap_num_fault_regs.
    m = Machine.from_scenario(desktop_file(tmp_path, nfr=3))
    m.execute("attach 5")
    u, drv = m.units["dmar1"], m.driver_for("dmar1")
    u.next_frcd = 3  # the write pointer sits on the last register
    faults = [u.translate(0x0200, iova, False).fault for iova in (0x300000, 0x301000, 0x302000)]
    assert [f.frcd for f in faults] == [3, 0, 1]
    assert u.mmio_read(regs.FSTS_REG) == 0x302  # FRI 3, PPF
    printed = drv.handle_faults(u)
    assert printed[0] == "DMAR: DRHD: handling fault status reg 302"
    assert [line.split("fault addr ")[1].split()[0] for line in printed[1:]] == ["0x300000", "0x301000", "0x302000"]
    assert faults[0].log == printed[:2]  # the DRHD line belongs to the record that opened the batch
    assert [f.log for f in faults[1:]] == [[printed[2]], [printed[3]]]
    assert u.fsts & 3 == 0 and not any(hi >> 63 for _, hi in u.frcd)


def test_no_fault_pending_prints_nothing():
    m, _ = run("desktop", "attach 5")
    n = len(m.journal)
    assert m.driver_for("dmar1").handle_faults(m.units["dmar1"]) == []
    assert len(m.journal) == n  # FSTS 0: no interrupt, no line, no event


def test_registers_pane_shows_the_kernel_log_of_the_newest_fault(tmp_path):
    from vtdtui.views import registers

    m = Machine.from_scenario(desktop_file(tmp_path, dmar_debug=True))
    m.execute("attach 5")
    f = m.execute("dma 5 0x300000 r").translation.fault
    texts = ["".join(s for s, _ in line) for line in registers.registers(m, "dmar1")]
    at = texts.index(" kernel log of the newest handled fault:")
    assert texts[at + 1: at + 1 + len(f.log)] == [f"  {line}" for line in f.log]
    assert texts[at + 1] == "  DMAR: DRHD: handling fault status reg 2"


# ------------------------------------------------------------------ clflush reasons after an ECAP.C toggle
def _clflush(o, detail_has):
    return [e for e in events(o, actor="driver", rule="clflush") if detail_has in e.detail]


def test_domain_allocated_non_coherent_keeps_clflushing_after_c_turns_on():
    m, (_, _, o) = run("desktop", "attach 5", "toggle dmar1 C", "map 5 0x100000 4K rw")
    assert m.units["dmar1"].coherent
    leaf = _clflush(o, "leaf PTE(s)")
    assert leaf and all(e.outcome == "issued" for e in leaf)
    for e in leaf:
        assert e.reason == ("domain 1 was allocated on a non-coherent unit (iommu_coherency=0); "
                            "ECAP.C is now 1: the kernel keeps the coherency fixed at allocation and still clflushes")
        assert "ECAP.C=0" not in e.reason  # the screen shows C=1


def test_domain_allocated_coherent_skips_clflush_after_c_turns_off():
    m, (_, _, _, o) = run("desktop", "toggle dmar1 C", "attach 5", "toggle dmar1 C", "map 5 0x100000 4K rw")
    assert not m.units["dmar1"].coherent
    leaf = _clflush(o, "leaf PTE(s)")
    assert leaf and all(e.outcome == "skipped" for e in leaf)
    for e in leaf:
        assert e.reason == ("domain 1 was allocated on a coherent unit (iommu_coherency=1); "
                            "ECAP.C is now 0: the kernel keeps the coherency fixed at allocation, so no clflush")


def test_context_entry_flush_follows_the_units_c_now():
    # __iommu_flush_cache() tests ecap_coherent() on every call: after the toggle the
    # context entry of a newly attached device follows C=1 at once.
    m, (_, _, o) = run("desktop", "attach 5", "toggle dmar1 C", "attach 4")
    ctx = _clflush(o, "context entry 01:00.0")
    assert ctx and {(e.outcome, e.reason) for e in ctx} == {("skipped", "ECAP.C=1: page walks snoop the CPU cache")}


def test_consistent_domains_keep_the_old_reasons():
    _, (o,) = run("desktop", "attach 5")
    assert {e.reason for e in events(o, actor="driver", rule="clflush")} == {
        "ECAP.C=0: page walks read memory, not the CPU cache"}
