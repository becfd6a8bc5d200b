//! att-tokend: keeps AllThingsTalk tokens alive and serves them over D-Bus.

pub mod cli;
pub mod clock;
pub mod config;
pub mod dbus;
pub mod engine;
pub mod logging;
pub mod maintenance;
pub mod memory;
pub mod run;
pub mod seal;
pub mod secret_files;
pub mod state;
pub mod token_files;
