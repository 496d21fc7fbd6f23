"""Software actors that decide: the Linux intel-iommu driver, VFIO type1, KVM and
QEMU's vIOMMU.  Each journals every flush it considers, issued or skipped."""
