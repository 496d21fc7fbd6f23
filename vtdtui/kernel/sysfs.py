"""A machine's IOMMU units, groups and devices, read from its sysfs (DESIGN.md, "The
kernel's own text, in and out": `vtdtui import ROOT`, `vtdtui --scenario live`).

ROOT is a folder holding `sys/` as the kernel shows it ("/" for the running machine,
or a copy made as README "Your own machine" says).  What is read, in the kernel's
formats:

- units: `sys/class/iommu/dmar*/intel-iommu/{version,address,cap,ecap,
  domains_supported,domains_used}`, written by drivers/iommu/intel/iommu.c
  `version_show` ("%d:%d\\n", DMAR_VER_MAJOR/MINOR of the VER register),
  `address_show`, `cap_show`, `ecap_show` (each "%llx\\n": hex, no 0x),
  `domains_supported_show` ("%ld\\n", cap_ndoms) and `domains_used_show` ("%d\\n");
  the attribute group is named "intel-iommu" (intel_iommu_group), which tells an Intel
  unit from another IOMMU class member (an AMD ivhd, virtio-iommu...);
- the devices behind each unit: the names of the links in `sys/class/iommu/<unit>/
  devices/` (iommu-sysfs.c iommu_device_link: one link per device, named dev_name(),
  "0000:00:02.0" for PCI);
- groups: `sys/kernel/iommu_groups/<N>/devices/` (iommu.c iommu_group_add_device:
  links named dev_name()) and `<N>/type` (iommu_group_show_type: "blocked",
  "identity", "unmanaged", "DMA", "DMA-FQ" or "unknown", then "\\n"; kernels before
  the 2019 fix printed "DMA" without the newline);
- names: `sys/bus/pci/devices/<dev>/{class,vendor,device}` (drivers/pci/pci-sysfs.c
  pci_config_attr: "0x%06x\\n", "0x%04x\\n", "0x%04x\\n") and pci.ids where present.

Safety (README, "Guarantees"): every path is resolved here, component by component
(`_Tree.resolve`): a symbolic link is read with os.readlink and followed only while it
stays inside ROOT, at most MAX_LINK_HOPS times (a loop ends there); a file is opened
with O_NOFOLLOW|O_NONBLOCK and read only when it is a regular file, at most one page
(MAX_ATTR_BYTES: a sysfs attribute is one page), so /dev/zero or a FIFO linked into the
tree is refused at once.  Directory listings stop at the limits of vtdtui/limits.py.
Text read is never used as a path; names of links are only matched against the PCI
address pattern.  A part that is missing, unreadable or not in the kernel's format is
reported as unknown (None, with a line in `problems`), never guessed.

The model is PCI segment 0 (hw/entries.parse_bdf): devices on other segments and
non-PCI devices (ACPI namespace devices, "INT33C0:00") are listed in `skipped` with
the reason.
"""

from __future__ import annotations

import itertools
import os
import re
import stat
from collections import deque
from dataclasses import dataclass, field

from ..hw.regs import CAP, ECAP
from ..limits import MAX_DEVICES, MAX_GROUPS, MAX_NAME_CHARS, MAX_UNITS, LimitError, read_bounded
from ..textsafe import clip, printable, quote

# --- limits of this module (not in limits.py, which is shared) -----------------------
# A sysfs attribute is at most one page (sysfs_emit writes into a PAGE_SIZE buffer).
MAX_ATTR_BYTES = 4096
# Symbolic links followed while resolving one path: Linux's own limit (MAXSYMLINKS 40).
MAX_LINK_HOPS = 40
# pci.ids is some 1.4 MiB (2024); 8 MiB leaves room for growth and stops /dev/zero.
MAX_PCI_IDS_BYTES = 8 << 20
# Entries listed from one sysfs folder: a group or unit folder holds one link per
# device, so the whole tree's MAX_DEVICES is the bound; the iommu class a few units.
MAX_DIR_ENTRIES = MAX_DEVICES

# Where pci.ids lives (pciutils: /usr/share/misc; hwdata: /usr/share/hwdata), looked
# for inside ROOT first (a copy may carry its own), then on this machine.
PCI_IDS_PATHS = ("usr/share/misc/pci.ids", "usr/share/hwdata/pci.ids")

CLASS_IOMMU = "sys/class/iommu"
IOMMU_GROUPS = "sys/kernel/iommu_groups"
PCI_DEVICES = "sys/bus/pci/devices"

# dev_name() of a PCI device: pci_setup_device() sets "%04x:%02x:%02x.%d".
_PCI_NAME = re.compile(r"([0-9a-f]{4}):([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])")
_HEX_LLX = re.compile(r"[0-9a-f]{1,16}")            # "%llx"
_VERSION = re.compile(r"(\d{1,10}):(\d{1,10})")      # "%d:%d"
_DECIMAL = re.compile(r"-?\d{1,20}")                 # "%ld", "%d"
_GROUP_ID = re.compile(r"\d{1,10}")                  # iommu_group_alloc: kobject "%d"
GROUP_TYPES = ("blocked", "identity", "unmanaged", "DMA", "DMA-FQ", "unknown")

# The ECAP/CAP bits the summary shows per unit (what decides the seed stories).
HIGHLIGHTS = (("ECAP", "SC"), ("ECAP", "C"), ("ECAP", "SMTS"), ("ECAP", "FLTS"), ("ECAP", "PASID"),
              ("CAP", "CM"))

# PCI base classes and the common subclasses, with the names pci.ids gives them (PCI
# Code and ID Assignment Specification); used when pci.ids is not there.
PCI_CLASSES = {
    0x00: "Unclassified device", 0x01: "Mass storage controller", 0x02: "Network controller",
    0x03: "Display controller", 0x04: "Multimedia controller", 0x05: "Memory controller", 0x06: "Bridge",
    0x07: "Communication controller", 0x08: "Generic system peripheral", 0x09: "Input device controller",
    0x0A: "Docking station", 0x0B: "Processor", 0x0C: "Serial bus controller", 0x0D: "Wireless controller",
    0x0E: "Intelligent controller", 0x0F: "Satellite communications controller", 0x10: "Encryption controller",
    0x11: "Signal processing controller", 0x12: "Processing accelerators", 0x13: "Non-Essential Instrumentation",
    0x40: "Coprocessor", 0xFF: "Unassigned class",
}
PCI_SUBCLASSES = {
    0x0101: "IDE interface", 0x0104: "RAID bus controller", 0x0106: "SATA controller",
    0x0107: "Serial Attached SCSI controller", 0x0108: "Non-Volatile memory controller",
    0x0200: "Ethernet controller", 0x0280: "Network controller",
    0x0300: "VGA compatible controller", 0x0302: "3D controller", 0x0380: "Display controller",
    0x0400: "Multimedia video controller", 0x0401: "Multimedia audio controller", 0x0403: "Audio device",
    0x0500: "RAM memory", 0x0580: "Memory controller",
    0x0600: "Host bridge", 0x0601: "ISA bridge", 0x0604: "PCI bridge", 0x0680: "Bridge",
    0x0700: "Serial controller", 0x0780: "Communication controller",
    0x0805: "SD Host controller", 0x0806: "IOMMU", 0x0880: "System peripheral",
    0x0C03: "USB controller", 0x0C05: "SMBus", 0x0C80: "Serial bus controller",
    0x1180: "Signal processing controller", 0x1200: "Processing accelerators",
}


class SysfsError(ValueError):
    """ROOT cannot be read as a sysfs with Intel IOMMU units; str() names the place."""


class NotSysfs(SysfsError):
    """ROOT has no sys/class/iommu."""


class NoIntelUnit(SysfsError):
    """sys/class/iommu is there but holds no Intel unit (no dmar*/intel-iommu)."""


@dataclass
class Unit:
    name: str
    address: int | None = None
    cap: int | None = None
    ecap: int | None = None
    version: str | None = None          # "major:minor", as version_show prints it
    domains_supported: int | None = None
    domains_used: int | None = None
    devices: list[str] = field(default_factory=list)   # bdf "bb:dd.f", segment 0 PCI only
    problems: list[str] = field(default_factory=list)

    def bit(self, register: str, name: str) -> int | None:
        """A CAP or ECAP field, None when that register is unknown."""
        value = self.cap if register == "CAP" else self.ecap
        return None if value is None else (CAP if register == "CAP" else ECAP).get(value, name)


@dataclass
class Device:
    bdf: str                         # "bb:dd.f" (segment 0000)
    unit: str | None = None
    group: int | None = None
    pci_class: int | None = None     # 24-bit class code
    vendor: int | None = None
    device: int | None = None
    class_name: str | None = None
    vendor_name: str | None = None
    device_name: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def source_id(self) -> int:
        bus, rest = self.bdf.split(":")
        dev, fn = rest.split(".")
        return (int(bus, 16) << 8) | (int(dev, 16) << 3) | int(fn)

    @property
    def name(self) -> str:
        """How lspci would call it, shortened: "VGA compatible controller: Alder Lake-P
        GT2", or with [vendor:device] when pci.ids does not know the device."""
        ids = f"[{self.vendor:04x}:{self.device:04x}]" if self.vendor is not None and self.device is not None else ""
        if self.device_name:
            what = self.device_name
        elif self.vendor_name:
            what = f"{self.vendor_name} device {ids}".strip()
        else:
            what = f"device {ids}".strip() if ids else ""
        head = self.class_name or ("PCI device" if what else "unknown device")
        return clip(f"{head}: {what}" if what else head, MAX_NAME_CHARS)


@dataclass
class Group:
    id: int
    type: str | None = None
    devices: list[str] = field(default_factory=list)   # bdf, segment 0 PCI only
    problems: list[str] = field(default_factory=list)


@dataclass
class Skipped:
    what: str      # "device 0001:00:00.0", "unit ivhd0", "group 7"
    reason: str


@dataclass
class SysfsMachine:
    root: str
    units: list[Unit]
    groups: list[Group]
    devices: dict[str, Device]       # by bdf, sorted by source id
    skipped: list[Skipped]
    pci_ids: str | None = None       # the pci.ids file read, if any

    def unit(self, name: str) -> Unit | None:
        return next((u for u in self.units if u.name == name), None)


# --- the tree: paths resolved inside ROOT ----------------------------------------------

class _Outside(Exception):
    """A path that cannot be resolved inside ROOT; str() says why."""


class _Tree:
    """ROOT, with every relative path resolved by hand so that no link leads out of it."""

    def __init__(self, root: str):
        self.root = os.path.realpath(root)
        self._cache: dict[str, str] = {}

    def resolve(self, rel: str) -> str:
        """The real path of ROOT/rel, each link followed only inside ROOT; _Outside when
        a part is missing, a link leaves ROOT, or links nest more than MAX_LINK_HOPS."""
        hit = self._cache.get(rel)
        if hit is not None:
            return hit
        parts: deque[str] = deque(p for p in rel.split("/") if p)
        done: list[str] = []
        hops = 0
        while parts:
            part = parts.popleft()
            if part == ".":
                continue
            if part == "..":
                if not done:
                    if self.root == "/":  # "/.." is "/"
                        continue
                    raise _Outside("a link leads out of the tree")
                done.pop()
                continue
            here = os.path.join(self.root, *done, part)
            try:
                st = os.lstat(here)
            except OSError as exc:
                raise _Outside(os.strerror(exc.errno) if exc.errno else str(exc)) from None
            if not stat.S_ISLNK(st.st_mode):
                done.append(part)
                continue
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise _Outside(f"more than {MAX_LINK_HOPS} links (a loop?)")
            try:
                target = os.readlink(here)
            except OSError as exc:
                raise _Outside(os.strerror(exc.errno) if exc.errno else str(exc)) from None
            if target.startswith("/"):
                if self.root != "/":  # a copy's absolute link points at this machine, not the copy
                    raise _Outside("an absolute link leads out of the tree")
                done = []
            parts.extendleft(reversed([p for p in target.split("/") if p]))
        real = os.path.join(self.root, *done)
        self._cache[rel] = real
        return real

    def read_attr(self, rel: str) -> str:
        """The text of one attribute file (ASCII, at most MAX_ATTR_BYTES), or _Outside."""
        path = self.resolve(rel)
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            raise _Outside(os.strerror(exc.errno) if exc.errno else str(exc)) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # /dev/zero, a FIFO, a socket, a folder
                raise _Outside("not a regular file")
            try:
                data = os.read(fd, MAX_ATTR_BYTES + 1)
            except OSError as exc:  # sysfs refuses some reads (EIO, EPERM) on a live machine
                raise _Outside(os.strerror(exc.errno) if exc.errno else str(exc)) from None
        finally:
            os.close(fd)
        if len(data) > MAX_ATTR_BYTES:
            raise _Outside(f"larger than {MAX_ATTR_BYTES} bytes (MAX_ATTR_BYTES: a sysfs attribute is one page)")
        try:
            return data.decode("ascii")
        except UnicodeDecodeError:
            raise _Outside("not text") from None

    def list_dir(self, rel: str, limit: int, limit_name: str) -> list[str] | None:
        """The names in folder ROOT/rel, sorted; None when it is not there; LimitError
        past `limit` entries (read no further)."""
        try:
            path = self.resolve(rel)
        except _Outside:
            return None
        try:
            with os.scandir(path) as it:
                names = [e.name for e in itertools.islice(it, limit + 1)]
        except OSError:
            return None
        if len(names) > limit:
            raise LimitError(f"{rel}: more than {limit:,} entries ({limit_name})")
        return sorted(names)


# --- attribute formats -----------------------------------------------------------------

def _one_line(text: str, rel: str, *, newline_optional: bool = False) -> str:
    """The value of a one-value attribute: the text without its final "\\n"."""
    if text.endswith("\n"):
        text = text[:-1]
    elif not newline_optional:
        raise _Outside(f"{quote(text, 40)} does not end in a newline, as the kernel's attributes do")
    if "\n" in text:
        raise _Outside(f"{quote(text, 40)} is more than one line")
    return text


def parse_llx(text: str, rel: str) -> int:
    """A value printed with "%llx\\n" (address_show, cap_show, ecap_show)."""
    value = _one_line(text, rel)
    if not _HEX_LLX.fullmatch(value):
        raise _Outside(f"{quote(value, 40)} is not the kernel's %llx (hex digits, no 0x)")
    return int(value, 16)


def parse_version(text: str, rel: str) -> str:
    value = _one_line(text, rel)
    if not _VERSION.fullmatch(value):
        raise _Outside(f"{quote(value, 40)} is not the kernel's \"%d:%d\"")
    return value


def parse_decimal(text: str, rel: str) -> int:
    value = _one_line(text, rel)
    if not _DECIMAL.fullmatch(value):
        raise _Outside(f"{quote(value, 40)} is not a decimal number")
    return int(value)


def parse_pci_hex(text: str, rel: str, digits: int) -> int:
    """A pci_config_attr value: "0x%04x\\n" (vendor, device) or "0x%06x\\n" (class)."""
    value = _one_line(text, rel)
    if not re.fullmatch(r"0x[0-9a-f]{%d}" % digits, value):
        raise _Outside(f"{quote(value, 40)} is not the kernel's \"0x%0{digits}x\"")
    return int(value, 16)


def parse_group_type(text: str, rel: str) -> str:
    value = _one_line(text, rel, newline_optional=True)  # "DMA" had no newline before 2019
    if value not in GROUP_TYPES:
        raise _Outside(f"{quote(value, 40)} is none of {', '.join(GROUP_TYPES)} (iommu_group_show_type)")
    return value


def pci_name(name: str) -> tuple[int, str] | None:
    """(segment, "bb:dd.f") for a PCI dev_name(), else None."""
    m = _PCI_NAME.fullmatch(name)
    if m is None:
        return None
    return int(m.group(1), 16), f"{m.group(2)}:{m.group(3)}.{m.group(4)}"


# --- pci.ids -----------------------------------------------------------------------------

_IDS_LINE = re.compile(r"(\t{0,2})([0-9a-fA-F]{2,4})(?: [0-9a-fA-F]{4})?\s+(\S.*)")
_IDS_CLASS = re.compile(r"C ([0-9a-fA-F]{2})\s+(\S.*)")


def parse_pci_ids(text: str, wanted: set[tuple[int, int]]) -> tuple[dict[int, str], dict[tuple[int, int], str],
                                                                  dict[int, str]]:
    """(vendor names, (vendor, device) names, class names by 16-bit class:subclass or
    8-bit base << 8 | 0xff...) from pci.ids: only the vendors of `wanted` are kept.

    pci.ids: "vvvv  Vendor", then "\\tdddd  Device", "\\t\\tssss ssss  Subsystem";
    after the vendors "C cc  Class", "\\tss  Subclass", "\\t\\tpp  Prog-if"."""
    vendors_wanted = {v for v, _ in wanted}
    vendors: dict[int, str] = {}
    devices: dict[tuple[int, int], str] = {}
    classes: dict[int, str] = {}   # base class under key base | 0x10000; subclass under base<<8|sub
    vendor: int | None = None
    base: int | None = None
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        if line.startswith("C "):
            m = _IDS_CLASS.fullmatch(line.rstrip())
            vendor = None
            base = int(m.group(1), 16) if m else None
            if m:
                classes[base | 0x10000] = clip(m.group(2), MAX_NAME_CHARS)
            continue
        m = _IDS_LINE.fullmatch(line.rstrip())
        if m is None:
            continue
        tabs, ident, name = len(m.group(1)), int(m.group(2), 16), clip(m.group(3), MAX_NAME_CHARS)
        if tabs == 0 and len(m.group(2)) == 4:
            vendor, base = ident, None
            if ident in vendors_wanted:
                vendors[ident] = name
        elif tabs == 1 and vendor is not None and (vendor, ident) in wanted:
            devices[(vendor, ident)] = name
        elif tabs == 1 and base is not None:
            classes[(base << 8) | ident] = name
    return vendors, devices, classes


def _read_pci_ids(tree: _Tree, paths: tuple[str, ...] | None) -> tuple[str, str] | None:
    """(text, where) of the first pci.ids found: inside ROOT, then on this machine."""
    candidates: list[tuple[str, str]] = []
    if paths is None:
        candidates += [("tree", p) for p in PCI_IDS_PATHS]
        candidates += [("host", "/" + p) for p in PCI_IDS_PATHS]
    else:
        candidates += [("host", p) for p in paths]
    for kind, p in candidates:
        try:
            path = tree.resolve(p) if kind == "tree" else p
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            data = read_bounded(path, MAX_PCI_IDS_BYTES, "MAX_PCI_IDS_BYTES")
        except (_Outside, OSError, LimitError):
            continue
        return data.decode("utf-8", errors="replace"), path
    return None


# --- reading -----------------------------------------------------------------------------

def read_sysfs(root: str, *, pci_ids: tuple[str, ...] | None = None) -> SysfsMachine:
    """Read ROOT's units, groups and devices.  `pci_ids`: the pci.ids files to try
    (default: ROOT's usr/share/{misc,hwdata}/pci.ids, then this machine's).

    SysfsError when ROOT is not a folder, has no sys/class/iommu (NotSysfs) or no Intel
    unit (NoIntelUnit); LimitError past a limit.  Everything else read wrong is kept as
    unknown with a line in the part's `problems` or in `skipped`."""
    if not os.path.isdir(root):
        raise SysfsError(f"{root}: not a folder")
    tree = _Tree(root)
    names = tree.list_dir(CLASS_IOMMU, MAX_UNITS * 4, "MAX_UNITS")
    if names is None:
        raise NotSysfs(f"{root}: no {CLASS_IOMMU} here: not a sysfs root")
    skipped: list[Skipped] = []
    units: list[Unit] = []
    for name in sorted(names, key=_natural):
        where = f"{CLASS_IOMMU}/{name}"
        try:
            tree.resolve(f"{where}/intel-iommu")
        except _Outside as exc:
            skipped.append(Skipped(f"unit {clip(name, 40)}", f"not an Intel VT-d unit: no intel-iommu/ ({exc})"))
            continue
        if len(name) > MAX_NAME_CHARS:
            skipped.append(Skipped(f"unit {clip(name, 40)}", f"name longer than {MAX_NAME_CHARS} (MAX_NAME_CHARS)"))
            continue
        units.append(_read_unit(tree, name, skipped))
    if not units:
        raise NoIntelUnit(f"{root}: {CLASS_IOMMU} holds no Intel VT-d unit (dmar*/intel-iommu)")
    if len(units) > MAX_UNITS:
        raise LimitError(f"{CLASS_IOMMU}: {len(units)} units, more than {MAX_UNITS} (MAX_UNITS)")

    devices: dict[str, Device] = {}
    for u in units:
        for bdf in u.devices:
            if bdf in devices:  # one device behind two units: the kernel links it once
                u.problems.append(f"device {bdf} is also listed behind unit {devices[bdf].unit}")
                continue
            devices[bdf] = Device(bdf, unit=u.name)
            if len(devices) > MAX_DEVICES:
                raise LimitError(f"{CLASS_IOMMU}: more than {MAX_DEVICES:,} devices (MAX_DEVICES)")
    groups = _read_groups(tree, devices, skipped)
    for bdf in sorted(devices, key=lambda b: devices[b].source_id):
        _read_pci(tree, devices[bdf])
        if devices[bdf].group is None:
            skipped.append(Skipped(f"device {bdf}", f"in no group under {IOMMU_GROUPS}"))
    ordered = {b: devices[b] for b in sorted(devices, key=lambda b: devices[b].source_id)}
    found = _read_pci_ids(tree, pci_ids)
    if found is not None:
        _name_from_ids(ordered, found[0])
    for d in ordered.values():
        if d.class_name is None and d.pci_class is not None:
            d.class_name = PCI_SUBCLASSES.get(d.pci_class >> 8) or PCI_CLASSES.get(d.pci_class >> 16)
    return SysfsMachine(os.path.abspath(root), units, groups, ordered, skipped,
                        None if found is None else found[1])


def _natural(name: str) -> tuple:
    """dmar2 before dmar10: the kernel numbers units in seq_id order (dmar.c alloc_iommu)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _read_unit(tree: _Tree, name: str, skipped: list[Skipped]) -> Unit:
    u = Unit(name)
    base = f"{CLASS_IOMMU}/{name}/intel-iommu"
    for attr, parse, slot in (("version", parse_version, "version"), ("address", parse_llx, "address"),
                              ("cap", parse_llx, "cap"), ("ecap", parse_llx, "ecap"),
                              ("domains_supported", parse_decimal, "domains_supported"),
                              ("domains_used", parse_decimal, "domains_used")):
        rel = f"{base}/{attr}"
        try:
            setattr(u, slot, parse(tree.read_attr(rel), rel))
        except _Outside as exc:
            u.problems.append(f"{rel}: {exc}: unknown")
    listed = tree.list_dir(f"{CLASS_IOMMU}/{name}/devices", MAX_DIR_ENTRIES, "MAX_DEVICES")
    if listed is None:
        u.problems.append(f"{CLASS_IOMMU}/{name}/devices: not there: the devices behind it are unknown")
        return u
    for dev in listed:
        seg_bdf = pci_name(dev)
        if seg_bdf is None:
            skipped.append(Skipped(f"device {clip(dev, 40)}", f"behind {name}: not a PCI device (the model is PCI)"))
        elif seg_bdf[0] != 0:
            skipped.append(Skipped(f"device {dev}", f"behind {name}: PCI segment {seg_bdf[0]:04x} "
                                                    "(the model is segment 0000)"))
        else:
            u.devices.append(seg_bdf[1])
    u.devices.sort(key=lambda b: Device(b).source_id)
    return u


def _read_groups(tree: _Tree, devices: dict[str, Device], skipped: list[Skipped]) -> list[Group]:
    ids = tree.list_dir(IOMMU_GROUPS, MAX_GROUPS, "MAX_GROUPS")
    if ids is None:
        skipped.append(Skipped(IOMMU_GROUPS, "not there: no group is known"))
        return []
    groups: list[Group] = []
    for gid_text in ids:
        if not _GROUP_ID.fullmatch(gid_text):
            skipped.append(Skipped(f"group {clip(gid_text, 40)}", "not a group number (iommu_group_alloc names "
                                                                   "them by number)"))
            continue
        g = Group(int(gid_text))
        rel = f"{IOMMU_GROUPS}/{gid_text}/type"
        try:
            g.type = parse_group_type(tree.read_attr(rel), rel)
        except _Outside as exc:
            g.problems.append(f"{rel}: {exc}: unknown")
        listed = tree.list_dir(f"{IOMMU_GROUPS}/{gid_text}/devices", MAX_DIR_ENTRIES, "MAX_DEVICES")
        if listed is None:
            g.problems.append(f"{IOMMU_GROUPS}/{gid_text}/devices: not there: its devices are unknown")
            listed = []
        for dev in listed:
            seg_bdf = pci_name(dev)
            if seg_bdf is None:
                skipped.append(Skipped(f"device {clip(dev, 40)}", f"in group {g.id}: not a PCI device"))
            elif seg_bdf[0] != 0:
                skipped.append(Skipped(f"device {dev}", f"in group {g.id}: PCI segment {seg_bdf[0]:04x} "
                                                        "(the model is segment 0000)"))
            elif seg_bdf[1] not in devices:
                g.devices.append(seg_bdf[1])
                g.problems.append(f"device {seg_bdf[1]} is behind no unit listed in {CLASS_IOMMU}/*/devices")
            else:
                g.devices.append(seg_bdf[1])
                devices[seg_bdf[1]].group = g.id
        g.devices.sort(key=lambda b: Device(b).source_id)
        groups.append(g)
    groups.sort(key=lambda g: g.id)
    return groups


def _read_pci(tree: _Tree, d: Device) -> None:
    base = f"{PCI_DEVICES}/0000:{d.bdf}"
    try:
        tree.resolve(base)
    except _Outside as exc:  # one line for the folder, not one per attribute
        d.problems.append(f"{base}: {exc}: class, vendor and device unknown")
        return
    for attr, digits, slot in (("class", 6, "pci_class"), ("vendor", 4, "vendor"), ("device", 4, "device")):
        rel = f"{base}/{attr}"
        try:
            setattr(d, slot, parse_pci_hex(tree.read_attr(rel), rel, digits))
        except _Outside as exc:
            d.problems.append(f"{rel}: {exc}: unknown")


def _name_from_ids(devices: dict[str, Device], text: str) -> None:
    wanted = {(d.vendor, d.device) for d in devices.values() if d.vendor is not None and d.device is not None}
    vendors, names, classes = parse_pci_ids(text, wanted)
    for d in devices.values():
        if d.vendor is not None:
            d.vendor_name = vendors.get(d.vendor)
            if d.device is not None:
                d.device_name = names.get((d.vendor, d.device))
        if d.pci_class is not None:
            d.class_name = classes.get(d.pci_class >> 8) or classes.get((d.pci_class >> 16) | 0x10000)


# --- output: JSON and the summary ----------------------------------------------------------

def _hex(v: int | None) -> str | None:
    return None if v is None else f"{v:#x}"


def highlights(u: Unit) -> dict[str, int | None]:
    return {name: u.bit(reg, name) for reg, name in HIGHLIGHTS}


def group_units(m: SysfsMachine, g: Group) -> list[str]:
    """The units behind which the group's devices sit, sorted (normally one)."""
    return sorted({m.devices[b].unit for b in g.devices if b in m.devices and m.devices[b].unit}, key=_natural)


def to_json(m: SysfsMachine) -> dict:
    """`vtdtui import ROOT --json`: README "Your own machine" documents the keys."""
    return {
        "schema": "vtdtui.sysfs/1",
        "root": m.root,
        "pci_ids": m.pci_ids,
        "units": [{"name": u.name, "address": _hex(u.address), "cap": _hex(u.cap), "ecap": _hex(u.ecap),
                   "version": u.version, "domains_supported": u.domains_supported, "domains_used": u.domains_used,
                   "highlights": highlights(u), "devices": list(u.devices), "problems": list(u.problems)}
                  for u in m.units],
        "groups": [{"id": g.id, "type": g.type, "units": group_units(m, g), "devices": list(g.devices),
                    "problems": list(g.problems)} for g in m.groups],
        "devices": [{"bdf": d.bdf, "unit": d.unit, "group": d.group, "class": _hex(d.pci_class),
                     "vendor": _hex(d.vendor), "device": _hex(d.device), "class_name": d.class_name,
                     "vendor_name": d.vendor_name, "device_name": d.device_name, "name": d.name,
                     "problems": list(d.problems)} for d in m.devices.values()],
        "skipped": [{"what": s.what, "reason": s.reason} for s in m.skipped],
    }


def _flag(v: int | None) -> str:
    return "?" if v is None else ("yes" if v else "no")


def render_summary(m: SysfsMachine):
    """A rich renderable: one row per unit (CAP/ECAP highlights) and one per group,
    saying which devices sit behind a unit without snoop control."""
    from rich.console import Group as RichGroup
    from rich.table import Table
    from rich.text import Text

    parts: list = [Text(printable(f"sysfs of {m.root}"
                                  + (f" (names from {m.pci_ids})" if m.pci_ids else " (no pci.ids: class names)")),
                        style="bold")]
    units = Table(title="units", title_justify="left")
    for col in ("unit", "address", "version", "cap", "ecap", *(n for _, n in HIGHLIGHTS), "domains", "devices"):
        units.add_column(col, overflow="fold")
    for u in m.units:
        hl = highlights(u)
        domains = "?" if u.domains_used is None or u.domains_supported is None else \
            f"{u.domains_used}/{u.domains_supported}"
        # Text, not str: rich would read "[b]" in a name read from the tree as markup.
        units.add_row(Text(printable(u.name)), _hex(u.address) or "?", Text(printable(u.version or "?")),
                      _hex(u.cap) or "?", _hex(u.ecap) or "?", *(_flag(hl[n]) for _, n in HIGHLIGHTS), domains,
                      str(len(u.devices)))
    parts.append(units)
    groups = Table(title="groups: which devices sit behind a unit without snoop control (ECAP.SC)",
                   title_justify="left")
    for col in ("group", "type", "unit", "SC", "devices"):
        groups.add_column(col, overflow="fold")
    for g in m.groups:
        names = group_units(m, g)
        scs = {m.unit(n).bit("ECAP", "SC") for n in names}
        sc = "?" if not names or None in scs else ("mixed" if len(scs) > 1 else _flag(scs.pop()))
        devs = "\n".join(printable(f"{b} {m.devices[b].name}" if b in m.devices else b) for b in g.devices) or "-"
        groups.add_row(str(g.id), Text(printable(g.type or "?")), Text(printable(", ".join(names) or "?")),
                       Text(sc, style="bold red" if sc == "no" else ""), Text(devs))
    parts.append(groups)
    notes = [f"{s.what}: {s.reason}" for s in m.skipped]
    notes += [p for u in m.units for p in u.problems] + [p for g in m.groups for p in g.problems]
    notes += [p for d in m.devices.values() for p in d.problems]
    if notes:
        parts.append(Text("not modelled or unknown:", style="bold"))
        parts.extend(Text(printable(f"  {clip(n, 200)}")) for n in notes)
    return RichGroup(*parts)


__all__ = ["SysfsError", "NotSysfs", "NoIntelUnit", "SysfsMachine", "Unit", "Group", "Device", "Skipped",
           "read_sysfs", "to_json", "render_summary", "parse_pci_ids", "group_units", "highlights"]
