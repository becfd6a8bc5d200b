//! The built configuration: the types the rest of the daemon reads (`Config`, `ApiConfig`, `DaemonConfig`, ...),
//! their defaults and bounds, and the error every stage reports with. This is the schema a reader looks at; how
//! each table is read from text is in `raw.rs` and `token.rs`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use token_model::ids::{DeviceId, GroundId, TokenKind, TokenName};

/// Where the daemon looks for its configuration unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/att-tokend/config.toml";
/// Where user sessions are kept unless `[daemon] state_dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/att-tokend";
/// The AllThingsTalk REST base URL unless `[api] url` says otherwise (login-flow's default).
pub const DEFAULT_API_URL: &str = login_flow::config::DEFAULT_BASE_URL;

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
    /// `[daemon]`'s fleet behaviour: how this gateway keeps out of the others' way at the cloud.
    pub fleet: FleetConfig,
    /// `[[token]]` tables, in file order; names are unique.
    pub tokens: Vec<TokenConfig>,
}

/// `[api]`: where and how to talk to AllThingsTalk. It is login-flow's own settings ([`login_flow::ApiConfig`], read
/// through `Deref`: `client_id`, `connect_timeout`, `request_timeout`, `mfa`), so their defaults and the rules of
/// the URL are login-flow's, applied when the file is parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiConfig(login_flow::ApiConfig);

impl ApiConfig {
    /// `[api]` holding settings login-flow has checked.
    pub(crate) fn new(client: login_flow::ApiConfig) -> Self {
        Self(client)
    }

    /// The settings as login-flow takes them.
    pub fn client(&self) -> &login_flow::ApiConfig {
        &self.0
    }

    /// The REST base URL exactly as requests are sent to it (scheme and host in lower case, a default port
    /// dropped), without a trailing `/`: so different spellings of one instance are one URL, which is what a
    /// saved session records as the instance it was made with.
    pub fn url(&self) -> &str {
        self.0.base_url().as_str().trim_end_matches('/')
    }
}

impl std::ops::Deref for ApiConfig {
    type Target = login_flow::ApiConfig;
    fn deref(&self) -> &login_flow::ApiConfig {
        &self.0
    }
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

/// Where the machine id is read from.
pub const DEFAULT_MACHINE_ID_FILE: &str = "/etc/machine-id";

/// The fleet behaviour's keys of `[daemon]`: how one gateway among many keeps out of the others' way at the cloud
/// (README's "Fleet behaviour").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// The window over which each periodic job's requests are spread after the job fires (`maintenance_spread`),
    /// default 15 minutes; zero: at once.
    pub maintenance_spread: Duration,
    /// The window over which a session's first request after a start is spread (`startup_spread`), default 2
    /// minutes; zero: at once.
    pub startup_spread: Duration,
    /// Cloud requests the daemon may send at once (`request_burst`), default 10.
    pub request_burst: u32,
    /// Cloud requests a minute once the burst is spent (`requests_per_minute`), default 30.
    pub requests_per_minute: u32,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            maintenance_spread: token_model::fleet::DEFAULT_MAINTENANCE_SPREAD,
            startup_spread: token_model::fleet::DEFAULT_STARTUP_SPREAD,
            request_burst: token_model::fleet::DEFAULT_REQUEST_BURST,
            requests_per_minute: token_model::fleet::DEFAULT_REQUESTS_PER_MINUTE,
        }
    }
}

/// Seconds in a day.
pub(super) const DAY: u64 = 24 * 3600;

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
/// `[daemon] maintenance_spread` and `startup_spread`: at most 6 hours, the period of the default ground sync.
pub(crate) const MAX_SPREAD: (Duration, &str) = (Duration::from_secs(6 * 3600), "6h");
/// `[daemon] request_burst` and `requests_per_minute`: 1 to 60,000 requests (at once, a minute).
pub(crate) const REQUEST_COUNT_RANGE: (u32, u32) = (1, 60_000);

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

impl Principals {
    /// No user and no group is named.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
}

/// One user or group, as written in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A name to look up in the user or group database.
    Name(String),
    /// A numeric uid or gid, used as is.
    Id(u32),
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

    /// The token with this name.
    pub fn token(&self, name: &str) -> Option<&TokenConfig> {
        self.tokens.iter().find(|t| t.name.as_str() == name)
    }
}
