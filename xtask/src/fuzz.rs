//! `cargo xtask fuzz [--seconds N] [--cmin] [TARGET...]`: runs the fuzz targets in `fuzz/` one after another.
//!
//! Each target runs `cargo +nightly fuzz run TARGET` for `--seconds` (default 60) with libFuzzer's limits on
//! time per input, memory and input size, adding what it finds to `fuzz/corpus/TARGET/`. `--cmin` minimises
//! the corpora instead (run it before committing them). Nothing is installed: a missing nightly toolchain or
//! `cargo fuzz` is named with the command that installs it.

use std::fs;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::util::{run as run_command, workspace_root};

const HELP: &str = "\
cargo xtask fuzz [--seconds N] [--cmin] [TARGET...]

Runs each fuzz target (all when none is named) for N seconds (default 60), one after another,
with cargo +nightly fuzz. New inputs go to fuzz/corpus/TARGET/, crashes to fuzz/artifacts/TARGET/.
--cmin minimises the named corpora instead of fuzzing. `cargo test -p fuzz-checks` replays them on stable.
";

/// Most seconds a single input may take before libFuzzer reports it as a hang.
const INPUT_TIMEOUT_SECS: u32 = 10;

/// Most memory a fuzzing process may use, in MiB, before libFuzzer reports it.
const RSS_LIMIT_MB: u32 = 1024;

/// The largest input tried, in bytes: room for a real reply, config or session file, and a few times more.
const MAX_LEN: u32 = 8192;

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut seconds: u64 = 60;
    let mut cmin = false;
    let mut named = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = args.next().context("--seconds needs a number of seconds")?;
                seconds = value.parse().with_context(|| format!("--seconds {value:?} is not a whole number"))?;
            }
            "--cmin" => cmin = true,
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(());
            }
            flag if flag.starts_with('-') => bail!("unknown option {flag:?}; see `cargo xtask fuzz --help`"),
            target => named.push(target.to_owned()),
        }
    }
    let all = targets()?;
    for target in &named {
        if !all.contains(target) {
            bail!("no fuzz target {target:?}; the targets are {}", all.join(", "));
        }
    }
    let chosen = if named.is_empty() { all } else { named };
    check_tools()?;
    for target in &chosen {
        let mut command = fuzz_command();
        if cmin {
            command.args(["fuzz", "cmin", target.as_str(), "--", &format!("-max_len={MAX_LEN}")]);
        } else {
            command.args([
                "fuzz",
                "run",
                target.as_str(),
                "--",
                &format!("-max_total_time={seconds}"),
                &format!("-timeout={INPUT_TIMEOUT_SECS}"),
                &format!("-rss_limit_mb={RSS_LIMIT_MB}"),
                &format!("-max_len={MAX_LEN}"),
                "-print_final_stats=1",
            ]);
        }
        run_command(&mut command).with_context(|| {
            format!(
                "fuzz target {target} failed; the input is in fuzz/artifacts/{target}/: fix the parser, add a \
                 regression test, and commit the input there so `cargo test -p fuzz-checks` replays it"
            )
        })?;
    }
    Ok(())
}

/// The fuzz targets: the files in `fuzz/fuzz_targets/`.
fn targets() -> anyhow::Result<Vec<String>> {
    let dir = workspace_root().join("fuzz").join("fuzz_targets");
    let mut names = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
        if path.extension().is_some_and(|ext| ext == "rs")
            && let Some(stem) = path.file_stem()
        {
            names.push(stem.to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// `cargo +nightly` through rustup's proxy, run at the workspace root, without the toolchain this xtask was
/// started with leaking into it.
fn fuzz_command() -> Command {
    let mut command = Command::new("cargo");
    command.arg("+nightly").current_dir(workspace_root()).env_remove("RUSTUP_TOOLCHAIN").env_remove("CARGO");
    command
}

/// Fails naming the install command when the nightly toolchain or cargo-fuzz is missing.
fn check_tools() -> anyhow::Result<()> {
    let works = |args: &[&str]| {
        fuzz_command().args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    if !works(&["--version"]) {
        bail!(
            "the nightly toolchain is missing (fuzzing needs it; CI stays on stable): install it with \
             `rustup toolchain install nightly` and run again"
        );
    }
    if !works(&["fuzz", "--version"]) {
        bail!("cargo fuzz is missing: install it with `cargo install cargo-fuzz --locked` and run again");
    }
    Ok(())
}
