"""Root and context tables of one unit, as software wrote them (what debugfs shows).

Each row also says when the unit would read something else — a line still dirty in
the CPU cache on a unit without page-walk coherency, or a write held in the RWBF
write buffer — because that difference is what a skipped clflush or flush causes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..hw.entries import ROOT_ENTRY_SIZE, TT_NAMES, ContextEntry, RootEntry, bdf_str
from ..hw.memory import MemoryError_
from ..hw.unit import DmarUnit
from ..machine import Machine
from .style import Line, plain


@dataclass(frozen=True)
class Row:
    key: object  # what Enter drills into: a bus number, a source id, or None
    line: Line


def _pair(u: DmarUnit, addr: int, read) -> tuple[int, int] | None:
    try:
        return read(addr), read(addr + 8)
    except MemoryError_:
        return None


def unit_view_differs(u: DmarUnit, addr: int) -> str:
    """What the unit reads at a 16-byte entry when it is not what the CPU wrote."""
    cpu, hw = _pair(u, addr, u.cpu_read_q), _pair(u, addr, u.hw_read_q)
    if cpu == hw or hw is None:
        return ""
    why = "posted in the write buffer" if u.rwbf and u._write_buffer.get(addr & ~63) else "not flushed from the CPU cache"
    return f"⚠ unit reads {hw[1]:016x}:{hw[0]:016x} ({why})"


def root_rows(m: Machine, name: str) -> list[Row]:
    u = m.units[name]
    rta = u.rta_latched & ~0xFFF
    head = plain(f"root table @ {rta:#x} (RTADDR latched by SRTP) · present buses · Enter: context table", "dim")
    rows = [Row(None, head)]
    if not rta:
        return [Row(None, plain("no root table: translation is not set up on this unit", "warn"))]
    for bus, addr, re_ in u.present_entries(rta, RootEntry.decode):
        line = ((f"bus {bus:02x}  ", "key"), ("P=1 ", "on"), (f"CTP {re_.ctp:#x}  ", "addr"),
                (f"{re_.hi:016x}:{re_.lo:016x}", "dim"))
        rows.append(Row(bus, line))
        diff = unit_view_differs(u, addr)
        if diff:
            rows.append(Row(bus, plain("        " + diff, "stale")))
    if len(rows) == 1:
        rows.append(Row(None, plain("no present root entries", "dim")))
    return rows


def context_rows(m: Machine, name: str, bus: int) -> list[Row]:
    u = m.units[name]
    rta = u.rta_latched & ~0xFFF
    pair = _pair(u, rta + bus * ROOT_ENTRY_SIZE, u.cpu_read_q) if rta else None
    re_ = RootEntry.decode(*pair) if pair else None
    if re_ is None or not re_.present:
        return [Row(None, plain(f"bus {bus:02x} has no present root entry · Backspace: root table", "warn"))]
    names = m.device_names(name)
    rows = [Row(None, plain(f"context table of bus {bus:02x} @ {re_.ctp:#x} · Enter: page tables · Backspace: root", "dim"))]
    for dfn, addr, ce in u.present_entries(re_.ctp, ContextEntry.decode):
        sid = bus << 8 | dfn
        who = names.get(sid)
        label = f"grp {who[0]} {who[1]}" if who else ""
        line = ((f"{bdf_str(sid)} ", "key"), (f"DID {ce.did:<4}", "head"), (f" TT {ce.tt} ", ""),
                (f"AW {ce.aw} ({ce.agaw}-bit) ", "dim"), (f"SLPTPTR {ce.slptptr:#x} ", "addr"),
                ("FPD " if ce.fpd else "", "warn"), (TT_NAMES[ce.tt] + "  ", "dim"), (label, "dim"))
        rows.append(Row(sid, line))
        rows.append(Row(sid, plain(f"          {ce.hi:016x}:{ce.lo:016x}", "dim")))
        diff = unit_view_differs(u, addr)
        if diff:
            rows.append(Row(sid, plain("          " + diff, "stale")))
    if len(rows) == 1:
        rows.append(Row(None, plain("no present context entries on this bus (attach a group: g, a)", "dim")))
    return rows


def context_entry(m: Machine, name: str, sid: int) -> ContextEntry | None:
    """The present context entry for `sid` as software wrote it."""
    u = m.units[name]
    cr = u.read_context(sid, u.cpu_read_q)
    return cr.entry if cr.entry is not None and cr.entry.present else None
