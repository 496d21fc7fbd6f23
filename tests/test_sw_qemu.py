"""QEMU's vIOMMU keeping a host shadow for an assigned device (REFERENCE.md §8), end to end.

viommu scenario: guest unit dmar0 (QEMU's CAP/ECAP, CM=1), guest driver owns the
groups; group 3 (00:03.0) is the host's 02:00.0 behind host-dmar1.  IOVA = GPA - 0x40000000
offset for guest buffers (ram_base), HPA = GPA + 0x100000000 (host_ram_base).
"""

from __future__ import annotations

from machinekit import domain_state, events, group_state, lines, one, run, state, unit_state
from vtdtui.sw.qemu import CM_REQUIRED

GUEST_RAM = 0x40000000
HOST_RAM = 0x100000000


def test_caching_mode_guest_map_is_shadowed_on_the_host():
    m, (_, o) = run("viommu", "attach 3", "map 3 0x100000 64K rw")
    guest = one(o, actor="driver", unit="dmar0", op="iotlb-invalidation")
    assert (guest.outcome, guest.rule, guest.scope) == ("issued", "map-np2p", "page")
    shadows = events(o, actor="qemu", op="shadow-map", outcome="issued")
    assert len(shadows) == 16, lines(o)
    assert all(e.unit == "host-dmar1" and e.rule == "qemu-shadow" for e in shadows)
    assert "0x100000+0x1000" in shadows[0].detail and f"HPA {0x100000 + GUEST_RAM + HOST_RAM:#x}" in shadows[0].detail
    # The guest invalidation trapped; QEMU turned it into VFIO_IOMMU_MAP_DMA on the host.
    assert not events(o, actor="qemu", outcome="skipped", rule="qemu-cm-required")

    o = m.execute("dma 3 0x100000 r")
    t = o.translation
    assert t.ok and t.hpa == 0x100000 + GUEST_RAM + HOST_RAM
    e = one(o, actor="hw", op="dma")
    assert e.unit == "host-dmar1"

    st = state(m)
    q = st["qemu"]
    assert q["assigned"] == "00:03.0" and q["caching_mode"] is True and q["refused"] is False
    assert q["traps"] > 0
    assert len(q["shadow"]) == 16
    assert q["shadow"][0] == {"iova": "0x100000", "size": "0x1000", "gpa": hex(0x100000 + GUEST_RAM)}
    host_domains = [d for d in st["domains"] if d["unit"] == "host-dmar1"]
    assert [d["mapped_pages"] for d in host_domains] == [16]
    assert unit_state(st, "host-dmar1")["level"] == "host" and unit_state(st, "dmar0")["level"] == "guest"


def test_guest_unmap_and_detach_remove_the_shadow():
    m, _ = run("viommu", "attach 3", "map 3 0x100000 8K rw", "map 3 0x200000 4K r")
    o = m.execute("unmap 3 0x100000 8K")
    unmaps = events(o, actor="qemu", op="shadow-unmap", outcome="issued")
    assert [e.detail for e in unmaps] == ["0x100000+0x1000", "0x101000+0x1000"]
    assert m.execute("dma 3 0x100000 r").translation.fault.reason == 0x06
    assert [s["iova"] for s in state(m)["qemu"]["shadow"]] == ["0x200000"]
    o = m.execute("detach 3")
    (e,) = events(o, actor="qemu", op="shadow-unmap", outcome="issued")
    assert e.detail == "0x200000+0x1000" and "context-cache invalidation" in e.reason
    assert state(m)["qemu"]["shadow"] == []


def test_every_guest_invalidation_traps():
    m, _ = run("viommu", "attach 3")
    before = state(m)["qemu"]["traps"]
    m.execute("map 3 0x100000 4K")
    after_map = state(m)["qemu"]["traps"]
    assert after_map == before + 1  # one PSI
    m.execute("unmap 3 0x100000 4K")
    assert state(m)["qemu"]["traps"] == after_map + 1


def test_without_caching_mode_qemu_refuses_assignment():
    m, outs = run("viommu", "toggle dmar0 CM", "attach 3")
    e = one(outs[1], actor="qemu")
    assert (e.op, e.outcome, e.rule, e.unit) == ("shadow-map", "skipped", "qemu-cm-required", "host-dmar1")
    assert e.reason == "Device assignment is not allowed without enabling caching-mode=on for Intel IOMMU."
    assert e.reason == CM_REQUIRED
    q = state(m)["qemu"]
    assert q["refused"] is True and q["caching_mode"] is False
    o = m.execute("map 3 0x100000 64K rw")
    assert not events(o, actor="qemu", outcome="issued")


def test_forced_assignment_without_caching_mode_misses_the_mapping():
    m, outs = run("viommu", "toggle dmar0 CM", "set qemu-force on", "attach 3", "map 3 0x100000 64K rw")
    assert not events(outs[2], actor="qemu", rule="qemu-cm-required")
    o = outs[3]
    e = one(o, actor="driver", unit="dmar0", op="iotlb-invalidation")
    assert (e.outcome, e.rule) == ("skipped", "map-np2p")  # CM=0: no PSI, nothing traps
    assert not events(o, op="shadow-map")
    assert not events(o, actor="qemu")
    st = state(m)
    assert st["qemu"]["shadow"] == [] and st["qemu"]["force"] is True and st["qemu"]["refused"] is False

    o = m.execute("dma 3 0x100000 r")
    assert not o.translation.ok
    e = one(o, actor="hw", op="fault")
    assert e.unit == "host-dmar1"
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
    # Forced without CM the shadow misses the first map.  With CM on again the next
    # map's PSI traps and QEMU walks just the range it names.
    m, _ = run("viommu", "toggle dmar0 CM", "set qemu-force on", "attach 3", "map 3 0x100000 4K",
               "toggle dmar0 CM")
    o = m.execute("map 3 0x200000 4K")
    shadows = events(o, actor="qemu", op="shadow-map", outcome="issued")
    assert [e.detail.split(" ")[0] for e in shadows] == ["0x200000+0x1000"]
    # A PSI syncs only its range: 0x100000 is still missing on the host.
    assert not m.execute("dma 3 0x100000 r").translation.ok
    assert m.execute("dma 3 0x200000 r").translation.ok


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


def test_snoop_control_on_the_vtd_refuses_assignment():
    # vtd_iommu_notify_flag_changed(): the snoop-control check comes before the CM check
    # and refuses any notifier: "Snoop Control with vhost or VFIO is not supported".
    m, outs = run("viommu", "toggle dmar0 SC", "attach 3", "map 3 0x100000 4K")
    e = one(outs[1], actor="qemu")
    assert (e.op, e.outcome, e.unit) == ("shadow-map", "skipped", "host-dmar1")
    assert e.reason == "Snoop Control with vhost or VFIO is not supported"
    assert not events(outs[2], actor="qemu", op="shadow-map", outcome="issued")
    assert state(m)["qemu"]["refused"] is True
    assert not m.execute("dma 3 0x100000 r").translation.ok
    # Forcing past the caching-mode check does not lift it.
    m, outs = run("viommu", "toggle dmar0 SC", "set qemu-force on", "attach 3", "map 3 0x100000 4K")
    assert not events(outs[3], actor="qemu", op="shadow-map", outcome="issued")
    assert state(m)["qemu"]["refused"] is True


def test_forced_qemu_follows_the_invalidations_the_guest_still_sends():
    # Without CM the guest's unmap is lazy; the flush queue's DSI still traps, and a
    # forced QEMU resyncs the whole address space from it.
    m, outs = run("viommu", "attach 3", "map 3 0x100000 4K", "toggle dmar0 CM", "set qemu-force on",
                  "unmap 3 0x100000 4K", "flush-queue 3")
    assert not events(outs[4], actor="qemu")
    (e,) = events(outs[5], actor="qemu", op="shadow-unmap", outcome="issued")
    assert e.detail == "0x100000+0x1000" and "domain-selective" in e.reason
    assert not events(outs[5], rule="qemu-cm-required")
    assert not m.execute("dma 3 0x100000 r").translation.ok
    # Not forced, QEMU refuses the same trapped invalidation.
    m, outs = run("viommu", "attach 3", "map 3 0x100000 4K", "toggle dmar0 CM", "unmap 3 0x100000 4K",
                  "flush-queue 3")
    e = one(outs[4], actor="qemu")
    assert (e.rule, e.outcome, e.reason) == ("qemu-cm-required", "skipped", CM_REQUIRED)
