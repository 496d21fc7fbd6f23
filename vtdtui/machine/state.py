"""The state JSON of DESIGN.md ("schema": "vtdtui.state/1"), built from a Machine.

Tables are read as the CPU sees them (what software wrote, as debugfs shows it);
cached entries carry an extra "stale" reason when they no longer match.
"""

from __future__ import annotations

import json

from ..hw.entries import ContextEntry, RootEntry, bdf_str
from .machine import Machine

SCHEMA = "vtdtui.state/1"


def _hex(n: int) -> str:
    return f"0x{n:x}"


def unit_json(m: Machine, name: str) -> dict:
    u = m.units[name]
    level = m.level_of(name)
    read = u.cpu_read_q
    roots, ctxs = [], []
    rta = u.rta_latched & ~0xFFF
    if rta:
        for bus in range(256):
            re_ = RootEntry.decode(read(rta + bus * 16), read(rta + bus * 16 + 8))
            if not re_.present:
                continue
            roots.append({"bus": bus, "present": True, "ctp": _hex(re_.ctp)})
            for dfn in range(256):
                ce = ContextEntry.decode(read(re_.ctp + dfn * 16), read(re_.ctp + dfn * 16 + 8))
                if ce.present:
                    ctxs.append({"bdf": bdf_str(bus << 8 | dfn), "present": True, "did": ce.did, "tt": ce.tt,
                                 "aw": ce.aw, "slptptr": _hex(ce.slptptr), "fpd": ce.fpd})
    cc = []
    for e in u.context_cache:
        item = {"bdf": bdf_str(e.source_id), "did": e.did, "present": e.present}
        stale = u.context_cache_stale(e)
        if stale:
            item["stale"] = stale
        cc.append(item)
    tlb = []
    for e in u.iotlb:
        item = {"did": e.did, "iova": _hex(e.iova), "size": _hex(e.size), "hpa": _hex(e.hpa),
                "r": e.r, "w": e.w, "snp": e.snp}
        if not e.present:
            item["present"] = False
        stale = u.iotlb_stale(e)
        if stale:
            item["stale"] = stale
        tlb.append(item)
    flags = {"cm": u.cm, "c": u.coherent, "sc": u.sc, "rwbf": u.rwbf, "psi": u.psi, "qi": u.qi_supported,
             "te": u.translation_enabled, "qie": bool(u.gsts & (1 << 26))}
    return {
        "name": name, "level": level, "cap": _hex(u.cap), "ecap": _hex(u.ecap), "flags": flags,
        "root_entries": roots, "context_entries": ctxs, "context_cache": cc, "iotlb": tlb,
        "faults": [f.to_json() for f in u.faults if not f.suppressed_by_fpd],
    }


def domains_json(m: Machine) -> list[dict]:
    out = []
    for w in m.worlds.values():
        for d in w.driver.domains.values():
            units = list(d.dids.items())
            first = units[0] if units else (None, None)
            out.append({
                "id": d.id, "unit": first[0], "did": first[1],
                "enforce_cache_coherency": d.force_snooping,
                "devices": sorted(bdf_str(s) for s in d.devices),
                "mapped_pages": d.mapped_pages,
                "units": [{"unit": n, "did": did} for n, did in units],
                "levels": d.levels, "pgd": _hex(d.pgd), "owner": d.owner,
            })
    return sorted(out, key=lambda x: x["id"])


def to_json_text(m: Machine) -> str:
    """The state JSON as `dump --json` and `replay --json` write it."""
    return json.dumps(to_json(m), indent=2) + "\n"


def to_json(m: Machine) -> dict:
    groups = []
    for g in m.groups.values():
        d = m.domain_of(g)
        groups.append({"id": g.spec_id, "unit": g.unit, "devices": g.bdfs,
                       "domain": d.id if d else None, "owner": g.owner})
    state = {
        "schema": SCHEMA,
        "scenario": m.scenario.name,
        "units": [unit_json(m, n) for n in m.units],
        "domains": domains_json(m),
        "groups": groups,
        "vm": m.kvm.to_json() if m.kvm else None,
        "journal": m.journal.to_json(),
    }
    if m.vfio is not None:
        state["vfio"] = {"policy": m.vfio.policy, "cc_iommu": m.vfio.cc_iommu(),
                         "flush_noncoherent": m.vfio.flush_noncoherent,
                         "domains": [vd.domain.id for vd in m.vfio.domains]}
    if m.qemu is not None:
        state["qemu"] = m.qemu.to_json()
    return state
