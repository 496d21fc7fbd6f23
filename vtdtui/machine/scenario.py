"""Scenario files (TOML): units, groups, the VM and QEMU, validated with clear errors.

Built-in scenarios ship as files in vtdtui/scenarios/; a user's own file has the same
shape.  Every error names the file and the key that is wrong.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..hw.entries import bdf_str, parse_bdf
from ..hw.regs import CAP, ECAP, parse_reg_value
from ..limits import (MAX_DESCRIPTION_CHARS, MAX_DEVICES, MAX_GROUPS, MAX_NAME_CHARS, MAX_SCENARIO_BYTES, MAX_UNITS,
                      LimitError, load_toml, read_input)
from ..textsafe import clip, quote
from ..sw.kvm import model_name
from ..sw.qemu import (AW_BITS_LEGACY, AW_BITS_SM, CM_REQUIRED, ECAP_SM_BITS, FLTS_NEEDS_IOMMUFD, FLTS_NEEDS_SM,
                       SC_UNSUPPORTED, SM_NEEDS_DRAIN)
from .parse import fmt_size, parse_map_spec, parse_size

BUILTIN = ("desktop", "viommu", "server", "notebook", "viommu-sm", "viommu-nested")

# Page tables come from [16 MiB, min(memory, 3 GiB)) (machine.TABLES_BASE, TABLES_LIMIT).
TABLES_BASE, TABLES_LIMIT = 16 << 20, 3 << 30
MIN_MEMORY = TABLES_BASE + (1 << 20)
# A page-table entry holds a host address below 2^52 (the widest HAW).
MAX_ADDRESS = 1 << 52

# The keys each table may hold: anything else is a typo, not something to ignore.
KEYS = {
    "": ("name", "description", "owner", "memory", "ram_base", "iotlb_capacity", "unit", "group", "generate",
         "vm", "qemu", "kernel"),
    "unit": ("name", "level", "base", "cap", "ecap", "haw"),
    "group": ("id", "unit", "devices", "attached"),
    "device": ("bdf", "name", "ats"),
    "generate": ("devices", "first_bus", "unit", "attached", "map", "ats"),
    "vm": ("policy", "kvm_model", "ignore_guest_pat", "backend"),
    "qemu": ("assigned_group", "host_unit", "host_bdf", "host_ram_base", "host_group", "force", "scalable_mode",
             "flts", "fs1gp", "pci_bridge"),
    # How the modelled kernels were built and booted: `sm` is intel_iommu=sm_on|sm_off
    # over CONFIG_INTEL_IOMMU_SCALABLE_MODE_DEFAULT_ON=y (DESIGN.md "Scalable mode").
    "kernel": ("dmar_debug", "sm"),
}


class ScenarioError(ValueError):
    """Bad scenario input; the message starts with the place."""


@dataclass
class UnitSpec:
    name: str
    level: str
    base: int
    cap: int
    ecap: int
    haw: int


@dataclass
class DeviceSpec:
    source_id: int
    name: str
    # The device has an ATS capability (pci_ats_supported()); the driver enables it
    # where the unit has ECAP.DT (REFERENCE-2 §14.5, iommu_enable_pci_caps()).
    ats: bool = False

    @property
    def bdf(self) -> str:
        return bdf_str(self.source_id)


@dataclass
class GroupSpec:
    id: int
    unit: str
    devices: list[DeviceSpec]
    attached: bool = False


@dataclass
class QemuSpec:
    assigned_group: int
    host_unit: str
    host_sid: int
    host_ram_base: int
    host_group: int = 1  # the host's IOMMU group of host_bdf (/dev/vfio/N), named in QEMU's messages
    force: bool = False  # what-if: a QEMU without the caching-mode checks (sw.qemu)
    # x-scalable-mode (QEMU's `scalable_mode`): [qemu] scalable_mode, or when the file
    # does not say, whether the guest unit's ECAP has SMTS (files written before it).
    scalable_mode: bool = False
    # x-flts (QEMU's `flts`, `fsts` since Jan 2026): the guest gets first-stage tables
    # that the host nests over a NEST_PARENT second stage (sw.qemu_accel.QemuAccel).
    flts: bool = False
    fs1gp: bool = True  # QEMU's `fs1gp` property (default true): CAP.FS1GP for the guest
    pci_bridge: bool = False  # the vfio-pci device sits behind a PCI bridge in the VM


# [vm] backend: how the VMM's VFIO devices reach the host IOMMU.  "type1": the legacy
# VFIO container (VFIO_TYPE1v2_IOMMU, sw.vfio); "iommufd": vfio cdevs bound to
# /dev/iommu (sw.iommufd), one IOAS for the VM's RAM.
BACKENDS = ("type1", "iommufd")
# vtd_decide_config(), ≈2025 copy: `if (s->flts && s->aw_bits != VTD_HOST_AW_48BIT)`.
# (The Jan 2026 `fsts` rename made it "Scalable mode(x-flts=on): supported value for
# aw-bits is: %d"; the model follows the ≈2025 copy, as AW_BITS_SM does.)
AW_BITS_FLTS = "Scalable mode(flts=on): supported value for aw-bits is: 48"


@dataclass
class Scenario:
    name: str
    description: str
    source: str
    owner: str
    memory: int
    ram_base: int
    units: list[UnitSpec]
    groups: list[GroupSpec]
    policy: str = "mainline"
    kvm_model: str = "guest-pat"
    ignore_guest_pat: bool = True  # KVM_X86_QUIRK_IGNORE_GUEST_PAT, as KVM starts a VM
    has_vm: bool = False
    backend: str = "type1"  # [vm] backend (BACKENDS)
    qemu: QemuSpec | None = None
    iotlb_capacity: int | None = 1024
    extra: dict = field(default_factory=dict)
    generate: GenerateSpec | None = None
    # [kernel] dmar_debug: CONFIG_DMAR_DEBUG, under which dmar_fault_do_one() calls
    # dmar_fault_dump_ptes(); off in distribution kernels, so off by default.
    dmar_debug: bool = False
    # [kernel] sm: intel_iommu_sm.  `int intel_iommu_sm = IS_ENABLED(CONFIG_INTEL_IOMMU_
    # SCALABLE_MODE_DEFAULT_ON)`, y in the modelled kernel; "off" is intel_iommu=sm_off.
    sm: bool = True

    def unit_sm(self, unit: UnitSpec) -> bool:
        """sm_supported(iommu): intel_iommu_sm && ecap_smts(iommu->ecap)."""
        return self.sm and bool(ECAP.get(unit.ecap, "SMTS"))

    def device(self, source_id: int, unit: str) -> DeviceSpec | None:
        return next((d for g in self.groups if g.unit == unit for d in g.devices if d.source_id == source_id), None)


@dataclass
class GenerateSpec:
    """[generate] (or --devices / --map): N devices, one per group, each group in its
    own domain, and `map` bytes mapped in total, spread evenly, in pages of `page`."""

    devices: int
    first_bus: int
    unit: str
    attached: bool = True
    map_size: int = 0
    page: int = 4096
    first_group: int = 0
    where: str = "generate"
    ats: bool = False  # every generated device has an ATS capability

    @property
    def share(self) -> int:
        """Bytes mapped into each generated domain."""
        return self.map_size // self.devices


def load(name_or_path: str | Scenario | None, *, devices: int | None = None,
         map_spec: str | None = None) -> Scenario:
    """A built-in scenario by name, a TOML file by path, or a Scenario parsed already
    (`--scenario live`: read from sysfs); `devices` and `map_spec` (the command line's
    --devices N and --map SIZE[:PAGE]) replace its [generate]."""
    sc = name_or_path if isinstance(name_or_path, Scenario) else _load(name_or_path)
    if devices is not None or map_spec is not None:
        regenerate(sc, devices, map_spec)
    return sc


def _load(name_or_path: str | None) -> Scenario:
    name = name_or_path or "desktop"
    if name in BUILTIN:
        text = resources.files("vtdtui.scenarios").joinpath(f"{name}.toml").read_bytes()
        return parse(text, f"<built-in {name}>")
    path = Path(name)
    if not path.is_file():
        raise ScenarioError(f"{name}: no such scenario (built-in: {', '.join(BUILTIN)}; or a .toml file)")
    return parse(read_input(name, MAX_SCENARIO_BYTES, "MAX_SCENARIO_BYTES", ScenarioError), str(path))


def _get(table: dict, key: str, kind, where: str, default=...):
    if key not in table:
        if default is ...:
            raise ScenarioError(f"{where}: missing key '{key}'")
        return default
    v = table[key]
    # TOML true/false are Python bools, which are ints too: refuse them wherever an
    # int is wanted, alone or as one of several kinds (addresses take str or int).
    wants_int = kind is int or (isinstance(kind, tuple) and int in kind)
    if wants_int and isinstance(v, bool) or not isinstance(v, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ScenarioError(f"{where}: '{key}' must be {names}, not {type(v).__name__} {clip(repr(v))}")
    return v


def _name(table: dict, key: str, where: str, default=..., limit: int = MAX_NAME_CHARS,
          limit_name: str = "MAX_NAME_CHARS") -> str:
    """A name shown on every pane and in messages: bounded (MAX_NAME_CHARS); any
    character is allowed, as textsafe escapes it wherever it is shown."""
    v = _get(table, key, str, where, default)
    if len(v) > limit:
        raise ScenarioError(f"{where}: '{key}' {quote(v, 24)} is {len(v):,} characters, more than "
                            f"{limit:,} ({limit_name})")
    return v


def _check_counts(doc: dict, source: str) -> None:
    """Refuse more units, groups or listed devices than the limits before any is
    validated, so that the work done is bounded whatever the file holds."""
    units, groups = doc.get("unit"), doc.get("group")
    if isinstance(units, list) and len(units) > MAX_UNITS:
        raise ScenarioError(f"{source}: {len(units):,} [[unit]] tables, more than {MAX_UNITS} (MAX_UNITS)")
    if isinstance(groups, list):
        if len(groups) > MAX_GROUPS:
            raise ScenarioError(f"{source}: {len(groups):,} [[group]] tables, more than {MAX_GROUPS:,} "
                                "(MAX_GROUPS; [generate] makes more)")
        devices = sum(len(g["devices"]) for g in groups
                      if isinstance(g, dict) and isinstance(g.get("devices"), list))
        if devices > MAX_DEVICES:
            raise ScenarioError(f"{source}: {devices:,} devices in [[group]] tables, more than {MAX_DEVICES:,} "
                                "(MAX_DEVICES)")


def _known_keys(table: dict, kind: str, where: str) -> None:
    known = KEYS[kind]
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"keys: {', '.join(known)}"
            raise ScenarioError(f"{where}: unknown key {quote(key)} ({hint})")


def _ram_base(table: dict, key: str, where: str, memory: int, default: int) -> int:
    base = _addr(table, key, where, default)
    if base & 0xFFF:
        raise ScenarioError(f"{where}: '{key}' = {base:#x} is not 4 KiB aligned")
    if base + memory > MAX_ADDRESS:
        raise ScenarioError(f"{where}: '{key}' = {base:#x} with 'memory' = {fmt_size(memory)} ends beyond 2^52, "
                            "the highest address a page-table entry holds")
    return base


def _addr(table: dict, key: str, where: str, default=...) -> int:
    v = _get(table, key, (str, int), where, default)
    if isinstance(v, int):
        if v < 0 or v >> 64:
            raise ScenarioError(f"{where}: '{key}' = {v} is not a 64-bit address")
        return v
    try:
        return parse_reg_value(v, key)
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def parse(data: bytes, source: str) -> Scenario:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ScenarioError(f"{source}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None
    if not text.strip():
        raise ScenarioError(f"{source}: empty scenario file")
    try:
        doc = load_toml(text, source)
    except LimitError as exc:
        raise ScenarioError(str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    _check_counts(doc, source)

    top = source
    _known_keys(doc, "", top)
    name = _name(doc, "name", top)
    owner = _get(doc, "owner", str, top, "vfio")
    if owner not in ("vfio", "driver"):
        raise ScenarioError(f"{top}: 'owner' must be \"vfio\" or \"driver\", not {quote(owner)}")
    memory_v = _get(doc, "memory", (str, int), top, "512G")
    try:
        memory = parse_size(str(memory_v), "'memory'")
    except ValueError as exc:
        raise ScenarioError(f"{top}: {exc}") from None
    if memory & 0xFFF or memory < MIN_MEMORY:
        raise ScenarioError(f"{top}: 'memory' = {clip(repr(memory_v))} must be a multiple of 4K and at least "
                            f"{fmt_size(MIN_MEMORY)} (page tables are allocated from {fmt_size(TABLES_BASE)} up)")
    ram_base = _ram_base(doc, "ram_base", top, memory, 0x100000000)
    units: list[UnitSpec] = []
    unit_names: set[str] = set()
    raw_units = _get(doc, "unit", list, top)
    if not raw_units:
        raise ScenarioError(f"{top}: at least one [[unit]] is needed")
    for i, u in enumerate(raw_units):
        where = f"{source}: unit[{i}]"
        if not isinstance(u, dict):
            raise ScenarioError(f"{where}: must be a table")
        _known_keys(u, "unit", where)
        uname = _name(u, "name", where)
        if uname in unit_names:
            raise ScenarioError(f"{where}: duplicate unit name {quote(uname)}")
        level = _get(u, "level", str, where, "host")
        if level not in ("host", "guest"):
            raise ScenarioError(f"{where}: 'level' must be \"host\" or \"guest\", not {quote(level)}")
        haw = _get(u, "haw", int, where, 39)
        if not 32 <= haw <= 52:
            raise ScenarioError(f"{where}: 'haw' = {haw} is outside 32..52")
        cap = _addr(u, "cap", where)
        if not CAP.get(cap, "SAGAW") & 0b1110:
            raise ScenarioError(f"{where}: 'cap' {cap:#x} has SAGAW {CAP.get(cap, 'SAGAW'):#x}: the driver needs "
                                "3-, 4- or 5-level page tables (SAGAW bit 1, 2 or 3)")
        units.append(UnitSpec(uname, level, _addr(u, "base", where), cap, _addr(u, "ecap", where), haw))
        unit_names.add(uname)

    groups: list[GroupSpec] = []
    group_ids: set[int] = set()
    seen: dict[str, str] = {}
    for i, g in enumerate(_get(doc, "group", list, top, [])):
        where = f"{source}: group[{i}]"
        if not isinstance(g, dict):
            raise ScenarioError(f"{where}: must be a table")
        _known_keys(g, "group", where)
        gid = _get(g, "id", int, where)
        if not 0 <= gid < 1 << 20:
            raise ScenarioError(f"{where}: 'id' = {gid} is out of range")
        if gid in group_ids:  # a set: a check per group over a list was quadratic
            raise ScenarioError(f"{where}: duplicate group id {gid}")
        group_ids.add(gid)
        gunit = _get(g, "unit", str, where)
        if gunit not in unit_names:
            raise ScenarioError(f"{where}: unknown unit {quote(gunit)} (units: {clip(', '.join(sorted(unit_names)))})")
        devs = []
        for j, d in enumerate(_get(g, "devices", list, where)):
            dwhere = f"{where}.devices[{j}]"
            if not isinstance(d, dict):
                raise ScenarioError(f"{dwhere}: must be a table like {{ bdf = \"02:00.0\", name = \"NIC\" }}")
            _known_keys(d, "device", dwhere)
            bdf = _get(d, "bdf", str, dwhere)
            try:
                sid = parse_bdf(bdf)
            except ValueError as exc:
                raise ScenarioError(f"{dwhere}: {exc}") from None
            key = f"{gunit}/{sid}"
            if key in seen:
                raise ScenarioError(f"{dwhere}: device {bdf_str(sid)} is already in {seen[key]}")
            seen[key] = f"group {gid}"
            devs.append(DeviceSpec(sid, _name(d, "name", dwhere, bdf_str(sid)),
                                   bool(_get(d, "ats", bool, dwhere, False))))
        if not devs:
            raise ScenarioError(f"{where}: a group needs at least one device")
        groups.append(GroupSpec(gid, gunit, devs, bool(_get(g, "attached", bool, where, False))))

    gen = _get(doc, "generate", dict, top, None)
    spec = None
    if gen is not None:
        where = f"{source}: generate"
        _known_keys(gen, "generate", where)
        spec = GenerateSpec(_get(gen, "devices", int, where), _get(gen, "first_bus", int, where, 1),
                            _get(gen, "unit", str, where, units[0].name),
                            bool(_get(gen, "attached", bool, where, True)), where=where,
                            ats=bool(_get(gen, "ats", bool, where, False)))
        map_t = _get(gen, "map", str, where, "")
        if map_t:
            try:
                spec.map_size, spec.page = parse_map_spec(map_t, "'map'")
            except ValueError as exc:
                raise ScenarioError(f"{where}: {exc}") from None
        _generate(groups, seen, spec, unit_names)
    if not groups:
        raise ScenarioError(f"{top}: no [[group]] and no [generate]: nothing to attach")
    if owner == "driver":  # the kernel gives each group attached at boot its own domain, one DID
        for i, u in enumerate(units):
            n = sum(g.attached for g in groups if g.unit == u.name)
            nd = CAP.get(u.cap, "ND")
            usable = (1 << (4 + 2 * nd)) - 2  # DID 0 and 1 are reserved
            if n > usable:
                raise ScenarioError(f"{source}: unit[{i}]: CAP.ND={nd} gives {usable} domain ids, but {n} groups "
                                    "are attached at boot")

    sc = Scenario(name, _name(doc, "description", top, "", MAX_DESCRIPTION_CHARS, "MAX_DESCRIPTION_CHARS"), source,
                  owner, memory, ram_base, units, groups)
    sc.generate = spec
    if spec is not None:
        _check_map(sc, spec)
    vm = _get(doc, "vm", dict, top, None)
    if vm is not None:
        where = f"{source}: vm"
        _known_keys(vm, "vm", where)
        sc.has_vm = True
        sc.policy = _get(vm, "policy", str, where, "mainline")
        if sc.policy not in ("mainline", "prefer-reuse"):
            raise ScenarioError(f"{where}: 'policy' must be mainline or prefer-reuse, not {quote(sc.policy)}")
        text = _get(vm, "kvm_model", str, where, "guest-pat")
        sc.kvm_model = model_name(text) or ""
        if not sc.kvm_model:
            raise ScenarioError(f"{where}: 'kvm_model' must be guest-mtrr (6.10) or guest-pat (6.11+), "
                                f"not {text!r}")
        sc.ignore_guest_pat = _get(vm, "ignore_guest_pat", bool, where, True)
        sc.backend = _backend(vm, where)
    elif owner == "vfio":
        raise ScenarioError(f"{top}: owner \"vfio\" needs a [vm] table (the VM that takes the groups)")
    q = _get(doc, "qemu", dict, top, None)
    if q is not None:
        where = f"{source}: qemu"
        _known_keys(q, "qemu", where)
        ag = _get(q, "assigned_group", int, where)
        if not any(g.id == ag for g in groups):
            raise ScenarioError(f"{where}: 'assigned_group' {ag} is not a group")
        hu = _get(q, "host_unit", str, where)
        if hu not in unit_names or next(u for u in units if u.name == hu).level != "host":
            raise ScenarioError(f"{where}: 'host_unit' {quote(hu)} must name a unit with level \"host\"")
        host_bdf = _get(q, "host_bdf", str, where)
        try:
            hsid = parse_bdf(host_bdf)
        except ValueError as exc:
            raise ScenarioError(f"{where}: {exc}") from None
        sc.qemu = QemuSpec(ag, hu, hsid, _ram_base(q, "host_ram_base", where, memory, 0x100000000),
                           _get(q, "host_group", int, where, 1), bool(_get(q, "force", bool, where, False)))
        sc.qemu.fs1gp = _get(q, "fs1gp", bool, where, True)
        sc.qemu.pci_bridge = _get(q, "pci_bridge", bool, where, False)
        _check_qemu_start(sc, units, groups, where)
        _check_qemu_sm(sc, q, units, groups, where)
    kern = _get(doc, "kernel", dict, top, None)
    if kern is not None:
        where = f"{source}: kernel"
        _known_keys(kern, "kernel", where)
        sc.dmar_debug = _get(kern, "dmar_debug", bool, where, False)
        sc.sm = _sm(kern, where, units)
    cap = _get(doc, "iotlb_capacity", int, top, 1024)
    if cap < 0:
        raise ScenarioError(f"{top}: 'iotlb_capacity' = {cap} is negative (0 means no limit)")
    sc.iotlb_capacity = cap if cap > 0 else None
    for g in groups:
        if sc.qemu and g.unit == sc.qemu.host_unit:
            raise ScenarioError(f"{source}: group {g.id} sits on host unit {g.unit}; the guest's groups go on guest units")
    _check_sm_units(sc, top, kern is not None and "sm" in kern)  # decides sc.sm, which the room depends on
    _check_table_room(sc, top)
    return sc


SM_VALUES = ("on", "off")


def _choice(table: dict, key: str, where: str, values: tuple[str, ...], default: str, meaning: str) -> str:
    """A key that takes one of `values`; a typo gets one line with the close match."""
    v = _get(table, key, str, where, default)
    if v not in values:
        close = difflib.get_close_matches(v.lower(), values, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ScenarioError(f"{where}: '{key}' must be {meaning}, not {quote(v)}{hint}")
    return v


def _backend(vm: dict, where: str) -> str:
    """[vm] backend = "type1" | "iommufd"."""
    return _choice(vm, "backend", where, BACKENDS, "type1",
                   '"type1" (the VFIO type1 container) or "iommufd" (vfio cdevs on /dev/iommu)')


def _sm(kern: dict, where: str, units: list[UnitSpec]) -> bool:
    """[kernel] sm = "on" | "off".  Asking for "on" where no unit has ECAP.SMTS is a
    mistake worth a line: intel_iommu=sm_on would change nothing there."""
    v = _choice(kern, "sm", where, SM_VALUES, "on", '"on" (intel_iommu=sm_on) or "off" (intel_iommu=sm_off)')
    if v == "on" and "sm" in kern and not any(ECAP.get(u.ecap, "SMTS") for u in units):
        raise ScenarioError(f"{where}: 'sm' = \"on\" but no unit has ECAP.SMTS=1 (scalable-mode translation): "
                            "every unit would run legacy mode; set SMTS (bit 43) in a unit's 'ecap' or drop 'sm'")
    return v == "on"


def _check_sm_units(sc: Scenario, where: str, explicit: bool) -> None:
    """A unit in scalable mode translates through first-stage (ECAP.FLTS) or
    second-stage (ECAP.SLTS) tables; with neither, intel_iommu_domain_alloc_first_stage()
    and _second_stage() both return -EOPNOTSUPP and no device could be attached.
    A file that says `sm = "on"` is refused; a file written before scalable mode was
    modelled (no `sm`) keeps booting as it did, in legacy mode."""
    bad = [u for u in sc.units if sc.unit_sm(u) and not (ECAP.get(u.ecap, "FLTS") or ECAP.get(u.ecap, "SLTS"))]
    if bad and not explicit:
        sc.sm = False
        return
    for i, u in enumerate(sc.units):
        if sc.unit_sm(u) and not (ECAP.get(u.ecap, "FLTS") or ECAP.get(u.ecap, "SLTS")):
            raise ScenarioError(f"{where}: unit[{i}] {quote(u.name)}: ECAP {u.ecap:#x} has SMTS but neither FLTS nor "
                                "SLTS: in scalable mode no paging domain could be allocated (set FLTS bit 47 or SLTS "
                                "bit 46, or boot with [kernel] sm = \"off\")")


def _check_qemu_start(sc: Scenario, units: list[UnitSpec], groups: list[GroupSpec], where: str) -> None:
    """QEMU starts with the vfio-pci device cold-plugged: the vIOMMU options must let it
    (sw.qemu.QemuViommu.start_refusal says what QEMU prints otherwise)."""
    q = sc.qemu
    gu = next(u for u in units if u.name == next(g for g in groups if g.id == q.assigned_group).unit)
    if q.host_group < 0:
        raise ScenarioError(f"{where}: 'host_group' = {q.host_group} is negative")
    if not CAP.get(gu.cap, "CM") and not q.force:
        raise ScenarioError(f"{where}: unit {quote(gu.name)} has CAP.CM=0 (caching-mode=off) with an assigned "
                            f"device: QEMU would not start (vtd_dev_set_iommu_device(): \"{CM_REQUIRED}\"); set CM "
                            "in its 'cap', or say the what-if: force = true")
    if ECAP.get(gu.ecap, "SC"):
        raise ScenarioError(f"{where}: unit {quote(gu.name)} has ECAP.SC=1 (snoop-control=on) with an assigned "
                            f"device: QEMU would abort when the guest turns its IOMMU on "
                            f"(vtd_iommu_notify_flag_changed(): \"{SC_UNSUPPORTED}\"), force or not")


def _check_qemu_sm(sc: Scenario, q: dict, units: list[UnitSpec], groups: list[GroupSpec], where: str) -> None:
    """[qemu] scalable_mode (x-scalable-mode) and flts (x-flts): refused as QEMU's
    vtd_decide_config() refuses them, and the guest unit's CAP/ECAP must be what
    vtd_cap_init() computes for them (REFERENCE-2 §15).  x-flts with the model's
    legacy VFIO container is refused as vtd_check_hiod() refuses it; nesting through
    iommufd is the viommu-nested story, not this key's."""
    gu = next(u for u in units if u.name == next(g for g in groups if g.id == sc.qemu.assigned_group).unit)
    smts = bool(ECAP.get(gu.ecap, "SMTS"))
    if "scalable_mode" not in q and "flts" not in q:
        sc.qemu.scalable_mode = smts  # a file written before the key: its ECAP says
        return
    sm = sc.qemu.scalable_mode = bool(_get(q, "scalable_mode", bool, where, False))
    if _get(q, "flts", bool, where, False):
        if not sm:
            raise ScenarioError(f"{where}: 'flts' = true (x-flts=on) without 'scalable_mode' = true: QEMU does not "
                                f"start (vtd_decide_config(): \"{FLTS_NEEDS_SM}\")")
        if sc.backend != "iommufd":
            raise ScenarioError(f"{where}: 'flts' = true (x-flts=on) with a VFIO type1 container: QEMU refuses the "
                                f"device (vtd_check_hiod_accel(): \"{FLTS_NEEDS_IOMMUFD}\"); set [vm] backend = "
                                "\"iommufd\"")
        sc.qemu.flts = True
        _check_qemu_flts(sc.qemu, gu, where)
        return
    mgaw = CAP.get(gu.cap, "MGAW") + 1
    if mgaw not in (39, 48):
        raise ScenarioError(f"{where}: unit {quote(gu.name)} has CAP.MGAW {mgaw} bits: QEMU does not start "
                            f"(vtd_decide_config(): \"{AW_BITS_SM if sm else AW_BITS_LEGACY}\")")
    if not sm:
        if smts:
            raise ScenarioError(f"{where}: 'scalable_mode' = false but unit {quote(gu.name)} has ECAP.SMTS=1: QEMU "
                                "sets SMTS only with x-scalable-mode=on (vtd_cap_init())")
        return
    if not (CAP.get(gu.cap, "DRD") and CAP.get(gu.cap, "DWD")):
        raise ScenarioError(f"{where}: unit {quote(gu.name)} has no CAP.DRD/DWD (dma-drain=off): QEMU does not start "
                            f"(vtd_decide_config(): \"{SM_NEEDS_DRAIN}\")")
    missing = [b for b in ECAP_SM_BITS if not ECAP.get(gu.ecap, b)]
    if missing or ECAP.get(gu.ecap, "FLTS"):
        want = gu.ecap & ~(1 << 47)
        for b in ECAP_SM_BITS:
            want |= 1 << ECAP.field(b).lo
        what = f"lacks {'|'.join(missing)}" if missing else "has FLTS (that is x-flts)"
        raise ScenarioError(f"{where}: 'scalable_mode' = true but unit {quote(gu.name)}'s ECAP {gu.ecap:#x} {what}: "
                            f"x-scalable-mode=on without x-flts reports SMTS|SRS|SLTS (vtd_cap_init()), "
                            f"ECAP {want:#x}")


def _check_qemu_flts(q: QemuSpec, gu: UnitSpec, where: str) -> None:
    """x-scalable-mode=on,x-flts=on: vtd_decide_config() wants aw-bits 48 and dma-drain;
    vtd_cap_init() then reports `VTD_ECAP_SMTS | VTD_ECAP_FSTS` (not SRS, not SLTS:
    the `else if (s->scalable_mode)` branch is skipped) and CAP.FS1GP iff fs1gp."""
    mgaw = CAP.get(gu.cap, "MGAW") + 1
    if mgaw != 48:
        raise ScenarioError(f"{where}: unit {quote(gu.name)} has CAP.MGAW {mgaw} bits: QEMU does not start "
                            f"(vtd_decide_config(): \"{AW_BITS_FLTS}\")")
    if not (CAP.get(gu.cap, "DRD") and CAP.get(gu.cap, "DWD")):
        raise ScenarioError(f"{where}: unit {quote(gu.name)} has no CAP.DRD/DWD (dma-drain=off): QEMU does not start "
                            f"(vtd_decide_config(): \"{SM_NEEDS_DRAIN}\")")
    want_ecap = gu.ecap & ~(1 << ECAP.field("SRS").lo | 1 << ECAP.field("SLTS").lo)
    want_ecap |= 1 << ECAP.field("SMTS").lo | 1 << ECAP.field("FLTS").lo
    if gu.ecap != want_ecap:
        raise ScenarioError(f"{where}: 'flts' = true but unit {quote(gu.name)}'s ECAP {gu.ecap:#x} is not what "
                            f"x-flts=on reports: SMTS|FLTS, without SRS and SLTS (vtd_cap_init()), ECAP {want_ecap:#x}")
    fs1gp = 1 << CAP.field("FL1GP").lo
    want_cap = gu.cap | fs1gp if q.fs1gp else gu.cap & ~fs1gp
    if gu.cap != want_cap:
        raise ScenarioError(f"{where}: 'fs1gp' = {str(q.fs1gp).lower()} but unit {quote(gu.name)}'s CAP "
                            f"{gu.cap:#x} has FS1GP (bit 56) = {CAP.get(gu.cap, 'FL1GP')}: vtd_cap_init() sets it "
                            f"iff fs1gp, CAP {want_cap:#x}")


def _check_table_room(sc: Scenario, where: str) -> None:
    """The pages built at boot (per unit a root table and an invalidation queue, context
    tables, each attached group's domain, generated mappings) must fit in the page-table
    memory of their world, or the machine would run out before the first command."""
    for level in {u.level for u in sc.units}:
        size = sc.memory if level == sc.units[0].level else 1 << 39  # as the machine sizes its worlds
        room = (min(size, TABLES_LIMIT) - TABLES_BASE) >> 12
        names = {u.name for u in sc.units if u.level == level}
        mine = [g for g in sc.groups if g.unit in names]
        need = 2 * len(names) + len({(g.unit, d.source_id >> 8) for g in mine for d in g.devices})
        need += sum(g.attached for g in mine) + (2 if sc.qemu and sc.qemu.host_unit in names else 0)
        # Scalable mode: a second context table per bus (UCTP), a PASID directory per
        # device at probe (intel_pasid_alloc_table()) and a PASID table per attached one.
        sm_units = {u.name for u in sc.units if u.name in names and sc.unit_sm(u)}
        sm_groups = [g for g in mine if g.unit in sm_units]
        need += len({(g.unit, d.source_id >> 8) for g in sm_groups for d in g.devices})
        need += sum(len(g.devices) * (1 + g.attached) for g in sm_groups)
        spec = sc.generate
        if spec is not None and spec.map_size and spec.unit in names:
            leaves = spec.share // spec.page
            need += spec.devices * (leaves // 512 + leaves // (512 * 512) + 4)
        if need > room:
            raise ScenarioError(f"{where}: 'memory' = {fmt_size(sc.memory)} leaves room for {room:,} page-table "
                                f"pages; what is attached at boot needs about {need:,}")


# 16 Mi leaf entries: 64 GiB in 4 KiB pages, some 128 MiB of page tables.
MAX_GENERATED_ENTRIES = 1 << 24


def _generate(groups: list[GroupSpec], seen: dict[str, str], spec: GenerateSpec, unit_names: set[str]) -> None:
    where, n = spec.where, spec.devices
    if not 1 <= n <= 65536:
        raise ScenarioError(f"{where}: 'devices' = {n} is outside 1..65536")
    if spec.unit not in unit_names:
        raise ScenarioError(f"{where}: unknown unit {quote(spec.unit)}")
    if not 0 <= spec.first_bus <= 0xFF or spec.first_bus + (n - 1) // 32 > 0xFF:
        raise ScenarioError(f"{where}: {n} devices from bus {spec.first_bus:#x} run past bus 0xff")
    spec.first_group = start = max((g.id for g in groups), default=-1) + 1
    for i in range(n):
        sid = ((spec.first_bus + i // 32) << 8) | ((i % 32) << 3)
        key = f"{spec.unit}/{sid}"
        if key in seen:
            raise ScenarioError(f"{where}: generated device {bdf_str(sid)} is already in {seen[key]}")
        seen[key] = f"group {start + i}"
        groups.append(GroupSpec(start + i, spec.unit, [DeviceSpec(sid, f"function {i}", spec.ats)], spec.attached))


def _check_map(sc: Scenario, spec: GenerateSpec) -> None:
    if not spec.map_size:
        return
    where, n, page = spec.where, spec.devices, spec.page
    if sc.owner != "driver":
        raise ScenarioError(f"{where}: 'map' needs a scenario whose host kernel owns the groups (owner = \"driver\", "
                            f"like server): here a VM's VFIO container takes them")
    if not spec.attached:
        raise ScenarioError(f"{where}: 'map' needs attached = true: a detached group has no domain to map into")
    if spec.map_size % (n * page):
        raise ScenarioError(f"{where}: {fmt_size(spec.map_size)} over {n} domain(s) is not a whole number of "
                            f"{fmt_size(page)} pages per domain")
    entries = spec.map_size // page
    if entries > MAX_GENERATED_ENTRIES:
        raise ScenarioError(f"{where}: {fmt_size(spec.map_size)} in {fmt_size(page)} pages is {entries:,} leaf "
                            f"entries; the generator stops at {MAX_GENERATED_ENTRIES:,} (use larger pages)")
    if spec.map_size > sc.memory:
        raise ScenarioError(f"{where}: mapping {fmt_size(spec.map_size)} needs that much RAM; the scenario has "
                            f"{fmt_size(sc.memory)}")


def regenerate(sc: Scenario, devices: int | None, map_spec: str | None) -> None:
    """Apply --devices / --map: replace the scenario's generated groups."""
    if sc.owner != "driver":
        flag = "--devices" if devices is not None else "--map"
        raise ScenarioError(f"{flag}: the {sc.name} scenario's groups go to a VM's VFIO container, which would "
                            "share domains; generated devices need a scenario whose kernel owns them (server)")
    old = sc.generate
    if old is None:
        if devices is None:
            raise ScenarioError(f"--map: the {sc.name} scenario generates no devices; add --devices N")
        buses = [g.devices[0].source_id >> 8 for g in sc.groups if g.unit == sc.units[0].name]
        old = GenerateSpec(devices, max(buses, default=0) + 1, sc.units[0].name)
    first = old.first_group if sc.generate is not None else None
    keep = [g for g in sc.groups if first is None or g.id < first or g.id >= first + old.devices]
    spec = GenerateSpec(devices if devices is not None else old.devices, old.first_bus, old.unit, old.attached,
                        old.map_size, old.page, where="--devices" if devices is not None else "--map", ats=old.ats)
    if map_spec is not None:
        try:
            spec.map_size, spec.page = parse_map_spec(map_spec, "--map")
        except ValueError as exc:
            raise ScenarioError(str(exc)) from None
    seen = {f"{g.unit}/{d.source_id}": f"group {g.id}" for g in keep for d in g.devices}
    _generate(keep, seen, spec, {u.name for u in sc.units})
    if map_spec is not None:  # what follows checks the mapping
        spec.where = "--map"
    sc.groups = keep
    sc.generate = spec
    _check_map(sc, spec)
    _check_table_room(sc, spec.where)
