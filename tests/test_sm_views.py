"""Scalable-mode tables read back by the state JSON and the views, from words written
by hand (VT-d spec / Linux layouts of REFERENCE-2 §11, computed here, not by the
encoders under test): SM root entry lo/hi = LCTP|LP / UCTP|UP; context entry
lo = PASIDDIRPTR | PDTS<<9 | PRE<<4 | PASIDE<<3 | DTE<<2 | FPD<<1 | P, hi = RID_PASID;
PASID directory entry = table | P; PASID entry val[0] = SSPTPTR | PGTT<<6 | AW<<2 | P,
val[1] = PGSNP<<24 | PWSNP<<23 | DID, val[2] = FSPTPTR | FLPM<<2; first-stage PTEs
P=0 R/W=1 U/S=2 A=5 D=6 PS=7 XD=63."""

from __future__ import annotations

from types import SimpleNamespace

from vtdtui.hw import CpuCache, DmarUnit, PhysMem
from vtdtui.machine import state as S
from vtdtui.views import caches, registers, tables
from vtdtui.views.ioptes import Levels, PteTree
from vtdtui.views.style import text_of

SMT = 1 << 10
ROOT, CTX_LO, CTX_HI, PDIR, PTAB = 0x100000, 0x101000, 0x102000, 0x103000, 0x104000
FS_L4, FS_L3, FS_L2, FS_L1 = 0x110000, 0x111000, 0x112000, 0x113000
SS_TOP = 0x120000
# CAP: ND=2, SAGAW 4-level (bit 2 << 8), MGAW 47; ECAP: QI, SMTS (43), SLTS (46), FLTS (47).
CAP = 0x2 | (0x4 << 8) | (47 << 16)
ECAP = (1 << 1) | (1 << 43) | (1 << 46) | (1 << 47)


def rig():
    mem = PhysMem(1 << 34)
    cache = CpuCache(mem)
    u = DmarUnit("dmar9", 0xFED90000, CAP, ECAP, mem, cache, haw=39)

    def w(addr, value, flush=True):
        cache.cpu_write_q(addr, value)
        if flush:
            cache.clflush(addr, 8)

    # bus 0: LCTP only; bus 0x80: UCTP only (devfn 0x80+ live in the upper table).
    w(ROOT + 0 * 16, CTX_LO | 1)
    w(ROOT + 0x80 * 16 + 8, CTX_HI | 1)
    # 00:02.0 (devfn 0x10): slot 0x10 * 32 of the lower table; DTE, PDTS 2, RID_PASID 0.
    w(CTX_LO + 0x10 * 32, PDIR | (2 << 9) | (1 << 2) | 1)
    # 80:1f.0 is devfn 0xf8 -> upper table slot 0x78; PASIDE, FPD, RID_PASID 5, not present dir.
    w(CTX_HI + 0x78 * 32, 0x105000 | (1 << 3) | (1 << 1) | 1)
    w(CTX_HI + 0x78 * 32 + 8, 5)
    # PASID directory of 00:02.0: entry 0 -> table PTAB.
    w(PDIR, PTAB | 1)
    # PASID 0: first stage, DID 2, FSPTPTR FS_L4, AW 2 (4-level), PGSNP, PWSNP off.
    w(PTAB + 0, (1 << 6) | (2 << 2) | 1)
    w(PTAB + 8, (1 << 24) | 2)
    w(PTAB + 16, FS_L4)
    # PASID 3: second stage, DID 7, SSPTPTR SS_TOP, AW 2, PWSNP; written but not flushed.
    w(PTAB + 3 * 64, SS_TOP | (2 << 6) | (2 << 2) | 1, flush=False)
    w(PTAB + 3 * 64 + 8, (1 << 23) | 7, flush=False)
    # First-stage tables for IOVA 0x200000: L4[0] -> L3[0] -> L2[1] -> L1[0] = 4K leaf
    # at 0x7000_0000, writable: P|R/W|U/S|A|D = 0x67; tables P|R/W|U/S|A = 0x27.
    w(FS_L4, FS_L3 | 0x27)
    w(FS_L3, FS_L2 | 0x27)
    w(FS_L2 + 1 * 8, FS_L1 | 0x27)
    w(FS_L1, 0x7000_0000 | 0x67)
    # A 2 MiB leaf at IOVA 0x400000, read-only, XD: P|U/S|A|PS|XD.
    w(FS_L2 + 2 * 8, 0x8000_0000 | 0xA5 | (1 << 63))
    u.rta_latched = ROOT | SMT
    return u


def fake_machine(u):
    return SimpleNamespace(units={u.name: u}, device_names=lambda name: {0x0010: (0, "integrated GPU")},
                           level_of=lambda name: "host")


def test_readers_find_sm_entries():
    u = rig()
    assert S.sm_mode(u)
    roots = [(b, r.lp, r.lctp, r.up, r.uctp) for b, _a, r in S.sm_roots(u)]
    assert roots == [(0, True, CTX_LO, False, 0), (0x80, False, 0, True, CTX_HI)]
    _, _, r0 = next(S.sm_roots(u))
    (devfn, addr, ce), = S.sm_contexts(u, 0, r0)
    assert (devfn, addr) == (0x10, CTX_LO + 0x10 * 32)
    assert (ce.pasiddirptr, ce.pdts, ce.dte, ce.paside, ce.pre, ce.rid_pasid) == (PDIR, 2, True, False, False, 0)
    hi = S.sm_context(u, 0x80F8)
    assert hi is not None and (hi.paside, hi.fpd, hi.rid_pasid) == (True, True, 5)
    assert S.sm_context(u, 0x0018) is None  # 00:03.0: not present
    pes = {pasid: pe for pasid, _addr, pe in S.pasid_entries(u, ce)}
    assert sorted(pes) == [0, 3]
    assert (pes[0].pgtt, pes[0].did, pes[0].fsptptr, pes[0].pgsnp) == (1, 2, FS_L4, True)
    assert (pes[3].pgtt, pes[3].did, pes[3].ssptptr, pes[3].pwsnp) == (2, 7, SS_TOP, True)
    assert S.pasid_entry(u, 0x0010, 3).did == 7
    assert S.pasid_entry(u, 0x0010, 1 << 16) is None  # beyond the 2^(2+7) * 64 PASIDs of PDTS 2


def test_state_json_lists_sm_form():
    u = rig()
    roots, ctxs, pes = S._sm_tables(u)
    assert roots[0] == {"bus": 0, "present": True, "ctp": hex(CTX_LO), "lp": True, "lctp": hex(CTX_LO),
                        "up": False, "uctp": "0x0"}
    c = next(c for c in ctxs if c["bdf"] == "00:02.0")
    assert c["did"] is None and c["pasiddirptr"] == hex(PDIR) and c["pdts"] == 2 and c["dte"] is True
    assert {c["bdf"] for c in ctxs} == {"00:02.0", "80:1f.0"}
    p0 = next(p for p in pes if p["pasid"] == 0)
    assert {k: p0[k] for k in ("bdf", "present", "pgtt", "did", "fsptptr", "pgsnp", "pwsnp", "flpm", "aw")} == {
        "bdf": "00:02.0", "present": True, "pgtt": "first-stage", "did": 2, "fsptptr": hex(FS_L4),
        "pgsnp": True, "pwsnp": False, "flpm": 0, "aw": 2}
    assert next(p for p in pes if p["pasid"] == 3)["pgtt"] == "second-stage"


def test_tables_view_shows_sm_structures():
    u = rig()
    m = fake_machine(u)
    roots = [text_of(r.line) for r in tables.root_rows(m, u.name)]
    assert "scalable-mode root table" in roots[0]
    assert any("LCTP 0x101000" in t and "UP=0" in t for t in roots)
    rows = tables.context_rows(m, u.name, 0)
    text = [text_of(r.line) for r in rows]
    assert any("PASIDDIRPTR 0x103000" in t and "PDTS 2" in t and "DTE" in t for t in text)
    assert any("PASID 0" in t and "first-stage" in t and "DID 2" in t and "FSPTPTR 0x110000" in t and "PGSNP" in t
               for t in text)
    # PASID 3 was not clflushed: the unit (ECAP.C=0) reads zeros there.
    assert any("unit reads" in t for t in text)
    assert all(r.key in (None, 0x0010) for r in rows)  # Enter on any of them opens 00:02.0's tables


def test_iopte_tree_reads_first_stage_format():
    u = rig()
    m = fake_machine(u)
    t = tables.context_entry(m, u.name, 0x0010)
    assert (t.did, t.slptptr, int(t.levels), t.stage, t.tt) == (2, FS_L4, 4, "first", 0)
    tree = PteTree()
    tree.expand_first_path(t.slptptr, t.levels, u.cpu_read_q)
    rows = [text_of(r.line) for r in tree.rows(t.slptptr, t.levels, u.cpu_read_page, u.hw_read_page)]
    leaf = next(r for r in rows if "→ 0x70000000" in r)
    assert "PWUAD-" in leaf and "4K" in leaf
    big = next(r for r in rows if "→ 0x80000000" in r)
    assert "P-UA-S XD" in big and "2M" in big
    # The same words read as second-stage entries would call bit 2 (U/S) X, not a flag.
    assert Levels(4, "first").stage == "first" and isinstance(Levels(4), int)


def test_caches_and_registers_say_scalable():
    u = rig()
    m = fake_machine(u)
    text = [text_of(l) for l in caches.cache_lines(m, u.name)]
    assert "scalable mode" in text[0] and any(t == "PASID cache" for t in text)
    regs_ = [text_of(l) for l in registers.registers(m, u.name)]
    assert any("mode scalable" in t.replace("  ", " ") for t in regs_)
    assert any("SMT=1" in t for t in regs_)
