//! The MFA step's names, which nothing public fixes: the configured `[api.mfa]` first, then a short built-in
//! list of other plausible ones, and the one rule that decides when the next may be tried.
//!
//! The next variant is tried only when the cloud's answer shows it did not process the request at all: an
//! `unsupported_grant_type` (it does not know the grant type), or an `invalid_request` whose description says a
//! field is missing or required (it does not know the field names). Neither checked the code nor used the
//! challenge, so the same code can be sent again with other names. Every other answer ends the search: an
//! `invalid_grant` judged the code or the challenge, and a timeout, a 5xx or a lost connection leaves unknown
//! whether the code was checked.

use crate::config::MfaFields;
use crate::error::{LoginError, Step};

/// The built-in variants, in the order they are tried after the configured one (which is left out here when it
/// is one of them): `grant_type`, then the fields carrying `MfaUid`, `UserId` and the code.
///
/// 1. `mfa` with `mfa_uid`, `user_id`, `code`: the documented default (`crates/login-flow/PROTOCOL.md`);
/// 2. `mfa` with `MfaUid`, `UserId`, `code`: the names the challenge itself carries;
/// 3. `mfa` with `mfaUid`, `userId`, `code`: the same in camelCase;
/// 4. `mfa_code` with `mfa_uid`, `user_id`, `code`: another grant type name;
/// 5. `otp` with `mfa_uid`, `user_id`, `otp`: a one-time-password grant.
pub const KNOWN_VARIANTS: [[&str; 4]; 5] = [
    ["mfa", "mfa_uid", "user_id", "code"],
    ["mfa", "MfaUid", "UserId", "code"],
    ["mfa", "mfaUid", "userId", "code"],
    ["mfa_code", "mfa_uid", "user_id", "code"],
    ["otp", "mfa_uid", "user_id", "otp"],
];

/// The variants to try, in order and without repeats: `known` (one that worked before, if any), then
/// `configured` (`[api.mfa]`), then [`KNOWN_VARIANTS`].
pub fn mfa_variants(configured: &MfaFields, known: Option<&MfaFields>) -> Vec<MfaFields> {
    let built_in = KNOWN_VARIANTS.iter().map(|[grant_type, uid, user, code]| MfaFields {
        grant_type: (*grant_type).to_owned(),
        uid_field: (*uid).to_owned(),
        user_field: (*user).to_owned(),
        code_field: (*code).to_owned(),
    });
    let mut variants: Vec<MfaFields> = Vec::with_capacity(KNOWN_VARIANTS.len() + 2);
    for variant in known.cloned().into_iter().chain([configured.clone()]).chain(built_in) {
        if !variants.contains(&variant) {
            variants.push(variant);
        }
    }
    variants
}

/// Why an MFA step's answer shows the cloud did not process the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotProcessed {
    /// `unsupported_grant_type`: the grant type is unknown; other variants with that grant type are skipped.
    GrantType,
    /// `invalid_request` naming a missing (or required) field: the field names are not the cloud's.
    MissingField,
}

/// Whether `error`, the answer to an MFA step, shows the cloud did not process the request (so the next variant
/// may be tried with the same code); `None` for every other error, above all a refused code (`invalid_grant`).
pub fn not_processed(error: &LoginError) -> Option<NotProcessed> {
    match error {
        LoginError::UnsupportedGrant { step: Step::Mfa } => Some(NotProcessed::GrantType),
        LoginError::Rejected { step: Step::Mfa, code, description: Some(description) }
            if code.eq_ignore_ascii_case("invalid_request") && names_a_missing_field(description) =>
        {
            Some(NotProcessed::MissingField)
        }
        _ => None,
    }
}

fn names_a_missing_field(description: &str) -> bool {
    let text = description.to_ascii_lowercase();
    ["missing", "required"].iter().any(|word| text.contains(word))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use token_model::reply::ReplyError;

    use super::*;
    use crate::totp::CodeClock;

    fn fields(names: [&str; 4]) -> MfaFields {
        let [grant_type, uid_field, user_field, code_field] = names.map(str::to_owned);
        MfaFields { grant_type, uid_field, user_field, code_field }
    }

    #[test]
    fn the_configured_variant_comes_first_and_nothing_twice() {
        let defaults = mfa_variants(&MfaFields::default(), None);
        assert_eq!(defaults.len(), KNOWN_VARIANTS.len(), "the default is the first built-in one");
        assert_eq!(defaults[0], MfaFields::default());
        assert_eq!(defaults[1], fields(KNOWN_VARIANTS[1]));

        let own = fields(["otp", "challenge", "uid", "totp"]);
        let variants = mfa_variants(&own, None);
        assert_eq!(variants.len(), KNOWN_VARIANTS.len() + 1);
        assert_eq!((&variants[0], &variants[1]), (&own, &MfaFields::default()));

        let camel = fields(KNOWN_VARIANTS[2]);
        let variants = mfa_variants(&MfaFields::default(), Some(&camel));
        assert_eq!(variants.len(), KNOWN_VARIANTS.len(), "a known built-in one is moved first, not repeated");
        assert_eq!((&variants[0], &variants[1]), (&camel, &MfaFields::default()));
        assert_eq!(mfa_variants(&own, Some(&own)), mfa_variants(&own, None));
    }

    #[test]
    fn only_answers_that_show_nothing_was_processed_allow_the_next_variant() {
        let rejected = |code: &str, description: Option<&str>| LoginError::Rejected {
            step: Step::Mfa,
            code: code.to_owned(),
            description: description.map(str::to_owned),
        };
        let next = [
            (LoginError::UnsupportedGrant { step: Step::Mfa }, NotProcessed::GrantType),
            (rejected("invalid_request", Some("The field mfaUid is missing.")), NotProcessed::MissingField),
            (rejected("invalid_request", Some("code: Required")), NotProcessed::MissingField),
            (rejected("INVALID_REQUEST", Some("missing parameter: otp")), NotProcessed::MissingField),
        ];
        for (error, why) in next {
            assert_eq!(not_processed(&error), Some(why), "{error:?}");
        }
        let stop = [
            // A refused code or challenge: never sent again.
            LoginError::BadMfaCode { description: None, code_clock: None },
            LoginError::BadMfaCode { description: Some("missing".into()), code_clock: Some(CodeClock::Cloud) },
            // An invalid_request that names no missing field, or says nothing.
            rejected("invalid_request", Some("The code has the wrong format.")),
            rejected("invalid_request", None),
            rejected("access_denied", Some("a field is missing")),
            // Another step's answers.
            LoginError::UnsupportedGrant { step: Step::Password },
            LoginError::Rejected {
                step: Step::Refresh,
                code: "invalid_request".into(),
                description: Some("missing".into()),
            },
            // The outcome is unknown or the server failed: the code may have been checked.
            LoginError::Timeout { after: Duration::from_secs(15) },
            LoginError::ConnectionLost { detail: "reset".into() },
            LoginError::ServerError { status: 503, excerpt: String::new() },
            LoginError::RateLimited { retry_after: None },
            LoginError::Malformed(ReplyError::NotJson { status: 200, excerpt: "<html>".into() }),
            LoginError::ClientRejected { step: Step::Mfa, description: None },
        ];
        for error in stop {
            assert_eq!(not_processed(&error), None, "{error:?}");
        }
    }
}
