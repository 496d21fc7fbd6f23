"""Scalable mode of a DMA-remapping unit: the walks, caches and fault reporting that
apply once SRTP has latched a root table with RTADDR.SMT set.

A mixin of DmarUnit (unit.py), kept apart so that the legacy path there stays as it
was.  Sources: QEMU hw/i386/intel_iommu.c (≈2025 copy with first-stage support:
vtd_dev_to_context_entry, vtd_get_pe_in_pasid_leaf_table, vtd_ce_get_pasid_fpd,
vtd_iova_to_flpte, vtd_do_iommu_translate, vtd_hash_remove_by_page[_piotlb],
vtd_piotlb_pasid_invalidate), its intel_iommu_internal.h reserved masks
(VTD_SM_CONTEXT_ENTRY_RSVD_VAL0/1, VTD_FPTE_PAGE_L*_RSVD_MASK), and Linux
drivers/iommu/intel/iommu.c dmar_fault_dump_ptes() (2026 mainline) for the dump.
Where QEMU and real hardware differ the comment says which one this follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import faults as fr
from .caches import ContextCacheEntry, IotlbEntry, PasidCacheEntry
from .entries import PTE_ADDR_MASK, PTE_PS, PTE_R, PTE_W, level_index, level_shift
from .memory import MemoryError_
from .results import WalkResult
from .sm_entries import (
    FL_A, FL_ADDR_MASK, FL_D, FL_P, FL_PS, FL_RW, FL_US, PASID_DIR_ENTRY_SIZE, PASID_ENTRY_SIZE,
    PASID_PDE_SHIFT, PASID_PTE_MASK, PGTT_FL_ONLY, PGTT_NAMES, PGTT_NESTED, PGTT_PT, PGTT_SL_ONLY,
    PasidDirEntry, PasidEntry, SmContextEntry, SmRootEntry, canonical, context_slot,
)

MASK64 = (1 << 64) - 1
_PAGE_MASK = MASK64 & ~0xFFF  # VTD_PAGE_MASK

# Second-stage fault codes, legacy and scalable mode: (write, read, reserved, entry
# access error, top-table access error).  Legacy: QEMU's VTD_FR_WRITE/READ/
# PAGING_ENTRY_RSVD/PAGING_ENTRY_INV.  Scalable mode: the dma_remap_sm_fault_reasons
# names — "SM: No write/read permission for Write/AtomicOp request" (0x85/0x86, the
# final access-rights check; 0x79 is for second-stage entries met while walking
# nested first-stage tables), "Non-zero reserved field set in second-level paging
# entry" (0x7A), "Error attempting to access second-level paging entry" (0x78) and
# "Invalid second-level page table pointer" (0x7B).  QEMU raises the legacy codes
# in scalable mode too; real hardware reports the SM ones (spec, unverified).
SS_CODES_LEGACY = (fr.WRITE, fr.READ, fr.PAGING_ENTRY_RSVD, fr.PAGING_ENTRY_INV, fr.PAGING_ENTRY_INV)
SS_CODES_SM = (fr.SM_WRITE, fr.SM_READ, fr.SS_PAGING_ENTRY_RSVD, fr.SS_PAGING_ENTRY_INV, fr.SS_PTPTR_INV)

# Faults under which a CM=1 unit may keep a not-present / invalid entry cached.
_NEG_CONTEXT = frozenset({fr.SM_ROOT_ENTRY_P, fr.SM_CONTEXT_ENTRY_P, fr.SM_CONTEXT_ENTRY_INV})
_NEG_PASID = frozenset({fr.PASID_DIR_ENTRY_P, fr.PASID_ENTRY_P, fr.PASID_TABLE_ENTRY_INV})


@dataclass
class SmContextResult:
    """Scalable-mode root → context walk for one source id (pure)."""

    ok: bool
    reason: int = 0
    entry: SmContextEntry | None = None
    root_lo: int = 0
    root_hi: int = 0
    address: int = 0  # of the context entry

    @property
    def fpd(self) -> bool:
        return bool(self.entry and self.entry.fpd)


@dataclass
class PasidResult:
    """Context → PASID directory → PASID table walk for (source id, PASID) (pure).

    `fpd` is the FPD of the context entry, the directory entry or the PASID entry,
    each read whatever its P bit says (QEMU vtd_ce_get_pasid_fpd)."""

    ok: bool
    reason: int = 0
    pasid: int = 0
    context: SmContextEntry | None = None
    context_addr: int = 0
    dir_entry: PasidDirEntry | None = None
    dir_addr: int = 0
    entry: PasidEntry | None = None
    entry_addr: int = 0
    fpd: bool = False
    trail: list = field(default_factory=list)


def _own_fpd(pr: PasidResult) -> bool:
    """FPD of the directory entry or the PASID entry (not the context entry's)."""
    return bool((pr.dir_entry and pr.dir_entry.fpd) or (pr.entry and pr.entry.fpd))


class ScalableMode:
    """DmarUnit's scalable-mode half (see the module docstring)."""

    # ------------------------------------------------------------ state
    @property
    def sm_active(self) -> bool:
        """The latched root table is scalable-mode: SRTP latched RTADDR with SMT set
        on a unit reporting ECAP.SMTS (QEMU vtd_update_scalable_state)."""
        return bool(self.rta_latched & self._RTADDR_SMT)

    @property
    def smpwc(self) -> bool:
        return bool(self.ecap >> 48 & 1)

    def _paging_read(self, pe: PasidEntry):
        """How paging entries under `pe` are read: snooped iff PASID-entry PWSNP=1 on a
        unit with ECAP.SMPWC (root/context/PASID structures follow ECAP.C instead,
        hw_read_q).  A non-snooped read sees memory, not a dirty CPU line."""
        return self._reader(bool(pe.pwsnp and self.smpwc))

    def _reader(self, snoop: bool):
        posted = self._write_buffer
        snoop = snoop or self.emulated_by_qemu
        base = self.cache.snooped_read_q if snoop else self.mem.read_q
        if self.foreign_ram:
            base = self._foreign_reader(base, snoop)
        if not posted:
            return base

        def read(addr: int) -> int:
            line = posted.get(addr & ~63)
            return line[(addr & 63) >> 3] if line is not None else base(addr)
        return read

    def _foreign(self, addr: int):
        """(the guest world's cache, guest address) when `addr` is in a foreign_ram
        window, else None."""
        for base, size, cache in self.foreign_ram:
            if base <= addr < base + size:
                return cache, addr - base
        return None

    def _foreign_reader(self, own, snoop: bool):
        """A paging read that goes to the guest world's memory inside a foreign_ram
        window, with the same snoop choice as the unit's own read."""
        def read(addr: int) -> int:
            hit = self._foreign(addr)
            if hit is None:
                return own(addr)
            cache, gaddr = hit
            return cache.snooped_read_q(gaddr) if snoop else cache.mem.read_q(gaddr)
        return read

    def _device_write_q(self, addr: int, value: int) -> None:
        """The unit's atomic A/D write, into the guest world inside a foreign_ram window."""
        hit = self._foreign(addr) if self.foreign_ram else None
        if hit is None:
            self.cache.device_write_q(addr, value)
        else:
            hit[0].device_write_q(hit[1], value)

    # ------------------------------------------------------------ structures
    def read_sm_context(self, source_id: int, read=None) -> SmContextResult:
        """Scalable-mode root → context walk (QEMU vtd_dev_to_context_entry with
        root_scalable; checks and codes are the SM reasons 0x38-0x48)."""
        read = read or self.hw_read_q
        bus, devfn = source_id >> 8 & 0xFF, source_id & 0xFF
        rta = self.rta_latched & _PAGE_MASK
        try:
            rlo, rhi = read(rta + bus * 16), read(rta + bus * 16 + 8)
        except MemoryError_:
            return SmContextResult(False, fr.SM_ROOT_ACCESS)
        root = SmRootEntry.decode(rlo, rhi)
        present, ctp = root.half(devfn)
        res = SmContextResult(False, root_lo=rlo, root_hi=rhi)
        if not present:
            res.reason = fr.SM_ROOT_ENTRY_P
            return res
        haw = self._haw_rsvd()
        # QEMU vtd_root_entry_rsvd_bits_check: both halves, bits 11:1 and above HAW.
        if root.reserved_set or (root.lctp | root.uctp) & haw:
            res.reason = fr.SM_ROOT_ENTRY_RSVD
            return res
        res.address = ctp + context_slot(devfn)[1]
        try:
            words = tuple(read(res.address + 8 * i) for i in range(4))
        except MemoryError_:
            res.reason = fr.SM_CONTEXT_ACCESS
            return res
        ce = res.entry = SmContextEntry.decode(*words)
        if not ce.present:
            res.reason = fr.SM_CONTEXT_ENTRY_P
        elif ce.reserved_set or ce.pasiddirptr & haw:
            res.reason = fr.SM_CONTEXT_ENTRY_RSVD  # VTD_SM_CONTEXT_ENTRY_RSVD_VAL0/1, val[2], val[3]
        elif (ce.dte and not self.ecapf("DT")) or (ce.pre and not self.ecapf("PRS")) \
                or (ce.paside and not self.ecapf("PASID")):
            # Enables of features the unit lacks (spec, unverified; QEMU checks none).
            res.reason = fr.SM_CONTEXT_ENTRY_INV
        elif ce.rid_pasid and not self.ecapf("RPS"):
            res.reason = fr.SM_RID_PASID  # RID_PASID other than 0 needs ECAP.RPS (spec, unverified)
        else:
            res.ok = True
        return res

    def read_pasid_entry(self, source_id: int, pasid: int | None = None, read=None, *,
                         context: SmContextEntry | None = None) -> PasidResult:
        """Context → PASID directory → PASID table for `pasid` (the context entry's
        RID_PASID when None), as this unit reads them (or with `read`, e.g.
        cpu_read_q for a view).  Faults 0x46, 0x50-0x5B; no caching, no recording."""
        read = read or self.hw_read_q
        res = PasidResult(False)
        if context is None:
            cr = self.read_sm_context(source_id, read)
            res.context, res.context_addr = cr.entry, cr.address
            res.fpd = cr.fpd
            if not cr.ok:
                res.reason = cr.reason
                return res
            context = cr.entry
        else:
            res.context, res.fpd = context, context.fpd
        ce = context
        res.pasid = pasid = ce.rid_pasid if pasid is None else pasid
        if pasid >= ce.max_pasid:
            res.reason = fr.SM_CONTEXT_PASID_MAX
            return res
        haw = self._haw_rsvd()
        res.dir_addr = ce.pasiddirptr + (pasid >> PASID_PDE_SHIFT) * PASID_DIR_ENTRY_SIZE
        try:
            de = res.dir_entry = PasidDirEntry.decode(read(res.dir_addr))
        except MemoryError_:
            res.reason = fr.PASID_DIR_ACCESS_ERR
            return res
        res.fpd |= de.fpd
        res.trail.append(("PASID dir[{}] @{:#x} = {:#018x}", pasid >> PASID_PDE_SHIFT, res.dir_addr, de.raw))
        if not de.present:
            res.reason = fr.PASID_DIR_ENTRY_P
            return res
        if de.reserved_set or de.table & haw:
            res.reason = fr.PASID_DIR_ENTRY_RSVD
            return res
        res.entry_addr = de.table + (pasid & PASID_PTE_MASK) * PASID_ENTRY_SIZE
        try:
            pe = res.entry = PasidEntry.decode(read(res.entry_addr + 8 * i) for i in range(8))
        except MemoryError_:
            res.reason = fr.PASID_TABLE_ACCESS_ERR
            return res
        res.fpd |= pe.fpd
        res.trail.append(("PASID entry[{}] @{:#x}: PGTT {}, DID {}", pasid & PASID_PTE_MASK, res.entry_addr,
                          pe.pgtt_name, pe.did))
        if not pe.present:
            res.reason = fr.PASID_ENTRY_P
        elif self._pasid_entry_rsvd(pe, haw):
            res.reason = fr.PASID_ENTRY_RSVD
        elif not self._pasid_entry_valid(pe):
            res.reason = fr.PASID_TABLE_ENTRY_INV
        else:
            res.ok = True
        return res

    def _pasid_entry_rsvd(self, pe: PasidEntry, haw: int) -> bool:
        ptrs = 0
        if pe.pgtt in (PGTT_SL_ONLY, PGTT_NESTED):
            ptrs |= pe.ssptptr
        if pe.pgtt in (PGTT_FL_ONLY, PGTT_NESTED):
            ptrs |= pe.fsptptr
        # PGSNP is reserved on a unit without snoop control (spec, unverified).
        return pe.reserved_set or bool(ptrs & haw) or (pe.pgsnp and not self.sc)

    def _pasid_entry_valid(self, pe: PasidEntry) -> bool:
        """QEMU vtd_pe_type_check + the level checks of vtd_get_pe_in_pasid_leaf_table:
        the PGTT must be one the unit supports (FL: ECAP.FLTS, SL: SLTS, nested: NEST,
        PT: PT), a first stage 4-level or 5-level with CAP.FL5LP (QEMU accepts only
        4), a second stage an AW in SAGAW."""
        need = {PGTT_FL_ONLY: "FLTS", PGTT_SL_ONLY: "SLTS", PGTT_NESTED: "NEST", PGTT_PT: "PT"}.get(pe.pgtt)
        if need is None or not self.ecapf(need):
            return False
        if pe.pgtt in (PGTT_FL_ONLY, PGTT_NESTED) and not (pe.flpm == 0 or (pe.flpm == 1 and self.capf("FL5LP"))):
            return False
        if pe.pgtt in (PGTT_SL_ONLY, PGTT_NESTED) and not self.aw_supported(pe.aw):
            return False
        return True

    # ------------------------------------------------------------ walks
    def _ss_walk(self, table: int, levels: int, iova: int, write: bool, read, codes=SS_CODES_LEGACY):
        """Second-stage walk from `table` (pure).  The legacy walk() is this with the
        legacy codes; scalable mode passes SS_CODES_SM."""
        c_write, c_read, c_rsvd, c_access, c_top = codes
        need = PTE_W if write else PTE_R
        haw_rsvd = self._haw_rsvd()
        sllps = self.capf("SLLPS")
        r = w = True
        res = WalkResult(False)
        for level in range(levels, 0, -1):
            pte_addr = table + level_index(iova, level) * 8
            try:
                pte = read(pte_addr)
            except MemoryError_:
                res.reason, res.level = (c_top if level == levels else c_access), level
                return res
            res.trail.append(("L{}[{}] @{:#x} = {:#018x}", level, level_index(iova, level), pte_addr, pte))
            res.pte, res.pte_addr, res.level = pte, pte_addr, level
            if not pte & (PTE_R | PTE_W):
                res.present = False
                res.reason = c_write if write else c_read
                return res
            leaf = level == 1 or bool(pte & PTE_PS)
            rsvd = haw_rsvd
            if pte & PTE_PS and level > 1:
                if level > 3 or not sllps >> (level - 2) & 1:
                    res.reason = c_rsvd
                    return res
                rsvd |= (1 << level_shift(level)) - 1 & ~0xFFF  # large-page address bits
            if leaf:
                if pte & self._PTE_SNP and not self.sc:
                    rsvd |= self._PTE_SNP
                if pte & self._PTE_TM and not self.ecapf("DT"):
                    rsvd |= self._PTE_TM
            elif pte & (self._PTE_SNP | self._PTE_TM):
                rsvd |= self._PTE_SNP | self._PTE_TM
            if pte & rsvd:
                res.reason = c_rsvd
                return res
            r &= bool(pte & PTE_R)
            w &= bool(pte & PTE_W)
            if not pte & need:
                res.reason = c_write if write else c_read
                res.r, res.w = r, w
                return res
            if leaf:
                shift = level_shift(level)
                addr_mask = ((1 << 52) - 1) & ~((1 << shift) - 1)
                res.ok = True
                res.shift = shift
                res.hpa = (pte & addr_mask) | (iova & ((1 << shift) - 1))
                res.r, res.w = r, w
                res.snp = bool(pte & self._PTE_SNP)
                return res
            table = pte & PTE_ADDR_MASK
        raise AssertionError("walk fell off level 1")  # unreachable: level 1 is a leaf

    def fs_walk(self, pe: PasidEntry, iova: int, write: bool, read=None, *, update_ad: bool = False,
                privileged: bool = False, gpa=None):
        """First-stage (IA-32e) walk of `iova` under PASID entry `pe`.

        QEMU vtd_iova_to_flpte, with the checks it leaves out: 5-level tables, PS
        reserved at levels 4-5 and at level 3 without CAP.FS1GP (QEMU's
        VTD_FPTE_PAGE_L4_RSVD_MASK has the level-4 one), supervisor requests (WPE).
        Per level: P (0x71), reserved bits (0x72: address bits above HAW, large-page
        address bits 20:13 / 29:13 — bit 12 is PAT), U/S for a user request (0x81;
        QEMU: "No emulated device supports supervisor privilege request yet", so every
        request is user-privileged unless `privileged`), R/W for a write (0x85, R/W is
        ANDed across levels).  Reserved bits are checked before the permissions (QEMU
        checks U/S and R/W first).  `update_ad`: a DMA sets A on every entry and D on
        the leaf of a write where they are clear, as QEMU vtd_set_flag_in_pte does —
        a snooped atomic write when the walk snoops (PWSNP), otherwise fault 0x90
        ("A/D bit update needed in first-level entry when set up in no snoop"; spec,
        unverified).  Linux pre-sets A (and D on writable leaves), so its walks never
        write.  `gpa`: nested translation — a function turning each table address
        (a guest-physical address) into a host one, or returning a fault code.
        """
        read = read or self._paging_read(pe)
        res = WalkResult(False)
        levels = pe.fs_levels
        if not canonical(iova, levels):
            res.reason = fr.FS_NON_CANONICAL
            return res
        haw_rsvd = self._haw_rsvd()
        fs1gp = self.capf("FL1GP")
        snooped = bool(pe.pwsnp and self.smpwc) or self.emulated_by_qemu
        ignore_rw = privileged and not pe.wpe
        table, w = pe.fsptptr, True
        for level in range(levels, 0, -1):
            idx = level_index(iova, level)
            pte_addr = table + idx * 8
            if gpa is not None:
                pte_addr = gpa(pte_addr, level == levels)
                if isinstance(pte_addr, tuple):  # (fault code,)
                    res.reason, res.level = pte_addr[0], level
                    return res
            try:
                pte = read(pte_addr)
            except MemoryError_:
                res.reason = fr.PASID_ENTRY_FSPTPTR_INV if level == levels else fr.FS_PAGING_ENTRY_INV
                res.level = level
                return res
            res.trail.append(("FS L{}[{}] @{:#x} = {:#018x}", level, idx, pte_addr, pte))
            res.pte, res.pte_addr, res.level = pte, pte_addr, level
            if not pte & FL_P:
                res.present = False
                res.reason = fr.FS_PAGING_ENTRY_P
                return res
            leaf = level == 1 or bool(pte & FL_PS)
            rsvd = haw_rsvd
            if pte & FL_PS:
                if level >= 4 or (level == 3 and not fs1gp):
                    rsvd |= FL_PS
                elif level > 1:
                    rsvd |= (1 << level_shift(level)) - 1 & ~0x1FFF
            if pte & rsvd:
                res.reason = fr.FS_PAGING_ENTRY_RSVD
                return res
            if not pte & FL_US:
                if not privileged:
                    res.reason = fr.FS_PAGING_ENTRY_US
                    return res
                res.us = False
            w &= bool(pte & FL_RW)
            if write and not pte & FL_RW and not ignore_rw:
                res.reason, res.r, res.w = fr.SM_WRITE, True, False
                return res
            need = (0 if pte & FL_A else FL_A) | (FL_D if leaf and write and not pte & FL_D else 0)
            if need and update_ad:
                if not snooped:
                    res.reason = fr.FS_AD_NO_SNOOP
                    return res
                self._device_write_q(pte_addr, pte | need)
                res.trail.append(("  A/D set: {:#018x}", pte | need))
            if leaf:
                shift = level_shift(level)
                addr_mask = FL_ADDR_MASK & ~((1 << shift) - 1)
                res.ok, res.shift = True, shift
                res.hpa = (pte & addr_mask) | (iova & ((1 << shift) - 1))
                res.r, res.w = True, w  # the entries' R/W: WPE=0 is applied per request
                return res
            table = pte & FL_ADDR_MASK
        raise AssertionError("walk fell off level 1")

    def _nested_walk(self, pe: PasidEntry, iova: int, write: bool, *, update_ad: bool, privileged: bool,
                     read=None, phase=None):
        """PGTT=3: a first-stage walk whose table addresses and output are guest-physical
        addresses translated by the second stage of the same PASID entry.  A second-
        stage fault while reading a first-stage entry is 0x75 (FL-PML4 / top level) or
        0x76 ("Read permission error in first-level paging entry in Nested
        translation"); reserved and access errors keep their second-stage codes.
        `phase(what, addr)`, when given, hears which reads follow: "gpa" (a first-stage
        table's GPA through the second stage), "fs" (the first stage again), "out" (the
        output GPA through the second stage) — so a caller can label each read."""
        read = read or self._paging_read(pe)
        levels = pe.ss_levels

        def gpa(addr: int, top: bool):
            if phase:
                phase("gpa", addr)
            wr = self._ss_walk(pe.ssptptr, levels, addr, False, read, SS_CODES_SM)
            if phase:
                phase("fs", addr)
            if wr.ok:
                return wr.hpa
            if wr.reason in (fr.SM_READ, fr.SM_WRITE):
                return (0x75 if top else 0x76,)
            return (wr.reason,)

        fs = self.fs_walk(pe, iova, write, read, update_ad=update_ad, privileged=privileged, gpa=gpa)
        if not fs.ok:
            return fs
        if phase:
            phase("out", fs.hpa)
        ss = self._ss_walk(pe.ssptptr, levels, fs.hpa, write, read, SS_CODES_SM)
        ss.trail = fs.trail + [("nested: GPA {:#x} through the second stage", fs.hpa)] + ss.trail
        if not ss.ok:
            return ss
        shift = min(fs.shift, ss.shift)
        ss.shift = shift
        ss.r, ss.w = fs.r and ss.r, fs.w and ss.w
        return ss

    def _sm_walk(self, pe: PasidEntry, iova: int, write: bool, read=None, *, update_ad: bool = False,
                 privileged: bool = False):
        if pe.pgtt == PGTT_FL_ONLY:
            return self.fs_walk(pe, iova, write, read, update_ad=update_ad, privileged=privileged)
        if pe.pgtt == PGTT_NESTED:
            return self._nested_walk(pe, iova, write, update_ad=update_ad, privileged=privileged, read=read)
        return self._ss_walk(pe.ssptptr, pe.ss_levels, iova, write, read or self._paging_read(pe), SS_CODES_SM)

    # ------------------------------------------------------------ translation
    def _translate_sm(self, t, pasid: int | None, translation_request: bool, privileged: bool):
        """The scalable-mode half of translate(): context (cache) → PASID entry
        (cache) → pass-through or IOTLB (or walk) → fill the IOTLB / device-TLB."""
        sid, iova, write = t.source_id, t.iova, t.write
        ce = self._sm_context(t)
        if ce is None:
            return t
        fpd = ce.fpd
        if translation_request and not ce.dte:
            return self._sm_fault(t, fr.SM_CONTEXT_DTE, fpd, pasid)
        if pasid is not None and not ce.paside:
            return self._sm_fault(t, fr.SM_CONTEXT_PASIDE, fpd, pasid)
        p = ce.rid_pasid if pasid is None else pasid
        t.pasid = p
        if p >= ce.max_pasid:
            return self._sm_fault(t, fr.SM_CONTEXT_PASID_MAX, fpd, pasid)
        got = self._sm_pasid_entry(t, ce, p, pasid)
        if got is None:
            return t
        pe, fpd = got
        if privileged and not pe.sre:
            return self._sm_fault(t, fr.PASID_ENTRY_SRE, fpd, pasid)
        t.did, t.pgtt = pe.did, pe.pgtt
        if pe.pgtt == PGTT_PT:
            # QEMU: "We don't need to translate for pass-through context entries.
            # Also, let's ignore IOTLB caching as well for PT devices."
            t.ok, t.hpa, t.snp = True, iova, pe.pgsnp
            t.trail.append("pass-through (PGTT=4): output = input")
            self._sm_fill_device_tlb(translation_request, sid, pasid, iova, iova, True, True)
            return t
        if pe.pgtt in (PGTT_FL_ONLY, PGTT_NESTED):
            if not canonical(iova, pe.fs_levels):
                return self._sm_fault(t, fr.FS_NON_CANONICAL, fpd, pasid)
        elif iova >> min(self.mgaw_bits, 30 + 9 * pe.aw):
            return self._sm_fault(t, fr.SM_ADDR_BEYOND, fpd, pasid)

        hit = self.iotlb.lookup(pe.did, iova, p)
        if hit is not None:
            t.iotlb_hit = True
            if not hit.present:
                t.trail.append(("IOTLB hit: cached not-present entry (DID {}, PASID {})", pe.did, p))
                return self._sm_fault(t, hit.fault_reason if pe.pgtt != PGTT_SL_ONLY else
                                      (fr.SM_WRITE if write else fr.SM_READ), fpd, pasid)
            t.trail.append(("IOTLB hit: {:#x}/{:#x} → {:#x} (PASID {})", hit.iova, hit.size, hit.hpa, p))
            if not privileged and not hit.user:
                return self._sm_fault(t, fr.FS_PAGING_ENTRY_US, fpd, pasid)
            # A supervisor write under WPE=0 ignores R/W (first stage only).
            wok = hit.w or (privileged and not pe.wpe and hit.first_stage)
            if not (wok if write else hit.r):
                return self._sm_fault(t, fr.SM_WRITE if write else fr.SM_READ, fpd, pasid)
            t.ok, t.hpa, t.snp = True, hit.hpa | (iova & (hit.size - 1)), hit.snp
            self._sm_fill_device_tlb(translation_request, sid, pasid, iova, t.hpa, hit.r, hit.w)
            return t

        wr = self._sm_walk(pe, iova, write, update_ad=True, privileged=privileged)
        t.trail.extend(wr.trail)
        snp = pe.pgsnp or (pe.pgtt != PGTT_FL_ONLY and wr.snp)
        if wr.ok:
            self.iotlb.insert(IotlbEntry(
                pe.did, iova >> wr.shift << wr.shift, wr.shift, wr.hpa >> wr.shift << wr.shift,
                wr.r, wr.w, snp, True, sid, wr.pte, wr.pte_addr, 0, p, pe.pgtt, wr.us,
            ))
        elif self.cm and self.caches_negative and not wr.present:
            self.iotlb.insert(IotlbEntry(
                pe.did, iova >> 12 << 12, 12, 0, False, False, False, False, sid, wr.pte, wr.pte_addr,
                wr.reason, p, pe.pgtt,
            ))
            t.trail.append("CM=1: not-present translation cached")
        if not wr.ok:
            return self._sm_fault(t, wr.reason, fpd, pasid)
        t.ok, t.hpa, t.snp = True, wr.hpa, snp
        self._sm_fill_device_tlb(translation_request, sid, pasid, iova, wr.hpa, wr.r, wr.w)
        return t

    def _sm_context(self, t) -> SmContextEntry | None:
        """The context entry for t's requester, from the context cache or a walk (None
        after recording the fault)."""
        sid = t.source_id
        cached = self.context_cache.lookup(sid)
        if cached is not None and cached.sm:
            t.context_hit = True
            ce = cached.decoded or SmContextEntry.decode(cached.lo, cached.hi)
            if not cached.present:
                t.trail.append("context cache hit: cached not-present/invalid SM context entry")
                self._sm_fault(t, cached.fault_reason, ce.fpd, t.pasid)
                return None
            t.trail.append(("context cache hit: PASID dir {:#x}", ce.pasiddirptr))
            return ce
        # A cached legacy-format entry (from before SRTP switched the mode) is not
        # used as a scalable-mode one: the walk below replaces it.
        cr = self.read_sm_context(sid)
        if not cr.ok:
            t.trail.append(("SM context walk: fault {:#x}", cr.reason))
            if self.cm and self.caches_negative and cr.reason in _NEG_CONTEXT:
                w = cr.entry.words if cr.entry else (0, 0, 0, 0)
                self.context_cache.insert(ContextCacheEntry(sid, 0, False, w[0], w[1], cr.reason, cr.entry, sm=True))
                t.trail.append("CM=1: not-present entry cached")
            self._sm_fault(t, cr.reason, cr.fpd, t.pasid)
            return None
        ce = cr.entry
        self.context_cache.insert(ContextCacheEntry(sid, 0, True, ce.lo, ce.hi, 0, ce, sm=True))
        t.trail.append(("SM context walk @{:#x}: PASID dir {:#x}, PDTS {}, RID_PASID {}{}", cr.address,
                        ce.pasiddirptr, ce.pdts, ce.rid_pasid, ", DTE" if ce.dte else ""))
        return ce

    def _sm_pasid_entry(self, t, ce: SmContextEntry, p: int, req_pasid: int | None):
        """(PASID entry, FPD) from the PASID cache or a walk; None after a fault."""
        sid = t.source_id
        cached = self.pasid_cache.lookup(sid, p)
        if cached is not None:
            pe = cached.decoded or PasidEntry.decode(cached.val)
            fpd = ce.fpd or cached.fpd
            if not cached.present:
                t.trail.append(("PASID cache hit: cached not-present entry (PASID {})", p))
                self._sm_fault(t, cached.fault_reason, fpd, req_pasid)
                return None
            t.trail.append(("PASID cache hit: PASID {}, PGTT {}, DID {}", p, pe.pgtt_name, pe.did))
            return pe, fpd
        pr = self.read_pasid_entry(sid, p, context=ce)
        t.trail.extend(pr.trail)
        if not pr.ok:
            if self.cm and self.caches_negative and pr.reason in _NEG_PASID:
                val = pr.entry.val if pr.entry else (0,) * 8
                self.pasid_cache.insert(PasidCacheEntry(sid, p, pr.entry.did if pr.entry else 0, False, val,
                                                        pr.reason, pr.entry, _own_fpd(pr)))
                t.trail.append("CM=1: not-present PASID entry cached")
            self._sm_fault(t, pr.reason, pr.fpd, req_pasid)
            return None
        pe = pr.entry
        self.pasid_cache.insert(PasidCacheEntry(sid, p, pe.did, True, pe.val, 0, pe, _own_fpd(pr)))
        return pe, pr.fpd

    def _sm_fill_device_tlb(self, ats: bool, sid: int, pasid: int | None, iova: int, hpa: int, r: bool, w: bool):
        """A translation request (ATS) through a DTE=1 context entry fills the device's
        TLB: requests without PASID in device_tlb[sid], with PASID in
        pasid_device_tlb[(sid, pasid)] (the ones type 3 / type 8 descriptors reach)."""
        if not ats:
            return
        page = (hpa >> 12 << 12, r, w)
        if pasid is None:
            self.device_tlb.setdefault(sid, {})[iova >> 12] = page
        else:
            self.pasid_device_tlb.setdefault((sid, pasid), {})[iova >> 12] = page

    def _sm_fault(self, t, reason: int, fpd: bool, pasid: int | None):
        """Record a scalable-mode fault: FPD from the context, directory or PASID entry
        suppresses the qualified ones (faults.SM_QUALIFIED); FRCD carries PP and the
        PASID for a request with PASID (QEMU vtd_report_dmar_fault)."""
        page = t.iova & ~0xFFF & MASK64
        f = fr.Fault(self.name, t.source_id, page, reason, t.write,
                     fr.log_line(t.source_id, page, reason, t.write, pasid), pasid=pasid)
        if fpd and reason in fr.SM_QUALIFIED:
            f.recorded, f.suppressed_by_fpd = False, True
            t.trail.append("FPD=1: fault not recorded")
        else:
            f.recorded = self._record(f)
        self.faults.append(f)
        self._count("fault")
        t.fault = f
        return t

    # ------------------------------------------------------------ invalidation
    def invalidate_pasid_cache(self, gran: int, did: int = 0, pasid: int = 0) -> int:
        """PASID-cache invalidation (type 7): G0 all PASIDs of DID, G1 one PASID of
        DID, G3 global (qi_flush_pasid_cache; G2 is reserved, qi.check refuses it)."""
        if gran == 0:
            self.pasid_cache.invalidate_domain(did)
        elif gran == 1:
            self.pasid_cache.invalidate_pasid(did, pasid)
        elif gran == 3:
            self.pasid_cache.invalidate_global()
        else:
            raise ValueError(f"PASID-cache invalidation granularity {gran} is reserved")
        self._count(f"pc-{('domain', 'pasid', '', 'global')[gran]}")
        self._notify("pasid-cache", gran=gran, did=did, pasid=pasid)
        return gran

    def invalidate_piotlb(self, gran: int, did: int, pasid: int, addr: int = 0, am: int = 0,
                          ih: bool = False) -> int:
        """PASID-based IOTLB invalidation (type 6): G2 every entry of (DID, PASID)
        (QEMU vtd_piotlb_pasid_invalidate), G3 the first-stage/nested entries of
        (DID, PASID) in the 2^AM pages at ADDR (vtd_piotlb_page_invalidate).  No
        CAP.PSI / MAMV check: Linux applies none for P_IOTLB (REFERENCE-2 §12.2)."""
        self._drain_write_buffer()
        if gran == 2:
            self.iotlb.invalidate_pasid(did, pasid)
        elif gran == 3:
            self.iotlb.invalidate_pasid_page(did, pasid, addr, am)
        else:
            raise ValueError(f"PASID-based IOTLB invalidation granularity {gran} is reserved")
        self._count(f"piotlb-{'pasid' if gran == 2 else 'page'}")
        self._notify("piotlb", gran=gran, did=did, pasid=pasid, addr=addr, am=am, ih=ih)
        return gran

    def invalidate_pasid_device_tlb(self, source_id: int, pasid: int, addr: int = 0, size: bool = False,
                                    glob: bool = False) -> None:
        """PASID-based device-TLB invalidation (type 8): the device's translations for
        `pasid` (all its PASIDs with G) in the range of ADDR/S (as type 3)."""
        self._count("devtlb-pasid")
        keys = [k for k in self.pasid_device_tlb if k[0] == source_id and (glob or k[1] == pasid)]
        lo, span = self._devtlb_range(addr, size)
        for k in keys:
            entries = self.pasid_device_tlb[k]
            for pfn in [p for p in entries if lo <= p << 12 < lo + span]:
                del entries[pfn]

    # ------------------------------------------------------------ fault dump
    def _sm_fault_dump(self, out: list[str], source_id: int, addr: int, pasid: int | None) -> list[str]:
        """dmar_fault_dump_ptes(), scalable-mode branch (iommu.c, 2026 mainline)."""
        read = self.cpu_read_q
        bus, devfn = source_id >> 8 & 0xFF, source_id & 0xFF
        rta = self.rta_latched & _PAGE_MASK
        rlo, rhi = read(rta + bus * 16), read(rta + bus * 16 + 8)
        out.append(f"DMAR: scalable mode root entry: hi 0x{rhi:016x}, low 0x{rlo:016x}")
        half = rhi if devfn >= 0x80 else rlo  # iommu_context_addr(..., alloc=0)
        if not half & 1:
            return out + ["DMAR: context table is not present"]
        ctx = (half & _PAGE_MASK) + context_slot(devfn)[1]
        clo, chi = read(ctx), read(ctx + 8)
        out.append(f"DMAR: context entry: hi 0x{chi:016x}, low 0x{clo:016x}")
        if not clo & 1:
            return out + ["DMAR: pasid directory table is not present"]
        # "For request-without-pasid, get the pasid from context entry": the code
        # uses IOMMU_NO_PASID (0), not the RID_PASID field.
        p = 0 if pasid is None else pasid
        pde = read((clo & _PAGE_MASK) + (p >> PASID_PDE_SHIFT) * 8)
        out.append(f"DMAR: pasid dir entry: 0x{pde:016x}")
        if not pde & 1:  # get_pasid_table_from_pde(): NULL unless present
            return out + ["DMAR: pasid table is not present"]
        entry = (pde & _PAGE_MASK) + (p & PASID_PTE_MASK) * PASID_ENTRY_SIZE
        val = [read(entry + 8 * i) for i in range(8)]
        out += [f"DMAR: pasid table entry[{i}]: 0x{v:016x}" for i, v in enumerate(val)]
        if not val[0] & 1:
            return out + ["DMAR: scalable mode page table is not present"]
        if (val[0] >> 6) & 7 == PGTT_FL_ONLY:
            level, table = (5 if val[2] & (1 << 2) else 4), val[2] & _PAGE_MASK
        else:
            level, table = ((val[0] >> 2) & 7) + 2, val[0] & _PAGE_MASK  # agaw_to_level
        return self._pgtable_walk(out, table, level, addr)

    def _pgtable_walk(self, out: list[str], table: int, level: int, addr: int) -> list[str]:
        """pgtable_walk(): dma_pte_present (bits 1:0) and dma_pte_superpage (bit 7), for
        first-stage entries too."""
        read = self.cpu_read_q
        while True:
            pte = read((table & PTE_ADDR_MASK) + level_index(addr, level) * 8)
            out.append(f"DMAR: pte level: {level}, pte value: 0x{pte:016x}")
            if not pte & (PTE_R | PTE_W):
                out.append(f"DMAR: page table not present at level {level - 1}")
                break
            if level == 1 or pte & PTE_PS:
                break
            table, level = pte & PTE_ADDR_MASK, level - 1
        return out

    # ------------------------------------------------------------ staleness
    def _sm_context_stale(self, e: ContextCacheEntry, read) -> str | None:
        cr = self.read_sm_context(e.source_id, read)
        if not e.present:
            return "now present in memory; still cached as not present" if cr.ok else None
        if not cr.ok:
            return f"memory now gives fault {cr.reason:#x} ({fr.reason_string(cr.reason)})"
        if (cr.entry.lo, cr.entry.hi) != (e.lo, e.hi):
            return f"memory now holds PASID dir {cr.entry.pasiddirptr:#x}, RID_PASID {cr.entry.rid_pasid}"
        return None

    def pasid_cache_stale(self, e: PasidCacheEntry, read=None) -> str | None:
        """Why a cached PASID entry no longer matches the tables, or None."""
        pr = self.read_pasid_entry(e.source_id, e.pasid, read or self.cpu_read_q)
        if not e.present:
            return "now present in memory; still cached as not present" if pr.ok else None
        if not pr.ok:
            return f"memory now gives fault {pr.reason:#x} ({fr.reason_string(pr.reason)})"
        if pr.entry.val != tuple(e.val):
            pe = pr.entry
            return f"memory now holds PGTT {PGTT_NAMES.get(pe.pgtt, pe.pgtt)}, DID {pe.did}" + (
                ", PGSNP" if pe.pgsnp else "")
        return None

    def _sm_iotlb_stale(self, e: IotlbEntry, read) -> str | None:
        pr = self.read_pasid_entry(e.source_id, e.pasid, read)
        if not pr.ok or pr.entry is None or pr.entry.did != e.did or pr.entry.pgtt != e.pgtt:
            return "the PASID entry it was filled through no longer maps this domain"
        pe = pr.entry
        write = e.present and not e.r
        wr = self._sm_walk(pe, e.iova, write, read)
        if not e.present:
            return "now present in memory; still cached as not present" if wr.ok or wr.present else None
        if not wr.ok and not wr.present:
            return "memory now says not present"
        if not wr.ok:
            return (f"memory now faults a {'write' if write else 'read'} of {e.iova:#x}: "
                    f"{fr.reason_string(wr.reason)}")
        snp = pe.pgsnp or (pe.pgtt != PGTT_FL_ONLY and wr.snp)
        base = wr.hpa >> wr.shift << wr.shift
        if (base, wr.shift, wr.r, wr.w, snp) != (e.hpa, e.shift, e.r, e.w, e.snp):
            return f"memory now maps {e.iova:#x} to {wr.hpa:#x} ({'R' if wr.r else '-'}{'W' if wr.w else '-'}" + (
                ", SNP" if snp else "") + ")"
        return None
