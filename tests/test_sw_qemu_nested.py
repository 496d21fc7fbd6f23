"""QEMU intel-iommu with x-flts=on over an iommufd backend (sw/qemu_accel.py): the host
nests the assigned device over the guest's first stage instead of shadowing it.

Two worlds built by hand, as machine.Machine._world does: the guest (QEMU's vIOMMU
dmar0: CAP/ECAP that vtd_cap_init() computes for x-scalable-mode=on,x-flts=on,
caching-mode=on, REFERENCE-2 §15) and the host (the server's unit: NEST, FS1GP).  Guest
RAM [0, 1 GiB) is host RAM at HPA 0x100000000 (the host unit's foreign_ram window).

Sources: qemu/qemu@554a719e hw/i386/intel_iommu_accel.c (vtd_check_hiod_accel,
vtd_create_fs_hwpt, vtd_flush_host_piotlb_all_locked); the PASID-cache series
(vtd_pasid_cache_sync_locked); Linux pasid.c pasid_pte_config_nestd (host entry PGTT 3).
"""

from __future__ import annotations

import pytest

from vtdtui.hw import CpuCache, DmarUnit, PageAllocator, PhysMem
from vtdtui.hw.sm_entries import PGTT_NESTED
from vtdtui.sw import rules
from vtdtui.sw.journal import Journal
from vtdtui.sw.linux import IntelIommuDriver
from vtdtui.sw.vfio import Group

iommufd_mod = pytest.importorskip("vtdtui.sw.iommufd")
from vtdtui.sw.qemu_accel import (BRIDGE_UNSUPPORTED, FS1GP_UNSUPPORTED, HWPT_ALLOC_FAILED,  # noqa: E402
                                  QemuAccel)
from vtdtui.sw.qemu import CM_REQUIRED, FLTS_NEEDS_IOMMUFD  # noqa: E402

GUEST_CAP, GUEST_ECAP = 0x81D2008C222F0686, 0x880000F00F5A
HOST_CAP, HOST_ECAP = 0x19ED008C40780C66, 0x3EE9E86F050DF
NEST, FS1GP = 1 << 26, 1 << 56
GUEST_RAM, HOST_RAM = 0x40000000, 0x100000000  # guest RAM size; its HPA base
NIC, HOST_NIC = 0x0018, 0x0200  # 00:03.0 in the guest, 02:00.0 on the host
TABLES_BASE = 0x0100_0000


def _world(size: int):
    mem = PhysMem(size)
    cache = CpuCache(mem)
    return mem, cache, PageAllocator(mem, cache, TABLES_BASE, min(0xC000_0000, size))


class Rig:
    def __init__(self, *, host_cap=HOST_CAP, host_ecap=HOST_ECAP, guest_cap=GUEST_CAP, **qemu_kw):
        self.j = Journal()
        gmem, self.gcache, galloc = _world(GUEST_RAM)
        hmem, hcache, halloc = _world(1 << 33)
        self.gunit = DmarUnit("dmar0", 0xFED90000, guest_cap, GUEST_ECAP, gmem, self.gcache, haw=48,
                              emulated_by_qemu=True)
        self.hunit = DmarUnit("host-dmar1", 0xFBFFC000, host_cap, host_ecap, hmem, hcache, haw=46)
        self.hunit.foreign_ram.append((HOST_RAM, GUEST_RAM, self.gcache))
        ids = [1]
        self.gdrv = IntelIommuDriver(self.j, self.gcache, galloc, [self.gunit], domain_ids=ids, intel_iommu_sm=True)
        self.hdrv = IntelIommuDriver(self.j, hcache, halloc, [self.hunit], domain_ids=ids, intel_iommu_sm=True)
        self.gdrv.init_unit(self.gunit)
        self.hdrv.init_unit(self.hunit)
        self.gdrv.probe_device(self.gunit, NIC)
        self.hdrv.probe_device(self.hunit, HOST_NIC)
        self.fd = iommufd_mod.Iommufd(self.j, self.hdrv)
        self.q = QemuAccel(self.j, self.gunit, NIC, self.fd, Group(-1, "host-dmar1", [HOST_NIC]), self.hunit,
                           HOST_RAM, GUEST_RAM, host_group_no=7, **qemu_kw)
        self.q.attach()
        self.gdom = None

    def mark(self) -> int:
        return len(self.j.events)

    def since(self, n: int, **want) -> list:
        return [e for e in self.j.events[n:] if all(getattr(e, k) == v for k, v in want.items())]

    def guest_attach(self):
        self.gdom = self.gdrv.domain_alloc("dma", self.gunit)
        self.gdrv.attach_device(self.gdom, self.gunit, NIC)

    def host_pe(self):
        pr = self.hunit.read_pasid_entry(HOST_NIC, None, self.hunit.cpu_read_q)
        return pr


def _plugged(**kw) -> Rig:
    r = Rig(**kw)
    assert r.q.device_add(), r.q.hotplug_error
    return r


def test_device_add_allocates_a_nest_parent_mapping_all_guest_ram():
    r = _plugged()
    fd = r.fd
    parent = fd.objects[r.q.parent_hwpt]
    assert parent.kind == "paging" and parent.nest_parent and not parent.auto
    assert parent.domain.nest_parent and r.q.fs_hwpt is None
    ioas = fd.objects[r.q.ioas_id]
    assert [(a.iova, a.size, a.hpa, a.r, a.w) for a in ioas.areas] == [(0, GUEST_RAM, HOST_RAM, True, True)]
    assert fd.hwpt_of(r.q.dev_id) is parent
    # The guest has not set up the NIC yet: the host walks GPA → HPA through the parent.
    t = r.hunit.translate(HOST_NIC, 0x5000, False)
    assert t.ok and t.hpa == HOST_RAM + 0x5000
    assert r.q.host_domains() == [parent.domain]
    js = r.q.to_json()
    assert (js["flts"], js["backend"], js["parent_hwpt"], js["fs_hwpt"], js["shadow"]) == \
        (True, "iommufd", parent.id, None, [])


def test_guest_attach_traps_a_pasid_cache_flush_and_builds_a_nested_hwpt():
    r = _plugged()
    n = r.mark()
    r.guest_attach()
    gpe = r.gunit.read_pasid_entry(NIC, None, r.gunit.cpu_read_q).entry
    assert gpe.pgtt == 1  # the guest kernel runs first stage (ECAP FLTS only)
    trap = [e for e in r.since(n, actor="qemu", rule="qemu-nested-pasid") if e.outcome == "issued"]
    assert len(trap) == 1 and "vtd_propagate_guest_pasid" in trap[0].reason
    nested = r.fd.objects[r.q.fs_hwpt]
    assert nested.kind == "nested" and nested.parent == r.q.parent_hwpt
    assert (nested.s1.pgtbl_addr, nested.s1.addr_width) == (gpe.fsptptr, 48 + 9 * gpe.flpm)
    assert r.fd.hwpt_of(r.q.dev_id) is nested
    # The host PASID entry (intel_pasid_setup_nested): PGTT 3, FLPTR = the guest's
    # FSPTPTR (a GPA), the nested domain's DID, the parent's second stage.
    pr = r.host_pe()
    assert pr.ok and pr.entry.pgtt == PGTT_NESTED
    assert pr.entry.fsptptr == gpe.fsptptr
    assert pr.entry.did == nested.domain.dids["host-dmar1"]
    assert pr.entry.ssptptr == r.fd.objects[r.q.parent_hwpt].domain.pgd
    assert r.q.host_domains() == [r.fd.objects[r.q.parent_hwpt].domain, nested.domain]
    for e in r.since(n, actor="qemu"):
        assert e.rule in rules.RULES


def test_guest_map_causes_no_trap_and_the_host_walks_the_guest_tables():
    r = _plugged()
    r.guest_attach()
    n, traps = r.mark(), r.q.traps
    r.gdrv.map_range(r.gdom, 0x100000, 0x240000, 0x4000, True, True)
    assert r.q.traps == traps and not r.since(n, actor="qemu")
    t = r.hunit.translate(HOST_NIC, 0x102000, True)
    assert t.ok and t.hpa == 0x242000 + HOST_RAM
    # An IOVA the guest did not map faults on the host's nested walk.
    assert not r.hunit.translate(HOST_NIC, 0x900000, False).ok


def test_guest_unmap_traps_piotlb_and_invalidates_the_nested_hwpt():
    r = _plugged()
    r.guest_attach()
    r.gdrv.map_range(r.gdom, 0x100000, 0x240000, 0x4000, True, True)
    assert r.hunit.translate(HOST_NIC, 0x101000, False).ok  # cached in the host IOTLB
    nested_did = r.host_pe().entry.did
    n = r.mark()
    r.gdrv.unmap_range(r.gdom, 0x100000, 0x4000, lazy=False)
    trap = [e for e in r.since(n, actor="qemu", rule="qemu-nested-piotlb") if e.outcome == "issued"]
    assert [e.scope for e in trap] == ["piotlb-page"]
    inv = r.since(n, actor="iommufd", op="hwpt-invalidate")
    assert inv and inv[0].scope == "page"
    host_p = [e for e in r.since(n, unit="host-dmar1", op="piotlb-invalidation") if e.outcome == "issued"]
    assert host_p and all(e.did == nested_did for e in host_p)
    assert not r.hunit.translate(HOST_NIC, 0x101000, False).ok


def test_guest_detach_traps_the_teardown_and_the_device_is_detached():
    r = _plugged()
    r.guest_attach()
    fs = r.q.fs_hwpt
    r.gdrv.detach_device(r.gdom, r.gunit, NIC)
    assert r.q.fs_hwpt is None and fs not in r.fd.objects
    assert r.fd.hwpt_of(r.q.dev_id) is None
    assert any("vtd_device_detach_iommufd" in e.reason for e in r.j.events if e.actor == "qemu")


def test_device_del_tears_everything_down():
    r = _plugged()
    r.guest_attach()
    r.q.device_del()
    assert not r.fd.hwpts and not r.fd.devices and r.q.host_domains() == []
    assert not r.q.plugged and r.q.to_json()["parent_hwpt"] is None


@pytest.mark.parametrize("kw, text, rule", [
    (dict(host_ecap=HOST_ECAP & ~NEST), f"{HWPT_ALLOC_FAILED}: Operation not supported", "qemu-nested-device"),
    (dict(host_cap=HOST_CAP & ~FS1GP), f"Failed to set vIOMMU: {FS1GP_UNSUPPORTED}", "qemu-nested-device"),
    (dict(pci_bridge=True), f"Failed to set vIOMMU: {BRIDGE_UNSUPPORTED}", "qemu-nested-device"),
    (dict(backend="type1"), f"Failed to set vIOMMU: {FLTS_NEEDS_IOMMUFD}", "qemu-nested-device"),
    (dict(guest_cap=GUEST_CAP & ~0x80), f"Failed to set vIOMMU: {CM_REQUIRED}", "qemu-cm-required"),
])
def test_each_refusal_prints_qemus_text_and_assigns_nothing(kw, text, rule):
    r = Rig(**kw)
    assert r.q.hotplug_refusal() == (rule, f"Error: vfio 0000:02:00.0: {text}")
    assert r.q.start_refusal().endswith(f"vfio 0000:02:00.0: {text}")
    assert not r.q.device_add()
    assert r.q.refusing and r.q.hotplug_error == f"Error: vfio 0000:02:00.0: {text}"
    ev = [e for e in r.j.events if e.actor == "qemu" and e.op == "device-add"]
    assert [(e.outcome, e.rule) for e in ev] == [("skipped", rule)]
    assert not r.fd.hwpts and not r.fd.devices and not r.fd.ioas


def test_fs1gp_off_accepts_a_host_without_fs1gp():
    r = _plugged(host_cap=HOST_CAP & ~FS1GP, fs1gp=False)
    assert r.q.plugged


def test_guest_pass_through_attaches_the_parent_and_a_later_dma_domain_nests():
    r = _plugged()
    ident = r.gdrv.domain_alloc("identity", r.gunit, "identity")
    r.gdrv.attach_device(ident, r.gunit, NIC)
    assert r.gunit.read_pasid_entry(NIC, None, r.gunit.cpu_read_q).entry.pgtt == 4
    parent = r.fd.objects[r.q.parent_hwpt]
    assert r.q.fs_hwpt is None and r.fd.hwpt_of(r.q.dev_id) is parent
    t = r.hunit.translate(HOST_NIC, 0x7000, False)
    assert t.ok and t.hpa == HOST_RAM + 0x7000  # iommu=pt in the guest: GPA → HPA only
    r.gdrv.detach_device(ident, r.gunit, NIC)
    r.guest_attach()
    assert r.fd.objects[r.q.fs_hwpt].kind == "nested"


def test_piotlb_of_another_did_is_not_propagated():
    r = _plugged()
    r.guest_attach()
    did = r.gunit.read_pasid_entry(NIC, None, r.gunit.cpu_read_q).entry.did
    n = r.mark()
    r.gunit.invalidate_piotlb(2, did + 1, 0)
    (e,) = r.since(n, actor="qemu")
    assert e.outcome == "skipped" and f"has DID {did}" in e.reason
    assert not r.since(n, actor="iommufd")
