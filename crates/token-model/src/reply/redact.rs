//! Short excerpts of reply bodies for error messages, with every secret replaced by `[redacted]`: structurally
//! for JSON, by a lexical scan otherwise.

use serde_json::Value;

use super::{EXCERPT_MAX_CHARS, REDACTED, TOKEN_LIKE_MIN_CHARS};

/// A short excerpt of a body for an error message: at most [`EXCERPT_MAX_CHARS`] characters, with secrets
/// replaced by `[redacted]`.
///
/// Redacted are: the value of any key that names a secret (containing `token`, `password`, `secret`, `mfauid`,
/// `seed`, `otp`, `authorization`, `cookie`, `credential`, or being `code`), and any string with no whitespace
/// of 20 characters or more, which may be an opaque token under an unexpected key. A JSON body is redacted
/// structurally (strings holding JSON are redacted inside); anything else is redacted by a lexical scan that
/// recognises `key: value`, `"key": "value"` and `key=value`.
///
/// Only the first 64 KiB of a body are looked at; when a body is longer, the word cut in two at that point
/// is dropped, so no part of a token can show.
pub fn excerpt(body: &[u8]) -> String {
    const SCAN_BYTES: usize = 64 * 1024;
    let structured = if body.len() <= SCAN_BYTES { serde_json::from_slice::<Value>(body).ok() } else { None };
    let redacted = match structured {
        Some(mut value) => {
            redact_value(&mut value, 0);
            value.to_string()
        }
        None if body.len() > SCAN_BYTES => {
            let text = String::from_utf8_lossy(&body[..SCAN_BYTES]);
            let whole_words = text.rfind(is_separator).map_or("", |cut| &text[..cut]);
            redact_text(whole_words)
        }
        None => redact_text(&String::from_utf8_lossy(body)),
    };
    let flat: String = redacted.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    truncate_chars(&flat, EXCERPT_MAX_CHARS)
}

/// Whether a key names a secret.
fn is_secret_key(key: &str) -> bool {
    const PARTS: [&str; 11] = [
        "token",
        "password",
        "passwd",
        "secret",
        "mfauid",
        "mfa_uid",
        "seed",
        "otp",
        "authorization",
        "cookie",
        "credential",
    ];
    let key = key.trim().to_ascii_lowercase();
    if key == "token_type" {
        return false;
    }
    key == "code" || key.ends_with("_code") && key != "error_code" || PARTS.iter().any(|part| key.contains(part))
}

/// Characters that end a word in the lexical scan.
fn is_separator(c: char) -> bool {
    c.is_whitespace() || "\"'{}[](),:;=&<>".contains(c)
}

fn looks_like_token(text: &str) -> bool {
    text.chars().count() >= TOKEN_LIKE_MIN_CHARS && !text.chars().any(char::is_whitespace)
}

fn redact_value(value: &mut Value, depth: usize) {
    match value {
        Value::Object(object) => {
            for (key, inner) in object.iter_mut() {
                if is_secret_key(key) && !inner.is_null() {
                    *inner = Value::String(REDACTED.to_owned());
                } else {
                    redact_value(inner, depth + 1);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| redact_value(item, depth + 1)),
        Value::String(text) => {
            // A string that holds JSON (like the mfa_required description) is redacted inside.
            let nested = if depth < 8 { serde_json::from_str::<Value>(text).ok() } else { None };
            match nested {
                Some(mut inner @ (Value::Object(_) | Value::Array(_))) => {
                    redact_value(&mut inner, depth + 1);
                    *text = inner.to_string();
                }
                _ if looks_like_token(text) => *text = REDACTED.to_owned(),
                _ => *text = redact_text(text),
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Redacts an `error_description` as excerpts redact a JSON string: one that holds JSON is redacted
/// structurally, so a secret inside an array or object under a secret key is hidden too.
pub(super) fn redact_description(text: &str) -> String {
    let mut value = Value::String(text.to_owned());
    redact_value(&mut value, 0);
    match value {
        Value::String(redacted) => redacted,
        other => other.to_string(),
    }
}

/// Lexical redaction of text that is not JSON (or text inside a JSON string).
fn redact_text(text: &str) -> String {
    #[derive(PartialEq)]
    enum State {
        Idle,
        /// Just saw a secret key; a `:` or `=` makes the next value secret.
        AfterKey,
        /// The next value is secret.
        ExpectValue,
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len().min(4096));
    let mut state = State::Idle;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if !is_separator(c) {
            let start = i;
            while i < chars.len() && !is_separator(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if state == State::ExpectValue || word.chars().count() >= TOKEN_LIKE_MIN_CHARS {
                out.push_str(REDACTED);
                state = State::Idle;
            } else {
                out.push_str(&word);
                state = if is_secret_key(&word) { State::AfterKey } else { State::Idle };
            }
            continue;
        }
        match (&state, c) {
            (State::AfterKey, ':' | '=') => {
                state = State::ExpectValue;
                out.push(c);
            }
            (State::AfterKey, '"' | '\'') => out.push(c),
            (State::ExpectValue, '"' | '\'') => {
                // A quoted secret: drop everything up to the matching unescaped quote (or the end).
                out.push(c);
                out.push_str(REDACTED);
                i += 1;
                let mut escaped = false;
                while i < chars.len() {
                    let d = chars[i];
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == c {
                        out.push(c);
                        break;
                    }
                    i += 1;
                }
                state = State::Idle;
            }
            (State::AfterKey | State::ExpectValue, _) if c.is_whitespace() => out.push(c),
            _ => {
                state = State::Idle;
                out.push(c);
            }
        }
        i += 1;
    }
    out
}

pub(super) fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Map;

    use super::*;
    use crate::reply::read_login_reply;
    use crate::reply::tests::GRANT;

    #[test]
    fn excerpts_redact_secrets() {
        let shown = excerpt(GRANT.as_bytes());
        assert!(!shown.contains("AT-opaque-1") && !shown.contains("RT-opaque-1"), "{shown}");
        let shown = excerpt(br#"{"access_token":"AT-1","token_type":"bearer","userName":"alice@example.com"}"#);
        assert!(shown.contains(r#""token_type":"bearer""#), "{shown}");
        assert!(!shown.contains("AT-1") && shown.contains("alice@example.com"), "{shown}");
        let shown =
            excerpt(br#"{"error":"mfa_required","error_description":"{\"MfaUid\":\"m-3\",\"UserId\":\"u-3\"}"}"#);
        assert!(!shown.contains("m-3") && shown.contains("u-3"), "{shown}");
        let shown = excerpt(br#"{"note":"x","weird":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#);
        assert!(!shown.contains("AAAAAAAAAAAAAAAAAAAA"), "{shown}");
        let shown = excerpt(b"<html>{\"password\": \"hunter 2\", \"code\" : 123456, access_token=abc&x=1 </html>");
        assert!(!shown.contains("hunter") && !shown.contains("123456") && !shown.contains("abc"), "{shown}");
        assert!(shown.contains("x=1"), "{shown}");
        // A body truncated inside a secret value.
        let shown = excerpt(br#"{"access_token":"abc\"def"#);
        assert!(!shown.contains("abc") && !shown.contains("def"), "{shown}");
        let long = "é ".repeat(500);
        assert_eq!(excerpt(long.as_bytes()).chars().count(), EXCERPT_MAX_CHARS + 1);
        assert_eq!(excerpt(b"line\nbreak"), "line break");
        // A token cut in two by the scan limit shows no part of itself.
        let token = "SECRETTOKEN0123456789abcdefghijklmnopqrstuvwxyz";
        let body = format!("{{\"password\":\"{}\" {token} trailing words", "p".repeat(65_510));
        let shown = excerpt(body.as_bytes());
        assert!(shown.contains("[redacted]") && !shown.contains("SECRET"), "{shown}");
    }

    proptest! {
        #[test]
        // Secret values all hold '#', so a match in the excerpt can only be the secret itself.
        fn excerpts_never_show_secret_values(
            key in prop::sample::select(vec!["access_token", "refresh_token", "password", "code", "MfaUid", "Refresh_Token", "client_secret"]),
            secret in "[ -~&&[^\"\\\\]]{0,12}#[ -~&&[^\"\\\\]]{0,12}",
            others in prop::collection::vec(("[a-z_]{1,8}", "[a-zA-Z0-9 .@:]{0,30}"), 0..5),
            wrap in 0usize..4,
        ) {
            let mut object = Map::new();
            for (name, value) in others {
                if !is_secret_key(&name) {
                    object.insert(name, Value::String(value));
                }
            }
            object.insert(key.to_owned(), Value::String(secret.clone()));
            let json = Value::Object(object).to_string();
            let body = match wrap {
                0 => json,
                1 => format!("<html><body>{json}</body></html>"),
                2 => format!("{json} trailing garbage"),
                _ => format!("{{\"error\":\"mfa_required\",\"error_description\":{}}}", Value::String(json)),
            };
            for status in [200u16, 400, 500] {
                if let Err(error) = read_login_reply(status, None, body.as_bytes()) {
                    prop_assert!(!error.excerpt().contains(&secret), "{}", error.excerpt());
                    prop_assert!(!error.to_string().contains(&secret));
                }
            }
            prop_assert!(!excerpt(body.as_bytes()).contains(&secret));
        }
    }
}
