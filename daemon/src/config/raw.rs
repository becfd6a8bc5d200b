//! The raw, serde-facing shapes of the config's tables and their validation into the built types: where a new
//! key goes (a `[[token]]` key in `token.rs`). Values that can be checked alone are checked while deserializing,
//! so that toml attaches the exact span to the error; the rest is checked here with `file:line`.
//!
//! `[api]` is login-flow's own settings ([`login_flow::ApiConfig`]): its defaults and its rules for the URL, the
//! timeouts and the MFA names are applied here, not restated.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use login_flow::MfaFields;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use token_model::ids::{ClientId, TokenName};
use toml::Spanned;

use super::schema::{
    ApiConfig, Bus, Config, ConfigError, DAY, DEFAULT_API_URL, DEFAULT_STATE_DIR, DaemonConfig, MAX_CONNECT_TIMEOUT,
    MAX_REFRESH_TOKEN_LIFETIME, MAX_REQUEST_TIMEOUT, MAX_RETRY_INITIAL, MAX_RETRY_MAX, MAX_SAFETY_MARGIN,
    MAX_WARN_BEFORE, MaintenanceConfig, Principal, Principals, RefreshConfig, Schedule,
};
use super::schema::{FleetConfig, MAX_SPREAD, REQUEST_COUNT_RANGE};
use super::token::{RawToken, check_token_files};

/// What validation needs to say where a value was written: the text and the file's path.
pub(super) struct Ctx<'a> {
    text: &'a str,
    pub(super) path: &'a Path,
    /// The offset of every line break in `text`: a span's line is found without counting from the start each time
    /// (validation asks for a line per key, thousands with a thousand tokens).
    newlines: Vec<usize>,
}

impl<'a> Ctx<'a> {
    /// The context of validating `text`, read from `path`.
    pub(super) fn new(text: &'a str, path: &'a Path) -> Self {
        let newlines = text.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(at, _)| at).collect();
        Self { text, path, newlines }
    }

    /// A refusal at the line of `span`.
    pub(super) fn at(&self, span: Range<usize>, message: String) -> ConfigError {
        ConfigError::Invalid { path: self.path.to_owned(), line: self.line(span), message }
    }

    /// The line of `span`: as `line_of`, the line breaks before its start, plus one.
    pub(super) fn line(&self, span: Range<usize>) -> usize {
        self.newlines.partition_point(|&at| at < span.start.min(self.text.len())) + 1
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
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
    #[serde(default)]
    maintenance_spread: Window,
    #[serde(default)]
    startup_spread: Window,
    #[serde(default)]
    request_burst: Count,
    #[serde(default)]
    requests_per_minute: Count,
}

/// A spread's window as written (`maintenance_spread`, `startup_spread`): a duration of at most
/// [`MAX_SPREAD`], checked while deserializing so that the message has the key's line. `None`: not written.
#[derive(Default)]
struct Window(Option<Duration>);

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Dur(window) = Dur::deserialize(deserializer)?;
        if window > MAX_SPREAD.0 {
            return Err(de::Error::custom(format!(
                "a spread's window must be at most \"{}\"; write a shorter duration, \"0s\" for none, or remove the \
                 key for the default",
                MAX_SPREAD.1
            )));
        }
        Ok(Window(Some(window)))
    }
}

/// A count of requests as written (`request_burst`, `requests_per_minute`): a whole number in
/// [`REQUEST_COUNT_RANGE`], checked while deserializing so that the message has the key's line. `None`: not written.
#[derive(Default)]
struct Count(Option<u32>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number of requests")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Count, E> {
                let (least, most) = REQUEST_COUNT_RANGE;
                u32::try_from(value).ok().filter(|n| (least..=most).contains(n)).map(|n| Count(Some(n))).ok_or_else(|| {
                    E::custom(format!(
                        "{value} is not a count of requests: write a whole number from {least} to {most}, or remove \
                         the key for the default"
                    ))
                })
            }
        }
        deserializer.deserialize_any(V)
    }
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
pub(super) struct RawPrincipals {
    #[serde(default)]
    users: Vec<Principal>,
    #[serde(default)]
    groups: Vec<Principal>,
}

/// A duration as written (`"90s"`), read by [`parse_duration`].
pub(super) struct Dur(pub(super) Duration);

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

/// Users and groups as written, with their line.
pub(super) fn principals(raw: Option<Spanned<RawPrincipals>>, ctx: &Ctx<'_>) -> Principals {
    match raw {
        None => Principals::default(),
        Some(spanned) => {
            let line = ctx.line(spanned.span());
            let raw = spanned.into_inner();
            Principals { users: raw.users, groups: raw.groups, line }
        }
    }
}

/// An `[api.mfa]` name as written: one non-empty word.
fn word(value: Spanned<String>, key: &str, default: &str, ctx: &Ctx<'_>) -> Result<String, ConfigError> {
    let span = value.span();
    let text = value.into_inner();
    if text.trim().is_empty() || text.chars().any(char::is_whitespace) {
        Err(ctx.at(span, format!("in [api.mfa]: {key} must be a non-empty word; remove it to use \"{default}\"")))
    } else {
        Ok(text)
    }
}

/// A path that must be absolute.
pub(super) fn absolute(
    value: Spanned<PathBuf>,
    key: &str,
    ctx: &Ctx<'_>,
    section: &str,
) -> Result<PathBuf, ConfigError> {
    let span = value.span();
    let path = value.into_inner();
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(ctx.at(span, format!("{section}: {key} {:?} must be an absolute path; write it starting with /", path)))
    }
}

impl RawConfig {
    /// The whole config, validated: each table, then the checks across tokens.
    pub(super) fn validate(self, ctx: &Ctx<'_>) -> Result<Config, ConfigError> {
        let api = self.api.validate(ctx)?;
        let fleet = fleet(&self.daemon);
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
        let config = Config { path: ctx.path.to_owned(), api, daemon, refresh, maintenance, fleet, tokens };
        check_token_files(&config, ctx)?;
        Ok(config)
    }
}

impl RawApi {
    /// `[api]` as login-flow's own settings: its defaults for what is not written, and its checks for what is,
    /// each refusal at the line of the key that caused it.
    fn validate(self, ctx: &Ctx<'_>) -> Result<ApiConfig, ConfigError> {
        let mut client = match self.url {
            None => login_flow::ApiConfig::default(),
            Some(url) => {
                let span = url.span();
                let text = url.into_inner();
                login_flow::ApiConfig::new(&text).map_err(|error| ctx.at(span, url_problem(&text, error)))?
            }
        };
        if let Some(client_id) = self.client_id {
            client.client_id = client_id;
        }
        set(&mut client, self.connect_timeout, ctx, |client, value| {
            client.connect_timeout = bound(value, "[api]", "connect_timeout", MAX_CONNECT_TIMEOUT, ctx)?;
            Ok(())
        })?;
        set(&mut client, self.request_timeout, ctx, |client, value| {
            client.request_timeout = bound(value, "[api]", "request_timeout", MAX_REQUEST_TIMEOUT, ctx)?;
            Ok(())
        })?;
        let defaults = MfaFields::default();
        let mfa = self.mfa;
        set(&mut client, mfa.grant_type, ctx, |client, value| {
            client.mfa.grant_type = word(value, "grant_type", &defaults.grant_type, ctx)?;
            Ok(())
        })?;
        set(&mut client, mfa.uid_field, ctx, |client, value| {
            client.mfa.uid_field = word(value, "uid_field", &defaults.uid_field, ctx)?;
            Ok(())
        })?;
        set(&mut client, mfa.user_field, ctx, |client, value| {
            client.mfa.user_field = word(value, "user_field", &defaults.user_field, ctx)?;
            Ok(())
        })?;
        set(&mut client, mfa.code_field, ctx, |client, value| {
            client.mfa.code_field = word(value, "code_field", &defaults.code_field, ctx)?;
            Ok(())
        })?;
        Ok(ApiConfig::new(client))
    }
}

/// Sets one written `[api]` key on login-flow's settings with `apply`, then lets login-flow check them, so that
/// its refusal is told at that key's line.
fn set<T>(
    client: &mut login_flow::ApiConfig,
    value: Option<Spanned<T>>,
    ctx: &Ctx<'_>,
    apply: impl FnOnce(&mut login_flow::ApiConfig, Spanned<T>) -> Result<(), ConfigError>,
) -> Result<(), ConfigError> {
    let Some(value) = value else { return Ok(()) };
    let span = value.span();
    apply(client, value)?;
    client.validate().map_err(|error| ctx.at(span, format!("in [api]: {}", problem(error))))
}

/// Why login-flow refused `[api] url`: its own reason, or, for a value not even shaped like a base URL, how one
/// is written.
fn url_problem(text: &str, error: login_flow::LoginError) -> String {
    let shaped = ["https://", "http://"]
        .iter()
        .filter_map(|scheme| text.strip_prefix(scheme))
        .any(|rest| !rest.split('/').next().unwrap_or("").is_empty());
    if shaped {
        format!("in [api]: {}", problem(error))
    } else {
        format!(
            "in [api]: url {text:?} is not a base URL; write it like \"{DEFAULT_API_URL}\" (https://<instance>.allthingstalk.io)"
        )
    }
}

/// What is wrong in login-flow's words, without its wrapping.
fn problem(error: login_flow::LoginError) -> String {
    match error {
        login_flow::LoginError::BadConfig { problem } => problem,
        other => other.to_string(),
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

/// The fleet behaviour's keys of `[daemon]`, with their defaults.
fn fleet(daemon: &RawDaemon) -> FleetConfig {
    let defaults = FleetConfig::default();
    FleetConfig {
        maintenance_spread: daemon.maintenance_spread.0.unwrap_or(defaults.maintenance_spread),
        startup_spread: daemon.startup_spread.0.unwrap_or(defaults.startup_spread),
        request_burst: daemon.request_burst.0.unwrap_or(defaults.request_burst),
        requests_per_minute: daemon.requests_per_minute.0.unwrap_or(defaults.requests_per_minute),
    }
}

/// A duration key's value, refused with `file:line` when it is longer than `most` (the upper bounds below).
pub(super) fn bound(
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
