//! The engine's view of the cloud: the `/login` steps and token probes, with every failure sorted into
//! "transient" (retry with backoff) or "verdict" (a person must act).

use std::time::Duration;

use token_model::reply::MfaChallenge;
use token_model::secret::{AccessToken, MfaCode, Password, RefreshToken, TotpSeed};

/// A failed call to the cloud.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// Retry later (network, 5xx, 429, unreadable reply); `retry_after` when the server said.
    Transient { why: String, retry_after: Option<Duration> },
    /// The cloud said no (HTTP 400 from `/login`): retrying the same request cannot help.
    Verdict { why: String },
}

impl Failure {
    pub(crate) fn why(&self) -> &str {
        match self {
            Failure::Transient { why, .. } | Failure::Verdict { why } => why,
        }
    }
}

/// A token grant, as the engine needs it.
pub(crate) struct Grant {
    pub(crate) access: AccessToken,
    pub(crate) expires_in: Duration,
    /// `None` when the reply did not carry a (new) refresh token: the old one and its deadline stand.
    pub(crate) refresh: Option<RefreshToken>,
}

/// The outcome of the password step.
pub(crate) enum LoginStep {
    Granted(Grant),
    Challenge(MfaChallenge),
}

/// What a token probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The cloud accepts the token.
    Valid,
    /// The cloud rejects the token (401/403).
    Rejected(String),
}

/// The client for one AllThingsTalk instance.
#[derive(Debug, Clone)]
pub struct Cloud {
    _private: (),
}

fn not_ready<T>() -> Result<T, Failure> {
    Err(Failure::Transient { why: "the cloud client is not available in this build".to_owned(), retry_after: None })
}

impl Cloud {
    /// A client (placeholder until the login client is wired in).
    pub fn new() -> Self {
        Self { _private: () }
    }

    pub(crate) async fn refresh(&self, _refresh: &RefreshToken) -> Result<Grant, Failure> {
        not_ready()
    }

    pub(crate) async fn password(&self, _username: &str, _password: &Password) -> Result<LoginStep, Failure> {
        not_ready()
    }

    pub(crate) async fn mfa(&self, _challenge: MfaChallenge, _code: &MfaCode) -> Result<Grant, Failure> {
        not_ready()
    }

    pub(crate) fn totp(_seed: &TotpSeed) -> Result<MfaCode, String> {
        Err("no TOTP support in this build".to_owned())
    }

    pub(crate) async fn probe_user(&self, _access: &AccessToken) -> Result<Probe, Failure> {
        not_ready()
    }
}
