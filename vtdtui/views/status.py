"""KVM, VFIO and QEMU at a glance, the policy and what-if switches, and the
one-sentence summary of the last action for the status line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..graph import kvm_noncoherent_why
from ..hw.entries import bdf_str
from ..machine import OPTIONS, Machine, Outcome
from ..machine.parse import fmt_size
from .style import Line, plain

if TYPE_CHECKING:
    from ..sw.qemu_accel import QemuAccel

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
    "backend": "VFIO's backend for the VM's devices: the type1 container or iommufd (IOAS, HWPTs; cdev)",
}
WHAT_IFS = ("skip-clflush", "skip-invalidation", "qemu-force")


def vm_lines(m: Machine) -> list[Line]:
    out: list[Line] = []
    backend = m.backend
    if m.kvm is not None:
        k = m.kvm
        nc, why = kvm_noncoherent_why(m)
        warn = "warn" if nc else "on"
        out.append((("KVM", "head"),) + ((f" · VFIO backend {backend}", "dim"),))
        out.append((("  noncoherent DMA count ", "key"), (str(k.noncoherent_dma_count), warn),
                    (f"  (EPT zaps {k.ept_zaps})", "dim")))
        out.append((("  WBINVD ", "key"), ("emulated: flushes caches" if k.emulate_wbinvd else "a no-op", warn)))
        out.append((("  EPT memtype RAM ", "key"), (k.ept_memtype(), warn)))
        out.append((("  EPT memtype MMIO ", "key"), (k.ept_memtype(mmio=True), "dim")))
        out.append(plain(f"  {why}", "warn" if nc else "dim"))
    if m.vfio is not None and backend == "iommufd" and not m.vfio.domains:
        out.append((("VFIO type1 container", "head"), (" · unused: backend iommufd", "dim")))
    elif m.vfio is not None:
        v = m.vfio
        out.append(plain("VFIO type1 container", "head"))
        out.append((("  reuse policy ", "key"), (v.policy, "head"), (f" · domains {len(v.domains)}", "dim")))
        cc = v.cc_iommu()
        out.append((("  VFIO_DMA_CC_IOMMU ", "key"), ("yes" if cc else "no", "on" if cc else "warn")))
        out.append((("  DMA mappings ", "key"), (str(len(v.dmas)), ""),
                    (f"  ({fmt_size(sum(d.size for d in v.dmas))})" if v.dmas else "", "dim")))
    if m.iommufd is not None:
        out += iommufd_lines(m.iommufd)
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


def iommufd_lines(fd) -> list[Line]:
    """The host kernel's iommufd objects (sw/iommufd.py Iommufd): each IOAS, then each
    HWPT — a paging one's flags and domain, a nested one's parent and the guest's
    first-stage table.  A VM has a handful of them: the cost is theirs, not the machine's."""
    out: list[Line] = [plain("iommufd", "head")]
    for a in fd.ioas:
        size = sum(area.size for area in a.areas)
        areas = f" · {len(a.areas)} area(s) · {fmt_size(size)}" if size else " · empty"
        out.append(((f"  IOAS {a.id}", "key"), (areas, ""),
                    (" · HWPTs " + (", ".join(map(str, a.hwpts)) or "none"), "dim")))
    for h in fd.hwpts:
        out += _hwpt_lines(fd, h)
    idle = [d for d in fd.devices if d.hwpt is None]
    if idle:
        out.append((("  bound, not attached ", "key"), (", ".join(bdf_str(d.sid) for d in idle), "dim")))
    if len(out) == 1:
        out.append(plain("  no IOAS, no HWPT yet", "dim"))
    return out


def _hwpt_lines(fd, h) -> list[Line]:
    d = h.domain
    dids = ", ".join(f"{u} DID {did}" for u, did in d.dids.items()) or "no DID"
    devs = ", ".join(bdf_str(fd.objects[i].sid) for i in h.devices if i in fd.objects) or "none"
    if h.kind == "nested":
        # iommu_hwpt_vtd_s1.pgtbl_addr: the guest's first-stage table, a GPA the
        # parent's second stage translates (intel_pasid_setup_nested).
        head: list[tuple[str, str]] = [(f"  HWPT {h.id}", "key"), (" nested", "head"),
                                       (f" on parent HWPT {h.parent}", "")]
        detail: Line = ((f"    domain {d.id} · {dids} · s1 pgtbl_addr ", "dim"), (f"{h.s1.pgtbl_addr:#x}", "addr"),
                        (f" (GPA, {h.s1.addr_width}-bit)", "dim"))
        return [tuple(head), detail, ((f"    devices {devs}", "dim"),)]
    flags = [n for n, on in (("NEST_PARENT", h.nest_parent), ("DIRTY_TRACKING", h.dirty_tracking)) if on]
    head = [(f"  HWPT {h.id}", "key"), (" paging", "head"), (f" · {'auto' if h.auto else 'explicit'}", ""),
            (f" · IOAS {h.ioas}", "dim")]
    if flags:
        head.append((" · " + "|".join(flags), "key"))
    cc = h.enforce_cache_coherency
    detail = ((f"    domain {d.id} · {dids} · enforce_cache_coherency ", "dim"),
              ("✓" if cc else "✗", "on" if cc else "warn"))
    return [tuple(head), detail, ((f"    devices {devs}", "dim"),)]


def qemu_lines(m: Machine) -> list[Line]:
    q = m.qemu
    assert q is not None
    if q.NESTING:
        return accel_lines(q)
    guest = q.guest_mappings()
    out: list[Line] = [plain("QEMU vIOMMU → host shadow", "head")]
    out.append((("  assigned ", "key"), (f"{bdf_str(q.assigned_sid)} via host {q.host_unit.name}", "")))
    out += _plug_lines(q)
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


def _plug_lines(q) -> list[Line]:
    """What QEMU did with the vfio-pci device: plugged (with or without the what-if),
    refused at device_add, or taken out by device_del."""
    forced = q.force and not q.guest_unit.cm
    if q.plugged:
        what, tone = ("forced (what-if)", "warn") if forced else ("allowed", "on")
    elif q.refusing:
        what, tone = "refused at hot-plug", "bad"
    else:
        what, tone = "not plugged", "dim"
    cm = q.guest_unit.cm
    out: list[Line] = [(("  guest CAP.CM ", "key"), ("1" if cm else "0", "on" if cm else "warn"),
                        ("  assignment ", "key"), (what, tone))]
    if q.refusing:
        out.append(plain(f"  {q.hotplug_error}", "bad"))
    return out


def accel_lines(q: "QemuAccel") -> list[Line]:
    """QEMU with x-flts=on over iommufd: no shadow; the host unit walks the guest's
    first stage through a nested HWPT over the NEST_PARENT one (vtd_propagate_guest_pasid,
    hw/i386/intel_iommu_accel.c), and the guest's invalidations reach the host as
    IOMMU_HWPT_INVALIDATE, never as MAPs."""
    out: list[Line] = [plain("QEMU vIOMMU (x-flts) → host nested HWPT", "head")]
    out.append((("  assigned ", "key"), (f"{bdf_str(q.assigned_sid)} via host {q.host_unit.name} (iommufd cdev)", "")))
    out += _plug_lines(q)
    if q.fs_hwpt is not None:
        out.append((("  nesting: ", "key"), (f"fs HWPT {q.fs_hwpt} over parent HWPT {q.parent_hwpt}", "on"),
                    (f", {q.traps} trap(s), 0 for maps", "dim")))
    elif q.parent_hwpt is not None:
        out.append((("  nesting: ", "key"), (f"parent HWPT {q.parent_hwpt} (GPA → HPA) only", ""),
                    (f", {q.traps} trap(s): the guest's PASID entry is not first stage yet", "dim")))
    else:
        out.append(plain(f"  no host HWPT: the device is not plugged · {q.traps} trap(s)", "dim"))
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
