"""The Linux driver's scalable-mode decisions (sw/pasid.py, sw/cache_tag.py), unit by unit.

The unit is the Sapphire Rapids one of vtdtui/scenarios/server.toml, from a public boot
log (intel/intel-device-plugins-for-kubernetes issue 1836): CAP 0x19ed008c40780c66, ECAP
0x3ee9e86f050df — C=1 SC=1 DT=1 SMTS FLTS SLTS SMPWC, CM=0, no ESRTPS, FL1GP, FL5LP,
MGAW 56.  Variants flip single bits (positions from the VT-d spec, REFERENCE.md §1).
Expected entry and descriptor words are written out from REFERENCE-2 §11–12's layouts.
"""

from __future__ import annotations

import pytest

from vtdtui.hw import CpuCache, DmarUnit, PageAllocator, PhysMem, regs
from vtdtui.hw import qi as hwqi
from vtdtui.sw.journal import Journal
from vtdtui.sw.linux import DriverError, IntelIommuDriver

CAP = 0x19ED008C40780C66
ECAP = 0x3EE9E86F050DF
CAP_CM, CAP_ESRTPS = 1 << 7, 1 << 63
ECAP_C, ECAP_SC, ECAP_FLTS, ECAP_SMPWC, ECAP_DT = 1 << 0, 1 << 7, 1 << 47, 1 << 48, 1 << 2
NVME = 0x0100  # 01:00.0
NIC = 0x0200  # 02:00.0
BASE = 0x0100_0000


class _SmUnit(DmarUnit):
    """Until hw/unit.py runs scalable mode (H1): a unit that takes RTADDR.SMT and IQA.DW,
    carries out the wait descriptor's status write and counts the rest."""

    def mmio_write(self, off, value):
        if off == regs.RTADDR_REG:
            self.rtaddr = value
            return value
        return super().mmio_write(off, value)

    def enable_qi(self, queue_base, qs=0, dw=False):
        self.iqa = queue_base | qs | (regs.IQA_DW if dw else 0)
        self.iqh = self.iqt = 0
        self.mmio_write(regs.GCMD_REG, self.gcmd | regs.GCMD_QIE)

    def submit(self, *descs):
        for d in descs:
            if isinstance(d, hwqi.WaitDesc) and d.status_write:
                self._write_status(d.status_addr, d.status_data)
        self.qi_submissions.append(len(descs))


def _unit_class():
    return DmarUnit if hasattr(DmarUnit, "sm_active") else _SmUnit


def rig(cap=CAP, ecap=ECAP, *, sm=True, ats=(), devices=(NVME, NIC)):
    mem = PhysMem(1 << 36)
    cache = CpuCache(mem)
    alloc = PageAllocator(mem, cache, BASE, 0xC000_0000)
    unit = _unit_class()("dmar0", 0xFBFFC000, cap, ecap, mem, cache, haw=46)
    j = Journal()
    drv = IntelIommuDriver(j, cache, alloc, [unit], intel_iommu_sm=sm, ats=set(ats))
    drv.init_unit(unit)
    for sid in devices:
        drv.probe_device(unit, sid)
    return drv, unit, j


def since(j, mark, **want):
    return [e for e in j.events[mark:] if all(getattr(e, k) == v for k, v in want.items())]


def words(e):
    return [(w.lo, w.hi) for w in e.data.descriptors] if e.data else []


def read_q(drv, addr, n):
    return [drv.cache.cpu_read_q(addr + 8 * i) for i in range(n)]


# ----------------------------------------------------------------------------- boot


def test_boot_sm_sets_smt_dw_and_flushes_pasid_cache_globally():
    drv, u, j = rig()
    assert drv.sm_supported(u) and u.rtaddr & (1 << 10)  # RTADDR.SMT
    assert u.iqa & (1 << 11)  # IQA.DW keyed on ECAP.SMTS
    pc = [e for e in j.events if e.op == "pasid-cache-invalidation"]
    assert [(e.scope, e.outcome, e.rule) for e in pc] == [("global", "issued", "set-root")]
    # QI_PC_GLOBAL (3) << 4 | QI_PC_TYPE (7), DID 0, PASID 0: qw0 0x37, qw1 0.
    assert words(pc[0]) == [(0x37, 0)]
    ops = [e.op for e in j.events if e.rule == "set-root"]
    assert ops == ["context-cache-invalidation", "pasid-cache-invalidation", "iotlb-invalidation"]


def test_boot_sm_esrtps_skips_all_three():
    _, _, j = rig(cap=CAP | CAP_ESRTPS)
    ev = [e for e in j.events if e.rule == "set-root"]
    assert [(e.op, e.outcome) for e in ev] == [("context-cache-invalidation", "skipped"),
                                               ("pasid-cache-invalidation", "skipped"),
                                               ("iotlb-invalidation", "skipped")]


def test_sm_off_on_smts_hardware_is_legacy_but_keeps_dw():
    drv, u, j = rig(sm=False)
    assert not drv.sm_supported(u) and not u.rtaddr & (1 << 10)
    assert not [e for e in j.events if e.op == "pasid-cache-invalidation"]
    if hasattr(DmarUnit, "sm_active"):
        assert u.iqa & (1 << 11)


# ----------------------------------------------------------------------------- probe


def _ctx(drv, u, sid):
    root = drv._root[u.name]
    lo = drv.cache.cpu_read_q(root + (sid >> 8) * 16)
    table = lo & ~0xFFF
    slot = table + (sid & 0xFF) * 32
    return read_q(drv, slot, 4)


@pytest.mark.parametrize("ats", [False, True])
def test_probe_writes_sm_context_once_without_wbf_when_cm0(ats):
    drv, u, j = rig(ats={NVME} if ats else ())
    info = drv._sm_dev[(u.name, NVME)]
    w0, w1, w2, w3 = _ctx(drv, u, NVME)
    # No PASID capability: one directory page, max_pasid 1 << 15 → PDTS = 9 - 7 = 2;
    # P (bit 0), DTE (bit 2) iff ATS; PASIDE clear; RID_PASID 0.
    assert w0 == info.pasid_dir | (2 << 9) | (4 if ats else 0) | 1
    assert (w1, w2, w3) == (0, 0, 0)
    assert (NVME in drv.ats) == ats  # iommu_enable_pci_ats() at probe in scalable mode
    cc = [e for e in j.events if e.rule == "sm-ctx" and e.op == "context-cache-invalidation"]
    assert [(e.outcome, e.bdf, e.did) for e in cc] == [("skipped", "01:00.0", 0), ("skipped", "02:00.0", 0)]
    wbf = [e for e in j.events if e.rule == "sm-ctx" and e.op == "write-buffer-flush"]
    assert len(wbf) == 2 and all(e.outcome == "skipped" and "no else branch" in e.reason for e in wbf)
    # ECAP.C=1: no clflush of the context entry.
    assert all(e.outcome == "skipped" for e in j.events if e.op == "clflush")


def test_probe_cm1_device_cc_did0_and_dsi_did0():
    drv, u, j = rig(cap=CAP | CAP_CM, devices=(NVME,))
    cc = [e for e in j.events if e.rule == "sm-ctx" and e.op == "context-cache-invalidation"]
    tlb = [e for e in j.events if e.rule == "sm-ctx" and e.op == "iotlb-invalidation"]
    assert [(e.outcome, e.scope, e.did, e.bdf) for e in cc] == [("issued", "device", 0, "01:00.0")]
    assert [(e.outcome, e.scope, e.did) for e in tlb] == [("issued", "domain", 0)]
    # CC device-selective: G=3 << 4 | type 1, SID 0x0100 << 32, DID 0.
    assert words(cc[0]) == [(0x31 | (NVME << 32), 0)]
    assert not [e for e in j.events if e.rule == "sm-ctx" and e.op == "write-buffer-flush"]


def test_probe_clflushes_directory_and_context_when_c0():
    _, _, j = rig(ecap=ECAP & ~ECAP_C, devices=(NVME,))
    flushed = [e.detail for e in j.events if e.op == "clflush" and e.outcome == "issued"]
    assert any(d.startswith("PASID directory 01:00.0") for d in flushed)
    assert any(d.startswith("context entry 01:00.0") for d in flushed)


# ----------------------------------------------------------------------------- attach


def _pasid0(drv, u, sid):
    return drv.read_pasid(u, sid, 0)


@pytest.mark.parametrize("cm", [False, True])
def test_attach_first_stage_pasid_entry_bit_exact_and_flushes(cm):
    drv, u, j = rig(cap=CAP | (CAP_CM if cm else 0))
    d = drv.domain_alloc("driver", u)
    assert d.stage == "first" and d.levels == 5 and d.superpage_level == 3 and d.coherent  # SMPWC, FL1GP, FL5LP
    mark = len(j.events)
    drv.attach_device(d, u, NVME)
    did = d.dids[u.name]
    assert did == 2  # IDA_START_DID
    pe = _pasid0(drv, u, NVME)
    # val[0]: P | AW 3 (SAGAW 4|5-level with FL5LP) << 2 | PGTT 1 << 6;
    # val[1]: DID | PWSNP (bit 23, SMPWC); val[2]: FSPTPTR | FLPM 1 << 2 (5-level).
    assert pe.val == (1 | 3 << 2 | 1 << 6, did | 1 << 23, d.pgd | 1 << 2, 0, 0, 0, 0, 0)
    pc = since(j, mark, op="pasid-cache-invalidation")
    pio = since(j, mark, op="piotlb-invalidation")
    assert [(e.outcome, e.rule, e.did, e.pasid, e.bdf) for e in pc] == [
        ("issued" if cm else "skipped", "pasid-np2p", did, 0, "01:00.0")]
    assert [(e.outcome, e.rule, e.scope) for e in pio] == [("issued" if cm else "skipped", "pasid-np2p", "pasid")]
    if cm:
        assert words(pc[0]) == [(0x17 | did << 16, 0)]  # QI_PC_PASID_SEL 1 << 4 | type 7
        assert words(pio[0]) == [(0x26 | did << 16, 0)]  # QI_GRAN_NONG_PASID 2 << 4 | type 6, qw1 0
        assert not since(j, mark, op="write-buffer-flush")
    else:
        assert [e.outcome for e in since(j, mark, op="write-buffer-flush")] == ["skipped"]  # CAP.RWBF=0
    assert [t.kind for t in d.tags] == ["iotlb"]


def test_attach_second_stage_when_no_flts_and_identity_pass_through():
    drv, u, _ = rig(ecap=ECAP & ~ECAP_FLTS)
    d = drv.domain_alloc("vfio", u)
    assert d.stage == "second"
    drv.attach_device(d, u, NVME)
    pe = _pasid0(drv, u, NVME)
    assert pe.val[:3] == (1 | d.agaw << 2 | 2 << 6 | d.pgd, d.dids[u.name] | 1 << 23, 0)
    drv2, u2, _ = rig()
    ident = drv2.domain_alloc("driver", u2, stage="identity")
    drv2.attach_device(ident, u2, NIC)
    pe = _pasid0(drv2, u2, NIC)
    assert (pe.pgtt, pe.did, pe.pwsnp, pe.present) == (4, 1, True, True)  # FLPT_DEFAULT_DID


def test_first_stage_refused_without_sm_or_flts():
    drv, u, _ = rig(sm=False)
    with pytest.raises(DriverError):
        drv.domain_alloc("driver", u, stage="first")
    drv, u, _ = rig()
    d = drv.domain_alloc("driver", u)
    plain = _unit_class()("dmar9", 0, CAP, ECAP & ~ECAP_FLTS, drv.cache.mem, drv.cache)
    assert "first stage" in IntelIommuDriver.incompatible(d, plain)


def test_attach_c0_clflushes_pasid_table_dir_entry_and_entry():
    drv, u, j = rig(ecap=ECAP & ~ECAP_C)
    d = drv.domain_alloc("driver", u)
    mark = len(j.events)
    drv.attach_device(d, u, NVME)
    flushed = [e.detail for e in since(j, mark, op="clflush", outcome="issued")]
    assert any(x.startswith("new PASID table 01:00.0") for x in flushed)
    assert any(x.startswith("PASID directory entry 01:00.0") for x in flushed)
    assert any(x.startswith("PASID entry 01:00.0 PASID 0") for x in flushed)


# ----------------------------------------------------------------------------- map / unmap


@pytest.mark.parametrize("cm", [False, True])
def test_first_stage_map_never_invalidates_even_with_cm(cm):
    drv, u, j = rig(cap=CAP | (CAP_CM if cm else 0))
    d = drv.domain_alloc("driver", u)
    drv.attach_device(d, u, NVME)
    mark = len(j.events)
    drv.map_range(d, 0x100000, 0x8000_0000, 0x2000, True, True)
    inv = [e for e in j.events[mark:] if e.op.endswith("invalidation")]
    assert inv and all(e.outcome == "skipped" and e.rule == "map-fs" for e in inv)
    if cm:
        assert "CM does not cover first-stage mappings" in inv[0].reason
    assert [e.rule for e in since(j, mark, op="write-buffer-flush")] == ["wbf"]
    # The leaf as Linux writes it: P|R/W|US|A|D (0x67) at the page.
    leaf = drv.iova_to_phys(d, 0x100000)
    assert leaf == (0x8000_0000, 1)


def test_second_stage_map_with_cm_is_a_psi():
    drv, u, j = rig(cap=CAP | CAP_CM, ecap=ECAP & ~ECAP_FLTS)
    d = drv.domain_alloc("vfio", u)
    drv.attach_device(d, u, NVME)
    mark = len(j.events)
    drv.map_range(d, 0x100000, 0x8000_0000, 0x2000, True, True)
    psi = since(j, mark, op="iotlb-invalidation", outcome="issued")
    assert [(e.rule, e.scope, e.did) for e in psi] == [("map-np2p", "page", d.dids[u.name])]
    # PSI: G=3 << 4 | type 2, DR|DW (bits 7, 6: CAP.DRD and CAP.DWD are set), DID << 16;
    # qw1 = addr | AM 1 (two pages, IH 0).
    assert words(psi[0]) == [(0x32 | 0xC0 | d.dids[u.name] << 16, 0x100000 | 1)]


def test_first_stage_unmap_is_piotlb_page_selective_and_devtlb_for_ats():
    drv, u, j = rig(ats={NVME})
    d = drv.domain_alloc("vfio", u)
    drv.attach_device(d, u, NVME)
    assert [t.kind for t in d.tags] == ["iotlb", "devtlb"]
    drv.map_range(d, 0x100000, 0x8000_0000, 0x2000, True, True)
    mark = len(j.events)
    drv.unmap_range(d, 0x100000, 0x2000)
    did = d.dids[u.name]
    pio = since(j, mark, op="piotlb-invalidation")
    assert [(e.outcome, e.scope, e.did, e.pasid) for e in pio] == [("issued", "page", did, 0)]
    # QI_GRAN_PSI_PASID 3 << 4 | type 6, DID; qw1 = addr | IH (bit 6: no table freed) | AM 1.
    assert words(pio[0]) == [(0x36 | did << 16, 0x100000 | 1 << 6 | 1)]
    dev = since(j, mark, op="device-tlb-invalidation")
    assert [(e.outcome, e.scope, e.bdf) for e in dev] == [("issued", "page", "01:00.0")]
    assert not since(j, mark, op="iotlb-invalidation")


def test_flush_all_first_stage_is_piotlb_all_second_stage_dsi():
    drv, u, j = rig()
    d = drv.domain_alloc("driver", u)
    drv.attach_device(d, u, NVME)
    mark = len(j.events)
    drv.cache_tag_flush_all(d, "unmap", "test")
    assert [(e.op, e.scope) for e in j.events[mark:]] == [("piotlb-invalidation", "pasid")]
    drv, u, j = rig(ecap=ECAP & ~ECAP_FLTS)
    d = drv.domain_alloc("driver", u)
    drv.attach_device(d, u, NVME)
    mark = len(j.events)
    drv.cache_tag_flush_all(d, "unmap", "test")
    got = [(e.op, e.scope, e.outcome, e.rule) for e in j.events[mark:]]
    assert got == [("iotlb-invalidation", "page", "skipped", "psi-fallback"),
                   ("iotlb-invalidation", "domain", "issued", "unmap")]


def test_flush_queue_stays_lazy_with_cm_when_first_level_by_default():
    drv, u, j = rig(cap=CAP | CAP_CM)
    d = drv.domain_alloc("driver", u)
    drv.attach_device(d, u, NVME)
    drv.map_range(d, 0x100000, 0x8000_0000, 0x1000, True, True)
    mark = len(j.events)
    drv.unmap_range(d, 0x100000, 0x1000)
    fq = since(j, mark, op="flush-queue")
    assert fq and fq[0].outcome == "issued" and "first_level_by_default" in fq[0].reason
    assert d.flush_queue
    drv2, u2, j2 = rig(cap=CAP | CAP_CM, ecap=ECAP & ~ECAP_FLTS)
    d2 = drv2.domain_alloc("driver", u2)
    drv2.attach_device(d2, u2, NVME)
    drv2.map_range(d2, 0x100000, 0x8000_0000, 0x1000, True, True)
    mark = len(j2.events)
    drv2.unmap_range(d2, 0x100000, 0x1000)
    assert since(j2, mark, op="flush-queue")[0].outcome == "skipped" and not d2.flush_queue


# ----------------------------------------------------------------------------- detach


@pytest.mark.parametrize("ats", [False, True])
def test_detach_tears_down_in_new_order(ats):
    drv, u, j = rig(ats={NVME} if ats else ())
    d = drv.domain_alloc("driver", u)
    drv.attach_device(d, u, NVME)
    did = d.dids[u.name]
    mark = len(j.events)
    drv.detach_device(d, u, NVME)
    seq = [(e.op, e.outcome) for e in j.events[mark:] if e.op != "clflush"]
    want = [("pasid-cache-invalidation", "issued"), ("piotlb-invalidation", "issued"),
            ("device-tlb-invalidation", "issued" if ats else "skipped")]
    assert seq == want
    assert all(e.rule == "pasid-teardown" and e.did in (did, None) for e in j.events[mark:] if e.op != "clflush")
    assert _pasid0(drv, u, NVME).val == (0,) * 8
    assert d.tags == [] and not d.dids
    if ats:  # PASID 0: qi_flush_dev_iotlb with mask 52 (type 3, S=1, address 0x7fff_ffff_ffff_f000)
        dev = since(j, mark, op="device-tlb-invalidation")[0]
        assert words(dev) == [(0x3 | NVME << 32, 0x7FFF_FFFF_FFFF_F000 | 1)]
        assert dev.scope == "all"


def test_detach_second_stage_uses_dsi():
    drv, u, j = rig(ecap=ECAP & ~ECAP_FLTS)
    d = drv.domain_alloc("driver", u)
    drv.attach_device(d, u, NVME)
    mark = len(j.events)
    drv.detach_device(d, u, NVME)
    ops = [(e.op, e.scope) for e in j.events[mark:] if e.outcome == "issued" and e.op.endswith("invalidation")]
    assert ops == [("pasid-cache-invalidation", "pasid"), ("iotlb-invalidation", "domain")]


# ----------------------------------------------------------------------------- coherency


def test_enforce_first_stage_sets_pgsnp_with_mappings_and_flushes_present():
    drv, u, j = rig()
    d = drv.domain_alloc("vfio", u)
    drv.attach_device(d, u, NVME)
    drv.map_range(d, 0x100000, 0x8000_0000, 0x1000, True, True)
    mark = len(j.events)
    assert drv.enforce_cache_coherency(d)
    assert _pasid0(drv, u, NVME).pgsnp
    got = [(e.op, e.outcome, e.rule) for e in j.events[mark:] if e.op != "clflush"]
    assert got == [("enforce-cache-coherency", "issued", "snp"), ("pasid-cache-invalidation", "issued", "snp"),
                   ("piotlb-invalidation", "issued", "snp"), ("device-tlb-invalidation", "skipped", "snp")]


def test_enforce_second_stage_refused_with_mappings_and_without_sc():
    drv, u, _ = rig(ecap=ECAP & ~ECAP_FLTS)
    d = drv.domain_alloc("vfio", u)
    drv.attach_device(d, u, NVME)
    drv.map_range(d, 0x100000, 0x8000_0000, 0x1000, True, True)
    assert not drv.enforce_cache_coherency(d)
    drv, u, _ = rig(ecap=ECAP & ~ECAP_SC)
    d = drv.domain_alloc("vfio", u)
    drv.attach_device(d, u, NVME)
    assert not drv.enforce_cache_coherency(d) and not _pasid0(drv, u, NVME).pgsnp


@pytest.mark.parametrize("smpwc", [False, True])
def test_paging_clflush_follows_smpwc_not_c(smpwc):
    drv, u, j = rig(ecap=ECAP & ~(0 if smpwc else ECAP_SMPWC))
    d = drv.domain_alloc("driver", u)
    assert d.coherent == smpwc
    drv.attach_device(d, u, NVME)
    mark = len(j.events)
    drv.map_range(d, 0x100000, 0x8000_0000, 0x1000, True, True)
    leaf = [e for e in since(j, mark, op="clflush") if "leaf PTE" in e.detail]
    assert leaf and all(e.outcome == ("skipped" if smpwc else "issued") for e in leaf)
    assert _pasid0(drv, u, NVME).pwsnp == smpwc


# ----------------------------------------------------------------------------- journal keys


def test_invalidation_events_carry_did_pasid_bdf_in_json():
    drv, u, j = rig(cap=CAP | CAP_CM)
    d = drv.domain_alloc("driver", u)
    drv.attach_device(d, u, NVME)
    for e in j.events:
        js = e.to_json()
        if e.op.endswith("invalidation"):
            assert {"did", "pasid", "bdf"} <= set(js)
        else:
            assert "did" not in js
    pc = [e.to_json() for e in j.events if e.op == "pasid-cache-invalidation" and e.rule == "pasid-np2p"][0]
    assert (pc["did"], pc["pasid"], pc["bdf"]) == (d.dids[u.name], 0, "01:00.0")
