//! Named cases of the refresh planner: verdicts, re-login, fixed windows, Retry-After, restore after a wall
//! clock jump, and the D-Bus state names.

use std::time::Duration;

use token_model::plan::{
    Action, Attempt, Grant, NeedsLoginReason, Outcome, Policy, RefreshReason, RefreshTokenChange, Rotation, Session,
    TokenState, plan,
};
use token_model::secret::RefreshToken;
use token_model::time::{ClockPair, MonoTime, WallTime, check_wall_clock, expires_at};

const WALL0: i64 = 1_780_000_000;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

/// Monotonic second `s` of this boot, with a wall clock `skew` seconds off the server's.
fn at_skewed(s: u64, skew: i64) -> ClockPair {
    ClockPair::new(MonoTime::from_origin(Duration::from_secs(s)), WallTime::from_unix_seconds(WALL0 + s as i64 + skew))
}

fn at(s: u64) -> ClockPair {
    at_skewed(s, 0)
}

fn mono(s: u64) -> MonoTime {
    MonoTime::from_origin(Duration::from_secs(s))
}

/// A reply arriving at second `s`, with the server's `Date` (the server's clock is the true one).
fn reply(s: u64, skew: i64, change: RefreshTokenChange) -> Grant {
    let server = WallTime::from_unix_seconds(WALL0 + s as i64).to_system_time();
    Grant::new(at_skewed(s, skew), Duration::from_secs(3599), change).with_server_times(Some(server), None)
}

fn logged_in(unattended: bool) -> (Session, Policy) {
    let policy = Policy::default();
    (Session::logged_in(&reply(0, 0, RefreshTokenChange::Rotated), &policy, unattended, 0.0), policy)
}

#[test]
fn no_session_waits_for_a_human() {
    let policy = Policy::default();
    assert_eq!(plan(None, &policy, mono(5)), Action::NeedsLogin { reason: NeedsLoginReason::NoSession });
    assert_eq!(Action::NeedsLogin { reason: NeedsLoginReason::NoSession }.at(), None);
}

#[test]
fn first_refresh_at_three_quarters_of_the_access_token() {
    let (s, policy) = logged_in(false);
    // Jitter 0 picks the start of the 75–80 % band: 0.75 × 3599 s = 2699.25 s.
    assert_eq!(
        s.plan(&policy, mono(1)),
        Action::Refresh {
            at: MonoTime::from_origin(Duration::from_millis(2_699_250)),
            reason: RefreshReason::AccessToken
        }
    );
    assert_eq!(s.state(mono(1), &policy), TokenState::Valid);
    assert_eq!(s.access_deadline().map(|d| d.expires_at()), Some(WALL0 + 3599));
    assert_eq!(expires_at(s.refresh_deadline().as_ref()), WALL0 + 60 * DAY as i64);
}

#[test]
fn rotation_is_classified_from_the_tokens() {
    let sent = RefreshToken::new("rt-1");
    assert_eq!(RefreshTokenChange::of(&sent, Some(&RefreshToken::new("rt-2"))), RefreshTokenChange::Rotated);
    assert_eq!(RefreshTokenChange::of(&sent, Some(&RefreshToken::new("rt-1"))), RefreshTokenChange::Repeated);
    assert_eq!(RefreshTokenChange::of(&sent, None), RefreshTokenChange::Omitted);

    let (mut s, policy) = logged_in(false);
    assert_eq!(s.rotation(), Rotation::Unknown);
    s.apply(Attempt::Refresh, Outcome::Success(reply(2700, 0, RefreshTokenChange::Rotated)), at(2700), &policy, 0.0);
    assert_eq!(s.rotation(), Rotation::Sliding);
    assert_eq!(s.refresh_deadline().unwrap().mono(), mono(2700 + 60 * DAY), "a new refresh token slides the window");
    s.apply(Attempt::Refresh, Outcome::Success(reply(5400, 0, RefreshTokenChange::Repeated)), at(5400), &policy, 0.0);
    assert_eq!(s.rotation(), Rotation::Fixed);
    assert_eq!(s.refresh_deadline().unwrap().mono(), mono(2700 + 60 * DAY), "a repeated one leaves the deadline");
}

#[test]
fn verdict_without_unattended_login_needs_a_human_but_keeps_serving() {
    let (mut s, policy) = logged_in(false);
    s.apply(Attempt::Refresh, Outcome::Verdict, at(2700), &policy, 0.0);
    assert_eq!(s.plan(&policy, mono(2700)), Action::NeedsLogin { reason: NeedsLoginReason::RefreshRejected });
    assert_eq!(s.state(mono(2700), &policy), TokenState::NeedsLogin);
    assert!(s.attention_needed(mono(2700), &policy));
    assert!(s.valid_for(mono(2700), Duration::ZERO, &policy), "the access token is still good until its deadline");
    assert!(!s.valid_for(mono(3599 - 59), Duration::ZERO, &policy), "but not inside the margin");

    // A human logs in: back to normal.
    s.apply(Attempt::Login, Outcome::Success(reply(4000, 0, RefreshTokenChange::Rotated)), at(4000), &policy, 0.0);
    assert!(matches!(s.plan(&policy, mono(4000)), Action::Refresh { .. }));
    assert!(!s.attention_needed(mono(4000), &policy));
}

#[test]
fn verdict_with_unattended_login_logs_in_again_and_a_rejected_login_needs_a_human() {
    let (mut s, policy) = logged_in(true);
    s.apply(Attempt::Refresh, Outcome::Verdict, at(2700), &policy, 0.0);
    // At once, but not before the refresh floor (5 s) after the rejected refresh.
    assert_eq!(s.plan(&policy, mono(2700)), Action::ReLogin { at: mono(2705) });
    s.apply(Attempt::Login, Outcome::Transient { retry_after: None }, at(2705), &policy, 0.0);
    // The backoff says 0.5 s; the floor says 5 s.
    assert_eq!(s.plan(&policy, mono(2705)), Action::Retry { at: mono(2710), attempt: Attempt::Login, failures: 1 });
    assert_eq!(s.state(mono(2705), &policy), TokenState::Retrying);
    s.apply(Attempt::Login, Outcome::Verdict, at(2710), &policy, 0.0);
    assert_eq!(s.plan(&policy, mono(2710)), Action::NeedsLogin { reason: NeedsLoginReason::ReLoginRejected });
}

#[test]
fn login_without_a_refresh_token_logs_in_again_when_the_access_token_ages() {
    let policy = Policy::default();
    let mut s = Session::logged_in(&reply(0, 0, RefreshTokenChange::Omitted), &policy, true, 0.0);
    let aged = MonoTime::from_origin(Duration::from_millis(2_699_250));
    assert_eq!(s.plan(&policy, mono(1)), Action::ReLogin { at: aged });
    s.apply(Attempt::Login, Outcome::Success(reply(2700, 0, RefreshTokenChange::Rotated)), at(2700), &policy, 0.0);
    assert!(matches!(s.plan(&policy, mono(2700)), Action::Refresh { reason: RefreshReason::AccessToken, .. }));

    let attended = Session::logged_in(&reply(0, 0, RefreshTokenChange::Omitted), &policy, false, 0.0);
    assert_eq!(attended.plan(&policy, mono(1)), Action::NeedsLogin { reason: NeedsLoginReason::RefreshRejected });
}

#[test]
fn fixed_window_with_unattended_login_logs_in_ten_days_ahead() {
    let (mut s, policy) = logged_in(true);
    s.apply(Attempt::Refresh, Outcome::Success(reply(2700, 0, RefreshTokenChange::Omitted)), at(2700), &policy, 0.0);
    // Far from the lapse the access token drives the plan; near it, the re-login comes first.
    assert!(matches!(s.plan(&policy, mono(2700)), Action::Refresh { reason: RefreshReason::AccessToken, .. }));
    let near = 50 * DAY - 600;
    s.apply(Attempt::Refresh, Outcome::Success(reply(near, 0, RefreshTokenChange::Repeated)), at(near), &policy, 0.0);
    assert_eq!(s.plan(&policy, mono(near)), Action::ReLogin { at: mono(50 * DAY) });
    s.apply(
        Attempt::Login,
        Outcome::Success(reply(50 * DAY, 0, RefreshTokenChange::Rotated)),
        at(50 * DAY),
        &policy,
        0.0,
    );
    assert_eq!(s.refresh_deadline().unwrap().mono(), mono(110 * DAY));
    assert_eq!(s.rotation(), Rotation::Fixed, "a login does not change what the server does on refresh");
}

#[test]
fn fixed_window_without_unattended_login_warns_then_fetches_a_last_access_token() {
    let (mut s, policy) = logged_in(false);
    s.apply(Attempt::Refresh, Outcome::Success(reply(2700, 0, RefreshTokenChange::Repeated)), at(2700), &policy, 0.0);
    let lapse = mono(60 * DAY);
    let t = 53 * DAY - 600;
    s.apply(Attempt::Refresh, Outcome::Success(reply(t, 0, RefreshTokenChange::Repeated)), at(t), &policy, 0.0);
    let Action::WarnLapse { at: w, lapses_at } = s.plan(&policy, mono(t)) else { panic!("the 7-day warning is due") };
    assert_eq!(lapses_at.mono(), lapse);
    assert_eq!(w, mono(53 * DAY - 60));
    s.record_warning(w, &policy);
    assert!(s.attention_needed(w, &policy));
    // Late in the last hour: the 1-day warning is planned, then one last refresh before the lapse.
    let t = 60 * DAY - 1800;
    s.apply(Attempt::Refresh, Outcome::Success(reply(t, 0, RefreshTokenChange::Repeated)), at(t), &policy, 0.0);
    let Action::WarnLapse { at: w, .. } = s.plan(&policy, mono(t)) else { panic!("the 1-day warning is overdue") };
    assert_eq!(w, mono(t));
    s.record_warning(w, &policy);
    assert_eq!(
        s.plan(&policy, mono(t)),
        Action::Refresh { at: mono(60 * DAY - 60), reason: RefreshReason::RefreshToken }
    );
}

#[test]
fn retry_after_is_honoured_up_to_the_tokens_life() {
    let (mut s, policy) = logged_in(false);
    s.apply(
        Attempt::Refresh,
        Outcome::Transient { retry_after: Some(Duration::from_secs(120)) },
        at(2700),
        &policy,
        0.0,
    );
    assert_eq!(s.plan(&policy, mono(2700)).at(), Some(mono(2820)));
    // Ten minutes before the deadline, a Retry-After of an hour is cut to the servable life left.
    s.apply(
        Attempt::Refresh,
        Outcome::Transient { retry_after: Some(Duration::from_secs(3600)) },
        at(3000),
        &policy,
        0.0,
    );
    assert_eq!(s.plan(&policy, mono(3000)).at(), Some(mono(3599 - 60)));
    assert_eq!(s.failures(), 2);
    // Once the token is gone, the backoff grows to at most 5 minutes.
    for n in 3..20 {
        s.apply(Attempt::Refresh, Outcome::Transient { retry_after: None }, at(4000 + n * 1000), &policy, 0.999);
    }
    let delay = s.plan(&policy, mono(4000 + 19_000)).at().unwrap().saturating_since(mono(4000 + 19_000));
    assert!(delay <= Duration::from_secs(300) && delay > Duration::from_secs(290), "{delay:?}");
    assert_eq!(s.state(mono(23_000), &policy), TokenState::Expired);
}

#[test]
fn restart_after_a_forward_jump_refreshes_once_and_rederives_a_fixed_window_from_the_server() {
    let (mut s, policy) = logged_in(false);
    s.apply(Attempt::Refresh, Outcome::Success(reply(2700, 0, RefreshTokenChange::Repeated)), at(2700), &policy, 0.0);
    let saved = s.to_persisted(at(3000));
    // Reboot 20 minutes later; the wall clock comes up 10 years ahead, the new monotonic line starts at 0.
    let skew = 10 * 365 * DAY as i64;
    let boot = |s: u64| ClockPair::new(mono(s), WallTime::from_unix_seconds(WALL0 + 4200 + s as i64 + skew));
    let trust = check_wall_clock(saved.known_good, boot(0).wall);
    assert!(trust.is_trusted(), "a clock ahead cannot be told from the local state alone");
    let mut r = saved.restore(boot(0), trust, false, 0.0);
    assert!(!r.valid_for(mono(0), Duration::ZERO, &policy), "the restored token looks expired: never served");
    assert_eq!(r.plan(&policy, mono(0)), Action::Refresh { at: mono(0), reason: RefreshReason::AccessToken });
    // The refresh works; the server's Date puts the fixed deadline back where it was.
    let server = WallTime::from_unix_seconds(WALL0 + 4201).to_system_time();
    let g = Grant::new(boot(1), Duration::from_secs(3599), RefreshTokenChange::Repeated)
        .with_server_times(Some(server), None);
    r.apply(Attempt::Refresh, Outcome::Success(g), boot(1), &policy, 0.0);
    assert_eq!(r.refresh_deadline().unwrap().mono(), mono(60 * DAY - 4200));
    assert!(matches!(r.plan(&policy, mono(1)), Action::Refresh { reason: RefreshReason::AccessToken, .. }));
}

#[test]
fn restart_with_a_clock_back_in_1970_refreshes_at_once_and_learns_the_deadline_again() {
    let (mut s, policy) = logged_in(false);
    s.apply(Attempt::Refresh, Outcome::Success(reply(2700, 0, RefreshTokenChange::Omitted)), at(2700), &policy, 0.0);
    let saved = s.to_persisted(at(3000));
    let boot = |s: u64| ClockPair::new(mono(s), WallTime::from_unix_seconds(30 + s as i64));
    let trust = check_wall_clock(saved.known_good, boot(0).wall);
    assert!(!trust.is_trusted());
    let mut r = saved.restore(boot(0), trust, false, 0.0);
    assert_eq!(r.refresh_deadline(), None, "an untrusted clock does not extend the refresh token");
    assert_eq!(r.plan(&policy, mono(0)), Action::Refresh { at: mono(0), reason: RefreshReason::AccessToken });
    let server = WallTime::from_unix_seconds(WALL0 + 5000).to_system_time();
    let g = Grant::new(boot(2), Duration::from_secs(3599), RefreshTokenChange::Omitted)
        .with_server_times(Some(server), None);
    r.apply(Attempt::Refresh, Outcome::Success(g), boot(2), &policy, 0.0);
    assert_eq!(r.refresh_deadline().unwrap().mono(), mono(2 + 60 * DAY - 5000));
}

#[test]
fn long_lived_access_token_still_renews_the_refresh_token_in_time() {
    let policy = Policy::default();
    let g = Grant::new(at(0), Duration::from_secs(90 * DAY), RefreshTokenChange::Rotated);
    let s = Session::logged_in(&g, &policy, false, 0.0);
    // 75 % of 90 days is day 67.5, after the refresh token's day 60: the refresh token sets the time,
    // 25 % of its 60 days ahead of its lapse.
    assert_eq!(
        s.plan(&policy, mono(HOUR)),
        Action::Refresh { at: mono(45 * DAY), reason: RefreshReason::RefreshToken }
    );
}

#[test]
fn state_names_match_the_contract() {
    let names: Vec<_> = [TokenState::Valid, TokenState::Retrying, TokenState::Expired, TokenState::NeedsLogin]
        .into_iter()
        .map(TokenState::as_str)
        .collect();
    assert_eq!(names, ["valid", "retrying", "expired", "needs-login"]);
}

#[test]
fn the_access_lifetime_is_the_latest_grant_s_and_bounds_what_a_fresh_token_can_give() {
    let (mut s, policy) = logged_in(false);
    assert_eq!(s.access_lifetime(), Some(Duration::from_secs(3599)));
    let shorter = Grant::new(at(2700), Duration::from_secs(1800), RefreshTokenChange::Rotated);
    s.apply(Attempt::Refresh, Outcome::Success(shorter), at(2700), &policy, 0.0);
    assert_eq!(s.access_lifetime(), Some(Duration::from_secs(1800)), "the latest grant counts, not the first");
    // Right after arrival a fresh token is valid for its lifetime less the margin, and no longer.
    let margin = policy.safety_margin;
    assert!(s.valid_for(mono(2700), Duration::from_secs(1800) - margin - Duration::from_secs(1), &policy));
    assert!(!s.valid_for(mono(2700), Duration::from_secs(1800) - margin, &policy));
}
