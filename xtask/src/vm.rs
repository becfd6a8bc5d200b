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
use crate::util::run as run_command;

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

/// A complete cached machine image: raw root file system, kernel, initramfs and the ssh key that logs in as root.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    /// Its architecture.
    pub(crate) arch: Arch,
    /// The cache directory holding it.
    pub(crate) dir: PathBuf,
    /// The kernel release (`uname -r` in the guest).
    pub(crate) kernel_release: String,
}

impl Image {
    fn root(&self) -> PathBuf {
        self.dir.join("root.img")
    }

    fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    /// Whether every file of a finished image of this [`FORMAT`] is in `dir`.
    fn complete(dir: &Path) -> bool {
        ["root.img", "vmlinuz", "initrd.img", "id_ed25519", "kernel-release"]
            .iter()
            .all(|name| dir.join(name).is_file())
            && std::fs::read_to_string(dir.join("format")).is_ok_and(|format| format.trim() == FORMAT)
    }
}

/// The cached image for `arch` in `<target dir>/system-test/vm-<arch>/`, built when missing (see the module docs);
/// `mirror` is the Debian mirror for debootstrap and the kernel. A build that failed leaves `vm-<arch>.tmp/`, whose
/// finished debootstrap the next build reuses.
pub(crate) fn cached_image(arch: Arch, mirror: &str) -> anyhow::Result<Image> {
    let cache = sys::target_dir()?.join("system-test");
    let dir = cache.join(format!("vm-{}", arch.debian()));
    let release_of = |dir: &Path| -> anyhow::Result<String> {
        let release = std::fs::read_to_string(dir.join("kernel-release")).with_context(|| {
            format!("cannot read {}/kernel-release; delete {} to rebuild it", dir.display(), dir.display())
        })?;
        Ok(release.trim().to_owned())
    };
    boot_tools()?;
    if Image::complete(&dir) {
        println!("vm: using the cached {} image {}", arch.debian(), dir.display());
        return Ok(Image { arch, kernel_release: release_of(&dir)?, dir });
    }
    if dir.exists() {
        println!("vm: {} is not a complete image of format {FORMAT}; building it afresh", dir.display());
    }
    build_tools(arch)?;
    let partial = cache.join(format!("vm-{}.tmp", arch.debian()));
    std::fs::create_dir_all(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let started = Instant::now();
    build(arch, mirror, &partial).with_context(|| {
        format!(
            "building the {} image failed; {} keeps what was done (a finished debootstrap is reused): \
             fix the error and run again, or delete it to start afresh",
            arch.debian(),
            partial.display()
        )
    })?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}; remove it by hand", dir.display()))?;
    }
    std::fs::rename(&partial, &dir)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), dir.display()))?;
    println!("vm: cached the {} image in {} ({} s in all)", arch.debian(), dir.display(), started.elapsed().as_secs());
    Ok(Image { arch, kernel_release: release_of(&dir)?, dir })
}

/// The tools that boot and drive a machine (installed when missing).
fn boot_tools() -> anyhow::Result<()> {
    sys::install_missing(&[
        ("qemu-system-aarch64", "qemu-system-arm"),
        ("qemu-system-arm", "qemu-system-arm"),
        ("qemu-img", "qemu-utils"),
        ("ssh", "openssh-client"),
    ])
}

/// Root, the tools that build an image (installed when missing), and a binfmt_misc handler that runs `arch`'s
/// binaries.
fn build_tools(arch: Arch) -> anyhow::Result<()> {
    let uid = sys::capture(Command::new("id").arg("-u"))?;
    ensure!(uid.trim() == "0", "building the emulated machine's image needs debootstrap and chroot: run as root");
    sys::install_missing(&[
        ("debootstrap", "debootstrap"),
        ("qemu-aarch64-static", "qemu-user-static"),
        ("update-binfmts", "binfmt-support"),
        ("mkfs.ext4", "e2fsprogs"),
        ("depmod", "kmod"),
        ("cpio", "cpio"),
        ("dpkg-deb", "dpkg"),
        ("ssh-keygen", "openssh-client"),
        ("xz", "xz-utils"),
    ])?;
    let binfmt = Path::new("/proc/sys/fs/binfmt_misc");
    if !binfmt.join("status").exists() {
        run_command(Command::new("mount").args(["-t", "binfmt_misc", "binfmt_misc"]).arg(binfmt))
            .context("cannot mount binfmt_misc; run `mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc`")?;
    }
    let handler = binfmt.join(arch.qemu());
    let enabled = |path: &Path| std::fs::read_to_string(path).is_ok_and(|text| text.starts_with("enabled"));
    if !enabled(&handler) {
        let _ = Command::new("update-binfmts").args(["--enable", arch.qemu()]).status();
    }
    ensure!(
        enabled(&handler),
        "no enabled binfmt_misc handler {}: {} binaries cannot run on this host; run \
         `update-binfmts --enable {}` (package qemu-user-static) and try again",
        handler.display(),
        arch.debian(),
        arch.qemu()
    );
    Ok(())
}

/// Builds every file of the image in `partial`, printing each phase's time.
fn build(arch: Arch, mirror: &str, partial: &Path) -> anyhow::Result<()> {
    let root = partial.join("root");
    let bootstrapped = partial.join("debootstrap.done");
    if bootstrapped.exists() {
        println!("vm: reusing the finished debootstrap in {}", root.display());
    } else {
        let started = Instant::now();
        println!(
            "vm: debootstrap --arch {} --variant=minbase bookworm under qemu-user (about 250 MB from {mirror}; \
             10-20 minutes, once)",
            arch.debian()
        );
        sys::fresh_dir(&root)?;
        run_command(
            Command::new("debootstrap")
                .args(["--arch", arch.debian(), "--variant=minbase"])
                .arg(format!("--include={INCLUDE}"))
                .arg("bookworm")
                .arg(&root)
                .arg(mirror),
        )
        .with_context(|| format!("debootstrap failed; check that this machine reaches {mirror} (or pass --mirror)"))?;
        sys::write(&bootstrapped, "", 0o644)?;
        println!("vm: phase debootstrap: {} s", started.elapsed().as_secs());
    }

    let started = Instant::now();
    let release = install_kernel(arch, &root, partial)?;
    println!("vm: phase kernel ({release}): {} s", started.elapsed().as_secs());

    let started = Instant::now();
    build_initramfs(&root, &release, partial)?;
    println!("vm: phase initramfs: {} s", started.elapsed().as_secs());

    let started = Instant::now();
    configure(&root, partial)?;
    let image = partial.join("root.img");
    let _ = std::fs::remove_file(&image);
    run_command(
        Command::new("mkfs.ext4").args(["-q", "-F", "-L", "root", "-d"]).arg(&root).arg(&image).arg(IMAGE_SIZE),
    )
    .context("mkfs.ext4 -d could not make the root image; check the free space under the target directory")?;
    std::fs::remove_dir_all(&root).with_context(|| format!("cannot remove {}", root.display()))?;
    std::fs::remove_file(&bootstrapped)?;
    sys::write(&partial.join("kernel-release"), format!("{release}\n"), 0o644)?;
    sys::write(&partial.join("format"), format!("{FORMAT}\n"), 0o644)?;
    println!("vm: phase image: {} s", started.elapsed().as_secs());
    Ok(())
}

/// Downloads the kernel package inside the emulated root (its apt knows the architecture), unpacks it on the host,
/// puts its modules into the root with the host's depmod and keeps `vmlinuz`; returns the kernel release.
fn install_kernel(arch: Arch, root: &Path, partial: &Path) -> anyhow::Result<String> {
    // The root's apt needs a resolver while it is built; the guest's own comes in `configure`.
    let resolv = root.join("etc/resolv.conf");
    let _ = std::fs::remove_file(&resolv);
    std::fs::copy("/etc/resolv.conf", &resolv).context("cannot copy /etc/resolv.conf into the root")?;
    let chroot = |args: &[&str]| {
        let mut command = Command::new("chroot");
        command.arg(root).args(args).env("DEBIAN_FRONTEND", "noninteractive").env("LC_ALL", "C");
        command
    };
    run_command(&mut chroot(&["apt-get", "update", "-qq"])).context("apt-get update in the root failed")?;
    let depends = sys::capture(&mut chroot(&["apt-cache", "depends", "--important", arch.kernel_package()]))?;
    let package = versioned_kernel(&depends).with_context(|| {
        format!("`apt-cache depends {}` names no linux-image package:\n{depends}", arch.kernel_package())
    })?;
    run_command(&mut chroot(&["sh", "-c", "cd /tmp && apt-get download -q \"$0\"", &package]))
        .with_context(|| format!("apt-get download {package} failed"))?;
    let deb = std::fs::read_dir(root.join("tmp"))?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with(&format!("{package}_"))))
        .with_context(|| format!("apt-get download left no {package}_*.deb in the root's /tmp"))?;
    let unpacked = partial.join("kernel");
    sys::fresh_dir(&unpacked)?;
    run_command(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    std::fs::remove_file(&deb)?;
    let release = package.strip_prefix("linux-image-").context("a linux-image package")?.to_owned();
    let vmlinuz = unpacked.join(format!("boot/vmlinuz-{release}"));
    ensure!(vmlinuz.is_file(), "{package} has no /boot/vmlinuz-{release}");
    std::fs::copy(&vmlinuz, partial.join("vmlinuz"))?;
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|dir| unpacked.join(dir).join(&release))
        .find(|dir| dir.is_dir())
        .with_context(|| format!("{package} has no lib/modules/{release}"))?;
    let target = root.join("usr/lib/modules");
    std::fs::create_dir_all(&target)?;
    let _ = std::fs::remove_dir_all(target.join(&release));
    run_command(Command::new("cp").args(["-a", "--"]).arg(&modules).arg(&target))?;
    std::fs::remove_dir_all(&unpacked)?;
    run_command(Command::new("depmod").arg("-b").arg(root).arg(&release))
        .context("depmod failed; install kmod on the host")?;
    run_command(&mut chroot(&["apt-get", "clean"]))?;
    Ok(release)
}

/// The versioned `linux-image-*` package that `apt-cache depends` names first.
fn versioned_kernel(depends: &str) -> Option<String> {
    depends.lines().find_map(|line| {
        let name = line.trim().strip_prefix("Depends:")?.trim();
        let name = name.trim_start_matches('<').trim_end_matches('>');
        (name.starts_with("linux-image-") && name.chars().any(|c| c.is_ascii_digit())).then(|| name.to_owned())
    })
}

/// The module name of a `modules.dep` path: its file name without `.ko[.xz|.zst|.gz]`, `-` read as `_`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The module files to load, in order (every module after its dependencies), for `wanted` (name, required) from a
/// `modules.dep` text; names found in `builtin` (a `modules.builtin` text) need nothing, and an optional name that
/// is neither is skipped.
fn module_load_order(dep: &str, builtin: &str, wanted: &[(&str, bool)]) -> anyhow::Result<Vec<String>> {
    let mut deps = std::collections::HashMap::new();
    for line in dep.lines() {
        let Some((module, rest)) = line.split_once(':') else { continue };
        deps.insert(module_name(module), (module.to_owned(), rest.split_whitespace().collect::<Vec<_>>()));
    }
    let builtin: std::collections::HashSet<String> = builtin.lines().map(module_name).collect();
    let mut order = Vec::new();
    let mut seen = std::collections::HashSet::new();
    fn visit(
        name: &str,
        deps: &std::collections::HashMap<String, (String, Vec<&str>)>,
        seen: &mut std::collections::HashSet<String>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(name.to_owned()) {
            return;
        }
        let Some((path, needs)) = deps.get(name) else { return };
        for need in needs {
            visit(&module_name(need), deps, seen, order);
        }
        order.push(path.clone());
    }
    for &(name, required) in wanted {
        if deps.contains_key(name) {
            visit(name, &deps, &mut seen, &mut order);
        } else if required && !builtin.contains(name) {
            bail!("the kernel has no module {name}, neither built in nor in modules.dep");
        }
    }
    Ok(order)
}

/// The initramfs's `/init`: loads `modules` (file names in `/lib/modules`), mounts `/dev/vda` and hands over to the
/// root's systemd; powers off on failure so that the boot fails fast with the reason on the console.
fn init_script(modules: &[String]) -> String {
    let mut script = String::from(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin\n\
         fail() { echo \"vm-init: $*\"; sleep 1; poweroff -f; }\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n",
    );
    for module in modules {
        let _ = writeln!(script, "insmod /lib/modules/{module} || echo \"vm-init: insmod {module} failed\"");
    }
    script.push_str(
        "n=0\n\
         while [ ! -b /dev/vda ]; do\n\
         \x20 n=$((n + 1)); [ $n -le 60 ] || fail 'no /dev/vda after 60 s'\n\
         \x20 sleep 1\n\
         done\n\
         mount -t ext4 -o rw /dev/vda /newroot || fail 'cannot mount /dev/vda'\n\
         mount --move /dev /newroot/dev\n\
         umount /sys /proc\n\
         exec switch_root /newroot /sbin/init\n",
    );
    script
}

/// Builds `initrd.img` in `partial`: the root's static busybox, the modules that mount the root, `/init`.
fn build_initramfs(root: &Path, release: &str, partial: &Path) -> anyhow::Result<()> {
    let tree = partial.join("initramfs");
    sys::fresh_dir(&tree)?;
    for dir in ["bin", "dev", "proc", "sys", "newroot", "lib/modules"] {
        std::fs::create_dir_all(tree.join(dir))?;
    }
    let busybox = ["usr/bin/busybox", "bin/busybox"]
        .iter()
        .map(|path| root.join(path))
        .find(|path| path.is_file())
        .context("the root has no busybox; is busybox-static in the debootstrap --include list?")?;
    sys::install(&busybox, &tree.join("bin/busybox"), 0o755)?;
    run_command(Command::new("mknod").arg(tree.join("dev/console")).args(["c", "5", "1"]))?;
    let modules_dir = root.join("usr/lib/modules").join(release);
    let read = |name: &str| {
        std::fs::read_to_string(modules_dir.join(name))
            .with_context(|| format!("cannot read {}/{name}", modules_dir.display()))
    };
    let order = module_load_order(&read("modules.dep")?, &read("modules.builtin")?, INITRAMFS_MODULES)?;
    let mut names = Vec::new();
    for path in &order {
        let source = modules_dir.join(path);
        let name = format!("{}.ko", module_name(path));
        let target = tree.join("lib/modules").join(&name);
        let decompress = match path.rsplit_once(".ko").map(|(_, suffix)| suffix) {
            Some(".xz") => Some("xz"),
            Some(".zst") => Some("zstd"),
            Some(".gz") => Some("gzip"),
            _ => None,
        };
        match decompress {
            Some(tool) => {
                let output = Command::new(tool)
                    .arg("-dc")
                    .arg(&source)
                    .output()
                    .with_context(|| format!("could not run {tool}; install it"))?;
                ensure!(output.status.success(), "{tool} -dc {} failed", source.display());
                sys::write(&target, output.stdout, 0o644)?;
            }
            None => sys::install(&source, &target, 0o644)?,
        }
        names.push(name);
    }
    println!("vm: initramfs modules: {}", names.join(" "));
    sys::write(&tree.join("init"), init_script(&names), 0o755)?;
    let mut list = String::from(".\n");
    for entry in ["bin", "bin/busybox", "dev", "dev/console", "proc", "sys", "newroot", "lib", "lib/modules", "init"] {
        let _ = writeln!(list, "{entry}");
    }
    for name in &names {
        let _ = writeln!(list, "lib/modules/{name}");
    }
    let mut cpio = Command::new("cpio");
    cpio.current_dir(&tree).args(["--quiet", "-o", "-H", "newc", "-R", "0:0"]);
    let out = crate::procs::output_with_stdin(cpio, &list)?;
    ensure!(out.status.success(), "cpio failed: {}", String::from_utf8_lossy(&out.stderr));
    let archive = partial.join("initrd.cpio");
    sys::write(&archive, out.stdout, 0o644)?;
    sys::gzip(&archive, &partial.join("initrd.img"))?;
    std::fs::remove_file(&archive)?;
    std::fs::remove_dir_all(&tree)?;
    Ok(())
}

/// Makes the root bootable as a machine reachable over ssh: host name, no fstab, DHCP with systemd-networkd,
/// QEMU's DNS, a fixed machine id, root's ssh key (generated here, kept next to the image), no apt timers.
fn configure(root: &Path, partial: &Path) -> anyhow::Result<()> {
    sys::write(&root.join("etc/hostname"), format!("{HOSTNAME}\n"), 0o644)?;
    sys::write(&root.join("etc/hosts"), format!("127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n::1 localhost\n"), 0o644)?;
    sys::write(&root.join("etc/fstab"), "# The initramfs mounts the root (/dev/vda); nothing else to mount.\n", 0o644)?;
    let resolv = root.join("etc/resolv.conf");
    let _ = std::fs::remove_file(&resolv);
    // QEMU's user network: the host's resolver at 10.0.2.3.
    sys::write(&resolv, "nameserver 10.0.2.3\n", 0o644)?;
    sys::write(&root.join("etc/systemd/network/80-vm.network"), "[Match]\nType=ether\n\n[Network]\nDHCP=yes\n", 0o644)?;
    let mut random = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut random))?;
    let machine_id: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    sys::write(&root.join("etc/machine-id"), format!("{machine_id}\n"), 0o444)?;
    sys::write(&root.join("etc/ssh/sshd_config.d/vm.conf"), "UseDNS no\nPermitRootLogin prohibit-password\n", 0o644)?;
    run_command(Command::new("systemctl").arg(format!("--root={}", root.display())).args([
        "enable",
        "systemd-networkd.service",
        "ssh.service",
    ]))?;
    // Their runs would hold apt's lock while the test installs packages.
    run_command(Command::new("systemctl").arg(format!("--root={}", root.display())).args([
        "mask",
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
    ]))?;
    let key = partial.join("id_ed25519");
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(partial.join("id_ed25519.pub"));
    run_command(
        Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "root@att-vm", "-f"]).arg(&key),
    )?;
    let public = std::fs::read_to_string(partial.join("id_ed25519.pub"))?;
    std::fs::create_dir_all(root.join("root/.ssh"))?;
    sys::set_mode(&root.join("root/.ssh"), 0o700)?;
    sys::write(&root.join("root/.ssh/authorized_keys"), public, 0o600)?;
    Ok(())
}

/// Quotes `arg` for a POSIX shell: as it is when that is safe, else in single quotes.
fn shell_quote(arg: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+,=".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) {
        return arg.to_owned();
    }
    format!("'{}'", arg.replace('\'', "'\\''"))
}

/// The command line the guest's shell runs for `args`: `exec env -i <fixed environment> args…`, quoted.
fn remote_command(args: &[&str]) -> String {
    let mut line = String::from("exec env -i");
    for word in GUEST_ENV.iter().chain(args) {
        line.push(' ');
        line.push_str(&shell_quote(word));
    }
    line
}

/// A free TCP port on the host's loopback (free when asked: another program could take it before it is used).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").context("cannot bind a port on 127.0.0.1")?.local_addr()?.port())
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A booted emulated machine: qemu (our child) and the ssh master connection to its root account.
pub(crate) struct Vm {
    qemu: Running,
    master: Option<Running>,
    port: u16,
    key: PathBuf,
    control: PathBuf,
    console: PathBuf,
}

impl Vm {
    /// Boots `image` on a qcow2 overlay in `scratch`, waits for ssh, opens the master connection and waits until
    /// systemd reports `running` (a `degraded` system fails, naming its failed units). Prints the boot times.
    pub(crate) fn boot(image: &Image, scratch: &Scratch) -> anyhow::Result<Vm> {
        let overlay = scratch.join("root.qcow2");
        run_command(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(image.root())
                .arg(&overlay),
        )
        .context("qemu-img could not create the overlay; install qemu-utils")?;
        let port = free_port()?;
        let console = scratch.join("console.log");
        let (program, machine) = image.arch.system_emulator();
        let mut qemu = Command::new(program);
        qemu.args(machine)
            .args(["-smp", "2", "-m", "1024", "-no-reboot", "-display", "none", "-monitor", "none"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-kernel")
            .arg(image.kernel())
            .arg("-initrd")
            .arg(image.initrd())
            .args(["-append", "console=ttyAMA0 panic=-1 net.ifnames=0"])
            .arg("-drive")
            .arg(format!("if=none,id=root,format=qcow2,cache=unsafe,file={}", overlay.display()))
            .args(["-device", "virtio-blk-pci,drive=root"])
            .args(["-netdev", &format!("user,id=net,hostfwd=tcp:127.0.0.1:{port}-:22")])
            .args(["-device", "virtio-net-pci,netdev=net", "-device", "virtio-rng-pci"]);
        let started = Instant::now();
        let qemu = Running::spawn(program, qemu, scratch)?;
        let mut vm = Vm { qemu, master: None, port, key: image.key(), control: scratch.join("ssh-master"), console };
        vm.wait_for_ssh(started)?;
        let to_ssh = started.elapsed();
        vm.open_master()?;
        let state = vm.output(&["timeout", "600", "systemctl", "is-system-running", "--wait"])?;
        let state = text(&state.stdout);
        match state.as_str() {
            "running" => {}
            "degraded" => {
                let failed = vm.output(&["systemctl", "--failed", "--no-legend", "--plain"])?;
                bail!(
                    "the {} machine booted degraded; failed units:\n{}\nWhat to do: `journalctl -u UNIT` in the \
                     guest says why; delete {} to rebuild the image",
                    image.arch.debian(),
                    text(&failed.stdout),
                    image.dir.display()
                );
            }
            other => bail!("the guest's systemd is {other:?}, not running; console:\n{}", vm.console_tail()),
        }
        println!(
            "vm: {} booted: ssh after {:.1} s, systemd running after {:.1} s",
            image.arch.debian(),
            to_ssh.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        Ok(vm)
    }

    /// The last lines the guest wrote on its serial console.
    pub(crate) fn console_tail(&self) -> String {
        tail(&std::fs::read_to_string(&self.console).unwrap_or_default(), 30)
    }

    /// ssh's options for this machine (through the master once it is open).
    fn ssh_options(&self) -> Vec<OsString> {
        let mut options: Vec<OsString> = ["-F", "/dev/null", "-p"].map(OsString::from).into();
        options.push(self.port.to_string().into());
        options.push("-i".into());
        options.push(self.key.clone().into());
        for option in [
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "BatchMode=yes",
            "LogLevel=ERROR",
            "IdentitiesOnly=yes",
            "ConnectTimeout=10",
        ] {
            options.push("-o".into());
            options.push(option.into());
        }
        let mut control = OsString::from("ControlPath=");
        control.push(&self.control);
        options.push("-o".into());
        options.push(control);
        options
    }

    fn wait_for_ssh(&mut self, started: Instant) -> anyhow::Result<()> {
        loop {
            if let Some(status) = self.qemu.try_status() {
                bail!(
                    "{} exited with {status} before the guest answered ssh; {}\nconsole:\n{}",
                    self.qemu.name(),
                    self.qemu.stderr_tail(),
                    self.console_tail()
                );
            }
            let answered = Command::new("ssh")
                .args(self.ssh_options())
                .args(["-o", "ControlMaster=no", "root@127.0.0.1", "true"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .context("could not run ssh; install openssh-client")?;
            if answered.success() {
                return Ok(());
            }
            ensure!(
                started.elapsed() < BOOT_PATIENCE,
                "the guest did not answer ssh on 127.0.0.1:{} within {BOOT_PATIENCE:?}; console:\n{}",
                self.port,
                self.console_tail()
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    fn open_master(&mut self) -> anyhow::Result<()> {
        let mut master = Command::new("ssh");
        master.args(self.ssh_options()).args(["-M", "-N", "-o", "ControlPersist=no", "root@127.0.0.1"]);
        self.master = Some(Running::spawn("ssh-master", master, self.control.parent().unwrap_or(Path::new("/")))?);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.forward_op(&["-O", "check"]).is_ok() {
                return Ok(());
            }
            if let Some(master) = &mut self.master
                && let Some(status) = master.try_status()
            {
                bail!("the ssh master connection exited with {status}; {}", master.stderr_tail());
            }
            ensure!(Instant::now() < deadline, "the ssh master connection did not come up within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `ssh -O …` against the master.
    fn forward_op(&self, op: &[&str]) -> anyhow::Result<()> {
        let out = Command::new("ssh")
            .args(self.ssh_options())
            .args(op)
            .arg("root@127.0.0.1")
            .stdin(Stdio::null())
            .output()
            .context("could not run ssh")?;
        ensure!(out.status.success(), "ssh {} failed: {}", op.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        Ok(())
    }

    /// `args` run as root in the guest through the master connection, with the container's fixed environment; every
    /// argument reaches the guest as it is. Stdin is null unless the caller sets it (it is passed through).
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ssh");
        command
            .args(self.ssh_options())
            .args(["-o", "ControlMaster=no", "-T", "root@127.0.0.1", "--"])
            .arg(remote_command(args))
            .stdin(Stdio::null());
        command
    }

    /// Runs `args` in the guest as root and returns its output, whatever the exit status.
    pub(crate) fn output(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.command(args).output().with_context(|| format!("could not run ssh for {args:?}"))
    }

    /// Runs `args` in the guest as root; fails with its stderr unless it succeeds; returns stdout, trimmed.
    pub(crate) fn check(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.output(args)?;
        ensure!(
            out.status.success(),
            "`{}` in the guest failed with {}: {}",
            args.join(" "),
            out.status,
            text(&out.stderr)
        );
        Ok(text(&out.stdout))
    }

    /// `args` run in the guest as `user`, with that user's groups.
    pub(crate) fn as_user(&self, user: &str, args: &[&str]) -> Command {
        let prefix = testbed::setpriv_args(user, user, testbed::Groups::Theirs);
        let mut all: Vec<&str> = prefix.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        self.command(&all)
    }

    /// Writes `contents` (through stdin, never an argument) to `path` in the guest, with `mode` and `owner`.
    pub(crate) fn write(&self, path: &str, contents: &str, mode: &str, owner: &str) -> anyhow::Result<()> {
        let command = self.command(&["install", "-D", "-m", mode, "-o", owner, "-g", owner, "/dev/stdin", path]);
        let out = crate::procs::output_with_stdin(command, contents)?;
        ensure!(out.status.success(), "could not write {path} in the guest: {}", text(&out.stderr));
        Ok(())
    }

    /// Copies the host file `host` to `guest` (mode 0644, parent directories created).
    pub(crate) fn copy_in(&self, host: &Path, guest: &str) -> anyhow::Result<()> {
        let file = std::fs::File::open(host).with_context(|| format!("cannot open {}", host.display()))?;
        let out = self
            .command(&["install", "-D", "-m", "0644", "/dev/stdin", guest])
            .stdin(file)
            .output()
            .context("could not run ssh")?;
        ensure!(
            out.status.success(),
            "could not copy {} to {guest} in the guest: {}",
            host.display(),
            text(&out.stderr)
        );
        Ok(())
    }

    /// Makes the guest's `127.0.0.1:port` reach the host's `127.0.0.1:port` (a remote forward on the master).
    pub(crate) fn forward_to_host(&self, port: u16) -> anyhow::Result<()> {
        self.forward_op(&["-O", "forward", "-R", &format!("127.0.0.1:{port}:127.0.0.1:{port}")])
            .with_context(|| format!("could not forward the guest's port {port} to the host"))
    }

    /// Makes the host's `127.0.0.1:port` reach the guest's `127.0.0.1:port` (a local forward on the master).
    pub(crate) fn forward_from_host(&self, port: u16) -> anyhow::Result<()> {
        self.forward_op(&["-O", "forward", "-L", &format!("127.0.0.1:{port}:127.0.0.1:{port}")])
            .with_context(|| format!("could not forward the host's port {port} to the guest (is it taken?)"))
    }

    /// `systemctl poweroff` in the guest; waits for qemu to exit, killing it after 90 s (see [`Drop`]).
    pub(crate) fn poweroff(mut self) {
        let started = Instant::now();
        let _ = self.command(&["systemctl", "poweroff"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        while started.elapsed() < POWEROFF_PATIENCE {
            if self.qemu.try_status().is_some() {
                println!("vm: powered off in {:.1} s", started.elapsed().as_secs_f64());
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("vm: the guest did not power off within {POWEROFF_PATIENCE:?}; killing qemu");
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(master) = &mut self.master {
            let _ = master.stop();
        }
        let _ = self.qemu.kill9();
    }
}

/// Output as text, trimmed.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
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
    fn quoted_arguments_come_back_unchanged_from_a_shell() {
        let args = ["plain", "a b", "it's", "\"q\"", "$HOME", "a&b;c", "x=y", "l1\nl2", "", "*", "\\", "`id`", "-n"];
        let line = format!("printf '%s\\0' {}", args.iter().map(|arg| shell_quote(arg)).collect::<Vec<_>>().join(" "));
        let out = Command::new("sh").args(["-c", &line]).env("HOME", "/nowhere").output().unwrap();
        let back: Vec<String> =
            out.stdout.split(|&b| b == 0).map(|part| String::from_utf8_lossy(part).into()).collect();
        assert_eq!(back[..args.len()], args.map(String::from));
        assert_eq!(shell_quote("x=y"), "x=y");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn the_remote_command_fixes_the_environment() {
        let line = remote_command(&["echo", "a b"]);
        assert!(line.starts_with("exec env -i PATH=/usr/local/sbin:"), "{line}");
        assert!(line.contains(" SYSTEMD_PAGER= "), "{line}");
        assert!(line.ends_with(" echo 'a b'"), "{line}");
    }

    #[test]
    fn modules_load_after_their_dependencies_and_builtins_are_skipped() {
        let dep = "\
kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz
kernel/fs/jbd2/jbd2.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/lib/crc16.ko.xz:
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio_ring.ko.xz:
kernel/drivers/virtio/virtio.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz:
kernel/crypto/crc32c_generic.ko.xz:
";
        let builtin = "kernel/drivers/virtio/virtio_mmio.ko\n";
        let order = module_load_order(dep, builtin, INITRAMFS_MODULES).unwrap();
        let names: Vec<String> = order.iter().map(|path| module_name(path)).collect();
        assert_eq!(
            names,
            [
                "virtio_pci_modern_dev",
                "virtio_ring",
                "virtio",
                "virtio_pci",
                "virtio_blk",
                "crc32c_generic",
                "crc16",
                "mbcache",
                "jbd2",
                "ext4"
            ]
        );
        let error = module_load_order("", "", &[("ext4", true)]).unwrap_err();
        assert!(error.to_string().contains("no module ext4"), "{error}");
        assert!(
            module_load_order("", "kernel/fs/ext4/ext4.ko\n", &[("ext4", true), ("virtio_mmio", false)])
                .unwrap()
                .is_empty()
        );
        assert_eq!(module_name("kernel/drivers/net/virtio-net.ko.zst"), "virtio_net");
    }

    #[test]
    fn the_versioned_kernel_package_is_read_from_apt_cache() {
        let depends = "linux-image-arm64\n  Depends: linux-image-6.1.0-28-arm64\n";
        assert_eq!(versioned_kernel(depends).as_deref(), Some("linux-image-6.1.0-28-arm64"));
        assert_eq!(
            versioned_kernel("linux-image-arm64\n  Depends: <linux-image-6.1.0-9-armmp-lpae>\n").as_deref(),
            Some("linux-image-6.1.0-9-armmp-lpae")
        );
        assert_eq!(versioned_kernel("x\n  Depends: libc6\n"), None);
    }

    #[test]
    fn the_init_script_loads_modules_in_order_then_switches_root() {
        let script = init_script(&["virtio.ko".into(), "virtio_blk.ko".into()]);
        let virtio = script.find("insmod /lib/modules/virtio.ko").unwrap();
        let blk = script.find("insmod /lib/modules/virtio_blk.ko").unwrap();
        assert!(virtio < blk);
        assert!(script.trim_end().ends_with("exec switch_root /newroot /sbin/init"));
    }

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
