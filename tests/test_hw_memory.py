"""Physical memory, the write-back CPU cache in front of it, and the page allocator."""

from __future__ import annotations

import pytest

from vtdtui.hw import CpuCache, PageAllocator, PhysMem
from vtdtui.hw.memory import MemoryError_


def test_untouched_memory_reads_zero_and_is_sparse():
    mem = PhysMem(1 << 48)
    assert mem.read_q(0x1234_5678_0000) == 0
    assert mem.pages_in_use == 0
    mem.write_q(0x1234_5678_0008, 0xDEADBEEF)
    assert mem.read_q(0x1234_5678_0008) == 0xDEADBEEF
    assert mem.read_q(0x1234_5678_0000) == 0
    assert mem.pages_in_use == 1


def test_memory_bounds_and_alignment():
    mem = PhysMem(0x10000)  # 64 KiB
    mem.write_q(0xFFF8, 1)  # last word fits
    with pytest.raises(MemoryError_):
        mem.read_q(0x10000)
    with pytest.raises(MemoryError_):
        mem.write_q(0x10000, 1)
    with pytest.raises(MemoryError_):
        mem.read_q(0x1004)  # not 8-byte aligned
    assert mem.valid(0xFFF8) and not mem.valid(0xFFFC)


def test_cpu_write_stays_in_cache_until_clflush():
    mem = PhysMem(1 << 30)
    cache = CpuCache(mem)
    cache.cpu_write_q(0x5008, 0x1111)
    assert cache.cpu_read_q(0x5008) == 0x1111
    assert cache.snooped_read_q(0x5008) == 0x1111  # a coherent device sees it
    assert mem.read_q(0x5008) == 0  # memory does not, yet
    assert cache.is_dirty(0x5000) and cache.is_dirty(0x503F) and not cache.is_dirty(0x5040)
    # clflush of a different line writes back nothing
    assert cache.clflush(0x5040, 8) == 0
    assert mem.read_q(0x5008) == 0
    assert cache.clflush(0x5008, 8) == 1
    assert mem.read_q(0x5008) == 0x1111
    assert not cache.is_dirty(0x5008)
    assert cache.clflushes == 1


def test_clflush_range_covers_every_line_touched():
    mem = PhysMem(1 << 30)
    cache = CpuCache(mem)
    for a in (0x7038, 0x7040, 0x70F8):  # lines 0x7000, 0x7040, 0x70c0
        cache.cpu_write_q(a, a)
    # [0x7038, 0x7048) touches lines 0x7000 and 0x7040, not 0x70c0
    assert cache.clflush(0x7038, 0x10) == 2
    assert mem.read_q(0x7038) == 0x7038 and mem.read_q(0x7040) == 0x7040
    assert mem.read_q(0x70F8) == 0
    assert cache.dirty_lines == 1


def test_cache_line_fill_keeps_other_words():
    mem = PhysMem(1 << 30)
    mem.write_q(0x9000, 0xAAAA)
    cache = CpuCache(mem)
    cache.cpu_write_q(0x9008, 0xBBBB)
    cache.clflush(0x9008)
    assert mem.read_q(0x9000) == 0xAAAA and mem.read_q(0x9008) == 0xBBBB


def test_wbinvd_and_eviction():
    mem = PhysMem(1 << 30)
    cache = CpuCache(mem, capacity=2)
    cache.cpu_write_q(0x0, 1)
    cache.cpu_write_q(0x40, 2)
    cache.cpu_write_q(0x80, 3)  # third dirty line: the oldest (0x0) is written back
    assert mem.read_q(0x0) == 1 and mem.read_q(0x40) == 0 and mem.read_q(0x80) == 0
    assert cache.wbinvd() == 2
    assert mem.read_q(0x40) == 2 and mem.read_q(0x80) == 3
    assert cache.dirty_lines == 0


def test_device_write_updates_memory_and_cached_copy():
    mem = PhysMem(1 << 30)
    cache = CpuCache(mem)
    cache.cpu_write_q(0x3000, 7)
    cache.device_write_q(0x3008, 9)
    assert mem.read_q(0x3008) == 9 and cache.cpu_read_q(0x3008) == 9
    cache.clflush(0x3000)  # the write-back must not undo the device's store
    assert mem.read_q(0x3008) == 9 and mem.read_q(0x3000) == 7


def test_cpu_write_outside_memory_rejected():
    cache = CpuCache(PhysMem(0x2000))
    with pytest.raises(MemoryError_):
        cache.cpu_write_q(0x2000, 1)


def test_page_allocator_is_deterministic_and_zeroes_reused_pages():
    mem = PhysMem(1 << 30)
    cache = CpuCache(mem)
    pa = PageAllocator(mem, cache, 0x100000, 0x104000)  # 4 pages
    got = [pa.alloc() for _ in range(4)]
    assert got == [0x100000, 0x101000, 0x102000, 0x103000]
    with pytest.raises(MemoryError_):
        pa.alloc()
    cache.cpu_write_q(0x102010, 0x55)  # dirty in the cache
    mem.write_q(0x101000, 0x66)  # and in memory
    pa.free(0x102000)
    pa.free(0x101000)
    assert pa.allocated == 2
    assert pa.alloc() == 0x101000  # lowest first
    assert pa.alloc() == 0x102000
    assert cache.cpu_read_q(0x102010) == 0 and mem.read_q(0x101000) == 0


def test_page_allocator_rejects_bad_range():
    mem = PhysMem(1 << 30)
    cache = CpuCache(mem)
    with pytest.raises(ValueError):
        PageAllocator(mem, cache, 0x100800, 0x200000)
    with pytest.raises(ValueError):
        PageAllocator(mem, cache, 0x200000, 0x200000)


def test_whole_page_reads_agree_with_word_reads():
    """cpu_read_page / hw_read_page (the IOPTE view reads tables whole) give, word for
    word, what cpu_read_q / hw_read_q give: sparse and dense pages, dirty lines over
    memory, and a unit's posted writes (CAP.RWBF) over both."""
    from hwkit import CAP_BASE, CAP_RWBF, ECAP_BASE, ECAP_C

    from vtdtui.hw import DmarUnit

    mem = PhysMem(1 << 30)
    cache = CpuCache(mem)
    coherent = DmarUnit("c", 0xFED90000, CAP_BASE, ECAP_BASE, mem, cache)
    walker = DmarUnit("n", 0xFED91000, CAP_BASE | CAP_RWBF, ECAP_BASE & ~ECAP_C, mem, cache)
    for i in range(3):  # sparse page: three words
        mem.write_q(0x10000 + i * 0x100, 0x1000 * (i + 1) | 3)
    for i in range(200):  # dense page
        mem.write_q(0x11000 + i * 8, (i << 12) | 1)
    cache.cpu_write_q(0x10008, 0xAAAA003)  # dirty line in the sparse page
    cache.cpu_write_q(0x11FF8, 0xBBBB003)  # and in the dense one
    mem.write_q(0x11010, 0xCCCC003)  # posted in the write buffer of the RWBF unit
    for page in (0x10000, 0x11000, 0x12000, (1 << 30) + 0x1000):
        def words(read):
            out = []
            for a in range(page, page + 4096, 8):
                try:
                    out.append(read(a))
                except MemoryError_:
                    out.append(0)
            return out
        assert cache.cpu_read_page(page) == words(cache.cpu_read_q)
        for u in (coherent, walker):
            assert u.cpu_read_page(page) == words(u.cpu_read_q)
            assert u.hw_read_page(page) == words(u.hw_read_q)
    assert walker.hw_read_page(0x11000)[2] != walker.cpu_read_page(0x11000)[2]  # the posted write shows


def test_sparse_pages_turn_dense_past_a_few_words_and_read_the_same():
    mem = PhysMem(1 << 30)
    values = {i: (i << 12) | 3 for i in range(0, 512, 5)}  # 103 words: past the sparse limit
    for n, (i, v) in enumerate(values.items()):
        mem.write_q(0x7000 + i * 8, v)
        if n == 2:
            assert type(mem._pages[7]) is dict  # a few words: kept sparse
    assert type(mem._pages[7]) is not dict
    assert [mem.read_q(0x7000 + i * 8) for i in range(512)] == [values.get(i, 0) for i in range(512)]
    mem.write_q(0x7000, 0)  # zero written into a sparse page leaves no word behind
    mem.write_q(0x9000, 5)
    mem.write_q(0x9000, 0)
    assert mem._pages[9] == {}
    assert mem.read_page(0x7000) == [0] + [values.get(i, 0) for i in range(1, 512)]


def test_deep_copies_share_pages_until_either_side_writes():
    """The undo base is a deep copy: copy-on-write, in memory and in the CPU cache."""
    import copy

    mem = PhysMem(1 << 30)
    cache = CpuCache(mem)
    for i in range(100):
        mem.write_q(0x3000 + i * 8, i + 1)  # dense
    mem.write_q(0x4000, 7)  # sparse
    cache.cpu_write_q(0x5000, 0x55)  # a dirty line
    base_mem, base_cache = copy.deepcopy((mem, cache))
    assert base_cache.mem is base_mem
    assert base_mem._pages[3] is mem._pages[3]  # shared until written
    mem.write_q(0x3000, 0xAA)
    mem.write_q(0x4000, 0xBB)
    cache.cpu_write_q(0x5000, 0xCC)
    base_mem.write_q(0x3008, 0xDD)
    assert (mem.read_q(0x3000), mem.read_q(0x3008), mem.read_q(0x4000), cache.cpu_read_q(0x5000)) == (0xAA, 2, 0xBB, 0xCC)
    assert (base_mem.read_q(0x3000), base_mem.read_q(0x3008), base_mem.read_q(0x4000),
            base_cache.cpu_read_q(0x5000)) == (1, 0xDD, 7, 0x55)
    # And a copy of the copy, after the first has moved on, is its own again.
    again = copy.deepcopy(base_cache)
    base_cache.clflush(0x5000)
    assert again.cpu_read_q(0x5000) == 0x55 and again.mem.read_q(0x5000) == 0
