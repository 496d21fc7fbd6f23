"""Invariants of the composed machine, said in the kernel's words.

`check(m)` lists every invariant the machine's state breaks right now (one line each,
naming unit, DID, domain, group or device; empty when all hold) and `assert_ok(m)`
raises InvariantError with that list.  `check_command(m, line, events)` checks that a
command left the journal decisions it owes: one for each rule that applies.

State invariants:
  context-did       every present context entry's DID is owned by an allocated
                    dmar_domain of that unit's driver, which lists the device and whose
                    page table the entry points at (and the converse); DIDs are unique
                    per unit and never the reserved 0 / 1
  group-domain      every group is attached to at most one domain, the one its owner
                    (VFIO or the DMA API) says
  kvm-noncoherent   KVM's noncoherent DMA count is the number of kvm-vfio (and virtio
                    RFC) devices with something non-coherent; kv->noncoherent is what
                    kvm_vfio_update_coherency() computes over the files it holds
  vfio-reuse        a VFIO container's domains agree with vfio_iommu_type1_attach_group():
                    a group joined an earlier domain whenever the reuse policy and
                    paging_domain_compatible() allowed it, and only then; every domain
                    maps exactly the container's vfio_dma list
  qemu-shadow       QEMU's shadow is what VFIO maps on the host and, with caching mode
                    and no what-if, what the guest's tables map
  iommufd-hwpt      every HWPT's domain is what its devices' translation structures
                    name (legacy: context entry DID/SLPTPTR; scalable: the RID_PASID
                    PASID entry's DID, PGTT and table: nested PGTT 3 with FSPTPTR the
                    guest's s1 pgtbl_addr and SSPTPTR the parent's pgd); device and
                    HWPT agree on the attachment; a nested HWPT's parent is a nest parent
  iommufd-ioas      every IOAS area is mapped, to its HPA, in every paging HWPT of the
                    IOAS (iopt_table_add_domain() / iopt_area_fill_domain()); QEMU's nest
                    parent maps all guest RAM (GPA → HPA)
  cache-filled      every context-cache / IOTLB entry says what the raw entry it was
                    filled from says (the model can tell which are stale now:
                    `stale_entries`, the views' own DmarUnit.*_stale)
  cache-stale       with no what-if switch in force at any time in the command log, no
                    cached entry is stale, except IOTLB entries inside a range queued
                    on the domain's flush queue (lazy unmap, the kernel's own design)

Read-only: tables are read as the CPU sees them (cpu_read_q); nothing is written,
invalidated, translated or counted.  Cheap enough to run after every command.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..hw import faults as fr
from ..hw.caches import ContextCacheEntry, IotlbEntry
from ..hw.entries import (
    PTE_ADDR_MASK, PTE_PS, PTE_R, PTE_SNP, PTE_W, ContextEntry, RootEntry,
    bdf_str, level_index,
)
from ..hw.regs import CAP, RTADDR_SMT
from ..hw.sm_entries import FL_ADDR_MASK, FL_P, FL_PS, FL_RW, PGTT_NAMES, PGTT_NESTED, SmContextEntry
from ..hw.unit import DmarUnit
from ..sw.journal import ISSUED, SKIPPED, Event
from ..sw.kvm import model_name
from ..sw.linux import DmarDomain, IntelIommuDriver, psi_aligned
from ..sw.rules import RULE_IDS
from ..sw.vfio import VfioContainer
from .parse import parse_int

ACTORS = ("driver", "vfio", "kvm", "qemu", "hw", "iommufd")
# Rule ids software decides by (REFERENCE.md §5–8, and the ones the actors added):
# the rule table's, which README's table "The actors and their rules" follows.
RULES = RULE_IDS
# `set` switches under which software deliberately gets it wrong.
WHAT_IF_OPTIONS = {"skip-clflush": "on", "skip-invalidation": "on", "qemu-force": "on"}


class InvariantError(AssertionError):
    """One or more invariants do not hold; `violations` lists them."""

    def __init__(self, violations: list[str]):
        self.violations = list(violations)
        super().__init__("\n".join(["invariants violated:"] + [f"  - {v}" for v in self.violations]))


# ----------------------------------------------------------------------------- the command log


@dataclass(frozen=True)
class _Cmd:
    index: int
    verb: str
    args: tuple[str, ...]


def _field_value(u: DmarUnit, name: str) -> int:
    """A one-bit field as Machine's `toggle` resolves it (CAP first, then ECAP)."""
    if name in CAP and CAP.field(name).width == 1:
        return u.capf(name)
    return u.ecapf(name)


class _History:
    """The command log (every command that succeeded since boot, undo already applied)."""

    def __init__(self, m) -> None:
        self.cmds: list[_Cmd] = []
        for i, line in enumerate(m.log):
            words = shlex.split(line)
            self.cmds.append(_Cmd(i, words[0].lower(), tuple(words[1:])))

    def toggles(self, unit: str, name: str, after: int = -1) -> list[int]:
        """Log positions (> after) of `toggle UNIT NAME`."""
        return [c.index for c in self.cmds
                if c.verb == "toggle" and c.index > after and c.args[0] == unit and c.args[1].upper() == name]

    def bit_at(self, u: DmarUnit, name: str, pos: int) -> bool:
        """The field's value while command `pos` ran (-1: at boot): now, undone by the toggles since."""
        return bool(_field_value(u, name) ^ (len(self.toggles(u.name, name, pos)) & 1))

    def cleared(self, u: DmarUnit, name: str) -> list[int]:
        """Positions of toggles that took the field from 1 to 0."""
        return [i for i in self.toggles(u.name, name) if self.bit_at(u, name, i - 1)]

    def last(self, pred) -> int:
        for c in reversed(self.cmds):
            if pred(c):
                return c.index
        return -1

    def option_at(self, option: str, pos: int, initial: str) -> str:
        value = initial
        for c in self.cmds:
            if c.index >= pos:
                break
            if c.verb == "set" and c.args[0].lower() == option:
                value = c.args[1].lower()
        return value


@dataclass(frozen=True)
class WhatIf:
    unit: str | None  # None: every unit
    text: str


def what_ifs(m, history: _History | None = None) -> list[WhatIf]:
    """What-if switches in force now or at any time in the command log.

    A `set` what-if (skip-clflush, skip-invalidation, qemu-force), and capability
    changes a running kernel cannot follow: ECAP.C (domain->iommu_coherency is fixed
    when the domain is allocated), ECAP.SC (SNP leaves already written turn reserved),
    CAP.CM cleared (entries cached under caching mode are never invalidated by a
    driver that now reads CM=0; QEMU stops shadowing).  CAP.CM set, CAP.RWBF and
    CAP.PSI either way are not what-ifs: the driver reads them at its next decision.
    """
    h = history or _History(m)
    out: list[WhatIf] = []
    for c in h.cmds:
        if c.verb == "set" and WHAT_IF_OPTIONS.get(c.args[0].lower()) == c.args[1].lower():
            out.append(WhatIf(None, f"command {c.index + 1} `set {c.args[0]} {c.args[1]}`"))
    for w in m.worlds.values():
        if w.driver.skip_clflush or w.driver.skip_invalidation:
            out.append(WhatIf(None, "the driver's skip-clflush / skip-invalidation is on"))
    if m.qemu is not None and m.qemu.force:
        out.append(WhatIf(None, "qemu-force is on"))
    for u in m.units.values():
        for name in ("C", "SC"):
            for i in h.toggles(u.name, name):
                out.append(WhatIf(u.name, f"command {i + 1} toggled ECAP.{name} of {u.name} under a running kernel"))
        for i in h.cleared(u, "CM"):
            out.append(WhatIf(u.name, f"command {i + 1} cleared CAP.CM of {u.name} under a running kernel"))
    return out


# ----------------------------------------------------------------------------- caches


@dataclass(frozen=True)
class Stale:
    unit: str
    kind: str  # "context-cache" | "iotlb"
    entry: ContextCacheEntry | IotlbEntry
    why: str

    def describe(self) -> str:
        e = self.entry
        if isinstance(e, ContextCacheEntry):
            what = f"context-cache entry {bdf_str(e.source_id)} DID {e.did}"
        else:
            what = f"IOTLB entry DID {e.did} {e.iova:#x}+{e.size:#x}{'' if e.present else ' (not present)'}"
        return f"{self.unit}: {what} is stale: {self.why}"


def stale_entries(m) -> list[Stale]:
    """Every cached entry that no longer matches the tables, with the views' reason
    (DmarUnit.context_cache_stale / iotlb_stale, as the caches pane shows them)."""
    out: list[Stale] = []
    for name, u in m.units.items():
        for e in u.context_cache:
            why = u.context_cache_stale(e)
            if why:
                out.append(Stale(name, "context-cache", e, why))
        read = _cpu_read(u)
        for e in u.iotlb:
            why = u.iotlb_stale(e, read)
            if why:
                out.append(Stale(name, "iotlb", e, why))
    return out


def _cpu_read(u: DmarUnit):
    """The CPU's view of what the unit's tables say: its own memory, and inside a
    foreign_ram window (QEMU's host unit over guest RAM) the guest world's CPU view;
    None: the unit's default (cpu_read_q)."""
    return u._foreign_reader(u.cpu_read_q, True) if u.foreign_ram else None


def _check_cache_filled(m) -> list[str]:
    """Each entry is what the raw entry it was filled from says."""
    out: list[str] = []
    for name, u in m.units.items():
        for e in u.context_cache:
            where = f"{name}: context-cache entry {bdf_str(e.source_id)}"
            if e.sm:
                out += _check_sm_context_filled(e, where)
                continue
            ce = ContextEntry.decode(e.lo, e.hi)
            if e.present:
                if not ce.present or ce.did != e.did or e.fault_reason:
                    out.append(f"{where} DID {e.did} was not filled from a present context entry with that DID "
                               f"(raw hi {e.hi:#x} lo {e.lo:#x})")
            else:
                if e.did != 0:
                    out.append(f"{where}: a cached not-present entry must be tagged DID 0 (caching mode), not {e.did}")
                if e.fault_reason not in (fr.ROOT_ENTRY_P, fr.CONTEXT_ENTRY_P, fr.CONTEXT_ENTRY_INV):
                    out.append(f"{where}: cached not-present entry for fault {e.fault_reason:#x}")
                elif e.fault_reason == fr.CONTEXT_ENTRY_P and ce.present:
                    out.append(f"{where}: cached as not present but filled from a present entry (lo {e.lo:#x})")
        for e in u.iotlb:
            where = f"{name}: IOTLB entry DID {e.did} {e.iova:#x}+{e.size:#x}"
            if e.shift not in (12, 21, 30) or e.iova & (e.size - 1) or e.pte_addr & 7:
                out.append(f"{where}: misaligned (shift {e.shift}, PTE at {e.pte_addr:#x})")
                continue
            if e.pgtt == PGTT_NESTED and e.present:
                out += _check_nested_iotlb_filled(e, where)
                continue
            if e.first_stage:
                out += _check_fs_iotlb_filled(e, where)
                continue
            if not e.present:
                negative = (fr.READ, fr.WRITE) if e.pasid is None else (fr.SM_WRITE, fr.SM_READ)
                if e.pte & (PTE_R | PTE_W) or e.r or e.w or e.fault_reason not in negative:
                    out.append(f"{where}: cached not-present entry filled from a present PTE {e.pte:#x}")
                continue
            level = (e.shift - 12) // 9 + 1
            base = e.pte & PTE_ADDR_MASK & ~(e.size - 1)
            leaf = level == 1 or bool(e.pte & PTE_PS)
            if (not leaf or base != e.hpa or e.snp != bool(e.pte & PTE_SNP)
                    or (e.r and not e.pte & PTE_R) or (e.w and not e.pte & PTE_W) or not (e.r or e.w)
                    or (e.pte_addr & 0xFFF) >> 3 != level_index(e.iova, level)):
                out.append(f"{where} → {e.hpa:#x} {'R' if e.r else '-'}{'W' if e.w else '-'}: not what the L{level} "
                           f"PTE {e.pte:#x} at {e.pte_addr:#x} it was filled from says")
    return out


def _check_sm_context_filled(e, where: str) -> list[str]:
    """A scalable-mode context-cache entry: no DID in the entry (tagged 0), and a
    negative one only for the faults caching mode may cache (root/context not present,
    invalid context entry)."""
    ce = SmContextEntry.decode(e.lo, e.hi)
    if e.present:
        if not ce.present or e.fault_reason:
            return [f"{where}: not filled from a present scalable-mode context entry (lo {e.lo:#x})"]
        return []
    if e.fault_reason not in (fr.SM_ROOT_ENTRY_P, fr.SM_CONTEXT_ENTRY_P, fr.SM_CONTEXT_ENTRY_INV):
        return [f"{where}: cached not-present scalable-mode entry for fault {e.fault_reason:#x}"]
    if e.fault_reason == fr.SM_CONTEXT_ENTRY_P and ce.present:
        return [f"{where}: cached as not present but filled from a present entry (lo {e.lo:#x})"]
    return []


def _check_fs_iotlb_filled(e: IotlbEntry, where: str) -> list[str]:
    """A first-stage (or nested) IOTLB entry against the IA-32e leaf it came from:
    present iff P; readable whenever present; writable only with R/W."""
    if not e.present:
        if e.pte & FL_P or e.r or e.w or e.fault_reason != fr.FS_PAGING_ENTRY_P:
            return [f"{where}: cached not-present first-stage entry filled from a present PTE {e.pte:#x}"]
        return []
    level = (e.shift - 12) // 9 + 1
    base = e.pte & FL_ADDR_MASK & ~(e.size - 1)
    leaf = level == 1 or bool(e.pte & FL_PS)
    if (not e.pte & FL_P or not leaf or base != e.hpa or not e.r or (e.w and not e.pte & FL_RW)
            or (e.pte_addr & 0xFFF) >> 3 != level_index(e.iova, level)):
        return [f"{where} → {e.hpa:#x} {'R' if e.r else '-'}{'W' if e.w else '-'}: not what the first-stage L{level} "
                f"PTE {e.pte:#x} at {e.pte_addr:#x} it was filled from says"]
    return []


def _check_nested_iotlb_filled(e: IotlbEntry, where: str) -> list[str]:
    """A nested IOTLB entry keeps the second-stage leaf that gave its output (the
    size is the smaller of the two stages' pages, ScalableMode._nested_walk): the
    output lies inside that leaf's page, and the leaf allows what the entry allows."""
    base = e.pte & PTE_ADDR_MASK
    span = 1 << 30 if e.pte & PTE_PS else 1 << 12  # a PS leaf: 2 MiB or 1 GiB
    if not (e.r and e.pte & PTE_R) or not base <= e.hpa < base + span or (e.w and not e.pte & PTE_W):
        return [f"{where} → {e.hpa:#x} {'R' if e.r else '-'}{'W' if e.w else '-'}: not what the second-stage leaf "
                f"{e.pte:#x} at {e.pte_addr:#x} it was filled from says (nested)"]
    return []


def _queued(m, unit: str, e: IotlbEntry) -> bool:
    """Is the entry inside a range a lazy unmap queued on its domain's flush queue?"""
    domains = [d for d in m.driver_for(unit).domains.values() if d.dids.get(unit) == e.did]
    q = m.qemu
    if q is not None and not hasattr(q, "host_vfio") and unit == q.host_unit.name and e.pgtt == PGTT_NESTED:
        # x-flts: the host's nested entry caches the guest's first stage, so the guest
        # driver's flush queue (its P_IOTLB not sent yet) holds the host's flush back too.
        g = next((g for g in m.groups.values() if g.spec_id == m.scenario.qemu.assigned_group), None)
        d = m.domain_of(g) if g is not None else None
        domains += [d] if d is not None else []
    return any(iova < e.iova + e.size and e.iova < iova + size for d in domains for iova, size in d.flush_queue)


def _check_stale(m, h: _History) -> list[str]:
    wi = what_ifs(m, h)
    if any(w.unit is None for w in wi):
        return []
    tainted = {w.unit for w in wi}
    out = []
    for s in stale_entries(m):
        if s.unit in tainted:
            continue
        if s.kind == "iotlb" and _queued(m, s.unit, s.entry):
            continue
        out.append(f"{s.describe()} — and no what-if switch was ever in force (the driver's own sequence "
                   f"with the hardware's true CM / C / RWBF must leave nothing stale)")
    return out


# ----------------------------------------------------------------------------- tables and domains


def _present_contexts(u: DmarUnit) -> dict[int, ContextEntry]:
    rta = u.rta_latched & ~0xFFF
    out: dict[int, ContextEntry] = {}
    if not rta or u.rta_latched & RTADDR_SMT:  # scalable mode: _check_pasid_did
        return out
    for bus, _, root in u.present_entries(rta, RootEntry.decode):
        for dfn, _, ce in u.present_entries(root.ctp, ContextEntry.decode):
            out[bus << 8 | dfn] = ce
    return out


def _check_pasid_did(m, name: str, u: DmarUnit, drv) -> list[str]:
    """Scalable mode: each attached device's PASID entry of PASID 0 is present, names its
    domain's DID (FLPT_DEFAULT_DID 1 for identity) and the PGTT of the domain's stage;
    a probed device with no domain has a not-present entry."""
    out: list[str] = []
    pgtt = {"first": "first-stage", "second": "second-stage", "identity": "pass-through", "nested": "nested"}
    for (uname, sid) in sorted(drv._sm_dev):  # undo puts a key back last: sorted, not insertion order
        if uname != name:
            continue
        d = drv.attached_domain(sid, u)
        pe = drv.read_pasid(u, sid, 0)
        where = f"{name}: PASID entry {bdf_str(sid)} PASID 0"
        if d is None:
            if pe is not None and pe.present:
                out.append(f"{where} is present (DID {pe.did}), but the device has no domain")
            continue
        want = 1 if d.stage == "identity" else d.dids.get(name)
        if pe is None or not pe.present:
            out.append(f"{where} is not present, but domain {d.id} lists the device as attached")
        elif pe.did != want or pe.pgtt_name != pgtt[d.stage]:
            out.append(f"{where}: DID {pe.did} PGTT {pe.pgtt_name}, but domain {d.id} has DID {want}, "
                       f"stage {d.stage}")
    return out


def _check_context_did(m) -> list[str]:
    out: list[str] = []
    for name, u in m.units.items():
        drv = m.driver_for(name)
        sm = drv.sm_supported(u)
        if sm:
            out += _check_pasid_did(m, name, u, drv)
        owner: dict[int, DmarDomain] = {}
        for _, d in sorted(drv.domains.items()):
            did = d.dids.get(name)
            if did is None:
                continue
            if did in owner:
                out.append(f"{name}: DID {did} is held by domains {owner[did].id} and {d.id}")
            if did in (0, 1) or did >= u.ndoms:
                out.append(f"{name}: domain {d.id} holds DID {did}, outside the driver's range 2..{u.ndoms - 1} "
                           f"(DID 0 tags caching-mode entries, 1 is FLPT_DEFAULT_DID)")
            owner[did] = d
        used = getattr(drv, "_did_used", {}).get(name)
        if used is not None and used != set(owner):
            out.append(f"{name}: the driver's domain-id allocator marks DIDs {sorted(used)} used, "
                       f"its domains hold {sorted(owner)}")
        present = _present_contexts(u)
        for sid, ce in sorted(present.items()):
            where = f"{name}: context entry {bdf_str(sid)} DID {ce.did}"
            d = owner.get(ce.did)
            if d is None:
                out.append(f"{where}: no allocated dmar_domain of {name}'s driver owns that DID")
            elif d.devices.get(sid) != name:
                out.append(f"{where} belongs to domain {d.id}, which does not list {bdf_str(sid)} as attached")
            elif ce.slptptr != d.pgd or ce.aw != d.agaw:
                out.append(f"{where}: SLPTPTR {ce.slptptr:#x} AW {ce.aw}, but domain {d.id} has pgd {d.pgd:#x} "
                           f"AW {d.agaw}")
        for _, d in sorted(drv.domains.items()):
            if d.has_mappings and next(iter(d.dids), name) == name:
                pages = drv._count_pages(d.pgd, d.levels)
                if pages != d.mapped_pages:
                    out.append(f"{name}: domain {d.id} counts {d.mapped_pages} mapped page(s), its page table maps "
                               f"{pages}")
            for sid, un in d.devices.items():
                if un == name and sid not in present and not sm:
                    out.append(f"{name}: domain {d.id} lists {bdf_str(sid)} as attached, but its context entry "
                               f"is not present")
                if un == name and sm:
                    pe = drv.read_pasid(u, sid, 0)
                    if pe is None or not pe.present:
                        out.append(f"{name}: domain {d.id} lists {bdf_str(sid)} as attached, but its PASID entry "
                                   f"(PASID 0) is not present")
                if un == name and name not in d.dids:
                    out.append(f"{name}: domain {d.id} has {bdf_str(sid)} attached but no DID on {name}")
    return out


def _containers(m) -> list[tuple[str, VfioContainer, dict[int, tuple[str, list[int]]]]]:
    """(label, container, group id → (unit, source ids)) for the VM's container and QEMU's host one."""
    out = []
    if m.vfio is not None:
        out.append(("the VM's VFIO container", m.vfio,
                    {g.spec_id: (g.unit, [s for s, _ in g.devices]) for g in m.groups.values() if g.owner == "vfio"}))
    if m.qemu is not None and hasattr(m.qemu, "host_vfio"):  # QemuAccel: the host device is an iommufd cdev
        hg = m.qemu.host_group
        out.append(("QEMU's host VFIO container", m.qemu.host_vfio, {hg.id: (hg.unit, list(hg.devices))}))
    return out


def _check_groups(m) -> list[str]:
    out: list[str] = []
    alive = {id(d) for w in m.worlds.values() for d in w.driver.domains.values()}
    everyone: list[tuple[str, str, list[int], DmarDomain | None]] = [
        (f"group {g.spec_id}", g.unit, [s for s, _ in g.devices], m.domain_of(g)) for g in m.groups.values()]
    if m.qemu is not None and hasattr(m.qemu, "host_vfio"):
        hvd = m.qemu.host_vfio.domain_of(m.qemu.host_group.id)
        everyone.append(("the host group", m.qemu.host_group.unit, list(m.qemu.host_group.devices),
                         hvd.domain if hvd else None))
    elif m.qemu is not None and m.iommufd is not None:  # QemuAccel: its cdev's HWPT
        hg = m.qemu.host_group
        dev = m.iommufd.device_of(hg.devices[0], hg.unit)
        h = m.iommufd.hwpt_of(dev.id) if dev is not None else None
        everyone.append(("the host device", hg.unit, list(hg.devices), h.domain if h is not None else None))
    for label, unit, sids, dom in everyone:
        drv = m.driver_for(unit)
        holders = sorted({d.id for d in drv.domains.values() for s in sids if d.devices.get(s) == unit})
        if len(holders) > 1:
            out.append(f"{label} ({unit}) is attached to domains {', '.join(map(str, holders))}")
        if dom is None:
            if holders:
                out.append(f"{label} ({unit}) is detached, yet domain {holders[0]} holds its devices")
            continue
        if id(dom) not in alive:
            out.append(f"{label} ({unit}) points at domain {dom.id}, which was freed")
        for s in sids:
            if dom.devices.get(s) != unit:
                out.append(f"{label}: device {bdf_str(s)} is not attached to the group's domain {dom.id}")
    for label, c, _ in _containers(m):
        seen: dict[int, int] = {}
        for vd in c.domains:
            for gid in vd.groups:
                if gid in seen:
                    out.append(f"{label}: group {gid} is in domains {seen[gid]} and {vd.domain.id}")
                seen[gid] = vd.domain.id
    return out


def _check_kvm(m, h: _History) -> list[str]:
    k = m.kvm
    if k is None:
        return []
    out: list[str] = []
    want = int(k.kvm_vfio_noncoherent) + int(k.virtio_noncoherent)
    if k.noncoherent_dma_count != want:
        out.append(f"KVM noncoherent_dma_count is {k.noncoherent_dma_count}, but {want} device(s) registered "
                   f"noncoherent DMA (kvm-vfio: {k.kvm_vfio_noncoherent}, virtio RFC: {k.virtio_noncoherent})")
    files: dict[int | str, str] = {}  # group (or cdev: its BDF) → unit, for the files the VM holds
    for g in m.groups.values():
        if g.owner == "vfio" and m.domain_of(g) is not None:
            cdevs = m.cdevs(g)
            for dev in cdevs:  # backend iommufd: one file per device's vfio cdev
                files[bdf_str(dev.sid)] = g.unit
            if not cdevs:
                files[g.spec_id] = g.unit
    if m.qemu is not None and m.qemu.plugged:  # device-del takes the host group out of KVM
        files[m.qemu.host_group.id] = m.qemu.host_group.unit
    if set(k.files) != set(files):
        out.append(f"the kvm-vfio device holds file(s) {sorted(k.files, key=str)}, the VM's VFIO groups and cdevs "
                   f"are {sorted(files, key=str)}")
    # kvm_vfio_update_coherency() re-tests every file it holds at each group add /
    # delete: kvm_vfio_file_enforced_coherent() → IOMMU_CAP_ENFORCE_CACHE_COHERENCY,
    # ECAP.SC on Intel, as the unit said when that last update ran.
    last = h.last(lambda c: c.verb in ("device-add", "device-del") or c.verb in ("attach", "detach")
                  and m.groups.get(_int(c.args[0]), None) is not None and m.groups[_int(c.args[0])].owner == "vfio")
    held = {gid: h.bit_at(m.units[unit], "SC", last) for gid, unit in files.items() if gid in k.files}
    for gid, coherent in sorted(held.items(), key=lambda kv: str(kv[0])):
        if k.files[gid] != coherent:
            out.append(f"kvm-vfio holds group {gid} as enforced-coherent={k.files[gid]}, but ECAP.SC of "
                       f"{files[gid]} was {int(coherent)} at its last update")
    bad = sorted((gid for gid, coherent in held.items() if not coherent), key=str)
    if bool(bad) != k.kvm_vfio_noncoherent:
        out.append(f"kvm-vfio noncoherent={k.kvm_vfio_noncoherent}, but at its last update "
                   + (f"group(s) {', '.join(map(str, bad))} were behind a unit without ECAP.SC" if bad
                      else "every group was enforced-coherent"))
    return out


def _int(text: str) -> int | None:
    try:
        return parse_int(text, "group")
    except ValueError:
        return None


def _check_vfio(m, h: _History) -> list[str]:
    out: list[str] = []
    for label, c, groups in _containers(m):
        drv = c.driver
        pages = sum(dma.size for dma in c.dmas) >> 12
        for vd in c.domains:
            d = vd.domain
            where = f"{label}: domain {d.id}"
            if not vd.groups:
                out.append(f"{where} has no group left but was not freed")
            if vd.enforce_cache_coherency != d.force_snooping:
                out.append(f"{where}: enforce_cache_coherency {vd.enforce_cache_coherency} but force_snooping "
                           f"{d.force_snooping}")
            want = {s for gid in vd.groups for s in groups.get(gid, ("", []))[1]}
            if set(d.devices) != want:
                out.append(f"{where} holds devices {sorted(map(bdf_str, d.devices))}, its groups "
                           f"{sorted(map(bdf_str, want))}")
            if d.mapped_pages != pages:
                out.append(f"{where} maps {d.mapped_pages} page(s); the container's vfio_dma list has {pages}")
            for dma in c.dmas:
                for off in (0, dma.size - 4096):
                    hit = drv.iova_to_phys(d, dma.iova + off)
                    if hit is None or hit[0] != dma.vaddr_hpa + off:
                        out.append(f"{where}: vfio_dma {dma.iova:#x}+{dma.size:#x} is not mapped to "
                                   f"{dma.vaddr_hpa + off:#x} at IOVA {dma.iova + off:#x}")
                        break
        if not c.domains and c.dmas:
            out.append(f"{label} has no domain left but still {len(c.dmas)} vfio_dma (vfio_iommu_unmap_unpin_all "
                       f"goes with the last domain)")
        out += _check_reuse(m, h, label, c, groups)
    return out


def _check_reuse(m, h: _History, label: str, c: VfioContainer, groups) -> list[str]:
    """vfio_iommu_type1_attach_group(): the new group's domain enforces coherency iff
    its unit has ECAP.SC; then the first existing domain that the policy allows and
    that paging_domain_compatible() accepts is reused."""
    out: list[str] = []
    vm = c is m.vfio
    for j, vd in enumerate(c.domains):
        for gid in vd.groups:
            unit_name = groups[gid][0]
            u = m.units[unit_name]
            at = h.last(lambda cmd: cmd.verb == "attach" and _int(cmd.args[0]) == gid) if vm else -1
            policy = h.option_at("reuse", at, m.scenario.policy) if vm else "mainline"
            ecc = h.bit_at(u, "SC", at)
            if policy == "mainline" and vd.enforce_cache_coherency != ecc:
                out.append(f"{label}: group {gid} (ECAP.SC={int(ecc)} on {unit_name}) shares domain {vd.domain.id} "
                           f"whose enforce_cache_coherency is {vd.enforce_cache_coherency}; mainline reuses only "
                           f"on equal enforce_cache_coherency")
            if h.toggles(unit_name, "C", at) or h.toggles(unit_name, "SC", at):
                continue  # paging_domain_compatible() then read bits the unit no longer has
            for earlier in c.domains[:j]:
                allowed = policy == "prefer-reuse" or earlier.enforce_cache_coherency == ecc
                if allowed and IntelIommuDriver.incompatible(earlier.domain, u) is None:
                    out.append(f"{label}: group {gid} sits in domain {vd.domain.id} though earlier domain "
                               f"{earlier.domain.id} accepts it and the {policy} policy allows reuse")
                    break
    return out


def _check_qemu(m, h: _History) -> list[str]:
    q = m.qemu
    if q is None or not hasattr(q, "host_vfio"):  # QemuAccel: _check_iommufd
        return []
    out: list[str] = []
    host = {dma.iova: (dma.size, dma.vaddr_hpa - q.gpa_to_hpa, dma.r, dma.w) for dma in q.host_vfio.dmas}
    if host != q.shadow:
        out.append(f"QEMU's shadow of {bdf_str(q.assigned_sid)} ({len(q.shadow)} mapping(s)) differs from what "
                   f"VFIO maps on {q.host_unit.name} ({len(host)})")
    wi = what_ifs(m, h)
    if not q.plugged or any(w.unit in (None, q.guest_unit.name) for w in wi):
        return out
    if not q.guest_unit.cm or h.toggles(q.guest_unit.name, "CM"):
        return out  # without caching mode QEMU refuses, and never catches up on what it missed
    if q.stale_after_teardown():
        # Scalable mode: Linux's detach clears the PASID entry but keeps the context
        # entry, and QEMU's vtd_address_space_sync unmaps the shadow only for a
        # not-present context entry, so the host keeps the mappings (rule qemu-sm-shadow).
        return out
    guest = q.guest_mappings()
    if guest != q.shadow:
        missing = sorted(set(guest) - set(q.shadow))
        extra = sorted(set(q.shadow) - set(guest))
        out.append(f"QEMU's shadow of {bdf_str(q.assigned_sid)} differs from the guest's tables with caching mode "
                   f"on: missing {[hex(i) for i in missing[:4]]}, extra {[hex(i) for i in extra[:4]]}")
    return out


# ----------------------------------------------------------------------------- the public checks


def _hwpt_structures(m, h, dev) -> list[str]:
    """One device of a HWPT: what its unit's structures say for RID_PASID."""
    u = m.units[dev.unit]
    drv = m.driver_for(dev.unit)
    d = h.domain
    bdf = bdf_str(dev.sid)
    where = f"iommufd: HWPT {h.id} ({h.kind}, domain {d.id}): {bdf} on {u.name}"
    if d.devices.get(dev.sid) != u.name:
        return [f"{where}: the domain does not list the device as attached"]
    if not drv.sm_supported(u):
        ce = _present_contexts(u).get(dev.sid)
        if ce is None:
            return [f"{where}: no present context entry"]
        if ce.did != d.dids.get(u.name) or ce.slptptr != d.pgd:
            return [f"{where}: context entry DID {ce.did} SLPTPTR {ce.slptptr:#x}, the domain has DID "
                    f"{d.dids.get(u.name)} pgd {d.pgd:#x}"]
        return []
    pe = drv.read_pasid(u, dev.sid, 0)
    if pe is None or not pe.present:
        return [f"{where}: its PASID entry (PASID 0) is not present"]
    out = []
    if pe.did != d.dids.get(u.name):
        out.append(f"{where}: PASID entry DID {pe.did}, the domain has DID {d.dids.get(u.name)}")
    if h.kind == "nested":
        parent = m.iommufd.objects.get(h.parent)
        want = (PGTT_NESTED, h.s1.pgtbl_addr, parent.domain.pgd if parent is not None else None)
        got = (pe.pgtt, pe.fsptptr, pe.ssptptr)
        if got != want:
            out.append(f"{where}: PASID entry PGTT {PGTT_NAMES.get(pe.pgtt, pe.pgtt)} FSPTPTR {pe.fsptptr:#x} "
                       f"SSPTPTR {pe.ssptptr:#x}; nested wants PGTT nested, FSPTPTR = s1 pgtbl_addr "
                       f"{h.s1.pgtbl_addr:#x}, SSPTPTR = the parent's pgd")
        return out
    table = pe.fsptptr if d.stage == "first" else pe.ssptptr
    if pe.pgtt_name != {"first": "first-stage", "second": "second-stage"}.get(d.stage) or table != d.pgd:
        out.append(f"{where}: PASID entry PGTT {pe.pgtt_name} table {table:#x}, the domain is {d.stage} stage "
                   f"with pgd {d.pgd:#x}")
    return out


def _mapped(drv, d, iova: int, size: int, hpa: int) -> bool:
    """The first and last page of [iova, iova+size) map to hpa + offset in d."""
    for off in (0, size - 4096):
        hit = drv.iova_to_phys(d, iova + off)
        if hit is None or hit[0] != hpa + off:
            return False
    return True


def _check_iommufd(m) -> list[str]:
    fd = m.iommufd
    if fd is None:
        return []
    out: list[str] = []
    for h in fd.hwpts:
        for dev_id in h.devices:
            dev = fd.objects.get(dev_id)
            if dev is None or dev.hwpt != h.id:
                out.append(f"iommufd: HWPT {h.id} lists device object {dev_id}, which is "
                           + ("gone" if dev is None else f"attached to HWPT {dev.hwpt}"))
                continue
            out += _hwpt_structures(m, h, dev)
        if h.kind == "nested":
            parent = fd.objects.get(h.parent)
            if parent is None or getattr(parent, "kind", None) != "paging" or not parent.nest_parent:
                out.append(f"iommufd: nested HWPT {h.id}'s parent {h.parent} is not a NEST_PARENT paging HWPT")
            elif h.domain.parent is not parent.domain:
                out.append(f"iommufd: nested HWPT {h.id}'s domain {h.domain.id} has s2_domain "
                           f"{getattr(h.domain.parent, 'id', None)}, its parent HWPT's domain is {parent.domain.id}")
    for dev in fd.devices:
        if dev.hwpt is not None and (dev.hwpt not in fd.objects or dev.id not in fd.objects[dev.hwpt].devices):
            out.append(f"iommufd: device {bdf_str(dev.sid)} (object {dev.id}) says HWPT {dev.hwpt}, which does not "
                       f"list it")
    for ioas in fd.ioas:
        for hid in ioas.hwpts:
            h = fd.objects.get(hid)
            if h is None:
                out.append(f"iommufd: IOAS {ioas.id} lists HWPT {hid}, which is gone")
                continue
            drv = m.worlds["host"].driver  # iommufd is the host kernel's
            for a in ioas.areas:
                if not _mapped(drv, h.domain, a.iova, a.size, a.hpa):
                    out.append(f"iommufd: IOAS {ioas.id} area {a.iova:#x}+{a.size:#x} → {a.hpa:#x} is not mapped in "
                               f"HWPT {hid} (domain {h.domain.id})")
    return out


def _check_nest_parent(m) -> list[str]:
    """QemuAccel: while the device is plugged its nest parent maps the guest's RAM."""
    q = m.qemu
    if q is None or hasattr(q, "host_vfio") or not q.plugged or m.iommufd is None:
        return []
    drv = m.driver_for(q.host_unit.name)
    parents = [h for h in m.iommufd.hwpts if h.kind == "paging" and h.nest_parent]
    if not parents:
        return [f"QEMU: {q.host_bdf} is plugged with x-flts=on, but iommufd has no NEST_PARENT HWPT"]
    size = m.scenario.memory
    return [f"QEMU: nest parent HWPT {h.id} does not map guest RAM 0+{size:#x} → {q.gpa_to_hpa:#x}"
            for h in parents if not _mapped(drv, h.domain, 0, size, q.gpa_to_hpa)]


def check(m) -> list[str]:
    """Every invariant the machine breaks now, one line each; [] when all hold."""
    h = _History(m)
    return (_check_context_did(m) + _check_groups(m) + _check_kvm(m, h) + _check_vfio(m, h)
            + _check_qemu(m, h) + _check_iommufd(m) + _check_nest_parent(m) + _check_cache_filled(m)
            + _check_stale(m, h))


def assert_ok(m) -> None:
    problems = check(m)
    if problems:
        raise InvariantError(problems)


# ----------------------------------------------------------------------------- journal decisions


def hw_counters(m) -> dict[str, dict[str, int]]:
    """Per unit, the invalidations and flushes the hardware carried out so far."""
    out = {}
    for name, u in m.units.items():
        c = u.counters
        out[name] = {
            "context-cache-invalidation": sum(v for k, v in c.items() if k.startswith("cc-")),
            "iotlb-invalidation": sum(v for k, v in c.items() if k.startswith("iotlb-")),
            "write-buffer-flush": c.get("wbf", 0),
        }
    return out


class _Events:
    def __init__(self, events: list[Event]):
        self.events = events

    def find(self, **want) -> list[Event]:
        detail_did = want.pop("did", None)
        detail_prefix = want.pop("detail_prefix", None)
        detail_has = want.pop("detail_has", None)
        out = []
        for e in self.events:
            if any(getattr(e, k) != v for k, v in want.items()):
                continue
            if detail_did is not None and e.detail.split()[:2] != ["DID", str(detail_did)]:
                continue
            if detail_prefix is not None and not e.detail.startswith(detail_prefix):
                continue
            if detail_has is not None and detail_has not in e.detail:
                continue
            out.append(e)
        return out


def check_command(m, line: str, events: list[Event], counters_before: dict | None = None) -> list[str]:
    """The journal decisions a successful command owes, checked on the machine after it.

    `events` are the journal events the command added (Outcome.events).  With
    `counters_before` (hw_counters() taken before the command), every issued
    invalidation / write-buffer flush must also be one the hardware carried out, and
    the other way round.
    """
    out: list[str] = []
    tail = m.journal.events[len(m.journal.events) - len(events):] if events else []
    if list(events) != tail:
        out.append(f"`{line}`: its events are not the journal's last {len(events)} events")
    for i, e in enumerate(events):
        if e.actor not in ACTORS or e.outcome not in (ISSUED, SKIPPED):
            out.append(f"`{line}`: event {e.seq} has actor {e.actor!r} / outcome {e.outcome!r}")
        if e.is_decision and e.rule not in RULES:
            out.append(f"`{line}`: {e.actor} decision {e.seq} ({e.op}) names no known rule: {e.rule!r}")
        if i and e.seq != events[i - 1].seq + 1:
            out.append(f"`{line}`: journal sequence jumps from {events[i - 1].seq} to {e.seq}")
    words = shlex.split(line)
    verb, args = words[0].lower(), words[1:]
    ev = _Events(list(events))
    check_verb = _VERBS.get(verb)
    if check_verb is not None:
        out += [f"`{line}`: {p}" for p in check_verb(m, args, ev)]
    out += [f"`{line}`: {p}" for p in _qemu_decisions(m, ev)]
    if counters_before is not None:
        after = hw_counters(m)
        for unit, counts in after.items():
            for op, n in counts.items():
                done = n - counters_before.get(unit, {}).get(op, 0)
                said = len(ev.find(unit=unit, op=op, outcome=ISSUED, actor="driver"))
                if done != said:
                    out.append(f"`{line}`: {unit} carried out {done} {op}(s), the journal says {said} issued")
    return out


def _domains_for(m, g) -> list[DmarDomain]:
    if g.owner == "vfio" and m.cdevs(g):  # every paging HWPT of the VM's IOAS
        return [m.iommufd.objects[h].domain for h in m.iommufd.objects[m.ioas_id].hwpts]
    if g.owner == "vfio":
        return [vd.domain for vd in m.vfio.domains] if m.vfio else []
    return [g.domain] if g.domain is not None else []


def _need(ev: _Events, what: str, **want) -> tuple[list[Event], list[str]]:
    found = ev.find(**want)
    return found, ([] if found else [f"no {what}"])


def _outcomes(found: list[Event], expected: str, what: str) -> list[str]:
    return [f"{what} was {e.outcome}, expected {expected} (event {e.seq})" for e in found if e.outcome != expected]


def _attach_decisions(m, args, ev: _Events) -> list[str]:
    g = m.groups[parse_int(args[0], "group")]
    u = m.units[g.unit]
    drv = m.driver_for(g.unit)
    out: list[str] = []
    expected = ISSUED if u.cm and not drv.skip_invalidation else SKIPPED
    if g.owner == "vfio" and m.cdevs(g):
        out += _attach_cdev_decisions(m, g, ev)
    if drv.sm_supported(u):
        return out + _attach_sm_decisions(m, g, u, drv, ev, expected)
    for sid, _ in g.devices:
        bdf = bdf_str(sid)
        cc, miss = _need(ev, f"ctx-np2p context-cache decision for {bdf} on {u.name}", unit=u.name, actor="driver",
                         rule="ctx-np2p", op="context-cache-invalidation", detail_prefix=f"{bdf} ")
        out += miss + _outcomes(cc, expected, f"ctx-np2p context-cache invalidation for {bdf} (CM={int(u.cm)})")
        out += _need(ev, f"clflush decision for the context entry of {bdf}", unit=u.name, actor="driver",
                     rule="clflush", detail_has=f"context entry {bdf} ")[1]
    cc = ev.find(unit=u.name, actor="driver", rule="ctx-np2p", op="context-cache-invalidation")
    tlb = ev.find(unit=u.name, actor="driver", rule="ctx-np2p", op="iotlb-invalidation")
    if len(tlb) != len(cc):
        out.append(f"{len(cc)} ctx-np2p context-cache decision(s) but {len(tlb)} IOTLB one(s) on {u.name}")
    out += _outcomes(tlb, expected, f"ctx-np2p IOTLB invalidation (CM={int(u.cm)})")
    wbf = ev.find(unit=u.name, actor="driver", rule="wbf")
    if not u.cm and len(wbf) < len(cc):
        out.append(f"CM=0 on {u.name}: {len(cc)} context entries made present, {len(wbf)} write-buffer decision(s)")
    if g.owner == "vfio" and not m.cdevs(g):
        out += _need(ev, "enforce-cache-coherency (snp) decision", actor="driver", rule="snp")[1]
        reuse = ev.find(actor="vfio", rule="vfio-reuse", outcome=ISSUED)
        if len(reuse) != 1:
            out.append(f"{len(reuse)} issued vfio-reuse decisions for group {g.spec_id}, expected one")
        out += _need(ev, "kvm-coherency decision", actor="kvm", rule="kvm-coherency")[1]
    return out


def _attach_sm_decisions(m, g, u, drv, ev: _Events, expected: str) -> list[str]:
    """Scalable mode: each device's PASID entry made present owes its pasid_flush_caches()
    decisions (PASID cache and P_IOTLB, issued iff CM) and a clflush decision."""
    out: list[str] = []
    for sid, _ in g.devices:
        bdf = bdf_str(sid)
        for op in ("pasid-cache-invalidation", "piotlb-invalidation"):
            found = [e for e in ev.find(unit=u.name, actor="driver", rule="pasid-np2p", op=op) if e.bdf == bdf]
            if not found:
                out.append(f"no pasid-np2p {op} decision for {bdf} on {u.name}")
            out += _outcomes(found, expected, f"pasid-np2p {op} for {bdf} (CM={int(u.cm)})")
        out += _need(ev, f"clflush decision for the PASID entry of {bdf}", unit=u.name, actor="driver",
                     rule="clflush", detail_has=f"PASID entry {bdf} ")[1]
    if g.owner == "vfio" and not m.cdevs(g):
        out += _need(ev, "enforce-cache-coherency (snp) decision", actor="driver", rule="snp")[1]
        out += _need(ev, "kvm-coherency decision", actor="kvm", rule="kvm-coherency")[1]
    return out


def _attach_cdev_decisions(m, g, ev: _Events) -> list[str]:
    """Backend iommufd: each device's cdev is added to kvm-vfio (a kvm-coherency
    decision) and attached with one issued hwpt-attach; a new automatic HWPT says
    hwpt-alloc and, enforcing, the driver's snp decision."""
    out: list[str] = []
    kvm = ev.find(actor="kvm", rule="kvm-coherency")
    if len(kvm) < len(g.devices):
        out.append(f"{len(kvm)} kvm-coherency decision(s) for {len(g.devices)} cdev(s) of group {g.spec_id}")
    for dev in m.cdevs(g):
        b = bdf_str(dev.sid)
        att = [e for e in ev.find(actor="iommufd", op="hwpt-attach", outcome=ISSUED)
               if e.bdf == b or e.detail.startswith(f"device {b} ") or e.reason.startswith(f"{b} ")]
        if len(att) != 1:
            out.append(f"{len(att)} issued hwpt-attach decisions for {bdf_str(dev.sid)}, expected one")
    for e in ev.find(actor="iommufd", op="hwpt-alloc", outcome=ISSUED):
        h = next((h for h in m.iommufd.hwpts if f"HWPT {h.id} " in e.reason), None)
        if h is not None and h.kind == "paging" and h.enforce_cache_coherency:
            out += _need(ev, f"enforce-cache-coherency (snp) decision for HWPT {h.id}", actor="driver", rule="snp")[1]
    return out


def _detach_decisions(m, args, ev: _Events) -> list[str]:
    g = m.groups[parse_int(args[0], "group")]
    u = m.units[g.unit]
    out: list[str] = []
    if m.driver_for(g.unit).sm_supported(u):
        for sid, _ in g.devices:
            bdf = bdf_str(sid)
            pc = [e for e in ev.find(unit=u.name, actor="driver", rule="pasid-teardown",
                                     op="pasid-cache-invalidation") if e.bdf == bdf]
            out += ([] if pc else [f"no pasid-teardown PASID-cache decision for {bdf}"])
            out += _outcomes(pc, ISSUED, f"pasid-teardown PASID-cache invalidation for {bdf}")
            out += _need(ev, f"pasid-teardown device-TLB decision for {bdf}", unit=u.name, rule="pasid-teardown",
                         op="device-tlb-invalidation", detail=bdf)[1]
        if g.owner == "vfio":
            out += _need(ev, "kvm-coherency decision", actor="kvm", rule="kvm-coherency")[1]
        return out
    for sid, _ in g.devices:
        bdf = bdf_str(sid)
        cc, miss = _need(ev, f"ctx-clear context-cache decision for {bdf}", unit=u.name, actor="driver",
                         rule="ctx-clear", op="context-cache-invalidation", detail_prefix=f"{bdf} ")
        out += miss + _outcomes(cc, ISSUED, f"ctx-clear context-cache invalidation for {bdf}")
        out += _need(ev, f"clflush decision for the context entry of {bdf}", unit=u.name, actor="driver",
                     rule="clflush", detail_has=f"context entry {bdf} ")[1]
        out += _need(ev, f"ctx-clear device-TLB decision for {bdf}", unit=u.name, actor="driver", rule="ctx-clear",
                     op="device-tlb-invalidation", detail=bdf)[1]
    cc = ev.find(unit=u.name, actor="driver", rule="ctx-clear", op="context-cache-invalidation")
    tlb = ev.find(unit=u.name, actor="driver", rule="ctx-clear", op="iotlb-invalidation")
    if len(tlb) != len(cc):
        out.append(f"{len(cc)} ctx-clear context-cache decision(s) but {len(tlb)} IOTLB one(s) on {u.name}")
    out += _outcomes(tlb, ISSUED, "ctx-clear IOTLB invalidation")
    if g.owner == "vfio":
        out += _need(ev, "kvm-coherency decision", actor="kvm", rule="kvm-coherency")[1]
    return out


def _map_decisions(m, args, ev: _Events) -> list[str]:
    g = m.groups[parse_int(args[0], "group")]
    iova = parse_int(args[1], "IOVA")
    from .parse import parse_size

    size = parse_size(args[2])
    out: list[str] = []
    for d in _domains_for(m, g):
        units = [m.units[n] for n in d.dids]
        drv = m.driver_for(units[0].name)
        for u in units:
            did = d.dids[u.name]
            if d.stage == "first":  # cache_tag_flush_range_np: never an invalidation for first stage
                found, miss = _need(ev, f"map-fs decision for domain {d.id} (DID {did}) on {u.name}", unit=u.name,
                                    actor="driver", rule="map-fs", op="piotlb-invalidation", did=did)
                out += miss + _outcomes(found, SKIPPED, f"map-fs P_IOTLB invalidation DID {did} on {u.name}")
                out += _need(ev, f"write-buffer (wbf) decision on {u.name}", unit=u.name, rule="wbf")[1]
                continue
            found, miss = _need(ev, f"map-np2p IOTLB decision for domain {d.id} (DID {did}) on {u.name}",
                                unit=u.name, actor="driver", rule="map-np2p", op="iotlb-invalidation", did=did)
            out += miss
            expected = ISSUED if u.cm and not drv.skip_invalidation else SKIPPED
            out += _outcomes(found, expected, f"map-np2p IOTLB invalidation DID {did} on {u.name} (CM={int(u.cm)})")
            if expected == ISSUED:
                _, mask = psi_aligned(iova, size)
                if not u.psi or mask > u.mamv:
                    out += _need(ev, f"psi-fallback decision for DID {did} on {u.name}", unit=u.name,
                                 rule="psi-fallback", did=did)[1]
            if not u.cm:
                out += _need(ev, f"write-buffer (wbf) decision on {u.name} (CM=0)", unit=u.name, rule="wbf")[1]
        if not any(e.unit in d.dids for e in ev.find(actor="driver", rule="clflush", detail_has="leaf PTE(s)")):
            out.append(f"no clflush decision for domain {d.id}'s new leaf PTEs")
    if g.owner == "vfio" and m.cdevs(g):
        out += _need(ev, "iommufd-noncoherent-flush decision", actor="iommufd", rule="iommufd-noncoherent-flush")[1]
    elif g.owner == "vfio":
        out += _need(ev, "vfio-noncoherent-flush decision", actor="vfio", rule="vfio-noncoherent-flush")[1]
    return out


def _unmap_decisions(m, args, ev: _Events) -> list[str]:
    g = m.groups[parse_int(args[0], "group")]
    out: list[str] = []
    for d in _domains_for(m, g):
        units = [m.units[n] for n in d.dids]
        drv = m.driver_for(units[0].name)
        lazy = drv.lazy_default and d.owner == "driver" and not any(
            u.cm and not drv.first_level_by_default(u) for u in units)
        op = "piotlb-invalidation" if d.stage == "first" else "iotlb-invalidation"
        for u in units:
            did = d.dids[u.name]
            found, miss = _need(ev, f"unmap IOTLB decision for domain {d.id} (DID {did}) on {u.name}", unit=u.name,
                                actor="driver", rule="unmap", op=op, did=did)
            out += miss + _outcomes(found, SKIPPED if lazy else ISSUED,
                                    f"unmap IOTLB invalidation DID {did} on {u.name} ({'lazy' if lazy else 'strict'})")
            if not lazy:
                if not u.psi and d.stage != "first":
                    out += _need(ev, f"psi-fallback decision for DID {did} on {u.name} (CAP.PSI=0)", unit=u.name,
                                 rule="psi-fallback", did=did)[1]
                for sid, un in d.devices.items():
                    # Scalable mode flushes device TLBs through DEVTLB cache tags only
                    # (ATS enabled); legacy decides for every device.
                    if un == u.name and (not d.kernel_sm or sid in drv.ats):
                        out += _need(ev, f"unmap device-TLB decision for {bdf_str(sid)}", unit=u.name, rule="unmap",
                                     op="device-tlb-invalidation", detail=bdf_str(sid))[1]
        if not any(e.unit in d.dids for e in ev.find(actor="driver", rule="clflush", detail_has="cleared L")):
            out.append(f"no clflush decision for domain {d.id}'s cleared entries")
    return out


def _toggle_decisions(m, args, ev: _Events) -> list[str]:
    if len(ev.events) != 1 or ev.events[0].op != "capability-change" or ev.events[0].unit != args[0]:
        return [f"expected one capability-change record on {args[0]}, got {len(ev.events)} event(s)"]
    return []


def _set_decisions(m, args, ev: _Events) -> list[str]:
    rec = ev.find(actor="hw", op="policy-change")
    opt, val = args[0].lower(), args[1].lower()
    if opt == "kvm-model":
        val = model_name(val) or val  # a version alias records the model's name
    if len(rec) != 1 or rec[0] is not ev.events[-1] or rec[0].reason != f"{opt} = {val}":
        return [f"expected one policy-change record `{opt} = {val}` last"]
    return []


def _dma_decisions(m, args, ev: _Events) -> list[str]:
    """One hw record; a fault the hardware recorded (FRCD, so FSTS.PPF) raises the fault
    interrupt, whose dmar_fault() must have read it, cleared F and said so once."""
    recs = [e for e in ev.events if e.actor == "hw"]
    if len(recs) != 1 or recs[0] is not ev.events[0] or recs[0].op not in ("dma", "fault"):
        return [f"expected one hw dma or fault record first, got {len(recs)} of {len(ev.events)} event(s)"]
    handler = ev.events[1:]
    if any((e.actor, e.op, e.rule) != ("driver", "fault", "dmar-fault") for e in handler) or len(handler) > 1:
        return [f"after the hw record, expected at most one driver dmar-fault event, got {len(handler)}"]
    recorded = recs[0].op == "fault" and recs[0].detail.startswith("FRCD ")
    if recorded and not (handler and handler[0].outcome == ISSUED):
        return ["a recorded fault was not handled by the driver's dmar_fault()"]
    u = m.units[recs[0].unit]
    if recorded and (u.fsts & 3 or any(hi >> 63 for _, hi in u.frcd)):
        return [f"{u.name}: FSTS {u.fsts:#x} or an FRCD F bit still set after dmar_fault()"]
    return []


def _flush_queue_decisions(m, args, ev: _Events) -> list[str]:
    host = m.qemu.host_unit.name if m.qemu else None  # QEMU's shadow follows the guest's invalidations
    out = [f"event {e.seq} is not an issued unmap IOTLB invalidation" for e in ev.events
           if e.actor != "qemu" and e.unit != host
           and not ((e.actor, e.rule, e.outcome) == ("driver", "unmap", ISSUED)
                    and e.op in ("iotlb-invalidation", "piotlb-invalidation", "device-tlb-invalidation"))
           and not (e.rule == "psi-fallback" and e.outcome == SKIPPED)]
    groups = [m.groups[parse_int(args[0], "group")]] if args else list(m.groups.values())
    for g in groups:
        d = m.domain_of(g)
        if d is not None and d.flush_queue:
            out.append(f"domain {d.id} of group {g.spec_id} still has {len(d.flush_queue)} queued unmap(s)")
    return out


def _no_decisions(m, args, ev: _Events) -> list[str]:
    return [f"a selection recorded {len(ev.events)} event(s)"] if ev.events else []


_VERBS = {
    "attach": _attach_decisions, "detach": _detach_decisions, "map": _map_decisions, "unmap": _unmap_decisions,
    "toggle": _toggle_decisions, "set": _set_decisions, "dma": _dma_decisions,
    "flush-queue": _flush_queue_decisions, "select-unit": _no_decisions, "next-unit": _no_decisions,
    "prev-unit": _no_decisions, "select-group": _no_decisions,
}


def _qemu_decisions(m, ev: _Events) -> list[str]:
    """Each guest invalidation QEMU traps gets a decision of QEMU's, and each shadow
    MAP/UNMAP it issued went through the host driver's own decisions."""
    q = m.qemu
    if q is None:
        return []
    out: list[str] = []
    guest, host = q.guest_unit.name, q.host_unit.name
    ce = q.guest_unit.read_context(q.assigned_sid, q.guest_unit.cpu_read_q)
    did = ce.entry.did if ce.ok else None

    def concerns_assigned(e: Event) -> bool:
        # vtd_iommu_notify_flag_changed's notifier only hears about the assigned
        # device: its context entry, or its domain's IOTLB entries.
        if e.op == "context-cache-invalidation":
            return e.scope != "device" or e.detail.startswith(bdf_str(q.assigned_sid) + " ")
        return e.scope == "global" or (did is not None and e.detail.split()[:2] == ["DID", str(did)])

    trapped = [e for e in ev.events if e.unit == guest and e.actor == "driver" and e.outcome == ISSUED
               and e.op in ("context-cache-invalidation", "iotlb-invalidation") and concerns_assigned(e)]
    if trapped and q.plugged and not ev.find(actor="qemu"):  # unplugged: no notifier, nothing to decide
        out.append(f"{len(trapped)} guest invalidation(s) on {guest} concern the assigned {bdf_str(q.assigned_sid)}, "
                   f"and QEMU decided nothing")
    start = 0
    for i, e in enumerate(ev.events):
        if e.actor != "qemu":
            continue
        if e.outcome == ISSUED and e.op in ("shadow-map", "shadow-unmap"):
            rule = "map-np2p" if e.op == "shadow-map" else "unmap"
            if not any(x.unit == host and x.rule == rule for x in ev.events[start:i]):
                out.append(f"QEMU's {e.op} (event {e.seq}) has no {rule} decision of the host driver on {host}")
        start = i + 1
    return out


def assert_command_ok(m, line: str, events: list[Event], counters_before: dict | None = None) -> None:
    problems = check_command(m, line, events, counters_before)
    if problems:
        raise InvariantError(problems)


__all__ = ["InvariantError", "Stale", "WhatIf", "assert_command_ok", "assert_ok", "check", "check_command",
           "hw_counters", "stale_entries", "what_ifs"]
