"""The Linux intel-iommu driver (drivers/iommu/intel/), as policy over vtdtui.hw.

Every flush the driver considers becomes a journal event, issued or skipped, with the
rule that decided it (REFERENCE.md §5).  Capability bits are read at each decision,
never cached, so a toggle takes effect on the next step — where the kernel decides
something once at boot (strict vs lazy unmap) that is said in the event's reason.

Functions named in comments are the kernel's, so each step can be checked there.
"""

from __future__ import annotations

import heapq
import re
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..hw import regs
from ..hw.entries import (
    CONTEXT_ENTRY_SIZE, PTE_ADDR_MASK, ROOT_ENTRY_SIZE, TT_MULTI_LEVEL, ContextEntry, Pte, RootEntry,
    bdf_str, level_index, level_shift,
)
from ..hw.memory import PAGE_SIZE, CpuCache, PageAllocator, stepped_words
from ..hw.sm_entries import FsPte
from ..hw.unit import DmarUnit
from .cache_tag import CacheTag, CacheTags, calculate_psi_aligned_address
from .iommufd_uapi import (
    IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17, IOMMU_HWPT_DATA_VTD_S1, IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
    IOMMU_VTD_INV_FLAGS_LEAF, U64_MAX, HwInfoVtd, VtdS1, VtdS1Invalidate,
)
from .journal import INVALIDATION_OPS, EventData, Journal, QiWords, RegWrite
from .pasid import ScalableMode, SmDeviceInfo

ACTOR = "driver"
VTD_PAGE = PAGE_SIZE

# Queued invalidation as drivers/iommu/intel/dmar.c and iommu.h have it.
QI_LENGTH = 256  # descriptors in the queue (IQA.QS=0) and status words in qi->desc_status
QI_FREE, QI_IN_USE, QI_DONE, QI_ABORT = range(4)  # enum of qi->desc_status[] values
QI_MAX_BATCHED_DESC_COUNT = 16  # struct qi_batch (cache.c, v6.12+)


class DriverError(Exception):
    """An operation the kernel would refuse (returns -EINVAL, -EBUSY ...)."""


@dataclass
class DmarDomain:
    """struct dmar_domain: one page table, a DID on each unit it is attached to."""

    id: int
    levels: int
    pgd: int
    owner: str  # "vfio" (UNMANAGED, strict) or "driver" (DMA API, may be lazy)
    dids: dict[str, int] = field(default_factory=dict)  # unit name → DID
    devices: dict[int, str] = field(default_factory=dict)  # source id → unit name
    coherent: bool = True  # domain->iommu_coherency, fixed at allocation
    force_snooping: bool = False
    has_mappings: bool = False
    # Largest leaf level (1 4K, 2 2M, 3 1G): domain->iommu_superpage of the unit it was
    # allocated for (paging_domain_alloc), fixed from then on; units that cannot walk
    # its page sizes are refused at attach, not given a smaller domain.
    superpage_level: int = 0
    gaw: int = 0  # domain->gaw: address width of the unit it was allocated for
    # "first" (intel_fs_paging_domain_ops: IA-32e tables, PASID entry PGTT 1), "second"
    # (legacy, or PGTT 2), "identity" (pass-through, PGTT 4) or "nested" (PGTT 3).
    stage: str = "second"
    kernel_sm: bool = False  # allocated by a kernel with intel_iommu_sm on
    tags: list[CacheTag] = field(default_factory=list)  # domain->cache_tags (scalable mode)
    mapped_pages: int = 0  # 4 KiB pages mapped
    # iommufd (REFERENCE-2 §14.8, §16): a second stage allocated with
    # IOMMU_HWPT_ALLOC_NEST_PARENT (dmar_domain->nested_parent) takes no read-only maps
    # (ERRATA_772415_SPR17) and may carry nested domains; `dirty_tracking` is the
    # IOMMU_HWPT_ALLOC_DIRTY_TRACKING flag (domain.dirty_ops set), `dirty_enabled` the
    # kernel's dmar_domain->dirty_tracking, switched on later by
    # IOMMU_HWPT_SET_DIRTY_TRACKING, which is what sets SSADE in PASID entries.
    nest_parent: bool = False
    dirty_tracking: bool = False
    dirty_enabled: bool = False
    s1_domains: list[int] = field(default_factory=list)  # a nest parent's nested domains (ids)
    # A nested domain (stage "nested", IOMMU_DOMAIN_NESTED): its s2_domain and the guest's
    # first-stage configuration.  Its pgd is s1.pgtbl_addr, a guest-physical address the
    # driver never walks or frees.
    parent: "DmarDomain | None" = None
    s1: VtdS1 | None = None
    flush_queue: list[tuple[int, int]] = field(default_factory=list)  # deferred (iova, size)
    freed_tables: list[int] = field(default_factory=list)  # freed after the next flush

    @property
    def agaw(self) -> int:
        return self.levels - 2


@dataclass
class QiBatch:
    """struct qi_batch: one flush operation's descriptors for one unit, not yet submitted."""

    unit: DmarUnit | None = None
    descs: list = field(default_factory=list)


class IntelIommuDriver(ScalableMode, CacheTags):
    """One kernel's intel-iommu driver, over the units it owns (host or guest).

    `intel_iommu_sm`: the kernel's scalable-mode switch (CONFIG_INTEL_IOMMU_SCALABLE_MODE_
    DEFAULT_ON, `intel_iommu=sm_on|sm_off`); a unit runs scalable mode iff it is on and
    the unit has ECAP.SMTS (sm_supported).  `ats`: the devices (source ids, or a
    predicate on one) with a PCIe ATS capability; the driver enables ATS on them in
    scalable mode where the unit has ECAP.DT.  `pasid_devices`: likewise, the devices
    with a PCIe PASID capability (none by default)."""

    def __init__(
        self,
        journal: Journal,
        cache: CpuCache,
        alloc: PageAllocator,
        units: list[DmarUnit],
        *,
        lazy_default: bool = True,
        domain_ids: list[int] | None = None,
        intel_iommu_sm: bool = False,
        ats=None,
        pasid_devices=None,
    ):
        self.journal = journal
        self.cache = cache
        self.alloc = alloc
        self.units = {u.name: u for u in units}
        self.domains: dict[int, DmarDomain] = {}
        self._ids = domain_ids if domain_ids is not None else [1]  # shared with other kernels' drivers
        self.lazy_default = lazy_default  # CONFIG_IOMMU_DEFAULT_DMA_LAZY, x86's default
        # What-if switches: the driver deliberately gets it wrong.
        self.skip_clflush = False
        self.skip_invalidation = False
        self._root: dict[str, int] = {}
        self._did_used: dict[str, set[int]] = {u.name: set() for u in units}
        # The IDA's state, so an allocation costs O(log n), not a scan: freed DIDs
        # (min-heap: ida_alloc_range hands out the lowest free one) and the next unused.
        self._did_free: dict[str, list[int]] = {u.name: [] for u in units}
        self._did_next: dict[str, int] = {u.name: 2 for u in units}
        # dev_iommu_priv_get(dev)->domain: (unit, source id) → the domain it is attached to.
        self._attached: dict[tuple[str, int], DmarDomain] = {}
        self._qi_status: dict[str, int] = {}  # unit → page of its qi->desc_status words
        self._batch: QiBatch | None = None  # the open qi_batch of the flush in progress
        self.ats: set[int] = set()  # source ids with ATS enabled (info->ats_enabled)
        self.intel_iommu_sm = intel_iommu_sm
        self._ats_cap = ats if ats is not None else set()
        self._pasid_cap = pasid_devices if pasid_devices is not None else set()
        self._sm_dev: dict[tuple[str, int], SmDeviceInfo] = {}  # scalable-mode device_domain_info
        # A queued descriptor's journal event (by id), which gets the wait words at submit.
        self._qi_owner: dict[int, int] = {}

    # ------------------------------------------------------------ small helpers
    def _ev(self, unit: DmarUnit, op: str, issued: bool, rule: str, reason: str, scope: str = "", detail: str = "",
            data: EventData | None = None, **keys):
        """Record a decision.  Invalidations carry did / pasid / bdf: given by the
        caller, else read from the legacy detail ("bb:dd.f DID n", "DID n ...", "bb:dd.f")."""
        rec = self.journal.issued if issued else self.journal.skipped
        if op in INVALIDATION_OPS and not keys:
            keys = _keys_from_detail(detail)
        return rec(unit.name, ACTOR, op, rule, reason, scope, detail, data, **keys)

    @staticmethod
    def _error(message: str) -> "DriverError":
        return DriverError(message)

    def _write(self, addr: int, value: int) -> None:
        self.cache.cpu_write_q(addr, value)

    def _read(self, addr: int) -> int:
        return self.cache.cpu_read_q(addr)

    def flush_cache(self, unit: DmarUnit, addr: int, size: int, what: str, coherent: bool | None = None) -> None:
        """__iommu_flush_cache / domain_flush_cache: clflush iff the walk does not snoop.

        Root and context entries (`coherent` None): __iommu_flush_cache() tests
        ecap_coherent() at each call, so the unit's ECAP.C now decides.  Domain page
        tables (`coherent` given): domain_flush_cache() tests domain->iommu_coherency,
        set once in paging_domain_alloc() from the unit the domain was allocated on;
        after a toggle of ECAP.C the reason says the two differ, so the journal never
        contradicts the C badge on screen."""
        domain_flush = coherent is not None
        coherent = unit.coherent if coherent is None else coherent
        detail = f"{what} {addr:#x}+{size:#x}"
        kept = domain_flush and coherent != unit.coherent
        if kept:
            # Which domain: the flush does not say, so name it when only one domain on
            # this unit (or the one whose top level this is) has that coherency.
            mine = [d for d in self.domains.values() if d.coherent == coherent
                    and (unit.name in d.dids or d.pgd == addr & ~0xFFF)]
            whose = f"domain {mine[0].id}" if len(mine) == 1 else "the domain"
            was = (f"{whose} was allocated on a {'' if coherent else 'non-'}coherent unit "
                   f"(iommu_coherency={int(coherent)}); ECAP.C is now {int(unit.coherent)}: "
                   "the kernel keeps the coherency fixed at allocation")
        if coherent:
            why = f"{was}, so no clflush" if kept else "ECAP.C=1: page walks snoop the CPU cache"
            self._ev(unit, "clflush", False, "clflush", why, detail=detail)
        elif self.skip_clflush:
            why = "what-if: driver skips clflush on a non-coherent unit"
            self._ev(unit, "clflush", False, "clflush", f"{why} ({was})" if kept else why, detail=detail)
        else:
            self.cache.clflush(addr, size)
            why = f"{was} and still clflushes" if kept else "ECAP.C=0: page walks read memory, not the CPU cache"
            self._ev(unit, "clflush", True, "clflush", why, detail=detail)

    def flush_write_buffer(self, unit: DmarUnit, why: str) -> None:
        """iommu_flush_write_buffer(): only when CAP.RWBF (or the rwbf quirk)."""
        if unit.rwbf:
            unit.mmio_write(regs.GCMD_REG, unit.gcmd | regs.GCMD_WBF)
            self._ev(unit, "write-buffer-flush", True, "wbf", f"{why}; CAP.RWBF=1: posted writes must be flushed")
        else:
            self._ev(unit, "write-buffer-flush", False, "wbf", f"{why}; CAP.RWBF=0: no write buffer to flush")

    # ------------------------------------------------------------ invalidation primitives
    def _qi_on(self, unit: DmarUnit) -> bool:
        return bool(unit.gsts & regs.GSTS_QIES)

    def _desc_status(self, unit: DmarUnit) -> int:
        """Address of the unit's qi->desc_status[QI_LENGTH] (32-bit words, one per queue
        slot), allocated with the queue as dmar_enable_qi() does."""
        if unit.name not in self._qi_status:
            self._qi_status[unit.name] = self.alloc.alloc()
        return self._qi_status[unit.name]

    def _status_word(self, addr: int, value: int | None = None) -> int:
        """Read (or write) one 32-bit desc_status word through the CPU."""
        word, shift = addr & ~7, (addr & 4) * 8
        old = self._read(word)
        if value is not None:
            self._write(word, (old & ~(0xFFFFFFFF << shift)) | (value << shift))
        return (old >> shift) & 0xFFFFFFFF

    def _qi_submit_sync(self, unit: DmarUnit, descs: list) -> bool:
        """qi_submit_sync() (dmar.c): the descriptors, then one wait descriptor
        `QI_IWD_STATUS_DATA(QI_DONE) | QI_IWD_STATUS_WRITE | QI_IWD_TYPE` (SW=1, IF=0,
        FN=0) whose status address is &qi->desc_status[wait_index]; one tail write, then
        poll that word for QI_DONE.  True when it came; the callers (qi_flush_*,
        qi_batch_flush_descs) ignore the outcome, as the kernel's do."""
        from ..hw import qi

        owners = [self._qi_owner.pop(id(d), None) for d in descs]
        if not self._qi_on(unit):
            return False  # `if (!qi) return 0;`: no queue, nothing is sent
        status = self._desc_status(unit)
        count = len(descs)
        # qi->free_head / free_tail: the queue drains on each tail write here, so the
        # software indices are the unit's IQT and IQH.
        # qi_shift(iommu) = DMAR_IQ_SHIFT + !!ecap_smts: IQH/IQT hold index << 5 for a
        # 256-bit queue (IQA.DW=1).
        shift = 5 if unit.mmio_read(regs.IQA_REG) & regs.IQA_DW else 4
        index = unit.mmio_read(regs.IQT_REG) >> shift
        busy = (index - (unit.mmio_read(regs.IQH_REG) >> shift)) % QI_LENGTH
        if QI_LENGTH - busy < count + 2:  # "# of desc + 1 wait desc + 1 space between head and tail"
            return False  # the kernel spins until a stopped queue moves again
        slots = [status + 4 * ((index + i) % QI_LENGTH) for i in range(count + 1)]
        for a in slots:
            self._status_word(a, QI_IN_USE)
        wait = qi.WaitDesc(status_write=True, status_data=QI_DONE, status_addr=slots[-1])
        unit.submit(*descs, wait)
        self._qi_attach_wait(owners, index, count, wait)
        # A queue stopped by FSTS.IQE never writes QI_DONE: the kernel then sits in
        # qi_check_fault(); the model stops waiting and leaves IQE on the unit to see.
        done = self._status_word(slots[-1]) == QI_DONE
        for a in slots:  # handed back for reclaim_free_desc()
            self._status_word(a, QI_FREE)
        return done

    def _qi_attach_wait(self, owners: list, index: int, count: int, wait) -> None:
        """Each journal event with descriptors in this submission learns their queue
        slots and the wait descriptor that closed it (qi_submit_sync's wait_index)."""
        words = QiWords(*wait.encode(), slot=(index + count) % QI_LENGTH)
        mine: dict[int, list[int]] = {}
        for i, seq in enumerate(owners):
            if seq is not None:
                mine.setdefault(seq, []).append((index + i) % QI_LENGTH)
        for seq, slots in mine.items():
            if 0 < seq <= len(self.journal.events):
                self.journal.amend(self.journal.events[seq - 1], wait=words, slots=tuple(slots))

    def _qi_queue(self, ev, desc) -> None:
        """qi_batch_add_*() / qi_desc_*(): the descriptor is encoded now, so its words go
        on the event at once; its queue slot and wait follow at submission."""
        if ev is not None:
            self.journal.amend(ev, descriptors=(QiWords(*desc.encode()),))
            self._qi_owner[id(desc)] = ev.seq

    @contextmanager
    def qi_batch(self):
        """domain->qi_batch of cache_tag_flush_range() / _range_np() / _all() (cache.c,
        v6.12+): IOTLB and device-TLB descriptors queue up per unit and go out in one
        qi_submit_sync() when the unit changes, when QI_MAX_BATCHED_DESC_COUNT are
        queued, and when the flush ends.  Nested scopes share the outermost batch."""
        if self._batch is not None:
            yield
            return
        self._batch = QiBatch()
        try:
            yield
        finally:
            batch, self._batch = self._batch, None
            self._qi_batch_flush(batch)

    def _qi_batch_flush(self, batch: QiBatch) -> None:
        """qi_batch_flush_descs()."""
        if batch.unit is not None and batch.descs:
            descs, batch.descs = batch.descs, []
            self._qi_submit_sync(batch.unit, descs)

    def _qi_switch(self, unit: DmarUnit) -> QiBatch | None:
        """The open batch, flushed first if it holds another unit's descriptors
        (cache_tag_flush_range: `if (iommu && iommu != tag->iommu) qi_batch_flush_descs`)."""
        batch = self._batch
        if batch is not None and batch.unit is not unit:
            self._qi_batch_flush(batch)
            batch.unit = unit
        return batch

    def _qi_send(self, unit: DmarUnit, desc, ev=None) -> None:
        """qi_batch_add_*() inside a batch (qi_batch_increment_index submits at 16), else
        one qi_submit_sync() for this descriptor (qi_flush_iotlb, qi_flush_dev_iotlb).
        `ev`: the journal event this descriptor carries out."""
        self._qi_queue(ev, desc)
        batch = self._qi_switch(unit)
        if batch is None:
            self._qi_submit_sync(unit, [desc])
            return
        batch.descs.append(desc)
        if len(batch.descs) == QI_MAX_BATCHED_DESC_COUNT:
            self._qi_batch_flush(batch)

    def _flush_context(self, unit: DmarUnit, gran: int, did: int = 0, sid: int = 0, fm: int = 0,
                       ev=None) -> None:
        """iommu->flush.flush_context: qi_flush_context (one qi_submit_sync of its own,
        never batched) or __iommu_flush_context.  `ev`: the issued journal event this
        carries out, which gets the descriptor words or register writes."""
        from ..hw import qi

        batch = self._qi_switch(unit)
        if batch is not None:
            self._qi_batch_flush(batch)  # keep program order with anything queued before
        if self._qi_on(unit):
            desc = qi.CcDesc(gran, did, sid, fm)
            self._qi_queue(ev, desc)
            self._qi_submit_sync(unit, [desc])
        else:
            value = regs.CCMD_ICC | (gran << regs.CCMD_CIRG_SHIFT) | (fm << 32) | (sid << 16) | did
            back = unit.mmio_write(regs.CCMD_REG, value)
            if ev is not None:
                self.journal.amend(ev, registers=(RegWrite("CCMD", regs.CCMD_REG, value, back),))

    def _flush_iotlb(self, unit: DmarUnit, gran: int, did: int = 0, addr: int = 0, am: int = 0, ih: bool = False,
                     ev=None) -> None:
        """iommu->flush.flush_iotlb (qi_flush_iotlb), qi_batch_add_iotlb inside a
        qi_batch(), or __iommu_flush_iotlb when QI is off.  `ev` as for _flush_context."""
        from ..hw import qi

        if self._qi_on(unit):
            self._qi_send(unit, qi.IotlbDesc(gran, did, addr, am, ih, dr=bool(unit.capf("DRD")),
                                             dw=bool(unit.capf("DWD"))), ev)
        else:
            self._qi_switch(unit)
            iva = addr | (regs.IVA_IH if ih else 0) | am
            iva_back = unit.mmio_write(unit.iotlb_reg, iva)
            cmd = regs.IOTLB_IVT | (gran << regs.IOTLB_IIRG_SHIFT) | (did << 32)
            cmd_back = unit.mmio_write(unit.iotlb_reg + 8, cmd)
            if ev is not None:
                self.journal.amend(ev, registers=(RegWrite("IVA", unit.iotlb_reg, iva, iva_back),
                                                  RegWrite("IOTLB", unit.iotlb_reg + 8, cmd, cmd_back)))

    # ------------------------------------------------------------ boot
    def init_unit(self, unit: DmarUnit, qi_queue: int | None = None) -> None:
        """init_dmars(): root table, SRTP, global flushes, QI, then translation on.

        Scalable mode (sm_supported) follows init_dmars' own order, QI first
        (ScalableMode._init_unit_sm).  The legacy path keeps the model's historical order
        (root table before QI, so its flushes go through the registers)."""
        if self.sm_supported(unit):
            self._init_unit_sm(unit, qi_queue)
            return
        root = self.alloc.alloc()
        self._root[unit.name] = root
        self.flush_cache(unit, root, PAGE_SIZE, "root table")
        unit.set_root_table(root)
        # iommu_set_root_entry(): ESRTPS units invalidate on SRTP themselves.
        if unit.capf("ESRTPS"):
            for op, scope in (("context-cache-invalidation", "global"), ("iotlb-invalidation", "global")):
                self._ev(unit, op, False, "set-root", "CAP.ESRTPS=1: SRTP already invalidated the caches", scope)
        else:
            why = "new root table: drop anything cached"
            self._flush_context(unit, regs.GRAN_GLOBAL,
                                ev=self._ev(unit, "context-cache-invalidation", True, "set-root", why, "global"))
            self._flush_iotlb(unit, regs.GRAN_GLOBAL, ev=self._ev(unit, "iotlb-invalidation", True, "set-root", why,
                                                                  "global"))
        if unit.qi_supported:
            queue = qi_queue if qi_queue is not None else self.alloc.alloc()
            self._desc_status(unit)  # dmar_enable_qi(): qi->desc_status with the queue
            self._enable_qi(unit, queue)
        unit.enable_translation()

    @staticmethod
    def _enable_qi(unit: DmarUnit, queue: int) -> None:
        """dmar_enable_qi() → __dmar_enable_qi(): `if (ecap_smts(iommu->ecap)) val |=
        BIT_ULL(11) | BIT_ULL(0);` ("Set DW=1 and QS=1") — keyed on ECAP.SMTS, not
        sm_supported: sm_off on SMTS hardware still uses 256-bit descriptors."""
        unit.enable_qi(queue, 0, dw=bool(unit.ecapf("SMTS")))

    # ------------------------------------------------------------ domains
    def domain_alloc(self, owner: str, unit: DmarUnit, stage: str | None = None, *, nest_parent: bool = False,
                     dirty_tracking: bool = False) -> DmarDomain:
        """intel_iommu_domain_alloc_paging(): levels from the unit's SAGAW/MGAW.

        Scalable mode (≈6.17+ split, "Prefer first stage if possible by default"):
        intel_iommu_domain_alloc_first_stage() when sm_supported and ECAP.FLTS, else
        intel_iommu_domain_alloc_second_stage(), which refuses `sm_supported &&
        !ecap_slts`.  `stage` forces one ("first", "second", "identity") as a caller of
        the kernel's alloc_paging_flags could; legacy units only take "second".
        domain->iommu_coherency = iommu_paging_structure_coherency(): ECAP.SMPWC in
        scalable mode, ECAP.C in legacy (REFERENCE-2 §14.7).

        `nest_parent` / `dirty_tracking`: IOMMU_HWPT_ALLOC_NEST_PARENT / _DIRTY_TRACKING.
        intel_iommu_domain_alloc_first_stage() returns -EOPNOTSUPP for any flag but PASID,
        so they force a second stage, which refuses NEST_PARENT without nested_supported()
        and DIRTY_TRACKING without ssads_supported() (-EOPNOTSUPP)."""
        sm = self.sm_supported(unit)
        if nest_parent or dirty_tracking:
            self._flags_refusal(unit, stage, nest_parent, dirty_tracking)
            stage = "second"
        if stage is None:
            stage = "first" if sm and unit.ecapf("FLTS") else "second"
        if stage not in ("first", "second", "identity"):
            raise DriverError(f"no {stage!r} paging domain (first, second or identity)")
        if stage != "second" and not sm:
            raise DriverError(f"{unit.name} is not in scalable mode: only second-stage domains (-EOPNOTSUPP)")
        if stage == "first" and not unit.ecapf("FLTS"):
            raise DriverError(f"{unit.name} has no ECAP.FLTS: no first-stage domain (-EOPNOTSUPP)")
        if stage == "second" and sm and not unit.ecapf("SLTS"):
            raise DriverError(f"{unit.name} has no ECAP.SLTS: no second-stage domain in scalable mode (-EOPNOTSUPP)")
        coherent = self.paging_structure_coherency(unit)
        if stage == "first":
            # x86_64 format: 4 levels (48-bit), 5 with CAP.FL5LP where MGAW reaches 57
            # (hw_max_vasz_lg2 57 or 48; the exact test was not read).  Superpages:
            # iommu_superpage_capability(first_stage) = FL1GP ? 2 : 1.
            levels = 5 if unit.capf("FL5LP") and unit.mgaw_bits >= 57 else 4
            d = DmarDomain(self._ids[0], levels, self.alloc.alloc(), owner, coherent=coherent)
            d.superpage_level = 3 if unit.capf("FL1GP") else 2
            d.gaw = 57 if levels == 5 else 48
        else:
            levels = self._levels_for(unit)
            d = DmarDomain(self._ids[0], levels, self.alloc.alloc(), owner, coherent=coherent)
            d.superpage_level = self._superpage_level(unit)
            d.gaw = min(30 + 9 * (levels - 2), unit.mgaw_bits)
        d.stage, d.kernel_sm = stage, self.intel_iommu_sm
        d.nest_parent, d.dirty_tracking = nest_parent, dirty_tracking
        self._ids[0] += 1
        self.domains[d.id] = d
        self.flush_cache(unit, d.pgd, PAGE_SIZE, f"domain {d.id} top-level table", d.coherent)
        return d

    def _flags_refusal(self, unit: DmarUnit, stage: str | None, nest_parent: bool, dirty_tracking: bool) -> None:
        """intel_iommu_domain_alloc_second_stage()'s flag checks (≈6.17 split)."""
        names = "|".join(n for n, on in (("NEST_PARENT", nest_parent), ("DIRTY_TRACKING", dirty_tracking)) if on)
        if stage not in (None, "second"):
            raise DriverError(f"a {stage} domain takes no {names} flag: only a second stage does (-EOPNOTSUPP)")
        if nest_parent and not self.nested_supported(unit):
            why = "not in scalable mode" if not self.sm_supported(unit) else "ECAP.NEST=0"
            raise DriverError(f"{unit.name}: NEST_PARENT needs nested_supported() (scalable mode and "
                              f"ECAP.NEST): {why} (-EOPNOTSUPP)")
        if dirty_tracking and not self.ssads_supported(unit):
            why = ("not in scalable mode" if not self.sm_supported(unit)
                   else f"ECAP.SLADS={unit.ecapf('SLADS')} ECAP.SMPWC={unit.ecapf('SMPWC')}")
            raise DriverError(f"{unit.name}: DIRTY_TRACKING needs ssads_supported() (scalable mode, ECAP.SLADS "
                              f"and ECAP.SMPWC): {why} (-EOPNOTSUPP)")

    # ------------------------------------------------------------ nested domains (nested.c)
    def nested_domain_alloc(self, parent: DmarDomain, data_type: int, s1: VtdS1, owner: str = "iommufd", *,
                            unit: DmarUnit | None = None) -> DmarDomain:
        """intel_iommu_domain_alloc_nested() (≈6.17; intel_nested_domain_alloc before):
        `unit`, the unit of the device the HWPT is allocated for, must be
        nested_supported (-EOPNOTSUPP; the older entry point had no device and did not
        check); data type IOMMU_HWPT_DATA_VTD_S1 (-EOPNOTSUPP); the parent an Intel
        second-stage paging domain with nested_parent (-EINVAL).  The s1 structure is
        copied as it is: iommu_copy_struct_from_user() only refuses trailing bytes past
        the kernel's struct, so a non-zero __reserved inside it passes, and addr_width
        and the flags are checked at attach (intel_pasid_setup_nested).  The domain gets
        no page table of its own: pgd is the guest's pgtbl_addr, a GPA."""
        if unit is not None and not self.nested_supported(unit):
            why = "not in scalable mode" if not self.sm_supported(unit) else "ECAP.NEST=0"
            raise DriverError(f"{unit.name}: no nested translation (nested_supported: {why}) (-EOPNOTSUPP)")
        if data_type != IOMMU_HWPT_DATA_VTD_S1:
            raise DriverError(f"nested domain data type {data_type}: only IOMMU_HWPT_DATA_VTD_S1 "
                              f"({IOMMU_HWPT_DATA_VTD_S1}) (-EOPNOTSUPP)")
        if self.domains.get(parent.id) is not parent or parent.stage != "second":
            raise DriverError(f"domain {parent.id} is not an Intel second-stage paging domain: no parent for a "
                              "nested domain (-EINVAL)")
        if not parent.nest_parent:
            raise DriverError(f"domain {parent.id} was not allocated with NEST_PARENT (-EINVAL)")
        levels = 5 if s1.addr_width == 57 else 4
        d = DmarDomain(self._ids[0], levels, s1.pgtbl_addr, owner, coherent=parent.coherent)
        d.stage, d.kernel_sm, d.gaw = "nested", self.intel_iommu_sm, s1.addr_width
        d.parent, d.s1 = parent, s1
        self._ids[0] += 1
        self.domains[d.id] = d
        parent.s1_domains.append(d.id)  # list_add(&domain->s2_link, &s2_domain->s1_domains)
        return d

    def nested_cache_invalidate_user(self, d: DmarDomain, data_type: int,
                                     entries: list[VtdS1Invalidate]) -> tuple[int, str | None]:
        """intel_nested_cache_invalidate_user(): (entries processed, the refusal ending in
        its errno, or None).  Type IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 else -EINVAL; per
        entry, in order, stopping at the first bad one: flags beyond LEAF or a non-zero
        __reserved -EOPNOTSUPP; an address not 4 KiB aligned, or npages U64_MAX with a
        non-zero address, -EINVAL; else cache_tag_flush_range(domain, addr, addr +
        nrpages_to_size(npages) - 1, flags & LEAF).  nrpages_to_size() is `npages <<
        VTD_PAGE_SHIFT` in an unsigned long, so the end wraps modulo 2^64 as the
        kernel's does (U64_MAX pages from 0: 0xffff_ffff_ffff_efff, which
        calculate_psi_aligned_address turns into a PASID-selective flush)."""
        if d.stage != "nested":
            return 0, f"domain {d.id} is not a nested domain: no cache_invalidate_user (-EOPNOTSUPP)"
        unit = self._nested_anchor(d)
        if data_type != IOMMU_HWPT_INVALIDATE_DATA_VTD_S1:
            why = (f"invalidation data type {data_type}: only IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 "
                   f"({IOMMU_HWPT_INVALIDATE_DATA_VTD_S1}) (-EINVAL)")
            self._nested_refused(unit, d, why)
            return 0, why
        processed = 0
        for i, e in enumerate(entries):
            why = self._inv_entry_refusal(e)
            if why is not None:
                why = f"entry {i}: {why}"
                self._nested_refused(unit, d, why)
                return processed, why
            last = (e.addr + (e.npages << 12 & U64_MAX) - 1) & U64_MAX
            leaf = bool(e.flags & IOMMU_VTD_INV_FLAGS_LEAF)
            if not d.tags and unit is not None:
                self._ev(unit, "piotlb-invalidation", False, "nested-invalidate",
                         f"nested domain {d.id} is attached to no device: it has no cache tags to flush",
                         "page", f"{e.addr:#x}..{last:#x}")
            self.cache_tag_flush_range(d, e.addr, last, leaf, "nested-invalidate",
                                       f"IOMMU_HWPT_INVALIDATE entry {i} on nested domain {d.id}: addr {e.addr:#x} "
                                       f"npages {e.npages:#x}{' LEAF' if leaf else ''}")
            processed += 1
        return processed, None

    @staticmethod
    def _inv_entry_refusal(e: VtdS1Invalidate) -> str | None:
        for name, v in (("addr", e.addr), ("npages", e.npages), ("flags", e.flags), ("__reserved", e.reserved)):
            if not isinstance(v, int) or not 0 <= v <= (U64_MAX if name in ("addr", "npages") else 0xFFFFFFFF):
                return f"{name} {v!r} does not fit its field (-EINVAL)"
        if e.flags & ~IOMMU_VTD_INV_FLAGS_LEAF or e.reserved:
            return (f"flags {e.flags:#x} (only IOMMU_VTD_INV_FLAGS_LEAF) or __reserved {e.reserved:#x} "
                    "not supported (-EOPNOTSUPP)")
        if e.addr & (VTD_PAGE - 1):
            return f"addr {e.addr:#x} is not 4 KiB aligned (-EINVAL)"
        if e.npages == U64_MAX and e.addr:
            return f"npages U64_MAX (everything) needs addr 0, not {e.addr:#x} (-EINVAL)"
        return None

    def _nested_anchor(self, d: DmarDomain) -> DmarUnit | None:
        """A unit to file a nested domain's events under: one it is attached on, else one
        of its parent's."""
        names = list(d.dids) or [t.unit for t in d.tags] or list(d.parent.dids) or [t.unit for t in d.parent.tags]
        return self.units[names[0]] if names else None

    def _nested_refused(self, unit: DmarUnit | None, d: DmarDomain, why: str) -> None:
        if unit is not None:
            self._ev(unit, "piotlb-invalidation", False, "nested-invalidate", why, "page", f"nested domain {d.id}")

    # ------------------------------------------------------------ iommufd queries
    def hw_info(self, unit: DmarUnit) -> HwInfoVtd:
        """intel_iommu_hw_info(): the errata flag, unconditionally, and the raw CAP/ECAP."""
        return HwInfoVtd(flags=IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17, cap_reg=unit.cap, ecap_reg=unit.ecap)

    def capable(self, unit: DmarUnit, cap: str) -> bool:
        """intel_iommu_capable(): IOMMU_CAP_CACHE_COHERENCY always, _ENFORCE_CACHE_COHERENCY
        from ECAP.SC (whatever the domain's stage), _DIRTY_TRACKING from ssads_supported."""
        if cap == "cache_coherency":
            return True
        if cap == "enforce_cache_coherency":
            return bool(unit.ecapf("SC"))
        if cap == "dirty_tracking":
            return self.ssads_supported(unit)
        return False

    @staticmethod
    def _levels_for(unit: DmarUnit) -> int:
        # width_to_agaw(min(57, MGAW)), then the next level SAGAW supports.
        width = min(57, unit.mgaw_bits)
        agaw = max(1, -(-(width - 30) // 9))
        for aw in range(agaw, 4):
            if unit.aw_supported(aw):
                return aw + 2
        for aw in range(agaw - 1, 0, -1):
            if unit.aw_supported(aw):
                return aw + 2
        raise DriverError(f"{unit.name}: SAGAW {unit.capf('SAGAW'):#x} supports no usable width")

    @staticmethod
    def superpage_levels(unit: DmarUnit) -> int:
        """The largest leaf level the unit's SLLPS allows: 1 4K, 2 2M, 3 1G."""
        return IntelIommuDriver._superpage_level(unit)

    @staticmethod
    def _superpage_level(unit: DmarUnit) -> int:
        """iommu_superpage_capability() (second stage: fls(cap_super_page_val)) turned into
        domain_super_pgsize_bitmap()'s sizes: 1 → 2M, 2 → 2M+1G, anything else none."""
        levels = unit.capf("SLLPS").bit_length()
        return {1: 2, 2: 3}.get(levels, 1)

    def domain_free(self, d: DmarDomain) -> None:
        """intel_iommu_domain_free() / intel_nested_domain_free().  A nest parent with
        nested domains is refused: iommufd holds a reference on the parent HWPT for each
        nested HWPT, so its destroy fails with -EBUSY first (the driver only WARNs).  A
        nested domain unlinks from its parent's s1_domains and frees no table: its pgd
        is the guest's."""
        if d.devices:
            raise DriverError(f"domain {d.id} still has devices attached (-EBUSY)")
        if d.s1_domains:
            kids = ", ".join(str(i) for i in d.s1_domains)
            raise DriverError(f"domain {d.id} is the parent of nested domain(s) {kids} (-EBUSY)")
        if d.stage == "nested":
            if d.id in d.parent.s1_domains:  # list_del(&dmar_domain->s2_link)
                d.parent.s1_domains.remove(d.id)
            self.domains.pop(d.id, None)
            return
        tables: list[int] = []
        self._collect(d.pgd, d.levels, tables)
        for t in tables:
            self.alloc.free(t)
        self.domains.pop(d.id, None)

    def _domain_coherent(self, d: DmarDomain) -> bool:
        """domain->iommu_coherency: the unit's ECAP.C when the domain was allocated
        (paging_domain_alloc); PTE flushes follow it, not a later toggle."""
        return d.coherent

    def first_level_by_default(self, unit: DmarUnit) -> bool:
        """first_level_by_default(iommu) (≈6.13, J): `if (!sm_supported(iommu)) return
        false; if (ecap_flts ^ ecap_slts) return ecap_flts; return true;`."""
        if not self.sm_supported(unit):
            return False
        flts, slts = bool(unit.ecapf("FLTS")), bool(unit.ecapf("SLTS"))
        return flts if flts != slts else True

    def enforce_cache_coherency(self, d: DmarDomain) -> bool:
        """intel_iommu_enforce_cache_coherency(): force SNP, if every unit has SC
        and the domain has no mappings yet.

        First stage (intel_iommu_enforce_cache_coherency_fs, ≈6.17): allowed with
        mappings present — PGSNP is per PASID entry, so each attached device's entry
        gets it through intel_pasid_setup_page_snoop_control() + intel_pasid_flush_present()."""
        if d.stage == "first":
            return self._enforce_fs(d)
        units = [self.units[n] for n in d.dids]
        anchor = units[0] if units else next(iter(self.units.values()))
        no_sc = [u.name for u in units if not u.sc]
        if no_sc:
            self.journal.skipped(anchor.name, ACTOR, "enforce-cache-coherency", "snp",
                                 f"ECAP.SC=0 on {', '.join(no_sc)}: DMA cannot be forced to snoop",
                                 "domain", f"domain {d.id}")
            return False
        if not d.force_snooping and d.has_mappings:
            self.journal.skipped(anchor.name, ACTOR, "enforce-cache-coherency", "snp",
                                 "domain already has mappings without SNP", "domain", f"domain {d.id}")
            return False
        d.force_snooping = True
        self.journal.issued(anchor.name, ACTOR, "enforce-cache-coherency", "snp",
                            "ECAP.SC=1 on every attached unit: new leaf entries get SNP", "domain", f"domain {d.id}")
        return True

    # ------------------------------------------------------------ attach / detach
    def _alloc_did(self, unit: DmarUnit) -> int:
        # ida_alloc_range(IDA_START_DID=2, ndoms-1): DID 0 tags caching-mode entries,
        # DID 1 (FLPT_DEFAULT_DID) is kept for pass-through and first-level use.
        free, name = self._did_free[unit.name], unit.name
        if free:
            did = heapq.heappop(free)
        elif self._did_next[name] < unit.ndoms:
            did = self._did_next[name]
            self._did_next[name] += 1
        else:
            raise DriverError(f"{unit.name}: No free domain ids")
        self._did_used[name].add(did)
        return did

    def _free_did(self, unit: DmarUnit, did: int) -> None:
        self._did_used[unit.name].discard(did)
        heapq.heappush(self._did_free[unit.name], did)

    def attached_domain(self, source_id: int, unit: DmarUnit) -> DmarDomain | None:
        return self._attached.get((unit.name, source_id))

    @staticmethod
    def incompatible(d: DmarDomain, unit: DmarUnit) -> str | None:
        """paging_domain_compatible(): why `unit` cannot take domain `d` (the kernel
        refuses with -EINVAL, and no message), or None.

        Page sizes follow paging_domain_compatible_second_stage() ("iommu/vt-d: Split
        paging_domain_compatible()", Jul 2025, ≈6.17): every size in the domain's
        pgsize_bitmap must be in the unit's CAP.SLLPS.  ≈6.12–6.16 demanded
        iommu_superpage equality; before that domain_update_iommu_superpage() shrank the
        domain to the smallest unit — either way a unit with fewer sizes is refused."""
        sm = d.kernel_sm and bool(unit.ecapf("SMTS"))  # sm_supported() of the domain's kernel
        if d.stage in ("first", "identity"):
            return IntelIommuDriver._incompatible_first(d, unit, sm)
        if sm and not unit.ecapf("SLTS"):
            return f"{unit.name} has no ECAP.SLTS: it cannot walk second-stage domain {d.id}"
        if d.dirty_tracking and not (sm and unit.ecapf("SLADS") and unit.ecapf("SMPWC")):
            # paging_domain_compatible(): `domain->dirty_ops && !ssads_supported(iommu)`
            return f"{unit.name} cannot track dirty pages (ssads_supported) for domain {d.id}"
        sllps = unit.capf("SLLPS")
        for level, bit, size in ((2, 0, "2M"), (3, 1, "1G")):
            if d.superpage_level >= level and not sllps >> bit & 1:
                return (f"{unit.name} CAP.SLLPS={sllps:#x} has no {size} pages; domain {d.id} "
                        f"was allocated with them (same page size support)")
        if d.force_snooping and not unit.sc:
            return f"{unit.name} has no snoop control; domain {d.id} enforces coherency"
        walk = bool(unit.ecapf("SMPWC")) if sm else unit.coherent
        if d.coherent != walk:
            name = "ECAP.SMPWC" if sm else "ECAP.C"
            return (f"{unit.name} {name}={int(walk)} differs from domain {d.id}'s page-walk "
                    f"coherency (iommu_coherency={int(d.coherent)}, fixed at allocation)")
        levels = IntelIommuDriver._levels_for(unit)
        width = min(30 + 9 * (levels - 2), unit.mgaw_bits)
        if d.gaw > width or d.levels > levels:
            return f"{unit.name} cannot walk domain {d.id}'s {d.levels}-level, {d.gaw}-bit table"
        return None

    @staticmethod
    def _incompatible_first(d: DmarDomain, unit: DmarUnit, sm: bool) -> str | None:
        """paging_domain_compatible() for a first-stage domain (G17
        paging_domain_compatible_first_stage): "Only SL is available in legacy mode"."""
        if not sm or not unit.ecapf("FLTS"):
            return f"{unit.name} runs no first stage (scalable mode and ECAP.FLTS needed) for domain {d.id}"
        if d.force_snooping and not unit.sc:
            return f"{unit.name} has no snoop control; domain {d.id} enforces coherency"
        if d.superpage_level >= 3 and not unit.capf("FL1GP"):
            return f"{unit.name} CAP.FL1GP=0 has no first-stage 1G pages; domain {d.id} was allocated with them"
        if d.levels == 5 and not unit.capf("FL5LP"):
            return f"{unit.name} CAP.FL5LP=0 cannot walk domain {d.id}'s 5-level first stage"
        if d.coherent and not unit.ecapf("SMPWC"):
            return (f"{unit.name} ECAP.SMPWC=0 but domain {d.id} flushes no page-table writes "
                    f"(iommu_coherency=1, fixed at allocation)")
        return None

    def attach_device(self, d: DmarDomain, unit: DmarUnit, source_id: int) -> None:
        """intel_iommu_attach_device(): block the old domain, check compatibility,
        domain_attach_iommu() and domain_context_mapping_one().  A nested domain goes
        through intel_nested_attach_dev()."""
        if d.stage == "nested":
            self._attach_nested(d, unit, source_id)
            return
        why = self.incompatible(d, unit)
        if why is not None:
            raise DriverError(f"{why} (-EINVAL)")
        old = self.attached_domain(source_id, unit)
        if old is d:
            return
        if old is not None:
            self.detach_device(old, unit, source_id)
        if self.sm_supported(unit):
            self._attach_sm(d, unit, source_id)
            return
        if unit.name not in d.dids:
            d.dids[unit.name] = self._alloc_did(unit)
        d.devices[source_id] = unit.name
        self._attached[(unit.name, source_id)] = d
        self._context_mapping_one(d, unit, source_id)

    def nested_attach_refusal(self, d: DmarDomain, unit: DmarUnit) -> str | None:
        """Why intel_nested_attach_dev() would fail on `unit`, as its message and errno,
        or None.  In the kernel these come after device_block_translation(), and a
        failure leaves the core to put the old domain back (__iommu_group_set_domain's
        rollback), so the net state is the old one: the model checks first instead."""
        if not self.sm_supported(unit):
            # Legacy mode allocates no PASID table: intel_pasid_get_entry() returns NULL.
            return (f"{unit.name} is not in scalable mode: no PASID table for a nested entry "
                    "(Failed to setup pasid entry) (-ENODEV)")
        # `iommu->agaw < s2_domain->agaw`: the kernel gives a second stage the unit's
        # agaw (paging_domain_alloc); the model sizes second stages by SAGAW/MGAW
        # (_levels_for), so that is the unit's width compared here.
        agaw = self._levels_for(unit) - 2
        if agaw < d.parent.agaw:
            return (f"Adjusted guest address width not compatible: {unit.name} AGAW {agaw} < "
                    f"parent domain {d.parent.id} AGAW {d.parent.agaw} (-ENODEV)")
        why = self.incompatible(d.parent, unit)
        if why is not None:
            return f"s2 domain is not compatible: {why} (-EINVAL)"
        return self.nested_s1_refusal(d, unit)

    def _attach_nested(self, d: DmarDomain, unit: DmarUnit, source_id: int) -> None:
        """intel_nested_attach_dev(): block the old domain (device_block_translation: its
        PASID entry torn down, its tags and DID dropped), a DID for the nested domain
        (domain_attach_iommu), cache_tag_assign_domain() — the nested domain's own tags
        and NESTING tags with its DID on the parent — then intel_pasid_setup_nested():
        a PGTT-3 entry and pasid_flush_caches()."""
        why = self.nested_attach_refusal(d, unit)
        if why is not None:
            raise DriverError(why)
        old = self.attached_domain(source_id, unit)
        if old is d:
            return
        if old is not None:
            self.detach_device(old, unit, source_id)
        self._attach_sm(d, unit, source_id)

    def _attach_sm(self, d: DmarDomain, unit: DmarUnit, source_id: int) -> None:
        """dmar_domain_attach_device() in scalable mode: domain_attach_iommu() (a DID;
        identity domains use FLPT_DEFAULT_DID and no cache tags), the PASID entry of
        IOMMU_NO_PASID, then cache_tag_assign_domain().  A replaced domain was blocked
        first (device_block_translation), so domain_setup_*() get old = NULL: tear down
        and set up, no intel_pasid_replace_*() for RID (NEW iommu.c)."""
        self.sm_device(unit, source_id)  # probed at boot; probe now if not
        new_did = d.stage != "identity" and unit.name not in d.dids
        if new_did:
            d.dids[unit.name] = self._alloc_did(unit)
        try:
            self._setup_pasid_entry(d, unit, source_id)
        except DriverError:
            if new_did:
                self._free_did(unit, d.dids.pop(unit.name))
            raise
        d.devices[source_id] = unit.name
        self._attached[(unit.name, source_id)] = d
        if d.stage != "identity":
            self._cache_tag_assign_domain(d, unit, source_id)

    def probe_device(self, unit: DmarUnit, source_id: int) -> None:
        """Boot-time probe: the kernel attaches every enumerated device to a default
        domain (iommu_setup_default_domain → intel_iommu_attach_device), which allocates
        its bus's context table (iommu_context_addr(alloc=1)).  A device later blocked or
        claimed by VFIO keeps that table with its entry cleared, so a DMA from a device
        that was never attached here faults with 0x2 (context entry), not 0x1 (root).

        Scalable mode: intel_iommu_probe_device() allocates the PASID directory and writes
        the SM context entry once (ScalableMode._probe_sm)."""
        if self.sm_supported(unit):
            self._probe_sm(unit, source_id)
            return
        self._context_table(unit, source_id >> 8)

    def _context_table(self, unit: DmarUnit, bus: int) -> int:
        """iommu_context_addr(alloc=1): allocate the bus's context table on first use."""
        root = self._root[unit.name]
        slot = root + bus * ROOT_ENTRY_SIZE
        entry = RootEntry.decode(self._read(slot), self._read(slot + 8))
        if entry.present:
            return entry.ctp
        table = self.alloc.alloc()
        self.flush_cache(unit, table, PAGE_SIZE, f"new context table bus {bus:02x}")
        lo, hi = RootEntry.encode(True, table)
        self._write(slot, lo)
        self._write(slot + 8, hi)
        self.flush_cache(unit, slot, ROOT_ENTRY_SIZE, f"root entry bus {bus:02x}")
        return table

    def _context_mapping_one(self, d: DmarDomain, unit: DmarUnit, source_id: int) -> None:
        did = d.dids[unit.name]
        bdf = bdf_str(source_id)
        table = self._context_table(unit, source_id >> 8)
        slot = table + (source_id & 0xFF) * CONTEXT_ENTRY_SIZE
        lo, hi = ContextEntry.encode(did=did, aw=d.agaw, slptptr=d.pgd, tt=TT_MULTI_LEVEL)
        # context_clear_entry, set DID/AW/root/TT, then present last.
        self._write(slot + 8, hi)
        self._write(slot, lo)
        self.flush_cache(unit, slot, CONTEXT_ENTRY_SIZE, f"context entry {bdf}")
        # context_present_cache_flush(): not-present → present.
        if unit.cm:
            if self.skip_invalidation:
                why = "what-if: driver skips the caching-mode invalidation"
                self._ev(unit, "context-cache-invalidation", False, "ctx-np2p", why, "device", f"{bdf} DID 0")
                self._ev(unit, "iotlb-invalidation", False, "ctx-np2p", why, "domain", f"DID {did}")
                return
            ev = self._ev(unit, "context-cache-invalidation", True, "ctx-np2p",
                          "CM=1: hardware may have cached the not-present entry (tagged DID 0)", "device",
                          f"{bdf} DID 0")
            self._flush_context(unit, regs.GRAN_DEVICE, 0, source_id, 0, ev=ev)
            ev = self._ev(unit, "iotlb-invalidation", True, "ctx-np2p",
                          "CM=1: drop any not-present translations cached for the domain", "domain", f"DID {did}")
            self._flush_iotlb(unit, regs.GRAN_DOMAIN, did, ev=ev)
        else:
            why = "CM=0: hardware does not cache not-present entries"
            self._ev(unit, "context-cache-invalidation", False, "ctx-np2p", why, "device", f"{bdf} DID 0")
            self._ev(unit, "iotlb-invalidation", False, "ctx-np2p", why, "domain", f"DID {did}")
            self.flush_write_buffer(unit, "CM=0: a write-buffer flush makes the new entry visible")

    def detach_device(self, d: DmarDomain, unit: DmarUnit, source_id: int) -> None:
        """device_block_translation() → domain_context_clear_one() and
        intel_context_flush_no_pasid(), then domain_detach_iommu()."""
        if d.devices.get(source_id) != unit.name:
            raise DriverError(f"{bdf_str(source_id)} is not attached to domain {d.id} on {unit.name}")
        if self.sm_supported(unit):
            self._detach_sm(d, unit, source_id)
            return
        did = d.dids[unit.name]
        bdf = bdf_str(source_id)
        table = self._context_table(unit, source_id >> 8)
        slot = table + (source_id & 0xFF) * CONTEXT_ENTRY_SIZE
        self._write(slot, 0)
        self._write(slot + 8, 0)
        self.flush_cache(unit, slot, CONTEXT_ENTRY_SIZE, f"context entry {bdf}")
        ev = self._ev(unit, "context-cache-invalidation", True, "ctx-clear",
                      "present → not-present: the cached entry must go, whatever CM says", "device", f"{bdf} DID {did}")
        self._flush_context(unit, regs.GRAN_DEVICE, did, source_id, 0, ev=ev)
        ev = self._ev(unit, "iotlb-invalidation", True, "ctx-clear",
                      "translations cached through the old entry must go", "domain", f"DID {did}")
        self._flush_iotlb(unit, regs.GRAN_DOMAIN, did, ev=ev)
        self._devtlb(unit, source_id, 0, 64 - 12, "ctx-clear")
        del d.devices[source_id]
        del self._attached[(unit.name, source_id)]
        if unit.name not in d.devices.values():
            self._free_did(unit, did)
            del d.dids[unit.name]

    def _detach_sm(self, d: DmarDomain, unit: DmarUnit, source_id: int) -> None:
        """device_block_translation() in scalable mode (NEW): intel_pasid_tear_down_entry(
        IOMMU_NO_PASID), cache_tag_unassign_domain(), domain_detach_iommu().  ATS stays
        enabled: since 2025 the driver enables it at probe in scalable mode and disables it
        only at release (J-era ≈6.14 disabled it here first, which skipped the devtlb
        flush of the teardown)."""
        self._tear_down_pasid(unit, source_id)
        if d.stage != "identity":
            self._cache_tag_unassign_domain(d, unit, source_id)
        del d.devices[source_id]
        del self._attached[(unit.name, source_id)]
        if d.stage != "identity" and unit.name not in d.devices.values():
            self._free_did(unit, d.dids.pop(unit.name))

    def _devtlb(self, unit: DmarUnit, source_id: int, addr: int, mask: int, rule: str) -> None:
        """qi_flush_dev_iotlb, or qi_batch_add_dev_iotlb inside a qi_batch()."""
        bdf = bdf_str(source_id)
        scope = "all" if mask >= 52 else "page"  # DESIGN.md: device-tlb-invalidation scope page | all
        if source_id in self.ats:
            from ..hw import qi

            size = mask > 0
            a = addr | (((1 << (mask - 1)) - 1) << 12 if size else 0)
            ev = self._ev(unit, "device-tlb-invalidation", True, rule, "ATS enabled: the device caches translations",
                          scope, bdf, bdf=bdf)
            # Both return early `if (!(iommu->gcmd & DMA_GCMD_TE))`: the spec (4.3) advises
            # no device-TLB invalidation while remapping is off.
            if unit.gcmd & regs.GCMD_TE:
                self._qi_send(unit, qi.DevTlbDesc(source_id, a, size), ev)
        else:
            self._ev(unit, "device-tlb-invalidation", False, rule, "ATS not enabled on the device", scope, bdf, bdf=bdf)

    # ------------------------------------------------------------ map
    def map_range(self, d: DmarDomain, iova: int, phys: int, size: int, r: bool, w: bool) -> int:
        """intel_iommu_map_pages() → __domain_mapping(), then iotlb_sync_map().

        Returns the number of leaf entries written.
        """
        self._check_range(d, iova, size)
        if d.stage == "identity":
            raise DriverError(f"domain {d.id} is an identity domain: nothing to map")
        if (iova | phys | size) & (VTD_PAGE - 1):
            raise DriverError("IOVA, address and size must be 4 KiB aligned")
        if not (r or w):
            raise DriverError("a mapping needs read or write permission")
        if d.nest_parent and not w:  # __domain_mapping(); iommupt: PT_FEAT_VTDSS_FORCE_WRITEABLE
            raise DriverError("Read-only mapping is disallowed on the domain which serves as the parent in a "
                              "nested configuration, due to HW errata (ERRATA_772415_SPR17) (-EINVAL)")
        units = self._units_of(d)
        coherent = self._domain_coherent(d)
        if self.mapped_in(d, iova, size):
            raise DriverError(f"{iova:#x}+{size:#x} overlaps a present mapping (DMA PTE already set)")
        leaves = 0
        end = iova + size
        cur, pa = iova, phys
        while cur < end:
            level = self._largest_level(d, cur, pa, end - cur)
            table = self._pte_table(d, cur, level, coherent, units)
            first = level_index(cur, level)
            step = 1 << level_shift(level)
            # One run: the entries of this table that take a page of this size.
            n = self._run_length(d, cur, pa, end, level, first)
            if level > 1:
                self._switch_to_super_page(d, table, first, n, cur, level, coherent, units)
            last = pa + (n - 1) * step
            if last & ~PTE_ADDR_MASK:  # Pte.encode refuses it: fail at the same entry
                for idx in range(first, first + n):
                    self._write(table + idx * 8, self._leaf(d, pa, r, w, level > 1))
                    cur += step
                    pa += step
            else:  # the table's run in one write, a cache line at a time
                flags = self._leaf(d, 0, r, w, level > 1)
                self.cache.cpu_write_run(table + first * 8, stepped_words(pa | flags, n, step))
                cur += n * step
                pa += n * step
            d.mapped_pages += n * (step >> 12)
            leaves += n
            if units:
                self.flush_cache(units[0], table + first * 8, n * 8, f"{n} leaf PTE(s) L{level}", coherent)
        d.has_mappings = True
        self._iotlb_sync_map(d, iova, size)
        return leaves

    @staticmethod
    def _leaf(d: DmarDomain, pa: int, r: bool, w: bool, ps: bool) -> int:
        """A leaf as __domain_mapping() writes it: second stage R|W(|SNP when
        force_snooping)(|PS); first stage (FsPte) P|US|A, +R/W|D if writable, (|PS) — a
        first-stage leaf is readable whenever present and carries no SNP (PGSNP in the
        PASID entry does that job)."""
        if d.stage == "first":
            return FsPte.encode(pa, w=w, ps=ps)
        return Pte.encode(pa, r=r, w=w, ps=ps, snp=d.force_snooping)

    @staticmethod
    def _table_entry(d: DmarDomain, table: int) -> int:
        """A non-leaf entry (pfn_to_dma_pte): R|W, and for first stage P|R/W|US|A."""
        if d.stage == "first":
            return FsPte.encode(table, leaf=False)
        return Pte.encode(table, r=True, w=True)

    def _switch_to_super_page(self, d: DmarDomain, table: int, first: int, n: int, start: int,
                              level: int, coherent: bool, units: list[DmarUnit]) -> None:
        """switch_to_super_page(): before the large PTEs are written, each present PDE in
        their place — a table emptied by earlier unmaps — is cleared and its tables freed
        (dma_pte_free_pagetable), then the IOTLB is flushed from there to the end of the
        run (cache_tag_flush_range(..., ih=0)), once per present PDE, as the kernel does.
        The kernel frees the pages before that flush; so does the model."""
        step = 1 << level_shift(level)
        end = start + n * step
        for i in range(n):
            slot = table + (first + i) * 8
            old = self._read(slot)
            if not old & 3:
                continue
            pos = start + i * step
            tables: list[int] = []
            self._collect(old & PTE_ADDR_MASK, level - 1, tables)
            self._write(slot, 0)
            if units:
                self.flush_cache(units[0], slot, 8, f"L{level} entry {pos:#x} cleared for a large page", coherent)
            for t in tables:
                self.alloc.free(t)
            if d.kernel_sm and d.tags:  # scalable mode: the domain's cache tags
                self.cache_tag_flush_range(d, pos, end - 1, False, "superpage",
                                           f"switch_to_super_page(): table under L{level} entry {pos:#x} cleared "
                                           "and freed for a large page")
                continue
            with self.qi_batch():  # cache_tag_flush_range(domain, pos, end, 0)
                for name, did in d.dids.items():
                    unit = self.units[name]
                    self._psi(unit, did, pos, end - pos, "superpage",
                              f"switch_to_super_page(): table under L{level} entry {pos:#x} cleared and freed "
                              "for a large page", ih=False)
                    for sid, uname in d.devices.items():  # the domain's device-TLB cache tags
                        if uname == name:
                            self._devtlb(unit, sid, pos, psi_aligned(pos, end - pos)[1], "superpage")

    def _enforce_fs(self, d: DmarDomain) -> bool:
        units = [self.units[n] for n in d.dids]
        anchor = units[0] if units else next(iter(self.units.values()))
        if d.force_snooping:
            self.journal.skipped(anchor.name, ACTOR, "enforce-cache-coherency", "snp",
                                 "first stage: PGSNP already set", "domain", f"domain {d.id}")
            return True
        no_sc = [u.name for u in units if not u.sc]
        if no_sc:  # domain_support_force_snooping()
            self.journal.skipped(anchor.name, ACTOR, "enforce-cache-coherency", "snp",
                                 f"ECAP.SC=0 on {', '.join(no_sc)}: DMA cannot be forced to snoop",
                                 "domain", f"domain {d.id}")
            return False
        d.force_snooping = True
        self.journal.issued(anchor.name, ACTOR, "enforce-cache-coherency", "snp",
                            "first stage: PGSNP in each attached device's PASID entry (mappings may exist)",
                            "domain", f"domain {d.id}")
        for sid, name in list(d.devices.items()):
            self._page_snoop_control(self.units[name], sid)
        return True

    def _units_of(self, d: DmarDomain) -> list[DmarUnit]:
        """The units a domain's tables are walked by: those it has a DID on, and for a
        nest parent those its nested domains' NESTING tags name (the clflush of its
        tables follows iommu_coherency either way; the unit only labels the event)."""
        names = list(d.dids)
        for t in d.tags:
            if t.unit not in names:
                names.append(t.unit)
        return [self.units[n] for n in names]

    def _check_range(self, d: DmarDomain, iova: int, size: int) -> None:
        if d.stage == "nested":
            # iommu_map/unmap: `!(domain->type & __IOMMU_DOMAIN_PAGING)` → -EINVAL
            raise DriverError(f"domain {d.id} is a nested domain: the guest owns its first stage; map into its "
                              f"parent domain {d.parent.id} (-EINVAL)")
        if size <= 0:
            raise DriverError("size must be positive")
        if d.stage == "first":
            # "First-level translation restricts the input-address to a canonical
            # address": aperture_end = __DOMAIN_MAX_ADDR(gaw - 1), the lower half.
            if iova + size > 1 << (d.gaw - 1):
                raise DriverError(f"IOVA range ends beyond the first stage's canonical lower half "
                                  f"({d.gaw - 1} bits)")
            return
        width = min([self.units[n].mgaw_bits for n in d.dids] or [30 + 9 * d.agaw])
        if iova + size > 1 << min(width, 30 + 9 * d.agaw):
            raise DriverError(f"IOVA range ends beyond the domain's {min(width, 30 + 9 * d.agaw)}-bit address width")

    @classmethod
    def leaf_entries(cls, d: DmarDomain, iova: int, phys: int, size: int) -> int:
        """How many leaf entries map_range() would write for this range, counted run by
        run in a few steps (not entry by entry), so a caller can refuse a huge map
        before any work starts."""
        n, cur, pa, end = 0, iova, phys, iova + size
        while cur < end:
            level = cls._largest_level(d, cur, pa, end - cur)
            step = 1 << level_shift(level)
            k = (end - cur) // step
            if level < d.superpage_level:
                bigger = 1 << level_shift(level + 1)
                if (pa - cur) % bigger == 0 and (-cur) % bigger:
                    k = min(k, ((-cur) % bigger) // step)  # up to where a larger page fits
            n += k
            cur, pa = cur + k * step, pa + k * step
        return n

    def _run_length(self, d: DmarDomain, cur: int, pa: int, end: int, level: int, first: int) -> int:
        """How many entries from index `first` of a table take a page of `level`: those
        before the table ends, the range ends, or a larger page fits (where
        _largest_level would go up), computed, not tried entry by entry."""
        step = 1 << level_shift(level)
        n = min(512 - first, (end - cur) // step)
        if level < d.superpage_level:
            bigger = 1 << level_shift(level + 1)
            if (pa - cur) % bigger == 0:
                k = ((-cur) % bigger) // step  # the first entry aligned for a larger page
                if k < n and end - (cur + k * step) >= bigger:
                    n = k
        return max(n, 1)

    @staticmethod
    def _largest_level(d: DmarDomain, iova: int, phys: int, left: int) -> int:
        """hardware_largepage_caps(): the biggest page both addresses and the length allow."""
        level = 1
        for lv in range(2, d.superpage_level + 1):
            size = 1 << level_shift(lv)
            if (iova | phys) & (size - 1) or left < size:
                break
            level = lv
        return level

    def _pte_table(self, d: DmarDomain, iova: int, level: int, coherent: bool, units: list[DmarUnit]) -> int:
        """pfn_to_dma_pte(): walk down to the table holding `level` entries,
        allocating (and flushing) intermediate tables on the way."""
        table = d.pgd
        for lv in range(d.levels, level, -1):
            slot = table + level_index(iova, lv) * 8
            pte = self._read(slot)
            if not pte & 3:
                new = self.alloc.alloc()
                if units:
                    self.flush_cache(units[0], new, PAGE_SIZE, f"new L{lv - 1} table", coherent)
                pte = self._table_entry(d, new)
                self._write(slot, pte)  # the CPU reads back what it wrote
                if units:
                    self.flush_cache(units[0], slot, 8, f"L{lv} entry → table {new:#x}", coherent)
            elif pte & (1 << 7):
                raise DriverError(f"IOVA {iova:#x} is inside an existing large page")
            table = pte & PTE_ADDR_MASK
        return table

    def _iotlb_sync_map(self, d: DmarDomain, iova: int, size: int) -> None:
        """intel_iommu_iotlb_sync_map() → cache_tag_flush_range_np()."""
        if d.kernel_sm and d.tags:
            self.cache_tag_flush_range_np(d, iova, iova + size - 1)
            return
        with self.qi_batch():
            self._iotlb_sync_map_tags(d, iova, size)

    def _iotlb_sync_map_tags(self, d: DmarDomain, iova: int, size: int) -> None:
        for name, did in d.dids.items():
            unit = self.units[name]
            if unit.cm:
                if self.skip_invalidation:
                    self._ev(unit, "iotlb-invalidation", False, "map-np2p",
                             "what-if: driver skips the caching-mode invalidation", "page", f"DID {did}")
                    continue
                self._psi(unit, did, iova, size, "map-np2p",
                          "CM=1: hardware may have cached the not-present entries", ih=False)
            else:
                self._ev(unit, "iotlb-invalidation", False, "map-np2p",
                         "CM=0: hardware does not cache not-present entries", "page",
                         f"DID {did} {iova:#x}+{size:#x}", did=did)
                self.flush_write_buffer(unit, "CM=0: a write-buffer flush makes the new entries visible")

    def _psi(self, unit: DmarUnit, did: int, iova: int, size: int, rule: str, why: str, ih: bool) -> None:
        """cache_tag_flush_iotlb() with calculate_psi_aligned_address() (6.10+)."""
        addr, mask = psi_aligned(iova, size)
        detail = f"DID {did} {iova:#x}+{size:#x}"
        if not unit.psi:
            self._ev(unit, "iotlb-invalidation", False, "psi-fallback", "CAP.PSI=0: no page-selective invalidation", "page", detail)
            ev = self._ev(unit, "iotlb-invalidation", True, rule, f"{why} (domain-selective: CAP.PSI=0)", "domain",
                          f"DID {did}")
            self._flush_iotlb(unit, regs.GRAN_DOMAIN, did, ev=ev)
        elif mask > unit.mamv:
            self._ev(unit, "iotlb-invalidation", False, "psi-fallback",
                     f"mask {mask} > MAMV {unit.mamv}: range too large for one PSI", "page", detail)
            ev = self._ev(unit, "iotlb-invalidation", True, rule, f"{why} (domain-selective: mask > MAMV)", "domain",
                          f"DID {did}")
            self._flush_iotlb(unit, regs.GRAN_DOMAIN, did, ev=ev)
        else:
            ev = self._ev(unit, "iotlb-invalidation", True, rule, why, "page",
                          f"{detail} → addr {addr:#x} AM {mask}{' IH' if ih else ''}")
            self._flush_iotlb(unit, regs.GRAN_PAGE, did, addr, mask, ih, ev=ev)

    # ------------------------------------------------------------ unmap
    def unmap_range(self, d: DmarDomain, iova: int, size: int, *, lazy: bool | None = None) -> int:
        """intel_iommu_unmap_pages() → domain_unmap(), then intel_iommu_tlb_sync().

        A large page is unmapped whole, as the kernel does when asked for part of it.
        Returns the size actually unmapped.
        """
        self._check_range(d, iova, size)
        units = self._units_of(d)
        coherent = self._domain_coherent(d)
        freed: list[int] = []
        start, end = iova, iova + size
        # Round out to whole large pages (intel_iommu_unmap's "horrid API" comment).
        lv = self._leaf_level(d, start)
        if lv:
            start &= ~((1 << level_shift(lv)) - 1)
        lv = self._leaf_level(d, end - 1)
        if lv:
            end = (end - 1 | ((1 << level_shift(lv)) - 1)) + 1
        self._clear_level(d, d.pgd, d.levels, start, end, freed, coherent, units)
        self._tlb_sync(d, start, end - start, freed, lazy)
        return end - start

    def _leaf_level(self, d: DmarDomain, iova: int) -> int:
        hit = self.iova_to_phys(d, iova)
        return hit[1] if hit else 0

    def _clear_level(self, d, table, level, start, end, freed, coherent, units) -> None:
        """dma_pte_clear_level(): clear leaves in [start, end); a sub-table wholly
        inside the range is unlinked and freed after the IOTLB flush."""
        span = 1 << level_shift(level)
        first = last = None
        cur = start
        while cur < end:
            idx = level_index(cur, level)
            slot = table + idx * 8
            base = cur & ~(span - 1)
            nxt = min(base + span, end)
            pte = self._read(slot)
            if pte & 3:
                leaf = level == 1 or pte & (1 << 7)
                whole = base >= start and base + span <= end
                if leaf or whole:
                    if leaf:
                        d.mapped_pages -= span >> 12
                    else:
                        d.mapped_pages -= self._count_pages(pte & PTE_ADDR_MASK, level - 1)
                        self._collect(pte & PTE_ADDR_MASK, level - 1, freed)
                    self._write(slot, 0)
                    first = idx if first is None else first
                    last = idx
                else:
                    self._clear_level(d, pte & PTE_ADDR_MASK, level - 1, max(cur, start), nxt, freed, coherent, units)
            cur = nxt
        if first is not None and units:
            self.flush_cache(units[0], table + first * 8, (last - first + 1) * 8,
                             f"cleared L{level} entries", coherent)

    def _count_pages(self, table: int, level: int) -> int:
        n = 0
        for i in range(512):
            pte = self._read(table + i * 8)
            if pte & 3:
                n += (1 << (level_shift(level) - 12)) if level == 1 or pte & (1 << 7) else self._count_pages(pte & PTE_ADDR_MASK, level - 1)
        return n

    def _collect(self, table: int, level: int, freed: list[int]) -> None:
        if level > 1:
            for i in range(512):
                pte = self._read(table + i * 8)
                if pte & 3 and not pte & (1 << 7):
                    self._collect(pte & PTE_ADDR_MASK, level - 1, freed)
        freed.append(table)

    def _tlb_sync(self, d: DmarDomain, iova: int, size: int, freed: list[int], lazy: bool | None) -> None:
        """intel_iommu_tlb_sync() (strict) or queue_iova() (lazy flush queue)."""
        if lazy is None:
            lazy = self.lazy_default and d.owner == "driver"
        units = [self.units[n] for n in d.dids]
        if lazy and any(u.cm and not self.first_level_by_default(u) for u in units):
            for u in units:
                self._ev(u, "flush-queue", False, "unmap",
                         "CM=1 forces strict mode: IOMMU batching disallowed due to virtualization "
                         "(the kernel decides this at boot; the model reads CM now)", "page")
            lazy = False
        elif lazy and any(u.cm for u in units):
            for u in units:
                self._ev(u, "flush-queue", True, "unmap",
                         "CM=1 but first_level_by_default: the flush queue stays allowed (intel_iommu_init: "
                         "`cap_caching_mode && !first_level_by_default` → strict)", "page")
        if lazy:
            d.flush_queue.append((iova, size))
            d.freed_tables.extend(freed)
            for name, did in d.dids.items():
                op = "piotlb-invalidation" if d.stage == "first" else "iotlb-invalidation"
                self._ev(self.units[name], op, False, "unmap",
                         "lazy mode: deferred to the flush queue (stale IOTLB entries live until it drains)",
                         "page", f"DID {did} {iova:#x}+{size:#x}", did=did,
                         pasid=0 if d.stage == "first" else None)
            return
        if d.kernel_sm and d.tags:
            self.cache_tag_flush_range(d, iova, iova + size - 1, not freed, "unmap",
                                       "leaf entries cleared: cached translations must go")
            for t in freed:
                self.alloc.free(t)
            return
        ih = not freed  # only leaves changed: paging-structure caches may stay
        with self.qi_batch():  # cache_tag_flush_range(): one batch per unit
            for name, did in d.dids.items():
                unit = self.units[name]
                self._psi(unit, did, iova, size, "unmap", "leaf entries cleared: cached translations must go", ih)
                for sid, uname in d.devices.items():
                    if uname == name:
                        self._devtlb(unit, sid, iova, psi_aligned(iova, size)[1], "unmap")
        for t in freed:
            self.alloc.free(t)

    def flush_queue(self, d: DmarDomain) -> int:
        """fq_flush_timeout() → intel_flush_iotlb_all() → cache_tag_flush_all():
        one domain-selective invalidation covers everything queued."""
        n = len(d.flush_queue)
        if n and d.kernel_sm and d.tags:
            self.cache_tag_flush_all(d, "unmap", f"flush-queue timer: {n} deferred unmap(s), flushed all at once "
                                                 "(cache_tag_flush_all)")
        elif n:
            with self.qi_batch():  # cache_tag_flush_all()
                for name, did in d.dids.items():
                    unit = self.units[name]
                    ev = self._ev(unit, "iotlb-invalidation", True, "unmap",
                                  f"flush-queue timer: {n} deferred unmap(s), flushed all at once", "domain",
                                  f"DID {did}")
                    self._flush_iotlb(unit, regs.GRAN_DOMAIN, did, ev=ev)
        d.flush_queue.clear()
        for t in d.freed_tables:
            self.alloc.free(t)
        d.freed_tables.clear()
        return n

    # ------------------------------------------------------------ faults
    def handle_faults(self, unit: DmarUnit, dmar_debug: bool = False) -> list[str]:
        """dmar_fault() (drivers/iommu/intel/dmar.c): the lines it prints, in order.

        Read FSTS once; print "DRHD: handling fault status reg %x" with that value if
        it is not 0; stop unless PPF.  From FSTS.FRI, read each FRCD while its F bit
        is set, clear F (W1C), print its dmar_fault_do_one() line — and, only in a
        kernel built with CONFIG_DMAR_DEBUG (`dmar_debug`), dmar_fault_dump_ptes()
        after it — wrapping at cap_num_fault_regs; then write PFO|PPF|PRO to FSTS.
        The printed lines are also kept on the Fault each record belongs to
        (`log`, `dump`).  Ratelimiting (__ratelimit, 10 per 5 s) is not modelled:
        there is no clock."""
        from ..hw import faults as fr

        fsts = unit.mmio_read(regs.FSTS_REG)
        lines: list[str] = []
        if fsts:
            lines.append(fr.drhd_line(fsts))
        if not fsts & regs.FSTS_PPF:
            if lines:  # goto unlock_exit: FSTS is left as it is, PFO included
                self._ev(unit, "fault", False, "dmar-fault", lines[0], detail="FSTS.PPF=0: no fault record to read")
            return lines
        index = fsts >> 8 & 0xFF  # dma_fsts_fault_record_index()
        first, records = True, 0
        while True:
            reg = unit.fault_reg + index * 16
            hi = unit.mmio_read(reg + 8)
            if not hi >> 63:  # DMA_FRCD_F
                break
            sid, reason, read = hi & 0xFFFF, hi >> 32 & 0xFF, bool(hi >> 62 & 1)  # dma_frcd_type: 1 = read
            # dma_frcd_pasid_value() of the dword at +12, dma_frcd_pasid_present() of the
            # one at +8; a record without PP is printed NO_PASID (IOMMU_PASID_INVALID).
            pasid = hi >> 40 & 0xFFFFF if hi >> 31 & 1 else None
            addr = unit.mmio_read(reg) & ~0xFFF  # dma_frcd_page_addr()
            unit.mmio_write(reg + 8, 1 << 63)  # clear the fault
            printed = [fr.log_line(sid, addr, reason, not read, pasid)]
            # dmar_fault_dump_ptes(): `if (intel_iommu_sm && pasid == IOMMU_PASID_INVALID)
            # pasid = IOMMU_NO_PASID;` — the unit's dump walks PASID 0 for pasid None.
            dump = unit.fault_dump(sid, addr, pasid) if dmar_debug else []
            printed += dump
            f = next((x for x in reversed(unit.faults) if x.frcd == index and x.recorded), None)
            if f is not None:
                f.log = (lines[:1] if first else []) + printed
                f.dump = dump
            lines += printed
            first, records = False, records + 1
            index = (index + 1) % unit.num_fault_regs
        dma_fsts_pro = 1 << 7  # not modelled by the hardware; the kernel writes it anyway
        unit.mmio_write(regs.FSTS_REG, regs.FSTS_PFO | regs.FSTS_PPF | dma_fsts_pro)
        dump = "each followed by its PTE dump (CONFIG_DMAR_DEBUG=y)" if dmar_debug else \
            "no PTE dump (CONFIG_DMAR_DEBUG is not set)"
        self._ev(unit, "fault", True, "dmar-fault", lines[0],
                 detail=f"then {records} dmar_fault_do_one line(s), F cleared; {dump}")
        return lines

    # ------------------------------------------------------------ reading the tables
    def mapped_in(self, d: DmarDomain, iova: int, size: int) -> bool:
        """Is any leaf present in [iova, iova+size)?  Visits present entries only."""
        def visit(table: int, level: int, base: int) -> bool:
            span = 1 << level_shift(level)
            first = max(0, (iova - base) // span)
            for i in range(first, 512):
                lo = base + i * span
                if lo >= iova + size:
                    return False
                pte = self._read(table + i * 8)
                if not pte & 3:
                    continue
                if level == 1 or pte & (1 << 7) or visit(pte & PTE_ADDR_MASK, level - 1, lo):
                    return True
            return False
        return visit(d.pgd, d.levels, 0)

    def iova_to_phys(self, d: DmarDomain, iova: int) -> tuple[int, int] | None:
        """intel_iommu_iova_to_phys() on the CPU's view: (phys, leaf level) or None (a
        nested domain has no iova_to_phys: its table is the guest's)."""
        if d.stage == "nested":
            return None
        table = d.pgd
        for level in range(d.levels, 0, -1):
            pte = self._read(table + level_index(iova, level) * 8)
            if not pte & 3:
                return None
            if level == 1 or pte & (1 << 7):
                shift = level_shift(level)
                return (pte & PTE_ADDR_MASK & ~((1 << shift) - 1)) | (iova & ((1 << shift) - 1)), level
            table = pte & PTE_ADDR_MASK
        return None


_DETAIL_BDF_DID = re.compile(r"^([0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) DID (\d+)")
_DETAIL_DID = re.compile(r"^DID (\d+)\b")
_DETAIL_BDF = re.compile(r"^([0-9a-f]{2}:[0-9a-f]{2}\.[0-7])$")


def _keys_from_detail(detail: str) -> dict:
    """did / bdf of a legacy invalidation, from the detail the legacy path writes:
    "bb:dd.f DID n" (context cache, device-selective), "DID n ..." (IOTLB),
    "bb:dd.f" (device TLB); nothing for global ones."""
    m = _DETAIL_BDF_DID.match(detail)
    if m:
        return {"bdf": m.group(1), "did": int(m.group(2))}
    m = _DETAIL_DID.match(detail)
    if m:
        return {"did": int(m.group(1))}
    m = _DETAIL_BDF.match(detail)
    return {"bdf": m.group(1)} if m else {}


def psi_aligned(iova: int, size: int) -> tuple[int, int]:
    """calculate_psi_aligned_address() (drivers/iommu/intel/cache.c): the address and
    mask of one PSI that covers [iova, iova+size), widening the mask when the start is
    not aligned to it."""
    pfn = iova >> 12
    pages = ((iova + size - 1) >> 12) - pfn + 1
    aligned = 1 << (pages - 1).bit_length()
    bitmask = aligned - 1
    mask = aligned.bit_length() - 1
    if bitmask & pfn:
        end_pfn = pfn + pages - 1
        shared = ~(pfn ^ end_pfn) & ~bitmask & ((1 << 64) - 1)
        mask = (shared & -shared).bit_length() - 1 if shared else 64
    return (iova >> (12 + mask) << (12 + mask)) if mask < 64 else 0, mask
