"""QEMU's intel-iommu with x-flts=on and an iommufd backend: nesting instead of shadowing.

-device intel-iommu,x-scalable-mode=on,x-flts=on,caching-mode=on and
-device vfio-pci,host=...,iommufd=iommufd0.  The guest's unit reports first-stage
translation only (vtd_cap_init: SMTS|FSTS, CAP.FS1GP), so the guest's Linux builds
first-stage tables; the host IOMMU walks them itself, nested over a second stage that
maps all guest RAM (GPA → HPA).  QEMU keeps no shadow and sees no guest map:
  device_add (vfio_realize)   → iommufd_cdev_attach(): VFIO_DEVICE_BIND_IOMMUFD, the
                                container's IOAS, iommufd_cdev_autodomains_get() with
                                IOMMU_HWPT_ALLOC_NEST_PARENT (the vIOMMU's
                                VIOMMU_FLAG_WANT_NESTING_PARENT, "vfio/iommufd: Force
                                creating nesting parent HWPT"), attach; the device stays in
                                the system address space ("Stick to system MR ... when
                                x-flts=on"), so VFIO's memory listener maps guest RAM into
                                the IOAS; then vtd_dev_set_iommu_device(): caching mode,
                                vtd_check_hiod(), vtd_check_hiod_accel()
  PASID-cache invalidation   → vtd_pasid_cache_sync(): re-read the device's PASID entry;
                                if it changed, vtd_propagate_guest_pasid(): first stage →
                                vtd_create_fs_hwpt() (a nested HWPT, IOMMU_HWPT_DATA_VTD_S1)
                                and attach, pass-through → the parent, gone → detach
  context-cache invalidation → the same sync (vtd_pasid_cache_devsi() /
                                vtd_replay_pasid_bindings_all(), for guests that skip the
                                PASID-cache flush)
  P_IOTLB                    → vtd_flush_host_piotlb_all_locked(): IOMMU_HWPT_INVALIDATE
                                on the nested HWPT when the cached PASID entry is first
                                stage with that DID and the PASID is 0
  IOTLB (legacy descriptors) → QEMU's own IOTLB and MAP notifiers only: nothing for the host
Sources: qemu/qemu@554a719e057b hw/i386/intel_iommu_accel.c (2026, the merged series
with vtd_flush_host_piotlb_all_locked; qemu/qemu@0686ac68 is the same file one patch
earlier, still ending vtd_check_hiod_accel in an error); the v3+ series mails for
intel_iommu.c (vtd_pasid_cache_sync_locked, vtd_process_pasid_desc, "Replay pasid
bindings after context cache invalidation", PULL 2026-01-13) and hw/vfio/iommufd.c
("Force creating nesting parent HWPT", 2025-09).
"""

from __future__ import annotations

from collections.abc import Callable

from ..hw import regs
from ..hw.entries import bdf_str
from ..hw.sm_entries import PGTT_FL_ONLY, PGTT_PT, PasidEntry
from ..hw.unit import DmarUnit
from .iommufd import Iommufd, IommufdError
from .iommufd_uapi import (IOMMU_HWPT_ALLOC_DIRTY_TRACKING, IOMMU_HWPT_ALLOC_NEST_PARENT,
                           IOMMU_HWPT_DATA_VTD_S1, IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, IOMMU_VTD_INV_FLAGS_LEAF,
                           IOMMU_VTD_S1_EAFE, IOMMU_VTD_S1_SRE, IOMMU_VTD_S1_WPE, U64_MAX, VtdS1,
                           VtdS1Invalidate)
from .journal import Journal
from .qemu import ACTOR, CM_REQUIRED, ENOTSUP_TEXT, FLTS_NEEDS_IOMMUFD, QEMU, SC_UNSUPPORTED, AssignedDevice
from .vfio import Group

# vtd_check_hiod_accel() (qemu/qemu@554a719e).  The v1-v3 drafts (2025) also checked
# ECAP.NEST there ("Host IOMMU doesn't support nested translation", kept as NEST_UNSUPPORTED_OLD);
# the merged code dropped it (Yi Liu's review: the nest parent's allocation fails
# anyway), so a host without NEST now refuses at IOMMU_HWPT_ALLOC: QEMU prints
# iommufd_backend_alloc_hwpt()'s "Failed to allocate hwpt" with strerror(errno).
FS1GP_UNSUPPORTED = "First stage 1GB large page is unsupported by host IOMMU"
BRIDGE_UNSUPPORTED = "Host device downstream to a PCI bridge is unsupported when x-flts=on"
NEST_UNSUPPORTED_OLD = "Host IOMMU doesn't support nested translation"
HWPT_ALLOC_FAILED = "Failed to allocate hwpt"
# vtd_pasid_cache_sync_locked(): error_reportf_err(local_err, "%s", err_prefix).
ATTACH_FAILED, DETACH_FAILED, REPLACE_FAILED = ("Attaching to HWPT failed: ", "Detaching from HWPT failed: ",
                                                "Replacing HWPT attachment failed: ")
RID_PASID = 0  # QEMU's PASID_0: only the RID_PASID address space is handled
_STRERROR = {"EOPNOTSUPP": "Operation not supported", "EINVAL": "Invalid argument", "ENOMEM": "Cannot allocate memory",
             "EBUSY": "Device or resource busy", "ENOENT": "No such file or directory", "ENODEV": "No such device"}


def _strerror(exc: IommufdError) -> str:
    """strerror() of the errno the ioctl failed with (IommufdError.errno, "-EINVAL")."""
    return _STRERROR.get((exc.errno or "").lstrip("-"), str(exc))


def fs_aw(pe: PasidEntry) -> int:
    """vtd_pe_get_fs_aw(): 48 + FLPM * 9 (4- or 5-level first stage)."""
    return 48 + 9 * pe.flpm


def vtd_s1(pe: PasidEntry) -> VtdS1:
    """vtd_create_fs_hwpt(): struct iommu_hwpt_vtd_s1 from the guest's PASID entry."""
    flags = ((IOMMU_VTD_S1_SRE if pe.sre else 0) | (IOMMU_VTD_S1_WPE if pe.wpe else 0)
             | (IOMMU_VTD_S1_EAFE if pe.eafe else 0))
    return VtdS1(flags, pe.fsptptr, fs_aw(pe))


class QemuAccel(AssignedDevice):
    """QEMU's vIOMMU with x-flts=on for one assigned device (the Machine's `qemu`, as
    QemuViommu without x-flts).  `iommufd` is the host kernel's; guest RAM [0,
    guest_ram) is host RAM at gpa_to_hpa."""

    NESTING = True  # see AssignedDevice.NESTING

    def __init__(self, journal: Journal, guest_unit: DmarUnit, assigned_sid: int, iommufd: Iommufd,
                 host_group: Group, host_unit: DmarUnit, gpa_to_hpa: int, guest_ram: int, *,
                 host_group_no: int = 1, pci_bridge: bool = False, fs1gp: bool = True, force: bool = False,
                 backend: str = "iommufd"):
        self.journal = journal
        self.guest_unit = guest_unit
        self.assigned_sid = assigned_sid
        self.iommufd = iommufd
        self.host_group = host_group
        self.host_unit = host_unit
        self.gpa_to_hpa = gpa_to_hpa
        self.guest_ram = guest_ram
        self.host_group_no = host_group_no
        self.pci_bridge = pci_bridge  # the vfio-pci device sits behind a PCI bridge in the VM
        self.fs1gp = fs1gp  # -device intel-iommu,fs1gp= (default on: CAP.FS1GP to the guest)
        self.force = force  # what-if: a QEMU without the caching-mode check
        self.backend = backend  # "iommufd" or "type1" (a legacy VFIO container)
        self.plugged = False
        self.hotplug_error = ""
        self.traps = 0
        self.dev_id: int | None = None  # VFIO_DEVICE_BIND_IOMMUFD's out_devid
        self.ioas_id: int | None = None  # the container's IOAS
        self.parent_hwpt: int | None = None  # idev->hwpt_id: the NEST_PARENT stage 2
        self.fs_hwpt: int | None = None  # vtd_as->fs_hwpt_id: the nested HWPT
        self.pc_entry: PasidEntry | None = None  # vtd_as->pasid_cache_entry (None: not valid)

    # ------------------------------------------------------------ the QemuViommu surface
    @property
    def shadow(self) -> dict:
        """No shadow: the host walks the guest's tables (kept for the views' sake)."""
        return {}

    def host_domains(self) -> list:
        """The host domains of the device: the nest parent, then the nested one."""
        out = []
        for hid in (self.parent_hwpt, self.fs_hwpt):
            obj = self.iommufd.objects.get(hid) if hid is not None else None
            if obj is not None:
                out.append(obj.domain)
        return out

    # ------------------------------------------------------------ refusals
    def _host_caps(self) -> tuple[int, int]:
        info = self.iommufd.driver.hw_info(self.host_unit)
        return info.cap_reg, info.ecap_reg

    def _refusal(self) -> tuple[str, str, bool]:
        """(rule, QEMU's message without prefix, at_hwpt_alloc) in vfio_realize()'s
        order; ("", "", False) when the device would be plugged."""
        if self.backend != "iommufd":
            # A legacy container: with the guest's IOMMU on, the MAP notifier's
            # registration speaks first (as without x-flts); then set_iommu_device().
            if self.guest_unit.translation_enabled and self.guest_unit.sc:
                return "qemu-sc-unsupported", f"memory listener: {SC_UNSUPPORTED}: {ENOTSUP_TEXT}", False
            if self.cm_missing():
                return "qemu-cm-required", f"Failed to set vIOMMU: {CM_REQUIRED}", False
            return "qemu-nested-device", f"Failed to set vIOMMU: {FLTS_NEEDS_IOMMUFD}", False
        cap, ecap = self._host_caps()
        if not regs.ECAP.get(ecap, "NEST"):
            # iommufd_cdev_autodomains_get() → IOMMU_HWPT_ALLOC(NEST_PARENT): the Intel
            # driver refuses a nest parent without ECAP.NEST (-EOPNOTSUPP).
            return "qemu-nested-device", f"{HWPT_ALLOC_FAILED}: {_STRERROR['EOPNOTSUPP']}", True
        if self.cm_missing():
            return "qemu-cm-required", f"Failed to set vIOMMU: {CM_REQUIRED}", False
        host_aw = regs.CAP.get(cap, "MGAW") + 1
        if self.guest_unit.mgaw_bits > host_aw:  # vtd_check_hiod(), common check
            return "qemu-nested-device", (f"Failed to set vIOMMU: aw-bits {self.guest_unit.mgaw_bits} > "
                                          f"host aw-bits 0x{host_aw:x}"), False
        if self.fs1gp and not regs.CAP.get(cap, "FL1GP"):
            return "qemu-nested-device", f"Failed to set vIOMMU: {FS1GP_UNSUPPORTED}", False
        if self.pci_bridge:
            return "qemu-nested-device", f"Failed to set vIOMMU: {BRIDGE_UNSUPPORTED}", False
        return "", "", False

    def start_refusal(self) -> str:
        """What QEMU prints when started with the device cold-plugged ("": it runs).
        Snoop control is not checked: the device has no MAP notifier under x-flts."""
        _, why, _ = self._refusal()
        if not why:
            return ""
        opt = ",iommufd=iommufd0" if self.backend == "iommufd" else ""
        return f"QEMU would not start: {QEMU}: -device vfio-pci,host={self.host_bdf}{opt}: vfio {self.host_bdf}: {why}"

    def hotplug_refusal(self) -> tuple[str, str]:
        rule, why, _ = self._refusal()
        return (rule, f"Error: vfio {self.host_bdf}: {why}") if why else ("", "")

    # ------------------------------------------------------------ device_add / device_del
    def device_add(self, on_attached: Callable[[], None] | None = None) -> bool:
        """vfio_realize() with an iommufd backend: bind, IOAS, NEST_PARENT HWPT on it and
        attach, guest RAM mapped (the memory listener), set_iommu_device(); then the
        PASID binding the guest already has is replayed.  False if refused (journaled,
        nothing assigned).  `on_attached` adds the device to KVM's kvm-vfio device
        (iommufd_cdev_connect_and_bind() does it before the bind; the model calls it
        once the device is in, the same end state)."""
        host = self.host_unit.name
        rule, why, at_alloc = self._refusal()
        if why and not at_alloc:
            return self._refuse(rule, why)
        fd = self.iommufd
        try:
            self.dev_id = fd.bind(self.host_sid, host, self.host_group_no).id
            if self.ioas_id is None or self.ioas_id not in fd.objects:
                self.ioas_id = fd.ioas_alloc().id
            flags = IOMMU_HWPT_ALLOC_NEST_PARENT
            if self.iommufd.driver.capable(self.host_unit, "dirty_tracking"):
                flags |= IOMMU_HWPT_ALLOC_DIRTY_TRACKING  # IOMMU_HW_CAP_DIRTY_TRACKING
            self.parent_hwpt = fd.hwpt_alloc(self.dev_id, self.ioas_id, flags).id
            fd.attach(self.dev_id, self.parent_hwpt)
        except IommufdError as exc:
            self._undo_host()
            return self._refuse("qemu-nested-device", f"{HWPT_ALLOC_FAILED}: {_strerror(exc)}", str(exc))
        # vfio_listener_region_add(): guest RAM, read-write (the ERRATA_772415_SPR17
        # quirk only drops read-only sections from a nest parent).
        fd.ioas_map(self.ioas_id, 0, self.guest_ram, self.gpa_to_hpa, True, True)
        if on_attached is not None:
            on_attached()
        self.plugged, self.hotplug_error = True, ""
        self.journal.issued(host, ACTOR, "device-add", "qemu-nested-device",
                            f"vfio-pci host={self.host_bdf},iommufd=iommufd0 as {bdf_str(self.assigned_sid)}: "
                            f"dev {self.dev_id}, NEST_PARENT HWPT {self.parent_hwpt} on IOAS {self.ioas_id}, "
                            f"guest RAM GPA 0x0+{self.guest_ram:#x} → HPA {self.gpa_to_hpa:#x}"
                            + (" (what-if: no caching-mode check)" if not self.guest_unit.cm else ""))
        self.pc_entry = None
        self._sync("device_add: the guest's current PASID binding (vtd_replay_pasid_bindings_all)")
        return True

    def _refuse(self, rule: str, why: str, detail: str = "") -> bool:
        line = f"Error: vfio {self.host_bdf}: {why}"
        self.hotplug_error = line
        self.journal.skipped(self.host_unit.name, ACTOR, "device-add", rule, line,
                             detail=detail or f"guest {self.guest_unit.name} CAP.CM={int(self.guest_unit.cm)}, "
                                               f"backend {self.backend}")
        return False

    def _undo_host(self) -> None:
        """vfio_realize()'s error path / iommufd_cdev_detach(): everything back."""
        fd = self.iommufd
        if self.dev_id is not None and self.dev_id in fd.objects:
            if fd.hwpt_of(self.dev_id) is not None:
                fd.detach(self.dev_id)
        for hid in (self.fs_hwpt, self.parent_hwpt):
            if hid is not None and hid in fd.objects:
                fd.destroy(hid)
        self.fs_hwpt = self.parent_hwpt = None
        if self.ioas_id is not None and self.ioas_id in fd.objects:
            fd.ioas_unmap(self.ioas_id, 0, self.guest_ram)
            fd.destroy(self.ioas_id)
        self.ioas_id = None
        if self.dev_id is not None and self.dev_id in fd.objects:
            fd.unbind(self.dev_id)
        self.dev_id = None

    def device_del(self) -> None:
        """device_del: iommufd_cdev_detach() — detach, the HWPTs and the IOAS freed (the
        listener unmaps guest RAM), the device unbound.  The caller deletes it from
        KVM's kvm-vfio device first."""
        self.plugged = False
        self._undo_host()
        self.pc_entry = None
        self.journal.issued(self.host_unit.name, ACTOR, "device-del", "qemu-nested-device",
                            f"vfio-pci host={self.host_bdf}: detached, nested and parent HWPTs destroyed, "
                            "guest RAM unmapped, unbound from iommufd")

    # ------------------------------------------------------------ the guest's invalidations
    def on_invalidation(self, unit: DmarUnit, kind: str, f: dict) -> None:
        self.traps += 1
        if not self.plugged:
            return
        if kind == "pasid-cache":
            self._on_pasid_cache(f)
        elif kind == "piotlb":
            self._on_piotlb(f)
        elif kind == "context":
            self._on_context(f)
        elif kind == "iotlb":
            gran = {regs.GRAN_GLOBAL: "global", regs.GRAN_DOMAIN: "domain", regs.GRAN_PAGE: "page"}.get(f["gran"])
            self.journal.skipped(self.host_unit.name, ACTOR, "trap", "qemu-nested-piotlb",
                                 f"guest IOTLB invalidation ({gran}, DID {f['did']}): QEMU's own IOTLB and MAP "
                                 f"notifiers only; {bdf_str(self.assigned_sid)} has no notifier under x-flts "
                                 "(the host walks the guest's first stage): nothing for the host",
                                 "iotlb", did=f["did"])

    def _active(self) -> bool:
        """vtd_pasid_cache_sync(): `if (!s->fsts || !s->root_scalable || !s->dmar_enabled) return;`"""
        u = self.guest_unit
        return u.sm_active and u.translation_enabled

    def _on_pasid_cache(self, f: dict) -> None:
        gran, did, pasid = f["gran"], f["did"], f["pasid"]
        what = f"guest PASID-cache invalidation ({ {0: 'domain', 1: 'pasid', 3: 'global'}.get(gran, gran) }, " \
               f"DID {did}, PASID {pasid})"
        host = self.host_unit.name
        keys = dict(did=did, pasid=pasid if gran == 1 else None)
        if not self._active():
            self.journal.skipped(host, ACTOR, "trap", "qemu-nested-pasid",
                                 f"{what}: vtd_pasid_cache_sync() returns at once (guest DMAR off or not "
                                 "scalable)", "pasid-cache", **keys)
            return
        if gran == 1 and pasid != RID_PASID:
            self.journal.skipped(host, ACTOR, "trap", "qemu-nested-pasid",
                                 f"{what}: vtd_process_pasid_desc() ignores non-RID_PASID requests", "pasid-cache",
                                 **keys)
            return
        self._sync(what, did=did if gran in (0, 1) else None)

    def _on_context(self, f: dict) -> None:
        """vtd_context_device_invalidate() → vtd_pasid_cache_devsi(), or a global /
        domain request → vtd_replay_pasid_bindings_all(): a PASID sync faked as global
        ("to work with guest not following spec", e.g. Linux 6.7.0-rc2)."""
        if f["gran"] == regs.GRAN_DEVICE:
            mask = ~(0, 4, 6, 7)[f["fm"] & 3] & 0xFFFF
            if f["source_id"] & mask != self.assigned_sid & mask:
                return
            why = "guest context-cache invalidation (device): vtd_pasid_cache_devsi()"
        else:
            why = "guest context-cache invalidation (global): vtd_replay_pasid_bindings_all()"
        if self._active():
            self._sync(why)

    def _sync(self, why: str, did: int | None = None) -> None:
        """vtd_pasid_cache_sync_locked() for the assigned device, then
        vtd_propagate_guest_pasid() when the cached entry changed."""
        host = self.host_unit.name
        u = self.guest_unit
        pr = u.read_pasid_entry(self.assigned_sid, None, u.cpu_read_q) if u.sm_active else None
        if pr is None or not pr.ok:
            # vtd_dev_get_pe_from_pasid() failed: the entry is gone (or the guest left
            # scalable mode): invalidate the cached entry and unbind.
            if self.pc_entry is None:
                self.journal.skipped(host, ACTOR, "trap", "qemu-nested-pasid",
                                     f"{why}: {bdf_str(self.assigned_sid)} has no valid PASID entry and none cached",
                                     "pasid-cache", did=did)
                return
            self.pc_entry = None
            self._detach(why)
            return
        pe = pr.entry
        if did is not None:
            cached = self.pc_entry.did if self.pc_entry is not None else pe.did
            if cached != did:
                self.journal.skipped(host, ACTOR, "trap", "qemu-nested-pasid",
                                     f"{why}: {bdf_str(self.assigned_sid)}'s PASID entry has DID {cached}",
                                     "pasid-cache", did=did)
                return
        if self.pc_entry is not None and self.pc_entry == pe:
            self.journal.skipped(host, ACTOR, "trap", "qemu-nested-pasid",
                                 f"{why}: {bdf_str(self.assigned_sid)}'s PASID entry is unchanged",
                                 "pasid-cache", did=pe.did, pasid=pr.pasid)
            return
        prefix = REPLACE_FAILED if self.pc_entry is not None else ATTACH_FAILED
        self.pc_entry = pe
        self._attach(why, pe, pr.pasid, prefix)

    def _attach(self, why: str, pe: PasidEntry, pasid: int, prefix: str) -> None:
        """vtd_device_attach_iommufd(): first stage → a nested HWPT over the parent,
        pass-through → the parent; the old nested HWPT is destroyed once replaced."""
        host, fd = self.host_unit.name, self.iommufd
        if pe.pgtt not in (PGTT_FL_ONLY, PGTT_PT):
            self.journal.skipped(host, ACTOR, "trap", "qemu-nested-pasid",
                                 f"{why}: {QEMU}: {prefix}Invalid PGTT type {pe.pgtt}", "pasid-cache",
                                 did=pe.did, pasid=pasid)
            return
        hwpt, s1 = self.parent_hwpt, None
        try:
            if pe.pgtt == PGTT_FL_ONLY:
                s1 = vtd_s1(pe)
                hwpt = fd.hwpt_alloc(self.dev_id, self.parent_hwpt, 0, IOMMU_HWPT_DATA_VTD_S1, s1).id
        except IommufdError as exc:
            self.journal.skipped(host, ACTOR, "trap", "qemu-nested-pasid",
                                 f"{why}: {QEMU}: {prefix}{HWPT_ALLOC_FAILED}: {_strerror(exc)}", "pasid-cache",
                                 str(exc), did=pe.did, pasid=pasid)
            return
        try:
            fd.attach(self.dev_id, hwpt)
        except IommufdError as exc:
            if s1 is not None:
                fd.destroy(hwpt)
            self.journal.skipped(host, ACTOR, "trap", "qemu-nested-pasid",
                                 f"{why}: {QEMU}: {prefix}{exc}", "pasid-cache", did=pe.did, pasid=pasid)
            return
        old = self.fs_hwpt
        if old is not None and old != hwpt and old in fd.objects:
            fd.destroy(old)  # vtd_destroy_old_fs_hwpt()
        self.fs_hwpt = hwpt if s1 is not None else None
        what = (f"first stage FSPTPTR {pe.fsptptr:#x} (GPA), AW {s1.addr_width}, flags {s1.flags:#x} → nested "
                f"HWPT {hwpt} over HWPT {self.parent_hwpt}, attached" if s1 is not None
                else f"pass-through → the parent HWPT {hwpt} (GPA → HPA), attached")
        self.journal.issued(host, ACTOR, "trap", "qemu-nested-pasid",
                            f"{why}: vtd_propagate_guest_pasid(): {bdf_str(self.assigned_sid)} DID {pe.did}: {what}",
                            "pasid-cache", did=pe.did, pasid=pasid)

    def _detach(self, why: str) -> None:
        """vtd_device_detach_iommufd(): detach (DMA blocked) while the guest's DMAR is
        on in scalable mode, else back to the parent; then the nested HWPT goes."""
        host, fd = self.host_unit.name, self.iommufd
        u = self.guest_unit
        if u.translation_enabled and u.sm_active:
            fd.detach(self.dev_id)
            what = "detached (host DMA blocked)"
        else:
            fd.attach(self.dev_id, self.parent_hwpt)
            what = f"back to the parent HWPT {self.parent_hwpt} (guest DMAR off or legacy)"
        if self.fs_hwpt is not None and self.fs_hwpt in fd.objects:
            fd.destroy(self.fs_hwpt)
            what += f", nested HWPT {self.fs_hwpt} destroyed"
        self.fs_hwpt = None
        self.journal.issued(host, ACTOR, "trap", "qemu-nested-pasid",
                            f"{why}: {bdf_str(self.assigned_sid)}'s PASID entry is gone: "
                            f"vtd_device_detach_iommufd(): {what}", "pasid-cache")

    def _on_piotlb(self, f: dict) -> None:
        """vtd_piotlb_pasid_invalidate() (G2: addr 0, npages U64_MAX, no IH) /
        vtd_piotlb_page_invalidate() (G3: addr, 1 << AM pages, IH) →
        vtd_flush_host_piotlb_all_locked(): one VTD_S1 entry to IOMMU_HWPT_INVALIDATE
        on the nested HWPT, when the cached PASID entry (not guest memory) is first
        stage with this DID and the PASID is PASID_0."""
        did, pasid, page = f["did"], f["pasid"], f["gran"] == 3
        host = self.host_unit.name
        scope = "piotlb-page" if page else "piotlb-pasid"
        what = (f"guest P_IOTLB {'page-selective ' + hex(f['addr']) + ' AM ' + str(f['am']) if page else 'PASID-selective'}"
                f" (DID {did}, PASID {pasid})")
        pe = self.pc_entry
        miss = ""
        if pe is None or pe.pgtt != PGTT_FL_ONLY or self.fs_hwpt is None:
            miss = "no first-stage HWPT attached"
        elif pe.did != did:
            miss = f"{bdf_str(self.assigned_sid)}'s cached PASID entry has DID {pe.did}"
        elif pasid != RID_PASID:
            miss = "only PASID_0 is propagated"
        if miss:
            self.journal.skipped(host, ACTOR, "trap", "qemu-nested-piotlb", f"{what}: nothing for the host ({miss})",
                                 scope, did=did, pasid=pasid)
            return
        if page:
            inv = VtdS1Invalidate(f["addr"] & ~0xFFF, 1 << f["am"], IOMMU_VTD_INV_FLAGS_LEAF if f["ih"] else 0)
        else:
            inv = VtdS1Invalidate(0, U64_MAX, 0)
        self.journal.issued(host, ACTOR, "trap", "qemu-nested-piotlb",
                            f"{what}: vtd_flush_host_piotlb_all_locked() → IOMMU_HWPT_INVALIDATE on nested "
                            f"HWPT {self.fs_hwpt}",
                            scope, f"addr {inv.addr:#x} npages {'U64_MAX' if inv.npages == U64_MAX else inv.npages}"
                                   f" flags {inv.flags:#x}", did=did, pasid=pasid)
        try:
            self.iommufd.hwpt_invalidate(self.fs_hwpt, IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, [inv])
        except IommufdError as exc:
            # "Something wrong in kernel, but trying to continue"
            self.journal.skipped(host, ACTOR, "trap", "qemu-nested-piotlb", f"{what}: {QEMU}: {exc}", scope,
                                 did=did, pasid=pasid)

    def to_json(self) -> dict:
        return {
            **self.assigned_json(),
            "flts": True,
            "backend": self.backend,
            "fs_hwpt": self.fs_hwpt,
            "parent_hwpt": self.parent_hwpt,
            "shadow": [],
        }
