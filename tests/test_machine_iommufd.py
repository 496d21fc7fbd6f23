"""The composed machine with iommufd (issue 19): the VM's vfio cdevs on desktop with
`[vm] backend = "iommufd"`, and the viommu-nested story (QEMU x-flts=on: the host
nests the assigned NIC over a NEST_PARENT second stage).  Driven through
Machine.execute; invariants checked after every command."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_perf_undo import _Audited, _everything
from vtdtui.machine import CommandError, Machine, ScenarioError, load
from vtdtui.machine import machine as M
from vtdtui.machine.invariants import check, check_command
from vtdtui.machine.state import to_json

SCENARIOS = Path(__file__).resolve().parent.parent / "vtdtui" / "scenarios"
DESKTOP = (SCENARIOS / "desktop.toml").read_text("utf-8")
NESTED = (SCENARIOS / "viommu-nested.toml").read_text("utf-8")


def _file(tmp_path, text: str, name: str = "s.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _desktop_iommufd(tmp_path) -> Machine:
    text = DESKTOP.replace('policy = "mainline"', 'policy = "mainline"\nbackend = "iommufd"')
    assert text != DESKTOP
    return Machine.from_scenario(_file(tmp_path, text))


def _run(m: Machine, *lines: str):
    outs = []
    for line in lines:
        o = m.execute(line)
        assert check(m) == [], line
        assert check_command(m, line, o.events) == [], line
        outs.append(o)
    return outs


def _ops(o, actor: str) -> list[tuple[str, str]]:
    return [(e.op, e.outcome) for e in o.events if e.actor == actor]


# ----------------------------------------------------------------------------- desktop on iommufd


def test_desktop_backend_iommufd_sc1_then_sc0_gives_two_hwpts(tmp_path):
    m = _desktop_iommufd(tmp_path)
    assert m.backend == "iommufd" and m.iommufd is not None
    st = to_json(m)["iommufd"]
    assert st == {"ioas": [{"id": m.ioas_id, "mappings": []}], "hwpts": []}  # the VM's IOAS, empty at start
    nic, gpu = _run(m, "attach 5", "attach 0")
    # The NIC (dmar1, ECAP.SC=1) gets an enforcing automatic HWPT; the GPU (dmar0,
    # SC=0) cannot join it (paging_domain_compatible: force_snooping && !SC, -EINVAL)
    # and gets its own (iommufd_device_auto_get_domain).
    assert ("hwpt-alloc", "issued") in _ops(nic, "iommufd") and ("hwpt-attach", "issued") in _ops(nic, "iommufd")
    assert ("hwpt-attach", "skipped") in _ops(gpu, "iommufd")  # HWPT of the NIC refused the GPU
    assert ("hwpt-alloc", "issued") in _ops(gpu, "iommufd")
    hwpts = to_json(m)["iommufd"]["hwpts"]
    assert [(h["kind"], h["auto"], h["enforce_cache_coherency"], h["devices"]) for h in hwpts] == [
        ("paging", True, True, ["02:00.0"]), ("paging", True, False, ["00:02.0"])]
    assert m.domain_of(m.groups[5]).id == hwpts[0]["domain"] and m.domain_of(m.groups[0]).id == hwpts[1]["domain"]
    assert m.domain_of(m.groups[5]).force_snooping and not m.domain_of(m.groups[0]).force_snooping
    # KVM holds both cdevs; the GPU's is not enforced-coherent: one noncoherent DMA registration.
    assert m.kvm.files == {"02:00.0": True, "00:02.0": False}
    assert m.kvm.noncoherent_dma_count == 1
    assert m.vfio.domains == []  # the type1 container is unused


def test_desktop_sc0_first_shares_one_hwpt_since_6_7(tmp_path):
    # iommufd no longer upgrades an existing HWPT at attach (Nicolin Chen, ≈6.7): the
    # NIC joins the GPU's non-enforcing automatic HWPT.
    m = _desktop_iommufd(tmp_path)
    _run(m, "attach 0", "attach 5")
    hwpts = to_json(m)["iommufd"]["hwpts"]
    assert [h["devices"] for h in hwpts] == [["00:02.0", "02:00.0"]]
    assert m.kvm.noncoherent_dma_count == 1


def test_map_is_mirrored_into_every_hwpt_and_undo_restores_state(tmp_path):
    m = _desktop_iommufd(tmp_path)
    states = [to_json(m)]
    for line in ("attach 5", "attach 0", "map 5 0x100000 64K rw", "unmap 0 0x100000 64K", "map 0 0x200000 8K r",
                 "detach 5", "detach 0"):
        _run(m, line)
        states.append(to_json(m))
        if line.startswith("map 5"):
            (ioas,) = states[-1]["iommufd"]["ioas"]
            assert ioas["mappings"] == [{"iova": "0x100000", "size": "0x10000", "hpa": "0x100100000"}]
            drv = m.worlds["host"].driver
            for g in (5, 0):  # both HWPTs' domains map the area (iopt_table_add_domain)
                assert drv.iova_to_phys(m.domain_of(m.groups[g]), 0x10F000)[0] == 0x10010F000
            assert m.execute("dma 0 0x101000 w").translation.hpa == 0x100101000
            m.undo()
    while m.log:
        m.undo()
        assert to_json(m) == states[len(m.log)]
        assert check(m) == []


def test_set_backend_refused_while_attached(tmp_path):
    m = _desktop_iommufd(tmp_path)
    _run(m, "attach 5", "attach 2")
    before = to_json(m)
    with pytest.raises(CommandError, match=r"group\(s\) 2, 5 are attached .* iommufd: detach them first"):
        m.execute("set backend type1")
    assert to_json(m) == before
    _run(m, "detach 5", "detach 2", "set backend type1")
    assert m.backend == "type1" and m.iommufd is None and to_json(m)["iommufd"] is None
    _run(m, "attach 5")
    assert len(m.vfio.domains) == 1 and m.cdevs(m.groups[5]) == []  # the type1 container again
    assert m.kvm.files == {5: True}


def test_set_backend_by_command_on_plain_desktop():
    m = Machine.from_scenario("desktop")
    assert to_json(m)["iommufd"] is None and m.option_value("backend") == "type1"
    _run(m, "set backend iommufd", "attach 4")
    assert [h["devices"] for h in to_json(m)["iommufd"]["hwpts"]] == [["01:00.0"]]
    m.undo()
    m.undo()
    assert to_json(m)["iommufd"] is None and m.backend == "type1"


# ----------------------------------------------------------------------------- viommu-nested


def test_viommu_nested_boots_with_a_nest_parent():
    m = Machine.from_scenario("viommu-nested")
    assert check(m) == []
    st = to_json(m)
    guest = next(u for u in st["units"] if u["name"] == "dmar0")
    assert (guest["cap"], guest["ecap"]) == ("0x81d2008c222f0686", "0x880000f00f5a")
    (ioas,) = st["iommufd"]["ioas"]
    # QEMU maps all 16 GiB of guest RAM: GPA 0 → HPA host_ram_base.
    assert ioas["mappings"] == [{"iova": "0x0", "size": "0x400000000", "hpa": "0x100000000"}]
    (parent,) = st["iommufd"]["hwpts"]
    assert (parent["kind"], parent["nest_parent"], parent["auto"], parent["devices"]) == ("paging", True, False,
                                                                                         ["02:00.0"])
    assert m.vfio is None  # [vm] configures QEMU's VM: no owner-"vfio" container
    assert m.kvm.files == {-1: True}  # the host device's cdev, behind a unit with ECAP.SC


def test_viommu_nested_attach_map_dma_without_traps():
    m = Machine.from_scenario("viommu-nested")
    (att,) = _run(m, "attach 3")
    hwpts = to_json(m)["iommufd"]["hwpts"]
    parent, nested = hwpts
    assert nested["kind"] == "nested" and nested["parent"] == parent["id"] and nested["devices"] == ["02:00.0"]
    assert parent["devices"] == []  # the device moved to the nested HWPT
    assert ("hwpt-alloc", "issued") in _ops(att, "iommufd")
    dom = next(d for d in to_json(m)["domains"] if d["id"] == nested["domain"])
    assert dom["stage"] == "nested" and dom["parent"] == parent["domain"]
    traps = m.qemu.traps
    (mp,) = _run(m, "map 3 0x100000 16K rw")
    assert m.qemu.traps == traps and not [e for e in mp.events if e.actor == "qemu"]  # first stage: no flush
    (dma,) = _run(m, "dma 3 0x101000 w")
    # IOVA 0x101000 → GPA 0x40101000 (guest first stage) → HPA 0x140101000 (nest parent).
    assert dma.translation.ok and dma.translation.hpa == 0x140101000
    assert "host 02:00.0 on host-dmar1" in dma.message


def test_viommu_nested_set_backend_type1_refuses_device_add():
    m = Machine.from_scenario("viommu-nested")
    with pytest.raises(CommandError, match="device-del first"):
        m.execute("set backend type1")
    _run(m, "device-del", "set backend type1")
    (o,) = _run(m, "device-add")
    assert "Need IOMMUFD backend when x-flts=on" in o.message
    assert not m.qemu.plugged and m.qemu.refusing
    with pytest.raises(CommandError, match="not in the VM"):
        m.execute("dma 3 0x0")
    _run(m, "set backend iommufd", "device-add", "attach 3")
    assert m.qemu.plugged and [h["kind"] for h in to_json(m)["iommufd"]["hwpts"]] == ["paging", "nested"]


# ----------------------------------------------------------------------------- scenario refusals


@pytest.mark.parametrize("old, new, parts", [
    ('backend = "iommufd"', 'backend = "iommfd"', ["vm", "'backend' must be", "did you mean 'iommufd'?"]),
    ('backend = "iommufd"', 'backend = "type1"', ["qemu", "Need IOMMUFD backend when x-flts=on"]),
    ("scalable_mode = true ", "scalable_mode = false", ["qemu", "x-flts is only available in scalable mode"]),
    ('cap = "0x81d2008c222f0686"', 'cap = "0x81d2008c22270686"',  # MGAW 39
     ["qemu", "Scalable mode(flts=on): supported value for aw-bits is: 48"]),
    ('ecap = "0x880000f00f5a"', 'ecap = "0x480080f00f5a"', ["qemu", "x-flts=on reports: SMTS|FLTS", "0x880000f00f5a"]),
    ("fs1gp = true", "fs1gp = false", ["qemu", "'fs1gp' = false", "FS1GP (bit 56) = 1", "0x80d2008c222f0686"]),
])
def test_flts_scenario_refusals(tmp_path, old, new, parts):
    assert old in NESTED
    with pytest.raises(ScenarioError) as exc:
        load(_file(tmp_path, NESTED.replace(old, new, 1)))
    for p in parts:
        assert p in str(exc.value)


@pytest.mark.parametrize("old, new, quote", [
    ("pci_bridge = false", "pci_bridge = true", "Host device downstream to a PCI bridge is unsupported when x-flts=on"),
    # A host unit without ECAP.NEST: the NEST_PARENT allocation fails (-EOPNOTSUPP).
    ('ecap = "0x3ee9e86f050df"', 'ecap = "0x3ee9e82f050df"', "Failed to allocate hwpt: Operation not supported"),
    # fs1gp (QEMU's default) on a host unit without CAP.FS1GP (bit 56).
    ('cap = "0x19ed008c40780c66"', 'cap = "0x18ed008c40780c66"',
     "First stage 1GB large page is unsupported by host IOMMU"),
])
def test_cold_plug_refusals_are_scenario_errors(tmp_path, old, new, quote):
    assert old in NESTED
    with pytest.raises(ScenarioError) as exc:
        Machine.from_scenario(_file(tmp_path, NESTED.replace(old, new, 1)))
    assert "qemu" in str(exc.value) and quote in str(exc.value)


# ----------------------------------------------------------------------------- undo audit


@pytest.mark.parametrize("scenario, lines", [
    ("viommu-nested", ["attach 3", "map 3 0x100000 16K rw", "dma 3 0x101000 w", "unmap 3 0x100000 16K",
                       "flush-queue", "detach 3", "device-del", "set backend type1", "device-add",
                       "set backend iommufd", "device-add", "attach 3", "toggle dmar0 CM"]),
    ("desktop", ["set backend iommufd", "attach 5", "attach 0", "map 5 0x100000 64K", "dma 5 0x100000 w",
                 "unmap 5 0x100000 64K", "detach 0", "detach 5", "set backend type1"]),
])
def test_undo_checkpoints_cover_iommufd(monkeypatch, scenario, lines):
    """Each command's checkpoint saves whatever a checkpoint of everything sees it change
    (tests/test_perf_undo.py's audit), and undo gives back the state JSON."""
    real = Machine._checkpoint

    def checkpoint(self, line):
        full = M._Checkpoint(self, _everything(self), sizable=True, actors=None, records=False)
        return _Audited(real(self, line), full, line)

    monkeypatch.setattr(Machine, "_checkpoint", checkpoint)
    m = Machine.from_scenario(scenario)
    states = [to_json(m)]
    for line in lines:
        try:
            m.execute(line)
        except CommandError:
            continue
        states.append(to_json(m))
    assert len(states) > len(lines) // 2
    while m.log:
        m.undo()
        assert to_json(m) == states[len(m.log)]
