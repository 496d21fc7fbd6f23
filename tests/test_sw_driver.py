"""The Linux intel-iommu driver's decisions, end to end through machine commands.

Each test drives the machine with text commands and checks the journal events (actor,
op, scope, outcome, rule) and the state JSON against REFERENCE.md §5 and the kernel
facts in the research notes (context_present_cache_flush, domain_context_clear_one,
cache_tag_flush_range_np, calculate_psi_aligned_address, the flush queue, IDA_START_DID).
"""

from __future__ import annotations

import pytest

from machinekit import (
    context_entry, domain_state, dumps, events, group_state, lines, one, run, state, unit_state,
)
from vtdtui.sw.linux import psi_aligned

def _server_legacy() -> str:
    """The built-in server booted with `[kernel] sm = "off"` (intel_iommu=sm_off): these
    tests are about the legacy-mode flush queue and IOTLB; the server itself boots in
    scalable mode (tests/test_sw_sm_*.py)."""
    import tempfile
    from pathlib import Path

    import vtdtui

    text = (Path(vtdtui.__file__).parent / "scenarios" / "server.toml").read_text()
    assert 'sm = "on"' in text
    path = Path(tempfile.mkdtemp(prefix="vtdtui-")) / "server-legacy.toml"
    path.write_text(text.replace('sm = "on"', 'sm = "off"', 1))
    return str(path)


SERVER_LEGACY = _server_legacy()
IOTLB = "iotlb-invalidation"
CC = "context-cache-invalidation"
WBF = "write-buffer-flush"


def _ctx_clflush(o, bdf):
    return events(o, actor="driver", op="clflush", detail_has=f"context entry {bdf}")


# ----------------------------------------------------------------------------- boot


def test_boot_sets_root_table_with_global_flushes_unless_esrtps():
    m, _ = run("desktop")
    boot = list(m.journal)
    for unit in ("dmar0", "dmar1"):
        one(boot, unit=unit, actor="driver", op=CC, scope="global", outcome="issued", rule="set-root")
        one(boot, unit=unit, actor="driver", op=IOTLB, scope="global", outcome="issued", rule="set-root")
    # QEMU's CAP has ESRTPS (bit 63): SRTP invalidates, so Linux skips the global flushes.
    m, _ = run("viommu")
    boot = list(m.journal)
    for op in (CC, IOTLB):
        e = one(boot, unit="dmar0", actor="driver", op=op, scope="global", rule="set-root")
        assert e.outcome == "skipped" and "ESRTPS" in e.reason


# ----------------------------------------------------------------------------- attach: ctx-np2p


def test_attach_cm0_flushes_cache_line_and_skips_invalidations():
    m, (o,) = run("desktop", "attach 5")
    flushes = _ctx_clflush(o, "02:00.0")
    assert flushes and all(e.outcome == "issued" and e.rule == "clflush" and e.unit == "dmar1" for e in flushes)

    cc = one(o, actor="driver", op=CC)
    assert (cc.unit, cc.scope, cc.outcome, cc.rule) == ("dmar1", "device", "skipped", "ctx-np2p")
    assert "CM=0" in cc.reason
    tlb = one(o, actor="driver", op=IOTLB)
    assert (tlb.scope, tlb.outcome, tlb.rule) == ("domain", "skipped", "ctx-np2p")
    assert "CM=0" in tlb.reason
    wbf = one(o, actor="driver", op=WBF)
    assert (wbf.outcome, wbf.rule) == ("skipped", "wbf")
    assert "CAP.RWBF=0" in wbf.reason
    # Nothing at all was invalidated.
    assert not events(o, op=CC, outcome="issued") and not events(o, op=IOTLB, outcome="issued")

    st = state(m)
    ce = context_entry(st, "dmar1", "02:00.0")
    assert ce is not None and ce["present"] is True
    assert ce["did"] >= 2  # IDA_START_DID: 0 is the caching-mode tag, 1 FLPT_DEFAULT_DID
    assert ce["tt"] == 0  # multi-level, no ATS
    g = group_state(st, 5)
    assert g["domain"] is not None and g["owner"] == "vfio" and g["devices"] == ["02:00.0"]
    d = domain_state(st, g["domain"])
    assert d["unit"] == "dmar1" and d["did"] == ce["did"] and d["devices"] == ["02:00.0"]
    assert ce["slptptr"] == d["pgd"] and ce["aw"] == d["levels"] - 2
    # The other unit got nothing.
    assert context_entry(st, "dmar0", "02:00.0") is None


def test_attach_cm1_invalidates_device_with_did0_and_domain_with_new_did():
    m, (_, o) = run("desktop", "toggle dmar1 CM", "attach 5")
    did = context_entry(state(m), "dmar1", "02:00.0")["did"]
    cc = one(o, actor="driver", op=CC)
    assert (cc.unit, cc.scope, cc.outcome, cc.rule) == ("dmar1", "device", "issued", "ctx-np2p")
    assert "02:00.0" in cc.detail and "DID 0" in cc.detail
    tlb = one(o, actor="driver", op=IOTLB)
    assert (tlb.scope, tlb.outcome, tlb.rule) == ("domain", "issued", "ctx-np2p")
    assert tlb.detail == f"DID {did}" and did != 0  # the new domain's DID, not 0
    # CM=1 takes the invalidation branch: no write-buffer flush is even considered.
    assert not events(o, op=WBF)
    assert _ctx_clflush(o, "02:00.0")[0].outcome == "issued"


def test_attach_with_coherent_unit_skips_context_clflush():
    m, (_, o) = run("desktop", "toggle dmar1 C", "attach 5")
    flushes = _ctx_clflush(o, "02:00.0")
    assert flushes
    for e in flushes:
        assert (e.outcome, e.rule) == ("skipped", "clflush") and "ECAP.C=1" in e.reason
    assert not events(o, op="clflush", outcome="issued"), lines(o)
    assert unit_state(state(m), "dmar1")["flags"]["c"] is True


def test_rwbf_unit_gets_write_buffer_flush():
    m, (_, o) = run("desktop", "toggle dmar1 RWBF", "attach 5")
    e = one(o, actor="driver", op=WBF)
    assert (e.outcome, e.rule, e.unit) == ("issued", "wbf", "dmar1") and "CAP.RWBF=1" in e.reason


def test_skip_clflush_what_if_leaves_hardware_reading_stale_memory():
    # C=0 and the driver "forgets" clflush: the context entry sits in the CPU cache only,
    # the unit reads memory and finds it not present.
    m, outs = run("desktop", "set skip-clflush on", "attach 5", "map 5 0x100000 4K")
    skipped = _ctx_clflush(outs[1], "02:00.0")
    assert skipped and all(e.outcome == "skipped" and "what-if" in e.reason for e in skipped)
    o = m.execute("dma 5 0x100000 r")
    assert not o.translation.ok and o.translation.fault.reason == 0x02
    # Done right, the same DMA translates.
    m, _ = run("desktop", "attach 5", "map 5 0x100000 4K")
    assert m.execute("dma 5 0x100000 r").translation.ok


def test_dids_start_at_2_and_are_reused_lowest_first():
    m, _ = run("desktop", "attach 5", "attach 4")  # same coherency: VFIO reuses the domain
    st = state(m)
    assert context_entry(st, "dmar1", "02:00.0")["did"] == 2
    assert context_entry(st, "dmar1", "01:00.0")["did"] == 2
    m, _ = run("desktop", "attach 0", "attach 5")  # two domains, one per unit: DID 2 on each
    st = state(m)
    assert context_entry(st, "dmar0", "00:02.0")["did"] == 2
    assert context_entry(st, "dmar1", "02:00.0")["did"] == 2


# ----------------------------------------------------------------------------- detach: ctx-clear


@pytest.mark.parametrize("cm", [False, True])
def test_detach_clears_context_and_invalidates_old_did_whatever_cm(cm):
    cmds = (["toggle dmar1 CM"] if cm else []) + ["attach 5"]
    m, _ = run("desktop", *cmds)
    old = context_entry(state(m), "dmar1", "02:00.0")["did"]
    o = m.execute("detach 5")
    assert _ctx_clflush(o, "02:00.0")[0].outcome == "issued"
    cc = one(o, actor="driver", op=CC)
    assert (cc.scope, cc.outcome, cc.rule) == ("device", "issued", "ctx-clear")
    assert cc.detail == f"02:00.0 DID {old}"
    tlb = one(o, actor="driver", op=IOTLB)
    assert (tlb.scope, tlb.outcome, tlb.rule, tlb.detail) == ("domain", "issued", "ctx-clear", f"DID {old}")
    dev = one(o, actor="driver", op="device-tlb-invalidation")
    assert dev.outcome == "skipped" and "ATS" in dev.reason
    st = state(m)
    assert context_entry(st, "dmar1", "02:00.0") is None
    assert group_state(st, 5)["domain"] is None
    assert st["domains"] == []
    # The DID went back: the next attach gets it again.
    m.execute("attach 5")
    assert context_entry(state(m), "dmar1", "02:00.0")["did"] == old


# ----------------------------------------------------------------------------- map / unmap


def test_map_cm0_skips_flush_unmap_always_flushes_page():
    m, (_, o_map) = run("desktop", "attach 5", "map 5 0x100000 64K rw")
    d = group_state(state(m), 5)["domain"]
    e = one(o_map, actor="driver", op=IOTLB)
    assert (e.scope, e.outcome, e.rule) == ("page", "skipped", "map-np2p") and "CM=0" in e.reason
    assert one(o_map, actor="driver", op=WBF).outcome == "skipped"
    assert domain_state(state(m), d)["mapped_pages"] == 16

    o = m.execute("unmap 5 0x100000 64K")
    e = one(o, actor="driver", op=IOTLB)
    assert (e.unit, e.scope, e.outcome, e.rule) == ("dmar1", "page", "issued", "unmap")
    assert "addr 0x100000 AM 4" in e.detail
    assert domain_state(state(m), d)["mapped_pages"] == 0


def test_map_cm1_flushes_page_selectively():
    m, outs = run("desktop", "toggle dmar1 CM", "attach 5", "map 5 0x100000 64K rw", "unmap 5 0x100000 64K")
    did = domain_state(state(m), group_state(state(m), 5)["domain"])["did"]
    e = one(outs[2], actor="driver", op=IOTLB)
    assert (e.scope, e.outcome, e.rule) == ("page", "issued", "map-np2p")
    assert e.detail.startswith(f"DID {did} ") and "addr 0x100000 AM 4" in e.detail
    assert not events(outs[2], op=WBF)
    e = one(outs[3], actor="driver", op=IOTLB)
    assert (e.scope, e.outcome, e.rule) == ("page", "issued", "unmap")
    assert domain_state(state(m), group_state(state(m), 5)["domain"])["mapped_pages"] == 0


def test_unaligned_range_psi_mask_widens_like_calculate_psi_aligned_address():
    # pfn 0x1ff, 2 pages: the base is not aligned to 2 pages, so the mask grows until
    # both ends share the upper bits: addr 0, AM 10 (4 MiB).
    m, outs = run("desktop", "toggle dmar1 CM", "attach 5", "map 5 0x1ff000 8K", "unmap 5 0x1ff000 8K")
    assert psi_aligned(0x1FF000, 0x2000) == (0, 10)
    for o, rule in ((outs[2], "map-np2p"), (outs[3], "unmap")):
        e = one(o, actor="driver", op=IOTLB, rule=rule)
        assert e.scope == "page" and e.outcome == "issued"
        assert "addr 0x0 AM 10" in e.detail, e.detail


@pytest.mark.parametrize(
    "iova, size, addr, mask",
    [
        (0x0, 0x1000, 0x0, 0),
        (0x100000, 0x10000, 0x100000, 4),  # aligned 16 pages
        (0x1FF000, 0x2000, 0x0, 10),  # the cache.c example
        (0x101000, 0x2000, 0x100000, 2),  # pfn 0x101..0x102 share bits above 2
        (0x3000, 0x3000, 0x0, 3),  # 3 pages round to 4; pfn 3..5 share bits above 3
        (0x5000, 0x3000, 0x4000, 2),  # pfn 5..7: 4-page block at 0x4000
        (0x200000, 0x200000, 0x200000, 9),  # 2 MiB
        (0x80000000, 0x80000000, 0x80000000, 19),  # 2 GiB, aligned: 2^19 pages
        (0x40000000, 0x80000000, 0x0, 20),  # 2 GiB from 1 GiB: not 2 GiB aligned, widens to 4 GiB
        (0xFFF000, 0x2000, 0x0, 13),  # pfn 0xfff..0x1000 cross a 16 MiB line
    ],
)
def test_psi_aligned_hand_values(iova, size, addr, mask):
    assert psi_aligned(iova, size) == (addr, mask)


def test_psi_aligned_always_covers_the_range():
    for iova in range(0, 0x40000, 0x1000):
        for pages in (1, 2, 3, 5, 16, 17):
            size = pages << 12
            addr, mask = psi_aligned(iova, size)
            span = 1 << (12 + mask)
            assert addr % span == 0
            assert addr <= iova and iova + size <= addr + span, (hex(iova), pages)


def test_unit_without_psi_flushes_domain_with_fallback_event():
    # dmar0 (CAP.PSI=0): map (with CM on) and unmap both become domain-selective.
    m, outs = run("desktop", "toggle dmar0 CM", "attach 0", "map 0 0x100000 64K rw", "unmap 0 0x100000 64K")
    did = domain_state(state(m), group_state(state(m), 0)["domain"])["did"]
    for o, rule in ((outs[2], "map-np2p"), (outs[3], "unmap")):
        fb = one(o, actor="driver", op=IOTLB, rule="psi-fallback")
        assert (fb.unit, fb.outcome, fb.scope) == ("dmar0", "skipped", "page") and "CAP.PSI=0" in fb.reason
        e = one(o, actor="driver", op=IOTLB, rule=rule)
        assert (e.scope, e.outcome, e.detail) == ("domain", "issued", f"DID {did}")
        assert not events(o, op=IOTLB, scope="page", outcome="issued")
    # Without CM the map flushes nothing, but the unmap still goes domain-selective.
    m, outs = run("desktop", "attach 0", "map 0 0x100000 64K rw", "unmap 0 0x100000 64K")
    assert one(outs[1], op=IOTLB).outcome == "skipped"
    one(outs[2], op=IOTLB, rule="psi-fallback", outcome="skipped")
    one(outs[2], op=IOTLB, rule="unmap", scope="domain", outcome="issued")


def test_range_beyond_mamv_is_domain_selective():
    # dmar1 MAMV=18: 2 GiB is 2^19 pages, mask 19 > 18.
    m, outs = run("desktop", "toggle dmar1 CM", "attach 5", "map 5 0x80000000 2G rw", "unmap 5 0x80000000 2G")
    d = group_state(state(m), 5)["domain"]
    for o, rule in ((outs[2], "map-np2p"), (outs[3], "unmap")):
        fb = one(o, actor="driver", op=IOTLB, rule="psi-fallback")
        assert fb.outcome == "skipped" and "mask 19 > MAMV 18" in fb.reason
        one(o, actor="driver", op=IOTLB, rule=rule, scope="domain", outcome="issued")
    assert domain_state(state(m), d)["mapped_pages"] == 0
    # 1 GiB (mask 18 = MAMV) still fits one PSI.
    m, outs = run("desktop", "toggle dmar1 CM", "attach 5", "map 5 0x40000000 1G rw")
    assert not events(outs[2], rule="psi-fallback")
    e = one(outs[2], op=IOTLB, rule="map-np2p")
    assert e.scope == "page" and "AM 18" in e.detail
    assert domain_state(state(m), group_state(state(m), 5)["domain"])["mapped_pages"] == 1 << 18


def test_mapped_pages_counts_large_pages():
    m, _ = run("desktop", "attach 5", "map 5 0x40000000 2G rw")
    d = group_state(state(m), 5)["domain"]
    assert domain_state(state(m), d)["mapped_pages"] == 2 << 18
    assert m.execute("dma 5 0x7fffffff w").translation.hpa == 0x7FFFFFFF + 0x100000000


def test_map_invalidation_drops_a_cached_not_present_translation():
    # CM=1 hardware caches the failed walk; the map's PSI removes it.
    m, _ = run("desktop", "toggle dmar1 CM", "attach 5")
    assert m.execute("dma 5 0x100000 r").translation.fault.reason == 0x06
    tlb = unit_state(state(m), "dmar1")["iotlb"]
    assert [(e["iova"], e.get("present")) for e in tlb] == [("0x100000", False)]
    m.execute("map 5 0x100000 4K r")
    assert unit_state(state(m), "dmar1")["iotlb"] == []
    assert m.execute("dma 5 0x100000 r").translation.ok
    # The what-if: the driver skips it, the negative entry survives and is marked stale.
    m, _ = run("desktop", "toggle dmar1 CM", "attach 5", "dma 5 0x100000 r", "set skip-invalidation on")
    o = m.execute("map 5 0x100000 4K r")
    e = one(o, op=IOTLB, rule="map-np2p")
    assert e.outcome == "skipped" and "what-if" in e.reason
    (entry,) = unit_state(state(m), "dmar1")["iotlb"]
    assert entry["present"] is False and "stale" in entry
    t = m.execute("dma 5 0x100000 r").translation
    assert not t.ok and t.iotlb_hit and t.fault.reason == 0x06


def test_snoop_control_domain_sets_snp_in_leaves():
    m, _ = run("desktop", "attach 5", "map 5 0x100000 4K", "attach 0", "map 0 0x200000 4K")
    st = state(m)
    assert domain_state(st, group_state(st, 5)["domain"])["enforce_cache_coherency"] is True
    assert domain_state(st, group_state(st, 0)["domain"])["enforce_cache_coherency"] is False
    assert m.execute("dma 5 0x100000 r").translation.snp is True
    assert m.execute("dma 0 0x200000 r").translation.snp is False
    snp = {e["iova"]: e["snp"] for u in ("dmar0", "dmar1") for e in unit_state(state(m), u)["iotlb"]}
    assert snp == {"0x100000": True, "0x200000": False}


# ----------------------------------------------------------------------------- DMA and faults


def test_dma_to_unmapped_iova_faults_read_not_set():
    m, (_, o) = run("desktop", "attach 5", "dma 5 0x300000 r")
    assert o.translation.fault.reason == 0x06
    e = one(o, actor="hw", op="fault")
    assert e.unit == "dmar1" and e.outcome == "issued"
    (f,) = unit_state(state(m), "dmar1")["faults"]
    assert f == {
        "bdf": "02:00.0", "iova": "0x300000", "reason": 6, "access": "read",
        "message": "DMAR: [DMA Read NO_PASID] Request device [02:00.0] fault addr 0x300000 "
                   "[fault reason 0x06] PTE Read access is not set",
        # dmar_fault(): the status line first, then the record; no dump without CONFIG_DMAR_DEBUG.
        "log": ["DMAR: DRHD: handling fault status reg 2",
                "DMAR: [DMA Read NO_PASID] Request device [02:00.0] fault addr 0x300000 "
                "[fault reason 0x06] PTE Read access is not set"],
    }


def test_write_to_read_only_mapping_faults_write_not_set():
    m, outs = run("desktop", "attach 5", "map 5 0x100000 64K r", "dma 5 0x104000 r", "dma 5 0x104000 w")
    assert outs[2].translation.ok and outs[2].translation.hpa == 0x100104000
    assert outs[3].translation.fault.reason == 0x05
    (f,) = unit_state(state(m), "dmar1")["faults"]
    assert f["message"] == ("DMAR: [DMA Write NO_PASID] Request device [02:00.0] fault addr 0x104000 "
                            "[fault reason 0x05] PTE Write access is not set")
    assert (f["access"], f["reason"]) == ("write", 5)


def test_dma_from_never_attached_device_faults_context_not_present():
    m, (o,) = run("desktop", "dma 4 0x1000 r")
    assert o.translation.fault.reason == 0x02
    (f,) = unit_state(state(m), "dmar1")["faults"]
    assert f["message"] == ("DMAR: [DMA Read NO_PASID] Request device [01:00.0] fault addr 0x1000 "
                            "[fault reason 0x02] Present bit in context entry is clear")
    # CM=0 hardware never caches the not-present entry.
    assert unit_state(state(m), "dmar1")["context_cache"] == []


def test_cm1_caches_not_present_context_until_attach_invalidates_did0():
    m, _ = run("desktop", "toggle dmar1 CM", "dma 4 0x1000 r")
    assert unit_state(state(m), "dmar1")["context_cache"] == [{"bdf": "01:00.0", "did": 0, "present": False}]
    o = m.execute("attach 4")
    cc = one(o, actor="driver", op=CC, rule="ctx-np2p")
    assert cc.outcome == "issued" and cc.scope == "device" and cc.detail == "01:00.0 DID 0"
    assert all(e["bdf"] != "01:00.0" or e["present"] for e in unit_state(state(m), "dmar1")["context_cache"])
    t = m.execute("dma 4 0x1000 r").translation
    assert t.fault.reason == 0x06  # the context is found now; only the page is missing
    m.execute("map 4 0x1000 4K")
    assert m.execute("dma 4 0x1000 r").translation.ok


def test_skipped_ctx_invalidation_keeps_faulting_on_stale_not_present_entry():
    m, _ = run("desktop", "toggle dmar1 CM", "dma 4 0x1000 r", "set skip-invalidation on")
    o = m.execute("attach 4")
    cc = one(o, actor="driver", op=CC, rule="ctx-np2p")
    assert cc.outcome == "skipped" and "what-if" in cc.reason
    assert context_entry(state(m), "dmar1", "01:00.0")["present"] is True
    (entry,) = unit_state(state(m), "dmar1")["context_cache"]
    assert entry["bdf"] == "01:00.0" and entry["present"] is False and entry["did"] == 0
    assert "stale" in entry
    m.execute("map 4 0x1000 4K")
    t = m.execute("dma 4 0x1000 r").translation
    assert not t.ok and t.context_hit and t.fault.reason == 0x02


# ----------------------------------------------------------------------------- lazy vs strict


def test_server_lazy_unmap_is_deferred_and_stale_until_flush_queue():
    m, outs = run(SERVER_LEGACY, "map 3 0x100000 64K rw", "dma 3 0x100000 r", "unmap 3 0x100000 64K")
    st = state(m)
    g = group_state(st, 3)
    assert g["owner"] == "driver"
    assert outs[1].translation.ok and not outs[1].translation.iotlb_hit
    e = one(outs[2], actor="driver", op=IOTLB)
    assert (e.scope, e.outcome, e.rule) == ("page", "skipped", "unmap") and "flush queue" in e.reason
    assert domain_state(st, g["domain"])["mapped_pages"] == 0
    # The IOTLB still holds the translation: the DMA goes through, to freed memory.
    t = m.execute("dma 3 0x100000 r").translation
    assert t.ok and t.iotlb_hit and t.hpa == 0x100100000
    (entry,) = unit_state(state(m), "dmar0")["iotlb"]
    assert "stale" in entry
    o = m.execute("flush-queue")
    e = one(o, actor="driver", op=IOTLB)
    assert (e.scope, e.outcome, e.rule) == ("domain", "issued", "unmap")
    assert len(events(o)) == 1
    assert unit_state(state(m), "dmar0")["iotlb"] == []
    assert m.execute("dma 3 0x100000 r").translation.fault.reason == 0x06
    # An empty queue flushes nothing.
    assert m.execute("flush-queue").events == []


def test_server_lazy_unmap_without_cached_entry_faults_at_once():
    m, _ = run(SERVER_LEGACY, "map 3 0x100000 64K rw", "unmap 3 0x100000 64K")
    assert m.execute("dma 3 0x100000 r").translation.fault.reason == 0x06


def test_flush_queue_for_one_group_only():
    m, _ = run(SERVER_LEGACY, "map 3 0x100000 4K", "unmap 3 0x100000 4K", "map 4 0x100000 4K", "unmap 4 0x100000 4K")
    o = m.execute("flush-queue 4")
    (e,) = events(o)
    did4 = domain_state(state(m), group_state(state(m), 4)["domain"])["did"]
    assert e.detail == f"DID {did4}"
    (e,) = events(m.execute("flush-queue"))
    did3 = domain_state(state(m), group_state(state(m), 3)["domain"])["did"]
    assert e.detail == f"DID {did3}"


def test_server_caching_mode_forces_strict_unmap():
    m, outs = run(SERVER_LEGACY, "toggle dmar0 CM", "map 3 0x100000 64K rw", "dma 3 0x100000 r",
                  "unmap 3 0x100000 64K")
    o = outs[3]
    fq = one(o, actor="driver", op="flush-queue")
    assert (fq.outcome, fq.rule) == ("skipped", "unmap")
    assert "IOMMU batching disallowed due to virtualization" in fq.reason
    e = one(o, actor="driver", op=IOTLB)
    assert (e.scope, e.outcome, e.rule) == ("page", "issued", "unmap")
    assert m.execute("dma 3 0x100000 r").translation.fault.reason == 0x06
    assert m.execute("flush-queue").events == []


def test_lazy_off_makes_dma_api_unmap_strict():
    m, outs = run(SERVER_LEGACY, "set lazy off", "map 3 0x100000 4K", "unmap 3 0x100000 4K")
    e = one(outs[2], actor="driver", op=IOTLB)
    assert (e.scope, e.outcome, e.rule) == ("page", "issued", "unmap")
    assert not events(outs[2], op="flush-queue")


def test_vfio_domains_are_never_lazy():
    # Lazy is on by default, but VFIO's UNMANAGED domains unmap synchronously.
    m, outs = run("desktop", "attach 5", "map 5 0x100000 4K", "unmap 5 0x100000 4K")
    assert one(outs[2], actor="driver", op=IOTLB).outcome == "issued"
    assert not events(outs[2], op="flush-queue")


def test_unmap_ih_hint_is_set_only_when_no_table_was_freed():
    # cache_tag_flush_range(..., ih = freelist empty): IH=1 when only leaves changed.
    m, outs = run(SERVER_LEGACY, "set lazy off", "map 3 0x200000 4K", "map 3 0x201000 0x1ff000",
                  "unmap 3 0x201000 0x1ff000")
    assert one(outs[3], op=IOTLB).detail.endswith(" IH")
    # Unmapping all 2 MiB that a level-1 table maps frees the table: IH=0.
    m, outs = run(SERVER_LEGACY, "set lazy off", "map 3 0x200000 4K", "map 3 0x201000 0x1ff000",
                  "unmap 3 0x200000 2M")
    e = one(outs[3], op=IOTLB)
    assert "addr 0x200000 AM 9" in e.detail and not e.detail.endswith(" IH")


def test_domain_page_walk_coherency_is_fixed_at_allocation():
    # domain->iommu_coherency comes from the unit at paging_domain_alloc(); PTE flushes
    # follow it, context entries follow ECAP.C now (__iommu_flush_cache).
    m, outs = run("desktop", "attach 5", "toggle dmar1 C", "map 5 0x100000 4K", "attach 4")
    pte = events(outs[2], actor="driver", op="clflush", detail_has="leaf PTE")
    assert pte and all(e.outcome == "issued" for e in pte)
    o = outs[3]
    assert all(e.outcome == "skipped" for e in events(o, op="clflush", detail_has="context entry 01:00.0"))
    # paging_domain_compatible(): coherency differs → -EINVAL, VFIO keeps the new domain.
    refused = one(o, actor="vfio", op="domain-reuse", outcome="skipped")
    assert "ECAP.C=1" in refused.reason and "-EINVAL" in refused.reason
    st = state(m)
    assert group_state(st, 4)["domain"] != group_state(st, 5)["domain"]


# ------------------------------------------------------------ paging_domain_compatible: page sizes
def _two_sllps_desktop(tmp_path):
    """The desktop with dmar1 reporting 2 MiB pages only (CAP.SLLPS=1), dmar0 2M+1G."""
    text = open("vtdtui/scenarios/desktop.toml").read().replace('cap = "0xd2008c40660462"',
                                                                 'cap = "0xd2008440660462"')
    path = tmp_path / "sllps.toml"
    path.write_text(text)
    return str(path)


def test_domain_with_1g_pages_refuses_a_unit_without_them(tmp_path):
    # paging_domain_compatible_second_stage(): "Same page size support" — the domain keeps
    # the sizes of the unit it was allocated for; a unit lacking one refuses (-EINVAL).
    # The old domain_update_iommu_superpage() shrank the domain instead and took the group.
    m, (_, _, o) = run(_two_sllps_desktop(tmp_path), "set reuse prefer-reuse", "attach 0", "attach 5")
    st = state(m)
    assert group_state(st, 0)["domain"] != group_state(st, 5)["domain"]
    e = one(o, actor="vfio", op="domain-reuse", outcome="skipped")
    assert "has no 1G pages" in e.reason and "-EINVAL" in e.reason
    d0 = m.domain_of(m.groups[0])
    assert d0.superpage_level == 3 and list(d0.dids) == ["dmar0"]


def test_domain_with_fewer_page_sizes_joins_a_unit_with_more(tmp_path):
    # The check is a subset test: a 2M-only domain fits a 2M+1G unit, and keeps mapping
    # with its own sizes (domain->domain.pgsize_bitmap is not widened).
    m, outs = run(_two_sllps_desktop(tmp_path), "set reuse prefer-reuse", "toggle dmar1 SC",
                  "attach 5", "attach 0", "map 0 0x40000000 1G rw")
    st = state(m)
    assert group_state(st, 0)["domain"] == group_state(st, 5)["domain"]
    d = m.domain_of(m.groups[0])
    assert d.superpage_level == 2 and set(d.dids) == {"dmar0", "dmar1"}
    assert m.driver_for("dmar0").iova_to_phys(d, 0x40000000)[1] == 2  # 2 MiB leaves, not one 1 GiB


def test_superpage_capability_follows_fls_of_sllps():
    # iommu_superpage_capability(): fls(cap_super_page_val); domain_super_pgsize_bitmap():
    # 1 → 2M, 2 → 2M|1G, anything else no large pages.
    from vtdtui.sw.linux import IntelIommuDriver

    class U:
        def __init__(self, sllps):
            self.sllps = sllps

        def capf(self, name):
            assert name == "SLLPS"
            return self.sllps

    assert [IntelIommuDriver.superpage_levels(U(v)) for v in (0, 1, 2, 3, 4, 8)] == [1, 2, 3, 3, 1, 1]


def test_switch_to_super_page_clears_frees_and_flushes_per_present_pde_before_the_large_pte():
    # switch_to_super_page(): for each present PDE where large pages go, dma_pte_free_pagetable()
    # clears it (with its clflush) and frees the table, then cache_tag_flush_range(pos..end, ih=0);
    # only after the loop does __domain_mapping() write the large PTEs.
    m, _ = run("desktop", "attach 5", "map 5 0x200000 4K", "map 5 0x400000 4K",
               "unmap 5 0x200000 4K", "unmap 5 0x400000 4K")
    drv = m.driver_for("dmar1")
    allocated = drv.alloc.allocated
    o = m.execute("map 5 0x200000 4M")
    evs = [e for e in o.events if e.actor == "driver"]
    order = [(e.op, e.rule, e.detail) for e in evs if e.rule in ("clflush", "superpage")]
    clears = [i for i, (op, rule, det) in enumerate(order) if "cleared for a large page" in det]
    psis = [i for i, (op, rule, _) in enumerate(order) if rule == "superpage" and op == "iotlb-invalidation"]
    leaves = [i for i, (op, rule, det) in enumerate(order) if "leaf PTE(s) L2" in det]
    assert len(clears) == 2 and len(psis) == 2 and len(leaves) == 1
    assert clears[0] < psis[0] < clears[1] < psis[1] < leaves[0]
    flushes = [e for e in evs if e.rule == "superpage" and e.op == "iotlb-invalidation"]
    devtlb = [e for e in evs if e.rule == "superpage" and e.op == "device-tlb-invalidation"]
    assert [e.outcome for e in devtlb] == ["skipped", "skipped"]  # cache_tag_flush_range: no ATS here
    assert [e.outcome for e in flushes] == ["issued", "issued"]
    assert "0x200000+0x400000" in flushes[0].detail and "0x400000+0x200000" in flushes[1].detail
    assert m.execute("dma 5 0x3ff000 r").translation.ok
    assert drv.alloc.allocated == allocated - 2  # the two emptied L1 tables went back


@pytest.mark.parametrize("iova, size", [
    (0x0, 0x1000), (0x1000, 0x3FF000), (0x1FF000, 0x202000), (0x0, 0x40000000), (0x3FE00000, 0x80400000),
    (0x123000, 0x7654000), (0x40000000, 0xC0001000),
])
def test_leaf_entries_counts_what_map_range_writes(iova, size):
    m, _ = run("desktop", "attach 5")
    d, drv = m.domain_of(m.groups[5]), m.driver_for("dmar1")
    for phys in (iova + 0x100000000, iova + 0x100200000 + 0x1000):
        want = drv.leaf_entries(d, iova, phys, size)
        assert drv.map_range(d, iova, phys, size, True, True) == want
        drv.unmap_range(d, iova, size)


def test_a_map_beyond_the_entry_limit_is_refused_before_any_work(tmp_path):
    # A unit without large pages (CAP.SLLPS=0): 256 GiB would be 64 Mi 4 KiB entries.
    from vtdtui.limits import MAX_MAP_ENTRIES
    from vtdtui.machine import CommandError

    text = open("vtdtui/scenarios/desktop.toml").read().replace('cap = "0xd2008c40660462"',
                                                                 'cap = "0xd2008040660462"')
    (tmp_path / "s.toml").write_text(text)
    m, _ = run(str(tmp_path / "s.toml"), "attach 5")
    before = dumps(m)
    with pytest.raises(CommandError, match="MAX_MAP_ENTRIES"):
        m.execute("map 5 0 256G")
    assert dumps(m) == before
    # The boundary: 4 GiB of 4 KiB pages is the limit itself, one page more is refused.
    d = m.domain_of(m.groups[5])
    assert m.driver_for("dmar1").leaf_entries(d, 0, m.scenario.ram_base, 4 << 30) == MAX_MAP_ENTRIES
    with pytest.raises(CommandError, match="1,048,577 leaf entries"):
        m.execute("map 5 0 0x100001000")
