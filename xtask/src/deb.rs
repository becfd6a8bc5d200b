//! The Debian package: control data and maintainer scripts around the staged tree, built with
//! `dpkg-deb --root-owner-group`, and the lintian check.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::dist::Build;
use crate::sys;
use crate::util::workspace_root;

/// Who the package names as its maintainer when `DEBFULLNAME`/`DEBEMAIL` are not set.
const DEFAULT_MAINTAINER: &str = "att-tokend maintainers <att-tokend@users.noreply.github.com>";

/// The package's description: a synopsis line, then the extended text.
const DESCRIPTION: &str = "\
AllThingsTalk token agent for IoT gateways
 att-tokend logs in to the AllThingsTalk cloud (password and MFA code), keeps
 the one-hour access token and the 60-day refresh token alive by refreshing
 them before they lapse, and holds device and ground tokens. Local programs
 get the token they may use over the D-Bus system bus, or with the att-token
 command, without handling credentials themselves.";

/// Files under `/etc` that are the administrator's once installed.
pub(crate) const CONFFILES: &[&str] = &["/etc/att-tokend/config.toml"];

/// The Debian version for a Cargo version: a pre-release sorts before the release (`~`), and
/// this packaging is revision 1.
pub(crate) fn debian_version(version: &str) -> String {
    format!("{}-1", version.replacen('-', "~", 1))
}

/// Builds `att-tokend_<version>-1_<arch>.deb` in the dist directory from the staged tree; `shlib_depends` is
/// what `dpkg-shlibdeps` said the binaries need ([`shlib_depends`] on the host, the build root's for ARM).
pub(crate) fn build(stage: &Path, shlib_depends: &str, build: &Build) -> anyhow::Result<PathBuf> {
    let data = workspace_root().join("daemon").join("data");
    let version = debian_version(&build.version);
    let root = build.dist_dir.join("deb").join(format!("att-tokend_{version}_{}", build.arch));
    sys::fresh_dir(&root)?;
    copy_tree(stage, &root)?;

    let doc = root.join("usr/share/doc/att-tokend");
    let changelog = build.dist_dir.join("deb").join("changelog.Debian");
    sys::write(&changelog, debian_changelog(&version, &maintainer(), build.epoch)?, 0o644)?;
    sys::gzip(&changelog, &doc.join("changelog.Debian.gz"))?;
    let overrides = data.join("lintian-overrides");
    if overrides.is_file() {
        sys::install(&overrides, &root.join("usr/share/lintian/overrides/att-tokend"), 0o644)?;
    }
    sys::normalize_tree(&root, build.epoch)?;

    let control_dir = root.join("DEBIAN");
    let payload = sys::files_under(&root)?;
    let md5sums = sys::capture(Command::new("md5sum").arg("--").args(&payload).current_dir(&root))?;
    // ca-certificates: the daemon talks HTTPS and will not start without CA certificates (a minimal
    // Debian has none). procps: `kill`, which the unit's ExecReload= runs.
    let depends = format!("{shlib_depends}, ca-certificates, dbus, procps, systemd");
    let control = control(&version, &build.arch, &depends, installed_size_kib(&root, &payload)?);
    sys::write(&control_dir.join("control"), control, 0o644)?;
    sys::write(&control_dir.join("md5sums"), md5sums, 0o644)?;
    sys::write(&control_dir.join("conffiles"), CONFFILES.join("\n") + "\n", 0o644)?;
    for script in ["postinst", "prerm", "postrm"] {
        sys::install(&data.join("debian").join(script), &control_dir.join(script), 0o755)?;
    }
    sys::normalize_tree(&control_dir, build.epoch)?;

    let deb = build.dist_dir.join(format!("att-tokend_{version}_{}.deb", build.arch));
    crate::util::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&root)
            .arg(&deb)
            .env("SOURCE_DATE_EPOCH", build.epoch.to_string()),
    )?;
    Ok(deb)
}

/// Copies the contents of `from` into the existing directory `to`, keeping modes.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    crate::util::run(Command::new("cp").arg("-a").arg("--").arg(from.join(".")).arg(to))
}

fn maintainer() -> String {
    match (std::env::var("DEBFULLNAME"), std::env::var("DEBEMAIL")) {
        (Ok(name), Ok(email)) if !name.is_empty() && !email.is_empty() => format!("{name} <{email}>"),
        _ => DEFAULT_MAINTAINER.to_owned(),
    }
}

/// The binary package's control file.
fn control(version: &str, arch: &str, depends: &str, installed_size: u64) -> String {
    format!(
        "Package: att-tokend\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: {maintainer}\n\
         Installed-Size: {installed_size}\n\
         Depends: {depends}\n\
         Section: net\n\
         Priority: optional\n\
         Homepage: https://github.com/allthingstalk-tools/att-tokend\n\
         Description: {DESCRIPTION}\n",
        maintainer = maintainer(),
    )
}

/// The library dependencies of the binaries, as `dpkg-shlibdeps` computes them (`libc6 (>= 2.34)`).
pub(crate) fn shlib_depends(bin_dir: &Path, build: &Build) -> anyhow::Result<String> {
    // dpkg-shlibdeps wants to run in a source tree; an empty debian/control is enough.
    let work = build.dist_dir.join("deb").join("shlibdeps");
    sys::fresh_dir(&work.join("debian"))?;
    sys::write(&work.join("debian/control"), "", 0o644)?;
    let out = sys::capture(
        Command::new("dpkg-shlibdeps")
            .arg("-O")
            .arg(bin_dir.join("att-tokend"))
            .arg(bin_dir.join("att-token"))
            .current_dir(&work),
    )
    .context("dpkg-shlibdeps could not work out the library dependencies")?;
    parse_shlibdeps(&out)
}

/// The `shlibs:Depends=` value of `dpkg-shlibdeps -O` output; an error when there is none.
pub(crate) fn parse_shlibdeps(out: &str) -> anyhow::Result<String> {
    let depends =
        out.lines().find_map(|line| line.strip_prefix("shlibs:Depends=")).map(str::to_owned).unwrap_or_default();
    if depends.is_empty() {
        bail!("dpkg-shlibdeps found no library dependencies; is the binary for the architecture being packaged?");
    }
    Ok(depends)
}

/// Installed size as dpkg counts it: KiB per file, rounded up, plus one per directory.
fn installed_size_kib(root: &Path, files: &[PathBuf]) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut dirs = std::collections::BTreeSet::new();
    for file in files {
        let meta = std::fs::metadata(root.join(file)).with_context(|| format!("cannot stat {}", file.display()))?;
        total += meta.len().div_ceil(1024);
        dirs.extend(file.ancestors().skip(1).filter(|dir| !dir.as_os_str().is_empty()).map(Path::to_path_buf));
    }
    Ok(total + dirs.len() as u64)
}

/// A one-entry Debian changelog for this packaging revision.
fn debian_changelog(version: &str, maintainer: &str, epoch: u64) -> anyhow::Result<String> {
    let date = sys::capture(Command::new("date").args(["--utc", "--rfc-email", &format!("--date=@{epoch}")]))?;
    Ok(format!(
        "att-tokend ({version}) unstable; urgency=medium\n\n  \
         * Package att-tokend {version}; the changes are in changelog.gz.\n\n \
         -- {maintainer}  {date}\n",
        date = date.trim()
    ))
}

/// Runs lintian on `deb`, shows everything it says, and fails when it reports an error.
pub(crate) fn lintian(deb: &Path) -> anyhow::Result<()> {
    let output = Command::new("lintian")
        .args(["--info", "--display-info", "--fail-on", "error"])
        .arg(deb)
        .output()
        .context("could not start lintian; install it with `apt-get install lintian`")?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        bail!(
            "lintian reports errors for {}; fix them (or justify an override in daemon/data/lintian-overrides)",
            deb.display()
        );
    }
    println!("lintian: no errors for {}", deb.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_releases_sort_before_the_release() {
        assert_eq!(debian_version("0.1.0"), "0.1.0-1");
        assert_eq!(debian_version("1.0.0-rc.1"), "1.0.0~rc.1-1");
    }

    #[test]
    fn the_description_is_a_synopsis_and_indented_lines() {
        let mut lines = DESCRIPTION.lines();
        let synopsis = lines.next().unwrap();
        assert!(synopsis.len() <= 80 && !synopsis.ends_with('.'), "{synopsis:?}");
        for line in lines {
            assert!(line.starts_with(' ') && line.len() <= 80, "{line:?}");
        }
    }
}
