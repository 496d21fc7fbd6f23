"""`vtdtui translate BDF IOVA [r|w] [--scenario S] [--do CMD]... [--pasid N] [--unit U] [--json]`
(DESIGN.md, "The kernel's own text, in and out").

The answers are checked against the machine's own view (`vtdtui dump --json`): the
context entry the walk shows is the one the state lists, a fault's line is the one a
real `dma` of the same address records."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vtdtui import cli
from vtdtui.machine import Machine

CONTRACT_KEYS = {"bdf", "iova", "result", "hpa", "r", "w", "level", "steps", "fault"}
SETUP = ["--do", "attach 5", "--do", "map 5 0x100000 64K rw", "--do", "map 5 0x200000 4K r"]


def _run(capsys, *argv):
    rc = cli.main(["translate", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _json(capsys, *argv) -> dict:
    rc, out, err = _run(capsys, *argv, "--json")
    assert (rc, err) == (0, ""), err
    return json.loads(out)


def _state(capsys, *argv) -> dict:
    rc = cli.main(["dump", *argv, "--json", "-"])
    out, err = capsys.readouterr()
    assert (rc, err) == (0, ""), err
    return json.loads(out)


def test_a_mapped_iova_translates_with_the_contract_keys(capsys):
    j = _json(capsys, "02:00.0", "0x100abc", "w", *SETUP)
    assert CONTRACT_KEYS <= set(j)
    ram_base = Machine.from_scenario("desktop").scenario.ram_base  # map: GPA = IOVA + ram_base
    assert j["bdf"] == "02:00.0" and j["iova"] == "0x100abc" and j["result"] == "translated"
    assert j["hpa"] == f"{0x100abc + ram_base:#x}" and (j["r"], j["w"], j["level"]) == (True, True, 1)
    assert j["fault"] is None and j["unit"] == "dmar1" and j["mode"] == "legacy"
    root, ctx, *ptes = j["steps"]
    assert (root["what"], root["level"], ctx["what"], ctx["level"]) == ("root entry", None, "context entry", None)
    assert [s["level"] for s in ptes] == [4, 3, 2, 1]
    for s in j["steps"]:
        assert s["address"].startswith("0x") and s["entry"].startswith("0x")
    # The context entry is the one the state lists for the device.
    st = _state(capsys, *SETUP)
    (ce,) = [c for u in st["units"] for c in u["context_entries"] if c["bdf"] == "02:00.0"]
    assert int(ctx["words"][0], 16) & ~0xFFF == int(ce["slptptr"], 16)
    assert (int(ctx["words"][1], 16) >> 8) & 0xFFFF == ce["did"]


def test_a_fault_carries_the_line_the_machine_records_for_the_same_dma(capsys):
    j = _json(capsys, "02:00.0", "0x200010", "w", *SETUP)  # mapped read-only
    st = _state(capsys, *SETUP, "--do", "dma 5 0x200010 w")
    (f,) = [f for u in st["units"] for f in u["faults"]]
    assert j["result"] == "fault" and j["hpa"] is None and j["level"] is None
    assert j["fault"]["reason"] == f["reason"] == 0x05
    assert j["fault"]["message"] == f["message"]
    assert j["steps"][-1]["level"] == 1  # the walk stops at the leaf that lacks W


def test_scalable_mode_walk_and_a_request_with_pasid(capsys):
    j = _json(capsys, "10:00.0", "0x5000", "--scenario", "server", "--do", "map 0 0x4000 8K r")
    assert j["mode"] == "scalable" and j["result"] == "translated" and j["pgtt"] == 1
    assert [s["what"] for s in j["steps"][:4]] == ["root entry", "context entry", "PASID dir entry", "PASID entry"]
    assert len(j["steps"][1]["words"]) == 4 and len(j["steps"][3]["words"]) == 8
    assert all(s["stage"] == "first" for s in j["steps"][4:])
    p = _json(capsys, "10:00.0", "0x5000", "--scenario", "server", "--pasid", "7")
    assert p["result"] == "fault" and p["pasid"] == 7
    assert "[DMA Read PASID 0x7] Request device [10:00.0]" in p["fault"]["message"]


def test_the_text_view_shows_each_step_and_what_linux_prints(capsys):
    rc, out, err = _run(capsys, "02:00.0", "0x900000", *SETUP)
    assert (rc, err) == (0, "")
    assert "root entry" in out and "context entry" in out and "L4 (second stage)" in out
    assert "fault 0x06" in out and "Linux prints" in out
    flat = " ".join(out.split())
    assert ("DMAR: [DMA Read NO_PASID] Request device [02:00.0] fault addr 0x900000 [fault reason 0x06] "
            "PTE Read access is not set") in flat


@pytest.mark.parametrize("argv, says", [
    (["09:00.0", "0x1000"], "no device 09:00.0 in scenario desktop"),
    (["02:00.0", "0x10000000000000000"], "IOVA '0x10000000000000000' is wider than 64 bits"),
    (["02:00.0", "lots"], "IOVA: 'lots' is not a number"),
    (["02:00.0", "0x1000", "x"], "access: 'x' must be r or w"),
    (["02:00.0", "0x1000", "--do", "attach 5", "--do", "attach 99"], "--do #2 'attach 99'"),
    (["2:00", "0x1000"], "BDF '2:00' is not a PCI address"),
    (["02:00.0", "0x1000", "--pasid", "0x100000"], "--pasid '0x100000': a PASID is 20 bits"),
    (["02:00.0", "0x1000", "--unit", "dmar9"], "--unit 'dmar9': no such unit"),
    (["02:00.0", "0x1000", "--unit", "dmar0"], "no device 02:00.0 behind dmar0"),
    (["02:00.0", "0x1000", "--scenario", "no-such-scenario"], "no-such-scenario"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, says):
    rc, out, err = _run(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("vtdtui: error: "), err
    assert says in err, err


def test_translate_never_loads_textual():
    script = ("import sys; from vtdtui import cli; rc = cli.main(['translate', '00:02.0', '0x1000', '--json']); "
              "assert rc == 0; print(sorted(m for m in sys.modules if m.split('.')[0] == 'textual'))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_import_of_a_debugfs_dump_walks_as_the_scenario_does(capsys, tmp_path):
    """dump --debugfs → translate --import (legacy mode): the same steps and answers as
    on the scenario itself for what the files hold; an entry they do not hold is marked."""
    out = tmp_path / "dfs"
    assert cli.main(["dump", *SETUP, "--debugfs", str(out)]) == 0
    capsys.readouterr()
    for iova, access in (("0x100040", "w"), ("0x10f123", "r"), ("0x200008", "w"), ("0x9000000", "r")):
        want = _json(capsys, "02:00.0", iova, access, *SETUP)
        rc = cli.main(["translate", "02:00.0", iova, access, "--import", str(out), "--json"])
        got = json.loads(capsys.readouterr()[0])
        assert rc == 0
        for key in ("result", "hpa", "r", "w", "level", "fault", "mode"):
            assert got[key] == want[key], (iova, key)
        assert [(s["address"], s["entry"]) for s in got["steps"]] == [(s["address"], s["entry"]) for s in want["steps"]]
        if want["result"] == "translated":
            assert not any(s.get("unknown") for s in got["steps"]), iova
    assert got["result"] == "fault" and got["steps"][-1].get("unknown") is True  # 0x9000000 is mapped nowhere


def test_import_in_scalable_mode_marks_the_pasid_directory_entry_debugfs_does_not_print(capsys, tmp_path):
    # dmar_translation_struct prints the context and PASID entries, not the PASID
    # directory entry (importer.py): without a fault dump the unit's walk stops there,
    # says so, and goes on from the table the device's domain_translation_struct gives.
    server = ["--scenario", "server", "--do", "map 0 0x4000 8K r"]
    out = tmp_path / "dfs"
    assert cli.main(["dump", *server, "--debugfs", str(out)]) == 0
    capsys.readouterr()
    want = _json(capsys, "10:00.0", "0x4010", *server)
    rc = cli.main(["translate", "10:00.0", "0x4010", "--import", str(out), "--json"])
    got = json.loads(capsys.readouterr()[0])
    assert rc == 0 and got["mode"] == "scalable"
    # The context entry's bits 255:128 are not printed either: marked unknown too.
    assert [s["what"] for s in got["steps"] if s.get("unknown")] == ["context entry", "PASID dir entry"]
    stop = next(i for i, s in enumerate(got["steps"]) if s["what"] == "PASID dir entry")
    given = got["steps"][stop + 1]
    assert given["given"] is True and given["what"] == "from domain_translation_struct"
    assert "PASID entry not known" in given["says"]
    for key in ("result", "hpa", "r", "w", "level", "did", "pgtt"):
        assert got[key] == want[key], key
    # The page-table steps are the scenario's, entry for entry.
    paging = [(s["address"], s["entry"]) for s in want["steps"] if s["level"] is not None]
    assert [(s["address"], s["entry"]) for s in got["steps"][stop + 2:]] == paging


def test_import_without_dmar_translation_struct_walks_from_domain_translation_struct(capsys, tmp_path):
    """No root or context entry in the input, two units: the device's unit is asked
    for (--unit), then the walk starts at the table its domain_translation_struct gives."""
    out = tmp_path / "dfs"
    assert cli.main(["dump", *SETUP, "--debugfs", str(out)]) == 0
    capsys.readouterr()
    (out / "dmar_translation_struct").unlink()
    rc, _, err = _run(capsys, "02:00.0", "0x100040", "w", "--import", str(out))
    assert rc == 2 and "pick one with --unit (dmar0, dmar1)" in err and err.count("\n") == 1
    want = _json(capsys, "02:00.0", "0x100040", "w", *SETUP)
    got = _json(capsys, "02:00.0", "0x100040", "w", "--import", str(out), "--unit", "dmar1")
    assert (got["result"], got["hpa"], got["level"]) == (want["result"], want["hpa"], want["level"]) == (
        "translated", got["hpa"], 1)
    rc, text, _ = _run(capsys, "02:00.0", "0x100040", "w", "--import", str(out), "--unit", "dmar1")
    assert "from domain_translation_struct" in text and "context entry not known" in " ".join(text.split())


def test_the_fault_line_is_one_line_at_80_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    rc, out, _ = _run(capsys, "02:00.0", "0x900000", *SETUP)
    want = _json(capsys, "02:00.0", "0x900000", *SETUP)["fault"]["message"]
    assert rc == 0 and len(want) > 80
    lines = out.splitlines()
    assert lines[lines.index(next(x for x in lines if "Linux prints" in x)) + 1] == want
    assert all(len(line) <= 80 for line in lines if line != want)


def test_import_and_scenario_are_one_source_or_the_other(capsys, tmp_path):
    rc, out, err = _run(capsys, "02:00.0", "0x1000", "--scenario", "desktop", "--import", str(tmp_path))
    assert rc == 2 and out == "" and "--scenario and --import" in err and err.count("\n") == 1
