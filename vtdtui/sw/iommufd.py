"""iommufd (drivers/iommu/iommufd/): devices, IOASes and hardware page tables (HWPTs).

The object model user space drives through /dev/iommu, over the Intel driver:
  IOAS          an address space of mappings (struct io_pagetable's areas);
  HWPT_PAGING   one iommu_domain filled with every area of its IOAS (ioas->hwpt_list),
                automatic (IOMMU_DEVICE_ATTACH to an IOAS) or explicit (IOMMU_HWPT_ALLOC,
                with NEST_PARENT / DIRTY_TRACKING);
  HWPT_NESTED   a guest's first stage (struct iommu_hwpt_vtd_s1) over a NEST_PARENT HWPT;
                it holds no mappings of its own.
All objects share one id space (ictx->objects, an xarray allocating the lowest free id
from 1), as the kernel's.

Cache coherency (REFERENCE-2 §16; source wins where they differ):
  bind          idev->enforce_cache_coherency = IOMMU_CAP_ENFORCE_CACHE_COHERENCY (ECAP.SC);
  allocation    iommufd_hwpt_paging_alloc() sets the domain's mode before any map
                ("It is an iommu driver bug to report IOMMU_CAP_ENFORCE_CACHE_COHERENCY
                but fail enforce_cache_coherency on a new domain": WARN, abort);
  attach        ≤6.6 also tried to upgrade an existing HWPT ("Try to upgrade the domain
                we have", -EINVAL on failure).  Nicolin Chen's "iommufd: Only enforce
                cache coherency in iommufd_hw_pagetable_alloc" (Oct 2023, ≈6.7) dropped
                that: "a HWPT (non-CC) created for a device (non-CC) can be later reused
                by another device (either non-CC or CC)".  The newest device.c read
                (torvalds/linux@56ea38e4) has no upgrade, so the default here has none;
                `attach_upgrades_cc = True` models 6.2–6.6.  REFERENCE-2 §16 still lists
                the attach upgrade: that is the older era.
Functions named in comments are the kernel's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..hw.entries import bdf_str
from .iommufd_uapi import (
    HWPT_ALLOC_FLAGS, IOMMU_HWPT_ALLOC_DIRTY_TRACKING, IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_DATA_NONE,
    IOMMU_HWPT_FAULT_ID_VALID, U64_MAX, HwInfoVtd, IommufdError, VtdS1, VtdS1Invalidate, flag_names, with_errno,
)
from .journal import Journal
from .linux import DmarDomain, DriverError, IntelIommuDriver

ACTOR = "iommufd"
PAGE = 4096
# iommufd_hwpt_paging_alloc(): valid_flags of the copy read (11534b4d, ≈6.13).  Newer
# uAPI headers also export IOMMU_HWPT_ALLOC_PASID; that copy refuses it (-EOPNOTSUPP).
PAGING_VALID_FLAGS = IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING | IOMMU_HWPT_FAULT_ID_VALID

@dataclass
class IommufdDevice:
    """struct iommufd_device: a bound device (vfio cdev) and the HWPT it is attached to."""

    id: int
    sid: int
    unit: str
    group: int
    enforce_cache_coherency: bool
    hwpt: int | None = None

    @property
    def kind(self) -> str:
        return "device"

    @property
    def bdf(self) -> str:
        return bdf_str(self.sid)


@dataclass
class IoptArea:
    """struct iopt_area: one IOMMU_IOAS_MAP (hpa stands in for the pinned user pages)."""

    iova: int
    size: int
    hpa: int
    r: bool
    w: bool


@dataclass
class Ioas:
    """struct iommufd_ioas: its areas (by IOVA) and ioas->hwpt_list (paging HWPT ids)."""

    id: int
    areas: list[IoptArea] = field(default_factory=list)
    hwpts: list[int] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "ioas"


@dataclass
class HwptPaging:
    """struct iommufd_hwpt_paging."""

    id: int
    ioas: int
    domain: DmarDomain
    auto: bool
    nest_parent: bool
    dirty_tracking: bool
    enforce_cache_coherency: bool
    devices: list[int] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "paging"


@dataclass
class HwptNested:
    """struct iommufd_hwpt_nested: a guest first stage over the parent's second stage."""

    id: int
    parent: int
    domain: DmarDomain
    s1: VtdS1
    devices: list[int] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "nested"


class Iommufd:
    """One iommufd context (struct iommufd_ctx) of the host kernel."""

    def __init__(self, journal: Journal, driver: IntelIommuDriver, *, attach_upgrades_cc: bool = False):
        self.journal = journal
        self.driver = driver
        self.objects: dict[int, object] = {}
        # 6.2–6.6: iommufd_hw_pagetable_attach() upgraded a paging HWPT's coherency for a
        # device that can enforce it (see the module docstring); mainline does not.
        self.attach_upgrades_cc = attach_upgrades_cc

    # ------------------------------------------------------------ lookups
    @property
    def devices(self) -> list[IommufdDevice]:
        return [o for _, o in sorted(self.objects.items()) if isinstance(o, IommufdDevice)]

    @property
    def ioas(self) -> list[Ioas]:
        return [o for _, o in sorted(self.objects.items()) if isinstance(o, Ioas)]

    @property
    def hwpts(self) -> list[HwptPaging | HwptNested]:
        return [o for _, o in sorted(self.objects.items()) if isinstance(o, (HwptPaging, HwptNested))]

    def _new_id(self) -> int:
        """xa_alloc() with XA_FLAGS_ALLOC1: the lowest free id from 1 (a destroyed
        object's id is handed out again)."""
        i = 1
        while i in self.objects:
            i += 1
        return i

    def _device(self, dev_id: int, place: str) -> IommufdDevice:
        o = self.objects.get(dev_id)
        if not isinstance(o, IommufdDevice):
            raise IommufdError(f"{place}: no device object {dev_id} (-ENOENT)")
        return o

    def _ioas(self, ioas_id: int, place: str) -> Ioas:
        o = self.objects.get(ioas_id)
        if not isinstance(o, Ioas):
            raise IommufdError(f"{place}: no IOAS object {ioas_id} (-ENOENT)")
        return o

    def hwpt_of(self, dev_id: int) -> HwptPaging | HwptNested | None:
        d = self.objects.get(dev_id)
        if not isinstance(d, IommufdDevice) or d.hwpt is None:
            return None
        return self.objects.get(d.hwpt)

    def device_of(self, sid: int, unit: str) -> IommufdDevice | None:
        for d in self.devices:
            if d.sid == sid and d.unit == unit:
                return d
        return None

    def _unit(self, idev: IommufdDevice):
        return self.driver.units[idev.unit]

    def _capable(self, unit, cap: str) -> bool:
        """device_iommu_capable() → intel_iommu_capable()."""
        return bool(self.driver.capable(unit, cap))

    def _hwpt_unit(self, h) -> str:
        """The unit a decision about HWPT `h` is recorded on: its first device's."""
        for dev_id in h.devices:
            d = self.objects.get(dev_id)
            if isinstance(d, IommufdDevice):
                return d.unit
        return next(iter(h.domain.dids), None) or next(iter(self.driver.units))

    def _ioas_unit(self, ioas: Ioas) -> str:
        for hid in ioas.hwpts:
            return self._hwpt_unit(self.objects[hid])
        return next(iter(self.driver.units))

    @staticmethod
    def _dids(d: DmarDomain) -> str:
        return ", ".join(f"DID {did} on {u}" for u, did in d.dids.items()) or "no DID yet"

    # ------------------------------------------------------------ bind / unbind
    def bind(self, sid: int, unit: str, group: int) -> IommufdDevice:
        """iommufd_device_bind() (VFIO_DEVICE_BIND_IOMMUFD of a vfio cdev)."""
        place = f"bind {bdf_str(sid)}"
        u = self.driver.units.get(unit)
        if u is None:
            raise IommufdError(f"{place}: no IOMMU unit {unit!r} (-ENODEV)")
        if self.device_of(sid, unit) is not None:
            raise IommufdError(f"{place}: already bound to this iommufd (-EBUSY)")
        # "iommufd always sets IOMMU_CACHE because we offer no way for userspace to
        # restore cache coherency."
        if not self._capable(u, "cache_coherency"):
            raise IommufdError(f"{place}: {unit} lacks IOMMU_CAP_CACHE_COHERENCY (-EINVAL)")
        idev = IommufdDevice(self._new_id(), sid, unit, group, self._capable(u, "enforce_cache_coherency"))
        self.objects[idev.id] = idev
        return idev

    def unbind(self, dev_id: int) -> None:
        """iommufd_device_unbind(); vfio_iommufd_physical_unbind() detaches first."""
        idev = self._device(dev_id, "unbind")
        if idev.hwpt is not None:
            self.detach(dev_id)
        del self.objects[dev_id]

    def ioas_alloc(self) -> Ioas:
        """IOMMU_IOAS_ALLOC."""
        ioas = Ioas(self._new_id())
        self.objects[ioas.id] = ioas
        return ioas

    # ------------------------------------------------------------ attach
    def attach(self, dev_id: int, pt_id: int) -> HwptPaging | HwptNested:
        """VFIO_DEVICE_ATTACH_IOMMUFD_PT: iommufd_device_attach(), or, on a device already
        attached, iommufd_device_replace() (vfio_iommufd_physical_attach_ioas) — how
        QEMU moves a device between its parent and nested HWPTs.
        iommufd_device_change_pt(): an IOAS → iommufd_device_auto_get_domain(); a HWPT
        → that one."""
        idev = self._device(dev_id, "attach")
        place = f"attach {idev.bdf}"
        pt = self.objects.get(pt_id)
        if pt is None:
            raise IommufdError(f"{place}: no object {pt_id} (-ENOENT)")
        if isinstance(pt, Ioas):
            return self._auto_get_domain(idev, pt)
        if isinstance(pt, (HwptPaging, HwptNested)):
            self._do_attach(idev, pt, place)
            self._event(idev, pt, True, "iommufd-hwpt", f"{idev.bdf} attached to {pt.kind} HWPT {pt.id} "
                        f"(domain {pt.domain.id}, {self._dids(pt.domain)})")
            return pt
        raise IommufdError(f"{place}: object {pt_id} is a {pt.kind}, not an IOAS or HWPT (-EINVAL)")

    def _event(self, idev: IommufdDevice, h, issued: bool, rule: str, reason: str, op: str = "hwpt-attach") -> None:
        rec = self.journal.issued if issued else self.journal.skipped
        rec(idev.unit, ACTOR, op, rule, reason, "device", f"{idev.bdf} HWPT {h.id}",
            did=h.domain.dids.get(idev.unit), bdf=idev.bdf)

    def _group_peers(self, idev: IommufdDevice) -> list[IommufdDevice]:
        return [d for d in self.devices if d.group == idev.group and d.unit == idev.unit and d is not idev]

    def _do_attach(self, idev: IommufdDevice, h, place: str) -> None:
        """iommufd_hw_pagetable_attach() (first attach) or iommufd_device_do_replace()
        (already attached): -EINVAL when the group sits in another HWPT, or when the
        driver refuses the domain (paging_domain_compatible / intel_nested_attach_dev)."""
        if idev.hwpt == h.id:
            return  # "if (hwpt == igroup->hwpt) return NULL": nothing to do
        peers = [d for d in self._group_peers(idev) if d.hwpt is not None]
        if idev.hwpt is None and any(d.hwpt != h.id for d in peers):
            other = next(d for d in peers if d.hwpt != h.id)
            raise IommufdError(f"{place}: group {idev.group} is attached to HWPT {other.hwpt} through "
                               f"{other.bdf}; replace that first (-EINVAL)")
        if isinstance(h, HwptPaging) and self.attach_upgrades_cc and idev.enforce_cache_coherency:
            # ≤6.6 iommufd_hwpt_paging_attach(): "Try to upgrade the domain we have".
            if not self._enforce_cc(h):
                raise IommufdError(f"{place}: 6.2–6.6: {idev.unit} can enforce coherency but HWPT {h.id}'s "
                                   f"domain {h.domain.id} refused enforce_cache_coherency (-EINVAL)")
        movers = [idev] + ([d for d in peers if d.hwpt == idev.hwpt] if idev.hwpt is not None else [])
        done: list[tuple[IommufdDevice, DmarDomain | None]] = []
        try:
            for d in movers:
                old = self.objects[d.hwpt].domain if d.hwpt is not None else None
                self.driver.attach_device(h.domain, self._unit(d), d.sid)
                done.append((d, old))
        except DriverError as exc:
            for d, old in reversed(done):  # put back what moved: the state as it was
                if old is not None:
                    self.driver.attach_device(old, self._unit(d), d.sid)
                else:
                    self.driver.detach_device(h.domain, self._unit(d), d.sid)
            raise IommufdError(f"{place}: HWPT {h.id}: {with_errno(str(exc))}") from None
        for d in movers:
            old_id = d.hwpt
            d.hwpt = h.id
            h.devices.append(d.id)
            if old_id is not None:
                self._drop_device(self.objects[old_id], d)

    def _drop_device(self, old, d: IommufdDevice) -> None:
        """A device left `old`: iommufd_hw_pagetable_put() destroys an automatic HWPT with
        its last user."""
        old.devices.remove(d.id)
        if isinstance(old, HwptPaging) and old.auto and not old.devices:
            self._destroy_paging(old)

    def _auto_get_domain(self, idev: IommufdDevice, ioas: Ioas) -> HwptPaging:
        """iommufd_device_auto_get_domain(): "-EINVAL means the domain is incompatible with
        the device. Other error codes should propagate"; none fits → a new automatic HWPT
        ("Automatic domain selection will never pick a manually created domain")."""
        place = f"attach {idev.bdf} to IOAS {ioas.id}"
        for hid in list(ioas.hwpts):
            h = self.objects[hid]
            if not h.auto:
                self._event(idev, h, False, "iommufd-auto-domain",
                            f"HWPT {h.id} came from IOMMU_HWPT_ALLOC: automatic selection never picks it")
                continue
            try:
                self._do_attach(idev, h, place)
            except IommufdError as exc:
                if exc.errno != "-EINVAL":
                    raise
                # The ≤6.6 upgrade's refusal is a coherency decision; the driver's is compatibility.
                rule = "iommufd-enforce-cc" if "refused enforce_cache_coherency" in str(exc) else "iommufd-auto-domain"
                self._event(idev, h, False, rule,
                            f"HWPT {h.id} (enforce_cache_coherency={_b(h.enforce_cache_coherency)}) refused "
                            f"{idev.bdf}: {_tail(exc)}; -EINVAL means incompatible, try the next")
                continue
            self._event(idev, h, True, "iommufd-auto-domain", self._joined_why(idev, h))
            return h
        return self._paging_alloc(idev, ioas, 0, auto=True, place=place)

    def _joined_why(self, idev: IommufdDevice, h: HwptPaging) -> str:
        why = f"{idev.bdf} joins automatic HWPT {h.id} (domain {h.domain.id}, {self._dids(h.domain)})"
        if idev.enforce_cache_coherency and not h.enforce_cache_coherency:
            return (f"{why}: its IOMMU ({idev.unit}, ECAP.SC=1) could enforce coherency but the HWPT does not; "
                    "since 6.7 coherency is set only at allocation (iommufd_hwpt_paging_alloc) and "
                    "paging_domain_compatible refuses only a snooping domain on a unit without SC")
        return f"{why}, enforce_cache_coherency={_b(h.enforce_cache_coherency)}"

    # ------------------------------------------------------------ detach / destroy
    def detach(self, dev_id: int) -> None:
        """VFIO_DEVICE_DETACH_IOMMUFD_PT → iommufd_device_detach(); the device's DMA is
        blocked.  A device attached to nothing: VFIO returns 0 and does nothing."""
        idev = self._device(dev_id, "detach")
        if idev.hwpt is None:
            return
        h = self.objects[idev.hwpt]
        did = h.domain.dids.get(idev.unit)
        self.driver.detach_device(h.domain, self._unit(idev), idev.sid)
        idev.hwpt = None
        self.journal.issued(idev.unit, ACTOR, "hwpt-detach", "iommufd-hwpt",
                            f"{idev.bdf} detached from {h.kind} HWPT {h.id} (domain {h.domain.id}): "
                            "iommufd_device_detach(), its DMA is blocked", "device", f"{idev.bdf} HWPT {h.id}",
                            did=did, bdf=idev.bdf)
        self._drop_device(h, idev)

    def destroy(self, obj_id: int) -> None:
        """IOMMU_DESTROY: -EBUSY while another object holds a reference."""
        o = self.objects.get(obj_id)
        place = f"destroy {obj_id}"
        if o is None:
            raise IommufdError(f"{place}: no such object (-ENOENT)")
        if isinstance(o, IommufdDevice):
            raise IommufdError(f"{place}: device {o.bdf} is held by its VFIO cdev until unbind (-EBUSY)")
        if isinstance(o, Ioas):
            if o.hwpts:
                raise IommufdError(f"{place}: IOAS {o.id} still backs HWPT(s) "
                                   f"{', '.join(map(str, o.hwpts))} (-EBUSY)")
            del self.objects[obj_id]  # iommufd_ioas_destroy(): iopt_unmap_all() of pinned pages only
            return
        if o.devices:
            raise IommufdError(f"{place}: HWPT {o.id} has device(s) attached (-EBUSY)")
        children = [h.id for h in self.hwpts if isinstance(h, HwptNested) and h.parent == o.id]
        if children:
            raise IommufdError(f"{place}: HWPT {o.id} is the parent of nested HWPT(s) "
                               f"{', '.join(map(str, children))} (-EBUSY)")
        if isinstance(o, HwptPaging):
            self._destroy_paging(o)
        else:
            self.journal.issued(self._hwpt_unit(o), ACTOR, "hwpt-destroy", "iommufd-hwpt",
                                f"nested HWPT {o.id} (domain {o.domain.id}) destroyed: IOMMU_DESTROY",
                                "domain", f"HWPT {o.id} parent {o.parent}")
            self.driver.domain_free(o.domain)
            del self.objects[obj_id]

    def _destroy_paging(self, h: HwptPaging) -> None:
        """iommufd_hwpt_paging_destroy(): off ioas->hwpt_list, iopt_table_remove_domain()
        (every area unmapped from the domain), then the domain freed."""
        ioas = self.objects[h.ioas]
        why = ("its last device left: iommufd_hw_pagetable_put() destroys an automatic HWPT" if h.auto
               else "IOMMU_DESTROY")
        self.journal.issued(self._hwpt_unit(h), ACTOR, "hwpt-destroy",
                            "iommufd-auto-domain" if h.auto else "iommufd-hwpt",
                            f"HWPT {h.id} (domain {h.domain.id}) destroyed: {why}; its {len(ioas.areas)} area(s) "
                            "unmapped from the domain (iopt_table_remove_domain), the domain freed",
                            "domain", f"HWPT {h.id} IOAS {ioas.id}")
        ioas.hwpts.remove(h.id)
        for a in ioas.areas:
            self.driver.unmap_range(h.domain, a.iova, a.size, lazy=False)
        self.driver.domain_free(h.domain)
        del self.objects[h.id]

    # ------------------------------------------------------------ HWPT allocation
    def hwpt_alloc(self, dev_id: int, pt_id: int, flags: int = 0, data_type: int = IOMMU_HWPT_DATA_NONE,
                   data: VtdS1 | None = None) -> HwptPaging | HwptNested:
        """IOMMU_HWPT_ALLOC → iommufd_hwpt_alloc(): pt_id an IOAS → a paging HWPT (not
        automatic); a paging HWPT → a nested HWPT over it."""
        place = f"IOMMU_HWPT_ALLOC pt {pt_id} flags {flag_names(flags, HWPT_ALLOC_FLAGS)}"
        # "(cmd->data_type == IOMMU_HWPT_DATA_NONE && cmd->data_len) || (... != NONE && !data_len)"
        if (data_type == IOMMU_HWPT_DATA_NONE) != (data is None):
            raise IommufdError(f"{place}: data_type {data_type} "
                               f"{'with' if data is not None else 'without'} data (-EINVAL)")
        idev = self._device(dev_id, place)
        pt = self.objects.get(pt_id)
        if pt is None:
            raise IommufdError(f"{place}: no object {pt_id} (-EINVAL)")
        if isinstance(pt, Ioas):
            self._check_paging_flags(idev, flags, data, place)
            return self._paging_alloc(idev, pt, flags, auto=False, place=place, attach=False)
        if isinstance(pt, HwptPaging):
            return self._nested_alloc(idev, pt, flags, data_type, data, place)
        raise IommufdError(f"{place}: object {pt_id} is a {pt.kind}: neither an IOAS nor a paging HWPT (-EINVAL)")

    def _check_paging_flags(self, idev: IommufdDevice, flags: int, data, place: str) -> None:
        """iommufd_hwpt_paging_alloc()'s checks, and intel_iommu_domain_alloc_paging_flags()'s
        `if (user_data ...) return ERR_PTR(-EOPNOTSUPP)`."""
        if flags & ~PAGING_VALID_FLAGS:
            raise IommufdError(f"{place}: flags {flags & ~PAGING_VALID_FLAGS:#x} not valid for a paging HWPT "
                               "(-EOPNOTSUPP)")
        if flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING and not self._capable(self._unit(idev), "dirty_tracking"):
            raise IommufdError(f"{place}: {idev.unit} lacks IOMMU_CAP_DIRTY_TRACKING (ECAP.SSADS) (-EOPNOTSUPP)")
        if data is not None:
            raise IommufdError(f"{place}: the Intel driver takes no driver data for a paging domain (-EOPNOTSUPP)")
        if flags & IOMMU_HWPT_FAULT_ID_VALID:
            raise IommufdError(f"{place}: FAULT_ID_VALID names a fault queue object; this model has none, so "
                               "iommufd_get_fault fails (-ENOENT)")

    def _domain_alloc(self, idev: IommufdDevice, flags: int, place: str) -> DmarDomain:
        kw = {}
        if flags & IOMMU_HWPT_ALLOC_NEST_PARENT:
            kw["nest_parent"] = True
        if flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING:
            kw["dirty_tracking"] = True
        try:
            return self.driver.domain_alloc(ACTOR, self._unit(idev), **kw)
        except DriverError as exc:
            raise IommufdError(f"{place}: {with_errno(str(exc), '-EOPNOTSUPP')}") from None

    def _enforce_cc(self, h: HwptPaging) -> bool:
        """iommufd_hwpt_paging_enforce_cc(): already on, or the domain op turns it on."""
        if not h.enforce_cache_coherency:
            h.enforce_cache_coherency = bool(self.driver.enforce_cache_coherency(h.domain))
        return h.enforce_cache_coherency

    def _paging_alloc(self, idev: IommufdDevice, ioas: Ioas, flags: int, *, auto: bool, place: str,
                      attach: bool = True) -> HwptPaging:
        """iommufd_hwpt_paging_alloc(): domain, coherency ("Set the coherency mode before
        we do iopt_table_add_domain()"), the immediate attach of an automatic HWPT (a
        replace attaches after the fill), iopt_table_add_domain(), then on hwpt_list.
        Any failure undoes it all (out_detach / out_abort)."""
        domain = self._domain_alloc(idev, flags, place)
        h = HwptPaging(self._new_id(), ioas.id, domain, auto, bool(flags & IOMMU_HWPT_ALLOC_NEST_PARENT),
                       bool(flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING), False)
        if idev.enforce_cache_coherency and not self._enforce_cc(h):
            self.driver.domain_free(domain)
            raise IommufdError(f"{place}: WARN_ON: {idev.unit} reports IOMMU_CAP_ENFORCE_CACHE_COHERENCY but "
                               f"new domain {domain.id} refused enforce_cache_coherency (-EINVAL)")
        self.objects[h.id] = h  # the object id is taken at allocation
        replace = attach and idev.hwpt is not None
        try:
            if attach and not replace:
                self._do_attach(idev, h, place)
            self._fill(h, ioas, place)
            if replace:
                self._do_attach(idev, h, place)
        except IommufdError:
            if idev.hwpt == h.id:
                self.driver.detach_device(domain, self._unit(idev), idev.sid)
                idev.hwpt = None
            self._unfill(h, ioas)
            self.driver.domain_free(domain)
            del self.objects[h.id]
            raise
        ioas.hwpts.append(h.id)
        self._alloc_event(idev, h, ioas)
        if attach:
            self._event(idev, h, True, "iommufd-auto-domain",
                        f"{idev.bdf} attached to its new automatic HWPT {h.id} ({self._dids(domain)})")
        return h

    def _alloc_event(self, idev: IommufdDevice, h: HwptPaging, ioas: Ioas) -> None:
        if h.enforce_cache_coherency:
            cc = (f"enforce_cache_coherency=true: {idev.unit} has ECAP.SC=1, set before any map so every leaf "
                  "gets SNP (or PGSNP)")
        else:
            cc = (f"enforce_cache_coherency=false: {idev.unit} has ECAP.SC=0 "
                  "(IOMMU_CAP_ENFORCE_CACHE_COHERENCY false at bind)")
        what = "automatic" if h.auto else f"IOMMU_HWPT_ALLOC ({self._flags_text(h)})"
        if h.auto:
            lead = f"no automatic HWPT of IOAS {ioas.id} took {idev.bdf}: new HWPT {h.id}"
        else:
            lead = f"new {what} HWPT {h.id} on IOAS {ioas.id}"
        self.journal.issued(idev.unit, ACTOR, "hwpt-alloc", "iommufd-auto-domain" if h.auto else "iommufd-hwpt",
                            f"{lead} (domain {h.domain.id}, {h.domain.stage} stage, {self._dids(h.domain)}), {cc}; "
                            f"{len(ioas.areas)} area(s) of the IOAS filled in",
                            "domain", f"HWPT {h.id} domain {h.domain.id}", bdf=idev.bdf)

    @staticmethod
    def _flags_text(h: HwptPaging) -> str:
        f = (IOMMU_HWPT_ALLOC_NEST_PARENT if h.nest_parent else 0) | (
            IOMMU_HWPT_ALLOC_DIRTY_TRACKING if h.dirty_tracking else 0)
        return flag_names(f, HWPT_ALLOC_FLAGS)

    def _fill(self, h: HwptPaging, ioas: Ioas, place: str) -> None:
        """iopt_table_add_domain() → iopt_fill_domain(): every area into the new domain;
        "On failure the domain is left unchanged"."""
        done = []
        try:
            for a in ioas.areas:
                self.driver.map_range(h.domain, a.iova, a.hpa, a.size, a.r, a.w)
                done.append(a)
        except DriverError as exc:
            for a in done:
                self.driver.unmap_range(h.domain, a.iova, a.size, lazy=False)
            raise IommufdError(f"{place}: area {a.iova:#x}+{a.size:#x} does not fit domain {h.domain.id}: "
                               f"{with_errno(str(exc), '-EADDRINUSE')}") from None

    def _unfill(self, h: HwptPaging, ioas: Ioas) -> None:
        for a in ioas.areas:
            if self.driver.mapped_in(h.domain, a.iova, a.size):
                self.driver.unmap_range(h.domain, a.iova, a.size, lazy=False)

    def _nested_alloc(self, idev: IommufdDevice, parent: HwptPaging, flags: int, data_type: int, data,
                      place: str) -> HwptNested:
        """iommufd_hwpt_nested_alloc(), then the driver's domain_alloc_nested
        (intel_nested_domain_alloc)."""
        if flags & ~IOMMU_HWPT_FAULT_ID_VALID or data is None:
            raise IommufdError(f"{place}: a nested HWPT takes no flags but FAULT_ID_VALID and needs driver data "
                               "(-EOPNOTSUPP)")
        if parent.auto or not parent.nest_parent:
            why = "an automatic HWPT" if parent.auto else "not allocated with NEST_PARENT"
            raise IommufdError(f"{place}: parent HWPT {parent.id} is {why} (-EINVAL)")
        if flags & IOMMU_HWPT_FAULT_ID_VALID:
            raise IommufdError(f"{place}: FAULT_ID_VALID names a fault queue object; this model has none, so "
                               "iommufd_get_fault fails (-ENOENT)")
        try:
            domain = self.driver.nested_domain_alloc(parent.domain, data_type, data, ACTOR, unit=self._unit(idev))
        except DriverError as exc:
            raise IommufdError(f"{place}: {with_errno(str(exc))}") from None
        h = HwptNested(self._new_id(), parent.id, domain, data)
        self.objects[h.id] = h
        self.journal.issued(idev.unit, ACTOR, "hwpt-alloc", "iommufd-hwpt",
                            f"new nested HWPT {h.id} (domain {domain.id}) over NEST_PARENT HWPT {parent.id} "
                            f"(domain {parent.domain.id}): guest first stage at {data.pgtbl_addr:#x}, "
                            f"{data.addr_width}-bit; it holds no mappings, the parent's second stage translates",
                            "domain", f"HWPT {h.id} domain {domain.id}", bdf=idev.bdf)
        return h

    # ------------------------------------------------------------ IOAS map / unmap
    def ioas_map(self, ioas_id: int, iova: int, size: int, hpa: int, r: bool = True, w: bool = True) -> IoptArea:
        """IOMMU_IOAS_MAP with FIXED_IOVA → iopt_map_pages(): check the range, then
        iopt_fill_domains_pages() into every paging HWPT of the IOAS."""
        place = f"IOMMU_IOAS_MAP {iova:#x}+{size:#x}"
        ioas = self._ioas(ioas_id, place)
        if not (r or w):
            raise IommufdError(f"{place}: neither READABLE nor WRITEABLE (-EINVAL)")
        if size <= 0 or (iova | size | hpa) & (PAGE - 1):
            # The model keeps iova_alignment at PAGE_SIZE, an Intel domain's smallest page.
            raise IommufdError(f"{place}: zero or not 4 KiB aligned: iova_alignment (-EINVAL)")
        if iova < 0 or hpa < 0 or iova + size - 1 > U64_MAX:
            raise IommufdError(f"{place}: range wraps (-EOVERFLOW)")
        for a in ioas.areas:
            if a.iova < iova + size and iova < a.iova + a.size:
                raise IommufdError(f"{place}: overlaps the area at {a.iova:#x}+{a.size:#x} "
                                   "in iopt_check_iova (-EEXIST)")
        area = IoptArea(iova, size, hpa, bool(r), bool(w))
        paging = [self.objects[hid] for hid in ioas.hwpts]
        done = []
        try:
            for h in paging:
                self.driver.map_range(h.domain, iova, hpa, size, area.r, area.w)
                done.append(h)
        except DriverError as exc:
            for h in done:
                self.driver.unmap_range(h.domain, iova, size, lazy=False)
            raise IommufdError(f"{place}: {with_errno(str(exc))}") from None
        self._cpu_flush_event(ioas, area)
        ioas.areas.append(area)
        ioas.areas.sort(key=lambda a: a.iova)
        return area

    def _cpu_flush_event(self, ioas: Ioas, area: IoptArea) -> None:
        """Mainline iommufd never cleans CPU caches for a map (conv_iommu_prot: "We provide
        no manual cache coherency ioctls ... we require the underlying IOMMU to support CPU
        coherent operation"); the 2024 series would clean pages mapped into a HWPT that
        does not enforce coherency, as its type1 patch does (sw/vfio.py)."""
        if not ioas.hwpts:
            return
        detail = f"{area.iova:#x}+{area.size:#x}"
        non = [self.objects[h] for h in ioas.hwpts if not self.objects[h].enforce_cache_coherency]
        if non:
            h = non[0]
            self.journal.skipped(self._hwpt_unit(h), ACTOR, "cpu-cache-flush", "iommufd-noncoherent-flush",
                                 f"mainline: no flush though HWPT {h.id} (domain {h.domain.id}) does not enforce "
                                 "coherency: a non-snooped DMA may read stale RAM under dirty CPU lines "
                                 "(the 2024 proposal would flush)", "page", detail)
        else:
            self.journal.skipped(self._ioas_unit(ioas), ACTOR, "cpu-cache-flush", "iommufd-noncoherent-flush",
                                 "every HWPT of the IOAS enforces coherency: DMA snoops the CPU caches",
                                 "page", detail)

    def ioas_unmap(self, ioas_id: int, iova: int, size: int) -> int:
        """IOMMU_IOAS_UNMAP → iopt_unmap_iova(): whole areas only; returns the bytes
        unmapped.  iova 0 with length U64_MAX is iopt_unmap_all().  Nothing mapped in
        the range: success, 0 bytes ("If there are no mapped entries then success")."""
        place = f"IOMMU_IOAS_UNMAP {iova:#x}+{size:#x}"
        ioas = self._ioas(ioas_id, place)
        if iova == 0 and size == U64_MAX:
            hit = list(ioas.areas)
        else:
            if size <= 0:
                raise IommufdError(f"{place}: zero length (-EINVAL)")
            if iova < 0 or iova >= U64_MAX or size >= U64_MAX or iova + size - 1 > U64_MAX:
                raise IommufdError(f"{place}: range wraps (-EOVERFLOW)")
            last = iova + size - 1
            hit = [a for a in ioas.areas if a.iova <= last and iova <= a.iova + a.size - 1]
            # iopt_unmap_iova_range() walks areas upwards and stops at the first one the
            # range cuts ("area_first < start || area_last > last" → -ENOENT), having
            # already unmapped those below it.  The model checks first and changes
            # nothing, as every failed command here; the message says what the kernel
            # would have left unmapped.
            for k, a in enumerate(hit):
                if a.iova < iova or a.iova + a.size - 1 > last:
                    before = sum(b.size for b in hit[:k])
                    raise IommufdError(f"{place}: cuts the area at {a.iova:#x}+{a.size:#x}; iommufd does not "
                                       f"split areas (the kernel would already have unmapped {before:#x} bytes "
                                       "below it) (-ENOENT)")
        total = 0
        for a in hit:
            for hid in ioas.hwpts:
                self.driver.unmap_range(self.objects[hid].domain, a.iova, a.size, lazy=False)
            ioas.areas.remove(a)
            total += a.size
        return total

    # ------------------------------------------------------------ invalidation
    def hwpt_invalidate(self, hwpt_id: int, data_type: int, entries: list[VtdS1Invalidate]) -> int:
        """IOMMU_HWPT_INVALIDATE → iommufd_hwpt_invalidate(): a nested HWPT's
        domain->ops->cache_invalidate_user; any other object -EINVAL (the source's else
        branch; a vIOMMU object is not modelled).  Returns the entries processed
        (cmd->entry_num is written back even on failure)."""
        place = f"IOMMU_HWPT_INVALIDATE hwpt {hwpt_id}"
        h = self.objects.get(hwpt_id)
        if h is None:
            raise IommufdError(f"{place}: no such object (-ENOENT)")
        if not isinstance(h, HwptNested):
            raise IommufdError(f"{place}: object {hwpt_id} is a {h.kind} "
                               f"{'HWPT' if h.kind == 'paging' else 'object'}: only a nested HWPT takes "
                               "invalidations (-EINVAL)")
        entries = list(entries)
        processed, err = self.driver.nested_cache_invalidate_user(h.domain, data_type, entries)
        every = bool(entries) and all(e.addr == 0 and e.npages == U64_MAX for e in entries)
        scope = "all" if every else "page"
        unit = self._hwpt_unit(h)
        detail = "; ".join(f"addr {e.addr:#x} npages {'U64_MAX' if e.npages == U64_MAX else e.npages}"
                           f"{' LEAF' if e.flags & 1 else ''}" for e in entries[:4]) + (
            f"; +{len(entries) - 4} more" if len(entries) > 4 else "")
        did = next(iter(h.domain.dids.values()), None)
        why = (f"nested HWPT {h.id} (domain {h.domain.id}): {processed} of {len(entries)} entr"
               f"{'y' if len(entries) == 1 else 'ies'} done by intel_nested_cache_invalidate_user"
               + (" (addr 0, npages U64_MAX: everything)" if every else ""))
        if err:
            why += f"; stopped at entry {processed}: {err}"
        rec = self.journal.issued if processed else self.journal.skipped
        rec(unit, ACTOR, "hwpt-invalidate", "iommufd-invalidate", why if entries else
            f"nested HWPT {h.id}: an empty array, nothing to do", scope, detail, did=did)
        if err:
            raise IommufdError(f"{place}: {processed} of {len(entries)} entries done; {with_errno(err)}")
        return processed

    # ------------------------------------------------------------ queries
    def get_hw_info(self, dev_id: int) -> HwInfoVtd:
        """IOMMU_GET_HW_INFO → intel_iommu_hw_info()."""
        idev = self._device(dev_id, "IOMMU_GET_HW_INFO")
        return self.driver.hw_info(self._unit(idev))

    def enforced_coherent(self, dev_id: int) -> bool:
        """vfio_file_enforced_coherent() of a vfio cdev (≥6.6): `device_iommu_capable(
        device->dev, IOMMU_CAP_ENFORCE_CACHE_COHERENCY)` — the unit's ECAP.SC, whatever
        HWPT the device sits in (KVM's view, not the HWPT's)."""
        idev = self._device(dev_id, "enforced_coherent")
        return self._capable(self._unit(idev), "enforce_cache_coherency")

    def to_json(self) -> dict:
        """DESIGN.md's "iommufd" state."""
        def bdfs(h) -> list[str]:
            return [self.objects[d].bdf for d in h.devices]

        hwpts = []
        for h in self.hwpts:
            if isinstance(h, HwptPaging):
                hwpts.append({"id": h.id, "kind": "paging", "auto": h.auto, "nest_parent": h.nest_parent,
                              "domain": h.domain.id, "parent": None,
                              "enforce_cache_coherency": h.enforce_cache_coherency, "devices": bdfs(h)})
            else:
                parent = self.objects.get(h.parent)
                hwpts.append({"id": h.id, "kind": "nested", "auto": False, "nest_parent": False,
                              "domain": h.domain.id, "parent": h.parent,
                              # PGSNP of a nested PASID entry follows the parent's force_snooping.
                              "enforce_cache_coherency": bool(parent and parent.enforce_cache_coherency),
                              "devices": bdfs(h)})
        return {
            "ioas": [{"id": i.id, "mappings": [{"iova": f"{a.iova:#x}", "size": f"{a.size:#x}",
                                                 "hpa": f"{a.hpa:#x}"} for a in i.areas]} for i in self.ioas],
            "hwpts": hwpts,
        }


def _b(v: bool) -> str:
    return "true" if v else "false"


def _tail(exc: Exception) -> str:
    """The driver's words inside an IommufdError ("place: HWPT n: why (-E...)")."""
    text = str(exc)
    return text.split(": ", 2)[-1] if text.count(": ") >= 2 else text
