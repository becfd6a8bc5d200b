//! The machines the system test runs on: the cached minimal Debian 12 root and this run's copy of it, booted as
//! a container with `systemd-nspawn` ([`Container`], commands through `nsenter`), or the emulated ARM machine of
//! [`crate::vm`]; [`Guest`] is either, with the commands every step runs inside.

use super::*;

/// The cached minimal root: `<cache>/bookworm-minbase`, made with debootstrap when missing. A
/// debootstrap that did not finish leaves only `bookworm-minbase.tmp`, which the next run replaces.
pub(super) fn cached_root(cache: &Path, mirror: &str) -> anyhow::Result<PathBuf> {
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
pub(super) struct RunDir {
    pub(super) path: PathBuf,
}

impl RunDir {
    /// Copies `base` to `<cache>/run-<pid>`, first removing copies left by runs that are gone.
    pub(super) fn copy_of(base: &Path, cache: &Path) -> anyhow::Result<RunDir> {
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
pub(super) enum Guest {
    Container(Container),
    Vm(vm::Vm),
}

impl Guest {
    /// What messages call it.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Guest::Container(_) => "the container",
            Guest::Vm(_) => "the emulated machine",
        }
    }

    /// `program args…` run inside as root, with a small fixed environment and stdin from /dev/null.
    pub(super) fn command(&self, args: &[&str]) -> Command {
        match self {
            Guest::Container(container) => container.command(args),
            Guest::Vm(vm) => vm.command(args),
        }
    }

    /// The address inside at which the guest reaches the host's `127.0.0.1:port`.
    pub(super) fn reach_host(&self, port: u16) -> anyhow::Result<String> {
        match self {
            // The container shares the host's network.
            Guest::Container(_) => {}
            Guest::Vm(vm) => vm.forward_to_host(port)?,
        }
        Ok(format!("127.0.0.1:{port}"))
    }

    /// Makes the guest's `127.0.0.1:port` reachable from the host at the same address.
    pub(super) fn reach_guest(&self, port: u16) -> anyhow::Result<()> {
        match self {
            Guest::Container(_) => Ok(()),
            Guest::Vm(vm) => vm.forward_from_host(port),
        }
    }

    /// Powers the machine off and waits for it (killing it after a while; dropping does the same at once).
    pub(super) fn poweroff(self) {
        match self {
            Guest::Container(container) => container.poweroff(),
            Guest::Vm(vm) => vm.poweroff(),
        }
    }

    /// Makes the guest's kernel clock count as synchronised or not, as an NTP client does (maximum error and
    /// `STA_UNSYNC`; never the time). The container shares the host's kernel; the emulated machine has its own,
    /// set with adjtimex(8) inside.
    pub(super) fn set_clock_synchronised(&self, synchronised: bool) -> anyhow::Result<()> {
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
    pub(super) fn patience(&self) -> Duration {
        match self {
            Guest::Container(_) => PATIENCE,
            Guest::Vm(_) => PATIENCE * 4,
        }
    }

    /// Runs `args` inside as root and returns its output, whatever the exit status.
    pub(super) fn output(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.command(args).output().with_context(|| format!("could not run {args:?} in {}", self.name()))
    }

    /// Runs `args` inside as root; fails with its stderr unless it succeeds; returns stdout.
    pub(super) fn check(&self, args: &[&str]) -> anyhow::Result<String> {
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
    pub(super) fn as_user(&self, user: &str, args: &[&str]) -> Command {
        self.as_account(user, user, testbed::Groups::Theirs, args)
    }

    /// `args` run inside as `user` with primary group `group` and `groups` ([`testbed::setpriv_args`]).
    pub(super) fn as_account(&self, user: &str, group: &str, groups: testbed::Groups, args: &[&str]) -> Command {
        let prefix = testbed::setpriv_args(user, group, groups);
        let mut all: Vec<&str> = prefix.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        self.command(&all)
    }

    /// Writes `contents` (from stdin, never an argument) to `path` inside, with `mode` and `owner`.
    pub(super) fn write(&self, path: &str, contents: &str, mode: &str, owner: &str) -> anyhow::Result<()> {
        let command = self.command(&["install", "-D", "-m", mode, "-o", owner, "-g", owner, "/dev/stdin", path]);
        let out = crate::procs::output_with_stdin(command, contents)?;
        ensure!(out.status.success(), "could not write {path} in {}: {}", self.name(), text(&out.stderr));
        Ok(())
    }

    /// The service's main pid, 0 when it has none.
    pub(super) fn main_pid(&self) -> anyhow::Result<u32> {
        let pid = self.check(&["systemctl", "show", "--property=MainPID", "--value", "att-tokend.service"])?;
        pid.parse().with_context(|| format!("systemctl show MainPID printed {pid:?}"))
    }

    pub(super) fn property(&self, name: &str) -> anyhow::Result<String> {
        self.check(&["systemctl", "show", &format!("--property={name}"), "--value", "att-tokend.service"])
    }

    /// The unit's last journal lines, for failures.
    pub(super) fn journal_tail(&self) -> String {
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
pub(super) struct Container {
    pub(super) nspawn: Running,
    /// The host pid of the container's systemd, the target of `nsenter`.
    pub(super) pid: u32,
}

impl Container {
    pub(super) fn boot(root: &Path, scratch: &Scratch) -> anyhow::Result<Container> {
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
    pub(super) fn command(&self, args: &[&str]) -> Command {
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
    pub(super) fn poweroff(mut self) {
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
pub(super) fn find_init(nspawn: u32) -> Option<u32> {
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
