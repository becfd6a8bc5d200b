//! Builds the real programs once per test run and finds their executables.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Paths of the programs the end-to-end tests run.
pub(crate) struct Bins {
    /// The daemon.
    pub(crate) tokend: PathBuf,
    /// The command-line client.
    pub(crate) token: PathBuf,
    /// The fake cloud.
    pub(crate) fake: PathBuf,
}

/// Builds `att-tokend`, `att-token` and `att-fake-cloud` (once per process) and returns their paths.
pub(crate) fn bins() -> &'static Bins {
    static BINS: OnceLock<Result<Bins, String>> = OnceLock::new();
    match BINS.get_or_init(build) {
        Ok(bins) => bins,
        Err(message) => panic!("{message}"),
    }
}

/// The workspace root (the parent of `tests/`).
pub(crate) fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives one level below the workspace root")
}

/// A nested `cargo` in the workspace root, without the CARGO_* variables that describe this test package:
/// build scripts that watch such variables would otherwise rebuild on every run, and again on the next
/// plain `cargo build`.
pub(crate) fn cargo_command() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let per_package =
            ["CARGO_PKG_", "CARGO_BIN_EXE_", "CARGO_CFG_", "CARGO_MANIFEST_"].iter().any(|p| key.starts_with(p));
        let per_target =
            ["CARGO_CRATE_NAME", "CARGO_BIN_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"];
        if per_package || per_target.contains(&key.as_ref()) {
            command.env_remove(key.as_ref());
        }
    }
    command.current_dir(workspace_root());
    command
}

fn build() -> Result<Bins, String> {
    let mut command = cargo_command();
    command
        .current_dir(workspace_root())
        .args(["build", "-p", "att-tokend", "-p", "fake-cloud", "--bins"])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().map_err(|error| format!("could not start {command:?}: {error}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut executables = HashMap::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.map_err(|error| format!("could not read cargo's output: {error}"))?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(name), Some(path)) = (message["target"]["name"].as_str(), message["executable"].as_str()) {
            executables.insert(name.to_owned(), PathBuf::from(path));
        }
    }
    let status = child.wait().map_err(|error| format!("could not wait for cargo: {error}"))?;
    if !status.success() {
        return Err(format!(
            "building the programs failed ({status}); run `cargo build -p att-tokend -p fake-cloud --bins` to see why"
        ));
    }
    let mut take = |name: &str| {
        executables
            .remove(name)
            .ok_or_else(|| format!("cargo built no executable named {name}; is the binary declared?"))
    };
    Ok(Bins { tokend: take("att-tokend")?, token: take("att-token")?, fake: take("att-fake-cloud")? })
}
