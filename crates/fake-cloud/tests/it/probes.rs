use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{
    ALICE, ALICE_PASSWORD, DEVICE_1, DEVICE_2, DEVICE_3, DEVICE_TOKEN, GROUND, GROUND_TOKEN, Reply, client, get_with,
    password_login, start,
};

fn assert_unauthorized(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "body: {}", reply.body);
    assert_eq!(reply.headers.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
}

#[tokio::test]
async fn a_user_token_reads_the_users_resources() {
    let cloud = start().await;
    let client = client();
    let login = password_login(&client, &cloud, ALICE, ALICE_PASSWORD).await;
    let token = login.str("access_token");
    let grounds = get_with(&client, &cloud, "/me/grounds", Some(token)).await;
    assert_eq!(grounds.status, StatusCode::OK);
    assert_eq!(grounds.body["items"][0]["id"], GROUND);
    let device = get_with(&client, &cloud, &format!("/device/{DEVICE_3}"), Some(token)).await;
    assert_eq!((device.status, device.body["id"].clone()), (StatusCode::OK, json!(DEVICE_3)));
    let devices = get_with(&client, &cloud, &format!("/ground/{GROUND}/devices"), Some(token)).await;
    assert_eq!(devices.body, json!({"items": [{"id": DEVICE_1}, {"id": DEVICE_2}]}));
}

#[tokio::test]
async fn a_device_token_reads_only_its_device() {
    let cloud = start().await;
    let client = client();
    let own = get_with(&client, &cloud, &format!("/device/{DEVICE_1}"), Some(DEVICE_TOKEN)).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.body["id"], DEVICE_1);
    for path in [format!("/device/{DEVICE_2}"), "/me/grounds".to_owned(), format!("/ground/{GROUND}/devices")] {
        let reply = get_with(&client, &cloud, &path, Some(DEVICE_TOKEN)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}: {}", reply.body);
    }
}

#[tokio::test]
async fn a_ground_token_reads_its_ground_and_its_devices() {
    let cloud = start().await;
    let client = client();
    for device in [DEVICE_1, DEVICE_2] {
        let reply = get_with(&client, &cloud, &format!("/device/{device}"), Some(GROUND_TOKEN)).await;
        assert_eq!(reply.status, StatusCode::OK, "{device}");
    }
    let list = get_with(&client, &cloud, &format!("/ground/{GROUND}/devices"), Some(GROUND_TOKEN)).await;
    assert_eq!(list.body, json!({"items": [{"id": DEVICE_1}, {"id": DEVICE_2}]}));
    for path in
        [format!("/device/{DEVICE_3}"), "/me/grounds".to_owned(), "/ground/000000000000000000000000/devices".to_owned()]
    {
        let reply = get_with(&client, &cloud, &path, Some(GROUND_TOKEN)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}: {}", reply.body);
    }
}

#[tokio::test]
async fn missing_unknown_and_revoked_bearers_get_401() {
    let cloud = start().await;
    let client = client();
    assert_unauthorized(&get_with(&client, &cloud, "/me/grounds", None).await);
    assert_unauthorized(&get_with(&client, &cloud, "/me/grounds", Some("not-a-token")).await);
    let login = password_login(&client, &cloud, ALICE, ALICE_PASSWORD).await;
    let access = login.str("access_token");
    assert_unauthorized(&get_with(&client, &cloud, "/me/grounds", Some(login.str("refresh_token"))).await);
    assert!(cloud.control().revoke(access));
    assert!(!cloud.control().is_access_token_valid(access));
    assert_unauthorized(&get_with(&client, &cloud, "/me/grounds", Some(access)).await);
    assert!(cloud.control().revoke(DEVICE_TOKEN));
    assert_unauthorized(&get_with(&client, &cloud, &format!("/device/{DEVICE_1}"), Some(DEVICE_TOKEN)).await);
    assert!(cloud.control().revoke(GROUND_TOKEN));
    assert_unauthorized(&get_with(&client, &cloud, &format!("/ground/{GROUND}/devices"), Some(GROUND_TOKEN)).await);
    assert!(!cloud.control().revoke("never-issued"));
}

#[tokio::test]
async fn an_expired_access_token_gets_401() {
    let cloud = start().await;
    let client = client();
    let login = password_login(&client, &cloud, ALICE, ALICE_PASSWORD).await;
    let access = login.str("access_token");
    assert_eq!(get_with(&client, &cloud, "/me/grounds", Some(access)).await.status, StatusCode::OK);
    cloud.control().advance_clock(Duration::from_secs(3600));
    assert_unauthorized(&get_with(&client, &cloud, "/me/grounds", Some(access)).await);
}

#[tokio::test]
async fn revoking_a_users_sessions_kills_access_and_refresh_tokens() {
    let cloud = start().await;
    let client = client();
    let login = password_login(&client, &cloud, ALICE, ALICE_PASSWORD).await;
    assert_eq!(cloud.control().revoke_user_sessions("Alice@Example.com"), 2);
    assert!(!cloud.control().is_access_token_valid(login.str("access_token")));
    assert!(!cloud.control().is_refresh_token_valid(login.str("refresh_token")));
}

#[tokio::test]
async fn tokens_added_at_run_time_work() {
    let cloud = start().await;
    let client = client();
    cloud.control().add_device_token("maker:late", DEVICE_3);
    cloud.control().add_ground_token("maker:lateground", "9d7c2e3f6a5b8c03b4c5d6e7", [DEVICE_3]);
    let device = get_with(&client, &cloud, &format!("/device/{DEVICE_3}"), Some("maker:late")).await;
    assert_eq!(device.status, StatusCode::OK);
    let ground = get_with(&client, &cloud, "/ground/9d7c2e3f6a5b8c03b4c5d6e7/devices", Some("maker:lateground")).await;
    assert_eq!(ground.body, json!({"items": [{"id": DEVICE_3}]}));
}

fn date_of(reply: &Reply) -> SystemTime {
    let text = reply.headers.get("date").and_then(|v| v.to_str().ok()).expect("every reply has a Date header");
    httpdate::parse_http_date(text).expect("Date is an HTTP-date")
}

fn offset_from_now(time: SystemTime) -> i64 {
    let now = SystemTime::now();
    match time.duration_since(now) {
        Ok(ahead) => i64::try_from(ahead.as_secs()).expect("small"),
        Err(behind) => -i64::try_from(behind.duration().as_secs()).expect("small"),
    }
}

#[tokio::test]
async fn the_clock_offset_shifts_date_and_issued() {
    let cloud = start().await;
    let client = client();
    let plain = get_with(&client, &cloud, "/me/grounds", None).await;
    assert!(offset_from_now(date_of(&plain)).abs() <= 60, "no offset yet");
    let error = password_login(&client, &cloud, ALICE, "wrong").await;
    assert!(offset_from_now(date_of(&error)).abs() <= 60, "errors carry a Date too");

    cloud.control().set_clock_offset_secs(7200);
    let login = password_login(&client, &cloud, ALICE, ALICE_PASSWORD).await;
    let shift = offset_from_now(date_of(&login));
    assert!((7200 - 60..=7200 + 60).contains(&shift), "Date is two hours ahead, got {shift} s");
    let issued = httpdate::parse_http_date(login.str(".issued")).expect("an HTTP-date");
    assert!((7200 - 60..=7200 + 60).contains(&offset_from_now(issued)));
    assert_eq!(cloud.control().clock_offset_secs(), 7200);

    cloud.control().set_clock_offset_secs(-600);
    let behind = offset_from_now(date_of(&get_with(&client, &cloud, "/me/grounds", None).await));
    assert!((-660..=-540).contains(&behind), "Date is ten minutes behind, got {behind} s");
}

#[tokio::test]
async fn unknown_paths_are_404_with_a_date() {
    let cloud = start().await;
    let client = client();
    let reply = get_with(&client, &cloud, "/assets/x", None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.headers.contains_key("date"));
}
