//! The daemon's life: build the engine from the config, serve D-Bus, then one visible event loop for
//! signals, the watchdog and shutdown.
//!
//! Order at start: the state directory's lock (a second daemon on the same state stops here, before it reads a
//! session or calls the cloud) → engine (sessions restored from the state directory) → objects served on the
//! bus → bus name requested → `READY=1`. `SIGHUP` re-reads the config and the token files; `SIGTERM` and `SIGINT`
//! save every session and exit cleanly.
//!
//! The loop itself never waits on anything slow: a reconnection attempt and a reload's preparation (the config and
//! secret files, users and groups from NSS, timedated) run beside it and it takes their results, so `WATCHDOG=1`
//! goes out every half watchdog interval whatever the bus or NSS do.
//!
//! Losing the bus is not losing a session: when the connection closes (the bus restarted, or it dropped the
//! connection), the engine and its session tasks go on (a refresh in flight finishes and is saved), and the D-Bus
//! side is rebuilt on a new connection ([`connect_bus`]) with backoff. After [`RECONNECT_ATTEMPTS`] failed
//! attempts the daemon saves every session and exits with an error, for systemd to restart it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use token_model::plan::Policy;
use tokio::signal::unix::{SignalKind, signal};
use zbus::Connection;

use crate::config::{self, Bus, Config, RefreshConfig, TokenSpec as ConfigTokenSpec};
use crate::dbus::callers::Credentials;
use crate::dbus::{BUS_NAME, Service};
use crate::engine::{
    Cloud, Engine, EngineConfig, Event, SessionSettings, StateStore, Tally, TokenSource, TokenSpec, Unattended,
};
use crate::seal::{self, StateKey};
use crate::{maintenance, secret_files, state};

/// The planner's policy from `[refresh]`.
pub fn policy(refresh: &RefreshConfig) -> Policy {
    Policy {
        safety_margin: refresh.safety_margin,
        backoff_initial: refresh.retry_initial,
        backoff_max: refresh.retry_max,
        refresh_token_lifetime: refresh.refresh_token_lifetime,
        lapse_warnings: refresh.warn_before.clone(),
        ..Policy::default()
    }
}

/// The cloud client from `[api]`.
pub fn cloud(api: &config::ApiConfig) -> anyhow::Result<Cloud> {
    let mut login = login_flow::ApiConfig::new(&api.url).context("[api] url in the config")?;
    login.client_id = api.client_id.clone();
    login.connect_timeout = api.connect_timeout;
    login.request_timeout = api.request_timeout;
    login.mfa = api.mfa.clone();
    let client = login_flow::LoginClient::new(login).context("could not set up the HTTPS client for [api]")?;
    Ok(Cloud::new(client))
}

/// The cloud instance and client sessions are made with: `[api] url` exactly as requests are sent to it, and
/// `[api] client_id`.
pub fn origin(api: &config::ApiConfig) -> anyhow::Result<state::Origin> {
    let login = login_flow::ApiConfig::new(&api.url).context("[api] url in the config")?;
    Ok(state::Origin::new(login.base_url().as_str(), api.client_id.clone()))
}

/// Where the state key came from, for the start message and `--rekey`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `[daemon] state_key_file`.
    File(std::path::PathBuf),
    /// The systemd credential `state-key`.
    Credential(std::path::PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(path) => write!(f, "[daemon] state_key_file {}", path.display()),
            KeySource::Credential(path) => {
                write!(f, "the systemd credential {} ({})", seal::CREDENTIAL_NAME, path.display())
            }
        }
    }
}

/// The state key that seals session files: `[daemon] state_key_file` when set, else the credential `state-key` in
/// `credentials_dir` (`$CREDENTIALS_DIRECTORY`) when there is one, else none (sessions are stored unsealed).
/// A key that is named but unusable is an error, never a silent fallback to clear files.
pub fn state_key_in(
    daemon: &config::DaemonConfig,
    credentials_dir: Option<&std::path::Path>,
) -> Result<Option<(Arc<StateKey>, KeySource)>, String> {
    if let Some(file) = &daemon.state_key_file {
        let key = StateKey::read(file, true).map_err(|e| format!("[daemon] state_key_file: {e}"))?;
        return Ok(Some((Arc::new(key), KeySource::File(file.clone()))));
    }
    let Some(file) = credentials_dir.map(|dir| dir.join(seal::CREDENTIAL_NAME)).filter(|file| file.exists()) else {
        return Ok(None);
    };
    let key = StateKey::read(&file, false).map_err(|e| {
        format!(
            "the {} credential: {e}; make a new one with systemd-creds encrypt (README, \"Sealed sessions\")",
            seal::CREDENTIAL_NAME
        )
    })?;
    Ok(Some((Arc::new(key), KeySource::Credential(file))))
}

/// [`state_key_in`] with this process's `$CREDENTIALS_DIRECTORY`.
pub fn state_key(daemon: &config::DaemonConfig) -> Result<Option<(Arc<StateKey>, KeySource)>, String> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from);
    state_key_in(daemon, dir.as_deref())
}

/// `att-tokend --rekey`: seals every session file in `[daemon] state_dir` again under the key in `new_key_file`.
/// The files' current key is `old_key_file`, else the configured one ([`state_key`]); clear files are sealed too.
/// It takes the state directory's lock, so it refuses to run beside the daemon. Returns a summary for the operator.
pub fn rekey(
    config: &Config,
    new_key_file: &std::path::Path,
    old_key_file: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    let new = StateKey::read(new_key_file, true).context("--rekey: the new key")?;
    let old = match old_key_file {
        Some(file) => Some(Arc::new(StateKey::read(file, true).context("--old-key-file")?)),
        None => state_key(&config.daemon).map_err(anyhow::Error::msg)?.map(|(key, _)| key),
    };
    let dir = state::StateDir::open(&config.daemon.state_dir)?;
    let report = dir.rekey(old.as_deref(), &new)?;
    let summary = format!(
        "{}: {} session files sealed again with the new key {}, {} clear ones sealed, {} already sealed with it",
        dir.path().display(),
        report.resealed.len(),
        new.id(),
        report.sealed.len(),
        report.already.len()
    );
    if !report.failed.is_empty() {
        anyhow::bail!(
            "{summary}; {} left as they were:\n  {}\nrun --rekey again with the right --old-key-file; files already \
             sealed with the new key are skipped",
            report.failed.len(),
            report.failed.join("\n  ")
        );
    }
    Ok(format!(
        "{summary}. Now install the new key where the daemon reads it (README, \"Sealed sessions\"), then start it"
    ))
}

/// [`check_clock`] at start, before the objects are served, on a short-lived connection to `bus` (the daemon's own
/// connection comes next, and waits on the bus the same way).
pub async fn check_clock_at_start(clock: &crate::clock::ClockPolicy, bus: &Bus) {
    if !clock.trust_kernel_time_sync {
        tracing::info!("[daemon] trust_kernel_time_sync = false: the wall clock is never taken as confirmed");
        return;
    }
    match builder(bus).build().await {
        Ok(connection) => check_clock(clock, Some(&connection)).await,
        Err(e) => record_clock(clock, Err(format!("could not connect to the {bus} bus: {e}"))),
    }
}

/// Asks the system whether the wall clock is synchronised ([`crate::clock::ask_timedated`], bounded by
/// [`BUS_CALL_TIMEOUT`]) on `connection`, records the answer in `clock` and logs it. Without a
/// connection (the bus is lost) the last answer stands: timedated lives on that bus. Nothing is asked under
/// `[daemon] trust_kernel_time_sync = false`.
pub async fn check_clock(clock: &crate::clock::ClockPolicy, connection: Option<&Connection>) {
    if !clock.trust_kernel_time_sync {
        return;
    }
    let Some(connection) = connection else {
        tracing::debug!("the bus is lost: the wall clock stays as timedated last said");
        return;
    };
    record_clock(clock, crate::clock::ask_timedated(connection).await);
}

/// Records timedated's answer (or why there is none) in `clock`, and logs what it means.
fn record_clock(clock: &crate::clock::ClockPolicy, answer: Result<bool, String>) {
    let synchronised = answer.as_ref().is_ok_and(|yes| *yes);
    let was = clock.confirmed();
    clock.set_synchronised(synchronised);
    let said = match answer {
        Ok(true) if was => return,
        Ok(true) => "the wall clock is confirmed: timedated reports it synchronised".to_owned(),
        Ok(false) => "the wall clock is not confirmed: timedated reports it not synchronised (timedatectl: System \
                      clock synchronized: no), so a saved access token is refreshed before it is served; enable an \
                      NTP client (timedatectl set-ntp true)"
            .to_owned(),
        Err(e) => format!(
            "the wall clock is not confirmed: {e}; a saved access token is refreshed before it is served \
             (systemd-timedated answers on the system bus where systemd runs)"
        ),
    };
    tracing::info!("{said}");
}

/// What the daemon says at start when no state key is configured.
pub const UNSEALED_WARNING: &str = "no state key is configured, so user sessions are stored unsealed: the refresh \
     token is on disk in clear in the state directory. Give the service the state-key credential (the package creates \
     /etc/credstore.encrypted/att-tokend.state-key) or set [daemon] state_key_file (README, \"Sealed sessions\")";

/// What the engine is given: principals resolved to ids, secrets read from their files.
pub fn engine_config(config: &Config) -> anyhow::Result<EngineConfig> {
    let access = config::resolve_principals(config)?;
    let mut tokens = Vec::new();
    for token in &config.tokens {
        let readers = access.readers.get(&token.name).cloned().unwrap_or_default();
        let source = match &token.spec {
            ConfigTokenSpec::User(user) => {
                let unattended = match (&user.username, &user.password_file) {
                    (Some(username), Some(password_file)) => Some(Unattended {
                        username: username.clone(),
                        password: secret_files::read_password(password_file)?,
                        totp_seed: user.totp_secret_file.as_deref().map(secret_files::read_totp_seed).transpose()?,
                    }),
                    _ => None,
                };
                TokenSource::User(unattended)
            }
            ConfigTokenSpec::Device { device_id, secret } => {
                let path = secret.resolve().map_err(anyhow::Error::msg)?;
                TokenSource::Device { device: device_id.clone(), token: secret_files::read_static_token(&path)? }
            }
            ConfigTokenSpec::Ground { ground_id, secret, devices } => {
                let path = secret.resolve().map_err(anyhow::Error::msg)?;
                TokenSource::Ground {
                    ground: ground_id.clone(),
                    devices: devices.clone(),
                    token: secret_files::read_static_token(&path)?,
                }
            }
        };
        tokens.push(TokenSpec { name: token.name.clone(), readers, source, files: token.files.clone() });
    }
    Ok(EngineConfig { admins: access.admins, tokens })
}

/// How long any method call the daemon makes on the bus may wait for its answer (the bus's own, and timedated's,
/// which the bus may have to start first): a bus or service that never answers holds up nothing for longer.
pub const BUS_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection builder for the configured bus, its method calls bounded by [`BUS_CALL_TIMEOUT`].
fn builder(bus: &Bus) -> zbus::connection::Builder<'_> {
    let builder = match bus {
        Bus::System => zbus::connection::Builder::system(),
        Bus::Session => zbus::connection::Builder::session(),
        Bus::Address(address) => zbus::connection::Builder::address(address.as_str()),
    };
    builder.method_timeout(BUS_CALL_TIMEOUT)
}

/// Connects to the configured bus with every object served (without requesting a name).
pub async fn serve(bus: &Bus, engine: Engine, credentials: Arc<Credentials>) -> anyhow::Result<Service> {
    Service::serve(builder(bus), engine, credentials).await.with_context(|| {
        format!(
            "could not connect to the {bus} D-Bus bus; check that the bus is running and [daemon] bus in the config"
        )
    })
}

/// Serves every object on a new connection to `bus`, subscribes to what [`Credentials::watch_bus`] needs, then
/// requests the name: the D-Bus side of the daemon, built at start and again after the bus was lost. The engine
/// (and with it every session) is not part of it.
///
/// The future is boxed: the daemon awaits it from two places (start and reconnection), and one shared state
/// machine keeps the stripped binary about 40 KiB smaller than two inlined copies (measured).
pub fn connect_bus<'a>(
    bus: &'a Bus,
    engine: &'a Engine,
    credentials: &'a Arc<Credentials>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Connection>> + 'a>> {
    Box::pin(connect_bus_once(bus, engine, credentials))
}

async fn connect_bus_once(bus: &Bus, engine: &Engine, credentials: &Arc<Credentials>) -> anyhow::Result<Connection> {
    let service = serve(bus, engine.clone(), credentials.clone()).await?;
    let connection = service.connection().clone();
    let forget_leavers = credentials.clone().watch_bus(&connection).await.context(
        "could not subscribe to NameOwnerChanged on the bus, needed to forget callers that leave; check the bus policy",
    )?;
    if let Some(task) = forget_leavers {
        tokio::spawn(task);
    }
    own_name(&connection).await.with_context(|| {
        format!(
            "could not own the bus name {BUS_NAME} on the {bus} bus: another att-tokend may be running, or the bus policy \
             (/usr/share/dbus-1/system.d/{BUS_NAME}.conf) does not allow this user to own it"
        )
    })?;
    Ok(connection)
}

/// How often the daemon tries to reconnect to a bus it lost before it stops (sessions saved) for systemd to restart
/// it: about two minutes of attempts, the delays doubling from 1 s to at most [`RECONNECT_MAX_DELAY`].
pub const RECONNECT_ATTEMPTS: u32 = 10;
/// The longest wait between two attempts to reconnect to the bus.
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(30);

/// The bus to reconnect to: the configured one, without the `guid=` of an address. A guid names one run of a
/// bus; a bus restarted on the same socket has a new one, and is still the bus the config means.
pub fn reconnect_bus(bus: &Bus) -> Bus {
    match bus {
        Bus::Address(address) => Bus::Address(
            address
                .split(';')
                .map(|transport| match transport.split_once(':') {
                    Some((kind, keys)) => {
                        let keys: Vec<&str> = keys.split(',').filter(|key| !key.starts_with("guid=")).collect();
                        format!("{kind}:{}", keys.join(","))
                    }
                    None => transport.to_owned(),
                })
                .collect::<Vec<_>>()
                .join(";"),
        ),
        other => other.clone(),
    }
}

/// Resolves when `connection` closes; never when there is none.
async fn closed(connection: Option<&Connection>) {
    match connection {
        Some(connection) => connection.closed().await,
        None => std::future::pending().await,
    }
}

/// Requests the bus name exclusively: no queueing, not taking it from a running daemon, and not letting
/// another one take it away.
pub async fn own_name(connection: &Connection) -> zbus::Result<()> {
    connection.request_name_with_flags(BUS_NAME, zbus::fdo::RequestNameFlags::DO_NOT_QUEUE).await.and_then(|reply| {
        match reply {
            zbus::fdo::RequestNameReply::PrimaryOwner | zbus::fdo::RequestNameReply::AlreadyOwner => Ok(()),
            _ => Err(zbus::Error::NameTaken),
        }
    })
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("could not notify the service manager: {e}");
    }
}

fn status_line(engine: &Engine, bus: &Bus) -> String {
    status_line_of(&Tally::new(engine), engine, bus)
}

/// The status line from a tally kept from events (which reads no token).
fn status_line_of(tally: &Tally, engine: &Engine, bus: &Bus) -> String {
    let (tokens, attention) = (tally.tokens(), tally.needing_attention());
    let unsealed = match engine.session_storage() {
        "unsealed" => "; sessions unsealed (no state key)",
        _ => "",
    };
    match attention {
        0 => format!("serving {tokens} tokens on the {bus} bus{unsealed}"),
        n => format!("serving {tokens} tokens on the {bus} bus; {n} need attention (att-token list){unsealed}"),
    }
}

/// How far ahead the daily lapse review looks: the earliest `[refresh] warn_before` lead.
fn lapse_horizon(config: &Config) -> Duration {
    config.refresh.warn_before.iter().max().copied().unwrap_or(Duration::from_secs(7 * 86_400))
}

/// Runs the daemon until `SIGTERM`/`SIGINT`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut config = config;
    for advice in config.advice() {
        tracing::warn!("{advice}");
    }
    // First the lock: nothing below may read a session or reach the cloud while another daemon owns the state.
    let dir = state::StateDir::open(&config.daemon.state_dir)?;
    let key = state_key(&config.daemon).map_err(anyhow::Error::msg)?;
    match &key {
        Some((key, source)) => {
            tracing::info!(key = %key.id(), "user sessions are sealed with the state key from {source}")
        }
        None => tracing::warn!("{UNSEALED_WARNING}"),
    }
    let dir = dir.with_key(key.map(|(key, _)| key));
    let engine_config = engine_config(&config)?;
    let cloud = cloud(&config.api)?;
    let store = Arc::new(StateStore::new(dir.clone(), origin(&config.api)?));
    // Whether the wall clock is confirmed decides whether restored access tokens are served at once.
    let clock = crate::clock::ClockPolicy::new(config.daemon.trust_kernel_time_sync);
    check_clock_at_start(&clock, &config.daemon.bus).await;
    let settings = SessionSettings {
        cloud: Some(cloud.clone()),
        store: Some(store),
        policy: policy(&config.refresh),
        clock: clock.clone(),
    };
    let engine = Engine::start(engine_config, settings);
    // Token files follow the engine's events from here on, off the serving path.
    crate::token_files::spawn(engine.clone(), dir);

    let credentials = Arc::new(Credentials::bus());
    let bus = config.daemon.bus.clone();
    // The D-Bus side: `None` while the bus is lost, then rebuilt; the engine and its sessions live on meanwhile.
    let mut connection = Some(connect_bus(&bus, &engine, &credentials).await?);
    let mut reconnect_at = tokio::time::Instant::now();
    let mut reconnect_attempts = 0_u32;
    let mut lost_bus: Option<anyhow::Error> = None;
    tracing::info!(bus = %config.daemon.bus, tokens = engine.names().len(), "att-tokend is ready");
    let status = status_line(&engine, &config.daemon.bus);
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status)]);

    let mut scheduler = maintenance::start(&engine, Some(&cloud), &config.maintenance, lapse_horizon(&config)).await?;
    // What start-up parsed, read and restored is freed by now: its pages go back rather than stay resident.
    crate::memory::give_back_free_pages();
    {
        // Learn the grounds' devices now rather than at the first scheduled sync.
        let (engine, cloud) = (engine.clone(), cloud.clone());
        tokio::spawn(async move { maintenance::sync_grounds(&engine, &cloud).await });
    }

    let mut terminate = signal(SignalKind::terminate()).context("could not watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("could not watch SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("could not watch SIGHUP")?;
    let watchdog_every = sd_notify::watchdog_enabled().map(|d| d / 2);
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut status_events = engine.subscribe();
    // Kept from the events: one token's status read per event, every token's only after a reload.
    let mut tally = Tally::new(&engine);
    // Work that may take long runs beside the loop, which only starts it and takes its result, so that signals and
    // the watchdog are never held up: a reconnection (a bus may accept a connection and never answer) and a
    // reload's preparation (files, users and groups from NSS, which may sit behind LDAP, and timedated).
    let reconnect_to = reconnect_bus(&bus);
    let mut reconnecting: Option<
        std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Connection>> + '_>>,
    > = None;
    let mut reloading: Option<std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Prepared>>>>> = None;
    let mut reload_again = false;

    loop {
        tokio::select! {
            _ = terminate.recv() => {
                tracing::info!("SIGTERM: saving sessions and stopping");
                break;
            }
            _ = interrupt.recv() => {
                tracing::info!("SIGINT: saving sessions and stopping");
                break;
            }
            _ = hangup.recv() => {
                if reloading.is_some() {
                    reload_again = true;
                    tracing::info!("SIGHUP while a reload is under way: reloading again once it is done");
                } else {
                    reloading = Some(start_reload(&config, &clock, connection.as_ref()));
                }
            }
            prepared = finished(&mut reloading), if reloading.is_some() => {
                reloading = None;
                match prepared {
                    Ok(prepared) => {
                        let new = prepared.config;
                        apply_reload(&config, &new, prepared.engine, &engine);
                        if new.maintenance != config.maintenance || lapse_horizon(&new) != lapse_horizon(&config) {
                            if let Some(mut old) = scheduler.take() {
                                let _ = old.shutdown().await;
                            }
                            scheduler = maintenance::start(&engine, Some(&cloud), &new.maintenance, lapse_horizon(&new)).await.unwrap_or_else(|e| {
                                tracing::error!("{e:#}");
                                None
                            });
                        }
                        config = new;
                        tracing::info!(tokens = engine.names().len(), "configuration and token files reloaded");
                    }
                    Err(e) => tracing::error!("reload failed, keeping the running configuration: {e:#}"),
                }
                let status = status_line(&engine, &config.daemon.bus);
                notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status)]);
                // The old config and what the reload read are freed: their pages go back.
                crate::memory::give_back_free_pages();
                if std::mem::take(&mut reload_again) {
                    reloading = Some(start_reload(&config, &clock, connection.as_ref()));
                }
            }
            _ = watchdog.tick(), if watchdog_every.is_some() => {
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
            event = status_events.recv() => {
                tally.follow(&engine, &event);
                if matches!(event, Ok(Event::AttentionNeeded { .. } | Event::TokenChanged { .. })) {
                    let status = status_line_of(&tally, &engine, &config.daemon.bus);
                    notify(&[sd_notify::NotifyState::Status(&status)]);
                }
            }
            () = closed(connection.as_ref()) => {
                // A refresh in flight goes on in its session task and is saved; only the D-Bus side is rebuilt.
                connection = None;
                credentials.forget_all();
                reconnect_attempts = 0;
                reconnect_at = tokio::time::Instant::now() + Duration::from_secs(1);
                tracing::warn!(bus = %bus, "lost the connection to the D-Bus bus (the bus stopped or closed the connection); the sessions keep running, reconnecting");
                notify(&[sd_notify::NotifyState::Status("the D-Bus bus was lost; reconnecting")]);
            }
            () = tokio::time::sleep_until(reconnect_at), if connection.is_none() && reconnecting.is_none() => {
                reconnect_attempts += 1;
                // Bounded, and polled beside the loop: a bus that accepts and never answers holds up nothing else.
                let (to, engine, credentials) = (&reconnect_to, &engine, &credentials);
                reconnecting = Some(Box::pin(async move {
                    tokio::time::timeout(RECONNECT_MAX_DELAY, connect_bus(to, engine, credentials))
                        .await
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the bus did not answer within {} s", RECONNECT_MAX_DELAY.as_secs())))
                }));
            }
            attempt = finished(&mut reconnecting), if reconnecting.is_some() => {
                reconnecting = None;
                match attempt {
                    Ok(new) => {
                        connection = Some(new);
                        tracing::info!(bus = %bus, attempts = reconnect_attempts, "reconnected to the D-Bus bus; serving every token again");
                        let status = status_line(&engine, &config.daemon.bus);
                        notify(&[sd_notify::NotifyState::Status(&status)]);
                    }
                    Err(e) if reconnect_attempts >= RECONNECT_ATTEMPTS => {
                        lost_bus = Some(e.context(format!(
                            "lost the connection to the {bus} bus and could not reconnect in {RECONNECT_ATTEMPTS} attempts; \
                             the sessions are saved and systemd restarts the daemon (Restart=on-failure); otherwise start \
                             it again once the bus runs"
                        )));
                        break;
                    }
                    Err(e) => {
                        let delay = Duration::from_secs(1 << reconnect_attempts.min(5)).min(RECONNECT_MAX_DELAY);
                        tracing::warn!(bus = %bus, "could not reconnect to the D-Bus bus, trying again in {} s: {e:#}", delay.as_secs());
                        reconnect_at = tokio::time::Instant::now() + delay;
                    }
                }
            }
        }
    }
    drop(reconnecting);
    notify(&[sd_notify::NotifyState::Stopping, sd_notify::NotifyState::Status("stopping: saving sessions")]);
    if let Some(mut scheduler) = scheduler {
        let _ = scheduler.shutdown().await;
    }
    engine.shutdown().await;
    if let Some(connection) = connection {
        let _ = connection.release_name(BUS_NAME).await;
    }
    match lost_bus {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What a reload prepared off the runtime thread: the new config, and the engine's view of it (users and groups
/// resolved, secret files read).
struct Prepared {
    config: Config,
    engine: EngineConfig,
}

/// Resolves with `job`'s output once it is done; never while there is none.
async fn finished<F: std::future::Future + Unpin>(job: &mut Option<F>) -> F::Output {
    match job {
        Some(job) => job.await,
        None => std::future::pending().await,
    }
}

/// Starts a reload (`RELOADING=1` first), for the loop to poll beside everything else: asks timedated again, and
/// re-reads the config file, the secret files and the users and groups on the blocking pool ([`prepare_reload`]).
fn start_reload(
    current: &Config,
    clock: &crate::clock::ClockPolicy,
    connection: Option<&Connection>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Prepared>>>> {
    let monotonic = sd_notify::NotifyState::monotonic_usec_now().unwrap_or(sd_notify::NotifyState::Custom(""));
    notify(&[sd_notify::NotifyState::Reloading, monotonic]);
    let (path, clock, connection) = (current.path.clone(), clock.clone(), connection.cloned());
    Box::pin(async move {
        check_clock(&clock, connection.as_ref()).await;
        tokio::task::spawn_blocking(move || prepare_reload(&path))
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the reload stopped: {e}")))
    })
}

/// Re-reads the config file and the token files and resolves its users and groups (blocking I/O, NSS).
fn prepare_reload(path: &std::path::Path) -> anyhow::Result<Prepared> {
    let config = config::load(path)?;
    config.check_files()?;
    let engine = engine_config(&config)?;
    Ok(Prepared { config, engine })
}

/// Applies a prepared reload, refresh timings included. Settings that need a restart (bus, state directory, API)
/// are reported.
fn apply_reload(current: &Config, new: &Config, engine_config: EngineConfig, engine: &Engine) {
    for advice in new.advice() {
        tracing::warn!("{advice}");
    }
    if new.daemon.bus != current.daemon.bus
        || new.daemon.state_dir != current.daemon.state_dir
        || new.daemon.state_key_file != current.daemon.state_key_file
        || new.api != current.api
    {
        tracing::warn!(
            "[daemon] bus, [daemon] state_dir, [daemon] state_key_file and [api] changes take effect after a restart: \
             systemctl restart att-tokend"
        );
    }
    engine.apply(engine_config);
    if new.refresh != current.refresh {
        engine.set_policy(policy(&new.refresh));
        tracing::info!("[refresh] timings applied; a new refresh_token_lifetime counts from each session's next grant");
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn origin_of(url: &str) -> state::Origin {
        let config = config::parse(&format!("[api]\nurl = \"{url}\"\nclient_id = \"mobile\"\n"), Path::new("t.toml"))
            .expect("a valid config");
        origin(&config.api).expect("a valid url")
    }

    #[test]
    fn a_reconnection_goes_to_the_same_socket_whatever_run_of_the_bus_listens_there() {
        let address = |text: &str| Bus::Address(text.to_owned());
        assert_eq!(
            reconnect_bus(&address("unix:path=/tmp/x/bus.sock,guid=bb982770e93a1c6d0fd938f96b0c58c0")),
            address("unix:path=/tmp/x/bus.sock")
        );
        assert_eq!(
            reconnect_bus(&address("unix:guid=ab,path=/a;tcp:host=localhost,port=1,guid=cd")),
            address("unix:path=/a;tcp:host=localhost,port=1")
        );
        assert_eq!(
            reconnect_bus(&address("unix:path=/run/dbus/system_bus_socket")),
            address("unix:path=/run/dbus/system_bus_socket")
        );
        assert_eq!(reconnect_bus(&Bus::System), Bus::System);
    }

    #[test]
    fn the_origin_is_the_url_as_requests_are_sent_so_spellings_of_one_instance_match() {
        let plain = origin_of("https://api.allthingstalk.io");
        assert_eq!(plain.api_url, "https://api.allthingstalk.io");
        assert_eq!(plain.client_id.as_str(), "mobile");
        assert_eq!(origin_of("https://API.AllThingsTalk.io:443/"), plain);
        assert_ne!(origin_of("https://also.allthingstalk.io"), plain);
    }
}
