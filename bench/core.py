"""Core: translations and maps per second, each against a dict.get loop.

All on the desktop scenario's dGPU (group 1 on dmar1: 4-level tables, C=0, CM=0),
attached to a VFIO domain as the VM does:
IOTLB hit:  DmarUnit.translate() of a page whose translation is cached (context cache
            and IOTLB hits), the whole DMA path the views use.
miss+walk:  DmarUnit.translate() of a page not in the IOTLB: context-cache hit, a
            4-level second-level walk from memory (C=0), and the IOTLB fill.
4K / 2M maps: IntelIommuDriver.map_range() (intel_iommu_map_pages) of one page per
            call, with its clflush decisions journaled.
"""

from __future__ import annotations

from vtdtui.machine import Machine

from .common import Figures, dict_get_loop, paired_rates, report, verdict

HIT_TARGET = 10.0  # IOTLB hit within 10x of dict.get
MISS_TARGET = 40.0  # a 4-level miss within 40x


def _setup():
    m = Machine.from_scenario("desktop")
    m.execute("attach 1")
    g = m.groups[1]
    unit = m.units[g.unit]
    driver = m.driver_for(g.unit)
    sid = g.devices[0][0]
    d = driver.attached_domain(sid, unit)
    assert d is not None and d.levels == 4, "the dGPU's domain walks four levels"
    return m, unit, driver, d, sid


def run(quick: bool = False) -> Figures:
    n = 512 if quick else 1024  # the IOTLB holds 1024 (QEMU's VTD_IOTLB_MAX_SIZE)
    maps = 2048 if quick else 8192
    m, unit, driver, d, sid = _setup()
    base = 1 << 32
    driver.map_range(d, base, base, n << 12, True, True)
    iovas = [base + (i << 12) for i in range(n)]
    for iova in iovas:  # warm: every page in the IOTLB
        assert unit.translate(sid, iova).ok
    t = unit.translate(sid, iovas[-1])
    assert t.ok and t.iotlb_hit and t.hpa == iovas[-1], "the hit loop must hit"

    def hits() -> int:
        tr = unit.translate
        for iova in iovas:
            tr(sid, iova)
        return n

    def misses() -> int:
        tr, flush = unit.translate, unit.iotlb.invalidate_global
        for iova in iovas:
            flush()  # an empty IOTLB: each translate walks
            tr(sid, iova)
        return n

    did = t.did
    ce = unit.context_cache.lookup(sid).decoded

    def lookups() -> int:  # the IOTLB alone: Iotlb.lookup() and the page offset
        look = unit.iotlb.lookup
        for iova in iovas:
            e = look(did, iova)
            e.hpa | (iova & (e.size - 1))
        return n

    def walks() -> int:  # the 4-level walk alone: DmarUnit.walk() from memory
        walk = unit.walk
        for iova in iovas:
            walk(ce, iova, False)
        return n

    # Each loop is timed in turn with the dict.get baseline over the same keys (run,
    # baseline, run, ...): each ratio is to the baseline measured alongside it.
    base = dict_get_loop(iovas)
    hit_rate, hit_base = paired_rates(hits, base)
    lookup_rate, lookup_base = paired_rates(lookups, base)  # before the misses empty the IOTLB
    miss_rate, miss_base = paired_rates(misses, base)
    walk_rate, walk_base = paired_rates(walks, base)
    base_rate = max(hit_base, lookup_base, miss_base, walk_base)

    def mapper(size: int, start: int):
        def go() -> int:
            nonlocal start
            for i in range(maps):
                driver.map_range(d, start, start, size, True, True)
                start += size
            return maps
        return go

    map_loop = dict_get_loop(list(range(maps)))
    map4k_rate, map4k_base = paired_rates(mapper(1 << 12, 1 << 36), map_loop, repeat=3)
    map2m_rate, map2m_base = paired_rates(mapper(1 << 21, 1 << 38), map_loop, repeat=3)
    fig = {
        "dict_get_per_s": round(base_rate),
        "baseline": "interleaved",
        "iotlb_hit_translate_per_s": round(hit_rate),
        "iotlb_hit_ratio": round(hit_base / hit_rate, 2),
        "miss_walk4_translate_per_s": round(miss_rate),
        "miss_walk4_ratio": round(miss_base / miss_rate, 2),
        "iotlb_lookup_per_s": round(lookup_rate),
        "iotlb_lookup_ratio": round(lookup_base / lookup_rate, 2),
        "walk4_per_s": round(walk_rate),
        "walk4_ratio": round(walk_base / walk_rate, 2),
        "map_4k_per_s": round(map4k_rate),
        "map_4k_ratio": round(map4k_base / map4k_rate, 2),
        "map_2m_per_s": round(map2m_rate),
        "map_2m_ratio": round(map2m_base / map2m_rate, 2),
    }
    summary = [
        f"dict.get baseline          {base_rate:12,.0f} /s  (timed in turn with each loop below; each ratio is to its own)",
        f"IOTLB-hit translate        {hit_rate:12,.0f} /s  {fig['iotlb_hit_ratio']:6.1f}x dict.get  "
        f"(target ≤{HIT_TARGET:g}x: {verdict(fig['iotlb_hit_ratio'] <= HIT_TARGET)})",
        f"miss + 4-level walk        {miss_rate:12,.0f} /s  {fig['miss_walk4_ratio']:6.1f}x dict.get  "
        f"(target ≤{MISS_TARGET:g}x: {verdict(fig['miss_walk4_ratio'] <= MISS_TARGET)})",
        f"  of which Iotlb.lookup    {lookup_rate:12,.0f} /s  {fig['iotlb_lookup_ratio']:6.1f}x dict.get",
        f"  of which the walk alone  {walk_rate:12,.0f} /s  {fig['walk4_ratio']:6.1f}x dict.get",
        f"4 KiB maps (one a call)    {map4k_rate:12,.0f} /s  {fig['map_4k_ratio']:6.1f}x dict.get",
        f"2 MiB maps (one a call)    {map2m_rate:12,.0f} /s  {fig['map_2m_ratio']:6.1f}x dict.get",
    ]
    return report("core", fig, summary)


if __name__ == "__main__":
    run()
