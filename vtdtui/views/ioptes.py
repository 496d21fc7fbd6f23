"""A domain's page tables as an expandable tree: second-level (second-stage) tables,
or first-stage (IA-32e format) ones for a first-stage domain in scalable mode.

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
from ..hw.sm_entries import FsPte
from ..machine.parse import fmt_size
from .style import Line, plain

Key = tuple[int, int]  # (level, iova base) of a table entry


class Levels(int):
    """A table depth that also says which format the tables are in: "second" (the
    default: legacy mode, second stage, nested's second stage) or "first" (IA-32e
    format, FsPte).  An int, so that whoever only wants the depth uses it as one."""

    stage: str

    def __new__(cls, levels: int, stage: str = "second") -> "Levels":
        obj = super().__new__(cls, levels)
        obj.stage = stage
        return obj

    def __reduce__(self):
        return (Levels, (int(self), self.stage))


def stage_of(levels: int) -> str:
    return getattr(levels, "stage", "second")


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

    def rows(self, table: int, levels: int, read_page, unit_read_page, stage: str | None = None) -> list[PteRow]:
        """`read_page(addr)` gives a table's 512 words as the CPU wrote them,
        `unit_read_page(addr)` as the unit would read them; `stage` "first" reads
        them in the first-stage format (default: what `levels` carries, see Levels).
        The rows of the last call come back when the tables it read hold the same
        words: most keys (a toggled bit, a DMA, a key on another group) change no
        table, and an open leaf table is 512 rows to build."""
        first = (stage or stage_of(levels)) == "first"
        pages: list = []
        self._pages(pages, table, int(levels), 0, read_page, unit_read_page)
        key = (table, int(levels), first, frozenset(self.expanded), pages)
        if key == self._memo[0]:
            return self._memo[1]
        out: list[PteRow] = []
        self.first = first
        # The rows from the words just read (_pages reads every table _table opens).
        read = {addr: (words, unit_words) for addr, words, unit_words in pages}
        self._table(out, table, int(levels), 0, 0, lambda a: read[a][0] if a in read else read_page(a),
                    lambda a: read[a][1] if a in read else unit_read_page(a))
        self._memo = (key, out)
        return out

    first = False  # rows(): the tables are first-stage ones (not a dataclass field)
    _memo = ((), [])  # (what rows() read, the rows it built): not a dataclass field

    def _pages(self, out: list, table: int, level: int, base: int, read_page, unit_read_page) -> None:
        """The words of the tables rows() reads, in its order: each open table under
        an entry that is present and no leaf (rows() opens no more than these)."""
        words, unit_words = read_page(table), unit_read_page(table)
        out.append((table, words, unit_words))
        if level == 1:
            return
        span = 1 << level_shift(level)
        for iova in sorted(k[1] for k in self.expanded if k[0] == level and base <= k[1] < base + 512 * span):
            raw = words[(iova - base) // span]
            if raw & 3 and not raw & PTE_PS:
                self._pages(out, Pte(raw).addr, level - 1, iova, read_page, unit_read_page)

    def _fs_row(self, out, pad, level, i, iova, span, raw) -> bool:
        """A first-stage entry's row (flags P W U A D PS XD); True when it is a leaf."""
        pte = FsPte(raw)
        leaf = level == 1 or pte.ps
        key = (level, iova)
        flags = "".join(c if on else "-" for c, on in (("P", pte.present), ("W", pte.w), ("U", pte.us),
                                                        ("A", pte.a), ("D", pte.d), ("S", pte.ps)))
        flags += " XD" if pte.xd else ""
        if not pte.present:
            out.append(PteRow(key, ((f"{pad}  L{level}[{i:3}] ", "key"), (f"{iova:#014x} ", "addr"),
                                    ("not present", "np"))))
        elif leaf:
            kind = "4K" if level == 1 else f"{fmt_size(span)} leaf (PS)"
            out.append(PteRow(key, ((f"{pad}  L{level}[{i:3}] ", "key"), (f"{iova:#014x} ", "addr"),
                                    (f"{kind:<13}", "head"), (f"{flags} ", "on"), (f"→ {pte.addr:#x} ", "addr"),
                                    (f"{raw:016x}", "dim"))))
        else:
            open_ = key in self.expanded
            out.append(PteRow(key, ((f"{pad}{'▾' if open_ else '▸'} L{level}[{i:3}] ", "key"),
                                    (f"{iova:#014x}-{iova + span - 1:#014x} ", "addr"), (f"{flags} ", "on"),
                                    (f"table {pte.addr:#x} ", "addr"), (f"{raw:016x}", "dim")), expandable=True))
        return leaf

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
            present = pte.present
            if self.first:
                leaf = self._fs_row(out, pad, level, i, iova, span, raw)
                present = bool(raw & 1)  # FsPte.present: P alone (R/W without P is not present)
            elif not pte.present:
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
            if not leaf and present and key in self.expanded:
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
