"""The composed system and the only way to change it: text commands.

Every user action is one line of text (`attach 5`, `map 5 0x100000 64K rw`,
`toggle dmar1 CM` ...).  A command returns the journal events it caused and a
one-sentence summary.  The command log is the session (replay and recording use
it).  Undo does not rebuild anything: each command keeps a checkpoint of what it
changed (see _Checkpoint), and undo puts that back, so its cost follows the size of
the change, not of the machine; the journal object survives, cut back.  Bad input
raises CommandError and leaves the state unchanged (the same checkpoint rolls it back).
"""

from __future__ import annotations

import gc
import inspect
import shlex
from array import array
from collections import deque
from dataclasses import dataclass, field
from operator import eq, is_
from typing import TYPE_CHECKING

from ..hw.entries import bdf_str, parse_bdf
from ..hw.faults import reason_string
from ..hw.memory import CpuCache, MemoryError_, PageAllocator, PhysMem
from ..hw.regs import CAP, ECAP
from ..hw.unit import DmarUnit, Translation
from ..limits import MAX_MAP_ENTRIES
from ..sw.iommufd_uapi import IommufdError
from ..sw.journal import ISSUED, Event, Journal
from ..sw.kvm import MODELS, Kvm, model_name
from ..sw.linux import DmarDomain, DriverError, IntelIommuDriver
from ..sw.pasid import SmDeviceInfo
from ..sw.qemu import QemuViommu
from ..sw.vfio import Group, VfioContainer, VfioError
from .parse import fmt_size, parse_access, parse_int, parse_perms, parse_size
from .scenario import Scenario, ScenarioError, load

# iommufd and QEMU's x-flts device are only built by the scenarios that use them (or
# by `set backend iommufd`): their modules load then, not with the machine (startup).
if TYPE_CHECKING:
    from ..sw.iommufd import Iommufd
    from ..sw.qemu_accel import QemuAccel

def _is_accel(q) -> bool:
    """QEMU with x-flts (sw/qemu_accel.QemuAccel) rather than the shadowing vIOMMU."""
    return q is not None and q.NESTING


TABLES_BASE = 0x0100_0000  # page-table pages come from here up (16 MiB)
TABLES_LIMIT = 0xC000_0000


class CommandError(ValueError):
    """A command the machine refuses; the state is unchanged."""


@dataclass(frozen=True)
class Changes:
    """What a command changed, for the views that keep their rows between keys:
    the units whose registers or caches it touched, the domains (by id) it created,
    freed, attached, detached or mapped, the groups it attached or detached, and the
    journal events it added (`journal`: [start, end) indices; an undo that cut the
    journal back to n events: (n, n), so that a view scans again from n).  `everything`: a change
    not tracked piece by piece (a switch, a hot-plug, an undo): recompute all.  The
    selection is not here: views read it every time (it costs nothing)."""

    units: frozenset[str] = frozenset()
    domains: frozenset[int] = frozenset()
    groups: frozenset[int] = frozenset()
    journal: tuple[int, int] = (1 << 62, 0)  # none: from past any end to the start
    everything: bool = False

    def __or__(self, other: Changes) -> Changes:
        return Changes(self.units | other.units, self.domains | other.domains, self.groups | other.groups,
                       (min(self.journal[0], other.journal[0]), max(self.journal[1], other.journal[1])),
                       self.everything or other.everything)


EVERYTHING = Changes(journal=(0, 0), everything=True)


@dataclass
class Outcome:
    command: str
    events: list[Event]
    message: str
    translation: Translation | None = None
    changed: Changes = EVERYTHING  # what the command changed (Changes); all, unless it says

    @property
    def issued(self) -> int:
        return sum(e.outcome == ISSUED for e in self.events)

    @property
    def skipped(self) -> int:
        return len(self.events) - self.issued


@dataclass
class World:
    """One physical address space with its CPU cache and page-table allocator."""

    level: str
    mem: PhysMem
    cache: CpuCache
    alloc: PageAllocator
    driver: IntelIommuDriver | None = None


@dataclass
class GroupState:
    spec_id: int
    unit: str
    devices: list[tuple[int, str]]  # (source id, name)
    owner: str
    domain: DmarDomain | None = None  # owner "driver": the DMA-API domain

    @property
    def bdfs(self) -> list[str]:
        return [bdf_str(s) for s, _ in self.devices]

    def vfio_group(self) -> Group:
        return Group(self.spec_id, self.unit, [s for s, _ in self.devices])


OPTIONS = {
    "reuse": ("mainline", "prefer-reuse"),
    "kvm-model": MODELS,  # "6.10" / "6.11+" are accepted as aliases (sw.kvm.MODEL_ALIASES)
    "ignore-guest-pat": ("on", "off"),  # KVM_X86_QUIRK_IGNORE_GUEST_PAT
    "vfio-flush": ("off", "on"),
    "virtio-noncoherent": ("off", "on"),
    "cr0-cd": ("off", "on"),
    "lazy": ("on", "off"),
    "skip-clflush": ("off", "on"),
    "skip-invalidation": ("off", "on"),
    "qemu-force": ("off", "on"),
    "backend": ("type1", "iommufd"),  # the VMM's VFIO backend ([vm] backend): only with nothing attached
}


@dataclass
class Machine:
    scenario: Scenario
    journal: Journal = field(default_factory=Journal)
    worlds: dict[str, World] = field(default_factory=dict)
    units: dict[str, DmarUnit] = field(default_factory=dict)
    groups: dict[int, GroupState] = field(default_factory=dict)
    vfio: VfioContainer | None = None
    kvm: Kvm | None = None
    qemu: QemuViommu | QemuAccel | None = None
    host_group: Group | None = None
    # The host kernel's iommufd (/dev/iommu): the VM's vfio cdevs with backend iommufd,
    # and QEMU's x-flts device (QemuAccel); None when nothing opened it.
    iommufd: Iommufd | None = None
    backend: str = "type1"  # [vm] backend / `set backend`: "type1" | "iommufd"
    ioas_id: int | None = None  # the VM's IOAS (its RAM), allocated when the VM starts on iommufd
    selected_unit: str = ""
    selected_group: int = 0
    log: list[str] = field(default_factory=list)
    redo_stack: list[str] = field(default_factory=list)
    _base: dict | None = None  # no longer kept: undo uses _undo_stack
    _undo_stack: list["_Checkpoint"] = field(default_factory=list)  # one per line of `log`
    _device_index: dict[str, dict[int, tuple[int, str]]] = field(default_factory=dict)  # fixed at boot

    # ------------------------------------------------------------ construction
    @classmethod
    def from_scenario(cls, name_or_path: str | Scenario | None = None, *, devices: int | None = None,
                      map_spec: str | None = None) -> "Machine":
        m = cls(load(name_or_path, devices=devices, map_spec=map_spec))
        # A build allocates some 10^5 objects that live as long as the machine (journal
        # events, cache lines, table pages) and no garbage cycles: the collector's passes
        # over them were 15 % of a 1M-page build.
        enabled = gc.isenabled()
        gc.disable()
        try:
            m._build()
        finally:
            if enabled:
                gc.enable()
        return m

    def _world(self, level: str, size: int) -> World:
        w = self.worlds.get(level)
        if w is None:
            mem = PhysMem(size)
            cache = CpuCache(mem)
            w = World(level, mem, cache, PageAllocator(mem, cache, TABLES_BASE, min(TABLES_LIMIT, size)))
            self.worlds[level] = w
        return w

    def _build(self) -> None:
        sc = self.scenario
        ids = [1]  # domain ids are unique across the host's and the guest's kernels
        for us in sc.units:
            w = self._world(us.level, sc.memory if us.level == sc.units[0].level else 1 << 39)
            self.units[us.name] = DmarUnit(us.name, us.base, us.cap, us.ecap, w.mem, w.cache, haw=us.haw,
                                           iotlb_capacity=sc.iotlb_capacity,
                                           emulated_by_qemu=us.level == "guest")
        for level, w in self.worlds.items():
            units = [u for u in self.units.values() if self.level_of(u.name) == level]
            # intel_iommu_sm from [kernel] sm (both kernels, host and guest, are built
            # alike); ATS on the devices whose entry says `ats = true`.
            names = {u.name for u in units}
            ats = {d.source_id for g in sc.groups if g.unit in names for d in g.devices if d.ats}
            w.driver = IntelIommuDriver(self.journal, w.cache, w.alloc, units, domain_ids=ids,
                                        intel_iommu_sm=sc.sm, ats=ats)
            for u in units:
                w.driver.init_unit(u)
        for gs in sc.groups:
            self.groups[gs.id] = GroupState(gs.id, gs.unit, [(d.source_id, d.name) for d in gs.devices], sc.owner)
            self._device_index.setdefault(gs.unit, {}).update({d.source_id: (gs.id, d.name) for d in gs.devices})
            for d in gs.devices:  # every enumerated device was probed at boot
                self.driver_for(gs.unit).probe_device(self.units[gs.unit], d.source_id)
        host = self.worlds.get("host")
        self.backend = sc.backend
        # A [vm] table in a QEMU scenario configures QEMU's VM; only a VM that takes the
        # host's groups (owner "vfio") has the type1 container (kept with backend
        # iommufd too: `set backend type1` goes back to it).
        if sc.has_vm and host is not None and sc.owner == "vfio":
            self.vfio = VfioContainer(self.journal, host.driver, policy=sc.policy)
        if sc.has_vm or sc.qemu:
            self.kvm = Kvm(self.journal, model=sc.kvm_model, ignore_guest_pat=sc.ignore_guest_pat)
        if host is not None and (self.backend == "iommufd" or (sc.qemu and sc.qemu.flts)):
            self._open_iommufd()
        if sc.qemu:
            self._build_qemu(sc, host)
            # The VM starts with its NIC cold-plugged; load() refused the options QEMU
            # would not start with (scenario._check_qemu_start).
            if not self.qemu.device_add(self._kvm_add_host_group):
                raise ScenarioError(f"{sc.source}: qemu: {self.qemu.hotplug_error}")
        self.selected_unit = sc.units[0].name
        self.selected_group = sc.groups[0].id
        for gs in sc.groups:
            if gs.attached:
                self._attach(self.groups[gs.id])
        if sc.generate is not None and sc.generate.map_size:
            self._generate_mappings(sc.generate)
        # The machine-sized collections take their logged kind (_LoggedDict) now, with
        # the machine: the TUI's gc.freeze() keeps them out of the collector's sight,
        # where the first attach would have made them young objects.
        _Checkpoint(self, [], sizable=True).finish()

    def _open_iommufd(self) -> None:
        """The host kernel's iommufd; the VM's IOAS when the VM's groups go through it
        (QEMU's iommufd_cdev_attach() allocates one IOAS per address space, and the
        memory listener maps all guest RAM into it)."""
        if self.iommufd is None:
            from ..sw.iommufd import Iommufd

            self.iommufd = Iommufd(self.journal, self.worlds["host"].driver)
        if self.scenario.owner == "vfio" and self.ioas_id is None:
            self.ioas_id = self.iommufd.ioas_alloc().id

    def _build_qemu(self, sc: Scenario, host: World) -> None:
        q = sc.qemu
        hunit = self.units[q.host_unit]
        self.host_group = Group(-1, q.host_unit, [q.host_sid])
        assigned = self.groups[q.assigned_group]
        guest_unit = self.units[assigned.unit]
        if q.flts:
            from ..sw.qemu_accel import QemuAccel

            # x-flts=on: the device is a vfio cdev on the host's iommufd; its nest parent
            # maps guest RAM, and the host unit reads the guest's first-stage tables in
            # guest RAM, which is host RAM at host_ram_base (two PhysMem in the model).
            self.qemu = QemuAccel(self.journal, guest_unit, assigned.devices[0][0], self.iommufd, self.host_group,
                                  hunit, q.host_ram_base, sc.memory, host_group_no=q.host_group,
                                  pci_bridge=q.pci_bridge, fs1gp=q.fs1gp, force=q.force, backend=self.backend)
            hunit.foreign_ram = [(q.host_ram_base, sc.memory, self.worlds[self.level_of(guest_unit.name)].cache)]
        else:
            host_vfio = VfioContainer(self.journal, host.driver, policy="mainline")
            self.qemu = QemuViommu(self.journal, guest_unit, assigned.devices[0][0], host_vfio,
                                   self.host_group, hunit, q.host_ram_base, force=q.force, host_group_no=q.host_group)
        self.qemu.attach()

    def _generate_mappings(self, spec) -> None:
        """[generate] map: each generated group's domain gets `share` bytes at IOVA 0,
        backed by its own slice of RAM, in pages no larger than `page` (for 4K this
        is the kernel's intel_iommu=sp_off)."""
        share, cap = spec.share, {1 << 12: 1, 1 << 21: 2, 1 << 30: 3}[spec.page]
        unit = self.units[spec.unit]
        if IntelIommuDriver.superpage_levels(unit) < cap:
            raise ScenarioError(f"{spec.where}: {unit.name} has no {fmt_size(spec.page)} pages "
                                f"(CAP.SLLPS={unit.capf('SLLPS'):#x})")
        for i in range(spec.devices):
            g = self.groups[spec.first_group + i]
            d = g.domain
            driver = self.driver_for(g.unit)
            level = d.superpage_level
            d.superpage_level = min(level, cap)
            try:
                driver.map_range(d, 0, self.scenario.ram_base + i * share, share, True, True)
            finally:
                d.superpage_level = level

    def level_of(self, unit: str) -> str:
        """"host" or "guest": which kernel's world the unit lives in."""
        return next(u.level for u in self.scenario.units if u.name == unit)

    def device_names(self, unit: str) -> dict[int, tuple[int, str]]:
        """Source id → (group, device name) of the devices behind a unit."""
        return self._device_index.get(unit, {})

    def driver_for(self, unit: str) -> IntelIommuDriver:
        return self.worlds[self.level_of(unit)].driver

    # ------------------------------------------------------------ checkpoints (undo)
    # Not part of a checkpoint: the undo bookkeeping itself, and what is fixed at boot.
    _VOLATILE = ("log", "redo_stack", "_base", "_undo_stack", "_device_index", "scenario")
    # Fixed once built: no command adds or removes a group (a group's own state is in
    # the footprint of the commands that name it).
    _FIXED = ("groups",)

    # The actors a checkpoint saves by default (everything they hold with them); a
    # command whose reach is known (Machine._actors) saves only its own.
    _ACTORS = ("journal", "worlds", "units", "vfio", "kvm", "qemu", "host_group", "iommufd")

    def _group_arg(self, words: list[str]) -> GroupState | None:
        """The group a command's first argument names, None for none or a bad one."""
        try:
            return self.groups.get(parse_int(words[1], "group")) if len(words) > 1 else None
        except ValueError:
            return None

    def _footprint(self, words: list[str]) -> list:
        """The groups, domains and scalable-mode device infos (kept in collections as
        large as the machine) that the command may change besides those its actors hold
        directly: the named group, its domain, the domains its devices are attached to
        and their SmDeviceInfo; every domain with a pending flush queue for a bare
        flush-queue."""
        if not words:
            return []
        verb = words[0].lower()
        out: list = []
        if verb == "flush-queue" and len(words) == 1:
            for w in self.worlds.values():
                if w.driver is not None:
                    out += [d for d in w.driver.domains.values() if d.flush_queue or d.freed_tables]
            return out
        g = self._group_arg(words)
        if g is None or verb in self._SELECTION:
            return out
        out.append(g)
        d = self.domain_of(g)
        if d is not None:
            out.append(d)
        driver = self.driver_for(g.unit)
        sm_dev = getattr(driver, "_sm_dev", {})
        for sid, _ in g.devices:
            a = driver._attached.get((g.unit, sid))
            if a is not None:
                out.append(a)
            info = sm_dev.get((g.unit, sid))
            if info is not None:
                out.append(info)
        return out

    def _actors(self, words: list[str]) -> list | None:
        """The actors a command can change, for its checkpoint (each saved with what it
        holds: a unit its caches and registers, a driver its units and allocator, QEMU
        its host container); None: all of them.  A selection changes the Machine's own
        fields only; a toggle one unit's CAP/ECAP (and, refused by QEMU's start check,
        nothing: qemu is saved for it anyway); a DMA the translating unit's caches and
        fault registers and its kernel's fault handler (dmar_fault()), on QEMU's host
        unit for the assigned device.  Memory and the CPU caches are always recorded
        (their own undo records).  tests/test_perf_undo.py audits every command against
        a checkpoint of all actors."""
        verb = words[0].lower() if words else ""
        if verb in self._SELECTION:
            return []
        if verb == "toggle":
            u = self.units.get(words[1]) if len(words) > 1 else None
            return [x for x in (u, self.qemu) if x is not None]
        if verb == "dma":
            g = self._group_arg(words)
            if g is None:
                return []  # refused: nothing changes
            out = [self.units[g.unit], self.driver_for(g.unit)]
            if self.qemu is not None:
                out += [self.qemu, self.qemu.host_unit, self.driver_for(self.qemu.host_unit.name)]
            return out
        return None

    # The commands that may add or drop domains, attachments or DIDs: the driver's
    # collections of them (as large as the machine) are copied for these only; for
    # the others a guard checks they did not change.
    _REATTACHING = ("attach", "detach", "device-add", "device-del", "hwpt-alloc")

    def _checkpoint(self, line: str) -> "_Checkpoint":
        try:
            words = shlex.split(line)
        except ValueError:
            words = []  # refused before it changes anything
        verb = words[0].lower() if words else ""
        return _Checkpoint(self, self._footprint(words), sizable=verb in self._REATTACHING or verb not in USAGE,
                           actors=self._actors(words))

    # ------------------------------------------------------------ the command interface
    def execute(self, line: str) -> Outcome:
        """Apply one command line; on bad input raise CommandError, state unchanged."""
        cp = self._checkpoint(line)
        try:
            outcome = self._apply(line)
        except (CommandError, DriverError, VfioError, IommufdError, ValueError, KeyError) as exc:
            cp.finish()
            cp.rollback()
            msg = exc.args[0] if exc.args else str(exc)
            raise CommandError(str(msg)) from None
        except BaseException:
            cp.finish()
            raise
        cp.finish()
        self._undo_stack.append(cp)
        self.log.append(line.strip())
        self.redo_stack.clear()
        return outcome

    def undo(self) -> Outcome:
        if not self.log:
            raise CommandError("nothing to undo")
        last = self.log.pop()
        touched = self._touched_line(last)  # undo changes what the command changed
        self._undo_stack.pop().rollback()
        self.redo_stack.append(last)
        return Outcome("undo", [], f"undid: {last}", changed=self._changed(touched, len(self.journal)))

    def redo(self) -> Outcome:
        if not self.redo_stack:
            raise CommandError("nothing to redo")
        line = self.redo_stack.pop()
        keep = list(self.redo_stack)
        outcome = self.execute(line)
        self.redo_stack = keep
        outcome.message = f"redid: {outcome.message}"
        return outcome

    def _apply(self, line: str) -> Outcome:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise CommandError(f"{line!r}: {exc}") from None
        if not words:
            raise CommandError("empty command")
        verb, args = words[0].lower(), words[1:]
        handler = getattr(self, "_cmd_" + verb.replace("-", "_"), None) if verb in USAGE else None
        if handler is None:
            raise CommandError(f"unknown command {verb!r} (commands: {', '.join(COMMANDS)})")
        try:
            inspect.signature(handler).bind(*args)
        except TypeError:
            raise CommandError(f"usage: {USAGE[verb]}") from None
        touched = self._touched(verb, args)
        mark = len(self.journal)
        try:
            message, translation = handler(*args)
        except MemoryError_ as exc:  # execute() rolls back what the command wrote so far
            raise CommandError(f"{exc} (the scenario has {fmt_size(self.scenario.memory)} of memory)") from None
        events = self.journal.since(mark)
        changed = self._changed(touched, mark)
        return Outcome(line.strip(), events, message, translation, changed)

    # ------------------------------------------------------------ what a command changed
    _SELECTION = ("select-unit", "next-unit", "prev-unit", "select-group")
    _ON_GROUP = ("attach", "detach", "map", "unmap", "flush-queue")

    def _touched(self, verb: str, args: list[str]) -> Changes:
        """What `verb args` may change, as the state is before it runs (domains a
        command frees are only known before).  Cost: the group's, not the state's."""
        if verb in self._SELECTION:
            return Changes()
        if verb == "toggle":
            return Changes(units=frozenset(args[:1]))
        if verb == "dma" or (verb in self._ON_GROUP and args):
            try:
                g = self.groups.get(parse_int(args[0], "group"))
            except ValueError:
                g = None
            if g is None:  # the command refuses it: nothing changes
                return Changes()
            units = {g.unit}
            if self.qemu is not None:
                units.add(self.qemu.host_unit.name)
            if verb == "dma":
                return Changes(units=frozenset(units))
            return Changes(frozenset(units), frozenset(self._domains_near(g)), frozenset({g.spec_id}))
        return EVERYTHING

    def _touched_line(self, line: str) -> Changes:
        try:
            words = shlex.split(line)
        except ValueError:
            return EVERYTHING
        return self._touched(words[0].lower(), words[1:]) if words else EVERYTHING

    def _domains_near(self, g: GroupState) -> set[int]:
        """The group's domain and every domain a VFIO container (the VM's, QEMU's host
        one) holds: what attaching, detaching or mapping through `g` can reach."""
        ids = set()
        d = self.domain_of(g)
        if d is not None:
            ids.add(d.id)
        if self.vfio is not None:
            ids.update(vd.domain.id for vd in self.vfio.domains)
        if self.iommufd is not None:  # the VM's HWPTs and QEMU's nest parent and nested HWPTs
            ids.update(h.domain.id for h in self.iommufd.hwpts)
        if self.qemu is not None:
            ids.update(d.id for d in self.qemu.host_domains())
        return ids

    def _changed(self, touched: Changes, mark: int) -> Changes:
        """`touched` (before the command) with what the same groups reach after it."""
        journal = (mark, len(self.journal))
        if touched.everything:
            return Changes(journal=journal, everything=True)
        domains = set(touched.domains)
        for gid in touched.groups:
            domains |= self._domains_near(self.groups[gid])
        return Changes(touched.units, frozenset(domains), touched.groups, journal)

    # ------------------------------------------------------------ lookups
    def _group(self, text: str) -> GroupState:
        gid = parse_int(text, "group")
        if gid not in self.groups:
            raise CommandError(f"no group {gid} (groups: {', '.join(map(str, sorted(self.groups)))})")
        return self.groups[gid]

    def _unit(self, name: str) -> DmarUnit:
        if name not in self.units:
            raise CommandError(f"no unit {name!r} (units: {', '.join(self.units)})")
        return self.units[name]

    def domain_of(self, g: GroupState) -> DmarDomain | None:
        if g.owner == "vfio":
            cdevs = self.cdevs(g)
            if cdevs:  # backend iommufd: the HWPT its devices are attached to
                h = self.iommufd.hwpt_of(cdevs[0].id)
                return h.domain if h is not None else None
            vd = self.vfio.domain_of(g.spec_id) if self.vfio else None
            return vd.domain if vd else None
        return g.domain

    def cdevs(self, g: GroupState) -> list:
        """The group's devices bound to iommufd as vfio cdevs (IommufdDevice), [] for none."""
        if self.iommufd is None:
            return []
        return [d for d in (self.iommufd.device_of(sid, g.unit) for sid, _ in g.devices) if d is not None]

    # ------------------------------------------------------------ commands
    def _cmd_select_unit(self, name):
        self.selected_unit = self._unit(name).name
        return f"selected {name}", None

    def _cmd_next_unit(self):
        names = list(self.units)
        self.selected_unit = names[(names.index(self.selected_unit) + 1) % len(names)]
        return f"selected {self.selected_unit}", None

    def _cmd_prev_unit(self):
        names = list(self.units)
        self.selected_unit = names[(names.index(self.selected_unit) - 1) % len(names)]
        return f"selected {self.selected_unit}", None

    def _cmd_select_group(self, gid):
        g = self._group(gid)
        self.selected_group = g.spec_id
        self.selected_unit = g.unit
        return f"selected group {g.spec_id} ({', '.join(g.bdfs)}) on {g.unit}", None

    def _cmd_toggle(self, unit_name, field_name):
        unit = self._unit(unit_name)
        name = field_name.upper()
        if name in CAP and CAP.field(name).width == 1:
            reg, old = "CAP", unit.capf(name)
            unit.toggle_cap(name)
        elif name in ECAP and ECAP.field(name).width == 1:
            reg, old = "ECAP", unit.ecapf(name)
            unit.toggle_ecap(name)
        else:
            raise CommandError(f"{field_name!r} is not a one-bit CAP or ECAP field (try CM, C, SC, RWBF, PSI)")
        q = self.qemu
        if q is not None and q.plugged and unit is q.guest_unit:
            # CAP.CM and ECAP.SC of QEMU's vIOMMU are start options: with the vfio-pci
            # device plugged, a QEMU that refuses them is not running, so neither is this VM.
            refusal = q.start_refusal()
            if refusal:
                hint = (" (device-del first to see device_add refused, or set qemu-force on for the what-if)"
                        if q.cm_missing() else " (device-del first to see device_add refused)")
                (unit.toggle_cap if reg == "CAP" else unit.toggle_ecap)(name)
                raise CommandError(refusal + hint)
        level = "what if QEMU ran with another option" if unit.emulated_by_qemu else "software reads it at its next decision"
        self.journal.issued(unit.name, "hw", "capability-change", "toggle",
                            f"{reg}.{name} {old}→{1 - old} on {unit.name}: {level}", detail=f"{reg} {getattr(unit, reg.lower()):#x}")
        return f"{unit.name} {reg}.{name}={1 - old}", None

    def _cmd_attach(self, gid):
        g = self._group(gid)
        if self.domain_of(g) is not None:
            raise CommandError(f"group {g.spec_id} is already attached to domain {self.domain_of(g).id}")
        self._attach(g)
        d = self.domain_of(g)
        did = d.dids.get(g.unit)
        cdevs = self.cdevs(g) if g.owner == "vfio" and self.backend == "iommufd" else []
        h = self.iommufd.hwpt_of(cdevs[0].id) if cdevs else None
        if h is not None:  # say which HWPT: the point of the iommufd backend
            how = "automatic " if getattr(h, "auto", False) else ""
            return (f"attached group {g.spec_id} (vfio cdev {cdevs[0].bdf}) to {how}HWPT {h.id}: domain {d.id} "
                    f"(DID {did}) on {g.unit}, enforce_cache_coherency={str(h.enforce_cache_coherency).lower()}"), None
        return f"attached group {g.spec_id} to domain {d.id} (DID {did}) on {g.unit}", None

    def _attach(self, g: GroupState) -> None:
        unit = self.units[g.unit]
        if g.owner == "vfio" and self.backend == "iommufd":
            self._attach_cdevs(g)
            return
        if g.owner == "vfio":
            if self.vfio is None:
                raise CommandError("this scenario has no VFIO container")
            self.vfio.attach_group(g.vfio_group())
            # kvm_vfio_file_enforced_coherent(): each device's IOMMU must have SC (6.2+).
            self.kvm.file_add(g.spec_id, unit.name, self.enforced_coherent)
            return
        driver = self.driver_for(g.unit)
        d = driver.domain_alloc("driver", unit)
        for sid, _ in g.devices:
            driver.attach_device(d, unit, sid)  # on failure execute() rolls the state back
        g.domain = d

    def _attach_cdevs(self, g: GroupState) -> None:
        """Backend iommufd: QEMU opens each device's vfio cdev, adds it to kvm-vfio, binds
        it to iommufd (iommufd_cdev_connect_and_bind()) and attaches it to the VM's IOAS
        (iommufd_cdev_attach_container() → IOMMU_DEVICE_ATTACH: the kernel picks or
        allocates an automatic HWPT, iommufd_device_auto_get_domain())."""
        unit = self.units[g.unit]
        for sid, _ in g.devices:
            self.kvm.file_add(bdf_str(sid), unit.name, self.enforced_coherent)
            dev = self.iommufd.bind(sid, g.unit, g.spec_id)
            self.iommufd.attach(dev.id, self.ioas_id)

    def _detach_cdevs(self, g: GroupState) -> None:
        """The reverse: IOMMU_DEVICE_DETACH (an automatic HWPT goes with its last device),
        then closing the cdev unbinds it, and iommufd_cdev_unbind_and_disconnect() takes
        it out of kvm-vfio."""
        unit = self.units[g.unit]
        for dev in self.cdevs(g):
            self.iommufd.detach(dev.id)
            self.iommufd.unbind(dev.id)
            self.kvm.file_del(bdf_str(dev.sid), unit.name, self.enforced_coherent)

    def enforced_coherent(self, file: int | str) -> bool:
        """kvm_vfio_file_enforced_coherent() of a file KVM holds (vfio_file_enforced_coherent()):
        a group — IOMMU_CAP_ENFORCE_CACHE_COHERENCY of its devices' IOMMU, which on Intel
        is ECAP.SC, read now (-1: QEMU's host device); a cdev (its BDF) — the same
        capability of its device, through iommufd once bound (Iommufd.enforced_coherent)."""
        if isinstance(file, str):
            sid = parse_bdf(file)
            unit = next(g.unit for g in self.groups.values() if g.owner == "vfio" and sid in (s for s, _ in g.devices))
            dev = self.iommufd.device_of(sid, unit) if self.iommufd is not None else None
            return self.iommufd.enforced_coherent(dev.id) if dev is not None else self.units[unit].sc
        if file == -1 and _is_accel(self.qemu):
            dev = self.iommufd.device_of(self.host_group.devices[0], self.host_group.unit)
            if dev is not None:
                return self.iommufd.enforced_coherent(dev.id)
        unit = self.host_group.unit if file == -1 and self.host_group is not None else self.groups[file].unit
        return self.units[unit].sc

    def _cmd_detach(self, gid):
        g = self._group(gid)
        d = self.domain_of(g)
        if d is None:
            raise CommandError(f"group {g.spec_id} is not attached")
        unit = self.units[g.unit]
        if g.owner == "vfio" and self.cdevs(g):
            self._detach_cdevs(g)
        elif g.owner == "vfio":
            self.kvm.file_del(g.spec_id, unit.name, self.enforced_coherent)
            self.vfio.detach_group(g.vfio_group())
        else:
            driver = self.driver_for(g.unit)
            driver.flush_queue(d)
            for sid, _ in g.devices:
                driver.detach_device(d, unit, sid)
            driver.domain_free(d)
            g.domain = None
        return f"detached group {g.spec_id} from domain {d.id} on {g.unit}", None

    def _range(self, g: GroupState, iova_t: str, size_t: str) -> tuple[DmarDomain, int, int]:
        d = self.domain_of(g)
        if d is None:
            raise CommandError(f"group {g.spec_id} is not attached: attach it first (a)")
        iova = parse_int(iova_t, "IOVA")
        size = parse_size(size_t)
        if iova & 0xFFF:
            raise CommandError(f"IOVA {iova:#x} is not 4 KiB aligned")
        if size == 0 or size & 0xFFF:
            raise CommandError(f"size {size_t} must be a non-zero multiple of 4K")
        width = min(self.units[g.unit].mgaw_bits, 30 + 9 * d.agaw)
        if iova + size > 1 << width:
            raise CommandError(f"{iova:#x}+{fmt_size(size)} goes beyond the {width}-bit address width (MGAW)")
        return d, iova, size

    def _cmd_map(self, gid, iova_t, size_t, perms=None):
        g = self._group(gid)
        d, iova, size = self._range(g, iova_t, size_t)
        r, w = parse_perms(perms)
        phys = iova + self.scenario.ram_base
        cdevs = self.cdevs(g) if g.owner == "vfio" else []
        if cdevs:  # IOMMU_IOAS_MAP: iopt_table_add... fills every paging HWPT of the IOAS
            domains = [self.iommufd.objects[h].domain for h in self.iommufd.objects[self.ioas_id].hwpts]
        else:
            domains = [vd.domain for vd in self.vfio.domains] if g.owner == "vfio" else [d]
        entries = sum(IntelIommuDriver.leaf_entries(x, iova, phys, size) for x in domains)
        if entries > MAX_MAP_ENTRIES:
            raise CommandError(f"map {iova:#x}+{fmt_size(size)} would write {entries:,} leaf entries, more than "
                               f"{MAX_MAP_ENTRIES:,} (MAX_MAP_ENTRIES): map it in parts")
        if cdevs:
            self.iommufd.ioas_map(self.ioas_id, iova, size, phys, r, w)
        elif g.owner == "vfio":
            self.vfio.map_dma(iova, size, phys, r, w)
        else:
            self.driver_for(g.unit).map_range(d, iova, phys, size, r, w)
        return f"mapped {iova:#x}+{fmt_size(size)} {'r' if r else ''}{'w' if w else ''} → {phys:#x} in domain {d.id}", None

    def _cmd_unmap(self, gid, iova_t, size_t):
        g = self._group(gid)
        d, iova, size = self._range(g, iova_t, size_t)
        if g.owner == "vfio" and self.cdevs(g):
            done = self.iommufd.ioas_unmap(self.ioas_id, iova, size)
        elif g.owner == "vfio":
            done = self.vfio.unmap_dma(iova, size)
        else:
            driver = self.driver_for(g.unit)
            if not driver.mapped_in(d, iova, size):
                raise CommandError(f"nothing is mapped in {iova:#x}+{fmt_size(size)} of domain {d.id}")
            done = driver.unmap_range(d, iova, size)
        return f"unmapped {iova:#x}+{fmt_size(done)} from domain {d.id}", None

    def _cmd_dma(self, gid, iova_t, access=None):
        g = self._group(gid)
        iova = parse_int(iova_t, "IOVA")
        if iova >> 64:
            raise CommandError(f"IOVA {iova_t} is wider than 64 bits")
        write = parse_access(access)
        sid = g.devices[0][0]
        unit = self.units[g.unit]
        via = ""
        source = bdf_str(sid)
        if self.qemu and g.spec_id == self.scenario.qemu.assigned_group:
            if not self.qemu.plugged:
                why = f"QEMU refused its device_add: {self.qemu.hotplug_error}" if self.qemu.refusing else \
                    "device-del took it out of the VM"
                raise CommandError(f"{bdf_str(g.devices[0][0])} is not in the VM: {why} (device-add plugs it)")
            unit, sid = self.qemu.host_unit, self.qemu.host_group.devices[0]
            via = f" (assigned: host {bdf_str(sid)} on {unit.name} translates)"
            source = f"{bdf_str(g.devices[0][0])}"
        t = unit.translate(sid, iova, write)
        kind = "write" if write else "read"
        if t.ok:
            how = "IOTLB hit" if t.iotlb_hit else "page walk"
            self.journal.issued(unit.name, "hw", "dma", "translate",
                                f"{bdf_str(sid)} {kind} {iova:#x} → {t.hpa:#x} ({how}{', SNP' if t.snp else ''})")
            return f"DMA {kind} from {source} at {iova:#x} → {t.hpa:#x}{via}", t
        f = t.fault
        if f.suppressed_by_fpd:
            where = "not recorded: FPD"
        elif not f.recorded:
            where = "not recorded: FSTS.PFO, the fault-recording registers are full"
        else:
            where = f"FRCD {f.frcd}"
        self.journal.issued(unit.name, "hw", "fault", f.reason_name.lower().replace("_", "-"), f.message,
                            detail=where)
        # The fault interrupt runs dmar_fault() of the kernel that owns the unit (with
        # FSTS still 0 — FPD — nothing is raised and nothing printed).
        self.driver_for(unit.name).handle_faults(unit, self.scenario.dmar_debug)
        return f"DMA {kind} from {source} at {iova:#x} faulted: reason {f.reason:#04x}, {reason_string(f.reason)}{via}", t

    def _cmd_set(self, option, value):
        opt = option.lower()
        if opt not in OPTIONS:
            raise CommandError(f"unknown option {option!r} (options: {', '.join(OPTIONS)})")
        val = value.lower()
        if opt == "kvm-model":
            val = model_name(val) or val
        if val not in OPTIONS[opt]:
            raise CommandError(f"{opt} takes {' or '.join(OPTIONS[opt])}, not {value!r}")
        on = val == "on"
        unit = self.selected_unit
        if opt == "reuse":
            self._need(self.vfio, "VFIO container").policy = val
        elif opt == "kvm-model":
            self._need(self.kvm, "VM").model = val
        elif opt == "ignore-guest-pat":
            # A VMM disables the quirk with KVM_CAP_DISABLE_QUIRKS2; KVM reads it at the
            # next SPTE it builds, so the model applies it from the next decision on.
            self._need(self.kvm, "VM").ignore_guest_pat = on
        elif opt == "vfio-flush":
            self._need(self.vfio, "VFIO container").flush_noncoherent = on
        elif opt == "virtio-noncoherent":
            self._need(self.kvm, "VM").set_virtio_noncoherent(on, unit)
        elif opt == "cr0-cd":
            self._need(self.kvm, "VM").cr0_cd = on
        elif opt == "lazy":
            for w in self.worlds.values():
                w.driver.lazy_default = on
        elif opt in ("skip-clflush", "skip-invalidation"):
            for w in self.worlds.values():
                setattr(w.driver, opt.replace("-", "_"), on)
        elif opt == "backend":
            self._set_backend(val)
        elif opt == "qemu-force":
            q = self._need(self.qemu, "QEMU's vIOMMU")
            q.force = on
            refusal = q.start_refusal() if q.plugged else ""
            if refusal:
                q.force = not on  # a QEMU with the check would not be running this VM
                raise CommandError(f"{refusal} (toggle {q.guest_unit.name} CM or device-del first)")
        self.journal.issued(unit, "hw", "policy-change", "option", f"{opt} = {val}")
        return f"{opt} = {val}", None

    def _set_backend(self, val: str) -> None:
        """`set backend`: the VMM's choice of VFIO backend, made when a device is opened;
        only while no device of the VM is attached (nothing is moved over)."""
        if not (self.scenario.has_vm or self.scenario.qemu) or self.worlds.get("host") is None:
            raise CommandError("this scenario has no VM on a host kernel (no VFIO backend to choose)")
        busy = [g.spec_id for g in self.groups.values() if g.owner == "vfio" and self.domain_of(g) is not None]
        if busy:
            raise CommandError(f"set backend: group(s) {', '.join(map(str, busy))} are attached to the VM through "
                               f"{self.backend}: detach them first")
        q = self.qemu
        if _is_accel(q) and q.plugged:
            raise CommandError(f"set backend: QEMU's vfio-pci host={q.host_bdf} is plugged through iommufd: "
                               "device-del first")
        if val == self.backend:
            return
        self.backend = val
        if _is_accel(q):  # its next device_add opens the device through this backend
            q.backend = val
        if val == "iommufd":
            self._open_iommufd()
        elif self.ioas_id is not None:  # QEMU closes the VM's IOAS (and /dev/iommu if nothing else holds it)
            if _is_accel(q):
                self.iommufd.destroy(self.ioas_id)
            else:
                self.iommufd = None
            self.ioas_id = None

    def option_value(self, opt: str) -> str | None:
        """The current value of a `set` option, None where this scenario lacks the actor."""
        w = next(iter(self.worlds.values()))
        values = {
            "reuse": self.vfio.policy if self.vfio else None,
            "kvm-model": self.kvm.model if self.kvm else None,
            "ignore-guest-pat": _onoff(self.kvm.ignore_guest_pat) if self.kvm else None,
            "vfio-flush": _onoff(self.vfio.flush_noncoherent) if self.vfio else None,
            "virtio-noncoherent": _onoff(self.kvm.virtio_noncoherent) if self.kvm else None,
            "cr0-cd": _onoff(self.kvm.cr0_cd) if self.kvm else None,
            "lazy": _onoff(w.driver.lazy_default),
            "skip-clflush": _onoff(w.driver.skip_clflush),
            "skip-invalidation": _onoff(w.driver.skip_invalidation),
            "qemu-force": _onoff(self.qemu.force) if self.qemu else None,
            "backend": self.backend if (self.scenario.has_vm or self.scenario.qemu) else None,
        }
        return values[opt]

    @staticmethod
    def _need(thing, what):
        if thing is None:
            raise CommandError(f"this scenario has no {what}")
        return thing

    def _cmd_device_add(self):
        """QEMU monitor `device_add vfio-pci,host=...` of the assigned NIC."""
        q = self._need(self.qemu, "QEMU vfio-pci device")
        if q.plugged:
            raise CommandError(f"vfio-pci host={q.host_bdf} is already in the VM as {bdf_str(q.assigned_sid)}")
        if not q.device_add(self._kvm_add_host_group):
            return f"{q.hotplug_error} (the VM runs on without it)", None
        if _is_accel(q):
            return (f"device_add vfio-pci,host={q.host_bdf},iommufd=iommufd0: {bdf_str(q.assigned_sid)} assigned, "
                    f"its nest parent maps the guest's RAM"), None
        return (f"device_add vfio-pci,host={q.host_bdf}: {bdf_str(q.assigned_sid)} assigned, "
                f"{len(q.shadow)} guest mapping(s) replayed to the host"), None

    def _cmd_device_del(self):
        """QEMU monitor `device_del` of the assigned NIC."""
        q = self._need(self.qemu, "QEMU vfio-pci device")
        if not q.plugged:
            raise CommandError(f"vfio-pci host={q.host_bdf} is not in the VM")
        # vfio_put_group(): vfio_kvm_device_del_group() before vfio_disconnect_container().
        self.kvm.file_del(-1, q.host_unit.name, self.enforced_coherent)
        q.device_del()
        gone = "its nested and nest-parent HWPTs are gone" if _is_accel(q) else "its host shadow is gone"
        return f"device_del: {bdf_str(q.assigned_sid)} (host {q.host_bdf}) left the VM; {gone}", None

    # ------------------------------------------------------------ iommufd ioctls by hand
    def _bound(self, bdf_t: str):
        """The iommufd device (a bound vfio cdev) of a BDF."""
        fd = self._need(self.iommufd, "iommufd (set backend iommufd, or the viommu-nested scenario)")
        try:
            sid = parse_bdf(bdf_t)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        dev = next((d for d in fd.devices if d.sid == sid), None)
        if dev is None:
            bound = ", ".join(d.bdf for d in fd.devices) or "none"
            raise CommandError(f"{bdf_t}: no device bound to iommufd with that BDF (bound: {bound})")
        return dev

    def _cmd_hwpt_alloc(self, bdf_t, pt_t, *words):
        """IOMMU_HWPT_ALLOC as a VMM would issue it: a paging HWPT on an IOAS (flags), or
        with s1=GPA a nested HWPT (IOMMU_HWPT_DATA_VTD_S1) on a paging HWPT."""
        from ..sw.iommufd_uapi import (IOMMU_HWPT_ALLOC_DIRTY_TRACKING, IOMMU_HWPT_ALLOC_NEST_PARENT,
                                       IOMMU_HWPT_DATA_VTD_S1, IOMMU_VTD_S1_EAFE, IOMMU_VTD_S1_SRE,
                                       IOMMU_VTD_S1_WPE, VtdS1)
        dev = self._bound(bdf_t)
        pt = parse_int(pt_t, "PT")
        flags, s1_flags, pgtbl, aw = 0, 0, None, 48
        named = {"nest-parent": IOMMU_HWPT_ALLOC_NEST_PARENT, "dirty-tracking": IOMMU_HWPT_ALLOC_DIRTY_TRACKING}
        s1_named = {"sre": IOMMU_VTD_S1_SRE, "wpe": IOMMU_VTD_S1_WPE, "eafe": IOMMU_VTD_S1_EAFE}
        for w in words:
            key, _, val = w.lower().partition("=")
            if key in named and not val:
                flags |= named[key]
            elif key in s1_named and not val:
                s1_flags |= s1_named[key]
            elif key == "flags" and val:
                flags |= parse_int(val, "flags")
            elif key == "s1" and val:
                pgtbl = parse_int(val, "s1 page-table address")
            elif key == "aw" and val:
                aw = parse_int(val, "aw")
            else:
                raise CommandError(f"hwpt-alloc: {w!r} is not nest-parent, dirty-tracking, flags=N, s1=GPA, aw=N, "
                                   "sre, wpe or eafe")
        if pgtbl is None and (s1_flags or any(w.lower().startswith("aw=") for w in words)):
            raise CommandError("hwpt-alloc: sre, wpe, eafe and aw= describe a nested HWPT: give s1=GPA too")
        if pgtbl is None:
            h = self.iommufd.hwpt_alloc(dev.id, pt, flags)
        else:
            h = self.iommufd.hwpt_alloc(dev.id, pt, flags, IOMMU_HWPT_DATA_VTD_S1, VtdS1(s1_flags, pgtbl, aw))
        return f"IOMMU_HWPT_ALLOC: {h.kind} HWPT {h.id} (domain {h.domain.id}) for {dev.bdf}", None

    def _cmd_hwpt_invalidate(self, hwpt_t, addr_t, npages_t, flags_t="0"):
        """IOMMU_HWPT_INVALIDATE with one iommu_hwpt_vtd_s1_invalidate entry."""
        from ..sw.iommufd_uapi import (IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, IOMMU_VTD_INV_FLAGS_LEAF, U64_MAX,
                                       VtdS1Invalidate)
        fd = self._need(self.iommufd, "iommufd (set backend iommufd, or the viommu-nested scenario)")
        hwpt = parse_int(hwpt_t, "HWPT")
        addr = parse_int(addr_t, "ADDR")
        npages = U64_MAX if npages_t.lower() in ("all", "u64_max") else parse_int(npages_t, "NPAGES")
        flags = IOMMU_VTD_INV_FLAGS_LEAF if flags_t.lower() == "leaf" else parse_int(flags_t, "FLAGS")
        for name, v, bits in (("ADDR", addr, 64), ("NPAGES", npages, 64), ("FLAGS", flags, 32)):
            if v >> bits:
                raise CommandError(f"hwpt-invalidate: {name} {v:#x} does not fit the uAPI's {bits}-bit field")
        n = fd.hwpt_invalidate(hwpt, IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, [VtdS1Invalidate(addr, npages, flags)])
        return f"IOMMU_HWPT_INVALIDATE on HWPT {hwpt}: {n} of 1 entry done", None

    def _kvm_add_host_group(self) -> None:
        # vfio_connect_container(): vfio_kvm_device_add_group() before the memory listener.
        self.kvm.file_add(-1, self.qemu.host_unit.name, self.enforced_coherent)

    def _cmd_flush_queue(self, gid=None):
        groups = [self._group(gid)] if gid is not None else list(self.groups.values())
        n = 0
        for g in groups:
            d = self.domain_of(g)
            if d is not None and d.flush_queue:
                n += self.driver_for(g.unit).flush_queue(d)
        return f"flush queue: {n} deferred unmap(s) flushed", None


# ------------------------------------------------------------ checkpoints
_ATOMS = (int, str, bytes, float, bool, type(None), range, frozenset, tuple, type)
_CONTAINERS = (dict, list, set, deque)


def _frozen(obj) -> bool:
    params = getattr(type(obj), "__dataclass_params__", None)
    return params is not None and params.frozen


class _Saved:
    """A container as it was: the object itself (put back in place, so every holder
    of it sees the old contents) and a shallow copy of its contents, containers
    inside it saved the same way."""

    __slots__ = ("obj", "items", "kids")

    def __init__(self, obj, items, kids):
        self.obj, self.items, self.kids = obj, items, kids

    def same(self) -> bool:
        """Unchanged since saved: the same elements, by identity, in the same order."""
        c, items = self.obj, self.items
        if len(c) != len(items):
            return False
        if isinstance(c, set):
            return c == items
        if isinstance(c, dict):
            return all(map(is_, c.values(), items.values())) and all(map(eq, c, items))
        return all(map(is_, c, items))

    def restore(self) -> None:
        for k in self.kids:
            k.restore()
        c, items = self.obj, self.items
        if isinstance(c, dict):
            c.clear()
            c.update(items)
        elif isinstance(c, list):
            c[:] = items
        else:  # set, deque
            c.clear()
            c.update(items) if isinstance(c, set) else c.extend(items)


class _LoggedDict(dict):
    """A machine-sized dict (the driver's domains, attachments, device infos) that
    keeps, while a checkpoint is open, the value each key had before the command's
    first change to it: the command's inverse, as large as what it changed.  Reads
    are the dict's own.  A key deleted and put back by undo goes to the end: nothing
    reads these in insertion order (graph._fill and the invariants sort)."""

    __slots__ = ("log",)

    def __init__(self, *args):
        super().__init__(*args)
        self.log: dict | None = None

    def _note(self, k) -> None:
        log = self.log
        if log is not None and k not in log:
            log[k] = dict.get(self, k, _MISSING)

    def __setitem__(self, k, v):
        self._note(k)
        dict.__setitem__(self, k, v)

    def __delitem__(self, k):
        self._note(k)
        dict.__delitem__(self, k)

    def pop(self, k, *default):
        self._note(k)
        return dict.pop(self, k, *default)

    def popitem(self):
        if not self:
            raise KeyError("popitem(): dictionary is empty")
        k = next(reversed(self))
        return k, self.pop(k)

    def setdefault(self, k, v=None):
        if k not in self:
            self[k] = v
        return dict.__getitem__(self, k)

    def update(self, *args, **kw):
        for k, v in dict(*args, **kw).items():
            self[k] = v

    def __ior__(self, other):
        self.update(other)
        return self

    def clear(self):
        for k in list(self):
            self._note(k)
        dict.clear(self)

    def __deepcopy__(self, memo):
        from copy import deepcopy
        return {deepcopy(k, memo): deepcopy(v, memo) for k, v in self.items()}

    def __reduce__(self):
        return dict, (dict(self),)

    def rollback(self, log: dict) -> None:
        for k, old in log.items():
            if old is _MISSING:
                dict.pop(self, k, None)
            else:
                dict.__setitem__(self, k, old)


class _LoggedSet(set):
    """A machine-sized set (a unit's DIDs in use) with the same log as _LoggedDict:
    whether each element the command added or removed was there before."""

    __slots__ = ("log",)

    def __init__(self, *args):
        super().__init__(*args)
        self.log: dict | None = None

    def _note(self, x) -> None:
        log = self.log
        if log is not None and x not in log:
            log[x] = set.__contains__(self, x)

    def add(self, x):
        self._note(x)
        set.add(self, x)

    def discard(self, x):
        self._note(x)
        set.discard(self, x)

    def remove(self, x):
        self._note(x)
        set.remove(self, x)

    def pop(self):
        x = set.pop(self)  # the element set.pop() picks, not one of ours
        log = self.log
        if log is not None and x not in log:
            log[x] = True
        return x

    def clear(self):
        for x in list(self):
            self._note(x)
        set.clear(self)

    # The set's own operations after the log (the same table, so the same order of
    # iteration and pop() as a plain set's).
    def update(self, *others):
        others = [o if isinstance(o, (set, frozenset)) else set(o) for o in others]
        for o in others:
            for x in o:
                self._note(x)
        set.update(self, *others)

    def difference_update(self, *others):
        others = [o if isinstance(o, (set, frozenset)) else set(o) for o in others]
        for o in others:
            for x in o:
                self._note(x)
        set.difference_update(self, *others)

    def intersection_update(self, *others):
        for x in set.difference(self, set.intersection(self, *others)):
            self._note(x)
        set.intersection_update(self, *others)

    def symmetric_difference_update(self, other):
        other = other if isinstance(other, (set, frozenset)) else set(other)
        for x in other:
            self._note(x)
        set.symmetric_difference_update(self, other)

    def __ior__(self, other):
        self.update(other)
        return self

    def __isub__(self, other):
        self.difference_update(other)
        return self

    def __iand__(self, other):
        self.intersection_update(other)
        return self

    def __ixor__(self, other):
        self.symmetric_difference_update(other)
        return self

    def __deepcopy__(self, memo):
        from copy import deepcopy
        return {deepcopy(x, memo) for x in self}

    def __reduce__(self):
        return set, (set(self),)

    def rollback(self, log: dict) -> None:
        for x, was in log.items():
            set.add(self, x) if was else set.discard(self, x)


_LOGGED = {dict: _LoggedDict, set: _LoggedSet}


class _Logged:
    """A logged container's record in a checkpoint: the container and the log of
    what the command changed in it (begun when the checkpoint is taken)."""

    __slots__ = ("obj", "log")

    def __init__(self, obj):
        self.obj, self.log = obj, {}
        obj.log = self.log

    def end(self) -> None:
        self.obj.log = None

    def restore(self) -> None:
        self.obj.rollback(self.log)


class _Checkpoint:
    """What one command may change, taken before it runs: each mutable object of the
    machine (units, drivers, allocators, VFIO, KVM, QEMU, ...) as a shallow copy of
    its attributes, its containers copied one level at a time (C-speed copies of
    references, never the objects they hold); the groups and domains — as many as the
    machine has devices — only those the command names (Machine._footprint) or an
    actor holds directly; memory pages, dirty cache lines and the journal by their
    own undo records (copy-on-write of what the command writes).  finish() drops
    whatever the command left as it was, so a checkpoint kept for undo holds the
    change only; rollback() puts every object back in place, identities kept."""

    LEAVES: tuple = ()  # set below: GroupState, DmarDomain

    def __init__(self, m: "Machine", footprint: list, sizable: bool = True, actors: list | None = None,
                 records: bool = True):
        """`actors`: the objects to save (with what they hold), None: every actor of
        the machine; `records` False: no undo records of memory, caches and journal
        (a second checkpoint taken alongside one that has them, for an audit)."""
        # (object, attributes not recorded, {attribute: value or _Saved}, attribute names)
        self.objs: list[tuple[object, tuple, dict, frozenset]] = []
        self.undo_records: list = []
        self._seen: set[int] = set()
        self._mems: list = []  # PhysMem, CpuCache, Journal: their own undo records
        # sizable False: machine-sized collections (of groups / domains, or sets of
        # ids) get a guard, not a copy: the command must not change them.
        self._sizable = sizable
        self._guards: list[_Guard] = []
        # records False (an audit): machine-sized containers copied, their logs left alone.
        self._records = records
        self._logs: list[_Logged] = []
        skip = Machine._VOLATILE + Machine._FIXED
        if actors is not None:
            skip += Machine._ACTORS  # no command rebinds these: the actors are saved below
        self._save(m, skip=skip)
        for a in actors or ():
            self._save(a)
        if actors is not None:  # memory is written by whatever the command reaches
            for w in m.worlds.values():
                self._save(w.cache)
        for leaf in footprint:
            self._save(leaf)
        self._mems.append(m.journal)
        if not records:
            self._mems = []
        for x in self._mems:
            x.begin_undo()

    # -- taking
    def _save(self, obj, skip: tuple = ()) -> None:
        if id(obj) in self._seen:
            return
        self._seen.add(id(obj))
        if isinstance(obj, (PhysMem, CpuCache)):
            self._mems.append(obj)
            if isinstance(obj, CpuCache):
                self._save(obj.mem)
            return
        if isinstance(obj, Journal) or not hasattr(obj, "__dict__"):
            return
        attrs = vars(obj)
        state = {k: self._value(v, attrs, k) for k, v in list(attrs.items()) if k not in skip}
        self.objs.append((obj, skip, state, frozenset(state)))

    @classmethod
    def _plain(cls, v) -> bool:
        """Held by reference only: never changed in place, or kept in a machine-sized
        collection (groups, domains) that the footprint covers."""
        return (isinstance(v, _ATOMS) or isinstance(v, cls.LEAVES) or isinstance(v, (Event, array))
                or _frozen(v) or (callable(v) and not isinstance(v, _CONTAINERS)))

    def _value(self, v, holder=None, key=None):
        if isinstance(v, _CONTAINERS):
            return self._container(v, holder, key)
        if isinstance(v, (int, str, bool, type(None))) or _frozen(v) or isinstance(v, Event):
            return v
        if isinstance(v, array):
            return _Saved(v, array(v.typecode, v), [])
        if not callable(v):
            self._save(v)  # an object an actor holds directly (a group or domain too)
        return v

    def _container(self, c, holder=None, key=None) -> _Saved | _Logged | "_Guard":
        """`holder[key]` is c (a vars() dict or a container's copy and original): where
        a machine-sized container is replaced, once, by its logged kind."""
        if len(c) > _GUARDED and (isinstance(c, set) or isinstance(
                next(iter(c.values() if isinstance(c, dict) else c)), self.LEAVES)):
            if not self._sizable:
                g = _Guard(c)
                self._guards.append(g)
                return g
            if self._records and holder is not None and isinstance(c, (dict, set)):
                return self._logged(c, holder, key)
        if isinstance(c, set):
            return _Saved(c, set(c), [])
        items = c.copy() if isinstance(c, dict) else list(c)
        values = items.values() if isinstance(items, dict) else items
        kids: list[_Saved] = []
        first = next(iter(values), None)
        if first is None or self._plain(first):
            return _Saved(c, items, kids)  # plain values, or a machine-sized collection
        pairs = items.items() if isinstance(items, dict) else enumerate(items)
        for k, v in list(pairs):
            if isinstance(v, _CONTAINERS):
                kid = self._container(v, (c, items), k)
                if not isinstance(kid, _Guard):  # a _Guard checks itself
                    kids.append(kid)
            elif not self._plain(v):
                self._save(v)
        return _Saved(c, items, kids)

    def _logged(self, c, holder, key) -> _Logged:
        """Log the command's changes to a machine-sized container instead of copying
        it (its logged kind put in its place the first time)."""
        if type(c) in _LOGGED:
            c = _LOGGED[type(c)](c)
            for h in holder if isinstance(holder, tuple) else (holder,):
                h[key] = c
        rec = _Logged(c)
        self._logs.append(rec)
        return rec

    # -- after the command
    def finish(self) -> None:
        """End the undo records; keep only what changed."""
        self.undo_records = [(x, x.end_undo()) for x in self._mems]
        self._mems, self._seen = [], set()
        for rec in self._logs:
            rec.end()
        self._logs = []
        for g in self._guards:
            g.check()
        self._guards = []
        kept = []
        for obj, skip, state, names in self.objs:
            now = vars(obj)
            changed = {}
            for k, v in state.items():
                cur = now.get(k, _MISSING)
                if isinstance(v, _Guard):
                    if cur is not v.obj:
                        raise RuntimeError(f"undo: {type(obj).__name__}.{k} was replaced by a command "
                                           "that should not change it")
                elif isinstance(v, (_Saved, _Logged)):
                    if cur is not v.obj or not _unchanged(v):
                        changed[k] = v
                elif cur is not v:
                    changed[k] = v
            added = len(now) != len(names) + sum(k in now for k in skip) or any(k not in now for k in names)
            if changed or added:
                kept.append((obj, skip, changed, names if added else None))
        self.objs = kept

    def rollback(self) -> None:
        """Every object as it was when the checkpoint was taken (the checkpoints of
        later commands rolled back first)."""
        for x, record in reversed(self.undo_records):
            x.rollback(record)
        for obj, skip, changed, names in reversed(self.objs):
            if names is not None:  # attributes the command added
                for k in [k for k in vars(obj) if k not in names and k not in skip]:
                    delattr(obj, k)
            for k, v in changed.items():
                if isinstance(v, _Logged):
                    v.restore()
                    v = v.obj
                elif isinstance(v, _Saved):
                    if isinstance(v.obj, array):
                        v.obj[:] = v.items
                    else:
                        v.restore()
                    v = v.obj
                setattr(obj, k, v)


_MISSING = object()
_GUARDED = 16  # a collection this large is machine-sized (the server scenario has 64 devices)


class _Guard:
    """A machine-sized collection a command must leave alone: its size, and for a
    dict its newest entry (an insertion goes at the end, so any insertion or removal
    shows), checked after the command."""

    __slots__ = ("obj", "size", "last")

    def __init__(self, c):
        self.obj, self.size, self.last = c, len(c), self._last(c)

    @staticmethod
    def _last(c):
        if isinstance(c, dict) and c:
            k = next(reversed(c))
            return k, id(c[k])
        return None

    def check(self) -> None:
        c = self.obj
        if len(c) != self.size or self._last(c) != self.last:
            raise RuntimeError(f"undo: a command outside {Machine._REATTACHING} changed a collection of "
                               f"{self.size} {type(next(iter(c), None)).__name__ if c else ''} entries")


def _unchanged(saved: _Saved | _Logged) -> bool:
    if isinstance(saved, _Logged):
        return not saved.log
    if isinstance(saved.obj, array):
        return saved.obj == saved.items
    if not saved.same():
        return False
    saved.kids = [k for k in saved.kids if not _unchanged(k)]
    return not saved.kids


_Checkpoint.LEAVES = (GroupState, DmarDomain, SmDeviceInfo)


def _onoff(flag: bool) -> str:
    return "on" if flag else "off"


USAGE = {
    "select-unit": "select-unit NAME", "next-unit": "next-unit", "prev-unit": "prev-unit",
    "select-group": "select-group N", "toggle": "toggle UNIT FIELD", "attach": "attach GROUP",
    "detach": "detach GROUP", "map": "map GROUP IOVA SIZE [r|w|rw]", "unmap": "unmap GROUP IOVA SIZE",
    "dma": "dma GROUP IOVA [r|w]", "set": "set OPTION VALUE", "flush-queue": "flush-queue [GROUP]",
    "device-add": "device-add", "device-del": "device-del",
    "hwpt-alloc": "hwpt-alloc BDF PT [nest-parent] [dirty-tracking] [flags=N] [s1=GPA [aw=48|57] [sre] [wpe] [eafe]]",
    "hwpt-invalidate": "hwpt-invalidate HWPT ADDR NPAGES|all [leaf|FLAGS]",
}
COMMANDS = tuple(USAGE)


__all__ = ["Changes", "CommandError", "EVERYTHING", "Machine", "Outcome", "ScenarioError", "COMMANDS", "USAGE", "OPTIONS"]
