//! att-tokend: keeps AllThingsTalk tokens alive and serves them over D-Bus.

pub mod access;
pub mod bus_link;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dbus;
pub mod durable;
pub mod engine;
pub mod event_loop;
pub mod logging;
pub mod maintenance;
pub mod memory;
pub mod metrics;
pub mod prepare;
pub mod rekey;
pub mod seal;
pub mod secret_files;
pub mod state_dir;
pub mod state_file;
pub mod token_files;
