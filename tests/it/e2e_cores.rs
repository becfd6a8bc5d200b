//! End to end: an abort of `att-tokend`, `att-token exec` or `att-token proxy` (a panic, or the watchdog's SIGABRT)
//! writes no core dump, with `ulimit -c unlimited` and a core pattern that writes one: a process that may dump
//! shows first, under the same conditions, that a core is written.

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use testbed::{ConfigText, PATIENCE, Proc};

use crate::support::{World, bins, wait_until};

const DEVICE: &str = "CoreDevice00000000000001";
const DEVICE_TOKEN: &str = "maker:4CoreDeviceToken";

/// Where the kernel writes a core of a process: its working directory for a relative `kernel.core_pattern`, else
/// the pattern's directory; the file name starts with the pattern's text up to its first `%`.
struct CoreSite {
    dir: Option<PathBuf>,
    prefix: String,
}

impl CoreSite {
    fn of_this_machine() -> CoreSite {
        let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").expect("read kernel.core_pattern");
        let pattern = pattern.trim();
        assert!(
            !pattern.starts_with('|') && !pattern.is_empty(),
            "kernel.core_pattern is {pattern:?}: cores go to a program, not a file this test can look for; set a file \
             pattern (as root: sysctl kernel.core_pattern=core) and run again"
        );
        let path = Path::new(pattern);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let prefix = name.split('%').next().unwrap_or_default().to_owned();
        let dir = path.is_absolute().then(|| path.parent().unwrap_or(Path::new("/")).to_path_buf());
        CoreSite { dir, prefix }
    }

    /// The core files in the site for a process that ran in `cwd`.
    fn cores(&self, cwd: &Path) -> Vec<PathBuf> {
        let dir = self.dir.as_deref().unwrap_or(cwd);
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&self.prefix)))
            .collect()
    }
}

/// A fresh, empty working directory for one process, writable by it.
fn workdir(world: &World, name: &str) -> PathBuf {
    let dir = world.scratch.path().join(format!("cwd-{name}"));
    std::fs::create_dir_all(&dir).expect("create a working directory");
    dir
}

/// `program args…` under `prlimit --core=unlimited` (as `ulimit -c unlimited`), in `cwd`.
fn unlimited(cwd: &Path, program: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("prlimit");
    command.args(["--core=unlimited", "--"]).arg(program).args(args).current_dir(cwd).stdin(Stdio::null());
    command
}

/// Sends SIGABRT and waits for the process to end; its status.
fn abort(proc: &mut Proc) -> ExitStatus {
    proc.signal(Signal::SIGABRT).unwrap();
    wait_until(&format!("{} to end after SIGABRT", proc.name()), PATIENCE, || {
        proc.try_status().ok_or_else(|| "still running".to_owned())
    })
}

/// Asserts that an aborted process wrote no core (the kernel says so in the status, and no file is there).
fn assert_no_core(what: &str, status: ExitStatus, site: &CoreSite, cwd: &Path) {
    assert_eq!(status.signal(), Some(Signal::SIGABRT as i32), "{what} ended by SIGABRT: {status}");
    assert!(!status.core_dumped(), "the kernel dumped a core of {what}");
    let cores = site.cores(cwd);
    assert!(cores.is_empty(), "{what} left core files: {cores:?}");
    eprintln!("{what}: SIGABRT, no core (status {status})");
}

#[test]
fn an_abort_of_the_daemon_exec_or_proxy_writes_no_core_dump() {
    let site = CoreSite::of_this_machine();
    let device_arg = format!("{DEVICE_TOKEN}={DEVICE}");
    let mut world = World::new("cores", &["--device-token", &device_arg]);
    let token_file = world.secret_file("device.token", DEVICE_TOKEN);

    // A process that may dump, under the same conditions: the pattern and the limit do write a core.
    let control_dir = workdir(&world, "control");
    let sleep = PathBuf::from("/bin/sleep");
    let mut control = Proc::spawn("control", unlimited(&control_dir, &sleep, &["600"]), world.scratch.path()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let status = abort(&mut control);
    let cores = site.cores(&control_dir);
    assert!(
        status.core_dumped() && !cores.is_empty(),
        "a plain process aborted under the same conditions wrote no core (status {status}, files {cores:?}): \
         the machine does not write cores where this test looks, so the test would prove nothing"
    );
    eprintln!("control (sleep): SIGABRT wrote {:?}", cores[0].file_name().unwrap_or_default());
    for core in cores {
        let _ = std::fs::remove_file(core);
    }

    // att-tokend, started as the harness does but under the unlimited core size.
    world.write_config(&ConfigText::new().device("sensor", DEVICE, &token_file));
    let config = world.config.clone().expect("a config");
    let daemon_dir = workdir(&world, "att-tokend");
    let mut command = unlimited(&daemon_dir, &bins().tokend, &["--config", &config.to_string_lossy()]);
    command.env("RUST_LOG", "info").env_remove("NOTIFY_SOCKET");
    let mut daemon = Proc::spawn("att-tokend", command, world.scratch.path()).unwrap();
    testbed::wait_served(&bins().token, &world.bus.address, &mut daemon).unwrap();

    // att-token exec, with a program that says its pid, and att-token proxy on loopback.
    let exec_dir = workdir(&world, "exec");
    let child_pid = exec_dir.join("child.pid");
    let script = format!("echo $$ > {}; exec sleep 600", child_pid.display());
    let bus = world.bus.address.clone();
    let exec_args = ["--bus", &bus, "exec", "sensor", "--", "sh", "-c", &script];
    let mut exec =
        Proc::spawn("att-token-exec", unlimited(&exec_dir, &bins().token, &exec_args), world.scratch.path()).unwrap();
    let child = wait_until("exec's program to start", PATIENCE, || {
        std::fs::read_to_string(&child_pid)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .ok_or_else(|| "not yet".to_owned())
    });
    let proxy_dir = workdir(&world, "proxy");
    let proxy_args = ["--bus", &bus, "proxy", "sensor", "--listen", "127.0.0.1:0"];
    let (mut proxy, listening) = Proc::spawn_first_line(
        "att-token-proxy",
        unlimited(&proxy_dir, &bins().token, &proxy_args),
        world.scratch.path(),
        PATIENCE,
    )
    .unwrap();
    assert!(listening.starts_with("listening on "), "the proxy is ready: {listening}");

    let status = abort(&mut exec);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), Signal::SIGKILL);
    assert_no_core("att-token exec", status, &site, &exec_dir);
    let status = abort(&mut proxy);
    assert_no_core("att-token proxy", status, &site, &proxy_dir);
    let status = abort(&mut daemon);
    assert_no_core("att-tokend", status, &site, &daemon_dir);
}
