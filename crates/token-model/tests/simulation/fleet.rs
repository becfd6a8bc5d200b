//! A fleet after a power cut: 10,000 gateways with random machine ids, each with one user session, all powered on
//! in the same second after an outage; half of them have a clock that is not confirmed (no real-time clock: it
//! resumes from the last time saved), so their saved access tokens are refreshed before being served. With the
//! default settings, the cloud's busiest second stays within 2 % of the fleet and no gateway serves a token that
//! has expired. It prints, per outage length, the busiest second as a share of the fleet and the time until every
//! gateway serves a valid token, each also without the spread for comparison.

use std::collections::HashMap;
use std::time::Duration;

use token_model::fleet::{self, Budget, MachineKey, STARTUP_JOB, Spread};
use token_model::plan::{Action, Attempt, Grant, Outcome, Policy, RefreshTokenChange, Session};
use token_model::time::{ClockPair, MonoTime, UntrustedReason, WallClockTrust, WallTime};

use crate::model::{ACCESS_LIFE, EPOCH0, HOUR, LATENCY, MIN, Rng, SEC};

const GATEWAYS: usize = 10_000;
/// How long after power-on the fleet is followed: past every gateway's second refresh.
const FOLLOW: u64 = 2 * HOUR;

fn mono(ms: u64) -> MonoTime {
    MonoTime::from_origin(Duration::from_millis(ms))
}

fn ms(t: MonoTime) -> u64 {
    t.since_origin().as_millis() as u64
}

/// What the cloud saw and what the gateways served.
struct Figures {
    /// Requests per second since power-on.
    per_second: HashMap<u64, usize>,
    /// The latest moment (ms after power-on) from which a gateway served a valid token.
    all_valid_after: u64,
    /// Tokens served past their expiry by the cloud's clock.
    served_expired: usize,
    /// Times a served token stopped being served before its refresh's answer came.
    gaps: usize,
}

impl Figures {
    fn busiest_share(&self) -> f64 {
        *self.per_second.values().max().unwrap_or(&0) as f64 / GATEWAYS as f64
    }
}

/// One gateway's machine id, as `/etc/machine-id` holds it.
fn machine_id(rng: &mut Rng) -> String {
    format!("{:016x}{:016x}\n", rng.next_u64(), rng.next_u64())
}

/// The fleet after an outage of `outage` ms, with the start-up spread `window` and the default budget.
fn run(outage: u64, window: Duration, seed: u64) -> Figures {
    let policy = Policy::default();
    let mut rng = Rng(seed);
    let cut = EPOCH0; // the true wall time of the cut (ms)
    let power_on = cut + outage as i64;
    let mut figures = Figures { per_second: HashMap::new(), all_valid_after: 0, served_expired: 0, gaps: 0 };
    for i in 0..GATEWAYS {
        let key = MachineKey::from_machine_id(machine_id(&mut rng).as_bytes());
        let confirmed = i % 2 == 0;
        // Before the cut the gateway refreshed at 75–80 % of each token's life: its token's age at the cut is
        // anywhere up to that point.
        let jitter = rng.unit();
        let age = rng.range(0, (ACCESS_LIFE as f64 * (0.75 + 0.05 * jitter)) as u64) as i64;
        let before = ClockPair::new(mono(1_000_000_000), WallTime::from_unix_millis(cut - age));
        let grant = Grant::new(before, Duration::from_millis(ACCESS_LIFE), RefreshTokenChange::Rotated);
        let saved = Session::logged_in(&grant, &policy, false, jitter).to_persisted(before);
        // After power-on, on the gateway's own boot-time line (which starts at power-on): the daemon starts within
        // the same second.
        let start_ms = rng.range(0, SEC);
        let true_wall = |m: u64| power_on + m as i64;
        let (wall, trust) = if confirmed {
            (true_wall(start_ms), WallClockTrust::Trusted)
        } else {
            // No real-time clock: the time resumes from the last one saved, and is not confirmed.
            (cut, WallClockTrust::Untrusted(UntrustedReason::Unconfirmed))
        };
        let start = ClockPair::new(mono(start_ms), WallTime::from_unix_millis(wall));
        let mut session = saved.restore(start, trust, false, rng.unit());
        let spread = Spread::new(key, window);
        session.spread_start(start.mono, spread.offset("main", STARTUP_JOB), window, &policy);
        let mut budget = Budget::per_minute(fleet::DEFAULT_REQUEST_BURST, fleet::DEFAULT_REQUESTS_PER_MINUTE);
        // The true expiry of the token in hand, on the gateway's line (ms; negative: before power-on).
        let mut true_expiry = cut - age + ACCESS_LIFE as i64 - power_on;
        let mut valid_from = session.valid_for(start.mono, Duration::ZERO, &policy).then_some(start_ms);
        let mut now = start.mono;
        while ms(now) < FOLLOW {
            let at = match session.plan(&policy, now) {
                Action::Refresh { at, .. } | Action::Retry { at, attempt: Attempt::Refresh, .. } => at,
                other => panic!("gateway {i}: unexpected plan {other:?}"),
            };
            let sent = budget.reserve(at);
            let reply = ms(sent) + LATENCY;
            // The token in hand is served until its end of serving or the answer, whichever comes first: it must
            // not have expired by the cloud's clock by then.
            if session.valid_for(now, Duration::ZERO, &policy) {
                let end = session.serve_until(&policy).map_or(0, ms);
                if reply.min(end) as i64 >= true_expiry {
                    figures.served_expired += 1;
                }
                if end < reply {
                    // It stopped being served before the new one came: a gap, served again from the answer.
                    figures.gaps += 1;
                    if now == start.mono {
                        valid_from = None;
                    }
                }
            }
            *figures.per_second.entry(ms(sent) / SEC).or_default() += 1;
            let arrived = ClockPair::new(mono(reply), WallTime::from_unix_millis(true_wall(reply)));
            let grant = Grant::new(arrived, Duration::from_millis(ACCESS_LIFE), RefreshTokenChange::Rotated);
            session.apply(Attempt::Refresh, Outcome::Success(grant), arrived, &policy, rng.unit());
            true_expiry = (reply + ACCESS_LIFE) as i64;
            valid_from.get_or_insert(reply);
            now = arrived.mono;
        }
        figures.all_valid_after = figures.all_valid_after.max(valid_from.unwrap_or(u64::MAX));
    }
    figures
}

#[test]
fn a_fleet_powered_on_in_the_same_second_stays_within_2_percent_a_second() {
    for (outage, name) in [(10 * MIN, "10 min"), (30 * MIN, "30 min"), (3 * HOUR, "3 h")] {
        let spread = run(outage, fleet::DEFAULT_STARTUP_SPREAD, 0x5eed_f1ee7);
        let herd = run(outage, Duration::ZERO, 0x5eed_f1ee7);
        println!(
            "fleet of {GATEWAYS} after a {name} outage, half with an unconfirmed clock: busiest second {:.2} % of the \
             fleet (without the spread: {:.1} %); every gateway serves a valid token {:.1} s after power-on (without \
             the spread: {:.1} s)",
            spread.busiest_share() * 100.0,
            herd.busiest_share() * 100.0,
            spread.all_valid_after as f64 / 1000.0,
            herd.all_valid_after as f64 / 1000.0,
        );
        assert!(
            spread.busiest_share() <= 0.02,
            "a {name} outage: {:.2} % in one second",
            spread.busiest_share() * 100.0
        );
        assert_eq!(spread.served_expired, 0, "a {name} outage: expired tokens served");
        assert_eq!(herd.served_expired, 0, "a {name} outage without the spread: expired tokens served");
        // A restored token whose plan puts its refresh at the very end of its serving (the boot-time line starts at
        // power-on, so its life looks shorter) may go unserved while the answer travels: the spread adds no such gap.
        assert!(spread.gaps <= herd.gaps, "a {name} outage: the spread let {} served tokens lapse", spread.gaps);
        let by = herd.all_valid_after.max(fleet::DEFAULT_STARTUP_SPREAD.as_millis() as u64 + 2 * SEC);
        assert!(
            spread.all_valid_after <= by,
            "a {name} outage: a gateway had no valid token until {} ms",
            spread.all_valid_after
        );
    }
}
