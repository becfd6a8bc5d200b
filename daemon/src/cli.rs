//! Command-line definitions of both programs, `att-tokend` and `att-token`.
//!
//! They live in the library so packaging can generate man pages and shell completions from
//! [`tokend_command`] and [`token_command`].

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::client::Exit;
use crate::config::{Bus, DEFAULT_CONFIG_PATH};

/// Arguments of `att-tokend`, the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "att-tokend",
    version,
    about = "Keeps AllThingsTalk tokens alive and hands them to local programs over D-Bus",
    long_about = "att-tokend logs in to AllThingsTalk for you and keeps the one-hour access token and the 60-day \
refresh token alive by refreshing them before they lapse. It also holds static device and ground tokens. Local \
programs get the right token over D-Bus (interface io.allthingstalk.TokenAgent1), for example with \
`att-token get main`.\n\n\
It normally runs under systemd as att-tokend.service and logs to stderr (the journal). Set the log level with \
RUST_LOG, e.g. RUST_LOG=debug or RUST_LOG=att_tokend=trace,info. No level ever prints a token, password, MFA \
code or seed.\n\n\
Callers' arguments are bounded: a token name is 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-', a device id \
exactly 24 letters and digits, a username at most 256 bytes, a password at most 1024 bytes and an MFA code at most \
8 characters. Anything else is refused with org.freedesktop.DBus.Error.InvalidArgs before the caller is looked up. \
A message quotes at most an escaped excerpt of 32 characters of a name, id or username, never any of a password or \
code.\n\n\
Each token's object, /io/allthingstalk/TokenAgent1/token/NAME, shows its properties (State, ExpiresAt, \
NextRefreshAt, LastError and the rest) to the token's readers, the admins and root only: Get and GetAll from \
anyone else are refused with AccessDenied. Its PropertiesChanged signal names the properties that changed, \
without their values. Every process allowed on the bus still sees the objects' paths (and so the token names) and \
the signals TokenChanged (name, expiry) and AttentionNeeded (name, reason).\n\n\
User sessions are sealed at rest with a 256-bit state key: the systemd credential state-key (the package creates \
/etc/credstore.encrypted/att-tokend.state-key) or [daemon] state_key_file. Without one they are stored in clear, and \
the daemon says so at start.\n\n\
Examples:\n  att-tokend --check-config\n  att-tokend --config /etc/att-tokend/config.toml\n  \
att-tokend --rekey /run/att-tokend-new.key --old-key-file /run/att-tokend-old.key",
    after_help = "EXIT STATUS:\n  0  stopped cleanly, --check-config found no problem, or --rekey sealed every file\n  \
1  the configuration is wrong (the message names the file, the line and the fix), the daemon failed, or --rekey \
left a file as it was\n  2  wrong usage"
)]
pub struct TokendArgs {
    /// The configuration file.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    /// Check the configuration (syntax, secret files and their permissions, users and groups), print the result
    /// and exit: 0 when it is fine, 1 otherwise.
    #[arg(long)]
    pub check_config: bool,

    /// With --check-config: leave out the secret files and credentials (syntax, users, groups and the API
    /// settings only). The unit's ExecReload= uses it: systemd 252 does not hand credentials to reload
    /// commands reliably, and the daemon itself reports a secret file it cannot read on reload.
    #[arg(long, requires = "check_config")]
    pub skip_secrets: bool,

    /// Seal every session file in the state directory again under the 32-byte key in NEW_KEY_FILE (mode 600),
    /// then exit. The files are opened with the configured state key, or with --old-key-file; clear files are
    /// sealed too. Stop the service first: the state directory stays locked while it runs.
    #[arg(long, value_name = "NEW_KEY_FILE", conflicts_with = "check_config")]
    pub rekey: Option<PathBuf>,

    /// With --rekey: the key the files are sealed with now, when it is not the configured one.
    #[arg(long, value_name = "FILE", requires = "rekey")]
    pub old_key_file: Option<PathBuf>,
}

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
att-token watch",
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

/// The `att-tokend` command, for man pages and completions.
pub fn tokend_command() -> clap::Command {
    TokendArgs::command()
}

/// The `att-token` command, for man pages and completions.
pub fn token_command() -> clap::Command {
    TokenArgs::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_commands_are_consistent() {
        tokend_command().debug_assert();
        token_command().debug_assert();
    }
}
