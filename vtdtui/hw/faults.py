"""DMA-remapping fault reasons (legacy and scalable mode) and the lines Linux prints.

Strings are drivers/iommu/intel/dmar.c dma_remap_fault_reasons[],
dma_remap_sm_fault_reasons[] (0x30-0x90, unchanged since the 2019 addition) and
irq_remap_fault_reasons[] (0x20-0x26); the log line is
dmar_fault_do_one(), the batch header dmar_fault(), and the walk dump (printed by the
driver model, sw/linux.py handle_faults) dmar_fault_dump_ptes() / pgtable_walk(), as
current kernels print them (pr_fmt "DMAR: ").  The hardware only records FRCD/FSTS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .entries import bdf_str

ROOT_ENTRY_P = 0x01
CONTEXT_ENTRY_P = 0x02
CONTEXT_ENTRY_INV = 0x03
ADDR_BEYOND_MGAW = 0x04
WRITE = 0x05
READ = 0x06
PAGING_ENTRY_INV = 0x07
ROOT_TABLE_INV = 0x08
CONTEXT_TABLE_INV = 0x09
ROOT_ENTRY_RSVD = 0x0A
CONTEXT_ENTRY_RSVD = 0x0B
PAGING_ENTRY_RSVD = 0x0C
CONTEXT_ENTRY_TT = 0x0D

# Scalable-mode reasons the model raises (dma_remap_sm_fault_reasons[] below has
# every string).  Names follow QEMU's VTDFaultReason where it has one.
SM_ROOT_ACCESS = 0x38
SM_ROOT_ENTRY_P = 0x39
SM_ROOT_ENTRY_RSVD = 0x3A
SM_CONTEXT_ACCESS = 0x40
SM_CONTEXT_ENTRY_P = 0x41
SM_CONTEXT_ENTRY_RSVD = 0x42
SM_CONTEXT_ENTRY_INV = 0x43
SM_CONTEXT_DTE = 0x44  # translation request through a context entry with DTE=0
SM_CONTEXT_PASIDE = 0x45  # request with PASID, PASIDE=0
SM_CONTEXT_PASID_MAX = 0x46  # PASID beyond the directory (PDTS)
SM_RID_PASID = 0x48
PASID_DIR_ACCESS_ERR = 0x50
PASID_DIR_ENTRY_P = 0x51
PASID_DIR_ENTRY_RSVD = 0x52
PASID_TABLE_ACCESS_ERR = 0x58
PASID_ENTRY_P = 0x59
PASID_ENTRY_RSVD = 0x5A
PASID_TABLE_ENTRY_INV = 0x5B
PASID_ENTRY_SRE = 0x5D  # supervisor request, SRE=0
FS_PAGING_ENTRY_INV = 0x70  # error reading a first-stage entry
FS_PAGING_ENTRY_P = 0x71
FS_PAGING_ENTRY_RSVD = 0x72
PASID_ENTRY_FSPTPTR_INV = 0x73  # QEMU's name: the FSPTPTR (top table) read failed
SS_PAGING_ENTRY_INV = 0x78  # error reading a second-stage entry
SS_NESTED_PERM = 0x79  # R/W error in a second-stage entry while walking nested FS tables
SS_PAGING_ENTRY_RSVD = 0x7A
SS_PTPTR_INV = 0x7B  # the SSPTPTR (top table) read failed
FS_NON_CANONICAL = 0x80
FS_PAGING_ENTRY_US = 0x81
SM_ADDR_BEYOND = 0x83  # input address beyond the second-stage AGAW / MGAW
SM_WRITE = 0x85
SM_READ = 0x86
FS_AD_NO_SNOOP = 0x90

REASONS: dict[int, tuple[str, str]] = {
    # code: (QEMU VTDFaultReason name, Linux string)
    0x01: ("ROOT_ENTRY_P", "Present bit in root entry is clear"),
    0x02: ("CONTEXT_ENTRY_P", "Present bit in context entry is clear"),
    0x03: ("CONTEXT_ENTRY_INV", "Invalid context entry"),
    0x04: ("ADDR_BEYOND_MGAW", "Access beyond MGAW"),
    0x05: ("WRITE", "PTE Write access is not set"),
    0x06: ("READ", "PTE Read access is not set"),
    0x07: ("PAGING_ENTRY_INV", "Next page table ptr is invalid"),
    0x08: ("ROOT_TABLE_INV", "Root table address invalid"),
    0x09: ("CONTEXT_TABLE_INV", "Context table ptr is invalid"),
    0x0A: ("ROOT_ENTRY_RSVD", "non-zero reserved fields in RTP"),
    0x0B: ("CONTEXT_ENTRY_RSVD", "non-zero reserved fields in CTP"),
    0x0C: ("PAGING_ENTRY_RSVD", "non-zero reserved fields in PTE"),
    0x0D: ("CONTEXT_ENTRY_TT", "PCE for translation request specifies blocking"),
}

# "Qualified" faults: FPD=1 in the context entry used for the request keeps them out
# of the fault-recording registers.  The spec evaluates FPD whatever the P bit says,
# so a not-present (0x2) or invalid (0x3) context entry with FPD=1 is silent too
# (VT-d spec §7.1.3; QEMU hw/i386/intel_iommu.c vtd_qualified_faults[]).
QUALIFIED = frozenset({0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0C, 0x0D})

# Scalable-mode qualified faults: FPD=1 in the context entry, the PASID directory
# entry or the PASID entry (each read even when its P is clear: QEMU
# vtd_ce_get_pasid_fpd) keeps them out of the FRCDs.  From QEMU's
# vtd_qualified_faults[] (0x51, 0x59, 0x5B, 0x70-0x73, 0x80, 0x81, 0x85, 0x87
# qualified; the access errors 0x50/0x58 and the root-entry faults not), extended
# by analogy with the legacy table to the SM codes QEMU does not raise (context
# P/invalid/DTE/PASIDE/PASID-max, second-stage walk faults, 0x83, 0x86, 0x90;
# reserved-field faults in root/context/PASID structures stay unqualified like
# legacy 0x0A/0x0B) — the spec's own table was not read (spec, unverified).
SM_QUALIFIED = frozenset({
    0x41, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x51, 0x59, 0x5B, 0x5C, 0x5D,
    0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x7B, 0x7C,
    0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x90,
})


# dma_remap_sm_fault_reasons[], indexed by reason - 0x30; codes not listed print "Unknown".
SM_REASONS: dict[int, str] = {
    0x30: "SM: Invalid Root Table Address",
    0x31: "SM: TTM 0 for request with PASID",
    0x32: "SM: TTM 0 for page group request",
    0x38: "SM: Error attempting to access Root Entry",
    0x39: "SM: Present bit in Root Entry is clear",
    0x3A: "SM: Non-zero reserved field set in Root Entry",
    0x40: "SM: Error attempting to access Context Entry",
    0x41: "SM: Present bit in Context Entry is clear",
    0x42: "SM: Non-zero reserved field set in the Context Entry",
    0x43: "SM: Invalid Context Entry",
    0x44: "SM: DTE field in Context Entry is clear",
    0x45: "SM: PASID Enable field in Context Entry is clear",
    0x46: "SM: PASID is larger than the max in Context Entry",
    0x47: "SM: PRE field in Context-Entry is clear",
    0x48: "SM: RID_PASID field error in Context-Entry",
    0x50: "SM: Error attempting to access the PASID Directory Entry",
    0x51: "SM: Present bit in Directory Entry is clear",
    0x52: "SM: Non-zero reserved field set in PASID Directory Entry",
    0x58: "SM: Error attempting to access PASID Table Entry",
    0x59: "SM: Present bit in PASID Table Entry is clear",
    0x5A: "SM: Non-zero reserved field set in PASID Table Entry",
    0x5B: "SM: Invalid Scalable-Mode PASID Table Entry",
    0x5C: "SM: ERE field is clear in PASID Table Entry",
    0x5D: "SM: SRE field is clear in PASID Table Entry",
    0x70: "SM: Error attempting to access first-level paging entry",
    0x71: "SM: Present bit in first-level paging entry is clear",
    0x72: "SM: Non-zero reserved field set in first-level paging entry",
    0x73: "SM: Error attempting to access FL-PML4 entry",
    0x74: "SM: First-level entry address beyond MGAW in Nested translation",
    0x75: "SM: Read permission error in FL-PML4 entry in Nested translation",
    0x76: "SM: Read permission error in first-level paging entry in Nested translation",
    0x77: "SM: Write permission error in first-level paging entry in Nested translation",
    0x78: "SM: Error attempting to access second-level paging entry",
    0x79: "SM: Read/Write permission error in second-level paging entry",
    0x7A: "SM: Non-zero reserved field set in second-level paging entry",
    0x7B: "SM: Invalid second-level page table pointer",
    0x7C: "SM: A/D bit update needed in second-level entry when set up in no snoop",
    0x80: "SM: Address in first-level translation is not canonical",
    0x81: "SM: U/S set 0 for first-level translation with user privilege",
    0x82: "SM: No execute permission for request with PASID and ER=1",
    0x83: "SM: Address beyond the DMA hardware max",
    0x84: "SM: Second-level entry address beyond the max",
    0x85: "SM: No write permission for Write/AtomicOp request",
    0x86: "SM: No read permission for Read/AtomicOp request",
    0x87: "SM: Invalid address-interrupt address",
    0x90: "SM: A/D bit update needed in first-level entry when set up in no snoop",
}
SM_FIRST, SM_COUNT = 0x30, 97  # ARRAY_SIZE(dma_remap_sm_fault_reasons): 0x30..0x90

# irq_remap_fault_reasons[], indexed by reason - 0x20.
IRQ_REASONS: dict[int, str] = {
    0x20: "Detected reserved fields in the decoded interrupt-remapped request",
    0x21: "Interrupt index exceeded the interrupt-remapping table size",
    0x22: "Present field in the IRTE entry is clear",
    0x23: "Error accessing interrupt-remapping table pointed by IRTA_REG",
    0x24: "Detected reserved fields in the IRTE entry",
    0x25: "Blocked a compatibility format interrupt request",
    0x26: "Blocked an interrupt request due to source-id verification failure",
}
IRQ_FIRST, IRQ_COUNT = 0x20, 7
LEGACY_COUNT = 14  # ARRAY_SIZE(dma_remap_fault_reasons): 0x00 "Software" .. 0x0d

DMA_REMAP, INTR_REMAP, UNKNOWN = "dma", "intr-remap", "unknown"


def fault_reason(code: int) -> tuple[str, str]:
    """dmar_get_fault_reason(): (kind, string), tested in the kernel's order: interrupt
    remapping first, then the scalable-mode table, then the legacy one."""
    if IRQ_FIRST <= code < IRQ_FIRST + IRQ_COUNT:
        return INTR_REMAP, IRQ_REASONS[code]
    if SM_FIRST <= code < SM_FIRST + SM_COUNT:
        return DMA_REMAP, SM_REASONS.get(code, "Unknown")
    if 0 <= code < LEGACY_COUNT:
        return DMA_REMAP, "Software" if code == 0 else REASONS[code][1]
    return UNKNOWN, "Unknown"


def reason_string(code: int) -> str:
    return fault_reason(code)[1]


def log_line(source_id: int, iova: int, reason: int, write: bool, pasid: int | None = None) -> str:
    """The line dmar_fault_do_one() prints for a DMA-remapping fault."""
    kind = "DMA Write" if write else "DMA Read"
    tag = "NO_PASID" if pasid is None else f"PASID 0x{pasid:x}"
    return (
        f"DMAR: [{kind} {tag}] Request device [{bdf_str(source_id)}] "
        f"fault addr 0x{iova:x} [fault reason 0x{reason:02x}] {reason_string(reason)}"
    )


def drhd_line(fsts: int) -> str:
    """What dmar_fault() prints first, with the FSTS value it read on entry (FRI in
    bits 15:8 included, as in "handling fault status reg 302"), and only when that
    value is not 0.  The call is __ratelimit()ed; a model without time never hits it."""
    return f"DMAR: DRHD: handling fault status reg {fsts:x}"


@dataclass
class Fault:
    unit: str
    source_id: int
    iova: int  # the faulting address as recorded (page granular, like FRCD)
    reason: int
    write: bool
    message: str  # the dmar_fault_do_one() line for this record
    # dmar_fault_dump_ptes() lines; the driver fills them, only with CONFIG_DMAR_DEBUG
    dump: list[str] = field(default_factory=list)
    recorded: bool = True  # False when FPD suppressed it or the FRCDs overflowed
    suppressed_by_fpd: bool = False
    frcd: int | None = None  # the fault-recording register that holds it
    # Every line the kernel printed while handling this record, in dmesg order: the
    # DRHD line when the record opened a dmar_fault() batch, the dmar_fault_do_one()
    # line, then the dump.  Empty when the kernel never saw it (FPD, overflow).
    log: list[str] = field(default_factory=list)
    # The PASID of a request-with-PASID (FRCD.PP=1, FRCD.PV), None otherwise.
    pasid: int | None = None

    @property
    def bdf(self) -> str:
        return bdf_str(self.source_id)

    @property
    def access(self) -> str:
        return "write" if self.write else "read"

    @property
    def reason_name(self) -> str:
        if self.reason in REASONS:
            return REASONS[self.reason][0]
        return _SM_NAMES.get(self.reason, "UNKNOWN")

    def to_json(self) -> dict:
        return {
            "bdf": self.bdf,
            "iova": f"0x{self.iova:x}",
            "reason": self.reason,
            "access": self.access,
            "message": self.message,
            # Extensions, present when the kernel printed something for this record:
            # every line in dmesg order, and the CONFIG_DMAR_DEBUG walk dump alone.
            **({"log": list(self.log)} if self.log else {}),
            **({"dump": list(self.dump)} if self.dump else {}),
            **({"pasid": self.pasid} if self.pasid is not None else {}),
        }


# reason_name for the SM codes: the constant names above (SM_WRITE, PASID_ENTRY_P...).
_SM_NAMES = {v: k for k, v in globals().items()
             if k.isupper() and isinstance(v, int) and SM_FIRST <= v < SM_FIRST + SM_COUNT
             and k not in ("SM_FIRST", "SM_COUNT")}
