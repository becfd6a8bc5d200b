//! The daemon's tests, in one binary. One module per concern, each with a one-line purpose.

/// Harness for the core tests: the fake cloud on loopback, a parsed config, the engine, D-Bus over a p2p pair.
#[macro_use]
mod core_support;

/// The daemon core over a peer-to-peer D-Bus pair: login, refreshes, outages, verdicts, access, restarts.
mod core_service;

/// Events per token: a status event touches the token it names only; a reload is one event of its own.
mod core_events;

/// Fleet behaviour: periodic and first requests wait their per-machine offsets; the request budget delays, never drops.
mod core_fleet;

/// What a caller can make the daemon hold is bounded; each excess is refused at once with a message.
mod core_limits;

/// Argument parsing and help texts of both programs, the exit-status table and object path escaping.
mod cli_args;

/// Loading a config from disk and checking the secret files it names, on a real file system.
mod config_files;

/// The state directory on a real file system: round trips, modes, atomic replacement, leftovers, corrupt files.
mod state_files;
