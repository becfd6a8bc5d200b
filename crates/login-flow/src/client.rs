//! [`LoginClient`]: configuration plus a transport, running each protocol step as build → send → read.

use std::time::{Instant, SystemTime};

use token_model::ids::{DeviceId, GroundId, TokenKind};
use token_model::reply::TokenGrant;
use token_model::secret::{AccessToken, MfaCode, RefreshToken, StaticToken, TotpSeed};

use crate::config::{ApiConfig, MfaFields};
use crate::error::LoginError;
use crate::http::HttpTransport;
use crate::steps::{Credentials, MfaPending, PasswordOutcome};
use crate::totp::{self, TotpGenerator};
use crate::transport::{Request, Response, Transport, TransportError};
use crate::variants::{self, NotProcessed};
use crate::wire;

/// A login's tokens with the MFA names that completed it, for the caller to keep and try first next time.
#[derive(Debug)]
pub struct LoginGrant {
    /// The tokens.
    pub grant: TokenGrant,
    /// The MFA step's names that the cloud took; `None` when the account asked for no code.
    pub mfa_variant: Option<MfaFields>,
}

/// Which names the MFA step uses: the configured ones only, or each variant in turn (a known one first).
#[derive(Clone, Copy)]
enum Names<'a> {
    Configured,
    Trying(Option<&'a MfaFields>),
}

/// Where the MFA code comes from: the caller, or a TOTP seed at the cloud's time.
#[derive(Clone, Copy)]
enum CodeFrom<'a> {
    Given(&'a MfaCode),
    Seed(&'a TotpSeed),
}

/// Talks the `/login` protocol and the token checks to one AllThingsTalk instance.
#[derive(Debug, Clone)]
pub struct LoginClient<T = HttpTransport> {
    config: ApiConfig,
    transport: T,
}

impl LoginClient<HttpTransport> {
    /// A client over HTTPS for `config`.
    pub fn new(config: ApiConfig) -> Result<Self, LoginError> {
        let transport = HttpTransport::new(&config)?;
        Ok(Self { config, transport })
    }

    /// A client over HTTPS for `config`, with a TLS configuration already set up ([`crate::tls::in_background`]).
    pub fn with_tls(config: ApiConfig, tls: rustls::ClientConfig) -> Result<Self, LoginError> {
        let transport = HttpTransport::with_tls(&config, tls)?;
        Ok(Self { config, transport })
    }
}

impl<T: Transport> LoginClient<T> {
    /// A client over any transport (tests, other stacks).
    pub fn with_transport(config: ApiConfig, transport: T) -> Result<Self, LoginError> {
        config.validate()?;
        Ok(Self { config, transport })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ApiConfig {
        &self.config
    }

    /// Step 1: the password grant. Gives tokens, or a pending login that needs an MFA code (carrying the
    /// reply's `Date` and the monotonic instant it arrived).
    pub async fn password_grant(&self, credentials: &Credentials) -> Result<PasswordOutcome, LoginError> {
        let response = self.exchange(wire::password_grant_request(&self.config.client_id, credentials)).await?;
        let received = Instant::now();
        Ok(match wire::read_password_reply(&response)? {
            PasswordOutcome::MfaRequired(pending) => PasswordOutcome::MfaRequired(pending.with_received(received)),
            granted => granted,
        })
    }

    /// Step 2: completes a pending login with a code, under the configured names (`[api.mfa]`) only. The
    /// challenge is used up whatever the outcome.
    pub async fn complete_mfa(&self, pending: MfaPending, code: &MfaCode) -> Result<TokenGrant, LoginError> {
        Ok(self.mfa_step(pending, code, Names::Configured).await?.grant)
    }

    /// Both steps in one call, as the D-Bus `Login` method needs: the password grant, then the MFA step with
    /// `code` (under the configured names) if the account asks for one. Without a code, an MFA account gives
    /// [`LoginError::MfaRequired`].
    pub async fn login_with_code(
        &self,
        credentials: &Credentials,
        code: Option<&MfaCode>,
    ) -> Result<TokenGrant, LoginError> {
        Ok(self.login_steps(credentials, code.map(CodeFrom::Given), Names::Configured).await?.grant)
    }

    /// An unattended login: the password grant, then (if asked) the MFA step with a TOTP code, under the
    /// configured names. The seed is checked before anything is sent.
    ///
    /// The code is computed at the cloud's time when the challenge's reply carried a `Date` (that date plus the
    /// time elapsed since, on the monotonic clock), so a gateway whose wall clock is off still logs in; without
    /// a `Date` it falls back to the local clock. A refused code says which clock it came from
    /// ([`LoginError::code_clock`]).
    pub async fn login_with_totp(&self, credentials: &Credentials, seed: &TotpSeed) -> Result<TokenGrant, LoginError> {
        Ok(self.login_steps(credentials, Some(CodeFrom::Seed(seed)), Names::Configured).await?.grant)
    }

    /// Like [`LoginClient::login_with_code`], but the MFA step tries the names of [`variants::mfa_variants`]
    /// (`known` first, then `[api.mfa]`, then the built-in ones) until the cloud processes one; the names that
    /// worked come back with the tokens. See [`LoginClient::complete_mfa_trying_variants`].
    pub async fn login_with_code_trying_variants(
        &self,
        credentials: &Credentials,
        code: Option<&MfaCode>,
        known: Option<&MfaFields>,
    ) -> Result<LoginGrant, LoginError> {
        self.login_steps(credentials, code.map(CodeFrom::Given), Names::Trying(known)).await
    }

    /// Like [`LoginClient::login_with_totp`], but the MFA step tries the names of [`variants::mfa_variants`]
    /// as [`LoginClient::login_with_code_trying_variants`] does. The code is computed once.
    pub async fn login_with_totp_trying_variants(
        &self,
        credentials: &Credentials,
        seed: &TotpSeed,
        known: Option<&MfaFields>,
    ) -> Result<LoginGrant, LoginError> {
        self.login_steps(credentials, Some(CodeFrom::Seed(seed)), Names::Trying(known)).await
    }

    /// Step 2 under each of [`variants::mfa_variants`] in turn, until one is processed: the tokens and the names
    /// that worked, or the first answer that is not "not processed" ([`variants::not_processed`]), or
    /// [`LoginError::MfaVariantsRefused`] naming every variant tried. A variant whose grant type the cloud
    /// already called unsupported is skipped. The challenge is used up whatever the outcome.
    pub async fn complete_mfa_trying_variants(
        &self,
        pending: MfaPending,
        code: &MfaCode,
        known: Option<&MfaFields>,
    ) -> Result<LoginGrant, LoginError> {
        self.mfa_step(pending, code, Names::Trying(known)).await
    }

    /// The password grant, then (if the account asks) the MFA step with the given code or one computed from
    /// the seed (checked before anything is sent).
    async fn login_steps(
        &self,
        credentials: &Credentials,
        code: Option<CodeFrom<'_>>,
        names: Names<'_>,
    ) -> Result<LoginGrant, LoginError> {
        let generator = match code {
            Some(CodeFrom::Seed(seed)) => Some(TotpGenerator::from_seed(seed)?),
            _ => None,
        };
        let pending = match self.password_grant(credentials).await? {
            PasswordOutcome::Granted(grant) => return Ok(LoginGrant { grant, mfa_variant: None }),
            PasswordOutcome::MfaRequired(pending) => pending,
        };
        match (code, generator) {
            (Some(CodeFrom::Given(code)), _) => self.mfa_step(pending, code, names).await,
            (_, Some(generator)) => {
                let (at, clock) =
                    totp::code_time(pending.server_date(), pending.since_received(Instant::now()), SystemTime::now());
                tracing::debug!(clock = clock.as_str(), "MFA code computed from the TOTP seed");
                let code = generator.code_at(at);
                self.mfa_step(pending, &code, names).await.map_err(|error| error.with_code_clock(clock))
            }
            _ => Err(LoginError::MfaRequired),
        }
    }

    /// The MFA step under `names`. Under the configured names only, every answer is final.
    async fn mfa_step(&self, pending: MfaPending, code: &MfaCode, names: Names<'_>) -> Result<LoginGrant, LoginError> {
        let (variants, single) = match names {
            Names::Configured => (vec![self.config.mfa.clone()], true),
            Names::Trying(known) => (variants::mfa_variants(&self.config.mfa, known), false),
        };
        let mut tried = Vec::new();
        let mut unsupported: Vec<String> = Vec::new();
        for variant in variants {
            if unsupported.contains(&variant.grant_type) {
                continue;
            }
            // The same code goes out again only after an answer that shows the cloud did not process the request
            // (an unknown grant type or a missing field): the code was neither checked nor used. After a refused
            // code, or any answer that leaves that in doubt, the loop has already returned.
            let request = wire::mfa_request(&self.config.client_id, &variant, pending.challenge(), code);
            let error = match wire::read_mfa_reply(&self.exchange(request).await?) {
                Ok(grant) => return Ok(LoginGrant { grant, mfa_variant: Some(variant) }),
                Err(error) => error,
            };
            let setting = variant.as_setting();
            match variants::not_processed(&error) {
                Some(NotProcessed::GrantType) if !single => unsupported.push(variant.grant_type),
                Some(NotProcessed::MissingField) if !single => {}
                _ => return Err(error),
            }
            tracing::debug!(names = setting.as_str(), "the cloud did not take the MFA step under these names");
            tried.push(setting);
        }
        Err(LoginError::MfaVariantsRefused { tried })
    }

    /// Trades a refresh token for new tokens. Never run two refreshes with the same refresh token.
    pub async fn refresh(&self, refresh_token: &RefreshToken) -> Result<TokenGrant, LoginError> {
        let response = self.exchange(wire::refresh_request(&self.config.client_id, refresh_token)).await?;
        wire::read_refresh_reply(&response)
    }

    /// Checks a user's access token with `GET /me/grounds`.
    pub async fn check_user_token(&self, token: &AccessToken) -> Result<(), LoginError> {
        let response = self.exchange(wire::user_probe_request(token)).await?;
        wire::read_probe_reply(TokenKind::User, &response)
    }

    /// Checks a device token with `GET /device/{id}`.
    pub async fn check_device_token(&self, token: &StaticToken, device: &DeviceId) -> Result<(), LoginError> {
        let response = self.exchange(wire::device_probe_request(token, device)).await?;
        wire::read_probe_reply(TokenKind::Device, &response)
    }

    /// Checks a ground token with `GET /ground/{id}/devices` and returns the ground's device ids.
    pub async fn ground_devices(&self, token: &StaticToken, ground: &GroundId) -> Result<Vec<DeviceId>, LoginError> {
        let response = self.exchange(wire::ground_probe_request(token, ground)).await?;
        wire::read_ground_probe_reply(&response)
    }

    /// Sends one request and logs method, path, status and duration (never a body, header value or secret).
    async fn exchange(&self, request: Request) -> Result<Response, LoginError> {
        let method = request.method.as_str();
        let path = request.path.clone();
        let started = Instant::now();
        let result = self.transport.send(request).await;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(response) => {
                tracing::debug!(method, path, status = response.status, elapsed_ms, "AllThingsTalk request")
            }
            Err(error) => tracing::debug!(method, path, %error, elapsed_ms, "AllThingsTalk request failed"),
        }
        result.map_err(from_transport)
    }
}

fn from_transport(error: TransportError) -> LoginError {
    match error {
        TransportError::Timeout(after) => LoginError::Timeout { after },
        TransportError::Connect(detail) => LoginError::Network { detail: format!("could not connect: {detail}") },
        TransportError::Io(detail) => LoginError::ConnectionLost { detail },
        TransportError::TooLarge(limit) => LoginError::ReplyTooLarge { limit },
        TransportError::InvalidRequest(problem) => LoginError::BadConfig {
            problem: format!("{problem}: check the token file holds only the token (no quotes or line breaks inside)"),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::{Duration, SystemTime};

    use token_model::secret::{ExposeSecret, Password};

    use super::*;

    /// Answers from a script and records what was sent.
    struct Scripted {
        replies: Mutex<Vec<(u16, &'static str)>>,
        sent: Mutex<Vec<(String, String)>>,
        /// The `Date` header of every reply.
        date: Option<String>,
    }

    impl Scripted {
        fn new(replies: &[(u16, &'static str)]) -> Self {
            Self {
                replies: Mutex::new(replies.iter().rev().copied().collect()),
                sent: Mutex::new(Vec::new()),
                date: None,
            }
        }

        fn sent(&self) -> Vec<(String, String)> {
            self.sent.lock().expect("not poisoned").clone()
        }
    }

    impl Transport for Scripted {
        async fn send(&self, request: Request) -> Result<Response, TransportError> {
            let form = request.form.as_ref().map(|form| form.expose_secret().to_owned()).unwrap_or_default();
            self.sent.lock().expect("not poisoned").push((request.path.clone(), form));
            let Some((status, body)) = self.replies.lock().expect("not poisoned").pop() else {
                return Err(TransportError::Io("the script ran out".to_owned()));
            };
            Ok(Response {
                status,
                date: self.date.clone(),
                retry_after: None,
                body: body.as_bytes().to_vec(),
                received_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            })
        }
    }

    const CHALLENGE: &str = r#"{"MfaUid":"m-1","UserId":"u-1"}"#;
    const GRANT: &str = r#"{"access_token":"AT","expires_in":3599,"refresh_token":"RT"}"#;

    fn credentials() -> Credentials {
        Credentials::new("alice@example.com", Password::new("pw"))
    }

    fn client(script: &[(u16, &'static str)]) -> LoginClient<Scripted> {
        LoginClient::with_transport(ApiConfig::default(), Scripted::new(script)).expect("valid config")
    }

    #[tokio::test]
    async fn login_with_code_runs_both_steps_in_order() {
        let client = client(&[(200, CHALLENGE), (200, GRANT)]);
        let code = MfaCode::parse("123456").expect("six digits");
        let grant = client.login_with_code(&credentials(), Some(&code)).await.expect("granted");
        assert_eq!(grant.access_token.expose_secret(), "AT");
        let sent = client.transport.sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].1, "grant_type=password&username=alice%40example.com&password=pw&client_id=web");
        assert_eq!(sent[1].1, "grant_type=mfa&client_id=web&mfa_uid=m-1&user_id=u-1&code=123456");
    }

    const UNSUPPORTED: &str = r#"{"error":"unsupported_grant_type"}"#;
    const MISSING: &str = r#"{"error":"invalid_request","error_description":"The field mfaUid is missing."}"#;

    /// The MFA steps a scripted login sent (the password grant left out), and its result.
    async fn login_trying(script: &[(u16, &'static str)]) -> (Vec<String>, Result<LoginGrant, LoginError>) {
        let client = client(script);
        let code = MfaCode::parse("123456").expect("six digits");
        let result = client.login_with_code_trying_variants(&credentials(), Some(&code), None).await;
        let sent = client.transport.sent().into_iter().skip(1).map(|(_, form)| form).collect();
        (sent, result)
    }

    #[tokio::test]
    async fn not_processed_answers_lead_to_the_next_variant_with_the_same_code() {
        let (sent, result) = login_trying(&[(200, CHALLENGE), (400, MISSING), (400, MISSING), (200, GRANT)]).await;
        let grant = result.expect("the third variant works");
        assert_eq!(
            sent,
            [
                "grant_type=mfa&client_id=web&mfa_uid=m-1&user_id=u-1&code=123456",
                "grant_type=mfa&client_id=web&MfaUid=m-1&UserId=u-1&code=123456",
                "grant_type=mfa&client_id=web&mfaUid=m-1&userId=u-1&code=123456",
            ]
        );
        let variant = grant.mfa_variant.expect("an MFA step ran");
        assert_eq!((variant.uid_field.as_str(), variant.user_field.as_str()), ("mfaUid", "userId"));
        // An unknown grant type skips the other variants with that grant type.
        let (sent, result) = login_trying(&[(200, CHALLENGE), (400, UNSUPPORTED), (200, GRANT)]).await;
        assert_eq!(sent[1], "grant_type=mfa_code&client_id=web&mfa_uid=m-1&user_id=u-1&code=123456");
        assert_eq!(result.expect("granted").mfa_variant.expect("MFA").grant_type, "mfa_code");
    }

    #[tokio::test]
    async fn a_refused_code_or_a_failure_is_never_followed_by_another_variant() {
        let refused = r#"{"error":"invalid_grant"}"#;
        for (answer, expected) in [
            ((400, refused), "BadMfaCode"),
            ((503, "unavailable"), "ServerError"),
            ((400, r#"{"error":"invalid_request"}"#), "Rejected"),
        ] {
            // After a not-processed answer, and as the first answer.
            for script in [vec![(200, CHALLENGE), (400, MISSING), answer], vec![(200, CHALLENGE), answer]] {
                let steps = script.len() - 1;
                let (sent, result) = login_trying(&script).await;
                let error = result.unwrap_err();
                assert!(format!("{error:?}").starts_with(expected), "{error:?}");
                assert_eq!(sent.len(), steps, "nothing more is sent: {sent:?}");
            }
        }
        // A lost connection: the code may have been checked.
        let (sent, result) = login_trying(&[(200, CHALLENGE), (400, UNSUPPORTED)]).await;
        assert!(matches!(result.unwrap_err(), LoginError::ConnectionLost { .. }));
        assert_eq!(sent.len(), 2);
    }

    #[tokio::test]
    async fn after_every_variant_the_error_names_them_and_the_setting() {
        let (sent, result) = login_trying(&[
            (200, CHALLENGE),
            (400, MISSING),
            (400, MISSING),
            (400, MISSING),
            (400, UNSUPPORTED),
            (400, UNSUPPORTED),
        ])
        .await;
        assert_eq!(sent.len(), crate::variants::KNOWN_VARIANTS.len());
        let error = result.unwrap_err();
        let LoginError::MfaVariantsRefused { tried } = &error else { panic!("{error:?}") };
        assert_eq!(tried.len(), sent.len());
        let message = error.to_string();
        for name in ["grant_type = \"mfa\"", "uid_field = \"mfaUid\"", "grant_type = \"otp\"", "[api.mfa]"] {
            assert!(message.contains(name), "{name} in {message}");
        }
        assert!(!message.contains("123456") && !message.contains("m-1"), "names only: {message}");
        assert!(error.needs_login() && !error.is_transient());
    }

    #[tokio::test]
    async fn the_single_variant_calls_stay_with_the_configured_names() {
        let client = client(&[(200, CHALLENGE), (400, UNSUPPORTED)]);
        let code = MfaCode::parse("123456").expect("six digits");
        let error = client.login_with_code(&credentials(), Some(&code)).await.unwrap_err();
        assert_eq!(error, LoginError::UnsupportedGrant { step: crate::Step::Mfa });
        assert_eq!(client.transport.sent().len(), 2);
    }

    #[tokio::test]
    async fn an_account_without_mfa_needs_no_code() {
        let client = client(&[(200, GRANT)]);
        let code = MfaCode::parse("123456").expect("six digits");
        client.login_with_code(&credentials(), Some(&code)).await.expect("granted");
        assert_eq!(client.transport.sent().len(), 1, "the code is not sent when not asked for");
    }

    #[tokio::test]
    async fn no_code_stops_after_the_challenge() {
        let client = client(&[(400, CHALLENGE)]);
        assert_eq!(client.login_with_code(&credentials(), None).await.unwrap_err(), LoginError::MfaRequired);
        assert_eq!(client.transport.sent().len(), 1);
    }

    /// The code the unattended login sent, and the clock its refusal names.
    async fn refused_totp_login(date: Option<SystemTime>) -> (String, Option<crate::totp::CodeClock>) {
        let mut transport = Scripted::new(&[(200, CHALLENGE), (400, r#"{"error":"invalid_grant"}"#)]);
        transport.date = date.map(|date| token_model::reply::format_http_date(date).expect("a recent date"));
        let client = LoginClient::with_transport(ApiConfig::default(), transport).expect("valid config");
        let error = client.login_with_totp(&credentials(), &TotpSeed::new(SEED)).await.unwrap_err();
        assert!(matches!(error, LoginError::BadMfaCode { .. }), "{error:?}");
        let sent = client.transport.sent();
        let code = sent[1].1.rsplit_once("code=").expect("a code was sent").1.to_owned();
        (code, error.code_clock())
    }

    const SEED: &str = "JBSWY3DPEHPK3PXP";

    /// The codes of the 30-second step holding `at` and of the next one (the test may cross a boundary).
    fn codes_around(at: SystemTime) -> [String; 2] {
        let generator = TotpGenerator::from_seed(&TotpSeed::new(SEED)).expect("a valid seed");
        [at, at + Duration::from_secs(30)].map(|t| generator.code_at(t).expose_secret().to_owned())
    }

    #[tokio::test]
    async fn the_unattended_code_is_computed_at_the_clouds_date() {
        use crate::totp::CodeClock;
        // The cloud is ten minutes ahead (then behind) of this machine.
        for shift in [600, -600i64] {
            let now = SystemTime::now();
            let cloud_now = if shift > 0 {
                now + Duration::from_secs(shift.unsigned_abs())
            } else {
                now - Duration::from_secs(shift.unsigned_abs())
            };
            let (code, clock) = refused_totp_login(Some(cloud_now)).await;
            assert_eq!(clock, Some(CodeClock::Cloud));
            // The Date drops sub-seconds: the code is that of the cloud's step (or the next one).
            assert!(codes_around(cloud_now - Duration::from_secs(1)).contains(&code), "shift {shift}");
            assert!(!codes_around(now - Duration::from_secs(1)).contains(&code), "not the local clock's code");
        }
        // No Date: the local clock, and the refusal says so.
        let now = SystemTime::now();
        let (code, clock) = refused_totp_login(None).await;
        assert_eq!(clock, Some(CodeClock::Local));
        assert!(codes_around(now - Duration::from_secs(1)).contains(&code));
    }

    #[tokio::test]
    async fn a_bad_seed_sends_nothing() {
        let client = client(&[]);
        let error = client.login_with_totp(&credentials(), &TotpSeed::new("1")).await.unwrap_err();
        assert!(matches!(error, LoginError::BadTotpSeed { .. }), "{error:?}");
        assert!(client.transport.sent().is_empty());
    }

    #[tokio::test]
    async fn transport_failures_become_transient_errors() {
        let client = client(&[]);
        let error = client.refresh(&RefreshToken::new("rt")).await.unwrap_err();
        assert!(matches!(error, LoginError::ConnectionLost { .. }) && error.is_transient(), "{error:?}");
        assert!(error.outcome_unknown(), "a connection lost after the request may have carried it out");
        let refused = from_transport(TransportError::Connect("refused".to_owned()));
        assert!(refused.is_transient() && !refused.outcome_unknown(), "no connection, no request: {refused:?}");
        assert_eq!(
            from_transport(TransportError::Timeout(Duration::from_secs(3))),
            LoginError::Timeout { after: Duration::from_secs(3) }
        );
        assert_eq!(from_transport(TransportError::TooLarge(10)), LoginError::ReplyTooLarge { limit: 10 });
        assert!(!from_transport(TransportError::InvalidRequest("bad header")).is_transient());
    }
}
