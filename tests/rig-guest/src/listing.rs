//! Foundation tests of a parent's `vgpu/instances` (docs/device-abi.md): it says what
//! the per-instance files say, stays well formed and complete for the instances that
//! stay while others are created and removed, and counts what does not fit in a page
//! on a `more` line (with the reader falling back to the files then).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use vgpu_sysfs::handle::{Instance, Parent};
use vgpu_sysfs::io::read_small;
use vgpu_sysfs::listing::{self, Listing};
use vgpu_sysfs::{model, SystemEnvironment, Uuid};
use vgpu_vfio::{region, OpenInstance};

use crate::harness::{Context, Ctx, Fail, TestResult};
use crate::{ensure, ensure_eq};

/// The parent's `vgpu/instances`, raw.
fn raw(p: &Parent) -> Result<String, Fail> {
    read_small(&p.vgpu_attr("instances")).ctx("read vgpu/instances")
}

/// The parent's `vgpu/instances`, parsed: by UUID, or `None` with a `more` line.
fn listed(p: &Parent) -> Result<Option<BTreeMap<Uuid, model::Instance>>, Fail> {
    let text = raw(p)?;
    ensure!(
        text.len() <= 4096,
        "vgpu/instances is {} bytes, more than a page",
        text.len()
    );
    match listing::parse(p.name(), &text).map_err(|e| Fail(format!("{e} in {text:?}")))? {
        Listing::Partial => Ok(None),
        Listing::Complete(v) => {
            let n = v.len();
            let map: BTreeMap<Uuid, model::Instance> = v.into_iter().map(|i| (i.uuid, i)).collect();
            ensure_eq!(map.len(), n, "distinct UUIDs in vgpu/instances");
            Ok(Some(map))
        }
    }
}

/// What the instance's own files say, as a listing line would.
fn per_file(p: &Parent, i: &Instance) -> Result<model::Instance, Fail> {
    let what = |a: &str| format!("{} {a}", i.uuid());
    Ok(model::Instance {
        uuid: i.uuid(),
        parent: p.name().to_string(),
        type_id: i.type_id().ctx(what("mdev_type"))?,
        vram_mb: i.vram_mb().ctx(what("vram_mb"))?,
        vram_used_kb: i.vram_used_kb().ctx(what("vram_used_kb"))?,
        weight: i.weight().ctx(what("weight"))?,
        cap: i.cap().ctx(what("cap"))?,
    })
}

/// Every instance of the parent, from the files.
fn all_per_file(p: &Parent) -> Result<BTreeMap<Uuid, model::Instance>, Fail> {
    let mut m = BTreeMap::new();
    for i in p.instances().ctx("instances")? {
        m.insert(i.uuid(), per_file(p, &i)?);
    }
    Ok(m)
}

/// `vgpu/instances` agrees with the files: empty, one of each type with its knobs,
/// VRAM in use, after a change of knobs and after removals.
pub fn instances_attr(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    ensure_eq!(raw(&p)?, "", "vgpu/instances with no instance");
    let mut insts = Vec::new();
    for (k, t) in ["128M", "256M", "512M", "1G", "2G", "4G"]
        .iter()
        .enumerate()
    {
        let i = ctx.create(&p, &format!("vgpu_shim-{t}"))?;
        i.set_weight(&(10 + k).to_string()).ctx("weight")?;
        i.set_cap(&(k * 7).to_string()).ctx("cap")?;
        insts.push(i);
    }
    // VRAM in use on one of them: 3 pages touched while open.
    let dev = insts[2].open().ctx("open")?;
    for page in 0..3u64 {
        dev.write_region(region::BAR0, page * 4096, &[0x5a; 8])
            .ctx("write VRAM")?;
    }
    let check = |what: &str| -> TestResult {
        let files = all_per_file(&p)?;
        let attr = listed(&p)?.ok_or_else(|| Fail(format!("{what}: a `more` line")))?;
        ensure_eq!(attr, files, "{what}: vgpu/instances against the files");
        Ok(())
    };
    check("six instances")?;
    ensure_eq!(
        listed(&p)?.and_then(|m| m.get(&insts[2].uuid()).map(|i| i.vram_used_kb)),
        Some(12),
        "vram_used_kb of the open instance"
    );
    insts[5].set_weight("99").ctx("weight")?;
    insts[5].set_cap("1").ctx("cap")?;
    check("after a change of weight and cap")?;
    drop(dev);
    check("after the last close")?;
    // The reader vgpuctl uses (one read per parent) says the same.
    let via_reader =
        vgpu_sysfs::read::instances(&SystemEnvironment, &BTreeSet::new()).ctx("read::instances")?;
    let files: Vec<model::Instance> = all_per_file(&p)?.into_values().collect();
    ensure_eq!(via_reader, files, "vgpu_sysfs::read::instances");
    for i in insts.drain(..3) {
        ctx.remove(&i)?;
    }
    check("after three removals")?;
    for i in insts.drain(..) {
        ctx.remove(&i)?;
    }
    ensure_eq!(raw(&p)?, "", "vgpu/instances after removing all");
    Ok(())
}

/// While a thread creates and removes instances, every read of `vgpu/instances` is
/// well formed, holds each instance that stays exactly as its files say, and says of
/// any other line what its type says (a line for an instance being created or removed
/// is whole, never torn).
pub fn instances_attr_churn(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let mut stay = Vec::new();
    for t in ["256M", "1G"] {
        let i = ctx.create(&p, &format!("vgpu_shim-{t}"))?;
        i.set_weight("42").ctx("weight")?;
        i.set_cap("17").ctx("cap")?;
        stay.push(i);
    }
    let want: BTreeMap<Uuid, model::Instance> = stay
        .iter()
        .map(|i| Ok((i.uuid(), per_file(&p, i)?)))
        .collect::<Result<_, Fail>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicU64::new(0));
    let churn = {
        let (p, stop, cycles) = (p.clone(), stop.clone(), cycles.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let t = p.mdev_type("vgpu_shim-128M");
            while !stop.load(Ordering::Relaxed) {
                let i = t.create_new().map_err(|e| format!("create: {e}"))?;
                i.remove().map_err(|e| format!("remove: {e}"))?;
                cycles.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    let mut result = Ok(());
    let (mut reads, mut saw_churn) = (0u64, 0u64);
    while reads < 2000 && cycles.load(Ordering::Relaxed) < 200 {
        reads += 1;
        let r = (|| -> TestResult {
            let m = listed(&p)?.ok_or_else(|| Fail("a `more` line".into()))?;
            for (u, w) in &want {
                ensure_eq!(m.get(u), Some(w), "read {reads}: an instance that stays");
            }
            for (u, i) in m.iter().filter(|(u, _)| !want.contains_key(u)) {
                saw_churn += 1;
                ensure_eq!(
                    (i.type_id.as_str(), i.vram_mb, i.weight, i.cap),
                    ("vgpu_shim-128M", 128, 1, 0),
                    "read {reads}: the line of {u}, being created or removed"
                );
            }
            ensure!(m.len() <= want.len() + 2, "read {reads}: {} lines", m.len());
            Ok(())
        })();
        if r.is_err() {
            result = r;
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let churned = churn
        .join()
        .map_err(|_| Fail("churn thread panicked".into()))?;
    result?;
    churned.map_err(Fail)?;
    let n = cycles.load(Ordering::Relaxed);
    ensure!(n > 0, "no create/remove cycle ran during {reads} reads");
    ctx.note(format!(
        "{reads} reads during {n} create/remove cycles; {saw_churn} lines of a churned instance"
    ));
    for i in &stay {
        ctx.remove(i)?;
    }
    Ok(())
}

/// More instances than a page holds: whole lines, then `more <count>` with the count
/// of those left out; the reader vgpuctl uses falls back to the files and finds all.
pub fn instances_attr_more(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let mut insts = Vec::new();
    // 64 fit whatever their values (a line is at most 63 bytes). 128M instances:
    // each one's page array is guest memory.
    for k in 0..64 {
        let i = ctx.create(&p, "vgpu_shim-128M")?;
        i.set_weight("100").ctx("weight")?;
        i.set_cap("100").ctx("cap")?;
        insts.push(i);
        if k % 16 == 15 {
            ensure!(listed(&p)?.is_some(), "{} instances: a `more` line", k + 1);
        }
    }
    ensure_eq!(
        listed(&p)?.map(|m| m.len()),
        Some(64),
        "64 instances with the widest knobs"
    );
    // 100 lines of at least 56 bytes do not fit in 4096.
    for _ in 0..36 {
        insts.push(ctx.create(&p, "vgpu_shim-128M")?);
    }
    let text = raw(&p)?;
    ensure!(text.len() <= 4096, "{} bytes", text.len());
    let lines: Vec<&str> = text.lines().collect();
    let more = lines
        .last()
        .and_then(|l| l.strip_prefix("more "))
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or_else(|| {
            Fail(format!(
                "100 instances: no `more` line at the end of {text:?}"
            ))
        })?;
    ensure_eq!(lines.len() - 1 + more, 100, "listed lines + more");
    ensure_eq!(listed(&p)?, None, "100 instances: a partial listing");
    let via_reader =
        vgpu_sysfs::read::instances(&SystemEnvironment, &BTreeSet::new()).ctx("read::instances")?;
    let files: Vec<model::Instance> = all_per_file(&p)?.into_values().collect();
    ensure_eq!(via_reader.len(), 100, "the reader's instances");
    ensure_eq!(via_reader, files, "the reader falls back to the files");
    for i in &insts {
        ctx.remove(i)?;
    }
    Ok(())
}
