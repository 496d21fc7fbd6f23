"""The selected unit's context cache, PASID cache (scalable mode) and IOTLB, stale
entries marked with why.

An entry is stale when the tables in memory (as the CPU wrote them) no longer say
what the entry says — the result of an invalidation that was skipped.  In scalable
mode IOTLB entries are tagged with the PASID they were filled for (RID_PASID for a
request without one) as well as the DID.
"""

from __future__ import annotations

from ..hw.entries import bdf_str
from ..hw.faults import reason_string
from ..hw.sm_entries import PasidEntry
from ..machine import Machine
from ..machine.parse import fmt_size
from ..machine.state import sm_mode
from .style import Line, plain

PGTT_SHORT = {1: "FS", 2: "SS", 3: "NEST", 4: "PT"}


def _pasid_tag(e) -> str:
    pasid = getattr(e, "pasid", None)
    return "" if pasid is None else f" PASID {pasid:<4}"


def pasid_cache_lines(u) -> list[Line]:
    """The PASID cache of a scalable-mode unit: (source id, PASID) → the PASID entry's
    DID and PGTT, as cached when a walk read it."""
    entries = sorted(getattr(u, "pasid_cache", ()) or (), key=lambda e: (e.source_id, e.pasid))
    out: list[Line] = [plain("PASID cache", "head")]
    if not entries:
        out.append(plain("  (empty)", "dim"))
    stale_of = getattr(u, "pasid_cache_stale", None)
    for e in entries:
        if e.present:
            pe = PasidEntry.decode(e.val)
            line = ((f"  {bdf_str(e.source_id)} ", "key"), (f"PASID {e.pasid:<5}", "key"), (f"DID {e.did:<4} ", "head"),
                    (f"PGTT {PGTT_SHORT.get(pe.pgtt, pe.pgtt)} ", ""), ("PGSNP " if pe.pgsnp else "", "on"),
                    ("PWSNP " if pe.pwsnp else "", "on"), (f"{pe.val[2]:016x}:{pe.val[1]:016x}:{pe.val[0]:016x}", "dim"))
        else:
            line = ((f"  {bdf_str(e.source_id)} ", "key"), (f"PASID {e.pasid:<5}", "key"),
                    (f"NP cached not-present: fault {e.fault_reason:#x} {reason_string(e.fault_reason)}", "np"))
        out.append(line)
        why = stale_of(e) if stale_of else ""
        if why:
            out.append(plain(f"    ✗ stale: {why}", "stale"))
    return out


def cache_lines(m: Machine, name: str) -> list[Line]:
    u = m.units[name]
    out: list[Line] = []
    ctx = sorted(u.context_cache, key=lambda e: e.source_id)
    stale_ctx = [u.context_cache_stale(e) for e in ctx]
    tlb = sorted(u.iotlb, key=lambda e: (e.did, e.iova))
    stale_tlb = [u.iotlb_stale(e) for e in tlb]
    n_stale = sum(map(bool, stale_ctx)) + sum(map(bool, stale_tlb))
    sm = sm_mode(u)
    pc = list(getattr(u, "pasid_cache", ()) or ()) if sm else []
    if pc and hasattr(u, "pasid_cache_stale"):
        n_stale += sum(bool(u.pasid_cache_stale(e)) for e in pc)
    cap = f"/{u.iotlb.capacity}" if u.iotlb.capacity else ""
    out.append(((f"{name} ", "head"), ("scalable mode · " if sm else "", "on"),
                (f"context cache {len(ctx)} · " + (f"PASID cache {len(pc)} · " if sm else "")
                 + f"IOTLB {len(tlb)}{cap} · ", "dim"),
                (f"{n_stale} stale" if n_stale else "none stale", "stale" if n_stale else "dim"),
                (" · negative entries " + ("cached (CM=1)" if u.cm and u.caches_negative else "not cached"), "dim")))
    out.append(plain("context cache", "head"))
    if not ctx:
        out.append(plain("  (empty)", "dim"))
    for e, why in zip(ctx, stale_ctx, strict=True):
        if e.present:
            line = ((f"  {bdf_str(e.source_id)} ", "key"), (f"DID {e.did:<4} ", "head"),
                    (f"{e.hi:016x}:{e.lo:016x}", "dim"))
        else:
            line = ((f"  {bdf_str(e.source_id)} ", "key"), ("NP  ", "np"),
                    (f"cached not-present: fault {e.fault_reason:#x} {reason_string(e.fault_reason)}", "np"))
        out.append(line)
        if why:
            out.append(plain(f"    ✗ stale: {why}", "stale"))
    if sm:
        out += pasid_cache_lines(u)
    out.append(plain("IOTLB" + (" (tagged DID + PASID)" if sm else ""), "head"))
    if not tlb:
        out.append(plain("  (empty)", "dim"))
    for e, why in zip(tlb, stale_tlb, strict=True):
        if e.present:
            perms = ("R" if e.r else "-") + ("W" if e.w else "-")
            line = ((f"  DID {e.did:<4}", "head"), (_pasid_tag(e), "key"),
                    (f" {e.iova:#014x}+{fmt_size(e.size):<4}", "addr"),
                    (f" → {e.hpa:#x} ", "addr"), (perms, "on"), (" SNP" if e.snp else "", "on"),
                    (f" {PGTT_SHORT[e.pgtt]}" if getattr(e, "pgtt", 0) in PGTT_SHORT else "", "dim"),
                    (f"  ({bdf_str(e.source_id)})", "dim"))
        else:
            line = ((f"  DID {e.did:<4}", "head"), (_pasid_tag(e), "key"),
                    (f" {e.iova:#014x}+{fmt_size(e.size):<4}", "addr"),
                    (f" NP cached not-present: fault {e.fault_reason:#x}", "np"))
        out.append(line)
        if why:
            out.append(plain(f"    ✗ stale: {why}", "stale"))
    return out
