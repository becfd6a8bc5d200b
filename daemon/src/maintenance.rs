//! Periodic maintenance, run by `tokio-cron-scheduler` on configurable cron schedules:
//! - **token health** (`[maintenance] token_health`): checks every device and ground token against the cloud
//!   (a rejected one becomes `revoked` with `AttentionNeeded`) and every user access token (a rejected one is
//!   refreshed at once, or the session flagged);
//! - **ground sync** (`ground_sync`): re-reads the device list of every ground token without a configured
//!   `devices` list, for `GetTokenForDevice`;
//! - **lapse review** (`lapse_review`): a daily reminder for sessions that need a login or whose refresh
//!   token lapses soon.
//!
//! Refresh deadlines never ride on this scheduler: they are the session tasks' own timers. A probe hands the engine
//! the value (and ground) it probed, so a verdict never lands on a token that a reload replaced meanwhile.

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use token_model::scope::Scope;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::config::{MaintenanceConfig, Schedule};
use crate::engine::{Cloud, Engine, Event, State, TokenValue, unix_seconds};

/// Checks every token against the cloud once. Transient failures are logged and skipped.
pub async fn check_token_health(engine: &Engine, cloud: &Cloud) {
    for (name, scope, token, devices_configured) in engine.static_tokens() {
        let TokenValue::Static(token) = token else { continue };
        let result = match &scope {
            Scope::Device(device) => cloud.check_device(&token, device).await,
            Scope::Ground { ground, .. } => match cloud.ground_devices(&token, ground).await {
                Ok(Ok(devices)) => {
                    if !devices_configured {
                        engine.set_ground_devices(&name, ground, devices);
                    }
                    Ok(None)
                }
                Ok(Err(why)) => Ok(Some(why)),
                Err(failure) => Err(failure),
            },
            _ => continue,
        };
        // A reload may have replaced the token (or its ground) while it was probed: the engine applies the
        // verdict only to the value that was probed.
        match result {
            Ok(None) => engine.set_static_health(&name, &token, Ok(())),
            Ok(Some(why)) => engine.set_static_health(&name, &token, Err(why)),
            Err(failure) => {
                tracing::info!(token = %name, "health check skipped, the cloud is not reachable: {}", failure.why())
            }
        }
    }
    for (_, session) in engine.user_sessions() {
        session.probe().await;
    }
}

/// Re-reads the device list of every ground token that has no configured `devices`.
pub async fn sync_grounds(engine: &Engine, cloud: &Cloud) {
    for (name, scope, token, devices_configured) in engine.static_tokens() {
        let (TokenValue::Static(token), Scope::Ground { ground, .. }, false) = (token, &scope, devices_configured)
        else {
            continue;
        };
        match cloud.ground_devices(&token, ground).await {
            Ok(Ok(devices)) => {
                tracing::debug!(token = %name, devices = devices.len(), "ground devices synchronised");
                engine.set_ground_devices(&name, ground, devices);
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
    let horizon = unix_seconds(SystemTime::now() + within);
    for name in engine.names() {
        let Some((kind, status)) = engine.status(&name) else { continue };
        if kind != token_model::ids::TokenKind::User {
            continue;
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
            engine.emit(Event::AttentionNeeded { name, reason });
        }
    }
}

/// Starts the scheduler with the jobs whose schedule is not `off`; `None` when every job is off (then nothing
/// ticks at all).
pub async fn start(
    engine: &Engine,
    cloud: Option<&Cloud>,
    config: &MaintenanceConfig,
    lapse_horizon: Duration,
) -> anyhow::Result<Option<JobScheduler>> {
    let mut jobs = Vec::new();
    if let (Schedule::Cron(cron), Some(cloud)) = (&config.token_health, cloud) {
        let (engine, cloud) = (engine.clone(), cloud.clone());
        jobs.push((
            "token_health",
            cron.clone(),
            Job::new_async(cron.as_str(), move |_, _| {
                let (engine, cloud) = (engine.clone(), cloud.clone());
                Box::pin(async move { check_token_health(&engine, &cloud).await })
            }),
        ));
    }
    if let (Schedule::Cron(cron), Some(cloud)) = (&config.ground_sync, cloud) {
        let (engine, cloud) = (engine.clone(), cloud.clone());
        jobs.push((
            "ground_sync",
            cron.clone(),
            Job::new_async(cron.as_str(), move |_, _| {
                let (engine, cloud) = (engine.clone(), cloud.clone());
                Box::pin(async move { sync_grounds(&engine, &cloud).await })
            }),
        ));
    }
    if let Schedule::Cron(cron) = &config.lapse_review {
        let engine = engine.clone();
        jobs.push((
            "lapse_review",
            cron.clone(),
            Job::new_async(cron.as_str(), move |_, _| {
                let engine = engine.clone();
                Box::pin(async move { review_lapses(&engine, lapse_horizon) })
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
