"""The driver's queued invalidation, read back from the queue memory: qi_submit_sync()'s
wait descriptor and desc_status words (drivers/iommu/intel/dmar.c) and cache.c's
qi_batch (v6.12+: up to QI_MAX_BATCHED_DESC_COUNT descriptors per unit, one wait)."""

from __future__ import annotations

from machinekit import events, run
from vtdtui.hw import qi, regs

# qw0 of Linux's wait descriptor: QI_IWD_STATUS_DATA(QI_DONE) | QI_IWD_STATUS_WRITE | QI_IWD_TYPE
# = 2 << 32 | 1 << 5 | 5, written out from the macros (iommu.h), not from vtdtui.
LINUX_WAIT_QW0 = 0x0000_0002_0000_0025
SID_GROUP5 = 0x0200  # desktop group 5: 02:00.0 behind dmar1


def _slots(unit, first: int, count: int) -> list[tuple[int, int]]:
    """(qw0, qw1) of `count` queue slots from `first`, as the CPU sees the queue page."""
    base = unit.iqa & ~0xFFF
    n = unit.queue_entries
    return [(unit.cpu_read_q(base + (s % n) * 16), unit.cpu_read_q(base + (s % n) * 16 + 8))
            for s in range(first, first + count)]


def _tail(unit) -> int:
    return unit.mmio_read(regs.IQT_REG) >> 4


def test_each_flush_ends_with_the_wait_descriptor_linux_writes():
    m, _ = run("desktop", "toggle dmar1 CM")
    u = m.units["dmar1"]
    o = m.execute("attach 5")  # CM=1: device-selective context flush, then domain IOTLB flush
    assert [e.rule for e in events(o, actor="driver", outcome="issued") if "invalidation" in e.op] == ["ctx-np2p"] * 2
    # qi_flush_context and qi_flush_iotlb: one qi_submit_sync each, never batched.
    assert list(u.qi_submissions)[-2:] == [2, 2]
    (cc, wait1, tlb, wait2) = _slots(u, _tail(u) - 4, 4)
    assert qi.desc_type(cc[0]) == qi.CC and qi.desc_type(tlb[0]) == qi.IOTLB
    for lo, hi in (wait1, wait2):
        assert lo == LINUX_WAIT_QW0  # SW=1, IF=0, FN=0, status data QI_DONE
        assert hi & 3 == 0 and hi & ~0xFFF not in (u.iqa & ~0xFFF, u.rta_latched)
    # desc_status[wait_index]: one 32-bit word per queue slot, so two slots apart = 8 bytes.
    assert wait2[1] - wait1[1] == 8
    # qi_submit_sync() hands every slot back (QI_FREE) once it has seen QI_DONE.
    assert u.cpu_read_q(wait1[1] & ~7) >> ((wait1[1] & 4) * 8) & 0xFFFFFFFF == 0
    assert u.mmio_read(regs.FSTS_REG) & regs.FSTS_IQE == 0
    assert u.mmio_read(regs.IQH_REG) == u.mmio_read(regs.IQT_REG)


def test_the_driver_waits_for_qi_done_in_its_status_word():
    m, _ = run("desktop")
    drv, u = m.driver_for("dmar1"), m.units["dmar1"]
    assert drv._qi_submit_sync(u, [qi.IotlbDesc(regs.GRAN_GLOBAL)]) is True
    # The queue runs, but the wait descriptor's status write never lands: the kernel
    # would still be polling desc_status[wait_index].
    u._write_status = lambda addr, data: None
    assert drv._qi_submit_sync(u, [qi.IotlbDesc(regs.GRAN_GLOBAL)]) is False
    # A queue stopped by IQE: nothing after the bad descriptor runs, QI_DONE never comes.
    del u._write_status
    u.mmio_write(regs.FSTS_REG, 0)
    u.fsts |= regs.FSTS_IQE
    assert drv._qi_submit_sync(u, [qi.IotlbDesc(regs.GRAN_GLOBAL)]) is False


def test_a_batch_is_one_submission_of_at_most_16_plus_the_wait():
    m, _ = run("desktop")
    drv, u = m.driver_for("dmar1"), m.units["dmar1"]
    done = u.counters.get("iotlb-domain", 0)
    with drv.qi_batch():
        for did in range(2, 22):
            drv._flush_iotlb(u, regs.GRAN_DOMAIN, did)
        # qi_batch_increment_index(): the 16th descriptor sends the batch at once.
        assert list(u.qi_submissions)[-1] == 17
        assert u.counters["iotlb-domain"] == done + 16
    assert list(u.qi_submissions)[-2:] == [17, 5]
    assert u.counters["iotlb-domain"] == done + 20
    waits = [lo for lo, _ in _slots(u, _tail(u) - 22, 22) if qi.desc_type(lo) == qi.WAIT]
    assert waits == [LINUX_WAIT_QW0] * 2


def test_a_batch_is_sent_when_the_unit_changes_and_a_context_flush_goes_alone():
    m, _ = run("desktop")
    drv, u0, u1 = m.driver_for("dmar0"), m.units["dmar0"], m.units["dmar1"]
    n0, n1 = len(u0.qi_submissions), len(u1.qi_submissions)
    with drv.qi_batch():
        drv._flush_iotlb(u0, regs.GRAN_DOMAIN, 2)
        drv._flush_iotlb(u1, regs.GRAN_DOMAIN, 3)  # another unit: dmar0's batch goes out
        assert list(u0.qi_submissions)[n0:] == [2]
        drv._flush_iotlb(u1, regs.GRAN_DOMAIN, 4)
        drv._flush_context(u1, regs.GRAN_GLOBAL)  # qi_flush_context: after what was queued
        drv._flush_iotlb(u1, regs.GRAN_DOMAIN, 5)
    assert list(u0.qi_submissions)[n0:] == [2]
    assert list(u1.qi_submissions)[n1:] == [3, 2, 2]
    kinds = [qi.desc_type(lo) for lo, _ in _slots(u1, _tail(u1) - 7, 7)]
    assert kinds == [qi.IOTLB, qi.IOTLB, qi.WAIT, qi.CC, qi.WAIT, qi.IOTLB, qi.WAIT]


def test_iotlb_and_device_tlb_of_one_flush_share_a_batch():
    # cache_tag_flush_range(): the IOTLB tag and the DEVTLB tags of one unit, one batch.
    m, _ = run("desktop", "attach 5", "map 5 0x100000 8K rw")
    drv, u = m.driver_for("dmar1"), m.units["dmar1"]
    drv.ats.add(SID_GROUP5)
    did = next(iter(drv.domains.values())).dids["dmar1"]
    with drv.qi_batch():
        drv._psi(u, did, 0x100000, 0x2000, "unmap", "leaf entries cleared", ih=True)
        drv._devtlb(u, SID_GROUP5, 0x100000, 1, "unmap")
    assert list(u.qi_submissions)[-1] == 3
    (tlb, dev, wait) = _slots(u, _tail(u) - 3, 3)
    dr, dw = bool(u.capf("DRD")), bool(u.capf("DWD"))  # qi_desc_iotlb: cap_read_drain / cap_write_drain
    assert qi.decode(*tlb) == qi.IotlbDesc(3, did, 0x100000, 1, True, dr, dw)
    assert qi.decode(*dev) == qi.DevTlbDesc(SID_GROUP5, 0x100000, True)
    assert wait[0] == LINUX_WAIT_QW0


def test_no_device_tlb_descriptor_while_translation_is_off():
    # qi_flush_dev_iotlb / qi_batch_add_dev_iotlb: `if (!(iommu->gcmd & DMA_GCMD_TE)) return;`
    m, _ = run("desktop")
    drv, u = m.driver_for("dmar1"), m.units["dmar1"]
    drv.ats.add(SID_GROUP5)
    u.mmio_write(regs.GCMD_REG, u.gcmd & ~regs.GCMD_TE)
    tail = _tail(u)
    drv._devtlb(u, SID_GROUP5, 0, 52, "ctx-clear")
    assert _tail(u) == tail
    u.mmio_write(regs.GCMD_REG, u.gcmd | regs.GCMD_TE)
    drv._devtlb(u, SID_GROUP5, 0, 52, "ctx-clear")
    assert list(u.qi_submissions)[-1] == 2


def test_qemu_guest_unit_completes_every_guest_flush():
    # The guest unit is QEMU's vIOMMU: it must take Linux's wait descriptors (SW=1) and
    # never stop its queue, through attach, map, unmap and detach.
    m, _ = run("viommu", "attach 3", "map 3 0x100000 64K rw", "unmap 3 0x100000 64K", "detach 3")
    g = m.units["dmar0"]
    assert g.emulated_by_qemu and len(g.qi_submissions) >= 4
    assert g.mmio_read(regs.FSTS_REG) & regs.FSTS_IQE == 0 and not g.last_queue_error
    assert g.mmio_read(regs.IQH_REG) == g.mmio_read(regs.IQT_REG)
    waits = [lo for lo, _ in _slots(g, 0, _tail(g)) if qi.desc_type(lo) == qi.WAIT]
    assert waits and set(waits) == {LINUX_WAIT_QW0}


def test_a_strict_unmap_sends_its_iotlb_and_device_tlb_flushes_as_one_batch():
    # intel_iommu_tlb_sync() → cache_tag_flush_range(): the PSI and the device-TLB
    # invalidation of each unit go out in one qi_submit_sync, then the wait.
    m, _ = run("desktop", "attach 5", "map 5 0x100000 8K rw")
    drv, u = m.driver_for("dmar1"), m.units["dmar1"]
    drv.ats.add(SID_GROUP5)
    n = len(u.qi_submissions)
    m.execute("unmap 5 0x100000 8K")
    assert list(u.qi_submissions)[n:] == [3]
    kinds = [qi.desc_type(lo) for lo, _ in _slots(u, _tail(u) - 3, 3)]
    assert kinds == [qi.IOTLB, qi.DEV_TLB, qi.WAIT]
