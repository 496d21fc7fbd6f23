"""The domain groupings as a networkx graph, and the questions the TUI asks of it.

Nodes are ("unit", name), ("domain", id), ("group", id), ("device", bdf),
("container", "vfio"), ("vm", "kvm"), and with an iommufd ("ioas", id), ("hwpt", id).
Edges point from the consumer to what it uses: vm → container → domain → unit,
group → domain, group → device, device → unit; vm → ioas → hwpt (its paging HWPTs,
ioas->hwpt_list) → domain, a nested hwpt → its parent hwpt ("nests on"), device → hwpt.

build(m) makes the networkx graph.  build(m, lite=True) fills the same nodes and edges,
by the same code, into a Lite graph: plain dicts with the few DiGraph calls this module
and views/graph.py make, so that the TUI's first frames need no networkx (an ~85 ms
import); the graph pane draws from it until it builds the networkx graph, once the
start has settled (tui/panes.py GraphPane).  tests/test_perf_startup_graph.py holds
the two equal, node for node and row for row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .hw.entries import bdf_str
from .machine import Machine
from .sw.qemu import QemuViommu

if TYPE_CHECKING:  # networkx is imported when a graph is first built, not with the app
    import networkx as nx
    from .machine.machine import Changes


def build(m: Machine, lite: bool = False) -> nx.DiGraph:
    """The graph of the machine as it is now, from scratch (`lite`: a Lite graph, no
    networkx)."""
    if lite:
        g = Lite()
    else:
        import networkx

        g = networkx.DiGraph()
    _fill(g, m)
    return g


class _Nodes:
    """Lite.nodes: `nodes[n]` is n's attributes, `nodes(data=True)` the (n, attrs) pairs."""

    __slots__ = ("_node",)

    def __init__(self, node: dict) -> None:
        self._node = node

    def __getitem__(self, n) -> dict:
        return self._node[n]

    def __call__(self, data: bool = False):
        return iter(self._node.items()) if data else iter(self._node)

    def __iter__(self):
        return iter(self._node)

    def __contains__(self, n) -> bool:
        return n in self._node

    def __len__(self) -> int:
        return len(self._node)


class Lite:
    """A directed graph in plain dicts, with networkx.DiGraph's behaviour for the calls
    _fill(), update() and the views make (add_node / add_edge add or update, the
    remove_*_from calls skip what is not there, successors / predecessors in insertion
    order, `graph` the graph's own attributes).  Not the data model: the start's stand-in
    for it (see the module's docstring)."""

    def __init__(self) -> None:
        self._node: dict = {}
        self._adj: dict = {}  # successors: n → {v: edge attributes}
        self._pred: dict = {}
        self.graph: dict = {}
        self.nodes = _Nodes(self._node)

    def __contains__(self, n) -> bool:
        return n in self._node

    def __iter__(self):
        return iter(self._node)

    def __len__(self) -> int:
        return len(self._node)

    def add_node(self, n, **attr) -> None:
        d = self._node.get(n)
        if d is None:
            self._node[n], self._adj[n], self._pred[n] = attr, {}, {}
        else:
            d.update(attr)

    def add_edge(self, u, v, **attr) -> None:
        for n in (u, v):
            if n not in self._node:
                self._node[n], self._adj[n], self._pred[n] = {}, {}, {}
        d = self._adj[u].get(v)
        if d is None:
            d = self._adj[u][v] = self._pred[v][u] = {}
        d.update(attr)

    def has_edge(self, u, v) -> bool:
        return u in self._adj and v in self._adj[u]

    def remove_node(self, n) -> None:
        for v in self._adj.pop(n):
            del self._pred[v][n]
        for u in self._pred.pop(n):
            del self._adj[u][n]
        del self._node[n]

    def remove_nodes_from(self, nodes) -> None:
        for n in nodes:
            if n in self._node:
                self.remove_node(n)

    def remove_edges_from(self, edges) -> None:
        for u, v, *_ in edges:
            if u in self._adj and v in self._adj[u]:
                del self._adj[u][v]
                del self._pred[v][u]

    def out_edges(self, n) -> list:
        return [(n, v) for v in self._adj[n]]

    def successors(self, n):
        return iter(self._adj[n])

    def predecessors(self, n):
        return iter(self._pred[n])

    def edges(self, data: bool = False):
        for u, nbrs in self._adj.items():
            for v, d in nbrs.items():
                yield (u, v, d) if data else (u, v)

    def clear(self) -> None:
        for d in (self._node, self._adj, self._pred, self.graph):
            d.clear()


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
        # By id: undo puts a domain it brings back last in the driver's dict.
        for _, d in sorted(w.driver.domains.items()):
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
    # A nested domain's snooping is its parent's: intel_pasid_setup_nested() sets PGSNP
    # iff s2_domain->force_snooping.
    parent = d.parent.id if d.stage == "nested" and d.parent is not None else None
    g.add_node(node, kind="domain", label=f"domain {d.id}", owner=d.owner,
               enforce_cache_coherency=d.force_snooping, dids=dict(d.dids), mapped_pages=d.mapped_pages,
               stage=d.stage, nest_parent=d.nest_parent, parent=parent,
               parent_snoop=d.parent.force_snooping if parent is not None else None)
    if node in g:
        g.remove_edges_from([(node, n) for n in g.successors(node) if n[1] not in d.dids])
    for unit, did in d.dids.items():
        g.add_edge(node, ("unit", unit), did=did)


def _containers(m: Machine) -> list:
    containers = []
    # With backend iommufd the type1 container stays for `set backend type1`; empty,
    # it is not part of the VM's picture.
    if m.vfio is not None and (m.vfio.domains or m.backend != "iommufd"):
        containers.append(("container", "vfio", m.vfio))
    if isinstance(m.qemu, QemuViommu):  # QemuAccel (x-flts) has the host's iommufd instead
        containers.append(("container", "host-vfio", m.qemu.host_vfio))
    return containers


def _iommufd(g: nx.DiGraph, m: Machine) -> None:
    """The iommufd's IOAS and HWPT nodes, redone whole (a VM has a handful), and the
    domains the HWPTs hold (a nested domain may be in no container nor driver list)."""
    fd = m.iommufd
    g.remove_nodes_from(g.graph.pop("iommufd", ()))
    before = g.graph.pop("hwpt_domains", ())
    hwpts = fd.hwpts if fd is not None else []
    held = {h.domain.id: h.domain for h in hwpts}
    for did in before:
        if did not in held and ("domain", did) in g and _find_domain(m, did) is None:
            g.remove_node(("domain", did))
    if fd is None:
        return
    nodes = []
    vm = ("vm", "kvm") if ("vm", "kvm") in g else None
    for a in fd.ioas:
        node = ("ioas", a.id)
        nodes.append(node)
        # Two HWPTs of one IOAS with devices: the pane asks why their devices are apart.
        firsts = [fd.objects[h].devices[0] for h in a.hwpts if fd.objects[h].devices][:2]
        apart = tuple(fd.objects[i].bdf for i in firsts) if len(firsts) == 2 else None
        g.add_node(node, kind="ioas", label=f"IOAS {a.id}", areas=len(a.areas),
                   bytes=sum(area.size for area in a.areas), apart=apart)
        if vm is not None:
            g.add_edge(vm, node)
    for h in hwpts:
        node = ("hwpt", h.id)
        nodes.append(node)
        nested = h.kind == "nested"
        g.add_node(node, kind="hwpt", label=f"HWPT {h.id}", hwpt=h.kind, auto=not nested and h.auto,
                   nest_parent=not nested and h.nest_parent, dirty_tracking=not nested and h.dirty_tracking,
                   enforce_cache_coherency=h.domain.force_snooping if nested else h.enforce_cache_coherency,
                   pgtbl_addr=h.s1.pgtbl_addr if nested else None, devices=len(h.devices))
        _domain(g, h.domain)
        g.add_edge(node, ("domain", h.domain.id))
        if not nested:
            g.add_edge(("ioas", h.ioas), node)
        for i in h.devices:
            dev = fd.objects.get(i)
            if dev is not None:
                g.add_edge(_device_node(g, dev.sid, dev.unit), node)
    for h in hwpts:
        if h.kind == "nested":
            g.add_edge(("hwpt", h.id), ("hwpt", h.parent), rel="nests on")
    g.graph["iommufd"] = nodes
    g.graph["hwpt_domains"] = list(held)


def _device_node(g: nx.DiGraph, sid: int, unit: str):
    dev = ("device", bdf_str(sid))
    if dev not in g:
        g.add_node(dev, kind="device", label=bdf_str(sid), unit=unit)
        g.add_edge(dev, ("unit", unit))
    return dev


def _vm(g: nx.DiGraph, m: Machine) -> None:
    """The VFIO containers, the VM, QEMU's host group and the iommufd objects: a
    handful of nodes, redone whole (a container's domains are those it holds now)."""
    containers = _containers(m)
    listed = {(kind, name) for kind, name, _ in containers}
    g.remove_nodes_from([n for n in (("container", "vfio"), ("container", "host-vfio")) if n in g and n not in listed])
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
        host = ("group", "host")
        g.add_node(host, kind="group", label="host group (VM's NIC)", owner="vfio", unit=hg.unit)
        g.remove_edges_from([(host, n) for n in g.successors(host) if n[0] == "domain"])
        g.add_edge(host, dev)
        d = _host_domain(m)
        if d is not None:
            g.add_edge(host, ("domain", d.id))
    _iommufd(g, m)


def _host_domain(m: Machine):
    """The host domain QEMU's assigned device is attached to: through the host VFIO
    container (QemuViommu), or the HWPT its iommufd device is in (QemuAccel)."""
    q = m.qemu
    if isinstance(q, QemuViommu):
        vd = q.host_vfio.domain_of(q.host_group.id)
        return vd.domain if vd is not None else None
    fd = m.iommufd
    dev = fd.device_of(q.host_group.devices[0], q.host_group.unit) if fd is not None else None
    if dev is None or dev.hwpt is None:
        return None
    h = fd.objects.get(dev.hwpt)
    return h.domain if h is not None else None


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


def _file_text(m: Machine, f, cdev_units: dict[str, str]) -> str:
    """A file kvm-vfio holds: a group (its number; -1 is QEMU's host group) or, with
    backend iommufd, a device's vfio cdev (its BDF), and the unit behind it."""
    if isinstance(f, str):
        return f"the vfio cdev of {f} sits behind {cdev_units.get(f, '?')}"
    gs = m.groups.get(f)
    unit = gs.unit if gs else (m.qemu.host_unit.name if m.qemu else "?")
    return f"group {f} sits behind {unit}"


def kvm_noncoherent_why(m: Machine) -> tuple[bool, str]:
    """Does KVM see noncoherent DMA, and why (the groups and units behind it)."""
    if m.kvm is None:
        return False, "no VM in this scenario"
    bad = sorted((f for f, ok in m.kvm.files.items() if not ok), key=str)
    # A cdev's unit from the iommufd devices (as many as KVM's files, not the groups).
    cdev_units = {d.bdf: d.unit for d in m.iommufd.devices} if m.iommufd is not None and bad else {}
    parts = []
    for f in bad:
        parts.append(f"{_file_text(m, f, cdev_units)}, which has no snoop control (ECAP.SC=0)")
    if m.kvm.virtio_noncoherent:
        parts.append("a virtio device declares noncoherent DMA (2023 RFC)")
    if not parts:
        return False, "every assigned group's IOMMU enforces snooping (ECAP.SC=1)"
    return True, "; ".join(parts) + f" → count {m.kvm.noncoherent_dma_count}, WBINVD emulated, RAM {m.kvm.ept_memtype()}"


def hwpt_apart_why(m: Machine, a: str, b: str) -> str:
    """Why devices `a` and `b` ("bb:dd.f") sit in separate HWPTs: the journal's skipped
    hwpt-attach of one of them at the other's HWPT (iommufd_device_auto_get_domain()
    tried it and the driver refused, or the HWPT was allocated explicitly)."""
    fd = m.iommufd
    if fd is None:
        return "no iommufd in this machine"
    devs = {d.bdf: d for d in fd.devices}
    missing = [x for x in (a, b) if x not in devs or devs[x].hwpt is None]
    if missing:
        return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} in no HWPT"
    ha, hb = devs[a].hwpt, devs[b].hwpt
    if ha == hb:
        return f"{a} and {b} share HWPT {ha}"
    for e in reversed(m.journal.events):
        if e.op != "hwpt-attach" or e.outcome != "skipped":
            continue
        if (e.bdf, e.detail) in ((b, f"{b} HWPT {ha}"), (a, f"{a} HWPT {hb}")):
            return f"{e.bdf} was not put in HWPT {ha if e.bdf == b else hb}: {e.reason}"
    return (f"{a} is in HWPT {ha}, {b} in HWPT {hb}: no refused attach in the journal "
            "(each was attached to its HWPT on purpose)")
