"""The selected unit's context cache and IOTLB, stale entries marked with why.

An entry is stale when the tables in memory (as the CPU wrote them) no longer say
what the entry says — the result of an invalidation that was skipped.
"""

from __future__ import annotations

from ..hw.entries import bdf_str
from ..hw.faults import reason_string
from ..machine import Machine
from ..machine.parse import fmt_size
from .style import Line, plain


def cache_lines(m: Machine, name: str) -> list[Line]:
    u = m.units[name]
    out: list[Line] = []
    ctx = sorted(u.context_cache, key=lambda e: e.source_id)
    stale_ctx = [u.context_cache_stale(e) for e in ctx]
    tlb = sorted(u.iotlb, key=lambda e: (e.did, e.iova))
    stale_tlb = [u.iotlb_stale(e) for e in tlb]
    n_stale = sum(map(bool, stale_ctx)) + sum(map(bool, stale_tlb))
    cap = f"/{u.iotlb.capacity}" if u.iotlb.capacity else ""
    out.append(((f"{name} ", "head"),
                (f"context cache {len(ctx)} · IOTLB {len(tlb)}{cap} · ", "dim"),
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
    out.append(plain("IOTLB", "head"))
    if not tlb:
        out.append(plain("  (empty)", "dim"))
    for e, why in zip(tlb, stale_tlb, strict=True):
        if e.present:
            perms = ("R" if e.r else "-") + ("W" if e.w else "-")
            line = ((f"  DID {e.did:<4}", "head"), (f" {e.iova:#014x}+{fmt_size(e.size):<4}", "addr"),
                    (f" → {e.hpa:#x} ", "addr"), (perms, "on"), (" SNP" if e.snp else "", "on"),
                    (f"  ({bdf_str(e.source_id)})", "dim"))
        else:
            line = ((f"  DID {e.did:<4}", "head"), (f" {e.iova:#014x}+{fmt_size(e.size):<4}", "addr"),
                    (f" NP cached not-present: fault {e.fault_reason:#x}", "np"))
        out.append(line)
        if why:
            out.append(plain(f"    ✗ stale: {why}", "stale"))
    return out
