//! Putting a guest into memory: the kernel, the initrd, the command line, the boot
//! structures, the boot GDT, the reset stub and the ACPI tables.
//!
//! Two boot protocols, picked by the kernel file's magic:
//! * **PVH** for an ELF vmlinux (linux-loader's ELF loader finds the PVH entry note;
//!   its PVH boot configurator writes `hvm_start_info` with the memory map and the
//!   initrd as module 0). Entry with %ebx = start info.
//! * **Linux 32-bit boot protocol** for a bzImage (linux-loader's bzImage loader puts
//!   the protected-mode part at 1 MiB and returns its setup header; we fill the zero
//!   page: e820, command line, initrd, RSDP). Entry at `code32_start` with %esi = zero
//!   page. The kernel decompresses itself.
//!
//! Both start in flat 32-bit protected mode with paging off, with the selectors the
//! 32-bit boot protocol asks for (__BOOT_CS 0x10, __BOOT_DS 0x18; PVH does not care).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{load_cmdline, BzImage, Cmdline, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::*;
use crate::{acpi, Error};

/// `hvm_start_info.magic`.
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

/// The boot GDT: null, null, flat 32-bit code (selector 0x10 = __BOOT_CS), flat data
/// (0x18 = __BOOT_DS), TSS (0x20).
pub const BOOT_GDT: [u64; 5] = [
    0,
    0,
    0x00cf_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x0000_8b00_0000_0067,
];
/// Index of the code descriptor in [`BOOT_GDT`].
pub const GDT_CODE: u16 = 2;
/// Index of the data descriptor.
pub const GDT_DATA: u16 = 3;
/// Index of the TSS descriptor.
pub const GDT_TSS: u16 = 4;

/// Real-mode code at the reset vector: `mov al, 0xfe; out 0x64, al; jmp $`, a reset
/// through the i8042. x86 Linux falls back to rebooting "through the BIOS" (a jump
/// here) when its other methods did not reset the machine; without the stub it would
/// run whatever bytes are there.
pub const RESET_STUB: [u8; 6] = [0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe];

/// The bzImage setup header's magic ("HdrS" at offset 0x202).
const BZIMAGE_MAGIC: [u8; 4] = *b"HdrS";
/// `boot_params.hdr.type_of_loader`: "undefined" loader.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;

/// The kernel image formats we boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// ELF vmlinux, booted through its PVH entry.
    ElfPvh,
    /// bzImage, booted through the 32-bit boot protocol.
    BzImage,
}

/// What the vCPUs need to know to start the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootInfo {
    /// How the kernel was loaded.
    pub format: KernelFormat,
    /// Where vCPU 0 starts (32-bit protected mode, paging off).
    pub entry: u64,
    /// %ebx at entry (PVH: `hvm_start_info`).
    pub rbx: u64,
    /// %esi at entry (32-bit boot protocol: the zero page).
    pub rsi: u64,
}

/// Tells the kernel format from the first bytes of the file.
pub fn kernel_format(f: &mut File) -> std::io::Result<Option<KernelFormat>> {
    let mut head = [0u8; 0x206];
    f.seek(SeekFrom::Start(0))?;
    let n = f.read(&mut head)?;
    f.seek(SeekFrom::Start(0))?;
    Ok(if n >= 4 && head[..4] == *b"\x7fELF" {
        Some(KernelFormat::ElfPvh)
    } else if n >= 0x206 && head[0x202..0x206] == BZIMAGE_MAGIC {
        Some(KernelFormat::BzImage)
    } else {
        None
    })
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
    let kerr =
        |e: &dyn std::fmt::Display| Error::Boot(format!("--kernel {}: {e}", kernel.display()));
    let mut kf = File::open(kernel).map_err(|e| kerr(&e))?;
    let format = kernel_format(&mut kf)
        .map_err(|e| kerr(&e))?
        .ok_or_else(|| {
            kerr(&"neither an ELF vmlinux nor a bzImage (no ELF magic, no \"HdrS\" setup header)")
        })?;

    let mut cl = Cmdline::new(CMDLINE_MAX).map_err(|e| Error::Boot(format!("cmdline: {e}")))?;
    cl.insert_str(cmdline)
        .map_err(|e| Error::Boot(format!("--cmdline: {e}")))?;
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cl)
        .map_err(|e| Error::Boot(format!("--cmdline: {e}")))?;

    let info = match format {
        KernelFormat::ElfPvh => {
            let loaded = Elf::load(mem, None, &mut kf, Some(GuestAddress(HIGHMEM_START)))
                .map_err(|e| kerr(&format!("cannot load the ELF vmlinux ({e})")))?;
            let entry =
                match loaded.pvh_boot_cap {
                    PvhBootCapability::PvhEntryPresent(a) => a.0,
                    _ => return Err(kerr(
                        &"the ELF has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY; the kernel \
                          needs CONFIG_PVH); boot its bzImage instead",
                    )),
                };
            let initrd = load_initrd(mem, layout, initrd, loaded.kernel_end, u64::MAX)?;
            write_pvh_start_info(mem, layout, initrd)?;
            BootInfo {
                format,
                entry,
                rbx: PVH_INFO_ADDR,
                rsi: 0,
            }
        }
        KernelFormat::BzImage => {
            let loaded = BzImage::load(mem, None, &mut kf, Some(GuestAddress(HIGHMEM_START)))
                .map_err(|e| kerr(&format!("cannot load the bzImage ({e})")))?;
            let mut hdr = loaded
                .setup_header
                .ok_or_else(|| kerr(&"the bzImage has no setup header"))?;
            // The kernel decompresses itself from its load address up to init_size.
            let kernel_end = loaded.kernel_load.0 + u64::from(hdr.init_size).max(loaded.kernel_end);
            let max = u64::from(hdr.initrd_addr_max);
            let initrd = load_initrd(mem, layout, initrd, kernel_end, max)?;
            hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
            hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
            hdr.cmdline_size = cmdline.len() as u32 + 1;
            if let Some((addr, size)) = initrd {
                hdr.ramdisk_image = addr as u32;
                hdr.ramdisk_size = size as u32;
            }
            write_zero_page(mem, layout, hdr)?;
            BootInfo {
                format,
                entry: loaded.kernel_load.0,
                rbx: 0,
                rsi: BOOT_PARAMS_ADDR,
            }
        }
    };

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
    log::debug!("{format:?} kernel, entry {:#x}", info.entry);
    Ok(info)
}

/// Reads the initrd to the top of low RAM, above `kernel_end` and below `max`:
/// `(address, size)`.
fn load_initrd(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    path: Option<&std::path::Path>,
    kernel_end: u64,
    max: u64,
) -> Result<Option<(u64, u64)>, Error> {
    let Some(path) = path else { return Ok(None) };
    let err = |e: &dyn std::fmt::Display| Error::Boot(format!("--initrd {}: {e}", path.display()));
    let mut f = File::open(path).map_err(|e| err(&e))?;
    let size = f.metadata().map_err(|e| err(&e))?.len();
    let addr = layout
        .initrd_addr(kernel_end, size)
        .filter(|a| a.saturating_add(size) <= max.saturating_add(1))
        .ok_or_else(|| {
            err(&format!(
                "{} MiB does not fit above the kernel (which needs up to {} MiB) in {} MiB \
                 of RAM: give the guest more --memory",
                size.div_ceil(MIB),
                kernel_end.div_ceil(MIB),
                layout.low_ram_end() / MIB
            ))
        })?;
    let len = usize::try_from(size).map_err(|_| err(&"too large"))?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut f, len)
        .map_err(|e| err(&e))?;
    Ok(Some((addr, size)))
}

fn write_pvh_start_info(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    initrd: Option<(u64, u64)>,
) -> Result<(), Error> {
    let modules: Vec<hvm_modlist_entry> = initrd
        .iter()
        .map(|&(paddr, size)| hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        })
        .collect();
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
        .map_err(|e| Error::Boot(format!("PVH start info: {e}")))
}

/// The zero page (`boot_params`) of the 32-bit boot protocol.
pub fn zero_page(
    layout: &MemoryLayout,
    hdr: linux_loader::loader::bootparam::setup_header,
) -> boot_params {
    let mut p = boot_params {
        hdr,
        acpi_rsdp_addr: acpi::RSDP_ADDR,
        ..Default::default()
    };
    let e820 = layout.e820();
    for (slot, e) in p.e820_table.iter_mut().zip(&e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    p.e820_entries = e820.len().min(p.e820_table.len()) as u8;
    p
}

fn write_zero_page(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    hdr: linux_loader::loader::bootparam::setup_header,
) -> Result<(), Error> {
    let p = zero_page(layout, hdr);
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&p, GuestAddress(BOOT_PARAMS_ADDR)),
        mem,
    )
    .map_err(|e| Error::Boot(format!("zero page: {e}")))
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
        const { assert!(PVH_MEMMAP_ADDR + 0x1000 <= BOOT_PARAMS_ADDR) };
        assert!(BOOT_PARAMS_ADDR + std::mem::size_of::<boot_params>() as u64 <= CMDLINE_ADDR);
    }

    #[test]
    fn zero_page_carries_the_memory_map_and_rsdp() {
        let layout = MemoryLayout::new(5000);
        let p = zero_page(&layout, Default::default());
        assert_eq!(p.e820_entries, 4);
        let e = p.e820_table[3];
        let (addr, size, kind) = (e.addr, e.size, e.r#type);
        assert_eq!(
            (addr, size, kind),
            (MMIO_HOLE_END, (5000 - 3072) * MIB, E820_RAM)
        );
        let rsdp = p.acpi_rsdp_addr;
        assert_eq!(rsdp, acpi::RSDP_ADDR);
    }

    #[test]
    fn kernel_format_by_magic() {
        let dir = std::env::temp_dir();
        let check = |name: &str, bytes: &[u8]| {
            let p = dir.join(format!("vgpu-vmm-fmt-{}-{name}", std::process::id()));
            std::fs::write(&p, bytes).expect("write");
            let r = kernel_format(&mut File::open(&p).expect("open")).expect("read");
            let _ = std::fs::remove_file(&p);
            r
        };
        assert_eq!(check("elf", b"\x7fELF\x02\x01"), Some(KernelFormat::ElfPvh));
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(check("bz", &bz), Some(KernelFormat::BzImage));
        assert_eq!(check("short", b"MZ"), None);
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
            e.to_string()
                .contains("neither an ELF vmlinux nor a bzImage"),
            "{e}"
        );
    }
}
