//! sysfs: writes of every knob of parents, instances and types, good values and bad
//! ones (out of range, signs, hex, blanks, junk, embedded NULs, over a page), writes to
//! read-only attributes, bad `create` and `remove` values; and reads of every attribute,
//! checked for format.

use std::fs::OpenOptions;
use std::path::PathBuf;

use super::life::{raw_write, uuid};
use super::ops::*;
use super::world::SlotState;

/// How an attribute takes writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum A {
    /// A decimal in [min, max].
    Uint(u64, u64),
    /// One of the policy names.
    Policy,
    /// Read-only.
    Ro,
}

const POLICIES: [&str; 3] = ["best_effort", "equal_share", "fixed_share"];

const PARENT: &[(&str, A)] = &[
    ("pool_mb", A::Uint(64, 1_048_576)),
    ("policy", A::Policy),
    ("slice_us", A::Uint(100, 30000)),
    ("watchdog_ms", A::Uint(10, 60000)),
    ("preempt", A::Uint(0, 1)),
    ("pool_free_mb", A::Ro),
    ("vram_pages", A::Ro),
    ("display_pages", A::Ro),
    ("engines", A::Ro),
    ("busy_ns", A::Ro),
    ("idle_ns", A::Ro),
    ("switches", A::Ro),
    ("preemptions", A::Ro),
    ("macs", A::Ro),
    ("instances", A::Ro),
];

const INSTANCE: &[(&str, A)] = &[
    ("weight", A::Uint(1, 100)),
    ("cap", A::Uint(0, 100)),
    ("latency_hist", A::Uint(0, 0)),
    ("vram_mb", A::Ro),
    ("vram_used_kb", A::Ro),
    ("busy_ns", A::Ro),
    ("jobs", A::Ro),
    ("cmds_failed", A::Ro),
    ("slices", A::Ro),
    ("throttled_ns", A::Ro),
    ("queue_depth", A::Ro),
    ("preemptions", A::Ro),
    ("macs", A::Ro),
];

const TYPE_RO: [&str; 4] = ["available_instances", "name", "description", "device_api"];

/// A value for an attribute and whether it is valid.
fn value(rng: &mut crate::rng::Rng, a: A) -> (Vec<u8>, bool) {
    let nl = |mut s: String, rng: &mut crate::rng::Rng| {
        if rng.chance(1, 2) {
            s.push('\n');
        }
        s.into_bytes()
    };
    if rng.chance(1, 2) {
        match a {
            A::Uint(lo, hi) => {
                let v = match rng.below(5) {
                    0 => lo,
                    1 => hi,
                    2 if hi == 1_048_576 => *rng.pick(&[1024, 2048, 4096, 64, 512]),
                    _ => rng.range(lo, hi),
                };
                let s = if rng.chance(1, 10) {
                    format!("0{v}")
                } else {
                    v.to_string()
                };
                return (nl(s, rng), true);
            }
            A::Policy => {
                let p = rng.pick(&POLICIES).to_string();
                return (nl(p, rng), true);
            }
            A::Ro => {}
        }
    }
    let bad: Vec<u8> = match rng.below(14) {
        0 => b"\n".to_vec(),
        1 => b"-1".to_vec(),
        2 => b"+5".to_vec(),
        3 => b"0x10".to_vec(),
        4 => b" 5".to_vec(),
        5 => b"5 ".to_vec(),
        6 => b"5\n\n".to_vec(),
        7 => b"5\0".to_vec(),
        8 => b"99999999999999999999".to_vec(),
        9 => b"4294967296".to_vec(),
        10 => b"best_effort\n\n".to_vec(),
        11 => (0..rng.range(1, 64))
            .map(|_| rng.next_u32() as u8 | 0x80)
            .collect(),
        12 => match a {
            A::Uint(lo, _) if lo > 0 && rng.chance(1, 2) => (lo - 1).to_string().into_bytes(),
            A::Uint(_, hi) => (hi + 1).to_string().into_bytes(),
            _ => b"Best_Effort".to_vec(),
        },
        _ => vec![b'1'; 4096],
    };
    (bad, false)
}

/// A live slot's instance (removing ones included).
fn any_instance(th: &mut Th) -> Option<(usize, u64, vgpu_sysfs::handle::Instance, u64)> {
    for _ in 0..4 {
        let slot = th.any_slot();
        let st = th.w.slots[slot].lock();
        if let SlotState::Live(l) = &*st {
            return Some((slot, l.gen, l.inst.clone(), l.vram));
        }
    }
    None
}

/// The slot's instance changed or is going away (so its files may be gone).
fn gone(th: &Th, slot: usize, gen: u64) -> bool {
    !th.still_live(slot, gen)
}

pub fn write(th: &mut Th) -> i32 {
    let pi = th.rng.below(th.w.parents.len() as u64) as usize;
    let parent = th.w.parents[pi].clone();
    let mut owner: Option<(usize, u64)> = None;
    let (path, bytes, want): (PathBuf, Vec<u8>, Vec<i32>) = match th.rng.below(10) {
        0..=3 => {
            let (name, a) = *th.rng.pick(PARENT);
            let (v, good) = value(&mut th.rng, a);
            let want = match (a, good) {
                (A::Ro, _) => vec![libc::EACCES],
                (A::Uint(..), true) if name == "pool_mb" => vec![0, libc::EBUSY],
                (_, true) => vec![0],
                (_, false) => vec![libc::EINVAL],
            };
            (parent.vgpu_attr(name), v, want)
        }
        4..=7 => {
            let Some((slot, gen, inst, _)) = any_instance(th) else {
                return SKIP;
            };
            owner = Some((slot, gen));
            if th.rng.chance(1, 6) {
                // `remove` with values that remove nothing.
                let (v, want) = match th.rng.below(4) {
                    0 => (b"0".to_vec(), 0),
                    1 => (b"0x0\n".to_vec(), 0),
                    2 => (b"abc".to_vec(), libc::EINVAL),
                    _ => (b"-1".to_vec(), libc::EINVAL),
                };
                (inst.path().join("remove"), v, vec![want])
            } else {
                let (name, a) = *th.rng.pick(INSTANCE);
                let (v, good) = value(&mut th.rng, a);
                let want = match (a, good) {
                    (A::Ro, _) => vec![libc::EACCES],
                    (_, true) => vec![0],
                    (_, false) => vec![libc::EINVAL],
                };
                (inst.vgpu_attr(name), v, want)
            }
        }
        _ => {
            let t = parent.mdev_type(th.rng.pick(&vgpu_vfio::abi::TYPES).id);
            if th.rng.chance(1, 3) {
                let name = *th.rng.pick(&TYPE_RO);
                (t.path().join(name), b"1".to_vec(), vec![libc::EACCES])
            } else {
                // Malformed uuids, or a canary's (which exists).
                let (v, want) = match th.rng.below(5) {
                    0 => (b"\n".to_vec(), libc::EINVAL),
                    1 => (
                        b"zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz".to_vec(),
                        libc::EINVAL,
                    ),
                    2 => (
                        uuid(&mut th.rng).to_string().as_bytes()[..20].to_vec(),
                        libc::EINVAL,
                    ),
                    3 => (
                        format!("{}xy", uuid(&mut th.rng)).into_bytes(),
                        libc::EINVAL,
                    ),
                    _ => {
                        let c = th.rng.below(th.w.canaries.len() as u64) as usize;
                        (
                            th.w.canaries[c].inst.uuid().to_string().into_bytes(),
                            libc::EEXIST,
                        )
                    }
                };
                (t.path().join("create"), v, vec![want])
            }
        }
    };
    // Writes over a page are refused whole by sysfs.
    let want = if bytes.len() > 4096 {
        vec![libc::E2BIG]
    } else {
        want
    };
    th.note(
        owner.map(|o| o.0 as i64).unwrap_or(-1),
        pi as u64,
        bytes.len() as u64,
        0,
    );
    let r = match OpenOptions::new().write(true).open(&path) {
        Ok(f) => {
            th.inject_begin();
            let r = raw_write(&f, &bytes);
            th.inject_end();
            r
        }
        Err(e) => Err(e.raw_os_error().unwrap_or(libc::EIO)),
    };
    let c = match r {
        Ok(n) if n == bytes.len() => 0,
        Ok(_) => SHORT,
        Err(e) => e,
    };
    let vanished =
        matches!(c, libc::ENOENT | libc::ENODEV) && owner.is_some_and(|(s, g)| gone(th, s, g));
    if !(want.contains(&c) || vanished || th.injected && c == libc::ENOMEM) {
        th.mismatch(format!(
            "write {:?} to {}: {}, want {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(48)]),
            path.display(),
            code_name(c),
            want.iter().map(|&w| code_name(w)).collect::<Vec<_>>()
        ));
    }
    c
}

fn decimal(s: &str) -> Option<u64> {
    let t = s.strip_suffix('\n')?;
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

pub fn read(th: &mut Th) -> i32 {
    let pi = th.rng.below(th.w.parents.len() as u64) as usize;
    let parent = th.w.parents[pi].clone();
    let mut owner = None;
    let mut vram_mb = 0;
    let (path, name) = match th.rng.below(3) {
        0 => {
            let (name, _) = *th.rng.pick(PARENT);
            (parent.vgpu_attr(name), name)
        }
        1 => {
            let Some((slot, gen, inst, vram)) = any_instance(th) else {
                return SKIP;
            };
            owner = Some((slot, gen));
            vram_mb = vram >> 20;
            let (name, _) = *th.rng.pick(INSTANCE);
            (inst.vgpu_attr(name), name)
        }
        _ => {
            let t = parent.mdev_type(th.rng.pick(&vgpu_vfio::abi::TYPES).id);
            let name = *th.rng.pick(&TYPE_RO);
            (t.path().join(name), name)
        }
    };
    th.note(
        owner.map(|o: (usize, u64)| o.0 as i64).unwrap_or(-1),
        pi as u64,
        0,
        0,
    );
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            let c = e.raw_os_error().unwrap_or(libc::EIO);
            let vanished = matches!(c, libc::ENOENT | libc::ENODEV)
                && owner.is_some_and(|(s, g)| gone(th, s, g));
            if !vanished {
                th.mismatch(format!("read {}: {e}", path.display()));
            }
            return c;
        }
    };
    let ok = match name {
        "policy" => POLICIES.iter().any(|p| text == format!("{p}\n")),
        "latency_hist" => text.lines().all(|l| {
            let mut it = l.split(' ');
            let a = it.next().unwrap_or("");
            let b = it.next().and_then(|b| b.parse::<u64>().ok());
            (a == "more" || a.parse::<u64>().is_ok()) && b.is_some() && it.next().is_none()
        }),
        "name" => text.starts_with("vgpu ") && text.ends_with('\n'),
        "device_api" => text == "vfio-pci\n",
        "instances" => vgpu_sysfs::listing::parse(&format!("vgpu_shim{pi}"), &text).is_ok(),
        "description" => text
            .strip_suffix('\n')
            .and_then(|t| t.parse::<vgpu_sysfs::TypeDescription>().ok())
            .is_some(),
        "vram_mb" if owner.is_some() => decimal(&text) == Some(vram_mb),
        "weight" => decimal(&text).is_some_and(|v| (1..=100).contains(&v)),
        "cap" => decimal(&text).is_some_and(|v| v <= 100),
        _ => decimal(&text).is_some(),
    };
    if !ok {
        th.mismatch(format!("{} reads {text:?}", path.display()));
    }
    0
}
