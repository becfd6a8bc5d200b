//! End to end, as separate processes: a cloud outage rides on the last good token, then says `Unavailable`, then
//! heals by itself; a rejected refresh asks for a login and raises `AttentionNeeded`; a revoked device token shows.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use testbed::{ConfigText, PATIENCE};

use crate::support::world::USERNAME;
use crate::support::{World, bins, describe, exit, fast_main, wait_until};

/// Access tokens live 8 s at the fake; the daemon refreshes about every 5 s and retries after 1–2 s.
const FAKE_ARGS: &[&str] = &["--access-lifetime", "8s"];

#[test]
fn outage_serves_the_last_token_then_unavailable_then_recovers_by_itself() {
    // 24 s tokens (expires_in 23): the refresh is planned at 75-80 % of the life, about 17-18 s in, and the token
    // is served until 2 s before its end (21 s): a few seconds in which the daemon retries with a good token.
    let mut world = World::new("outage", &["--access-lifetime", "24s"]);
    world.start_daemon(&fast_main(), "debug");
    world.login_ok("main");
    let good = world.get("main").expect("a token after login");

    // /login fails with 500 for 32 s: past the token's end.
    let outage = Duration::from_secs(32);
    let outage_ends = Instant::now() + outage;
    world
        .fake
        .api()
        .inject_fault(json!({"kind": "server_error", "duration_ms": outage.as_millis() as u64, "path": "/login"}))
        .unwrap();

    // While the token in hand is still good, it is served, and the state says the daemon is retrying.
    let retrying = wait_until("main to be retrying", PATIENCE, || {
        let entry = world.listed("main");
        if entry["state"] == "retrying" { Ok(entry) } else { Err(format!("listed as {entry}")) }
    });
    assert_eq!(retrying["attention_needed"], false, "a transient failure needs no human yet: {retrying}");
    let during = world.get("main").unwrap_or_else(|out| panic!("the last good token is served: {}", describe(&out)));
    assert_eq!(during, good, "the token in hand is served during the outage");
    assert!(world.fake.api().is_access_token_valid(&during).unwrap());
    assert!(world.fake.api().counter("faults_applied").unwrap() >= 1, "the daemon tried to refresh and met the outage");

    // Once it lapses: Unavailable, with its documented exit status, and state `expired`.
    let failed = wait_until("GetToken to report Unavailable", PATIENCE, || match world.get("main") {
        Ok(_) => Err("still served".to_owned()),
        Err(out) => Ok(out),
    });
    assert!(Instant::now() < outage_ends, "the token lapsed before the outage ended, as planned");
    assert_eq!(failed.status.code(), Some(exit::UNAVAILABLE), "Unavailable's exit status: {}", describe(&failed));
    assert!(failed.stdout.is_empty(), "nothing on stdout when there is no token");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line on stderr: {stderr:?}");
    assert_eq!(world.listed("main")["state"], "expired");

    // When the cloud is back, the daemon recovers without anyone logging in again.
    let healed = wait_until("the daemon to recover after the outage", PATIENCE + outage, || {
        world.get("main").map_err(|out| describe(&out))
    });
    assert!(Instant::now() >= outage_ends, "no token was served during the outage once the old one lapsed");
    assert_ne!(healed, good);
    assert!(world.fake.api().is_access_token_valid(&healed).unwrap(), "the recovered token works at the cloud");
    assert_eq!(world.fake.api().counter("password_grants").unwrap(), 1, "recovered by refreshing, not by a new login");
    assert_eq!(world.listed("main")["state"], "valid");
}

#[test]
fn rejected_refresh_needs_login_and_raises_attention() {
    let mut world = World::new("invalid-grant", FAKE_ARGS);
    world.start_daemon(&fast_main(), "debug");
    world.login_ok("main");
    let (mut watch, lines) = testbed::Proc::spawn_lines(
        "att-token-watch",
        {
            let mut command = bins().att_token(&world.bus.address);
            command.arg("watch");
            command
        },
        world.scratch.path(),
    )
    .unwrap();

    wait_until("att-token watch to subscribe", PATIENCE, || {
        if watch.stderr().contains("watching") { Ok(()) } else { Err(watch.stderr()) }
    });

    // "Log out everywhere" at the cloud: the refresh token now gets invalid_grant.
    assert!(
        world.fake.api().revoke_user_sessions(USERNAME).unwrap() >= 2,
        "the fake revoked the access and refresh tokens"
    );

    let entry = world.wait_for_state("main", "needs-login");
    assert_eq!(entry["attention_needed"], true, "needs-login raises the attention flag: {entry}");
    let out = world.get("main").expect_err("no token once the session is lost");
    assert_eq!(out.status.code(), Some(exit::NEEDS_LOGIN), "NeedsLogin's exit status: {}", describe(&out));

    let mut seen = Vec::new();
    let attention = wait_until("att-token watch to print AttentionNeeded for main", PATIENCE, || {
        while let Ok(line) = lines.try_recv() {
            seen.push(line);
        }
        seen.iter()
            .find(|l| l.to_lowercase().contains("attention") && l.contains("main"))
            .cloned()
            .ok_or_else(|| format!("watch printed {seen:?}"))
    });
    assert!(watch.try_status().is_none(), "watch keeps running: {attention}");
    assert_eq!(world.fake.api().counter("password_grants").unwrap(), 1, "no login without a human");

    // A fresh login brings it back.
    world.login_ok("main");
    let token = world.get("main").expect("a token after logging in again");
    assert!(world.fake.api().is_access_token_valid(&token).unwrap());
    let entry = world.listed("main");
    assert_eq!(entry["state"], "valid", "{entry}");
    assert_eq!(entry["attention_needed"], false, "{entry}");
}

#[test]
fn revoked_device_token_is_reported_by_the_health_probe() {
    const DEVICE: &str = "SensorSevenDevice0000001";
    const TOKEN: &str = "maker:4SensorSevenDeviceToken";
    const GROUND: &str = "GroundSiteA0000000000001";
    const GROUND_TOKEN: &str = "maker:4GroundSiteAToken";
    const PUMP: &str = "PumpInGroundA00000000001";
    let device_arg = format!("{TOKEN}={DEVICE}");
    let ground_arg = format!("{GROUND_TOKEN}={GROUND}:{PUMP},{DEVICE}");
    let mut world = World::new("revoked", &["--device-token", &device_arg, "--ground-token", &ground_arg]);
    let device_file = world.secret_file("sensor-7.token", TOKEN);
    let ground_file = world.secret_file("site-a.token", GROUND_TOKEN);
    let config = ConfigText::new()
        .table("maintenance", &[("token_health", "* * * * * *")])
        .device("sensor-7", DEVICE, &device_file)
        .ground("site-a", GROUND, &ground_file);
    world.start_daemon(&config, "debug");

    assert_eq!(world.get("sensor-7").expect("the device token is served"), TOKEN);
    assert_eq!(world.listed("sensor-7")["state"], "valid");
    // Least privilege: the device's own token for it, the ground token for another device of the ground.
    let own = world.att_token(&["for-device", DEVICE]);
    assert!(own.status.success(), "{}", describe(&own));
    assert_eq!(String::from_utf8_lossy(&own.stdout).trim(), TOKEN);
    let pump = world.att_token(&["for-device", PUMP]);
    assert!(pump.status.success(), "{}", describe(&pump));
    assert_eq!(String::from_utf8_lossy(&pump.stdout).trim(), GROUND_TOKEN);

    assert!(world.fake.api().revoke(TOKEN).unwrap(), "the fake knew the device token");
    let entry = world.wait_for_state("sensor-7", "revoked");
    assert_eq!(entry["attention_needed"], true, "a revoked token needs a human: {entry}");
    assert_eq!(world.listed("site-a")["state"], "valid", "the ground token is untouched");
    let out = world.get("sensor-7").expect_err("a revoked token is not handed out");
    assert_eq!(out.status.code(), Some(exit::REVOKED), "Revoked's exit status: {}", describe(&out));
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", describe(&out));
    // The token's own object says the same, with a reason and no secret.
    let path = token_object(&world, "sensor-7");
    assert_eq!(property(&world, &path, "State"), "s \"revoked\"");
    assert_eq!(property(&world, &path, "AttentionNeeded"), "b true");
    let last_error = property(&world, &path, "LastError");
    assert!(last_error.len() > "s \"\"".len(), "LastError says why: {last_error}");
    assert!(!last_error.contains(TOKEN.trim_start_matches("maker:")), "LastError shows no token");
    assert_eq!(property(&world, &token_object(&world, "site-a"), "State"), "s \"valid\"");
    // The device is now reached through its ground.
    wait_until("for-device to skip the revoked token", PATIENCE, || {
        let out = world.att_token(&["for-device", DEVICE]);
        let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && printed == GROUND_TOKEN { Ok(()) } else { Err(describe(&out)) }
    });
}

/// The object path of token `name`: the child of `/io/allthingstalk/TokenAgent1/token` whose `Name` is `name`.
fn token_object(world: &World, name: &str) -> String {
    let out = Command::new("busctl")
        .arg(format!("--address={}", world.bus.address))
        .args(["tree", "--list", "io.allthingstalk.TokenAgent1"])
        .output()
        .expect("run busctl (systemd)");
    assert!(out.status.success(), "busctl tree: {}", describe(&out));
    let tree = String::from_utf8_lossy(&out.stdout).into_owned();
    tree.lines()
        .map(str::trim)
        .filter(|path| path.starts_with("/io/allthingstalk/TokenAgent1/token/"))
        .find(|path| property(world, path, "Name") == format!("s \"{name}\""))
        .unwrap_or_else(|| panic!("no token object named {name:?} among {tree}"))
        .to_owned()
}

/// A property of a token object as busctl prints it, e.g. `s "valid"` or `b true`.
fn property(world: &World, path: &str, name: &str) -> String {
    let out = Command::new("busctl")
        .arg(format!("--address={}", world.bus.address))
        .args(["get-property", "io.allthingstalk.TokenAgent1", path, "io.allthingstalk.TokenAgent1.Token", name])
        .output()
        .expect("run busctl (systemd)");
    assert!(out.status.success(), "busctl get-property {path} {name}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
