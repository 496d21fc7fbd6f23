"""`vtdtui translate BDF IOVA [r|w]`: one request's walk, step by step, as data
(DESIGN.md, "The kernel's own text, in and out"; issue 18 item 5).

The walk is the unit's own: the same functions DmarUnit.translate() walks with
(read_context / walk in legacy mode; read_sm_context, read_pasid_entry, fs_walk and
_ss_walk in scalable mode), fed a reader that notes every table read, so each step is
an entry the unit really read, at the address it read it, with the value it saw
(memory for a non-coherent unit, the CPU's cache for a coherent one).  Pure: no cache
is filled, no fault recorded, no A/D bit set.

What the caches hold is left out on purpose: this is what the tables say.  A DMA of
the same address gives the same answer unless a stale context-cache or IOTLB entry
answers first (the TUI's Caches pane shows those).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vtdtui.hw import faults as fr
from vtdtui.hw.entries import (
    TT_NAMES, TT_PASS_THROUGH, ContextEntry, RootEntry, bdf_str,
)
from vtdtui.hw.memory import MemoryError_
from vtdtui.hw.sm import SS_CODES_SM
from vtdtui.hw.sm_entries import (
    FL_A, FL_D, FL_PS, PASID_PDE_SHIFT, PASID_PTE_MASK, PGTT_FL_ONLY, PGTT_NESTED, PGTT_PT, PGTT_SL_ONLY,
    PasidDirEntry, PasidEntry, SmContextEntry, SmRootEntry, canonical,
)
from vtdtui.hw.unit import DmarUnit
from vtdtui.kernel.dmesg import describe_pte

IOVA_LIMIT = 1 << 64
PASID_LIMIT = 1 << 20
LEAF_SIZES = {1: "4 KiB", 2: "2 MiB", 3: "1 GiB"}


# ------------------------------------------------------------------------ records
@dataclass
class Step:
    """One entry the unit read: `words` as read (low word first), None when the read
    failed (the address is beyond memory)."""

    what: str  # "root entry", "context entry", "PASID dir entry", "PASID entry", "L4 (first stage)" ...
    address: int
    words: tuple[int, ...] | None
    level: int | None = None  # paging level of the table the entry is in; None above the page tables
    stage: str | None = None  # "first" | "second" for paging entries
    says: str = ""
    cpu_words: tuple[int, ...] | None = None  # the CPU's view, when it differs from what the unit read
    unknown: bool = False  # an imported machine: the input did not hold this entry (read as 0)
    given: bool = False  # not read by the unit: the input gave it (a domain_translation_struct's table)

    @property
    def entry(self) -> int | None:
        """The entry as one number (word i is bits 64i+63:64i)."""
        if self.words is None:
            return None
        return sum(w << (64 * i) for i, w in enumerate(self.words))

    def to_json(self) -> dict:
        out = {"level": self.level, "entry": _entry_hex(self.words), "address": f"0x{self.address:x}",
               "what": self.what, "says": self.says}
        if self.words is not None and len(self.words) > 1:
            out["words"] = [f"0x{w:016x}" for w in self.words]
        if self.stage is not None:
            out["stage"] = self.stage
        if self.cpu_words is not None:
            out["cpu_words"] = [f"0x{w:016x}" for w in self.cpu_words]
        if self.unknown:
            out["unknown"] = True
        if self.given:
            out["given"] = True
        return out


def _entry_hex(words: tuple[int, ...] | None) -> str | None:
    if words is None:
        return None
    value = sum(w << (64 * i) for i, w in enumerate(words))
    return f"0x{value:0{16 * len(words)}x}"


@dataclass
class Walk:
    """The outcome of translate(): the steps, then a translation or a fault."""

    unit: str
    source_id: int
    iova: int
    write: bool
    pasid: int | None  # the request's PASID; None for a request without PASID
    mode: str  # "legacy" | "scalable" | "off" (GSTS.TES=0)
    steps: list[Step] = field(default_factory=list)
    ok: bool = False
    hpa: int | None = None
    r: bool | None = None
    w: bool | None = None
    leaf_level: int | None = None  # 1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB; None without a leaf (pass-through)
    snp: bool = False
    did: int | None = None
    pgtt: int | None = None
    pasid_used: int | None = None  # scalable mode: the PASID entry used (RID_PASID without a PASID)
    reason: int | None = None
    recorded: bool = True  # False: FPD=1 suppresses the fault, nothing is recorded or printed
    notes: list[str] = field(default_factory=list)
    unit_level: str = "host"
    device: str | None = None

    @property
    def bdf(self) -> str:
        return bdf_str(self.source_id)

    @property
    def message(self) -> str | None:
        """The line dmar_fault_do_one() prints for this fault (FRCD holds the page)."""
        if self.reason is None:
            return None
        return fr.log_line(self.source_id, self.iova & ~0xFFF, self.reason, self.write, self.pasid)

    def to_json(self) -> dict:
        fault = None
        if not self.ok:
            fault = {"reason": self.reason, "message": self.message,
                     "reason_text": fr.reason_string(self.reason), "recorded": self.recorded}
        return {
            "bdf": self.bdf,
            "iova": f"0x{self.iova:x}",
            "result": "translated" if self.ok else "fault",
            "hpa": None if self.hpa is None else f"0x{self.hpa:x}",
            "r": self.r,
            "w": self.w,
            "level": self.leaf_level,
            "steps": [s.to_json() for s in self.steps],
            "fault": fault,
            # Extensions.
            "access": "write" if self.write else "read",
            "unit": self.unit,
            "unit_level": self.unit_level,
            "device": self.device,
            "mode": self.mode,
            "pasid": self.pasid,
            "pasid_used": self.pasid_used,
            "did": self.did,
            "pgtt": self.pgtt,
            "snp": self.snp if self.ok else None,
            "notes": list(self.notes),
        }


# ------------------------------------------------------------------------ reads
class _Reads:
    """A table reader that notes each 64-bit read, tagged with the current phase."""

    def __init__(self, read):
        self.read = read
        self.log: list[tuple[object, int, int | None]] = []
        self.phase: object = None

    def __call__(self, addr: int) -> int:
        try:
            value = self.read(addr)
        except MemoryError_:
            self.log.append((self.phase, addr, None))
            raise
        self.log.append((self.phase, addr, value))
        return value

    def take(self, n: int) -> tuple[int, tuple[int, ...] | None] | None:
        """The next entry of `n` words: (address, words or None if a read failed)."""
        if not self.log:
            return None
        chunk, self.log = self.log[:n], self.log[n:]
        values = [v for _p, _a, v in chunk]
        words = None if None in values or len(values) < n else tuple(values)
        return chunk[0][1], words


def _cpu_view(unit: DmarUnit, step: Step) -> None:
    """Note the CPU's view of the entry when the unit read something else (a line not
    yet flushed to a non-coherent unit, a posted write under CAP.RWBF)."""
    if step.words is None:
        return
    # Guest RAM seen by a host unit (foreign_ram: a nested walk's first-stage tables)
    # is in the guest world's cache, not the host's.
    read = unit._foreign_reader(unit.cpu_read_q, True) if unit.foreign_ram else unit.cpu_read_q
    try:
        cpu = tuple(read(step.address + 8 * i) for i in range(len(step.words)))
    except MemoryError_:
        return
    if cpu != step.words:
        step.cpu_words = cpu


# ------------------------------------------------------------------------ words
def _legacy_root_says(lo: int, hi: int) -> str:
    r = RootEntry.decode(lo, hi)
    return f"present, context table {r.ctp:#x}" if r.present else "NOT present (P=0)"


def _legacy_context_says(lo: int, hi: int) -> str:
    ce = ContextEntry.decode(lo, hi)
    if not ce.present:
        return "NOT present (P=0)" + (", FPD=1" if ce.fpd else "")
    parts = [f"DID {ce.did}", f"TT {ce.tt} ({TT_NAMES[ce.tt]})", f"AW {ce.aw} ({ce.levels}-level, {ce.agaw}-bit)"]
    if ce.tt != TT_PASS_THROUGH:
        parts.append(f"SLPTPTR {ce.slptptr:#x}")
    if ce.fpd:
        parts.append("FPD=1")
    return ", ".join(parts)


def _sm_root_says(lo: int, hi: int, devfn: int) -> str:
    r = SmRootEntry.decode(lo, hi)
    upper = devfn >= 0x80
    present, ctp = r.half(devfn)
    half = "upper (UP/UCTP)" if upper else "lower (LP/LCTP)"
    state = f"present, context table {ctp:#x}" if present else "NOT present"
    return f"devfn {devfn:#04x} uses the {half} half: {state}"


def _sm_context_says(ce: SmContextEntry) -> str:
    if not ce.present:
        return "NOT present (P=0)" + (", FPD=1" if ce.fpd else "")
    flags = [n for n, on in (("DTE", ce.dte), ("PASIDE", ce.paside), ("PRE", ce.pre), ("FPD", ce.fpd)) if on]
    return (f"PASID dir {ce.pasiddirptr:#x}, PDTS {ce.pdts} (PASIDs below {ce.max_pasid}), "
            f"RID_PASID {ce.rid_pasid}" + (", " + " ".join(flags) if flags else ""))


def _dir_says(de: PasidDirEntry, pasid: int) -> str:
    head = f"PASID {pasid} >> 6 = index {pasid >> PASID_PDE_SHIFT}: "
    if not de.present:
        return head + "NOT present (P=0)"
    return head + f"PASID table {de.table:#x}" + (", FPD=1" if de.fpd else "")


def _pasid_says(pe: PasidEntry, pasid: int) -> str:
    head = f"PASID {pasid} & 0x3f = index {pasid & PASID_PTE_MASK}: "
    if not pe.present:
        return head + "NOT present (P=0)"
    parts = [f"PGTT {pe.pgtt} ({pe.pgtt_name})", f"DID {pe.did}"]
    if pe.pgtt in (PGTT_FL_ONLY, PGTT_NESTED):
        parts.append(f"FSPTPTR {pe.fsptptr:#x} ({pe.fs_levels}-level)")
    if pe.pgtt in (PGTT_SL_ONLY, PGTT_NESTED):
        parts.append(f"SSPTPTR {pe.ssptptr:#x} (AW {pe.aw}, {pe.ss_levels}-level)")
    parts += [n for n, on in (("PGSNP", pe.pgsnp), ("PWSNP", pe.pwsnp), ("SRE", pe.sre), ("WPE", pe.wpe),
                              ("FPD", pe.fpd)) if on]
    return head + ", ".join(parts)


# ------------------------------------------------------------------------ the walk
def translate(unit: DmarUnit, source_id: int, iova: int, write: bool = False, pasid: int | None = None, *,
              unit_level: str = "host", device: str | None = None, tables: dict | None = None) -> Walk:
    """The walk `unit` makes for a DMA `write` (else read) of `iova` by `source_id`
    (with `pasid`, a request with PASID), without its side effects.

    `tables` (an imported machine's `domain_tables`: (unit, source id, PASID or None)
    → kernel/importer.py DomainTable): when the walk stops at a root, context, PASID
    directory or PASID entry the input did not hold, it goes on from the page table
    the device's domain_translation_struct gives, and the steps say so."""
    if not 0 <= iova < IOVA_LIMIT:
        raise ValueError(f"IOVA {iova:#x} is wider than 64 bits")
    if pasid is not None and not 0 <= pasid < PASID_LIMIT:
        raise ValueError(f"PASID {pasid:#x} does not fit in 20 bits")
    mode = "off" if not unit.translation_enabled else "scalable" if unit.sm_active else "legacy"
    walk = Walk(unit.name, source_id, iova, write, pasid, mode, unit_level=unit_level, device=device)
    if mode == "off":
        # DmarUnit.translate: with GSTS.TES=0 the address passes through untranslated.
        walk.ok, walk.hpa, walk.r, walk.w = True, iova, True, True
        walk.notes.append("translation disabled (GSTS.TES=0): the address passes through")
    elif mode == "scalable":
        _walk_sm(unit, walk)
    else:
        _walk_legacy(unit, walk)
    known = getattr(unit.mem, "known", None)  # kernel/importer.py KnownMem: the words the input held
    _mark_unknown(unit, walk.steps, known)
    if known is not None and tables and _stopped_at_unknown(walk, known):
        table = _table_for(unit, walk, tables)
        if table is not None:
            upper = len(walk.steps)
            _walk_from_table(unit, walk, table)
            _mark_unknown(unit, walk.steps[upper:], known)
    if mode != "off":
        walk.notes += _stale_caches(unit, walk)
    return walk


def _mark_unknown(unit: DmarUnit, steps: list[Step], known) -> None:
    for step in steps:
        _cpu_view(unit, step)
        if known is not None and step.words is not None:
            step.unknown = any(step.address + 8 * i not in known for i in range(len(step.words)))


# ------------------------------------------------------------------------ imported: from domain_translation_struct
def _stopped_at_unknown(walk: Walk, known) -> bool:
    """The walk faulted above the page tables, at an entry whose low word (its P bit)
    the input did not hold: the zero read there is what stopped it.  (A scalable-mode
    context entry read from debugfs lacks bits 255:128 only: a fault it gives is its own.)"""
    if walk.ok or walk.mode == "off" or not walk.steps:
        return False
    last = walk.steps[-1]
    return (last.level is None and last.words is not None and last.address not in known
            and not any(s.level is not None for s in walk.steps))


def _table_for(unit: DmarUnit, walk: Walk, tables: dict):
    if walk.mode == "legacy":
        p = None
    else:
        # A request without PASID uses RID_PASID, which Linux sets to IOMMU_NO_PASID (0)
        # (context_set_sm_rid2pasid(context, IOMMU_NO_PASID)); the per-device file is PASID 0.
        p = walk.pasid_used if walk.pasid_used is not None else walk.pasid if walk.pasid is not None else 0
    # A table of a device whose unit the input does not say is keyed by None (the
    # caller chose the unit: translate --unit).
    return tables.get((unit.name, walk.source_id, p)) or tables.get((None, walk.source_id, p))


def _walk_from_table(unit: DmarUnit, walk: Walk, table) -> None:
    """Go on from `table` (kernel/importer.py DomainTable) after the unit's walk
    stopped at an entry the input did not hold."""
    stopped = walk.steps[-1]
    walk.notes.append(f"the unit's walk stops at the {stopped.what}, which the input does not hold (read as 0: "
                      f"fault {walk.reason:#04x}); it goes on from the table {table.where} gives")
    walk.reason, walk.recorded = None, True
    assumed = table.levels is None
    levels = 4 if assumed else table.levels
    missing = "context entry" if walk.mode == "legacy" or stopped.what in ("root entry", "context entry") \
        else "PASID entry"
    if walk.mode == "scalable" and missing == "context entry":
        missing = "context and PASID entries"
    walk.steps.append(Step("from domain_translation_struct", table.pgd, None, stage=table.stage, given=True,
                           says=f"table {table.pgd:#x} ({levels}-level{', assumed: no row printed' if assumed else ''}"
                                f", {table.stage} stage: {table.stage_from}), {missing} not known"))
    if walk.mode == "legacy":
        aw = levels - 2
        ce = ContextEntry.decode(*ContextEntry.encode(did=0, aw=aw, slptptr=table.pgd))
        width = min(unit.mgaw_bits, ce.agaw)
        if walk.iova >> width:
            walk.notes.append(f"IOVA beyond {width} bits (min of MGAW {unit.mgaw_bits} and the {ce.agaw}-bit AGAW)")
            _fault(walk, fr.ADDR_BEYOND_MGAW)
            return
        reads = _Reads(unit.hw_read_q)
        wr = unit.walk(ce, walk.iova, walk.write, reads)
        _paging_steps(walk, reads, {None: ("second", levels, "")})
        _finish(walk, wr, False, snp=wr.snp)
        return
    pe = _pasid_entry_of(table, levels)
    built = table.pasid_entry is None or pe.pgtt not in (PGTT_FL_ONLY, PGTT_SL_ONLY, PGTT_NESTED)
    if built:
        walk.notes.append("the PASID entry is not known: its fields other than the table, the stage and the "
                          "levels are taken as 0 (DID, PWSNP, PGSNP, WPE, SRE)")
        pe = _pasid_entry_of(table, levels, read=False)
    else:
        walk.notes.append("the PASID entry's val[0..2] as dmar_translation_struct printed them (where it lies is "
                          "not known)")
    _walk_pasid_entry(unit, walk, pe, pe.fpd)
    if built:
        walk.did = None


def _pasid_entry_of(table, levels: int, read: bool = True) -> PasidEntry:
    """The PASID entry read for the table's device (val[0..2]), else one built from the
    table: FSPTPTR (FLPM 1 for 5 levels) or SSPTPTR (AW = levels - 2)."""
    if read and table.pasid_entry is not None:
        return PasidEntry.decode(list(table.pasid_entry) + [0] * (8 - len(table.pasid_entry)))
    if table.stage == "first":
        words = PasidEntry.encode(pgtt=PGTT_FL_ONLY, did=0, fsptptr=table.pgd, flpm=1 if levels == 5 else 0,
                                  aw=levels - 2)
    else:
        words = PasidEntry.encode(pgtt=PGTT_SL_ONLY, did=0, ssptptr=table.pgd, aw=levels - 2)
    return PasidEntry.decode(words)


def _stale_caches(unit: DmarUnit, walk: Walk) -> list[str]:
    """What the unit has cached for this request that the tables no longer say: a DMA
    now is answered from the cache, not by this walk (the unit's own staleness checks,
    against what it reads; the caches are iterated, not looked up, so that their hit
    counters stay as they are)."""
    read, sid, out = unit.hw_read_q, walk.source_id, []
    for e in unit.context_cache:
        if e.source_id == sid:
            why = unit.context_cache_stale(e, read)
            if why:
                out.append(f"the context cache holds an older entry for {walk.bdf} ({why}): "
                           "a DMA uses it until it is invalidated")
    if walk.pasid_used is not None:
        for e in unit.pasid_cache:
            if (e.source_id, e.pasid) == (sid, walk.pasid_used):
                why = unit.pasid_cache_stale(e, read)
                if why:
                    out.append(f"the PASID cache holds an older entry for PASID {e.pasid} ({why}): "
                               "a DMA uses it until it is invalidated")
    if walk.did is not None:
        pasid = walk.pasid_used if walk.mode == "scalable" else None
        for e in unit.iotlb:
            if (e.did, e.pasid) == (walk.did, pasid) and e.iova == walk.iova >> e.shift << e.shift:
                why = unit.iotlb_stale(e, read)
                if why:
                    out.append(f"the IOTLB holds an older translation of this page ({why}): "
                               "a DMA uses it until it is invalidated")
    return out


def _fault(walk: Walk, reason: int, suppressed: bool = False) -> Walk:
    walk.ok, walk.reason = False, reason
    walk.recorded = not suppressed
    if suppressed:
        walk.notes.append("FPD=1: the unit does not record this fault; Linux prints nothing")
    return walk


def _walk_legacy(unit: DmarUnit, walk: Walk) -> Walk:
    sid = walk.source_id
    if walk.pasid is not None:
        # DmarUnit.translate: a legacy-mode root table (TTM 0) blocks requests with PASID.
        walk.notes.append("legacy-mode root table (TTM 0): requests with PASID are blocked")
        return _fault(walk, 0x31)
    reads = _Reads(unit.hw_read_q)
    cr = unit.read_context(sid, reads)
    got = reads.take(2)
    if got is not None:
        addr, words = got
        walk.steps.append(Step("root entry", addr, words,
                               says=_legacy_root_says(*words) if words else "read failed: beyond memory"))
    got = reads.take(2)
    if got is not None:
        addr, words = got
        walk.steps.append(Step("context entry", addr, words,
                               says=_legacy_context_says(*words) if words else "read failed: beyond memory"))
    ce = cr.entry
    if not cr.ok:
        # DmarUnit._fault: FPD counts even when P=0, for the qualified reasons only.
        return _fault(walk, cr.reason, bool(ce is not None and ce.fpd and cr.reason in fr.QUALIFIED))
    walk.did = ce.did
    if ce.tt == TT_PASS_THROUGH:
        walk.ok, walk.hpa, walk.r, walk.w = True, walk.iova, True, True
        walk.notes.append("pass-through (TT 2): output = input")
        return walk
    width = min(unit.mgaw_bits, ce.agaw)
    if walk.iova >> width:
        walk.notes.append(f"IOVA beyond {width} bits (min of MGAW {unit.mgaw_bits} and the {ce.agaw}-bit AGAW)")
        return _fault(walk, fr.ADDR_BEYOND_MGAW, ce.fpd)
    reads = _Reads(unit.hw_read_q)
    wr = unit.walk(ce, walk.iova, walk.write, reads)
    _paging_steps(walk, reads, {None: ("second", ce.levels, "")})
    return _finish(walk, wr, ce.fpd and wr.reason in fr.QUALIFIED, snp=wr.snp)


def _walk_sm(unit: DmarUnit, walk: Walk) -> Walk:
    sid, iova, write, pasid = walk.source_id, walk.iova, walk.write, walk.pasid
    reads = _Reads(unit.hw_read_q)
    cr = unit.read_sm_context(sid, reads)
    got = reads.take(2)
    if got is not None:
        addr, words = got
        walk.steps.append(Step("root entry", addr, words, says=_sm_root_says(*words, sid & 0xFF) if words
                               else "read failed: beyond memory"))
    got = reads.take(4)
    if got is not None:
        addr, words = got
        walk.steps.append(Step("context entry", addr, words, says=_sm_context_says(SmContextEntry.decode(*words))
                               if words else "read failed: beyond memory"))
    sm_fpd = lambda fpd, reason: bool(fpd and reason in fr.SM_QUALIFIED)  # noqa: E731 (ScalableMode._sm_fault)
    if not cr.ok:
        return _fault(walk, cr.reason, sm_fpd(cr.fpd, cr.reason))
    ce = cr.entry
    if pasid is not None and not ce.paside:
        walk.notes.append("a request with PASID through a context entry with PASIDE=0")
        return _fault(walk, fr.SM_CONTEXT_PASIDE, sm_fpd(ce.fpd, fr.SM_CONTEXT_PASIDE))
    p = walk.pasid_used = ce.rid_pasid if pasid is None else pasid
    if pasid is None:
        walk.notes.append(f"a request without PASID uses the context entry's RID_PASID ({p})")
    if p >= ce.max_pasid:
        return _fault(walk, fr.SM_CONTEXT_PASID_MAX, sm_fpd(ce.fpd, fr.SM_CONTEXT_PASID_MAX))
    pr = unit.read_pasid_entry(sid, p, reads, context=ce)
    got = reads.take(1)
    if got is not None:
        addr, words = got
        walk.steps.append(Step("PASID dir entry", addr, words, says=_dir_says(PasidDirEntry.decode(words[0]), p)
                               if words else "read failed: beyond memory"))
    got = reads.take(8)
    if got is not None:
        addr, words = got
        walk.steps.append(Step("PASID entry", addr, words, says=_pasid_says(PasidEntry.decode(words), p)
                               if words else "read failed: beyond memory"))
    if not pr.ok:
        if pr.reason == fr.PASID_TABLE_ENTRY_INV:
            walk.notes.append("the PASID entry asks for something this unit cannot do (PGTT not in ECAP, "
                              "first-stage levels, second-stage AW not in SAGAW)")
        return _fault(walk, pr.reason, sm_fpd(pr.fpd, pr.reason))
    return _walk_pasid_entry(unit, walk, pr.entry, pr.fpd)


def _walk_pasid_entry(unit: DmarUnit, walk: Walk, pe: PasidEntry, fpd: bool) -> Walk:
    """The walk under a PASID entry: pass-through, or its page tables."""
    iova, write = walk.iova, walk.write
    sm_fpd = lambda fpd, reason: bool(fpd and reason in fr.SM_QUALIFIED)  # noqa: E731 (ScalableMode._sm_fault)
    walk.did, walk.pgtt = pe.did, pe.pgtt
    if pe.pgtt == PGTT_PT:
        walk.ok, walk.hpa, walk.r, walk.w, walk.snp = True, iova, True, True, pe.pgsnp
        walk.notes.append("pass-through (PGTT 4): output = input")
        return walk
    if pe.pgtt in (PGTT_FL_ONLY, PGTT_NESTED):
        if not canonical(iova, pe.fs_levels):
            walk.notes.append(f"not canonical for a {pe.fs_levels}-level first stage")
            return _fault(walk, fr.FS_NON_CANONICAL, sm_fpd(fpd, fr.FS_NON_CANONICAL))
    else:
        width = min(unit.mgaw_bits, 30 + 9 * pe.aw)
        if iova >> width:
            walk.notes.append(f"IOVA beyond {width} bits (min of MGAW and the second stage's AW)")
            return _fault(walk, fr.SM_ADDR_BEYOND, sm_fpd(fpd, fr.SM_ADDR_BEYOND))
    paging = _Reads(unit._paging_read(pe))
    if pe.pgtt == PGTT_FL_ONLY:
        paging.phase = "fs"
        wr = unit.fs_walk(pe, iova, write, paging)
        _paging_steps(walk, paging, {"fs": ("first", pe.fs_levels, "")})
    elif pe.pgtt == PGTT_SL_ONLY:
        wr = unit._ss_walk(pe.ssptptr, pe.ss_levels, iova, write, paging, SS_CODES_SM)
        _paging_steps(walk, paging, {None: ("second", pe.ss_levels, "")})
    else:
        wr = _nested(unit, pe, walk, paging)
    if pe.pgtt != PGTT_SL_ONLY:
        ad = _ad_check(unit, pe, walk, wr)
        if ad is not None:
            return _fault(walk, fr.FS_AD_NO_SNOOP, sm_fpd(fpd, fr.FS_AD_NO_SNOOP))
    return _finish(walk, wr, sm_fpd(fpd, wr.reason), snp=pe.pgsnp or (pe.pgtt != PGTT_FL_ONLY and wr.snp))


def _nested(unit: DmarUnit, pe: PasidEntry, walk: Walk, reads: _Reads):
    """PGTT 3 through the unit's own nested walk; its phase hook tags each read with
    what it was for (a first-stage table's GPA, the first stage, the output GPA)."""
    ss_levels, fs_levels = pe.ss_levels, pe.fs_levels
    phases: dict[object, tuple[str, int, str]] = {"fs": ("first", fs_levels, "")}
    fs_level = [fs_levels]

    def phase(what: str, addr: int) -> None:
        if what == "gpa":
            tag = ("gpa", fs_level[0])
            phases[tag] = ("second", ss_levels, f", for the first-stage L{fs_level[0]} entry at GPA {addr:#x}")
        elif what == "fs":
            tag = "fs"
            fs_level[0] -= 1
        else:
            tag = ("out",)
            phases[tag] = ("second", ss_levels, f", for the output GPA {addr:#x}")
        reads.phase = tag

    reads.phase = "fs"
    result = unit._nested_walk(pe, walk.iova, walk.write, update_ad=False, privileged=False, read=reads,
                               phase=phase)
    _paging_steps(walk, reads, phases)
    return result


def _paging_steps(walk: Walk, reads: _Reads, phases: dict) -> None:
    """A step per paging-entry read: `phases` maps a read's phase tag to (stage, top
    level, words after "L4 (second stage)"); the level falls by one per read within
    a run of one tag, and per first-stage read across runs."""
    run_tag, level, fs_done = object(), 0, 0
    for tag, addr, value in reads.log:
        stage, top, extra = phases[tag]
        if tag == "fs":
            level = top - fs_done
            fs_done += 1
        elif tag != run_tag:
            level = top
        else:
            level -= 1
        run_tag = tag
        first = stage == "first"
        if value is None:
            says = "read failed: beyond memory"
        else:
            says = describe_pte(level, value, first)
        walk.steps.append(Step(f"L{level} ({stage} stage{extra})", addr,
                               None if value is None else (value,), level=level, stage=stage, says=says))
    reads.log = []


def _ad_check(unit: DmarUnit, pe: PasidEntry, walk: Walk, wr):
    """fs_walk(update_ad=True), as translate() calls it, sets A on each first-stage
    entry and D on a written leaf where they are clear — or, when the walk does not
    snoop (PWSNP=0 or no ECAP.SMPWC), faults 0x90 at the first such entry.  The walk
    here ran without writing; this finds that entry among the ones whose checks
    passed, and cuts the steps after it.  Returns the step, or None."""
    snooped = bool(pe.pwsnp and unit.smpwc) or unit.emulated_by_qemu
    fs_steps = [s for s in walk.steps if s.stage == "first" and s.words is not None]
    last = walk.steps[-1] if walk.steps else None
    failed_at_fs_entry = not wr.ok and last is not None and last.stage == "first" and last.words is not None
    passed = fs_steps[:-1] if failed_at_fs_entry else fs_steps
    for step in passed:
        pte = step.words[0]
        leaf = step.level == 1 or bool(pte & FL_PS)
        need = [n for n, bit, on in (("A", FL_A, True), ("D", FL_D, leaf and walk.write)) if on and not pte & bit]
        if not need:
            continue
        if snooped:
            walk.notes.append(f"this DMA would set {'/'.join(need)} in the L{step.level} first-stage entry")
            continue
        step.says += f" ({'/'.join(need)} clear: a non-snooped walk cannot set {'them' if len(need) > 1 else 'it'})"
        del walk.steps[walk.steps.index(step) + 1:]
        return step
    return None


def _finish(walk: Walk, wr, suppressed: bool, *, snp: bool) -> Walk:
    if not wr.ok:
        return _fault(walk, wr.reason, suppressed)
    walk.ok, walk.hpa, walk.r, walk.w, walk.snp = True, wr.hpa, wr.r, wr.w, bool(snp)
    walk.leaf_level = (wr.shift - 12) // 9 + 1
    return walk


# ------------------------------------------------------------------------ devices
def device_units(machine, source_id: int) -> list[tuple[str, str]]:
    """(unit name, "group N: device name") of each group of `machine` holding
    `source_id` (the QEMU host-side device of a viommu scenario included)."""
    found = []
    for g in machine.groups.values():
        for sid, name in g.devices:
            if sid == source_id:
                found.append((g.unit, f"group {g.spec_id}: {name}"))
    host = getattr(machine, "host_group", None)
    if host is not None and source_id in host.devices:
        found.append((host.unit, "QEMU's host device (the assigned NIC, host side)"))
    return found


# ------------------------------------------------------------------------ text
def render(walk: Walk):
    """A rich renderable: the steps, each with what its entry says, then the result.
    Print it with `console.print(render(walk), soft_wrap=True)`: every line wraps at
    the console's width but the kernel's fault line, which stays one line (rich
    crops a line wider than the console unless soft_wrap)."""
    from rich.console import Group
    from rich.text import Text

    access = "write" if walk.write else "read"
    tag = "" if walk.pasid is None else f" with PASID {walk.pasid:#x}"
    who = f" ({walk.device})" if walk.device else ""
    lines = [Text(f"{walk.bdf}{who}", style="bold"),
             Text(f"DMA {access} of {walk.iova:#x}{tag} on {walk.unit} ({walk.unit_level}), {walk.mode} mode",
                  style="bold")]
    for i, s in enumerate(walk.steps, 1):
        # A paging entry's index in its table is its offset in the 4 KiB page.
        index = f"[{(s.address & 0xFFF) >> 3}]" if s.level is not None else ""
        lines.append(Text.assemble((f"{i:>2} ", "dim"), (s.what, "bold cyan"), (f"{index} @ {s.address:#x}", "")))
        for w in _word_lines(s.words):
            lines.append(Text("     " + w, style="dim"))
        bad = "NOT present" in s.says or (s.words is None and not s.given)
        lines.append(Text("     " + s.says, style="red" if bad else "yellow" if s.given else ""))
        if s.unknown:
            lines.append(Text("     not in the input: unknown, read as 0", style="yellow"))
        if s.cpu_words is not None:
            lines.append(Text("     the CPU's cache holds " + " ".join(f"{w:#018x}" for w in s.cpu_words)
                              + ": the unit read memory", style="yellow"))
    for n in walk.notes:
        lines.append(Text(f"   · {n}", style="dim"))
    if walk.ok:
        size = f", {LEAF_SIZES.get(walk.leaf_level, '?')} page (level {walk.leaf_level})" if walk.leaf_level else ""
        perms = ("R" if walk.r else "-") + ("W" if walk.w else "-")
        out = "guest-physical" if walk.unit_level == "guest" else "host-physical"
        lines.append(Text(f"→ translated: {walk.hpa:#x} ({out}){size}, {perms}{', SNP' if walk.snp else ''}",
                          style="bold green"))
    else:
        lines.append(Text(f"→ fault {walk.reason:#04x}: {fr.reason_string(walk.reason)}", style="bold red"))
        if walk.recorded:
            lines.append(Text("Linux prints:", style="dim"))
        else:
            lines.append(Text("not recorded (FPD=1); unrecorded, Linux would print:", style="dim"))
        # The kernel's line, as dmar_fault_do_one() prints it: users grep and copy it,
        # so it is never wrapped nor cropped (a narrow terminal folds it, not rich).
        lines.append(Text(walk.message, no_wrap=True, overflow="ignore"))
    for line in lines:  # the others wrap at the console's width, under soft_wrap too
        if line.no_wrap is None:
            line.no_wrap, line.overflow = False, "fold"   # Text.wrap: overflow "ignore" means no wrap
    return Group(*lines)


def _word_lines(words: tuple[int, ...] | None) -> list[str]:
    """The entry's words for an 80-column terminal: one 64-bit word as is, a 128-bit
    entry as the kernel's dumps write it (hi, low), wider ones two words a line with
    trailing zero words folded."""
    if words is None:
        return []
    if len(words) == 1:
        return [f"{words[0]:#018x}"]
    if len(words) == 2:
        return [f"hi {words[1]:#018x}  low {words[0]:#018x}"]
    last = max((i for i, w in enumerate(words) if w), default=0)
    shown = [f"val[{i}] {w:#018x}" for i, w in enumerate(words[:last + 1])]
    out = ["   ".join(shown[i:i + 2]) for i in range(0, len(shown), 2)]
    if last + 1 < len(words):
        out.append(f"val[{last + 1}..{len(words) - 1}] 0")
    return out
