//! `cargo xtask dist`: the release build, then a tarball, a Debian package and `SHA256SUMS` in
//! `<target dir>/dist/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::util::{cargo, run as run_command, workspace_root};
use crate::{cross, deb, sys};

/// Help for `cargo xtask dist`.
pub(crate) const HELP: &str = "\
cargo xtask dist [--target TRIPLE] [--lintian]

Builds att-tokend and att-token with the release (gateway) profile for one machine type and
writes to <target dir>/dist/:
  att-tokend-<version>-<triple>.tar.gz     FHS layout below one top directory; install with
                                           tar -xzf FILE --strip-components=1 -C /
  att-tokend_<version>-1_<arch>.deb        Debian package (dpkg-deb)
  att-tokend_<version>-1_<arch>.buildinfo  what built them: toolchain versions, build date,
                                           SHA-256 of the two files above
  SHA256SUMS                               every tarball, package and build info of this
                                           version in dist/ (all architectures built so far)

  --target TRIPLE   the machine type to build for; without it, this machine's.
                    aarch64-unknown-linux-gnu      64-bit ARM gateways (Debian arm64)
                    armv7-unknown-linux-gnueabihf  32-bit ARMv7 gateways (Debian armhf)
                    These two build with Debian 12's Rust in a build root kept in
                    <target dir>/cross/bookworm-root, made on first use (needs root, about
                    3 GB and a few minutes; `cargo xtask cross-test --help` says more).
                    The man pages and completions are built on this machine for any target.
  --lintian         also run lintian on the package and fail on errors (installs lintian
                    when missing and run as root)
";

/// The programs that ship, each the binary of the package of the same name.
pub(crate) const PROGRAMS: [&str; 2] = ["att-tokend", "att-token"];

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
    preflight(options.lintian)?;
    let outputs = dist(options.target.as_deref())?;
    if options.lintian {
        deb::lintian(&outputs.deb)?;
    }
    for path in [&outputs.tarball, &outputs.deb, &outputs.buildinfo, &outputs.sums] {
        let size = std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0);
        println!("{} ({} KiB)", path.display(), size.div_ceil(1024));
    }
    Ok(())
}

/// The host tools packaging needs (installed when missing and run as root); lintian when `lintian`.
pub(crate) fn preflight(lintian: bool) -> anyhow::Result<()> {
    sys::install_missing(&[
        ("tar", "tar"),
        ("gzip", "gzip"),
        ("dpkg-deb", "dpkg"),
        ("dpkg-shlibdeps", "dpkg-dev"),
        ("md5sum", "coreutils"),
        ("sha256sum", "coreutils"),
    ])?;
    if lintian {
        sys::install_missing(&[("lintian", "lintian")])?;
    }
    Ok(())
}

/// The files `dist` wrote.
pub(crate) struct Outputs {
    /// The `.tar.gz`.
    pub(crate) tarball: PathBuf,
    /// The `.deb`.
    pub(crate) deb: PathBuf,
    /// The `.buildinfo`.
    pub(crate) buildinfo: PathBuf,
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

    let cross = if triple == host {
        None
    } else {
        Some(cross::Arch::parse(&triple).with_context(|| {
            format!("{triple} does not build here: only this machine's target ({host}) and the ARM gateways' do")
        })?)
    };
    let (bin_dir, toolchain, depends) = match cross {
        Some(arch) => {
            let root = cross::Root::get()?;
            let toolchain = root.toolchain(arch)?;
            print_toolchain(&toolchain, &triple);
            let bin_dir = root.build_release(arch)?;
            (bin_dir, toolchain, root.shlib_depends(arch)?)
        }
        None => {
            let toolchain = host_toolchain()?;
            print_toolchain(&toolchain, &triple);
            // One package per cargo run, so the daemon is built with its own dependencies' features alone.
            for package in PROGRAMS {
                let mut release = cargo();
                release.env("CARGO_TARGET_DIR", &target_dir).args(["build", "--release", "--locked", "-p", package]);
                if let Some(triple) = target {
                    release.args(["--target", triple]);
                }
                run_command(&mut release).context("the release build failed; fix the error above")?;
            }
            let bin_dir = match target {
                Some(triple) => target_dir.join(triple).join("release"),
                None => target_dir.join("release"),
            };
            let depends = deb::shlib_depends(&bin_dir, &build)?;
            (bin_dir, toolchain, depends)
        }
    };

    let assets = build.dist_dir.join("assets");
    sys::fresh_dir(&assets)?;
    run_command(
        cargo()
            .env("CARGO_TARGET_DIR", &target_dir)
            // A dev build: it only writes text, and the daemon's and the client's release builds do not share
            // its dependencies' features (it reads both programs' definitions) anyway.
            .args(["run", "--quiet", "--locked", "-p", "gen-assets", "--"])
            .arg(&assets),
    )
    .context("generating man pages and completions failed; fix the error above")?;

    let name = format!("att-tokend-{}-{}", build.version, build.triple);
    let stage = build.dist_dir.join("stage").join(&name);
    sys::fresh_dir(&stage)?;
    populate(&stage, &bin_dir, &assets, &build)?;

    let tarball = build.dist_dir.join(format!("{name}.tar.gz"));
    tar_gz(&stage, &tarball, build.epoch)?;
    let deb = deb::build(&stage, &depends, &build)?;
    let buildinfo = write_buildinfo(&build, &toolchain, &host, &[&deb, &tarball])?;

    let sums = build.dist_dir.join("SHA256SUMS");
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(&build.dist_dir).with_context(|| format!("cannot list {}", build.dist_dir.display()))?
    {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    let listed = release_files(&names, &build.version);
    let listing = sys::capture(Command::new("sha256sum").arg("--").args(&listed).current_dir(&build.dist_dir))?;
    sys::write(&sums, listing, 0o644)?;
    Ok(Outputs { tarball, deb, buildinfo, sums })
}

/// The names among `names` that `SHA256SUMS` lists for `version`: tarballs, packages and build infos of every
/// architecture, sorted.
fn release_files(names: &[String], version: &str) -> Vec<String> {
    let tarball = format!("att-tokend-{version}-");
    let package = format!("att-tokend_{}_", deb::debian_version(version));
    let mut listed: Vec<String> = names
        .iter()
        .filter(|name| {
            (name.starts_with(&tarball) && name.ends_with(".tar.gz"))
                || (name.starts_with(&package) && (name.ends_with(".deb") || name.ends_with(".buildinfo")))
        })
        .cloned()
        .collect();
    listed.sort();
    listed
}

/// Prints what builds for `triple`.
fn print_toolchain(toolchain: &cross::Toolchain, triple: &str) {
    println!("dist: building for {triple} with:");
    for tool in &toolchain.tools {
        println!("  {tool}");
    }
    for (package, version) in &toolchain.packages {
        println!("  {package} {version}");
    }
}

/// This machine's toolchain: rustc and cargo (rustup's when installed), the C compiler that links.
fn host_toolchain() -> anyhow::Result<cross::Toolchain> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let verbose = sys::capture(Command::new(rustc).arg("-vV"))?;
    let cargo_version = sys::capture(cargo().arg("-V"))?;
    let mut tools =
        vec![verbose.lines().next().unwrap_or_default().to_owned(), format!("rustc {}", cross::rustc_detail(&verbose))];
    if let Ok(active) =
        sys::capture(Command::new("rustup").args(["show", "active-toolchain"]).current_dir(workspace_root()))
    {
        tools.push(format!("rustup toolchain {}", active.trim()));
    }
    tools.push(cargo_version.trim().to_owned());
    let cc =
        sys::capture(Command::new("cc").arg("--version")).context("no C compiler (cc) to link with; install gcc")?;
    tools.push(cc.lines().next().unwrap_or_default().to_owned());
    let packages = sys::capture(Command::new("dpkg-query").args([
        "-W",
        "-f",
        "${Package}:${Architecture} ${Version}\\n",
        "gcc",
        "libc6-dev",
    ]))
    .map(|out| cross::parse_package_versions(&out))
    .unwrap_or_default();
    Ok(cross::Toolchain { tools, packages })
}

/// Writes `att-tokend_<version>-1_<arch>.buildinfo` next to the package, with the checksums of `files`.
fn write_buildinfo(
    build: &Build,
    toolchain: &cross::Toolchain,
    host: &str,
    files: &[&Path],
) -> anyhow::Result<PathBuf> {
    let mut checksums = Vec::new();
    for file in files {
        let sum = sys::capture(Command::new("sha256sum").arg("--").arg(file))?;
        let sha256 = sum.split_whitespace().next().context("sha256sum printed nothing")?.to_owned();
        let size = std::fs::metadata(file).with_context(|| format!("cannot stat {}", file.display()))?.len();
        checksums.push((sha256, size, file_name(file).to_string_lossy().into_owned()));
    }
    let date = sys::capture(Command::new("date").args(["--utc", "--rfc-email", &format!("--date=@{}", build.epoch)]))?;
    let text = buildinfo_text(build, debian_arch(host)?, date.trim(), toolchain, &checksums);
    let path =
        build.dist_dir.join(format!("att-tokend_{}_{}.buildinfo", deb::debian_version(&build.version), build.arch));
    sys::write(&path, text, 0o644)?;
    Ok(path)
}

/// The build information in the layout of Debian's `.buildinfo` (deb-buildinfo(5)), plus `Build-Toolchain:`
/// naming the compilers. `checksums` are (SHA-256, size, file name).
fn buildinfo_text(
    build: &Build,
    build_arch: &str,
    date: &str,
    toolchain: &cross::Toolchain,
    checksums: &[(String, u64, String)],
) -> String {
    let mut text = format!(
        "Format: 1.0\nSource: att-tokend\nBinary: att-tokend\nArchitecture: {arch}\nVersion: {version}\n",
        arch = build.arch,
        version = deb::debian_version(&build.version),
    );
    text.push_str("Checksums-Sha256:\n");
    for (sha256, size, name) in checksums {
        text.push_str(&format!(" {sha256} {size} {name}\n"));
    }
    text.push_str(&format!("Build-Architecture: {build_arch}\nBuild-Date: {date}\nBuild-Target: {}\n", build.triple));
    text.push_str("Build-Toolchain:\n");
    for tool in &toolchain.tools {
        text.push_str(&format!(" {tool}\n"));
    }
    if !toolchain.packages.is_empty() {
        text.push_str("Installed-Build-Depends:\n");
        let last = toolchain.packages.len() - 1;
        for (index, (package, version)) in toolchain.packages.iter().enumerate() {
            let package = match package.rsplit_once(':') {
                Some((name, arch)) if arch == build_arch || arch == "all" => name,
                _ => package,
            };
            let comma = if index == last { "" } else { "," };
            text.push_str(&format!(" {package} (= {version}){comma}\n"));
        }
    }
    text.push_str(&format!("Environment:\n SOURCE_DATE_EPOCH=\"{}\"\n", build.epoch));
    text
}

/// Lays out the installed files below `stage`, as they go on a gateway.
fn populate(stage: &Path, bin_dir: &Path, assets: &Path, build: &Build) -> anyhow::Result<()> {
    let root = workspace_root();
    let data = root.join("daemon").join("data");
    for program in PROGRAMS {
        let binary = bin_dir.join(program);
        if !binary.is_file() {
            bail!(
                "{} is missing after the build; run `cargo build --release -p {program}` to see why",
                binary.display()
            );
        }
        sys::install(&binary, &stage.join("usr/bin").join(program), 0o755)?;
    }
    let files: [(&str, &str); 11] = [
        ("att-tokend.service", "lib/systemd/system/att-tokend.service"),
        ("att-token-proxy@.service", "lib/systemd/system/att-token-proxy@.service"),
        // Installed, not enabled: postinst enables att-tokend.service alone.
        ("att-token-metrics.service", "lib/systemd/system/att-token-metrics.service"),
        ("att-token-metrics.timer", "lib/systemd/system/att-token-metrics.timer"),
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
            bail!("gen-assets wrote no {required}; run `cargo run -p gen-assets -- DIR` to see why");
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
pub(crate) fn host_triple() -> anyhow::Result<String> {
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

    fn build(arch: &str, triple: &str) -> Build {
        Build {
            version: "0.2.0-rc.1".to_owned(),
            triple: triple.to_owned(),
            arch: arch.to_owned(),
            epoch: 1_780_000_000,
            dist_dir: PathBuf::from("/t/dist"),
        }
    }

    #[test]
    fn the_build_info_names_the_files_the_toolchain_and_the_packages() {
        let toolchain = cross::Toolchain {
            tools: vec![
                "rustc 1.96.0 (f1 2026-01-01)".to_owned(),
                "aarch64-linux-gnu-gcc (Debian 14.2.0-19) 14.2.0".to_owned(),
            ],
            packages: vec![
                ("rustc-web:amd64".to_owned(), "1.96.0+dfsg1-1".to_owned()),
                ("libstd-rust-web-dev:arm64".to_owned(), "1.96.0+dfsg1-1".to_owned()),
            ],
        };
        let checksums = [
            ("ab".repeat(32), 1234, "att-tokend_0.2.0~rc.1-1_arm64.deb".to_owned()),
            ("cd".repeat(32), 5678, "att-tokend-0.2.0-rc.1-aarch64-unknown-linux-gnu.tar.gz".to_owned()),
        ];
        let text = buildinfo_text(
            &build("arm64", "aarch64-unknown-linux-gnu"),
            "amd64",
            "Thu, 28 May 2026 20:26:40 +0000",
            &toolchain,
            &checksums,
        );
        let expected = format!(
            "Format: 1.0\n\
             Source: att-tokend\n\
             Binary: att-tokend\n\
             Architecture: arm64\n\
             Version: 0.2.0~rc.1-1\n\
             Checksums-Sha256:\n \
             {ab} 1234 att-tokend_0.2.0~rc.1-1_arm64.deb\n \
             {cd} 5678 att-tokend-0.2.0-rc.1-aarch64-unknown-linux-gnu.tar.gz\n\
             Build-Architecture: amd64\n\
             Build-Date: Thu, 28 May 2026 20:26:40 +0000\n\
             Build-Target: aarch64-unknown-linux-gnu\n\
             Build-Toolchain:\n \
             rustc 1.96.0 (f1 2026-01-01)\n \
             aarch64-linux-gnu-gcc (Debian 14.2.0-19) 14.2.0\n\
             Installed-Build-Depends:\n \
             rustc-web (= 1.96.0+dfsg1-1),\n \
             libstd-rust-web-dev:arm64 (= 1.96.0+dfsg1-1)\n\
             Environment:\n \
             SOURCE_DATE_EPOCH=\"1780000000\"\n",
            ab = "ab".repeat(32),
            cd = "cd".repeat(32),
        );
        assert_eq!(text, expected);
        let host = cross::Toolchain { tools: vec!["rustc 1.95.0".to_owned()], packages: Vec::new() };
        let text = buildinfo_text(&build("amd64", "x86_64-unknown-linux-gnu"), "amd64", "D", &host, &[]);
        assert!(!text.contains("Installed-Build-Depends"), "{text}");
        assert!(text.contains("Build-Toolchain:\n rustc 1.95.0\nEnvironment:"), "{text}");
    }

    #[test]
    fn the_checksum_list_covers_this_version_of_every_architecture() {
        let names: Vec<String> = [
            "att-tokend_0.2.0-1_arm64.deb",
            "att-tokend_0.2.0-1_arm64.buildinfo",
            "att-tokend_0.2.0-1_amd64.deb",
            "att-tokend-0.2.0-aarch64-unknown-linux-gnu.tar.gz",
            "att-tokend-0.2.0-x86_64-unknown-linux-gnu.tar.gz",
            "att-tokend_0.1.0-1_amd64.deb",
            "att-tokend-0.1.0-x86_64-unknown-linux-gnu.tar.gz",
            "SHA256SUMS",
            "assets",
            "stage",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            release_files(&names, "0.2.0"),
            [
                "att-tokend-0.2.0-aarch64-unknown-linux-gnu.tar.gz",
                "att-tokend-0.2.0-x86_64-unknown-linux-gnu.tar.gz",
                "att-tokend_0.2.0-1_amd64.deb",
                "att-tokend_0.2.0-1_arm64.buildinfo",
                "att-tokend_0.2.0-1_arm64.deb",
            ]
        );
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
