"""Built-in scenarios against DESIGN.md's tables, and user scenario files good and bad."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from machinekit import dumps, group_state, state, unit_state
from vtdtui.machine import BUILTIN, Machine, ScenarioError, load

DATA = Path(__file__).parent / "data" / "scenarios"


def _bit(value: str, n: int) -> int:
    return int(value, 16) >> n & 1


def _bits(value: str, lo: int, hi: int) -> int:
    return int(value, 16) >> lo & ((1 << (hi - lo + 1)) - 1)


def _groups(st: dict) -> dict:
    return {g["id"]: (g["unit"], g["devices"]) for g in st["groups"]}


# ----------------------------------------------------------------------------- built-ins


def test_builtin_names():
    assert set(BUILTIN) == {"desktop", "viommu", "server", "notebook", "viommu-sm", "viommu-nested"}
    for name in BUILTIN:
        assert resources.files("vtdtui.scenarios").joinpath(f"{name}.toml").is_file()


def test_desktop_matches_design():
    m = Machine.from_scenario("desktop")
    st = state(m)
    assert st["scenario"] == "desktop"
    assert [(u["name"], u["level"], u["cap"], u["ecap"]) for u in st["units"]] == [
        ("dmar0", "host", "0x1c0000c40660462", "0x19e2ff0505e"),
        ("dmar1", "host", "0xd2008c40660462", "0xf050da"),
    ]
    assert (m.units["dmar0"].base, m.units["dmar1"].base) == (0xFED90000, 0xFED91000)
    f0, f1 = unit_state(st, "dmar0")["flags"], unit_state(st, "dmar1")["flags"]
    # dmar0: no SC, no C, no PSI; dmar1: SC, no C.  CM=0 on both, as on real hardware.
    assert (f0["cm"], f0["c"], f0["sc"], f0["psi"], f0["rwbf"]) == (False, False, False, False, False)
    assert (f1["cm"], f1["c"], f1["sc"], f1["psi"], f1["rwbf"]) == (False, False, True, True, False)
    assert _bits(st["units"][1]["cap"], 48, 53) == 18  # MAMV
    assert _groups(st) == {
        0: ("dmar0", ["00:02.0"]),
        1: ("dmar1", ["00:00.0"]),
        2: ("dmar1", ["00:14.0", "00:14.2"]),
        3: ("dmar1", ["00:1f.0", "00:1f.3", "00:1f.4", "00:1f.5"]),
        4: ("dmar1", ["01:00.0"]),
        5: ("dmar1", ["02:00.0"]),
        6: ("dmar1", ["03:00.0"]),
    }
    assert {g["owner"] for g in st["groups"]} == {"vfio"}
    assert all(g["domain"] is None for g in st["groups"]) and st["domains"] == []
    assert st["vm"]["noncoherent_dma_count"] == 0
    assert st["vfio"]["policy"] == "mainline"
    # It is the default.
    assert dumps(Machine.from_scenario(None)) == dumps(m)


def test_viommu_matches_design():
    m = Machine.from_scenario("viommu")
    st = state(m)
    assert st["scenario"] == "viommu"
    g = unit_state(st, "dmar0")
    assert (g["level"], g["cap"], g["ecap"]) == ("guest", "0x80d2008c222f0686", "0xf00f5a")
    assert m.units["dmar0"].base == 0xFED90000
    assert g["flags"]["cm"] is True
    # QEMU's vtd_cap_init: ND=6, SAGAW 39|48, MGAW 47, FRO 0x22, PSI, NFR 0, MAMV 18,
    # DRD/DWD, ESRTPS; never RWBF.  ECAP: QI, IR, EIM, PT, IRO 0xF, MHMV 15; never C; no SC.
    cap, ecap = g["cap"], g["ecap"]
    assert _bits(cap, 0, 2) == 6 and _bits(cap, 8, 12) == 0b00110 and _bits(cap, 16, 21) == 47
    assert _bits(cap, 24, 33) == 0x22 and _bit(cap, 39) == 1 and _bits(cap, 40, 47) == 0
    assert _bits(cap, 48, 53) == 18 and _bit(cap, 4) == 0 and _bit(cap, 63) == 1
    assert _bit(ecap, 0) == 0 and _bit(ecap, 1) == 1 and _bit(ecap, 7) == 0 and _bits(ecap, 8, 17) == 0xF
    hosts = [u for u in st["units"] if u["level"] == "host"]
    assert len(hosts) == 1 and hosts[0]["name"] == "host-dmar1"
    assert _groups(st) == {
        0: ("dmar0", ["00:00.0"]),
        1: ("dmar0", ["00:01.0"]),
        2: ("dmar0", ["00:02.0"]),
        3: ("dmar0", ["00:03.0"]),
        4: ("dmar0", ["00:1f.0", "00:1f.2", "00:1f.3"]),
    }
    assert {g["owner"] for g in st["groups"]} == {"driver"}
    assert st["qemu"]["assigned"] == "00:03.0" and st["qemu"]["caching_mode"] is True
    # The assigned NIC is in the VM's host container from the start.
    host = [d for d in st["domains"] if d["unit"] == "host-dmar1"]
    assert len(host) == 1 and host[0]["devices"] == ["02:00.0"] and host[0]["owner"] == "vfio"


def test_server_matches_design():
    m = Machine.from_scenario("server")
    st = state(m)
    (u,) = st["units"]
    assert u["level"] == "host"
    assert u["flags"]["c"] is True and u["flags"]["sc"] is True
    assert _bit(u["ecap"], 0) == 1 and _bit(u["ecap"], 7) == 1 and _bit(u["ecap"], 43) == 1  # C, SC, SMTS
    assert len(st["groups"]) >= 64
    bdfs = [d for g in st["groups"] for d in g["devices"]]
    assert all(len(g["devices"]) == 1 for g in st["groups"])
    assert len(set(bdfs)) == len(bdfs)
    assert {g["owner"] for g in st["groups"]} == {"driver"}
    assert st["vm"] is None


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_file_loaded_by_path_gives_the_same_machine(name, tmp_path):
    text = resources.files("vtdtui.scenarios").joinpath(f"{name}.toml").read_bytes()
    path = tmp_path / f"{name}-copy.toml"
    path.write_bytes(text)
    a, b = Machine.from_scenario(name), Machine.from_scenario(str(path))
    assert dumps(a) == dumps(b)


# ----------------------------------------------------------------------------- user files


def test_good_user_scenario_with_a_vm():
    path = DATA / "good-vm.toml"
    m = Machine.from_scenario(str(path))
    st = state(m)
    assert st["scenario"] == "my-laptop"
    assert [(u["name"], u["cap"]) for u in st["units"]] == [("gfx", "0x1c0000c40660462"), ("rest", "0xd2008c40660462")]
    assert m.units["gfx"].base == 0xFED90000  # a TOML integer works as well as a string
    assert _groups(st) == {10: ("gfx", ["00:02.0"]), 11: ("rest", ["3a:00.0", "3a:00.1"])}
    assert group_state(st, 11)["domain"] is not None  # attached = true
    assert group_state(st, 10)["domain"] is None
    assert st["vfio"]["policy"] == "prefer-reuse" and st["vm"]["model"] == "guest-mtrr"  # "6.10" names it
    o = m.execute("attach 10")
    # prefer-reuse tries the existing domain; it enforces snooping, gfx has no SC: -EINVAL.
    assert any(e.op == "domain-reuse" and "refused" in e.reason for e in o.events)
    assert len(state(m)["domains"]) == 2
    assert "MTRR" in state(m)["vm"]["ept_memtype_ram"]


def test_good_user_scenario_with_generated_groups():
    m = Machine.from_scenario(str(DATA / "good-few-dids.toml"))
    st = state(m)
    assert len(st["groups"]) == 16 and all(g["domain"] is None for g in st["groups"])
    assert group_state(st, 0)["devices"] == ["01:00.0"] and group_state(st, 15)["devices"] == ["01:0f.0"]


BAD = [
    # file, substrings the message must hold besides the file name
    ("bad-empty.toml", ["empty"]),
    ("bad-blank.toml", ["missing key 'name'"]),
    ("bad-nonutf8.toml", ["not UTF-8"]),
    ("bad-missing-name.toml", ["missing key 'name'"]),
    ("bad-syntax.toml", ["line 2"]),
    ("bad-type-name.toml", ["'name' must be str", "int"]),
    ("bad-type-cap.toml", ["unit[0]", "'cap'", "float"]),
    ("bad-type-bool-ecap.toml", ["unit[0]", "'ecap'", "bool"]),
    ("bad-type-haw.toml", ["unit[0]", "'haw' must be int"]),
    ("bad-type-attached.toml", ["group[0]", "'attached' must be bool"]),
    ("bad-type-group-id.toml", ["group[0]", "'id' must be int"]),
    ("bad-type-devices.toml", ["group[0]", "'devices' must be list"]),
    ("bad-cap-hex.toml", ["unit[0]", "cap", "0xZZ"]),
    ("bad-level.toml", ["unit[0]", "'level'", "hypervisor"]),
    ("bad-no-units.toml", ["[[unit]]"]),
    ("bad-unknown-unit.toml", ["group[0]", "unknown unit 'dmar7'"]),
    ("bad-duplicate-group.toml", ["group[1]", "duplicate group id 3"]),
    ("bad-overlapping-device.toml", ["group[1].devices[1]", "00:02.0", "already in group 0"]),
    ("bad-bdf.toml", ["group[0].devices[0]", "00:20.0"]),
    ("bad-vfio-without-vm.toml", ["owner", "[vm]"]),
    ("bad-vm-policy.toml", ["vm", "'policy'", "always-reuse"]),
    ("bad-qemu-host-unit.toml", ["qemu", "'host_unit'"]),
]


@pytest.mark.parametrize("name, parts", BAD, ids=[b[0] for b in BAD])
def test_bad_user_scenario_names_file_and_key(name, parts):
    path = str(DATA / name)
    with pytest.raises(ScenarioError) as exc:
        Machine.from_scenario(path)
    msg = str(exc.value)
    assert msg.startswith(path + ": "), msg
    for p in parts:
        assert p in msg, (p, msg)
    assert "\n" not in msg


def test_every_bad_file_is_covered():
    files = {p.name for p in DATA.glob("bad-*.toml")}
    assert files == {b[0] for b in BAD}


def test_missing_scenario_names_the_path_and_the_builtins():
    with pytest.raises(ScenarioError) as exc:
        load(str(DATA / "no-such.toml"))
    msg = str(exc.value)
    assert msg.startswith(str(DATA / "no-such.toml") + ": ")
    assert "desktop" in msg and "viommu" in msg and "server" in msg
    with pytest.raises(ScenarioError):
        load(str(DATA))  # a directory is not a scenario


# ----------------------------------------------------------------------------- [kernel]
KERNEL_BASE = (Path(__file__).resolve().parent.parent / "vtdtui" / "scenarios" / "desktop.toml").read_text("utf-8")


def _with_kernel(tmp_path, table: str) -> str:
    path = tmp_path / "kernel.toml"
    path.write_text(KERNEL_BASE + "\n[kernel]\n" + table + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("name", BUILTIN)
def test_builtins_model_a_kernel_without_dmar_debug(name):
    assert load(name).dmar_debug is False  # distribution kernels: CONFIG_DMAR_DEBUG is not set


def test_kernel_dmar_debug_is_read(tmp_path):
    assert load(_with_kernel(tmp_path, "dmar_debug = true")).dmar_debug is True
    assert load(_with_kernel(tmp_path, "dmar_debug = false")).dmar_debug is False
    assert load(_with_kernel(tmp_path, "")).dmar_debug is False  # an empty [kernel] keeps the default


@pytest.mark.parametrize("table, parts", [
    ("dmar_debg = true", ["kernel", "unknown key 'dmar_debg'", "did you mean 'dmar_debug'?"]),
    ('dmar_debug = "yes"', ["kernel", "'dmar_debug' must be bool", "'yes'"]),
    ("dmar_debug = 1", ["kernel", "'dmar_debug' must be bool"]),
    # `sm` takes "on" or "off" (intel_iommu=sm_on / sm_off), nothing else.
    ('sm = "of"', ["kernel", "'sm' must be \"on\"", "did you mean 'off'?"]),
    ('sm = 0', ["kernel", "'sm' must be str"]),
    # desktop's units have no ECAP.SMTS: asking for scalable mode would change nothing.
    ('sm = "on"', ["kernel", "no unit has ECAP.SMTS=1"]),
])
def test_bad_kernel_table_names_file_and_key(tmp_path, table, parts):
    path = _with_kernel(tmp_path, table)
    with pytest.raises(ScenarioError) as exc:
        load(path)
    msg = str(exc.value)
    assert msg.startswith(path + ": kernel: "), msg
    for p in parts:
        assert p in msg, (p, msg)


def test_kernel_must_be_a_table(tmp_path):
    path = tmp_path / "kernel-value.toml"
    path.write_text('kernel = "debug"\n' + KERNEL_BASE, encoding="utf-8")
    with pytest.raises(ScenarioError) as exc:
        load(str(path))
    assert "'kernel' must be dict" in str(exc.value)
