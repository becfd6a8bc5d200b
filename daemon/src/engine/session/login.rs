//! Logins and logouts: a person's login (with its MFA step), the unattended login with the configured
//! credentials, and a logout.
//!
//! Credentials the cloud refused, and a logout, hold unattended login, and the hold is saved (`<name>.hold`, with a
//! salted fingerprint of the credentials, never them): only a `Login` or other credentials lift it, so a refused
//! password is never sent again on its own. Each refusal counts towards the account's lockout, and a fleet of
//! gateways restarting would multiply them. A refresh refused for a configuration reason (`invalid_client`, the
//! grant type) keeps the session and is tried again after the longest backoff.

use std::sync::Arc;

use login_flow::totp::CodeClock;
use token_model::plan::{self, Attempt, Grant, Outcome, RefreshTokenChange};
use token_model::secret::{MfaCode, Password};

use super::{SessionTask, clock_pair, now};
use crate::engine::cloud::{Cloud, CloudTokens, LoggedIn, LoginFailure};
use crate::engine::{EngineError, Event};
use crate::metrics::Ended;
use crate::state_file::HoldReason;

impl SessionTask {
    pub(super) async fn human_login(
        &mut self,
        username: String,
        password: Password,
        code: Option<MfaCode>,
    ) -> Result<i64, EngineError> {
        self.admitted(Attempt::Login).await?;
        let cloud = self.cloud()?;
        self.busy = true;
        self.publish(false);
        let result = cloud.login(&username, &password, code.as_ref(), self.mfa_variant.as_ref()).await;
        self.busy = false;
        match result {
            Ok(login) => {
                self.count(true, Ended::Success);
                let grant = self.keep_mfa_variant(&cloud, login);
                self.username = username;
                self.lift_hold().await;
                self.start_session(grant).await;
                tracing::info!(token = %self.name, "logged in");
                Ok(self.expires_at())
            }
            Err(failure) => {
                let transient = matches!(failure, LoginFailure::Transient { .. });
                self.count(true, if transient { Ended::Transient } else { Ended::Refused });
                // A human's failed login leaves the session as it was.
                self.publish(false);
                Err(self.login_error(failure))
            }
        }
    }

    /// Keeps the MFA step's names that worked, for this session's next login, and says so in the journal when
    /// they are not the configured ones (names only).
    fn keep_mfa_variant(&mut self, cloud: &Cloud, login: LoggedIn) -> CloudTokens {
        if let Some(variant) = login.mfa {
            if variant != *cloud.configured_mfa() && self.mfa_variant.as_ref() != Some(&variant) {
                tracing::info!(
                    token = %self.name,
                    "the MFA step worked with {} (not the configured names); set them in [api.mfa] to use them \
                     first",
                    variant.as_setting()
                );
            }
            self.mfa_variant = Some(variant);
        }
        login.tokens
    }

    fn login_error(&self, failure: LoginFailure) -> EngineError {
        let name = self.name.clone();
        match failure {
            // login-flow's message already says what was refused and what to do.
            LoginFailure::BadCredentials(why) => EngineError::LoginFailed { name, why },
            LoginFailure::MfaRequired => EngineError::MfaRequired(name),
            LoginFailure::BadMfaCode(_) => EngineError::MfaFailed(name),
            LoginFailure::Other(why) => EngineError::LoginFailed { name, why },
            LoginFailure::Transient { why, .. } => EngineError::Unavailable { name, why },
        }
    }

    /// A fresh session from a login grant.
    pub(super) async fn start_session(&mut self, grant: CloudTokens) {
        let pair = clock_pair();
        let change = if grant.refresh.is_some() { RefreshTokenChange::Rotated } else { RefreshTokenChange::Omitted };
        let facts = Grant::new(pair, grant.expires_in, change).with_server_times(grant.server_date, grant.issued);
        self.plan = Some(plan::Session::logged_in(&facts, self.policy(), self.unattended.is_some(), Self::jitter()));
        self.login_failures = 0;
        self.login_retry_at = None;
        match grant.refresh {
            Some(refresh) if self.policy().too_short(grant.expires_in) => {
                self.access = None;
                self.too_short(grant.access, refresh, grant.expires_in, pair).await;
            }
            Some(refresh) => self.take(grant.access, refresh, pair).await,
            None => {
                // No refresh token: this access token is the whole session.
                self.access = Some(Arc::new(grant.access));
                self.refresh = None;
                self.last_error = "the cloud granted no refresh token; log in again when this token lapses".to_owned();
                self.publish(true);
            }
        }
    }

    /// Logs in again with the configured credentials, if any. True when a session was established.
    pub(super) async fn login_unattended(&mut self) -> bool {
        if let Some(hold) = self.hold {
            tracing::debug!(token = %self.name, ?hold, "unattended login is held; waiting for a Login or other credentials");
            return false;
        }
        let Some(unattended) = self.unattended.clone() else { return false };
        let Ok(cloud) = self.cloud() else { return false };
        self.busy = true;
        self.publish(false);
        let known = self.mfa_variant.as_ref();
        let result = cloud
            .login_unattended(&unattended.username, &unattended.password, unattended.totp_seed.as_ref(), known)
            .await;
        self.busy = false;
        let pair = clock_pair();
        let policy = self.settings.policy.clone();
        match result {
            Ok(login) => {
                self.count(true, Ended::Success);
                let grant = self.keep_mfa_variant(&cloud, login);
                tracing::info!(token = %self.name, "logged in with the configured credentials");
                self.username = unattended.username;
                let had_session = self.plan.is_some();
                self.start_session(grant).await;
                if had_session {
                    self.publish(false);
                }
                true
            }
            Err(failure) => {
                // A code computed from a local clock that nothing confirms says nothing about the credentials: it
                // is retried (the next reply may carry the cloud's time), never taken as a verdict.
                let unconfirmed_code = matches!(failure, LoginFailure::BadMfaCode(Some(CodeClock::Local)))
                    && !self.settings.clock.confirmed();
                let transient = unconfirmed_code || matches!(failure, LoginFailure::Transient { .. });
                self.count(true, if transient { Ended::Transient } else { Ended::Refused });
                // The cloud judged the credentials themselves (not a client id or a grant type it refused).
                let refused_credentials =
                    !transient && matches!(failure, LoginFailure::BadCredentials(_) | LoginFailure::BadMfaCode(_));
                let retry_after = match &failure {
                    LoginFailure::Transient { retry_after, .. } => *retry_after,
                    _ => None,
                };
                self.last_error = format!("unattended login failed: {}", self.login_error(failure));
                tracing::warn!(token = %self.name, "{}", self.last_error);
                match &mut self.plan {
                    Some(plan) => {
                        let outcome = if transient { Outcome::Transient { retry_after } } else { Outcome::Verdict };
                        plan.apply(Attempt::Login, outcome, pair, &policy, Self::jitter());
                    }
                    None => {
                        self.login_failures = self.login_failures.saturating_add(1);
                        let delay = if transient {
                            policy.backoff(self.login_failures, Self::jitter()).max(retry_after.unwrap_or_default())
                        } else {
                            // A verdict: the configured credentials are wrong; try again rarely.
                            policy.backoff_max
                        };
                        self.login_retry_at = Some(now() + delay);
                    }
                }
                if !transient {
                    let reason = format!(
                        "{}; fix username, password_file or totp_secret_file in the config and reload, or run \
                         `att-token login {}`",
                        self.last_error,
                        self.name.as_str()
                    );
                    if refused_credentials {
                        // Sending refused credentials again only counts towards the account's lockout: held, also
                        // across restarts, until a person logs in or gives other credentials.
                        self.last_error = format!(
                            "{reason}; unattended login is held until then, also across restarts, so that the refused \
                             credentials are not sent again"
                        );
                        self.set_hold(HoldReason::Refused).await;
                    }
                    self.engine.emit(Event::AttentionNeeded { name: self.name.clone(), reason });
                }
                self.publish(false);
                false
            }
        }
    }

    pub(super) async fn logout(&mut self) -> Result<(), EngineError> {
        self.plan = None;
        self.access = None;
        self.refresh = None;
        self.saved_access = None;
        self.refresh_sent_at = None;
        self.in_doubt_since = None;
        self.last_error = "logged out".to_owned();
        if self.unattended.is_some() {
            self.last_error = "logged out; unattended login is suspended until `att-token login` or a reload with \
                               other credentials"
                .to_owned();
            self.set_hold(HoldReason::LoggedOut).await;
        }
        let result = self.remove_saved().await.map_err(|why| EngineError::Unavailable {
            name: self.name.clone(),
            why: format!("the saved session could not be removed: {why}"),
        });
        tracing::info!(token = %self.name, "logged out");
        self.publish(true);
        result
    }
}
