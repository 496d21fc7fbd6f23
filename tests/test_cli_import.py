"""`vtdtui import ROOT`, `vtdtui --scenario live` and `dump --scenario live` (DESIGN.md,
"The kernel's own text, in and out"; README "Your own machine")."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from test_kernel_sysfs import CAP_FILE, DESKTOP_DEVICES, DMAR0, DMAR1, FakeSysfs, desktop
from vtdtui import cli
from vtdtui.cli import main
from vtdtui.machine.scenario import parse

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vtdtui: error: "), err
    return lines[0]


def test_summary_table(tmp_path, capsys):
    desktop(tmp_path)
    code, out, err = run(capsys, "import", tmp_path)
    assert code == 0 and err == ""
    assert "dmar0" in out and "dmar1" in out and hex(DMAR0["cap"]) in out
    gpu_row = next(line for line in out.splitlines() if "00:02.0" in line)
    assert re.search(r"│\s*0\s*│\s*DMA-FQ\s*│\s*dmar0\s*│\s*no\s*│", gpu_row), gpu_row
    assert "Alder Lake-P GT2" in gpu_row
    nic_row = next(line for line in out.splitlines() if "02:00.0" in line)
    assert re.search(r"│\s*dmar1\s*│\s*yes\s*│", nic_row), nic_row


def test_toml_to_stdout_and_file_agree_and_parse(tmp_path, capsys):
    desktop(tmp_path / "root")
    code, out, _ = run(capsys, "import", tmp_path / "root", "--toml", "-")
    assert code == 0
    sc = parse(out.encode(), "<stdout>")
    assert [(u.name, u.cap, u.ecap) for u in sc.units] == [("dmar0", DMAR0["cap"], DMAR0["ecap"]),
                                                          ("dmar1", DMAR1["cap"], DMAR1["ecap"])]
    assert sorted(d.bdf for g in sc.groups for d in g.devices) == sorted(n[5:] for n, *_ in DESKTOP_DEVICES)
    code, _, _ = run(capsys, "import", tmp_path / "root", "--toml", tmp_path / "s.toml", "--json", tmp_path / "s.json")
    assert code == 0 and (tmp_path / "s.toml").read_text() == out
    doc = json.loads((tmp_path / "s.json").read_text())
    assert [u["name"] for u in doc["units"]] == ["dmar0", "dmar1"] and doc["skipped"] == []


def test_json_to_stdout(tmp_path, capsys):
    desktop(tmp_path)
    code, out, _ = run(capsys, "import", tmp_path, "--json", "-")
    doc = json.loads(out)
    assert code == 0 and doc["schema"] == "vtdtui.sysfs/1"
    assert {d["bdf"]: d["group"] for d in doc["devices"]} == {n[5:]: g for n, _, g, *_ in DESKTOP_DEVICES}


@pytest.mark.parametrize("argv, expect", [
    (["--toml", "-", "--json", "-"], "would both write to standard output"),
])
def test_usage_errors(tmp_path, capsys, argv, expect):
    desktop(tmp_path)
    code, _, err = run(capsys, "import", tmp_path, *argv)
    assert code == 2 and expect in one_error_line(err)


def test_not_a_sysfs_root_and_nothing_found(tmp_path, capsys):
    code, _, err = run(capsys, "import", tmp_path)
    assert code == 2 and "no sys/class/iommu here: not a sysfs root" in one_error_line(err)
    code, _, err = run(capsys, "import", tmp_path / "missing")
    assert code == 2 and "not a folder" in one_error_line(err)
    FakeSysfs(tmp_path)
    code, _, err = run(capsys, "import", tmp_path)
    assert code == 2 and "holds no Intel VT-d unit" in one_error_line(err)


def test_dev_zero_cap_is_unknown_and_toml_refused(tmp_path, capsys):
    fs = FakeSysfs(tmp_path)
    fs.unit("dmar0", **DMAR0)
    fs.pci("0000:00:02.0", unit="dmar0", group=0, cls=0x030000, vendor=0x8086, device=0x46A6)
    os.remove(tmp_path / CAP_FILE)
    os.symlink("/dev/zero", tmp_path / CAP_FILE)
    code, out, err = run(capsys, "import", tmp_path)
    assert code == 0 and "absolute link leads out of the tree" in out
    code, _, err = run(capsys, "import", tmp_path, "--toml", "-")
    assert code == 2 and "no unit has a known address, cap and ecap" in one_error_line(err)


def test_dump_scenario_live_root(tmp_path, capsys):
    desktop(tmp_path)
    code, out, err = run(capsys, "dump", "--scenario", f"live:{tmp_path}", "--do", "attach 0", "--json", "-")
    assert code == 0, err
    state = json.loads(out)
    assert state["scenario"] == "live"
    assert [u["name"] for u in state["units"]] == ["dmar0", "dmar1"]
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("vtdtui-live-*/live.toml"))  # removed


@pytest.fixture
def no_iommu_here(tmp_path, monkeypatch):
    """`live` reads tmp_path instead of / (this machine may or may not have an IOMMU)."""
    real = cli._live_root
    monkeypatch.setattr(cli, "_live_root", lambda s: str(tmp_path) if s == "live" else real(s))
    return tmp_path


def test_live_without_iommu_one_line(no_iommu_here, capsys):
    for argv in (["--scenario", "live"], ["dump", "--scenario", "live", "--json", "-"]):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == ""
        assert one_error_line(err) == ("vtdtui: error: live: /sys/class/iommu not found: this machine exposes no "
                                       "Intel IOMMU (is intel_iommu=on?)")
    FakeSysfs(no_iommu_here)  # the folder is there, empty (this sandbox)
    code, _, err = run(capsys, "dump", "--scenario", "live", "--json", "-")
    assert code == 2 and "this machine exposes no Intel IOMMU (is intel_iommu=on?)" in one_error_line(err)


def test_live_tui_checks_before_textual(no_iommu_here, capsys):
    desktop(no_iommu_here)
    code, _, err = run(capsys, "--scenario", "live", "--record", no_iommu_here / "x.keys")
    assert code == 2 and "a recording names its scenario file" in one_error_line(err)
    code, _, err = run(capsys, "--scenario", "live:", "dump")
    assert code == 2


def test_live_on_this_machine_is_one_line_or_works(capsys):
    """The real /sys: either an Intel IOMMU is there, or one clear line, never a traceback."""
    code, out, err = run(capsys, "dump", "--scenario", "live", "--json", "-")
    if code == 0:
        assert json.loads(out)["scenario"] == "live"
    else:
        assert code == 2 and "live: /sys/class/iommu" in one_error_line(err)


# --- README: the copy command makes a tree the reader takes --------------------------------

def readme_copy_command() -> str:
    text = README.read_text()
    section = text.split("## Your own machine", 1)[1].split("\n## ", 1)[0]
    line = next(x for x in section.splitlines() if x.startswith("ssh HOST '"))
    remote, local = re.fullmatch(r"ssh HOST '(.*)' \| (.*)", line).groups()
    return remote, local


@pytest.mark.skipif(not all(shutil.which(t) for t in ("sh", "tar", "realpath", "head", "mktemp", "readlink")),
                    reason="needs the shell tools the README command uses")
def test_readme_copy_command_round_trip(tmp_path, capsys):
    live = tmp_path / "live"
    desktop(live, pci_ids=False)
    # What a real sysfs also holds, which the copy must leave behind.
    (live / "sys/devices/pci0000:00/0000:00:02.0/config").write_bytes(b"\x86\x80" * 128)
    os.symlink("../../../../devices/pci0000:00/0000:00:02.0", live / "sys/devices/pci0000:00/0000:00:02.0/self")
    remote, local = readme_copy_command()
    assert remote.startswith("cd / && ")
    script = f"cd {live} && " + remote[len("cd / && "):]
    work = tmp_path / "here"
    work.mkdir()
    result = subprocess.run(f"sh -c {shlex_quote(script)} | {local}", shell=True, cwd=work, capture_output=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    copy = work / "host-sysfs"
    assert (copy / "sys/class/iommu/dmar0").is_symlink()
    assert not (copy / "sys/devices/pci0000:00/0000:00:02.0/config").exists()
    code_a, direct, _ = run(capsys, "import", live, "--json", "-")
    code_b, copied, _ = run(capsys, "import", copy, "--json", "-")
    assert code_a == code_b == 0
    a, b = json.loads(direct), json.loads(copied)
    a.pop("root"), b.pop("root")
    assert a == b and len(b["devices"]) == len(DESKTOP_DEVICES)


def shlex_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def test_tui_gets_the_live_machine_and_nothing_is_written(no_iommu_here, capsys, monkeypatch):
    """`vtdtui --scenario live`: the app is handed the machine built from the sysfs read,
    once, in memory (no file on disk to name in a session log); the argument stays "live"."""
    import types

    desktop(no_iommu_here)
    seen = {}

    def fake_run(scenario, record, **kw):
        seen["scenario"], seen["machine"] = scenario, kw.get("machine")
        return 0

    monkeypatch.setattr(cli, "_settings", lambda *a, **k: ("vtdtui", {}))
    real_import = cli.importlib.import_module
    monkeypatch.setattr(cli.importlib, "import_module",
                        lambda name: types.SimpleNamespace(run=fake_run) if name == "vtdtui.tui.app"
                        else real_import(name))
    code, _, err = run(capsys, "--scenario", "live")
    assert code == 0, err
    m = seen["machine"]
    assert seen["scenario"] == "live" and m is not None
    assert m.scenario.name == "live" and list(m.units) == ["dmar0", "dmar1"]
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("vtdtui-live-*"))


def test_summary_shows_names_as_written(tmp_path, capsys):
    """A name from pci.ids with rich markup and an escape: shown literally, escaped."""
    fs = desktop(tmp_path)
    fs.write("usr/share/misc/pci.ids", "8086  Intel\n\t46a6  [bold]GPU[/bold] \x1b[2J\n")
    code, out, _ = run(capsys, "import", tmp_path)
    assert code == 0 and "[bold]GPU[/bold] \\x1b[2J" in out and "\x1b" not in out
