//! Time: deadlines on a monotonic line, their wall-clock mirror, clock offset and wall-clock trust.
//!
//! The daemon decides everything on a **monotonic** line ([`MonoTime`]): a point is a duration since an
//! arbitrary origin (the daemon maps `tokio::time::Instant`s onto it, e.g. as the time since it started).
//! Monotonic time never jumps, so a deadline computed as "the moment the reply arrived + `expires_in`" stays
//! right whatever the wall clock does.
//!
//! The wall clock ([`WallTime`], milliseconds since the Unix epoch) is only a **mirror**: it is what gets
//! persisted and what D-Bus shows as `expires_at`. A [`ClockPair`] (one monotonic and one wall reading taken
//! together) converts between the two. After a restart, persisted wall deadlines come back onto the new
//! monotonic line only if the wall clock can be trusted ([`check_wall_clock`]); the conservative rules for
//! a clock that cannot be trusted live in [`crate::plan::PersistedSession::restore`].
//!
//! The server's clock is only used to estimate an offset ([`ClockOffset::estimate`]) from the HTTP `Date`
//! header and the grant's `.issued` field ([`check_against_server`] flags a local clock far off it); it never
//! sets an access token's deadline.
//!
//! ```
//! use std::time::Duration;
//! use token_model::time::{ClockPair, Deadline, MonoTime, WallTime};
//!
//! // The reply arrived 10 s after the daemon started, at Unix time 1_700_000_000.
//! let arrived = ClockPair::new(MonoTime::from_origin(Duration::from_secs(10)), WallTime::from_unix_seconds(1_700_000_000));
//! let deadline = Deadline::after(arrived, Duration::from_secs(3599));
//! assert_eq!(deadline.mono(), MonoTime::from_origin(Duration::from_secs(3609)));
//! assert_eq!(deadline.expires_at(), 1_700_003_599); // what D-Bus shows
//! ```

use std::fmt;
use std::ops::Add;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point on the daemon's monotonic time line: a duration since an arbitrary origin (e.g. daemon start).
///
/// Only differences between two `MonoTime`s of the same run mean anything; never persist one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MonoTime(Duration);

impl MonoTime {
    /// The origin of the line.
    pub const ORIGIN: MonoTime = MonoTime(Duration::ZERO);

    /// The point `since` after the origin.
    pub const fn from_origin(since: Duration) -> Self {
        MonoTime(since)
    }

    /// How far this point is from the origin.
    pub const fn since_origin(self) -> Duration {
        self.0
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: MonoTime) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// The point `d` before `self`, or the origin if that would be before it.
    pub fn saturating_sub(self, d: Duration) -> MonoTime {
        MonoTime(self.0.saturating_sub(d))
    }
}

impl Add<Duration> for MonoTime {
    type Output = MonoTime;
    /// The point `rhs` later (saturating at the end of time rather than overflowing).
    fn add(self, rhs: Duration) -> MonoTime {
        MonoTime(self.0.saturating_add(rhs))
    }
}

/// A wall-clock reading: milliseconds since the Unix epoch (negative before 1970).
///
/// Serialised as a plain integer of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WallTime(i64);

impl WallTime {
    /// The Unix epoch.
    pub const UNIX_EPOCH: WallTime = WallTime(0);

    /// A wall time from milliseconds since the Unix epoch.
    pub const fn from_unix_millis(ms: i64) -> Self {
        WallTime(ms)
    }

    /// A wall time from whole seconds since the Unix epoch.
    pub const fn from_unix_seconds(s: i64) -> Self {
        WallTime(s.saturating_mul(1000))
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch, rounded down (an `expires_at` rounded down is on the safe side).
    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// Converts a `SystemTime` (precision below a millisecond is dropped, rounding towards the past).
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => WallTime(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(before) => {
                let d = before.duration();
                let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                let ms = if !d.subsec_nanos().is_multiple_of(1_000_000) { ms.saturating_add(1) } else { ms };
                WallTime(-ms)
            }
        }
    }

    /// The same instant as a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        let magnitude = Duration::from_millis(self.0.unsigned_abs());
        if self.0 >= 0 { UNIX_EPOCH + magnitude } else { UNIX_EPOCH - magnitude }
    }

    /// `self + d` (saturating).
    pub fn saturating_add(self, d: Duration) -> WallTime {
        WallTime(self.0.saturating_add(duration_millis(d)))
    }

    /// `self - d` (saturating).
    pub fn saturating_sub(self, d: Duration) -> WallTime {
        WallTime(self.0.saturating_sub(duration_millis(d)))
    }

    /// Signed milliseconds from `earlier` to `self`.
    pub fn millis_since(self, earlier: WallTime) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for WallTime {
    /// Formats as an RFC 3339 date in UTC to the second ([`rfc3339`]), as messages write times.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&rfc3339(self.0.div_euclid(1000)))
    }
}

/// The latest Unix second [`rfc3339`] writes as a date: 9999-12-31T23:59:59Z.
const LAST_RFC3339_SECOND: i64 = 253_402_300_799;

/// A Unix time as an RFC 3339 date in UTC, to the second: `2026-11-29T16:40:00Z`. Times before 1970 or after the
/// year 9999 are written as seconds (`-5 s from the Unix epoch`).
///
/// Written out here rather than taken from a date crate: the one the daemon already links (chrono, through the
/// cron scheduler) would add about 100 KiB of formatting code to a binary whose size is a feature, for one
/// format. The civil-date conversion is the well-known days-to-civil algorithm; a property test checks it
/// against `httpdate` for any second of the range.
pub fn rfc3339(unix_seconds: i64) -> String {
    if !(0..=LAST_RFC3339_SECOND).contains(&unix_seconds) {
        return format!("{unix_seconds} s from the Unix epoch");
    }
    let days = unix_seconds / 86_400;
    let secs = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (non-negative), as (year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A monotonic and a wall-clock reading taken at the same moment; converts between the two lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockPair {
    /// The monotonic reading.
    pub mono: MonoTime,
    /// The wall-clock reading.
    pub wall: WallTime,
}

impl ClockPair {
    /// Pairs two readings taken together.
    pub const fn new(mono: MonoTime, wall: WallTime) -> Self {
        ClockPair { mono, wall }
    }

    /// The wall time of monotonic point `t` (exact to the millisecond, rounded towards the past).
    pub fn wall_at(&self, t: MonoTime) -> WallTime {
        if t >= self.mono {
            self.wall.saturating_add(t.saturating_since(self.mono))
        } else {
            // Round the distance up so the result never lies after `t`.
            let back = self.mono.saturating_since(t);
            let ms = duration_millis(back).saturating_add(i64::from(!back.subsec_nanos().is_multiple_of(1_000_000)));
            WallTime(self.wall.0.saturating_sub(ms))
        }
    }

    /// The monotonic point of wall time `w`; a wall time before the line's origin maps to the origin
    /// (such a point is long past anyway).
    pub fn mono_at(&self, w: WallTime) -> MonoTime {
        let diff = w.millis_since(self.wall);
        if diff >= 0 {
            self.mono + Duration::from_millis(diff.unsigned_abs())
        } else {
            self.mono.saturating_sub(Duration::from_millis(diff.unsigned_abs()))
        }
    }
}

/// A deadline: a point on the monotonic line with its wall-clock mirror (for persistence and D-Bus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    mono: MonoTime,
    wall: WallTime,
}

impl Deadline {
    /// The deadline `life` after the moment `arrived` (e.g. a reply's arrival plus its `expires_in`).
    pub fn after(arrived: ClockPair, life: Duration) -> Self {
        Deadline { mono: arrived.mono + life, wall: arrived.wall.saturating_add(life) }
    }

    /// The deadline at monotonic point `mono`, mirrored through `pair`.
    pub fn at_mono(mono: MonoTime, pair: ClockPair) -> Self {
        Deadline { mono, wall: pair.wall_at(mono) }
    }

    /// The deadline at wall time `wall`, brought onto the monotonic line through `pair`. Only use this
    /// with a trusted wall clock (see [`check_wall_clock`]).
    pub fn at_wall(wall: WallTime, pair: ClockPair) -> Self {
        Deadline { mono: pair.mono_at(wall), wall }
    }

    /// The point on the monotonic line: what every decision uses.
    pub const fn mono(&self) -> MonoTime {
        self.mono
    }

    /// The wall-clock mirror: what is persisted.
    pub const fn wall(&self) -> WallTime {
        self.wall
    }

    /// The D-Bus `expires_at`: Unix seconds, rounded down.
    pub const fn expires_at(&self) -> i64 {
        self.wall.unix_seconds()
    }

    /// The time left at `now` (zero once passed).
    pub fn remaining(&self, now: MonoTime) -> Duration {
        self.mono.saturating_since(now)
    }
}

/// The D-Bus `expires_at` of an optional deadline: Unix seconds, `0` for "no expiry" (device and ground
/// tokens).
pub fn expires_at(deadline: Option<&Deadline>) -> i64 {
    deadline.map_or(0, Deadline::expires_at)
}

/// How far the server's clock is ahead of the local wall clock (negative: behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClockOffset(i64);

impl ClockOffset {
    /// An offset of `ms` milliseconds (server minus local).
    pub const fn from_millis(ms: i64) -> Self {
        ClockOffset(ms)
    }

    /// Estimates the offset from a reply that arrived at local wall time `arrived`.
    ///
    /// `date` is the HTTP `Date` header and `issued` the grant's `.issued`, both server times taken just
    /// before the reply left; the later of the two is used (it is the closer to the arrival). `None` when the
    /// reply carried neither. Both have one-second resolution, so the estimate is good to about a second plus
    /// the network latency.
    pub fn estimate(date: Option<SystemTime>, issued: Option<SystemTime>, arrived: WallTime) -> Option<Self> {
        let server = match (date, issued) {
            (Some(a), Some(b)) => a.max(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return None,
        };
        Some(ClockOffset(WallTime::from_system_time(server).millis_since(arrived)))
    }

    /// Server minus local, in milliseconds.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// The server's time when the local wall clock reads `local`.
    pub fn server_time(self, local: WallTime) -> WallTime {
        WallTime(local.0.saturating_add(self.0))
    }

    /// The local wall time when the server's clock reads `server`.
    pub fn local_time(self, server: WallTime) -> WallTime {
        WallTime(server.0.saturating_sub(self.0))
    }

    /// The size of the offset.
    pub fn magnitude(self) -> Duration {
        Duration::from_millis(self.0.unsigned_abs())
    }
}

/// Whether the local wall clock can be believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WallClockTrust {
    /// Nothing speaks against the reading.
    Trusted,
    /// The reading cannot be believed; the reason says why.
    Untrusted(UntrustedReason),
}

impl WallClockTrust {
    /// `true` for [`WallClockTrust::Trusted`].
    pub fn is_trusted(self) -> bool {
        matches!(self, WallClockTrust::Trusted)
    }
}

/// Why a wall-clock reading is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UntrustedReason {
    /// The clock reads earlier than a time already known to have passed (e.g. a gateway without a
    /// real-time clock booting at 1970 before NTP has synchronised).
    EarlierThanLastKnownGood {
        /// The latest wall time known good (persisted by the daemon).
        last_known_good: WallTime,
        /// The current reading.
        now: WallTime,
    },
    /// The server's clock (HTTP `Date`) disagrees with ours by more than the tolerance.
    FarFromServer {
        /// How far the server's clock is ahead of ours.
        offset: ClockOffset,
    },
    /// Nothing confirms the reading yet: no time synchronisation has set the clock since boot, and no reply from
    /// the server has told its time (a gateway without a real-time clock boots with its last saved time, which
    /// is plausible and wrong).
    Unconfirmed,
}

impl fmt::Display for UntrustedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UntrustedReason::EarlierThanLastKnownGood { last_known_good, now } => write!(
                f,
                "the wall clock reads {now}, earlier than {last_known_good} which has already passed; \
                 check the time synchronisation (NTP, systemd-timesyncd) of this gateway"
            ),
            UntrustedReason::Unconfirmed => f.write_str(
                "nothing confirms the wall clock yet (the kernel does not report it synchronised); check the time \
                 synchronisation (NTP, systemd-timesyncd) of this gateway",
            ),
            UntrustedReason::FarFromServer { offset } => {
                let secs = offset.millis() / 1000;
                let (n, dir) = if secs >= 0 { (secs, "behind") } else { (-secs, "ahead of") };
                write!(
                    f,
                    "the wall clock is {n} s {dir} the server's; check the time synchronisation (NTP, \
                     systemd-timesyncd) of this gateway"
                )
            }
        }
    }
}

/// Checks the current wall-clock reading `now` against the latest time known good (persisted by the
/// daemon whenever it saves state). A reading earlier than that is [`WallClockTrust::Untrusted`].
pub fn check_wall_clock(last_known_good: Option<WallTime>, now: WallTime) -> WallClockTrust {
    match last_known_good {
        Some(last_known_good) if now < last_known_good => {
            WallClockTrust::Untrusted(UntrustedReason::EarlierThanLastKnownGood { last_known_good, now })
        }
        _ => WallClockTrust::Trusted,
    }
}

/// Checks the local wall clock against the server's, as estimated by [`ClockOffset::estimate`]: an offset
/// larger than `tolerance` makes it [`WallClockTrust::Untrusted`]. Deadlines do not depend on it (they are
/// monotonic), but the wall-clock mirror (`expires_at`, persisted times) is only as good as this clock.
pub fn check_against_server(offset: ClockOffset, tolerance: Duration) -> WallClockTrust {
    if offset.magnitude() > tolerance {
        WallClockTrust::Untrusted(UntrustedReason::FarFromServer { offset })
    } else {
        WallClockTrust::Trusted
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn wall_times_print_as_rfc_3339_dates() {
        assert_eq!(WallTime::from_unix_seconds(1_700_000_000).to_string(), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(LAST_RFC3339_SECOND), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "-1 s from the Unix epoch");
        assert_eq!(WallTime::from_unix_seconds(-1).to_string(), "-1 s from the Unix epoch");
    }

    proptest::proptest! {
        /// The civil date agrees with `httpdate`'s (RFC 1123) for any second of the range.
        #[test]
        fn rfc_3339_dates_agree_with_http_dates(secs in 0..=LAST_RFC3339_SECOND) {
            let ours = rfc3339(secs);
            let http = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs()));
            // "Sun, 06 Nov 1994 08:49:37 GMT"
            let parts: Vec<&str> = http.split(' ').collect();
            let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
                .iter()
                .position(|m| *m == parts[2])
                .expect("an English month")
                + 1;
            let expected = format!("{}-{month:02}-{}T{}Z", parts[3], parts[1], parts[4]);
            proptest::prop_assert_eq!(ours, expected);
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn deadline_from_arrival() {
        let pair = ClockPair::new(MonoTime::from_origin(secs(100)), WallTime::from_unix_seconds(1_000_000));
        let d = Deadline::after(pair, secs(3599));
        assert_eq!(d.mono(), MonoTime::from_origin(secs(3699)));
        assert_eq!(d.expires_at(), 1_003_599);
        assert_eq!(d.remaining(MonoTime::from_origin(secs(3600))), secs(99));
        assert_eq!(d.remaining(MonoTime::from_origin(secs(9000))), Duration::ZERO);
        assert_eq!(expires_at(None), 0);
        assert_eq!(expires_at(Some(&d)), 1_003_599);
    }

    #[test]
    fn offset_prefers_the_later_server_time() {
        let arrived = WallTime::from_unix_seconds(1_000_000);
        let date = WallTime::from_unix_seconds(1_000_010).to_system_time();
        let issued = WallTime::from_unix_seconds(1_000_009).to_system_time();
        let off = ClockOffset::estimate(Some(date), Some(issued), arrived).unwrap();
        assert_eq!(off.millis(), 10_000);
        assert_eq!(off.server_time(arrived), WallTime::from_unix_seconds(1_000_010));
        assert_eq!(off.local_time(WallTime::from_unix_seconds(1_000_010)), arrived);
        assert_eq!(ClockOffset::estimate(None, Some(issued), arrived).unwrap().millis(), 9_000);
        assert_eq!(ClockOffset::estimate(None, None, arrived), None);
    }

    #[test]
    fn wall_clock_before_last_known_good_is_untrusted() {
        let good = WallTime::from_unix_seconds(1_800_000_000);
        assert!(check_wall_clock(None, WallTime::UNIX_EPOCH).is_trusted());
        assert!(check_wall_clock(Some(good), good).is_trusted());
        let verdict = check_wall_clock(Some(good), WallTime::from_unix_seconds(0));
        let WallClockTrust::Untrusted(reason) = verdict else { panic!("1970 after 2027 must be untrusted") };
        let text = reason.to_string();
        assert!(text.contains("1970") && text.contains("NTP"), "{text}");
    }

    #[test]
    fn wall_clock_far_from_the_server_is_untrusted() {
        let tolerance = Duration::from_secs(300);
        assert!(check_against_server(ClockOffset::from_millis(299_000), tolerance).is_trusted());
        assert!(check_against_server(ClockOffset::from_millis(-300_000), tolerance).is_trusted());
        let WallClockTrust::Untrusted(reason) = check_against_server(ClockOffset::from_millis(-3_600_000), tolerance)
        else {
            panic!("an hour off must be untrusted")
        };
        let text = reason.to_string();
        assert!(text.contains("3600 s ahead of the server's") && text.contains("NTP"), "{text}");
    }

    #[test]
    fn system_time_conversion_rounds_towards_the_past() {
        let t = UNIX_EPOCH - Duration::from_micros(1500);
        assert_eq!(WallTime::from_system_time(t).unix_millis(), -2);
        let t = UNIX_EPOCH + Duration::from_micros(1500);
        assert_eq!(WallTime::from_system_time(t).unix_millis(), 1);
        assert_eq!(WallTime::from_unix_millis(-1).unix_seconds(), -1);
    }

    proptest! {
        #[test]
        fn wall_to_mono_to_wall_round_trips(
            anchor_mono in 0u64..1u64 << 40,
            anchor_wall in -(1i64 << 42)..1i64 << 42,
            delta in -(1i64 << 39)..1i64 << 39,
        ) {
            let pair = ClockPair::new(MonoTime::from_origin(Duration::from_millis(anchor_mono)), WallTime::from_unix_millis(anchor_wall));
            prop_assume!(delta >= -(anchor_mono as i64));
            let w = WallTime::from_unix_millis(anchor_wall + delta);
            prop_assert_eq!(pair.wall_at(pair.mono_at(w)), w);
        }

        #[test]
        fn mono_to_wall_to_mono_round_trips_to_the_millisecond(
            anchor_mono in 0u64..1u64 << 50,
            anchor_wall in -(1i64 << 42)..1i64 << 42,
            t in 0u64..1u64 << 50,
        ) {
            let pair = ClockPair::new(MonoTime::from_origin(Duration::from_nanos(anchor_mono)), WallTime::from_unix_millis(anchor_wall));
            let t = MonoTime::from_origin(Duration::from_nanos(t));
            let back = pair.mono_at(pair.wall_at(t));
            // Never later than the original (a deadline never moves into the future), at most 1 ms earlier.
            prop_assert!(back <= t);
            prop_assert!(t.saturating_since(back) < Duration::from_millis(1) || back == MonoTime::ORIGIN);
        }

        #[test]
        fn system_time_round_trips(ms in -(1i64 << 45)..1i64 << 45) {
            let w = WallTime::from_unix_millis(ms);
            prop_assert_eq!(WallTime::from_system_time(w.to_system_time()), w);
        }

        #[test]
        fn deadline_mirror_round_trips(start in 0u64..1u64 << 40, wall in 0i64..1i64 << 42, life in 0u64..1u64 << 32) {
            let pair = ClockPair::new(MonoTime::from_origin(Duration::from_millis(start)), WallTime::from_unix_millis(wall));
            let d = Deadline::after(pair, Duration::from_millis(life));
            prop_assert_eq!(Deadline::at_wall(d.wall(), pair), d);
            prop_assert_eq!(Deadline::at_mono(d.mono(), pair), d);
        }
    }
}
