"""Issue 16, flat in state size: an attach or detach keeps, for undo, what it changed,
not copies of the driver's machine-sized collections (domains, attachments, device
infos, DIDs in use).  Counted in entries held, never timed."""

from __future__ import annotations

import gc

from vtdtui.machine import Machine
from vtdtui.machine import machine as M


def _held(rec) -> int:
    """Entries a checkpoint's record of one container holds (its kids' too)."""
    if isinstance(rec, M._Logged):
        return len(rec.log)
    if isinstance(rec, M._Saved):
        return len(rec.items) + sum(_held(k) for k in rec.kids)
    return 0


def _kept(m: Machine) -> tuple[int, int]:
    """(entries held by the last checkpoint's containers, the largest of them)."""
    sizes = [_held(v) for _, _, changed, _ in m._undo_stack[-1].objs for v in changed.values()]
    return sum(sizes), max(sizes, default=0)


def _session(m: Machine) -> list[tuple[int, int]]:
    g = sorted(m.groups)[3]
    out = []
    for line in (f"detach {g}", f"attach {g}", f"detach {g}", f"attach {g}"):
        m.execute(line)
        out.append(_kept(m))
    return out


def test_an_attach_or_detach_keeps_what_it_changed_not_the_driver():
    small = Machine.from_scenario("server", devices=64)
    big = Machine.from_scenario("server", devices=1024)
    kept_small, kept_big = _session(small), _session(big)
    assert kept_small == kept_big  # the same change keeps the same entries at any size
    assert all(largest <= 16 for _, largest in kept_big), kept_big  # no copy of a 1,024-entry dict


def test_the_logged_collections_come_back_after_undo():
    m = Machine.from_scenario("server", devices=64)
    drv = m.driver_for(m.groups[3].unit)
    before = (dict(drv.domains), dict(drv._attached), dict(drv._sm_dev),
              {k: set(v) for k, v in drv._did_used.items()})
    m.execute("detach 3")
    m.execute("attach 3")
    m.undo()
    m.undo()
    assert isinstance(drv.domains, M._LoggedDict) and isinstance(drv._attached, M._LoggedDict)
    after = (dict(drv.domains), dict(drv._attached), dict(drv._sm_dev),
             {k: set(v) for k, v in drv._did_used.items()})
    assert after == before
    assert all(x.log is None for x in (drv.domains, drv._attached, drv._sm_dev))  # no log left open


def test_undo_records_leave_nothing_machine_sized_for_the_collector():
    """The objects a detach + attach leave behind for undo, as the cyclic collector
    sees them: a few hundred small ones, none as large as the machine."""
    m = Machine.from_scenario("server", devices=1024)
    g = sorted(m.groups)[3]
    m.execute(f"detach {g}")
    m.execute(f"attach {g}")  # the first sizable commands put the logged kinds in place
    gc.collect()
    gc.freeze()
    try:
        m.execute(f"detach {g}")
        m.execute(f"attach {g}")
        young = gc.get_objects()
        largest = max((len(o) for o in young if isinstance(o, (dict, set, list)) and type(o).__name__ != "OrderedDict"),
                      default=0)
    finally:
        gc.unfreeze()
    assert largest < 1024, largest


# ----------------------------------------------------------------------------- the logged kinds

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

DICT_OPS = st.lists(st.tuples(st.sampled_from(["set", "del", "pop", "popitem", "setdefault", "update", "clear"]),
                              st.integers(0, 20), st.integers(0, 3)), max_size=30)
SET_OPS = st.lists(st.tuples(st.sampled_from(["add", "discard", "remove", "pop", "update", "difference_update",
                                              "intersection_update", "symmetric_difference_update", "clear"]),
                             st.integers(0, 20)), max_size=30)


def _dict_op(d, op, k, v):
    try:
        if op == "set":
            d[k] = v
        elif op == "del":
            del d[k]
        elif op == "pop":
            d.pop(k)
        elif op == "popitem":
            d.popitem()
        elif op == "setdefault":
            d.setdefault(k, v)
        elif op == "update":
            d.update({k: v, k + 1: v})
        else:
            d.clear()
    except KeyError:
        pass


def _set_op(s, op, x):
    try:
        if op in ("add", "discard", "remove"):
            getattr(s, op)(x)
        elif op == "pop":
            s.pop()
        elif op == "clear":
            s.clear()
        else:
            getattr(s, op)({x, x + 1, x + 5})
    except KeyError:
        pass


@settings(max_examples=150, deadline=None)
@given(start=st.dictionaries(st.integers(0, 20), st.integers(0, 3)), ops=DICT_OPS)
def test_a_logged_dict_behaves_as_a_dict_and_rolls_back(start, ops):
    plain, logged = dict(start), M._LoggedDict(start)
    rec = M._Logged(logged)
    for op, k, v in ops:
        _dict_op(plain, op, k, v)
        _dict_op(logged, op, k, v)
        assert list(logged.items()) == list(plain.items())  # the same order too
    rec.end()
    assert len(rec.log) <= len(ops) * 2 + len(start)  # the keys it changed, once each
    rec.restore()
    assert logged == start and logged.log is None


@settings(max_examples=150, deadline=None)
@given(start=st.sets(st.integers(0, 20)), ops=SET_OPS)
def test_a_logged_set_behaves_as_a_set_and_rolls_back(start, ops):
    plain, logged = set(start), M._LoggedSet(start)
    rec = M._Logged(logged)
    for op, x in ops:
        _set_op(plain, op, x)
        _set_op(logged, op, x)
        assert list(logged) == list(plain)  # the same table: the same order, the same pop()
    rec.end()
    rec.restore()
    assert logged == start
