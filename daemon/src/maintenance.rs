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
//! (`[daemon] maintenance_spread`, derived from the machine id, the token's name and the job's: see
//! [`token_model::fleet`]), so a fleet reaches the cloud across the window rather than in one burst. A lapse
//! review sends nothing but is spread alike. The requests also keep within the daemon's request budget.
//!
//! Refresh deadlines never ride on this scheduler: they are the session tasks' own timers. A probe hands the engine
//! the value (and ground) it probed, so a verdict never lands on a token that a reload replaced meanwhile.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use token_model::fleet::Spread;
use token_model::ids::{GroundId, TokenName};
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

/// One of the periodic jobs, for [`run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Check every device, ground and user token against the cloud.
    TokenHealth,
    /// Re-read the device list of every ground token without configured `devices`; `job` is the name the offsets
    /// derive from (the ground sync's, or [`token_model::fleet::STARTUP_JOB`] for the one at start).
    GroundSync {
        /// The job's name in the offsets.
        job: &'static str,
    },
    /// Remind about sessions that need a login or lapse within `within`.
    LapseReview {
        /// How far ahead a lapse is reminded of.
        within: Duration,
    },
}

impl Task {
    fn job(self) -> &'static str {
        match self {
            Task::TokenHealth => TOKEN_HEALTH,
            Task::GroundSync { job } => job,
            Task::LapseReview { .. } => LAPSE_REVIEW,
        }
    }
}

/// What a job does for one token.
enum Work {
    Static { scope: Scope, token: Arc<StaticToken>, devices_configured: bool },
    User(SessionHandle),
    Ground { ground: GroundId, token: Arc<StaticToken> },
    Review(Duration),
}

/// Runs `task` once: each token's work at its offset in `spread` after now, in the order of those offsets, so that
/// the request of a token waits its own offset whatever the others' requests take. Transient failures are logged
/// and skipped. Without a `cloud`, only the lapse review does anything.
pub async fn run(task: Task, engine: Engine, cloud: Option<Cloud>, spread: Spread) {
    let mut items: Vec<(TokenName, Work)> = Vec::new();
    match task {
        Task::TokenHealth => {
            for (name, scope, token, devices_configured) in engine.static_tokens() {
                if let (TokenValue::Static(token), Scope::Device(_) | Scope::Ground { .. }) = (token, &scope) {
                    items.push((name, Work::Static { scope, token, devices_configured }));
                }
            }
            items.extend(engine.user_sessions().into_iter().map(|(name, session)| (name, Work::User(session))));
        }
        Task::GroundSync { .. } => {
            for (name, scope, token, devices_configured) in engine.static_tokens() {
                if let (TokenValue::Static(token), Scope::Ground { ground, .. }, false) =
                    (token, scope, devices_configured)
                {
                    items.push((name, Work::Ground { ground, token }));
                }
            }
        }
        Task::LapseReview { within } => {
            items.extend(engine.names().into_iter().map(|name| (name, Work::Review(within))))
        }
    }
    let fired = crate::clock::boot_now();
    let ats: Vec<MonoTime> = items.iter().map(|(name, _)| fired + spread.offset(name.as_str(), task.job())).collect();
    let mut items: Vec<Option<(TokenName, Work)>> = items.into_iter().map(Some).collect();
    for i in order(&ats) {
        let Some((name, work)) = items[i].take() else { continue };
        if ats[i] > crate::clock::boot_now() {
            crate::clock::sleep_until(ats[i]).await;
        }
        match (work, &cloud) {
            (Work::Static { scope, token, devices_configured }, Some(cloud)) => {
                probe_static(&engine, cloud, &name, &scope, &token, devices_configured).await
            }
            (Work::User(session), _) => session.probe().await,
            (Work::Ground { ground, token }, Some(cloud)) => sync_ground(&engine, cloud, &name, &ground, &token).await,
            (Work::Review(within), _) => review_lapse(&engine, &name, within),
            (_, None) => {}
        }
    }
}

/// The indices of `ats`, earliest first (ties in their order). By selection: a handful of tokens.
fn order(ats: &[MonoTime]) -> Vec<usize> {
    let mut done = vec![false; ats.len()];
    let mut order = Vec::with_capacity(ats.len());
    while let Some(next) = (0..ats.len()).filter(|&i| !done[i]).min_by_key(|&i| ats[i]) {
        done[next] = true;
        order.push(next);
    }
    order
}

/// Checks every token against the cloud once, now. Transient failures are logged and skipped.
pub async fn check_token_health(engine: &Engine, cloud: &Cloud) {
    run(Task::TokenHealth, engine.clone(), Some(cloud.clone()), Spread::off()).await;
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
    run(Task::GroundSync { job: GROUND_SYNC }, engine.clone(), Some(cloud.clone()), Spread::off()).await;
}

/// Re-reads the device list of one ground.
async fn sync_ground(engine: &Engine, cloud: &Cloud, name: &TokenName, ground: &GroundId, token: &StaticToken) {
    match cloud.ground_devices(token, ground).await {
        Ok(Ok(devices)) => {
            tracing::debug!(token = %name, devices = devices.len(), "ground devices synchronised");
            engine.set_ground_devices(name, ground, devices);
            engine.set_static_health(name, token, Ok(()));
        }
        Ok(Err(why)) => engine.set_static_health(name, token, Err(why)),
        Err(failure) => {
            tracing::info!(token = %name, "ground sync skipped, the cloud is not reachable: {}", failure.why())
        }
    }
}

/// Reminds about sessions that need a login or lapse within `within`.
pub fn review_lapses(engine: &Engine, within: Duration) {
    for name in engine.names() {
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
                Box::pin(run(Task::TokenHealth, engine.clone(), Some(cloud.clone()), spread))
            }),
        ));
    }
    if let (Schedule::Cron(cron), Some(cloud)) = (&config.ground_sync, cloud) {
        let (engine, cloud) = (engine.clone(), cloud.clone());
        jobs.push((
            GROUND_SYNC,
            cron.clone(),
            Job::new_async(cron.as_str(), move |_, _| {
                Box::pin(run(Task::GroundSync { job: GROUND_SYNC }, engine.clone(), Some(cloud.clone()), spread))
            }),
        ));
    }
    if let Schedule::Cron(cron) = &config.lapse_review {
        let engine = engine.clone();
        jobs.push((
            LAPSE_REVIEW,
            cron.clone(),
            Job::new_async(cron.as_str(), move |_, _| {
                Box::pin(run(Task::LapseReview { within: lapse_horizon }, engine.clone(), None, spread))
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
