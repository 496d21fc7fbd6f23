"""KVM's side of non-coherent DMA (virt/kvm/vfio.c, arch/x86/kvm/x86.c, vmx/vmx.c).

The kvm-vfio device recomputes one bool on every group add and delete
(kvm_vfio_update_coherency): is any file not enforced-coherent?  Since 6.2 that asks
each device's IOMMU for IOMMU_CAP_ENFORCE_CACHE_COHERENCY, which on Intel is ECAP.SC.
A 0↔1 change registers or unregisters noncoherent DMA, a counter in struct kvm; a
non-zero counter makes KVM emulate WBINVD and changes the EPT memory type of RAM.

Two memory-type models, named by what decides the type of guest RAM with noncoherent DMA:
  guest-mtrr  up to 6.10: vmx_get_mt_mask() emulates the guest's MTRRs (and CR0.CD);
  guest-pat   6.11 on: MTRRs are ignored, RAM is WB without IPAT so the guest's PAT
              decides.  "Always honor guest PAT on CPUs that support self-snoop"
              (377b2f359d1f) went further and was reverted (9d70f3fec144); what stayed is
              KVM_X86_QUIRK_IGNORE_GUEST_PAT (c9c1e20b4c7d): on by default, so guest PAT
              is ignored (WB|IPAT) unless the VM has noncoherent DMA; a VMM may disable
              it (KVM_CAP_DISABLE_QUIRKS2, as QEMU does when it has no bochs display),
              and then guest PAT is always honoured and the EPT zap on the first/last
              noncoherent device is skipped (kvm_noncoherent_dma_assignment_start_or_stop).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .journal import Journal

ACTOR = "kvm"
MODELS = ("guest-mtrr", "guest-pat")
# The names earlier releases of vtdtui used (and fixtures may say): kernel versions.
MODEL_ALIASES = {"6.10": "guest-mtrr", "6.11+": "guest-pat"}


def model_name(text: str) -> str | None:
    """The model a user's word names (its own name or a version alias), or None."""
    t = text.lower()
    return t if t in MODELS else MODEL_ALIASES.get(t)


# A file KVM_DEV_VFIO_FILE_ADD takes: a VFIO group (its number; -1 QEMU's host one)
# or, with an iommufd backend, a device's vfio cdev (/dev/vfio/devices/vfioX), named
# here by the device's BDF: QEMU adds each cdev before binding it to iommufd
# (iommufd_cdev_connect_and_bind(): iommufd_cdev_kvm_device_add()).
File = int | str


def _label(file: File) -> str:
    if isinstance(file, str):
        return f"the vfio cdev of {file}"
    return f"group {file}" if file >= 0 else "the host group"


@dataclass
class Kvm:
    journal: Journal
    model: str = "guest-pat"  # vmx_get_mt_mask(): guest MTRRs (≤6.10) or guest PAT (6.11+)
    ignore_guest_pat: bool = True  # KVM_X86_QUIRK_IGNORE_GUEST_PAT (guest-pat model), on by default
    cr0_cd: bool = False  # the guest has caches disabled
    quirk_cd_nw_cleared: bool = True  # KVM_X86_QUIRK_CD_NW_CLEARED, on by default
    noncoherent_dma_count: int = 0
    kvm_vfio_noncoherent: bool = False  # kv->noncoherent of the one kvm-vfio device
    virtio_noncoherent: bool = False  # the 2023 RFC: a device that declares it without VFIO
    files: dict[File, bool] = field(default_factory=dict)  # group or cdev → enforced coherent
    ept_zaps: int = 0

    # ------------------------------------------------------------ kvm-vfio
    def file_add(self, group: File, unit: str, enforced_coherent: Callable[[File], bool]) -> None:
        """KVM_DEV_VFIO_FILE_ADD.  `enforced_coherent(file)` is kvm_vfio_file_enforced_coherent()
        of any file held, as the hardware says now (see _update_coherency): for a group
        vfio_group_enforced_coherent(), for a cdev device_iommu_capable(dev,
        IOMMU_CAP_ENFORCE_CACHE_COHERENCY) (vfio_file_enforced_coherent())."""
        self.files[group] = True  # tested below with the others
        self._update_coherency(unit, f"{_label(group)} added", enforced_coherent)

    def file_del(self, group: File, unit: str, enforced_coherent: Callable[[File], bool]) -> None:
        self.files.pop(group, None)
        self._update_coherency(unit, f"{_label(group)} deleted", enforced_coherent)

    def _update_coherency(self, unit: str, why: str, enforced_coherent: Callable[[File], bool]) -> None:
        """kvm_vfio_update_coherency(): every file held is tested again, not only the one
        added or deleted ("we retest each group"), so a unit's ECAP.SC that changed since
        a file was added counts from this update on."""
        self.files = {g: enforced_coherent(g) for g in self.files}
        bad = sorted((g for g, ok in self.files.items() if not ok), key=str)
        noncoherent = bool(bad)
        names = ", ".join(map(_label, bad))
        if noncoherent == self.kvm_vfio_noncoherent:
            every = "every file" if any(isinstance(f, str) for f in self.files) else "every group"
            state = f"{names} still not enforced-coherent" if bad else f"{every} is enforced-coherent"
            op = "noncoherent-dma-register" if noncoherent else "noncoherent-dma-unregister"
            self.journal.skipped(unit, ACTOR, op, "kvm-coherency", f"{why}: no change, {state}")
            return
        self.kvm_vfio_noncoherent = noncoherent
        if noncoherent:
            self._register(unit, f"{why}: {names} behind a unit without ECAP.SC")
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
        """kvm_arch_register_noncoherent_dma(): the 0→1 edge may zap the EPT."""
        self.noncoherent_dma_count += 1
        self.journal.issued(unit, ACTOR, "noncoherent-dma-register", "kvm-coherency", why,
                            detail=f"count {self.noncoherent_dma_count}")
        if self.noncoherent_dma_count == 1:
            self._start_or_stop(unit, "0→1")

    def _unregister(self, unit: str, why: str) -> None:
        self.noncoherent_dma_count -= 1
        self.journal.issued(unit, ACTOR, "noncoherent-dma-unregister", "kvm-coherency", why,
                            detail=f"count {self.noncoherent_dma_count}")
        if self.noncoherent_dma_count == 0:
            self._start_or_stop(unit, "1→0")

    @property
    def may_ignore_guest_pat(self) -> bool:
        """kvm_mmu_may_ignore_guest_pat(): with EPT on, true in the guest-MTRR model (6.8–6.10:
        shadow_memtype_mask) and, since the quirk, iff KVM_X86_QUIRK_IGNORE_GUEST_PAT is on."""
        return self.model == "guest-mtrr" or self.ignore_guest_pat

    def _start_or_stop(self, unit: str, edge: str) -> None:
        """kvm_noncoherent_dma_assignment_start_or_stop(): zap every SPTE so the new
        "ignore PAT" setting applies — only where KVM may ignore guest PAT at all."""
        if self.may_ignore_guest_pat:
            self.ept_zaps += 1
            self.journal.issued(unit, ACTOR, "ept-zap", "kvm-ept-zap",
                                f"{edge}: EPT zapped so the new memory type (IPAT bit) applies", detail=edge)
        else:
            self.journal.skipped(unit, ACTOR, "ept-zap", "kvm-ept-zap",
                                 f"{edge}: KVM_X86_QUIRK_IGNORE_GUEST_PAT is off, guest PAT is honoured "
                                 "with or without noncoherent DMA: nothing to zap", detail=edge)

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
        if self.model == "guest-mtrr":
            if not self.has_noncoherent_dma:
                return "WB|IPAT"  # guest PAT ignored: DMA snoops anyway
            if self.cr0_cd:
                return "WB" if self.quirk_cd_nw_cleared else "UC|IPAT"
            return "guest MTRR (WB for RAM)"
        # vmx_ignore_guest_pat(): !noncoherent DMA && the quirk.
        if not self.has_noncoherent_dma and self.ignore_guest_pat:
            return "WB|IPAT"
        return "WB"  # MTRRs ignored, guest PAT honoured

    def to_json(self) -> dict:
        return {
            "noncoherent_dma_count": self.noncoherent_dma_count,
            "emulate_wbinvd": self.emulate_wbinvd,
            "ept_memtype_ram": self.ept_memtype(),
            "ept_memtype_mmio": self.ept_memtype(mmio=True),
            "model": self.model,
            "ignore_guest_pat": self.ignore_guest_pat,
            "cr0_cd": self.cr0_cd,
            "virtio_noncoherent": self.virtio_noncoherent,
            "ept_zaps": self.ept_zaps,
        }
