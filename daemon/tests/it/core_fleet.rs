//! Fleet behaviour through the daemon core: the periodic jobs' requests wait their per-machine offsets, a restored
//! session's first refresh waits its start-up offset (a caller cannot hurry it), and requests over the budget are
//! delayed, never lost, as counted at the fake cloud.

use std::path::Path;
use std::time::{Duration, Instant};

use att_tokend::dbus::callers::Callers;
use att_tokend::{maintenance, prepare};
use token_model::fleet::{MachineKey, STARTUP_JOB, Spread};

use crate::core_support::{Harness, config_text, error_name, eventually, fake_cloud, login, step};

/// A machine whose offsets for `tokens` under `job`, in `window`, all fall within `within` (found by trying ids in
/// turn: the hash is fixed, so the same id is found every time).
fn machine_within(tokens: &[&str], job: &str, window: Duration, within: (Duration, Duration)) -> MachineKey {
    (0u32..)
        .map(|n| MachineKey::from_machine_id(format!("{n:032x}\n").as_bytes()))
        .find(|key| {
            tokens.iter().all(|token| {
                let offset = Spread::new(*key, window).offset(token, job);
                offset >= within.0 && offset < within.1
            })
        })
        .expect("an id with offsets in range")
}

/// The harness's config with `fleet` as the fleet behaviour's `[daemon]` lines instead of those without waits.
fn with_fleet(dir: &Path, url: &str, extra_user: &str, fleet: &str) -> String {
    let text = config_text(dir, url, extra_user);
    assert!(text.contains(testbed::FLEET_AT_ONCE), "the harness's [daemon] turns the waits off");
    text.replace(testbed::FLEET_AT_ONCE, fleet)
}

core_test!(a_health_probe_waits_its_machines_offset, a_health_probe_waits_its_machines_offset_body);

/// The health job fires; no probe reaches the cloud before the earliest offset after that, and every probe goes
/// (nothing is skipped).
async fn a_health_probe_waits_its_machines_offset_body() {
    let cloud = fake_cloud(Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let window = Duration::from_secs(3);
    let earliest = Duration::from_millis(1200);
    let key = machine_within(&["sensor-7", "site-a"], "token_health", window, (earliest, Duration::from_millis(2500)));
    let text = config_text(dir.path(), &cloud.url(), "");
    let harness = Harness::start(dir, &text, Callers::peer()).await;
    let api = prepare::cloud(&harness.config, login_flow::tls::in_background()).unwrap();
    cloud.control().reset_counters();

    let fired = Instant::now();
    let job = {
        let (engine, api) = (harness.engine.clone(), api.clone());
        tokio::spawn(async move {
            maintenance::run(maintenance::Task::TokenHealth, engine, Some(api), Spread::new(key, window)).await;
            Instant::now()
        })
    };
    // Before the first offset has passed, nothing reached the cloud: the probes wait.
    tokio::time::sleep_until((fired + earliest - Duration::from_millis(300)).into()).await;
    assert_eq!(cloud.control().counters().requests_total, 0, "a probe went before its offset");
    let done = step("the spread health job", job).await.unwrap();
    assert_eq!(cloud.control().counters().requests_total, 2, "both static tokens were probed");
    assert!(done.duration_since(fired) >= earliest, "the job ended before the first offset");
    assert_eq!(harness.token("sensor-7").await.state().await.unwrap(), "valid");
    harness.stop().await;
}

core_test!(a_restored_sessions_first_refresh_is_spread, a_restored_sessions_first_refresh_is_spread_body);

/// A session restored under a clock that is not confirmed needs a refresh before its token is served: it waits its
/// start-up offset, a caller cannot make it go earlier, and then it goes.
async fn a_restored_sessions_first_refresh_is_spread_body() {
    let cloud = fake_cloud(Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let window = Duration::from_secs(4);
    let earliest = Duration::from_millis(1500);
    let key = machine_within(&["main"], STARTUP_JOB, window, (earliest, Duration::from_secs(3)));
    let fleet = "startup_spread = \"4s\"\nmaintenance_spread = \"0s\"\n";
    let text = with_fleet(dir.path(), &cloud.url(), "", fleet)
        .replace("[daemon]\n", "[daemon]\ntrust_kernel_time_sync = false\n");
    let harness = Harness::start_on(dir, &text, Callers::peer(), Some(key)).await;
    login(&harness, &cloud).await;
    let dir = harness.stop().await;
    cloud.control().reset_counters();

    let started = Instant::now();
    let harness = Harness::start_on(dir, &text, Callers::peer(), Some(key)).await;
    let agent = harness.agent().await;
    // Nothing to serve yet (the clock is not confirmed), and a caller does not hurry the refresh.
    assert_eq!(error_name(&agent.get_token("main").await), "io.allthingstalk.TokenAgent1.Error.Unavailable");
    assert!(agent.get_token_valid_for("main", 60).await.is_err());
    tokio::time::sleep_until((started + earliest - Duration::from_millis(300)).into()).await;
    assert_eq!(cloud.control().counters().refreshes, 0, "the first refresh went before its offset");
    eventually(Duration::from_secs(30), "the spread refresh", || async { agent.get_token("main").await.ok() }).await;
    assert!(started.elapsed() >= earliest);
    assert_eq!(cloud.control().counters().refreshes, 1);
    harness.stop().await;
}

core_test!(requests_over_the_budget_wait_and_none_is_lost, requests_over_the_budget_wait_and_none_is_lost_body);

/// A budget of 2 at once and one a second: six probes all reach the cloud, never more than the budget allows at
/// any moment, the last no earlier than four seconds after the first.
async fn requests_over_the_budget_wait_and_none_is_lost_body() {
    let cloud = fake_cloud(Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let fleet = "maintenance_spread = \"0s\"\nstartup_spread = \"0s\"\nrequest_burst = 2\nrequests_per_minute = 60\n";
    let text = with_fleet(dir.path(), &cloud.url(), "", fleet);
    let harness = Harness::start(dir, &text, Callers::peer()).await;
    let api = prepare::cloud(&harness.config, login_flow::tls::in_background()).unwrap();
    cloud.control().reset_counters();

    let started = Instant::now();
    let jobs: Vec<_> = (0..3)
        .map(|_| {
            let (engine, api) = (harness.engine.clone(), api.clone());
            tokio::spawn(async move { maintenance::check_token_health(&engine, &api).await })
        })
        .collect();
    let mut seen = 0;
    while seen < 6 {
        let count = cloud.control().counters().requests_total;
        // Read before the time: the time read is no earlier than the count's.
        let allowed = 2 + started.elapsed().as_secs();
        assert!(count <= allowed, "{count} requests within {:?}: over the budget", started.elapsed());
        seen = count;
        assert!(started.elapsed() < Duration::from_secs(60), "requests were lost: {seen} of 6 arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for job in jobs {
        step("a health job", job).await.unwrap();
    }
    assert!(started.elapsed() >= Duration::from_secs(4), "six requests within the budget take four seconds");
    assert_eq!(cloud.control().counters().requests_total, 6, "every request went, none twice");
    harness.stop().await;
}
