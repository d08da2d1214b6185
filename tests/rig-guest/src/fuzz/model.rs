//! The model of a fuzzed ring: where the engine must stop, with which codes, and what
//! it completes on the way (walk_ring).

use super::*;

/// A point where the engine may stop.
#[derive(Clone, Copy, Debug)]
pub(super) struct StopPoint {
    pub(super) head: u64,
    pub(super) codes: CodeSet,
    pub(super) executed: u64,
    pub(super) fence: Option<u64>,
}

#[derive(Clone, Debug)]
pub(super) enum Outcome {
    /// Runs to TAIL.
    Idle,
    /// Must stop at a command.
    Stop(StopPoint),
    /// Never reaches TAIL; with a FENCE in the cycle or not.
    Loop { fenced: bool },
    /// A command rewrites the ring: only sanity checks.
    Unpredictable,
}

#[derive(Clone, Debug)]
pub(super) struct Prediction {
    pub(super) outcome: Outcome,
    pub(super) executed: u64,
    pub(super) fence: Option<u64>,
    /// Ambiguous commands on the path: the engine may stop at any of them.
    pub(super) alts: Vec<StopPoint>,
}

/// Walk a ring (`shadow`: its commands, at VRAM offset `base`) from `head` to `tail` as
/// the engine must, and predict the outcome.
pub(super) fn walk_ring(
    shadow: &[RawCmd],
    lim: &Limits,
    base: u64,
    head: u64,
    tail: u64,
) -> Prediction {
    let size = lim.ring_size;
    let slots = size / 64;
    let in_ring = |o: u64, l: u64| overlaps(o, l, base, size);
    let mut h = head;
    let mut executed = 0u64;
    let mut fence = None;
    let mut alts = Vec::new();
    let mut steps = 0u64;
    let mut fenced_late = false;
    let mut heavy = 0u64;
    while h != tail {
        if steps >= 2 * slots + 2 {
            return Prediction {
                outcome: Outcome::Loop {
                    fenced: fenced_late,
                },
                executed,
                fence,
                alts,
            };
        }
        let r = shadow[(h / 64) as usize];
        let v = validate(&r, lim);
        if v.must_fail() {
            let p = StopPoint {
                head: h,
                codes: v.allowed(),
                executed,
                fence,
            };
            return Prediction {
                outcome: Outcome::Stop(p),
                executed,
                fence,
                alts,
            };
        }
        if v.is_ambiguous() {
            alts.push(StopPoint {
                head: h,
                codes: v.may,
                executed,
                fence,
            });
        }
        heavy += work(&r, lim);
        if heavy > HEAVY || writes(&r, lim).iter().any(|&(o, l)| in_ring(o, l)) {
            return Prediction {
                outcome: Outcome::Unpredictable,
                executed,
                fence,
                alts,
            };
        }
        match r.opcode() {
            reg::OP_FENCE => {
                fence = Some(r.args[0]);
                heavy = 0;
                if steps > slots + 1 {
                    fenced_late = true;
                }
                h = (h + 64) % size;
            }
            reg::OP_JUMP => h = r.args[0],
            _ => h = (h + 64) % size,
        }
        executed += 1;
        steps += 1;
    }
    Prediction {
        outcome: Outcome::Idle,
        executed,
        fence,
        alts,
    }
}
