//! The D-Bus contract of `io.allthingstalk.TokenAgent1`, in one place for both sides: the daemon serves it and
//! `att-token` calls it.
//!
//! - The names: [`BUS_NAME`], [`OBJECT_PATH`], [`INTERFACE`], [`TOKEN_INTERFACE`], and the object path of each
//!   token ([`token_object_path`], with the path-element escaping both sides agree on).
//! - The errors: [`AgentError`] (`io.allthingstalk.TokenAgent1.Error.*`, which the daemon replies with) and, for
//!   callers, [`error_name`], [`error_message`] and the exit statuses of `att-token` they map to ([`Exit`]).
//! - The figures of `GetMetrics`: [`metrics`] (the label values both sides agree on, the reply's shape).
//! - Reaching the service: the bus ([`Bus`]) and, with the feature `client`, `connect` and the client's zbus
//!   proxies (`TokenAgentProxy`, `TokenProxy`). The daemon serves the interface without proxies and connects on
//!   its own terms (serving before it requests the name), so it builds without that feature.

mod bus;
mod error;
mod exit;
pub mod metrics;
mod path;
#[cfg(feature = "client")]
mod proxy;

pub use bus::Bus;
#[cfg(feature = "client")]
pub use bus::connect;
pub use error::{AgentError, error_message, error_name};
pub use exit::Exit;
pub use path::{escape_path_element, token_object_path, unescape_path_element};
#[cfg(feature = "client")]
pub use proxy::{TokenAgentProxy, TokenProxy};

/// The well-known bus name the daemon owns.
pub const BUS_NAME: &str = "io.allthingstalk.TokenAgent1";
/// The main object's path.
pub const OBJECT_PATH: &str = "/io/allthingstalk/TokenAgent1";
/// The main interface.
pub const INTERFACE: &str = "io.allthingstalk.TokenAgent1";
/// The interface of each per-token object.
pub const TOKEN_INTERFACE: &str = "io.allthingstalk.TokenAgent1.Token";
/// The prefix of the daemon's own error names (`…Error.UnknownToken` and so on): [`AgentError`]'s.
pub const ERROR_PREFIX: &str = "io.allthingstalk.TokenAgent1.Error.";
