//! [`LoginClient`]: configuration plus a transport, running each protocol step as build → send → read.

use std::time::{Instant, SystemTime};

use token_model::ids::{DeviceId, GroundId, TokenKind};
use token_model::reply::TokenGrant;
use token_model::secret::{AccessToken, MfaCode, RefreshToken, StaticToken, TotpSeed};

use crate::config::ApiConfig;
use crate::error::LoginError;
use crate::http::HttpTransport;
use crate::steps::{Credentials, MfaPending, PasswordOutcome};
use crate::totp::TotpGenerator;
use crate::transport::{Request, Response, Transport, TransportError};
use crate::wire;

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

    /// Step 1: the password grant. Gives tokens, or a pending login that needs an MFA code.
    pub async fn password_grant(&self, credentials: &Credentials) -> Result<PasswordOutcome, LoginError> {
        let response = self.exchange(wire::password_grant_request(&self.config.client_id, credentials)).await?;
        wire::read_password_reply(&response)
    }

    /// Step 2: completes a pending login with a code. The challenge is used up whatever the outcome.
    pub async fn complete_mfa(&self, pending: MfaPending, code: &MfaCode) -> Result<TokenGrant, LoginError> {
        let request = wire::mfa_request(&self.config.client_id, &self.config.mfa, pending.challenge(), code);
        drop(pending);
        let response = self.exchange(request).await?;
        wire::read_mfa_reply(&response)
    }

    /// Both steps in one call, as the D-Bus `Login` method needs: the password grant, then the MFA step with
    /// `code` if the account asks for one. Without a code, an MFA account gives [`LoginError::MfaRequired`].
    pub async fn login_with_code(
        &self,
        credentials: &Credentials,
        code: Option<&MfaCode>,
    ) -> Result<TokenGrant, LoginError> {
        match self.password_grant(credentials).await? {
            PasswordOutcome::Granted(grant) => Ok(grant),
            PasswordOutcome::MfaRequired(pending) => match code {
                Some(code) => self.complete_mfa(pending, code).await,
                None => Err(LoginError::MfaRequired),
            },
        }
    }

    /// An unattended login: the password grant, then (if asked) the MFA step with the TOTP code current when
    /// the challenge arrives. The seed is checked before anything is sent.
    pub async fn login_with_totp(&self, credentials: &Credentials, seed: &TotpSeed) -> Result<TokenGrant, LoginError> {
        let generator = TotpGenerator::from_seed(seed)?;
        match self.password_grant(credentials).await? {
            PasswordOutcome::Granted(grant) => Ok(grant),
            PasswordOutcome::MfaRequired(pending) => {
                let code = generator.code_at(SystemTime::now());
                self.complete_mfa(pending, &code).await
            }
        }
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
        TransportError::Io(detail) => LoginError::Network { detail },
        TransportError::TooLarge(limit) => LoginError::ReplyTooLarge { limit },
        TransportError::InvalidRequest(problem) => LoginError::BadConfig {
            problem: format!("{problem}: check the token file holds only the token (no quotes or line breaks inside)"),
        },
    }
}
