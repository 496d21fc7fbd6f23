"""KVM's side of non-coherent DMA (virt/kvm/vfio.c, arch/x86/kvm/x86.c, vmx/vmx.c).

The kvm-vfio device recomputes one bool on every group add and delete
(kvm_vfio_update_coherency): is any file not enforced-coherent?  Since 6.2 that asks
each device's IOMMU for IOMMU_CAP_ENFORCE_CACHE_COHERENCY, which on Intel is ECAP.SC.
A 0↔1 change registers or unregisters noncoherent DMA, a counter in struct kvm; a
non-zero counter makes KVM emulate WBINVD and changes the EPT memory type of RAM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .journal import Journal

ACTOR = "kvm"
MODELS = ("6.10", "6.11+")


def _label(group: int) -> str:
    return f"group {group}" if group >= 0 else "the host group"


@dataclass
class Kvm:
    journal: Journal
    model: str = "6.11+"  # vmx_get_mt_mask() before or after the 6.11 rework
    cr0_cd: bool = False  # the guest has caches disabled
    quirk_cd_nw_cleared: bool = True  # KVM_X86_QUIRK_CD_NW_CLEARED, on by default
    noncoherent_dma_count: int = 0
    kvm_vfio_noncoherent: bool = False  # kv->noncoherent of the one kvm-vfio device
    virtio_noncoherent: bool = False  # the 2023 RFC: a device that declares it without VFIO
    files: dict[int, bool] = field(default_factory=dict)  # group → enforced coherent
    ept_zaps: int = 0

    # ------------------------------------------------------------ kvm-vfio
    def file_add(self, group: int, unit: str, enforced_coherent: Callable[[int], bool]) -> None:
        """KVM_DEV_VFIO_FILE_ADD.  `enforced_coherent(group)` is kvm_vfio_file_enforced_coherent()
        of any file held, as the hardware says now (see _update_coherency)."""
        self.files[group] = True  # tested below with the others
        self._update_coherency(unit, f"{_label(group)} added", enforced_coherent)

    def file_del(self, group: int, unit: str, enforced_coherent: Callable[[int], bool]) -> None:
        self.files.pop(group, None)
        self._update_coherency(unit, f"{_label(group)} deleted", enforced_coherent)

    def _update_coherency(self, unit: str, why: str, enforced_coherent: Callable[[int], bool]) -> None:
        """kvm_vfio_update_coherency(): every file held is tested again, not only the one
        added or deleted ("we retest each group"), so a unit's ECAP.SC that changed since
        a file was added counts from this update on."""
        self.files = {g: enforced_coherent(g) for g in self.files}
        bad = sorted(g for g, ok in self.files.items() if not ok)
        noncoherent = bool(bad)
        if noncoherent == self.kvm_vfio_noncoherent:
            state = (f"group(s) {', '.join(map(str, bad))} still not enforced-coherent" if bad
                     else "every group is enforced-coherent")
            op = "noncoherent-dma-register" if noncoherent else "noncoherent-dma-unregister"
            self.journal.skipped(unit, ACTOR, op, "kvm-coherency", f"{why}: no change, {state}")
            return
        self.kvm_vfio_noncoherent = noncoherent
        if noncoherent:
            self._register(unit, f"{why}: group(s) {', '.join(map(str, bad))} behind a unit without ECAP.SC")
        else:
            self._unregister(unit, f"{why}: no non-coherent group left")

    def set_virtio_noncoherent(self, on: bool, unit: str) -> None:
        """The 2023 RFC: a virtio (e.g. virtio-gpu) device declaring noncoherent DMA."""
        if on == self.virtio_noncoherent:
            return
        self.virtio_noncoherent = on
        if on:
            self._register(unit, "virtio device declares noncoherent DMA (2023 RFC, not upstream)")
        else:
            self._unregister(unit, "virtio device withdraws noncoherent DMA (2023 RFC, not upstream)")

    def _register(self, unit: str, why: str) -> None:
        """kvm_arch_register_noncoherent_dma(): the 0→1 edge zaps the EPT."""
        self.noncoherent_dma_count += 1
        zap = self.noncoherent_dma_count == 1
        self.ept_zaps += zap
        self.journal.issued(unit, ACTOR, "noncoherent-dma-register", "kvm-coherency",
                            why + ("; 0→1: EPT zapped so the new memory type applies" if zap else ""),
                            detail=f"count {self.noncoherent_dma_count}")

    def _unregister(self, unit: str, why: str) -> None:
        self.noncoherent_dma_count -= 1
        zap = self.noncoherent_dma_count == 0
        self.ept_zaps += zap
        self.journal.issued(unit, ACTOR, "noncoherent-dma-unregister", "kvm-coherency",
                            why + ("; 1→0: EPT zapped so the new memory type applies" if zap else ""),
                            detail=f"count {self.noncoherent_dma_count}")

    # ------------------------------------------------------------ consequences
    @property
    def has_noncoherent_dma(self) -> bool:
        """kvm_arch_has_noncoherent_dma()."""
        return self.noncoherent_dma_count > 0

    @property
    def emulate_wbinvd(self) -> bool:
        """need_emulate_wbinvd(): a guest WBINVD really flushes caches only then."""
        return self.has_noncoherent_dma

    def ept_memtype(self, mmio: bool = False) -> str:
        """vmx_get_mt_mask() for RAM (or MMIO) under the selected model."""
        if mmio:
            return "UC"
        if not self.has_noncoherent_dma:
            return "WB|IPAT"  # guest PAT ignored: DMA snoops anyway
        if self.model == "6.10":
            if self.cr0_cd:
                return "WB" if self.quirk_cd_nw_cleared else "UC|IPAT"
            return "guest MTRR (WB for RAM)"
        return "WB"  # 6.11+: MTRRs ignored, guest PAT honoured

    def to_json(self) -> dict:
        return {
            "noncoherent_dma_count": self.noncoherent_dma_count,
            "emulate_wbinvd": self.emulate_wbinvd,
            "ept_memtype_ram": self.ept_memtype(),
            "ept_memtype_mmio": self.ept_memtype(mmio=True),
            "model": self.model,
            "cr0_cd": self.cr0_cd,
            "virtio_noncoherent": self.virtio_noncoherent,
            "ept_zaps": self.ept_zaps,
        }
