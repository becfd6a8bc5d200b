//! The client side of the `io.allthingstalk.TokenAgent1` D-Bus interface: proxies, connecting to a bus, object
//! path escaping (shared with the service so both sides agree), and the `att-token` exit codes.

use std::fmt;

use zbus::DBusError as _;

use crate::config::Bus;

/// The well-known bus name the daemon owns.
pub const BUS_NAME: &str = "io.allthingstalk.TokenAgent1";
/// The main object's path.
pub const OBJECT_PATH: &str = "/io/allthingstalk/TokenAgent1";
/// The main interface.
pub const INTERFACE: &str = "io.allthingstalk.TokenAgent1";
/// The interface of each per-token object.
pub const TOKEN_INTERFACE: &str = "io.allthingstalk.TokenAgent1.Token";
/// The prefix of the daemon's own error names (`…Error.UnknownToken` and so on).
pub const ERROR_PREFIX: &str = "io.allthingstalk.TokenAgent1.Error.";

/// The main interface: methods and signals of the contract.
#[zbus::proxy(
    interface = "io.allthingstalk.TokenAgent1",
    default_service = "io.allthingstalk.TokenAgent1",
    default_path = "/io/allthingstalk/TokenAgent1"
)]
pub trait TokenAgent {
    /// `GetToken(s name) → (s token, x expires_at)`.
    fn get_token(&self, name: &str) -> zbus::Result<(String, i64)>;

    /// `GetTokenValidFor(s name, u seconds) → (s token, x expires_at)`.
    fn get_token_valid_for(&self, name: &str, seconds: u32) -> zbus::Result<(String, i64)>;

    /// `GetTokenForDevice(s device_id) → (s name, s token, x expires_at)`.
    fn get_token_for_device(&self, device_id: &str) -> zbus::Result<(String, String, i64)>;

    /// `ListTokens() → a(ssxsb)`: name, kind, expires_at, state, attention_needed.
    fn list_tokens(&self) -> zbus::Result<Vec<(String, String, i64, String, bool)>>;

    /// `Login(s name, s username, s password, s code) → (x expires_at)`.
    fn login(&self, name: &str, username: &str, password: &str, code: &str) -> zbus::Result<i64>;

    /// `Refresh(s name) → (x expires_at)`.
    fn refresh(&self, name: &str) -> zbus::Result<i64>;

    /// `Logout(s name) → ()`.
    fn logout(&self, name: &str) -> zbus::Result<()>;

    /// `SessionStorage s`: `sealed`, `unsealed` (no state key: sessions on disk in clear) or `memory`.
    #[zbus(property)]
    fn session_storage(&self) -> zbus::Result<String>;

    /// `ApiUrl s`: the REST base URL the daemon talks to, without a trailing slash.
    #[zbus(property)]
    fn api_url(&self) -> zbus::Result<String>;

    /// `TokenChanged(s name, x expires_at)`.
    #[zbus(signal)]
    fn token_changed(&self, name: String, expires_at: i64) -> zbus::Result<()>;

    /// `AttentionNeeded(s name, s reason)`.
    #[zbus(signal)]
    fn attention_needed(&self, name: String, reason: String) -> zbus::Result<()>;
}

/// A per-token object, `/io/allthingstalk/TokenAgent1/token/<escaped name>` (see [`token_object_path`]).
#[zbus::proxy(interface = "io.allthingstalk.TokenAgent1.Token", default_service = "io.allthingstalk.TokenAgent1")]
pub trait Token {
    /// `Name s`.
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    /// `Kind s`: `user`, `device` or `ground`.
    #[zbus(property)]
    fn kind(&self) -> zbus::Result<String>;
    /// `State s`: `valid`, `refreshing`, `retrying`, `expired`, `needs-login` or `revoked`.
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    /// `ExpiresAt x`: Unix seconds, 0 when unknown.
    #[zbus(property)]
    fn expires_at(&self) -> zbus::Result<i64>;
    /// `RefreshTokenExpiresAt x`: Unix seconds, 0 when none.
    #[zbus(property)]
    fn refresh_token_expires_at(&self) -> zbus::Result<i64>;
    /// `NextRefreshAt x`: Unix seconds, 0 when none is planned.
    #[zbus(property)]
    fn next_refresh_at(&self) -> zbus::Result<i64>;
    /// `AttentionNeeded b`.
    #[zbus(property)]
    fn attention_needed(&self) -> zbus::Result<bool>;
    /// `LastError s`: empty when none.
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;
}

/// Escapes a string as one D-Bus object path element: every byte outside `[A-Za-z0-9]` becomes `_` and two
/// lowercase hex digits (`-` → `_2d`, `_` → `_5f`). The empty string becomes `_`.
pub fn escape_path_element(name: &str) -> String {
    if name.is_empty() {
        return "_".to_owned();
    }
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("_{byte:02x}"));
        }
    }
    out
}

/// Reverses [`escape_path_element`]; `None` if `element` is not an escaped string.
pub fn unescape_path_element(element: &str) -> Option<String> {
    if element == "_" {
        return Some(String::new());
    }
    if element.is_empty() {
        return None;
    }
    let bytes = element.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => {
                let hex = element.get(i + 1..i + 3)?;
                if !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    return None;
                }
                let byte = u8::from_str_radix(hex, 16).ok()?;
                if byte.is_ascii_alphanumeric() {
                    return None;
                }
                out.push(byte);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// The object path of a token's object: `/io/allthingstalk/TokenAgent1/token/<escaped name>`.
pub fn token_object_path(name: &str) -> String {
    format!("{OBJECT_PATH}/token/{}", escape_path_element(name))
}

/// Connects to the given bus (system, session or an explicit address).
pub async fn connect(bus: &Bus) -> zbus::Result<zbus::Connection> {
    match bus {
        Bus::System => zbus::Connection::system().await,
        Bus::Session => zbus::Connection::session().await,
        Bus::Address(address) => zbus::connection::Builder::address(address.as_str()).build().await,
    }
}

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

/// The D-Bus error name of a method error reply, if `error` is one.
pub fn error_name(error: &zbus::Error) -> Option<String> {
    match error {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str().to_owned()),
        zbus::Error::FDO(fdo) => Some(fdo.name().as_str().to_owned()),
        _ => None,
    }
}

/// The human message of a method error reply (the daemon's text), or the error itself otherwise.
pub fn error_message(error: &zbus::Error) -> String {
    match error {
        zbus::Error::MethodError(name, Some(text), _) if !text.is_empty() => text.clone(),
        zbus::Error::MethodError(name, _, _) => name.as_str().to_owned(),
        zbus::Error::FDO(fdo) => fdo.description().map_or_else(|| fdo.name().as_str().to_owned(), str::to_owned),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn escaping_examples() {
        assert_eq!(escape_path_element("main"), "main");
        assert_eq!(escape_path_element("sensor-7"), "sensor_2d7");
        assert_eq!(escape_path_element("site_a"), "site_5fa");
        assert_eq!(token_object_path("a-b"), "/io/allthingstalk/TokenAgent1/token/a_2db");
        assert_eq!(unescape_path_element("sensor_2d7").as_deref(), Some("sensor-7"));
        for bad in ["a-b", "a_2", "a_2D", "a_41", "a_zz", ""] {
            assert_eq!(unescape_path_element(bad), None, "{bad}");
        }
    }

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

    proptest! {
        #[test]
        fn escaping_round_trips_and_makes_valid_elements(name in "[A-Za-z0-9_-]{1,64}") {
            let escaped = escape_path_element(&name);
            prop_assert!(escaped.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            prop_assert_eq!(unescape_path_element(&escaped), Some(name.clone()));
            prop_assert!(zbus::ObjectPath::try_from(token_object_path(&name)).is_ok());
        }

        #[test]
        fn escaping_is_injective(a in "[A-Za-z0-9_-]{1,8}", b in "[A-Za-z0-9_-]{1,8}") {
            prop_assume!(a != b);
            prop_assert_ne!(escape_path_element(&a), escape_path_element(&b));
        }

        #[test]
        fn any_string_round_trips(name in "\\PC{0,20}") {
            prop_assert_eq!(unescape_path_element(&escape_path_element(&name)), Some(name));
        }
    }
}
