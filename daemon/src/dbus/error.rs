//! The D-Bus errors of the service, and the one place internal errors become D-Bus errors: the engine's
//! ([`EngineError`]), a refused argument ([`InvalidArgs`]) and a caller who cannot be identified. The error names
//! are the contract's ([`AgentError`], from token-agent). A refused call is counted here, once, as its error is made; a
//! served call by [`served`], as its answer is ready.

use token_agent::AgentError;
use zbus::DBusError;
use zbus::message::{Header, Message};
use zbus::names::ErrorName;

use crate::dbus::args::InvalidArgs;
use crate::dbus::callers::CallerLookupError;
use crate::engine::EngineError;
use crate::metrics::{self, Method, Refusal};

/// Counts a call of `method` that got its answer. Refused calls are counted as their error is made, below.
pub fn served(method: Method) {
    metrics::counters().served(method);
}

/// Counts a refused call, by the reason its error names, as the error is made: every refusal goes through one of
/// the conversions below, once.
fn refused(error: ServiceError) -> ServiceError {
    metrics::counters().refused(error.refusal());
    error
}

/// What a method of the service fails with: an [`AgentError`] of the contract, or one of the standard
/// `org.freedesktop.DBus.Error.AccessDenied` / `InvalidArgs`.
#[derive(Debug)]
pub enum ServiceError {
    /// An error of this service.
    Agent(AgentError),
    /// A standard D-Bus error.
    Standard(zbus::fdo::Error),
}

impl ServiceError {
    /// Why the call was refused, as the metrics count it: the error name's last element.
    pub fn refusal(&self) -> Refusal {
        match self {
            ServiceError::Agent(AgentError::UnknownToken(_)) => Refusal::UnknownToken,
            ServiceError::Agent(AgentError::NeedsLogin(_)) => Refusal::NeedsLogin,
            ServiceError::Agent(AgentError::Unavailable(_)) => Refusal::Unavailable,
            ServiceError::Agent(AgentError::LoginFailed(_)) => Refusal::LoginFailed,
            ServiceError::Agent(AgentError::MfaRequired(_)) => Refusal::MfaRequired,
            ServiceError::Agent(AgentError::MfaFailed(_)) => Refusal::MfaFailed,
            ServiceError::Agent(AgentError::NoTokenForDevice(_)) => Refusal::NoTokenForDevice,
            ServiceError::Agent(AgentError::Revoked(_)) => Refusal::Revoked,
            ServiceError::Standard(zbus::fdo::Error::AccessDenied(_)) => Refusal::AccessDenied,
            ServiceError::Standard(zbus::fdo::Error::InvalidArgs(_)) => Refusal::InvalidArgs,
            ServiceError::Standard(_) => Refusal::Failed,
        }
    }
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
        refused(match e {
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
        })
    }
}

/// A refused argument is `org.freedesktop.DBus.Error.InvalidArgs`.
impl From<InvalidArgs> for ServiceError {
    fn from(e: InvalidArgs) -> Self {
        refused(ServiceError::Standard(zbus::fdo::Error::InvalidArgs(e.0)))
    }
}

/// A caller whose identity could not be established is refused (`AccessDenied`), except while too many lookups
/// are under way: that is transient (`Unavailable`), and the caller may try again.
impl From<CallerLookupError> for ServiceError {
    fn from(e: CallerLookupError) -> Self {
        let message = e.to_string();
        refused(match e {
            CallerLookupError::Busy => ServiceError::Agent(AgentError::Unavailable(message)),
            _ => ServiceError::Standard(zbus::fdo::Error::AccessDenied(message)),
        })
    }
}
