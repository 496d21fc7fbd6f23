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
    g = g if g is not None else G.build(m)
    out: list[Line] = []
    selected = ("group", m.selected_group)

    def device(out, first, _rest, node):
        out.append(((first, "dim"), (g.nodes[node]["label"], "")))

    def group(out, first, rest, node):
        devs = _kids(g, node, "device")
        sel = node == selected
        label: tuple[Seg, ...] = ((first, "dim"), (("▶" if sel else "") + g.nodes[node]["label"], "sel" if sel else "key"))
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
    out.append(plain("units", "head"))

    def unit(out, first, rest, node):
        u = g.nodes[node]
        detached = [grp for grp in _users_of_devices(g, node) if not _kids(g, grp, "domain")]
        segs: list[Seg] = [(first, "dim"), (u["label"], "sel" if u["label"] == m.selected_unit else "key"),
                           (f" {u['level']} ", "dim"), badge("CM", u["cm"]), (" ", ""), badge("C", u["c"]), (" ", ""),
                           badge("SC", u["sc"])]
        if detached:
            segs.append((" · detached: " + ", ".join(str(n[1]) for n in detached[:24])
                         + (" …" if len(detached) > 24 else ""), "dim"))
        out.append(tuple(segs))

    _tree(out, "", sorted((n for n, d in g.nodes(data=True) if d["kind"] == "unit"), key=lambda n: n[1]), unit)
    return out


def _users_of_devices(g: nx.DiGraph, unit) -> list:
    groups = {grp for dev in g.predecessors(unit) if g.nodes[dev]["kind"] == "device"
              for grp in g.predecessors(dev) if g.nodes[grp]["kind"] == "group"}
    return sorted(groups, key=lambda n: (isinstance(n[1], str), n[1] if isinstance(n[1], int) else 0))
