//! Tests of the record format: round trips, and what an unusable file is told without quoting it.

use std::time::Duration;

use token_model::ids::{ClientId, TokenName};
use token_model::plan::{Grant, Policy, RefreshTokenChange, Session};
use token_model::secret::{AccessToken, RefreshToken};
use token_model::time::{ClockPair, MonoTime, WallTime};

use super::*;

/// The instance the records of [`record`] are made with.
pub(crate) const URL: &str = "https://api.allthingstalk.io";

/// The origin of the records of [`record`].
pub(crate) fn origin() -> Origin {
    Origin::new(URL, ClientId::default())
}

/// A session of `name` after a login at `at` (refresh token `rt-1`, access token `at-1` for an hour), made for
/// [`origin`], as the planner records it under the default policy.
pub(crate) fn logged_in_at(name: &str, at: WallTime) -> SessionRecord {
    let arrived = ClockPair::new(MonoTime::ORIGIN, at);
    let grant = Grant::new(arrived, Duration::from_secs(3600), RefreshTokenChange::Rotated);
    let session = Session::logged_in(&grant, &Policy::default(), false, 0.0).to_persisted(arrived);
    let name = TokenName::new(name).unwrap();
    let (refresh, access) = (RefreshToken::new("rt-1"), AccessToken::new("at-1"));
    SessionRecord::new(name, &origin(), "alice@example.com".into(), refresh, access, session)
}

/// A session of `name` after a login in November 2023: [`logged_in_at`].
pub(crate) fn record(name: &str) -> SessionRecord {
    logged_in_at(name, WallTime::from_unix_seconds(1_700_000_000))
}

#[test]
fn a_hold_reads_back_as_written_and_anything_else_is_refused_without_quoting_it() {
    let name = TokenName::new("main").unwrap();
    let hold = HoldRecord {
        name: name.clone(),
        reason: HoldReason::Refused,
        since: 1_796_619_434,
        salt: "00ff".repeat(8),
        fingerprint: "ab".repeat(32),
        message: "the cloud refused it;\nfix the password".to_owned(),
    };
    let text = encode_hold(&hold);
    let back = parse_hold(text.as_bytes(), &name).unwrap();
    assert_eq!(back, HoldRecord { message: "the cloud refused it; fix the password".to_owned(), ..hold.clone() });
    let logged_out = HoldRecord { reason: HoldReason::LoggedOut, ..hold.clone() };
    assert_eq!(parse_hold(encode_hold(&logged_out).as_bytes(), &name).unwrap().reason, HoldReason::LoggedOut);
    let other = TokenName::new("other").unwrap();
    for (bytes, why) in [
        (text.replace("att-tokend hold 1", "att-tokend hold 2"), "does not start"),
        (text.replace("reason refused", "reason secret-password"), "neither refused"),
        (text.replace("since 1796619434", "since soon"), "not a number"),
        (text.replace(&"ab".repeat(32), "secret-password"), "not hex"),
        (text.lines().take(4).collect::<Vec<_>>().join("\n"), "\"salt\" is missing"),
    ] {
        let error = parse_hold(bytes.as_bytes(), &name).unwrap_err();
        assert!(error.contains(why) && !error.contains("secret"), "{error}");
    }
    assert!(parse_hold(text.as_bytes(), &other).unwrap_err().contains("another token"));
    assert!(parse_hold(&[0xff, 0xfe], &name).unwrap_err().contains("not text"));
}

#[test]
fn parse_reads_what_encode_writes_and_bounds_its_reasons() {
    let name = TokenName::new("main").unwrap();
    let saved = record("main");
    let Parsed::Record(back) = parse(&encode(&saved).unwrap(), &name) else { panic!("a saved record reads back") };
    assert_eq!(*back, saved);
    // serde quotes an invalid name in full; a file of megabytes must not make a log line of megabytes.
    let long = format!(r#"{{"version":2,"name":"{}"}}"#, "x/".repeat(50_000));
    let Parsed::Unusable { reason } = parse(long.as_bytes(), &name) else { panic!("an invalid name is unusable") };
    assert!(reason.chars().count() <= REASON_MAX_CHARS + 1, "{} characters", reason.chars().count());
    assert!(reason.starts_with("it is not a valid session file"), "{reason}");
    // Found by the state_file fuzz target: serde quoted the offending value, whatever it was.
    let damaged = br#"{"version":"RT-SECRET-1","name":"main"}"#;
    let Parsed::Unusable { reason } = parse(damaged, &name) else { panic!("a damaged file is unusable") };
    assert!(!reason.contains("RT-SECRET"), "{reason}");
    assert!(reason.contains("expected u32") && reason.contains("line 1"), "{reason}");
    let tricky = br#"{"version":"x, expected RT-SECRET-1"}"#;
    let Parsed::Unusable { reason } = parse(tricky, &name) else { panic!("unusable") };
    assert!(!reason.contains("RT-SECRET"), "{reason}");
    let Parsed::Unusable { reason } = parse(br#"{"version":2}"#, &name) else { panic!("unusable") };
    assert!(reason.contains("missing field `name`"), "{reason}");
    let newer = br#"{"version":3,"anything":"else"}"#;
    assert!(matches!(parse(newer, &name), Parsed::TooNew { version: 3 }));
}
