//! Named cases of the refresh planner: verdicts, re-login, fixed windows, Retry-After, restore after a wall
//! clock jump, the D-Bus state names, short grants, and what a caller's request may make the session do.

use std::time::Duration;

use token_model::plan::{
    Action, Attempt, CallerAction, Grant, NeedsLoginReason, Outcome, Policy, RefreshReason, RefreshTokenChange,
    Rotation, Session, TokenState, plan,
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
fn retry_after_is_a_floor_even_past_the_tokens_life() {
    let (mut s, policy) = logged_in(false);
    s.apply(
        Attempt::Refresh,
        Outcome::Transient { retry_after: Some(Duration::from_secs(120)) },
        at(2700),
        &policy,
        0.0,
    );
    assert_eq!(s.plan(&policy, mono(2700)).at(), Some(mono(2820)));
    // Ten minutes before the deadline, a Retry-After of an hour still holds: the token lapses first, since a
    // request sent earlier would only be refused again, and the cloud asked for the pause.
    s.apply(
        Attempt::Refresh,
        Outcome::Transient { retry_after: Some(Duration::from_secs(3600)) },
        at(3000),
        &policy,
        0.0,
    );
    assert_eq!(s.plan(&policy, mono(3000)).at(), Some(mono(6600)));
    assert_eq!(s.not_before(), Some(mono(6600)));
    assert_eq!(s.failures(), 2);
    // A longer one is cut to retry_after_max (an hour).
    let mut longer = s.clone();
    longer.apply(
        Attempt::Refresh,
        Outcome::Transient { retry_after: Some(Duration::from_secs(86_400)) },
        at(3100),
        &policy,
        0.0,
    );
    assert_eq!(longer.not_before(), Some(mono(6700)));
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

fn ms(ms: u64) -> MonoTime {
    MonoTime::from_origin(Duration::from_millis(ms))
}

fn grant_for(s: u64, life: u64, change: RefreshTokenChange) -> Grant {
    Grant::new(at(s), Duration::from_secs(life), change)
}

#[test]
fn a_20_s_grant_against_the_60_s_margin_is_served_and_refreshed_at_15_to_16_s() {
    let policy = Policy::default();
    let life = Duration::from_secs(20);
    assert_eq!(policy.margin_for(life), Duration::from_secs(4), "a fifth of 20 s, under the 60 s margin");
    assert!(!policy.too_short(life));
    for (jitter, refresh_ms) in [(0.0, 15_000), (0.5, 15_500), (0.999_999, 15_999)] {
        let s = Session::logged_in(&grant_for(100, 20, RefreshTokenChange::Rotated), &policy, false, jitter);
        assert!(s.valid_for(mono(100), Duration::ZERO, &policy), "served at once");
        assert!(s.valid_for(mono(115), Duration::ZERO, &policy), "still served at 15 s");
        assert!(!s.valid_for(mono(116), Duration::ZERO, &policy), "not inside the last 4 s");
        assert_eq!(s.serve_until(&policy), Some(mono(116)));
        assert_eq!(s.state(mono(110), &policy), TokenState::Valid);
        let Action::Refresh { at, reason: RefreshReason::AccessToken } = s.plan(&policy, mono(100)) else {
            panic!("a refresh is planned")
        };
        assert_eq!(at.saturating_since(mono(100)).as_millis(), refresh_ms, "jitter {jitter}");
    }
}

#[test]
fn a_2_s_grant_is_not_served_and_counts_as_a_transient_failure() {
    let (mut s, policy) = logged_in(false);
    assert!(policy.too_short(Duration::from_secs(2)));
    let before = s.access_deadline();
    // At 2700 s the refresh brings a new refresh token but an access token of 2 s.
    s.apply(
        Attempt::Refresh,
        Outcome::Success(grant_for(2700, 2, RefreshTokenChange::Rotated)),
        at(2700),
        &policy,
        0.0,
    );
    assert_eq!(s.access_deadline(), before, "the access token in hand stays");
    assert_eq!(s.access_lifetime(), Some(Duration::from_secs(3599)));
    assert_eq!(s.refresh_deadline().unwrap().mono(), mono(2700 + 60 * DAY), "the new refresh token is taken");
    assert_eq!(s.rotation(), Rotation::Sliding);
    assert_eq!(s.failures(), 1);
    assert_eq!(s.last_request(), Some(mono(2700)));
    // The backoff says 0.5 s; the floor says 5 s.
    assert_eq!(s.plan(&policy, mono(2700)), Action::Retry { at: mono(2705), attempt: Attempt::Refresh, failures: 1 });
    assert_eq!(s.state(mono(2700), &policy), TokenState::Retrying);
    assert!(!s.valid_for(mono(2701), Duration::from_secs(1000), &policy), "the 2 s token is never what is served");

    // A login whose only access token is 2 s long: nothing to serve, a refresh retried after the floor.
    let s = Session::logged_in(&grant_for(0, 2, RefreshTokenChange::Rotated), &policy, false, 0.0);
    assert_eq!(s.access_deadline(), None);
    assert_eq!(s.serve_until(&policy), None);
    assert_eq!(s.state(mono(0), &policy), TokenState::Expired);
    assert_eq!(s.plan(&policy, mono(0)), Action::Retry { at: mono(5), attempt: Attempt::Refresh, failures: 1 });

    // The same without a refresh token: nothing to refresh with, as after any login without one.
    let s = Session::logged_in(&grant_for(0, 2, RefreshTokenChange::Omitted), &policy, false, 0.0);
    assert_eq!(s.plan(&policy, mono(0)), Action::NeedsLogin { reason: NeedsLoginReason::RefreshRejected });
    assert_eq!(s.failures(), 0);
    let s = Session::logged_in(&grant_for(0, 2, RefreshTokenChange::Omitted), &policy, true, 0.0);
    assert_eq!(s.plan(&policy, mono(0)), Action::ReLogin { at: mono(5) });
}

#[test]
fn a_caller_cannot_make_the_session_refresh_before_half_the_token_s_life() {
    let (s, policy) = logged_in(false);
    // 3599 s, margin 60 s: at 100 s a token valid for 3500 s more is not in hand (3599 - 100 - 60 < 3500),
    // though a fresh one would be.
    let want = Duration::from_secs(3500);
    assert_eq!(
        s.for_caller(mono(100), want, &policy),
        CallerAction::Refuse { valid_for: Duration::from_secs(3599 - 100 - 61), until: Some(ms(1_799_500)) }
    );
    assert_eq!(s.for_caller(mono(100), Duration::from_secs(3000 - 500), &policy), CallerAction::Serve);
    // At half the life the caller may have its refresh, once.
    assert_eq!(s.for_caller(ms(1_799_500), want, &policy), CallerAction::RefreshNow);
    let mut s = s;
    s.apply(Attempt::Refresh, Outcome::Success(reply(1800, 0, RefreshTokenChange::Rotated)), at(1800), &policy, 0.0);
    assert_eq!(s.for_caller(mono(1800), want, &policy), CallerAction::Serve);
}

#[test]
fn a_caller_asking_beyond_a_fresh_token_or_for_a_login_spends_nothing() {
    let (mut s, policy) = logged_in(true);
    let most = Duration::from_secs(3599 - 60 - 1);
    assert_eq!(s.for_caller(mono(10), Duration::from_secs(3599 - 60), &policy), CallerAction::TooLong { most });
    assert_eq!(s.for_caller(mono(0), most, &policy), CallerAction::Serve, "a fresh token gives `most`");

    // A rejected refresh token with unattended re-login: the caller never triggers the login.
    s.apply(Attempt::Refresh, Outcome::Verdict, at(3000), &policy, 0.0);
    let want = Duration::from_secs(1000);
    let valid_for = Duration::from_secs(3599 - 3001 - 61);
    assert_eq!(s.for_caller(mono(3001), want, &policy), CallerAction::Refuse { valid_for, until: None });
    let valid_for = Duration::from_secs(3599 - 3005 - 61);
    assert_eq!(
        s.for_caller(mono(3005), want, &policy),
        CallerAction::Refuse { valid_for, until: Some(mono(3005)) },
        "a due re-login is the daemon's own timer's"
    );
    // Without unattended re-login: NeedsLogin.
    s.set_unattended_relogin(false);
    assert_eq!(s.for_caller(mono(3001), want, &policy), CallerAction::NeedsLogin);
    assert!(s.valid_for(mono(3001), Duration::ZERO, &policy), "the token in hand is still served");
}

#[test]
fn a_caller_triggers_at_most_one_early_retry_per_gap_and_never_inside_the_floor() {
    let (mut s, policy) = logged_in(false);
    let want = Duration::from_secs(600);
    // Late in the token's life a refresh fails with a 2-minute Retry-After.
    s.apply(
        Attempt::Refresh,
        Outcome::Transient { retry_after: Some(Duration::from_secs(120)) },
        at(2900),
        &policy,
        0.0,
    );
    assert_eq!(s.plan(&policy, mono(2900)).at(), Some(mono(3020)));
    // The token has 2900 → 3539 s to serve: 639 s, so a caller wanting 600 s is served until 2939 s.
    assert_eq!(s.for_caller(mono(2901), want, &policy), CallerAction::Serve);
    // A caller wanting 700 s may not bring the attempt before the Retry-After: no caller moves it.
    let longer = Duration::from_secs(700);
    for t in [2905, 2910, 2950, 3019] {
        let refused = CallerAction::Refuse { valid_for: Duration::from_secs(3599 - t - 61), until: Some(mono(3020)) };
        assert_eq!(s.for_caller(mono(t), longer, &policy), refused, "at {t} s, before the Retry-After");
    }
    assert_eq!(s.for_caller(mono(3020), want, &policy), CallerAction::RefreshNow);
    // The daemon performs it at 3020 s; it fails again, without a Retry-After.
    s.apply(Attempt::Refresh, Outcome::Transient { retry_after: None }, at(3020), &policy, 0.0);
    // The daemon's own retry (backoff 1 s, floor 5 s) is at 3025 s; a caller's next early one at 3030 s.
    assert_eq!(s.plan(&policy, mono(3020)).at(), Some(mono(3025)));
    assert_eq!(
        s.for_caller(mono(3024), want, &policy),
        CallerAction::Refuse { valid_for: Duration::from_secs(3599 - 3024 - 61), until: Some(mono(3030)) }
    );
    // Once the daemon's retry is due, a caller may have it (the floor has passed).
    assert_eq!(s.for_caller(mono(3025), want, &policy), CallerAction::RefreshNow);
}

#[test]
fn a_restored_session_without_a_token_refreshes_for_the_first_caller() {
    let (s, policy) = logged_in(false);
    let saved = s.to_persisted(at(100));
    let boot = ClockPair::new(mono(0), WallTime::from_unix_seconds(30));
    let r = saved.restore(boot, check_wall_clock(saved.known_good, boot.wall), false, 0.0);
    assert_eq!(r.last_request(), None);
    assert_eq!(r.for_caller(mono(0), Duration::ZERO, &policy), CallerAction::RefreshNow);
    assert_eq!(r.plan(&policy, mono(0)), Action::Refresh { at: mono(0), reason: RefreshReason::AccessToken });
}
