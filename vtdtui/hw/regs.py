"""CAP and ECAP as declarative field tables (VT-d spec §11.4.2, §11.4.3).

Each field carries its spec name, bit range and a one-line meaning, plus the Linux
accessor that reads it (drivers/iommu/intel/iommu.h), so that a reader who knows the
kernel can check every value.  Values are always the raw field value: MGAW 38 means a
39-bit width, exactly as the register holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Mapping


@dataclass(frozen=True)
class Field:
    name: str
    hi: int
    lo: int
    meaning: str
    linux: str = ""

    @property
    def width(self) -> int:
        return self.hi - self.lo + 1

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lo

    @property
    def bits(self) -> str:
        return str(self.lo) if self.hi == self.lo else f"{self.hi}:{self.lo}"

    def get(self, value: int) -> int:
        return (value >> self.lo) & ((1 << self.width) - 1)

    def put(self, value: int, field_value: int) -> int:
        if field_value < 0 or field_value >> self.width:
            raise ValueError(
                f"{self.name}={field_value:#x} does not fit in bits {self.bits}"
            )
        return (value & ~self.mask) | (field_value << self.lo)


class RegisterLayout:
    """A 64-bit register described as a table of fields."""

    def __init__(self, name: str, fields: list[Field]):
        self.name = name
        self.fields = tuple(fields)
        self._by_name = {f.name: f for f in fields}
        taken = 0
        for f in fields:
            if taken & f.mask:
                raise ValueError(f"{name}.{f.name} overlaps another field")
            taken |= f.mask
        self.defined_mask = taken

    def __iter__(self) -> Iterator[Field]:
        return iter(self.fields)

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def field(self, name: str) -> Field:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(self._by_name)
            raise KeyError(f"{self.name} has no field {name!r} (fields: {known})") from None

    def decode(self, value: int) -> dict[str, int]:
        return {f.name: f.get(value) for f in self.fields}

    def encode(self, fields: Mapping[str, int], base: int = 0) -> int:
        value = base
        for name, v in fields.items():
            value = self.field(name).put(value, int(v))
        return value

    def get(self, value: int, name: str) -> int:
        return self.field(name).get(value)

    def set(self, value: int, name: str, field_value: int) -> int:
        return self.field(name).put(value, field_value)

    def toggle(self, value: int, name: str) -> int:
        f = self.field(name)
        if f.width != 1:
            raise ValueError(f"{self.name}.{name} is {f.width} bits wide; only 1-bit fields toggle")
        return value ^ f.mask


CAP = RegisterLayout(
    "CAP",
    [
        Field("ND", 2, 0, "number of domain ids = 2^(4+2*ND)", "cap_ndoms"),
        Field("AFL", 3, 3, "advanced fault logging", "cap_afl"),
        Field("RWBF", 4, 4, "required write-buffer flushing", "cap_rwbf"),
        Field("PLMR", 5, 5, "protected low-memory region", "cap_plmr"),
        Field("PHMR", 6, 6, "protected high-memory region", "cap_phmr"),
        Field("CM", 7, 7, "caching mode: not-present and invalid entries may be cached", "cap_caching_mode"),
        Field("SAGAW", 12, 8, "supported adjusted guest address widths (bit1 39-bit, bit2 48-bit, bit3 57-bit)", "cap_sagaw"),
        Field("MGAW", 21, 16, "maximum guest address width minus one", "cap_mgaw"),
        Field("ZLR", 22, 22, "zero-length read", "cap_zlr"),
        Field("FRO", 33, 24, "fault-recording register offset / 16", "cap_fault_reg_offset"),
        Field("SLLPS", 37, 34, "second-level large pages: bit0 2 MiB, bit1 1 GiB", "cap_super_page_val"),
        Field("PSI", 39, 39, "page-selective IOTLB invalidation", "cap_pgsel_inv"),
        Field("NFR", 47, 40, "number of fault-recording registers minus one", "cap_num_fault_regs"),
        Field("MAMV", 53, 48, "maximum address-mask value for page-selective invalidation", "cap_max_amask_val"),
        Field("DWD", 54, 54, "write draining", "cap_write_drain"),
        Field("DRD", 55, 55, "read draining", "cap_read_drain"),
        Field("FL1GP", 56, 56, "first-level 1 GiB pages", "cap_fl1gp_support"),
        Field("PI", 59, 59, "posted interrupts", "cap_pi_support"),
        Field("FL5LP", 60, 60, "first-level 5-level paging", "cap_fl5lp_support"),
        Field("ESIRTPS", 62, 62, "SIRTP also invalidates the interrupt-entry cache", "cap_esirtps"),
        Field("ESRTPS", 63, 63, "SRTP also invalidates the translation caches", "cap_esrtps"),
    ],
)

ECAP = RegisterLayout(
    "ECAP",
    [
        Field("C", 0, 0, "page-walk coherency: table reads snoop the CPU caches", "ecap_coherent"),
        Field("QI", 1, 1, "queued invalidation", "ecap_qis"),
        Field("DT", 2, 2, "device-TLB (ATS)", "ecap_dev_iotlb_support"),
        Field("IR", 3, 3, "interrupt remapping", "ecap_ir_support"),
        Field("EIM", 4, 4, "extended interrupt mode (x2APIC)", "ecap_eim_support"),
        Field("PT", 6, 6, "pass-through translation type", "ecap_pass_through"),
        Field("SC", 7, 7, "snoop control: SNP in leaf entries forces snooped DMA", "ecap_sc_support"),
        Field("IRO", 17, 8, "IOTLB register offset / 16", "ecap_iotlb_offset"),
        Field("MHMV", 23, 20, "maximum handle-mask value", "ecap_max_handle_mask"),
        Field("MTS", 25, 25, "memory-type support", "ecap_mts"),
        Field("NEST", 26, 26, "nested translation", "ecap_nest"),
        Field("PRS", 29, 29, "page requests", "ecap_prs"),
        Field("ERS", 30, 30, "execute requests", "ecap_ers"),
        Field("SRS", 31, 31, "supervisor requests", "ecap_srs"),
        Field("NWFS", 33, 33, "no-write flag", "ecap_nwfs"),
        Field("EAFS", 34, 34, "extended accessed flag", "ecap_eafs"),
        Field("PSS", 39, 35, "PASID size minus one", "ecap_pss"),
        Field("PASID", 40, 40, "PASID support", "ecap_pasid"),
        Field("DIT", 41, 41, "device-TLB invalidation throttling", "ecap_dit"),
        Field("PDS", 42, 42, "page-drain support", "ecap_pds"),
        Field("SMTS", 43, 43, "scalable-mode translation", "ecap_smts"),
        Field("SLADS", 45, 45, "second-level accessed/dirty", "ecap_slads"),
        Field("SLTS", 46, 46, "second-level translation in scalable mode", "ecap_slts"),
        Field("FLTS", 47, 47, "first-level translation in scalable mode", "ecap_flts"),
        Field("SMPWC", 48, 48, "scalable-mode page-walk coherency", "ecap_smpwc"),
        Field("RPS", 49, 49, "RID_PASID", "ecap_rps"),
    ],
)


# What the Linux accessors return, which is not always the raw field: they scale,
# add one, or (ecap_qis) return the bit unshifted.  Keyed by accessor name.
LINUX_CAP_ACCESSORS: dict[str, Callable[[int], int]] = {
    "cap_ndoms": lambda c: 1 << (4 + 2 * (c & 0x7)),
    "cap_rwbf": lambda c: (c >> 4) & 1,
    "cap_caching_mode": lambda c: (c >> 7) & 1,
    "cap_sagaw": lambda c: (c >> 8) & 0x1F,
    "cap_mgaw": lambda c: ((c >> 16) & 0x3F) + 1,
    "cap_zlr": lambda c: (c >> 22) & 1,
    "cap_fault_reg_offset": lambda c: ((c >> 24) & 0x3FF) * 16,
    "cap_super_page_val": lambda c: (c >> 34) & 0xF,
    "cap_pgsel_inv": lambda c: (c >> 39) & 1,
    "cap_num_fault_regs": lambda c: ((c >> 40) & 0xFF) + 1,
    "cap_max_amask_val": lambda c: (c >> 48) & 0x3F,
    "cap_write_drain": lambda c: (c >> 54) & 1,
    "cap_read_drain": lambda c: (c >> 55) & 1,
}

LINUX_ECAP_ACCESSORS: dict[str, Callable[[int], int]] = {
    "ecap_coherent": lambda e: e & 0x1,
    "ecap_qis": lambda e: e & 0x2,
    "ecap_dev_iotlb_support": lambda e: (e >> 2) & 1,
    "ecap_ir_support": lambda e: (e >> 3) & 1,
    "ecap_eim_support": lambda e: (e >> 4) & 1,
    "ecap_pass_through": lambda e: (e >> 6) & 1,
    "ecap_sc_support": lambda e: (e >> 7) & 1,
    "ecap_iotlb_offset": lambda e: ((e >> 8) & 0x3FF) * 16,
    "ecap_max_handle_mask": lambda e: (e >> 20) & 0xF,
    "ecap_smts": lambda e: (e >> 43) & 1,
    "ecap_smpwc": lambda e: (e >> 48) & 1,
}


def linux_view(cap: int | None, ecap: int | None) -> dict[str, int]:
    """The values the kernel's accessors compute from the raw registers."""
    out: dict[str, int] = {}
    if cap is not None:
        out.update({k: f(cap) for k, f in LINUX_CAP_ACCESSORS.items()})
    if ecap is not None:
        out.update({k: f(ecap) for k, f in LINUX_ECAP_ACCESSORS.items()})
    return out


def parse_reg_value(text: str, what: str) -> int:
    """Parse a 64-bit register value written in hex, with or without 0x."""
    s = text.strip().lower()
    if s.startswith("0x"):
        s = s[2:]
    if not s or any(ch not in "0123456789abcdef" for ch in s):
        raise ValueError(f"{what}: {text!r} is not a hexadecimal register value")
    value = int(s, 16)
    if value >> 64:
        raise ValueError(f"{what}: {text!r} is wider than 64 bits")
    return value


# Register offsets (VT-d spec §10.4; Linux DMAR_*_REG).
VER_REG = 0x00
CAP_REG = 0x08
ECAP_REG = 0x10
GCMD_REG = 0x18
GSTS_REG = 0x1C
RTADDR_REG = 0x20
CCMD_REG = 0x28
FSTS_REG = 0x34
FECTL_REG = 0x38
IQH_REG = 0x80
IQT_REG = 0x88
IQA_REG = 0x90
IQA_DW = 1 << 11  # descriptor width: 256-bit descriptors (scalable mode; dmar.c __dmar_enable_qi)
ICS_REG = 0x9C
IQER_REG = 0xB0

# GCMD / GSTS bits (Linux DMA_GCMD_* / DMA_GSTS_*).
GCMD_TE = 1 << 31
GCMD_SRTP = 1 << 30
GCMD_WBF = 1 << 27
GCMD_QIE = 1 << 26
GSTS_TES = 1 << 31
GSTS_RTPS = 1 << 30
GSTS_WBFS = 1 << 27
GSTS_QIES = 1 << 26

RTADDR_SMT = 1 << 10  # scalable-mode root table (TTM 01); latched by SRTP only with ECAP.SMTS

# FSTS bits.
FSTS_PFO = 1 << 0
FSTS_PPF = 1 << 1
FSTS_IQE = 1 << 4
FSTS_ICE = 1 << 5
FSTS_ITE = 1 << 6

# CCMD register (Linux DMA_CCMD_*).
CCMD_ICC = 1 << 63
CCMD_CIRG_SHIFT = 61
CCMD_CAIG_SHIFT = 59

# IOTLB register (Linux DMA_TLB_*).
IOTLB_IVT = 1 << 63
IOTLB_IIRG_SHIFT = 60
IOTLB_IAIG_SHIFT = 57
IVA_IH = 1 << 6

# Invalidation granularities as encoded in CCMD.CIRG / IOTLB.IIRG and QI descriptors.
GRAN_GLOBAL = 1
GRAN_DOMAIN = 2
GRAN_DEVICE = 3  # context cache
GRAN_PAGE = 3  # IOTLB

ICS_IWC = 1 << 0
