//! Benchmark client: times `GetToken` against `org.freedesktop.DBus.Peer.Ping` sent to the same service over the
//! same connection, and prints the figures as one JSON object. Run by `cargo xtask bench`.
//!
//! Usage: `bench-client ADDRESS TOKEN_NAME CALLS`

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use token_agent::{BUS_NAME, INTERFACE, OBJECT_PATH};

/// Calls of each kind made (and thrown away) before measuring.
const WARMUP: usize = 200;
/// Calls of one kind in a row; the kinds alternate so both see the same machine load.
const ROUND: usize = 100;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, name, calls] = args.as_slice() else {
        bail!("usage: bench-client ADDRESS TOKEN_NAME CALLS (for example: bench-client unix:path=/tmp/bus main 5000)");
    };
    let calls: usize = calls.parse().context("CALLS must be a positive whole number")?;
    let connection = zbus::connection::Builder::address(address.as_str())
        .build()
        .await
        .with_context(|| format!("could not connect to {address}; pass the address dbus-daemon printed"))?;

    for _ in 0..WARMUP {
        get_token(&connection, name).await?;
        ping(&connection).await?;
    }
    let mut get = Vec::with_capacity(calls);
    let mut pings = Vec::with_capacity(calls);
    let mut get_total = Duration::ZERO;
    let mut ping_total = Duration::ZERO;
    while get.len() < calls {
        let n = ROUND.min(calls - get.len());
        let started = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            get_token(&connection, name).await?;
            get.push(t.elapsed());
        }
        get_total += started.elapsed();
        let started = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            ping(&connection).await?;
            pings.push(t.elapsed());
        }
        ping_total += started.elapsed();
    }
    let report = serde_json::json!({
        "calls": calls,
        "get_token": figures(&mut get, get_total),
        "ping": figures(&mut pings, ping_total),
    });
    println!("{report}");
    Ok(())
}

/// One `GetToken(name)`; the token is dropped unread.
async fn get_token(connection: &zbus::Connection, name: &str) -> anyhow::Result<()> {
    let reply = connection
        .call_method(Some(BUS_NAME), OBJECT_PATH, Some(INTERFACE), "GetToken", &(name,))
        .await
        .with_context(|| format!("GetToken({name:?}) failed; is the token configured and logged in?"))?;
    let _: (String, i64) = reply.body().deserialize().context("GetToken replied with an unexpected signature")?;
    Ok(())
}

/// One `org.freedesktop.DBus.Peer.Ping` to the token service itself.
async fn ping(connection: &zbus::Connection) -> anyhow::Result<()> {
    connection
        .call_method(Some(BUS_NAME), OBJECT_PATH, Some("org.freedesktop.DBus.Peer"), "Ping", &())
        .await
        .context("Ping to the token service failed; is att-tokend running?")?;
    Ok(())
}

/// Calls per second, p50 and p99 in microseconds.
fn figures(samples: &mut [Duration], total: Duration) -> serde_json::Value {
    samples.sort_unstable();
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[index].as_secs_f64() * 1e6
    };
    serde_json::json!({
        "calls_per_sec": samples.len() as f64 / total.as_secs_f64(),
        "p50_us": at(0.50),
        "p99_us": at(0.99),
    })
}
