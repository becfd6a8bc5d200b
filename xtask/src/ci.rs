//! `cargo xtask ci`: what CI runs, in the order that fails fastest.

use crate::util::{cargo, run as run_command};

/// Format check, clippy with warnings denied on every target, then the whole test suite.
/// Extra arguments are passed to `cargo test` (for example `-- --nocapture`).
pub(crate) fn run(extra: &[String]) -> anyhow::Result<()> {
    run_command(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run_command(cargo().args(["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]))?;
    run_command(cargo().args(["test", "--workspace", "--locked"]).args(extra))?;
    Ok(())
}
