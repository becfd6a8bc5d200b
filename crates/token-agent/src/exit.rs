//! The exit statuses of `att-token`, and how a caller reads a D-Bus error as one of them.

use std::fmt;

use crate::ERROR_PREFIX;
use crate::error::error_name;

/// The exit statuses of `att-token`, as documented in its man page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Exit {
    /// 0: success.
    Ok = 0,
    /// 1: any other error.
    Other = 1,
    /// 2: wrong usage (bad arguments).
    Usage = 2,
    /// 3: no such token, or no token for that device.
    UnknownToken = 3,
    /// 4: the token needs a login, or a login or MFA step failed.
    NeedsLogin = 4,
    /// 5: no valid token right now for a transient reason; try again later.
    Unavailable = 5,
    /// 6: the caller may not do this.
    AccessDenied = 6,
    /// 7: the daemon or the bus cannot be reached.
    NoDaemon = 7,
    /// 8: the cloud rejects this device or ground token (it was deleted or revoked).
    Revoked = 8,
}

impl Exit {
    /// Every status with a one-line meaning, for `--help` and the man page.
    pub const TABLE: [(Exit, &'static str); 9] = [
        (Exit::Ok, "success"),
        (Exit::Other, "any other error"),
        (Exit::Usage, "wrong usage: unknown option, missing or invalid argument"),
        (Exit::UnknownToken, "no such token (or no token you may read for that device)"),
        (Exit::NeedsLogin, "the token needs a login, or the login or MFA code was refused"),
        (Exit::Unavailable, "no valid token right now for a transient reason (network, cloud); retry later"),
        (Exit::AccessDenied, "you may not read this token or run this command (ask an admin)"),
        (Exit::NoDaemon, "cannot reach att-tokend or the bus (is the service running?)"),
        (Exit::Revoked, "the cloud rejects this device or ground token: create a new one and update its file"),
    ];

    /// The numeric status.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The status for a D-Bus error name (`io.allthingstalk.TokenAgent1.Error.*`, `org.freedesktop.DBus.Error.*`).
    pub fn for_error_name(name: &str) -> Exit {
        if let Some(ours) = name.strip_prefix(ERROR_PREFIX) {
            return match ours {
                "UnknownToken" | "NoTokenForDevice" => Exit::UnknownToken,
                "NeedsLogin" | "LoginFailed" | "MfaRequired" | "MfaFailed" => Exit::NeedsLogin,
                "Unavailable" => Exit::Unavailable,
                "Revoked" => Exit::Revoked,
                _ => Exit::Other,
            };
        }
        match name.strip_prefix("org.freedesktop.DBus.Error.") {
            Some("AccessDenied" | "AuthFailed" | "InteractiveAuthorizationRequired") => Exit::AccessDenied,
            Some("InvalidArgs") => Exit::Usage,
            Some(
                "ServiceUnknown" | "NameHasNoOwner" | "NoReply" | "NoServer" | "Disconnected" | "Timeout" | "TimedOut"
                | "NoNetwork" | "AddressInUse" | "BadAddress" | "FileNotFound" | "UnknownObject" | "UnknownInterface"
                | "UnknownMethod",
            ) => Exit::NoDaemon,
            Some(spawn) if spawn.starts_with("Spawn.") => Exit::NoDaemon,
            _ => Exit::Other,
        }
    }

    /// The status for any error a proxy call can return.
    pub fn for_zbus_error(error: &zbus::Error) -> Exit {
        match error_name(error) {
            Some(name) => Exit::for_error_name(&name),
            None => match error {
                zbus::Error::InputOutput(_) | zbus::Error::Address(_) | zbus::Error::Handshake(_) => Exit::NoDaemon,
                _ => Exit::Other,
            },
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::error_message;

    #[test]
    fn exit_codes_for_error_names() {
        let table = [
            ("io.allthingstalk.TokenAgent1.Error.UnknownToken", 3),
            ("io.allthingstalk.TokenAgent1.Error.NoTokenForDevice", 3),
            ("io.allthingstalk.TokenAgent1.Error.NeedsLogin", 4),
            ("io.allthingstalk.TokenAgent1.Error.LoginFailed", 4),
            ("io.allthingstalk.TokenAgent1.Error.MfaRequired", 4),
            ("io.allthingstalk.TokenAgent1.Error.MfaFailed", 4),
            ("io.allthingstalk.TokenAgent1.Error.Unavailable", 5),
            ("io.allthingstalk.TokenAgent1.Error.SomethingNew", 1),
            ("org.freedesktop.DBus.Error.AccessDenied", 6),
            ("org.freedesktop.DBus.Error.InvalidArgs", 2),
            ("org.freedesktop.DBus.Error.ServiceUnknown", 7),
            ("org.freedesktop.DBus.Error.NameHasNoOwner", 7),
            ("org.freedesktop.DBus.Error.NoReply", 7),
            ("org.freedesktop.DBus.Error.Spawn.ExecFailed", 7),
            ("org.freedesktop.DBus.Error.Failed", 1),
            ("com.example.Other", 1),
        ];
        for (name, code) in table {
            assert_eq!(Exit::for_error_name(name).code(), code, "{name}");
        }
        let fdo = zbus::Error::FDO(Box::new(zbus::fdo::Error::AccessDenied("no".into())));
        assert_eq!(Exit::for_zbus_error(&fdo), Exit::AccessDenied);
        assert_eq!(error_message(&fdo), "no");
        let io = zbus::Error::InputOutput(std::sync::Arc::new(std::io::Error::other("refused")));
        assert_eq!(Exit::for_zbus_error(&io), Exit::NoDaemon);
        let codes: std::collections::BTreeSet<u8> = Exit::TABLE.iter().map(|(e, _)| e.code()).collect();
        assert_eq!(codes, (0..=8).collect());
    }
}
