"""[kernel] sm and device ats in scenario files; the notebook and server scenarios
against the boot logs their comments cite (bits decoded here by hand from the VT-d
spec positions: SMTS 43, SLTS 46, FLTS 47, SMPWC 48, SC 7, C 0, DT 2, PSS 39:35)."""

from __future__ import annotations

import pytest

from vtdtui.machine import BUILTIN, ScenarioError, load
from vtdtui.machine.scenario import parse

UNIT = '''
[[unit]]
name = "dmar0"
base = "0xfed90000"
cap = "0xd2008c40660462"
ecap = "{ecap}"
'''
GROUP = '''
[[group]]
id = 0
unit = "dmar0"
devices = [{{ bdf = "01:00.0", name = "NVMe"{ats} }}]
'''


def doc(kernel: str = "", ecap: str = "0x12ca9a00f0efde", ats: str = "", extra: str = "") -> bytes:
    return (f'name = "t"\nowner = "driver"\n{extra}\n{kernel}\n' + UNIT.format(ecap=ecap)
            + GROUP.format(ats=ats)).encode()


def bit(v: int, n: int) -> int:
    return v >> n & 1


def test_sm_defaults_on_and_follows_smts():
    sc = parse(doc(), "t.toml")
    assert sc.sm is True and sc.unit_sm(sc.units[0])
    off = parse(doc('[kernel]\nsm = "off"'), "t.toml")
    assert off.sm is False and not off.unit_sm(off.units[0])
    legacy_hw = parse(doc(ecap="0xf050da"), "t.toml")  # no SMTS: legacy whatever sm says
    assert legacy_hw.sm is True and not legacy_hw.unit_sm(legacy_hw.units[0])


@pytest.mark.parametrize("kernel, words", [
    ('[kernel]\nsm = "yes"', ["t.toml: kernel", "'sm'", '"on"', "yes"]),
    ('[kernel]\nsm = "of"', ["did you mean 'off'"]),
    ('[kernel]\nsm = true', ["'sm' must be str", "bool"]),
    ('[kernel]\nsmm = "on"', ["unknown key", "smm", "did you mean 'sm'"]),
])
def test_sm_bad_values(kernel, words):
    with pytest.raises(ScenarioError) as e:
        parse(doc(kernel), "t.toml")
    for w in words:
        assert w in str(e.value)


def test_sm_on_without_any_smts_is_refused():
    with pytest.raises(ScenarioError, match=r"kernel: 'sm' = \"on\" but no unit has ECAP.SMTS"):
        parse(doc('[kernel]\nsm = "on"', ecap="0xf050da"), "t.toml")


def test_sm_unit_without_either_stage_is_refused_unless_sm_off():
    no_stage = hex(0x12ca9a00f0efde & ~(1 << 46) & ~(1 << 47))
    with pytest.raises(ScenarioError, match=r"unit\[0\] 'dmar0'.*neither FLTS nor SLTS"):
        parse(doc('[kernel]\nsm = "on"', ecap=no_stage), "t.toml")
    assert parse(doc('[kernel]\nsm = "off"', ecap=no_stage), "t.toml").sm is False
    # A file from before scalable mode (no `sm`) with such a unit boots legacy, as it did.
    assert parse(doc(ecap=no_stage), "t.toml").sm is False


def test_device_ats():
    sc = parse(doc(ats=", ats = true"), "t.toml")
    assert sc.groups[0].devices[0].ats is True
    assert parse(doc(), "t.toml").groups[0].devices[0].ats is False
    with pytest.raises(ScenarioError, match=r"devices\[0\]: 'ats' must be bool"):
        parse(doc(ats=', ats = "yes"'), "t.toml")
    with pytest.raises(ScenarioError, match="did you mean 'ats'"):
        parse(doc(ats=", atss = true"), "t.toml")


def test_generate_ats():
    gen = b'\n[generate]\ndevices = 3\nfirst_bus = 0x20\nunit = "dmar0"\nats = true\n'
    sc = parse(doc() + gen, "t.toml")
    assert [d.ats for g in sc.groups[1:] for d in g.devices] == [True, True, True]


def test_notebook_is_the_cited_boot_log():
    assert "notebook" in BUILTIN
    sc = load("notebook")
    d0, d1 = sc.units
    # "dmar0: reg_base_addr fc800000 ver 7:0 cap c9de008cee690462 ecap 12ca9a00f0ef5e"
    # "dmar1: reg_base_addr fc801000 ver 7:0 cap c9de008cee690462 ecap 12ca9a00f0efde"
    assert (d0.base, d0.cap, d0.ecap, d0.haw) == (0xFC800000, 0xC9DE008CEE690462, 0x12CA9A00F0EF5E, 42)
    assert (d1.base, d1.cap, d1.ecap) == (0xFC801000, 0xC9DE008CEE690462, 0x12CA9A00F0EFDE)
    for u in sc.units:
        assert (bit(u.ecap, 43), bit(u.ecap, 47), bit(u.ecap, 46)) == (1, 1, 1)  # SMTS FLTS SLTS
        assert (bit(u.ecap, 48), bit(u.ecap, 0)) == (0, 0)  # no SMPWC, no C
        assert sc.unit_sm(u)
    assert (bit(d0.ecap, 7), bit(d1.ecap, 7)) == (0, 1)  # SC only on dmar1
    groups = {g.id: g for g in sc.groups}
    assert groups[0].unit == "dmar0" and groups[0].devices[0].bdf == "00:02.0" and groups[0].devices[0].ats
    assert groups[10].unit == "dmar1" and "NVMe" in groups[10].devices[0].name
    nic = [d for d in groups[17].devices if d.bdf == "00:1f.6"]
    assert nic and groups[17].unit == "dmar1" and "Ethernet" in nic[0].name


def test_server_boots_scalable_and_can_be_told_not_to(tmp_path):
    sc = load("server")
    u = sc.units[0]
    assert (bit(u.ecap, 0), bit(u.ecap, 7), bit(u.ecap, 43), bit(u.ecap, 46), bit(u.ecap, 47)) == (1, 1, 1, 1, 1)
    assert sc.sm and sc.unit_sm(u)
    from importlib import resources
    text = resources.files("vtdtui.scenarios").joinpath("server.toml").read_text()
    p = tmp_path / "server-legacy.toml"
    p.write_text(text.replace('sm = "on"', 'sm = "off"'))
    off = load(str(p))
    assert not off.unit_sm(off.units[0])


def test_desktop_and_viommu_stay_legacy():
    for name in ("desktop", "viommu"):
        sc = load(name)
        assert not any(sc.unit_sm(u) for u in sc.units)
