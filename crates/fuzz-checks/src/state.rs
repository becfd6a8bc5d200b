//! Session files: `att_tokend::state_file::parse` and `encode`.

use att_tokend::state_file::{FORMAT_VERSION, Parsed, REASON_MAX_CHARS, encode, parse};
use serde_json::Value;
use token_model::ids::TokenName;

use crate::secrets::{Hidden, plant};

/// The keys of a session file that hold secrets.
fn secret_key(key: &str) -> bool {
    matches!(key, "access_token" | "refresh_token")
}

/// Parses `data` as the session file of `main`; panics when a promise is broken.
pub fn check_state_file(data: &[u8]) {
    let bytes = plant(data);
    let name = TokenName::new("main").expect("a valid name");
    let hidden = match serde_json::from_slice::<Value>(&bytes) {
        Ok(value) => Hidden::in_json(&value, secret_key),
        Err(_) => Hidden::in_text(&String::from_utf8_lossy(&bytes)),
    };
    match parse(&bytes, &name) {
        Parsed::Record(record) => {
            assert_eq!(record.name, name, "only the session of the file's own name is read");
            hidden.assert_absent("a session record's Debug", &format!("{record:?}"));
            let encoded = encode(&record).expect("a record that was read can be written");
            match parse(&encoded, &name) {
                Parsed::Record(back) => assert_eq!(back, record, "writing and reading again changes nothing"),
                other => panic!("a record written by encode does not read back: {other:?}"),
            }
        }
        Parsed::TooNew { version } => assert!(version > FORMAT_VERSION, "version {version} is not too new"),
        Parsed::Unusable { reason } => {
            assert!(reason.chars().count() <= REASON_MAX_CHARS + 1, "reason too long: {reason}");
            hidden.assert_absent("the reason a session file is unusable", &reason);
        }
        other => panic!("an outcome this check does not know: {other:?}"),
    }
}
