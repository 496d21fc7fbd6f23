"""VFIO type1 and KVM decisions on the desktop scenario, end to end (REFERENCE.md §6–7).

- vfio_iommu_type1_attach_group(): allocate, attach, enforce_cache_coherency, then reuse
  (mainline: ops AND coherency equal; the 2022 "prefer-reuse" patch: ops only), replay.
- kvm_vfio_update_coherency(): one register per kvm-vfio device on the first
  non-coherent group (ECAP.SC of the device's unit, since 6.2), unregister when none left.
- vmx_get_mt_mask(): WB|IPAT without noncoherent DMA; WB (guest-pat, 6.11+) or the guest
  MTRR type (guest-mtrr, ≤6.10) with it; with KVM_X86_QUIRK_IGNORE_GUEST_PAT off, WB always.
- kvm_noncoherent_dma_assignment_start_or_stop(): the 0↔1 edges zap the EPT only where KVM
  may ignore guest PAT (the quirk on).
"""

from __future__ import annotations

import pytest

from machinekit import domain_state, events, group_state, lines, one, run, state

REG = "noncoherent-dma-register"
UNREG = "noncoherent-dma-unregister"


def test_gpu_without_snoop_control_makes_the_vm_noncoherent():
    m, _ = run("desktop")
    vm = state(m)["vm"]
    assert (vm["noncoherent_dma_count"], vm["emulate_wbinvd"], vm["ept_memtype_ram"]) == (0, False, "WB|IPAT")

    o = m.execute("attach 0")
    st = state(m)
    d = domain_state(st, group_state(st, 0)["domain"])
    assert d["unit"] == "dmar0" and d["devices"] == ["00:02.0"]
    assert d["enforce_cache_coherency"] is False
    e = one(o, actor="driver", op="enforce-cache-coherency")
    assert (e.outcome, e.rule) == ("skipped", "snp") and "ECAP.SC=0 on dmar0" in e.reason
    e = one(o, actor="kvm", op=REG)
    assert (e.outcome, e.rule) == ("issued", "kvm-coherency")
    e = one(o, actor="kvm", op="ept-zap")
    assert (e.outcome, e.rule) == ("issued", "kvm-ept-zap")
    vm = st["vm"]
    assert vm["noncoherent_dma_count"] == 1
    assert vm["emulate_wbinvd"] is True
    assert vm["ept_memtype_ram"] == "WB"  # guest-pat: WB without IPAT, guest PAT honoured
    assert vm["ept_memtype_mmio"] == "UC"
    assert vm["ept_zaps"] == 1  # the 0→1 edge zaps the EPT
    assert st["vfio"]["cc_iommu"] is False


def test_kvm_610_uses_the_guest_mtrr_type():
    m, _ = run("desktop", "set kvm-model 6.10")
    assert state(m)["vm"]["ept_memtype_ram"] == "WB|IPAT"  # no noncoherent DMA: same in every model
    m.execute("attach 0")
    memtype = state(m)["vm"]["ept_memtype_ram"]
    assert "MTRR" in memtype and "IPAT" not in memtype
    # CR0.CD with KVM_X86_QUIRK_CD_NW_CLEARED (default on): WB without IPAT.
    m.execute("set cr0-cd on")
    assert state(m)["vm"]["ept_memtype_ram"] == "WB"
    # The guest-PAT model (6.11+) has no CR0.CD case any more.
    m.execute("set kvm-model 6.11+")
    assert state(m)["vm"]["model"] == "guest-pat"  # the version is an alias of the model's name
    assert state(m)["vm"]["ept_memtype_ram"] == "WB"
    m.execute("set cr0-cd off")
    assert state(m)["vm"]["ept_memtype_ram"] == "WB"


def test_ignore_guest_pat_quirk_off_honours_guest_pat_and_skips_the_zap():
    # c9c1e20b4c7d: vmx_ignore_guest_pat() = !noncoherent DMA && the quirk; with the
    # quirk off (KVM_CAP_DISABLE_QUIRKS2, as a VMM may) RAM is WB without IPAT always,
    # and kvm_noncoherent_dma_assignment_start_or_stop() has nothing to zap.
    m, (o,) = run("desktop", "set ignore-guest-pat off")
    assert state(m)["vm"]["ept_memtype_ram"] == "WB"  # no noncoherent DMA, guest PAT honoured anyway
    assert state(m)["vm"]["ignore_guest_pat"] is False
    o = m.execute("attach 0")
    assert state(m)["vm"]["noncoherent_dma_count"] == 1 and state(m)["vm"]["ept_memtype_ram"] == "WB"
    e = one(o, actor="kvm", op="ept-zap")
    assert (e.outcome, e.rule) == ("skipped", "kvm-ept-zap") and "IGNORE_GUEST_PAT is off" in e.reason
    o = m.execute("detach 0")
    assert one(o, actor="kvm", op="ept-zap").outcome == "skipped"
    assert state(m)["vm"]["ept_zaps"] == 0


def test_ignore_guest_pat_quirk_is_moot_in_the_guest_mtrr_model():
    # Before the rework KVM always ignored guest PAT without noncoherent DMA and zapped on
    # the edges (kvm_mmu_may_ignore_guest_pat() was shadow_memtype_mask): no quirk to turn off.
    m, _ = run("desktop", "set kvm-model guest-mtrr", "set ignore-guest-pat off")
    assert state(m)["vm"]["ept_memtype_ram"] == "WB|IPAT"
    o = m.execute("attach 0")
    assert one(o, actor="kvm", op="ept-zap").outcome == "issued"
    assert "MTRR" in state(m)["vm"]["ept_memtype_ram"]


def test_kvm_model_names_and_aliases_in_scenarios(tmp_path):
    from vtdtui.machine.scenario import ScenarioError, load

    base = (tmp_path / "s.toml")
    text = open("vtdtui/scenarios/desktop.toml").read()
    for word, name in (("guest-mtrr", "guest-mtrr"), ("6.10", "guest-mtrr"), ("6.11+", "guest-pat")):
        base.write_text(text.replace('kvm_model = "guest-pat"', f'kvm_model = "{word}"'))
        assert load(str(base)).kvm_model == name
    base.write_text(text.replace('kvm_model = "guest-pat"', 'kvm_model = "6.12"'))
    with pytest.raises(ScenarioError, match="guest-mtrr"):
        load(str(base))


def test_snoop_control_group_keeps_the_vm_coherent():
    m, (o,) = run("desktop", "attach 5")
    st = state(m)
    assert domain_state(st, group_state(st, 5)["domain"])["enforce_cache_coherency"] is True
    one(o, actor="driver", op="enforce-cache-coherency", outcome="issued", rule="snp")
    e = one(o, actor="kvm")
    assert e.outcome == "skipped" and "no change" in e.reason
    assert st["vm"]["noncoherent_dma_count"] == 0 and st["vm"]["ept_memtype_ram"] == "WB|IPAT"
    assert st["vfio"]["cc_iommu"] is True


def test_mainline_keeps_coherent_and_noncoherent_groups_apart():
    m, (_, o) = run("desktop", "attach 0", "attach 5")
    st = state(m)
    d0, d5 = group_state(st, 0)["domain"], group_state(st, 5)["domain"]
    assert d0 != d5 and len(st["domains"]) == 2 and st["vfio"]["domains"] == [d0, d5]
    skip = one(o, actor="vfio", op="domain-reuse", outcome="skipped")
    assert skip.rule == "vfio-reuse"
    assert "enforce_cache_coherency=false" in skip.reason and "needs true" in skip.reason
    assert f"domain {d0}" in skip.reason
    keep = one(o, actor="vfio", op="domain-reuse", outcome="issued")
    assert f"keeps new domain {d5}" in keep.reason
    assert domain_state(st, d5)["enforce_cache_coherency"] is True
    # KVM: group 0 is still non-coherent, nothing changes.
    assert one(o, actor="kvm").outcome == "skipped"
    assert st["vm"]["noncoherent_dma_count"] == 1


def test_mainline_reuses_a_domain_of_equal_coherency():
    m, (_, o) = run("desktop", "attach 5", "attach 4")
    st = state(m)
    assert group_state(st, 4)["domain"] == group_state(st, 5)["domain"]
    (d,) = st["domains"]
    assert d["devices"] == ["01:00.0", "02:00.0"]
    e = one(o, actor="vfio", op="domain-reuse")
    assert e.outcome == "issued" and "ops and enforce_cache_coherency match" in e.reason


def test_prefer_reuse_shares_one_domain():
    m, (_, _, o) = run("desktop", "set reuse prefer-reuse", "attach 0", "attach 5")
    st = state(m)
    assert st["vfio"]["policy"] == "prefer-reuse"
    (d,) = st["domains"]
    assert group_state(st, 0)["domain"] == group_state(st, 5)["domain"] == d["id"]
    assert d["devices"] == ["00:02.0", "02:00.0"]
    assert {u["unit"] for u in d["units"]} == {"dmar0", "dmar1"}
    assert d["enforce_cache_coherency"] is False
    e = one(o, actor="vfio", op="domain-reuse")
    assert e.outcome == "issued" and "prefer-reuse" in e.reason and f"joins domain {d['id']}" in e.reason
    # Same KVM outcome as mainline: KVM ORs over devices anyway.
    assert st["vm"]["noncoherent_dma_count"] == 1
    # The same under mainline gives two domains.
    m, _ = run("desktop", "attach 0", "attach 5")
    assert len(state(m)["domains"]) == 2


def test_prefer_reuse_cannot_put_a_non_sc_unit_into_a_force_snooping_domain():
    # paging_domain_compatible(): force_snooping && !ECAP.SC → -EINVAL; VFIO keeps the new domain.
    m, (_, _, o) = run("desktop", "set reuse prefer-reuse", "attach 5", "attach 0")
    st = state(m)
    assert group_state(st, 0)["domain"] != group_state(st, 5)["domain"]
    e = one(o, actor="vfio", op="domain-reuse", outcome="skipped")
    assert "refused" in e.reason and "-EINVAL" in e.reason
    one(o, actor="vfio", op="domain-reuse", outcome="issued")


def test_detach_noncoherent_group_unregisters():
    m, _ = run("desktop", "attach 0", "attach 5")
    o = m.execute("detach 0")
    e = one(o, actor="kvm", op=UNREG)
    assert (e.outcome, e.rule) == ("issued", "kvm-coherency")
    assert one(o, actor="kvm", op="ept-zap").outcome == "issued"
    st = state(m)
    vm = st["vm"]
    assert (vm["noncoherent_dma_count"], vm["emulate_wbinvd"], vm["ept_memtype_ram"]) == (0, False, "WB|IPAT")
    assert vm["ept_zaps"] == 2
    assert group_state(st, 0)["domain"] is None
    (d,) = st["domains"]  # group 0's domain went with its last group
    assert d["id"] == group_state(st, 5)["domain"]
    assert st["vfio"]["cc_iommu"] is True


def test_kvm_decides_by_the_device_unit_not_by_the_shared_domain():
    # Since 6.2 KVM asks each device's IOMMU for ENFORCE_CACHE_COHERENCY (ECAP.SC):
    # after prefer-reuse, group 5 sits in a non-snooping domain yet counts as coherent.
    m, _ = run("desktop", "set reuse prefer-reuse", "attach 0", "attach 5", "detach 0")
    st = state(m)
    (d,) = st["domains"]
    assert d["devices"] == ["02:00.0"] and d["enforce_cache_coherency"] is False
    assert st["vm"]["noncoherent_dma_count"] == 0


def test_virtio_noncoherent_registers_separately():
    m, outs = run("desktop", "set virtio-noncoherent on", "attach 0")
    assert state(m)["vm"]["noncoherent_dma_count"] == 2
    assert one(outs[0], actor="kvm", op=REG).rule == "kvm-coherency"
    assert state(m)["vm"]["ept_zaps"] == 1  # only the first 0→1 edge zaps
    m.execute("set virtio-noncoherent off")
    assert state(m)["vm"]["noncoherent_dma_count"] == 1
    m.execute("detach 0")
    vm = state(m)["vm"]
    assert vm["noncoherent_dma_count"] == 0 and vm["ept_memtype_ram"] == "WB|IPAT" and vm["ept_zaps"] == 2


def test_new_domain_gets_existing_mappings_replayed():
    m, (_, _, o) = run("desktop", "attach 5", "map 5 0x100000 64K rw", "attach 0")
    st = state(m)
    d0 = domain_state(st, group_state(st, 0)["domain"])
    assert d0["mapped_pages"] == 16
    assert "replaying 1 mapping(s)" in one(o, actor="vfio", op="domain-reuse", outcome="issued").reason
    t = m.execute("dma 0 0x104000 w").translation
    assert t.ok and t.hpa == 0x100104000 and not t.snp


def test_map_goes_into_every_domain_of_the_container():
    m, (_, _, o) = run("desktop", "attach 0", "attach 5", "map 5 0x100000 64K rw")
    st = state(m)
    assert [d["mapped_pages"] for d in st["domains"]] == [16, 16]
    assert {e.unit for e in events(o, actor="driver", op="iotlb-invalidation", rule="map-np2p")} == {"dmar0", "dmar1"}
    o = m.execute("unmap 0 0x100000 64K")  # any group's command names the container's mapping
    assert [d["mapped_pages"] for d in state(m)["domains"]] == [0, 0]
    assert {e.unit for e in events(o, op="iotlb-invalidation", outcome="issued")} == {"dmar0", "dmar1"}


def test_last_domain_gone_drops_the_dma_list():
    m, _ = run("desktop", "attach 5", "map 5 0x100000 64K", "detach 5")
    assert state(m)["domains"] == [] and state(m)["vfio"]["domains"] == []
    m.execute("attach 5")
    assert state(m)["domains"][0]["mapped_pages"] == 0
    # With another domain left, the DMA list stays and is replayed on re-attach.
    m, _ = run("desktop", "attach 0", "attach 5", "map 5 0x100000 64K", "detach 5", "attach 5")
    assert [d["mapped_pages"] for d in state(m)["domains"]] == [16, 16]


@pytest.mark.parametrize("flush", ["off", "on"])
def test_cpu_cache_flush_for_noncoherent_mappings(flush):
    m, outs = run("desktop", f"set vfio-flush {flush}", "attach 0", "map 0 0x100000 8K")
    e = one(outs[2], actor="vfio", op="cpu-cache-flush")
    assert e.rule == "vfio-noncoherent-flush"
    if flush == "on":
        assert e.outcome == "issued" and "2024 proposal" in e.reason
    else:
        assert e.outcome == "skipped" and "mainline" in e.reason
    assert state(m)["vfio"]["flush_noncoherent"] is (flush == "on")
    # A container of coherent domains never needs it.
    m, outs = run("desktop", f"set vfio-flush {flush}", "attach 5", "map 5 0x100000 8K")
    e = one(outs[2], actor="vfio", op="cpu-cache-flush")
    assert e.outcome == "skipped" and "every domain enforces coherency" in e.reason, lines(outs[2])


def test_unmap_takes_every_whole_mapping_inside_the_range():
    # type1v2: an unmap range may cover several mappings, as long as it splits none.
    m, (*_, o) = run("desktop", "attach 5", "map 5 0x100000 64K", "map 5 0x180000 8K", "unmap 5 0x0 0x200000")
    assert o.message == "unmapped 0x0+72K from domain 1"
    assert state(m)["domains"][0]["mapped_pages"] == 0
    assert len(events(o, actor="driver", op="iotlb-invalidation", rule="unmap", outcome="issued")) == 2


def test_2024_flush_happens_once_per_mapping():
    # update_to_noncoherent_required = !domain->enforce_cache_coherency && !dma->is_noncoherent:
    # a replay into a second non-coherent domain does not flush a mapping flushed already.
    m, outs = run("desktop", "set vfio-flush on", "attach 0", "map 0 0x100000 8K",
                  "toggle dmar1 SC", "toggle dmar1 C", "attach 5")
    assert one(outs[2], actor="vfio", op="cpu-cache-flush").outcome == "issued"
    o = outs[-1]
    st = state(m)
    assert group_state(st, 0)["domain"] != group_state(st, 5)["domain"]  # ECAP.C differs: no reuse
    assert [d["enforce_cache_coherency"] for d in st["domains"]] == [False, False]
    e = one(o, actor="vfio", op="cpu-cache-flush")
    assert (e.outcome, e.rule, e.unit) == ("skipped", "vfio-noncoherent-flush", "dmar1")
    assert "dma->is_noncoherent" in e.reason


def test_vfio_events_name_the_unit_of_the_domain_they_act_on():
    # The flush is for the non-coherent domain (on dmar0), whichever domain came first.
    m, outs = run("desktop", "set vfio-flush on", "attach 5", "attach 0", "map 5 0x100000 8K")
    e = one(outs[-1], actor="vfio", op="cpu-cache-flush")
    assert (e.outcome, e.unit) == ("issued", "dmar0")
    assert "domain 2" in e.reason


def test_no_internal_group_number_in_any_journal_text():
    # The host group behind QEMU's assigned device is a scenario-built group with id -1.
    m, _ = run("viommu", "attach 3", "map 3 0x100000 64K rw", "detach 3")
    texts = [e.reason + " " + e.detail for e in m.journal.events]
    assert not [t for t in texts if "group -1" in t or "group(s) -1" in t]
