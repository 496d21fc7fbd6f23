"""The kernel's own text, read and written: one module per format.

- dmesg.py: a kernel log (dmesg, `dmesg -T`, journalctl, syslog): DMAR fault reports of
  every kernel era, the `DRHD: handling fault status reg` lines, the
  `dmar_fault_dump_ptes` dumps, the DMAR unit lines (through vtdtui/decode.py's reader)
  and the `Adding to iommu group N` lines;
- faults.py: what a fault reason code means and what usually causes it;
- debugfs.py: the debugfs files `iommu_regset`, `dmar_translation_struct` (legacy and
  scalable layouts), `domain_translation_struct` (global, per device, per PASID) and
  `invalidation_queue` (128- and 256-bit), every layout of REFERENCE-2 §17;
- debugfs_write.py: the same files written from a machine, as the newest kernel does
  (`vtdtui dump --debugfs DIR`);
- sysfs.py: a sysfs root (`/sys/class/iommu`, `/sys/kernel/iommu_groups`, PCI ids):
  the user's own units, groups and devices (`vtdtui import ROOT`, `--scenario live`);
- scenario_toml.py: a scenario file written from what sysfs.py read.

Layer "kernel text" (DESIGN.md, Layers): below replay, tui and cli; it may use hw, sw,
machine and views, never textual.  Readers never execute or open anything they read.
"""
