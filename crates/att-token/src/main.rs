//! `att-token`: the command-line client of att-tokend. See `att-token --help` and att-token(1).
//!
//! `exec` (run a program with the token in its environment), `proxy` (an HTTP proxy that adds the token, from
//! the token-proxy crate), `check` (a monitoring plugin's status line and exit status) and `metrics` (the daemon's
//! numbers in the Prometheus text format) live in their own modules. Only this program uses token-proxy: the
//! daemon never links it.

mod check;
mod exec;
mod metrics;
mod proxy;

use std::fmt;
use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use att_token::cli::{ForDeviceArgs, GetArgs, ListArgs, LoginArgs, MetricsArgs, TokenArgs, TokenCommand};
use clap::Parser;
use futures_util::StreamExt;
use token_agent::{Bus, Exit, TokenAgentProxy, TokenProxy};
use token_model::secret::{ExposeSecret, MfaCode};
use zeroize::Zeroizing;

/// A failure with the exit status it maps to; any other error exits with 1.
#[derive(Debug)]
struct Failure {
    exit: Exit,
    message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

fn fail(exit: Exit, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure { exit, message: message.into() })
}

/// Turns a method call's error into a [`Failure`] with the daemon's message and the matching exit status.
fn call_failed(error: zbus::Error) -> anyhow::Error {
    let exit = Exit::for_zbus_error(&error);
    let mut message = token_agent::error_message(&error);
    if exit == Exit::NoDaemon {
        message.push_str(
            "; is att-tokend running? (systemctl status att-tokend) For another bus pass --bus or set ATT_TOKEN_BUS",
        );
    }
    fail(exit, message)
}

fn is_mfa_required(error: &zbus::Error) -> bool {
    token_agent::error_name(error).is_some_and(|name| name == format!("{}MfaRequired", token_agent::ERROR_PREFIX))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Tokens pass through this process (and `exec` and `proxy` hold them for long): no core dump of it, no reading
    // of its memory by other processes of the user (`PR_SET_DUMPABLE` 0, which `execve` does not pass on). Not the
    // core size limit, which `exec`'s program would inherit.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!(
            "att-token: warning: could not mark the process undumpable: {e}; a crash could write a token to a core dump"
        );
    }
    let args = match TokenArgs::try_parse() {
        Ok(args) => args,
        // A monitoring agent reads any other status than 0-3 as a broken plugin: usage errors are UNKNOWN (3).
        Err(error) if check::is_check(std::env::args_os()) => return ExitCode::from(check::usage_error(&error)),
        Err(error) => error.exit(),
    };
    if let TokenCommand::Check(check) = &args.command {
        return ExitCode::from(check::run(&args.bus, check).await);
    }
    match run(args).await {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            let code = match error.downcast_ref::<exec::ChildFailure>() {
                Some(child) => child.code,
                None => error.downcast_ref::<Failure>().map_or(Exit::Other, |f| f.exit).code(),
            };
            eprintln!("att-token: {error:#}");
            ExitCode::from(code)
        }
    }
}

async fn run(args: TokenArgs) -> anyhow::Result<u8> {
    let connection = token_agent::connect(&args.bus).await.map_err(|error| {
        let hint = match &args.bus {
            Bus::System => "is D-Bus running? (systemctl status dbus)".to_owned(),
            Bus::Session => "is a session bus running? (DBUS_SESSION_BUS_ADDRESS must be set)".to_owned(),
            Bus::Address(_) => "check the address given with --bus or ATT_TOKEN_BUS".to_owned(),
        };
        fail(Exit::NoDaemon, format!("cannot connect to the {} bus: {error}; {hint}", args.bus))
    })?;
    let agent = TokenAgentProxy::new(&connection).await.map_err(call_failed)?;
    match args.command {
        TokenCommand::Exec(exec) => return exec::run(&args.bus, agent, exec).await,
        TokenCommand::Proxy(proxy) => return proxy::run(&args.bus, connection, proxy).await,
        other => plain(&connection, &agent, other).await.map(|()| 0),
    }
}

async fn plain(
    connection: &zbus::Connection,
    agent: &TokenAgentProxy<'_>,
    command: TokenCommand,
) -> anyhow::Result<()> {
    match command {
        TokenCommand::Get(get) => get_token(agent, get).await,
        TokenCommand::ForDevice(device) => for_device(agent, device).await,
        TokenCommand::List(list) => list_tokens(connection, agent, list).await,
        TokenCommand::Login(login) => log_in(agent, login).await,
        TokenCommand::Refresh(arg) => {
            let expires_at = agent.refresh(&arg.name).await.map_err(call_failed)?;
            println!("refreshed {}; the access token is valid until {}", arg.name, show_time(expires_at));
            Ok(())
        }
        TokenCommand::Logout(arg) => {
            agent.logout(&arg.name).await.map_err(call_failed)?;
            println!("logged out {}; run `att-token login {}` to log in again", arg.name, arg.name);
            Ok(())
        }
        TokenCommand::Watch => watch(agent).await,
        TokenCommand::Metrics(args) => print_metrics(connection, agent, args).await,
        TokenCommand::Exec(_) | TokenCommand::Proxy(_) => unreachable!("handled by run"),
        TokenCommand::Check(_) => unreachable!("handled by main"),
    }
}

fn print_secret(token: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{token}").and_then(|()| out.flush()).context("cannot write the token to stdout")
}

async fn get_token(agent: &TokenAgentProxy<'_>, args: GetArgs) -> anyhow::Result<()> {
    let (token, _expires_at) = match args.min_valid {
        Some(seconds) => agent.get_token_valid_for(&args.name, seconds).await,
        None => agent.get_token(&args.name).await,
    }
    .map_err(call_failed)?;
    let token = Zeroizing::new(token);
    print_secret(&token)
}

async fn for_device(agent: &TokenAgentProxy<'_>, args: ForDeviceArgs) -> anyhow::Result<()> {
    let (name, token, _expires_at) = agent.get_token_for_device(&args.device_id).await.map_err(call_failed)?;
    let token = Zeroizing::new(token);
    if io::stderr().is_terminal() {
        eprintln!("att-token: using token {name}");
    }
    print_secret(&token)
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A duration in seconds as a short human text: `45s`, `12m`, `3h 05m`, `12d 4h`.
fn human(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

fn time_left(expires_at: i64, now: i64) -> String {
    if expires_at == 0 {
        "no expiry".to_owned()
    } else if expires_at <= now {
        "expired".to_owned()
    } else {
        human(expires_at - now)
    }
}

fn next_refresh(at: Option<i64>, now: i64) -> String {
    match at {
        None | Some(0) => "-".to_owned(),
        Some(at) if at <= now => "due now".to_owned(),
        Some(at) => format!("in {}", human(at - now)),
    }
}

fn show_time(unix: i64) -> String {
    if unix <= 0 {
        return "no known expiry".to_owned();
    }
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs()))
}

async fn list_tokens(connection: &zbus::Connection, agent: &TokenAgentProxy<'_>, args: ListArgs) -> anyhow::Result<()> {
    let tokens = agent.list_tokens().await.map_err(call_failed)?;
    // An older daemon has no such property: nothing to say then.
    if agent.session_storage().await.is_ok_and(|storage| storage == "unsealed") {
        eprintln!(
            "att-token: note: att-tokend stores user sessions unsealed (no state key is configured), so refresh \
             tokens are on disk in clear; see the README, \"Sealed sessions\""
        );
    }
    let now = now_unix();
    let mut rows = Vec::with_capacity(tokens.len());
    for (name, kind, expires_at, state, attention) in tokens {
        let (next, last_error) = token_details(connection, &name).await;
        rows.push((name, kind, expires_at, state, attention, next, last_error));
    }
    if args.json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(name, kind, expires_at, state, attention, next, last_error)| {
                serde_json::json!({
                    "name": name,
                    "kind": kind,
                    "state": state,
                    "expires_at": expires_at,
                    "next_refresh_at": next,
                    "attention_needed": attention,
                    "last_error": last_error,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list).context("cannot encode the list as JSON")?);
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!(
            "att-token: no token you may read is configured; add [[token]] tables or ask an admin to add you as a reader"
        );
        return Ok(());
    }
    let table: Vec<[String; 6]> = rows
        .iter()
        .map(|(name, kind, expires_at, state, attention, next, _)| {
            [
                name.clone(),
                kind.clone(),
                state.clone(),
                time_left(*expires_at, now),
                next_refresh(*next, now),
                if *attention { "yes".to_owned() } else { "-".to_owned() },
            ]
        })
        .collect();
    let header = ["NAME", "KIND", "STATE", "TIME LEFT", "NEXT REFRESH", "ATTENTION"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &table {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = io::stdout().lock();
    for row in std::iter::once(&header).chain(&table) {
        let line: Vec<String> = row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        writeln!(out, "{}", line.join("  ").trim_end()).context("cannot write to stdout")?;
    }
    Ok(())
}

/// The proxy of the token `name`'s object, if one can be made.
async fn token_object<'a>(connection: &'a zbus::Connection, name: &str) -> Option<TokenProxy<'a>> {
    TokenProxy::builder(connection).path(token_agent::token_object_path(name)).build().await.ok()
}

/// A token object's `NextRefreshAt` and `LastError` (`None` when the object or property cannot be read).
async fn token_details(connection: &zbus::Connection, name: &str) -> (Option<i64>, Option<String>) {
    let Some(proxy) = token_object(connection, name).await else { return (None, None) };
    (proxy.next_refresh_at().await.ok(), proxy.last_error().await.ok())
}

async fn print_metrics(
    connection: &zbus::Connection,
    agent: &TokenAgentProxy<'_>,
    args: MetricsArgs,
) -> anyhow::Result<()> {
    let counts = agent.get_metrics().await.map_err(call_failed)?;
    let mut tokens = Vec::new();
    for (name, kind, expires_at, state, _) in agent.list_tokens().await.map_err(call_failed)? {
        let refresh_expires_at = refresh_token_expires_at(connection, &name).await;
        tokens.push((name, kind, state, expires_at, refresh_expires_at));
    }
    let text = metrics::render(&counts, &tokens, now_unix());
    match args.textfile {
        Some(dir) => metrics::write_textfile(&dir, &text).map(|_| ()),
        None => {
            let mut out = io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush()).context("cannot write to stdout")
        }
    }
}

/// A token object's `RefreshTokenExpiresAt`; 0 (unknown) when it cannot be read.
async fn refresh_token_expires_at(connection: &zbus::Connection, name: &str) -> i64 {
    let Some(proxy) = token_object(connection, name).await else { return 0 };
    proxy.refresh_token_expires_at().await.unwrap_or(0)
}

fn read_stdin_line(what: &str) -> anyhow::Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    io::stdin().lock().read_line(&mut line).with_context(|| format!("cannot read the {what} from stdin"))?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
    Ok(trimmed)
}

fn prompt_hidden(prompt: &str, what: &str, flag: &str) -> anyhow::Result<Zeroizing<String>> {
    rpassword::prompt_password(prompt).map(Zeroizing::new).map_err(|error| {
        fail(Exit::Usage, format!("cannot prompt for the {what} ({error}); run att-token in a terminal or pass {flag}"))
    })
}

fn parse_code(text: &str) -> anyhow::Result<MfaCode> {
    MfaCode::parse(text).map_err(|error| fail(Exit::Usage, error.to_string()))
}

async fn log_in(agent: &TokenAgentProxy<'_>, args: LoginArgs) -> anyhow::Result<()> {
    let username = match args.username {
        Some(username) => username,
        None if args.password_stdin => {
            return Err(fail(Exit::Usage, "--password-stdin needs --username (stdin holds the password)"));
        }
        None => {
            eprint!("Username: ");
            io::stderr().flush().ok();
            let line = read_stdin_line("username")?;
            line.trim().to_owned()
        }
    };
    if username.is_empty() {
        return Err(fail(
            Exit::Usage,
            "the username is empty; type the account's e-mail or user name, or pass --username",
        ));
    }
    let password = if args.password_stdin {
        read_stdin_line("password")?
    } else {
        prompt_hidden(&format!("Password for {username}: "), "password", "--password-stdin")?
    };
    if password.is_empty() {
        return Err(fail(Exit::Usage, "the password is empty; type it at the prompt or give it on stdin"));
    }
    let code = args.code.as_deref().map(parse_code).transpose()?;
    let first = agent
        .login(&args.name, &username, password.expose_secret_str(), code.as_ref().map_or("", |c| c.expose_secret()))
        .await;
    let expires_at = match first {
        Ok(expires_at) => expires_at,
        Err(error) if code.is_none() && is_mfa_required(&error) => {
            let typed = prompt_hidden("MFA code from your authenticator app: ", "MFA code", "--code")?;
            let code = parse_code(&typed)?;
            agent
                .login(&args.name, &username, password.expose_secret_str(), code.expose_secret())
                .await
                .map_err(call_failed)?
        }
        Err(error) => return Err(call_failed(error)),
    };
    println!("logged in {}; the access token is valid until {}", args.name, show_time(expires_at));
    Ok(())
}

/// `Zeroizing<String>` as `&str`, named so password call sites stand out.
trait ExposeStr {
    fn expose_secret_str(&self) -> &str;
}

impl ExposeStr for Zeroizing<String> {
    fn expose_secret_str(&self) -> &str {
        self.as_str()
    }
}

async fn watch(agent: &TokenAgentProxy<'_>) -> anyhow::Result<()> {
    let mut changed = agent.receive_token_changed().await.map_err(call_failed)?;
    let mut attention = agent.receive_attention_needed().await.map_err(call_failed)?;
    eprintln!("att-token: watching; press Ctrl-C to stop");
    let stamp = || httpdate::fmt_http_date(SystemTime::now());
    let mut out = io::stdout();
    loop {
        let line = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            signal = changed.next() => {
                let Some(signal) = signal else { break };
                let args = signal.args().context("the daemon sent a malformed TokenChanged signal")?;
                let expires_at = *args.expires_at();
                let left = if expires_at == 0 { "no expiry".to_owned() } else { format!("{} left", time_left(expires_at, now_unix())) };
                format!("{}  TokenChanged     {}  expires {} ({left})", stamp(), args.name(), show_time(expires_at))
            }
            signal = attention.next() => {
                let Some(signal) = signal else { break };
                let args = signal.args().context("the daemon sent a malformed AttentionNeeded signal")?;
                format!("{}  AttentionNeeded  {}  {}", stamp(), args.name(), args.reason())
            }
        };
        writeln!(out, "{line}").and_then(|()| out.flush()).context("cannot write to stdout")?;
    }
    Err(fail(Exit::NoDaemon, "the connection to the bus was closed; run att-token watch again when D-Bus is back"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human(45), "45s");
        assert_eq!(human(59 * 60 + 59), "59m");
        assert_eq!(human(3 * 3600 + 5 * 60), "3h 05m");
        assert_eq!(human(12 * 86400 + 4 * 3600 + 59), "12d 4h");
        assert_eq!(time_left(0, 100), "no expiry");
        assert_eq!(time_left(100, 100), "expired");
        assert_eq!(time_left(160, 100), "1m");
        assert_eq!(next_refresh(None, 100), "-");
        assert_eq!(next_refresh(Some(0), 100), "-");
        assert_eq!(next_refresh(Some(50), 100), "due now");
        assert_eq!(next_refresh(Some(3700), 100), "in 1h 00m");
        assert_eq!(show_time(0), "no known expiry");
        assert_eq!(show_time(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
    }
}
