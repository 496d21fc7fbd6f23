"""A Machine written as the newest kernel's debugfs files, byte for byte
(/sys/kernel/debug/iommu/intel/; DESIGN.md "The kernel's own text, in and out").

Each function follows one show() of drivers/iommu/intel/debugfs.c in the NEW copy
(kangharison/linux-study, ≈v7.0-rc; formats in kernel/debugfs.py, which reads them
back), walking what the kernel walks, as the CPU sees memory (u.cpu_read_q /
cpu_read_page: the tables as software wrote them, like machine/state.py):

- iommu_regset: iommu_regs_32[] then iommu_regs_64[] of NEW.  The 2025 patches
  "iommu/vt-d: Removal of Advanced Fault Logging" and the CCMD removal ("...reads the
  Context Command Register unconditionally ... Remove it") dropped AFLOG and CCMD, and
  the virtual-command registers (VCCAP, VCMD, VCRSP) went earlier; REFERENCE-2 §17
  still lists all five (the source wins).  A row is printed for every register the
  kernel lists; its value is the model's register (DmarUnit.mmio_read) for those the
  model has (MODELLED_REGISTERS), 0 for the others (fault-event data/address, PMRs,
  page-request queue, IRTA, MTRRs: the model has none of them), and 0 for GCMD, whose
  fields are write-only (spec, unverified: a read returns 0).  32-bit registers are
  read with readl: the low half.
- dmar_translation_struct: root_tbl_walk → ctx_tbl_walk; scalable layout
  (pasid_dir_walk → pasid_tbl_walk, one row per present PASID entry, val[2]:val[1]:
  val[0]) when RTADDR.SMT is set, else the legacy row with -1 and zeros.  As the kernel
  does, a bus whose root entry (lower half in scalable mode) is not present ends the
  bus: iommu_context_addr() returns NULL for devfn 0 and ctx_tbl_walk returns.
- invalidation_queue: every unit with a queue (IQA set) and ECAP.QI; qi_shift =
  4 + ECAP.SMTS; all QI_LENGTH slots read from the queue in memory at IQA; the status
  column is the driver's qi->desc_status[] word in memory (the model hands every slot
  back as QI_FREE when a submission completes, as qi_submit_sync does).
- <dddd:bb:dd.f>/domain_translation_struct for every device the driver probed (the
  kernel makes the folder in intel_iommu_probe_device), and
  <dddd:bb:dd.f>/<pasid %x>/domain_translation_struct for each other present PASID
  entry with a paging translation (first stage, second stage or nested:
  intel_iommu_debugfs_create_dev_pasid is called for paging domains only).  The file
  of a device with no context entry, or in pass-through, is empty (the kernel prints
  nothing for it); a unit of the segment with TE off prints "DMA Remapping is not
  enabled on".

One kernel, one debugfs: the units of the host kernel (or of `level`); a scenario
with a guest's vIOMMU writes the guest's with level="guest".  Segment 0.

A folder is written only if it does not exist or is empty (an existing dump is not
replaced piecemeal: a device folder left from another scenario would read back as a
device of this one).  Every file and folder is created under DIR by this function;
a name that already exists as a symlink is refused, never followed.
"""

from __future__ import annotations

import os
import stat

from vtdtui.hw import regs
from vtdtui.hw.memory import MemoryError_
from vtdtui.machine.state import pasid_entries, sm_context
from vtdtui.textsafe import clip, printable

PAGE_MASK = ((1 << 64) - 1) & ~0xFFF  # VTD_PAGE_MASK
PTE_XD = 1 << 63  # DMA_FL_PTE_XD: dma_pte_addr() clears it
QI_LENGTH = 256

# iommu_regs_32[] and iommu_regs_64[] of NEW debugfs.c, with the DMAR_*_REG offsets.
REGS_32 = (("VER", 0x0), ("GCMD", 0x18), ("GSTS", 0x1C), ("FSTS", 0x34), ("FECTL", 0x38), ("FEDATA", 0x3C),
           ("FEADDR", 0x40), ("FEUADDR", 0x44), ("PMEN", 0x64), ("PLMBASE", 0x68), ("PLMLIMIT", 0x6C),
           ("ICS", 0x9C), ("PRS", 0xDC), ("PECTL", 0xE0), ("PEDATA", 0xE4), ("PEADDR", 0xE8), ("PEUADDR", 0xEC))
REGS_64 = ((("CAP", 0x8), ("ECAP", 0x10), ("RTADDR", 0x20), ("PHMBASE", 0x70), ("PHMLIMIT", 0x78),
            ("IQH", 0x80), ("IQT", 0x88), ("IQA", 0x90), ("IRTA", 0xB8), ("PQH", 0xC0), ("PQT", 0xC8),
            ("PQA", 0xD0), ("MTRRCAP", 0x100), ("MTRRDEF", 0x108), ("MTRR_FIX64K_00000", 0x120),
            ("MTRR_FIX16K_80000", 0x128), ("MTRR_FIX16K_A0000", 0x130))
           + tuple((f"MTRR_FIX4K_{a}", 0x138 + 8 * i)
                   for i, a in enumerate(("C0000", "C8000", "D0000", "D8000", "E0000", "E8000", "F0000", "F8000")))
           + tuple((f"MTRR_PHYS{kind}{n}", 0x180 + 16 * n + 8 * k) for n in range(10)
                   for k, kind in enumerate(("BASE", "MASK"))))
# The registers of those whose value the model holds (the others print 0).
MODELLED_REGISTERS = frozenset({"VER", "GSTS", "FSTS", "FECTL", "ICS", "CAP", "ECAP", "RTADDR", "IQH", "IQT", "IQA"})

# PASID entry PGTT (pasid.h PASID_ENTRY_PGTT_*) and legacy context TT (CONTEXT_TT_*).
PGTT_FL_ONLY, PGTT_SL_ONLY, PGTT_NESTED = 1, 2, 3
CONTEXT_TT_MULTI_LEVEL, CONTEXT_TT_DEV_IOTLB = 0, 1
IOMMU_NO_PASID = 0
DOMAIN_HEADER = "%-17s\t%-18s\t%-18s\t%-18s\t%-18s\t%-s\n" % ("IOVA_PFN", "PML5E", "PML4E", "PDPE", "PDE", "PTE")


class DebugfsWriteError(ValueError):
    """DIR cannot be written as asked; str() is one line naming DIR."""


def _p(path) -> str:
    return printable(clip(os.fspath(path), 200))


# ----------------------------------------------------------------------------- machine access


def kernel_units(m, level: str | None = None) -> list:
    """The units one kernel sees, in DRHD order (for_each_active_iommu): the host's,
    or the guest's when the machine has no host unit or `level` says so."""
    levels = [m.level_of(n) for n in m.units]
    level = level or ("host" if "host" in levels else (levels[0] if levels else "host"))
    return [u for n, u in m.units.items() if m.level_of(n) == level]


def _page(u, addr: int) -> list[int]:
    """A page as the CPU sees it; pages are memoised per unit for one text (a walk
    reads the root and context pages once per device, as the kernel's pointers do)."""
    addr &= PAGE_MASK
    memo = _MEMO.get(id(u))
    if memo is not None and addr in memo:
        return memo[addr]
    try:
        words = u.cpu_read_page(addr)
    except MemoryError_:
        words = [0] * 512
    if memo is not None:
        memo[addr] = words
    return words


_MEMO: dict[int, dict[int, list[int]]] = {}


class _Snapshot:
    """Memoise page reads while one file's text is built (nothing changes meanwhile)."""

    def __init__(self, units):
        self.ids = [id(u) for u in units]

    def __enter__(self):
        for i in self.ids:
            _MEMO[i] = {}
        return self

    def __exit__(self, *exc):
        for i in self.ids:
            _MEMO.pop(i, None)


def _q(u, addr: int) -> int:
    try:
        return u.cpu_read_q(addr)
    except MemoryError_:
        return 0


def _sm(u) -> bool:
    """readq(DMAR_RTADDR_REG) & DMA_RTADDR_SMT (the register software wrote); the
    kernel sets it iff sm_supported(), which also picks iommu_context_addr's layout."""
    return bool(u.rtaddr & regs.RTADDR_SMT)


def _context(u, bus: int, devfn: int) -> tuple[int, int] | None:
    """iommu_context_addr(iommu, bus, devfn, 0): (lo, hi) of the context entry (the low
    128 bits in scalable mode), None when the root entry (half) is not present."""
    root = _page(u, u.rtaddr)
    entry = root[2 * bus]
    if _sm(u):
        if devfn >= 0x80:
            devfn -= 0x80
            entry = root[2 * bus + 1]
        devfn *= 2
    if not entry & 1:
        return None
    table = _page(u, entry)
    return table[2 * devfn], table[2 * devfn + 1]


def _pasid_tables(u, ctx_lo: int):
    """pasid_dir_walk: (dir_idx, table page) of each present directory entry within
    get_pasid_dir_size(context) = 1 << (((lo >> 9) & 7) + 7)."""
    size = 1 << (((ctx_lo >> 9) & 7) + 7)
    base = ctx_lo & PAGE_MASK
    for first in range(0, size, 512):
        words = _page(u, base + first * 8)
        for j in range(min(512, size - first)):
            if words[j] & 1:   # pasid_pde_is_present
                yield first + j, words[j] & PAGE_MASK


def _pasid_entry(u, ctx_lo: int, pasid: int) -> tuple[int, ...] | None:
    """The eight words of the PASID entry, if its directory entry and it are present."""
    dir_idx, tbl_idx = pasid >> 6, pasid & 0x3F
    if dir_idx >= 1 << (((ctx_lo >> 9) & 7) + 7):
        return None   # beyond the directory (the kernel indexes without a check; nothing there)
    de = _q(u, (ctx_lo & PAGE_MASK) + dir_idx * 8)
    if not de & 1:
        return None
    words = _page(u, de & PAGE_MASK)[8 * tbl_idx: 8 * tbl_idx + 8]
    return tuple(words) if words[0] & 1 else None


# ----------------------------------------------------------------------------- iommu_regset


def _register(u, name: str, off: int, width: int) -> int:
    if name not in MODELLED_REGISTERS:
        return 0
    value = u.mmio_read(off)
    return value & 0xFFFFFFFF if width == 32 else value


def regset_text(m, level: str | None = None) -> str:
    """iommu_regset_show()."""
    out = []
    for u in kernel_units(m, level):
        if not u.base:
            out.append("IOMMU: Invalid base address\n")
            break
        out.append(f"IOMMU: {u.name} Register Base Address: {u.base:x}\n")
        out.append("Name\t\t\tOffset\t\tContents\n")
        for width, table in ((32, REGS_32), (64, REGS_64)):
            for name, off in table:
                out.append(f"{name:<16s}\t0x{off:02x}\t\t0x{_register(u, name, off, width):016x}\n")
        out.append("\n")
    return "".join(out)


# ----------------------------------------------------------------------------- dmar_translation_struct


def _row(bus: int, devfn: int, root: tuple[int, int], ctx: tuple[int, int]) -> str:
    """print_tbl_walk()'s first half: root hi:lo, context hi:lo."""
    return (f"{bus:02x}:{devfn >> 3:02x}.{devfn & 7:x}\t0x{root[1]:016x}:0x{root[0]:016x}\t"
            f"0x{ctx[1]:016x}:0x{ctx[0]:016x}\t")


def translation_struct_text(m, level: str | None = None) -> str:
    """dmar_translation_struct_show()."""
    out = []
    for u in kernel_units(m, level):
        if not u.gsts & regs.GSTS_TES:
            out.append(f"DMA Remapping is not enabled on {u.name}\n")
            continue
        rta = u.rtaddr & PAGE_MASK
        out.append(f"IOMMU {u.name}: Root Table Address: 0x{rta:x}\n")
        out.append("B.D.F\tRoot_entry\t\t\t\tContext_entry\t\t\t\tPASID\tPASID_table_entry\n")
        roots = _page(u, rta)
        for bus in range(256):
            root = (roots[2 * bus], roots[2 * bus + 1])
            for devfn in range(256):
                ctx = _context(u, bus, devfn)
                if ctx is None:
                    break           # `if (!context) return;`
                if not ctx[0] & 1:  # context_present()
                    continue
                head = _row(bus, devfn, root, ctx)
                if not _sm(u):
                    out.append(head + f"{-1:<6d}\t0x{0:016x}:0x{0:016x}:0x{0:016x}\n")
                    continue
                for dir_idx, table in _pasid_tables(u, ctx[0]):
                    words = _page(u, table)
                    for tbl_idx in range(64):
                        val = words[8 * tbl_idx: 8 * tbl_idx + 3]
                        if val[0] & 1:   # pasid_pte_is_present
                            pasid = (dir_idx << 6) + tbl_idx
                            out.append(head + f"{pasid:<6d}\t0x{val[2]:016x}:0x{val[1]:016x}:0x{val[0]:016x}\n")
        out.append("\n")
    return "".join(out)


# ----------------------------------------------------------------------------- invalidation_queue


def _status_words(m, u) -> int | None:
    """Address of the driver's qi->desc_status[] for `u`, if it made one."""
    try:
        driver = m.driver_for(u.name)
    except (KeyError, StopIteration):
        return None
    return getattr(driver, "_qi_status", {}).get(u.name)


def invalidation_queue_text(m, level: str | None = None) -> str:
    """invalidation_queue_show()."""
    out = []
    for u in kernel_units(m, level):
        base = u.iqa & PAGE_MASK
        if not base or not u.ecapf("QI"):   # `if (!qi || !ecap_qis(iommu->ecap)) continue;`
            continue
        smts = bool(u.ecapf("SMTS"))
        shift = 5 if smts else 4            # qi_shift() = DMAR_IQ_SHIFT + !!ecap_smts()
        out.append(f"Invalidation queue on IOMMU: {u.name}\n")
        out.append(f" Base: 0x{base:x}\tHead: {u.iqh >> shift}\tTail: {u.iqt >> shift}\n")
        out.append("Index\t\tqw0\t\t\tqw1\t\t\tqw2\t\t\tqw3\t\t\tstatus\n" if smts
                   else "Index\t\tqw0\t\t\tqw1\t\t\tstatus\n")
        status_at = _status_words(m, u)
        status = _page(u, status_at) if status_at is not None else [0] * 512
        size = QI_LENGTH << shift
        queue = [w for off in range(0, size, 4096) for w in _page(u, base + off)]
        for index in range(QI_LENGTH):
            word = status[index // 2]
            st = (word >> (32 * (index & 1))) & 0xFFFFFFFF
            q = queue[(index << shift) // 8: ((index + 1) << shift) // 8]
            if smts:
                out.append(f"{index:5d}\t{q[0]:016x}\t{q[1]:016x}\t{q[2]:016x}\t{q[3]:016x}\t{st:016x}\n")
            else:
                out.append(f"{index:5d}\t{q[0]:016x}\t{q[1]:016x}\t{st:016x}\n")
        out.append("\n")
    return "".join(out)


# ----------------------------------------------------------------------------- domain_translation_struct


def _walk(u, table: int, level: int, start: int, path: list[int], out: list[str]) -> None:
    """pgtable_walk_level() with dump_page_info()."""
    if level > 5 or level < 1:
        return
    words = _page(u, table)
    size = 1 << (12 + 9 * (level - 1))   # level_to_directory_size()
    for i, val in enumerate(words):
        if not val & 3:                  # dma_pte_present()
            continue
        path[level] = val
        iova = start + i * size
        if val & (1 << 7) or level == 1:  # dma_pte_superpage() || level == 1
            row = f"0x{iova >> 12:013x} |\t0x{path[5]:016x}\t0x{path[4]:016x}\t0x{path[3]:016x}"
            if path[2]:
                row += f"\t0x{path[2]:016x}"
                if path[1]:
                    row += f"\t0x{path[1]:016x}"
            out.append(row + "\n")
        else:
            _walk(u, val & PAGE_MASK & ~PTE_XD, level - 1, iova, path, out)
        path[level] = 0


def domain_translation_struct_text(m, source_id: int, pasid: int = IOMMU_NO_PASID, level: str | None = None) -> str:
    """domain_translation_struct_show(m, info, pasid) for one device (segment 0)."""
    bus, devfn = source_id >> 8 & 0xFF, source_id & 0xFF
    out: list[str] = []
    for u in kernel_units(m, level):
        if not u.gsts & regs.GSTS_TES:
            out.append(f"DMA Remapping is not enabled on {u.name}\n")
            continue
        scalable = _sm(u)
        ctx = _context(u, bus, devfn)
        if ctx is None or not ctx[0] & 1:
            continue
        if scalable:
            val = _pasid_entry(u, ctx[0], pasid)
            if val is None:
                continue
            pgtt, agaw = (val[0] >> 6) & 7, (val[0] >> 2) & 7
            if pgtt == PGTT_FL_ONLY:
                pgd = val[2]
            elif pgtt in (PGTT_SL_ONLY, PGTT_NESTED):
                pgd = val[0]
            else:
                continue
            pgd &= PAGE_MASK
        else:
            if (ctx[0] >> 2) & 3 not in (CONTEXT_TT_MULTI_LEVEL, CONTEXT_TT_DEV_IOTLB):
                continue
            pgd, agaw = ctx[0] & PAGE_MASK, ctx[1] & 7
        out.append(f"Device {0:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 7:x} ")
        out.append(f"with pasid {pasid:x} @0x{pgd:x}\n" if scalable else f"@0x{pgd:x}\n")
        out.append(DOMAIN_HEADER)
        _walk(u, pgd, agaw + 2, 0, [0] * 6, out)
        break   # found: one device sits behind one unit
    return "".join(out)


def _device_name(source_id: int) -> str:
    return f"{0:04x}:{source_id >> 8 & 0xFF:02x}:{source_id >> 3 & 0x1F:02x}.{source_id & 7:x}"


def _paging_pasids(u, source_id: int) -> list[int]:
    """PASIDs other than IOMMU_NO_PASID with a present paging entry (scalable mode)."""
    ce = sm_context(u, source_id) if _sm(u) else None
    if ce is None:
        return []
    return sorted(p for p, _a, pe in pasid_entries(u, ce)
                  if pe.present and p != IOMMU_NO_PASID and pe.pgtt in (PGTT_FL_ONLY, PGTT_SL_ONLY, PGTT_NESTED))


def debugfs_files(m, level: str | None = None) -> dict[str, str]:
    """Relative path (with "/") → text of every file of the kernel's debugfs folder."""
    with _Snapshot(kernel_units(m, level)):
        files = {
            "iommu_regset": regset_text(m, level),
            "dmar_translation_struct": translation_struct_text(m, level),
            "invalidation_queue": invalidation_queue_text(m, level),
        }
        for u in kernel_units(m, level):
            for sid in sorted(m.device_names(u.name)):
                name = _device_name(sid)
                files[f"{name}/domain_translation_struct"] = domain_translation_struct_text(m, sid, level=level)
                for pasid in _paging_pasids(u, sid):
                    files[f"{name}/{pasid:x}/domain_translation_struct"] = \
                        domain_translation_struct_text(m, sid, pasid, level=level)
    return files


# ----------------------------------------------------------------------------- the folder


def _fresh_dir(path: str) -> None:
    """Create `path`, or accept it if it is an empty folder."""
    try:
        os.mkdir(path)
        return
    except FileExistsError:
        pass
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise DebugfsWriteError(f"{_p(path)}: exists and is not a folder")
    if os.listdir(path):
        raise DebugfsWriteError(f"{_p(path)}: folder is not empty (dump --debugfs writes into a new or empty folder)")


def write_debugfs(m, directory: str, level: str | None = None) -> list[str]:
    """Write debugfs_files(m) under `directory` (new or empty); returns the paths
    written.  The texts are all computed before anything is created."""
    from vtdtui.outfile import write_atomic

    files = debugfs_files(m, level)
    try:
        _fresh_dir(directory)
        written = []
        made = {""}
        for rel, text in files.items():
            parts = rel.split("/")
            for i in range(1, len(parts)):
                sub = "/".join(parts[:i])
                if sub not in made:
                    os.mkdir(os.path.join(directory, sub))   # fails on anything already there
                    made.add(sub)
            target = os.path.join(directory, *parts)
            if os.path.lexists(target):
                raise DebugfsWriteError(f"{_p(target)}: appeared while writing (refusing to follow or replace it)")
            write_atomic(target, text)
            written.append(target)
    except OSError as exc:
        raise DebugfsWriteError(f"{_p(exc.filename or directory)}: {exc.strerror or exc}") from None
    return written
