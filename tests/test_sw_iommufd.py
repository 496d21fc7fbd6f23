"""iommufd's object model over the Intel driver (sw/iommufd.py; REFERENCE-2 §16, and the
kernel's drivers/iommu/iommufd/{device,hw_pagetable,io_pagetable,ioas}.c).

Units: desktop's two legacy units — dmar0 (CAP 0x1c0000c40660462, ECAP 0x19e2ff0505e:
SC=0, C=0) behind the integrated GPU and dmar1 (CAP 0xd2008c40660462, ECAP 0xf050da:
SC=1, C=0) — and, for nesting, server's Sapphire Rapids unit (CAP 0x19ed008c40780c66,
ECAP 0x3ee9e86f050df: SMTS, FLTS, SLTS, NEST, SC=1) in scalable mode.  Expected entry
bits are the VT-d spec's: second-stage leaf SNP bit 11; PASID entry PGTT bits 8:6
(3 = nested).
"""

from __future__ import annotations

import pytest

from vtdtui.hw import CpuCache, DmarUnit, PageAllocator, PhysMem
from vtdtui.hw.entries import level_index
from vtdtui.hw.sm_entries import PGTT_NESTED
from vtdtui.sw.iommufd import Iommufd, IommufdError
from vtdtui.sw.iommufd_uapi import (
    IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_DATA_VTD_S1, IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, U64_MAX, VtdS1,
    VtdS1Invalidate,
)
from vtdtui.sw.journal import Journal
from vtdtui.sw.linux import IntelIommuDriver

GPU, NIC, NIC2 = 0x0010, 0x0300, 0x0400  # 00:02.0 on dmar0; 03:00.0, 04:00.0 on dmar1
SNP = 1 << 11
RAM = 0x2000_0000


def desktop(**kw):
    mem = PhysMem(1 << 36)
    cache = CpuCache(mem)
    alloc = PageAllocator(mem, cache, 0x100_0000, 0xC000_0000)
    u0 = DmarUnit("dmar0", 0xFED90000, 0x1C0000C40660462, 0x19E2FF0505E, mem, cache, haw=39)
    u1 = DmarUnit("dmar1", 0xFED91000, 0xD2008C40660462, 0xF050DA, mem, cache, haw=39)
    j = Journal()
    drv = IntelIommuDriver(j, cache, alloc, [u0, u1])
    for u in (u0, u1):
        drv.init_unit(u)
    drv.probe_device(u0, GPU)
    for sid in (NIC, NIC2):
        drv.probe_device(u1, sid)
    return Iommufd(j, drv, **kw), j


def leaf(fd, d, iova):
    """The leaf entry of `iova` in domain `d`'s second-stage table, read from memory."""
    table = d.pgd
    for level in range(d.levels, 0, -1):
        pte = fd.driver.cache.cpu_read_q(table + level_index(iova, level) * 8)
        if not pte & 3:
            return 0
        if level == 1 or pte & (1 << 7):
            return pte
        table = pte & 0x000F_FFFF_FFFF_F000
    return 0


def events(j, mark, **want):
    return [e for e in j.events[mark:] if all(getattr(e, k) == v for k, v in want.items())]


def snapshot(fd):
    return fd.to_json(), sorted(fd.objects), dict(fd.driver.domains)


# ----------------------------------------------------------------------------- bind


def test_bind_takes_enforce_cache_coherency_from_ecap_sc_and_ids_share_one_space():
    fd, _ = desktop()
    g = fd.bind(GPU, "dmar0", 0)
    n = fd.bind(NIC, "dmar1", 4)
    io = fd.ioas_alloc()
    assert (g.id, n.id, io.id) == (1, 2, 3)
    assert (g.enforce_cache_coherency, n.enforce_cache_coherency) == (False, True)
    assert (fd.enforced_coherent(g.id), fd.enforced_coherent(n.id)) == (False, True)
    info = fd.get_hw_info(n.id)
    assert (info.cap_reg, info.ecap_reg, info.flags) == (0xD2008C40660462, 0xF050DA, 1)
    with pytest.raises(IommufdError, match=r"-EBUSY\)$"):
        fd.bind(GPU, "dmar0", 0)
    with pytest.raises(IommufdError, match=r"-ENODEV\)$"):
        fd.bind(0x0500, "dmar9", 7)
    assert [d.id for d in fd.devices] == [1, 2] and fd.device_of(NIC, "dmar1") is n


# ----------------------------------------------------------------------------- automatic domains


def test_snooping_device_first_then_gpu_gets_its_own_hwpt():
    fd, j = desktop()
    g, n = fd.bind(GPU, "dmar0", 0), fd.bind(NIC, "dmar1", 4)
    io = fd.ioas_alloc()
    fd.ioas_map(io.id, 0x10_0000, 0x2000, RAM)
    hn = fd.attach(n.id, io.id)
    assert hn.auto and hn.enforce_cache_coherency and hn.domain.force_snooping
    mark = len(j)
    hg = fd.attach(g.id, io.id)
    assert hg is not hn and not hg.enforce_cache_coherency
    refused = events(j, mark, op="hwpt-attach", outcome="skipped")
    assert len(refused) == 1 and refused[0].rule == "iommufd-auto-domain"
    assert "no snoop control" in refused[0].reason and "-EINVAL" in refused[0].reason
    alloc = events(j, mark, op="hwpt-alloc")
    assert len(alloc) == 1 and "enforce_cache_coherency=false" in alloc[0].reason
    # Both domains hold the IOAS's area; only the snooping one has SNP in its leaves.
    for iova in (0x10_0000, 0x10_1000):
        assert leaf(fd, hn.domain, iova) & ~0xFFF == RAM + iova - 0x10_0000
        assert leaf(fd, hg.domain, iova) & ~0xFFF == RAM + iova - 0x10_0000
        assert leaf(fd, hn.domain, iova) & SNP and not leaf(fd, hg.domain, iova) & SNP
    assert io.hwpts == [hn.id, hg.id]
    # A map now goes to both, and nobody cleans CPU caches for the non-snooping one.
    mark = len(j)
    fd.ioas_map(io.id, 0x20_0000, 0x1000, RAM + 0x10_0000, w=False)
    assert leaf(fd, hn.domain, 0x20_0000) & 3 == 1 and leaf(fd, hg.domain, 0x20_0000) & 3 == 1
    (flush,) = events(j, mark, op="cpu-cache-flush")
    assert (flush.outcome, flush.rule) == ("skipped", "iommufd-noncoherent-flush")
    assert f"HWPT {hg.id}" in flush.reason


def test_gpu_first_mainline_lets_the_snooping_device_join_the_non_coherent_hwpt():
    # device.c since "iommufd: Only enforce cache coherency in iommufd_hw_pagetable_alloc"
    # (≈6.7): no upgrade at attach; the Intel driver refuses only a snooping domain on a
    # unit without SC, so the NIC joins the GPU's HWPT.
    fd, j = desktop()
    g, n = fd.bind(GPU, "dmar0", 0), fd.bind(NIC, "dmar1", 4)
    io = fd.ioas_alloc()
    hg = fd.attach(g.id, io.id)
    mark = len(j)
    assert fd.attach(n.id, io.id) is hg
    (joined,) = events(j, mark, op="hwpt-attach")
    assert joined.outcome == "issued" and "since 6.7" in joined.reason
    assert not hg.enforce_cache_coherency and hg.devices == [g.id, n.id]
    assert fd.enforced_coherent(n.id)  # KVM still sees the cdev's capability, not the HWPT's


def test_gpu_first_before_67_upgrade_fails_and_gives_two_hwpts():
    fd, j = desktop(attach_upgrades_cc=True)
    g, n = fd.bind(GPU, "dmar0", 0), fd.bind(NIC, "dmar1", 4)
    io = fd.ioas_alloc()
    hg = fd.attach(g.id, io.id)
    mark = len(j)
    hn = fd.attach(n.id, io.id)
    assert hn is not hg and hn.enforce_cache_coherency and not hg.enforce_cache_coherency
    refused = events(j, mark, op="hwpt-attach", outcome="skipped")
    assert len(refused) == 1 and "refused enforce_cache_coherency" in refused[0].reason
    assert refused[0].rule == "iommufd-enforce-cc"
    assert events(j, mark, op="enforce-cache-coherency", actor="driver", outcome="skipped")


def test_two_snooping_devices_share_one_hwpt():
    fd, j = desktop()
    a, b = fd.bind(NIC, "dmar1", 4), fd.bind(NIC2, "dmar1", 5)
    io = fd.ioas_alloc()
    h = fd.attach(a.id, io.id)
    assert fd.attach(b.id, io.id) is h
    assert h.devices == [a.id, b.id] and len(io.hwpts) == 1 and h.enforce_cache_coherency
    assert fd.hwpt_of(b.id) is h


def test_detach_destroys_the_automatic_hwpt_with_its_last_device():
    fd, _ = desktop()
    a, b = fd.bind(NIC, "dmar1", 4), fd.bind(NIC2, "dmar1", 5)
    io = fd.ioas_alloc()
    fd.ioas_map(io.id, 0x10_0000, 0x1000, RAM)
    h = fd.attach(a.id, io.id)
    fd.attach(b.id, io.id)
    fd.detach(a.id)
    assert h.id in fd.objects and fd.hwpt_of(a.id) is None
    fd.detach(b.id)
    assert h.id not in fd.objects and io.hwpts == [] and h.domain.id not in fd.driver.domains
    assert fd.driver.attached_domain(NIC, fd.driver.units["dmar1"]) is None
    fd.detach(b.id)  # VFIO: detaching a detached device does nothing
    assert fd.attach(a.id, io.id).id == h.id  # the lowest free id again


# ----------------------------------------------------------------------------- map / unmap


def test_unmap_takes_whole_areas_and_refuses_a_cut_leaving_state_unchanged():
    fd, _ = desktop()
    n = fd.bind(NIC, "dmar1", 4)
    io = fd.ioas_alloc()
    fd.ioas_map(io.id, 0x10_0000, 0x2000, RAM)
    fd.ioas_map(io.id, 0x30_0000, 0x1000, RAM + 0x8000)
    h = fd.attach(n.id, io.id)
    for bad, errno in (((0x10_1000, 0x1000, RAM), "-EEXIST"), ((0x40_0800, 0x1000, RAM), "-EINVAL"),
                       ((0x40_0000, 0, RAM), "-EINVAL")):
        with pytest.raises(IommufdError, match=rf"\({errno}\)$"):
            fd.ioas_map(io.id, *bad)
    with pytest.raises(IommufdError, match=r"-EINVAL\)$"):
        fd.ioas_map(io.id, 0x50_0000, 0x1000, RAM, r=False, w=False)
    before = snapshot(fd)
    with pytest.raises(IommufdError, match=r"cuts the area at 0x300000.*0x2000 bytes.*-ENOENT\)$"):
        fd.ioas_unmap(io.id, 0x10_0000, 0x20_0800)
    assert snapshot(fd) == before and leaf(fd, h.domain, 0x10_0000) & 3
    assert fd.ioas_unmap(io.id, 0x60_0000, 0x1000) == 0  # nothing there: success, 0 bytes
    assert fd.ioas_unmap(io.id, 0x10_0000, 0x10_0000) == 0x2000
    assert not leaf(fd, h.domain, 0x10_1000) and leaf(fd, h.domain, 0x30_0000) & 3
    assert fd.ioas_unmap(io.id, 0, U64_MAX) == 0x1000 and io.areas == []
    with pytest.raises(IommufdError, match=r"-ENOENT\)$"):
        fd.ioas_unmap(99, 0, 0x1000)


# ----------------------------------------------------------------------------- nesting

SM_CAP, SM_ECAP = 0x19ED008C40780C66, 0x3EE9E86F050DF
DEV = 0x0100  # 01:00.0
S1 = VtdS1(flags=0, pgtbl_addr=0x7_0000, addr_width=48)


def server():
    mem = PhysMem(1 << 36)
    cache = CpuCache(mem)
    alloc = PageAllocator(mem, cache, 0x100_0000, 0xC000_0000)
    u = DmarUnit("dmar0", 0xFBFFC000, SM_CAP, SM_ECAP, mem, cache, haw=46)
    j = Journal()
    drv = IntelIommuDriver(j, cache, alloc, [u], intel_iommu_sm=True)
    drv.init_unit(u)
    drv.probe_device(u, DEV)
    fd = Iommufd(j, drv)
    idev = fd.bind(DEV, "dmar0", 1)
    return fd, j, idev, fd.ioas_alloc()


def test_nest_parent_and_nested_hwpt_attach_and_invalidate():
    fd, j, idev, io = server()
    fd.ioas_map(io.id, 0, 0x10_0000, RAM)
    parent = fd.hwpt_alloc(idev.id, io.id, IOMMU_HWPT_ALLOC_NEST_PARENT)
    assert parent.kind == "paging" and parent.nest_parent and not parent.auto
    assert parent.domain.stage == "second" and leaf(fd, parent.domain, 0x5000) & ~0xFFF == RAM + 0x5000
    fd.attach(idev.id, parent.id)
    nested = fd.hwpt_alloc(idev.id, parent.id, 0, IOMMU_HWPT_DATA_VTD_S1, S1)
    assert nested.kind == "nested" and nested.parent == parent.id and nested.domain.stage == "nested"
    assert fd.attach(idev.id, nested.id) is nested  # a replace, as QEMU's VFIO_DEVICE_ATTACH_IOMMUFD_PT
    assert parent.devices == [] and nested.devices == [idev.id] and parent.id in fd.objects
    pe = fd.driver.units["dmar0"].read_pasid_entry(DEV, 0, read=fd.driver.cache.cpu_read_q).entry
    assert pe.present and pe.pgtt == PGTT_NESTED
    assert (pe.fsptptr, pe.ssptptr) == (S1.pgtbl_addr, parent.domain.pgd)
    assert pe.did == nested.domain.dids["dmar0"]
    # IOMMU_HWPT_INVALIDATE: one page, then everything.
    mark = len(j)
    assert fd.hwpt_invalidate(nested.id, IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, [VtdS1Invalidate(0x3000, 1)]) == 1
    assert fd.hwpt_invalidate(nested.id, IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, [VtdS1Invalidate(0, U64_MAX)]) == 1
    inv = events(j, mark, op="hwpt-invalidate")
    assert [(e.scope, e.outcome, e.rule) for e in inv] == [("page", "issued", "iommufd-invalidate"),
                                                          ("all", "issued", "iommufd-invalidate")]
    assert events(j, mark, actor="driver", op="piotlb-invalidation", outcome="issued")
    # An unaligned second entry: one done, then the driver's -EINVAL.
    with pytest.raises(IommufdError, match=r"1 of 2 entries done.*-EINVAL\)$"):
        fd.hwpt_invalidate(nested.id, IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
                           [VtdS1Invalidate(0x1000, 1), VtdS1Invalidate(0x1800, 1)])
    with pytest.raises(IommufdError, match=r"only a nested HWPT.*-EINVAL\)$"):
        fd.hwpt_invalidate(parent.id, IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, [VtdS1Invalidate(0, U64_MAX)])
    with pytest.raises(IommufdError, match=r"-EBUSY\)$"):
        fd.destroy(parent.id)  # the nested HWPT holds it
    fd.attach(idev.id, parent.id)
    fd.destroy(nested.id)
    assert nested.domain.id not in fd.driver.domains
    st = fd.to_json()
    assert st["hwpts"] == [{"id": parent.id, "kind": "paging", "auto": False, "nest_parent": True,
                            "domain": parent.domain.id, "parent": None, "enforce_cache_coherency": True,
                            "devices": ["01:00.0"]}]
    assert st["ioas"] == [{"id": io.id, "mappings": [{"iova": "0x0", "size": "0x100000", "hpa": hex(RAM)}]}]


def test_hwpt_alloc_refusals_leave_everything_as_it_was():
    fd, _, idev, io = server()
    auto = fd.attach(idev.id, io.id)
    plain = fd.hwpt_alloc(idev.id, io.id)
    before = snapshot(fd)
    cases = [
        ((idev.id, io.id, 1 << 5), "-EOPNOTSUPP"),  # a flag iommufd does not know
        ((idev.id, io.id, 0, IOMMU_HWPT_DATA_VTD_S1, S1), "-EOPNOTSUPP"),  # driver data for a paging domain
        ((idev.id, io.id, 0, IOMMU_HWPT_DATA_VTD_S1), "-EINVAL"),  # a type without data
        ((idev.id, auto.id, 0, IOMMU_HWPT_DATA_VTD_S1, S1), "-EINVAL"),  # parent automatic
        ((idev.id, plain.id, 0, IOMMU_HWPT_DATA_VTD_S1, S1), "-EINVAL"),  # parent without NEST_PARENT
        ((idev.id, plain.id, IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_DATA_VTD_S1, S1), "-EOPNOTSUPP"),
        ((idev.id, 77), "-EINVAL"),  # no such pt
        ((idev.id, idev.id), "-EINVAL"),  # a device is no pt
    ]
    for args, errno in cases:
        with pytest.raises(IommufdError, match=rf"\({errno}\)$"):
            fd.hwpt_alloc(*args)
        assert snapshot(fd) == before, args
    parent = fd.hwpt_alloc(idev.id, io.id, IOMMU_HWPT_ALLOC_NEST_PARENT)
    nested = fd.hwpt_alloc(idev.id, parent.id, 0, IOMMU_HWPT_DATA_VTD_S1, S1)
    with pytest.raises(IommufdError, match=r"-EINVAL\)$"):
        fd.hwpt_alloc(idev.id, nested.id, 0, IOMMU_HWPT_DATA_VTD_S1, S1)  # nested is no parent
    with pytest.raises(IommufdError, match=r"-EBUSY\)$"):
        fd.destroy(auto.id)
    with pytest.raises(IommufdError, match=r"-EBUSY\)$"):
        fd.destroy(io.id)
