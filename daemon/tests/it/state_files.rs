//! The state directory on a real file system: round trips, modes, atomic replacement, leftovers, corrupt files.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use att_tokend::seal::StateKey;
use att_tokend::state_dir::{LOCK_FILE, LoadOutcome, StateDir};
use att_tokend::state_file::{FORMAT_VERSION, Origin, SessionRecord};
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

/// A session of `token` holding `refresh`. Its facts are spelled field by field, each set, as they stand in
/// [`WRITTEN_CLEAR`] (the record for `main` with `rt-secret-1`): the files written by earlier versions must load
/// into exactly this value.
fn record(token: &str, refresh: &str) -> SessionRecord {
    let session = PersistedSession {
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
    };
    let (refresh, access) = (RefreshToken::new(refresh), AccessToken::new("at-secret-1"));
    SessionRecord::new(name(token), &origin(), "alice@example.com".into(), refresh, access, session)
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

/// A session file of format version 2 as att-tokend writes it (pretty JSON, no trailing newline): the record of
/// [`record`] for `main` with a refresh on its way.
const WRITTEN_CLEAR: &str = r#"{
  "version": 2,
  "name": "main",
  "username": "alice@example.com",
  "client_id": "mobile",
  "api_url": "https://api.allthingstalk.io",
  "refresh_token": "rt-secret-1",
  "access_token": "at-secret-1",
  "session": {
    "known_good": 1800000100000,
    "access_obtained": 1800000000000,
    "access_expires": 1800003599000,
    "refresh_expires": 1805184000000,
    "refresh_expires_server": 1805183997000,
    "rotation": "fixed",
    "refresh_rejected": false,
    "relogin_rejected": false,
    "lapse_warned_secs": 604800,
    "clock_offset": -3000
  },
  "refresh_sent_at": 1800000300
}"#;

/// The same record as a sealed file written by att-tokend under the key of 32 bytes 7, in hex.
const WRITTEN_SEALED: &str = "\
    4154542d544f4b454e44205345414c45440a010133cea5fdb5e578b0dd6f6a2a3e7114e3aff7a8ac60110ea6f63f3f771fbba8657d3f\
    6ad2744d72558196dea50ac39522c1719683c4cd460f2a329fc23cfff7ffd6cc76ca044809baf39231613a10d60507444889f5e13140\
    f2eb14f2feb44f71cb8b4d2c92a623a74c3700cb9600c7914a38b1f3d824d4606eb74365883791677ec6c38a9d6271cff23bc9014456\
    19c1a8eff98ac542cfbf1c2d86454ccafd4a9f63c365af58cf318a1f749f6dcc056428f33c7189834fa4cd95fda745f8aaefe4f6f237\
    2909a9f228c5f3f6d837a05241fe5c42ab137f2969bbeccdd7c04e95b603281db5880dea732e0adae5437efeff8aa7d8daf9cc0ebeef\
    63c91269c121faa8f2adb1d415fdc7203402008ed5a20640579a3729240a2aebe5888a122191db676fc520cfb704bac87acb18079983\
    4d5e4ed0b8c63a7b34220455d3310d6f8c96078c6d36dfe482cd7ececaab03da793230892679bd8a3a17ecf0328a97cb071d73700717\
    ab3d39c01426e222781bc056a60509807434842d2b37a7b9f44402a604e891e646861e7b947964b3fbe3dd63a14fec492a54f290c52e\
    b99fdb0763d2e4960f8ef1b61faeb85dd99fe52a87bc8ee091d4e5e36464209f8bbecbc1acd6378512754aefe9bdbcba8119ff1da424\
    02b4892b8edb014d9ed12b2d72c0547b5b12c8fe67a2b3c1dbb012e17b327fad93b7fafb16e61da89e8e4e845fdb569bdab93f717af7\
    c6b9dc3f128a6765db6ad54ac1743ed68b84dba7450ed42b33fbfb8a42f12f820e0fe4ea2ad63268a83576bdbf280dab095e7127037e\
    2792c3a9dd21d8395d0f6eccb43175cfb98f973a4abda8baf189e1872c6b1d4c959291b4d639ceb0b8711400a6c552349ec46e5cba85\
    ebbd1dc7ce22";

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn files_already_written_load_unchanged_and_are_written_again_byte_for_byte() {
    let mut written = record("main", "rt-secret-1");
    written.refresh_sent_at = Some(1_800_000_300);
    let tmp = tempfile::tempdir().unwrap();

    let clear = StateDir::open(&tmp.path().join("clear")).unwrap();
    let file = clear.file_of(&name("main"));
    fs::write(&file, WRITTEN_CLEAR).unwrap();
    let LoadOutcome::Loaded(back) = clear.load(&name("main"), &origin(), 0) else { panic!("the clear file loads") };
    assert_eq!(*back, written);
    clear.save(&back).unwrap();
    assert_eq!(fs::read_to_string(&file).unwrap(), WRITTEN_CLEAR, "saved again, the same bytes");

    let key = Arc::new(StateKey::from_bytes(&[7; att_tokend::seal::KEY_LEN]).unwrap());
    let sealed = StateDir::open(&tmp.path().join("sealed")).unwrap().with_key(Some(key.clone()));
    let file = sealed.file_of(&name("main"));
    fs::write(&file, unhex(WRITTEN_SEALED)).unwrap();
    let LoadOutcome::Loaded(back) = sealed.load(&name("main"), &origin(), 0) else { panic!("the sealed file loads") };
    assert_eq!(*back, written);
    sealed.save(&back).unwrap();
    let plaintext = att_tokend::seal::open(&key, "main", &fs::read(&file).unwrap()).unwrap();
    assert_eq!(plaintext.as_slice(), WRITTEN_CLEAR.as_bytes(), "sealed again, the same record inside");
}
