"""KVM, VFIO and QEMU at a glance, the policy and what-if switches, and the
one-sentence summary of the last action for the status line."""

from __future__ import annotations

from ..graph import kvm_noncoherent_why
from ..hw.entries import bdf_str
from ..machine import OPTIONS, Machine, Outcome
from ..machine.parse import fmt_size
from .style import Line, plain

# What each switch means, for the pane and the palette.
OPTION_HELP = {
    "reuse": "VFIO domain reuse: mainline tries existing domains; prefer-reuse shares one where it can",
    "kvm-model": "KVM's vmx_get_mt_mask(): guest MTRRs decide (≤6.10) or guest PAT decides (6.11+)",
    "ignore-guest-pat": "KVM_X86_QUIRK_IGNORE_GUEST_PAT: off as a VMM may set it, guest PAT always honoured",
    "vfio-flush": "the 2024 VFIO patch: flush CPU caches around DMA for non-coherent domains",
    "virtio-noncoherent": "the 2023 RFC: a virtio device declares noncoherent DMA to KVM",
    "cr0-cd": "the guest runs with CR0.CD=1 (caches disabled)",
    "lazy": "DMA-API unmaps deferred to a flush queue (CM=1 forces strict)",
    "skip-clflush": "what-if: the driver forgets clflush on a non-coherent unit",
    "skip-invalidation": "what-if: the driver skips the caching-mode (not-present → present) invalidations",
    "qemu-force": "what-if: a QEMU without the caching-mode checks assigns the device although CM=0",
}
WHAT_IFS = ("skip-clflush", "skip-invalidation", "qemu-force")


def vm_lines(m: Machine) -> list[Line]:
    out: list[Line] = []
    if m.kvm is not None:
        k = m.kvm
        nc, why = kvm_noncoherent_why(m)
        warn = "warn" if nc else "on"
        out.append(plain("KVM", "head"))
        out.append((("  noncoherent DMA count ", "key"), (str(k.noncoherent_dma_count), warn),
                    (f"  (EPT zaps {k.ept_zaps})", "dim")))
        out.append((("  WBINVD ", "key"), ("emulated: flushes caches" if k.emulate_wbinvd else "a no-op", warn)))
        out.append((("  EPT memtype RAM ", "key"), (k.ept_memtype(), warn)))
        out.append((("  EPT memtype MMIO ", "key"), (k.ept_memtype(mmio=True), "dim")))
        out.append(plain(f"  {why}", "warn" if nc else "dim"))
    if m.vfio is not None:
        v = m.vfio
        out.append(plain("VFIO type1 container", "head"))
        out.append((("  reuse policy ", "key"), (v.policy, "head"), (f" · domains {len(v.domains)}", "dim")))
        cc = v.cc_iommu()
        out.append((("  VFIO_DMA_CC_IOMMU ", "key"), ("yes" if cc else "no", "on" if cc else "warn")))
        out.append((("  DMA mappings ", "key"), (str(len(v.dmas)), ""),
                    (f"  ({fmt_size(sum(d.size for d in v.dmas))})" if v.dmas else "", "dim")))
    if m.qemu is not None:
        out += qemu_lines(m)
    out.append(plain("switches (: set OPTION VALUE, or the palette)", "head"))
    for opt in OPTIONS:
        val = m.option_value(opt)
        if val is None:
            continue
        what_if_on = opt in WHAT_IFS and val == "on"
        out.append(((f"  {opt:<19}", "key"), (val, "bad" if what_if_on else "")))
    return out


def qemu_lines(m: Machine) -> list[Line]:
    q = m.qemu
    assert q is not None
    guest = q.guest_mappings()
    forced = q.force and not q.guest_unit.cm
    out: list[Line] = [plain("QEMU vIOMMU → host shadow", "head")]
    out.append((("  assigned ", "key"), (f"{bdf_str(q.assigned_sid)} via host {q.host_unit.name}", "")))
    # What QEMU did with the vfio-pci device: plugged (with or without the what-if),
    # refused at device_add, or taken out by device_del.
    if q.plugged:
        what, tone = ("forced (what-if)", "warn") if forced else ("allowed", "on")
    elif q.refusing:
        what, tone = "refused at hot-plug", "bad"
    else:
        what, tone = "not plugged", "dim"
    out.append((("  guest CAP.CM ", "key"), ("1" if q.guest_unit.cm else "0", "on" if q.guest_unit.cm else "warn"),
                ("  assignment ", "key"), (what, tone)))
    if q.refusing:
        out.append(plain(f"  {q.hotplug_error}", "bad"))
    out.append((("  traps ", "key"), (str(q.traps), ""), ("  shadow ", "key"), (f"{len(q.shadow)} mapping(s)", ""),
                ("  guest maps ", "key"), (str(len(guest)), "")))
    if not q.plugged:
        out.append(plain("  no device, no notifier: QEMU keeps no host shadow", "dim"))
        return out
    missing = sorted(i for i, mp in guest.items() if q.shadow.get(i) != mp)
    extra = sorted(i for i in q.shadow if i not in guest)
    if missing or extra:
        out.append(plain(f"  ✗ host out of sync: {len(missing)} guest mapping(s) missing"
                         + (f" (first {missing[0]:#x})" if missing else "")
                         + (f", {len(extra)} stale" if extra else ""), "stale"))
    else:
        out.append(plain("  ✓ host shadow matches the guest's tables", "on"))
    return out


def sentence(outcome: Outcome) -> str:
    """"attached group 5 to domain 2 (DID 2) on dmar1: 1 issued, 3 skipped".

    The counts are the software's decisions (driver, VFIO, KVM, QEMU); the hardware's
    own records (a toggle, a DMA, a fault) are in the journal but are not decisions.
    A refusal by QEMU leads, because it changes what the rest of the story means."""
    decisions = [e for e in outcome.events if e.is_decision]
    msg = outcome.message
    refusal = next((e for e in decisions if e.rule in QEMU_REFUSALS), None)
    if refusal is not None and refusal.reason not in msg:
        msg = f"QEMU refused the assignment: {refusal.reason} — {msg}"
    if not decisions:
        return msg
    issued = sum(e.outcome == "issued" for e in decisions)
    return f"{msg}: {issued} issued, {len(decisions) - issued} skipped"


QEMU_REFUSALS = ("qemu-cm-required", "qemu-sc-unsupported")
