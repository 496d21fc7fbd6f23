"""Root, context and second-level entries, bit-exact (VT-d spec §9, REFERENCE.md §2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vtdtui.hw.entries import (
    ContextEntry, Pte, RootEntry, bdf_str, leaf_size, level_index, level_shift, parse_bdf,
)

aligned = st.integers(min_value=0, max_value=(1 << 40) - 1).map(lambda p: p << 12)  # bits 51:12


# ------------------------------------------------------------------ root entry
def test_root_entry_encode():
    assert RootEntry.encode(True, 0x345000) == (0x345001, 0)  # CTP | P
    assert RootEntry.encode(False, 0x345000) == (0x345000, 0)
    assert RootEntry.encode(True, 0xF_FFFF_F000) == (0xF_FFFF_F001, 0)
    with pytest.raises(ValueError):
        RootEntry.encode(True, 0x345800)


def test_root_entry_decode_and_reserved():
    r = RootEntry.decode(0x345001, 0)
    assert r.present and r.ctp == 0x345000 and not r.reserved_set
    assert not RootEntry.decode(0x345000, 0).present
    assert RootEntry.decode(0x345003, 0).reserved_set  # bit 1 (bits 11:1 reserved)
    assert RootEntry.decode(0x345801, 0).reserved_set  # bit 11
    assert RootEntry.decode(0x345001, 1).reserved_set  # hi must be 0 in legacy mode


@given(st.booleans(), aligned)
def test_root_entry_roundtrip(present, ctp):
    lo, hi = RootEntry.encode(present, ctp)
    assert lo == ctp | int(present) and hi == 0
    r = RootEntry.decode(lo, hi)
    assert (r.present, r.ctp, r.reserved_set) == (present, ctp, False)


# ------------------------------------------------------------------ context entry
def test_context_entry_encode_example():
    # DID 5, AW 2, SLPTPTR 0x345000, TT 0, present:
    #   lo = 0x345000 | P(1) = 0x345001; hi = DID 5 << 8 | AW 2 = 0x502
    assert ContextEntry.encode(did=5, aw=2, slptptr=0x345000, tt=0, present=True) == (0x345001, 0x502)


def test_context_entry_encode_all_fields():
    # lo = 0x7000 | TT 2 << 2 (0x8) | FPD (0x2) | P (0x1) = 0x700b
    # hi = DID 0xffff << 8 (0xffff00) | AW 3 = 0xffff03
    assert ContextEntry.encode(did=0xFFFF, aw=3, slptptr=0x7000, tt=2, fpd=True) == (0x700B, 0xFFFF03)
    # TT 1 -> 0x4, not present: lo = 0x9000 | 0x4 = 0x9004; hi = 1 << 8 | 1 = 0x101
    assert ContextEntry.encode(did=1, aw=1, slptptr=0x9000, tt=1, present=False) == (0x9004, 0x101)


def test_context_entry_encode_rejects():
    with pytest.raises(ValueError):
        ContextEntry.encode(did=1, aw=2, slptptr=0x1008)
    with pytest.raises(ValueError):
        ContextEntry.encode(did=0x10000, aw=2, slptptr=0x1000)
    with pytest.raises(ValueError):
        ContextEntry.encode(did=1, aw=8, slptptr=0x1000)
    with pytest.raises(ValueError):
        ContextEntry.encode(did=1, aw=2, slptptr=0x1000, tt=4)


def test_context_entry_decode():
    c = ContextEntry.decode(0x12340F, 0x2A0503)  # lo: P, FPD, TT 3; hi: DID 0x2a05, AW 3
    assert c.present and c.fpd and c.tt == 3 and c.slptptr == 0x123000
    assert c.did == 0x2A05 and c.aw == 3
    assert c.levels == 5 and c.agaw == 57  # AW + 2; 30 + 9*AW
    c1 = ContextEntry.decode(0x1000, 0x101)
    assert not c1.present and not c1.fpd and c1.tt == 0
    assert (c1.levels, c1.agaw) == (3, 39)
    assert (ContextEntry.decode(1, 2).levels, ContextEntry.decode(1, 2).agaw) == (4, 48)


@pytest.mark.parametrize(
    "lo,hi",
    [
        (0x1011, 0x502),  # lo bit 4
        (0x1801, 0x502),  # lo bit 11
        (0x1001, 0x502 | 1 << 30),  # hi bit 30
        (0x1001, 0x502 | 1 << 24),  # hi bit 24 (first above DID)
        (0x1001, 0x502 | 1 << 63),
        (0x1001, 0x582),  # hi bit 7
    ],
)
def test_context_entry_reserved_bits(lo, hi):
    assert ContextEntry.decode(lo, hi).reserved_set


def test_context_entry_avail_bits_are_not_reserved():
    # hi bits 6:3 are AVAIL (ignored by hardware)
    assert not ContextEntry.decode(0x1001, 0x502 | 0x78).reserved_set


@given(
    st.integers(0, 0xFFFF), st.integers(0, 7), aligned, st.integers(0, 3),
    st.booleans(), st.booleans(),
)
def test_context_entry_roundtrip(did, aw, slptptr, tt, fpd, present):
    lo, hi = ContextEntry.encode(did=did, aw=aw, slptptr=slptptr, tt=tt, fpd=fpd, present=present)
    assert lo == slptptr | tt << 2 | int(fpd) << 1 | int(present)
    assert hi == did << 8 | aw
    c = ContextEntry.decode(lo, hi)
    assert (c.did, c.aw, c.slptptr, c.tt, c.fpd, c.present) == (did, aw, slptptr, tt, fpd, present)
    assert not c.reserved_set


# ------------------------------------------------------------------ second-level PTE
def test_pte_bits():
    assert Pte.encode(0x12345000, r=True, w=False) == 0x12345001  # R bit 0
    assert Pte.encode(0x12345000, r=False, w=True) == 0x12345002  # W bit 1
    assert Pte.encode(0x12345000) == 0x12345003  # default R|W
    assert Pte.encode(0x40000000, ps=True) == 0x40000083  # PS bit 7
    assert Pte.encode(0x12345000, snp=True) == 0x12345803  # SNP bit 11
    assert Pte.encode(0x12345000, tm=True) == 0x4000_0000_1234_5003  # TM bit 62
    # all of them: 0x12345000 | 0x1 | 0x2 | 0x80 | 0x800 | 1 << 62
    assert Pte.encode(0x12345000, ps=True, snp=True, tm=True) == 0x4000_0000_1234_5883
    assert Pte.encode(0xF_FFFF_FFFF_F000) == 0xF_FFFF_FFFF_F003  # highest address (bit 51)


def test_pte_decode_properties():
    p = Pte(0x4000_0000_1234_5881)
    assert p.r and not p.w and p.present and p.ps and p.snp and p.tm
    assert p.addr == 0x12345000
    assert not Pte(0x12345000).present  # neither R nor W: not present
    assert Pte(0x2).present  # W only is present (dma_pte_present)
    # bits 63, 61:52 are outside the address
    assert Pte(0x8FF0_0000_1234_5003).addr == 0x12345000
    assert Pte(0x12345003).describe() == "RW-- 0x12345000"


def test_pte_encode_rejects_bad_address():
    with pytest.raises(ValueError):
        Pte.encode(0x12345800)
    with pytest.raises(ValueError):
        Pte.encode(1 << 52)


@given(aligned, st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_pte_roundtrip(addr, r, w, ps, snp, tm):
    raw = Pte.encode(addr, r=r, w=w, ps=ps, snp=snp, tm=tm)
    assert raw == addr | r | w << 1 | ps << 7 | snp << 11 | tm << 62
    p = Pte(raw)
    assert (p.addr, p.r, p.w, p.ps, p.snp, p.tm, p.present) == (addr, r, w, ps, snp, tm, r or w)


# ------------------------------------------------------------------ indices and BDFs
def test_level_arithmetic():
    # iova = 0x1a << 39 | 0x0b << 30 | 0x1c3 << 21 | 0x005 << 12 | 0x678
    #      = 0xd00_0000_0000 + 0x2_c000_0000 + 0x3860_0000 + 0x5000 + 0x678 = 0xd02_f860_5678
    iova = 0xD02_F860_5678
    assert [level_index(iova, lv) for lv in (4, 3, 2, 1)] == [0x1A, 0x0B, 0x1C3, 0x005]
    assert level_index(1 << 48, 5) == 1
    assert [level_shift(lv) for lv in (1, 2, 3, 4, 5)] == [12, 21, 30, 39, 48]
    assert [leaf_size(lv) for lv in (1, 2, 3)] == [0x1000, 0x200000, 0x40000000]


def test_bdf():
    assert bdf_str(0x0300) == "03:00.0"
    assert bdf_str(0x00FA) == "00:1f.2"  # devfn 0xfa = dev 0x1f << 3 | fn 2
    assert bdf_str(0xFFFF) == "ff:1f.7"
    assert parse_bdf("00:1f.2") == 0x00FA
    assert parse_bdf("0000:03:00.0") == 0x0300
    assert parse_bdf(" 0A:01.1 ") == 0x0A09  # devfn 1 << 3 | 1
    for bad in ("0001:03:00.0", "03:00", "100:00.0", "00:20.0", "00:00.8", "x"):
        with pytest.raises(ValueError):
            parse_bdf(bad)


@given(st.integers(0, 0xFFFF))
def test_bdf_roundtrip(sid):
    assert parse_bdf(bdf_str(sid)) == sid
