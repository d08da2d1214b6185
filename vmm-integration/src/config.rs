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
/// 5 the host took the vGPU back (its instance removed: VFIO REQ), 130/143 stopped by
/// SIGINT/SIGTERM.
#[derive(Parser, Debug, Clone)]
#[command(name = "vgpu-vmm", version, about, long_about = None)]
pub struct Args {
    /// Kernel to boot: an ELF vmlinux with a PVH entry note (booted via PVH), or a
    /// bzImage such as Debian's /boot/vmlinuz-* (booted via the 32-bit boot protocol;
    /// it decompresses itself, which takes longer).
    #[arg(long, value_name = "FILE", required_unless_present = "domain_xml")]
    pub kernel: Option<PathBuf>,

    /// Initial ramdisk (a cpio archive, compressed or not).
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,

    /// Kernel command line [default: console=ttyS0 panic=-1].
    #[arg(long, value_name = "STRING")]
    pub cmdline: Option<String>,

    /// Number of vCPUs [default: 1].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u8).range(1..=MAX_VCPUS as i64))]
    pub vcpus: Option<u8>,

    /// Guest RAM in MiB [default: 256].
    #[arg(long, value_name = "MiB",
          value_parser = clap::value_parser!(u64).range(MIN_MEMORY_MIB..=MAX_MEMORY_MIB))]
    pub memory: Option<u64>,

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

    /// Read the VM from a libvirt domain document (a subset: name, uuid, memory, vcpu,
    /// os kernel/initrd/cmdline, serial/console, one mdev hostdev; anything else is an
    /// error). A flag given as well overrides the document's value.
    #[arg(long, value_name = "FILE")]
    pub domain_xml: Option<PathBuf>,

    /// Write the vGPU's current frame (its display plane) to FILE as a PNG, every SECONDS
    /// (at least 0.1) if given, and once more when the VM ends; nothing while the display
    /// is off. Needs a vGPU.
    #[arg(long, value_name = "FILE[,SECONDS]")]
    pub display_png: Option<String>,

    /// What a guest reboot does: "exit" (status 3) or "restart" the VM (same kernel,
    /// initrd and command line; the vGPU stays attached). Either way the vGPU is reset
    /// (VFIO_DEVICE_RESET) first. Default: the document's <on_reboot>, else exit.
    #[arg(long, value_name = "exit|restart", value_parser = ["exit", "restart"])]
    pub on_reboot: Option<String>,
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
    /// The domain's `<name>` and `<uuid>` (`--domain-xml`), for the log.
    pub domain: Option<(Option<String>, Option<String>)>,
    /// `--display-png`.
    pub display_png: Option<crate::display::DisplayPng>,
    /// `--on-reboot restart`: a guest reboot restarts the VM instead of ending it.
    pub restart_on_reboot: bool,
}

impl TryFrom<Args> for VmConfig {
    type Error = Error;

    /// Checks what clap cannot: that the files exist and are regular files, and that the
    /// command line fits the kernel's buffer. Nothing is opened for writing here.
    fn try_from(a: Args) -> Result<Self, Error> {
        let dom = match &a.domain_xml {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| Error::Config(format!("--domain-xml {}: {e}", p.display())))?;
                Some(
                    crate::domain_xml::parse(&text)
                        .map_err(|e| Error::Config(format!("--domain-xml {}: {e}", p.display())))?,
                )
            }
            None => None,
        };
        let dom = dom.unwrap_or_default();
        // A flag wins over the document; the document over the default.
        let label = |flag: bool, f: &'static str, x: &'static str| if flag { f } else { x };
        let kernel_label = label(a.kernel.is_some(), "--kernel", "<os><kernel>");
        let Some(kernel) = a.kernel.or(dom.kernel) else {
            return Err(Error::Config(
                "no kernel: --kernel FILE or <os><kernel> in --domain-xml".into(),
            ));
        };
        check_file(kernel_label, &kernel)?;
        let initrd_label = label(a.initrd.is_some(), "--initrd", "<os><initrd>");
        let initrd = a.initrd.or(dom.initrd);
        if let Some(i) = &initrd {
            check_file(initrd_label, i)?;
        }
        let vgpu_label = label(a.vgpu.is_some(), "--vgpu", "<hostdev>");
        let vgpu = a.vgpu.or(dom.vgpu);
        if let Some(v) = &vgpu {
            if !v.join("iommu_group").exists() {
                return Err(Error::Config(format!(
                    "{vgpu_label} {}: not a mediated device (no iommu_group link there)",
                    v.display()
                )));
            }
        }
        let vcpus = match (a.vcpus, dom.vcpus) {
            (Some(v), _) => v,
            (None, Some(v)) => u8::try_from(v)
                .ok()
                .filter(|v| (1..=MAX_VCPUS).contains(v))
                .ok_or_else(|| {
                    Error::Config(format!("<vcpu> {v}: vgpu-vmm runs 1..={MAX_VCPUS}"))
                })?,
            (None, None) => 1,
        };
        let memory = match (a.memory, dom.memory_mib) {
            (Some(m), _) => m,
            (None, Some(m)) if (MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&m) => m,
            (None, Some(m)) => {
                return Err(Error::Config(format!(
                    "<memory> {m} MiB: vgpu-vmm runs {MIN_MEMORY_MIB}..={MAX_MEMORY_MIB} MiB"
                )))
            }
            (None, None) => 256,
        };
        let cmdline = a
            .cmdline
            .or(dom.cmdline)
            .unwrap_or_else(|| DEFAULT_CMDLINE.to_string());
        let serial_file = a.serial_file.or(dom.serial.flatten());
        let domain = a.domain_xml.as_ref().map(|_| (dom.name, dom.uuid));
        let display_png = match &a.display_png {
            Some(s) => {
                if vgpu.is_none() {
                    return Err(Error::Config(format!(
                        "--display-png {s}: no vGPU (--vgpu or a <hostdev>) to show"
                    )));
                }
                Some(crate::display::parse_arg(s).map_err(Error::Config)?)
            }
            None => None,
        };
        if cmdline.len() >= CMDLINE_MAX {
            return Err(Error::Config(format!(
                "--cmdline is {} bytes; the kernel takes at most {}",
                cmdline.len(),
                CMDLINE_MAX - 1
            )));
        }
        if cmdline.bytes().any(|b| b == 0 || !b.is_ascii()) {
            return Err(Error::Config(
                "--cmdline must be printable ASCII without NUL bytes".into(),
            ));
        }
        Ok(VmConfig {
            kernel,
            initrd,
            cmdline,
            vcpus,
            memory_mib: memory,
            serial_file,
            kvm: a.kvm,
            no_xsave: a.no_xsave,
            vgpu,
            ioeventfd: !a.no_ioeventfd,
            domain,
            display_png,
            restart_on_reboot: match a.on_reboot.as_deref() {
                Some(v) => v == "restart",
                None => dom.restart_on_reboot.unwrap_or(false),
            },
        })
    }
}

fn check_file(what: &str, p: &std::path::Path) -> Result<(), Error> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(Error::Config(format!(
            "{what} {}: not a regular file",
            p.display()
        ))),
        Err(e) => Err(Error::Config(format!("{what} {}: {e}", p.display()))),
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
    fn on_reboot() {
        let k = kernel_file();
        let c = |extra: &[&str]| {
            let mut v = vec!["--kernel", k.path()];
            v.extend_from_slice(extra);
            parse(&v).map(|a| VmConfig::try_from(a).expect("valid").restart_on_reboot)
        };
        assert!(!c(&[]).expect("parse"));
        assert!(!c(&["--on-reboot", "exit"]).expect("parse"));
        assert!(c(&["--on-reboot", "restart"]).expect("parse"));
        assert!(c(&["--on-reboot", "reset"]).is_err());
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

    fn domain_file(body: &str) -> tempfile_lite::TempFile {
        let f = tempfile_lite::TempFile::new("domain.xml");
        std::fs::write(f.path(), body).expect("write domain");
        f
    }

    #[test]
    fn domain_xml_and_flags() {
        let k = kernel_file();
        let x = domain_file(&format!(
            "<domain type='kvm'><name>vm1</name><memory unit='GiB'>1</memory>\
             <vcpu>3</vcpu><os><type>hvm</type><kernel>{}</kernel>\
             <cmdline>console=ttyS0 quiet</cmdline></os>\
             <devices><serial type='file'><source path='/tmp/s.log'/></serial></devices></domain>",
            k.path()
        ));
        let c =
            VmConfig::try_from(parse(&["--domain-xml", x.path()]).expect("parse")).expect("valid");
        assert_eq!(c.kernel.to_str(), Some(k.path()));
        assert_eq!((c.vcpus, c.memory_mib), (3, 1024));
        assert_eq!(c.cmdline, "console=ttyS0 quiet");
        assert_eq!(
            c.serial_file.as_deref(),
            Some(std::path::Path::new("/tmp/s.log"))
        );
        assert_eq!(c.domain, Some((Some("vm1".into()), None)));
        // Flags win over the document.
        let c = VmConfig::try_from(
            parse(&[
                "--domain-xml",
                x.path(),
                "--vcpus",
                "2",
                "--memory",
                "128",
                "--cmdline",
                "x",
            ])
            .expect("parse"),
        )
        .expect("valid");
        assert_eq!((c.vcpus, c.memory_mib, c.cmdline.as_str()), (2, 128, "x"));
        // <on_reboot>: the document's unless --on-reboot says otherwise.
        let x = domain_file(&format!(
            "<domain type='kvm'><on_reboot>restart</on_reboot><os><kernel>{}</kernel></os></domain>",
            k.path()
        ));
        let on = |extra: &[&str]| {
            let mut v = vec!["--domain-xml", x.path()];
            v.extend_from_slice(extra);
            VmConfig::try_from(parse(&v).expect("parse"))
                .expect("valid")
                .restart_on_reboot
        };
        assert!(on(&[]));
        assert!(!on(&["--on-reboot", "exit"]));
    }

    #[test]
    fn domain_xml_refusals() {
        let x = domain_file("<domain type='kvm'><os><type>hvm</type></os></domain>");
        let e = VmConfig::try_from(parse(&["--domain-xml", x.path()]).expect("parse"))
            .expect_err("no kernel")
            .to_string();
        assert!(e.contains("no kernel"), "{e}");
        let x = domain_file("<domain type='kvm'><vcpu>300</vcpu></domain>");
        let k = kernel_file();
        let e = VmConfig::try_from(
            parse(&["--domain-xml", x.path(), "--kernel", k.path()]).expect("parse"),
        )
        .expect_err("vcpus")
        .to_string();
        assert!(e.contains("<vcpu> 300"), "{e}");
        let x = domain_file("<domain type='kvm'><memory unit='MiB'>16</memory></domain>");
        let e = VmConfig::try_from(
            parse(&["--domain-xml", x.path(), "--kernel", k.path()]).expect("parse"),
        )
        .expect_err("memory")
        .to_string();
        assert!(e.contains("<memory> 16 MiB"), "{e}");
        let x = domain_file("<domain type='kvm'><os><kernel>/nonexistent/k</kernel></os></domain>");
        let e = VmConfig::try_from(parse(&["--domain-xml", x.path()]).expect("parse"))
            .expect_err("missing kernel")
            .to_string();
        assert!(e.contains("<os><kernel> /nonexistent/k"), "{e}");
        let e = VmConfig::try_from(parse(&["--domain-xml", "/nonexistent.xml"]).expect("parse"))
            .expect_err("no file")
            .to_string();
        assert!(e.contains("--domain-xml /nonexistent.xml"), "{e}");
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
