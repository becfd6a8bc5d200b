//! `/login` replies: `token_model::reply::read_login_reply` and the readers of `login_flow::wire`.
//!
//! Input: a first line `STATUS[ DATE]` (status defaults to 200 when it is not a number; the rest of the line
//! is the `Date` and `Retry-After` header), then the body. Without a newline the whole input is the body.

use std::time::{Duration, SystemTime};

use login_flow::wire::{read_ground_probe_reply, read_mfa_reply, read_password_reply, read_refresh_reply};
use login_flow::{LoginError, Response};
use serde_json::Value;
use token_model::reply::{EXCERPT_MAX_CHARS, LoginReply, MAX_EXPIRES_IN, read_login_reply};
use token_model::secret::ExposeSecret;

use crate::assert_at_most;
use crate::secrets::{Hidden, plant};

/// The longest error message (`Display` or `Debug`) a reply may cause, whatever its size.
pub(crate) const MAX_ERROR_BYTES: usize = 4096;

/// Keys whose values the protocol makes secret (a subset of what the excerpts redact).
fn secret_key(key: &str) -> bool {
    matches!(
        key.trim().to_ascii_lowercase().as_str(),
        "access_token" | "refresh_token" | "password" | "mfauid" | "mfa_uid"
    )
}

fn split(data: &[u8]) -> (u16, Option<String>, &[u8]) {
    let Some(newline) = data.iter().position(|&b| b == b'\n') else { return (200, None, data) };
    let head = String::from_utf8_lossy(&data[..newline]);
    let (status, date) = match head.split_once(' ') {
        Some((status, date)) => (status, Some(date.to_owned())),
        None => (&*head, None),
    };
    (status.trim().parse().unwrap_or(200), date, &data[newline + 1..])
}

/// Reads `data` as a `/login` reply with every reader; panics when a promise is broken.
pub fn check_login_reply(data: &[u8]) {
    let (status, date, body) = split(data);
    let body = plant(body);
    let hidden = match serde_json::from_slice::<Value>(&body) {
        Ok(value) => Hidden::in_json(&value, secret_key),
        Err(_) => Hidden::in_text(&String::from_utf8_lossy(&body)),
    };

    match read_login_reply(status, date.as_deref(), &body) {
        Err(error) => {
            assert_eq!(error.status(), status, "the error keeps the status");
            assert!(error.excerpt().chars().count() <= EXCERPT_MAX_CHARS + 1, "excerpt too long: {error:?}");
            shown_error(&hidden, &error.to_string(), &format!("{error:?}"));
        }
        Ok(reply) => {
            match &reply {
                LoginReply::Granted(grant) => {
                    assert_eq!(status, 200, "a grant only comes with 200");
                    assert!(!grant.access_token.expose_secret().is_empty(), "an empty access token was granted");
                    assert!(
                        grant.expires_in >= Duration::from_secs(1) && grant.expires_in <= MAX_EXPIRES_IN,
                        "expires_in out of range: {:?}",
                        grant.expires_in
                    );
                    assert!(grant.refresh_token.as_ref().is_none_or(|t| !t.expose_secret().is_empty()));
                    assert!(grant.token_type.chars().count() <= 33);
                }
                LoginReply::MfaRequired(challenge) => {
                    assert!(status == 200 || status == 400, "a challenge with status {status}");
                    assert!(!challenge.mfa_uid().trim().is_empty() && !challenge.user_id().trim().is_empty());
                }
                LoginReply::Rejected(error) => {
                    assert_eq!(status, 400, "an OAuth2 error only comes with 400");
                    assert!(error.raw_code.chars().count() <= 65);
                    assert!(error.description.as_ref().is_none_or(|d| d.chars().count() <= EXCERPT_MAX_CHARS + 1));
                }
            }
            let debug = format!("{reply:?}");
            assert_at_most("a reply's Debug", &debug, MAX_ERROR_BYTES + 16 * body.len());
            hidden.assert_absent("a reply's Debug", &debug);
        }
    }

    let response = Response {
        status,
        date: date.clone(),
        retry_after: date,
        body: body.clone(),
        received_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    };
    let readers: [(&str, Result<String, LoginError>); 4] = [
        ("read_password_reply", read_password_reply(&response).map(|outcome| format!("{outcome:?}"))),
        ("read_mfa_reply", read_mfa_reply(&response).map(|grant| format!("{grant:?}"))),
        ("read_refresh_reply", read_refresh_reply(&response).map(|grant| format!("{grant:?}"))),
        ("read_ground_probe_reply", read_ground_probe_reply(&response).map(|ids| format!("{ids:?}"))),
    ];
    for (reader, result) in readers {
        match result {
            Ok(debug) => hidden.assert_absent(reader, &debug),
            Err(error) => shown_error(&hidden, &error.to_string(), &format!("{error:?}")),
        }
    }
}

fn shown_error(hidden: &Hidden, display: &str, debug: &str) {
    assert_at_most("an error's Display", display, MAX_ERROR_BYTES);
    assert_at_most("an error's Debug", debug, MAX_ERROR_BYTES);
    hidden.assert_absent("an error's Display", display);
    hidden.assert_absent("an error's Debug", debug);
}
