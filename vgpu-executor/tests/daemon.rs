//! The daemon loop (`vgpu-executor --serve`) against an in-process fake kernel
//! (`daemon::fake`): entries in, completions out, VRAM bytes as `exec::apply_piece`
//! gives them; bad entries (unknown kind, ids the kernel did not hand, absurd indices,
//! sequence number 0, VRAMs the device cannot take) handled without a panic.

mod common;

use common::{executor, Rng};
use vgpu_engine_abi::exec::{self, apply_piece, hdr, Cqe, Sqe, SqeKind};
use vgpu_engine_abi::reference::ScanoutMode;
use vgpu_engine_abi::{Cmd, RawCmd};
use vgpu_executor::daemon::fake::{fake, FakeHandle};
use vgpu_executor::daemon::queue::Mapping;
use vgpu_executor::daemon::Daemon;

const VRAM: usize = 256 << 10;

fn never() -> bool {
    false
}

fn piece(seq: u64, id: u32, cmd: RawCmd, start: u64, count: u64) -> Sqe {
    Sqe {
        seq,
        kind: Some(SqeKind::Piece),
        id,
        vram_size: VRAM as u64,
        start,
        count,
        state: 0xcbf2_9ce4_8422_2325,
        mode: None,
        cmd,
    }
}

fn bytes(m: &Mapping) -> &[u8] {
    // SAFETY: the test's own mapping of a fake VRAM, `len` bytes; the daemon writes it
    // only inside run_once, never while this slice is used.
    unsafe { std::slice::from_raw_parts(m.ptr(), m.len()) }
}

fn bytes_mut(m: &mut Mapping) -> &mut [u8] {
    // SAFETY: as in `bytes`, and `&mut` makes this the test's only view.
    unsafe { std::slice::from_raw_parts_mut(m.ptr(), m.len()) }
}

/// A mix of pieces of every opcode on two instances.
fn some_pieces(rng: &mut Rng, seq0: u64) -> Vec<Sqe> {
    let md = ScanoutMode {
        xres: 40,
        yres: 30,
        bytes_pp: 4,
        stride: 160,
        start: 128 << 10,
    };
    let mut out = vec![];
    for i in 0..40u64 {
        let id = 1 + (i % 2) as u32;
        let seq = seq0 + i;
        let s = match i % 5 {
            0 => piece(
                seq,
                id,
                Cmd::Fill {
                    dst: 4096,
                    len: 4096,
                    value: rng.next() as u32,
                }
                .raw(),
                4 * rng.range(0, 500),
                4 * rng.range(1, 500),
            ),
            1 => piece(
                seq,
                id,
                Cmd::Copy {
                    dst: 10_003,
                    src: 9_000,
                    len: 5000,
                }
                .raw(),
                rng.range(0, 3000),
                rng.range(1, 1003),
            ),
            2 => {
                let mut s = piece(
                    seq,
                    id,
                    Cmd::Checksum {
                        src: 0,
                        len: 65536,
                        dst: 8,
                    }
                    .raw(),
                    4 * rng.range(0, 8000),
                    4 * rng.range(1, 8000),
                );
                s.state = rng.next();
                s
            }
            3 => piece(
                seq,
                id,
                Cmd::Gemm {
                    a: 20_000,
                    b: 40_000,
                    c: 60_000,
                    m: 30,
                    n: 20,
                    k: 25,
                }
                .raw(),
                rng.range(0, 300),
                rng.range(1, 300),
            ),
            _ => {
                let mut s = piece(
                    seq,
                    id,
                    Cmd::Blit {
                        src: 100_000,
                        src_stride: 100,
                        width: 20,
                        height: 16,
                        dst_x: 3,
                        dst_y: 4,
                    }
                    .raw(),
                    rng.range(0, 8),
                    rng.range(1, 8),
                );
                s.mode = Some(md);
                s
            }
        };
        out.push(s);
    }
    out
}

fn setup(first: u32) -> (vgpu_executor::daemon::fake::FakeKernel, FakeHandle) {
    fake(first).expect("fake kernel")
}

#[test]
fn pieces_in_completions_out() {
    let Some(ex) = executor() else { return };
    // Indices cross the u32 wrap.
    let (k, h) = setup(u32::MAX - 20);
    let mut rng = Rng(11);
    let mut maps = [
        h.add_vram(1, VRAM).expect("vram"),
        h.add_vram(2, VRAM).expect("vram"),
    ];
    let mut images = vec![];
    for m in &mut maps {
        rng.fill(bytes_mut(m));
        images.push(bytes(m).to_vec());
    }
    let mut d = Daemon::new(&ex, k, 8);
    let pieces = some_pieces(&mut rng, 100);
    let (mut want, mut got) = (vec![], vec![]);
    for chunk in pieces.chunks(24) {
        for s in chunk {
            assert!(h.submit(s));
            let v = apply_piece(&mut images[s.id as usize - 1], s).expect("apply_piece");
            want.push(Cqe {
                seq: s.seq,
                status: exec::STATUS_OK,
                value: v,
                work_ns: 0,
            });
        }
        let n = d.run_once(&never).expect("run_once");
        assert_eq!(n, chunk.len() as u32);
        got.extend(h.take_completions());
    }
    // every piece run reports its submission's time (the kernel sizes pieces by it)
    for c in &mut got {
        assert!(c.work_ns > 0, "no work_ns: {c:?}");
        c.work_ns = 0;
    }
    assert_eq!(got, want);
    for (m, img) in maps.iter().zip(&images) {
        assert!(bytes(m) == &img[..], "VRAM differs from apply_piece's");
    }
    let q = h.queue();
    assert_eq!(q.load(hdr::SQ_HEAD), q.load(hdr::SQ_TAIL));
    assert_eq!(q.load(hdr::SQ_HEAD), (u32::MAX - 20).wrapping_add(40));
    let m = d.metrics();
    assert_eq!(m.pieces, [8, 8, 8, 8, 8], "{m:?}");
    assert_eq!(
        (m.refused, m.failed, m.maps, m.mapped),
        (0, 0, 2, 2),
        "{m:?}"
    );
    // 24 then 16 entries, at most 8 pieces per submission.
    assert_eq!(m.submissions, 5, "{m:?}");
    assert_eq!(h.kicks(), 5);
    assert!(m.busy_ns > 0);
    let text = m.prometheus("vgpu_shim0");
    assert!(
        text.contains("vgpu_executor_pieces_total{parent=\"vgpu_shim0\",opcode=\"gemm\"} 8"),
        "{text}"
    );
}

/// RETIRE drops the mapping (a later piece of the same id maps it again); what cannot
/// be run is completed REFUSED; sequence number 0 is dropped; nothing panics.
#[test]
fn bad_entries_and_retire() {
    let Some(ex) = executor() else { return };
    let (k, h) = setup(7);
    let m1 = h.add_vram(1, VRAM).expect("vram");
    // Larger than one storage-buffer binding on lavapipe (128 MiB), 4 GiB, and more
    // than 4 GiB (memfds: sparse).
    let big_map = h.add_vram(5, 256 << 20).expect("vram");
    let huge_map = h.add_vram(6, 4 << 30).expect("vram");
    let _too_large = h.add_vram(7, (4 << 30) + 4096).expect("vram");
    let mut d = Daemon::new(&ex, k, 4);
    let fill = Cmd::Fill {
        dst: 0,
        len: 64,
        value: 0x0102_0304,
    }
    .raw();
    let ok = |seq| piece(seq, 1, fill, 0, 64);
    let mut unknown = ok(2);
    unknown.kind = None;
    let mut seq0 = ok(0);
    seq0.start = 4;
    let mut resized = ok(5);
    resized.vram_size = 2 * VRAM as u64;
    // Pieces of VRAMs larger than one binding run in a window (of 128 MiB at a
    // multiple of 64 MiB on lavapipe) that holds all they touch.
    let mut big = ok(6);
    (big.id, big.vram_size) = (5, 256 << 20);
    big.cmd = Cmd::Fill {
        dst: 200 << 20,
        len: 64,
        value: 0x0102_0304,
    }
    .raw();
    let mut huge = ok(7);
    (huge.id, huge.vram_size) = (6, 4 << 30);
    huge.cmd = Cmd::Fill {
        dst: (4 << 30) - 64,
        len: 64,
        value: 0x0102_0304,
    }
    .raw();
    let mut too_large = ok(20);
    (too_large.id, too_large.vram_size) = (7, (4 << 30) + 4096);
    let mut two_windows = big;
    two_windows.seq = 21;
    two_windows.cmd = Cmd::Copy {
        dst: 200 << 20,
        src: 0,
        len: 64,
    }
    .raw();
    let mut odd = ok(8);
    (odd.id, odd.vram_size) = (1, 12345);
    let retire = Sqe {
        seq: 9,
        kind: Some(SqeKind::Retire),
        ..ok(9)
    };
    let entries = [
        ok(1),
        unknown,
        seq0,
        piece(3, 99, fill, 0, 64), // an id the kernel did not hand
        piece(4, 1, fill, 60, 8),  // past the command
        resized,
        big,
        huge,
        odd,
        too_large,
        two_windows,
        ok(10),
        retire, // after pieces of its id in the same batch: they run first
    ];
    for e in &entries {
        assert!(h.submit(e));
    }
    assert_eq!(d.run_once(&never).expect("run_once"), entries.len() as u32);
    let got: Vec<(u64, u32)> = h
        .take_completions()
        .iter()
        .map(|c| (c.seq, c.status))
        .collect();
    let (ok_, refused) = (exec::STATUS_OK, exec::STATUS_REFUSED);
    assert_eq!(
        got,
        [
            (1, ok_),
            (2, refused),
            (3, refused),
            (4, refused),
            (5, refused),
            (6, ok_),
            (7, ok_),
            (8, refused),
            (20, refused),
            (21, refused),
            (10, ok_),
        ]
    );
    assert_eq!(&bytes(&m1)[..8], &[4, 3, 2, 1, 4, 3, 2, 1]);
    let filled = |m: &Mapping, at: usize| {
        bytes(m)[at..at + 64]
            .iter()
            .copied()
            .eq([4, 3, 2, 1].repeat(16))
    };
    assert!(filled(&big_map, 200 << 20), "the 256 MiB VRAM at 200 MiB");
    assert!(
        filled(&huge_map, (4 << 30) - 64),
        "the 4 GiB VRAM's last bytes"
    );
    assert_eq!(d.metrics().mapped, 2, "1 retired, 5 and 6 mapped");
    assert!(h.submit(&ok(11)));
    assert_eq!(d.run_once(&never).expect("run_once"), 1);
    assert_eq!(h.take_completions()[0].status, ok_);
    let m = d.metrics();
    assert_eq!((m.refused, m.bad_entries, m.retires), (7, 1, 1), "{m:?}");
    assert_eq!(
        m.maps, 4,
        "id 1 mapped, retired, mapped again; 5 and 6: {m:?}"
    );
    assert_eq!(h.maps(), 4, "id 7 is refused before any mmap");
    assert_eq!(m.mapped, 3);

    // Absurd indices: a tail thousands of entries ahead is clamped to one ring.
    let q = h.queue();
    let head = q.load(hdr::SQ_HEAD);
    q.store(hdr::SQ_TAIL, head.wrapping_add(100_000));
    assert_eq!(d.run_once(&never).expect("run_once"), exec::SQ_ENTRIES);
    assert_eq!(d.metrics().bad_indices, 1);
    assert_eq!(q.load(hdr::SQ_HEAD), head.wrapping_add(exec::SQ_ENTRIES));
    // A tail behind the head is absurd too.
    let head = q.load(hdr::SQ_HEAD);
    h.take_completions();
    q.store(hdr::SQ_TAIL, head.wrapping_sub(3));
    assert_eq!(d.run_once(&never).expect("run_once"), exec::SQ_ENTRIES);
    assert_eq!(d.metrics().bad_indices, 2);
    // Garbage entries: every byte random.
    h.take_completions();
    let head = q.load(hdr::SQ_HEAD);
    q.store(hdr::SQ_TAIL, head);
    let mut rng = Rng(3);
    for _ in 0..40 {
        let mut b = [0u8; exec::SQE_SIZE];
        rng.fill(&mut b);
        if rng.chance(50) {
            b[8..12].copy_from_slice(&1u32.to_le_bytes());
        }
        assert!(h.submit_raw(&b));
    }
    assert_eq!(d.run_once(&never).expect("run_once"), 40);
    assert!(h.take_completions().iter().all(|c| c.status == refused));
}

/// Batches of at most --batch pieces; a stop request between batches leaves the rest
/// in the ring; a full completion ring waits for the kernel.
#[test]
fn batches_stop_and_a_full_completion_ring() {
    let Some(ex) = executor() else { return };
    let (k, h) = setup(0);
    let _m = h.add_vram(1, VRAM).expect("vram");
    let mut d = Daemon::new(&ex, k, 3);
    let fill = Cmd::Fill {
        dst: 0,
        len: 4096,
        value: 1,
    }
    .raw();
    for seq in 1..=10 {
        assert!(h.submit(&piece(seq, 1, fill, 0, 4096)));
    }
    assert_eq!(
        d.run_once(&|| true).expect("run_once"),
        3,
        "stop after one batch"
    );
    assert_eq!(h.take_completions().len(), 3);
    assert_eq!(d.run_once(&never).expect("run_once"), 7);
    assert_eq!(h.take_completions().len(), 7);
    assert_eq!(d.metrics().submissions, 4, "3 + 3 + 3 + 1");
    // The kernel takes no completions: the ring fills at 64, the rest waits.
    for seq in 11..=74 {
        assert!(h.submit(&piece(seq, 1, fill, 0, 4096)));
    }
    assert_eq!(d.run_once(&never).expect("run_once"), 64);
    for seq in 75..=80 {
        assert!(h.submit(&piece(seq, 1, fill, 0, 4096)));
    }
    assert_eq!(d.run_once(&never).expect("run_once"), 0);
    assert_eq!(d.metrics().cq_full, 1);
    assert_eq!(h.take_completions().len(), 64);
    assert_eq!(d.run_once(&never).expect("run_once"), 6);
    let c = h.take_completions();
    assert_eq!(
        c.iter().map(|c| c.seq).collect::<Vec<_>>(),
        (75..=80).collect::<Vec<_>>()
    );
}

/// `run` serves until its stop function says so and leaves the counters in the
/// metrics file (rewritten atomically: no temporary file left behind).
#[test]
fn run_until_stopped_writes_the_metrics_file() {
    let Some(ex) = executor() else { return };
    let (k, h) = setup(0);
    let _m = h.add_vram(4, VRAM).expect("vram");
    let fill = Cmd::Fill {
        dst: 0,
        len: 64,
        value: 1,
    }
    .raw();
    for seq in 1..=5 {
        assert!(h.submit(&piece(seq, 4, fill, 0, 64)));
    }
    let dir = std::env::temp_dir().join(format!("vgpu-executor-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("vgpu-executor.prom");
    let mut d = Daemon::new(&ex, k, 8);
    // The fake's wait returns at once: stop once the ring is drained.
    let hh = h.clone();
    let stop = move || {
        let q = hh.queue();
        q.load(hdr::SQ_HEAD) == q.load(hdr::SQ_TAIL)
    };
    d.run(&stop, Some((&file, "vgpu_shim7"))).expect("run");
    assert_eq!(h.take_completions().len(), 5);
    let text = std::fs::read_to_string(&file).expect("metrics file");
    assert!(
        text.contains("vgpu_executor_pieces_total{parent=\"vgpu_shim7\",opcode=\"fill\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("vgpu_executor_vram_mapped{parent=\"vgpu_shim7\"} 1"),
        "{text}"
    );
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
