"""Scalable-mode structures, bit-exact: root and context entries, the PASID directory
and PASID table, and first-stage (IA-32e format) paging entries.

Field positions are Linux's (drivers/iommu/intel/iommu.h, iommu.c root_entry_lctp /
root_entry_uctp / iommu_context_addr, pasid.h / pasid.c pasid_set_*) and QEMU's
(hw/i386/intel_iommu_internal.h VTD_SM_*); ../shared/REFERENCE-2.md §11 quotes them.
Like entries.py, the checks that depend on the unit (HAW, FS1GP, FL5LP, SC, SMPWC)
live in the walker; the masks here are the unit-independent ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from .memory import PAGE_SIZE

MASK64 = (1 << 64) - 1
ADDR_MASK_4K = ~(PAGE_SIZE - 1) & MASK64

SM_ROOT_ENTRY_SIZE = 16
SM_CONTEXT_ENTRY_SIZE = 32  # two 128-bit `struct context_entry` slots
SM_CONTEXTS_PER_TABLE = 128  # devfn 0x00-0x7f in the lower table, 0x80-0xff in the upper
PASID_DIR_ENTRY_SIZE = 8
PASID_ENTRY_SIZE = 64  # u64 val[8]
PASID_PDE_SHIFT = 6  # pasid >> 6 indexes the directory
PASID_PTE_MASK = 0x3F  # pasid & 0x3f indexes the table (64 entries per 4 KiB)
PASID_MAX = 0x100000  # 20-bit PASIDs
IOMMU_NO_PASID = 0  # RID_PASID: requests without PASID use PASID 0 (Linux)
FLPT_DEFAULT_DID = 1  # pass-through and SVA entries

# ---------------------------------------------------------------- root entry
# lo: bit 0 LP, 11:1 reserved, 63:12 LCTP; hi: bit 0 UP, 11:1 reserved, 63:12 UCTP.
SM_ROOT_P = 1 << 0
SM_ROOT_RSVD = 0xFFE


def context_slot(devfn: int) -> tuple[bool, int]:
    """iommu_context_addr() in scalable mode: (upper table?, byte offset in it)."""
    upper = devfn >= 0x80
    return upper, (devfn - 0x80 if upper else devfn) * SM_CONTEXT_ENTRY_SIZE


@dataclass(frozen=True, slots=True)
class SmRootEntry:
    lp: bool
    lctp: int
    up: bool
    uctp: int
    lo: int
    hi: int

    @staticmethod
    def decode(lo: int, hi: int) -> "SmRootEntry":
        return SmRootEntry(bool(lo & SM_ROOT_P), lo & ADDR_MASK_4K, bool(hi & SM_ROOT_P), hi & ADDR_MASK_4K, lo, hi)

    @staticmethod
    def encode(*, lctp: int = 0, uctp: int = 0, lp: bool | None = None, up: bool | None = None) -> tuple[int, int]:
        """A present half for each table pointer given (LP/UP default to "pointer set")."""
        for name, ptr in (("LCTP", lctp), ("UCTP", uctp)):
            if ptr & (PAGE_SIZE - 1):
                raise ValueError(f"{name} {ptr:#x} is not 4 KiB aligned")
        lp = bool(lctp) if lp is None else lp
        up = bool(uctp) if up is None else up
        return lctp | (SM_ROOT_P if lp else 0), uctp | (SM_ROOT_P if up else 0)

    def half(self, devfn: int) -> tuple[bool, int]:
        """(present, context-table pointer) of the half that holds `devfn`."""
        return (self.up, self.uctp) if devfn >= 0x80 else (self.lp, self.lctp)

    @property
    def reserved_set(self) -> bool:
        return bool(self.lo & SM_ROOT_RSVD) or bool(self.hi & SM_ROOT_RSVD)


# ---------------------------------------------------------------- context entry
SM_CTX_P = 1 << 0
SM_CTX_FPD = 1 << 1
SM_CTX_DTE = 1 << 2  # context_set_sm_dte
SM_CTX_PASIDE = 1 << 3  # CONTEXT_PASIDE
SM_CTX_PRE = 1 << 4  # context_set_sm_pre
SM_CTX_PDTS_SHIFT = 9  # context_pdts(pds): bits 11:9
SM_CTX_PDTS_MASK = 0x7 << SM_CTX_PDTS_SHIFT
SM_CTX_RSVD_W0 = 0x1E0  # bits 8:5 (QEMU VTD_SM_CONTEXT_ENTRY_RSVD_VAL0, HAW part in the walker)
SM_CTX_RSVD_W1 = 0xFFFFFFFFFFE00000  # bits 127:85 (QEMU VTD_SM_CONTEXT_ENTRY_RSVD_VAL1)
SM_CTX_RID_PASID_MASK = 0xFFFFF  # hi 19:0


@dataclass(frozen=True, slots=True)
class SmContextEntry:
    """The 256-bit scalable-mode context entry (Linux writes only the low 128 bits;
    words 2 and 3 are reserved)."""

    present: bool
    fpd: bool
    dte: bool
    paside: bool
    pre: bool
    pdts: int
    pasiddirptr: int
    rid_pasid: int
    words: tuple[int, int, int, int]

    @staticmethod
    def decode(w0: int, w1: int, w2: int = 0, w3: int = 0) -> "SmContextEntry":
        return SmContextEntry(
            present=bool(w0 & SM_CTX_P), fpd=bool(w0 & SM_CTX_FPD), dte=bool(w0 & SM_CTX_DTE),
            paside=bool(w0 & SM_CTX_PASIDE), pre=bool(w0 & SM_CTX_PRE),
            pdts=(w0 & SM_CTX_PDTS_MASK) >> SM_CTX_PDTS_SHIFT, pasiddirptr=w0 & ADDR_MASK_4K,
            rid_pasid=w1 & SM_CTX_RID_PASID_MASK, words=(w0, w1, w2, w3),
        )

    @staticmethod
    def encode(
        *, pasiddirptr: int, pdts: int = 0, rid_pasid: int = IOMMU_NO_PASID, dte: bool = False,
        paside: bool = False, pre: bool = False, fpd: bool = False, present: bool = True,
    ) -> tuple[int, int, int, int]:
        if pasiddirptr & (PAGE_SIZE - 1):
            raise ValueError(f"PASIDDIRPTR {pasiddirptr:#x} is not 4 KiB aligned")
        if not 0 <= pdts <= 7:
            raise ValueError("PDTS is 3 bits")
        if not 0 <= rid_pasid <= SM_CTX_RID_PASID_MASK:
            raise ValueError(f"RID_PASID {rid_pasid} does not fit in 20 bits")
        w0 = (pasiddirptr | (pdts << SM_CTX_PDTS_SHIFT) | (SM_CTX_PRE if pre else 0)
              | (SM_CTX_PASIDE if paside else 0) | (SM_CTX_DTE if dte else 0)
              | (SM_CTX_FPD if fpd else 0) | (SM_CTX_P if present else 0))
        return w0, rid_pasid, 0, 0

    @property
    def lo(self) -> int:
        return self.words[0]

    @property
    def hi(self) -> int:
        return self.words[1]

    @property
    def dir_entries(self) -> int:
        """get_pasid_dir_size(): the directory holds 2^(PDTS+7) entries."""
        return 1 << (self.pdts + 7)

    @property
    def max_pasid(self) -> int:
        """One past the largest PASID the directory covers (64 PASIDs per entry)."""
        return self.dir_entries << PASID_PDE_SHIFT

    @property
    def reserved_set(self) -> bool:
        w0, w1, w2, w3 = self.words
        return bool(w0 & SM_CTX_RSVD_W0 or w1 & SM_CTX_RSVD_W1 or w2 or w3)


def context_get_sm_pds(max_pasid: int) -> int:
    """pasid.c context_get_sm_pds(): PDTS for a table of `max_pasid` PASIDs."""
    max_pde = max_pasid >> PASID_PDE_SHIFT
    pds = (max_pde & -max_pde).bit_length() - 1 if max_pde else 64  # find_first_bit
    return 0 if pds < 7 else pds - 7


# ---------------------------------------------------------------- PASID directory
PASID_PTE_PRESENT = 1 << 0
PASID_DIR_FPD = 1 << 1  # QEMU VTD_PASID_DIR_FPD
PASID_DIR_RSVD = 0xFFC  # bits 11:2 (spec, unverified)


def pasid_dir_index(pasid: int) -> int:
    return pasid >> PASID_PDE_SHIFT


def pasid_table_index(pasid: int) -> int:
    return pasid & PASID_PTE_MASK


@dataclass(frozen=True, slots=True)
class PasidDirEntry:
    present: bool
    fpd: bool
    table: int
    raw: int

    @staticmethod
    def decode(raw: int) -> "PasidDirEntry":
        return PasidDirEntry(bool(raw & PASID_PTE_PRESENT), bool(raw & PASID_DIR_FPD), raw & ADDR_MASK_4K, raw)

    @staticmethod
    def encode(table: int, *, present: bool = True, fpd: bool = False) -> int:
        if table & (PAGE_SIZE - 1):
            raise ValueError(f"PASID table pointer {table:#x} is not 4 KiB aligned")
        return table | (PASID_PTE_PRESENT if present else 0) | (PASID_DIR_FPD if fpd else 0)

    @property
    def reserved_set(self) -> bool:
        return bool(self.raw & PASID_DIR_RSVD)


# ---------------------------------------------------------------- PASID table entry
PGTT_FL_ONLY = 1  # PASID_ENTRY_PGTT_FL_ONLY: first stage
PGTT_SL_ONLY = 2  # second stage
PGTT_NESTED = 3
PGTT_PT = 4  # pass-through
PGTT_NAMES = {PGTT_FL_ONLY: "first-stage", PGTT_SL_ONLY: "second-stage", PGTT_NESTED: "nested",
              PGTT_PT: "pass-through"}
PGTT_BY_NAME = {v: k for k, v in PGTT_NAMES.items()}

# val[0]
PE_P = 1 << 0
PE_FPD = 1 << 1  # PASID_PTE_FPD
PE_AW_SHIFT = 2  # bits 4:2
PE_PGTT_SHIFT = 6  # bits 8:6
PE_SSADE = 1 << 9
# val[1]
PE_DID_MASK = 0xFFFF  # bits 15:0 (entry 79:64)
PE_PWSNP = 1 << 23  # entry bit 87
PE_PGSNP = 1 << 24  # entry bit 88
# val[2]
PE_SRE = 1 << 0  # entry bit 128
PE_ERE = 1 << 1
PE_FLPM_SHIFT = 2  # bits 3:2: 0 = 4-level, 1 = 5-level
PE_WPE = 1 << 4
PE_EAFE = 1 << 7
# Reserved where Linux never writes and the spec reserves (spec, unverified): val[0]
# bits 11:10, val[1] bits 22:16, val[3..7] entirely (pasid_clear_entry writes 0).
PE_RSVD_W0 = 0xC00
PE_RSVD_W1 = 0x7F0000


@dataclass(frozen=True, slots=True)
class PasidEntry:
    present: bool
    fpd: bool
    aw: int
    pgtt: int
    ssade: bool
    ssptptr: int
    did: int
    pwsnp: bool
    pgsnp: bool
    sre: bool
    ere: bool
    flpm: int
    wpe: bool
    eafe: bool
    fsptptr: int
    val: tuple[int, ...]  # the eight 64-bit words as read

    @staticmethod
    def decode(val) -> "PasidEntry":
        v = tuple(val)
        if len(v) != 8:
            raise ValueError("a PASID entry is eight 64-bit words")
        v0, v1, v2 = v[0], v[1], v[2]
        return PasidEntry(
            present=bool(v0 & PE_P), fpd=bool(v0 & PE_FPD), aw=(v0 >> PE_AW_SHIFT) & 0x7,
            pgtt=(v0 >> PE_PGTT_SHIFT) & 0x7, ssade=bool(v0 & PE_SSADE), ssptptr=v0 & ADDR_MASK_4K,
            did=v1 & PE_DID_MASK, pwsnp=bool(v1 & PE_PWSNP), pgsnp=bool(v1 & PE_PGSNP),
            sre=bool(v2 & PE_SRE), ere=bool(v2 & PE_ERE), flpm=(v2 >> PE_FLPM_SHIFT) & 0x3,
            wpe=bool(v2 & PE_WPE), eafe=bool(v2 & PE_EAFE), fsptptr=v2 & ADDR_MASK_4K, val=v,
        )

    @staticmethod
    def encode(
        *, pgtt: int, did: int, aw: int = 0, ssptptr: int = 0, fsptptr: int = 0, flpm: int = 0,
        pgsnp: bool = False, pwsnp: bool = False, sre: bool = False, wpe: bool = False,
        eafe: bool = False, ssade: bool = False, fpd: bool = False, present: bool = True,
    ) -> tuple[int, ...]:
        """The entry pasid_pte_config_*() leaves behind, as eight words."""
        if pgtt not in PGTT_NAMES:
            raise ValueError(f"PGTT {pgtt} is not 1-4")
        if not 0 <= did <= PE_DID_MASK:
            raise ValueError(f"DID {did} does not fit in 16 bits")
        if not 0 <= aw <= 7 or not 0 <= flpm <= 3:
            raise ValueError("AW is 3 bits and FLPM 2 bits")
        for name, ptr in (("SSPTPTR", ssptptr), ("FSPTPTR", fsptptr)):
            if ptr & (PAGE_SIZE - 1):
                raise ValueError(f"{name} {ptr:#x} is not 4 KiB aligned")
        v0 = (ssptptr | (PE_SSADE if ssade else 0) | (pgtt << PE_PGTT_SHIFT) | (aw << PE_AW_SHIFT)
              | (PE_FPD if fpd else 0) | (PE_P if present else 0))
        v1 = did | (PE_PWSNP if pwsnp else 0) | (PE_PGSNP if pgsnp else 0)
        v2 = (fsptptr | (PE_EAFE if eafe else 0) | (PE_WPE if wpe else 0) | (flpm << PE_FLPM_SHIFT)
              | (PE_SRE if sre else 0))
        return (v0, v1, v2, 0, 0, 0, 0, 0)

    @property
    def pgtt_name(self) -> str:
        return PGTT_NAMES.get(self.pgtt, f"reserved ({self.pgtt})")

    @property
    def fs_levels(self) -> int:
        """First-stage levels: FLPM 0 → 4, 1 → 5 (dmar_fault_dump_ptes reads val[2] bit 2)."""
        return 5 if self.flpm == 1 else 4

    @property
    def ss_levels(self) -> int:
        """Second-stage levels from AW (agaw_to_level): AW 1 → 3, 2 → 4, 3 → 5."""
        return self.aw + 2

    @property
    def reserved_set(self) -> bool:
        v = self.val
        return bool(v[0] & PE_RSVD_W0 or v[1] & PE_RSVD_W1 or any(v[3:]))


# ---------------------------------------------------------------- first-stage PTE
FL_P = 1 << 0  # DMA_FL_PTE_PRESENT
FL_RW = 1 << 1  # DMA_PTE_WRITE
FL_US = 1 << 2  # DMA_FL_PTE_US
FL_PWT = 1 << 3
FL_PCD = 1 << 4
FL_A = 1 << 5  # DMA_FL_PTE_ACCESS
FL_D = 1 << 6  # DMA_FL_PTE_DIRTY
FL_PS = 1 << 7  # DMA_PTE_LARGE_PAGE
FL_G = 1 << 8
FL_XD = 1 << 63  # DMA_FL_PTE_XD
FL_ADDR_MASK = ((1 << 52) - 1) & ~(PAGE_SIZE - 1)  # bits 51:12; HAW trims further


@dataclass(frozen=True, slots=True)
class FsPte:
    """A first-stage (IA-32e format) paging entry; present iff P (unlike second stage)."""

    raw: int

    @property
    def present(self) -> bool:
        return bool(self.raw & FL_P)

    @property
    def w(self) -> bool:
        return bool(self.raw & FL_RW)

    @property
    def us(self) -> bool:
        return bool(self.raw & FL_US)

    @property
    def a(self) -> bool:
        return bool(self.raw & FL_A)

    @property
    def d(self) -> bool:
        return bool(self.raw & FL_D)

    @property
    def ps(self) -> bool:
        return bool(self.raw & FL_PS)

    @property
    def xd(self) -> bool:
        return bool(self.raw & FL_XD)

    @property
    def addr(self) -> int:
        return self.raw & FL_ADDR_MASK

    @staticmethod
    def encode(addr: int, *, w: bool = True, leaf: bool = True, ps: bool = False, xd: bool = False) -> int:
        """What Linux writes for first stage (__domain_mapping / pfn_to_dma_pte): leaves
        get P|US|A (+R/W and D for writable ones), tables P|R/W|US|A."""
        if addr & (PAGE_SIZE - 1) or addr & ~FL_ADDR_MASK:
            raise ValueError(f"PTE address {addr:#x} is not a 4 KiB aligned address below 2^52")
        if not leaf:
            return addr | FL_P | FL_RW | FL_US | FL_A
        return (addr | FL_P | FL_US | FL_A | (FL_RW | FL_D if w else 0) | (FL_PS if ps else 0)
                | (FL_XD if xd else 0))

    def describe(self) -> str:
        flags = "".join(c if on else "-" for c, on in (
            ("P", self.present), ("W", self.w), ("U", self.us), ("A", self.a), ("D", self.d),
            ("S", self.ps), ("X", self.xd)))
        return f"{flags} {self.addr:#x}"


def canonical(addr: int, levels: int) -> bool:
    """Whether `addr` is canonical for a 4- (48-bit) or 5-level (57-bit) first stage:
    the bits above the top translated one copy it (fault 0x80 otherwise)."""
    top = 48 if levels == 4 else 57
    upper = addr >> (top - 1)
    return upper == 0 or upper == (1 << (64 - top + 1)) - 1
