//! End to end: who got which token. The daemon's journal (its stderr) names the first delivery of a token to each
//! caller in an hour and every refusal with its reason, never the token, and a flood of calls stays a few lines.

use std::process::Stdio;

use att_tokend::dbus::audit::{MAX_REFUSAL_LINES, TARGET};
use testbed::ConfigText;
use token_agent::TokenAgentProxy;

use crate::support::{World, describe};

/// The reader and the stranger are real accounts: the bus refuses a uid the user database does not know.
const READER: &str = "nobody";
const STRANGER: &str = "daemon";
const DEVICE: &str = "SensorSevenDevice0000001";
const TOKEN: &str = "maker:4SensorSevenDeviceToken";

/// `att-token --bus <address> get NAME` as `user`: whether it got the token.
fn get_as(world: &World, user: &str, name: &str) -> std::process::Output {
    let mut command = testbed::as_user(user, &crate::support::bins().token).unwrap();
    command.arg("--bus").arg(&world.bus.address).args(["get", name]);
    command.stdin(Stdio::null()).output().expect("run setpriv (util-linux)")
}

/// The daemon's audit lines.
fn audit_lines(world: &World) -> Vec<String> {
    world.daemon_logs().lines().filter(|line| line.contains(TARGET)).map(str::to_owned).collect()
}

#[test]
fn deliveries_are_logged_once_per_caller_and_refusals_with_their_reason_within_bounds() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs att-token as other users with setpriv: run the test suite as root (CI does)"
    );
    let device_arg = format!("{TOKEN}={DEVICE}");
    let mut world = World::new("audit", &["--device-token", &device_arg]);
    let file = world.secret_file("sensor-7.token", TOKEN);
    let config =
        ConfigText::new().device("sensor-7", DEVICE, &file).line(&format!("readers = {{ users = [\"{READER}\"] }}"));
    world.start_daemon(&config, "info");

    // Root gets the token five times, from five processes: one line. The reader gets it twice: one line more.
    for _ in 0..5 {
        assert_eq!(world.get("sensor-7").map_err(|out| describe(&out)).unwrap(), TOKEN);
    }
    for _ in 0..2 {
        let out = get_as(&world, READER, "sensor-7");
        assert!(out.status.success(), "a reader gets the token: {}", describe(&out));
    }
    let delivered: Vec<String> = audit_lines(&world).into_iter().filter(|l| l.contains("token delivered")).collect();
    assert_eq!(delivered.len(), 2, "one delivery line per caller and token: {delivered:#?}");
    assert!(delivered[0].contains("sensor-7") && delivered[0].contains("uid=0"), "{delivered:#?}");
    let nobody = nix::unistd::User::from_name(READER).unwrap().expect("the user nobody").uid.as_raw();
    assert!(delivered[1].contains(&format!("uid={nobody}")), "{delivered:#?}");

    // Refusals, each with its reason: a stranger, a name nobody configured, a name that is no name.
    let out = get_as(&world, STRANGER, "sensor-7");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(world.get("nope").is_err());
    assert!(world.get("no/such name").is_err());
    let refused: Vec<String> = audit_lines(&world).into_iter().filter(|l| l.contains("call refused")).collect();
    let stranger = nix::unistd::User::from_name(STRANGER).unwrap().expect("the user daemon").uid.as_raw();
    let has = |words: &[&str]| refused.iter().any(|line| words.iter().all(|w| line.contains(w)));
    assert!(has(&["GetToken", "sensor-7", &format!("uid={stranger}"), "AccessDenied"]), "{refused:#?}");
    assert!(has(&["GetToken", "nope", "uid=0", "UnknownToken"]), "{refused:#?}");
    assert!(has(&["GetToken", "InvalidArgs"]), "{refused:#?}");
    assert!(!refused.iter().any(|line| line.contains("no/such")), "a malformed name is not repeated: {refused:#?}");

    // A flood on one connection: 500 deliveries and 500 refusals add one limit line, not a thousand.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(async {
        let connection = zbus::connection::Builder::address(world.bus.address.as_str()).build().await.unwrap();
        let proxy = TokenAgentProxy::new(&connection).await.unwrap();
        for _ in 0..500 {
            assert_eq!(proxy.get_token("sensor-7").await.unwrap().0, TOKEN);
            assert!(proxy.get_token("nope").await.is_err());
        }
    });
    let lines = audit_lines(&world);
    let delivered = lines.iter().filter(|l| l.contains("token delivered")).count();
    let refused = lines.iter().filter(|l| l.contains("call refused")).count();
    let limit = lines.iter().filter(|l| l.contains("further refusals are counted, not logged")).count();
    assert_eq!(delivered, 2, "the flood's deliveries are root's, already logged: {lines:#?}");
    assert_eq!((refused, limit), (MAX_REFUSAL_LINES, 1), "{lines:#?}");

    let logs = world.daemon_logs();
    assert!(!logs.contains(TOKEN) && !logs.contains("4SensorSeven"), "no token in the journal");
}
