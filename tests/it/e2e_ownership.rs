//! End to end, as separate processes: a second `att-tokend` on the same state directory (even on another bus)
//! exits before it reads a session or calls the cloud, naming the daemon that holds the directory; and a saved
//! session is never sent to another cloud instance or with another `client_id` than the one it was made with.

use std::path::{Path, PathBuf};
use std::process::Command;

use testbed::{Bus, ConfigText, Fake, PATIENCE, Proc, Scratch};

use crate::support::world::{PASSWORD, TOTP_SEED, USERNAME};
use crate::support::{World, bins, describe, exit, wait_until};

/// Writes a config for `world`'s daemon naming `url`, `client_id` and `bus`, with the world's state directory,
/// the user token `main`, then `rest`. Nothing refreshes or probes by itself while a test counts the cloud's
/// requests, and a restarted daemon refreshes at once.
fn write_config(world: &mut World, file: &str, url: &str, client_id: &str, bus: &str, rest: &str) -> PathBuf {
    let text = ConfigText::new()
        .api(url)
        .line(&format!("client_id = \"{client_id}\""))
        .daemon(bus, &world.state_dir())
        .fleet_at_once()
        .maintenance_off()
        .user("main");
    world.scratch.write(file, format!("{text}{rest}"), 0o600).unwrap()
}

/// Runs the daemon on `world`'s own cloud with `client_id`, logs `main` in and stops the daemon; the saved
/// session file's bytes.
fn saved_session(world: &mut World, client_id: &str) -> Vec<u8> {
    let (url, bus) = (world.fake.url.clone(), world.bus.address.clone());
    world.config = Some(write_config(world, "config.toml", &url, client_id, &bus, ""));
    world.restart_daemon();
    world.login_ok("main");
    assert!(world.stop_daemon().success(), "the daemon stops cleanly");
    std::fs::read(world.state_dir().join("main.json")).expect("the session is saved")
}

/// The saved session's refresh token, read from the file's JSON.
fn refresh_token_in(bytes: &[u8]) -> String {
    let json: serde_json::Value = serde_json::from_slice(bytes).expect("the session file is JSON");
    json["refresh_token"].as_str().expect("the session file holds a refresh_token string").to_owned()
}

/// The one file in `dir` whose name starts with `prefix`.
fn only_file_starting_with(dir: &Path, prefix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list the state directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        .collect();
    assert_eq!(found.len(), 1, "one file named {prefix}* in {}: {found:?}", dir.display());
    found.into_iter().next().expect("one file")
}

#[test]
fn a_second_daemon_on_the_same_state_directory_exits_naming_the_first() {
    let mut world = World::new("ownership", &[]);
    let url = world.fake.url.clone();
    let bus = world.bus.address.clone();
    let config = write_config(&mut world, "config.toml", &url, "web", &bus, "");
    world.config = Some(config);
    world.restart_daemon();
    world.login_ok("main");
    let token = world.get("main").expect("a token after login");
    let first_pid = world.daemon.as_ref().expect("the daemon runs").proc.pid();
    let session_file = world.state_dir().join("main.json");
    let session_before = std::fs::read(&session_file).expect("the session is saved");

    // The second daemon serves another private bus, so the bus name is not what stops it. It also has a token
    // with unattended login, which it would log in at once if it got that far.
    let other_scratch = Scratch::new("e2e-ownership-bus").unwrap();
    let other_bus = Bus::start(&other_scratch).unwrap();
    let spare = format!("\n{}", world.unattended_user(ConfigText::new(), "spare"));
    let second_config = write_config(&mut world, "second.toml", &url, "web", &other_bus.address, &spare);
    let counters_before = world.fake.api().counters().unwrap();

    let mut command = Command::new(&bins().tokend);
    command.arg("--config").arg(&second_config).env("RUST_LOG", "debug").env_remove("NOTIFY_SOCKET");
    let mut second = Proc::spawn("second-att-tokend", command, world.scratch.path()).unwrap();
    let status = wait_until("the second att-tokend to exit", PATIENCE, || {
        if let Some(status) = second.try_status() {
            return Ok(status);
        }
        let serving = bins().att_token(&other_bus.address).arg("list").output().is_ok_and(|out| out.status.success());
        assert!(!serving, "a second att-tokend started serving on the same state directory:\n{}", second.stderr());
        Err("still running".to_owned())
    });
    let stderr = second.stderr();
    assert!(!status.success(), "the second att-tokend exits with an error: {status}; stderr:\n{stderr}");
    assert!(stderr.contains(&format!("pid {first_pid}")), "the message names the holder's pid {first_pid}:\n{stderr}");
    assert!(stderr.contains("att-tokend"), "the message names the holder's command:\n{stderr}");
    assert!(stderr.contains(&world.state_dir().display().to_string()), "the message names the directory:\n{stderr}");
    assert!(stderr.contains("state_dir"), "the message says what to do:\n{stderr}");

    assert_eq!(world.fake.api().counters().unwrap(), counters_before, "the second att-tokend sent the cloud nothing");
    assert_eq!(std::fs::read(&session_file).expect("the session file stays"), session_before);
    assert_eq!(world.get("main").expect("the first daemon still serves"), token);

    // The lock belongs to the process, not the file: after the first daemon stops, the next one starts.
    assert!(world.stop_daemon().success(), "the first daemon stops cleanly");
    assert!(world.state_dir().join(".lock").exists(), "the lock file stays; only the lock counts");
    let logins = world.fake.api().counter("password_grants").unwrap();
    world.restart_daemon();
    // The saved token itself, or (when the kernel does not report the clock synchronised) a fresh one from it.
    let served = wait_until("the restarted daemon to serve the saved session", PATIENCE, || {
        world.get("main").map_err(|out| crate::support::describe(&out))
    });
    assert!(
        served == token || world.fake.api().is_access_token_valid(&served).unwrap(),
        "a token of the saved session"
    );
    assert_eq!(world.fake.api().counter("password_grants").unwrap(), logins, "the saved session, not a new login");
}

/// What the daemon says and does after a restart with a config naming another instance or client.
fn assert_set_aside_and_unsent(world: &World, clouds: &[&Fake], session_before: &[u8], expected: &[&str]) {
    let counters_before: Vec<serde_json::Value> = clouds.iter().map(|c| c.api().counters().unwrap()).collect();
    let entry = world.wait_for_state("main", "needs-login");
    let last_error = entry["last_error"].as_str().unwrap_or_else(|| panic!("list --json has last_error: {entry}"));
    let moved = only_file_starting_with(&world.state_dir(), "main.json.other-instance-");
    for word in expected.iter().copied().chain(["att-token login main", "main.json"]) {
        assert!(last_error.contains(word), "last_error names {word:?}: {last_error}");
    }
    assert!(last_error.contains(&moved.display().to_string()), "last_error names {}: {last_error}", moved.display());

    // Asking for a refresh does not send the old session anywhere either.
    let out = world.att_token(&["refresh", "main"]);
    assert_eq!(out.status.code(), Some(exit::NEEDS_LOGIN), "refresh needs a login: {}", describe(&out));
    for (cloud, before) in clouds.iter().zip(&counters_before) {
        let after = cloud.api().counters().unwrap();
        assert_eq!(after["refreshes"], before["refreshes"], "no refresh reached {}: {after}", cloud.url);
        assert_eq!(after["requests_total"], before["requests_total"], "no request reached {}: {after}", cloud.url);
    }

    // The session is kept, bytes intact, and its refresh token was never spent.
    assert!(!world.state_dir().join("main.json").exists(), "main.json was moved aside");
    let kept = std::fs::read(&moved).expect("read the set-aside file");
    assert_eq!(kept, session_before, "the set-aside file holds the session's bytes");
    let refresh_token = refresh_token_in(&kept);
    assert!(
        clouds[0].api().is_refresh_token_valid(&refresh_token).unwrap(),
        "the old cloud still accepts the kept refresh token"
    );
}

#[test]
fn a_session_made_with_another_client_id_is_set_aside_not_sent() {
    let mut world = World::new("other-client", &["--client-id", "web", "--client-id", "mobile"]);
    let (url, bus) = (world.fake.url.clone(), world.bus.address.clone());
    let session_before = saved_session(&mut world, "web");

    world.config = Some(write_config(&mut world, "config.toml", &url, "mobile", &bus, ""));
    world.restart_daemon();
    assert_set_aside_and_unsent(&world, &[&world.fake], &session_before, &["\"web\"", "\"mobile\"", "client_id"]);

    // Logging in again makes a session for the configured client.
    world.login_ok("main");
    assert_eq!(world.listed("main")["state"], "valid");
}

#[test]
fn a_session_made_with_another_instance_is_set_aside_not_sent() {
    let mut world = World::new("other-instance", &[]);
    let other =
        Fake::start(&bins().fake, &world.scratch, &["--user".to_owned(), format!("{USERNAME}:{PASSWORD}:{TOTP_SEED}")])
            .unwrap();
    let (url, bus) = (world.fake.url.clone(), world.bus.address.clone());
    let session_before = saved_session(&mut world, "web");

    world.config = Some(write_config(&mut world, "config.toml", &other.url, "web", &bus, ""));
    world.restart_daemon();
    assert_set_aside_and_unsent(&world, &[&world.fake, &other], &session_before, &[&url, &other.url, "[api] url"]);
}
