//! Validated identifiers: token names, device and ground ids, token kinds and client ids.
//!
//! Constructors check their input and say what is wrong and what a valid value looks like.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier of some kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A token name is empty, too long or has a character outside `[A-Za-z0-9_-]`.
    #[error("token name {0:?} is not valid: use 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")]
    TokenName(String),
    /// A device, ground or asset id is not 24 ASCII letters and digits.
    #[error(
        "{what} id {value:?} is not valid: AllThingsTalk ids are exactly 24 letters and digits (copy it from the web UI)"
    )]
    ResourceId {
        /// Which kind of id ("device", "ground", "asset").
        what: &'static str,
        /// The rejected value (ids are not secret).
        value: String,
    },
    /// A token kind other than `user`, `device` or `ground`.
    #[error("token kind {0:?} is not valid: use \"user\", \"device\" or \"ground\"")]
    Kind(String),
    /// A client id that is empty or has characters that do not belong in one.
    #[error(
        "client id {0:?} is not valid: use one of \"web\", \"mobile\", \"postman\" (or another id your AllThingsTalk instance accepts)"
    )]
    ClientId(String),
}

/// The most characters of a rejected value an [`IdError`] keeps: a D-Bus caller may send megabytes, and the
/// message must stay a line.
pub const SHOWN_MAX_CHARS: usize = 80;

/// A rejected value as an error shows it: at most [`SHOWN_MAX_CHARS`] characters, then `…`.
fn shown(value: &str) -> String {
    match value.char_indices().nth(SHOWN_MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
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
        let ok = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok { Ok(Self(value)) } else { Err(IdError::TokenName(shown(&value))) }
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
            /// Validates an id: exactly 24 ASCII letters and digits.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                if value.len() == 24 && value.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    Ok(Self(value))
                } else {
                    Err(IdError::ResourceId { what: $what, value: shown(&value) })
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
            Err(IdError::ClientId(shown(&value)))
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
            other => Err(IdError::Kind(shown(other))),
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
            assert!(message.contains(&format!("{}…", "x/".repeat(40))), "{message}");
        }
        assert_eq!(TokenName::new("a b").unwrap_err(), IdError::TokenName("a b".to_owned()));
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
