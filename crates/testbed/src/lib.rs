//! The one harness that runs the project's programs as real, separate processes: the end-to-end tests
//! (`tests/it`), the daemon's own process tests, and `cargo xtask demo`, `bench`, `install-test` and
//! `system-test` all start them through it.
//!
//! - [`Bins::build`] builds `att-tokend`, `att-token` and `att-fake-cloud` (each package in a cargo run of
//!   its own, so the daemon is built with the features it ships with) and finds their executables.
//! - [`Scratch`] is a private directory for one run, removed on drop; directories left by processes that are
//!   gone (a run interrupted with Ctrl-C) are removed by the next one.
//! - [`Proc`] is a child process whose stderr and stdout go to files in the scratch directory. It is stopped
//!   (SIGTERM, then SIGKILL) and reaped on drop, also when a test panics, and then prints its last lines.
//! - [`Bus`] is a private `dbus-daemon` (open to every local uid, or with the system bus's policy) with its
//!   address; [`Fake`] is `att-fake-cloud` with its URL and its control API; [`Daemon`] is `att-tokend`
//!   with a config file, started once it answers on the bus.
//! - [`ConfigText`] builds an `att-tokend` config's text table by table, for tests that start the daemon.
//! - [`KernelClock`] makes the host kernel's clock count as synchronised or not (root), as timedated reports it.
//! - [`as_user`] and [`setpriv_args`] run a command as another user (root), the one way anything here does.
//!
//! Every fallible function returns an [`anyhow::Result`] whose message says what failed and what to do:
//! xtask prints it once, and the tests unwrap it (its `Debug` shows the causes). This crate is
//! never part of the product: only dev-dependencies, `tests` and `xtask` use it (a rule in
//! `tests/it/architecture.rs`).

mod as_user;
mod bus;
mod config_text;
mod daemon;
mod fake;
mod kernel_clock;
mod proc;
mod programs;
mod scratch;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

pub use as_user::{Groups, as_user, setpriv_args};
pub use bus::Bus;
pub use config_text::{ConfigText, FLEET_AT_ONCE};
pub use daemon::{Daemon, wait_served};
pub use fake::{Fake, FakeControl, http};
pub use kernel_clock::KernelClock;
pub use proc::Proc;
pub use programs::{Bins, Profile, cargo, workspace_root};
pub use scratch::Scratch;

/// How long to wait for something that should happen soon (a program coming up) on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Calls `check` every 100 ms until it returns `Ok`; after `timeout`, fails with `what` and the last `Err` note.
pub fn poll<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(note) if Instant::now() >= deadline => {
                anyhow::bail!("timed out after {timeout:?} waiting for {what}: {note}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Runs `command` to completion with `stdin` written to its standard input, capturing stdout and stderr.
pub fn output_with_stdin(mut command: Command, stdin: &str) -> anyhow::Result<Output> {
    use std::io::Write as _;
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().with_context(|| format!("could not start {command:?}"))?;
    let mut input = child.stdin.take().context("stdin is piped")?;
    // A program that exits without reading its input is not an error here; its output says what happened.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    child.wait_with_output().with_context(|| format!("could not wait for {command:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_returns_the_value_or_times_out_with_the_last_note() {
        let mut calls = 0;
        let value = poll("the third call", PATIENCE, || {
            calls += 1;
            if calls == 3 { Ok(calls) } else { Err(format!("call {calls}")) }
        });
        assert_eq!(value.unwrap(), 3);
        let error = poll::<()>("nothing", Duration::ZERO, || Err("still no".to_owned())).unwrap_err();
        assert_eq!(error.to_string(), "timed out after 0ns waiting for nothing: still no");
    }

    #[test]
    fn output_with_stdin_feeds_the_program() {
        let out = output_with_stdin(Command::new("cat"), "pw\n").unwrap();
        assert_eq!(out.stdout, b"pw\n");
    }
}
