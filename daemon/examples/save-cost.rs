//! Save cost: times saving one user session through the daemon's write path (`StateDir::save`: encode, seal when
//! a key is set, temp file, fsync, rename, fsync of the directory), sealed and clear, and prints the figures as one
//! JSON object. Run by `cargo xtask bench`.
//!
//! Usage: `save-cost DIRECTORY SAVES`. The saves alternate between a sealed and a clear state directory created
//! under DIRECTORY, so both see the same disk and load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use att_tokend::seal::StateKey;
use att_tokend::state_dir::StateDir;
use att_tokend::state_file::{Origin, SessionRecord};
use token_model::ids::{ClientId, TokenName};
use token_model::plan::{self, Grant, Policy, RefreshTokenChange};
use token_model::secret::{AccessToken, RefreshToken};
use token_model::time::{ClockPair, MonoTime, WallTime};

/// Saves of each kind made (and thrown away) before measuring.
const WARMUP: usize = 10;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, saves] = args.as_slice() else {
        bail!("usage: save-cost DIRECTORY SAVES (for example: save-cost /var/tmp 200)");
    };
    let saves: usize = saves.parse().context("SAVES must be a positive whole number")?;
    let base = tempfile::Builder::new()
        .prefix("att-save-cost-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a directory in {dir}; pass a writable directory"))?;
    let key = StateKey::from_bytes(&[7; att_tokend::seal::KEY_LEN]).expect("32 bytes");
    let sealed = StateDir::open(&base.path().join("sealed"))?.with_key(Some(Arc::new(key)));
    let clear = StateDir::open(&base.path().join("clear"))?;
    let record = record();

    for _ in 0..WARMUP {
        sealed.save(&record)?;
        clear.save(&record)?;
    }
    let mut sealed_times = Vec::with_capacity(saves);
    let mut clear_times = Vec::with_capacity(saves);
    for _ in 0..saves {
        let start = Instant::now();
        sealed.save(&record)?;
        sealed_times.push(start.elapsed());
        let start = Instant::now();
        clear.save(&record)?;
        clear_times.push(start.elapsed());
    }
    let (sealed_p50, sealed_p99) = percentiles(&mut sealed_times);
    let (clear_p50, clear_p99) = percentiles(&mut clear_times);
    println!(
        "{{\"saves\":{saves},\"sealed\":{{\"p50_us\":{sealed_p50:.1},\"p99_us\":{sealed_p99:.1}}},\
         \"clear\":{{\"p50_us\":{clear_p50:.1},\"p99_us\":{clear_p99:.1}}}}}"
    );
    Ok(())
}

/// A session as after a login: a JWT-sized access token that lives an hour, a refresh token, and the planner's
/// facts as it hands them out for saving.
fn record() -> SessionRecord {
    let pair = ClockPair::new(MonoTime::ORIGIN, WallTime::from_unix_seconds(1_700_000_000));
    let grant = Grant::new(pair, Duration::from_secs(3600), RefreshTokenChange::Rotated);
    let session = plan::Session::logged_in(&grant, &Policy::default(), false, 0.5).to_persisted(pair);
    SessionRecord::new(
        TokenName::new("main").expect("a valid name"),
        &Origin::new("https://api.allthingstalk.io", ClientId::default()),
        "bench@example.com".into(),
        RefreshToken::new("r".repeat(64)),
        AccessToken::new(format!("eyJ{}", "a".repeat(900))),
        session,
    )
}

/// p50 and p99 in microseconds.
fn percentiles(times: &mut [Duration]) -> (f64, f64) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}
