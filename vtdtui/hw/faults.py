"""Legacy-mode DMA-remapping fault reasons and the lines Linux prints for them.

Strings are drivers/iommu/intel/dmar.c dma_remap_fault_reasons[]; the log line is
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


def reason_string(code: int) -> str:
    return REASONS.get(code, ("UNKNOWN", "Unknown"))[1]


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

    @property
    def bdf(self) -> str:
        return bdf_str(self.source_id)

    @property
    def access(self) -> str:
        return "write" if self.write else "read"

    @property
    def reason_name(self) -> str:
        return REASONS.get(self.reason, ("UNKNOWN", ""))[0]

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
        }
