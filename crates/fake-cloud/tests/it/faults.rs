use std::time::{Duration, Instant};

use fake_cloud::{Fault, FaultKind};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{ALICE, ALICE_PASSWORD, client, client_with_timeout, eventually, get_with, password_login, start};

#[tokio::test]
async fn status_faults_hit_the_next_requests_then_stop() {
    let cloud = start().await;
    let client = client();
    let control = cloud.control();
    control.inject_fault(Fault::new(FaultKind::ServerError));
    control.inject_fault(Fault::new(FaultKind::ServiceUnavailable).times(2));
    control.inject_fault(Fault::new(FaultKind::TooManyRequests { retry_after_secs: 7 }));
    control.inject_fault(Fault::new(FaultKind::NotJson));

    let reply = password_login(&client, &cloud, ALICE, ALICE_PASSWORD).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    for _ in 0..2 {
        let reply = password_login(&client, &cloud, ALICE, ALICE_PASSWORD).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(reply.body.is_null(), "a 503 body is HTML, not JSON");
    }
    let reply = password_login(&client, &cloud, ALICE, ALICE_PASSWORD).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("7"));
    let response = client
        .post(format!("{}/login", cloud.url()))
        .form(&[("grant_type", "password"), ("username", ALICE), ("password", ALICE_PASSWORD), ("client_id", "web")])
        .send()
        .await
        .expect("the fake answers");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("a body");
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_err(), "not JSON: {text}");
    assert!(text.contains("<html>"));

    let reply = password_login(&client, &cloud, ALICE, ALICE_PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "faults are spent");
    assert!(reply.body["access_token"].is_string());
    let counters = control.counters();
    assert_eq!((counters.faults_applied, counters.requests_total), (5, 6));
    assert_eq!(counters.password_grants, 1, "faulted requests never reach the grant");
}

#[tokio::test]
async fn a_fault_on_a_path_spares_other_paths() {
    let cloud = start().await;
    let client = client();
    cloud.control().inject_fault(Fault::new(FaultKind::ServerError).times(1).on_path("/login"));
    assert_eq!(get_with(&client, &cloud, "/me/grounds", None).await.status, StatusCode::UNAUTHORIZED);
    let reply = password_login(&client, &cloud, ALICE, ALICE_PASSWORD).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    cloud.control().inject_fault(Fault::new(FaultKind::ServiceUnavailable).times(5).on_path("/device/"));
    assert_eq!(get_with(&client, &cloud, "/device/abc", None).await.status, StatusCode::SERVICE_UNAVAILABLE);
    cloud.control().clear_faults();
    assert_eq!(get_with(&client, &cloud, "/device/abc", None).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_fault_for_a_duration_runs_out() {
    let cloud = start().await;
    let client = client();
    cloud.control().inject_fault(Fault::new(FaultKind::ServiceUnavailable).for_duration(Duration::from_secs(5)));
    let started = Instant::now();
    assert_eq!(get_with(&client, &cloud, "/me/grounds", None).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get_with(&client, &cloud, "/me/grounds", None).await.status, StatusCode::SERVICE_UNAVAILABLE);
    eventually("the outage ends", async || {
        get_with(&client, &cloud, "/me/grounds", None).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(started.elapsed() >= Duration::from_secs(5), "it lasted at least its duration");
}

#[tokio::test]
async fn a_hang_never_answers_while_others_are_served() {
    let cloud = start().await;
    cloud.control().inject_fault(Fault::new(FaultKind::Hang).on_path("/login"));
    let impatient = client_with_timeout(Duration::from_secs(2));
    let error = impatient
        .post(format!("{}/login", cloud.url()))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .expect_err("a hung request gets no answer");
    assert!(error.is_timeout(), "{error}");
    let reply = password_login(&client(), &cloud, ALICE, ALICE_PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn a_reset_closes_the_connection_with_rst() {
    let cloud = start().await;
    cloud.control().inject_fault(Fault::new(FaultKind::Reset));
    let mut stream = tokio::net::TcpStream::connect(cloud.addr()).await.expect("connect");
    stream.write_all(b"GET /me/grounds HTTP/1.1\r\nHost: fake\r\n\r\n").await.expect("the request is sent");
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut buffer)).await.expect("no hang");
    let error = read.expect_err("no reply, no orderly close");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(buffer.is_empty(), "nothing was answered");

    // Through an HTTP client: a transport error that is not a timeout, and the next request works.
    cloud.control().inject_fault(Fault::new(FaultKind::Reset).on_path("/login"));
    let error = client()
        .post(format!("{}/login", cloud.url()))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .expect_err("the connection was reset");
    assert!(!error.is_timeout() && error.status().is_none(), "{error}");
    assert_eq!(password_login(&client(), &cloud, ALICE, ALICE_PASSWORD).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_slow_reply_arrives_late_and_intact() {
    let cloud = start().await;
    let client = client();
    cloud.control().inject_fault(Fault::new(FaultKind::Slow { delay_ms: 1500 }));
    let started = Instant::now();
    let reply = password_login(&client, &cloud, ALICE, ALICE_PASSWORD).await;
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body["access_token"].is_string());
}
