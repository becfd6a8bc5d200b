//! A user session: one task per user token that owns the refresh token and executes the refresh plan of
//! [`token_model::plan`].
//!
//! The task sleeps on the boot-time clock ([`crate::clock::Sleeper`], which counts time suspended) until the
//! plan's next action is due (a refresh, a retry, an unattended re-login, a lapse warning) or the served token
//! reaches its serving margin, or until a command arrives; it never polls. Commands are handled one at a time, so
//! there is never more than one refresh in flight for a session, and callers that asked for a fresher token
//! while a refresh ran find the new token when their turn comes: they share its result. What a caller may make
//! the session do is the plan's decision ([`token_model::plan::Session::for_caller`]).
//!
//! Invariants:
//! - a rotated refresh token is saved (when a store is configured) before the new access token is published;
//! - a token is published only with the instant its serving window ends (its expiry less the serving margin, on
//!   the boot-time clock), and [`super::Entry`] never hands it out after that instant;
//! - one task at a time owns a token's session: a new task for the same name waits for the old one to end.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use login_flow::totp::CodeClock;
use token_model::ids::TokenName;
use token_model::plan::{
    self, Action, AdminAction, Attempt, CallerAction, Grant, Outcome, PersistedSession, Policy, RefreshTokenChange,
    TokenState,
};
use token_model::secret::{AccessToken, ExposeSecret, MfaCode, Password, RefreshToken, TotpSeed};
use token_model::time::{self, ClockPair, MonoTime, WallTime};
use tokio::sync::{mpsc, oneshot};

use super::cloud::{Cloud, Failure, LoginFailure};
use super::{Engine, EngineError, Entry, Event, Live, Served, State, TokenValue, write};
use crate::state::{HoldReason, HoldRecord};

/// Credentials for unattended re-login (password grant plus a TOTP code computed from the seed).
#[derive(Clone)]
pub struct Unattended {
    /// The account's username.
    pub username: String,
    /// The account's password.
    pub password: Password,
    /// The base32 TOTP seed, to compute MFA codes; `None` for an account without MFA.
    pub totp_seed: Option<TotpSeed>,
}

impl Unattended {
    /// HMAC-SHA-256 of the username, password and TOTP seed under `salt`, in hex: names these credentials in a hold
    /// ([`crate::state::HoldRecord`]) without keeping them. Each part is length-prefixed, so two different sets of
    /// credentials never give the same input.
    fn fingerprint(&self, salt: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, salt);
        let mut context = ring::hmac::Context::with_key(&key);
        context.update(b"att-tokend unattended credentials 1\0");
        let seed = self.totp_seed.as_ref().map(|seed| seed.expose_secret().as_bytes());
        for part in [Some(self.username.as_bytes()), Some(self.password.expose_secret().as_bytes()), seed] {
            match part {
                Some(bytes) => {
                    context.update(&[1]);
                    context.update(&(bytes.len() as u64).to_le_bytes());
                    context.update(bytes);
                }
                None => context.update(&[0]),
            }
        }
        hex(context.sign().as_ref())
    }
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Debug for Unattended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unattended").field("username", &self.username).finish_non_exhaustive()
    }
}

/// A saved user session, as the store keeps it: the tokens, and the planner's durable facts whole.
pub struct SavedSession {
    /// The account the session belongs to.
    pub username: String,
    /// The refresh token.
    pub refresh_token: RefreshToken,
    /// The last access token.
    pub access_token: AccessToken,
    /// Deadlines (wall clock), rotation, warnings given and clock trust, exactly as the planner persisted them.
    pub session: PersistedSession,
    /// Unix seconds when a refresh with `refresh_token` was sent whose answer was not saved (see
    /// [`crate::state::SessionRecord::refresh_sent_at`]).
    pub refresh_sent_at: Option<i64>,
}

impl fmt::Debug for SavedSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SavedSession")
            .field("username", &self.username)
            .field("session", &self.session)
            .field("refresh_sent_at", &self.refresh_sent_at)
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
    /// The unattended-login hold of `name`, if one was saved (see [`crate::state::HoldRecord`]).
    fn load_hold(&self, _name: &TokenName) -> Result<Option<crate::state::HoldRecord>, String> {
        Ok(None)
    }
    /// Saves an unattended-login hold.
    fn save_hold(&self, _hold: &crate::state::HoldRecord) -> Result<(), String> {
        Ok(())
    }
    /// Forgets the unattended-login hold of `name`.
    fn remove_hold(&self, _name: &TokenName) -> Result<(), String> {
        Ok(())
    }
    /// How sessions are kept at rest, as the `SessionStorage` property shows it: `sealed` (encrypted with the
    /// state key) or `unsealed` (in clear).
    fn storage(&self) -> &'static str {
        "unsealed"
    }
}

/// What every session needs from outside.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// The cloud client; `None` only where no user token can log in (every attempt is `Unavailable`).
    pub cloud: Option<Cloud>,
    /// Where sessions are saved; `None` keeps them in memory only.
    pub store: Option<Arc<dyn SessionStore>>,
    /// The refresh plan's knobs.
    pub policy: Policy,
    /// What confirms the wall clock at restore (`[daemon] trust_kernel_time_sync`).
    pub clock: crate::clock::ClockPolicy,
}

enum Command {
    EnsureValidFor {
        wanted: Duration,
        uid: u32,
        reply: oneshot::Sender<Result<Served, EngineError>>,
    },
    /// A reader found no token to serve: the session may make one early attempt (see `Session::for_caller`).
    Nudge {
        uid: u32,
    },
    Login {
        username: String,
        password: Password,
        code: Option<MfaCode>,
        reply: oneshot::Sender<Result<i64, EngineError>>,
    },
    Refresh(oneshot::Sender<Result<i64, EngineError>>),
    Logout(oneshot::Sender<Result<(), EngineError>>),
    Probe(oneshot::Sender<()>),
    Reconfigure(Option<Unattended>),
    Policy(Policy),
    Rebind(Weak<Entry>),
    Shutdown(oneshot::Sender<()>),
}

/// A handle on a session task.
#[derive(Clone)]
pub struct SessionHandle {
    name: TokenName,
    tx: mpsc::UnboundedSender<Command>,
    /// One permit per caller waiting on this session ([`super::MAX_WAITING_PER_SESSION`]): the command channel
    /// holds at most that many callers' commands, plus the daemon's own (one nudge, reloads, probes).
    waiting: Arc<tokio::sync::Semaphore>,
    /// The engine's permits for calls that wait ([`super::MAX_WAITING_CALLS`]), shared by every session.
    engine_waiting: Arc<tokio::sync::Semaphore>,
    /// A nudge is queued and not handled yet: readers' nudges are coalesced into one.
    nudged: Arc<std::sync::atomic::AtomicBool>,
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

    /// Sends a caller's command and waits for its answer. A caller beyond the bounds on waiting callers (per
    /// session, then in the whole engine) is refused at once with `Unavailable` rather than queued: the permits
    /// are held until the answer comes (or the call is dropped).
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, EngineError>>) -> Command,
    ) -> Result<T, EngineError> {
        let _waiting = self.waiting.clone().try_acquire_owned().map_err(|_| EngineError::Unavailable {
            name: self.name.clone(),
            why: format!(
                "{} callers are already waiting on this token's refresh or login; wait for an answer to one of \
                 them and try again in a few seconds",
                super::MAX_WAITING_PER_SESSION
            ),
        })?;
        let _engine_waiting =
            self.engine_waiting.clone().try_acquire_owned().map_err(|_| EngineError::Unavailable {
                name: self.name.clone(),
                why: format!(
                    "the daemon is already answering {} calls that wait on the cloud; try again in a few seconds",
                    super::MAX_WAITING_CALLS
                ),
            })?;
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| self.gone())?;
        rx.await.map_err(|_| self.gone())?
    }

    pub(crate) async fn ensure_valid_for(&self, wanted: Duration, uid: u32) -> Result<Served, EngineError> {
        self.ask(|reply| Command::EnsureValidFor { wanted, uid, reply }).await
    }

    /// Tells the session a reader found no token to serve (without waiting): while it is retrying with a long
    /// backoff, this may bring one early attempt. Nudges are coalesced, so any number of readers queue one.
    pub(crate) fn nudge(&self, uid: u32) {
        use std::sync::atomic::Ordering;
        if !self.nudged.swap(true, Ordering::AcqRel) && self.tx.send(Command::Nudge { uid }).is_err() {
            self.nudged.store(false, Ordering::Release);
        }
    }

    pub(crate) async fn login(
        &self,
        username: String,
        password: Password,
        code: Option<MfaCode>,
    ) -> Result<i64, EngineError> {
        self.ask(|reply| Command::Login { username, password, code, reply }).await
    }

    pub(crate) async fn refresh(&self) -> Result<i64, EngineError> {
        self.ask(Command::Refresh).await
    }

    pub(crate) async fn logout(&self) -> Result<(), EngineError> {
        self.ask(Command::Logout).await
    }

    /// Checks the access token against the cloud (a rejected one is refreshed at once); returns when done.
    pub async fn probe(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Probe(reply)).is_ok() {
            let _ = rx.await;
        }
    }

    pub(crate) fn reconfigure(&self, unattended: Option<Unattended>) {
        let _ = self.tx.send(Command::Reconfigure(unattended));
    }

    pub(crate) fn set_policy(&self, policy: Policy) {
        let _ = self.tx.send(Command::Policy(policy));
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

/// One store operation, for [`on_blocking_pool`].
enum StoreOp {
    Save(Box<SavedSession>),
    Remove,
    SaveHold(Box<HoldRecord>),
    RemoveHold,
}

/// Runs a store operation on tokio's blocking pool (file writes with fsync must not hold up a runtime thread). One
/// operation type for every kind: the pool's task machinery is built once (each closure type would add its own).
async fn on_blocking_pool(store: Arc<dyn SessionStore>, name: TokenName, operation: StoreOp) -> Result<(), String> {
    tokio::task::spawn_blocking(move || match operation {
        StoreOp::Save(saved) => store.save(&name, &saved),
        StoreOp::Remove => store.remove(&name),
        StoreOp::SaveHold(hold) => store.save_hold(&hold),
        StoreOp::RemoveHold => store.remove_hold(&name),
    })
    .await
    .unwrap_or_else(|e| Err(format!("the state writer stopped: {e}")))
}

/// Now on the boot-time clock, which keeps counting while the machine is suspended (see [`crate::clock`]).
fn now() -> MonoTime {
    crate::clock::boot_now()
}

/// Both clocks read together.
fn clock_pair() -> ClockPair {
    ClockPair::new(now(), WallTime::from_system_time(SystemTime::now()))
}

/// Starts the session task of a user token, restoring its saved session; returns the entry holding the handle.
pub(crate) fn spawn(
    engine: Engine,
    template: &Entry,
    unattended: Option<Unattended>,
    settings: &SessionSettings,
) -> Arc<Entry> {
    let (tx, rx) = mpsc::unbounded_channel();
    let nudged = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let owner = engine.session_owner(&template.name);
    let entry = Arc::new(Entry {
        name: template.name.clone(),
        kind: template.kind,
        readers: template.readers.clone(),
        files: template.files.clone(),
        scope: std::sync::RwLock::new(template.scope()),
        devices_configured: false,
        live: std::sync::RwLock::new(Live { token: None, serve_until: None, status: template.status() }),
        session: Some(SessionHandle {
            name: template.name.clone(),
            tx,
            waiting: Arc::new(tokio::sync::Semaphore::new(super::MAX_WAITING_PER_SESSION)),
            engine_waiting: engine.waiting_calls(),
            nudged: nudged.clone(),
        }),
    });
    let mut session = Session {
        name: entry.name.clone(),
        engine,
        entry: Arc::downgrade(&entry),
        settings: settings.clone(),
        unattended,
        username: String::new(),
        plan: None,
        access: None,
        refresh: None,
        saved_access: None,
        refresh_sent_at: None,
        in_doubt_since: None,
        busy: false,
        login_failures: 0,
        login_retry_at: None,
        last_error: String::new(),
        nudged,
        hold: None,
        short_grant_warned: false,
    };
    // One task at a time owns a token's session: a token removed and added again by quick reloads gets its new
    // task only once the old one has finished its refresh and saved it, so two tasks never hold one refresh token.
    match owner.clone().try_lock_owned() {
        Ok(guard) => {
            session.restore();
            tokio::spawn(session.run(rx, guard));
        }
        Err(_) => {
            tracing::debug!(token = %entry.name, "waiting for the previous task of this token to save and stop");
            tokio::spawn(async move {
                let guard = owner.lock_owned().await;
                session.restore();
                session.run(rx, guard).await;
            });
        }
    }
    entry
}

struct Session {
    name: TokenName,
    engine: Engine,
    entry: Weak<Entry>,
    settings: SessionSettings,
    unattended: Option<Unattended>,
    username: String,
    /// The planner's view; `None` when there is no session.
    plan: Option<plan::Session>,
    access: Option<Arc<AccessToken>>,
    refresh: Option<RefreshToken>,
    /// The access token in the saved session (kept after it stops being served, to write the session again).
    saved_access: Option<Arc<AccessToken>>,
    /// Unix seconds when a refresh with `refresh` was sent whose answer is not saved yet (also on disk).
    refresh_sent_at: Option<i64>,
    /// Unix seconds when an *earlier* refresh with `refresh` was sent whose outcome is in doubt: found unanswered
    /// at restore, or it timed out or lost its connection after it was sent. Only then does a refused refresh
    /// token blame a lost answer.
    in_doubt_since: Option<i64>,
    /// A refresh or login is under way (state `refreshing`).
    busy: bool,
    /// Unattended logins attempted without a session (first start), and when to try again.
    login_failures: u32,
    login_retry_at: Option<MonoTime>,
    last_error: String,
    /// Shared with the handle: a nudge is queued.
    nudged: Arc<std::sync::atomic::AtomicBool>,
    /// Unattended login is held until the next `Login` or other credentials: the cloud refused these, or an admin
    /// logged out. Kept on disk too (`<name>.hold`), so a restart does not send refused credentials again.
    hold: Option<HoldReason>,
    /// A grant too short to serve was logged at warn level; later ones go to debug until a normal grant.
    short_grant_warned: bool,
}

impl Session {
    fn policy(&self) -> &Policy {
        &self.settings.policy
    }

    fn jitter() -> f64 {
        fastrand::f64()
    }

    fn restore(&mut self) {
        let Some(store) = self.settings.store.clone() else {
            self.publish(false);
            return;
        };
        self.restore_hold(store.as_ref());
        match store.load(&self.name) {
            Ok(Some(saved)) => {
                let pair = clock_pair();
                let mut trust = time::check_wall_clock(saved.session.known_good, pair.wall);
                if !trust.is_trusted() {
                    tracing::warn!(token = %self.name, "the wall clock is behind the last known good time; the saved access token is not trusted and will be refreshed");
                } else if !self.settings.clock.confirmed() {
                    // Plausible is not confirmed: without a real-time clock the time at boot is the last saved one.
                    trust = time::WallClockTrust::Untrusted(time::UntrustedReason::Unconfirmed);
                    tracing::info!(token = %self.name, "the wall clock is not confirmed (the system does not report it synchronised: timedatectl shows NTPSynchronized=no, or timedated did not answer); the saved access token is refreshed before it is served");
                }
                // The plan decides what the restored session needs; a refresh-token deadline that seems past
                // by the local clock is not a verdict (only the cloud's answer is).
                let restored = saved.session.restore(pair, trust, self.unattended.is_some(), Self::jitter());
                let access = Arc::new(saved.access_token);
                self.access = restored.access_deadline().map(|_| access.clone());
                self.saved_access = Some(access);
                self.refresh_sent_at = saved.refresh_sent_at;
                // A refresh whose answer was never saved: its outcome is in doubt.
                self.in_doubt_since = saved.refresh_sent_at;
                if let Some(at) = saved.refresh_sent_at {
                    tracing::warn!(
                        token = %self.name,
                        "att-tokend stopped while a refresh sent at {} was unanswered; the next refresh shows whether \
                         the cloud had already replaced the refresh token",
                        time::rfc3339(at)
                    );
                }
                self.refresh = Some(saved.refresh_token);
                self.username = saved.username;
                self.plan = Some(restored);
                tracing::info!(token = %self.name, "restored the saved session");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(token = %self.name, "could not restore the saved session: {e}");
                self.last_error = e;
            }
        }
        self.publish(true);
    }

    /// The plan's next action, and when to wake for it or for the end of the serving window.
    fn next(&self, now: MonoTime) -> (Action, Option<MonoTime>) {
        let action = plan::plan(self.plan.as_ref(), self.policy(), now);
        let mut wake = action.at();
        if self.plan.is_none() && self.unattended.is_some() && self.hold.is_none() {
            wake = Some(self.login_retry_at.unwrap_or(now));
        }
        if let Some(end) = self.serve_until().filter(|end| *end > now) {
            wake = Some(wake.map_or(end, |w| w.min(end)));
        }
        (action, wake)
    }

    /// The instant the served token stops being served (its expiry less the safety margin).
    fn serve_until(&self) -> Option<MonoTime> {
        self.access.as_ref()?;
        self.plan.as_ref()?.serve_until(self.policy())
    }

    /// The task's loop. `_owner` is this token's ownership, released when the task ends (after its last save).
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>, _owner: tokio::sync::OwnedMutexGuard<()>) {
        let mut told: Option<Action> = None;
        // One boot-time timer for the task's life, armed anew for each wait.
        let mut sleeper = crate::clock::Sleeper::new();
        loop {
            let now = now();
            let (action, wake) = self.next(now);
            // Each new decision of the plan is in the journal at debug level (never a secret).
            if told != Some(action) {
                tracing::debug!(token = %self.name, "plan: {}", self.describe(action, now));
                told = Some(action);
            }
            tokio::select! {
                command = rx.recv() => match command {
                    None => break,
                    Some(Command::Shutdown(reply)) => {
                        let _ = reply.send(());
                        break;
                    }
                    Some(command) => self.handle(command).await,
                },
                // A boot-time timer: a suspend that carries the clock past `wake` ends the sleep at the resume.
                () = sleeper.until(wake.unwrap_or(now)), if wake.is_some() => self.on_due().await,
            }
        }
        tracing::debug!(token = %self.name, "session task stopped");
    }

    /// One plan decision in words, with its time as a date.
    fn describe(&self, action: Action, now: MonoTime) -> String {
        let pair = clock_pair();
        let date = |at: MonoTime| {
            let in_s = at.saturating_since(now).as_secs();
            format!("{} (in {in_s} s)", pair.wall_at(at))
        };
        match action {
            Action::Refresh { at, reason } => format!("next refresh at {} ({reason:?})", date(at)),
            Action::Retry { at, attempt, failures } => format!(
                "{attempt:?} retry at {} after {failures} transient failure(s) in a row (backoff, with jitter, \
                 never before the refresh floor)",
                date(at)
            ),
            Action::ReLogin { at } => format!("unattended login at {}", date(at)),
            Action::WarnLapse { at, lapses_at } => format!(
                "lapse warning at {}; the refresh token lapses at {}",
                date(at),
                time::rfc3339(lapses_at.expires_at())
            ),
            Action::NeedsLogin { reason } => format!("nothing until a login ({reason:?})"),
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::EnsureValidFor { wanted, uid, reply } => {
                let result = self.ensure_valid_for(wanted, uid).await;
                let _ = reply.send(result);
            }
            Command::Nudge { uid } => {
                self.nudged.store(false, std::sync::atomic::Ordering::Release);
                self.nudge(uid).await;
            }
            Command::Login { username, password, code, reply } => {
                let result = self.human_login(username, password, code).await;
                let _ = reply.send(result);
            }
            Command::Refresh(reply) => {
                let result = match self.refresh.is_some() {
                    true => self.admin_refresh().await,
                    false => Err(self.needs_login_error()),
                };
                let _ = reply.send(result);
            }
            Command::Logout(reply) => {
                let result = self.logout().await;
                let _ = reply.send(result);
            }
            Command::Probe(reply) => {
                self.probe().await;
                let _ = reply.send(());
            }
            Command::Reconfigure(unattended) => {
                if let Some(plan) = &mut self.plan {
                    plan.set_unattended_relogin(unattended.is_some());
                }
                // Only new credentials are a new chance: a reload that changes nothing does not retry credentials
                // the cloud refused, nor end a logout's suspension.
                if !same_credentials(self.unattended.as_ref(), unattended.as_ref()) {
                    if unattended.is_some() {
                        tracing::debug!(token = %self.name, "new credentials for unattended login");
                    }
                    self.login_failures = 0;
                    self.login_retry_at = None;
                    self.lift_hold().await;
                    if let Some(plan) = &mut self.plan {
                        plan.credentials_changed();
                    }
                }
                self.unattended = unattended;
            }
            Command::Policy(policy) => {
                self.settings.policy = policy;
                self.publish(false);
            }
            Command::Rebind(entry) => {
                self.entry = entry;
                self.publish(false);
            }
            Command::Shutdown(_) => {}
        }
    }

    fn expires_at(&self) -> i64 {
        time::expires_at(self.plan.as_ref().and_then(plan::Session::access_deadline).as_ref())
    }

    fn needs_login_error(&self) -> EngineError {
        EngineError::NeedsLogin {
            name: self.name.clone(),
            why: if self.last_error.is_empty() {
                "no session: nobody has logged in".to_owned()
            } else {
                self.last_error.clone()
            },
        }
    }

    fn unavailable(&self) -> EngineError {
        EngineError::Unavailable { name: self.name.clone(), why: self.last_error.clone() }
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
    async fn ensure_valid_for(&mut self, wanted: Duration, uid: u32) -> Result<Served, EngineError> {
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
    async fn nudge(&mut self, uid: u32) {
        let Some(plan) = self.plan.as_ref() else { return };
        if self.serving(Duration::ZERO).is_some() {
            return;
        }
        if plan.for_caller(now(), Duration::ZERO, self.policy()) == CallerAction::RefreshNow {
            tracing::debug!(token = %self.name, uid, "a reader found no token: one early attempt");
            let _ = self.refresh_now().await;
        }
    }

    fn cloud(&self) -> Result<Cloud, EngineError> {
        self.settings.cloud.clone().ok_or_else(|| EngineError::Unavailable {
            name: self.name.clone(),
            why: "no cloud client is configured".to_owned(),
        })
    }

    /// Does what the plan says is due now.
    async fn on_due(&mut self) {
        let now = now();
        let (action, _) = self.next(now);
        if self.plan.is_none() {
            if self.unattended.is_some() && self.hold.is_none() && self.login_retry_at.is_none_or(|at| at <= now) {
                self.login_unattended().await;
            }
            return;
        }
        match action {
            Action::Refresh { at, .. } | Action::Retry { at, attempt: Attempt::Refresh, .. } if at <= now => {
                let _ = self.refresh_now().await;
            }
            Action::Retry { at, attempt: Attempt::Login, .. } | Action::ReLogin { at } if at <= now => {
                self.login_unattended().await;
            }
            Action::WarnLapse { at, lapses_at } if at <= now => {
                let left = lapses_at.remaining(now);
                let reason = format!(
                    "the session of {:?} lapses in {} (at {}) and cannot be renewed without a login; run \
                     `att-token login {}` before then",
                    self.name.as_str(),
                    human(left),
                    time::rfc3339(lapses_at.expires_at()),
                    self.name.as_str()
                );
                tracing::warn!(token = %self.name, "{reason}");
                if let Some(plan) = &mut self.plan {
                    plan.record_warning(now, &self.settings.policy);
                }
                // Keep the warning on disk, so a restart does not give it again.
                if let (Some(access), Some(refresh)) = (self.saved_access.clone(), self.refresh.clone()) {
                    self.save(&access, &refresh, clock_pair()).await;
                }
                self.engine.emit(Event::AttentionNeeded { name: self.name.clone(), reason });
                self.publish(false);
            }
            _ => {
                // The end of the serving window: the token is no longer handed out.
                if self.serve_until().is_some_and(|end| end <= now) {
                    self.access = None;
                    self.publish(true);
                }
            }
        }
    }

    /// Waits until the plan lets an admin's request be sent ([`plan::Session::for_admin`]: the floor between two
    /// requests holds whoever asks), or refuses it while the cloud's `Retry-After` lasts, which no caller moves.
    async fn admitted(&self, attempt: Attempt) -> Result<(), EngineError> {
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
    async fn admin_refresh(&mut self) -> Result<i64, EngineError> {
        self.admitted(Attempt::Refresh).await?;
        self.refresh_now().await.map(|()| self.expires_at())
    }

    /// One refresh with the current refresh token, now: whoever calls this asked the plan first (its schedule,
    /// [`plan::Session::for_caller`] or [`plan::Session::for_admin`]). Never two at once: only this task refreshes.
    async fn refresh_now(&mut self) -> Result<(), EngineError> {
        let cloud = self.cloud()?;
        let Some(sent) = self.refresh.clone() else { return Err(self.needs_login_error()) };
        self.busy = true;
        self.publish(false);
        // On disk before it is sent: should the answer never be saved (a crash, a lost reply), a refused refresh
        // token can then be explained.
        if self.refresh_sent_at.is_none()
            && let Some(access) = self.saved_access.clone()
        {
            self.refresh_sent_at = Some(super::unix_seconds(SystemTime::now()));
            self.save(&access, &sent, clock_pair()).await;
        }
        let sent_at = self.refresh_sent_at.unwrap_or_else(|| super::unix_seconds(SystemTime::now()));
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
                    self.too_short(grant.access, refresh, grant.expires_in, pair).await;
                    return Err(self.unavailable());
                }
                self.take(grant.access, refresh, pair).await;
                tracing::info!(token = %self.name, expires_in_s = grant.expires_in.as_secs(), "refreshed the access token");
                Ok(())
            }
            Err(Failure::Transient { why, retry_after, in_doubt }) => {
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
    fn session_lost(&mut self) {
        // The cloud refused the session: its last access token is most likely revoked with it, and the state says
        // needs-login, so it is not handed out any more.
        self.access = None;
        self.refresh = None;
        self.publish(true);
        let reason = self.needs_login_error().to_string();
        self.engine.emit(Event::AttentionNeeded { name: self.name.clone(), reason });
    }

    async fn forget_saved(&self) {
        if let Some(store) = self.settings.store.clone()
            && let Err(e) = on_blocking_pool(store, self.name.clone(), StoreOp::Remove).await
        {
            tracing::error!(token = %self.name, "could not remove the saved session: {e}");
        }
    }

    /// Writes the session (these tokens and the planner's durable facts) to the store; a failure is logged
    /// and raised as `AttentionNeeded`, since the session would not survive a restart. The write (with its
    /// fsyncs) runs on the blocking pool; the session waits for it, the rest of the daemon does not.
    async fn save(&self, access: &AccessToken, refresh: &RefreshToken, pair: ClockPair) {
        if let (Some(store), Some(plan)) = (self.settings.store.clone(), &self.plan) {
            let saved = SavedSession {
                username: self.username.clone(),
                refresh_token: refresh.clone(),
                access_token: access.clone(),
                session: plan.to_persisted(pair),
                refresh_sent_at: self.refresh_sent_at,
            };
            let result = on_blocking_pool(store, self.name.clone(), StoreOp::Save(Box::new(saved))).await;
            if let Err(e) = result {
                let reason = format!(
                    "the session of {:?} could not be saved ({e}); it will not survive a restart: check the state \
                     directory's permissions and free space",
                    self.name.as_str()
                );
                tracing::error!(token = %self.name, "{reason}");
                self.engine.emit(Event::AttentionNeeded { name: self.name.clone(), reason });
            }
        }
    }

    /// A grant whose access token lives too short to be served (the plan counted it as a transient failure): the
    /// refresh token is kept and saved (the cloud may have rotated it), the access token is not served.
    async fn too_short(&mut self, access: AccessToken, refresh: RefreshToken, life: Duration, pair: ClockPair) {
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
    async fn take(&mut self, access: AccessToken, refresh: RefreshToken, pair: ClockPair) {
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

    async fn human_login(
        &mut self,
        username: String,
        password: Password,
        code: Option<MfaCode>,
    ) -> Result<i64, EngineError> {
        self.admitted(Attempt::Login).await?;
        let cloud = self.cloud()?;
        self.busy = true;
        self.publish(false);
        let result = cloud.login(&username, &password, code.as_ref()).await;
        self.busy = false;
        match result {
            Ok(grant) => {
                self.username = username;
                self.lift_hold().await;
                self.start_session(grant).await;
                tracing::info!(token = %self.name, "logged in");
                Ok(self.expires_at())
            }
            Err(failure) => {
                // A human's failed login leaves the session as it was.
                self.publish(false);
                Err(self.login_error(failure))
            }
        }
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
    async fn start_session(&mut self, grant: super::cloud::Grant) {
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
    async fn login_unattended(&mut self) -> bool {
        if let Some(hold) = self.hold {
            tracing::debug!(token = %self.name, ?hold, "unattended login is held; waiting for a Login or other credentials");
            return false;
        }
        let Some(unattended) = self.unattended.clone() else { return false };
        let Ok(cloud) = self.cloud() else { return false };
        self.busy = true;
        self.publish(false);
        let result =
            cloud.login_unattended(&unattended.username, &unattended.password, unattended.totp_seed.as_ref()).await;
        self.busy = false;
        let pair = clock_pair();
        let policy = self.settings.policy.clone();
        match result {
            Ok(grant) => {
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

    /// Holds unattended login for `reason` and saves the hold (with a fingerprint of the configured credentials, never
    /// the credentials) so that a restart keeps it. A failed save is logged: the hold then lasts until a restart.
    async fn set_hold(&mut self, reason: HoldReason) {
        self.hold = Some(reason);
        let (Some(store), Some(unattended)) = (self.settings.store.clone(), self.unattended.as_ref()) else { return };
        let mut salt = [0_u8; 16];
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt).is_err() {
            tracing::warn!(token = %self.name, "no random salt for the hold's fingerprint; the hold is not saved");
            return;
        }
        let record = HoldRecord {
            name: self.name.clone(),
            reason,
            since: super::unix_seconds(SystemTime::now()),
            salt: hex(&salt),
            fingerprint: unattended.fingerprint(&salt),
            message: self.last_error.clone(),
        };
        if let Err(e) = on_blocking_pool(store, self.name.clone(), StoreOp::SaveHold(Box::new(record))).await {
            tracing::error!(token = %self.name, "could not save that unattended login is held ({e}); a restart would try the credentials again");
        }
    }

    /// Ends a hold of unattended login, on disk too.
    async fn lift_hold(&mut self) {
        if self.hold.take().is_none() {
            return;
        }
        tracing::info!(token = %self.name, "unattended login is no longer held");
        if let Some(store) = self.settings.store.clone()
            && let Err(e) = on_blocking_pool(store, self.name.clone(), StoreOp::RemoveHold).await
        {
            tracing::error!(token = %self.name, "could not remove the saved hold of unattended login: {e}");
        }
    }

    /// At start: a saved hold applies while the configured credentials are the ones it was made for; otherwise
    /// (other credentials, or none any more) it is removed.
    fn restore_hold(&mut self, store: &dyn SessionStore) {
        let hold = match store.load_hold(&self.name) {
            Ok(Some(hold)) => hold,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(token = %self.name, "{e}; unattended login is not held");
                return;
            }
        };
        let salt: Option<Vec<u8>> = (0..hold.salt.len())
            .step_by(2)
            .map(|i| hold.salt.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
            .collect();
        let same = match (self.unattended.as_ref(), salt) {
            (Some(unattended), Some(salt)) => unattended.fingerprint(&salt) == hold.fingerprint,
            _ => false,
        };
        if !same {
            tracing::info!(token = %self.name, "the credentials changed since unattended login was held ({:?} at {}); it is tried again", hold.reason, time::rfc3339(hold.since));
            if let Err(e) = store.remove_hold(&self.name) {
                tracing::error!(token = %self.name, "could not remove the saved hold of unattended login: {e}");
            }
            return;
        }
        self.hold = Some(hold.reason);
        self.last_error = format!("{} (since {})", hold.message, time::rfc3339(hold.since));
        tracing::warn!(token = %self.name, "unattended login is held: {}", self.last_error);
    }

    async fn logout(&mut self) -> Result<(), EngineError> {
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
        let result = match self.settings.store.clone() {
            Some(store) => on_blocking_pool(store, self.name.clone(), StoreOp::Remove).await.map_err(|why| {
                EngineError::Unavailable {
                    name: self.name.clone(),
                    why: format!("the saved session could not be removed: {why}"),
                }
            }),
            None => Ok(()),
        };
        tracing::info!(token = %self.name, "logged out");
        self.publish(true);
        result
    }

    /// Checks the access token against the cloud; a rejected one is refreshed now (or the session flagged).
    async fn probe(&mut self) {
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

    /// Copies the session's view into the entry and tells the world. `token_changed`: the served token changed.
    fn publish(&mut self, token_changed: bool) {
        let Some(entry) = self.entry.upgrade() else { return };
        let now = now();
        let policy = self.policy();
        let pair = clock_pair();
        let (state, attention, next_refresh_at, refresh_expires_at) = match &self.plan {
            Some(plan) => {
                let state = match plan.state(now, policy) {
                    TokenState::Valid => State::Valid,
                    TokenState::Retrying => State::Retrying,
                    TokenState::Expired => State::Expired,
                    TokenState::NeedsLogin => State::NeedsLogin,
                };
                let next = match plan.plan(policy, now) {
                    Action::Refresh { at, .. } | Action::Retry { at, .. } | Action::ReLogin { at } => {
                        pair.wall_at(at).unix_seconds()
                    }
                    Action::WarnLapse { .. } | Action::NeedsLogin { .. } => 0,
                };
                let refresh = time::expires_at(plan.refresh_deadline().as_ref());
                (state, plan.attention_needed(now, policy), next, refresh)
            }
            None => (State::NeedsLogin, true, 0, 0),
        };
        let state = if self.busy { State::Refreshing } else { state };
        let expires_at = if self.access.is_some() { self.expires_at() } else { 0 };
        {
            let mut live = write(&entry.live);
            live.token = self.access.as_ref().map(|a| TokenValue::Access(a.clone()));
            live.serve_until = self.serve_until();
            let status = &mut live.status;
            status.state = state;
            status.expires_at = expires_at;
            status.refresh_token_expires_at = refresh_expires_at;
            status.next_refresh_at = next_refresh_at;
            status.attention_needed = attention;
            status.last_error.clone_from(&self.last_error);
        }
        self.engine.emit(Event::StatusChanged(self.name.clone()));
        if token_changed {
            self.engine.emit(Event::TokenChanged { name: self.name.clone(), expires_at });
        }
    }
}

/// Whether two sets of unattended credentials are the same (compared without copying or printing them).
fn same_credentials(a: Option<&Unattended>, b: Option<&Unattended>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.username == b.username
                && a.password.expose_secret() == b.password.expose_secret()
                && a.totp_seed.as_ref().map(ExposeSecret::expose_secret)
                    == b.totp_seed.as_ref().map(ExposeSecret::expose_secret)
        }
        _ => false,
    }
}

/// A duration in words: "3 days", "5 hours", "12 minutes", "40 seconds".
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 2 * 3600 => format!("{} hours", s / 3600),
        s if s >= 120 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}
