//! Properties of the refresh planner, the backoff, lapse warnings, the serving rule and the restore path.

use std::time::Duration;

use proptest::prelude::*;
use token_model::plan::{
    Action, AdminAction, Attempt, CallerAction, Grant, Outcome, PersistedSession, Policy, RefreshReason,
    RefreshTokenChange, Rotation, Session, for_admin, valid_for,
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
    /// beyond the remaining (servable) lifetime unless a Retry-After holds it back; never inside the refresh floor
    /// nor before the Retry-After either.
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
            let honoured = ra.map_or(Duration::ZERO, |ra| ra.min(policy.retry_after_max));
            if !access_left.is_zero() {
                // The refresh floor and the cloud's Retry-After may hold a retry back further.
                let limit = access_left.max(policy.refresh_floor).max(honoured);
                prop_assert!(delay <= limit, "delay {delay:?} beyond the token's life {access_left:?}");
            }
            prop_assert!(delay >= honoured, "a retry {delay:?} after the failure, before the Retry-After {honoured:?}");
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

/// A policy with the defaults or other margins, floors and caller gaps (the floor is at least a second).
fn arb_policy() -> impl Strategy<Value = Policy> {
    (prop_oneof![Just(60u64), 1u64..300], prop_oneof![Just(5u64), 1u64..30], prop_oneof![Just(10u64), 1u64..60])
        .prop_map(|(margin, floor, gap)| Policy {
            safety_margin: Duration::from_secs(margin),
            refresh_floor: Duration::from_secs(floor),
            caller_retry_gap: Duration::from_secs(gap),
            ..Policy::default()
        })
}

/// An access token's life (ms): under a second to 2 hours, many shorter than a refresh floor.
fn arb_life() -> impl Strategy<Value = u64> {
    prop_oneof![100u64..10_000, 10_000u64..600_000, 1_000u64..7_200_000, Just(3_599_000)]
}

/// One step of a run: maybe a caller asks (after `after` ms, for `want` ms), then the next request's outcome.
#[derive(Debug, Clone)]
struct Step {
    caller: Option<(u64, u64)>,
    outcome: Out,
}

#[derive(Debug, Clone, Copy)]
enum Out {
    Success { life_ms: u64, change: u8 },
    Transient { retry_after_s: Option<u64> },
    Verdict,
}

fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
    let out = prop_oneof![
        4 => (arb_life(), 0u8..3).prop_map(|(life_ms, change)| Out::Success { life_ms, change }),
        3 => proptest::option::of(0u64..600).prop_map(|retry_after_s| Out::Transient { retry_after_s }),
        1 => Just(Out::Verdict),
    ];
    let caller = proptest::option::of((0u64..7_200_000, prop_oneof![0u64..600_000, 0u64..7_200_000]));
    proptest::collection::vec((caller, out).prop_map(|(caller, outcome)| Step { caller, outcome }), 1..40)
}

fn change_of(c: u8) -> RefreshTokenChange {
    [RefreshTokenChange::Rotated, RefreshTokenChange::Repeated, RefreshTokenChange::Omitted][c as usize % 3]
}

/// The serving relation at `now` (property b): the margin is the smaller of the safety margin and a fifth of
/// the life, and a served token has more than that margin (plus what was asked for) left.
fn check_serving(s: &Session, policy: &Policy, now: MonoTime, want: Duration) -> Result<(), TestCaseError> {
    let Some(life) = s.access_lifetime() else {
        prop_assert!(!s.valid_for(now, Duration::ZERO, policy) && s.serve_until(policy).is_none());
        return Ok(());
    };
    let margin = policy.margin_for(life);
    prop_assert!(margin <= policy.safety_margin && margin <= life / 5);
    prop_assert!(margin == policy.safety_margin || margin == life / 5);
    let deadline = s.access_deadline().unwrap().mono();
    if s.valid_for(now, want, policy) {
        prop_assert!(deadline.saturating_since(now) > margin + want, "served inside the margin {margin:?}");
    }
    prop_assert_eq!(s.serve_until(policy), Some(deadline.saturating_sub(margin)));
    prop_assert_eq!(s.valid_for(now, Duration::ZERO, policy), now < deadline.saturating_sub(margin));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// (a) and (b): whatever the grant lives and whatever the outcomes (successes of any life, too-short
    /// grants, transient failures, verdicts) and whichever callers ask in between, every request the plan
    /// schedules, and every refresh a caller may trigger, is at least `refresh_floor` after the last applied
    /// outcome; `last_request` is that outcome's time; and no token is ever served inside its margin.
    #[test]
    fn requests_keep_the_floor_and_tokens_their_margin(
        policy in arb_policy(), first_life in arb_life(), first_change in 0u8..2, unattended in any::<bool>(),
        steps in arb_steps(), jitter in 0.0f64..1.0,
    ) {
        let t0 = 1_000u64;
        let g = Grant::new(at_ms(t0), Duration::from_millis(first_life), change_of(first_change));
        let mut s = Session::logged_in(&g, &policy, unattended, jitter);
        let mut last = mono_ms(t0);
        prop_assert_eq!(s.last_request(), Some(last));
        let mut now = last;
        // The cloud's last Retry-After, as a point in time: no request before it, whoever asks.
        let mut not_before: Option<MonoTime> = None;
        for step in steps {
            let mut plan = s.plan(&policy, now);
            while let Action::WarnLapse { at, .. } = plan {
                now = at.max(now);
                s.record_warning(now, &policy);
                plan = s.plan(&policy, now);
            }
            let (attempt, mut at) = match plan {
                Action::Refresh { at, .. } => (Attempt::Refresh, at),
                Action::Retry { at, attempt, .. } => (attempt, at),
                Action::ReLogin { at } => (Attempt::Login, at),
                Action::NeedsLogin { .. } => {
                    // A human logs in an hour later (not a planned request, so the floor does not bind it).
                    now = now + Duration::from_secs(3600);
                    let g = Grant::new(at_ms(now.since_origin().as_millis() as u64), Duration::from_secs(3599), RefreshTokenChange::Rotated);
                    s.apply(Attempt::Login, Outcome::Success(g), g.arrived, &policy, jitter);
                    last = now;
                    continue;
                }
                Action::WarnLapse { .. } => unreachable!(),
            };
            prop_assert!(at >= now, "{plan:?} planned in the past of {now:?}");
            prop_assert!(at >= last + policy.refresh_floor, "{plan:?} within the floor after {last:?}");
            prop_assert!(not_before.is_none_or(|nb| at >= nb), "{plan:?} before the Retry-After {not_before:?}");
            let mut attempt = attempt;
            if let Some((after, want)) = step.caller {
                let t = now + Duration::from_millis(after);
                let want = Duration::from_millis(want);
                check_serving(&s, &policy, t, want)?;
                if t < at {
                    let asked = s.for_caller(t, want, &policy);
                    if asked == CallerAction::RefreshNow {
                        prop_assert!(t >= last + policy.refresh_floor, "a caller's refresh at {t:?} after {last:?}");
                        prop_assert!(not_before.is_none_or(|nb| t >= nb), "a caller's refresh at {t:?} before the Retry-After");
                        attempt = Attempt::Refresh;
                        at = t;
                    }
                }
            }
            check_serving(&s, &policy, at, Duration::ZERO)?;
            let outcome = match step.outcome {
                Out::Success { life_ms, change } => {
                    Outcome::Success(Grant::new(at_ms(at.since_origin().as_millis() as u64), Duration::from_millis(life_ms), change_of(change)))
                }
                Out::Transient { retry_after_s } => Outcome::Transient { retry_after: retry_after_s.map(Duration::from_secs) },
                Out::Verdict => Outcome::Verdict,
            };
            let pair = at_ms(at.since_origin().as_millis() as u64);
            s.apply(attempt, outcome, pair, &policy, jitter);
            not_before = match outcome {
                Outcome::Transient { retry_after: Some(ra) } => Some(pair.mono + ra.min(policy.retry_after_max)),
                _ => None,
            };
            prop_assert_eq!(s.not_before(), not_before);
            last = pair.mono;
            now = pair.mono;
            prop_assert_eq!(s.last_request(), Some(last));
            // Right after an outcome no caller may trigger another request.
            for want in [Duration::ZERO, Duration::from_secs(1), Duration::from_secs(3000)] {
                prop_assert_ne!(s.for_caller(now, want, &policy), CallerAction::RefreshNow);
            }
        }
    }

    /// (c): a servable grant's planned refresh lies at 75–80 % of its life, unless the floor after its
    /// arrival pushes it later (then it is exactly at the floor).
    #[test]
    fn a_servable_grant_is_refreshed_at_75_to_80_percent_or_at_the_floor(
        policy in arb_policy(), life in arb_life(), jitter in 0.0f64..1.0, by_login in any::<bool>(), t0 in 0u64..1_000_000_000,
    ) {
        let life = Duration::from_millis(life);
        prop_assume!(!policy.too_short(life));
        let g = Grant::new(at_ms(t0), life, RefreshTokenChange::Rotated);
        let s = if by_login {
            Session::logged_in(&g, &policy, false, jitter)
        } else {
            let mut s = Session::logged_in(&Grant::new(at_ms(0), Duration::from_secs(3599), RefreshTokenChange::Rotated), &policy, false, 0.5);
            s.apply(Attempt::Refresh, Outcome::Success(g), at_ms(t0), &policy, jitter);
            s
        };
        let obtained = mono_ms(t0);
        let Action::Refresh { at, reason: RefreshReason::AccessToken } = s.plan(&policy, obtained) else {
            panic!("a refresh for the access token is planned")
        };
        let floor = obtained + policy.refresh_floor;
        let lo = obtained + life.mul_f64(0.75);
        let hi = obtained + life.mul_f64(0.80);
        if at == floor && floor > hi {
            // The floor pushed it.
        } else {
            prop_assert!(at >= lo && at <= hi, "{at:?} outside {lo:?}..{hi:?}");
        }
        prop_assert!(at >= floor);
    }

    /// (d): a grant too short to serve is never served and counts as a transient failure; its refresh
    /// token is still taken, and a login without one leaves nothing to refresh with.
    #[test]
    fn a_too_short_grant_is_never_served_and_counts_as_a_failure(
        policy in arb_policy(), first_life in arb_life(), short in 0.0f64..1.0, change in 0u8..3,
        by_login in any::<bool>(), after in 0u64..10_000_000, unattended in any::<bool>(), jitter in 0.0f64..1.0,
    ) {
        // Anything shorter than the floor.
        let short = policy.refresh_floor.mul_f64(short);
        prop_assert!(policy.too_short(short));
        let first = Grant::new(at_ms(0), Duration::from_millis(first_life), RefreshTokenChange::Rotated);
        let mut s = Session::logged_in(&first, &policy, unattended, 0.5);
        let before = s.clone();
        let t = 1 + after;
        let g = Grant::new(at_ms(t), short, change_of(change));
        let attempt = if by_login { Attempt::Login } else { Attempt::Refresh };
        s.apply(attempt, Outcome::Success(g), at_ms(t), &policy, jitter);
        prop_assert_eq!(s.access_deadline(), before.access_deadline(), "the short token is not taken");
        prop_assert_eq!(s.access_lifetime(), before.access_lifetime());
        // Never served beyond what the token in hand gave before.
        for probe in [t, t + short.as_millis() as u64 / 2, t + 1] {
            prop_assert_eq!(s.valid_for(mono_ms(probe), Duration::ZERO, &policy), before.valid_for(mono_ms(probe), Duration::ZERO, &policy));
        }
        // The refresh-token facts are taken.
        let rotated = change_of(change) == RefreshTokenChange::Rotated;
        if rotated || by_login {
            prop_assert_eq!(s.refresh_deadline().map(|d| d.mono()), Some(mono_ms(t) + policy.refresh_token_lifetime));
        }
        if !by_login {
            prop_assert_eq!(s.rotation(), if rotated { Rotation::Sliding } else { Rotation::Fixed });
        }
        let floor = mono_ms(t) + policy.refresh_floor;
        if by_login && change_of(change) == RefreshTokenChange::Omitted {
            prop_assert_eq!(s.failures(), 0, "nothing to retry");
            match s.plan(&policy, mono_ms(t)) {
                Action::ReLogin { at } => prop_assert!(unattended && at >= floor),
                Action::NeedsLogin { .. } => prop_assert!(!unattended),
                other => prop_assert!(false, "unexpected plan {other:?}"),
            }
        } else {
            prop_assert_eq!(s.failures(), before.failures() + 1);
            let mut plan = s.plan(&policy, mono_ms(t));
            while let Action::WarnLapse { at, .. } = plan {
                s.record_warning(at, &policy);
                plan = s.plan(&policy, mono_ms(t));
            }
            let Action::Retry { at, attempt: Attempt::Refresh, failures } = plan else {
                panic!("a retry of the refresh: {plan:?}")
            };
            prop_assert_eq!(failures, before.failures() + 1);
            prop_assert!(at >= floor);
        }
    }

    /// (e): callers can spend at most one request per applied outcome, and a crowd of callers asking for
    /// as much as a fresh token gives (its life less its margin and a second) causes at most two requests
    /// in any span of one access token's life; each `RefreshNow` is performed (a success) at once.
    #[test]
    fn a_crowd_of_callers_causes_at_most_two_requests_per_token_life(
        policy in arb_policy(), life in arb_life(), callers in proptest::collection::vec(0u64..1_000_000, 1_000),
        lives in 2u64..6, jitter in 0.0f64..1.0,
    ) {
        let life = Duration::from_millis(life);
        prop_assume!(!policy.too_short(life));
        let margin = policy.margin_for(life);
        let want = life.saturating_sub(margin).saturating_sub(Duration::from_secs(1));
        let span = life.as_millis() as u64 * lives;
        let mut times: Vec<u64> = callers.iter().map(|c| c * span / 1_000_000).collect();
        times.sort_unstable();
        let g = Grant::new(at_ms(0), life, RefreshTokenChange::Rotated);
        let mut s = Session::logged_in(&g, &policy, false, jitter);
        let mut requests = vec![0u64];
        let mut by_callers = 0;
        let succeed = |s: &mut Session, t: u64| {
            s.apply(Attempt::Refresh, Outcome::Success(Grant::new(at_ms(t), life, RefreshTokenChange::Rotated)), at_ms(t), &policy, jitter);
        };
        for &t in &times {
            // The daemon's own timer first.
            while let Some(at) = s.plan(&policy, mono_ms(t)).at().filter(|&at| at <= mono_ms(t)) {
                let at_ms_ = at.since_origin().as_millis() as u64;
                requests.push(at_ms_);
                succeed(&mut s, at_ms_);
            }
            let asked = s.for_caller(mono_ms(t), want, &policy);
            prop_assert!(!matches!(asked, CallerAction::TooLong { .. } | CallerAction::NeedsLogin), "{asked:?}");
            if asked == CallerAction::RefreshNow {
                by_callers += 1;
                requests.push(t);
                succeed(&mut s, t);
                prop_assert_eq!(s.for_caller(mono_ms(t), want, &policy), CallerAction::Serve, "the fresh token gives `want`");
            }
        }
        requests.dedup();
        let l = life.as_millis() as u64;
        for (i, &r) in requests.iter().enumerate() {
            let within = requests[i..].iter().take_while(|&&q| q < r + l).count();
            prop_assert!(within <= 2, "{within} requests within {l} ms from {r}: {requests:?} ({by_callers} by callers)");
        }
    }

    /// (e) under failures: while transient failures are pending, callers trigger at most one early attempt
    /// per `caller_retry_gap` (and never within the floor), however many ask.
    #[test]
    fn callers_retry_early_at_most_once_per_gap(
        policy in arb_policy(), life in arb_life(), callers in proptest::collection::vec(0u64..600_000, 1..300),
        want in 0u64..7_200_000, jitter in 0.0f64..1.0, fail_at in 0u64..7_200_000,
    ) {
        let life = Duration::from_millis(life);
        // A long backoff keeps the retry pending: callers may bring it forward, one early attempt per gap.
        let policy = Policy { backoff_initial: Duration::from_secs(3600), backoff_max: Duration::from_secs(3600), ..policy };
        let g = Grant::new(at_ms(0), life, RefreshTokenChange::Rotated);
        let mut s = Session::logged_in(&g, &policy, false, jitter);
        let fail_at = fail_at.max(policy.refresh_floor.as_millis() as u64);
        s.apply(Attempt::Refresh, Outcome::Transient { retry_after: None }, at_ms(fail_at), &policy, jitter);
        let mut times: Vec<u64> = callers.iter().map(|c| fail_at + c).collect();
        times.sort_unstable();
        let want = Duration::from_millis(want);
        let gap = policy.caller_retry_gap.max(policy.refresh_floor).as_millis() as u64;
        let mut last = fail_at;
        for &t in &times {
            let retry_pending = s.plan(&policy, mono_ms(t)).at().is_some_and(|at| at > mono_ms(t));
            if s.for_caller(mono_ms(t), want, &policy) == CallerAction::RefreshNow {
                prop_assert!(t >= last + policy.refresh_floor.as_millis() as u64);
                if retry_pending {
                    prop_assert!(t >= last + gap, "an early attempt at {t} ms, {} ms after the last", t - last);
                }
                s.apply(Attempt::Refresh, Outcome::Transient { retry_after: None }, at_ms(t), &policy, jitter);
                last = t;
            }
        }
    }
    /// (f): a server's `Retry-After` is a floor that nobody moves: after a transient failure carrying one, neither
    /// the plan nor any caller sends a request before it (at most `retry_after_max`), whatever the token's life,
    /// and a restart in between keeps it.
    #[test]
    fn retry_after_is_a_floor_for_the_plan_every_caller_and_a_restart(
        policy in arb_policy(), life in arb_life(), retry_after_s in 1u64..7_200,
        callers in proptest::collection::vec(0u64..7_200_000, 1..200), want in 0u64..600_000,
        jitter in 0.0f64..1.0, fail_at in 0u64..7_200_000, restart_after in 0u64..7_200_000,
    ) {
        let g = Grant::new(at_ms(0), Duration::from_millis(life), RefreshTokenChange::Rotated);
        let mut s = Session::logged_in(&g, &policy, true, jitter);
        let fail_at = fail_at.max(policy.refresh_floor.as_millis() as u64);
        let retry_after = Duration::from_secs(retry_after_s);
        s.apply(Attempt::Refresh, Outcome::Transient { retry_after: Some(retry_after) }, at_ms(fail_at), &policy, jitter);
        let until = mono_ms(fail_at) + retry_after.min(policy.retry_after_max);
        prop_assert_eq!(s.not_before(), Some(until));
        let mut times: Vec<u64> = callers.iter().map(|c| fail_at + c).collect();
        times.sort_unstable();
        for &t in &times {
            if let Some(at) = s.plan(&policy, mono_ms(t)).at() {
                prop_assert!(at >= until, "the plan asks at {at:?}, before {until:?}");
            }
            if s.for_caller(mono_ms(t), Duration::from_millis(want), &policy) == CallerAction::RefreshNow {
                prop_assert!(mono_ms(t) >= until, "a caller's request at {t} ms, before {until:?}");
            }
        }
        // Saved and restored on another monotonic line, under a trusted clock: the floor is the same point in time.
        let saved_at = fail_at + restart_after;
        let persisted = s.to_persisted(at_ms(saved_at));
        let boot = ClockPair::new(mono_ms(7), at_ms(saved_at + 1_000).wall);
        let restored = persisted.restore(boot, WallClockTrust::Trusted, true, jitter);
        let left = until.saturating_since(mono_ms(saved_at + 1_000));
        match restored.not_before() {
            Some(nb) => prop_assert!(nb.saturating_since(mono_ms(7)).abs_diff(left) <= Duration::from_millis(1)),
            None => prop_assert!(left <= Duration::from_millis(1), "a Retry-After {left:?} ahead was lost at restore"),
        }
        if let Some(at) = restored.plan(&policy, mono_ms(7)).at() {
            prop_assert!(at + Duration::from_millis(1) >= mono_ms(7) + left, "after the restart the plan asks at {at:?}");
        }
    }

    /// (g): an admin's `Refresh` is a plan decision like a caller's. Whatever outcomes came before, it is refused
    /// exactly while the cloud's `Retry-After` lasts; otherwise it is sent no earlier than the floor after the last
    /// request and no later than needed (now, or the floor's end); whenever a caller could make the session refresh,
    /// an admin is sent at once; and a login is held by the `Retry-After` only, never by the floor.
    #[test]
    fn an_admins_refresh_keeps_the_floor_and_the_retry_after_like_a_callers(
        policy in arb_policy(), first_life in arb_life(), steps in arb_steps(), jitter in 0.0f64..1.0,
        asks in proptest::collection::vec((0u64..600_000, 0u64..7_200_000), 1..6),
    ) {
        let g = Grant::new(at_ms(1_000), Duration::from_millis(first_life), RefreshTokenChange::Rotated);
        let mut s = Session::logged_in(&g, &policy, false, jitter);
        let mut now = 1_000u64;
        for step in steps {
            for &(after, want) in &asks {
                let t = mono_ms(now + after);
                let want = Duration::from_millis(want);
                let floor = s.last_request().map(|last| last + policy.refresh_floor);
                let quiet = s.not_before().filter(|nb| *nb > t);
                match (s.for_admin(Attempt::Refresh, t, &policy), quiet) {
                    (AdminAction::Refuse { until }, Some(nb)) => prop_assert_eq!(until, nb),
                    (AdminAction::SendAt(at), None) => {
                        prop_assert!(at >= t, "sent at {at:?}, before it was asked at {t:?}");
                        prop_assert!(floor.is_none_or(|f| at >= f), "sent at {at:?}, inside the floor");
                        prop_assert!(at == t || Some(at) == floor, "held past the floor: {at:?}");
                    }
                    (decision, quiet) => prop_assert!(false, "{decision:?} with the Retry-After at {quiet:?}"),
                }
                if s.for_caller(t, want, &policy) == CallerAction::RefreshNow {
                    prop_assert_eq!(s.for_admin(Attempt::Refresh, t, &policy), AdminAction::SendAt(t));
                }
                let login = s.for_admin(Attempt::Login, t, &policy);
                match quiet {
                    Some(until) => prop_assert_eq!(login, AdminAction::Refuse { until }),
                    None => prop_assert_eq!(login, AdminAction::SendAt(t)),
                }
            }
            // The next outcome, some time later.
            now += step.caller.map_or(1_000, |(after, _)| after);
            let outcome = match step.outcome {
                Out::Success { life_ms, change } => {
                    Outcome::Success(Grant::new(at_ms(now), Duration::from_millis(life_ms), change_of(change)))
                }
                Out::Transient { retry_after_s } => {
                    Outcome::Transient { retry_after: retry_after_s.map(Duration::from_secs) }
                }
                Out::Verdict => Outcome::Verdict,
            };
            s.apply(Attempt::Refresh, outcome, at_ms(now), &policy, jitter);
        }
        // Without a session nothing holds a request back.
        prop_assert_eq!(for_admin(None, Attempt::Refresh, mono_ms(now), &policy), AdminAction::SendAt(mono_ms(now)));
    }
}
