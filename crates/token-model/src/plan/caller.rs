//! What a request from outside the plan may make a session do: a caller who wants a fresher token
//! ([`Session::for_caller`]), and an admin's `Refresh` or `Login` ([`Session::for_admin`]). The daemon asks these and
//! carries out the answer; it derives no timing rule of its own.
//!
//! A caller never causes a login, and refreshes early only once the token has lived half its life (with pending
//! transient failures, one early attempt per [`Policy::caller_retry_gap`]): a reader that could trigger a login
//! would retry refused credentials as often as it asks, and one that could refresh a young token would make every
//! impatient caller a refresh. An admin's `Refresh` waits out the refresh floor like any other request.

use std::time::Duration;

use super::{Action, Attempt, Policy, Session};
use crate::time::MonoTime;

/// What a caller asking for a token valid for `want` more may make the session do at `now`
/// ([`Session::for_caller`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerAction {
    /// Serve the access token in hand.
    Serve,
    /// Refresh now (the caller waits for it).
    RefreshNow,
    /// No token a refresh could give lives that long: `most` is the longest validity a fresh token gives.
    TooLong {
        /// The longest validity a fresh token gives (its life less its margin and a second).
        most: Duration,
    },
    /// Not now.
    Refuse {
        /// The longest validity that can be served right now, to the second (zero if none).
        valid_for: Duration,
        /// When a caller's request may next make a difference (`None`: only a login helps).
        until: Option<MonoTime>,
    },
    /// A login is needed (the plan is [`Action::NeedsLogin`]): the daemon answers NeedsLogin; it never
    /// logs in for a caller.
    NeedsLogin,
}

/// What an admin's `Refresh` or `Login` may make the session do at `now` ([`Session::for_admin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    /// Send the request at `at`, `now` or later: the admin's call waits until then.
    SendAt(MonoTime),
    /// Refuse: the cloud asked (`Retry-After`) that no request be sent before `until`.
    Refuse {
        /// Until when the cloud asked for quiet.
        until: MonoTime,
    },
}

/// [`Session::for_admin`] when there may be no session: without one, nothing holds a request back.
pub fn for_admin(session: Option<&Session>, attempt: Attempt, now: MonoTime, policy: &Policy) -> AdminAction {
    match session {
        Some(s) => s.for_admin(attempt, now, policy),
        None => AdminAction::SendAt(now),
    }
}

impl Session {
    /// What a caller asking at `now` for the access token valid for `want` more (D-Bus `GetTokenValidFor`)
    /// may make the session do. The first rule that applies decides:
    ///
    /// 1. [`CallerAction::Serve`] when [`Session::valid_for`] holds;
    /// 2. [`CallerAction::NeedsLogin`] when the plan is [`Action::NeedsLogin`];
    /// 3. [`CallerAction::TooLong`] when the access token's life is no more than `want` plus its margin:
    ///    no refresh can help;
    /// 4. a pending re-login refuses: a caller never triggers a login. `until` is `None` while it is not
    ///    due, and its time once due (the daemon's own timer performs it);
    /// 5. before half of the access token's life has passed, refuse until then: callers cannot use up the
    ///    session by refreshing early;
    /// 6. while a retry after transient failures is pending, a caller may trigger one early attempt per
    ///    [`Policy::caller_retry_gap`] since the last request;
    /// 7. otherwise refresh now, once [`Policy::refresh_floor`] has passed since the last request.
    ///
    /// Rules 6 and 7 never grant a request before the cloud's `Retry-After` ([`Session::not_before`]) or the
    /// start-up spread ([`Session::spread_until`]): no caller moves either. [`CallerAction::RefreshNow`] is never
    /// returned before [`Session::last_request`] plus the floor. The daemon performs it and applies its outcome,
    /// which moves `last_request` on: between two applied outcomes at most one caller gets it.
    pub fn for_caller(&self, now: MonoTime, want: Duration, policy: &Policy) -> CallerAction {
        if self.valid_for(now, want, policy) {
            return CallerAction::Serve;
        }
        if self.needs_login().is_some() {
            return CallerAction::NeedsLogin;
        }
        let margin = self.margin(policy);
        if let Some(life) = self.access_lifetime()
            && life <= want.saturating_add(margin)
        {
            let most = life.saturating_sub(margin).saturating_sub(Duration::from_secs(1));
            return CallerAction::TooLong { most };
        }
        // What can be served now: to the second, so that asking for exactly this much is served.
        let valid_for = self.access.map_or(Duration::ZERO, |a| {
            a.deadline.remaining(now).saturating_sub(margin.saturating_add(Duration::from_secs(1)))
        });
        let refuse = |until: Option<MonoTime>| CallerAction::Refuse { valid_for, until };
        let renewal = self.renewal(policy, now);
        if let Action::ReLogin { at } | Action::Retry { at, attempt: Attempt::Login, .. } = renewal {
            return refuse((at <= now).then_some(at));
        }
        if let Some(a) = self.access {
            let half = a.obtained + a.deadline.mono().saturating_since(a.obtained) / 2;
            if now < half {
                return refuse(Some(half));
            }
        }
        let mut gap = policy.refresh_floor;
        if self.failures > 0 && renewal.at().is_some_and(|at| at > now) {
            gap = gap.max(policy.caller_retry_gap);
        }
        let next = [self.last_request.map(|l| l + gap), self.not_before, self.spread_until].into_iter().flatten().max();
        match next {
            Some(next) if now < next => refuse(Some(next)),
            _ => CallerAction::RefreshNow,
        }
    }

    /// What an admin's request (D-Bus `Refresh` for [`Attempt::Refresh`], `Login` for [`Attempt::Login`]) asked at
    /// `now` may make the session do. The daemon's own health probe, when the cloud rejects the access token in
    /// hand, asks as an admin's `Refresh` would.
    ///
    /// 1. While the cloud's `Retry-After` lasts ([`Session::not_before`] after `now`), refuse until then: no
    ///    admin moves it either.
    /// 2. A refresh is sent at [`Session::last_request`] plus [`Policy::refresh_floor`], or `now` when that has
    ///    passed: the floor holds whoever asks, and the admin waits it out rather than being refused.
    /// 3. A login is sent `now`: a person typed the password and a code that lapses, and a login starts a new
    ///    session rather than spending the refresh token.
    ///
    /// [`AdminAction::SendAt`] is never before `now`, and a refresh is never sent before the floor.
    pub fn for_admin(&self, attempt: Attempt, now: MonoTime, policy: &Policy) -> AdminAction {
        if let Some(until) = self.not_before.filter(|until| *until > now) {
            return AdminAction::Refuse { until };
        }
        match attempt {
            Attempt::Refresh => {
                AdminAction::SendAt(self.last_request.map_or(now, |last| (last + policy.refresh_floor).max(now)))
            }
            Attempt::Login => AdminAction::SendAt(now),
        }
    }
}
