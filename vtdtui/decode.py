"""Decode CAP / ECAP values, given directly or found in a boot log.

Linux prints both registers of every remapping unit at boot (drivers/iommu/intel/dmar.c,
alloc_iommu).  Current kernels, with pr_fmt "DMAR: ":

    DMAR: dmar1: reg_base_addr fed91000 ver 1:0 cap d2008c40660462 ecap f050da

and older kernels:

    dmar: IOMMU 1: reg_base_addr fed91000 ver 1:0 cap d2008c40660462 ecap f050da

This module is core: it never imports textual, and imports rich only when rendering.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from vtdtui.hw.regs import CAP, ECAP, RegisterLayout, linux_view, parse_reg_value
from vtdtui.limits import MAX_LINE_CHARS, MAX_UNITS
from vtdtui.textsafe import clip, printable

# Searched for anywhere in a line so that dmesg timestamps, `dmesg -T` dates and
# syslog/journalctl prefixes need no special handling.
_HEAD = re.compile(
    r"\bdmar:\s*(?:dmar(?P<num>[0-9]+)|iommu\s+(?P<seq>[0-9]+))\s*:\s*reg_base_addr\b",
    re.IGNORECASE,
)
_TAIL = re.compile(
    r"\s+(?P<base>\S+)\s+ver\s+(?P<ver>\S+)\s+cap\s+(?P<cap>\S+)\s+ecap\s+(?P<ecap>\S+)",
    re.IGNORECASE,
)


@dataclass
class DecodedUnit:
    name: str
    cap: int | None
    ecap: int | None
    base: int | None = None
    ver: str | None = None
    line: int | None = None


def read_unit_line(raw: str, lineno: int, source: str) -> DecodedUnit | None:
    """The unit of one log line: None when the line is no unit line, a DecodedUnit
    when it is one, ValueError naming `source:lineno` when it starts like one but is
    not (truncated, a field that is not hex, a line longer than MAX_LINE_CHARS).

    The one reader of unit lines: parse_dmesg uses it for `decode --dmesg`, and the
    kernel-text reader (vtdtui/kernel/dmesg.py) for the unit lines of any log."""
    head = _HEAD.search(raw)
    if head is None:
        return None
    place = f"{source}:{lineno}"
    # Limits before the work: other lines may be long (syslog), a unit line is not.
    if len(raw) > MAX_LINE_CHARS:
        raise ValueError(f"{place}: unit line longer than {MAX_LINE_CHARS:,} characters (MAX_LINE_CHARS)")
    tail = _TAIL.match(raw, head.end())
    if tail is None:
        # A truncated unit line would otherwise hide a unit without a word.
        raise ValueError(
            f"{place}: expected 'reg_base_addr ADDR ver X:Y cap HEX ecap HEX'"
        )
    num = head.group("num") or head.group("seq")
    if len(num) > 9:  # the kernel's seq_id is an int; int() of 5,000 digits names no place
        raise ValueError(f"{place}: unit number {clip(num, 24)} is not a unit number")
    return DecodedUnit(
        name=f"dmar{int(num)}",
        cap=parse_reg_value(tail.group("cap"), f"{place}: cap"),
        ecap=parse_reg_value(tail.group("ecap"), f"{place}: ecap"),
        base=parse_reg_value(tail.group("base"), f"{place}: reg_base_addr"),
        ver=tail.group("ver"),
        line=lineno,
    )


def parse_dmesg(text: str, source: str) -> list[DecodedUnit]:
    """Every unit line in `text`, in order; a unit printed twice appears twice.

    Raises ValueError naming `source` (and the line, where there is one) on bad input.
    """
    units: list[DecodedUnit] = []
    # split("\n") rather than splitlines(): line numbers must match what an editor shows,
    # and splitlines() also breaks on form feeds and other rare separators.
    for lineno, raw in enumerate(text.split("\n"), start=1):
        if _HEAD.search(raw) is None:
            continue
        if len(units) == MAX_UNITS and len(raw) <= MAX_LINE_CHARS:
            raise ValueError(f"{source}:{lineno}: more than {MAX_UNITS} unit lines (MAX_UNITS)")
        unit = read_unit_line(raw, lineno, source)
        if unit is not None:
            units.append(unit)
    if not units:
        raise ValueError(
            f"{source}: no 'DMAR: dmarN: reg_base_addr ... cap ... ecap ...' line found"
        )
    return units


def _hex(value: int | None) -> str | None:
    return None if value is None else f"{value:#x}"


def _register_json(layout: RegisterLayout, value: int | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"raw": _hex(value), "fields": layout.decode(value)}


def unit_to_json(u: DecodedUnit) -> dict[str, Any]:
    """The `vtdtui decode --json` object for one unit (DESIGN.md, Command line)."""
    return {
        "name": u.name,
        "cap": _register_json(CAP, u.cap),
        "ecap": _register_json(ECAP, u.ecap),
        "base": _hex(u.base),
        "ver": u.ver,
        "line": u.line,
        "linux": linux_view(u.cap, u.ecap),
    }


def _field_value(value: int, width: int) -> str:
    if width == 1:
        return str(value)
    return f"{value:#x}" if value < 10 else f"{value:#x} ({value})"


def _linux_value(accessor: str, value: int) -> str:
    # Offsets read naturally in hex, counts and widths in decimal.
    return f"{value:#x}" if accessor.endswith("_offset") else str(value)


def render_table(units: Iterable[DecodedUnit]):
    """A rich renderable: one table per register of each unit."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    for u in units:
        where = [printable(u.name)]
        if u.base is not None:
            where.append(f"reg_base_addr {u.base:#x}")
        if u.ver is not None:  # a field of the log, shown to a terminal: escaped, cut
            where.append(f"ver {printable(clip(u.ver, 32))}")
        if u.line is not None:
            where.append(f"line {u.line}")
        parts.append(Text("  ".join(where), style="bold"))
        linux = linux_view(u.cap, u.ecap)
        for layout, value in ((CAP, u.cap), (ECAP, u.ecap)):
            if value is None:
                continue
            table = Table(title=Text(f"{printable(u.name)} {layout.name} {value:#x}"), title_justify="left")
            for column in ("field", "bits", "value", "meaning", "Linux"):
                table.add_column(column, overflow="fold")
            for f in layout:
                raw = f.get(value)
                accessor = f.linux
                if accessor in linux and linux[accessor] != raw:
                    accessor = f"{accessor} = {_linux_value(accessor, linux[accessor])}"
                table.add_row(f.name, f.bits, _field_value(raw, f.width), f.meaning, accessor)
            undefined = value & ~layout.defined_mask
            if undefined:
                table.caption = f"bits outside the fields above: {undefined:#x}"
            parts.append(table)
        parts.append(Text(""))
    return Group(*parts)
