"""Helpers for the end-to-end tests of the policy layer (machine commands → journal + state JSON).

Everything goes through the public interface: Machine.from_scenario, machine.execute,
undo/redo and vtdtui.machine.state.to_json.  The helpers only filter and look up.
"""

from __future__ import annotations

import json

from vtdtui.machine import Machine, Outcome
from vtdtui.machine.state import to_json


# The built-in server unit, for tests that write their own scenario file around it.
SERVER_UNIT = """
[[unit]]
name = "dmar0"
base = "0xfbffc000"
cap = "0x19ed008c40780c66"
ecap = "0x3ef9ecb0d7ef"
haw = 46
"""


def run(scenario: str | None, *commands: str) -> tuple[Machine, list[Outcome]]:
    """A fresh machine with `commands` applied; returns it and the outcomes."""
    m = Machine.from_scenario(scenario)
    return m, [m.execute(c) for c in commands]


def events(source, **want) -> list:
    """Events of an Outcome (or a list of events / outcomes) matching every filter.

    Filters: actor, op, outcome, rule, unit, scope (exact), and reason_has / detail_has
    (substrings).
    """
    if isinstance(source, Outcome):
        evs = list(source.events)
    else:
        evs = []
        for item in source:
            evs.extend(item.events if isinstance(item, Outcome) else [item])
    reason_has = want.pop("reason_has", None)
    detail_has = want.pop("detail_has", None)
    out = []
    for e in evs:
        if any(getattr(e, k) != v for k, v in want.items()):
            continue
        if reason_has is not None and reason_has not in e.reason:
            continue
        if detail_has is not None and detail_has not in e.detail:
            continue
        out.append(e)
    return out


def one(source, **want):
    """The single event matching the filters; fails with the candidates otherwise."""
    found = events(source, **want)
    assert len(found) == 1, f"expected one event matching {want}, got {len(found)}:\n" + "\n".join(
        e.line() for e in found
    )
    return found[0]


def lines(source) -> str:
    """The events as journal lines, for assertion messages."""
    return "\n".join(e.line() for e in events(source))


def state(m: Machine) -> dict:
    return to_json(m)


def dumps(m: Machine) -> str:
    """The state JSON as canonical text (for equality checks)."""
    return json.dumps(to_json(m), sort_keys=True)


def unit_state(st: dict, name: str) -> dict:
    return next(u for u in st["units"] if u["name"] == name)


def group_state(st: dict, gid: int) -> dict:
    return next(g for g in st["groups"] if g["id"] == gid)


def domain_state(st: dict, did: int) -> dict:
    return next(d for d in st["domains"] if d["id"] == did)


def context_entry(st: dict, unit: str, bdf: str) -> dict | None:
    return next((c for c in unit_state(st, unit)["context_entries"] if c["bdf"] == bdf), None)
