use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fake_cloud::{FakeCloud, MfaFields, MfaShape};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{
    ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, BOB_SEED, client, config, mfa_step, password_login, post_form,
    secs_between, start,
};

#[tokio::test]
async fn password_login_without_mfa_returns_the_token_reply() {
    let cloud = start().await;
    let client = client();
    // The password holds &, +, = and a space: it only matches when properly URL-encoded.
    let reply = password_login(&client, &cloud, "ALICE@example.com", ALICE_PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);
    assert_eq!(reply.body["token_type"], "bearer");
    assert_eq!(reply.body["expires_in"], 3599);
    assert_eq!(reply.body["as:client_id"], "web");
    assert_eq!(reply.body["userName"], ALICE);
    assert_eq!(secs_between(reply.str(".issued"), reply.str(".expires")), 3600);
    let access = reply.str("access_token");
    let refresh = reply.str("refresh_token");
    assert!(access.len() >= 40 && refresh.len() >= 40, "tokens are long opaque strings");
    assert_ne!(access, refresh);
    assert!(cloud.control().is_access_token_valid(access));
    assert!(cloud.control().is_refresh_token_valid(refresh));
    assert!(!cloud.control().is_access_token_valid(refresh), "a refresh token is no access token");
    let counters = cloud.control().counters();
    assert_eq!((counters.password_grants, counters.password_grants_ok, counters.requests_total), (1, 1, 1));
}

#[tokio::test]
async fn each_login_gets_new_tokens() {
    let cloud = start().await;
    let client = client();
    let first = password_login(&client, &cloud, ALICE, ALICE_PASSWORD).await;
    let second = password_login(&client, &cloud, ALICE, ALICE_PASSWORD).await;
    assert_ne!(first.str("access_token"), second.str("access_token"));
    assert_ne!(first.str("refresh_token"), second.str("refresh_token"));
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_invalid_grant() {
    let cloud = start().await;
    let client = client();
    for (user, password) in [(ALICE, "wrong"), ("nobody@example.com", ALICE_PASSWORD), (ALICE, "p&ss w=rd %1")] {
        let reply = password_login(&client, &cloud, user, password).await;
        reply.assert_error("invalid_grant");
        assert_eq!(reply.body["error_description"], "The user name or password is incorrect.");
    }
    let reply =
        post_form(&client, &cloud, &[("grant_type", "password"), ("username", ALICE), ("client_id", "web")]).await;
    reply.assert_error("invalid_grant");
    let counters = cloud.control().counters();
    assert_eq!((counters.password_grants, counters.password_grants_ok), (4, 0));
}

#[tokio::test]
async fn client_id_missing_or_unknown_is_invalid_client_id() {
    let cloud = start().await;
    let client = client();
    let base = [("grant_type", "password"), ("username", ALICE), ("password", ALICE_PASSWORD)];
    post_form(&client, &cloud, &base).await.assert_error("invalid_clientId");
    let mut unknown = base.to_vec();
    unknown.push(("client_id", "desktop"));
    post_form(&client, &cloud, &unknown).await.assert_error("invalid_clientId");
    for accepted in ["web", "mobile", "postman", "maker"] {
        let mut form = base.to_vec();
        form.push(("client_id", accepted));
        let reply = post_form(&client, &cloud, &form).await;
        assert_eq!(reply.status, StatusCode::OK, "client_id {accepted}: {}", reply.body);
        assert_eq!(reply.body["as:client_id"], accepted);
    }
}

#[tokio::test]
async fn grant_type_missing_or_unknown_is_unsupported() {
    let cloud = start().await;
    let client = client();
    post_form(&client, &cloud, &[("client_id", "web"), ("username", ALICE)])
        .await
        .assert_error("unsupported_grant_type");
    post_form(&client, &cloud, &[("client_id", "web"), ("grant_type", "client_credentials")])
        .await
        .assert_error("unsupported_grant_type");
}

#[tokio::test]
async fn mfa_shape_1_is_a_200_with_the_identifiers_then_the_code_gives_tokens() {
    let cloud = start().await;
    let client = client();
    let challenge = password_login(&client, &cloud, BOB, BOB_PASSWORD).await;
    assert_eq!(challenge.status, StatusCode::OK);
    assert!(challenge.body.get("access_token").is_none(), "no token before the code: {}", challenge.body);
    let (uid, user_id) = (challenge.str("MfaUid"), challenge.str("UserId"));
    assert_eq!(user_id.len(), 24);
    let code = cloud.control().current_totp(BOB).expect("Bob has MFA");
    assert_eq!(code.len(), 6);
    let tokens = mfa_step(&client, &cloud, uid, user_id, &code).await;
    assert_eq!(tokens.status, StatusCode::OK, "body: {}", tokens.body);
    assert_eq!(tokens.body["userName"], BOB);
    assert!(cloud.control().is_access_token_valid(tokens.str("access_token")));
    let counters = cloud.control().counters();
    assert_eq!((counters.password_grants_ok, counters.mfa_steps, counters.mfa_steps_ok), (1, 1, 1));
    assert_eq!(cloud.control().current_totp(ALICE), None, "Alice has no MFA");
}

#[tokio::test]
async fn mfa_shape_2_is_a_400_with_the_identifiers_inside_error_description() {
    let cloud = FakeCloud::start(config().with_mfa_shape(MfaShape::ErrorDescription)).await;
    let client = client();
    let challenge = password_login(&client, &cloud, BOB, BOB_PASSWORD).await;
    challenge.assert_error("mfa_required");
    let inner: Value = serde_json::from_str(challenge.str("error_description")).expect("a JSON object as a string");
    let (uid, user_id) = (inner["MfaUid"].as_str().expect("MfaUid"), inner["UserId"].as_str().expect("UserId"));
    let code = cloud.control().current_totp(BOB).expect("Bob has MFA");
    let tokens = mfa_step(&client, &cloud, uid, user_id, &code).await;
    assert_eq!(tokens.status, StatusCode::OK, "body: {}", tokens.body);

    // Switched at run time, the next challenge has shape 1.
    cloud.control().set_mfa_shape(MfaShape::TopLevel);
    let challenge = password_login(&client, &cloud, BOB, BOB_PASSWORD).await;
    assert_eq!(challenge.status, StatusCode::OK);
    assert!(challenge.body["MfaUid"].is_string());
}

/// A six-digit code that the fake refuses now: none of the codes of the previous, current and next two steps.
fn wrong_code() -> String {
    let secret = totp_rs::Secret::try_from_base32(BOB_SEED).expect("the test seed is base32");
    let totp = totp_rs::Builder::new().with_secret(secret).build().expect("a 160-bit seed");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    let nearby: Vec<String> = (0..5).map(|step| totp.generate(now - 60 + step * 30).to_string()).collect();
    ["000000", "111111", "222222", "333333", "444444", "555555"]
        .into_iter()
        .find(|candidate| !nearby.iter().any(|code| code == candidate))
        .expect("five codes cannot cover six candidates")
        .to_owned()
}

#[tokio::test]
async fn wrong_code_is_invalid_grant_and_the_challenge_stays_usable() {
    let cloud = start().await;
    let client = client();
    let challenge = password_login(&client, &cloud, BOB, BOB_PASSWORD).await;
    let (uid, user_id) = (challenge.str("MfaUid").to_owned(), challenge.str("UserId").to_owned());
    let right = cloud.control().current_totp(BOB).expect("Bob has MFA");
    let reply = mfa_step(&client, &cloud, &uid, &user_id, &wrong_code()).await;
    reply.assert_error("invalid_grant");
    let reply = mfa_step(&client, &cloud, &uid, &user_id, "12345").await;
    reply.assert_error("invalid_grant");
    let reply = mfa_step(&client, &cloud, &uid, "AAAAAAAAAAAAAAAAAAAAAAAA", &right).await;
    reply.assert_error("invalid_grant");
    let right = cloud.control().current_totp(BOB).expect("Bob has MFA");
    let reply = mfa_step(&client, &cloud, &uid, &user_id, &right).await;
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);
    assert_eq!(cloud.control().counters().mfa_steps, 4);
}

/// Bob's code at Unix second `at`.
fn code_at(at: u64) -> String {
    let secret = totp_rs::Secret::try_from_base32(BOB_SEED).expect("the test seed is base32");
    totp_rs::Builder::new().with_secret(secret).build().expect("a 160-bit seed").generate(at).to_string()
}

#[tokio::test]
async fn codes_follow_the_servers_clock() {
    // A cloud whose time differs from this machine's checks codes against its own time, as a real one would;
    // the user's authenticator app agrees with the cloud.
    let cloud = start().await;
    let client = client();
    cloud.control().set_clock_offset_secs(10 * 60);
    let local_now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    let server_now = cloud.control().server_now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    assert!((server_now - local_now).abs_diff(600) <= 5, "the offset shifts the server's clock");
    assert_eq!(cloud.control().current_totp(BOB), Some(code_at(server_now)), "the app shows the server's code");

    let challenge = password_login(&client, &cloud, BOB, BOB_PASSWORD).await;
    let (uid, user_id) = (challenge.str("MfaUid").to_owned(), challenge.str("UserId").to_owned());
    let local_code = code_at(local_now);
    let server_codes: Vec<String> = (0..=2).map(|step| code_at(server_now - 30 + step * 30)).collect();
    if !server_codes.contains(&local_code) {
        let reply = mfa_step(&client, &cloud, &uid, &user_id, &local_code).await;
        reply.assert_error("invalid_grant");
    }
    let reply = mfa_step(&client, &cloud, &uid, &user_id, &code_at(server_now)).await;
    assert_eq!(reply.status, StatusCode::OK, "the code of the server's time is accepted: {}", reply.body);
}

#[tokio::test]
async fn a_used_or_unknown_challenge_is_invalid_grant() {
    let cloud = start().await;
    let client = client();
    let challenge = password_login(&client, &cloud, BOB, BOB_PASSWORD).await;
    let (uid, user_id) = (challenge.str("MfaUid"), challenge.str("UserId"));
    let code = cloud.control().current_totp(BOB).expect("Bob has MFA");
    assert_eq!(mfa_step(&client, &cloud, uid, user_id, &code).await.status, StatusCode::OK);
    let again = mfa_step(&client, &cloud, uid, user_id, &code).await;
    again.assert_error("invalid_grant");
    assert!(again.str("error_description").contains("already used"));
    mfa_step(&client, &cloud, "no-such-challenge", user_id, &code).await.assert_error("invalid_grant");
}

#[tokio::test]
async fn an_expired_challenge_is_invalid_grant() {
    let cloud = start().await;
    let client = client();
    let challenge = password_login(&client, &cloud, BOB, BOB_PASSWORD).await;
    // Five minutes on the server's clock (TOTP codes follow it too).
    cloud.control().advance_clock(Duration::from_secs(5 * 60 + 1));
    let code = cloud.control().current_totp(BOB).expect("Bob has MFA");
    let reply = mfa_step(&client, &cloud, challenge.str("MfaUid"), challenge.str("UserId"), &code).await;
    reply.assert_error("invalid_grant");
    assert!(reply.str("error_description").contains("expired"));
}

#[tokio::test]
async fn the_mfa_step_uses_the_configured_names() {
    let fields = MfaFields {
        grant_type: "otp".to_owned(),
        uid_field: "MfaUid".to_owned(),
        user_field: "UserId".to_owned(),
        code_field: "otp_code".to_owned(),
    };
    let cloud = FakeCloud::start(config().with_mfa_fields(fields)).await;
    let client = client();
    let challenge = password_login(&client, &cloud, BOB, BOB_PASSWORD).await;
    let (uid, user_id) = (challenge.str("MfaUid"), challenge.str("UserId"));
    let code = cloud.control().current_totp(BOB).expect("Bob has MFA");
    mfa_step(&client, &cloud, uid, user_id, &code).await.assert_error("unsupported_grant_type");
    let reply = post_form(
        &client,
        &cloud,
        &[("grant_type", "otp"), ("client_id", "web"), ("MfaUid", uid), ("UserId", user_id), ("otp_code", &code)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);
}

#[tokio::test]
async fn other_mfa_names_are_not_processed_and_leave_the_challenge_usable() {
    let cloud = start().await;
    let client = client();
    let challenge = password_login(&client, &cloud, BOB, BOB_PASSWORD).await;
    let (uid, user_id) = (challenge.str("MfaUid"), challenge.str("UserId"));
    let code = cloud.control().current_totp(BOB).expect("Bob has MFA");
    let camel = [("grant_type", "mfa"), ("client_id", "web"), ("mfaUid", uid), ("userId", user_id), ("code", &code)];
    let reply = post_form(&client, &cloud, &camel).await;
    reply.assert_error("invalid_request");
    assert_eq!(reply.str("error_description"), "The request is missing the required field mfa_uid, user_id.");
    let otp = [("grant_type", "otp"), ("client_id", "web"), ("mfa_uid", uid), ("user_id", user_id), ("otp", &code)];
    post_form(&client, &cloud, &otp).await.assert_error("unsupported_grant_type");
    // Neither answer used the challenge or the code.
    let reply = mfa_step(&client, &cloud, uid, user_id, &code).await;
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);

    // Switched to camelCase names: those work, the default ones are now the missing ones.
    cloud.control().set_mfa_fields(MfaFields {
        uid_field: "mfaUid".to_owned(),
        user_field: "userId".to_owned(),
        ..MfaFields::default()
    });
    let challenge = password_login(&client, &cloud, BOB, BOB_PASSWORD).await;
    let (uid, user_id) = (challenge.str("MfaUid"), challenge.str("UserId"));
    let reply = mfa_step(&client, &cloud, uid, user_id, &code).await;
    reply.assert_error("invalid_request");
    assert!(reply.str("error_description").contains("mfaUid, userId"), "{}", reply.body);
    let camel = [("grant_type", "mfa"), ("client_id", "web"), ("mfaUid", uid), ("userId", user_id), ("code", &code)];
    let reply = post_form(&client, &cloud, &camel).await;
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);
}

#[tokio::test]
async fn the_mfa_step_must_keep_the_client_id() {
    let cloud = start().await;
    let client = client();
    let challenge = password_login(&client, &cloud, BOB, BOB_PASSWORD).await;
    let code = cloud.control().current_totp(BOB).expect("Bob has MFA");
    let reply = post_form(
        &client,
        &cloud,
        &[
            ("grant_type", "mfa"),
            ("client_id", "mobile"),
            ("mfa_uid", challenge.str("MfaUid")),
            ("user_id", challenge.str("UserId")),
            ("code", &code),
        ],
    )
    .await;
    reply.assert_error("invalid_clientId");
}

#[tokio::test]
async fn users_added_at_run_time_can_log_in() {
    let cloud = start().await;
    let client = client();
    password_login(&client, &cloud, "carol@example.com", "pw").await.assert_error("invalid_grant");
    cloud.control().add_user(fake_cloud::FakeUser::new("carol@example.com", "pw")).expect("no seed to check");
    let reply = password_login(&client, &cloud, "carol@example.com", "pw").await;
    assert_eq!(reply.status, StatusCode::OK);
    let bad = cloud.control().add_user(fake_cloud::FakeUser::new("dave", "pw").with_totp_seed("1111"));
    assert!(matches!(bad, Err(fake_cloud::FakeCloudError::InvalidTotpSeed { .. })));
}

#[tokio::test]
async fn mfa_shape_3_is_a_400_with_the_identifiers_at_the_top() {
    let cloud = FakeCloud::start(config().with_mfa_shape(MfaShape::TopLevelBadRequest)).await;
    let client = client();
    let challenge = password_login(&client, &cloud, BOB, BOB_PASSWORD).await;
    assert_eq!(challenge.status, StatusCode::BAD_REQUEST);
    assert!(challenge.body.get("error").is_none(), "body: {}", challenge.body);
    let code = cloud.control().current_totp(BOB).expect("Bob has MFA");
    let tokens = mfa_step(&client, &cloud, challenge.str("MfaUid"), challenge.str("UserId"), &code).await;
    assert_eq!(tokens.status, StatusCode::OK, "body: {}", tokens.body);
}
