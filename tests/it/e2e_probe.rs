//! End to end, as separate processes: a health probe or ground sync that was under way when a `SIGHUP` reload
//! changed the token's value (or the ground's id) does not apply its verdict to the new value.
//!
//! Each test slows the probes in the fake cloud (the `slow` fault) so that several probes of the old value are
//! in flight when the reload lands, then watches the token for longer than those probes take.

use std::time::{Duration, Instant};

use serde_json::json;

use testbed::{ConfigText, PATIENCE};

use crate::support::{World, describe, wait_until};

/// How long the fake holds every probe before answering.
const PROBE_DELAY: Duration = Duration::from_secs(6);

/// Probes every two seconds; nothing else is scheduled.
fn maintenance(token_health: &str, ground_sync: &str) -> ConfigText {
    ConfigText::new().maintenance(token_health, ground_sync, "off")
}

/// Slows every request under `path` for a minute, then waits until at least three slowed probes have started,
/// so that probes of the current value are in flight whatever the scheduler's phase.
fn slow_probes_in_flight(world: &World, path: &str) {
    let applied = world.fake.api().counter("faults_applied").unwrap();
    world
        .fake
        .api()
        .inject_fault(json!({
            "kind": "slow",
            "delay_ms": PROBE_DELAY.as_millis() as u64,
            "duration_ms": 60_000,
            "path": path,
        }))
        .unwrap();
    wait_until("three slowed probes to be in flight", PATIENCE, || {
        let now = world.fake.api().counter("faults_applied").unwrap();
        if now >= applied + 3 { Ok(()) } else { Err(format!("{} slowed so far", now - applied)) }
    });
}

/// The daemon's log after its last completed reload.
fn logs_since_reload(world: &World) -> String {
    let logs = world.daemon_logs();
    match logs.rfind("configuration and token files reloaded") {
        Some(at) => logs[at..].to_owned(),
        None => panic!("the daemon never logged a completed reload:\n{logs}"),
    }
}

/// How many requests the fake cloud has answered so far with exactly `line_end` (e.g. `GET /x -> 401`), from
/// its request log.
fn answered(world: &World, line_end: &str) -> usize {
    let log = std::fs::read_to_string(world.scratch.path().join("att-fake-cloud.stderr")).expect("the fake's log");
    log.lines().filter(|line| line.ends_with(line_end)).count()
}

/// Calls `check` every 150 ms until `window` has passed since `from`, collecting what it reports.
fn watch(from: Instant, window: Duration, mut check: impl FnMut() -> Option<String>) -> Vec<String> {
    let mut seen = Vec::new();
    while from.elapsed() < window {
        if let Some(note) = check() {
            seen.push(note);
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    seen
}

/// `att-token for-device DEVICE`: whether it succeeded, what it printed, and the whole outcome.
fn for_device(world: &World, device: &str) -> (bool, String, String) {
    let out = world.att_token(&["for-device", device]);
    (out.status.success(), String::from_utf8_lossy(&out.stdout).trim().to_owned(), describe(&out))
}

#[test]
fn a_reload_during_a_slow_device_probe_keeps_the_new_token_valid() {
    const DEVICE: &str = "ProbeDevice0000000000001";
    const OLD_TOKEN: &str = "maker:4ProbeDeviceOldToken";
    const NEW_TOKEN: &str = "maker:4ProbeDeviceNewToken";
    let old = format!("{OLD_TOKEN}={DEVICE}");
    let new = format!("{NEW_TOKEN}={DEVICE}");
    let mut world = World::new("probe-device", &["--device-token", &old, "--device-token", &new]);
    let token_file = world.secret_file("sensor-7.token", OLD_TOKEN);
    let config = maintenance("*/2 * * * * *", "off").device("sensor-7", DEVICE, &token_file);
    world.start_daemon(&config, "debug");
    assert_eq!(world.get("sensor-7").expect("the device token is served"), OLD_TOKEN);

    // Probes of the old value are held by the fake; meanwhile the old token is revoked and replaced.
    slow_probes_in_flight(&world, &format!("/device/{DEVICE}"));
    assert!(world.fake.api().revoke(OLD_TOKEN).unwrap(), "the fake knew the old token");
    world.secret_file("sensor-7.token", NEW_TOKEN);
    world.reload_daemon(&config);
    wait_until("the new token to be served after SIGHUP", PATIENCE, || match world.get("sensor-7") {
        Ok(token) if token == NEW_TOKEN => Ok(()),
        other => Err(format!("{other:?}")),
    });

    // Every probe of the old value ends within PROBE_DELAY of the reload, answered 401: none may mark the new
    // value revoked.
    let revoked_answer = format!("GET /device/{DEVICE} -> 401");
    let refused_before = answered(&world, &revoked_answer);
    let reloaded = Instant::now();
    let revoked = watch(reloaded, PROBE_DELAY + Duration::from_secs(3), || {
        let entry = world.listed("sensor-7");
        (entry["state"] != "valid")
            .then(|| format!("{:.1} s after the reload: {entry}", reloaded.elapsed().as_secs_f32()))
    });
    assert!(revoked.is_empty(), "the old token's verdict reached the new token: {revoked:#?}");
    let logs = logs_since_reload(&world);
    assert!(!logs.contains("\"sensor-7\" was rejected by the cloud"), "no revocation after the reload:\n{logs}");
    assert!(
        answered(&world, &revoked_answer) > refused_before,
        "a probe of the old value was refused while the new one was served: the race did happen"
    );
    let entry = world.listed("sensor-7");
    assert_eq!((&entry["state"], &entry["attention_needed"]), (&json!("valid"), &json!(false)), "{entry}");
    assert_eq!(world.get("sensor-7").expect("the new token is served"), NEW_TOKEN);
    assert!(!logs.contains(NEW_TOKEN) && !logs.contains(OLD_TOKEN), "no token in the log");
}

#[test]
fn a_ground_changed_during_a_slow_sync_does_not_get_the_old_grounds_devices() {
    const GROUND_A: &str = "GroundAlpha0000000000001";
    const GROUND_B: &str = "GroundBravo0000000000001";
    const PUMP_A: &str = "PumpAlpha000000000000001";
    const PUMP_B: &str = "PumpBravo000000000000001";
    const TOKEN_A: &str = "maker:4GroundAlphaToken";
    const TOKEN_B: &str = "maker:4GroundBravoToken";
    let ground_a = format!("{TOKEN_A}={GROUND_A}:{PUMP_A}");
    let ground_b = format!("{TOKEN_B}={GROUND_B}:{PUMP_B}");
    let mut world = World::new("probe-ground", &["--ground-token", &ground_a, "--ground-token", &ground_b]);
    let token_file = world.secret_file("site.token", TOKEN_A);
    let config = |ground: &str| maintenance("off", "*/2 * * * * *").ground("site", ground, &token_file);
    world.start_daemon(&config(GROUND_A), "debug");
    wait_until("the ground's devices to be learned", PATIENCE, || match for_device(&world, PUMP_A) {
        (true, token, _) if token == TOKEN_A => Ok(()),
        (_, _, out) => Err(out),
    });

    // Syncs of ground A (and later B) are held by the fake; meanwhile the entry becomes ground B.
    slow_probes_in_flight(&world, "/ground/");
    world.secret_file("site.token", TOKEN_B);
    world.reload_daemon(&config(GROUND_B));
    wait_until("ground B's token to be served after SIGHUP", PATIENCE, || match world.get("site") {
        Ok(token) if token == TOKEN_B => Ok(()),
        other => Err(format!("{other:?}")),
    });

    // Every sync of ground A ends within PROBE_DELAY of the reload: none may give ground B A's devices.
    let listed_a = format!("GET /ground/{GROUND_A}/devices -> 200");
    let listed_before = answered(&world, &listed_a);
    let reloaded = Instant::now();
    let wrong = watch(reloaded, PROBE_DELAY + Duration::from_secs(3), || {
        let (ok, token, out) = for_device(&world, PUMP_A);
        ok.then(|| format!("{:.1} s after the reload, {PUMP_A} got {token:?}: {out}", reloaded.elapsed().as_secs_f32()))
    });
    assert!(wrong.is_empty(), "ground B was given ground A's devices: {wrong:#?}");
    assert!(
        answered(&world, &listed_a) > listed_before,
        "a sync of ground A ended while the entry was ground B: the race did happen"
    );
    // Ground B's own devices arrive with its own (slow) sync.
    wait_until("ground B's devices to be learned", PATIENCE, || match for_device(&world, PUMP_B) {
        (true, token, _) if token == TOKEN_B => Ok(()),
        (_, _, out) => Err(out),
    });
    assert!(!for_device(&world, PUMP_A).0, "ground A's device stays unknown");
    assert_eq!(world.listed("site")["state"], "valid");
}
