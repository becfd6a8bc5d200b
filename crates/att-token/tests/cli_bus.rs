//! The real `att-token` program against a stand-in service on a private `dbus-daemon`: output, exit statuses and
//! the login conversation.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use token_agent::{BUS_NAME, OBJECT_PATH, token_object_path};

const PATIENCE: Duration = Duration::from_secs(30);

/// A private bus (`testbed`'s, open to every local uid) in a scratch directory, both gone on drop.
struct PrivateBus {
    bus: testbed::Bus,
    _scratch: testbed::Scratch,
}

impl PrivateBus {
    fn start() -> PrivateBus {
        let scratch = testbed::Scratch::new("cli-bus").unwrap_or_else(|e| panic!("{e:#}"));
        let bus = testbed::Bus::start(&scratch).unwrap_or_else(|e| panic!("{e:#}"));
        PrivateBus { bus, _scratch: scratch }
    }
}

impl std::ops::Deref for PrivateBus {
    type Target = testbed::Bus;

    fn deref(&self) -> &testbed::Bus {
        &self.bus
    }
}

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "io.allthingstalk.TokenAgent1.Error")]
enum AgentError {
    #[zbus(error)]
    ZBus(zbus::Error),
    UnknownToken(String),
    MfaRequired(String),
    MfaFailed(String),
    Unavailable(String),
}

/// What the stand-in saw of `Login` calls: (name, username, password, code).
type Logins = Arc<Mutex<Vec<(String, String, String, String)>>>;

struct Agent {
    logins: Logins,
}

const EXPIRES: i64 = 4_000_000_000;

#[zbus::interface(name = "io.allthingstalk.TokenAgent1")]
impl Agent {
    fn get_token(&self, name: &str) -> Result<(String, i64), AgentError> {
        match name {
            "main" => Ok(("tok-main".into(), EXPIRES)),
            "flaky" => Err(AgentError::Unavailable("the cloud is unreachable; retrying in 30 s".into())),
            other => Err(AgentError::UnknownToken(format!("no token named {other:?}; see att-token list"))),
        }
    }

    fn get_token_valid_for(&self, name: &str, seconds: u32) -> Result<(String, i64), AgentError> {
        self.get_token(name).map(|(token, at)| (format!("{token}-valid-{seconds}"), at))
    }

    fn get_token_for_device(&self, device_id: &str) -> Result<(String, String, i64), AgentError> {
        Ok(("sensor-7".into(), format!("tok-dev-{device_id}"), 0))
    }

    fn list_tokens(&self) -> Vec<(String, String, i64, String, bool)> {
        vec![
            ("main".into(), "user".into(), EXPIRES, "valid".into(), false),
            ("sensor-7".into(), "device".into(), 0, "revoked".into(), true),
        ]
    }

    fn login(&self, name: &str, username: &str, password: &str, code: &str) -> Result<i64, AgentError> {
        self.logins.lock().unwrap().push((name.into(), username.into(), password.into(), code.into()));
        match code {
            "" => Err(AgentError::MfaRequired("this account uses MFA; give the 6-digit code".into())),
            "123456" => Ok(EXPIRES),
            _ => Err(AgentError::MfaFailed("the code was refused; wait for the next one and retry".into())),
        }
    }

    #[zbus(signal)]
    async fn token_changed(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        name: &str,
        expires_at: i64,
    ) -> zbus::Result<()>;
}

struct TokenObject {
    next: i64,
}

#[zbus::interface(name = "io.allthingstalk.TokenAgent1.Token")]
impl TokenObject {
    #[zbus(property)]
    fn next_refresh_at(&self) -> i64 {
        self.next
    }
}

struct World {
    bus: PrivateBus,
    connection: zbus::Connection,
    logins: Logins,
}

async fn world() -> World {
    let bus = PrivateBus::start();
    let logins = Logins::default();
    let build = zbus::connection::Builder::address(bus.address.as_str())
        .serve_at(OBJECT_PATH, Agent { logins: logins.clone() })
        .serve_at(token_object_path("main"), TokenObject { next: EXPIRES - 600 })
        .name(BUS_NAME)
        .build();
    let connection = tokio::time::timeout(PATIENCE, build).await.expect("serving on the private bus").unwrap();
    World { bus, connection, logins }
}

/// Runs `att-token --bus <address> args…` with `stdin`, off the async runtime.
async fn att_token(address: &str, args: &[&str], stdin: &str) -> Output {
    let address = address.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_att-token"))
            .arg("--bus")
            .arg(&address)
            .args(&args)
            .env_remove("ATT_TOKEN_BUS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        finish(child)
    })
    .await
    .unwrap()
}

/// Waits for `child` (killing it after [`PATIENCE`]) and collects its output.
fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("att-token did not finish in {PATIENCE:?}; stderr: {}", text(&output.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_printed_alone_and_errors_map_to_exit_statuses() {
    let w = world().await;
    let out = att_token(&w.bus.address, &["get", "main"], "").await;
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), "tok-main\n".to_owned()), "{}", text(&out.stderr));

    let out = att_token(&w.bus.address, &["get", "main", "--min-valid", "600"], "").await;
    assert_eq!(text(&out.stdout), "tok-main-valid-600\n");

    let out = att_token(&w.bus.address, &["for-device", "abcdefghijklmnopqrstuvwx"], "").await;
    assert_eq!(text(&out.stdout), "tok-dev-abcdefghijklmnopqrstuvwx\n");

    let out = att_token(&w.bus.address, &["get", "nope"], "").await;
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty());
    assert_eq!(text(&out.stderr), "att-token: no token named \"nope\"; see att-token list\n");

    let out = att_token(&w.bus.address, &["get", "flaky"], "").await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));

    // The stand-in has no Refresh method: an unknown method is reported as a daemon problem.
    let out = att_token(&w.bus.address, &["refresh", "main"], "").await;
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(text(&out.stderr).starts_with("att-token: "));
    assert_eq!(text(&out.stderr).lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_a_table_and_json() {
    let w = world().await;
    let out = att_token(&w.bus.address, &["list"], "").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for word in ["NAME", "KIND", "STATE", "TIME LEFT", "NEXT REFRESH", "ATTENTION"] {
        assert!(lines[0].contains(word), "{table}");
    }
    assert!(lines[1].starts_with("main") && lines[1].contains("valid") && lines[1].contains("in "), "{table}");
    assert!(lines[2].contains("revoked") && lines[2].contains("no expiry") && lines[2].ends_with("yes"), "{table}");

    let out = att_token(&w.bus.address, &["list", "--json"], "").await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["name"], "main");
    assert_eq!(json[0]["next_refresh_at"], EXPIRES - 600);
    assert_eq!(json[1]["attention_needed"], true);
    assert_eq!(json[1]["next_refresh_at"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sends_the_code_and_reports_mfa_needs() {
    let w = world().await;
    let args = ["login", "main", "--username", "alice@example.com", "--password-stdin", "--code", "123456"];
    let out = att_token(&w.bus.address, &args, "p&ss =+word\n").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("logged in main"));
    assert_eq!(
        w.logins.lock().unwrap().clone(),
        [("main".into(), "alice@example.com".into(), "p&ss =+word".into(), "123456".into())]
    );

    // A wrong code is a login failure (4), and the code never shows up in the message.
    let out = att_token(
        &w.bus.address,
        &["login", "main", "--username", "a", "--password-stdin", "--code", "654321"],
        "pw\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(4));
    assert!(!text(&out.stderr).contains("654321"));

    // Without --code and without a terminal, att-token asks the daemon first and then explains what to pass.
    w.logins.lock().unwrap().clear();
    let out = Command::new(env!("CARGO_BIN_EXE_att-token"))
        .args(["--bus", &w.bus.address, "login", "main", "--username", "a", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(b"pw\n")?;
            Ok(child)
        })
        .map(finish);
    let out = out.unwrap();
    if std::fs::File::open("/dev/tty").is_err() {
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("--code"), "{}", text(&out.stderr));
    }
    assert_eq!(w.logins.lock().unwrap().first().map(|l| l.3.clone()), Some(String::new()));

    let out = att_token(&w.bus.address, &["login", "main", "--password-stdin"], "pw\n").await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--username"));
    let out =
        att_token(&w.bus.address, &["login", "main", "--username", "a", "--password-stdin", "--code", "12"], "pw\n")
            .await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_signals_as_lines() {
    let w = world().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_att-token"))
        .args(["--bus", &w.bus.address, "watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let emitter = zbus::object_server::SignalEmitter::new(&w.connection, OBJECT_PATH).unwrap();
    let deadline = Instant::now() + PATIENCE;
    // The watcher subscribes after it starts: emit until a line arrives.
    let line = loop {
        assert!(Instant::now() < deadline, "att-token watch printed nothing");
        Agent::token_changed(&emitter, "main", EXPIRES).await.unwrap();
        if let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            break line;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("TokenChanged") && line.contains("main") && line.contains("GMT"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_daemon_is_exit_status_7() {
    let bus = PrivateBus::start();
    let out = att_token(&bus.address, &["get", "main"], "").await;
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is att-tokend running?"), "{}", text(&out.stderr));
    let out = att_token("unix:path=/nonexistent/att-token-test", &["list"], "").await;
    assert_eq!(out.status.code(), Some(7));
    assert!(text(&out.stderr).contains("cannot connect"), "{}", text(&out.stderr));
}
