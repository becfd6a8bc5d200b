//! 180 days in virtual time: the planner against the model of the cloud, with outages, reboots and wall clocks
//! that jump by years.

use std::time::Duration;

use token_model::plan::{
    Action, Attempt, Grant, NeedsLoginReason, Outcome, PersistedSession, Policy, RefreshReason, RefreshTokenChange,
    Rotation, Session,
};
use token_model::time::{ClockPair, MonoTime, WallTime, check_wall_clock};

use crate::model::*;

#[derive(Default, Debug)]
pub(crate) struct Figures {
    served: u64,
    expired_served_reachable: u64,
    expired_served_unreachable: u64,
    unavailable_reachable: u64,
    unavailable_unreachable: u64,
    served_too_short_reachable: u64,
    refreshes_on_demand: u64,
    retries: u64,
    refresh_requests: u64,
    healthy_days: u64,
    healthy_refresh_requests: u64,
    unattended_relogins: u64,
    human_logins: u64,
    needless_relogins: u64,
    needs_login_events: u64,
    warnings: u64,
    first_warning_min_lead_ms: Option<u64>,
    refresh_token_lapses: u64,
    reboots: u64,
    untrusted_boots: u64,
    outages: usize,
    longest_outage_ms: u64,
}

pub(crate) struct Scenario {
    name: &'static str,
    sliding: bool,
    unattended: bool,
    seed: u64,
}

/// The daemon's view: a session plus the "tokens" (ids and the true expiry of the access token held).
pub(crate) struct Daemon {
    boot_t: u64,
    skew_ms: i64,
    ntp_fix_at: Option<u64>,
    session: Option<Session>,
    rt: Option<u64>,
    access_expiry: Option<u64>,
    disk: Option<(PersistedSession, Option<u64>, Option<u64>)>,
}

impl Daemon {
    pub(crate) fn pair(&self, t: u64) -> ClockPair {
        let skew = if self.ntp_fix_at.is_some_and(|f| t >= f) { 0 } else { self.skew_ms };
        ClockPair::new(
            MonoTime::from_origin(Duration::from_millis(t - self.boot_t)),
            WallTime::from_unix_millis(EPOCH0 + t as i64 + skew),
        )
    }

    pub(crate) fn to_true(&self, m: MonoTime) -> u64 {
        self.boot_t + m.since_origin().as_millis() as u64
    }

    pub(crate) fn persist(&mut self, t: u64) {
        let pair = self.pair(t);
        self.disk = self.session.as_ref().map(|s| (s.to_persisted(pair), self.rt, self.access_expiry));
    }
}

pub(crate) fn grant(d: &Daemon, t_arrive: u64, change: RefreshTokenChange) -> Grant {
    // The server stamps its (true) time, in whole seconds, as `Date` and `.issued`.
    let server = WallTime::from_unix_millis((EPOCH0 + t_arrive as i64 - LATENCY as i64) / 1000 * 1000).to_system_time();
    Grant::new(d.pair(t_arrive), Duration::from_millis(ACCESS_LIFE), change)
        .with_server_times(Some(server), Some(server))
}

pub(crate) fn run(sc: &Scenario) -> Figures {
    let policy = Policy::default();
    let mut rng = Rng(sc.seed);
    let end = SIM_DAYS * DAY;

    // Outages from minutes to 3 days, one of exactly 3 days for certain.
    let mut outages = vec![];
    let mut t = rng.range(DAY, 4 * DAY);
    while t < end {
        let len = rng.log_range(2 * MIN, 3 * DAY);
        outages.push((t, t + len));
        t += len + rng.range(2 * DAY, 9 * DAY);
    }
    outages.push((97 * DAY, 100 * DAY));
    outages.sort_unstable();

    let mut f = Figures {
        outages: outages.len(),
        longest_outage_ms: outages.iter().map(|(a, b)| b - a).max().unwrap_or(0),
        ..Figures::default()
    };
    let mut cloud = Cloud { sliding: sc.sliding, rt_id: 0, rt_issued: 0, next_id: 0, outages };
    let mut d =
        Daemon { boot_t: 0, skew_ms: 0, ntp_fix_at: None, session: None, rt: None, access_expiry: None, disk: None };
    let mut unhealthy_days = vec![false; SIM_DAYS as usize + 1];
    let mut refreshes_per_day = vec![0u64; SIM_DAYS as usize + 1];
    for &(a, b) in &cloud.outages {
        for day in a / DAY..=(b / DAY).min(SIM_DAYS) {
            unhealthy_days[day as usize] = true;
        }
    }

    let mut now = 0u64;
    let mut human_login_at: Option<u64> = Some(0);
    let mut next_client = 0u64;
    let mut next_reboot = rng.range(3 * DAY, 12 * DAY);
    let mut window_warned = false; // a warning was already given for the current refresh-token window
    let mut window_rt = None;
    let mut stuck = 0;
    let mut client_tick = 0u64;
    let mut forced_refresh = false; // GetTokenValidFor found the token too short: refresh first
    let mut reasked = false;

    while now < end {
        let action = d.session.as_ref().map(|s| s.plan(&policy, d.pair(now).mono));
        let action_t = action.and_then(|a| a.at()).map(|m| d.to_true(m).max(now));
        let next = [Some(next_reboot), human_login_at, action_t, Some(next_client), forced_refresh.then_some(now)]
            .into_iter()
            .flatten()
            .min()
            .unwrap();
        if next == now {
            stuck += 1;
            assert!(stuck < 1_000, "the planner makes no progress at t={now} ms: {action:?}");
        } else {
            stuck = 0;
        }
        now = next;
        if now >= end {
            break;
        }

        // The cloud's refresh token lapsing under the daemon's feet.
        if window_rt == d.rt && d.rt.is_some() && now >= cloud.rt_issued + REFRESH_LIFE && d.rt == Some(cloud.rt_id) {
            f.refresh_token_lapses += 1;
            window_rt = None;
        }

        if now == next_reboot {
            // Down for 30 s to 10 min; the wall clock may come back years off, and NTP may fix it later.
            f.reboots += 1;
            unhealthy_days[(now / DAY) as usize] = true;
            let down = rng.range(30 * SEC, 10 * MIN);
            now += down;
            d.boot_t = now;
            let roll = rng.unit();
            d.skew_ms = if roll < 0.6 {
                0
            } else if roll < 0.8 {
                (rng.range(1, 20) * YEAR) as i64
            } else {
                -((rng.range(1, 30) * YEAR) as i64)
            };
            d.ntp_fix_at = (d.skew_ms != 0 && rng.chance(0.5)).then(|| now + rng.range(MIN, HOUR));
            let pair = d.pair(now);
            d.session = None;
            d.rt = None;
            d.access_expiry = None;
            if let Some((p, rt, access)) = d.disk.clone() {
                let trust = check_wall_clock(p.known_good, pair.wall);
                if !trust.is_trusted() {
                    f.untrusted_boots += 1;
                }
                d.session = Some(p.restore(pair, trust, sc.unattended, rng.unit()));
                d.rt = rt;
                d.access_expiry = access;
            }
            next_reboot = now + rng.range(3 * DAY, 12 * DAY);
            next_client = next_client.max(now);
            continue;
        }

        if human_login_at == Some(now) {
            match cloud.login(now) {
                Reply::Ok { rt, change, access_expiry } => {
                    f.human_logins += 1;
                    unhealthy_days[(now / DAY) as usize] = true;
                    let g = grant(&d, now + LATENCY, change);
                    match d.session.as_mut() {
                        Some(s) => s.apply(Attempt::Login, Outcome::Success(g), g.arrived, &policy, rng.unit()),
                        None => d.session = Some(Session::logged_in(&g, &policy, sc.unattended, rng.unit())),
                    }
                    d.rt = rt;
                    d.access_expiry = Some(access_expiry);
                    d.persist(now + LATENCY);
                    human_login_at = None;
                    window_warned = false;
                    window_rt = d.rt;
                }
                _ => human_login_at = Some(now + HOUR),
            }
            continue;
        }

        let forced = std::mem::take(&mut forced_refresh);
        if forced || action_t == Some(now) {
            let action = if forced {
                Action::Refresh { at: d.pair(now).mono, reason: RefreshReason::AccessToken }
            } else {
                action.unwrap()
            };
            if matches!(action, Action::Retry { .. }) {
                f.retries += 1;
            }
            let (attempt, is_refresh) = match action {
                Action::Refresh { .. } | Action::Retry { attempt: Attempt::Refresh, .. } => (Attempt::Refresh, true),
                Action::ReLogin { .. } | Action::Retry { attempt: Attempt::Login, .. } => (Attempt::Login, false),
                Action::WarnLapse { lapses_at, .. } => {
                    f.warnings += 1;
                    let true_left = (cloud.rt_issued + REFRESH_LIFE).saturating_sub(now);
                    if !window_warned && !sc.sliding {
                        f.first_warning_min_lead_ms =
                            Some(f.first_warning_min_lead_ms.map_or(true_left, |m: u64| m.min(true_left)));
                    }
                    window_warned = true;
                    assert!(d.to_true(lapses_at.mono()) > now, "a warning after the lapse");
                    let mono = d.pair(now).mono;
                    d.session.as_mut().unwrap().record_warning(mono, &policy);
                    d.persist(now);
                    // The human answers most warnings with a login within days (before the lapse).
                    if !sc.unattended && human_login_at.is_none() && rng.chance(0.7) {
                        let left = true_left.saturating_sub(HOUR);
                        human_login_at = Some(now + rng.range(HOUR.min(left / 2), (5 * DAY).min(left).max(1)));
                    }
                    continue;
                }
                Action::NeedsLogin { .. } => unreachable!("needs-login has no time"),
            };
            if !is_refresh {
                // A re-login is needless when a refresh would have done: the refresh token still works
                // and (under a fixed window) is not close to its lapse.
                let left = (cloud.rt_issued + REFRESH_LIFE).saturating_sub(now);
                if cloud.refresh_would_work(d.rt, now)
                    && (cloud.sliding || left > policy.relogin_lead.as_millis() as u64 + HOUR)
                {
                    f.needless_relogins += 1;
                }
            }
            let reply = if is_refresh {
                f.refresh_requests += 1;
                refreshes_per_day[(now / DAY) as usize] += 1;
                cloud.refresh(d.rt, now, &mut rng)
            } else {
                unhealthy_days[(now / DAY) as usize] = true;
                cloud.login(now)
            };
            let at = now + LATENCY;
            let outcome = match reply {
                Reply::Ok { rt, change, access_expiry } => {
                    if !is_refresh {
                        f.unattended_relogins += 1;
                        window_warned = false;
                    }
                    if change == RefreshTokenChange::Rotated {
                        window_warned = false;
                    }
                    if rt.is_some() {
                        d.rt = rt;
                    }
                    window_rt = d.rt;
                    d.access_expiry = Some(access_expiry);
                    Outcome::Success(grant(&d, at, change))
                }
                Reply::Transient(retry_after) => Outcome::Transient { retry_after },
                Reply::Verdict => Outcome::Verdict,
            };
            let pair = d.pair(at);
            let s = d.session.as_mut().unwrap();
            s.apply(attempt, outcome, pair, &policy, rng.unit());
            if let Action::NeedsLogin { reason } = s.plan(&policy, pair.mono) {
                assert_ne!(reason, NeedsLoginReason::NoSession);
                f.needs_login_events += 1;
                if cloud.refresh_would_work(d.rt, at) {
                    f.needless_relogins += 1;
                }
                if human_login_at.is_none() {
                    human_login_at = Some(at + rng.range(HOUR, 12 * HOUR));
                }
            }
            d.persist(at);
            now = at;
            continue;
        }

        // A local app asks for the token: GetToken, or GetTokenValidFor(600) every other time.
        client_tick += 1;
        let want = if client_tick.is_multiple_of(2) { 10 * MIN } else { 0 };
        let mono = d.pair(now).mono;
        let reachable = cloud.reachable(now);
        let serves = d.session.as_ref().is_some_and(|s| s.valid_for(mono, Duration::from_millis(want), &policy));
        let refreshable = d.session.as_ref().is_some_and(|s| matches!(s.plan(&policy, mono), Action::Refresh { .. }));
        if !serves && want > 0 && refreshable && !reasked {
            // The daemon refreshes first, then answers.
            forced_refresh = true;
            reasked = true;
            f.refreshes_on_demand += 1;
            continue;
        }
        reasked = false;
        next_client = now + 5 * MIN;
        if serves {
            f.served += 1;
            let expiry = d.access_expiry.expect("served a token the daemon does not hold");
            if expiry <= now + want && reachable {
                f.served_too_short_reachable += 1;
            }
            if expiry <= now {
                if reachable {
                    f.expired_served_reachable += 1;
                } else {
                    f.expired_served_unreachable += 1;
                }
            }
        } else if reachable {
            f.unavailable_reachable += 1;
        } else {
            f.unavailable_unreachable += 1;
        }
    }

    for day in 0..SIM_DAYS as usize {
        if !unhealthy_days[day] {
            f.healthy_days += 1;
            f.healthy_refresh_requests += refreshes_per_day[day];
        }
    }
    assert!(d.session.as_ref().is_some_and(|s| s.rotation() != Rotation::Unknown), "no refresh ever happened");
    f
}

#[test]
pub(crate) fn one_hundred_eighty_days() {
    let scenarios = [
        Scenario { name: "sliding, attended", sliding: true, unattended: false, seed: 0x5eed_0001 },
        Scenario { name: "sliding, unattended re-login", sliding: true, unattended: true, seed: 0x5eed_0002 },
        Scenario { name: "fixed, attended", sliding: false, unattended: false, seed: 0x5eed_0003 },
        Scenario { name: "fixed, unattended re-login", sliding: false, unattended: true, seed: 0x5eed_0004 },
    ];
    for sc in &scenarios {
        let f = run(sc);
        let per_day = f.healthy_refresh_requests as f64 / f.healthy_days.max(1) as f64;
        println!("== {} ({SIM_DAYS} days, seed {:#x})", sc.name, sc.seed);
        println!(
            "   outages: {} (longest {:.1} h); reboots: {} ({} with an untrusted wall clock)",
            f.outages,
            f.longest_outage_ms as f64 / HOUR as f64,
            f.reboots,
            f.untrusted_boots
        );
        println!(
            "   tokens served: {}; expired served while reachable: {}; expired served during outages: {}",
            f.served, f.expired_served_reachable, f.expired_served_unreachable
        );
        println!(
            "   requests refused (no valid token): {} while reachable, {} during outages",
            f.unavailable_reachable, f.unavailable_unreachable
        );
        println!(
            "   refresh requests: {} in all ({} retries after transient failures, {} on demand for GetTokenValidFor); {per_day:.2} a day on {} healthy days",
            f.refresh_requests, f.retries, f.refreshes_on_demand, f.healthy_days
        );
        println!(
            "   GetTokenValidFor(600) answered with a shorter-lived token while reachable: {}",
            f.served_too_short_reachable
        );
        println!(
            "   logins: {} by a human, {} unattended; needless re-logins: {}; needs-login events: {}; refresh-token lapses: {}",
            f.human_logins, f.unattended_relogins, f.needless_relogins, f.needs_login_events, f.refresh_token_lapses
        );
        println!(
            "   lapse warnings: {}; earliest-lead first warning: {}",
            f.warnings,
            f.first_warning_min_lead_ms.map_or("none".to_owned(), |ms| {
                let over = ms as i64 - (7 * DAY) as i64;
                format!("{:.3} days ahead (7 days {over:+} ms)", ms as f64 / DAY as f64)
            })
        );

        assert_eq!(f.expired_served_reachable, 0, "{}: expired tokens served while the cloud was reachable", sc.name);
        assert_eq!(f.served_too_short_reachable, 0, "{}: GetTokenValidFor served a token too short", sc.name);
        assert_eq!(f.needless_relogins, 0, "{}: re-logins where a refresh would have done", sc.name);
        assert!(per_day <= 32.0, "{}: {per_day:.2} refresh requests a day when healthy", sc.name);
        assert!(f.healthy_days >= 60, "{}: too few healthy days ({}) to judge", sc.name, f.healthy_days);
        assert!(f.reboots > 5 && f.untrusted_boots > 0, "{}: the restore path was not exercised", sc.name);
        if sc.sliding || sc.unattended {
            assert_eq!(f.refresh_token_lapses, 0, "{}: the refresh token lapsed", sc.name);
        }
        if !sc.sliding && !sc.unattended {
            let lead = f.first_warning_min_lead_ms.expect("a fixed window without re-login must warn");
            assert!(lead >= 7 * DAY, "{}: first lapse warning only {lead} ms ahead", sc.name);
        }
        if !sc.sliding && sc.unattended {
            assert!(f.unattended_relogins >= 2, "{}: a fixed window needs re-logins every ~50 days", sc.name);
        }
    }
}
