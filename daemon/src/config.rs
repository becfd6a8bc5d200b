//! The daemon's configuration file (`/etc/att-tokend/config.toml`).
//!
//! Three steps, kept apart so the first can be tested without a file system:
//! - [`parse`] is pure: text in, a validated [`Config`] or a [`ConfigError`] naming the file, the line and the
//!   fix. Unknown keys, bad durations, bad ids, duplicate names, keys that do not fit a token's kind and bad cron
//!   expressions are all caught here.
//! - [`load`] reads the file and calls [`parse`].
//! - [`Config::check_files`] and [`resolve_principals`] look at the machine: secret files (existence, type,
//!   mode, content) and user and group names.
//!
//! Durations are written as a whole number and one unit: `"90s"`, `"45m"`, `"36h"`, `"60d"`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use login_flow::MfaFields;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use token_model::ids::{ClientId, DeviceId, GroundId, TokenKind, TokenName};
use toml::Spanned;

use crate::secret_files;

/// Where the daemon looks for its configuration unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/att-tokend/config.toml";
/// Where user sessions are kept unless `[daemon] state_dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/att-tokend";
/// The AllThingsTalk REST base URL unless `[api] url` says otherwise.
pub const DEFAULT_API_URL: &str = "https://api.allthingstalk.io";

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file this configuration came from (used in messages).
    pub path: PathBuf,
    /// `[api]`: where and how to talk to AllThingsTalk.
    pub api: ApiConfig,
    /// `[daemon]`: bus, state directory, admins.
    pub daemon: DaemonConfig,
    /// `[refresh]`: refresh planning tunables.
    pub refresh: RefreshConfig,
    /// `[maintenance]`: schedules of the periodic jobs.
    pub maintenance: MaintenanceConfig,
    /// `[[token]]` tables, in file order; names are unique.
    pub tokens: Vec<TokenConfig>,
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// REST base URL without a trailing slash, default `https://api.allthingstalk.io`.
    pub url: String,
    /// OAuth2 client id sent to `/login`, default `web`.
    pub client_id: ClientId,
    /// Time allowed to open a connection, default 5 s (`connect_timeout`).
    pub connect_timeout: Duration,
    /// Time allowed for a whole request, default 15 s (`request_timeout`).
    pub request_timeout: Duration,
    /// `[api.mfa]`: names used by the MFA step (login-flow's own type, so no translation is needed).
    pub mfa: MfaFields,
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Which bus to serve on, default the system bus.
    pub bus: Bus,
    /// Where user sessions are kept, default `/var/lib/att-tokend`.
    pub state_dir: PathBuf,
    /// Who may log in, refresh and log out (root always may).
    pub admins: Principals,
    /// Whether the system's "clock synchronised" flag (set by an NTP client, read from systemd's timedated)
    /// confirms the wall clock, so that a restored access token may be served at once (default true). Without it,
    /// a restored token is refreshed before it is served.
    pub trust_kernel_time_sync: bool,
    /// A file holding the 32-byte state key that seals the session files (`state_key_file`), for running outside
    /// systemd; under systemd the key comes as the credential `state-key`. `None`: the credential, if any.
    pub state_key_file: Option<PathBuf>,
}

/// The bus of `[daemon] bus`: defined with the D-Bus contract, which `att-token --bus` reads too.
pub use token_agent::Bus;

/// `[refresh]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshConfig {
    /// Life of a refresh token counted from its issue, default 60 days (`refresh_token_lifetime`).
    pub refresh_token_lifetime: Duration,
    /// How long before a deadline a refresh must be done, default 60 s (`safety_margin`).
    pub safety_margin: Duration,
    /// When to raise `AttentionNeeded` before a session lapses for good, default 7 days and 1 day (`warn_before`).
    pub warn_before: Vec<Duration>,
    /// First delay after a transient failure, default 1 s (`retry_initial`).
    pub retry_initial: Duration,
    /// Longest delay between retries, default 5 min (`retry_max`).
    pub retry_max: Duration,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self {
            refresh_token_lifetime: Duration::from_secs(60 * DAY),
            safety_margin: Duration::from_secs(60),
            warn_before: vec![Duration::from_secs(7 * DAY), Duration::from_secs(DAY)],
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
        }
    }
}

const DAY: u64 = 24 * 3600;

// Upper bounds of the duration keys, as (duration, as written in messages). Each is far beyond any useful
// value, and small enough that a deadline computed from it (now plus the duration, on the boot-time clock or
// as Unix seconds) can never overflow and abort the daemon.

/// `[api] connect_timeout`: at most 5 minutes; a connection that takes longer is not coming.
pub const MAX_CONNECT_TIMEOUT: (Duration, &str) = (Duration::from_secs(300), "5m");
/// `[api] request_timeout`: at most 10 minutes; an access token lives about an hour.
pub const MAX_REQUEST_TIMEOUT: (Duration, &str) = (Duration::from_secs(600), "10m");
/// `[refresh] refresh_token_lifetime`: at most 10 years (AllThingsTalk's refresh tokens live 60 days).
pub const MAX_REFRESH_TOKEN_LIFETIME: (Duration, &str) = (Duration::from_secs(3650 * DAY), "3650d");
/// `[refresh] safety_margin`: at most a day; the margin used is at most a fifth of a token's life anyway.
pub const MAX_SAFETY_MARGIN: (Duration, &str) = (Duration::from_secs(DAY), "1d");
/// `[refresh] warn_before`: each lead at most 10 years, as long as the longest refresh-token lifetime.
pub const MAX_WARN_BEFORE: (Duration, &str) = (Duration::from_secs(3650 * DAY), "3650d");
/// `[refresh] retry_initial`: at most a day.
pub const MAX_RETRY_INITIAL: (Duration, &str) = (Duration::from_secs(DAY), "1d");
/// `[refresh] retry_max`: at most a week; a longer pause after an outage would outlive most sessions' warnings.
pub const MAX_RETRY_MAX: (Duration, &str) = (Duration::from_secs(7 * DAY), "7d");

/// `[maintenance]`: when the periodic jobs run.
///
/// Cron expressions use the scheduler's six fields (`sec min hour day-of-month month day-of-week`); a classic
/// five-field expression gets `0` seconds prepended. Times are UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// Probe every device, ground and user token against the cloud (`token_health`), default hourly at :07.
    pub token_health: Schedule,
    /// Re-read the device list of every ground without a configured `devices` list (`ground_sync`), default every
    /// six hours at :17.
    pub ground_sync: Schedule,
    /// Review sessions that will lapse and raise `AttentionNeeded` (`lapse_review`), default daily at 09:00.
    pub lapse_review: Schedule,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            token_health: Schedule::Cron("0 7 * * * *".to_owned()),
            ground_sync: Schedule::Cron("0 17 */6 * * *".to_owned()),
            lapse_review: Schedule::Cron("0 0 9 * * *".to_owned()),
        }
    }
}

/// A periodic job's schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// The job does not run (`"off"` or `false`).
    Off,
    /// A six-field cron expression that `tokio-cron-scheduler` accepts.
    Cron(String),
}

/// Users and groups, by name or numeric id: `{ users = ["nodered", 1001], groups = ["att-tokens"] }`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Principals {
    /// User names or uids.
    pub users: Vec<Principal>,
    /// Group names or gids.
    pub groups: Vec<Principal>,
    /// The config line where they were written (0 when not written).
    pub line: usize,
}

/// One user or group, as written in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A name to look up in the user or group database.
    Name(String),
    /// A numeric uid or gid, used as is.
    Id(u32),
}

/// Principals resolved to numeric ids.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedPrincipals {
    /// uids.
    pub uids: BTreeSet<u32>,
    /// gids.
    pub gids: BTreeSet<u32>,
}

/// Every principal of a config resolved: admins and the readers of each token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedAccess {
    /// `[daemon] admins`.
    pub admins: ResolvedPrincipals,
    /// `readers` of each token.
    pub readers: BTreeMap<TokenName, ResolvedPrincipals>,
}

/// One `[[token]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// The unique name used on D-Bus and by `att-token`.
    pub name: TokenName,
    /// Who may read it (root and admins always may).
    pub readers: Principals,
    /// Kind-specific settings.
    pub spec: TokenSpec,
    /// `files`: where the daemon keeps the token, readable by its readers only, while it is served (absolute
    /// paths, each named once in the whole config; see `crate::token_files`).
    pub files: Vec<PathBuf>,
    /// The config line of its `name` key (for messages).
    pub line: usize,
    /// The config line of each other key that was written, by key name (for messages).
    pub key_lines: BTreeMap<&'static str, usize>,
}

impl TokenConfig {
    /// The config line of `key` if it was written, else that of the token's name.
    pub fn line_of(&self, key: &str) -> usize {
        self.key_lines.get(key).copied().unwrap_or(self.line)
    }
}

impl TokenConfig {
    /// The kind of token.
    pub fn kind(&self) -> TokenKind {
        match self.spec {
            TokenSpec::User(_) => TokenKind::User,
            TokenSpec::Device { .. } => TokenKind::Device,
            TokenSpec::Ground { .. } => TokenKind::Ground,
        }
    }
}

/// The kind-specific part of a `[[token]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSpec {
    /// `kind = "user"`.
    User(UserSpec),
    /// `kind = "device"`.
    Device {
        /// The one device the token may access.
        device_id: DeviceId,
        /// Where the static token is.
        secret: SecretSource,
    },
    /// `kind = "ground"`.
    Ground {
        /// The ground whose devices the token may access.
        ground_id: GroundId,
        /// Where the static token is.
        secret: SecretSource,
        /// The ground's devices if configured; `None` means learn them from the cloud.
        devices: Option<Vec<DeviceId>>,
    },
}

/// Optional settings of a user token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserSpec {
    /// Account name: the default for `att-token login`, and needed for unattended re-login.
    pub username: Option<String>,
    /// File holding the password, for unattended re-login.
    pub password_file: Option<PathBuf>,
    /// File holding the base32 TOTP seed, for unattended re-login of an MFA account.
    pub totp_secret_file: Option<PathBuf>,
}

/// Where a static token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `token_file = "/path"`.
    File(PathBuf),
    /// `credential = "name"`: a systemd credential in `$CREDENTIALS_DIRECTORY`.
    Credential(String),
}

impl SecretSource {
    /// The file to read, looking credentials up in `credentials_dir` (the value of `$CREDENTIALS_DIRECTORY`).
    pub fn resolve_in(&self, credentials_dir: Option<&Path>) -> Result<PathBuf, String> {
        match self {
            SecretSource::File(path) => Ok(path.clone()),
            SecretSource::Credential(name) => match credentials_dir {
                Some(dir) => Ok(dir.join(name)),
                None => Err(format!(
                    "credential {name:?} cannot be found because $CREDENTIALS_DIRECTORY is not set; add \
                     LoadCredential={name}:/path/to/file (or SetCredentialEncrypted=) to the att-tokend unit, \
                     or use token_file = \"/path\" instead"
                )),
            },
        }
    }

    /// The file to read, looking credentials up in `$CREDENTIALS_DIRECTORY` of this process.
    pub fn resolve(&self) -> Result<PathBuf, String> {
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        self.resolve_in(dir.as_deref())
    }
}

/// What is wrong with a configuration. Every message names the file, the line when there is one, and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error(
        "cannot read config file {}: {error}; check the path (default {DEFAULT_CONFIG_PATH}, or pass --config PATH) and that it is readable",
        path.display()
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The text is wrong at some line (syntax, unknown key, bad value, inconsistent keys).
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A problem with something the config points to (a secret file, a user or group name).
    #[error("{}{}: {message}", path.display(), line_suffix(*line))]
    Reference {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the setting, 0 if unknown.
        line: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
}

fn line_suffix(line: usize) -> String {
    if line == 0 { String::new() } else { format!(":{line}") }
}

/// Reads and parses a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.to_owned(), error })?;
    parse(&text, path)
}

/// Parses and validates configuration text; `path` is only used in messages and stored in [`Config::path`].
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    // Syntax first, so that a syntax error is told apart from a wrong setting; the parsed document is then read
    // into the schema (one parse, no generic TOML value tree).
    let document = toml::de::Deserializer::parse(text).map_err(|error| {
        let span = error.span().unwrap_or(0..0);
        ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(text, span.start),
            message: format!(
                "TOML syntax error: {}; fix the syntax (strings need double quotes, tables are [name], tokens [[token]])",
                error.message().trim()
            ),
        }
    })?;
    let raw = RawConfig::deserialize(document).map_err(|error| toml_error(text, path, &error))?;
    let ctx = Ctx { text, path };
    raw.validate(&ctx)
}

struct Ctx<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Ctx<'_> {
    fn at(&self, span: Range<usize>, message: String) -> ConfigError {
        ConfigError::Invalid { path: self.path.to_owned(), line: line_of(self.text, span.start), message }
    }
    fn line(&self, span: Range<usize>) -> usize {
        line_of(self.text, span.start)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Names the table that holds byte `offset`: `[daemon]`, `[[token]] "main"`, or `the top level`.
fn section_at(text: &str, offset: usize) -> String {
    let end = offset.min(text.len());
    let before = &text[..end];
    let mut header: Option<(usize, &str)> = None;
    let mut pos = 0;
    let mut strings = MultiLineStrings::default();
    for line in before.split_inclusive('\n') {
        let trimmed = line.trim();
        if strings.outside(line) && trimmed.starts_with('[') {
            header = Some((pos, trimmed.split('#').next().unwrap_or(trimmed).trim()));
        }
        pos += line.len();
    }
    let Some((start, header)) = header else { return "the top level".to_owned() };
    if header.starts_with("[[") {
        // Find the table's `name = "..."` (before the next header) to tell tables apart. Lines inside a multi-line
        // string are text, not keys (they may hold a secret), and only a valid token name is shown.
        let body = &text[start..];
        let mut strings = MultiLineStrings::default();
        for line in body.lines().skip(1) {
            if !strings.outside(line) {
                continue;
            }
            let trimmed = line.trim();
            if trimmed.starts_with('[') {
                break;
            }
            if let Some(rest) = trimmed.strip_prefix("name")
                && let Some(value) = rest.trim_start().strip_prefix('=')
            {
                let value = value.split('#').next().unwrap_or("").trim();
                let unquoted = value.trim_matches(|c| c == '"' || c == '\'');
                if TokenName::check(unquoted).is_ok() {
                    return format!("{header} \"{unquoted}\"");
                }
                break;
            }
        }
    }
    header.to_owned()
}

/// Follows TOML's multi-line strings (`"""` and `\'\'\'`) line by line, to tell text inside one from keys and
/// headers.
#[derive(Default)]
struct MultiLineStrings {
    open: Option<&'static str>,
}

impl MultiLineStrings {
    /// Whether `line` starts outside a multi-line string (then it may be a key or a header); updates the state
    /// with the delimiters it holds.
    fn outside(&mut self, line: &str) -> bool {
        let was_outside = self.open.is_none();
        let mut rest = line;
        loop {
            match self.open {
                Some(delimiter) => match rest.find(delimiter) {
                    Some(at) => {
                        rest = &rest[at + 3..];
                        self.open = None;
                    }
                    None => break,
                },
                None => {
                    let next = ["\"\"\"", "\'\'\'"].into_iter().filter_map(|d| rest.find(d).map(|at| (at, d))).min();
                    match next {
                        Some((at, delimiter)) if !rest[..at].contains('#') => {
                            rest = &rest[at + 3..];
                            self.open = Some(delimiter);
                        }
                        _ => break,
                    }
                }
            }
        }
        was_outside
    }
}

fn toml_error(text: &str, path: &Path, error: &toml::de::Error) -> ConfigError {
    let span = error.span().unwrap_or(0..0);
    let section = section_at(text, span.start);
    let raw = error.message().trim();
    let message = if let Some(rest) = raw.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let valid = expected
            .replace("` or `", "`, `")
            .trim_start_matches([',', ' '])
            .trim_start_matches("expected one of ")
            .trim_start_matches("expected ")
            .replace('`', "");
        let hint = match closest(key, &valid) {
            Some(close) => format!(" (did you mean \"{close}\"?)"),
            None => String::new(),
        };
        format!("unknown key \"{key}\" in {section}{hint}; valid keys are {valid}")
    } else if let Some(rest) = raw.strip_prefix("missing field `") {
        let key = rest.split('`').next().unwrap_or(rest);
        format!("{section} has no \"{key}\"; add {key} = ...")
    } else if raw.contains("expected a sequence") && text.get(span.start..).is_some_and(|t| t.starts_with("[token]")) {
        "write token tables as [[token]] (double brackets), one per token".to_owned()
    } else if span.is_empty() && error.span().is_none() {
        format!("{raw}; fix the TOML syntax")
    } else {
        format!("in {section}: {raw}")
    };
    ConfigError::Invalid { path: path.to_owned(), line: line_of(text, span.start), message }
}

/// The valid key closest to a misspelt one, if any is close.
fn closest(key: &str, valid: &str) -> Option<String> {
    valid
        .split(',')
        .map(str::trim)
        .filter(|candidate| !candidate.is_empty())
        .map(|candidate| (edit_distance(key, candidate), candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, candidate)| candidate.to_owned())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb { previous } else { 1 + previous.min(current).min(row[j]) };
            previous = current;
        }
    }
    row[b.len()]
}

/// Parses a duration written as a whole number and one unit: `"90s"`, `"45m"`, `"36h"`, `"60d"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let help = "write a whole number followed by s, m, h or d, like \"90s\", \"45m\", \"36h\" or \"60d\"";
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => DAY,
        _ => return Err(format!("{text:?} is not a duration: {help}")),
    };
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration: {help}"))?;
    number
        .checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long a duration: {help}"))
}

/// Validates a cron expression and returns it in the scheduler's six-field form.
pub fn parse_cron(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    let normalized = if !trimmed.starts_with('@') && trimmed.split_whitespace().count() == 5 {
        format!("0 {trimmed}")
    } else {
        trimmed.to_owned()
    };
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(&normalized)
        .map(|_| normalized.clone())
        .map_err(|error| {
            format!(
                "{text:?} is not a cron expression ({error}); write \"sec min hour day month weekday\" like \
                 \"0 0 9 * * *\" (or five fields without seconds), or \"off\" to switch the job off"
            )
        })
}

// ---------------------------------------------------------------------------------------------------------------
// Raw, serde-facing shapes. Values that can be checked alone are checked while deserializing, so that toml
// attaches the exact span to the error.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    refresh: RawRefresh,
    #[serde(default)]
    maintenance: RawMaintenance,
    #[serde(default)]
    token: Vec<Spanned<RawToken>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    url: Option<Spanned<String>>,
    client_id: Option<ClientId>,
    connect_timeout: Option<Spanned<Dur>>,
    request_timeout: Option<Spanned<Dur>>,
    #[serde(default)]
    mfa: RawMfa,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMfa {
    grant_type: Option<Spanned<String>>,
    uid_field: Option<Spanned<String>>,
    user_field: Option<Spanned<String>>,
    code_field: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    bus: Option<BusValue>,
    state_dir: Option<Spanned<PathBuf>>,
    admins: Option<Spanned<RawPrincipals>>,
    trust_kernel_time_sync: Option<bool>,
    state_key_file: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRefresh {
    refresh_token_lifetime: Option<Spanned<Dur>>,
    safety_margin: Option<Spanned<Dur>>,
    warn_before: Option<Vec<Spanned<Dur>>>,
    retry_initial: Option<Spanned<Dur>>,
    retry_max: Option<Spanned<Dur>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMaintenance {
    token_health: Option<Schedule>,
    ground_sync: Option<Schedule>,
    lapse_review: Option<Schedule>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPrincipals {
    #[serde(default)]
    users: Vec<Principal>,
    #[serde(default)]
    groups: Vec<Principal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    // Ids are read as text and checked in `validate`, with the same message at the same line: one string decoder
    // serves them all (a decoder per id type cost the stripped daemon about 14 KiB).
    name: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    readers: Option<Spanned<RawPrincipals>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
    totp_secret_file: Option<Spanned<PathBuf>>,
    device_id: Option<Spanned<String>>,
    ground_id: Option<Spanned<String>>,
    token_file: Option<Spanned<PathBuf>>,
    credential: Option<Spanned<String>>,
    devices: Option<Spanned<Vec<Spanned<String>>>>,
    files: Option<Spanned<Vec<Spanned<PathBuf>>>>,
}

struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string like \"90s\", \"45m\", \"36h\" or \"60d\"")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Dur, E> {
                parse_duration(value).map(Dur).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "durations need a unit: write \"{value}s\" for seconds (or m, h, d) instead of {value}"
                )))
            }
        }
        deserializer.deserialize_any(V)
    }
}

struct BusValue(Bus);

impl<'de> Deserialize<'de> for BusValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map(BusValue).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Schedule;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a cron expression string, \"off\" or false")
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<Schedule, E> {
                if value {
                    Err(E::custom(
                        "true is not a schedule: write a cron expression like \"0 0 9 * * *\", or false / \"off\" to switch the job off",
                    ))
                } else {
                    Ok(Schedule::Off)
                }
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Schedule, E> {
                if value == "off" {
                    Ok(Schedule::Off)
                } else {
                    parse_cron(value).map(Schedule::Cron).map_err(E::custom)
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Principal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Principal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a user or group name, or a numeric id")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Principal, E> {
                u32::try_from(value).map(Principal::Id).map_err(|_| {
                    E::custom(format!("{value} is not a uid or gid: use a number from 0 to 4294967295, or a name"))
                })
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Principal, E> {
                if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control() || c == ':') {
                    return Err(E::custom(format!(
                        "{value:?} is not a user or group name: write the name as in /etc/passwd or /etc/group, or a numeric id"
                    )));
                }
                Ok(match value.parse::<u32>() {
                    Ok(id) => Principal::Id(id),
                    Err(_) => Principal::Name(value.to_owned()),
                })
            }
        }
        deserializer.deserialize_any(V)
    }
}

fn principals(raw: Option<Spanned<RawPrincipals>>, ctx: &Ctx<'_>) -> Principals {
    match raw {
        None => Principals::default(),
        Some(spanned) => {
            let line = ctx.line(spanned.span());
            let raw = spanned.into_inner();
            Principals { users: raw.users, groups: raw.groups, line }
        }
    }
}

fn non_empty(value: Option<Spanned<String>>, default: &str, key: &str, ctx: &Ctx<'_>) -> Result<String, ConfigError> {
    match value {
        None => Ok(default.to_owned()),
        Some(value) => {
            let span = value.span();
            let text = value.into_inner();
            if text.trim().is_empty() || text.chars().any(char::is_whitespace) {
                Err(ctx
                    .at(span, format!("in [api.mfa]: {key} must be a non-empty word; remove it to use \"{default}\"")))
            } else {
                Ok(text)
            }
        }
    }
}

fn absolute(value: Spanned<PathBuf>, key: &str, ctx: &Ctx<'_>, section: &str) -> Result<PathBuf, ConfigError> {
    let span = value.span();
    let path = value.into_inner();
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(ctx.at(span, format!("{section}: {key} {:?} must be an absolute path; write it starting with /", path)))
    }
}

impl RawConfig {
    fn validate(self, ctx: &Ctx<'_>) -> Result<Config, ConfigError> {
        let api = self.api.validate(ctx)?;
        let daemon = DaemonConfig {
            bus: self.daemon.bus.map(|b| b.0).unwrap_or_default(),
            state_dir: match self.daemon.state_dir {
                Some(dir) => absolute(dir, "state_dir", ctx, "[daemon]")?,
                None => PathBuf::from(DEFAULT_STATE_DIR),
            },
            admins: principals(self.daemon.admins, ctx),
            trust_kernel_time_sync: self.daemon.trust_kernel_time_sync.unwrap_or(true),
            state_key_file: match self.daemon.state_key_file {
                Some(file) => Some(absolute(file, "state_key_file", ctx, "[daemon]")?),
                None => None,
            },
        };
        let refresh = self.refresh.validate(ctx)?;
        let defaults = MaintenanceConfig::default();
        let maintenance = MaintenanceConfig {
            token_health: self.maintenance.token_health.unwrap_or(defaults.token_health),
            ground_sync: self.maintenance.ground_sync.unwrap_or(defaults.ground_sync),
            lapse_review: self.maintenance.lapse_review.unwrap_or(defaults.lapse_review),
        };
        let mut tokens = Vec::with_capacity(self.token.len());
        let mut seen: HashMap<TokenName, usize> = HashMap::new();
        for raw in self.token {
            let token = raw.into_inner().validate(ctx)?;
            if let Some(first) = seen.get(&token.name) {
                return Err(ConfigError::Invalid {
                    path: ctx.path.to_owned(),
                    line: token.line,
                    message: format!(
                        "token name \"{}\" is already used by the [[token]] at line {first}; give each token a unique name",
                        token.name
                    ),
                });
            }
            seen.insert(token.name.clone(), token.line);
            tokens.push(token);
        }
        let config = Config { path: ctx.path.to_owned(), api, daemon, refresh, maintenance, tokens };
        check_token_files(&config, ctx)?;
        Ok(config)
    }
}

impl RawApi {
    fn validate(self, ctx: &Ctx<'_>) -> Result<ApiConfig, ConfigError> {
        let url = match self.url {
            None => DEFAULT_API_URL.to_owned(),
            Some(url) => {
                let span = url.span();
                let text = url.into_inner();
                let rest = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://"));
                let host = rest.map(|r| r.split('/').next().unwrap_or(""));
                match host {
                    Some(host) if !host.is_empty() && !text.chars().any(char::is_whitespace) => {
                        // The client's own rules (https except on loopback, no credentials, query or fragment),
                        // said here with the line rather than at start-up without it.
                        if let Err(error) = login_flow::config::parse_base_url(&text) {
                            let problem = match error {
                                login_flow::LoginError::BadConfig { problem } => problem,
                                other => other.to_string(),
                            };
                            return Err(ctx.at(span, format!("in [api]: {problem}")));
                        }
                        text.trim_end_matches('/').to_owned()
                    }
                    _ => {
                        return Err(ctx.at(
                            span,
                            format!(
                                "in [api]: url {text:?} is not a base URL; write it like \"{DEFAULT_API_URL}\" (https://<instance>.allthingstalk.io)"
                            ),
                        ));
                    }
                }
            }
        };
        let mfa = MfaFields {
            grant_type: non_empty(self.mfa.grant_type, "mfa", "grant_type", ctx)?,
            uid_field: non_empty(self.mfa.uid_field, "mfa_uid", "uid_field", ctx)?,
            user_field: non_empty(self.mfa.user_field, "user_id", "user_field", ctx)?,
            code_field: non_empty(self.mfa.code_field, "code", "code_field", ctx)?,
        };
        Ok(ApiConfig {
            url,
            client_id: self.client_id.unwrap_or_default(),
            connect_timeout: at_most(self.connect_timeout, "[api]", "connect_timeout", MAX_CONNECT_TIMEOUT, ctx)?
                .unwrap_or(Duration::from_secs(5)),
            request_timeout: at_most(self.request_timeout, "[api]", "request_timeout", MAX_REQUEST_TIMEOUT, ctx)?
                .unwrap_or(Duration::from_secs(15)),
            mfa,
        })
    }
}

impl RawRefresh {
    fn validate(self, ctx: &Ctx<'_>) -> Result<RefreshConfig, ConfigError> {
        let defaults = RefreshConfig::default();
        let refresh_token_lifetime = match self.refresh_token_lifetime {
            None => defaults.refresh_token_lifetime,
            Some(value) => {
                let span = value.span();
                let lifetime = bound(value, "[refresh]", "refresh_token_lifetime", MAX_REFRESH_TOKEN_LIFETIME, ctx)?;
                if lifetime < Duration::from_secs(3600) {
                    return Err(ctx.at(
                        span,
                        "in [refresh]: refresh_token_lifetime must be at least \"1h\"; AllThingsTalk refresh tokens live \"60d\" (the default: remove the key)".to_owned(),
                    ));
                }
                lifetime
            }
        };
        let retry_initial = at_most(self.retry_initial, "[refresh]", "retry_initial", MAX_RETRY_INITIAL, ctx)?
            .unwrap_or(defaults.retry_initial);
        let retry_max = match self.retry_max {
            None => defaults.retry_max.max(retry_initial),
            Some(value) => {
                let span = value.span();
                let max = bound(value, "[refresh]", "retry_max", MAX_RETRY_MAX, ctx)?;
                if max < retry_initial {
                    return Err(ctx.at(
                        span,
                        "in [refresh]: retry_max is shorter than retry_initial; make retry_max at least as long"
                            .to_owned(),
                    ));
                }
                max
            }
        };
        let mut warn_before: Vec<Duration> = match self.warn_before {
            None => defaults.warn_before,
            Some(list) => list
                .into_iter()
                .map(|d| bound(d, "[refresh]", "warn_before", MAX_WARN_BEFORE, ctx))
                .collect::<Result<_, _>>()?,
        };
        warn_before.sort_unstable_by(|a, b| b.cmp(a));
        warn_before.dedup();
        Ok(RefreshConfig {
            refresh_token_lifetime,
            safety_margin: at_most(self.safety_margin, "[refresh]", "safety_margin", MAX_SAFETY_MARGIN, ctx)?
                .unwrap_or(defaults.safety_margin),
            warn_before,
            retry_initial,
            retry_max,
        })
    }
}

/// A duration key's value, refused with `file:line` when it is longer than `most` (the upper bounds below).
fn bound(
    value: Spanned<Dur>,
    section: &str,
    key: &str,
    most: (Duration, &str),
    ctx: &Ctx<'_>,
) -> Result<Duration, ConfigError> {
    let span = value.span();
    let duration = value.into_inner().0;
    if duration > most.0 {
        return Err(ctx.at(
            span,
            format!(
                "in {section}: {key} must be at most \"{}\" (no longer wait makes sense, and a longer one could \
                 overflow a deadline); write a shorter duration, or remove the key for the default",
                most.1
            ),
        ));
    }
    Ok(duration)
}

/// [`bound`] for an optional key.
fn at_most(
    value: Option<Spanned<Dur>>,
    section: &str,
    key: &str,
    most: (Duration, &str),
    ctx: &Ctx<'_>,
) -> Result<Option<Duration>, ConfigError> {
    value.map(|value| bound(value, section, key, most, ctx)).transpose()
}

/// An id written as text, checked by `new` (its error names the id and what a valid one is), at its line.
fn id<T>(
    value: Spanned<String>,
    new: fn(String) -> Result<T, token_model::ids::IdError>,
    ctx: &Ctx<'_>,
    section: &str,
) -> Result<T, ConfigError> {
    let span = value.span();
    new(value.into_inner()).map_err(|error| ctx.at(span, format!("in {section}: {error}")))
}

/// A kind-specific key: its name, where it was written (if it was) and the kinds it belongs to.
type KeyUse<'a> = (&'a str, Option<Range<usize>>, &'a [TokenKind]);

impl RawToken {
    fn validate(self, ctx: &Ctx<'_>) -> Result<TokenConfig, ConfigError> {
        let Some(name) = self.name else {
            let span = self.kind.as_ref().map(Spanned::span).unwrap_or(0..0);
            return Err(
                ctx.at(span, "a [[token]] has no name; add name = \"...\" (letters, digits, '_' and '-')".to_owned())
            );
        };
        let line = ctx.line(name.span());
        let name_span = name.span();
        let name = TokenName::new(name.into_inner())
            .map_err(|error| ctx.at(name_span.clone(), format!("in [[token]]: {error}")))?;
        let section = format!("[[token]] \"{name}\"");
        let Some(kind) = self.kind else {
            return Err(
                ctx.at(name_span, format!("{section} has no kind; add kind = \"user\", \"device\" or \"ground\""))
            );
        };
        let kind_span = kind.span();
        let kind: TokenKind =
            kind.into_inner().parse().map_err(|error| ctx.at(kind_span.clone(), format!("in {section}: {error}")))?;
        let readers = principals(self.readers, ctx);

        // Keys that belong to other kinds.
        let present: [KeyUse<'_>; 8] = [
            ("username", self.username.as_ref().map(Spanned::span), &[TokenKind::User]),
            ("password_file", self.password_file.as_ref().map(Spanned::span), &[TokenKind::User]),
            ("totp_secret_file", self.totp_secret_file.as_ref().map(Spanned::span), &[TokenKind::User]),
            ("device_id", self.device_id.as_ref().map(Spanned::span), &[TokenKind::Device]),
            ("ground_id", self.ground_id.as_ref().map(Spanned::span), &[TokenKind::Ground]),
            ("token_file", self.token_file.as_ref().map(Spanned::span), &[TokenKind::Device, TokenKind::Ground]),
            ("credential", self.credential.as_ref().map(Spanned::span), &[TokenKind::Device, TokenKind::Ground]),
            ("devices", self.devices.as_ref().map(Spanned::span), &[TokenKind::Ground]),
        ];
        let key_lines: BTreeMap<&'static str, usize> =
            present.iter().filter_map(|(key, span, _)| Some((*key, ctx.line(span.clone()?)))).collect();
        for (key, span, kinds) in present {
            if let Some(span) = span
                && !kinds.contains(&kind)
            {
                let owners: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                return Err(ctx.at(
                    span,
                    format!(
                        "in {section}: key \"{key}\" does not apply to a {kind} token (only to {} tokens); remove it or fix kind",
                        owners.join(" and ")
                    ),
                ));
            }
        }

        let spec = match kind {
            TokenKind::User => {
                if self.username.is_none()
                    && let Some(file) = &self.password_file
                {
                    return Err(ctx.at(
                        file.span(),
                        format!("in {section}: password_file needs username; add username = \"you@example.com\" or remove password_file"),
                    ));
                }
                if let Some(seed) = &self.totp_secret_file
                    && self.password_file.is_none()
                {
                    return Err(ctx.at(
                        seed.span(),
                        format!("in {section}: totp_secret_file needs username and password_file (the MFA step follows a password login); add them or remove totp_secret_file"),
                    ));
                }
                let username = match self.username {
                    None => None,
                    Some(user) => {
                        let span = user.span();
                        let user = user.into_inner();
                        if user.trim().is_empty() {
                            return Err(ctx.at(span, format!("in {section}: username is empty; write the account's e-mail or user name, or remove the key")));
                        }
                        Some(user)
                    }
                };
                let password_file =
                    self.password_file.map(|p| absolute(p, "password_file", ctx, &section)).transpose()?;
                let totp_secret_file =
                    self.totp_secret_file.map(|p| absolute(p, "totp_secret_file", ctx, &section)).transpose()?;
                TokenSpec::User(UserSpec { username, password_file, totp_secret_file })
            }
            TokenKind::Device | TokenKind::Ground => {
                let secret = match (self.token_file, self.credential) {
                    (Some(file), None) => SecretSource::File(absolute(file, "token_file", ctx, &section)?),
                    (None, Some(credential)) => {
                        let span = credential.span();
                        let credential = credential.into_inner();
                        if credential.is_empty() || credential.contains('/') || credential.starts_with('.') {
                            return Err(ctx.at(span, format!("in {section}: credential {credential:?} is not a credential name; use the name given to LoadCredential= (no '/')")));
                        }
                        SecretSource::Credential(credential)
                    }
                    (Some(_), Some(credential)) => {
                        return Err(ctx.at(
                            credential.span(),
                            format!("in {section}: both token_file and credential are set; keep exactly one of them"),
                        ));
                    }
                    (None, None) => {
                        return Err(ctx.at(
                            name_span,
                            format!("{section} says where its token is with neither token_file nor credential; add token_file = \"/etc/att-tokend/{name}.token\" or credential = \"{name}\""),
                        ));
                    }
                };
                if kind == TokenKind::Device {
                    let Some(device_id) = self.device_id else {
                        return Err(ctx.at(
                            name_span,
                            format!(
                                "{section} has no device_id; add device_id = \"<24-character id from the web UI>\""
                            ),
                        ));
                    };
                    TokenSpec::Device { device_id: id(device_id, DeviceId::new, ctx, &section)?, secret }
                } else {
                    let Some(ground_id) = self.ground_id else {
                        return Err(ctx.at(
                            name_span,
                            format!(
                                "{section} has no ground_id; add ground_id = \"<24-character id from the web UI>\""
                            ),
                        ));
                    };
                    let ground_id = id(ground_id, GroundId::new, ctx, &section)?;
                    let devices = match self.devices {
                        None => None,
                        Some(list) => {
                            let span = list.span();
                            let list = list
                                .into_inner()
                                .into_iter()
                                .map(|device| id(device, DeviceId::new, ctx, &section))
                                .collect::<Result<Vec<DeviceId>, ConfigError>>()?;
                            let mut seen = BTreeSet::new();
                            if let Some(repeat) = list.iter().find(|id| !seen.insert(id.as_str())) {
                                return Err(ctx.at(
                                    span,
                                    format!(
                                        "in {section}: device id {repeat} appears twice in devices; remove the repeat"
                                    ),
                                ));
                            }
                            Some(list)
                        }
                    };
                    TokenSpec::Ground { ground_id, secret, devices }
                }
            }
        };
        let mut key_lines = key_lines;
        let files = match self.files {
            None => Vec::new(),
            Some(list) => {
                key_lines.insert("files", ctx.line(list.span()));
                token_files(list, ctx, &section)?
            }
        };
        Ok(TokenConfig { name, readers, spec, files, line, key_lines })
    }
}

/// The most `files` one token may name.
pub const MAX_FILES_PER_TOKEN: usize = 8;

/// `files` of one token: absolute, clean (no `.` or `..`, no trailing `/`), at most [`MAX_FILES_PER_TOKEN`], each
/// once.
fn token_files(
    list: Spanned<Vec<Spanned<PathBuf>>>,
    ctx: &Ctx<'_>,
    section: &str,
) -> Result<Vec<PathBuf>, ConfigError> {
    let span = list.span();
    let list = list.into_inner();
    if list.len() > MAX_FILES_PER_TOKEN {
        return Err(ctx.at(
            span,
            format!(
                "in {section}: files names {} files, more than the {MAX_FILES_PER_TOKEN} a token may have; let the \
                 programs share a file",
                list.len()
            ),
        ));
    }
    let mut files: Vec<PathBuf> = Vec::with_capacity(list.len());
    for file in list {
        let span = file.span();
        let path = file.into_inner();
        let text = path.to_string_lossy();
        let problem = if !path.is_absolute() {
            Some("must be an absolute path; write it starting with /, e.g. \"/run/att-tokend/NAME.token\"")
        } else if text.ends_with('/') || path.file_name().is_none() {
            Some("names a directory; name the file itself, e.g. \"/run/att-tokend/NAME.token\"")
        } else if text.chars().any(char::is_control) {
            Some("holds a control character (a line break, a tab); name a plain file")
        } else if text.split('/').skip(1).any(|part| part.is_empty() || part == "." || part == "..") {
            Some("must be written plainly, without \".\", \"..\" or \"//\"; write the path it means")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(ctx.at(span, format!("in {section}: file {:?} {problem}", path)));
        }
        if files.contains(&path) {
            return Err(ctx.at(span, format!("in {section}: file {:?} is named twice; remove the repeat", path)));
        }
        files.push(path);
    }
    Ok(files)
}

/// Checks across tokens: no token file named by two tokens, none inside the state directory, none that is the
/// config file or a secret file the daemon reads.
fn check_token_files(config: &Config, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
    let mut secrets: Vec<(&Path, &'static str)> = vec![(ctx.path, "the config file itself")];
    if let Some(key) = &config.daemon.state_key_file {
        secrets.push((key, "[daemon] state_key_file"));
    }
    for token in &config.tokens {
        match &token.spec {
            TokenSpec::User(user) => {
                secrets.extend(user.password_file.as_deref().map(|p| (p, "a password_file")));
                secrets.extend(user.totp_secret_file.as_deref().map(|p| (p, "a totp_secret_file")));
            }
            TokenSpec::Device { secret: SecretSource::File(file), .. }
            | TokenSpec::Ground { secret: SecretSource::File(file), .. } => secrets.push((file, "a token_file")),
            _ => {}
        }
    }
    let mut owners: HashMap<&Path, &TokenName> = HashMap::new();
    for token in &config.tokens {
        let line = token.line_of("files");
        let error = |message: String| ConfigError::Invalid { path: ctx.path.to_owned(), line, message };
        let section = format!("[[token]] \"{}\"", token.name);
        for file in &token.files {
            if let Some(other) = owners.insert(file, &token.name) {
                return Err(error(format!(
                    "in {section}: file {file:?} is also a file of token \"{other}\"; give each token its own files"
                )));
            }
            if file.starts_with(&config.daemon.state_dir) {
                return Err(error(format!(
                    "in {section}: file {file:?} is inside the state directory {:?}, which only the daemon may enter; \
                     put it under /run/att-tokend/",
                    config.daemon.state_dir
                )));
            }
            if let Some((_, what)) = secrets.iter().find(|(secret, _)| *secret == file.as_path()) {
                return Err(error(format!(
                    "in {section}: file {file:?} is {what}, which the daemon reads; name another file, e.g. \
                     \"/run/att-tokend/{}.token\"",
                    token.name
                )));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Impure checks.

impl Principals {
    /// Looks names up in the user and group databases; numeric ids are taken as they are.
    pub fn resolve(&self, config_path: &Path, what: &str) -> Result<ResolvedPrincipals, ConfigError> {
        let problem =
            |message: String| ConfigError::Reference { path: config_path.to_owned(), line: self.line, message };
        let mut resolved = ResolvedPrincipals::default();
        for user in &self.users {
            let uid = match user {
                Principal::Id(id) => *id,
                Principal::Name(name) => match nix::unistd::User::from_name(name) {
                    Ok(Some(found)) => found.uid.as_raw(),
                    Ok(None) => {
                        return Err(problem(format!(
                            "{what}: there is no user named {name:?} on this system; create it (useradd), fix the name, or write its numeric uid"
                        )));
                    }
                    Err(error) => {
                        return Err(problem(format!(
                            "{what}: cannot look up user {name:?} ({error}); check /etc/nsswitch.conf or write the numeric uid"
                        )));
                    }
                },
            };
            resolved.uids.insert(uid);
        }
        for group in &self.groups {
            let gid = match group {
                Principal::Id(id) => *id,
                Principal::Name(name) => match nix::unistd::Group::from_name(name) {
                    Ok(Some(found)) => found.gid.as_raw(),
                    Ok(None) => {
                        return Err(problem(format!(
                            "{what}: there is no group named {name:?} on this system; create it (groupadd), fix the name, or write its numeric gid"
                        )));
                    }
                    Err(error) => {
                        return Err(problem(format!(
                            "{what}: cannot look up group {name:?} ({error}); check /etc/nsswitch.conf or write the numeric gid"
                        )));
                    }
                },
            };
            resolved.gids.insert(gid);
        }
        Ok(resolved)
    }
}

/// Resolves the admins and every token's readers to numeric ids (names must exist on this system).
pub fn resolve_principals(config: &Config) -> Result<ResolvedAccess, ConfigError> {
    let admins = config.daemon.admins.resolve(&config.path, "[daemon] admins")?;
    let mut readers = BTreeMap::new();
    for token in &config.tokens {
        let what = format!("readers of [[token]] \"{}\"", token.name);
        readers.insert(token.name.clone(), token.readers.resolve(&config.path, &what)?);
    }
    Ok(ResolvedAccess { admins, readers })
}

impl Config {
    /// Settings that work but that an operator should change, each with what to change; the daemon logs them at
    /// start and on reload, and `--check-config` prints them.
    pub fn advice(&self) -> Vec<String> {
        let mut advice = Vec::new();
        let attempt = self.api.connect_timeout.saturating_add(self.api.request_timeout);
        if self.refresh.safety_margin < attempt {
            advice.push(format!(
                "{}: [refresh] safety_margin ({} s) is shorter than one request may take ([api] connect_timeout + \
                 request_timeout = {} s): a refresh sent as late as the margin allows may still be waiting on a slow \
                 cloud when the token lapses; set safety_margin to at least \"{}s\" or lower the timeouts",
                self.path.display(),
                self.refresh.safety_margin.as_secs(),
                attempt.as_secs(),
                attempt.as_secs()
            ));
        }
        advice
    }

    /// Checks every secret file the config names: it exists, is a regular file, is readable, is neither group- nor
    /// world-readable, and holds one valid line. Credentials are looked up in `$CREDENTIALS_DIRECTORY`.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        self.check_files_in(dir.as_deref())
    }

    /// [`Config::check_files`] with an explicit credentials directory (`None`: unset).
    pub fn check_files_in(&self, credentials_dir: Option<&Path>) -> Result<(), ConfigError> {
        crate::run::state_key_in(&self.daemon, credentials_dir).map_err(|message| ConfigError::Reference {
            path: self.path.clone(),
            line: 0,
            message,
        })?;
        for token in &self.tokens {
            let section = format!("[[token]] \"{}\"", token.name);
            let problem = |key: &str, message: String| ConfigError::Reference {
                path: self.path.clone(),
                line: token.line_of(key),
                message: format!("{section}: {message}"),
            };
            match &token.spec {
                TokenSpec::Device { secret, .. } | TokenSpec::Ground { secret, .. } => {
                    let key = match secret {
                        SecretSource::File(_) => "token_file",
                        SecretSource::Credential(_) => "credential",
                    };
                    let file = secret.resolve_in(credentials_dir).map_err(|m| problem(key, m))?;
                    check_private(&file).map_err(|m| problem(key, m))?;
                    secret_files::read_static_token(&file).map_err(|e| problem(key, e.to_string()))?;
                }
                TokenSpec::User(user) => {
                    if let Some(file) = &user.password_file {
                        check_private(file).map_err(|m| problem("password_file", m))?;
                        secret_files::read_password(file).map_err(|e| problem("password_file", e.to_string()))?;
                    }
                    if let Some(file) = &user.totp_secret_file {
                        check_private(file).map_err(|m| problem("totp_secret_file", m))?;
                        secret_files::read_totp_seed(file).map_err(|e| problem("totp_secret_file", e.to_string()))?;
                    }
                }
            }
            if let Some(dir) = token.files.iter().find(|file| std::fs::symlink_metadata(file).is_ok_and(|m| m.is_dir()))
            {
                return Err(problem(
                    "files",
                    format!(
                        "file {dir:?} is a directory; name a file inside it, e.g. \"{}/{}.token\"",
                        dir.display(),
                        token.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The token with this name.
    pub fn token(&self, name: &str) -> Option<&TokenConfig> {
        self.tokens.iter().find(|t| t.name.as_str() == name)
    }
}

/// Checks that a secret file exists, is a regular file, is readable by this process and is not group- or
/// world-readable (mode & 0o077 == 0).
pub fn check_private(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => format!("secret file {shown} does not exist; create it (mode 600) or fix the path"),
        io::ErrorKind::PermissionDenied => {
            format!("secret file {shown} cannot be reached ({error}); let the daemon's user traverse its directory")
        }
        _ => format!("secret file {shown} cannot be examined ({error}); check the path"),
    })?;
    if !meta.is_file() {
        return Err(format!(
            "secret file {shown} is not a regular file; point the setting at the file holding the secret"
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "secret file {shown} is readable or writable by group or others (mode {mode:03o}); run chmod 600 {shown}"
        ));
    }
    std::fs::File::open(path).map_err(|error| {
        format!(
            "secret file {shown} cannot be opened ({error}); make it readable by the daemon's user (chown it, mode 600)"
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/att-tokend/config.toml";
    const DEV: &str = "abcdefghijklmnopqrstuvwx";
    const GROUND: &str = "ABCDEFGHIJKLMNOPQRSTUVWX";

    fn parse_ok(text: &str) -> Config {
        parse(text, Path::new(FILE)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Parses `text`, expects an error at `line`, and checks the message has every one of `words`.
    fn expect_error(text: &str, line: usize, words: &[&str]) -> String {
        let error = parse(text, Path::new(FILE)).expect_err("config should be rejected");
        let message = error.to_string();
        assert!(message.starts_with(&format!("{FILE}:{line}: ")), "wrong file/line: {message}");
        for word in words {
            assert!(message.contains(word), "missing {word:?} in: {message}");
        }
        message
    }

    #[test]
    fn token_files_are_checked_where_they_are_written() {
        let user = |files: &str| format!("[[token]]\nname = \"main\"\nkind = \"user\"\nfiles = {files}\n");
        let config = parse_ok(&format!(
            "{}\n[[token]]\nname = \"d\"\nkind = \"device\"\ndevice_id = \"{DEV}\"\ntoken_file = \"/t\"\nfiles = [\"/srv/d.token\"]\n",
            user("[\"/run/att-tokend/main.token\", \"/run/telegraf/att.token\"]")
        ));
        assert_eq!(
            config.tokens[0].files,
            [Path::new("/run/att-tokend/main.token"), Path::new("/run/telegraf/att.token")]
        );
        assert_eq!(config.tokens[1].files, [Path::new("/srv/d.token")], "any kind of token may have files");
        assert_eq!(config.tokens[0].line_of("files"), 4);
        assert!(parse_ok(&user("[]")).tokens[0].files.is_empty());

        expect_error(&user("[\"main.token\"]"), 4, &["\"main.token\"", "absolute path", "/run/att-tokend/"]);
        expect_error(&user("[\"/run/att-tokend/\"]"), 4, &["names a directory"]);
        expect_error(&user("[\"/run/att-tokend/../x\"]"), 4, &["without \".\", \"..\""]);
        expect_error(&user("[\"/run/./x\"]"), 4, &["\"..\""]);
        expect_error(&user("[\"/run/a\", \"/run/a\"]"), 4, &["named twice"]);
        expect_error(&user("[\"/run/a\\nb\"]"), 4, &["control character"]);
        expect_error(&user("\"/run/a\""), 4, &["expected a sequence"]);
        let many: Vec<String> = (0..=MAX_FILES_PER_TOKEN).map(|i| format!("\"/run/att-tokend/{i}\"")).collect();
        expect_error(&user(&format!("[{}]", many.join(", "))), 4, &["9 files", "more than the 8"]);
        expect_error(
            &user("[\"/var/lib/att-tokend/main.token\"]"),
            4,
            &["inside the state directory", "/run/att-tokend/"],
        );
        expect_error(
            &format!("[daemon]\nstate_dir = \"/srv/state\"\n{}", user("[\"/srv/state/x/main.token\"]")),
            6,
            &["inside the state directory \"/srv/state\""],
        );
        // Across tokens, and against the files the daemon reads.
        expect_error(
            &format!(
                "{}\n[[token]]\nname = \"d\"\nkind = \"device\"\ndevice_id = \"{DEV}\"\ntoken_file = \"/t\"\nfiles = [\"/run/a\"]\n",
                user("[\"/run/a\"]")
            ),
            11,
            &["[[token]] \"d\"", "also a file of token \"main\"", "its own files"],
        );
        expect_error(
            &format!(
                "[[token]]\nname = \"d\"\nkind = \"device\"\ndevice_id = \"{DEV}\"\ntoken_file = \"/t\"\nfiles = [\"/t\"]\n"
            ),
            6,
            &["is a token_file, which the daemon reads"],
        );
        expect_error(&user(&format!("[\"{FILE}\"]")), 4, &["the config file itself"]);
    }

    #[test]
    fn empty_config_gets_the_contract_defaults() {
        let config = parse_ok("");
        assert_eq!(config.api.url, "https://api.allthingstalk.io");
        assert_eq!(config.api.client_id.as_str(), "web");
        assert_eq!(config.api.mfa, MfaFields::default());
        assert_eq!(config.api.mfa.uid_field, "mfa_uid");
        assert_eq!(config.daemon.bus, Bus::System);
        assert_eq!(config.daemon.state_dir, Path::new("/var/lib/att-tokend"));
        assert_eq!(config.refresh.refresh_token_lifetime, Duration::from_secs(60 * 86400));
        assert_eq!(config.refresh.safety_margin, Duration::from_secs(60));
        assert_eq!(config.refresh.warn_before, vec![Duration::from_secs(7 * 86400), Duration::from_secs(86400)]);
        assert_eq!(config.maintenance, MaintenanceConfig::default());
        assert!(config.tokens.is_empty());
    }

    #[test]
    fn the_contract_example_parses() {
        let text = format!(
            r#"
[api]
url = "https://api.allthingstalk.io"
client_id = "web"

[api.mfa]
grant_type = "mfa"

[daemon]
bus = "system"
state_dir = "/var/lib/att-tokend"
admins = {{ users = [], groups = [] }}

[refresh]
refresh_token_lifetime = "60d"

[[token]]
name = "main"
kind = "user"
readers = {{ users = ["nodered", 1001], groups = ["att-tokens"] }}
username = "alice@example.com"
password_file = "/etc/att-tokend/main.password"
totp_secret_file = "/etc/att-tokend/main.totp"

[[token]]
name = "sensor-7"
kind = "device"
device_id = "{DEV}"
token_file = "/etc/att-tokend/sensor-7.token"

[[token]]
name = "site-a"
kind = "ground"
ground_id = "{GROUND}"
credential = "site-a"
devices = ["{DEV}"]
"#
        );
        let config = parse_ok(&text);
        assert_eq!(config.tokens.len(), 3);
        let main = &config.tokens[0];
        assert_eq!(main.kind(), TokenKind::User);
        assert_eq!(main.line, 18);
        assert_eq!(main.readers.users, vec![Principal::Name("nodered".into()), Principal::Id(1001)]);
        assert_eq!(main.readers.groups, vec![Principal::Name("att-tokens".into())]);
        let TokenSpec::User(user) = &main.spec else { panic!("user expected") };
        assert_eq!(user.username.as_deref(), Some("alice@example.com"));
        assert!(
            matches!(&config.tokens[1].spec, TokenSpec::Device { device_id, secret: SecretSource::File(_) } if device_id.as_str() == DEV)
        );
        let TokenSpec::Ground { devices, secret, .. } = &config.tokens[2].spec else { panic!("ground expected") };
        assert_eq!(devices.as_ref().map(Vec::len), Some(1));
        assert_eq!(secret, &SecretSource::Credential("site-a".into()));
        assert_eq!(config.token("site-a").map(TokenConfig::kind), Some(TokenKind::Ground));
    }

    #[test]
    fn unknown_key_names_line_table_and_valid_keys() {
        let text = "[[token]]\nname = \"main\"\nkind = \"user\"\nusename = \"x\"\n";
        let message = expect_error(
            text,
            4,
            &[
                "unknown key \"usename\"",
                "[[token]] \"main\"",
                "valid keys are",
                "username",
                "did you mean \"username\"",
            ],
        );
        assert!(!message.contains('`'), "{message}");
    }

    #[test]
    fn unknown_key_in_a_plain_table_and_at_top_level() {
        expect_error(
            "[daemon]\nbus = \"system\"\nstatedir = \"/x\"\n",
            3,
            &["unknown key \"statedir\"", "[daemon]", "state_dir"],
        );
        expect_error("tokens = []\n", 1, &["unknown key \"tokens\"", "top level", "token"]);
        expect_error("[api.mfa]\nuid = \"x\"\n", 2, &["unknown key \"uid\"", "[api.mfa]", "uid_field"]);
        expect_error("[deamon]\n", 1, &["unknown key \"deamon\"", "daemon"]);
    }

    #[test]
    fn bad_durations_name_the_format() {
        for bad in ["\"90\"", "\"1.5h\"", "\"60 d\"", "\"10w\"", "\"\"", "\"d\"", "\"-5s\""] {
            expect_error(
                &format!("[refresh]\n\nrefresh_token_lifetime = {bad}\n"),
                3,
                &["not a duration", "\"90s\"", "\"60d\""],
            );
        }
        expect_error("[refresh]\nsafety_margin = 60\n", 2, &["need a unit", "\"60s\""]);
        expect_error("[api]\nrequest_timeout = \"5x\"\n", 2, &["not a duration"]);
        expect_error("[refresh]\nrefresh_token_lifetime = \"30m\"\n", 2, &["at least \"1h\""]);
        expect_error("[refresh]\nretry_initial = \"10m\"\nretry_max = \"1m\"\n", 3, &["retry_max", "at least as long"]);
    }

    #[test]
    fn every_duration_has_an_upper_bound_so_no_deadline_can_overflow() {
        // (section, key, the largest value accepted, the same plus one unit)
        let cases = [
            ("api", "connect_timeout = ", "\"5m\"", "\"301s\""),
            ("api", "request_timeout = ", "\"10m\"", "\"601s\""),
            ("refresh", "refresh_token_lifetime = ", "\"3650d\"", "\"3651d\""),
            ("refresh", "safety_margin = ", "\"1d\"", "\"25h\""),
            ("refresh", "warn_before = ", "[\"3650d\"]", "[\"1d\", \"3651d\"]"),
            ("refresh", "retry_initial = ", "\"1d\"", "\"25h\""),
            ("refresh", "retry_max = ", "\"7d\"", "\"8d\""),
        ];
        for (section, key, most, too_long) in cases {
            parse_ok(&format!("[{section}]\n{key}{most}\n"));
            let name = key.trim_end_matches(" = ");
            let message = expect_error(
                &format!("[{section}]\n{key}{too_long}\n"),
                2,
                &[name, "must be at most", most.trim_matches(['[', ']'])],
            );
            assert!(message.contains(&format!("[{section}]")), "{message}");
        }
        // The value that used to abort the daemon at its first retry.
        expect_error("[refresh]\nretry_max = \"99999999999d\"\n", 2, &["retry_max", "must be at most \"7d\""]);
    }

    #[test]
    fn durations_parse_strictly() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("45m"), Ok(Duration::from_secs(2700)));
        assert_eq!(parse_duration("36h"), Ok(Duration::from_secs(129_600)));
        assert_eq!(parse_duration("60d"), Ok(Duration::from_secs(5_184_000)));
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("5S").is_err());
        let config = parse_ok("[refresh]\nwarn_before = [\"1d\", \"14d\", \"1d\"]\n");
        assert_eq!(config.refresh.warn_before, vec![Duration::from_secs(14 * 86400), Duration::from_secs(86400)]);
    }

    #[test]
    fn duplicate_names_point_at_both() {
        let text = format!(
            "[[token]]\nname = \"main\"\nkind = \"user\"\n\n[[token]]\nname = \"main\"\nkind = \"device\"\ndevice_id = \"{DEV}\"\ntoken_file = \"/t\"\n"
        );
        expect_error(&text, 6, &["\"main\" is already used", "line 2", "unique name"]);
    }

    #[test]
    fn bad_names_ids_and_kinds() {
        expect_error("[[token]]\nname = \"my token\"\nkind = \"user\"\n", 2, &["A-Z, a-z, 0-9"]);
        expect_error(
            "[[token]]\nname = \"x\"\nkind = \"admin\"\n",
            3,
            &["\"admin\"", "\"user\", \"device\" or \"ground\""],
        );
        expect_error(
            "[[token]]\nname = \"x\"\nkind = \"device\"\ndevice_id = \"short\"\ntoken_file = \"/t\"\n",
            4,
            &["device id", "24"],
        );
        expect_error("[[token]]\nkind = \"user\"\n", 2, &["no name", "add name"]);
        expect_error("[[token]]\nname = \"x\"\n", 2, &["no kind", "kind = \"user\""]);
        expect_error("[api]\nclient_id = \"we b\"\n", 2, &["client id", "\"web\""]);
    }

    #[test]
    fn kind_specific_keys() {
        // A device key on a user token.
        expect_error(
            &format!("[[token]]\nname = \"u\"\nkind = \"user\"\ndevice_id = \"{DEV}\"\n"),
            4,
            &["\"device_id\" does not apply to a user token", "remove it"],
        );
        // Device without an id.
        expect_error(
            "[[token]]\nname = \"d\"\nkind = \"device\"\ntoken_file = \"/t\"\n",
            2,
            &["no device_id", "add device_id"],
        );
        // Device without a secret, and with both.
        expect_error(
            &format!("[[token]]\nname = \"d\"\nkind = \"device\"\ndevice_id = \"{DEV}\"\n"),
            2,
            &["neither token_file nor credential", "token_file = \"/etc/att-tokend/d.token\""],
        );
        expect_error(
            &format!(
                "[[token]]\nname = \"d\"\nkind = \"device\"\ndevice_id = \"{DEV}\"\ntoken_file = \"/t\"\ncredential = \"d\"\n"
            ),
            6,
            &["keep exactly one"],
        );
        // Ground without an id; devices on a device token.
        expect_error("[[token]]\nname = \"g\"\nkind = \"ground\"\ntoken_file = \"/t\"\n", 2, &["no ground_id"]);
        expect_error(
            &format!(
                "[[token]]\nname = \"d\"\nkind = \"device\"\ndevice_id = \"{DEV}\"\ntoken_file = \"/t\"\ndevices = []\n"
            ),
            6,
            &["\"devices\" does not apply to a device token", "ground"],
        );
        // User: password_file needs username, totp needs password.
        expect_error(
            "[[token]]\nname = \"u\"\nkind = \"user\"\npassword_file = \"/p\"\n",
            4,
            &["password_file needs username", "add username"],
        );
        expect_error(
            "[[token]]\nname = \"u\"\nkind = \"user\"\nusername = \"a\"\ntotp_secret_file = \"/s\"\n",
            5,
            &["totp_secret_file needs", "password_file"],
        );
        // A device listed twice in a ground.
        expect_error(
            &format!(
                "[[token]]\nname = \"g\"\nkind = \"ground\"\nground_id = \"{GROUND}\"\ntoken_file = \"/t\"\ndevices = [\"{DEV}\", \"{DEV}\"]\n"
            ),
            6,
            &["appears twice in devices", "remove the repeat"],
        );
        // Relative paths.
        expect_error(
            "[[token]]\nname = \"u\"\nkind = \"user\"\nusername = \"a\"\npassword_file = \"p.txt\"\n",
            5,
            &["absolute path"],
        );
        expect_error(
            "[[token]]\nname = \"d\"\nkind = \"device\"\ndevice_id = \"abcdefghijklmnopqrstuvwx\"\ncredential = \"../x\"\n",
            5,
            &["LoadCredential"],
        );
    }

    #[test]
    fn bus_values() {
        assert_eq!(parse_ok("[daemon]\nbus = \"session\"\n").daemon.bus, Bus::Session);
        assert_eq!(
            parse_ok("[daemon]\nbus = \"unix:path=/run/x\"\n").daemon.bus,
            Bus::Address("unix:path=/run/x".into())
        );
        expect_error("[daemon]\nbus = \"sytem\"\n", 2, &["\"sytem\"", "\"system\", \"session\" or a D-Bus address"]);
    }

    #[test]
    fn principals_and_url_and_mfa() {
        expect_error("[daemon]\nadmins = { users = [\"a b\"] }\n", 2, &["not a user or group name", "numeric id"]);
        expect_error("[daemon]\nadmins = { users = [-1] }\n", 2, &["not a uid or gid"]);
        expect_error("[daemon]\nadmins = { people = [] }\n", 2, &["unknown key \"people\"", "users, groups"]);
        expect_error("[api]\nurl = \"api.allthingstalk.io\"\n", 2, &["not a base URL", "https://"]);
        expect_error("[api.mfa]\ncode_field = \"\"\n", 2, &["code_field", "non-empty"]);
        assert_eq!(parse_ok("[api]\nurl = \"http://127.0.0.1:8080/\"\n").api.url, "http://127.0.0.1:8080");
    }

    #[test]
    fn an_api_url_the_client_would_refuse_is_refused_with_its_line() {
        // Plain http to the cloud would send passwords in clear: the client refuses it, so the config does, at once.
        expect_error("\n[api]\nurl = \"http://api.allthingstalk.io\"\n", 3, &["plain http", "use https://"]);
        expect_error("[api]\nurl = \"https://user:pw@api.allthingstalk.io\"\n", 2, &["user name or password"]);
        expect_error("[api]\nurl = \"https://api.allthingstalk.io/?x=1\"\n", 2, &["query or fragment"]);
        assert_eq!(parse_ok("[api]\nurl = \"http://localhost:8080\"\n").api.url, "http://localhost:8080");
    }

    #[test]
    fn maintenance_schedules() {
        let config =
            parse_ok("[maintenance]\ntoken_health = \"*/10 * * * *\"\nground_sync = false\nlapse_review = \"off\"\n");
        assert_eq!(config.maintenance.token_health, Schedule::Cron("0 */10 * * * *".into()));
        assert_eq!(config.maintenance.ground_sync, Schedule::Off);
        assert_eq!(config.maintenance.lapse_review, Schedule::Off);
        expect_error("[maintenance]\n\ntoken_health = \"every hour\"\n", 3, &["not a cron expression", "\"off\""]);
        expect_error("[maintenance]\nground_sync = \"0 99 * * * *\"\n", 2, &["not a cron expression"]);
        expect_error("[maintenance]\nlapse_review = true\n", 2, &["false / \"off\""]);
        for default in [&MaintenanceConfig::default().token_health, &MaintenanceConfig::default().ground_sync] {
            let Schedule::Cron(expr) = default else { panic!("default on") };
            assert_eq!(parse_cron(expr).as_deref(), Ok(expr.as_str()));
        }
    }

    #[test]
    fn syntax_errors_have_a_line() {
        expect_error("[daemon]\nbus = system\n", 2, &["TOML"]);
        expect_error("[token]\nname = \"x\"\n", 1, &["[[token]]"]);
    }

    #[test]
    fn root_resolves_and_unknown_names_fail_clearly() {
        let config = parse_ok(
            "[daemon]\nadmins = { users = [\"root\", 4242], groups = [\"root\"] }\n[[token]]\nname = \"main\"\nkind = \"user\"\nreaders = { users = [\"no-such-user-att\"] }\n",
        );
        let admins = config.daemon.admins.resolve(&config.path, "admins").unwrap();
        assert_eq!(admins.uids, BTreeSet::from([0, 4242]));
        assert_eq!(admins.gids, BTreeSet::from([0]));
        let message = resolve_principals(&config).unwrap_err().to_string();
        assert!(message.starts_with(&format!("{FILE}:6: ")), "{message}");
        assert!(message.contains("no user named \"no-such-user-att\"") && message.contains("useradd"), "{message}");
        let groups = Principals { groups: vec![Principal::Name("no-such-group-att".into())], ..Default::default() };
        let message = groups.resolve(Path::new(FILE), "admins").unwrap_err().to_string();
        assert!(message.contains("groupadd"), "{message}");
    }

    #[test]
    fn credentials_need_the_directory() {
        let source = SecretSource::Credential("site-a".into());
        let message = source.resolve_in(None).unwrap_err();
        assert!(message.contains("LoadCredential=site-a") && message.contains("token_file"), "{message}");
        assert_eq!(source.resolve_in(Some(Path::new("/run/c"))).unwrap(), Path::new("/run/c/site-a"));
    }

    #[test]
    fn a_margin_shorter_than_one_request_is_advised_against() {
        assert!(parse_ok("").advice().is_empty(), "the defaults need no advice");
        assert!(parse_ok("[daemon]\ntrust_kernel_time_sync = false\n").advice().is_empty());
        let advice = parse_ok("[refresh]\nsafety_margin = \"10s\"\n").advice();
        assert_eq!(advice.len(), 1, "{advice:?}");
        assert!(advice[0].contains("safety_margin (10 s)") && advice[0].contains("\"20s\""), "{advice:?}");
        let fitted =
            parse_ok("[api]\nconnect_timeout = \"2s\"\nrequest_timeout = \"5s\"\n[refresh]\nsafety_margin = \"10s\"\n");
        assert!(fitted.advice().is_empty(), "shorter timeouts fit the margin");
    }

    #[test]
    fn a_name_inside_a_multi_line_string_is_text_not_the_tables_name() {
        // Found by the config fuzz target: the error named the table after a line inside a string value.
        let text = "[[token]]\npassword = \"\"\"\nname = \"s3cret-Passw0rd\"\n\"\"\"\nkind = \"user\"\n";
        let message = parse(text, Path::new("/etc/att-tokend/config.toml")).unwrap_err().to_string();
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("unknown key \"password\""), "{message}");
        let named = "[[token]]\nname = \"main\"\nkind = \"user\"\nbogus = 1\n";
        let message = parse(named, Path::new("/etc/att-tokend/config.toml")).unwrap_err().to_string();
        assert!(message.contains("[[token]] \"main\""), "{message}");
    }
}
