//! The daemon's configuration file (`/etc/att-tokend/config.toml`), read in named stages:
//!
//! 1. **raw**: the text is parsed as TOML into serde shapes that mirror the tables (`raw.rs`, and `token.rs` for
//!    `[[token]]`); a key the shapes do not know, or a value of the wrong type, is refused with the message
//!    `messages.rs` makes (line, table, closest valid key).
//! 2. **validated**: each raw table is checked and turned into the built types with `file:line` on every
//!    refusal (in the same two files: a new key is added in one place). `[api]` is login-flow's own settings,
//!    checked by login-flow's rules.
//! 3. **built**: [`Config`] and its parts (`schema.rs`), which the rest of the daemon reads.
//!
//! [`parse`] does 1 and 2 and is pure: text in, a [`Config`] or a [`ConfigError`] naming the file, the line and
//! the fix. [`load`] reads the file and calls [`parse`]. Then the checks that look at the machine (`checks.rs`):
//! [`Config::read_secrets`] opens each secret file once and reads it, and [`resolve_principals`] looks user and
//! group names up. `crate::prepare` runs them all, once, for the start, a reload and `--check-config`.
//!
//! Durations are written as a whole number and one unit: `"90s"`, `"45m"`, `"36h"`, `"60d"`.

mod checks;
mod messages;
mod raw;
mod schema;
#[cfg(test)]
mod tests;
mod token;

use std::path::Path;

pub use login_flow::MfaFields;
use serde::Deserialize;

pub use self::checks::{ResolvedAccess, ResolvedPrincipals, Secrets, TokenSecrets, resolve_principals};
pub use self::raw::{parse_cron, parse_duration};
pub use self::schema::{
    ApiConfig, Bus, Config, ConfigError, DEFAULT_API_URL, DEFAULT_CONFIG_PATH, DEFAULT_MACHINE_ID_FILE,
    DEFAULT_STATE_DIR, DaemonConfig, FleetConfig, MAX_CONNECT_TIMEOUT, MAX_REFRESH_TOKEN_LIFETIME, MAX_REQUEST_TIMEOUT,
    MAX_RETRY_INITIAL, MAX_RETRY_MAX, MAX_SAFETY_MARGIN, MAX_WARN_BEFORE, MaintenanceConfig, Principal, Principals,
    RefreshConfig, Schedule, SecretSource, TokenConfig, TokenSpec, UserSpec,
};
pub use self::token::MAX_FILES_PER_TOKEN;
pub use crate::secret_files::check_private;

/// Reads and parses a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.to_owned(), error })?;
    parse(&text, path)
}

/// Parses and validates configuration text; `path` is only used in messages and stored in [`Config::path`].
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    // Syntax first, so that a syntax error is told apart from a wrong setting; the parsed document is then read
    // into the raw shapes (one parse, no generic TOML value tree), which are validated into the built types.
    let document = toml::de::Deserializer::parse(text).map_err(|error| messages::syntax_error(text, path, &error))?;
    let raw = raw::RawConfig::deserialize(document).map_err(|error| messages::toml_error(text, path, &error))?;
    raw.validate(&raw::Ctx::new(text, path))
}
