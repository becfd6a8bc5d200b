//! Why the fake cloud could not start or could not take a change.

use std::net::SocketAddr;

/// Why the fake cloud could not start or could not take a change.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FakeCloudError {
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}: choose a free address, or port 0 for any free port")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A user's TOTP seed is not base32.
    #[error(
        "the TOTP seed of user {username} is not base32: give the seed as the authenticator setup shows it \
         (letters A-Z and digits 2-7)"
    )]
    InvalidTotpSeed {
        /// The user whose seed is wrong.
        username: String,
    },
    /// The thread or runtime behind `start_blocking` could not be started.
    #[error("cannot start the fake cloud's own runtime thread: check the process's thread and file limits")]
    Runtime(#[source] std::io::Error),
}
