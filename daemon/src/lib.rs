//! att-tokend: keeps AllThingsTalk tokens alive and serves them over D-Bus (being written).

pub mod config;
pub mod secret_files;
pub mod dbus;
pub mod engine;
pub mod client;
pub mod state;
pub mod logging;
pub mod maintenance;
pub mod run;
pub mod cli;
