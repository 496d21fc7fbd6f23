"""vtdtui: a terminal explorer for a virtual Intel VT-d IOMMU and the software around it.

It models the remapping hardware bit-exactly (registers, root/context/page tables,
IOTLB and context cache, invalidation interfaces, faults) together with the Linux
driver, VFIO type1, KVM and QEMU's virtual IOMMU that program it, and lets a user flip
CAP.CM, ECAP.C or ECAP.SC, attach groups, map and issue DMA, and read in a journal
which invalidations each step issued or skipped, and by which rule.  Importing this
package is cheap: the TUI and its dependencies load only when the TUI starts.
"""

__version__ = "0.1.0"
