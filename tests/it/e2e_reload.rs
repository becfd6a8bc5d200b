//! End to end, as separate processes: SIGHUP re-reads the config and the token files while sessions keep
//! running; a broken config on reload is reported and the running configuration stays.

use testbed::{ConfigText, PATIENCE};

use crate::support::{World, describe, exit, wait_until};

const DEVICE: &str = "SensorSevenDevice0000001";
const OLD_TOKEN: &str = "maker:4SensorSevenOldToken";
const NEW_TOKEN: &str = "maker:4SensorSevenNewToken";
const OTHER_DEVICE: &str = "SensorEightDevice0000001";
const OTHER_TOKEN: &str = "maker:4SensorEightToken";

fn config(margin: &str, sensor_file: &std::path::Path) -> ConfigText {
    ConfigText::new()
        .refresh(&[("safety_margin", margin)])
        .table("maintenance", &[("token_health", "off")])
        .user("main")
        .device("sensor-7", DEVICE, sensor_file)
}

#[test]
fn sighup_reloads_token_files_tokens_and_refresh_timings_and_keeps_the_session() {
    let old = format!("{OLD_TOKEN}={DEVICE}");
    let new = format!("{NEW_TOKEN}={DEVICE}");
    let other = format!("{OTHER_TOKEN}={OTHER_DEVICE}");
    let mut world = World::new(
        "reload",
        &["--access-lifetime", "60s", "--device-token", &old, "--device-token", &new, "--device-token", &other],
    );
    let sensor = world.secret_file("sensor-7.token", OLD_TOKEN);
    world.start_daemon(&config("2s", &sensor), "debug");
    world.login_ok("main");
    let logins = world.fake.api().counter("password_grants").unwrap();
    assert_eq!(world.get("sensor-7").expect("the device token"), OLD_TOKEN);
    // With a 2 s margin a fresh 59 s token is good for 50 s.
    let out = world.att_token(&["get", "main", "--min-valid", "50"]);
    assert!(out.status.success(), "{}", describe(&out));

    // A new token file value, a new token, and a 10 s margin.
    world.secret_file("sensor-7.token", NEW_TOKEN);
    let sensor_8 = world.secret_file("sensor-8.token", OTHER_TOKEN);
    world.reload_daemon(&config("10s", &sensor).device("sensor-8", OTHER_DEVICE, &sensor_8));
    wait_until("the new token file to be served after SIGHUP", PATIENCE, || match world.get("sensor-7") {
        Ok(token) if token == NEW_TOKEN => Ok(()),
        other => Err(format!("{other:?}")),
    });
    assert_eq!(world.get("sensor-8").expect("the token added to the config"), OTHER_TOKEN);
    // The new margin is in force: 50 s more is now more than a fresh token gives (59 s less 10 s).
    let out = world.att_token(&["get", "main", "--min-valid", "50"]);
    assert_eq!(out.status.code(), Some(exit::USAGE), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("10 s before they expire"), "{}", describe(&out));
    // The user session went on: the same session, no new login.
    let now = world.get("main").expect("the session survives a reload");
    assert!(
        world.fake.api().is_access_token_valid(&now).unwrap(),
        "the session's token is still one the cloud accepts"
    );
    assert_eq!(world.fake.api().counter("password_grants").unwrap(), logins, "a reload needs no new login");

    // A broken config: reported, and everything keeps running as it was.
    let config_path = world.config.clone().expect("a config file");
    std::fs::write(&config_path, "[[token]]\nname = \"main\"\nkind = \"usr\"\n").expect("break the config");
    world.daemon.as_mut().expect("the daemon runs").proc.signal(nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_until("the daemon to report the broken config", PATIENCE, || {
        let logs = world.daemon_logs();
        if logs.contains("reload failed, keeping the running configuration") { Ok(()) } else { Err(logs) }
    });
    let logs = world.daemon_logs();
    assert!(logs.contains(&format!("{}:3", config_path.display())), "the error names file and line: {logs}");
    assert_eq!(world.get("sensor-8").expect("the running configuration stays"), OTHER_TOKEN);
    assert!(world.get("main").is_ok(), "the session keeps being served");
    let status = world.stop_daemon();
    assert!(status.success(), "SIGTERM after reloads stops cleanly: {status}");
}
