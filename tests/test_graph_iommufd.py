"""The domain graph with iommufd: IOAS and HWPT nodes, their edges, and the question
"why are these two devices in separate HWPTs"; update() in place equals build()."""

from vtdtui import graph as G
from vtdtui.machine import Machine
from vtdtui.views.graph import GraphView, graph_lines
from vtdtui.views.style import text_of


def graph_data(g) -> tuple[dict, dict]:
    return dict(g.nodes(data=True)), {(u, v): d for u, v, d in g.edges(data=True)}


def _hwpt_of(m: Machine, bdf: str):
    dev = next(d for d in m.iommufd.devices if d.bdf == bdf)
    return m.iommufd.objects[dev.hwpt]


def test_desktop_on_iommufd_puts_gpu_and_nic_in_two_auto_hwpts_and_says_why():
    m = Machine.from_scenario("desktop")
    for line in ("set backend iommufd", "attach 5", "attach 0"):
        m.execute(line)
    g = G.build(m)
    nic, gpu = _hwpt_of(m, "02:00.0"), _hwpt_of(m, "00:02.0")
    assert nic.id != gpu.id
    (ioas,) = m.iommufd.ioas
    assert g.has_edge(("vm", "kvm"), ("ioas", ioas.id))
    for h in (nic, gpu):
        node = ("hwpt", h.id)
        assert g.nodes[node]["kind"] == "hwpt" and g.nodes[node]["hwpt"] == "paging" and g.nodes[node]["auto"]
        assert g.has_edge(("ioas", ioas.id), node) and g.has_edge(node, ("domain", h.domain.id))
    assert g.has_edge(("device", "02:00.0"), ("hwpt", nic.id))
    assert g.has_edge(("device", "00:02.0"), ("hwpt", gpu.id))
    # dmar1 has SC, dmar0 not: the NIC's HWPT enforces coherency, the GPU's cannot.
    assert g.nodes[("hwpt", nic.id)]["enforce_cache_coherency"] is True
    assert g.nodes[("hwpt", gpu.id)]["enforce_cache_coherency"] is False
    assert g.nodes[("ioas", ioas.id)]["apart"] == ("02:00.0", "00:02.0")
    yes, kvm_why = G.kvm_noncoherent_why(m)  # KVM holds cdevs now, not groups
    assert yes and kvm_why.startswith("the vfio cdev of 00:02.0 sits behind dmar0, which has no snoop control")
    why = G.hwpt_apart_why(m, "02:00.0", "00:02.0")
    assert why.startswith(f"00:02.0 was not put in HWPT {nic.id}:") and "(-EINVAL)" in why
    # The domains hang under the HWPTs, not among the kernel's own.
    rows = [text_of(r) for r in graph_lines(m, g)]
    assert not any(r.startswith("kernel DMA-API domains") for r in rows)
    assert any("why apart: 00:02.0 was not put in HWPT" in r for r in rows)
    heads = [r.lstrip("│├└─ ") for r in rows]
    assert sum(r.startswith(f"HWPT {h.id} paging · auto") for r in heads for h in (nic, gpu)) == 2


def test_hwpt_apart_why_answers_for_shared_and_unattached_devices():
    m = Machine.from_scenario("desktop")
    m.execute("set backend iommufd")
    assert G.hwpt_apart_why(m, "02:00.0", "00:02.0") == "02:00.0 and 00:02.0 are in no HWPT"
    m.execute("attach 5")
    m.execute("toggle dmar0 SC")  # now both units snoop: the GPU joins the NIC's HWPT
    m.execute("attach 0")
    h = _hwpt_of(m, "02:00.0")
    assert G.hwpt_apart_why(m, "02:00.0", "00:02.0") == f"02:00.0 and 00:02.0 share HWPT {h.id}"
    assert G.build(m).nodes[("ioas", m.iommufd.ioas[0].id)]["apart"] is None


def test_update_in_place_equals_build_through_attach_detach_and_undo():
    m = Machine.from_scenario("desktop")
    g = G.build(m)
    view = GraphView()
    view.lines(m)
    for line in ("set backend iommufd", "attach 5", "attach 0", "map 5 0 64K", "detach 5", "attach 5",
                 "detach 0", "toggle dmar0 SC", "attach 0"):
        o = m.execute(line)
        G.update(g, m, o.changed)
        assert graph_data(g) == graph_data(G.build(m)), line
        assert list(view.lines(m, o.changed)) == graph_lines(m), line
    for _ in range(4):
        o = m.undo()
        G.update(g, m, o.changed)
        assert graph_data(g) == graph_data(G.build(m)), "undo"
        assert list(view.lines(m, o.changed)) == graph_lines(m), "undo"


def test_an_auto_hwpt_goes_with_its_last_device():
    m = Machine.from_scenario("desktop")
    m.execute("set backend iommufd")
    g = G.build(m)
    G.update(g, m, m.execute("attach 5").changed)
    hid = _hwpt_of(m, "02:00.0").id
    assert ("hwpt", hid) in g
    G.update(g, m, m.execute("detach 5").changed)
    assert ("hwpt", hid) not in g and not [n for n in g if n[0] == "hwpt"]
    assert not g.has_edge(("device", "02:00.0"), ("hwpt", hid))


def test_viommu_nested_hwpt_nests_on_its_parent():
    m = Machine.from_scenario("viommu-nested")
    g = G.build(m)
    view = GraphView()
    view.lines(m)
    o = m.execute("attach 3")
    G.update(g, m, o.changed)
    assert graph_data(g) == graph_data(G.build(m))
    assert list(view.lines(m, o.changed)) == graph_lines(m)
    q = m.qemu
    nested, parent = m.iommufd.objects[q.fs_hwpt], m.iommufd.objects[q.parent_hwpt]
    assert nested.kind == "nested" and parent.kind == "paging" and parent.nest_parent
    assert g.edges[("hwpt", nested.id), ("hwpt", parent.id)]["rel"] == "nests on"
    assert g.has_edge(("hwpt", nested.id), ("domain", nested.domain.id))
    assert not g.has_edge(("ioas", parent.ioas), ("hwpt", nested.id))  # only paging HWPTs hang off an IOAS
    assert g.has_edge(("ioas", parent.ioas), ("hwpt", parent.id))
    # The nested HWPT's first-stage table is the guest domain's (a GPA in guest RAM).
    guest = m.domain_of(m.groups[3])
    assert g.nodes[("hwpt", nested.id)]["pgtbl_addr"] == guest.pgd
    assert g.has_edge(("device", "02:00.0"), ("hwpt", nested.id))
    assert g.has_edge(("group", "host"), ("domain", nested.domain.id))
    dom = g.nodes[("domain", nested.domain.id)]
    assert dom["stage"] == "nested" and dom["parent"] == parent.domain.id
    rows = [text_of(r) for r in graph_lines(m, g)]
    at = next(i for i, r in enumerate(rows) if f"HWPT {nested.id} nested · nests on HWPT {parent.id}" in r)
    assert f"HWPT {parent.id} paging" in rows[at - 2] or f"HWPT {parent.id} paging" in rows[at - 1]
    assert "nested: the guest's first stage over domain" in rows[at + 1]
    o = m.undo()
    G.update(g, m, o.changed)
    assert graph_data(g) == graph_data(G.build(m)) and ("hwpt", nested.id) not in g
    assert list(view.lines(m, o.changed)) == graph_lines(m)
