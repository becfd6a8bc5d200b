//! The errors of the service: [`AgentError`], which the daemon replies with, and what a caller reads of any
//! error reply ([`error_name`], [`error_message`]).

use zbus::DBusError as _;

/// The errors of `io.allthingstalk.TokenAgent1`, named `io.allthingstalk.TokenAgent1.Error.<Variant>`
/// ([`crate::ERROR_PREFIX`]). Every message says what to do.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "io.allthingstalk.TokenAgent1.Error")]
pub enum AgentError {
    /// No token of that name is configured.
    UnknownToken(String),
    /// The user session needs a login.
    NeedsLogin(String),
    /// No valid token now, for a transient reason.
    Unavailable(String),
    /// The login was refused.
    LoginFailed(String),
    /// The account asks for an MFA code and none was given.
    MfaRequired(String),
    /// The MFA code was refused.
    MfaFailed(String),
    /// No readable token may access the device.
    NoTokenForDevice(String),
    /// A device or ground token the cloud rejects (an addition to the contract's list).
    Revoked(String),
}

/// The D-Bus error name of a method error reply, if `error` is one.
pub fn error_name(error: &zbus::Error) -> Option<String> {
    match error {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str().to_owned()),
        zbus::Error::FDO(fdo) => Some(fdo.name().as_str().to_owned()),
        _ => None,
    }
}

/// The human message of a method error reply (the daemon's text), or the error itself otherwise.
pub fn error_message(error: &zbus::Error) -> String {
    match error {
        zbus::Error::MethodError(name, Some(text), _) if !text.is_empty() => text.clone(),
        zbus::Error::MethodError(name, _, _) => name.as_str().to_owned(),
        zbus::Error::FDO(fdo) => fdo.description().map_or_else(|| fdo.name().as_str().to_owned(), str::to_owned),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_carry_the_contract_prefix() {
        let errors = [
            AgentError::UnknownToken(String::new()),
            AgentError::NeedsLogin(String::new()),
            AgentError::Unavailable(String::new()),
            AgentError::LoginFailed(String::new()),
            AgentError::MfaRequired(String::new()),
            AgentError::MfaFailed(String::new()),
            AgentError::NoTokenForDevice(String::new()),
            AgentError::Revoked(String::new()),
        ];
        for error in errors {
            let name = error.name().as_str().to_owned();
            let variant = format!("{error:?}");
            let variant = variant.split('(').next().unwrap_or_default();
            assert_eq!(name, format!("{}{variant}", crate::ERROR_PREFIX));
            assert_ne!(crate::Exit::for_error_name(&name), crate::Exit::Other, "{name} has an exit status of its own");
        }
    }
}
