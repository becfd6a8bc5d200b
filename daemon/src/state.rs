//! Durable user sessions in the state directory (`/var/lib/att-tokend`, mode 0700).
//!
//! One file per user token, `<name>.json`, mode 0600 (JSON, or sealed JSON with a state key: see below), holding
//! the refresh and access tokens and the planner's durable facts ([`PersistedSession`]: wall-clock deadlines,
//! rotation, warnings given, clock trust), and whether a refresh was on its way, which is all a restart needs to
//! carry on, even after `kill -9`:
//! - writes are atomic: a new temp file (`O_EXCL`, 0600) in the same directory, write, fsync, rename over the old
//!   file, fsync the directory. A crash leaves either the old or the new file, never a mix; a leftover temp file
//!   is removed when the directory is opened;
//! - a file that cannot be parsed is set aside as `<name>.json.corrupt-<unix seconds>` with its bytes intact,
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
//! `att-tokend --rekey` adopts it once its owner moves it back. A sealed file that the configured key
//! cannot open because the key is missing or another one is never deleted or overwritten: it stays in place for the
//! key to come back, and is only moved aside (`<name>.json.other-key-<unix seconds>`) when a new login or a logout
//! replaces it. A sealed file that fails to authenticate (altered, damaged, another token's) is set aside as corrupt.
//!
//! The planner's part is stored whole, exactly as `token_model` hands it out, so nothing it needs after a
//! restart is lost in translation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::seal::{self, KeyId, OpenError, StateKey};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::error::Category;
use token_model::ids::{ClientId, TokenName};
use token_model::plan::PersistedSession;
use token_model::secret::{AccessToken, ExposeSecret, RefreshToken};
use zeroize::Zeroizing;

/// The format version written by this build. Files with a higher version are left alone.
pub const FORMAT_VERSION: u32 = 2;

/// Marker in the names of temp files; such files are removed when the directory is opened.
const TEMP_MARKER: &str = ".tmp-";

/// The lock file in the state directory. Its `flock` says who owns the directory; its text is the owner's pid.
pub const LOCK_FILE: &str = ".lock";

/// The cloud instance and OAuth2 client sessions are made with: a session is only sent to the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The base URL requests are sent to, without a trailing `/`, e.g. `https://api.allthingstalk.io`. The
    /// daemon takes it from `[api] url` parsed as the HTTP client does (`config::ApiConfig::url`: scheme and host in
    /// lower case, a default port dropped), so spelling differences in the config do not count as another instance.
    pub api_url: String,
    /// The `[api] client_id`.
    pub client_id: ClientId,
}

impl Origin {
    /// An origin from the base URL requests are sent to (its trailing `/` dropped) and a client id.
    pub fn new(api_url: &str, client_id: ClientId) -> Self {
        Self { api_url: api_url.trim_end_matches('/').to_owned(), client_id }
    }
}

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
    /// The `[api] url` (as [`Origin::api_url`]) the session was made with; refreshes go to the same instance.
    /// Absent in files written before it was recorded, which are taken to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
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
        path.display(), describe_holder(*holder_pid, holder_command.as_deref()), lock_file.display(),
        how_to_stop(*holder_pid, lock_file)
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

fn describe_holder(pid: Option<i32>, command: Option<&str>) -> String {
    match (pid, command) {
        (Some(pid), Some(command)) => format!("{command} (pid {pid})"),
        (Some(pid), None) => format!("pid {pid}"),
        (None, _) => "another process (its pid is not in the lock file)".to_owned(),
    }
}

fn how_to_stop(pid: Option<i32>, lock_file: &Path) -> String {
    match pid {
        Some(pid) => format!("that process (systemctl stop att-tokend if it is the service, else kill {pid})"),
        None => format!("the process that holds it (fuser -v {} shows it)", lock_file.display()),
    }
}

/// The state directory, opened (created 0700 if missing, permissions tightened, locked, leftovers cleaned).
/// Clones share the lock, which is released when the last one is dropped.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
    _lock: Arc<Flock<File>>,
    key: Option<Arc<StateKey>>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

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
        let lock = Self::lock(path)?;
        let dir = Self { path: path.to_owned(), _lock: Arc::new(lock), key: None };
        dir.remove_leftover_temp_files()?;
        Ok(dir)
    }

    /// Takes the exclusive lock on `<path>/.lock` without waiting, then writes this process's pid into it.
    fn lock(path: &Path) -> Result<Flock<File>, StateError> {
        let lock_file = path.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&lock_file)
            .map_err(io_error("open", &lock_file))?;
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let holder_pid = read_holder_pid(&mut file);
                let holder_command = holder_pid.and_then(|pid| {
                    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                    Some(comm.trim_end().to_owned()).filter(|c| !c.is_empty())
                });
                return Err(StateError::InUse { path: path.to_owned(), lock_file, holder_pid, holder_command });
            }
            Err((_, errno)) => return Err(io_error("lock", &lock_file)(io::Error::from(errno))),
        };
        if file.metadata().is_ok_and(|meta| meta.mode() & 0o077 != 0) {
            file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io_error("chmod", &lock_file))?;
        }
        file.set_len(0).map_err(io_error("write", &lock_file))?;
        file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0).map_err(io_error("write", &lock_file))?;
        Ok(file)
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
    /// With a state key the file is sealed; a file in its place that this key cannot open (sealed without a key
    /// configured, with another key, or in an unknown format) is first moved aside, never overwritten.
    pub fn save(&self, record: &SessionRecord) -> Result<(), StateError> {
        let bytes = self.stored_bytes(record)?;
        let target = self.file_of(&record.name);
        self.keep_unopenable(&target, &record.name)?;
        self.write_atomic(&target, &bytes, |_| Ok(()))
    }

    /// The bytes of `record` as stored: sealed with the key, else pretty JSON ([`encode`]).
    fn stored_bytes(&self, record: &SessionRecord) -> Result<Zeroizing<Vec<u8>>, StateError> {
        let encode_error = |error| StateError::Encode { name: record.name.to_string(), error };
        let Some(key) = &self.key else {
            return encode(record);
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

    /// Writes `bytes` to `target` through [`write_durably`]; `before_rename` runs on the temp file (tests inject a
    /// failure there).
    fn write_atomic(
        &self,
        target: &Path,
        bytes: &[u8],
        before_rename: impl FnOnce(&Path) -> io::Result<()>,
    ) -> Result<(), StateError> {
        write_durably(target, bytes, |_| Ok(()), before_rename).map(|_| ()).map_err(|e| StateError::Io {
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
        File::open(&self.path).and_then(|dir| dir.sync_all()).map_err(io_error("fsync", &self.path))
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
        let reason = match parse(&bytes, name) {
            Parsed::TooNew { version } => return LoadOutcome::TooNew { version },
            Parsed::Unusable { reason } => reason,
            Parsed::Record(record) => {
                let same_url = record.api_url.as_ref().is_none_or(|url| *url == origin.api_url);
                if same_url && record.client_id == origin.client_id {
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
}

impl StateDir {
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
        let reason = match parse_hold(&bytes, name) {
            Ok(hold) => return Ok(Some(hold)),
            Err(reason) => reason,
        };
        let moved = self.set_aside(&file, name, "corrupt", now).map_err(|e| e.to_string())?;
        Err(format!("{} was unusable ({reason}) and was moved to {}", file.display(), moved.display()))
    }

    /// Saves the unattended-login hold of `record.name` durably (it holds no secret: see [`HoldRecord`]).
    pub fn save_hold(&self, record: &HoldRecord) -> Result<(), StateError> {
        self.write_atomic(&self.hold_file_of(&record.name), encode_hold(record).as_bytes(), |_| Ok(()))
    }

    /// Forgets the unattended-login hold of `name`. Returns whether a file was there.
    pub fn remove_hold(&self, name: &TokenName) -> Result<bool, StateError> {
        self.remove_file(&self.hold_file_of(name))
    }
}

/// The first line of a hold file; a file starting otherwise is not read.
const HOLD_HEADER: &str = "att-tokend hold 1";

/// Why the daemon does not log a token in by itself until a person acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    /// The cloud refused the configured credentials: sending them again would only count towards a lockout.
    Refused,
    /// An admin logged the token out.
    LoggedOut,
}

impl HoldReason {
    /// The reason as a hold file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::Refused => "refused",
            HoldReason::LoggedOut => "logged-out",
        }
    }
}

/// What the daemon learned about a token's unattended login that must outlive a restart (`<name>.hold` in the state
/// directory): the cloud refused its configured credentials, or an admin logged it out. The credentials are named
/// by a salted fingerprint only (HMAC-SHA-256 keyed with a random salt), never stored: the hold applies while the
/// configured credentials still have that fingerprint, and a `Login` or other credentials lift it.
///
/// On disk it is a few lines of text ([`encode_hold`], read by [`parse_hold`]), like the token files' manifest:
/// the header, then `name`, `reason`, `since` (Unix seconds), `salt` and `fingerprint` (hex) and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRecord {
    /// The token name; must match the file name.
    pub name: TokenName,
    /// Why unattended login is held.
    pub reason: HoldReason,
    /// Unix seconds when it began.
    pub since: i64,
    /// The salt of [`HoldRecord::fingerprint`], hex.
    pub salt: String,
    /// HMAC-SHA-256 of the configured username, password and TOTP seed under the salt, hex.
    pub fingerprint: String,
    /// What the daemon said then (the cloud's refusal as login-flow words it); never a secret. One line.
    pub message: String,
}

/// The text of a hold file. Line breaks in the message become spaces.
pub fn encode_hold(hold: &HoldRecord) -> String {
    format!(
        "{HOLD_HEADER}\nname {}\nreason {}\nsince {}\nsalt {}\nfingerprint {}\nmessage {}\n",
        hold.name.as_str(),
        hold.reason.as_str(),
        hold.since,
        hold.salt,
        hold.fingerprint,
        hold.message.replace(['\n', '\r'], " ")
    )
}

/// Reads the bytes of the hold file of `name` ([`encode_hold`]'s text). The error says what is wrong in at most
/// [`REASON_MAX_CHARS`] characters, without quoting the file.
pub fn parse_hold(bytes: &[u8], name: &TokenName) -> Result<HoldRecord, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "it is not text".to_owned())?;
    let mut lines = text.lines();
    if lines.next() != Some(HOLD_HEADER) {
        return Err(format!("it does not start with {HOLD_HEADER:?}"));
    }
    let mut field = |key: &str| -> Result<&str, String> {
        lines
            .next()
            .and_then(|line| line.strip_prefix(key))
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or_else(|| format!("its line {key:?} is missing"))
    };
    let hex = |value: &str| !value.is_empty() && value.bytes().all(|b| b.is_ascii_hexdigit());
    let named = field("name")?;
    if named != name.as_str() {
        return Err("it is the hold of another token".to_owned());
    }
    let reason = match field("reason")? {
        "refused" => HoldReason::Refused,
        "logged-out" => HoldReason::LoggedOut,
        _ => return Err("its reason is neither refused nor logged-out".to_owned()),
    };
    let since = field("since")?.parse().map_err(|_| "its time is not a number".to_owned())?;
    let salt = field("salt")?.to_owned();
    let fingerprint = field("fingerprint")?.to_owned();
    if !hex(&salt) || !hex(&fingerprint) {
        return Err("its salt or fingerprint is not hex".to_owned());
    }
    let message = truncate_chars(field("message")?, 4 * REASON_MAX_CHARS);
    Ok(HoldRecord { name: name.clone(), reason, since, salt, fingerprint, message })
}

/// A file written by [`write_durably`], named by its device and inode: the same file as long as nobody replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl FileId {
    /// The id of what is at `path` now, without following a symlink there; `None` when nothing is, or it is not a
    /// regular file.
    pub fn at(path: &Path) -> Option<FileId> {
        let meta = fs::symlink_metadata(path).ok()?;
        meta.file_type().is_file().then(|| FileId { dev: meta.dev(), ino: meta.ino() })
    }
}

/// Why [`write_durably`] failed: what it was doing, to which file, and the system's error. Never holds file content.
#[derive(Debug)]
pub struct WriteError {
    /// What was being done ("create", "write", "fsync", "rename", ...).
    pub action: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// Why.
    pub error: io::Error,
}

/// The temp file beside `target` that [`write_durably`] writes first: `.<name>.tmp-<pid>-<n>`, in the same directory.
fn temp_beside(target: &Path) -> PathBuf {
    let file_name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(format!(
        ".{file_name}{TEMP_MARKER}{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The one durable write path: every file the daemon writes (sessions, token files, the manifest) goes through it.
///
/// A new temp file beside `target` (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600: never an existing file or a link),
/// then `prepare` on it (token files set their ACL here, so the final name never exists with other access),
/// `bytes`, fsync, `before_rename` (tests inject failures), rename over `target` (which replaces a symlink there
/// rather than following it), fsync of the directory. A crash leaves the old or the new file, never a mix; on error
/// the temp file is removed and `target` is untouched. Returns the written file's [`FileId`].
pub fn write_durably(
    target: &Path,
    bytes: &[u8],
    prepare: impl FnOnce(&File) -> io::Result<()>,
    before_rename: impl FnOnce(&Path) -> io::Result<()>,
) -> Result<FileId, WriteError> {
    let temp = temp_beside(target);
    let fail = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |error| WriteError { action, path, error }
    };
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_CLOEXEC.bits())
            .open(&temp)
            .map_err(fail("create", &temp))?;
        prepare(&file).map_err(fail("set the permissions of", &temp))?;
        file.write_all(bytes).map_err(fail("write", &temp))?;
        file.sync_all().map_err(fail("fsync", &temp))?;
        let meta = file.metadata().map_err(fail("examine", &temp))?;
        drop(file);
        before_rename(&temp).map_err(fail("write", &temp))?;
        fs::rename(&temp, target).map_err(fail("rename", &temp))?;
        let dir = target.parent().unwrap_or(Path::new("/"));
        File::open(dir).and_then(|dir| dir.sync_all()).map_err(fail("fsync", dir))?;
        Ok(FileId { dev: meta.dev(), ino: meta.ino() })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Removes temp files that an interrupted [`write_durably`] of `target` left beside it (`.<name>.tmp-*`), if they
/// are regular files owned by this process's user. Returns how many were removed.
pub fn remove_leftover_temps_of(target: &Path) -> usize {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else { return 0 };
    let prefix = format!(".{}{TEMP_MARKER}", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let euid = nix::unistd::geteuid().as_raw();
    let mut removed = 0;
    for entry in entries.flatten() {
        let ours = entry.file_name().to_string_lossy().starts_with(&prefix)
            && fs::symlink_metadata(entry.path()).is_ok_and(|m| m.file_type().is_file() && m.uid() == euid);
        if ours && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The longest reason [`parse`] gives for an unusable file, in characters: serde's messages may quote a value
/// from the file (an invalid name, a string where a number belongs), which must not make a log line unbounded.
pub const REASON_MAX_CHARS: usize = 240;

/// What the bytes of a session file hold, read by [`parse`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Parsed {
    /// A session record for the expected name.
    Record(Box<SessionRecord>),
    /// A file written by a newer att-tokend ([`FORMAT_VERSION`] is lower than `version`).
    TooNew {
        /// The version found.
        version: u32,
    },
    /// Not a usable session of this name: why, in at most [`REASON_MAX_CHARS`] characters, never with a secret.
    Unusable {
        /// Why.
        reason: String,
    },
}

/// Reads the bytes of the session file of `name`. Pure: [`StateDir::load`] reads the file and acts on the answer.
pub fn parse(bytes: &[u8], name: &TokenName) -> Parsed {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    if let Ok(Version { version }) = serde_json::from_slice::<Version>(bytes)
        && version > FORMAT_VERSION
    {
        return Parsed::TooNew { version };
    }
    let reason = match serde_json::from_slice::<SessionRecord>(bytes) {
        Ok(record) if record.name == *name => return Parsed::Record(Box::new(record)),
        Ok(record) => format!("it holds the session of {:?}, not {:?}", record.name.as_str(), name.as_str()),
        Err(error) => format!("it is not a valid session file ({})", describe(&error)),
    };
    Parsed::Unusable { reason: truncate_chars(&reason, REASON_MAX_CHARS) }
}

/// What is wrong with a session file, without quoting it: serde's messages quote the offending value
/// (`invalid type: string "…"`), and in a damaged file that value may be anything, a token included. The file
/// is set aside with its bytes intact for whoever wants to look.
fn describe(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(head, _)| head);
    let what = match error.classify() {
        Category::Syntax => "it is not valid JSON",
        Category::Eof => "it ends too early",
        Category::Io => "it could not be read",
        // Names of the record's own fields are safe to repeat.
        Category::Data if message.starts_with("missing field `") || message.starts_with("duplicate field `") => message,
        Category::Data => match message.rsplit_once(", expected ") {
            Some((_, expected)) => {
                return format!(
                    "a value of the wrong kind, expected {expected}, at line {}, column {}",
                    error.line(),
                    error.column()
                );
            }
            None => "a value that is not valid",
        },
    };
    format!("{what} at line {}, column {}", error.line(), error.column())
}

/// The bytes [`StateDir::save`] writes for `record` (pretty JSON); [`parse`] reads them back to the same record.
pub fn encode(record: &SessionRecord) -> Result<Zeroizing<Vec<u8>>, StateError> {
    serde_json::to_vec_pretty(record)
        .map(Zeroizing::new)
        .map_err(|error| StateError::Encode { name: record.name.to_string(), error })
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// What [`StateDir::rekey`] did, file by file (token names; never a secret).
#[derive(Debug, Default)]
pub struct RekeyReport {
    /// Sealed files opened with the old key and sealed again with the new one.
    pub resealed: Vec<String>,
    /// Clear files sealed with the new key.
    pub sealed: Vec<String>,
    /// Files already sealed with the new key (a rekey run again after an interruption).
    pub already: Vec<String>,
    /// Files left as they were, each with why and what to do.
    pub failed: Vec<String>,
}

impl StateDir {
    /// Seals every session file (`<name>.json`) with `new`: a file sealed with `old` is opened and sealed again,
    /// a clear one is sealed, one already sealed with `new` is left alone (so an interrupted run can be run again).
    /// Each file is replaced atomically; a file that cannot be opened is left as it is and listed in
    /// [`RekeyReport::failed`]. Set-aside files are not touched.
    pub fn rekey(&self, old: Option<&StateKey>, new: &StateKey) -> Result<RekeyReport, StateError> {
        let mut report = RekeyReport::default();
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.path).map_err(io_error("list", &self.path))? {
            let entry = entry.map_err(io_error("list", &self.path))?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = file_name.strip_suffix(".json").and_then(|stem| TokenName::new(stem).ok()) {
                names.push(name);
            }
        }
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        for name in names {
            let file = self.file_of(&name);
            let bytes = Zeroizing::new(fs::read(&file).map_err(io_error("read", &file))?);
            let plaintext = if seal::is_sealed(&bytes) {
                if seal::key_id_of(&bytes) == Some(new.id()) {
                    report.already.push(name.to_string());
                    continue;
                }
                let Some(old) = old else {
                    report.failed.push(format!(
                        "{}: it is sealed (key {}) and no current key was given; give the key it was sealed with \
                         (--old-key-file, [daemon] state_key_file or the state-key credential)",
                        file.display(),
                        seal::key_id_of(&bytes).map_or_else(|| "unknown".to_owned(), |id| id.to_string())
                    ));
                    continue;
                };
                match seal::open(old, name.as_str(), &bytes) {
                    Ok(plaintext) => plaintext,
                    Err(error) => {
                        report.failed.push(format!("{}: {error}; it was left as it is", file.display()));
                        continue;
                    }
                }
            } else {
                match serde_json::from_slice::<SessionRecord>(&bytes) {
                    Ok(record) if record.name == name => bytes.clone(),
                    _ => {
                        report.failed.push(format!(
                            "{}: it is not a valid session file of {name}; it was left as it is (the daemon sets it \
                             aside at start)",
                            file.display()
                        ));
                        continue;
                    }
                }
            };
            let sealed = seal::seal(new, name.as_str(), &plaintext);
            self.write_atomic(&file, &sealed, |_| Ok(()))?;
            if seal::is_sealed(&bytes) { &mut report.resealed } else { &mut report.sealed }.push(name.to_string());
        }
        Ok(report)
    }
}

/// The pid the lock's holder wrote, reading again briefly when it has locked but not yet written.
fn read_holder_pid(file: &mut File) -> Option<i32> {
    for attempt in 0..5 {
        let mut text = String::new();
        if file.rewind().is_ok()
            && file.read_to_string(&mut text).is_ok()
            && let Ok(pid) = text.trim().parse::<i32>()
        {
            return Some(pid);
        }
        if attempt < 4 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use token_model::plan::Rotation;
    use token_model::time::WallTime;

    use super::*;

    const URL: &str = "https://api.allthingstalk.io";

    fn origin() -> Origin {
        Origin::new(URL, ClientId::default())
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    fn record(name: &str) -> SessionRecord {
        SessionRecord {
            version: FORMAT_VERSION,
            name: TokenName::new(name).unwrap(),
            username: "alice@example.com".into(),
            client_id: ClientId::default(),
            api_url: Some(URL.to_owned()),
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
                retry_not_before: None,
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
    fn a_hold_reads_back_as_written_and_anything_else_is_refused_without_quoting_it() {
        let name = TokenName::new("main").unwrap();
        let hold = HoldRecord {
            name: name.clone(),
            reason: HoldReason::Refused,
            since: 1_796_619_434,
            salt: "00ff".repeat(8),
            fingerprint: "ab".repeat(32),
            message: "the cloud refused it;\nfix the password".to_owned(),
        };
        let text = encode_hold(&hold);
        let back = parse_hold(text.as_bytes(), &name).unwrap();
        assert_eq!(back, HoldRecord { message: "the cloud refused it; fix the password".to_owned(), ..hold.clone() });
        let logged_out = HoldRecord { reason: HoldReason::LoggedOut, ..hold.clone() };
        assert_eq!(parse_hold(encode_hold(&logged_out).as_bytes(), &name).unwrap().reason, HoldReason::LoggedOut);
        let other = TokenName::new("other").unwrap();
        for (bytes, why) in [
            (text.replace("att-tokend hold 1", "att-tokend hold 2"), "does not start"),
            (text.replace("reason refused", "reason secret-password"), "neither refused"),
            (text.replace("since 1796619434", "since soon"), "not a number"),
            (text.replace(&"ab".repeat(32), "secret-password"), "not hex"),
            (text.lines().take(4).collect::<Vec<_>>().join("\n"), "\"salt\" is missing"),
        ] {
            let error = parse_hold(bytes.as_bytes(), &name).unwrap_err();
            assert!(error.contains(why) && !error.contains("secret"), "{error}");
        }
        assert!(parse_hold(text.as_bytes(), &other).unwrap_err().contains("another token"));
        assert!(parse_hold(&[0xff, 0xfe], &name).unwrap_err().contains("not text"));
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

    #[test]
    fn parse_reads_what_encode_writes_and_bounds_its_reasons() {
        let name = TokenName::new("main").unwrap();
        let saved = record("main");
        let Parsed::Record(back) = parse(&encode(&saved).unwrap(), &name) else { panic!("a saved record reads back") };
        assert_eq!(*back, saved);
        // serde quotes an invalid name in full; a file of megabytes must not make a log line of megabytes.
        let long = format!(r#"{{"version":2,"name":"{}"}}"#, "x/".repeat(50_000));
        let Parsed::Unusable { reason } = parse(long.as_bytes(), &name) else { panic!("an invalid name is unusable") };
        assert!(reason.chars().count() <= REASON_MAX_CHARS + 1, "{} characters", reason.chars().count());
        assert!(reason.starts_with("it is not a valid session file"), "{reason}");
        // Found by the state_file fuzz target: serde quoted the offending value, whatever it was.
        let damaged = br#"{"version":"RT-SECRET-1","name":"main"}"#;
        let Parsed::Unusable { reason } = parse(damaged, &name) else { panic!("a damaged file is unusable") };
        assert!(!reason.contains("RT-SECRET"), "{reason}");
        assert!(reason.contains("expected u32") && reason.contains("line 1"), "{reason}");
        let tricky = br#"{"version":"x, expected RT-SECRET-1"}"#;
        let Parsed::Unusable { reason } = parse(tricky, &name) else { panic!("unusable") };
        assert!(!reason.contains("RT-SECRET"), "{reason}");
        let Parsed::Unusable { reason } = parse(br#"{"version":2}"#, &name) else { panic!("unusable") };
        assert!(reason.contains("missing field `name`"), "{reason}");
        let newer = br#"{"version":3,"anything":"else"}"#;
        assert!(matches!(parse(newer, &name), Parsed::TooNew { version: 3 }));
    }
}
