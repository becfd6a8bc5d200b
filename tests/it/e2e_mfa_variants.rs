//! End to end, as separate processes: the MFA step finds the cloud's names among the known variants, for a
//! person's login and for the unattended one; the daemon keeps the names that worked for the session's next login,
//! says which in its log, and `--check-config` lists the order; names nobody knows end in what to set.

use std::process::Command;

use serde_json::json;
use testbed::{ConfigText, PATIENCE};

use crate::support::world::{PASSWORD, TOTP_SEED, USERNAME};
use crate::support::{World, bins, describe, wait_until};

/// The MFA step's names the daemon knows, in the order it tries them (`crates/login-flow/src/variants.rs`):
/// grant_type, uid_field, user_field, code_field.
const KNOWN: [[&str; 4]; 5] = [
    ["mfa", "mfa_uid", "user_id", "code"],
    ["mfa", "MfaUid", "UserId", "code"],
    ["mfa", "mfaUid", "userId", "code"],
    ["mfa_code", "mfa_uid", "user_id", "code"],
    ["otp", "mfa_uid", "user_id", "otp"],
];

/// Names none of the known variants uses.
const OWN: [&str; 4] = ["totp", "challenge", "uid", "passcode"];

/// The fake cloud takes the MFA step under these names only.
fn set_cloud_names(world: &World, [grant_type, uid_field, user_field, code_field]: [&str; 4]) {
    let names =
        json!({"grant_type": grant_type, "uid_field": uid_field, "user_field": user_field, "code_field": code_field});
    world.fake.api().post("mfa-fields", names).unwrap();
}

/// The names as `--check-config` and the log print them.
fn setting([grant_type, uid_field, user_field, code_field]: [&str; 4]) -> String {
    format!(
        "grant_type = \"{grant_type}\", uid_field = \"{uid_field}\", user_field = \"{user_field}\", code_field = \
         \"{code_field}\""
    )
}

/// `[api.mfa]` with these names.
fn pinned([grant_type, uid_field, user_field, code_field]: [&str; 4]) -> ConfigText {
    ConfigText::new().table(
        "api.mfa",
        &[("grant_type", grant_type), ("uid_field", uid_field), ("user_field", user_field), ("code_field", code_field)],
    )
}

#[test]
fn a_person_logs_in_under_each_known_variant_and_pins_unknown_names() {
    let mut world = World::new("mfa-variants", &[]);
    world.start_daemon(&ConfigText::new().user("main"), "info");
    for names in KNOWN {
        set_cloud_names(&world, names);
        world.login_ok("main");
        let token = world.get("main").map_err(|o| describe(&o)).unwrap();
        assert!(world.fake.api().is_access_token_valid(&token).unwrap(), "{names:?}");
    }

    // Names no known variant uses: the login fails and says what was tried and what to set.
    set_cloud_names(&world, OWN);
    let (_, out) = world.login("main");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr.contains("[api.mfa]") && stderr.contains(&setting(KNOWN[4])), "{}", describe(&out));

    // Pinned in [api.mfa], they come first, and `--check-config` says so.
    let rest = format!("{}\n{}", pinned(OWN), ConfigText::new().user("main"));
    world.write_config(&rest);
    let check = Command::new(&bins().tokend)
        .arg("--config")
        .arg(world.config.as_ref().expect("written"))
        .arg("--check-config")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("run att-tokend --check-config");
    assert!(check.status.success(), "{}", describe(&check));
    let listed: Vec<String> = String::from_utf8_lossy(&check.stdout)
        .lines()
        .filter_map(|line| line.trim_start().split_once(". grant_type").map(|(_, rest)| format!("grant_type{rest}")))
        .collect();
    let expected: Vec<String> = [OWN].into_iter().chain(KNOWN).map(setting).collect();
    assert_eq!(listed, expected, "{}", describe(&check));
    world.restart_daemon();
    world.login_ok("main");

    world.daemon = None;
    let logs = world.daemon_logs();
    for names in &KNOWN[1..] {
        assert!(logs.contains(&format!("the MFA step worked with {}", setting(*names))), "{names:?} in\n{logs}");
    }
    assert!(!logs.contains(&format!("worked with {}", setting(KNOWN[0]))), "the configured names are not news");
    assert!(!logs.contains(&format!("worked with {}", setting(OWN))), "pinned names are not news");
    assert!(!logs.contains(PASSWORD), "the password appears in the daemon's log");
}

#[test]
fn an_unattended_login_finds_the_variant_and_keeps_it_for_the_next() {
    let mut world = World::new("mfa-unattended", &["--access-lifetime", "8s"]);
    let camel = KNOWN[2];
    set_cloud_names(&world, camel);
    let config = world.unattended_user(ConfigText::new().fast_refresh(), "main");
    world.start_daemon(&config, "debug");

    let first = wait_until("the daemon to log in by itself", PATIENCE, || world.get("main").map_err(|o| describe(&o)));
    assert!(world.fake.api().is_access_token_valid(&first).unwrap());
    // Three MFA steps with grant_type mfa: the default names and MfaUid/UserId were not processed, camelCase was.
    assert_eq!(world.fake.api().counter("mfa_steps").unwrap(), 3);
    assert_eq!(world.fake.api().counter("mfa_steps_ok").unwrap(), 1);

    // The cloud rejects the refresh token: the next login tries the kept names first, and only them.
    assert!(world.fake.api().revoke_user_sessions(USERNAME).unwrap() >= 2);
    let second = wait_until("the daemon to log in again by itself", PATIENCE, || {
        if world.fake.api().counter("mfa_steps_ok").unwrap() < 2 {
            return Err("no second login yet".to_owned());
        }
        world.get("main").map_err(|o| describe(&o))
    });
    assert_ne!(second, first);
    let (steps, ok) =
        (world.fake.api().counter("mfa_steps").unwrap(), world.fake.api().counter("mfa_steps_ok").unwrap());
    assert_eq!(steps, ok + 2, "only the first login tried other names ({steps} steps, {ok} taken)");

    world.daemon = None;
    let logs = world.daemon_logs();
    let said = format!("the MFA step worked with {}", setting(camel));
    assert_eq!(logs.matches(&said).count(), 1, "said once, when found:\n{logs}");
    for (what, secret) in [("the password", PASSWORD), ("the TOTP seed", TOTP_SEED), ("the first token", &first)] {
        assert!(!logs.contains(secret), "{what} appears in the daemon's log");
    }
}
