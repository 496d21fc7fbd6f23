"""Root, legacy context and second-level page-table entries, bit-exact (VT-d spec §9).

Each entry type has an encoder (fields → raw words) and a decoder (raw → fields).
Validity checks that depend on the unit (HAW, SAGAW, SLLPS, SC, DT, PT) live in the
walker; the reserved-bit masks here are the unit-independent ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from .memory import PAGE_SIZE

ROOT_ENTRY_SIZE = 16
CONTEXT_ENTRY_SIZE = 16
PTE_SIZE = 8
ENTRIES_PER_TABLE = 512
ADDR_MASK_4K = ~(PAGE_SIZE - 1) & ((1 << 64) - 1)

# Root entry (lo): bit 0 P, bits 11:1 reserved, bits 63:12 context-table pointer.
ROOT_P = 1 << 0
ROOT_RSVD_LO = 0xFFE

# Context entry lo: bit 0 P, bit 1 FPD, bits 3:2 TT, bits 11:4 reserved, 63:12 SLPTPTR.
CTX_P = 1 << 0
CTX_FPD = 1 << 1
CTX_TT_SHIFT = 2
CTX_TT_MASK = 0x3 << CTX_TT_SHIFT
CTX_RSVD_LO = 0xFF0
# Context entry hi: bits 2:0 AW, 6:3 ignored (AVAIL), 7 reserved, 23:8 DID, 63:24 reserved.
CTX_AW_MASK = 0x7
CTX_DID_SHIFT = 8
CTX_DID_MASK = 0xFFFF << CTX_DID_SHIFT
CTX_RSVD_HI = ~((1 << 24) - 1) & ((1 << 64) - 1) | (1 << 7)

TT_MULTI_LEVEL = 0  # CONTEXT_TT_MULTI_LEVEL
TT_DEV_IOTLB = 1  # CONTEXT_TT_DEV_IOTLB
TT_PASS_THROUGH = 2  # CONTEXT_TT_PASS_THROUGH
TT_NAMES = {0: "multi-level", 1: "multi-level+dev-tlb", 2: "pass-through", 3: "reserved"}

# Second-level paging entry (Linux DMA_PTE_*).
PTE_R = 1 << 0
PTE_W = 1 << 1
PTE_PS = 1 << 7  # DMA_PTE_LARGE_PAGE
PTE_SNP = 1 << 11
PTE_TM = 1 << 62
PTE_ADDR_MASK = ((1 << 52) - 1) & ~(PAGE_SIZE - 1)  # bits 51:12; HAW trims further


def sid(bus: int, devfn: int) -> int:
    return (bus << 8) | devfn


def devfn(dev: int, fn: int) -> int:
    return ((dev & 0x1F) << 3) | (fn & 0x7)


def bdf_str(source_id: int) -> str:
    """'bb:dd.f' as the kernel prints it (PCI_SLOT / PCI_FUNC)."""
    return f"{source_id >> 8:02x}:{(source_id >> 3) & 0x1F:02x}.{source_id & 7:d}"


def parse_bdf(text: str) -> int:
    """Parse 'bb:dd.f' (optionally with a '0000:' segment) into a source id."""
    s = text.strip().lower()
    if s.count(":") == 2:
        seg, s = s.split(":", 1)
        if seg != "0000":
            raise ValueError(f"{text!r}: only PCI segment 0000 is modelled")
    try:
        bus_s, rest = s.split(":")
        dev_s, fn_s = rest.split(".")
        bus, dev, fn = int(bus_s, 16), int(dev_s, 16), int(fn_s, 16)
    except ValueError:
        raise ValueError(f"{text!r} is not a PCI address like 02:00.0") from None
    if not (0 <= bus <= 0xFF and 0 <= dev <= 0x1F and 0 <= fn <= 7):
        raise ValueError(f"{text!r} is out of range (bus 00-ff, device 00-1f, function 0-7)")
    return sid(bus, devfn(dev, fn))


@dataclass(frozen=True)
class RootEntry:
    present: bool
    ctp: int  # context-table pointer (4 KiB aligned)
    lo: int
    hi: int

    @staticmethod
    def decode(lo: int, hi: int) -> "RootEntry":
        return RootEntry(bool(lo & ROOT_P), lo & ADDR_MASK_4K, lo, hi)

    @staticmethod
    def encode(present: bool, ctp: int) -> tuple[int, int]:
        if ctp & (PAGE_SIZE - 1):
            raise ValueError(f"context-table pointer {ctp:#x} is not 4 KiB aligned")
        return (ctp | (ROOT_P if present else 0)), 0

    @property
    def reserved_set(self) -> bool:
        return bool(self.lo & ROOT_RSVD_LO) or bool(self.hi)


@dataclass(frozen=True)
class ContextEntry:
    present: bool
    fpd: bool
    tt: int
    slptptr: int
    aw: int
    did: int
    lo: int
    hi: int

    @staticmethod
    def decode(lo: int, hi: int) -> "ContextEntry":
        return ContextEntry(
            present=bool(lo & CTX_P),
            fpd=bool(lo & CTX_FPD),
            tt=(lo & CTX_TT_MASK) >> CTX_TT_SHIFT,
            slptptr=lo & ADDR_MASK_4K,
            aw=hi & CTX_AW_MASK,
            did=(hi & CTX_DID_MASK) >> CTX_DID_SHIFT,
            lo=lo,
            hi=hi,
        )

    @staticmethod
    def encode(
        *, did: int, aw: int, slptptr: int, tt: int = TT_MULTI_LEVEL,
        fpd: bool = False, present: bool = True,
    ) -> tuple[int, int]:
        if slptptr & (PAGE_SIZE - 1):
            raise ValueError(f"SLPTPTR {slptptr:#x} is not 4 KiB aligned")
        if not 0 <= did <= 0xFFFF:
            raise ValueError(f"DID {did} does not fit in 16 bits")
        if not 0 <= aw <= 7 or not 0 <= tt <= 3:
            raise ValueError("AW is 3 bits and TT 2 bits")
        lo = slptptr | (tt << CTX_TT_SHIFT) | (CTX_FPD if fpd else 0) | (CTX_P if present else 0)
        hi = (did << CTX_DID_SHIFT) | aw
        return lo, hi

    @property
    def reserved_set(self) -> bool:
        return bool(self.lo & CTX_RSVD_LO) or bool(self.hi & CTX_RSVD_HI)

    @property
    def levels(self) -> int:
        return self.aw + 2

    @property
    def agaw(self) -> int:
        return 30 + 9 * self.aw


@dataclass(frozen=True)
class Pte:
    """A second-level paging entry; present iff R or W (Linux dma_pte_present)."""

    raw: int

    @property
    def r(self) -> bool:
        return bool(self.raw & PTE_R)

    @property
    def w(self) -> bool:
        return bool(self.raw & PTE_W)

    @property
    def present(self) -> bool:
        return bool(self.raw & (PTE_R | PTE_W))

    @property
    def ps(self) -> bool:
        return bool(self.raw & PTE_PS)

    @property
    def snp(self) -> bool:
        return bool(self.raw & PTE_SNP)

    @property
    def tm(self) -> bool:
        return bool(self.raw & PTE_TM)

    @property
    def addr(self) -> int:
        return self.raw & PTE_ADDR_MASK

    @staticmethod
    def encode(
        addr: int, *, r: bool = True, w: bool = True, ps: bool = False,
        snp: bool = False, tm: bool = False,
    ) -> int:
        if addr & (PAGE_SIZE - 1) or addr & ~PTE_ADDR_MASK:
            raise ValueError(f"PTE address {addr:#x} is not a 4 KiB aligned address below 2^52")
        return (
            addr
            | (PTE_R if r else 0)
            | (PTE_W if w else 0)
            | (PTE_PS if ps else 0)
            | (PTE_SNP if snp else 0)
            | (PTE_TM if tm else 0)
        )

    def describe(self) -> str:
        flags = "".join(
            c if on else "-"
            for c, on in (("R", self.r), ("W", self.w), ("P", self.ps), ("S", self.snp))
        )
        return f"{flags} {self.addr:#x}"


def level_shift(level: int) -> int:
    """IOVA bit where the index for `level` starts (level 1 = 4 KiB leaves)."""
    return 12 + 9 * (level - 1)


def level_index(iova: int, level: int) -> int:
    """pfn_level_offset(): the 9-bit table index of `iova` at `level`."""
    return (iova >> level_shift(level)) & 0x1FF


def leaf_size(level: int) -> int:
    return 1 << level_shift(level)


def aw_for_levels(levels: int) -> int:
    return levels - 2
