//! A parent's `vgpu/instances` (docs/device-abi.md): every instance of the parent in
//! one read, a line `<uuid> <type> <vram_mb> <vram_used_kb> <weight> <cap>` each, and
//! a last line `more <count>` when they did not all fit in a page. With it, listing 64
//! instances is one read per parent instead of three per instance; modules without it
//! (and parents with a `more` line) are read file by file ([`crate::read`]).

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::io::read_small;
use crate::model::{parse_decimal, Instance, TYPE_PREFIX};

/// What a parent's `vgpu/instances` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// Every instance of the parent, in the kernel's order (creation).
    Complete(Vec<Instance>),
    /// Some did not fit (`more <count>`): the per-instance files are needed.
    Partial,
}

/// Reads `<parent_dir>/vgpu/instances`; `None` if the module has no such file.
pub fn read(parent: &str, parent_dir: &Path) -> Result<Option<Listing>> {
    let path = parent_dir.join("vgpu/instances");
    let text = match read_small(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Read { path, source }),
    };
    parse(parent, &text)
        .map(Some)
        .map_err(|reason| Error::Malformed { path, reason })
}

/// Parses the text of a parent's `vgpu/instances`, strictly.
pub fn parse(parent: &str, text: &str) -> std::result::Result<Listing, String> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let bad = |what: &str| format!("line {}: {what} in `{line}`", i + 1);
        let fields: Vec<&str> = line.split(' ').collect();
        if let ["more", count] = fields.as_slice() {
            if i + 1 != lines.len() {
                return Err(bad("`more` before the last line"));
            }
            parse_decimal(count).ok_or_else(|| bad("a count that is not a decimal"))?;
            return Ok(Listing::Partial);
        }
        let [uuid, short, nums @ ..] = fields.as_slice() else {
            return Err(bad("not 6 fields"));
        };
        let [vram_mb, used_kb, weight, cap] = nums else {
            return Err(bad("not 6 fields"));
        };
        let uuid = Uuid::parse_str(uuid)
            .ok()
            .filter(|u| u.hyphenated().to_string() == *uuid)
            .ok_or_else(|| bad("a UUID that is not lower-case hyphenated"))?;
        if short.is_empty() || short.contains('/') {
            return Err(bad("an empty type"));
        }
        let num = |s: &str, name: &str| {
            parse_decimal(s).ok_or_else(|| bad(&format!("{name} that is not a decimal")))
        };
        out.push(Instance {
            uuid,
            parent: parent.to_string(),
            type_id: format!("{TYPE_PREFIX}{short}"),
            vram_mb: num(vram_mb, "vram_mb")?,
            vram_used_kb: num(used_kb, "vram_used_kb")?,
            weight: num(weight, "weight")?,
            cap: num(cap, "cap")?,
        });
    }
    Ok(Listing::Complete(out))
}

/// The instances of a complete listing but those in `skip`.
pub fn without(list: Vec<Instance>, skip: &BTreeSet<Uuid>) -> Vec<Instance> {
    list.into_iter()
        .filter(|i| !skip.contains(&i.uuid))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "11111111-1111-4111-8111-111111111111";

    #[test]
    fn parses_lines_and_more() {
        let text = format!("{U1} 256M 256 512 1 0\n{U1} 1G 1024 0 50 25\n");
        let Listing::Complete(v) = parse("vgpu_shim0", &text).unwrap() else {
            panic!("complete");
        };
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].type_id, "vgpu_shim-1G");
        assert_eq!(
            (v[1].vram_mb, v[1].vram_used_kb, v[1].weight, v[1].cap),
            (1024, 0, 50, 25)
        );
        assert_eq!(v[0].parent, "vgpu_shim0");
        assert_eq!(parse("p", "").unwrap(), Listing::Complete(vec![]));
        let more = format!("{U1} 256M 256 512 1 0\nmore 3\n");
        assert_eq!(parse("p", &more).unwrap(), Listing::Partial);
    }

    /// The listing read through `vgpu/instances` is the one read file by file, and it
    /// is what is used when present (a value only the attribute has shows).
    #[test]
    fn one_read_agrees_with_the_files() {
        use crate::fake::{FakeSysfs, SAMPLE_UUIDS};
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeSysfs::sample(dir.path()).unwrap();
        let env = crate::env::RootedEnvironment::new(dir.path());
        let none = BTreeSet::new();
        let per_file = crate::read::instances(&env, &none).unwrap();
        assert_eq!(per_file.len(), 2);
        fake.write_instances_attr("vgpu_shim0").unwrap();
        fake.write_instances_attr("vgpu_shim1").unwrap();
        assert_eq!(crate::read::instances(&env, &none).unwrap(), per_file);
        let skip = BTreeSet::from([SAMPLE_UUIDS[0]]);
        assert_eq!(crate::read::instances(&env, &skip).unwrap(), per_file[1..]);
        // Only the attribute says weight 77: it was read, not the files.
        let attr = fake.parent_dir("vgpu_shim0").join("vgpu/instances");
        let text = std::fs::read_to_string(&attr).unwrap();
        std::fs::write(&attr, text.replace(" 50 25\n", " 77 25\n")).unwrap();
        let fast = crate::read::instances(&env, &none).unwrap();
        assert_eq!(fast[1].weight, 77);
        // A `more` line: back to the files.
        std::fs::write(&attr, format!("{}\nmore 1\n", text.lines().next().unwrap())).unwrap();
        assert_eq!(crate::read::instances(&env, &none).unwrap(), per_file);
        // Malformed: an error naming the file, not a guess.
        std::fs::write(&attr, "junk\n").unwrap();
        let e = crate::read::instances(&env, &none).unwrap_err().to_string();
        assert!(
            e.contains("vgpu/instances") && e.contains("not 6 fields"),
            "{e}"
        );
    }

    #[test]
    fn rejects_what_the_abi_does_not_say() {
        for bad in [
            format!("{U1} 256M 256 512 1"),
            format!("{U1} 256M 256 512 1 0 9"),
            format!("{U1}  256M 256 512 1 0"),
            "AAAAAAAA-1111-4111-8111-111111111111 256M 256 512 1 0".to_string(),
            format!("{} 256M 256 512 1 0", U1.replace('-', "")),
            format!("{U1} 256M 256 -1 1 0"),
            format!("{U1} 256M 0256 512 1 0"),
            format!("{U1} a/b 256 512 1 0"),
            format!("more 1\n{U1} 256M 256 512 1 0"),
            "more x".to_string(),
        ] {
            assert!(parse("p", &bad).is_err(), "{bad:?}");
        }
    }
}
