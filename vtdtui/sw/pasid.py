"""The Linux intel-iommu driver in scalable mode: probe, PASID entries, their flushes.

A mixin of IntelIommuDriver (sw/linux.py), kept apart so that each file has one job:
this one is drivers/iommu/intel/pasid.c and the scalable-mode branches of iommu.c as
the newest mainline has them (REFERENCE-2.md §14, "NEW": the 2026 pasid.c with
`pasid_clear_present` first in intel_pasid_tear_down_entry and `qi_flush_piotlb_all`).
Cache tags and the flushes that walk them are in sw/cache_tag.py.

Every flush considered is a journal event, issued or skipped, with its rule id
(sw/rules.py) and the did / pasid / bdf keys of the contract.  Clflush of root,
context, PASID directory and PASID entries follows ECAP.C (`__iommu_flush_cache`,
`clflush_cache_range` under `!ecap_coherent`); clflush of paging entries follows the
domain's iommu_coherency, which in scalable mode is ECAP.SMPWC (REFERENCE-2 §14.7).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..hw import regs
from ..hw.entries import bdf_str
from ..hw.memory import PAGE_SIZE
from ..hw.sm_entries import (
    FLPT_DEFAULT_DID, IOMMU_NO_PASID, PASID_DIR_ENTRY_SIZE, PASID_ENTRY_SIZE, PASID_MAX, PGTT_FL_ONLY, PGTT_NAMES,
    PGTT_NESTED, PGTT_PT, PGTT_SL_ONLY, SM_ROOT_ENTRY_SIZE, PasidDirEntry, PasidEntry, SmContextEntry, SmRootEntry,
    context_get_sm_pds, context_slot, pasid_dir_index, pasid_table_index,
)
from .iommufd_uapi import IOMMU_VTD_S1_EAFE, IOMMU_VTD_S1_SRE, IOMMU_VTD_S1_WPE

# intel_pasid_alloc_table(): `size = max_pasid >> (PASID_PDE_SHIFT - 3)` bytes, then
# `pasid_table->max_pasid = 1 << (order + PAGE_SHIFT + 3)`.
_PAGE_SHIFT = 12


@dataclass
class SmDeviceInfo:
    """The scalable-mode part of struct device_domain_info, set up at probe."""

    unit: str
    sid: int
    pasid_dir: int  # pasid_table->table
    dir_pages: int
    max_pasid: int  # pasid_table->max_pasid
    ats_supported: bool  # ECAP.DT and the device's ATS capability
    pasid_supported: bool  # pasid_supported(iommu) and the device's PASID capability


def pasid_dir_size(max_pasid_wanted: int) -> tuple[int, int]:
    """intel_pasid_alloc_table(): (pages of the directory, pasid_table->max_pasid)."""
    size = max_pasid_wanted >> 3  # PASID_PDE_SHIFT - 3
    order = max(0, ((size - 1) >> _PAGE_SHIFT).bit_length()) if size else 0  # get_order(size)
    return 1 << order, 1 << (order + _PAGE_SHIFT + 3)


class ScalableMode:
    """Scalable-mode policy of IntelIommuDriver (the attributes it uses are the driver's)."""

    # ------------------------------------------------------------ capabilities (iommu.h)
    def sm_supported(self, unit) -> bool:
        """`sm_supported(iommu) (intel_iommu_sm && ecap_smts((iommu)->ecap))`."""
        return bool(self.intel_iommu_sm and unit.ecapf("SMTS"))

    def pasid_supported(self, unit) -> bool:
        """`pasid_supported(iommu) (sm_supported(iommu) && ecap_pasid((iommu)->ecap))`."""
        return self.sm_supported(unit) and bool(unit.ecapf("PASID"))

    def nested_supported(self, unit) -> bool:
        """`nested_supported(iommu) (sm_supported(iommu) && ecap_nest((iommu)->ecap))` (G17)."""
        return self.sm_supported(unit) and bool(unit.ecapf("NEST"))

    def ssads_supported(self, unit) -> bool:
        """`ssads_supported(iommu) (sm_supported(iommu) && ecap_slads(..) && ecap_smpwc(..))` (G17)."""
        return self.sm_supported(unit) and bool(unit.ecapf("SLADS")) and bool(unit.ecapf("SMPWC"))

    def paging_structure_coherency(self, unit) -> bool:
        """iommu_paging_structure_coherency(): ECAP.SMPWC in scalable mode, ECAP.C in legacy."""
        return bool(unit.ecapf("SMPWC")) if self.sm_supported(unit) else unit.coherent

    def ats_capable(self, source_id: int) -> bool:
        """The device has a PCIe ATS capability (the scenario's `ats = true`)."""
        cap = self._ats_cap
        return bool(cap(source_id)) if callable(cap) else source_id in cap

    def pasid_capable(self, source_id: int) -> bool:
        """The device has a PCIe PASID capability (pci_pasid_features() >= 0)."""
        cap = self._pasid_cap
        return bool(cap(source_id)) if callable(cap) else source_id in cap

    @staticmethod
    def sm_agaw(unit) -> int:
        """iommu->agaw in scalable mode: __iommu_calculate_agaw() over
        __iommu_calculate_sagaw(): `fl_sagaw = BIT(2) | (cap_fl5lp_support ? BIT(3) : 0)`;
        `!ecap_flts` → cap_sagaw; `!ecap_slts` → fl_sagaw; else `fl_sagaw & sl_sagaw`;
        then the largest AGAW ≤ width_to_agaw(57) = 3 in it."""
        fl = 0b100 | (0b1000 if unit.capf("FL5LP") else 0)
        sl = unit.capf("SAGAW")
        sagaw = sl if not unit.ecapf("FLTS") else fl if not unit.ecapf("SLTS") else fl & sl
        for agaw in (3, 2, 1):
            if sagaw >> agaw & 1:
                return agaw
        return 2

    # ------------------------------------------------------------ boot (init_dmars)
    def _init_unit_sm(self, unit, qi_queue: int | None) -> None:
        """init_dmars() in scalable mode: intel_iommu_init_qi() first (dmar_enable_qi:
        "Set DW=1 and QS=1" when ECAP.SMTS — the model keeps QS=0: 256 slots of 32 bytes,
        Linux's QI_LENGTH), then iommu_set_root_entry() with DMA_RTADDR_SMT and, unless
        CAP.ESRTPS, the global context-cache, PASID-cache (`qi_flush_pasid_cache(iommu, 0,
        QI_PC_GLOBAL, 0)`) and IOTLB invalidations, then translation on."""
        from ..hw import qi

        if unit.qi_supported:
            queue = qi_queue if qi_queue is not None else self.alloc.alloc()
            self._desc_status(unit)
            self._enable_qi(unit, queue)
        root = self.alloc.alloc()
        self._root[unit.name] = root
        self.flush_cache(unit, root, PAGE_SIZE, "root table")
        unit.set_root_table(root | regs.RTADDR_SMT)
        if unit.capf("ESRTPS"):
            for op, scope in (("context-cache-invalidation", "global"), ("pasid-cache-invalidation", "global"),
                              ("iotlb-invalidation", "global")):
                self._ev(unit, op, False, "set-root", "CAP.ESRTPS=1: SRTP already invalidated the caches", scope)
        else:
            why = "new root table (RTADDR.SMT): drop anything cached"
            self._flush_context(unit, regs.GRAN_GLOBAL,
                                ev=self._ev(unit, "context-cache-invalidation", True, "set-root", why, "global"))
            ev = self._ev(unit, "pasid-cache-invalidation", True, "set-root",
                          f"{why}; sm_supported: qi_flush_pasid_cache(QI_PC_GLOBAL)", "global")
            self._qi_alone(unit, qi.PcDesc(qi.PC_GLOBAL, 0, 0), ev)
            self._flush_iotlb(unit, regs.GRAN_GLOBAL, ev=self._ev(unit, "iotlb-invalidation", True, "set-root", why,
                                                                  "global"))
        unit.enable_translation()

    def _qi_alone(self, unit, desc, ev) -> None:
        """One descriptor in a qi_submit_sync() of its own (qi_flush_pasid_cache,
        pasid_cache_invalidation_with_pasid): any open batch goes first."""
        batch = self._qi_switch(unit)
        if batch is not None:
            self._qi_batch_flush(batch)
        self._qi_queue(ev, desc)
        self._qi_submit_sync(unit, [desc])

    # ------------------------------------------------------------ probe
    def _sm_context_table(self, unit, source_id: int) -> int:
        """iommu_context_addr(alloc=1) in scalable mode: the root entry's lower (devfn
        0x00-0x7f) or upper (0x80-0xff) context table, allocated on first use; returns
        the address of the device's 256-bit context entry."""
        bus, devfn = source_id >> 8, source_id & 0xFF
        slot = self._root[unit.name] + bus * SM_ROOT_ENTRY_SIZE
        upper, offset = context_slot(devfn)
        half = slot + (8 if upper else 0)
        entry = self._read(half)
        if not entry & 1:
            table = self.alloc.alloc()
            self.flush_cache(unit, table, PAGE_SIZE, f"new context table bus {bus:02x}")
            lo, hi = SmRootEntry.encode(uctp=table) if upper else SmRootEntry.encode(lctp=table)
            self._write(half, hi if upper else lo)
            self.flush_cache(unit, slot, SM_ROOT_ENTRY_SIZE, f"root entry bus {bus:02x}")
            entry = self._read(half)
        return (entry & ~0xFFF) + offset

    def _probe_sm(self, unit, source_id: int) -> None:
        """intel_iommu_probe_device() → intel_pasid_alloc_table() +
        intel_pasid_setup_sm_context(), then (probe_finalize) iommu_enable_pci_ats()."""
        key = (unit.name, source_id)
        if key in self._sm_dev:
            return
        bdf = bdf_str(source_id)
        ats = bool(unit.ecapf("DT")) and self.ats_capable(source_id)  # info->ats_supported
        pasid = self.pasid_supported(unit) and self.pasid_capable(source_id)  # info->pasid_supported
        # intel_pasid_alloc_table(): `max_pasid = min(pci_max_pasids(pdev), intel_pasid_max_id)`
        # only for a PASID-capable device, else 0 → one page (max_pasid 32768, PDTS 2).
        want = min(PASID_MAX, 2 << unit.ecapf("PSS")) if pasid else 0
        pages, max_pasid = pasid_dir_size(want)
        table = self.alloc.alloc()
        for _ in range(pages - 1):  # the allocator hands out consecutive pages in a fresh run
            self.alloc.alloc()
        self.flush_cache(unit, table, pages * PAGE_SIZE, f"PASID directory {bdf}")
        info = SmDeviceInfo(unit.name, source_id, table, pages, max_pasid, ats, pasid)
        self._sm_dev[key] = info
        self._sm_context_setup(unit, info)
        if ats:  # intel_iommu_probe_finalize(): iommu_enable_pci_ats() in scalable mode
            self.ats.add(source_id)

    def _sm_context_setup(self, unit, info: SmDeviceInfo) -> None:
        """device_pasid_table_setup() → context_entry_set_pasid_table(): the SM context
        entry, written once, then its flushes: under CM a device-selective context-cache
        invalidation (DID 0) and a domain-selective IOTLB invalidation of DID 0; without CM
        nothing at all — the function has no else branch (unlike legacy's
        context_present_cache_flush, no write-buffer flush)."""
        sid, bdf = info.sid, bdf_str(info.sid)
        slot = self._sm_context_table(unit, sid)
        if self._read(slot) & 1:
            return  # `if (context_present(context) && !context_copied(...)) return 0;`
        pds = context_get_sm_pds(info.max_pasid)
        w0, w1, _, _ = SmContextEntry.encode(pasiddirptr=info.pasid_dir, pdts=pds, rid_pasid=IOMMU_NO_PASID,
                                             dte=info.ats_supported, paside=info.pasid_supported)
        # context_clear_entry, lo = dir | PDTS, RID_PASID 0, DTE, PASIDE, fault enable,
        # present; Linux writes the low 128 bits only.
        self._write(slot + 8, w1)
        self._write(slot, w0)
        self.flush_cache(unit, slot, 16, f"context entry {bdf}")
        if unit.cm:
            ev = self._ev(unit, "context-cache-invalidation", True, "sm-ctx",
                          "CM=1: the not-present context entry may be cached (tagged DID 0)", "device",
                          f"{bdf} DID 0", did=0, bdf=bdf)
            self._flush_context(unit, regs.GRAN_DEVICE, 0, sid, 0, ev=ev)
            ev = self._ev(unit, "iotlb-invalidation", True, "sm-ctx",
                          "CM=1: flush_iotlb(iommu, 0, 0, 0, DMA_TLB_DSI_FLUSH)", "domain", "DID 0", did=0)
            self._flush_iotlb(unit, regs.GRAN_DOMAIN, 0, ev=ev)
        else:
            why = "CM=0: hardware does not cache not-present entries"
            self._ev(unit, "context-cache-invalidation", False, "sm-ctx", why, "device", f"{bdf} DID 0", did=0, bdf=bdf)
            self._ev(unit, "iotlb-invalidation", False, "sm-ctx", why, "domain", "DID 0", did=0)
            self._ev(unit, "write-buffer-flush", False, "sm-ctx",
                     "CM=0: device_pasid_table_setup() has no else branch — no write-buffer flush, unlike legacy")

    # ------------------------------------------------------------ PASID entries (pasid.c)
    def sm_device(self, unit, source_id: int) -> SmDeviceInfo:
        info = self._sm_dev.get((unit.name, source_id))
        if info is None:
            self._probe_sm(unit, source_id)
            info = self._sm_dev[(unit.name, source_id)]
        return info

    def pasid_entry_addr(self, unit, source_id: int, pasid: int, alloc: bool = True) -> int | None:
        """intel_pasid_get_entry(): the entry's address; on first use of its 64-PASID
        range a table page is allocated (clflush if !C) and hung into the directory with
        `cmpxchg(&dir[i].val, 0, virt_to_phys(entries) | PASID_PTE_PRESENT)` (clflush if !C)."""
        info = self.sm_device(unit, source_id)
        if not 0 <= pasid < info.max_pasid:
            raise self._error(f"{bdf_str(source_id)}: PASID {pasid} is beyond the table's max_pasid "
                              f"{info.max_pasid}")
        bdf = bdf_str(source_id)
        slot = info.pasid_dir + pasid_dir_index(pasid) * PASID_DIR_ENTRY_SIZE
        pde = PasidDirEntry.decode(self._read(slot))
        if not pde.present:
            if not alloc:
                return None
            table = self.alloc.alloc()
            self.flush_cache(unit, table, PAGE_SIZE, f"new PASID table {bdf} dir[{pasid_dir_index(pasid)}]")
            self._write(slot, PasidDirEntry.encode(table))
            self.flush_cache(unit, slot, PASID_DIR_ENTRY_SIZE,
                             f"PASID directory entry {bdf} dir[{pasid_dir_index(pasid)}]")
            pde = PasidDirEntry.decode(self._read(slot))
        return pde.table + pasid_table_index(pasid) * PASID_ENTRY_SIZE

    def read_pasid(self, unit, source_id: int, pasid: int = IOMMU_NO_PASID) -> PasidEntry | None:
        """The PASID entry as the CPU sees it, or None when its table does not exist."""
        if (unit.name, source_id) not in self._sm_dev:
            return None
        addr = self.pasid_entry_addr(unit, source_id, pasid, alloc=False)
        if addr is None:
            return None
        return PasidEntry.decode([self._read(addr + 8 * i) for i in range(8)])

    def _write_pasid_entry(self, addr: int, words) -> None:
        """pasid_pte_config_*(): pasid_clear_entry, the fields, then pasid_set_present
        last (after dma_wmb()): words 7..1, then word 0 which holds P."""
        for i in range(7, 0, -1):
            self._write(addr + 8 * i, words[i])
        self._write(addr, words[0])

    def _setup_pasid_entry(self, d, unit, source_id: int, pasid: int = IOMMU_NO_PASID) -> None:
        """dmar_domain_attach_device() in scalable mode: domain_setup_first_level /
        domain_setup_second_level / domain_setup_passthrough → intel_pasid_setup_*():
        refuses a present entry (-EBUSY), writes it as pasid_pte_config_*() does, then
        pasid_flush_caches()."""
        bdf = bdf_str(source_id)
        if d.stage == "first" and not unit.ecapf("FLTS"):
            raise self._error(f"No first level translation support on {unit.name} (-EINVAL)")
        if d.stage == "first" and d.levels == 5 and not unit.capf("FL5LP"):
            raise self._error(f"No 5-level paging support for first-level on {unit.name} (-EINVAL)")
        if d.stage == "second" and not unit.ecapf("SLTS"):
            raise self._error(f"No second level translation support on {unit.name} (-EINVAL)")
        addr = self.pasid_entry_addr(unit, source_id, pasid)
        if self._read(addr) & 1:
            raise self._error(f"{bdf} PASID {pasid}: the PASID entry is present (-EBUSY)")
        did = self.pasid_did(d, unit)
        words = self.pasid_entry_words(d, unit, did)
        self._write_pasid_entry(addr, words)
        self._pasid_flush_caches(unit, addr, source_id, pasid, did)

    def pasid_did(self, d, unit) -> int:
        """The DID a PASID entry carries: domain_id_iommu(), FLPT_DEFAULT_DID for
        pass-through (intel_pasid_setup_pass_through)."""
        return FLPT_DEFAULT_DID if d.stage == "identity" else d.dids[unit.name]

    def nested_s1_refusal(self, d, unit) -> str | None:
        """intel_pasid_setup_nested()'s checks of the guest's struct iommu_hwpt_vtd_s1
        (PT era), in order, as the line the kernel prints and its errno, or None:
        addr_width 48, or 57 with CAP.FL5LP; SRE needs ECAP.SRS; EAFE needs ECAP.EAFS.
        WPE is not checked (it is only written under SRE)."""
        s1 = d.s1
        if s1.addr_width == 57 and not unit.capf("FL5LP"):
            return "5-level paging not supported (-EINVAL)"
        if s1.addr_width not in (48, 57):
            return f"Invalid stage-1 address width {s1.addr_width} (-EINVAL)"
        if s1.flags & IOMMU_VTD_S1_SRE and not unit.ecapf("SRS"):
            return f"No supervisor request support on {unit.name} (-EINVAL)"
        if s1.flags & IOMMU_VTD_S1_EAFE and not unit.ecapf("EAFS"):
            return f"No extended access flag support on {unit.name} (-EINVAL)"
        return None

    def pasid_entry_words(self, d, unit, did: int) -> tuple[int, ...]:
        """The eight words pasid_pte_config_first_level / _second_level / _pass_through /
        _nestd leave (PT/NEW era)."""
        if d.stage == "nested":
            return self._nested_entry_words(d, did)
        if d.stage == "first":
            # FLPTR, FLPM 1 iff 5-level, PGSNP iff force_snooping, DID, AW = iommu->agaw,
            # PWSNP iff the page table is not DMA_INCOHERENT (ECAP.SMPWC at allocation),
            # PGTT FL_ONLY; no fault-enable call (FPD stays 0 from pasid_clear_entry).
            return PasidEntry.encode(pgtt=PGTT_FL_ONLY, did=did, aw=self.sm_agaw(unit), fsptptr=d.pgd,
                                     flpm=1 if d.levels == 5 else 0, pgsnp=d.force_snooping, pwsnp=d.coherent)
        if d.stage == "identity":
            # DID 1, AW iommu->agaw, PGTT PT, fault enable, PWSNP = ECAP.SMPWC.
            return PasidEntry.encode(pgtt=PGTT_PT, did=did, aw=self.sm_agaw(unit),
                                     pwsnp=bool(unit.ecapf("SMPWC")))
        # Second stage: SLPTR, AW of the table, PGTT SL_ONLY, fault enable, PWSNP iff not
        # DMA_INCOHERENT; no PGSNP (second stage snoops per PTE, bit 11); SSADE iff
        # domain->dirty_tracking — switched on by IOMMU_HWPT_SET_DIRTY_TRACKING
        # (intel_iommu_set_dirty_tracking), not by the DIRTY_TRACKING allocation flag.
        return PasidEntry.encode(pgtt=PGTT_SL_ONLY, did=did, aw=d.agaw, ssptptr=d.pgd, pwsnp=d.coherent,
                                 ssade=d.dirty_enabled)

    @staticmethod
    def _nested_entry_words(d, did: int) -> tuple[int, ...]:
        """pasid_pte_config_nestd() (PT era): FLPM 1 iff addr_width 57, FLPTR = the guest's
        pgtbl_addr (pasid_set_flptr masks it to VTD_PAGE_MASK), SRE (and WPE only under
        SRE), EAFE from the s1 flags, PGSNP iff the parent force_snooping, SLPTR and AW of
        the parent (pt_iommu_vtdss_hw_info), fault enable, the nested domain's DID, PWSNP
        iff the parent's table is not DMA_INCOHERENT (2024 copies: ECAP.SMPWC of the unit),
        SSADE iff the parent's dirty tracking is on, PGTT NESTED."""
        p, s1 = d.parent, d.s1
        sre = bool(s1.flags & IOMMU_VTD_S1_SRE)
        return PasidEntry.encode(
            pgtt=PGTT_NESTED, did=did, aw=p.agaw, ssptptr=p.pgd, fsptptr=s1.pgtbl_addr & ((1 << 64) - 1) & ~0xFFF,
            flpm=1 if s1.addr_width == 57 else 0, sre=sre, wpe=sre and bool(s1.flags & IOMMU_VTD_S1_WPE),
            eafe=bool(s1.flags & IOMMU_VTD_S1_EAFE), pgsnp=p.force_snooping, pwsnp=p.coherent,
            ssade=p.dirty_enabled)

    def _pasid_cache_inval(self, unit, did: int, pasid: int, bdf: str, rule: str, why: str) -> None:
        """pasid_cache_invalidation_with_pasid(): QI_PC_PASID_SEL, one submission."""
        from ..hw import qi

        ev = self._ev(unit, "pasid-cache-invalidation", True, rule, why, "pasid", f"DID {did} PASID {pasid} {bdf}",
                      did=did, pasid=pasid, bdf=bdf)
        self._qi_alone(unit, qi.PcDesc(qi.PC_PASID_SEL, did, pasid), ev)

    def _piotlb_all(self, unit, did: int, pasid: int, bdf: str | None, rule: str, why: str) -> None:
        """qi_flush_piotlb_all() (NEW; `qi_flush_piotlb(.., 0, -1, 0)` before): P_IOTLB
        granularity 2, PASID-selective, qw1 = 0."""
        from ..hw import qi

        ev = self._ev(unit, "piotlb-invalidation", True, rule, why, "pasid", f"DID {did} PASID {pasid}",
                      did=did, pasid=pasid, bdf=bdf)
        self._qi_send(unit, qi.PiotlbDesc(qi.PIOTLB_PASID, did, pasid), ev)

    def _pasid_flush_caches(self, unit, addr: int, source_id: int, pasid: int, did: int) -> None:
        """pasid_flush_caches(): clflush if !ECAP.C; CM → PASID-cache PASID-selective and
        P_IOTLB PASID-selective (whatever the PGTT); else a write-buffer flush."""
        bdf = bdf_str(source_id)
        self.flush_cache(unit, addr, PASID_ENTRY_SIZE, f"PASID entry {bdf} PASID {pasid}")
        rule = "pasid-np2p"
        if unit.cm and not self.skip_invalidation:
            why = "CM=1: the not-present PASID entry may be cached"
            self._pasid_cache_inval(unit, did, pasid, bdf, rule, why)
            self._piotlb_all(unit, did, pasid, bdf, rule, why)
        else:
            why = ("what-if: driver skips the caching-mode invalidation" if unit.cm
                   else "CM=0: hardware does not cache not-present entries")
            self._ev(unit, "pasid-cache-invalidation", False, rule, why, "pasid", f"DID {did} PASID {pasid} {bdf}",
                     did=did, pasid=pasid, bdf=bdf)
            self._ev(unit, "piotlb-invalidation", False, rule, why, "pasid", f"DID {did} PASID {pasid}",
                     did=did, pasid=pasid, bdf=bdf)
            if not unit.cm:
                self.flush_write_buffer(unit, "CM=0: pasid_flush_caches() flushes the write buffer instead")

    def _devtlb_with_pasid(self, unit, source_id: int, pasid: int, rule: str) -> None:
        """devtlb_invalidation_with_pasid(): nothing unless ATS is enabled; PASID 0 →
        qi_flush_dev_iotlb(.., 0, 64 - VTD_PAGE_SHIFT) (global), else the PASID form."""
        if pasid == IOMMU_NO_PASID:
            self._devtlb(unit, source_id, 0, 64 - 12, rule)
        else:
            self._devtlb_pasid(unit, source_id, pasid, 0, 64 - 12, rule)

    def _devtlb_pasid(self, unit, source_id: int, pasid: int, addr: int, mask: int, rule: str) -> None:
        """qi_flush_dev_iotlb_pasid / qi_batch_add_pasid_dev_iotlb: type 8 with
        qi_desc_dev_iotlb_pasid()'s size encoding."""
        from ..hw import qi

        bdf = bdf_str(source_id)
        scope = "all" if mask >= 52 else "page"
        if source_id not in self.ats:
            self._ev(unit, "device-tlb-invalidation", False, rule, "ATS not enabled on the device", scope, bdf,
                     pasid=pasid, bdf=bdf)
            return
        ev = self._ev(unit, "device-tlb-invalidation", True, rule, "ATS enabled: the device caches translations",
                      scope, bdf, pasid=pasid, bdf=bdf)
        if not unit.gcmd & regs.GCMD_TE:
            return
        a, size = addr & ~0xFFF, False
        if mask:
            a |= ((1 << (mask + 12)) - 1) & ~0xFFF  # GENMASK_ULL(size_order + 11, 12)
            a &= ~(1 << (12 + mask - 1))
            size = True
        self._qi_send(unit, qi.PasidDevTlbDesc(source_id, pasid, a & ((1 << 64) - 1), size), ev)

    def _flush_present(self, unit, addr: int, source_id: int, pasid: int, did: int, rule: str) -> None:
        """intel_pasid_flush_present(): after changing a present entry (PGSNP): clflush
        if !C, PASID-cache PASID-selective, P_IOTLB PASID-selective, device TLB — always,
        CM or not ("VT-d spec 5.0 table28")."""
        bdf = bdf_str(source_id)
        self.flush_cache(unit, addr, PASID_ENTRY_SIZE, f"PASID entry {bdf} PASID {pasid}")
        why = "a present PASID entry changed: every cache of it must go, whatever CM says"
        self._pasid_cache_inval(unit, did, pasid, bdf, rule, why)
        self._piotlb_all(unit, did, pasid, bdf, rule, why)
        self._devtlb_with_pasid(unit, source_id, pasid, rule)

    def _tear_down_pasid(self, unit, source_id: int, pasid: int = IOMMU_NO_PASID) -> None:
        """intel_pasid_tear_down_entry() (NEW): clear P, clflush if !C, PASID-cache
        PASID-selective (old DID), P_IOTLB PASID-selective for PT/FL or DSI for SL/nested,
        devtlb_invalidation_with_pasid, then clear the whole entry and clflush."""
        addr = self.pasid_entry_addr(unit, source_id, pasid, alloc=False)
        if addr is None or not self._read(addr) & 1:
            return
        bdf = bdf_str(source_id)
        pe = PasidEntry.decode([self._read(addr + 8 * i) for i in range(8)])
        did, pgtt = pe.did, pe.pgtt
        self._write(addr, pe.val[0] & ~1)  # pasid_clear_present()
        self.flush_cache(unit, addr, PASID_ENTRY_SIZE, f"PASID entry {bdf} PASID {pasid} P cleared")
        rule = "pasid-teardown"
        self._pasid_cache_inval(unit, did, pasid, bdf, rule,
                                "present → not-present: the cached PASID entry must go, whatever CM says")
        if pgtt in (PGTT_PT, PGTT_FL_ONLY):
            self._piotlb_all(unit, did, pasid, bdf, rule,
                             f"PGTT {PGTT_NAMES[pgtt]}: PASID-tagged translations must go (qi_flush_piotlb_all)")
        else:
            ev = self._ev(unit, "iotlb-invalidation", True, rule,
                          f"PGTT {PGTT_NAMES.get(pgtt, pgtt)}: flush_iotlb(DMA_TLB_DSI_FLUSH) for the old DID",
                          "domain", f"DID {did}", did=did)
            self._flush_iotlb(unit, regs.GRAN_DOMAIN, did, ev=ev)
        self._devtlb_with_pasid(unit, source_id, pasid, rule)
        for i in range(8):  # intel_pasid_clear_entry(dev, pasid, fault_ignore=false)
            self._write(addr + 8 * i, 0)
        self.flush_cache(unit, addr, PASID_ENTRY_SIZE, f"PASID entry {bdf} PASID {pasid} cleared")

    def _page_snoop_control(self, unit, source_id: int, pasid: int = IOMMU_NO_PASID) -> None:
        """intel_pasid_setup_page_snoop_control(): set PGSNP in the present entry, then
        intel_pasid_flush_present() with the entry's DID."""
        addr = self.pasid_entry_addr(unit, source_id, pasid, alloc=False)
        if addr is None or not self._read(addr) & 1:
            return  # WARN_ON(!pte || !pasid_pte_is_present(pte))
        from ..hw.sm_entries import PE_PGSNP

        w1 = self._read(addr + 8)
        self._write(addr + 8, w1 | PE_PGSNP)
        self._flush_present(unit, addr, source_id, pasid, w1 & 0xFFFF, "snp")
