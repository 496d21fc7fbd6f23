"""QEMU's intel-iommu (hw/i386/intel_iommu.c) keeping a host shadow for an assigned device.

The guest's unit is QEMU's vIOMMU; an assigned (VFIO) device's DMA never goes
through it, only through the host IOMMU.  So QEMU turns each guest invalidation into
VFIO_IOMMU_MAP_DMA / UNMAP_DMA on the host container:
  context-cache invalidation  → vtd_address_space_sync(): walk all, sync the shadow
  IOTLB PSI                   → vtd_iotlb_page_invalidate_notify(): walk that range
  IOTLB DSI / global          → vtd_address_space_sync(): walk all
Without caching mode a guest never invalidates a not-present → present change, so
QEMU refuses device assignment; the what-if `force` lets it proceed and shows why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..hw import regs
from ..hw.caches import fm_mask
from ..hw.entries import PTE_ADDR_MASK, bdf_str, level_shift
from ..hw.unit import DmarUnit
from .journal import Journal
from .vfio import Group, VfioContainer, VfioError

ACTOR = "qemu"
CM_REQUIRED = "Device assignment is not allowed without enabling caching-mode=on for Intel IOMMU."
SC_UNSUPPORTED = "Snoop Control with vhost or VFIO is not supported"


@dataclass
class QemuViommu:
    journal: Journal
    guest_unit: DmarUnit
    assigned_sid: int  # the assigned device as the guest sees it
    host_vfio: VfioContainer
    host_group: Group
    host_unit: DmarUnit
    gpa_to_hpa: int  # guest RAM starts at this host physical address
    force: bool = False  # what-if: assign the device although CM=0
    traps: int = 0  # guest invalidations that exited to QEMU
    shadow: dict[int, tuple[int, int, bool, bool]] = field(default_factory=dict)  # iova → (size, gpa, r, w)
    refused: bool = False
    sc_refused: bool = False  # snoop-control=on: refused whatever `force` says

    @property
    def refusing(self) -> bool:
        """Is the assigned device's shadow refused now (CM=0 unforced, or SC=1)?"""
        return (self.refused and not self.force) or self.sc_refused

    def attach(self) -> None:
        self.guest_unit.invalidation_listeners.append(self.on_invalidation)

    # ------------------------------------------------------------ policy
    def assignment_allowed(self) -> bool:
        """vtd_iommu_notify_flag_changed(): snoop control refuses any notifier (checked
        first); a MAP notifier needs caching mode."""
        if self.guest_unit.sc:
            if not self.sc_refused:
                self.journal.skipped(self.host_unit.name, ACTOR, "shadow-map", "qemu-sc-unsupported", SC_UNSUPPORTED,
                                     detail=f"guest {self.guest_unit.name} ECAP.SC=1 (snoop-control=on)")
            self.sc_refused = True
            return False
        self.sc_refused = False
        if self.guest_unit.cm:
            self.refused = False
            return True
        if self.force:
            return True
        if not self.refused:
            self.journal.skipped(self.host_unit.name, ACTOR, "shadow-map", "qemu-cm-required", CM_REQUIRED,
                                 detail=f"guest {self.guest_unit.name} CAP.CM=0")
        self.refused = True
        return False

    def on_invalidation(self, unit: DmarUnit, kind: str, f: dict) -> None:
        self.traps += 1
        if not self.assignment_allowed():
            return
        if kind == "context":
            if f["gran"] == regs.GRAN_DEVICE:
                mask = fm_mask(f["fm"])
                if f["source_id"] & mask != self.assigned_sid & mask:
                    return
            self.sync(0, None, f"guest context-cache invalidation ({('', 'global', 'domain', 'device')[f['gran']]})")
            return
        ce = self._context()
        if ce is None:
            return
        if f["gran"] == regs.GRAN_GLOBAL or (f["did"] == ce.did and f["gran"] == regs.GRAN_DOMAIN):
            self.sync(0, None, f"guest IOTLB {'global' if f['gran'] == regs.GRAN_GLOBAL else 'domain-selective'} invalidation")
        elif f["gran"] == regs.GRAN_PAGE and f["did"] == ce.did:
            span = 1 << (12 + f["am"])
            start = f["addr"] & ~(span - 1)
            self.sync(start, start + span, f"guest PSI {start:#x} AM {f['am']}")

    def _context(self):
        cr = self.guest_unit.read_context(self.assigned_sid, self.guest_unit.cpu_read_q)
        return cr.entry if cr.ok else None

    # ------------------------------------------------------------ shadow sync
    def replay(self) -> None:
        """vtd_iommu_replay(): when VFIO registers its notifier, map what exists."""
        if self.assignment_allowed():
            self.sync(0, None, "replay on notifier registration")

    def sync(self, start: int, end: int | None, why: str) -> None:
        """vtd_sync_shadow_page_table_range() over [start, end) (None: everything)."""
        want = self.guest_mappings(start, end)
        lo, hi = start, (1 << 64) if end is None else end
        gone = [iova for iova in self.shadow if lo <= iova < hi and self.shadow[iova] != want.get(iova)]
        new = [iova for iova, m in want.items() if self.shadow.get(iova) != m]
        host = self.host_unit.name
        for iova in sorted(gone):
            size = self.shadow.pop(iova)[0]
            try:
                self.host_vfio.unmap_dma(iova, size)
            except VfioError as exc:
                self.journal.skipped(host, ACTOR, "shadow-unmap", "qemu-shadow", f"{why}: host refused: {exc}")
                continue
            self.journal.issued(host, ACTOR, "shadow-unmap", "qemu-shadow",
                                f"{why}: guest no longer maps it → VFIO_IOMMU_UNMAP_DMA", "page", f"{iova:#x}+{size:#x}")
        for iova in sorted(new):
            size, gpa, r, w = want[iova]
            try:
                self.host_vfio.map_dma(iova, size, gpa + self.gpa_to_hpa, r, w)
            except VfioError as exc:
                self.journal.skipped(host, ACTOR, "shadow-map", "qemu-shadow", f"{why}: host refused: {exc}")
                continue
            self.shadow[iova] = want[iova]
            self.journal.issued(host, ACTOR, "shadow-map", "qemu-shadow",
                                f"{why}: guest maps {iova:#x} → GPA {gpa:#x} → VFIO_IOMMU_MAP_DMA",
                                "page", f"{iova:#x}+{size:#x} → HPA {gpa + self.gpa_to_hpa:#x}")
        if not gone and not new:
            self.journal.skipped(host, ACTOR, "shadow-map", "qemu-shadow", f"{why}: shadow already matches the guest")

    def guest_mappings(self, start: int = 0, end: int | None = None) -> dict[int, tuple[int, int, bool, bool]]:
        """What the guest's tables map for the assigned device now: iova → (size, gpa, r, w)."""
        ce = self._context()
        want: dict[int, tuple[int, int, bool, bool]] = {}
        if ce is not None and ce.tt != 2:
            limit = 1 << min(self.guest_unit.mgaw_bits, ce.agaw)
            self._walk(ce.slptptr, ce.levels, 0, start, limit if end is None else min(end, limit), True, True, want)
        return want

    def _walk(self, table, level, base, start, end, r, w, out) -> None:
        """vtd_page_walk_level(): present leaves in [start, end) with stacked permissions."""
        read = self.guest_unit.cpu_read_q
        span = 1 << level_shift(level)
        first = max(0, (start - base) // span)
        for i in range(first, 512):
            iova = base + i * span
            if iova >= end:
                break
            pte = read(table + i * 8)
            if not pte & 3:
                continue
            pr, pw = r and bool(pte & 1), w and bool(pte & 2)
            addr = pte & PTE_ADDR_MASK
            if level == 1 or pte & (1 << 7):
                if iova + span > start:
                    out[iova] = (span, addr & ~(span - 1), pr, pw)
            else:
                self._walk(addr, level - 1, iova, start, end, pr, pw, out)

    def to_json(self) -> dict:
        return {
            "assigned": bdf_str(self.assigned_sid),
            "caching_mode": self.guest_unit.cm,
            "refused": self.refusing,
            "force": self.force,
            "traps": self.traps,
            "shadow": [{"iova": f"0x{i:x}", "size": f"0x{s:x}", "gpa": f"0x{g:x}"}
                       for i, (s, g, _, _) in sorted(self.shadow.items())],
        }
