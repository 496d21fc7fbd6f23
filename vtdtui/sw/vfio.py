"""VFIO type1 (drivers/vfio/vfio_iommu_type1.c): a container, its domains, its DMA list.

Reuse policies for vfio_iommu_type1_attach_group():
  mainline      reuse an existing domain only when the ops match AND
                enforce_cache_coherency is equal (what the kernel does);
  prefer-reuse  reuse whenever the ops match (the 2022 patch "Prefer to reuse domains
                vs match enforced cache coherency", posted, not merged).
Optional: the 2024 proposal to flush CPU caches of pages mapped into a non-coherent
domain ("vfio/type1: Flush CPU caches on DMA pages in non-coherent domains"; flush on
map, on replay and on unpin).  A vfio_dma is flushed once, when it first lands in a
non-coherent domain: vfio_dma.is_noncoherent records that, and a replay into a second
non-coherent domain skips it (`update_to_noncoherent_required = !domain->enforce_cache_coherency
&& !dma->is_noncoherent`, named set_noncoherent in review).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..hw.unit import DmarUnit
from .journal import Journal
from .linux import DmarDomain, DriverError, IntelIommuDriver

ACTOR = "vfio"
POLICIES = ("mainline", "prefer-reuse")


class VfioError(Exception):
    """An ioctl VFIO would fail (-EINVAL, -EEXIST ...)."""


@dataclass
class VfioDomain:
    domain: DmarDomain
    enforce_cache_coherency: bool
    groups: list[int] = field(default_factory=list)
    unit: str = ""  # the unit it was allocated for: events name it once no device is left


@dataclass
class VfioDma:
    iova: int
    size: int
    vaddr_hpa: int  # where the pinned pages are (the model's stand-in for vaddr)
    r: bool
    w: bool
    is_noncoherent: bool = False


@dataclass
class Group:
    """An IOMMU group: devices (source ids) behind one unit."""

    id: int
    unit: str
    devices: list[int]

    @property
    def label(self) -> str:
        # Negative ids are groups the scenario builds on its own (the host group
        # behind a vIOMMU's assigned device), not numbered groups a user picks.
        return f"group {self.id}" if self.id >= 0 else "the host group"


class VfioContainer:
    def __init__(self, journal: Journal, driver: IntelIommuDriver, *, policy: str = "mainline"):
        self.journal = journal
        self.driver = driver
        self.policy = policy
        self.flush_noncoherent = False  # the 2024 proposal, off as in mainline
        self.domains: list[VfioDomain] = []
        self.dmas: list[VfioDma] = []

    # ------------------------------------------------------------ helpers
    def _unit(self, g: Group) -> DmarUnit:
        return self.driver.units[g.unit]

    def domain_of(self, group_id: int) -> VfioDomain | None:
        for vd in self.domains:
            if group_id in vd.groups:
                return vd
        return None

    def cc_iommu(self) -> bool:
        """VFIO_DMA_CC_IOMMU: every domain enforces coherency (true when there are none)."""
        return all(vd.enforce_cache_coherency for vd in self.domains)

    def _attach(self, d: DmarDomain, g: Group) -> None:
        """iommu_attach_group(): every device of the group into `d`."""
        unit = self._unit(g)
        done = []
        try:
            for sid in g.devices:
                self.driver.attach_device(d, unit, sid)
                done.append(sid)
        except DriverError:
            for sid in done:
                self.driver.detach_device(d, unit, sid)
            raise

    def _detach(self, d: DmarDomain, g: Group) -> None:
        unit = self._unit(g)
        for sid in g.devices:
            self.driver.detach_device(d, unit, sid)

    # ------------------------------------------------------------ attach / detach
    def attach_group(self, g: Group) -> VfioDomain:
        """vfio_iommu_type1_attach_group()."""
        if self.domain_of(g.id) is not None:
            raise VfioError(f"{g.label} is already in the container (-EINVAL)")
        unit = self._unit(g)
        new = self.driver.domain_alloc("vfio", unit)
        try:
            self._attach(new, g)
        except DriverError as exc:
            self.driver.domain_free(new)
            raise VfioError(f"{g.label}: {exc}") from None
        ecc = self.driver.enforce_cache_coherency(new)
        vnew = VfioDomain(new, ecc, unit=unit.name)
        for vd in self.domains:
            same_cc = vd.enforce_cache_coherency == ecc
            if self.policy == "mainline" and not same_cc:
                self.journal.skipped(
                    unit.name, ACTOR, "domain-reuse", "vfio-reuse",
                    f"mainline: domain {vd.domain.id} has enforce_cache_coherency="
                    f"{str(vd.enforce_cache_coherency).lower()}, {g.label} needs {str(ecc).lower()}",
                    "domain", g.label)
                continue
            # iommu_detach_group() from the new domain, try the existing one.
            self._detach(new, g)
            try:
                self._attach(vd.domain, g)
            except DriverError as exc:
                self.journal.skipped(unit.name, ACTOR, "domain-reuse", "vfio-reuse",
                                     f"domain {vd.domain.id} refused the group: {exc}", "domain", g.label)
                self._attach(new, g)
                continue
            why = ("ops and enforce_cache_coherency match" if same_cc else
                   "prefer-reuse: ops match; coherency differs but KVM ORs it over all devices anyway")
            self.journal.issued(unit.name, ACTOR, "domain-reuse", "vfio-reuse",
                                f"{g.label} joins domain {vd.domain.id}: {why}", "domain", g.label)
            self.driver.domain_free(new)
            vd.groups.append(g.id)
            return vd
        self.journal.issued(unit.name, ACTOR, "domain-reuse", "vfio-reuse",
                            f"no compatible domain: {g.label} keeps new domain {new.id}"
                            + (f", replaying {len(self.dmas)} mapping(s)" if self.dmas else ""),
                            "domain", g.label)
        vnew.groups.append(g.id)
        self.domains.append(vnew)
        self._replay(vnew)
        return vnew

    def _replay(self, vd: VfioDomain) -> None:
        """vfio_iommu_replay(): every existing vfio_dma into the new domain."""
        unit = self._unit_of(vd)
        for dma in self.dmas:
            if vd.enforce_cache_coherency:
                pass
            elif dma.is_noncoherent:
                self.journal.skipped(unit, ACTOR, "cpu-cache-flush", "vfio-noncoherent-flush",
                                     "2024 proposal: replay into a non-coherent domain, but the pages were "
                                     "flushed when first mapped non-coherently (dma->is_noncoherent)",
                                     "page", f"{dma.iova:#x}+{dma.size:#x}")
            else:
                self._cpu_flush(dma, "replay into a non-coherent domain", unit)
            self.driver.map_range(vd.domain, dma.iova, dma.vaddr_hpa, dma.size, dma.r, dma.w)

    def detach_group(self, g: Group) -> None:
        """vfio_iommu_type1_detach_group(): the domain goes with its last group; the
        DMA list goes with the last domain (vfio_iommu_unmap_unpin_all)."""
        vd = self.domain_of(g.id)
        if vd is None:
            raise VfioError(f"{g.label} is not in the container (-ENODEV)")
        self._detach(vd.domain, g)
        vd.groups.remove(g.id)
        if vd.groups:
            return
        if len(self.domains) == 1:
            for dma in self.dmas:
                self.driver.unmap_range(vd.domain, dma.iova, dma.size, lazy=False)
                self._unpin(dma)
            self.dmas.clear()
        self.domains.remove(vd)
        self.driver.domain_free(vd.domain)

    # ------------------------------------------------------------ DMA map / unmap
    def map_dma(self, iova: int, size: int, hpa: int, r: bool, w: bool) -> VfioDma:
        """VFIO_IOMMU_MAP_DMA: pin, then iommu_map() into every domain."""
        if not self.domains:
            raise VfioError("the container has no IOMMU domain yet: attach a group first (-EINVAL)")
        for dma in self.dmas:
            if dma.iova < iova + size and iova < dma.iova + dma.size:
                raise VfioError(f"{iova:#x}+{size:#x} overlaps the mapping at {dma.iova:#x}+{dma.size:#x} (-EEXIST)")
        dma = VfioDma(iova, size, hpa, r, w)
        noncoherent = [vd for vd in self.domains if not vd.enforce_cache_coherency]
        if noncoherent:
            self._cpu_flush(dma, f"mapped into non-coherent domain {noncoherent[0].domain.id}",
                            self._unit_of(noncoherent[0]))
        else:
            self.journal.skipped(self._unit_of(self.domains[0]), ACTOR, "cpu-cache-flush", "vfio-noncoherent-flush",
                                 "every domain enforces coherency: DMA snoops the CPU caches",
                                 "page", f"{iova:#x}+{size:#x}")
        mapped = []
        try:
            for vd in self.domains:
                self.driver.map_range(vd.domain, iova, hpa, size, r, w)
                mapped.append(vd)
        except DriverError as exc:
            for vd in mapped:
                self.driver.unmap_range(vd.domain, iova, size)
            raise VfioError(str(exc)) from None
        self.dmas.append(dma)
        self.dmas.sort(key=lambda x: x.iova)
        return dma

    def _unit_of(self, vd: VfioDomain) -> str:
        """The unit a VFIO decision about `vd` acts on: the unit its domain is attached to."""
        return next(iter(vd.domain.dids), None) or vd.unit

    def unmap_dma(self, iova: int, size: int) -> int:
        """VFIO_IOMMU_UNMAP_DMA (type1v2): whole mappings only; returns bytes unmapped."""
        hit = [d for d in self.dmas if d.iova < iova + size and iova < d.iova + d.size]
        if not hit:
            raise VfioError(f"nothing is mapped in {iova:#x}+{size:#x} (VFIO unmaps 0 bytes)")
        first, last = hit[0], hit[-1]
        if first.iova < iova or last.iova + last.size > iova + size:
            raise VfioError(
                f"{iova:#x}+{size:#x} would split the mapping at {first.iova:#x}+{first.size:#x} "
                f"(type1v2 refuses to bisect a mapping, -EINVAL)")
        total = 0
        for dma in hit:
            for vd in self.domains:
                self.driver.unmap_range(vd.domain, dma.iova, dma.size, lazy=False)
            self._unpin(dma)
            self.dmas.remove(dma)
            total += dma.size
        return total

    # ------------------------------------------------------------ the 2024 proposal
    def _cpu_flush(self, dma: VfioDma, why: str, unit: str) -> None:
        detail = f"{dma.iova:#x}+{dma.size:#x}"
        if self.flush_noncoherent:
            dma.is_noncoherent = True
            self.driver.cache.clflush(dma.vaddr_hpa, dma.size)
            self.journal.issued(unit, ACTOR, "cpu-cache-flush", "vfio-noncoherent-flush",
                                f"2024 proposal: {why}: clean the pages so non-snooped DMA sees them", "page", detail)
        else:
            self.journal.skipped(unit, ACTOR, "cpu-cache-flush", "vfio-noncoherent-flush",
                                 f"mainline: no flush though {why} (the 2024 proposal would flush)", "page", detail)

    def _unpin(self, dma: VfioDma) -> None:
        if dma.is_noncoherent and self.flush_noncoherent:
            self.driver.cache.clflush(dma.vaddr_hpa, dma.size)
            noncoherent = [vd for vd in self.domains if not vd.enforce_cache_coherency] or self.domains
            self.journal.issued(self._unit_of(noncoherent[0]), ACTOR, "cpu-cache-flush", "vfio-noncoherent-flush",
                                "2024 proposal: unpin of a page once mapped non-coherently", "page",
                                f"{dma.iova:#x}+{dma.size:#x}")

