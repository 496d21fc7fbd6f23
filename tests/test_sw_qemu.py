"""QEMU's vIOMMU keeping a host shadow for an assigned device (REFERENCE.md §8), end to end.

viommu scenario: guest unit dmar0 (QEMU's CAP/ECAP, CM=1), guest driver owns the
groups; group 3 (00:03.0) is the host's 02:00.0 behind host-dmar1, cold-plugged.
IOVA = GPA - 0x40000000 offset for guest buffers (ram_base), HPA = GPA + 0x100000000
(host_ram_base).
"""

from __future__ import annotations

from importlib import resources

import pytest

from machinekit import domain_state, dumps, events, group_state, lines, one, run, state, unit_state
from vtdtui.hw import regs
from vtdtui.machine import CommandError, Machine, ScenarioError
from vtdtui.machine.invariants import assert_ok
from vtdtui.sw.qemu import CM_REQUIRED

GUEST_RAM = 0x40000000
HOST_RAM = 0x100000000
COLD_PLUG_REFUSAL = ("QEMU would not start: qemu-system-x86_64: -device vfio-pci,host=0000:02:00.0: "
                     "vfio 0000:02:00.0: Failed to set vIOMMU: " + CM_REQUIRED)
HOTPLUG_CM = ("Error: vfio 0000:02:00.0: failed to setup container for group 1: memory listener initialization "
              "failed: Region vtd-03.0-dmar: device 00.03.0 requires caching mode: Operation not supported")
HOTPLUG_SC = ("Error: vfio 0000:02:00.0: failed to setup container for group 1: memory listener initialization "
              "failed: Region vtd-03.0-dmar: Snoop Control with vhost or VFIO is not supported: Operation not supported")


def test_caching_mode_guest_map_is_shadowed_on_the_host():
    m, (_, o) = run("viommu", "attach 3", "map 3 0x100000 64K rw")
    guest = one(o, actor="driver", unit="dmar0", op="iotlb-invalidation")
    assert (guest.outcome, guest.rule, guest.scope) == ("issued", "map-np2p", "page")
    shadows = events(o, actor="qemu", op="shadow-map", outcome="issued")
    assert len(shadows) == 16, lines(o)
    assert all(e.unit == "host-dmar1" and e.rule == "qemu-shadow" for e in shadows)
    assert "0x100000+0x1000" in shadows[0].detail and f"HPA {0x100000 + GUEST_RAM + HOST_RAM:#x}" in shadows[0].detail
    assert not events(o, actor="qemu", outcome="skipped")

    o = m.execute("dma 3 0x100000 r")
    t = o.translation
    assert t.ok and t.hpa == 0x100000 + GUEST_RAM + HOST_RAM
    assert one(o, actor="hw", op="dma").unit == "host-dmar1"

    st = state(m)
    q = st["qemu"]
    assert q["assigned"] == "00:03.0" and q["caching_mode"] is True and q["refused"] is False
    assert q["plugged"] is True and q["error"] is None
    assert q["traps"] > 0
    assert len(q["shadow"]) == 16
    assert q["shadow"][0] == {"iova": "0x100000", "size": "0x1000", "gpa": hex(0x100000 + GUEST_RAM)}
    host_domains = [d for d in st["domains"] if d["unit"] == "host-dmar1"]
    assert [d["mapped_pages"] for d in host_domains] == [16]
    assert unit_state(st, "host-dmar1")["level"] == "host" and unit_state(st, "dmar0")["level"] == "guest"


def test_guest_unmap_is_a_psi_diff_and_detach_unmaps_the_whole_range():
    m, _ = run("viommu", "attach 3", "map 3 0x100000 8K rw", "map 3 0x200000 4K r")
    o = m.execute("unmap 3 0x100000 8K")
    unmaps = events(o, actor="qemu", op="shadow-unmap", outcome="issued")
    assert [e.detail for e in unmaps] == ["0x100000+0x1000", "0x101000+0x1000"]
    assert m.execute("dma 3 0x100000 r").translation.fault.reason == 0x06
    assert [s["iova"] for s in state(m)["qemu"]["shadow"]] == ["0x200000"]
    # The guest clears the context entry and invalidates it device-selectively:
    # vtd_address_space_sync() finds it not present and vtd_address_space_unmap()s
    # the whole 48-bit range in one UNMAP, not the one mapping left.
    o = m.execute("detach 3")
    (e,) = events(o, actor="qemu", op="shadow-unmap", outcome="issued")
    assert e.detail == "0x0+0x1000000000000 (1 mapping(s))"
    assert "context entry not present" in e.reason and "vtd_address_space_unmap" in e.reason
    assert state(m)["qemu"]["shadow"] == []


def test_every_guest_invalidation_traps():
    m, _ = run("viommu", "attach 3")
    before = state(m)["qemu"]["traps"]
    m.execute("map 3 0x100000 4K")
    after_map = state(m)["qemu"]["traps"]
    assert after_map == before + 1  # one PSI
    m.execute("unmap 3 0x100000 4K")
    assert state(m)["qemu"]["traps"] == after_map + 1


# ----------------------------------------------------------------------------- item 2: when QEMU refuses


@pytest.mark.parametrize("setup", [(), ("attach 3", "map 3 0x100000 16K rw")])
def test_caching_mode_off_with_the_device_plugged_is_a_qemu_that_never_started(setup):
    m, _ = run("viommu", *setup)
    before = dumps(m)
    with pytest.raises(CommandError) as exc:
        m.execute("toggle dmar0 CM")
    assert str(exc.value).startswith(COLD_PLUG_REFUSAL)
    assert dumps(m) == before
    assert m.units["dmar0"].cm


def test_snoop_control_with_the_device_plugged_aborts_qemu_force_or_not():
    # vtd_iommu_notify_flag_changed(): error_setg_errno(ENOTSUP) → "...: Operation not
    # supported"; at run time vfio_listener_region_add() can only hw_error().
    for setup in ((), ("set qemu-force on",)):
        m, _ = run("viommu", *setup)
        before = dumps(m)
        with pytest.raises(CommandError) as exc:
            m.execute("toggle dmar0 SC")
        msg = str(exc.value)
        assert msg.startswith("QEMU would abort once the guest turns its IOMMU on: qemu-system-x86_64: Snoop Control "
                              "with vhost or VFIO is not supported: Operation not supported, then qemu: hardware "
                              "error: vfio: DMA mapping failed, unable to continue")
        assert dumps(m) == before


def test_qemu_force_cannot_be_taken_back_under_a_running_forced_vm():
    m, _ = run("viommu", "set qemu-force on", "toggle dmar0 CM")
    with pytest.raises(CommandError) as exc:
        m.execute("set qemu-force off")
    assert str(exc.value).startswith(COLD_PLUG_REFUSAL)
    assert state(m)["qemu"]["force"] is True
    m.execute("toggle dmar0 CM")
    m.execute("set qemu-force off")


def test_hotplug_without_caching_mode_is_refused_and_the_vm_runs_on():
    m, outs = run("viommu", "attach 3", "map 3 0x100000 8K rw", "device-del", "toggle dmar0 CM", "device-add")
    dele = outs[2]
    # vfio_put_group(): the kvm-vfio file goes first, then the listener's one big UNMAP.
    kinds = [(e.actor, e.op) for e in dele.events if e.actor in ("kvm", "qemu")]
    assert kinds[0][0] == "kvm" and ("qemu", "device-del") == kinds[-1]
    (un,) = events(dele, actor="qemu", op="shadow-unmap", outcome="issued")
    assert un.detail == "0x0+0x1000000000000 (2 mapping(s))"
    e = one(outs[4], actor="qemu")
    assert (e.op, e.outcome, e.rule, e.unit) == ("device-add", "skipped", "qemu-cm-required", "host-dmar1")
    assert e.reason == HOTPLUG_CM  # the guest's IOMMU is on: the listener's check speaks first
    assert outs[4].message == HOTPLUG_CM + " (the VM runs on without it)"
    q = state(m)["qemu"]
    assert (q["plugged"], q["refused"], q["error"], q["shadow"]) == (False, True, HOTPLUG_CM, [])
    assert -1 not in m.kvm.files and m.qemu.host_vfio.domain_of(-1) is None
    with pytest.raises(CommandError, match="not in the VM: QEMU refused its device_add"):
        m.execute("dma 3 0x100000 r")
    # The guest goes on mapping; nothing traps into a notifier, nothing is shadowed.
    o = m.execute("map 3 0x200000 4K")
    assert not events(o, actor="qemu")
    assert_ok(m)
    # With caching mode back, device_add assigns it and the replay maps all the guest has.
    m.execute("toggle dmar0 CM")
    o = m.execute("device-add")
    assert one(o, actor="qemu", op="device-add").outcome == "issued"
    maps = events(o, actor="qemu", op="shadow-map", outcome="issued")
    assert [x.detail.split()[0] for x in maps] == ["0x100000+0x1000", "0x101000+0x1000", "0x200000+0x1000"]
    assert all("replay on notifier registration" in x.reason for x in maps)
    assert -1 in m.kvm.files and m.execute("dma 3 0x200000 r").translation.ok
    assert_ok(m)


def test_hotplug_with_snoop_control_is_refused_with_the_errno_text():
    m, outs = run("viommu", "device-del", "toggle dmar0 SC", "device-add")
    e = one(outs[2], actor="qemu")
    assert (e.op, e.rule, e.reason) == ("device-add", "qemu-sc-unsupported", HOTPLUG_SC)


def test_hotplug_with_the_guest_iommu_off_is_refused_by_set_iommu_device():
    # With translation off the device's address space is the nodmar alias: no notifier,
    # so vtd_dev_set_iommu_device() is the one that refuses CM=0.
    m, _ = run("viommu", "device-del", "toggle dmar0 CM")
    m.units["dmar0"].gsts &= ~regs.GSTS_TES
    assert m.qemu.hotplug_refusal() == ("qemu-cm-required",
                                        "Error: vfio 0000:02:00.0: Failed to set vIOMMU: " + CM_REQUIRED)


def test_device_del_and_add_follow_undo():
    m, _ = run("viommu", "attach 3", "map 3 0x100000 4K", "device-del")
    m.undo()
    assert state(m)["qemu"]["plugged"] is True and len(state(m)["qemu"]["shadow"]) == 1
    m.redo()
    assert state(m)["qemu"]["plugged"] is False
    with pytest.raises(CommandError, match="is not in the VM"):
        m.execute("device-del")


def _viommu_toml(tmp_path, cap_cm: bool = False, sc: bool = False, extra: str = "") -> str:
    text = resources.files("vtdtui").joinpath("scenarios/viommu.toml").read_text()
    if not cap_cm:
        text = text.replace('cap = "0x80d2008c222f0686"', 'cap = "0x80d2008c222f0606"')  # CAP.CM (bit 7) clear
    if sc:
        text = text.replace('ecap = "0xf00f5a"', 'ecap = "0xf00fda"')  # ECAP.SC (bit 7) set
    p = tmp_path / "vi.toml"
    p.write_text(text + extra)
    return str(p)


def test_a_scenario_with_caching_mode_off_and_an_assigned_device_is_refused_unless_forced(tmp_path):
    with pytest.raises(ScenarioError) as exc:
        Machine.from_scenario(_viommu_toml(tmp_path))
    msg = str(exc.value)
    assert msg.startswith(f"{tmp_path / 'vi.toml'}: qemu: unit 'dmar0' has CAP.CM=0") and CM_REQUIRED in msg
    m = Machine.from_scenario(_viommu_toml(tmp_path, extra="force = true\n"))
    assert not m.units["dmar0"].cm and state(m)["qemu"]["force"] is True and state(m)["qemu"]["plugged"] is True
    with pytest.raises(ScenarioError, match="ECAP.SC=1 .*force or not"):
        Machine.from_scenario(_viommu_toml(tmp_path, cap_cm=True, sc=True, extra="force = true\n"))


# ----------------------------------------------------------------------------- the what-if


def test_forced_assignment_without_caching_mode_misses_the_mapping():
    m, outs = run("viommu", "set qemu-force on", "toggle dmar0 CM", "attach 3", "map 3 0x100000 64K rw")
    o = outs[3]
    e = one(o, actor="driver", unit="dmar0", op="iotlb-invalidation")
    assert (e.outcome, e.rule) == ("skipped", "map-np2p")  # CM=0: no PSI, nothing traps
    assert not events(o, op="shadow-map")
    assert not events(o, actor="qemu")
    st = state(m)
    assert st["qemu"]["shadow"] == [] and st["qemu"]["force"] is True and st["qemu"]["refused"] is False

    o = m.execute("dma 3 0x100000 r")
    assert not o.translation.ok
    assert one(o, actor="hw", op="fault").unit == "host-dmar1"
    st = state(m)
    (f,) = unit_state(st, "host-dmar1")["faults"]
    assert f["bdf"] == "02:00.0" and f["iova"] == "0x100000" and f["reason"] == 6
    assert unit_state(st, "dmar0")["faults"] == []

    # An emulated device in the same guest: QEMU walks the guest tables itself.
    m.execute("attach 2")
    m.execute("map 2 0x100000 64K rw")
    o = m.execute("dma 2 0x100000 r")
    assert o.translation.ok and o.translation.hpa == 0x100000 + GUEST_RAM
    assert one(o, actor="hw", op="dma").unit == "dmar0"


def test_psi_after_cm_comes_back_syncs_only_its_range():
    m, _ = run("viommu", "set qemu-force on", "toggle dmar0 CM", "attach 3", "map 3 0x100000 4K", "toggle dmar0 CM")
    o = m.execute("map 3 0x200000 4K")
    shadows = events(o, actor="qemu", op="shadow-map", outcome="issued")
    assert [e.detail.split(" ")[0] for e in shadows] == ["0x200000+0x1000"]
    assert not m.execute("dma 3 0x100000 r").translation.ok
    assert m.execute("dma 3 0x200000 r").translation.ok


def test_forced_qemu_follows_the_invalidations_the_guest_still_sends():
    # Without CM the guest's unmap is lazy; the flush queue's DSI still traps, and a
    # forced QEMU diffs the whole address space from it.
    m, outs = run("viommu", "attach 3", "map 3 0x100000 4K", "set qemu-force on", "toggle dmar0 CM",
                  "unmap 3 0x100000 4K", "flush-queue 3")
    assert not events(outs[4], actor="qemu")
    (e,) = events(outs[5], actor="qemu", op="shadow-unmap", outcome="issued")
    assert "domain-selective" in e.reason
    assert e.detail == "0x100000+0x1000"  # the non-present leaf's span: the guest keeps its table pages
    assert not m.execute("dma 3 0x100000 r").translation.ok


# ----------------------------------------------------------------------------- item 5: unmap-all vs diff


def _synced(*cmds):
    m, _ = run("viommu", "attach 3", "map 3 0x100000 8K rw", *cmds)
    return m, m.qemu.guest_unit, len(m.journal)


@pytest.mark.parametrize("gran, label", [(regs.GRAN_GLOBAL, "global"), (regs.GRAN_DOMAIN, "domain, done as global")])
def test_global_and_domain_context_invalidation_unmap_everything_then_replay(gran, label):
    # vtd_process_context_cache_desc(): domain-selective falls through to
    # vtd_context_global_invalidate() → vtd_address_space_refresh_all() (unmap the whole
    # range) → vtd_iommu_replay_all(), even when nothing changed.
    m, guest, mark = _synced()
    guest.invalidate_context(gran, did=2)
    evs = [e for e in m.journal.since(mark) if e.actor == "qemu"]
    assert [(e.op, e.outcome) for e in evs] == [("shadow-unmap", "issued"), ("shadow-map", "issued"),
                                                ("shadow-map", "issued")]
    assert evs[0].detail == "0x0+0x1000000000000 (2 mapping(s))"
    assert f"guest context-cache invalidation ({label})" in evs[0].reason and "refresh_all" in evs[0].reason
    assert all("vtd_iommu_replay_all" in e.reason for e in evs[1:])
    assert len(m.qemu.shadow) == 2 and m.execute("dma 3 0x101000 w").translation.ok


def test_device_context_and_iotlb_invalidations_are_a_diff():
    m, guest, mark = _synced()
    guest.invalidate_context(regs.GRAN_DEVICE, did=2, source_id=0x18)  # 00:03.0
    guest.invalidate_iotlb(regs.GRAN_GLOBAL)
    guest.invalidate_iotlb(regs.GRAN_DOMAIN, did=2)
    evs = [e for e in m.journal.since(mark) if e.actor == "qemu"]
    assert [(e.op, e.outcome) for e in evs] == [("shadow-map", "skipped")] * 3
    assert all("shadow already matches" in e.reason for e in evs)
    # Another device's context entry, another domain's IOTLB: not this notifier's business.
    mark = len(m.journal)
    guest.invalidate_context(regs.GRAN_DEVICE, did=9, source_id=0x10)  # 00:02.0
    guest.invalidate_iotlb(regs.GRAN_DOMAIN, did=9)
    assert not [e for e in m.journal.since(mark) if e.actor == "qemu"]


def test_context_device_invalidation_masks_the_function_bits():
    # vtd_context_device_invalidate(): FM=3 masks SID bits 2:0, so 00:03.7 covers 00:03.0.
    m, guest, mark = _synced()
    guest.invalidate_context(regs.GRAN_DEVICE, did=2, source_id=0x1F, fm=3)
    assert one(m.journal.since(mark), actor="qemu").reason.startswith("guest context-cache invalidation (device)")


# ----------------------------------------------------------------------------- the guest side


def test_qemu_vtd_translation_caches_no_negative_entries():
    # vtd_do_iommu_translate caches only successful walks, even with CM=1.
    m, outs = run("viommu", "attach 2", "dma 2 0x100000 r", "dma 1 0x0 r")
    assert outs[1].translation.fault.reason == 0x06
    assert outs[2].translation.fault.reason == 0x02
    st = state(m)
    assert all(e["present"] for e in unit_state(st, "dmar0")["context_cache"])
    assert all(e.get("present", True) for e in unit_state(st, "dmar0")["iotlb"])
    # So a guest that skips the CM invalidations still works for emulated devices…
    m, _ = run("viommu", "attach 2", "dma 2 0x100000 r", "set skip-invalidation on", "map 2 0x100000 4K")
    assert m.execute("dma 2 0x100000 r").translation.ok


def test_skipped_guest_invalidation_breaks_only_the_assigned_device():
    # …but the assigned device depends on the trapped invalidation to get its shadow.
    m, outs = run("viommu", "attach 3", "set skip-invalidation on", "map 3 0x100000 4K")
    assert not events(outs[2], actor="qemu", op="shadow-map", outcome="issued")
    assert not m.execute("dma 3 0x100000 r").translation.ok


def test_guest_driver_owns_groups_and_clflushes():
    m, (o,) = run("viommu", "attach 2")
    st = state(m)
    g = group_state(st, 2)
    assert g["owner"] == "driver" and g["unit"] == "dmar0"
    d = domain_state(st, g["domain"])
    assert d["owner"] == "driver"
    # QEMU never sets ECAP.C: the guest clflushes every context entry.
    assert one(o, actor="driver", op="clflush", detail_has="context entry 00:02.0").outcome == "issued"
