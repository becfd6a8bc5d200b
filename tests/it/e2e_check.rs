//! End to end: `att-token check` against the real daemon reads each token's state as a monitoring plugin does.

use testbed::ConfigText;

use crate::support::{World, describe};

const DEVICE: &str = "SensorSevenDevice0000001";
const TOKEN: &str = "maker:4SensorSevenDeviceToken";

#[test]
fn check_is_ok_for_a_served_token_and_critical_for_one_that_needs_a_login() {
    let device_arg = format!("{TOKEN}={DEVICE}");
    let mut world = World::new("check", &["--device-token", &device_arg]);
    let file = world.secret_file("sensor-7.token", TOKEN);
    // `main` was never logged in: it needs a login.
    world.start_daemon(&ConfigText::new().device("sensor-7", DEVICE, &file).user("main"), "info");

    let out = world.att_token(&["check", "sensor-7"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(line.starts_with("ATT-TOKEN OK - 1 token served | tokens=1;;;0 "), "{line}");

    let out = world.att_token(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.starts_with("ATT-TOKEN CRITICAL - main: needs a login (att-token login main); 2 tokens | "), "{line}");
    assert!(line.contains(" tokens_critical=1;;;0 ") && line.contains(" main_access_seconds=0s;;;0"), "{line}");
    assert!(!line.contains(TOKEN), "the check never shows a token: {line}");

    let out = world.att_token(&["check", "nope"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ATT-TOKEN UNKNOWN - no token named \"nope\""));
}
