//! The wall clock as the daemon sees it: asked of timedated on the bus (here a stand-in on the private bus, which
//! the shipped unit's sandbox allows where `adjtimex` is forbidden), and what a restart does with a saved token.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use testbed::{ConfigText, PATIENCE};

use crate::support::{FakeTimedated, World, describe, wait_until};

fn config(file: &Path) -> ConfigText {
    ConfigText::new().user("main").line(&format!("files = [\"{}\"]", file.display()))
}

/// The daemon's `ClockConfirmed` as busctl prints it (`b true` or `b false`).
fn clock_confirmed(world: &World) -> String {
    let out = Command::new("busctl")
        .arg(format!("--address={}", world.bus.address))
        .args([
            "get-property",
            "io.allthingstalk.TokenAgent1",
            "/io/allthingstalk/TokenAgent1",
            "io.allthingstalk.TokenAgent1",
            "ClockConfirmed",
        ])
        .output()
        .expect("run busctl (systemd)");
    assert!(out.status.success(), "busctl get-property ClockConfirmed: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What identifies a file's content as the daemon wrote it: inode, modification time, bytes.
fn file_state(path: &Path) -> (u64, i64, i64, Vec<u8>) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (meta.ino(), meta.mtime(), meta.mtime_nsec(), std::fs::read(path).expect("read the token file"))
}

#[test]
fn a_synchronised_clock_lets_a_restart_serve_the_saved_token_at_once_without_a_refresh() {
    let mut world = World::new("clock-synced", &["--access-lifetime", "3600s"]);
    let timedated = FakeTimedated::start(&world.bus.address, true);
    let file = world.scratch.path().join("main.token");
    world.start_daemon(&config(&file), "debug");
    assert_eq!(clock_confirmed(&world), "b true", "timedated says synchronised");
    world.login_ok("main");
    let token = world.get("main").expect("a token after the login");
    wait_until("the token file", PATIENCE, || match std::fs::read(&file) {
        Ok(bytes) if bytes == token.as_bytes() => Ok(()),
        other => Err(format!("{other:?}")),
    });
    let before = file_state(&file);
    let refreshes = world.fake.api().counter("refreshes").unwrap();

    assert!(world.stop_daemon().success());
    world.restart_daemon();
    // Served at once: the first call after the daemon answers gets the saved token, no waiting for the cloud.
    let asked = Instant::now();
    let served = world.get("main").unwrap_or_else(|out| panic!("served at once after the restart: {}", describe(&out)));
    eprintln!("first GetToken after the restart answered in {:?}", asked.elapsed());
    assert_eq!(served, token, "the saved access token is served");
    assert_eq!(clock_confirmed(&world), "b true");
    // Give a wrongly planned refresh the time to happen, then check none did.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(world.fake.api().counter("refreshes").unwrap(), refreshes, "no refresh after the restart");
    assert_eq!(file_state(&file), before, "the token file is untouched: same inode, time and bytes");
    drop(timedated);
}

#[test]
fn an_unsynchronised_clock_makes_a_restart_refresh_the_saved_token_first_and_a_reload_asks_again() {
    let mut world = World::new("clock-unsynced", &["--access-lifetime", "3600s"]);
    let timedated = FakeTimedated::start(&world.bus.address, false);
    let file = world.scratch.path().join("main.token");
    world.start_daemon(&config(&file), "debug");
    assert_eq!(clock_confirmed(&world), "b false", "timedated says not synchronised");
    world.login_ok("main");
    let token = world.get("main").expect("a token after the login");
    let refreshes = world.fake.api().counter("refreshes").unwrap();

    assert!(world.stop_daemon().success());
    world.restart_daemon();
    let fresh = wait_until("a refreshed token", PATIENCE, || world.get("main").map_err(|out| describe(&out)));
    assert_ne!(fresh, token, "the saved token was not trusted under an unconfirmed clock");
    assert_eq!(world.fake.api().counter("refreshes").unwrap(), refreshes + 1, "one refresh after the restart");

    // The system reports the clock synchronised later: a reload asks again.
    timedated.set(true);
    let config_text = config(&file);
    world.reload_daemon(&config_text);
    wait_until("ClockConfirmed after the reload", PATIENCE, || match clock_confirmed(&world) {
        v if v == "b true" => Ok(()),
        v => Err(v),
    });
}

#[test]
fn without_timedated_on_the_bus_the_clock_is_not_confirmed_and_the_journal_says_why() {
    let mut world = World::new("clock-none", &["--access-lifetime", "3600s"]);
    let file = world.scratch.path().join("main.token");
    world.start_daemon(&config(&file), "debug");
    assert_eq!(clock_confirmed(&world), "b false");
    let logs = world.daemon_logs();
    assert!(
        logs.contains("the wall clock is not confirmed") && logs.contains("org.freedesktop.timedate1"),
        "the journal names what was asked: {logs}"
    );
}
