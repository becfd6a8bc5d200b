use std::io::{Read, Write};
use std::time::Duration;

use fake_cloud::{FakeCloud, Fault, FaultKind};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, DEVICE_3, client, client_with_timeout, config, eventually, get_with,
    mfa_step, password_login, post_form, refresh, start,
};

async fn ctl(client: &reqwest::Client, cloud: &FakeCloud, path: &str, body: Value) -> (StatusCode, Value) {
    let response =
        client.post(format!("{}/_control/{path}", cloud.url())).json(&body).send().await.expect("the fake answers");
    let status = response.status();
    let text = response.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn counters(client: &reqwest::Client, cloud: &FakeCloud) -> Value {
    let response = client.get(format!("{}/_control/counters", cloud.url())).send().await.expect("the fake answers");
    response.json().await.expect("counters are JSON")
}

#[tokio::test]
async fn faults_and_counters_over_http() {
    let cloud = start().await;
    let client = client();
    let (status, _) = ctl(
        &client,
        &cloud,
        "faults",
        json!({"kind": "too_many_requests", "retry_after_secs": 3, "times": 2, "path": "/login"}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for _ in 0..2 {
        let reply = password_login(&client, &cloud, ALICE, ALICE_PASSWORD).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(reply.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("3"));
    }
    ctl(&client, &cloud, "faults", json!({"kind": "server_error", "times": 10})).await;
    let response = client.delete(format!("{}/_control/faults", cloud.url())).send().await.expect("answers");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(password_login(&client, &cloud, ALICE, ALICE_PASSWORD).await.status, StatusCode::OK);
    let seen = counters(&client, &cloud).await;
    assert_eq!(seen["requests_total"], 3, "control requests are not counted: {seen}");
    assert_eq!(seen["faults_applied"], 2);
    assert_eq!(seen["password_grants"], 1);
    let (status, _) = ctl(&client, &cloud, "counters/reset", json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(counters(&client, &cloud).await["requests_total"], 0);
    let (status, _) = ctl(&client, &cloud, "faults", json!({"kind": "meteor_strike"})).await;
    assert!(status.is_client_error(), "an unknown fault kind is refused");
}

#[tokio::test]
async fn tokens_and_users_over_http() {
    let cloud = start().await;
    let client = client();
    let login = password_login(&client, &cloud, ALICE, ALICE_PASSWORD).await;
    let access = login.str("access_token");
    assert_eq!(ctl(&client, &cloud, "access-token-valid", json!({"token": access})).await.1, json!({"valid": true}));
    assert_eq!(ctl(&client, &cloud, "revoke", json!({"token": access})).await.1, json!({"revoked": true}));
    assert_eq!(ctl(&client, &cloud, "access-token-valid", json!({"token": access})).await.1, json!({"valid": false}));
    let rt = login.str("refresh_token");
    assert_eq!(ctl(&client, &cloud, "refresh-token-valid", json!({"token": rt})).await.1, json!({"valid": true}));
    assert_eq!(ctl(&client, &cloud, "expire", json!({"token": rt})).await.1, json!({"expired": true}));
    refresh(&client, &cloud, rt, "web").await.assert_error("invalid_grant");

    let (status, _) =
        ctl(&client, &cloud, "users", json!({"username": "erin", "password": "pw", "totp_seed": "JBSWY3DPEHPK3PXP"}))
            .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) =
        ctl(&client, &cloud, "users", json!({"username": "x", "password": "pw", "totp_seed": "0189"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().is_some_and(|m| m.contains("base32")), "{body}");
    let challenge = password_login(&client, &cloud, "erin", "pw").await;
    let (status, code) = ctl(&client, &cloud, "totp", json!({"username": "erin"})).await;
    assert_eq!(status, StatusCode::OK);
    let code = code["code"].as_str().expect("a code").to_owned();
    let tokens = mfa_step(&client, &cloud, challenge.str("MfaUid"), challenge.str("UserId"), &code).await;
    assert_eq!(tokens.status, StatusCode::OK, "body: {}", tokens.body);
    assert_eq!(ctl(&client, &cloud, "totp", json!({"username": ALICE})).await.0, StatusCode::NOT_FOUND);

    ctl(&client, &cloud, "device-tokens", json!({"token": "maker:d3", "device_id": DEVICE_3})).await;
    ctl(&client, &cloud, "ground-tokens", json!({"token": "maker:g9", "ground_id": "G9", "device_ids": [DEVICE_3]}))
        .await;
    assert_eq!(
        get_with(&client, &cloud, &format!("/device/{DEVICE_3}"), Some("maker:d3")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_with(&client, &cloud, &format!("/device/{DEVICE_3}"), Some("maker:g9")).await.status,
        StatusCode::OK
    );
    assert_eq!(ctl(&client, &cloud, "revoke-user", json!({"username": "erin"})).await.1, json!({"revoked": 2}));
    let fresh = password_login(&client, &cloud, ALICE, ALICE_PASSWORD).await;
    assert_eq!(ctl(&client, &cloud, "expire-all", json!({"access": true})).await.1, json!({"access": 1, "refresh": 0}));
    assert_eq!(
        get_with(&client, &cloud, "/me/grounds", Some(fresh.str("access_token"))).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn clock_rotation_shape_and_lifetimes_over_http() {
    let cloud = start().await;
    let client = client();
    let (_, clock) = ctl(&client, &cloud, "clock", json!({"offset_secs": 100, "advance_secs": 20})).await;
    assert_eq!(clock["offset_secs"], 120);
    assert!(clock["now"].as_str().is_some_and(|d| httpdate::parse_http_date(d).is_ok()));
    let got = crate::support::json_reply(client.get(format!("{}/_control/clock", cloud.url()))).await;
    assert_eq!(got["offset_secs"], 120);

    assert_eq!(ctl(&client, &cloud, "lifetimes", json!({"access_secs": 60})).await.0, StatusCode::NO_CONTENT);
    let login = password_login(&client, &cloud, ALICE, ALICE_PASSWORD).await;
    assert_eq!(login.body["expires_in"], 59);
    assert_eq!(ctl(&client, &cloud, "rotation", json!({"rotation": "fixed"})).await.0, StatusCode::NO_CONTENT);
    let again = refresh(&client, &cloud, login.str("refresh_token"), "web").await;
    assert_eq!(again.str("refresh_token"), login.str("refresh_token"));
    assert!(ctl(&client, &cloud, "rotation", json!({"rotation": "sometimes"})).await.0.is_client_error());

    assert_eq!(ctl(&client, &cloud, "mfa-shape", json!({"shape": 2})).await.0, StatusCode::NO_CONTENT);
    password_login(&client, &cloud, BOB, BOB_PASSWORD).await.assert_error("mfa_required");
    assert!(ctl(&client, &cloud, "mfa-shape", json!({"shape": 4})).await.0.is_client_error());

    let fields = json!({"grant_type": "otp", "code_field": "otp"});
    assert_eq!(ctl(&client, &cloud, "mfa-fields", fields).await.0, StatusCode::NO_CONTENT);
    let form = [("grant_type", "mfa"), ("client_id", "web"), ("mfa_uid", "m"), ("user_id", "u"), ("code", "1")];
    post_form(&client, &cloud, &form).await.assert_error("unsupported_grant_type");
    let form = [("grant_type", "otp"), ("client_id", "web"), ("mfa_uid", "m"), ("user_id", "u"), ("code", "1")];
    let reply = post_form(&client, &cloud, &form).await;
    reply.assert_error("invalid_request");
    assert!(reply.str("error_description").ends_with("field otp."), "{}", reply.body);
}

#[tokio::test]
async fn control_routes_ignore_faults() {
    let cloud = start().await;
    let client = client();
    cloud.control().inject_fault(Fault::new(FaultKind::ServerError).times(1));
    assert_eq!(counters(&client, &cloud).await["faults_applied"], 0);
    assert_eq!(get_with(&client, &cloud, "/me/grounds", None).await.status, StatusCode::INTERNAL_SERVER_ERROR);
}

/// One HTTP/1.1 request over a plain socket, no async runtime involved.
fn raw_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: fake\r\nConnection: close\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

#[test]
fn start_blocking_serves_plain_threads_and_stops_on_drop() {
    let cloud = FakeCloud::start_blocking(config());
    let addr = cloud.addr();
    assert_eq!(cloud.url(), format!("http://{addr}"));
    let reply = raw_get(addr, "/me/grounds").expect("the fake answers");
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("www-authenticate: bearer"), "{reply}");
    assert_eq!(cloud.control().counters().requests_total, 1);
    drop(cloud);
    assert!(std::net::TcpStream::connect(addr).is_err(), "nothing listens after drop");
}

#[tokio::test]
async fn shutdown_ends_hung_requests_and_closes_the_port() {
    let cloud = start().await;
    let addr = cloud.addr();
    cloud.control().inject_fault(Fault::new(FaultKind::Hang));
    let url = cloud.url();
    let hung = tokio::spawn(async move {
        client_with_timeout(Duration::from_secs(120)).get(format!("{url}/me/grounds")).send().await
    });
    let control = cloud.control();
    eventually("the hung request arrives", async || control.counters().requests_total == 1).await;
    tokio::time::timeout(Duration::from_secs(30), cloud.shutdown())
        .await
        .expect("shutdown does not wait for hung requests");
    let outcome =
        tokio::time::timeout(Duration::from_secs(30), hung).await.expect("the hung request ends").expect("joined");
    assert!(outcome.is_err(), "the hung request got no real answer");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "nothing listens after shutdown");
}
