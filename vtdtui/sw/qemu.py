"""QEMU's intel-iommu (hw/i386/intel_iommu.c) keeping a host shadow for an assigned device.

The guest's unit is QEMU's vIOMMU; an assigned (VFIO) device's DMA never goes
through it, only through the host IOMMU.  VFIO registers a MAP|UNMAP notifier on the
device's vIOMMU address space, and QEMU turns each guest invalidation into
VFIO_IOMMU_MAP_DMA / UNMAP_DMA on the host container, as the newest QEMU does:
  context-cache global or domain → vtd_context_global_invalidate():
                                   vtd_address_space_refresh_all() unmaps the whole
                                   range, then vtd_iommu_replay_all() maps it again
  context-cache device           → vtd_context_device_invalidate(): vtd_address_space_sync()
  IOTLB global                   → vtd_iotlb_global_invalidate(): vtd_iommu_replay_all()
  IOTLB domain                   → vtd_iotlb_domain_invalidate(): vtd_address_space_sync()
  IOTLB page (PSI)               → vtd_iotlb_page_invalidate_notify(): that range
vtd_address_space_sync() is a diff (vtd_sync_shadow_page_table_range() against the
iova_tree of what was notified), except for a not-present context entry, which
unmaps the whole range (vtd_address_space_unmap()).

Without caching mode a guest never invalidates a not-present → present change, so
QEMU refuses the assigned device when it is plugged (cold-plug: QEMU does not start;
hot-plug: device_add fails and the VM runs on).  Snoop control refuses any notifier.
The what-if `force` is a QEMU without the caching-mode checks, to show why they exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..hw import faults as fr
from ..hw import regs
from ..hw.entries import PTE_ADDR_MASK, PTE_PS, bdf_str, level_index, level_shift
from ..hw.unit import DmarUnit
from .journal import Journal
from .vfio import Group, VfioContainer, VfioError

ACTOR = "qemu"
QEMU = "qemu-system-x86_64"
# vtd_dev_set_iommu_device() since "intel_iommu: Simplify caching mode check with VFIO
# device" (Zhenzhong Duan, qemu-devel 20250929034206.439266-3, merged as d288cb36e421 via
# mst's pull, 2025-10).  QEMU 4.2 .. 10.1 said the same words from pc_hotplug_allowed()
# on hot-plug, and on cold-plug vtd_machine_done_notify_one() →
# vtd_panic_require_caching_mode() printed CM_REQUIRED_OLD and exit(1).
CM_REQUIRED = "Device assignment is not allowed without enabling caching-mode=on for Intel IOMMU."
CM_REQUIRED_OLD = "We need to set caching-mode=on for intel-iommu to enable device assignment with IOMMU protection."
# vtd_iommu_notify_flag_changed(): error_setg_errno(errp, ENOTSUP, ...), so the text
# QEMU prints ends in strerror(ENOTSUP) (ENOTSUP since "intel-iommu: correct the value
# used for error_setg_errno()", 2022; the first version passed -ENOTSUP).
SC_UNSUPPORTED = "Snoop Control with vhost or VFIO is not supported"
ENOTSUP_TEXT = "Operation not supported"
# vfio_listener_region_add() at run time: error_report_err(err) then hw_error().
HW_ERROR = "qemu: hardware error: vfio: DMA mapping failed, unable to continue"


@dataclass
class QemuViommu:
    journal: Journal
    guest_unit: DmarUnit
    assigned_sid: int  # the assigned device as the guest sees it
    host_vfio: VfioContainer
    host_group: Group
    host_unit: DmarUnit
    gpa_to_hpa: int  # guest RAM starts at this host physical address
    force: bool = False  # what-if: a QEMU without the caching-mode checks
    host_group_no: int = 1  # the host's IOMMU group of the device (/dev/vfio/N), for messages
    plugged: bool = False  # the vfio-pci device is in the VM (its MAP notifier registered)
    hotplug_error: str = ""  # the last device_add QEMU refused, as QEMU printed it
    traps: int = 0  # guest invalidations that exited to QEMU
    shadow: dict[int, tuple[int, int, bool, bool]] = field(default_factory=dict)  # iova → (size, gpa, r, w)

    @property
    def refusing(self) -> bool:
        """Is the assigned device missing because QEMU refused its device_add?"""
        return not self.plugged and bool(self.hotplug_error)

    @property
    def host_bdf(self) -> str:
        return f"0000:{bdf_str(self.host_group.devices[0])}"

    def attach(self) -> None:
        self.guest_unit.invalidation_listeners.append(self.on_invalidation)

    # ------------------------------------------------------------ refusals
    def cm_missing(self) -> bool:
        """Would QEMU's caching-mode checks refuse the device (CM=0 and not forced)?"""
        return not self.guest_unit.cm and not self.force

    def start_refusal(self) -> str:
        """What QEMU prints if it runs with the device cold-plugged and this vIOMMU ("": runs).

        vtd_dev_set_iommu_device() refuses CM=0 while vfio_realize() runs, so QEMU
        exits before the guest starts.  Snoop control is not checked there: QEMU starts,
        and when the guest turns its IOMMU on the MAP notifier's registration fails in
        vtd_iommu_notify_flag_changed(); at run time vfio_listener_region_add() can only
        error_report_err() and hw_error(), which aborts QEMU."""
        if self.cm_missing():
            return (f"QEMU would not start: {QEMU}: -device vfio-pci,host={self.host_bdf}: vfio {self.host_bdf}: "
                    f"Failed to set vIOMMU: {CM_REQUIRED}")
        if self.guest_unit.sc:
            return (f"QEMU would abort once the guest turns its IOMMU on: {QEMU}: {SC_UNSUPPORTED}: {ENOTSUP_TEXT}, "
                    f"then {HW_ERROR}")
        return ""

    def hotplug_refusal(self) -> tuple[str, str]:
        """(rule, QEMU's line) if device_add of the vfio-pci device fails now, else ("", "").

        With the guest's IOMMU on, vfio_realize() registers the container's memory
        listener before it sets the vIOMMU, so vtd_iommu_notify_flag_changed() speaks
        first (snoop control, then b8d78277c0's caching-mode check); with it off the
        device's address space is QEMU's nodmar alias, no notifier is registered, and
        vtd_dev_set_iommu_device() refuses CM=0.  (The patch mail of the Simplify commit
        shows both; its example used iommufd, a type1 container adds the group prefix.)"""
        dev = self.assigned_sid
        bus, slot, fn = dev >> 8, (dev >> 3) & 0x1F, dev & 7
        if self.guest_unit.translation_enabled:
            region = f"vtd-{slot:02x}.{fn:x}-dmar"
            why = ""
            if self.guest_unit.sc:
                why, rule = SC_UNSUPPORTED, "qemu-sc-unsupported"
            elif self.cm_missing():
                why, rule = f"device {bus:02x}.{slot:02x}.{fn:x} requires caching mode", "qemu-cm-required"
            if why:
                return rule, (f"Error: vfio {self.host_bdf}: failed to setup container for group {self.host_group_no}: "
                              f"memory listener initialization failed: Region {region}: {why}: {ENOTSUP_TEXT}")
        if self.cm_missing():
            return "qemu-cm-required", f"Error: vfio {self.host_bdf}: Failed to set vIOMMU: {CM_REQUIRED}"
        return "", ""

    # ------------------------------------------------------------ device_add / device_del
    def device_add(self, on_attached: Callable[[], None] | None = None) -> bool:
        """QEMU's device_add of the vfio-pci device (or its cold-plug): False if refused,
        journaled, nothing assigned.  On success the host group joins QEMU's host VFIO
        container and the notifier's registration replays the guest's mappings; the
        caller's `on_attached` adds the group to KVM's kvm-vfio device, which
        vfio_connect_container() does before it registers the memory listener."""
        host = self.host_unit.name
        rule, line = self.hotplug_refusal()
        if line:
            # QEMU attached the group and tore it down again in vfio_realize()'s error
            # path; the net effect, which is all the model keeps, is nothing assigned.
            self.hotplug_error = line
            self.journal.skipped(host, ACTOR, "device-add", rule, line,
                                 detail=f"guest {self.guest_unit.name} CAP.CM={int(self.guest_unit.cm)} "
                                        f"ECAP.SC={int(self.guest_unit.sc)}")
            return False
        self.host_vfio.attach_group(self.host_group)
        if on_attached is not None:
            on_attached()
        self.plugged, self.hotplug_error = True, ""
        self.journal.issued(host, ACTOR, "device-add", "qemu-device",
                            f"vfio-pci host={self.host_bdf} as {bdf_str(self.assigned_sid)}: VFIO_GROUP_SET_CONTAINER, "
                            f"then VFIO registers a MAP notifier on the vIOMMU"
                            + (" (what-if: no caching-mode check)" if not self.guest_unit.cm else ""))
        self.replay()
        return True

    def device_del(self) -> None:
        """QEMU's device_del: vfio_listener_region_del() unregisters the notifier and
        sends one big UNMAP over the section; the group leaves the container.  The
        caller deletes the group from KVM's kvm-vfio device first (vfio_put_group())."""
        self.plugged = False
        self.unmap_all("device_del: vfio_listener_region_del()")
        self.host_vfio.detach_group(self.host_group)
        self.journal.issued(self.host_unit.name, ACTOR, "device-del", "qemu-device",
                            f"vfio-pci host={self.host_bdf}: notifier unregistered, VFIO_GROUP_UNSET_CONTAINER")

    # ------------------------------------------------------------ the guest's invalidations
    def on_invalidation(self, unit: DmarUnit, kind: str, f: dict) -> None:
        self.traps += 1
        if not self.plugged:
            return  # no MAP notifier: vtd_as_with_notifiers does not hold the device
        if kind == "context":
            if f["gran"] == regs.GRAN_DEVICE:
                # vtd_context_device_invalidate(): same bus, devfn equal under the FM mask.
                mask = ~(0, 4, 6, 7)[f["fm"] & 3] & 0xFFFF
                if f["source_id"] & mask != self.assigned_sid & mask:
                    return
                self.address_space_sync("guest context-cache invalidation (device)")
                return
            # vtd_process_context_cache_desc() / vtd_context_cache_invalidate(): a
            # domain-selective request falls through to vtd_context_global_invalidate().
            gran = "global" if f["gran"] == regs.GRAN_GLOBAL else "domain, done as global"
            why = f"guest context-cache invalidation ({gran})"
            self.unmap_all(f"{why}: vtd_address_space_refresh_all()")
            self.address_space_sync(f"{why}: vtd_iommu_replay_all()")
            return
        if f["gran"] == regs.GRAN_GLOBAL:
            self.address_space_sync("guest IOTLB global invalidation: vtd_iommu_replay_all()")
            return
        ce = self._context()
        if ce is None or f["did"] != ce.did:
            return  # vtd_dev_to_context_entry() failed or another domain: not this device
        if f["gran"] == regs.GRAN_DOMAIN:
            self.address_space_sync("guest IOTLB domain-selective invalidation")
        elif f["gran"] == regs.GRAN_PAGE:
            # vtd_iotlb_page_invalidate_notify() walks [addr, addr + 4K << am) as given.
            start = f["addr"] & ~0xFFF
            end = start + (1 << (12 + f["am"]))
            self.sync_range(ce, start, end, f"guest PSI {start:#x} AM {f['am']}")

    def _context(self):
        cr = self.guest_unit.read_context(self.assigned_sid, self.guest_unit.cpu_read_q)
        return cr.entry if cr.ok else None

    # ------------------------------------------------------------ shadow sync
    def replay(self) -> None:
        """vtd_iommu_replay(): when VFIO registers its notifier, empty the iova_tree and
        map what the guest's tables hold (no UNMAPs: notify_unmap is false)."""
        cr = self.guest_unit.read_context(self.assigned_sid, self.guest_unit.cpu_read_q)
        if not cr.ok:
            self.journal.skipped(self.host_unit.name, ACTOR, "shadow-map", "qemu-shadow",
                                 f"replay on notifier registration: {bdf_str(self.assigned_sid)} has no valid "
                                 f"context entry in the guest yet (vtd_replay_ce_invalid)")
            return
        self.sync_range(cr.entry, 0, 1 << 64, "replay on notifier registration", notify_unmap=False)

    def address_space_sync(self, why: str) -> None:
        """vtd_address_space_sync(): a not-present context entry unmaps the whole range;
        another context error does nothing; a valid one syncs [0, limit)."""
        cr = self.guest_unit.read_context(self.assigned_sid, self.guest_unit.cpu_read_q)
        if cr.ok:
            self.sync_range(cr.entry, 0, 1 << 64, why)
        elif cr.reason == fr.CONTEXT_ENTRY_P:
            self.unmap_all(f"{why}: context entry not present: vtd_address_space_unmap()")
        else:
            self.journal.skipped(self.host_unit.name, ACTOR, "shadow-map", "qemu-shadow",
                                 f"{why}: vtd_dev_to_context_entry() failed (reason {cr.reason:#04x}): "
                                 f"vtd_address_space_sync() leaves the shadow as it is")

    def unmap_all(self, why: str) -> None:
        """vtd_address_space_unmap(): UNMAP of the notifier's whole range (up to the
        vIOMMU's aw-bits), whatever is mapped, and an empty iova_tree.  VFIO's one
        VFIO_IOMMU_UNMAP_DMA removes every mapping inside."""
        host = self.host_unit.name
        end = 1 << self.guest_unit.mgaw_bits
        n = len(self.shadow)
        if not n:
            self.journal.skipped(host, ACTOR, "shadow-unmap", "qemu-shadow",
                                 f"{why}: UNMAP of the whole range; nothing is shadowed, VFIO unmaps 0 bytes",
                                 "page", f"0x0+{end:#x}")
            return
        try:
            self.host_vfio.unmap_dma(0, end)
        except VfioError as exc:
            self.journal.skipped(host, ACTOR, "shadow-unmap", "qemu-shadow", f"{why}: host refused: {exc}")
            return
        self.shadow.clear()
        self.journal.issued(host, ACTOR, "shadow-unmap", "qemu-shadow",
                            f"{why}: UNMAP of the whole range → VFIO_IOMMU_UNMAP_DMA", "page",
                            f"0x0+{end:#x} ({n} mapping(s))")

    def sync_range(self, ce, start: int, end: int, why: str, *, notify_unmap: bool = True) -> None:
        """vtd_sync_shadow_page_table_range() / vtd_page_walk(): walk the guest's tables
        over [start, end) and notify, in IOVA order, each leaf (MAP) and each
        non-present entry (UNMAP of its whole span) that differs from the iova_tree."""
        host = self.host_unit.name
        limit = 1 << min(self.guest_unit.mgaw_bits, ce.agaw)  # vtd_iova_limit()
        if ce.tt == 2 or start >= limit:
            self.journal.skipped(host, ACTOR, "shadow-map", "qemu-shadow",
                                 f"{why}: nothing to walk ({'pass-through' if ce.tt == 2 else 'beyond the MGAW'})")
            return
        walked: list[tuple[int, int, int, bool, bool]] = []
        self._walk(ce.slptptr, ce.levels, start, min(end, limit), True, True, walked)
        changed = False
        for iova, span, gpa, r, w in walked:
            if r or w:
                changed |= self._notify_map(iova, span, gpa, r, w, why)
            elif notify_unmap:
                changed |= self._notify_unmap(iova, span, why, "guest no longer maps it")
        if not changed:
            self.journal.skipped(host, ACTOR, "shadow-map", "qemu-shadow", f"{why}: shadow already matches the guest")

    def _overlaps(self, iova: int, span: int) -> list[int]:
        return sorted(k for k, (size, *_) in self.shadow.items() if k < iova + span and iova < k + size)

    def _notify_map(self, iova: int, span: int, gpa: int, r: bool, w: bool, why: str) -> bool:
        """vtd_page_walk_one() for a MAP: skip one already notified the same; a changed
        translation is UNMAPped first ("a small window that we don't have map at all")."""
        target = (span, gpa, r, w)
        old = self._overlaps(iova, span)
        if old == [iova] and self.shadow[iova] == target:
            return False
        if old and not self._notify_unmap(iova, span, why, "translation changed"):
            return True
        host, hpa = self.host_unit.name, gpa + self.gpa_to_hpa
        try:
            self.host_vfio.map_dma(iova, span, hpa, r, w)
        except VfioError as exc:
            self.journal.skipped(host, ACTOR, "shadow-map", "qemu-shadow", f"{why}: host refused: {exc}",
                                 "page", f"{iova:#x}+{span:#x}")
            return True
        self.shadow[iova] = target
        self.journal.issued(host, ACTOR, "shadow-map", "qemu-shadow",
                            f"{why}: guest maps {iova:#x} → GPA {gpa:#x} → VFIO_IOMMU_MAP_DMA",
                            "page", f"{iova:#x}+{span:#x} → HPA {hpa:#x}")
        return True

    def _notify_unmap(self, iova: int, span: int, why: str, what: str) -> bool:
        """vtd_page_walk_one() for an UNMAP: only when the iova_tree holds something in
        the span; VFIO unmaps the whole span.  False when the host refused."""
        old = self._overlaps(iova, span)
        if not old:
            return False
        host = self.host_unit.name
        try:
            self.host_vfio.unmap_dma(iova, span)
        except VfioError as exc:  # the shadow keeps what the host still maps
            self.journal.skipped(host, ACTOR, "shadow-unmap", "qemu-shadow", f"{why}: host refused: {exc}",
                                 "page", f"{iova:#x}+{span:#x}")
            return False
        for k in old:
            del self.shadow[k]
        self.journal.issued(host, ACTOR, "shadow-unmap", "qemu-shadow",
                            f"{why}: {what} → VFIO_IOMMU_UNMAP_DMA", "page", f"{iova:#x}+{span:#x}")
        return True

    def guest_mappings(self, start: int = 0, end: int | None = None) -> dict[int, tuple[int, int, bool, bool]]:
        """What the guest's tables map for the assigned device now: iova → (size, gpa, r, w)."""
        ce = self._context()
        want: dict[int, tuple[int, int, bool, bool]] = {}
        if ce is not None and ce.tt != 2:
            limit = 1 << min(self.guest_unit.mgaw_bits, ce.agaw)
            walked: list[tuple[int, int, int, bool, bool]] = []
            self._walk(ce.slptptr, ce.levels, start, limit if end is None else min(end, limit), True, True, walked)
            want = {iova: (span, gpa, r, w) for iova, span, gpa, r, w in walked if r or w}
        return want

    def _walk(self, table, level, start, end, r, w, out) -> None:
        """vtd_page_walk_level(): each leaf, and each entry without R or W (its whole
        span), in [start, end), with permissions stacked over the levels."""
        read = self.guest_unit.cpu_read_q
        span = 1 << level_shift(level)
        iova = start
        while iova < end:
            base = iova & ~(span - 1)
            nxt = base + span
            pte = read(table + level_index(iova, level) * 8)
            pr, pw = r and bool(pte & 1), w and bool(pte & 2)
            addr = pte & PTE_ADDR_MASK
            if level > 1 and not pte & PTE_PS and (pr or pw):
                self._walk(addr, level - 1, iova, min(nxt, end), pr, pw, out)
            else:
                out.append((base, span, addr & ~(span - 1), pr, pw))
            iova = nxt

    def to_json(self) -> dict:
        return {
            "assigned": bdf_str(self.assigned_sid),
            "caching_mode": self.guest_unit.cm,
            "plugged": self.plugged,
            "refused": self.refusing,
            "error": self.hotplug_error or None,
            "force": self.force,
            "traps": self.traps,
            "shadow": [{"iova": f"0x{i:x}", "size": f"0x{s:x}", "gpa": f"0x{g:x}"}
                       for i, (s, g, _, _) in sorted(self.shadow.items())],
        }
