//! End to end, as separate processes: with a password file and a TOTP seed file the daemon logs in by itself at
//! start and again when the cloud rejects its refresh token, without ever asking for a human or logging a secret.

use testbed::{ConfigText, PATIENCE};

use crate::support::world::{PASSWORD, TOTP_SEED, USERNAME};
use crate::support::{World, describe, wait_until};

#[test]
fn configured_credentials_log_in_at_start_and_after_a_rejected_refresh() {
    let mut world = World::new("unattended", &["--access-lifetime", "8s"]);
    let config = world.unattended_user(ConfigText::new().fast_refresh(), "main");
    world.start_daemon(&config, "trace");

    // Nobody runs `att-token login`: the daemon logs in with the files, through the MFA step.
    let first = wait_until("the daemon to log in by itself", PATIENCE, || world.get("main").map_err(|o| describe(&o)));
    assert!(world.fake.api().is_access_token_valid(&first).unwrap());
    assert_eq!(world.fake.api().counter("password_grants_ok").unwrap(), 1);
    assert_eq!(world.fake.api().counter("mfa_steps_ok").unwrap(), 1, "the code came from the seed file");

    // The cloud rejects the refresh token: the daemon logs in again instead of asking for a human.
    assert!(world.fake.api().revoke_user_sessions(USERNAME).unwrap() >= 2);
    let second = wait_until("the daemon to log in again by itself", PATIENCE, || {
        if world.fake.api().counter("password_grants_ok").unwrap() < 2 {
            return Err("no second login yet".to_owned());
        }
        world.get("main").map_err(|o| describe(&o))
    });
    assert_ne!(second, first);
    assert!(world.fake.api().is_access_token_valid(&second).unwrap(), "the new session's token works at the cloud");
    let entry = world.listed("main");
    assert_eq!(entry["state"], "valid", "{entry}");
    assert_eq!(entry["attention_needed"], false, "no human was needed: {entry}");

    world.daemon = None;
    let logs = world.daemon_logs();
    for (what, secret) in [("the password", PASSWORD), ("the TOTP seed", TOTP_SEED), ("the first token", &first)] {
        assert!(!logs.contains(secret), "{what} appears in the daemon's trace log");
    }
}
