"""Physical memory, the CPU cache in front of it, and a page allocator.

Memory is sparse and page-granular: a 4 KiB page exists (as an array of 512 64-bit
words) only once something writes to it; reading an untouched page gives zeros.

The CPU cache sits between the CPU and memory.  A CPU write lands in a cache line and
stays there, dirty, until `clflush` writes it back (or the line is evicted).  The IOMMU
reads tables either through the cache (ECAP.C=1, snooped) or straight from memory
(ECAP.C=0), so a skipped clflush on a non-coherent unit really shows the hardware the
old entry — which is the whole point of the `clflush` rule.
"""

from __future__ import annotations

import heapq
from array import array
from collections import OrderedDict

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
LINE_SIZE = 64
_WORDS_PER_PAGE = PAGE_SIZE // 8
_WORDS_PER_LINE = LINE_SIZE // 8
_ZERO_PAGE = bytes(PAGE_SIZE)


class MemoryError_(Exception):
    """An access the platform cannot complete (beyond installed memory)."""


class PhysMem:
    """Sparse physical memory of `size` bytes, 64-bit word access."""

    def __init__(self, size: int = 1 << 36):
        self.size = size
        self._pages: dict[int, array] = {}
        # Called with (line address, the line's words before the write); a unit with
        # CAP.RWBF uses it to keep posted writes invisible until a write-buffer flush.
        self._observers: list = []

    def add_write_observer(self, fn) -> None:
        self._observers.append(fn)

    def _notify(self, addr: int) -> None:
        line = addr & ~(LINE_SIZE - 1)
        old = self.read_line(line)
        for fn in self._observers:
            fn(line, old)

    def valid(self, addr: int, length: int = 8) -> bool:
        return 0 <= addr and addr + length <= self.size

    def _page(self, pfn: int) -> array:
        page = self._pages.get(pfn)
        if page is None:
            page = array("Q", _ZERO_PAGE)
            self._pages[pfn] = page
        return page

    def read_q(self, addr: int) -> int:
        if addr & 7 or not self.valid(addr):
            raise MemoryError_(f"read of {addr:#x} outside memory")
        page = self._pages.get(addr >> PAGE_SHIFT)
        return 0 if page is None else page[(addr & (PAGE_SIZE - 1)) >> 3]

    def write_q(self, addr: int, value: int) -> None:
        if addr & 7 or not self.valid(addr):
            raise MemoryError_(f"write of {addr:#x} outside memory")
        if self._observers:
            self._notify(addr)
        self._page(addr >> PAGE_SHIFT)[(addr & (PAGE_SIZE - 1)) >> 3] = value

    def read_line(self, line: int) -> list[int]:
        page = self._pages.get(line >> PAGE_SHIFT)
        if page is None:
            return [0] * _WORDS_PER_LINE
        i = (line & (PAGE_SIZE - 1)) >> 3
        return list(page[i : i + _WORDS_PER_LINE])

    def write_line(self, line: int, words: list[int]) -> None:
        if self._observers:
            self._notify(line)
        page = self._page(line >> PAGE_SHIFT)
        i = (line & (PAGE_SIZE - 1)) >> 3
        page[i : i + _WORDS_PER_LINE] = array("Q", words)

    def free_page(self, pfn: int) -> None:
        self._pages.pop(pfn, None)

    @property
    def pages_in_use(self) -> int:
        return len(self._pages)


class CpuCache:
    """Write-back CPU cache holding only dirty lines (clean lines equal memory).

    `capacity` bounds the dirty lines; the oldest is written back when it is
    exceeded, as a real cache evicts.  Eviction order is insertion order, so the
    model stays deterministic.
    """

    def __init__(self, mem: PhysMem, capacity: int | None = 1 << 15):
        self.mem = mem
        self.capacity = capacity
        self._lines: OrderedDict[int, list[int]] = OrderedDict()
        self.clflushes = 0  # lines written back by clflush, for the views

    # CPU side -----------------------------------------------------------
    def cpu_read_q(self, addr: int) -> int:
        line = self._lines.get(addr & ~(LINE_SIZE - 1))
        if line is not None:
            return line[(addr & (LINE_SIZE - 1)) >> 3]
        return self.mem.read_q(addr)

    def cpu_write_q(self, addr: int, value: int) -> None:
        if addr & 7 or not self.mem.valid(addr):
            raise MemoryError_(f"CPU write of {addr:#x} outside memory")
        base = addr & ~(LINE_SIZE - 1)
        line = self._lines.get(base)
        if line is None:
            line = self.mem.read_line(base)
            self._lines[base] = line
            if self.capacity is not None and len(self._lines) > self.capacity:
                old, words = self._lines.popitem(last=False)
                self.mem.write_line(old, words)
        line[(addr & (LINE_SIZE - 1)) >> 3] = value

    def clflush(self, addr: int, size: int = 8) -> int:
        """Write back and drop every line touching [addr, addr+size); returns lines flushed."""
        first = addr & ~(LINE_SIZE - 1)
        n = 0
        # A huge range (a VM's RAM) walks the dirty lines, not every line address.
        if size // LINE_SIZE > len(self._lines):
            bases = [b for b in self._lines if first <= b < addr + size]
        else:
            bases = range(first, addr + size, LINE_SIZE)
        for base in bases:
            words = self._lines.pop(base, None)
            if words is not None:
                self.mem.write_line(base, words)
                n += 1
        self.clflushes += n
        return n

    def discard(self, addr: int, size: int) -> None:
        """Drop lines without writing them back (the page is being freed)."""
        for base in range(addr & ~(LINE_SIZE - 1), addr + size, LINE_SIZE):
            self._lines.pop(base, None)

    def wbinvd(self) -> int:
        """Write back and invalidate the whole cache."""
        n = len(self._lines)
        for base, words in self._lines.items():
            self.mem.write_line(base, words)
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
        line = self._lines.get(addr & ~(LINE_SIZE - 1))
        if line is not None:
            line[(addr & (LINE_SIZE - 1)) >> 3] = value


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
