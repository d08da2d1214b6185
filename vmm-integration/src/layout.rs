//! The guest-physical memory map: where RAM is, where the boot structures go, and the
//! e820 table the guest is given.
//!
//! ```text
//! 0x0000_0000  RAM (low)          0x500 GDT, 0x6000 PVH start_info + module list,
//!                                 0x7000 memory map, 0x8000 zero page (bzImage),
//!                                 0x20000 command line
//! 0x0009_fc00  reserved           (EBDA: real BIOSes put it here; the kernel expects a hole)
//! 0x000e_0000  reserved           ACPI tables (RSDP first), up to 0x10_0000
//! 0x0010_0000  RAM                the kernel (at its ELF physical address), free memory,
//!                                 the initrd at the top
//! 0xc000_0000  MMIO hole (1 GiB)  IOAPIC 0xfec0_0000, LAPIC 0xfee0_0000, KVM's TSS page;
//!                                 later the PCI BARs
//! 0x1_0000_0000 RAM (high)        whatever of --memory did not fit below the hole
//! ```

use vm_memory::GuestAddress;

/// 1 MiB.
pub const MIB: u64 = 1 << 20;
/// Smallest guest the VMM accepts: below this not even the boot structures, a kernel
/// and an initrd fit (a Debian kernel wants about 48 MiB more to get to /init).
pub const MIN_MEMORY_MIB: u64 = 32;
/// Largest guest the VMM accepts (a sanity bound on the flag, not a KVM limit).
pub const MAX_MEMORY_MIB: u64 = 1 << 20;

/// The GDT the vCPUs start with (PVH: flat 32-bit protected mode).
pub const GDT_ADDR: u64 = 0x500;
/// PVH `hvm_start_info`.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// PVH module list (the initrd is module 0), right after `hvm_start_info`.
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
/// PVH memory map (the e820 entries).
pub const PVH_MEMMAP_ADDR: u64 = 0x7000;
/// The zero page (`boot_params`) of the 32-bit boot protocol (bzImage).
pub const BOOT_PARAMS_ADDR: u64 = 0x8000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// x86 Linux's COMMAND_LINE_SIZE: the command line, its terminating NUL included.
pub const CMDLINE_MAX: usize = 2048;
/// End of the low RAM the guest sees below 1 MiB (the EBDA starts here).
pub const EBDA_START: u64 = 0x9_fc00;
/// ACPI tables: the RSDP is found here (passed in `hvm_start_info.rsdp_paddr`).
pub const ACPI_START: u64 = 0xe_0000;
/// The x86 reset vector (F000:FFF0 in real mode): where a guest that asks the BIOS to
/// reboot jumps. The VMM puts a stub there that resets through the i8042.
pub const RESET_VECTOR: u64 = 0xf_fff0;
/// End of the legacy BIOS area; where high memory (and the kernel) starts.
pub const HIGHMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO hole (4 GiB).
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// The IOAPIC's MMIO base (KVM's in-kernel IOAPIC).
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// The local APICs' MMIO base.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// Three pages KVM needs for the TSS on Intel (KVM_SET_TSS_ADDR), in the hole.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;

/// e820 entry types.
pub const E820_RAM: u32 = 1;
/// e820 reserved.
pub const E820_RESERVED: u32 = 2;

/// One e820 / PVH memory map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// Where the guest's RAM is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryLayout {
    /// RAM ranges `(start, size)`, in address order: one below the MMIO hole and, for a
    /// guest larger than 3 GiB, one above 4 GiB.
    pub ram: Vec<(GuestAddress, u64)>,
}

impl MemoryLayout {
    /// The layout for `mib` MiB of guest RAM. The caller has checked the size
    /// (`config::VmConfig::validate`).
    pub fn new(mib: u64) -> Self {
        let bytes = mib * MIB;
        let low = bytes.min(MMIO_HOLE_START);
        let mut ram = vec![(GuestAddress(0), low)];
        if bytes > low {
            ram.push((GuestAddress(MMIO_HOLE_END), bytes - low));
        }
        MemoryLayout { ram }
    }

    /// End (exclusive) of the RAM below the MMIO hole: the initrd goes just under it.
    pub fn low_ram_end(&self) -> u64 {
        self.ram[0].0 .0 + self.ram[0].1
    }

    /// Total RAM in bytes.
    pub fn total(&self) -> u64 {
        self.ram.iter().map(|r| r.1).sum()
    }

    /// The memory map the guest is given: RAM below the EBDA, the EBDA and BIOS area
    /// reserved (the ACPI tables live there), RAM from 1 MiB, RAM above 4 GiB.
    pub fn e820(&self) -> Vec<E820Entry> {
        let mut map = vec![
            E820Entry {
                addr: 0,
                size: EBDA_START,
                kind: E820_RAM,
            },
            E820Entry {
                addr: EBDA_START,
                size: HIGHMEM_START - EBDA_START,
                kind: E820_RESERVED,
            },
            E820Entry {
                addr: HIGHMEM_START,
                size: self.low_ram_end() - HIGHMEM_START,
                kind: E820_RAM,
            },
        ];
        if let Some(&(start, size)) = self.ram.get(1) {
            map.push(E820Entry {
                addr: start.0,
                size,
                kind: E820_RAM,
            });
        }
        map
    }

    /// Where an initrd of `size` bytes goes: page-aligned, as high as possible in the
    /// low RAM, above `kernel_end`. `None` if it does not fit.
    pub fn initrd_addr(&self, kernel_end: u64, size: u64) -> Option<u64> {
        let addr = self.low_ram_end().checked_sub(size)? & !0xfff;
        (addr >= kernel_end && addr >= HIGHMEM_START).then_some(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_range() {
        let l = MemoryLayout::new(256);
        assert_eq!(l.ram, vec![(GuestAddress(0), 256 * MIB)]);
        assert_eq!(l.total(), 256 * MIB);
        assert_eq!(l.low_ram_end(), 256 * MIB);
    }

    #[test]
    fn large_guest_skips_the_mmio_hole() {
        let l = MemoryLayout::new(4096);
        assert_eq!(
            l.ram,
            vec![
                (GuestAddress(0), MMIO_HOLE_START),
                (GuestAddress(MMIO_HOLE_END), 1024 * MIB)
            ]
        );
        assert_eq!(l.total(), 4096 * MIB);
        let e = l.e820();
        assert_eq!(e.len(), 4);
        assert_eq!(e[3].addr, MMIO_HOLE_END);
        assert_eq!(e[3].size, 1024 * MIB);
    }

    #[test]
    fn e820_covers_ram_and_reserves_the_bios_area() {
        let l = MemoryLayout::new(128);
        let e = l.e820();
        assert_eq!(
            e,
            vec![
                E820Entry {
                    addr: 0,
                    size: EBDA_START,
                    kind: E820_RAM
                },
                E820Entry {
                    addr: EBDA_START,
                    size: HIGHMEM_START - EBDA_START,
                    kind: E820_RESERVED
                },
                E820Entry {
                    addr: HIGHMEM_START,
                    size: 128 * MIB - HIGHMEM_START,
                    kind: E820_RAM
                },
            ]
        );
        // Boot structures are in RAM, the ACPI tables in the reserved range.
        const {
            assert!(GDT_ADDR + 0x1000 <= EBDA_START);
            assert!(PVH_INFO_ADDR + 0x1000 <= EBDA_START);
            assert!(PVH_MEMMAP_ADDR + 0x1000 <= EBDA_START);
            assert!(ACPI_START >= EBDA_START && ACPI_START < HIGHMEM_START);
            assert!(CMDLINE_ADDR + CMDLINE_MAX as u64 <= EBDA_START);
        }
    }

    #[test]
    fn initrd_goes_on_top_of_low_ram_above_the_kernel() {
        let l = MemoryLayout::new(64);
        assert_eq!(
            l.initrd_addr(32 * MIB, 0x1234),
            Some((64 * MIB - 0x1234) & !0xfff)
        );
        assert_eq!(l.initrd_addr(60 * MIB, 8 * MIB), None);
        assert_eq!(l.initrd_addr(0, 65 * MIB), None);
        let big = MemoryLayout::new(8192);
        assert_eq!(big.initrd_addr(16 * MIB, MIB), Some(MMIO_HOLE_START - MIB));
    }
}
