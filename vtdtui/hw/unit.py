"""One DMA-remapping hardware unit (DRHD), as the spec has it behave: legacy mode
here, scalable mode (RTADDR.SMT) in the ScalableMode mixin of sm.py.

Mechanism only: the unit translates requests, caches what it may cache, records
faults and carries out invalidations it is asked for.  It never decides when to
invalidate; software (vtdtui.sw) does, and when software gets it wrong this unit
really does use the stale entry.

Translation order: context cache (or root → context walk) → pass-through? → IOTLB
(or second-level walk) → permission check → fill the IOTLB.  QEMU looks up its IOTLB
before the context cache because its IOTLB is keyed by source id; real IOTLBs are
tagged by domain id, which only the context entry gives, so the context comes first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import faults as fr
from . import qi
from . import regs
from .caches import ContextCache, ContextCacheEntry, Iotlb, IotlbEntry, PasidCache
from .entries import (
    CONTEXT_ENTRY_SIZE, PTE_ADDR_MASK, PTE_PS, PTE_R, PTE_SNP, PTE_TM, PTE_W, ROOT_ENTRY_SIZE,
    TT_DEV_IOTLB, TT_MULTI_LEVEL, TT_PASS_THROUGH, ContextEntry, RootEntry,
    level_index, level_shift,
)
from .memory import PAGE_SIZE, CpuCache, MemoryError_, PhysMem, overlay_lines
from .results import WalkResult, _format_trail
from .sm import SS_CODES_LEGACY, ScalableMode

MASK64 = (1 << 64) - 1


@dataclass(slots=True)
class Translation:
    """The outcome of one DMA request."""

    ok: bool
    source_id: int
    iova: int
    write: bool
    hpa: int | None = None
    snp: bool = False
    did: int | None = None
    fault: fr.Fault | None = None
    context_hit: bool = False
    iotlb_hit: bool = False
    trail: list = field(default_factory=list)
    # Scalable mode: the PASID the request was translated with (RID_PASID for a
    # request without PASID) and the PGTT of its PASID entry; None in legacy mode.
    pasid: int | None = None
    pgtt: int | None = None

    @property
    def steps(self) -> list[str]:
        """What the hardware did, step by step, in words."""
        return _format_trail(self.trail)


@dataclass
class ContextResult:
    ok: bool
    reason: int = 0
    entry: ContextEntry | None = None
    root_lo: int = 0


class DmarUnit(ScalableMode):
    _RTADDR_SMT = regs.RTADDR_SMT
    _PTE_SNP = PTE_SNP
    _PTE_TM = PTE_TM

    def __init__(
        self,
        name: str,
        base: int,
        cap: int,
        ecap: int,
        mem: PhysMem,
        cache: CpuCache,
        *,
        haw: int = 39,
        iotlb_capacity: int | None = 1024,
        ver: int = 0x10,
        caches_negative: bool = True,
        emulated_by_qemu: bool = False,
    ):
        self.name = name
        self.base = base
        self.cap = cap
        self.ecap = ecap
        self.ver = ver
        self.mem = mem
        self.cache = cache
        self.haw = haw
        # CM=1 allows caching not-present/invalid entries; real caching-mode hardware
        # may do so.  QEMU's vIOMMU never does (vtd_do_iommu_translate caches only
        # successful walks), so its guest units are built with this off.
        self.caches_negative = caches_negative and not emulated_by_qemu
        # QEMU's vIOMMU reads guest RAM from the host CPU: always coherent, whatever
        # ECAP.C tells the guest (which QEMU leaves clear).
        self.emulated_by_qemu = emulated_by_qemu
        # Called after each invalidation is carried out, with (kind, fields): the hook
        # QEMU uses to see a guest's invalidations (its vIOMMU *is* this unit).
        self.invalidation_listeners: list = []
        # Guest RAM that is host RAM: (HPA base, size, the guest world's CpuCache).  A
        # paging-structure read or a first-stage A/D write of this unit at an HPA in a
        # window reaches the guest world's memory at HPA - base (a nested walk reads
        # the guest's first-stage tables; the model keeps each world in its own PhysMem).
        self.foreign_ram: list[tuple[int, int, CpuCache]] = []
        self.context_cache = ContextCache()
        self.iotlb = Iotlb(iotlb_capacity)
        self.pasid_cache = PasidCache()  # scalable mode: PASID-table entries
        # Device-TLBs (ATS): translations for requests without PASID per source id,
        # and (scalable mode) for requests with PASID per (source id, PASID).
        self.device_tlb: dict[int, dict[int, tuple[int, bool, bool]]] = {}
        self.pasid_device_tlb: dict[tuple[int, int], dict[int, tuple[int, bool, bool]]] = {}
        self.gcmd = 0
        self.gsts = 0
        self.rtaddr = 0  # the register
        self.rta_latched = 0  # what SRTP latched: the table the hardware uses
        self.fsts = 0
        self.fectl = 0
        self.iqa = 0
        self.iqh = 0
        self.iqt = 0
        self.ics = 0
        self.iqer = 0
        self.iva = 0
        self.last_queue_error = ""
        # Descriptors per tail write made through submit(), newest last (bounded: a
        # view of how software batches, not a history).
        self.qi_submissions: deque[int] = deque(maxlen=64)
        self.frcd: list[tuple[int, int]] = [(0, 0)] * self.num_fault_regs
        self.fault_index = 0  # FSTS.FRI
        self.next_frcd = 0  # the FRCD the next fault is recorded in (QEMU next_frcd_reg)
        self.faults: list[fr.Fault] = []
        self.counters: dict[str, int] = {}
        # Posted writes not yet visible to this unit's table reads (CAP.RWBF):
        # address of a 64-byte line → its contents before the write.
        self._write_buffer: dict[int, Sequence[int]] = {}
        mem.add_write_observer(self._observe_memory_write)

    # ---------------------------------------------------------------- capabilities
    def capf(self, name: str) -> int:
        return regs.CAP.get(self.cap, name)

    def ecapf(self, name: str) -> int:
        return regs.ECAP.get(self.ecap, name)

    @property
    def cm(self) -> bool:
        return bool(self.cap >> 7 & 1)

    @property
    def coherent(self) -> bool:
        return bool(self.ecap & 1)

    @property
    def sc(self) -> bool:
        return bool(self.ecap >> 7 & 1)

    @property
    def rwbf(self) -> bool:
        return bool(self.cap >> 4 & 1)

    @property
    def psi(self) -> bool:
        return bool(self.cap >> 39 & 1)

    @property
    def qi_supported(self) -> bool:
        return bool(self.ecap >> 1 & 1)

    @property
    def mamv(self) -> int:
        return self.capf("MAMV")

    @property
    def mgaw_bits(self) -> int:
        return (self.cap >> 16 & 0x3F) + 1  # CAP.MGAW, bits 21:16 (checked on every DMA)

    @property
    def num_fault_regs(self) -> int:
        return self.capf("NFR") + 1

    @property
    def ndoms(self) -> int:
        return 1 << (4 + 2 * self.capf("ND"))

    def aw_supported(self, aw: int) -> bool:
        return bool(self.capf("SAGAW") >> aw & 1)

    def toggle_cap(self, name: str) -> None:
        self.cap = regs.CAP.toggle(self.cap, name)

    def toggle_ecap(self, name: str) -> None:
        self.ecap = regs.ECAP.toggle(self.ecap, name)

    def set_cap(self, value: int) -> None:
        self.cap = value & MASK64
        if len(self.frcd) != self.num_fault_regs:
            self.frcd = [(0, 0)] * self.num_fault_regs
            self.fault_index = 0

    def set_ecap(self, value: int) -> None:
        self.ecap = value & MASK64

    @property
    def translation_enabled(self) -> bool:
        return bool(self.gsts & regs.GSTS_TES)

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    # ------------------------------------------------------------ table reads
    def _observe_memory_write(self, line: int) -> None:
        if self.rwbf and line not in self._write_buffer:
            self._write_buffer[line] = self.mem.read_line(line)

    def hw_read_q(self, addr: int) -> int:
        """A table read by this unit: snooped when ECAP.C=1, memory otherwise."""
        if self._write_buffer:
            posted = self._write_buffer.get(addr & ~63)
            if posted is not None:
                return posted[(addr & 63) >> 3]
        if self.coherent or self.emulated_by_qemu:
            return self.cache.snooped_read_q(addr)
        return self.mem.read_q(addr)

    def cpu_read_q(self, addr: int) -> int:
        return self.cache.cpu_read_q(addr)

    def hw_read_page(self, addr: int) -> list[int]:
        """A whole table as this unit would read it, word for word as hw_read_q."""
        if self.coherent or self.emulated_by_qemu:
            words = self.cache.cpu_read_page(addr)
        else:
            words = self.mem.read_page(addr)
        return overlay_lines(words, addr, self._write_buffer)

    def cpu_read_page(self, addr: int) -> list[int]:
        return self.cache.cpu_read_page(addr)

    def present_entries(self, table: int, decode):
        """(index, address, entry) of each present entry of a root or context table (a
        4 KiB page of 256 16-byte entries) at `table`, as the CPU wrote it; `decode` is
        RootEntry.decode or ContextEntry.decode.  One read of the page, not 512."""
        words = self.cpu_read_page(table)
        for i in range(256):
            lo, hi = words[2 * i], words[2 * i + 1]
            if lo or hi:
                entry = decode(lo, hi)
                if entry.present:
                    yield i, table + i * 16, entry

    # ------------------------------------------------------------ structures
    def _haw_rsvd(self) -> int:
        """Address bits 51:HAW, reserved in every pointer and leaf address."""
        return ((1 << 52) - 1) & ~((1 << self.haw) - 1)

    def read_context(self, source_id: int, read=None) -> ContextResult:
        """Root → context walk for one source id (no caching, no fault recording)."""
        read = read or self.hw_read_q
        bus, dfn = source_id >> 8, source_id & 0xFF
        rta = self.rta_latched & ~0xFFF & MASK64
        try:
            rlo = read(rta + bus * ROOT_ENTRY_SIZE)
            rhi = read(rta + bus * ROOT_ENTRY_SIZE + 8)
        except MemoryError_:
            return ContextResult(False, fr.ROOT_TABLE_INV)
        root = RootEntry.decode(rlo, rhi)
        if not root.present:
            return ContextResult(False, fr.ROOT_ENTRY_P, root_lo=rlo)
        if root.reserved_set or root.ctp & self._haw_rsvd():
            return ContextResult(False, fr.ROOT_ENTRY_RSVD, root_lo=rlo)
        try:
            clo = read(root.ctp + dfn * CONTEXT_ENTRY_SIZE)
            chi = read(root.ctp + dfn * CONTEXT_ENTRY_SIZE + 8)
        except MemoryError_:
            return ContextResult(False, fr.CONTEXT_TABLE_INV, root_lo=rlo)
        ce = ContextEntry.decode(clo, chi)
        if not ce.present:
            return ContextResult(False, fr.CONTEXT_ENTRY_P, ce, rlo)
        if ce.reserved_set or ce.slptptr & self._haw_rsvd():
            return ContextResult(False, fr.CONTEXT_ENTRY_RSVD, ce, rlo)
        invalid = (
            ce.tt == 3
            or (ce.tt == TT_DEV_IOTLB and not self.ecapf("DT"))
            or (ce.tt == TT_PASS_THROUGH and not self.ecapf("PT"))
            # AW is checked for every TT: QEMU vtd_dev_to_context_entry does, and the
            # spec wants the largest supported AGAW in a pass-through entry.
            or not self.aw_supported(ce.aw)
        )
        if invalid:
            return ContextResult(False, fr.CONTEXT_ENTRY_INV, ce, rlo)
        return ContextResult(True, 0, ce, rlo)

    def walk(self, ce: ContextEntry, iova: int, write: bool, read=None) -> WalkResult:
        """Second-level walk of `iova` under context entry `ce`; pure."""
        return self._ss_walk(ce.slptptr, ce.levels, iova, write, read or self.hw_read_q, SS_CODES_LEGACY)

    # ------------------------------------------------------------ translation
    def translate(self, source_id: int, iova: int, write: bool = False, *, pasid: int | None = None,
                  translation_request: bool = False, privileged: bool = False) -> Translation:
        """Carry out one DMA request from `source_id` to `iova`.

        `translation_request` models an ATS translation request (device-TLB fill).
        `pasid`: a request with PASID (scalable mode; a legacy-mode unit faults it,
        0x31 "SM: TTM 0 for request with PASID").  `privileged`: a supervisor request
        (scalable mode, first stage: needs SRE in the PASID entry).
        """
        t = Translation(False, source_id, iova, write)
        self._count("dma")
        if pasid is not None and not 0 <= pasid < 1 << 20:
            raise ValueError(f"{self.name}: PASID {pasid} does not fit in 20 bits")
        if not self.translation_enabled:
            t.ok, t.hpa = True, iova
            t.trail.append("translation disabled (GSTS.TES=0): address passes through")
            return t
        if self.sm_active:
            return self._translate_sm(t, pasid, translation_request, privileged)
        if pasid is not None:
            t.trail.append("legacy-mode root table (TTM 0): requests with PASID are blocked")
            return self._sm_fault(t, 0x31, False, pasid)

        cached = self.context_cache.lookup(source_id)
        if cached is not None:
            t.context_hit = True
            if not cached.present:
                t.trail.append(("context cache hit: cached not-present/invalid entry (DID {})", cached.did))
                return self._fault(t, cached.fault_reason, ContextEntry.decode(cached.lo, cached.hi))
            ce = cached.decoded or ContextEntry.decode(cached.lo, cached.hi)
            t.trail.append(("context cache hit: DID {}", ce.did))
        else:
            cr = self.read_context(source_id)
            if not cr.ok:
                t.trail.append(("context walk: fault {:#x}", cr.reason))
                if self.cm and self.caches_negative and cr.reason in (fr.ROOT_ENTRY_P, fr.CONTEXT_ENTRY_P, fr.CONTEXT_ENTRY_INV):
                    # Caching mode: the not-present/invalid entry is cached, tagged DID 0.
                    lo, hi = (cr.entry.lo, cr.entry.hi) if cr.entry else (0, 0)
                    self.context_cache.insert(ContextCacheEntry(source_id, 0, False, lo, hi, cr.reason))
                    t.trail.append("CM=1: not-present entry cached with DID 0")
                return self._fault(t, cr.reason, cr.entry)
            ce = cr.entry
            assert ce is not None
            self.context_cache.insert(ContextCacheEntry(source_id, ce.did, True, ce.lo, ce.hi, 0, ce))
            t.trail.append(("context walk: DID {}, TT {}, AW {}, SLPTPTR {:#x}", ce.did, ce.tt, ce.aw, ce.slptptr))
        t.did = ce.did

        if translation_request and ce.tt == TT_MULTI_LEVEL:
            return self._fault(t, fr.CONTEXT_ENTRY_TT, ce)
        if ce.tt == TT_PASS_THROUGH:
            t.ok, t.hpa = True, iova
            t.trail.append("pass-through: output = input")
            return t
        if iova >> min(self.mgaw_bits, ce.agaw):
            return self._fault(t, fr.ADDR_BEYOND_MGAW, ce)

        hit = self.iotlb.lookup(ce.did, iova)
        if hit is not None:
            t.iotlb_hit = True
            if not hit.present:
                t.trail.append(("IOTLB hit: cached not-present entry (DID {})", ce.did))
                # A not-present leaf faults by the access of this request (0x5/0x6),
                # not by the access of the request that cached it.
                return self._fault(t, fr.WRITE if write else fr.READ, ce)
            t.trail.append(("IOTLB hit: {:#x}/{:#x} → {:#x}", hit.iova, hit.size, hit.hpa))
            if not (hit.w if write else hit.r):
                return self._fault(t, fr.WRITE if write else fr.READ, ce)
            t.ok, t.hpa, t.snp = True, hit.hpa | (iova & (hit.size - 1)), hit.snp
            self._fill_device_tlb(translation_request, ce, source_id, iova, t.hpa, hit.r, hit.w)
            return t

        wr = self.walk(ce, iova, write)
        t.trail.extend(wr.trail)
        if wr.ok or (wr.reason in (fr.READ, fr.WRITE) and wr.present):
            if wr.ok:
                self.iotlb.insert(IotlbEntry(
                    ce.did, iova >> wr.shift << wr.shift, wr.shift, wr.hpa >> wr.shift << wr.shift,
                    wr.r, wr.w, wr.snp, True, source_id, wr.pte, wr.pte_addr,
                ))
        elif self.cm and self.caches_negative and not wr.present:
            self.iotlb.insert(IotlbEntry(
                ce.did, iova >> 12 << 12, 12, 0, False, False, False, False, source_id,
                wr.pte, wr.pte_addr, wr.reason,
            ))
            t.trail.append("CM=1: not-present translation cached")
        if not wr.ok:
            return self._fault(t, wr.reason, ce)
        t.ok, t.hpa, t.snp = True, wr.hpa, wr.snp
        self._fill_device_tlb(translation_request, ce, source_id, iova, wr.hpa, wr.r, wr.w)
        return t

    def _fill_device_tlb(self, ats: bool, ce: ContextEntry, sid: int, iova: int, hpa: int, r: bool, w: bool) -> None:
        if ats and ce.tt == TT_DEV_IOTLB:
            self.device_tlb.setdefault(sid, {})[iova >> 12] = (hpa >> 12 << 12, r, w)

    # ------------------------------------------------------------ faults
    def _fault(self, t: Translation, reason: int, ce: ContextEntry | None) -> Translation:
        page = t.iova & ~0xFFF
        # The hardware records FRCD/FSTS only; the lines Linux prints for it (and the
        # CONFIG_DMAR_DEBUG walk dump) come from the driver's dmar_fault().
        f = fr.Fault(
            self.name, t.source_id, page, reason, t.write,
            fr.log_line(t.source_id, page, reason, t.write),
        )
        if ce is not None and ce.fpd and reason in fr.QUALIFIED:  # FPD counts even when P=0
            f.recorded, f.suppressed_by_fpd = False, True
            t.trail.append("FPD=1: fault not recorded")
        else:
            f.recorded = self._record(f)
        self.faults.append(f)
        self._count("fault")
        t.fault = f
        return t

    def _record(self, f: fr.Fault) -> bool:
        """Write a fault-recording register; False on overflow (FSTS.PFO).

        Two indexes, as QEMU's vtd_report_frcd_fault() keeps them: the register the
        next fault goes to (next_frcd_reg, advanced on every record) and FSTS.FRI,
        latched only when PPF goes 0 → 1 — "the first pending fault", where the
        driver's dmar_fault() starts reading (dma_fsts_fault_record_index)."""
        if self.fsts & regs.FSTS_PFO:
            return False
        i = self.next_frcd % self.num_fault_regs
        if self.frcd[i][1] >> 63:
            self.fsts |= regs.FSTS_PFO
            return False
        lo = f.iova
        hi = (f.source_id | (f.reason << 32) | ((0 if f.write else 1) << 62) | (1 << 63))
        if f.pasid is not None:
            # PP (bit 31) and PV (bits 59:40): dmar_fault() reads them from the dword
            # at +8 (bit 31) and +12 (`(data >> 8) & 0xfffff`).  QEMU's VTD_FRCD_PV
            # keeps only 16 bits; the register field is 20 (as Linux reads it).
            hi |= (1 << 31) | ((f.pasid & 0xFFFFF) << 40)
        self.frcd[i] = (lo, hi)
        f.frcd = i
        if not self.fsts & regs.FSTS_PPF:
            self.fault_index = i  # FSTS.FRI
        self.next_frcd = (i + 1) % self.num_fault_regs
        self.fsts |= regs.FSTS_PPF
        return True

    def clear_fault_record(self, i: int) -> None:
        lo, hi = self.frcd[i]
        self.frcd[i] = (lo, hi & ~(1 << 63))
        if not any(h >> 63 for _, h in self.frcd):
            self.fsts &= ~regs.FSTS_PPF

    def fault_dump(self, source_id: int, addr: int, pasid: int | None = None) -> list[str]:
        """dmar_fault_dump_ptes(): the walk as Linux prints it, from its own (CPU) view.

        The driver calls it (sw/linux.py handle_faults) only when the kernel is built
        with CONFIG_DMAR_DEBUG; without it the function is an empty stub.  `pasid`:
        the faulting request's PASID (None without one: the SM dump then uses 0)."""
        read = self.cpu_read_q
        out = [f"DMAR: Dump {self.name} table entries for IOVA 0x{addr:x}"]
        if not self.rta_latched:
            return out + ["DMAR: root table is not present"]
        if self.sm_active:
            try:
                return self._sm_fault_dump(out, source_id, addr, pasid)
            except MemoryError_:
                return out + ["DMAR: (table beyond memory)"]
        bus, dfn = source_id >> 8, source_id & 0xFF
        rta = self.rta_latched & ~0xFFF
        try:
            rlo = read(rta + bus * 16)
            out.append(f"DMAR: root entry: 0x{rlo:016x}")
            if not rlo & 1:
                return out + ["DMAR: context table is not present"]
            ctp = rlo & ~0xFFF
            clo, chi = read(ctp + dfn * 16), read(ctp + dfn * 16 + 8)
            out.append(f"DMAR: context entry: hi 0x{chi:016x}, low 0x{clo:016x}")
            if not clo & 1:
                return out + ["DMAR: legacy mode page table is not present"]
            level, table = (chi & 7) + 2, clo & PTE_ADDR_MASK
            while True:
                pte = read(table + level_index(addr, level) * 8)
                out.append(f"DMAR: pte level: {level}, pte value: 0x{pte:016x}")
                if not pte & (PTE_R | PTE_W):
                    out.append(f"DMAR: page table not present at level {level - 1}")
                    break
                if level == 1 or pte & PTE_PS:
                    break
                table, level = pte & PTE_ADDR_MASK, level - 1
        except MemoryError_:
            out.append("DMAR: (table beyond memory)")
        return out

    # ------------------------------------------------------------ invalidation
    def invalidate_context(self, gran: int, did: int = 0, source_id: int = 0, fm: int = 0) -> int:
        """Context-cache invalidation; returns the granularity actually performed."""
        self._drain_write_buffer()
        if gran == regs.GRAN_GLOBAL:
            self.context_cache.invalidate_global()
        elif gran == regs.GRAN_DOMAIN:
            if self.sm_active:
                # SM context entries hold no DID: a domain-selective request can
                # only be carried out globally (QEMU treats it as global in both
                # modes, vtd_process_context_cache_desc).
                self.context_cache.invalidate_global()
            else:
                self.context_cache.invalidate_domain(did)
        elif gran == regs.GRAN_DEVICE:
            self.context_cache.invalidate_device(did, source_id, fm, ignore_did=self.sm_active)
        else:
            raise ValueError(f"context-cache invalidation granularity {gran} is reserved")
        self._count(f"cc-{('', 'global', 'domain', 'device')[gran]}")
        self._notify("context", gran=gran, did=did, source_id=source_id, fm=fm)
        return gran

    def invalidate_iotlb(self, gran: int, did: int = 0, addr: int = 0, am: int = 0, ih: bool = False) -> int:
        """IOTLB invalidation; returns the granularity actually performed.

        Without CAP.PSI, or with AM beyond MAMV, a page-selective request is carried
        out domain-selectively, as the spec allows (IAIG reports it).  IH is decoded;
        there is no paging-structure cache in this model for it to spare.
        """
        if gran == regs.GRAN_PAGE and (not self.psi or am > self.mamv):
            gran = regs.GRAN_DOMAIN
        self._drain_write_buffer()
        if gran == regs.GRAN_GLOBAL:
            self.iotlb.invalidate_global()
        elif gran == regs.GRAN_DOMAIN:
            self.iotlb.invalidate_domain(did)
        elif gran == regs.GRAN_PAGE:
            self.iotlb.invalidate_page(did, addr, am)
        else:
            raise ValueError(f"IOTLB invalidation granularity {gran} is reserved")
        self._count(f"iotlb-{('', 'global', 'domain', 'page')[gran]}")
        self._notify("iotlb", gran=gran, did=did, addr=addr, am=am, ih=ih)
        return gran

    def _notify(self, kind: str, **fields) -> None:
        for fn in self.invalidation_listeners:
            fn(self, kind, fields)

    def invalidate_device_tlb(self, source_id: int, addr: int = 0, size: bool = False) -> None:
        entries = self.device_tlb.get(source_id)
        self._count("devtlb")
        if not entries:
            return
        lo, span = self._devtlb_range(addr, size)
        for pfn in [p for p in entries if lo <= p << 12 < lo + span]:
            del entries[pfn]

    @staticmethod
    def _devtlb_range(addr: int, size: bool) -> tuple[int, int]:
        """(first address, length) a device-TLB descriptor's ADDR/S covers."""
        if size:
            # S=1: the lowest clear bit at or above 12 gives the range (spec §6.5.2.5).
            k = 12
            while addr >> k & 1:
                k += 1
            span = 1 << (k + 1)
        else:
            span = PAGE_SIZE
        return addr & ~(span - 1), span

    def flush_write_buffer(self) -> None:
        """GCMD.WBF: posted writes become visible to table reads."""
        self._write_buffer.clear()
        self._count("wbf")

    def _drain_write_buffer(self) -> None:
        """RWBF=1 hardware "must implicitly perform a write buffer flush before
        invalidating" the context cache or the IOTLB (CCMD_REG.ICC, IOTLB_REG.IVT; the
        queued descriptors do the same): the walks that refill them see the new tables.
        Not a GCMD.WBF, so not counted as one."""
        self._write_buffer.clear()

    # ------------------------------------------------------------ registers (MMIO)
    @property
    def iotlb_reg(self) -> int:
        return self.ecapf("IRO") * 16

    @property
    def fault_reg(self) -> int:
        return self.capf("FRO") * 16

    def mmio_read(self, off: int) -> int:
        fixed = {
            regs.VER_REG: self.ver, regs.CAP_REG: self.cap, regs.ECAP_REG: self.ecap,
            regs.GSTS_REG: self.gsts, regs.RTADDR_REG: self.rtaddr, regs.CCMD_REG: 0,
            regs.FSTS_REG: self.fsts | (self.fault_index << 8), regs.FECTL_REG: self.fectl,
            regs.IQH_REG: self.iqh, regs.IQT_REG: self.iqt, regs.IQA_REG: self.iqa,
            regs.ICS_REG: self.ics, regs.IQER_REG: self.iqer,
            self.iotlb_reg: self.iva, self.iotlb_reg + 8: 0,
        }
        if off in fixed:
            return fixed[off]
        i, part = divmod(off - self.fault_reg, 16)
        if 0 <= i < self.num_fault_regs and part in (0, 8):
            return self.frcd[i][part // 8]
        raise ValueError(f"{self.name}: no register at offset {off:#x}")

    def mmio_write(self, off: int, value: int) -> int:
        """Write a register; returns what a read-back of it shows."""
        value &= MASK64
        if off == regs.GCMD_REG:
            return self._write_gcmd(value)
        if off == regs.RTADDR_REG:
            self.rtaddr = value
            return value
        if off == regs.CCMD_REG:
            if value & regs.CCMD_ICC:
                gran = (value >> regs.CCMD_CIRG_SHIFT) & 3
                done = self.invalidate_context(gran, value & 0xFFFF, (value >> 16) & 0xFFFF, (value >> 32) & 3)
                return (value & ~regs.CCMD_ICC & ~(3 << regs.CCMD_CAIG_SHIFT)) | (done << regs.CCMD_CAIG_SHIFT)
            return value
        if off == self.iotlb_reg:
            self.iva = value
            return value
        if off == self.iotlb_reg + 8:
            if value & regs.IOTLB_IVT:
                gran = (value >> regs.IOTLB_IIRG_SHIFT) & 3
                done = self.invalidate_iotlb(gran, (value >> 32) & 0xFFFF, self.iva & ~0xFFF & MASK64,
                                             self.iva & 0x3F, bool(self.iva & regs.IVA_IH))
                return (value & ~regs.IOTLB_IVT & ~(3 << regs.IOTLB_IAIG_SHIFT)) | (done << regs.IOTLB_IAIG_SHIFT)
            return value
        if off == regs.FSTS_REG:
            self.fsts &= ~(value & (regs.FSTS_PFO | regs.FSTS_IQE | regs.FSTS_ICE | regs.FSTS_ITE))
            return self.mmio_read(off)
        if off == regs.FECTL_REG:
            self.fectl = value & (1 << 31)
            return self.fectl
        if off == regs.IQA_REG:
            self.iqa = value
            return value
        if off == regs.IQT_REG:
            if self.iq_dw:
                # QEMU vtd_handle_iqt_write: with DW=1, IQT bit 4 is reserved (an
                # invalidation queue error); the tail is bits 18:5.
                if value & 0x10:
                    self._queue_error("IQT bit 4 set with 256-bit descriptors (VTD_IQT_QT_256_RSV_BIT)", 0)
                    return self.iqt
                self.iqt = value & 0x7FFE0
            else:
                self.iqt = value & 0x7FFF0
            self._process_queue()
            return self.iqt
        if off == regs.ICS_REG:
            self.ics &= ~(value & regs.ICS_IWC)
            return self.ics
        i, part = divmod(off - self.fault_reg, 16)
        if 0 <= i < self.num_fault_regs and part == 8:
            if value >> 63:  # F is write-1-to-clear
                self.clear_fault_record(i)
            return self.frcd[i][1]
        raise ValueError(f"{self.name}: register at offset {off:#x} is not writable")

    def _write_gcmd(self, value: int) -> int:
        # One-shot commands (SRTP, WBF) act and leave no persistent GCMD bit.
        if value & regs.GCMD_SRTP:
            # SMT is latched only by a unit with ECAP.SMTS; without it the root table
            # is a legacy one (QEMU vtd_update_scalable_state tests s->scalable_mode,
            # the property that also sets ECAP.SMTS).
            smt = regs.RTADDR_SMT if self.ecapf("SMTS") else 0
            self.rta_latched = self.rtaddr & ~(regs.RTADDR_SMT & ~smt)
            self.gsts |= regs.GSTS_RTPS
            if self.capf("ESRTPS"):
                self.context_cache.invalidate_global()
                self.pasid_cache.invalidate_global()
                self.iotlb.invalidate_global()
        if value & regs.GCMD_WBF:
            self.flush_write_buffer()
        for cmd, sts in ((regs.GCMD_TE, regs.GSTS_TES), (regs.GCMD_QIE, regs.GSTS_QIES)):
            if value & cmd:
                if cmd == regs.GCMD_QIE and not self.qi_supported:
                    continue
                self.gsts |= sts
            else:
                if cmd == regs.GCMD_QIE and self.gsts & sts:
                    self.iqh = 0  # disabling QI resets the head (spec §10.4.22)
                self.gsts &= ~sts
        self.gcmd = value & (regs.GCMD_TE | regs.GCMD_QIE)
        return self.gsts

    # Convenience for software that programs the unit the usual way.
    def set_root_table(self, rta: int) -> None:
        self.mmio_write(regs.RTADDR_REG, rta)
        self.mmio_write(regs.GCMD_REG, self.gcmd | regs.GCMD_SRTP)

    def enable_translation(self) -> None:
        self.mmio_write(regs.GCMD_REG, self.gcmd | regs.GCMD_TE)

    def enable_qi(self, queue_base: int, qs: int = 0, dw: bool = False) -> None:
        """IQA (base | QS | DW) then GCMD.QIE; `dw` asks for 256-bit descriptors, which
        only a unit with ECAP.SMTS honours (dmar.c __dmar_enable_qi sets DW=1 iff
        ecap_smts)."""
        self.mmio_write(regs.IQA_REG, queue_base | qs | (regs.IQA_DW if dw else 0))
        self.iqh = self.iqt = 0
        self.mmio_write(regs.GCMD_REG, self.gcmd | regs.GCMD_QIE)

    # ------------------------------------------------------------ queued invalidation
    @property
    def iq_dw(self) -> bool:
        """256-bit descriptors: IQA.DW on a unit with ECAP.SMTS (QEMU vtd_update_iq_dw)."""
        return bool(self.iqa & regs.IQA_DW) and bool(self.ecapf("SMTS"))

    @property
    def qi_shift(self) -> int:
        """IQH/IQT hold the descriptor index << 4, or << 5 with 256-bit descriptors
        (Linux qi_shift(), QEMU VTD_IQH_QH_SHIFT_5)."""
        return 5 if self.iq_dw else 4

    @property
    def queue_entries(self) -> int:
        """2^(QS+8) 128-bit slots, or half as many 256-bit ones: the queue is 4 KiB
        << QS either way (QEMU vtd_handle_gcmd_qie: `1 << (QS + 8 - dw)`)."""
        return (256 << (self.iqa & 0x7)) >> (1 if self.iq_dw else 0)

    def _queue_error(self, why: str, dtype: int) -> None:
        self.fsts |= regs.FSTS_IQE
        self.iqer = dtype & 0xF
        self.last_queue_error = why
        self._count("qi-error")

    def _process_queue(self) -> None:
        """vtd_process_inv_desc() on each tail write: head → tail, stop on error."""
        if not self.gsts & regs.GSTS_QIES or self.fsts & regs.FSTS_IQE:
            return
        base = self.iqa & ~0xFFF & MASK64
        n = self.queue_entries
        shift, size = self.qi_shift, 1 << self.qi_shift
        if self.iq_dw and self.iqt >> shift >= n:
            # QEMU vtd_fetch_inv_desc: "detected invalid QI tail".
            self._queue_error(f"IQT index {self.iqt >> shift} beyond the {n}-entry queue", 0)
            return
        while self.iqh != self.iqt:
            slot = self.iqh >> shift
            words = tuple(self.cache.snooped_read_q(base + slot * size + 8 * i) for i in range(size // 8))
            lo, hi = words[0], words[1]
            why = qi.check_256(words) if self.iq_dw else qi.check(lo, hi)
            if why is None:
                d = qi.decode(lo, hi)
                why = self._refused(d) or self._apply(d)
            if why is not None:
                # vtd_fetch_inv_desc(): the head stays on the descriptor that failed.
                self._queue_error(why, qi.desc_type(lo))
                return
            self._count("qi-desc")
            self.iqh = ((slot + 1) % n) << shift

    def _refused(self, d: qi.Descriptor) -> str | None:
        """Why a well-formed descriptor is still an invalidation queue error, or None."""
        if isinstance(d, (qi.PiotlbDesc, qi.PcDesc, qi.PasidDevTlbDesc)) and not self.iq_dw:
            return f"{qi.TYPE_NAMES[qi.desc_type(d.encode()[0])]} descriptor in a 128-bit queue (IQA.DW=0)"
        if isinstance(d, qi.IotlbDesc) and d.gran == regs.GRAN_PAGE and d.am > self.mamv:
            return f"IOTLB descriptor AM {d.am} exceeds MAMV {self.mamv}"
        if isinstance(d, qi.WaitDesc) and self.emulated_by_qemu and not (d.status_write or d.interrupt or d.fence):
            # QEMU vtd_process_wait_desc() after 57ac646a2ecb "intel_iommu: Bypass barrier
            # wait descriptor" (QEMU 10.2, Oct 2025): only SW=IF=FN=0 is "invalid wait
            # desc"; SW=IF=0 with FN=1 (VT-d spec 7.10's barrier) is accepted.  Before
            # that commit QEMU refused every wait descriptor with neither SW nor IF.
            # The VT-d spec gives SW=IF=0 no error, so real hardware takes it as a no-op.
            return "invalid wait descriptor: none of SW, IF, FN set (QEMU vtd_process_wait_desc)"
        return None

    def _apply(self, d: qi.Descriptor) -> str | None:
        """Carry out one descriptor; returns why it failed (a queue error) or None."""
        if isinstance(d, qi.CcDesc):
            self.invalidate_context(d.gran, d.did, d.sid, d.fm)
        elif isinstance(d, qi.IotlbDesc):
            self.invalidate_iotlb(d.gran, d.did, d.addr, d.am, d.ih)
        elif isinstance(d, qi.DevTlbDesc):
            self.invalidate_device_tlb(d.sid, d.addr, d.size)
        elif isinstance(d, qi.IecDesc):
            self._count("iec")  # no interrupt remapping in this model: nothing cached
        elif isinstance(d, qi.PiotlbDesc):
            self.invalidate_piotlb(d.gran, d.did, d.pasid, d.addr, d.am, d.ih)
        elif isinstance(d, qi.PcDesc):
            self.invalidate_pasid_cache(d.gran, d.did, d.pasid)
        elif isinstance(d, qi.PasidDevTlbDesc):
            self.invalidate_pasid_device_tlb(d.sid, d.pasid, d.addr, d.size, d.glob)
        elif isinstance(d, qi.WaitDesc):
            # vtd_process_wait_desc() since "intel_iommu: Allow both Status Write and
            # Interrupt Flag in QI wait" (July 2025): SW then IF, each on its own; a
            # failed status write still raises the completion event, then fails the
            # descriptor.
            failed = None
            if d.status_write:
                try:
                    self._write_status(d.status_addr, d.status_data)
                except MemoryError_:
                    failed = f"wait descriptor status write to {d.status_addr:#x} failed (outside memory)"
            if d.interrupt:
                self.ics |= regs.ICS_IWC
            return failed
        return None

    def _write_status(self, addr: int, data: int) -> None:
        """The wait descriptor's 32-bit status write: a snooped DMA write, so the CPU
        polling the word (qi_submit_sync's READ_ONCE(desc_status[])) sees it at once."""
        word = addr & ~7
        old = self.cache.snooped_read_q(word)
        shift = (addr & 4) * 8
        new = (old & ~(0xFFFFFFFF << shift)) | ((data & 0xFFFFFFFF) << shift)
        self.cache.device_write_q(word, new)

    def submit(self, *descs: qi.Descriptor) -> None:
        """Software's side of QI: write descriptors at the tail, then bump IQT."""
        base = self.iqa & ~0xFFF & MASK64
        n = self.queue_entries
        shift = self.qi_shift
        slot = self.iqt >> shift
        for d in descs:
            lo, hi = d.encode()
            words = (lo, hi, 0, 0) if self.iq_dw else (lo, hi)  # Linux writes qw2/qw3 as 0
            for i, w in enumerate(words):
                self.cache.cpu_write_q(base + (slot << shift) + 8 * i, w)
            slot = (slot + 1) % n
        self.qi_submissions.append(len(descs))
        self._count("qi-tail-write")
        self.mmio_write(regs.IQT_REG, slot << shift)

    # ------------------------------------------------------------ staleness
    def context_cache_stale(self, e: ContextCacheEntry, read=None) -> str | None:
        """Why a cached context entry no longer matches the tables, or None."""
        if e.sm:
            return self._sm_context_stale(e, read or self.cpu_read_q)
        cr = self.read_context(e.source_id, read or self.cpu_read_q)
        if not e.present:
            return "now present in memory; still cached as not present" if cr.ok else None
        if not cr.ok:
            return f"memory now gives fault {cr.reason:#x} ({fr.reason_string(cr.reason)})"
        assert cr.entry is not None
        if (cr.entry.lo, cr.entry.hi) != (e.lo, e.hi):
            return f"memory now holds DID {cr.entry.did}, SLPTPTR {cr.entry.slptptr:#x}"
        return None

    def iotlb_stale(self, e: IotlbEntry, read=None) -> str | None:
        """Why a cached translation no longer matches the tables, or None.  By default
        the tables are read as the CPU sees them, guest RAM (foreign_ram) included."""
        if read is None:
            read = self._foreign_reader(self.cpu_read_q, True) if self.foreign_ram else self.cpu_read_q
        if e.pasid is not None:
            return self._sm_iotlb_stale(e, read)
        cr = self.read_context(e.source_id, read)
        if not cr.ok or cr.entry is None or cr.entry.did != e.did:
            return "the context entry it was filled through no longer maps this domain"
        # Walk with an access the entry allows: a read walk of a write-only page stops at
        # the permission check and never reaches the leaf to compare.
        write = e.present and not e.r
        wr = self.walk(cr.entry, e.iova, write, read)
        if not e.present:
            return "now present in memory; still cached as not present" if wr.ok or wr.present else None
        if not wr.ok and not wr.present:
            return "memory now says not present"
        if not wr.ok:
            return (f"memory now faults a {'write' if write else 'read'} of {e.iova:#x}: "
                    f"{fr.reason_string(wr.reason)}")
        base = wr.hpa >> wr.shift << wr.shift
        if (base, wr.shift, wr.r, wr.w, wr.snp) != (e.hpa, e.shift, e.r, e.w, e.snp):
            return f"memory now maps {e.iova:#x} to {wr.hpa:#x} ({'R' if wr.r else '-'}{'W' if wr.w else '-'})"
        return None
