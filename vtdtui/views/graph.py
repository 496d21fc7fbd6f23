"""The networkx domain graph drawn as a layered tree: VM → container → domain →
group → device, then the kernel's own domains, then each unit with what hangs off it.

Non-coherent domains and KVM's noncoherent-DMA state are called out on their lines,
because that is the chain the integrated-GPU story is about.
"""

from __future__ import annotations

import networkx as nx

from .. import graph as G
from ..machine import Machine
from .style import Line, Seg, badge, plain


def _kids(g: nx.DiGraph, node, kind: str) -> list:
    return sorted((n for n in g.successors(node) if g.nodes[n]["kind"] == kind), key=lambda n: str(n[1]))


def _users(g: nx.DiGraph, node, kind: str) -> list:
    return sorted((n for n in g.predecessors(node) if g.nodes[n]["kind"] == kind), key=lambda n: str(n[1]))


def _tree(out: list[Line], prefix: str, items: list, render) -> None:
    for i, item in enumerate(items):
        last = i == len(items) - 1
        render(out, prefix + ("└─ " if last else "├─ "), prefix + ("   " if last else "│  "), item)


def graph_lines(m: Machine, g: nx.DiGraph | None = None) -> list[Line]:
    body, group_at = _body(m, g if g is not None else G.build(m))
    return _mark(body, group_at, m.selected_group) + units_lines(m)


def _mark(body: list[Line], group_at: dict, selected) -> list[Line]:
    i = group_at.get(selected)
    if i is None:
        return list(body)
    out = list(body)
    first, (label, _tok), *rest = out[i]
    out[i] = (first, ("▶" + label, "sel"), *rest)
    return out


class GraphView:
    """graph_lines() for every keypress at any size: the tree above the units is
    rebuilt only when a software decision, a policy, or a unit's SC changed it.

    Those are the only inputs of that part: every attach, detach, map and unmap is
    journaled by a software actor, a switch as a policy change.  The selection
    marker and the units section (CM/C/SC badges) are cheap and redone each time."""

    def __init__(self) -> None:
        self._journal = None
        self._seen = 0
        self._changes = 0
        self._key: tuple | None = None
        self._body: list[Line] = []
        self._group_at: dict = {}

    def lines(self, m: Machine) -> list[Line]:
        j = m.journal
        if j is not self._journal or len(j) < self._seen:
            self._journal, self._seen, self._changes = j, 0, 0
        for e in j.events[self._seen:]:
            if e.is_decision or e.op == "policy-change":
                self._changes += 1
        self._seen = len(j)
        key = (id(j), self._changes, tuple((n, u.sc) for n, u in m.units.items()))
        if key != self._key:
            self._body, self._group_at = _body(m, G.build(m))
            self._key = key
        return _mark(self._body, self._group_at, m.selected_group) + units_lines(m)


def _body(m: Machine, g: nx.DiGraph) -> tuple[list[Line], dict]:
    out: list[Line] = []
    group_at: dict = {}

    def device(out, first, _rest, node):
        out.append(((first, "dim"), (g.nodes[node]["label"], "")))

    def group(out, first, rest, node):
        devs = _kids(g, node, "device")
        group_at[node[1]] = len(out)
        label: tuple[Seg, ...] = ((first, "dim"), (g.nodes[node]["label"], "key"))
        if len(devs) == 1:
            out.append(label + ((" ─ " + g.nodes[devs[0]]["label"], ""),))
        else:
            out.append(label)
            _tree(out, rest, devs, device)

    def domain(out, first, rest, node):
        d = g.nodes[node]
        dids = ", ".join(f"{u} DID {did}" for u, did in d["dids"].items()) or "no unit"
        segs: list[Seg] = [(first, "dim"), (d["label"], "head"), (f" · {dids} · {d['mapped_pages']} pages · ", "dim")]
        if d["enforce_cache_coherency"]:
            segs.append(("enforce_cache_coherency (SNP set)", "on"))
        elif all(g.nodes[("unit", u)]["level"] == "guest" for u in d["dids"]) and d["dids"]:
            segs.append(("guest domain: QEMU emulates the unit; assigned DMA goes through the host", "dim"))
        elif any(not g.nodes[("unit", u)]["sc"] for u in d["dids"]):
            segs.append(("⚠ non-coherent: no snoop control, DMA may bypass the CPU caches", "warn"))
        else:
            segs.append(("snooping not enforced (nobody asked)", "dim"))
        out.append(tuple(segs))
        _tree(out, rest, _users(g, node, "group"), group)

    def container(out, first, rest, node):
        c = g.nodes[node]
        cc = ("VFIO_DMA_CC_IOMMU yes", "on") if c["cc_iommu"] else ("VFIO_DMA_CC_IOMMU no", "warn")
        out.append(((first, "dim"), (c["label"], "head"), (" · ", "dim"), cc))
        _tree(out, rest, _kids(g, node, "domain"), domain)

    vm = ("vm", "kvm")
    if vm in g:
        v = g.nodes[vm]
        nc, why = G.kvm_noncoherent_why(m)
        out.append((("KVM VM", "head"), (" · noncoherent DMA count ", "dim"), (str(v["count"]), "warn" if nc else "on"),
                    (" · WBINVD ", "dim"), ("emulated" if v["wbinvd"] else "no-op", "warn" if v["wbinvd"] else "on"),
                    (f" · RAM {v['memtype']}", "dim")))
        out.append(plain(f"│  why: {why}", "warn" if nc else "dim"))
        _tree(out, "", _kids(g, vm, "container"), container)
    in_container = {d for c in g if g.nodes[c]["kind"] == "container" for d in g.successors(c)}
    kernel = sorted((n for n, d in g.nodes(data=True) if d["kind"] == "domain" and n not in in_container),
                    key=lambda n: n[1])
    if kernel:
        out.append(plain("kernel DMA-API domains (owner driver)", "head"))
        _tree(out, "", kernel, domain)
    return out, group_at


def units_lines(m: Machine) -> list[Line]:
    """Each unit with its badges and the groups behind it that are detached."""
    out: list[Line] = [plain("units", "head")]
    detached: dict[str, list[int]] = {n: [] for n in m.units}
    for gid, gs in m.groups.items():
        if m.domain_of(gs) is None:
            detached[gs.unit].append(gid)
    names = sorted(m.units)
    for i, name in enumerate(names):
        u = m.units[name]
        segs: list[Seg] = [("└─ " if i == len(names) - 1 else "├─ ", "dim"),
                           (name, "sel" if name == m.selected_unit else "key"), (f" {m.level_of(name)} ", "dim"),
                           badge("CM", u.cm), (" ", ""), badge("C", u.coherent), (" ", ""), badge("SC", u.sc)]
        gone = sorted(detached[name])
        if gone:
            segs.append((" · detached: " + ", ".join(map(str, gone[:24])) + (" …" if len(gone) > 24 else ""), "dim"))
        out.append(tuple(segs))
    return out
