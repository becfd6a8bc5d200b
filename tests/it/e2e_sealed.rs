//! End to end, as separate processes: sessions sealed with a state key hold no byte of any token, resume after a
//! restart with the same key, are left intact (and ask for a login, saying why) without the key or with another,
//! are set aside when found in clear (until `--rekey` adopts them), refuse a swapped or altered file, and follow `att-tokend --rekey`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use att_tokend::seal::{self, StateKey};
use testbed::ConfigText;

use crate::support::{World, bins, describe, fast_main, wait_until};

/// Access tokens live 8 s at the fake; with a 2 s margin the daemon refreshes about every 5 s.
const FAKE_ARGS: &[&str] = &["--access-lifetime", "8s"];

/// Writes 32 random bytes to `name` in the scratch directory, mode 0600, and returns the path.
fn new_key(world: &World, name: &str) -> PathBuf {
    let mut bytes = [0_u8; seal::KEY_LEN];
    let mut urandom = std::fs::File::open("/dev/urandom").expect("/dev/urandom");
    std::io::Read::read_exact(&mut urandom, &mut bytes).expect("32 random bytes");
    let path = world.scratch.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The config's `[daemon]` key line (the generated config ends in `[daemon]`), then `rest`.
fn with_key(key: Option<&Path>, rest: &ConfigText) -> String {
    match key {
        Some(key) => format!("state_key_file = \"{}\"\n\n{rest}", key.display()),
        None => rest.to_string(),
    }
}

/// The session record of `name`, opened with the key file the way the daemon opens it.
fn open_record(world: &World, key: &Path, name: &str) -> serde_json::Value {
    let key = StateKey::read(key, true).expect("the key file");
    let bytes = std::fs::read(world.state_dir().join(format!("{name}.json"))).expect("the session file");
    let plaintext = seal::open(&key, name, &bytes).expect("the session file opens with its key");
    serde_json::from_slice(&plaintext).expect("a JSON record inside")
}

/// Every file in the state directory, with its bytes.
fn state_files(world: &World) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(world.state_dir())
        .expect("the state directory")
        .flatten()
        .map(|entry| (entry.path(), std::fs::read(entry.path()).unwrap_or_default()))
        .collect();
    files.sort();
    files
}

/// Fails when any state file holds any 8-byte piece of any of `secrets`.
fn assert_no_piece_of(world: &World, secrets: &[String]) {
    for (path, bytes) in state_files(world) {
        for secret in secrets {
            assert!(secret.len() >= 8, "a token is at least 8 bytes");
            for piece in secret.as_bytes().windows(8) {
                assert!(
                    !bytes.windows(8).any(|w| w == piece),
                    "{} holds a piece of a token: {:?}",
                    path.display(),
                    String::from_utf8_lossy(piece)
                );
            }
        }
    }
}

/// The state files whose name contains `label`.
fn aside(world: &World, label: &str) -> Vec<PathBuf> {
    state_files(world)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(label))
        .collect()
}

fn last_error(world: &World, name: &str) -> String {
    world.listed(name)["last_error"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_sealed_state_holds_no_piece_of_any_token_and_resumes_with_the_same_key() {
    let mut world = World::new("sealed", FAKE_ARGS);
    let key = new_key(&world, "state.key");
    world.start_daemon(&with_key(Some(&key), &fast_main()), "debug");
    let out = world.att_token(&["list"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("unsealed"), "sealed: no note, {}", describe(&out));
    assert!(world.daemon_logs().contains("user sessions are sealed with the state key"), "{}", world.daemon_logs());

    world.login_ok("main");
    let mut access = Vec::new();
    let mut refresh = Vec::new();
    wait_until("4 access tokens through refreshes", std::time::Duration::from_secs(80), || {
        let token = world.get("main").map_err(|out| describe(&out))?;
        if access.last() != Some(&token) {
            access.push(token);
            let record = open_record(&world, &key, "main");
            let held = record["refresh_token"].as_str().expect("a refresh token in the record").to_owned();
            if !refresh.contains(&held) {
                refresh.push(held);
            }
            let secrets: Vec<String> = access.iter().chain(&refresh).cloned().collect();
            assert_no_piece_of(&world, &secrets);
        }
        if access.len() >= 4 { Ok(()) } else { Err(format!("{} so far", access.len())) }
    });
    assert!(refresh.len() >= 2, "the refresh token rotated: {} seen", refresh.len());
    let bytes = std::fs::read(world.state_dir().join("main.json")).unwrap();
    assert!(bytes.starts_with(seal::MAGIC), "the session file is sealed");

    // Restart with the same key: the session goes on, no login.
    let logins = world.fake.api().counter("password_grants").unwrap();
    assert!(world.stop_daemon().success());
    world.restart_daemon();
    let token = world.get("main").unwrap_or_else(|out| panic!("served after a restart: {}", describe(&out)));
    assert!(world.fake.api().is_access_token_valid(&token).unwrap());
    assert_eq!(world.fake.api().counter("password_grants").unwrap(), logins, "resumed without a login");
    access.push(token);
    assert_no_piece_of(&world, &access);
}

#[test]
fn a_clear_file_is_set_aside_until_rekey_adopts_it_and_a_missing_or_different_key_leaves_it_intact() {
    let mut world = World::new("sealed-keys", FAKE_ARGS);
    world.start_daemon(&with_key(None, &fast_main()), "debug");
    // Without a key the daemon says so: at start, in `att-token list`, and in a property.
    assert!(world.daemon_logs().contains("stored unsealed"), "{}", world.daemon_logs());
    let out = world.att_token(&["list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsealed"), "list notes it: {}", describe(&out));
    world.login_ok("main");
    assert!(world.stop_daemon().success());
    let clear = std::fs::read_to_string(world.state_dir().join("main.json")).expect("a clear session file");
    let record: serde_json::Value = serde_json::from_str(&clear).expect("clear JSON");
    let secrets: Vec<String> =
        ["refresh_token", "access_token"].map(|field| record[field].as_str().unwrap().to_owned()).into();

    // With a key, a clear file is not used (whoever can write the state directory could have planted it): it is
    // set aside, bytes intact, and the token asks for a login, saying why and how to adopt the file.
    let key_a = new_key(&world, "a.key");
    world.write_config(&with_key(Some(&key_a), &fast_main()));
    world.restart_daemon();
    world.wait_for_state("main", "needs-login");
    let reason = last_error(&world, "main");
    assert!(reason.contains("in clear") && reason.contains("--rekey") && reason.contains(".unsealed-"), "{reason}");
    assert!(world.stop_daemon().success());
    let aside = state_files(&world)
        .into_iter()
        .map(|(p, _)| p)
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("main.json.unsealed-"))
        .expect("the clear file is set aside");
    assert_eq!(std::fs::read_to_string(&aside).unwrap(), clear, "its bytes are intact");

    // Its owner adopts it: moved back and sealed with `att-tokend --rekey` (the same key as old and new).
    std::fs::rename(&aside, world.state_dir().join("main.json")).unwrap();
    let config = world.config.clone().unwrap();
    let out = std::process::Command::new(&bins().tokend)
        .arg("--config")
        .arg(&config)
        .arg("--rekey")
        .arg(&key_a)
        .arg("--old-key-file")
        .arg(&key_a)
        .output()
        .unwrap();
    assert!(out.status.success(), "att-tokend --rekey: {}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 clear ones sealed"), "{}", describe(&out));
    world.restart_daemon();
    world.wait_for_state("main", "valid");
    assert_no_piece_of(&world, &secrets);
    let names: Vec<String> =
        state_files(&world).iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into()).collect();
    assert_eq!(names, [".lock", "main.json"], "the clear file is replaced, no copy left");
    assert!(world.stop_daemon().success());
    let sealed = std::fs::read(world.state_dir().join("main.json")).unwrap();
    assert!(sealed.starts_with(seal::MAGIC));

    // No key: left in place, needs-login, and the reason says the key is missing and how to restore it.
    world.write_config(&with_key(None, &fast_main()));
    world.restart_daemon();
    world.wait_for_state("main", "needs-login");
    let reason = last_error(&world, "main");
    assert!(reason.contains("has no state key") && reason.contains("restore the key"), "{reason}");
    assert!(world.stop_daemon().success());
    assert_eq!(std::fs::read(world.state_dir().join("main.json")).unwrap(), sealed, "the file is intact");

    // Another key: the same.
    let key_b = new_key(&world, "b.key");
    world.write_config(&with_key(Some(&key_b), &fast_main()));
    world.restart_daemon();
    world.wait_for_state("main", "needs-login");
    let reason = last_error(&world, "main");
    assert!(reason.contains("another state key") && reason.contains("put back the key"), "{reason}");
    assert!(world.stop_daemon().success());
    assert_eq!(std::fs::read(world.state_dir().join("main.json")).unwrap(), sealed, "the file is intact");

    // `att-tokend --rekey` seals it under key B; the daemon with key B resumes the session.
    let config = world.config.clone().unwrap();
    let out = std::process::Command::new(&bins().tokend)
        .arg("--config")
        .arg(&config)
        .arg("--rekey")
        .arg(&key_b)
        .arg("--old-key-file")
        .arg(&key_a)
        .output()
        .unwrap();
    assert!(out.status.success(), "att-tokend --rekey: {}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 session files sealed again"), "{}", describe(&out));
    world.restart_daemon();
    world.wait_for_state("main", "valid");
    world.get("main").unwrap_or_else(|out| panic!("served under the new key: {}", describe(&out)));
}

#[test]
fn a_swapped_or_altered_sealed_file_is_refused_and_set_aside() {
    let mut world = World::new("sealed-swap", FAKE_ARGS);
    let key = new_key(&world, "state.key");
    let tokens = fast_main().user("second");
    world.start_daemon(&with_key(Some(&key), &tokens), "debug");
    world.login_ok("main");
    world.login_ok("second");
    assert!(world.stop_daemon().success());
    let dir = world.state_dir();

    // main's file under second's name: refused, set aside; main itself is untouched.
    let main_bytes = std::fs::read(dir.join("main.json")).unwrap();
    std::fs::write(dir.join("second.json"), &main_bytes).unwrap();
    world.restart_daemon();
    world.wait_for_state("main", "valid");
    world.wait_for_state("second", "needs-login");
    let reason = last_error(&world, "second");
    assert!(reason.contains("another token's file") && reason.contains("log in again"), "{reason}");
    assert!(world.stop_daemon().success());
    let swapped = aside(&world, "second.json.corrupt-");
    assert_eq!(swapped.len(), 1, "set aside once");
    assert_eq!(std::fs::read(&swapped[0]).unwrap(), main_bytes, "with its bytes");

    // One byte flipped in main's file: refused and set aside, bytes intact.
    let mut altered = std::fs::read(dir.join("main.json")).unwrap();
    let middle = altered.len() / 2;
    altered[middle] ^= 0x01;
    std::fs::write(dir.join("main.json"), &altered).unwrap();
    world.restart_daemon();
    world.wait_for_state("main", "needs-login");
    let reason = last_error(&world, "main");
    assert!(reason.contains("altered, damaged"), "{reason}");
    let flipped = aside(&world, "main.json.corrupt-");
    assert_eq!(flipped.len(), 1, "set aside once");
    assert_eq!(std::fs::read(&flipped[0]).unwrap(), altered, "with its bytes");
}
