//! End to end: what the daemon learns about unattended login outlives a restart. Credentials the cloud refused are
//! not sent again (each refusal counts towards the account's lockout) and a logout stays a logout, until a person
//! logs in or gives other credentials; a refresh refused for another reason than the refresh token keeps the session.

use std::time::Duration;

use serde_json::json;

use testbed::{ConfigText, PATIENCE};

use crate::support::world::{PASSWORD, TOTP_SEED, USERNAME};
use crate::support::{World, describe, wait_until};

const NEW_PASSWORD: &str = "n3w&password=after+change";

fn unattended_config(world: &World) -> ConfigText {
    world.unattended_user(ConfigText::new().refresh(&[("retry_initial", "1s"), ("retry_max", "2s")]), "main")
}

/// Every file in the state directory, as text, to look for secrets.
fn state_texts(world: &World) -> Vec<(String, String)> {
    std::fs::read_dir(world.state_dir())
        .expect("list the state directory")
        .flatten()
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), String::from_utf8_lossy(&bytes).into_owned())
        })
        .collect()
}

#[test]
fn refused_credentials_are_not_sent_again_after_restarts_until_other_credentials_come() {
    let mut world = World::new("lockout", &["--access-lifetime", "60s"]);
    let config = unattended_config(&world);
    world.start_daemon(&config, "debug");
    wait_until("the unattended login", PATIENCE, || world.get("main").map_err(|o| describe(&o)));
    assert_eq!(world.fake.api().counter("password_grants").unwrap(), 1);

    // The account's password changes at the cloud, and its sessions are revoked: the refresh is refused, and the
    // unattended login that follows is refused too.
    world
        .fake
        .api()
        .post("users", json!({"username": USERNAME, "password": NEW_PASSWORD, "totp_seed": TOTP_SEED}))
        .unwrap();
    assert!(world.fake.api().revoke_user_sessions(USERNAME).unwrap() >= 2);
    let out = world.att_token(&["refresh", "main"]);
    assert!(!out.status.success(), "the refresh cannot work: {}", describe(&out));
    wait_until("the refused unattended login", PATIENCE, || {
        let n = world.fake.api().counter("password_grants").unwrap();
        if n == 2 { Ok(()) } else { Err(format!("{n} password grants")) }
    });
    world.wait_for_state("main", "needs-login");

    // Three restarts, each after more than retry_max: the refused password is never sent again.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(3));
        assert!(world.stop_daemon().success());
        world.restart_daemon();
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(world.listed("main")["state"], "needs-login");
    }
    assert_eq!(
        world.fake.api().counter("password_grants").unwrap(),
        2,
        "one password attempt after the change, in all"
    );
    let entry = world.listed("main");
    let last_error = entry["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(last_error.contains("held") && last_error.contains("since"), "LastError says it is held: {entry}");
    let files = state_texts(&world);
    let hold = files.iter().find(|(name, _)| name == "main.hold").unwrap_or_else(|| panic!("a hold file: {files:?}"));
    for secret in [PASSWORD, NEW_PASSWORD, TOTP_SEED, USERNAME] {
        assert!(files.iter().all(|(_, text)| !text.contains(secret)), "the state directory holds a secret");
    }
    eprintln!("main.hold: {}", hold.1);

    // The operator writes the new password and reloads: other credentials lift the hold.
    world.secret_file("password", &format!("{NEW_PASSWORD}\n"));
    world.reload_daemon(&config);
    let token = wait_until("the login with the new password", PATIENCE, || world.get("main").map_err(|o| describe(&o)));
    assert!(world.fake.api().is_access_token_valid(&token).unwrap());
    assert_eq!(world.fake.api().counter("password_grants_ok").unwrap(), 2);
    assert!(!world.state_dir().join("main.hold").exists(), "the hold is gone with the new credentials");
}

#[test]
fn a_logout_outlives_restarts_until_a_login() {
    let mut world = World::new("logout-restart", &["--access-lifetime", "60s"]);
    let config = unattended_config(&world);
    world.start_daemon(&config, "debug");
    wait_until("the unattended login", PATIENCE, || world.get("main").map_err(|o| describe(&o)));
    let out = world.att_token(&["logout", "main"]);
    assert!(out.status.success(), "{}", describe(&out));
    for _ in 0..2 {
        assert!(world.stop_daemon().success());
        world.restart_daemon();
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(world.listed("main")["state"], "needs-login", "logged out stays logged out after a restart");
    }
    assert_eq!(world.fake.api().counter("password_grants").unwrap(), 1, "no unattended login after the logout");

    // A person's login ends it: after a restart the session is served, and a lost session is renewed unattended.
    world.login_ok("main");
    assert!(!world.state_dir().join("main.hold").exists(), "the login removed the hold");
    assert!(world.stop_daemon().success());
    world.restart_daemon();
    wait_until("the session after the restart", PATIENCE, || world.get("main").map_err(|o| describe(&o)));
    let grants = world.fake.api().counter("password_grants_ok").unwrap();
    assert!(world.fake.api().revoke_user_sessions(USERNAME).unwrap() >= 2);
    let out = world.att_token(&["refresh", "main"]);
    assert!(out.status.success(), "an unattended login replaces the refused session: {}", describe(&out));
    assert_eq!(world.fake.api().counter("password_grants_ok").unwrap(), grants + 1);
}

#[test]
fn a_refresh_refused_for_a_configuration_reason_keeps_the_session() {
    let mut world = World::new("client-refused", &["--access-lifetime", "60s"]);
    world.start_daemon(
        &ConfigText::new().refresh(&[("retry_initial", "1s"), ("retry_max", "3s")]).user("main"),
        "debug",
    );
    world.login_ok("main");
    let first = world.get("main").expect("a token after the login");
    world.fake.api().inject_fault(json!({"kind": "invalid_client", "times": 1, "path": "/login"})).unwrap();
    let out = world.att_token(&["refresh", "main"]);
    assert!(!out.status.success(), "the refused refresh fails: {}", describe(&out));
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(said.contains("client id") && said.contains("session is kept"), "the error says what and why: {said}");
    assert!(world.state_dir().join("main.json").exists(), "the session file is kept");
    assert_eq!(world.get("main").expect("the token in hand is still served"), first);
    // The next try, after the backoff, uses the same refresh token and works.
    let next = wait_until("a refreshed token", PATIENCE, || match world.get("main") {
        Ok(token) if token != first => Ok(token),
        Ok(_) => Err("the old token".to_owned()),
        Err(out) => Err(describe(&out)),
    });
    assert!(world.fake.api().is_access_token_valid(&next).unwrap());
    assert_eq!(world.fake.api().counter("password_grants").unwrap(), 1, "no login was needed");
}
