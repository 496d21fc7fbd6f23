"""Root and context tables of one unit, as software wrote them (what debugfs shows).

Each row also says when the unit would read something else — a line still dirty in
the CPU cache on a unit without page-walk coherency, or a write held in the RWBF
write buffer — because that difference is what a skipped clflush or flush causes.

A unit in scalable mode (RTADDR.SMT latched) shows its scalable-mode root entries
(LCTP/UCTP), the 256-bit context entries of a bus and, under each, the device's PASID
directory and PASID entries (PGTT, DID, FSPTPTR/SSPTPTR, PGSNP, PWSNP, FLPM, AW):
Enter on any of those rows opens the page tables the PASID entry points to.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..hw.entries import ROOT_ENTRY_SIZE, TT_NAMES, TT_PASS_THROUGH, ContextEntry, RootEntry, bdf_str
from ..hw.memory import MemoryError_
from ..hw.sm_entries import PASID_DIR_ENTRY_SIZE, PGTT_FL_ONLY, PGTT_NESTED, PGTT_PT, PasidDirEntry, PasidEntry
from ..hw.unit import DmarUnit
from ..machine import Machine
from ..machine.state import (MAX_DIR_ENTRIES, pasid_dir, pasid_entry, pasid_table, sm_context, sm_contexts, sm_mode,
                             sm_roots)
from .ioptes import Levels
from .style import Line, plain

# PASID entries shown under one context entry (the RID_PASID one first): enough for
# what Linux sets up (PASID 0, SVA and iommufd PASIDs), bounded for any table.
MAX_PASID_ROWS = 16


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


def unit_view_differs_sm(u: DmarUnit, addr: int, size: int) -> str:
    """unit_view_differs() for a scalable-mode structure of `size` bytes (a 32-byte
    context entry, a 64-byte PASID entry)."""
    for off in range(0, size, 16):
        diff = unit_view_differs(u, addr + off)
        if diff:
            return diff + (f" at +{off:#x}" if off else "")
    return ""


def root_rows(m: Machine, name: str) -> list[Row]:
    u = m.units[name]
    if sm_mode(u):
        return _sm_root_rows(u)
    rta = u.rta_latched & ~0xFFF
    if not rta:
        return [Row(None, plain("no root table: translation is not set up on this unit", "warn"))]
    head = plain(f"root table @ {rta:#x} (RTADDR latched by SRTP) · present buses · Enter: context table", "dim")
    return _root_table_rows(u, head, u.present_entries(rta, RootEntry.decode), lambda bus, re_: (
        (f"bus {bus:02x}  ", "key"), ("P=1 ", "on"), (f"CTP {re_.ctp:#x}  ", "addr"),
        (f"{re_.hi:016x}:{re_.lo:016x}", "dim")))


def _root_table_rows(u: DmarUnit, head, entries, line) -> list[Row]:
    """The rows of a root table, legacy or scalable: `head`, then `line(bus, entry)` for
    each present (bus, address, entry), each with the unit's view where it differs."""
    rows = [Row(None, head)]
    for bus, addr, re_ in entries:
        rows.append(Row(bus, line(bus, re_)))
        diff = unit_view_differs(u, addr)
        if diff:
            rows.append(Row(bus, plain("        " + diff, "stale")))
    if len(rows) == 1:
        rows.append(Row(None, plain("no present root entries", "dim")))
    return rows


def _sm_root_rows(u: DmarUnit) -> list[Row]:
    rta = u.rta_latched & ~0xFFF
    page = _same_page(u, rta) if rta else None
    key = ("root", rta, page)
    rows = _CACHE.get(key) if page is not None else None
    if rows is None:
        rows = _sm_root_rows_read(u, rta)
        if page is not None:
            _keep(key, rows)
    return list(rows)  # the kept list stays as it was built


def _sm_root_rows_read(u: DmarUnit, rta: int) -> list[Row]:
    head = plain(f"scalable-mode root table @ {rta:#x} (RTADDR.SMT=1) · LCTP devfn 00-7f, UCTP 80-ff · "
                 "Enter: context table", "dim")
    return _root_table_rows(u, head, sm_roots(u), lambda bus, re_: (
        (f"bus {bus:02x}  ", "key"),
        (f"LP={int(re_.lp)} ", "on" if re_.lp else "dim"), (f"LCTP {re_.lctp:#x}  ", "addr"),
        (f"UP={int(re_.up)} ", "on" if re_.up else "dim"), (f"UCTP {re_.uctp:#x}  ", "addr"),
        (f"{re_.hi:016x}:{re_.lo:016x}", "dim")))


# ----------------------------------------------------------------------- kept rows
# At 4,096 devices a key re-read the bus's 32 PASID directories and tables and the
# root table's 128 entries (~8 ms) to show rows that had not changed.  Rows are a
# pure function of the words they are read from, so they are kept keyed by those
# words: the page as the CPU wrote it (what debugfs shows), when the unit reads the
# same page (else a "⚠ unit reads" row depends on the write buffer and the CPU
# cache's dirty lines: those rows are built fresh every time).  A key still reads
# the pages (C-speed copies, compared and hashed as tuples) but decodes and formats
# only what changed.  Keyed by content, not by the machine: undo, redo and a second
# machine cannot leave a row stale.
_CACHE: dict[tuple, list[Row]] = {}
# Row blocks kept; emptied when full (a key refills what it shows).  A block's key
# holds its PASID directory and tables as tuples (~8 KiB a device): 1,024 bound it
# to some 8 MiB, and cover the 256 devices a bus can have with room for a few buses.
_CACHE_LIMIT = 1024
MAX_KEPT_TABLES = 64  # PASID tables in one device's key


def _keep(key: tuple, rows: list[Row]) -> None:
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.clear()
    _CACHE[key] = rows


def _same_page(u: DmarUnit, addr: int) -> tuple[int, ...] | None:
    """The 4 KiB page at `addr` as the CPU wrote it, when the unit reads the same
    words (no dirty line unflushed on a non-coherent unit, nothing posted in the write
    buffer); None otherwise or when the page is outside memory."""
    try:
        cpu = u.cpu_read_page(addr)
        # DmarUnit.hw_read_page(): a snooping unit with nothing posted reads what the
        # CPU sees, by construction; only otherwise is there a second view to compare.
        if not ((u.coherent or u.emulated_by_qemu) and not u._write_buffer) and cpu != u.hw_read_page(addr):
            return None
    except MemoryError_:
        return None
    return tuple(cpu)


def _pgtt_ptr(pe: PasidEntry) -> tuple[str, int]:
    """The table the PASID entry translates through, as dmar_fault_dump_ptes() picks it:
    FSPTPTR (val[2]) for first stage, SSPTPTR (val[0]) otherwise."""
    return ("FSPTPTR", pe.fsptptr) if pe.pgtt == PGTT_FL_ONLY else ("SSPTPTR", pe.ssptptr)


def pasid_entry_line(pasid: int, pe: PasidEntry, pad: str = "") -> Line:
    ptr_name, ptr = _pgtt_ptr(pe)
    flags = " ".join(n for n, on in (("PGSNP", pe.pgsnp), ("PWSNP", pe.pwsnp), ("SRE", pe.sre), ("WPE", pe.wpe),
                                     ("EAFE", pe.eafe), ("SSADE", pe.ssade), ("FPD", pe.fpd)) if on)
    levels = pe.fs_levels if pe.pgtt == PGTT_FL_ONLY else pe.ss_levels
    where = "" if pe.pgtt == PGTT_PT else f"{ptr_name} {ptr:#x} "
    nested = f"FSPTPTR {pe.fsptptr:#x} " if pe.pgtt == PGTT_NESTED else ""
    return ((f"{pad}PASID {pasid:<5}", "key"), ("P=1 " if pe.present else "P=0 ", "on" if pe.present else "np"),
            (f"PGTT {pe.pgtt} {pe.pgtt_name:<13}", "head"), (f"DID {pe.did:<4} ", "head"),
            (where + nested, "addr"), (f"FLPM {pe.flpm} AW {pe.aw} ({levels}-level) ", "dim"),
            (flags, "on"))


def _sm_context_rows(m: Machine, name: str, u: DmarUnit, bus: int) -> list[Row]:
    re_ = next((r for b, _a, r in sm_roots(u) if b == bus), None)
    if re_ is None:
        return [Row(None, plain(f"bus {bus:02x} has no present root entry · Backspace: root table", "warn"))]
    names = m.device_names(name)
    rows = [Row(None, plain(f"context tables of bus {bus:02x} (256-bit entries) @ LCTP {re_.lctp:#x} / UCTP "
                            f"{re_.uctp:#x} · Enter: page tables · Backspace: root", "dim"))]
    ctx_pages: dict[int, tuple[int, ...] | None] = {}  # the LCTP and UCTP tables, read once
    for devfn, addr, ce in sm_contexts(u, bus, re_):
        sid = bus << 8 | devfn
        who = names.get(sid)
        label = f"grp {who[0]} {who[1]}" if who else ""
        table = addr & ~0xFFF
        if table not in ctx_pages:
            ctx_pages[table] = _same_page(u, table)
        rows += _sm_device_rows(u, sid, addr, ce, label, ctx_pages[table])
    if len(rows) == 1:
        rows.append(Row(None, plain("no present context entries on this bus (probe sets them up: none here)", "dim")))
    return rows


def _sm_device_rows(u: DmarUnit, sid: int, addr: int, ce, label: str, ctx_page: tuple[int, ...] | None) -> list[Row]:
    """A device's context entry and its PASID rows, kept (see _CACHE) keyed by the
    words of every page they are read from: the context table (`ctx_page`, from
    _same_page), the PASID directory pages and the present PASID tables."""
    key = _device_key(u, sid, addr, ce, label, ctx_page) if ctx_page is not None else None
    rows = _CACHE.get(key) if key is not None else None
    if rows is None:
        rows = _sm_device_rows_read(u, sid, addr, ce, label)
        if key is not None:
            _keep(key, rows)
    return rows


def _device_key(u: DmarUnit, sid: int, addr: int, ce, label: str, ctx_page: tuple[int, ...]) -> tuple | None:
    """What _sm_device_rows_read() reads, as words: None when the unit would read any of
    it differently from the CPU (then the rows carry a "⚠ unit reads" line)."""
    pages = [ctx_page]
    dirs = _dir_pages(u, ce)
    if dirs is None:
        return None
    for dir_words in dirs:
        pages.append(dir_words)
    tables = _present_tables(ce, dirs)
    if tables is None:
        return None
    for table in tables:
        pages.append(_same_page(u, table))
    if any(p is None for p in pages):
        return None
    return ("dev", sid, addr, label, ce.words, *pages)


def _dir_pages(u: DmarUnit, ce) -> list[tuple[int, ...]] | None:
    """The PASID directory pages pasid_dir() reads, as words (None: see _same_page)."""
    n = min(ce.dir_entries, MAX_DIR_ENTRIES)
    out = []
    for first in range(0, n, 4096 // PASID_DIR_ENTRY_SIZE):
        words = _same_page(u, ce.pasiddirptr + first * PASID_DIR_ENTRY_SIZE)
        if words is None:
            return None
        out.append(words)
    return out


def _present_tables(ce, dirs: list[tuple[int, ...]]) -> list[int] | None:
    """The PASID tables of present directory entries, in directory order (all of them:
    a table of zeros shows no row, so the rows may reach any of them); None past
    MAX_KEPT_TABLES (such a device's rows are built fresh, as before)."""
    n = min(ce.dir_entries, MAX_DIR_ENTRIES)
    per_page = 4096 // PASID_DIR_ENTRY_SIZE
    tables = []
    for k, words in enumerate(dirs):
        for raw in filter(None, words[: n - k * per_page]):  # the zero words skipped at C speed
            de = PasidDirEntry.decode(raw)
            if de.present:
                if len(tables) == MAX_KEPT_TABLES:
                    return None
                tables.append(de.table)
    return tables


def _sm_device_rows_read(u: DmarUnit, sid: int, addr: int, ce, label: str) -> list[Row]:
    flags = " ".join(n for n, on in (("DTE", ce.dte), ("PASIDE", ce.paside), ("PRE", ce.pre), ("FPD", ce.fpd))
                     if on) or "-"
    line = ((f"{bdf_str(sid)} ", "key"), (f"PASIDDIRPTR {ce.pasiddirptr:#x} ", "addr"),
            (f"PDTS {ce.pdts} ({ce.dir_entries} dir entries) ", "dim"), (f"{flags} ", "on"),
            (f"RID_PASID {ce.rid_pasid}  ", ""), (label, "dim"))
    rows = [Row(sid, line)]
    w = ce.words
    rows.append(Row(sid, plain(f"          {w[3]:016x}:{w[2]:016x}:{w[1]:016x}:{w[0]:016x}", "dim")))
    diff = unit_view_differs_sm(u, addr, 32)
    if diff:
        rows.append(Row(sid, plain("          " + diff, "stale")))
    return rows + _pasid_rows(u, sid, ce)


def _pasid_rows(u: DmarUnit, sid: int, ce) -> list[Row]:
    """The device's PASID directory entries and the PASID entries under them."""
    rows: list[Row] = []
    shown = 0
    for d, de in pasid_dir(u, ce):
        rows.append(Row(sid, ((f"            dir[{d}] ", "key"), ("P=1 " if de.present else "P=0 ", "on" if de.present else "np"),
                              (f"PASID table {de.table:#x} ", "addr"), (f"PASIDs {d << 6}-{(d << 6) + 63}", "dim"))))
        if not de.present:
            continue
        for i, addr, pe in pasid_table(u, de.table):
            if shown == MAX_PASID_ROWS:
                rows.append(Row(sid, plain("              … more PASID entries", "dim")))
                return rows
            shown += 1
            rows.append(Row(sid, pasid_entry_line(d << 6 | i, pe, "              ")))
            v = pe.val
            rows.append(Row(sid, plain(f"                val[2..0] {v[2]:016x}:{v[1]:016x}:{v[0]:016x}", "dim")))
            diff = unit_view_differs_sm(u, addr, 64)
            if diff:
                rows.append(Row(sid, plain("                " + diff, "stale")))
    if not rows:
        rows.append(Row(sid, plain("            PASID directory: no entries", "dim")))
    return rows


def context_rows(m: Machine, name: str, bus: int) -> list[Row]:
    u = m.units[name]
    if sm_mode(u):
        return _sm_context_rows(m, name, u, bus)
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


@dataclass(frozen=True)
class SmTranslation:
    """What the IOPTE pane needs of a scalable-mode device, in a legacy context entry's
    terms: the RID_PASID PASID entry's DID, the table it points to (FSPTPTR for first
    stage, SSPTPTR otherwise) in `slptptr`, its levels (carrying the stage, see
    ioptes.Levels) and `tt` 2 for pass-through (PGTT 4)."""

    did: int
    slptptr: int
    levels: Levels
    tt: int
    pasid: int
    entry: PasidEntry

    @property
    def stage(self) -> str:
        return self.levels.stage


def sm_translation(m: Machine, name: str, sid: int, pasid: int | None = None) -> SmTranslation | None:
    """The page-table root of `sid` (RID_PASID, or `pasid`) in scalable mode, or None
    when the context or PASID entry is not present."""
    u = m.units[name]
    ce = sm_context(u, sid)
    if ce is None:
        return None
    p = ce.rid_pasid if pasid is None else pasid
    pe = pasid_entry(u, sid, p)
    if pe is None or not pe.present:
        return None
    if pe.pgtt == PGTT_FL_ONLY:
        levels = Levels(pe.fs_levels, "first")
    else:
        levels = Levels(pe.ss_levels, "nested" if pe.pgtt == PGTT_NESTED else "second")
    tt = TT_PASS_THROUGH if pe.pgtt == PGTT_PT else 0
    ptr = pe.fsptptr if pe.pgtt == PGTT_FL_ONLY else pe.ssptptr
    return SmTranslation(pe.did, ptr, levels, tt, p, pe)


def context_entry(m: Machine, name: str, sid: int) -> ContextEntry | SmTranslation | None:
    """The present context entry for `sid` as software wrote it; in scalable mode what
    its RID_PASID PASID entry says (SmTranslation: did, slptptr, levels, tt alike)."""
    u = m.units[name]
    if sm_mode(u):
        return sm_translation(m, name, sid)
    cr = u.read_context(sid, u.cpu_read_q)
    return cr.entry if cr.entry is not None and cr.entry.present else None
