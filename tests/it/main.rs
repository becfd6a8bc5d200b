//! Cross-crate tests. One module per concern, each with a one-line purpose.

/// Arrows between crates and between the daemon's modules point one way, token-model stays pure, the daemon logs
/// nothing at trace and serves without proxies, ARCHITECTURE.md is true, no file grows long without a reason.
mod architecture;

/// Harness for end-to-end runs: the `testbed` crate's programs and processes, as the tests call them, and `World`.
mod support;

/// End to end: `att-tokend --check-config` names each mistake with file, line and fix.
mod e2e_config;

/// End to end: MFA login, tokens valid across refreshes, no secret in trace logs, state modes, kill -9.
mod e2e_refresh;

/// End to end: outages, a rejected refresh (needs-login, AttentionNeeded), a revoked device token.
mod e2e_failures;

/// End to end: readers get a token, other uids are denied, only admins log in.
mod e2e_access;

/// Packaging files: the unit passes systemd-analyze, the D-Bus files load in dbus-daemon, the conffile parses.
mod packaging;

/// End to end: refused logins, `get --min-valid` refreshing first, `refresh` on demand, `logout`.
mod e2e_session;

/// End to end: unattended login from password and TOTP seed files, at start and after a rejected refresh.
mod e2e_unattended;

/// End to end: the MFA step finds the cloud's names among the known variants, keeps them, and says which.
mod e2e_mfa_variants;

/// End to end: SIGHUP reloads token files, tokens and refresh timings; a broken config is reported and ignored.
mod e2e_reload;

/// End to end: the wall clock confirmed through timedated on the bus; a restart serves a saved token at once only then.
mod e2e_clock;

/// End to end: an abort of the daemon, `exec` or `proxy` writes no core dump, where a plain process's would.
mod e2e_cores;

/// End to end: refused credentials and logouts outlive restarts; a refresh refused for a config reason keeps the session.
mod e2e_lockout;

/// End to end: WATCHDOG=1 keeps coming while a bus accepts and never answers, and while a reload blocks on its files.
mod e2e_watchdog;

/// End to end: short grants, hammering readers, refused credentials, outages, verdicts, logout, clocks, reloads.
mod e2e_pressure;

/// End to end: one daemon per state directory; a session is only sent to the instance and client it was made with.
mod e2e_ownership;

/// End to end: a probe or ground sync under way during a SIGHUP reload never applies to the new token or ground.
mod e2e_probe;

/// End to end: oversized arguments are refused briefly while the daemon serves on; token properties are for readers.
mod e2e_hostile;

/// End to end: the bus restarts during a refresh; the refresh is saved, the session survives, the daemon serves again.
mod e2e_bus_loss;

/// End to end: sealed sessions hold no piece of a token; missing, other and rotated keys; swapped or altered files.
mod e2e_sealed;

/// End to end: token files follow refreshes, are read by readers only, move with reloads and go on verdicts.
mod e2e_token_files;

/// End to end: 1,000 tokens under load; prints the memory, threads and files the unit's limits are sized from.
mod e2e_limits;

/// End to end: `att-token exec` hands PROGRAM the token, restarts or signals it on rotation, returns its status.
mod e2e_exec;

/// End to end: `curl` through `att-token proxy` across rotations; refusals; a non-reader's 403; unix sockets.
mod e2e_proxy;
