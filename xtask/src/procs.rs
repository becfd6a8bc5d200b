//! The project's programs as child processes for `demo`, `bench`, `install-test` and `system-test`: the
//! `testbed` crate (the one harness the tests use too), under the names these subcommands call it by.
//!
//! Ctrl-C reaches every process in the terminal's foreground group, so the children stop with xtask; a scratch
//! directory left behind by an interrupted run is removed by the next one.

use std::path::Path;
use std::process::{Command, Output};

pub(crate) use testbed::{Bins, Bus, PATIENCE, Proc as Running, Scratch};

/// Builds the daemon, the client and the fake cloud (`--release` when `release`), plus `extra` cargo arguments.
pub(crate) fn build(release: bool, extra: &[&str]) -> anyhow::Result<Bins> {
    Bins::build(if release { testbed::Profile::Release } else { testbed::Profile::Debug }, extra)
}

/// Starts the fake cloud at `fake` with `args`; returns it with its base URL.
pub(crate) fn start_fake(fake: &Path, scratch: &Scratch, args: &[String]) -> anyhow::Result<(Running, String)> {
    let testbed::Fake { url, proc } = testbed::Fake::start(fake, scratch, args)?;
    Ok((proc, url))
}

/// An `att-token --bus <address>` command.
pub(crate) fn att_token(bins: &Bins, bus: &Bus) -> Command {
    bins.att_token(&bus.address)
}

/// Runs a command to completion with `stdin` as input, capturing its output.
pub(crate) fn output_with_stdin(command: Command, stdin: &str) -> anyhow::Result<Output> {
    testbed::output_with_stdin(command, stdin)
}

/// Starts `att-tokend --config <config>` (with `env`) and waits until `att-token list` answers.
pub(crate) fn start_daemon(
    bins: &Bins,
    scratch: &Scratch,
    bus: &Bus,
    config: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<Running> {
    Ok(testbed::Daemon::start(bins, scratch, &bus.address, config, env)?.proc)
}

/// Waits until `att-token list` answers, failing if the daemon exits first.
pub(crate) fn wait_for_daemon(bins: &Bins, bus: &Bus, daemon: &mut Running) -> anyhow::Result<()> {
    testbed::wait_served(&bins.token, &bus.address, daemon)
}

/// The 6-digit code the authenticator app of `username` shows now, as the fake cloud at `base` computes it.
pub(crate) fn fake_totp(base: &str, username: &str) -> anyhow::Result<String> {
    testbed::FakeControl::new(base).current_totp(username)
}
