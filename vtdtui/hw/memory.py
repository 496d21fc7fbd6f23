"""Physical memory, the CPU cache in front of it, and a page allocator.

Memory is sparse and page-granular: a 4 KiB page exists only once something writes
to it (see PhysMem for how); reading an untouched page gives zeros.

The CPU cache sits between the CPU and memory.  A CPU write lands in a cache line and
stays there, dirty, until `clflush` writes it back (or the line is evicted).  The IOMMU
reads tables either through the cache (ECAP.C=1, snooped) or straight from memory
(ECAP.C=0), so a skipped clflush on a non-coherent unit really shows the hardware the
old entry — which is the whole point of the `clflush` rule.
"""

from __future__ import annotations

import copy
import heapq
from array import array
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from functools import lru_cache
from itertools import filterfalse

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
LINE_SIZE = 64
_WORDS_PER_PAGE = PAGE_SIZE // 8
_WORDS_PER_LINE = LINE_SIZE // 8
_ZERO_PAGE = bytes(PAGE_SIZE)
_ZERO_LINE = bytes(LINE_SIZE)
_ZERO_WORDS = array("Q", [0] * _WORDS_PER_PAGE)  # never written: copied
# A sparse page costs ~70 bytes a word (dict slot and int) against 8 dense: past this
# many nonzero words the dense array of 512 is the smaller.
_SPARSE_MAX = 48


def _scatter(page: dict[int, int]) -> list[int]:
    """A sparse page's 512 words, zeros between."""
    words = [0] * _WORDS_PER_PAGE
    for i, value in page.items():
        words[i] = value
    return words


def overlay_lines(words: list[int], addr: int, lines: Mapping[int, Sequence[int]]) -> list[int]:
    """The 512 `words` of the page at `addr` with each of its 64-byte lines found in
    `lines` (line address → 8 words: dirty cache lines, posted writes) laid over them."""
    if lines:
        first = addr & ~(PAGE_SIZE - 1)
        get = lines.get
        for j in range(0, _WORDS_PER_PAGE, _WORDS_PER_LINE):
            line = get(first + j * 8)
            if line is not None:
                words[j : j + _WORDS_PER_LINE] = line
    return words


@lru_cache(maxsize=8)
def _lanes(n: int) -> tuple[int, int]:
    """n 64-bit lanes as one integer, little-endian: each 1, and each its index."""
    return (int.from_bytes(array("Q", [1] * n).tobytes(), "little"),
            int.from_bytes(array("Q", range(n)).tobytes(), "little"))


def stepped_words(first: int, n: int, step: int) -> array:
    """The n quadwords first, first + step, … (a table's run of leaf entries), as
    array("Q", range(...)) makes them but without converting each int: the lanes of
    one big integer are added at once, and the last — the largest — overflowing
    raises OverflowError as array() would."""
    ones, index = _lanes(n)
    return array("Q", (first * ones + step * index).to_bytes(n * 8, "little"))


class MemoryError_(Exception):
    """An access the platform cannot complete (beyond installed memory)."""


class PhysMem:
    """Sparse physical memory of `size` bytes, 64-bit word access.

    A page holding a few nonzero words (the upper levels of a small domain's page
    table hold one) is kept as a dict of word index → value; past _SPARSE_MAX words it
    becomes a dense array of 512 words.  A million 4 KiB mappings spread over 4,096
    domains thus cost their leaf tables and little else.

    Pages are copy-on-write between a memory and its deep copies (the undo base), so
    taking or restoring a snapshot costs a dict of page references, not the tables.
    """

    def __init__(self, size: int = 1 << 36):
        self.size = size
        self._pages: dict[int, array | dict[int, int]] = {}
        # Page frames whose storage a copy also holds; copied before the first write.
        self._shared: set[int] = set()
        # Called with a line's address before a write to it; a unit with CAP.RWBF uses
        # it to keep posted writes invisible until a write-buffer flush.
        self._observers: list = []
        # Undo of one command (begin_undo / end_undo / rollback): each page frame's
        # storage before its first change since begin_undo, and whether a copy shared
        # it then; the old storage is kept, the page gets a copy (copy-on-write).
        self._undo: dict[int, tuple[array | dict[int, int] | None, bool]] | None = None

    def __deepcopy__(self, memo) -> "PhysMem":
        new = PhysMem.__new__(PhysMem)
        memo[id(self)] = new
        new.size = self.size
        new._pages = dict(self._pages)
        self._shared = set(self._pages)
        new._shared = set(self._pages)
        new._observers = copy.deepcopy(self._observers, memo)
        new._undo = None
        return new

    # Undo ---------------------------------------------------------------
    def begin_undo(self) -> None:
        """Start recording what the writes from now on replace (one command's worth)."""
        self._undo = {}

    def end_undo(self) -> dict:
        """Stop recording; the record, for rollback().  Its size is the pages changed."""
        log, self._undo = self._undo or {}, None
        return log

    def rollback(self, log: dict) -> None:
        """Put back every page as it was at the begin_undo() that made `log` (the
        records of later commands rolled back first)."""
        pages, shared = self._pages, self._shared
        for pfn, (page, was_shared) in log.items():
            if page is None:
                pages.pop(pfn, None)
            else:
                pages[pfn] = page
            if was_shared:
                shared.add(pfn)
            else:
                shared.discard(pfn)

    def _record(self, pfn: int) -> None:
        """The page's storage before this command's first change to it, kept as it is."""
        page = self._pages.get(pfn)
        self._undo[pfn] = (page, pfn in self._shared)
        if page is not None:
            self._pages[pfn] = copy.copy(page)
            self._shared.discard(pfn)

    def add_write_observer(self, fn) -> None:
        self._observers.append(fn)

    def _notify(self, line: int) -> None:
        for fn in self._observers:
            fn(line)

    def valid(self, addr: int, length: int = 8) -> bool:
        return 0 <= addr and addr + length <= self.size

    def _writable(self, pfn: int) -> array | dict[int, int]:
        if self._undo is not None and pfn not in self._undo:
            self._record(pfn)
        page = self._pages.get(pfn)
        if page is None:
            page = self._pages[pfn] = {}
        elif self._shared and pfn in self._shared:
            page = self._pages[pfn] = copy.copy(page)  # a dict or an array alike
            self._shared.discard(pfn)
        return page

    def _densify(self, pfn: int, page: dict[int, int]) -> None:
        # A copy of the zero page (not 512 int conversions; and sized exactly, as
        # array(bytes) is not); a sparse page holds at most _SPARSE_MAX + 1 words.
        dense = self._pages[pfn] = _ZERO_WORDS[:]
        for i, value in page.items():
            dense[i] = value

    def read_q(self, addr: int) -> int:
        if addr & 7 or not self.valid(addr):
            raise MemoryError_(f"read of {addr:#x} outside memory")
        page = self._pages.get(addr >> PAGE_SHIFT)
        if page is None:
            return 0
        i = (addr & (PAGE_SIZE - 1)) >> 3
        return page.get(i, 0) if type(page) is dict else page[i]

    def write_q(self, addr: int, value: int) -> None:
        if addr & 7 or not self.valid(addr):
            raise MemoryError_(f"write of {addr:#x} outside memory")
        if self._observers:
            self._notify(addr & ~(LINE_SIZE - 1))
        pfn = addr >> PAGE_SHIFT
        page = self._writable(pfn)
        i = (addr & (PAGE_SIZE - 1)) >> 3
        if type(page) is not dict:
            page[i] = value
        elif value:
            page[i] = value
            if len(page) > _SPARSE_MAX:
                self._densify(pfn, page)
        else:
            page.pop(i, None)

    def read_page(self, addr: int) -> list[int]:
        """The 512 words of the 4 KiB page at `addr` (a table, read whole by a view);
        zeros beyond memory, as word reads there would fail."""
        page = self._pages.get(addr >> PAGE_SHIFT) if self.valid(addr & ~(PAGE_SIZE - 1), PAGE_SIZE) else None
        if page is None:
            return [0] * _WORDS_PER_PAGE
        return _scatter(page) if type(page) is dict else page.tolist()

    def read_line(self, line: int) -> array:
        page = self._pages.get(line >> PAGE_SHIFT)
        i = (line & (PAGE_SIZE - 1)) >> 3
        if page is None:
            return array("Q", _ZERO_LINE)
        if type(page) is dict:
            return array("Q", [page.get(j, 0) for j in range(i, i + _WORDS_PER_LINE)])
        return page[i : i + _WORDS_PER_LINE]

    def write_line(self, line: int, words) -> None:
        if self._observers:
            self._notify(line)
        pfn = line >> PAGE_SHIFT
        page = self._writable(pfn)
        i = (line & (PAGE_SIZE - 1)) >> 3
        if type(page) is not dict:
            page[i : i + _WORDS_PER_LINE] = array("Q", words)
            return
        for j, value in enumerate(words, i):
            if value:
                page[j] = value
            else:
                page.pop(j, None)
        if len(page) > _SPARSE_MAX:
            self._densify(pfn, page)

    def write_lines(self, items: Sequence[tuple[int, Sequence[int]]]) -> None:
        """write_line of each (line address, 8 words) in turn (distinct lines: a
        cache's write-backs).  Lines that follow each other in one page go in one
        slice; the page ends up stored as the line-by-line writes would leave it
        (a sparse page becomes dense past _SPARSE_MAX nonzero words)."""
        # Each observer reads only the line it is told of, from memory as it is before
        # any of these writes, and keeps its own record: all of them first (observer by
        # observer: the records are the same in either order), then the pages.
        for fn in self._observers:
            for line, _ in items:
                fn(line)
        n, k = len(items), 0
        while k < n:
            line = items[k][0]
            # The run of consecutive lines from here, up to the page's end.
            j, last, nxt = k + 1, min(n, k + ((PAGE_SIZE - (line & (PAGE_SIZE - 1))) >> 6)), line + LINE_SIZE
            while j < last and items[j][0] == nxt:
                j += 1
                nxt += LINE_SIZE
            words = items[k][1] if j - k == 1 else b"".join(
                [w if type(w) is array else array("Q", w) for _, w in items[k:j]])
            self._write_run(line, words if type(words) is array else array("Q", words))
            k = j

    def _write_run(self, line: int, words: array) -> None:
        """`words` from `line` on (consecutive lines of one page), stored as write_line
        of each of its lines would leave the page."""
        pfn = line >> PAGE_SHIFT
        page = self._writable(pfn)
        i = (line & (PAGE_SIZE - 1)) >> 3
        if type(page) is dict and len(words) > _SPARSE_MAX and not words.count(0):
            # Line by line the page only grows and turns dense within this group,
            # the rest going into the dense page: the same array either way.
            self._densify(pfn, page)
            page = self._pages[pfn]
        if type(page) is not dict:
            page[i : i + len(words)] = words
            return
        for start in range(0, len(words), _WORDS_PER_LINE):
            for j2 in range(start, start + _WORDS_PER_LINE):
                value = words[j2]
                if value:
                    page[i + j2] = value
                else:
                    page.pop(i + j2, None)
            if len(page) > _SPARSE_MAX:
                self._densify(pfn, page)
                page = self._pages[pfn]
                page[i + start + _WORDS_PER_LINE : i + len(words)] = words[start + _WORDS_PER_LINE :]
                return

    def free_page(self, pfn: int) -> None:
        if self._undo is not None and pfn not in self._undo:
            self._record(pfn)
        self._pages.pop(pfn, None)
        self._shared.discard(pfn)

    @property
    def pages_in_use(self) -> int:
        return len(self._pages)


class CpuCache:
    """Write-back CPU cache holding only dirty lines (clean lines equal memory).

    `capacity` bounds the dirty lines; the oldest is written back when it is
    exceeded, as a real cache evicts.  Eviction order is insertion order, so the
    model stays deterministic.  Like memory, lines are copy-on-write between a
    cache and its deep copies.
    """

    def __init__(self, mem: PhysMem, capacity: int | None = 1 << 15):
        self.mem = mem
        self.capacity = capacity
        self._lines: OrderedDict[int, array] = OrderedDict()  # 8 words each
        self._shared: set[int] = set()  # lines a copy also holds
        self.clflushes = 0  # lines written back by clflush, for the views
        self._undo: _CacheUndo | None = None  # one command's undo record (begin_undo)

    def __deepcopy__(self, memo) -> "CpuCache":
        new = CpuCache.__new__(CpuCache)
        memo[id(self)] = new
        new.mem = copy.deepcopy(self.mem, memo)
        new.capacity = self.capacity
        new._lines = self._lines.copy()
        self._shared = set(self._lines)
        new._shared = set(self._lines)
        new.clflushes = self.clflushes
        new._undo = None
        if self._undo is not None:
            self._undo.copied = True
        return new

    # Undo ---------------------------------------------------------------
    # The dirty lines are ordered (the oldest is evicted first), so the record keeps
    # the order too: lines inserted (at the end) and evicted (from the front) are
    # logged and undone in reverse; the first line written in place gets a copy and
    # the record keeps the old one.  A line dropped from the middle (clflush, discard,
    # wbinvd) makes the record take the starting order once, for that command: the
    # line addresses (8 bytes a line, an array the cyclic collector never walks) and
    # the old words of the lines the command then drops or writes, not a copy of
    # the cache (a 23,000-line OrderedDict at 7,680 devices, kept per command).
    def begin_undo(self) -> None:
        self._undo = _CacheUndo(set(self._shared), self.clflushes)

    def end_undo(self) -> "_CacheUndo":
        u, self._undo = self._undo, None
        return u

    def rollback(self, u: "_CacheUndo") -> None:
        lines = self._lines
        if u.full is not None:
            # In place: the old words back (a dropped line comes back last), every
            # starting line moved to the end in the starting order, and what is left
            # in front, the lines the command added, dropped.
            lines.update(u.kept)
            deque(map(lines.move_to_end, u.full), maxlen=0)
            for _ in range(len(lines) - len(u.full)):
                lines.popitem(False)
            u.full = None  # the record is used up
        else:
            u.undo_order(lines)
        self._shared = set(lines) if u.copied else u.shared
        self.clflushes = u.clflushes

    def _drop_middle(self) -> None:
        """Before a line leaves from anywhere but the front: the record takes the
        starting state whole, and every line there now becomes copy-on-write (those
        written since the start are the record's no more than the others)."""
        u = self._undo
        if u is not None and u.full is None:
            u.full, u.kept = u.start_order(self._lines)
            u.own = set()

    def _writable_line(self, base: int) -> array | None:
        line = self._lines.get(base)
        if line is None:
            return None
        if self._shared and base in self._shared:
            line = self._lines[base] = array("Q", line)
            self._shared.discard(base)
        u = self._undo
        if u is not None:
            if u.full is None:
                if base not in u.new and base not in u.orig:
                    u.orig[base] = line
                    line = self._lines[base] = array("Q", line)
            elif base not in u.own:  # the starting state may hold this line
                u.kept.setdefault(base, line)
                line = self._lines[base] = array("Q", line)
                u.own.add(base)
        return line

    def _insert(self, base: int, line: array) -> None:
        """A new dirty line at the end, the oldest evicted past the capacity."""
        lines = self._lines
        lines[base] = line
        u = self._undo
        if u is not None and u.full is None:
            u.ops.append((base, None))
            u.new.add(base)
        if self.capacity is not None and len(lines) > self.capacity:
            old, words = lines.popitem(False)  # the oldest (by position: 5x the speed of last=False)
            if u is not None:
                u.gone(old, words)
            self.mem.write_line(old, words)

    # CPU side -----------------------------------------------------------
    def cpu_read_q(self, addr: int) -> int:
        line = self._lines.get(addr & ~(LINE_SIZE - 1))
        if line is not None:
            return line[(addr & (LINE_SIZE - 1)) >> 3]
        return self.mem.read_q(addr)

    def cpu_read_page(self, addr: int) -> list[int]:
        """The page at `addr` as the CPU sees it: memory with the dirty lines over it."""
        return overlay_lines(self.mem.read_page(addr), addr, self._lines)

    def cpu_write_q(self, addr: int, value: int) -> None:
        if addr & 7 or not self.mem.valid(addr):
            raise MemoryError_(f"CPU write of {addr:#x} outside memory")
        base = addr & ~(LINE_SIZE - 1)
        line = self._writable_line(base)
        if line is None:
            line = self.mem.read_line(base)
            self._insert(base, line)
        line[(addr & (LINE_SIZE - 1)) >> 3] = value

    def cpu_write_run(self, addr: int, values: Sequence[int]) -> None:
        """CPU writes of consecutive quadwords from `addr` (a table's run of entries):
        exactly what cpu_write_q of each in turn does — the same lines dirty, inserted
        in the same order, the same lines evicted and written back in the same order —
        a line at a time.  A run reaching outside memory, or longer than the cache,
        falls back to word writes, so it fails (or evicts) at the same word."""
        vals = values if type(values) is array else array("Q", values)
        n = len(vals)
        cap = self.capacity
        nlines = ((addr + n * 8 - 1) >> 6) - (addr >> 6) + 1 if n else 0
        if addr & 7 or not self.mem.valid(addr, n * 8) or (cap is not None and nlines > cap):
            for i, value in enumerate(vals):
                self.cpu_write_q(addr + i * 8, value)
            return
        lines, mem = self._lines, self.mem
        shared = self._shared
        epoch = self._undo is not None
        undo = self._undo if epoch and self._undo.full is None else None
        i, end = 0, addr + n * 8
        base = addr & ~(LINE_SIZE - 1)
        if not (addr | n * 8) & (LINE_SIZE - 1):  # whole lines: those not yet dirty go in at once
            bases = range(addr, end, LINE_SIZE)
            if not any(map(lines.__contains__, bases)):
                lines.update(zip(bases, [vals[j : j + _WORDS_PER_LINE] for j in range(0, n, _WORDS_PER_LINE)]))
                if undo is not None:
                    undo.ops.extend(zip(bases, [None] * len(bases)))
                    undo.new.update(bases)
                base = end
        while base < end:
            lo = addr if addr > base else base
            hi = end if end < base + LINE_SIZE else base + LINE_SIZE
            k = (hi - lo) >> 3
            line = lines.get(base)
            if line is None:
                if k == _WORDS_PER_LINE:
                    lines[base] = vals[i : i + k]
                else:
                    line = lines[base] = mem.read_line(base)
                    j = (lo - base) >> 3
                    line[j : j + k] = vals[i : i + k]
                if undo is not None:
                    undo.ops.append((base, None))
                    undo.new.add(base)
            else:
                if epoch or (shared and base in shared):
                    line = self._writable_line(base)
                j = (lo - base) >> 3
                line[j : j + k] = vals[i : i + k]
            i += k
            base += LINE_SIZE
        # Each new line evicted the oldest as it came in; none of the run's lines is
        # among them (the run is no longer than the cache), so they go now, in order.
        if cap is not None and len(lines) > cap:
            popitem = lines.popitem
            evicted = [popitem(False) for _ in range(len(lines) - cap)]  # the oldest first
            if undo is not None:
                undo.ops.extend(evicted)
            elif epoch:
                for base, words in evicted:
                    self._undo.kept.setdefault(base, words)
            mem.write_lines(evicted)

    def clflush(self, addr: int, size: int = 8) -> int:
        """Write back and drop every line touching [addr, addr+size); returns lines flushed."""
        first = addr & ~(LINE_SIZE - 1)
        n = 0
        # A huge range (a VM's RAM) walks the dirty lines, not every line address.
        if size // LINE_SIZE > len(self._lines):
            bases = [b for b in self._lines if first <= b < addr + size]
        else:
            bases = range(first, addr + size, LINE_SIZE)
        if self._undo is not None and any(b in self._lines for b in bases):
            self._drop_middle()
        u = self._undo
        for base in bases:
            words = self._lines.pop(base, None)
            if words is not None:
                if u is not None:
                    u.kept.setdefault(base, words)
                self.mem.write_line(base, words)
                n += 1
        self.clflushes += n
        return n

    def discard(self, addr: int, size: int) -> None:
        """Drop lines without writing them back (the page is being freed)."""
        bases = range(addr & ~(LINE_SIZE - 1), addr + size, LINE_SIZE)
        if self._undo is not None and any(b in self._lines for b in bases):
            self._drop_middle()
        u = self._undo
        for base in bases:
            words = self._lines.pop(base, None)
            if words is not None and u is not None:
                u.kept.setdefault(base, words)

    def wbinvd(self) -> int:
        """Write back and invalidate the whole cache."""
        n = len(self._lines)
        if self._undo is not None and n:
            self._drop_middle()
        u = self._undo
        for base, words in self._lines.items():
            self.mem.write_line(base, words)
            if u is not None:
                u.kept.setdefault(base, words)
        self._lines.clear()
        return n

    def is_dirty(self, addr: int) -> bool:
        return (addr & ~(LINE_SIZE - 1)) in self._lines

    @property
    def dirty_lines(self) -> int:
        return len(self._lines)

    # Device side --------------------------------------------------------
    def snooped_read_q(self, addr: int) -> int:
        """A device read that snoops the CPU caches (coherent)."""
        return self.cpu_read_q(addr)

    def device_write_q(self, addr: int, value: int) -> None:
        """A snooped device write: memory is updated and any cached copy follows."""
        self.mem.write_q(addr, value)
        line = self._writable_line(addr & ~(LINE_SIZE - 1))
        if line is not None:
            line[(addr & (LINE_SIZE - 1)) >> 3] = value


class _CacheUndo:
    """One command's undo record of a CpuCache (see CpuCache.begin_undo)."""

    __slots__ = ("shared", "clflushes", "ops", "new", "orig", "full", "kept", "own", "copied")

    def __init__(self, shared: set[int], clflushes: int):
        self.shared = shared  # the cache's _shared then
        self.clflushes = clflushes
        self.ops: list[tuple[int, array | None]] = []  # (line, None) inserted, (line, words) evicted
        self.new: set[int] = set()  # lines inserted since
        self.orig: dict[int, array] = {}  # lines there at the start, as they were, once written in place
        self.full: array | None = None  # the starting order (line addresses), once taken
        self.kept: dict[int, array] = {}  # with `full`: old words of lines since dropped or copied
        self.own: set[int] = set()  # lines copied since `full` was taken
        self.copied = False  # a deep copy shares the lines since

    def undo_order(self, lines: OrderedDict) -> None:
        """Undo the logged inserts and evictions on `lines`, then put back the old
        lines written in place: `lines` is then as it was at the start."""
        for base, words in reversed(self.ops):
            if words is None:
                del lines[base]
            else:
                lines[base] = words
                lines.move_to_end(base, last=False)
        for base, words in self.orig.items():
            lines[base] = words

    def gone(self, base: int, words: array) -> None:
        """A line evicted from the front."""
        if self.full is None:
            self.ops.append((base, words))
        else:
            self.kept.setdefault(base, words)

    def start_order(self, lines: OrderedDict) -> tuple[array, dict[int, array]]:
        """The starting order of `lines` (undo_order() on the addresses alone: the
        evicted ones back at the front, the inserted ones out) and the starting words
        of the lines that no longer hold them (evicted, or written in place)."""
        front: deque[int] = deque()
        words: dict[int, array] = {}
        out: set[int] = set()
        for base, w in reversed(self.ops):
            if w is None:
                if base in words:
                    front.remove(base)
                    del words[base]
                else:
                    out.add(base)
            else:
                front.appendleft(base)
                words[base] = w
        order = array("Q", front)
        order.extend(filterfalse(out.__contains__, lines) if out else lines)
        words.update(self.orig)
        return order, words


class PageAllocator:
    """Deterministic allocator of zeroed 4 KiB pages for the tables software builds.

    Freed pages are reused lowest-first, so the same sequence of operations always
    yields the same physical addresses.
    """

    def __init__(self, mem: PhysMem, cache: CpuCache, base: int, limit: int):
        if base & (PAGE_SIZE - 1) or limit <= base:
            raise ValueError("allocator range must be page aligned and non-empty")
        self.mem = mem
        self.cache = cache
        self.base = base
        self.limit = limit
        self._next = base
        self._free: list[int] = []
        self.allocated = 0

    def alloc(self) -> int:
        if self._free:
            addr = heapq.heappop(self._free)
        else:
            if self._next >= self.limit:
                raise MemoryError_("page-table memory exhausted")
            addr = self._next
            self._next += PAGE_SIZE
        self.allocated += 1
        return addr

    def free(self, addr: int) -> None:
        # The next alloc must hand out zeroes, in memory and in the cache alike.
        self.cache.discard(addr, PAGE_SIZE)
        self.mem.free_page(addr >> PAGE_SHIFT)
        heapq.heappush(self._free, addr)
        self.allocated -= 1
