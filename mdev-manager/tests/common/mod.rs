//! Helpers shared by the integration tests.

use std::fs;
use std::path::Path;

/// Compare `actual` with tests/golden/`name` (rewrite it with UPDATE_GOLDEN set).
pub fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::write(&path, actual).unwrap();
    }
    let want = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(actual, want, "differs from {}", path.display());
}
