"""A machine built from what the kernel printed (`vtdtui import PATH...`, `vtdtui --import
PATH...`; DESIGN.md "The kernel's own text, in and out").

The inputs, any mix of them, one reader per path:
- a debugfs folder (/sys/kernel/debug/iommu/intel) or one of its files (kernel/debugfs.py):
  `iommu_regset` gives each unit's registers (CAP, ECAP, RTADDR, GSTS, IQA, IQH, IQT);
  `dmar_translation_struct` the root table's address and, per device, the root entry
  (hi:lo), the context entry (hi:lo: in scalable mode its low 128 bits) and each
  present PASID entry's val[0..2]; `<dddd:bb:dd.f>[/<pasid>]/domain_translation_struct`
  (and the global file of ≤v6.6) the table address and, per leaf, the entry met at
  each level; `invalidation_queue` the queue's base, head, tail and every slot's words;
- a kernel log (kernel/dmesg.py): the DMAR unit lines (base, CAP, ECAP), the
  `dmar_fault_dump_ptes` dumps after a fault (root, context, PASID directory, PASID
  entry, one entry per level for the faulting IOVA) and the `iommu group` lines;
- a sysfs root (kernel/sysfs.py): units, devices behind them, groups and names.

What is placed where (each entry at its physical address, exactly as read):
- a root entry at RTA + bus * 16 (iommu_context_addr(): &root_entry[bus]), where RTA is
  RTADDR of the regset or the "Root Table Address" of dmar_translation_struct; a dump's
  root entry alone says nothing of where the root table is: its address stays unknown;
- a context entry at its table (the root entry's CTP, in scalable mode LCTP for devfn
  0x00-0x7f and UCTP for 0x80-0xff) + devfn * 16 (legacy) or (devfn & 0x7f) * 32
  (scalable mode, iommu_context_addr(): `devfn *= 2` over 128-bit halves);
- a PASID directory entry (dumps only) at PASIDDIRPTR + (pasid >> 6) * 8 and a PASID
  entry at the directory entry's table + (pasid & 0x3f) * 64 (intel_pasid_get_entry());
  dmar_translation_struct prints the PASID entry but not the directory entry, so where
  that entry lies is unknown unless a dump of the same device gives the directory entry;
- a page-table entry at its table + index * 8, the index being bits of the IOVA
  (pfn_level_offset()), the table the parent entry's address (dma_pte_addr(): bits 62:12
  without XD), the top table the file's `@0x...` (or, in a dump, the context entry's
  SLPTPTR, the PASID entry's FSPTPTR for PGTT=1 or SSPTPTR for PGTT=2/3);
- the invalidation queue's slot i at base + (i << qi_shift) (4 + ECAP.SMTS).

Each `domain_translation_struct` block also gives the table a device (and PASID) walks
from: `ImportedMachine.domain_tables` (DomainTable), which `translate` walks when the
unit's own path there is not in the input (no root or context entry; in scalable mode
the PASID directory entry, never printed by debugfs).

What stays unknown is listed (`ImportedMachine.imported["unknown"]`) and reads as zero:
the memory of a real machine is not here.  Nothing read is executed or used as a path.
The driver's books (domains beyond the DIDs seen, mappings, attachments) are not in any
of these files: commands that need them are refused; DMA and walks work, since the
hardware only reads tables.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field

from ..hw.entries import bdf_str
from ..hw.memory import CpuCache, PageAllocator, PhysMem
from ..hw.regs import ECAP, GSTS_TES, RTADDR_SMT
from ..hw.sm_entries import PasidEntry
from ..hw.unit import DmarUnit
from ..limits import MAX_LOG_BYTES, LimitError, read_input
from ..machine.machine import TABLES_BASE, TABLES_LIMIT, CommandError, GroupState, Machine, World
from ..machine.scenario import MAX_ADDRESS, MIN_MEMORY, DeviceSpec, GroupSpec, Scenario, UnitSpec
from ..sw.linux import DmarDomain, IntelIommuDriver
from ..textsafe import clip, printable
from . import debugfs as dfs
from .dmesg import read_kernel_log

GSTS_RTPS = 1 << 30
GSTS_QIES = 1 << 26
IQA_DW = 1 << 11
PAGE_MASK = ((1 << 64) - 1) & ~0xFFF
PTE_XD = 1 << 63          # DMA_FL_PTE_XD: dma_pte_addr() clears it
IOMMU_NO_PASID = 0
# Paths on one command line, files read from one debugfs folder, words placed.
MAX_IMPORT_PATHS = 64
MAX_DEBUGFS_FILES = 4096
MAX_IMPORT_WORDS = 1 << 23
# Not in any of the inputs: the ACPI DMAR table's Host Address Width.  The widest
# (no address bit reserved) is assumed, so that no entry faults on a guess.
ASSUMED_HAW = 52
NOT_KNOWN = "imported machine: the driver's state is not known (its domains, mappings and attachments are not " \
            "in debugfs or dmesg); walks and DMA work, since they only read tables"
_PCI_DIR = re.compile(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
_PASID_DIR = re.compile(r"[0-9a-fA-F]{1,5}$")


class ImportError_(ValueError):
    """The input cannot become a machine; str() is one line naming the place."""


@dataclass(frozen=True)
class DomainTable:
    """What a `domain_translation_struct` says of one device (and PASID): the page
    table it walks from, so that `translate` can walk it when the unit's own path
    there (root, context, PASID directory and PASID entry) is not in the input.

    The kernel (domain_translation_struct_show(), debugfs.c ≈v6.7+) prints the table
    of a present context entry (legacy: SSPTPTR of TT 0/1) or of a present PASID
    entry (FSPTPTR for PGTT 1, SSPTPTR for 2 and 3), and walks it from level agaw + 2
    (pgtable_walk_level()): `levels` is the top level its rows go through (the
    PML5E column is 0 under a 4-level table), None when no row was printed.
    `stage`: the PGTT of a PASID entry read for the device (dmar_translation_struct),
    else, in scalable mode, the entries' own format: Linux sets DMA_FL_PTE_US (bit 2)
    in every first-stage entry it writes (pfn_to_dma_pte(), __domain_mapping()) and
    never bit 2 (X) in a second-stage one; legacy mode has the second stage only."""

    unit: str
    source_id: int
    pasid: int | None          # None: legacy mode; scalable: the file's PASID (0 for <bdf>/domain_translation_struct)
    pgd: int
    levels: int | None
    stage: str                 # "first" | "second"
    stage_from: str            # what says so
    where: str                 # file:line of the "Device ..." line
    pasid_entry: tuple[int, ...] | None = None   # val[0..2] from dmar_translation_struct, when read

    def to_json(self) -> dict:
        return {"unit": self.unit, "bdf": bdf_str(self.source_id), "pasid": self.pasid, "pgd": f"{self.pgd:#x}",
                "levels": self.levels, "stage": self.stage, "stage_from": self.stage_from, "from": self.where}


def _p(path: str) -> str:
    return printable(clip(path, 200))


# ----------------------------------------------------------------------------- reading


@dataclass
class Inputs:
    """Everything read, each item with the file it came from."""

    sources: list[dict] = field(default_factory=list)        # {"path", "kind", "files"}
    unparsed: list[str] = field(default_factory=list)        # "file:line"
    regset: list[tuple] = field(default_factory=list)        # (RegsetUnit, file)
    translation: list[tuple] = field(default_factory=list)   # (TranslationUnit, file)
    domains: list[tuple] = field(default_factory=list)       # (DomainDevice, file)
    queues: list[tuple] = field(default_factory=list)        # (QueueUnit, file)
    logs: list = field(default_factory=list)                 # KernelLog
    sysfs: object | None = None                              # SysfsMachine
    probed: list[tuple[str, str]] = field(default_factory=list)   # (dddd:bb:dd.f, folder) of debugfs
    files: int = 0


def kind_of(path: str) -> str:
    """"sysfs" (a folder holding sys/class/iommu), "debugfs" (another folder, or a file
    named as the kernel names its debugfs files) or "dmesg" (any other file)."""
    if os.path.isdir(path):
        return "sysfs" if os.path.isdir(os.path.join(path, "sys", "class", "iommu")) else "debugfs"
    return "debugfs" if os.path.basename(path) in dfs.READERS else "dmesg"


def looks_like_debugfs(path: str) -> bool:
    """A file named as a debugfs file, or a folder holding one or a device folder."""
    if os.path.isfile(path):
        return os.path.basename(path) in dfs.READERS
    try:
        names = os.listdir(path)[:MAX_DEBUGFS_FILES]
    except OSError:
        return False
    return any(n in dfs.READERS or _PCI_DIR.match(n) for n in names)


def _read_debugfs(inputs: Inputs, path: str, kind: str | None = None) -> None:
    try:
        kind, read = dfs.read_debugfs_file(path, kind)
    except LimitError as exc:
        raise ImportError_(str(exc)) from None
    except OSError as exc:
        raise ImportError_(f"{_p(path)}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ImportError_(str(exc)) from None
    inputs.files += 1
    inputs.unparsed += [f"{_p(path)}:{n}" for n in read.unparsed]
    bucket = {"iommu_regset": inputs.regset, "dmar_translation_struct": inputs.translation,
              "domain_translation_struct": inputs.domains, "invalidation_queue": inputs.queues}[kind]
    bucket += [(item, _p(path)) for item in read]


def _entries(path: str) -> list[tuple[str, os.stat_result]]:
    """The names in a folder with their lstat, sorted; symlinks are not followed."""
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise ImportError_(f"{_p(path)}: {exc.strerror or exc}") from None
    out = []
    for name in names[:MAX_DEBUGFS_FILES + 1]:
        try:
            out.append((name, os.lstat(os.path.join(path, name))))
        except OSError:
            continue
    return out


def _debugfs_folder(inputs: Inputs, path: str) -> list[str]:
    """The kernel's files in a debugfs folder: the top files, then each device folder's
    domain_translation_struct and its PASID folders' (folders named as the kernel names
    them; anything else is left alone)."""
    files: list[str] = []
    for name, st in _entries(path):
        full = os.path.join(path, name)
        if name in dfs.READERS and stat.S_ISREG(st.st_mode):
            files.append(full)
        elif _PCI_DIR.match(name) and stat.S_ISDIR(st.st_mode):
            # intel_iommu_probe_device() made the folder: the driver probed the device.
            inputs.probed.append((name.lower(), _p(full)))
            for sub, sst in _entries(full):
                subp = os.path.join(full, sub)
                if sub == "domain_translation_struct" and stat.S_ISREG(sst.st_mode):
                    files.append(subp)
                elif _PASID_DIR.match(sub) and stat.S_ISDIR(sst.st_mode):
                    leaf = os.path.join(subp, "domain_translation_struct")
                    if os.path.isfile(leaf) and not os.path.islink(leaf):
                        files.append(leaf)
        if len(files) > MAX_DEBUGFS_FILES:
            raise ImportError_(f"{_p(path)}: more than {MAX_DEBUGFS_FILES:,} debugfs files (MAX_DEBUGFS_FILES)")
    if not files:
        raise ImportError_(f"{_p(path)}: no debugfs file of the intel-iommu driver here (iommu_regset, "
                           "dmar_translation_struct, invalidation_queue, <dddd:bb:dd.f>/domain_translation_struct), "
                           "and no sys/class/iommu (not a sysfs root either)")
    for f in files:
        _read_debugfs(inputs, f, os.path.basename(f))
    return files


def _read_log(inputs: Inputs, path: str) -> None:
    data = read_input(path, MAX_LOG_BYTES, "MAX_LOG_BYTES", ImportError_, _p(path))
    log = read_kernel_log(data.decode("utf-8", errors="replace"), _p(path))
    if not (log.units or log.faults or log.groups or log.orphan_dumps):
        raise ImportError_(f"{_p(path)}: no DMAR unit, fault, dump or iommu group line: not a kernel log this reads "
                           "(debugfs files keep their kernel names: iommu_regset, dmar_translation_struct, ...)")
    inputs.files += 1
    inputs.unparsed += [f"{_p(path)}:{n}" for n in log.unparsed]
    inputs.logs.append(log)


def read_inputs(paths: list[str]) -> Inputs:
    """Read every path with its reader; ImportError_ (one line) on what cannot be read."""
    if not paths:
        raise ImportError_("import: give at least one PATH (a debugfs folder or file, a kernel log, a sysfs root)")
    if len(paths) > MAX_IMPORT_PATHS:
        raise ImportError_(f"import: {len(paths)} paths, more than {MAX_IMPORT_PATHS} (MAX_IMPORT_PATHS)")
    inputs = Inputs()
    for path in paths:
        if not os.path.exists(path):
            raise ImportError_(f"{_p(path)}: no such file or folder")
        kind = kind_of(path)
        files = [path]
        if kind == "sysfs":
            if inputs.sysfs is not None:
                raise ImportError_(f"{_p(path)}: a second sysfs root (one machine, one sysfs)")
            from .sysfs import SysfsError, read_sysfs

            try:
                inputs.sysfs = read_sysfs(path)
            except (SysfsError, LimitError) as exc:
                raise ImportError_(f"{_p(path)}: {exc}") from None
            inputs.files += 1
        elif kind == "debugfs" and os.path.isdir(path):
            files = _debugfs_folder(inputs, path)
        elif kind == "debugfs":
            _read_debugfs(inputs, path)
        else:
            _read_log(inputs, path)
        inputs.sources.append({"path": _p(path), "kind": kind, "files": [_p(f) for f in files]})
    return inputs


# ----------------------------------------------------------------------------- building


@dataclass
class _Unit:
    name: str
    base: int | None = None
    cap: int | None = None
    ecap: int | None = None
    registers: dict[str, int] = field(default_factory=dict)   # from iommu_regset
    rta: int | None = None           # root table address (page)
    sm: bool | None = None           # scalable mode (RTADDR.SMT, or the rows' PASID column)
    te: bool | None = None
    queue: object | None = None      # QueueUnit
    said_by: list[str] = field(default_factory=list)


class _Builder:
    def __init__(self, inputs: Inputs):
        self.inputs = inputs
        self.units: dict[str, _Unit] = {}
        self.known: dict[int, tuple[int, str]] = {}       # address → (value, what/where)
        self.unknown: list[str] = []
        self.conflicts: list[str] = []
        self.devices: dict[tuple[str, int], dict] = {}    # (unit, sid) → {"name", "group", "from"}
        self.pasid_entries: list[dict] = []
        self.contexts: dict[tuple[str, int], tuple[int, int]] = {}   # (unit, sid) → (lo, hi)
        self.dir_entries: dict[tuple[str, int, int], int] = {}       # (unit, sid, dir index) → value
        self.leaf_pages: dict[tuple[str, int], int] = {}             # (unit, table) → 4 KiB pages mapped
        self.tables: dict[tuple[str, int, int | None], DomainTable] = {}   # (unit, sid, pasid) → table
        self.notes: list[str] = []

    # -- memory
    def place(self, addr: int, value: int, what: str) -> None:
        if addr + 8 > MAX_ADDRESS:
            raise ImportError_(f"{what}: address {addr:#x} is beyond the model's memory (2^52 bytes, the widest "
                               "address a VT-d entry holds)")
        old = self.known.get(addr)
        if old is not None:
            if old[0] != value:
                self.conflicts.append(f"{what}: {value:#018x} at {addr:#x}, but {old[1]} put {old[0]:#018x} "
                                      "there: the first read is kept")
            return
        if len(self.known) >= MAX_IMPORT_WORDS:
            raise ImportError_(f"{what}: more than {MAX_IMPORT_WORDS:,} words read (MAX_IMPORT_WORDS)")
        self.known[addr] = (value, what)

    # -- units
    def unit(self, name: str) -> _Unit:
        u = self.units.get(name)
        if u is None:
            u = self.units[name] = _Unit(name)
        return u

    def _set(self, u: _Unit, key: str, value: int | None, where: str) -> None:
        if value is None:
            return
        old = getattr(u, key)
        if old is None:
            setattr(u, key, value)
            u.said_by.append(where)
        elif old != value:
            self.conflicts.append(f"{where}: {u.name} {key} {value:#x}, but {old:#x} was read before: the first "
                                  "is kept")

    def read_units(self) -> None:
        for ru, where in self.inputs.regset:
            u = self.unit(ru.name)
            regs = {k: v for k, (_off, v) in ru.registers.items()}
            self._set(u, "base", ru.base, f"{where}:{ru.line}")
            self._set(u, "cap", regs.get("CAP"), f"{where}:{ru.line}")
            self._set(u, "ecap", regs.get("ECAP"), f"{where}:{ru.line}")
            u.registers.update(regs)
            if "RTADDR" in regs:
                rtaddr = regs["RTADDR"]
                if rtaddr & PAGE_MASK:
                    u.rta = rtaddr & PAGE_MASK
                u.sm = bool(rtaddr & RTADDR_SMT)
            if "GSTS" in regs:
                u.te = bool(regs["GSTS"] & GSTS_TES)
        for log in self.inputs.logs:
            for du in log.units:
                u = self.unit(du.name)
                where = f"{log.source}:{du.line}"
                for key in ("base", "cap", "ecap"):
                    self._set(u, key, getattr(du, key), where)
        sysfs = self.inputs.sysfs
        if sysfs is not None:
            for su in sysfs.units:
                u = self.unit(su.name)
                for key, value in (("base", su.address), ("cap", su.cap), ("ecap", su.ecap)):
                    self._set(u, key, value, f"{sysfs.root} ({su.name})")
        for tu, where in self.inputs.translation:
            u = self.unit(tu.name)
            u.te = tu.enabled if u.te is None else u.te
            if tu.root_table is not None:
                if u.rta is None:
                    u.rta = tu.root_table & PAGE_MASK
                elif u.rta != tu.root_table & PAGE_MASK:
                    self.conflicts.append(f"{where}:{tu.line}: {tu.name} root table {tu.root_table:#x}, but RTADDR "
                                          f"says {u.rta:#x}: RTADDR is kept")
            if u.sm is None and tu.rows:
                # A scalable-mode row prints a PASID (its entries'); a legacy one -1.
                u.sm = any(r.pasid is not None for r in tu.rows)
        for qu, _where in self.inputs.queues:
            self.unit(qu.name).queue = qu

    def check_units(self) -> None:
        for u in self.units.values():
            if u.cap is None or u.ecap is None:
                missing = " and ".join(k.upper() for k in ("cap", "ecap") if getattr(u, k) is None)
                raise ImportError_(f"{_p(u.name)}: named in the input, but nothing says what the unit is ({missing} "
                                   "unknown: give its iommu_regset, the log with its DMAR unit line, or the sysfs)")
        if not self.units:
            raise ImportError_("import: no IOMMU unit in the input (no iommu_regset, dmar_translation_struct, "
                               "DMAR unit line or sysfs unit)")

    # -- devices
    def device(self, unit: str, sid: int, source: str, name: str | None = None) -> None:
        d = self.devices.setdefault((unit, sid), {"name": None, "group": None, "from": source})
        if name and not d["name"]:
            d["name"] = name

    def unit_of(self, bdf: str | None, sid: int) -> str | None:
        """The unit a device sits behind: the one whose tables hold it, else sysfs's,
        else the only unit."""
        owners = {u for (u, s) in self.devices if s == sid}
        if len(owners) == 1:
            return owners.pop()
        sysfs = self.inputs.sysfs
        if sysfs is not None and bdf in sysfs.devices and sysfs.devices[bdf].unit in self.units:
            return sysfs.devices[bdf].unit
        return next(iter(self.units)) if len(self.units) == 1 else None

    # -- dmar_translation_struct
    def read_translation(self) -> None:
        for tu, where in self.inputs.translation:
            u = self.units[tu.name]
            if tu.enabled:
                # dmar_translation_struct_show() prints a row per present context entry
                # (ctx_tbl_walk: `if (!context_present(context)) continue;`).
                self.unknown.append(f"{tu.name}: the root entries of buses with no present context entry "
                                    "(dmar_translation_struct prints present context entries only)")
            for row in tu.rows:
                sid = _sid(row.bdf)
                bus, devfn = sid >> 8, sid & 0xFF
                at = f"{where}:{row.line}"
                if u.rta is not None:
                    self.place(u.rta + bus * 16, row.root_lo, f"{at} root entry lo")
                    self.place(u.rta + bus * 16 + 8, row.root_hi, f"{at} root entry hi")
                addr = self._context_addr(u, row.root_lo, row.root_hi, devfn)
                if addr is not None:
                    self.place(addr, row.context_lo, f"{at} context entry lo")
                    self.place(addr + 8, row.context_hi, f"{at} context entry hi")
                self.contexts[(u.name, sid)] = (row.context_lo, row.context_hi)
                if row.context_lo & 1:
                    self.device(u.name, sid, at)
                if row.pasid is not None:
                    self.pasid_entries.append({"unit": u.name, "bdf": row.bdf, "sid": sid, "pasid": row.pasid,
                                               "val": list(row.pasid_entry), "where": at, "address": None})

    @staticmethod
    def _context_addr(u: _Unit, root_lo: int, root_hi: int, devfn: int) -> int | None:
        if u.sm:
            half = root_hi if devfn >= 0x80 else root_lo
            return (half & PAGE_MASK) + (devfn & 0x7F) * 32 if half & 1 else None
        return (root_lo & PAGE_MASK) + devfn * 16 if root_lo & 1 else None

    # -- domain_translation_struct
    def read_domains(self) -> None:
        for d, where in self.inputs.domains:
            at = f"{where}:{d.line}"
            if d.segment not in (None, 0) or d.bdf is None:
                self.notes.append(f"{at}: device {printable(clip(d.name, 40))} left out (segment 0 PCI only)")
                continue
            sid = _sid(d.bdf)
            unit = self.unit_of(d.bdf, sid)
            if unit is None:
                # The page tables lie in physical memory whichever unit walks them: they
                # are placed; the device is left out of the groups, and `translate --unit`
                # can walk its table (DomainTable with unit None).
                self.unknown.append(f"{at}: the unit device {d.bdf} sits behind (its table is placed, the device "
                                    "is in no group: give the sysfs root, or translate --unit)")
            else:
                self.device(unit, sid, at)
            top = max((max(r.entries) for r in d.rows if r.entries), default=None)
            self._table(unit, sid, d, top, at)
            if not d.rows:
                continue
            pages = 0
            for r in d.rows:
                if r.entries:
                    pages += self._walk_row(d.pgd, top, r, f"{where}:{r.line}")
            if unit is not None:
                self.leaf_pages[(unit, d.pgd & PAGE_MASK)] = pages

    def _table(self, unit: str | None, sid: int, d, top: int | None, at: str) -> None:
        """Keep the table a domain_translation_struct block gives (DomainTable)."""
        if d.layout == "6.7":
            # domain_translation_struct_show(): "with pasid %x " iff RTADDR.SMT.
            sm = d.pasid is not None
        else:
            sm = bool(unit is not None and self.units[unit].sm) or (unit is None and any(u.sm for u in self.units.values()))
        # Only the per-device files (≈v6.7+) name a request PASID ("with pasid %x"); the
        # ≤v5.10 global file's "with pasid %d" is domain->default_pasid, not a request's.
        pasid = (d.pasid if d.layout == "6.7" and d.pasid is not None else IOMMU_NO_PASID) if sm else None
        key = (unit, sid, pasid)
        old = self.tables.get(key)
        if old is not None:
            if old.pgd != d.pgd & PAGE_MASK:
                self.conflicts.append(f"{at}: {bdf_str(sid)} walks from {d.pgd:#x}, but {old.where} said "
                                      f"{old.pgd:#x}: the first is kept")
            return
        pe = next((tuple(e["val"]) for e in self.pasid_entries
                   if (e["unit"], e["sid"], e["pasid"]) == key), None) if sm else None
        if not sm:
            stage, said = "second", "legacy mode: second stage only"
        elif pe is not None and (pe[0] >> 6) & 7 in (1, 2, 3):
            pgtt = (pe[0] >> 6) & 7
            stage, said = ("first" if pgtt == 1 else "second"), f"the PASID entry's PGTT {pgtt} (dmar_translation_struct)"
        else:
            tops = [r.entries[top] for r in d.rows if top is not None and r.entries.get(top)]
            first = any(v & 4 for v in tops)
            stage = "first" if first else "second"
            said = ("bit 2 (US) set in its entries: Linux sets DMA_FL_PTE_US in first-stage entries only" if first
                    else "bit 2 clear in its entries (Linux sets DMA_FL_PTE_US in every first-stage entry)"
                    if tops else "no row and no PASID entry: second stage assumed")
        self.tables[key] = DomainTable(unit, sid, pasid, d.pgd & PAGE_MASK, top, stage, said, at, pe)

    def _walk_row(self, pgd: int, top: int, r, at: str) -> int:
        """Place one row's entries, from the top table down to its leaf; the 4 KiB
        pages its leaf maps."""
        entries, leaf = r.entries, r.leaf_level
        table = pgd & PAGE_MASK
        for level in range(top, leaf - 1, -1):
            value = entries.get(level)
            if value is None:
                raise ImportError_(f"{at}: level {level} is empty above the leaf at level {leaf} (not a walk the "
                                   "kernel prints)")
            self.place(table + _index(r.iova, level) * 8, value, f"{at} level-{level} entry")
            table = value & PAGE_MASK & ~PTE_XD
        return 1 << (9 * (leaf - 1))

    # -- invalidation_queue
    def read_queues(self) -> None:
        for qu, where in self.inputs.queues:
            if qu.base is None or qu.wide is None:
                self.unknown.append(f"{where}:{qu.line}: {qu.name}'s queue (no Base line or no header)")
                continue
            shift = 5 if qu.wide else 4
            for row in qu.rows:
                for i, w in enumerate(row.qw):
                    self.place((qu.base & PAGE_MASK) + (row.index << shift) + 8 * i, w,
                               f"{where}:{row.line} queue slot {row.index} qw{i}")
            if qu.rows:
                self.unknown.append(f"{qu.name}: where qi->desc_status lies (its words are in the import's 'queues')")

    # -- dumps
    def read_dumps(self) -> None:
        for log in self.inputs.logs:
            for f in log.faults:
                if f.dump is not None:
                    self._dump(f, f.dump, log.source)
            for dump in log.orphan_dumps:
                self.unknown.append(f"{log.source}:{dump.line}: the device of this dump (no fault line before it)")

    def _dump(self, f, dump, source: str) -> None:
        at = f"{source}:{dump.line}"
        if dump.unit not in self.units:
            self.unit(dump.unit)   # check_units() refuses it later unless something says what it is
            return
        u = self.units[dump.unit]
        sid = _sid(f.bdf)
        bus, devfn = sid >> 8, sid & 0xFF
        if dump.scalable and u.sm is None:
            u.sm = True
        self.device(u.name, sid, at)
        if dump.root is None:
            return
        hi = dump.root_hi if dump.scalable else None
        if u.rta is not None:
            self.place(u.rta + bus * 16, dump.root, f"{at} root entry lo")
            if hi is not None:
                self.place(u.rta + bus * 16 + 8, hi, f"{at} root entry hi")
        else:
            self.unknown.append(f"{at}: where {u.name}'s root table lies (a dump's root entry does not say)")
        if dump.context_lo is None:
            return
        addr = self._context_addr(u, dump.root, hi or 0, devfn)
        if addr is None:
            return
        self.place(addr, dump.context_lo, f"{at} context entry lo")
        self.place(addr + 8, dump.context_hi, f"{at} context entry hi")
        self.contexts.setdefault((u.name, sid), (dump.context_lo, dump.context_hi))
        if dump.scalable:
            table = self._dump_pasid(u, sid, f, dump, at)
        else:
            table = dump.context_lo & PAGE_MASK
        if table is None:
            return
        for level, value in dump.ptes:
            self.place(table + _index(dump.iova, level) * 8, value, f"{at} level-{level} entry")
            table = value & PAGE_MASK & ~PTE_XD

    def _dump_pasid(self, u: _Unit, sid: int, f, dump, at: str) -> int | None:
        """Place the dump's PASID directory and PASID entries; the top page table of its walk."""
        # dmar_fault_dump_ptes(): `if (intel_iommu_sm && pasid == IOMMU_PASID_INVALID) pasid = IOMMU_NO_PASID;`
        pasid = f.pasid if f.pasid is not None else IOMMU_NO_PASID
        if dump.pasid_dir is None:
            return None
        self.place((dump.context_lo & PAGE_MASK) + (pasid >> 6) * 8, dump.pasid_dir, f"{at} PASID directory entry")
        self.dir_entries[(u.name, sid, pasid >> 6)] = dump.pasid_dir
        if not dump.pasid_entry:
            return None
        entry = (dump.pasid_dir & PAGE_MASK) + (pasid & 0x3F) * 64
        for i, value in sorted(dump.pasid_entry.items()):
            self.place(entry + 8 * i, value, f"{at} PASID entry val[{i}]")
        v0, v2 = dump.pasid_entry.get(0, 0), dump.pasid_entry.get(2, 0)
        pgtt = (v0 >> 6) & 7
        return (v2 if pgtt == 1 else v0) & PAGE_MASK if pgtt in (1, 2, 3) else None

    def place_pasid_entries(self) -> None:
        """dmar_translation_struct's PASID entries, where a dump gave their directory entry."""
        for e in self.pasid_entries:
            de = self.dir_entries.get((e["unit"], e["sid"], e["pasid"] >> 6))
            if de is None or not de & 1:
                continue
            addr = (de & PAGE_MASK) + (e["pasid"] & 0x3F) * 64
            for i, value in enumerate(e["val"]):
                self.place(addr + 8 * i, value, f"{e['where']} PASID entry val[{i}]")
            e["address"] = addr
        n = sum(e["address"] is None for e in self.pasid_entries)
        if n:
            self.unknown.append(f"where {n} PASID entr{'y lies' if n == 1 else 'ies lie'}: dmar_translation_struct "
                                "prints a PASID entry but not the PASID directory entry that holds its table's "
                                "address (a fault dump of the device gives it); they are listed under 'pasid_entries'")
        if self.pasid_entries:
            self.unknown.append("val[3..7] of every PASID entry from dmar_translation_struct (it prints val[0..2])")

    # -- groups
    def read_groups(self) -> None:
        sysfs = self.inputs.sysfs
        if sysfs is not None:
            for bdf, dev in sysfs.devices.items():
                if dev.unit in self.units:
                    self.device(dev.unit, dev.source_id, f"{sysfs.root}", dev.name)
                    self.devices[(dev.unit, dev.source_id)]["group"] = dev.group
        for log in self.inputs.logs:
            for g in log.groups:
                if not g.added:
                    continue
                name = g.device[5:] if g.device.startswith("0000:") else g.device
                try:
                    sid = _sid(name)
                except ValueError:
                    continue     # a non-PCI device, another segment
                unit = self.unit_of(name, sid)
                if unit is None:
                    self.unknown.append(f"{log.source}:{g.line}: the unit device {name} sits behind")
                    continue
                self.device(unit, sid, f"{log.source}:{g.line}")
                d = self.devices[(unit, sid)]
                if d["group"] is None:
                    d["group"] = g.group

    def read_probed(self) -> None:
        """Devices with a debugfs folder but no table read: behind the one unit, or the
        unit sysfs names; else left out, and said so."""
        left = []
        for name, folder in self.inputs.probed:
            if name[:4] != "0000":
                continue
            bdf = name[5:]
            sid = _sid(bdf)
            if any(s == sid for (_u, s) in self.devices):
                continue
            unit = self.unit_of(bdf, sid)
            if unit is None:
                left.append(bdf)
            else:
                self.device(unit, sid, folder)
        if left:
            shown = ", ".join(left[:8]) + (" ..." if len(left) > 8 else "")
            self.unknown.append(f"the unit of {len(left)} probed device(s) with no context entry ({shown}): left out "
                                "(give the sysfs root too)")

    def groups(self) -> list[GroupSpec]:
        """Devices in their groups: sysfs's or the log's group, else one group per device."""
        by_id: dict[int, GroupSpec] = {}
        used = {d["group"] for d in self.devices.values() if d["group"] is not None}
        next_id = max(used, default=-1) + 1
        for (unit, sid), d in sorted(self.devices.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            gid = d["group"]
            if gid is None:
                gid, next_id = next_id, next_id + 1
            g = by_id.get(gid)
            spec = DeviceSpec(sid, clip(d["name"] or bdf_str(sid), 256))
            if g is None:
                by_id[gid] = GroupSpec(gid, unit, [spec])
            elif g.unit == unit:
                g.devices.append(spec)
            else:
                self.notes.append(f"group {gid}: device {bdf_str(sid)} sits behind {unit}, the group's others behind "
                                  f"{g.unit}: it gets a group of its own here")
                by_id[next_id] = GroupSpec(next_id, unit, [spec])
                next_id += 1
        if not by_id:
            self.unknown.append("the devices: no context entry, domain_translation_struct, dump or group line names "
                                "one")
        return [by_id[k] for k in sorted(by_id)]

    # -- domains
    def domains(self) -> list[DmarDomain]:
        """A domain per (unit, DID) seen in a context or PASID entry (owner "imported");
        nothing else of the driver's books."""
        seen: dict[tuple[str, int], DmarDomain] = {}
        for (unit, sid), (lo, hi) in sorted(self.contexts.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            if not lo & 1 or self.units[unit].sm:
                continue
            did, aw, tt = (hi >> 8) & 0xFFFF, hi & 7, (lo >> 2) & 3
            stage = "identity" if tt == 2 else "second"
            self._domain(seen, unit, did, aw + 2, lo & PAGE_MASK, stage).devices[sid] = unit
        for e in self.pasid_entries:
            pe = PasidEntry.decode(list(e["val"]) + [0] * 5)
            if not pe.present:
                continue
            stage = {1: "first", 2: "second", 3: "nested", 4: "identity"}.get(pe.pgtt, "second")
            pgd = pe.fsptptr if pe.pgtt == 1 else pe.ssptptr
            levels = (5 if pe.flpm else 4) if pe.pgtt == 1 else pe.aw + 2
            d = self._domain(seen, e["unit"], pe.did, levels, pgd, stage)
            d.devices[e["sid"]] = e["unit"]
        return list(seen.values())

    def _domain(self, seen: dict, unit: str, did: int, levels: int, pgd: int, stage: str) -> DmarDomain:
        d = seen.get((unit, did))
        if d is None:
            d = DmarDomain(len(seen) + 1, levels, pgd, "imported", dids={unit: did}, stage=stage)
            d.mapped_pages = self.leaf_pages.get((unit, pgd & PAGE_MASK), 0)
            d.has_mappings = bool(d.mapped_pages)
            seen[(unit, did)] = d
        return d


def _sid(bdf: str) -> int:
    bus, rest = bdf.split(":")
    dev, fn = rest.split(".")
    return (int(bus, 16) << 8) | (int(dev, 16) << 3) | int(fn)


def _index(iova: int, level: int) -> int:
    """pfn_level_offset(): the entry of `iova` in a level-`level` table."""
    return (iova >> (12 + 9 * (level - 1))) & 0x1FF


# ----------------------------------------------------------------------------- the machine


class KnownMem(PhysMem):
    """Memory holding what was read; while `watch` is a list, a read of a word the
    input did not hold is noted in it (a DMA on an imported machine says so)."""

    def __init__(self, size: int, known: set[int]):
        super().__init__(size)
        self.known = known
        self.watch: list[int] | None = None

    def read_q(self, addr: int) -> int:
        if self.watch is not None and addr not in self.known and len(self.watch) < 64:
            self.watch.append(addr)
        return super().read_q(addr)


class ImportedMachine(Machine):
    """A Machine built from the kernel's text.  `imported` says what was read and what
    is not known; commands that need the driver's books are refused."""

    imported: dict
    # (unit, source id, PASID or None) → DomainTable: where `translate` walks from when
    # the unit's own path to the page table is not in the input.
    domain_tables: dict

    def _refuse(self, *_args):
        raise CommandError(NOT_KNOWN)

    _cmd_attach = _cmd_detach = _cmd_map = _cmd_unmap = _cmd_flush_queue = _refuse
    _cmd_device_add = _cmd_device_del = _refuse

    def _cmd_dma(self, gid, iova_t, access=None):
        mems = [w.mem for w in self.worlds.values() if isinstance(w.mem, KnownMem)]
        for mem in mems:
            mem.watch = []
        try:
            message, t = super()._cmd_dma(gid, iova_t, access)
            unread = sorted({a for mem in mems for a in mem.watch})
        finally:
            for mem in mems:
                mem.watch = None
        if unread:
            shown = ", ".join(f"{a:#x}" for a in unread[:3]) + (" …" if len(unread) > 3 else "")
            message += (f" — the walk read {len(unread)} word(s) the input did not hold ({shown}): unknown, read as "
                        "0, so this is what zeros there give")
        return message, t


def _memory_size(highest: int) -> int:
    """The model's memory: a power of two holding every address read, at least what
    the page allocator needs."""
    size = 1 << max(highest - 1, 1).bit_length()
    return min(max(size, MIN_MEMORY), MAX_ADDRESS)


def build(inputs: Inputs) -> ImportedMachine:
    """The machine whose memory holds what `inputs` hold (see the module text)."""
    b = _Builder(inputs)
    b.read_units()
    b.read_translation()
    b.read_dumps()
    b.check_units()
    b.read_domains()
    b.read_queues()
    b.place_pasid_entries()
    b.read_groups()
    b.read_probed()
    groups = b.groups()
    domains = b.domains()

    sources = ", ".join(s["path"] for s in inputs.sources)
    unit_specs = [UnitSpec(u.name, "host", u.base or 0, u.cap, u.ecap, ASSUMED_HAW) for u in b.units.values()]
    unknown = list(b.unknown)
    unknown.append(f"haw (the ACPI DMAR table's host address width): {ASSUMED_HAW} assumed, no address bit reserved")
    unknown.append("the driver's books: domains beyond the DIDs seen, mappings, attachments, the IOTLB and caches")
    unknown.append("every word of memory not listed: reads as 0")
    for u in b.units.values():
        if u.base is None:
            unknown.append(f"{u.name}: its register base address")
        if u.rta is None:
            unknown.append(f"{u.name}: where its root table lies (no RTADDR, no 'Root Table Address' line)")
        if u.sm is None:
            unknown.append(f"{u.name}: legacy or scalable mode (no RTADDR, no table row): legacy assumed")
        elif u.sm:
            unknown.append(f"{u.name}: bits 255:128 of each scalable-mode context entry (debugfs and dumps print "
                           "the low 128)")
        if "FSTS" in u.registers and u.registers["FSTS"]:
            unknown.append(f"{u.name}: the fault records behind FSTS {u.registers['FSTS']:#x} (FSTS not loaded)")
    highest = max(b.known, default=0) + 8
    size = _memory_size(highest)
    description = clip(f"imported from {sources}: entries at their addresses as read; what the input does not hold "
                       "is unknown (reads as 0); the driver's books are not known", 4000)
    sc = Scenario("imported", description, "<import>", "driver", size, 0, unit_specs, groups)
    sc.sm = any(bool(u.sm) for u in b.units.values())
    sc.iotlb_capacity = 1024

    known_set = set(b.known)
    m = ImportedMachine(sc)
    mem = KnownMem(size, known_set)
    cache = CpuCache(mem)
    alloc = PageAllocator(mem, cache, TABLES_BASE, max(TABLES_BASE + 4096, min(TABLES_LIMIT, size)))
    world = World("host", mem, cache, alloc)
    m.worlds["host"] = world
    for addr, (value, _what) in sorted(b.known.items()):
        mem.write_q(addr, value)
    for spec in unit_specs:
        m.units[spec.name] = u = DmarUnit(spec.name, spec.base, spec.cap, spec.ecap, mem, cache, haw=spec.haw)
        _load_registers(u, b.units[spec.name])
    world.driver = IntelIommuDriver(m.journal, cache, alloc, list(m.units.values()), intel_iommu_sm=sc.sm)
    for d in domains:
        world.driver.domains[d.id] = d
        for sid, unit in d.devices.items():
            world.driver._attached[(unit, sid)] = d
    by_sid = {(unit, sid): d for d in domains for sid, unit in d.devices.items()}
    for gs in groups:
        g = m.groups[gs.id] = GroupState(gs.id, gs.unit, [(d.source_id, d.name) for d in gs.devices], "imported")
        doms = {id(by_sid.get((gs.unit, d.source_id))) for d in gs.devices}
        first = by_sid.get((gs.unit, gs.devices[0].source_id))
        g.domain = first if len(doms) == 1 else None
        m._device_index.setdefault(gs.unit, {}).update({d.source_id: (gs.id, d.name) for d in gs.devices})
    m.domain_tables = dict(b.tables)
    # The first group and its unit, as selecting a group selects its unit (`g`).
    m.selected_unit = groups[0].unit if groups else unit_specs[0].name
    m.selected_group = groups[0].id if groups else 0
    m.imported = {
        "sources": inputs.sources,
        "unknown": unknown,
        "unparsed": inputs.unparsed,
        "conflicts": b.conflicts,
        "notes": b.notes,
        "memory": f"{size:#x}",
        "words": len(b.known),
        "entries": [{"address": f"{a:#x}", "value": f"0x{v:016x}", "from": w} for a, (v, w) in sorted(b.known.items())],
        "pasid_entries": [{"unit": e["unit"], "bdf": e["bdf"], "pasid": e["pasid"],
                           "val": [f"0x{v:016x}" for v in e["val"]], "from": e["where"],
                           "address": None if e["address"] is None else f"{e['address']:#x}"}
                          for e in b.pasid_entries],
        "domain_tables": [t.to_json() for t in b.tables.values()],
        "queues": [{"unit": q.name, "base": None if q.base is None else f"{q.base:#x}", "head": q.head, "tail": q.tail,
                    "wide": q.wide, "status": {str(r.index): r.status for r in q.rows if r.status}}
                   for q, _w in inputs.queues],
    }
    return m


def _load_registers(u: DmarUnit, info: _Unit) -> None:
    """The registers as read (iommu_regset), else what the tables imply: the root table
    latched (GSTS.RTPS), TE, QIE with the queue.  FSTS is not loaded (the fault
    records behind it are not in the input)."""
    regs = info.registers
    smt = RTADDR_SMT if info.sm and ECAP.get(u.ecap, "SMTS") else 0
    if "RTADDR" in regs:
        u.rtaddr = regs["RTADDR"]
    elif info.rta is not None:
        u.rtaddr = info.rta | smt
    if u.rtaddr:
        # What SRTP latched: the register as software wrote it (SMT only with ECAP.SMTS).
        u.rta_latched = u.rtaddr & ~(RTADDR_SMT & ~(RTADDR_SMT if ECAP.get(u.ecap, "SMTS") else 0))
    q = info.queue
    if "GSTS" in regs:
        u.gsts = regs["GSTS"]
    else:
        u.gsts = (GSTS_RTPS if u.rtaddr else 0) | (GSTS_TES if info.te else 0) | (GSTS_QIES if q is not None else 0)
    u.gcmd = u.gsts & (GSTS_TES | GSTS_QIES)   # GCMD.TE / QIE are the same bits (31, 26)
    if "IQA" in regs:
        u.iqa = regs["IQA"]
    elif q is not None and q.base is not None:
        u.iqa = (q.base & PAGE_MASK) | (IQA_DW if q.wide else 0)
    shift = 5 if (q is not None and q.wide) or (u.iqa & IQA_DW) else 4
    if "IQH" in regs:
        u.iqh, u.iqt = regs["IQH"], regs.get("IQT", 0)
    elif q is not None and q.head is not None:
        u.iqh, u.iqt = q.head << shift, q.tail << shift
    if "VER" in regs:
        u.ver = regs["VER"] & 0xFF
    if "FECTL" in regs:
        u.fectl = regs["FECTL"] & (1 << 31)


def import_machine(paths: list[str]) -> ImportedMachine:
    """`vtdtui import PATH...`: read the paths, build the machine.  ImportError_ (one
    line) on bad input; never a partial machine."""
    return build(read_inputs(paths))


def state_json(m: ImportedMachine) -> dict:
    """The state JSON (machine/state.py) with the import's own key."""
    from ..machine.state import to_json

    state = to_json(m)
    state["import"] = m.imported
    return state


def sysfs_view(m: ImportedMachine, inputs_root: str = "<import>"):
    """The units, groups and devices found, as kernel/sysfs.py's SysfsMachine, for
    scenario_toml (`import --toml`)."""
    from .sysfs import Device, Group, SysfsMachine, Unit

    units = [Unit(u.name, address=u.base or None, cap=u.cap, ecap=u.ecap) for u in m.units.values()]
    devices: dict[str, Device] = {}
    groups = []
    for g in m.groups.values():
        bdfs = []
        for sid, name in g.devices:
            bdf = bdf_str(sid)
            devices[bdf] = Device(bdf, unit=g.unit, group=g.spec_id, class_name=name)
            bdfs.append(bdf)
        groups.append(Group(g.spec_id, devices=bdfs))
    for u in units:
        u.devices = [b for b, d in devices.items() if d.unit == u.name]
    return SysfsMachine(inputs_root, units, groups, devices, [])


def scenario_toml(m: ImportedMachine) -> str:
    """`import --toml`: a scenario of the units and groups found (kernel/scenario_toml.py)."""
    from .scenario_toml import TomlError, load

    origin = ", ".join(s["path"] for s in m.imported["sources"])
    try:
        text, _sc = load(sysfs_view(m), name="imported", origin=origin)
    except (TomlError, ValueError) as exc:
        raise ImportError_(f"--toml: {exc}") from None
    # scenario_toml's head speaks of sysfs; this scenario was read from other text.
    lines = text.split("\n")
    body = lines[next(i for i, line in enumerate(lines) if not line.startswith("#")):]
    head = ["# " + printable(clip(f"vtdtui scenario of the units and groups imported from {origin} "
                                 "(kernel/importer.py).", 300)),
            "# haw, [kernel] sm and memory are not in these inputs: left at the defaults.",
            "# A KVM VM takes the groups you attach (owner \"vfio\"); every group starts detached."]
    body = [line.replace("read from the sysfs of", "imported from") if line.startswith("description") else line
            for line in body]
    return "\n".join(head + body)


def render_summary(m: ImportedMachine) -> str:
    """`vtdtui import PATH...` without --json/--toml: what was read, in a few lines."""
    from ..machine.state import sm_mode

    imp = m.imported
    out = [f"imported from {', '.join(s['path'] + ' (' + s['kind'] + ')' for s in imp['sources'])}",
           f"{imp['words']:,} word(s) placed at their addresses; memory {int(imp['memory'], 16):#x} bytes"]
    for u in m.units.values():
        rta = u.rta_latched & PAGE_MASK
        out.append(f"  {u.name}: base {u.base:#x} CAP {u.cap:#x} ECAP {u.ecap:#x}, "
                   f"{'scalable' if sm_mode(u) else 'legacy'} mode, root table "
                   f"{f'{rta:#x}' if rta else 'unknown'}, translation {'on' if u.translation_enabled else 'off'}")
    for g in m.groups.values():
        d = g.domain
        dom = f"DID {d.dids.get(g.unit)} ({d.stage} stage, table {d.pgd:#x})" if d is not None else "no domain seen"
        devs = ", ".join(bdf_str(s) + ("" if n == bdf_str(s) else f" {printable(clip(n, 60))}") for s, n in g.devices)
        out.append(f"  group {g.spec_id} on {g.unit}: {devs}: {dom}")
    if imp["pasid_entries"]:
        placed = sum(e["address"] is not None for e in imp["pasid_entries"])
        out.append(f"  {len(imp['pasid_entries'])} PASID entr{'y' if len(imp['pasid_entries']) == 1 else 'ies'} read, "
                   f"{placed} placed")
    for title, key in (("not known", "unknown"), ("conflicts", "conflicts"), ("notes", "notes")):
        if imp[key]:
            out.append(f"{title}:")
            out += [f"  - {printable(clip(x, 300))}" for x in imp[key]]
    if imp["unparsed"]:
        shown = ", ".join(imp["unparsed"][:20]) + (", ..." if len(imp["unparsed"]) > 20 else "")
        out.append(f"not understood ({len(imp['unparsed'])} line(s), skipped): {shown}")
    out.append("browse it: vtdtui --import PATH...; --json - for the state, --toml OUT for a scenario")
    return "\n".join(out) + "\n"
