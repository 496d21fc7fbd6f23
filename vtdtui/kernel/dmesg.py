"""A kernel log read for the IOMMU: DMAR faults of every era, their dumps, units, groups.

Written from the kernel's format strings (drivers/iommu/intel/dmar.c dmar_fault_do_one
and dmar_fault, iommu.c dmar_fault_dump_ptes / pgtable_walk, drivers/iommu/iommu.c
iommu_group_add_device; REFERENCE-2.md §13.3).  A fault report looks like, by era:

  old, two lines  DMAR:[DMA Read] Request device [00:02.0] fault addr 7fee000 ⏎
                  DMAR:[fault reason 06] PTE Read access is not set
                  INTR-REMAP: Request device [[f0:1f.0] fault index 0 ⏎
                  INTR-REMAP:[fault reason 34] Present field in the IRTE entry is clear
  ≤v5.4           [DMA Read] Request device [00:02.0] fault addr 7fee000 [fault reason 06] ...
                  [INTR-REMAP] Request device [f0:1f.0] fault index 0 [fault reason 34] ...
  v5.5–v5.13      [DMA Read] Request device [00:02.0] PASID ffffffff fault addr 7fee000 [fault reason 06] ...
  v5.14           [DMA Read NO_PASID] Request device [0x00:0x02.0] fault addr 0x7fee000 [fault reason 0x06] ...
  ≥v5.15 (NEW)    [DMA Write PASID 0x5] Request device [3a:00.0] fault addr 0x7f001000 [fault reason 0x85] ...
                  [INTR-REMAP] Request device [f0:1f.0] fault index 0x0 [fault reason 0x22] ...

Before v5.14 the reason was printed with %02d: the digits are the decimal value of the
code ("fault reason 89" is 0x59), and the address, index and PASID are bare hex.  In
v5.5–v5.13 a request without PASID printed the int -1 with %x: "PASID ffffffff".

Lines are searched, not anchored: whatever comes before (dmesg timestamps, `dmesg -T`
dates, journalctl or syslog `host kernel:` heads) is ignored, and `DMAR:` may be in any
case.  Line numbers count "\\n" as an editor does.

What counts as `unparsed`: a line that carries the words of an IOMMU report ("Request
device", "fault addr", "fault index", "fault reason", "fault status reg", "table entries
for IOVA", a dump statement such as "pte level" or "context entry:", "reg_base_addr",
"iommu group") but that no reader here understood: a truncated or garbled line, a value
that does not fit its field (bus > ff, a reason above 255, a PASID above 20 bits), a
two-line report whose second half is not on the very next line (one printk printed
both), a dump line with no dump open.  A line must also name the IOMMU ("DMAR",
"INTR-REMAP", "iommu", "group", or the report words "Request device" / "fault reason")
to be looked at.  Other lines of the log (and other DMAR boot lines, "DMAR: Host address
width 39" ...) are not fault reports and are not listed.

A dump ("Dump dmarN table entries for IOVA ...") belongs to the DMA fault just before it
when the addresses agree (dmar_fault_do_one() dumps right after its line); its lines
are the dump statements that follow, until the next fault, status or dump line.  A
fault's `status_line` is the last "DRHD: handling fault status reg" line before it.

Nothing read is executed or used as a path; every text kept from the log is clipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from vtdtui.decode import DecodedUnit, read_unit_line
from vtdtui.hw.entries import ContextEntry, RootEntry
from vtdtui.limits import MAX_LINE_CHARS
from vtdtui.textsafe import clip, printable

from .faults import explain, reason_text, true_reason

# Longest text kept from a line (the reason as printed, a note of a dump).
MAX_KEPT_CHARS = 200

_HEX = r"[0-9a-fA-F]"

# dmar_fault_do_one(), every single-line era; without the reason part it is the first
# line of the old two-line report.
_FAULT = re.compile(
    r"\[(?:(?P<rw>DMA[ \t]+(?:Read|Write))"
    r"(?:[ \t]+(?:(?P<nopasid>NO_PASID)|PASID[ \t]+(?P<tpasid>(?:0x)?" + _HEX + r"{1,8})"
    r"|(?P<wo>w/o[ \t]+PASID)|w/[ \t]+PASID[ \t]+(?P<wpasid>" + _HEX + r"{1,8})))?"
    r"|(?P<intr>INTR-REMAP))\][ \t]*"
    r"Request[ \t]+device[ \t]+\[(?P<bus>(?:0x)?" + _HEX + r"{1,4}):(?P<dev>(?:0x)?" + _HEX + r"{1,4})"
    r"\.(?P<fn>[0-9]{1,2})\]"
    r"(?:[ \t]+PASID[ \t]+(?P<opasid>" + _HEX + r"{1,8}))?"
    r"[ \t]+fault[ \t]+(?P<what>addr|index)[ \t]+(?P<val>(?:0x)?" + _HEX + r"{1,17})"
    r"(?:[ \t]*\[fault[ \t]+reason[ \t]+(?P<reason>(?:0x)?" + _HEX + r"{1,4}h?)\](?P<text>.*))?[ \t]*$",
    re.IGNORECASE,
)
# The old interrupt report's first line: "INTR-REMAP: Request device [[f0:1f.0] fault index 0".
_OLD_INTR = re.compile(
    r"INTR-REMAP:[ \t]*Request[ \t]+device[ \t]+\[\[(?P<bus>" + _HEX + r"{1,4}):(?P<dev>" + _HEX + r"{1,4})"
    r"\.(?P<fn>[0-9]{1,2})\][ \t]+fault[ \t]+index[ \t]+(?P<val>" + _HEX + r"{1,17})[ \t]*$",
    re.IGNORECASE,
)
# The old report's second line: "DMAR:[fault reason 06] ..." / "INTR-REMAP:[fault reason 34] ...".
_OLD_REASON = re.compile(
    r"(?P<who>DMAR|INTR-REMAP):\[fault[ \t]+reason[ \t]+(?P<reason>[0-9]{1,4})\](?P<text>.*)$",
    re.IGNORECASE,
)
_DRHD = re.compile(r"DRHD:[ \t]+handling[ \t]+fault[ \t]+status[ \t]+reg[ \t]+(?P<fsts>" + _HEX + r"{1,8})[ \t]*$",
                   re.IGNORECASE)
_GROUP = re.compile(
    r"(?P<bus_type>\S+)[ \t]+(?P<dev>\S+):[ \t]+(?P<what>Adding to|Removing from)[ \t]+iommu[ \t]+group[ \t]+"
    r"(?P<group>[0-9]{1,9})[ \t]*$",
    re.IGNORECASE,
)
_GROUP_OLD = re.compile(r"Adding[ \t]+device[ \t]+(?P<dev>\S+)[ \t]+to[ \t]+group[ \t]+(?P<group>[0-9]{1,9})[ \t]*$",
                        re.IGNORECASE)
_GROUP_FAILED = re.compile(r"Failed[ \t]+to[ \t]+add[ \t]+to[ \t]+iommu[ \t]+group[ \t]+[0-9]{1,9}:[ \t]*-?[0-9]+",
                           re.IGNORECASE)

# dmar_fault_dump_ptes() / pgtable_walk(), both string generations (REFERENCE-2 §13.3).
_DUMP_HEAD = re.compile(r"Dump[ \t]+(?P<unit>\S{1,64})[ \t]+table[ \t]+entries[ \t]+for[ \t]+IOVA[ \t]+"
                        r"(?P<iova>0x" + _HEX + r"{1,16})[ \t]*$", re.IGNORECASE)
_V = r"(?:0x)?(" + _HEX + r"{1,16})"
_DUMP_PART = re.compile(
    r"(?P<smroot>scalable[ \t]+mode[ \t]+root[ \t]+entry:[ \t]*hi[ \t]+" + _V + r",[ \t]*low[ \t]+" + _V + r")"
    r"|(?P<root>root[ \t]+entry:[ \t]*" + _V + r")"
    r"|(?P<ctx>context[ \t]+entry:[ \t]*hi[ \t]+" + _V + r",[ \t]*low[ \t]+" + _V + r")"
    r"|(?P<pde>pasid[ \t]+dir[ \t]+entry:[ \t]*" + _V + r")"
    r"|(?P<pte>pasid[ \t]+table[ \t]+entry\[(?P<pte_i>[0-7])\]:[ \t]*" + _V + r")"
    r"|(?P<level>pte[ \t]+level:[ \t]*(?P<lvl>[1-6]),[ \t]*pte[ \t]+value:[ \t]*" + _V + r")"
    r"|(?P<note>(?:root[ \t]+table(?:[ \t]+entry)?|context[ \t]+table(?:[ \t]+entry)?"
    r"|legacy[ \t]+mode[ \t]+page[ \t]+table|pasid[ \t]+directory(?:[ \t]+entry|[ \t]+table)"
    r"|pasid[ \t]+table(?:[ \t]+entry)?|scalable[ \t]+mode[ \t]+page[ \t]+table)[ \t]+is[ \t]+not[ \t]+present"
    r"|(?:PTE|page[ \t]+table)[ \t]+not[ \t]+present[ \t]+at[ \t]+level[ \t]+(?P<nlvl>-?[0-9])"
    r"|device[ \t]+\[" + _HEX + r"{2}:" + _HEX + r"{2}\.[0-7]\][ \t]+not[ \t]+probed"
    r"|no[ \t]+page[ \t]+table[ \t]+setup)",
    re.IGNORECASE,
)

# Words that make a line an IOMMU report (see the module text: what counts as unparsed).
_TRIGGERS = ("request device", "fault addr", "fault index", "fault reason", "fault status reg",
             "table entries for iova", "pte level", "not present at level", "iommu group", "reg_base_addr",
             "root entry:", "context entry:", "pasid dir entry", "pasid table entry", "table is not present",
             "entry is not present", "not probed", "no page table setup")
# A cheap first look: a line with none of these is no IOMMU line at all.
_ANY = ("dmar", "intr-remap", "iommu", "request device", "fault reason", "group")

ERA_TWO_LINE = "two-line"
ERA_54 = "<=5.4"
ERA_513 = "5.5-5.13"
ERA_514 = "5.14"
ERA_NEW = ">=5.15"

DUMP_GEN_OLD = "v5.17-v6.12"   # "PTE not present at level N", "... entry is not present"
DUMP_GEN_NEW = "v6.13+"        # "page table not present at level N-1", "... table is not present"
_NEW_NOTES = ("root table is not present", "context table is not present", "legacy mode page table",
              "pasid directory table", "pasid table is not present", "scalable mode page table",
              "page table not present at level")
_OLD_NOTES = ("root table entry is not present", "context table entry is not present",
              "pasid directory entry is not present", "pasid table entry is not present",
              "pte not present at level", "not probed", "no page table setup")


@dataclass
class PteDump:
    """One dmar_fault_dump_ptes() dump, entries as printed (ints)."""

    line: int                    # the "Dump ... table entries for IOVA" line
    unit: str
    iova: int
    lines: list[int] = field(default_factory=list)
    root: int | None = None      # legacy root entry, or the SM root entry's low word
    root_hi: int | None = None   # SM root entry's high word (devfn 0x80-0xff)
    scalable: bool = False
    context_hi: int | None = None
    context_lo: int | None = None
    pasid_dir: int | None = None
    pasid_entry: dict[int, int] = field(default_factory=dict)   # val[i]
    ptes: list[tuple[int, int]] = field(default_factory=list)   # (level, value)
    notes: list[str] = field(default_factory=list)

    @property
    def generation(self) -> str | None:
        low = " ".join(self.notes).lower()
        if any(n in low for n in _NEW_NOTES):
            return DUMP_GEN_NEW
        if any(n in low for n in _OLD_NOTES):
            return DUMP_GEN_OLD
        return None

    @property
    def first_stage(self) -> bool:
        """The walk printed is a first-stage table (PASID entry PGTT = 1, FL only)."""
        v0 = self.pasid_entry.get(0)
        return self.scalable and v0 is not None and (v0 >> 6) & 7 == 1


@dataclass
class FaultReport:
    line: int
    kind: str                   # "dma" | "intr-remap"
    access: str | None          # "read" | "write" | None (interrupt)
    bdf: str
    pasid: int | None
    addr: int | None
    index: int | None
    reason: int                 # the true code
    printed: str                # the reason string as the log printed it (clipped)
    era: str
    reason_printed: str = ""    # the code as the log printed it: "89", "0x59"
    status_line: int | None = None   # the DRHD line that opened this batch
    dump: PteDump | None = None

    @property
    def reason_text(self) -> str:
        return reason_text(self.reason)

    @property
    def explain(self) -> str:
        return explain(self.reason)


@dataclass
class StatusLine:
    line: int
    fsts: int


@dataclass
class GroupLine:
    line: int
    device: str
    group: int
    added: bool


@dataclass
class KernelLog:
    source: str
    lines: int = 0
    faults: list[FaultReport] = field(default_factory=list)
    unparsed: list[int] = field(default_factory=list)
    units: list[DecodedUnit] = field(default_factory=list)
    groups: list[GroupLine] = field(default_factory=list)
    status: list[StatusLine] = field(default_factory=list)
    orphan_dumps: list[PteDump] = field(default_factory=list)


# --- reading ----------------------------------------------------------------------------

def _hex(text: str) -> int:
    t = text.lower()
    return int(t[2:] if t.startswith("0x") else t, 16)


def _bdf(bus: str, dev: str, fn: str) -> str | None:
    b, d, f = _hex(bus), _hex(dev), int(fn, 10)
    if b > 0xFF or d > 0x1F or f > 7:
        return None
    return f"{b:02x}:{d:02x}.{f}"


def _kept(text: str) -> str:
    return clip(text.strip(), MAX_KEPT_CHARS)


def _fault_from(m: re.Match[str], lineno: int, reason_raw: str | None, text: str,
                two_line: bool = False) -> FaultReport | None:
    """A FaultReport from a match of _FAULT or _OLD_INTR, or None when a field does not
    fit (the line is then unparsed)."""
    groups = m.groupdict()
    bdf = _bdf(m.group("bus"), m.group("dev"), m.group("fn"))
    if bdf is None or reason_raw is None:
        return None
    new_tag = bool(groups.get("nopasid") or groups.get("tpasid"))
    hex_bdf = m.group("bus").lower().startswith("0x")
    hex_printed = (new_tag or hex_bdf or reason_raw.lower().startswith("0x")
                   or reason_raw.lower().endswith("h"))
    if two_line:
        era = ERA_TWO_LINE
    elif hex_printed:
        era = ERA_514 if hex_bdf else ERA_NEW
    elif groups.get("opasid") is not None:
        era = ERA_513
    else:
        era = ERA_54
    reason = true_reason(reason_raw, hex_printed)
    if reason is None:
        return None
    # PASID: v5.14+ "PASID 0x5" or NO_PASID; v5.5-v5.13 "PASID %x" of -1 when none.
    pasid: int | None = None
    for key in ("tpasid", "wpasid", "opasid"):
        raw = groups.get(key)
        if raw is not None:
            value = _hex(raw)
            if key == "opasid" and value == 0xFFFFFFFF:
                break
            if value > 0xFFFFF:  # PASIDs are 20 bits ((c >> 8) & 0xfffff)
                return None
            pasid = value
    value = _hex(m.group("val"))
    if value >> 64:
        return None
    intr = bool(groups.get("intr")) or "rw" not in groups
    if intr:
        if value > 0xFFFF:  # addr >> 48
            return None
        kind, access, addr, index = "intr-remap", None, None, value
    else:
        kind, addr, index = "dma", value, None
        access = "write" if m.group("rw").lower().endswith("write") else "read"
    return FaultReport(line=lineno, kind=kind, access=access, bdf=bdf, pasid=pasid, addr=addr,
                       index=index, reason=reason, printed=_kept(text), era=era,
                       reason_printed=reason_raw)


def _dump_parts(line: str, dump: PteDump) -> bool:
    """Add every dump statement of `line` to `dump`; True when the whole IOMMU part of the
    line was understood (at least one statement)."""
    found = False
    for m in _DUMP_PART.finditer(line):
        found = True
        if m.group("smroot"):
            dump.scalable = True
            dump.root_hi, dump.root = _hex(m.group(2)), _hex(m.group(3))
        elif m.group("root"):
            dump.root = _hex(m.group(5))
        elif m.group("ctx"):
            dump.context_hi, dump.context_lo = _hex(m.group(7)), _hex(m.group(8))
        elif m.group("pde"):
            dump.scalable = True
            dump.pasid_dir = _hex(m.group(10))
        elif m.group("pte"):
            dump.scalable = True
            dump.pasid_entry[int(m.group("pte_i"))] = _hex(m.group(13))
        elif m.group("level"):
            dump.ptes.append((int(m.group("lvl")), _hex(m.group(16))))
        else:
            dump.notes.append(_kept(printable(m.group("note"))))
    return found


def read_kernel_log(text: str, source: str) -> KernelLog:
    """Every fault report, dump, unit and group line of `text` (see the module text).
    Never raises on the log's content: what is not understood is listed in `unparsed`."""
    log = KernelLog(source=source)
    raw_lines = text.split("\n")
    log.lines = len(raw_lines) - (1 if raw_lines and raw_lines[-1] == "" else 0)
    pending: tuple[re.Match[str], int, str] | None = None   # old two-line report, first half
    status: StatusLine | None = None
    dump: PteDump | None = None
    last_fault: FaultReport | None = None
    unparsed: set[int] = set()

    for lineno, raw in enumerate(raw_lines, start=1):
        if pending is not None and lineno > pending[1] + 1:
            # One printk printed both halves: the second is on the very next line.
            unparsed.add(pending[1])
            pending = None
        line = raw[:-1] if raw.endswith("\r") else raw
        if len(line) > MAX_LINE_CHARS:
            # Too long for any kernel line; looked at, not searched.
            low = line[:MAX_LINE_CHARS].lower()
            if any(t in low for t in _TRIGGERS):
                unparsed.add(lineno)
            continue
        low = line.lower()
        if not any(a in low for a in _ANY):
            continue

        # The second half of an old two-line report.
        old = _OLD_REASON.search(line)
        if old is not None:
            if pending is None:
                unparsed.add(lineno)
                continue
            m, first, _ = pending
            pending = None
            f = _fault_from(m, first, old.group("reason"), old.group("text"), two_line=True)
            if f is None:
                unparsed.update((first, lineno))
                continue
            f.status_line = status.line if status else None
            log.faults.append(f)
            last_fault, dump = f, None
            continue
        if pending is not None:   # the first half had no second
            unparsed.add(pending[1])
            pending = None

        m = _FAULT.search(line)
        if m is not None:
            dump = None
            if m.group("reason") is None:
                if all(m.group(k) is None for k in ("intr", "nopasid", "tpasid", "opasid", "wpasid", "wo")):
                    pending = (m, lineno, line)   # "DMAR:[DMA Read] ... fault addr 7fee000 "
                else:
                    unparsed.add(lineno)          # a truncated single-line report
                continue
            f = _fault_from(m, lineno, m.group("reason"), m.group("text") or "")
            if f is None:
                unparsed.add(lineno)
                last_fault = None
                continue
            f.status_line = status.line if status else None
            log.faults.append(f)
            last_fault = f
            continue
        m = _OLD_INTR.search(line)
        if m is not None:
            pending = (m, lineno, line)
            dump = None
            continue

        m = _DRHD.search(line)
        if m is not None:
            status = StatusLine(lineno, _hex(m.group("fsts")))
            log.status.append(status)
            dump = None
            continue

        m = _DUMP_HEAD.search(line)
        if m is not None:
            dump = PteDump(line=lineno, unit=_kept(printable(m.group("unit"))), iova=_hex(m.group("iova")))
            dump.lines.append(lineno)
            # dmar_fault_do_one() dumps right after the fault line, for DMA faults only.
            if (last_fault is not None and last_fault.kind == "dma" and last_fault.dump is None
                    and last_fault.addr == dump.iova):
                last_fault.dump = dump
            else:
                log.orphan_dumps.append(dump)
            continue

        if any(t in low for t in ("iommu group", "adding device")):
            g = _GROUP.search(line)
            if g is not None:
                log.groups.append(GroupLine(lineno, _kept(printable(g.group("dev"))), int(g.group("group")),
                                            g.group("what").lower().startswith("adding")))
                continue
            g = _GROUP_OLD.search(line)
            if g is not None:
                log.groups.append(GroupLine(lineno, _kept(printable(g.group("dev"))), int(g.group("group")), True))
                continue
            if _GROUP_FAILED.search(line):
                continue

        if "reg_base_addr" in low:
            try:
                unit = read_unit_line(line, lineno, source)
            except ValueError:
                unit = None
            if unit is not None:
                log.units.append(unit)
                continue

        if dump is not None and _DUMP_PART.search(line):
            _dump_parts(line, dump)
            dump.lines.append(lineno)
            continue

        if any(t in low for t in _TRIGGERS):
            unparsed.add(lineno)

    if pending is not None:
        unparsed.add(pending[1])
    log.unparsed = sorted(unparsed)
    return log


# --- JSON ---------------------------------------------------------------------------------

def _h(value: int | None) -> str | None:
    return None if value is None else f"{value:#x}"


def _h16(value: int | None) -> str | None:
    return None if value is None else f"0x{value:016x}"


def dump_to_json(d: PteDump) -> dict[str, Any]:
    out: dict[str, Any] = {
        "root": _h16(d.root),
        "context_hi": _h16(d.context_hi),
        "context_lo": _h16(d.context_lo),
        "ptes": [{"level": level, "value": _h16(value)} for level, value in d.ptes],
        # Extensions (DESIGN.md: extend, don't break).
        "line": d.line,
        "lines": list(d.lines),
        "unit": d.unit,
        "iova": _h(d.iova),
        "mode": "scalable" if d.scalable else "legacy",
        "root_hi": _h16(d.root_hi),
        "pasid_dir": _h16(d.pasid_dir),
        "pasid_entry": [_h16(d.pasid_entry.get(i)) for i in range(8)] if d.pasid_entry else None,
        "notes": list(d.notes),
        "generation": d.generation,
    }
    return out


def fault_to_json(f: FaultReport) -> dict[str, Any]:
    return {
        "line": f.line,
        "kind": f.kind,
        "access": f.access,
        "bdf": f.bdf,
        "pasid": f.pasid,
        "addr": _h(f.addr),
        "index": f.index,
        "reason": f.reason,
        "reason_text": f.reason_text,
        "explain": f.explain,
        "dump": None if f.dump is None else dump_to_json(f.dump),
        # Extensions: the era the line's shape names, the reason string as that kernel
        # printed it, and the DRHD status line of its batch.
        "era": f.era,
        "reason_printed": f.reason_printed,
        "printed": f.printed,
        "status_line": f.status_line,
    }


def log_to_json(log: KernelLog) -> dict[str, Any]:
    """The `vtdtui decode --faults --json` object (DESIGN.md, "The kernel's own text")."""
    return {
        "faults": [fault_to_json(f) for f in log.faults],
        "unparsed": list(log.unparsed),
        # Extensions: the other IOMMU lines the log holds.
        "status": [{"line": s.line, "fsts": _h(s.fsts)} for s in log.status],
        "units": [{"name": u.name, "line": u.line, "base": _h(u.base), "cap": _h(u.cap), "ecap": _h(u.ecap)}
                  for u in log.units],
        "groups": [{"line": g.line, "device": g.device, "group": g.group,
                    "action": "add" if g.added else "remove"} for g in log.groups],
    }


# --- words for a terminal -------------------------------------------------------------------

def describe_pte(level: int, value: int, first_stage: bool) -> str:
    """A page-table entry as words: its flags and the address it points to."""
    addr = value & ((1 << 52) - 1) & ~0xFFF
    if first_stage:
        present = bool(value & 1)
        if not present:
            return "not present"
        flags = ["P", "RW" if value & 2 else "RO", "U" if value & 4 else "S"]
        if value & (1 << 63):
            flags.append("XD")
    else:
        present = bool(value & 3)
        if not present:
            return "not present (R=0 W=0)"
        flags = [("R" if value & 1 else "-") + ("W" if value & 2 else "-")]
        if value & (1 << 11):
            flags.append("SNP")
    leaf = level == 1 or bool(value & (1 << 7))
    big = {2: " 2 MiB page", 3: " 1 GiB page"}.get(level, "") if value & (1 << 7) and level > 1 else ""
    what = f"page {addr:#x}{big}" if leaf else f"table {addr:#x}"
    return f"{' '.join(flags)} -> {what}"


def describe_dump(d: PteDump) -> list[str]:
    """The dump's entries decoded, one line each."""
    out = [f"dump (line {d.line}): {d.unit}, IOVA {d.iova:#x}, {'scalable' if d.scalable else 'legacy'} mode"]
    if d.scalable and (d.root is not None or d.root_hi is not None):
        lo, hi = d.root or 0, d.root_hi or 0
        out.append(f"  root entry lo {lo:#018x}: LP={lo & 1} LCTP {lo & ~0xFFF & ((1 << 64) - 1):#x}; "
                   f"hi {hi:#018x}: UP={hi & 1} UCTP {hi & ~0xFFF & ((1 << 64) - 1):#x}")
    elif d.root is not None:
        r = RootEntry.decode(d.root, 0)
        out.append(f"  root entry {d.root:#018x}: {'present' if r.present else 'NOT present'}, "
                   f"context table {r.ctp:#x}")
    if d.context_lo is not None and d.context_hi is not None:
        lo, hi = d.context_lo, d.context_hi
        if d.scalable:
            out.append(f"  context entry hi {hi:#018x} lo {lo:#018x}: P={lo & 1} FPD={(lo >> 1) & 1} "
                       f"DTE={(lo >> 2) & 1} PASIDE={(lo >> 3) & 1} PRE={(lo >> 4) & 1} PDTS={(lo >> 9) & 7} "
                       f"PASID dir {lo & ~0xFFF & ((1 << 64) - 1):#x} RID_PASID {hi & 0xFFFFF:#x}")
        elif not lo & 1:
            out.append(f"  context entry hi {hi:#018x} lo {lo:#018x}: NOT present")
        else:
            c = ContextEntry.decode(lo, hi)
            out.append(f"  context entry hi {hi:#018x} lo {lo:#018x}: P={int(c.present)} FPD={int(c.fpd)} "
                       f"TT={c.tt} DID {c.did} AW {c.aw} ({c.levels}-level, {c.agaw}-bit) "
                       f"table {c.slptptr:#x}")
    if d.pasid_dir is not None:
        v = d.pasid_dir
        out.append(f"  PASID dir entry {v:#018x}: P={v & 1} FPD={(v >> 1) & 1} "
                   f"PASID table {v & ~0xFFF & ((1 << 64) - 1):#x}")
    if d.pasid_entry:
        v0, v1, v2 = (d.pasid_entry.get(i, 0) for i in range(3))
        pgtt = (v0 >> 6) & 7
        pgtt_name = {1: "first-stage", 2: "second-stage", 3: "nested", 4: "pass-through"}.get(pgtt, f"PGTT {pgtt}?")
        out.append(f"  PASID entry val[0] {v0:#018x} val[1] {v1:#018x} val[2] {v2:#018x}: P={v0 & 1} "
                   f"FPD={(v0 >> 1) & 1} {pgtt_name} DID {v1 & 0xFFFF} AW {(v0 >> 2) & 7} "
                   f"SSPTPTR {v0 & ~0xFFF & ((1 << 64) - 1):#x} FSPTPTR {v2 & ~0xFFF & ((1 << 64) - 1):#x}")
    for level, value in d.ptes:
        out.append(f"  level {level} entry {value:#018x}: {describe_pte(level, value, d.first_stage)}")
    for note in d.notes:
        out.append(f"  {note}")
    return out


# --- the table view ---------------------------------------------------------------------------

# Rows the table view shows, all devices together; --json lists every fault.
MAX_TABLE_ROWS = 400


def render_table(log: KernelLog):
    """A rich renderable: faults grouped per device, each reason explained once per
    device, dumps decoded.  Readable at 80 columns."""
    from rich.console import Group
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    by_device: dict[str, list[FaultReport]] = {}
    for f in log.faults:
        by_device.setdefault(f.bdf, []).append(f)
    devices = sorted(by_device)
    parts: list[Any] = []
    nf = len(log.faults)
    head = (f"{printable(clip(log.source, 120))}: {nf} fault{'s' * (nf != 1)} on {len(devices)} "
            f"device{'s' * (len(devices) != 1)}")
    if log.unparsed:
        shown = ", ".join(str(n) for n in log.unparsed[:20]) + (" …" if len(log.unparsed) > 20 else "")
        head += f"; {len(log.unparsed)} line{'s' * (len(log.unparsed) != 1)} not understood: {shown}"
    parts.append(Text(head, style="bold"))
    groups_of = {}
    for g in log.groups:
        if g.added:
            name = g.device[5:] if g.device.startswith("0000:") else g.device
            groups_of[name] = g.group
    rows = 0
    hidden = 0
    for bdf in devices:
        faults = by_device[bdf]
        if rows >= MAX_TABLE_ROWS:
            hidden += len(faults)
            continue
        title = f"{bdf}: {len(faults)} fault{'s' * (len(faults) != 1)}"
        if bdf in groups_of:
            title += f", iommu group {groups_of[bdf]}"
        table = Table(title=Text(title), title_justify="left", expand=False)
        for column, kw in (("line", {"justify": "right"}), ("access", {}), ("PASID", {}),
                           ("address / index", {"overflow": "fold"}), ("reason", {"overflow": "fold"})):
            table.add_column(column, **kw)
        for f in faults:
            if rows >= MAX_TABLE_ROWS:
                hidden += 1
                continue
            rows += 1
            where = f"{f.addr:#x}" if f.addr is not None else f"index {f.index:#x}"
            access = f.access or "interrupt"
            pasid = "-" if f.pasid is None else f"{f.pasid:#x}"
            table.add_row(str(f.line), access, pasid, where, f"{f.reason:#04x} {f.reason_text}")
        parts.append(table)
        seen: set[int] = set()
        for f in faults:
            if f.reason in seen:
                continue
            seen.add(f.reason)
            parts.append(Padding(Text(f"{f.reason:#04x} {f.reason_text}: {f.explain}"), (0, 0, 0, 2)))
            era = {ERA_TWO_LINE: "an old two-line report", ERA_54: "a v5.4-or-older line",
                   ERA_513: "a v5.5-v5.13 line", ERA_514: "a v5.14 line", ERA_NEW: "a v5.15-or-newer line"}[f.era]
            if f.era in (ERA_TWO_LINE, ERA_54, ERA_513):
                parts.append(Padding(Text(f"(line {f.line} is {era}: its \"fault reason "
                                          f"{printable(f.reason_printed)}\" is decimal, code {f.reason:#04x})",
                                          style="dim"), (0, 0, 0, 4)))
        for f in faults:
            if f.dump is not None:
                first, *rest = describe_dump(f.dump)
                parts.append(Padding(Text(printable(first)), (0, 0, 0, 2)))
                parts.append(Padding(Text("\n".join(printable(s.strip()) for s in rest)), (0, 0, 0, 4)))
        parts.append(Text(""))
    if hidden:
        parts.append(Text(f"… {hidden} more fault{'s' * (hidden != 1)} not shown (--json lists every one)"))
    return Group(*parts)
