use std::time::{Duration, Instant};

use fake_cloud::{FakeCloud, FakeConfig, FakeUser};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

pub(crate) const ALICE: &str = "alice@example.com";
pub(crate) const ALICE_PASSWORD: &str = "p&ss+w=rd %1";
pub(crate) const BOB: &str = "bob@example.com";
pub(crate) const BOB_PASSWORD: &str = "hunter2";
/// RFC 6238's SHA1 test seed ("12345678901234567890"), base32.
pub(crate) const BOB_SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
pub(crate) const DEVICE_1: &str = "5f3e8a9b2c1d4e6f7a8b9c0d";
pub(crate) const DEVICE_2: &str = "6a4f9b0c3d2e5f708192a3b4";
pub(crate) const DEVICE_3: &str = "7b5a0c1d4e3f6a8192a3b4c5";
pub(crate) const GROUND: &str = "8c6b1d2e5f4a7b92a3b4c5d6";
pub(crate) const DEVICE_TOKEN: &str = "maker:4AbCdDeviceTokenOne";
pub(crate) const GROUND_TOKEN: &str = "maker:9XyZGroundTokenOne";

/// Alice without MFA, Bob with MFA, a device token for device 1 and a ground token holding devices 1 and 2.
pub(crate) fn config() -> FakeConfig {
    FakeConfig::default()
        .with_user(FakeUser::new(ALICE, ALICE_PASSWORD))
        .with_user(FakeUser::new(BOB, BOB_PASSWORD).with_totp_seed(BOB_SEED))
        .with_device_token(DEVICE_TOKEN, DEVICE_1)
        .with_ground_token(GROUND_TOKEN, GROUND, [DEVICE_1, DEVICE_2])
}

pub(crate) async fn start() -> FakeCloud {
    FakeCloud::start(config()).await
}

pub(crate) fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    // The HTTP client links rustls without a provider; plain http needs none, but building one asks.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().timeout(timeout).build().expect("an HTTP client builds")
}

pub(crate) fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(60))
}

/// A reply: status, headers and the body as JSON (`Value::Null` when it is not JSON).
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

impl Reply {
    pub(crate) async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("the body arrives");
        Self { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::Null) }
    }

    pub(crate) fn str(&self, field: &str) -> &str {
        self.body[field].as_str().unwrap_or_else(|| panic!("field {field} is not a string in {}", self.body))
    }

    /// Asserts an HTTP 400 with this OAuth2 error code.
    pub(crate) fn assert_error(&self, code: &str) {
        assert_eq!(self.status, StatusCode::BAD_REQUEST, "body: {}", self.body);
        assert_eq!(self.body["error"], code, "body: {}", self.body);
    }
}

pub(crate) async fn post_form(client: &reqwest::Client, cloud: &FakeCloud, form: &[(&str, &str)]) -> Reply {
    let response = client.post(format!("{}/login", cloud.url())).form(form).send().await.expect("the fake answers");
    Reply::read(response).await
}

pub(crate) async fn password_login(client: &reqwest::Client, cloud: &FakeCloud, user: &str, password: &str) -> Reply {
    post_form(
        client,
        cloud,
        &[("grant_type", "password"), ("username", user), ("password", password), ("client_id", "web")],
    )
    .await
}

/// The MFA step of client `web`: the challenge's `uid` and `user_id` with `code`.
pub(crate) async fn mfa_step(
    client: &reqwest::Client,
    cloud: &FakeCloud,
    uid: &str,
    user_id: &str,
    code: &str,
) -> Reply {
    post_form(
        client,
        cloud,
        &[("grant_type", "mfa"), ("client_id", "web"), ("mfa_uid", uid), ("user_id", user_id), ("code", code)],
    )
    .await
}

pub(crate) async fn refresh(client: &reqwest::Client, cloud: &FakeCloud, token: &str, client_id: &str) -> Reply {
    post_form(client, cloud, &[("grant_type", "refresh_token"), ("refresh_token", token), ("client_id", client_id)])
        .await
}

pub(crate) async fn get_with(client: &reqwest::Client, cloud: &FakeCloud, path: &str, token: Option<&str>) -> Reply {
    let mut request = client.get(format!("{}{path}", cloud.url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Reply::read(request.send().await.expect("the fake answers")).await
}

/// Sends `request` and reads its reply as JSON, failing the test when there is none.
pub(crate) async fn json_reply(request: reqwest::RequestBuilder) -> Value {
    request.send().await.expect("answers").json().await.expect("JSON")
}

/// Seconds between two HTTP-dates.
pub(crate) fn secs_between(earlier: &str, later: &str) -> i64 {
    let a = httpdate::parse_http_date(earlier).expect("an HTTP-date");
    let b = httpdate::parse_http_date(later).expect("an HTTP-date");
    match b.duration_since(a) {
        Ok(d) => i64::try_from(d.as_secs()).expect("small"),
        Err(e) => -i64::try_from(e.duration().as_secs()).expect("small"),
    }
}

/// Polls `check` until it holds or 30 s pass.
pub(crate) async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
