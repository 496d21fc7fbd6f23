"""The scenario generator: --devices N --map SIZE[:PAGE] and [generate] map."""

from __future__ import annotations

import json

import pytest

from machinekit import SERVER_UNIT
from vtdtui.cli import main
from vtdtui.machine import Machine, ScenarioError
from vtdtui.machine.parse import parse_map_spec
from vtdtui.machine.scenario import parse
from vtdtui.machine.state import to_json

SERVER_HEAD = """
name = "gen"
owner = "driver"
memory = "1T"
""" + SERVER_UNIT


@pytest.mark.parametrize("text, expected", [
    ("4G:4K", (4 << 30, 4096)), ("4G", (4 << 30, 4096)), ("16G:2M", (16 << 30, 2 << 20)),
    ("0x40000000:1G", (1 << 30, 1 << 30)), ("8m:2mib", (8 << 20, 2 << 20)),
])
def test_map_spec(text, expected):
    assert parse_map_spec(text) == expected


@pytest.mark.parametrize("text, message", [("4G:3K", "must be 4K, 2M or 1G"), ("0:4K", "size 0"),
                                           ("lots", "not a number"), (":4K", "empty")])
def test_bad_map_spec(text, message):
    with pytest.raises(ValueError, match=message):
        parse_map_spec(text)


def _dma(m: Machine, group: int, iova: int):
    m.execute(f"dma {group} {iova:#x} r")
    unit = to_json(m)["units"][0]
    return unit["iotlb"][-1]


@pytest.mark.parametrize("spec, page", [("64M:4K", 0x1000), ("64M:2M", 0x200000), ("16G:1G", 0x40000000)])
def test_each_domain_gets_its_share_in_pages_of_that_size(spec, page):
    m = Machine.from_scenario("server", devices=16, map_spec=spec)
    state = to_json(m)
    assert len(state["domains"]) == 16 and len({d["did"] for d in state["domains"]}) == 16
    size = parse_map_spec(spec)[0]
    share = size // 16
    assert {d["mapped_pages"] for d in state["domains"]} == {share >> 12}
    base = m.scenario.ram_base
    first = min(m.groups)
    for i in (0, 5, 15):
        g = first + i
        last = share - page
        e = _dma(m, g, last + 0x10)
        assert int(e["hpa"], 16) == base + i * share + last and int(e["size"], 16) == page


def test_the_target_build_counts_a_million_leaves():
    # The target scenario, at a size the suite can afford: 4G:4K on 64
    # devices is the same 1,048,576 leaf entries.
    m = Machine.from_scenario("server", map_spec="4G:4K")
    assert sum(d["mapped_pages"] for d in to_json(m)["domains"]) == 1 << 20


def test_generated_state_is_deterministic():
    a = json.dumps(to_json(Machine.from_scenario("server", devices=32, map_spec="256M:2M")))
    b = json.dumps(to_json(Machine.from_scenario("server", devices=32, map_spec="256M:2M")))
    assert a == b


def test_devices_replace_the_scenario_generate_table():
    m = Machine.from_scenario("server", devices=100)
    assert len(m.groups) == 100
    assert max(sid for g in m.groups.values() for sid, _ in g.devices) >> 8 == 0x10 + 99 // 32


def test_toml_generate_map():
    sc = parse((SERVER_HEAD + '[generate]\ndevices = 4\nmap = "8M:2M"\n').encode(), "gen.toml")
    assert (sc.generate.map_size, sc.generate.page, sc.generate.share) == (8 << 20, 2 << 20, 2 << 20)


@pytest.mark.parametrize("generate, message", [
    ('devices = 3\nmap = "8M:2M"', "8M over 3 domain(s) is not a whole number of 2M pages"),
    ('devices = 4\nmap = "8M:5M"', "page size '5M' must be 4K, 2M or 1G"),
    ('devices = 4\nmap = "2T:1G"', "the scenario has 1T"),
    ('devices = 4\nmap = "128G:4K"', "the generator stops at 16,777,216"),
    ('devices = 4\nattached = false\nmap = "8M"', "needs attached = true"),
    ("devices = 0", "'devices' = 0 is outside 1..65536"),
    ('devices = 300\nfirst_bus = 0xfc', "run past bus 0xff"),
    ("devices = 4\nmap = 8", "'map' must be"),
])
def test_bad_generate_tables(generate, message):
    with pytest.raises(ScenarioError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        parse((SERVER_HEAD + "[generate]\n" + generate + "\n").encode(), "gen.toml")
    assert str(e.value).startswith("gen.toml: generate: ")


def test_generating_into_a_vm_scenario_is_refused():
    # A VM's container shares domains: "each group in its own domain" cannot hold.
    with pytest.raises(ScenarioError, match="--devices: the desktop scenario's groups go to a VM"):
        Machine.from_scenario("desktop", devices=4)


def test_devices_on_a_scenario_without_generate_start_after_its_buses():
    m = Machine.from_scenario("viommu", devices=40, map_spec="80M:2M")
    new = [g for g in m.groups.values() if g.spec_id >= 5]
    assert len(new) == 40 and min(sid >> 8 for g in new for sid, _ in g.devices) == 1
    assert all(g.domain.mapped_pages == 512 for g in new)


def test_map_without_devices_on_a_scenario_that_generates_none():
    with pytest.raises(ScenarioError, match="add --devices N"):
        Machine.from_scenario("viommu", map_spec="8M")


def test_pages_the_unit_lacks_are_refused(tmp_path):
    no_1g = SERVER_HEAD.replace("0x19ed008c40780c66", "0x19ed008440780c66")  # SLLPS = 1: 2M only
    p = tmp_path / "s.toml"
    p.write_text(no_1g + '[generate]\ndevices = 1\nmap = "1G:1G"\n')
    with pytest.raises(ScenarioError, match=r"dmar0 has no 1G pages \(CAP.SLLPS=0x1\)"):
        Machine.from_scenario(str(p))


def test_dump_takes_the_generator_arguments(capsys):
    assert main(["dump", "--scenario", "server", "--devices", "8", "--map", "64M:2M", "--json", "-"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert [d["mapped_pages"] for d in state["domains"]] == [2048] * 8


@pytest.mark.parametrize("argv, message", [
    (["dump", "--scenario", "server", "--map", "1T", "--json", "-"], "--map: 1T in 4K pages is 268,435,456"),
    (["dump", "--scenario", "server", "--devices", "0", "--json", "-"], "0 is outside 1..65536"),
    (["dump", "--scenario", "server", "--devices", "many", "--json", "-"], "wants a number of devices"),
    (["--devices", "3", "dump", "--json", "-"], "give it after the subcommand"),
    (["--map", "4G", "decode", "--cap", "0"], "does not apply to 'decode'"),
])
def test_bad_generator_arguments_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_both_arguments_name_the_one_at_fault(capsys):
    assert main(["dump", "--scenario", "server", "--devices", "8000", "--map", "8G", "--json", "-"]) == 2
    assert "vtdtui: error: --devices: 8000 devices from bus 0x10 run past bus 0xff" in capsys.readouterr().err
    assert main(["dump", "--scenario", "server", "--devices", "3", "--map", "8G:2M", "--json", "-"]) == 2
    assert "vtdtui: error: --map: 8G over 3 domain(s)" in capsys.readouterr().err


def test_undo_on_a_generated_scenario_gives_back_the_built_state():
    """Dense table pages (a domain's full leaf tables) are shared copy-on-write with
    the undo base: writes after the build must not reach it."""
    from vtdtui.machine.state import to_json_text

    m = Machine.from_scenario("server", devices=64, map_spec="1G:4K")  # 4096 pages a domain
    built = to_json_text(m)
    m.execute("unmap 5 0 64K")  # clears entries in a dense leaf table
    m.execute("map 3 0x40000000 2M")
    m.execute("toggle dmar0 cm")
    after = to_json_text(m)
    for _ in range(3):
        m.undo()
    assert to_json_text(m) == built
    for _ in range(3):
        m.redo()
    assert to_json_text(m) == after
