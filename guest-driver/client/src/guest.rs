//! The guest driver (`guest-driver/vgpu_guest.c`) as a [`DeviceAccess`]: registers
//! through an uncached mapping of BAR2, VRAM through a mapping of BAR0 (both at VFIO's
//! region offsets, n << 40, on `/dev/vgpuN`), interrupts by poll() and read() of the
//! same file (read returns the MSIs since the last read, as an eventfd does).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vgpu_vfio::engine::poll_readable;
use vgpu_vfio::{abi, region, DeviceAccess, Error, MappedRegion, Result};

/// One device of the guest driver.
#[derive(Debug)]
pub struct GuestDevice {
    file: File,
    regs: MappedRegion,
}

fn io_err(what: String, source: std::io::Error) -> Error {
    Error::Open {
        path: PathBuf::from(what),
        source,
    }
}

impl GuestDevice {
    /// Opens `/dev/vgpuN` and maps its register BAR; returns it and the VRAM size
    /// (the PCI device's BAR0, from sysfs).
    pub fn open(node: &Path) -> Result<(Self, u64)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(node)
            .map_err(|e| io_err(node.display().to_string(), e))?;
        let name = node
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::InvalidArgument(format!("{}: no device name", node.display())))?;
        let res0 = format!("/sys/class/misc/{name}/device/resource0");
        let vram_size = std::fs::metadata(&res0)
            .map_err(|e| io_err(res0.clone(), e))?
            .len();
        let regs = MappedRegion::map_file(
            &file,
            region::BAR2,
            0,
            abi::MMIO_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
        )?;
        Ok((GuestDevice { file, regs }, vram_size))
    }

    /// A mapping of `len` bytes of VRAM (BAR0) from offset 0.
    pub fn map_vram(&self, len: u64) -> Result<MappedRegion> {
        MappedRegion::map_file(
            &self.file,
            region::BAR0,
            0,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    }
}

impl DeviceAccess for GuestDevice {
    fn read_reg(&self, off: u64) -> Result<u32> {
        self.regs.read_u32(off)
    }

    fn write_reg(&self, off: u64, v: u32) -> Result<()> {
        self.regs.write_u32(off, v)
    }

    fn wait_irq(&self, timeout: Duration) -> Result<u64> {
        if !poll_readable(self.file.as_raw_fd(), timeout, "poll(/dev/vgpu)")? {
            return Ok(0);
        }
        let mut b = [0u8; 8];
        // The file is blocking, but poll said an interrupt is there.
        match (&self.file).read(&mut b) {
            Ok(8) => Ok(u64::from_ne_bytes(b)),
            Ok(n) => Err(Error::Short {
                op: "read",
                done: n,
                want: 8,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(io_err("read(/dev/vgpu)".into(), e)),
        }
    }
}
