//! A throw-away environment for unit tests.

use crate::env::Environment;
use std::path::Path;

/// A throw-away environment in a temporary directory, removed on drop.
pub struct TempEnvironment {
    dir: tempfile::TempDir,
}

impl TempEnvironment {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("create temporary directory"),
        }
    }
}

impl Environment for TempEnvironment {
    fn root(&self) -> &Path {
        self.dir.path()
    }
}
