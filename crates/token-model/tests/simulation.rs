//! 180 days in virtual time: the planner against a small model of the cloud, with outages, reboots and wall
//! clocks that jump by years; then the refresh path under pressure: short access tokens (20 s, and 3 s which
//! is too short to serve), suspends (a boot-time clock jumps forward) and reboots without a real-time clock.
//! Run with `--nocapture` to see the figures.

use std::time::Duration;

use token_model::plan::{
    Action, Attempt, CallerAction, Grant, NeedsLoginReason, Outcome, PersistedSession, Policy, RefreshReason,
    RefreshTokenChange, Rotation, Session,
};
use token_model::time::{ClockPair, MonoTime, UntrustedReason, WallClockTrust, WallTime, check_wall_clock};

const SEC: u64 = 1_000;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;
const YEAR: u64 = 365 * DAY;
const SIM_DAYS: u64 = 180;
/// The server's wall clock at the start of the simulation (Unix ms): true time.
const EPOCH0: i64 = 1_780_000_000_000;
const LATENCY: u64 = 300;
const ACCESS_LIFE: u64 = 3599 * SEC;
const REFRESH_LIFE: u64 = 60 * DAY;

/// xorshift64*: tiny, seeded, deterministic.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + (self.unit() * (hi - lo) as f64) as u64
    }

    /// Log-uniform in `[lo, hi)`: as many short outages as long ones per decade.
    fn log_range(&mut self, lo: u64, hi: u64) -> u64 {
        let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
        (l + self.unit() * (h - l)).exp() as u64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// The cloud: one account, its current refresh token and when that was issued; outages.
struct Cloud {
    sliding: bool,
    rt_id: u64,
    rt_issued: u64,
    next_id: u64,
    outages: Vec<(u64, u64)>,
}

enum Reply {
    Ok { rt: Option<u64>, change: RefreshTokenChange, access_expiry: u64 },
    Transient(Option<Duration>),
    Verdict,
}

impl Cloud {
    fn reachable(&self, t: u64) -> bool {
        !self.outages.iter().any(|&(a, b)| t >= a && t < b)
    }

    fn refresh_would_work(&self, rt: Option<u64>, t: u64) -> bool {
        rt == Some(self.rt_id) && t < self.rt_issued + REFRESH_LIFE
    }

    fn refresh(&mut self, rt: Option<u64>, t: u64, rng: &mut Rng) -> Reply {
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

    fn login(&mut self, t: u64) -> Reply {
        if !self.reachable(t) {
            return Reply::Transient(None);
        }
        self.next_id += 1;
        self.rt_id = self.next_id;
        self.rt_issued = t;
        Reply::Ok { rt: Some(self.rt_id), change: RefreshTokenChange::Rotated, access_expiry: t + ACCESS_LIFE }
    }
}

#[derive(Default, Debug)]
struct Figures {
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

struct Scenario {
    name: &'static str,
    sliding: bool,
    unattended: bool,
    seed: u64,
}

/// The daemon's view: a session plus the "tokens" (ids and the true expiry of the access token held).
struct Daemon {
    boot_t: u64,
    skew_ms: i64,
    ntp_fix_at: Option<u64>,
    session: Option<Session>,
    rt: Option<u64>,
    access_expiry: Option<u64>,
    disk: Option<(PersistedSession, Option<u64>, Option<u64>)>,
}

impl Daemon {
    fn pair(&self, t: u64) -> ClockPair {
        let skew = if self.ntp_fix_at.is_some_and(|f| t >= f) { 0 } else { self.skew_ms };
        ClockPair::new(
            MonoTime::from_origin(Duration::from_millis(t - self.boot_t)),
            WallTime::from_unix_millis(EPOCH0 + t as i64 + skew),
        )
    }

    fn to_true(&self, m: MonoTime) -> u64 {
        self.boot_t + m.since_origin().as_millis() as u64
    }

    fn persist(&mut self, t: u64) {
        let pair = self.pair(t);
        self.disk = self.session.as_ref().map(|s| (s.to_persisted(pair), self.rt, self.access_expiry));
    }
}

fn grant(d: &Daemon, t_arrive: u64, change: RefreshTokenChange) -> Grant {
    // The server stamps its (true) time, in whole seconds, as `Date` and `.issued`.
    let server = WallTime::from_unix_millis((EPOCH0 + t_arrive as i64 - LATENCY as i64) / 1000 * 1000).to_system_time();
    Grant::new(d.pair(t_arrive), Duration::from_millis(ACCESS_LIFE), change)
        .with_server_times(Some(server), Some(server))
}

fn run(sc: &Scenario) -> Figures {
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
fn one_hundred_eighty_days() {
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

/// A variant under pressure: the cloud's access-token life, how long to run, and what the machine does.
struct Pressure {
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
struct PressureFigures {
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

fn run_pressure(v: &Pressure) -> PressureFigures {
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
fn under_pressure_short_grants_suspends_and_rtc_less_reboots() {
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
