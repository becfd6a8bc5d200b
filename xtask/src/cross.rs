//! Builds and tests for the gateways' ARM boards (arm64 and armhf) in a cached Debian 12 (bookworm) build root.
//!
//! Debian 12 because the binaries link against the C library of the root: built with Debian 12's glibc 2.36,
//! they run on Debian 12 and later and on Raspberry Pi OS bookworm (a root with Debian 13's glibc 2.41 made
//! `att-token` need `GLIBC_2.39`, through the Rust standard library's weak `pidfd_spawnp`, so the package
//! depended on `libc6 (>= 2.39)` and would not install there). Debian 12 carries the same Rust as Debian 13
//! (`rustc-web` 1.96, in `bookworm-security`).
//!
//! The root lives in `<target dir>/cross/bookworm-root`: `debootstrap --variant=minbase bookworm` into
//! `bookworm-root.tmp`, then Debian's Rust toolchain with the standard library of both ARM architectures, their
//! cross C compilers, `qemu-user` (to run ARM test binaries) and `dpkg-dev` (for `dpkg-shlibdeps`). The
//! directory is renamed to `bookworm-root` only once everything is installed, so a half-made root is never used;
//! a later run reuses it. The host's packages are left alone (only `debootstrap` is installed when missing).
//!
//! Commands run in the root with `chroot`, inside `unshare --mount` (xtask runs itself there as `cross-enter`): the bind mounts (the workspace read-only
//! at `/src`, `<target dir>/cross/bookworm-target` at `/target`, `<target dir>/cross/cargo-home` at `/cargo-home`, `/proc`
//! and `/dev`) belong to that process's mount namespace and vanish with it, whatever happens.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail, ensure};

use crate::sys;
use crate::util::{run as run_command, workspace_root};

/// The Debian mirror debootstrap and apt use.
const MIRROR: &str = "http://deb.debian.org/debian";
/// The release of the root: its C library is the oldest the packages run with.
const SUITE: &str = "bookworm";
/// Where `rustc-web` 1.96 and its standard libraries are for Debian 12.
const SECURITY_SOURCE: &str = "deb http://deb.debian.org/debian-security bookworm-security main\n";

/// The packages installed in the root besides the minimal base (each architecture adds its own, see
/// [`Arch::packages`]).
const ROOT_PACKAGES: &[&str] =
    &["rustc-web", "cargo-web", "gcc", "libc6-dev", "qemu-user", "dpkg-dev", "ca-certificates"];

/// Where the root records the packages installed in it (see [`package_list`]).
const STAMP: &str = "var/lib/xtask-cross-packages";

/// Every package the root has on top of the minimal base, one line.
fn package_list() -> String {
    let mut packages: Vec<String> = ROOT_PACKAGES.iter().map(|package| (*package).to_owned()).collect();
    packages.extend(Arch::ALL.into_iter().flat_map(Arch::packages));
    packages.join(" ") + "\n"
}

/// `PATH` inside the root.
const ROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Help for `cargo xtask cross-test`.
pub(crate) const TEST_HELP: &str = "\
cargo xtask cross-test [--arch arm64|armhf]...

Runs the workspace's unit and property tests built for the gateways' ARM boards, each test binary
under user-mode emulation (qemu-aarch64, qemu-arm), in the cached Debian 12 build root
<target dir>/cross/bookworm-root (made on first use: about 3 GB and a few minutes; needs root).
Without --arch, both: arm64 (aarch64-unknown-linux-gnu) and armhf (armv7-unknown-linux-gnueabihf,
32-bit: time_t and usize are 32 bits wide there).

The tests run are those that need no D-Bus daemon and no other host service:
  token-model   unit tests, plan_cases, plan_properties, simulation, past_2038 (dates after
                2038-01-19 and 2106-02-07)
  login-flow    unit tests
  token-proxy   unit tests
  fake-cloud    unit tests
  fuzz-checks   unit tests, corpus (replays the fuzz corpus)
  token-agent   unit tests
  att-tokend    unit tests of the library (the boot-time timer's far expiry among them) and
                of its program; config_files and state_files of its test binary
  att-token     unit tests of the library and the program
All in two cargo runs per architecture over the same packages, so each dependency is built once.
The end-to-end tests (daemon/tests/it core_*, the att-token cli tests, the tests crate) start
dbus-daemon, the fake cloud or the built programs and stay with `cargo xtask ci` on the host.

Prints the passed count and the time per architecture; fails if any test fails.
";

/// The packages whose tests [`Root::test`] runs for each architecture. Every run selects all of them, so cargo
/// resolves their dependencies' features once and builds each dependency once per architecture (a run per
/// package would build a dependency again for every feature set).
pub(crate) const TEST_PACKAGES: &[&str] = &[
    "token-model",
    "login-flow",
    "token-proxy",
    "fake-cloud",
    "fuzz-checks",
    "token-agent",
    "att-tokend",
    "att-token",
];

/// The runs over [`TEST_PACKAGES`]: the cargo arguments that select test targets (after `--`, filters that pick
/// modules of a test binary). None of what they select needs a D-Bus daemon or another host service; the
/// filters of the second run pick the daemon's file tests out of its test binary (fake-cloud's `it` matches no
/// filter and runs nothing).
pub(crate) const TEST_RUNS: &[&[&str]] = &[
    &[
        "--lib",
        "--bins",
        "--test",
        "plan_cases",
        "--test",
        "plan_properties",
        "--test",
        "simulation",
        "--test",
        "past_2038",
        "--test",
        "corpus",
    ],
    &["--test", "it", "--", "config_files::", "state_files::"],
];

/// An ARM architecture of the gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arch {
    /// 64-bit ARM: `aarch64-unknown-linux-gnu`, Debian `arm64`.
    Arm64,
    /// 32-bit ARMv7 with hardware floating point: `armv7-unknown-linux-gnueabihf`, Debian `armhf`.
    Armhf,
}

impl Arch {
    /// Both, in the order they are built and tested.
    pub(crate) const ALL: [Arch; 2] = [Arch::Arm64, Arch::Armhf];

    /// The architecture named by its Debian name (`arm64`, `armhf`) or its Rust target triple.
    pub(crate) fn parse(name: &str) -> anyhow::Result<Arch> {
        Arch::ALL.into_iter().find(|arch| name == arch.debian() || name == arch.triple()).with_context(|| {
            format!(
                "{name:?} is not an architecture built here; use arm64 (aarch64-unknown-linux-gnu) or armhf \
                 (armv7-unknown-linux-gnueabihf)"
            )
        })
    }

    /// The Rust target triple.
    pub(crate) fn triple(self) -> &'static str {
        match self {
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
            Arch::Armhf => "armv7-unknown-linux-gnueabihf",
        }
    }

    /// The Debian architecture.
    pub(crate) fn debian(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::Armhf => "armhf",
        }
    }

    /// The GNU triplet of the cross tools (`aarch64-linux-gnu-gcc`).
    fn gnu(self) -> &'static str {
        match self {
            Arch::Arm64 => "aarch64-linux-gnu",
            Arch::Armhf => "arm-linux-gnueabihf",
        }
    }

    /// The user-mode emulator from `qemu-user` that runs this architecture's programs (also the name of its
    /// binfmt_misc handler).
    pub(crate) fn qemu(self) -> &'static str {
        match self {
            Arch::Arm64 => "qemu-aarch64",
            Arch::Armhf => "qemu-arm",
        }
    }

    /// The root's packages for this architecture: its Rust standard library, C library and cross C compiler.
    fn packages(self) -> Vec<String> {
        let arch = self.debian();
        vec![
            format!("libstd-rust-web-dev:{arch}"),
            format!("libc6:{arch}"),
            format!("gcc-{}", self.gnu()),
            format!("libc6-dev-{arch}-cross"),
        ]
    }

    /// The packages named in the build information, with the native compiler's.
    fn toolchain_packages(self) -> Vec<String> {
        let mut packages = vec!["rustc-web".to_owned(), "cargo-web".to_owned()];
        packages.extend(self.packages());
        packages
    }

    /// The environment that makes cargo build (and run) for this architecture: the linker, the C compiler
    /// and archiver for crates that compile C (ring), and the emulator that runs test binaries. The emulator
    /// finds the ARM loader and C library where the root's multiarch `libc6:<arch>` put them (`/lib`); pointed
    /// at the cross-compiler's copy instead (`QEMU_LD_PREFIX=/usr/<gnu triplet>`), Debian 12's qemu-arm ran every
    /// armhf test binary into a segmentation fault.
    pub(crate) fn cargo_env(self) -> Vec<(String, String)> {
        let upper = self.triple().to_uppercase().replace('-', "_");
        let lower = self.triple().replace('-', "_");
        let gnu = self.gnu();
        vec![
            (format!("CARGO_TARGET_{upper}_LINKER"), format!("{gnu}-gcc")),
            (format!("CARGO_TARGET_{upper}_RUNNER"), self.qemu().to_owned()),
            (format!("CC_{lower}"), format!("{gnu}-gcc")),
            (format!("AR_{lower}"), format!("{gnu}-ar")),
        ]
    }
}

/// A directory shown inside the root.
struct Mount {
    /// On the host.
    from: PathBuf,
    /// Inside the root (absolute).
    to: &'static str,
    /// Read-only inside the root.
    read_only: bool,
}

/// The cached build root, with the directories it shares with the host.
pub(crate) struct Root {
    /// `<target dir>/cross/bookworm-root`.
    path: PathBuf,
    /// `<target dir>/cross/bookworm-target` (`/target` inside): named after the root, because its build scripts
    /// are linked against the root's C library, so the artifacts of a root of another release must not be reused.
    target: PathBuf,
    /// `<target dir>/cross/cargo-home` (`/cargo-home` inside).
    cargo_home: PathBuf,
    /// This program, which [`enter`]s the root inside `unshare`.
    xtask: PathBuf,
}

/// The internal command xtask runs itself as inside `unshare --mount` ([`enter`]).
pub(crate) const ENTER: &str = "cross-enter";

/// Inside a fresh mount namespace: makes the bind mounts, mounts `/proc` and `/dev` in the root, then becomes
/// `chroot ROOT COMMAND...`. Arguments: the root, triples (from, to, `ro`/`rw`), `--`, the command.
pub(crate) fn enter(args: &[String]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let (root, rest) = args.split_first().context("cross-enter needs the root")?;
    let end = rest.iter().position(|arg| arg == "--").context("cross-enter needs `--` before the command")?;
    let (mounts, argv) = (&rest[..end], &rest[end + 1..]);
    ensure!(mounts.len() % 3 == 0 && !argv.is_empty(), "cross-enter: ROOT [FROM TO ro|rw]... -- COMMAND...");
    let root = Path::new(root);
    let mount = |args: &[&std::ffi::OsStr]| -> anyhow::Result<()> {
        sys::capture(Command::new("mount").args(args)).map(drop).context("mounting in the build root failed")
    };
    for triple in mounts.chunks(3) {
        let to = root.join(triple[1].trim_start_matches('/'));
        std::fs::create_dir_all(&to).with_context(|| format!("cannot create {}", to.display()))?;
        mount(&["--bind".as_ref(), "-o".as_ref(), triple[2].as_ref(), triple[0].as_ref(), to.as_os_str()])?;
    }
    mount(&["-t".as_ref(), "proc".as_ref(), "proc".as_ref(), root.join("proc").as_os_str()])?;
    mount(&["--rbind".as_ref(), "/dev".as_ref(), root.join("dev").as_os_str()])?;
    let error = Command::new("chroot").arg(root).args(argv).exec();
    Err(error).context("could not start chroot; install coreutils")
}

impl Root {
    /// The cached root, made when missing (needs root on the host).
    pub(crate) fn get() -> anyhow::Result<Root> {
        let uid = sys::capture(Command::new("id").arg("-u"))?;
        ensure!(
            uid.trim() == "0",
            "the ARM build root is made and entered with debootstrap, chroot and mount namespaces: run this as root"
        );
        sys::install_missing(&[
            ("debootstrap", "debootstrap"),
            ("unshare", "util-linux"),
            ("chroot", "coreutils"),
            ("mount", "mount"),
        ])?;
        let cache = sys::target_dir()?.join("cross");
        let root = Root {
            path: cache.join("bookworm-root"),
            target: cache.join(format!("{SUITE}-target")),
            cargo_home: cache.join("cargo-home"),
            xtask: std::env::current_exe().context("cannot find the running xtask program")?,
        };
        for dir in [&root.target, &root.cargo_home] {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let stamp = root.path.join(STAMP);
        if std::fs::read_to_string(&stamp).is_ok_and(|listed| listed == package_list()) {
            println!("cross: using the cached build root {}", root.path.display());
        } else if stamp.is_file() {
            println!("cross: the build root's packages changed; installing {}", package_list().trim());
            root.host_files()?;
            root.install_packages()?;
        } else {
            root.make(&cache.join("bookworm-root.tmp"))?;
        }
        root.host_files()?;
        Ok(root)
    }

    /// Makes the root in `partial` and renames it into place once complete.
    fn make(&self, partial: &Path) -> anyhow::Result<()> {
        sys::fresh_dir(partial)?;
        let started = Instant::now();
        println!("cross: debootstrap --variant=minbase {SUITE} into {} (once)", partial.display());
        run_command(Command::new("debootstrap").args(["--variant=minbase", SUITE]).arg(partial).arg(MIRROR))
            .with_context(|| format!("debootstrap failed; check that this machine reaches {MIRROR}, then run again"))?;
        let bootstrapped = Instant::now();
        println!("cross: debootstrap took {} s", (bootstrapped - started).as_secs());

        let unfinished = Root {
            path: partial.to_path_buf(),
            target: self.target.clone(),
            cargo_home: self.cargo_home.clone(),
            xtask: self.xtask.clone(),
        };
        unfinished.host_files()?;
        unfinished.install_packages()?;
        println!("cross: the toolchain install took {} s", bootstrapped.elapsed().as_secs());

        if self.path.exists() {
            std::fs::remove_dir_all(&self.path)
                .with_context(|| format!("cannot remove {}; remove it by hand", self.path.display()))?;
        }
        std::fs::rename(partial, &self.path)
            .with_context(|| format!("cannot rename {} to {}", partial.display(), self.path.display()))?;
        println!("cross: cached the build root in {} ({} s)", self.path.display(), started.elapsed().as_secs());
        Ok(())
    }

    /// Installs [`package_list`] with apt and records it in [`STAMP`].
    fn install_packages(&self) -> anyhow::Result<()> {
        let apt = |args: &[&str]| -> anyhow::Result<()> {
            let env = [("DEBIAN_FRONTEND".to_owned(), "noninteractive".to_owned())];
            run_command(&mut self.command(&[], &env, "/", args))
        };
        for arch in Arch::ALL {
            apt(&["dpkg", "--add-architecture", arch.debian()])?;
        }
        sys::write(&self.path.join("etc/apt/sources.list.d/security.list"), SECURITY_SOURCE, 0o644)?;
        apt(&["apt-get", "update", "-qq"]).context("apt-get update failed in the build root; check the network")?;
        let list = package_list();
        let mut install = vec!["apt-get", "install", "-y", "-qq", "--no-install-recommends"];
        install.extend(list.split_whitespace());
        apt(&install).context("installing the toolchain in the build root failed; see apt-get's message above")?;
        apt(&["apt-get", "clean"])?;
        sys::write(&self.path.join(STAMP), list, 0o644)
    }

    /// Copies the host's name resolution and CA certificates into the root, so the root reaches and trusts what
    /// the host does (crates.io through the host's proxy or TLS inspection included).
    fn host_files(&self) -> anyhow::Result<()> {
        for file in ["etc/resolv.conf", "etc/ssl/certs/ca-certificates.crt"] {
            let from = Path::new("/").join(file);
            if !from.is_file() {
                continue;
            }
            let to = self.path.join(file);
            if to.is_symlink() {
                std::fs::remove_file(&to).with_context(|| format!("cannot remove {}", to.display()))?;
            }
            sys::install(&from, &to, 0o644)?;
        }
        Ok(())
    }

    /// A command that runs `argv` in the root, in directory `cwd` inside it, with a clean environment (`PATH`,
    /// `HOME`, the host's proxy settings, then `env`) and `mounts` besides `/proc` and `/dev`.
    fn command(&self, mounts: &[Mount], env: &[(String, String)], cwd: &str, argv: &[&str]) -> Command {
        let mut command = Command::new("unshare");
        command.args(["--mount", "--propagation", "private", "--"]).arg(&self.xtask).arg(ENTER).arg(&self.path);
        for mount in mounts {
            command.arg(&mount.from).arg(mount.to).arg(if mount.read_only { "ro" } else { "rw" });
        }
        command.args(["--", "/usr/bin/env", "-i", "-C", cwd]);
        for (name, value) in root_env(env) {
            command.arg(format!("{name}={value}"));
        }
        command.args(argv);
        command
    }

    /// The mounts of a cargo run: the workspace read-only, the cross target directory, the cargo home.
    fn cargo_mounts(&self) -> Vec<Mount> {
        vec![
            Mount { from: workspace_root(), to: "/src", read_only: true },
            Mount { from: self.target.clone(), to: "/target", read_only: false },
            Mount { from: self.cargo_home.clone(), to: "/cargo-home", read_only: false },
        ]
    }

    /// The environment of cargo in the root for `arch`.
    fn cargo_env(arch: Arch) -> Vec<(String, String)> {
        let mut env = vec![
            ("CARGO_HOME".to_owned(), "/cargo-home".to_owned()),
            ("CARGO_TARGET_DIR".to_owned(), "/target".to_owned()),
        ];
        env.extend(arch.cargo_env());
        env
    }

    /// Runs `cargo ARGS --target <triple> --locked` for `arch` in the workspace inside the root.
    fn cargo(&self, arch: Arch, args: &[&str]) -> Command {
        // Cargo's own options go before a `--`, which starts the test binaries' arguments (their filters).
        let split = args.iter().position(|arg| *arg == "--").unwrap_or(args.len());
        let mut argv = vec!["cargo"];
        argv.extend(&args[..split]);
        argv.extend(["--target", arch.triple(), "--locked"]);
        argv.extend(&args[split..]);
        self.command(&self.cargo_mounts(), &Root::cargo_env(arch), "/src", &argv)
    }

    /// Builds att-tokend and att-token for `arch` with the release profile, one package per cargo run; returns
    /// where they are on the host.
    pub(crate) fn build_release(&self, arch: Arch) -> anyhow::Result<PathBuf> {
        let started = Instant::now();
        for package in crate::dist::PROGRAMS {
            run_command(&mut self.cargo(arch, &["build", "--release", "-p", package])).with_context(|| {
                format!("the release build for {} failed in the build root; fix the error above", arch.triple())
            })?;
        }
        println!("cross: release build for {} took {} s", arch.triple(), started.elapsed().as_secs());
        Ok(self.target.join(arch.triple()).join("release"))
    }

    /// Builds the example `name` of att-tokend (e.g. the benchmark client) for `arch` with the release profile;
    /// returns where it is on the host.
    pub(crate) fn build_example(&self, arch: Arch, name: &str) -> anyhow::Result<PathBuf> {
        run_command(&mut self.cargo(arch, &["build", "--release", "-p", "att-tokend", "--example", name]))
            .with_context(|| {
                format!(
                    "building the example {name} for {} failed in the build root; fix the error above",
                    arch.triple()
                )
            })?;
        Ok(self.target.join(arch.triple()).join("release").join("examples").join(name))
    }

    /// Runs `argv` in the root and returns its output (`/target` mounted).
    fn capture(&self, argv: &[&str], env: &[(String, String)], cwd: &str) -> anyhow::Result<String> {
        let mounts = [Mount { from: self.target.clone(), to: "/target", read_only: false }];
        sys::capture(&mut self.command(&mounts, env, cwd, argv))
    }

    /// The library dependencies of `arch`'s release binaries, from `dpkg-shlibdeps` in the root (the root has
    /// the ARM C libraries and their symbols files; the host has not).
    pub(crate) fn shlib_depends(&self, arch: Arch) -> anyhow::Result<String> {
        let work = self.target.join(format!("shlibdeps-{}", arch.debian()));
        sys::fresh_dir(&work.join("debian"))?;
        sys::write(&work.join("debian/control"), "", 0o644)?;
        let bin = format!("/target/{}/release", arch.triple());
        let cwd = format!("/target/shlibdeps-{}", arch.debian());
        let env = [("DEB_HOST_ARCH".to_owned(), arch.debian().to_owned())];
        let out = self
            .capture(&["dpkg-shlibdeps", "-O", &format!("{bin}/att-tokend"), &format!("{bin}/att-token")], &env, &cwd)
            .context("dpkg-shlibdeps in the build root could not work out the library dependencies")?;
        crate::deb::parse_shlibdeps(&out)
    }

    /// What builds for `arch`: `rustc -vV`, `cargo -V`, the cross C compiler and the packages' versions.
    pub(crate) fn toolchain(&self, arch: Arch) -> anyhow::Result<Toolchain> {
        let rustc = self.capture(&["rustc", "-vV"], &[], "/")?;
        let cargo = self.capture(&["cargo", "-V"], &[], "/")?;
        let gcc = self.capture(&[&format!("{}-gcc", arch.gnu()), "--version"], &[], "/")?;
        let mut query = vec!["dpkg-query", "-W", "-f", "${Package}:${Architecture} ${Version}\\n"];
        let packages = arch.toolchain_packages();
        query.extend(packages.iter().map(String::as_str));
        let versions = self.capture(&query, &[], "/")?;
        Ok(Toolchain {
            tools: vec![
                rustc.lines().next().unwrap_or_default().to_owned(),
                format!("rustc {}", rustc_detail(&rustc)),
                cargo.trim().to_owned(),
                gcc.lines().next().unwrap_or_default().to_owned(),
            ],
            packages: parse_package_versions(&versions),
        })
    }

    /// Runs [`TEST_RUNS`] over [`TEST_PACKAGES`] for `arch` under emulation; returns the number of tests passed.
    pub(crate) fn test(&self, arch: Arch) -> anyhow::Result<u64> {
        let mut passed = 0;
        for selection in TEST_RUNS {
            let mut args = vec!["test", "--no-fail-fast"];
            for package in TEST_PACKAGES {
                args.extend(["-p", package]);
            }
            args.extend(*selection);
            let mut command = self.cargo(arch, &args);
            let shown = format!(
                "cargo test (every package of TEST_PACKAGES) {} --target {}",
                selection.join(" "),
                arch.triple()
            );
            eprintln!("xtask: running {shown} in the build root");
            let mut child = command
                .stdout(Stdio::piped())
                .spawn()
                .with_context(|| format!("could not start {shown}; is unshare installed?"))?;
            let stdout = child.stdout.take().context("the test run has a standard output")?;
            let mut counts = TestCounts::default();
            for line in BufReader::new(stdout).lines() {
                let line = line.context("reading the test output failed")?;
                println!("{line}");
                counts.add_line(&line);
            }
            let status = child.wait()?;
            if !status.success() || counts.failed > 0 {
                bail!("{shown} failed ({status}, {} failed); the output above names the failing tests", counts.failed);
            }
            ensure!(counts.passed > 0, "{shown} ran no test; check TEST_RUNS in xtask/src/cross.rs");
            passed += counts.passed;
        }
        Ok(passed)
    }
}

/// The environment inside the root: `PATH`, `HOME`, a UTF-8 locale, the host's proxy settings, then `extra`.
fn root_env(extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), ROOT_PATH.to_owned()),
        ("HOME".to_owned(), "/root".to_owned()),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
    ];
    for (name, value) in std::env::vars() {
        if name.to_ascii_lowercase().ends_with("_proxy") {
            env.push((name, value));
        }
    }
    env.extend(extra.iter().cloned());
    env
}

/// The toolchain a build used, for the build information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Toolchain {
    /// One line per tool, e.g. `rustc 1.96.0 (...)`, `cargo 1.96.0`, `aarch64-linux-gnu-gcc (Debian ...) 14.2.0`.
    pub(crate) tools: Vec<String>,
    /// Debian packages and their versions (`rustc-web:amd64`, `1.96.0+dfsg1-1`); empty when none apply.
    pub(crate) packages: Vec<(String, String)>,
}

/// `host: ..., LLVM version: ...` from `rustc -vV`, as `(host x86_64-unknown-linux-gnu, LLVM 19.1.7)`.
pub(crate) fn rustc_detail(verbose: &str) -> String {
    let field = |name: &str| verbose.lines().find_map(|line| line.strip_prefix(name)).map(str::trim);
    format!("host {}, LLVM {}", field("host:").unwrap_or("unknown"), field("LLVM version:").unwrap_or("unknown"))
}

/// `dpkg-query -W -f '${Package}:${Architecture} ${Version}\n'` output as pairs.
pub(crate) fn parse_package_versions(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(package, version)| (package.to_owned(), version.trim().to_owned()))
        .collect()
}

/// Passed and failed counts summed over libtest's `test result:` lines.
#[derive(Debug, Default, PartialEq, Eq)]
struct TestCounts {
    passed: u64,
    failed: u64,
}

impl TestCounts {
    /// Adds the counts of a `test result: ok. 12 passed; 0 failed; ...` line; other lines are ignored.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else { return };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(number)) = (words.next(), words.next()) else { continue };
            let Ok(number) = number.parse::<u64>() else { continue };
            match label {
                "passed" => self.passed += number,
                "failed" => self.failed += number,
                _ => {}
            }
        }
    }
}

/// What `cross-test` was asked to do: the architectures, in order, each once.
fn parse_test_args(args: &[String]) -> anyhow::Result<Vec<Arch>> {
    let mut arches = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--arch" => {
                let name = args.next().context("--arch needs a value: arm64 or armhf")?;
                let arch = Arch::parse(name)?;
                if !arches.contains(&arch) {
                    arches.push(arch);
                }
            }
            other => bail!("unknown argument {other:?} to cross-test; usage:\n{TEST_HELP}"),
        }
    }
    if arches.is_empty() {
        arches.extend(Arch::ALL);
    }
    Ok(arches)
}

/// Runs `cargo xtask cross-test`.
pub(crate) fn run_tests(args: &[String]) -> anyhow::Result<()> {
    if args.iter().any(|arg| arg == "-h" || arg == "--help") {
        print!("{TEST_HELP}");
        return Ok(());
    }
    let arches = parse_test_args(args)?;
    let root = Root::get()?;
    let mut summary = Vec::new();
    for arch in arches {
        let started = Instant::now();
        let passed = root.test(arch)?;
        let line = format!("cross-test: {}: {passed} passed in {} s", arch.debian(), started.elapsed().as_secs());
        println!("{line}");
        summary.push(line);
    }
    for line in summary {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn architectures_are_named_by_debian_name_or_triple() {
        assert_eq!(Arch::parse("arm64").unwrap(), Arch::Arm64);
        assert_eq!(Arch::parse("aarch64-unknown-linux-gnu").unwrap(), Arch::Arm64);
        assert_eq!(Arch::parse("armhf").unwrap(), Arch::Armhf);
        assert_eq!(Arch::parse("armv7-unknown-linux-gnueabihf").unwrap(), Arch::Armhf);
        let error = Arch::parse("armel").unwrap_err();
        assert!(format!("{error}").contains("use arm64"), "{error}");
        for arch in Arch::ALL {
            assert_eq!(crate::dist::debian_arch(arch.triple()).unwrap(), arch.debian());
        }
    }

    #[test]
    fn cross_test_arguments_default_to_both_and_keep_order() {
        assert_eq!(parse_test_args(&[]).unwrap(), vec![Arch::Arm64, Arch::Armhf]);
        assert_eq!(parse_test_args(&args(&["--arch", "armhf"])).unwrap(), vec![Arch::Armhf]);
        assert_eq!(
            parse_test_args(&args(&["--arch", "armhf", "--arch", "arm64", "--arch", "armhf"])).unwrap(),
            vec![Arch::Armhf, Arch::Arm64]
        );
        assert!(parse_test_args(&args(&["--arch"])).is_err());
        assert!(parse_test_args(&args(&["--arch", "x86_64"])).is_err());
        assert!(parse_test_args(&args(&["--release"])).is_err());
    }

    #[test]
    fn cargo_environment_names_follow_the_triple() {
        let env: std::collections::BTreeMap<_, _> = Arch::Armhf.cargo_env().into_iter().collect();
        assert_eq!(env["CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER"], "arm-linux-gnueabihf-gcc");
        assert_eq!(env["CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER"], "qemu-arm");
        assert_eq!(env["CC_armv7_unknown_linux_gnueabihf"], "arm-linux-gnueabihf-gcc");
        assert_eq!(env["AR_armv7_unknown_linux_gnueabihf"], "arm-linux-gnueabihf-ar");
        let env: std::collections::BTreeMap<_, _> = Arch::Arm64.cargo_env().into_iter().collect();
        assert_eq!(env["CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER"], "aarch64-linux-gnu-gcc");
        assert_eq!(env["CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER"], "qemu-aarch64");
        assert_eq!(env["CC_aarch64_unknown_linux_gnu"], "aarch64-linux-gnu-gcc");
        assert!(!env.contains_key("QEMU_LD_PREFIX"), "the emulator takes the root's multiarch C library");
    }

    #[test]
    fn commands_in_the_root_get_a_clean_environment_and_their_mounts() {
        let root = Root {
            path: PathBuf::from("/t/cross/bookworm-root"),
            target: PathBuf::from("/t/cross/target"),
            cargo_home: PathBuf::from("/t/cross/cargo-home"),
            xtask: PathBuf::from("/t/debug/xtask"),
        };
        let command = root.cargo(Arch::Arm64, &["build", "--release"]);
        assert_eq!(command.get_program(), "unshare");
        assert_eq!(
            command.get_args().take(6).collect::<Vec<_>>(),
            ["--mount", "--propagation", "private", "--", "/t/debug/xtask", ENTER]
        );
        let argv: Vec<String> = command.get_args().map(|arg| arg.to_string_lossy().into_owned()).collect();
        let at =
            |needle: &str| argv.iter().position(|arg| arg == needle).unwrap_or_else(|| panic!("{needle} in {argv:?}"));
        assert_eq!(
            &argv[at("/t/cross/bookworm-root")..at("/t/cross/target")],
            ["/t/cross/bookworm-root", &*workspace_root().to_string_lossy(), "/src", "ro"]
        );
        assert_eq!(&argv[at("/t/cross/target")..at("/t/cross/target") + 3], ["/t/cross/target", "/target", "rw"]);
        assert_eq!(&argv[at("/usr/bin/env")..at("/usr/bin/env") + 4], ["/usr/bin/env", "-i", "-C", "/src"]);
        assert!(argv.contains(&"CARGO_HOME=/cargo-home".to_owned()), "{argv:?}");
        assert!(argv.contains(&format!("PATH={ROOT_PATH}")), "{argv:?}");
        assert!(!argv.iter().any(|arg| arg.starts_with("RUSTUP") || arg.starts_with("CARGO_MANIFEST_DIR")), "{argv:?}");
        assert_eq!(
            argv[argv.len() - 6..],
            ["cargo", "build", "--release", "--target", "aarch64-unknown-linux-gnu", "--locked"]
        );
    }

    #[test]
    fn test_counts_add_up_over_result_lines() {
        let mut counts = TestCounts::default();
        counts
            .add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.52s");
        counts.add_line("test plan::x ... ok");
        counts.add_line("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out");
        assert_eq!(counts, TestCounts { passed: 15, failed: 2 });
    }

    #[test]
    fn toolchain_details_are_read_from_the_tools() {
        let verbose = "rustc 1.96.0 (abc 2026-01-01) (built from a source tarball)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\nrelease: 1.96.0\nLLVM version: 19.1.7\n";
        assert_eq!(rustc_detail(verbose), "host x86_64-unknown-linux-gnu, LLVM 19.1.7");
        assert_eq!(
            parse_package_versions("rustc-web:amd64 1.96.0+dfsg1-1\ngcc-aarch64-linux-gnu:amd64 4:14.2.0-1\n"),
            vec![
                ("rustc-web:amd64".to_owned(), "1.96.0+dfsg1-1".to_owned()),
                ("gcc-aarch64-linux-gnu:amd64".to_owned(), "4:14.2.0-1".to_owned())
            ]
        );
    }
}
