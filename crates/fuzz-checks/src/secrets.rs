//! Planted secrets, and where in a parsed input they count as secrets.

use serde_json::Value;

/// What the byte `0x01` stands for: a token-like value (long, no separators).
pub const LONG_SECRET: &str = "sEcReTtOkEn0pQ7wX2mZ9kL4vB";

/// What the byte `0x02` stands for: a short password-like value, which only its key marks as secret.
pub const SHORT_SECRET: &str = "hunter#2";

/// The start of [`LONG_SECRET`]: a token cut short must not show either.
const LONG_PREFIX: &str = "sEcReTtOkEn0";

/// `data` with each `0x01` replaced by [`LONG_SECRET`] and each `0x02` by [`SHORT_SECRET`].
pub fn plant(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 32);
    for &byte in data {
        match byte {
            0x01 => out.extend_from_slice(LONG_SECRET.as_bytes()),
            0x02 => out.extend_from_slice(SHORT_SECRET.as_bytes()),
            other => out.push(other),
        }
    }
    out
}

/// The planted values that must not show in an output, given what the input holds.
#[derive(Debug)]
pub(crate) struct Hidden {
    needles: Vec<&'static str>,
}

impl Hidden {
    /// For a JSON value: each planted value that occurs only under keys in `secret_key` (the whole value under
    /// such a key, at any depth, and inside strings that hold JSON up to the depth the redaction looks).
    pub(crate) fn in_json(value: &Value, secret_key: fn(&str) -> bool) -> Self {
        let needles = [LONG_SECRET, LONG_PREFIX, SHORT_SECRET]
            .into_iter()
            .filter(|needle| occurs(value, needle) && only_in_secrets(value, needle, secret_key, 0))
            .collect();
        Self { needles }
    }

    /// For text that is not JSON: the token-like secret always, and its start when it only occurs as part of
    /// the whole. A short secret in free text is not recognisable, so it is not asserted.
    pub(crate) fn in_text(text: &str) -> Self {
        let mut needles = Vec::new();
        let whole = text.matches(LONG_SECRET).count();
        if whole > 0 {
            needles.push(LONG_SECRET);
            if text.matches(LONG_PREFIX).count() == whole {
                needles.push(LONG_PREFIX);
            }
        }
        Self { needles }
    }

    /// For a parsed TOML table: like [`Hidden::in_json`].
    pub(crate) fn in_toml(table: &toml::Table, secret_key: fn(&str) -> bool) -> Self {
        match serde_json::to_value(table) {
            Ok(value) => Self::in_json(&value, secret_key),
            Err(_) => Self { needles: Vec::new() },
        }
    }

    /// Panics if `shown` contains a value that must stay hidden.
    pub(crate) fn assert_absent(&self, what: &str, shown: &str) {
        for needle in &self.needles {
            assert!(!shown.contains(needle), "{what} shows the secret {needle:?} planted in the input: {shown}");
        }
    }
}

fn occurs(value: &Value, needle: &str) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(key, inner)| key.contains(needle) || occurs(inner, needle)),
        Value::Array(items) => items.iter().any(|item| occurs(item, needle)),
        Value::String(text) => text.contains(needle),
        Value::Number(number) => number.to_string().contains(needle),
        Value::Null | Value::Bool(_) => false,
    }
}

/// Whether every occurrence of `needle` in `value` lies under a secret key. Depth is counted as
/// `token_model::reply`'s redaction counts it (strings holding JSON are looked into below depth 8).
fn only_in_secrets(value: &Value, needle: &str, secret_key: fn(&str) -> bool, depth: usize) -> bool {
    match value {
        Value::Object(map) => map.iter().all(|(key, inner)| {
            !key.contains(needle)
                && (secret_key(key) && !inner.is_null() || only_in_secrets(inner, needle, secret_key, depth + 1))
        }),
        Value::Array(items) => items.iter().all(|item| only_in_secrets(item, needle, secret_key, depth + 1)),
        Value::String(text) => {
            if !text.contains(needle) {
                return true;
            }
            match serde_json::from_str::<Value>(text) {
                Ok(inner @ (Value::Object(_) | Value::Array(_))) if depth < 8 => {
                    only_in_secrets(&inner, needle, secret_key, depth + 1)
                }
                _ => false,
            }
        }
        Value::Number(number) => !number.to_string().contains(needle),
        Value::Null | Value::Bool(_) => true,
    }
}
