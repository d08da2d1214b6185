//! Hardening tests (see mod.rs).

use crate::harness::Test;

/// This file's tests.
pub fn tests() -> Vec<Test> {
    Vec::new()
}
