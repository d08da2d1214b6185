//! Command-line configuration of a VM: flags (clap), checks, and the [`VmConfig`] the
//! rest of the VMM works from.

use std::path::PathBuf;

use clap::Parser;

use crate::layout::{CMDLINE_MAX, MAX_MEMORY_MIB, MIN_MEMORY_MIB};
use crate::Error;

/// Most vCPUs: xAPIC IDs are 8 bits and 0xff is the broadcast ID; one more is left for
/// the IOAPIC's ID in the MADT.
pub const MAX_VCPUS: u8 = 254;

/// The default kernel command line: console on the 8250, and a guest panic turns into
/// a reset (exit status [`crate::ExitStatus::Reset`]) instead of a hang.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1";

/// vgpu-vmm: boot a Linux guest under KVM.
///
/// Exit status: 0 the guest powered off, 1 the VMM failed (the message says why),
/// 2 bad arguments, 3 the guest reset or rebooted (also a panic with panic=-1 or a
/// triple fault), 4 the guest crashed the vCPU (KVM internal error or failed entry),
/// 130/143 stopped by SIGINT/SIGTERM.
#[derive(Parser, Debug, Clone)]
#[command(name = "vgpu-vmm", version, about, long_about = None)]
pub struct Args {
    /// Kernel to boot: an ELF vmlinux with a PVH entry note (booted via PVH), or a
    /// bzImage such as Debian's /boot/vmlinuz-* (booted via the 32-bit boot protocol;
    /// it decompresses itself, which takes longer).
    #[arg(long, value_name = "FILE")]
    pub kernel: PathBuf,

    /// Initial ramdisk (a cpio archive, compressed or not).
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,

    /// Kernel command line.
    #[arg(long, value_name = "STRING", default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,

    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=MAX_VCPUS as i64))]
    pub vcpus: u8,

    /// Guest RAM in MiB.
    #[arg(long, value_name = "MiB", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(MIN_MEMORY_MIB..=MAX_MEMORY_MIB))]
    pub memory: u64,

    /// Write the serial console (COM1) to FILE (created or truncated) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub serial_file: Option<PathBuf>,

    /// The KVM device.
    #[arg(long, value_name = "PATH", default_value = "/dev/kvm")]
    pub kvm: PathBuf,

    /// Attach this vGPU (an mdev of vgpu_shim, `/sys/bus/mdev/devices/<uuid>`) as PCI
    /// device 00:01.0.
    #[arg(long, value_name = "PATH")]
    pub vgpu: Option<PathBuf>,

    /// Hide XSAVE from the guest (it uses FXSAVE, without AVX). For nested KVM on
    /// QEMU's emulated SVM (the rig), where KVM never sees the guest's XSETBV, keeps
    /// reporting the XSAVE size for x87/SSE only, and Linux warns "XSAVE consistency
    /// problem" and falls back to FXSAVE anyway.
    #[arg(long)]
    pub no_xsave: bool,

    /// Trap the vGPU's DOORBELL writes (an exit to vgpu-vmm each) instead of pairing a
    /// KVM ioeventfd with VFIO_DEVICE_IOEVENTFD (the default: no exit).
    #[arg(long)]
    pub no_ioeventfd: bool,
}

/// What to boot and how: the checked form of [`Args`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// The vmlinux.
    pub kernel: PathBuf,
    /// The initrd, if any.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// vCPUs, 1..=[`MAX_VCPUS`].
    pub vcpus: u8,
    /// RAM in MiB, [`MIN_MEMORY_MIB`]..=[`MAX_MEMORY_MIB`].
    pub memory_mib: u64,
    /// Serial console destination; `None` = stdout.
    pub serial_file: Option<PathBuf>,
    /// The KVM device node.
    pub kvm: PathBuf,
    /// Hide XSAVE from the guest.
    pub no_xsave: bool,
    /// The vGPU's sysfs directory, if one is attached.
    pub vgpu: Option<PathBuf>,
    /// Pair the vGPU's DOORBELL with a KVM ioeventfd (`--no-ioeventfd` clears it).
    pub ioeventfd: bool,
}

impl TryFrom<Args> for VmConfig {
    type Error = Error;

    /// Checks what clap cannot: that the files exist and are regular files, and that the
    /// command line fits the kernel's buffer. Nothing is opened for writing here.
    fn try_from(a: Args) -> Result<Self, Error> {
        check_file("kernel", &a.kernel)?;
        if let Some(i) = &a.initrd {
            check_file("initrd", i)?;
        }
        if let Some(v) = &a.vgpu {
            if !v.join("iommu_group").exists() {
                return Err(Error::Config(format!(
                    "--vgpu {}: not a mediated device (no iommu_group link there)",
                    v.display()
                )));
            }
        }
        if a.cmdline.len() >= CMDLINE_MAX {
            return Err(Error::Config(format!(
                "--cmdline is {} bytes; the kernel takes at most {}",
                a.cmdline.len(),
                CMDLINE_MAX - 1
            )));
        }
        if a.cmdline.bytes().any(|b| b == 0 || !b.is_ascii()) {
            return Err(Error::Config(
                "--cmdline must be printable ASCII without NUL bytes".into(),
            ));
        }
        Ok(VmConfig {
            kernel: a.kernel,
            initrd: a.initrd,
            cmdline: a.cmdline,
            vcpus: a.vcpus,
            memory_mib: a.memory,
            serial_file: a.serial_file,
            kvm: a.kvm,
            no_xsave: a.no_xsave,
            vgpu: a.vgpu,
            ioeventfd: !a.no_ioeventfd,
        })
    }
}

fn check_file(what: &str, p: &std::path::Path) -> Result<(), Error> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(Error::Config(format!(
            "--{what} {}: not a regular file",
            p.display()
        ))),
        Err(e) => Err(Error::Config(format!("--{what} {}: {e}", p.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut v = vec!["vgpu-vmm"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v)
    }

    fn kernel_file() -> tempfile_lite::TempFile {
        tempfile_lite::TempFile::new("vmlinux")
    }

    #[test]
    fn defaults() {
        let k = kernel_file();
        let a = parse(&["--kernel", k.path()]).expect("parse");
        let c = VmConfig::try_from(a).expect("valid");
        assert_eq!(c.vcpus, 1);
        assert_eq!(c.memory_mib, 256);
        assert_eq!(c.cmdline, DEFAULT_CMDLINE);
        assert_eq!(c.serial_file, None);
        assert_eq!(c.initrd, None);
    }

    #[test]
    fn all_flags() {
        let k = kernel_file();
        let a = parse(&[
            "--kernel",
            k.path(),
            "--initrd",
            k.path(),
            "--vcpus",
            "4",
            "--memory",
            "1024",
            "--cmdline",
            "console=ttyS0 quiet",
            "--serial-file",
            "/tmp/x.log",
        ])
        .expect("parse");
        let c = VmConfig::try_from(a).expect("valid");
        assert_eq!(c.vcpus, 4);
        assert_eq!(c.memory_mib, 1024);
        assert_eq!(c.cmdline, "console=ttyS0 quiet");
        assert_eq!(
            c.serial_file.as_deref(),
            Some(std::path::Path::new("/tmp/x.log"))
        );
    }

    #[test]
    fn kernel_is_required() {
        let e = parse(&[]).expect_err("no kernel");
        assert!(e.to_string().contains("--kernel"), "{e}");
    }

    #[test]
    fn out_of_range_numbers_are_refused() {
        let k = kernel_file();
        for (flag, v) in [
            ("--vcpus", "0"),
            ("--vcpus", "255"),
            ("--vcpus", "two"),
            ("--memory", "31"),
            ("--memory", "-5"),
            ("--memory", "2000000"),
        ] {
            let e = parse(&["--kernel", k.path(), flag, v]).expect_err(v);
            let msg = e.to_string();
            assert!(msg.contains(flag) || msg.contains(v), "{flag} {v}: {e}");
        }
    }

    #[test]
    fn missing_files_are_named() {
        let a = parse(&["--kernel", "/nonexistent/vmlinux"]).expect("parse");
        let e = VmConfig::try_from(a)
            .expect_err("missing kernel")
            .to_string();
        assert!(e.contains("--kernel /nonexistent/vmlinux"), "{e}");
        let k = kernel_file();
        let a = parse(&["--kernel", k.path(), "--initrd", "/"]).expect("parse");
        let e = VmConfig::try_from(a).expect_err("dir initrd").to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn overlong_or_binary_cmdline_is_refused() {
        let k = kernel_file();
        let long = "x".repeat(CMDLINE_MAX);
        let a = parse(&["--kernel", k.path(), "--cmdline", &long]).expect("parse");
        let e = VmConfig::try_from(a).expect_err("too long").to_string();
        assert!(e.contains("at most 2047"), "{e}");
        let a = parse(&["--kernel", k.path(), "--cmdline", "a\u{e9}"]).expect("parse");
        assert!(VmConfig::try_from(a).is_err());
    }

    /// A temporary file without pulling in a crate for it.
    mod tempfile_lite {
        pub struct TempFile(String);
        impl TempFile {
            pub fn new(tag: &str) -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p = std::env::temp_dir()
                    .join(format!("vgpu-vmm-test-{}-{tag}-{n}", std::process::id()));
                std::fs::write(&p, b"\x7fELF").expect("write temp file");
                TempFile(p.to_string_lossy().into_owned())
            }
            pub fn path(&self) -> &str {
                &self.0
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }
}
