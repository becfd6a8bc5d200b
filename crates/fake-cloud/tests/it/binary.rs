use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_att-fake-cloud");
const SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DP";

/// A running `att-fake-cloud`: its URL, its remaining stdout lines and its stderr.
struct Running {
    child: Child,
    url: String,
    stdout_rest: mpsc::Receiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "trace")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx.recv_timeout(Duration::from_secs(60)).expect("a first line within a minute");
        let url = first.strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let port: u16 = url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
        assert_ne!(port, 0);
        Self { child, url: url.to_owned(), stdout_rest: rx }
    }

    /// Sends SIGTERM, waits for the exit, and returns whether it was clean plus everything on stderr.
    fn terminate(mut self) -> (bool, String) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        let exit = loop {
            if let Some(exit) = self.child.try_wait().expect("waitable") {
                break exit;
            }
            assert!(Instant::now() < deadline, "no exit within a minute of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        self.child.stderr.take().expect("piped").read_to_string(&mut stderr).expect("stderr readable");
        assert!(self.stdout_rest.try_recv().is_err(), "stdout holds exactly one line");
        (exit.success(), stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn login(client: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = client.post(format!("{url}/login")).form(form).send().await.expect("the fake answers");
    (response.status(), response.json().await.expect("JSON"))
}

#[tokio::test]
async fn flags_configure_the_fake_and_sigterm_stops_it() {
    let running = Running::start(&[
        "--user",
        &format!("alice@example.com:pw0rd:{SEED}"),
        "--device-token",
        "maker:dev=5f3e8a9b2c1d4e6f7a8b9c0d",
        "--ground-token",
        "maker:grd=8c6b1d2e5f4a7b92a3b4c5d6:5f3e8a9b2c1d4e6f7a8b9c0d,6a4f9b0c3d2e5f708192a3b4",
        "--access-lifetime",
        "30s",
        "--rotation",
        "omit",
        "--mfa-shape",
        "2",
        "--clock-offset=-5m",
    ]);
    let client = crate::support::client();
    let url = running.url.clone();
    let (status, body) = login(
        &client,
        &url,
        &[("grant_type", "password"), ("username", "alice@example.com"), ("password", "pw0rd"), ("client_id", "web")],
    )
    .await;
    assert_eq!((status, body["error"].clone()), (StatusCode::BAD_REQUEST, json!("mfa_required")));
    let challenge: Value = serde_json::from_str(body["error_description"].as_str().expect("a string")).expect("JSON");
    let code = crate::support::json_reply(
        client.post(format!("{url}/_control/totp")).json(&json!({"username": "alice@example.com"})),
    )
    .await;
    let (status, tokens) = login(
        &client,
        &url,
        &[
            ("grant_type", "mfa"),
            ("client_id", "web"),
            ("mfa_uid", challenge["MfaUid"].as_str().expect("uid")),
            ("user_id", challenge["UserId"].as_str().expect("user id")),
            ("code", code["code"].as_str().expect("code")),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["expires_in"], 29);
    let issued = httpdate::parse_http_date(tokens[".issued"].as_str().expect("issued")).expect("HTTP-date");
    let behind = std::time::SystemTime::now().duration_since(issued).expect("the server runs behind").as_secs();
    assert!((240..=360).contains(&behind), "five minutes behind, got {behind} s");
    let refresh_token = tokens["refresh_token"].as_str().expect("a refresh token").to_owned();
    let (status, refreshed) = login(
        &client,
        &url,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh_token), ("client_id", "web")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(refreshed.get("refresh_token").is_none(), "rotation omit: {refreshed}");
    let device = client
        .get(format!("{url}/device/6a4f9b0c3d2e5f708192a3b4"))
        .bearer_auth("maker:grd")
        .send()
        .await
        .expect("answers");
    assert_eq!(device.status(), StatusCode::OK);
    let device = client
        .get(format!("{url}/device/6a4f9b0c3d2e5f708192a3b4"))
        .bearer_auth("maker:dev")
        .send()
        .await
        .expect("answers");
    assert_eq!(device.status(), StatusCode::FORBIDDEN);

    let (clean, stderr) = running.terminate();
    assert!(clean, "exit status is success; stderr: {stderr}");
    assert!(stderr.contains("POST /login -> 400"), "{stderr}");
    assert!(stderr.contains("GET /device/6a4f9b0c3d2e5f708192a3b4 -> 403"), "{stderr}");
    for secret in ["pw0rd", SEED, &refresh_token, "maker:grd", tokens["access_token"].as_str().expect("token")] {
        assert!(!stderr.contains(secret), "stderr leaks a secret");
    }
}

#[tokio::test]
async fn a_toml_file_configures_the_fake() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("cloud.toml");
    std::fs::write(
        &path,
        r#"
access_lifetime = "2m"
rotation = "fixed"
client_ids = ["web", "gateway"]

[[user]]
username = "carol@example.com"
password = "with:colon"

[[device_token]]
token = "maker:file"
device_id = "5f3e8a9b2c1d4e6f7a8b9c0d"
"#,
    )
    .expect("written");
    let running = Running::start(&["--config", path.to_str().expect("UTF-8 path")]);
    let client = crate::support::client();
    let form = [
        ("grant_type", "password"),
        ("username", "carol@example.com"),
        ("password", "with:colon"),
        ("client_id", "gateway"),
    ];
    let (status, tokens) = login(&client, &running.url, &form).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["expires_in"], 119);
    let rt = tokens["refresh_token"].as_str().expect("rt");
    let (_, again) = login(
        &client,
        &running.url,
        &[("grant_type", "refresh_token"), ("refresh_token", rt), ("client_id", "gateway")],
    )
    .await;
    assert_eq!(again["refresh_token"].as_str(), Some(rt), "rotation fixed");
    let (status, _) = login(
        &client,
        &running.url,
        &[("grant_type", "password"), ("client_id", "web"), ("username", "x"), ("password", "y")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let device = client
        .get(format!("{}/device/5f3e8a9b2c1d4e6f7a8b9c0d", running.url))
        .bearer_auth("maker:file")
        .send()
        .await
        .expect("answers");
    assert_eq!(device.status(), StatusCode::OK);
    let (clean, _) = running.terminate();
    assert!(clean);
}

#[test]
fn help_explains_the_first_line_and_the_flags() {
    let output = Command::new(BIN).arg("--help").output().expect("the binary runs");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).expect("UTF-8");
    for needle in [
        "listening on http://127.0.0.1:PORT",
        "--listen",
        "--config",
        "--user <USERNAME:PASSWORD[:TOTPSEED]>",
        "--device-token <TOKEN=DEVICEID>",
        "--ground-token <TOKEN=GROUNDID:DEV1,DEV2>",
        "--access-lifetime",
        "--refresh-lifetime",
        "--rotation",
        "--mfa-shape",
        "--clock-offset",
        "/_control/",
        "SIGTERM",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

/// `--help` is text users read: it is kept in `tests/data/help.txt`; `UPDATE_SNAPSHOTS=1` rewrites the file.
#[test]
fn help_matches_the_snapshot() {
    let output = Command::new(BIN).arg("--help").env("COLUMNS", "100").output().expect("the binary runs");
    let help = String::from_utf8(output.stdout).expect("UTF-8");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/help.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &help).expect("the snapshot is writable");
    }
    let expected = std::fs::read_to_string(&path).expect("tests/data/help.txt exists; UPDATE_SNAPSHOTS=1 creates it");
    assert_eq!(help, expected, "--help changed: review it, then rerun with UPDATE_SNAPSHOTS=1");
}

#[test]
fn bad_arguments_fail_with_a_useful_message() {
    let output = Command::new(BIN).args(["--user", "nobody"]).output().expect("the binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("USERNAME:PASSWORD"), "{stderr}");
    assert!(output.stdout.is_empty(), "no address line on failure");

    let output = Command::new(BIN).args(["--access-lifetime", "5y"]).output().expect("the binary runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("like 90s, 45m, 36h or 60d"));
}
