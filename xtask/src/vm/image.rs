//! Building the machine image, once per architecture: a raw ext4 root (`debootstrap --variant=minbase` under
//! qemu-user), the kernel from Debian's package (unpacked on the host, its modules put in the root with the host's
//! `depmod`), a busybox initramfs that loads the modules mounting `/dev/vda` needs in dependency order, and the
//! ssh key; `mkfs.ext4 -d`, no loop mounts.

use super::*;

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
    pub(super) fn root(&self) -> PathBuf {
        self.dir.join("root.img")
    }

    pub(super) fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    pub(super) fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }

    pub(super) fn key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    /// Whether every file of a finished image of this [`FORMAT`] is in `dir`.
    pub(super) fn complete(dir: &Path) -> bool {
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
pub(super) fn boot_tools() -> anyhow::Result<()> {
    sys::install_missing(&[
        ("qemu-system-aarch64", "qemu-system-arm"),
        ("qemu-system-arm", "qemu-system-arm"),
        ("qemu-img", "qemu-utils"),
        ("ssh", "openssh-client"),
    ])
}

/// Root, the tools that build an image (installed when missing), and a binfmt_misc handler that runs `arch`'s
/// binaries.
pub(super) fn build_tools(arch: Arch) -> anyhow::Result<()> {
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
pub(super) fn build(arch: Arch, mirror: &str, partial: &Path) -> anyhow::Result<()> {
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
pub(super) fn install_kernel(arch: Arch, root: &Path, partial: &Path) -> anyhow::Result<String> {
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
pub(super) fn versioned_kernel(depends: &str) -> Option<String> {
    depends.lines().find_map(|line| {
        let name = line.trim().strip_prefix("Depends:")?.trim();
        let name = name.trim_start_matches('<').trim_end_matches('>');
        (name.starts_with("linux-image-") && name.chars().any(|c| c.is_ascii_digit())).then(|| name.to_owned())
    })
}

/// The module name of a `modules.dep` path: its file name without `.ko[.xz|.zst|.gz]`, `-` read as `_`.
pub(super) fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The module files to load, in order (every module after its dependencies), for `wanted` (name, required) from a
/// `modules.dep` text; names found in `builtin` (a `modules.builtin` text) need nothing, and an optional name that
/// is neither is skipped.
pub(super) fn module_load_order(dep: &str, builtin: &str, wanted: &[(&str, bool)]) -> anyhow::Result<Vec<String>> {
    let mut deps = std::collections::HashMap::new();
    for line in dep.lines() {
        let Some((module, rest)) = line.split_once(':') else { continue };
        deps.insert(module_name(module), (module.to_owned(), rest.split_whitespace().collect::<Vec<_>>()));
    }
    let builtin: std::collections::HashSet<String> = builtin.lines().map(module_name).collect();
    let mut order = Vec::new();
    let mut seen = std::collections::HashSet::new();
    pub(super) fn visit(
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
pub(super) fn init_script(modules: &[String]) -> String {
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
pub(super) fn build_initramfs(root: &Path, release: &str, partial: &Path) -> anyhow::Result<()> {
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
pub(super) fn configure(root: &Path, partial: &Path) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
