//! Kernel-facing helpers for the rig: module load/unload, /dev/kmsg.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Where the rig puts the module.
pub const DEFAULT_KO: &str = "/lib/vgpu/vgpu_shim.ko";
/// The module's name.
pub const MODULE: &str = "vgpu_shim";

/// Path of the module file (`VGPU_SHIM_KO` overrides).
pub fn ko_path() -> String {
    std::env::var("VGPU_SHIM_KO").unwrap_or_else(|_| DEFAULT_KO.to_string())
}

/// Whether `name` is loaded.
pub fn module_loaded(name: &str) -> bool {
    Path::new("/sys/module")
        .join(name)
        .join("initstate")
        .exists()
        || Path::new("/sys/module").join(name).join("refcnt").exists()
}

/// finit_module(2) the module file with `params`.
pub fn load_module(path: &str, params: &str) -> io::Result<()> {
    let f = File::open(path)?;
    let p = CString::new(params).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: finit_module reads an fd and a NUL-terminated string that outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), p.as_ptr(), 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// delete_module(2) with O_NONBLOCK (fails instead of waiting while in use).
pub fn unload_module(name: &str) -> io::Result<()> {
    let n = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: delete_module reads a NUL-terminated string that outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_delete_module, n.as_ptr(), libc::O_NONBLOCK) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Module reference count, if readable.
pub fn module_refcnt(name: &str) -> Option<u64> {
    std::fs::read_to_string(Path::new("/sys/module").join(name).join("refcnt"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A reader of kernel log records written after it was opened.
pub struct Kmsg {
    file: File,
}

impl Kmsg {
    /// Open /dev/kmsg positioned at its end.
    pub fn open_at_end() -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")?;
        // SAFETY: lseek on an fd we own; SEEK_END on /dev/kmsg skips existing records.
        let r = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Kmsg { file })
    }

    /// The message texts of all records available now.
    pub fn drain(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    let msg = rec.split_once(';').map(|(_, m)| m).unwrap_or(&rec);
                    out.push(msg.lines().next().unwrap_or("").to_string());
                }
                // EPIPE: records were overwritten; keep reading from the next one.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(_) => break,
            }
        }
        out
    }
}
