//! Booting the image and reaching it: [`Vm::boot`] runs it in the full-system emulator on a qcow2 overlay, waits
//! for ssh and a running systemd, and keeps one ssh master connection through which every command (shell-quoted,
//! under a fixed environment), copy and port forward goes.

use super::*;

/// Quotes `arg` for a POSIX shell: as it is when that is safe, else in single quotes.
pub(super) fn shell_quote(arg: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+,=".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) {
        return arg.to_owned();
    }
    format!("'{}'", arg.replace('\'', "'\\''"))
}

/// The command line the guest's shell runs for `args`: `exec env -i <fixed environment> args…`, quoted.
pub(super) fn remote_command(args: &[&str]) -> String {
    let mut line = String::from("exec env -i");
    for word in GUEST_ENV.iter().chain(args) {
        line.push(' ');
        line.push_str(&shell_quote(word));
    }
    line
}

/// A free TCP port on the host's loopback (free when asked: another program could take it before it is used).
pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").context("cannot bind a port on 127.0.0.1")?.local_addr()?.port())
}

/// The last `lines` lines of `text`.
pub(super) fn tail(text: &str, lines: usize) -> String {
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
    pub(super) fn ssh_options(&self) -> Vec<OsString> {
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

    pub(super) fn wait_for_ssh(&mut self, started: Instant) -> anyhow::Result<()> {
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

    pub(super) fn open_master(&mut self) -> anyhow::Result<()> {
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
    pub(super) fn forward_op(&self, op: &[&str]) -> anyhow::Result<()> {
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
}
