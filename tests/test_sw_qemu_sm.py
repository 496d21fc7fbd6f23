"""QEMU's intel-iommu in scalable mode (x-scalable-mode=on, no x-flts) keeping the host
shadow of the assigned NIC (REFERENCE-2 §15; qemu/qemu hw/i386/intel_iommu.c, ≈2025
copies: vtd_cap_init, vtd_decide_config, vtd_piotlb_pasid_invalidate,
vtd_piotlb_page_invalidate, vtd_process_pasid_desc / vtd_pasid_cache_sync).

viommu-sm: the viommu story's groups; group 3 (00:03.0) is the host's 02:00.0 behind
host-dmar1.  GPA = IOVA + 0x40000000 for guest buffers, HPA = GPA + 0x100000000.
"""

from __future__ import annotations

from importlib import resources

import pytest

from machinekit import events, one, run, state, unit_state
from vtdtui.hw import qi, regs
from vtdtui.machine import Machine, ScenarioError, load
from vtdtui.sw import rules
from vtdtui.sw.qemu import FLTS_NEEDS_IOMMUFD, FLTS_NEEDS_SM

GUEST_RAM, HOST_RAM = 0x40000000, 0x100000000
NIC = 0x0018  # 00:03.0


def _bit(reg, name: str) -> int:
    return 1 << reg.field(name).lo


def test_guest_unit_reports_what_vtd_cap_init_computes_for_x_scalable_mode():
    legacy, sm = load("viommu"), load("viommu-sm")
    lu, su = legacy.units[0], sm.units[0]
    # `else if (s->scalable_mode) s->ecap |= VTD_ECAP_SMTS | VTD_ECAP_SRS | VTD_ECAP_SLTS;`
    assert su.ecap == lu.ecap | _bit(regs.ECAP, "SMTS") | _bit(regs.ECAP, "SRS") | _bit(regs.ECAP, "SLTS")
    assert su.ecap == 0x0000480080F00F5A  # REFERENCE-2 §15 table
    assert su.cap == lu.cap == 0x80D2008C222F0686  # CAP does not change without x-flts
    assert not regs.ECAP.get(su.ecap, "FLTS") and not regs.CAP.get(su.cap, "FL1GP")
    assert sm.qemu.scalable_mode is True and legacy.qemu.scalable_mode is False
    assert [g.id for g in sm.groups] == [g.id for g in legacy.groups]
    assert [[d.source_id for d in g.devices] for g in sm.groups] == \
        [[d.source_id for d in g.devices] for g in legacy.groups]


def test_the_guest_runs_scalable_mode_with_a_second_stage_pasid_entry():
    m, (o,) = run("viommu-sm", "attach 3")
    assert m.units["dmar0"].sm_active and not m.units["host-dmar1"].sm_active
    st = state(m)
    pe = next(p for p in unit_state(st, "dmar0")["pasid_entries"] if p["bdf"] == "00:03.0" and p["pasid"] == 0)
    assert pe["present"] and pe["pgtt"] == "second-stage"
    # pasid_flush_caches() under CM: PASID-selective PASID cache, then PASID-selective P_IOTLB.
    pc = one(o, actor="driver", op="pasid-cache-invalidation")
    pio = one(o, actor="driver", op="piotlb-invalidation")
    assert (pc.rule, pc.scope, pc.pasid) == ("pasid-np2p", "pasid", 0)
    assert (pio.rule, pio.scope, pio.did, pio.pasid) == ("pasid-np2p", "pasid", pe["did"], 0)
    # QEMU: the PASID cache changes nothing without x-flts; the P_IOTLB syncs the device.
    skip = one(o, actor="qemu", rule="qemu-sm-pasid-cache")
    assert skip.outcome == "skipped" and "vtd_pasid_cache_sync" in skip.reason
    trap = one(o, actor="qemu", rule="qemu-sm-shadow")
    assert (trap.outcome, trap.scope, trap.did, trap.pasid) == ("issued", "piotlb-pasid", pe["did"], 0)
    assert "vtd_piotlb_pasid_invalidate" in trap.reason
    assert state(m)["qemu"]["shadow"] == []


def test_a_guest_map_is_a_psi_and_the_host_maps_it():
    m, (_, o) = run("viommu-sm", "attach 3", "map 3 0x100000 16K rw")
    psi = events(o, actor="driver", op="iotlb-invalidation", outcome="issued")
    assert [(e.rule, e.scope) for e in psi] == [("map-np2p", "page")]  # second stage: PSI, not P_IOTLB
    assert not events(o, actor="driver", op="piotlb-invalidation")
    maps = events(o, actor="qemu", op="shadow-map", outcome="issued")
    assert [e.detail.split(" ")[0] for e in maps] == [hex(0x100000 + i * 0x1000) + "+0x1000" for i in range(4)]
    host = {d.iova: d.vaddr_hpa for d in m.qemu.host_vfio.dmas}
    assert host == {0x100000 + i * 0x1000: 0x100000 + i * 0x1000 + GUEST_RAM + HOST_RAM for i in range(4)}
    t = m.execute("dma 3 0x102000 w").translation
    assert t.ok and t.hpa == 0x102000 + GUEST_RAM + HOST_RAM
    assert m.qemu.guest_mappings() == m.qemu.shadow


def test_unmap_removes_the_host_mappings():
    m, _ = run("viommu-sm", "attach 3", "map 3 0x100000 16K rw")
    o = m.execute("unmap 3 0x100000 8K")
    unmaps = events(o, actor="qemu", op="shadow-unmap", outcome="issued")
    assert [e.detail for e in unmaps] == ["0x100000+0x1000", "0x101000+0x1000"]
    assert sorted(d.iova for d in m.qemu.host_vfio.dmas) == [0x102000, 0x103000]
    assert m.execute("dma 3 0x100000 r").translation.fault is not None


def test_a_torn_down_pasid_entry_leaves_the_shadow_until_the_next_sync():
    m, _ = run("viommu-sm", "attach 3", "map 3 0x100000 8K rw")
    o = m.execute("detach 3")
    # Linux keeps the SM context entry; the teardown DSI finds the PASID entry not
    # present, vtd_dev_to_context_entry() fails with it and the device is skipped.
    one(o, actor="driver", op="iotlb-invalidation", rule="pasid-teardown")
    stale = one(o, actor="qemu", op="shadow-unmap")
    assert stale.outcome == "skipped" and stale.rule == "qemu-sm-shadow"
    assert "0x59" in stale.reason and "2 mapping(s) stay on the host" in stale.reason
    assert len(m.qemu.host_vfio.dmas) == 2 and m.qemu.guest_mappings() == {}
    # The next attach's P_IOTLB syncs a valid entry again: the diff unmaps them.
    o = m.execute("attach 3")
    assert events(o, actor="qemu", op="shadow-unmap", outcome="issued")
    assert not list(m.qemu.host_vfio.dmas)
    assert m.qemu.shadow == {}


def _did(m) -> int:
    return m.qemu._source().did


def test_p_iotlb_of_another_did_or_pasid_is_not_the_device():
    m, _ = run("viommu-sm", "attach 3", "map 3 0x100000 4K rw")
    g = m.units["dmar0"]
    did, mark = _did(m), len(m.journal.events)
    g.submit(qi.PiotlbDesc(2, did + 5, 0))
    g.submit(qi.PiotlbDesc(2, did, 7))
    traps = [e for e in m.journal.events[mark:] if e.actor == "qemu"]
    assert [(e.outcome, e.rule, e.did, e.pasid) for e in traps] == [
        ("skipped", "qemu-sm-shadow", did + 5, 0), ("skipped", "qemu-sm-shadow", did, 7)]
    assert f"PASID entry has DID {did}" in traps[0].reason and "RID_PASID is 0" in traps[1].reason
    assert list(m.qemu.shadow) == [0x100000]


def test_page_selective_p_iotlb_syncs_only_its_range():
    m, _ = run("viommu-sm", "attach 3", "map 3 0x100000 4K rw")
    g = m.units["dmar0"]
    # The guest maps two more pages and (wrongly, for a second stage) tells QEMU about
    # only one with a page-selective P_IOTLB: QEMU walks just that page.
    m.qemu.plugged = False  # no notifier while the driver's own PSIs go by
    m.execute("map 3 0x200000 4K rw")
    m.execute("map 3 0x300000 4K rw")
    m.qemu.plugged = True
    mark = len(m.journal.events)
    g.submit(qi.PiotlbDesc(3, _did(m), 0, 0x200000, 0))
    evs = [e for e in m.journal.events[mark:] if e.actor == "qemu"]
    assert [(e.op, e.scope) for e in evs][0] == ("trap", "piotlb-page")
    assert "vtd_piotlb_page_invalidate" in evs[0].reason
    assert sorted(m.qemu.shadow) == [0x100000, 0x200000]  # 0x300000 not walked


def test_reserved_granularity_is_the_viommus_queue_error_and_never_reaches_qemu():
    m, _ = run("viommu-sm", "attach 3", "map 3 0x100000 4K rw")
    g = m.units["dmar0"]
    traps, mark = m.qemu.traps, len(m.journal.events)
    g.submit(qi.PcDesc(2, 2, 0))  # PC G=2 is reserved: vtd_process_pasid_desc() fails
    assert g.fsts & regs.FSTS_IQE
    assert m.qemu.traps == traps and not [e for e in m.journal.events[mark:] if e.actor == "qemu"]
    assert list(m.qemu.shadow) == [0x100000]


def test_every_qemu_decision_names_a_rule_of_the_table():
    m, _ = run("viommu-sm", "attach 3", "map 3 0x100000 64K rw", "unmap 3 0x100000 64K", "detach 3", "attach 3")
    qemu = [e for e in m.journal.events if e.actor == "qemu"]
    assert {e.rule for e in qemu} >= {"qemu-device", "qemu-shadow", "qemu-sm-shadow", "qemu-sm-pasid-cache"}
    for e in qemu:
        r = rules.rule(e.rule)
        assert r is not None and r.actor == "qemu", e


# ----------------------------------------------------------------------------- what QEMU refuses
def _sm_toml(tmp_path, *, ecap: str = "0x480080f00f5a", cap: str = "0x80d2008c222f0686", qemu: str = "",
             sm: str = "scalable_mode = true") -> str:
    text = resources.files("vtdtui.scenarios").joinpath("viommu-sm.toml").read_text()
    text = text.replace('ecap = "0x480080f00f5a"', f'ecap = "{ecap}"', 1).replace(
        'cap = "0x80d2008c222f0686"', f'cap = "{cap}"', 1)
    text = text.replace("scalable_mode = true ", f"{sm}\n{qemu}\n#", 1)
    p = tmp_path / "sm.toml"
    p.write_text(text)
    return str(p)


def test_the_built_in_file_parses_through_the_helper(tmp_path):
    assert load(_sm_toml(tmp_path)).qemu.scalable_mode is True


@pytest.mark.parametrize("kw, parts", [
    ({"qemu": "flts = true"}, [FLTS_NEEDS_IOMMUFD, "vtd_check_hiod"]),
    ({"qemu": "flts = true", "sm": "scalable_mode = false", "ecap": "0xf00f5a"}, [FLTS_NEEDS_SM]),
    ({"ecap": "0xf00f5a"}, ["lacks SMTS|SRS|SLTS", "0x480080f00f5a"]),
    ({"ecap": "0xc80080f00f5a"}, ["has FLTS"]),
    ({"sm": "scalable_mode = false"}, ["ECAP.SMTS=1", "x-scalable-mode=on"]),
    # MGAW 57 (aw-bits 57) is x-flts only in QEMU's scalable mode.
    ({"cap": "0x80d2008c222f0686".replace("2f0686", "380686")}, ["Scalable mode(flts=off): supported values"]),
    ({"cap": "0x8012008c222f0686"}, ["Need to set dma_drain for scalable mode"]),
    ({"cap": "0x80d2008c222f0606"}, ["CAP.CM=0", "Device assignment is not allowed"]),
    ({"qemu": 'flts = "on"'}, ["'flts' must be bool"]),
])
def test_qemu_refuses_these_options(tmp_path, kw, parts):
    with pytest.raises(ScenarioError) as exc:
        load(_sm_toml(tmp_path, **kw))
    msg = str(exc.value)
    assert "qemu" in msg and all(p in msg for p in parts), msg


def test_legacy_viommu_is_unchanged():
    m = Machine.from_scenario("viommu")
    assert not m.units["dmar0"].sm_active
    o = m.execute("attach 3")
    assert not events(o, actor="qemu", op="trap")
