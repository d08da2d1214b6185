//! The manifest `vgpuctl apply` reads: a declarative set of vGPU definitions, JSON.
//!
//! ```json
//! {
//!   "placement": "spread",
//!   "vgpus": [
//!     { "uuid": "0b6b2f0e-1c4d-4e55-8f7a-1d2c3b4a5e6f", "type": "1G",
//!       "parent": "vgpu_shim0", "weight": 8, "cap": "40%", "start": "auto" },
//!     { "uuid": "5f0e7c4e-6b8a-4d0c-9a53-2f1c0f6f4c21", "type": "512M", "running": false }
//!   ]
//! }
//! ```
//!
//! JSON rather than TOML: the definitions themselves are JSON (mdevctl's format), the
//! `--json` outputs are JSON, provisioning tools emit it (`jq`, Ansible, cloud-init),
//! and it needs no further parser in a static binary that starts on every call.
//!
//! Per vGPU: `uuid` and `type` (any spelling `--type` takes) are required; `parent`
//! (else placed by `placement`, per vGPU or for the whole file; default spread),
//! `weight` (1–100), `cap` (0–100, `"40%"`, `"none"`), `start` (`auto` | `manual`)
//! and `running` (default true: bring it up now) are optional. A key left out leaves
//! that property of an existing vGPU as it is; a new one gets what `define` gives
//! (the type's weight, no cap, manual). Numbers may be written as JSON numbers or strings. An unknown key, a
//! duplicate UUID or a value out of range is an error naming the entry; nothing is
//! applied then.

use uuid::Uuid;

use crate::definition::StartMode;
use crate::placement::Placement;
use crate::units::{parse_cap, parse_weight};

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The vGPUs, in file order (the order they are brought up).
    pub vgpus: Vec<Entry>,
}

/// One vGPU of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its UUID (required: what makes re-running idempotent).
    pub uuid: Uuid,
    /// Any spelling of its type.
    pub type_spec: String,
    /// Its parent; `None` = keep the one it has, or place it.
    pub parent: Option<String>,
    /// The policy that places it when it has no parent.
    pub placement: Placement,
    /// Weight; `None` = leave as is (new: the type's default).
    pub weight: Option<u64>,
    /// Cap; `None` = leave as is (new: none).
    pub cap: Option<u64>,
    /// Start mode of the definition; `None` = leave as is (new: manual).
    pub start: Option<StartMode>,
    /// Whether it should run now.
    pub running: bool,
}

const TOP_KEYS: &str = "vgpus, placement";
const KEYS: &str = "uuid, type, parent, placement, weight, cap, start, running";

impl Manifest {
    /// Parses a manifest; the error names the entry and key at fault.
    pub fn parse(text: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let top = v
            .as_object()
            .ok_or("expected a JSON object with a `vgpus` array")?;
        if let Some(k) = top.keys().find(|k| !TOP_KEYS.split(", ").any(|x| x == *k)) {
            return Err(format!("unknown key `{k}` (known: {TOP_KEYS})"));
        }
        let placement = match top.get("placement") {
            None => Placement::default(),
            Some(p) => text_of(p)
                .ok_or("`placement` is not a string")?
                .parse()
                .map_err(|e| format!("`placement`: {e}"))?,
        };
        let items = top
            .get("vgpus")
            .and_then(|v| v.as_array())
            .ok_or("`vgpus` is missing or not an array")?;
        let mut vgpus: Vec<Entry> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let e = entry(item, placement).map_err(|e| format!("vgpus[{i}]: {e}"))?;
            if let Some(j) = vgpus.iter().position(|x| x.uuid == e.uuid) {
                return Err(format!(
                    "vgpus[{i}]: {} is listed already (vgpus[{j}])",
                    e.uuid
                ));
            }
            vgpus.push(e);
        }
        Ok(Self { vgpus })
    }
}

fn entry(item: &serde_json::Value, placement: Placement) -> Result<Entry, String> {
    let o = item.as_object().ok_or("not an object")?;
    if let Some(k) = o.keys().find(|k| !KEYS.split(", ").any(|x| x == *k)) {
        return Err(format!("unknown key `{k}` (known: {KEYS})"));
    }
    let text = |key: &str| -> Result<Option<String>, String> {
        match o.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => text_of(v)
                .map(Some)
                .ok_or_else(|| format!("`{key}` is not a string or number")),
        }
    };
    let uuid = text("uuid")?.ok_or("`uuid` is missing (a manifest names every vGPU)")?;
    let uuid = Uuid::parse_str(uuid.trim()).map_err(|e| format!("`uuid` `{uuid}`: {e}"))?;
    let type_spec = text("type")?.ok_or("`type` is missing")?;
    let placement = match text("placement")? {
        None => placement,
        Some(p) => p.parse().map_err(|e| format!("`placement`: {e}"))?,
    };
    let weight = text("weight")?.map(|w| parse_weight(&w)).transpose()?;
    let cap = text("cap")?.map(|c| parse_cap(&c)).transpose()?;
    let start = match text("start")?.as_deref() {
        None => None,
        Some("manual") => Some(StartMode::Manual),
        Some("auto") => Some(StartMode::Auto),
        Some(s) => return Err(format!("`start` is `{s}`, expected auto or manual")),
    };
    let running = match o.get("running") {
        None | Some(serde_json::Value::Null) => true,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return Err("`running` is not true or false".into()),
    };
    Ok(Entry {
        uuid,
        type_spec,
        parent: text("parent")?,
        placement,
        weight,
        cap,
        start,
        running,
    })
}

/// A string, or a number written as one.
fn text_of(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "0b6b2f0e-1c4d-4e55-8f7a-1d2c3b4a5e6f";

    #[test]
    fn parses_the_documented_form() {
        let m = Manifest::parse(&format!(
            r#"{{"placement": "pack", "vgpus": [
                {{"uuid": "{U}", "type": "1G", "parent": "vgpu_shim0", "weight": 8,
                  "cap": "40%", "start": "auto"}},
                {{"uuid": "5f0e7c4e-6b8a-4d0c-9a53-2f1c0f6f4c21", "type": "512M",
                  "running": false, "weight": "3", "placement": "spread"}}]}}"#
        ))
        .unwrap();
        let a = &m.vgpus[0];
        assert_eq!(a.uuid.to_string(), U);
        assert_eq!(
            (a.type_spec.as_str(), a.parent.as_deref(), a.weight, a.cap),
            ("1G", Some("vgpu_shim0"), Some(8), Some(40))
        );
        assert_eq!(
            (a.start, a.running, a.placement),
            (Some(StartMode::Auto), true, Placement::Pack)
        );
        let b = &m.vgpus[1];
        assert_eq!(
            (b.weight, b.cap, b.parent.as_deref()),
            (Some(3), None, None)
        );
        assert_eq!(
            (b.start, b.running, b.placement),
            (None, false, Placement::Spread)
        );
        assert!(Manifest::parse(r#"{"vgpus": []}"#)
            .unwrap()
            .vgpus
            .is_empty());
    }

    #[test]
    fn errors_name_the_entry_and_key() {
        let one = |body: &str| format!(r#"{{"vgpus": [{{"uuid": "{U}", "type": "1G"}}, {body}]}}"#);
        for (text, want) in [
            ("".to_string(), "not valid JSON"),
            ("[]".to_string(), "expected a JSON object"),
            (
                r#"{"vgpu": []}"#.to_string(),
                "unknown key `vgpu` (known: vgpus, placement)",
            ),
            (
                r#"{"placement": "fill", "vgpus": []}"#.to_string(),
                "`placement`: placement policy `fill` is unknown",
            ),
            (one(r#"{"type": "1G"}"#), "vgpus[1]: `uuid` is missing"),
            (
                one(r#"{"uuid": "x", "type": "1G"}"#),
                "vgpus[1]: `uuid` `x`:",
            ),
            (
                one(&format!(r#"{{"uuid": "{U}", "type": "2G"}}"#)),
                "vgpus[1]: 0b6b2f0e-1c4d-4e55-8f7a-1d2c3b4a5e6f is listed already (vgpus[0])",
            ),
            (
                one(r#"{"uuid": "5f0e7c4e-6b8a-4d0c-9a53-2f1c0f6f4c21"}"#),
                "vgpus[1]: `type` is missing",
            ),
            (
                one(
                    r#"{"uuid": "5f0e7c4e-6b8a-4d0c-9a53-2f1c0f6f4c21", "type": "1G", "wieght": 3}"#,
                ),
                "vgpus[1]: unknown key `wieght`",
            ),
            (
                one(
                    r#"{"uuid": "5f0e7c4e-6b8a-4d0c-9a53-2f1c0f6f4c21", "type": "1G", "weight": 0}"#,
                ),
                "vgpus[1]: weight must be between 1 and 100, got 0",
            ),
            (
                one(
                    r#"{"uuid": "5f0e7c4e-6b8a-4d0c-9a53-2f1c0f6f4c21", "type": "1G", "cap": "150%"}"#,
                ),
                "vgpus[1]: cap",
            ),
            (
                one(
                    r#"{"uuid": "5f0e7c4e-6b8a-4d0c-9a53-2f1c0f6f4c21", "type": "1G", "start": "boot"}"#,
                ),
                "vgpus[1]: `start` is `boot`",
            ),
            (
                one(
                    r#"{"uuid": "5f0e7c4e-6b8a-4d0c-9a53-2f1c0f6f4c21", "type": "1G", "running": "yes"}"#,
                ),
                "vgpus[1]: `running` is not true or false",
            ),
            (
                one(r#"{"uuid": "5f0e7c4e-6b8a-4d0c-9a53-2f1c0f6f4c21", "type": ["1G"]}"#),
                "vgpus[1]: `type` is not a string",
            ),
            (one("7"), "vgpus[1]: not an object"),
        ] {
            let e = Manifest::parse(&text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
