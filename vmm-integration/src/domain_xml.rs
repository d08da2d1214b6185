//! `--domain-xml FILE`: the subset of a libvirt domain document (libvirt 9.0's
//! `domaincommon.rng`) that vgpu-vmm can honour. Everything else, every element and
//! every attribute not listed here, is an error that names it: a document that asks for
//! a disk, a NIC or a QEMU machine type would otherwise boot something else than it
//! says. What is read:
//!
//! ```xml
//! <domain type='kvm'>
//!   <name>vm1</name>
//!   <uuid>c2b6e0a4-…</uuid>
//!   <memory unit='MiB'>256</memory>           <!-- unit as libvirt: default KiB -->
//!   <currentMemory unit='MiB'>256</currentMemory>  <!-- optional, must equal memory -->
//!   <vcpu placement='static'>2</vcpu>
//!   <on_reboot>restart</on_reboot>          <!-- optional: restart or destroy -->
//!   <os>
//!     <type arch='x86_64'>hvm</type>
//!     <kernel>/boot/vmlinux</kernel>
//!     <initrd>/boot/initrd.img</initrd>       <!-- optional -->
//!     <cmdline>console=ttyS0 panic=-1</cmdline> <!-- optional -->
//!   </os>
//!   <devices>
//!     <serial type='file'><source path='/tmp/console.log'/><target port='0'/></serial>
//!     <console type='stdio'><target type='serial' port='0'/></console>
//!     <hostdev mode='subsystem' type='mdev' model='vfio-pci' display='on'>
//!       <source><address uuid='…'/></source>
//!     </hostdev>
//!   </devices>
//! </domain>
//! ```
//!
//! `serial`/`console` of type `stdio` (stdout) or `file` (`<source path>`), port 0 only;
//! both may be given if they agree (libvirt lists the first serial port as the console
//! too). One `<hostdev>` of type `mdev` (`/sys/bus/mdev/devices/<uuid>`); `display` on or
//! off is accepted (the vGPU always has its display region; `--display-png` reads it).
//! This is exactly what `vgpuctl xml --hostdev` prints, and a test checks that its output
//! is accepted as is.
//!
//! Parsed with `roxmltree`: a small, well-kept, read-only parser with no unsafe code and no
//! C, already used by `vgpuctl define --from-xml` (one XML parser in the workspace); it
//! gives each node's position, which the errors print.

use std::path::PathBuf;

use roxmltree::{Document, Node};

/// What a domain document asks for (each `None`: the document does not say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Domain {
    /// `<name>`.
    pub name: Option<String>,
    /// `<uuid>` (lower case).
    pub uuid: Option<String>,
    /// `<memory>` in MiB.
    pub memory_mib: Option<u64>,
    /// `<vcpu>`.
    pub vcpus: Option<u64>,
    /// `<os><kernel>`.
    pub kernel: Option<PathBuf>,
    /// `<os><initrd>`.
    pub initrd: Option<PathBuf>,
    /// `<os><cmdline>`.
    pub cmdline: Option<String>,
    /// Serial console: `Some(None)` stdout, `Some(Some(path))` a file.
    pub serial: Option<Option<PathBuf>>,
    /// The mdev's sysfs directory from `<hostdev>`.
    pub vgpu: Option<PathBuf>,
    /// `<on_reboot>`: `Some(true)` restart, `Some(false)` destroy (end the VM).
    pub restart_on_reboot: Option<bool>,
}

/// Where the sysfs directories of mdevs are.
pub const MDEV_DEVICES: &str = "/sys/bus/mdev/devices";

type R<T> = Result<T, String>;

fn pos(n: Node) -> String {
    let p = n.document().text_pos_at(n.range().start);
    format!("line {}", p.row)
}

fn path_of(n: Node) -> String {
    let mut names: Vec<&str> = n
        .ancestors()
        .filter(|a| a.is_element())
        .map(|a| a.tag_name().name())
        .collect();
    names.reverse();
    format!("<{}>", names.join("/"))
}

/// Fails on any attribute of `n` not in `allowed`.
fn attrs_only(n: Node, allowed: &[&str]) -> R<()> {
    for a in n.attributes() {
        if a.namespace().is_some() || !allowed.contains(&a.name()) {
            return Err(format!(
                "{}: unsupported attribute {}='{}' of {} ({})",
                pos(n),
                a.name(),
                a.value(),
                path_of(n),
                if allowed.is_empty() {
                    "it takes none".to_string()
                } else {
                    format!("supported: {}", allowed.join(", "))
                }
            ));
        }
    }
    Ok(())
}

/// The element children of `n`, failing on any not in `allowed` and on non-blank text.
fn children<'a, 'i>(n: Node<'a, 'i>, allowed: &[&str]) -> R<Vec<Node<'a, 'i>>> {
    let mut v = Vec::new();
    for c in n.children() {
        if c.is_element() {
            if c.tag_name().namespace().is_some() || !allowed.contains(&c.tag_name().name()) {
                return Err(format!(
                    "{}: unsupported element {} in {} (supported there: {})",
                    pos(c),
                    path_of(c),
                    path_of(n),
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                ));
            }
            v.push(c);
        } else if c.is_text() && !c.text().unwrap_or("").trim().is_empty() {
            return Err(format!("{}: unexpected text in {}", pos(c), path_of(n)));
        }
    }
    Ok(v)
}

/// The text of a leaf element (no children, no attributes but `attrs`).
fn leaf(n: Node, attrs: &[&str]) -> R<String> {
    attrs_only(n, attrs)?;
    for c in n.children() {
        if c.is_element() {
            return Err(format!(
                "{}: unsupported element {} ({} holds text only)",
                pos(c),
                path_of(c),
                path_of(n)
            ));
        }
    }
    let t = n.text().unwrap_or("").trim().to_string();
    if t.is_empty() {
        return Err(format!("{}: {} is empty", pos(n), path_of(n)));
    }
    Ok(t)
}

fn once<T>(slot: &mut Option<T>, v: T, n: Node) -> R<()> {
    if slot.is_some() {
        return Err(format!("{}: {} given twice", pos(n), path_of(n)));
    }
    *slot = Some(v);
    Ok(())
}

fn expect_attr(n: Node, name: &str, want: &[&str]) -> R<()> {
    match n.attribute(name) {
        Some(v) if want.contains(&v) => Ok(()),
        Some(v) => Err(format!(
            "{}: {} {name}='{v}' is not supported (supported: {})",
            pos(n),
            path_of(n),
            want.join(", ")
        )),
        None => Err(format!(
            "{}: {} needs {name}='{}'",
            pos(n),
            path_of(n),
            want[0]
        )),
    }
}

/// Bytes per `unit` as libvirt reads a memory size (`virScaleInteger`: powers of 1000 for
/// KB, MB, ...; of 1024 for k/KiB, M/MiB, ...; b/bytes).
pub fn unit_bytes(unit: &str) -> Option<u64> {
    let (k, p) = match unit {
        "b" | "bytes" => return Some(1),
        "KB" => (1000, 1),
        "MB" => (1000, 2),
        "GB" => (1000, 3),
        "TB" => (1000, 4),
        "k" | "K" | "KiB" => (1024, 1),
        "m" | "M" | "MiB" => (1024, 2),
        "g" | "G" | "GiB" => (1024, 3),
        "t" | "T" | "TiB" => (1024, 4),
        _ => return None,
    };
    Some(u64::pow(k, p))
}

/// A `<memory>`-like element in MiB (a whole number of MiB).
fn memory_mib(n: Node) -> R<u64> {
    let text = leaf(n, &["unit"])?;
    let unit = n.attribute("unit").unwrap_or("KiB");
    let per = unit_bytes(unit).ok_or_else(|| {
        format!(
            "{}: {} unit='{unit}' is not a unit (b, KB, k/KiB, MB, M/MiB, GB, G/GiB, TB, T/TiB)",
            pos(n),
            path_of(n)
        )
    })?;
    let v: u64 = text
        .parse()
        .map_err(|_| format!("{}: {} '{text}' is not a number", pos(n), path_of(n)))?;
    let bytes = v
        .checked_mul(per)
        .ok_or_else(|| format!("{}: {} {v} {unit} is too large", pos(n), path_of(n)))?;
    if bytes % (1 << 20) != 0 {
        return Err(format!(
            "{}: {} {v} {unit} is not a whole number of MiB",
            pos(n),
            path_of(n)
        ));
    }
    Ok(bytes >> 20)
}

fn serial(n: Node, console: bool) -> R<Option<PathBuf>> {
    attrs_only(n, &["type"])?;
    let ty = n.attribute("type").unwrap_or("");
    let mut path = None;
    for c in children(n, &["source", "target"])? {
        match c.tag_name().name() {
            "source" => {
                children(c, &[])?;
                attrs_only(c, &["path"])?;
                let p = c
                    .attribute("path")
                    .ok_or_else(|| format!("{}: {} needs path=", pos(c), path_of(c)))?;
                once(&mut path, PathBuf::from(p), c)?;
            }
            _ => {
                children(c, &[])?;
                if console {
                    attrs_only(c, &["type", "port"])?;
                    if c.attribute("type").is_some() {
                        expect_attr(c, "type", &["serial"])?;
                    }
                } else {
                    attrs_only(c, &["port"])?;
                }
                if c.attribute("port").is_some() {
                    expect_attr(c, "port", &["0"])?;
                }
            }
        }
    }
    match ty {
        "stdio" if path.is_none() => Ok(None),
        "stdio" => Err(format!(
            "{}: {} type='stdio' takes no <source>",
            pos(n),
            path_of(n)
        )),
        "file" => path.map(Some).ok_or_else(|| {
            format!(
                "{}: {} type='file' needs <source path=…/>",
                pos(n),
                path_of(n)
            )
        }),
        _ => Err(format!(
            "{}: {} type='{ty}' is not supported (supported: stdio, file)",
            pos(n),
            path_of(n)
        )),
    }
}

fn hostdev(n: Node) -> R<PathBuf> {
    attrs_only(n, &["mode", "type", "model", "display", "managed"])?;
    expect_attr(n, "mode", &["subsystem"])?;
    expect_attr(n, "type", &["mdev"])?;
    expect_attr(n, "model", &["vfio-pci"])?;
    if n.attribute("display").is_some() {
        expect_attr(n, "display", &["on", "off"])?;
    }
    if n.attribute("managed").is_some() {
        expect_attr(n, "managed", &["no"])?;
    }
    let kids = children(n, &["source"])?;
    let src = kids
        .first()
        .ok_or_else(|| format!("{}: {} needs <source>", pos(n), path_of(n)))?;
    if kids.len() > 1 {
        return Err(format!("{}: {} has two <source>", pos(n), path_of(n)));
    }
    attrs_only(*src, &[])?;
    let addrs = children(*src, &["address"])?;
    let [a] = addrs.as_slice() else {
        return Err(format!(
            "{}: {} needs one <address uuid=…/>",
            pos(*src),
            path_of(*src)
        ));
    };
    children(*a, &[])?;
    attrs_only(*a, &["uuid"])?;
    let u = a
        .attribute("uuid")
        .ok_or_else(|| format!("{}: {} needs uuid=", pos(*a), path_of(*a)))?;
    let u = check_uuid(u).map_err(|e| format!("{}: {}: {e}", pos(*a), path_of(*a)))?;
    Ok(PathBuf::from(MDEV_DEVICES).join(u))
}

/// A UUID in its 8-4-4-4-12 hex form, lower-cased.
fn check_uuid(s: &str) -> R<String> {
    let ok = s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("'{s}' is not a UUID"))
    }
}

fn os(n: Node, d: &mut Domain) -> R<()> {
    attrs_only(n, &[])?;
    let mut ty = None;
    for c in children(n, &["type", "kernel", "initrd", "cmdline"])? {
        match c.tag_name().name() {
            "type" => {
                let t = leaf(c, &["arch"])?;
                if c.attribute("arch").is_some() {
                    expect_attr(c, "arch", &["x86_64"])?;
                }
                if t != "hvm" {
                    return Err(format!(
                        "{}: {} '{t}' is not supported (hvm)",
                        pos(c),
                        path_of(c)
                    ));
                }
                once(&mut ty, (), c)?;
            }
            "kernel" => once(&mut d.kernel, PathBuf::from(leaf(c, &[])?), c)?,
            "initrd" => once(&mut d.initrd, PathBuf::from(leaf(c, &[])?), c)?,
            _ => {
                // An empty command line is a command line.
                let t = match leaf(c, &[]) {
                    Ok(t) => t,
                    Err(_) if !c.has_children() && c.attributes().len() == 0 => String::new(),
                    Err(e) => return Err(e),
                };
                once(&mut d.cmdline, t, c)?;
            }
        }
    }
    Ok(())
}

fn devices(n: Node, d: &mut Domain) -> R<()> {
    attrs_only(n, &[])?;
    let mut serial_seen: Option<Option<PathBuf>> = None;
    for c in children(n, &["serial", "console", "hostdev"])? {
        match c.tag_name().name() {
            "hostdev" => {
                let p = hostdev(c)?;
                if d.vgpu.is_some() {
                    return Err(format!(
                        "{}: a second <hostdev>: vgpu-vmm attaches one vGPU",
                        pos(c)
                    ));
                }
                d.vgpu = Some(p);
            }
            name => {
                let s = serial(c, name == "console")?;
                match &serial_seen {
                    Some(prev) if *prev != s => {
                        return Err(format!(
                            "{}: {} disagrees with the serial/console before it: vgpu-vmm has one serial port",
                            pos(c),
                            path_of(c)
                        ))
                    }
                    Some(_) => {}
                    None => serial_seen = Some(s),
                }
            }
        }
    }
    d.serial = serial_seen;
    Ok(())
}

/// Parses a domain document; the error names the line and the element or attribute.
pub fn parse(text: &str) -> R<Domain> {
    let doc = Document::parse(text).map_err(|e| format!("not well-formed XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "domain" || root.tag_name().namespace().is_some() {
        return Err(format!(
            "the root element is <{}>, not <domain>",
            root.tag_name().name()
        ));
    }
    attrs_only(root, &["type"])?;
    expect_attr(root, "type", &["kvm"])?;
    let mut d = Domain::default();
    let mut current = None;
    for c in children(
        root,
        &[
            "name",
            "uuid",
            "memory",
            "currentMemory",
            "vcpu",
            "on_reboot",
            "os",
            "devices",
        ],
    )? {
        match c.tag_name().name() {
            "name" => once(&mut d.name, leaf(c, &[])?, c)?,
            "uuid" => {
                let u =
                    check_uuid(&leaf(c, &[])?).map_err(|e| format!("{}: <uuid>: {e}", pos(c)))?;
                once(&mut d.uuid, u, c)?
            }
            "memory" => once(&mut d.memory_mib, memory_mib(c)?, c)?,
            "currentMemory" => once(&mut current, (memory_mib(c)?, c), c)?,
            "vcpu" => {
                let t = leaf(c, &["placement"])?;
                if c.attribute("placement").is_some() {
                    expect_attr(c, "placement", &["static"])?;
                }
                let v = t
                    .parse()
                    .map_err(|_| format!("{}: <vcpu> '{t}' is not a number", pos(c)))?;
                once(&mut d.vcpus, v, c)?
            }
            "on_reboot" => {
                let v = match leaf(c, &[])?.as_str() {
                    "restart" => true,
                    "destroy" => false,
                    other => {
                        return Err(format!(
                            "{}: <on_reboot>{other}</on_reboot>: vgpu-vmm does restart or destroy",
                            pos(c)
                        ))
                    }
                };
                once(&mut d.restart_on_reboot, v, c)?
            }
            "os" => {
                if d.kernel.is_some() || d.initrd.is_some() || d.cmdline.is_some() {
                    return Err(format!("{}: <os> given twice", pos(c)));
                }
                os(c, &mut d)?
            }
            _ => {
                if d.serial.is_some() || d.vgpu.is_some() {
                    return Err(format!("{}: <devices> given twice", pos(c)));
                }
                devices(c, &mut d)?
            }
        }
    }
    if let Some((cur, n)) = current {
        if Some(cur) != d.memory_mib {
            return Err(format!(
                "{}: <currentMemory> differs from <memory>: vgpu-vmm has no balloon",
                pos(n)
            ));
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "3f1c7a52-0c4b-4d0e-9a8f-2b6d8e1f0a11";

    fn doc(devices: &str) -> String {
        format!(
            "<domain type='kvm'>\n  <name>vm1</name>\n  <uuid>{U}</uuid>\n  \
             <memory unit='MiB'>256</memory>\n  <vcpu placement='static'>2</vcpu>\n  \
             <os>\n    <type arch='x86_64'>hvm</type>\n    <kernel>/k/vmlinux</kernel>\n    \
             <initrd>/k/initrd</initrd>\n    <cmdline>console=ttyS0 quiet</cmdline>\n  </os>\n  \
             <devices>\n{devices}  </devices>\n</domain>\n"
        )
    }

    #[test]
    fn full_subset() {
        let d = parse(&doc(&format!(
            "<serial type='file'><source path='/tmp/c.log'/><target port='0'/></serial>\n\
             <console type='file'><source path='/tmp/c.log'/><target type='serial' port='0'/></console>\n\
             <hostdev mode='subsystem' type='mdev' model='vfio-pci'><source><address uuid='{}'/></source></hostdev>\n",
            U.to_uppercase()
        )))
        .expect("parse");
        assert_eq!(d.name.as_deref(), Some("vm1"));
        assert_eq!(d.uuid.as_deref(), Some(U));
        assert_eq!(d.memory_mib, Some(256));
        assert_eq!(d.vcpus, Some(2));
        assert_eq!(d.kernel, Some(PathBuf::from("/k/vmlinux")));
        assert_eq!(d.initrd, Some(PathBuf::from("/k/initrd")));
        assert_eq!(d.cmdline.as_deref(), Some("console=ttyS0 quiet"));
        assert_eq!(d.serial, Some(Some(PathBuf::from("/tmp/c.log"))));
        assert_eq!(
            d.vgpu,
            Some(PathBuf::from(format!("/sys/bus/mdev/devices/{U}")))
        );
    }

    #[test]
    fn on_reboot() {
        let with =
            |v: &str| doc("").replace("<os>", &format!("<on_reboot>{v}</on_reboot>\n  <os>"));
        assert_eq!(parse(&doc("")).expect("parse").restart_on_reboot, None);
        assert_eq!(
            parse(&with("restart")).expect("parse").restart_on_reboot,
            Some(true)
        );
        assert_eq!(
            parse(&with("destroy")).expect("parse").restart_on_reboot,
            Some(false)
        );
        let e = parse(&with("preserve")).expect_err("preserve");
        assert!(e.contains("<on_reboot>preserve</on_reboot>"), "{e}");
        let twice = with("restart").replace("<os>", "<on_reboot>restart</on_reboot><os>");
        assert!(parse(&twice).is_err());
    }

    /// The element `vgpuctl xml --hostdev` prints (the library that prints it) boots as
    /// is inside a domain.
    #[test]
    fn vgpuctl_hostdev_is_accepted() {
        let u: uuid::Uuid = U.parse().expect("uuid");
        for display in [true, false] {
            let h = vgpu_mdev_manager::xml::hostdev(u, display);
            let d = parse(&doc(&h)).unwrap_or_else(|e| panic!("{h}: {e}"));
            assert_eq!(
                d.vgpu,
                Some(PathBuf::from(format!("/sys/bus/mdev/devices/{U}")))
            );
        }
    }

    #[test]
    fn units() {
        for (unit, n, mib) in [
            ("KiB", 262144, 256),
            ("k", 262144, 256),
            ("M", 64, 64),
            ("GiB", 1, 1024),
            ("G", 2, 2048),
            ("b", 1 << 27, 128),
            ("bytes", 1 << 27, 128),
            ("MB", 16384, 15625),
        ] {
            let x = doc("").replace(
                "<memory unit='MiB'>256</memory>",
                &format!("<memory unit='{unit}'>{n}</memory>"),
            );
            assert_eq!(parse(&x).expect(unit).memory_mib, Some(mib), "{unit}");
        }
        // No unit: KiB, as libvirt.
        let x = doc("").replace("<memory unit='MiB'>256</memory>", "<memory>131072</memory>");
        assert_eq!(parse(&x).expect("KiB default").memory_mib, Some(128));
    }

    fn err(x: &str) -> String {
        match parse(x) {
            Ok(d) => panic!("accepted: {d:?}\n{x}"),
            Err(e) => e,
        }
    }

    #[test]
    fn refusals_name_what() {
        let e = err(&doc("<disk type='file'/>\n"));
        assert!(
            e.contains("unsupported element <domain/devices/disk>"),
            "{e}"
        );
        assert!(e.contains("line"), "{e}");
        let e = err(&doc("").replace("<name>", "<on_crash>destroy</on_crash><name>"));
        assert!(e.contains("<domain/on_crash>"), "{e}");
        let e = err(&doc("").replace("<type arch='x86_64'>", "<type arch='x86_64' machine='pc'>"));
        assert!(e.contains("machine='pc'"), "{e}");
        let e = err(&doc("").replace("unit='MiB'", "unit='parsecs'"));
        assert!(e.contains("unit='parsecs'"), "{e}");
        let e = err(&doc("").replace("unit='MiB'>256", "unit='KiB'>1000"));
        assert!(e.contains("whole number of MiB"), "{e}");
        let e = err(&doc("").replace(">256<", ">lots<"));
        assert!(e.contains("not a number"), "{e}");
        let e = err(&doc("<serial type='pty'/>\n"));
        assert!(e.contains("type='pty'"), "{e}");
        let e = err(&doc(
            "<hostdev mode='subsystem' type='pci' model='vfio-pci'/>\n",
        ));
        assert!(e.contains("type='pci'"), "{e}");
        let e = err(&doc(
            "<hostdev mode='subsystem' type='mdev' model='vfio-pci'><source><address uuid='nope'/></source></hostdev>\n",
        ));
        assert!(e.contains("not a UUID"), "{e}");
        let e = err(&doc("").replace("<domain type='kvm'>", "<domain type='qemu'>"));
        assert!(e.contains("type='qemu'"), "{e}");
        let e = err(&doc("").replace("<vcpu placement='static'>", "<vcpu current='1'>"));
        assert!(e.contains("current='1'"), "{e}");
        let e = err("<domain type='kvm'><name>x</name>");
        assert!(e.contains("not well-formed"), "{e}");
        let e = err("<vm/>");
        assert!(e.contains("not <domain>"), "{e}");
        let e = err(&doc(
            "<serial type='stdio'/>\n<console type='file'><source path='/x'/></console>\n",
        ));
        assert!(e.contains("disagrees"), "{e}");
        let e = err(&doc("").replace("</domain>", "<memory unit='MiB'>64</memory></domain>"));
        assert!(e.contains("given twice"), "{e}");
        let e = err(&doc("").replace(
            "<vcpu",
            "<currentMemory unit='MiB'>128</currentMemory><vcpu",
        ));
        assert!(e.contains("currentMemory"), "{e}");
    }
}
