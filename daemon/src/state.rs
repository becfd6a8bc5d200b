//! Durable user sessions in the state directory (`/var/lib/att-tokend`, mode 0700).
//!
//! One JSON file per user token, `<name>.json`, mode 0600, holding the refresh and access tokens and the
//! planner's durable facts ([`PersistedSession`]: wall-clock deadlines, rotation, warnings given, clock trust),
//! and whether a refresh was on its way, which is all a restart needs to carry on, even after `kill -9`:
//! - writes are atomic: a new temp file (`O_EXCL`, 0600) in the same directory, write, fsync, rename over the old
//!   file, fsync the directory. A crash leaves either the old or the new file, never a mix; a leftover temp file
//!   is removed when the directory is opened;
//! - a file that cannot be parsed is set aside as `<name>.json.corrupt-<unix seconds>` with its bytes intact,
//!   never overwritten silently.
//!
//! The planner's part is stored whole, exactly as `token_model` hands it out, so nothing it needs after a
//! restart is lost in translation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use token_model::ids::{ClientId, TokenName};
use token_model::plan::PersistedSession;
use token_model::secret::{AccessToken, RefreshToken};
use zeroize::Zeroizing;

/// The format version written by this build. Files with a higher version are left alone.
pub const FORMAT_VERSION: u32 = 2;

/// Marker in the names of temp files; such files are removed when the directory is opened.
const TEMP_MARKER: &str = ".tmp-";

/// One user session as stored on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Format version ([`FORMAT_VERSION`] when written by this build).
    pub version: u32,
    /// The token name; must match the file name.
    pub name: TokenName,
    /// The account the session belongs to.
    pub username: String,
    /// The client id used at login; refreshes must use the same.
    pub client_id: ClientId,
    /// The newest refresh token.
    #[serde(with = "token_model::secret::persist")]
    pub refresh_token: RefreshToken,
    /// The newest access token.
    #[serde(with = "token_model::secret::persist")]
    pub access_token: AccessToken,
    /// The planner's durable facts, stored whole: deadlines, rotation, warnings given, clock trust.
    pub session: PersistedSession,
    /// Unix seconds when a refresh with `refresh_token` was sent whose answer is not saved yet. Written before
    /// the refresh is sent and gone once its answer is saved, so after a crash it tells that the cloud may have
    /// replaced the refresh token already. Absent in files that never had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_sent_at: Option<i64>,
}

/// What loading one session file found.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadOutcome {
    /// No file: the token has no stored session.
    Missing,
    /// The stored session.
    Loaded(Box<SessionRecord>),
    /// The file could not be parsed (or belongs to another name) and was renamed to `moved_to`.
    SetAside {
        /// Why it was set aside (never contains a secret).
        reason: String,
        /// Where its bytes are now.
        moved_to: PathBuf,
    },
    /// The file was written by a newer att-tokend; it was left in place and not used.
    TooNew {
        /// The version found.
        version: u32,
    },
    /// The file could not be read or set aside; it was left in place.
    Failed(StateError),
}

/// Why the state directory or a state file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A file system operation failed.
    #[error("cannot {action} {}: {error}; check that the state directory exists, is owned by the daemon's user and the disk is not full or read-only", path.display())]
    Io {
        /// What was being done ("create", "write", "rename", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The state directory is not a directory, or belongs to another user.
    #[error("state directory {}: {problem}", path.display())]
    Unsafe {
        /// The directory.
        path: PathBuf,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A record could not be encoded.
    #[error("cannot encode the session of {name}: {error}; this is a bug, please report it")]
    Encode {
        /// The token name.
        name: String,
        /// Why.
        error: serde_json::Error,
    },
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |error| StateError::Io { action, path: path.to_owned(), error }
}

/// The state directory, opened (created 0700 if missing, permissions tightened, leftovers cleaned).
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl StateDir {
    /// Opens `path`: creates it with mode 0700 if missing, tightens looser permissions to 0700 (logging a
    /// warning), refuses a directory owned by another user, and removes temp files left by an interrupted write.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        match fs::symlink_metadata(path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(io_error("create", path))?;
                // The umask may have narrowed the mode further; set exactly 0700.
                fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io_error("chmod", path))?;
                tracing::info!(dir = %path.display(), "created the state directory (mode 0700)");
            }
            Err(error) => return Err(io_error("examine", path)(error)),
            Ok(meta) => {
                if !meta.is_dir() {
                    return Err(StateError::Unsafe {
                        path: path.to_owned(),
                        problem: "is not a directory; remove it or set [daemon] state_dir to another path".to_owned(),
                    });
                }
                let euid = nix::unistd::geteuid().as_raw();
                if meta.uid() != euid {
                    return Err(StateError::Unsafe {
                        path: path.to_owned(),
                        problem: format!(
                            "is owned by uid {} but the daemon runs as uid {euid}; run chown {euid} {}",
                            meta.uid(),
                            path.display()
                        ),
                    });
                }
                let mode = meta.mode() & 0o7777;
                if mode != 0o700 {
                    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io_error("chmod", path))?;
                    tracing::warn!(dir = %path.display(), old_mode = format!("{mode:04o}"), "tightened the state directory's permissions to 0700");
                }
            }
        }
        let dir = Self { path: path.to_owned() };
        dir.remove_leftover_temp_files()?;
        Ok(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file holding the session of `name`.
    pub fn file_of(&self, name: &TokenName) -> PathBuf {
        self.path.join(format!("{}.json", name.as_str()))
    }

    fn remove_leftover_temp_files(&self) -> Result<(), StateError> {
        for entry in fs::read_dir(&self.path).map_err(io_error("list", &self.path))? {
            let entry = entry.map_err(io_error("list", &self.path))?;
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            if file_name.starts_with('.') && file_name.contains(TEMP_MARKER) {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_error("remove", &path))?;
                tracing::warn!(file = %path.display(), "removed a temp file left by an interrupted write");
            }
        }
        Ok(())
    }

    /// Stores a session atomically (see the module docs). On error the previous file is intact.
    pub fn save(&self, record: &SessionRecord) -> Result<(), StateError> {
        let bytes = Zeroizing::new(
            serde_json::to_vec_pretty(record)
                .map_err(|error| StateError::Encode { name: record.name.to_string(), error })?,
        );
        self.write_atomic(&self.file_of(&record.name), &bytes, |_| Ok(()))
    }

    /// Writes `bytes` to `target` through a temp file; `before_rename` runs on the temp file (tests inject a
    /// failure there).
    fn write_atomic(
        &self,
        target: &Path,
        bytes: &[u8],
        before_rename: impl FnOnce(&Path) -> io::Result<()>,
    ) -> Result<(), StateError> {
        let file_name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = self.path.join(format!(
            ".{file_name}{TEMP_MARKER}{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)
                .map_err(io_error("create", &temp))?;
            file.write_all(bytes).map_err(io_error("write", &temp))?;
            file.sync_all().map_err(io_error("fsync", &temp))?;
            drop(file);
            before_rename(&temp).map_err(io_error("write", &temp))?;
            fs::rename(&temp, target).map_err(io_error("rename", &temp))?;
            self.sync_dir()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    fn sync_dir(&self) -> Result<(), StateError> {
        File::open(&self.path).and_then(|dir| dir.sync_all()).map_err(io_error("fsync", &self.path))
    }

    /// Loads the session of `name`. A file that cannot be parsed is set aside; see [`LoadOutcome`].
    /// `now` (Unix seconds) names the set-aside file.
    pub fn load(&self, name: &TokenName, now: i64) -> LoadOutcome {
        let file = self.file_of(name);
        let bytes = match fs::read(&file) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return LoadOutcome::Missing,
            Err(error) => return LoadOutcome::Failed(io_error("read", &file)(error)),
        };
        if let Ok(meta) = fs::metadata(&file)
            && meta.mode() & 0o077 != 0
        {
            match fs::set_permissions(&file, fs::Permissions::from_mode(0o600)) {
                Ok(()) => {
                    tracing::warn!(file = %file.display(), old_mode = format!("{:04o}", meta.mode() & 0o7777), "tightened a session file's permissions to 0600")
                }
                Err(error) => return LoadOutcome::Failed(io_error("chmod", &file)(error)),
            }
        }
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let reason = match serde_json::from_slice::<Version>(&bytes) {
            Ok(Version { version }) if version > FORMAT_VERSION => return LoadOutcome::TooNew { version },
            _ => match serde_json::from_slice::<SessionRecord>(&bytes) {
                Ok(record) if record.name == *name => return LoadOutcome::Loaded(Box::new(record)),
                Ok(record) => format!("it holds the session of {:?}, not {:?}", record.name.as_str(), name.as_str()),
                // serde_json's message names a line, column and expected type, never the content.
                Err(error) => format!("it is not a valid session file ({error})"),
            },
        };
        let moved_to = self.path.join(format!("{}.json.corrupt-{now}", name.as_str()));
        match fs::rename(&file, &moved_to).map_err(io_error("set aside", &file)).and_then(|()| self.sync_dir()) {
            Ok(()) => {
                tracing::warn!(file = %file.display(), moved_to = %moved_to.display(), %reason, "set aside an unusable session file; log in again");
                LoadOutcome::SetAside { reason, moved_to }
            }
            Err(error) => LoadOutcome::Failed(error),
        }
    }

    /// Forgets the session of `name` (logout). Returns whether a file was there.
    pub fn remove(&self, name: &TokenName) -> Result<bool, StateError> {
        let file = self.file_of(name);
        match fs::remove_file(&file) {
            Ok(()) => {
                self.sync_dir()?;
                Ok(true)
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(io_error("remove", &file)(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use token_model::plan::Rotation;
    use token_model::secret::ExposeSecret;
    use token_model::time::WallTime;

    use super::*;

    fn record(name: &str) -> SessionRecord {
        SessionRecord {
            version: FORMAT_VERSION,
            name: TokenName::new(name).unwrap(),
            username: "alice@example.com".into(),
            client_id: ClientId::default(),
            refresh_token: RefreshToken::new("rt-1"),
            access_token: AccessToken::new("at-1"),
            session: PersistedSession {
                known_good: Some(WallTime::from_unix_seconds(1_700_000_000)),
                access_obtained: Some(WallTime::from_unix_seconds(1_700_000_000)),
                access_expires: Some(WallTime::from_unix_seconds(1_700_003_599)),
                refresh_expires: Some(WallTime::from_unix_seconds(1_800_000_000)),
                refresh_expires_server: None,
                rotation: Rotation::Unknown,
                refresh_rejected: false,
                relogin_rejected: false,
                lapse_warned_secs: None,
                clock_offset: None,
            },
            refresh_sent_at: None,
        }
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
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let LoadOutcome::Loaded(back) = dir.load(&old.name, 0) else { panic!("old record expected") };
        assert_eq!(back.refresh_token.expose_secret(), "rt-1");
    }
}
