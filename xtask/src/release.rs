//! `cargo xtask release X.Y.Z`: bump the workspace version, commit `Release X.Y.Z`, tag `vX.Y.Z`, then build
//! the release files of every architecture with `dist`.
//!
//! Refuses on a dirty tree, an existing tag, a version that goes backwards, or a CHANGELOG.md
//! without a section for the version. Safe to re-run: when HEAD already is that release, commit
//! and tag, it says so and succeeds; when only the tag is missing, it adds the tag.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::sys::capture;

/// Help for `cargo xtask release`.
pub(crate) const HELP: &str = "\
cargo xtask release X.Y.Z

Sets [workspace.package] version in Cargo.toml to X.Y.Z, updates Cargo.lock, commits
\"Release X.Y.Z\" and tags vX.Y.Z (annotated). Needs a clean tree and a `## X.Y.Z` (or
`## [X.Y.Z]`) section in CHANGELOG.md. Pushing is left to you: git push --follow-tags.

Then builds the release files of the tagged commit with `cargo xtask dist`, once per gateway
architecture: this machine's (x86_64-unknown-linux-gnu), aarch64-unknown-linux-gnu (arm64)
and armv7-unknown-linux-gnueabihf (armhf); tarballs, packages, build infos and one
SHA256SUMS end up in <target dir>/dist/. The ARM builds need root (see `cargo xtask dist
--help`). Re-running on a released HEAD only builds.
";

/// What a release builds, after the host's own: the ARM gateways' targets.
const CROSS_TARGETS: [&str; 2] = ["aarch64-unknown-linux-gnu", "armv7-unknown-linux-gnueabihf"];

/// Runs `cargo xtask release`.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    match args {
        [flag] if flag == "-h" || flag == "--help" => {
            print!("{HELP}");
            Ok(())
        }
        [version] => {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let outcome = release(&crate::util::workspace_root(), version, Path::new(&cargo))?;
            println!("{outcome}");
            build_all()
        }
        _ => bail!("usage: cargo xtask release X.Y.Z (e.g. cargo xtask release 0.2.0)"),
    }
}

/// Builds the release files for this machine and [`CROSS_TARGETS`] with `dist`, and lists them.
fn build_all() -> anyhow::Result<()> {
    crate::dist::preflight(false)?;
    let targets = std::iter::once(None).chain(CROSS_TARGETS.map(Some));
    let mut built = Vec::new();
    let mut sums = None;
    for target in targets {
        let outputs = crate::dist::dist(target).with_context(|| {
            format!(
                "the release is committed and tagged, but building for {} failed; fix the error and run \
                 `cargo xtask release` again (it only builds then)",
                target.unwrap_or("this machine")
            )
        })?;
        built.extend([outputs.tarball, outputs.deb, outputs.buildinfo]);
        sums = Some(outputs.sums);
    }
    for path in built.iter().chain(&sums) {
        println!("{}", path.display());
    }
    Ok(())
}

/// What a release run did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Committed and tagged.
    Released(String),
    /// The release commit was there already; only the tag was added.
    Tagged(String),
    /// HEAD already is the release commit with its tag: nothing to do.
    AlreadyReleased(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Released(v) => {
                write!(f, "released {v}: committed \"Release {v}\" and tagged v{v}; push with `git push --follow-tags`")
            }
            Self::Tagged(v) => {
                write!(f, "HEAD already was \"Release {v}\"; tagged it v{v}; push with `git push --follow-tags`")
            }
            Self::AlreadyReleased(v) => {
                write!(f, "{v} is already released: HEAD is \"Release {v}\" tagged v{v}; nothing to do")
            }
        }
    }
}

/// Releases `version` in the git work tree at `root`, using `cargo` to update the lock file.
pub(crate) fn release(root: &Path, version: &str, cargo: &Path) -> anyhow::Result<Outcome> {
    let wanted = parse_version(version)?;
    let git = |args: &[&str]| capture(Command::new("git").args(args).current_dir(root));
    let tag = format!("v{version}");
    let subject = format!("Release {version}");
    let manifest_path = root.join("Cargo.toml");
    let manifest =
        std::fs::read_to_string(&manifest_path).with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let current = workspace_version(&manifest)?;
    let head_subject = git(&["log", "-1", "--format=%s"])?.trim().to_owned();
    let head_is_release = head_subject == subject && current == version;

    let tagged_commit = git(&["rev-parse", "-q", "--verify", &format!("refs/tags/{tag}^{{commit}}")]).ok();
    if let Some(tagged) = tagged_commit {
        let head = git(&["rev-parse", "HEAD"])?;
        if head_is_release && tagged.trim() == head.trim() {
            return Ok(Outcome::AlreadyReleased(version.to_owned()));
        }
        bail!(
            "tag {tag} already exists and HEAD is not its release commit; pick a new version, or delete the tag (git tag -d {tag}) if it was a mistake"
        );
    }

    let status = git(&["status", "--porcelain"])?;
    if !status.trim().is_empty() {
        bail!("the work tree has uncommitted changes:\n{status}commit or remove them, then run the release again");
    }
    let changelog_path = root.join("CHANGELOG.md");
    let changelog = std::fs::read_to_string(&changelog_path)
        .with_context(|| format!("cannot read {}; a release needs a changelog", changelog_path.display()))?;
    if !has_changelog_section(&changelog, version) {
        bail!(
            "CHANGELOG.md has no section for {version}; add a `## {version} - YYYY-MM-DD` heading listing the changes, commit it, then run the release again"
        );
    }

    if head_is_release {
        git(&["tag", "-a", &tag, "-m", &format!("att-tokend {version}")])?;
        return Ok(Outcome::Tagged(version.to_owned()));
    }
    if wanted < parse_version(&current)? {
        bail!("{version} is older than the current version {current}; releases only go forward");
    }

    std::fs::write(&manifest_path, set_workspace_version(&manifest, version)?)
        .with_context(|| format!("cannot write {}", manifest_path.display()))?;
    capture(Command::new(cargo).args(["update", "--workspace", "--offline"]).current_dir(root)).context(
        "`cargo update --workspace --offline` failed; undo with `git checkout Cargo.toml Cargo.lock` and fix the error",
    )?;
    git(&["commit", "--allow-empty", "-m", &subject, "--", "Cargo.toml", "Cargo.lock"])
        .context("committing the release failed; undo with `git checkout Cargo.toml Cargo.lock`")?;
    git(&["tag", "-a", &tag, "-m", &format!("att-tokend {version}")])?;
    Ok(Outcome::Released(version.to_owned()))
}

/// `X.Y.Z` (with an optional `-pre.release`) as numbers for ordering; the pre-release sorts first.
fn parse_version(version: &str) -> anyhow::Result<(u64, u64, u64, bool)> {
    let invalid = || anyhow::anyhow!("{version:?} is not a version like 1.2.3 (or 1.2.3-rc.1)");
    let (core, pre) = match version.split_once('-') {
        Some((core, pre)) if !pre.is_empty() && pre.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') => {
            (core, true)
        }
        Some(_) => return Err(invalid()),
        None => (version, false),
    };
    let parts: Vec<_> = core.split('.').collect();
    let [major, minor, patch] = parts.as_slice() else { return Err(invalid()) };
    let number = |part: &str| {
        if part.is_empty() || !part.chars().all(|c| c.is_ascii_digit()) || (part.len() > 1 && part.starts_with('0')) {
            return Err(invalid());
        }
        part.parse::<u64>().map_err(|_| invalid())
    };
    Ok((number(major)?, number(minor)?, number(patch)?, !pre))
}

/// Whether the changelog has a `## X.Y.Z` or `## [X.Y.Z]` heading (anything may follow).
fn has_changelog_section(changelog: &str, version: &str) -> bool {
    changelog.lines().any(|line| {
        let Some(heading) = line.strip_prefix("## ") else { return false };
        let heading = heading.trim_start();
        let rest = heading.strip_prefix(&format!("[{version}]")).or_else(|| heading.strip_prefix(version));
        rest.is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
    })
}

/// The line index and value of `version = "..."` in `[workspace.package]`.
fn find_workspace_version(manifest: &str) -> Option<(usize, String)> {
    let mut in_section = false;
    for (index, line) in manifest.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_section = trimmed == "[workspace.package]";
            continue;
        }
        if !in_section {
            continue;
        }
        let Some(value) = trimmed.strip_prefix("version") else { continue };
        let Some(value) = value.trim_start().strip_prefix('=') else { continue };
        let value = value.trim().trim_matches('"');
        return Some((index, value.to_owned()));
    }
    None
}

fn workspace_version(manifest: &str) -> anyhow::Result<String> {
    find_workspace_version(manifest)
        .map(|(_, version)| version)
        .context("Cargo.toml has no `version = \"...\"` under [workspace.package]; add one")
}

/// The manifest with `[workspace.package] version` set to `version`, everything else unchanged.
fn set_workspace_version(manifest: &str, version: &str) -> anyhow::Result<String> {
    let (index, _) = find_workspace_version(manifest)
        .context("Cargo.toml has no `version = \"...\"` under [workspace.package]; add one")?;
    let mut out: Vec<String> = manifest.lines().map(str::to_owned).collect();
    out[index] = format!("version = \"{version}\"");
    let mut text = out.join("\n");
    if manifest.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_checked_and_ordered() {
        assert!(parse_version("1.2.3").unwrap() > parse_version("1.2.3-rc.1").unwrap());
        assert!(parse_version("0.10.0").unwrap() > parse_version("0.9.9").unwrap());
        for bad in ["1.2", "v1.2.3", "1.2.3.4", "01.2.3", "1.2.3-", "1.2.x", ""] {
            assert!(parse_version(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn changelog_sections_are_found_in_both_heading_styles() {
        assert!(has_changelog_section("# C\n\n## 1.2.3 - 2026-01-01\n", "1.2.3"));
        assert!(has_changelog_section("## [1.2.3] - 2026-01-01\n", "1.2.3"));
        assert!(has_changelog_section("## 1.2.3\n", "1.2.3"));
        assert!(!has_changelog_section("## 1.2.30\n", "1.2.3"));
        assert!(!has_changelog_section("### 1.2.3\n", "1.2.3"));
        assert!(!has_changelog_section("Mentions 1.2.3 in text\n", "1.2.3"));
    }

    #[test]
    fn only_the_workspace_package_version_changes() {
        let manifest =
            "[package]\nversion = \"9.9.9\"\n\n[workspace.package]\nversion = \"0.1.0\"\nedition = \"2024\"\n";
        let bumped = set_workspace_version(manifest, "0.2.0").unwrap();
        assert_eq!(bumped, manifest.replace("version = \"0.1.0\"", "version = \"0.2.0\""));
        assert_eq!(workspace_version(&bumped).unwrap(), "0.2.0");
        assert!(set_workspace_version("[package]\nversion = \"1.0.0\"\n", "2.0.0").is_err());
    }

    /// A throwaway workspace in a git repository, with one member crate and a lock file.
    fn throwaway_repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |path: &str, text: &str| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(
            "Cargo.toml",
            "[workspace]\nmembers = [\"member\"]\nresolver = \"3\"\n\n[workspace.package]\nversion = \"0.1.0\"\nedition = \"2024\"\n",
        );
        write(
            "member/Cargo.toml",
            "[package]\nname = \"member\"\nversion.workspace = true\nedition.workspace = true\n",
        );
        write("member/src/lib.rs", "//! Empty.\n");
        write("CHANGELOG.md", "# Changelog\n\n## 0.2.0 - 2026-11-28\n\n- Things.\n");
        write(".gitignore", "/target/\n");
        let git = |args: &[&str]| capture(Command::new("git").args(args).current_dir(root)).unwrap();
        git(&["init", "-q", "-b", "main"]);
        git(&["config", "user.name", "Release Test"]);
        git(&["config", "user.email", "release-test@example.invalid"]);
        git(&["config", "tag.gpgSign", "false"]);
        git(&["config", "commit.gpgSign", "false"]);
        capture(Command::new(cargo()).args(["generate-lockfile", "--offline"]).current_dir(root)).unwrap();
        git(&["add", "."]);
        git(&["commit", "-q", "-m", "Start"]);
        dir
    }

    fn cargo() -> std::path::PathBuf {
        std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()).into()
    }

    fn git_out(root: &Path, args: &[&str]) -> String {
        capture(Command::new("git").args(args).current_dir(root)).unwrap().trim().to_owned()
    }

    #[test]
    fn a_release_bumps_commits_and_tags_and_a_rerun_is_a_no_op() {
        let repo = throwaway_repo();
        let root = repo.path();
        let outcome = release(root, "0.2.0", &cargo()).unwrap();
        assert_eq!(outcome, Outcome::Released("0.2.0".into()));
        assert_eq!(git_out(root, &["log", "-1", "--format=%s"]), "Release 0.2.0");
        assert_eq!(git_out(root, &["rev-parse", "v0.2.0^{commit}"]), git_out(root, &["rev-parse", "HEAD"]));
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert_eq!(workspace_version(&manifest).unwrap(), "0.2.0");
        let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap();
        assert!(lock.contains("name = \"member\"\nversion = \"0.2.0\""), "{lock}");
        assert_eq!(git_out(root, &["status", "--porcelain"]), "");

        let head = git_out(root, &["rev-parse", "HEAD"]);
        assert_eq!(release(root, "0.2.0", &cargo()).unwrap(), Outcome::AlreadyReleased("0.2.0".into()));
        assert_eq!(git_out(root, &["rev-parse", "HEAD"]), head, "a re-run must not commit");
    }

    #[test]
    fn a_missing_tag_after_the_release_commit_is_added() {
        let repo = throwaway_repo();
        let root = repo.path();
        release(root, "0.2.0", &cargo()).unwrap();
        git_out(root, &["tag", "-d", "v0.2.0"]);
        assert_eq!(release(root, "0.2.0", &cargo()).unwrap(), Outcome::Tagged("0.2.0".into()));
        assert_eq!(git_out(root, &["rev-parse", "v0.2.0^{commit}"]), git_out(root, &["rev-parse", "HEAD"]));
    }

    #[test]
    fn refusals_leave_the_repository_untouched() {
        let repo = throwaway_repo();
        let root = repo.path();
        let head = git_out(root, &["rev-parse", "HEAD"]);
        let refuse = |version: &str, expected: &str| {
            let error = release(root, version, &cargo()).unwrap_err();
            assert!(format!("{error:#}").contains(expected), "{version}: {error:#}");
            assert_eq!(git_out(root, &["rev-parse", "HEAD"]), head);
        };

        refuse("0.3.0", "CHANGELOG.md has no section for 0.3.0");
        refuse("0.0.9", "CHANGELOG.md has no section");
        refuse("2.0", "is not a version");

        std::fs::write(root.join("stray.txt"), "x").unwrap();
        refuse("0.2.0", "uncommitted changes");
        std::fs::remove_file(root.join("stray.txt")).unwrap();

        git_out(root, &["tag", "v0.2.0"]);
        refuse("0.2.0", "tag v0.2.0 already exists");
        git_out(root, &["tag", "-d", "v0.2.0"]);

        std::fs::write(root.join("CHANGELOG.md"), "## [0.0.5]\n").unwrap();
        git_out(root, &["commit", "-q", "-am", "Changelog"]);
        let error = release(root, "0.0.5", &cargo()).unwrap_err();
        assert!(format!("{error:#}").contains("older than the current version 0.1.0"), "{error:#}");
        assert_eq!(git_out(root, &["tag", "--list"]), "");
    }
}
