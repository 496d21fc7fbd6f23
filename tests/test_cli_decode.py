"""`vtdtui decode` and the command-line conventions around it (DESIGN.md, Command line)."""

from __future__ import annotations

import io
import importlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from vtdtui import __version__
from vtdtui.cli import COMMANDS, main
from vtdtui.hw.regs import CAP, ECAP

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "dmesg"


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    # rich reads COLUMNS; a wide table keeps each cell on one line for the asserts.
    monkeypatch.setenv("COLUMNS", "200")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_bad_input(code, out, err, *needles):
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vtdtui: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, err)


# --- good input ------------------------------------------------------------------

def test_table_from_cap_and_ecap(capsys):
    code, out, err = run(capsys, "decode", "--cap", "0xd2008c40660462", "--ecap", "f050da")
    assert (code, err) == (0, "")
    for needle in ["cmdline", "CAP 0xd2008c40660462", "ECAP 0xf050da", "ND", "SAGAW",
                   "MGAW", "FRO", "MAMV", "QI", "SC", "IRO", "cap_mgaw = 39", "ecap_qis = 2"]:
        assert needle in out, needle


def test_json_from_cap_and_ecap(capsys):
    code, out, err = run(capsys, "decode", "--cap", "D2008C40660462", "--ecap", "0XF050DA", "--json")
    assert (code, err) == (0, "")
    (unit,) = json.loads(out)
    assert unit["name"] == "cmdline"
    assert unit["cap"]["raw"] == "0xd2008c40660462"
    assert unit["ecap"]["raw"] == "0xf050da"
    assert set(unit["cap"]["fields"]) == {f.name for f in CAP}
    assert set(unit["ecap"]["fields"]) == {f.name for f in ECAP}
    assert unit["cap"]["fields"]["MGAW"] == 38
    assert unit["cap"]["fields"]["FRO"] == 0x40
    assert unit["ecap"]["fields"]["IRO"] == 0x50
    assert (unit["base"], unit["ver"], unit["line"]) == (None, None, None)


def test_cap_alone(capsys):
    code, out, _ = run(capsys, "decode", "--cap", "80d2008c222f0686", "--json")
    (unit,) = json.loads(out)
    assert code == 0 and unit["ecap"] is None and unit["cap"]["fields"]["CM"] == 1


def test_ecap_alone(capsys):
    code, out, _ = run(capsys, "decode", "--ecap=f00f5a", "--json")
    (unit,) = json.loads(out)
    assert code == 0 and unit["cap"] is None and unit["ecap"]["fields"]["IRO"] == 0xF


def test_json_output_is_deterministic(capsys):
    first = run(capsys, "decode", "--dmesg", str(DATA / "desktop.dmesg"), "--json")
    second = run(capsys, "decode", "--dmesg", str(DATA / "desktop.dmesg"), "--json")
    assert first == second


@pytest.mark.parametrize(
    "name, units",
    [
        ("desktop.dmesg", ["dmar0", "dmar1"]),
        ("old-kernel.dmesg", ["dmar0", "dmar1"]),
        ("qemu-guest.dmesg", ["dmar0"]),
        ("journalctl-mixed-case.log", ["dmar0", "dmar1"]),
        ("nonutf8.dmesg", ["dmar1"]),
    ],
)
def test_dmesg_json(capsys, name, units):
    code, out, err = run(capsys, "decode", "--dmesg", str(DATA / name), "--json")
    assert (code, err) == (0, "")
    assert [u["name"] for u in json.loads(out)] == units


def test_dmesg_table(capsys):
    code, out, err = run(capsys, "decode", "--dmesg", str(DATA / "qemu-guest.dmesg"))
    assert (code, err) == (0, "")
    assert "dmar0" in out and "reg_base_addr 0xfed90000" in out and "line 9" in out
    assert "ESRTPS" in out and "cap_mgaw = 48" in out


def test_dmesg_from_stdin_bytes(capsys, monkeypatch):
    data = (DATA / "nonutf8.dmesg").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, err = run(capsys, "decode", "--dmesg", "-", "--json")
    assert (code, err) == (0, "")
    (unit,) = json.loads(out)
    assert (unit["name"], unit["cap"]["raw"], unit["line"]) == ("dmar1", "0xd2008c40660462", 3)


def test_stdin_without_unit_names_stdin(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"nothing here\n")))
    assert_bad_input(*run(capsys, "decode", "--dmesg", "-"), "<stdin>: no 'DMAR: dmarN")


# --- bad input: one line, exit 2 ----------------------------------------------------

def test_missing_file(capsys, tmp_path):
    path = tmp_path / "no-such.log"
    assert_bad_input(*run(capsys, "decode", "--dmesg", str(path)), str(path), "No such file")


def test_directory_instead_of_file(capsys, tmp_path):
    assert_bad_input(*run(capsys, "decode", "--dmesg", str(tmp_path)), str(tmp_path))


@pytest.mark.parametrize("name", ["bad-empty.dmesg", "bad-no-dmar.dmesg"])
def test_no_dmar_line(capsys, name):
    path = str(DATA / name)
    assert_bad_input(
        *run(capsys, "decode", "--dmesg", path),
        f"vtdtui: error: {path}: no 'DMAR: dmarN: reg_base_addr ... cap ... ecap ...' line found",
    )


def test_malformed_cap_in_file_names_file_and_line(capsys):
    path = str(DATA / "bad-malformed-cap.dmesg")
    assert_bad_input(*run(capsys, "decode", "--dmesg", path, "--json"), f"{path}:3: cap: 'zz12'")


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--cap", "zz12"], ["--cap: 'zz12'", "not a hexadecimal"]),
        (["--cap", "0x"], ["--cap", "not a hexadecimal"]),
        (["--cap", "12 34"], ["--cap", "not a hexadecimal"]),
        (["--cap", "1" + "0" * 16], ["--cap", "wider than 64 bits"]),
        (["--cap", "0x1ffffffffffffffff", "--ecap", "0"], ["--cap", "wider than 64 bits"]),
        (["--cap", "d2008c40660462", "--ecap", "f050dg"], ["--ecap: 'f050dg'", "not a hexadecimal"]),
        (["--ecap", "-1"], ["--ecap", "not a hexadecimal"]),
        (["--cap", "12\n34"], ["--cap", "not a hexadecimal"]),
    ],
)
def test_bad_register_values(capsys, argv, needles):
    assert_bad_input(*run(capsys, "decode", *argv), *needles)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["decode", "--dmesg", "x.log", "--cap", "1"], "--dmesg cannot be combined with --cap/--ecap"),
        (["decode", "--ecap", "1", "--dmesg", "-"], "--dmesg cannot be combined"),
        (["decode"], "give --cap HEX and/or --ecap HEX, or --dmesg FILE|-"),
        (["decode", "--json"], "give --cap"),
        (["decode", "--cap"], "argument --cap: expected one argument"),
        (["decode", "--bogus"], "unrecognized arguments: --bogus"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["--scenario", "desktop", "decode", "--cap", "1"], "--scenario starts the TUI"),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, needle):
    assert_bad_input(*run(capsys, *argv), needle)


# --- the rest of the command line ---------------------------------------------------

def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert (code, out.strip()) == (0, f"vtdtui {__version__}")


def test_help_lists_decode(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "decode" in out


def test_subcommands_are_a_table():
    assert "decode" in COMMANDS
    assert callable(COMMANDS["decode"].run) and callable(COMMANDS["decode"].add_arguments)


def test_tui_with_a_bad_scenario_is_one_line_and_exit_2(capsys, tmp_path):
    missing = tmp_path / "nope.toml"
    code, out, err = run(capsys, "--scenario", str(missing))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("vtdtui: error: ") and "nope.toml" in err


def test_tui_gets_the_scenario(capsys, monkeypatch):
    seen = []
    # The settings (theme, keymap) are read from the real tui.config before the app
    # starts; only the app is replaced.
    config = importlib.import_module("vtdtui.tui.config")
    tui = types.ModuleType("vtdtui.tui")
    app = types.ModuleType("vtdtui.tui.app")
    app.run = lambda scenario, record=None, **generate: seen.append((scenario, record)) or 0
    tui.app, tui.config = app, config
    monkeypatch.setitem(sys.modules, "vtdtui.tui", tui)
    monkeypatch.setitem(sys.modules, "vtdtui.tui.app", app)
    monkeypatch.setitem(sys.modules, "vtdtui.tui.config", config)
    assert main([]) == 0
    assert main(["--scenario", "viommu"]) == 0
    assert main(["--record", "s.keys"]) == 0
    assert seen == [(None, None), ("viommu", None), (None, "s.keys")]


def test_python_dash_m(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    ok = subprocess.run(
        [sys.executable, "-m", "vtdtui", "decode", "--dmesg", "-", "--json"],
        input=(DATA / "old-kernel.dmesg").read_bytes(),
        capture_output=True, cwd=tmp_path, env=env, timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert [u["name"] for u in json.loads(ok.stdout)] == ["dmar0", "dmar1"]

    bad = subprocess.run(
        [sys.executable, "-m", "vtdtui", "decode", "--cap", "zz"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr == "vtdtui: error: --cap: 'zz' is not a hexadecimal register value\n"
