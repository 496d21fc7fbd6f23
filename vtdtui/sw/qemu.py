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

Scalable mode (-device intel-iommu,x-scalable-mode=on without x-flts; QEMU then reports
ECAP.SMTS|SRS|SLTS, vtd_cap_init()): vtd_dev_to_context_entry() also fetches the
context entry's RID_PASID PASID entry (vtd_ce_rid2pasid_check()), and the walk starts
at its SSPTPTR with its AW, the DID is its DID (vtd_get_iova_pgtbl_base(),
vtd_get_iova_level(), vtd_get_domain_id()).  Besides the legacy descriptors:
  P_IOTLB PASID-selective          → vtd_piotlb_pasid_invalidate(): vtd_address_space_sync()
                                     of the device whose PASID entry has that DID, when the
                                     PASID is its RID_PASID (`!s->flts` — a second-stage guest)
  P_IOTLB page-selective           → vtd_piotlb_page_invalidate() →
                                     vtd_iotlb_page_invalidate_notify(): that range
  PASID cache (any granularity)    → vtd_pasid_cache_sync() returns at once without x-flts:
                                     nothing (QEMU ≈10.0, before the PASID-cache series,
                                     accepted the descriptor as a no-op in scalable mode)
A PASID entry the guest tears down (context entry still present, as Linux leaves it)
fails vtd_dev_to_context_entry() with VTD_FR_PASID_ENTRY_P, not CONTEXT_ENTRY_P: the
sync leaves the shadow as it is until the next sync of a valid entry diffs it away.
Reserved bits and reserved granularities (PC G=2, P_IOTLB G0/G1) are the vIOMMU's own
queue error (hw.qi.check_256, QEMU's VTD_INV_DESC_PASIDC_RSVD_VAL0 and
VTD_INV_DESC_PIOTLB_RSVD_VAL0/1): the descriptor never reaches this actor.
Sources: qemu/qemu hw/i386/intel_iommu.c, a ≈mid-2025 copy (x-flts as `flts`,
vtd_process_piotlb_desc, VTD_INV_DESC_PC a no-op) and the PASID-cache series
(Zhenzhong Duan, "intel_iommu: Handle PASID entry removing and updating", v3, July
2025: vtd_process_pasid_desc, vtd_pasid_cache_sync).

Without caching mode a guest never invalidates a not-present → present change, so
QEMU refuses the assigned device when it is plugged (cold-plug: QEMU does not start;
hot-plug: device_add fails and the VM runs on).  Snoop control refuses any notifier.
The what-if `force` is a QEMU without the caching-mode checks, to show why they exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from ..hw import faults as fr
from ..hw import regs
from ..hw.entries import PTE_ADDR_MASK, PTE_PS, bdf_str, level_index, level_shift
from ..hw.sm_entries import PGTT_PT
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
# vtd_decide_config() (≈2025 copy; the Jan 2026 rename to `fsts` kept the strings) and
# vtd_check_hiod() for x-flts with a legacy VFIO container (REFERENCE-2 §15).
FLTS_NEEDS_SM = "x-flts is only available in scalable mode"
FLTS_NEEDS_IOMMUFD = "Need IOMMUFD backend when x-flts=on"
AW_BITS_SM = "Scalable mode(flts=off): supported values for aw-bits are: 39, 48"
AW_BITS_LEGACY = "Legacy mode: supported values for aw-bits are: 39, 48"
SM_NEEDS_DRAIN = "Need to set dma_drain for scalable mode"
# vtd_cap_init(): `else if (s->scalable_mode) s->ecap |= VTD_ECAP_SMTS | VTD_ECAP_SRS | VTD_ECAP_SLTS;`
ECAP_SM_BITS = ("SMTS", "SRS", "SLTS")


@dataclass(frozen=True)
class ShadowSource:
    """What QEMU walks for the assigned device, as vtd_dev_to_context_entry() and the
    vtd_get_iova_*() helpers give it: the legacy context entry, or in scalable mode
    the RID_PASID PASID entry (second stage: SSPTPTR, AW; without x-flts QEMU walks
    SSPTPTR whatever the PGTT, vtd_get_iova_pgtbl_base())."""

    did: int
    table: int
    levels: int
    agaw: int
    passthrough: bool
    rid_pasid: int | None = None  # None: legacy mode

    @classmethod
    def legacy(cls, ce) -> "ShadowSource":
        return cls(ce.did, ce.slptptr, ce.levels, ce.agaw, ce.tt == 2)

    @classmethod
    def scalable(cls, pe, rid_pasid: int) -> "ShadowSource":
        # VTD_PE_GET_SL_LEVEL: 2 + AW; vtd_get_iova_agaw: 30 + AW * 9.
        return cls(pe.did, pe.ssptptr, 2 + pe.aw, 30 + 9 * pe.aw, pe.pgtt == PGTT_PT, rid_pasid)


class AssignedDevice:
    """What both designs of QEMU's assigned device have in common (the shadowing
    QemuViommu here, the nesting sw/qemu_accel.QemuAccel): the attributes the Machine
    reads (journal, guest_unit, assigned_sid, host_group, host_unit, force, plugged,
    hotplug_error, traps) and what is derived from them."""

    # Which design (callers ask this, not isinstance, so that the nesting module loads
    # only when a scenario needs it).
    NESTING: ClassVar[bool] = False

    @property
    def refusing(self) -> bool:
        """Is the assigned device missing because QEMU refused its device_add?"""
        return not self.plugged and bool(self.hotplug_error)

    @property
    def host_sid(self) -> int:
        return self.host_group.devices[0]

    @property
    def host_bdf(self) -> str:
        return f"0000:{bdf_str(self.host_sid)}"

    def attach(self) -> None:
        self.guest_unit.invalidation_listeners.append(self.on_invalidation)

    def cm_missing(self) -> bool:
        """Would QEMU's caching-mode checks refuse the device (CM=0 and not forced)?
        vtd_dev_set_iommu_device() refuses CM=0 for every host IOMMU device, x-flts or
        not (the check comes before vtd_check_hiod())."""
        return not self.guest_unit.cm and not self.force

    def assigned_json(self) -> dict:
        """The state JSON keys both designs share."""
        return {
            "assigned": bdf_str(self.assigned_sid),
            "caching_mode": self.guest_unit.cm,
            "plugged": self.plugged,
            "refused": self.refusing,
            "error": self.hotplug_error or None,
            "force": self.force,
            "traps": self.traps,
        }


@dataclass
class QemuViommu(AssignedDevice):
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

    def host_domains(self) -> list:
        """The host domains the shadow lives in: those of QEMU's VFIO container."""
        return [vd.domain for vd in self.host_vfio.domains]

    # ------------------------------------------------------------ refusals
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
        if kind == "pasid-cache":
            self._on_pasid_cache(f)
            return
        if kind == "piotlb":
            self._on_piotlb(f)
            return
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
        if kind != "iotlb":
            return  # device-TLB and others: no MAP/UNMAP for this notifier
        if f["gran"] == regs.GRAN_GLOBAL:
            self.address_space_sync("guest IOTLB global invalidation: vtd_iommu_replay_all()")
            return
        src, why = self._source_or_why()
        if src is None and self.guest_unit.sm_active and self.shadow:
            # Linux's teardown DSI (intel_pasid_tear_down_entry) comes after the PASID
            # entry is cleared: vtd_iotlb_domain_invalidate() skips the device, and
            # what was shadowed stays mapped on the host.
            self.journal.skipped(self.host_unit.name, ACTOR, "shadow-unmap", "qemu-sm-shadow",
                                 f"guest IOTLB {'DSI' if f['gran'] == regs.GRAN_DOMAIN else 'PSI'} DID {f['did']}: "
                                 f"{bdf_str(self.assigned_sid)}: {why}: not the device; {len(self.shadow)} "
                                 "mapping(s) stay on the host", did=f["did"])
        if src is None or f["did"] != src.did:
            return  # vtd_dev_to_context_entry() failed or another domain: not this device
        if f["gran"] == regs.GRAN_DOMAIN:
            self.address_space_sync("guest IOTLB domain-selective invalidation")
        elif f["gran"] == regs.GRAN_PAGE:
            # vtd_iotlb_page_invalidate_notify() walks [addr, addr + 4K << am) as given;
            # in scalable mode with PCI_NO_PASID, which the device's address space is.
            start = f["addr"] & ~0xFFF
            end = start + (1 << (12 + f["am"]))
            self.sync_range(src, start, end, f"guest PSI {start:#x} AM {f['am']}")

    def _on_pasid_cache(self, f: dict) -> None:
        """vtd_process_pasid_desc() → vtd_pasid_cache_sync(): `if (!s->flts ||
        !s->root_scalable || !s->dmar_enabled) return;` — a second-stage guest's PASID
        entries are read afresh on every walk, so the PASID cache has nothing for the
        shadow (the P_IOTLB that pasid_flush_caches() sends next is what syncs it)."""
        gran = {0: "domain", 1: "pasid", 3: "global"}.get(f["gran"], str(f["gran"]))
        self.journal.skipped(self.host_unit.name, ACTOR, "trap", "qemu-sm-pasid-cache",
                             f"guest PASID-cache invalidation ({gran}, DID {f['did']}, PASID {f['pasid']}): "
                             "vtd_pasid_cache_sync() returns at once without x-flts; the shadow is left as it is",
                             "pasid-cache", did=f["did"], pasid=f["pasid"] if f["gran"] == 1 else None)

    def _on_piotlb(self, f: dict) -> None:
        """vtd_process_piotlb_desc(): G2 → vtd_piotlb_pasid_invalidate(), G3 →
        vtd_piotlb_page_invalidate() → vtd_iotlb_page_invalidate_notify().  Both pick
        the address spaces with notifiers whose context entry is valid and whose
        PASID entry has the DID, and a PCI_NO_PASID address space only when the PASID
        is the context entry's RID_PASID; then, without x-flts, they sync the shadow."""
        did, pasid, page = f["did"], f["pasid"], f["gran"] == 3
        scope = "piotlb-page" if page else "piotlb-pasid"
        what = (f"guest P_IOTLB {'page-selective ' + hex(f['addr']) + ' AM ' + str(f['am']) if page else 'PASID-selective'}"
                f" (DID {did}, PASID {pasid})")
        src, why = self._source_or_why()
        host = self.host_unit.name
        if src is None or src.rid_pasid is None or src.did != did or src.rid_pasid != pasid:
            if src is None:
                miss = f"{bdf_str(self.assigned_sid)}: {why}"
            elif src.rid_pasid is None:
                miss = "the guest runs legacy mode (root table without SMT)"
            elif src.did != did:
                miss = f"{bdf_str(self.assigned_sid)}'s PASID entry has DID {src.did}"
            else:
                miss = f"{bdf_str(self.assigned_sid)}'s RID_PASID is {src.rid_pasid}"
            self.journal.skipped(host, ACTOR, "trap", "qemu-sm-shadow", f"{what}: not the assigned device ({miss})",
                                 scope, did=did, pasid=pasid)
            return
        fn = "vtd_piotlb_page_invalidate()" if page else "vtd_piotlb_pasid_invalidate()"
        self.journal.issued(host, ACTOR, "trap", "qemu-sm-shadow",
                            f"{what}: {fn} syncs {bdf_str(self.assigned_sid)}'s shadow (no x-flts)",
                            scope, did=did, pasid=pasid)
        if page:
            start = f["addr"] & ~0xFFF
            self.sync_range(src, start, start + (1 << (12 + f["am"])), f"{what}: vtd_iotlb_page_invalidate_notify()")
        else:
            self.address_space_sync(f"{what}: vtd_address_space_sync()")

    def _source(self) -> ShadowSource | None:
        return self._source_or_why()[0]

    def stale_after_teardown(self) -> bool:
        """Scalable mode: the guest's RID_PASID PASID entry is gone (context entry still
        present), so QEMU syncs nothing and the shadow may outlive the guest's tables."""
        src, reason = self._lookup()
        return src is None and self.guest_unit.sm_active and reason not in (fr.CONTEXT_ENTRY_P,
                                                                             fr.SM_CONTEXT_ENTRY_P)

    def _source_or_why(self) -> tuple[ShadowSource | None, str]:
        """vtd_dev_to_context_entry() for the assigned device, as QEMU reads guest RAM
        (coherently, cpu_read_q): (source, "") or (None, why).  QEMU's mode is the
        latched root table's SMT (vtd_update_scalable_state)."""
        src, reason = self._lookup()
        if src is not None:
            return src, ""
        return None, f"vtd_dev_to_context_entry() failed (reason {reason:#04x}: {fr.reason_string(reason)})"

    def _lookup(self) -> tuple[ShadowSource | None, int]:
        u = self.guest_unit
        if not u.sm_active:
            cr = u.read_context(self.assigned_sid, u.cpu_read_q)
            return (ShadowSource.legacy(cr.entry), 0) if cr.ok else (None, cr.reason)
        # vtd_ce_rid2pasid_check(): a present SM context entry is valid only with a
        # valid PASID entry at its RID_PASID.
        pr = u.read_pasid_entry(self.assigned_sid, None, u.cpu_read_q)
        if not pr.ok:
            return None, pr.reason
        return ShadowSource.scalable(pr.entry, pr.pasid), 0

    # ------------------------------------------------------------ shadow sync
    def replay(self) -> None:
        """vtd_iommu_replay(): when VFIO registers its notifier, empty the iova_tree and
        map what the guest's tables hold (no UNMAPs: notify_unmap is false)."""
        src = self._source()
        if src is None:
            self.journal.skipped(self.host_unit.name, ACTOR, "shadow-map", "qemu-shadow",
                                 f"replay on notifier registration: {bdf_str(self.assigned_sid)} has no valid "
                                 f"context entry in the guest yet (vtd_replay_ce_invalid)")
            return
        self.sync_range(src, 0, 1 << 64, "replay on notifier registration", notify_unmap=False)

    def address_space_sync(self, why: str) -> None:
        """vtd_address_space_sync(): a not-present context entry unmaps the whole range;
        another context error does nothing; a valid one syncs [0, limit).  In scalable
        mode a PASID-entry error (the guest tore the entry down) is "another error":
        QEMU compares with -VTD_FR_CONTEXT_ENTRY_P only, which in scalable mode is the
        SM context entry's P (hw reports it as 0x41)."""
        src, reason = self._lookup()
        if src is not None:
            self.sync_range(src, 0, 1 << 64, why)
        elif reason in (fr.CONTEXT_ENTRY_P, fr.SM_CONTEXT_ENTRY_P):
            self.unmap_all(f"{why}: context entry not present: vtd_address_space_unmap()")
        else:
            stale = f" ({len(self.shadow)} mapping(s) stay on the host)" if self.shadow else ""
            self.journal.skipped(self.host_unit.name, ACTOR, "shadow-map", "qemu-shadow",
                                 f"{why}: vtd_dev_to_context_entry() failed (reason {reason:#04x}: "
                                 f"{fr.reason_string(reason)}): vtd_address_space_sync() leaves the shadow as it is"
                                 + stale)

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

    def sync_range(self, src: ShadowSource, start: int, end: int, why: str, *, notify_unmap: bool = True) -> None:
        """vtd_sync_shadow_page_table_range() / vtd_page_walk(): walk the guest's tables
        over [start, end) and notify, in IOVA order, each leaf (MAP) and each
        non-present entry (UNMAP of its whole span) that differs from the iova_tree."""
        host = self.host_unit.name
        limit = 1 << min(self.guest_unit.mgaw_bits, src.agaw)  # vtd_iova_limit()
        if src.passthrough or start >= limit:
            self.journal.skipped(host, ACTOR, "shadow-map", "qemu-shadow",
                                 f"{why}: nothing to walk ({'pass-through' if src.passthrough else 'beyond the MGAW'})")
            return
        walked: list[tuple[int, int, int, bool, bool]] = []
        self._walk(src.table, src.levels, start, min(end, limit), True, True, walked)
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
        src = self._source()
        want: dict[int, tuple[int, int, bool, bool]] = {}
        if src is not None and not src.passthrough:
            limit = 1 << min(self.guest_unit.mgaw_bits, src.agaw)
            walked: list[tuple[int, int, int, bool, bool]] = []
            self._walk(src.table, src.levels, start, limit if end is None else min(end, limit), True, True, walked)
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
            **self.assigned_json(),
            "shadow": [{"iova": f"0x{i:x}", "size": f"0x{s:x}", "gpa": f"0x{g:x}"}
                       for i, (s, g, _, _) in sorted(self.shadow.items())],
        }

