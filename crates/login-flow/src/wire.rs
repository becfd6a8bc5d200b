//! The pure halves of every protocol step: functions that build a [`Request`] and functions that read a
//! [`Response`]. No I/O and no clock here (the response carries its arrival time).

use token_model::ids::{ClientId, DeviceId, GroundId, TokenKind};
use token_model::reply::{
    LoginReply, MfaChallenge, OAuthErrorCode, ReplyError, TokenGrant, excerpt, parse_http_date, parse_retry_after,
    read_ground_devices, read_login_reply,
};
use token_model::secret::{AccessToken, ExposeSecret, MfaCode, RefreshToken, StaticToken};
use url::form_urlencoded;

use crate::config::MfaFields;
use crate::error::{LoginError, Step};
use crate::steps::{Credentials, MfaPending, PasswordOutcome};
use crate::transport::{Method, Request, Response, SecretText};

/// The token endpoint's path.
pub const LOGIN_PATH: &str = "/login";

fn login_request(pairs: &[(&str, &str)]) -> Request {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        form.append_pair(name, value);
    }
    Request {
        method: Method::Post,
        path: LOGIN_PATH.to_owned(),
        bearer: None,
        form: Some(SecretText::new(form.finish())),
    }
}

fn bearer_get(path: String, token: &str) -> Request {
    Request { method: Method::Get, path, bearer: Some(SecretText::new(token.to_owned())), form: None }
}

/// `POST /login` with `grant_type=password&username=…&password=…&client_id=…`.
pub fn password_grant_request(client_id: &ClientId, credentials: &Credentials) -> Request {
    login_request(&[
        ("grant_type", "password"),
        ("username", credentials.username()),
        ("password", credentials.password().expose_secret()),
        ("client_id", client_id.as_str()),
    ])
}

/// `POST /login` completing MFA: `grant_type=<mfa>&client_id=…&<uid>=…&<user>=…&<code>=…`, names from `fields`.
pub fn mfa_request(client_id: &ClientId, fields: &MfaFields, challenge: &MfaChallenge, code: &MfaCode) -> Request {
    login_request(&[
        ("grant_type", &fields.grant_type),
        ("client_id", client_id.as_str()),
        (&fields.uid_field, challenge.mfa_uid()),
        (&fields.user_field, challenge.user_id()),
        (&fields.code_field, code.expose_secret()),
    ])
}

/// `POST /login` with `grant_type=refresh_token&refresh_token=…&client_id=…` (the login's client id).
pub fn refresh_request(client_id: &ClientId, refresh_token: &RefreshToken) -> Request {
    login_request(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.expose_secret()),
        ("client_id", client_id.as_str()),
    ])
}

/// `GET /me/grounds` with the user's access token: checks a user token.
pub fn user_probe_request(token: &AccessToken) -> Request {
    bearer_get("/me/grounds".to_owned(), token.expose_secret())
}

/// `GET /device/{id}` with a device token: checks it may access its device.
pub fn device_probe_request(token: &StaticToken, device: &DeviceId) -> Request {
    bearer_get(format!("/device/{device}"), token.expose_secret())
}

/// `GET /ground/{id}/devices` with a ground token: checks it and lists the ground's devices.
pub fn ground_probe_request(token: &StaticToken, ground: &GroundId) -> Request {
    bearer_get(format!("/ground/{ground}/devices"), token.expose_secret())
}

/// Reads a `/login` reply for `step`: tokens, a challenge, or the protocol's error.
pub fn read_login_step(step: Step, response: &Response) -> Result<LoginReply, LoginError> {
    if response.status == 429 {
        return Err(rate_limited(response));
    }
    match read_login_reply(response.status, response.date.as_deref(), &response.body) {
        Ok(LoginReply::Rejected(error)) => Err(match (error.code, step) {
            (OAuthErrorCode::InvalidGrant, Step::Password) => {
                LoginError::BadCredentials { description: error.description }
            }
            (OAuthErrorCode::InvalidGrant, Step::Mfa) => {
                LoginError::BadMfaCode { description: error.description, code_clock: None }
            }
            (OAuthErrorCode::InvalidGrant, Step::Refresh) => LoginError::RefreshRejected,
            (OAuthErrorCode::InvalidClient, step) => {
                LoginError::ClientRejected { step, description: error.description }
            }
            (OAuthErrorCode::UnsupportedGrantType, step) => LoginError::UnsupportedGrant { step },
            (_, step) => LoginError::Rejected { step, code: error.raw_code, description: error.description },
        }),
        Ok(reply) => Ok(reply),
        Err(error) => Err(reply_error(error)),
    }
}

/// Reads the password grant's reply: tokens, or a pending MFA login that keeps the reply's `Date` (the
/// cloud's clock, for computing a TOTP code at the cloud's time).
pub fn read_password_reply(response: &Response) -> Result<PasswordOutcome, LoginError> {
    match read_login_step(Step::Password, response)? {
        LoginReply::Granted(grant) => Ok(PasswordOutcome::Granted(grant)),
        LoginReply::MfaRequired(challenge) => {
            let server_date = response.date.as_deref().and_then(parse_http_date);
            Ok(PasswordOutcome::MfaRequired(MfaPending::new(challenge).with_server_date(server_date)))
        }
        LoginReply::Rejected(_) => Err(unexpected(response, "a rejection that was not classified")),
    }
}

/// Reads the MFA step's reply: tokens (another challenge is not a valid answer).
pub fn read_mfa_reply(response: &Response) -> Result<TokenGrant, LoginError> {
    match read_login_step(Step::Mfa, response)? {
        LoginReply::Granted(grant) => Ok(grant),
        _ => Err(unexpected(response, "the MFA step was answered with another MFA challenge")),
    }
}

/// Reads a refresh reply: tokens (a refresh never asks for MFA).
pub fn read_refresh_reply(response: &Response) -> Result<TokenGrant, LoginError> {
    match read_login_step(Step::Refresh, response)? {
        LoginReply::Granted(grant) => Ok(grant),
        _ => Err(unexpected(response, "the refresh was answered with an MFA challenge")),
    }
}

/// Reads a token check's status: 200 valid, 401 revoked, 403 wrong scope; anything else is transient.
pub fn read_probe_reply(kind: TokenKind, response: &Response) -> Result<(), LoginError> {
    match response.status {
        200..=299 => Ok(()),
        401 => Err(LoginError::TokenRevoked { kind }),
        403 => Err(LoginError::WrongScope { kind }),
        429 => Err(rate_limited(response)),
        status => Err(LoginError::ServerError { status, excerpt: excerpt(&response.body) }),
    }
}

/// Reads a ground token check: the ids of the ground's devices when the token is valid.
pub fn read_ground_probe_reply(response: &Response) -> Result<Vec<DeviceId>, LoginError> {
    read_probe_reply(TokenKind::Ground, response)?;
    read_ground_devices(&response.body).map_err(reply_error)
}

fn rate_limited(response: &Response) -> LoginError {
    let retry_after = response.retry_after.as_deref().and_then(|value| parse_retry_after(value, response.received_at));
    LoginError::RateLimited { retry_after }
}

fn reply_error(error: ReplyError) -> LoginError {
    match error {
        ReplyError::UnexpectedStatus { status, excerpt } => LoginError::ServerError { status, excerpt },
        other => LoginError::Malformed(other),
    }
}

fn unexpected(response: &Response, problem: &str) -> LoginError {
    LoginError::Malformed(ReplyError::Malformed {
        status: response.status,
        problem: problem.to_owned(),
        excerpt: excerpt(&response.body),
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use proptest::prelude::*;
    use token_model::secret::Password;

    use super::*;

    fn form_of(request: &Request) -> Vec<(String, String)> {
        let body = request.form.as_ref().expect("a form body").expose_secret().to_owned();
        form_urlencoded::parse(body.as_bytes()).into_owned().collect()
    }

    fn reply(status: u16, body: &str) -> Response {
        Response {
            status,
            date: Some("Wed, 20 Aug 2014 14:55:40 GMT".to_owned()),
            retry_after: None,
            body: body.as_bytes().to_vec(),
            received_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_408_546_540),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
    }

    const GRANT: &str = r#"{"access_token":"AT","token_type":"bearer","expires_in":3599,"refresh_token":"RT"}"#;

    #[test]
    fn password_grant_is_form_encoded() {
        let password = "p&ss+w=rd %é€\u{1F600}";
        let request = password_grant_request(
            &ClientId::default(),
            &Credentials::new("alice+test@example.com", Password::new(password)),
        );
        assert_eq!((request.method, request.path.as_str()), (Method::Post, "/login"));
        assert!(request.bearer.is_none());
        let body = request.form.as_ref().unwrap().expose_secret();
        assert!(!body.contains('&') || body.matches('&').count() == 3, "{body}");
        assert!(
            body.starts_with("grant_type=password&username=alice%2Btest%40example.com&password=p%26ss%2Bw%3Drd+%25"),
            "{body}"
        );
        assert_eq!(
            form_of(&request),
            pairs(&[
                ("grant_type", "password"),
                ("username", "alice+test@example.com"),
                ("password", password),
                ("client_id", "web"),
            ])
        );
        let shown = format!("{request:?}");
        assert!(!shown.contains("p%26ss") && shown.contains("[redacted]"), "{shown}");
    }

    #[test]
    fn mfa_request_uses_configured_names() {
        let challenge = MfaChallenge::new("uid&1", "user 2");
        let code = MfaCode::parse("012345").unwrap();
        let request = mfa_request(&ClientId::new("mobile").unwrap(), &MfaFields::default(), &challenge, &code);
        assert_eq!(request.path, "/login");
        assert_eq!(
            form_of(&request),
            pairs(&[
                ("grant_type", "mfa"),
                ("client_id", "mobile"),
                ("mfa_uid", "uid&1"),
                ("user_id", "user 2"),
                ("code", "012345")
            ])
        );
        let fields = MfaFields {
            grant_type: "mfa_otp".into(),
            uid_field: "MfaUid".into(),
            user_field: "UserId".into(),
            code_field: "otp".into(),
        };
        let request = mfa_request(&ClientId::default(), &fields, &challenge, &code);
        assert_eq!(
            form_of(&request),
            pairs(&[
                ("grant_type", "mfa_otp"),
                ("client_id", "web"),
                ("MfaUid", "uid&1"),
                ("UserId", "user 2"),
                ("otp", "012345")
            ])
        );
    }

    #[test]
    fn refresh_request_carries_the_client_id() {
        let request = refresh_request(&ClientId::new("postman").unwrap(), &RefreshToken::new("r/t+=="));
        assert_eq!(
            form_of(&request),
            pairs(&[("grant_type", "refresh_token"), ("refresh_token", "r/t+=="), ("client_id", "postman")])
        );
    }

    #[test]
    fn probe_requests() {
        let device = DeviceId::new("abcdefghijklmnopqrstuvwx").unwrap();
        let ground = GroundId::new("ABCDEFGHIJKLMNOPQRSTUVWX").unwrap();
        let token = StaticToken::new("maker:4AbCd");
        let cases = [
            (user_probe_request(&AccessToken::new("user-AT-1")), "/me/grounds", "user-AT-1"),
            (device_probe_request(&token, &device), "/device/abcdefghijklmnopqrstuvwx", "maker:4AbCd"),
            (ground_probe_request(&token, &ground), "/ground/ABCDEFGHIJKLMNOPQRSTUVWX/devices", "maker:4AbCd"),
        ];
        for (request, path, bearer) in cases {
            assert_eq!(request.method, Method::Get);
            assert_eq!(request.path, path);
            assert_eq!(request.bearer.as_ref().unwrap().expose_secret(), bearer);
            assert!(request.form.is_none());
            assert!(!format!("{request:?}").contains(bearer));
        }
    }

    #[test]
    fn password_replies() {
        match read_password_reply(&reply(200, GRANT)).unwrap() {
            PasswordOutcome::Granted(grant) => {
                assert_eq!(grant.access_token.expose_secret(), "AT");
                assert!(grant.server_date.is_some());
            }
            other => panic!("{other:?}"),
        }
        for (status, body) in [
            (200, r#"{"MfaUid":"m","UserId":"u"}"#),
            (400, r#"{"MfaUid":"m","UserId":"u"}"#),
            (400, r#"{"error":"mfa_required","error_description":"{\"MfaUid\":\"m\",\"UserId\":\"u\"}"}"#),
        ] {
            match read_password_reply(&reply(status, body)).unwrap() {
                PasswordOutcome::MfaRequired(pending) => {
                    assert_eq!((pending.challenge().mfa_uid(), pending.challenge().user_id()), ("m", "u"));
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_challenge_keeps_the_replys_date() {
        let sent = SystemTime::UNIX_EPOCH + Duration::from_secs(1_408_546_540);
        let cases = [
            (Some("Wed, 20 Aug 2014 14:55:40 GMT"), Some(sent)),
            (Some(" Wed, 20 Aug 2014 14:55:40 GMT "), Some(sent)),
            (Some("Wednesday, 20-Aug-14 14:55:40 GMT"), Some(sent)),
            (Some("Wed Aug 20 14:55:40 2014"), Some(sent)),
            (Some("yesterday"), None),
            (Some(""), None),
            (None, None),
        ];
        for body in [
            r#"{"MfaUid":"m","UserId":"u"}"#,
            r#"{"error":"mfa_required","error_description":"{\"MfaUid\":\"m\",\"UserId\":\"u\"}"}"#,
        ] {
            for (header, expected) in cases {
                let mut response = reply(400, body);
                response.date = header.map(str::to_owned);
                match read_password_reply(&response).unwrap() {
                    PasswordOutcome::MfaRequired(pending) => {
                        assert_eq!(pending.server_date(), expected, "{header:?} {body}");
                    }
                    other => panic!("{body}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn error_replies_per_step() {
        let cases: [(Step, u16, &str, LoginError); 12] = [
            (
                Step::Password,
                400,
                r#"{"error":"invalid_grant","error_description":"wrong"}"#,
                LoginError::BadCredentials { description: Some("wrong".into()) },
            ),
            (
                Step::Mfa,
                400,
                r#"{"error":"invalid_grant"}"#,
                LoginError::BadMfaCode { description: None, code_clock: None },
            ),
            (Step::Refresh, 400, r#"{"error":"invalid_grant"}"#, LoginError::RefreshRejected),
            (
                Step::Refresh,
                400,
                r#"{"error":"invalid_clientId"}"#,
                LoginError::ClientRejected { step: Step::Refresh, description: None },
            ),
            (
                Step::Password,
                400,
                r#"{"error":"invalid_client"}"#,
                LoginError::ClientRejected { step: Step::Password, description: None },
            ),
            (Step::Mfa, 400, r#"{"error":"unsupported_grant_type"}"#, LoginError::UnsupportedGrant { step: Step::Mfa }),
            (
                Step::Password,
                400,
                r#"{"error":"invalid_request"}"#,
                LoginError::Rejected { step: Step::Password, code: "invalid_request".into(), description: None },
            ),
            (Step::Password, 500, "oops", LoginError::ServerError { status: 500, excerpt: "oops".into() }),
            (Step::Refresh, 503, "", LoginError::ServerError { status: 503, excerpt: String::new() }),
            (Step::Refresh, 302, "", LoginError::ServerError { status: 302, excerpt: String::new() }),
            (Step::Password, 401, "{}", LoginError::ServerError { status: 401, excerpt: "{}".into() }),
            (Step::Refresh, 429, "slow down", LoginError::RateLimited { retry_after: None }),
        ];
        for (step, status, body, expected) in cases {
            assert_eq!(read_login_step(step, &reply(status, body)).unwrap_err(), expected, "{step:?} {status} {body}");
        }
        let error = read_refresh_reply(&reply(200, "<html>")).unwrap_err();
        assert!(matches!(error, LoginError::Malformed(ReplyError::NotJson { .. })) && error.is_transient());
        let error = read_refresh_reply(&reply(200, r#"{"MfaUid":"m","UserId":"u"}"#)).unwrap_err();
        assert!(matches!(error, LoginError::Malformed(ReplyError::Malformed { .. })), "{error:?}");
        let error = read_mfa_reply(&reply(400, r#"{"MfaUid":"m","UserId":"u"}"#)).unwrap_err();
        assert!(error.to_string().contains("another MFA challenge"), "{error}");
        assert!(matches!(read_mfa_reply(&reply(200, GRANT)), Ok(grant) if grant.refresh_token.is_some()));
    }

    #[test]
    fn retry_after_is_read() {
        let mut response = reply(429, "");
        response.retry_after = Some("17".into());
        assert_eq!(
            read_login_step(Step::Password, &response).unwrap_err().retry_after(),
            Some(Duration::from_secs(17))
        );
        response.retry_after = Some("Wed, 20 Aug 2014 14:56:40 GMT".into());
        assert_eq!(
            read_login_step(Step::Password, &response).unwrap_err().retry_after(),
            Some(Duration::from_secs(60))
        );
        response.retry_after = Some("soon".into());
        assert_eq!(
            read_probe_reply(TokenKind::User, &response).unwrap_err(),
            LoginError::RateLimited { retry_after: None }
        );
    }

    #[test]
    fn probe_replies() {
        assert_eq!(read_probe_reply(TokenKind::User, &reply(200, r#"{"items":[]}"#)), Ok(()));
        assert_eq!(
            read_probe_reply(TokenKind::Device, &reply(401, "")),
            Err(LoginError::TokenRevoked { kind: TokenKind::Device })
        );
        assert_eq!(
            read_probe_reply(TokenKind::Device, &reply(403, "")),
            Err(LoginError::WrongScope { kind: TokenKind::Device })
        );
        for status in [404, 500, 502, 503] {
            let error = read_probe_reply(TokenKind::Ground, &reply(status, "x")).unwrap_err();
            assert!(error.is_transient(), "{status}: {error:?}");
        }
        let ids = read_ground_probe_reply(&reply(200, r#"{"items":[{"id":"abcdefghijklmnopqrstuvwx"}]}"#)).unwrap();
        assert_eq!(ids, [DeviceId::new("abcdefghijklmnopqrstuvwx").unwrap()]);
        assert_eq!(read_ground_probe_reply(&reply(403, "")), Err(LoginError::WrongScope { kind: TokenKind::Ground }));
        assert!(read_ground_probe_reply(&reply(200, "[]")).unwrap_err().is_transient());
    }

    proptest! {
        #[test]
        fn reply_handling_never_panics(
            status in any::<u16>(),
            date in proptest::option::of("\\PC{0,40}"),
            retry_after in proptest::option::of("\\PC{0,40}"),
            body in prop::collection::vec(any::<u8>(), 0..300),
            seconds in any::<u32>(),
        ) {
            let response = Response {
                status,
                date,
                retry_after,
                body,
                received_at: SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.into()),
            };
            for step in [Step::Password, Step::Mfa, Step::Refresh] {
                if let Err(error) = read_login_step(step, &response) {
                    let _ = (error.to_string(), error.is_transient(), error.retry_after());
                    // Only a 400 from /login is a verdict.
                    if status != 400 {
                        prop_assert!(error.is_transient(), "{error:?}");
                    }
                }
            }
            let _ = read_password_reply(&response);
            let _ = read_mfa_reply(&response);
            let _ = read_refresh_reply(&response);
            let _ = read_probe_reply(TokenKind::Device, &response);
            let _ = read_ground_probe_reply(&response);
        }
    }
}
