"""Helpers for the hardware-layer tests (tests/test_hw_*.py).

A `Rig` is one DMAR unit on its own memory, with a root table, context tables and
second-level page tables that the test builds through the CPU (cache.cpu_write_q +
clflush), the way the Linux driver does.  Table indices are computed here from the
spec (9 IOVA bits per level above bit 12), independently of vtdtui.hw.entries.

The capability values below are written out bit by bit from the VT-d spec field
positions (REFERENCE.md §1), never produced by the code under test.
"""

from __future__ import annotations

from vtdtui.hw import CpuCache, DmarUnit, PageAllocator, PhysMem
from vtdtui.hw.entries import ContextEntry, Pte, RootEntry

# CAP used by most tests:
#   ND=2                      bits 2:0   -> 0x2
#   SAGAW=0b00110 (39,48-bit) bits 12:8  -> 0x6 << 8   = 0x600
#   MGAW=47 (48-bit)          bits 21:16 -> 0x2F << 16 = 0x2F0000
#   FRO=0x22 (offset 0x220)   bits 33:24 -> 0x22 << 24 = 0x22000000
#   PSI                       bit 39     -> 0x80_0000_0000
#   NFR=3 (4 FRCD registers)  bits 47:40 -> 3 << 40    = 0x300_0000_0000
#   MAMV=9                    bits 53:48 -> 9 << 48    = 0x9_0000_0000_0000
CAP_BASE = 0x0009_0380_222F_0602

CAP_RWBF = 1 << 4
CAP_CM = 1 << 7
CAP_SLLPS_2M = 1 << 34  # SLLPS bit 0
CAP_SLLPS_1G = 1 << 35  # SLLPS bit 1
CAP_PSI = 1 << 39
CAP_ESRTPS = 1 << 63

# CAP for 5-level tables: CAP_BASE with SAGAW=0b01110 (bits 1,2,3 -> 0xE00) and
# MGAW=56 (57-bit: 0x38 << 16 = 0x380000):
#   0x0009_0380_2200_0002 | 0xE00 | 0x380000 = 0x0009_0380_2238_0E02
CAP_5LEVEL = 0x0009_0380_2238_0E02

# ECAP used by most tests:
#   C (coherent)  bit 0 -> 0x1
#   QI            bit 1 -> 0x2
#   PT            bit 6 -> 0x40
#   IRO=0x50      bits 17:8 -> 0x50 << 8 = 0x5000 (IOTLB registers at 0x500)
ECAP_BASE = 0x5043

ECAP_C = 1 << 0
ECAP_QI = 1 << 1
ECAP_DT = 1 << 2
ECAP_PT = 1 << 6
ECAP_SC = 1 << 7

MASK64 = (1 << 64) - 1
DID = 5
SID = 0x0300  # 03:00.0


def idx(iova: int, level: int) -> int:
    """Index of `iova` in a level-`level` table: bits (20+9(l-1)):(12+9(l-1))."""
    return (iova >> (12 + 9 * (level - 1))) & 0x1FF


class Rig:
    def __init__(
        self,
        cap: int = CAP_BASE,
        ecap: int = ECAP_BASE,
        *,
        haw: int = 39,
        mem_size: int = 1 << 36,
        iotlb_capacity: int | None = 1024,
        name: str = "dmar1",
        enable: bool = True,
    ):
        self.mem = PhysMem(mem_size)
        self.cache = CpuCache(self.mem)
        # Table pages come from 1 MiB .. 16 MiB; data pages tests use are elsewhere.
        self.alloc = PageAllocator(self.mem, self.cache, 0x100000, 0x1000000)
        self.unit = DmarUnit(
            name, 0xFED91000, cap, ecap, self.mem, self.cache,
            haw=haw, iotlb_capacity=iotlb_capacity,
        )
        self.root = self.alloc.alloc()
        self.ctx_tables: dict[int, int] = {}
        if enable:
            self.unit.set_root_table(self.root)
            self.unit.enable_translation()

    # -------------------------------------------------------------- CPU writes
    def wq(self, addr: int, value: int, *, flush: bool = True) -> None:
        """A CPU store, clflushed unless told otherwise."""
        self.cache.cpu_write_q(addr, value)
        if flush:
            self.cache.clflush(addr, 8)

    def rq(self, addr: int) -> int:
        return self.cache.cpu_read_q(addr)

    # -------------------------------------------------------------- structures
    def set_root_raw(self, bus: int, lo: int, hi: int = 0, *, flush: bool = True) -> None:
        self.wq(self.root + bus * 16, lo, flush=flush)
        self.wq(self.root + bus * 16 + 8, hi, flush=flush)

    def context_table(self, bus: int) -> int:
        ct = self.ctx_tables.get(bus)
        if ct is None:
            ct = self.alloc.alloc()
            self.ctx_tables[bus] = ct
            lo, hi = RootEntry.encode(True, ct)
            self.set_root_raw(bus, lo, hi)
        return ct

    def context_addr(self, sid: int) -> int:
        return self.context_table(sid >> 8) + (sid & 0xFF) * 16

    def set_context_raw(self, sid: int, lo: int, hi: int, *, flush: bool = True) -> None:
        a = self.context_addr(sid)
        self.wq(a, lo, flush=flush)
        self.wq(a + 8, hi, flush=flush)

    def set_context(
        self, sid: int = SID, *, did: int = DID, aw: int = 2, tt: int = 0,
        fpd: bool = False, present: bool = True, pgd: int | None = None,
        flush: bool = True,
    ) -> int:
        """Install a context entry; returns its second-level table (allocated if needed)."""
        if pgd is None:
            pgd = self.alloc.alloc()
        lo, hi = ContextEntry.encode(did=did, aw=aw, slptptr=pgd, tt=tt, fpd=fpd, present=present)
        self.set_context_raw(sid, lo, hi, flush=flush)
        return pgd

    def pte_addr(self, pgd: int, iova: int, levels: int, level: int) -> int:
        """Address of the level-`level` entry for `iova`, allocating tables above it."""
        table = pgd
        for lv in range(levels, level, -1):
            a = table + idx(iova, lv) * 8
            e = self.rq(a)
            if not e & 3:
                nxt = self.alloc.alloc()
                self.wq(a, nxt | 3)  # R|W non-leaf
                e = nxt | 3
            table = e & ((1 << 52) - 1) & ~0xFFF
        return table + idx(iova, level) * 8

    def map(
        self, pgd: int, iova: int, hpa: int, *, levels: int = 4, level: int = 1,
        r: bool = True, w: bool = True, snp: bool = False, tm: bool = False,
        flush: bool = True,
    ) -> int:
        """Write a leaf at `level` (1: 4 KiB, 2: 2 MiB with PS, 3: 1 GiB with PS)."""
        a = self.pte_addr(pgd, iova, levels, level)
        self.wq(a, Pte.encode(hpa, r=r, w=w, ps=level > 1, snp=snp, tm=tm), flush=flush)
        return a

    def domain(self, sid: int = SID, *, did: int = DID, aw: int = 2, **kw) -> int:
        """A present TT=0 context entry for `sid` with an empty table; returns the table."""
        return self.set_context(sid, did=did, aw=aw, **kw)

    def dma(self, iova: int, write: bool = False, sid: int = SID, **kw):
        return self.unit.translate(sid, iova, write, **kw)


class RawDesc:
    """A queued-invalidation descriptor given as raw words (for malformed ones)."""

    def __init__(self, lo: int, hi: int = 0):
        self.lo, self.hi = lo, hi

    def encode(self) -> tuple[int, int]:
        return self.lo, self.hi
