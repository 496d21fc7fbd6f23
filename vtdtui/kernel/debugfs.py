"""debugfs files of drivers/iommu/intel/debugfs.c read into plain data (REFERENCE-2.md §17).

Every format below is the kernel's seq_printf format string, checked against the stored
copies: NEW = kangharison/linux-study debugfs.c (≈v7.0-rc, code lines verbatim), OLD =
torvalds/linux@4b4193256c8d (≈v5.10), the ≈v5.15 change "Device %s @0x%llx" (patch
"iommu/vt-d: Remove aux-domain related callbacks"), and the ≈v6.7 per-device rewrite.

  iommu_regset        "IOMMU: %s Register Base Address: %llx\\n", "Name\\t\\t\\tOffset\\t\\tContents\\n",
                      rows "%-16s\\t0x%02x\\t\\t0x%016llx\\n", a blank line per unit;
                      "IOMMU: Invalid base address\\n" stops the file
  dmar_translation_struct
                      "DMA Remapping is not enabled on %s\\n", or
                      "IOMMU %s: Root Table Address: 0x%llx\\n", a header, rows
                      "%02x:%02x.%x\\t0x%016llx:0x%016llx\\t0x%016llx:0x%016llx\\t" (root hi:lo,
                      context hi:lo) + "%-6d\\t0x%016llx:0x%016llx:0x%016llx\\n" (PASID, then
                      val[2]:val[1]:val[0]; legacy rows print -1 and zeros), a blank line
  domain_translation_struct
      ≈v5.10 global   "Device %s with pasid %d @0x%llx\\n" (domain->default_pasid, decimal)
      ≈v5.15 global   "Device %s @0x%llx\\n"
        both          "IOVA_PFN\\t\\tPML5E\\t\\t\\tPML4E\\t\\t\\tPDPE\\t\\t\\tPDE\\t\\t\\tPTE\\n", rows
                      "0x%013lx |\\t0x%016llx\\t0x%016llx\\t0x%016llx\\t0x%016llx\\t0x%016llx\\n",
                      a blank line per device
      ≈v6.7+ per device (`<dddd:bb:dd.f>/domain_translation_struct`, PASID 0) and per PASID
                      (`<dddd:bb:dd.f>/<pasid %x>/domain_translation_struct`):
                      "DMA Remapping is not enabled on %s\\n" for each unit of the segment
                      with TE off, then "Device %04x:%02x:%02x.%x " + "with pasid %x @0x%llx\\n"
                      (scalable mode, hex) or "@0x%llx\\n" (legacy), the header
                      "%-17s\\t%-18s\\t%-18s\\t%-18s\\t%-18s\\t%-s\\n", rows as above until a later
                      fix, then (NEW dump_page_info) "0x%013lx |\\t0x%016llx\\t0x%016llx\\t0x%016llx"
                      + "\\t0x%016llx" if path[2] + "\\t0x%016llx" if path[1] too: a superpage
                      row stops at its leaf; no blank line
  invalidation_queue  "Invalidation queue on IOMMU: %s\\n", " Base: 0x%llx\\tHead: %lld\\tTail: %lld\\n"
                      (IQH/IQT >> qi_shift: slot indexes), then with ECAP.SMTS
                      "Index\\t\\tqw0\\t\\t\\tqw1\\t\\t\\tqw2\\t\\t\\tqw3\\t\\t\\tstatus\\n" and 256 rows
                      "%5d\\t%016llx\\t%016llx\\t%016llx\\t%016llx\\t%016x\\n", else
                      "Index\\t\\tqw0\\t\\t\\tqw1\\t\\t\\tstatus\\n" and "%5d\\t%016llx\\t%016llx\\t%016x\\n"
                      (status: qi->desc_status[index], QI_FREE 0 .. QI_ABORT 3); a blank line

What a reader does with a line (issue 18, "Bad input"):
- a line the format defines is read, with its 1-based line number;
- a blank line (the kernel's separators) is skipped;
- a line that starts like a row of the file but is cut or holds a value that does not
  fit its field (a truncated last line, a bus above ff, a PASID above 20 bits) raises
  ValueError naming `source:line`: the file was cut or is not the kernel's;
- any other line goes to `unparsed` (its line number) and the rest still reads;
- a file with nothing the format defines raises ValueError (not this kind of file).

Each reader returns a list (units or devices) carrying `.unparsed`.  Nothing read is
executed or used as a path; text quoted in an error is clipped and escaped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from vtdtui.limits import MAX_LINE_CHARS, read_bounded
from vtdtui.textsafe import clip, printable, quote

# One debugfs file read at most (a global domain_translation_struct of a large machine
# is about 110 bytes per mapped page: 32 MiB is ~300,000 rows).
MAX_DEBUGFS_BYTES = 32 << 20
# Rows kept from one file, all units or devices together.
MAX_DEBUGFS_ROWS = 1 << 20
QI_LENGTH = 256  # dmar.c: descriptors in the queue and words in qi->desc_status

_H = r"[0-9a-fA-F]"
_W = r"0x(" + _H + r"{16})"

# iommu_regset
_REGSET_HEAD = re.compile(r"IOMMU: (?P<name>\S{1,64}) Register Base Address: (?P<base>" + _H + r"{1,16})$")
_REGSET_INVALID = "IOMMU: Invalid base address"
_REGSET_COLUMNS = "Name\t\t\tOffset\t\tContents"
_REGSET_ROW = re.compile(r"(?P<name>[A-Z][A-Z0-9_]{0,31}) *\t0x(?P<off>" + _H + r"{2,4})\t\t0x(?P<val>" + _H
                         + r"{16})$")
_REGSET_ROW_START = re.compile(r"[A-Z][A-Z0-9_]{0,31} *\t0x")

# dmar_translation_struct (and the per-device file's first lines)
_TS_OFF = re.compile(r"DMA Remapping is not enabled on (?P<name>\S{1,64})$")
_TS_HEAD = re.compile(r"IOMMU (?P<name>\S{1,64}): Root Table Address: 0x(?P<rta>" + _H + r"{1,16})$")
_TS_COLUMNS = re.compile(r"B\.D\.F\tRoot_entry\t+Context_entry(?:\t+PASID\tPASID_table_entry)?$")
_TS_ROW = re.compile(
    r"(?P<bus>" + _H + r"{2}):(?P<dev>" + _H + r"{2})\.(?P<fn>[0-7])\t" + _W + ":" + _W + r"\t" + _W + ":" + _W
    + r"(?:\t(?P<pasid>-?[0-9]{1,7}) *\t" + _W + ":" + _W + ":" + _W + r")?\t?$")
_TS_ROW_START = re.compile(_H + r"{2}:" + _H + r"{2}\.\w*\t")

# domain_translation_struct
_DOM_DEVICE = re.compile(r"Device (?P<dev>\S{1,64}) (?:with pasid (?P<pasid>-?" + _H + r"{1,8}) )?@0x(?P<pgd>"
                         + _H + r"{1,16})$")
DOMAIN_HEADER_OLD = "IOVA_PFN\t\tPML5E\t\t\tPML4E\t\t\tPDPE\t\t\tPDE\t\t\tPTE"
DOMAIN_HEADER_NEW = "%-17s\t%-18s\t%-18s\t%-18s\t%-18s\t%-s" % ("IOVA_PFN", "PML5E", "PML4E", "PDPE", "PDE", "PTE")
_DOM_ROW = re.compile(r"0x(?P<pfn>" + _H + r"{13,16}) \|\t" + _W + r"\t" + _W + r"\t" + _W
                      + r"(?:\t" + _W + r"(?:\t" + _W + r")?)?$")
_DOM_ROW_START = re.compile(r"0x" + _H + r"* ?\|")
_PCI_NAME = re.compile(r"(?P<seg>" + _H + r"{4}):(?P<bus>" + _H + r"{2}):(?P<dev>" + _H + r"{2})\.(?P<fn>[0-7])$")

# invalidation_queue
_IQ_HEAD = re.compile(r"Invalidation queue on IOMMU: (?P<name>\S{1,64})$")
_IQ_BASE = re.compile(r" Base: 0x(?P<base>" + _H + r"{1,16})\tHead: (?P<head>[0-9]{1,20})\tTail: (?P<tail>[0-9]{1,20})$")
IQ_HEADER_128 = "Index\t\tqw0\t\t\tqw1\t\t\tstatus"
IQ_HEADER_256 = "Index\t\tqw0\t\t\tqw1\t\t\tqw2\t\t\tqw3\t\t\tstatus"
_Q = r"(" + _H + r"{16})"
_IQ_ROW = re.compile(r" *(?P<index>[0-9]{1,5})\t" + _Q + r"\t" + _Q + r"(?:\t" + _Q + r"\t" + _Q + r")?\t"
                     + r"(?P<status>" + _H + r"{16})$")
_IQ_ROW_START = re.compile(r" *[0-9]{1,5}\t")


class Read(list):
    """What a reader returns: the units (or devices) read, in file order, and
    `unparsed`, the numbers of the lines not understood."""

    def __init__(self, items=(), unparsed=None):
        super().__init__(items)
        self.unparsed: list[int] = list(unparsed or [])


@dataclass
class RegsetUnit:
    name: str
    base: int
    registers: dict[str, tuple[int, int]] = field(default_factory=dict)   # name -> (offset, value)
    line: int = 0


@dataclass
class TranslationRow:
    bdf: str
    root_hi: int
    root_lo: int
    context_hi: int
    context_lo: int
    pasid: int | None = None                # None: legacy row (-1) or a 2018 file without the column
    pasid_entry: tuple[int, int, int] | None = None   # (val[0], val[1], val[2]), as the kernel reads them
    line: int = 0


@dataclass
class TranslationUnit:
    name: str
    enabled: bool
    root_table: int | None = None
    rows: list[TranslationRow] = field(default_factory=list)
    line: int = 0


@dataclass
class DomainRow:
    """One leaf of a walk: the IOVA page number and the entry met at each level.
    `columns` are PML5E, PML4E, PDPE, PDE, PTE as printed; None where a superpage row
    of the newest layout stops (dump_page_info prints path[2], path[1] only if set)."""

    pfn: int
    columns: tuple[int | None, ...]
    line: int = 0

    @property
    def iova(self) -> int:
        return self.pfn << 12

    @property
    def entries(self) -> dict[int, int]:
        """Level (5 = PML5E .. 1 = PTE) → entry, for the levels the walk went through
        (pgtable_walk_level clears path[level] on the way back: a zero column is a
        level the walk did not use: above the top of a 4-level table, or below a
        superpage)."""
        return {5 - i: v for i, v in enumerate(self.columns) if v}

    @property
    def leaf_level(self) -> int | None:
        levels = self.entries
        return min(levels) if levels else None


@dataclass
class DomainDevice:
    """One "Device ..." block.  `layout`: "5.10" (global file, default_pasid in
    decimal), "5.15" (global, no PASID), "6.7" (per device / per PASID file)."""

    name: str
    pgd: int
    pasid: int | None = None
    layout: str = "6.7"
    rows: list[DomainRow] = field(default_factory=list)
    line: int = 0
    _pasid_text: str | None = None

    @property
    def bdf(self) -> str | None:
        """bb:dd.f when the name is a PCI name dddd:bb:dd.f, else None."""
        m = _PCI_NAME.match(self.name)
        return f"{m.group('bus').lower()}:{m.group('dev').lower()}.{m.group('fn')}" if m else None

    @property
    def segment(self) -> int | None:
        m = _PCI_NAME.match(self.name)
        return int(m.group("seg"), 16) if m else None


@dataclass
class QueueRow:
    index: int
    qw: tuple[int, ...]          # qw0, qw1 (128-bit) or qw0..qw3 (256-bit)
    status: int                  # qi->desc_status[index]: QI_FREE 0, QI_IN_USE 1, QI_DONE 2, QI_ABORT 3
    line: int = 0


@dataclass
class QueueUnit:
    name: str
    base: int | None = None
    head: int | None = None      # IQH >> qi_shift: a slot index
    tail: int | None = None
    wide: bool | None = None     # 256-bit descriptors (ECAP.SMTS), from the header
    rows: list[QueueRow] = field(default_factory=list)
    line: int = 0


# ----------------------------------------------------------------------------- helpers


def _lines(text: str, source: str):
    for lineno, line in enumerate(text.split("\n"), start=1):
        if len(line) > MAX_LINE_CHARS:
            raise ValueError(f"{source}:{lineno}: line longer than {MAX_LINE_CHARS:,} characters (MAX_LINE_CHARS)")
        yield lineno, line.rstrip("\r")


def _cut(source: str, lineno: int, line: str, what: str) -> ValueError:
    return ValueError(f"{source}:{lineno}: truncated or garbled {what} row: {quote(line)}")


class _Rows:
    """Counts rows against MAX_DEBUGFS_ROWS."""

    def __init__(self, source: str):
        self.n, self.source = 0, source

    def add(self, lineno: int) -> None:
        self.n += 1
        if self.n > MAX_DEBUGFS_ROWS:
            raise ValueError(f"{self.source}:{lineno}: more than {MAX_DEBUGFS_ROWS:,} rows (MAX_DEBUGFS_ROWS)")


def _bdf(source: str, lineno: int, bus: str, dev: str, fn: str) -> str:
    if int(dev, 16) > 0x1F:
        raise ValueError(f"{source}:{lineno}: device {quote(dev)} is above 1f")
    return f"{bus.lower()}:{dev.lower()}.{fn}"


# ----------------------------------------------------------------------------- iommu_regset


def read_regset(text: str, source: str) -> Read:
    """iommu_regset (iommu_regset_show): a RegsetUnit per unit, registers by name."""
    units: Read = Read()
    for lineno, line in _lines(text, source):
        if not line.strip() or line == _REGSET_COLUMNS:
            continue
        if line == _REGSET_INVALID:   # the kernel stops the file here (-EINVAL)
            units.unparsed.append(lineno)
            continue
        m = _REGSET_HEAD.match(line)
        if m:
            units.append(RegsetUnit(m.group("name"), int(m.group("base"), 16), line=lineno))
            continue
        m = _REGSET_ROW.match(line)
        if m and units:
            units[-1].registers[m.group("name")] = (int(m.group("off"), 16), int(m.group("val"), 16))
            continue
        if units and _REGSET_ROW_START.match(line):
            raise _cut(source, lineno, line, "register")
        units.unparsed.append(lineno)
    if not units:
        raise ValueError(f"{source}: no 'IOMMU: NAME Register Base Address:' line (not an iommu_regset file)")
    return units


# ----------------------------------------------------------------------------- dmar_translation_struct


def read_translation_struct(text: str, source: str) -> Read:
    """dmar_translation_struct (dmar_translation_struct_show): a TranslationUnit per
    unit; rows of a scalable-mode unit carry the PASID and its entry's val[0..2]."""
    units: Read = Read()
    rows = _Rows(source)
    for lineno, line in _lines(text, source):
        if not line.strip() or _TS_COLUMNS.match(line):
            continue
        m = _TS_OFF.match(line)
        if m:
            units.append(TranslationUnit(m.group("name"), enabled=False, line=lineno))
            continue
        m = _TS_HEAD.match(line)
        if m:
            units.append(TranslationUnit(m.group("name"), enabled=True, root_table=int(m.group("rta"), 16),
                                         line=lineno))
            continue
        m = _TS_ROW.match(line)
        if m and units and units[-1].enabled:
            rows.add(lineno)
            w = [int(m.group(i), 16) for i in range(4, 8)]
            row = TranslationRow(_bdf(source, lineno, m.group("bus"), m.group("dev"), m.group("fn")), *w, line=lineno)
            if m.group("pasid") is not None:
                pasid = int(m.group("pasid"))
                v2, v1, v0 = (int(m.group(i), 16) for i in range(9, 12))
                if pasid >= 0:
                    if pasid > 0xFFFFF:
                        raise ValueError(f"{source}:{lineno}: PASID {pasid} does not fit 20 bits")
                    row.pasid, row.pasid_entry = pasid, (v0, v1, v2)
                elif pasid != -1 or (v0, v1, v2) != (0, 0, 0):
                    raise ValueError(f"{source}:{lineno}: a legacy row prints PASID -1 and zeros")
            units[-1].rows.append(row)
            continue
        if units and _TS_ROW_START.match(line):
            raise _cut(source, lineno, line, "dmar_translation_struct")
        units.unparsed.append(lineno)
    if not units:
        raise ValueError(f"{source}: no 'IOMMU NAME: Root Table Address:' line (not a dmar_translation_struct file)")
    return units


# ----------------------------------------------------------------------------- domain_translation_struct


def read_domain_translation_struct(text: str, source: str) -> Read:
    """domain_translation_struct of any era (global, per device, per PASID): a
    DomainDevice per "Device" block with its rows.  `.not_enabled` lists (unit name,
    line) of the "DMA Remapping is not enabled on" lines of the newest layout.

    A file with no "Device" line but only such lines, or nothing at all, is what the
    kernel prints for a device with no translation (no context entry, pass-through):
    it reads as no devices (an empty file is not an error here)."""
    devices: Read = Read()
    devices.not_enabled = []
    rows = _Rows(source)
    recognised = False
    for lineno, line in _lines(text, source):
        if not line.strip():
            continue
        m = _TS_OFF.match(line)
        if m:
            devices.not_enabled.append((m.group("name"), lineno))
            recognised = True
            continue
        m = _DOM_DEVICE.match(line)
        if m:
            d = DomainDevice(m.group("dev"), int(m.group("pgd"), 16), line=lineno, _pasid_text=m.group("pasid"))
            devices.append(d)
            recognised = True
            continue
        if devices and line in (DOMAIN_HEADER_OLD, DOMAIN_HEADER_NEW):
            _set_layout(devices[-1], line == DOMAIN_HEADER_OLD, source, lineno)
            continue
        m = _DOM_ROW.match(line)
        if m and devices:
            rows.add(lineno)
            cols = tuple(None if m.group(i) is None else int(m.group(i), 16) for i in range(2, 7))
            d = devices[-1]
            if d.layout != "6.7" and None in cols:
                raise ValueError(f"{source}:{lineno}: a ≤v6.6 row has all five columns: {quote(line)}")
            if cols[3] == 0 and cols[4]:
                # No version prints a PTE below an empty PDE: the walk reached level 1
                # through path[2] (and dump_page_info prints path[1] only `if (path[2])`).
                raise ValueError(f"{source}:{lineno}: a PTE column after an empty PDE column: {quote(line)}")
            pfn = int(m.group("pfn"), 16)
            if pfn >> 45:
                raise ValueError(f"{source}:{lineno}: IOVA page number {pfn:#x} is above 57 bits")
            d.rows.append(DomainRow(pfn, cols, lineno))
            continue
        if devices and _DOM_ROW_START.match(line):
            raise _cut(source, lineno, line, "domain_translation_struct")
        devices.unparsed.append(lineno)
    for d in devices:
        if d._pasid_text is not None and d.pasid is None:   # no header followed: newest layout, %x
            d.pasid = _pasid(d._pasid_text, 16, source, d.line)
    if not recognised and text.strip():
        raise ValueError(f"{source}: no 'Device NAME @0x...' line (not a domain_translation_struct file)")
    return devices


def _set_layout(d: DomainDevice, old_header: bool, source: str, lineno: int) -> None:
    """The header says the era: the old tab header is ≤v6.6's global file, where a
    PASID was domain->default_pasid printed with %d (≈v5.10); the padded header is the
    per-device file, where it is the PASID printed with %x."""
    if old_header:
        d.layout = "5.10" if d._pasid_text is not None else "5.15"
        if d._pasid_text is not None:
            d.pasid = _pasid(d._pasid_text, 10, source, d.line)
    else:
        d.layout = "6.7"
        if d._pasid_text is not None:
            d.pasid = _pasid(d._pasid_text, 16, source, d.line)


def _pasid(text: str, base: int, source: str, lineno: int) -> int:
    try:
        value = int(text, base)
    except ValueError:
        raise ValueError(f"{source}:{lineno}: PASID {quote(text)} is not a base-{base} number") from None
    if base == 10 and value == -1:
        return -1    # ≈v5.10 default_pasid of a domain without one (INVALID_IOASID as int)
    if not 0 <= value <= 0xFFFFF:
        raise ValueError(f"{source}:{lineno}: PASID {quote(text)} does not fit 20 bits")
    return value


# ----------------------------------------------------------------------------- invalidation_queue


def read_invalidation_queue(text: str, source: str) -> Read:
    """invalidation_queue (invalidation_queue_show): a QueueUnit per unit with its
    base, head and tail slot indexes and every slot's words and desc_status."""
    units: Read = Read()
    rows = _Rows(source)
    for lineno, line in _lines(text, source):
        if not line.strip():
            continue
        m = _IQ_HEAD.match(line)
        if m:
            units.append(QueueUnit(m.group("name"), line=lineno))
            continue
        u = units[-1] if units else None
        m = _IQ_BASE.match(line)
        if m and u is not None and u.base is None:
            u.base, u.head, u.tail = int(m.group("base"), 16), int(m.group("head")), int(m.group("tail"))
            if max(u.head, u.tail) >= QI_LENGTH:
                raise ValueError(f"{source}:{lineno}: head/tail above the {QI_LENGTH}-slot queue")
            continue
        if u is not None and line in (IQ_HEADER_128, IQ_HEADER_256):
            u.wide = line == IQ_HEADER_256
            continue
        m = _IQ_ROW.match(line)
        if m and u is not None and u.wide is not None and (m.group(4) is not None) == u.wide:
            rows.add(lineno)
            index, status = int(m.group("index")), int(m.group("status"), 16)
            if index >= QI_LENGTH:
                raise ValueError(f"{source}:{lineno}: slot {index} is beyond the {QI_LENGTH}-slot queue (QI_LENGTH)")
            if status >> 32:
                raise ValueError(f"{source}:{lineno}: status {status:#x} does not fit desc_status (32 bits)")
            qw = tuple(int(m.group(i), 16) for i in (2, 3, 4, 5) if m.group(i) is not None)
            u.rows.append(QueueRow(index, qw, status, lineno))
            continue
        if u is not None and u.wide is not None and _IQ_ROW_START.match(line):
            raise _cut(source, lineno, line, "invalidation_queue")
        units.unparsed.append(lineno)
    if not units:
        raise ValueError(f"{source}: no 'Invalidation queue on IOMMU:' line (not an invalidation_queue file)")
    return units


# ----------------------------------------------------------------------------- files

READERS = {
    "iommu_regset": read_regset,
    "dmar_translation_struct": read_translation_struct,
    "domain_translation_struct": read_domain_translation_struct,
    "invalidation_queue": read_invalidation_queue,
}


def read_debugfs_file(path: str, kind: str | None = None) -> tuple[str, Read]:
    """Read one debugfs file, at most MAX_DEBUGFS_BYTES, as `kind` (by default its file
    name: iommu_regset, dmar_translation_struct, domain_translation_struct or
    invalidation_queue).  Returns (kind, result); ValueError names the file, and a
    LimitError / OSError propagates for the caller to report."""
    kind = kind or os.path.basename(path)
    reader = READERS.get(kind)
    if reader is None:
        raise ValueError(f"{quote(path)}: not a debugfs file this reads ({', '.join(READERS)})")
    raw = read_bounded(path, MAX_DEBUGFS_BYTES, "MAX_DEBUGFS_BYTES")
    return kind, reader(raw.decode("utf-8", errors="replace"), printable(clip(path, 200)))
