//! How `vgpuctl` prints things: aligned text tables for people, JSON for scripts.
//!
//! Kept in the library so the golden-output tests exercise exactly what the binary
//! prints.

use serde::Serialize;

use crate::apply::Applied;
use crate::definition::Definition;
use crate::model::{Instance, Parent, PoolInfo, VgpuType};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}
pub(crate) use Align::{Left, Right};

/// Formats rows under headers, columns separated by two spaces, without trailing
/// blanks. Only the header is printed when there are no rows.
pub(crate) fn table(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let width = |s: &str| {
        if s.is_ascii() {
            s.len()
        } else {
            s.chars().count()
        }
    };
    let mut widths: Vec<usize> = headers.iter().map(|(h, _)| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let line_len: usize = widths.iter().map(|w| w + 2).sum::<usize>() + 1;
    let mut out = String::with_capacity(line_len * (rows.len() + 1));
    let mut put = |cells: &mut dyn Iterator<Item = &str>| {
        let start = out.len();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = widths[i].saturating_sub(width(cell));
            if headers[i].1 == Right {
                out.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(cell);
            if headers[i].1 == Left {
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        // No trailing blanks (a left-aligned last column pads).
        let kept = out[start..].trim_end().len();
        out.truncate(start + kept);
        out.push('\n');
    };
    put(&mut headers.iter().map(|(h, _)| *h));
    for row in rows {
        put(&mut row.iter().map(String::as_str));
    }
    out
}

/// `vgpuctl types`.
pub fn types_table(types: &[VgpuType]) -> String {
    let rows: Vec<Vec<String>> = types
        .iter()
        .map(|t| {
            vec![
                t.parent.clone(),
                t.id.clone(),
                t.name.clone(),
                t.description.vram_mb.to_string(),
                t.description.weight.to_string(),
                t.available_instances.to_string(),
                t.description.max_instances.to_string(),
                t.device_api.clone(),
            ]
        })
        .collect();
    table(
        &[
            ("PARENT", Left),
            ("TYPE", Left),
            ("NAME", Left),
            ("VRAM_MB", Right),
            ("WEIGHT", Right),
            ("AVAILABLE", Right),
            ("MAX", Right),
            ("API", Left),
        ],
        &rows,
    )
}

/// `vgpuctl parents`.
pub fn parents_table(parents: &[Parent]) -> String {
    let rows: Vec<Vec<String>> = parents
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.pool_mb.to_string(),
                p.pool_free_mb.to_string(),
                p.reserved_mb().to_string(),
                p.vram_pages.to_string(),
                p.types.len().to_string(),
            ]
        })
        .collect();
    table(
        &[
            ("PARENT", Left),
            ("POOL_MB", Right),
            ("FREE_MB", Right),
            ("RESERVED_MB", Right),
            ("VRAM_PAGES", Right),
            ("TYPES", Right),
        ],
        &rows,
    )
}

/// `vgpuctl list` (a cap of 0 shows as `none`).
pub fn instances_table(instances: &[Instance]) -> String {
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            vec![
                i.uuid.to_string(),
                i.parent.clone(),
                i.type_id.clone(),
                i.vram_mb.to_string(),
                i.vram_used_kb.to_string(),
                i.weight.to_string(),
                if i.cap == 0 {
                    "none".to_string()
                } else {
                    i.cap.to_string()
                },
            ]
        })
        .collect();
    table(
        &[
            ("UUID", Left),
            ("PARENT", Left),
            ("TYPE", Left),
            ("VRAM_MB", Right),
            ("USED_KB", Right),
            ("WEIGHT", Right),
            ("CAP", Right),
        ],
        &rows,
    )
}

/// `vgpuctl pool`.
pub fn pool_text(pool: &PoolInfo) -> String {
    table(
        &[
            ("PARENT", Left),
            ("POOL_MB", Right),
            ("FREE_MB", Right),
            ("RESERVED_MB", Right),
            ("VRAM_PAGES", Right),
        ],
        &[vec![
            pool.parent.clone(),
            pool.pool_mb.to_string(),
            pool.pool_free_mb.to_string(),
            pool.reserved_mb.to_string(),
            pool.vram_pages.to_string(),
        ]],
    )
}

/// A definition with whether it runs now (`vgpuctl list --defined`).
#[derive(Debug, Clone, Serialize)]
pub struct DefinedRow<'a> {
    /// The definition.
    #[serde(flatten)]
    pub definition: &'a Definition,
    /// Its weight (`null` = the type's default).
    pub weight: Option<u64>,
    /// Its cap (`null` = none).
    pub cap: Option<u64>,
    /// Whether an instance with its UUID runs now.
    pub running: bool,
}

/// `vgpuctl list --defined`: a weight or cap the definition leaves to the type's
/// default shows as `-`.
pub fn definitions_table(rows: &[DefinedRow<'_>]) -> String {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.definition.uuid.to_string(),
                r.definition.parent.clone(),
                r.definition.mdev_type.clone(),
                r.definition.start.to_string(),
                opt(r.weight),
                match r.cap {
                    Some(0) => "none".to_string(),
                    c => opt(c),
                },
                if r.running { "running" } else { "stopped" }.to_string(),
            ]
        })
        .collect();
    table(
        &[
            ("UUID", Left),
            ("PARENT", Left),
            ("TYPE", Left),
            ("START", Left),
            ("WEIGHT", Right),
            ("CAP", Right),
            ("STATE", Left),
        ],
        &rows,
    )
}

/// `vgpuctl apply`: what happened to each vGPU (the words are the JSON values).
pub fn applied_table(rows: &[Applied]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|a| {
            vec![
                a.uuid.to_string(),
                a.parent.clone(),
                a.type_id.clone(),
                word(&a.definition),
                word(&a.instance),
            ]
        })
        .collect();
    table(
        &[
            ("UUID", Left),
            ("PARENT", Left),
            ("TYPE", Left),
            ("DEFINITION", Left),
            ("INSTANCE", Left),
        ],
        &rows,
    )
}

/// The snake_case word serde gives a unit variant.
fn word<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Pretty JSON with a final newline.
pub fn json<T: Serialize + ?Sized>(value: &T) -> String {
    // Serializing these plain structs cannot fail (string keys, no non-finite floats).
    let mut s =
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_is_the_header() {
        assert_eq!(
            instances_table(&[]),
            "UUID  PARENT  TYPE  VRAM_MB  USED_KB  WEIGHT  CAP\n"
        );
    }

    #[test]
    fn columns_align() {
        let t = table(
            &[("A", Left), ("NUM", Right), ("Z", Left)],
            &[
                vec!["long-name".into(), "1".into(), "x".into()],
                vec!["s".into(), "1234".into(), "".into()],
            ],
        );
        assert_eq!(
            t,
            "A           NUM  Z\nlong-name     1  x\ns          1234\n"
        );
    }
}
