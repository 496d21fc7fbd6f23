"""`vtdtui import PATH...` of debugfs folders, debugfs files and kernel logs, and
`vtdtui --import PATH...` (DESIGN.md "The kernel's own text, in and out"; issue 18
item 6: `dump --debugfs DIR` then `import DIR` gives the same tables back)."""

from __future__ import annotations

import json

import pytest

from test_kernel_sysfs import desktop as desktop_sysfs
from vtdtui.cli import main
from vtdtui.machine.scenario import parse

DO = ("--do", "attach 5", "--do", "map 5 0x200000 64K rw")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vtdtui: error: "), err
    return lines[0]


@pytest.fixture
def dumped(tmp_path, capsys):
    d = tmp_path / "D"
    code, _, err = run(capsys, "dump", "--scenario", "desktop", *DO, "--debugfs", d)
    assert code == 0, err
    code, out, _ = run(capsys, "dump", "--scenario", "desktop", *DO, "--json", "-")
    assert code == 0
    return d, json.loads(out)


def test_dump_debugfs_then_import_json_gives_the_same_tables(dumped, capsys):
    d, want = dumped
    code, out, err = run(capsys, "import", d, "--json", "-")
    assert code == 0 and err == ""
    got = json.loads(out)
    assert got["schema"] == want["schema"] and got["scenario"] == "imported"
    for wu in want["units"]:
        gu = next(u for u in got["units"] if u["name"] == wu["name"])
        assert gu["context_entries"] == wu["context_entries"]
        buses = {int(c["bdf"][:2], 16) for c in wu["context_entries"]}
        assert gu["root_entries"] == [r for r in wu["root_entries"] if r["bus"] in buses]
    imp = got["import"]
    assert imp["sources"] == [{"path": str(d), "kind": "debugfs", "files": imp["sources"][0]["files"]}]
    assert any(f.endswith("0000:02:00.0/domain_translation_struct") for f in imp["sources"][0]["files"])
    assert imp["unknown"] and imp["unparsed"] == []
    # The page-table entries of the mapping, by address, as dump --debugfs printed them.
    leaves = [e for e in imp["entries"] if "level-1 entry" in e["from"]]
    assert len(leaves) == 16 and all(int(e["value"], 16) & 3 == 3 for e in leaves)


def test_import_summary_and_toml(dumped, capsys, tmp_path):
    d, _ = dumped
    code, out, _ = run(capsys, "import", d)
    assert code == 0 and "dmar1" in out and "group" in out and "not known:" in out
    code, out, _ = run(capsys, "import", d, "--toml", "-")
    assert code == 0 and "imported from" in out
    sc = parse(out.encode(), "<test>")
    assert [u.name for u in sc.units] == ["dmar0", "dmar1"]
    assert [d.bdf for g in sc.groups for d in g.devices] == ["02:00.0"]


def test_a_single_debugfs_file_with_a_log_and_a_sysfs_root(dumped, capsys, tmp_path):
    d, _ = dumped
    root = tmp_path / "sysroot"
    desktop_sysfs(root)
    code, out, err = run(capsys, "import", d / "dmar_translation_struct", d / "iommu_regset", root, "--json", "-")
    assert code == 0, err
    got = json.loads(out)
    # With sysfs, every device it lists, in its group.
    groups = {g["id"]: g["devices"] for g in got["groups"]}
    assert "02:00.0" in sum(groups.values(), []) and len(groups) > 1
    assert [s["kind"] for s in got["import"]["sources"]] == ["debugfs", "debugfs", "sysfs"]


def test_unparsed_lines_are_noted_not_fatal(dumped, capsys, tmp_path):
    d, _ = dumped
    f = tmp_path / "iommu_regset"
    f.write_text((d / "iommu_regset").read_text() + "garbage at the end\n")
    code, out, err = run(capsys, "import", f, "--json", "-")
    n = len((d / "iommu_regset").read_text().split("\n"))
    assert code == 0 and f"not understood (skipped): {f}:{n}" in err
    assert json.loads(out)["import"]["unparsed"] == [f"{f}:{n}"]


@pytest.mark.parametrize("mangle, expect", [
    (lambda t: t.replace("0x000000000100b001", "0x00000000100b001"), "truncated or garbled"),
    (lambda t: t.replace("02:00.0\t", "02:20.0\t"), "device '20' is above 1f"),
])
def test_bad_rows_are_one_line_exit_2(dumped, capsys, tmp_path, mangle, expect):
    d, _ = dumped
    f = tmp_path / "dmar_translation_struct"
    f.write_text(mangle((d / "dmar_translation_struct").read_text()))
    code, _, err = run(capsys, "import", f, d / "iommu_regset")
    line = one_error_line(err)
    assert code == 2 and expect in line and f"{f}:" in line


def test_nothing_recognisable_and_no_unit_are_one_line_exit_2(dumped, capsys, tmp_path):
    d, _ = dumped
    f = tmp_path / "log.txt"
    f.write_text("hello\n" * 100)
    code, _, err = run(capsys, "import", f)
    assert code == 2 and "not a kernel log" in one_error_line(err)
    code, _, err = run(capsys, "import", d / "dmar_translation_struct")
    assert code == 2 and "nothing says what the unit is" in one_error_line(err)


def test_json_over_an_input_is_refused(dumped, capsys):
    d, _ = dumped
    target = d / "iommu_regset"
    before = target.read_text()
    code, _, err = run(capsys, "import", target, "--json", target)
    assert code == 2 and "that is an input of this run" in one_error_line(err)
    assert target.read_text() == before


def test_tui_import_refuses_a_scenario_and_an_empty_machine(dumped, capsys, tmp_path):
    d, _ = dumped
    code, _, err = run(capsys, "--import", d, "--scenario", "server")
    assert code == 2 and "--scenario does not apply to an imported machine" in one_error_line(err)
    code, _, err = run(capsys, "--import", d / "iommu_regset")
    assert code == 2 and "no device in the input" in one_error_line(err)
    code, _, err = run(capsys, "dump", "--json", "-", "--import", d)
    assert code == 2


def test_serve_refuses_translate_and_import_and_checks_import_paths_first(dumped, capsys, monkeypatch, tmp_path):
    d, _ = dumped
    for argv, says in ((["translate", "02:00.0", "0x1000"], "not 'translate'"),
                       (["import", d], "not 'import'"),
                       (["--import", tmp_path / "missing"], "no such file or folder"),
                       (["--import", d / "iommu_regset"], "no device in the input"),
                       (["--import", d, "--scenario", "server"], "--scenario does not apply")):
        code, _, err = run(capsys, "serve", "--", *argv)
        line = one_error_line(err)
        assert code == 2 and line.startswith("vtdtui: error: serve -- ") and says in line, line
    # An input that imports is served: what the browser session will run is passed on.
    import vtdtui.tui.serve as serve

    seen = []
    monkeypatch.setattr(serve, "run", lambda host, port, served: seen.append(served) or 0)
    code, _, err = run(capsys, "serve", "--", "--import", d)
    assert code == 0 and err == "" and seen == [["--import", str(d)]]
