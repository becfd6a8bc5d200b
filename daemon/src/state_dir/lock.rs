//! The state directory's lock: an exclusive `flock` on `.lock` that one daemon holds for its whole life, with the
//! holder's pid in the file so that a second daemon can say who holds it and how to stop it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::{LOCK_FILE, StateError, io_error};

/// Takes the exclusive lock on `<path>/.lock` without waiting, then writes this process's pid into it.
pub(super) fn lock(path: &Path) -> Result<Flock<File>, StateError> {
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

/// The holder of the lock in words: `"att-tokend (pid 42)"`.
pub(super) fn describe_holder(pid: Option<i32>, command: Option<&str>) -> String {
    match (pid, command) {
        (Some(pid), Some(command)) => format!("{command} (pid {pid})"),
        (Some(pid), None) => format!("pid {pid}"),
        (None, _) => "another process (its pid is not in the lock file)".to_owned(),
    }
}

/// How to stop the holder of the lock.
pub(super) fn how_to_stop(pid: Option<i32>, lock_file: &Path) -> String {
    match pid {
        Some(pid) => format!("that process (systemctl stop att-tokend if it is the service, else kill {pid})"),
        None => format!("the process that holds it (fuser -v {} shows it)", lock_file.display()),
    }
}
