//! Shared set-up for the daemon-core tests: a fake cloud on loopback, a config written to a temporary
//! directory and read by the real parser, the real engine, and the real D-Bus interface served over a
//! peer-to-peer socket pair.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use att_tokend::config;
use att_tokend::dbus::callers::Callers;
use att_tokend::dbus::{OBJECT_PATH, Service};
use att_tokend::engine::{Engine, SessionSettings, StateStore};
use att_tokend::prepare;
use fake_cloud::{FakeCloud, FakeConfig, FakeUser};
use token_agent::{TokenAgentProxy, TokenProxy, token_object_path};
use zbus::Connection;
use zbus::connection::Builder;

pub(crate) const USER: &str = "alice@example.com";
pub(crate) const PASSWORD: &str = "s3cret&+=pw";
pub(crate) const SEED: &str = "JBSWY3DPEHPK3PXP";
pub(crate) const DEVICE: &str = "abcdefghijklmnopqrstuvwx";
pub(crate) const OTHER_DEVICE: &str = "zyxwvutsrqponmlkjihgfedc";
pub(crate) const GROUND: &str = "ABCDEFGHIJKLMNOPQRSTUVW1";
pub(crate) const GROUND_DEVICE: &str = "ground0device00000000001";
pub(crate) const DEVICE_TOKEN: &str = "maker:4DeviceToken000000000001";
pub(crate) const GROUND_TOKEN: &str = "maker:4GroundToken000000000001";

/// A fake cloud with one MFA user, one device token and one ground token.
pub(crate) async fn fake_cloud(access_lifetime: Duration) -> FakeCloud {
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
pub(crate) async fn started(access_lifetime: Duration) -> (FakeCloud, Harness) {
    let cloud = fake_cloud(access_lifetime).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let text = config_text(dir.path(), &cloud.url(), "");
    let harness = Harness::start(dir, &text, Callers::peer()).await;
    (cloud, harness)
}

/// The uid running the tests (readers and admins include it, so the tests also pass when not run as root).
pub(crate) fn my_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// Writes a secret file with mode 0600.
pub(crate) fn secret_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{content}\n")).expect("write a secret file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    path
}

/// A test configuration: `main` (user), `sensor-7` (device), `site-a` (ground, devices learned), each read by
/// [`my_uid`], who is also the admin, with the refresh timings scaled to short access lifetimes and nothing
/// scheduled. `extra_user` is appended to the `main` token table.
pub(crate) fn config_text(dir: &Path, cloud_url: &str, extra_user: &str) -> String {
    let device = secret_file(dir, "sensor-7.token", DEVICE_TOKEN);
    let ground = secret_file(dir, "site-a.token", GROUND_TOKEN);
    let readers = format!("readers = {{ users = [{}] }}", my_uid());
    testbed::ConfigText::new()
        .api(cloud_url)
        .daemon("session", &dir.join("state"))
        .line(&format!("admins = {{ users = [{}] }}", my_uid()))
        .fleet_at_once()
        .refresh(&[("safety_margin", "1s"), ("retry_initial", "1s"), ("retry_max", "2s")])
        .maintenance_off()
        .user("main")
        .line(&readers)
        .line(extra_user)
        .device("sensor-7", DEVICE, &device)
        .line(&readers)
        .ground("site-a", GROUND, &ground)
        .line(&readers)
        .into()
}

/// A daemon core under test: the engine and the service on one end of a socket pair, a client on the other.
pub(crate) struct Harness {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: config::Config,
    pub(crate) engine: Engine,
    pub(crate) server: Connection,
    pub(crate) client: Connection,
}

impl Harness {
    /// Parses `text` with the real config parser and starts the engine and service with `callers`.
    pub(crate) async fn start(dir: tempfile::TempDir, text: &str, callers: Callers) -> Harness {
        Self::start_on(dir, text, callers, None).await
    }

    /// [`Harness::start`] on a machine whose id hashes to `machine` (`None`: this machine's `/etc/machine-id`).
    pub(crate) async fn start_on(
        dir: tempfile::TempDir,
        text: &str,
        callers: Callers,
        machine: Option<token_model::fleet::MachineKey>,
    ) -> Harness {
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).expect("write the config");
        let config = config::load(&path).expect("the test config is valid");
        config.check_files().expect("the test secret files are valid");
        let engine = start_engine_on(&config, machine);
        engine.restored().await;
        let (server, client) = step("serving the interface on a socket pair", pair(&engine, callers)).await;
        Harness { dir, config, engine, server, client }
    }

    pub(crate) async fn agent(&self) -> TokenAgentProxy<'static> {
        agent(&self.client).await
    }

    pub(crate) async fn token(&self, name: &str) -> TokenProxy<'static> {
        TokenProxy::builder(&self.client)
            .path(token_object_path(name))
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .expect("a token proxy")
    }

    /// A proxy for token `name` that caches its properties, so that its change stream sees every state the
    /// object announces.
    pub(crate) async fn cached_token(&self, name: &str) -> TokenProxy<'static> {
        TokenProxy::builder(&self.client).path(token_object_path(name)).build().await.expect("a token proxy")
    }

    /// Stops the engine (as on SIGTERM) and closes both connections.
    pub(crate) async fn stop(self) -> tempfile::TempDir {
        step("stopping the engine", self.engine.shutdown()).await;
        drop(self.client);
        drop(self.server);
        self.dir
    }
}

/// The engine as `att-tokend` builds it from a config.
pub(crate) fn start_engine(config: &config::Config) -> Engine {
    start_engine_on(config, None)
}

/// [`start_engine`] on a machine whose id hashes to `machine` (`None`: this machine's `/etc/machine-id`).
pub(crate) fn start_engine_on(config: &config::Config, machine: Option<token_model::fleet::MachineKey>) -> Engine {
    let prepared = prepare::prepare(config.clone()).expect("the config prepared");
    let cloud = prepare::cloud(config, login_flow::tls::in_background()).expect("a cloud client");
    let dir = att_tokend::state_dir::StateDir::open(&config.daemon.state_dir).expect("the state directory");
    let store = Arc::new(StateStore::new(dir, prepared.origin));
    let settings = SessionSettings {
        cloud: Some(cloud),
        store: Some(store),
        policy: prepare::policy(&config.refresh),
        startup: token_model::fleet::Spread::new(machine.unwrap_or(prepared.machine), config.fleet.startup_spread),
        // The machine's own time-sync state must not decide these tests: its clock counts as synchronised.
        clock: {
            let clock = att_tokend::clock::ClockPolicy::new(config.daemon.trust_kernel_time_sync);
            clock.set_synchronised(true);
            clock
        },
    };
    Engine::start(prepared.engine, settings)
}

/// Serves the real interface on one end of a Unix socket pair; returns (server, client) connections.
pub(crate) async fn pair(engine: &Engine, callers: Callers) -> (Connection, Connection) {
    let (a, b) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    let guid = zbus::Guid::generate();
    let server = Service::serve(Builder::unix_stream(a).server(guid).p2p(), engine.clone(), Arc::new(callers));
    let (server, client) = tokio::join!(
        step("serving the interface on one end of a socket pair", server),
        Builder::unix_stream(b).p2p().build()
    );
    (server.expect("serve the interface").connection().clone(), client.expect("client end"))
}

pub(crate) async fn agent(client: &Connection) -> TokenAgentProxy<'static> {
    TokenAgentProxy::builder(client)
        .path(OBJECT_PATH)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .expect("an agent proxy")
}

/// The D-Bus error name of a failed call.
pub(crate) fn error_name(result: &zbus::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(e) => token_agent::error_name(e).unwrap_or_else(|| format!("not a D-Bus error: {e}")),
        Ok(value) => panic!("expected an error, got {value:?}"),
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub(crate) async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
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
pub(crate) async fn login(harness: &Harness, cloud: &FakeCloud) -> i64 {
    let agent = harness.agent().await;
    let code = cloud.control().current_totp(USER).expect("the user has MFA");
    agent.login("main", USER, PASSWORD, &code).await.expect("login with MFA")
}

/// Awaits `future`, failing the test with `what` if it takes more than a minute.
pub(crate) async fn step<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(60), future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Declares the test `$name`, which runs the async fn `$body` with [`in_own_process`].
macro_rules! core_test {
    ($name:ident, $body:ident) => {
        #[test]
        fn $name() {
            $crate::core_support::in_own_process(concat!(module_path!(), "::", stringify!($name)), $body);
        }
    };
}

/// Runs one test in a process of its own (this test binary, re-run for that test alone), one at a time,
/// and fails it if it fails or runs past [`LIMIT`]. Each test drives a daemon with second-scale deadlines
/// on its own runtime; a process each keeps them from sharing anything, and one at a time keeps their timing
/// meaningful on a loaded two-core machine.
///
/// `path` is the test's module path with its name (`it::core_service::NAME`); the crate's name is left out, as
/// the test binary names its tests.
pub(crate) fn in_own_process<F, Fut>(path: &str, body: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let name = path.split_once("::").map_or(path, |(_crate, name)| name);
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
