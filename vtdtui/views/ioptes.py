"""A domain's second-level page tables as an expandable tree.

Only expanded tables are read, so a domain with a million leaves costs no more than
the tables a user opened.  Node keys are (level, IOVA base): stable across undo,
which rebuilds the machine and moves nothing a user can see.  Each slot is read
both as the CPU wrote it and as the unit would read it; when they differ (a skipped
clflush on a unit without ECAP.C) the row says what the unit sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..hw.entries import ENTRIES_PER_TABLE, PTE_ADDR_MASK, PTE_PS, Pte, level_shift
from ..hw.memory import MemoryError_
from ..machine.parse import fmt_size
from .style import Line, plain

Key = tuple[int, int]  # (level, iova base) of a table entry


@dataclass(frozen=True)
class PteRow:
    key: Key | None
    line: Line
    expandable: bool = False


@dataclass
class PteTree:
    """The expansion state of one tree; rows() reads only what is open."""

    expanded: set[Key] = field(default_factory=set)
    touched: bool = False  # the user opened or closed something: stop auto-expanding

    def toggle(self, key: Key) -> None:
        self.touched = True
        self.expanded.symmetric_difference_update({key})

    def expand_first_path(self, table: int, levels: int, read) -> None:
        """Open the path to the first present leaf, so a new user sees one at once.
        Tables emptied by an unmap stay allocated, so the search backtracks."""
        self.expanded.update(_first_leaf_path(table, levels, 0, read) or [])

    def rows(self, table: int, levels: int, read_page, unit_read_page) -> list[PteRow]:
        """`read_page(addr)` gives a table's 512 words as the CPU wrote them,
        `unit_read_page(addr)` as the unit would read them."""
        out: list[PteRow] = []
        self._table(out, table, levels, 0, 0, read_page, unit_read_page)
        return out

    def _table(self, out, table, level, base, depth, read_page, unit_read_page) -> None:
        span = 1 << level_shift(level)
        pad = "  " * depth
        words, unit_words = read_page(table), unit_read_page(table)
        for i in [i for i, (a, b) in enumerate(zip(words, unit_words)) if a & 3 or b & 3]:
            raw, seen = words[i], unit_words[i]
            iova = base + i * span
            pte = Pte(raw)
            leaf = level == 1 or pte.ps
            key = (level, iova)
            perms = ("R" if pte.r else "-") + ("W" if pte.w else "-")
            if not pte.present:
                line = ((f"{pad}  L{level}[{i:3}] ", "key"), (f"{iova:#014x} ", "addr"), ("not present", "np"))
                out.append(PteRow(key, line))
            elif leaf:
                kind = "4K" if level == 1 else f"{fmt_size(span)} leaf (PS)"
                line = ((f"{pad}  L{level}[{i:3}] ", "key"), (f"{iova:#014x} ", "addr"), (f"{kind:<13}", "head"),
                        (f"{perms} ", "on"), ("SNP " if pte.snp else "    ", "on"),
                        (f"→ {pte.addr:#x} ", "addr"), (f"{raw:016x}", "dim"))
                out.append(PteRow(key, line))
            else:
                open_ = key in self.expanded
                line = ((f"{pad}{'▾' if open_ else '▸'} L{level}[{i:3}] ", "key"),
                        (f"{iova:#014x}-{iova + span - 1:#014x} ", "addr"), (f"{perms} ", "on"),
                        (f"table {pte.addr:#x} ", "addr"), (f"{raw:016x}", "dim"))
                out.append(PteRow(key, line, expandable=True))
            if seen != raw:
                warn = plain(f"{pad}    ⚠ the unit reads {seen:016x}: the write is not yet visible to it", "stale")
                out.append(PteRow(key, warn, expandable=out[-1].expandable))
            if not leaf and pte.present and key in self.expanded:
                self._table(out, pte.addr, level - 1, iova, depth + 1, read_page, unit_read_page)


def _first_leaf_path(table: int, level: int, base: int, read) -> list[Key] | None:
    """Keys of the tables above the first present leaf under `table`, or None."""
    for i in range(ENTRIES_PER_TABLE):
        pte = _read(read, table + i * 8)
        if not pte & 3:
            continue
        iova = base + (i << level_shift(level))
        if level == 1 or pte & PTE_PS:
            return []
        below = _first_leaf_path(pte & PTE_ADDR_MASK, level - 1, iova, read)
        if below is not None:
            return [(level, iova)] + below
    return None


def _read(read, addr: int) -> int:
    try:
        return read(addr)
    except MemoryError_:
        return 0
