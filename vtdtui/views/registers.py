"""The selected unit: capability badges, mode, CAP/ECAP by field, GSTS, RTADDR and
IQA (scalable mode: RTADDR.SMT, 256-bit descriptors IQA.DW), fault status."""

from __future__ import annotations

from ..hw import regs
from ..hw.faults import reason_string
from ..machine import Machine
from ..machine.state import sm_mode
from .style import Line, badge, plain

# The bits the stories turn on; each toggles from a key or the palette.
BADGES = (("CM", "CAP"), ("C", "ECAP"), ("SC", "ECAP"), ("RWBF", "CAP"), ("PSI", "CAP"), ("QI", "ECAP"))
GSTS_BITS = (("TES", regs.GSTS_TES), ("RTPS", regs.GSTS_RTPS), ("WBFS", regs.GSTS_WBFS), ("QIES", regs.GSTS_QIES))
FSTS_BITS = (("PFO", regs.FSTS_PFO), ("PPF", regs.FSTS_PPF), ("IQE", regs.FSTS_IQE), ("ICE", regs.FSTS_ICE),
             ("ITE", regs.FSTS_ITE))


def unit_badges(m: Machine, name: str) -> Line:
    u = m.units[name]
    segs = []
    for field, reg in BADGES:
        value = u.capf(field) if reg == "CAP" else u.ecapf(field)
        segs += [badge(field, bool(value)), (" ", "")]
    return tuple(segs)


def mode_line(u) -> Line:
    """Legacy or scalable mode, and what the unit offers for the latter: the kernel runs
    scalable mode iff intel_iommu_sm && ECAP.SMTS (sm_supported()); the hardware does
    iff the root table it latched has RTADDR.SMT."""
    sm = sm_mode(u)
    stages = " ".join(n for n in ("FLTS", "SLTS", "NEST", "SMPWC") if u.ecapf(n)) or "no stage"
    if sm:
        return ((" mode ", "key"), ("scalable", "on"), (f" · {stages} · PSS {u.ecapf('PSS')}", "dim"))
    why = "ECAP.SMTS=1 but the kernel runs legacy mode (intel_iommu=sm_off)" if u.ecapf("SMTS") else "no ECAP.SMTS"
    return ((" mode ", "key"), ("legacy", ""), (f" · {why}", "dim"))


def _bits(value: int, names) -> str:
    set_ = [n for n, bit in names if value & bit]
    return " ".join(set_) if set_ else "-"


def registers(m: Machine, name: str) -> list[Line]:
    u = m.units[name]
    out: list[Line] = []
    units = [("units ", "dim")]
    for n in m.units:
        units.append((f"▶{n}" if n == name else f" {n}", "sel" if n == name else "dim"))
        units.append(("  ", ""))
    units.append(("([ ] to switch)", "dim"))
    out.append(tuple(units))
    level = m.level_of(name)
    out.append(((name, "head"), (f" · {level} · base {u.base:#x} · {u.mgaw_bits}-bit MGAW", "dim"),
                (" · emulated by QEMU" if u.emulated_by_qemu else "", "dim")))
    out.append(unit_badges(m, name))
    out.append(((" GSTS ", "key"), (f"{u.gsts:#010x} ", "addr"), (_bits(u.gsts, GSTS_BITS), "")))
    rt_line = ((" RTADDR ", "key"), (f"{u.rta_latched:#x} ", "addr"),
                (f"SMT={int(bool(u.rta_latched & regs.RTADDR_SMT))}  ", "on" if u.rta_latched & regs.RTADDR_SMT else "dim"),
                ("IQA ", "key"), (f"{u.iqa:#x} ", "addr"),
                (f"DW={int(bool(u.iqa & regs.IQA_DW))}", "on" if u.iqa & regs.IQA_DW else "dim"),
                (" (256-bit descriptors)" if u.iqa & regs.IQA_DW else "", "dim"))
    fsts_tok = "bad" if u.fsts else ""
    fsts = u.mmio_read(regs.FSTS_REG)  # as software reads it: FRI (15:8) included
    out.append(((" FSTS ", "key"), (f"{fsts:#010x} ", "addr"), (_bits(fsts, FSTS_BITS), fsts_tok),
                (f" FRI {fsts >> 8 & 0xFF}", "dim")))
    out.append(mode_line(u))
    out.append(rt_line)
    faults = [f for f in u.faults if not f.suppressed_by_fpd]
    if faults:
        out.append(plain(f" faults: {len(faults)} recorded, newest last", "bad"))
        for f in faults[-3:]:
            out.append(plain(f"  {f.bdf} {f.access} {f.iova:#x} reason {f.reason:#x} {reason_string(f.reason)}", "bad"))
        printed = next((f for f in reversed(faults) if f.log), None)
        if printed is not None:
            # What the kernel's dmar_fault() printed for the newest fault it handled, in
            # dmesg order (the walk dump only with [kernel] dmar_debug).
            out.append(plain(" kernel log of the newest handled fault:", "dim"))
            out += [plain(f"  {line}", "bad" if "] Request device [" in line else "dim") for line in printed.log]
    for layout, value in ((regs.CAP, u.cap), (regs.ECAP, u.ecap)):
        out.append(((f" {layout.name} ", "head"), (f"{value:#018x}", "addr")))
        for f in layout:
            v = f.get(value)
            tok = "on" if f.width == 1 and v else ("dim" if f.width == 1 else "")
            out.append(((f"  {f.name:<7}", "key"), (f"{v:>#6x} " if f.width > 1 else f"{v:>6} ", tok),
                        (f"{f.bits:>5}  ", "dim"), (f.meaning, "dim")))
    return out
