"""The networkx domain graph drawn as a layered tree: VM → container → domain →
group → device, or VM → IOAS → HWPT → domain → group → device (a nested HWPT under
the parent it nests on), then the kernel's own domains, then each unit with what
hangs off it.

Non-coherent domains and KVM's noncoherent-DMA state are called out on their lines,
because that is the chain the integrated-GPU story is about.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import graph as G
from ..machine import Machine
from ..machine.machine import EVERYTHING, Changes
from ..machine.parse import fmt_size
from .style import Line, Seg, badge, plain

if TYPE_CHECKING:
    import networkx as nx

# A row of the tree before it is drawn: (kind, node, first prefix).  The tree's shape
# is kept as these; the text comes from the graph's attributes when a row is drawn,
# so that a change of attributes (a unit's SC, a domain's page count) redraws only
# the rows on screen.
Spec = tuple


def _kids(g: nx.DiGraph, node, kind: str) -> list:
    return sorted((n for n in g.successors(node) if g.nodes[n]["kind"] == kind), key=lambda n: str(n[1]))


def _users(g: nx.DiGraph, node, kind: str) -> list:
    return sorted((n for n in g.predecessors(node) if g.nodes[n]["kind"] == kind), key=lambda n: str(n[1]))


def _tree(out: list[Spec], prefix: str, items: list, shape) -> None:
    for i, item in enumerate(items):
        last = i == len(items) - 1
        shape(out, prefix + ("└─ " if last else "├─ "), prefix + ("   " if last else "│  "), item)


def graph_lines(m: Machine, g: nx.DiGraph | None = None) -> list[Line]:
    """The whole pane from scratch (what GraphView keeps up to date key by key)."""
    g = g if g is not None else G.build(m)
    body = _vm_specs(g) + _kernel_specs(g, _kernel_domains(g))
    return list(_Rows(g, m, body, [], _group_rows(body).get(m.selected_group))) + units_lines(m)


def _group_rows(body: list[Spec]) -> dict:
    return {spec[1][1]: i for i, spec in enumerate(body) if spec[0] == "group"}


# ------------------------------------------------------------ the tree's shape
def _group_shape(g):
    def group(out, first, rest, node):
        devs = _kids(g, node, "device")
        out.append(("group", node, first, devs[0] if len(devs) == 1 else None))
        if len(devs) != 1:
            _tree(out, rest, devs, lambda o, f, _r, dev: o.append(("device", dev, f, None)))
    return group


def _domain_shape(g):
    group = _group_shape(g)

    def domain(out, first, rest, node):
        out.append(("domain", node, first, None))
        _tree(out, rest, _users(g, node, "group"), group)
    return domain


def _vm_specs(g: nx.DiGraph) -> list[Spec]:
    out: list[Spec] = []
    vm = ("vm", "kvm")
    if vm in g:
        domain = _domain_shape(g)
        out.append(("vm", vm, "", None))
        out.append(("why", vm, "", None))

        def container(o, first, rest, node):
            o.append(("container", node, first, None))
            _tree(o, rest, _kids(g, node, "domain"), domain)
        _tree(out, "", _kids(g, vm, "container") + _kids(g, vm, "ioas"), _vm_child_shape(g, container))
    return out


def _vm_child_shape(g, container):
    """A VFIO container, or an IOAS with its paging HWPTs, each with its domain and
    the nested HWPTs that nest on it."""
    domain = _domain_shape(g)

    def hwpt(o, first, rest, node):
        o.append(("hwpt", node, first, None))
        _tree(o, rest, _kids(g, node, "domain") + _users(g, node, "hwpt"), child)

    def child(o, first, rest, node):
        (domain if node[0] == "domain" else hwpt)(o, first, rest, node)

    def ioas(o, first, rest, node):
        o.append(("ioas", node, first, None))
        if g.nodes[node]["apart"]:
            o.append(("apart", node, rest + "│  ", None))
        _tree(o, rest, _kids(g, node, "hwpt"), hwpt)

    def either(o, first, rest, node):
        (container if node[0] == "container" else ioas)(o, first, rest, node)
    return either


def claimed_domains(g: nx.DiGraph) -> set:
    """Domain nodes the VM's tree shows: under a VFIO container or an HWPT."""
    return {d for c in g if g.nodes[c]["kind"] in ("container", "hwpt") for d in g.successors(c) if d[0] == "domain"}


def _kernel_domains(g: nx.DiGraph) -> list[int]:
    claimed = claimed_domains(g)
    return sorted(n[1] for n, d in g.nodes(data=True) if d["kind"] == "domain" and n not in claimed)


def _kernel_specs(g: nx.DiGraph, ids: list[int]) -> list[Spec]:
    if not ids:
        return []
    out: list[Spec] = [("head", None, "kernel DMA-API domains (owner driver)", None)]
    _tree(out, "", [("domain", i) for i in ids], _domain_shape(g))
    return out


def _block(g: nx.DiGraph, did: int, last: bool) -> list[Spec]:
    """One kernel domain's rows, as _tree() lays them out at the top level."""
    out: list[Spec] = []
    _domain_shape(g)(out, "└─ " if last else "├─ ", "   " if last else "│  ", ("domain", did))
    return out


# ------------------------------------------------------------ drawing a row
def _draw(g: nx.DiGraph, m: Machine, spec: Spec, selected: bool) -> Line:
    kind, node, first, extra = spec
    if kind == "head":
        return plain(first, "head")
    if kind == "device":
        return ((first, "dim"), (g.nodes[node]["label"], ""))
    if kind == "group":
        label = g.nodes[node]["label"]
        segs: tuple[Seg, ...] = ((first, "dim"), ("▶" + label if selected else label, "sel" if selected else "key"))
        return segs + ((" ─ " + g.nodes[extra]["label"], ""),) if extra is not None else segs
    if kind == "domain":
        d = g.nodes[node]
        dids = ", ".join(f"{u} DID {did}" for u, did in d["dids"].items()) or "no unit"
        if d.get("stage") == "nested":
            snoop = d["parent_snoop"]
            return ((first, "dim"), (d["label"], "head"), (f" · {dids} · nested: the guest's first stage over "
                                                           f"domain {d['parent']} · ", "dim"),
                    ("PGSNP (the parent's enforce_cache_coherency)" if snoop else "no PGSNP: the parent does not "
                     "enforce snooping", "on" if snoop else "warn"))
        if d.get("nest_parent") and not d["dids"]:
            dids = "nest parent: DIDs are its nested domains'"
        out: list[Seg] = [(first, "dim"), (d["label"], "head"), (f" · {dids} · {d['mapped_pages']} pages · ", "dim")]
        if d["enforce_cache_coherency"]:
            out.append(("enforce_cache_coherency (SNP set)", "on"))
        elif all(g.nodes[("unit", u)]["level"] == "guest" for u in d["dids"]) and d["dids"]:
            out.append(("guest domain: QEMU emulates the unit; assigned DMA goes through the host", "dim"))
        elif any(not g.nodes[("unit", u)]["sc"] for u in d["dids"]):
            out.append(("⚠ non-coherent: no snoop control, DMA may bypass the CPU caches", "warn"))
        else:
            out.append(("snooping not enforced (nobody asked)", "dim"))
        return tuple(out)
    if kind == "ioas":
        a = g.nodes[node]
        size = f"{a['areas']} area(s) · {fmt_size(a['bytes'])}" if a["bytes"] else "empty"
        return ((first, "dim"), (a["label"], "head"), (f" · iommufd · {size}", "dim"))
    if kind == "hwpt":
        return _hwpt_row(g, node, first)
    if kind == "apart":
        return ((first, "dim"), ("why apart: ", "key"), (_apart_why(m, *g.nodes[node]["apart"]), "dim"))
    if kind == "container":
        c = g.nodes[node]
        cc = ("VFIO_DMA_CC_IOMMU yes", "on") if c["cc_iommu"] else ("VFIO_DMA_CC_IOMMU no", "warn")
        return ((first, "dim"), (c["label"], "head"), (" · ", "dim"), cc)
    v = g.nodes[node]
    nc, why = G.kvm_noncoherent_why(m)
    if kind == "why":
        return plain(f"│  why: {why}", "warn" if nc else "dim")
    return (("KVM VM", "head"), (" · noncoherent DMA count ", "dim"), (str(v["count"]), "warn" if nc else "on"),
            (" · WBINVD ", "dim"), ("emulated" if v["wbinvd"] else "no-op", "warn" if v["wbinvd"] else "on"),
            (f" · RAM {v['memtype']}", "dim"))


def _hwpt_row(g: nx.DiGraph, node, first: str) -> Line:
    h = g.nodes[node]
    out: list[Seg] = [(first, "dim"), (h["label"], "head")]
    if h["hwpt"] == "nested":
        parent = next((n for n in g.successors(node) if n[0] == "hwpt"), None)
        out.append((f" nested · nests on HWPT {parent[1] if parent else '?'} · s1 pgtbl_addr ", "dim"))
        out.append((f"{h['pgtbl_addr']:#x}", "addr"))
        out.append((" (GPA)", "dim"))
        return tuple(out)
    flags = [n for n, on in (("NEST_PARENT", h["nest_parent"]), ("DIRTY_TRACKING", h["dirty_tracking"])) if on]
    out.append((f" paging · {'auto' if h['auto'] else 'explicit'}" + "".join(f" · {f}" for f in flags) + " · ",
                "dim"))
    cc = h["enforce_cache_coherency"]
    out.append(("enforce_cache_coherency ✓" if cc else "enforce_cache_coherency ✗", "on" if cc else "warn"))
    return tuple(out)


_APART: dict[tuple, str] = {}  # (devices, journal length, last event) → the answer


def _apart_why(m: Machine, a: str, b: str) -> str:
    """graph.hwpt_apart_why, once per journal state: the row is drawn every frame, the
    journal is searched from its end."""
    events = m.journal.events
    key = (a, b, len(events), id(events[-1]) if events else 0)
    if key not in _APART:
        _APART.clear()
        _APART[key] = G.hwpt_apart_why(m, a, b)
    return _APART[key]


class _Rows(Sequence):
    """The tree's rows, drawn when asked for (a pane asks for the rows on screen):
    `head` (the VM's tree, the kernel's heading), then `kernel` (the kernel domains'
    blocks), then `tail` (the units).  `mark`: the selected group's row, or a
    function that finds it, asked when a row is first drawn."""

    def __init__(self, g, m: Machine, head: list[Spec], kernel: list[Spec], mark, tail: list[Line] = ()) -> None:
        self.g, self.m, self.head, self.kernel, self.tail = g, m, head, kernel, list(tail)
        self._mark = mark

    @property
    def mark(self) -> int | None:
        if callable(self._mark):
            self._mark = self._mark()
        return self._mark

    def __len__(self) -> int:
        return len(self.head) + len(self.kernel) + len(self.tail)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        h, k = len(self.head), len(self.kernel)
        if i >= h + k:
            return self.tail[i - h - k]
        spec = self.head[i] if i < h else self.kernel[i - h]
        return _draw(self.g, self.m, spec, i == self.mark)


_HEAD: Spec = ("head", None, "kernel DMA-API domains (owner driver)", None)


class GraphView:
    """The graph pane's rows at any size: the networkx graph is built once and then
    updated in place by what each command reports it changed (machine.Changes); the
    tree's shape is kept, each kernel domain's rows apart in domain order, and only
    the domains a command changed are laid out again and spliced into the kernel
    part's rows where they belong (found by bisection of the rows' domain ids), so a
    key costs the size of its change, not of the machine.  Rows are drawn when shown.

    `lite`: the graph is first built as a graph.Lite (no networkx, for the TUI's first
    frames) and kept up to date the same way until adopt_networkx() builds the
    networkx graph in its place; the rows are the same either way."""

    def __init__(self, lite: bool = False) -> None:
        self.g: nx.DiGraph | None = None
        self._lite = lite
        self._vm: list[Spec] = []
        self._ids: list[int] = []  # kernel domains, sorted
        self._blocks: dict[int, list[Spec]] = {}  # kernel domain → its rows (not last)
        self._kernel: list[Spec] = []  # the blocks in order, the last laid out as last
        self._owner: list[int] = []  # for each row of _kernel, its domain (sorted)
        self._detached: dict[str, list[int]] = {}  # unit → detached groups, sorted

    @property
    def built(self) -> bool:
        return self.g is not None

    @property
    def networkx(self) -> bool:
        """Is the graph the networkx one (not the start's Lite stand-in)?"""
        return self.g is not None and not isinstance(self.g, G.Lite)

    def adopt_networkx(self, m: Machine) -> None:
        """Build the networkx graph of the machine as it is now in place of the Lite one
        (and lay the rows out from it: the same rows).  Nothing if it is already there."""
        self._lite = False
        if self.g is not None and not self.networkx:
            self.g = None
            self._rebuild(m)

    def lines(self, m: Machine, changes: Changes | None = EVERYTHING) -> Sequence[Line]:
        """The rows now; `changes`: what changed since the last call (None: nothing)."""
        if self.g is None or (changes is not None and changes.everything):
            self._rebuild(m)
        elif changes is not None:
            self._update(m, changes)
        head = self._vm + [_HEAD] if self._ids else self._vm
        selected = m.selected_group
        return _Rows(self.g, m, head, self._kernel, lambda: self._row_of(head, selected),
                     units_lines(m, self._detached))

    def _row_of(self, head: list[Spec], gid) -> int | None:
        """The row of group `gid` (the last one that shows it, as _group_rows says)."""
        g, node = self.g, ("group", gid)
        if node in g:
            did = next((n[1] for n in g.successors(node) if n[0] == "domain"), None)
            if did in self._blocks:
                at = bisect.bisect_left(self._owner, did)
                for j in range(at, bisect.bisect_right(self._owner, did)):
                    spec = self._kernel[j]
                    if spec[0] == "group" and spec[1] == node:
                        return len(head) + j
        return _group_rows(head).get(gid)

    def _rebuild(self, m: Machine) -> None:
        if self.g is None:
            self.g = G.build(m, lite=self._lite)
        else:
            G.update(self.g, m, EVERYTHING)
        g = self.g
        self._vm = _vm_specs(g)
        self._ids = _kernel_domains(g)
        self._blocks = {i: _block(g, i, False) for i in self._ids}
        self._detached = detached_groups(m)
        self._flatten()

    def _update(self, m: Machine, changes: Changes) -> None:
        g = self.g
        G.update(g, m, changes)
        self._vm = vm = _vm_specs(g)
        claimed = _claimed(g) if vm else set()
        for did in sorted(changes.domains):
            node = ("domain", did)
            if node in g and node not in claimed:
                self._put(did, _block(g, did, False))
            elif did in self._blocks:
                self._drop(did)
        for gid in changes.groups:
            gs = m.groups[gid]
            rows = self._detached.setdefault(gs.unit, [])
            i = bisect.bisect_left(rows, gid)
            there = i < len(rows) and rows[i] == gid
            if m.domain_of(gs) is None and not there:
                rows.insert(i, gid)
            elif m.domain_of(gs) is not None and there:
                del rows[i]

    # ------------------------------------------------------------ the kernel part
    def _splice(self, did: int, rows: list[Spec] | None) -> None:
        """Put `rows` (None: nothing) where domain `did`'s rows are or belong."""
        own = self._owner
        at, end = bisect.bisect_left(own, did), bisect.bisect_right(own, did)
        rows = rows or []
        self._kernel[at:end] = rows
        own[at:end] = [did] * len(rows)

    def _put(self, did: int, block: list[Spec]) -> None:
        ids = self._ids
        i = bisect.bisect_left(ids, did)
        if i < len(ids) and ids[i] == did:
            if block == self._blocks[did]:
                return
            self._blocks[did] = block
            self._splice(did, block if i < len(ids) - 1 else _block(self.g, did, True))
            return
        ids.insert(i, did)
        self._blocks[did] = block
        if i == len(ids) - 1:  # the new last: the one before it is no longer last
            if i:
                self._splice(ids[i - 1], self._blocks[ids[i - 1]])
            self._splice(did, _block(self.g, did, True))
        else:
            self._splice(did, block)

    def _drop(self, did: int) -> None:
        ids = self._ids
        i = bisect.bisect_left(ids, did)
        del ids[i]
        del self._blocks[did]
        self._splice(did, None)
        if i == len(ids) and ids:  # it was the last: the one before it is now
            self._splice(ids[-1], _block(self.g, ids[-1], True))

    def _flatten(self) -> None:
        ids = self._ids
        self._kernel, self._owner = [], []
        for n, i in enumerate(ids):
            rows = self._blocks[i] if n < len(ids) - 1 else _block(self.g, i, True)
            self._kernel.extend(rows)
            self._owner.extend([i] * len(rows))


def _claimed(g: nx.DiGraph) -> set:
    """claimed_domains(g), from the few container and HWPT nodes _vm() makes rather
    than a walk of every node."""
    holders = [n for n in (("container", "vfio"), ("container", "host-vfio")) if n in g]
    holders += [n for n in g.graph.get("iommufd", ()) if n[0] == "hwpt" and n in g]
    return {d for c in holders for d in g.successors(c) if d[0] == "domain"}


def detached_groups(m: Machine) -> dict[str, list[int]]:
    """Unit → the groups behind it that are detached, in order."""
    detached: dict[str, list[int]] = {n: [] for n in m.units}
    for gid, gs in m.groups.items():
        if m.domain_of(gs) is None:
            detached[gs.unit].append(gid)
    for v in detached.values():
        v.sort()
    return detached


def units_lines(m: Machine, detached: dict[str, list[int]] | None = None) -> list[Line]:
    """Each unit with its badges and the groups behind it that are detached
    (`detached`: detached_groups(m), kept by the caller)."""
    out: list[Line] = [plain("units", "head")]
    if detached is None:
        detached = detached_groups(m)
    names = sorted(m.units)
    for i, name in enumerate(names):
        u = m.units[name]
        segs: list[Seg] = [("└─ " if i == len(names) - 1 else "├─ ", "dim"),
                           (name, "sel" if name == m.selected_unit else "key"), (f" {m.level_of(name)} ", "dim"),
                           badge("CM", u.cm), (" ", ""), badge("C", u.coherent), (" ", ""), badge("SC", u.sc)]
        gone = detached.get(name, [])
        if gone:
            segs.append((" · detached: " + ", ".join(map(str, gone[:24])) + (" …" if len(gone) > 24 else ""), "dim"))
        out.append(tuple(segs))
    return out
