//! `cargo xtask dist`: the release build, then a tarball, a Debian package and `SHA256SUMS` in
//! `<target dir>/dist/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::util::{cargo, run as run_command, workspace_root};
use crate::{deb, sys};

/// Help for `cargo xtask dist`.
pub(crate) const HELP: &str = "\
cargo xtask dist [--target TRIPLE] [--lintian]

Builds att-tokend with the release (gateway) profile and writes to <target dir>/dist/:
  att-tokend-<version>-<triple>.tar.gz   FHS layout below one top directory; install with
                                         tar -xzf FILE --strip-components=1 -C /
  att-tokend_<version>-1_<arch>.deb      Debian package (dpkg-deb)
  SHA256SUMS

  --target TRIPLE   passed to cargo. Only the host's target builds on this machine: another one
                    needs its Rust standard library (rustup target add) and a cross linker.
  --lintian         also run lintian on the package and fail on errors
";

/// What `dist` was asked to do.
#[derive(Debug, Default, PartialEq)]
struct Options {
    target: Option<String>,
    lintian: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--target" => {
                let triple = args.next().context("--target needs a value, e.g. --target aarch64-unknown-linux-gnu")?;
                options.target = Some(triple.clone());
            }
            "--lintian" => options.lintian = true,
            other => bail!("unknown argument {other:?} to dist; usage:\n{HELP}"),
        }
    }
    Ok(options)
}

/// What the packaging steps need to know about the build.
pub(crate) struct Build {
    /// The workspace version, e.g. `0.1.0`.
    pub(crate) version: String,
    /// The Rust target triple the binaries are for.
    pub(crate) triple: String,
    /// The Debian architecture for that triple.
    pub(crate) arch: String,
    /// Timestamp for every file in the archives.
    pub(crate) epoch: u64,
    /// `<target dir>/dist`.
    pub(crate) dist_dir: PathBuf,
}

/// Runs `cargo xtask dist`.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    if args.iter().any(|arg| arg == "-h" || arg == "--help") {
        print!("{HELP}");
        return Ok(());
    }
    let options = parse(args)?;
    sys::install_missing(&[
        ("tar", "tar"),
        ("gzip", "gzip"),
        ("dpkg-deb", "dpkg"),
        ("dpkg-shlibdeps", "dpkg-dev"),
        ("md5sum", "coreutils"),
        ("sha256sum", "coreutils"),
    ])?;
    if options.lintian {
        sys::install_missing(&[("lintian", "lintian")])?;
    }
    let outputs = dist(options.target.as_deref())?;
    if options.lintian {
        deb::lintian(&outputs.deb)?;
    }
    for path in [&outputs.tarball, &outputs.deb, &outputs.sums] {
        let size = std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0);
        println!("{} ({} KiB)", path.display(), size.div_ceil(1024));
    }
    Ok(())
}

/// The files `dist` wrote.
pub(crate) struct Outputs {
    /// The `.tar.gz`.
    pub(crate) tarball: PathBuf,
    /// The `.deb`.
    pub(crate) deb: PathBuf,
    /// `SHA256SUMS`.
    pub(crate) sums: PathBuf,
}

/// Builds everything for `target` (the host when `None`) and returns where it went.
pub(crate) fn dist(target: Option<&str>) -> anyhow::Result<Outputs> {
    let target_dir = sys::target_dir()?;
    let host = host_triple()?;
    let triple = target.map_or_else(|| host.clone(), str::to_owned);
    let build = Build {
        version: workspace_version()?,
        arch: debian_arch(&triple)?.to_owned(),
        triple: triple.clone(),
        epoch: sys::source_date_epoch(),
        dist_dir: target_dir.join("dist"),
    };

    let mut release = cargo();
    release.env("CARGO_TARGET_DIR", &target_dir).args(["build", "--release", "--locked", "-p", "att-tokend"]);
    if let Some(triple) = target {
        release.args(["--target", triple]);
    }
    run_command(&mut release).with_context(|| {
        if triple == host {
            "the release build failed; fix the error above".to_owned()
        } else {
            format!(
                "the release build for {triple} failed: only the host target ({host}) builds on this machine; \
                 elsewhere install the target (rustup target add {triple}) and a linker for it"
            )
        }
    })?;
    let bin_dir = match target {
        Some(triple) => target_dir.join(triple).join("release"),
        None => target_dir.join("release"),
    };

    let assets = build.dist_dir.join("assets");
    sys::fresh_dir(&assets)?;
    run_command(
        cargo()
            .env("CARGO_TARGET_DIR", &target_dir)
            .args(["run", "--quiet", "--release", "--locked", "-p", "att-tokend", "--example", "gen-assets", "--"])
            .arg(&assets),
    )
    .context("generating man pages and completions failed; fix the error above")?;

    let name = format!("att-tokend-{}-{}", build.version, build.triple);
    let stage = build.dist_dir.join("stage").join(&name);
    sys::fresh_dir(&stage)?;
    populate(&stage, &bin_dir, &assets, &build)?;

    let tarball = build.dist_dir.join(format!("{name}.tar.gz"));
    tar_gz(&stage, &tarball, build.epoch)?;
    let deb = deb::build(&stage, &bin_dir, &build)?;

    let sums = build.dist_dir.join("SHA256SUMS");
    let listing = sys::capture(
        Command::new("sha256sum").arg("--").arg(file_name(&tarball)).arg(file_name(&deb)).current_dir(&build.dist_dir),
    )?;
    sys::write(&sums, listing, 0o644)?;
    Ok(Outputs { tarball, deb, sums })
}

/// Lays out the installed files below `stage`, as they go on a gateway.
fn populate(stage: &Path, bin_dir: &Path, assets: &Path, build: &Build) -> anyhow::Result<()> {
    let root = workspace_root();
    let data = root.join("daemon").join("data");
    for program in ["att-tokend", "att-token"] {
        let binary = bin_dir.join(program);
        if !binary.is_file() {
            bail!(
                "{} is missing after the build; run `cargo build --release -p att-tokend` to see why",
                binary.display()
            );
        }
        sys::install(&binary, &stage.join("usr/bin").join(program), 0o755)?;
    }
    let files: [(&str, &str); 9] = [
        ("att-tokend.service", "lib/systemd/system/att-tokend.service"),
        ("att-token-proxy@.service", "lib/systemd/system/att-token-proxy@.service"),
        ("att-tokend.sysusers", "usr/lib/sysusers.d/att-tokend.conf"),
        ("io.allthingstalk.TokenAgent1.conf", "usr/share/dbus-1/system.d/io.allthingstalk.TokenAgent1.conf"),
        (
            "io.allthingstalk.TokenAgent1.service",
            "usr/share/dbus-1/system-services/io.allthingstalk.TokenAgent1.service",
        ),
        ("io.allthingstalk.TokenAgent1.xml", "usr/share/dbus-1/interfaces/io.allthingstalk.TokenAgent1.xml"),
        ("config.toml", "etc/att-tokend/config.toml"),
        ("copyright", "usr/share/doc/att-tokend/copyright"),
        ("README-credentials", "usr/share/doc/att-tokend/README-credentials"),
    ];
    for (from, to) in files {
        let source = data.join(from);
        if !source.is_file() {
            bail!("{} is missing; it ships in the package, so restore it", source.display());
        }
        sys::install(&source, &stage.join(to), 0o644)?;
    }
    sys::gzip(&root.join("CHANGELOG.md"), &stage.join("usr/share/doc/att-tokend/changelog.gz"))?;
    let mut pages = 0;
    for page in sys::files_under(assets)? {
        let Some(section @ ("1" | "8")) = page.extension().and_then(|ext| ext.to_str()) else { continue };
        let name = page.file_name().expect("a file").to_string_lossy();
        sys::gzip(&assets.join(&page), &stage.join(format!("usr/share/man/man{section}/{name}.gz")))?;
        pages += 1;
    }
    for required in ["att-tokend.8", "att-token.1"] {
        if !assets.join(required).is_file() {
            bail!(
                "gen-assets wrote no {required}; run `cargo run -p att-tokend --example gen-assets -- DIR` to see why"
            );
        }
    }
    eprintln!("xtask: {pages} man pages");
    for program in ["att-tokend", "att-token"] {
        let completions = [
            (format!("{program}.bash"), format!("usr/share/bash-completion/completions/{program}")),
            (format!("_{program}"), format!("usr/share/zsh/vendor-completions/_{program}")),
            (format!("{program}.fish"), format!("usr/share/fish/vendor_completions.d/{program}.fish")),
        ];
        for (from, to) in completions {
            sys::install(&assets.join(from), &stage.join(to), 0o644)?;
        }
    }
    sys::normalize_tree(stage, build.epoch)
}

/// Packs `stage` (as one top directory) into a reproducible `.tar.gz`.
fn tar_gz(stage: &Path, tarball: &Path, epoch: u64) -> anyhow::Result<()> {
    let parent = stage.parent().context("the staging directory has a parent")?;
    let tar = tarball.with_extension("");
    if tar.exists() {
        std::fs::remove_file(&tar).with_context(|| format!("cannot remove {}", tar.display()))?;
    }
    run_command(
        Command::new("tar")
            .args(["--create", "--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--format=gnu"])
            .arg(format!("--mtime=@{epoch}"))
            .arg("--file")
            .arg(&tar)
            .arg("--directory")
            .arg(parent)
            .arg("--")
            .arg(file_name(stage)),
    )?;
    sys::gzip(&tar, tarball)?;
    std::fs::remove_file(&tar).with_context(|| format!("cannot remove {}", tar.display()))
}

fn file_name(path: &Path) -> &std::ffi::OsStr {
    path.file_name().expect("output paths end in a file name")
}

/// The version in the workspace manifest, as cargo reads it.
pub(crate) fn workspace_version() -> anyhow::Result<String> {
    let pkgid = sys::capture(cargo().args(["pkgid", "--offline", "-p", "att-tokend"]))?;
    version_from_pkgid(pkgid.trim()).context("could not read the version from `cargo pkgid -p att-tokend`")
}

/// `path+file:///src/daemon#att-tokend@0.1.0` → `0.1.0` (also the older `...#0.1.0`).
fn version_from_pkgid(pkgid: &str) -> Option<String> {
    let (_, fragment) = pkgid.rsplit_once('#')?;
    let version = fragment.rsplit_once('@').map_or(fragment, |(_, version)| version);
    (!version.is_empty()).then(|| version.to_owned())
}

/// The triple rustc builds for by default.
fn host_triple() -> anyhow::Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let info = sys::capture(Command::new(rustc).arg("-vV"))?;
    info.lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("`rustc -vV` printed no host line; check the Rust installation")
}

/// The Debian architecture name for a Rust target triple.
pub(crate) fn debian_arch(triple: &str) -> anyhow::Result<&'static str> {
    let cpu = triple.split('-').next().unwrap_or_default();
    let arch = match cpu {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "i586" | "i686" => "i386",
        "riscv64gc" | "riscv64" => "riscv64",
        "powerpc64le" => "ppc64el",
        "s390x" => "s390x",
        "loongarch64" => "loong64",
        "armv7" | "arm" if triple.ends_with("eabihf") => "armhf",
        "armv5te" | "arm" => "armel",
        _ => bail!(
            "no Debian architecture is known for {triple}; build for one of x86_64, aarch64, armv7 (hf), i686, riscv64gc"
        ),
    };
    Ok(arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_architectures_follow_the_cpu_and_float_abi() {
        let table = [
            ("x86_64-unknown-linux-gnu", "amd64"),
            ("x86_64-unknown-linux-musl", "amd64"),
            ("aarch64-unknown-linux-gnu", "arm64"),
            ("armv7-unknown-linux-gnueabihf", "armhf"),
            ("arm-unknown-linux-gnueabihf", "armhf"),
            ("arm-unknown-linux-gnueabi", "armel"),
            ("i686-unknown-linux-gnu", "i386"),
            ("riscv64gc-unknown-linux-gnu", "riscv64"),
        ];
        for (triple, arch) in table {
            assert_eq!(debian_arch(triple).unwrap(), arch, "{triple}");
        }
        assert!(debian_arch("wasm32-unknown-unknown").is_err());
    }

    #[test]
    fn the_version_is_read_from_both_pkgid_forms() {
        assert_eq!(version_from_pkgid("path+file:///src/daemon#att-tokend@0.1.0").as_deref(), Some("0.1.0"));
        assert_eq!(version_from_pkgid("file:///src/daemon#1.2.3-rc.1").as_deref(), Some("1.2.3-rc.1"));
        assert_eq!(version_from_pkgid("no-fragment"), None);
    }

    #[test]
    fn arguments_are_parsed_and_unknown_ones_refused() {
        let args = |list: &[&str]| list.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            parse(&args(&["--target", "aarch64-unknown-linux-gnu", "--lintian"])).unwrap(),
            Options { target: Some("aarch64-unknown-linux-gnu".into()), lintian: true }
        );
        assert!(parse(&args(&["--target"])).is_err());
        assert!(parse(&args(&["--bogus"])).is_err());
    }
}
