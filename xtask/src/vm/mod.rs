//! Debian 12 (bookworm) for arm64 and armhf in a full-system emulator, reachable over ssh: the machine layer for
//! running the system test under a real ARM kernel (its seccomp filters, sandbox and encrypted credentials).
//!
//! [`cached_image`] builds, once per architecture, a raw ext4 root (`debootstrap --variant=minbase` under qemu-user),
//! the kernel from Debian's package (unpacked on the host, never installed in the emulated root) and a tiny
//! busybox initramfs that loads the few modules needed to mount `/dev/vda`. It lives in
//! `<target dir>/system-test/vm-<arch>/`, built in `vm-<arch>.tmp/` and renamed when complete. [`Vm::boot`] boots it
//! on a qcow2 overlay in the run's scratch directory (the cache is never written), waits for ssh and a running
//! systemd, and keeps one ssh master connection through which every command, copy and port forward goes.
//!
//! `cargo xtask vm-check` boots one and proves what the system test relies on.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::procs::{Running, Scratch};
use crate::sys;
use crate::util::{run as run_command, text};

mod image;
mod machine;

pub(crate) use image::{Image, cached_image};
pub(crate) use machine::Vm;
use machine::free_port;

/// Help for `cargo xtask vm-check`.
pub(crate) const HELP: &str = "\
cargo xtask vm-check [--arch arm64|armhf] [--mirror URL]

As root: builds (once, cached in <target dir>/system-test/vm-<arch>; delete it to rebuild) a
minimal Debian 12 for the architecture with debootstrap under qemu-user, Debian's kernel and a
small initramfs, boots it in qemu-system (full emulation, a few minutes), and checks what the
system test relies on: ssh through one master connection with exact argument quoting, a
running systemd, LoadCredentialEncrypted= credentials, a seccomp SystemCallFilter=, the
kernel's clock-sync state as timedatectl reports it (set with adjtimex in the guest), apt from
the guest, and port forwards between the guest's and the host's loopback. Prints timings.
The first build downloads about 300 MB per architecture and takes 15-25 minutes; missing
host tools are installed with apt-get.

  --arch ARCH    arm64 (default) or armhf
  --mirror URL   the Debian mirror (default http://deb.debian.org/debian)
";

const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Packages beyond minbase: systemd as init, ssh, busybox for the initramfs, adjtimex for the clock step.
const INCLUDE: &str = "systemd,systemd-sysv,dbus,libpam-systemd,udev,kmod,openssh-server,busybox-static,adjtimex";
/// The guest's host name.
const HOSTNAME: &str = "att-vm";
/// The image recipe's version, kept in the cache's `format` file: a cache of another version is rebuilt. Raise it
/// with every change to what [`cached_image`] puts in the image.
const FORMAT: &str = "1";
/// The size of the root file system (a sparse file; the guest's apt needs room for its lists and packages).
const IMAGE_SIZE: &str = "4G";
/// What the guest's commands run with, as in the container.
const GUEST_ENV: &[&str] = &[
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL=C",
    "HOME=/root",
    "TERM=dumb",
    "SYSTEMD_PAGER=",
    "SYSTEMD_COLORS=0",
    "DEBIAN_FRONTEND=noninteractive",
];
/// Modules the initramfs loads (with their dependencies) to mount the root; `true`: required unless built in.
const INITRAMFS_MODULES: &[(&str, bool)] = &[
    ("pci_host_generic", false),
    ("virtio_pci", true),
    ("virtio_mmio", false),
    ("virtio_blk", true),
    ("crc32c_generic", false),
    ("ext4", true),
];
/// How long the emulated machine gets to answer ssh, and then to reach a settled systemd.
const BOOT_PATIENCE: Duration = Duration::from_secs(420);
/// How long `poweroff` waits for qemu to exit before killing it.
const POWEROFF_PATIENCE: Duration = Duration::from_secs(90);

pub(crate) use crate::cross::Arch;

/// What the emulated machine needs to know of an architecture, beside what the build root knows.
impl Arch {
    /// The metapackage naming the current bookworm kernel.
    fn kernel_package(self) -> &'static str {
        match self {
            Arch::Arm64 => "linux-image-arm64",
            Arch::Armhf => "linux-image-armmp-lpae",
        }
    }

    /// The full-system emulator and its machine arguments.
    fn system_emulator(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Arch::Arm64 => ("qemu-system-aarch64", &["-M", "virt", "-cpu", "max,pauth-impdef=on"]),
            Arch::Armhf => ("qemu-system-arm", &["-M", "virt", "-cpu", "cortex-a15"]),
        }
    }
}

/// What `vm-check` was asked to do.
#[derive(Debug, PartialEq)]
struct Options {
    arch: Arch,
    mirror: String,
}

fn parse(args: &[String]) -> anyhow::Result<Option<Options>> {
    let mut options = Options { arch: Arch::Arm64, mirror: DEFAULT_MIRROR.to_owned() };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--arch" => options.arch = Arch::parse(args.next().context("--arch needs arm64 or armhf")?)?,
            "--mirror" => {
                options.mirror =
                    args.next().context("--mirror needs a URL, e.g. --mirror http://deb.debian.org/debian")?.clone();
            }
            other => bail!("unknown argument {other:?} to vm-check; usage:\n{HELP}"),
        }
    }
    Ok(Some(options))
}

/// Runs `cargo xtask vm-check`.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let Some(options) = parse(args)? else {
        print!("{HELP}");
        return Ok(());
    };
    let arch = options.arch;
    let image = cached_image(arch, &options.mirror)?;
    let scratch = Scratch::new("vm")?;
    let vm = Vm::boot(&image, &scratch)?;
    let result = checks(&vm, &image);
    if result.is_err() {
        eprintln!("vm-check: guest console, last lines:\n{}", vm.console_tail());
    }
    vm.poweroff();
    result?;
    let size = |apparent: bool| -> anyhow::Result<String> {
        let mut du = Command::new("du");
        du.args(["-s", "-h"]);
        if apparent {
            du.arg("--apparent-size");
        }
        let out = sys::capture(du.arg(&image.dir))?;
        Ok(out.split_whitespace().next().unwrap_or("?").to_owned())
    };
    println!(
        "vm-check: {} passed; the cache {} takes {} on disk ({} apparent)",
        arch.debian(),
        image.dir.display(),
        size(false)?,
        size(true)?
    );
    Ok(())
}

/// The checks of `vm-check`, each printing its result.
fn checks(vm: &Vm, image: &Image) -> anyhow::Result<()> {
    let arch = image.arch;
    let release = vm.check(&["uname", "-r"])?;
    ensure!(release == image.kernel_release, "the guest runs {release}, the image has {}", image.kernel_release);
    println!(
        "vm-check: uname -m: {}; uname -r: {release} (binaries for it: {})",
        vm.check(&["uname", "-m"])?,
        arch.triple()
    );
    println!("vm-check: systemctl is-system-running: {}", vm.check(&["systemctl", "is-system-running"])?);
    let analyze = vm.check(&["systemd-analyze", "time"])?;
    let blame = vm.check(&["sh", "-c", "systemd-analyze blame | head -n 5"])?;
    println!("vm-check: {}\nvm-check: the slowest units:\n{blame}", analyze.lines().next().unwrap_or_default());

    let tricky = ["a b", "it's", "\"quoted\"", "$HOME", "a&b;c|d", "x=y", "line1\nline2", "", "*", "\\", "`id`"];
    let mut args = vec!["printf", "[%s]"];
    args.extend(tricky);
    let printed = vm.check(&args)?;
    let expected: String = tricky.iter().map(|arg| format!("[{arg}]")).collect();
    ensure!(printed == expected, "arguments were mangled on the way: sent {expected:?}, the guest printed {printed:?}");
    let env = vm.check(&["env"])?;
    ensure!(env.lines().any(|line| line == "HOME=/root") && env.lines().count() <= GUEST_ENV.len() + 1, "env: {env}");
    println!("vm-check: arguments with spaces, quotes, $, &, =, newlines and empties arrive intact; env is fixed");

    let started = Instant::now();
    for _ in 0..10 {
        vm.check(&["true"])?;
    }
    println!("vm-check: a trivial command through the master: {:.0} ms", started.elapsed().as_secs_f64() * 100.0);

    let stdin = crate::procs::output_with_stdin(vm.command(&["cat"]), "through stdin\n")?;
    ensure!(text(&stdin.stdout) == "through stdin", "stdin did not reach the guest: {:?}", text(&stdin.stdout));
    vm.write("/root/vm-check/file", "written\n", "0640", "root")?;
    ensure!(vm.check(&["stat", "-c", "%a %U", "/root/vm-check/file"])? == "640 root", "write set the wrong mode");
    println!("vm-check: stdin reaches the guest; write() sets mode and owner");

    let secret = "sealed secret: $x & 'y'";
    let out = crate::procs::output_with_stdin(
        vm.command(&["systemd-creds", "encrypt", "--name=vmcheck", "-", "/root/vmcheck.cred"]),
        secret,
    )?;
    ensure!(out.status.success(), "systemd-creds encrypt failed: {}", text(&out.stderr));
    let read = vm.check(&[
        "systemd-run",
        "--wait",
        "--pipe",
        "--quiet",
        "-p",
        "LoadCredentialEncrypted=vmcheck:/root/vmcheck.cred",
        "sh",
        "-c",
        "cat \"$CREDENTIALS_DIRECTORY/vmcheck\"",
    ])?;
    ensure!(read == secret, "the unit read {read:?} from its credential, not {secret:?}");
    println!("vm-check: systemd-creds encrypt + LoadCredentialEncrypted= read the secret back in a unit");

    let now = vm.check(&["date", "+@%s"])?;
    let refused = vm.output(&[
        "systemd-run",
        "--wait",
        "--pipe",
        "--quiet",
        "-p",
        "SystemCallFilter=~@clock",
        "-p",
        "SystemCallErrorNumber=EPERM",
        "date",
        "-s",
        &now,
    ])?;
    ensure!(
        !refused.status.success() && text(&refused.stderr).contains("Operation not permitted"),
        "date -s under SystemCallFilter=~@clock was not refused: {:?} {}",
        refused.status,
        text(&refused.stderr)
    );
    vm.check(&["systemd-run", "--wait", "--pipe", "--quiet", "date", "-s", &now])?;
    println!(
        "vm-check: SystemCallFilter=~@clock refuses date -s (\"{}\"); without it date -s works",
        text(&refused.stderr)
    );

    for synchronised in [true, false, true] {
        if synchronised {
            vm.check(&["adjtimex", "--status", "0", "--maxerror", "10000", "--esterror", "1000"])?;
        } else {
            vm.check(&["adjtimex", "--status", "64", "--maxerror", "16000000", "--esterror", "0"])?;
        }
        let seen = vm.check(&["timedatectl", "show", "--property=NTPSynchronized", "--value"])?;
        let want = if synchronised { "yes" } else { "no" };
        ensure!(seen == want, "timedatectl says NTPSynchronized={seen} after adjtimex made it {want}");
        println!("vm-check: adjtimex synchronised={synchronised}: timedatectl NTPSynchronized={seen}");
    }

    let started = Instant::now();
    vm.check(&["apt-get", "update", "-qq"])?;
    println!("vm-check: apt-get update from the guest: {:.1} s", started.elapsed().as_secs_f64());

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    vm.forward_to_host(port)?;
    let server = std::thread::spawn(move || -> anyhow::Result<String> {
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut stream, _) = loop {
            match listener.accept() {
                Ok(accepted) => break accepted,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(error) => return Err(error).context("no connection from the guest"),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut line = [0u8; 17];
        stream.read_exact(&mut line)?;
        stream.write_all(b"hello-from-host\n")?;
        Ok(String::from_utf8_lossy(&line).trim().to_owned())
    });
    let script = format!("echo hello-from-guest | timeout 30 busybox nc 127.0.0.1 {port}");
    let answer = vm.check(&["sh", "-c", &script])?;
    let heard = server.join().map_err(|_| anyhow::anyhow!("the host listener panicked"))??;
    ensure!(heard == "hello-from-guest" && answer == "hello-from-host", "heard {heard:?}, answered {answer:?}");
    println!("vm-check: forward_to_host: the guest's 127.0.0.1:{port} reached the host's listener and back");

    let port = free_port()?;
    vm.check(&[
        "systemd-run",
        "--unit=vm-check-listener",
        "--quiet",
        "sh",
        "-c",
        &format!("echo hello-from-guest | busybox nc -l -p {port}"),
    ])?;
    vm.forward_from_host(port)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let heard = loop {
        let mut heard = String::new();
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            let _ = stream.read_to_string(&mut heard);
        }
        if heard.trim() == "hello-from-guest" || Instant::now() > deadline {
            break heard;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    ensure!(heard.trim() == "hello-from-guest", "the host's 127.0.0.1:{port} got {heard:?} from the guest");
    println!("vm-check: forward_from_host: the host's 127.0.0.1:{port} reached the guest's listener");

    let deb = std::env::temp_dir().join(format!("vm-check-{}.bin", std::process::id()));
    std::fs::write(&deb, vec![7u8; 3 << 20])?;
    let started = Instant::now();
    let copied = vm.copy_in(&deb, "/root/vm-check/copy.bin");
    let _ = std::fs::remove_file(&deb);
    copied?;
    let sum = vm.check(&["sh", "-c", "wc -c < /root/vm-check/copy.bin"])?;
    ensure!(sum == (3 << 20).to_string(), "copy_in delivered {sum} bytes, not 3 MiB");
    println!("vm-check: copy_in of 3 MiB: {:.1} s", started.elapsed().as_secs_f64());

    // Debian's `daemon` account has a group of the same name, as the system test's users do.
    let daemon = vm.as_user("daemon", &["id", "-un"]).output()?;
    ensure!(
        text(&daemon.stdout) == "daemon",
        "as_user(daemon) ran as {:?}: {}",
        text(&daemon.stdout),
        text(&daemon.stderr)
    );
    println!("vm-check: as_user runs as the user");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_parsed_and_unknown_ones_refused() {
        let args = |list: &[&str]| list.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>();
        assert_eq!(parse(&args(&[])).unwrap(), Some(Options { arch: Arch::Arm64, mirror: DEFAULT_MIRROR.into() }));
        assert_eq!(
            parse(&args(&["--arch", "armhf", "--mirror", "http://m/debian"])).unwrap(),
            Some(Options { arch: Arch::Armhf, mirror: "http://m/debian".into() })
        );
        assert_eq!(parse(&args(&["--help"])).unwrap(), None);
        assert!(parse(&args(&["--arch", "mips"])).is_err());
        assert!(parse(&args(&["--arch"])).is_err());
        assert!(parse(&args(&["--bogus"])).is_err());
        for arch in [Arch::Arm64, Arch::Armhf] {
            assert_eq!(Arch::parse(arch.debian()).unwrap(), arch);
        }
        assert_eq!(Arch::Armhf.triple(), "armv7-unknown-linux-gnueabihf");
    }
}
