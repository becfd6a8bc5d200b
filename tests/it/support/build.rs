//! The real programs, built once per test run.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

pub(crate) use testbed::Bins;

/// Builds `att-tokend`, `att-token` and `att-fake-cloud` (once per process) and returns their paths.
pub(crate) fn bins() -> &'static Bins {
    static BINS: OnceLock<Result<Bins, String>> = OnceLock::new();
    match BINS.get_or_init(|| Bins::build(testbed::Profile::Debug, &[]).map_err(|e| format!("{e:#}"))) {
        Ok(bins) => bins,
        Err(message) => panic!("{message}"),
    }
}

/// The workspace root (the parent of `tests/`).
pub(crate) fn workspace_root() -> &'static Path {
    testbed::workspace_root()
}

/// A nested `cargo` in the workspace root, without the CARGO_* variables that describe this test package.
pub(crate) fn cargo_command() -> Command {
    testbed::cargo()
}
