//! Token files: for programs that read a bearer token from a file rather than over D-Bus (`[[token]] files`).
//!
//! - A file holds exactly the token, with no trailing newline, while the token is served (`valid`, `refreshing`,
//!   `retrying`), and is removed (not emptied) when it stops being served (`needs-login`, `expired`, `revoked`, or
//!   a user token whose serving window ended), so that no program keeps using a dead token.
//! - Every write goes through the one durable path, [`durable::write_durably`]: a temp file beside it, created
//!   `O_EXCL|O_NOFOLLOW` with mode 0600, its access ACL set on the open temp file before any byte is written, fsync,
//!   rename (a reader sees the old token or the new one, never a mix), fsync of the directory.
//! - Who may read: the daemon's user owns the file (mode 0600) and, since it has no capability to chown, grants the
//!   token's `readers` read access with POSIX ACL entries (`user:UID:r--`, `group:GID:r--`, mask `r--`; see
//!   [`access_acl`]). Root needs none. A file system without ACLs leaves the file 0600, never wider, and says so.
//! - The files follow the engine's events in one task, off the serving path: the file I/O runs on the blocking
//!   pool, and a call to `GetToken` never waits for it. An event about a token (`TokenChanged`, `StatusChanged`)
//!   brings that token's files up to date and no others; a configuration applied (`Reconfigured`), or events
//!   missed, brings every file up to date and deletes those no longer configured.
//! - What the daemon wrote is listed in the manifest `token-files.manifest` in the state directory (paths and inode
//!   numbers, no secret), so that a file that a reload or a restart with another config no longer names is deleted.
//!   A file is deleted only while it is the very file the daemon wrote (same device and inode): one that someone
//!   replaced since is left alone. A configured path is the daemon's: whatever is there is replaced atomically.
//! - A failed write (a missing directory, a read-only one) is logged once per cause with the fix, announced with
//!   `AttentionNeeded`, and tried again at the next change of the token; it never stops the D-Bus service.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::mem;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use token_model::ids::TokenName;
use token_model::secret::ExposeSecret;
use tokio::sync::broadcast;

use crate::access::Principals;
use crate::durable::{self, FileId};
use crate::engine::{Engine, Event, Reread, TokenValue};
use crate::state_dir::StateDir;

/// The manifest of written token files, in the state directory.
pub const MANIFEST: &str = "token-files.manifest";

/// The extended attribute that holds a file's access ACL (acl(5)).
const ACL_XATTR: &str = "system.posix_acl_access";

// Tags and permissions of a POSIX ACL in its extended-attribute form (linux/posix_acl_xattr.h, acl(5)).
const ACL_VERSION: u32 = 2;
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;
const READ: u16 = 4;
const WRITE: u16 = 2;

/// The `system.posix_acl_access` value for a token file: the owner reads and writes, each of `uids` and `gids`
/// reads, nobody else has any access (`user::rw-`, `user:UID:r--`..., `group::---`, `group:GID:r--`...,
/// `mask::r--`, `other::---`). Entries are in the order the kernel requires (by tag, then id), each id once.
pub fn access_acl(uids: &BTreeSet<u32>, gids: &BTreeSet<u32>) -> Vec<u8> {
    let mut entries: Vec<(u16, u16, u32)> = vec![(ACL_USER_OBJ, READ | WRITE, ACL_UNDEFINED_ID)];
    entries.extend(uids.iter().map(|&uid| (ACL_USER, READ, uid)));
    entries.push((ACL_GROUP_OBJ, 0, ACL_UNDEFINED_ID));
    entries.extend(gids.iter().map(|&gid| (ACL_GROUP, READ, gid)));
    entries.push((ACL_MASK, READ, ACL_UNDEFINED_ID));
    entries.push((ACL_OTHER, 0, ACL_UNDEFINED_ID));
    let mut bytes = Vec::with_capacity(4 + 8 * entries.len());
    bytes.extend_from_slice(&ACL_VERSION.to_le_bytes());
    for (tag, perm, id) in entries {
        bytes.extend_from_slice(&tag.to_le_bytes());
        bytes.extend_from_slice(&perm.to_le_bytes());
        bytes.extend_from_slice(&id.to_le_bytes());
    }
    bytes
}

/// The ids a file's ACL names for `readers`: root and the daemon's own user need no entry.
fn acl_ids(readers: &Principals) -> (BTreeSet<u32>, BTreeSet<u32>) {
    let me = nix::unistd::geteuid().as_raw();
    let uids = readers.uids.iter().copied().filter(|&uid| uid != 0 && uid != me).collect();
    (uids, readers.gids.clone())
}

/// The manifest's first line; a file starting otherwise is not read.
const MANIFEST_HEADER: &str = "att-tokend token files 1";

/// The manifest as text: the header, then one line per file, `TOKEN DEV:INO[,DEV:INO] PATH` (a file's id, and while a
/// write is under way also the new one, so that a crash between the rename and the next manifest leaves the daemon
/// able to recognise either). Token names have no spaces and paths no line breaks (the config refuses them).
fn encode_manifest(written: &BTreeMap<PathBuf, Written>) -> String {
    let mut text = format!("{MANIFEST_HEADER}\n");
    for (path, w) in written {
        let ids: Vec<String> = w.ids.iter().map(|id| format!("{}:{}", id.dev, id.ino)).collect();
        text.push_str(&format!("{} {} {}\n", w.token, ids.join(","), path.display()));
    }
    text
}

/// Reads [`encode_manifest`]'s text: (path, token, ids) per file, or `None` when it is not such a text.
fn parse_manifest(text: &str) -> Option<Vec<(PathBuf, String, Vec<FileId>)>> {
    let mut lines = text.lines();
    if lines.next()? != MANIFEST_HEADER {
        return None;
    }
    lines
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let (token, ids, path) = (parts.next()?, parts.next()?, parts.next()?);
            let ids = ids
                .split(',')
                .filter(|id| !id.is_empty())
                .map(|id| {
                    let (dev, ino) = id.split_once(':')?;
                    Some(FileId { dev: dev.parse().ok()?, ino: ino.parse().ok()? })
                })
                .collect::<Option<Vec<FileId>>>()?;
            Some((PathBuf::from(path), token.to_owned(), ids))
        })
        .collect()
}

/// What the task knows of a file it wrote.
struct Written {
    token: String,
    /// What the file holds, as far as this run knows: `None` for a file found in the manifest at start.
    value: Option<TokenValue>,
    readers: Principals,
    ids: Vec<FileId>,
}

/// One change to make.
enum Op {
    Write { path: PathBuf, token: TokenName, value: TokenValue, readers: Principals },
    Remove { path: PathBuf },
}

/// A failed write or removal, or an ACL the file system refused: what to log and announce.
struct Problem {
    token: String,
    path: PathBuf,
    /// Identifies the cause, to say it once.
    cause: String,
    message: String,
}

/// The files' side of the daemon: everything the blocking pool needs, moved there for each sync and back.
struct Files {
    dir: StateDir,
    written: BTreeMap<PathBuf, Written>,
    /// Whether the manifest was read.
    opened: bool,
}

/// Starts the task that keeps every configured token file current; it runs for the life of the runtime.
pub fn spawn(engine: Engine, dir: StateDir) {
    // Subscribed before the first sync: nothing that happens after it is missed.
    let events = engine.subscribe();
    tokio::spawn(run(engine, dir, events));
}

/// Which tokens' files a sync brings up to date.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    /// These tokens' files, and no others.
    Tokens(BTreeSet<TokenName>),
    /// Every configured file; those no longer configured are deleted.
    Every,
}

impl Due {
    /// Adds what `received` asks to be read again.
    fn add(&mut self, received: &Result<Event, broadcast::error::RecvError>) {
        match (&mut *self, Event::rereads(received)) {
            (_, Reread::Nothing) | (Due::Every, _) => {}
            (Due::Tokens(names), Reread::Token(name)) => {
                names.insert(name.clone());
            }
            (Due::Tokens(_), Reread::Every) => *self = Due::Every,
        }
    }

    /// What the files should be now, for the tokens due: see [`Engine::token_files`].
    fn wanted(&self, engine: &Engine) -> Vec<(PathBuf, TokenName, Principals, Option<TokenValue>)> {
        match self {
            Due::Tokens(names) => engine.token_files_of(names),
            Due::Every => engine.token_files(),
        }
    }
}

async fn run(engine: Engine, dir: StateDir, mut events: broadcast::Receiver<Event>) {
    // Opened (the manifest read) on the blocking pool by the first sync.
    let mut files = Files { dir, written: BTreeMap::new(), opened: false };
    // Causes already logged, per path: each is said once, and again only after the file was written in between.
    let mut told: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut due = Due::Every;
    loop {
        let wanted = due.wanted(&engine);
        let every = mem::replace(&mut due, Due::Tokens(BTreeSet::new())) == Due::Every;
        if !files.opened || !files.plan(&wanted, every).is_empty() {
            let sync = move || files.sync(&wanted, every);
            let Ok((back, problems)) = tokio::task::spawn_blocking(sync).await else { return };
            files = back;
            report(&engine, &files, problems, &mut told);
        }
        // Wait for a change, then take every other one already queued: one sync covers them all.
        let received = events.recv().await;
        if matches!(received, Err(broadcast::error::RecvError::Closed)) {
            return;
        }
        due.add(&received);
        loop {
            match events.try_recv() {
                Ok(event) => due.add(&Ok(event)),
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    due.add(&Err(broadcast::error::RecvError::Lagged(missed)));
                }
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => break,
            }
        }
    }
}

/// Logs and announces new problems once; forgets those of files now written as wanted.
fn report(engine: &Engine, files: &Files, problems: Vec<Problem>, told: &mut BTreeMap<PathBuf, String>) {
    let failing: BTreeSet<&Path> = problems.iter().map(|p| p.path.as_path()).collect();
    told.retain(|path, _| failing.contains(path.as_path()) || !files.written.contains_key(path));
    for problem in problems {
        if told.get(&problem.path) == Some(&problem.cause) {
            tracing::debug!(token = %problem.token, file = %problem.path.display(), "{}", problem.message);
            continue;
        }
        tracing::warn!(token = %problem.token, file = %problem.path.display(), "{}", problem.message);
        if let Ok(name) = TokenName::new(&problem.token) {
            engine.emit(Event::AttentionNeeded { name, reason: problem.message.clone() });
        }
        told.insert(problem.path, problem.cause);
    }
}

impl Files {
    /// Opens the files on first use, then makes them as `wanted` says (blocking I/O). `every`: `wanted` is every
    /// configured file (else the files of some tokens only).
    fn sync(
        mut self,
        wanted: &[(PathBuf, TokenName, Principals, Option<TokenValue>)],
        every: bool,
    ) -> (Files, Vec<Problem>) {
        if !self.opened {
            let configured: Vec<PathBuf> = wanted.iter().map(|(path, ..)| path.clone()).collect();
            self = Files::open(self.dir, &configured);
            self.adopt_unchanged(wanted);
        }
        let ops = self.plan(wanted, every);
        if ops.is_empty() {
            return (self, Vec::new());
        }
        self.apply(ops)
    }

    /// Reads the manifest and removes temp files that an interrupted write left beside the files.
    fn open(dir: StateDir, configured: &[PathBuf]) -> Files {
        let manifest_path = dir.path().join(MANIFEST);
        let manifest = match std::fs::read_to_string(&manifest_path) {
            Ok(text) => parse_manifest(&text).unwrap_or_else(|| {
                tracing::warn!(
                    file = %manifest_path.display(),
                    "the list of token files written is unreadable; files written before are not deleted \
                     automatically, remove any that are no longer configured by hand"
                );
                Vec::new()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(file = %manifest_path.display(), "cannot read the list of token files written: {e}");
                Vec::new()
            }
        };
        let written: BTreeMap<PathBuf, Written> = manifest
            .into_iter()
            .map(|(path, token, ids)| (path, Written { token, value: None, readers: Principals::default(), ids }))
            .collect();
        for path in written.keys().chain(configured) {
            let removed = durable::remove_leftover_temps_of(path);
            if removed > 0 {
                tracing::warn!(file = %path.display(), removed, "removed temp files left by an interrupted write");
            }
        }
        Files { dir, written, opened: true }
    }

    /// At start: a file the manifest lists that still is the daemon's (same inode, its user's) and holds exactly the
    /// wanted token with the readers' ACL is taken as written, so that a restart serving the same token leaves it
    /// untouched (same inode, time and bytes) instead of writing it again.
    fn adopt_unchanged(&mut self, wanted: &[(PathBuf, TokenName, Principals, Option<TokenValue>)]) {
        for (path, token, readers, value) in wanted {
            let (Some(value), Some(known)) = (value, self.written.get_mut(path)) else { continue };
            if known.value.is_some() || known.token != token.as_str() {
                continue;
            }
            let current = Written {
                token: known.token.clone(),
                value: Some(value.clone()),
                readers: readers.clone(),
                ids: known.ids.clone(),
            };
            if is_ours(path, &current) && has_acl_of(path, readers) {
                tracing::debug!(token = %token, file = %path.display(), "the token file already holds the token");
                *known = current;
            }
        }
    }

    /// What to change so that the files are as `wanted` says (see [`Engine::token_files`]). `every`: `wanted` is
    /// every configured file, so a file written before and not in it is deleted.
    fn plan(&self, wanted: &[(PathBuf, TokenName, Principals, Option<TokenValue>)], every: bool) -> Vec<Op> {
        let mut ops = Vec::new();
        for (path, token, readers, value) in wanted {
            let current = self.written.get(path);
            match value {
                Some(value) => {
                    let same = current.is_some_and(|w| {
                        w.token == token.as_str()
                            && w.readers == *readers
                            && w.value.as_ref().is_some_and(|v| v.expose_secret() == value.expose_secret())
                    });
                    if !same {
                        let (path, token, readers, value) =
                            (path.clone(), token.clone(), readers.clone(), value.clone());
                        ops.push(Op::Write { path, token, value, readers });
                    }
                }
                None if current.is_some() => ops.push(Op::Remove { path: path.clone() }),
                None => {}
            }
        }
        if every {
            let configured: BTreeSet<&PathBuf> = wanted.iter().map(|(path, ..)| path).collect();
            for path in self.written.keys().filter(|path| !configured.contains(path)) {
                ops.push(Op::Remove { path: path.clone() });
            }
        }
        ops
    }

    /// Carries out `ops` (blocking I/O). Returns itself and what went wrong.
    fn apply(mut self, ops: Vec<Op>) -> (Files, Vec<Problem>) {
        let mut problems = Vec::new();
        for op in ops {
            match op {
                Op::Write { path, token, value, readers } => {
                    if let Err(problem) = self.write(&path, &token, &value, &readers) {
                        problems.push(problem);
                    }
                }
                Op::Remove { path } => {
                    if let Some(problem) = self.remove(&path) {
                        problems.push(problem);
                    }
                }
            }
        }
        self.save_manifest();
        (self, problems)
    }

    fn write(
        &mut self,
        path: &Path,
        token: &TokenName,
        value: &TokenValue,
        readers: &Principals,
    ) -> Result<(), Problem> {
        let (uids, gids) = acl_ids(readers);
        let mut acl_refused: Option<io::Error> = None;
        let set_acl = |file: &std::fs::File| {
            if uids.is_empty() && gids.is_empty() {
                return Ok(());
            }
            let acl = access_acl(&uids, &gids);
            match rustix::fs::fsetxattr(file.as_fd(), ACL_XATTR, &acl, rustix::fs::XattrFlags::empty()) {
                Ok(()) => Ok(()),
                // Not supported, or ids the kernel cannot map: the file stays 0600 (never wider), and is said.
                Err(errno) if errno == rustix::io::Errno::OPNOTSUPP || errno == rustix::io::Errno::INVAL => {
                    acl_refused = Some(io::Error::from(errno));
                    Ok(())
                }
                Err(errno) => Err(io::Error::from(errno)),
            }
        };
        // The manifest learns the new file's id before the rename, so that a crash just after it cannot leave a
        // file the daemon would not recognise as its own.
        let mut pending: Option<FileId> = None;
        let before_rename = |temp: &Path| {
            if let Some(id) = FileId::at(temp) {
                pending = Some(id);
                self.written
                    .entry(path.to_owned())
                    .or_insert_with(|| Written {
                        token: token.as_str().to_owned(),
                        value: None,
                        readers: Principals::default(),
                        ids: Vec::new(),
                    })
                    .ids
                    .push(id);
                self.save_manifest();
            }
            Ok(())
        };
        // The token is written straight from the shared value: no copy of it is made here.
        let result = durable::write_durably(path, value.expose_secret().as_bytes(), set_acl, before_rename);
        match result {
            Ok(id) => {
                // A refused ACL is tried again when the token (or its readers) next change.
                self.written.insert(
                    path.to_owned(),
                    Written {
                        token: token.as_str().to_owned(),
                        value: Some(value.clone()),
                        readers: readers.clone(),
                        ids: vec![id],
                    },
                );
                match acl_refused {
                    None => Ok(()),
                    Some(error) => Err(acl_problem(token, path, &error)),
                }
            }
            Err(error) => {
                if let Some(id) = pending
                    && let Some(written) = self.written.get_mut(path)
                {
                    written.ids.retain(|known| *known != id);
                    if written.ids.is_empty() {
                        self.written.remove(path);
                    }
                }
                Err(write_problem(token, path, &error))
            }
        }
    }

    /// Deletes `path` if it is still the file the daemon wrote; forgets it either way.
    fn remove(&mut self, path: &Path) -> Option<Problem> {
        let written = self.written.remove(path)?;
        FileId::at(path)?;
        if !is_ours(path, &written) {
            tracing::info!(
                file = %path.display(),
                "left a token file in place that the daemon did not write (someone replaced it); remove it by hand if \
                 no program needs it"
            );
            return None;
        }
        match std::fs::remove_file(path) {
            Ok(()) => {
                tracing::info!(token = %written.token, file = %path.display(), "removed the token file");
                None
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => {
                let message = format!(
                    "cannot remove the token file {}: {error}; {}",
                    path.display(),
                    hint(path, &error, "remove")
                );
                // Still the daemon's: try again at the next change.
                self.written.insert(path.to_owned(), written);
                let token = self.written[path].token.clone();
                Some(Problem { token, path: path.to_owned(), cause: format!("remove {:?}", error.kind()), message })
            }
        }
    }

    /// Writes the manifest (paths and ids only) durably; a failure is logged and the old manifest stays.
    fn save_manifest(&self) {
        if let Err(error) = self.dir.write_plain(MANIFEST, encode_manifest(&self.written).as_bytes()) {
            tracing::warn!("cannot save the list of token files written: {error}");
        }
    }
}

/// Whether the file at `path` is still the one the daemon wrote: its own user's, the same inode (device and number),
/// and, when this run wrote it, the same bytes (an inode number freed by a deletion may be given to the next file).
fn is_ours(path: &Path, written: &Written) -> bool {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return false };
    let id = FileId { dev: meta.dev(), ino: meta.ino() };
    if !meta.file_type().is_file() || meta.uid() != nix::unistd::geteuid().as_raw() || !written.ids.contains(&id) {
        return false;
    }
    let Some(value) = &written.value else { return true };
    let expected = value.expose_secret().as_bytes();
    let mut held = zeroize::Zeroizing::new(Vec::with_capacity(expected.len() + 1));
    let opened = std::fs::OpenOptions::new().read(true).custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits()).open(path);
    opened.and_then(|file| file.take(expected.len() as u64 + 1).read_to_end(&mut held)).is_ok() && *held == expected
}

/// Whether the file at `path` carries exactly the access ACL a write for `readers` sets (none when no reader needs
/// an entry).
fn has_acl_of(path: &Path, readers: &Principals) -> bool {
    let (uids, gids) = acl_ids(readers);
    let mut held = vec![0_u8; 4 + 8 * (uids.len() + gids.len() + 4) + 1];
    match rustix::fs::lgetxattr(path, ACL_XATTR, &mut held[..]) {
        Ok(len) => !(uids.is_empty() && gids.is_empty()) && held[..len] == access_acl(&uids, &gids)[..],
        Err(errno) => errno == rustix::io::Errno::NODATA && uids.is_empty() && gids.is_empty(),
    }
}

/// The fix for a failed file operation in `path`'s directory.
fn hint(path: &Path, error: &io::Error, what: &str) -> String {
    let dir = path.parent().unwrap_or(Path::new("/")).display();
    match error.raw_os_error().map(nix::errno::Errno::from_raw) {
        Some(nix::errno::Errno::ENOENT) => format!(
            "the directory {dir} does not exist; create it (writable by the daemon's user), or put the file under \
             /run/att-tokend/, which systemd creates for the service"
        ),
        Some(nix::errno::Errno::EROFS | nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => format!(
            "the daemon may not {what} files in {dir}: under systemd only /run/att-tokend/ is writable, so add \
             ReadWritePaths={dir} in a drop-in (systemctl edit att-tokend; README, \"Token files\") and make the \
             directory writable by the att-tokend user"
        ),
        Some(nix::errno::Errno::EISDIR | nix::errno::Errno::ENOTEMPTY | nix::errno::Errno::EEXIST) => {
            format!("a directory is in the way at {}; remove it or name another file", path.display())
        }
        Some(nix::errno::Errno::ENOSPC | nix::errno::Errno::EDQUOT) => {
            format!("the file system of {dir} is full; free space there")
        }
        _ => format!("check {dir} and its permissions"),
    }
}

fn write_problem(token: &TokenName, path: &Path, error: &durable::WriteError) -> Problem {
    let message = format!(
        "cannot write the token file {}: cannot {} {}: {}; {}; the daemon tries again at the token's next change",
        path.display(),
        error.action,
        error.path.display(),
        error.error,
        hint(path, &error.error, "write")
    );
    Problem {
        token: token.as_str().to_owned(),
        path: path.to_owned(),
        cause: format!("{} {:?}", error.action, error.error.kind()),
        message,
    }
}

fn acl_problem(token: &TokenName, path: &Path, error: &io::Error) -> Problem {
    let why = if error.raw_os_error() == Some(nix::errno::Errno::EINVAL as i32) {
        "the kernel refused an ACL naming the readers' ids: the service probably runs with PrivateUsers=yes, under \
         which other users' ids do not exist; remove that setting from your drop-ins"
    } else {
        "its file system does not support POSIX ACLs; put the file on one that does (tmpfs such as /run, ext4, xfs, \
         btrfs)"
    };
    Problem {
        token: token.as_str().to_owned(),
        path: path.to_owned(),
        cause: format!("acl {:?}", error.raw_os_error()),
        message: format!(
            "the token file {} is written with mode 0600, so its readers cannot read it: {why} ({error})",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u32]) -> BTreeSet<u32> {
        ids.iter().copied().collect()
    }

    /// The entries of an encoded ACL as (tag, perm, id).
    fn entries(bytes: &[u8]) -> Vec<(u16, u16, u32)> {
        assert_eq!(u32::from_le_bytes(bytes[..4].try_into().unwrap()), 2, "version 2");
        assert_eq!((bytes.len() - 4) % 8, 0, "whole entries");
        bytes[4..]
            .chunks(8)
            .map(|e| {
                (
                    u16::from_le_bytes([e[0], e[1]]),
                    u16::from_le_bytes([e[2], e[3]]),
                    u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
                )
            })
            .collect()
    }

    #[test]
    fn the_acl_gives_readers_read_only_and_everyone_else_nothing_in_kernel_order() {
        let acl = access_acl(&set(&[1001, 33]), &set(&[990]));
        let any = u32::MAX;
        assert_eq!(
            entries(&acl),
            [
                (0x01, 6, any),
                (0x02, 4, 33),
                (0x02, 4, 1001),
                (0x04, 0, any),
                (0x08, 4, 990),
                (0x10, 4, any),
                (0x20, 0, any)
            ]
        );
        // The exact bytes of one entry, as acl(5)'s xattr form has them: little-endian tag, perm, id.
        assert_eq!(&acl[..12], &[2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff]);
        // Without readers, the minimal ACL: the same as mode 0600 (mask r-- is never wider than the owner's).
        assert_eq!(entries(&access_acl(&set(&[]), &set(&[]))).len(), 4);
    }

    #[test]
    fn the_manifest_reads_back_what_it_wrote_and_refuses_anything_else() {
        let mut written = BTreeMap::new();
        let ids = vec![FileId { dev: 2049, ino: 77 }, FileId { dev: 2049, ino: 78 }];
        let w = Written { token: "main".into(), value: None, readers: Principals::default(), ids: ids.clone() };
        written.insert(PathBuf::from("/run/att-tokend/with space.token"), w);
        let text = encode_manifest(&written);
        assert_eq!(text, "att-tokend token files 1\nmain 2049:77,2049:78 /run/att-tokend/with space.token\n");
        assert_eq!(
            parse_manifest(&text),
            Some(vec![(PathBuf::from("/run/att-tokend/with space.token"), "main".to_owned(), ids)])
        );
        assert_eq!(parse_manifest("att-tokend token files 1\n"), Some(vec![]));
        assert_eq!(parse_manifest("{\"files\":[]}"), None);
        assert_eq!(parse_manifest("att-tokend token files 1\nmain 1:x /a\n"), None);
        assert_eq!(parse_manifest("att-tokend token files 1\nmain\n"), None);
    }

    #[test]
    fn root_and_the_daemons_own_user_get_no_entry() {
        let me = nix::unistd::geteuid().as_raw();
        let readers = Principals::new([0, me, 4242], [0, 7]);
        let (uids, gids) = acl_ids(&readers);
        let expected: BTreeSet<u32> = if me == 4242 { set(&[]) } else { set(&[4242]) };
        assert_eq!(uids, expected);
        assert_eq!(gids, set(&[0, 7]), "a group is named even when it is root's: its other members need it");
    }

    #[test]
    fn a_written_file_carries_the_acl_and_a_removal_spares_a_file_someone_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(&tmp.path().join("state")).unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let mut files = Files::open(dir.clone(), &[]);
        let name = TokenName::new("main").unwrap();
        let value = TokenValue::Static(std::sync::Arc::new(token_model::secret::StaticToken::new("maker:abc")));
        let readers = Principals::new([4242], [4343]);
        let (a, b) = (out.join("a.token"), out.join("b.token"));
        let wanted = vec![
            (a.clone(), name.clone(), readers.clone(), Some(value.clone())),
            (b.clone(), name.clone(), readers.clone(), Some(value.clone())),
        ];
        let ops = files.plan(&wanted, true);
        let (back, problems) = files.apply(ops);
        files = back;
        assert!(files.plan(&wanted, true).is_empty(), "nothing more to do once written");
        assert_eq!(std::fs::read(&a).unwrap(), b"maker:abc", "exactly the token, no newline");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        if problems.is_empty() {
            // With an ACL the group bits show its mask (r--); the final name never existed without it.
            assert_eq!(mode, 0o640);
            let mut buf = vec![0_u8; 256];
            let len = rustix::fs::getxattr(&a, ACL_XATTR, &mut buf).unwrap();
            assert_eq!(entries(&buf[..len]), entries(&access_acl(&set(&[4242]), &set(&[4343]))));
        } else {
            assert_eq!(mode, 0o600, "a file system without ACLs keeps the file private");
        }
        let manifest = std::fs::read_to_string(dir.path().join(MANIFEST)).unwrap();
        assert!(manifest.contains("a.token") && !manifest.contains("maker:abc"), "{manifest}");

        // b is replaced by someone; then neither file is configured any more.
        std::fs::remove_file(&b).unwrap();
        std::fs::write(&b, "theirs").unwrap();
        assert!(files.plan(&[], false).is_empty(), "a sync of other tokens' files deletes none of these");
        let ops = files.plan(&[], true);
        let (back, problems) = files.apply(ops);
        assert!(problems.is_empty());
        assert!(!a.exists(), "the daemon's own file is deleted");
        assert_eq!(std::fs::read(&b).unwrap(), b"theirs", "a file the daemon did not write is left alone");
        assert!(back.written.is_empty());
        // A restart finds an empty manifest: nothing to remove.
        drop(back);
        let again = Files::open(dir, &[]);
        assert!(again.written.is_empty());
    }

    #[test]
    fn events_about_tokens_make_only_their_files_due_and_a_reload_makes_every_file_due() {
        let (a, b) = (TokenName::new("a").unwrap(), TokenName::new("b").unwrap());
        let mut due = Due::Tokens(BTreeSet::new());
        due.add(&Ok(Event::AttentionNeeded { name: a.clone(), reason: "look".into() }));
        assert_eq!(due, Due::Tokens(BTreeSet::new()), "a message changes no file");
        due.add(&Ok(Event::StatusChanged(a.clone())));
        due.add(&Ok(Event::TokenChanged { name: b.clone(), expires_at: 0 }));
        due.add(&Ok(Event::StatusChanged(a.clone())));
        assert_eq!(due, Due::Tokens(BTreeSet::from([a.clone(), b.clone()])), "the named tokens, each once");
        due.add(&Ok(Event::Reconfigured));
        assert_eq!(due, Due::Every);
        due.add(&Ok(Event::StatusChanged(a)));
        assert_eq!(due, Due::Every, "every file stays due");
        let mut missed = Due::Tokens(BTreeSet::from([b]));
        missed.add(&Err(broadcast::error::RecvError::Lagged(3)));
        assert_eq!(missed, Due::Every, "events missed: every file is due");
    }
}
