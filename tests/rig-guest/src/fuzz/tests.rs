use super::*;

const VS: u64 = 128 * MIB;

fn ring(cmds: &[Cmd], slots: usize) -> Vec<RawCmd> {
    let mut v = vec![Cmd::Nop.raw(); slots];
    for (i, c) in cmds.iter().enumerate() {
        v[i] = c.raw();
    }
    v
}

fn lim(slots: u64) -> Limits {
    Limits {
        vram_size: VS,
        ring_size: slots * 64,
        mode: None,
    }
}

const BASE: u64 = 8 * MIB;

#[test]
fn runs_to_tail_and_tracks_the_fence() {
    let r = ring(
        &[
            Cmd::Fill {
                dst: 0,
                len: 4,
                value: 1,
            },
            Cmd::fence(7),
            Cmd::Nop,
        ],
        64,
    );
    let p = walk_ring(&r, &lim(64), BASE, 0, 3 * 64);
    assert!(matches!(p.outcome, Outcome::Idle));
    assert_eq!((p.executed, p.fence), (3, Some(7)));
    assert!(p.alts.is_empty());
}

#[test]
fn stops_at_the_first_bad_command() {
    let bad = Cmd::Raw(RawCmd::new(0x42, 0, [0; 7]));
    let r = ring(&[Cmd::fence(1), Cmd::Nop, bad, Cmd::fence(2)], 64);
    let p = walk_ring(&r, &lim(64), BASE, 0, 4 * 64);
    match p.outcome {
        Outcome::Stop(sp) => {
            assert_eq!((sp.head, sp.executed, sp.fence), (128, 2, Some(1)));
            assert!(sp.codes.contains(ErrorCode::BadOpcode as u32));
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn jumps_wrap_and_loops_are_classified() {
    // Forward jump over a bad command.
    let bad = Cmd::Raw(RawCmd::new(0x42, 0, [0; 7]));
    let r = ring(&[Cmd::Jump { target: 128 }, bad, Cmd::fence(3)], 64);
    let p = walk_ring(&r, &lim(64), BASE, 0, 3 * 64);
    assert!(matches!(p.outcome, Outcome::Idle));
    assert_eq!((p.executed, p.fence), (2, Some(3)));
    // JUMP to self: a loop without a fence.
    let r = ring(&[Cmd::Jump { target: 0 }], 64);
    let p = walk_ring(&r, &lim(64), BASE, 0, 64);
    assert!(matches!(p.outcome, Outcome::Loop { fenced: false }));
    // A loop through a fence.
    let r = ring(&[Cmd::fence(1), Cmd::Jump { target: 0 }], 64);
    let p = walk_ring(&r, &lim(64), BASE, 0, 128);
    assert!(matches!(p.outcome, Outcome::Loop { fenced: true }));
    // TAIL behind HEAD: the walk wraps through the whole (NOP) ring.
    let r = ring(&[], 64);
    let p = walk_ring(&r, &lim(64), BASE, 10 * 64, 5 * 64);
    assert!(matches!(p.outcome, Outcome::Idle));
    assert_eq!(p.executed, 59);
}

#[test]
fn ambiguous_and_self_modifying() {
    // An unused operand set: the engine may stop there with BAD_FLAGS.
    let amb = Cmd::Raw(RawCmd::new(reg::OP_NOP, 0, [1, 0, 0, 0, 0, 0, 0]));
    let r = ring(&[Cmd::Nop, amb, Cmd::Nop], 64);
    let p = walk_ring(&r, &lim(64), BASE, 0, 3 * 64);
    assert!(matches!(p.outcome, Outcome::Idle));
    assert_eq!(p.alts.len(), 1);
    assert_eq!((p.alts[0].head, p.alts[0].executed), (64, 1));
    // A FILL over the ring itself.
    let r = ring(
        &[Cmd::Fill {
            dst: BASE + 64,
            len: 64,
            value: 0,
        }],
        64,
    );
    let p = walk_ring(&r, &lim(64), BASE, 0, 64);
    assert!(matches!(p.outcome, Outcome::Unpredictable));
}
