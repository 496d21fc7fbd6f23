"""kernel/sysfs.py and kernel/scenario_toml.py: a machine read from its sysfs.

The fake trees are written with the kernel's own show functions' formats
(drivers/iommu/intel/iommu.c version_show "%d:%d\\n", address_show / cap_show /
ecap_show "%llx\\n", domains_supported_show "%ld\\n", domains_used_show "%d\\n";
drivers/iommu/iommu.c iommu_group_show_type; drivers/pci/pci-sysfs.c pci_config_attr
"0x%06x\\n" / "0x%04x\\n") and with the links laid out as the kernel lays them out:

  sys/class/iommu/dmar0 -> ../../devices/virtual/iommu/dmar0
  sys/devices/virtual/iommu/dmar0/devices/0000:00:02.0 -> ../../../../pci0000:00/0000:00:02.0
  sys/kernel/iommu_groups/0/devices/0000:00:02.0 -> ../../../../devices/pci0000:00/0000:00:02.0
  sys/bus/pci/devices/0000:00:02.0 -> ../../../devices/pci0000:00/0000:00:02.0
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from vtdtui.hw.regs import CAP, ECAP
from vtdtui.kernel import scenario_toml, sysfs
from vtdtui.kernel.sysfs import NoIntelUnit, NotSysfs, read_sysfs, to_json
from vtdtui.limits import LimitError
from vtdtui.machine import Machine
from vtdtui.machine.scenario import parse

# The desktop scenario's units (vtdtui/scenarios/desktop.toml): dmar0 without SC, dmar1 with.
DMAR0 = dict(address=0xFED90000, cap=0x1C0000C40660462, ecap=0x19E2FF0505E)
DMAR1 = dict(address=0xFED91000, cap=0xD2008C40660462, ecap=0xF050DA)

# A pci.ids excerpt written for these tests, in the file's layout (vendor, tab device,
# two tabs subsystem; "C cc" classes with tab subclasses).
PCI_IDS = """\
# test pci.ids
8086  Intel Corporation
\t46a6  Alder Lake-P GT2 [Iris Xe Graphics]
\t\t1028 0b19  Latitude 5430
\t51ed  Alder Lake PCH USB 3.2 xHCI Host Controller
10ec  Realtek Semiconductor Co., Ltd.
\t8168  RTL8111/8168 PCI Express Gigabit Ethernet controller
C 03  Display controller
\t00  VGA compatible controller
C 0c  Serial bus controller
\t03  USB controller
"""


class FakeSysfs:
    """A sysfs tree under `root`, written as the kernel shows it."""

    def __init__(self, root: Path):
        self.root = root
        (root / "sys/class/iommu").mkdir(parents=True, exist_ok=True)

    def write(self, rel: str, text: str | bytes) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return p

    def link(self, rel: str, target: str) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, p)

    def unit(self, name: str, *, address: int, cap: int, ecap: int, version=(1, 0), used: int = 3) -> None:
        base = f"sys/devices/virtual/iommu/{name}"
        nd = CAP.get(cap, "ND")
        for attr, text in (("version", "%d:%d\n" % version), ("address", "%x\n" % address),
                           ("cap", "%x\n" % cap), ("ecap", "%x\n" % ecap),
                           ("domains_supported", "%d\n" % (1 << (4 + 2 * nd))), ("domains_used", "%d\n" % used)):
            self.write(f"{base}/intel-iommu/{attr}", text)
        (self.root / base / "devices").mkdir(parents=True, exist_ok=True)
        self.link(f"sys/class/iommu/{name}", f"../../devices/virtual/iommu/{name}")

    def pci(self, name: str, *, unit: str | None, group: int | None, cls: int | None = None,
            vendor: int | None = None, device: int | None = None, parent: str = "") -> None:
        seg_bus = name[:7]  # "0000:00"
        path = f"pci{seg_bus}/" + (f"{parent}/" if parent else "") + name
        dev = f"sys/devices/{path}"
        (self.root / dev).mkdir(parents=True, exist_ok=True)
        for attr, fmt, v in (("class", "0x%06x\n", cls), ("vendor", "0x%04x\n", vendor),
                             ("device", "0x%04x\n", device)):
            if v is not None:
                self.write(f"{dev}/{attr}", fmt % v)
        self.link(f"sys/bus/pci/devices/{name}", f"../../../devices/{path}")
        if unit is not None:
            self.link(f"sys/devices/virtual/iommu/{unit}/devices/{name}", f"../../../../{path}")
        if group is not None:
            self.link(f"sys/kernel/iommu_groups/{group}/devices/{name}", f"../../../../devices/{path}")

    def group_type(self, gid: int, kind: str = "DMA-FQ", newline: bool = True) -> None:
        self.write(f"sys/kernel/iommu_groups/{gid}/type", kind + ("\n" if newline else ""))


# (bdf, unit, group, class, vendor, device, parent bridge)
DESKTOP_DEVICES = [
    ("0000:00:00.0", "dmar1", 1, 0x060000, 0x8086, 0x4621, ""),
    ("0000:00:02.0", "dmar0", 0, 0x030000, 0x8086, 0x46A6, ""),
    ("0000:00:14.0", "dmar1", 2, 0x0C0330, 0x8086, 0x51ED, ""),
    ("0000:00:14.2", "dmar1", 2, 0x050000, 0x8086, 0x51EF, ""),
    ("0000:00:1c.0", "dmar1", 3, 0x060400, 0x8086, 0x51BC, ""),
    ("0000:02:00.0", "dmar1", 4, 0x020000, 0x10EC, 0x8168, "0000:00:1c.0"),
]


def desktop(root: Path, *, pci_ids: bool = True) -> FakeSysfs:
    fs = FakeSysfs(root)
    fs.unit("dmar0", **DMAR0)
    fs.unit("dmar1", **DMAR1)
    for name, unit, group, cls, vendor, device, parent in DESKTOP_DEVICES:
        fs.pci(name, unit=unit, group=group, cls=cls, vendor=vendor, device=device, parent=parent)
    for gid in range(5):
        fs.group_type(gid, "identity" if gid == 1 else "DMA-FQ")
    if pci_ids:
        fs.write("usr/share/misc/pci.ids", PCI_IDS)
    return fs


def read(root: Path, **kw):
    # No host pci.ids unless the tree has one: the results do not depend on this machine.
    kw.setdefault("pci_ids", tuple(str(p) for p in (root / "usr/share/misc/pci.ids",) if p.exists()))
    return read_sysfs(str(root), **kw)


# --- reading ---------------------------------------------------------------------------

def test_desktop_units_groups_devices(tmp_path):
    m = read(desktop(tmp_path).root)
    assert [u.name for u in m.units] == ["dmar0", "dmar1"]
    u0, u1 = m.units
    assert (u0.address, u0.cap, u0.ecap) == (DMAR0["address"], DMAR0["cap"], DMAR0["ecap"])
    assert (u1.address, u1.cap, u1.ecap) == (DMAR1["address"], DMAR1["cap"], DMAR1["ecap"])
    assert u0.version == "1:0" and u0.domains_used == 3
    assert u0.domains_supported == 1 << (4 + 2 * CAP.get(DMAR0["cap"], "ND"))
    assert u0.devices == ["00:02.0"]
    assert u1.devices == ["00:00.0", "00:14.0", "00:14.2", "00:1c.0", "02:00.0"]
    assert sysfs.highlights(u0)["SC"] == ECAP.get(DMAR0["ecap"], "SC") == 0
    assert sysfs.highlights(u1)["SC"] == 1
    assert [(g.id, g.type, g.devices) for g in m.groups] == [
        (0, "DMA-FQ", ["00:02.0"]), (1, "identity", ["00:00.0"]), (2, "DMA-FQ", ["00:14.0", "00:14.2"]),
        (3, "DMA-FQ", ["00:1c.0"]), (4, "DMA-FQ", ["02:00.0"])]
    assert m.skipped == [] and not any(u.problems for u in m.units)
    gpu = m.devices["00:02.0"]
    assert (gpu.pci_class, gpu.vendor, gpu.device, gpu.group, gpu.unit) == (0x030000, 0x8086, 0x46A6, 0, "dmar0")
    assert gpu.name == "VGA compatible controller: Alder Lake-P GT2 [Iris Xe Graphics]"
    # Known vendor, unknown device: the ids say which (class 05 is not in this pci.ids: the table's name).
    assert m.devices["00:14.2"].name == "RAM memory: Intel Corporation device [8086:51ef]"
    assert m.devices["02:00.0"].name == "Ethernet controller: RTL8111/8168 PCI Express Gigabit Ethernet controller"
    assert m.devices["00:14.0"].class_name == "USB controller"  # from pci.ids' class section


def test_without_pci_ids_class_names_from_the_table(tmp_path):
    m = read(desktop(tmp_path, pci_ids=False).root)
    assert m.pci_ids is None
    assert m.devices["00:02.0"].name == "VGA compatible controller: device [8086:46a6]"
    assert m.devices["00:1c.0"].name == "PCI bridge: device [8086:51bc]"
    # A subclass the table does not hold: the base class's name.
    d = sysfs.Device("00:03.0", pci_class=0x058100, vendor=0x8086, device=0x1234)
    d.class_name = sysfs.PCI_SUBCLASSES.get(d.pci_class >> 8) or sysfs.PCI_CLASSES.get(d.pci_class >> 16)
    assert d.name == "Memory controller: device [8086:1234]"


def test_json_keys(tmp_path):
    doc = to_json(read(desktop(tmp_path).root))
    assert set(doc) == {"schema", "root", "pci_ids", "units", "groups", "devices", "skipped"}
    assert doc["units"][0]["cap"] == hex(DMAR0["cap"]) and doc["units"][0]["highlights"]["SC"] == 0
    assert doc["groups"][2] == {"id": 2, "type": "DMA-FQ", "units": ["dmar1"], "devices": ["00:14.0", "00:14.2"],
                                "problems": []}
    assert doc["devices"][1]["bdf"] == "00:02.0" and doc["devices"][1]["class"] == "0x30000"


def test_old_kernel_dma_type_without_newline(tmp_path):
    fs = desktop(tmp_path)
    os.remove(tmp_path / "sys/kernel/iommu_groups/0/type")
    fs.group_type(0, "DMA", newline=False)  # before "iommu: Add missing new line for dma type" (2019)
    assert read(tmp_path).groups[0].type == "DMA"


def test_other_segments_non_pci_and_non_intel_are_skipped(tmp_path):
    fs = desktop(tmp_path)
    fs.pci("0001:00:00.0", unit="dmar1", group=9, cls=0x010802, vendor=0x144D, device=0xA808)
    fs.link("sys/devices/virtual/iommu/dmar1/devices/INT33C3:00", "../../../../platform/INT33C3:00")
    (tmp_path / "sys/devices/virtual/iommu/ivhd0").mkdir(parents=True)
    fs.link("sys/class/iommu/ivhd0", "../../devices/virtual/iommu/ivhd0")
    m = read(tmp_path)
    whats = {s.what: s.reason for s in m.skipped}
    assert "segment 0001" in whats["device 0001:00:00.0"]
    assert "not a PCI device" in whats["device INT33C3:00"]
    assert "not an Intel VT-d unit" in whats["unit ivhd0"]
    assert [u.name for u in m.units] == ["dmar0", "dmar1"]
    assert 9 in [g.id for g in m.groups] and next(g for g in m.groups if g.id == 9).devices == []


def test_not_a_sysfs_root_and_no_intel_unit(tmp_path):
    with pytest.raises(NotSysfs):
        read_sysfs(str(tmp_path))
    FakeSysfs(tmp_path)
    with pytest.raises(NoIntelUnit):
        read_sysfs(str(tmp_path))


# --- bad parts: unknown, never guessed; bounded --------------------------------------------

CAP_FILE = "sys/devices/virtual/iommu/dmar0/intel-iommu/cap"


@pytest.mark.parametrize("content, why", [
    (b"0x1c0000c40660462\n", "not the kernel's %llx"),   # the kernel prints no 0x
    (b"zz\n", "not the kernel's %llx"),
    (b"1c0000c40660462", "does not end in a newline"),
    (b"\xff\xfe\x00\x01\n", "not text"),
    (b"1\n2\n", "more than one line"),
    (b"1" * 5000, "MAX_ATTR_BYTES"),
])
def test_garbage_cap_is_unknown(tmp_path, content, why):
    desktop(tmp_path)
    (tmp_path / CAP_FILE).write_bytes(content)
    m = read(tmp_path)
    assert m.units[0].cap is None and m.units[0].ecap == DMAR0["ecap"]
    assert any(why in p for p in m.units[0].problems), m.units[0].problems
    text = scenario_toml.build(m, name="t", origin="test")
    assert "# unit dmar0 left out: its cap is unknown" in text
    sc = parse(text.encode(), "<t>")  # the rest still makes a scenario
    assert [u.name for u in sc.units] == ["dmar1"] and 0 not in [g.id for g in sc.groups]


def test_missing_files(tmp_path):
    desktop(tmp_path)
    os.remove(tmp_path / CAP_FILE)
    os.remove(tmp_path / "sys/devices/pci0000:00/0000:00:02.0/vendor")
    os.remove(tmp_path / "sys/kernel/iommu_groups/3/type")
    m = read(tmp_path)
    assert m.units[0].cap is None and "No such file" in m.units[0].problems[0]
    gpu = m.devices["00:02.0"]
    assert gpu.vendor is None and gpu.device == 0x46A6 and gpu.name == "VGA compatible controller"
    assert next(g for g in m.groups if g.id == 3).type is None


def test_dev_zero_and_fifo_and_escaping_links_are_refused_at_once(tmp_path):
    desktop(tmp_path)
    os.remove(tmp_path / CAP_FILE)
    os.symlink("/dev/zero", tmp_path / CAP_FILE)                               # absolute: out of the tree
    ecap = tmp_path / "sys/devices/virtual/iommu/dmar0/intel-iommu/ecap"
    os.remove(ecap)
    os.symlink("../" * 12 + "dev/zero", ecap)                                   # relative, climbing out
    address = tmp_path / "sys/devices/virtual/iommu/dmar1/intel-iommu/address"
    os.remove(address)
    os.mkfifo(address)                                                          # no writer: must not block
    start = time.monotonic()
    m = read(tmp_path)
    assert time.monotonic() - start < 5
    assert m.units[0].cap is None and m.units[0].ecap is None and m.units[1].address is None
    problems = " ".join(m.units[0].problems + m.units[1].problems)
    assert "absolute link leads out" in problems and "out of the tree" in problems
    assert "not a regular file" in problems


def test_live_root_refuses_devices():
    # With ROOT "/", /dev/zero is inside the tree: the file type refuses it, not the path.
    tree = sysfs._Tree("/")
    with pytest.raises(sysfs._Outside, match="not a regular file"):
        tree.read_attr("dev/zero")
    with pytest.raises(sysfs._Outside):
        tree.resolve("proc/self/../../../../dev/zero/nothing")


def test_symlink_loops_end(tmp_path):
    fs = desktop(tmp_path)
    os.remove(tmp_path / "sys/bus/pci/devices/0000:00:02.0")
    fs.link("sys/bus/pci/devices/0000:00:02.0", "0000:00:02.0")                  # a link to itself
    fs.link("sys/class/iommu/dmar9", "../../devices/virtual/iommu/dmar9/x")
    fs.link("sys/devices/virtual/iommu/dmar9", "dmar9/dmar9")                    # a growing loop
    m = read(tmp_path)
    gpu = m.devices["00:02.0"]
    assert gpu.pci_class is None and any("more than 40 links" in p for p in gpu.problems)
    assert any(s.what == "unit dmar9" for s in m.skipped)


def test_names_read_are_never_markup_or_toml(tmp_path):
    fs = desktop(tmp_path)
    evil = '8086  Intel\n\t46a6  GPU "x" \\ [b]red[/b] \x1b[2J\n'
    fs.write("usr/share/misc/pci.ids", evil)
    m = read(tmp_path)
    text = scenario_toml.build(m, name="t", origin="a\nname = \"evil\"")
    sc = parse(text.encode(), "<t>")
    assert sc.name == "t"
    assert next(d.name for g in sc.groups for d in g.devices if d.bdf == "00:02.0") == m.devices["00:02.0"].name
    assert "\x1b" in m.devices["00:02.0"].name  # kept as read; escaped where shown


def test_ten_thousand_devices_bounded(tmp_path):
    fs = FakeSysfs(tmp_path)
    fs.unit("dmar0", **DMAR1)
    unit_devices = tmp_path / "sys/devices/virtual/iommu/dmar0/devices"
    groups = tmp_path / "sys/kernel/iommu_groups"
    for g in range(100):
        (groups / str(g) / "devices").mkdir(parents=True)
    for i in range(10_000):
        bus, slot, fn = i >> 8, (i >> 3) & 0x1F, i & 7
        name = f"0000:{bus:02x}:{slot:02x}.{fn}"
        os.symlink(f"../../../../pci0000:00/{name}", unit_devices / name)
        if i % 100 < 10:  # ten in each of 100 groups; the others in none
            os.symlink(f"../../../../devices/pci0000:00/{name}", groups / str(i // 100) / "devices" / name)
    start = time.monotonic()
    m = read_sysfs(str(tmp_path), pci_ids=())
    assert time.monotonic() - start < 20  # some 0.5 s; generous for a loaded CI machine
    assert len(m.devices) == 10_000 and [len(g.devices) for g in m.groups] == [10] * 100
    assert sum(s.reason.startswith("in no group") for s in m.skipped) == 9_000
    assert all(d.pci_class is None for d in m.devices.values())  # no attributes: unknown, not invented


def test_directory_listing_stops_at_its_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(sysfs, "MAX_DIR_ENTRIES", 50)
    fs = FakeSysfs(tmp_path)
    fs.unit("dmar0", **DMAR1)
    for i in range(51):
        fs.link(f"sys/devices/virtual/iommu/dmar0/devices/0000:01:{i >> 3:02x}.{i & 7}", "nowhere")
    with pytest.raises(LimitError, match="more than 50 entries"):
        read_sysfs(str(tmp_path), pci_ids=())


# --- the scenario TOML ------------------------------------------------------------------

def test_round_trip_read_toml_scenario(tmp_path):
    m = read(desktop(tmp_path).root)
    text, sc = scenario_toml.load(m, name="live", origin="test")
    assert text.startswith("# vtdtui scenario read from the sysfs of test")
    assert [(u.name, u.base, u.cap, u.ecap, u.haw) for u in sc.units] == [
        ("dmar0", DMAR0["address"], DMAR0["cap"], DMAR0["ecap"], 39),
        ("dmar1", DMAR1["address"], DMAR1["cap"], DMAR1["ecap"], 39)]
    want = {}
    for name, unit, group, *_ in DESKTOP_DEVICES:
        want.setdefault(group, (unit, []))[1].append(name[5:])
    assert {g.id: (g.unit, [d.bdf for d in g.devices]) for g in sc.groups} == want
    assert all(not g.attached for g in sc.groups) and sc.owner == "vfio" and sc.has_vm
    assert scenario_toml.build(m, name="live", origin="test") == text  # deterministic
    path = tmp_path / "live.toml"
    path.write_text(text)
    machine = Machine.from_scenario(str(path))
    assert machine.groups[0].unit == "dmar0" and machine.groups[0].bdfs == ["00:02.0"]
    assert ECAP.get(machine.units["dmar0"].ecap, "SC") == 0
    machine.execute("attach 0")  # the GPU to the VM, on the unit without snoop control


def test_group_across_units_is_left_out(tmp_path):
    fs = desktop(tmp_path)
    fs.link("sys/kernel/iommu_groups/4/devices/0000:00:02.0", "../../../../devices/pci0000:00/0000:00:02.0")
    os.remove(tmp_path / "sys/kernel/iommu_groups/0/devices/0000:00:02.0")
    m = read(tmp_path)
    text, sc = scenario_toml.load(m, name="t", origin="test")
    assert "# group 4 left out: its devices sit behind different units (dmar0, dmar1)" in text
    assert 4 not in [g.id for g in sc.groups]


def test_no_group_no_scenario(tmp_path):
    fs = FakeSysfs(tmp_path)
    fs.unit("dmar0", **DMAR0)
    fs.pci("0000:00:02.0", unit="dmar0", group=None, cls=0x030000, vendor=0x8086, device=0x46A6)
    m = read_sysfs(str(tmp_path), pci_ids=())
    assert any("in no group" in s.reason for s in m.skipped)
    with pytest.raises(scenario_toml.TomlError, match="no IOMMU group"):
        scenario_toml.build(m, name="t", origin="test")


def test_toml_string_escapes():
    import tomllib

    for s in ['a"b', "back\\slash", "new\nline", "\x1b[2J", "tab\t", "\x7f", "é ü"]:
        assert tomllib.loads(f"x = {scenario_toml.toml_string(s)}")["x"] == s
    assert tomllib.loads(f"x = {scenario_toml.toml_string(chr(0xDC80))}")["x"] == "\ufffd"
