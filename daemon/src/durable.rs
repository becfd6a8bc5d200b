//! The one place that writes files durably: every file the daemon writes (sessions and holds in the state
//! directory, token files, the token files' manifest) goes through [`write_durably`] rather than a second copy.
//!
//! A write is a new temp file beside the target (`.<name>.tmp-<pid>-<n>`, `O_EXCL|O_NOFOLLOW`, mode 0600), the
//! bytes, fsync, rename over the target, fsync of the directory: a crash leaves either the old or the new file,
//! never a mix. A temp file that an interrupted write left behind is removed by whoever owns its directory
//! ([`is_leftover_temp`] for the state directory, [`remove_leftover_temps_of`] for a token file). [`FileId`] names
//! a written file by device and inode, so that a file is only deleted while it is still the one that was written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Marker in the names of temp files; such files are leftovers once no write is under way.
const TEMP_MARKER: &str = ".tmp-";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

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
        sync_dir(dir).map_err(fail("fsync", dir))?;
        Ok(FileId { dev: meta.dev(), ino: meta.ino() })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Flushes `dir`'s entries to disk, so that a rename or a removal in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|dir| dir.sync_all())
}

/// Whether `file_name` is a temp file of [`write_durably`] (`.<name>.tmp-*`). Only the owner of a directory may
/// remove such files, and only while it knows no write of its own is under way.
pub fn is_leftover_temp(file_name: &str) -> bool {
    file_name.starts_with('.') && file_name.contains(TEMP_MARKER)
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
