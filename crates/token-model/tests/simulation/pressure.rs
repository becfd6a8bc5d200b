//! The refresh path under pressure: short access tokens (20 s, and 3 s which is too short to serve), suspends
//! (a boot-time clock jumps forward) and reboots without a real-time clock.

use std::time::Duration;

use token_model::plan::{Action, Attempt, CallerAction, Grant, Outcome, Policy, RefreshTokenChange, Session};
use token_model::time::{ClockPair, MonoTime, UntrustedReason, WallClockTrust, WallTime};

use crate::model::*;

/// A variant under pressure: the cloud's access-token life, how long to run, and what the machine does.
pub(crate) struct Pressure {
    name: &'static str,
    access_life: u64,
    days: u64,
    /// How often a local app asks (GetToken or GetTokenValidFor, alternately).
    client_every: u64,
    /// The machine sleeps now and then (minutes to days): no timer fires, real time passes.
    suspends: bool,
    /// Reboots without a real-time clock: the wall clock comes up at the last saved time.
    rtc_less_reboots: bool,
    seed: u64,
}

#[derive(Default, Debug)]
pub(crate) struct PressureFigures {
    requests: u64,
    max_per_minute: u64,
    max_per_hour: u64,
    min_spacing_ms: Option<u64>,
    caller_refreshes: u64,
    served: u64,
    served_expired: u64,
    served_short: u64,
    refused: u64,
    sessions_lost: u64,
    suspends: u64,
    late_after_resume: u64,
    reboots: u64,
    restored_served_expired: u64,
}

pub(crate) fn run_pressure(v: &Pressure) -> PressureFigures {
    let policy = Policy::default();
    let mut rng = Rng(v.seed);
    let end = v.days * DAY;
    let life = v.access_life;
    let mut f = PressureFigures::default();
    let mut cloud = Cloud { sliding: true, rt_id: 0, rt_issued: 0, next_id: 0, outages: vec![] };
    // The daemon measures time on a boot-time clock: `mono` = true time since boot, suspends included.
    let mut boot_t = 0u64;
    // The wall clock: true time, or (after an RTC-less boot, until NTP) the last saved time plus uptime.
    let mut wall_base: Option<(u64, i64)> = None;
    let mut ntp_at = 0u64;
    let pair = |t: u64, boot_t: u64, wall_base: Option<(u64, i64)>, ntp_at: u64| {
        let wall = match wall_base {
            Some((booted, saved)) if t < ntp_at => saved + (t - booted) as i64,
            _ => EPOCH0 + t as i64,
        };
        ClockPair::new(MonoTime::from_origin(Duration::from_millis(t - boot_t)), WallTime::from_unix_millis(wall))
    };
    let to_true = |m: MonoTime, boot_t: u64| boot_t + m.since_origin().as_millis() as u64;

    let Reply::Ok { rt, .. } = cloud.login(0) else { unreachable!() };
    let first = Grant::new(pair(LATENCY, 0, None, 0), Duration::from_millis(life), RefreshTokenChange::Rotated);
    let mut session = Session::logged_in(&first, &policy, false, rng.unit());
    let mut held_rt = rt;
    // The access token the daemon holds and its true expiry, if it took it.
    let mut access_expiry = session.access_deadline().map(|_| LATENCY + life);
    let mut restored_token = false;
    let mut disk = (session.to_persisted(pair(LATENCY, 0, None, 0)), held_rt, access_expiry);
    let mut now = LATENCY;
    let mut last_request: Option<u64> = Some(0);
    let mut per_minute = std::collections::HashMap::<u64, u64>::new();
    let mut per_hour = std::collections::HashMap::<u64, u64>::new();
    let mut next_client = now;
    let mut next_suspend = if v.suspends { rng.range(HOUR, DAY) } else { u64::MAX };
    let mut next_reboot = if v.rtc_less_reboots { rng.range(3 * DAY, 12 * DAY) } else { u64::MAX };
    let mut human_login_at: Option<u64> = None;
    let mut tick = 0u64;

    while now < end {
        let p = pair(now, boot_t, wall_base, ntp_at);
        let action = session.plan(&policy, p.mono);
        let action_t = action.at().map(|m| to_true(m, boot_t).max(now));
        let next = [action_t, Some(next_client), Some(next_suspend), Some(next_reboot), human_login_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap();
        now = next;
        if now >= end {
            break;
        }
        if now == next_suspend {
            f.suspends += 1;
            let before = action_t;
            now += rng.log_range(2 * MIN, 3 * DAY);
            next_suspend = now + rng.range(HOUR, 2 * DAY);
            next_client = now;
            // At the resume, anything that fell due while asleep is due at once.
            let mono = pair(now, boot_t, wall_base, ntp_at).mono;
            if before.is_some_and(|b| b <= now) && session.plan(&policy, mono).at().is_none_or(|a| a > mono) {
                f.late_after_resume += 1;
            }
            continue;
        }
        if now == next_reboot {
            f.reboots += 1;
            now += rng.range(30 * SEC, 10 * MIN);
            boot_t = now;
            let (saved, rt, _) = disk.clone();
            // No RTC: the clock comes up at the last saved time; NTP sets it within the hour, maybe.
            let saved_wall = saved.known_good.map_or(EPOCH0, |k| k.unix_millis());
            wall_base = Some((now, saved_wall));
            ntp_at = now + rng.range(MIN, HOUR);
            let p = pair(now, boot_t, wall_base, ntp_at);
            let last_known_good = saved.known_good.unwrap_or(WallTime::UNIX_EPOCH);
            let trust =
                WallClockTrust::Untrusted(UntrustedReason::EarlierThanLastKnownGood { last_known_good, now: p.wall });
            session = saved.restore(p, trust, false, rng.unit());
            held_rt = rt;
            access_expiry = disk.2;
            restored_token = true;
            last_request = None;
            next_reboot = now + rng.range(3 * DAY, 12 * DAY);
            next_client = now;
            continue;
        }
        if human_login_at == Some(now) {
            human_login_at = None;
            let Reply::Ok { rt, .. } = cloud.login(now) else { unreachable!() };
            let at = now + LATENCY;
            let g = Grant::new(
                pair(at, boot_t, wall_base, ntp_at),
                Duration::from_millis(life),
                RefreshTokenChange::Rotated,
            );
            session.apply(Attempt::Login, Outcome::Success(g), g.arrived, &policy, rng.unit());
            held_rt = rt;
            if !policy.too_short(g.expires_in) {
                access_expiry = Some(at + life);
                restored_token = false;
            }
            last_request = Some(now);
            disk = (session.to_persisted(g.arrived), held_rt, access_expiry);
            now = at;
            continue;
        }

        let mut request = action_t == Some(now) && !matches!(action, Action::WarnLapse { .. });
        if action_t == Some(now)
            && let Action::WarnLapse { .. } = action
        {
            session.record_warning(pair(now, boot_t, wall_base, ntp_at).mono, &policy);
            continue;
        }
        if !request {
            // A local app asks: GetToken, or GetTokenValidFor a third of the token's life.
            tick += 1;
            next_client = now + v.client_every;
            let want = if tick.is_multiple_of(2) { life / 3 } else { 0 };
            let mono = pair(now, boot_t, wall_base, ntp_at).mono;
            match session.for_caller(mono, Duration::from_millis(want), &policy) {
                CallerAction::Serve => {
                    f.served += 1;
                    let expiry = access_expiry.expect("served a token the daemon does not hold");
                    if expiry <= now {
                        f.served_expired += 1;
                        if restored_token {
                            f.restored_served_expired += 1;
                        }
                    }
                    if expiry <= now + want {
                        f.served_short += 1;
                    }
                }
                CallerAction::RefreshNow => {
                    f.caller_refreshes += 1;
                    request = true;
                }
                _ => f.refused += 1,
            }
            if !request {
                continue;
            }
        }

        // A request goes out at `now`.
        f.requests += 1;
        if let Some(l) = last_request {
            let gap = now - l;
            f.min_spacing_ms = Some(f.min_spacing_ms.map_or(gap, |m| m.min(gap)));
        }
        last_request = Some(now);
        *per_minute.entry(now / MIN).or_default() += 1;
        *per_hour.entry(now / HOUR).or_default() += 1;
        let attempt = match action {
            Action::ReLogin { .. } | Action::Retry { attempt: Attempt::Login, .. } if action_t == Some(now) => {
                Attempt::Login
            }
            _ => Attempt::Refresh,
        };
        let reply = match attempt {
            Attempt::Refresh => cloud.refresh(held_rt, now, &mut rng),
            Attempt::Login => cloud.login(now),
        };
        let at = now + LATENCY;
        let p = pair(at, boot_t, wall_base, ntp_at);
        let outcome = match reply {
            Reply::Ok { rt, change, .. } => {
                if rt.is_some() {
                    held_rt = rt;
                }
                let g = Grant::new(p, Duration::from_millis(life), change);
                if !policy.too_short(g.expires_in) {
                    access_expiry = Some(at + life);
                    restored_token = false;
                }
                Outcome::Success(g)
            }
            Reply::Transient(retry_after) => Outcome::Transient { retry_after },
            Reply::Verdict => Outcome::Verdict,
        };
        session.apply(attempt, outcome, p, &policy, rng.unit());
        if let Action::NeedsLogin { .. } = session.plan(&policy, p.mono) {
            f.sessions_lost += 1;
            human_login_at = Some(at + HOUR);
        }
        disk = (session.to_persisted(p), held_rt, access_expiry);
        now = at;
    }
    f.max_per_minute = per_minute.values().copied().max().unwrap_or(0);
    f.max_per_hour = per_hour.values().copied().max().unwrap_or(0);
    f
}

#[test]
pub(crate) fn under_pressure_short_grants_suspends_and_rtc_less_reboots() {
    let policy = Policy::default();
    let floor = policy.refresh_floor.as_millis() as u64;
    let variants = [
        Pressure {
            name: "20 s access tokens",
            access_life: 20 * SEC,
            days: 2,
            client_every: 3 * SEC,
            suspends: false,
            rtc_less_reboots: false,
            seed: 0x5eed_0011,
        },
        Pressure {
            name: "3 s access tokens (too short to serve)",
            access_life: 3 * SEC,
            days: 1,
            client_every: 2 * SEC,
            suspends: false,
            rtc_less_reboots: false,
            seed: 0x5eed_0012,
        },
        Pressure {
            name: "1 h access tokens, suspends",
            access_life: ACCESS_LIFE,
            days: SIM_DAYS,
            client_every: 5 * MIN,
            suspends: true,
            rtc_less_reboots: false,
            seed: 0x5eed_0013,
        },
        Pressure {
            name: "20 s access tokens, suspends",
            access_life: 20 * SEC,
            days: 30,
            client_every: 10 * SEC,
            suspends: true,
            rtc_less_reboots: false,
            seed: 0x5eed_0014,
        },
        Pressure {
            name: "1 h access tokens, RTC-less reboots",
            access_life: ACCESS_LIFE,
            days: SIM_DAYS,
            client_every: 5 * MIN,
            suspends: false,
            rtc_less_reboots: true,
            seed: 0x5eed_0015,
        },
        Pressure {
            name: "1 h access tokens, suspends and RTC-less reboots",
            access_life: ACCESS_LIFE,
            days: SIM_DAYS,
            client_every: 5 * MIN,
            suspends: true,
            rtc_less_reboots: true,
            seed: 0x5eed_0016,
        },
    ];
    for v in &variants {
        let f = run_pressure(v);
        let hours = (v.days * 24) as f64;
        println!("== {} ({} days, seed {:#x})", v.name, v.days, v.seed);
        println!(
            "   requests: {} ({:.1} an hour; at most {} in a minute, {} in an hour; closest two {} ms apart); {} triggered by callers",
            f.requests,
            f.requests as f64 / hours,
            f.max_per_minute,
            f.max_per_hour,
            f.min_spacing_ms.map_or("-".to_owned(), |m| m.to_string()),
            f.caller_refreshes
        );
        println!(
            "   served: {}; refused: {}; served expired: {} ({} of them restored); GetTokenValidFor served too short: {}",
            f.served, f.refused, f.served_expired, f.restored_served_expired, f.served_short
        );
        println!(
            "   sessions lost: {}; suspends: {} ({} not due at once on resume); RTC-less reboots: {}",
            f.sessions_lost, f.suspends, f.late_after_resume, f.reboots
        );

        assert_eq!(f.served_expired, 0, "{}: a token was served after its real expiry", v.name);
        assert_eq!(f.served_short, 0, "{}: GetTokenValidFor served a token too short", v.name);
        assert!(f.min_spacing_ms.is_some_and(|m| m >= floor), "{}: two requests within the floor", v.name);
        assert!(f.max_per_minute <= MIN / floor, "{}: more than one request per floor in a minute", v.name);
        assert_eq!(f.late_after_resume, 0, "{}: a refresh due during a suspend was not due at the resume", v.name);
        assert_eq!(f.sessions_lost, 0, "{}: the session was lost", v.name);
        if v.access_life >= floor {
            assert!(f.served > 0, "{}: nothing was served", v.name);
        } else {
            assert_eq!(f.served, 0, "{}: a token too short to serve was served", v.name);
        }
        if v.suspends {
            assert!(f.suspends > 5, "{}: too few suspends", v.name);
        }
        if v.rtc_less_reboots {
            assert!(f.reboots > 5, "{}: too few reboots", v.name);
        }
    }
}
