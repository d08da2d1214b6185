//! The `external` suite's cases about the daemon's VRAM mappings: revoked at the
//! instance's last close (the old mapping then reaches only a scratch page of the
//! connection, never the old tenant's pages nor the next one's, and never kills the
//! daemon), and executor ids, which are never reused and run out cleanly.

use std::time::Duration;

use vgpu_engine_abi::exec;
use vgpu_vfio::{Cmd, OpenInstance};

use crate::execref::{self, Behaviour, Queue, RefExecutor};
use crate::harness::{Context, Ctx, Fail, TestResult};
use crate::util::wait_for;
use crate::workload::FENCE_TIMEOUT;
use crate::{ensure, ensure_eq};

use super::{external, open, AREA, TYPE};

/// Exit codes of the child that touches a revoked mapping.
const SAW_OLD_TENANT: i32 = 1;
const LOST_WRITE: i32 = 2;

/// Touch `ptr + off` in a child process (a fault there must not kill the test binary):
/// read the byte, write 0xa5, read it back. Ok(exit code) if the child exited, Err with
/// the signal if one killed it.
fn touch_in_child(ptr: *mut u8, off: usize, old: u8) -> Result<i32, String> {
    // SAFETY: the child only touches memory and _exits; no lock is taken after fork.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: ptr + off lies inside a live mapping of the parent, inherited.
        unsafe {
            let p = ptr.add(off);
            let v = std::ptr::read_volatile(p);
            std::ptr::write_volatile(p, 0xa5);
            let back = std::ptr::read_volatile(p);
            libc::_exit(if v == old {
                SAW_OLD_TENANT
            } else if back != 0xa5 {
                LOST_WRITE
            } else {
                0
            });
        }
    }
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFSIGNALED(status) {
        Err(format!("killed by signal {}", libc::WTERMSIG(status)))
    } else {
        Ok(libc::WEXITSTATUS(status))
    }
}

pub(super) fn close_revokes_mapping(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    external(&p)?;
    let inst = ctx.create(&p, TYPE)?;
    let mut g = open(&inst)?;
    let q = Queue::open(0).ctx("open the device")?;
    g.eng
        .submit(&[Cmd::Fill {
            dst: AREA,
            len: 8,
            value: 0x1234_5678,
        }])
        .ctx("submit")?;
    ensure!(q.poll(10_000).ctx("poll")?, "no submission");
    let e = q.sqe(q.hdr(exec::hdr::SQ_HEAD));
    q.set_hdr(
        exec::hdr::SQ_HEAD,
        q.hdr(exec::hdr::SQ_HEAD).wrapping_add(1),
    );
    let len = e.vram_size as usize;
    let ptr = execref::map(q.fd(), exec::vram_offset(e.id), len).ctx("map VRAM")?;
    // SAFETY: the mapping is len bytes and lives until munmap below.
    let mem = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    exec::apply_piece(mem, &e).ok_or(Fail("the piece".into()))?;
    q.put_cqe(
        0,
        &exec::Cqe {
            seq: e.seq,
            status: 0,
            value: 0,
            work_ns: 0,
        },
    );
    q.kick(1).ctx("kick")?;
    ensure!(
        wait_for(Duration::from_secs(10), || g.eng.cmds_done().ok()
            == Some(1)),
        "the FILL did not complete"
    );
    ensure_eq!(
        g.read_words(AREA, 2)?,
        vec![0x1234_5678; 2],
        "FILL through the daemon"
    );
    drop(g); // the last close
    let tail = q.hdr(exec::hdr::SQ_TAIL);
    let r = q.sqe(tail.wrapping_sub(1));
    ensure!(
        r.kind == Some(exec::SqeKind::Retire) && r.id == e.id,
        "last submission {r:?}, want RETIRE of id {}",
        e.id
    );
    // The next open is a new id with zeroed VRAM; then a daemon still finishing a
    // piece of the closed instance touches its old mapping: it reaches a scratch page
    // (not the old tenant's bytes, not the new instance's pages) and does not die.
    let g2 = open(&inst)?;
    let touched = touch_in_child(ptr, AREA as usize, 0x78);
    // SAFETY: unmapping what map() returned.
    unsafe { libc::munmap(ptr.cast(), len) };
    match touched {
        Ok(0) => {}
        Ok(SAW_OLD_TENANT) => {
            return Err(Fail(
                "the old mapping still shows the closed instance's bytes".into(),
            ))
        }
        Ok(c) => return Err(Fail(format!("the child touching the old mapping: {c}"))),
        Err(e) => {
            return Err(Fail(format!(
                "the daemon touching its old mapping after the close was {e} \
                 (SIGBUS is {})",
                libc::SIGBUS
            )))
        }
    }
    ensure_eq!(
        g2.read_words(AREA, 2)?,
        vec![0; 2],
        "VRAM after reopen (and a write through the old mapping)"
    );
    let again = execref::map(q.fd(), exec::vram_offset(e.id), 4096);
    ensure!(
        matches!(&again, Err(e) if e.raw_os_error() == Some(libc::EACCES)),
        "mapping a closed id: {again:?}"
    );
    Ok(())
}

/// Loaded with `test_exec_id_start` one below [`exec::ID_MAX`]: the last id works (its
/// mmap offset is the highest there is), and the first open after it fails with ENOSPC
/// rather than handing out an id whose offset is no `off_t`.
pub(super) fn ids_run_out(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    external(&p)?;
    let xd = RefExecutor::start(0, Behaviour::default()).ctx("start")?;
    let inst = ctx.create(&p, TYPE)?;
    let mut g = open(&inst)?;
    let seq = g
        .eng
        .submit_fenced(
            &[Cmd::Fill {
                dst: AREA,
                len: 4096,
                value: 0x5a5a_0001,
            }],
            false,
        )
        .ctx("submit")?;
    let fenced = g.eng.wait_fence(seq, FENCE_TIMEOUT);
    ensure!(
        fenced.is_ok() && g.eng.error()? == 0,
        "{fenced:?}, ERROR {} with the last id ({:#x}, mmap offset {:#x})",
        g.eng.error()?,
        exec::ID_MAX,
        exec::vram_offset(exec::ID_MAX)
    );
    ensure_eq!(
        g.read_words(AREA, 4)?,
        vec![0x5a5a_0001; 4],
        "FILL under the last id"
    );
    drop(g);
    let next = inst.open();
    ensure!(
        matches!(&next, Err(e) if e.errno() == Some(libc::ENOSPC)),
        "an open after the last id: {:?}, want ENOSPC",
        next.as_ref().err()
    );
    drop(next);
    let st = xd.stop().ctx("executor")?;
    ensure_eq!(st.refused, 0, "pieces refused");
    ctx.note(format!(
        "id {:#x} served at offset {:#x}; the next open: ENOSPC",
        exec::ID_MAX,
        exec::vram_offset(exec::ID_MAX)
    ));
    Ok(())
}
