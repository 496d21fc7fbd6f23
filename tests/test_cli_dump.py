"""`vtdtui dump [--scenario NAME|PATH] [--do CMD ...] --json OUT|-` (DESIGN.md, command line)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from machinekit import run
from vtdtui import cli
from vtdtui.machine.state import to_json

DATA = Path(__file__).parent / "data" / "scenarios"

UNIT_KEYS = {"name", "level", "cap", "ecap", "flags", "root_entries", "context_entries", "context_cache",
             "iotlb", "faults"}
FLAG_KEYS = {"cm", "c", "sc", "rwbf", "psi", "qi"}
DOMAIN_KEYS = {"id", "unit", "did", "enforce_cache_coherency", "devices", "mapped_pages"}
GROUP_KEYS = {"id", "unit", "devices", "domain", "owner"}
VM_KEYS = {"noncoherent_dma_count", "emulate_wbinvd", "ept_memtype_ram"}
JOURNAL_KEYS = {"seq", "unit", "actor", "op", "scope", "outcome", "rule", "reason"}


def _dump(capsys, *argv):
    rc = cli.main(["dump", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert err.startswith("vtdtui: error: ")
    return err


def test_dump_prints_the_contract_keys(capsys):
    rc, out, err = _dump(capsys, "--do", "attach 5", "--do", "map 5 0x100000 64K rw", "--do", "dma 5 0x200000 r",
                         "--json", "-")
    assert (rc, err) == (0, "")
    st = json.loads(out)
    assert st["schema"] == "vtdtui.state/1" and st["scenario"] == "desktop"
    assert {"schema", "scenario", "units", "domains", "groups", "vm", "journal"} <= set(st)
    for u in st["units"]:
        assert UNIT_KEYS <= set(u) and FLAG_KEYS <= set(u["flags"])
        assert u["level"] in ("host", "guest")
        assert u["cap"].startswith("0x") and u["ecap"].startswith("0x")
        assert all(isinstance(v, bool) for v in u["flags"].values())
        for r in u["root_entries"]:
            assert {"bus", "present", "ctp"} <= set(r) and r["ctp"].startswith("0x")
        for c in u["context_entries"]:
            assert {"bdf", "present", "did", "tt", "aw", "slptptr", "fpd"} <= set(c)
        for c in u["context_cache"]:
            assert {"bdf", "did", "present"} <= set(c)
        for t in u["iotlb"]:
            assert {"did", "iova", "size", "hpa", "r", "w", "snp"} <= set(t)
        for f in u["faults"]:
            assert {"bdf", "iova", "reason", "access", "message"} <= set(f)
    dmar1 = st["units"][1]
    assert dmar1["iotlb"] == [] and dmar1["faults"][0]["message"].startswith("DMAR: [DMA Read NO_PASID]")
    (d,) = st["domains"]
    assert DOMAIN_KEYS <= set(d) and d["mapped_pages"] == 16 and d["devices"] == ["02:00.0"]
    for g in st["groups"]:
        assert GROUP_KEYS <= set(g)
    assert st["groups"][5]["domain"] == d["id"] and st["groups"][4]["domain"] is None
    assert VM_KEYS <= set(st["vm"])
    seqs = [e["seq"] for e in st["journal"]]
    assert seqs == list(range(1, len(seqs) + 1))
    for e in st["journal"]:
        assert JOURNAL_KEYS <= set(e)
        assert e["actor"] in ("driver", "vfio", "kvm", "qemu", "hw")
        assert e["outcome"] in ("issued", "skipped")


def test_dump_equals_the_machine_state(capsys):
    cmds = ["toggle dmar1 CM", "attach 5", "map 5 0x1ff000 8K"]
    argv = [a for c in cmds for a in ("--do", c)]
    rc, out, _ = _dump(capsys, *argv, "--json", "-")
    m, _ = run("desktop", *cmds)
    assert rc == 0 and out == json.dumps(to_json(m), indent=2) + "\n"
    # And twice the same bytes.
    assert _dump(capsys, *argv, "--json", "-")[1] == out


def test_dump_without_commands_is_the_fresh_scenario(capsys):
    rc, out, _ = _dump(capsys, "--scenario", "viommu", "--json", "-")
    st = json.loads(out)
    assert rc == 0 and st["scenario"] == "viommu" and st["qemu"]["assigned"] == "00:03.0"
    assert all(g["domain"] is None for g in st["groups"])


def test_dump_a_user_scenario_file_to_a_file(capsys, tmp_path):
    out_path = tmp_path / "state.json"
    rc, out, err = _dump(capsys, "--scenario", str(DATA / "good-vm.toml"), "--do", "attach 10", "--json", str(out_path))
    assert (rc, out, err) == (0, "", "")
    st = json.loads(out_path.read_text(encoding="utf-8"))
    assert st["scenario"] == "my-laptop" and st["groups"][0]["domain"] is not None


def test_bad_do_exits_2_with_one_line(capsys):
    rc, out, err = _dump(capsys, "--do", "attach 5", "--do", "map 5 0x100800 4K", "--json", "-")
    assert rc == 2 and out == ""
    line = _one_error_line(err)
    assert "--do #2 'map 5 0x100800 4K'" in line and "not 4 KiB aligned" in line
    rc, out, err = _dump(capsys, "--do", "frobnicate", "--json", "-")
    assert rc == 2 and out == "" and "--do #1 'frobnicate': unknown command" in _one_error_line(err)


def test_bad_scenario_exits_2_with_one_line(capsys, tmp_path):
    missing = str(tmp_path / "nope.toml")
    rc, out, err = _dump(capsys, "--scenario", missing, "--json", "-")
    assert rc == 2 and out == ""
    assert _one_error_line(err).startswith(f"vtdtui: error: {missing}: no such scenario")
    bad = str(DATA / "bad-duplicate-group.toml")
    rc, out, err = _dump(capsys, "--scenario", bad, "--json", "-")
    assert rc == 2 and out == ""
    assert _one_error_line(err) == f"vtdtui: error: {bad}: group[1]: duplicate group id 3\n"


def test_unwritable_output_and_usage_errors_exit_2(capsys, tmp_path):
    target = str(tmp_path / "no-dir" / "out.json")
    rc, out, err = _dump(capsys, "--json", target)
    assert rc == 2 and target in _one_error_line(err)
    rc, out, err = _dump(capsys)  # --json is required
    assert rc == 2 and "dump" in _one_error_line(err) and "--json" in err
    rc = cli.main(["--scenario", "server", "dump", "--json", "-"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and "--scenario starts the TUI" in _one_error_line(err)


@pytest.mark.parametrize("ok", [True, False])
def test_dump_as_a_process(ok, tmp_path):
    do = "attach 0" if ok else "attach 0 0"
    p = subprocess.run([sys.executable, "-m", "vtdtui", "dump", "--do", do, "--json", "-"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    if ok:
        assert p.returncode == 0 and p.stderr == ""
        st = json.loads(p.stdout)
        assert st["schema"] == "vtdtui.state/1"
        assert st["vm"]["noncoherent_dma_count"] == 1 and st["vm"]["ept_memtype_ram"] == "WB"
    else:
        assert p.returncode == 2 and p.stdout == ""
        assert p.stderr == "vtdtui: error: --do #1 'attach 0 0': usage: attach GROUP\n"


def test_bench_outside_a_checkout_and_unknown_names_are_bad_input(tmp_path, monkeypatch, capsys):
    """`vtdtui bench` runs bench/ from a source checkout; elsewhere, or with a name that
    is no benchmark, one line and exit 2 (the benchmarks themselves are not tests)."""
    from vtdtui.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["bench", "core"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no bench/ here" in err[0]
    assert main(["bench", "speed"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice 'speed'" in err[0]
