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
//! - before a refresh is sent the session records when (`refresh_sent_at`); a record found at restart marks a
//!   refresh whose answer never reached the disk;
//! - one task at a time owns a token's session: a new task for the same name waits for the old one to end (two
//!   tasks would each present the same refresh token, and once the cloud rotated it the second loses the session);
//! - the state directory is read and written on the blocking pool, never on the runtime thread: the restore
//!   when a task starts as well as every save.
//!
//! The task's code is in rooms by job: `task` (the loop, what is due, what the entry shows), `refresh` (serving
//! callers and refreshing), `login` (logins and logouts) and `persist` (what is kept in the state directory:
//! restore, saves, holds of unattended login).

mod login;
mod persist;
mod refresh;
mod task;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use token_model::ids::TokenName;
use token_model::plan::{self, Policy};
use token_model::secret::{AccessToken, ExposeSecret, MfaCode, Password, RefreshToken, TotpSeed};
use token_model::time::{self, ClockPair, MonoTime, WallTime};
use tokio::sync::{mpsc, oneshot, watch};

use super::cloud::Cloud;
use super::{Engine, EngineError, Entry, Live, Served, StateStore};
use crate::state_file::HoldReason;

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
    /// ([`crate::state_file::HoldRecord`]) without keeping them. Each part is length-prefixed, so two different sets of
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

/// What every session needs from outside.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// The cloud client; `None` only where no user token can log in (every attempt is `Unavailable`).
    pub cloud: Option<Cloud>,
    /// Where sessions are saved; `None` keeps them in memory only.
    pub store: Option<Arc<StateStore>>,
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
    /// A reader found no token to serve: the session may make one early attempt (see `plan::Session::for_caller`).
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
    /// Closed (its sender dropped, nothing is ever sent) once the task has taken up its saved session.
    restoring: watch::Receiver<()>,
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

    /// Returns once the task has taken up its saved session (read on the blocking pool), so that the entry shows
    /// the restored session. A task that waits for the previous task of its token (see [`spawn`]) is not waited
    /// for: that one may be in the middle of a refresh.
    pub(crate) async fn restored(&self) {
        // An error is the answer: the sender is gone once the session is restored.
        let _ = self.restoring.clone().changed().await;
    }

    pub(crate) async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(reply)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Now on the boot-time clock, which keeps counting while the machine is suspended (see [`crate::clock`]).
fn now() -> MonoTime {
    crate::clock::boot_now()
}

/// Both clocks read together.
fn clock_pair() -> ClockPair {
    ClockPair::new(now(), WallTime::from_system_time(SystemTime::now()))
}

/// Starts the session task of a user token, which first restores its saved session; returns the entry holding the
/// handle. [`SessionHandle::restored`] says when the restore is done.
pub(crate) fn spawn(
    engine: Engine,
    template: &Entry,
    unattended: Option<Unattended>,
    settings: &SessionSettings,
) -> Arc<Entry> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (restored, restoring) = watch::channel(());
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
            restoring,
        }),
    });
    let mut session = SessionTask {
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
        mfa_variant: None,
    };
    // One task at a time owns a token's session: a token removed and added again by quick reloads gets its new
    // task only once the old one has finished its refresh and saved it, so two tasks never hold one refresh token.
    let owned = owner.clone().try_lock_owned().ok();
    let restored = match owned {
        Some(_) => Some(restored),
        None => {
            tracing::debug!(token = %entry.name, "waiting for the previous task of this token to save and stop");
            None
        }
    };
    tokio::spawn(async move {
        let guard = match owned {
            Some(guard) => guard,
            None => owner.lock_owned().await,
        };
        session.restore().await;
        drop(restored);
        session.run(rx, guard).await;
    });
    entry
}

/// What one session task owns: the plan, the tokens it holds and what it needs to refresh and log in.
struct SessionTask {
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
    /// The MFA step's names that last completed a login of this session, tried first by the next (in memory).
    mfa_variant: Option<login_flow::MfaFields>,
}

impl SessionTask {
    fn policy(&self) -> &Policy {
        &self.settings.policy
    }

    fn jitter() -> f64 {
        fastrand::f64()
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

    fn cloud(&self) -> Result<Cloud, EngineError> {
        self.settings.cloud.clone().ok_or_else(|| EngineError::Unavailable {
            name: self.name.clone(),
            why: "no cloud client is configured".to_owned(),
        })
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
