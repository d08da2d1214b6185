//! libvirt XML: the node-device document of an mdev (`virsh nodedev-dumpxml`,
//! `nodedev-define`) for a running instance or a definition, the domain `<hostdev>`
//! that attaches it to a VM, and reading a node-device document back into a
//! definition (`vgpuctl define --from-xml`).
//!
//! The documents follow libvirt 9.0's schemas (`nodedev.rng`, `domaincommon.rng`);
//! the tests check them with `virt-xml-validate`. libvirt does not enumerate
//! vgpu_shim's parents (a virtual class device) as node devices, so `<parent>` is
//! `computer`, as libvirt shows such mdevs, and the real parent is in `<parent_addr>`,
//! the element libvirt uses for mdevctl's parent.

use std::fmt::Write as _;
use uuid::Uuid;

use crate::definition::{check_attr, Definition, ATTR_CAP, ATTR_WEIGHT};
use crate::env::Environment;
use crate::error::Result;
use crate::lifecycle::Spec;
use crate::manager::Manager;

/// What a node-device document describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdevXml {
    /// The mdev UUID (optional when read back: a definition gets a new one).
    pub uuid: Option<Uuid>,
    /// The parent device name (`vgpu_shim0`).
    pub parent: Option<String>,
    /// The type id.
    pub mdev_type: String,
    /// Attributes, in order.
    pub attrs: Vec<(String, String)>,
    /// sysfs path of a running instance.
    pub path: Option<String>,
    /// Its IOMMU group.
    pub iommu_group: Option<u32>,
    /// Its bound driver.
    pub driver: Option<String>,
}

impl From<&Definition> for MdevXml {
    fn from(d: &Definition) -> Self {
        Self {
            uuid: Some(d.uuid),
            parent: Some(d.parent.clone()),
            mdev_type: d.mdev_type.clone(),
            attrs: d.attrs.clone(),
            path: None,
            iommu_group: None,
            driver: None,
        }
    }
}

impl MdevXml {
    /// The definition request this document stands for: parent, type, weight and cap
    /// from `vgpu/weight` and `vgpu/cap`, the other attributes in order.
    pub fn to_spec(&self) -> std::result::Result<Spec, String> {
        let mut spec = Spec {
            parent: self.parent.clone(),
            type_spec: Some(self.mdev_type.clone()),
            ..Spec::default()
        };
        for (k, v) in &self.attrs {
            match k.as_str() {
                ATTR_WEIGHT => spec.weight = Some(crate::units::parse_weight(v)?),
                ATTR_CAP => spec.cap = Some(crate::units::parse_cap(v)?),
                _ => spec.attrs.push((k.clone(), v.clone())),
            }
        }
        Ok(spec)
    }
}

impl<E: Environment> Manager<E> {
    /// The document of a running instance: its sysfs path (as seen from the root),
    /// IOMMU group, driver, and its live weight and cap as attributes.
    pub fn instance_xml(&self, uuid: Uuid) -> Result<MdevXml> {
        let i = self.instance(uuid)?;
        let dir = self.instance_dir(uuid);
        let real = std::fs::canonicalize(&dir).unwrap_or(dir.clone());
        let root = std::fs::canonicalize(self.env().root())
            .unwrap_or_else(|_| self.env().root().to_path_buf());
        let path = match real.strip_prefix(&root) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => real.display().to_string(),
        };
        let link_name = |name: &str| {
            std::fs::read_link(dir.join(name))
                .ok()
                .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
        };
        Ok(MdevXml {
            uuid: Some(uuid),
            parent: Some(i.parent.clone()),
            mdev_type: i.type_id.clone(),
            attrs: vec![
                (ATTR_WEIGHT.to_string(), i.weight.to_string()),
                (ATTR_CAP.to_string(), i.cap.to_string()),
            ],
            path: Some(path),
            iommu_group: link_name("iommu_group").and_then(|g| g.parse().ok()),
            driver: link_name("driver"),
        })
    }
}

/// Escapes text for an XML attribute value or element content.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// libvirt's name for an mdev node device: `mdev_<uuid>_<parent>` with `-`, `:` and
/// `.` as `_`.
pub fn nodedev_name(uuid: Option<Uuid>, parent: Option<&str>) -> String {
    let mut name = String::from("mdev");
    if let Some(u) = uuid {
        name.push('_');
        name.push_str(&u.to_string().replace('-', "_"));
    }
    if let Some(p) = parent {
        name.push('_');
        name.push_str(&p.replace([':', '.', '-'], "_"));
    }
    name
}

/// The node-device document.
pub fn node_device(m: &MdevXml) -> String {
    let mut x = String::from("<device>\n");
    let _ = writeln!(
        x,
        "  <name>{}</name>",
        esc(&nodedev_name(m.uuid, m.parent.as_deref()))
    );
    if let Some(p) = &m.path {
        let _ = writeln!(x, "  <path>{}</path>", esc(p));
    }
    x.push_str("  <parent>computer</parent>\n");
    if let Some(d) = &m.driver {
        let _ = writeln!(x, "  <driver>\n    <name>{}</name>\n  </driver>", esc(d));
    }
    x.push_str("  <capability type='mdev'>\n");
    let _ = writeln!(x, "    <type id='{}'/>", esc(&m.mdev_type));
    if let Some(u) = m.uuid {
        let _ = writeln!(x, "    <uuid>{u}</uuid>");
    }
    if let Some(p) = &m.parent {
        let _ = writeln!(x, "    <parent_addr>{}</parent_addr>", esc(p));
    }
    if let Some(g) = m.iommu_group {
        let _ = writeln!(x, "    <iommuGroup number='{g}'/>");
    }
    for (k, v) in &m.attrs {
        let _ = writeln!(x, "    <attr name='{}' value='{}'/>", esc(k), esc(v));
    }
    x.push_str("  </capability>\n</device>\n");
    x
}

/// The domain `<hostdev>` that gives the instance to a VM. `display='on'`: every
/// vgpu_shim instance has a display plane (a region plane, which QEMU shows without
/// OpenGL).
pub fn hostdev(uuid: Uuid, display: bool) -> String {
    format!(
        "<hostdev mode='subsystem' type='mdev' model='vfio-pci'{}>\n  <source>\n    \
         <address uuid='{uuid}'/>\n  </source>\n</hostdev>\n",
        if display { " display='on'" } else { "" }
    )
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// Reads a node-device document of an mdev (as libvirt or `vgpuctl xml` writes it).
/// Errors name the problem (and the line for XML syntax errors).
pub fn parse_node_device(text: &str) -> Result<MdevXml, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not well-formed XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "device" {
        return Err(format!(
            "expected a libvirt node device (<device>), found <{}>",
            root.tag_name().name()
        ));
    }
    let cap = root
        .children()
        .find(|c| {
            c.is_element()
                && c.tag_name().name() == "capability"
                && c.attribute("type") == Some("mdev")
        })
        .ok_or("the device has no <capability type='mdev'>")?;
    let mdev_type = child(cap, "type")
        .and_then(|t| t.attribute("id"))
        .ok_or("<capability type='mdev'> has no <type id='…'/>")?
        .to_string();
    let uuid = match child(cap, "uuid").and_then(|u| u.text()) {
        Some(t) => {
            Some(Uuid::parse_str(t.trim()).map_err(|e| format!("<uuid>{}</uuid>: {e}", t.trim()))?)
        }
        None => None,
    };
    let parent = child(cap, "parent_addr")
        .and_then(|p| p.text())
        .map(|t| t.trim().to_string())
        .or_else(|| {
            child(root, "parent")
                .and_then(|p| p.text())
                .map(|t| t.trim().to_string())
                .filter(|t| t != "computer")
        })
        .filter(|p| !p.is_empty());
    if let Some(p) = &parent {
        if p.contains('/') || p.starts_with('.') {
            return Err(format!("parent `{p}` is not a device name"));
        }
    }
    let mut attrs = Vec::new();
    for a in cap
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "attr")
    {
        let (Some(k), Some(v)) = (a.attribute("name"), a.attribute("value")) else {
            return Err("an <attr> needs both name and value".into());
        };
        check_attr(k, v)?;
        attrs.push((k.to_string(), v.to_string()));
    }
    Ok(MdevXml {
        uuid,
        parent,
        mdev_type,
        attrs,
        path: child(root, "path")
            .and_then(|p| p.text())
            .map(str::to_string),
        iommu_group: None,
        driver: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::StartMode;

    const U: Uuid = Uuid::from_u128(0x55555555_5555_4555_8555_555555555555);

    #[test]
    fn round_trip() {
        let mut d = Definition::new(U, "vgpu_shim0", "vgpu_shim-1G", StartMode::Auto);
        d.set_attr("vgpu/weight", "8".into());
        d.set_attr("vgpu/cap", "40".into());
        let x = node_device(&MdevXml::from(&d));
        assert!(x.contains("<name>mdev_55555555_5555_4555_8555_555555555555_vgpu_shim0</name>"));
        let back = parse_node_device(&x).unwrap();
        assert_eq!(back.uuid, Some(U));
        assert_eq!(back.parent.as_deref(), Some("vgpu_shim0"));
        assert_eq!(back.mdev_type, "vgpu_shim-1G");
        assert_eq!(back.attrs, d.attrs);
    }

    #[test]
    fn reads_libvirts_define_form() {
        let x = "<device>\n  <parent>vgpu_shim1</parent>\n  <capability type=\"mdev\">\n    \
                 <type id=\"vgpu_shim-256M\"/>\n    <attr name=\"vgpu/cap\" value=\"25\"/>\n  \
                 </capability>\n</device>";
        let m = parse_node_device(x).unwrap();
        assert_eq!((m.uuid, m.parent.as_deref()), (None, Some("vgpu_shim1")));
        assert_eq!(m.attrs, vec![("vgpu/cap".to_string(), "25".to_string())]);
    }

    #[test]
    fn errors_name_the_problem() {
        for (x, why) in [
            ("<device>", "not well-formed XML"),
            ("<domain/>", "found <domain>"),
            ("<device><capability type='pci'/></device>", "no <capability type='mdev'>"),
            ("<device><capability type='mdev'/></device>", "no <type id="),
            (
                "<device><capability type='mdev'><type id='t'/><uuid>x</uuid></capability></device>",
                "<uuid>x</uuid>",
            ),
            (
                "<device><capability type='mdev'><type id='t'/><attr name='vgpu/weight' value='500'/></capability></device>",
                "weight must be between 1 and 100",
            ),
            (
                "<device><capability type='mdev'><type id='t'/><attr name='../remove' value='1'/></capability></device>",
                "relative path",
            ),
        ] {
            let e = parse_node_device(x).unwrap_err();
            assert!(e.contains(why), "{x}: {e}");
        }
        assert_eq!(esc("a'<&>\""), "a&apos;&lt;&amp;&gt;&quot;");
    }
}
