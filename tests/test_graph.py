"""The domain graph: nodes and edges as the machine has them, and the TUI's questions."""

from vtdtui import graph
from vtdtui.machine import Machine


def test_desktop_mainline_keeps_gpu_and_nic_apart():
    m = Machine.from_scenario("desktop")
    m.execute("attach 0")
    m.execute("attach 5")
    g = graph.build(m)
    shared = graph.devices_sharing_domain(g)
    assert sorted(shared.values()) == [["00:02.0"], ["02:00.0"]]
    gpu_domain = next(d for d, devs in shared.items() if devs == ["00:02.0"])
    assert graph.noncoherent_domains(g) == [gpu_domain]
    assert g.has_edge(("group", 0), ("domain", gpu_domain))
    assert g.has_edge(("domain", gpu_domain), ("unit", "dmar0"))
    assert g.nodes[("domain", gpu_domain)]["dids"] == {"dmar0": 2}
    assert g.has_edge(("vm", "kvm"), ("container", "vfio"))
    assert g.nodes[("container", "vfio")]["cc_iommu"] is False
    yes, why = graph.kvm_noncoherent_why(m)
    assert yes and "group 0" in why and "dmar0" in why and "ECAP.SC=0" in why


def test_prefer_reuse_puts_both_groups_in_one_domain_across_units():
    m = Machine.from_scenario("desktop")
    m.execute("set reuse prefer-reuse")
    m.execute("attach 0")
    m.execute("attach 5")
    g = graph.build(m)
    shared = graph.devices_sharing_domain(g)
    assert list(shared.values()) == [["00:02.0", "02:00.0"]]
    (dom,) = shared
    assert {u for _, u in g.successors(("domain", dom))} == {"dmar0", "dmar1"}


def test_detach_leaves_no_domain_and_kvm_coherent():
    m = Machine.from_scenario("desktop")
    m.execute("attach 0")
    m.execute("detach 0")
    g = graph.build(m)
    assert graph.devices_sharing_domain(g) == {}
    assert graph.kvm_noncoherent_why(m) == (False, "every assigned group's IOMMU enforces snooping (ECAP.SC=1)")


def test_viommu_graph_has_guest_and_host_domains():
    m = Machine.from_scenario("viommu")
    m.execute("attach 3")
    g = graph.build(m)
    shared = graph.devices_sharing_domain(g)
    assert ["00:03.0"] in shared.values() and ["02:00.0"] in shared.values()
    assert g.nodes[("unit", "dmar0")]["level"] == "guest"
    assert g.nodes[("unit", "host-dmar1")]["level"] == "host"
    assert graph.kvm_noncoherent_why(Machine.from_scenario("server")) == (False, "no VM in this scenario")
