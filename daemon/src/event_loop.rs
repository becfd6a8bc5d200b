//! The daemon's life: start from a prepared configuration, serve D-Bus, then one visible event loop for signals,
//! the watchdog, reloads and the bus link, until the stop.
//!
//! Order at start: the configuration prepared on the blocking pool (`crate::prepare`: secret files, the state key,
//! users and groups) → the state directory's lock (a second daemon on the same state stops here, before it reads a
//! session or calls the cloud) → engine (sessions restored from the state directory) → objects served on the bus
//! → bus name requested (`crate::bus_link`) → `READY=1`. `SIGHUP` re-reads the config and the token files;
//! `SIGTERM` and `SIGINT` save every session and exit cleanly.
//!
//! The loop itself never waits on anything slow: a reconnection attempt and a reload's preparation (the config and
//! secret files, users and groups from NSS, timedated) run beside it and it takes their results, so `WATCHDOG=1`
//! goes out every half watchdog interval whatever the bus or NSS do. Each arm of the loop is one named method.
//!
//! Losing the bus is not losing a session: when the connection closes, the engine and its session tasks go on (a
//! refresh in flight finishes and is saved), and the D-Bus side is rebuilt on a new connection with backoff. After
//! `bus_link::RECONNECT_ATTEMPTS` failed attempts the daemon saves every session and exits with an error, for
//! systemd to restart it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use token_model::fleet::Spread;
use tokio::signal::unix::{SignalKind, signal};
use tokio_cron_scheduler::JobScheduler;
use zbus::Connection;

use crate::bus_link::{self, Link, LinkEvent};
use crate::clock::{self, ClockPolicy};
use crate::config::{self, Bus, Config};
use crate::dbus::callers::Callers;
use crate::engine::{Cloud, Engine, Event, SessionSettings, StateStore, Tally};
use crate::prepare::{self, Prepared};
use crate::{maintenance, memory, state_dir, token_files};

/// What the daemon says at start when no state key is configured.
pub const UNSEALED_WARNING: &str = "no state key is configured, so user sessions are stored unsealed: the refresh \
     token is on disk in clear in the state directory. Give the service the state-key credential (the package creates \
     /etc/credstore.encrypted/att-tokend.state-key) or set [daemon] state_key_file (README, \"Sealed sessions\")";

/// Runs the daemon until `SIGTERM`/`SIGINT`, or until the bus is lost for good.
pub async fn run(config: Config, tls: login_flow::tls::Background) -> anyhow::Result<()> {
    Daemon::start(config, tls).await?.serve().await
}

/// A reload's preparation under way, polled beside the loop.
type Reloading = Pin<Box<dyn Future<Output = anyhow::Result<Prepared>>>>;

/// The running daemon: what the loop's arms act on.
struct Daemon {
    config: Config,
    engine: Engine,
    cloud: Cloud,
    clock: ClockPolicy,
    link: Link,
    scheduler: Option<JobScheduler>,
    reloading: Option<Reloading>,
    reload_again: bool,
    /// Kept from the events: one token's status read per event, every token's only after a reload.
    tally: Tally,
}

impl Daemon {
    /// Everything up to `READY=1`: the preparation (off the runtime thread) while the wall clock is checked, the
    /// lock, the engine, the bus.
    async fn start(config: Config, tls: login_flow::tls::Background) -> anyhow::Result<Self> {
        // Whether the wall clock is confirmed decides whether restored access tokens are served at once. Asking
        // timedated is a round trip on the bus: it goes on while the files are read.
        let clock = ClockPolicy::new(config.daemon.trust_kernel_time_sync);
        let bus = config.daemon.bus.clone();
        let preparation = blocking(move || {
            let prepared = prepare::prepare(config)?;
            let cloud = prepare::cloud(&prepared.config, tls)?;
            Ok((prepared, cloud))
        });
        let ((prepared, cloud), ()) = tokio::try_join!(preparation, async {
            check_clock_at_start(&clock, &bus).await;
            Ok(())
        })?;
        let Prepared { config, advice, engine: engine_config, state_key, origin, machine } = prepared;
        for advice in advice {
            tracing::warn!("{advice}");
        }
        // Then the lock: nothing below may read a session or reach the cloud while another daemon owns the state.
        let state_dir = config.daemon.state_dir.clone();
        let dir = blocking(move || Ok(state_dir::StateDir::open(&state_dir)?)).await?;
        match &state_key {
            Some((key, source)) => {
                tracing::info!(key = %key.id(), "user sessions are sealed with the state key from {source}")
            }
            None => tracing::warn!("{UNSEALED_WARNING}"),
        }
        let dir = dir.with_key(state_key.map(|(key, _)| key));
        let store = Arc::new(StateStore::new(dir.clone(), origin));
        // The first requests are spread after a power-on; a restart of the daemon alone sends them at once.
        let startup_window = token_model::fleet::startup_window(config.fleet.startup_spread, clock::boot_now());
        let settings = SessionSettings {
            cloud: Some(cloud.clone()),
            store: Some(store),
            policy: prepare::policy(&config.refresh),
            clock: clock.clone(),
            startup: Spread::new(machine, startup_window),
        };
        let engine = Engine::start(engine_config, settings);
        // Saved sessions are read on the blocking pool; they are taken up before anything is served.
        engine.restored().await;
        // Token files follow the engine's events from here on, off the serving path.
        token_files::spawn(engine.clone(), dir);

        // The D-Bus side, rebuilt when the bus is lost; the engine and its sessions live on meanwhile.
        let link = Link::connect(config.daemon.bus.clone(), engine.clone(), Arc::new(Callers::bus())).await?;
        tracing::info!(bus = %config.daemon.bus, tokens = engine.names().len(), "att-tokend is ready");
        let status = status_line(&engine, &config.daemon.bus);
        notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status)]);

        let spread = Spread::new(machine, config.fleet.maintenance_spread);
        let scheduler =
            maintenance::start(&engine, Some(&cloud), &config.maintenance, lapse_horizon(&config), spread).await?;
        // What start-up parsed, read and restored is freed by now: its pages go back rather than stay resident.
        memory::give_back_free_pages();
        {
            // Learn the grounds' devices now rather than at the first scheduled sync: each at its offset in the
            // start-up spread, like the sessions' first requests.
            let spread = Spread::new(machine, startup_window);
            let task = maintenance::Task::GroundSync { job: token_model::fleet::STARTUP_JOB };
            tokio::spawn(maintenance::run(task, engine.clone(), Some(cloud.clone()), spread));
        }
        let tally = Tally::new(&engine);
        Ok(Self { config, engine, cloud, clock, link, scheduler, reloading: None, reload_again: false, tally })
    }

    /// The one event loop, then the stop. Work that may take long runs beside the loop, which only starts it and
    /// takes its result, so that signals and the watchdog are never held up: a reconnection (a bus may accept a
    /// connection and never answer) and a reload's preparation (files, users and groups from NSS, which may sit
    /// behind LDAP, and timedated).
    async fn serve(mut self) -> anyhow::Result<()> {
        let mut terminate = signal(SignalKind::terminate()).context("could not watch SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("could not watch SIGINT")?;
        let mut hangup = signal(SignalKind::hangup()).context("could not watch SIGHUP")?;
        let watchdog_every = sd_notify::watchdog_enabled().map(|d| d / 2);
        let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut status_events = self.engine.subscribe();

        let stopped = loop {
            tokio::select! {
                _ = terminate.recv() => {
                    tracing::info!("SIGTERM: saving sessions and stopping");
                    break Ok(());
                }
                _ = interrupt.recv() => {
                    tracing::info!("SIGINT: saving sessions and stopping");
                    break Ok(());
                }
                _ = hangup.recv() => self.hangup(),
                prepared = finished(&mut self.reloading), if self.reloading.is_some() => self.reloaded(prepared).await,
                _ = watchdog.tick(), if watchdog_every.is_some() => notify(&[sd_notify::NotifyState::Watchdog]),
                event = status_events.recv() => {
                    self.tally.follow(&self.engine, &event);
                    if matches!(event, Ok(Event::AttentionNeeded { .. } | Event::TokenChanged { .. })) {
                        self.tell_status();
                    }
                }
                event = self.link.event() => {
                    if let Err(gave_up) = self.link_event(event) {
                        break Err(gave_up);
                    }
                }
            }
        };
        self.stop().await;
        stopped
    }

    /// `SIGHUP`: starts a reload, or asks for another once the one under way is done.
    fn hangup(&mut self) {
        if self.reloading.is_some() {
            self.reload_again = true;
            tracing::info!("SIGHUP while a reload is under way: reloading again once it is done");
        } else {
            self.reloading = Some(start_reload(&self.config, &self.clock, self.link.connection()));
        }
    }

    /// A reload's preparation is done: applies it (or says why not), tells the service manager, and starts the
    /// reload asked for meanwhile.
    async fn reloaded(&mut self, prepared: anyhow::Result<Prepared>) {
        self.reloading = None;
        match prepared {
            Ok(prepared) => self.apply_reload(prepared).await,
            Err(e) => tracing::error!("reload failed, keeping the running configuration: {e:#}"),
        }
        let status = status_line(&self.engine, &self.config.daemon.bus);
        notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status)]);
        // The old config and what the reload read are freed: their pages go back.
        memory::give_back_free_pages();
        if std::mem::take(&mut self.reload_again) {
            self.reloading = Some(start_reload(&self.config, &self.clock, self.link.connection()));
        }
    }

    /// Applies a prepared reload, refresh timings and schedules included. Settings that need a restart (bus, state
    /// directory, state key, API) are reported.
    async fn apply_reload(&mut self, prepared: Prepared) {
        let (current, new) = (&self.config, &prepared.config);
        for advice in &prepared.advice {
            tracing::warn!("{advice}");
        }
        if new.daemon.bus != current.daemon.bus
            || new.daemon.state_dir != current.daemon.state_dir
            || new.daemon.state_key_file != current.daemon.state_key_file
            || new.api != current.api
            || new.fleet.startup_spread != current.fleet.startup_spread
            || (new.fleet.request_burst, new.fleet.requests_per_minute)
                != (current.fleet.request_burst, current.fleet.requests_per_minute)
        {
            tracing::warn!(
                "[daemon] bus, [daemon] state_dir, [daemon] state_key_file and [api] changes take effect after a \
                 restart (so do startup_spread, request_burst, requests_per_minute): systemctl restart att-tokend"
            );
        }
        self.engine.apply(prepared.engine);
        if new.refresh != current.refresh {
            self.engine.set_policy(prepare::policy(&new.refresh));
            tracing::info!(
                "[refresh] timings applied; a new refresh_token_lifetime counts from each session's next grant"
            );
        }
        if new.maintenance != current.maintenance
            || lapse_horizon(new) != lapse_horizon(current)
            || new.fleet.maintenance_spread != current.fleet.maintenance_spread
        {
            if let Some(mut old) = self.scheduler.take() {
                let _ = old.shutdown().await;
            }
            let horizon = lapse_horizon(new);
            let spread = Spread::new(prepared.machine, new.fleet.maintenance_spread);
            self.scheduler = maintenance::start(&self.engine, Some(&self.cloud), &new.maintenance, horizon, spread)
                .await
                .unwrap_or_else(|e| {
                    tracing::error!("{e:#}");
                    None
                });
        }
        self.config = prepared.config;
        tracing::info!(tokens = self.engine.names().len(), "configuration and token files reloaded");
    }

    /// The bus link changed: lost, due for another attempt, or an attempt ended. `Err` when the daemon gives up.
    fn link_event(&mut self, event: LinkEvent) -> anyhow::Result<()> {
        match event {
            LinkEvent::Closed => {
                self.link.lost();
                notify(&[sd_notify::NotifyState::Status("the D-Bus bus was lost; reconnecting")]);
            }
            LinkEvent::RetryDue => self.link.retry(),
            LinkEvent::Attempted(outcome) => {
                if self.link.attempted(outcome)? {
                    self.tell_status();
                }
            }
        }
        Ok(())
    }

    /// Tells the service manager what is served now.
    fn tell_status(&self) {
        let status = status_line_of(&self.tally, &self.engine, &self.config.daemon.bus);
        notify(&[sd_notify::NotifyState::Status(&status)]);
    }

    /// The stop: every session saved, then the name given back.
    async fn stop(mut self) {
        self.link.stop_reconnecting();
        notify(&[sd_notify::NotifyState::Stopping, sd_notify::NotifyState::Status("stopping: saving sessions")]);
        if let Some(mut scheduler) = self.scheduler.take() {
            let _ = scheduler.shutdown().await;
        }
        self.engine.shutdown().await;
        self.link.release().await;
    }
}

/// Runs `job` on the blocking pool: files, NSS and the CA roots are read there, never on the runtime thread.
async fn blocking<T: Send + 'static>(job: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(job).await.unwrap_or_else(|e| Err(anyhow::anyhow!("the preparation stopped: {e}")))
}

/// Asks timedated about the wall clock at start, before the objects are served, on a short-lived connection to
/// `bus` (the daemon's own connection comes next, and waits on the bus the same way).
async fn check_clock_at_start(clock: &ClockPolicy, bus: &Bus) {
    if !clock.trust_kernel_time_sync {
        tracing::info!("[daemon] trust_kernel_time_sync = false: the wall clock is never taken as confirmed");
        return;
    }
    match bus_link::builder(bus).build().await {
        Ok(connection) => clock::check_clock(clock, Some(&connection)).await,
        Err(e) => clock::record_clock(clock, Err(format!("could not connect to the {bus} bus: {e}"))),
    }
}

/// Starts a reload (`RELOADING=1` first), for the loop to poll beside everything else: asks timedated again, and
/// re-reads the config file, the secret files and the users and groups on the blocking pool (`crate::prepare`).
fn start_reload(current: &Config, clock: &ClockPolicy, connection: Option<&Connection>) -> Reloading {
    let monotonic = sd_notify::NotifyState::monotonic_usec_now().unwrap_or(sd_notify::NotifyState::Custom(""));
    notify(&[sd_notify::NotifyState::Reloading, monotonic]);
    let (path, clock, connection) = (current.path.clone(), clock.clone(), connection.cloned());
    Box::pin(async move {
        clock::check_clock(&clock, connection.as_ref()).await;
        tokio::task::spawn_blocking(move || prepare::prepare(config::load(&path)?))
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the reload stopped: {e}")))
    })
}

/// Resolves with `job`'s output once it is done; never while there is none.
async fn finished<F: Future + Unpin>(job: &mut Option<F>) -> F::Output {
    match job {
        Some(job) => job.await,
        None => std::future::pending().await,
    }
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("could not notify the service manager: {e}");
    }
}

/// The status line from every token's status (at start and after a reload).
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
