"""The state JSON of DESIGN.md ("schema": "vtdtui.state/1"), built from a Machine.

Tables are read as the CPU sees them (what software wrote, as debugfs shows it);
cached entries carry an extra "stale" reason when they no longer match.  A unit whose
latched root table has RTADDR.SMT runs scalable mode: its root and context entries are
listed in their scalable-mode form and its PASID entries are added (DESIGN.md
"Scalable mode"); the readers below (sm_roots, sm_contexts, pasid_dir, pasid_table)
are the views' too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from ..hw.entries import ContextEntry, RootEntry, bdf_str
from ..hw.memory import MemoryError_
from ..hw.regs import RTADDR_SMT
from ..hw.sm_entries import (PASID_DIR_ENTRY_SIZE, PASID_ENTRY_SIZE, PASID_PDE_SHIFT, PGTT_NAMES,
                             SM_CONTEXT_ENTRY_SIZE, SM_CONTEXTS_PER_TABLE, SM_ROOT_ENTRY_SIZE, PasidDirEntry,
                             PasidEntry, SmContextEntry, SmRootEntry)
from .machine import Machine

SCHEMA = "vtdtui.state/1"
# A PASID directory of PDTS=7 holds 2^14 entries (32 pages): Linux sizes it from the
# device's PASID width (intel_pasid_alloc_table()); one page (512 entries) without
# PASID support.  Readers stop at this many directory entries per device.
MAX_DIR_ENTRIES = 1 << 14
# DmarDomain.stage (sw/linux.py) → the contract's "stage" values.
STAGES = {"first": "first", "second": "second", "nested": "nested", "identity": "identity",
          "first-stage": "first", "second-stage": "second", "pass-through": "identity"}


def _hex(n: int) -> str:
    return f"0x{n:x}"


def _hexn(n: int | None) -> str | None:
    return None if n is None else _hex(n)


# ----------------------------------------------------------------------------- scalable-mode readers


def sm_mode(u) -> bool:
    """The unit translates in scalable mode: the root table SRTP latched has RTADDR.SMT
    (iommu_set_root_entry(): `if (sm_supported(iommu)) addr |= DMA_RTADDR_SMT`)."""
    return bool(u.rta_latched & RTADDR_SMT)


def _page(read_page, addr: int) -> list[int] | None:
    try:
        return read_page(addr)
    except MemoryError_:
        return None


def sm_roots(u, read_page=None) -> Iterator[tuple[int, int, SmRootEntry]]:
    """(bus, address, entry) of each scalable-mode root entry with LP or UP set."""
    rta = u.rta_latched & ~0xFFF
    words = _page(read_page or u.cpu_read_page, rta) if rta else None
    for bus in range(256) if words else ():
        lo, hi = words[2 * bus], words[2 * bus + 1]
        if lo or hi:
            re_ = SmRootEntry.decode(lo, hi)
            if re_.lp or re_.up:
                yield bus, rta + bus * SM_ROOT_ENTRY_SIZE, re_


def sm_contexts(u, bus: int, root: SmRootEntry, read_page=None) -> Iterator[tuple[int, int, SmContextEntry]]:
    """(devfn, address, entry) of each present 256-bit context entry under a root
    entry: devfn 0x00-0x7f in the LCTP table, 0x80-0xff in the UCTP one
    (iommu_context_addr())."""
    read_page = read_page or u.cpu_read_page
    for upper, (present, table) in enumerate(((root.lp, root.lctp), (root.up, root.uctp))):
        words = _page(read_page, table) if present and table else None
        if words is None:
            continue
        for i in range(SM_CONTEXTS_PER_TABLE):
            w = words[4 * i: 4 * i + 4]
            if w[0] & 1:
                yield upper * 0x80 + i, table + i * SM_CONTEXT_ENTRY_SIZE, SmContextEntry.decode(*w)


def sm_context(u, source_id: int, read_page=None) -> SmContextEntry | None:
    """The present scalable-mode context entry of `source_id`, as software wrote it."""
    bus, devfn = source_id >> 8, source_id & 0xFF
    rta = u.rta_latched & ~0xFFF
    words = _page(read_page or u.cpu_read_page, rta) if rta else None
    if not words:
        return None
    re_ = SmRootEntry.decode(words[2 * bus], words[2 * bus + 1])
    present, table = re_.half(devfn)
    if not present:
        return None
    page = _page(read_page or u.cpu_read_page, table)
    if page is None:
        return None
    i = devfn & 0x7F
    ce = SmContextEntry.decode(*page[4 * i: 4 * i + 4])
    return ce if ce.present else None


def pasid_dir(u, ce: SmContextEntry, read_page=None) -> Iterator[tuple[int, PasidDirEntry]]:
    """(directory index, entry) of each PASID directory entry that is not zero, within
    the 2^(PDTS+7) entries the context entry gives (bounded by MAX_DIR_ENTRIES)."""
    read_page = read_page or u.cpu_read_page
    n = min(ce.dir_entries, MAX_DIR_ENTRIES)
    per_page = 4096 // PASID_DIR_ENTRY_SIZE
    for first in range(0, n, per_page):
        words = _page(read_page, ce.pasiddirptr + first * PASID_DIR_ENTRY_SIZE)
        if words is None:
            return
        for j, raw in enumerate(words[: n - first]):
            if raw:
                yield first + j, PasidDirEntry.decode(raw)


def pasid_table(u, table: int, read_page=None) -> Iterator[tuple[int, int, PasidEntry]]:
    """(table index, address, entry) of each PASID entry that is not all zero in a
    64-entry table."""
    words = _page(read_page or u.cpu_read_page, table)
    for i in range(4096 // PASID_ENTRY_SIZE) if words else ():
        val = words[8 * i: 8 * i + 8]
        if any(val):
            yield i, table + i * PASID_ENTRY_SIZE, PasidEntry.decode(val)


def pasid_entries(u, ce: SmContextEntry, read_page=None) -> Iterator[tuple[int, int, PasidEntry]]:
    """(PASID, address, entry) of every non-zero PASID entry reachable from a context entry."""
    for d, de in pasid_dir(u, ce, read_page):
        if de.present:
            for i, addr, pe in pasid_table(u, de.table, read_page):
                yield (d << PASID_PDE_SHIFT) | i, addr, pe


def pasid_entry(u, source_id: int, pasid: int = 0, read_page=None) -> PasidEntry | None:
    """The PASID entry of (source_id, pasid) as software wrote it, or None."""
    ce = sm_context(u, source_id, read_page)
    if ce is None or pasid >= ce.max_pasid:
        return None
    page = _page(read_page or u.cpu_read_page, ce.pasiddirptr + ((pasid >> PASID_PDE_SHIFT) & ~511) * 8)
    if page is None:
        return None
    de = PasidDirEntry.decode(page[(pasid >> PASID_PDE_SHIFT) & 511])
    if not de.present:
        return None
    table = _page(read_page or u.cpu_read_page, de.table)
    if table is None:
        return None
    i = pasid & 0x3F
    return PasidEntry.decode(table[8 * i: 8 * i + 8])


def pasid_entry_json(bdf: str, pasid: int, pe: PasidEntry) -> dict:
    return {"bdf": bdf, "pasid": pasid, "present": pe.present, "pgtt": PGTT_NAMES.get(pe.pgtt, f"reserved-{pe.pgtt}"),
            "did": pe.did, "fsptptr": _hex(pe.fsptptr), "ssptptr": _hex(pe.ssptptr), "pgsnp": pe.pgsnp,
            "pwsnp": pe.pwsnp, "flpm": pe.flpm, "aw": pe.aw, "fpd": pe.fpd, "sre": pe.sre, "wpe": pe.wpe,
            "eafe": pe.eafe, "ssade": pe.ssade}


def _sm_tables(u) -> tuple[list, list, list]:
    roots, ctxs, pes = [], [], []
    for bus, _addr, re_ in sm_roots(u):
        roots.append({"bus": bus, "present": True, "ctp": _hex(re_.lctp) if re_.lp else _hex(re_.uctp),
                      "lp": re_.lp, "lctp": _hex(re_.lctp), "up": re_.up, "uctp": _hex(re_.uctp)})
        for devfn, _a, ce in sm_contexts(u, bus, re_):
            bdf = bdf_str(bus << 8 | devfn)
            # No DID, TT, AW or SLPTPTR in a scalable-mode context entry: those keys
            # stay (null) so that a reader of legacy states finds them.
            ctxs.append({"bdf": bdf, "present": True, "did": None, "tt": None, "aw": None, "slptptr": None,
                         "fpd": ce.fpd, "pasiddirptr": _hex(ce.pasiddirptr), "pdts": ce.pdts, "dte": ce.dte,
                         "paside": ce.paside, "pre": ce.pre, "rid_pasid": ce.rid_pasid})
            pes += [pasid_entry_json(bdf, pasid, pe) for pasid, _a, pe in pasid_entries(u, ce)]
    return roots, ctxs, pes


def pasid_cache_json(u) -> list[dict]:
    """The unit's PASID cache (hw/unit.py: entries keyed by source id, PASID and DID),
    stale ones with why."""
    out = []
    for e in getattr(u, "pasid_cache", ()) or ():
        item = {"bdf": bdf_str(e.source_id), "pasid": e.pasid, "did": e.did, "present": e.present}
        if e.present:
            pe = PasidEntry.decode(e.val)
            item.update(pgtt=PGTT_NAMES.get(pe.pgtt, f"reserved-{pe.pgtt}"), pgsnp=pe.pgsnp, pwsnp=pe.pwsnp)
        else:
            item["fault_reason"] = e.fault_reason
        stale = u.pasid_cache_stale(e) if hasattr(u, "pasid_cache_stale") else ""
        if stale:
            item["stale"] = stale
        out.append(item)
    return out


def unit_json(m: Machine, name: str) -> dict:
    u = m.units[name]
    level = m.level_of(name)
    read = u.cpu_read_q
    roots, ctxs = [], []
    rta = u.rta_latched & ~0xFFF
    sm = sm_mode(u)
    pes: list = []
    if sm:
        roots, ctxs, pes = _sm_tables(u)
    elif rta:
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
                "r": e.r, "w": e.w, "snp": e.snp, "pasid": getattr(e, "pasid", None)}
        if not e.present:
            item["present"] = False
        stale = u.iotlb_stale(e)
        if stale:
            item["stale"] = stale
        tlb.append(item)
    flags = {"cm": u.cm, "c": u.coherent, "sc": u.sc, "rwbf": u.rwbf, "psi": u.psi, "qi": u.qi_supported,
             "te": u.translation_enabled, "qie": bool(u.gsts & (1 << 26)),
             "smts": bool(u.ecapf("SMTS")), "flts": bool(u.ecapf("FLTS")), "slts": bool(u.ecapf("SLTS")),
             "smpwc": bool(u.ecapf("SMPWC")), "dt": bool(u.ecapf("DT"))}
    out = {
        "name": name, "level": level, "cap": _hex(u.cap), "ecap": _hex(u.ecap), "flags": flags,
        "mode": "scalable" if sm else "legacy",
        "root_entries": roots, "context_entries": ctxs, "context_cache": cc, "iotlb": tlb,
        "faults": [f.to_json() for f in u.faults if not f.suppressed_by_fpd],
    }
    if sm:
        out["pasid_entries"] = pes
        out["pasid_cache"] = pasid_cache_json(u)
    return out


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
                "stage": domain_stage(d),
            })
            if out[-1]["stage"] == "nested":  # extension: the nest parent (s2_domain) of a nested domain
                out[-1]["parent"] = d.parent.id if getattr(d, "parent", None) is not None else None
    return sorted(out, key=lambda x: x["id"])


def domain_stage(d) -> str:
    """The contract's stage of a domain: "first" | "second" | "nested" | "identity"
    (DmarDomain.stage; a legacy-mode domain is second stage)."""
    return STAGES.get(getattr(d, "stage", None) or "second", "second")


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
        "iommufd": m.iommufd.to_json() if m.iommufd is not None else None,
        "journal": m.journal.to_json(),
    }
    if m.vfio is not None:
        state["vfio"] = {"policy": m.vfio.policy, "cc_iommu": m.vfio.cc_iommu(),
                         "flush_noncoherent": m.vfio.flush_noncoherent,
                         "domains": [vd.domain.id for vd in m.vfio.domains]}
    if m.qemu is not None:
        state["qemu"] = m.qemu.to_json()
    return state
