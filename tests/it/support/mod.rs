//! What the end-to-end tests add to `testbed`: the programs built once per test run ([`bins`]), [`World`] (one
//! bus, one fake cloud, one daemon, with the tests' user and helpers), a stand-in timedated, the rendering of a
//! command's outcome for assertion messages, and `att-token`'s exit statuses as its man page lists them.
//!
//! Everything else the tests take from `testbed` under its own names (`testbed::Proc`, `Scratch`, `Bus`, `Fake`,
//! `Daemon`, `poll`, `as_user`), unwrapping its errors: an `anyhow` error's `Debug` shows its causes.

pub(crate) mod timedated;
pub(crate) mod world;

use std::fmt::Write as _;
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

pub(crate) use timedated::FakeTimedated;
pub(crate) use world::World;

/// The config most end-to-end tests run: the user token `main`, refreshed about every 5 s when the fake's access
/// tokens live 8 s (`--access-lifetime 8s`), retried after 1 s, then every 2 s.
pub(crate) fn fast_main() -> testbed::ConfigText {
    testbed::ConfigText::new().fast_refresh().user("main")
}

/// Builds `att-tokend`, `att-token` and `att-fake-cloud` (once per process) and returns their paths.
pub(crate) fn bins() -> &'static testbed::Bins {
    static BINS: OnceLock<Result<testbed::Bins, String>> = OnceLock::new();
    match BINS.get_or_init(|| testbed::Bins::build(testbed::Profile::Debug, &[]).map_err(|e| format!("{e:#}"))) {
        Ok(bins) => bins,
        Err(message) => panic!("{message}"),
    }
}

/// Polls `check` every 100 ms until it returns `Ok`, panicking with `what` (and the last note) after `timeout`.
#[track_caller]
pub(crate) fn wait_until<T>(what: &str, timeout: Duration, check: impl FnMut() -> Result<T, String>) -> T {
    testbed::poll(what, timeout, check).unwrap_or_else(|error| panic!("{error:#}"))
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

/// `att-token`'s exit statuses, as its man page lists them (written out here, so that a changed number in the
/// code fails these tests).
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
