//! A user session: one task per user token that owns the refresh token and keeps the access token fresh.
//!
//! The task sleeps on the monotonic clock until the next thing is due (a planned refresh, a retry, the end of
//! the serving window, a lapse warning) or a command arrives; it never polls. Commands are handled one at a
//! time, so there is never more than one refresh in flight for a session, and callers that asked for a
//! fresher token while a refresh ran find the new token when their turn comes (they share its result).
//!
//! Invariant: a rotated refresh token is saved (when a store is configured) before the new access token is
//! published.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use token_model::ids::TokenName;
use token_model::secret::{AccessToken, MfaCode, Password, RefreshToken, TotpSeed};
use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;

use super::cloud::{Cloud, Failure, Grant, LoginStep, Probe};
use super::{Engine, EngineError, Entry, Event, Live, Served, State, TokenValue, read, unix_seconds, write};

/// Credentials for unattended re-login (password grant plus a TOTP code computed from the seed).
#[derive(Clone)]
pub struct Unattended {
    /// The account's username.
    pub username: String,
    /// The account's password.
    pub password: Password,
    /// The base32 TOTP seed, to compute MFA codes.
    pub totp_seed: Option<TotpSeed>,
}

impl fmt::Debug for Unattended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unattended").field("username", &self.username).finish_non_exhaustive()
    }
}

/// Timings of the refresh plan.
#[derive(Debug, Clone)]
pub struct RefreshPolicy {
    /// Refresh when this fraction of the access token's life has passed (e.g. 0.75).
    pub refresh_at: f64,
    /// The last good token is served until this long before it expires, never after.
    pub safety_margin: Duration,
    /// First retry delay after a transient failure; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// The longest delay between retries.
    pub max_backoff: Duration,
    /// How long a refresh token lives (60 days at AllThingsTalk).
    pub refresh_token_lifetime: Duration,
    /// Warn this long before the refresh token lapses (each one once).
    pub lapse_warnings: Vec<Duration>,
    /// With unattended credentials, log in again this long before the refresh token lapses.
    pub relogin_before_lapse: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            refresh_at: 0.75,
            safety_margin: Duration::from_secs(60),
            min_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
            refresh_token_lifetime: Duration::from_secs(60 * 24 * 3600),
            lapse_warnings: vec![
                Duration::from_secs(7 * 24 * 3600),
                Duration::from_secs(24 * 3600),
                Duration::from_secs(3600),
            ],
            relogin_before_lapse: Duration::from_secs(24 * 3600),
        }
    }
}

/// A saved user session, as the store keeps it.
pub struct SavedSession {
    /// The account the session belongs to.
    pub username: String,
    /// The refresh token.
    pub refresh_token: RefreshToken,
    /// When it lapses (wall clock).
    pub refresh_expires: SystemTime,
    /// The last access token, if any.
    pub access_token: Option<AccessToken>,
    /// When that access token expires (wall clock).
    pub access_expires: SystemTime,
}

impl fmt::Debug for SavedSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SavedSession")
            .field("username", &self.username)
            .field("refresh_expires", &self.refresh_expires)
            .field("access_expires", &self.access_expires)
            .finish_non_exhaustive()
    }
}

/// Durable storage of user sessions.
pub trait SessionStore: Send + Sync + fmt::Debug {
    /// The saved session of `name`, if any.
    fn load(&self, name: &TokenName) -> Result<Option<SavedSession>, String>;
    /// Saves (atomically replaces) the session of `name`.
    fn save(&self, name: &TokenName, session: &SavedSession) -> Result<(), String>;
    /// Forgets the session of `name`.
    fn remove(&self, name: &TokenName) -> Result<(), String>;
}

/// What every session needs from outside.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// The cloud client; `None` only in tests that need no cloud.
    pub cloud: Option<Cloud>,
    /// Where sessions are saved; `None` keeps them in memory only.
    pub store: Option<Arc<dyn SessionStore>>,
    /// The refresh plan's timings.
    pub policy: RefreshPolicy,
}

enum Command {
    EnsureValidFor(Duration, oneshot::Sender<Result<Served, EngineError>>),
    Login { username: String, password: Password, code: Option<MfaCode>, reply: oneshot::Sender<Result<i64, EngineError>> },
    Refresh(oneshot::Sender<Result<i64, EngineError>>),
    Logout(oneshot::Sender<Result<(), EngineError>>),
    Probe(oneshot::Sender<()>),
    Reconfigure(Option<Unattended>),
    Rebind(Weak<Entry>),
    Shutdown(oneshot::Sender<()>),
}

/// A handle on a session task.
#[derive(Clone)]
pub struct SessionHandle {
    name: TokenName,
    tx: mpsc::UnboundedSender<Command>,
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionHandle").field("name", &self.name).finish()
    }
}

impl PartialEq for SessionHandle {
    fn eq(&self, other: &Self) -> bool {
        self.tx.same_channel(&other.tx)
    }
}

impl SessionHandle {
    fn gone(&self) -> EngineError {
        EngineError::Unavailable { name: self.name.clone(), why: "the daemon is shutting down".to_owned() }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T, EngineError>>) -> Command) -> Result<T, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| self.gone())?;
        rx.await.map_err(|_| self.gone())?
    }

    pub(crate) async fn ensure_valid_for(&self, wanted: Duration) -> Result<Served, EngineError> {
        self.ask(|reply| Command::EnsureValidFor(wanted, reply)).await
    }

    pub(crate) async fn login(&self, username: String, password: Password, code: Option<MfaCode>) -> Result<i64, EngineError> {
        self.ask(|reply| Command::Login { username, password, code, reply }).await
    }

    pub(crate) async fn refresh(&self) -> Result<i64, EngineError> {
        self.ask(Command::Refresh).await
    }

    pub(crate) async fn logout(&self) -> Result<(), EngineError> {
        self.ask(Command::Logout).await
    }

    /// Checks the access token against the cloud and the refresh token's lapse date; returns when done.
    pub async fn probe(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Probe(reply)).is_ok() {
            let _ = rx.await;
        }
    }

    pub(crate) fn reconfigure(&self, unattended: Option<Unattended>) {
        let _ = self.tx.send(Command::Reconfigure(unattended));
    }

    pub(crate) fn rebind(&self, entry: &Arc<Entry>) {
        let _ = self.tx.send(Command::Rebind(Arc::downgrade(entry)));
    }

    pub(crate) fn stop(&self) {
        let (reply, _) = oneshot::channel();
        let _ = self.tx.send(Command::Shutdown(reply));
    }

    pub(crate) async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(reply)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the session task of a user token, restoring its saved session; returns the entry, now holding the
/// handle.
pub(crate) fn spawn(engine: Engine, entry: Arc<Entry>, unattended: Option<Unattended>, settings: &SessionSettings) -> Arc<Entry> {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = SessionHandle { name: entry.name.clone(), tx };
    let entry = Arc::new(Entry {
        name: entry.name.clone(),
        kind: entry.kind,
        readers: entry.readers.clone(),
        scope: std::sync::RwLock::new(entry.scope()),
        devices_configured: false,
        live: std::sync::RwLock::new(Live { token: None, serve_until: None, status: entry.status() }),
        session: Some(handle),
    });
    let mut session = Session {
        name: entry.name.clone(),
        engine: engine.clone(),
        entry: Arc::downgrade(&entry),
        settings: settings.clone(),
        unattended,
        username: String::new(),
        access: None,
        refresh: None,
        next_refresh: None,
        failures: 0,
        retry_at: None,
        warned: Vec::new(),
        last_error: String::new(),
        state: State::NeedsLogin,
    };
    session.restore();
    tokio::spawn(session.run(rx));
    entry
}

struct Access {
    token: Arc<AccessToken>,
    expires: Instant,
    expires_wall: SystemTime,
}

struct Refresh {
    token: RefreshToken,
    lapses: SystemTime,
}

struct Session {
    name: TokenName,
    engine: Engine,
    entry: Weak<Entry>,
    settings: SessionSettings,
    unattended: Option<Unattended>,
    username: String,
    access: Option<Access>,
    refresh: Option<Refresh>,
    next_refresh: Option<Instant>,
    failures: u32,
    retry_at: Option<Instant>,
    /// Lapse warnings already given for the current refresh token (by lead time).
    warned: Vec<Duration>,
    last_error: String,
    state: State,
}

/// Wall-clock time `at` (monotonic) corresponds to, using a reading of both clocks now.
fn wall_at(at: Instant) -> SystemTime {
    let now = Instant::now();
    let wall = SystemTime::now();
    if at >= now { wall + (at - now) } else { wall - (now - at) }
}

/// Monotonic instant of wall time `at` (clamped to now when in the past).
fn mono_at(at: SystemTime) -> Instant {
    let now = Instant::now();
    match at.duration_since(SystemTime::now()) {
        Ok(ahead) => now + ahead,
        Err(_) => now,
    }
}

impl Session {
    fn policy(&self) -> &crate::engine::session::RefreshPolicy {
        &self.settings.policy
    }

    fn serve_until(&self, access: &Access) -> Instant {
        access.expires.checked_sub(self.policy().safety_margin).unwrap_or(access.expires)
    }

    fn restore(&mut self) {
        let Some(store) = &self.settings.store else { return };
        match store.load(&self.name) {
            Ok(Some(saved)) => {
                let now_wall = SystemTime::now();
                if saved.refresh_expires <= now_wall {
                    self.last_error = "the saved refresh token has lapsed".to_owned();
                    self.state = State::NeedsLogin;
                } else {
                    self.username = saved.username;
                    self.refresh = Some(Refresh { token: saved.refresh_token, lapses: saved.refresh_expires });
                    if let Some(token) = saved.access_token {
                        if saved.access_expires > now_wall {
                            self.access = Some(Access {
                                token: Arc::new(token),
                                expires: mono_at(saved.access_expires),
                                expires_wall: saved.access_expires,
                            });
                        }
                    }
                    self.plan_refresh_after_restore();
                    self.state = State::Valid;
                    tracing::info!(token = %self.name, "restored the saved session");
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(token = %self.name, "could not restore the saved session: {e}");
                self.last_error = e;
            }
        }
        self.publish(false);
    }

    fn plan_refresh_after_restore(&mut self) {
        let now = Instant::now();
        self.next_refresh = Some(match &self.access {
            Some(access) if self.serve_until(access) > now => self.planned_refresh(now, access),
            _ => now,
        });
    }

    /// When to refresh a token received at `received`.
    fn planned_refresh(&self, received: Instant, access: &Access) -> Instant {
        let life = access.expires.saturating_duration_since(received);
        let at = received + life.mul_f64(self.policy().refresh_at.clamp(0.1, 0.95));
        at.min(self.serve_until(access))
    }

    /// The next instant something is due.
    fn next_wake(&self) -> Option<Instant> {
        let mut wake: Vec<Instant> = Vec::new();
        if self.refresh.is_some() {
            wake.extend(self.retry_at.or(self.next_refresh));
        }
        if let Some(access) = &self.access {
            let until = self.serve_until(access);
            if until > Instant::now() {
                wake.push(until);
            }
        }
        if let Some(at) = self.next_lapse_event() {
            wake.push(at);
        }
        wake.into_iter().min()
    }

    /// The next lapse warning or unattended re-login, if one is due some day.
    fn next_lapse_event(&self) -> Option<Instant> {
        let refresh = self.refresh.as_ref()?;
        let lapse = mono_at(refresh.lapses);
        if self.unattended.is_some() {
            return Some(lapse.checked_sub(self.policy().relogin_before_lapse).unwrap_or(lapse));
        }
        self.policy()
            .lapse_warnings
            .iter()
            .filter(|lead| !self.warned.contains(lead))
            .map(|lead| lapse.checked_sub(*lead).unwrap_or(lapse))
            .min()
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        loop {
            let wake = self.next_wake();
            tokio::select! {
                command = rx.recv() => match command {
                    None => break,
                    Some(Command::Shutdown(reply)) => {
                        let _ = reply.send(());
                        break;
                    }
                    Some(command) => self.handle(command).await,
                },
                () = async { sleep_until(wake.unwrap_or_else(Instant::now).into()).await }, if wake.is_some() => {
                    self.on_timer().await;
                }
            }
        }
        tracing::debug!(token = %self.name, "session task stopped");
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::EnsureValidFor(wanted, reply) => {
                let result = self.ensure_valid_for(wanted).await;
                let _ = reply.send(result);
            }
            Command::Login { username, password, code, reply } => {
                let result = self.login(&username, &password, code).await;
                let _ = reply.send(result);
            }
            Command::Refresh(reply) => {
                let result = match self.refresh.is_some() {
                    true => match self.refresh_now().await {
                        Ok(()) => Ok(self.access.as_ref().map_or(0, |a| unix_seconds(a.expires_wall))),
                        Err(e) => Err(e),
                    },
                    false => Err(self.needs_login_error()),
                };
                let _ = reply.send(result);
            }
            Command::Logout(reply) => {
                self.access = None;
                self.refresh = None;
                self.next_refresh = None;
                self.retry_at = None;
                self.failures = 0;
                self.last_error = "logged out".to_owned();
                self.state = State::NeedsLogin;
                let result = match &self.settings.store {
                    Some(store) => store.remove(&self.name).map_err(|why| EngineError::Unavailable {
                        name: self.name.clone(),
                        why: format!("the saved session could not be removed: {why}"),
                    }),
                    None => Ok(()),
                };
                tracing::info!(token = %self.name, "logged out");
                self.publish(true);
                let _ = reply.send(result);
            }
            Command::Probe(reply) => {
                self.probe().await;
                let _ = reply.send(());
            }
            Command::Reconfigure(unattended) => self.unattended = unattended,
            Command::Rebind(entry) => {
                self.entry = entry;
                self.publish(false);
            }
            Command::Shutdown(_) => {}
        }
    }

    fn needs_login_error(&self) -> EngineError {
        EngineError::NeedsLogin {
            name: self.name.clone(),
            why: if self.last_error.is_empty() { "no session".to_owned() } else { self.last_error.clone() },
        }
    }

    fn serving(&self, wanted: Duration) -> Option<Served> {
        let access = self.access.as_ref()?;
        (Instant::now() + wanted <= self.serve_until(access)).then(|| Served {
            token: TokenValue::Access(access.token.clone()),
            expires_at: unix_seconds(access.expires_wall),
        })
    }

    async fn ensure_valid_for(&mut self, wanted: Duration) -> Result<Served, EngineError> {
        if let Some(served) = self.serving(wanted) {
            return Ok(served);
        }
        if self.refresh.is_none() {
            if !self.relogin_unattended().await {
                return Err(self.needs_login_error());
            }
        } else if self.retry_at.is_some_and(|at| at > Instant::now()) {
            return Err(EngineError::Unavailable { name: self.name.clone(), why: self.last_error.clone() });
        } else {
            self.refresh_now().await?;
        }
        self.serving(wanted).ok_or_else(|| EngineError::Unavailable {
            name: self.name.clone(),
            why: format!(
                "the cloud's tokens do not stay valid for {} seconds; ask for a shorter time",
                wanted.as_secs()
            ),
        })
    }

    fn cloud(&self) -> Result<Cloud, EngineError> {
        self.settings.cloud.clone().ok_or_else(|| EngineError::Unavailable {
            name: self.name.clone(),
            why: "no cloud client is configured".to_owned(),
        })
    }

    /// One refresh with the current refresh token. Never two at once: only this task refreshes.
    async fn refresh_now(&mut self) -> Result<(), EngineError> {
        let cloud = self.cloud()?;
        let Some(token) = self.refresh.as_ref().map(|r| r.token.clone()) else { return Err(self.needs_login_error()) };
        self.state = State::Refreshing;
        self.publish(false);
        let outcome = cloud.refresh(&token).await;
        match outcome {
            Ok(grant) => {
                self.accept(grant);
                Ok(())
            }
            Err(Failure::Verdict { why }) => {
                tracing::warn!(token = %self.name, "the cloud refused the refresh token: {why}");
                self.lose_session(format!("the cloud refused the refresh token ({why})"));
                if self.relogin_unattended().await {
                    return Ok(());
                }
                Err(self.needs_login_error())
            }
            Err(failure @ Failure::Transient { .. }) => {
                self.transient(&failure);
                Err(EngineError::Unavailable { name: self.name.clone(), why: self.last_error.clone() })
            }
        }
    }

    fn transient(&mut self, failure: &Failure) {
        self.failures = self.failures.saturating_add(1);
        let policy = self.policy();
        let exp = policy.min_backoff.saturating_mul(1u32 << self.failures.saturating_sub(1).min(16));
        let mut delay = exp.min(policy.max_backoff);
        // Up to 20% jitter so many gateways do not retry in step.
        delay += delay.mul_f64(fastrand::f64() * 0.2);
        if let Failure::Transient { retry_after: Some(after), .. } = failure {
            delay = delay.max(*after).min(policy.max_backoff.max(*after));
        }
        self.retry_at = Some(Instant::now() + delay);
        self.last_error = failure.why().to_owned();
        tracing::warn!(
            token = %self.name,
            attempt = self.failures,
            retry_in_s = delay.as_secs_f64(),
            "refresh failed for a transient reason: {}",
            failure.why()
        );
        self.state = self.serving_state();
        self.publish(false);
    }

    /// `Retrying` while the last good token is still served, `Expired` after.
    fn serving_state(&self) -> State {
        if self.serving(Duration::ZERO).is_some() { State::Retrying } else { State::Expired }
    }

    /// Drops the session after a verdict: no refresh token, no served token, a person must act.
    fn lose_session(&mut self, why: String) {
        self.access = None;
        self.refresh = None;
        self.next_refresh = None;
        self.retry_at = None;
        self.failures = 0;
        self.last_error = why;
        self.state = State::NeedsLogin;
        if let Some(store) = &self.settings.store {
            if let Err(e) = store.remove(&self.name) {
                tracing::error!(token = %self.name, "could not remove the dead session from the state directory: {e}");
            }
        }
        self.publish(true);
        let reason = self.needs_login_error().to_string();
        self.engine.emit(Event::AttentionNeeded { name: self.name.clone(), reason });
    }

    /// Takes a grant: save first, then publish.
    fn accept(&mut self, grant: Grant) {
        let received = Instant::now();
        let received_wall = SystemTime::now();
        let refresh = match (grant.refresh, self.refresh.take()) {
            // A new refresh token gets a fresh lifetime (sliding window).
            (Some(token), _) => {
                self.warned.clear();
                Refresh { token, lapses: received_wall + self.policy().refresh_token_lifetime }
            }
            // The reply repeated or omitted it: the old deadline stands.
            (None, Some(old)) => old,
            (None, None) => {
                self.lose_session("the cloud granted an access token without a refresh token".to_owned());
                return;
            }
        };
        let access = Access {
            token: Arc::new(grant.access),
            expires: received + grant.expires_in,
            expires_wall: received_wall + grant.expires_in,
        };
        if let Some(store) = &self.settings.store {
            let saved = SavedSession {
                username: self.username.clone(),
                refresh_token: refresh.token.clone(),
                refresh_expires: refresh.lapses,
                access_token: Some((*access.token).clone()),
                access_expires: access.expires_wall,
            };
            if let Err(e) = store.save(&self.name, &saved) {
                let reason = format!(
                    "the session of {:?} could not be saved ({e}); it will not survive a restart: check the state \
                     directory's permissions and free space",
                    self.name.as_str()
                );
                tracing::error!(token = %self.name, "{reason}");
                self.engine.emit(Event::AttentionNeeded { name: self.name.clone(), reason });
            }
        }
        self.next_refresh = Some(self.planned_refresh(received, &access));
        self.access = Some(access);
        self.refresh = Some(refresh);
        self.failures = 0;
        self.retry_at = None;
        self.last_error.clear();
        self.state = State::Valid;
        tracing::info!(
            token = %self.name,
            expires_in_s = grant.expires_in.as_secs(),
            "new access token"
        );
        self.publish(true);
    }

    async fn login(&mut self, username: &str, password: &Password, code: Option<MfaCode>) -> Result<i64, EngineError> {
        let cloud = self.cloud()?;
        let login_failed = |name: &TokenName, why: String| EngineError::LoginFailed { name: name.clone(), why };
        let step = cloud.password(username, password).await.map_err(|f| match f {
            Failure::Verdict { why } => login_failed(
                &self.name,
                format!("the cloud refused the username or password ({why}); check them and try again"),
            ),
            Failure::Transient { why, .. } => EngineError::Unavailable { name: self.name.clone(), why },
        })?;
        let grant = match step {
            LoginStep::Granted(grant) => grant,
            LoginStep::Challenge(challenge) => {
                let Some(code) = code else { return Err(EngineError::MfaRequired(self.name.clone())) };
                cloud.mfa(challenge, &code).await.map_err(|f| match f {
                    Failure::Verdict { .. } => EngineError::MfaFailed(self.name.clone()),
                    Failure::Transient { why, .. } => EngineError::Unavailable { name: self.name.clone(), why },
                })?
            }
        };
        self.username = username.to_owned();
        self.accept(grant);
        tracing::info!(token = %self.name, "logged in");
        match &self.access {
            Some(access) => Ok(unix_seconds(access.expires_wall)),
            None => Err(self.needs_login_error()),
        }
    }

    /// Logs in again with the configured credentials, if any. True when a session was established.
    async fn relogin_unattended(&mut self) -> bool {
        let Some(unattended) = self.unattended.clone() else { return false };
        let code = match &unattended.totp_seed {
            Some(seed) => match Cloud::totp(seed) {
                Ok(code) => Some(code),
                Err(e) => {
                    self.last_error = format!("the TOTP seed is not usable ({e}); fix totp_secret_file");
                    return false;
                }
            },
            None => None,
        };
        match self.login(&unattended.username, &unattended.password, code).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(token = %self.name, "unattended login failed: {e}");
                self.last_error = e.to_string();
                false
            }
        }
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        // A lapse warning or an unattended re-login.
        if let Some(refresh) = &self.refresh {
            let lapse = mono_at(refresh.lapses);
            if self.unattended.is_some() {
                if lapse.checked_sub(self.policy().relogin_before_lapse).unwrap_or(lapse) <= now {
                    tracing::info!(token = %self.name, "the refresh token lapses soon: logging in again");
                    if !self.relogin_unattended().await {
                        self.retry_later_or_lose(lapse);
                    }
                    return;
                }
            } else {
                let due: Vec<Duration> = self
                    .policy()
                    .lapse_warnings
                    .iter()
                    .copied()
                    .filter(|lead| !self.warned.contains(lead) && lapse.checked_sub(*lead).unwrap_or(lapse) <= now)
                    .collect();
                if !due.is_empty() {
                    self.warned.extend(due);
                    let left = refresh.lapses.duration_since(SystemTime::now()).unwrap_or_default();
                    let reason = format!(
                        "the refresh token of {:?} lapses in {} hours and cannot be renewed without a login; run \
                         `att-token login {}` before then",
                        self.name.as_str(),
                        left.as_secs() / 3600,
                        self.name.as_str()
                    );
                    tracing::warn!(token = %self.name, "{reason}");
                    self.engine.emit(Event::AttentionNeeded { name: self.name.clone(), reason });
                    self.publish(false);
                }
                if lapse <= now {
                    self.lose_session("the refresh token lapsed".to_owned());
                    return;
                }
            }
        }
        // A planned refresh or a retry.
        if self.refresh.is_some() && self.retry_at.or(self.next_refresh).is_some_and(|at| at <= now) {
            let _ = self.refresh_now().await;
            return;
        }
        // The end of the serving window.
        if self.access.as_ref().is_some_and(|a| self.serve_until(a) <= now) {
            self.access = None;
            if self.refresh.is_some() {
                self.state = State::Expired;
            }
            self.publish(true);
        }
    }

    fn retry_later_or_lose(&mut self, lapse: Instant) {
        if lapse <= Instant::now() {
            self.lose_session("the refresh token lapsed and the unattended login failed".to_owned());
        } else {
            self.transient(&Failure::Transient { why: self.last_error.clone(), retry_after: None });
        }
    }

    /// Checks the access token against the cloud; a rejected token is refreshed (or the session flagged).
    async fn probe(&mut self) {
        let (Ok(cloud), Some(access)) = (self.cloud(), self.access.as_ref()) else { return };
        let token = access.token.clone();
        match cloud.probe_user(&token).await {
            Ok(Probe::Valid) => {}
            Ok(Probe::Rejected(why)) => {
                tracing::warn!(token = %self.name, "the cloud rejects the access token ({why}); refreshing");
                self.access = None;
                self.next_refresh = Some(Instant::now());
                let _ = self.refresh_now().await;
            }
            Err(failure) => tracing::debug!(token = %self.name, "health probe skipped: {}", failure.why()),
        }
    }

    /// Copies the session's view into the entry and tells the world. `token_changed`: the served token changed.
    fn publish(&mut self, token_changed: bool) {
        let Some(entry) = self.entry.upgrade() else { return };
        let attention = self.state == State::NeedsLogin || !self.warned.is_empty();
        let expires_at = self.access.as_ref().map_or(0, |a| unix_seconds(a.expires_wall));
        {
            let mut live = write(&entry.live);
            live.token = self.access.as_ref().map(|a| TokenValue::Access(a.token.clone()));
            live.serve_until = self.access.as_ref().map(|a| self.serve_until(a));
            let status = &mut live.status;
            status.state = self.state;
            status.expires_at = expires_at;
            status.refresh_token_expires_at = self.refresh.as_ref().map_or(0, |r| unix_seconds(r.lapses));
            status.next_refresh_at =
                self.refresh.as_ref().and(self.retry_at.or(self.next_refresh)).map_or(0, |at| unix_seconds(wall_at(at)));
            status.attention_needed = attention;
            status.last_error.clone_from(&self.last_error);
        }
        debug_assert!(read(&entry.live).status.state == self.state);
        self.engine.emit(Event::StatusChanged(self.name.clone()));
        if token_changed {
            self.engine.emit(Event::TokenChanged { name: self.name.clone(), expires_at });
        }
    }
}
