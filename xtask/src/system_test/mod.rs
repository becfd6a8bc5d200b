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
use crate::util::{cargo, run as run_command, text};
use crate::vm;

mod figures;
mod guest;
mod lifecycle;
mod steps;

use figures::{bench_client, figure_device, figure_token};
use guest::{Container, Guest, RunDir, cached_root};
use steps::Test;

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
    // The test's own stand-in, not what ships: the dev build the end-to-end tests made (the same cargo
    // arguments, so it is reused), rather than a release build of its own with link-time optimisation.
    run_command(cargo().env("CARGO_TARGET_DIR", &target_dir).args(["build", "--locked", "-p", "fake-cloud", "--bins"]))
        .context("building the fake cloud failed; fix the error above")?;
    Ok(target_dir.join("debug").join("att-fake-cloud"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
