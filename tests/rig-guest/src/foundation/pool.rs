//! Types, create and remove, and pool admission.

use super::*;

// 1 ---------------------------------------------------------------------------------------
pub(super) fn check_types(parent: &Parent, pool: u64) -> TestResult {
    let ids = parent.type_ids().ctx("list types")?;
    let want: Vec<String> = {
        let mut v: Vec<String> = abi::TYPES.iter().map(|t| t.id.to_string()).collect();
        v.sort();
        v
    };
    ensure_eq!(ids, want, "{} types", parent.name());
    ensure_attr(parent.pool_mb(), pool, "pool_mb")?;
    ensure_attr(parent.pool_free_mb(), pool, "pool_free_mb")?;
    ensure_attr(parent.vram_pages(), 0, "vram_pages")?;
    for spec in abi::TYPES {
        let t = parent.mdev_type(spec.id);
        ensure_eq!(t.name().ctx("name")?, spec.name, "{} name", spec.id);
        let want = format!(
            "vram_mb={}, weight={}, max_instances={}",
            spec.vram_mb,
            spec.weight,
            pool / spec.vram_mb
        );
        ensure_eq!(
            t.description_raw().ctx("description")?,
            want,
            "{} description",
            spec.id
        );
        ensure_eq!(
            t.device_api().ctx("device_api")?,
            "vfio-pci",
            "{} device_api",
            spec.id
        );
        ensure_attr(
            t.available_instances(),
            pool / spec.vram_mb,
            &format!("{} available_instances", spec.id),
        )?;
        ensure!(
            t.instances().ctx("devices")?.is_empty(),
            "{} has instances",
            spec.id
        );
    }
    Ok(())
}

pub(super) fn types(ctx: &mut Ctx) -> TestResult {
    // Defaults: one parent, 1024 MiB.
    ctx.load("")?;
    let parents = Parent::all_vgpu().ctx("parents")?;
    ensure_eq!(
        parents
            .iter()
            .map(|p| p.name().to_string())
            .collect::<Vec<_>>(),
        vec!["vgpu_shim0".to_string()],
        "parents with default parameters"
    );
    check_types(&parents[0], 1024)?;
    ctx.unload().ctx("unload")?;
    // A pool that is not a multiple of most quotas.
    ctx.load("pool_mb=6144")?;
    check_types(&ctx.parent(0)?, 6144)
}

// 2 ---------------------------------------------------------------------------------------
pub(super) fn create_remove(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let pool = 8192;
    for spec in abi::TYPES {
        for cycle in 0..2 {
            let what = format!("{} cycle {cycle}", spec.id);
            let inst = ctx.create(&p, spec.id)?;
            ensure_eq!(
                inst.type_id().ctx("mdev_type")?,
                spec.id,
                "{what}: mdev_type"
            );
            ensure_eq!(
                inst.parent_name().ctx("parent")?,
                "vgpu_shim0",
                "{what}: parent"
            );
            ensure_attr(inst.vram_mb(), spec.vram_mb, &format!("{what}: vram_mb"))?;
            ensure_attr(inst.vram_used_kb(), 0, &format!("{what}: vram_used_kb"))?;
            ensure_attr(
                inst.weight(),
                spec.weight.into(),
                &format!("{what}: weight"),
            )?;
            ensure_attr(inst.cap(), 0, &format!("{what}: cap"))?;
            let listed = p.mdev_type(spec.id).instances().ctx("devices")?;
            ensure_eq!(listed, vec![inst.clone()], "{what}: type's devices/");
            ensure_attr(
                p.pool_free_mb(),
                pool - spec.vram_mb,
                &format!("{what}: pool_free_mb"),
            )?;
            check_pool(&p, &what)?;
            ctx.remove(&inst)?;
            ensure_attr(
                p.pool_free_mb(),
                pool,
                &format!("{what}: pool_free_mb after remove"),
            )?;
            ensure_attr(
                p.vram_pages(),
                0,
                &format!("{what}: vram_pages after remove"),
            )?;
            ensure!(
                p.mdev_type(spec.id).instances().ctx("devices")?.is_empty(),
                "{what}: still listed"
            );
            check_pool(&p, &format!("{what} removed"))?;
        }
    }
    Ok(())
}

// 3 ---------------------------------------------------------------------------------------
fn expect_enospc(ctx: &Ctx, p: &Parent, type_id: &str, what: &str) -> TestResult {
    let free = p.pool_free_mb().ctx("pool_free_mb")?;
    let pages = p.vram_pages().ctx("vram_pages")?;
    let n = mdev_count()?;
    let r = ctx.try_create(&p.mdev_type(type_id));
    expect_errno(
        r,
        &[libc::ENOSPC],
        &format!("{what}: create {type_id} with {free} MiB free"),
    )?;
    ensure_eq!(mdev_count()?, n, "{what}: mdev devices after failed create");
    ensure_attr(
        p.pool_free_mb(),
        free,
        &format!("{what}: pool_free_mb after failed create"),
    )?;
    ensure_attr(
        p.vram_pages(),
        pages,
        &format!("{what}: vram_pages after failed create"),
    )?;
    check_pool(p, what)?;
    Ok(())
}

pub(super) fn pool_admission(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    ensure_eq!(check_pool(&p, "empty")?, 3000, "empty pool");
    let mut made = Vec::new();
    // 3000 -> 952 -> 440 -> 184 -> 56
    let steps: [(&str, &[&str]); 4] = [
        (
            "vgpu_shim-2G",
            &["vgpu_shim-1G", "vgpu_shim-2G", "vgpu_shim-4G"],
        ),
        ("vgpu_shim-512M", &["vgpu_shim-512M", "vgpu_shim-1G"]),
        ("vgpu_shim-256M", &["vgpu_shim-256M", "vgpu_shim-512M"]),
        ("vgpu_shim-128M", &["vgpu_shim-128M", "vgpu_shim-256M"]),
    ];
    let mut reserved = 0;
    for (i, (ty, too_big)) in steps.iter().enumerate() {
        let inst = ctx.create(&p, ty)?;
        reserved += quota(ty)?;
        made.push(inst);
        let what = format!("step {i} ({ty})");
        let free = check_pool(&p, &what)?;
        ensure_eq!(free, 3000 - reserved, "{what}: pool_free_mb");
        for t in *too_big {
            expect_enospc(ctx, &p, t, &what)?;
        }
    }
    // Full: 56 MiB left, nothing fits.
    for spec in abi::TYPES {
        expect_enospc(ctx, &p, spec.id, "full pool")?;
    }
    // Free the 512M one; a 256M and a 128M then fit, exactly as available_instances says.
    let i512 = made.remove(1);
    ctx.remove(&i512)?;
    ensure_eq!(
        check_pool(&p, "after freeing 512M")?,
        568,
        "pool_free_mb after freeing 512M"
    );
    made.push(ctx.create(&p, "vgpu_shim-256M")?);
    made.push(ctx.create(&p, "vgpu_shim-256M")?);
    ensure_eq!(check_pool(&p, "refilled")?, 56, "pool_free_mb refilled");
    expect_enospc(ctx, &p, "vgpu_shim-128M", "refilled")?;
    for inst in made.drain(..) {
        ctx.remove(&inst)?;
        check_pool(&p, "draining")?;
    }
    ensure_eq!(check_pool(&p, "drained")?, 3000, "pool_free_mb drained");
    // Racing creates: 8 threads want a 256M slot in a 1024 MiB pool; exactly 4 win and
    // the others get ENOSPC.
    p.set_pool_mb("1024").ctx("pool_mb <- 1024")?;
    // An exact fit is admitted.
    let whole = ctx.create(&p, "vgpu_shim-1G")?;
    ensure_eq!(
        check_pool(&p, "exact fit")?,
        0,
        "pool_free_mb after an exact fit"
    );
    ctx.remove(&whole)?;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let t = p.mdev_type("vgpu_shim-256M");
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                t.create_new()
            })
        })
        .collect();
    let mut won = Vec::new();
    let mut lost = 0;
    for h in handles {
        match h.join() {
            Ok(Ok(inst)) => won.push(inst),
            Ok(Err(e)) if e.errno() == Some(libc::ENOSPC) => lost += 1,
            Ok(Err(e)) => return Err(Fail(format!("racing create: {e}"))),
            Err(_) => return Err(Fail("racing create thread panicked".into())),
        }
    }
    ensure_eq!((won.len(), lost), (4, 4), "racing creates (won, ENOSPC)");
    ensure_eq!(
        check_pool(&p, "after racing creates")?,
        0,
        "pool_free_mb after racing creates"
    );
    ensure_eq!(mdev_count()?, 4, "mdev devices after racing creates");
    for inst in won {
        ctx.remove(&inst)?;
    }
    Ok(())
}
