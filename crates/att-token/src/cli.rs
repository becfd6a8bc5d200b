//! Command-line definitions of `att-token`, the client of att-tokend.
//!
//! They live in the library so packaging can generate the man pages and shell completions from
//! [`token_command`].

use clap::{Args, CommandFactory, Parser, Subcommand};
use token_agent::{Bus, Exit};

/// Arguments of `att-token`, the command-line client.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "att-token",
    version,
    about = "Gets AllThingsTalk tokens from att-tokend, logs in and watches token health",
    long_about = "att-token asks the att-tokend daemon for AllThingsTalk tokens and manages its user sessions. \
Tokens are printed alone on stdout so that shell substitution works; messages go to stderr.\n\n\
Examples:\n  curl -H \"Authorization: Bearer $(att-token get main)\" https://api.allthingstalk.io/me/grounds\n  \
att-token get main --min-valid 600     # a token good for at least 10 more minutes\n  \
att-token for-device 5d4Kx2AbCdEfGhIjKlMnOpQr\n  \
att-token list\n  \
sudo att-token login main --username alice@example.com\n  \
att-token watch\n  \
att-token check --warn 14     # for Nagios, Icinga, Zabbix or Checkmk: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN\n  \
att-token metrics --textfile /var/lib/prometheus/node-exporter     # for node_exporter\n  \
att-token exec sensor-7 -- python3 /opt/sensor/publish.py     # the program reads $ATT_TOKEN\n  \
att-token proxy main --listen 127.0.0.1:8127     # then: curl http://127.0.0.1:8127/me/grounds",
    after_help = exit_status_help()
)]
pub struct TokenArgs {
    /// The bus where att-tokend runs: "system", "session" or a D-Bus address such as unix:path=/run/x.
    #[arg(long, global = true, value_name = "BUS", env = "ATT_TOKEN_BUS", default_value = "system", value_parser = parse_bus)]
    pub bus: Bus,

    /// What to do.
    #[command(subcommand)]
    pub command: TokenCommand,
}

/// The subcommands of `att-token`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum TokenCommand {
    /// Print the token called NAME, alone on stdout.
    #[command(long_about = "Print the token called NAME, alone on one line on stdout, for \
`$(att-token get NAME)`. With --min-valid, the daemon refreshes first if the token would lapse sooner and has \
lived half its life; a younger token is not refreshed early for one caller (exit 5, and the message says how long \
it is valid now). Asking for more than a fresh token lives is refused (exit 2) and the message says the most you \
may ask for.")]
    Get(GetArgs),

    /// Print the least-privileged token that may access a device.
    #[command(long_about = "Print the least-privileged token you may read that may access the device: its \
device token, else a ground token whose ground holds it, else a user token. Only the token goes to stdout; the \
name of the chosen token goes to stderr when stderr is a terminal.")]
    ForDevice(ForDeviceArgs),

    /// List the tokens you may read, with state, time left, next refresh and attention flag.
    List(ListArgs),

    /// Log a user token in (password, then MFA code if the account asks for one).
    #[command(long_about = "Log the user token NAME in. Prompts for the username unless --username is given and \
for the password (without echo) unless --password-stdin is given. If the account uses MFA, the daemon answers \
that a code is needed and att-token then prompts for the 6-digit code from your authenticator app (without echo); \
give --code to skip the prompt. Needs admin rights (root or [daemon] admins).")]
    Login(LoginArgs),

    /// Refresh a user token now.
    Refresh(NameArg),

    /// Forget a user session (its tokens are deleted from the daemon and its state file).
    Logout(NameArg),

    /// Print token changes and attention events as they happen, until Ctrl-C.
    Watch,

    /// Print the daemon's metrics in the Prometheus text format, or write them for node_exporter.
    #[command(long_about = "Print att-tokend's counters and the figures of the tokens you may read in the \
Prometheus text format (the OpenMetrics text, ending with `# EOF`), for a monitoring agent to scrape. Per token: \
its state, the seconds until its access token and its refresh token lapse, its refreshes and logins by outcome, \
and when the last one succeeded; for the daemon: calls served and refused (by method and reason), requests to \
the cloud by kind and outcome, and requests that waited for the request budget. Every metric is named \
att_token_*; README's \"Monitoring\" lists them. Anyone may read the daemon's counters; a token's figures are \
shown to its readers only (root sees every token).\n\n\
With --textfile DIR, the text goes to DIR/att_token.prom instead, for node_exporter's textfile collector \
(--collector.textfile.directory): written to a temporary file in DIR, flushed to disk and renamed over the old \
file, so a scrape never reads half a file; mode 644. The package's att-token-metrics.timer does this every \
minute once enabled: systemctl enable --now att-token-metrics.timer")]
    Metrics(MetricsArgs),

    /// Run a program with the token in an environment variable; restart or signal it when the token changes.
    #[command(long_about = "Run PROGRAM with the token called NAME in the environment variable VAR (ATT_TOKEN by \
default); the token is never put on a command line. att-token stays in front of PROGRAM: it forwards SIGTERM, \
SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to it and exits with its status (128+N when a signal N ended it, as \
shells do). When the token cannot be had, att-token exits with its usual status (see EXIT STATUS) before PROGRAM \
starts; when PROGRAM cannot be started, with 127 (not found) or 126 (not executable).\n\n\
When att-tokend announces a new token for NAME (TokenChanged), --on-change decides:\n  \
restart     (the default) stop PROGRAM with SIGTERM, wait --stop-timeout seconds, then SIGKILL; start it again \
with the new token in VAR\n  \
signal:SIG  send PROGRAM the signal (e.g. signal:HUP). Its environment cannot change, so it must read the new \
token itself, e.g. by running `att-token get NAME` when the signal comes\n  \
none        do nothing; PROGRAM keeps the token it started with\n\n\
Device and ground tokens never rotate, so an MQTT client runs with one token for good; a user token rotates about \
every hour. If the token stops being served while PROGRAM runs (it needs a login, or is revoked), att-token says \
so on stderr and leaves PROGRAM running with the token it has, which the cloud will refuse once it lapses; when a \
token is served again, --on-change applies. If the bus goes away, PROGRAM keeps running, att-token says so and \
reconnects every few seconds; on reconnecting it asks for the token and applies --on-change if it changed.\n\n\
Ctrl-C in a terminal reaches PROGRAM directly too (it is in the same process group), and att-token forwards \
the SIGINT it gets as well.")]
    Exec(ExecArgs),

    /// Serve HTTP on loopback and forward each request to the AllThingsTalk API with the token added.
    #[command(long_about = "Listen on a loopback address or a unix socket and forward every request to the \
AllThingsTalk API that att-tokend uses ([api] url), adding `Authorization: Bearer <token>` for the token NAME. \
The token is asked for as the user running the proxy, so the daemon's reader rules decide: a user who may not \
read NAME gets 403 from the proxy for every request, with the daemon's reason. An app then needs no token at \
all: `curl http://127.0.0.1:8127/me/grounds`.\n\n\
It is not an open proxy: it only sends requests to the API's base URL, under its path. A request line with a \
full URL is refused (400), so is CONNECT (405), so is a Host header other than localhost or the address it \
listens on (421; this stops a web page from reaching the proxy through DNS rebinding), and so is a path with a \
backslash (\\ or %5C), a . or .. segment or an encoded slash (400). The client's own Authorization and \
Proxy-Authorization headers are dropped. Addresses the network can reach (0.0.0.0, a LAN address) are refused, \
and on TCP a connection from any peer but loopback is closed at once.\n\n\
No web page can use it: a request with an Origin header, or a Sec-Fetch-Site other than none or same-origin, \
is refused (403); OPTIONS is answered by the proxy (204) and never forwarded, so a CORS preflight gets 403; \
and Access-Control-* headers are dropped from the API's replies.\n\n\
The token is cached in memory and asked for again when att-tokend announces a change, shortly before it lapses, \
and once after the API answers 401; a request whose body is at most 64 KiB is then sent again with the new \
token. Larger bodies are streamed both ways and not retried. Answers: 502 when att-tokend cannot be reached, \
503 when the token is not served now (it needs a login, or the cloud is unreachable) or when more than \
--max-in-flight requests are under way, 504 when the API does not answer within --timeout, 431 for a request \
head over 16 KiB, 408 when a request body does not arrive within 30 s (or a streamed one pauses that long); a \
request takes a place among --max-in-flight only once its body is in. A connection idle for 30 s is closed.\n\n\
It prints `listening on ADDRESS` on stdout once ready, then one line per request on stderr (method, path \
without the query string, status, time), never the token. SIGTERM or Ctrl-C stop it after the requests under \
way (at most 10 s). A unix socket is created with mode 600 (only the proxy's user may connect; see \
--socket-mode), a stale one left by a crash is replaced, and it is removed on exit. Under systemd the \
environment file of att-token-proxy@NAME sets ATT_TOKEN_PROXY_LISTEN and ATT_TOKEN_PROXY_SOCKET_MODE.")]
    Proxy(ProxyArgs),

    /// Check token health for a monitoring system (Nagios, Icinga, Zabbix, Checkmk): one status line, exit 0-3.
    #[command(long_about = "Check the health of the tokens called NAME (every token you may read when no NAME is \
given) the way monitoring plugins do, so that Nagios, Icinga, Zabbix or Checkmk agents can run it as it is. It \
prints ONE line on stdout, the status, a short reason and performance data after `|`, for example:\n\n  \
ATT-TOKEN WARNING - main: refresh token lapses in 3 days; 2 tokens | main_refresh_days=3.42;7:;0:;0 ...\n\n\
Its exit status is the monitoring-plugins convention, NOT the one in EXIT STATUS below:\n  \
0  OK        every token is served, no refresh token lapses within --warn days\n  \
1  WARNING   a refresh token lapses within --warn days (someone must log in before then), or a token needs \
attention (`att-token list` shows which, `journalctl -u att-tokend` why)\n  \
2  CRITICAL  a token cannot be served: it needs a login, it expired (the cloud has been unreachable for longer \
than the token lives), the cloud revoked it, or there is no valid token\n  \
3  UNKNOWN   the check could not run: att-tokend or the bus cannot be reached, a bad argument, a NAME that is \
not configured or that you may not read, or no answer within --timeout\n\n\
Performance data, per token: NAME_refresh_days (days until the refresh token lapses, user tokens; warning below \
--warn) and NAME_access_seconds (seconds the access token has left; user tokens); overall: tokens, \
tokens_warning, tokens_critical. Run it as a user among the tokens' readers (or root): other tokens are not \
seen.\n\n\
Example Nagios/Icinga command:\n  \
define command { command_name check_att_token  command_line /usr/bin/att-token check --warn $ARG1$ }")]
    Check(CheckArgs),
}

/// `check [NAME...] [--warn DAYS] [--timeout SECONDS]`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct CheckArgs {
    /// The tokens to check, by name; every token you may read when none is given.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Warn when a refresh token lapses within this many days (someone must log in before then).
    #[arg(long, short = 'w', value_name = "DAYS", default_value_t = 7, value_parser = clap::value_parser!(u32).range(0..=3650))]
    pub warn: u32,
    /// Give up with UNKNOWN (exit 3) when att-tokend has not answered within this many seconds.
    #[arg(long, short = 't', value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout: u64,
}

/// What `exec` does to its program when the token changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    /// Stop the program (SIGTERM, then SIGKILL after the stop timeout) and start it again with the new token.
    Restart,
    /// Send the program this signal.
    Signal(nix::sys::signal::Signal),
    /// Nothing.
    Nothing,
}

/// `exec NAME [--env VAR] [--min-valid SECONDS] [--on-change MODE] [--stop-timeout SECONDS] -- PROGRAM ARGS…`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ExecArgs {
    /// The token's name, as in the daemon's configuration.
    pub name: String,
    /// The environment variable that holds the token for PROGRAM.
    #[arg(long, value_name = "VAR", default_value = "ATT_TOKEN", value_parser = parse_env_name)]
    pub env: String,
    /// Ask for a token valid for at least this many seconds, each time one is fetched (as `get --min-valid`).
    #[arg(long, value_name = "SECONDS")]
    pub min_valid: Option<u32>,
    /// What to do when the token changes: restart, signal:SIG (e.g. signal:HUP) or none.
    #[arg(long, value_name = "MODE", default_value = "restart", value_parser = parse_on_change)]
    pub on_change: OnChange,
    /// How long a restart waits for PROGRAM to exit after SIGTERM before it sends SIGKILL.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stop_timeout: u64,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "PROGRAM")]
    pub command: Vec<std::ffi::OsString>,
}

/// `proxy NAME --listen ADDRESS [--socket-mode MODE] [--max-in-flight N] [--timeout SECONDS]`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ProxyArgs {
    /// The token's name, as in the daemon's configuration.
    pub name: String,
    /// Where to listen: 127.0.0.1:PORT, [::1]:PORT, localhost:PORT (port 0 picks a free one) or unix:PATH.
    #[arg(long, value_name = "ADDRESS", env = "ATT_TOKEN_PROXY_LISTEN")]
    pub listen: String,
    /// The mode of a unix socket, in octal: 600 lets only the proxy's user connect, 660 its group too.
    #[arg(
        long,
        value_name = "MODE",
        default_value = "600",
        env = "ATT_TOKEN_PROXY_SOCKET_MODE",
        value_parser = parse_socket_mode
    )]
    pub socket_mode: u32,
    /// Requests forwarded at once; more are answered 503 at once.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_in_flight: u64,
    /// How long one request to the API may take, its answer's body included, before the client gets 504.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

fn parse_env_name(value: &str) -> Result<String, String> {
    let mut chars = value.chars();
    let valid = value.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(value.to_owned())
    } else {
        Err("an environment variable name is letters, digits and '_', not starting with a digit (e.g. ATT_TOKEN)"
            .to_owned())
    }
}

fn parse_on_change(value: &str) -> Result<OnChange, String> {
    match value {
        "restart" => return Ok(OnChange::Restart),
        "none" => return Ok(OnChange::Nothing),
        _ => {}
    }
    let usage = "write restart, none or signal:SIG with a signal name such as HUP, USR1 or TERM";
    let Some(name) = value.strip_prefix("signal:") else { return Err(usage.to_owned()) };
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    match full.parse::<nix::sys::signal::Signal>() {
        Ok(nix::sys::signal::Signal::SIGKILL | nix::sys::signal::Signal::SIGSTOP) => {
            Err(format!("{name} cannot be handled by a program; use restart, or a signal such as HUP"))
        }
        Ok(signal) => Ok(OnChange::Signal(signal)),
        Err(_) => Err(format!("{name:?} is not a signal name; {usage}")),
    }
}

fn parse_socket_mode(value: &str) -> Result<u32, String> {
    match u32::from_str_radix(value, 8) {
        Ok(mode) if mode <= 0o777 && mode & 0o600 == 0o600 => Ok(mode),
        _ => Err("write an octal mode such as 600 or 660 (the owner needs read and write)".to_owned()),
    }
}

/// `get NAME [--min-valid SECONDS]`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct GetArgs {
    /// The token's name, as in the daemon's configuration.
    pub name: String,
    /// Make sure the token stays valid for at least this many seconds (the daemon refreshes first if needed and
    /// the token has lived half its life).
    #[arg(long, value_name = "SECONDS")]
    pub min_valid: Option<u32>,
}

/// `for-device DEVICE_ID`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ForDeviceArgs {
    /// The 24-character AllThingsTalk device id.
    pub device_id: String,
}

/// `list [--json]`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ListArgs {
    /// Print JSON (an array of objects) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `login NAME [--username U] [--password-stdin] [--code CODE]`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LoginArgs {
    /// The user token's name.
    pub name: String,
    /// The account (e-mail or user name); prompted for when missing.
    #[arg(long, value_name = "U")]
    pub username: Option<String>,
    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    /// The 6-digit MFA code, if you already have it (otherwise prompted for when the account asks).
    #[arg(long, value_name = "CODE")]
    pub code: Option<String>,
}

/// `metrics [--textfile DIR]`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct MetricsArgs {
    /// Write the metrics to DIR/att_token.prom (atomically, mode 644) instead of stdout, for node_exporter's
    /// textfile collector (e.g. /var/lib/prometheus/node-exporter).
    #[arg(long, value_name = "DIR")]
    pub textfile: Option<std::path::PathBuf>,
}

/// A subcommand's single `NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct NameArg {
    /// The user token's name.
    pub name: String,
}

fn parse_bus(value: &str) -> Result<Bus, String> {
    value.parse()
}

fn exit_status_help() -> String {
    let mut text = String::from("EXIT STATUS:\n");
    for (exit, meaning) in Exit::TABLE {
        text.push_str(&format!("  {}  {meaning}\n", exit.code()));
    }
    text.push_str("\nENVIRONMENT:\n  ATT_TOKEN_BUS  the default for --bus");
    text
}

/// The `att-token` command, for man pages and completions.
pub fn token_command() -> clap::Command {
    TokenArgs::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_consistent() {
        token_command().debug_assert();
    }

    #[test]
    fn exec_options_are_checked() {
        assert_eq!(parse_on_change("restart"), Ok(OnChange::Restart));
        assert_eq!(parse_on_change("none"), Ok(OnChange::Nothing));
        assert_eq!(parse_on_change("signal:hup"), Ok(OnChange::Signal(nix::sys::signal::Signal::SIGHUP)));
        assert_eq!(parse_on_change("signal:SIGUSR1"), Ok(OnChange::Signal(nix::sys::signal::Signal::SIGUSR1)));
        for bad in ["signal:KILL", "signal:NOPE", "signal:", "reload", ""] {
            assert!(parse_on_change(bad).is_err(), "{bad}");
        }
        assert!(parse_env_name("ATT_TOKEN").is_ok() && parse_env_name("_x1").is_ok());
        for bad in ["", "1X", "A-B", "A=B", "A B"] {
            assert!(parse_env_name(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_socket_mode("660"), Ok(0o660));
        assert!(parse_socket_mode("400").is_err() && parse_socket_mode("9").is_err());
        let args = TokenArgs::try_parse_from(["att-token", "exec", "main", "--", "sh", "-c", "echo"]).unwrap();
        let TokenCommand::Exec(exec) = args.command else { panic!("exec") };
        assert_eq!(exec.env, "ATT_TOKEN");
        assert_eq!(exec.on_change, OnChange::Restart);
        assert_eq!(exec.command, ["sh", "-c", "echo"]);
        assert!(TokenArgs::try_parse_from(["att-token", "exec", "main"]).is_err(), "PROGRAM is required");
    }
}
