//! Bounds on what callers send: every string and number a method takes is checked here, once, lengths first,
//! before the caller is looked up and before anything is copied, and comes out as the typed value the engine
//! takes (a [`TokenName`], a [`DeviceId`], a [`Duration`]). A refusal is [`InvalidArgs`]
//! (`org.freedesktop.DBus.Error.InvalidArgs`) with a message of a few hundred bytes at most: it holds a short
//! [`quote`] of a name, device id or username, and never any of a password or an MFA code.
//!
//! The limits are defined once, here (names and ids by their types in `token_model::ids`).
//!
//! Bounded because an error reply as long as its input could exceed the bus's message limit, and the bus would
//! then disconnect the daemon.

use std::fmt;
use std::time::Duration;

use token_model::ids::{DeviceId, TokenName, quote};
use token_model::secret::MfaCode;

/// A caller's argument refused: `org.freedesktop.DBus.Error.InvalidArgs` with this message, which says what is
/// wrong and what to send instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidArgs(pub String);

impl fmt::Display for InvalidArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidArgs {}

/// The longest token name: 64 characters from `[A-Za-z0-9_-]`.
pub const MAX_NAME: usize = TokenName::MAX_LEN;
/// The length of a device id: 24 letters and digits.
pub const DEVICE_ID_LEN: usize = DeviceId::LEN;
/// The longest username (an e-mail address: RFC 5321 allows 254 characters).
pub const MAX_USERNAME: usize = 256;
/// The longest password.
pub const MAX_PASSWORD: usize = 1024;
/// The longest MFA code, surrounding whitespace aside. Codes are 6 digits; `MfaCode` checks the exact form.
pub const MAX_CODE: usize = 8;
/// The most seconds `GetTokenValidFor` accepts: a user's access token lives about an hour.
pub const MAX_SECONDS: u32 = 24 * 3600;

/// A token name: 1 to [`MAX_NAME`] characters from `[A-Za-z0-9_-]`.
pub fn name(name: &str) -> Result<TokenName, InvalidArgs> {
    TokenName::new(name).map_err(|e| InvalidArgs(e.to_string()))
}

/// A device id: exactly [`DEVICE_ID_LEN`] ASCII letters and digits.
pub fn device_id(device_id: &str) -> Result<DeviceId, InvalidArgs> {
    DeviceId::new(device_id).map_err(|e| InvalidArgs(e.to_string()))
}

/// The `seconds` of `GetTokenValidFor`, at most [`MAX_SECONDS`], as the time the token must stay valid.
pub fn seconds(seconds: u32) -> Result<Duration, InvalidArgs> {
    if seconds > MAX_SECONDS {
        return Err(InvalidArgs(format!(
            "{seconds} seconds is more than any token here lives; ask for at most {MAX_SECONDS} seconds (user access \
             tokens live about an hour)"
        )));
    }
    Ok(Duration::from_secs(seconds.into()))
}

/// Checks the arguments of `Login` (name, username, password, code), lengths first, and returns the token's name.
/// The password and the code are never quoted; a message says only what is wrong with them. The code's form is
/// checked by [`mfa_code`], once the caller is known to be an admin, so nothing of a secret is copied before.
pub fn login(name_arg: &str, username: &str, password: &str, code: &str) -> Result<TokenName, InvalidArgs> {
    let name = name(name_arg)?;
    if username.len() > MAX_USERNAME {
        return Err(InvalidArgs(format!(
            "the username {} is too long: at most {MAX_USERNAME} bytes; give the AllThingsTalk account's username",
            quote(username)
        )));
    }
    if username.chars().any(char::is_control) {
        return Err(InvalidArgs(format!(
            "the username {} has a control character; give the AllThingsTalk account's username",
            quote(username)
        )));
    }
    if username.trim().is_empty() {
        return Err(InvalidArgs("the username is empty; give the AllThingsTalk account's username".to_owned()));
    }
    if password.len() > MAX_PASSWORD {
        return Err(InvalidArgs(format!(
            "the password is {} bytes long, more than the {MAX_PASSWORD} accepted; give the account's password",
            password.len()
        )));
    }
    if password.is_empty() {
        return Err(InvalidArgs("the password is empty; give the account's password".to_owned()));
    }
    if code.len() > MAX_CODE && code.trim().len() > MAX_CODE {
        return Err(InvalidArgs(format!(
            "the MFA code is {} bytes long; give the 6 digits the authenticator app shows, or an empty code when the \
             account has no MFA",
            code.len()
        )));
    }
    Ok(name)
}

/// The MFA code of `Login` (bounded by [`login`]): `None` when it is empty (the account has no MFA), else exactly 6
/// digits, surrounding whitespace aside.
pub fn mfa_code(code: &str) -> Result<Option<MfaCode>, InvalidArgs> {
    match code.trim() {
        "" => Ok(None),
        code => MfaCode::parse(code).map(Some).map_err(|e| InvalidArgs(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message of an `InvalidArgs` refusal.
    fn refused<T: std::fmt::Debug>(result: Result<T, InvalidArgs>) -> String {
        match result {
            Err(InvalidArgs(message)) => message,
            other => panic!("expected InvalidArgs, got {other:?}"),
        }
    }

    fn huge(c: char) -> String {
        std::iter::repeat_n(c, 8 << 20).collect()
    }

    #[test]
    fn names_and_ids_at_their_limits() {
        assert!(name(&"a".repeat(MAX_NAME)).is_ok());
        assert!(name("site-a_2").is_ok());
        for bad in [String::new(), "a".repeat(MAX_NAME + 1), "a b".to_owned(), "ä".to_owned()] {
            let message = refused(name(&bad));
            assert!(message.contains("A-Z, a-z, 0-9"), "{message}");
        }
        assert!(device_id(&"A1".repeat(DEVICE_ID_LEN / 2)).is_ok());
        for bad in ["A1".repeat(DEVICE_ID_LEN / 2 + 1), "A1".repeat(DEVICE_ID_LEN / 2 - 1), "-".repeat(DEVICE_ID_LEN)] {
            assert!(refused(device_id(&bad)).contains("24 letters and digits"));
        }
        assert!(seconds(MAX_SECONDS).is_ok());
        assert!(refused(seconds(MAX_SECONDS + 1)).contains(&format!("at most {MAX_SECONDS} seconds")));
    }

    #[test]
    fn login_at_its_limits() {
        let (user, password) = ("alice@example.com", "pw");
        assert!(login("main", user, password, "").is_ok());
        assert!(login("main", user, password, " 123456\n").is_ok());
        assert!(login("main", &"u".repeat(MAX_USERNAME), &"p".repeat(MAX_PASSWORD), "12345678").is_ok());
        assert!(refused(login("main", &"u".repeat(MAX_USERNAME + 1), password, "")).contains("too long"));
        assert!(refused(login("main", "al\u{1b}[2Jice", password, "")).contains("control character"));
        assert!(refused(login("main", "  ", password, "")).contains("username is empty"));
        assert!(refused(login("main", user, "", "")).contains("password is empty"));
        assert!(refused(login("main", user, &"p".repeat(MAX_PASSWORD + 1), "")).contains("1025 bytes long"));
        assert!(refused(login("main", user, password, "123456789")).contains("6 digits"));
        assert!(refused(login("a b", user, password, "")).contains("token name"));
    }

    #[test]
    fn arguments_come_out_as_the_values_the_engine_takes() {
        assert_eq!(name("site-a_2").unwrap().as_str(), "site-a_2");
        assert_eq!(device_id(&"A1".repeat(DEVICE_ID_LEN / 2)).unwrap().as_str(), "A1".repeat(DEVICE_ID_LEN / 2));
        assert_eq!(seconds(600), Ok(Duration::from_secs(600)));
        assert_eq!(login("main", "alice@example.com", "pw", "").unwrap().as_str(), "main");
        assert!(mfa_code("").unwrap().is_none() && mfa_code(" \n").unwrap().is_none(), "no code: no MFA step");
        assert!(mfa_code(" 123456\n").unwrap().is_some());
        for bad in ["12ab56", "12345", "1234567"] {
            let message = refused(mfa_code(bad));
            assert!(message.contains("6 digits") && !message.contains(bad), "{message}");
        }
    }

    #[test]
    fn refusals_are_short_and_quote_no_secret() {
        for c in ['\u{1}', 'a', '"', '\u{10ffff}'] {
            let big = huge(c);
            let messages = [
                refused(name(&big)),
                refused(device_id(&big)),
                refused(login(&big, "u", "p", "")),
                refused(login("main", &big, "p", "")),
                refused(login("main", "u", &big, "")),
                refused(login("main", "u", "p", &big)),
            ];
            for message in messages {
                assert!(message.len() < 300, "{} bytes: {message}", message.len());
                assert!(message.contains(&big.len().to_string()), "the length is told: {message}");
                assert!(!message.chars().any(char::is_control), "control bytes are escaped: {message:?}");
            }
            let said = refused(login("main", "u", &big, "")) + &refused(login("main", "u", "p", &big));
            let (raw, escaped) = (c.to_string().repeat(3), c.escape_debug().to_string().repeat(3));
            assert!(!said.contains(&raw) && !said.contains(&escaped), "no secret quoted: {said}");
        }
        // A secret that is short enough but wrong is never quoted either.
        let said = refused(login("main", "u", "p", "99999999x"));
        assert!(!said.contains("99999999x"), "{said}");
    }
}
