//! Refresh planning, backoff, lapse warnings and the serving rule for a user session.
//!
//! A [`Session`] holds what the planner needs to know about one user session (no secrets: the daemon keeps
//! the tokens next to it): the access token's deadline, the refresh token's assumed deadline
//! ([`Policy::refresh_token_lifetime`] after it was issued), whether the server rotates refresh tokens
//! ([`Rotation`]), whether unattended re-login is configured, the consecutive transient failures and which
//! lapse warnings were already given.
//!
//! The daemon's loop is:
//! 1. [`Session::plan`] (or [`plan`] when there may be no session) gives the next [`Action`] and its time;
//! 2. the daemon waits until then, performs it, and classifies the result once as an [`Outcome`];
//! 3. [`Session::apply`] moves the session on (for [`Action::WarnLapse`], [`Session::record_warning`]);
//! 4. it persists [`Session::to_persisted`] (the new refresh token first, then the state) and plans again.
//!
//! The module's rooms: [`Policy`] and its arithmetic (`policy.rs`), what callers and admins may make a session do
//! (`caller.rs`), and the session on disk (`persisted.rs`); the session and its plan are here.
//!
//! Randomness is passed in: every transition takes a `jitter` in `[0, 1)` which the session keeps, so
//! planning is a pure, stable function of the session, the [`Policy`] and `now`.
//!
//! The local clock never decides that a refresh token is dead: past its *assumed* deadline the plan still
//! tries a refresh when the access token needs one, and only the server's [`Outcome::Verdict`] leads to a
//! re-login or [`Action::NeedsLogin`]. (A wall clock that jumped makes a restored deadline look passed; the
//! next reply's `Date` header puts a fixed window's deadline right again.)
//!
//! Requests are spaced: no two requests (refresh or login) of a session are planned closer together than
//! [`Policy::refresh_floor`] ([`Session::last_request`] is when the last one's outcome was applied), and a
//! grant whose access token lives less than that ([`Policy::too_short`]) is not served: it counts as a
//! transient failure, though its refresh token is taken. A second request within seconds of the first can only
//! bring what the first brought, while each refresh rotates the refresh token and opens another moment in which a
//! lost answer costs the session.
//!
//! The serving rule is [`Session::valid_for`]: a token is handed out only while it has more than its margin
//! left (plus whatever the caller asked for); [`Session::serve_until`] says until when. The margin is
//! [`Policy::margin_for`] the access token's life: [`Policy::safety_margin`], or a fifth of the life when
//! that is smaller, so a token that lives no longer than the safety margin is still served. A caller who
//! wants more than the token in hand has asks [`Session::for_caller`], which decides whether that caller
//! may make the session refresh; an admin's `Refresh` or `Login` asks [`Session::for_admin`] in the same way. Static device and ground tokens have no expiry: [`valid_for`] with `None`.
//!
//! ```
//! use std::time::Duration;
//! use token_model::plan::{Action, Attempt, CallerAction, Grant, Outcome, Policy, RefreshTokenChange, Session};
//! use token_model::time::{ClockPair, MonoTime, WallTime};
//!
//! let policy = Policy::default();
//! let at = |s: u64| ClockPair::new(MonoTime::from_origin(Duration::from_secs(s)), WallTime::from_unix_seconds(1_700_000_000 + s as i64));
//! let mono = |s: u64| MonoTime::from_origin(Duration::from_secs(s));
//!
//! // A login reply arrived at t = 0 s with a one-hour access token.
//! let grant = Grant::new(at(0), Duration::from_secs(3599), RefreshTokenChange::Rotated);
//! let mut session = Session::logged_in(&grant, &policy, false, 0.5);
//! assert!(session.valid_for(mono(10), Duration::from_secs(600), &policy));
//! // Served until 60 s (the safety margin) before it lapses.
//! assert_eq!(session.serve_until(&policy), Some(mono(3599 - 60)));
//!
//! // The plan: refresh at 75–80 % of the access token's life (here 77.5 %, from the jitter 0.5).
//! let Action::Refresh { at: when, .. } = session.plan(&policy, mono(10)) else { unreachable!() };
//! assert!(when > mono(2690) && when < mono(2880));
//!
//! // A caller who wants more than the token has left cannot make it refresh before half its life.
//! let want = Duration::from_secs(3599 - 60 - 100);
//! assert_eq!(
//!     session.for_caller(mono(200), want, &policy),
//!     CallerAction::Refuse { valid_for: Duration::from_secs(3599 - 200 - 61), until: Some(mono(1799) + Duration::from_millis(500)) },
//! );
//!
//! // The refresh failed for a transient reason: retry after a short backoff, never before the floor (5 s).
//! session.apply(Attempt::Refresh, Outcome::Transient { retry_after: None }, at(2800), &policy, 0.3);
//! let Action::Retry { at: retry, failures: 1, .. } = session.plan(&policy, mono(2800)) else { unreachable!() };
//! assert_eq!(retry, mono(2805));
//!
//! // It worked the second time, with a new refresh token: the server rotates (a sliding window).
//! let reply = Grant::new(at(2805), Duration::from_secs(3599), RefreshTokenChange::Rotated);
//! session.apply(Attempt::Refresh, Outcome::Success(reply), at(2805), &policy, 0.9);
//! assert_eq!(session.failures(), 0);
//! assert_eq!(session.last_request(), Some(mono(2805)));
//!
//! // A cloud that grants 20 s access tokens: the margin shrinks to 4 s, the refresh comes at 15–16 s.
//! let short = Grant::new(at(4000), Duration::from_secs(20), RefreshTokenChange::Rotated);
//! session.apply(Attempt::Refresh, Outcome::Success(short), at(4000), &policy, 0.0);
//! assert_eq!(policy.margin_for(Duration::from_secs(20)), Duration::from_secs(4));
//! assert_eq!(session.serve_until(&policy), Some(mono(4016)));
//! assert_eq!(session.plan(&policy, mono(4000)).at(), Some(mono(4015)));
//! //! ```

mod caller;
mod persisted;
mod policy;

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use self::caller::{AdminAction, CallerAction, for_admin};
pub use self::persisted::PersistedSession;
pub use self::policy::Policy;
use self::policy::clamp_jitter;
use crate::secret::{ExposeSecret, RefreshToken};
use crate::time::{ClockOffset, ClockPair, Deadline, MonoTime, WallTime};

/// Whether the server rotates refresh tokens, as observed on the last successful refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rotation {
    /// No refresh seen yet: planned like [`Rotation::Sliding`] until the first refresh tells.
    #[default]
    Unknown,
    /// Each refresh returns a new refresh token with a fresh lifetime: refreshing keeps the session alive.
    Sliding,
    /// Refreshes repeat or omit the refresh token: its deadline stands, only a new login goes past it.
    Fixed,
}

/// What a successful reply did with the refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefreshTokenChange {
    /// The reply carries a refresh token different from the one sent (or it is a login reply with one).
    Rotated,
    /// The reply repeats the refresh token that was sent.
    Repeated,
    /// The reply carries no refresh token.
    Omitted,
}

impl RefreshTokenChange {
    /// Classifies a refresh reply: `sent` is the refresh token used, `received` the one in the reply.
    pub fn of(sent: &RefreshToken, received: Option<&RefreshToken>) -> Self {
        match received {
            None => RefreshTokenChange::Omitted,
            Some(r) if r.expose_secret() == sent.expose_secret() => RefreshTokenChange::Repeated,
            Some(_) => RefreshTokenChange::Rotated,
        }
    }
}

/// The facts of a successful token reply the planner needs (the tokens themselves stay with the daemon).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// When the reply arrived (monotonic and wall readings taken together).
    pub arrived: ClockPair,
    /// The reply's `expires_in`: the access token's life from `arrived`.
    pub expires_in: Duration,
    /// What the reply did with the refresh token.
    pub refresh_token: RefreshTokenChange,
    /// The reply's HTTP `Date` header, if any (server clock; only used to estimate clock offset).
    pub server_date: Option<SystemTime>,
    /// The grant's `.issued`, if any (server clock; only used to estimate clock offset).
    pub issued: Option<SystemTime>,
}

impl Grant {
    /// A grant without server times.
    pub fn new(arrived: ClockPair, expires_in: Duration, refresh_token: RefreshTokenChange) -> Self {
        Grant { arrived, expires_in, refresh_token, server_date: None, issued: None }
    }

    /// The same grant with the server times of the reply.
    pub fn with_server_times(self, server_date: Option<SystemTime>, issued: Option<SystemTime>) -> Self {
        Grant { server_date, issued, ..self }
    }

    fn offset(&self) -> Option<ClockOffset> {
        ClockOffset::estimate(self.server_date, self.issued, self.arrived.wall)
    }
}

/// Which network operation an [`Outcome`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attempt {
    /// `grant_type=refresh_token`.
    Refresh,
    /// A login: unattended re-login planned by [`Action::ReLogin`], or a human's successful login.
    Login,
}

/// The one classification of an attempt's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// New tokens arrived.
    Success(Grant),
    /// Anything that is not a verdict (5xx, 429, timeouts, resets, DNS, unreadable replies): retry later.
    Transient {
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// An HTTP 400 from `/login`: the refresh token (or the stored credentials) will not work again.
    Verdict,
}

/// Why the access or refresh token is refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefreshReason {
    /// The access token reached 75–80 % of its life (or there is no usable access token).
    AccessToken,
    /// The refresh token itself needs renewing (sliding window), or under a fixed window one last access
    /// token is fetched before it lapses.
    RefreshToken,
}

/// Why a human must log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NeedsLoginReason {
    /// There is no session (never logged in, or logged out).
    NoSession,
    /// The server rejected the refresh token, and unattended re-login is not configured.
    RefreshRejected,
    /// The server rejected the refresh token and the unattended re-login was rejected too.
    ReLoginRejected,
}

/// The next thing the daemon must do, and when (a time at or before `now` means "now").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Refresh the access token at `at`.
    Refresh {
        /// When.
        at: MonoTime,
        /// Why.
        reason: RefreshReason,
    },
    /// Retry a failed attempt at `at` (backoff after a transient failure).
    Retry {
        /// When.
        at: MonoTime,
        /// What to retry.
        attempt: Attempt,
        /// Consecutive transient failures so far.
        failures: u32,
    },
    /// Log in again with the configured credentials (unattended re-login) at `at`.
    ReLogin {
        /// When.
        at: MonoTime,
    },
    /// Warn (signal `AttentionNeeded`) at `at` that the refresh token lapses at `lapses_at`; then call
    /// [`Session::record_warning`].
    WarnLapse {
        /// When.
        at: MonoTime,
        /// When the refresh token lapses.
        lapses_at: Deadline,
    },
    /// Nothing to do until a human logs in (the last access token may still be served until it lapses).
    NeedsLogin {
        /// Why.
        reason: NeedsLoginReason,
    },
}

impl Action {
    /// When the action is due; `None` for [`Action::NeedsLogin`] (wait for a human).
    pub fn at(&self) -> Option<MonoTime> {
        match *self {
            Action::Refresh { at, .. } | Action::Retry { at, .. } | Action::ReLogin { at } => Some(at),
            Action::WarnLapse { at, .. } => Some(at),
            Action::NeedsLogin { .. } => None,
        }
    }
}

/// The plan when there may be no session: without one, wait for a human to log in.
pub fn plan(session: Option<&Session>, policy: &Policy, now: MonoTime) -> Action {
    match session {
        Some(s) => s.plan(policy, now),
        None => Action::NeedsLogin { reason: NeedsLoginReason::NoSession },
    }
}

/// The serving rule for any token: valid for at least `want` beyond `now` plus the safety `margin`.
/// `None` is a token without expiry (device and ground tokens): always valid.
pub fn valid_for(deadline: Option<MonoTime>, now: MonoTime, want: Duration, margin: Duration) -> bool {
    match deadline {
        None => true,
        Some(d) => d.saturating_since(now) > margin.saturating_add(want),
    }
}

/// The D-Bus `State` of a user session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenState {
    /// A valid access token is served.
    Valid,
    /// Transient failures, still serving a valid access token.
    Retrying,
    /// No valid access token (transient failures outlasted it, or it lapsed); a refresh is pending.
    Expired,
    /// A human must log in.
    NeedsLogin,
}

impl TokenState {
    /// The name used on D-Bus: `valid`, `retrying`, `expired`, `needs-login`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Valid => "valid",
            TokenState::Retrying => "retrying",
            TokenState::Expired => "expired",
            TokenState::NeedsLogin => "needs-login",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AccessWindow {
    obtained: MonoTime,
    deadline: Deadline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PendingRetry {
    attempt: Attempt,
    at: MonoTime,
}

/// The planner's view of one user session. Holds no secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    access: Option<AccessWindow>,
    /// `None`: unknown (e.g. restored under an untrusted wall clock); never assumed later than it may be.
    refresh_deadline: Option<Deadline>,
    /// The refresh token's deadline on the server's clock, when the server told its time.
    refresh_deadline_server: Option<WallTime>,
    rotation: Rotation,
    unattended_relogin: bool,
    refresh_rejected: bool,
    relogin_rejected: bool,
    failures: u32,
    retry: Option<PendingRetry>,
    lapse_warned: Option<Duration>,
    offset: Option<ClockOffset>,
    known_good: Option<WallTime>,
    /// When the outcome of the last request (refresh or login) was applied; `None` before any in this run.
    last_request: Option<MonoTime>,
    /// The cloud's `Retry-After` (at most [`Policy::retry_after_max`]): no request is planned or granted to a
    /// caller before this.
    not_before: Option<MonoTime>,
    /// The start-up spread ([`Session::spread_start`]): no request is planned or granted to a caller before this.
    spread_until: Option<MonoTime>,
    jitter: f64,
}

impl Session {
    /// A session from a login reply. `unattended_relogin`: credentials for re-login are configured.
    pub fn logged_in(grant: &Grant, policy: &Policy, unattended_relogin: bool, jitter: f64) -> Self {
        let mut s = Session {
            access: None,
            refresh_deadline: None,
            refresh_deadline_server: None,
            rotation: Rotation::Unknown,
            unattended_relogin,
            refresh_rejected: false,
            relogin_rejected: false,
            failures: 0,
            retry: None,
            lapse_warned: None,
            offset: None,
            known_good: None,
            last_request: Some(grant.arrived.mono),
            not_before: None,
            spread_until: None,
            jitter: clamp_jitter(jitter),
        };
        s.take_login(grant, policy);
        s
    }

    /// Takes the access token of `grant`, or, when it is too short to serve ([`Policy::too_short`]), keeps
    /// the access token in hand and counts the grant as a transient failure (retried as a refresh).
    fn take_access(&mut self, grant: &Grant, policy: &Policy) {
        if policy.too_short(grant.expires_in) {
            self.failures = self.failures.saturating_add(1);
            let delay = self.retry_delay(policy, grant.arrived.mono, None);
            self.retry = Some(PendingRetry { attempt: Attempt::Refresh, at: grant.arrived.mono + delay });
            return;
        }
        self.access = Some(AccessWindow {
            obtained: grant.arrived.mono,
            deadline: Deadline::after(grant.arrived, grant.expires_in),
        });
        self.failures = 0;
        self.retry = None;
    }

    /// The clock facts of a reply: the server's offset and a wall time known to have passed.
    fn take_clock(&mut self, grant: &Grant) {
        let off = grant.offset();
        if off.is_some() {
            self.offset = off;
        }
        // A time known to have passed on both clocks: the earlier of our reading and the server's (a local
        // clock running years ahead must not poison it, nor a server clock running ahead of ours).
        let local = grant.arrived.wall;
        let seen = off.map_or(local, |o| o.server_time(local).min(local));
        self.known_good = Some(self.known_good.map_or(seen, |k| k.max(seen)));
    }

    fn new_refresh_window(&mut self, grant: &Grant, policy: &Policy) {
        let life = policy.refresh_token_lifetime;
        self.refresh_deadline = Some(Deadline::after(grant.arrived, life));
        self.refresh_deadline_server = grant.offset().map(|o| o.server_time(grant.arrived.wall).saturating_add(life));
        self.lapse_warned = None;
        self.refresh_rejected = false;
    }

    fn take_login(&mut self, grant: &Grant, policy: &Policy) {
        self.take_clock(grant);
        self.relogin_rejected = false;
        self.new_refresh_window(grant, policy);
        self.take_access(grant, policy);
        if grant.refresh_token == RefreshTokenChange::Omitted {
            // Nothing to refresh with: the session ends with this access token (or the one in hand, when
            // this one is too short), and there is no refresh to retry.
            self.refresh_rejected = true;
            self.failures = 0;
            self.retry = None;
        }
    }

    /// Applies the outcome of `attempt`, classified once, at `at` (when it arrived or failed).
    ///
    /// `jitter` in `[0, 1)` is fresh randomness; it chooses the next refresh point and the backoff.
    /// A human's failed login is not applied (the session stays as it was); a successful one is applied as
    /// `(Attempt::Login, Outcome::Success(..))`. `at` becomes [`Session::last_request`].
    ///
    /// A grant whose access token is too short to serve ([`Policy::too_short`]) still gives its refresh-token
    /// facts (rotation, a new window; the daemon saves the new refresh token), but its access token is not
    /// taken: the one in hand (if any) stays, and the grant counts as a transient failure retried as a
    /// refresh. A login grant without a refresh token leaves nothing to refresh with, as usual.
    pub fn apply(&mut self, attempt: Attempt, outcome: Outcome, at: ClockPair, policy: &Policy, jitter: f64) {
        self.jitter = clamp_jitter(jitter);
        self.last_request = Some(at.mono);
        // The first request after a start has gone: the start-up spread is over.
        self.spread_until = None;
        // A server's Retry-After is a floor for every later request, whoever asks; any other answer ends it.
        self.not_before = match outcome {
            Outcome::Transient { retry_after: Some(ra) } => Some(at.mono + ra.min(policy.retry_after_max)),
            _ => None,
        };
        match (attempt, outcome) {
            (Attempt::Login, Outcome::Success(grant)) => self.take_login(&grant, policy),
            (Attempt::Refresh, Outcome::Success(grant)) => self.take_refresh(&grant, policy),
            (_, Outcome::Transient { retry_after }) => {
                self.failures = self.failures.saturating_add(1);
                let delay = self.retry_delay(policy, at.mono, retry_after);
                self.retry = Some(PendingRetry { attempt, at: at.mono + delay });
            }
            (Attempt::Refresh, Outcome::Verdict) => {
                self.failures = 0;
                self.retry = None;
                self.refresh_rejected = true;
            }
            (Attempt::Login, Outcome::Verdict) => {
                self.failures = 0;
                self.retry = None;
                self.relogin_rejected = true;
            }
        }
    }

    fn take_refresh(&mut self, grant: &Grant, policy: &Policy) {
        self.take_clock(grant);
        self.refresh_rejected = false;
        match grant.refresh_token {
            RefreshTokenChange::Rotated => {
                self.rotation = Rotation::Sliding;
                self.new_refresh_window(grant, policy);
            }
            RefreshTokenChange::Repeated | RefreshTokenChange::Omitted => {
                self.rotation = Rotation::Fixed;
                let arrived = grant.arrived;
                // The server's clock is the authority on a deadline it keeps: re-derive ours from it.
                if let (Some(server_deadline), Some(off)) = (self.refresh_deadline_server, grant.offset()) {
                    let left = server_deadline.millis_since(off.server_time(arrived.wall));
                    self.refresh_deadline =
                        (left > 0).then(|| Deadline::after(arrived, Duration::from_millis(left.unsigned_abs())));
                } else if self.refresh_deadline.is_some_and(|d| d.mono() <= arrived.mono) {
                    // The server still took a token we thought lapsed: our deadline was wrong.
                    self.refresh_deadline = None;
                }
            }
        }
        self.take_access(grant, policy);
    }

    /// The backoff delay, never beyond the remaining (servable) lifetime. (The plan never retries before
    /// [`Policy::refresh_floor`] either; that is applied when planning.)
    fn retry_delay(&self, policy: &Policy, now: MonoTime, retry_after: Option<Duration>) -> Duration {
        let backoff = policy.backoff(self.failures, self.jitter);
        let access_left = self.access.map(|a| a.deadline.remaining(now).saturating_sub(self.margin(policy)));
        let refresh_left = self.refresh_deadline.map(|d| d.remaining(now).saturating_sub(policy.safety_margin));
        let limit = [access_left, refresh_left].into_iter().flatten().find(|d| !d.is_zero());
        let delay = match limit {
            Some(l) => backoff.min(l),
            None => backoff,
        };
        // The server's Retry-After is a floor even when the token lapses first: asking earlier would be refused.
        delay.max(retry_after.map_or(Duration::ZERO, |ra| ra.min(policy.retry_after_max)))
    }

    /// Records that the lapse warning planned by [`Action::WarnLapse`] was given at `now`.
    pub fn record_warning(&mut self, now: MonoTime, policy: &Policy) {
        let Some(deadline) = self.refresh_deadline else { return };
        let left = deadline.remaining(now);
        let margin = self.margin(policy);
        let leads = policy.warnings_desc();
        // The warning that was planned, and every smaller lead already reached: one warning covers them.
        let planned = leads.iter().copied().find(|&l| self.lapse_warned.is_none_or(|w| l < w));
        let reached = leads.iter().rev().copied().find(|&l| l.saturating_add(margin) >= left);
        let covered = match (planned, reached) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.lapse_warned = match (self.lapse_warned, covered) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// The next action and its time. Pure and stable: the same session, policy and `now` give the same plan.
    ///
    /// A request ([`Action::Refresh`], [`Action::Retry`], [`Action::ReLogin`]) is never planned before
    /// [`Session::last_request`] plus [`Policy::refresh_floor`].
    pub fn plan(&self, policy: &Policy, now: MonoTime) -> Action {
        if let Some(reason) = self.needs_login() {
            return Action::NeedsLogin { reason };
        }
        let renewal = self.renewal(policy, now);
        // A warning comes first only when it is due strictly earlier: renewing wins a tie.
        match self.warning_at(policy, now) {
            Some(warning) if warning.at() < renewal.at() => warning,
            _ => renewal,
        }
    }

    fn needs_login(&self) -> Option<NeedsLoginReason> {
        if self.refresh_rejected && (!self.unattended_relogin || self.relogin_rejected) {
            Some(if self.relogin_rejected {
                NeedsLoginReason::ReLoginRejected
            } else {
                NeedsLoginReason::RefreshRejected
            })
        } else {
            None
        }
    }

    /// The next request (refresh, retry or re-login), no earlier than the floor after the last one. Only
    /// meaningful when no login is needed.
    fn renewal(&self, policy: &Policy, now: MonoTime) -> Action {
        // Candidates in priority order for equal times.
        let mut best: Option<Action> = None;
        let mut offer = |a: Action| {
            if best.is_none_or(|b| a.at() < b.at()) {
                best = Some(a);
            }
        };
        if let Some(r) = self.retry {
            offer(Action::Retry { at: r.at, attempt: r.attempt, failures: self.failures });
        } else if self.refresh_rejected {
            // No usable refresh token, unattended re-login configured: log in when the access token would
            // have been refreshed (at once after a rejected refresh).
            offer(Action::ReLogin { at: self.access_refresh_at(policy, now) });
        } else {
            offer(self.refresh_at(policy, now));
            if let Some(at) = self.relogin_at(policy, now) {
                offer(Action::ReLogin { at });
            }
        }
        let floor = self.floor(policy);
        match best.unwrap_or(Action::Refresh { at: now, reason: RefreshReason::AccessToken }) {
            Action::Refresh { at, reason } => Action::Refresh { at: at.max(floor), reason },
            Action::Retry { at, attempt, failures } => Action::Retry { at: at.max(floor), attempt, failures },
            Action::ReLogin { at } => Action::ReLogin { at: at.max(floor) },
            other => other,
        }
    }

    /// The earliest time the next request may be sent: [`Policy::refresh_floor`] after the last one, and not
    /// before the cloud's `Retry-After` ([`Session::not_before`]) or the start-up spread ([`Session::spread_until`]).
    fn floor(&self, policy: &Policy) -> MonoTime {
        let floor = self.last_request.map_or(MonoTime::ORIGIN, |l| l + policy.refresh_floor);
        [self.not_before, self.spread_until].into_iter().flatten().fold(floor, MonoTime::max)
    }

    /// Spreads the first request after a start at `start` (a restored session): not before `start` plus this
    /// machine's `offset` for the session (in `[0, window)`, from [`crate::fleet::Spread`]), unless the access token
    /// in hand stops being served, or the refresh token lapses (less the safety margin), before the window ends:
    /// then the request goes before that, at once when it is already within its margin
    /// ([`crate::fleet::startup_at`]). A token that has already lapsed (or one restored under an unconfirmed clock,
    /// whose life is unknown) has nothing to lose by waiting: its request is spread. A fleet that starts in the same second (after a
    /// power cut) reaches the cloud across the window. Callers are held back too; an admin's request is not.
    pub fn spread_start(&mut self, start: MonoTime, offset: Duration, window: Duration, policy: &Policy) {
        if window.is_zero() {
            self.spread_until = None;
            return;
        }
        // Only a token that has not lapsed yet has something to lose by waiting: one within its margin goes at once.
        let access = self.access.filter(|a| a.deadline.mono() > start).and_then(|_| self.serve_until(policy));
        let refresh =
            self.refresh_deadline.filter(|d| d.mono() > start).map(|d| d.mono().saturating_sub(policy.safety_margin));
        let lapses = [access, refresh].into_iter().flatten().min();
        self.spread_until = Some(crate::fleet::startup_at(start, offset, window, lapses));
    }

    /// Until when the start-up spread holds requests back ([`Session::spread_start`]); `None` without one.
    pub fn spread_until(&self) -> Option<MonoTime> {
        self.spread_until
    }

    /// Until when the cloud asked (`Retry-After`, at most [`Policy::retry_after_max`]) that no request be sent;
    /// `None` when it did not, or once an answer other than that one came.
    pub fn not_before(&self) -> Option<MonoTime> {
        self.not_before
    }

    /// The serving margin of the access token in hand ([`Policy::margin_for`] its life); the full safety
    /// margin without one.
    fn margin(&self, policy: &Policy) -> Duration {
        self.access_lifetime().map_or(policy.safety_margin, |life| policy.margin_for(life))
    }

    /// 75–80 % into the access token's life (as the jitter chooses), never inside its margin, never before
    /// `now`; `now` without a usable access token.
    fn access_refresh_at(&self, policy: &Policy, now: MonoTime) -> MonoTime {
        match self.access {
            Some(a) => {
                let life = a.deadline.mono().saturating_since(a.obtained);
                let planned = a.obtained + life.mul_f64(policy.fraction(self.jitter));
                planned.min(a.deadline.mono().saturating_sub(policy.margin_for(life))).max(now)
            }
            None => now,
        }
    }

    /// The refresh: when the access token needs it, or earlier when the refresh token does. The refresh
    /// token keeps the full safety margin (its deadline counts from a reply's arrival, whatever the access
    /// token's life).
    fn refresh_at(&self, policy: &Policy, now: MonoTime) -> Action {
        let margin = policy.safety_margin;
        let f = policy.fraction(self.jitter);
        let access = self.access_refresh_at(policy, now);
        let mut best = Action::Refresh { at: access, reason: RefreshReason::AccessToken };
        if let Some(rt) = self.refresh_deadline {
            let cap = rt.mono().saturating_sub(margin);
            if cap > now {
                let trigger = match self.rotation {
                    Rotation::Fixed => cap,
                    Rotation::Sliding | Rotation::Unknown => {
                        rt.mono().saturating_sub(policy.refresh_token_lifetime.mul_f64(1.0 - f)).min(cap)
                    }
                };
                // Only if the access token in hand predates the trigger; otherwise it was already done.
                let needed = self.access.is_none_or(|a| a.obtained < trigger);
                if needed && trigger.max(now) < access {
                    best = Action::Refresh { at: trigger.max(now), reason: RefreshReason::RefreshToken };
                }
            }
        }
        best
    }

    fn relogin_at(&self, policy: &Policy, now: MonoTime) -> Option<MonoTime> {
        if !self.unattended_relogin || self.relogin_rejected || self.rotation != Rotation::Fixed {
            return None;
        }
        let rt = self.refresh_deadline?;
        // Never more than a quarter of the window ahead, so a short configured lifetime cannot make every
        // login due again at once.
        let lead = policy.relogin_lead.min(policy.refresh_token_lifetime / 4);
        Some(rt.mono().saturating_sub(lead).max(now))
    }

    fn warning_at(&self, policy: &Policy, now: MonoTime) -> Option<Action> {
        let rt = self.refresh_deadline?;
        if rt.mono() <= now || self.refresh_rejected {
            return None;
        }
        let lead = policy.warnings_desc().into_iter().find(|&l| self.lapse_warned.is_none_or(|w| l < w))?;
        // The margin keeps the warning at least `lead` ahead even though the deadline counts from arrival.
        let at = rt.mono().saturating_sub(lead.saturating_add(self.margin(policy))).max(now);
        Some(Action::WarnLapse { at, lapses_at: rt })
    }

    /// The serving rule: the access token may be handed out for at least `want` more, beyond its margin
    /// ([`Policy::margin_for`] its life). `GetToken` uses zero; for `GetTokenValidFor` see
    /// [`Session::for_caller`].
    pub fn valid_for(&self, now: MonoTime, want: Duration, policy: &Policy) -> bool {
        self.access.is_some_and(|a| valid_for(Some(a.deadline.mono()), now, want, self.margin(policy)))
    }

    /// Until when the access token in hand is served: its deadline less its margin ([`Policy::margin_for`]
    /// its life). `None` without a usable access token. [`Session::valid_for`] with zero is `now` before this.
    pub fn serve_until(&self, policy: &Policy) -> Option<MonoTime> {
        self.access.map(|a| a.deadline.mono().saturating_sub(self.margin(policy)))
    }

    /// When the outcome of the session's last request (refresh or login) was applied: the `at` of the last
    /// [`Session::apply`], or the grant's arrival for [`Session::logged_in`]. `None` for a restored session
    /// that has sent nothing since.
    pub fn last_request(&self) -> Option<MonoTime> {
        self.last_request
    }

    /// The D-Bus `State` at `now`.
    pub fn state(&self, now: MonoTime, policy: &Policy) -> TokenState {
        if matches!(self.plan(policy, now), Action::NeedsLogin { .. }) {
            TokenState::NeedsLogin
        } else if !self.valid_for(now, Duration::ZERO, policy) {
            TokenState::Expired
        } else if self.failures > 0 {
            TokenState::Retrying
        } else {
            TokenState::Valid
        }
    }

    /// Whether a human should look (D-Bus `AttentionNeeded`): a login is needed or a lapse warning was given.
    pub fn attention_needed(&self, now: MonoTime, policy: &Policy) -> bool {
        self.lapse_warned.is_some() || matches!(self.plan(policy, now), Action::NeedsLogin { .. })
    }

    /// The access token's deadline, if there is a usable one.
    pub fn access_deadline(&self) -> Option<Deadline> {
        self.access.map(|a| a.deadline)
    }

    /// How long the latest access token was granted for, from its arrival; `None` before any. A fresh token
    /// is valid for no longer: a caller who wants more than this, less the safety margin, waits in vain.
    pub fn access_lifetime(&self) -> Option<Duration> {
        self.access.map(|a| a.deadline.mono().saturating_since(a.obtained))
    }

    /// The refresh token's assumed deadline; `None` when unknown.
    pub fn refresh_deadline(&self) -> Option<Deadline> {
        self.refresh_deadline
    }

    /// The rotation behaviour observed so far.
    pub fn rotation(&self) -> Rotation {
        self.rotation
    }

    /// Consecutive transient failures.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The latest estimate of the server's clock offset.
    pub fn clock_offset(&self) -> Option<ClockOffset> {
        self.offset
    }

    /// The latest wall time known to have passed (see [`PersistedSession::known_good`]).
    pub fn known_good(&self) -> Option<WallTime> {
        self.known_good
    }

    /// Turns unattended re-login on or off (e.g. after a config reload).
    pub fn set_unattended_relogin(&mut self, on: bool) {
        self.unattended_relogin = on;
    }

    /// New credentials for unattended re-login were configured: a re-login the cloud refused with the old ones
    /// may be tried again.
    pub fn credentials_changed(&mut self) {
        self.relogin_rejected = false;
    }
}
