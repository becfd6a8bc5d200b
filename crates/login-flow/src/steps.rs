//! The login as a sequence of states a caller cannot misuse.
//!
//! [`Credentials`] go into the password grant, which gives either tokens or an [`MfaPending`]; only an
//! `MfaPending` accepts a code, and it is consumed by the MFA step (a challenge is single-use). A refresh
//! takes a refresh token and nothing else.

use std::time::{Duration, Instant, SystemTime};

use token_model::reply::{MfaChallenge, TokenGrant};
use token_model::secret::Password;

/// A username and password for the password grant. `Debug` hides the password.
#[derive(Debug, Clone)]
pub struct Credentials {
    username: String,
    password: Password,
}

impl Credentials {
    /// Pairs a username (usually an e-mail address) with its password.
    pub fn new(username: impl Into<String>, password: Password) -> Self {
        Self { username: username.into(), password }
    }

    /// The username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password.
    pub fn password(&self) -> &Password {
        &self.password
    }
}

/// What the password grant gave.
#[derive(Debug)]
pub enum PasswordOutcome {
    /// Tokens: the account has no MFA.
    Granted(TokenGrant),
    /// The account uses MFA: complete the login with a code.
    MfaRequired(MfaPending),
}

/// A login waiting for its MFA code. Consumed by the MFA step.
///
/// It keeps the cloud's time as the challenge's reply gave it (its `Date` header) and, when it came over a
/// [`crate::LoginClient`], the monotonic instant that reply arrived, so a code can be computed at the cloud's
/// time rather than at this machine's wall clock.
#[derive(Debug)]
pub struct MfaPending {
    challenge: MfaChallenge,
    server_date: Option<SystemTime>,
    received: Option<Instant>,
}

impl MfaPending {
    /// Wraps a challenge the server sent, with no `Date` known.
    pub fn new(challenge: MfaChallenge) -> Self {
        Self { challenge, server_date: None, received: None }
    }

    /// The same pending login, with the `Date` of the reply that carried the challenge.
    pub fn with_server_date(mut self, server_date: Option<SystemTime>) -> Self {
        self.server_date = server_date;
        self
    }

    /// The same pending login, with the monotonic instant its reply arrived.
    pub fn with_received(mut self, received: Instant) -> Self {
        self.received = Some(received);
        self
    }

    /// The challenge's identifiers.
    pub fn challenge(&self) -> &MfaChallenge {
        &self.challenge
    }

    /// The server's clock when it sent the challenge (the reply's `Date`), if the reply had a readable one.
    pub fn server_date(&self) -> Option<SystemTime> {
        self.server_date
    }

    /// How long ago, on the monotonic clock, the challenge's reply arrived (zero when not known).
    pub fn since_received(&self, now: Instant) -> Duration {
        self.received.map_or(Duration::ZERO, |received| now.saturating_duration_since(received))
    }
}
