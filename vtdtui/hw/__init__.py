"""The virtual VT-d hardware: mechanism only, bit-exact, no policy.

Public names are the spec's: a DmarUnit with CAP/ECAP, a root table of RootEntry,
context tables of ContextEntry, second-level tables of Pte, a context cache and an
IOTLB tagged by DID, register-based and queued invalidation, and Fault records that
render as the kernel's log lines.  Scalable mode (sm.py, sm_entries.py): 256-bit
context entries, PASID directory / table, first- and second-stage walks, a PASID
cache and PASID-tagged IOTLB entries, 256-bit descriptors.
"""

from . import faults, qi, regs
from .caches import ContextCache, ContextCacheEntry, Iotlb, IotlbEntry, PasidCache, PasidCacheEntry
from .entries import ContextEntry, Pte, RootEntry, bdf_str, parse_bdf
from .memory import CpuCache, PageAllocator, PhysMem
from .regs import CAP, ECAP
from .sm import PasidResult, SmContextResult
from .unit import DmarUnit, Translation

__all__ = [
    "CAP", "ECAP", "ContextCache", "ContextCacheEntry", "ContextEntry", "CpuCache",
    "DmarUnit", "Iotlb", "IotlbEntry", "PageAllocator", "PasidCache", "PasidCacheEntry", "PasidResult",
    "PhysMem", "Pte", "RootEntry", "SmContextResult", "Translation", "bdf_str", "faults", "parse_bdf", "qi",
    "regs",
]
