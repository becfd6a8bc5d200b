//! End to end, as separate processes under different uids: a token's readers get it, anyone else is denied, and
//! only admins may log in; who is who comes from the bus, never from arguments.

use std::process::{Command, Output, Stdio};

use testbed::ConfigText;

use crate::support::{World, bins, describe, exit};

/// The reader and the stranger are real accounts: the bus refuses a uid the user database does not know.
const READER: &str = "nobody";
const STRANGER: &str = "daemon";
const DEVICE: &str = "SensorSevenDevice0000001";
const TOKEN: &str = "maker:4SensorSevenDeviceToken";

/// `att-token --bus <address> <args>` run as `user` (its uid and primary gid, no supplementary groups).
fn att_token_as(world: &World, user: &str, args: &[&str]) -> Output {
    att_token_command_as(world, user, args).stdin(Stdio::null()).output().expect("run setpriv (util-linux)")
}

/// The command of [`att_token_as`], not yet run.
fn att_token_command_as(world: &World, user: &str, args: &[&str]) -> Command {
    let mut command = testbed::as_user(user, &bins().token).unwrap();
    command.arg("--bus").arg(&world.bus.address).args(args);
    command
}

#[test]
fn readers_get_the_token_and_everyone_else_is_denied() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs att-token as other users with setpriv: run the test suite as root (CI does)"
    );
    let device_arg = format!("{TOKEN}={DEVICE}");
    let mut world = World::new("access", &["--device-token", &device_arg]);
    let file = world.secret_file("sensor-7.token", TOKEN);
    let config = ConfigText::new()
        .device("sensor-7", DEVICE, &file)
        .line(&format!("readers = {{ users = [\"{READER}\"] }}"))
        .user("main");
    world.start_daemon(&config, "debug");

    // The reader: GetToken, GetTokenForDevice and ListTokens see the token.
    let got = att_token_as(&world, READER, &["get", "sensor-7"]);
    assert!(got.status.success(), "a reader gets the token: {}", describe(&got));
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), TOKEN);
    let for_device = att_token_as(&world, READER, &["for-device", DEVICE]);
    assert!(for_device.status.success(), "{}", describe(&for_device));
    assert_eq!(String::from_utf8_lossy(&for_device.stdout).trim(), TOKEN);
    let listed = att_token_as(&world, READER, &["list", "--json"]);
    assert!(listed.status.success(), "{}", describe(&listed));
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("sensor-7"), "a reader lists the token: {listed}");
    assert!(!listed.contains("\"main\""), "a reader of sensor-7 does not see main: {listed}");

    // Someone else: AccessDenied, and nothing listed.
    let denied = att_token_as(&world, STRANGER, &["get", "sensor-7"]);
    assert_eq!(denied.status.code(), Some(exit::ACCESS_DENIED), "a stranger is denied: {}", describe(&denied));
    assert!(denied.stdout.is_empty(), "no token on stdout when denied");
    assert!(!String::from_utf8_lossy(&denied.stderr).contains(TOKEN), "the error does not leak the token");
    let none = att_token_as(&world, STRANGER, &["for-device", DEVICE]);
    assert!(!none.status.success(), "a stranger gets no token for the device: {}", describe(&none));
    assert!(!String::from_utf8_lossy(&none.stdout).contains(TOKEN));
    let listed = att_token_as(&world, STRANGER, &["list", "--json"]);
    assert!(listed.status.success(), "anyone may list: {}", describe(&listed));
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("sensor-7"), "a stranger lists nothing of sensor-7");

    // Only admins may log in (root is one); a reader is not.
    let login = testbed::output_with_stdin(
        att_token_command_as(
            &world,
            READER,
            &["login", "main", "--username", "x@example.com", "--password-stdin", "--code", "123456"],
        ),
        "password\n",
    )
    .unwrap();
    assert_eq!(login.status.code(), Some(exit::ACCESS_DENIED), "a non-admin may not log in: {}", describe(&login));
    // Root reads everything.
    assert_eq!(world.get("sensor-7").expect("root reads every token"), TOKEN);
}
