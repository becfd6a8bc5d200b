//! Command-line definitions of `att-tokend`, the daemon (`att-token`'s are in the att-token package).
//!
//! They live in the library so packaging can generate man pages and shell completions from [`tokend_command`].

use std::path::PathBuf;

use clap::{CommandFactory, Parser};

use crate::config::DEFAULT_CONFIG_PATH;

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
    /// and the MFA step names a login will try, in order, and exit: 0 when it is fine, 1 otherwise.
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

/// The `att-tokend` command, for man pages and completions.
pub fn tokend_command() -> clap::Command {
    TokendArgs::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_consistent() {
        tokend_command().debug_assert();
    }
}
