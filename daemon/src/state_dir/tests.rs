//! Tests of the state directory on a real file system: atomic writes, the lock, origins, keys and rekey.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use token_model::ids::{ClientId, TokenName};
use token_model::secret::ExposeSecret;

use super::*;
use crate::state_file::tests::{URL, origin, record};

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_failed_write_leaves_the_old_file_and_no_temp() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(&tmp.path().join("state")).unwrap();
    let old = record("main");
    dir.save(&old).unwrap();
    let target = dir.file_of(&old.name);
    let before = fs::read(&target).unwrap();
    let mut seen_temp = None;
    let error = dir
        .write_atomic(&target, b"{\"half\":", |temp| {
            seen_temp = Some(temp.to_owned());
            assert_eq!(fs::metadata(temp).unwrap().mode() & 0o777, 0o600);
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
    assert!(error.to_string().contains("disk full"), "{error}");
    assert!(!seen_temp.unwrap().exists());
    assert_eq!(fs::read(&target).unwrap(), before);
    assert_eq!(names_in(dir.path()), [LOCK_FILE, "main.json"]);
    let LoadOutcome::Loaded(back) = dir.load(&old.name, &origin(), 0) else { panic!("old record expected") };
    assert_eq!(back.refresh_token.expose_secret(), "rt-1");
}

#[test]
fn a_second_open_is_refused_naming_the_holder_and_touches_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state");
    let first = StateDir::open(&path).unwrap();
    let lock_file = path.join(LOCK_FILE);
    assert_eq!(fs::metadata(&lock_file).unwrap().mode() & 0o777, 0o600);
    assert_eq!(fs::read_to_string(&lock_file).unwrap(), format!("{}\n", std::process::id()));
    // The first owner's write in progress.
    let temp = path.join(".main.json.tmp-1-0");
    fs::write(&temp, b"{\"half").unwrap();

    let error = StateDir::open(&path).unwrap_err();
    let StateError::InUse { holder_pid, ref holder_command, .. } = error else { panic!("InUse expected: {error}") };
    assert_eq!(holder_pid, Some(i32::try_from(std::process::id()).unwrap()));
    let comm = fs::read_to_string("/proc/self/comm").unwrap();
    assert_eq!(holder_command.as_deref(), Some(comm.trim_end()));
    let message = error.to_string();
    for part in [&format!("pid {}", std::process::id()), &path.display().to_string(), "[daemon] state_dir"] {
        assert!(message.contains(part), "the message names {part:?}: {message}");
    }
    assert!(temp.exists(), "the second open left the owner's temp file alone");

    // A clone shares the lock; the lock goes with the last one, the file stays.
    let clone = first.clone();
    drop(first);
    assert!(matches!(StateDir::open(&path), Err(StateError::InUse { .. })));
    drop(clone);
    let again = StateDir::open(&path).unwrap();
    assert!(!temp.exists(), "leftovers are removed once the lock is held");
    assert_eq!(names_in(again.path()), [LOCK_FILE]);
}

#[test]
fn a_session_for_another_client_or_instance_is_set_aside_with_its_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(&tmp.path().join("state")).unwrap();
    let name = TokenName::new("main").unwrap();
    let others = [
        Origin::new(URL, ClientId::new("mobile").unwrap()),
        Origin::new("https://also.allthingstalk.io", ClientId::default()),
    ];
    for (i, other) in others.iter().enumerate() {
        dir.save(&record("main")).unwrap();
        let bytes = fs::read(dir.file_of(&name)).unwrap();
        let LoadOutcome::OtherOrigin { saved_url, saved_client_id, moved_to } = dir.load(&name, other, 100) else {
            panic!("a session made for {URL} with client web is not loaded for {other:?}")
        };
        assert_eq!(saved_url.as_deref(), Some(URL));
        assert_eq!(saved_client_id, ClientId::default());
        let suffix = if i == 0 { String::new() } else { format!("-{}", i + 1) };
        assert_eq!(moved_to, dir.path().join(format!("main.json.other-instance-100{suffix}")));
        assert_eq!(fs::read(&moved_to).unwrap(), bytes, "bytes intact, an earlier set-aside file kept");
        assert!(matches!(dir.load(&name, other, 100), LoadOutcome::Missing));
    }
    assert_eq!(names_in(dir.path()).len(), 3);
    // The configured instance still loads its own.
    dir.save(&record("main")).unwrap();
    assert!(matches!(dir.load(&name, &origin(), 100), LoadOutcome::Loaded(_)));
}

#[test]
fn a_file_without_an_instance_loads_for_any_instance_but_not_another_client() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(&tmp.path().join("state")).unwrap();
    let name = TokenName::new("main").unwrap();
    let mut old = record("main");
    old.api_url = None;
    dir.save(&old).unwrap();
    let text = fs::read_to_string(dir.file_of(&name)).unwrap();
    assert!(text.contains("\"version\": 2") && !text.contains("api_url"), "a version 2 file as before: {text}");

    let elsewhere = Origin::new("https://also.allthingstalk.io", ClientId::default());
    let LoadOutcome::Loaded(back) = dir.load(&name, &elsewhere, 0) else { panic!("an old file matches any url") };
    assert_eq!(back.api_url, None);
    assert_eq!(back.refresh_token.expose_secret(), "rt-1");

    // Its client id still counts.
    let other_client = Origin::new(URL, ClientId::new("mobile").unwrap());
    let LoadOutcome::OtherOrigin { saved_url, .. } = dir.load(&name, &other_client, 0) else {
        panic!("an old file for client web is not loaded for client mobile")
    };
    assert_eq!(saved_url, None);
}

fn key(fill: u8) -> Arc<StateKey> {
    Arc::new(StateKey::from_bytes(&[fill; crate::seal::KEY_LEN]).unwrap())
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn with_a_key_a_clear_file_is_set_aside_unread_and_rekey_adopts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state");
    let name = TokenName::new("main").unwrap();
    let clear = StateDir::open(&path).unwrap();
    clear.save(&record("main")).unwrap();
    let bytes = fs::read(clear.file_of(&name)).unwrap();
    assert!(contains(&bytes, "rt-1"), "clear without a key, as before");
    drop(clear);

    // Someone who can write the state directory (an SD card in another machine) planted it, or it is from
    // before the key: either way it is not used, and its bytes are kept.
    let dir = StateDir::open(&path).unwrap().with_key(Some(key(1)));
    let LoadOutcome::Unsealed { moved_to } = dir.load(&name, &origin(), 42) else { panic!("set aside") };
    assert_eq!(moved_to, dir.path().join("main.json.unsealed-42"));
    assert_eq!(fs::read(&moved_to).unwrap(), bytes, "bytes intact");
    assert!(matches!(dir.load(&name, &origin(), 43), LoadOutcome::Missing));
    drop(dir);

    // Moved back by its owner, `--rekey` (here with the same key) adopts it: sealed, then loaded.
    fs::rename(&moved_to, path.join("main.json")).unwrap();
    let dir = StateDir::open(&path).unwrap();
    let report = dir.rekey(Some(&key(1)), &key(1)).unwrap();
    assert_eq!(report.sealed.len(), 1, "the clear file is sealed");
    let dir = dir.with_key(Some(key(1)));
    let sealed = fs::read(dir.file_of(&name)).unwrap();
    assert!(seal::is_sealed(&sealed));
    assert!(!contains(&sealed, "rt-1") && !contains(&sealed, "at-1") && !contains(&sealed, "alice"));
    let LoadOutcome::Loaded(back) = dir.load(&name, &origin(), 44) else { panic!("the sealed file loads") };
    assert_eq!(back.refresh_token.expose_secret(), "rt-1");
    assert_eq!(names_in(dir.path()), [LOCK_FILE, "main.json"], "no other copy");
}

#[test]
fn a_sealed_file_without_its_key_stays_until_a_login_replaces_it_and_is_then_kept_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state");
    let name = TokenName::new("main").unwrap();
    let sealed = StateDir::open(&path).unwrap().with_key(Some(key(1)));
    sealed.save(&record("main")).unwrap();
    let bytes = fs::read(sealed.file_of(&name)).unwrap();
    drop(sealed);

    let without = StateDir::open(&path).unwrap();
    let LoadOutcome::SealedWithoutKey { found } = without.load(&name, &origin(), 0) else { panic!("no key") };
    assert_eq!(found, Some(key(1).id()));
    drop(without);
    let other = StateDir::open(&path).unwrap().with_key(Some(key(2)));
    let LoadOutcome::OtherKey { found, configured } = other.load(&name, &origin(), 0) else { panic!("other key") };
    assert_eq!((found, configured), (key(1).id(), key(2).id()));
    assert_eq!(fs::read(other.file_of(&name)).unwrap(), bytes, "left in place, bytes intact");

    // A login under the other key moves the old file aside first; a logout does too.
    other.save(&record("main")).unwrap();
    let aside: Vec<String> = names_in(other.path()).into_iter().filter(|n| n.contains("other-key")).collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(fs::read(other.path().join(&aside[0])).unwrap(), bytes);
    drop(other);
    let without = StateDir::open(&path).unwrap();
    assert!(!without.remove(&name).unwrap(), "moved aside, so nothing was left to delete");
    assert!(!without.file_of(&name).exists());
    assert_eq!(names_in(without.path()).iter().filter(|n| n.contains("other-key")).count(), 2, "never deleted");
}

#[test]
fn a_damaged_sealed_file_is_set_aside_and_another_tokens_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(&tmp.path().join("state")).unwrap().with_key(Some(key(1)));
    let (main, other) = (TokenName::new("main").unwrap(), TokenName::new("other").unwrap());
    dir.save(&record("main")).unwrap();
    fs::copy(dir.file_of(&main), dir.file_of(&other)).unwrap();
    let LoadOutcome::SetAside { reason, .. } = dir.load(&other, &origin(), 5) else { panic!("swapped") };
    assert!(reason.contains("another token's file"), "{reason}");
    let mut bytes = fs::read(dir.file_of(&main)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(dir.file_of(&main), &bytes).unwrap();
    let LoadOutcome::SetAside { moved_to, .. } = dir.load(&main, &origin(), 5) else { panic!("flipped") };
    assert_eq!(fs::read(moved_to).unwrap(), bytes, "set aside with its bytes");
}

#[test]
fn rekey_seals_every_file_under_the_new_key_and_can_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state");
    let old = StateDir::open(&path).unwrap().with_key(Some(key(1)));
    old.save(&record("main")).unwrap();
    drop(old);
    let clear = StateDir::open(&path).unwrap();
    clear.save(&record("second")).unwrap();
    fs::write(path.join("broken.json"), b"{").unwrap();

    let report = clear.rekey(Some(&key(1)), &key(2)).unwrap();
    assert_eq!((report.resealed, report.sealed), (vec!["main".to_owned()], vec!["second".to_owned()]));
    assert_eq!(report.failed.len(), 1, "the broken file is left alone: {:?}", report.failed);
    let report = clear.rekey(None, &key(2)).unwrap();
    assert_eq!(report.already, ["main", "second"]);
    drop(clear);
    let new = StateDir::open(&path).unwrap().with_key(Some(key(2)));
    for name in ["main", "second"] {
        let name = TokenName::new(name).unwrap();
        assert!(matches!(new.load(&name, &origin(), 0), LoadOutcome::Loaded(_)), "{name} opens with the new key");
    }
}
