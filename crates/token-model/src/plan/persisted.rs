//! A [`Session`] on disk: [`PersistedSession`] holds wall-clock times only, and [`PersistedSession::restore`] brings
//! it onto a new monotonic line conservatively.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::policy::clamp_jitter;
use super::{AccessWindow, Policy, Rotation, Session};
use crate::time::{ClockOffset, ClockPair, Deadline, WallClockTrust, WallTime};

impl Session {
    /// The persistable form: deadlines as wall-clock times, mirrored through `pair` (a reading taken now).
    pub fn to_persisted(&self, pair: ClockPair) -> PersistedSession {
        PersistedSession {
            known_good: self.known_good,
            access_obtained: self.access.map(|a| pair.wall_at(a.obtained)),
            access_expires: self.access.map(|a| a.deadline.wall()),
            refresh_expires: self.refresh_deadline.map(|d| d.wall()),
            refresh_expires_server: self.refresh_deadline_server,
            rotation: self.rotation,
            refresh_rejected: self.refresh_rejected,
            relogin_rejected: self.relogin_rejected,
            lapse_warned_secs: self.lapse_warned.map(|d| d.as_secs()),
            clock_offset: self.offset,
            retry_not_before: self.not_before.filter(|nb| *nb > pair.mono).map(|nb| pair.wall_at(nb)),
        }
    }
}

/// A [`Session`] as persisted: wall-clock times only (monotonic time means nothing after a restart).
///
/// It is `Serialize`/`Deserialize`: store it whole. Each field matters after a restart: without
/// `refresh_expires_server` a fixed window cannot be re-derived from the server's clock, without
/// `lapse_warned_secs` warnings are given again, and `known_good` must stay the value the session computed
/// (a local reading from a clock that ran ahead would make every later, correct reading look untrusted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedSession {
    /// The latest wall time known to have passed (at the last reply: the earlier of the local and the server's
    /// time):
    /// pass it to [`crate::time::check_wall_clock`] at start; a clock reading earlier is not trusted.
    pub known_good: Option<WallTime>,
    /// When the access token arrived.
    pub access_obtained: Option<WallTime>,
    /// When the access token lapses.
    pub access_expires: Option<WallTime>,
    /// When the refresh token lapses (local clock), if known.
    pub refresh_expires: Option<WallTime>,
    /// When the refresh token lapses on the server's clock, if the server told its time.
    pub refresh_expires_server: Option<WallTime>,
    /// The rotation behaviour observed.
    pub rotation: Rotation,
    /// The server rejected the refresh token.
    pub refresh_rejected: bool,
    /// The server rejected the unattended re-login.
    pub relogin_rejected: bool,
    /// The smallest lapse-warning lead already given, in seconds.
    pub lapse_warned_secs: Option<u64>,
    /// The latest clock-offset estimate.
    pub clock_offset: Option<ClockOffset>,
    /// Until when the cloud asked (`Retry-After`) that no request be sent, if that was still ahead; absent in
    /// files written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_not_before: Option<WallTime>,
}

impl PersistedSession {
    /// Brings a persisted session onto a new monotonic line, using `pair` (a reading taken now) and the
    /// verdict on the wall clock (from [`crate::time::check_wall_clock`]).
    ///
    /// With a trusted wall clock, deadlines are converted back. Otherwise, conservatively: the access token
    /// of unknown remaining life is dropped (so it is refreshed at once and never served), and the refresh
    /// token's deadline becomes unknown rather than extended; the next reply carrying the server's time
    /// re-derives it. A wall clock earlier than [`PersistedSession::known_good`], or earlier than the moment the
    /// access token arrived, is not trusted either.
    pub fn restore(&self, pair: ClockPair, trust: WallClockTrust, unattended_relogin: bool, jitter: f64) -> Session {
        let trusted = trust.is_trusted()
            && self.known_good.is_none_or(|k| pair.wall >= k)
            && self.access_obtained.is_none_or(|o| pair.wall >= o);
        let access = match (trusted, self.access_obtained, self.access_expires) {
            (true, Some(obtained), Some(expires)) => {
                Some(AccessWindow { obtained: pair.mono_at(obtained), deadline: Deadline::at_wall(expires, pair) })
            }
            _ => None,
        };
        let refresh_deadline = if trusted { self.refresh_expires.map(|w| Deadline::at_wall(w, pair)) } else { None };
        Session {
            access,
            refresh_deadline,
            refresh_deadline_server: self.refresh_expires_server,
            rotation: self.rotation,
            unattended_relogin,
            refresh_rejected: self.refresh_rejected,
            relogin_rejected: self.relogin_rejected,
            failures: 0,
            retry: None,
            lapse_warned: self.lapse_warned_secs.map(Duration::from_secs),
            offset: self.clock_offset,
            known_good: self.known_good,
            last_request: None,
            // Kept whatever the clock's trust: a clock that is wrong can only shorten it to nothing or lengthen it
            // to the longest Retry-After honoured.
            not_before: self.retry_not_before.and_then(|nb| {
                let left = nb.millis_since(pair.wall);
                (left > 0).then(|| {
                    pair.mono + Duration::from_millis(left.unsigned_abs()).min(Policy::default().retry_after_max)
                })
            }),
            spread_until: None,
            jitter: clamp_jitter(jitter),
        }
    }
}
