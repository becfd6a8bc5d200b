//! The errors of the login protocol, shaped by what the protocol says, with the one question a caller asks
//! answered by [`LoginError::is_transient`].

use std::time::Duration;

use token_model::ids::TokenKind;
use token_model::reply::ReplyError;

use crate::totp::CodeClock;

/// Which `/login` step a reply answers; decides what an `invalid_grant` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `grant_type=password`.
    Password,
    /// The MFA completion step (`grant_type=mfa` by default).
    Mfa,
    /// `grant_type=refresh_token`.
    Refresh,
}

impl Step {
    /// A short name for messages and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Password => "password login",
            Step::Mfa => "MFA step",
            Step::Refresh => "refresh",
        }
    }
}

/// Why a login, refresh or token check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The server rejected the username or password (`invalid_grant` on the password step).
    #[error(
        "AllThingsTalk rejected the username or password{}: check them (they are case-sensitive) and log in again",
        describe(.description)
    )]
    BadCredentials {
        /// The server's `error_description`, if any (redacted, at most 200 characters).
        description: Option<String>,
    },
    /// The server rejected the MFA code or the challenge (`invalid_grant` on the MFA step).
    #[error(
        "AllThingsTalk rejected the MFA code: it was wrong or expired, or the login took too long; log in again and \
         enter the code your authenticator app shows right now{}{}",
        clock_hint(*.code_clock),
        describe(.description)
    )]
    BadMfaCode {
        /// The server's `error_description`, if any.
        description: Option<String>,
        /// For a code computed from a TOTP seed ([`crate::LoginClient::login_with_totp`]), the clock it was
        /// computed from; `None` for a code the caller gave.
        code_clock: Option<CodeClock>,
    },
    /// The account asks for an MFA code and none was given.
    #[error(
        "this AllThingsTalk account uses multi-factor authentication and no code was given: log in again with the \
         6-digit code from your authenticator app"
    )]
    MfaRequired,
    /// The server rejected the refresh token (`invalid_grant` on refresh): unknown, used, revoked or expired.
    #[error("the refresh token was rejected (it expired, was revoked or was already used): log in again")]
    RefreshRejected,
    /// The server rejected the client id (`invalid_clientId` / `invalid_client`).
    #[error(
        "AllThingsTalk rejected the client id during the {}{}: set api.client_id to one your instance accepts \
         (\"web\", \"mobile\" or \"postman\"); a refresh must use the client id of its login, so after changing it \
         log in again",
        .step.as_str(),
        describe(.description)
    )]
    ClientRejected {
        /// The step that was rejected.
        step: Step,
        /// The server's `error_description`, if any.
        description: Option<String>,
    },
    /// The server does not know the grant type sent (`unsupported_grant_type`).
    #[error(
        "AllThingsTalk does not support the grant type of the {}: for the MFA step, check [api.mfa] grant_type in \
         the configuration; otherwise check that api.url points to an AllThingsTalk instance",
        .step.as_str()
    )]
    UnsupportedGrant {
        /// The step that was rejected.
        step: Step,
    },
    /// The MFA step was not processed under any of the names tried ([`crate::variants`]): each answer was
    /// `unsupported_grant_type` or an `invalid_request` naming a missing field.
    #[error(
        "AllThingsTalk did not take the MFA step under any of the names tried ({}): set the names your instance \
         uses in [api.mfa] (grant_type, uid_field, user_field, code_field) and log in again",
        .tried.join("; ")
    )]
    MfaVariantsRefused {
        /// The variants tried, in order, each as its `[api.mfa]` settings (names only).
        tried: Vec<String>,
    },
    /// The server refused the request with another OAuth2 error (HTTP 400).
    #[error(
        "AllThingsTalk refused the {} with error {code:?}{}: check the configuration ([api] and [api.mfa]) and log \
         in again",
        .step.as_str(),
        describe(.description)
    )]
    Rejected {
        /// The step that was rejected.
        step: Step,
        /// The `error` code as sent.
        code: String,
        /// The server's `error_description`, if any.
        description: Option<String>,
    },
    /// HTTP 429: the server asks to slow down.
    #[error("AllThingsTalk is rate-limiting this gateway (HTTP 429){}; the request will be retried later, nothing to do", retry_hint(.retry_after))]
    RateLimited {
        /// How long the server asked to wait (`Retry-After`), if it said.
        retry_after: Option<Duration>,
    },
    /// The server answered with a status the step does not expect (5xx, or anything but 200/400 from `/login`).
    #[error(
        "AllThingsTalk answered HTTP {status}, a server-side problem; it will be retried; if it persists, check \
         AllThingsTalk's service status and that api.url is right (reply excerpt: {excerpt:?})"
    )]
    ServerError {
        /// The HTTP status.
        status: u16,
        /// A short, redacted excerpt of the body.
        excerpt: String,
    },
    /// The connection failed: DNS, refused, reset, TLS.
    #[error(
        "could not reach AllThingsTalk ({detail}); it will be retried; check the gateway's network, DNS and clock \
         (TLS needs a correct clock), and api.url"
    )]
    Network {
        /// What failed, without secrets.
        detail: String,
    },
    /// The connection failed after the request may have been sent (reset, closed before the reply).
    #[error(
        "the connection to AllThingsTalk failed before its answer arrived ({detail}); it will be retried; check \
         the gateway's network if this repeats"
    )]
    ConnectionLost {
        /// What failed, without secrets.
        detail: String,
    },
    /// The request did not complete in time.
    #[error(
        "AllThingsTalk did not answer within {} s; it will be retried; check the gateway's network if this repeats",
        .after.as_secs_f32()
    )]
    Timeout {
        /// The time limit that was hit.
        after: Duration,
    },
    /// The reply was bigger than the size cap and was refused unread.
    #[error(
        "AllThingsTalk's reply was larger than {limit} bytes and was refused; it will be retried; check that api.url \
         points to an AllThingsTalk instance and not to a web page"
    )]
    ReplyTooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// The reply could not be read (not JSON, or not the protocol's shape).
    #[error(transparent)]
    Malformed(ReplyError),
    /// A token check got HTTP 401: the token was deleted, revoked or has expired.
    #[error("{}", revoked_message(*.kind))]
    TokenRevoked {
        /// Which kind of token was checked.
        kind: TokenKind,
    },
    /// A token check got HTTP 403: the token is valid but may not access that resource.
    #[error(
        "the {kind} token may not access the resource it was checked against (HTTP 403): check that the \
         configured device_id or ground_id belongs to this token"
    )]
    WrongScope {
        /// Which kind of token was checked.
        kind: TokenKind,
    },
    /// The configuration is wrong (base URL, timeouts, MFA field names, a token that cannot be sent).
    #[error("{problem}")]
    BadConfig {
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The TOTP seed cannot be used.
    #[error(
        "the TOTP seed is not usable: {problem}; put the base32 seed shown when MFA was set up (letters A-Z and \
         digits 2-7) in the totp_secret_file"
    )]
    BadTotpSeed {
        /// What is wrong (never the seed itself).
        problem: &'static str,
    },
}

fn describe(description: &Option<String>) -> String {
    match description {
        Some(text) if !text.trim().is_empty() => format!(" (server said: {text:?})"),
        _ => String::new(),
    }
}

fn clock_hint(code_clock: Option<CodeClock>) -> &'static str {
    match code_clock {
        None => " (check the gateway's clock if a TOTP seed is configured)",
        Some(CodeClock::Cloud) => {
            "; the code was computed from the configured TOTP seed at the cloud's own time, so check that the \
             totp_secret_file holds this account's seed"
        }
        Some(CodeClock::Local) => {
            "; the code was computed from the configured TOTP seed at this gateway's clock, which the cloud did not \
             confirm (its reply had no Date): check the gateway's clock"
        }
    }
}

fn retry_hint(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(wait) => format!(", asking to wait {} s", wait.as_secs()),
        None => String::new(),
    }
}

fn revoked_message(kind: TokenKind) -> String {
    match kind {
        TokenKind::User => "the access token was rejected (HTTP 401): it expired or the session was revoked; refresh \
                            it, and if that fails, log in again"
            .to_owned(),
        TokenKind::Device | TokenKind::Ground => format!(
            "the {kind} token was rejected (HTTP 401): it was deleted or revoked in the AllThingsTalk web UI; create \
             a new {kind} token there and use it instead"
        ),
    }
}

impl LoginError {
    /// Whether the failure is transient (retry with backoff) rather than a verdict (stop and ask a human).
    ///
    /// Only a 400 from `/login` (and the MFA-required answer, and a token check's 401/403) is a verdict;
    /// rate limiting, server errors, network trouble, timeouts and unreadable replies are transient.
    /// Configuration errors are not transient: retrying cannot fix them.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LoginError::RateLimited { .. }
                | LoginError::ServerError { .. }
                | LoginError::Network { .. }
                | LoginError::ConnectionLost { .. }
                | LoginError::Timeout { .. }
                | LoginError::ReplyTooLarge { .. }
                | LoginError::Malformed(_)
        )
    }

    /// Whether the request may have reached the server and been carried out although no answer was read: a
    /// timeout, or a connection that failed after it was made. A refresh that fails this way may have rotated
    /// the refresh token at the cloud; every other failure is known not to have (or is a verdict).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, LoginError::Timeout { .. } | LoginError::ConnectionLost { .. })
    }

    /// How long the server asked to wait before retrying (HTTP 429 with `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LoginError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// For a refused MFA code computed from a TOTP seed, the clock it was computed from: [`CodeClock::Local`]
    /// means this machine's wall clock, which nothing confirmed, so the refusal may be the clock's fault
    /// rather than a verdict on the seed. `None` for every other error and for codes the caller gave.
    pub fn code_clock(&self) -> Option<CodeClock> {
        match self {
            LoginError::BadMfaCode { code_clock, .. } => *code_clock,
            _ => None,
        }
    }

    /// The same error, marked (if it is a refused MFA code) as computed from a TOTP seed at `clock`.
    pub fn with_code_clock(self, clock: CodeClock) -> Self {
        match self {
            LoginError::BadMfaCode { description, .. } => {
                LoginError::BadMfaCode { description, code_clock: Some(clock) }
            }
            other => other,
        }
    }

    /// Whether the only way forward is a new interactive login (the session is lost or was never made).
    pub fn needs_login(&self) -> bool {
        matches!(
            self,
            LoginError::BadCredentials { .. }
                | LoginError::BadMfaCode { .. }
                | LoginError::MfaRequired
                | LoginError::RefreshRejected
                | LoginError::ClientRejected { .. }
                | LoginError::Rejected { .. }
                | LoginError::UnsupportedGrant { .. }
                | LoginError::MfaVariantsRefused { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let transient = [
            LoginError::RateLimited { retry_after: Some(Duration::from_secs(7)) },
            LoginError::ServerError { status: 503, excerpt: String::new() },
            LoginError::Network { detail: "connection reset".into() },
            LoginError::Timeout { after: Duration::from_secs(15) },
            LoginError::ReplyTooLarge { limit: 65536 },
            LoginError::Malformed(ReplyError::NotJson { status: 200, excerpt: "<html>".into() }),
        ];
        for error in &transient {
            assert!(error.is_transient(), "{error:?}");
            assert!(!error.needs_login(), "{error:?}");
        }
        let verdicts = [
            LoginError::BadCredentials { description: None },
            LoginError::BadMfaCode { description: None, code_clock: None },
            LoginError::BadMfaCode { description: None, code_clock: Some(CodeClock::Cloud) },
            LoginError::BadMfaCode { description: None, code_clock: Some(CodeClock::Local) },
            LoginError::MfaRequired,
            LoginError::RefreshRejected,
            LoginError::ClientRejected { step: Step::Refresh, description: None },
            LoginError::UnsupportedGrant { step: Step::Mfa },
            LoginError::MfaVariantsRefused { tried: vec!["grant_type = \"mfa\"".into()] },
            LoginError::Rejected { step: Step::Password, code: "x".into(), description: None },
        ];
        for error in &verdicts {
            assert!(!error.is_transient(), "{error:?}");
            assert!(error.needs_login(), "{error:?}");
            let message = error.to_string();
            assert!(message.contains("log in again") || message.contains("api."), "{error}");
            assert!(!message.contains("att-token"), "the protocol crate names no program: {message}");
        }
        for error in [
            LoginError::TokenRevoked { kind: TokenKind::Device },
            LoginError::WrongScope { kind: TokenKind::Ground },
            LoginError::BadConfig { problem: "x".into() },
            LoginError::BadTotpSeed { problem: "empty" },
        ] {
            assert!(!error.is_transient() && !error.needs_login(), "{error:?}");
        }
        assert_eq!(transient[0].retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(transient[1].retry_after(), None);
    }

    #[test]
    fn messages_say_what_to_do() {
        let refresh = LoginError::RefreshRejected.to_string();
        assert!(refresh.ends_with("log in again"), "{refresh}");
        let device = LoginError::TokenRevoked { kind: TokenKind::Device }.to_string();
        assert!(device.contains("device token") && device.contains("web UI"), "{device}");
        let user = LoginError::TokenRevoked { kind: TokenKind::User }.to_string();
        assert!(user.contains("log in again"), "{user}");
        let limited = LoginError::RateLimited { retry_after: Some(Duration::from_secs(30)) }.to_string();
        assert!(limited.contains("30 s") && limited.contains("retried"), "{limited}");
        let bad = LoginError::BadCredentials { description: Some("The user name or password is incorrect.".into()) };
        assert!(bad.to_string().contains("server said"), "{bad}");
        let typed = LoginError::BadMfaCode { description: None, code_clock: None };
        let cloud = typed.clone().with_code_clock(CodeClock::Cloud);
        let local = typed.clone().with_code_clock(CodeClock::Local);
        let cases = [
            (&typed, None, "check the gateway's clock if a TOTP seed"),
            (&cloud, Some(CodeClock::Cloud), "cloud's own time"),
            (&local, Some(CodeClock::Local), "check the gateway's clock"),
        ];
        for (error, clock, hint) in cases {
            assert_eq!(error.code_clock(), clock, "{error:?}");
            assert!(error.to_string().contains(hint), "{error}");
            assert!(error.needs_login() && !error.is_transient(), "{error:?}");
        }
        assert!(!cloud.to_string().contains("gateway's clock"), "{cloud}");
        let other = LoginError::RefreshRejected.with_code_clock(CodeClock::Local);
        assert_eq!((other.code_clock(), other), (None, LoginError::RefreshRejected));
        let mfa = LoginError::MfaRequired.to_string();
        assert!(mfa.contains("6-digit code"), "{mfa}");
    }
}
