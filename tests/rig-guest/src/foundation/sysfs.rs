//! Bad sysfs writes (shared with the engine suite).

use super::*;

// 12 --------------------------------------------------------------------------------------
/// Write each of `bad` to an attribute: every one must fail with EINVAL and leave the
/// value as it was (shared with the engine suite's scheduler attributes).
pub(crate) fn bad_writes<T: PartialEq + std::fmt::Debug + std::fmt::Display>(
    what: &str,
    write: &dyn Fn(&str) -> vgpu_sysfs::Result<()>,
    read: &dyn Fn() -> vgpu_sysfs::Result<T>,
    bad: &[&str],
) -> TestResult {
    let before = read().ctx(format!("read {what}"))?;
    let mut fails = Vec::new();
    for b in bad {
        let r = write(b);
        let verdict = if b.is_empty() {
            // write(2) of 0 bytes may never reach the driver; either way nothing changes.
            match r {
                Err(e) if e.errno() != Some(libc::EINVAL) => {
                    Err(Fail(format!("{what} <- \"\": {e}, want EINVAL")))
                }
                _ => Ok(()),
            }
        } else {
            expect_errno(r, &[libc::EINVAL], &format!("{what} <- {b:?}"))
        };
        if let Err(f) = verdict {
            fails.push(f.0);
        }
        let now = read().ctx(format!("read {what}"))?;
        if now != before {
            fails.push(format!("{what} changed to {now} by {b:?} (was {before})"));
            write(&before.to_string()).ctx(format!("restore {what}"))?;
        }
    }
    if fails.is_empty() {
        Ok(())
    } else {
        Err(Fail(fails.join("; ")))
    }
}

const HUGE: &str = "99999999999999999999999999";

/// Malformed values every numeric sysfs attribute must reject with EINVAL
/// (shared with the engine suite).
pub(crate) const COMMON_BAD: [&str; 15] = [
    "",
    "\n",
    "abc",
    "-1",
    "+5",
    "0x10",
    "1.5",
    "12abc",
    " 5",
    "5 ",
    "5\n\n",
    "5\0x",
    HUGE,
    "4294967296",
    "18446744073709551616",
];

pub(super) fn sysfs_bad_input(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, "vgpu_shim-256M")?;
    let mut pool_bad: Vec<&str> = COMMON_BAD.to_vec();
    pool_bad.extend(["0", "63", "1048577", "512\0x"]);
    ctx.soft(bad_writes(
        "pool_mb",
        &|s| p.set_pool_mb(s),
        &|| p.pool_mb(),
        &pool_bad,
    ));
    let mut wbad: Vec<&str> = COMMON_BAD.to_vec();
    wbad.extend(["0", "101"]);
    ctx.soft(bad_writes(
        "weight",
        &|s| inst.set_weight(s),
        &|| inst.weight(),
        &wbad,
    ));
    let mut cbad: Vec<&str> = COMMON_BAD.to_vec();
    cbad.extend(["101", "1000"]);
    ctx.soft(bad_writes(
        "cap",
        &|s| inst.set_cap(s),
        &|| inst.cap(),
        &cbad,
    ));
    // Below what is reserved: EBUSY.
    for v in ["64", "128", "255"] {
        expect_errno(
            p.set_pool_mb(v),
            &[libc::EBUSY],
            &format!("pool_mb <- {v} with 256 reserved"),
        )?;
        ensure_attr(p.pool_mb(), 1024, "pool_mb after EBUSY")?;
    }
    // Good values.
    p.set_pool_mb("256").ctx("pool_mb <- 256 (== reserved)")?;
    ensure_attr(p.pool_mb(), 256, "pool_mb")?;
    ensure_eq!(check_pool(&p, "pool 256")?, 0, "pool_free_mb at pool 256");
    p.set_pool_mb("2048\n").ctx("pool_mb <- 2048\\n")?;
    ensure_attr(p.pool_mb(), 2048, "pool_mb")?;
    ensure_eq!(
        check_pool(&p, "pool 2048")?,
        1792,
        "pool_free_mb at pool 2048"
    );
    ensure_eq!(
        p.mdev_type("vgpu_shim-256M").description_raw()?,
        "vram_mb=256, weight=1, max_instances=8",
        "description follows pool_mb"
    );
    p.set_pool_mb("1048576").ctx("pool_mb <- max")?;
    ensure_attr(p.pool_mb(), 1_048_576, "pool_mb max")?;
    check_pool(&p, "pool max")?;
    p.set_pool_mb("1024").ctx("pool_mb <- 1024")?;
    for (v, want) in [("100", 100), ("1", 1), ("50\n", 50)] {
        inst.set_weight(v).ctx(format!("weight <- {v:?}"))?;
        ensure_attr(inst.weight(), want, "weight")?;
    }
    for (v, want) in [("0", 0), ("100", 100), ("25\n", 25)] {
        inst.set_cap(v).ctx(format!("cap <- {v:?}"))?;
        ensure_attr(inst.cap(), want, "cap")?;
    }
    // With no instance, the minimum pool is accepted.
    ctx.remove(&inst)?;
    p.set_pool_mb("64")
        .ctx("pool_mb <- 64 with nothing reserved")?;
    ensure_eq!(check_pool(&p, "pool 64")?, 64, "pool_free_mb at pool 64");
    Ok(())
}
