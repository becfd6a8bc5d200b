//! What can go wrong when a caller asks the engine for something. The D-Bus side maps these to D-Bus errors, in
//! one place of its own; the engine knows nothing of D-Bus.

use token_model::ids::{DeviceId, TokenKind, TokenName};

/// A failed request to the engine. Every message says what is wrong and what to do; none holds a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No token of that name is configured.
    #[error("no token named {0:?} is configured; `att-token list` shows the configured names")]
    UnknownToken(String),
    /// An argument is malformed (a name, a device id, a number of seconds).
    #[error("{0}")]
    InvalidArgs(String),
    /// The caller may not do this.
    #[error("{0}")]
    AccessDenied(String),
    /// The user session has no usable refresh token: someone must log in.
    #[error("token \"{name}\" needs a login ({why}); run `att-token login {name}` as an admin")]
    NeedsLogin {
        /// The token.
        name: TokenName,
        /// Why, in a few words.
        why: String,
    },
    /// No valid token right now, for a transient reason; the daemon keeps retrying.
    #[error("token \"{name}\" is not available right now ({why}); the daemon keeps retrying, try again later")]
    Unavailable {
        /// The token.
        name: TokenName,
        /// Why, in a few words (never a secret).
        why: String,
    },
    /// A device or ground token the cloud rejects.
    #[error(
        "token \"{0}\" was rejected by the cloud (revoked or deleted); create a new token in the AllThingsTalk web UI, \
         put it in the token file and reload the daemon (`systemctl reload att-tokend`)"
    )]
    Revoked(TokenName),
    /// The cloud refused the username or password, or the login could not be completed.
    #[error("login for \"{name}\" failed: {why}")]
    LoginFailed {
        /// The token.
        name: TokenName,
        /// What the cloud said and what to do.
        why: String,
    },
    /// The account asks for an MFA code and none was given.
    #[error(
        "the account for \"{0}\" asks for an MFA code; call Login again with the 6-digit code from the authenticator app"
    )]
    MfaRequired(TokenName),
    /// The MFA code was refused.
    #[error("the MFA code for \"{0}\" was refused (wrong or expired); log in again with a fresh code")]
    MfaFailed(TokenName),
    /// No token the caller may read may access the device.
    #[error(
        "no token you may read may access device {0}; configure a device token for it, a ground token whose ground \
         holds it, or a user token, and make sure you are among its readers"
    )]
    NoTokenForDevice(DeviceId),
    /// The operation applies to user tokens only.
    #[error("token \"{name}\" is a {kind} token; {what} applies to user tokens only")]
    NotAUserToken {
        /// The token.
        name: TokenName,
        /// Its kind.
        kind: TokenKind,
        /// The operation asked for.
        what: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_token_as_the_user_wrote_it() {
        let name = TokenName::new("main").unwrap();
        let messages = [
            EngineError::NeedsLogin { name: name.clone(), why: "the refresh token was rejected".into() }.to_string(),
            EngineError::Unavailable { name: name.clone(), why: "the cloud answered 503".into() }.to_string(),
            EngineError::Revoked(name.clone()).to_string(),
            EngineError::MfaRequired(name.clone()).to_string(),
            EngineError::MfaFailed(name.clone()).to_string(),
        ];
        for message in messages {
            assert!(message.contains("\"main\""), "{message}");
            assert!(!message.contains("TokenName"), "{message}");
        }
        let needs_login = EngineError::NeedsLogin { name, why: "x".into() }.to_string();
        assert!(needs_login.contains("att-token login main"), "{needs_login}");
    }
}
