//! Integration tests of the fake cloud over real loopback HTTP.

/// Shared helpers: an HTTP client and form posts.
mod support;

/// The `att-fake-cloud` binary: first line, flags, config file, `--help`, SIGTERM.
mod binary;
/// The control API over HTTP, `start_blocking` and shutdown.
mod control;
/// Every fault kind, path filters and durations.
mod faults;
/// Password grant, MFA (both shapes), error table.
mod login;
/// Token-check endpoints, revocation, expiry, the `Date` header and the clock offset.
mod probes;
/// Refresh rotation (sliding, fixed, omit), reuse, client binding, concurrency.
mod refresh;
