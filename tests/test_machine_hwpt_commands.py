"""The iommufd ioctls a VMM issues, by hand: `hwpt-alloc` and `hwpt-invalidate`.

Bad input is the kernel's errno and reason, one line, and the state JSON unchanged."""

from __future__ import annotations

import pytest

from vtdtui.machine import CommandError, Machine
from vtdtui.machine.state import to_json_text


@pytest.fixture(scope="module")
def nested_text():
    m = Machine.from_scenario("viommu-nested")
    m.execute("attach 3")
    return m.log[:]


def nested(log) -> Machine:
    m = Machine.from_scenario("viommu-nested")
    for line in log:
        m.execute(line)
    return m


@pytest.mark.parametrize("line, errno, why", [
    ("hwpt-invalidate 4 0x1001 1", "-EINVAL", "not 4 KiB aligned"),
    ("hwpt-invalidate 4 0x1000 1 2", "-EOPNOTSUPP", "flags 0x2"),
    ("hwpt-invalidate 4 0x1000 all", "-EINVAL", "needs addr 0"),
    ("hwpt-invalidate 3 0 all", "-EINVAL", "only a nested HWPT"),
    ("hwpt-invalidate 99 0 1", "-ENOENT", "no such object"),
    ("hwpt-alloc 02:00.0 2 flags=0x80", "-EOPNOTSUPP", "not valid for a paging HWPT"),
    ("hwpt-alloc 02:00.0 4 s1=0x1000", "-EINVAL", "neither an IOAS nor a paging HWPT"),
])
def test_refusals_name_the_errno_and_change_nothing(nested_text, line, errno, why):
    m = nested(nested_text)
    before = to_json_text(m)
    with pytest.raises(CommandError) as exc:
        m.execute(line)
    msg = str(exc.value)
    assert msg.endswith(f"({errno})") and why in msg and "\n" not in msg
    assert to_json_text(m) == before


def test_a_nested_hwpt_needs_a_nest_parent(nested_text):
    m = nested(nested_text)
    m.execute("hwpt-alloc 02:00.0 2")  # a paging HWPT on the IOAS, without NEST_PARENT
    plain = max(h.id for h in m.iommufd.hwpts)
    before = to_json_text(m)
    with pytest.raises(CommandError, match=r"\(-EINVAL\)$"):
        m.execute(f"hwpt-alloc 02:00.0 {plain} s1=0x100c000")
    assert to_json_text(m) == before
    out = m.execute("hwpt-alloc 02:00.0 2 nest-parent")
    parent = max(h.id for h in m.iommufd.hwpts)
    assert f"paging HWPT {parent}" in out.message
    out = m.execute(f"hwpt-alloc 02:00.0 {parent} s1=0x100c000 sre")
    h = m.iommufd.objects[max(h.id for h in m.iommufd.hwpts)]
    assert h.kind == "nested" and h.parent == parent and h.s1.pgtbl_addr == 0x100c000 and h.s1.flags == 1
    m.undo()
    m.undo()
    m.undo()
    assert to_json_text(m) == to_json_text(nested(nested_text))


def test_invalidate_by_hand_flushes_the_nested_did(nested_text):
    m = nested(nested_text)
    out = m.execute("hwpt-invalidate 4 0x1000 2 leaf")
    assert out.message == "IOMMU_HWPT_INVALIDATE on HWPT 4: 1 of 1 entry done"
    inv = [e for e in out.events if e.op == "hwpt-invalidate"]
    assert len(inv) == 1 and inv[0].scope == "page"
    host = [e for e in out.events if e.op == "piotlb-invalidation" and e.rule == "nested-invalidate"]
    nested_did = m.iommufd.objects[4].domain.dids["host-dmar1"]
    assert host and all(e.did == nested_did and e.pasid == 0 for e in host)
    assert "IH" in host[0].detail  # LEAF becomes the descriptor's IH


def test_without_iommufd_the_commands_say_so():
    m = Machine.from_scenario("desktop")
    with pytest.raises(CommandError, match="no iommufd"):
        m.execute("hwpt-invalidate 1 0 all")
    m.execute("set backend iommufd")
    with pytest.raises(CommandError, match="no device bound to iommufd"):
        m.execute("hwpt-alloc 02:00.0 1")
