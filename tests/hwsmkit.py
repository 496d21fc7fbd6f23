"""Helpers for the scalable-mode hardware tests (tests/test_hw_sm_*.py).

An `SmRig` is one DMAR unit in scalable mode on its own memory: a root table with
RTADDR.SMT, lower/upper context tables of 256-bit entries, a PASID directory and
PASID tables, and first- or second-stage page tables, all written through the CPU
(cpu_write_q + clflush) like the Linux driver does.  Entry words and addresses are
computed here from the bit positions of REFERENCE-2 §11 (Linux iommu.h / pasid.h,
QEMU intel_iommu_internal.h), independently of vtdtui.hw.sm_entries.

Capability values are written out bit by bit from the VT-d spec field positions.
"""

from __future__ import annotations

from vtdtui.hw import CpuCache, DmarUnit, PageAllocator, PhysMem

# CAP: the legacy test base (hwkit.CAP_BASE: ND=2, SAGAW 39/48, MGAW=47, FRO=0x22,
# PSI, NFR=3, MAMV=9) plus
#   SLLPS 2M+1G  bits 35:34 -> 0x3 << 34 = 0xC_0000_0000
#   FL1GP        bit 56     -> 0x0100_0000_0000_0000
CAP_BASE = 0x0009_0380_222F_0602
CAP_SLLPS = 0x3 << 34
CAP_FS1GP = 1 << 56
CAP_FL5LP = 1 << 60
CAP_CM = 1 << 7
# CAP with 5-level SAGAW too (bit 3 -> 0x800) and MGAW=56 (0x38 << 16).
CAP_5LVL_SAGAW = (CAP_BASE & ~(0x3F << 16)) | 0x800 | (0x38 << 16)
CAP_SM = CAP_BASE | CAP_SLLPS | CAP_FS1GP

# ECAP:
#   C bit 0, QI bit 1, DT bit 2, PT bit 6, SC bit 7, IRO=0x50 (bits 17:8 -> 0x5000)
#   NEST bit 26, PSS=19 bits 39:35 (-> 19 << 35), PASID bit 40, SMTS bit 43,
#   SLTS bit 46, FLTS bit 47, SMPWC bit 48
ECAP_C, ECAP_QI, ECAP_DT, ECAP_PT, ECAP_SC = 1, 2, 4, 0x40, 0x80
ECAP_IRO = 0x5000
ECAP_NEST = 1 << 26
ECAP_PSS19 = 19 << 35
ECAP_PASID = 1 << 40
ECAP_SMTS = 1 << 43
ECAP_SLTS = 1 << 46
ECAP_FLTS = 1 << 47
ECAP_SMPWC = 1 << 48
ECAP_SM = (ECAP_C | ECAP_QI | ECAP_DT | ECAP_PT | ECAP_SC | ECAP_IRO | ECAP_NEST | ECAP_PSS19 | ECAP_PASID
           | ECAP_SMTS | ECAP_SLTS | ECAP_FLTS | ECAP_SMPWC)

SID = 0x0300  # 03:00.0 (devfn 0x00: lower context table)
SID_UPPER = 0x0381  # 03:10.1 (devfn 0x81: upper context table)
DID = 5
RTADDR_SMT = 1 << 10

# First-stage entry bits (IA-32e; Linux DMA_FL_PTE_*): P 0, R/W 1, U/S 2, A 5, D 6, PS 7.
P, RW, US, A, D, PS = 1, 2, 4, 0x20, 0x40, 0x80
FS_TABLE = P | RW | US | A  # what pfn_to_dma_pte writes for a first-stage table
FS_LEAF_RW = P | RW | US | A | D  # __domain_mapping: writable leaf
FS_LEAF_RO = P | US | A


def fs_idx(iova: int, level: int) -> int:
    return (iova >> (12 + 9 * (level - 1))) & 0x1FF


class SmRig:
    def __init__(self, cap: int = CAP_SM, ecap: int = ECAP_SM, *, haw: int = 46, enable: bool = True,
                 caches_negative: bool = True, name: str = "dmar0"):
        self.mem = PhysMem(1 << 36)
        self.cache = CpuCache(self.mem)
        self.alloc = PageAllocator(self.mem, self.cache, 0x100000, 0x1000000)
        self.unit = DmarUnit(name, 0xFED90000, cap, ecap, self.mem, self.cache, haw=haw,
                             caches_negative=caches_negative)
        self.root = self.alloc.alloc()
        self.ctx_tables: dict[tuple[int, bool], int] = {}
        self.pasid_dirs: dict[int, int] = {}
        self.pasid_tables: dict[tuple[int, int], int] = {}
        if enable:
            self.unit.mmio_write(0x20, self.root | RTADDR_SMT)  # RTADDR
            self.unit.mmio_write(0x18, 1 << 30)  # GCMD.SRTP
            self.unit.mmio_write(0x18, 1 << 31)  # GCMD.TE

    # ---------------------------------------------------------------- CPU writes
    def wq(self, addr: int, value: int, *, flush: bool = True) -> None:
        self.cache.cpu_write_q(addr, value)
        if flush:
            self.cache.clflush(addr, 8)

    def rq(self, addr: int) -> int:
        return self.cache.cpu_read_q(addr)

    # ---------------------------------------------------------------- structures
    def context_table(self, sid: int) -> int:
        """The lower (devfn < 0x80) or upper context table of sid's bus; root lo bit 0
        LP + 63:12 LCTP, hi bit 0 UP + 63:12 UCTP."""
        bus, upper = sid >> 8, (sid & 0xFF) >= 0x80
        ct = self.ctx_tables.get((bus, upper))
        if ct is None:
            ct = self.ctx_tables[(bus, upper)] = self.alloc.alloc()
            self.wq(self.root + bus * 16 + (8 if upper else 0), ct | 1)
        return ct

    def context_addr(self, sid: int) -> int:
        """iommu_context_addr(): (devfn & 0x7f) * 2 slots of 16 bytes."""
        return self.context_table(sid) + ((sid & 0xFF) & 0x7F) * 32

    def set_context_raw(self, sid: int, words, *, flush: bool = True) -> None:
        a = self.context_addr(sid)
        for i, w in enumerate(words):
            self.wq(a + 8 * i, w, flush=flush)

    def set_context(self, sid: int = SID, *, pdts: int = 0, rid_pasid: int = 0, dte: bool = False,
                    paside: bool = False, fpd: bool = False, present: bool = True, flush: bool = True) -> int:
        """A SM context entry: lo = PASIDDIRPTR | PDTS << 9 | PRE 4 | PASIDE 3 | DTE 2 |
        FPD 1 | P 0, hi = RID_PASID (19:0).  Returns the PASID directory."""
        pdir = self.pasid_dirs.get(sid)
        if pdir is None:
            pdir = self.pasid_dirs[sid] = self.alloc.alloc()
        lo = pdir | pdts << 9 | (8 if paside else 0) | (4 if dte else 0) | (2 if fpd else 0) | (1 if present else 0)
        self.set_context_raw(sid, (lo, rid_pasid, 0, 0), flush=flush)
        return pdir

    def pasid_entry_addr(self, sid: int, pasid: int) -> int:
        """Directory entry pasid >> 6 (P bit 0, table 63:12), table entry pasid & 0x3f
        of 64 bytes."""
        key = (sid, pasid >> 6)
        table = self.pasid_tables.get(key)
        if table is None:
            table = self.pasid_tables[key] = self.alloc.alloc()
            self.wq(self.pasid_dirs[sid] + (pasid >> 6) * 8, table | 1)
        return table + (pasid & 0x3F) * 64

    def set_pasid_raw(self, sid: int, pasid: int, val, *, flush: bool = True) -> int:
        a = self.pasid_entry_addr(sid, pasid)
        for i, w in enumerate(val):
            self.wq(a + 8 * i, w, flush=flush)
        return a

    def set_pasid(self, sid: int = SID, pasid: int = 0, *, pgtt: int, did: int = DID, aw: int = 2,
                  ssptptr: int = 0, fsptptr: int = 0, flpm: int = 0, pgsnp: bool = False, pwsnp: bool = True,
                  sre: bool = False, wpe: bool = False, fpd: bool = False, present: bool = True,
                  flush: bool = True) -> int:
        """val[0] = SSPTPTR | PGTT << 6 | AW << 2 | FPD 1 | P 0; val[1] = DID | PWSNP 23 |
        PGSNP 24; val[2] = FSPTPTR | WPE 4 | FLPM << 2 | SRE 0."""
        v0 = ssptptr | pgtt << 6 | aw << 2 | (2 if fpd else 0) | (1 if present else 0)
        v1 = did | (1 << 23 if pwsnp else 0) | (1 << 24 if pgsnp else 0)
        v2 = fsptptr | (0x10 if wpe else 0) | flpm << 2 | (1 if sre else 0)
        return self.set_pasid_raw(sid, pasid, (v0, v1, v2, 0, 0, 0, 0, 0), flush=flush)

    # ---------------------------------------------------------------- page tables
    def fs_entry_addr(self, pgd: int, iova: int, levels: int, level: int) -> int:
        table = pgd
        for lv in range(levels, level, -1):
            a = table + fs_idx(iova, lv) * 8
            e = self.rq(a)
            if not e & P:
                e = self.alloc.alloc() | FS_TABLE
                self.wq(a, e)
            table = e & ((1 << 52) - 1) & ~0xFFF
        return table + fs_idx(iova, level) * 8

    def fs_map(self, pgd: int, iova: int, hpa: int, *, levels: int = 4, level: int = 1, bits: int = FS_LEAF_RW,
               flush: bool = True) -> int:
        a = self.fs_entry_addr(pgd, iova, levels, level)
        self.wq(a, hpa | bits | (PS if level > 1 else 0), flush=flush)
        return a

    def ss_map(self, pgd: int, iova: int, hpa: int, *, levels: int = 4, level: int = 1, r: bool = True,
               w: bool = True, snp: bool = False, flush: bool = True) -> int:
        """Second-stage: R 0, W 1, PS 7, SNP 11; tables R|W."""
        table = pgd
        for lv in range(levels, level, -1):
            a = table + fs_idx(iova, lv) * 8
            e = self.rq(a)
            if not e & 3:
                e = self.alloc.alloc() | 3
                self.wq(a, e)
            table = e & ((1 << 52) - 1) & ~0xFFF
        a = table + fs_idx(iova, level) * 8
        self.wq(a, hpa | (1 if r else 0) | (2 if w else 0) | (0x80 if level > 1 else 0) | (0x800 if snp else 0),
                flush=flush)
        return a

    def fs_domain(self, sid: int = SID, pasid: int = 0, **kw) -> int:
        """Context + PASID entry with PGTT=1 (first stage) and an empty table."""
        if sid not in self.pasid_dirs:
            self.set_context(sid, paside=pasid != 0)
        pgd = self.alloc.alloc()
        self.set_pasid(sid, pasid, pgtt=1, fsptptr=pgd, **kw)
        return pgd

    def ss_domain(self, sid: int = SID, pasid: int = 0, **kw) -> int:
        if sid not in self.pasid_dirs:
            self.set_context(sid, paside=pasid != 0)
        pgd = self.alloc.alloc()
        self.set_pasid(sid, pasid, pgtt=2, ssptptr=pgd, **kw)
        return pgd

    def dma(self, iova: int, write: bool = False, sid: int = SID, **kw):
        return self.unit.translate(sid, iova, write, **kw)

    # ---------------------------------------------------------------- QI
    def enable_qi(self, qs: int = 1) -> int:
        q = 0x4000000  # 8 KiB queue at a literal address (outside the allocator)
        self.unit.enable_qi(q, qs, dw=True)
        return q
