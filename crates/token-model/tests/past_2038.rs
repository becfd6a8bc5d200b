//! The model with wall clocks past 2038-01-19T03:14:07Z (the last second a signed 32-bit `time_t` holds) and
//! past 2106-02-07T06:28:15Z (the last an unsigned 32-bit count holds): login, refresh planning, deadlines,
//! their D-Bus `expires_at` and dates, persistence and restore after a reboot. These run on the 32-bit armhf
//! target too (`cargo xtask cross-test`), where `time_t` and `usize` are 32 bits wide.

use std::time::{Duration, UNIX_EPOCH};

use token_model::plan::{Action, Grant, Policy, RefreshReason, RefreshTokenChange, Session};
use token_model::time::{ClockPair, Deadline, MonoTime, WallTime, check_wall_clock, expires_at, rfc3339};

/// 2040-01-01T00:00:00Z.
const Y2040: i64 = 2_208_988_800;
/// 2106-02-07T06:28:16Z: 2^32 seconds, one past the largest unsigned 32-bit count.
const Y2106: i64 = 4_294_967_296;
/// The last second of a signed 32-bit `time_t`: 2038-01-19T03:14:07Z.
const LAST_I32: i64 = i32::MAX as i64;
const DAY: u64 = 86_400;

fn mono(s: u64) -> MonoTime {
    MonoTime::from_origin(Duration::from_secs(s))
}

/// Monotonic second `s` of a boot whose wall clock read `wall0` at second 0.
fn at(wall0: i64, s: u64) -> ClockPair {
    ClockPair::new(mono(s), WallTime::from_unix_seconds(wall0 + s as i64))
}

/// A login at monotonic second `s`, the server agreeing with the local clock.
fn logged_in(wall0: i64, s: u64) -> Session {
    let server = WallTime::from_unix_seconds(wall0 + s as i64).to_system_time();
    let grant = Grant::new(at(wall0, s), Duration::from_secs(3599), RefreshTokenChange::Rotated)
        .with_server_times(Some(server), None);
    Session::logged_in(&grant, &Policy::default(), false, 0.0)
}

#[test]
fn wall_times_past_2038_and_2106_keep_their_value_through_system_time() {
    for seconds in [LAST_I32, LAST_I32 + 1, Y2040, Y2106 - 1, Y2106, Y2106 + 60 * DAY as i64] {
        let wall = WallTime::from_unix_seconds(seconds);
        let system = wall.to_system_time();
        assert_eq!(system.duration_since(UNIX_EPOCH).unwrap(), Duration::from_secs(seconds as u64), "{seconds}");
        assert_eq!(WallTime::from_system_time(system), wall, "{seconds}");
        assert_eq!(wall.unix_millis(), seconds * 1000, "{seconds}");
    }
    assert_eq!(rfc3339(LAST_I32), "2038-01-19T03:14:07Z");
    assert_eq!(rfc3339(LAST_I32 + 1), "2038-01-19T03:14:08Z");
    assert_eq!(rfc3339(Y2040), "2040-01-01T00:00:00Z");
    assert_eq!(rfc3339(Y2106), "2106-02-07T06:28:16Z");
    assert_eq!(WallTime::from_unix_seconds(Y2106 + 3699).to_string(), "2106-02-07T07:29:55Z");
}

#[test]
fn a_login_in_2040_and_in_2106_plans_its_refresh_and_deadlines_as_in_2026() {
    let policy = Policy::default();
    for (wall0, access_date, refresh_date) in [
        (Y2040, "2040-01-01T01:01:39Z", "2040-03-01T00:01:40Z"),
        (Y2106, "2106-02-07T07:29:55Z", "2106-04-08T06:29:56Z"),
    ] {
        let s = logged_in(wall0, 100);
        // Jitter 0: at 75 % of the 3599 s access token, 2699.25 s after the login at second 100.
        assert_eq!(
            s.plan(&policy, mono(101)),
            Action::Refresh {
                at: MonoTime::from_origin(Duration::from_millis(2_799_250)),
                reason: RefreshReason::AccessToken
            },
            "{wall0}"
        );
        let access = s.access_deadline().unwrap();
        assert_eq!(access.expires_at(), wall0 + 100 + 3599);
        assert_eq!(access.mono(), mono(3699));
        assert_eq!(rfc3339(access.expires_at()), access_date);
        let refresh = s.refresh_deadline().unwrap();
        assert_eq!(expires_at(Some(&refresh)), wall0 + 100 + 60 * DAY as i64);
        assert_eq!(refresh.mono(), mono(100 + 60 * DAY));
        assert_eq!(rfc3339(refresh.expires_at()), refresh_date);
        assert!(s.valid_for(mono(3000), Duration::from_secs(60), &policy));
        assert!(!s.valid_for(mono(3699), Duration::ZERO, &policy), "{wall0}: expired at its deadline");
    }
}

#[test]
fn an_access_token_that_lapses_across_2038_01_19_keeps_a_deadline_after_it() {
    let policy = Policy::default();
    // Logged in 1000 s before the last 32-bit second: the token lapses 2599 s after it.
    let wall0 = LAST_I32 - 1000;
    let s = logged_in(wall0, 0);
    assert_eq!(s.access_deadline().unwrap().expires_at(), LAST_I32 + 2599);
    assert_eq!(rfc3339(LAST_I32 + 2599), "2038-01-19T03:57:26Z");
    assert!(s.valid_for(mono(1500), Duration::from_secs(60), &policy), "valid after 2038-01-19T03:14:07Z");
    let pair = at(wall0, 0);
    let deadline = Deadline::at_wall(WallTime::from_unix_seconds(LAST_I32 + 1), pair);
    assert_eq!(deadline.mono(), mono(1001));
    assert_eq!(pair.wall_at(mono(1001 + 60 * DAY)), WallTime::from_unix_seconds(LAST_I32 + 1 + 60 * DAY as i64));
}

#[test]
fn a_session_saved_in_2106_is_restored_after_a_reboot_with_its_deadlines() {
    let policy = Policy::default();
    let s = logged_in(Y2106, 100);
    let saved = s.to_persisted(at(Y2106, 3000));
    // The machine comes back an hour later; the new boot's monotonic line starts at 0.
    let boot = |s: u64| ClockPair::new(mono(s), WallTime::from_unix_seconds(Y2106 + 6600 + s as i64));
    let trust = check_wall_clock(saved.known_good, boot(0).wall);
    assert!(trust.is_trusted(), "a clock after the saved one is trusted");
    let r = saved.restore(boot(0), trust, false, 0.0);
    let refresh = r.refresh_deadline().unwrap();
    assert_eq!(refresh.expires_at(), Y2106 + 100 + 60 * DAY as i64);
    assert_eq!(refresh.mono(), mono(100 + 60 * DAY - 6600));
    // The access token lapsed during the hour off: refresh at once.
    assert!(!r.valid_for(mono(0), Duration::ZERO, &policy));
    assert_eq!(r.plan(&policy, mono(0)), Action::Refresh { at: mono(0), reason: RefreshReason::AccessToken });
}
