//! What both simulations share: clock units in milliseconds, seeded random numbers and a model of the cloud.

use std::time::Duration;

use token_model::plan::RefreshTokenChange;

pub(crate) const SEC: u64 = 1_000;
pub(crate) const MIN: u64 = 60 * SEC;
pub(crate) const HOUR: u64 = 60 * MIN;
pub(crate) const DAY: u64 = 24 * HOUR;
pub(crate) const YEAR: u64 = 365 * DAY;
pub(crate) const SIM_DAYS: u64 = 180;
/// The server's wall clock at the start of the simulation (Unix ms): true time.
pub(crate) const EPOCH0: i64 = 1_780_000_000_000;
pub(crate) const LATENCY: u64 = 300;
pub(crate) const ACCESS_LIFE: u64 = 3599 * SEC;
pub(crate) const REFRESH_LIFE: u64 = 60 * DAY;

/// xorshift64*: tiny, seeded, deterministic.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + (self.unit() * (hi - lo) as f64) as u64
    }

    /// Log-uniform in `[lo, hi)`: as many short outages as long ones per decade.
    pub(crate) fn log_range(&mut self, lo: u64, hi: u64) -> u64 {
        let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
        (l + self.unit() * (h - l)).exp() as u64
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// The cloud: one account, its current refresh token and when that was issued; outages.
pub(crate) struct Cloud {
    pub(crate) sliding: bool,
    pub(crate) rt_id: u64,
    pub(crate) rt_issued: u64,
    pub(crate) next_id: u64,
    pub(crate) outages: Vec<(u64, u64)>,
}

pub(crate) enum Reply {
    Ok { rt: Option<u64>, change: RefreshTokenChange, access_expiry: u64 },
    Transient(Option<Duration>),
    Verdict,
}

impl Cloud {
    pub(crate) fn reachable(&self, t: u64) -> bool {
        !self.outages.iter().any(|&(a, b)| t >= a && t < b)
    }

    pub(crate) fn refresh_would_work(&self, rt: Option<u64>, t: u64) -> bool {
        rt == Some(self.rt_id) && t < self.rt_issued + REFRESH_LIFE
    }

    pub(crate) fn refresh(&mut self, rt: Option<u64>, t: u64, rng: &mut Rng) -> Reply {
        if !self.reachable(t) {
            return Reply::Transient(None);
        }
        if rng.chance(0.003) {
            return Reply::Transient(Some(Duration::from_secs(120))); // 429 with Retry-After
        }
        if !self.refresh_would_work(rt, t) {
            return Reply::Verdict;
        }
        if self.sliding {
            self.next_id += 1;
            self.rt_id = self.next_id;
            self.rt_issued = t;
            Reply::Ok { rt: Some(self.rt_id), change: RefreshTokenChange::Rotated, access_expiry: t + ACCESS_LIFE }
        } else {
            let change = if rng.chance(0.5) { RefreshTokenChange::Repeated } else { RefreshTokenChange::Omitted };
            Reply::Ok { rt: Some(self.rt_id), change, access_expiry: t + ACCESS_LIFE }
        }
    }

    pub(crate) fn login(&mut self, t: u64) -> Reply {
        if !self.reachable(t) {
            return Reply::Transient(None);
        }
        self.next_id += 1;
        self.rt_id = self.next_id;
        self.rt_issued = t;
        Reply::Ok { rt: Some(self.rt_id), change: RefreshTokenChange::Rotated, access_expiry: t + ACCESS_LIFE }
    }
}
