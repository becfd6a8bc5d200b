//! Validated identifiers: token names, device and ground ids, token kinds and client ids.
//!
//! Constructors check their input and say what is wrong and what a valid value looks like. An error holds at most a
//! short escaped [`quote`] of the input, never all of it: input may come from anyone on the bus.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The most characters of an input that [`quote`] quotes.
pub const QUOTE_CHARS: usize = 32;
/// The most bytes of escaped text that [`quote`] quotes (escapes such as `\u{1}` take several bytes).
pub const QUOTE_BYTES: usize = 96;

/// A short, escaped quote of `input` for a message: in double quotes, at most [`QUOTE_CHARS`] characters and
/// [`QUOTE_BYTES`] bytes of it with control characters, quotes and backslashes escaped as Rust escapes them, then
/// `…` and the input's length in bytes when it was cut. Reads no more of `input` than it quotes (and its length),
/// so it costs the same for 8 MiB as for 8 bytes. Never use it on a secret.
pub fn quote(input: &str) -> String {
    let mut out = String::with_capacity(QUOTE_BYTES + 32);
    out.push('"');
    let mut cut = false;
    for (taken, c) in input.chars().enumerate() {
        let escaped = c.escape_debug();
        let width: usize = escaped.clone().map(char::len_utf8).sum();
        if taken == QUOTE_CHARS || out.len() - 1 + width > QUOTE_BYTES {
            cut = true;
            break;
        }
        out.extend(escaped);
    }
    out.push('"');
    if cut {
        out.push_str(&format!("\u{2026} ({} bytes)", input.len()));
    }
    out
}

/// Why a string is not a valid identifier of some kind. The strings held are [`quote`]s of the input, never the
/// whole of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A token name is empty, too long or has a character outside `[A-Za-z0-9_-]`.
    #[error("token name {0} is not valid: use 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")]
    TokenName(String),
    /// A device, ground or asset id is not 24 ASCII letters and digits.
    #[error(
        "{what} id {value} is not valid: AllThingsTalk ids are exactly 24 letters and digits (copy it from the web UI)"
    )]
    ResourceId {
        /// Which kind of id ("device", "ground", "asset").
        what: &'static str,
        /// A [`quote`] of the rejected value (ids are not secret).
        value: String,
    },
    /// A token kind other than `user`, `device` or `ground`.
    #[error("token kind {0} is not valid: use \"user\", \"device\" or \"ground\"")]
    Kind(String),
    /// A client id that is empty or has characters that do not belong in one.
    #[error(
        "client id {0} is not valid: use one of \"web\", \"mobile\", \"postman\" (or another id your AllThingsTalk instance accepts)"
    )]
    ClientId(String),
}

/// The name of a configured token, as used on D-Bus and in the config: `[A-Za-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenName(String);

impl TokenName {
    /// The longest name accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates a token name.
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        Self::check(&value)?;
        Ok(Self(value))
    }

    /// Checks a token name without copying it: the length first, so a long input costs nothing more.
    pub fn check(value: &str) -> Result<(), IdError> {
        let ok = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok { Ok(()) } else { Err(IdError::TokenName(quote(value))) }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! resource_id {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The length of every id: 24 ASCII letters and digits.
            pub const LEN: usize = 24;

            /// Validates an id: exactly 24 ASCII letters and digits.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                Self::check(&value)?;
                Ok(Self(value))
            }

            /// Checks an id without copying it: the length first, so a long input costs nothing more.
            pub fn check(value: &str) -> Result<(), IdError> {
                if value.len() == Self::LEN && value.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    Ok(())
                } else {
                    Err(IdError::ResourceId { what: $what, value: quote(value) })
                }
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl_string_conversions!($name);
    };
}

macro_rules! impl_string_conversions {
    ($name:ident) => {
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

impl_string_conversions!(TokenName);

resource_id! {
    /// An AllThingsTalk device id (24 letters and digits).
    DeviceId, "device"
}
resource_id! {
    /// An AllThingsTalk ground id (24 letters and digits).
    GroundId, "ground"
}
resource_id! {
    /// An AllThingsTalk asset id (24 letters and digits).
    AssetId, "asset"
}

/// The OAuth2 `client_id` sent to `/login` (no client secret exists). Default `web`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);

impl ClientId {
    /// Validates a client id: 1 to 64 visible ASCII characters without spaces.
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        if !value.is_empty() && value.len() <= 64 && value.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(value))
        } else {
            Err(IdError::ClientId(quote(&value)))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ClientId {
    fn default() -> Self {
        Self("web".to_owned())
    }
}

impl_string_conversions!(ClientId);

/// The three kinds of token the daemon keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// A user's OAuth2 session: access token plus refresh token, obtained by login.
    User,
    /// A static token that may touch one device.
    Device,
    /// A static token that may touch every device of one ground.
    Ground,
}

impl TokenKind {
    /// The name used in the config, on D-Bus and in `att-token list`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::User => "user",
            TokenKind::Device => "device",
            TokenKind::Ground => "ground",
        }
    }
}

impl FromStr for TokenKind {
    type Err = IdError;
    fn from_str(value: &str) -> Result<Self, IdError> {
        match value {
            "user" => Ok(TokenKind::User),
            "device" => Ok(TokenKind::Device),
            "ground" => Ok(TokenKind::Ground),
            other => Err(IdError::Kind(quote(other))),
        }
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn token_names() {
        assert!(TokenName::new("main").is_ok());
        assert!(TokenName::new("site-a_2").is_ok());
        for bad in ["", "a b", "a/b", "ä", &"x".repeat(65)] {
            let err = TokenName::new(bad).unwrap_err();
            assert!(err.to_string().contains("A-Z, a-z, 0-9"), "{err}");
        }
    }

    #[test]
    fn errors_show_a_bounded_part_of_the_value() {
        // Found by the dbus_args fuzz target: the whole rejected argument went into the message.
        let long = "x/".repeat(100_000);
        for message in [
            TokenName::new(long.as_str()).unwrap_err().to_string(),
            DeviceId::new(long.as_str()).unwrap_err().to_string(),
            ClientId::new(long.as_str()).unwrap_err().to_string(),
            long.parse::<TokenKind>().unwrap_err().to_string(),
        ] {
            assert!(message.len() < 400, "{} bytes", message.len());
            assert!(message.contains(&format!("\"{}\"… (200000 bytes)", "x/".repeat(16))), "{message}");
        }
        assert_eq!(TokenName::new("a b").unwrap_err(), IdError::TokenName(quote("a b")));
    }

    #[test]
    fn resource_ids() {
        assert!(DeviceId::new("abcdefghijklmnopqrstuvwx").is_ok());
        assert!(GroundId::new("ABCDEFGHIJKLMNOPQRSTUVW1").is_ok());
        let err = DeviceId::new("short").unwrap_err().to_string();
        assert!(err.contains("device id") && err.contains("24"), "{err}");
        assert!(GroundId::new("abcdefghijklmnopqrstuvw-").is_err());
    }

    #[test]
    fn quotes_are_short_escaped_and_say_the_length() {
        assert_eq!(quote("main"), "\"main\"");
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quote("\u{1}\n"), "\"\\u{1}\\n\"");
        let long = "x".repeat(8 << 20);
        assert_eq!(quote(&long), format!("\"{}\"\u{2026} (8388608 bytes)", "x".repeat(QUOTE_CHARS)));
        // Control characters take six bytes each escaped: the byte bound cuts first.
        let controls = "\u{1}".repeat(1000);
        let quoted = quote(&controls);
        assert!(quoted.len() <= QUOTE_BYTES + 2 + "\u{2026} (1000 bytes)".len(), "{quoted}");
        assert!(quoted.starts_with("\"\\u{1}\\u{1}") && quoted.ends_with("(1000 bytes)"), "{quoted}");
        assert!(!quoted.contains('\u{1}'), "no raw control byte: {quoted}");
        // A cut never splits a character.
        let wide = "\u{10ffff}".repeat(100);
        assert!(quote(&wide).ends_with("(400 bytes)"));
    }

    #[test]
    fn errors_quote_only_the_start_of_long_input() {
        let long = "\u{1}".repeat(1 << 20);
        for message in [
            TokenName::new(long.clone()).unwrap_err().to_string(),
            DeviceId::new(long.clone()).unwrap_err().to_string(),
            ClientId::new(long.clone()).unwrap_err().to_string(),
            long.parse::<TokenKind>().unwrap_err().to_string(),
        ] {
            assert!(message.len() < 300, "{} bytes: {message}", message.len());
            assert!(message.contains("(1048576 bytes)"), "{message}");
        }
        assert!(TokenName::check(&"x".repeat(65)).is_err());
        assert!(DeviceId::check("abcdefghijklmnopqrstuvwx").is_ok());
        assert!(DeviceId::check(&"a".repeat(25)).is_err());
    }

    #[test]
    fn kinds_round_trip() {
        for kind in [TokenKind::User, TokenKind::Device, TokenKind::Ground] {
            assert_eq!(kind.as_str().parse::<TokenKind>().unwrap(), kind);
        }
        assert!("admin".parse::<TokenKind>().unwrap_err().to_string().contains("\"user\""));
    }

    #[test]
    fn client_ids() {
        assert_eq!(ClientId::default().as_str(), "web");
        assert!(ClientId::new("maker").is_ok());
        assert!(ClientId::new("").is_err());
        assert!(ClientId::new("we b").is_err());
    }

    proptest! {
        #[test]
        fn valid_names_are_accepted(name in "[A-Za-z0-9_-]{1,64}") {
            let parsed = TokenName::new(name.clone()).unwrap();
            prop_assert_eq!(parsed.as_str(), name.as_str());
        }

        #[test]
        fn names_with_other_characters_are_rejected(prefix in "[a-z]{0,5}", bad in "[^A-Za-z0-9_-]", suffix in "[a-z]{0,5}") {
            let name = format!("{prefix}{bad}{suffix}");
            prop_assert!(TokenName::new(name).is_err());
        }
    }
}
