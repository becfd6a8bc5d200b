//! Small helpers shared by the subcommands.

use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{Context, bail, ensure};

/// The workspace root (the parent of `xtask/`).
pub(crate) fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().expect("xtask lives one level below the workspace root").to_path_buf()
}

/// The `cargo` that runs this xtask.
pub(crate) fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// Runs a command to completion, failing with its rendering when it exits non-zero.
pub(crate) fn run(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    eprintln!("xtask: running {shown}");
    let status = command.status().with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// Output as text, trimmed.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

/// Checks that `who`'s call (its `refused` output, from `dbus-send`) was refused by the bus policy itself, not by
/// the daemon: the install test and the system test both ask it of a user outside `att-tokens`.
pub(crate) fn refused_by_bus_policy(refused: &Output, who: &str) -> anyhow::Result<()> {
    let said = text(&refused.stderr);
    ensure!(!refused.status.success(), "{who} (not in att-tokens) got an answer; the bus policy let the call through");
    ensure!(
        said.contains("org.freedesktop.DBus.Error.AccessDenied") && said.contains("Rejected send message"),
        "{who} was refused, but not by the bus policy (AccessDenied, \"Rejected send message\"): {said}"
    );
    Ok(())
}
