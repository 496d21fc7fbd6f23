"""The domain groupings as a networkx graph, and the questions the TUI asks of it.

Nodes are ("unit", name), ("domain", id), ("group", id), ("device", bdf),
("container", "vfio"), ("vm", "kvm").  Edges point from the consumer to what it
uses: vm → container → domain → unit, group → domain, group → device, device → unit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .hw.entries import bdf_str
from .machine import Machine

if TYPE_CHECKING:  # networkx is imported when a graph is first built, not with the app
    import networkx as nx
    from .machine.machine import Changes


def build(m: Machine) -> nx.DiGraph:
    """The graph of the machine as it is now, from scratch."""
    import networkx

    g = networkx.DiGraph()
    _fill(g, m)
    return g


def update(g: nx.DiGraph, m: Machine, changes: Changes) -> None:
    """Bring `g` (built by build() from an earlier state) to the machine's state now,
    in place, given what changed since: the units, the domains and groups the
    commands reported (machine.Changes), and the VM's few nodes.  The cost is that of
    the change (and of the units and VFIO containers), not of the machine."""
    if changes.everything:
        g.clear()
        _fill(g, m)
        return
    for name in m.units:
        _unit(g, m, name)
    for did in changes.domains:
        d = _find_domain(m, did)
        if d is None:
            if ("domain", did) in g:
                g.remove_node(("domain", did))
        else:
            _domain(g, d)
    for gid in changes.groups:
        gs = m.groups[gid]
        node = ("group", gid)
        g.remove_edges_from([(node, n) for n in g.successors(node) if n[0] == "domain"])
        d = m.domain_of(gs)
        if d is not None:
            g.add_edge(node, ("domain", d.id))
    _vm(g, m)


def _find_domain(m: Machine, did: int):
    for w in m.worlds.values():
        d = w.driver.domains.get(did)
        if d is not None:
            return d
    return None


def _fill(g: nx.DiGraph, m: Machine) -> None:
    for name in m.units:
        _unit(g, m, name)
    for w in m.worlds.values():
        for d in w.driver.domains.values():
            _domain(g, d)
    for gs in m.groups.values():
        node = ("group", gs.spec_id)
        g.add_node(node, kind="group", label=f"group {gs.spec_id}", owner=gs.owner, unit=gs.unit)
        for sid, name in gs.devices:
            dev = ("device", bdf_str(sid))
            g.add_node(dev, kind="device", label=f"{bdf_str(sid)} {name}", unit=gs.unit)
            g.add_edge(node, dev)
            g.add_edge(dev, ("unit", gs.unit))
        d = m.domain_of(gs)
        if d is not None:
            g.add_edge(node, ("domain", d.id))
    _vm(g, m)


def _unit(g: nx.DiGraph, m: Machine, name: str) -> None:
    u = m.units[name]
    g.add_node(("unit", name), kind="unit", label=name, level=m.level_of(name), sc=u.sc, c=u.coherent, cm=u.cm)


def _domain(g: nx.DiGraph, d) -> None:
    node = ("domain", d.id)
    g.add_node(node, kind="domain", label=f"domain {d.id}", owner=d.owner,
               enforce_cache_coherency=d.force_snooping, dids=dict(d.dids), mapped_pages=d.mapped_pages)
    if node in g:
        g.remove_edges_from([(node, n) for n in g.successors(node) if n[1] not in d.dids])
    for unit, did in d.dids.items():
        g.add_edge(node, ("unit", unit), did=did)


def _containers(m: Machine) -> list:
    containers = []
    if m.vfio is not None:
        containers.append(("container", "vfio", m.vfio))
    if m.qemu is not None:
        containers.append(("container", "host-vfio", m.qemu.host_vfio))
    return containers


def _vm(g: nx.DiGraph, m: Machine) -> None:
    """The VFIO containers, the VM and QEMU's host group: a handful of nodes, redone
    whole (a container's domains are those it holds now)."""
    containers = _containers(m)
    for kind, name, c in containers:
        node = (kind, name)
        g.add_node(node, kind="container", label=f"VFIO container ({c.policy})",
                   cc_iommu=c.cc_iommu(), policy=c.policy)
        g.remove_edges_from(list(g.out_edges(node)))
        for vd in c.domains:
            g.add_edge(node, ("domain", vd.domain.id))
    if m.kvm is not None:
        g.add_node(("vm", "kvm"), kind="vm", label="KVM VM", noncoherent=m.kvm.has_noncoherent_dma,
                   count=m.kvm.noncoherent_dma_count, wbinvd=m.kvm.emulate_wbinvd, memtype=m.kvm.ept_memtype())
        for kind, name, _ in containers:
            g.add_edge(("vm", "kvm"), (kind, name))
    if m.qemu is not None:
        hg = m.qemu.host_group
        dev = ("device", bdf_str(hg.devices[0]))
        g.add_node(dev, kind="device", label=f"{bdf_str(hg.devices[0])} assigned NIC (host)", unit=hg.unit)
        g.add_edge(dev, ("unit", hg.unit))
        vd = m.qemu.host_vfio.domain_of(hg.id)
        host = ("group", "host")
        g.add_node(host, kind="group", label="host group (VM's NIC)", owner="vfio", unit=hg.unit)
        g.remove_edges_from([(host, n) for n in g.successors(host) if n[0] == "domain"])
        g.add_edge(host, dev)
        if vd is not None:
            g.add_edge(host, ("domain", vd.domain.id))


def devices_sharing_domain(g: nx.DiGraph) -> dict[int, list[str]]:
    """Domain id → the devices whose DMA it translates."""
    out: dict[int, list[str]] = {}
    for node, data in g.nodes(data=True):
        if data["kind"] != "domain":
            continue
        devs = []
        for grp in g.predecessors(node):
            if g.nodes[grp]["kind"] == "group":
                devs += [g.nodes[d]["label"].split()[0] for d in g.successors(grp) if g.nodes[d]["kind"] == "device"]
        out[node[1]] = sorted(devs)
    return out


def noncoherent_domains(g: nx.DiGraph) -> list[int]:
    return sorted(n[1] for n, d in g.nodes(data=True) if d["kind"] == "domain" and not d["enforce_cache_coherency"])


def kvm_noncoherent_why(m: Machine) -> tuple[bool, str]:
    """Does KVM see noncoherent DMA, and why (the groups and units behind it)."""
    if m.kvm is None:
        return False, "no VM in this scenario"
    bad = sorted(gid for gid, ok in m.kvm.files.items() if not ok)
    parts = []
    for gid in bad:
        gs = m.groups.get(gid)
        unit = gs.unit if gs else (m.qemu.host_unit.name if m.qemu else "?")
        parts.append(f"group {gid} sits behind {unit}, which has no snoop control (ECAP.SC=0)")
    if m.kvm.virtio_noncoherent:
        parts.append("a virtio device declares noncoherent DMA (2023 RFC)")
    if not parts:
        return False, "every assigned group's IOMMU enforces snooping (ECAP.SC=1)"
    return True, "; ".join(parts) + f" → count {m.kvm.noncoherent_dma_count}, WBINVD emulated, RAM {m.kvm.ept_memtype()}"
