//! Persistent definitions in mdevctl's format, so `vgpuctl` and mdevctl 1.2.0 read and
//! start each other's definitions.
//!
//! A definition is the file `/etc/mdevctl.d/<parent>/<uuid>`, JSON exactly as
//! mdevctl 1.2.0 writes it (keys in this order, two-space indent, no final newline):
//!
//! ```json
//! {
//!   "mdev_type": "vgpu_shim-1G",
//!   "start": "auto",
//!   "attrs": [
//!     {
//!       "vgpu/weight": "8"
//!     },
//!     {
//!       "vgpu/cap": "40"
//!     }
//!   ]
//! }
//! ```
//!
//! `attrs` are written, in order, to `<instance>/<name>` after the instance is created
//! (mdevctl does the same), so a vGPU's weight and cap travel as `vgpu/weight` and
//! `vgpu/cap` and reach sysfs whichever tool starts it. Values are strings (mdevctl
//! 1.2.0 panics on anything else).

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path};
use uuid::Uuid;

use crate::model::{CAP_RANGE, WEIGHT_RANGE};
use crate::units::parse_in_range;

/// The attribute carrying the weight.
pub const ATTR_WEIGHT: &str = "vgpu/weight";
/// The attribute carrying the cap.
pub const ATTR_CAP: &str = "vgpu/cap";

/// Whether a definition is started when its parent appears (`auto`) or only by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartMode {
    /// Started at boot / module load (udev → `vgpuctl start-parent`).
    Auto,
    /// Started only by `vgpuctl start` (or `mdevctl start`).
    #[default]
    Manual,
}

impl StartMode {
    /// `auto` or `manual`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Manual => "manual",
        }
    }
}

impl fmt::Display for StartMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One persistent definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Definition {
    /// The instance UUID (the file name).
    pub uuid: Uuid,
    /// Parent name (the directory name).
    pub parent: String,
    /// Full type id, e.g. `vgpu_shim-1G`.
    #[serde(rename = "type")]
    pub mdev_type: String,
    /// Start mode.
    pub start: StartMode,
    /// Attributes written after creation, in order: `(relative path, value)`.
    #[serde(serialize_with = "attrs_as_objects")]
    pub attrs: Vec<(String, String)>,
}

fn attrs_as_objects<S: serde::Serializer>(
    attrs: &[(String, String)],
    s: S,
) -> Result<S::Ok, S::Error> {
    let v: Vec<BTreeMap<&str, &str>> = attrs
        .iter()
        .map(|(k, v)| BTreeMap::from([(k.as_str(), v.as_str())]))
        .collect();
    v.serialize(s)
}

/// mdevctl's file layout, field for field and in its order.
#[derive(Serialize)]
struct MdevctlFile<'a> {
    mdev_type: &'a str,
    start: &'a str,
    attrs: Vec<BTreeMap<&'a str, &'a str>>,
}

impl Definition {
    /// A definition without attributes.
    pub fn new(uuid: Uuid, parent: &str, mdev_type: &str, start: StartMode) -> Self {
        Self {
            uuid,
            parent: parent.to_string(),
            mdev_type: mdev_type.to_string(),
            start,
            attrs: Vec::new(),
        }
    }

    /// The weight the definition sets (its last `vgpu/weight`), if any.
    pub fn weight(&self) -> Option<u64> {
        self.attr(ATTR_WEIGHT)
            .and_then(|v| parse_in_range("weight", v, WEIGHT_RANGE).ok())
    }

    /// The cap the definition sets (its last `vgpu/cap`), if any.
    pub fn cap(&self) -> Option<u64> {
        self.attr(ATTR_CAP)
            .and_then(|v| parse_in_range("cap", v, CAP_RANGE).ok())
    }

    /// The last value of an attribute (later writes win, as in sysfs).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets an attribute: the first entry of that name is replaced in place and any
    /// later duplicates dropped; a new name is appended.
    pub fn set_attr(&mut self, name: &str, value: String) {
        match self.attrs.iter().position(|(k, _)| k == name) {
            Some(i) => {
                self.attrs[i].1 = value;
                let mut seen = false;
                self.attrs.retain(|(k, _)| {
                    if k != name {
                        return true;
                    }
                    let keep = !seen;
                    seen = true;
                    keep
                });
            }
            None => self.attrs.push((name.to_string(), value)),
        }
    }

    /// The file content, byte for byte as mdevctl 1.2.0 writes it.
    pub fn to_mdevctl_json(&self) -> String {
        let file = MdevctlFile {
            mdev_type: &self.mdev_type,
            start: self.start.as_str(),
            attrs: self
                .attrs
                .iter()
                .map(|(k, v)| BTreeMap::from([(k.as_str(), v.as_str())]))
                .collect(),
        };
        // Plain strings and maps of strings: serializing cannot fail.
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }

    /// Reads a definition file's content. Strict where mdevctl is strict (`mdev_type`
    /// and `start` present, `attrs` an array of one-key objects) and stricter where it
    /// would panic or misbehave (non-string values, attribute paths leaving the device
    /// directory, out-of-range weight or cap).
    pub fn from_mdevctl_json(uuid: Uuid, parent: &str, text: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let obj = v
            .as_object()
            .ok_or("expected a JSON object with `mdev_type`, `start` and `attrs`")?;
        let mdev_type = obj
            .get("mdev_type")
            .and_then(|t| t.as_str())
            .ok_or("`mdev_type` is missing or not a string")?;
        if mdev_type.is_empty() || mdev_type.contains('/') {
            return Err(format!("`mdev_type` `{mdev_type}` is not a type id"));
        }
        let start = match obj.get("start").and_then(|s| s.as_str()) {
            Some("auto") => StartMode::Auto,
            Some("manual") => StartMode::Manual,
            Some(other) => return Err(format!("`start` is `{other}`, expected auto or manual")),
            None => return Err("`start` is missing or not a string".into()),
        };
        let mut def = Definition::new(uuid, parent, mdev_type, start);
        match obj.get("attrs") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let o = item
                        .as_object()
                        .filter(|o| o.len() == 1)
                        .ok_or_else(|| format!("attrs[{i}] is not an object with one key"))?;
                    let Some((k, val)) = o.iter().next() else {
                        continue;
                    };
                    let val = val
                        .as_str()
                        .ok_or_else(|| format!("attrs[{i}] `{k}`: value is not a string"))?;
                    check_attr(k, val).map_err(|e| format!("attrs[{i}]: {e}"))?;
                    def.attrs.push((k.clone(), val.to_string()));
                }
            }
            Some(_) => return Err("`attrs` is not an array".into()),
        }
        Ok(def)
    }

    /// Whether two definitions would bring up the same instance (everything but the
    /// start mode equal, attributes compared by their effective values).
    pub fn same_device(&self, other: &Definition) -> bool {
        self.uuid == other.uuid
            && self.parent == other.parent
            && self.mdev_type == other.mdev_type
            && effective_attrs(self) == effective_attrs(other)
    }
}

fn effective_attrs(d: &Definition) -> BTreeMap<&str, &str> {
    d.attrs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Checks an attribute name (a relative path inside the device directory, as mdevctl
/// writes `<device>/<name>`) and, for the vgpu knobs, its value.
pub fn check_attr(name: &str, value: &str) -> Result<(), String> {
    let path = Path::new(name);
    if name.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!(
            "attribute `{name}` must be a relative path inside the device (e.g. vgpu/weight)"
        ));
    }
    if value.contains('\0') {
        return Err(format!("attribute `{name}`: value contains a NUL byte"));
    }
    match name {
        ATTR_WEIGHT => parse_in_range("weight", value, WEIGHT_RANGE).map(|_| ()),
        ATTR_CAP => parse_in_range("cap", value, CAP_RANGE).map(|_| ()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: Uuid = Uuid::from_u128(0x55555555_5555_4555_8555_555555555555);

    #[test]
    fn writes_mdevctls_bytes() {
        let mut d = Definition::new(U, "vgpu_shim0", "vgpu_shim-1G", StartMode::Auto);
        assert_eq!(
            d.to_mdevctl_json(),
            "{\n  \"mdev_type\": \"vgpu_shim-1G\",\n  \"start\": \"auto\",\n  \"attrs\": []\n}"
        );
        d.set_attr(ATTR_WEIGHT, "8".into());
        d.set_attr(ATTR_CAP, "40".into());
        assert_eq!(
            d.to_mdevctl_json(),
            "{\n  \"mdev_type\": \"vgpu_shim-1G\",\n  \"start\": \"auto\",\n  \"attrs\": [\n    \
             {\n      \"vgpu/weight\": \"8\"\n    },\n    {\n      \"vgpu/cap\": \"40\"\n    }\n  \
             ]\n}"
        );
        let back = Definition::from_mdevctl_json(U, "vgpu_shim0", &d.to_mdevctl_json()).unwrap();
        assert_eq!(back, d);
        assert_eq!((back.weight(), back.cap()), (Some(8), Some(40)));
    }

    #[test]
    fn set_attr_replaces_in_place() {
        let mut d = Definition::new(U, "p", "t", StartMode::Manual);
        d.attrs = vec![
            ("vgpu/cap".into(), "1".into()),
            ("x".into(), "y".into()),
            ("vgpu/cap".into(), "2".into()),
        ];
        assert_eq!(d.cap(), Some(2));
        d.set_attr("vgpu/cap", "3".into());
        assert_eq!(
            d.attrs,
            vec![("vgpu/cap".into(), "3".into()), ("x".into(), "y".into())]
        );
    }

    #[test]
    fn reads_mdevctls_variants() {
        // mdevctl's own test input: no attrs at all, four-space indent.
        let d = Definition::from_mdevctl_json(
            U,
            "vgpu_shim1",
            "{\n    \"mdev_type\": \"vgpu_shim-128M\",\n    \"start\": \"auto\"\n}\n",
        )
        .unwrap();
        assert_eq!(d.start, StartMode::Auto);
        assert!(d.attrs.is_empty());
        assert_eq!(d.weight(), None);
    }

    #[test]
    fn rejects_bad_files() {
        for (text, why) in [
            ("", "not valid JSON"),
            ("[]", "expected a JSON object"),
            ("{\"start\":\"auto\"}", "`mdev_type` is missing"),
            ("{\"mdev_type\":\"t\"}", "`start` is missing"),
            (
                "{\"mdev_type\":\"t\",\"start\":\"boot\"}",
                "`start` is `boot`",
            ),
            (
                "{\"mdev_type\":\"t\",\"start\":\"auto\",\"attrs\":{}}",
                "not an array",
            ),
            (
                "{\"mdev_type\":\"t\",\"start\":\"auto\",\"attrs\":[{\"a\":\"1\",\"b\":\"2\"}]}",
                "one key",
            ),
            (
                "{\"mdev_type\":\"t\",\"start\":\"auto\",\"attrs\":[{\"vgpu/weight\":5}]}",
                "not a string",
            ),
            (
                "{\"mdev_type\":\"t\",\"start\":\"auto\",\"attrs\":[{\"../remove\":\"1\"}]}",
                "relative path",
            ),
            (
                "{\"mdev_type\":\"t\",\"start\":\"auto\",\"attrs\":[{\"vgpu/weight\":\"0\"}]}",
                "weight must be between 1 and 100",
            ),
        ] {
            let e = Definition::from_mdevctl_json(U, "p", text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
