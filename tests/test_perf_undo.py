"""Undo checkpoints hold only what a command can reach (issue 16): a selection saves the
Machine's own fields, a toggle its unit, a DMA the translating unit and its kernel's
driver; the rest every actor.  Two checks keep that honest:

- the audit: every command of random sessions also takes a checkpoint of *every*
  actor, group, domain and device info; whatever that one sees changed must be in
  the command's own checkpoint (else its undo would leave it changed);
- undo equals a fresh machine with the command prefix replayed: after each undo (and
  redo) the state JSON and the hidden state (dirty-line order, allocator, DIDs) are
  those of `Machine.from_scenario` + the log run again.

On desktop (legacy, VFIO), server (scalable mode, 64 driver-owned groups), notebook
(scalable mode, VFIO) and viommu (QEMU's vIOMMU, two kernels).
"""

from __future__ import annotations

import random

import pytest

from machinekit import dumps
from vtdtui.machine import CommandError, Machine
from vtdtui.machine import machine as M

SCENARIOS = ["desktop", "server", "notebook", "viommu", "viommu-nested"]


# ----------------------------------------------------------------------------- random sessions


def _commands(m: Machine, rnd: random.Random) -> str:
    gids = sorted(m.groups)[:8]
    g = rnd.choice(gids)
    unit = rnd.choice(list(m.units))
    iova = rnd.choice([0, 0x1000, 0x100000, 0x200000, 0x40000000])
    size = rnd.choice(["4K", "8K", "64K", "2M"])
    return rnd.choice([
        f"toggle {unit} {rnd.choice(['CM', 'C', 'SC', 'PSI', 'RWBF'])}",
        f"attach {g}", f"detach {g}", f"attach {g}",
        f"map {g} {iova:#x} {size} {rnd.choice(['r', 'w', 'rw'])}", f"map {g} {iova:#x} {size}",
        f"unmap {g} {iova:#x} {size}",
        f"dma {g} {iova + rnd.choice([0, 0x800, 0x1000]):#x} {rnd.choice(['r', 'w'])}",
        f"dma {g} {iova:#x}",
        f"select-group {g}", "next-unit", "prev-unit", f"select-unit {unit}",
        f"set lazy {rnd.choice(['on', 'off'])}", f"set skip-clflush {rnd.choice(['on', 'off'])}",
        "flush-queue", f"flush-queue {g}",
        "device-del", "device-add",
        f"toggle {unit} NOPE", f"dma 999 0x0", "frobnicate", f"map {g} 0x1001 4K",
        # iommufd (desktop after `set backend iommufd`, viommu-nested): refused elsewhere
        f"set backend {rnd.choice(['type1', 'iommufd'])}", "hwpt-invalidate 4 0 all",
        f"hwpt-invalidate 4 {iova:#x} 16 leaf", "hwpt-alloc 02:00.0 2 nest-parent", "hwpt-alloc 02:00.0 1",
    ])


def _hidden(m: Machine) -> list:
    """State the JSON does not show but later commands depend on."""
    out = []
    for w in m.worlds.values():
        out.append(list(w.cache._lines))
        out.append((w.alloc._next, sorted(w.alloc._free)))
        d = w.driver
        out.append((sorted(d._did_next.items()), sorted((k, sorted(v)) for k, v in d._did_free.items()),
                    sorted((k, sorted(v)) for k, v in d._did_used.items()), sorted(d.ats)))
    out.append([e.to_json() for e in m.journal.events])
    return out


def _replayed(scenario: str, log: list[str]) -> Machine:
    fresh = Machine.from_scenario(scenario)
    for line in log:
        fresh.execute(line)
    return fresh


# ----------------------------------------------------------------------------- the audit


class _Audited:
    """A command's checkpoint and, taken alongside, one of everything (no undo records
    of its own): finish() checks the first saved whatever the second saw change."""

    def __init__(self, cp, full, line):
        self.cp, self.full, self.line = cp, full, line
        self.saved = {id(obj): skip for obj, skip, _, _ in cp.objs}

    def finish(self) -> None:
        self.cp.finish()
        self.full.finish()
        for obj, _, changed, names in self.full.objs:
            skip = self.saved.get(id(obj))
            assert skip is not None, f"{self.line!r} changed a {type(obj).__name__} its checkpoint did not save"
            assert not set(changed) & set(skip), \
                f"{self.line!r} changed {type(obj).__name__}.{set(changed) & set(skip)}, not saved"

    def rollback(self) -> None:
        self.cp.rollback()


def _everything(m: Machine) -> list:
    """Every machine-sized leaf: groups, domains, attachments, device infos."""
    out: list = list(m.groups.values())
    for w in m.worlds.values():
        d = w.driver
        out += list(d.domains.values()) + list(d._attached.values()) + list(getattr(d, "_sm_dev", {}).values())
    return out


@pytest.fixture
def audited(monkeypatch):
    real = Machine._checkpoint

    def checkpoint(self, line):
        cp = real(self, line)
        full = M._Checkpoint(self, _everything(self), sizable=True, actors=None, records=False)
        return _Audited(cp, full, line)

    monkeypatch.setattr(Machine, "_checkpoint", checkpoint)


# ----------------------------------------------------------------------------- the property


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_undo_equals_a_fresh_replay_and_checkpoints_cover_what_changes(scenario, audited):
    rnd = random.Random(f"h10-{scenario}")
    m = Machine.from_scenario(scenario)
    steps = {"server": 70}.get(scenario, 90)
    undos = 0
    for step in range(steps):
        r = rnd.random()
        if r < 0.22 and m.log:
            m.undo()
            undos += 1
        elif r < 0.30 and m.redo_stack:
            m.redo()
        else:
            try:
                m.execute(_commands(m, rnd))
            except CommandError:
                pass
            if rnd.random() > 0.25:
                continue
        fresh = _replayed(scenario, m.log)
        assert dumps(m) == dumps(fresh), f"step {step}: {m.log[-3:]}"
        assert _hidden(m) == _hidden(fresh), f"step {step}: {m.log[-3:]}"
    assert undos > 10 and len(m.log) > 10


def test_the_audit_catches_a_checkpoint_that_leaves_out_what_changes(audited, monkeypatch):
    """The audit can fail: a toggle whose checkpoint no longer saves its unit."""
    m = Machine.from_scenario("desktop")
    monkeypatch.setattr(Machine, "_actors", lambda self, words: [])
    with pytest.raises(AssertionError, match="DmarUnit its checkpoint did not save"):
        m.execute("toggle dmar1 CM")


def test_a_toggle_or_selection_saves_no_driver_and_no_domain():
    m = Machine.from_scenario("server", devices=512)
    for line, most in (("toggle dmar0 CM", 6), ("select-group 300", 1), ("next-unit", 1), ("dma 300 0x0", 12)):
        cp = m._checkpoint(line)
        kinds = [type(o).__name__ for o, *_ in cp.objs]
        cp.finish()
        dma = line.startswith("dma")
        assert len(kinds) <= most, (line, kinds)
        # a DMA: the named group's domain and device info only (its footprint)
        assert kinds.count("DmarDomain") <= dma and kinds.count("SmDeviceInfo") <= dma, (line, kinds)
        assert ("IntelIommuDriver" in kinds) == dma, (line, kinds)
