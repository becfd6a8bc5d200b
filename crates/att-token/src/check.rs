//! `att-token check`: token health in the monitoring-plugins convention, for Nagios, Icinga, Zabbix and Checkmk.
//!
//! One line on stdout (`ATT-TOKEN <STATUS> - <reason> | <performance data>`) and the exit status 0 OK,
//! 1 WARNING, 2 CRITICAL or 3 UNKNOWN, whatever happens: a bad argument, an unreachable daemon or a name that is
//! not configured are UNKNOWN, never att-token's usual statuses. The facts come from what the daemon already
//! serves (`ListTokens` and the token objects' properties); [`evaluate`] turns them into the line, purely, with
//! `now` as a parameter.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use att_token::cli::CheckArgs;
use token_agent::{Bus, TokenAgentProxy, TokenProxy};
use zbus::proxy::CacheProperties;

/// The prefix of every status line, naming the service checked.
const SERVICE: &str = "ATT-TOKEN";
/// A reason quoted from the daemon (a token's `LastError`) is cut to this many characters.
const MAX_QUOTE: usize = 80;

/// A monitoring plugin's status, which is also its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Status {
    /// 0: all is well.
    Ok = 0,
    /// 1: someone should act soon.
    Warning = 1,
    /// 2: a token cannot be served.
    Critical = 2,
    /// 3: the check could not find out.
    Unknown = 3,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }
}

/// What the daemon says of one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenFacts {
    /// The token's name.
    pub(crate) name: String,
    /// `user`, `device` or `ground`.
    pub(crate) kind: String,
    /// The `State` property.
    pub(crate) state: String,
    /// When the served token lapses (Unix seconds; 0 for none or no expiry).
    pub(crate) expires_at: i64,
    /// When the refresh token lapses (Unix seconds; 0 when none or not a user token).
    pub(crate) refresh_expires_at: i64,
    /// The `AttentionNeeded` flag.
    pub(crate) attention: bool,
    /// The `LastError` property (empty when none).
    pub(crate) last_error: String,
}

/// The status and the line to print for these tokens, at `now`, warning `warn_days` before a refresh token lapses.
pub(crate) fn evaluate(tokens: &[TokenFacts], warn_days: u32, now: i64) -> (Status, String) {
    if tokens.is_empty() {
        return unknown("no token you may read is configured; run the check as a reader of the tokens (or root)");
    }
    let warn_seconds = i64::from(warn_days) * 86_400;
    let mut worst = Status::Ok;
    let mut problems: Vec<(Status, String)> = Vec::new();
    let mut perfdata = String::new();
    let (mut warnings, mut criticals) = (0, 0);
    for token in tokens {
        let user = token.kind == "user";
        let mut status = Status::Ok;
        let mut said = Vec::new();
        let cannot_serve = match token.state.as_str() {
            "needs-login" => Some(format!("needs a login (att-token login {})", token.name)),
            "expired" => Some("its token expired and the daemon cannot renew it".to_owned()),
            "revoked" => Some("the cloud rejects it (revoked or deleted)".to_owned()),
            _ if user && token.expires_at <= now => Some("no valid token".to_owned()),
            _ => None,
        };
        if let Some(reason) = cannot_serve {
            status = Status::Critical;
            said.push(reason);
        }
        if user && token.refresh_expires_at > 0 && status == Status::Ok {
            let left = token.refresh_expires_at - now;
            if left < warn_seconds {
                status = Status::Warning;
                said.push(format!("refresh token lapses {}", lapses_in(left)));
            }
        }
        // A token that cannot be served needs attention anyway: its reason says enough.
        if token.attention && status != Status::Critical {
            status = Status::Warning;
            let error = quote(&token.last_error);
            said.push(if error.is_empty() {
                "needs attention".to_owned()
            } else {
                format!("needs attention: {error}")
            });
        }
        match status {
            Status::Warning => warnings += 1,
            Status::Critical => criticals += 1,
            Status::Ok | Status::Unknown => {}
        }
        worst = worst.max(status);
        if !said.is_empty() {
            problems.push((status, format!("{}: {}", token.name, said.join(", "))));
        }
        if user {
            if token.refresh_expires_at > 0 {
                let days = (token.refresh_expires_at - now).max(0) as f64 / 86_400.0;
                let _ = write!(perfdata, " {}={days:.2};{warn_days}:;0:;0", label(&token.name, "refresh_days"));
            }
            let seconds = if token.expires_at > 0 { (token.expires_at - now).max(0) } else { 0 };
            let _ = write!(perfdata, " {}={seconds}s;;;0", label(&token.name, "access_seconds"));
        }
    }
    // The worst first: a line cut short by the monitoring system keeps what matters.
    problems.sort_by_key(|problem| std::cmp::Reverse(problem.0));
    let count = match tokens.len() {
        1 => "1 token".to_owned(),
        n => format!("{n} tokens"),
    };
    let summary = if problems.is_empty() {
        format!("{count} served")
    } else {
        let listed: Vec<String> = problems.into_iter().map(|(_, text)| text).collect();
        format!("{}; {count}", listed.join("; "))
    };
    let totals = format!("tokens={};;;0 tokens_warning={warnings};;;0 tokens_critical={criticals};;;0", tokens.len());
    (worst, format!("{SERVICE} {} - {summary} | {totals}{perfdata}", worst.label()))
}

/// The UNKNOWN status with its line.
pub(crate) fn unknown(reason: &str) -> (Status, String) {
    (Status::Unknown, format!("{SERVICE} UNKNOWN - {}", clean(reason)))
}

/// `in 3 days`, `in 1 day`, `in 5 hours`, `within the hour`, or `now` for a lapsed one.
fn lapses_in(seconds: i64) -> String {
    match seconds {
        ..=0 => "now".to_owned(),
        1..3600 => "within the hour".to_owned(),
        3600..7200 => "in 1 hour".to_owned(),
        7200..86_400 => format!("in {} hours", seconds / 3600),
        86_400..172_800 => "in 1 day".to_owned(),
        _ => format!("in {} days", seconds / 86_400),
    }
}

/// A performance-data label: `NAME_what`, in single quotes unless it is plain (token names are `[A-Za-z0-9_-]`,
/// which needs none; anything else is quoted with its quotes and `=` replaced).
fn label(name: &str, what: &str) -> String {
    let text = format!("{name}_{what}");
    if text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        text
    } else {
        format!("'{}'", text.replace(['\'', '=', '|'], "_"))
    }
}

/// Text from the daemon made safe for the one status line (no line break, no `|`), cut to [`MAX_QUOTE`].
fn quote(text: &str) -> String {
    let mut clean = clean(text);
    if clean.chars().count() > MAX_QUOTE {
        clean = clean.chars().take(MAX_QUOTE - 1).collect::<String>() + "…";
    }
    clean
}

/// Text made safe for the status line, whole.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '|' {
                '/'
            } else if c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Whether the command line asks for `check` (its first word after the options of `att-token` itself), so that a
/// usage error is reported the monitoring way.
pub(crate) fn is_check(args: impl IntoIterator<Item = OsString>) -> bool {
    let mut args = args.into_iter().skip(1);
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else { return false };
        if text == "--bus" {
            args.next();
        } else if !text.starts_with('-') {
            return text == "check";
        }
    }
    false
}

/// Reports a usage error of `check`: UNKNOWN on stdout, clap's full message on stderr. Help and version are
/// printed as usual.
pub(crate) fn usage_error(error: &clap::Error) -> u8 {
    if !error.use_stderr() {
        error.exit();
    }
    let rendered = error.render().to_string();
    let first = rendered.lines().next().unwrap_or("bad arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let (status, line) = unknown(&format!("bad arguments: {first}; see att-token check --help"));
    eprint!("{rendered}");
    finish(status, &line)
}

/// Runs the check against the daemon on `bus`; prints the line and returns the exit status.
pub(crate) async fn run(bus: &Bus, args: &CheckArgs) -> u8 {
    let (status, line) = match tokio::time::timeout(Duration::from_secs(args.timeout), gather(bus, &args.names)).await {
        Ok(Ok(tokens)) => evaluate(&tokens, args.warn, now_unix()),
        Ok(Err(reason)) => unknown(&reason),
        Err(_) => unknown(&format!("att-tokend did not answer within {} s (--timeout)", args.timeout)),
    };
    finish(status, &line)
}

fn finish(status: Status, line: &str) -> u8 {
    let mut out = std::io::stdout().lock();
    // A monitoring agent that closed the pipe gets the status alone.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    status as u8
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The facts of the tokens named (every readable one when `names` is empty), or why they cannot be had.
async fn gather(bus: &Bus, names: &[String]) -> Result<Vec<TokenFacts>, String> {
    let connection = token_agent::connect(bus)
        .await
        .map_err(|e| format!("cannot connect to the {bus} bus: {e}; is D-Bus running?"))?;
    let daemon_down = |e: zbus::Error| {
        format!(
            "cannot ask att-tokend ({}); is it running? (systemctl status att-tokend)",
            token_agent::error_message(&e)
        )
    };
    let agent = TokenAgentProxy::new(&connection).await.map_err(daemon_down)?;
    let listed = agent.list_tokens().await.map_err(daemon_down)?;
    let chosen: Vec<(String, String, i64, String, bool)> = if names.is_empty() {
        listed
    } else {
        let mut chosen = Vec::with_capacity(names.len());
        for name in names {
            let Some(found) = listed.iter().find(|t| &t.0 == name) else {
                return Err(format!(
                    "no token named {name:?} that this user may read; `att-token list` shows the names you may read"
                ));
            };
            if !chosen.iter().any(|t: &(String, String, i64, String, bool)| &t.0 == name) {
                chosen.push(found.clone());
            }
        }
        chosen
    };
    let mut facts = Vec::with_capacity(chosen.len());
    for (name, kind, expires_at, state, attention) in chosen {
        let proxy = TokenProxy::builder(&connection)
            .path(token_agent::token_object_path(&name))
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(daemon_down)?;
        let unreadable = |what: &str, e: zbus::Error| {
            format!("cannot read {what} of token {name:?}: {}", token_agent::error_message(&e))
        };
        let refresh_expires_at = if kind == "user" {
            proxy.refresh_token_expires_at().await.map_err(|e| unreadable("RefreshTokenExpiresAt", e))?
        } else {
            0
        };
        let last_error = if attention { proxy.last_error().await.unwrap_or_default() } else { String::new() };
        facts.push(TokenFacts { name, kind, state, expires_at, refresh_expires_at, attention, last_error });
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn user(name: &str, state: &str, access_left: i64, refresh_left: i64) -> TokenFacts {
        TokenFacts {
            name: name.into(),
            kind: "user".into(),
            state: state.into(),
            expires_at: if access_left == 0 { 0 } else { NOW + access_left },
            refresh_expires_at: if refresh_left == 0 { 0 } else { NOW + refresh_left },
            attention: false,
            last_error: String::new(),
        }
    }

    fn device(name: &str, state: &str) -> TokenFacts {
        TokenFacts {
            name: name.into(),
            kind: "device".into(),
            state: state.into(),
            expires_at: 0,
            refresh_expires_at: 0,
            attention: false,
            last_error: String::new(),
        }
    }

    #[test]
    fn all_served_is_ok_with_performance_data() {
        let tokens = [user("main", "valid", 3300, 40 * DAY + DAY / 2), device("sensor-7", "valid")];
        let (status, line) = evaluate(&tokens, 7, NOW);
        assert_eq!(status, Status::Ok);
        assert_eq!(
            line,
            "ATT-TOKEN OK - 2 tokens served | tokens=2;;;0 tokens_warning=0;;;0 tokens_critical=0;;;0 \
             main_refresh_days=40.50;7:;0:;0 main_access_seconds=3300s;;;0"
        );
    }

    #[test]
    fn a_lapsing_refresh_token_or_attention_warns() {
        let tokens = [user("main", "valid", 3300, 3 * DAY + 600), device("sensor-7", "valid")];
        let (status, line) = evaluate(&tokens, 7, NOW);
        assert_eq!(status, Status::Warning);
        assert!(line.starts_with("ATT-TOKEN WARNING - main: refresh token lapses in 3 days; 2 tokens | "), "{line}");
        assert!(line.contains(" tokens_warning=1;;;0 ") && line.contains(" main_refresh_days=3.01;7:;0:;0"), "{line}");
        assert_eq!(evaluate(&tokens, 3, NOW).0, Status::Ok, "--warn 3 does not warn 3 days and 10 minutes ahead");

        let mut flagged = device("site-a", "valid");
        flagged.attention = true;
        flagged.last_error = "the ground sync failed | twice\nretrying".into();
        let (status, line) = evaluate(&[flagged], 7, NOW);
        assert_eq!(status, Status::Warning);
        assert!(line.contains("site-a: needs attention: the ground sync failed / twice retrying; 1 token |"), "{line}");
        assert_eq!(line.matches('|').count(), 1, "{line}");
    }

    #[test]
    fn a_token_that_cannot_be_served_is_critical_and_listed_first() {
        for (token, says) in [
            (user("main", "needs-login", 0, 0), "main: needs a login (att-token login main)"),
            (user("main", "expired", 0, 20 * DAY), "main: its token expired"),
            (device("main", "revoked"), "main: the cloud rejects it"),
            (user("main", "refreshing", 0, 20 * DAY), "main: no valid token"),
        ] {
            let tokens = [user("other", "valid", 3300, DAY), token];
            let (status, line) = evaluate(&tokens, 7, NOW);
            assert_eq!(status, Status::Critical, "{line}");
            assert!(line.starts_with(&format!("ATT-TOKEN CRITICAL - {says}")), "{line}");
            assert!(line.contains("; other: refresh token lapses in 1 day; 2 tokens |"), "{line}");
            assert!(line.contains(" tokens_critical=1;;;0 "), "{line}");
        }
    }

    #[test]
    fn nothing_to_check_is_unknown() {
        let (status, line) = evaluate(&[], 7, NOW);
        assert_eq!(status, Status::Unknown);
        assert!(line.starts_with("ATT-TOKEN UNKNOWN - no token you may read"), "{line}");
        assert_eq!(lapses_in(5 * 3600), "in 5 hours");
        assert_eq!(lapses_in(1800), "within the hour");
        assert_eq!(lapses_in(-5), "now");
        assert_eq!(label("main", "refresh_days"), "main_refresh_days");
        assert_eq!(label("a b", "x"), "'a b_x'");
    }

    #[test]
    fn the_subcommand_is_found_after_global_options() {
        let argv = |words: &[&str]| words.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(is_check(argv(&["att-token", "check", "--bogus"])));
        assert!(is_check(argv(&["att-token", "--bus", "session", "check"])));
        assert!(is_check(argv(&["att-token", "--bus=sytem", "check", "main"])));
        assert!(!is_check(argv(&["att-token", "get", "check"])));
        assert!(!is_check(argv(&["att-token", "--bus", "check", "get", "main"])));
        assert!(!is_check(argv(&["att-token"])));
    }
}
