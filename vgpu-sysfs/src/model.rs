//! The sysfs model as values: parents, types and instances as read at one instant
//! (what `vgpuctl` reports), the type `description` grammar and the knobs' ranges.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Prefix of every type id the vgpu_shim driver registers (`<driver>-<name>`).
pub const TYPE_PREFIX: &str = "vgpu_shim-";

/// Weights accepted by the kernel for an instance.
pub const WEIGHT_RANGE: (u64, u64) = (1, 100);
/// Caps accepted by the kernel for an instance (percent of one engine, 0 = none).
pub const CAP_RANGE: (u64, u64) = (0, 100);
/// Pool sizes accepted by the kernel for a parent, in MiB.
pub const POOL_MB_RANGE: (u64, u64) = (64, 1_048_576);

/// An mdev parent driven by vgpu_shim (one per engine), with its VRAM pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Parent {
    /// e.g. `vgpu_shim0`.
    pub name: String,
    /// Size of the VRAM pool in MiB (`vgpu/pool_mb`).
    pub pool_mb: u64,
    /// Pool left for new instances in MiB (`vgpu/pool_free_mb`).
    pub pool_free_mb: u64,
    /// VRAM pages currently allocated for all instances (`vgpu/vram_pages`).
    pub vram_pages: u64,
    /// The types the parent offers, smallest quota first.
    pub types: Vec<VgpuType>,
}

impl Parent {
    /// MiB reserved by existing instances.
    pub fn reserved_mb(&self) -> u64 {
        self.pool_mb.saturating_sub(self.pool_free_mb)
    }
}

/// An mdev type of a vgpu_shim parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VgpuType {
    /// Type id, the directory name under `mdev_supported_types`, e.g. `vgpu_shim-256M`.
    pub id: String,
    /// The parent offering it.
    pub parent: String,
    /// Human-readable name, e.g. `vgpu 256M`.
    pub name: String,
    /// The parsed `description`.
    #[serde(flatten)]
    pub description: TypeDescription,
    /// `device_api`, e.g. `vfio-pci`.
    pub device_api: String,
    /// How many more instances of this type fit in the parent's pool now.
    pub available_instances: u64,
}

/// A vgpu instance (an mdev device of a vgpu_shim type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// The mdev UUID.
    pub uuid: Uuid,
    /// Parent name.
    pub parent: String,
    /// Type id.
    #[serde(rename = "type")]
    pub type_id: String,
    /// VRAM quota in MiB.
    pub vram_mb: u64,
    /// VRAM touched since the device was opened, in KiB (0 after the last close).
    pub vram_used_kb: u64,
    /// Scheduler weight, 1–100.
    pub weight: u64,
    /// Scheduler cap in percent of one engine, 0 = none.
    pub cap: u64,
}

/// Pool state of one parent (`vgpuctl pool`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolInfo {
    /// Parent name.
    pub parent: String,
    /// Pool size in MiB.
    pub pool_mb: u64,
    /// Pool left in MiB.
    pub pool_free_mb: u64,
    /// Pool reserved by instances in MiB.
    pub reserved_mb: u64,
    /// VRAM pages allocated.
    pub vram_pages: u64,
}

impl From<&Parent> for PoolInfo {
    fn from(p: &Parent) -> Self {
        Self {
            parent: p.name.clone(),
            pool_mb: p.pool_mb,
            pool_free_mb: p.pool_free_mb,
            reserved_mb: p.reserved_mb(),
            vram_pages: p.vram_pages,
        }
    }
}

/// The parsed type `description`: exactly `vram_mb=<N>, weight=<W>, max_instances=<M>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TypeDescription {
    /// VRAM quota of an instance of this type, in MiB (> 0).
    pub vram_mb: u64,
    /// Default weight of an instance, 1–100.
    pub weight: u64,
    /// Instances of this type that fit in the empty pool.
    pub max_instances: u64,
}

/// Why a type description was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptionError {
    /// Fewer or more than three `, `-separated fields.
    #[error("expected 3 fields `vram_mb=<N>, weight=<W>, max_instances=<M>`, found {0}")]
    FieldCount(usize),
    /// A field is not the expected `key=value`.
    #[error("field {index} is `{field}`, expected `{expected}=<number>`")]
    Key {
        /// 1-based field index.
        index: usize,
        /// The field as found.
        field: String,
        /// The key expected there.
        expected: &'static str,
    },
    /// A value is not a plain decimal number.
    #[error("{key} value `{value}` is not a decimal number")]
    Number {
        /// The key.
        key: &'static str,
        /// The value as found.
        value: String,
    },
    /// A value is a number outside what the ABI allows.
    #[error("{key}={value} is out of range ({range})")]
    Range {
        /// The key.
        key: &'static str,
        /// The value.
        value: u64,
        /// The allowed range, in words.
        range: &'static str,
    },
}

const DESCRIPTION_KEYS: [&str; 3] = ["vram_mb", "weight", "max_instances"];

impl FromStr for TypeDescription {
    type Err = DescriptionError;

    /// Parses the description strictly. One trailing newline (as sysfs adds) is
    /// accepted; anything else beyond the exact format is an error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.strip_suffix('\n').unwrap_or(s);
        if s.is_empty() {
            return Err(DescriptionError::FieldCount(0));
        }
        let fields: Vec<&str> = s.split(", ").collect();
        if fields.len() != DESCRIPTION_KEYS.len() {
            return Err(DescriptionError::FieldCount(fields.len()));
        }
        let mut values = [0u64; 3];
        for (i, (field, key)) in fields.iter().zip(DESCRIPTION_KEYS).enumerate() {
            let value = field
                .strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
                .ok_or_else(|| DescriptionError::Key {
                    index: i + 1,
                    field: (*field).to_string(),
                    expected: key,
                })?;
            values[i] = parse_decimal(value).ok_or_else(|| DescriptionError::Number {
                key,
                value: value.to_string(),
            })?;
        }
        let [vram_mb, weight, max_instances] = values;
        if vram_mb == 0 {
            return Err(DescriptionError::Range {
                key: "vram_mb",
                value: vram_mb,
                range: "must be at least 1",
            });
        }
        if !(WEIGHT_RANGE.0..=WEIGHT_RANGE.1).contains(&weight) {
            return Err(DescriptionError::Range {
                key: "weight",
                value: weight,
                range: "1-100",
            });
        }
        Ok(Self {
            vram_mb,
            weight,
            max_instances,
        })
    }
}

impl fmt::Display for TypeDescription {
    /// Writes the canonical ABI form (without a newline).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vram_mb={}, weight={}, max_instances={}",
            self.vram_mb, self.weight, self.max_instances
        )
    }
}

/// Parses a plain decimal `u64` as the kernel prints it: ASCII digits only, no sign, no
/// whitespace, no leading zeros (except `0` itself).
pub fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

/// Orders names like `vgpu_shim2` before `vgpu_shim10`: by the text before the trailing
/// digits, then by the number they make.
pub fn natural_key(name: &str) -> (&str, u64, &str) {
    let digits_at = name
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_digit())
        .last()
        .map_or(name.len(), |(i, _)| i);
    let (head, digits) = name.split_at(digits_at);
    (head, digits.parse().unwrap_or(0), digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<TypeDescription, DescriptionError> {
        s.parse()
    }

    #[test]
    fn description_accepts_the_abi_form() {
        let d = parse("vram_mb=256, weight=1, max_instances=4").unwrap();
        assert_eq!(
            d,
            TypeDescription {
                vram_mb: 256,
                weight: 1,
                max_instances: 4
            }
        );
        assert_eq!(
            parse("vram_mb=4096, weight=16, max_instances=0\n")
                .unwrap()
                .max_instances,
            0
        );
        assert_eq!(d.to_string(), "vram_mb=256, weight=1, max_instances=4");
        assert_eq!(parse(&d.to_string()).unwrap(), d);
        let big = parse("vram_mb=18446744073709551615, weight=100, max_instances=0").unwrap();
        assert_eq!(big.vram_mb, u64::MAX);
    }

    #[test]
    fn description_rejects_wrong_shapes() {
        use DescriptionError::*;
        let cases: &[(&str, DescriptionError)] = &[
            ("", FieldCount(0)),
            ("\n", FieldCount(0)),
            ("vram_mb=256", FieldCount(1)),
            ("vram_mb=256, weight=1", FieldCount(2)),
            (
                "vram_mb=256, weight=1, max_instances=4, extra=1",
                FieldCount(4),
            ),
            ("vram_mb=256,weight=1,max_instances=4", FieldCount(1)),
            (
                "vram_mb=256,  weight=1, max_instances=4",
                Key {
                    index: 2,
                    field: " weight=1".into(),
                    expected: "weight",
                },
            ),
            (
                "weight=1, vram_mb=256, max_instances=4",
                Key {
                    index: 1,
                    field: "weight=1".into(),
                    expected: "vram_mb",
                },
            ),
            (
                "vram_mb 256, weight=1, max_instances=4",
                Key {
                    index: 1,
                    field: "vram_mb 256".into(),
                    expected: "vram_mb",
                },
            ),
            (
                "vram_mb=256, weight=1, max_inst=4",
                Key {
                    index: 3,
                    field: "max_inst=4".into(),
                    expected: "max_instances",
                },
            ),
            (
                "VRAM_MB=256, weight=1, max_instances=4",
                Key {
                    index: 1,
                    field: "VRAM_MB=256".into(),
                    expected: "vram_mb",
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&parse(input).unwrap_err(), want, "input {input:?}");
        }
    }

    #[test]
    fn description_rejects_bad_numbers() {
        for (input, key) in [
            ("vram_mb=, weight=1, max_instances=4", "vram_mb"),
            ("vram_mb=-256, weight=1, max_instances=4", "vram_mb"),
            ("vram_mb=+256, weight=1, max_instances=4", "vram_mb"),
            ("vram_mb=0x100, weight=1, max_instances=4", "vram_mb"),
            ("vram_mb=0256, weight=1, max_instances=4", "vram_mb"),
            ("vram_mb=256M, weight=1, max_instances=4", "vram_mb"),
            ("vram_mb=256, weight= 1, max_instances=4", "weight"),
            ("vram_mb=256, weight=1.5, max_instances=4", "weight"),
            ("vram_mb=256, weight=1, max_instances=4 ", "max_instances"),
            (
                "vram_mb=256, weight=1, max_instances=4\n\n",
                "max_instances",
            ),
            (
                "vram_mb=256, weight=1, max_instances=18446744073709551616",
                "max_instances",
            ),
        ] {
            match parse(input) {
                Err(DescriptionError::Number { key: k, .. }) => assert_eq!(k, key, "{input:?}"),
                other => panic!("{input:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn description_rejects_out_of_range() {
        for (input, key) in [
            ("vram_mb=0, weight=1, max_instances=4", "vram_mb"),
            ("vram_mb=256, weight=0, max_instances=4", "weight"),
            ("vram_mb=256, weight=101, max_instances=4", "weight"),
        ] {
            match parse(input) {
                Err(DescriptionError::Range { key: k, .. }) => assert_eq!(k, key, "{input:?}"),
                other => panic!("{input:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn description_errors_read_well() {
        let e = parse("vram_mb=256, wieght=1, max_instances=4").unwrap_err();
        assert_eq!(
            e.to_string(),
            "field 2 is `wieght=1`, expected `weight=<number>`"
        );
        let e = parse("vram_mb=256").unwrap_err();
        assert_eq!(
            e.to_string(),
            "expected 3 fields `vram_mb=<N>, weight=<W>, max_instances=<M>`, found 1"
        );
    }

    #[test]
    fn decimal_parser_is_strict() {
        assert_eq!(parse_decimal("0"), Some(0));
        assert_eq!(parse_decimal("1024"), Some(1024));
        for bad in [
            "",
            "01",
            "-1",
            "+1",
            " 1",
            "1 ",
            "0x10",
            "1e3",
            "99999999999999999999",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn natural_order() {
        let mut v = vec![
            "vgpu_shim10",
            "vgpu_shim2",
            "vgpu_shim0",
            "other",
            "vgpu_shim1",
        ];
        v.sort_by(|a, b| natural_key(a).cmp(&natural_key(b)));
        assert_eq!(
            v,
            [
                "other",
                "vgpu_shim0",
                "vgpu_shim1",
                "vgpu_shim2",
                "vgpu_shim10"
            ]
        );
    }
}
