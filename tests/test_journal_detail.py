"""The journal made readable: structured event data (descriptor words, register writes,
entries touched), the whole event in detail, rows with the reason first, wrap, search,
export, and the rule table that README's table and the invariants follow."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from machinekit import one, run

from vtdtui.hw import qi, regs
from vtdtui.hw.entries import RootEntry
from vtdtui.machine.invariants import RULES
from vtdtui.machine.state import to_json
from vtdtui.sw import rules
from vtdtui.sw.journal import Journal
from vtdtui.views.ioptes import PteTree
from vtdtui.views.journal import (
    JournalFilter, JournalView, SearchError, detail_view, event_detail, event_kind, event_text, export_json,
    export_text, row_line, row_lines, search,
)
from vtdtui.views.style import cells, text_of

ROOT = Path(__file__).resolve().parent.parent
SID5 = 0x0200  # desktop group 5: 02:00.0 behind dmar1


def _text(lines) -> str:
    return "\n".join(text_of(line) for line in lines)


def _queue_words(unit, slot: int) -> tuple[int, int]:
    base = unit.iqa & ~0xFFF
    return unit.cpu_read_q(base + slot * 16), unit.cpu_read_q(base + slot * 16 + 8)


# ----------------------------------------------------------------------------- queued invalidation
def test_a_qi_psi_carries_the_words_it_queued_and_the_detail_decodes_them():
    m, _ = run("desktop", "toggle dmar1 CM", "attach 5")
    o = m.execute("map 5 0x100000 64K rw")
    e = one(o, op="iotlb-invalidation", rule="map-np2p", outcome="issued")
    (w,), wait = e.data.descriptors, e.data.wait
    u = m.units["dmar1"]
    # The words on the event are the ones in the queue, at the slots it names.
    assert _queue_words(u, w.slot) == (w.lo, w.hi)
    assert _queue_words(u, wait.slot) == (wait.lo, wait.hi) and wait.slot == (w.slot + 1) % 256
    assert qi.decode(w.lo, w.hi) == qi.IotlbDesc(regs.GRAN_PAGE, 2, 0x100000, 4, False,
                                                 bool(u.capf("DRD")), bool(u.capf("DWD")))
    text = _text(event_detail(m, e, 80))
    assert "iotlb G=3 page (PSI) DID 2 addr 0x100000 AM 4 (64K) IH 0" in text
    assert f"{w.hi:016x}:{w.lo:016x}" in text
    assert "wait SW 1 IF 0 FN 0 status data 0x2" in text
    assert "intel_iommu_iotlb_sync_map()  drivers/iommu/intel/iommu.c" in text
    assert "cache_tag_flush_range_np()  drivers/iommu/intel/cache.c" in text


def test_a_batch_gives_each_event_its_own_descriptor_and_the_shared_wait():
    m, _ = run("desktop", "attach 5", "map 5 0x100000 8K rw")
    drv, u = m.driver_for("dmar1"), m.units["dmar1"]
    drv.ats.add(SID5)
    o = m.execute("unmap 5 0x100000 8K")
    tlb = one(o, op="iotlb-invalidation", outcome="issued")
    dev = one(o, op="device-tlb-invalidation", outcome="issued")
    assert qi.desc_type(tlb.data.descriptors[0].lo) == qi.IOTLB
    assert qi.desc_type(dev.data.descriptors[0].lo) == qi.DEV_TLB
    # One qi_submit_sync: consecutive slots, one wait descriptor after both.
    assert dev.data.descriptors[0].slot == tlb.data.descriptors[0].slot + 1
    assert tlb.data.wait == dev.data.wait and tlb.data.wait.slot == dev.data.descriptors[0].slot + 1
    assert "device-tlb SID 02:00.0 addr 0x100000 S 1" in _text(event_detail(m, dev, 100))


def test_a_context_flush_with_qi_carries_its_descriptor():
    m, _ = run("desktop", "toggle dmar1 CM")
    o = m.execute("attach 5")
    e = one(o, op="context-cache-invalidation", outcome="issued")
    (w,) = e.data.descriptors
    assert qi.decode(w.lo, w.hi) == qi.CcDesc(regs.GRAN_DEVICE, 0, SID5, 0)
    assert "context-cache G=3 device DID 0 SID 02:00.0 FM 0" in _text(event_detail(m, e, 80))


# ----------------------------------------------------------------------------- register-based
def test_register_based_invalidation_carries_ccmd_and_iotlb_values():
    m, _ = run("desktop", "toggle dmar1 CM")
    u = m.units["dmar1"]
    u.mmio_write(regs.GCMD_REG, u.gcmd & ~regs.GCMD_QIE)  # queued invalidation off
    o = m.execute("attach 5")
    cc = one(o, op="context-cache-invalidation", outcome="issued")
    (ccmd,) = cc.data.registers
    assert not cc.data.descriptors
    want = regs.CCMD_ICC | (regs.GRAN_DEVICE << regs.CCMD_CIRG_SHIFT) | (SID5 << 16)
    assert (ccmd.name, ccmd.offset, ccmd.value) == ("CCMD", regs.CCMD_REG, want)
    assert ccmd.readback >> 63 == 0  # ICC clears when the invalidation is done
    tlb = one(o, op="iotlb-invalidation", outcome="issued")
    iva, cmd = tlb.data.registers
    assert (iva.name, iva.offset, cmd.name, cmd.offset) == ("IVA", u.iotlb_reg, "IOTLB", u.iotlb_reg + 8)
    assert cmd.value == regs.IOTLB_IVT | (regs.GRAN_DOMAIN << regs.IOTLB_IIRG_SHIFT) | (2 << 32)
    text = _text(event_detail(m, cc, 80)) + "\n" + _text(event_detail(m, tlb, 80))
    assert f"CCMD      @0x28 ← {want:#018x}" in text
    assert "ICC 1 CIRG 3 device FM 0 SID 02:00.0 DID 0; read back CAIG" in text
    assert "IVT 1 IIRG 2 domain (DSI) DID 2" in text


def test_a_primitive_called_alone_changes_no_earlier_event():
    m, _ = run("desktop", "toggle dmar1 CM", "attach 5")
    before = list(m.journal.events)
    drv, u = m.driver_for("dmar1"), m.units["dmar1"]
    drv._flush_iotlb(u, regs.GRAN_DOMAIN, 2)
    drv._flush_context(u, regs.GRAN_GLOBAL)
    assert all(a is b for a, b in zip(before, m.journal.events, strict=True))


def test_undo_keeps_the_words_and_redo_gives_the_same():
    m, _ = run("desktop", "toggle dmar1 CM", "attach 5")
    o = m.execute("map 5 0x100000 64K rw")
    was = [e.to_json() for e in o.events]
    m.undo()
    assert [e.to_json() for e in m.redo().events] == was


# ----------------------------------------------------------------------------- entries touched
def test_a_clflush_names_the_context_entry_and_jumps_to_it():
    m, _ = run("desktop")
    o = m.execute("attach 5")
    e = one(o, op="clflush", detail_has="context entry 02:00.0")
    (t,) = e.entries
    u = m.units["dmar1"]
    ctp = {bus: re_.ctp for bus, _, re_ in u.present_entries(u.rta_latched & ~0xFFF, RootEntry.decode)}[2]
    assert (t.kind, t.addr, t.size, t.bus, t.sid) == ("context", ctp + 0 * 16, 16, 2, SID5)
    d = detail_view(m, e, 80)
    (jump,) = d.targets
    assert (jump.n, jump.kind, jump.unit, jump.bus, jump.sid, jump.addr) == (1, "context", "dmar1", 2, SID5, ctp)
    assert f"[1]       context entry 02:00.0 @ {ctp:#x}+0x10" in text_of(d.lines[jump.row])


def test_a_clflush_of_leaves_jumps_to_the_page_table_node():
    m, _ = run("desktop", "attach 5")
    o = m.execute("map 5 0x100000 64K rw")
    e = one(o, op="clflush", detail_has="leaf PTE")
    (t,) = e.entries
    assert (t.kind, t.level, t.size) == ("pte", 1, 16 * 8)
    (jump,) = detail_view(m, e, 80).targets
    d = m.driver_for("dmar1").domains[jump.domain]
    assert jump.found and jump.key == (1, 0x100000)
    # The key is one the page-table view shows once the path is open.
    tree = PteTree()
    u = m.units["dmar1"]
    tree.expand_first_path(d.pgd, d.levels, u.cpu_read_q)
    keys = [r.key for r in tree.rows(d.pgd, d.levels, u.cpu_read_page, u.cpu_read_page)]
    assert jump.key in keys


def test_root_entry_and_new_tables_are_told_apart():
    m, _ = run("desktop")
    o = m.execute("attach 5")
    kinds = {e.entries[0].kind for e in o.events if e.op == "clflush"}
    assert {"context", "page-table"} <= kinds
    boot = [e.entries[0] for e in m.journal.events if e.op == "clflush"]
    root = next(t for t in boot if t.kind == "root")
    assert root.bus is not None and root.size == 16


def test_an_entry_freed_since_says_so():
    m, _ = run("desktop", "attach 5")
    e = one(m.execute("map 5 0x100000 64K rw"), op="clflush", detail_has="leaf PTE")
    assert detail_view(m, e, 80).targets[0].found
    m.execute("detach 5")  # the last group: the domain and its tables go
    d = detail_view(m, e, 120)
    (jump,) = d.targets
    assert not jump.found and jump.key is None
    assert "no longer in any table" in text_of(d.lines[jump.row])


# ----------------------------------------------------------------------------- state JSON
def test_state_json_keeps_its_keys_and_adds_the_data():
    m, _ = run("desktop", "toggle dmar1 CM", "attach 5", "map 5 0x100000 64K rw")
    entries = to_json(m)["journal"]
    contract = {"seq", "unit", "actor", "op", "scope", "outcome", "rule", "reason"}
    assert all(contract | {"descriptors", "wait", "registers", "entries"} <= set(x) for x in entries)
    psi = [x for x in entries if x["rule"] == "map-np2p" and x["outcome"] == "issued"][-1]
    assert re.fullmatch(r"0x[0-9a-f]+", psi["descriptors"][0]["lo"]) and psi["wait"]["slot"] is not None
    ctx = [x for x in entries if x["entries"] and x["entries"][0]["kind"] == "context"][-1]
    assert ctx["entries"][0]["sid"] == SID5 and ctx["entries"][0]["address"].startswith("0x")


# ----------------------------------------------------------------------------- rows and wrap
def test_a_row_puts_the_reason_first_and_says_clflush_once():
    j = Journal()
    e = j.issued("dmar1", "driver", "clflush", "clflush", "ECAP.C=0: page walks read memory", detail="ctx 0x10+0x10")
    text = text_of(row_line(e))
    assert text.startswith("    1 issued  ECAP.C=0: page walks read memory · clflush · dmar1 driver")
    assert "clflush clflush" not in text and text.count("clflush") == 1
    psi = j.skipped("dmar1", "driver", "iotlb-invalidation", "map-np2p", "CM=0", "page")
    assert " · iotlb-invalidation[page] map-np2p · " in text_of(row_line(psi))


def test_hardware_records_policy_changes_and_decisions_look_different():
    j = Journal()
    dec = j.issued("dmar1", "driver", "clflush", "clflush", "r")
    hw = j.issued("dmar1", "hw", "fault", "read", "a fault")
    pol = j.issued("dmar1", "hw", "policy-change", "option", "reuse = prefer-reuse")
    assert [event_kind(e) for e in (dec, hw, pol)] == ["decision", "hardware", "policy"]
    marks = [row_line(e)[1] for e in (dec, hw, pol)]
    assert [t for t, _ in marks] == ["issued  ", "hw      ", "policy  "]
    assert len({tok for _, tok in marks}) == 3


def test_row_text_from_outside_is_made_printable():
    j = Journal()
    e = j.issued("dmar0", "hw", "fault", "read", "evil \x1b[31mred\x1b[0m\nline", detail="\r")
    assert "\x1b" not in text_of(row_line(e)) and "\\x1b" in text_of(row_line(e))
    assert all(ch.isprintable() for ch in event_text(e))


def test_wrap_at_80_columns_loses_nothing():
    m, _ = run("desktop", "toggle dmar1 CM", "attach 5", "map 5 0x100000 2M rw", "unmap 5 0x100000 2M",
               "toggle dmar1 C", "set skip-clflush on", "attach 4", "dma 4 0x5000")
    for e in m.journal.events:
        whole = text_of(row_line(e))
        lines = row_lines(e, 80)
        assert all(cells(text_of(line)) <= 80 for line in lines)
        # Only the spaces a line broke at may go.
        assert "".join("".join(text_of(line).split()) for line in lines) == "".join(whole.split())
        for line in event_detail(m, e, 80):
            assert cells(text_of(line)) <= 80
        reason = " ".join(e.reason.split())
        assert reason in " ".join(_text(event_detail(m, e, 80)).replace("\n", " ").split())


def test_a_long_word_is_cut_not_lost():
    j = Journal()
    e = j.issued("dmar0", "driver", "clflush", "clflush", "x" * 200)
    lines = row_lines(e, 40)
    assert all(cells(text_of(line)) <= 40 for line in lines)
    assert "".join(text_of(line) for line in lines).count("x") == 200


# ----------------------------------------------------------------------------- search and export
def _view(m, text: str = "") -> JournalView:
    v = JournalView(JournalFilter.parse(text))
    v.update(m.journal)
    return v


def test_search_matches_the_whole_event_and_returns_rows_of_the_view():
    m, _ = run("desktop", "toggle dmar1 CM", "attach 5", "map 5 0x100000 64K rw")
    v = _view(m, "unit=dmar1 op=iotlb")
    events = m.journal.events
    rows = search(events, v.indices, "cache_tag_flush_range_np")  # a function of the rule, not in the row
    assert rows and all(events[v.indices[r]].rule == "map-np2p" for r in rows)
    assert search(events, v.indices, "AM 4") == search(events, v.indices, "am 4")
    assert search(events, v.indices, r"DID \d+ 0x100000\+0x10000", regex=True) == rows
    assert search(events, v.indices, "no such words") == [] and search(events, v.indices, "") == []
    # Rows are positions in the filtered view, not journal indexes.
    assert max(rows) < len(v.indices)


def test_a_bad_regex_is_one_clear_error():
    with pytest.raises(SearchError, match=r"bad regular expression 'DID \(': missing \), unterminated subpattern "
                                          r"at position 4"):
        search([], [], "DID (", regex=True)
    assert issubclass(SearchError, ValueError)


def test_export_honours_the_filter_text_and_json():
    m, _ = run("desktop", "toggle dmar1 CM", "attach 5", "map 5 0x100000 64K rw")
    v = _view(m, "outcome=issued op=iotlb")
    events = m.journal.events
    text = export_text(events, v.indices)
    assert text.count("\n") == len(v.indices) > 1
    for line, i in zip(text.splitlines(), v.indices, strict=True):
        e = events[i]
        assert line.startswith(f"{e.seq} {e.unit} {e.actor} issued iotlb-invalidation") and e.reason in line
    doc = json.loads(export_json(events, v.indices, v.filter))
    assert doc["schema"] == "vtdtui.journal/1" and doc["filter"] == "outcome=issued op=iotlb"
    assert [x["seq"] for x in doc["journal"]] == [events[i].seq for i in v.indices]
    assert doc["journal"] == [x for x in to_json(m)["journal"] if x["seq"] in {events[i].seq for i in v.indices}]
    # Queued once QI is on; the boot-time flush before it went through the registers.
    assert all(x["descriptors"] or x["registers"] for x in doc["journal"])
    assert any(x["descriptors"] for x in doc["journal"]) and any(x["registers"] for x in doc["journal"])


# ----------------------------------------------------------------------------- the rule table
def _readme_rules() -> dict[str, tuple[str, tuple[str, ...]]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## The actors and their rules", 1)[1].split("\n## ", 1)[0]
    out = {}
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        rule, actor, _decision, follows = (c.strip() for c in row.strip("|").split(" | "))
        out[rule.strip("`")] = (actor, tuple(re.findall(r"`([A-Za-z_0-9]+)`", follows)))
    return out


def test_readme_rule_table_is_the_rule_table():
    assert _readme_rules() == {r.id: (r.actor, r.function_names) for r in rules.TABLE}


def test_invariants_accept_exactly_the_rule_table():
    assert RULES == rules.RULE_IDS == {r.id for r in rules.TABLE}
    assert all(r.functions and all(src.endswith((".c", ".h")) for _, src in r.functions) for r in rules.TABLE)


def test_every_decision_the_scenarios_make_has_a_rule_with_functions():
    m, _ = run("viommu", "attach 3", "map 3 0x100000 64K rw", "unmap 3 0x100000 64K", "detach 3", "toggle dmar0 C")
    for e in m.journal.events:
        if e.is_decision:
            assert rules.rule(e.rule) is not None, e
    hw = next(e for e in m.journal.events if not e.is_decision)
    assert "hardware record" in _text(event_detail(m, hw, 80))
