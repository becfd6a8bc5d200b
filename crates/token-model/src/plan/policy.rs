//! The planner's knobs ([`Policy`]) and the arithmetic on them: margins, the refresh point, the backoff.

use std::time::Duration;

const DAY: Duration = Duration::from_secs(86_400);

/// The knobs of the planner. [`Policy::default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Earliest point of the access token's life at which it is refreshed, as a fraction (default 0.75).
    pub refresh_from: f64,
    /// Latest point of the access token's life at which it is refreshed, as a fraction (default 0.80).
    /// The session's jitter chooses within `refresh_from..refresh_until`.
    pub refresh_until: f64,
    /// A token is never handed out with less than this left, and every refresh is planned at least this
    /// long before the deadline it protects (default 60 s). For an access token whose life is short the
    /// margin shrinks to a fifth of that life: see [`Policy::margin_for`].
    pub safety_margin: Duration,
    /// No two requests (refresh or login) of one session are planned closer together than this (default
    /// 5 s). An access token that lives less than this is too short to serve ([`Policy::too_short`]).
    pub refresh_floor: Duration,
    /// While transient failures are pending, a caller may trigger one early refresh at most this often
    /// (default 10 s; never more often than [`Policy::refresh_floor`]). See [`Session::for_caller`](super::Session::for_caller).
    pub caller_retry_gap: Duration,
    /// The first retry delay after a transient failure (default 1 s); it doubles with each failure.
    pub backoff_initial: Duration,
    /// The longest retry delay of the backoff (default 5 min).
    pub backoff_max: Duration,
    /// The longest server `Retry-After` honoured (default 1 h); a longer one is cut to this.
    pub retry_after_max: Duration,
    /// The assumed life of a refresh token from its issue (default 60 days; config `refresh_token_lifetime`).
    pub refresh_token_lifetime: Duration,
    /// How long before the refresh token lapses a warning is given, in any order (default 7 days and 1 day).
    pub lapse_warnings: Vec<Duration>,
    /// Under a fixed window with unattended re-login, how long before the lapse the re-login is planned
    /// (default 10 days: before the first warning, leaving days to retry; at most a quarter of the
    /// refresh token's lifetime is used).
    pub relogin_lead: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            refresh_from: 0.75,
            refresh_until: 0.80,
            safety_margin: Duration::from_secs(60),
            refresh_floor: Duration::from_secs(5),
            caller_retry_gap: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            retry_after_max: Duration::from_secs(3600),
            refresh_token_lifetime: DAY * 60,
            lapse_warnings: vec![DAY * 7, DAY],
            relogin_lead: DAY * 10,
        }
    }
}

impl Policy {
    /// The serving margin of an access token granted for `life`: the smaller of
    /// [`Policy::safety_margin`] and a fifth of `life`, so a token whose life is no longer than the safety
    /// margin is still served for most of it.
    pub fn margin_for(&self, life: Duration) -> Duration {
        self.safety_margin.min(life / 5)
    }

    /// Whether an access token granted for `life` is too short to serve: it lapses before the next request
    /// may even be sent (`life` < [`Policy::refresh_floor`]). Such a grant counts as a transient failure.
    pub fn too_short(&self, life: Duration) -> bool {
        life < self.refresh_floor
    }

    /// The refresh point within a token's life chosen by `jitter`, kept within `[0, 1]`.
    pub(super) fn fraction(&self, jitter: f64) -> f64 {
        let lo = clamp_unit(self.refresh_from.min(self.refresh_until));
        let hi = clamp_unit(self.refresh_from.max(self.refresh_until));
        lo + clamp_jitter(jitter) * (hi - lo)
    }

    /// The retry delay after `failures` consecutive transient failures: `backoff_initial` doubling up to
    /// `backoff_max`, then "equal jitter" (a value in the upper half of that, chosen by `jitter`).
    pub fn backoff(&self, failures: u32, jitter: f64) -> Duration {
        let doublings = failures.saturating_sub(1).min(40);
        let full = self.backoff_initial.saturating_mul(1u32 << doublings.min(31)).min(self.backoff_max);
        full.mul_f64(0.5 + 0.5 * clamp_jitter(jitter))
    }

    /// The lapse-warning leads, largest first.
    pub(super) fn warnings_desc(&self) -> Vec<Duration> {
        let mut leads = self.lapse_warnings.clone();
        leads.sort_unstable_by(|a, b| b.cmp(a));
        leads.dedup();
        leads
    }
}

pub(super) fn clamp_unit(x: f64) -> f64 {
    if x.is_finite() { x.clamp(0.0, 1.0) } else { 0.0 }
}

/// Keeps a jitter value in `[0, 1)`; anything else (NaN included) becomes 0.
pub(super) fn clamp_jitter(j: f64) -> f64 {
    if j.is_finite() && j >= 0.0 { j.min(1.0 - f64::EPSILON) } else { 0.0 }
}
