//! The state directory (`/var/lib/att-tokend`, mode 0700): where user sessions and holds of unattended login are
//! kept across restarts, one file per user token (their format is [`crate::state_file`]).
//!
//! - Files are 0600 and replaced atomically through [`crate::durable`]: a crash leaves either the old or the new
//!   file, never a mix; a leftover temp file is removed when the directory is opened.
//! - A file that cannot be parsed is set aside as `<name>.json.corrupt-<unix seconds>` with its bytes intact,
//!   never overwritten silently.
//!
//! One process owns the directory: [`StateDir::open`] takes an exclusive `flock` on `.lock` (0600, holding the
//! owner's pid for the message a second daemon prints) before it touches any other file, and holds it for as long
//! as the [`StateDir`] (or a clone) lives. The file is never removed: the lock, not the file, is what counts, so a
//! crashed owner never blocks a restart.
//!
//! A session is only handed out for the cloud instance and `client_id` it was made with ([`Origin`]): a file
//! written for another one is set aside as `<name>.json.other-instance-<unix seconds>`, bytes intact.
//!
//! Sealed at rest: with a state key ([`StateDir::with_key`]) every file is sealed ([`crate::seal`]: encrypted and
//! authenticated, bound to its token's name), so neither token is on disk in clear. A clear file found with a key
//! is never read: whoever can write the directory (an SD card in another machine) could have planted it to make
//! every app use their account. It is set aside as `<name>.json.unsealed-<unix seconds>`, bytes intact, and
//! `att-tokend --rekey` ([`StateDir::rekey`]) adopts it once its owner moves it back. A sealed file that the
//! configured key cannot open because the key is missing or another one is never deleted or overwritten: it stays
//! in place for the key to come back, and is only moved aside (`<name>.json.other-key-<unix seconds>`) when a new
//! login or a logout replaces it. A sealed file that fails to authenticate (altered, damaged, another token's) is
//! set aside as corrupt.
//!
//! Every method here blocks on the file system (fsyncs among others): the daemon calls them on the blocking pool.

mod lock;
mod rekey;
#[cfg(test)]
mod tests;

pub use self::rekey::RekeyReport;

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::Flock;
use token_model::ids::{ClientId, TokenName};
use token_model::secret::ExposeSecret;
use zeroize::Zeroizing;

use crate::durable;
use crate::seal::{self, KeyId, OpenError, StateKey};
use crate::state_file::{self, HoldRecord, Origin, Parsed, SessionRecord};

/// The lock file in the state directory. Its `flock` says who owns the directory; its text is the owner's pid.
pub const LOCK_FILE: &str = ".lock";

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
    /// The session was made with another cloud instance or `client_id` than the configured [`Origin`]; it was
    /// not used, and the file was renamed to `moved_to` with its bytes intact.
    OtherOrigin {
        /// The instance the session was made with (`None` in files written before it was recorded).
        saved_url: Option<String>,
        /// The client id the session was made with.
        saved_client_id: ClientId,
        /// Where its bytes are now.
        moved_to: PathBuf,
    },
    /// The file is sealed but no state key is configured; it was left in place and not used.
    SealedWithoutKey {
        /// The key that sealed it.
        found: Option<KeyId>,
    },
    /// The file is sealed with another key than the configured one; it was left in place and not used.
    OtherKey {
        /// The key that sealed it.
        found: KeyId,
        /// The configured key.
        configured: KeyId,
    },
    /// The file was written by a newer att-tokend; it was left in place and not used.
    TooNew {
        /// The version found.
        version: u32,
    },
    /// The file is in clear although a state key is configured: it was not read (whoever can write the state
    /// directory could have planted it) and was renamed to `moved_to`, bytes intact. `att-tokend --rekey`
    /// adopts such a file once it is moved back.
    Unsealed {
        /// Where its bytes are now.
        moved_to: PathBuf,
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
    /// Another process holds the state directory's lock.
    #[error(
        "state directory {} is in use by {}, which holds its lock {}: only one att-tokend may use a state \
         directory; stop {} first, or give this one another [daemon] state_dir",
        path.display(), lock::describe_holder(*holder_pid, holder_command.as_deref()), lock_file.display(),
        lock::how_to_stop(*holder_pid, lock_file)
    )]
    InUse {
        /// The directory.
        path: PathBuf,
        /// The lock file.
        lock_file: PathBuf,
        /// The holder's pid, as it wrote it into the lock file (`None` when unreadable).
        holder_pid: Option<i32>,
        /// The holder's command name from `/proc/PID/comm`, when readable.
        holder_command: Option<String>,
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

/// The state directory, opened (created 0700 if missing, permissions tightened, locked, leftovers cleaned).
/// Clones share the lock, which is released when the last one is dropped.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
    _lock: Arc<Flock<File>>,
    key: Option<Arc<StateKey>>,
}

impl StateDir {
    /// Opens `path`: creates it with mode 0700 if missing, tightens looser permissions to 0700 (logging a
    /// warning), refuses a directory owned by another user, takes the directory's lock ([`StateError::InUse`]
    /// when another process holds it), and only then removes temp files left by an interrupted write.
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
        let lock = lock::lock(path)?;
        let dir = Self { path: path.to_owned(), _lock: Arc::new(lock), key: None };
        dir.remove_leftover_temp_files()?;
        Ok(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seals every file written from now on with `key`, and opens sealed files with it; `None` writes clear files.
    pub fn with_key(mut self, key: Option<Arc<StateKey>>) -> Self {
        self.key = key;
        self
    }

    /// The state key files are sealed with, if any.
    pub fn key(&self) -> Option<&StateKey> {
        self.key.as_deref()
    }

    /// The file holding the session of `name`.
    pub fn file_of(&self, name: &TokenName) -> PathBuf {
        self.path.join(format!("{}.json", name.as_str()))
    }

    /// Removes temp files left by an interrupted write; only called with the lock held, so none of them is
    /// another daemon's write in progress.
    fn remove_leftover_temp_files(&self) -> Result<(), StateError> {
        for entry in fs::read_dir(&self.path).map_err(io_error("list", &self.path))? {
            let entry = entry.map_err(io_error("list", &self.path))?;
            if durable::is_leftover_temp(&entry.file_name().to_string_lossy()) {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_error("remove", &path))?;
                tracing::warn!(file = %path.display(), "removed a temp file left by an interrupted write");
            }
        }
        Ok(())
    }

    /// Stores a session atomically (see the module docs). On error the previous file is intact.
    /// With a state key the file is sealed; a file in its place that this key cannot open (sealed without a key
    /// configured, with another key, or in an unknown format) is first moved aside, never overwritten.
    pub fn save(&self, record: &SessionRecord) -> Result<(), StateError> {
        let bytes = self.stored_bytes(record)?;
        let target = self.file_of(&record.name);
        self.keep_unopenable(&target, &record.name)?;
        self.write_atomic(&target, &bytes, |_| Ok(()))
    }

    /// The bytes of `record` as stored: sealed with the key, else pretty JSON ([`state_file::encode`]).
    fn stored_bytes(&self, record: &SessionRecord) -> Result<Zeroizing<Vec<u8>>, StateError> {
        let encode_error = |error| StateError::Encode { name: record.name.to_string(), error };
        let Some(key) = &self.key else {
            return state_file::encode(record).map_err(encode_error);
        };
        // Allocated once with room for the worst case (every character of every string escaped as \u00XX, and the
        // planner's facts), so that no reallocation leaves a copy of the plaintext behind. The same encoding as a
        // clear file, so the binary carries one copy of the record's serialiser.
        let strings = record.username.len()
            + record.refresh_token.expose_secret().len()
            + record.access_token.expose_secret().len()
            + record.api_url.as_ref().map_or(0, String::len)
            + record.client_id.as_str().len();
        let capacity = 4096 + 6 * strings;
        let mut plaintext = Zeroizing::new(Vec::with_capacity(capacity));
        serde_json::to_writer_pretty(&mut *plaintext, record).map_err(encode_error)?;
        debug_assert_eq!(plaintext.capacity(), capacity, "the plaintext buffer never grew");
        Ok(seal::seal(key, record.name.as_str(), &plaintext))
    }

    /// Moves `file` aside as `other-key` when it is sealed and this directory's key cannot open it, so that no
    /// write or removal destroys a session that a restored key could still open.
    fn keep_unopenable(&self, file: &Path, name: &TokenName) -> Result<(), StateError> {
        let mut header = [0_u8; seal::HEADER_LEN];
        let read = match File::open(file) {
            Ok(f) => f.read_at(&mut header, 0).unwrap_or(0),
            Err(_) => return Ok(()),
        };
        let header = &header[..read];
        if !seal::is_sealed(header) {
            return Ok(());
        }
        let openable = self.key.as_ref().is_some_and(|key| {
            seal::key_id_of(header) == Some(key.id())
                && header.get(seal::MAGIC.len()..seal::MAGIC.len() + 2) == Some(&[seal::SEAL_VERSION, 1][..])
        });
        if openable {
            return Ok(());
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let moved_to = self.set_aside(file, name, "other-key", i64::try_from(now).unwrap_or(i64::MAX))?;
        tracing::warn!(
            file = %file.display(),
            moved_to = %moved_to.display(),
            "moved aside a session sealed with a state key that is not configured, rather than overwrite or delete it"
        );
        Ok(())
    }

    /// Writes `bytes` to `target` through [`durable::write_durably`]; `before_rename` runs on the temp file (tests
    /// inject a failure there).
    fn write_atomic(
        &self,
        target: &Path,
        bytes: &[u8],
        before_rename: impl FnOnce(&Path) -> io::Result<()>,
    ) -> Result<(), StateError> {
        durable::write_durably(target, bytes, |_| Ok(()), before_rename).map(|_| ()).map_err(|e| StateError::Io {
            action: e.action,
            path: e.path,
            error: e.error,
        })
    }

    /// Writes a file in the state directory that holds no secret (the token files' manifest), through the same
    /// durable path as sessions, never sealed.
    pub fn write_plain(&self, file_name: &str, bytes: &[u8]) -> Result<(), StateError> {
        self.write_atomic(&self.path.join(file_name), bytes, |_| Ok(()))
    }

    fn sync_dir(&self) -> Result<(), StateError> {
        durable::sync_dir(&self.path).map_err(io_error("fsync", &self.path))
    }

    /// Loads the session of `name` for `origin`. A file that cannot be parsed, or that was made with another
    /// instance or client than `origin`, is set aside; see [`LoadOutcome`]. A file without a recorded instance
    /// (written before it was recorded) matches any. `now` (Unix seconds) names the set-aside file.
    pub fn load(&self, name: &TokenName, origin: &Origin, now: i64) -> LoadOutcome {
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
        if self.key.is_some() && !seal::is_sealed(&bytes) {
            return match self.set_aside(&file, name, "unsealed", now) {
                Ok(moved_to) => {
                    tracing::warn!(file = %file.display(), moved_to = %moved_to.display(), "set aside a session file in clear: a state key is configured, so it was not used");
                    LoadOutcome::Unsealed { moved_to }
                }
                Err(error) => LoadOutcome::Failed(error),
            };
        }
        let bytes = if seal::is_sealed(&bytes) {
            let Some(key) = &self.key else {
                return LoadOutcome::SealedWithoutKey { found: seal::key_id_of(&bytes) };
            };
            match seal::open(key, name.as_str(), &bytes) {
                Ok(plaintext) => plaintext,
                Err(OpenError::OtherKey { found, configured }) => return LoadOutcome::OtherKey { found, configured },
                Err(OpenError::Unknown { version, .. }) => return LoadOutcome::TooNew { version: u32::from(version) },
                Err(error @ (OpenError::Refused | OpenError::NotSealed)) => {
                    return self.set_aside_corrupt(&file, name, error.to_string(), now);
                }
            }
        } else {
            bytes
        };
        let reason = match state_file::parse(&bytes, name) {
            Parsed::TooNew { version } => return LoadOutcome::TooNew { version },
            Parsed::Unusable { reason } => reason,
            Parsed::Record(record) => {
                if record.made_for(origin) {
                    return LoadOutcome::Loaded(record);
                }
                return match self.set_aside(&file, name, "other-instance", now) {
                    Ok(moved_to) => {
                        tracing::warn!(
                            file = %file.display(),
                            moved_to = %moved_to.display(),
                            saved_url = record.api_url.as_deref().unwrap_or("(not recorded)"),
                            saved_client_id = record.client_id.as_str(),
                            url = origin.api_url,
                            client_id = origin.client_id.as_str(),
                            "set aside a session made with another [api] url or client_id; it was not used"
                        );
                        LoadOutcome::OtherOrigin {
                            saved_url: record.api_url.clone(),
                            saved_client_id: record.client_id.clone(),
                            moved_to,
                        }
                    }
                    Err(error) => LoadOutcome::Failed(error),
                };
            }
        };
        self.set_aside_corrupt(&file, name, reason, now)
    }

    /// Sets aside an unusable file as `corrupt`, bytes intact.
    fn set_aside_corrupt(&self, file: &Path, name: &TokenName, reason: String, now: i64) -> LoadOutcome {
        match self.set_aside(file, name, "corrupt", now) {
            Ok(moved_to) => {
                tracing::warn!(file = %file.display(), moved_to = %moved_to.display(), %reason, "set aside an unusable session file; log in again");
                LoadOutcome::SetAside { reason, moved_to }
            }
            Err(error) => LoadOutcome::Failed(error),
        }
    }

    /// Renames `file` (`<name>.json` or `<name>.hold`) to `<file>.<label>-<now>` (with `-2`, `-3`, ... when that name is taken, so an earlier
    /// set-aside file is never replaced) and returns the new path.
    fn set_aside(&self, file: &Path, name: &TokenName, label: &str, now: i64) -> Result<PathBuf, StateError> {
        debug_assert!(file.file_name().is_some_and(|f| f.to_string_lossy().starts_with(name.as_str())));
        let file_name = file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let base = format!("{file_name}.{label}-{now}");
        // The directory's lock keeps other daemons out, so a name found free stays free until the rename.
        let moved_to = std::iter::once(self.path.join(&base))
            .chain((2..).map(|n| self.path.join(format!("{base}-{n}"))))
            .find(|candidate| fs::symlink_metadata(candidate).is_err())
            .expect("some free name");
        fs::rename(file, &moved_to).map_err(io_error("set aside", file))?;
        self.sync_dir()?;
        Ok(moved_to)
    }

    /// Forgets the session of `name` (logout). Returns whether a file was there.
    /// A file sealed with a key that is not configured is moved aside (`other-key`) rather than deleted.
    pub fn remove(&self, name: &TokenName) -> Result<bool, StateError> {
        let file = self.file_of(name);
        self.keep_unopenable(&file, name)?;
        self.remove_file(&file)
    }

    /// Removes `file` from the directory durably (the directory is synced); whether it was there.
    fn remove_file(&self, file: &Path) -> Result<bool, StateError> {
        match fs::remove_file(file) {
            Ok(()) => {
                self.sync_dir()?;
                Ok(true)
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(io_error("remove", file)(error)),
        }
    }

    /// The file that keeps the unattended-login hold of `name` ([`HoldRecord`]).
    pub fn hold_file_of(&self, name: &TokenName) -> PathBuf {
        self.path.join(format!("{}.hold", name.as_str()))
    }

    /// The unattended-login hold of `name`, if one was saved. A file that cannot be read as a hold of this name is
    /// set aside (`<name>.hold.corrupt-<now>`, bytes intact) and the error says so: the daemon then goes on as if
    /// there were none.
    pub fn load_hold(&self, name: &TokenName, now: i64) -> Result<Option<HoldRecord>, String> {
        let file = self.hold_file_of(name);
        let bytes = match fs::read(&file) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error("read", &file)(error).to_string()),
        };
        let reason = match state_file::parse_hold(&bytes, name) {
            Ok(hold) => return Ok(Some(hold)),
            Err(reason) => reason,
        };
        let moved = self.set_aside(&file, name, "corrupt", now).map_err(|e| e.to_string())?;
        Err(format!("{} was unusable ({reason}) and was moved to {}", file.display(), moved.display()))
    }

    /// Saves the unattended-login hold of `record.name` durably (it holds no secret: see [`HoldRecord`]).
    pub fn save_hold(&self, record: &HoldRecord) -> Result<(), StateError> {
        self.write_atomic(&self.hold_file_of(&record.name), state_file::encode_hold(record).as_bytes(), |_| Ok(()))
    }

    /// Forgets the unattended-login hold of `name`. Returns whether a file was there.
    pub fn remove_hold(&self, name: &TokenName) -> Result<bool, StateError> {
        self.remove_file(&self.hold_file_of(name))
    }
}
