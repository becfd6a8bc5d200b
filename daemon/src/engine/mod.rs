//! The token engine: the registry of configured tokens, what each serves right now, and the user sessions
//! that keep themselves alive.
//!
//! - Every configured token is an `Entry` whose current value sits behind a short-lived lock that is never
//!   held across an `.await`, so [`Engine::get_token`] is a lookup and a reference-count increment.
//! - Each user token has a session task (`session`) that owns the refresh token and runs the refresh plan on
//!   the boot-time clock (`crate::clock::Sleeper`): one refresh at a time, callers asking for a fresher
//!   token queue on that task and share its result.
//! - Changes go out as [`Event`]s on a broadcast channel; the D-Bus layer turns them into signals and
//!   `PropertiesChanged`, token files and the service status line follow them. No event carries a secret. An event
//!   names the one token it is about, and a subscriber reads that token again, never every token; only
//!   [`Event::Reconfigured`] (a configuration applied) or events missed by a lagging subscriber ask for every
//!   token to be read again ([`Event::rereads`]).

mod cloud;
mod error;
mod events;
pub(crate) mod session;
mod store;

pub use self::cloud::Cloud;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use token_model::ids::{DeviceId, GroundId, TokenKind, TokenName};
use token_model::plan::Policy;
use token_model::scope::{self, Scope};
use token_model::secret::{AccessToken, ExposeSecret, StaticToken};
use token_model::time::MonoTime;
use tokio::sync::broadcast;

pub use self::error::EngineError;
pub use self::events::{Event, Reread, Tally};
pub use self::session::{SessionHandle, SessionSettings, Unattended};
pub use self::store::StateStore;
use crate::access::{self, Caller, Principals};

/// The state of a token, as shown in `State` and `ListTokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// A token is held and served.
    Valid,
    /// A refresh (or login) is under way; the last good token is still served.
    Refreshing,
    /// Transient failures; the last good token is still served and retries are planned.
    Retrying,
    /// Transient failures outlasted the token; retries go on.
    Expired,
    /// No usable refresh token: someone must log in.
    NeedsLogin,
    /// A device or ground token the cloud rejects.
    Revoked,
}

impl State {
    /// The name used on D-Bus: `valid`, `refreshing`, `retrying`, `expired`, `needs-login`, `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Valid => "valid",
            State::Refreshing => "refreshing",
            State::Retrying => "retrying",
            State::Expired => "expired",
            State::NeedsLogin => "needs-login",
            State::Revoked => "revoked",
        }
    }
}

/// Everything about a token that may be shown to anyone: no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The state.
    pub state: State,
    /// When the served token expires, Unix seconds; 0 when it has no known expiry or no token is held.
    pub expires_at: i64,
    /// When the refresh token lapses, Unix seconds; 0 when unknown or not a user token.
    pub refresh_token_expires_at: i64,
    /// When the next refresh is planned, Unix seconds; 0 when none is planned.
    pub next_refresh_at: i64,
    /// Whether a person must act (log in, replace a revoked token, a refresh token about to lapse).
    pub attention_needed: bool,
    /// The last error, without secrets; empty when the last attempt succeeded.
    pub last_error: String,
}

impl Status {
    fn new(state: State) -> Self {
        Self {
            state,
            expires_at: 0,
            refresh_token_expires_at: 0,
            next_refresh_at: 0,
            attention_needed: false,
            last_error: String::new(),
        }
    }
}

/// A token value as served: shared, never copied into plain strings by the engine.
#[derive(Clone)]
pub enum TokenValue {
    /// A user's access token.
    Access(Arc<AccessToken>),
    /// A device or ground token.
    Static(Arc<StaticToken>),
}

impl ExposeSecret for TokenValue {
    fn expose_secret(&self) -> &str {
        match self {
            TokenValue::Access(token) => token.expose_secret(),
            TokenValue::Static(token) => token.expose_secret(),
        }
    }
}

impl std::fmt::Debug for TokenValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenValue([redacted])")
    }
}

/// A token handed to a caller, with its expiry in Unix seconds (0: no known expiry).
#[derive(Debug, Clone)]
pub struct Served {
    /// The token.
    pub token: TokenValue,
    /// Unix seconds; 0 for no known expiry.
    pub expires_at: i64,
}

/// One configured token, as the engine is given it (secrets already read from their files).
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// The name.
    pub name: TokenName,
    /// Who may read it (admins and root always may).
    pub readers: Principals,
    /// What kind of token, with what the kind needs.
    pub provision: Provision,
    /// Files that hold the token while it is served (`[[token]] files`), kept by [`crate::token_files`].
    pub files: Vec<PathBuf>,
}

/// How a configured token is provided: a user session, a device token or a ground token.
#[derive(Debug, Clone)]
pub enum Provision {
    /// A user session, with optional credentials for unattended re-login.
    User(Option<Unattended>),
    /// A device token.
    Device {
        /// The device it belongs to.
        device: DeviceId,
        /// The token, read from its file or credential.
        token: StaticToken,
    },
    /// A ground token.
    Ground {
        /// The ground it belongs to.
        ground: GroundId,
        /// The ground's devices when configured; `None` to learn them from the cloud.
        devices: Option<Vec<DeviceId>>,
        /// The token, read from its file or credential.
        token: StaticToken,
    },
}

impl Provision {
    fn kind(&self) -> TokenKind {
        match self {
            Provision::User(_) => TokenKind::User,
            Provision::Device { .. } => TokenKind::Device,
            Provision::Ground { .. } => TokenKind::Ground,
        }
    }
}

/// The whole configuration the engine works from. Replaced as a whole on reload.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Who may administer the daemon (root always may).
    pub admins: Principals,
    /// The tokens.
    pub tokens: Vec<TokenSpec>,
}

/// What is served right now, and what is shown about it.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) token: Option<TokenValue>,
    /// The last instant, on the boot-time clock, at which the token may be handed out (its expiry less the serving
    /// margin).
    pub(crate) serve_until: Option<MonoTime>,
    pub(crate) status: Status,
}

/// One configured token.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) name: TokenName,
    pub(crate) kind: TokenKind,
    pub(crate) readers: Principals,
    /// `[[token]] files`.
    pub(crate) files: Vec<PathBuf>,
    pub(crate) scope: RwLock<Scope>,
    /// Whether a ground's devices come from the config (else learned by the maintenance job).
    pub(crate) devices_configured: bool,
    pub(crate) live: RwLock<Live>,
    pub(crate) session: Option<session::SessionHandle>,
}

impl Entry {
    pub(crate) fn status(&self) -> Status {
        read(&self.live).status.clone()
    }

    pub(crate) fn scope(&self) -> Scope {
        read(&self.scope).clone()
    }

    /// The token if it may be served now and stays valid `for_at_least` from now.
    fn serve(&self, now: MonoTime, for_at_least: Duration) -> Option<Served> {
        let live = read(&self.live);
        let token = live.token.as_ref()?;
        if live.status.state == State::Revoked {
            return None;
        }
        if let Some(until) = live.serve_until
            && now + for_at_least > until
        {
            return None;
        }
        Some(Served { token: token.clone(), expires_at: live.status.expires_at })
    }

    /// Adds this token's files to `list`, each with what it should hold now (see [`Engine::token_files`]).
    fn token_files(&self, now: MonoTime, list: &mut Vec<(PathBuf, TokenName, Principals, Option<TokenValue>)>) {
        if self.files.is_empty() {
            return;
        }
        let serving = matches!(self.status().state, State::Valid | State::Refreshing | State::Retrying);
        let value = self.serve(now, Duration::ZERO).filter(|_| serving).map(|served| served.token);
        for file in &self.files {
            list.push((file.clone(), self.name.clone(), self.readers.clone(), value.clone()));
        }
    }

    /// The error for a token that cannot be served now.
    fn unservable(&self) -> EngineError {
        let live = read(&self.live);
        let name = self.name.clone();
        let why = if live.status.last_error.is_empty() { None } else { Some(live.status.last_error.clone()) };
        match live.status.state {
            State::Revoked => EngineError::Revoked(name),
            State::NeedsLogin => EngineError::NeedsLogin { name, why: why.unwrap_or_else(|| "no session".to_owned()) },
            _ => EngineError::Unavailable { name, why: why.unwrap_or_else(|| "no valid token yet".to_owned()) },
        }
    }
}

struct Registry {
    admins: Principals,
    entries: HashMap<Box<str>, Arc<Entry>>,
}

struct Inner {
    registry: RwLock<Arc<Registry>>,
    events: broadcast::Sender<Event>,
    sessions: RwLock<SessionSettings>,
    /// Per user token, the lock its session task holds for its whole life (see [`Engine::session_owner`]).
    owners: std::sync::Mutex<HashMap<TokenName, Arc<tokio::sync::Mutex<()>>>>,
    /// One permit per call waiting on a session ([`MAX_WAITING_CALLS`]).
    waiting: Arc<tokio::sync::Semaphore>,
}

/// The token engine. Cheap to clone: every clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("tokens", &self.names()).finish_non_exhaustive()
    }
}

pub(crate) fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// Unix seconds of a wall-clock time (0 before 1970).
pub(crate) fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// How many callers may wait on one user session at once (`GetTokenValidFor` that needs a refresh, `Login`,
/// `Refresh`, `Logout`): they queue on the session's task, one at a time. A caller beyond this is refused at once
/// with `Unavailable`; `GetToken` never waits and is not counted.
pub const MAX_WAITING_PER_SESSION: usize = 32;

/// How many calls may wait in the engine at once, over every session. A call beyond this is refused at once
/// with `Unavailable`, so callers cannot make the daemon hold an unbounded number of waiting calls.
pub const MAX_WAITING_CALLS: usize = 128;

impl Engine {
    /// Builds the engine and starts a session task for each user token, restoring saved sessions (on the blocking
    /// pool: [`Engine::restored`] says when they are taken up).
    /// Must be called within a Tokio runtime.
    pub fn start(config: EngineConfig, sessions: SessionSettings) -> Self {
        let (events, _) = broadcast::channel(1024);
        let engine = Engine {
            inner: Arc::new(Inner {
                registry: RwLock::new(Arc::new(Registry { admins: Principals::default(), entries: HashMap::new() })),
                events,
                sessions: RwLock::new(sessions),
                owners: std::sync::Mutex::new(HashMap::new()),
                waiting: Arc::new(tokio::sync::Semaphore::new(MAX_WAITING_CALLS)),
            }),
        };
        engine.apply(config);
        engine
    }

    /// The lock a session task of `name` holds while it runs: a new task for the same name waits for the old one
    /// to end (and save), so two tasks never hold the same refresh token. Locks no task holds are dropped.
    pub(crate) fn session_owner(&self, name: &TokenName) -> Arc<tokio::sync::Mutex<()>> {
        let mut owners = self.inner.owners.lock().unwrap_or_else(|e| e.into_inner());
        owners.retain(|_, lock| Arc::strong_count(lock) > 1);
        owners.entry(name.clone()).or_default().clone()
    }

    /// The permits of calls waiting on sessions, shared by every session's handle.
    pub(crate) fn waiting_calls(&self) -> Arc<tokio::sync::Semaphore> {
        self.inner.waiting.clone()
    }

    /// Receives every [`Event`] from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    pub(crate) fn emit(&self, event: Event) {
        // No receiver is fine: nobody is listening yet.
        let _ = self.inner.events.send(event);
    }

    fn registry(&self) -> Arc<Registry> {
        read(&self.inner.registry).clone()
    }

    /// The configured token names, sorted.
    pub fn names(&self) -> Vec<TokenName> {
        let mut names: Vec<TokenName> = self.registry().entries.values().map(|e| e.name.clone()).collect();
        names.sort();
        names
    }

    /// How user sessions are kept: `sealed`, `unsealed` (on disk in clear: no state key) or `memory` (not saved).
    pub fn session_storage(&self) -> &'static str {
        read(&self.inner.sessions).store.as_ref().map_or("memory", |store| store.storage())
    }

    /// Whether the wall clock counted as confirmed when the system was last asked (at start and at each reload).
    pub fn clock_confirmed(&self) -> bool {
        read(&self.inner.sessions).clock.confirmed()
    }

    /// The cloud's REST base URL (`[api] url` as requests are sent), empty when the engine has no cloud client.
    pub fn api_url(&self) -> String {
        read(&self.inner.sessions).cloud.as_ref().map_or_else(String::new, |cloud| cloud.api_url())
    }

    /// Applies new refresh timings (`[refresh]`) to every user session, running or started later. Each
    /// session plans again at once; a refresh-token lifetime counts from the session's next grant.
    pub fn set_policy(&self, policy: Policy) {
        write(&self.inner.sessions).policy = policy.clone();
        for (_, session) in self.user_sessions() {
            session.set_policy(policy.clone());
        }
    }

    /// Applies a (new) configuration: keeps the running session of every user token that is still configured
    /// as a user token, starts sessions for new ones, stops removed ones, and takes new static token values.
    pub fn apply(&self, config: EngineConfig) {
        let old = self.registry();
        let mut entries = HashMap::new();
        for spec in config.tokens {
            let kind = spec.provision.kind();
            let previous = old.entries.get(spec.name.as_str()).filter(|e| e.kind == kind);
            let entry = match spec.provision {
                Provision::User(unattended) => {
                    let handle = match previous.and_then(|p| p.session.clone()) {
                        Some(handle) => {
                            handle.reconfigure(unattended.clone());
                            Some(handle)
                        }
                        None => None,
                    };
                    let live = previous.map(|p| {
                        let l = read(&p.live);
                        Live { token: l.token.clone(), serve_until: l.serve_until, status: l.status.clone() }
                    });
                    let entry = Arc::new(Entry {
                        name: spec.name.clone(),
                        kind,
                        readers: spec.readers,
                        files: spec.files,
                        scope: RwLock::new(Scope::User),
                        devices_configured: false,
                        live: RwLock::new(live.unwrap_or(Live {
                            token: None,
                            serve_until: None,
                            status: Status::new(State::NeedsLogin),
                        })),
                        session: handle.clone(),
                    });
                    match handle {
                        Some(handle) => {
                            handle.rebind(&entry);
                            entry
                        }
                        None => {
                            let settings = read(&self.inner.sessions).clone();
                            session::spawn(self.clone(), &entry, unattended, &settings)
                        }
                    }
                }
                Provision::Device { device, token } => static_entry(
                    spec.name,
                    kind,
                    (spec.readers, spec.files),
                    Scope::Device(device),
                    false,
                    token,
                    previous,
                ),
                Provision::Ground { ground, devices, token } => {
                    let configured = devices.is_some();
                    let devices = match devices {
                        Some(devices) => devices,
                        None => match previous.map(|p| p.scope()) {
                            Some(Scope::Ground { ground: g, devices }) if g == ground => devices.into_iter().collect(),
                            _ => Vec::new(),
                        },
                    };
                    static_entry(
                        spec.name,
                        kind,
                        (spec.readers, spec.files),
                        Scope::ground(ground, devices),
                        configured,
                        token,
                        previous,
                    )
                }
            };
            entries.insert(entry.name.as_str().into(), entry);
        }
        for (name, entry) in &old.entries {
            let kept = entries.get(name).is_some_and(|e| e.session.is_some() && e.session == entry.session);
            if let (Some(handle), false) = (&entry.session, kept) {
                handle.stop();
            }
        }
        *write(&self.inner.registry) = Arc::new(Registry { admins: config.admins, entries });
        // One event for the whole configuration, not one per token: each subscriber reads every token once.
        self.emit(Event::Reconfigured);
    }

    fn entry(&self, name: &TokenName) -> Result<Arc<Entry>, EngineError> {
        let registry = read(&self.inner.registry);
        match registry.entries.get(name.as_str()) {
            Some(entry) => Ok(entry.clone()),
            None => Err(EngineError::UnknownToken(name.as_str().to_owned())),
        }
    }

    /// The entry `name` if `caller` may read it.
    fn readable(&self, name: &TokenName, caller: &Caller) -> Result<Arc<Entry>, EngineError> {
        let registry = read(&self.inner.registry);
        let Some(entry) = registry.entries.get(name.as_str()) else {
            return Err(EngineError::UnknownToken(name.as_str().to_owned()));
        };
        if access::may_read(&entry.readers, &registry.admins, caller) {
            Ok(entry.clone())
        } else {
            Err(EngineError::AccessDenied(format!(
                "uid {} may not read token {:?}; add the user or one of its groups to the token's readers in the config \
                 and reload the daemon",
                caller.uid,
                entry.name.as_str()
            )))
        }
    }

    /// Checks that `caller` is an admin.
    pub fn require_admin(&self, caller: &Caller, what: &str) -> Result<(), EngineError> {
        if access::is_admin(&self.registry().admins, caller) {
            Ok(())
        } else {
            Err(EngineError::AccessDenied(format!(
                "uid {} may not {what}: only root and the admins of [daemon] admins may; run it as root or add the user \
                 or one of its groups to the admins in the config",
                caller.uid
            )))
        }
    }

    /// The token `name` as it may be served now. No I/O, no waiting.
    pub fn get_token(&self, name: &TokenName, caller: &Caller) -> Result<Served, EngineError> {
        let entry = self.readable(name, caller)?;
        entry.serve(crate::clock::boot_now(), Duration::ZERO).ok_or_else(|| {
            // A retrying session may make one early attempt for a reader (it decides; this does not wait).
            if let Some(session) = &entry.session {
                session.nudge(caller.uid);
            }
            entry.unservable()
        })
    }

    /// The token `name`, valid for at least `wanted` from now; for a user token, refreshes first if needed
    /// (sharing a refresh already under way). The caller bounds `wanted` (D-Bus: at most a day).
    pub async fn get_token_valid_for(
        &self,
        name: &TokenName,
        wanted: Duration,
        caller: &Caller,
    ) -> Result<Served, EngineError> {
        let entry = self.readable(name, caller)?;
        if let Some(served) = entry.serve(crate::clock::boot_now(), wanted) {
            return Ok(served);
        }
        match &entry.session {
            Some(session) => session.ensure_valid_for(wanted, caller.uid).await,
            None => Err(entry.unservable()),
        }
    }

    /// The least-privileged token `caller` may read that may access `device_id`.
    pub fn get_token_for_device(&self, device: &DeviceId, caller: &Caller) -> Result<(TokenName, Served), EngineError> {
        let registry = self.registry();
        let now = crate::clock::boot_now();
        let candidates: BTreeMap<&TokenName, (Scope, &Arc<Entry>)> = registry
            .entries
            .values()
            .filter(|e| access::may_read(&e.readers, &registry.admins, caller))
            .filter(|e| e.serve(now, Duration::ZERO).is_some())
            .map(|e| (&e.name, (e.scope(), e)))
            .collect();
        let chosen = scope::least_privileged(candidates.iter().map(|(name, (scope, _))| (*name, scope)), device)
            .ok_or_else(|| EngineError::NoTokenForDevice(device.clone()))?;
        let entry = candidates[chosen].1;
        let served = entry.serve(now, Duration::ZERO).ok_or_else(|| entry.unservable())?;
        Ok((entry.name.clone(), served))
    }

    /// Name, kind and status of every token `caller` may read, sorted by name.
    pub fn list(&self, caller: &Caller) -> Vec<(TokenName, TokenKind, Status)> {
        let registry = self.registry();
        let mut list: Vec<_> = registry
            .entries
            .values()
            .filter(|e| access::may_read(&e.readers, &registry.admins, caller))
            .map(|e| (e.name.clone(), e.kind, e.status()))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// Whether `caller` may read the token `name` (and so its status): `AccessDenied` when not, `UnknownToken` when
    /// it is no longer configured.
    pub fn may_read(&self, name: &TokenName, caller: &Caller) -> Result<(), EngineError> {
        self.readable(name, caller).map(|_| ())
    }

    /// Kind and status of a token, for its D-Bus object (no access check: callers check [`Engine::may_read`]).
    pub fn status(&self, name: &TokenName) -> Option<(TokenKind, Status)> {
        self.registry().entries.get(name.as_str()).map(|e| (e.kind, e.status()))
    }

    fn session(&self, name: &TokenName, what: &'static str) -> Result<session::SessionHandle, EngineError> {
        let entry = self.entry(name)?;
        entry.session.clone().ok_or(EngineError::NotAUserToken { name: entry.name.clone(), kind: entry.kind, what })
    }

    /// Logs the user session `name` in with a password, and the MFA code when the account asks for one.
    /// Returns the new access token's expiry (Unix seconds).
    pub async fn login(
        &self,
        name: &TokenName,
        username: String,
        password: token_model::secret::Password,
        code: Option<token_model::secret::MfaCode>,
    ) -> Result<i64, EngineError> {
        self.session(name, "Login")?.login(username, password, code).await
    }

    /// Refreshes the user session `name` now. Returns the new expiry (Unix seconds).
    pub async fn refresh(&self, name: &TokenName) -> Result<i64, EngineError> {
        self.session(name, "Refresh")?.refresh().await
    }

    /// Forgets the user session `name` (its saved state too).
    pub async fn logout(&self, name: &TokenName) -> Result<(), EngineError> {
        self.session(name, "Logout")?.logout().await
    }

    /// Sets the state of a static token after a health probe of `probed`, the value the probe sent: `Ok(())`
    /// valid, `Err(reason)` revoked. The verdict applies only while the entry still holds that value; when a
    /// reload replaced it during the probe, the verdict is about a value no longer served and is dropped.
    pub fn set_static_health(&self, name: &TokenName, probed: &StaticToken, verdict: Result<(), String>) {
        let Ok(entry) = self.entry(name) else { return };
        if entry.kind == TokenKind::User {
            return;
        }
        let newly_revoked = {
            let mut live = write(&entry.live);
            let holds_probed = matches!(
                &live.token,
                Some(TokenValue::Static(current)) if current.expose_secret() == probed.expose_secret()
            );
            if holds_probed {
                let was = live.status.state;
                match &verdict {
                    Ok(()) => {
                        live.status.state = State::Valid;
                        live.status.attention_needed = false;
                        live.status.last_error.clear();
                    }
                    Err(reason) => {
                        live.status.state = State::Revoked;
                        live.status.attention_needed = true;
                        live.status.last_error.clone_from(reason);
                    }
                }
                Some(was != State::Revoked && verdict.is_err())
            } else {
                None
            }
        };
        let Some(newly_revoked) = newly_revoked else {
            tracing::debug!(
                token = %name,
                "health verdict dropped: the token's value changed (reload) while it was being probed"
            );
            return;
        };
        self.emit(Event::StatusChanged(name.clone()));
        if newly_revoked {
            let reason = EngineError::Revoked(name.clone()).to_string();
            tracing::warn!(token = %name, "{reason}");
            self.emit(Event::AttentionNeeded { name: name.clone(), reason });
        }
    }

    /// Replaces the known devices of a ground token with those the cloud listed for `probed`, the ground the
    /// probe asked about. They apply only while the entry is still that ground and its devices are not
    /// configured; when a reload changed either during the probe, the list is dropped.
    pub fn set_ground_devices(&self, name: &TokenName, probed: &GroundId, devices: Vec<DeviceId>) {
        let Ok(entry) = self.entry(name) else { return };
        let applied = {
            let mut scope = write(&entry.scope);
            match &*scope {
                Scope::Ground { ground, .. } if ground == probed && !entry.devices_configured => {
                    *scope = Scope::ground(ground.clone(), devices);
                    true
                }
                _ => false,
            }
        };
        if !applied {
            tracing::debug!(
                token = %name,
                ground = %probed,
                "ground devices dropped: the token's ground changed (reload) while it was being synchronised"
            );
        }
    }

    /// Device and ground tokens with what a probe needs: (name, scope, token, devices configured).
    pub fn static_tokens(&self) -> Vec<(TokenName, Scope, TokenValue, bool)> {
        let registry = self.registry();
        let mut list: Vec<_> = registry
            .entries
            .values()
            .filter(|e| e.kind != TokenKind::User)
            .filter_map(|e| read(&e.live).token.clone().map(|t| (e.name.clone(), e.scope(), t, e.devices_configured)))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// Asks every user session to check its token against the cloud (`GET /me/grounds`) and its refresh
    /// token's lapse date; used by maintenance jobs.
    pub fn user_sessions(&self) -> Vec<(TokenName, session::SessionHandle)> {
        let registry = self.registry();
        let mut list: Vec<_> =
            registry.entries.values().filter_map(|e| e.session.clone().map(|s| (e.name.clone(), s))).collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// Every configured token file with its token, the token's readers, and what the file should hold now: the
    /// token while it is served in state `valid`, `refreshing` or `retrying`, else `None` (no file). Sorted by path.
    pub fn token_files(&self) -> Vec<(PathBuf, TokenName, Principals, Option<TokenValue>)> {
        let registry = self.registry();
        let now = crate::clock::boot_now();
        let mut list = Vec::new();
        for entry in registry.entries.values() {
            entry.token_files(now, &mut list);
        }
        // Paths are unique across tokens (the config refuses duplicates), so an unstable sort gives one order; it
        // links no merge sort for this element type (about 7 KiB of the stripped daemon).
        list.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// Returns once every session that [`Engine::start`] or [`Engine::apply`] started has taken up its saved session
    /// (read on the blocking pool, off the runtime thread), so that what is served and shown from then on includes
    /// the restored sessions.
    pub async fn restored(&self) {
        for (_, session) in self.user_sessions() {
            session.restored().await;
        }
    }

    /// [`Engine::token_files`] of the tokens `names` only (those still configured), sorted by path: what a status
    /// event about them changes.
    pub fn token_files_of<'a>(
        &self,
        names: impl IntoIterator<Item = &'a TokenName>,
    ) -> Vec<(PathBuf, TokenName, Principals, Option<TokenValue>)> {
        let registry = self.registry();
        let now = crate::clock::boot_now();
        let mut list = Vec::new();
        for name in names {
            if let Some(entry) = registry.entries.get(name.as_str()) {
                entry.token_files(now, &mut list);
            }
        }
        list.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// Persists every session and stops the session tasks (on shutdown).
    pub async fn shutdown(&self) {
        for (_, session) in self.user_sessions() {
            session.shutdown().await;
        }
    }
}

fn static_entry(
    name: TokenName,
    kind: TokenKind,
    (readers, files): (Principals, Vec<PathBuf>),
    scope: Scope,
    devices_configured: bool,
    token: StaticToken,
    previous: Option<&Arc<Entry>>,
) -> Arc<Entry> {
    // A token that was revoked stays revoked until its value changes.
    let same_value = previous
        .and_then(|p| read(&p.live).token.clone())
        .is_some_and(|old| old.expose_secret() == token.expose_secret());
    let status = match previous {
        Some(p) if same_value => p.status(),
        _ => Status::new(State::Valid),
    };
    Arc::new(Entry {
        name,
        kind,
        readers,
        files,
        scope: RwLock::new(scope),
        devices_configured,
        live: RwLock::new(Live { token: Some(TokenValue::Static(Arc::new(token))), serve_until: None, status }),
        session: None,
    })
}
