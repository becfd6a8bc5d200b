//! End to end, as separate processes: a refused password or MFA code, `get --min-valid` refreshing first,
//! `refresh` on demand and `logout` forgetting the session on disk.

use testbed::{ConfigText, PATIENCE, Proc};

use crate::support::world::{PASSWORD, USERNAME};
use crate::support::{World, bins, describe, exit, wait_until};

/// Access tokens live 60 s (`expires_in` 59); nothing refreshes by itself during this short test.
const FAKE_ARGS: &[&str] = &["--access-lifetime", "60s"];

/// `att-token login main` with the given password and code.
fn login_with(world: &World, password: &str, code: &str) -> std::process::Output {
    let mut command = bins().att_token(&world.bus.address);
    command.args(["login", "main", "--username", USERNAME, "--password-stdin", "--code", code]);
    testbed::output_with_stdin(command, &format!("{password}\n")).unwrap()
}

/// A code that is not the current one, nor a neighbour the fake would accept.
fn wrong_code(world: &World) -> String {
    let current: u32 = world.fake.api().current_totp(USERNAME).unwrap().parse().expect("a 6-digit code");
    format!("{:06}", (current + 500_000) % 1_000_000)
}

#[test]
fn refused_logins_min_valid_refresh_and_logout() {
    let mut world = World::new("session", FAKE_ARGS);
    world.start_daemon(&ConfigText::new().refresh(&[("safety_margin", "2s")]).user("main"), "debug");

    // A wrong password and a wrong code are refused, with NeedsLogin's status and one line on stderr.
    let out = login_with(&world, "not-the-password", &world.fake.api().current_totp(USERNAME).unwrap());
    assert_eq!(out.status.code(), Some(exit::NEEDS_LOGIN), "a wrong password is refused: {}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end().lines().count(), 1, "{}", describe(&out));
    let out = login_with(&world, PASSWORD, &wrong_code(&world));
    assert_eq!(out.status.code(), Some(exit::NEEDS_LOGIN), "a wrong MFA code is refused: {}", describe(&out));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(PASSWORD), "the error does not echo the password");
    assert_eq!(world.listed("main")["state"], "needs-login");

    world.login_ok("main");
    let first = world.get("main").expect("a token after login");
    let refreshes = world.fake.api().counter("refreshes_ok").unwrap();

    // Before half its life has passed, a token is not refreshed early for a caller: the answer says what it can
    // give now, and no refresh is spent.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let out = world.att_token(&["get", "main", "--min-valid", "56"]);
    assert_eq!(out.status.code(), Some(exit::UNAVAILABLE), "a young token is not refreshed early: {}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ask for at most"), "{}", describe(&out));
    assert_eq!(
        world.fake.api().counter("refreshes").unwrap(),
        0,
        "no refresh for a caller before half the token's life"
    );
    // Once the token is past half its life (28 s or less left), asking for that long (plus the 2 s margin) makes
    // the daemon refresh first; a fresh token (59 s) covers it.
    let left = wait_until("the login's token to age to 28 s left", PATIENCE + PATIENCE, || {
        let expires_at = world.listed("main")["expires_at"].as_i64().expect("expires_at is a number");
        let left = expires_at - unix_now();
        if left <= 28 { Ok(left) } else { Err(format!("{left} s left")) }
    });
    let out = world.att_token(&["get", "main", "--min-valid", &left.to_string()]);
    assert!(out.status.success(), "get --min-valid {left}: {}", describe(&out));
    let fresh = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_ne!(fresh, first, "--min-valid refreshed first");
    assert!(world.fake.api().is_access_token_valid(&fresh).unwrap());
    assert_eq!(world.fake.api().counter("refreshes_ok").unwrap(), refreshes + 1);

    // More than any token lives: no token is printed rather than one that lapses too soon, and no refresh is
    // spent finding that out.
    let refreshes = world.fake.api().counter("refreshes").unwrap();
    let out = world.att_token(&["get", "main", "--min-valid", "600"]);
    assert_eq!(out.status.code(), Some(exit::USAGE), "no 60 s token is valid for 600 s: {}", describe(&out));
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ask for at most"), "{}", describe(&out));
    assert_eq!(world.fake.api().counter("refreshes").unwrap(), refreshes, "no refresh for a wish no token can meet");

    // `refresh` on demand.
    let before = world.fake.api().counter("refreshes_ok").unwrap();
    let out = world.att_token(&["refresh", "main"]);
    assert!(out.status.success(), "att-token refresh main: {}", describe(&out));
    assert_eq!(world.fake.api().counter("refreshes_ok").unwrap(), before + 1, "one refresh per `att-token refresh`");
    let refreshed = world.get("main").expect("a token after refresh");
    assert!(world.fake.api().is_access_token_valid(&refreshed).unwrap());
    assert_eq!(world.fake.api().counter("refresh_reuses").unwrap(), 0);

    // `logout` forgets the session, on disk too.
    let out = world.att_token(&["logout", "main"]);
    assert!(out.status.success(), "att-token logout main: {}", describe(&out));
    assert_eq!(world.listed("main")["state"], "needs-login");
    let out = world.get("main").expect_err("no token after logout");
    assert_eq!(out.status.code(), Some(exit::NEEDS_LOGIN), "{}", describe(&out));
    let status = world.stop_daemon();
    assert!(status.success(), "SIGTERM stops the daemon cleanly: {status}");
    world.restart_daemon();
    assert_eq!(world.listed("main")["state"], "needs-login", "the session stays forgotten across a restart");

    // A second daemon on the same bus refuses to start, with a message, and the first one goes on serving. It has
    // its own state directory, so the bus name is what stops it (e2e_ownership covers a shared state directory).
    let config = world.config.clone().expect("a config was written");
    let text = std::fs::read_to_string(&config).expect("read the config");
    let own_state = world.scratch.path().join("second-state");
    let text = text.replace(&world.state_dir().display().to_string(), &own_state.display().to_string());
    assert!(text.contains("second-state"), "the second config names its own state directory: {text}");
    let config = world.scratch.write("second.toml", &text, 0o600).unwrap();
    let mut command = std::process::Command::new(&bins().tokend);
    command.arg("--config").arg(&config).env_remove("NOTIFY_SOCKET");
    let mut second = Proc::spawn("second-att-tokend", command, world.scratch.path()).unwrap();
    let status = wait_until("the second daemon to give up", PATIENCE, || second.try_status().ok_or(String::new()));
    assert!(!status.success(), "a second daemon exits with an error: {status}");
    let stderr = second.stderr();
    assert!(stderr.contains("io.allthingstalk.TokenAgent1"), "the message names the bus name: {stderr}");
    assert_eq!(world.listed("main")["state"], "needs-login", "the first daemon still answers");
}

fn unix_now() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    i64::try_from(now.as_secs()).expect("fits")
}
