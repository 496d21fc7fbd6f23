"""`vtdtui decode --faults FILE|- [--json]` (DESIGN.md, "The kernel's own text, in and out")."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vtdtui.cli import main

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "kernel"
CONTRACT_KEYS = {"line", "kind", "access", "bdf", "pasid", "addr", "index", "reason", "reason_text", "explain",
                 "dump"}
DUMP_KEYS = {"root", "context_hi", "context_lo", "ptes"}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_bad_input(code, out, err, *needles):
    assert code == 2, (code, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vtdtui: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)


def faults_json(capsys, path):
    code, out, err = run(capsys, "decode", "--faults", str(path), "--json")
    assert (code, err) == (0, ""), err
    return json.loads(out)


# --- the JSON contract ------------------------------------------------------------------

def test_json_shape(capsys):
    doc = faults_json(capsys, DATA / "era-new.dmesg")
    assert {"faults", "unparsed"} <= set(doc)
    assert doc["unparsed"] == []
    for f in doc["faults"]:
        assert CONTRACT_KEYS <= set(f)
        assert isinstance(f["line"], int) and f["line"] >= 1
        assert f["kind"] in ("dma", "intr-remap")
        assert f["access"] in ("read", "write", None)
        assert isinstance(f["reason"], int) and isinstance(f["reason_text"], str) and f["explain"]
        if f["kind"] == "dma":
            assert f["addr"].startswith("0x") and f["index"] is None and f["access"] is not None
        else:
            assert f["addr"] is None and isinstance(f["index"], int) and f["access"] is None
        if f["dump"] is not None:
            assert DUMP_KEYS <= set(f["dump"])
            for pte in f["dump"]["ptes"]:
                assert set(pte) >= {"level", "value"} and pte["value"].startswith("0x")
    first, sm, intr, ctx = doc["faults"]
    assert (first["bdf"], first["access"], first["pasid"], first["addr"], first["reason"]) == (
        "00:02.0", "read", None, "0x7f001000", 6)
    assert first["dump"]["root"] == "0x000000010a3c5001"
    assert first["dump"]["ptes"][0] == {"level": 3, "value": "0x000000010c001003"}
    assert (sm["bdf"], sm["access"], sm["pasid"], sm["reason"]) == ("3a:00.0", "write", 5, 0x85)
    assert sm["reason_text"] == "SM: No write permission for Write/AtomicOp request"
    assert (intr["kind"], intr["index"], intr["reason"], intr["dump"]) == ("intr-remap", 0x15, 0x22, None)
    assert ctx["dump"]["context_lo"] == "0x0000000000000000"
    assert [u["name"] for u in doc["units"]] == ["dmar0", "dmar1"]
    assert [(g["device"], g["group"]) for g in doc["groups"]][:1] == [("0000:00:02.0", 0)]


def test_old_logs_give_the_true_code(capsys):
    doc = faults_json(capsys, DATA / "era-513.log")
    # "fault reason 89" printed with %02d is 0x59; "37" is 0x25
    assert [(f["reason"], f["reason_text"]) for f in doc["faults"]] == [
        (0x06, "PTE Read access is not set"),
        (0x59, "SM: Present bit in PASID Table Entry is clear"),
        (0x25, "Blocked a compatibility format interrupt request")]
    assert [f["pasid"] for f in doc["faults"]] == [None, 5, None]


def test_unparsed_lists_line_numbers_and_the_rest_still_decodes(capsys):
    doc = faults_json(capsys, DATA / "unparsed.dmesg")
    assert [f["line"] for f in doc["faults"]] == [2]
    assert doc["unparsed"] == [1, 3, 4, 5, 6, 7, 8, 9, 12, 13]


def test_json_is_deterministic(capsys):
    assert faults_json(capsys, DATA / "dump-old.dmesg") == faults_json(capsys, DATA / "dump-old.dmesg")


# --- the table view ---------------------------------------------------------------------

def test_table_groups_per_device_and_fits_80_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run(capsys, "decode", "--faults", str(DATA / "era-new.dmesg"))
    assert (code, err) == (0, "")
    assert max(len(line) for line in out.splitlines()) <= 80
    for needle in ["4 faults on 4 devices", "00:02.0: 1 fault, iommu group 0", "3a:00.0: 1 fault",
                   "f0:1f.0: 1 fault", "index 0x15", "use-after-unmap", "dump (line 14): dmar0",
                   "page table not present at level 0", "P RO U XD -> page 0x120000000"]:
        assert needle in out, needle
    assert out.index("00:02.0:") < out.index("00:14.0:") < out.index("3a:00.0:")


def test_table_says_when_the_code_was_printed_in_decimal(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    code, out, _ = run(capsys, "decode", "--faults", str(DATA / "era-513.log"))
    assert code == 0
    assert '"fault reason 89" is decimal, code 0x59' in out


def test_table_escapes_what_it_echoes(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    log = tmp_path / "esc.log"
    log.write_text("DMAR: [DMA Read NO_PASID] Request device [00:02.0] fault addr 0x1000 [fault reason 0x06] x\n"
                   "DMAR: Dump dm\x1b]0;pwned\x07ar0 table entries for IOVA 0x1000\n"
                   "DMAR: pte level: 4, pte value: 0x0000000000000000\n")
    code, out, _ = run(capsys, "decode", "--faults", str(log))
    assert code == 0 and "\x1b" not in out and "\x07" not in out


def test_stdin(capsys, monkeypatch):
    data = (DATA / "two-line.log").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, err = run(capsys, "decode", "--faults", "-", "--json")
    assert (code, err) == (0, "")
    assert [f["reason"] for f in json.loads(out)["faults"]] == [0x06, 0x22]


# --- bad input: one line, exit 2 ----------------------------------------------------------

def test_no_fault_is_exit_2_naming_the_file(capsys):
    path = str(DATA / "no-faults.dmesg")
    assert_bad_input(*run(capsys, "decode", "--faults", path, "--json"),
                     f"{path}: no DMAR fault report found (3 lines read)")


def test_no_fault_but_unparsed_lines_are_named(capsys, tmp_path):
    log = tmp_path / "broken.log"
    log.write_text("ok\nDMAR: [DMA Read NO_PASID] Request device [00:02.0] fault addr 0x1000 [fault reas\n")
    assert_bad_input(*run(capsys, "decode", "--faults", str(log)), "1 IOMMU line not understood: 2")


@pytest.mark.parametrize("content", [b"", b"\n\n", bytes(range(256)) * 50, b"\xff\xfe\x00DMAR: \x00" * 1000])
def test_empty_and_binary_files(capsys, tmp_path, content):
    log = tmp_path / "x.bin"
    log.write_bytes(content)
    assert_bad_input(*run(capsys, "decode", "--faults", str(log)), str(log), "no DMAR fault report found")


def test_missing_file_and_directory(capsys, tmp_path):
    assert_bad_input(*run(capsys, "decode", "--faults", str(tmp_path / "nope")), "nope", "No such file")
    assert_bad_input(*run(capsys, "decode", "--faults", str(tmp_path)), str(tmp_path))


def test_huge_file_is_refused_at_the_limit(capsys, tmp_path):
    big = tmp_path / "big.log"
    with open(big, "wb") as fh:
        fh.truncate(1 << 30)  # sparse: 1 GiB that costs nothing on disk
    assert_bad_input(*run(capsys, "decode", "--faults", str(big)), "big.log: larger than 32 MiB (MAX_LOG_BYTES)")


def test_closed_stdin(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", None)
    assert_bad_input(*run(capsys, "decode", "--faults", "-"), "--faults -: standard input is closed")


@pytest.mark.parametrize("argv, needle", [
    (["--faults", "x.log", "--dmesg", "y.log"], "--faults cannot be combined with --dmesg, --cap or --ecap"),
    (["--faults", "x.log", "--cap", "1"], "--faults cannot be combined"),
    (["--ecap", "1", "--faults", "-"], "--faults cannot be combined"),
    (["--faults"], "argument --faults: expected one argument"),
    ([], "or --faults FILE|-"),
])
def test_usage_errors(capsys, argv, needle):
    assert_bad_input(*run(capsys, "decode", *argv), needle)


def _process(args, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="80")
    return subprocess.run([sys.executable, "-m", "vtdtui", *args], capture_output=True, env=env, timeout=60, **kw)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_ends_in_bounded_time():
    p = _process(["decode", "--faults", "/dev/zero"])
    assert p.returncode == 2 and p.stdout == b""
    assert p.stderr.decode() == "vtdtui: error: /dev/zero: larger than 32 MiB (MAX_LOG_BYTES); stopped reading there\n"


def test_endless_stdin_ends_in_bounded_time():
    p = subprocess.Popen([sys.executable, "-m", "vtdtui", "decode", "--faults", "-"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    chunk = b"[ 1.0] DMAR: [DMA Read NO_PASID] Request device [00:02.0] fault addr 0x1000 [fault reason 0x06] x\n" * 1000
    try:
        while p.poll() is None:
            try:
                p.stdin.write(chunk)
            except BrokenPipeError:
                break
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 2
    assert b"<stdin>: larger than 32 MiB (MAX_LOG_BYTES)" in err and err.count(b"\n") == 1


def test_python_dash_m_reads_a_piped_log():
    p = _process(["decode", "--faults", "-", "--json"], input=(DATA / "era-54.dmesg").read_bytes())
    assert p.returncode == 0, p.stderr
    assert [f["reason"] for f in json.loads(p.stdout)["faults"]] == [0x05, 0x0C, 0x22]


def test_readme_documents_decode_faults():
    text = (ROOT / "README.md").read_text()
    assert "vtdtui decode --faults" in text
