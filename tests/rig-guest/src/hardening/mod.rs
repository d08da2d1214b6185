//! The hardening suite: regression tests for the findings of the independent review
//! (issue 7) and the attacks they describe: races at slice end, engine stalls caused by
//! lock holders, data surviving close/open, long chunks, TAIL races, accounting of lock
//! waits and virtual-time wrap. Every test here failed on the module before its fix.
//!
//! `sched` covers the scheduler and locking findings, `memory` the engine, VRAM and
//! display findings.

mod memory;
mod sched;

use crate::harness::Suite;

/// The suite.
pub fn suite() -> Suite {
    let mut tests = sched::tests();
    tests.extend(memory::tests());
    Suite {
        name: "hardening",
        about: "review findings: slice-end races, engine stalls, scrub on close, chunk cost, TAIL races",
        tests,
    }
}
