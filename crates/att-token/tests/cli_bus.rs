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

/// A token's object as `att-token check` reads it.
struct CheckedToken {
    refresh_expires_at: i64,
    last_error: String,
}

#[zbus::interface(name = "io.allthingstalk.TokenAgent1.Token")]
impl CheckedToken {
    #[zbus(property)]
    fn refresh_token_expires_at(&self) -> i64 {
        self.refresh_expires_at
    }

    #[zbus(property)]
    fn last_error(&self) -> String {
        self.last_error.clone()
    }
}

/// The stand-in's `ListTokens` for the check: name, kind, expires_at, state, attention_needed.
struct CheckedAgent {
    tokens: Vec<(String, String, i64, String, bool)>,
}

#[zbus::interface(name = "io.allthingstalk.TokenAgent1")]
impl CheckedAgent {
    fn list_tokens(&self) -> Vec<(String, String, i64, String, bool)> {
        self.tokens.clone()
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

const DAY: i64 = 86_400;

/// A stand-in serving: `main` (valid, 40 days of refresh token left), `lapsing` (valid, 3 days left, attention
/// flagged), `sensor-7` (a device token) and `gone` (needs a login).
async fn checked_world() -> (PrivateBus, zbus::Connection) {
    let bus = PrivateBus::start();
    let now = now_unix();
    let rows = [
        ("main", "user", now + 3300, "valid", false, now + 40 * DAY + 60),
        ("lapsing", "user", now + 3300, "valid", true, now + 3 * DAY + 3600),
        ("sensor-7", "device", 0, "valid", false, 0),
        ("gone", "user", 0, "needs-login", true, 0),
    ];
    let tokens = rows.iter().map(|r| (r.0.into(), r.1.into(), r.2, r.3.into(), r.4)).collect();
    let mut build =
        zbus::connection::Builder::address(bus.address.as_str()).serve_at(OBJECT_PATH, CheckedAgent { tokens });
    for (name, _, _, _, attention, refresh_expires_at) in rows {
        let last_error = if attention { format!("{name} went wrong|badly\nhere") } else { String::new() };
        build = build.serve_at(token_object_path(name), CheckedToken { refresh_expires_at, last_error });
    }
    let build = build.name(BUS_NAME).build();
    let connection = tokio::time::timeout(PATIENCE, build).await.expect("serving on the private bus").unwrap();
    (bus, connection)
}

/// The one line of a check: asserts that stdout holds exactly one, and returns it.
fn status_line(out: &Output) -> String {
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one status line on stdout: {stdout:?}; stderr: {}", text(&out.stderr));
    stdout.trim_end().to_owned()
}

/// Checks every performance datum of `line` against the monitoring-plugins format
/// (`'label'=value[UOM];[warn];[crit];[min];[max]`) and returns them as (label, value, the other fields).
fn perfdata(line: &str) -> Vec<(String, f64, Vec<String>)> {
    let (_, data) = line.split_once(" | ").unwrap_or_else(|| panic!("no performance data: {line}"));
    assert!(!data.contains('|'), "{line}");
    let range = |field: &str| {
        let field = field.strip_prefix('@').unwrap_or(field);
        let number = |n: &str| n.is_empty() || n == "~" || n.parse::<f64>().is_ok();
        match field.split_once(':') {
            Some((low, high)) => number(low) && (high.is_empty() || high.parse::<f64>().is_ok()),
            None => field.is_empty() || field.parse::<f64>().is_ok(),
        }
    };
    data.split(' ')
        .map(|datum| {
            let (label, rest) = datum.split_once('=').unwrap_or_else(|| panic!("{datum:?} has no '=': {line}"));
            let label = label.trim_matches('\'');
            assert!(!label.is_empty() && !label.contains(['=', '\'']), "{datum:?}");
            let fields: Vec<&str> = rest.split(';').collect();
            assert!(fields.len() <= 5, "{datum:?}");
            let unit_at =
                fields[0].find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-')).unwrap_or(fields[0].len());
            let (value, unit) = fields[0].split_at(unit_at);
            assert!(["", "s", "ms", "us", "%", "B", "KB", "MB", "TB", "c"].contains(&unit), "{datum:?}");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{datum:?}: not a number"));
            for field in &fields[1..3.min(fields.len())] {
                assert!(range(field), "{datum:?}: {field:?} is not a threshold range");
            }
            for field in fields.iter().skip(3) {
                assert!(field.is_empty() || field.parse::<f64>().is_ok(), "{datum:?}");
            }
            (label.to_owned(), value, fields[1..].iter().map(|f| (*f).to_owned()).collect())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_speaks_the_monitoring_plugins_convention() {
    let (bus, _serving) = checked_world().await;

    let out = att_token(&bus.address, &["check", "main", "sensor-7"], "").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let line = status_line(&out);
    assert!(line.starts_with("ATT-TOKEN OK - 2 tokens served | "), "{line}");
    let data = perfdata(&line);
    let days = data.iter().find(|d| d.0 == "main_refresh_days").unwrap_or_else(|| panic!("{line}"));
    assert!((40.0..40.1).contains(&days.1) && days.2[..3] == ["7:", "0:", "0"], "{line}");
    let seconds = data.iter().find(|d| d.0 == "main_access_seconds").unwrap_or_else(|| panic!("{line}"));
    assert!((3000.0..=3300.0).contains(&seconds.1), "{line}");
    assert!(data.iter().any(|d| d.0 == "tokens" && d.1 == 2.0), "{line}");
    assert!(!data.iter().any(|d| d.0.starts_with("sensor-7_")), "a device token has no deadline: {line}");

    let out = att_token(&bus.address, &["check", "lapsing", "--warn", "7"], "").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let line = status_line(&out);
    assert!(
        line.starts_with("ATT-TOKEN WARNING - lapsing: refresh token lapses in 3 days, needs attention: "),
        "{line}"
    );
    assert!(line.contains("lapsing went wrong/badly here; 1 token | "), "{line}");
    assert_eq!(perfdata(&line).iter().find(|d| d.0 == "lapsing_refresh_days").map(|d| d.1.floor()), Some(3.0));
    let out = att_token(&bus.address, &["check", "main", "--warn", "41"], "").await;
    assert_eq!(out.status.code(), Some(1), "--warn moves the warning: {}", status_line(&out));

    let out = att_token(&bus.address, &["check"], "").await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let line = status_line(&out);
    assert!(line.starts_with("ATT-TOKEN CRITICAL - gone: needs a login (att-token login gone)"), "{line}");
    assert!(line.contains("; lapsing: refresh token lapses in 3 days") && line.contains("; 4 tokens | "), "{line}");
    let data = perfdata(&line);
    assert!(data.iter().any(|d| d.0 == "tokens_critical" && d.1 == 1.0), "{line}");
    assert!(data.iter().any(|d| d.0 == "tokens_warning" && d.1 == 1.0), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_is_unknown_when_it_cannot_tell() {
    let (bus, _serving) = checked_world().await;
    let unknown = |out: &Output, says: &str| {
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
        let line = status_line(out);
        assert!(line.starts_with("ATT-TOKEN UNKNOWN - ") && line.contains(says), "{line}");
    };
    unknown(&att_token(&bus.address, &["check", "main", "nope"], "").await, "no token named \"nope\"");
    // Bad arguments are UNKNOWN too, never clap's 2 (which a monitoring system reads as CRITICAL).
    unknown(&att_token(&bus.address, &["check", "--warn", "soon"], "").await, "bad arguments");
    unknown(&att_token(&bus.address, &["check", "--bogus"], "").await, "--bogus");
    let out = att_token(&bus.address, &["check", "--help"], "").await;
    assert_eq!(out.status.code(), Some(0));
    for needle in ["Nagios", "WARNING", "--warn", "UNKNOWN", "command_line"] {
        assert!(text(&out.stdout).contains(needle), "check --help lacks {needle:?}");
    }
    // Outside `check`, usage errors keep their status.
    assert_eq!(att_token(&bus.address, &["get"], "").await.status.code(), Some(2));

    let empty = PrivateBus::start();
    unknown(&att_token(&empty.address, &["check"], "").await, "is it running?");
    unknown(&att_token("unix:path=/nonexistent/att-token-test", &["check"], "").await, "cannot connect");
}
