//! `cargo xtask system-test`: the released `.deb` on a real Debian 12 systemd, end to end.
//!
//! On this machine's architecture it boots a minimal Debian 12 root (`debootstrap --variant=minbase`, cached
//! under the target directory and copied afresh for each run) with `systemd-nspawn --boot`, and runs every
//! command inside with `nsenter` into the container's namespaces; the container shares the host's network and
//! kernel. With `--arch arm64|armhf` it boots an emulated ARM machine ([`crate::vm`]) with Debian's own ARM
//! kernel and runs every command over ssh; loopback ports are forwarded both ways. Either way the fake cloud
//! runs on the host and the daemon reaches it at `127.0.0.1`. In order, it proves that `apt install` pulls the
//! dependencies and starts the service; that sealed credentials reach the daemon through
//! `LoadCredentialEncrypted=` and `Type=notify` start; the bus policy with real users; the sandbox as systemd
//! builds it; the wall clock as timedated reports it; reload (and a failed one), `kill -9`, the watchdog and
//! D-Bus activation; the figures on that architecture; a journal at debug level free of secrets; and a purge
//! that leaves nothing of ours.
//!
//! Cleanup happens on every path, failure included: the machine is powered off (the container: SIGTERM to
//! `systemd-nspawn`, then SIGKILL to it and to the container's init; the emulator: killed when it does not
//! stop), the fake cloud stopped, and the run's copy of the root removed. Cached roots and images are never
//! written to.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::procs::{Running, Scratch};
use crate::sys;
use crate::util::{cargo, run as run_command};
use crate::vm;

/// Help for `cargo xtask system-test`.
pub(crate) const HELP: &str = "\
cargo xtask system-test [--arch arm64|armhf] [--deb PATH] [--mirror URL]

As root: boots a minimal Debian 12 under its real systemd, installs the package (built by
`cargo xtask dist` for that architecture unless --deb is given) with apt, and proves it end to
end: install, sealed credentials and Type=notify start, the bus policy, token files, the proxy
unit template (loopback and unix socket), the sandbox (no core dumps, no swap) and sealed
sessions, the wall clock as timedated reports it, reload, kill -9, the watchdog (about 40 s),
D-Bus activation, the figures (stripped size, idle memory with 10 tokens, GetToken against
Ping), a journal without secrets, purge.

Without --arch: this machine's architecture, in a container (systemd-nspawn; root cached in
<target dir>/system-test/bookworm-minbase). Takes about 2 minutes with the cached root; the first
run also downloads about 250 MB. The wall-clock step sets the host kernel's clock state (maximum
error and STA_UNSYNC, never the time) for a few seconds, then puts it back.

With --arch arm64 or armhf: an emulated ARM machine (qemu-system-aarch64 / qemu-system-arm) that
runs Debian's own ARM kernel, so the unit's seccomp filter, sandbox and credentials are the
kernel's, as on a gateway. Its disk image is cached in <target dir>/system-test/vm-ARCH; the
package is cross-built in the build root that `cargo xtask dist --target` keeps. Commands reach
the machine over ssh on a loopback-forwarded port. Slower: the emulator runs several times
slower than the host.

Needs network access to the Debian mirror; missing tools (systemd-container, debootstrap, qemu)
are installed with apt-get.

  --arch ARCH    arm64 or armhf: test on an emulated ARM machine (default: this machine's own)
  --deb PATH     the package to test instead of building one
  --mirror URL   the Debian mirror for debootstrap and apt (default http://deb.debian.org/debian)
";

const MACHINE: &str = "att-system-test";
const READER: &str = "att-st-reader";
const OUTSIDER: &str = "att-st-outsider";
const BUS_NAME: &str = "io.allthingstalk.TokenAgent1";
const OBJECT: &str = "/io/allthingstalk/TokenAgent1";
const DEVICE_ID: &str = "SystemTestDevice7aaaaaaa";
const DEVICE_TOKEN: &str = "maker:4SystemTestDeviceToken7sealed";
const DEVICE2_ID: &str = "SystemTestDevice8bbbbbbb";
const DEVICE2_TOKEN: &str = "maker:4SystemTestDeviceToken8file";
/// The account `main` logs in to interactively, with `att-token login` and a TOTP code.
const USERNAME: &str = "gateway@example.com";
const PASSWORD: &str = "system test & more = fun";
const TOTP_SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
/// The account `auto` logs in to on its own, from a sealed password and TOTP seed.
const AUTO_USERNAME: &str = "unattended@example.com";
const AUTO_PASSWORD: &str = "sealed password, never logged";
const AUTO_TOTP_SEED: &str = "KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU";
/// The token file the daemon keeps for `sensor-7`, in its `RuntimeDirectory=`.
const TOKEN_FILE: &str = "/run/att-tokend/sensor-7.token";
/// The token file the daemon keeps for the user token `main`.
const MAIN_FILE: &str = "/run/att-tokend/main.token";
/// An account the config does not list as a reader (Debian's base-passwd always has it, group nogroup).
const STRANGER: &str = "nobody";
const CREDENTIALS_DIR: &str = "/run/credentials/att-tokend.service";
/// Device tokens added for the figures step, so the daemon holds 10 tokens as on a busy gateway.
const FIGURE_TOKENS: usize = 6;
/// The stripped daemon's size limit, on every architecture.
const SIZE_LIMIT: u64 = 4 * 1024 * 1024;
/// The idle RSS limit with 10 tokens, in KiB.
const RSS_LIMIT_KIB: u64 = 6 * 1024;
const PATIENCE: Duration = Duration::from_secs(60);
/// Where the benchmark client goes inside.
const CLIENT_INSIDE: &str = "/usr/local/bin/att-bench-client";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// What `system-test` was asked to do.
#[derive(Debug, Default, PartialEq)]
struct Options {
    /// The emulated ARM machine to test on; `None`: a container on this machine's own architecture.
    arch: Option<vm::Arch>,
    deb: Option<PathBuf>,
    mirror: Option<String>,
}

fn parse(args: &[String]) -> anyhow::Result<Option<Options>> {
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--deb" => {
                let path =
                    args.next().context("--deb needs a path, e.g. --deb target/dist/att-tokend_0.1.0-1_amd64.deb")?;
                options.deb = Some(std::path::absolute(path)?);
            }
            "--arch" => {
                let name = args.next().context("--arch needs a value: arm64 or armhf")?;
                options.arch = match name.as_str() {
                    "amd64" | "x86_64" | "host" => None,
                    other => Some(vm::Arch::parse(other)?),
                };
            }
            "--mirror" => {
                let url = args.next().context("--mirror needs a URL, e.g. --mirror http://deb.debian.org/debian")?;
                options.mirror = Some(url.clone());
            }
            other => bail!("unknown argument {other:?} to system-test; usage:\n{HELP}"),
        }
    }
    Ok(Some(options))
}

/// Runs `cargo xtask system-test`.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let Some(options) = parse(args)? else {
        print!("{HELP}");
        return Ok(());
    };
    preflight(options.arch)?;
    let started = Instant::now();
    let deb = match options.deb {
        Some(deb) => {
            ensure!(
                deb.is_file(),
                "{} is not a file; build one with `cargo xtask dist` or leave out --deb",
                deb.display()
            );
            deb
        }
        None => crate::dist::dist(options.arch.map(vm::Arch::triple))?.deb,
    };
    let fake = build_fake_cloud()?;
    let client = bench_client(options.arch)?;
    let mirror = options.mirror.as_deref().unwrap_or(DEFAULT_MIRROR);
    let built = Instant::now();

    let scratch = Scratch::new("system-test")?;
    let fake_args = [
        "--device-token".to_owned(),
        format!("{DEVICE_TOKEN}={DEVICE_ID}"),
        "--device-token".to_owned(),
        format!("{DEVICE2_TOKEN}={DEVICE2_ID}"),
        "--user".to_owned(),
        format!("{USERNAME}:{PASSWORD}:{TOTP_SEED}"),
        "--user".to_owned(),
        format!("{AUTO_USERNAME}:{AUTO_PASSWORD}:{AUTO_TOTP_SEED}"),
    ];
    let mut fake_args = fake_args.to_vec();
    for n in 0..FIGURE_TOKENS {
        fake_args.extend(["--device-token".to_owned(), format!("{}={}", figure_token(n), figure_device(n))]);
    }
    let (_fake, url) = crate::procs::start_fake(&fake, &scratch, &fake_args)?;
    let fake_port = url.rsplit(':').next().and_then(|port| port.parse::<u16>().ok());
    let fake_port = fake_port.with_context(|| format!("the fake cloud's address {url} ends in no port"))?;
    let deb_name = deb.file_name().context("the package path ends in a file name")?.to_string_lossy().into_owned();
    let deb_inside = format!("/var/cache/att-system-test/{deb_name}");

    let cache = sys::target_dir()?.join("system-test");
    let (guest, run_dir, rooted) = match options.arch {
        None => {
            let base = cached_root(&cache, mirror)?;
            let rooted = Instant::now();
            let run_dir = RunDir::copy_of(&base, &cache)?;
            sys::install(&deb, &run_dir.path.join(deb_inside.trim_start_matches('/')), 0o644)?;
            sys::install(&client, &run_dir.path.join(CLIENT_INSIDE.trim_start_matches('/')), 0o755)?;
            let container = Container::boot(&run_dir.path, &scratch)?;
            println!(
                "system-test: booted Debian 12 minbase under systemd (container init is host pid {})",
                container.pid
            );
            (Guest::Container(container), Some(run_dir), rooted)
        }
        Some(arch) => {
            let image = vm::cached_image(arch, mirror)?;
            let rooted = Instant::now();
            let machine = vm::Vm::boot(&image, &scratch)?;
            println!(
                "system-test: booted Debian 12 {} under its own kernel in the full-system emulator",
                arch.debian()
            );
            machine.copy_in(&deb, &deb_inside)?;
            machine.copy_in(&client, CLIENT_INSIDE)?;
            machine.check(&["chmod", "0755", CLIENT_INSIDE])?;
            (Guest::Vm(machine), None, rooted)
        }
    };
    let inside = guest.reach_host(fake_port)?;
    println!("system-test: the fake cloud listens on {url} (host loopback; {inside} inside)");
    let secrets = [DEVICE_TOKEN, DEVICE2_TOKEN, PASSWORD, TOTP_SEED, AUTO_PASSWORD, AUTO_TOTP_SEED];
    let mut secrets = secrets.map(str::to_owned).to_vec();
    secrets.extend((0..FIGURE_TOKENS).map(figure_token));
    let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let arch = options.arch.map_or_else(|| crate::dist::debian_arch(&host).unwrap_or("host"), vm::Arch::debian);
    let mut test = Test { c: &guest, url, shipped: String::new(), secrets, arch };
    let steps_started = Instant::now();
    test.step("1 install", |t| t.install(&deb_inside))?;
    test.step("2 sealed credentials, Type=notify start", Test::credentials)?;
    test.step("3 the system bus: readers, outsiders, login", Test::bus_access)?;
    test.step("4 the sandbox", Test::sandbox)?;
    test.step("5 the wall clock, asked of timedated", Test::clock)?;
    test.step("6 reload, kill -9, watchdog, D-Bus activation", Test::lifecycle)?;
    test.step("7 figures: size, idle memory with 10 tokens, GetToken against Ping", Test::figures)?;
    test.step("8 no secret in the journal at debug level", Test::journal)?;
    test.step("9 purge", Test::purge)?;
    drop(test);
    guest.poweroff();
    drop(run_dir);
    println!(
        "system-test: passed in {} s (build {} s, root {} s, steps {} s)",
        started.elapsed().as_secs(),
        (built - started).as_secs(),
        (rooted - built).as_secs(),
        steps_started.elapsed().as_secs()
    );
    Ok(())
}

/// Root, the tools (installed when missing).
fn preflight(arch: Option<vm::Arch>) -> anyhow::Result<()> {
    let uid = sys::capture(Command::new("id").arg("-u"))?;
    ensure!(uid.trim() == "0", "system-test boots a container or an emulated machine: run it as root");
    if arch.is_some() {
        // The emulated machine's own tools are checked (and installed) by the vm module.
        return Ok(());
    }
    sys::install_missing(&[
        ("systemd-nspawn", "systemd-container"),
        ("debootstrap", "debootstrap"),
        ("nsenter", "util-linux"),
        ("cp", "coreutils"),
    ])?;
    Ok(())
}

fn build_fake_cloud() -> anyhow::Result<PathBuf> {
    let target_dir = sys::target_dir()?;
    // Release, like the package: the dependencies it shares with the daemon are built already.
    run_command(cargo().env("CARGO_TARGET_DIR", &target_dir).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "fake-cloud",
        "--bin",
        "att-fake-cloud",
    ]))
    .context("building the fake cloud failed; fix the error above")?;
    Ok(target_dir.join("release").join("att-fake-cloud"))
}

/// The cached minimal root: `<cache>/bookworm-minbase`, made with debootstrap when missing. A
/// debootstrap that did not finish leaves only `bookworm-minbase.tmp`, which the next run replaces.
fn cached_root(cache: &Path, mirror: &str) -> anyhow::Result<PathBuf> {
    let base = cache.join("bookworm-minbase");
    if base.join("usr/lib/systemd/systemd").exists() || base.join("lib/systemd/systemd").exists() {
        println!("system-test: using the cached root {}", base.display());
        return Ok(base);
    }
    let partial = cache.join("bookworm-minbase.tmp");
    sys::fresh_dir(&partial)?;
    let started = Instant::now();
    println!("system-test: debootstrap --variant=minbase bookworm (about 250 MB from {mirror}; a few minutes, once)");
    run_command(
        Command::new("debootstrap")
            .args(["--variant=minbase", "--include=systemd,systemd-sysv,dbus,libpam-systemd", "bookworm"])
            .arg(&partial)
            .arg(mirror),
    )
    .with_context(|| {
        format!("debootstrap failed; check that this machine reaches {mirror} (or pass --mirror URL), then run again")
    })?;
    if base.exists() {
        std::fs::remove_dir_all(&base)
            .with_context(|| format!("cannot remove {}; remove it by hand", base.display()))?;
    }
    std::fs::rename(&partial, &base)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), base.display()))?;
    println!("system-test: cached the root in {} ({} s)", base.display(), started.elapsed().as_secs());
    Ok(base)
}

/// This run's copy of the cached root, removed on drop.
struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Copies `base` to `<cache>/run-<pid>`, first removing copies left by runs that are gone.
    fn copy_of(base: &Path, cache: &Path) -> anyhow::Result<RunDir> {
        for entry in std::fs::read_dir(cache)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("run-") else { continue };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                println!("system-test: removing {} left by an earlier run", entry.path().display());
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let path = cache.join(format!("run-{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        let run_dir = RunDir { path };
        run_command(Command::new("cp").args(["-a", "--reflink=auto", "--"]).arg(base).arg(&run_dir.path))
            .context("copying the cached root failed; check the free space under the target directory")?;
        Ok(run_dir)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            eprintln!("system-test: could not remove {}: {error}; remove it by hand", self.path.display());
        }
    }
}

/// The Debian 12 machine the package is tested on: a container sharing the host's kernel, or an emulated ARM
/// machine with its own.
enum Guest {
    Container(Container),
    Vm(vm::Vm),
}

impl Guest {
    /// What messages call it.
    fn name(&self) -> &'static str {
        match self {
            Guest::Container(_) => "the container",
            Guest::Vm(_) => "the emulated machine",
        }
    }

    /// `program args…` run inside as root, with a small fixed environment and stdin from /dev/null.
    fn command(&self, args: &[&str]) -> Command {
        match self {
            Guest::Container(container) => container.command(args),
            Guest::Vm(vm) => vm.command(args),
        }
    }

    /// The address inside at which the guest reaches the host's `127.0.0.1:port`.
    fn reach_host(&self, port: u16) -> anyhow::Result<String> {
        match self {
            // The container shares the host's network.
            Guest::Container(_) => {}
            Guest::Vm(vm) => vm.forward_to_host(port)?,
        }
        Ok(format!("127.0.0.1:{port}"))
    }

    /// Makes the guest's `127.0.0.1:port` reachable from the host at the same address.
    fn reach_guest(&self, port: u16) -> anyhow::Result<()> {
        match self {
            Guest::Container(_) => Ok(()),
            Guest::Vm(vm) => vm.forward_from_host(port),
        }
    }

    /// Powers the machine off and waits for it (killing it after a while; dropping does the same at once).
    fn poweroff(self) {
        match self {
            Guest::Container(container) => container.poweroff(),
            Guest::Vm(vm) => vm.poweroff(),
        }
    }

    /// Makes the guest's kernel clock count as synchronised or not, as an NTP client does (maximum error and
    /// `STA_UNSYNC`; never the time). The container shares the host's kernel; the emulated machine has its own,
    /// set with adjtimex(8) inside.
    fn set_clock_synchronised(&self, synchronised: bool) -> anyhow::Result<()> {
        match self {
            Guest::Container(_) => testbed::KernelClock::set_synchronised(synchronised),
            Guest::Vm(_) => {
                let shown = self.check(&["adjtimex", "--print"])?;
                let status = shown
                    .lines()
                    .find_map(|line| line.trim().strip_prefix("status:"))
                    .and_then(|value| value.trim().parse::<i64>().ok())
                    .with_context(|| format!("adjtimex --print showed no status line:\n{shown}"))?;
                const STA_UNSYNC: i64 = 0x40;
                let (maxerror, esterror, status) = if synchronised {
                    (10_000, 1_000, status & !STA_UNSYNC)
                } else {
                    (16_000_000, 0, status | STA_UNSYNC)
                };
                let (maxerror, esterror, status) = (maxerror.to_string(), esterror.to_string(), status.to_string());
                self.check(&["adjtimex", "--maxerror", &maxerror, "--esterror", &esterror, "--status", &status])
                    .map(drop)
            }
        }
    }

    /// How much longer than on the host things take inside: emulated ARM runs several times slower.
    fn patience(&self) -> Duration {
        match self {
            Guest::Container(_) => PATIENCE,
            Guest::Vm(_) => PATIENCE * 4,
        }
    }

    /// Runs `args` inside as root and returns its output, whatever the exit status.
    fn output(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.command(args).output().with_context(|| format!("could not run {args:?} in {}", self.name()))
    }

    /// Runs `args` inside as root; fails with its stderr unless it succeeds; returns stdout.
    fn check(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.output(args)?;
        ensure!(
            out.status.success(),
            "`{}` in {} failed with {}: {}",
            args.join(" "),
            self.name(),
            out.status,
            text(&out.stderr)
        );
        Ok(text(&out.stdout))
    }

    /// `args` run inside as `user`, with that user's groups.
    fn as_user(&self, user: &str, args: &[&str]) -> Command {
        self.as_account(user, user, testbed::Groups::Theirs, args)
    }

    /// `args` run inside as `user` with primary group `group` and `groups` ([`testbed::setpriv_args`]).
    fn as_account(&self, user: &str, group: &str, groups: testbed::Groups, args: &[&str]) -> Command {
        let prefix = testbed::setpriv_args(user, group, groups);
        let mut all: Vec<&str> = prefix.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        self.command(&all)
    }

    /// Writes `contents` (from stdin, never an argument) to `path` inside, with `mode` and `owner`.
    fn write(&self, path: &str, contents: &str, mode: &str, owner: &str) -> anyhow::Result<()> {
        let command = self.command(&["install", "-D", "-m", mode, "-o", owner, "-g", owner, "/dev/stdin", path]);
        let out = crate::procs::output_with_stdin(command, contents)?;
        ensure!(out.status.success(), "could not write {path} in {}: {}", self.name(), text(&out.stderr));
        Ok(())
    }

    /// The service's main pid, 0 when it has none.
    fn main_pid(&self) -> anyhow::Result<u32> {
        let pid = self.check(&["systemctl", "show", "--property=MainPID", "--value", "att-tokend.service"])?;
        pid.parse().with_context(|| format!("systemctl show MainPID printed {pid:?}"))
    }

    fn property(&self, name: &str) -> anyhow::Result<String> {
        self.check(&["systemctl", "show", &format!("--property={name}"), "--value", "att-tokend.service"])
    }

    /// The unit's last journal lines, for failures.
    fn journal_tail(&self) -> String {
        match self.output(&[
            "journalctl",
            "--unit=att-tokend.service",
            "--lines=30",
            "--no-pager",
            "--output=short-monotonic",
        ]) {
            Ok(out) => text(&out.stdout),
            Err(error) => format!("(could not read the journal: {error:#})"),
        }
    }
}

/// A booted container: `systemd-nspawn` (our child) and the container's systemd (its grandchild).
struct Container {
    nspawn: Running,
    /// The host pid of the container's systemd, the target of `nsenter`.
    pid: u32,
}

impl Container {
    fn boot(root: &Path, scratch: &Scratch) -> anyhow::Result<Container> {
        let mut command = Command::new("systemd-nspawn");
        command
            .arg("--directory")
            .arg(root)
            .args(["--boot", "--register=no", "--keep-unit", "--quiet"])
            // timedated reads the kernel's clock state with adjtimex, which nspawn's seccomp filter refuses to a
            // container without CAP_SYS_TIME; a gateway's timedated has it. The daemon's unit drops every
            // capability whatever the container has.
            .arg("--capability=CAP_SYS_TIME")
            .arg(format!("--machine={MACHINE}"));
        let mut nspawn = Running::spawn("systemd-nspawn", command, scratch)?;
        let deadline = Instant::now() + PATIENCE;
        let pid = loop {
            if let Some(status) = nspawn.try_status() {
                bail!(
                    "systemd-nspawn exited with {status} before the container booted: {}\n\
                     What to do: it needs cgroup v2 and root; see the message above",
                    nspawn.stderr_tail()
                );
            }
            if let Some(pid) = find_init(nspawn.pid()) {
                break pid;
            }
            ensure!(
                Instant::now() < deadline,
                "no systemd started in the container within {PATIENCE:?}: {}",
                nspawn.stderr_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let container = Container { nspawn, pid };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let out = container.command(&["systemctl", "is-system-running"]).output();
            let state = out.as_ref().map(|out| text(&out.stdout)).unwrap_or_default();
            match state.as_str() {
                "running" => break,
                "degraded" => {
                    let failed = container.command(&["systemctl", "--failed", "--no-legend", "--plain"]).output()?;
                    bail!(
                        "the container booted degraded; failed units:\n{}\nWhat to do: `journalctl -u UNIT` inside \
                         the container says why; delete the cached root to rebuild it",
                        text(&failed.stdout)
                    );
                }
                _ if Instant::now() >= deadline => {
                    bail!("the container's systemd is {state:?}, not running, after {PATIENCE:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        }
        Ok(container)
    }

    /// `program args…` run inside the container (all its namespaces), with a small fixed environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command.args(["-t", &self.pid.to_string(), "-a", "--"]).args(args);
        command
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .env("HOME", "/root")
            .env("TERM", "dumb")
            .env("SYSTEMD_PAGER", "")
            .env("SYSTEMD_COLORS", "0")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        command
    }

    /// SIGTERM to systemd-nspawn, which powers the container off; SIGKILL after 10 s (see [`Drop`]).
    fn poweroff(mut self) {
        let _ = self.nspawn.stop();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.nspawn.stop();
        // If nspawn was killed before its container stopped, the container's init is left: killing
        // it ends every process in the container's pid namespace.
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.pid)).unwrap_or_default();
        if comm.trim() == "systemd" && self.pid != 1 {
            let _ = Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
        }
    }
}

/// The container's systemd: the first process named `systemd` below `nspawn`.
fn find_init(nspawn: u32) -> Option<u32> {
    let mut pending = vec![nspawn];
    while let Some(pid) = pending.pop() {
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
            let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
            if comm.trim() == "systemd" {
                return Some(child);
            }
            pending.push(child);
        }
    }
    None
}

/// The steps, sharing the container, the fake cloud's URL and every secret the journal must not hold.
struct Test<'a> {
    c: &'a Guest,
    url: String,
    /// The conffile as the package installed it.
    shipped: String,
    secrets: Vec<String>,
    /// The Debian architecture under test, for the figures.
    arch: &'static str,
}

impl Test<'_> {
    /// Runs one step; a failure carries the unit's last journal lines.
    fn step(&mut self, title: &str, body: impl FnOnce(&mut Self) -> anyhow::Result<()>) -> anyhow::Result<()> {
        println!("system-test: step {title}");
        let started = Instant::now();
        match body(self) {
            Ok(()) => {
                println!("system-test: step {title}: passed ({:.1} s)", started.elapsed().as_secs_f64());
                Ok(())
            }
            Err(error) => Err(anyhow::anyhow!(
                "step {title} failed: {error:#}\n\natt-tokend's last journal lines:\n{}\n\nWhat to do: the check above \
                 names what differs from the expectation; the journal lines say what the daemon and systemd did",
                self.c.journal_tail()
            )),
        }
    }

    fn att_token(&self, user: Option<&str>, args: &[&str]) -> anyhow::Result<Output> {
        let mut all = vec!["att-token"];
        all.extend_from_slice(args);
        let mut command = match user {
            Some(user) => self.c.as_user(user, &all),
            None => self.c.command(&all),
        };
        command.output().with_context(|| format!("could not run att-token in {}", self.c.name()))
    }

    /// `att-token get NAME` as `user`, which must work; returns the token.
    fn get(&mut self, user: Option<&str>, name: &str) -> anyhow::Result<String> {
        let out = self.att_token(user, &["get", name])?;
        ensure!(
            out.status.success(),
            "att-token get {name} as {} failed: {}",
            user.unwrap_or("root"),
            text(&out.stderr)
        );
        let token = text(&out.stdout);
        ensure!(!token.is_empty(), "att-token get {name} printed nothing");
        if !self.secrets.contains(&token) {
            self.secrets.push(token.clone());
        }
        Ok(token)
    }

    /// Polls `att-token get NAME` as `user` until it works.
    fn wait_get(&mut self, user: Option<&str>, name: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + self.c.patience();
        loop {
            match self.get(user, name) {
                Ok(token) => return Ok(token),
                Err(error) if Instant::now() >= deadline => return Err(error),
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// Waits until the service is active with a main pid other than `old`; returns the new pid.
    fn wait_restarted(&self, old: u32, patience: Duration) -> anyhow::Result<u32> {
        let deadline = Instant::now() + patience;
        loop {
            let pid = self.c.main_pid()?;
            let state = self.c.property("ActiveState")?;
            if pid != 0 && pid != old && state == "active" {
                return Ok(pid);
            }
            ensure!(
                Instant::now() < deadline,
                "att-tokend was not running again within {patience:?} (state {state}, main pid {pid}, before {old})"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn installed(&self, package: &str) -> bool {
        self.c
            .output(&["dpkg-query", "-W", "-f=${Status}", package])
            .is_ok_and(|out| text(&out.stdout) == "install ok installed")
    }

    /// Step 1: apt pulls the dependencies, the service runs, the accounts and bus files exist.
    fn install(&mut self, deb: &str) -> anyhow::Result<()> {
        // The dependencies the minimal root lacks (the emulated machine's image has procps, which openssh-server
        // pulls in); apt must pull in every one of them.
        let missing: Vec<&str> =
            ["ca-certificates", "procps"].into_iter().filter(|package| !self.installed(package)).collect();
        ensure!(
            missing.contains(&"ca-certificates"),
            "the minimal root already has ca-certificates; delete the cached root or image to rebuild it"
        );
        self.c.check(&["apt-get", "update", "-qq"]).context("apt-get update failed; check the network")?;
        let out = self.c.output(&["apt-get", "install", "-y", "-q", "--no-install-recommends", deb])?;
        ensure!(out.status.success(), "apt-get install {deb} failed: {}\n{}", text(&out.stdout), text(&out.stderr));
        for package in ["att-tokend", "ca-certificates", "procps"] {
            ensure!(self.installed(package), "after apt-get install, {package} is not installed");
        }
        // The container has no TPM2 chip: postinst says what the seal is then worth.
        let said = text(&out.stdout);
        let binding = said.lines().find(|line| line.contains("created the state key")).unwrap_or_default();
        ensure!(
            binding.contains("host key only"),
            "postinst did not say the state key is bound to the host key only: {said}"
        );
        println!("system-test:   postinst: {binding}");
        println!(
            "system-test:   apt-get install ./{} pulled {}",
            deb.rsplit('/').next().unwrap_or(deb),
            missing.join(" and ")
        );
        // curl reaches the proxy template's unix socket in step 3 (not a dependency of the package).
        self.c.check(&["apt-get", "install", "-y", "-q", "--no-install-recommends", "curl"])?;
        let state = self.c.output(&["systemctl", "is-active", "att-tokend.service"])?;
        ensure!(
            text(&state.stdout) == "active",
            "after installation att-tokend is {}, not active",
            text(&state.stdout)
        );
        ensure!(
            self.c.check(&["systemctl", "is-enabled", "att-tokend.service"])? == "enabled",
            "the service is not enabled"
        );
        let user = self.c.check(&["getent", "passwd", "att-tokend"])?;
        let group = self.c.check(&["getent", "group", "att-tokens"])?;
        println!("system-test:   the service is enabled and active; user {user}; group {group}");
        for path in [
            "/usr/share/dbus-1/system.d/io.allthingstalk.TokenAgent1.conf",
            "/usr/share/dbus-1/system-services/io.allthingstalk.TokenAgent1.service",
            "/usr/share/dbus-1/interfaces/io.allthingstalk.TokenAgent1.xml",
            "/etc/att-tokend/config.toml",
        ] {
            self.c.check(&["test", "-f", path]).with_context(|| format!("{path} is not installed"))?;
        }
        let names = self.c.check(&["busctl", "--system", "--no-pager", "--no-legend", "--activatable", "list"])?;
        ensure!(names.contains(BUS_NAME), "the system bus does not list {BUS_NAME} as activatable: {names}");
        let owned = self.c.check(&["busctl", "--system", "--no-pager", "--no-legend", "list"])?;
        ensure!(
            owned.lines().any(|line| line.starts_with(BUS_NAME) && line.contains("att-tokend")),
            "{BUS_NAME} is not owned by the att-tokend service on the system bus"
        );
        println!(
            "system-test:   policy and activation files in place; {BUS_NAME} is owned on the system bus and activatable"
        );
        Ok(())
    }

    /// Step 2: sealed credentials in a drop-in; the config names them; restart reaches running.
    fn credentials(&mut self) -> anyhow::Result<()> {
        self.c.check(&["install", "-d", "-m", "0700", "/etc/credstore.encrypted"])?;
        for (name, secret) in
            [("sensor-7", DEVICE_TOKEN), ("auto-password", AUTO_PASSWORD), ("auto-totp", AUTO_TOTP_SEED)]
        {
            let path = format!("/etc/credstore.encrypted/att-tokend.{name}");
            let command = self.c.command(&["systemd-creds", "encrypt", &format!("--name={name}"), "-", &path]);
            let out = crate::procs::output_with_stdin(command, secret)?;
            ensure!(out.status.success(), "systemd-creds encrypt {name} failed: {}", text(&out.stderr));
            let sealed = self.c.output(&["cat", &path])?.stdout;
            ensure!(!String::from_utf8_lossy(&sealed).contains(secret), "{path} holds the secret in clear text");
        }
        self.c.write(
            "/etc/systemd/system/att-tokend.service.d/50-credentials.conf",
            "[Service]\n\
             LoadCredentialEncrypted=sensor-7:/etc/credstore.encrypted/att-tokend.sensor-7\n\
             LoadCredentialEncrypted=auto-password:/etc/credstore.encrypted/att-tokend.auto-password\n\
             LoadCredentialEncrypted=auto-totp:/etc/credstore.encrypted/att-tokend.auto-totp\n",
            "0644",
            "root",
        )?;
        self.c.write(
            "/etc/systemd/system/att-tokend.service.d/60-debug.conf",
            "[Service]\nEnvironment=RUST_LOG=debug\n",
            "0644",
            "root",
        )?;
        for (user, groups) in [(READER, Some("att-tokens")), (OUTSIDER, None)] {
            let mut args = vec!["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"];
            if let Some(groups) = groups {
                args.extend(["--groups", groups]);
            }
            args.push(user);
            self.c.check(&args)?;
        }
        self.shipped = self.c.check(&["cat", "/etc/att-tokend/config.toml"])?;
        let config = self.config(false);
        self.c.write("/etc/att-tokend/config.toml", &config, "0644", "root")?;
        self.c.check(&["systemctl", "daemon-reload"])?;
        self.c.check(&["systemctl", "restart", "att-tokend.service"])?;
        let shown = self.c.check(&[
            "systemctl",
            "show",
            "--property=Type,ActiveState,SubState,NotifyAccess,WatchdogUSec,StatusText",
            "att-tokend.service",
        ])?;
        for expected in ["Type=notify", "ActiveState=active", "SubState=running", "WatchdogUSec=30s"] {
            ensure!(shown.lines().any(|line| line == expected), "after restart the unit shows no {expected}:\n{shown}");
        }
        let status = shown.lines().find_map(|line| line.strip_prefix("StatusText=")).unwrap_or_default();
        ensure!(!status.is_empty(), "the daemon sent no STATUS= (notify protocol) after restart");
        println!("system-test:   3 secrets sealed with systemd-creds (host key), loaded with LoadCredentialEncrypted=");
        println!(
            "system-test:   systemctl restart returned at READY=1: active (running), Type=notify; status {status:?}"
        );
        let token = self.wait_get(None, "sensor-7")?;
        ensure!(token == DEVICE_TOKEN, "the device token served is not the sealed one");
        self.wait_get(None, "auto")?;
        println!(
            "system-test:   the sealed device token is served; `auto` logged in on its own with the sealed password and TOTP seed"
        );
        Ok(())
    }

    /// The installed conffile with the fake cloud and the test's tokens; `second` adds `sensor-8`
    /// from a token file.
    fn config(&self, second: bool) -> String {
        let shipped = &self.shipped;
        // att-tokens as a reader group lets the att-token-proxy@ template (user att-token-proxy, in att-tokens) in.
        let readers = format!("readers = {{ users = [\"{READER}\", \"{OUTSIDER}\"], groups = [\"att-tokens\"] }}");
        let mut config = format!(
            "{shipped}\n\n# Added by cargo xtask system-test.\n[api]\nurl = \"{url}\"\n\n\
             [[token]]\nname = \"sensor-7\"\nkind = \"device\"\ndevice_id = \"{DEVICE_ID}\"\ncredential = \"sensor-7\"\n\
             files = [\"{TOKEN_FILE}\"]\n{readers}\n\n\
             [[token]]\nname = \"main\"\nkind = \"user\"\nfiles = [\"{MAIN_FILE}\"]\n{readers}\n\n\
             [[token]]\nname = \"auto\"\nkind = \"user\"\nusername = \"{AUTO_USERNAME}\"\n\
             password_file = \"{CREDENTIALS_DIR}/auto-password\"\ntotp_secret_file = \"{CREDENTIALS_DIR}/auto-totp\"\n{readers}\n",
            url = self.url
        );
        if second {
            config.push_str(&format!(
                "\n[[token]]\nname = \"sensor-8\"\nkind = \"device\"\ndevice_id = \"{DEVICE2_ID}\"\n\
                 token_file = \"/etc/att-tokend/sensor-8.token\"\n{readers}\n"
            ));
        }
        config
    }

    /// Step 3: the real system bus with real users; a login with MFA as root.
    fn bus_access(&mut self) -> anyhow::Result<()> {
        let token = self.get(Some(READER), "sensor-7")?;
        ensure!(token == DEVICE_TOKEN, "{READER} got a different device token");
        let busctl = self
            .c
            .as_user(READER, &["busctl", "--system", "call", BUS_NAME, OBJECT, BUS_NAME, "GetToken", "s", "sensor-7"])
            .output()?;
        ensure!(busctl.status.success(), "busctl GetToken as {READER} failed: {}", text(&busctl.stderr));
        ensure!(
            text(&busctl.stdout).starts_with(&format!("sx \"{DEVICE_TOKEN}\"")),
            "busctl GetToken as {READER} answered something else than the device token"
        );
        self.get(Some(READER), "auto")?;
        println!(
            "system-test:   {READER} (in att-tokens, a listed reader) gets sensor-7 and auto with att-token and busctl"
        );

        let refused = self
            .c
            .as_user(
                OUTSIDER,
                &[
                    "dbus-send",
                    "--system",
                    "--print-reply",
                    &format!("--dest={BUS_NAME}"),
                    OBJECT,
                    &format!("{BUS_NAME}.GetToken"),
                    "string:sensor-7",
                ],
            )
            .output()?;
        let said = text(&refused.stderr);
        ensure!(
            !refused.status.success(),
            "{OUTSIDER} (not in att-tokens) got an answer; the bus policy let the call through"
        );
        ensure!(
            said.contains("org.freedesktop.DBus.Error.AccessDenied") && said.contains("Rejected send message"),
            "{OUTSIDER} was refused, but not by the bus policy: {said}"
        );
        let client = self.att_token(Some(OUTSIDER), &["get", "sensor-7"])?;
        ensure!(!client.status.success(), "att-token get sensor-7 as {OUTSIDER} succeeded");
        println!(
            "system-test:   {OUTSIDER} (listed as a reader, not in att-tokens) is refused by the bus policy: AccessDenied, \"Rejected send message\""
        );

        let patience = self.c.patience() / 6;
        let deadline = Instant::now() + patience;
        while !self.c.output(&["test", "-f", TOKEN_FILE])?.status.success() {
            ensure!(Instant::now() < deadline, "{TOKEN_FILE} did not appear within {patience:?} of the start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let file = self.c.as_user(READER, &["cat", TOKEN_FILE]).output()?;
        ensure!(
            file.status.success() && file.stdout == DEVICE_TOKEN.as_bytes(),
            "{READER} could not read {TOKEN_FILE} or it does not hold exactly sensor-7's token: {}",
            text(&file.stderr)
        );
        let stranger = self.c.as_account("nobody", "nogroup", testbed::Groups::None, &["cat", TOKEN_FILE]).output()?;
        ensure!(
            !stranger.status.success() && text(&stranger.stderr).contains("Permission denied"),
            "{STRANGER} (no reader of sensor-7) could read {TOKEN_FILE}, or failed for another reason: {}",
            text(&stranger.stderr)
        );
        let acl = self.c.check(&["stat", "-c", "%a %U", TOKEN_FILE])?;
        println!(
            "system-test:   {TOKEN_FILE} ({acl}, with the readers' ACL on tmpfs) holds exactly the token for {READER}; {STRANGER} gets Permission denied"
        );

        let code = crate::procs::fake_totp(&self.url, USERNAME)?;
        let login = self.c.command(&[
            "att-token",
            "login",
            "main",
            "--username",
            USERNAME,
            "--password-stdin",
            "--code",
            &code,
        ]);
        let out = crate::procs::output_with_stdin(login, &format!("{PASSWORD}\n"))?;
        ensure!(out.status.success(), "att-token login main as root failed: {}", text(&out.stderr));
        self.get(Some(READER), "main")?;
        println!(
            "system-test:   att-token login main as root with a TOTP code against the fake cloud; {READER} gets the user token"
        );
        self.proxy_template()
    }

    /// The shipped `att-token-proxy@.service` for `auto`: started by systemd as a dynamic user in att-tokens, it
    /// answers on loopback with the daemon's token added, and its journal holds no token.
    fn proxy_template(&mut self) -> anyhow::Result<()> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        self.c.reach_guest(port)?;
        self.c.write(
            "/etc/att-tokend/proxy/auto.env",
            &format!("ATT_TOKEN_PROXY_LISTEN=127.0.0.1:{port}\n"),
            "0644",
            "root",
        )?;
        self.c.check(&["systemctl", "start", "att-token-proxy@auto.service"])?;
        let token = self.get(Some(READER), "auto")?;
        // Asked from here (the container shares the host's network; the emulated machine's port is forwarded),
        // once the proxy listens.
        let deadline = Instant::now() + self.c.patience() / 6;
        let proxy = format!("http://127.0.0.1:{port}");
        let (status, body) = loop {
            match testbed::http(&proxy, "GET", "/me/grounds", "", "") {
                Ok(reply) => break reply,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                Err(e) => {
                    let journal =
                        self.c.output(&["journalctl", "-u", "att-token-proxy@auto", "--no-pager", "-n", "20"])?;
                    bail!("att-token-proxy@auto does not answer on 127.0.0.1:{port}: {e:#}\n{}", text(&journal.stdout));
                }
            }
        };
        ensure!(status == 200, "GET /me/grounds through att-token-proxy@auto answered {status}: {body}");
        let user = self.c.check(&["systemctl", "show", "-P", "User", "att-token-proxy@auto.service"])?;
        let journal = self.c.check(&["journalctl", "-u", "att-token-proxy@auto", "--no-pager", "--output=cat"])?;
        ensure!(journal.contains("/me/grounds"), "the proxy logged no line for the request:\n{journal}");
        ensure!(!journal.contains(&token), "the proxy's journal holds the token");
        println!(
            "system-test:   att-token-proxy@auto (as {user}, in att-tokens) answered GET /me/grounds on 127.0.0.1:{port} \
             with 200 from the fake cloud; its journal logs the request without the token"
        );
        self.proxy_unix_socket()
    }

    /// The template on a unix socket in its runtime directory, as README recommends: members of the group
    /// att-token-proxy get through, others cannot connect, and a web page's request (with `Origin`) is refused.
    fn proxy_unix_socket(&mut self) -> anyhow::Result<()> {
        const SOCKET: &str = "/run/att-token-proxy/auto/http.sock";
        self.c.write(
            "/etc/att-tokend/proxy/auto.env",
            &format!("ATT_TOKEN_PROXY_LISTEN=unix:{SOCKET}\nATT_TOKEN_PROXY_SOCKET_MODE=660\n"),
            "0644",
            "root",
        )?;
        self.c.check(&["usermod", "-aG", "att-token-proxy", READER])?;
        self.c.check(&["systemctl", "restart", "att-token-proxy@auto.service"])?;
        let patience = self.c.patience() / 6;
        let deadline = Instant::now() + patience;
        while !self.c.output(&["test", "-S", SOCKET])?.status.success() {
            ensure!(Instant::now() < deadline, "{SOCKET} did not appear within {patience:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let modes = self.c.check(&["stat", "-c", "%a %U %G", "/run/att-token-proxy/auto", SOCKET])?;
        ensure!(
            modes.lines().collect::<Vec<_>>()
                == ["750 att-token-proxy att-token-proxy", "660 att-token-proxy att-token-proxy"],
            "the runtime directory and socket are not 750 and 660 of att-token-proxy: {modes}"
        );
        let curl = |user: Option<&str>, extra: &[&str]| -> anyhow::Result<Output> {
            let mut args = vec!["curl", "-sS", "--unix-socket", SOCKET, "-o", "/dev/null", "-w", "%{http_code}"];
            args.extend_from_slice(extra);
            args.push("http://localhost/me/grounds");
            let mut command = match user {
                Some(user) => self.c.as_user(user, &args),
                None => self.c.command(&args),
            };
            command.output().with_context(|| format!("could not run curl in {}", self.c.name()))
        };
        let ok = curl(Some(READER), &[])?;
        ensure!(
            ok.status.success() && text(&ok.stdout) == "200",
            "GET /me/grounds through {SOCKET} as {READER} (in att-token-proxy) answered {}: {}",
            text(&ok.stdout),
            text(&ok.stderr)
        );
        let page = curl(Some(READER), &["-H", "Origin: http://attacker.example"])?;
        ensure!(text(&page.stdout) == "403", "a request with Origin through {SOCKET} answered {}", text(&page.stdout));
        let stranger = self
            .c
            .as_account(
                "nobody",
                "nogroup",
                testbed::Groups::None,
                &["curl", "-sS", "--unix-socket", SOCKET, "http://localhost/me/grounds"],
            )
            .output()?;
        ensure!(
            stranger.status.code() == Some(7),
            "{STRANGER} (not in att-token-proxy) could connect to {SOCKET}, or failed otherwise: {}",
            text(&stranger.stderr)
        );
        let pid = self.c.check(&["systemctl", "show", "-P", "MainPID", "att-token-proxy@auto.service"])?;
        self.undumpable("att-token-proxy@auto.service", &pid, "att-token-proxy")?;
        println!(
            "system-test:   att-token-proxy@auto on {SOCKET} (dir 750, socket 660): {READER}, in att-token-proxy, gets 200; \
             a request with Origin gets 403; {STRANGER} cannot connect (left running for the purge)"
        );
        Ok(())
    }

    /// No core dump and no swap for `unit`'s main process `pid` (running as `user`): it marked itself undumpable (the
    /// kernel then gives the files in its `/proc/PID`, but the directory, to root), its core size limit is 0, and
    /// the unit keeps it out of swap.
    fn undumpable(&self, unit: &str, pid: &str, user: &str) -> anyhow::Result<()> {
        let owners =
            self.c.check(&["stat", "-c", "%U", &format!("/proc/{pid}/status"), &format!("/proc/{pid}/mem")])?;
        ensure!(
            owners.lines().all(|owner| owner == "root"),
            "/proc/{pid}/status and mem of {unit} (running as {user}) belong to {owners:?}, not root: the process is \
             dumpable, so an abort would write its memory to a core dump"
        );
        let limits = self.c.check(&["cat", &format!("/proc/{pid}/limits")])?;
        let core = limits.lines().find(|line| line.starts_with("Max core file size")).unwrap_or_default();
        ensure!(
            core.split_whitespace().skip(4).take(2).all(|figure| figure == "0"),
            "{unit}'s core file size limit is not 0: {core}"
        );
        let shown = self.c.check(&["systemctl", "show", "--property=LimitCORE,MemorySwapMax", unit])?;
        for expected in ["LimitCORE=0", "MemorySwapMax=0"] {
            ensure!(shown.lines().any(|line| line == expected), "{unit} shows no {expected}:\n{shown}");
        }
        println!(
            "system-test:   {unit}: undumpable (/proc/{pid}/status and mem belong to root, the process to {user}), \
             core limit 0, LimitCORE=0, MemorySwapMax=0"
        );
        Ok(())
    }

    /// Step 4: the daemon's user, its view of the file system, its state, its exposure.
    fn sandbox(&mut self) -> anyhow::Result<()> {
        let pid = self.c.main_pid()?.to_string();
        let uid = self.c.check(&["id", "-u", "att-tokend"])?;
        let status = self.c.check(&["cat", &format!("/proc/{pid}/status")])?;
        let uids = status.lines().find_map(|line| line.strip_prefix("Uid:")).unwrap_or_default();
        ensure!(
            uids.split_whitespace().all(|id| id == uid),
            "the daemon runs with uids {uids}, not only att-tokend's {uid}"
        );
        let caps = status.lines().find_map(|line| line.strip_prefix("CapEff:")).unwrap_or_default().trim().to_owned();
        ensure!(caps.trim_start_matches('0').is_empty(), "the daemon has effective capabilities {caps}");
        println!("system-test:   the daemon (pid {pid}) runs as att-tokend (uid {uid}) with no capabilities");
        self.undumpable("att-tokend.service", &pid, "att-tokend")?;

        self.c.write("/root/att-system-test-marker", "root's file\n", "0600", "root")?;
        self.c.write("/home/someone/att-system-test-marker", "someone's file\n", "0600", "root")?;
        for dir in ["/root", "/home"] {
            let view = format!("/proc/{pid}/root{dir}");
            let listing = self.c.output(&["ls", "-A", &view])?;
            let mode = self.c.check(&["stat", "-c", "%a", &view])?;
            ensure!(
                text(&listing.stdout).is_empty() && mode == "0",
                "the daemon sees {dir} (mode {mode}): {}",
                text(&listing.stdout)
            );
            // As the daemon's user, in its mount namespace.
            let out = self.c.as_user("att-tokend", &["ls", "-A", &view]).output()?;
            ensure!(!out.status.success(), "att-tokend may list {dir} as the daemon sees it: {}", text(&out.stdout));
        }
        println!(
            "system-test:   in the daemon's mount namespace /root and /home are empty and mode 000 (the container's are not)"
        );

        let state = self.c.check(&["stat", "-c", "%a %U %G", "/var/lib/att-tokend"])?;
        ensure!(state == "700 att-tokend att-tokend", "/var/lib/att-tokend is {state}, not 700 att-tokend att-tokend");
        let files = self.c.check(&["find", "/var/lib/att-tokend", "-mindepth", "1", "-printf", "%y %m %u %p\\n"])?;
        ensure!(!files.is_empty(), "no session is saved in /var/lib/att-tokend");
        for line in files.lines() {
            ensure!(
                line.starts_with("f 600 att-tokend "),
                "in the state directory, not a 0600 att-tokend file: {line}"
            );
        }
        // Sessions are sealed with the state key postinst created with systemd-creds (host key here).
        let storage =
            self.c.check(&["busctl", "--system", "get-property", BUS_NAME, OBJECT, BUS_NAME, "SessionStorage"])?;
        ensure!(
            storage == "s \"sealed\"",
            "SessionStorage is {storage}, not sealed: the state-key credential was not used"
        );
        let mut sealed = 0;
        for session in ["main.json", "auto.json"] {
            let path = format!("/var/lib/att-tokend/{session}");
            let head = self.c.check(&["head", "-c", "17", &path])?;
            ensure!(head == "ATT-TOKEND SEALED", "{path} is not sealed: it starts with {head:?}");
            sealed += 1;
        }
        let credentials = self.c.check(&["find", CREDENTIALS_DIR, "-mindepth", "1", "-printf", "%y %m %u %p\\n"])?;
        println!(
            "system-test:   state: /var/lib/att-tokend 700, {} files 0600 att-tokend, {sealed} sessions sealed (SessionStorage sealed); credentials: {}",
            files.lines().count(),
            credentials.lines().map(|line| line.rsplit('/').next().unwrap_or(line)).collect::<Vec<_>>().join(", ")
        );

        let live = exposure(&self.c.check(&["systemd-analyze", "security", "--no-pager", "att-tokend.service"])?)?;
        let offline = exposure(&self.c.check(&[
            "systemd-analyze",
            "security",
            "--offline=true",
            "--no-pager",
            "/lib/systemd/system/att-tokend.service",
        ])?)?;
        ensure!(
            live == offline,
            "systemd-analyze security: the live unit's exposure is {live}, the offline figure {offline}"
        );
        println!("system-test:   systemd-analyze security on the live unit: {live}, as offline");
        Ok(())
    }

    /// Step 5: the daemon's view of the wall clock is the system's (`timedatectl`), under the shipped unit's sandbox;
    /// with the clock synchronised, a restart serves the saved user token at once, with no refresh and the token
    /// file untouched. The clock is made synchronised or not the way an NTP client does (the maximum error that
    /// timedated reads): in the host's kernel, which the container shares, putting back what was there afterwards;
    /// in the emulated machine's own kernel.
    fn clock(&mut self) -> anyhow::Result<()> {
        let Guest::Container(_) = self.c else {
            // The emulated machine's kernel is its own, thrown away with the machine.
            return self.clock_cases();
        };
        let host = testbed::KernelClock::read()?;
        let result = self.clock_cases();
        let restored = host.restore();
        result?;
        restored.context("could not put back the host kernel's clock state")?;
        println!(
            "system-test:   the host kernel's clock state is back as it was (synchronised: {})",
            host.synchronised()
        );
        Ok(())
    }

    fn clock_cases(&mut self) -> anyhow::Result<()> {
        for synchronised in [false, true] {
            self.c.set_clock_synchronised(synchronised)?;
            let system = self.c.check(&["timedatectl", "show", "--property=NTPSynchronized", "--value"])?;
            ensure!(
                system == if synchronised { "yes" } else { "no" },
                "timedatectl says NTPSynchronized={system} after the kernel's clock was made synchronised={synchronised}"
            );
            let before = refreshes(&self.url)?;
            let token = self.get(Some(READER), "main")?;
            let file = self.c.check(&["stat", "-c", "%i %y", MAIN_FILE])?;
            self.c.check(&["systemctl", "restart", "att-tokend.service"])?;
            let seen =
                self.c.check(&["busctl", "--system", "get-property", BUS_NAME, OBJECT, BUS_NAME, "ClockConfirmed"])?;
            let daemon = match seen.as_str() {
                "b true" => "yes",
                "b false" => "no",
                other => bail!("ClockConfirmed is {other:?}, not a boolean"),
            };
            ensure!(
                daemon == system,
                "the daemon's ClockConfirmed is {daemon}, timedatectl's NTPSynchronized {system}"
            );
            if synchronised {
                // Served at once: the first call after the restart, before any refresh could have been answered.
                let served = self.get(Some(READER), "main")?;
                ensure!(served == token, "with a confirmed clock the restart did not serve the saved access token");
                std::thread::sleep(Duration::from_secs(2));
                ensure!(refreshes(&self.url)? == before, "with a confirmed clock the restart refreshed a saved token");
                let after = self.c.check(&["stat", "-c", "%i %y", MAIN_FILE])?;
                ensure!(after == file, "the restart rewrote {MAIN_FILE} (inode and time were {file}, now {after})");
                println!(
                    "system-test:   synchronised: timedatectl NTPSynchronized=yes, ClockConfirmed true; after a restart the \
                     saved token of main was served at once, no refresh, {MAIN_FILE} untouched ({file})"
                );
            } else {
                let fresh = self.wait_get(Some(READER), "main")?;
                ensure!(fresh != token, "with an unconfirmed clock the restart served the saved access token");
                ensure!(refreshes(&self.url)? > before, "with an unconfirmed clock no refresh followed the restart");
                println!(
                    "system-test:   not synchronised: timedatectl NTPSynchronized=no, ClockConfirmed false; after a restart \
                     the saved token of main was refreshed before it was served"
                );
            }
        }
        Ok(())
    }

    /// Step 6: reload (good and broken), kill -9, the watchdog, D-Bus activation.
    fn lifecycle(&mut self) -> anyhow::Result<()> {
        // Reload: a new token from a file appears without a restart.
        let pid = self.c.main_pid()?;
        self.c.write("/etc/att-tokend/sensor-8.token", DEVICE2_TOKEN, "0600", "att-tokend")?;
        let config = self.config(true);
        self.c.write("/etc/att-tokend/config.toml", &config, "0644", "root")?;
        self.c
            .check(&["systemctl", "reload", "att-tokend.service"])
            .context("systemctl reload of a good config failed")?;
        let token = self.wait_get(Some(READER), "sensor-8")?;
        ensure!(token == DEVICE2_TOKEN, "after reload sensor-8 serves another token");
        ensure!(self.c.main_pid()? == pid, "the reload restarted the daemon");
        println!(
            "system-test:   systemctl reload applied a new token (sensor-8, from a token file) in the same process"
        );

        let broken = format!("{config}\n[[token]]\nname = \"broken\"\nkind = \"device\"\n");
        self.c.write("/etc/att-tokend/config.toml", &broken, "0644", "root")?;
        let before = self.journal_lines()?.len();
        let out = self.c.output(&["systemctl", "reload", "att-tokend.service"])?;
        ensure!(!out.status.success(), "systemctl reload of a broken config succeeded");
        ensure!(self.c.property("ActiveState")? == "active", "after a failed reload the service is not active");
        ensure!(self.c.main_pid()? == pid, "after a failed reload the daemon is another process");
        self.get(Some(READER), "sensor-8")?;
        let said = self.journal_lines()?.split_off(before).join("\n");
        ensure!(
            said.contains("config.toml") && said.contains("broken"),
            "the journal does not say what is wrong with the broken config:\n{said}"
        );
        println!(
            "system-test:   a broken config: systemctl reload fails ({}); the daemon keeps running and serving; the journal names the problem",
            text(&out.stderr).lines().next().unwrap_or_default()
        );
        self.c.write("/etc/att-tokend/config.toml", &config, "0644", "root")?;
        self.c.check(&["systemctl", "reload", "att-tokend.service"])?;

        // kill -9: restarted, and the sessions come back from the state directory without a login.
        let grants = password_grants(&self.url)?;
        let restarts = self.c.property("NRestarts")?;
        self.c.check(&["kill", "-KILL", &pid.to_string()])?;
        let started = Instant::now();
        let pid = self.wait_restarted(pid, self.c.patience())?;
        self.wait_get(Some(READER), "main")?;
        self.get(Some(READER), "auto")?;
        ensure!(
            password_grants(&self.url)? == grants,
            "after kill -9 the daemon logged in again instead of keeping its sessions"
        );
        ensure!(self.c.property("NRestarts")? != restarts, "systemd did not count a restart");
        let file = self.c.as_user(READER, &["cat", TOKEN_FILE]).output()?;
        ensure!(
            file.status.success() && file.stdout == DEVICE_TOKEN.as_bytes(),
            "after kill -9 and the restart, {READER} cannot read {TOKEN_FILE}: {}",
            text(&file.stderr)
        );
        println!(
            "system-test:   kill -9: restarted after {} s (RestartSec=5s); main and auto served from the saved sessions, no new login; the token file is there",
            started.elapsed().as_secs()
        );

        // The watchdog: a stopped daemon sends no WATCHDOG=1; systemd aborts it after 30 s and restarts it.
        self.c.check(&["kill", "-STOP", &pid.to_string()])?;
        let started = Instant::now();
        let new = self.wait_restarted(pid, Duration::from_secs(60) + self.c.patience())?;
        let waited = started.elapsed().as_secs();
        let journal =
            self.c.check(&["journalctl", "--unit=att-tokend.service", "--no-pager", "--output=cat", "--lines=60"])?;
        ensure!(journal.contains("Watchdog timeout"), "the restart was not the watchdog's:\n{journal}");
        ensure!(waited >= 25, "the daemon came back after {waited} s, before the watchdog's 30 s could have passed");
        self.wait_get(Some(READER), "main")?;
        println!(
            "system-test:   SIGSTOP: systemd reported a watchdog timeout and the daemon ran again (pid {new}) after {waited} s"
        );

        // D-Bus activation: a call to a stopped service starts it.
        self.c.check(&["systemctl", "stop", "att-tokend.service"])?;
        let state = self.c.output(&["systemctl", "is-active", "att-tokend.service"])?;
        ensure!(text(&state.stdout) == "inactive", "after systemctl stop the service is {}", text(&state.stdout));
        let token = self.get(Some(READER), "sensor-7")?;
        ensure!(token == DEVICE_TOKEN, "the activated daemon serves another device token");
        ensure!(self.c.property("ActiveState")? == "active", "the bus call did not leave the service active");
        println!(
            "system-test:   after systemctl stop, {READER}'s att-token get started the service through D-Bus activation"
        );
        Ok(())
    }

    /// The daemon's resident KiB once every token is served and it has been idle a while, and its smaps.
    fn idle_rss(&mut self) -> anyhow::Result<(u64, String)> {
        for n in 0..FIGURE_TOKENS {
            self.wait_get(Some(READER), &format!("figure-{n}"))?;
        }
        self.wait_get(Some(READER), "main")?;
        // Idle: what start-up and the first calls allocated has settled.
        std::thread::sleep(self.c.patience() / 12);
        let pid = self.c.main_pid()?;
        let status = self.c.check(&["cat", &format!("/proc/{pid}/status")])?;
        let rss_kib = crate::bench::status_value(&status, "VmRSS:")
            .with_context(|| format!("/proc/{pid}/status has no VmRSS line"))?;
        let smaps = self.c.check(&["cat", &format!("/proc/{pid}/smaps")])?;
        Ok((rss_kib, smaps))
    }

    /// Step 7: the figures on this architecture. The stripped `att-tokend` as installed (≤ 4 MiB), its resident memory
    /// idle with 10 tokens after the reload that added them and after a restart (≤ 6 MiB on ARM; printed, with what is
    /// resident by mapping, everywhere), and `GetToken` against the bus's own `Peer.Ping` to the service, timed by the
    /// benchmark client inside as a reader (a ratio, so an emulator's speed cancels out; printed, not asserted).
    fn figures(&mut self) -> anyhow::Result<()> {
        let size: u64 = self.c.check(&["stat", "-c", "%s", "/usr/bin/att-tokend"])?.parse()?;
        ensure!(size <= SIZE_LIMIT, "the installed att-tokend is {size} bytes, over the {SIZE_LIMIT}-byte limit");
        let mut config = self.config(true);
        for n in 0..FIGURE_TOKENS {
            let file = format!("/etc/att-tokend/figure-{n}.token");
            self.c.write(&file, &figure_token(n), "0600", "att-tokend")?;
            config.push_str(&format!(
                "\n[[token]]\nname = \"figure-{n}\"\nkind = \"device\"\ndevice_id = \"{}\"\ntoken_file = \"{file}\"\n\
                 readers = {{ users = [\"{READER}\"] }}\n",
                figure_device(n)
            ));
        }
        self.c.write("/etc/att-tokend/config.toml", &config, "0644", "root")?;
        // Memory after a reload that added the tokens, then after a start with them, as a gateway boots.
        self.c.check(&["systemctl", "reload", "att-tokend.service"])?;
        let (reloaded_kib, reloaded_smaps) = self.idle_rss()?;
        self.c.check(&["systemctl", "restart", "att-tokend.service"])?;
        let (rss_kib, smaps) = self.idle_rss()?;
        let listed = self.c.check(&["att-token", "list"])?;
        // A header line, then one line per token.
        let tokens = listed.lines().skip(1).filter(|line| !line.trim().is_empty()).count();
        let largest = |smaps: &str| -> String {
            let sums = rss_by_mapping(smaps).into_iter().take(6);
            sums.map(|(name, kib)| format!("{name} {:.2}", kib as f64 / 1024.0)).collect::<Vec<_>>().join(", ")
        };
        let calls = match self.c {
            Guest::Container(_) => "20000",
            Guest::Vm(_) => "3000",
        };
        let out = self
            .c
            .as_user(READER, &[CLIENT_INSIDE, "unix:path=/run/dbus/system_bus_socket", "sensor-7", calls])
            .output()?;
        ensure!(out.status.success(), "the benchmark client failed ({}): {}", out.status, text(&out.stderr));
        let json = text(&out.stdout);
        let get = crate::bench::json_field(&json, "get_token", "p50_us")?;
        let ping = crate::bench::json_field(&json, "ping", "p50_us")?;
        println!(
            "system-test:   figures ({arch}): stripped att-tokend {size} bytes (limit {SIZE_LIMIT}); idle RSS with {tokens} \
             tokens {rss:.2} MiB after a start (limit 6 MiB), {reloaded:.2} MiB after the reload that added them; GetToken p50 ÷ Ping p50 {ratio:.2}× ({get:.0} / {ping:.0} µs, {calls} calls \
             each as {READER} on the system bus)",
            arch = self.arch,
            rss = rss_kib as f64 / 1024.0,
            reloaded = reloaded_kib as f64 / 1024.0,
            ratio = get / ping,
        );
        println!("system-test:   resident by mapping after the restart, MiB: {}", largest(&smaps));
        println!("system-test:   resident by mapping after the reload, MiB: {}", largest(&reloaded_smaps));
        ensure!(tokens >= 10, "att-token list shows {tokens} tokens, not the 10 the figures are for:\n{listed}");
        // The limit is the gateways': asserted on the ARM machines. On x86_64 the daemon's resident memory is nearly
        // all file pages (its whole text and most of libc's), so it is printed here and asserted by `cargo xtask
        // bench`, which starts the daemon with 10 tokens on the host.
        match self.c {
            Guest::Vm(_) => ensure!(
                rss_kib <= RSS_LIMIT_KIB,
                "idle RSS with {tokens} tokens is {rss_kib} KiB, over the 6 MiB limit; the line above says what is resident"
            ),
            Guest::Container(_) if rss_kib > RSS_LIMIT_KIB => println!(
                "system-test:   on x86_64 that is over the 6 MiB of the ARM gateways (README, Benchmarks, On ARM, says why)"
            ),
            Guest::Container(_) => {}
        }
        Ok(())
    }

    /// Every line of the unit's journal, without metadata.
    fn journal_lines(&self) -> anyhow::Result<Vec<String>> {
        let out = self.c.output(&["journalctl", "--unit=att-tokend.service", "--no-pager", "--output=cat"])?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect())
    }

    /// Step 7: the whole run's journal, at debug level, holds none of the secrets.
    fn journal(&mut self) -> anyhow::Result<()> {
        let journal = self.journal_lines()?.join("\n");
        ensure!(journal.contains("DEBUG"), "the journal has no debug lines; the RUST_LOG=debug drop-in did not apply");
        let leaked: Vec<usize> = (0..self.secrets.len()).filter(|i| journal.contains(&self.secrets[*i])).collect();
        ensure!(
            leaked.is_empty(),
            "the journal holds {} of the {} secrets (numbers {leaked:?} in the test's list): find the log line and redact it",
            leaked.len(),
            self.secrets.len()
        );
        println!(
            "system-test:   {} journal lines at RUST_LOG=debug; none holds any of {} secrets (device tokens, passwords, seeds, access tokens)",
            journal.lines().count(),
            self.secrets.len()
        );
        Ok(())
    }

    /// Step 8: `apt purge` leaves no file of the package, no state, no credentials of ours.
    fn purge(&mut self) -> anyhow::Result<()> {
        let listing = self.c.check(&["dpkg", "-L", "att-tokend"])?;
        // Directories dpkg lists that other packages own too (/usr, /etc) stay: only files count.
        let mut find = vec!["find"];
        find.extend(listing.lines().filter(|path| path.starts_with('/')));
        find.extend(["-maxdepth", "0", "-type", "f"]);
        let files = self.c.check(&find)?;
        ensure!(!files.is_empty(), "dpkg -L att-tokend lists no file");
        self.c.check(&["apt-get", "purge", "-y", "-q", "att-tokend"])?;
        let status = self.c.output(&["dpkg-query", "-W", "-f=${Status}", "att-tokend"])?;
        ensure!(
            !text(&status.stdout).contains("installed") && !text(&status.stdout).contains("config-files"),
            "dpkg still knows att-tokend: {}",
            text(&status.stdout)
        );
        let mut gone: Vec<&str> = files.lines().collect();
        gone.extend([
            "/etc/att-tokend",
            "/var/lib/att-tokend",
            "/etc/credstore.encrypted/att-tokend.sensor-7",
            "/etc/credstore.encrypted/att-tokend.auto-password",
            "/etc/credstore.encrypted/att-tokend.auto-totp",
            CREDENTIALS_DIR,
            "/run/att-tokend",
            "/etc/systemd/system/multi-user.target.wants/att-tokend.service",
            "/var/lib/systemd/deb-systemd-helper-enabled/att-tokend.service.dsh-also",
            "/var/lib/systemd/deb-systemd-helper-masked/att-tokend.service",
        ]);
        let mut ls = vec!["ls", "-d", "--"];
        ls.extend(gone);
        let left = self.c.output(&ls)?;
        ensure!(text(&left.stdout).is_empty(), "left after apt purge:\n{}", text(&left.stdout));
        let owned = self.c.check(&["find", "/", "-xdev", "-user", "att-tokend"])?;
        ensure!(owned.is_empty(), "files owned by att-tokend are left after purge:\n{owned}");
        let active = self.c.output(&["systemctl", "is-active", "att-tokend.service"])?;
        ensure!(text(&active.stdout) != "active", "att-tokend still runs after purge");
        let proxy = self.c.output(&["systemctl", "is-active", "att-token-proxy@auto.service"])?;
        ensure!(text(&proxy.stdout) != "active", "att-token-proxy@auto still runs after purge");
        println!(
            "system-test:   apt purge removed the package's {} files, /etc/att-tokend, /var/lib/att-tokend, the sealed att-tokend.* credentials \
             and the service's credentials; att-token-proxy@auto was stopped; no file owned by att-tokend is left (the user and group stay, as Debian does; the \
             administrator's drop-ins stay)",
            files.lines().count()
        );
        Ok(())
    }
}

/// The token of the figures step's device `n`.
fn figure_token(n: usize) -> String {
    format!("maker:4SystemTestFigureToken{n}")
}

/// The 24-character id of the figures step's device `n`.
fn figure_device(n: usize) -> String {
    format!("SystemTestFigure{n:0>8}")
}

/// The benchmark client (`daemon/examples/bench-client.rs`), release-built for the architecture under test.
fn bench_client(arch: Option<vm::Arch>) -> anyhow::Result<PathBuf> {
    let target_dir = sys::target_dir()?;
    match arch {
        None => {
            run_command(cargo().env("CARGO_TARGET_DIR", &target_dir).args([
                "build",
                "--release",
                "--locked",
                "-p",
                "att-tokend",
                "--example",
                "bench-client",
            ]))
            .context("building the benchmark client failed; fix the error above")?;
            Ok(target_dir.join("release").join("examples").join("bench-client"))
        }
        Some(arch) => crate::cross::Root::get()?.build_example(arch, "bench-client"),
    }
}

/// Resident KiB per mapping of a `/proc/PID/smaps`, summed by file name (anonymous mappings under `[anon]`), largest
/// first.
fn rss_by_mapping(smaps: &str) -> Vec<(String, u64)> {
    let mut sums: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut current = String::from("[anon]");
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // `start-end perms offset dev inode [path]`: the path, when there is one, is the sixth field on.
            let path: Vec<&str> = fields.skip(4).collect();
            current = match path.join(" ") {
                path if path.is_empty() => "[anon]".to_owned(),
                path => path.rsplit('/').next().unwrap_or(&path).to_owned(),
            };
        } else if first == "Rss:" {
            let kib = fields.next().and_then(|value| value.parse::<u64>().ok()).unwrap_or(0);
            *sums.entry(current.clone()).or_default() += kib;
        }
    }
    let mut sums: Vec<(String, u64)> = sums.into_iter().collect();
    sums.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    sums
}

/// `Overall exposure level for att-tokend.service: 1.2 OK` → `1.2 OK`.
fn exposure(report: &str) -> anyhow::Result<String> {
    report
        .lines()
        .find_map(|line| line.split_once("Overall exposure level for att-tokend.service:"))
        .map(|(_, figure)| figure.trim().to_owned())
        .context("systemd-analyze security printed no overall exposure level")
}

/// The fake cloud's count of refreshes asked for.
fn refreshes(url: &str) -> anyhow::Result<u64> {
    testbed::FakeControl::new(url).counter("refreshes")
}

/// The fake cloud's count of password grants.
fn password_grants(url: &str) -> anyhow::Result<u64> {
    testbed::FakeControl::new(url).counter("password_grants")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_summed_per_file_and_anonymous_mappings_together() {
        let smaps = "\
5581d000-5591d000 r-xp 00001000 08:01 1234 /usr/bin/att-tokend
Size:               1024 kB
Rss:                 900 kB
5591d000-5592d000 r--p 00101000 08:01 1234 /usr/bin/att-tokend
Rss:                  40 kB
7f00-7f10 rw-p 00000000 00:00 0
Rss:                  12 kB
7f10-7f20 r-xp 00000000 08:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 300 kB
7f20-7f30 rw-p 00000000 00:00 0 [heap]
Rss:                 200 kB
7f30-7f40 rw-p 00000000 00:00 0
Rss:                   8 kB
";
        assert_eq!(
            rss_by_mapping(smaps),
            vec![
                ("att-tokend".to_owned(), 940),
                ("libc.so.6".to_owned(), 300),
                ("[heap]".to_owned(), 200),
                ("[anon]".to_owned(), 20),
            ]
        );
    }

    #[test]
    fn arguments_are_parsed_and_unknown_ones_refused() {
        let args = |list: &[&str]| list.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>();
        let parsed = parse(&args(&["--deb", "/tmp/x.deb", "--mirror", "http://m/debian"])).unwrap().unwrap();
        assert_eq!(
            parsed,
            Options { arch: None, deb: Some("/tmp/x.deb".into()), mirror: Some("http://m/debian".into()) }
        );
        let arm = parse(&args(&["--arch", "armhf"])).unwrap().unwrap();
        assert_eq!(arm.arch, Some(vm::Arch::Armhf));
        assert!(parse(&args(&["--arch", "sparc"])).is_err());
        assert!(parse(&args(&["--arch"])).is_err());
        assert_eq!(parse(&args(&["--help"])).unwrap(), None);
        assert!(parse(&args(&["--deb"])).is_err());
        assert!(parse(&args(&["--bogus"])).is_err());
    }

    #[test]
    fn the_exposure_figure_is_read_from_the_report() {
        let report = "  NAME  DESCRIPTION  EXPOSURE\n→ Overall exposure level for att-tokend.service: 1.4 OK 🙂\n";
        assert_eq!(exposure(report).unwrap(), "1.4 OK 🙂");
        assert!(exposure("nothing").is_err());
    }
}
