//! The D-Bus errors of the service, and the one place internal errors become D-Bus errors.

use zbus::DBusError;
use zbus::message::{Header, Message};
use zbus::names::ErrorName;

use crate::dbus::callers::CredentialsError;
use crate::engine::EngineError;

/// The errors of `io.allthingstalk.TokenAgent1`, named `io.allthingstalk.TokenAgent1.Error.<Variant>`.
/// Every message says what to do.
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

/// What a method of the service fails with: an [`AgentError`], or one of the standard
/// `org.freedesktop.DBus.Error.AccessDenied` / `InvalidArgs`.
#[derive(Debug)]
pub enum ServiceError {
    /// An error of this service.
    Agent(AgentError),
    /// A standard D-Bus error.
    Standard(zbus::fdo::Error),
}

impl DBusError for ServiceError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        match self {
            ServiceError::Agent(e) => e.create_reply(call),
            ServiceError::Standard(e) => e.create_reply(call),
        }
    }

    fn name(&self) -> ErrorName<'_> {
        match self {
            ServiceError::Agent(e) => e.name(),
            ServiceError::Standard(e) => e.name(),
        }
    }

    fn description(&self) -> Option<&str> {
        match self {
            ServiceError::Agent(e) => e.description(),
            ServiceError::Standard(e) => e.description(),
        }
    }
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name(), self.description().unwrap_or(""))
    }
}

impl std::error::Error for ServiceError {}

/// The one mapping from internal errors to D-Bus errors.
impl From<EngineError> for ServiceError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        match e {
            EngineError::UnknownToken(_) => ServiceError::Agent(AgentError::UnknownToken(message)),
            EngineError::InvalidArgs(_) => ServiceError::Standard(zbus::fdo::Error::InvalidArgs(message)),
            EngineError::AccessDenied(_) => ServiceError::Standard(zbus::fdo::Error::AccessDenied(message)),
            EngineError::NeedsLogin { .. } => ServiceError::Agent(AgentError::NeedsLogin(message)),
            EngineError::Unavailable { .. } => ServiceError::Agent(AgentError::Unavailable(message)),
            EngineError::Revoked(_) => ServiceError::Agent(AgentError::Revoked(message)),
            EngineError::LoginFailed { .. } => ServiceError::Agent(AgentError::LoginFailed(message)),
            EngineError::MfaRequired(_) => ServiceError::Agent(AgentError::MfaRequired(message)),
            EngineError::MfaFailed(_) => ServiceError::Agent(AgentError::MfaFailed(message)),
            EngineError::NoTokenForDevice(_) => ServiceError::Agent(AgentError::NoTokenForDevice(message)),
            EngineError::NotAUserToken { .. } => ServiceError::Standard(zbus::fdo::Error::InvalidArgs(message)),
        }
    }
}

/// A caller whose identity could not be established is refused (`AccessDenied`), except while too many lookups
/// are under way: that is transient (`Unavailable`), and the caller may try again.
impl From<CredentialsError> for ServiceError {
    fn from(e: CredentialsError) -> Self {
        let message = e.to_string();
        match e {
            CredentialsError::Busy => ServiceError::Agent(AgentError::Unavailable(message)),
            _ => ServiceError::Standard(zbus::fdo::Error::AccessDenied(message)),
        }
    }
}
