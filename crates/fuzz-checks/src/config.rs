//! The config parser: `att_tokend::config::parse`.

use std::path::Path;

use att_tokend::config::{ConfigError, parse};

use crate::assert_at_most;
use crate::secrets::{Hidden, plant};

/// A message may quote what it is about (a key, a section's name), so its bound grows with the input; the
/// fixed part covers the longest help text (the list of valid keys).
pub(crate) const MAX_ERROR_BYTES: usize = 4096;

/// Keys under which an operator might paste a secret by mistake instead of naming a file.
fn secret_key(key: &str) -> bool {
    matches!(
        key.trim().to_ascii_lowercase().as_str(),
        "password"
            | "access_token"
            | "refresh_token"
            | "token_value"
            | "static_token"
            | "secret"
            | "totp_secret"
            | "totp_seed"
            | "seed"
            | "code"
            | "mfa_code"
    )
}

/// Parses `data` as a config file; panics when a promise is broken.
pub fn check_config(data: &[u8]) {
    let bytes = plant(data);
    // `config::load` reads the file as UTF-8 first; text that is not never reaches `parse`.
    let Ok(text) = std::str::from_utf8(&bytes) else { return };
    let path = Path::new("/etc/att-tokend/config.toml");
    let hidden = match text.parse::<toml::Table>() {
        Ok(table) => Hidden::in_toml(&table, secret_key),
        Err(_) => Hidden::in_text(text),
    };
    match parse(text, path) {
        Err(error) => {
            let display = error.to_string();
            let debug = format!("{error:?}");
            assert!(display.starts_with("/etc/att-tokend/config.toml"), "the message names the file: {display}");
            if let ConfigError::Invalid { line, .. } | ConfigError::Reference { line, .. } = &error {
                let lines = text.matches('\n').count() + 1;
                assert!(*line <= lines, "line {line} of a {lines}-line file: {display}");
            }
            assert_at_most("a config error's Display", &display, MAX_ERROR_BYTES + 4 * text.len());
            assert_at_most("a config error's Debug", &debug, MAX_ERROR_BYTES + 12 * text.len());
            hidden.assert_absent("a config error's Display", &display);
            hidden.assert_absent("a config error's Debug", &debug);
        }
        Ok(config) => {
            let again = parse(text, path).expect("the same text parses again");
            assert_eq!(config, again, "parsing is deterministic");
            let mut names: Vec<&str> = config.tokens.iter().map(|t| t.name.as_str()).collect();
            names.sort_unstable();
            let count = names.len();
            names.dedup();
            assert_eq!(names.len(), count, "token names are unique");
            for advice in config.advice() {
                hidden.assert_absent("config advice", &advice);
            }
        }
    }
}
