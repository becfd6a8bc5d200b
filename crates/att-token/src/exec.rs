//! `att-token exec NAME -- PROGRAM ARGS…`: runs PROGRAM with the token in its environment, forwards signals,
//! follows `TokenChanged` for NAME, and exits with PROGRAM's status.

use std::os::unix::process::ExitStatusExt as _;
use std::time::Duration;

use att_token::cli::{ExecArgs, OnChange};
use futures_util::StreamExt as _;
use nix::sys::signal::Signal;
use token_agent::{Bus, Exit, TokenAgentProxy};
use tokio::signal::unix::{SignalKind, signal};
use zeroize::Zeroizing;

use crate::{call_failed, fail};

/// The signals att-token passes on to PROGRAM.
const FORWARDED: [Signal; 6] =
    [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2];

/// How often att-token tries to reach the bus again after it went away.
const RECONNECT_EVERY: Duration = Duration::from_secs(3);

async fn fetch(agent: &TokenAgentProxy<'_>, args: &ExecArgs) -> zbus::Result<Zeroizing<String>> {
    let (token, _expires_at) = match args.min_valid {
        Some(seconds) => agent.get_token_valid_for(&args.name, seconds).await?,
        None => agent.get_token(&args.name).await?,
    };
    Ok(Zeroizing::new(token))
}

/// A running PROGRAM: a pidfd of it, and its exit status once a thread of its own has reaped it. (A thread rather
/// than tokio's process support, whose driver would then be part of every runtime the package builds, the
/// daemon's included.) Signals go through the pidfd, opened before anything can reap PROGRAM: once it is reaped
/// they fail with ESRCH, where a raw pid could by then name another process.
struct Child {
    pidfd: std::os::fd::OwnedFd,
    exited: tokio::sync::oneshot::Receiver<std::io::Result<std::process::ExitStatus>>,
}

fn spawn(args: &ExecArgs, token: &Zeroizing<String>) -> anyhow::Result<Child> {
    let program = &args.command[0];
    let mut command = std::process::Command::new(program);
    command.args(&args.command[1..]).env(&args.env, token.as_str());
    let mut child = command.spawn().map_err(|error| {
        let (exit, what) = match error.kind() {
            std::io::ErrorKind::NotFound => (127, "not found"),
            std::io::ErrorKind::PermissionDenied => (126, "not executable"),
            _ => (126, "cannot be started"),
        };
        anyhow::Error::new(ChildFailure {
            code: exit,
            message: format!("{} {what} ({error})", program.to_string_lossy()),
        })
    })?;
    // Before the thread below can reap it: a pidfd names this process and no other, ever.
    let pidfd = match rustix::process::pidfd_open(
        rustix::process::Pid::from_child(&child),
        rustix::process::PidfdFlags::empty(),
    ) {
        Ok(pidfd) => pidfd,
        Err(error) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(
                Exit::Other,
                format!("cannot watch PROGRAM through a pidfd ({error}); att-token exec needs Linux 5.3 or later"),
            ));
        }
    };
    let (done, exited) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    Ok(Child { pidfd, exited })
}

/// PROGRAM could not be started: exit with `code` (127 or 126, as shells do).
#[derive(Debug)]
pub(crate) struct ChildFailure {
    pub(crate) code: u8,
    message: String,
}

impl std::fmt::Display for ChildFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ChildFailure {}

/// A shell's view of an exit status: the code, or 128+N for a signal N.
fn status_code(status: std::process::ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + (signal & 0x7f)).unwrap_or(255),
        (None, None) => 1,
    }
}

/// Sends `signal` to PROGRAM through its pidfd; nothing happens once it has exited.
fn send(child: &Child, signal: Signal) {
    if let Some(signal) = rustix::process::Signal::from_named_raw(signal as i32) {
        let _ = rustix::process::pidfd_send_signal(&child.pidfd, signal);
    }
}

pub(crate) type Changes = zbus::proxy::SignalStream<'static>;

/// Subscribes to `TokenChanged` for `name` alone.
async fn subscribe(agent: &TokenAgentProxy<'static>, name: &str) -> zbus::Result<Changes> {
    Ok(agent.receive_token_changed_with_args(&[(0, name)]).await?.into_inner())
}

/// Connects to the bus (again): a new agent and its subscription to `TokenChanged` for `name`. Shared with
/// `proxy`, which watches the same signal.
pub(crate) async fn connect_and_subscribe(bus: &Bus, name: &str) -> zbus::Result<(TokenAgentProxy<'static>, Changes)> {
    let connection = token_agent::connect(bus).await?;
    let agent = TokenAgentProxy::new(&connection).await?;
    let changes = subscribe(&agent, name).await?;
    Ok((agent, changes))
}

/// Runs `exec`; returns PROGRAM's status.
pub(crate) async fn run(bus: &Bus, agent: TokenAgentProxy<'static>, args: ExecArgs) -> anyhow::Result<u8> {
    let mut agent = agent;
    // Subscribed before the first fetch, so no change between the two is missed.
    let mut changes = Some(subscribe(&agent, &args.name).await.map_err(call_failed)?);
    let mut token = fetch(&agent, &args).await.map_err(call_failed)?;
    let mut signals = Vec::new();
    for forwarded in FORWARDED {
        let stream = signal(SignalKind::from_raw(forwarded as i32))
            .map_err(|error| fail(Exit::Other, format!("cannot handle {forwarded}: {error}")))?;
        signals.push((forwarded, stream));
    }
    let mut child = spawn(&args, &token)?;
    // Set while a restart waits for the old PROGRAM to exit; the deadline is when SIGKILL follows.
    let mut restart_deadline: Option<tokio::time::Instant> = None;
    let mut restarting = false;
    // A stopping signal was forwarded: when PROGRAM exits, so does att-token, restart or not.
    let mut stopping = false;
    let mut reconnect_timer = tokio::time::interval(RECONNECT_EVERY);
    loop {
        let next_signal = futures_util::future::select_all(
            signals.iter_mut().map(|(sig, stream)| Box::pin(async move { stream.recv().await.map(|_| *sig) })),
        );
        let watching = changes.is_some();
        let token_changed = async {
            match changes.as_mut() {
                Some(stream) => stream.next().await.map(|_| ()).ok_or(()),
                None => std::future::pending().await,
            }
        };
        let kill_due = async {
            match restart_deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = &mut child.exited => {
                let status = status
                    .unwrap_or_else(|_| Err(std::io::Error::other("the thread waiting for PROGRAM ended")))
                    .map_err(|error| fail(Exit::Other, format!("cannot wait for PROGRAM: {error}")))?;
                if restarting && !stopping {
                    restarting = false;
                    restart_deadline = None;
                    child = spawn(&args, &token)?;
                    eprintln!("att-token exec: restarted {} with the new token", args.command[0].to_string_lossy());
                    continue;
                }
                return Ok(status_code(status));
            }
            (received, _, _) = next_signal => {
                if let Some(received) = received {
                    send(&child, received);
                    if matches!(received, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT) {
                        stopping = true;
                    }
                }
            }
            () = kill_due => {
                eprintln!(
                    "att-token exec: {} did not exit within {} s of SIGTERM; sending SIGKILL",
                    args.command[0].to_string_lossy(),
                    args.stop_timeout
                );
                send(&child, Signal::SIGKILL);
                restart_deadline = None;
            }
            changed = token_changed => {
                if changed.is_err() {
                    eprintln!(
                        "att-token exec: the connection to the bus was closed; {} keeps running with the token it has, \
                         and att-token reconnects every {} s",
                        args.command[0].to_string_lossy(),
                        RECONNECT_EVERY.as_secs()
                    );
                    changes = None;
                    reconnect_timer.reset();
                    continue;
                }
                apply_change(&agent, &args, &mut token, &child, &mut restarting, &mut restart_deadline).await;
            }
            _ = reconnect_timer.tick(), if !watching => {
                if let Ok((new_agent, stream)) = connect_and_subscribe(bus, &args.name).await {
                    agent = new_agent;
                    changes = Some(stream);
                    eprintln!("att-token exec: connected to the bus again");
                    apply_change(&agent, &args, &mut token, &child, &mut restarting, &mut restart_deadline).await;
                }
            }
        }
    }
}

/// The token may have changed: fetch it, and when it differs apply `--on-change`.
async fn apply_change(
    agent: &TokenAgentProxy<'_>,
    args: &ExecArgs,
    token: &mut Zeroizing<String>,
    child: &Child,
    restarting: &mut bool,
    restart_deadline: &mut Option<tokio::time::Instant>,
) {
    let program = args.command[0].to_string_lossy();
    let new = match fetch(agent, args).await {
        Ok(new) => new,
        Err(error) => {
            eprintln!(
                "att-token exec: the token {} is not served now ({}); {program} keeps running with the token it has",
                args.name,
                token_agent::error_message(&error)
            );
            return;
        }
    };
    if new.as_str() == token.as_str() {
        return;
    }
    *token = new;
    match args.on_change {
        OnChange::Nothing => {}
        OnChange::Signal(signal) => {
            send(child, signal);
            eprintln!("att-token exec: the token {} changed; sent {signal} to {program}", args.name);
        }
        OnChange::Restart => {
            if !*restarting {
                *restarting = true;
                *restart_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(args.stop_timeout));
                send(child, Signal::SIGTERM);
                eprintln!("att-token exec: the token {} changed; restarting {program}", args.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_a_shell_reads_them() {
        assert_eq!(status_code(std::process::ExitStatus::from_raw(0)), 0);
        assert_eq!(status_code(std::process::ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(status_code(std::process::ExitStatus::from_raw(15)), 143, "SIGTERM");
        assert_eq!(status_code(std::process::ExitStatus::from_raw(9)), 137, "SIGKILL");
    }
}
