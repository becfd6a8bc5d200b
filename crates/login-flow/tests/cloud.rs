//! The login flow over real HTTP on loopback: against the fake cloud for every protocol outcome and injected
//! fault, and against tiny raw TCP servers for replies the fake cannot produce (endless bodies, arbitrary bytes).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use fake_cloud::{FakeCloud, FakeConfig, FakeUser, Fault, FaultKind, MfaShape};
use login_flow::{
    ApiConfig, Credentials, LoginClient, LoginError, MfaChallenge, MfaFields, MfaPending, PasswordOutcome, Step,
    TotpGenerator,
};
use token_model::ids::{ClientId, DeviceId, GroundId, TokenKind};
use token_model::reply::ReplyError;
use token_model::secret::{ExposeSecret, MfaCode, Password, RefreshToken, StaticToken, TotpSeed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PLAIN: &str = "bob@example.com";
const PLAIN_PASSWORD: &str = "p&ss+w=rd é";
const MFA: &str = "alice@example.com";
const MFA_PASSWORD: &str = "s3cret pass&word=+";
const SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const DEVICE: &str = "abcdefghijklmnopqrstuvwx";
const OTHER_DEVICE: &str = "bcdefghijklmnopqrstuvwxy";
const GROUND: &str = "ABCDEFGHIJKLMNOPQRSTUVWX";
const OTHER_GROUND: &str = "BCDEFGHIJKLMNOPQRSTUVWXY";
const DEVICE_TOKEN: &str = "maker:4DeviceTokenAbCd";
const GROUND_TOKEN: &str = "maker:4GroundTokenAbCd";

fn fake_config() -> FakeConfig {
    FakeConfig::default()
        .with_user(FakeUser::new(PLAIN, PLAIN_PASSWORD))
        .with_user(FakeUser::new(MFA, MFA_PASSWORD).with_totp_seed(SEED))
        .with_device_token(DEVICE_TOKEN, DEVICE)
        .with_ground_token(GROUND_TOKEN, GROUND, [DEVICE, OTHER_DEVICE])
}

async fn cloud() -> FakeCloud {
    FakeCloud::start(fake_config()).await
}

fn config_for(url: &str) -> ApiConfig {
    let mut config = ApiConfig::new(url).expect("a loopback URL is accepted");
    // Generous for a loaded machine; tests of timeouts set their own.
    config.request_timeout = Duration::from_secs(20);
    config
}

fn client(cloud: &FakeCloud) -> LoginClient {
    LoginClient::new(config_for(&cloud.url())).expect("the client builds")
}

fn client_with(cloud: &FakeCloud, adjust: impl FnOnce(&mut ApiConfig)) -> LoginClient {
    let mut config = config_for(&cloud.url());
    adjust(&mut config);
    LoginClient::new(config).expect("the client builds")
}

fn plain() -> Credentials {
    Credentials::new(PLAIN, Password::new(PLAIN_PASSWORD))
}

fn mfa_user() -> Credentials {
    Credentials::new(MFA, Password::new(MFA_PASSWORD))
}

fn current_code(cloud: &FakeCloud) -> MfaCode {
    MfaCode::parse(cloud.control().current_totp(MFA).expect("the MFA user has a seed")).expect("six digits")
}

/// A code that is none of the codes the server accepts around now (it allows one step either side).
fn wrong_code() -> MfaCode {
    let generator = TotpGenerator::from_seed(&TotpSeed::new(SEED)).expect("a valid seed");
    let now = SystemTime::now();
    let near: Vec<String> = [-60i64, -30, 0, 30, 60]
        .iter()
        .map(|offset| {
            let at = if *offset < 0 {
                now - Duration::from_secs(offset.unsigned_abs())
            } else {
                now + Duration::from_secs(offset.unsigned_abs())
            };
            generator.code_at(at).expose_secret().to_owned()
        })
        .collect();
    let code = (0..1_000_000u32).map(|n| format!("{n:06}")).find(|c| !near.contains(c)).expect("a free code");
    MfaCode::parse(code).expect("six digits")
}

async fn pending(client: &LoginClient) -> MfaPending {
    match client.password_grant(&mfa_user()).await.expect("the password is right") {
        PasswordOutcome::MfaRequired(pending) => pending,
        PasswordOutcome::Granted(_) => panic!("the MFA account must ask for a code"),
    }
}

#[tokio::test]
async fn login_without_mfa_then_check_the_token() {
    let cloud = cloud().await;
    let client = client(&cloud);
    let grant = client.login_with_code(&plain(), None).await.expect("bob logs in");
    assert!(cloud.control().is_access_token_valid(grant.access_token.expose_secret()));
    let refresh = grant.refresh_token.as_ref().expect("a refresh token");
    assert!(cloud.control().is_refresh_token_valid(refresh.expose_secret()));
    assert_eq!(grant.expires_in, Duration::from_secs(3599));
    assert_eq!(grant.token_type.to_ascii_lowercase(), "bearer");
    assert_eq!(grant.client_id.as_deref(), Some("web"));
    assert!(grant.issued.is_some() && grant.expires.is_some() && grant.server_date.is_some());
    client.check_user_token(&grant.access_token).await.expect("a fresh access token is valid");
}

#[tokio::test]
async fn login_with_mfa_in_both_shapes() {
    let cloud = cloud().await;
    let client = client(&cloud);
    for shape in [MfaShape::TopLevel, MfaShape::ErrorDescription] {
        cloud.control().set_mfa_shape(shape);
        let pending = pending(&client).await;
        assert!(!pending.challenge().mfa_uid().is_empty() && !pending.challenge().user_id().is_empty());
        let grant = client.complete_mfa(pending, &current_code(&cloud)).await.expect("the code is right");
        assert!(cloud.control().is_access_token_valid(grant.access_token.expose_secret()), "{shape:?}");
        let grant = client.login_with_code(&mfa_user(), Some(&current_code(&cloud))).await.expect("one call");
        assert!(cloud.control().is_access_token_valid(grant.access_token.expose_secret()), "{shape:?}");
    }
}

#[tokio::test]
async fn unattended_login_with_a_totp_seed() {
    let cloud = cloud().await;
    let grant = client(&cloud).login_with_totp(&mfa_user(), &TotpSeed::new(SEED)).await.expect("our codes match");
    assert!(cloud.control().is_access_token_valid(grant.access_token.expose_secret()));
    let error = client(&cloud).login_with_totp(&mfa_user(), &TotpSeed::new("not base32!")).await.unwrap_err();
    assert!(matches!(error, LoginError::BadTotpSeed { .. }), "{error:?}");
    assert_eq!(cloud.control().counters().password_grants, 1, "a bad seed is caught before anything is sent");
}

#[tokio::test]
async fn unattended_login_follows_the_clouds_clock() {
    // The gateway's clock is ten minutes behind the cloud's (or the cloud's ahead): a code computed from the
    // local clock is refused, one computed from the reply's Date is accepted.
    for offset in [10 * 60, -10 * 60] {
        let cloud = cloud().await;
        cloud.control().set_clock_offset_secs(offset);
        let client = client(&cloud);
        let grant = client
            .login_with_totp(&mfa_user(), &TotpSeed::new(SEED))
            .await
            .unwrap_or_else(|error| panic!("offset {offset} s: {error:?}"));
        assert!(cloud.control().is_access_token_valid(grant.access_token.expose_secret()), "offset {offset} s");
        assert_eq!(cloud.control().counters().mfa_steps_ok, 1, "offset {offset} s");
    }
}

#[tokio::test]
async fn configured_mfa_names_are_used() {
    let names = MfaFields {
        grant_type: "otp".into(),
        uid_field: "challenge".into(),
        user_field: "uid".into(),
        code_field: "totp".into(),
    };
    let fake_names = fake_cloud::MfaFields {
        grant_type: names.grant_type.clone(),
        uid_field: names.uid_field.clone(),
        user_field: names.user_field.clone(),
        code_field: names.code_field.clone(),
    };
    let cloud = FakeCloud::start(fake_config().with_mfa_fields(fake_names)).await;
    let client = client_with(&cloud, |config| config.mfa = names);
    client.login_with_code(&mfa_user(), Some(&current_code(&cloud))).await.expect("the configured names work");
    let default_client = self::client(&cloud);
    let error = default_client.login_with_code(&mfa_user(), Some(&current_code(&cloud))).await.unwrap_err();
    assert_eq!(error, LoginError::UnsupportedGrant { step: Step::Mfa });
}

#[tokio::test]
async fn mfa_account_without_a_code() {
    let cloud = cloud().await;
    let error = client(&cloud).login_with_code(&mfa_user(), None).await.unwrap_err();
    assert_eq!(error, LoginError::MfaRequired);
    assert!(!error.is_transient() && error.to_string().contains("6-digit code"));
}

#[tokio::test]
async fn wrong_password_is_a_verdict() {
    let cloud = cloud().await;
    for credentials in [
        Credentials::new(PLAIN, Password::new("wrong")),
        Credentials::new("nobody@example.com", Password::new(PLAIN_PASSWORD)),
    ] {
        let error = client(&cloud).login_with_code(&credentials, None).await.unwrap_err();
        assert!(matches!(error, LoginError::BadCredentials { .. }), "{error:?}");
        assert!(!error.is_transient() && error.needs_login());
        assert!(!error.to_string().contains("wrong"), "the password never shows: {error}");
    }
}

#[tokio::test]
async fn wrong_code_is_a_verdict() {
    let cloud = cloud().await;
    let client = client(&cloud);
    let error = client.complete_mfa(pending(&client).await, &wrong_code()).await.unwrap_err();
    assert!(matches!(error, LoginError::BadMfaCode { .. }), "{error:?}");
    assert!(!error.is_transient());
}

#[tokio::test]
async fn expired_and_reused_challenges_are_refused() {
    let cloud = cloud().await;
    let client = client(&cloud);

    let expired = pending(&client).await;
    cloud.control().advance_clock(Duration::from_secs(6 * 60));
    let error = client.complete_mfa(expired, &current_code(&cloud)).await.unwrap_err();
    assert!(matches!(error, LoginError::BadMfaCode { .. }), "{error:?}");

    let first = pending(&client).await;
    let (uid, user) = (first.challenge().mfa_uid().to_owned(), first.challenge().user_id().to_owned());
    client.complete_mfa(first, &current_code(&cloud)).await.expect("first use works");
    let again = MfaPending::new(MfaChallenge::new(uid, user));
    let error = client.complete_mfa(again, &current_code(&cloud)).await.unwrap_err();
    assert!(matches!(error, LoginError::BadMfaCode { .. }), "{error:?}");
}

#[tokio::test]
async fn refresh_rotates_and_reuse_is_rejected() {
    let cloud = cloud().await;
    let client = client(&cloud);
    let grant = client.login_with_code(&plain(), None).await.expect("login");
    let first = grant.refresh_token.expect("a refresh token");
    let renewed = client.refresh(&first).await.expect("refresh");
    let second = renewed.refresh_token.expect("a rotated refresh token");
    assert_ne!(first.expose_secret(), second.expose_secret());
    assert!(!cloud.control().is_refresh_token_valid(first.expose_secret()));
    assert!(cloud.control().is_access_token_valid(renewed.access_token.expose_secret()));

    let error = client.refresh(&first).await.unwrap_err();
    assert_eq!(error, LoginError::RefreshRejected);
    assert!(!error.is_transient() && error.to_string().contains("log in again"));
    assert_eq!(cloud.control().counters().refresh_reuses, 1);

    client.refresh(&second).await.expect("the rotated token works");
    let error = client.refresh(&RefreshToken::new("never-issued")).await.unwrap_err();
    assert_eq!(error, LoginError::RefreshRejected);
}

#[tokio::test]
async fn wrong_client_id_is_refused() {
    let cloud = cloud().await;
    let unknown = client_with(&cloud, |config| config.client_id = ClientId::new("toaster").expect("valid form"));
    let error = unknown.login_with_code(&plain(), None).await.unwrap_err();
    assert!(matches!(error, LoginError::ClientRejected { step: Step::Password, .. }), "{error:?}");
    assert!(!error.is_transient());

    let grant = client(&cloud).login_with_code(&plain(), None).await.expect("login as web");
    let mobile = client_with(&cloud, |config| config.client_id = ClientId::new("mobile").expect("valid"));
    let error = mobile.refresh(grant.refresh_token.as_ref().expect("a refresh token")).await.unwrap_err();
    assert!(matches!(error, LoginError::ClientRejected { step: Step::Refresh, .. }), "{error:?}");
}

#[tokio::test]
async fn injected_faults_are_transient() {
    let cloud = cloud().await;
    let client = client(&cloud);
    type Expect = fn(&LoginError) -> bool;
    let cases: [(FaultKind, Expect); 5] = [
        (FaultKind::ServerError, |e| matches!(e, LoginError::ServerError { status: 500, .. })),
        (FaultKind::ServiceUnavailable, |e| matches!(e, LoginError::ServerError { status: 503, .. })),
        (FaultKind::TooManyRequests { retry_after_secs: 7 }, |e| {
            *e == LoginError::RateLimited { retry_after: Some(Duration::from_secs(7)) }
        }),
        (FaultKind::NotJson, |e| matches!(e, LoginError::Malformed(ReplyError::NotJson { status: 200, .. }))),
        (FaultKind::Reset, |e| matches!(e, LoginError::ConnectionLost { .. }) && e.outcome_unknown()),
    ];
    for (kind, expected) in cases {
        cloud.control().inject_fault(Fault::new(kind).on_path("/login"));
        let error = client.login_with_code(&plain(), None).await.unwrap_err();
        assert!(expected(&error), "{kind:?} gave {error:?}");
        assert!(error.is_transient(), "{kind:?} gave {error:?}");
        cloud.control().clear_faults();
        client.login_with_code(&plain(), None).await.expect("works again once the fault is gone");
    }
    // Faults on the token checks are transient too, never "revoked".
    let grant = client.login_with_code(&plain(), None).await.expect("login");
    cloud.control().inject_fault(Fault::new(FaultKind::ServiceUnavailable).on_path("/me/grounds"));
    let error = client.check_user_token(&grant.access_token).await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
}

#[tokio::test]
async fn a_hung_request_is_bounded_by_the_timeout() {
    let cloud = cloud().await;
    let client = client_with(&cloud, |config| config.request_timeout = Duration::from_secs(1));
    cloud.control().inject_fault(Fault::new(FaultKind::Hang).on_path("/login"));
    let started = Instant::now();
    let error = client.login_with_code(&plain(), None).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(error, LoginError::Timeout { after: Duration::from_secs(1) });
    assert!(error.is_transient());
    assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(15), "{elapsed:?}");
}

#[tokio::test]
async fn slow_replies_succeed_within_the_timeout_and_fail_beyond_it() {
    let cloud = cloud().await;
    let patient = client(&cloud);
    cloud.control().inject_fault(Fault::new(FaultKind::Slow { delay_ms: 400 }).on_path("/login"));
    let started = Instant::now();
    patient.login_with_code(&plain(), None).await.expect("a slow reply within the limit is fine");
    assert!(started.elapsed() >= Duration::from_millis(400));

    let hasty = client_with(&cloud, |config| config.request_timeout = Duration::from_secs(1));
    cloud.control().inject_fault(Fault::new(FaultKind::Slow { delay_ms: 5_000 }).on_path("/login"));
    let error = hasty.login_with_code(&plain(), None).await.unwrap_err();
    assert!(matches!(error, LoginError::Timeout { .. }), "{error:?}");
}

#[tokio::test]
async fn token_checks_for_valid_revoked_and_out_of_scope_tokens() {
    let cloud = cloud().await;
    let client = client(&cloud);
    let device = DeviceId::new(DEVICE).expect("id");
    let other_device = DeviceId::new(OTHER_DEVICE).expect("id");
    let ground = GroundId::new(GROUND).expect("id");
    let other_ground = GroundId::new(OTHER_GROUND).expect("id");
    let device_token = StaticToken::new(DEVICE_TOKEN);
    let ground_token = StaticToken::new(GROUND_TOKEN);

    client.check_device_token(&device_token, &device).await.expect("its own device");
    assert_eq!(
        client.check_device_token(&device_token, &other_device).await,
        Err(LoginError::WrongScope { kind: TokenKind::Device })
    );
    let mut members = client.ground_devices(&ground_token, &ground).await.expect("its own ground");
    members.sort();
    assert_eq!(members, [device.clone(), other_device.clone()]);
    assert_eq!(
        client.ground_devices(&ground_token, &other_ground).await,
        Err(LoginError::WrongScope { kind: TokenKind::Ground })
    );
    assert_eq!(
        client.ground_devices(&device_token, &ground).await,
        Err(LoginError::WrongScope { kind: TokenKind::Ground })
    );

    let grant = client.login_with_code(&plain(), None).await.expect("login");
    client.check_user_token(&grant.access_token).await.expect("valid user token");

    assert!(cloud.control().revoke(DEVICE_TOKEN) && cloud.control().revoke(GROUND_TOKEN));
    assert!(cloud.control().revoke(grant.access_token.expose_secret()));
    let revoked = [
        client.check_device_token(&device_token, &device).await,
        client.ground_devices(&ground_token, &ground).await.map(drop),
        client.check_user_token(&grant.access_token).await,
    ];
    let kinds = [TokenKind::Device, TokenKind::Ground, TokenKind::User];
    for (result, kind) in revoked.into_iter().zip(kinds) {
        let error = result.unwrap_err();
        assert_eq!(error, LoginError::TokenRevoked { kind });
        assert!(!error.is_transient());
    }
    assert_eq!(
        client.check_device_token(&StaticToken::new("maker:unknown"), &device).await,
        Err(LoginError::TokenRevoked { kind: TokenKind::Device })
    );
}

#[tokio::test]
async fn https_is_really_tls_and_plain_http_is_loopback_only() {
    let cloud = cloud().await;
    // The fake speaks plain HTTP: an https:// URL to it must fail in the TLS handshake, transiently.
    let tls_url = cloud.url().replacen("http://", "https://", 1);
    let error = LoginClient::new(config_for(&tls_url)).expect("builds").login_with_code(&plain(), None).await;
    let error = error.unwrap_err();
    assert!(matches!(error, LoginError::Network { .. }), "{error:?}");
    assert!(error.is_transient());
    let error = ApiConfig::new("http://api.allthingstalk.io").unwrap_err();
    assert!(matches!(error, LoginError::BadConfig { .. }) && error.to_string().contains("https://"), "{error}");
}

/// Serves one connection: reads the request head, then writes `head` and keeps writing `chunk` until the
/// peer goes away (or a safety bound of 256 MiB). Counts the bytes it managed to write.
async fn endless_server(head: &'static str, chunked: bool) -> (String, Arc<AtomicU64>, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let written = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (counter, finished) = (written.clone(), done.clone());
    tokio::spawn(async move {
        let Some(mut socket) = accept_one_request(&listener).await else { return };
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let payload = vec![b'a'; 16 * 1024];
        let chunk = if chunked {
            let mut framed = format!("{:x}\r\n", payload.len()).into_bytes();
            framed.extend_from_slice(&payload);
            framed.extend_from_slice(b"\r\n");
            framed
        } else {
            payload
        };
        while counter.load(Ordering::Relaxed) < 256 * 1024 * 1024 {
            if socket.write_all(&chunk).await.is_err() {
                break;
            }
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        finished.store(true, Ordering::SeqCst);
    });
    (url, written, done)
}

async fn wait_until(flag: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_endless_reply_is_refused_at_the_cap() {
    for (head, chunked) in [
        ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", true),
        ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n", false),
        ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500000000\r\n\r\n", false),
    ] {
        let (url, written, done) = endless_server(head, chunked).await;
        let client = LoginClient::new(config_for(&url)).expect("builds");
        let error = client.login_with_code(&plain(), None).await.unwrap_err();
        assert_eq!(error, LoginError::ReplyTooLarge { limit: 64 * 1024 }, "{head:?}");
        assert!(error.is_transient());
        drop(client);
        // The client hung up: the server stops long before its safety bound, having sent at most the cap
        // plus what the two sockets' buffers hold.
        wait_until(&done).await;
        assert!(done.load(Ordering::SeqCst), "the server noticed the client hung up ({head:?})");
        let sent = written.load(Ordering::Relaxed);
        assert!(sent < 64 * 1024 * 1024, "the client kept reading: {sent} bytes ({head:?})");
        println!("endless reply refused after the server wrote {sent} bytes ({head:?})");
    }
}

/// Accepts one connection and reads the request head; `None` when the peer went away first.
async fn accept_one_request(listener: &TcpListener) -> Option<tokio::net::TcpStream> {
    let (mut socket, _) = listener.accept().await.ok()?;
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    Some(socket)
}

/// Serves one connection with a raw, arbitrary reply, then closes it.
async fn raw_server(reply: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        let Some(mut socket) = accept_one_request(&listener).await else { return };
        let _ = socket.write_all(&reply).await;
        let _ = socket.shutdown().await;
    });
    url
}

mod arbitrary_replies {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

        #[test]
        fn reply_handling_never_panics_on_real_http(
            status in 100u16..1000,
            headers in prop::collection::vec(("[A-Za-z-]{1,12}", "[ -~]{0,40}"), 0..5),
            body in prop::collection::vec(any::<u8>(), 0..2048),
            garbage in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        ) {
            let mut reply = match &garbage {
                Some(bytes) => bytes.clone(),
                None => format!("HTTP/1.1 {status} Whatever\r\n").into_bytes(),
            };
            if garbage.is_none() {
                for (name, value) in &headers {
                    if !name.eq_ignore_ascii_case("content-length") && !name.eq_ignore_ascii_case("transfer-encoding") {
                        reply.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
                    }
                }
                reply.extend_from_slice(format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes());
                reply.extend_from_slice(&body);
            }
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let result = runtime.block_on(async {
                let url = raw_server(reply).await;
                let mut config = config_for(&url);
                config.request_timeout = Duration::from_secs(10);
                LoginClient::new(config).expect("builds").refresh(&RefreshToken::new("rt")).await
            });
            if let Err(error) = result {
                let _ = error.to_string();
                // Only a 400 from /login can be a verdict; everything else must be retried.
                if garbage.is_some() || status != 400 {
                    prop_assert!(error.is_transient(), "{status}: {error:?}");
                }
            }
        }
    }
}

/// Serves one connection: captures the whole request (head and `Content-Length` body), answers `reply`.
async fn capture_server(reply: &'static str) -> (String, tokio::sync::oneshot::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (sender, receiver) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else { return };
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|value| value.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    break;
                }
            }
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buffer[..n]),
            }
        }
        let _ = socket.write_all(reply.as_bytes()).await;
        let _ = socket.shutdown().await;
        let _ = sender.send(request);
    });
    (url, receiver)
}

#[tokio::test]
async fn requests_on_the_wire_and_no_redirects() {
    let (url, captured) = capture_server(
        "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    let client = LoginClient::new(config_for(&format!("{url}/prefix/"))).expect("builds");
    let error = client.login_with_code(&plain(), None).await.unwrap_err();
    assert!(matches!(error, LoginError::ServerError { status: 302, .. }), "a redirect is not followed: {error:?}");
    assert!(error.is_transient());
    let request = String::from_utf8(captured.await.expect("the request was captured")).expect("UTF-8");
    let (head, body) = request.split_once("\r\n\r\n").expect("a head and a body");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("post /prefix/login http/1.1\r\n"), "{head}");
    assert!(head.contains(&format!("user-agent: att-tokend/{}\r\n", env!("CARGO_PKG_VERSION"))), "{head}");
    assert!(head.contains("content-type: application/x-www-form-urlencoded"), "{head}");
    assert!(head.contains("accept: application/json"), "{head}");
    assert_eq!(body, "grant_type=password&username=bob%40example.com&password=p%26ss%2Bw%3Drd+%C3%A9&client_id=web");

    let (url, captured) =
        capture_server("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{\"items\":[]}").await;
    let client = LoginClient::new(config_for(&url)).expect("builds");
    client.check_device_token(&StaticToken::new(DEVICE_TOKEN), &DeviceId::new(DEVICE).expect("id")).await.expect("200");
    let request = String::from_utf8(captured.await.expect("captured")).expect("UTF-8");
    assert!(request.starts_with(&format!("GET /device/{DEVICE} HTTP/1.1\r\n")), "{request}");
    assert!(
        request
            .to_ascii_lowercase()
            .contains(&format!("authorization: bearer {}\r\n", DEVICE_TOKEN.to_ascii_lowercase()))
    );
}

/// The fake cloud's names for an MFA variant of login-flow's.
fn fake_names(names: &MfaFields) -> fake_cloud::MfaFields {
    fake_cloud::MfaFields {
        grant_type: names.grant_type.clone(),
        uid_field: names.uid_field.clone(),
        user_field: names.user_field.clone(),
        code_field: names.code_field.clone(),
    }
}

#[tokio::test]
async fn the_mfa_step_finds_each_known_variant() {
    let cloud = cloud().await;
    let client = client(&cloud);
    for variant in login_flow::variants::mfa_variants(&MfaFields::default(), None) {
        cloud.control().set_mfa_fields(fake_names(&variant));
        cloud.control().reset_counters();
        let login = client
            .login_with_code_trying_variants(&mfa_user(), Some(&current_code(&cloud)), None)
            .await
            .unwrap_or_else(|error| panic!("{}: {error}", variant.as_setting()));
        assert!(cloud.control().is_access_token_valid(login.grant.access_token.expose_secret()));
        assert_eq!(login.mfa_variant.as_ref(), Some(&variant));
        assert_eq!(cloud.control().counters().mfa_steps_ok, 1);

        // Known from this login, the variant is tried first: one MFA request.
        cloud.control().reset_counters();
        let seed = TotpSeed::new(SEED);
        let again = client.login_with_totp_trying_variants(&mfa_user(), &seed, Some(&variant)).await.expect("again");
        assert_eq!(again.mfa_variant.as_ref(), Some(&variant));
        assert_eq!(cloud.control().counters().requests_total, 2, "the password grant and one MFA step");
    }
}

#[tokio::test]
async fn a_refused_code_under_a_found_variant_stops_the_search() {
    let cloud = cloud().await;
    let camel = MfaFields { uid_field: "mfaUid".into(), user_field: "userId".into(), ..MfaFields::default() };
    cloud.control().set_mfa_fields(fake_names(&camel));
    let client = client(&cloud);
    let error = client.login_with_code_trying_variants(&mfa_user(), Some(&wrong_code()), None).await.unwrap_err();
    assert!(matches!(error, LoginError::BadMfaCode { .. }), "{error:?}");
    // The password grant, the default names (a missing field), MfaUid/UserId (missing), then camelCase: refused.
    assert_eq!(cloud.control().counters().requests_total, 4);
}

#[tokio::test]
async fn names_nobody_knows_end_with_what_to_set() {
    let names = MfaFields {
        grant_type: "otp".into(),
        uid_field: "challenge".into(),
        user_field: "uid".into(),
        code_field: "totp".into(),
    };
    let cloud = FakeCloud::start(fake_config().with_mfa_fields(fake_names(&names))).await;
    let error = client(&cloud)
        .login_with_code_trying_variants(&mfa_user(), Some(&current_code(&cloud)), None)
        .await
        .unwrap_err();
    let message = error.to_string();
    // `mfa`, `mfa_code` and `otp` each once: after `unsupported_grant_type`, the other `mfa` variants are skipped.
    assert!(matches!(error, LoginError::MfaVariantsRefused { ref tried } if tried.len() == 3), "{error:?}");
    assert!(message.contains("[api.mfa]") && message.contains("grant_type = \"otp\""), "{message}");
    // Configured, they work at once.
    let client = client_with(&cloud, |config| config.mfa = names.clone());
    let login = client.login_with_code_trying_variants(&mfa_user(), Some(&current_code(&cloud)), None).await;
    assert_eq!(login.expect("the configured names work").mfa_variant, Some(names));
}
