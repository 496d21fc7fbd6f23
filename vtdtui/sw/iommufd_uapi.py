"""The iommufd uAPI as include/uapi/linux/iommufd.h exports it (REFERENCE-2 §16): the
flags, types and structures user space (QEMU, a VMM) hands to IOMMU_HWPT_ALLOC,
IOMMU_HWPT_INVALIDATE and IOMMU_GET_HW_INFO, with the kernel's names.  Mechanism
only: the objects and their checks are sw/iommufd.py and the Intel driver's."""

from __future__ import annotations

import re
from dataclasses import dataclass

# enum iommufd_hwpt_alloc_flags
IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0
IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1
IOMMU_HWPT_FAULT_ID_VALID = 1 << 2
IOMMU_HWPT_ALLOC_PASID = 1 << 3
HWPT_ALLOC_FLAGS = {
    IOMMU_HWPT_ALLOC_NEST_PARENT: "NEST_PARENT",
    IOMMU_HWPT_ALLOC_DIRTY_TRACKING: "DIRTY_TRACKING",
    IOMMU_HWPT_FAULT_ID_VALID: "FAULT_ID_VALID",
    IOMMU_HWPT_ALLOC_PASID: "PASID",
}

# enum iommu_hwpt_data_type
IOMMU_HWPT_DATA_NONE = 0
IOMMU_HWPT_DATA_VTD_S1 = 1
IOMMU_HWPT_DATA_ARM_SMMUV3 = 2

# enum iommu_hwpt_vtd_s1_flags
IOMMU_VTD_S1_SRE = 1 << 0
IOMMU_VTD_S1_EAFE = 1 << 1
IOMMU_VTD_S1_WPE = 1 << 2

# enum iommu_hwpt_invalidate_data_type / iommu_hwpt_vtd_s1_invalidate_flags
IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 = 0
IOMMU_VTD_INV_FLAGS_LEAF = 1 << 0

# enum iommu_hw_info_type / iommu_hw_info_vtd_flags
IOMMU_HW_INFO_TYPE_INTEL_VTD = 1
IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 = 1 << 0

U64_MAX = (1 << 64) - 1

_ERRNO = re.compile(r"\((-E[A-Z0-9]+)\)\s*$")


class IommufdError(Exception):
    """An ioctl iommufd would fail; the message ends with the kernel's errno, which
    `errno` holds ("-EINVAL").  Here, beside the uAPI, so that a caller can catch it
    without loading the object model (sw/iommufd.py)."""

    def __init__(self, message: str):
        super().__init__(message)
        m = _ERRNO.search(message)
        self.errno = m.group(1) if m else None


def with_errno(text: str, default: str = "-EINVAL") -> str:
    """A driver's refusal as the ioctl returns it: its own errno, else `default`."""
    return text if _ERRNO.search(text) else f"{text} ({default})"


@dataclass(frozen=True)
class VtdS1:
    """struct iommu_hwpt_vtd_s1: the guest's first-stage table for a nested HWPT."""

    flags: int  # IOMMU_VTD_S1_SRE | _EAFE | _WPE
    pgtbl_addr: int  # guest-physical address of the first-stage top table
    addr_width: int  # 48 or 57
    reserved: int = 0  # __reserved


@dataclass(frozen=True)
class VtdS1Invalidate:
    """struct iommu_hwpt_vtd_s1_invalidate: one entry of IOMMU_HWPT_INVALIDATE's array.
    addr 0 with npages U64_MAX invalidates everything."""

    addr: int
    npages: int
    flags: int = 0  # IOMMU_VTD_INV_FLAGS_LEAF
    reserved: int = 0  # __reserved


@dataclass(frozen=True)
class HwInfoVtd:
    """struct iommu_hw_info_vtd, as intel_iommu_hw_info() fills it."""

    flags: int
    cap_reg: int
    ecap_reg: int
    type: int = IOMMU_HW_INFO_TYPE_INTEL_VTD


def flag_names(flags: int, names: dict[int, str]) -> str:
    """`NEST_PARENT|DIRTY_TRACKING`, unknown bits in hex, "0" for none."""
    out = [n for bit, n in names.items() if flags & bit]
    rest = flags & ~sum(names)
    if rest:
        out.append(f"{rest:#x}")
    return "|".join(out) or "0"
