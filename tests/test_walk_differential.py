"""Differential check: the hardware's page walk against a reference dict.

Random mappings (IOVAs aligned to 4K / 2M / 1G pages, random sizes and physical
addresses) go through the Linux driver's map_range / unmap_range on a real domain of
a built-in scenario; the test keeps its own dict, IOVA page → (HPA page, R, W), plus
the leaf each page sits in (the kernel's hardware_largepage_caps rule, written out
here independently; the dict is kept per leaf so that a 1 GiB page is one entry).  Mapping over a present page must be refused and change nothing;
an unmap that cuts a large page takes the whole page, as intel_iommu_unmap does.
After every step, at probe addresses inside, at the edges of and outside the
mappings, three views must agree with the dict:
  - DmarUnit.walk()       the hardware's walk, reading what the unit sees (memory
                          for a non-coherent unit, so every clflush must have happened);
  - DmarUnit.translate()  a DMA through the context cache and IOTLB;
  - iova_to_phys()        the driver's own reading of its tables.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, note
from hypothesis import strategies as st

from vtdtui.hw import faults as fr
from vtdtui.machine import Machine
from vtdtui.sw.linux import DriverError

K4, M2, G1 = 1 << 12, 1 << 21, 1 << 30
LEGACY_SERVER = str(Path(__file__).parent / "data" / "scenarios" / "server-legacy.toml")
PHYS = 0x40_0000_0000  # data pages: below every unit's HAW, far from the page tables


class Rig:
    """A unit, its driver and one attached domain, set up by machine commands."""

    SETUPS = {
        # name: (scenario, commands, group)
        "server (scalable mode, first stage, SMPWC=1)": ("server", [], 0),
        "server legacy (C=1, 5-level)": ("server-legacy", [], 0),
        "desktop dmar1 (C=0, PSI)": ("desktop", ["attach 5"], 5),
        "desktop dmar0 (C=0, no PSI)": ("desktop", ["attach 0"], 0),
        "desktop dmar1 with CM=1": ("desktop", ["toggle dmar1 CM", "attach 5"], 5),
        "viommu guest (QEMU's unit, CM=1)": ("viommu", ["attach 2"], 2),
    }

    def __init__(self, name: str):
        scenario, commands, gid = self.SETUPS[name]
        self.m = Machine.from_scenario(LEGACY_SERVER if scenario == "server-legacy" else scenario)
        for c in commands:
            self.m.execute(c)
        g = self.m.groups[gid]
        self.unit = self.m.units[g.unit]
        self.driver = self.m.driver_for(g.unit)
        self.domain = self.m.domain_of(g)
        self.sid = g.devices[0][0]
        assert self.domain is not None and self.domain.superpage_level == 3


def leaves(iova: int, phys: int, size: int) -> list[tuple[int, int, int]]:
    """(IOVA, HPA, size) of each leaf: the largest of 1G / 2M / 4K that both addresses
    are aligned to and that the remaining length holds."""
    out = []
    while size:
        page = next(p for p in (G1, M2, K4) if not (iova | phys) % p and size >= p)
        out.append((iova, phys, page))
        iova, phys, size = iova + page, phys + page, size - page
    return out


@st.composite
def mappings(draw):
    page = draw(st.sampled_from([K4, M2, G1]))
    iova = draw(st.integers(0, {K4: 2047, M2: 15, G1: 3}[page])) * page
    size = draw(st.integers(1, 3)) * page + draw(st.integers(0, 2)) * K4
    # The physical side: aligned like the IOVA, or off by one smaller page (so the
    # driver must fall back to smaller leaves).
    skew = draw(st.sampled_from([0, 0, {K4: 0, M2: K4, G1: M2}[page]]))
    phys = PHYS + draw(st.integers(0, 7)) * G1 + draw(st.integers(0, 511)) * (page if page < G1 else 0) + skew
    r, w = draw(st.sampled_from([(True, True), (True, False), (False, True)]))
    return ("map", iova, size, phys, r, w)


@st.composite
def unmaps(draw):
    if draw(st.booleans()):
        return ("unmap-mapping", draw(st.integers(0, 100)), draw(st.booleans()))
    page = draw(st.sampled_from([K4, M2]))
    return ("unmap", draw(st.integers(0, 4095)) * K4, draw(st.integers(1, 4)) * page)


def lookup(ref: dict[int, tuple[int, int, bool, bool]], iova: int) -> tuple[int, bool, bool] | None:
    """(HPA, R, W) the reference says for `iova`, or None."""
    for size in (G1, M2, K4):
        leaf = ref.get(iova & ~(size - 1))
        if leaf is not None and leaf[0] == size:
            return leaf[1] + (iova & (size - 1)), leaf[2], leaf[3]
    return None


def probes(live: list[tuple[int, int]], extra: list[int]) -> list[int]:
    out = set(extra)
    for iova, size in live:
        out.update((iova, iova + size - K4, iova - K4, iova + size, iova + size // 2 + 0x123))
    return sorted(p for p in out if 0 <= p < 1 << 39)


def check(rig: Rig, ref: dict[int, tuple[int, int, bool, bool]], points: list[int]) -> None:
    u, d = rig.unit, rig.domain
    if u.sm_active:
        # Scalable mode: the RID_PASID PASID entry points to the domain's first-stage
        # tables; IA-32e entries have no read permission (present means readable), a
        # not-present entry faults 0x71 and a write to R/W=0 faults 0x85.
        pe = u.read_pasid_entry(rig.sid).entry
        assert pe is not None and pe.present and pe.fsptptr == d.pgd and d.stage == "first"

        def walk_of(iova: int, write: bool):
            return u.fs_walk(pe, iova, write)
    else:
        ce = u.read_context(rig.sid).entry
        assert ce is not None and ce.slptptr == d.pgd

        def walk_of(iova: int, write: bool):
            return u.walk(ce, iova, write)
    for iova in points:
        want = lookup(ref, iova)
        for write in (False, True):
            allowed = want is not None and (want[2] if write else (want[1] or u.sm_active))
            where = f"{'write' if write else 'read'} {iova:#x} (want {want})"
            walk = walk_of(iova, write)
            dma = u.translate(rig.sid, iova, write)
            if allowed:
                assert walk.ok and walk.hpa == want[0], f"walk {where}: {walk.ok} {walk.hpa:#x} {walk.reason:#x}"
                assert dma.ok and dma.hpa == want[0], f"DMA {where}: {dma.steps}"
            elif u.sm_active:
                reason = fr.FS_PAGING_ENTRY_P if want is None else fr.SM_WRITE
                assert not walk.ok and walk.reason == reason, f"walk {where}: {walk.ok} {walk.reason:#x}"
                assert not dma.ok and dma.fault.reason == reason, f"DMA {where}: {dma.steps}"
            else:
                reason = fr.WRITE if write else fr.READ
                assert not walk.ok and walk.reason == reason, f"walk {where}: {walk.ok} {walk.hpa:#x}"
                assert not dma.ok and dma.fault.reason == reason, f"DMA {where}: {dma.steps}"
        hit = rig.driver.iova_to_phys(d, iova)
        assert (hit[0] if hit else None) == (want[0] if want else None), f"iova_to_phys {iova:#x}"


@given(setup=st.sampled_from(sorted(Rig.SETUPS)),
       ops=st.lists(st.one_of(mappings(), mappings(), unmaps()), min_size=1, max_size=8),
       extra=st.lists(st.integers(0, (1 << 33) - 1), max_size=4))
def test_the_page_walk_matches_a_reference_dict(setup, ops, extra):
    rig = Rig(setup)
    ref: dict[int, tuple[int, int, bool, bool]] = {}  # leaf IOVA → (leaf size, HPA, R, W)
    live: list[tuple[int, int]] = []  # (IOVA, size) of the mappings made
    for op in ops:
        note(repr(op))
        if op[0] == "map":
            _, iova, size, phys, r, w = op
            if any(leaf < iova + size and iova < leaf + ls for leaf, (ls, *_) in ref.items()):
                before = len(rig.driver.journal)
                try:
                    rig.driver.map_range(rig.domain, iova, phys, size, r, w)
                except DriverError as exc:
                    assert "overlaps a present mapping" in str(exc)
                else:
                    raise AssertionError(f"mapping over a present page was accepted: {op}")
                assert len(rig.driver.journal) == before  # refused before writing anything
            else:
                rig.driver.map_range(rig.domain, iova, phys, size, r, w)
                ref.update({liova: (lsize, lphys, r, w) for liova, lphys, lsize in leaves(iova, phys, size)})
                live.append((iova, size))
        else:
            if op[0] == "unmap-mapping":
                if not live:
                    continue
                iova, size = live[op[1] % len(live)]
                if op[2]:
                    size = K4  # its first page only: a large page goes whole
            else:
                _, iova, size = op
            start, end = iova, iova + size
            for leaf, (ls, *_) in ref.items():
                if leaf <= start < leaf + ls:
                    start = leaf
                if leaf < end <= leaf + ls:
                    end = leaf + ls
            done = rig.driver.unmap_range(rig.domain, iova, size, lazy=False)
            assert done == end - start, f"unmapped {done:#x}, expected [{start:#x}, {end:#x})"
            for leaf in [x for x in ref if start <= x < end]:
                del ref[leaf]
        check(rig, ref, probes(live, extra))
    assert rig.domain.mapped_pages == sum(ls for ls, *_ in ref.values()) >> 12


def test_leaves_follow_the_alignment_of_both_addresses():
    assert leaves(0, PHYS, G1 + M2 + K4) == [(0, PHYS, G1), (G1, PHYS + G1, M2), (G1 + M2, PHYS + G1 + M2, K4)]
    assert leaves(M2, PHYS + K4, M2) == [(M2 + i * K4, PHYS + K4 + i * K4, K4) for i in range(512)]
    assert leaves(0, PHYS + M2, G1) == [(i * M2, PHYS + M2 + i * M2, M2) for i in range(512)]
