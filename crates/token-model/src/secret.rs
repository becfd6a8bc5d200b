//! Secrets as types.
//!
//! Every secret the product handles is a newtype around a `String` that
//! - prints `Name([redacted])` for `Debug` and has no `Display`,
//! - is read only through the explicit [`ExposeSecret::expose_secret`],
//! - is zeroized when dropped,
//! - is not `Serialize`/`Deserialize` by default: persistence opts in field by field with
//!   `#[serde(with = "token_model::secret::persist")]`.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Explicit, greppable access to a secret's value.
pub trait ExposeSecret {
    /// The secret value. Every call site is a place where the secret leaves its type: keep them few.
    fn expose_secret(&self) -> &str;
}

/// Construction of a secret type from its string value (used by [`persist`]).
pub trait FromSecretString: Sized {
    /// Wraps `value`, taking ownership so no unzeroized copy is left behind by this call.
    fn from_secret_string(value: String) -> Self;
}

macro_rules! secret_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
        pub struct $name(String);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }
        }

        impl ExposeSecret for $name {
            fn expose_secret(&self) -> &str {
                &self.0
            }
        }

        impl FromSecretString for $name {
            fn from_secret_string(value: String) -> Self {
                Self(value)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

secret_type! {
    /// A user's OAuth2 access token (about one hour of life). Opaque: never parsed.
    AccessToken
}
secret_type! {
    /// A user's OAuth2 refresh token (60 days of life). Opaque: never parsed.
    RefreshToken
}
secret_type! {
    /// A static device or ground token, such as `maker:4AbCd…`, created in the AllThingsTalk web UI.
    StaticToken
}
secret_type! {
    /// A user's password.
    Password
}
secret_type! {
    /// A base32 TOTP seed (RFC 6238), used to compute MFA codes for unattended re-login.
    TotpSeed
}

/// A one-time MFA code: exactly six ASCII digits, as the user's authenticator app shows it.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct MfaCode(String);

/// Why a string is not an MFA code. Never contains the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an MFA code is exactly 6 digits (0-9) as shown by the authenticator app; got {len} characters{detail}")]
pub struct InvalidMfaCode {
    len: usize,
    detail: &'static str,
}

impl MfaCode {
    /// Validates and wraps a code; surrounding whitespace is ignored.
    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidMfaCode> {
        let mut raw: String = value.into();
        let trimmed = raw.trim();
        let result = if trimmed.len() != 6 {
            Err(InvalidMfaCode { len: trimmed.chars().count(), detail: "" })
        } else if !trimmed.bytes().all(|b| b.is_ascii_digit()) {
            Err(InvalidMfaCode { len: 6, detail: ", not all of them digits" })
        } else {
            Ok(Self(trimmed.to_owned()))
        };
        raw.zeroize();
        result
    }
}

impl ExposeSecret for MfaCode {
    fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MfaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MfaCode([redacted])")
    }
}

/// Opt-in persistence of a secret field: `#[serde(with = "token_model::secret::persist")]`.
///
/// Only the daemon's state file uses this, for the refresh and access tokens it must keep across restarts.
pub mod persist {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{ExposeSecret, FromSecretString};

    /// Writes the secret's value as a string.
    pub fn serialize<S: Serializer, T: ExposeSecret>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value.expose_secret())
    }

    /// Reads a secret from a string.
    pub fn deserialize<'de, D: Deserializer<'de>, T: FromSecretString>(deserializer: D) -> Result<T, D::Error> {
        String::deserialize(deserializer).map(T::from_secret_string)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn mfa_code_accepts_six_digits_only() {
        assert_eq!(MfaCode::parse(" 123456\n").unwrap().expose_secret(), "123456");
        assert!(MfaCode::parse("12345").is_err());
        assert!(MfaCode::parse("1234567").is_err());
        assert!(MfaCode::parse("12a456").is_err());
        let message = MfaCode::parse("99x999").unwrap_err().to_string();
        assert!(!message.contains("99x999"), "{message}");
    }

    #[test]
    fn persist_round_trips() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Saved {
            #[serde(with = "persist")]
            token: RefreshToken,
        }
        let json = serde_json::to_string(&Saved { token: RefreshToken::new("rt-1") }).unwrap();
        assert_eq!(json, r#"{"token":"rt-1"}"#);
        let back: Saved = serde_json::from_str(&json).unwrap();
        assert_eq!(back.token.expose_secret(), "rt-1");
    }

    proptest! {
        #[test]
        // Every generated value holds a '@' or '#', which no redacted rendering contains.
        fn debug_never_shows_the_secret(value in "[ -~]{0,30}[@#][ -~]{0,30}") {
            let shown = [
                format!("{:?}", AccessToken::new(value.clone())),
                format!("{:?}", RefreshToken::new(value.clone())),
                format!("{:?}", StaticToken::new(value.clone())),
                format!("{:?}", Password::new(value.clone())),
                format!("{:?}", TotpSeed::new(value.clone())),
                format!("{:#?}", Some(AccessToken::new(value.clone()))),
            ];
            for text in shown {
                prop_assert!(!text.contains(&value), "{text}");
                prop_assert!(text.contains("[redacted]"));
            }
        }

        #[test]
        fn debug_of_mfa_code_never_shows_it(code in "[0-9]{6}") {
            let text = format!("{:?}", MfaCode::parse(code.clone()).unwrap());
            prop_assert!(!text.contains(&code));
        }
    }
}
