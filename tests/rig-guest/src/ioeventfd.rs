//! VFIO_DEVICE_IOEVENTFD on the engine's DOORBELL (docs/device-abi.md, "ioeventfd"), in
//! the engine suite: a doorbell rung through an eventfd runs the ring and completes
//! fences (with MSI); bad requests get vfio-pci's errors and change nothing; the last
//! close drops every registration, also while the eventfd is being signalled.
//!
//! The kernel's own counters judge: `latency_hist` gains one sample per doorbell that
//! added commands (a TAIL write alone does not start an idle ring), `jobs` counts the
//! commands, FENCE and the MSI eventfd say the fences completed. Whether a registration
//! exists is asked of the module itself: removing it succeeds exactly once, then ENODEV.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vgpu_vfio::abi::engine as reg;
use vgpu_vfio::ioeventfd::DOORBELL_DATA;
use vgpu_vfio::uapi::{
    VFIO_DEVICE_IOEVENTFD_16, VFIO_DEVICE_IOEVENTFD_32, VFIO_DEVICE_IOEVENTFD_64,
    VFIO_DEVICE_IOEVENTFD_8,
};
use vgpu_vfio::{region, region_file_offset, Cmd, Device, EventFd, EFD_NONBLOCK};

use crate::engine::{new_gpu, DATA};
use crate::harness::{Context, Ctx, Fail, TestResult};
use crate::util::*;
use crate::workload::*;
use crate::{ensure, ensure_eq};

/// Doorbells rung through the eventfd in [`doorbell`].
const ROUNDS: u64 = 40;
/// Registrations the module allows per instance (VGPU_IOEVENTFD_MAX).
const MAX_REGS: u64 = 16;

fn efd() -> Result<EventFd, Fail> {
    EventFd::new(EFD_NONBLOCK).ctx("eventfd")
}

/// Device-fd offset of `off` in BAR2.
fn bar2(off: u64) -> u64 {
    region_file_offset(region::BAR2, off).unwrap_or(u64::MAX)
}

/// Total samples in latency_hist, polled until it reaches `want` (a sample is recorded
/// when the doorbell's commands have completed, which may be just after FENCE moved).
fn hist_reaches(g: &Gpu, want: u64, what: &str) -> TestResult {
    let mut got = 0;
    let ok = wait_for(FENCE_TIMEOUT, || {
        got = g.inst.latency_hist().map(|h| h.total()).unwrap_or(0);
        got >= want
    });
    ensure!(ok, "{what}: latency_hist holds {got} samples, want {want}");
    ensure_eq!(got, want, "{what}: latency_hist samples");
    Ok(())
}

/// The registration for (offset, flags, data) exists: removing it works once, then
/// ENODEV.
fn remove_once(dev: &Device, flags: u32, off: u64, data: u64, what: &str) -> TestResult {
    dev.ioeventfd_raw(flags, off, data, -1)
        .ctx(format!("{what}: remove"))?;
    expect_io_errno(
        dev.ioeventfd_raw(flags, off, data, -1),
        &[libc::ENODEV],
        &format!("{what}: second remove"),
    )
}

/// Doorbells through the eventfd run commands and complete fences, with MSI.
pub fn doorbell(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let mut g = new_gpu(ctx, &p)?;
    g.msi(reg::IRQ_FENCE)?;
    let bell = efd()?;
    g.eng
        .doorbell_ioeventfd(&bell)
        .ctx("register the doorbell")?;

    // A TAIL write alone leaves an idle ring alone; the eventfd is the doorbell.
    for i in 0..ROUNDS {
        let value = 0x5a00_0000 | i as u32;
        let (fence, seq) = g.eng.next_fence(true, None);
        g.eng
            .push(&Cmd::Fill {
                dst: DATA,
                len: 4096,
                value,
            })
            .ctx("push FILL")?;
        g.eng.push(&fence).ctx("push FENCE")?;
        g.eng.kick_eventfd(&bell).ctx("kick through the eventfd")?;
        g.eng
            .wait_fence(seq, FENCE_TIMEOUT)
            .ctx(format!("round {i}: fence {seq}"))?;
        ensure!(
            g.wait_irq(FENCE_TIMEOUT)?,
            "round {i}: no MSI for fence {seq}"
        );
        g.eng.ack_irq(reg::IRQ_FENCE).ctx("ack")?;
        let w = g.read_words(DATA, 1024)?;
        ensure!(
            w.iter().all(|&x| x == value),
            "round {i}: FILL not done: {:#x}",
            w[0]
        );
    }
    ensure_attr(
        g.inst.jobs(),
        2 * ROUNDS,
        "jobs after the eventfd doorbells",
    )?;
    hist_reaches(&g, ROUNDS, "one doorbell per round")?;

    // Signalled before it is registered: the registration rings it.
    let early = efd()?;
    let (fence, seq) = g.eng.next_fence(false, None);
    g.eng.push(&fence).ctx("push FENCE")?;
    g.eng.publish_tail().ctx("TAIL")?;
    early.write(1).ctx("signal")?;
    g.eng.clear_doorbell_ioeventfd().ctx("remove the first")?;
    g.eng
        .doorbell_ioeventfd(&early)
        .ctx("register a signalled eventfd")?;
    g.eng
        .wait_fence(seq, FENCE_TIMEOUT)
        .ctx("fence of a doorbell signalled before registering")?;
    hist_reaches(&g, ROUNDS + 1, "the early doorbell")?;

    // The trapped DOORBELL still works next to it.
    let seq = g.eng.submit_fenced(&[Cmd::Nop], false).ctx("submit")?;
    g.eng
        .wait_fence(seq, FENCE_TIMEOUT)
        .ctx("trapped doorbell")?;
    ensure_eq!(g.eng.error()?, 0, "ERROR");
    Ok(())
}

/// Bad requests: vfio-pci's errors, and nothing registered or removed by them.
pub fn bad_input(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let mut g = new_gpu(ctx, &p)?;
    let dev = g.eng.device().clone();
    let (e1, e2) = (efd()?, efd()?);
    let f32 = VFIO_DEVICE_IOEVENTFD_32;
    let db = bar2(reg::DOORBELL);
    let data = DOORBELL_DATA;
    let fd1 = std::os::fd::AsRawFd::as_raw_fd(&e1);
    let fd2 = std::os::fd::AsRawFd::as_raw_fd(&e2);
    g.eng.doorbell_ioeventfd(&e1).ctx("register")?;

    let einval = [libc::EINVAL];
    let cases: [(&str, u32, u64, i32); 14] = [
        ("RING_TAIL", f32, bar2(reg::RING_TAIL), fd2),
        ("RING_CTL", f32, bar2(reg::RING_CTL), fd2),
        ("BAR2 offset 0", f32, bar2(0), fd2),
        ("past BAR2", f32, bar2(4096 + reg::DOORBELL), fd2),
        ("BAR0", f32, reg::DOORBELL, fd2),
        (
            "config space",
            f32,
            region_file_offset(region::CONFIG, 4).unwrap_or(0),
            fd2,
        ),
        ("DOORBELL+2 as 4 bytes", f32, db + 2, fd2),
        ("8 bytes at DOORBELL", VFIO_DEVICE_IOEVENTFD_64, db, fd2),
        ("no size flag", 0, db, fd2),
        (
            "two size flags",
            VFIO_DEVICE_IOEVENTFD_8 | VFIO_DEVICE_IOEVENTFD_16,
            db,
            fd2,
        ),
        ("unknown flag 0x10", f32 | 0x10, db, fd2),
        ("unknown flag 1<<31", f32 | 1 << 31, db, fd2),
        ("fd -2", f32, db, -2),
        ("remove at RING_TAIL", f32, bar2(reg::RING_TAIL), -1),
    ];
    for (what, flags, off, fd) in cases {
        expect_io_errno(dev.ioeventfd_raw(flags, off, data, fd), &einval, what)?;
    }
    // Not an eventfd: the device fd itself; a closed fd.
    let devfd = std::os::fd::AsRawFd::as_raw_fd(&*dev);
    expect_io_errno(
        dev.ioeventfd_raw(f32, db, 7, devfd),
        &einval,
        "the device fd as eventfd",
    )?;
    expect_io_errno(
        dev.ioeventfd_raw(f32, db, 7, 1_000_000),
        &[libc::EBADF],
        "fd 1000000",
    )?;
    // The same write again (another eventfd): EEXIST; removing one never made: ENODEV.
    expect_io_errno(
        dev.ioeventfd_raw(f32, db, data, fd2),
        &[libc::EEXIST],
        "duplicate",
    )?;
    expect_io_errno(
        dev.ioeventfd_raw(f32, db, data + 1, -1),
        &[libc::ENODEV],
        "remove of other data",
    )?;
    expect_io_errno(
        dev.ioeventfd_raw(VFIO_DEVICE_IOEVENTFD_16, db, data, -1),
        &[libc::ENODEV],
        "remove of another size",
    )?;

    // Nothing changed: the registration still rings the doorbell ...
    let seq = {
        let (fence, seq) = g.eng.next_fence(false, None);
        g.eng.push(&fence).ctx("push FENCE")?;
        g.eng.kick_eventfd(&e1).ctx("kick")?;
        seq
    };
    g.eng
        .wait_fence(seq, FENCE_TIMEOUT)
        .ctx("doorbell after the bad requests")?;
    let dev = &*dev;
    // ... and it is the only one (the refused ones added none).
    remove_once(dev, f32, db, data, "the one registration")?;

    // Other sizes and data within DOORBELL are separate registrations; at most MAX_REGS.
    dev.ioeventfd_raw(VFIO_DEVICE_IOEVENTFD_8, db + 3, 0, fd1)
        .ctx("1 byte at DOORBELL+3")?;
    dev.ioeventfd_raw(VFIO_DEVICE_IOEVENTFD_16, db + 2, 0, fd1)
        .ctx("2 bytes at DOORBELL+2")?;
    for d in 0..MAX_REGS - 2 {
        dev.ioeventfd_raw(f32, db, d, fd1)
            .ctx(format!("data {d}"))?;
    }
    expect_io_errno(
        dev.ioeventfd_raw(f32, db, MAX_REGS, fd1),
        &[libc::ENOSPC],
        "registration past the limit",
    )?;
    for d in 0..MAX_REGS - 2 {
        remove_once(dev, f32, db, d, &format!("data {d}"))?;
    }
    remove_once(dev, VFIO_DEVICE_IOEVENTFD_8, db + 3, 0, "1 byte")?;
    remove_once(dev, VFIO_DEVICE_IOEVENTFD_16, db + 2, 0, "2 bytes")?;
    Ok(())
}

/// The last close drops every registration, also while another thread keeps signalling
/// the eventfd; an eventfd closed first stops ringing but stays registered (vfio-pci).
pub fn close_releases(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let inst = {
        let g = new_gpu(ctx, &p)?;
        g.inst.clone()
    };
    let f32 = VFIO_DEVICE_IOEVENTFD_32;
    let db = bar2(reg::DOORBELL);
    for round in 0..3 {
        let g = Gpu::open_ring(&inst, crate::engine::RING, crate::engine::RING_SIZE)?;
        // Nothing from the previous open is registered.
        expect_io_errno(
            g.dev().ioeventfd_raw(f32, db, DOORBELL_DATA, -1),
            &[libc::ENODEV],
            &format!("open {round}: a registration left from before"),
        )?;
        let bell = Arc::new(efd()?);
        g.eng.doorbell_ioeventfd(&*bell).ctx("register")?;
        for d in 10..14 {
            g.dev()
                .ioeventfd_raw(f32, db, d, std::os::fd::AsRawFd::as_raw_fd(&*bell))
                .ctx("register more")?;
        }
        // An eventfd whose file is closed first: still registered, removable.
        let gone = efd()?;
        g.dev()
            .ioeventfd_raw(f32, db, 99, std::os::fd::AsRawFd::as_raw_fd(&gone))
            .ctx("register the short-lived one")?;
        drop(gone);
        remove_once(g.dev(), f32, db, 99, "an eventfd closed before")?;

        // Close while a thread keeps ringing.
        let stop = Arc::new(AtomicBool::new(false));
        let (b2, s2) = (bell.clone(), stop.clone());
        let ringer = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s2.load(Ordering::Relaxed) {
                let _ = b2.write(1);
                n += 1;
            }
            n
        });
        let mut g = g;
        for _ in 0..8 {
            let _ = g.eng.push(&Cmd::Nop);
        }
        let _ = g.eng.publish_tail();
        std::thread::sleep(Duration::from_millis(50));
        drop(g);
        std::thread::sleep(Duration::from_millis(20));
        stop.store(true, Ordering::Relaxed);
        let n = ringer.join().map_err(|_| Fail("ringer panicked".into()))?;
        ensure!(n > 0, "the ringer never signalled");
        ctx.note(format!("open {round}: {n} signals around the close"));
    }
    // Removing the instance must not hang on anything left behind.
    ctx.remove(&inst)?;
    Ok(())
}
