"""Queued invalidation: 128-bit descriptors (VT-d spec §6.5.2, Linux QI_* macros) and
the queue's processing on tail writes (QEMU vtd_process_inv_desc)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hwkit import CAP_BASE, DID, ECAP_BASE, ECAP_DT, ECAP_QI, SID, RawDesc, Rig
from vtdtui.hw import qi, regs
from vtdtui.hw.caches import ContextCacheEntry, IotlbEntry
from vtdtui.hw.qi import CcDesc, DevTlbDesc, IecDesc, IotlbDesc, WaitDesc

U16 = st.integers(0, 0xFFFF)
PAGE_ADDR = st.integers(0, (1 << 52) - 1).map(lambda p: p << 12)


# ------------------------------------------------------------------ encodings
def test_context_cache_descriptor_encoding():
    assert CcDesc(1).encode() == (0x11, 0)  # type 1 | G 1 << 4
    assert CcDesc(2, did=0x1234).encode() == (0x1234_0021, 0)  # DID << 16 | G 2 | type
    # device-selective: type 1 | G 3 << 4 (0x30) | DID 5 << 16 | SID 0xf8 << 32 | FM 3 << 48
    assert CcDesc(3, did=5, sid=0x00F8, fm=3).encode() == (0x0003_00F8_0005_0031, 0)


def test_iotlb_descriptor_encoding():
    # PSI did 5 addr 0x200000 am 9 ih: lo = 2 | 3 << 4 | 5 << 16 = 0x50032
    #                                    hi = 0x200000 | IH 1 << 6 | AM 9 = 0x200049
    assert IotlbDesc(3, did=5, addr=0x200000, am=9, ih=True).encode() == (
        0x0000_0000_0005_0032, 0x0000_0000_0020_0049,
    )
    # global with DR (bit 7) and DW (bit 6): 2 | 0x10 | 0x40 | 0x80 = 0xd2
    assert IotlbDesc(1, dr=True, dw=True).encode() == (0xD2, 0)
    assert IotlbDesc(2, did=0xFFFF).encode() == (0xFFFF_0022, 0)


def test_device_tlb_descriptor_encoding():
    # type 3 | QDEP 0x1f << 16 | SID 0x0300 << 32 ; hi = ADDR | S
    assert DevTlbDesc(sid=0x0300, addr=0x7000, size=True, qdep=0x1F).encode() == (
        0x0000_0300_001F_0003, 0x7001,
    )
    # PFSID 0x1234: bits 3:0 (4) at 15:12 -> 0x4000, bits 15:4 (0x123) at 63:52
    assert DevTlbDesc(sid=0x0300, pfsid=0x1234).encode() == (0x1230_0300_0000_4003, 0)


def test_iec_descriptor_encoding():
    assert IecDesc().encode() == (0x4, 0)  # global
    # index-selective (bit 4) | IM 5 << 27 (0x2800_0000) | IIDX 0x1234 << 32
    assert IecDesc(True, iidx=0x1234, im=5).encode() == (0x0000_1234_2800_0014, 0)


def test_wait_descriptor_encoding():
    # type 5 | IF (4) 0x10 | SW (5) 0x20 | FN (6) 0x40 | data 0xcafe << 32 ; hi = status addr
    assert WaitDesc(True, True, True, 0xCAFE, 0x9000).encode() == (0x0000_CAFE_0000_0075, 0x9000)
    assert WaitDesc(status_write=True, status_data=1, status_addr=0x9004).encode() == (
        0x0000_0001_0000_0025, 0x9004,
    )
    with pytest.raises(ValueError):
        WaitDesc(status_write=True, status_addr=0x9002).encode()


def test_desc_type_includes_bits_11_9():
    assert qi.desc_type(0x5) == 5
    assert qi.desc_type(0x201) == 0x11  # bit 9 -> type bit 4
    assert qi.desc_type(0xE06) == 0x76


@pytest.mark.parametrize(
    "lo,hi",
    [
        (0x0, 0),  # type 0
        (0x6, 0),  # type 6 (PASID-based IOTLB): not supported in this model
        (0x211, 0),  # type 0x11
        (0x11 | 1 << 6, 0),  # CC: bit 6 reserved
        (0x11 | 1 << 50, 0),  # CC: bit 50 reserved
        (0x11, 1),  # CC: high quadword reserved
        (0x12 | 1 << 8, 0),  # IOTLB: bit 8 reserved
        (0x12 | 1 << 32, 0),  # IOTLB: bits 63:32 reserved
        (0x12, 1 << 7),  # IOTLB hi: bits 11:7 reserved
        (0x3 | 1 << 4, 0),  # device-TLB: bit 4 reserved
        (0x3, 0x2),  # device-TLB hi: bits 11:1 reserved
        (0x4 | 1 << 5, 0),  # IEC: bit 5 reserved
        (0x4 | 1 << 12, 0),  # IEC: bits 26:12 reserved
        (0x5 | 1 << 7, 0),  # wait: PD without ECAP.PDS
        (0x5 | 1 << 12, 0),  # wait: bits 31:12 reserved
        (0x5, 0x1),  # wait hi: bits 1:0 reserved
        (0x1, 0),  # CC granularity 0
        (0x2, 0),  # IOTLB granularity 0
    ],
)
def test_check_rejects(lo, hi):
    assert qi.check(lo, hi) is not None
    with pytest.raises(ValueError):
        qi.decode(lo, hi)


def test_check_accepts_valid():
    for d in (CcDesc(1), IotlbDesc(3, 5, 0x1000, 0), DevTlbDesc(0x300), IecDesc(), WaitDesc(True)):
        assert qi.check(*d.encode()) is None


# ------------------------------------------------------------------ round trips
@given(st.integers(1, 3), U16, U16, st.integers(0, 3))
def test_cc_roundtrip(gran, did, sid, fm):
    d = CcDesc(gran, did, sid, fm)
    lo, hi = d.encode()
    assert (lo, hi) == (1 | gran << 4 | did << 16 | sid << 32 | fm << 48, 0)
    assert qi.decode(lo, hi) == d


@given(st.integers(1, 3), U16, PAGE_ADDR, st.integers(0, 63), st.booleans(), st.booleans(), st.booleans())
def test_iotlb_roundtrip(gran, did, addr, am, ih, dr, dw):
    d = IotlbDesc(gran, did, addr, am, ih, dr, dw)
    lo, hi = d.encode()
    assert lo == 2 | gran << 4 | dw << 6 | dr << 7 | did << 16
    assert hi == addr | ih << 6 | am
    assert qi.decode(lo, hi) == d


@given(U16, PAGE_ADDR, st.booleans(), st.integers(0, 31))
def test_dev_tlb_roundtrip(sid, addr, size, qdep):
    d = DevTlbDesc(sid, addr, size, qdep)
    lo, hi = d.encode()
    assert (lo, hi) == (3 | qdep << 16 | sid << 32, addr | size)
    assert qi.decode(lo, hi) == d


@given(st.booleans(), U16, st.integers(0, 31))
def test_iec_roundtrip(sel, iidx, im):
    d = IecDesc(sel, iidx, im)
    lo, hi = d.encode()
    assert (lo, hi) == (4 | sel << 4 | im << 27 | iidx << 32, 0)
    assert qi.decode(lo, hi) == d


@given(st.booleans(), st.booleans(), st.booleans(), st.integers(0, 0xFFFFFFFF),
       st.integers(0, (1 << 62) - 1).map(lambda a: a << 2))
def test_wait_roundtrip(sw, intr, fence, data, addr):
    d = WaitDesc(sw, intr, fence, data, addr)
    lo, hi = d.encode()
    assert (lo, hi) == (5 | intr << 4 | sw << 5 | fence << 6 | data << 32, addr)
    assert qi.decode(lo, hi) == d


# ------------------------------------------------------------------ processing
def qi_rig(cap=CAP_BASE, ecap=ECAP_BASE):
    rig = Rig(cap, ecap)
    rig.queue = rig.alloc.alloc()
    rig.status = rig.alloc.alloc()
    rig.unit.enable_qi(rig.queue)
    assert rig.unit.mmio_read(regs.GSTS_REG) & (1 << 26)  # QIES
    return rig


def test_descriptors_are_written_at_the_tail_and_processed_on_tail_write():
    rig = qi_rig()
    u = rig.unit
    u.context_cache.insert(ContextCacheEntry(SID, DID, True, 0x1001, 0x502))
    u.iotlb.insert(IotlbEntry(DID, 0x1000, 12, 0x9000, True, True, False))
    u.submit(CcDesc(1), IotlbDesc(2, did=DID))
    assert len(u.context_cache) == 0 and len(u.iotlb) == 0
    assert u.mmio_read(regs.IQH_REG) == 0x20 == u.mmio_read(regs.IQT_REG)  # 2 x 16 bytes
    # the descriptors are in the queue memory, at slots 0 and 1
    assert (rig.rq(rig.queue), rig.rq(rig.queue + 8)) == (0x11, 0)
    assert (rig.rq(rig.queue + 16), rig.rq(rig.queue + 24)) == (0x5_0022, 0)


def test_qi_psi_and_am_limit():
    rig = qi_rig()
    u = rig.unit
    for n in range(8):
        u.iotlb.insert(IotlbEntry(DID, n << 12, 12, 0x9000, True, True, False))
    u.submit(IotlbDesc(3, did=DID, addr=0x4000, am=2))  # pages 4..7
    assert [e.iova >> 12 for e in u.iotlb] == [0, 1, 2, 3]
    # AM 10 > MAMV 9: a bad descriptor (QEMU vtd_process_iotlb_desc)
    u.submit(IotlbDesc(3, did=DID, addr=0x0, am=10))
    assert u.mmio_read(regs.FSTS_REG) & 0x10
    assert len(u.iotlb) == 4


def test_wait_descriptor_status_write_and_interrupt():
    rig = qi_rig()
    u = rig.unit
    rig.wq(rig.status, 0xFFFF_FFFF_FFFF_FFFF)
    u.submit(WaitDesc(status_write=True, status_data=0x1234, status_addr=rig.status))
    # the low 32 bits are written; the upper half is left alone
    assert rig.rq(rig.status) == 0xFFFF_FFFF_0000_1234
    assert rig.mem.read_q(rig.status) == 0xFFFF_FFFF_0000_1234  # it landed in memory
    assert u.mmio_read(regs.ICS_REG) == 0  # no IF
    u.submit(WaitDesc(status_write=True, interrupt=True, status_data=0xAB, status_addr=rig.status + 4))
    assert rig.rq(rig.status) == 0x0000_00AB_0000_1234
    assert u.mmio_read(regs.ICS_REG) == 1  # IWC
    assert u.mmio_write(regs.ICS_REG, 1) == 0  # write 1 to clear


def test_bad_descriptor_stops_the_queue_until_iqe_is_cleared():
    rig = qi_rig()
    u = rig.unit
    u.iotlb.insert(IotlbEntry(DID, 0x1000, 12, 0x9000, True, True, False))
    u.context_cache.insert(ContextCacheEntry(SID, DID, True, 0x1001, 0x502))
    bad = RawDesc(0x7)  # descriptor type 7: unknown here
    u.submit(CcDesc(1), bad, IotlbDesc(1))
    assert u.mmio_read(regs.FSTS_REG) & 0x10  # IQE (bit 4)
    assert len(u.context_cache) == 0  # slot 0 was processed
    assert u.mmio_read(regs.IQH_REG) == 0x10  # head stays at the bad one (slot 1)
    assert u.mmio_read(regs.IQT_REG) == 0x30
    assert len(u.iotlb) == 1  # slot 2 not processed
    # another tail write does nothing while IQE is set
    u.submit(WaitDesc(status_write=True, status_data=7, status_addr=rig.status))
    assert rig.rq(rig.status) == 0 and u.mmio_read(regs.IQH_REG) == 0x10
    # clearing IQE without fixing the descriptor: the next tail write stops there again
    u.mmio_write(regs.FSTS_REG, 0x10)
    assert u.mmio_read(regs.FSTS_REG) & 0x10 == 0
    u.mmio_write(regs.IQT_REG, u.mmio_read(regs.IQT_REG))
    assert u.mmio_read(regs.FSTS_REG) & 0x10 and u.mmio_read(regs.IQH_REG) == 0x10
    # software replaces it (Linux qi_check_fault copies a wait descriptor over it)
    lo, hi = WaitDesc().encode()
    rig.wq(rig.queue + 16, lo)
    rig.wq(rig.queue + 24, hi)
    u.mmio_write(regs.FSTS_REG, 0x10)
    u.mmio_write(regs.IQT_REG, 0x40)
    assert u.mmio_read(regs.IQH_REG) == 0x40
    assert len(u.iotlb) == 0  # slot 2 ran
    assert rig.rq(rig.status) == 7  # slot 3 ran


@pytest.mark.parametrize("bad", [RawDesc(0x11, 1), RawDesc(0x12 | 1 << 8), RawDesc(0x1), RawDesc(0x211)])
def test_reserved_bits_or_type_stop_the_queue(bad):
    rig = qi_rig()
    u = rig.unit
    u.context_cache.insert(ContextCacheEntry(SID, DID, True, 0x1001, 0x502))
    u.submit(bad, CcDesc(1))
    assert u.mmio_read(regs.FSTS_REG) & 0x10
    assert u.mmio_read(regs.IQH_REG) == 0
    assert len(u.context_cache) == 1  # the global invalidation behind it did not run
    assert u.last_queue_error


def test_device_tlb_descriptor():
    rig = qi_rig(ecap=ECAP_BASE | ECAP_DT)
    pgd = rig.set_context(tt=1)
    for n in range(16):
        rig.map(pgd, n << 12, 0x100000 + (n << 12))
        assert rig.dma(n << 12, translation_request=True).ok
    dtlb = rig.unit.device_tlb[SID]
    assert sorted(dtlb) == list(range(16))
    rig.unit.submit(DevTlbDesc(SID, addr=0x3000))  # S=0: one page
    assert 3 not in dtlb and len(dtlb) == 15
    # S=1, address 0x7000: bits 12..14 set, bit 15 clear -> 2^16 bytes from 0: pages 0..15
    rig.unit.submit(DevTlbDesc(SID, addr=0x7000, size=True))
    assert dtlb == {}


def test_device_tlb_range_8k():
    rig = qi_rig(ecap=ECAP_BASE | ECAP_DT)
    pgd = rig.set_context(tt=1)
    for n in range(4):
        rig.map(pgd, n << 12, 0x100000 + (n << 12))
        rig.dma(n << 12, translation_request=True)
    # S=1, address 0x2000: bit 12 clear -> 8 KiB at 0x2000: pages 2 and 3
    rig.unit.submit(DevTlbDesc(SID, addr=0x2000, size=True))
    assert sorted(rig.unit.device_tlb[SID]) == [0, 1]


def test_iec_descriptor_is_accepted():
    rig = qi_rig()
    rig.unit.submit(IecDesc(), IecDesc(True, 3, 0))
    assert rig.unit.mmio_read(regs.FSTS_REG) & 0x10 == 0
    assert rig.unit.mmio_read(regs.IQH_REG) == 0x20


def test_queue_wraps_around():
    rig = qi_rig()  # QS 0: 256 entries of 16 bytes
    u = rig.unit
    assert u.queue_entries == 256
    u.submit(*[IecDesc()] * 255)
    assert u.mmio_read(regs.IQT_REG) == 0xFF0
    u.submit(WaitDesc(status_write=True, status_data=1, status_addr=rig.status),
             WaitDesc(status_write=True, status_data=2, status_addr=rig.status + 4))
    assert u.mmio_read(regs.IQT_REG) == 0x10 == u.mmio_read(regs.IQH_REG)
    assert rig.rq(rig.status) == 0x2_0000_0001
    assert rig.rq(rig.queue + 0xFF0) == 0x25 | 1 << 32  # slot 255: the first wait


def test_iqt_register_holds_bits_18_4():
    u = Rig().unit  # QI not enabled: the write is only stored
    assert u.mmio_write(regs.IQT_REG, 0x10018) == 0x10010  # bits 3:0 dropped
    assert u.mmio_write(regs.IQT_REG, 0x7FFF0) == 0x7FFF0
    assert u.mmio_write(regs.IQT_REG, 0x80010) == 0x10  # bit 19 is not QT
    assert u.mmio_read(regs.IQT_REG) == 0x10


def test_no_processing_without_qie():
    rig = Rig()
    q = rig.alloc.alloc()
    u = rig.unit
    u.mmio_write(regs.IQA_REG, q)
    u.iotlb.insert(IotlbEntry(DID, 0x1000, 12, 0x9000, True, True, False))
    rig.wq(q, 0x12)
    u.mmio_write(regs.IQT_REG, 0x10)
    assert len(u.iotlb) == 1 and u.mmio_read(regs.IQH_REG) == 0


def test_qie_needs_ecap_qi():
    rig = Rig(CAP_BASE, ECAP_BASE & ~ECAP_QI)
    rig.unit.enable_qi(rig.alloc.alloc())
    assert rig.unit.mmio_read(regs.GSTS_REG) & (1 << 26) == 0


# ------------------------------------------------------------------ wait descriptors: QEMU and the spec
def test_qemu_unit_refuses_a_wait_descriptor_with_none_of_sw_if_fn():
    # QEMU vtd_process_wait_desc(): "invalid wait desc" -> vtd_handle_inv_queue_error().
    rig = qi_rig()
    u = rig.unit
    u.emulated_by_qemu = True
    u.context_cache.insert(ContextCacheEntry(SID, DID, True, 0x1001, 0x502))
    u.iotlb.insert(IotlbEntry(DID, 0x1000, 12, 0x9000, True, True, False))
    u.submit(CcDesc(1), WaitDesc(), IotlbDesc(1))
    assert u.mmio_read(regs.FSTS_REG) & 0x10  # IQE
    assert u.mmio_read(regs.IQH_REG) == 0x10  # the head stays on the wait descriptor
    assert len(u.context_cache) == 0  # slot 0 ran
    assert len(u.iotlb) == 1  # slot 2 did not
    assert "wait" in u.last_queue_error


def test_qemu_unit_takes_a_fence_only_wait_as_a_barrier():
    # QEMU 57ac646a2ecb "intel_iommu: Bypass barrier wait descriptor": SW=IF=0, FN=1 is
    # VT-d spec 7.10's barrier, not an error (older QEMU refused it).
    rig = qi_rig()
    u = rig.unit
    u.emulated_by_qemu = True
    u.submit(WaitDesc(fence=True), IecDesc())
    assert u.mmio_read(regs.FSTS_REG) & 0x10 == 0
    assert u.mmio_read(regs.IQH_REG) == 0x20 == u.mmio_read(regs.IQT_REG)
    assert u.mmio_read(regs.ICS_REG) == 0


def test_hardware_unit_takes_a_wait_descriptor_without_sw_or_if():
    # The VT-d spec names no error for SW=IF=0: the descriptor only orders.
    rig = qi_rig()
    u = rig.unit
    assert not u.emulated_by_qemu
    u.submit(WaitDesc(), IotlbDesc(1))
    assert u.mmio_read(regs.FSTS_REG) & 0x10 == 0
    assert u.mmio_read(regs.IQH_REG) == 0x20
    assert u.mmio_read(regs.ICS_REG) == 0 and rig.rq(rig.status) == 0


@pytest.mark.parametrize("qemu", [False, True])
def test_status_write_outside_memory_is_a_queue_error(qemu):
    # vtd_process_wait_desc(): a failed dma_memory_write fails the descriptor, after the
    # IF completion event (the two flags are handled one after the other).
    rig = Rig(mem_size=1 << 24)
    rig.queue = rig.alloc.alloc()
    u = rig.unit
    u.emulated_by_qemu = qemu
    u.enable_qi(rig.queue)
    u.submit(WaitDesc(status_write=True, interrupt=True, status_data=2, status_addr=1 << 30))
    assert u.mmio_read(regs.FSTS_REG) & 0x10
    assert u.mmio_read(regs.IQH_REG) == 0
    assert u.mmio_read(regs.ICS_REG) == 1
    assert "status write" in u.last_queue_error


def test_submit_records_descriptors_per_tail_write():
    rig = qi_rig()
    u = rig.unit
    u.submit(CcDesc(1))
    u.submit(IecDesc(), IotlbDesc(1), WaitDesc(status_write=True, status_data=2, status_addr=rig.status))
    assert list(u.qi_submissions)[-2:] == [1, 3]
    assert u.counters["qi-desc"] == 4
