//! Constants of the vgpu device ABI (docs/device-abi.md, docs/engine-abi.md): PCI
//! identity, regions, the DISPI/info/engine register files, DRM formats and the types,
//! shared by clients and tests.

/// PCI vendor ID (bochs display).
pub const VENDOR_ID: u16 = 0x1234;
/// PCI device ID (bochs display).
pub const DEVICE_ID: u16 = 0x1111;
/// PCI subsystem vendor ID.
pub const SUBSYS_VENDOR_ID: u16 = 0x1234;
/// PCI subsystem ID ("VG": identifies vgpu).
pub const SUBSYS_ID: u16 = 0x5647;
/// PCI revision.
pub const REVISION: u8 = 0x01;
/// PCI class code (display, other), 24 bits.
pub const CLASS_CODE: u32 = 0x03_80_00;
/// Config space offset of the MSI capability.
pub const MSI_CAP_OFFSET: u8 = 0x40;
/// Size of the config space region.
pub const CONFIG_SIZE: u64 = 256;

/// VFIO region index of the display (scanout snapshot) region.
pub const DISPLAY_REGION_INDEX: u32 = 9;
/// Largest display region.
pub const DISPLAY_REGION_MAX: u64 = 16 << 20;
/// Region type capability of the display region: `VFIO_REGION_TYPE_PCI_VENDOR_TYPE | 0x1234`.
pub const DISPLAY_REGION_TYPE: u32 = 0x8000_0000 | 0x1234;
/// Region subtype of the display region.
pub const DISPLAY_REGION_SUBTYPE: u32 = 1;
/// Size of BAR2 (MMIO).
pub const MMIO_SIZE: u64 = 4096;

/// BAR2 offset of the bochs DISPI register file (index `i` at `DISPI_BASE + 2 * i`).
pub const DISPI_BASE: u64 = 0x500;
/// BAR2 offset of the QEMU extended registers' size register.
pub const QEXT_SIZE: u64 = 0x600;
/// BAR2 offset of the QEMU extended registers' endianness register.
pub const QEXT_ENDIAN: u64 = 0x604;
/// Value of the endianness register (little endian).
pub const QEXT_LITTLE_ENDIAN: u32 = 0x1e1e_1e1e;

/// DISPI register indexes (bochs VBE).
pub mod dispi {
    /// ID register; reads [`ID_VALUE`].
    pub const ID: u16 = 0;
    /// X resolution.
    pub const XRES: u16 = 1;
    /// Y resolution.
    pub const YRES: u16 = 2;
    /// Bits per pixel.
    pub const BPP: u16 = 3;
    /// Enable register.
    pub const ENABLE: u16 = 4;
    /// Bank.
    pub const BANK: u16 = 5;
    /// Virtual width (stride in pixels).
    pub const VIRT_WIDTH: u16 = 6;
    /// Virtual height.
    pub const VIRT_HEIGHT: u16 = 7;
    /// X offset of the scanout.
    pub const X_OFFSET: u16 = 8;
    /// Y offset of the scanout.
    pub const Y_OFFSET: u16 = 9;
    /// VRAM size in 64 KiB units.
    pub const VIDEO_MEMORY_64K: u16 = 10;
    /// Value of the ID register.
    pub const ID_VALUE: u16 = 0xB0C5;
    /// ENABLE bit: display enabled.
    pub const ENABLED: u16 = 1 << 0;
    /// ENABLE bit: XRES/YRES/BPP read maxima.
    pub const GETCAPS: u16 = 1 << 1;
    /// ENABLE bit: linear frame buffer. Bit 6 (0x40) as in bochs, QEMU and bochs-drm;
    /// docs/device-abi.md says "bit 5", which in bochs is VBE_DISPI_8BIT_DAC.
    pub const LFB_ENABLED: u16 = 1 << 6;
    /// ENABLE bit: do not clear memory.
    pub const NOCLEARMEM: u16 = 1 << 7;
    /// Maximum XRES reported with GETCAPS.
    pub const MAX_XRES: u16 = 2560;
    /// Maximum YRES reported with GETCAPS.
    pub const MAX_YRES: u16 = 1600;
    /// Maximum BPP reported with GETCAPS.
    pub const MAX_BPP: u16 = 32;

    /// BAR2 offset of DISPI register `index`.
    pub const fn offset(index: u16) -> u64 {
        super::DISPI_BASE + 2 * index as u64
    }
}

/// BAR2 offsets of the vgpu info block (32-bit, read-only).
pub mod info {
    /// "VGPU" in little-endian bytes.
    pub const VGPU_ID: u64 = 0x800;
    /// Version register.
    pub const VGPU_VERSION: u64 = 0x804;
    /// Quota in bytes, low 32 bits.
    pub const VRAM_SIZE_LO: u64 = 0x808;
    /// Quota in bytes, high 32 bits.
    pub const VRAM_SIZE_HI: u64 = 0x80c;
    /// Quota in MiB.
    pub const VRAM_MB: u64 = 0x810;
    /// Allocated pages × 4.
    pub const VRAM_USED_KB: u64 = 0x814;
    /// Current weight.
    pub const WEIGHT: u64 = 0x818;
    /// Current cap.
    pub const CAP: u64 = 0x81c;
    /// Parent index.
    pub const PARENT_INDEX: u64 = 0x820;
    /// Value of VGPU_ID.
    pub const ID_VALUE: u32 = 0x5550_4756;
    /// Value of VGPU_VERSION (1.0).
    pub const VERSION_VALUE: u32 = 0x0001_0000;
}

/// The engine block of BAR2 (docs/engine-abi.md): registers, bits, error codes, opcodes.
pub mod engine {
    /// First byte of the engine block.
    pub const BLOCK_START: u64 = 0x900;
    /// One past the last byte of the engine block.
    pub const BLOCK_END: u64 = 0xa00;
    /// VRAM offset of the ring, low 32 bits (4 KiB aligned).
    pub const RING_BASE_LO: u64 = 0x900;
    /// VRAM offset of the ring, high 32 bits.
    pub const RING_BASE_HI: u64 = 0x904;
    /// Ring size in bytes (a power of two, [`RING_SIZE_MIN`]..=[`RING_SIZE_MAX`]).
    pub const RING_SIZE: u64 = 0x908;
    /// Ring offset of the next command the engine reads (read-only).
    pub const RING_HEAD: u64 = 0x90c;
    /// Ring offset one past the last command submitted.
    pub const RING_TAIL: u64 = 0x910;
    /// Any write: re-examine TAIL and schedule the ring.
    pub const DOORBELL: u64 = 0x914;
    /// Bit 0 ENABLE.
    pub const RING_CTL: u64 = 0x918;
    /// STATUS bits ([`STATUS_ENABLED`] ...).
    pub const STATUS: u64 = 0x91c;
    /// First error code since the last reset ([`ErrorCode`](crate::cmd::ErrorCode)).
    pub const ERROR: u64 = 0x920;
    /// Ring offset of the command that failed.
    pub const ERROR_HEAD: u64 = 0x924;
    /// Last completed fence, low 32 bits.
    pub const FENCE_LO: u64 = 0x928;
    /// Last completed fence, high 32 bits.
    pub const FENCE_HI: u64 = 0x92c;
    /// Interrupt status (write 1 to clear).
    pub const IRQ_STATUS: u64 = 0x930;
    /// Interrupt mask (1 = that source raises the interrupt).
    pub const IRQ_MASK: u64 = 0x934;
    /// Write 1: stop and reset the engine state of this instance (VRAM kept).
    pub const ENGINE_RESET: u64 = 0x938;
    /// Commands completed (wraps).
    pub const CMDS_DONE: u64 = 0x93c;
    /// TAIL shadow, low 32 bits: bit 0 [`SHADOW_ENABLE`], bits 2–31 the low bits of
    /// the VRAM offset of the shadow TAIL word (4-aligned). While enabled, each
    /// DOORBELL first reads the u32 there and takes it as a RING_TAIL write.
    pub const TAIL_SHADOW_LO: u64 = 0x940;
    /// TAIL shadow, high 32 bits of the offset (ignored while the shadow is enabled).
    pub const TAIL_SHADOW_HI: u64 = 0x944;
    /// Interrupt sources that are edge-style: each event signals the interrupt (if
    /// unmasked in IRQ_MASK) and is not latched in IRQ_STATUS (nothing to acknowledge).
    pub const IRQ_EDGE: u64 = 0x948;

    /// The engine registers a driver can read, by name. A device reset
    /// (`VFIO_DEVICE_RESET`) and the last close put every one of them back to 0
    /// (docs/engine-abi.md, "Resets and close"); ENGINE_RESET keeps RING_BASE, RING_SIZE,
    /// FENCE, IRQ_MASK and CMDS_DONE.
    pub const READABLE: [(&str, u64); 17] = [
        ("RING_BASE_LO", RING_BASE_LO),
        ("RING_BASE_HI", RING_BASE_HI),
        ("RING_SIZE", RING_SIZE),
        ("RING_HEAD", RING_HEAD),
        ("RING_TAIL", RING_TAIL),
        ("RING_CTL", RING_CTL),
        ("STATUS", STATUS),
        ("ERROR", ERROR),
        ("ERROR_HEAD", ERROR_HEAD),
        ("FENCE_LO", FENCE_LO),
        ("FENCE_HI", FENCE_HI),
        ("IRQ_STATUS", IRQ_STATUS),
        ("IRQ_MASK", IRQ_MASK),
        ("CMDS_DONE", CMDS_DONE),
        ("TAIL_SHADOW_LO", TAIL_SHADOW_LO),
        ("TAIL_SHADOW_HI", TAIL_SHADOW_HI),
        ("IRQ_EDGE", IRQ_EDGE),
    ];
    /// What each of [`READABLE`] reads after a device reset.
    pub const DEVICE_RESET_VALUE: u32 = 0;

    /// RING_CTL: ENABLE.
    pub const CTL_ENABLE: u32 = 1 << 0;
    /// TAIL_SHADOW_LO: ENABLE.
    pub const SHADOW_ENABLE: u32 = 1 << 0;
    /// Alignment of the shadow TAIL word in VRAM.
    pub const SHADOW_ALIGN: u64 = 4;
    /// STATUS: ring enabled.
    pub const STATUS_ENABLED: u32 = 1 << 0;
    /// STATUS: commands pending or in flight.
    pub const STATUS_BUSY: u32 = 1 << 1;
    /// STATUS: ring stopped by an error.
    pub const STATUS_ERROR: u32 = 1 << 2;
    /// STATUS: the watchdog fired.
    pub const STATUS_HUNG: u32 = 1 << 3;
    /// IRQ_STATUS / IRQ_MASK: a FENCE with the IRQ flag completed.
    pub const IRQ_FENCE: u32 = 1 << 0;
    /// IRQ_STATUS / IRQ_MASK: an error stopped the ring.
    pub const IRQ_ERROR: u32 = 1 << 1;
    /// IRQ_STATUS / IRQ_MASK: the watchdog fired.
    pub const IRQ_WATCHDOG: u32 = 1 << 2;
    /// All interrupt sources.
    pub const IRQ_ALL: u32 = IRQ_FENCE | IRQ_ERROR | IRQ_WATCHDOG;

    /// Size of one command.
    pub const CMD_SIZE: u64 = 64;
    /// Smallest ring.
    pub const RING_SIZE_MIN: u64 = 4096;
    /// Largest ring.
    pub const RING_SIZE_MAX: u64 = 1 << 20;
    /// Alignment of RING_BASE.
    pub const RING_BASE_ALIGN: u64 = 4096;

    /// Opcode NOP.
    pub const OP_NOP: u8 = 0x00;
    /// Opcode FILL.
    pub const OP_FILL: u8 = 0x01;
    /// Opcode COPY.
    pub const OP_COPY: u8 = 0x02;
    /// Opcode CHECKSUM.
    pub const OP_CHECKSUM: u8 = 0x03;
    /// Opcode GEMM.
    pub const OP_GEMM: u8 = 0x04;
    /// Opcode BLIT.
    pub const OP_BLIT: u8 = 0x05;
    /// Opcode FENCE.
    pub const OP_FENCE: u8 = 0x06;
    /// Opcode JUMP.
    pub const OP_JUMP: u8 = 0x07;
    /// FENCE flag: raise IRQ_STATUS.FENCE.
    pub const FENCE_FLAG_IRQ: u8 = 1 << 0;
    /// FENCE flag: also write the seqno as a u64 at arg1.
    pub const FENCE_FLAG_WRITE: u8 = 1 << 1;
    /// Largest GEMM dimension.
    pub const GEMM_DIM_MAX: u64 = 65536;
    /// FNV-1a-64 offset basis.
    pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    /// FNV-1a-64 prime.
    pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
}

/// DRM fourcc codes used by the display plane.
pub mod drm {
    const fn fourcc(a: u8, b: u8, c: u8, d: u8) -> u32 {
        a as u32 | (b as u32) << 8 | (c as u32) << 16 | (d as u32) << 24
    }
    /// DRM_FORMAT_RGB565.
    pub const FORMAT_RGB565: u32 = fourcc(b'R', b'G', b'1', b'6');
    /// DRM_FORMAT_RGB888.
    pub const FORMAT_RGB888: u32 = fourcc(b'R', b'G', b'2', b'4');
    /// DRM_FORMAT_XRGB8888.
    pub const FORMAT_XRGB8888: u32 = fourcc(b'X', b'R', b'2', b'4');
    /// DRM_PLANE_TYPE_OVERLAY.
    pub const PLANE_TYPE_OVERLAY: u32 = 0;
    /// DRM_PLANE_TYPE_PRIMARY.
    pub const PLANE_TYPE_PRIMARY: u32 = 1;
    /// DRM_PLANE_TYPE_CURSOR.
    pub const PLANE_TYPE_CURSOR: u32 = 2;

    /// The DRM format the ABI reports for a bochs bpp, if displayable.
    pub const fn format_for_bpp(bpp: u16) -> Option<u32> {
        match bpp {
            16 => Some(FORMAT_RGB565),
            24 => Some(FORMAT_RGB888),
            32 => Some(FORMAT_XRGB8888),
            _ => None,
        }
    }
}

/// One rung of the type ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeSpec {
    /// Type directory name under `mdev_supported_types`.
    pub id: &'static str,
    /// Human readable name.
    pub name: &'static str,
    /// VRAM quota in MiB.
    pub vram_mb: u64,
    /// Default scheduler weight.
    pub weight: u32,
}

/// The type ladder every parent offers.
pub const TYPES: [TypeSpec; 6] = [
    TypeSpec {
        id: "vgpu_shim-128M",
        name: "vgpu 128M",
        vram_mb: 128,
        weight: 1,
    },
    TypeSpec {
        id: "vgpu_shim-256M",
        name: "vgpu 256M",
        vram_mb: 256,
        weight: 1,
    },
    TypeSpec {
        id: "vgpu_shim-512M",
        name: "vgpu 512M",
        vram_mb: 512,
        weight: 2,
    },
    TypeSpec {
        id: "vgpu_shim-1G",
        name: "vgpu 1G",
        vram_mb: 1024,
        weight: 4,
    },
    TypeSpec {
        id: "vgpu_shim-2G",
        name: "vgpu 2G",
        vram_mb: 2048,
        weight: 8,
    },
    TypeSpec {
        id: "vgpu_shim-4G",
        name: "vgpu 4G",
        vram_mb: 4096,
        weight: 16,
    },
];

/// Look a type up by its directory name.
pub fn type_spec(id: &str) -> Option<&'static TypeSpec> {
    TYPES.iter().find(|t| t.id == id)
}

/// Size of the display region for a quota in bytes: `min(quota, 16 MiB)`.
pub const fn display_region_size(quota_bytes: u64) -> u64 {
    if quota_bytes < DISPLAY_REGION_MAX {
        quota_bytes
    } else {
        DISPLAY_REGION_MAX
    }
}

/// VIDEO_MEMORY_64K for a quota in bytes: quota / 64 KiB clamped to 0xffff.
pub const fn video_memory_64k(quota_bytes: u64) -> u16 {
    let v = quota_bytes >> 16;
    if v > 0xffff {
        0xffff
    } else {
        v as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourcc_values() {
        assert_eq!(drm::FORMAT_XRGB8888, 0x3432_5258);
        assert_eq!(drm::FORMAT_RGB565, 0x3631_4752);
        assert_eq!(drm::FORMAT_RGB888, 0x3432_4752);
    }

    #[test]
    fn ladder_weights_are_share_of_4g_out_of_16() {
        for t in TYPES {
            assert_eq!(
                u64::from(t.weight),
                (t.vram_mb * 16 / 4096).max(1),
                "{}",
                t.id
            );
        }
        assert_eq!(type_spec("vgpu_shim-1G").map(|t| t.vram_mb), Some(1024));
        assert!(type_spec("nope").is_none());
    }

    #[test]
    fn derived_sizes() {
        assert_eq!(display_region_size(128 << 20), 16 << 20);
        assert_eq!(display_region_size(8 << 20), 8 << 20);
        assert_eq!(video_memory_64k(128 << 20), 2048);
        assert_eq!(video_memory_64k(4096 << 20), 0xffff);
        assert_eq!(dispi::offset(dispi::VIDEO_MEMORY_64K), 0x514);
    }

    #[test]
    fn readable_engine_registers() {
        use engine::*;
        let mut offs: Vec<u64> = READABLE.iter().map(|r| r.1).collect();
        offs.sort_unstable();
        offs.dedup();
        assert_eq!(offs.len(), READABLE.len());
        assert!(offs
            .iter()
            .all(|&o| (BLOCK_START..BLOCK_END).contains(&o) && o % 4 == 0));
        assert!(!offs.contains(&DOORBELL) && !offs.contains(&ENGINE_RESET));
    }
}
