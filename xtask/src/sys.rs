//! Running system tools and small file-tree chores for the packaging commands.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// Runs a command to completion and returns its standard output, failing with its standard error
/// when it exits non-zero.
pub(crate) fn capture(command: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start {shown}; is the tool installed?"))?;
    if !output.status.success() {
        bail!("{shown} failed with {}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    String::from_utf8(output.stdout).with_context(|| format!("{shown} printed something that is not UTF-8"))
}

/// Whether a program is found on `PATH`.
pub(crate) fn have(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Fails with an installation hint when one of `programs` is missing from `PATH`.
pub(crate) fn require(programs: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<_> = programs.iter().filter(|(program, _)| !have(program)).collect();
    if !missing.is_empty() {
        let names: Vec<_> = missing.iter().map(|(program, _)| *program).collect();
        let packages: Vec<_> = missing.iter().map(|(_, package)| *package).collect();
        bail!("missing {}; install them with `apt-get install {}` and run again", names.join(", "), packages.join(" "));
    }
    Ok(())
}

/// Like [`require`], but as root installs the missing packages with apt-get first (a fresh machine has only
/// what the project installs); as another user it names them. Installing one package may remove another (bookworm's
/// `qemu-system-arm` removes a `qemu-utils` from backports, and with it `qemu-img`), so what is still missing after
/// the first round is installed in a second.
pub(crate) fn install_missing(programs: &[(&str, &str)]) -> anyhow::Result<()> {
    let root = capture(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0");
    for _round in 0..2 {
        let missing = missing_packages(programs, have);
        if missing.is_empty() || !root {
            break;
        }
        eprintln!("xtask: installing {} with apt-get", missing.join(" "));
        let quiet = |command: &mut Command| {
            let status = command.env("DEBIAN_FRONTEND", "noninteractive").status();
            status.is_ok_and(|status| status.success())
        };
        if !quiet(Command::new("apt-get").args(["update", "-qq"]))
            || !quiet(Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing))
        {
            bail!("apt-get could not install {}; install them by hand and run again", missing.join(" "));
        }
    }
    require(programs)
}

/// The packages of the `(program, package)` pairs whose program `have` does not find, each once, in order.
fn missing_packages<'a>(programs: &[(&str, &'a str)], have: impl Fn(&str) -> bool) -> Vec<&'a str> {
    let mut missing = Vec::new();
    for (program, package) in programs {
        if !have(program) && !missing.contains(package) {
            missing.push(*package);
        }
    }
    missing
}

/// The target directory cargo uses: `CARGO_TARGET_DIR` (made absolute) or `<workspace>/target`.
pub(crate) fn target_dir() -> anyhow::Result<PathBuf> {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => Ok(std::path::absolute(PathBuf::from(dir))
            .context("cannot resolve CARGO_TARGET_DIR; set it to an absolute path")?),
        _ => Ok(crate::util::workspace_root().join("target")),
    }
}

/// Removes `dir` if present and creates it empty.
pub(crate) fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}; remove it by hand", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}; check permissions", dir.display()))
}

/// Copies `from` to `to` (creating parent directories) and sets `mode`.
pub(crate) fn install(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    ensure_parent(to)?;
    fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    set_mode(to, mode)
}

/// Writes `contents` to `to` (creating parent directories) and sets `mode`.
pub(crate) fn write(to: &Path, contents: impl AsRef<[u8]>, mode: u32) -> anyhow::Result<()> {
    ensure_parent(to)?;
    fs::write(to, contents).with_context(|| format!("cannot write {}", to.display()))?;
    set_mode(to, mode)
}

/// Writes `from` compressed with `gzip -9n` (no name, no time: reproducible) to `to`.
pub(crate) fn gzip(from: &Path, to: &Path) -> anyhow::Result<()> {
    let output = Command::new("gzip")
        .args(["-9", "-n", "-c", "--"])
        .arg(from)
        .stderr(Stdio::inherit())
        .output()
        .context("could not start gzip; install it with `apt-get install gzip`")?;
    if !output.status.success() {
        bail!("gzip {} failed with {}", from.display(), output.status);
    }
    write(to, output.stdout, 0o644)
}

fn ensure_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    Ok(())
}

/// Sets the permission bits of `path`.
pub(crate) fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set mode {mode:o} on {}", path.display()))
}

/// Every regular file under `root`, as paths relative to it, sorted.
pub(crate) fn files_under(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path.strip_prefix(root).expect("walked below root").to_path_buf());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Makes every directory under `root` mode 0755 and sets every entry's modification time to
/// `epoch` (seconds), so archives built from the tree do not depend on when it was built.
pub(crate) fn normalize_tree(root: &Path, epoch: u64) -> anyhow::Result<()> {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    let mut pending = vec![root.to_path_buf()];
    let mut dirs = Vec::new();
    while let Some(dir) = pending.pop() {
        set_mode(&dir, 0o755)?;
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|file| file.set_modified(time))
                    .with_context(|| format!("cannot set the time of {}", path.display()))?;
            }
        }
        dirs.push(dir);
    }
    // Directories last: touching their files changed their times.
    for dir in dirs.iter().rev() {
        fs::File::open(dir)
            .and_then(|file| file.set_modified(time))
            .with_context(|| format!("cannot set the time of {}", dir.display()))?;
    }
    Ok(())
}

/// Seconds since the epoch to stamp build outputs with: `SOURCE_DATE_EPOCH`, else the last
/// commit's time, else now.
pub(crate) fn source_date_epoch() -> u64 {
    if let Some(epoch) = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|value| value.trim().parse().ok()) {
        return epoch;
    }
    let from_git =
        capture(Command::new("git").args(["log", "-1", "--format=%ct"]).current_dir(crate::util::workspace_root()));
    if let Some(epoch) = from_git.ok().and_then(|out| out.trim().parse().ok()) {
        return epoch;
    }
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_with_two_missing_programs_is_named_once() {
        let programs = [
            ("qemu-system-aarch64", "qemu-system-arm"),
            ("qemu-system-arm", "qemu-system-arm"),
            ("qemu-img", "qemu-utils"),
            ("ssh", "openssh-client"),
        ];
        let missing = missing_packages(&programs, |program| program == "ssh");
        assert_eq!(missing, vec!["qemu-system-arm", "qemu-utils"]);
        assert!(missing_packages(&programs, |_| true).is_empty());
    }
}
