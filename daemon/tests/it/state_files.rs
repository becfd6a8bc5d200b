//! The state directory on a real file system: round trips, modes, atomic replacement, leftovers, corrupt files.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use att_tokend::state::{FORMAT_VERSION, LOCK_FILE, LoadOutcome, Origin, SessionRecord, StateDir};
use token_model::ids::{ClientId, TokenName};
use token_model::plan::{PersistedSession, Rotation};
use token_model::secret::{AccessToken, ExposeSecret, RefreshToken};
use token_model::time::{ClockOffset, WallTime};

fn name(text: &str) -> TokenName {
    TokenName::new(text).unwrap()
}

const URL: &str = "https://api.allthingstalk.io";

/// The instance and client the records below were made with.
fn origin() -> Origin {
    Origin::new(URL, ClientId::new("mobile").unwrap())
}

fn record(token: &str, refresh: &str) -> SessionRecord {
    SessionRecord {
        version: FORMAT_VERSION,
        name: name(token),
        username: "alice@example.com".into(),
        client_id: ClientId::new("mobile").unwrap(),
        api_url: Some(URL.to_owned()),
        refresh_token: RefreshToken::new(refresh),
        access_token: AccessToken::new("at-secret-1"),
        session: PersistedSession {
            known_good: Some(WallTime::from_unix_seconds(1_800_000_100)),
            access_obtained: Some(WallTime::from_unix_seconds(1_800_000_000)),
            access_expires: Some(WallTime::from_unix_seconds(1_800_003_599)),
            refresh_expires: Some(WallTime::from_unix_seconds(1_805_184_000)),
            refresh_expires_server: Some(WallTime::from_unix_seconds(1_805_183_997)),
            rotation: Rotation::Fixed,
            refresh_rejected: false,
            relogin_rejected: false,
            lapse_warned_secs: Some(604_800),
            clock_offset: Some(ClockOffset::from_millis(-3_000)),
            retry_not_before: None,
        },
        refresh_sent_at: None,
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

/// The directory's files, but for the lock file every opened directory has.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != LOCK_FILE)
        .collect();
    names.sort();
    names
}

#[test]
fn round_trip_with_private_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("nested/state");
    let dir = StateDir::open(&path).unwrap();
    assert_eq!(mode(&path), 0o700);
    assert_eq!(mode(&path.join(LOCK_FILE)), 0o600);

    let saved = record("main", "rt-secret-1");
    dir.save(&saved).unwrap();
    let file = path.join("main.json");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(entries(&path), ["main.json"]);

    let LoadOutcome::Loaded(back) = dir.load(&name("main"), &origin(), 1_800_000_200) else {
        panic!("expected a session")
    };
    assert_eq!(*back, saved);
    assert_eq!(back.refresh_token.expose_secret(), "rt-secret-1");
    assert_eq!(back.client_id.as_str(), "mobile");
    // The planner's facts come back whole: the warning already given and the server's view of the window.
    assert_eq!(back.session.lapse_warned_secs, Some(604_800));
    assert_eq!(back.session.refresh_expires_server, saved.session.refresh_expires_server);

    // Debug of a record never shows a token.
    let debug = format!("{back:?}");
    assert!(!debug.contains("rt-secret-1") && !debug.contains("at-secret-1"), "{debug}");
}

#[test]
fn replacing_keeps_one_file_and_the_newest_content() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    for i in 0..20 {
        dir.save(&record("main", &format!("rt-{i}"))).unwrap();
    }
    assert_eq!(entries(tmp.path()), ["main.json"]);
    let LoadOutcome::Loaded(back) = dir.load(&name("main"), &origin(), 0) else { panic!("expected a session") };
    assert_eq!(back.refresh_token.expose_secret(), "rt-19");
    assert_eq!(mode(&tmp.path().join("main.json")), 0o600);
}

#[test]
fn a_loose_session_file_is_tightened_on_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    dir.save(&record("main", "rt")).unwrap();
    let file = tmp.path().join("main.json");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(dir.load(&name("main"), &origin(), 0), LoadOutcome::Loaded(_)));
    assert_eq!(mode(&file), 0o600);
}

#[test]
fn missing_session_and_logout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    assert!(matches!(dir.load(&name("main"), &origin(), 0), LoadOutcome::Missing));
    dir.save(&record("main", "rt")).unwrap();
    dir.save(&record("other", "rt")).unwrap();
    assert!(dir.remove(&name("main")).unwrap());
    assert!(!dir.remove(&name("main")).unwrap());
    assert!(matches!(dir.load(&name("main"), &origin(), 0), LoadOutcome::Missing));
    assert_eq!(entries(tmp.path()), ["other.json"]);
}

#[test]
fn loose_directory_is_tightened_and_leftover_temp_files_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state");
    fs::create_dir(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(path.join(".main.json.tmp-123-0"), b"{\"half").unwrap();
    fs::write(path.join("main.json.corrupt-5"), b"kept").unwrap();
    let dir = StateDir::open(&path).unwrap();
    assert_eq!(mode(&path), 0o700);
    assert_eq!(entries(&path), ["main.json.corrupt-5"]);
    dir.save(&record("main", "rt")).unwrap();
    assert_eq!(entries(&path), ["main.json", "main.json.corrupt-5"]);
}

#[test]
fn a_plain_file_in_place_of_the_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state");
    fs::write(&path, b"x").unwrap();
    let message = StateDir::open(&path).unwrap_err().to_string();
    assert!(message.contains("not a directory") && message.contains("state_dir"), "{message}");
}

#[test]
fn corrupt_file_is_set_aside_with_its_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    let garbage = b"{\"version\":1,\"name\":\"main\",\"refresh_token\":\"rt-secret-9\"".to_vec();
    fs::write(tmp.path().join("main.json"), &garbage).unwrap();
    let LoadOutcome::SetAside { reason, moved_to } = dir.load(&name("main"), &origin(), 1_800_000_000) else {
        panic!("expected the file to be set aside")
    };
    assert_eq!(moved_to, tmp.path().join("main.json.corrupt-1800000000"));
    assert_eq!(fs::read(&moved_to).unwrap(), garbage);
    assert!(!reason.contains("rt-secret-9"), "{reason}");
    assert!(matches!(dir.load(&name("main"), &origin(), 1_800_000_001), LoadOutcome::Missing));
    // A new login can be stored next to the set-aside file.
    dir.save(&record("main", "rt")).unwrap();
    assert!(matches!(dir.load(&name("main"), &origin(), 0), LoadOutcome::Loaded(_)));
}

#[test]
fn a_file_for_another_name_is_set_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    dir.save(&record("other", "rt")).unwrap();
    fs::rename(tmp.path().join("other.json"), tmp.path().join("main.json")).unwrap();
    let LoadOutcome::SetAside { reason, .. } = dir.load(&name("main"), &origin(), 7) else {
        panic!("expected set aside")
    };
    assert!(reason.contains("\"other\""), "{reason}");
}

#[test]
fn a_newer_format_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    let text = format!("{{\"version\": {}, \"future\": true}}", FORMAT_VERSION + 1);
    fs::write(tmp.path().join("main.json"), &text).unwrap();
    let LoadOutcome::TooNew { version } = dir.load(&name("main"), &origin(), 0) else { panic!("expected TooNew") };
    assert_eq!(version, FORMAT_VERSION + 1);
    assert_eq!(fs::read_to_string(tmp.path().join("main.json")).unwrap(), text);
}

#[test]
fn a_refresh_on_its_way_is_recorded_and_files_without_the_mark_still_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    let mut marked = record("main", "rt-secret-1");
    marked.refresh_sent_at = Some(1_800_000_300);
    dir.save(&marked).unwrap();
    let LoadOutcome::Loaded(back) = dir.load(&name("main"), &origin(), 1_800_000_400) else {
        panic!("expected a session")
    };
    assert_eq!(back.refresh_sent_at, Some(1_800_000_300));

    // Once the answer is saved the mark is gone, also from the file's text.
    dir.save(&record("main", "rt-secret-2")).unwrap();
    let text = fs::read_to_string(tmp.path().join("main.json")).unwrap();
    assert!(!text.contains("refresh_sent_at"), "{text}");
    let LoadOutcome::Loaded(back) = dir.load(&name("main"), &origin(), 1_800_000_400) else {
        panic!("expected a session")
    };
    assert_eq!(back.refresh_sent_at, None);
    assert_eq!(back.refresh_token.expose_secret(), "rt-secret-2");
}
