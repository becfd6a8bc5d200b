//! Shared set-up for the daemon-core tests: a fake cloud on loopback, a config written to a temporary
//! directory and read by the real parser, the real engine, and the real D-Bus interface served over a
//! peer-to-peer socket pair.

#![allow(dead_code, unreachable_pub)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use att_tokend::config;
use att_tokend::dbus::access::Credentials;
use att_tokend::dbus::{OBJECT_PATH, Service};
use att_tokend::engine::{Engine, SessionSettings, StateStore};
use att_tokend::run;
use fake_cloud::{FakeCloud, FakeConfig, FakeUser};
use token_agent::{TokenAgentProxy, TokenProxy, token_object_path};
use zbus::Connection;
use zbus::connection::Builder;

pub const USER: &str = "alice@example.com";
pub const PASSWORD: &str = "s3cret&+=pw";
pub const SEED: &str = "JBSWY3DPEHPK3PXP";
pub const DEVICE: &str = "abcdefghijklmnopqrstuvwx";
pub const OTHER_DEVICE: &str = "zyxwvutsrqponmlkjihgfedc";
pub const GROUND: &str = "ABCDEFGHIJKLMNOPQRSTUVW1";
pub const GROUND_DEVICE: &str = "ground0device00000000001";
pub const DEVICE_TOKEN: &str = "maker:4DeviceToken000000000001";
pub const GROUND_TOKEN: &str = "maker:4GroundToken000000000001";

/// A fake cloud with one MFA user, one device token and one ground token.
pub async fn fake_cloud(access_lifetime: Duration) -> FakeCloud {
    FakeCloud::start(
        FakeConfig::default()
            .with_user(FakeUser::new(USER, PASSWORD).with_totp_seed(SEED))
            .with_access_lifetime(access_lifetime)
            .with_device_token(DEVICE_TOKEN, DEVICE)
            .with_ground_token(GROUND_TOKEN, GROUND, [GROUND_DEVICE]),
    )
    .await
}

/// The usual set-up: a fake cloud whose access tokens live `access_lifetime`, the test config, and the daemon
/// core serving it to this process over a socket pair.
pub async fn started(access_lifetime: Duration) -> (FakeCloud, Harness) {
    let cloud = fake_cloud(access_lifetime).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let text = config_text(dir.path(), &cloud.url(), "");
    let harness = Harness::start(dir, &text, Credentials::peer()).await;
    (cloud, harness)
}

/// The uid running the tests (readers and admins include it, so the tests also pass when not run as root).
pub fn my_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// Writes a secret file with mode 0600.
pub fn secret_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{content}\n")).expect("write a secret file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    path
}

/// A test configuration: `main` (user), `sensor-7` (device), `site-a` (ground, devices learned), with the
/// refresh timings scaled to short access lifetimes. `extra_user` is appended to the `main` token table.
pub fn config_text(dir: &Path, cloud_url: &str, extra_user: &str) -> String {
    let device = secret_file(dir, "sensor-7.token", DEVICE_TOKEN);
    let ground = secret_file(dir, "site-a.token", GROUND_TOKEN);
    let uid = my_uid();
    format!(
        r#"
[api]
url = "{cloud_url}"

[daemon]
bus = "session"
state_dir = "{state}"
admins = {{ users = [{uid}] }}

[refresh]
safety_margin = "1s"
retry_initial = "1s"
retry_max = "2s"

[maintenance]
token_health = "off"
ground_sync = "off"
lapse_review = "off"

[[token]]
name = "main"
kind = "user"
readers = {{ users = [{uid}] }}
{extra_user}

[[token]]
name = "sensor-7"
kind = "device"
device_id = "{DEVICE}"
token_file = "{device}"
readers = {{ users = [{uid}] }}

[[token]]
name = "site-a"
kind = "ground"
ground_id = "{GROUND}"
token_file = "{ground}"
readers = {{ users = [{uid}] }}
"#,
        state = dir.join("state").display(),
        device = device.display(),
        ground = ground.display(),
    )
}

/// A daemon core under test: the engine and the service on one end of a socket pair, a client on the other.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub config: config::Config,
    pub engine: Engine,
    pub server: Connection,
    pub client: Connection,
}

impl Harness {
    /// Parses `text` with the real config parser and starts the engine and service with `credentials`.
    pub async fn start(dir: tempfile::TempDir, text: &str, credentials: Credentials) -> Harness {
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).expect("write the config");
        let config = config::load(&path).expect("the test config is valid");
        config.check_files().expect("the test secret files are valid");
        let engine = start_engine(&config);
        let (server, client) = step("serving the interface on a socket pair", pair(&engine, credentials)).await;
        Harness { dir, config, engine, server, client }
    }

    pub async fn agent(&self) -> TokenAgentProxy<'static> {
        agent(&self.client).await
    }

    pub async fn token(&self, name: &str) -> TokenProxy<'static> {
        TokenProxy::builder(&self.client)
            .path(token_object_path(name))
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .expect("a token proxy")
    }

    /// Stops the engine (as on SIGTERM) and closes both connections.
    pub async fn stop(self) -> tempfile::TempDir {
        step("stopping the engine", self.engine.shutdown()).await;
        drop(self.client);
        drop(self.server);
        self.dir
    }
}

/// The engine as `att-tokend` builds it from a config.
pub fn start_engine(config: &config::Config) -> Engine {
    let engine_config = run::engine_config(config).expect("the engine config");
    let cloud = run::cloud(&config.api).expect("a cloud client");
    let dir = att_tokend::state::StateDir::open(&config.daemon.state_dir).expect("the state directory");
    let store = Arc::new(StateStore::new(dir, run::origin(&config.api).expect("the [api] origin")));
    let settings = SessionSettings {
        cloud: Some(cloud),
        store: Some(store),
        policy: run::policy(&config.refresh),
        // The machine's own time-sync state must not decide these tests: its clock counts as synchronised.
        clock: {
            let clock = att_tokend::clock::ClockPolicy::new(config.daemon.trust_kernel_time_sync);
            clock.set_synchronised(true);
            clock
        },
    };
    Engine::start(engine_config, settings)
}

/// Serves the real interface on one end of a Unix socket pair; returns (server, client) connections.
pub async fn pair(engine: &Engine, credentials: Credentials) -> (Connection, Connection) {
    let (a, b) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    let guid = zbus::Guid::generate();
    let server = Service::serve(Builder::unix_stream(a).server(guid).p2p(), engine.clone(), Arc::new(credentials));
    let (server, client) = tokio::join!(
        step("serving the interface on one end of a socket pair", server),
        Builder::unix_stream(b).p2p().build()
    );
    (server.expect("serve the interface").connection().clone(), client.expect("client end"))
}

pub async fn agent(client: &Connection) -> TokenAgentProxy<'static> {
    TokenAgentProxy::builder(client)
        .path(OBJECT_PATH)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .expect("an agent proxy")
}

/// The D-Bus error name of a failed call.
pub fn error_name(result: &zbus::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(e) => token_agent::error_name(e).unwrap_or_else(|| format!("not a D-Bus error: {e}")),
        Ok(value) => panic!("expected an error, got {value:?}"),
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Logs in `main` with a fresh TOTP code from the fake.
pub async fn login(harness: &Harness, cloud: &FakeCloud) -> i64 {
    let agent = harness.agent().await;
    let code = cloud.control().current_totp(USER).expect("the user has MFA");
    agent.login("main", USER, PASSWORD, &code).await.expect("login with MFA")
}

/// Awaits `future`, failing the test with `what` if it takes more than a minute.
pub async fn step<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(60), future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Declares the test `$name`, which runs the async fn `$body` with [`in_own_process`].
#[macro_export]
macro_rules! core_test {
    ($name:ident, $body:ident) => {
        #[test]
        fn $name() {
            $crate::core_support::in_own_process(stringify!($name), $body);
        }
    };
}

/// Runs one test in a process of its own (this test binary, re-run for that test alone), one at a time,
/// and fails it if it fails or runs past [`LIMIT`]. Each test drives a daemon with second-scale deadlines
/// on its own runtime; a process each keeps them from sharing anything, and one at a time keeps their timing
/// meaningful on a loaded two-core machine.
pub fn in_own_process<F, Fut>(name: &str, body: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    const CHILD: &str = "ATT_TOKEND_CORE_TEST";
    if std::env::var(CHILD).is_ok_and(|v| v == name) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(body());
        return;
    }
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match run_child(name, CHILD) {
        (Some(status), output) if status.success() && output.contains("1 passed") => {}
        (Some(status), output) => panic!("{name} failed ({status}):\n{output}"),
        (None, output) => panic!("{name} hung: it did not finish within {LIMIT:?}:\n{output}"),
    }
}

/// How long one core test may run; they take well under 60 s.
const LIMIT: Duration = Duration::from_secs(120);

/// Runs test `name` alone in a child process (a `testbed::Proc`, stopped and reaped whatever happens); its exit
/// status (`None` when it hung past [`LIMIT`]) and its output, stdout then stderr.
fn run_child(name: &str, marker: &str) -> (Option<std::process::ExitStatus>, String) {
    let exe = std::env::current_exe().expect("the test binary");
    let scratch = testbed::Scratch::new("core-test").unwrap_or_else(|e| panic!("{e:#}"));
    let mut command = std::process::Command::new(exe);
    command.args(["--exact", name, "--test-threads=1", "--nocapture"]).env(marker, name);
    let mut child = testbed::Proc::spawn(name, command, &scratch).unwrap_or_else(|e| panic!("{e:#}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_status() {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill9();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, format!("{}{}", child.stdout(), child.stderr()))
}
