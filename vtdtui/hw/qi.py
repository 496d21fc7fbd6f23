"""Queued-invalidation descriptors, 128-bit, encoded and decoded bit-exactly.

Layouts follow the VT-d spec §6.5.2 and Linux's QI_* macros (iommu.h); the
reserved-bit masks are QEMU's VTD_INV_DESC_*_RSVD_* (hw/i386/intel_iommu_internal.h,
with bits 11:9 being type bits, not reserved).  A descriptor with a reserved bit set
or an unknown type is what makes the hardware set FSTS.IQE and stop.
"""

from __future__ import annotations

from dataclasses import dataclass

CC = 0x1  # QI_CC_TYPE: context-cache invalidate
IOTLB = 0x2  # QI_IOTLB_TYPE
DEV_TLB = 0x3  # QI_DIOTLB_TYPE
IEC = 0x4  # QI_IEC_TYPE: interrupt-entry cache
WAIT = 0x5  # QI_IWD_TYPE: invalidation wait
PIOTLB = 0x6  # QI_EIOTLB_TYPE: PASID-based IOTLB (scalable mode)
PC = 0x7  # QI_PC_TYPE: PASID cache
DEV_TLB_PASID = 0x8  # QI_DEIOTLB_TYPE: PASID-based device-TLB
TYPE_NAMES = {CC: "context-cache", IOTLB: "iotlb", DEV_TLB: "device-tlb", IEC: "iec", WAIT: "wait",
              PIOTLB: "piotlb", PC: "pasid-cache", DEV_TLB_PASID: "pasid-device-tlb"}
# qi_type_string() in dmar.c, for the kernel's "QI HEAD: %s qw0 = ..." lines.
KERNEL_TYPE_NAMES = {
    CC: "Context-cache Invalidation", IOTLB: "IOTLB Invalidation", DEV_TLB: "Device-TLB Invalidation",
    IEC: "Interrupt Entry Cache Invalidation", WAIT: "Invalidation Wait",
    PIOTLB: "PASID-based IOTLB Invalidation", PC: "PASID-cache Invalidation",
    DEV_TLB_PASID: "PASID-based Device-TLB Invalidation", 0x9: "Page Group Response",
}
SCALABLE_ONLY = frozenset({PIOTLB, PC, DEV_TLB_PASID})  # need a 256-bit queue (IQA.DW=1)

# Granularities (iommu.h): PASID cache QI_PC_ALL_PASIDS 0 (all PASIDs of a DID),
# QI_PC_PASID_SEL 1, QI_PC_GLOBAL 3; PASID-based IOTLB QI_GRAN_NONG_PASID 2 (all
# addresses of a PASID in a DID), QI_GRAN_PSI_PASID 3 (pages within a PASID).
PC_ALL_PASIDS, PC_PASID_SEL, PC_GLOBAL = 0, 1, 3
PIOTLB_PASID, PIOTLB_PSI = 2, 3

RSVD_LO = {
    CC: 0xFFFC00000000F1C0,
    IOTLB: 0xFFFFFFFF0000F100,
    DEV_TLB: 0xFFFF0000FFE0F1F0,
    IEC: 0xFFFF000007FFF1E0,
    WAIT: 0x00000000FFFFF180,  # PD (bit 7) is reserved without ECAP.PDS
    # Scalable-mode types (spec §6.5.2, unverified against QEMU's masks): bits 63:52,
    # 15:12 and 8:6 around G, DID and PASID.
    PIOTLB: 0xFFF000000000F1C0,
    PC: 0xFFF000000000F1C0,
    DEV_TLB_PASID: 0,  # every lo bit is a field
}
RSVD_HI = {
    CC: 0xFFFFFFFFFFFFFFFF,
    IOTLB: 0xF80,
    DEV_TLB: 0xFFE,
    IEC: 0xFFFFFFFFFFFFFFFF,
    WAIT: 0x3,
    PIOTLB: 0xF80,
    PC: 0xFFFFFFFFFFFFFFFF,
    DEV_TLB_PASID: 0x7FE,
}


def desc_type(lo: int) -> int:
    """Descriptor type: lo bits 3:0 with bits 11:9 as the high part (spec §6.5.2)."""
    return (lo & 0xF) | (((lo >> 9) & 0x7) << 4)


def check(lo: int, hi: int) -> str | None:
    """Why the hardware would reject this descriptor, or None when it is valid."""
    t = desc_type(lo)
    if t not in RSVD_LO:
        return f"unsupported descriptor type {t:#x}"
    if lo & RSVD_LO[t] or hi & RSVD_HI[t]:
        return f"reserved bits set in {TYPE_NAMES[t]} descriptor"
    if t in (CC, IOTLB) and (lo >> 4) & 3 == 0:
        return f"{TYPE_NAMES[t]} descriptor with granularity 0"
    if t == PIOTLB and (lo >> 4) & 3 < 2:
        return f"piotlb descriptor with granularity {(lo >> 4) & 3}"  # G0/G1 are reserved
    if t == PC and (lo >> 4) & 3 == 2:
        return "pasid-cache descriptor with granularity 2"
    return None


def check_256(words: tuple[int, int, int, int]) -> str | None:
    """check() for a descriptor of a 256-bit queue: qw2 and qw3 are reserved (Linux
    writes them as 0 for every descriptor it builds)."""
    if words[2] or words[3]:
        return f"reserved bits set in the upper 128 bits of a {TYPE_NAMES.get(desc_type(words[0]), 'descriptor')}"
    return check(words[0], words[1])


@dataclass(frozen=True)
class CcDesc:
    gran: int  # 1 global, 2 domain, 3 device
    did: int = 0
    sid: int = 0
    fm: int = 0

    def encode(self) -> tuple[int, int]:
        lo = CC | (self.gran << 4) | (self.did << 16) | (self.sid << 32) | (self.fm << 48)
        return lo, 0


@dataclass(frozen=True)
class IotlbDesc:
    gran: int  # 1 global, 2 domain (DSI), 3 page (PSI)
    did: int = 0
    addr: int = 0
    am: int = 0
    ih: bool = False
    dr: bool = False
    dw: bool = False

    def encode(self) -> tuple[int, int]:
        lo = IOTLB | (self.gran << 4) | (int(self.dw) << 6) | (int(self.dr) << 7) | (self.did << 16)
        hi = (self.addr & ~0xFFF & ((1 << 64) - 1)) | (int(self.ih) << 6) | (self.am & 0x3F)
        return lo, hi


@dataclass(frozen=True)
class DevTlbDesc:
    sid: int
    addr: int = 0
    size: bool = False  # S: the address encodes a range (spec §6.5.2.5)
    qdep: int = 0
    pfsid: int = 0

    def encode(self) -> tuple[int, int]:
        lo = (
            DEV_TLB
            | ((self.pfsid & 0xF) << 12)
            | ((self.qdep & 0x1F) << 16)
            | (self.sid << 32)
            | (((self.pfsid >> 4) & 0xFFF) << 52)
        )
        hi = (self.addr & ~0xFFF & ((1 << 64) - 1)) | int(self.size)
        return lo, hi


@dataclass(frozen=True)
class IecDesc:
    index_selective: bool = False
    iidx: int = 0
    im: int = 0

    def encode(self) -> tuple[int, int]:
        lo = IEC | (int(self.index_selective) << 4) | ((self.im & 0x1F) << 27) | ((self.iidx & 0xFFFF) << 32)
        return lo, 0


@dataclass(frozen=True)
class WaitDesc:
    status_write: bool = False  # SW
    interrupt: bool = False  # IF
    fence: bool = False  # FN
    status_data: int = 0
    status_addr: int = 0

    def encode(self) -> tuple[int, int]:
        if self.status_addr & 3:
            raise ValueError("wait descriptor status address must be 4-byte aligned")
        lo = (
            WAIT
            | (int(self.interrupt) << 4)
            | (int(self.status_write) << 5)
            | (int(self.fence) << 6)
            | ((self.status_data & 0xFFFFFFFF) << 32)
        )
        return lo, self.status_addr


@dataclass(frozen=True)
class PiotlbDesc:
    """PASID-based IOTLB invalidation (type 6): qi_desc_piotlb / qi_desc_piotlb_all."""

    gran: int  # 2 PASID-selective, 3 page-selective within the PASID
    did: int
    pasid: int
    addr: int = 0
    am: int = 0
    ih: bool = False

    def encode(self) -> tuple[int, int]:
        lo = PIOTLB | (self.gran << 4) | (self.did << 16) | ((self.pasid & 0xFFFFF) << 32)
        hi = (self.addr & ~0xFFF & ((1 << 64) - 1)) | (int(self.ih) << 6) | (self.am & 0x3F)
        return lo, hi


@dataclass(frozen=True)
class PcDesc:
    """PASID-cache invalidation (type 7): qi_flush_pasid_cache."""

    gran: int  # 0 all PASIDs of DID, 1 one PASID, 3 global
    did: int = 0
    pasid: int = 0

    def encode(self) -> tuple[int, int]:
        return PC | (self.gran << 4) | (self.did << 16) | ((self.pasid & 0xFFFFF) << 32), 0


@dataclass(frozen=True)
class PasidDevTlbDesc:
    """PASID-based device-TLB invalidation (type 8): qi_desc_dev_iotlb_pasid."""

    sid: int
    pasid: int
    addr: int = 0
    size: bool = False  # S (qw1 bit 11): the address encodes a range
    qdep: int = 0
    pfsid: int = 0
    glob: bool = False  # G (qw1 bit 0)

    def encode(self) -> tuple[int, int]:
        lo = (
            DEV_TLB_PASID
            | ((self.qdep & 0x1F) << 4)
            | ((self.pfsid & 0xF) << 12)
            | ((self.sid & 0xFFFF) << 16)
            | ((self.pasid & 0xFFFFF) << 32)
            | (((self.pfsid >> 4) & 0xFFF) << 52)
        )
        hi = (self.addr & ~0xFFF & ((1 << 64) - 1)) | (int(self.size) << 11) | int(self.glob)
        return lo, hi


Descriptor = CcDesc | IotlbDesc | DevTlbDesc | IecDesc | WaitDesc | PiotlbDesc | PcDesc | PasidDevTlbDesc


def decode(lo: int, hi: int) -> Descriptor:
    """Decode a valid descriptor; raises ValueError with check()'s reason otherwise."""
    why = check(lo, hi)
    if why:
        raise ValueError(why)
    t = desc_type(lo)
    if t == CC:
        return CcDesc((lo >> 4) & 3, (lo >> 16) & 0xFFFF, (lo >> 32) & 0xFFFF, (lo >> 48) & 3)
    if t == IOTLB:
        return IotlbDesc(
            (lo >> 4) & 3, (lo >> 16) & 0xFFFF, hi & ~0xFFF & ((1 << 64) - 1), hi & 0x3F,
            bool(hi & (1 << 6)), bool(lo & (1 << 7)), bool(lo & (1 << 6)),
        )
    if t == DEV_TLB:
        pfsid = ((lo >> 12) & 0xF) | (((lo >> 52) & 0xFFF) << 4)
        return DevTlbDesc((lo >> 32) & 0xFFFF, hi & ~0xFFF & ((1 << 64) - 1), bool(hi & 1), (lo >> 16) & 0x1F, pfsid)
    if t == IEC:
        return IecDesc(bool(lo & (1 << 4)), (lo >> 32) & 0xFFFF, (lo >> 27) & 0x1F)
    if t == PIOTLB:
        return PiotlbDesc((lo >> 4) & 3, (lo >> 16) & 0xFFFF, (lo >> 32) & 0xFFFFF,
                          hi & ~0xFFF & ((1 << 64) - 1), hi & 0x3F, bool(hi & (1 << 6)))
    if t == PC:
        return PcDesc((lo >> 4) & 3, (lo >> 16) & 0xFFFF, (lo >> 32) & 0xFFFFF)
    if t == DEV_TLB_PASID:
        pfsid = ((lo >> 12) & 0xF) | (((lo >> 52) & 0xFFF) << 4)
        return PasidDevTlbDesc((lo >> 16) & 0xFFFF, (lo >> 32) & 0xFFFFF, hi & ~0xFFF & ((1 << 64) - 1),
                               bool(hi & (1 << 11)), (lo >> 4) & 0x1F, pfsid, bool(hi & 1))
    return WaitDesc(bool(lo & (1 << 5)), bool(lo & (1 << 4)), bool(lo & (1 << 6)), lo >> 32, hi)
