//! Properties of the refresh planner, the backoff, lapse warnings, the serving rule and the restore path.

use std::time::Duration;

use proptest::prelude::*;
use token_model::plan::{
    Action, Attempt, Grant, Outcome, PersistedSession, Policy, RefreshReason, RefreshTokenChange, Rotation, Session,
    valid_for,
};
use token_model::time::{ClockPair, Deadline, MonoTime, UntrustedReason, WallClockTrust, WallTime};

const WALL0: i64 = 1_780_000_000_000;
const DAY: u64 = 86_400;

fn at_ms(ms: u64) -> ClockPair {
    ClockPair::new(MonoTime::from_origin(Duration::from_millis(ms)), WallTime::from_unix_millis(WALL0 + ms as i64))
}

fn mono_ms(ms: u64) -> MonoTime {
    MonoTime::from_origin(Duration::from_millis(ms))
}

/// A session built the way the daemon builds one: a login, then maybe a refresh of some kind. Every grant
/// here is servable (at least the 5 s refresh floor); grants too short to serve have their own properties.
#[derive(Debug, Clone)]
struct Case {
    session: Session,
    /// When the last reply arrived (ms).
    last: u64,
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        0u64..1_000_000_000,                                 // login at (ms)
        prop_oneof![5u64..300, Just(3599), 5u64..200 * DAY], // expires_in (s): short, usual, up to 200 days
        0u8..3,                                              // 0 login only, 1 rotated refresh, 2 fixed refresh
        0u64..3_600_000,                                     // refresh delay after login (ms)
        any::<bool>(),                                       // unattended re-login configured
        0.0f64..1.0,                                         // jitter
        0.0f64..1.0,                                         // jitter of the refresh
    )
        .prop_map(|(t0, life, kind, gap, unattended, j1, j2)| {
            let policy = Policy::default();
            let life = Duration::from_secs(life);
            let g = Grant::new(at_ms(t0), life, RefreshTokenChange::Rotated);
            let mut session = Session::logged_in(&g, &policy, unattended, j1);
            let mut last = t0;
            if kind > 0 {
                last = t0 + gap;
                let change = if kind == 1 { RefreshTokenChange::Rotated } else { RefreshTokenChange::Repeated };
                let g = Grant::new(at_ms(last), life, change);
                session.apply(Attempt::Refresh, Outcome::Success(g), at_ms(last), &policy, j2);
            }
            Case { session, last }
        })
}

/// How long after the last reply the plan is asked for (ms): seconds, within the hour, or months.
fn later() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..300_000, 0u64..3_600_000, 0u64..300 * DAY * 1000]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// The planned refresh falls before both deadlines (the access token's by its margin, the refresh
    /// token's by the safety margin) while time remains, unless the refresh floor holds it back, and never
    /// before `now`.
    #[test]
    fn refresh_is_planned_before_both_deadlines(case in arb_case(), later in later()) {
        let policy = Policy::default();
        let margin = policy.safety_margin;
        let now = mono_ms(case.last + later);
        let access = case.session.access_deadline().unwrap();
        let access_margin = policy.margin_for(case.session.access_lifetime().unwrap());
        let floor = mono_ms(case.last) + policy.refresh_floor;
        let rt = case.session.refresh_deadline().unwrap();
        match case.session.plan(&policy, now) {
            Action::Refresh { at, .. } => {
                prop_assert!(at >= now && at >= floor);
                let cap = access.mono().saturating_sub(access_margin);
                if cap > now {
                    prop_assert!(at <= cap.max(floor), "after the access deadline: {at:?} {access:?}");
                }
                // The refresh token is protected too, as long as the access token in hand predates its cap.
                let rt_cap = rt.mono().saturating_sub(margin);
                if rt_cap > now && mono_ms(case.last) < rt_cap {
                    prop_assert!(at <= rt_cap, "after the refresh token's deadline: {at:?} {rt:?}");
                }
            }
            Action::WarnLapse { at, lapses_at } => prop_assert!(at < lapses_at.mono()),
            Action::ReLogin { at } => prop_assert!(at >= now && at < rt.mono().max(now + Duration::from_millis(1))),
            other => prop_assert!(false, "unexpected plan {other:?}"),
        }
    }

    /// Progress: once the planned refresh or re-login has succeeded, the next renewal is planned later, never
    /// again at once (no request loops), whatever the refresh token's configured lifetime.
    #[test]
    fn a_successful_renewal_is_not_repeated_at_once(
        case in arb_case(), later in later(), lifetime_days in prop_oneof![Just(60u64), 1u64..90],
    ) {
        let policy = Policy { refresh_token_lifetime: Duration::from_secs(lifetime_days * DAY), ..Policy::default() };
        let mut s = case.session.clone();
        let mut now = mono_ms(case.last + later);
        for _ in 0..4 {
            let (attempt, at) = match s.plan(&policy, now) {
                Action::Refresh { at, .. } => (Attempt::Refresh, at),
                Action::ReLogin { at } => (Attempt::Login, at),
                Action::WarnLapse { at, .. } => {
                    s.record_warning(at, &policy);
                    now = at;
                    continue;
                }
                other => { prop_assert!(false, "unexpected plan {other:?}"); unreachable!() }
            };
            let change = if attempt == Attempt::Refresh && s.rotation() == Rotation::Fixed {
                RefreshTokenChange::Repeated
            } else {
                RefreshTokenChange::Rotated
            };
            let arrived = at_ms(at.since_origin().as_millis() as u64 + 200);
            let g = Grant::new(arrived, Duration::from_secs(3599), change);
            s.apply(attempt, Outcome::Success(g), arrived, &policy, 0.5);
            now = arrived.mono;
            let next = s.plan(&policy, now);
            // A re-login may be due right after a refresh (a fixed window closing), never the same again.
            let same_again = match next {
                Action::Refresh { .. } => true,
                Action::ReLogin { .. } => attempt == Attempt::Login,
                _ => false,
            };
            if same_again {
                prop_assert!(next.at().unwrap() > now, "{next:?} right after a successful renewal at {now:?}");
            }
        }
    }

    /// Jitter chooses within the 75–80 % band and never moves the refresh inside the token's margin, unless
    /// the refresh floor after the login holds it back (a token living less than 6.25 s).
    #[test]
    fn jitter_stays_in_the_band_and_outside_the_margin(
        t0 in 0u64..1_000_000_000, life in prop_oneof![5u64..300, 5u64..7 * DAY], jitter in 0.0f64..1.0,
    ) {
        let policy = Policy::default();
        let life = Duration::from_secs(life);
        let s = Session::logged_in(&Grant::new(at_ms(t0), life, RefreshTokenChange::Rotated), &policy, false, jitter);
        let deadline = s.access_deadline().unwrap().mono();
        let Action::Refresh { at, .. } = s.plan(&policy, mono_ms(t0)) else { panic!("a fresh session refreshes next") };
        let floor = mono_ms(t0) + policy.refresh_floor;
        let cap = deadline.saturating_sub(policy.margin_for(life)).max(mono_ms(t0));
        prop_assert!(at <= cap.max(floor));
        let lo = mono_ms(t0) + life.mul_f64(0.75);
        let hi = mono_ms(t0) + life.mul_f64(0.80);
        prop_assert!(at >= lo.min(cap) && at <= hi.max(floor) + Duration::from_millis(1));
    }

    /// Backoff: bounded by 5 minutes (without Retry-After), by the honoured Retry-After otherwise, and never
    /// beyond the remaining (servable) lifetime; never inside the refresh floor either.
    #[test]
    fn backoff_is_bounded(
        case in arb_case(), later in later(), failures in 1usize..40,
        retry_after in proptest::option::of(0u64..10_000), jitter in 0.0f64..1.0,
    ) {
        let policy = Policy::default();
        let mut s = case.session.clone();
        let mut now = case.last + later;
        for i in 0..failures {
            let ra = retry_after.filter(|_| i % 3 == 0).map(Duration::from_secs);
            s.apply(Attempt::Refresh, Outcome::Transient { retry_after: ra }, at_ms(now), &policy, jitter);
            // A lapse warning due earlier comes first; give it and plan again.
            let mut plan = s.plan(&policy, mono_ms(now));
            while let Action::WarnLapse { at, .. } = plan {
                s.record_warning(at, &policy);
                plan = s.plan(&policy, mono_ms(now));
            }
            let Action::Retry { at, failures: n, attempt } = plan else { panic!("a transient failure is retried: {plan:?}") };
            prop_assert_eq!(n as usize, i + 1);
            prop_assert_eq!(attempt, Attempt::Refresh);
            let delay = at.saturating_since(mono_ms(now));
            let bound = ra.map_or(policy.backoff_max, |ra| policy.backoff_max.max(ra.min(policy.retry_after_max)))
                .max(policy.refresh_floor);
            prop_assert!(delay <= bound, "delay {delay:?} over {bound:?}");
            let access_margin = policy.margin_for(s.access_lifetime().unwrap());
            let access_left = s.access_deadline().unwrap().remaining(mono_ms(now)).saturating_sub(access_margin);
            if !access_left.is_zero() {
                // The refresh floor may hold a retry back further.
                let limit = access_left.max(policy.refresh_floor);
                prop_assert!(delay <= limit, "delay {delay:?} beyond the token's life {access_left:?}");
            }
            prop_assert!(delay >= policy.refresh_floor, "a retry {delay:?} after the failure, inside the floor");
            now = at.since_origin().as_millis() as u64;
        }
    }

    /// The serving rule never hands out a token past its deadline or inside its margin.
    #[test]
    fn serving_rule_respects_deadline_and_margin(
        case in arb_case(), later in later(), want in 0u64..100_000,
    ) {
        let policy = Policy::default();
        let now = mono_ms(case.last + later);
        let want = Duration::from_secs(want);
        let deadline = case.session.access_deadline().unwrap().mono();
        let margin = policy.margin_for(case.session.access_lifetime().unwrap());
        if case.session.valid_for(now, want, &policy) {
            prop_assert!(deadline > now + margin + want);
        } else {
            prop_assert!(deadline <= now + margin + want + Duration::from_millis(1));
        }
        prop_assert!(valid_for(None, now, want, policy.safety_margin), "static tokens never expire");
    }

    /// Warnings come before the lapse, each at least its lead (plus the margin) ahead, once each.
    #[test]
    fn warnings_are_planned_before_the_lapse(t0 in 0u64..1_000_000_000, start_late in 0u64..61 * DAY) {
        let policy = Policy::default();
        // A long-lived access token, so only the warnings and the last refresh before the lapse are planned.
        let life = Duration::from_secs(200 * DAY);
        let login = Grant::new(at_ms(t0), life, RefreshTokenChange::Rotated);
        let mut s = Session::logged_in(&login, &policy, false, 0.5);
        // The server keeps the window fixed; one refresh tells.
        let fixed = Grant::new(at_ms(t0 + 1000), life, RefreshTokenChange::Omitted);
        s.apply(Attempt::Refresh, Outcome::Success(fixed), at_ms(t0 + 1000), &policy, 0.5);
        let lapse = s.refresh_deadline().unwrap().mono();
        let mut now = mono_ms(t0 + start_late * 1000);
        let mut warned = vec![];
        for _ in 0..10 {
            if now >= lapse {
                break;
            }
            match s.plan(&policy, now) {
                Action::WarnLapse { at, lapses_at } => {
                    prop_assert!(at < lapses_at.mono());
                    prop_assert_eq!(lapses_at.mono(), lapse);
                    now = at;
                    s.record_warning(now, &policy);
                    warned.push(lapse.saturating_since(now));
                }
                Action::Refresh { at, reason } => {
                    // One last access token before the fixed window closes (if there is time outside the margin).
                    if lapse.saturating_since(now) > policy.safety_margin {
                        prop_assert_eq!(reason, RefreshReason::RefreshToken);
                        prop_assert!(at < lapse);
                    }
                    break;
                }
                other => prop_assert!(false, "unexpected plan {other:?}"),
            }
        }
        let start_left = lapse.saturating_since(mono_ms(t0 + start_late * 1000));
        prop_assert!(warned.len() <= 2, "{warned:?}");
        if start_left > Duration::from_secs(7 * DAY + 60) {
            prop_assert_eq!(warned.len(), 2, "{:?}", warned);
            prop_assert!(warned[0] >= Duration::from_secs(7 * DAY));
        }
        for w in &warned {
            prop_assert!(!w.is_zero());
        }
        if let Some(last) = warned.last() && start_left > Duration::from_secs(DAY + 60) {
            prop_assert!(*last >= Duration::from_secs(DAY), "{warned:?}");
        }
    }

    /// Persist then restore on the same clock line is the identity for deadlines (to the millisecond), and
    /// through JSON too.
    #[test]
    fn persist_restore_round_trips(case in arb_case(), reboot_gap in 0u64..10 * DAY * 1000, new_origin in 0u64..1_000_000) {
        let policy = Policy::default();
        let save_at = case.last + 1;
        let persisted = case.session.to_persisted(at_ms(save_at));
        let json = serde_json::to_string(&persisted).unwrap();
        let back: PersistedSession = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &persisted);
        // A new boot: a fresh monotonic line whose origin is `new_origin` ms after the boot.
        let boot = save_at + reboot_gap;
        let pair = ClockPair::new(mono_ms(new_origin), WallTime::from_unix_millis(WALL0 + boot as i64));
        let restored = back.restore(pair, WallClockTrust::Trusted, false, 0.5);
        let shift = |d: Deadline| pair.mono_at(d.wall());
        let old = case.session.access_deadline().unwrap();
        let new = restored.access_deadline().unwrap();
        prop_assert_eq!(new.wall(), old.wall());
        prop_assert_eq!(new.mono(), shift(old));
        prop_assert_eq!(restored.refresh_deadline().unwrap().wall(), case.session.refresh_deadline().unwrap().wall());
        prop_assert_eq!(restored.rotation(), case.session.rotation());
        let _ = policy;
    }

    /// A wall clock that cannot be trusted never extends a deadline: the access token is dropped (refreshed
    /// at once, never served) and the refresh token's deadline becomes unknown.
    #[test]
    fn untrusted_restore_is_conservative(case in arb_case(), back_by in 1i64..1_000_000_000_000, untrusted_flag in any::<bool>()) {
        let policy = Policy::default();
        let persisted = case.session.to_persisted(at_ms(case.last));
        let known_good = persisted.known_good.unwrap();
        let now_wall = WallTime::from_unix_millis(known_good.unix_millis() - back_by);
        let trust = if untrusted_flag {
            WallClockTrust::Untrusted(UntrustedReason::EarlierThanLastKnownGood { last_known_good: known_good, now: now_wall })
        } else {
            WallClockTrust::Trusted // the restore itself checks against `known_good`
        };
        let pair = ClockPair::new(mono_ms(5), now_wall);
        let restored = persisted.restore(pair, trust, false, 0.5);
        prop_assert!(restored.access_deadline().is_none());
        prop_assert!(restored.refresh_deadline().is_none());
        prop_assert!(!restored.valid_for(mono_ms(5), Duration::ZERO, &policy));
        prop_assert_eq!(restored.plan(&policy, mono_ms(5)), Action::Refresh { at: mono_ms(5), reason: RefreshReason::AccessToken });
    }
}
