//! `att-token proxy NAME --listen ADDRESS`: the token-proxy crate's server, with tokens from att-tokend asked for
//! as the user running the proxy, the cache dropped on every `TokenChanged` for NAME, and HTTPS set up as the
//! daemon sets it up (login-flow's TLS client configuration).

use std::sync::Arc;
use std::time::Duration;

use att_token::cli::ProxyArgs;
use futures_util::StreamExt as _;
use token_agent::{Bus, Exit, TokenAgentProxy};
use token_proxy::{Fetched, Limits, Listen, Proxy, SourceError, TokenCache, TokenSource, Upstream};
use zeroize::Zeroizing;

use crate::{call_failed, fail};

/// How long the watcher waits before it reconnects to a bus that went away.
const RECONNECT_EVERY: Duration = Duration::from_secs(3);

/// att-tokend as a [`TokenSource`]: `GetToken(NAME)` on a connection made again when the bus went away.
struct Daemon {
    bus: Bus,
    name: String,
    agent: tokio::sync::Mutex<Option<TokenAgentProxy<'static>>>,
}

impl Daemon {
    async fn agent(&self) -> Result<TokenAgentProxy<'static>, SourceError> {
        let mut slot = self.agent.lock().await;
        if let Some(agent) = slot.as_ref() {
            return Ok(agent.clone());
        }
        let unreachable = |error: zbus::Error| {
            SourceError::Unreachable(format!(
                "att-tokend cannot be reached on the {} bus ({error}); is it running? (systemctl status att-tokend)",
                self.bus
            ))
        };
        let connection = token_agent::connect(&self.bus).await.map_err(unreachable)?;
        let agent = TokenAgentProxy::new(&connection).await.map_err(unreachable)?;
        *slot = Some(agent.clone());
        Ok(agent)
    }
}

#[async_trait::async_trait]
impl TokenSource for Daemon {
    async fn fetch(&self) -> Result<Fetched, SourceError> {
        let agent = self.agent().await?;
        match agent.get_token(&self.name).await {
            Ok((token, expires_at)) => Ok(Fetched { token: Zeroizing::new(token), expires_at }),
            Err(error) => {
                let message = format!("att-tokend: {}", token_agent::error_message(&error));
                Err(match Exit::for_zbus_error(&error) {
                    Exit::AccessDenied => SourceError::Denied(message),
                    Exit::NoDaemon => {
                        // Connect again on the next request.
                        *self.agent.lock().await = None;
                        SourceError::Unreachable(format!(
                            "{message}; is att-tokend running? (systemctl status att-tokend)"
                        ))
                    }
                    _ => SourceError::NotServed(message),
                })
            }
        }
    }
}

/// Drops the cached token on every `TokenChanged` for `name`, and after the bus came back.
async fn watch_changes(bus: Bus, name: String, cache: Arc<TokenCache>) {
    let mut first = true;
    loop {
        // The agent is kept for as long as the stream: it holds the connection.
        if let Ok((_agent, mut changes)) = crate::exec::connect_and_subscribe(&bus, &name).await {
            if !first {
                eprintln!("att-token proxy: connected to the bus again");
            }
            // Whatever happened while no one listened.
            cache.invalidate();
            while changes.next().await.is_some() {
                cache.invalidate();
            }
            eprintln!(
                "att-token proxy: the connection to the bus was closed; requests get 502 until att-tokend is \
                 back; reconnecting every {} s",
                RECONNECT_EVERY.as_secs()
            );
            cache.invalidate();
        }
        first = false;
        tokio::time::sleep(RECONNECT_EVERY).await;
    }
}

/// Completes on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Runs the proxy until SIGTERM or SIGINT.
pub(crate) async fn run(bus: &Bus, connection: zbus::Connection, args: ProxyArgs) -> anyhow::Result<u8> {
    let listen: Listen = args.listen.parse().map_err(|error| fail(Exit::Usage, format!("--listen {error}")))?;
    let agent = TokenAgentProxy::new(&connection).await.map_err(call_failed)?;
    let api_url = agent.api_url().await.map_err(|error| {
        fail(
            Exit::NoDaemon,
            format!(
                "cannot read att-tokend's API URL ({}); is att-tokend running, and as new as att-token?",
                token_agent::error_message(&error)
            ),
        )
    })?;
    let upstream = Upstream::parse(&api_url).map_err(|error| fail(Exit::Other, error.to_string()))?;
    // A token that does not exist is a mistake in the command; anything else may pass (a login, a reload).
    match agent.get_token(&args.name).await {
        Ok(_) => {}
        Err(error) if Exit::for_zbus_error(&error) == Exit::UnknownToken => return Err(call_failed(error)),
        Err(error) => eprintln!(
            "att-token proxy: warning: no token now ({}); requests get an error until there is one",
            token_agent::error_message(&error)
        ),
    }
    let source =
        Arc::new(Daemon { bus: bus.clone(), name: args.name.clone(), agent: tokio::sync::Mutex::new(Some(agent)) });
    let cache = Arc::new(TokenCache::new(source));
    let limits = Limits {
        max_in_flight: usize::try_from(args.max_in_flight).unwrap_or(64),
        upstream_timeout: Duration::from_secs(args.timeout),
        ..Limits::default()
    };
    // A unix socket is created with mode 600 (then set to --socket-mode): no moment where others may connect.
    if matches!(listen, Listen::Unix(_)) {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    }
    let tls = login_flow::tls::client_config().map_err(|error| fail(Exit::Other, error.to_string()))?;
    let proxy = Proxy::bind(&listen, upstream, cache.clone(), limits, args.socket_mode, tls)
        .await
        .map_err(|error| fail(Exit::Other, error.to_string()))?;
    tokio::spawn(watch_changes(bus.clone(), args.name.clone(), cache));
    println!("listening on {}", proxy.local());
    eprintln!("att-token proxy: forwarding to {api_url} with the token {}", args.name);
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    proxy
        .on_request(|line| eprintln!("att-token proxy: {line}"))
        .on_notice(|line| eprintln!("att-token proxy: {line}"))
        .run(stop_signal())
        .await
        .map_err(|error| fail(Exit::Other, error.to_string()))?;
    Ok(0)
}
