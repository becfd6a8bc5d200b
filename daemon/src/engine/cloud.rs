//! The engine's view of the cloud: the `/login` steps and token checks of [`login_flow`], with every failure
//! sorted once into "transient" (retry with backoff) or "verdict" (a person must act). Every request is counted
//! here, by kind and outcome ([`crate::metrics`]).
//!
//! Every request goes through the daemon's one request budget ([`token_model::fleet::Budget`], `[daemon]
//! request_burst` and `requests_per_minute`), shared by every session, probe and sync: one over budget waits its
//! turn on the boot-time clock (asynchronously), it is never dropped. A login is admitted as the password step
//! plus the MFA step under each name it may try.

use std::time::{Duration, SystemTime};

use login_flow::{Credentials, LoginClient, LoginError, LoginGrant, MfaFields};
use token_model::fleet::Budget;
use token_model::ids::{DeviceId, GroundId};
use token_model::reply::TokenGrant;
use token_model::secret::{AccessToken, MfaCode, Password, RefreshToken, StaticToken, TotpSeed};

use crate::metrics::{self, Ended, Request};

/// A failed refresh or token check.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// Retry later (network, 5xx, 429, unreadable reply); `retry_after` when the server said. `in_doubt`: the
    /// request may have been carried out although no answer was read (a timeout, a connection lost after it
    /// was made), so a refresh may have rotated the refresh token at the cloud.
    Transient { why: String, retry_after: Option<Duration>, in_doubt: bool },
    /// The cloud said no: retrying the same request cannot help. `ends_session`: it refused the refresh token
    /// itself (`invalid_grant`), so the session is over; any other refusal (a client id, a grant type) is about
    /// the configuration, and the session is kept for a try once that is fixed.
    Verdict { why: String, ends_session: bool },
}

impl Failure {
    pub(crate) fn why(&self) -> &str {
        match self {
            Failure::Transient { why, .. } | Failure::Verdict { why, .. } => why,
        }
    }
}

impl From<LoginError> for Failure {
    fn from(e: LoginError) -> Self {
        if e.is_transient() {
            Failure::Transient { why: e.to_string(), retry_after: e.retry_after(), in_doubt: e.outcome_unknown() }
        } else {
            Failure::Verdict { why: e.to_string(), ends_session: matches!(e, LoginError::RefreshRejected) }
        }
    }
}

/// A failed login.
#[derive(Debug, Clone)]
pub(crate) enum LoginFailure {
    /// Wrong username or password.
    BadCredentials(String),
    /// The account asks for an MFA code and none was given.
    MfaRequired,
    /// The MFA code was refused; for a code computed from the TOTP seed, which clock it came from.
    BadMfaCode(Option<login_flow::totp::CodeClock>),
    /// Another verdict (client id, grant type, TOTP seed, configuration).
    Other(String),
    /// Retry later.
    Transient { why: String, retry_after: Option<Duration> },
}

impl From<LoginError> for LoginFailure {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::BadCredentials { .. } => LoginFailure::BadCredentials(e.to_string()),
            LoginError::MfaRequired => LoginFailure::MfaRequired,
            LoginError::BadMfaCode { .. } => LoginFailure::BadMfaCode(e.code_clock()),
            e if e.is_transient() => LoginFailure::Transient { why: e.to_string(), retry_after: e.retry_after() },
            e => LoginFailure::Other(e.to_string()),
        }
    }
}

/// The tokens the cloud granted (with its times), as the engine needs them.
pub(crate) struct CloudTokens {
    pub(crate) access: AccessToken,
    pub(crate) expires_in: Duration,
    /// `None` when the reply carried no refresh token.
    pub(crate) refresh: Option<RefreshToken>,
    pub(crate) server_date: Option<SystemTime>,
    pub(crate) issued: Option<SystemTime>,
}

impl From<TokenGrant> for CloudTokens {
    fn from(g: TokenGrant) -> Self {
        CloudTokens {
            access: g.access_token,
            expires_in: g.expires_in,
            refresh: g.refresh_token,
            server_date: g.server_date,
            issued: g.issued,
        }
    }
}

/// A login's tokens, and the MFA step's names that completed it (`None`: no MFA step).
pub(crate) struct LoggedIn {
    pub(crate) tokens: CloudTokens,
    pub(crate) mfa: Option<MfaFields>,
}

impl From<LoginGrant> for LoggedIn {
    fn from(login: LoginGrant) -> Self {
        LoggedIn { tokens: login.grant.into(), mfa: login.mfa_variant }
    }
}

/// The client for one AllThingsTalk instance, with the daemon's request budget.
#[derive(Debug, Clone)]
pub struct Cloud {
    client: std::sync::Arc<LoginClient>,
    budget: std::sync::Arc<std::sync::Mutex<Budget>>,
}

impl Cloud {
    /// Wraps a configured login client; every request waits for its turn in `budget` (shared by all clones).
    pub fn new(client: LoginClient, budget: Budget) -> Self {
        Self { client: std::sync::Arc::new(client), budget: std::sync::Arc::new(std::sync::Mutex::new(budget)) }
    }

    /// The REST base URL requests go to, without a trailing slash (not a secret).
    pub fn api_url(&self) -> String {
        self.client.config().base_url().as_str().trim_end_matches('/').to_owned()
    }

    /// Waits until the budget lets `requests` more go. Each is booked in turn, so none is lost or overtaken.
    async fn admit(&self, requests: u32) {
        let now = crate::clock::boot_now();
        let at = {
            let mut budget = self.budget.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut at = now;
            for _ in 0..requests {
                at = budget.reserve(now);
            }
            at
        };
        if at > now {
            metrics::counters().budget_waited();
            tracing::debug!(wait_ms = at.saturating_since(now).as_millis() as u64, "over the request budget: waiting");
            crate::clock::sleep_until(at).await;
        }
    }

    pub(crate) async fn refresh(&self, refresh: &RefreshToken) -> Result<CloudTokens, Failure> {
        self.admit(1).await;
        let result = self.client.refresh(refresh).await;
        metrics::counters().cloud_request(Request::Refresh, ended(&result));
        Ok(result?.into())
    }

    /// A person's login. The MFA step tries `known` (the names that worked last), then `[api.mfa]`, then the
    /// built-in variants; the names that worked come back with the tokens.
    pub(crate) async fn login(
        &self,
        username: &str,
        password: &Password,
        code: Option<&MfaCode>,
        known: Option<&MfaFields>,
    ) -> Result<LoggedIn, LoginFailure> {
        self.admit(self.login_requests(known)).await;
        let credentials = Credentials::new(username, password.clone());
        counted_login(self.client.login_with_code_trying_variants(&credentials, code, known).await)
    }

    /// A login with the configured credentials, the MFA step as in [`Cloud::login`].
    pub(crate) async fn login_unattended(
        &self,
        username: &str,
        password: &Password,
        seed: Option<&TotpSeed>,
        known: Option<&MfaFields>,
    ) -> Result<LoggedIn, LoginFailure> {
        self.admit(self.login_requests(known)).await;
        let credentials = Credentials::new(username, password.clone());
        let login = match seed {
            Some(seed) => self.client.login_with_totp_trying_variants(&credentials, seed, known).await,
            None => self.client.login_with_code_trying_variants(&credentials, None, known).await,
        };
        counted_login(login)
    }

    /// The MFA step's names as configured (`[api.mfa]`).
    pub(crate) fn configured_mfa(&self) -> &MfaFields {
        &self.client.config().mfa
    }

    /// The most requests a login may send: the password grant, and the MFA step under each of the names it may
    /// try. All are admitted before the first goes, so even a search through every name never passes the budget
    /// (logins are rare; a login usually sends two).
    fn login_requests(&self, known: Option<&MfaFields>) -> u32 {
        let steps = login_flow::variants::mfa_variants(self.configured_mfa(), known).len();
        1 + u32::try_from(steps).unwrap_or(u32::MAX)
    }

    /// `Ok(None)`: the cloud accepts the user's access token; `Ok(Some(why))`: it rejects it.
    pub(crate) async fn check_user(&self, token: &AccessToken) -> Result<Option<String>, Failure> {
        self.admit(1).await;
        verdict(self.client.check_user_token(token).await)
    }

    /// `Ok(None)`: the cloud accepts the device token; `Ok(Some(why))`: it rejects it.
    pub(crate) async fn check_device(&self, token: &StaticToken, device: &DeviceId) -> Result<Option<String>, Failure> {
        self.admit(1).await;
        verdict(self.client.check_device_token(token, device).await)
    }

    /// The ground's devices, or why the cloud rejects the ground token.
    pub(crate) async fn ground_devices(
        &self,
        token: &StaticToken,
        ground: &GroundId,
    ) -> Result<Result<Vec<DeviceId>, String>, Failure> {
        self.admit(1).await;
        let result = match self.client.ground_devices(token, ground).await {
            Ok(devices) => Ok(Ok(devices)),
            Err(e) if e.is_transient() => Err(e.into()),
            Err(e) => Ok(Err(e.to_string())),
        };
        let outcome = match &result {
            Ok(Ok(_)) => Ended::Success,
            Ok(Err(_)) => Ended::Refused,
            Err(_) => Ended::Transient,
        };
        metrics::counters().cloud_request(Request::GroundDevices, outcome);
        result
    }
}

/// A login's result, counted.
fn counted_login(result: Result<LoginGrant, LoginError>) -> Result<LoggedIn, LoginFailure> {
    metrics::counters().cloud_request(Request::Login, ended(&result));
    Ok(result?.into())
}

/// How a request answered by login-flow ended, as the metrics count it.
fn ended<T>(result: &Result<T, LoginError>) -> Ended {
    match result {
        Ok(_) => Ended::Success,
        Err(e) if e.is_transient() => Ended::Transient,
        Err(_) => Ended::Refused,
    }
}

/// A token check's result, counted.
fn verdict(result: Result<(), LoginError>) -> Result<Option<String>, Failure> {
    let (outcome, result) = match result {
        Ok(()) => (Ended::Success, Ok(None)),
        Err(e) if e.is_transient() => (Ended::Transient, Err(e.into())),
        Err(e) => (Ended::Refused, Ok(Some(e.to_string()))),
    };
    metrics::counters().cloud_request(Request::Check, outcome);
    result
}
