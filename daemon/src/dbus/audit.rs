//! Who got which token: the audit trail in the journal, at `info`, under the target `att_tokend::audit`.
//!
//! - The first delivery of each token to each caller in an hour is one line: the token's name, the caller's uid
//!   and the systemd unit of the caller's process when it has one (systemd's answer for the pid the bus reports,
//!   asked once per caller connection by `dbus/callers.rs`). Later deliveries of the same token to the
//!   same (uid, unit) that hour are not logged.
//! - Every refusal of a caller is one line, with the method, the reason (the D-Bus error's short name:
//!   `AccessDenied`, `UnknownToken`, `NoTokenForDevice`, `InvalidArgs`: [`is_refusal`]), the uid when known, and
//!   the token's name once it passed the argument checks (a name the caller wrote that fails them is not
//!   repeated). A token that cannot be served now (`NeedsLogin`, `Unavailable`, `Revoked`) refuses no caller in
//!   particular: the journal already says so when its state changes.
//! - Never the token, nor any other secret: only names, uids, units and error names reach these lines.
//!
//! Bounded: in each hour at most [`MAX_DELIVERY_LINES`] delivery lines and [`MAX_REFUSAL_LINES`] refusal lines;
//! the first one past a limit says that further ones are counted, not logged, and the first call of the next
//! hour logs how many were left out. The memory is as bounded: one 64-bit keyed hash per delivery line logged
//! (the key random per process, so no caller can make two triples collide), reset every hour. The window
//! starts with the first call after the last one closed, on the monotonic clock. The audit belongs to one
//! connection of the service: a new bus connection starts a new window.
//!
//! It is the one place a token call's outcome is seen whole; calls' counters, when the daemon has some, belong
//! next to [`Audit::delivered`] and [`Audit::refused`] in the callers of `dbus/mod.rs`.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The audit trail's tracing target.
pub const TARGET: &str = "att_tokend::audit";

/// Delivery lines logged at most per hour: distinct (token, uid, unit) triples.
pub const MAX_DELIVERY_LINES: usize = 256;

/// Refusal lines logged at most per hour.
pub const MAX_REFUSAL_LINES: usize = 64;

/// The length of one window.
const WINDOW: Duration = Duration::from_secs(3600);

/// Who called, as far as the audit says: the uid (when the bus told it) and the systemd unit of the process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Who<'a> {
    /// The caller's uid, when it is known.
    pub uid: Option<u32>,
    /// The systemd unit of the caller's process (`nodered.service`, `session-3.scope`), when it has one.
    pub unit: Option<&'a str>,
}

/// The audit trail of one service connection: what was logged this hour.
#[derive(Debug)]
pub struct Audit {
    keys: RandomState,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    delivered: HashSet<u64>,
    refusals: usize,
    deliveries_left_out: u64,
    refusals_left_out: u64,
}

/// What one event comes to, decided under the lock and logged after it.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Log it.
    Log,
    /// Log it, preceded by the summary of the hour that closed.
    LogAfter { deliveries: u64, refusals: u64 },
    /// The limit is reached with this one: say so instead.
    LimitReached,
    /// Nothing to log (a repeat, or past the limit).
    Quiet,
    /// Nothing to log of this one, but the hour that closed left some out.
    QuietAfter { deliveries: u64, refusals: u64 },
}

impl Default for Audit {
    fn default() -> Self {
        Self::new()
    }
}

impl Audit {
    /// A new trail, with a fresh hash key.
    pub fn new() -> Self {
        Self { keys: RandomState::new(), window: Mutex::new(Window::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A token was handed to a caller.
    pub fn delivered(&self, token: &str, who: Who<'_>) {
        self.delivered_at(Instant::now(), token, who);
    }

    /// A call failed with `reason`, the short name of its D-Bus error. Only a refusal of the caller is logged
    /// ([`is_refusal`]); a token that cannot be served now is the token's state, which the journal tells apart.
    pub fn refused(&self, method: &str, token: Option<&str>, who: Who<'_>, reason: &str) {
        if is_refusal(reason) {
            self.refused_at(Instant::now(), method, token, who, reason);
        }
    }

    fn delivered_at(&self, now: Instant, token: &str, who: Who<'_>) -> Verdict {
        let key = self.keys.hash_one((token, who.uid, who.unit));
        let verdict = self.decide(now, |window| {
            if window.delivered.contains(&key) {
                Verdict::Quiet
            } else if window.delivered.len() < MAX_DELIVERY_LINES {
                window.delivered.insert(key);
                Verdict::Log
            } else {
                past_limit(&mut window.deliveries_left_out)
            }
        });
        say(
            &verdict,
            format_args!(
                "token delivered (first time this hour for this token, uid and unit): token={token} uid={} unit={}",
                Uid(who.uid),
                who.unit.unwrap_or("none")
            ),
            format_args!(
                "more than {MAX_DELIVERY_LINES} first deliveries this hour: further ones are counted, not logged"
            ),
        );
        verdict
    }

    fn refused_at(&self, now: Instant, method: &str, token: Option<&str>, who: Who<'_>, reason: &str) -> Verdict {
        let verdict = self.decide(now, |window| {
            if window.refusals < MAX_REFUSAL_LINES {
                window.refusals += 1;
                Verdict::Log
            } else {
                past_limit(&mut window.refusals_left_out)
            }
        });
        say(
            &verdict,
            format_args!(
                "call refused: method={method} token={} uid={} unit={} reason={reason}",
                token.unwrap_or("-"),
                Uid(who.uid),
                who.unit.unwrap_or("none")
            ),
            format_args!("more than {MAX_REFUSAL_LINES} refusals this hour: further refusals are counted, not logged"),
        );
        verdict
    }

    /// One event: `decide` sees the window (a new one when the hour is over) under the lock; the summary of a
    /// closed hour that left lines out is logged first.
    fn decide(&self, now: Instant, decide: impl FnOnce(&mut Window) -> Verdict) -> Verdict {
        let verdict = {
            let mut window = self.lock();
            let closed = window.roll(now);
            decide(&mut window).after(closed)
        };
        summarise(&verdict);
        verdict
    }
}

/// Whether a call's error (its D-Bus error's short name) refuses the caller: it may not (`AccessDenied`, also a
/// caller the bus cannot name), or asked for what is not there (`UnknownToken`, `NoTokenForDevice`) or is no
/// valid question (`InvalidArgs`). `NeedsLogin`, `Unavailable` and `Revoked` say the token cannot be served now,
/// to any caller, and are not in the audit trail.
pub fn is_refusal(reason: &str) -> bool {
    matches!(reason, "AccessDenied" | "UnknownToken" | "NoTokenForDevice" | "InvalidArgs")
}

/// One event past a limit: the first says so, the others are only counted.
fn past_limit(left_out: &mut u64) -> Verdict {
    *left_out += 1;
    if *left_out == 1 { Verdict::LimitReached } else { Verdict::Quiet }
}

/// Logs `line` for an event to log, `limit` for the first past the limit, nothing for the others.
fn say(verdict: &Verdict, line: std::fmt::Arguments<'_>, limit: std::fmt::Arguments<'_>) {
    match verdict {
        Verdict::Log | Verdict::LogAfter { .. } => log(line),
        Verdict::LimitReached => log(limit),
        Verdict::Quiet | Verdict::QuietAfter { .. } => {}
    }
}

impl Window {
    /// Starts a new window when the current one is over; what the closed one left out, if anything.
    fn roll(&mut self, now: Instant) -> Option<(u64, u64)> {
        match self.started {
            Some(started) if now.saturating_duration_since(started) < WINDOW => None,
            _ => {
                let left_out = (self.deliveries_left_out, self.refusals_left_out);
                *self = Window { started: Some(now), ..Window::default() };
                (left_out != (0, 0)).then_some(left_out)
            }
        }
    }
}

impl Verdict {
    fn after(self, closed: Option<(u64, u64)>) -> Verdict {
        match (self, closed) {
            (Verdict::Log, Some((deliveries, refusals))) => Verdict::LogAfter { deliveries, refusals },
            (Verdict::Quiet, Some((deliveries, refusals))) => Verdict::QuietAfter { deliveries, refusals },
            (verdict, _) => verdict,
        }
    }
}

/// Logs what the hour that closed left out, when the verdict carries it.
fn summarise(verdict: &Verdict) {
    if let Verdict::LogAfter { deliveries, refusals } | Verdict::QuietAfter { deliveries, refusals } = verdict {
        log(format_args!(
            "the previous hour went over the audit's limits: {deliveries} first deliveries and {refusals} refusals \
             were counted, not logged"
        ));
    }
}

/// The one place an audit line is written (one tracing call site keeps the daemon small).
fn log(line: std::fmt::Arguments<'_>) {
    tracing::info!(target: TARGET, "{line}");
}

/// A uid as the audit writes it: the number, or `unknown` when the bus did not say.
struct Uid(Option<u32>);

impl std::fmt::Display for Uid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(uid) => write!(f, "{uid}"),
            None => f.write_str("unknown"),
        }
    }
}

/// The unit's name in the object path systemd gives it (`/org/freedesktop/systemd1/unit/nodered_2eservice` →
/// `nodered.service`: each byte but letters and digits is `_` and two hex digits). `None` for another path, or
/// a name that is not a plain unit name.
pub fn unit_from_path(path: &str) -> Option<String> {
    let label = path.strip_prefix("/org/freedesktop/systemd1/unit/")?;
    let mut name = Vec::with_capacity(label.len());
    let mut bytes = label.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'_' {
            let hex = [bytes.next()?, bytes.next()?];
            name.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            name.push(byte);
        }
    }
    let plain = |b: &u8| b.is_ascii_alphanumeric() || matches!(*b, b':' | b'_' | b'.' | b'@' | b'-' | b'\\');
    (name.len() <= 256 && name.iter().all(plain)).then(|| String::from_utf8(name).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(uid: u32, unit: Option<&str>) -> Who<'_> {
        Who { uid: Some(uid), unit }
    }

    #[test]
    fn a_delivery_is_logged_once_per_token_uid_and_unit_per_hour() {
        let audit = Audit::new();
        let t0 = Instant::now();
        assert_eq!(audit.delivered_at(t0, "main", who(1000, Some("nodered.service"))), Verdict::Log);
        assert_eq!(audit.delivered_at(t0, "main", who(1000, Some("nodered.service"))), Verdict::Quiet);
        assert_eq!(audit.delivered_at(t0, "main", who(1000, Some("session-3.scope"))), Verdict::Log);
        assert_eq!(audit.delivered_at(t0, "main", who(1001, Some("nodered.service"))), Verdict::Log);
        assert_eq!(audit.delivered_at(t0, "site-a", who(1000, Some("nodered.service"))), Verdict::Log);
        let later = t0 + Duration::from_secs(3599);
        assert_eq!(audit.delivered_at(later, "main", who(1000, Some("nodered.service"))), Verdict::Quiet);
        let next_hour = t0 + WINDOW;
        assert_eq!(audit.delivered_at(next_hour, "main", who(1000, Some("nodered.service"))), Verdict::Log);
    }

    #[test]
    fn a_flood_is_bounded_and_summarised_in_the_next_hour() {
        let audit = Audit::new();
        let t0 = Instant::now();
        let units: Vec<String> = (0..MAX_DELIVERY_LINES + 50).map(|n| format!("app{n}.service")).collect();
        let verdicts: Vec<Verdict> =
            units.iter().map(|unit| audit.delivered_at(t0, "main", who(7, Some(unit)))).collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Log).count(), MAX_DELIVERY_LINES);
        assert_eq!(verdicts[MAX_DELIVERY_LINES], Verdict::LimitReached);
        assert!(verdicts[MAX_DELIVERY_LINES + 1..].iter().all(|v| *v == Verdict::Quiet));
        assert_eq!(audit.lock().delivered.len(), MAX_DELIVERY_LINES, "memory stops growing at the limit");

        let refusals: Vec<Verdict> = (0..MAX_REFUSAL_LINES + 10)
            .map(|_| audit.refused_at(t0, "GetToken", Some("main"), who(7, None), "AccessDenied"))
            .collect();
        assert_eq!(refusals.iter().filter(|v| **v == Verdict::Log).count(), MAX_REFUSAL_LINES);
        assert_eq!(refusals[MAX_REFUSAL_LINES], Verdict::LimitReached);

        let next_hour = t0 + WINDOW + Duration::from_secs(1);
        let first = audit.refused_at(next_hour, "GetToken", None, Who::default(), "InvalidArgs");
        assert_eq!(first, Verdict::LogAfter { deliveries: 50, refusals: 10 });
        assert_eq!(audit.delivered_at(next_hour, "main", who(7, Some("app0.service"))), Verdict::Log);
        assert_eq!(audit.lock().delivered.len(), 1, "the new hour starts empty");
        let quiet_hour = next_hour + WINDOW;
        assert_eq!(audit.delivered_at(quiet_hour, "main", who(7, Some("app0.service"))), Verdict::Log);
    }

    #[test]
    fn only_refusals_of_the_caller_are_audited() {
        for reason in ["AccessDenied", "UnknownToken", "NoTokenForDevice", "InvalidArgs"] {
            assert!(is_refusal(reason), "{reason}");
        }
        for reason in ["NeedsLogin", "Unavailable", "Revoked", "LoginFailed"] {
            assert!(!is_refusal(reason), "{reason}");
        }
    }

    #[test]
    fn units_come_from_systemd_object_paths() {
        let cases = [
            ("/org/freedesktop/systemd1/unit/nodered_2eservice", Some("nodered.service")),
            ("/org/freedesktop/systemd1/unit/session_2d3_2escope", Some("session-3.scope")),
            ("/org/freedesktop/systemd1/unit/getty_40tty1_2eservice", Some("getty@tty1.service")),
            ("/org/freedesktop/systemd1/unit/evil_20name_1b_2eservice", None),
            ("/org/freedesktop/systemd1/unit/cut_2", None),
            ("/org/freedesktop/systemd1/unit/bad_zzx", None),
            ("/org/freedesktop/systemd1", None),
        ];
        for (path, unit) in cases {
            assert_eq!(unit_from_path(path).as_deref(), unit, "{path:?}");
        }
    }
}
