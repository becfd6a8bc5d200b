//! A private scratch directory per run.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context as _;

/// A directory under the system's temp dir for one run: capture files, configs, the bus socket, the daemon's
/// state. Removed on drop.
///
/// It is named `att-<label>-<pid>-<n>` and has mode 0711: other uids (clients run with `setpriv`, the daemon
/// run as its own user) can reach a socket or file inside whose name they know, and list nothing. Directories
/// of this form whose process is gone are removed when a new one is made. A `Scratch` dereferences to its path.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Creates a fresh scratch directory, first removing those left by processes that are gone.
    pub fn new(label: &str) -> anyhow::Result<Scratch> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tmp = std::env::temp_dir();
        remove_abandoned(&tmp);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = tmp.join(format!("att-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).with_context(|| format!("could not create {}", path.display()))?;
        let scratch = Scratch { path };
        std::fs::set_permissions(&scratch.path, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("could not chmod {}", scratch.path.display()))?;
        Ok(scratch)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` in the directory with `mode`; returns the file's path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>, mode: u32) -> anyhow::Result<PathBuf> {
        let path = self.path.join(name);
        std::fs::write(&path, contents).with_context(|| format!("could not write {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("could not chmod {}", path.display()))?;
        Ok(path)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes `<tmp>/att-<label>-<pid>-<n>` directories whose process no longer runs.
fn remove_abandoned(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("att-") {
            continue;
        }
        let mut parts = name.rsplitn(3, '-');
        let (Some(n), Some(pid), Some(_)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if n.parse::<u32>().is_ok()
            && pid.parse::<u32>().is_ok()
            && !Path::new("/proc").join(pid).exists()
            && entry.file_type().is_ok_and(|kind| kind.is_dir())
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_is_0711_removed_on_drop_and_leftovers_of_gone_processes_are_removed() {
        let scratch = Scratch::new("testbed-selftest").unwrap();
        let path = scratch.path().to_owned();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o711);
        let file = scratch.write("secret", "s", 0o600).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        drop(scratch);
        assert!(!path.exists(), "the scratch directory outlived its drop");

        // A pid that has certainly exited: a child that was reaped.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let leftover = std::env::temp_dir().join(format!("att-testbed-selftest-{}-7", gone.id()));
        std::fs::create_dir_all(&leftover).unwrap();
        let mine = Scratch::new("testbed-selftest").unwrap();
        assert!(!leftover.exists(), "a directory left by a process that is gone was kept");
        assert!(mine.path().exists());
    }
}
