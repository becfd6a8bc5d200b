//! Fleet behaviour: how one gateway among thousands keeps out of the others' way at the cloud.
//!
//! - **A stable per-machine offset** ([`MachineKey`], [`Spread`]): each periodic job (and the first refresh after
//!   a start) waits a delay derived from the machine id, the token's name and the job's name, spread evenly over
//!   the job's window, so a fleet that fires the same cron line at the same second reaches the cloud across the
//!   window instead of in one burst. The machine id is hashed locally and never leaves the machine.
//! - **A start-up spread** ([`startup_at`]): after a start, a session's first request waits its offset within a
//!   short window, but never past the moment its token stops being served.
//! - **A request budget** ([`Budget`]): a token bucket shared by every cloud request of one daemon; a request over
//!   budget is given a later time to go, never refused.
//!
//! The hash is fixed and written out here, so an offset stays the same across releases of the compiler and of
//! this crate: FNV-1a 64 over `"att-tokend fleet offset 1\0"`, the machine id (ASCII whitespace trimmed), a zero
//! byte, the token's name, a zero byte and the job's name; then the 64-bit finaliser of MurmurHash3 (`fmix64`),
//! so that names differing in their last bytes still land far apart. The 64-bit result `h` maps to
//! `h × window / 2⁶⁴` (128-bit arithmetic): uniform over `[0, window)`. A zero window turns the spread off.
//!
//! ```
//! use std::time::Duration;
//! use token_model::fleet::{MachineKey, Spread};
//!
//! let key = MachineKey::from_machine_id(b"4f1e2d3c4b5a69788796a5b4c3d2e1f0\n");
//! let spread = Spread::new(key, Duration::from_secs(900));
//! let offset = spread.offset("main", "token_health");
//! assert!(offset < Duration::from_secs(900));
//! // Stable: the same machine, token and job give the same offset every time.
//! assert_eq!(offset, Spread::new(key, Duration::from_secs(900)).offset("main", "token_health"));
//! // Off.
//! assert_eq!(Spread::new(key, Duration::ZERO).offset("main", "token_health"), Duration::ZERO);
//! ```

use std::fmt;
use std::time::Duration;

use crate::time::MonoTime;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const DOMAIN: &[u8] = b"att-tokend fleet offset 1\0";

/// The machine id used when none can be read: every such machine gets the same offsets.
pub const FALLBACK_MACHINE_ID: &[u8] = b"att-tokend without a machine id";

/// The job name of the first request after a start ([`startup_at`]).
pub const STARTUP_JOB: &str = "startup";

/// The default window of the periodic jobs' offsets (`[daemon] maintenance_spread`): 15 minutes.
pub const DEFAULT_MAINTENANCE_SPREAD: Duration = Duration::from_secs(15 * 60);

/// The default window of the first request after a start (`[daemon] startup_spread`): 2 minutes.
pub const DEFAULT_STARTUP_SPREAD: Duration = Duration::from_secs(2 * 60);

/// The default burst of the request budget (`[daemon] request_burst`): 10 requests at once.
pub const DEFAULT_REQUEST_BURST: u32 = 10;

/// The default rate of the request budget (`[daemon] requests_per_minute`): 30 a minute.
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 30;

fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// MurmurHash3's 64-bit finaliser: every input bit reaches every output bit.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A machine id, already hashed (the FNV-1a state after the domain and the id): the id itself is not kept.
/// `Debug` does not show it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MachineKey(u64);

impl MachineKey {
    /// The key of the machine whose id (the bytes of `/etc/machine-id`) is `id`; surrounding ASCII whitespace
    /// (the file's newline) does not count.
    pub fn from_machine_id(id: &[u8]) -> Self {
        MachineKey(fnv1a(fnv1a(FNV_OFFSET, DOMAIN), id.trim_ascii()))
    }

    /// The key used when the machine id cannot be read ([`FALLBACK_MACHINE_ID`]).
    pub fn fallback() -> Self {
        Self::from_machine_id(FALLBACK_MACHINE_ID)
    }

    /// The 64-bit hash of this machine, `token` and `job` (see the module's description).
    pub fn hash(&self, token: &str, job: &str) -> u64 {
        let state = fnv1a(fnv1a(fnv1a(fnv1a(self.0, &[0]), token.as_bytes()), &[0]), job.as_bytes());
        fmix64(state)
    }
}

impl fmt::Debug for MachineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MachineKey([redacted])")
    }
}

/// Maps a 64-bit hash uniformly into `[0, window)`; zero for a zero window. Windows longer than 2⁶⁴ ns (584
/// years) count as that.
pub fn scale(hash: u64, window: Duration) -> Duration {
    let nanos = window.as_nanos().min(u128::from(u64::MAX));
    let scaled = (u128::from(hash) * nanos) >> 64;
    Duration::from_nanos(u64::try_from(scaled).unwrap_or(u64::MAX))
}

/// A job's spread: this machine's key and the window offsets fall in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    key: MachineKey,
    window: Duration,
}

impl Spread {
    /// Offsets of `key`'s machine within `window` (zero: the spread is off).
    pub fn new(key: MachineKey, window: Duration) -> Self {
        Spread { key, window }
    }

    /// No spread: every offset is zero.
    pub fn off() -> Self {
        Spread { key: MachineKey::fallback(), window: Duration::ZERO }
    }

    /// The window offsets fall in.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// How long after `job` fires `token`'s request waits: stable for this machine, token and job, in
    /// `[0, window)`; zero when the window is.
    pub fn offset(&self, token: &str, job: &str) -> Duration {
        scale(self.key.hash(token, job), self.window)
    }
}

/// How soon after the machine booted a start of the daemon counts as part of a power-on.
pub const RECENT_BOOT: Duration = Duration::from_secs(10 * 60);

/// The start-up spread's window for a daemon started at `now` on the boot-time clock (the time since the machine
/// booted): `window` when the machine booted within [`RECENT_BOOT`] (or within `window`, when that is longer): a
/// site powered on at once, the herd the spread is for. A later start is a restart of this daemon alone (a crash,
/// the watchdog, an upgrade), not a fleet's: its first requests go at once, as they did before any spread, so a
/// saved token under an unconfirmed clock is not held back for the window.
pub fn startup_window(window: Duration, now: MonoTime) -> Duration {
    if now.saturating_since(MonoTime::ORIGIN) <= RECENT_BOOT.max(window) { window } else { Duration::ZERO }
}

/// When a session's first request after a start at `start` may go: `start` plus its `offset` (in `[0, window)`),
/// unless its token would stop being served before the window ends: then the offset is scaled into the first half
/// of the time left, `offset × left / 2 window`, so the request goes well before `lapses`, leaving time for the
/// answer (at once when that has passed). `lapses` is the
/// earliest moment by which a request must have gone (the served token's end of serving, or the refresh token's
/// deadline less the safety margin); `None` when nothing is served and no deadline is known (a session restored
/// under an unconfirmed clock).
///
/// The result is in `[start, start + window)`, and before `lapses` whenever `lapses` is after `start`.
pub fn startup_at(start: MonoTime, offset: Duration, window: Duration, lapses: Option<MonoTime>) -> MonoTime {
    let offset = offset.min(window.saturating_sub(Duration::from_nanos(1)));
    match lapses {
        Some(lapses) if lapses < start + window => {
            let left = lapses.saturating_since(start);
            let window_ns = window.as_nanos().max(1);
            let scaled = offset.as_nanos() * left.as_nanos() / 2 / window_ns;
            start + Duration::from_nanos(u64::try_from(scaled).unwrap_or(u64::MAX))
        }
        _ => start + offset,
    }
}

/// A token bucket of cloud requests: at most `burst` at once, refilled at one request per `interval`. Every
/// request is given the time it may go ([`Budget::reserve`]); none is refused.
///
/// It is the generic cell rate algorithm: a theoretical arrival time `tat` moves on by `interval` with each
/// request, and a request may go once `tat` is less than `(burst − 1) × interval` ahead. So in any interval of
/// length `L`, at most `burst + L / interval` (rounded down) requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    burst: u32,
    interval: Duration,
    tat: Option<MonoTime>,
    latest_now: MonoTime,
}

impl Budget {
    /// A budget of `burst` requests at once (at least 1) and one more every `interval` (at least 1 ns).
    pub fn new(burst: u32, interval: Duration) -> Self {
        Budget {
            burst: burst.max(1),
            interval: interval.max(Duration::from_nanos(1)),
            tat: None,
            latest_now: MonoTime::ORIGIN,
        }
    }

    /// A budget of `burst` requests at once and `per_minute` a minute (each at least 1).
    pub fn per_minute(burst: u32, per_minute: u32) -> Self {
        Self::new(burst, Duration::from_secs(60) / per_minute.max(1))
    }

    /// The most requests at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The time between two requests once the burst is spent.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Books one request asked for at `now` and returns when it may go: `now` within the budget, later over it.
    /// Requests are booked in the order asked, so each waits at most one `interval` per request booked before it
    /// and not yet gone. A `now` earlier than one seen before counts as that one.
    pub fn reserve(&mut self, now: MonoTime) -> MonoTime {
        let now = now.max(self.latest_now);
        self.latest_now = now;
        let tolerance = self.interval.saturating_mul(self.burst - 1);
        let at = match self.tat {
            Some(tat) => now.max(tat.saturating_sub(tolerance)),
            None => now,
        };
        let tat = self.tat.map_or(at, |tat| tat.max(at));
        self.tat = Some(tat + self.interval);
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_up_spread_is_for_starts_soon_after_a_boot() {
        let at = |seconds: u64| MonoTime::ORIGIN + Duration::from_secs(seconds);
        let window = DEFAULT_STARTUP_SPREAD;
        assert_eq!(startup_window(window, at(20)), window, "a start during a power-on is spread");
        assert_eq!(startup_window(window, at(600)), window, "up to ten minutes after the boot");
        assert_eq!(startup_window(window, at(601)), Duration::ZERO, "a restart later goes at once");
        assert_eq!(startup_window(window, at(86_400)), Duration::ZERO);
        let long = Duration::from_secs(3600);
        assert_eq!(startup_window(long, at(3000)), long, "a window longer than ten minutes counts from the boot");
        assert_eq!(startup_window(Duration::ZERO, at(20)), Duration::ZERO, "off stays off");
    }
}
