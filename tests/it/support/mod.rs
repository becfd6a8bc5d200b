//! Harness for end-to-end runs: builds the real programs once, then runs a private `dbus-daemon`, the fake cloud,
//! `att-tokend` and `att-token` as separate processes in a scratch directory, stopping them all on drop.
//!
//! The processes are the `testbed` crate's, which xtask's demo, bench and system tests use too. This layer keeps
//! the names the tests call and fails the test (a panic with the harness's message) where `testbed` returns an
//! error; [`World`] and the helpers below are the tests' own.

pub(crate) mod build;
pub(crate) mod process;
pub(crate) mod timedated;
pub(crate) mod world;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub(crate) use build::bins;
pub(crate) use process::Proc;
pub(crate) use testbed::PATIENCE;
pub(crate) use timedated::FakeTimedated;
pub(crate) use world::World;

/// Fails the test with a harness error, its causes included.
#[track_caller]
pub(crate) fn fail<T>(error: anyhow::Error) -> T {
    panic!("{error:#}")
}

/// Polls `check` every 100 ms until it returns `Ok`, panicking with `what` (and the last note) after `timeout`.
#[track_caller]
pub(crate) fn wait_until<T>(what: &str, timeout: Duration, check: impl FnMut() -> Result<T, String>) -> T {
    testbed::poll(what, timeout, check).unwrap_or_else(fail)
}

/// A scratch directory for one test ([`testbed::Scratch`]): capture files, configs, the bus socket and the
/// daemon's state. Mode 0711, so that other uids can reach the bus socket inside it, and nothing more.
pub(crate) struct Scratch(testbed::Scratch);

impl Scratch {
    /// Creates a fresh scratch directory, `att-e2e-<label>-…`.
    pub(crate) fn new(label: &str) -> Scratch {
        Scratch(testbed::Scratch::new(&format!("e2e-{label}")).unwrap_or_else(fail))
    }

    /// Writes `contents` to `name` in the scratch directory with `mode`, returning the path.
    pub(crate) fn write(&self, name: &str, contents: &str, mode: u32) -> PathBuf {
        self.0.write(name, contents, mode).unwrap_or_else(fail)
    }
}

impl std::ops::Deref for Scratch {
    type Target = testbed::Scratch;

    fn deref(&self) -> &testbed::Scratch {
        &self.0
    }
}

/// A private `dbus-daemon` ([`testbed::Bus`]) listening on a socket in the scratch directory, open to every
/// local uid.
pub(crate) struct Bus(testbed::Bus);

impl Bus {
    /// Starts the bus and waits for it to print its address.
    pub(crate) fn start(scratch: &Scratch) -> Bus {
        Bus(testbed::Bus::start(scratch).unwrap_or_else(fail))
    }

    /// Kills this `dbus-daemon` (every connection drops at once, as when the bus crashes), leaving its socket file.
    pub(crate) fn kill(&mut self) {
        self.0.proc.kill9().unwrap_or_else(fail);
    }

    /// Kills this `dbus-daemon` (every connection drops at once, as when the bus crashes) and starts a new one
    /// listening on the same socket path, as a restarted system bus does. Returns once the new one listens.
    pub(crate) fn restart(&mut self, scratch: &Scratch) {
        self.0.restart(scratch).unwrap_or_else(fail);
    }
}

impl std::ops::Deref for Bus {
    type Target = testbed::Bus;

    fn deref(&self) -> &testbed::Bus {
        &self.0
    }
}

/// The fake cloud ([`testbed::Fake`]), listening on loopback, with its control API.
pub(crate) struct Fake(testbed::Fake);

impl Fake {
    /// Starts `att-fake-cloud` with `args` and waits for its `listening on URL` line.
    pub(crate) fn start(scratch: &Scratch, args: &[String]) -> Fake {
        Fake(testbed::Fake::start(&bins().fake, scratch, args).unwrap_or_else(fail))
    }

    /// `POST /_control/<path>` with a JSON body; returns the JSON reply (`null` for an empty one).
    pub(crate) fn control(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        self.0.api().post(path, body).unwrap_or_else(fail)
    }

    /// The code the user's authenticator app shows now.
    pub(crate) fn current_totp(&self, username: &str) -> String {
        self.0.api().current_totp(username).unwrap_or_else(fail)
    }

    /// What the fake has counted (`GET /_control/counters`).
    pub(crate) fn counters(&self) -> serde_json::Value {
        self.0.api().counters().unwrap_or_else(fail)
    }

    /// One counter, e.g. `password_grants_ok`.
    pub(crate) fn counter(&self, name: &str) -> u64 {
        self.0.api().counter(name).unwrap_or_else(fail)
    }

    /// Whether the cloud accepts `token` as an access token right now.
    pub(crate) fn is_access_token_valid(&self, token: &str) -> bool {
        self.0.api().is_access_token_valid(token).unwrap_or_else(fail)
    }

    /// Whether a refresh would accept `token` right now.
    pub(crate) fn is_refresh_token_valid(&self, token: &str) -> bool {
        self.0.api().is_refresh_token_valid(token).unwrap_or_else(fail)
    }

    /// Injects a fault, e.g. `{"kind":"server_error","duration_ms":20000,"path":"/login"}`.
    pub(crate) fn inject_fault(&self, fault: serde_json::Value) {
        self.0.api().inject_fault(fault).unwrap_or_else(fail);
    }

    /// Revokes a token of any kind; whether the fake knew it.
    pub(crate) fn revoke(&self, token: &str) -> bool {
        self.0.api().revoke(token).unwrap_or_else(fail)
    }

    /// Revokes every access and refresh token of a user.
    pub(crate) fn revoke_user_sessions(&self, username: &str) -> u64 {
        self.0.api().revoke_user_sessions(username).unwrap_or_else(fail)
    }
}

impl std::ops::Deref for Fake {
    type Target = testbed::Fake;

    fn deref(&self) -> &testbed::Fake {
        &self.0
    }
}

/// A running `att-tokend`.
pub(crate) struct Daemon {
    /// The process.
    pub(crate) proc: Proc,
}

impl Daemon {
    /// Starts `att-tokend --config <config>` with `RUST_LOG=<log>` and waits until it answers `att-token list`.
    pub(crate) fn start(scratch: &Scratch, bus: &Bus, config: &Path, log: &str) -> Daemon {
        let daemon =
            testbed::Daemon::start(bins(), scratch, &bus.address, config, &[("RUST_LOG", log)]).unwrap_or_else(fail);
        Daemon { proc: Proc(daemon.proc) }
    }
}

/// An `att-token --bus <address>` command, ready for subcommand arguments.
pub(crate) fn cli(bus_address: &str) -> Command {
    bins().att_token(bus_address)
}

/// Runs `att-token` to completion with `stdin` as its standard input.
pub(crate) fn cli_with_stdin(command: Command, stdin: &str) -> Output {
    testbed::output_with_stdin(command, stdin).unwrap_or_else(fail)
}

/// Renders a command's outcome for assertion messages (stdout may hold a token: callers pass it only in tests
/// where that is fine, since test tokens are fake).
pub(crate) fn describe(output: &Output) -> String {
    let mut text = String::new();
    let _ = write!(
        text,
        "status {}; stdout {:?}; stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// `att-token`'s exit statuses, as its man page lists them.
pub(crate) mod exit {
    /// The caller may not read the token or call the method (`AccessDenied`).
    pub(crate) const ACCESS_DENIED: i32 = 6;
    /// The token's session is lost: someone must log in (`NeedsLogin`).
    pub(crate) const NEEDS_LOGIN: i32 = 4;
    /// No valid token now, for a transient reason (`Unavailable`).
    pub(crate) const UNAVAILABLE: i32 = 5;
    /// A bad argument, also one the daemon refuses (`InvalidArgs`).
    pub(crate) const USAGE: i32 = 2;
    /// The cloud rejects this device or ground token (`Revoked`).
    pub(crate) const REVOKED: i32 = 8;
}
