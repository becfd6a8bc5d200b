//! MFA codes from a TOTP seed (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits), for unattended re-login.

use std::fmt;
use std::time::{Duration, SystemTime};

use token_model::secret::{ExposeSecret, MfaCode, TotpSeed};
use totp_lite::Sha1;
use zeroize::Zeroizing;

use crate::error::LoginError;

/// The shortest seed accepted, in bytes: 80 bits, the shortest seeds authenticator apps are given.
pub const MIN_SEED_BYTES: usize = 10;

/// The length of one TOTP step, in seconds.
const STEP_SECONDS: u64 = 30;

/// A code generator for one seed. `Debug` hides the seed.
pub struct TotpGenerator {
    /// The seed's bytes, decoded from base32.
    secret: Zeroizing<Vec<u8>>,
}

impl TotpGenerator {
    /// Reads a base32 seed. Spaces, dashes, `=` padding and lower case are accepted, as apps show seeds so.
    pub fn from_seed(seed: &TotpSeed) -> Result<Self, LoginError> {
        let cleaned: Zeroizing<String> = Zeroizing::new(
            seed.expose_secret()
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '-')
                .map(|c| c.to_ascii_uppercase())
                .collect::<String>()
                .trim_end_matches('=')
                .to_owned(),
        );
        if cleaned.is_empty() {
            return Err(LoginError::BadTotpSeed { problem: "the seed is empty" });
        }
        if !cleaned.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)) {
            return Err(LoginError::BadTotpSeed { problem: "the seed has characters that are not base32" });
        }
        let secret = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, cleaned.as_str())
            .map(Zeroizing::new)
            .ok_or(LoginError::BadTotpSeed { problem: "the seed is not valid base32 (wrong length?)" })?;
        if secret.len() < MIN_SEED_BYTES {
            return Err(LoginError::BadTotpSeed { problem: "the seed is shorter than 80 bits (16 base32 characters)" });
        }
        Ok(Self { secret })
    }

    /// The code for the 30-second step holding `at` (a time before 1970 counts as 1970).
    pub fn code_at(&self, at: SystemTime) -> MfaCode {
        let seconds = at.duration_since(SystemTime::UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0);
        // HMAC-SHA1 over the 30-second step, 6 digits (RFC 6238); only SHA-1 is built in.
        let text = Zeroizing::new(totp_lite::totp_custom::<Sha1>(STEP_SECONDS, 6, &self.secret, seconds));
        #[allow(clippy::expect_used)]
        MfaCode::parse(text.as_str()).expect("totp-lite formats 6 digits as exactly six digits, zeros kept")
    }
}

impl fmt::Debug for TotpGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpGenerator([redacted])")
    }
}

/// Which clock an unattended MFA code was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeClock {
    /// The cloud's: the `Date` header of the reply that carried the challenge, plus the time elapsed on this
    /// machine's monotonic clock since that reply arrived. This machine's wall clock played no part.
    Cloud,
    /// This machine's wall clock, which nothing confirmed: the reply carried no readable `Date`.
    Local,
}

impl CodeClock {
    /// A short name for messages and logs: `cloud` or `local`.
    pub fn as_str(self) -> &'static str {
        match self {
            CodeClock::Cloud => "cloud",
            CodeClock::Local => "local",
        }
    }
}

/// When to compute an unattended code, and from which clock: the cloud's time when the challenge's reply
/// carried a `Date` (`server_date` plus `since_reply`, the time elapsed locally since it arrived, measured on
/// the monotonic clock), else `local_now`. Pure: every clock reading comes in as a parameter.
///
/// The `Date` has a one-second resolution; the server accepts the neighbouring 30-second step, so that is
/// precise enough.
pub fn code_time(
    server_date: Option<SystemTime>,
    since_reply: Duration,
    local_now: SystemTime,
) -> (SystemTime, CodeClock) {
    match server_date.and_then(|date| date.checked_add(since_reply)) {
        Some(cloud_now) => (cloud_now, CodeClock::Cloud),
        None => (local_now, CodeClock::Local),
    }
}

/// The MFA code for `seed` at time `at`.
pub fn totp_code(seed: &TotpSeed, at: SystemTime) -> Result<MfaCode, LoginError> {
    Ok(TotpGenerator::from_seed(seed)?.code_at(at))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    // RFC 6238 appendix B: the SHA1 seed is the ASCII "12345678901234567890"; the RFC lists 8-digit codes,
    // whose last six digits are the 6-digit codes.
    const RFC_SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn rfc6238_vectors() {
        let vectors = [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ];
        for (seconds, expected) in vectors {
            let code =
                totp_code(&TotpSeed::new(RFC_SEED), SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)).unwrap();
            assert_eq!(code.expose_secret(), expected, "at {seconds}");
        }
    }

    #[test]
    fn seeds_as_apps_show_them() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(59);
        for seed in [
            "gezd gnbv gy3t qojq gezd gnbv gy3t qojq",
            "GEZDGNBV-GY3TQOJQ-GEZDGNBV-GY3TQOJQ",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ====",
        ] {
            assert_eq!(totp_code(&TotpSeed::new(seed), at).unwrap().expose_secret(), "287082", "{seed}");
        }
        // The same step gives the same code; the next step another one.
        let generator = TotpGenerator::from_seed(&TotpSeed::new(RFC_SEED)).unwrap();
        assert_eq!(generator.code_at(SystemTime::UNIX_EPOCH + Duration::from_secs(30)).expose_secret(), "287082");
        assert_ne!(generator.code_at(SystemTime::UNIX_EPOCH + Duration::from_secs(60)).expose_secret(), "287082");
        assert!(!format!("{generator:?}").contains("GEZD"));
    }

    #[test]
    fn code_time_prefers_the_clouds_date() {
        let at = |seconds: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(seconds);
        let local = at(1_700_000_000);
        let cases = [
            // (Date of the challenge's reply, elapsed since it arrived, expected time, expected clock)
            (Some(at(1_700_000_600)), Duration::ZERO, at(1_700_000_600), CodeClock::Cloud),
            (Some(at(1_700_000_600)), Duration::from_secs(7), at(1_700_000_607), CodeClock::Cloud),
            (
                Some(at(1_699_999_400)),
                Duration::from_millis(1_500),
                at(1_699_999_401) + Duration::from_millis(500),
                CodeClock::Cloud,
            ),
            (Some(local), Duration::ZERO, local, CodeClock::Cloud),
            (Some(SystemTime::UNIX_EPOCH), Duration::from_secs(59), at(59), CodeClock::Cloud),
            (None, Duration::ZERO, local, CodeClock::Local),
            (None, Duration::from_secs(30), local, CodeClock::Local),
        ];
        for (date, since, expected, clock) in cases {
            assert_eq!(code_time(date, since, local), (expected, clock), "{date:?} + {since:?}");
        }
        // A Date ten minutes ahead gives the code of that time, not of the local one.
        let generator = TotpGenerator::from_seed(&TotpSeed::new(RFC_SEED)).unwrap();
        let (when, _) = code_time(Some(at(1_111_111_109)), Duration::from_secs(2), at(1_111_110_509));
        assert_eq!(generator.code_at(when).expose_secret(), "050471");
        assert_eq!((CodeClock::Cloud.as_str(), CodeClock::Local.as_str()), ("cloud", "local"));
    }

    #[test]
    fn bad_seeds_say_why() {
        for (seed, expected) in [
            ("", "empty"),
            ("  ", "empty"),
            ("GEZDGNBVGY3TQOJ1", "not base32"),
            ("hello world!", "not base32"),
            ("GEZDGNBV", "shorter than 80 bits"),
        ] {
            let error = TotpGenerator::from_seed(&TotpSeed::new(seed)).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(expected) && message.contains("totp_secret_file"), "{seed:?}: {message}");
        }
    }
}
