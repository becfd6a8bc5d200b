//! The login as a sequence of states a caller cannot misuse.
//!
//! [`Credentials`] go into the password grant, which gives either tokens or an [`MfaPending`]; only an
//! `MfaPending` accepts a code, and it is consumed by the MFA step (a challenge is single-use). A refresh
//! takes a refresh token and nothing else.

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
#[derive(Debug)]
pub struct MfaPending {
    challenge: MfaChallenge,
}

impl MfaPending {
    /// Wraps a challenge the server sent.
    pub fn new(challenge: MfaChallenge) -> Self {
        Self { challenge }
    }

    /// The challenge's identifiers.
    pub fn challenge(&self) -> &MfaChallenge {
        &self.challenge
    }
}
