//! Putting a guest into memory: the kernel (linux-loader's ELF loader, PVH entry), the
//! initrd, the command line, the PVH `hvm_start_info` with the memory map and module
//! list (linux-loader's PVH boot configurator), the boot GDT and the ACPI tables.

use std::fs::File;

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{load_cmdline, Cmdline, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::*;
use crate::{acpi, Error};

/// `hvm_start_info.magic`.
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

/// The boot GDT: null, flat 32-bit code (selector 0x08), flat data (0x10), TSS (0x18).
pub const BOOT_GDT: [u64; 4] = [
    0,
    0x00cf_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x0000_8b00_0000_0067,
];

/// Real-mode code at the reset vector: `mov al, 0xfe; out 0x64, al; jmp $`, a reset
/// through the i8042. x86 Linux on a hardware-reduced ACPI machine reboots with
/// `reboot_type = BOOT_EFI` (efi_reboot_required()); without EFI it falls through to
/// BOOT_BIOS, which jumps here. Without the stub it would run whatever bytes are there.
pub const RESET_STUB: [u8; 6] = [0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe];

/// What the vCPUs need to know to start the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootInfo {
    /// The kernel's PVH entry point (32-bit protected mode, paging off).
    pub entry: u64,
    /// `hvm_start_info`'s address, handed over in %ebx.
    pub start_info: u64,
}

/// Loads everything into `mem` for a guest of `layout` with `vcpus` vCPUs.
pub fn load(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    vcpus: u8,
    kernel: &std::path::Path,
    initrd: Option<&std::path::Path>,
    cmdline: &str,
) -> Result<BootInfo, Error> {
    let mut kf = File::open(kernel)
        .map_err(|e| Error::Boot(format!("--kernel {}: {e}", kernel.display())))?;
    let loaded = Elf::load(mem, None, &mut kf, Some(GuestAddress(HIGHMEM_START))).map_err(|e| {
        Error::Boot(format!(
            "--kernel {}: cannot load as an ELF vmlinux ({e}); a bzImage is not supported yet: \
             extract the vmlinux (scripts/extract-vmlinux)",
            kernel.display()
        ))
    })?;
    let entry = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(a) => a.0,
        _ => {
            return Err(Error::Boot(format!(
                "--kernel {}: the ELF has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY; \
                 the kernel needs CONFIG_PVH)",
                kernel.display()
            )))
        }
    };

    let mut modules = Vec::new();
    if let Some(path) = initrd {
        let mut f = File::open(path)
            .map_err(|e| Error::Boot(format!("--initrd {}: {e}", path.display())))?;
        let size = f
            .metadata()
            .map_err(|e| Error::Boot(format!("--initrd {}: {e}", path.display())))?
            .len();
        let addr = layout.initrd_addr(loaded.kernel_end, size).ok_or_else(|| {
            Error::Boot(format!(
                "--initrd {} ({} MiB) does not fit above the kernel (which ends at {} MiB) in \
                 {} MiB of RAM: give the guest more --memory",
                path.display(),
                size.div_ceil(MIB),
                loaded.kernel_end.div_ceil(MIB),
                layout.low_ram_end() / MIB
            ))
        })?;
        let len = usize::try_from(size).map_err(|_| Error::Boot("initrd too large".into()))?;
        mem.read_exact_volatile_from(GuestAddress(addr), &mut f, len)
            .map_err(|e| Error::Boot(format!("--initrd {}: {e}", path.display())))?;
        modules.push(hvm_modlist_entry {
            paddr: addr,
            size,
            ..Default::default()
        });
    }

    let mut cl = Cmdline::new(CMDLINE_MAX).map_err(|e| Error::Boot(format!("cmdline: {e}")))?;
    cl.insert_str(cmdline)
        .map_err(|e| Error::Boot(format!("--cmdline: {e}")))?;
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cl)
        .map_err(|e| Error::Boot(format!("--cmdline: {e}")))?;

    let memmap: Vec<hvm_memmap_table_entry> = layout
        .e820()
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() {
            0
        } else {
            PVH_MODLIST_ADDR
        },
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: acpi::RSDP_ADDR,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mut bp = BootParams::new(&start_info, GuestAddress(PVH_INFO_ADDR));
    bp.set_sections(&memmap, GuestAddress(PVH_MEMMAP_ADDR));
    if !modules.is_empty() {
        bp.set_modules(&modules, GuestAddress(PVH_MODLIST_ADDR));
    }
    PvhBootConfigurator::write_bootparams(&bp, mem)
        .map_err(|e| Error::Boot(format!("PVH start info: {e}")))?;

    for (i, d) in BOOT_GDT.iter().enumerate() {
        mem.write_obj(*d, GuestAddress(GDT_ADDR + 8 * i as u64))
            .map_err(|e| Error::Boot(format!("GDT: {e}")))?;
    }
    mem.write_slice(&RESET_STUB, GuestAddress(RESET_VECTOR))
        .map_err(|e| Error::Boot(format!("reset stub: {e}")))?;
    for (addr, table) in acpi::build(acpi::RSDP_ADDR, vcpus) {
        mem.write_slice(&table, GuestAddress(addr))
            .map_err(|e| Error::Boot(format!("ACPI tables: {e}")))?;
    }
    log::debug!(
        "kernel {:#x}..{:#x}, PVH entry {entry:#x}, {} module(s)",
        loaded.kernel_load.0,
        loaded.kernel_end,
        modules.len()
    );
    Ok(BootInfo {
        entry,
        start_info: PVH_INFO_ADDR,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvh_structures_fit_their_slots() {
        assert!(PVH_INFO_ADDR + std::mem::size_of::<hvm_start_info>() as u64 <= PVH_MODLIST_ADDR);
        assert!(
            PVH_MODLIST_ADDR + std::mem::size_of::<hvm_modlist_entry>() as u64 <= PVH_MEMMAP_ADDR
        );
        assert!(GDT_ADDR + 8 * BOOT_GDT.len() as u64 <= PVH_INFO_ADDR);
    }

    #[test]
    fn a_file_that_is_not_elf_is_refused_clearly() {
        let layout = MemoryLayout::new(64);
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), (64 * MIB) as usize)])
            .expect("guest memory");
        let p = std::env::temp_dir().join(format!("vgpu-vmm-notelf-{}", std::process::id()));
        std::fs::write(&p, b"MZ this is not a vmlinux").expect("write");
        let e = load(&mem, &layout, 1, &p, None, "console=ttyS0").expect_err("not ELF");
        let _ = std::fs::remove_file(&p);
        assert!(
            e.to_string().contains("cannot load as an ELF vmlinux"),
            "{e}"
        );
    }
}
