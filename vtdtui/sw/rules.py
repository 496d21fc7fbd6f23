"""The rule table: each rule id a software actor decides by, who decides, and where.

One place for what README.md's table "The actors and their rules" says (a test holds
the two together) and for the ids machine/invariants.py accepts.  `functions` are the
kernel's or QEMU's, each with the source file it lives in, so a reader of a journal
event can open the code that made the same choice.
"""

from __future__ import annotations

from dataclasses import dataclass

# Source files, named once: most rules live in the same few.
INTEL_IOMMU = "drivers/iommu/intel/iommu.c"
INTEL_IOMMU_H = "drivers/iommu/intel/iommu.h"
INTEL_CACHE = "drivers/iommu/intel/cache.c"
INTEL_PASID = "drivers/iommu/intel/pasid.c"
INTEL_DMAR = "drivers/iommu/intel/dmar.c"
VFIO_TYPE1 = "drivers/vfio/vfio_iommu_type1.c"
KVM_VFIO = "virt/kvm/vfio.c"
KVM_VMX = "arch/x86/kvm/vmx/vmx.c"
KVM_X86 = "arch/x86/kvm/x86.c"
KVM_MMU = "arch/x86/kvm/mmu/mmu.c"
QEMU_VTD = "hw/i386/intel_iommu.c"  # QEMU's tree
QEMU_VTD_ACCEL = "hw/i386/intel_iommu_accel.c"  # QEMU's tree, 2025-2026 (x-flts with iommufd)
INTEL_NESTED = "drivers/iommu/intel/nested.c"
IOMMUFD_DEVICE = "drivers/iommu/iommufd/device.c"
IOMMUFD_HWPT = "drivers/iommu/iommufd/hw_pagetable.c"
IOMMUFD_IOPT = "drivers/iommu/iommufd/io_pagetable.c"


@dataclass(frozen=True)
class Rule:
    id: str
    actor: str  # driver | vfio | kvm | qemu
    decision: str  # one line; README's table says it at length
    functions: tuple[tuple[str, str], ...]  # (function, source file)
    note: str = ""  # a decision no function names (an unmerged series)

    @property
    def function_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.functions)


def _r(rid: str, actor: str, decision: str, *functions: tuple[str, str], note: str = "") -> Rule:
    return Rule(rid, actor, decision, tuple(functions), note)


TABLE: tuple[Rule, ...] = (
    _r("clflush", "driver", "after writing a root, context or page-table entry: clflush iff page walks do not "
       "snoop (ECAP.C=0 now for root/context entries, the domain's coherency fixed at allocation for PTEs)",
       ("__iommu_flush_cache", INTEL_IOMMU_H), ("domain_flush_cache", INTEL_IOMMU),
       ("paging_domain_alloc", INTEL_IOMMU)),
    _r("ctx-np2p", "driver", "context entry not-present → present: CM=1 invalidates the context cache (DID 0) "
       "and the domain's IOTLB; CM=0 only flushes the write buffer",
       ("domain_context_mapping_one", INTEL_IOMMU), ("context_present_cache_flush", INTEL_IOMMU)),
    _r("ctx-clear", "driver", "detach: device-selective context-cache invalidation, DSI, device-TLB if ATS; always",
       ("domain_context_clear_one", INTEL_IOMMU), ("intel_context_flush_no_pasid", INTEL_PASID)),
    _r("map-np2p", "driver", "new leaves: CM=1 invalidates the range (PSI); CM=0 flushes the write buffer",
       ("intel_iommu_iotlb_sync_map", INTEL_IOMMU), ("cache_tag_flush_range_np", INTEL_CACHE)),
    _r("unmap", "driver", "cleared leaves: PSI/DSI always (IH when no table was freed); lazy DMA-API domains defer "
       "to the flush queue; CM=1 forces strict",
       ("intel_iommu_tlb_sync", INTEL_IOMMU), ("intel_iommu_init", INTEL_IOMMU),
       ("cache_tag_flush_range", INTEL_CACHE), ("first_level_by_default", INTEL_IOMMU)),
    _r("psi-fallback", "driver", "a PSI becomes a DSI when CAP.PSI=0 or the mask exceeds MAMV",
       ("calculate_psi_aligned_address", INTEL_CACHE), ("cache_tag_flush_iotlb", INTEL_CACHE)),
    _r("superpage", "driver", "a large page where an emptied lower table hangs: clear the PDE, free its tables, "
       "flush the IOTLB from there to the end of the run (IH=0)",
       ("switch_to_super_page", INTEL_IOMMU), ("dma_pte_free_pagetable", INTEL_IOMMU)),
    _r("wbf", "driver", "write-buffer flush only when CAP.RWBF",
       ("iommu_flush_write_buffer", INTEL_IOMMU)),
    _r("snp", "driver", "enforce cache coherency iff every attached unit has ECAP.SC and — second stage, SNP per PTE — "
       "the domain has no mappings; first stage sets PGSNP in each PASID entry and flushes it as a present entry",
       ("intel_iommu_enforce_cache_coherency", INTEL_IOMMU), ("intel_iommu_enforce_cache_coherency_fs", INTEL_IOMMU),
       ("intel_pasid_setup_page_snoop_control", INTEL_PASID), ("intel_pasid_flush_present", INTEL_PASID)),
    _r("set-root", "driver", "global invalidations after SRTP (in scalable mode also the global PASID cache), "
       "skipped when CAP.ESRTPS",
       ("iommu_set_root_entry", INTEL_IOMMU), ("qi_flush_pasid_cache", INTEL_DMAR)),
    _r("sm-ctx", "driver", "scalable-mode context entry, written once at probe: CM=1 invalidates the context cache "
       "(device, DID 0) and DID 0's IOTLB; CM=0 nothing, not even a write-buffer flush (no else branch)",
       ("intel_iommu_probe_device", INTEL_IOMMU), ("intel_pasid_setup_sm_context", INTEL_PASID),
       ("device_pasid_table_setup", INTEL_PASID)),
    _r("pasid-np2p", "driver", "PASID entry not-present → present: CM=1 invalidates the PASID cache (PASID-selective) "
       "and the PASID's IOTLB (P_IOTLB, PASID-selective) whatever the PGTT; CM=0 flushes the write buffer",
       ("intel_pasid_setup_first_level", INTEL_PASID), ("intel_pasid_setup_second_level", INTEL_PASID),
       ("intel_pasid_setup_pass_through", INTEL_PASID), ("pasid_flush_caches", INTEL_PASID)),
    _r("pasid-teardown", "driver", "detach in scalable mode: clear P, then PASID cache, P_IOTLB (first stage / "
       "pass-through) or DSI (second stage / nested), device TLB if ATS, then clear the entry; always",
       ("device_block_translation", INTEL_IOMMU), ("intel_pasid_tear_down_entry", INTEL_PASID),
       ("devtlb_invalidation_with_pasid", INTEL_PASID)),
    _r("map-fs", "driver", "new first-stage leaves: no IOTLB invalidation even with CM=1 (CM does not cover "
       "first-stage mappings), only a write-buffer flush",
       ("cache_tag_flush_range_np", INTEL_CACHE), ("intel_domain_is_fs_paging", INTEL_IOMMU_H)),
    _r("vfio-reuse", "vfio", "join an existing domain when the reuse policy and the driver allow it, else a new "
       "domain with the DMA list replayed",
       ("vfio_iommu_type1_attach_group", VFIO_TYPE1), ("paging_domain_compatible", INTEL_IOMMU),
       ("vfio_iommu_replay", VFIO_TYPE1)),
    _r("vfio-noncoherent-flush", "vfio", "the 2024 proposal: clean CPU caches of pages mapped into a non-coherent "
       "domain, once per mapping",
       ("vfio_iommu_replay", VFIO_TYPE1), note="Yan Zhao's series"),
    _r("kvm-coherency", "kvm", "noncoherent if any group's IOMMU lacks SC; the 0↔1 edge registers noncoherent DMA "
       "and sets WBINVD emulation and RAM's EPT memory type",
       ("kvm_vfio_update_coherency", KVM_VFIO), ("vmx_get_mt_mask", KVM_VMX), ("vmx_ignore_guest_pat", KVM_VMX)),
    _r("kvm-ept-zap", "kvm", "the first and last noncoherent device zap the EPT, only where KVM may ignore guest PAT",
       ("kvm_noncoherent_dma_assignment_start_or_stop", KVM_X86), ("kvm_mmu_may_ignore_guest_pat", KVM_MMU)),
    _r("dmar-fault", "driver", "the fault interrupt: print FSTS, then each recorded fault (and its walk with "
       "CONFIG_DMAR_DEBUG), clear F, then PFO/PPF",
       ("dmar_fault", INTEL_DMAR), ("dmar_fault_do_one", INTEL_DMAR), ("dmar_fault_dump_ptes", INTEL_IOMMU)),
    _r("qemu-shadow", "qemu", "guest invalidations become VFIO map/unmap on the host: global context flushes unmap "
       "and replay, others diff against what was notified, PSI its range",
       ("vtd_context_global_invalidate", QEMU_VTD), ("vtd_address_space_refresh_all", QEMU_VTD),
       ("vtd_address_space_sync", QEMU_VTD), ("vtd_iotlb_page_invalidate_notify", QEMU_VTD),
       ("vtd_page_walk_one", QEMU_VTD), ("vtd_iommu_replay", QEMU_VTD)),
    _r("qemu-cm-required", "qemu", "an assigned device needs caching-mode=on: device_add is refused (QEMU does not "
       "start when it is cold-plugged)",
       ("vtd_dev_set_iommu_device", QEMU_VTD), ("vtd_iommu_notify_flag_changed", QEMU_VTD)),
    _r("qemu-sc-unsupported", "qemu", "a vIOMMU with snoop control refuses VFIO's MAP notifier",
       ("vtd_iommu_notify_flag_changed", QEMU_VTD)),
    _r("qemu-sm-shadow", "qemu", "scalable-mode guest without x-flts: the shadow follows the RID_PASID PASID entry "
       "(SSPTPTR, AW, DID); a P_IOTLB of its DID and PASID syncs it (PASID-selective: the whole space, "
       "page-selective: the range); other DIDs or PASIDs are not the device",
       ("vtd_piotlb_pasid_invalidate", QEMU_VTD), ("vtd_piotlb_page_invalidate", QEMU_VTD),
       ("vtd_iotlb_page_invalidate_notify", QEMU_VTD), ("vtd_ce_get_rid2pasid_entry", QEMU_VTD),
       ("vtd_get_domain_id", QEMU_VTD)),
    _r("qemu-sm-pasid-cache", "qemu", "a PASID-cache invalidation changes no shadow without x-flts "
       "(vtd_pasid_cache_sync returns at once)",
       ("vtd_process_pasid_desc", QEMU_VTD), ("vtd_pasid_cache_sync", QEMU_VTD)),
    _r("qemu-device", "qemu", "device_add joins the host group to QEMU's container and registers the MAP notifier; "
       "device_del unmaps everything and leaves",
       ("vtd_iommu_notify_flag_changed", QEMU_VTD), ("vtd_iommu_replay", QEMU_VTD)),
    _r("nested-invalidate", "driver", "a nested HWPT's IOMMU_HWPT_INVALIDATE entry: unknown flags or reserved bits "
       "-EOPNOTSUPP, an unaligned address or addr≠0 with npages U64_MAX -EINVAL, else cache_tag_flush_range over "
       "the nested domain's tags (P_IOTLB with its DID, LEAF as IH)",
       ("intel_nested_cache_invalidate_user", INTEL_NESTED), ("cache_tag_flush_range", INTEL_CACHE)),
    _r("nesting-tags", "driver", "a change to a nest parent's second stage also flushes each nested domain built on it: "
       "IOTLB with the nested domain's DID, the whole device TLB",
       ("__cache_tag_assign_parent_domain", INTEL_CACHE), ("cache_tag_flush_range", INTEL_CACHE),
       ("intel_pasid_setup_nested", INTEL_PASID)),
    _r("iommufd-auto-domain", "iommufd", "attach to an IOAS: try each automatic HWPT of the IOAS, -EINVAL means "
       "incompatible (next), else allocate a new automatic HWPT; maps are mirrored into every HWPT of the IOAS",
       ("iommufd_device_auto_get_domain", IOMMUFD_DEVICE), ("iommufd_hw_pagetable_attach", IOMMUFD_DEVICE),
       ("iopt_table_add_domain", IOMMUFD_IOPT)),
    _r("iommufd-enforce-cc", "iommufd", "a device whose IOMMU can enforce coherency gets an enforcing HWPT: set at "
       "allocation (before any map), or upgraded at attach, -EINVAL if the domain refuses",
       ("iommufd_hwpt_paging_enforce_cc", IOMMUFD_HWPT), ("iommufd_device_bind", IOMMUFD_DEVICE)),
    _r("iommufd-hwpt", "iommufd", "IOMMU_HWPT_ALLOC: a paging HWPT with NEST_PARENT / DIRTY_TRACKING, or a nested "
       "HWPT (IOMMU_HWPT_DATA_VTD_S1) over a nest parent; attach to an explicit HWPT",
       ("iommufd_hwpt_alloc", IOMMUFD_HWPT), ("iommufd_hwpt_paging_alloc", IOMMUFD_HWPT),
       ("iommufd_hwpt_nested_alloc", IOMMUFD_HWPT), ("iommufd_device_attach", IOMMUFD_DEVICE)),
    _r("iommufd-invalidate", "iommufd", "IOMMU_HWPT_INVALIDATE: only a nested HWPT (or vIOMMU) takes it; the array "
       "goes to the driver's cache_invalidate_user, which reports how many entries it did",
       ("iommufd_hwpt_invalidate", IOMMUFD_HWPT)),
    _r("iommufd-noncoherent-flush", "iommufd", "mainline iommufd never cleans CPU caches of pages mapped into a "
       "non-coherent HWPT; the 2024 proposal would, once per area",
       ("iopt_area_fill_domain", IOMMUFD_IOPT), note="Yan Zhao's series, iommufd patch"),
    _r("qemu-nested-device", "qemu", "x-flts=on: the assigned device needs an iommufd backend, a host unit with "
       "ECAP.NEST (and CAP.FS1GP when fs1gp), and no PCI bridge above it; its default HWPT is a NEST_PARENT "
       "second stage mapping all guest RAM (GPA → HPA)",
       ("vtd_check_hiod_accel", QEMU_VTD_ACCEL), ("iommufd_cdev_autodomains_get", "hw/vfio/iommufd.c")),
    _r("qemu-nested-pasid", "qemu", "a guest PASID-cache invalidation reads the guest's PASID entry: first stage → "
       "a nested HWPT (IOMMU_HWPT_DATA_VTD_S1) over the parent, attached; pass-through → the parent; not present → "
       "detached; no shadow, no map traps",
       ("vtd_pasid_cache_sync", QEMU_VTD), ("vtd_propagate_guest_pasid", QEMU_VTD_ACCEL),
       ("vtd_create_fs_hwpt", QEMU_VTD_ACCEL)),
    _r("qemu-nested-piotlb", "qemu", "a guest P_IOTLB of the device's DID and PASID goes to the host as "
       "IOMMU_HWPT_INVALIDATE on the nested HWPT (G2: everything; page-selective: its range, IH as LEAF)",
       ("vtd_piotlb_pasid_invalidate", QEMU_VTD), ("vtd_piotlb_page_invalidate", QEMU_VTD),
       ("vtd_flush_host_piotlb_all_locked", QEMU_VTD_ACCEL)),
)

RULES: dict[str, Rule] = {r.id: r for r in TABLE}
RULE_IDS: frozenset[str] = frozenset(RULES)


def rule(rid: str) -> Rule | None:
    """The rule a software decision names, or None (hw records name no rule of this table)."""
    return RULES.get(rid)
