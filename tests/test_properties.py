"""Property-based tests: random sessions on every built-in scenario keep the invariants.

A hypothesis RuleBasedStateMachine drives Machine.execute / undo / redo only, with
capability toggles, attach / detach, map / unmap of random sizes in 4K / 2M / 1G
aligned pages, DMA, policy and what-if switches, and bad input.  After every step
vtdtui.machine.invariants.check() must hold, every successful command must have
left the journal decisions it owes (check_command, against the hardware's own
invalidation counters), a refused command must leave the state JSON byte-identical,
and undoing N steps must give back the state JSON recorded N steps before.

The first tests below show that the invariants do catch what they claim to: each
breaks one thing behind the machine's back and expects the matching complaint.
Profiles (tests/conftest.py): HYPOTHESIS_PROFILE=ci (default) or nightly.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from vtdtui.machine import OPTIONS, CommandError, Machine
from vtdtui.machine import invariants as inv
from vtdtui.machine.state import to_json


def to_json_text(m, memo: dict | None = None) -> str:
    """The state JSON, compact: json.dumps with indent runs the pure-Python encoder,
    which made the per-step comparison most of a session's time.  With `memo` (one
    per session) each journal event is serialised once: events are immutable (an
    amend replaces the event; Event.__deepcopy__ shares them), so an event's text
    never changes, and a session of 40 steps re-serialised its whole journal on every
    step (half of the server session's time).  The text holds the same facts: the
    state JSON without the journal, then every event's JSON in order."""
    if memo is None:
        return json.dumps(to_json(m), separators=(",", ":"))
    journal = m.journal
    m.journal = _NO_EVENTS  # to_json() reads the journal only for its "journal" key
    try:
        state = json.dumps(to_json(m), separators=(",", ":"))
    finally:
        m.journal = journal
    texts = []
    for e in journal.events:
        hit = memo.get(id(e))
        if hit is None or hit[0] is not e:
            hit = memo[id(e)] = (e, json.dumps(e.to_json(), separators=(",", ":")))
        texts.append(hit[1])
    return state + "\n" + "\n".join(texts)


class _NoEvents:
    def to_json(self) -> list:
        return []


_NO_EVENTS = _NoEvents()

SCENARIOS = ("desktop", "server", "viommu")
K4, M2, G1 = 1 << 12, 1 << 21, 1 << 30
TOGGLED = ("CM", "C", "SC", "RWBF", "PSI")


def run(scenario: str, *commands: str) -> Machine:
    m = Machine.from_scenario(scenario)
    for c in commands:
        before = inv.hw_counters(m)
        o = m.execute(c)
        assert inv.check_command(m, c, o.events, before) == [], c
    return m


def complaints(m: Machine, *words: str) -> list[str]:
    return [p for p in inv.check(m) if all(w in p for w in words)]


# ----------------------------------------------------------------------------- the invariants catch things


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_built_in_scenarios_hold_at_boot(scenario):
    m = Machine.from_scenario(scenario)
    assert inv.check(m) == []
    assert inv.what_ifs(m) == [] and inv.stale_entries(m) == []


def test_a_context_entry_with_a_foreign_did_is_caught():
    m = run("desktop", "attach 5")
    u = m.units["dmar1"]
    ctp = u.cpu_read_q(u.rta_latched + 2 * 16) & ~0xFFF  # bus 02
    hi = u.cpu_read_q(ctp + 8)
    u.cache.cpu_write_q(ctp + 8, (hi & ~(0xFFFF << 8)) | (77 << 8))  # 02:00.0 now says DID 77
    assert complaints(m, "dmar1", "context entry 02:00.0 DID 77", "no allocated dmar_domain")


def test_a_group_in_two_domains_is_caught():
    m = run("server", "detach 1")
    d0 = m.groups[0].domain
    d0.devices[m.groups[1].devices[0][0]] = "dmar0"  # the driver's books put group 1's device in domain 1
    assert complaints(m, "group 1 (dmar0) is detached, yet domain 1 holds its devices")
    # server boots in scalable mode: the device's PASID entry, not its context entry, says it
    assert complaints(m, "dmar0: domain 1 lists 10:01.0 as attached, but its PASID entry (PASID 0) is not present")
    d0.devices[m.groups[2].devices[0][0]] = "dmar0"
    assert complaints(m, "group 2 (dmar0) is attached to domains 1, 3")


def test_a_group_in_two_domains_is_caught_in_legacy_mode():
    m = run("desktop", "attach 5", "attach 4", "detach 4")
    d5 = m.domain_of(m.groups[5])
    d5.devices[m.groups[4].devices[0][0]] = "dmar1"
    assert complaints(m, "dmar1: domain", "lists 01:00.0 as attached, but its context entry is not present")


def test_a_wrong_noncoherent_count_is_caught():
    m = run("desktop", "attach 0")
    assert m.kvm.noncoherent_dma_count == 1
    m.kvm.noncoherent_dma_count = 2
    assert complaints(m, "noncoherent_dma_count is 2")


def test_kvm_coherency_is_what_the_last_update_saw():
    m = run("desktop", "attach 5", "attach 0")
    m.kvm.kvm_vfio_noncoherent = False  # as if kvm_vfio_update_coherency() had missed group 0
    m.kvm.noncoherent_dma_count = 0
    assert complaints(m, "group(s) 0 were behind a unit without ECAP.SC")


def test_a_domain_missing_a_vfio_dma_is_caught():
    m = run("desktop", "attach 5", "map 5 0x200000 8K rw")
    d = m.domain_of(m.groups[5])
    m.driver_for("dmar1").unmap_range(d, 0x200000, 0x2000, lazy=False)  # behind VFIO's back
    assert complaints(m, "domain", "vfio_dma 0x200000+0x2000 is not mapped")


def test_a_domain_s_page_count_must_match_its_page_table():
    m = run("server", "map 2 0x0 2M", "map 2 0x40000000 12K")
    m.groups[2].domain.mapped_pages += 1
    assert complaints(m, "dmar0: domain 3 counts 516 mapped page(s), its page table maps 515")


def test_mainline_domains_with_a_missed_reuse_are_caught():
    m = run("desktop", "attach 5", "set reuse prefer-reuse", "attach 6", "set reuse mainline", "attach 4")
    assert len(m.vfio.domains) == 1
    # Pretend the container had kept a second domain for group 4 although domain 1 takes it.
    vd = m.vfio.domains[0]
    vd.groups.remove(4)
    drv = m.driver_for("dmar1")
    for sid, _ in m.groups[4].devices:
        drv.detach_device(vd.domain, m.units["dmar1"], sid)
    from vtdtui.sw.vfio import VfioDomain

    new = drv.domain_alloc("vfio", m.units["dmar1"])
    for sid, _ in m.groups[4].devices:
        drv.attach_device(new, m.units["dmar1"], sid)
    new.force_snooping = True
    m.vfio.domains.append(VfioDomain(new, True, [4]))
    assert complaints(m, "group 4 sits in domain", "earlier domain 1 accepts it")


def test_a_cached_entry_inconsistent_with_its_pte_is_caught():
    m = run("desktop", "attach 5", "map 5 0x200000 4K rw", "dma 5 0x200000 r")
    u = m.units["dmar1"]
    (e,) = list(u.iotlb)
    import dataclasses

    u.iotlb._entries = {k: dataclasses.replace(v, hpa=v.hpa + K4) for k, v in u.iotlb._entries.items()}
    assert complaints(m, "dmar1: IOTLB entry DID", "not what the L1 PTE")


def test_staleness_without_a_what_if_is_caught_and_with_one_is_not():
    # The driver's own sequence: nothing stale.  A PTE rewritten behind its back: caught.
    m = run("desktop", "attach 5", "map 5 0x200000 4K rw", "dma 5 0x200000 r")
    assert inv.stale_entries(m) == []
    u = m.units["dmar1"]
    (e,) = list(u.iotlb)
    u.cache.cpu_write_q(e.pte_addr, 0)
    assert [s.kind for s in inv.stale_entries(m)] == ["iotlb"]
    assert complaints(m, "dmar1: IOTLB entry DID", "is stale: memory now says not present", "no what-if")
    # The same staleness from the what-if switch that skips the invalidation: allowed.
    w = run("desktop", "toggle dmar1 CM", "attach 5", "dma 5 0x200000 r", "set skip-invalidation on",
            "map 5 0x200000 4K rw")
    assert [s.why for s in inv.stale_entries(w)] == ["now present in memory; still cached as not present"]
    assert inv.check(w) == []
    assert [x.text for x in inv.what_ifs(w)] == ["command 4 `set skip-invalidation on`",
                                                   "the driver's skip-clflush / skip-invalidation is on"]


def test_lazy_unmap_staleness_lives_only_on_the_flush_queue():
    m = run("server", "map 3 0x100000 64K rw", "dma 3 0x100000 r", "unmap 3 0x100000 64K")
    assert [s.why for s in inv.stale_entries(m)] == ["memory now says not present"]
    assert inv.check(m) == []  # queued: the kernel's lazy mode, flushed by the flush-queue timer
    d = m.groups[3].domain
    d.flush_queue.clear()  # forgotten instead of flushed
    assert complaints(m, "dmar0: IOTLB entry DID", "is stale")
    m.undo()
    m.redo()
    m.execute("flush-queue 3")
    assert inv.stale_entries(m) == [] and inv.check(m) == []


def test_missing_journal_decisions_are_caught():
    m = run("desktop", "toggle dmar1 CM")
    o = m.execute("attach 5")
    assert inv.check_command(m, "attach 5", o.events) == []
    dropped = [e for e in o.events if e.rule != "ctx-np2p"]
    found = inv.check_command(m, "attach 5", dropped)
    assert any("no ctx-np2p context-cache decision for 02:00.0 on dmar1" in p for p in found), found
    before = inv.hw_counters(m)
    o = m.execute("map 5 0x200000 4K")
    assert inv.check_command(m, "map 5 0x200000 4K", o.events, before) == []
    # An issued invalidation the hardware never saw, and the other way round.
    m.units["dmar1"].counters["iotlb-page"] += 1
    found = inv.check_command(m, "map 5 0x200000 4K", o.events, before)
    assert found == ["`map 5 0x200000 4K`: dmar1 carried out 2 iotlb-invalidation(s), the journal says 1 issued"]


# ----------------------------------------------------------------------------- random sessions


@st.composite
def ranges(draw):
    """(IOVA, size): IOVAs aligned to a 4K, 2M or 1G page; sizes whole pages of it,
    plus a few 4K pages, or any number of 4K pages up to some 2.3 MiB."""
    page = draw(st.sampled_from([K4, M2, G1]))
    index = draw(st.integers(0, {K4: 1023, M2: 7, G1: 3}[page]))
    if draw(st.booleans()):
        size = draw(st.integers(1, 3)) * page + draw(st.integers(0, 2)) * K4
    else:
        size = draw(st.integers(1, 600)) * K4
    return index * page, size


BAD = [
    "frobnicate 5", "", "   ", "attach", "attach 1 2", "map 0 0x1000", "toggle dmar0", "map 0 0x100800 4K",
    "map 0 0x200000 0", "map 0 0x200000 6000", "map 0 0x200000 4K x", "map 0 0xfffffffffffff000 4K",
    "unmap 0 0x0 0", "attach 99", "detach 99", "select-group x", "select-group -1", "dma 99 0x0", "dma 0 zz",
    "dma 0 0x0 x", "dma 0 0x10000000000000000", "select-unit dmar9", "toggle dmar9 CM", "toggle dmar0 MGAW",
    "toggle dmar0 NOPE", "set bogus on", "set lazy maybe", "set reuse sometimes", "flush-queue 77", "attach '5",
    "undo", "map 0 4K 4K 4K 4K",
]


class Session(RuleBasedStateMachine):
    """One machine; `states[i]` is the state JSON after the first i commands of its log.
    Subclassed once per scenario (below), so that the test runner spreads them."""

    SCENARIO = SCENARIOS[0]

    @initialize()
    def boot(self):
        self.m = Machine.from_scenario(self.SCENARIO)
        self.memo: dict = {}  # id(event) -> (event, its JSON text): see to_json_text()
        self.states = [self.state()]
        self.undone: list[str] = []  # state JSONs the redo stack leads back to
        self.mapped: list[tuple[int, int, int]] = []  # (group, IOVA, size) some map command took

    # ------------------------------------------------------------ helpers
    def group(self, data, attached: bool | None = None) -> int:
        """One of the first groups; mostly an attached (or detached) one when asked."""
        groups = sorted(self.m.groups)[:7]
        fit = [g for g in groups if (self.m.domain_of(self.m.groups[g]) is not None) == attached]
        if fit and data.draw(st.integers(0, 4), label="prefer") < 4:
            groups = fit
        return data.draw(st.sampled_from(groups), label="group")

    def target(self, data, drawn: tuple[int, int]) -> tuple[int, int, int]:
        """(group, IOVA, size): a range some map command took earlier in the session
        (whole, or its first page) in that group, or `drawn` in an attached group."""
        if self.mapped and data.draw(st.integers(0, 2), label="reuse a mapped range") < 2:
            gid, iova, size = data.draw(st.sampled_from(self.mapped), label="mapped range")
            return (gid, iova, size) if data.draw(st.booleans(), label="whole") else (gid, iova, K4)
        return (self.group(data, attached=True), *drawn)

    def state(self) -> str:
        return to_json_text(self.m, self.memo)

    def execute(self, line: str, *, must_fail: bool = False) -> bool:
        m = self.m
        before_json, before_log, redo = self.states[-1], list(m.log), list(m.redo_stack)
        counters = inv.hw_counters(m)
        try:
            o = m.execute(line)
        except CommandError as exc:
            note(f"refused: {line!r}: {exc}")
            assert self.state() == before_json, f"refused {line!r} changed the state"
            assert m.log == before_log and m.redo_stack == redo
            return False
        assert not must_fail, f"{line!r} was accepted"
        note(f"ran: {line!r}: {o.message}")
        problems = inv.check_command(m, line, o.events, counters)
        assert not problems, "\n".join(problems)
        self.states.append(self.state())
        self.undone.clear()
        assert len(self.states) == len(m.log) + 1
        return True

    # ------------------------------------------------------------ rules
    # CM (set), PSI and RWBF the driver follows at its next decision; C and SC it
    # cannot (they count as what-ifs for the staleness invariant), so they come up less.
    @rule(data=st.data(), field=st.sampled_from(TOGGLED + ("CM", "PSI", "RWBF")))
    def toggle(self, data, field):
        unit = data.draw(st.sampled_from(sorted(self.m.units)), label="unit")
        self.execute(f"toggle {unit} {field}")

    @rule(data=st.data())
    def attach(self, data):
        self.execute(f"attach {self.group(data, attached=False)}")

    @rule(data=st.data())
    def detach(self, data):
        self.execute(f"detach {self.group(data, attached=True)}")

    @rule(data=st.data(), where=ranges(), perms=st.sampled_from(["", " r", " w", " rw"]))
    def map(self, data, where, perms):
        gid, (iova, size) = self.group(data, attached=True), where
        if self.execute(f"map {gid} {iova:#x} {size:#x}{perms}"):
            self.mapped.append((gid, iova, size))

    @rule(data=st.data(), where=ranges(), write=st.booleans())
    def map_and_dma(self, data, where, write):
        """A mapping and at once a DMA into it, so that the IOTLB has something to hold."""
        gid, (iova, size) = self.group(data, attached=True), where
        if self.execute(f"map {gid} {iova:#x} {size:#x}"):
            self.mapped.append((gid, iova, size))
            offset = data.draw(st.integers(0, size - 1), label="offset")
            self.execute(f"dma {gid} {iova + offset:#x} {'w' if write else 'r'}")

    @rule(data=st.data(), where=ranges())
    def unmap(self, data, where):
        gid, iova, size = self.target(data, where)
        self.execute(f"unmap {gid} {iova:#x} {size:#x}")

    @rule(data=st.data(), where=ranges(), offset=st.integers(0, 0x2FFF), write=st.booleans())
    def dma(self, data, where, offset, write):
        gid, iova, _ = self.target(data, where)
        self.execute(f"dma {gid} {iova + offset:#x} {'w' if write else 'r'}")

    @rule(option=st.sampled_from(sorted(OPTIONS) + sorted(set(OPTIONS) - set(inv.WHAT_IF_OPTIONS))), data=st.data())
    def set_option(self, option, data):
        value = data.draw(st.sampled_from(OPTIONS[option]), label="value")
        self.execute(f"set {option} {value}")

    @rule(data=st.data(), everything=st.booleans())
    def flush_queue(self, data, everything):
        self.execute("flush-queue" if everything else f"flush-queue {self.group(data)}")

    @rule(data=st.data())
    def select(self, data):
        self.execute(data.draw(st.sampled_from(["next-unit", "prev-unit", f"select-group {self.group(data)}"])))

    @rule(line=st.sampled_from(BAD))
    def bad(self, line):
        self.execute(line, must_fail=True)

    @precondition(lambda self: self.m.log)
    @rule(n=st.integers(1, 4))
    def undo(self, n):
        for _ in range(min(n, len(self.m.log))):
            self.undone.append(self.states.pop())
            self.m.undo()
            assert self.state() == self.states[-1], "undo did not give back the earlier state"
        assert len(self.states) == len(self.m.log) + 1

    @precondition(lambda self: self.m.redo_stack)
    @rule(n=st.integers(1, 4))
    def redo(self, n):
        for _ in range(min(n, len(self.m.redo_stack))):
            line = self.m.redo_stack[-1]
            counters = inv.hw_counters(self.m)
            o = self.m.redo()
            problems = inv.check_command(self.m, line, o.events, counters)
            assert not problems, "\n".join(problems)
            self.states.append(self.undone.pop())
            assert self.state() == self.states[-1], f"redo of {line!r} went elsewhere"

    # ------------------------------------------------------------ after every step
    @invariant()
    def invariants_hold(self):
        inv.assert_ok(self.m)


def _session_on(scenario: str, weight: float = 1.0):
    """The session machine on one scenario, its share of the profile's examples (times
    `weight`: a scenario whose steps cost more may take fewer in the CI profile)."""
    machine = type(f"Session_{scenario}", (Session,), {"SCENARIO": scenario})
    share = max(1, round(-(-settings().max_examples // len(SCENARIOS)) * weight))
    return settings(settings(), max_examples=share)(machine).TestCase


TestSessionDesktop = _session_on("desktop")
TestSessionViommu = _session_on("viommu")
# server runs scalable mode (64 devices' PASID tables in every state JSON compared):
# half the examples in CI; tests/test_walk_differential.py, test_perf_undo.py and
# test_incremental.py drive its scalable-mode paths too.
TestSessionServer = _session_on("server", 0.5)


def test_the_staleness_invariant_sees_every_scenario_s_caches():
    """Not vacuous: the sessions' DMAs fill the caches that the invariant then checks."""
    for scenario in SCENARIOS:
        m = Machine.from_scenario(scenario)
        g = sorted(m.groups)[3]
        for c in ([] if scenario == "server" else [f"attach {g}"]) + [f"map {g} 0x200000 2M rw", f"dma {g} 0x200000 r"]:
            m.execute(c)
        inv.assert_ok(m)
        ((u, e),) = [(u, e) for u in m.units.values() for e in u.iotlb]
        assert e.size == M2
        u.cache.cpu_write_q(e.pte_addr, e.pte ^ M2)  # the 2M leaf now points elsewhere
        assert complaints(m, f"{u.name}: IOTLB entry DID {e.did} 0x200000+0x200000 is stale: memory now maps"), scenario


def test_kvm_retests_every_group_at_each_update():
    """kvm_vfio_update_coherency() asks every file it holds again (found by the sessions:
    the model used to keep each group's answer from the time it was added)."""
    m = run("desktop", "attach 5", "toggle dmar1 SC", "attach 0")
    assert m.kvm.noncoherent_dma_count == 1
    o = m.execute("detach 0")  # group 5 is behind dmar1, which has no SC any more
    assert m.kvm.noncoherent_dma_count == 1 and m.kvm.files == {5: False}
    assert [e.outcome for e in o.events if e.rule == "kvm-coherency"] == ["skipped"]
    m = run("desktop", "attach 0", "toggle dmar0 SC", "attach 5")  # now every unit has SC
    assert m.kvm.noncoherent_dma_count == 0 and m.kvm.files == {0: True, 5: True}
    assert inv.check(m) == []


def test_an_invalidation_drains_the_write_buffer_of_an_rwbf_unit():
    """CCMD_REG.ICC / IOTLB_REG.IVT: RWBF=1 hardware flushes its write buffer before it
    invalidates (found by the sessions: the DMA below used to translate through the
    posted, old leaf and refill the IOTLB with a mapping the tables no longer had)."""
    m = run("desktop", "toggle dmar1 RWBF", "attach 5", "map 5 0x200000 4K", "dma 5 0x200000 r",
            "unmap 5 0x200000 4K")
    o = m.execute("dma 5 0x200000 r")
    assert not o.translation.ok and o.translation.fault.reason == 0x06
    assert inv.stale_entries(m) == [] and inv.check(m) == []


def test_a_write_only_translation_is_not_stale():
    """DmarUnit.iotlb_stale() walks with an access the entry allows (found by the
    sessions: a read walk of a write-only page stopped at the permission check, and the
    caches pane and state JSON called a good entry stale)."""
    m = run("desktop", "attach 5", "map 5 0x200000 4K w", "dma 5 0x200000 w")
    ((_, e),) = [(u, e) for u in m.units.values() for e in u.iotlb]
    assert (e.r, e.w) == (False, True)
    assert inv.stale_entries(m) == [] and inv.check(m) == []
    m.units["dmar1"].cache.cpu_write_q(e.pte_addr, e.pte & ~0b10 | 0b01)  # now read-only, behind the driver
    assert [s.why for s in inv.stale_entries(m)] == ["memory now faults a write of 0x200000: PTE Write access is not set"]
