//! Periodic maintenance, run by `tokio-cron-scheduler` on configurable cron schedules:
//! - **token health** (`[maintenance] token_health`): checks every device and ground token against the cloud
//!   (a rejected one becomes `revoked` with `AttentionNeeded`) and every user access token (a rejected one is
//!   refreshed at once, or the session flagged);
//! - **ground sync** (`ground_sync`): re-reads the device list of every ground token without a configured
//!   `devices` list, for `GetTokenForDevice`;
//! - **lapse review** (`lapse_review`): a daily reminder for sessions that need a login or whose refresh
//!   token lapses soon.
//!
//! The cron lines fire at the same second on every gateway of a fleet; each token's request then waits its offset
//! (`[fleet] maintenance_spread`, derived from the machine id, the token's name and the job's: see
//! [`token_model::fleet`]), so a fleet reaches the cloud across the window rather than in one burst. A lapse
//! review sends nothing but is spread alike. The requests also keep within the daemon's request budget.
//!
//! Refresh deadlines never ride on this scheduler: they are the session tasks' own timers. A probe hands the engine
//! the value (and ground) it probed, so a verdict never lands on a token that a reload replaced meanwhile.

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use token_model::fleet::Spread;
use token_model::ids::TokenName;
use token_model::scope::Scope;
use token_model::secret::StaticToken;
use token_model::time::MonoTime;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::config::{MaintenanceConfig, Schedule};
use crate::engine::{Cloud, Engine, Event, SessionHandle, State, TokenValue, unix_seconds};

/// The job names the offsets derive from (with the machine id and each token's name).
const TOKEN_HEALTH: &str = "token_health";
const GROUND_SYNC: &str = "ground_sync";
const LAPSE_REVIEW: &str = "lapse_review";

/// The items in the order of their tokens' offsets for `job` (see [`Spread`]), each with the moment its turn comes:
/// the request of a token waits its own offset from now, whatever the others' requests take.
fn turns<T>(items: Vec<(TokenName, T)>, spread: &Spread, job: &str) -> Vec<(MonoTime, TokenName, T)> {
    let fired = crate::clock::boot_now();
    let mut items: Vec<_> =
        items.into_iter().map(|(name, item)| (fired + spread.offset(name.as_str(), job), name, item)).collect();
    items.sort_by_key(|(at, _, _)| *at);
    items
}

/// Waits for a turn from [`turns`].
async fn wait_for(at: MonoTime) {
    if at > crate::clock::boot_now() {
        crate::clock::sleep_until(at).await;
    }
}

/// What the health job checks: a device or ground token, or a user session.
enum Probed {
    Static { scope: Scope, token: std::sync::Arc<StaticToken>, devices_configured: bool },
    User(SessionHandle),
}

/// Checks every token against the cloud once, now. Transient failures are logged and skipped.
pub async fn check_token_health(engine: &Engine, cloud: &Cloud) {
    check_token_health_in_turns(engine, cloud, &Spread::off()).await;
}

/// [`check_token_health`], each token's check at its offset in `spread` (`[fleet] maintenance_spread`).
pub async fn check_token_health_in_turns(engine: &Engine, cloud: &Cloud, spread: &Spread) {
    let mut items: Vec<(TokenName, Probed)> = Vec::new();
    for (name, scope, token, devices_configured) in engine.static_tokens() {
        if let (TokenValue::Static(token), Scope::Device(_) | Scope::Ground { .. }) = (token, &scope) {
            items.push((name, Probed::Static { scope, token, devices_configured }));
        }
    }
    items.extend(engine.user_sessions().into_iter().map(|(name, session)| (name, Probed::User(session))));
    for (at, name, item) in turns(items, spread, TOKEN_HEALTH) {
        wait_for(at).await;
        match item {
            Probed::Static { scope, token, devices_configured } => {
                probe_static(engine, cloud, &name, &scope, &token, devices_configured).await
            }
            Probed::User(session) => session.probe().await,
        }
    }
}

/// Checks one device or ground token against the cloud.
async fn probe_static(
    engine: &Engine,
    cloud: &Cloud,
    name: &TokenName,
    scope: &Scope,
    token: &StaticToken,
    devices_configured: bool,
) {
    let result = match scope {
        Scope::Device(device) => cloud.check_device(token, device).await,
        Scope::Ground { ground, .. } => match cloud.ground_devices(token, ground).await {
            Ok(Ok(devices)) => {
                if !devices_configured {
                    engine.set_ground_devices(name, ground, devices);
                }
                Ok(None)
            }
            Ok(Err(why)) => Ok(Some(why)),
            Err(failure) => Err(failure),
        },
        _ => return,
    };
    // A reload may have replaced the token (or its ground) while it was probed: the engine applies the verdict
    // only to the value that was probed.
    match result {
        Ok(None) => engine.set_static_health(name, token, Ok(())),
        Ok(Some(why)) => engine.set_static_health(name, token, Err(why)),
        Err(failure) => {
            tracing::info!(token = %name, "health check skipped, the cloud is not reachable: {}", failure.why())
        }
    }
}

/// Re-reads the device list of every ground token that has no configured `devices`, now.
pub async fn sync_grounds(engine: &Engine, cloud: &Cloud) {
    sync_grounds_in_turns(engine, cloud, &Spread::off(), GROUND_SYNC).await;
}

/// [`sync_grounds`], each ground's request at its offset in `spread` for `job` (the ground sync's, or the start's).
pub async fn sync_grounds_in_turns(engine: &Engine, cloud: &Cloud, spread: &Spread, job: &str) {
    let grounds = engine
        .static_tokens()
        .into_iter()
        .filter_map(|(name, scope, token, devices_configured)| match (token, scope, devices_configured) {
            (TokenValue::Static(token), Scope::Ground { ground, .. }, false) => Some((name, (ground, token))),
            _ => None,
        })
        .collect();
    for (at, name, (ground, token)) in turns(grounds, spread, job) {
        wait_for(at).await;
        match cloud.ground_devices(&token, &ground).await {
            Ok(Ok(devices)) => {
                tracing::debug!(token = %name, devices = devices.len(), "ground devices synchronised");
                engine.set_ground_devices(&name, &ground, devices);
                engine.set_static_health(&name, &token, Ok(()));
            }
            Ok(Err(why)) => engine.set_static_health(&name, &token, Err(why)),
            Err(failure) => {
                tracing::info!(token = %name, "ground sync skipped, the cloud is not reachable: {}", failure.why())
            }
        }
    }
}

/// Reminds about sessions that need a login or lapse within `within`.
pub fn review_lapses(engine: &Engine, within: Duration) {
    for name in engine.names() {
        review_lapse(engine, &name, within);
    }
}

/// [`review_lapses`], each token's review at its offset in `spread`.
async fn review_lapses_in_turns(engine: &Engine, within: Duration, spread: &Spread) {
    let names = engine.names().into_iter().map(|name| (name, ())).collect();
    for (at, name, ()) in turns(names, spread, LAPSE_REVIEW) {
        wait_for(at).await;
        review_lapse(engine, &name, within);
    }
}

/// Reminds about token `name` if its session needs a login or lapses within `within`.
fn review_lapse(engine: &Engine, name: &TokenName, within: Duration) {
    let horizon = unix_seconds(SystemTime::now() + within);
    let Some((kind, status)) = engine.status(name) else { return };
    if kind != token_model::ids::TokenKind::User {
        return;
    }
    let reason = if status.state == State::NeedsLogin {
        Some(format!("token {:?} still needs a login; run `att-token login {}`", name.as_str(), name.as_str()))
    } else if status.refresh_token_expires_at != 0 && status.refresh_token_expires_at <= horizon {
        Some(format!(
            "the session of {:?} lapses at {} and cannot be renewed without a login; run `att-token login {}` \
             before then",
            name.as_str(),
            token_model::time::rfc3339(status.refresh_token_expires_at),
            name.as_str()
        ))
    } else {
        None
    };
    if let Some(reason) = reason {
        tracing::warn!(token = %name, "{reason}");
        engine.emit(Event::AttentionNeeded { name: name.clone(), reason });
    }
}

/// Starts the scheduler with the jobs whose schedule is not `off`; `None` when every job is off (then nothing
/// ticks at all).
pub async fn start(
    engine: &Engine,
    cloud: Option<&Cloud>,
    config: &MaintenanceConfig,
    lapse_horizon: Duration,
    spread: Spread,
) -> anyhow::Result<Option<JobScheduler>> {
    let mut jobs = Vec::new();
    if let (Schedule::Cron(cron), Some(cloud)) = (&config.token_health, cloud) {
        let (engine, cloud) = (engine.clone(), cloud.clone());
        jobs.push((
            TOKEN_HEALTH,
            cron.clone(),
            Job::new_async(cron.as_str(), move |_, _| {
                let (engine, cloud) = (engine.clone(), cloud.clone());
                Box::pin(async move { check_token_health_in_turns(&engine, &cloud, &spread).await })
            }),
        ));
    }
    if let (Schedule::Cron(cron), Some(cloud)) = (&config.ground_sync, cloud) {
        let (engine, cloud) = (engine.clone(), cloud.clone());
        jobs.push((
            GROUND_SYNC,
            cron.clone(),
            Job::new_async(cron.as_str(), move |_, _| {
                let (engine, cloud) = (engine.clone(), cloud.clone());
                Box::pin(async move { sync_grounds_in_turns(&engine, &cloud, &spread, GROUND_SYNC).await })
            }),
        ));
    }
    if let Schedule::Cron(cron) = &config.lapse_review {
        let engine = engine.clone();
        jobs.push((
            LAPSE_REVIEW,
            cron.clone(),
            Job::new_async(cron.as_str(), move |_, _| {
                let engine = engine.clone();
                Box::pin(async move { review_lapses_in_turns(&engine, lapse_horizon, &spread).await })
            }),
        ));
    }
    if jobs.is_empty() {
        return Ok(None);
    }
    let scheduler = JobScheduler::new().await.context("could not create the maintenance scheduler")?;
    for (what, cron, job) in jobs {
        let job = job.with_context(|| {
            format!(
                "the [maintenance] {what} schedule {cron:?} is not a valid cron expression; fix it or set it to \"off\""
            )
        })?;
        scheduler.add(job).await.with_context(|| format!("could not schedule the {what} job"))?;
        tracing::debug!(job = what, cron = %cron, "maintenance job scheduled");
    }
    scheduler.start().await.context("could not start the maintenance scheduler")?;
    Ok(Some(scheduler))
}
