//! The D-Bus methods' arguments: token names, device and ground ids, client ids and MFA codes.

use std::str::FromStr;

use token_model::ids::{ClientId, DeviceId, GroundId, IdError, TokenName};
use token_model::secret::{ExposeSecret, MfaCode};

use crate::assert_at_most;

/// The longest message a rejected argument may cause, whatever its size (a caller may send megabytes).
pub(crate) const MAX_ERROR_BYTES: usize = 1024;

/// Validates `data` (as text) as every kind of argument; panics when a promise is broken.
pub fn check_dbus_args(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    let name_ok = (1..=TokenName::MAX_LEN).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    id(TokenName::new(text), text, name_ok, TokenName::as_str);
    let resource_ok = text.len() == 24 && text.bytes().all(|b| b.is_ascii_alphanumeric());
    id(DeviceId::new(text), text, resource_ok, DeviceId::as_str);
    id(GroundId::new(text), text, resource_ok, GroundId::as_str);
    let client_ok = (1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic());
    id(ClientId::new(text), text, client_ok, ClientId::as_str);

    // An MFA code is a secret: its error says how long it was, and nothing of what it held.
    let trimmed = text.trim();
    match MfaCode::parse(text) {
        Ok(code) => {
            assert!(trimmed.len() == 6 && trimmed.bytes().all(|b| b.is_ascii_digit()), "accepted {trimmed:?}");
            assert_eq!(code.expose_secret(), trimmed);
            assert_eq!(format!("{code:?}"), "MfaCode([redacted])");
        }
        Err(error) => {
            assert!(!(trimmed.len() == 6 && trimmed.bytes().all(|b| b.is_ascii_digit())), "refused {trimmed:?}");
            let message = error.to_string();
            let without_digits: String = message.chars().filter(|c| !c.is_ascii_digit()).collect();
            let shapes = [
                "an MFA code is exactly  digits (-) as shown by the authenticator app; got  characters",
                "an MFA code is exactly  digits (-) as shown by the authenticator app; got  characters, not all of them digits",
            ];
            assert!(
                shapes.contains(&without_digits.as_str()),
                "an MFA code's error says more than its length: {message}"
            );
            assert_at_most("an MFA code's error", &format!("{error:?}"), MAX_ERROR_BYTES);
        }
    }
}

fn id<T>(result: Result<T, IdError>, text: &str, valid: bool, as_str: fn(&T) -> &str)
where
    T: FromStr<Err = IdError>
        + std::fmt::Display
        + std::fmt::Debug
        + PartialEq
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    match result {
        Ok(value) => {
            assert!(valid, "accepted {text:?}");
            assert_eq!(as_str(&value), text);
            assert_eq!(value.to_string(), text, "Display shows the value as given");
            assert_eq!(T::from_str(text).as_ref(), Ok(&value), "FromStr agrees with new");
            let json = serde_json::to_string(&value).expect("an id serialises");
            assert_eq!(serde_json::from_str::<T>(&json).expect("an id reads back"), value, "serde round trip");
        }
        Err(error) => {
            assert!(!valid, "refused {text:?}: {error}");
            assert_at_most("an invalid argument's message", &error.to_string(), MAX_ERROR_BYTES);
            assert_at_most("an invalid argument's Debug", &format!("{error:?}"), MAX_ERROR_BYTES);
            assert!(T::from_str(text).is_err(), "FromStr agrees with new");
        }
    }
}
