"""The emulator's scalable-mode fault lines, read back by the kernel-text reader.

The hardware records a fault, the modelled dmar_fault() prints it (with the
CONFIG_DMAR_DEBUG dump), and `decode --faults`' reader must find in that text the
same device, access, reason and — entry by entry — the tables the unit walked.
"""

from __future__ import annotations

from importlib import resources

from vtdtui.hw import faults as fr
from vtdtui.hw.entries import level_index
from vtdtui.hw.sm_entries import FL_ADDR_MASK, FL_P, FL_RW, context_slot
from vtdtui.kernel.dmesg import log_to_json, read_kernel_log
from vtdtui.machine import Machine


def _notebook_with_dmar_debug(tmp_path) -> Machine:
    """The built-in notebook, its kernel built with CONFIG_DMAR_DEBUG (the dump)."""
    src = resources.files("vtdtui.scenarios").joinpath("notebook.toml").read_text(encoding="utf-8")
    assert "[kernel]" in src
    p = tmp_path / "notebook-debug.toml"
    p.write_text(src.replace("[kernel]", "[kernel]\ndmar_debug = true", 1), encoding="utf-8")
    return Machine.from_scenario(str(p))


def test_a_first_stage_write_fault_reads_back_entry_for_entry(tmp_path):
    m = _notebook_with_dmar_debug(tmp_path)
    for c in ("attach 17", "map 17 0x100000 8K r", "dma 17 0x100000 w"):
        m.execute(c)
    u = m.units["dmar1"]
    f = u.faults[-1]
    assert f.reason == fr.SM_WRITE
    log = "\n".join(f"[  {40 + i}.125000] {line}" for i, line in enumerate(f.log)) + "\n"
    doc = log_to_json(read_kernel_log(log, "emulated"))
    assert doc["unparsed"] == []
    [got] = doc["faults"]
    assert (got["bdf"], got["access"], got["pasid"], got["addr"], got["reason"]) == \
        ("00:1f.0", "write", None, "0x100000", 0x85)
    assert got["reason_text"] == "SM: No write permission for Write/AtomicOp request"
    dump = got["dump"]
    assert dump["mode"] == "scalable"
    # What the reader found is what the unit holds, as the CPU wrote it.
    sid = u.faults[-1].source_id
    pr = u.read_pasid_entry(sid, read=u.cpu_read_q)
    assert pr.ok
    assert int(dump["context_lo"], 16) == pr.context.words[0]
    assert int(dump["context_hi"], 16) == pr.context.words[1]
    assert int(dump["pasid_dir"], 16) == pr.dir_entry.raw
    assert [int(v, 16) for v in dump["pasid_entry"]] == list(pr.entry.val)
    # The four first-stage entries on the way to IOVA 0x100000, read from memory.
    want, table = [], pr.entry.fsptptr
    for level in (4, 3, 2, 1):
        value = u.cpu_read_q(table + level_index(0x100000, level) * 8)
        want.append((level, value))
        table = value & FL_ADDR_MASK
    assert [(p["level"], int(p["value"], 16)) for p in dump["ptes"]] == want
    leaf = want[-1][1]
    assert leaf & FL_P and not leaf & FL_RW  # present, read-only: why the write faulted


def test_a_request_without_pasid_on_an_unset_device_says_which_structure_is_missing(tmp_path):
    m = _notebook_with_dmar_debug(tmp_path)
    m.execute("dma 17 0x2000 r")  # probed (SM context entry present) but never attached
    f = m.units["dmar1"].faults[-1]
    assert f.reason == fr.PASID_ENTRY_P or f.reason == fr.PASID_DIR_ENTRY_P
    doc = log_to_json(read_kernel_log("\n".join(f.log) + "\n", "emulated"))
    [got] = doc["faults"]
    assert got["reason"] == f.reason and got["access"] == "read" and got["bdf"] == "00:1f.0"
    assert got["explain"]
    # 00:1f.0 is devfn 0xf8: its context entry sits in the upper table (UCTP).
    assert context_slot(f.source_id & 0xFF)[0] is True
    assert got["dump"]["mode"] == "scalable"
