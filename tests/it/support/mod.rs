//! Harness for end-to-end runs: builds the real programs once, then runs a private `dbus-daemon`, the fake cloud,
//! `att-tokend` and `att-token` as separate processes in a scratch directory, stopping them all on drop.

pub(crate) mod build;
pub(crate) mod process;
pub(crate) mod world;

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) use build::bins;
pub(crate) use process::Proc;
pub(crate) use world::World;

/// Generous limit for anything that should happen "soon" on a loaded 2-core machine.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` every 100 ms until it returns `Some`, panicking with `what` (and the last note) after `timeout`.
pub(crate) fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(note) if Instant::now() >= deadline => panic!("timed out after {timeout:?} waiting for {what}: {note}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A scratch directory for one test: capture files, configs, the bus socket and the daemon's state.
/// The directory itself is 0711 so that other uids can reach the bus socket inside it, and nothing more.
pub(crate) struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// Creates a fresh scratch directory.
    pub(crate) fn new(label: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("att-e2e-{label}-"))
            .tempdir()
            .expect("create a scratch directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod the scratch dir");
        Scratch { dir }
    }

    /// The directory's path.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `name` in the scratch directory with `mode`, returning the path.
    pub(crate) fn write(&self, name: &str, contents: &str, mode: u32) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).expect("write a scratch file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod a scratch file");
        path
    }
}

/// A private `dbus-daemon` listening on a socket in the scratch directory, open to every local uid.
pub(crate) struct Bus {
    /// The address clients connect to.
    pub(crate) address: String,
    proc: Proc,
}

impl Bus {
    /// Starts the bus and waits for it to print its address.
    pub(crate) fn start(scratch: &Scratch) -> Bus {
        let (proc, address) = Self::spawn(scratch);
        Bus { address, proc }
    }

    /// Kills this `dbus-daemon` (SIGKILL: every connection drops at once, as when the bus crashes) and starts a new
    /// one listening on the same socket path, as a restarted system bus does. Returns once the new one listens.
    pub(crate) fn restart(&mut self, scratch: &Scratch) {
        self.proc.kill9();
        let _ = std::fs::remove_file(scratch.path().join("bus.sock"));
        let (proc, address) = Self::spawn(scratch);
        assert_eq!(
            address.split(',').next(),
            self.address.split(',').next(),
            "the new bus listens on the same socket path"
        );
        self.proc = proc;
        self.address = address;
    }

    fn spawn(scratch: &Scratch) -> (Proc, String) {
        let socket = scratch.path().join("bus.sock");
        let config = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
            socket.display()
        );
        let config_path = scratch.write("bus.conf", &config, 0o644);
        let mut command = Command::new("dbus-daemon");
        command.arg("--nofork").arg("--print-address=1").arg(format!("--config-file={}", config_path.display()));
        let (proc, address) = Proc::spawn_reading_first_line("dbus-daemon", command, scratch.path(), PATIENCE);
        // The socket is created with the umask; other uids need write access to connect.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).expect("chmod the bus socket");
        (proc, address.trim().to_owned())
    }
}

/// The fake cloud, listening on loopback.
pub(crate) struct Fake {
    /// Base URL, `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    /// The process, stopped on drop.
    _proc: Proc,
}

impl Fake {
    /// Starts `att-fake-cloud` with `args` and waits for its `listening on URL` line.
    pub(crate) fn start(scratch: &Scratch, args: &[String]) -> Fake {
        let mut command = Command::new(&bins().fake);
        command.args(args);
        let (proc, line) = Proc::spawn_reading_first_line("att-fake-cloud", command, scratch.path(), PATIENCE);
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("att-fake-cloud printed {line:?}, not `listening on URL`"))
            .to_owned();
        Fake { url, _proc: proc }
    }

    /// `POST /_control/<path>` with a JSON body; returns the JSON reply (`null` for an empty one).
    pub(crate) fn control(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let url = format!("{}/_control/{path}", self.url);
        let response = http_client().post(&url).json(&body).send().unwrap_or_else(|e| panic!("POST {url} failed: {e}"));
        let status = response.status();
        let text = response.text().unwrap_or_default();
        assert!(status.is_success(), "POST {url} answered {status}: {text}");
        if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).expect("control replies are JSON")
        }
    }

    /// The code the user's authenticator app shows now.
    pub(crate) fn current_totp(&self, username: &str) -> String {
        let reply = self.control("totp", serde_json::json!({ "username": username }));
        reply["code"].as_str().expect("the totp reply has a code").to_owned()
    }

    /// What the fake has counted (`GET /_control/counters`).
    pub(crate) fn counters(&self) -> serde_json::Value {
        let url = format!("{}/_control/counters", self.url);
        let response = http_client().get(&url).send().unwrap_or_else(|e| panic!("GET {url} failed: {e}"));
        response.json().expect("counters are JSON")
    }

    /// One counter, e.g. `password_grants_ok`.
    pub(crate) fn counter(&self, name: &str) -> u64 {
        let counters = self.counters();
        counters[name].as_u64().unwrap_or_else(|| panic!("no counter {name} in {counters}"))
    }

    /// Whether the cloud accepts `token` as an access token right now.
    pub(crate) fn is_access_token_valid(&self, token: &str) -> bool {
        self.control("access-token-valid", serde_json::json!({ "token": token }))["valid"] == true
    }

    /// Whether a refresh would accept `token` right now.
    pub(crate) fn is_refresh_token_valid(&self, token: &str) -> bool {
        self.control("refresh-token-valid", serde_json::json!({ "token": token }))["valid"] == true
    }

    /// Injects a fault, e.g. `{"kind":"server_error","duration_ms":20000,"path":"/login"}`.
    pub(crate) fn inject_fault(&self, fault: serde_json::Value) {
        self.control("faults", fault);
    }

    /// Revokes a token of any kind; whether the fake knew it.
    pub(crate) fn revoke(&self, token: &str) -> bool {
        self.control("revoke", serde_json::json!({ "token": token }))["revoked"] == true
    }

    /// Revokes every access and refresh token of a user.
    pub(crate) fn revoke_user_sessions(&self, username: &str) -> u64 {
        self.control("revoke-user", serde_json::json!({ "username": username }))["revoked"].as_u64().unwrap_or(0)
    }
}

/// One blocking HTTP client for the control API.
fn http_client() -> &'static reqwest::blocking::Client {
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        // Plain http on loopback, but reqwest still wants a TLS provider chosen.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::blocking::Client::builder().timeout(PATIENCE).no_proxy().build().expect("build an HTTP client")
    })
}

/// A running `att-tokend`.
pub(crate) struct Daemon {
    /// The process.
    pub(crate) proc: Proc,
}

impl Daemon {
    /// Starts `att-tokend --config <config>` with `RUST_LOG=<log>` and waits until it answers `att-token list`.
    pub(crate) fn start(scratch: &Scratch, bus: &Bus, config: &Path, log: &str) -> Daemon {
        let mut command = Command::new(&bins().tokend);
        command.arg("--config").arg(config).env("RUST_LOG", log).env_remove("NOTIFY_SOCKET");
        let mut proc = Proc::spawn("att-tokend", command, scratch.path());
        wait_until("att-tokend to answer on the bus", PATIENCE, || {
            if let Some(status) = proc.try_status() {
                panic!("att-tokend exited early with {status}; stderr:\n{}", proc.stderr());
            }
            let out = cli(&bus.address).args(["list"]).output().map_err(|e| e.to_string())?;
            if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
        });
        Daemon { proc }
    }
}

/// An `att-token --bus <address>` command, ready for subcommand arguments.
pub(crate) fn cli(bus_address: &str) -> Command {
    let mut command = Command::new(&bins().token);
    command.arg("--bus").arg(bus_address).stdin(Stdio::null());
    command
}

/// Runs `att-token` to completion with `stdin` as its standard input.
pub(crate) fn cli_with_stdin(mut command: Command, stdin: &str) -> Output {
    use std::io::Write as _;
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("start att-token");
    child.stdin.take().expect("stdin is piped").write_all(stdin.as_bytes()).expect("write att-token's stdin");
    child.wait_with_output().expect("wait for att-token")
}

/// Renders a command's outcome for assertion messages (stdout may hold a token: callers pass it only in tests
/// where that is fine, since test tokens are fake).
pub(crate) fn describe(output: &Output) -> String {
    let mut text = String::new();
    let _ = write!(
        text,
        "status {}; stdout {:?}; stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// `att-token`'s exit statuses, as its man page lists them.
pub(crate) mod exit {
    /// The caller may not read the token or call the method (`AccessDenied`).
    pub(crate) const ACCESS_DENIED: i32 = 6;
    /// The token's session is lost: someone must log in (`NeedsLogin`).
    pub(crate) const NEEDS_LOGIN: i32 = 4;
    /// No valid token now, for a transient reason (`Unavailable`).
    pub(crate) const UNAVAILABLE: i32 = 5;
    /// A bad argument, also one the daemon refuses (`InvalidArgs`).
    pub(crate) const USAGE: i32 = 2;
    /// The cloud rejects this device or ground token (`Revoked`).
    pub(crate) const REVOKED: i32 = 8;
}
