"""The machine's command interface: undo/redo, refusal of bad input, determinism, selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from machinekit import dumps, events, one, run, state, unit_state
from vtdtui.machine import COMMANDS, OPTIONS, CommandError, Machine
from vtdtui.machine.state import SCHEMA, to_json

DATA = Path(__file__).parent / "data" / "scenarios"

SESSIONS = {
    "desktop": [
        "toggle dmar1 CM", "attach 5", "map 5 0x100000 64K rw", "dma 5 0x100000 r", "dma 5 0x300000 w",
        "attach 0", "set reuse prefer-reuse", "attach 4", "unmap 5 0x100000 64K", "set kvm-model 6.10",
        "detach 0", "toggle dmar0 C", "dma 6 0x0 r",
    ],
    "viommu": [
        "attach 3", "map 3 0x100000 16K rw", "dma 3 0x101000 w", "set qemu-force on", "toggle dmar0 CM",
        "map 3 0x200000 4K r", "dma 3 0x200000 r", "attach 2", "map 2 0x0 8K", "unmap 3 0x100000 16K",
    ],
    "server": [
        "map 3 0x100000 64K rw", "dma 3 0x100000 r", "unmap 3 0x100000 64K", "dma 3 0x100000 r",
        "detach 7", "toggle dmar0 CM", "attach 7", "flush-queue", "set lazy off",
    ],
}


# ----------------------------------------------------------------------------- undo / redo


@pytest.mark.parametrize("scenario", sorted(SESSIONS))
def test_undo_restores_every_earlier_state_exactly(scenario):
    m = Machine.from_scenario(scenario)
    snaps = [dumps(m)]
    for cmd in SESSIONS[scenario]:
        m.execute(cmd)
        snaps.append(dumps(m))
    assert len(set(snaps)) == len(snaps)  # every command changed something (the journal at least)
    for k in range(len(SESSIONS[scenario]) - 1, -1, -1):
        o = m.undo()
        assert o.events == [] and o.message == f"undid: {SESSIONS[scenario][k]}"
        assert dumps(m) == snaps[k], f"undo of {SESSIONS[scenario][k]!r}"
    with pytest.raises(CommandError, match="nothing to undo"):
        m.undo()
    # Redo walks forward again through the same states, with the same events.
    for k, cmd in enumerate(SESSIONS[scenario]):
        o = m.redo()
        assert o.message.startswith("redid: ")
        assert o.command == cmd
        assert dumps(m) == snaps[k + 1], f"redo of {cmd!r}"
    with pytest.raises(CommandError, match="nothing to redo"):
        m.redo()


def test_undo_n_steps_then_redo_returns_to_the_same_state():
    m, _ = run("desktop", "attach 5", "map 5 0x100000 64K")
    mid = dumps(m)
    for cmd in ("toggle dmar1 CM", "map 5 0x200000 4K", "dma 5 0x200000 r", "unmap 5 0x100000 64K"):
        m.execute(cmd)
    end = dumps(m)
    for _ in range(4):
        m.undo()
    assert dumps(m) == mid
    for _ in range(4):
        m.redo()
    assert dumps(m) == end


def test_redo_events_match_the_original_ones():
    m, (o,) = run("desktop", "attach 5")
    m.undo()
    r = m.redo()
    assert [e.to_json() for e in r.events] == [e.to_json() for e in o.events]


def test_a_new_command_clears_redo():
    m, _ = run("desktop", "attach 5", "map 5 0x100000 4K")
    m.undo()
    m.execute("map 5 0x200000 4K")
    with pytest.raises(CommandError, match="nothing to redo"):
        m.redo()
    assert group_domain_pages(m) == 1


def test_a_refused_command_keeps_redo():
    m, _ = run("desktop", "attach 5")
    m.undo()
    with pytest.raises(CommandError):
        m.execute("detach 5")
    m.redo()
    assert state(m)["groups"][5]["domain"] is not None


def group_domain_pages(m):
    st = state(m)
    return sum(d["mapped_pages"] for d in st["domains"])


# ----------------------------------------------------------------------------- bad input

BAD = [
    ("frobnicate 5", "unknown command"),
    ("", "empty command"),
    ("attach", "usage: attach GROUP"),
    ("attach 1 2", "usage: attach GROUP"),
    ("map 5 0x100000", "usage: map GROUP IOVA SIZE"),
    ("toggle dmar1", "usage: toggle UNIT FIELD"),
    ("map 5 0x100800 4K", "not 4 KiB aligned"),
    ("map 5 0x200000 0", "non-zero multiple of 4K"),
    ("map 5 0x200000 6000", "non-zero multiple of 4K"),
    ("map 5 0x7ffffff000 8K", "39-bit address width"),
    ("map 5 0x8000000000 4K", "39-bit address width"),
    ("map 5 0x108000 64K", "overlaps"),
    ("map 5 0x200000 4K x", "permissions"),
    ("map 5 0x200000 4KQ", "size"),
    ("unmap 5 0x300000 4K", "nothing is mapped"),
    ("unmap 5 0x104000 4K", "split"),
    ("unmap 5 0x108000 64K", "split"),
    ("unmap 5 0xf0000 0x18000", "split"),
    ("attach 5", "already attached"),
    ("detach 4", "not attached"),
    ("map 4 0x0 4K", "not attached"),
    ("attach 99", "no group 99"),
    ("select-group x", "not a number"),
    ("select-group -1", "negative"),
    ("dma 99 0x0", "no group 99"),
    ("dma 5 zz", "not a number"),
    ("dma 5 0x0 x", "access"),
    ("dma 5 0x10000000000000000", "wider than 64 bits"),
    ("select-unit dmar9", "no unit 'dmar9'"),
    ("toggle dmar9 CM", "no unit 'dmar9'"),
    ("toggle dmar1 MGAW", "not a one-bit"),
    ("toggle dmar1 NOPE", "not a one-bit"),
    ("set bogus on", "unknown option 'bogus'"),
    ("set lazy maybe", "lazy takes on or off"),
    ("set reuse sometimes", "reuse takes"),
    ("set qemu-force on", "QEMU"),
    ("flush-queue 77", "no group 77"),
    ("attach '5", "No closing quotation"),
]


@pytest.mark.parametrize("cmd, message", BAD, ids=[c or "<empty>" for c, _ in BAD])
def test_bad_command_raises_and_changes_nothing(cmd, message):
    m, _ = run("desktop", "attach 5", "map 5 0x100000 64K rw")
    before = dumps(m)
    log = list(m.log)
    with pytest.raises(CommandError) as exc:
        m.execute(cmd)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)
    assert dumps(m) == before
    assert m.log == log
    # And the machine goes on exactly as if it had never seen the command.
    m.execute("map 5 0x200000 4K")
    ref, _ = run("desktop", "attach 5", "map 5 0x100000 64K rw", "map 5 0x200000 4K")
    assert dumps(m) == dumps(ref)


@pytest.mark.parametrize("cmd, lacks", [
    ("set reuse prefer-reuse", "VFIO container"), ("set kvm-model 6.10", "VM"),
    ("set vfio-flush on", "VFIO container"), ("set virtio-noncoherent on", "VM"), ("set cr0-cd on", "VM"),
    ("set qemu-force on", "QEMU's vIOMMU"),
])
def test_options_of_actors_a_scenario_lacks_are_refused(cmd, lacks):
    m, _ = run("server")
    before = dumps(m)
    with pytest.raises(CommandError) as exc:
        m.execute(cmd)
    assert str(exc.value) == f"this scenario has no {lacks}"
    assert dumps(m) == before


def test_a_command_failing_half_way_is_rolled_back():
    # The 15th domain on a unit with 16 DIDs (0 and 1 reserved) fails after the driver
    # already allocated and clflushed its page table: the machine rebuilds the state.
    m = Machine.from_scenario(str(DATA / "good-few-dids.toml"))
    for i in range(14):
        m.execute(f"attach {i}")
    dids = sorted(c["did"] for c in unit_state(state(m), "dmar0")["context_entries"])
    assert dids == list(range(2, 16))
    before, mark = dumps(m), len(m.journal)
    with pytest.raises(CommandError, match="No free domain ids"):
        m.execute("attach 14")
    assert dumps(m) == before and len(m.journal) == mark
    m.execute("detach 3")
    m.execute("attach 14")
    assert state(m)["groups"][14]["domain"] is not None


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("scenario", sorted(SESSIONS))
def test_two_machines_give_byte_identical_json(scenario):
    a = Machine.from_scenario(scenario)
    b = Machine.from_scenario(scenario)
    for cmd in SESSIONS[scenario]:
        a.execute(cmd)
        b.execute(cmd)
    ja = json.dumps(to_json(a), indent=2)
    jb = json.dumps(to_json(b), indent=2)
    assert ja == jb
    assert json.loads(ja)["schema"] == SCHEMA


def test_undone_machine_equals_a_fresh_one():
    m, _ = run("desktop", *SESSIONS["desktop"])
    for _ in SESSIONS["desktop"]:
        m.undo()
    assert dumps(m) == dumps(Machine.from_scenario("desktop"))


# ----------------------------------------------------------------------------- the other commands


def test_selection_commands():
    m = Machine.from_scenario("desktop")
    assert (m.selected_unit, m.selected_group) == ("dmar0", 0)
    assert m.execute("next-unit").message == "selected dmar1"
    assert m.execute("next-unit").message == "selected dmar0"  # wraps
    assert m.execute("prev-unit").message == "selected dmar1"
    m.execute("select-unit dmar0")
    assert m.selected_unit == "dmar0"
    o = m.execute("select-group 3")
    assert (m.selected_group, m.selected_unit) == (3, "dmar1")
    assert "00:1f.0" in o.message and o.events == []


def test_toggle_and_set_are_journalled():
    m, (o, s) = run("desktop", "toggle dmar1 cm", "set lazy off")
    e = one(o, actor="hw", op="capability-change")
    assert e.unit == "dmar1" and e.outcome == "issued" and "CAP.CM 0→1" in e.reason
    assert unit_state(state(m), "dmar1")["flags"]["cm"] is True
    assert unit_state(state(m), "dmar1")["cap"] == hex(0xD2008C40660462 | 0x80)
    e = one(s, actor="hw", op="policy-change")
    assert e.reason == "lazy = off"
    m.execute("toggle dmar1 CM")
    assert unit_state(state(m), "dmar1")["cap"] == "0xd2008c40660462"
    m.execute("toggle dmar1 SC")
    assert unit_state(state(m), "dmar1")["flags"]["sc"] is False


def test_every_listed_command_and_option_is_accepted():
    m = Machine.from_scenario("desktop")
    for name in COMMANDS:
        assert hasattr(m, "_cmd_" + name.replace("-", "_")), name
    for opt, values in OPTIONS.items():
        for v in values:
            if opt == "qemu-force":
                continue
            m.execute(f"set {opt} {v}")
    v = Machine.from_scenario("viommu")
    v.execute("set qemu-force on")
    assert state(v)["qemu"]["force"] is True


def test_dma_offsets_and_mgaw():
    m, outs = run("desktop", "attach 5", "map 5 0x100000 4K", "dma 5 0x100123 w", "dma 5 0x123456789 r",
                  "dma 5 0x8000000000 r")
    assert outs[2].translation.hpa == 0x100100123
    assert outs[3].translation.fault.reason == 0x06
    assert outs[4].translation.fault.reason == 0x04
    faults = unit_state(state(m), "dmar1")["faults"]
    assert [f["iova"] for f in faults] == ["0x123456000", "0x8000000000"]  # recorded page granular
    assert faults[1]["message"] == ("DMAR: [DMA Read NO_PASID] Request device [02:00.0] fault addr "
                                    "0x8000000000 [fault reason 0x04] Access beyond MGAW")
    assert events(outs[2], actor="hw", op="dma")


def test_dma_uses_the_groups_first_device():
    m, (_, o) = run("desktop", "attach 3", "dma 3 0x0 r")
    assert o.translation.source_id == 0x00F8  # 00:1f.0
    assert unit_state(state(m), "dmar1")["faults"][0]["bdf"] == "00:1f.0"
