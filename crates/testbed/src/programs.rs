//! Building the programs and finding their executables.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// Which cargo profile to build with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `cargo build`: what the tests and the demo run.
    Debug,
    /// `cargo build --release`: what ships, and what the benchmark measures.
    Release,
}

/// The executables built by [`Bins::build`].
#[derive(Debug, Clone)]
pub struct Bins {
    /// The daemon, `att-tokend`.
    pub tokend: PathBuf,
    /// The command-line client, `att-token`.
    pub token: PathBuf,
    /// The fake cloud, `att-fake-cloud`.
    pub fake: PathBuf,
    /// The profile's output directory (`<target>/debug` or `<target>/release`), where examples are under
    /// `examples/`.
    pub profile_dir: PathBuf,
    /// Every executable the builds reported, by target name (the three above, and any example asked for).
    pub executables: BTreeMap<String, PathBuf>,
}

impl Bins {
    /// Builds the daemon (package `att-tokend`), the client (`att-token`) and the fake cloud, each in a cargo run
    /// of its own, then `extra` cargo build arguments (e.g. `["-p", "att-tokend", "--example", "bench-client"]`)
    /// if any; returns the executables cargo reported.
    ///
    /// One package per cargo run: built together, cargo would unify their dependencies' features, and the daemon
    /// would carry the fake cloud's (a multi-threaded tokio, axum's needs): bigger, and not what ships.
    pub fn build(profile: Profile, extra: &[&str]) -> anyhow::Result<Bins> {
        let mut executables = BTreeMap::new();
        for package in ["att-tokend", "att-token", "fake-cloud"] {
            executables.extend(cargo_build(profile, &["-p", package, "--bins"])?);
        }
        if !extra.is_empty() {
            executables.extend(cargo_build(profile, extra)?);
        }
        let take = |name: &str| {
            executables
                .get(name)
                .cloned()
                .with_context(|| format!("cargo built no executable named {name}; is the binary declared?"))
        };
        let (tokend, token, fake) = (take("att-tokend")?, take("att-token")?, take("att-fake-cloud")?);
        let profile_dir = tokend.parent().context("an executable lives in a directory")?.to_path_buf();
        Ok(Bins { tokend, token, fake, profile_dir, executables })
    }

    /// The executable of target `name` (a binary or an example the build was asked for).
    pub fn executable(&self, name: &str) -> anyhow::Result<&Path> {
        self.executables.get(name).map(PathBuf::as_path).with_context(|| {
            format!("{name} was not built: pass `--example {name}` (or its --bin) in the extra build arguments")
        })
    }

    /// An `att-token --bus <address>` command with stdin closed, ready for subcommand arguments.
    pub fn att_token(&self, bus_address: &str) -> Command {
        let mut command = Command::new(&self.token);
        command.arg("--bus").arg(bus_address).stdin(Stdio::null());
        command
    }
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("crates/testbed lives two levels below the workspace root")
}

/// A `cargo` in the workspace root (the one running us, if any), without the `CARGO_*` variables that describe
/// the package `cargo run` or `cargo test` started: build scripts that watch such variables would otherwise
/// rebuild here, and again on the next plain `cargo build`.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let per_package =
            ["CARGO_PKG_", "CARGO_BIN_", "CARGO_CFG_", "CARGO_MANIFEST_"].iter().any(|p| key.starts_with(p));
        let per_target =
            ["CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&key.as_ref());
        if per_package || per_target {
            command.env_remove(key.as_ref());
        }
    }
    command.current_dir(workspace_root());
    command
}

/// `cargo build <args>` (with `--release` for [`Profile::Release`]); the executables it reported, by target name.
fn cargo_build(profile: Profile, args: &[&str]) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut command = cargo();
    command.arg("build").args(args);
    if profile == Profile::Release {
        command.arg("--release");
    }
    let shown = format!("cargo {}", command.get_args().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "));
    eprintln!("testbed: running {shown}");
    command.arg("--message-format=json-render-diagnostics").stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = command.spawn().with_context(|| format!("could not start {shown}; is cargo on PATH?"))?;
    let stdout = child.stdout.take().context("stdout is piped")?;
    let mut executables = BTreeMap::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("could not read cargo's output")?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(name), Some(path)) = (message["target"]["name"].as_str(), message["executable"].as_str()) {
            executables.insert(name.to_owned(), PathBuf::from(path));
        }
    }
    let status = child.wait().with_context(|| format!("could not wait for {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}; its errors are above");
    }
    Ok(executables)
}
