"""QEMU device_del / device_add of the assigned NIC under the machine's invariants and undo.

Each command's journal decisions are checked against the hardware counters
(invariants.check_command), the state invariants hold after every command, and undo
gives back every earlier state byte for byte.
"""

from __future__ import annotations

import pytest

from machinekit import dumps, state
from vtdtui.machine import COMMANDS, USAGE, CommandError, Machine
from vtdtui.machine import invariants as inv

SESSIONS = [
    ["attach 3", "map 3 0x100000 16K rw", "device-del", "map 3 0x200000 4K", "device-add", "dma 3 0x200000 r",
     "unmap 3 0x100000 16K", "detach 3", "device-del", "device-add"],
    ["attach 3", "map 3 0x100000 8K", "device-del", "toggle dmar0 CM", "device-add", "map 3 0x300000 4K",
     "toggle dmar0 CM", "device-add", "dma 3 0x300000 r"],
    ["device-del", "toggle dmar0 SC", "device-add", "toggle dmar0 SC", "attach 3", "device-add", "map 3 0x0 2M rw",
     "set qemu-force on", "toggle dmar0 CM", "map 3 0x400000 4K", "flush-queue", "device-del", "device-add"],
    ["set qemu-force on", "toggle dmar0 CM", "attach 3", "map 3 0x100000 4K", "device-del", "set qemu-force off",
     "device-add", "set qemu-force on", "device-add", "unmap 3 0x100000 4K", "flush-queue 3"],
]


@pytest.mark.parametrize("cmds", SESSIONS)
def test_hotplug_sessions_keep_the_invariants_and_undo_exactly(cmds):
    m = Machine.from_scenario("viommu")
    snaps = [dumps(m)]
    for line in cmds:
        counters = inv.hw_counters(m)
        o = m.execute(line)
        problems = inv.check_command(m, line, o.events, counters) + inv.check(m)
        assert not problems, (line, problems)
        snaps.append(dumps(m))
    for want in reversed(snaps[:-1]):
        m.undo()
        assert dumps(m) == want


def test_the_commands_are_listed():
    assert {"device-add", "device-del"} <= set(COMMANDS)
    assert USAGE["device-add"] == "device-add" and USAGE["device-del"] == "device-del"
    m = Machine.from_scenario("desktop")
    with pytest.raises(CommandError, match="no QEMU vfio-pci device"):
        m.execute("device-del")


def test_kvm_holds_the_host_group_only_while_it_is_plugged():
    m = Machine.from_scenario("viommu")
    assert -1 in m.kvm.files and m.qemu.host_vfio.domain_of(-1) is not None
    m.execute("device-del")
    assert -1 not in m.kvm.files and m.qemu.host_vfio.domain_of(-1) is None
    assert state(m)["qemu"]["plugged"] is False and state(m)["qemu"]["refused"] is False
    m.execute("device-add")
    assert -1 in m.kvm.files and state(m)["qemu"]["plugged"] is True
