"""What a DMAR fault reason means, and what usually causes it.

The kernel's own string for a code (`reason_text`) comes from vtdtui.hw.faults
.fault_reason(), which follows dmar_get_fault_reason() of the newest kernel: interrupt
remapping 0x20-0x26 first, then the scalable-mode table 0x30-0x90, then the legacy
table 0x00-0x0d.  `explain(code)` adds one or two sentences in plain words; they are
ours, not the kernel's.

`true_reason(text, hex_printed)`: logs before v5.14 printed the (hexadecimal) reason
with %02d, so "fault reason 89" is 0x59 and "fault reason 06" is 0x06; v5.14 and later
print "0x%02x".  The caller decides which from the shape of the line (dmesg.py).
"""

from __future__ import annotations

from vtdtui.hw.faults import fault_reason

# Shared sentences: several codes have the same usual causes.
_UNMAPPED = ("The IOVA is not mapped in the device's domain (a not-present entry has neither R nor W), "
             "or it is mapped without this access. Usual causes: a driver bug such as DMA to a buffer "
             "after dma_unmap (use-after-unmap) or before dma_map, a device given a physical address "
             "instead of an IOVA, or firmware-owned memory (an RMRR region the BIOS did not report) "
             "that the device still uses.")
_NO_CONTEXT = ("The device's requester ID has no set-up entry: it did DMA before its driver attached it "
               "to a domain, after detach or unbind (a device left running, kexec/kdump), or under an "
               "alias requester ID that was never set up (a PCIe-to-PCI bridge, a quirky function, "
               "phantom functions).")
_CORRUPT = ("An entry holds bits the hardware does not accept: page tables corrupted or freed while in "
            "use, or software setting a feature bit this unit does not support.")

EXPLAIN: dict[int, str] = {
    # --- legacy (dma_remap_fault_reasons[]) ------------------------------------------
    0x00: ("Reason 0 is no hardware reason (the kernel prints \"Software\"); the fault record is "
           "probably garbled, or written by an emulated IOMMU."),
    0x01: ("The root entry for the device's bus is not present, so no device on that bus is set up. "
           + _NO_CONTEXT),
    0x02: "The context entry for this device is not present. " + _NO_CONTEXT,
    0x03: ("The context entry is present but invalid (a translation type or address width this unit "
           "does not support): a driver bug or a stale entry left by an earlier kernel."),
    0x04: ("The address is beyond the address width of the device's domain: the device used a garbage "
           "or physical address, or its DMA mask is wider than the domain's width."),
    0x05: "A write was refused: the leaf entry does not allow writing. " + _UNMAPPED,
    0x06: "A read was refused: the leaf entry does not allow reading. " + _UNMAPPED,
    0x07: ("A non-leaf page-table entry points where the hardware cannot read a table: page tables "
           "corrupted or freed while the device still used them."),
    0x08: ("The root-table address (RTADDR) is invalid: a driver or firmware bug, or a table left by "
           "a previous kernel (kexec)."),
    0x09: "The root entry points to an invalid context table. " + _CORRUPT,
    0x0A: "Reserved bits are set in the root entry. " + _CORRUPT,
    0x0B: "Reserved bits are set in the context entry. " + _CORRUPT,
    0x0C: ("Reserved bits are set in a page-table entry, for example the snoop or superpage bit on a "
           "unit without that capability. " + _CORRUPT),
    0x0D: ("The device sent an ATS translation request but its context entry blocks them (no "
           "device-TLB translation type): ATS is enabled on the device but not for it in the IOMMU."),
    # --- interrupt remapping (irq_remap_fault_reasons[]) -----------------------------
    0x20: ("An interrupt request in remappable format had reserved bits set: a misprogrammed MSI "
           "address/data, often written by firmware or a driver bypassing the IRQ layer."),
    0x21: ("The interrupt's handle is beyond the interrupt-remapping table: an MSI programmed with a "
           "stale or garbage handle."),
    0x22: ("The interrupt-remapping entry (IRTE) for this interrupt is not present: the device raised "
           "an MSI after its IRQ was freed (driver unbind, shutdown, kexec) or before it was set up."),
    0x23: ("The hardware could not read the interrupt-remapping table at IRTA: firmware or driver bug, "
           "or a table left by a previous kernel."),
    0x24: "Reserved bits are set in the IRTE: a corrupted or wrongly written remapping entry.",
    0x25: ("A compatibility-format (not remappable) interrupt was blocked: a device, IOAPIC or HPET "
           "programmed by firmware or before interrupt remapping was enabled, typically in x2APIC mode."),
    0x26: ("The interrupt's requester ID does not match the IRTE's source-id check: a device behind a "
           "bridge using the bridge's ID, or an IOAPIC/HPET with a wrong scope in the BIOS DMAR table "
           "(intremap=nosid works around it)."),
    # --- scalable mode (dma_remap_sm_fault_reasons[]) --------------------------------
    0x30: "The root-table address is invalid (scalable mode). " + _CORRUPT,
    0x31: ("A request with PASID arrived while the unit runs its tables in legacy mode (TTM 0): the "
           "device uses PASIDs the kernel never enabled."),
    0x32: "A page-group request arrived while the unit runs in legacy mode (TTM 0).",
    0x38: "The hardware could not read the root entry (scalable mode). " + _CORRUPT,
    0x39: "The scalable-mode root entry for the device's bus is not present. " + _NO_CONTEXT,
    0x3A: "Reserved bits are set in the scalable-mode root entry. " + _CORRUPT,
    0x40: "The hardware could not read the context entry (scalable mode). " + _CORRUPT,
    0x41: "The scalable-mode context entry for this device is not present. " + _NO_CONTEXT,
    0x42: "Reserved bits are set in the scalable-mode context entry. " + _CORRUPT,
    0x43: "The scalable-mode context entry is invalid: a driver bug or a stale entry.",
    0x44: ("The device sent an ATS translation request but device-TLB (DTE) is off in its context "
           "entry: ATS is enabled on the device but not for it in the IOMMU."),
    0x45: ("A request with PASID arrived but PASID is not enabled in the device's context entry: the "
           "device uses a PASID before its driver enabled PASID support."),
    0x46: ("The PASID is larger than the PASID table the context entry describes: a PASID the kernel "
           "never allocated for this device."),
    0x47: "A page request arrived but PRI is not enabled (PRE clear) in the device's context entry.",
    0x48: "The RID_PASID field of the context entry is wrong: a driver bug.",
    0x50: "The hardware could not read the PASID directory entry. " + _CORRUPT,
    0x51: ("The PASID directory entry is not present: no PASID table covers this PASID (PASID 0 for "
           "requests without PASID). " + _NO_CONTEXT),
    0x52: "Reserved bits are set in the PASID directory entry. " + _CORRUPT,
    0x58: "The hardware could not read the PASID table entry. " + _CORRUPT,
    0x59: ("The PASID table entry is not present: for a request without PASID the device's domain "
           "(PASID 0) is not attached, i.e. DMA before attach or after detach; for a PASID request the "
           "PASID was never bound (SVA, SIOV) or already released."),
    0x5A: "Reserved bits are set in the PASID table entry. " + _CORRUPT,
    0x5B: ("The PASID table entry is invalid (a translation type or address width the unit does not "
           "support): a driver bug."),
    0x5C: "An execute request arrived but execute requests are disabled (ERE clear) in the PASID entry.",
    0x5D: ("A supervisor request arrived but supervisor requests are disabled (SRE clear) in the PASID "
           "entry."),
    0x70: "The hardware could not read a first-stage paging entry. " + _CORRUPT,
    0x71: "A first-stage paging entry on the walk is not present. " + _UNMAPPED,
    0x72: "Reserved bits are set in a first-stage paging entry. " + _CORRUPT,
    0x73: "The hardware could not read the first-stage top-level (PML4/PML5) entry. " + _CORRUPT,
    0x74: ("In nested translation a first-stage entry points beyond the guest address width: the guest's "
           "tables hold an address the host did not map."),
    0x75: ("In nested translation the second stage refuses reading a first-stage top-level entry: the "
           "guest's page-table page is not mapped (readable) in the host's stage."),
    0x76: ("In nested translation the second stage refuses reading a first-stage paging entry: the "
           "guest's page-table page is not mapped in the host's stage."),
    0x77: ("In nested translation the second stage refuses writing a first-stage entry (A/D update): the "
           "guest's page-table page is mapped read-only in the host's stage."),
    0x78: "The hardware could not read a second-stage paging entry. " + _CORRUPT,
    0x79: "A second-stage entry refuses the access (read/write permission). " + _UNMAPPED,
    0x7A: "Reserved bits are set in a second-stage paging entry. " + _CORRUPT,
    0x7B: "The second-stage page-table pointer is invalid. " + _CORRUPT,
    0x7C: ("A second-stage accessed/dirty update was needed on an entry set up for no-snoop access: "
           "a driver enabled dirty tracking where the unit cannot do it."),
    0x80: ("The address is not canonical for first-stage translation (the upper bits are not a sign "
           "extension): the device emitted a garbage address."),
    0x81: ("A user-privilege request hit a first-stage entry without the U/S bit: the kernel maps DMA "
           "pages as supervisor-only unless the domain is a user (SVA) one."),
    0x82: "An execute request hit an entry without execute permission.",
    0x83: ("The address is beyond the unit's maximum DMA address width: the device used a garbage or "
           "physical address, or a DMA mask wider than the hardware translates."),
    0x84: "A second-stage entry holds an address beyond the maximum width. " + _CORRUPT,
    0x85: "A write or atomic request was refused: no write permission. " + _UNMAPPED,
    0x86: "A read or atomic request was refused: no read permission. " + _UNMAPPED,
    0x87: ("The translated address falls in the interrupt range (0xFEEx_xxxx): a device DMA'd to an "
           "IOVA that maps onto interrupt space."),
    0x90: ("A first-stage accessed/dirty update was needed on an entry set up for no-snoop access: a "
           "driver enabled dirty tracking where the unit cannot do it."),
}

UNKNOWN_EXPLAIN = ("No kernel names this code (it prints \"Unknown\"): hardware newer than the "
                   "kernel's table, an emulated IOMMU, or a garbled line.")


def explain(code: int) -> str:
    """One or two sentences on what `code` means and what usually causes it."""
    text = EXPLAIN.get(code)
    if text is not None:
        return text
    kind, _ = fault_reason(code)
    if kind == "dma" and 0x30 <= code <= 0x90:
        return "A scalable-mode code without a name in the kernel's table (it prints \"Unknown\"). " + UNKNOWN_EXPLAIN
    return UNKNOWN_EXPLAIN


def reason_text(code: int) -> str:
    """The newest kernel's string for `code` (dmar_get_fault_reason)."""
    return fault_reason(code)[1]


def true_reason(text: str, hex_printed: bool) -> int | None:
    """The reason code a log printed as `text`: hexadecimal when `hex_printed` (v5.14+
    "0x%02x"; also the "%02xh" of a v5.14 draft), else the decimal digits of "%02d".
    None when the text cannot be what the kernel printed (not digits, more than a u8)."""
    t = text.strip().lower()
    if t.startswith("0x"):
        if not hex_printed:
            return None
        t = t[2:]
    elif t.endswith("h") and hex_printed:
        t = t[:-1]
    if not t or len(t) > 3:
        return None
    if hex_printed:
        if any(c not in "0123456789abcdef" for c in t):
            return None
        value = int(t, 16)
    else:
        if not t.isdigit() or not t.isascii():
            return None
        value = int(t, 10)
    return value if value <= 0xFF else None
