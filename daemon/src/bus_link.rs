//! The daemon's link to the bus: connect with every object served, subscribe to what the caller cache needs, own
//! the name; and, when the bus is lost, reconnect with backoff. The engine (and with it every session) is not
//! part of it: losing the bus is not losing a session.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;
use zbus::Connection;

use crate::config::Bus;
use crate::dbus::callers::Callers;
use crate::dbus::{BUS_NAME, Service};
use crate::engine::Engine;

/// How long any method call the daemon makes on the bus may wait for its answer (the bus's own, and timedated's,
/// which the bus may have to start first): a bus or service that never answers holds up nothing for longer.
pub const BUS_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the daemon tries to reconnect to a bus it lost before it stops (sessions saved) for systemd to restart
/// it: about two minutes of attempts, the delays doubling from 1 s to at most [`RECONNECT_MAX_DELAY`].
pub const RECONNECT_ATTEMPTS: u32 = 10;
/// The longest wait between two attempts to reconnect to the bus.
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(30);

/// A connection builder for the configured bus, its method calls bounded by [`BUS_CALL_TIMEOUT`].
pub fn builder(bus: &Bus) -> zbus::connection::Builder<'_> {
    let builder = match bus {
        Bus::System => zbus::connection::Builder::system(),
        Bus::Session => zbus::connection::Builder::session(),
        Bus::Address(address) => zbus::connection::Builder::address(address.as_str()),
    };
    builder.method_timeout(BUS_CALL_TIMEOUT)
}

/// Connects to the configured bus with every object served (without requesting a name).
pub async fn serve(bus: &Bus, engine: Engine, callers: Arc<Callers>) -> anyhow::Result<Service> {
    Service::serve(builder(bus), engine, callers).await.with_context(|| {
        format!(
            "could not connect to the {bus} D-Bus bus; check that the bus is running and [daemon] bus in the config"
        )
    })
}

/// A connection being made, boxed: see [`connect_bus`].
type Connecting<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Connection>> + 'a>>;

/// Serves every object on a new connection to `bus`, subscribes to what [`Callers::watch_bus`] needs, then
/// requests the name: the D-Bus side of the daemon, built at start and again after the bus was lost. The engine
/// (and with it every session) is not part of it.
///
/// The future is boxed: the daemon awaits it from two places (start and reconnection), and one shared state
/// machine keeps the stripped binary about 40 KiB smaller than two inlined copies (measured).
pub fn connect_bus<'a>(bus: &'a Bus, engine: &'a Engine, callers: &'a Arc<Callers>) -> Connecting<'a> {
    Box::pin(connect_bus_once(bus, engine, callers))
}

async fn connect_bus_once(bus: &Bus, engine: &Engine, callers: &Arc<Callers>) -> anyhow::Result<Connection> {
    let service = serve(bus, engine.clone(), callers.clone()).await?;
    let connection = service.connection().clone();
    let forget_leavers = callers.clone().watch_bus(&connection).await.context(
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

/// What happened on the link, for the event loop to hand to [`Link::lost`], [`Link::retry`] or
/// [`Link::attempted`].
pub enum LinkEvent {
    /// The connection closed: the bus stopped, or it dropped the daemon.
    Closed,
    /// The next attempt to reconnect is due.
    RetryDue,
    /// An attempt to reconnect ended.
    Attempted(anyhow::Result<Connection>),
}

/// The daemon's link to the bus, kept across losses: the connection while there is one, else the next attempt
/// to reconnect. The event loop waits on [`Link::event`] beside its other work and hands each event back; nothing
/// here blocks the loop (an attempt runs beside it, bounded).
pub struct Link {
    bus: Bus,
    reconnect_to: Bus,
    engine: Engine,
    callers: Arc<Callers>,
    connection: Option<Connection>,
    reconnecting: Option<Connecting<'static>>,
    retry_at: Instant,
    attempts: u32,
}

impl Link {
    /// Connects to `bus` with every object served and the name owned.
    pub async fn connect(bus: Bus, engine: Engine, callers: Arc<Callers>) -> anyhow::Result<Self> {
        let connection = connect_bus(&bus, &engine, &callers).await?;
        Ok(Self {
            reconnect_to: reconnect_bus(&bus),
            bus,
            engine,
            callers,
            connection: Some(connection),
            reconnecting: None,
            retry_at: Instant::now(),
            attempts: 0,
        })
    }

    /// The connection, `None` while the bus is lost.
    pub fn connection(&self) -> Option<&Connection> {
        self.connection.as_ref()
    }

    /// Waits for what happens next on the link: the connection closes (while connected), the next attempt to
    /// reconnect is due (while lost), or the attempt under way ends. Cancel-safe: an attempt under way is kept.
    pub async fn event(&mut self) -> LinkEvent {
        if let Some(attempt) = &mut self.reconnecting {
            return LinkEvent::Attempted(attempt.await);
        }
        match &self.connection {
            Some(connection) => {
                connection.closed().await;
                LinkEvent::Closed
            }
            None => {
                tokio::time::sleep_until(self.retry_at).await;
                LinkEvent::RetryDue
            }
        }
    }

    /// The bus is lost: forget the callers known on it and try again in a second. A refresh in flight goes on in
    /// its session task and is saved; only the D-Bus side is rebuilt.
    pub fn lost(&mut self) {
        self.connection = None;
        self.callers.forget_all();
        self.attempts = 0;
        self.retry_at = Instant::now() + Duration::from_secs(1);
        tracing::warn!(
            bus = %self.bus,
            "lost the connection to the D-Bus bus (the bus stopped or closed the connection); the sessions keep running, reconnecting"
        );
    }

    /// Starts an attempt to reconnect, bounded by [`RECONNECT_MAX_DELAY`] and polled beside the loop by
    /// [`Link::event`]: a bus that accepts and never answers holds up nothing else.
    pub fn retry(&mut self) {
        self.attempts += 1;
        let (to, engine, callers) = (self.reconnect_to.clone(), self.engine.clone(), self.callers.clone());
        self.reconnecting = Some(Box::pin(async move {
            tokio::time::timeout(RECONNECT_MAX_DELAY, connect_bus(&to, &engine, &callers)).await.unwrap_or_else(|_| {
                Err(anyhow::anyhow!("the bus did not answer within {} s", RECONNECT_MAX_DELAY.as_secs()))
            })
        }));
    }

    /// Takes an attempt's outcome: `Ok(true)` reconnected, `Ok(false)` failed and the next attempt is set, `Err`
    /// when the last allowed attempt failed (the daemon then stops, sessions saved, for systemd to restart it).
    pub fn attempted(&mut self, outcome: anyhow::Result<Connection>) -> anyhow::Result<bool> {
        self.reconnecting = None;
        match outcome {
            Ok(connection) => {
                self.connection = Some(connection);
                tracing::info!(bus = %self.bus, attempts = self.attempts, "reconnected to the D-Bus bus; serving every token again");
                Ok(true)
            }
            Err(e) if self.attempts >= RECONNECT_ATTEMPTS => Err(e.context(format!(
                "lost the connection to the {} bus and could not reconnect in {RECONNECT_ATTEMPTS} attempts; the \
                 sessions are saved and systemd restarts the daemon (Restart=on-failure); otherwise start it again \
                 once the bus runs",
                self.bus
            ))),
            Err(e) => {
                let delay = Duration::from_secs(1 << self.attempts.min(5)).min(RECONNECT_MAX_DELAY);
                tracing::warn!(bus = %self.bus, "could not reconnect to the D-Bus bus, trying again in {} s: {e:#}", delay.as_secs());
                self.retry_at = Instant::now() + delay;
                Ok(false)
            }
        }
    }

    /// Stops an attempt under way, for the stop.
    pub fn stop_reconnecting(&mut self) {
        self.reconnecting = None;
    }

    /// Gives the name back, once the sessions are saved.
    pub async fn release(self) {
        if let Some(connection) = self.connection {
            let _ = connection.release_name(BUS_NAME).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
