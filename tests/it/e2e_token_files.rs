//! End to end, as separate processes under different uids: token files hold the current token through refreshes
//! and are read by the token's readers only, reloads and restarts move and delete them (never one the daemon did
//! not write), and a verdict (logout, a revoked device token) removes them.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use testbed::{ConfigText, PATIENCE};

use crate::support::{World, describe, fast_main, wait_until};

/// A reader by user name; its primary group is not a reader.
const READER: &str = "nobody";
/// A reader through its primary group `sys` only (the config names the group, not the user).
const GROUP_READER: &str = "sys";
/// Neither: the account `daemon` (uid 1, gid 1).
const STRANGER: &str = "daemon";

/// Access tokens live 8 s at the fake; with a 2 s margin the daemon refreshes about every 5 s.
const FAKE_ARGS: &[&str] = &["--access-lifetime", "8s"];

/// A directory for token files, as systemd makes `RuntimeDirectory=att-tokend` (mode 0711).
fn runtime_dir(world: &World) -> PathBuf {
    let dir = world.scratch.path().join("run");
    if !dir.exists() {
        std::fs::create_dir(&dir).expect("create the runtime directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).expect("chmod the runtime directory");
    }
    dir
}

/// `cat PATH` as `user` (its uid and primary gid, no supplementary groups): the bytes, or what cat said.
fn read_as(user: &str, path: &Path) -> Result<Vec<u8>, String> {
    let out = testbed::as_user(user, "cat")
        .unwrap()
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv (util-linux)");
    if out.status.success() { Ok(out.stdout) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test reads token files as other users with setpriv: run the test suite as root (CI does)"
    );
}

fn wait_gone(path: &Path, why: &str) {
    wait_until(&format!("{} to be removed ({why})", path.display()), PATIENCE, || {
        if path.exists() { Err("still there".to_owned()) } else { Ok(()) }
    });
}

fn wait_holding(path: &Path, expected: &str) {
    wait_until(&format!("{} to hold the token", path.display()), PATIENCE, || match std::fs::read(path) {
        Ok(bytes) if bytes == expected.as_bytes() => Ok(()),
        Ok(bytes) => Err(format!("holds {} bytes, not the token", bytes.len())),
        Err(e) => Err(e.to_string()),
    });
}

#[test]
fn a_token_file_follows_every_refresh_and_only_readers_can_open_it() {
    assert_root();
    let mut world = World::new("files", FAKE_ARGS);
    let file = runtime_dir(&world).join("main.token");
    let config = fast_main()
        .line(&format!("readers = {{ users = [\"{READER}\"], groups = [\"{GROUP_READER}\"] }}"))
        .line(&format!("files = [\"{}\"]", file.display()));
    world.start_daemon(&config, "debug");
    assert!(!file.exists(), "no file while the token needs a login");

    world.login_ok("main");
    let first = world.get("main").expect("the token is served after login");
    wait_holding(&file, &first);

    // Owned by the daemon's user, no access for others; the group bits show the ACL's mask (r--).
    let mode = std::fs::metadata(&file).expect("stat the token file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "mode 0600 plus the readers' ACL entries (mask r--), nothing for others");
    assert_eq!(read_as(GROUP_READER, &file).expect("a reader by group reads the file"), first.as_bytes());
    let denied = read_as(STRANGER, &file).expect_err("a stranger cannot open the file");
    assert!(denied.contains("Permission denied"), "EACCES for a stranger: {denied}");

    // A reader polls the file through several refreshes: every read is a whole token the cloud accepts, and the
    // file always exists (a rename replaces it; it is never missing or half written).
    let mut seen: Vec<String> = Vec::new();
    let mut reads = 0_u64;
    wait_until("five tokens in the file", Duration::from_secs(120), || {
        let bytes = read_as(READER, &file).unwrap_or_else(|e| panic!("read #{} as the reader failed: {e}", reads + 1));
        reads += 1;
        let token = String::from_utf8(bytes).expect("the file holds UTF-8");
        assert!(!token.is_empty() && !token.ends_with('\n'), "exactly the token, no newline (read #{reads})");
        assert!(
            world.fake.api().is_access_token_valid(&token).unwrap(),
            "read #{reads} found a token the cloud does not accept (partial, expired or unknown); {} seen before",
            seen.len()
        );
        if seen.last() != Some(&token) {
            assert!(!seen.contains(&token), "an older token came back after a newer one");
            seen.push(token);
        }
        if seen.len() >= 5 { Ok(()) } else { Err(format!("{} tokens seen in {reads} reads", seen.len())) }
    });
    println!(
        "token files: {reads} reads by a reader saw {} tokens ({} rotations), none partial or invalid",
        seen.len(),
        seen.len() - 1
    );
    // The file and D-Bus agree.
    wait_until("the file to hold what GetToken serves", PATIENCE, || {
        let served = world.get("main").map_err(|out| describe(&out))?;
        let held = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        if served == held { Ok(()) } else { Err("they differ".to_owned()) }
    });

    // A verdict: after a logout nothing is served, and the file is gone.
    let out = world.att_token(&["logout", "main"]);
    assert!(out.status.success(), "logout: {}", describe(&out));
    wait_gone(&file, "logout");
    let logs = world.daemon_logs();
    for token in &seen {
        assert!(!logs.contains(token.as_str()), "a token appears in the daemon's log");
    }
}

#[test]
fn reloads_and_restarts_move_and_delete_files_and_a_revoked_token_loses_its_file() {
    assert_root();
    const DEVICE: &str = "FilesDevice0000000000001";
    const TOKEN: &str = "maker:4FilesDeviceToken";
    let device_arg = format!("{TOKEN}={DEVICE}");
    let mut world = World::new("files-reload", &["--device-token", &device_arg]);
    let token_file = world.secret_file("device.token", TOKEN);
    let run = runtime_dir(&world);
    let (a, b) = (run.join("a.token"), run.join("b.token"));
    let config = |files: &[&Path], health: &str| {
        let files: Vec<String> = files.iter().map(|f| format!("\"{}\"", f.display())).collect();
        ConfigText::new()
            .maintenance(health, "off", "off")
            .device("sensor", DEVICE, &token_file)
            .line(&format!("readers = {{ users = [\"{READER}\"] }}"))
            .line(&format!("files = [{}]", files.join(", ")))
    };
    world.start_daemon(&config(&[&a], "off"), "debug");
    wait_holding(&a, TOKEN);
    assert_eq!(read_as(READER, &a).expect("the reader reads it"), TOKEN.as_bytes());
    assert!(read_as(STRANGER, &a).is_err(), "a stranger cannot");

    // A reload moves the file: the new one is written, the old one deleted.
    world.reload_daemon(&config(&[&b], "off"));
    wait_holding(&b, TOKEN);
    wait_gone(&a, "moved by a reload");

    // Someone replaces b with a file of their own; when the config drops b, the daemon leaves that file alone.
    std::fs::remove_file(&b).unwrap();
    std::fs::write(&b, "theirs").unwrap();
    world.reload_daemon(&config(&[&a], "off"));
    wait_holding(&a, TOKEN);
    let manifest = world.state_dir().join("token-files.manifest");
    wait_until("the manifest to forget b", PATIENCE, || {
        let text = std::fs::read_to_string(&manifest).map_err(|e| e.to_string())?;
        if text.contains("b.token") { Err(text) } else { Ok(()) }
    });
    assert_eq!(std::fs::read(&b).unwrap(), b"theirs", "a file the daemon did not write is never deleted");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(!text.contains(TOKEN) && !text.contains("4FilesDevice"), "the manifest holds no token: {text}");

    // A restart with the file gone from the config deletes it; one with it back writes it again.
    world.stop_daemon();
    assert!(a.exists(), "a stop leaves the file (systemd removes the runtime directory on stop)");
    world.start_daemon(&config(&[], "off"), "debug");
    wait_gone(&a, "dropped from the config across a restart");
    world.stop_daemon();
    world.start_daemon(&config(&[&a], "* * * * * *"), "debug");
    wait_holding(&a, TOKEN);

    // A verdict: the cloud revokes the token, the health probe finds it, and the file goes.
    assert!(world.fake.api().revoke(TOKEN).unwrap(), "the fake knew the device token");
    world.wait_for_state("sensor", "revoked");
    wait_gone(&a, "revoked");
    let files: BTreeSet<String> =
        std::fs::read_dir(&run).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(files, BTreeSet::from(["b.token".to_owned()]), "no temp file or other leftover in {}", run.display());
}
