"""A scenario TOML (the format of vtdtui/scenarios/*.toml, machine/scenario.py KEYS)
for a machine read from sysfs (kernel/sysfs.py): `vtdtui import ROOT --toml OUT` and
`vtdtui --scenario live`.

What sysfs gives becomes [[unit]] (name, base = the `address` attribute, cap, ecap) and
[[group]] (id, the unit its devices sit behind, devices with bdf and name).  What sysfs
does not hold is left at the scenario's defaults and said so in a comment: `haw` (the
ACPI DMAR table's Host Address Width, printed at boot as "DMAR: Host address width N"),
`[kernel] sm` (whether the kernel runs the units in scalable mode), the RAM size.  The
machine is a desktop-like host whose groups a KVM VM may take (owner "vfio", [vm] with
the mainline policy): every group starts detached, `attach N` gives one to the VM.

Left out, each with a comment saying why: a unit whose address, cap or ecap is unknown
or whose CAP.SAGAW offers no page-table depth the driver uses; a group whose devices
sit behind different units (the model puts a group behind one unit) or whose devices
are all unknown.  Skipped devices (other segments, non-PCI) are listed too.

Every text read (names, types, root path) is written as a TOML basic string with
escapes or, in a comment, through textsafe.printable (a newline in a name must not
end the comment).  Output is deterministic: units in sysfs order (dmar0, dmar1...),
groups by id, devices by bdf.
"""

from __future__ import annotations

from ..hw.regs import CAP
from ..limits import MAX_DESCRIPTION_CHARS, MAX_GROUPS, MAX_NAME_CHARS
from ..machine.scenario import Scenario, parse
from ..textsafe import clip, printable
from .sysfs import SysfsMachine, Unit, group_units, highlights

DEFAULT_HAW = 39  # machine/scenario.py's default for 'haw'


class TomlError(ValueError):
    """Nothing that makes a scenario could be read; str() says what is missing."""


def toml_string(s: str) -> str:
    """`s` as a TOML basic string: quotes, backslashes and every control character
    escaped (TOML forbids them raw), so that any name read stays one value."""
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            # A lone surrogate (a non-UTF-8 file name) cannot be encoded: write U+FFFD.
            out.append("\\uFFFD" if code >= 0xD800 else f"\\u{code:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _comment(text: str) -> str:
    return "# " + printable(clip(text, 300))


def _unit_refusal(u: Unit) -> str:
    """Why a unit cannot be a scenario [[unit]], or ''."""
    missing = [n for n, v in (("address", u.address), ("cap", u.cap), ("ecap", u.ecap)) if v is None]
    if missing:
        return f"its {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} unknown"
    if not CAP.get(u.cap, "SAGAW") & 0b1110:
        return (f"CAP.SAGAW = {CAP.get(u.cap, 'SAGAW'):#x} offers no 3-, 4- or 5-level page table "
                "(the driver would not use the unit)")
    return ""


def build(m: SysfsMachine, *, name: str, origin: str) -> str:
    """The scenario TOML text for `m`.  `name` is the scenario's name ("live"); `origin`
    says where it was read, for the comments ("/ (this machine)", "a copy in DIR").
    TomlError when no unit or no group can be written."""
    lines = [
        _comment(f"vtdtui scenario read from the sysfs of {origin} (kernel/sysfs.py, kernel/scenario_toml.py)."),
        "# Units: sys/class/iommu/dmar*/intel-iommu/{address,cap,ecap}; the devices behind each:",
        "# sys/class/iommu/dmar*/devices/; groups: sys/kernel/iommu_groups/*/{devices/,type};",
        _comment("names: sys/bus/pci/devices/*/{class,vendor,device}"
                 + (f" and {m.pci_ids}." if m.pci_ids else " (no pci.ids: class names only).")),
        "# Not in sysfs, so left at the defaults: haw (the ACPI DMAR table's Host Address Width,",
        '# "DMAR: Host address width N" at boot), [kernel] sm (scalable mode or not), memory.',
        "# A KVM VM takes the groups you attach (owner \"vfio\"); every group starts detached.",
        f"name = {toml_string(clip(name, MAX_NAME_CHARS))}",
        "description = " + toml_string(clip(f"IOMMU units and groups read from the sysfs of {origin}",
                                            MAX_DESCRIPTION_CHARS)),
        'owner = "vfio"',
        "",
        "[vm]",
        'policy = "mainline"',
        'kvm_model = "guest-pat"',
    ]
    written: set[str] = set()
    for u in m.units:
        lines.append("")
        why = _unit_refusal(u)
        if why:
            lines.append(_comment(f"unit {u.name} left out: {why}"))
            continue
        written.add(u.name)
        hl = highlights(u)
        lines += [
            "[[unit]]",
            f"name = {toml_string(u.name)}",
            f'base = "{u.address:#x}"',
            f'cap = "{u.cap:#x}"',
            f'ecap = "{u.ecap:#x}"',
            _comment(", ".join(f"{k}={v}" for k, v in hl.items())
                     + (f"; version {u.version}" if u.version else "")
                     + (f"; {u.domains_used} of {u.domains_supported} domain ids in use"
                        if u.domains_used is not None and u.domains_supported is not None else "")),
            f"# haw: not in sysfs; {DEFAULT_HAW} (the default) is assumed",
        ]
    if not written:
        raise TomlError("no unit has a known address, cap and ecap: no scenario can be written")

    groups = 0
    for g in m.groups:
        units = group_units(m, g)
        known = [b for b in g.devices if b in m.devices]
        lines.append("")
        why = ""
        if not g.devices:
            why = "no device of it could be modelled (see the skipped lines below, or its devices/ folder is missing)"
        elif not known:
            why = "none of its devices sits behind a unit listed in sys/class/iommu"
        elif len(units) > 1:
            why = f"its devices sit behind different units ({', '.join(units)}); a group is behind one unit here"
        elif units[0] not in written:
            why = f"its unit {units[0]} was left out"
        elif groups >= MAX_GROUPS:
            why = f"more than {MAX_GROUPS:,} groups (MAX_GROUPS)"
        if why:
            lines.append(_comment(f"group {g.id} left out: {why}"))
            continue
        groups += 1
        devices = ", ".join(f"{{ bdf = {toml_string(b)}, name = {toml_string(m.devices[b].name)} }}" for b in known)
        lines += ["[[group]]", f"id = {g.id}", f"unit = {toml_string(units[0])}", f"devices = [{devices}]"]
        if g.type is not None:
            lines.append(_comment(f"type {g.type}: the kernel's default domain (iommu_group_show_type)"))
        for b in g.devices:
            if b not in m.devices:
                lines.append(_comment(f"device {b} left out: behind no unit listed in sys/class/iommu"))
    if not groups:
        raise TomlError("no IOMMU group could be written (sys/kernel/iommu_groups missing, empty, or every "
                        "group left out): no scenario can be written")
    if m.skipped:
        lines.append("")
        lines += [_comment(f"skipped: {s.what}: {s.reason}") for s in m.skipped]
    return "\n".join(lines) + "\n"


def load(m: SysfsMachine, *, name: str, origin: str) -> tuple[str, Scenario]:
    """(TOML text, the Scenario it parses to), validated by machine/scenario.parse like
    any scenario file; ScenarioError names `<name>` as the place."""
    text = build(m, name=name, origin=origin)
    return text, parse(text.encode("utf-8"), f"<{name}>")
