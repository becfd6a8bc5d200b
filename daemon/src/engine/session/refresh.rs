//! Serving callers and refreshing: what a caller may make the session do, one refresh at a time, and what
//! each answer of the cloud does to the session.
//!
//! A refused refresh token is blamed on a lost answer ("Most likely cause: a refresh sent at ... was carried out
//! by the cloud") only when a request's outcome was in doubt: a refresh found unanswered at restart
//! (`refresh_sent_at`) or one that timed out or lost its connection after it was sent. Any other refusal is told
//! as a refusal: blaming a crash that never happened would send the operator looking in the wrong place.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use token_model::plan::{self, AdminAction, Attempt, CallerAction, Grant, Outcome, RefreshTokenChange};
use token_model::secret::{AccessToken, RefreshToken};
use token_model::time::{self, ClockPair};

use super::{SessionTask, clock_pair, human, now};
use crate::engine::cloud::Failure;
use crate::engine::{EngineError, Event, Served, TokenValue, unix_seconds};
use crate::metrics::{self, Ended};

impl SessionTask {
    /// Counts a refresh (`login` false) or a login (`login` true) of this token that ended with `outcome`.
    pub(super) fn count(&self, login: bool, outcome: Ended) {
        metrics::tokens().attempt(&self.name, login, outcome, unix_seconds(SystemTime::now()));
    }

    fn serving(&self, wanted: Duration) -> Option<Served> {
        let token = self.access.as_ref()?;
        let plan = self.plan.as_ref()?;
        plan.valid_for(now(), wanted, self.policy())
            .then(|| Served { token: TokenValue::Access(token.clone()), expires_at: self.expires_at() })
    }

    /// `GetTokenValidFor`: serves the token in hand when it is valid long enough; otherwise does only what the
    /// plan allows a caller to cause ([`plan::Session::for_caller`]): a refresh when the token is past half its
    /// life, or one early attempt per `caller_retry_gap` while retrying. A caller never causes a login.
    pub(super) async fn ensure_valid_for(&mut self, wanted: Duration, uid: u32) -> Result<Served, EngineError> {
        if let Some(served) = self.serving(wanted) {
            return Ok(served);
        }
        let now = now();
        let Some(plan) = self.plan.as_ref() else {
            tracing::debug!(token = %self.name, uid, "GetTokenValidFor: no session, and a caller never logs in");
            return Err(self.needs_login_error());
        };
        let policy = self.policy().clone();
        let decision = plan.for_caller(now, wanted, &policy);
        tracing::debug!(token = %self.name, uid, wanted_s = wanted.as_secs(), ?decision, "GetTokenValidFor");
        match decision {
            CallerAction::Serve => {}
            CallerAction::NeedsLogin => return Err(self.needs_login_error()),
            CallerAction::TooLong { most } => {
                let life = plan.access_lifetime().unwrap_or_default();
                return Err(EngineError::InvalidArgs(format!(
                    "{:?}'s access tokens live {} s and are served until {} s before they expire, so none is valid \
                     for {} s; ask for at most {} s",
                    self.name.as_str(),
                    life.as_secs(),
                    policy.margin_for(life).as_secs(),
                    wanted.as_secs(),
                    most.as_secs()
                )));
            }
            CallerAction::Refuse { valid_for, until } => {
                let when = until.map(|at| clock_pair().wall_at(at).to_string());
                let why = match (valid_for.is_zero(), when) {
                    (true, _) if !self.last_error.is_empty() => self.last_error.clone(),
                    (true, Some(when)) => format!("no valid token yet; the next attempt is due at {when}"),
                    (true, None) => "no valid token yet".to_owned(),
                    (false, Some(when)) => format!(
                        "the token in hand is valid for {} s more, not {} s, and is not refreshed early for a \
                         caller; ask for at most {} s, or again after {when}",
                        valid_for.as_secs(),
                        wanted.as_secs(),
                        valid_for.as_secs()
                    ),
                    (false, None) => format!(
                        "the token in hand is valid for {} s more, not {} s; ask for at most {} s",
                        valid_for.as_secs(),
                        wanted.as_secs(),
                        valid_for.as_secs()
                    ),
                };
                return Err(EngineError::Unavailable { name: self.name.clone(), why });
            }
            CallerAction::RefreshNow => self.refresh_now().await?,
        }
        self.serving(wanted).ok_or_else(|| EngineError::Unavailable {
            name: self.name.clone(),
            why: format!(
                "the cloud's tokens do not stay valid for {} more seconds; ask for a shorter time",
                wanted.as_secs()
            ),
        })
    }

    /// A reader found nothing to serve: the one early attempt the plan allows a caller, if any.
    pub(super) async fn nudge(&mut self, uid: u32) {
        let Some(plan) = self.plan.as_ref() else { return };
        if self.serving(Duration::ZERO).is_some() {
            return;
        }
        if plan.for_caller(now(), Duration::ZERO, self.policy()) == CallerAction::RefreshNow {
            tracing::debug!(token = %self.name, uid, "a reader found no token: one early attempt");
            let _ = self.refresh_now().await;
        }
    }

    /// Waits until the plan lets an admin's request be sent ([`plan::Session::for_admin`]: the floor between two
    /// requests holds whoever asks), or refuses it while the cloud's `Retry-After` lasts, which no caller moves.
    pub(super) async fn admitted(&self, attempt: Attempt) -> Result<(), EngineError> {
        match plan::for_admin(self.plan.as_ref(), attempt, now(), self.policy()) {
            AdminAction::SendAt(at) => {
                if at > now() {
                    tracing::debug!(token = %self.name, "waiting for the refresh floor before the next request");
                    crate::clock::sleep_until(at).await;
                }
                Ok(())
            }
            AdminAction::Refuse { until } => {
                let why = format!(
                    "the cloud asked (HTTP 429 or 503 with Retry-After) that no request be sent before {}; the daemon \
                     sends the next one then, on its own; ask again after that",
                    clock_pair().wall_at(until)
                );
                Err(EngineError::Unavailable { name: self.name.clone(), why })
            }
        }
    }

    /// An admin's `Refresh` (and the health probe's, which asks as one): a refresh when the plan lets it. Returns
    /// the new expiry.
    pub(super) async fn admin_refresh(&mut self) -> Result<i64, EngineError> {
        self.admitted(Attempt::Refresh).await?;
        self.refresh_now().await.map(|()| self.expires_at())
    }

    /// One refresh with the current refresh token, now: whoever calls this asked the plan first (its schedule,
    /// [`plan::Session::for_caller`] or [`plan::Session::for_admin`]). Never two at once: only this task refreshes.
    pub(super) async fn refresh_now(&mut self) -> Result<(), EngineError> {
        let cloud = self.cloud()?;
        let Some(sent) = self.refresh.clone() else { return Err(self.needs_login_error()) };
        self.busy = true;
        self.publish(false);
        // On disk before it is sent: should the answer never be saved (a crash, a lost reply), a refused refresh
        // token can then be explained.
        if self.refresh_sent_at.is_none()
            && let Some(access) = self.saved_access.clone()
        {
            self.refresh_sent_at = Some(unix_seconds(SystemTime::now()));
            self.save(&access, &sent, clock_pair()).await;
        }
        let sent_at = self.refresh_sent_at.unwrap_or_else(|| unix_seconds(SystemTime::now()));
        let outcome = cloud.refresh(&sent).await;
        self.busy = false;
        let pair = clock_pair();
        let policy = self.settings.policy.clone();
        match outcome {
            Ok(grant) => {
                let change = RefreshTokenChange::of(&sent, grant.refresh.as_ref());
                let facts =
                    Grant::new(pair, grant.expires_in, change).with_server_times(grant.server_date, grant.issued);
                if let Some(plan) = &mut self.plan {
                    plan.apply(Attempt::Refresh, Outcome::Success(facts), pair, &policy, Self::jitter());
                }
                let refresh = grant.refresh.unwrap_or(sent);
                if policy.too_short(grant.expires_in) {
                    self.count(false, Ended::Transient);
                    self.too_short(grant.access, refresh, grant.expires_in, pair).await;
                    return Err(self.unavailable());
                }
                self.take(grant.access, refresh, pair).await;
                self.count(false, Ended::Success);
                tracing::info!(token = %self.name, expires_in_s = grant.expires_in.as_secs(), "refreshed the access token");
                Ok(())
            }
            Err(Failure::Transient { why, retry_after, in_doubt }) => {
                self.count(false, Ended::Transient);
                if in_doubt {
                    self.in_doubt_since = Some(self.in_doubt_since.unwrap_or(sent_at));
                }
                if let Some(plan) = &mut self.plan {
                    plan.apply(Attempt::Refresh, Outcome::Transient { retry_after }, pair, &policy, Self::jitter());
                }
                self.last_error = why;
                tracing::warn!(token = %self.name, "refresh failed for a transient reason, will retry: {}", self.last_error);
                self.publish(false);
                Err(self.unavailable())
            }
            Err(Failure::Verdict { why, ends_session: false }) => {
                // Not about the refresh token (a client id or grant type the cloud refused): the configuration is
                // wrong, and the session stays, saved, for the next try, which waits the longest backoff.
                self.count(false, Ended::Refused);
                let retry_after = Some(policy.backoff_max);
                if let Some(plan) = &mut self.plan {
                    plan.apply(Attempt::Refresh, Outcome::Transient { retry_after }, pair, &policy, Self::jitter());
                }
                let message = format!(
                    "the cloud refused the refresh for a reason other than the refresh token: {why}; the session is kept \
                     and the refresh is tried again in {}",
                    human(policy.backoff_max)
                );
                // The request was answered: the refresh token is the same, and no answer is lost.
                self.refresh_sent_at = None;
                if let (Some(access), Some(refresh)) = (self.saved_access.clone(), self.refresh.clone()) {
                    self.save(&access, &refresh, pair).await;
                }
                if message != self.last_error {
                    tracing::warn!(token = %self.name, "{message}");
                    self.engine.emit(Event::AttentionNeeded { name: self.name.clone(), reason: message.clone() });
                }
                self.last_error = message;
                self.publish(false);
                Err(self.unavailable())
            }
            Err(Failure::Verdict { why, ends_session: true }) => {
                self.count(false, Ended::Rejected);
                if let Some(plan) = &mut self.plan {
                    plan.apply(Attempt::Refresh, Outcome::Verdict, pair, &policy, Self::jitter());
                }
                self.refresh = None;
                self.saved_access = None;
                self.refresh_sent_at = None;
                self.last_error = match self.in_doubt_since.take() {
                    Some(at) => format!(
                        "the cloud refused the refresh token: {why}. Most likely cause: a refresh sent at {} was \
                         carried out by the cloud, which then replaced this refresh token, but its answer was never \
                         saved (att-tokend was stopped, or the reply was lost on the way)",
                        time::rfc3339(at)
                    ),
                    None => format!("the cloud refused the refresh token: {why}"),
                };
                tracing::warn!(token = %self.name, "{}", self.last_error);
                self.forget_saved().await;
                if self.login_unattended().await {
                    return Ok(());
                }
                self.session_lost();
                Err(self.needs_login_error())
            }
        }
    }

    /// After a verdict with no way to log in by itself: needs-login, and a person is told.
    pub(super) fn session_lost(&mut self) {
        // The cloud refused the session: its last access token is most likely revoked with it, and the state says
        // needs-login, so it is not handed out any more.
        self.access = None;
        self.refresh = None;
        self.publish(true);
        let reason = self.needs_login_error().to_string();
        self.engine.emit(Event::AttentionNeeded { name: self.name.clone(), reason });
    }

    /// A grant whose access token lives too short to be served (the plan counted it as a transient failure): the
    /// refresh token is kept and saved (the cloud may have rotated it), the access token is not served.
    pub(super) async fn too_short(
        &mut self,
        access: AccessToken,
        refresh: RefreshToken,
        life: Duration,
        pair: ClockPair,
    ) {
        self.refresh_sent_at = None;
        self.in_doubt_since = None;
        let saved = self.saved_access.clone().unwrap_or_else(|| Arc::new(access));
        self.save(&saved, &refresh, pair).await;
        self.saved_access = Some(saved);
        self.refresh = Some(refresh);
        self.last_error = format!(
            "the cloud granted an access token that lives {} ms, too short to be served (less than {} s); the \
             daemon retries with backoff; if this goes on, check the AllThingsTalk instance's token settings",
            life.as_millis(),
            self.policy().refresh_floor.as_secs()
        );
        if self.short_grant_warned {
            tracing::debug!(token = %self.name, "{}", self.last_error);
        } else {
            tracing::warn!(token = %self.name, "{}", self.last_error);
            self.short_grant_warned = true;
        }
        self.publish(false);
    }

    /// Takes new tokens whose facts the plan has already applied: save first, then publish.
    pub(super) async fn take(&mut self, access: AccessToken, refresh: RefreshToken, pair: ClockPair) {
        self.refresh_sent_at = None;
        self.in_doubt_since = None;
        self.short_grant_warned = false;
        self.save(&access, &refresh, pair).await;
        let access = Arc::new(access);
        self.refresh = Some(refresh);
        self.saved_access = Some(access.clone());
        self.access = Some(access);
        self.last_error.clear();
        self.publish(true);
    }

    /// Checks the access token against the cloud; a rejected one is refreshed now (or the session flagged).
    pub(super) async fn probe(&mut self) {
        let (Ok(cloud), Some(token)) = (self.cloud(), self.access.clone()) else { return };
        match cloud.check_user(&token).await {
            Ok(None) => {}
            Ok(Some(why)) => {
                tracing::warn!(token = %self.name, "the cloud rejects the access token ({why}); refreshing now");
                self.access = None;
                self.publish(true);
                if self.refresh.is_some() {
                    let _ = self.admin_refresh().await;
                } else if !self.login_unattended().await {
                    self.last_error = format!("the cloud rejects the access token ({why})");
                    self.session_lost();
                }
            }
            Err(failure) => tracing::debug!(token = %self.name, "health check skipped: {}", failure.why()),
        }
    }
}
