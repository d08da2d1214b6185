//! The spellings an operator may type: sizes (`16G`, `512MiB`, `2048`), percentages
//! (`50%`, `50`, `none`), weights, and type names (`vgpu_shim-128M`, `128M`, `128m`,
//! `vgpu 128M`, `1024M` for `1G`). Each parser says what it expected when it fails.

use crate::model::{VgpuType, CAP_RANGE, TYPE_PREFIX, WEIGHT_RANGE};

/// A size in MiB from `N` (MiB), `NM`, `NMB`, `NMiB`, `NG`, `NGB`, `NGiB`, `NT`, `NTiB`
/// (any case; binary units: 1G = 1024M). Fractions are accepted when they make whole
/// MiB (`1.5G`).
pub fn parse_size_mb(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let mult: u64 = match unit.trim() {
        "" | "m" | "mb" | "mib" => 1,
        "g" | "gb" | "gib" => 1024,
        "t" | "tb" | "tib" => 1024 * 1024,
        _ => {
            return Err(format!(
                "`{s}` is not a size: expected MiB as a number, or a number with M, G or T \
                 (e.g. 512, 512M, 16G)"
            ))
        }
    };
    let bad = || format!("`{s}` is not a size: expected e.g. 512, 512M, 16G or 1.5G");
    let (whole, frac) = match num.split_once('.') {
        Some((w, f)) => (w, f),
        None => (num, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let mut mb = whole.checked_mul(mult).ok_or_else(bad)?;
    if !frac.is_empty() {
        // frac / 10^len * mult must be whole MiB.
        let digits = u32::try_from(frac.len()).map_err(|_| bad())?;
        let den = 10u128.checked_pow(digits).ok_or_else(bad)?;
        let f: u128 = frac.parse().map_err(|_| bad())?;
        let num = f * u128::from(mult);
        if !num.is_multiple_of(den) {
            return Err(format!("`{s}` is not a whole number of MiB"));
        }
        let extra = u64::try_from(num / den).map_err(|_| bad())?;
        mb = mb.checked_add(extra).ok_or_else(bad)?;
    }
    Ok(mb)
}

/// A whole number within `range`, named `what` in errors. Signs are read so that `-1`
/// is reported as out of range rather than as an unknown option.
pub fn parse_in_range(what: &str, s: &str, (min, max): (u64, u64)) -> Result<u64, String> {
    let t = s.trim();
    let n: i128 = t
        .parse()
        .map_err(|_| format!("{what} must be a whole number between {min} and {max}, got `{s}`"))?;
    if n < i128::from(min) || n > i128::from(max) {
        return Err(format!("{what} must be between {min} and {max}, got {t}"));
    }
    u64::try_from(n).map_err(|_| format!("{what} must be between {min} and {max}, got {t}"))
}

/// A scheduling weight, 1–100.
pub fn parse_weight(s: &str) -> Result<u64, String> {
    parse_in_range("weight", s, WEIGHT_RANGE)
}

/// A cap in percent of one engine: `50`, `50%`, `0`, `none` or `off` (= 0).
pub fn parse_cap(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("none") || t.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    let t = t.strip_suffix('%').unwrap_or(t);
    parse_in_range("cap (percent of one engine, 0 = none)", t, CAP_RANGE)
}

/// The type id a spelling names directly, up to case (`vgpu_shim-1G`, `1G`, `1g` all
/// give `vgpu_shim-1g`), if it has the form of one; [`resolve_type`] knows more
/// spellings (the `name`, a quota in MiB).
pub fn type_dir_name(spelling: &str) -> Option<String> {
    let lower = spelling.trim().to_ascii_lowercase();
    let short = lower.strip_prefix(TYPE_PREFIX).unwrap_or(&lower);
    let unit = short.strip_suffix(['m', 'g', 't'])?;
    (!unit.is_empty() && unit.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("{TYPE_PREFIX}{short}"))
}

/// Finds the type `spelling` names among `types` (one parent's, or several parents'
/// ladders): the exact id, the id without `vgpu_shim-`, the type's `name`
/// (`vgpu 128M`), or any size spelling of its quota (`128m`, `1024M` = `1G`). Returns
/// the type id, or an error listing the known spellings.
pub fn resolve_type<'a>(spelling: &str, types: &'a [VgpuType]) -> Result<&'a str, String> {
    let s = spelling.trim();
    if let Some(t) = types.iter().find(|t| t.id == s) {
        return Ok(&t.id);
    }
    let lower = s.to_ascii_lowercase();
    let short = lower
        .strip_prefix(TYPE_PREFIX)
        .or_else(|| lower.strip_prefix("vgpu "))
        .or_else(|| lower.strip_prefix("vgpu-"))
        .unwrap_or(&lower)
        .trim();
    let by_id = types
        .iter()
        .find(|t| t.id.to_ascii_lowercase() == format!("{TYPE_PREFIX}{short}"));
    if let Some(t) = by_id {
        return Ok(&t.id);
    }
    if let Some(t) = types.iter().find(|t| t.name.eq_ignore_ascii_case(s)) {
        return Ok(&t.id);
    }
    if let Ok(mb) = parse_size_mb(short) {
        let mut ids: Vec<&str> = types
            .iter()
            .filter(|t| t.description.vram_mb == mb)
            .map(|t| t.id.as_str())
            .collect();
        ids.dedup();
        ids.sort_unstable();
        ids.dedup();
        match ids.as_slice() {
            [one] => return Ok(one),
            [] => {}
            many => {
                return Err(format!(
                    "type `{spelling}` is ambiguous: {} all have {mb} MiB",
                    many.join(", ")
                ))
            }
        }
    }
    let mut known: Vec<&str> = types.iter().map(|t| t.id.as_str()).collect();
    known.sort_by_key(|id| {
        types
            .iter()
            .find(|t| t.id == *id)
            .map_or(0, |t| t.description.vram_mb)
    });
    known.dedup();
    Err(if known.is_empty() {
        format!("unknown type `{spelling}`: no vgpu_shim types are offered (is the module loaded?)")
    } else {
        format!(
            "unknown type `{spelling}` (known: {}; the short form `256M`, any case, or the \
             quota in MiB also work)",
            known.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_dir_names() {
        for (s, want) in [
            ("vgpu_shim-1G", Some("vgpu_shim-1g")),
            ("1G", Some("vgpu_shim-1g")),
            (" 128m ", Some("vgpu_shim-128m")),
            ("VGPU_SHIM-4G", Some("vgpu_shim-4g")),
            ("128", None),
            ("vgpu 128M", None),
            ("G", None),
            ("1.5G", None),
            ("vgpu_shim-", None),
        ] {
            assert_eq!(type_dir_name(s).as_deref(), want, "{s}");
        }
    }

    use crate::model::TypeDescription;

    fn ladder() -> Vec<VgpuType> {
        crate::fake::STANDARD_TYPES
            .iter()
            .map(|(short, mb, w)| VgpuType {
                id: format!("{TYPE_PREFIX}{short}"),
                parent: "vgpu_shim0".into(),
                name: format!("vgpu {short}"),
                description: TypeDescription {
                    vram_mb: *mb,
                    weight: *w,
                    max_instances: 1,
                },
                device_api: "vfio-pci".into(),
                available_instances: 1,
            })
            .collect()
    }

    #[test]
    fn sizes() {
        for (s, mb) in [
            ("2048", 2048),
            ("16G", 16384),
            ("16g", 16384),
            ("16GiB", 16384),
            ("16 GB", 16384),
            ("512M", 512),
            ("512mib", 512),
            ("1.5G", 1536),
            ("0.5g", 512),
            ("1T", 1_048_576),
        ] {
            assert_eq!(parse_size_mb(s), Ok(mb), "{s}");
        }
        for s in [
            "",
            "G",
            "-1",
            "1.2.3G",
            "16X",
            "0x10",
            "1.0001G",
            "99999999999999999999T",
        ] {
            assert!(parse_size_mb(s).is_err(), "{s}");
        }
        assert_eq!(
            parse_size_mb("16X").unwrap_err(),
            "`16X` is not a size: expected MiB as a number, or a number with M, G or T \
             (e.g. 512, 512M, 16G)"
        );
    }

    #[test]
    fn weights_and_caps() {
        assert_eq!(parse_weight("7"), Ok(7));
        assert_eq!(
            parse_weight("-1").unwrap_err(),
            "weight must be between 1 and 100, got -1"
        );
        assert_eq!(
            parse_weight("0").unwrap_err(),
            "weight must be between 1 and 100, got 0"
        );
        assert_eq!(
            parse_weight("heavy").unwrap_err(),
            "weight must be a whole number between 1 and 100, got `heavy`"
        );
        assert_eq!(parse_cap("50%"), Ok(50));
        assert_eq!(parse_cap("50"), Ok(50));
        assert_eq!(parse_cap("none"), Ok(0));
        assert_eq!(
            parse_cap("101%").unwrap_err(),
            "cap (percent of one engine, 0 = none) must be between 0 and 100, got 101"
        );
        assert!(parse_cap("%").is_err());
    }

    #[test]
    fn type_spellings() {
        let types = ladder();
        for (s, id) in [
            ("vgpu_shim-128M", "vgpu_shim-128M"),
            ("128M", "vgpu_shim-128M"),
            ("128m", "vgpu_shim-128M"),
            ("vgpu 128M", "vgpu_shim-128M"),
            ("VGPU 128m", "vgpu_shim-128M"),
            ("vgpu_shim-128m", "vgpu_shim-128M"),
            ("1024M", "vgpu_shim-1G"),
            ("1g", "vgpu_shim-1G"),
            ("4096", "vgpu_shim-4G"),
            ("0.5G", "vgpu_shim-512M"),
        ] {
            assert_eq!(resolve_type(s, &types), Ok(id), "{s}");
        }
        let e = resolve_type("3G", &types).unwrap_err();
        assert!(
            e.starts_with("unknown type `3G` (known: vgpu_shim-128M, "),
            "{e}"
        );
        assert!(resolve_type("1G", &[])
            .unwrap_err()
            .contains("module loaded"));
    }
}
