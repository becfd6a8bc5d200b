//! Running the project's programs for `demo` and `bench`: building them, a scratch directory, child processes that
//! are stopped (SIGTERM, then SIGKILL) and reaped when dropped, a private bus, the fake cloud and the daemon.
//!
//! Ctrl-C reaches every process in the terminal's foreground group, so the children stop with xtask; a scratch
//! directory left behind by an interrupted run is removed by the next one.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::util::{cargo, workspace_root};

/// How long to wait for a program to come up on a loaded machine.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// Paths of the programs built by [`build`].
pub(crate) struct Bins {
    /// The daemon.
    pub(crate) tokend: PathBuf,
    /// The command-line client.
    pub(crate) token: PathBuf,
    /// The fake cloud.
    pub(crate) fake: PathBuf,
    /// The target profile directory (`target/debug` or `target/release`), for examples.
    pub(crate) profile_dir: PathBuf,
}

/// Builds the daemon, the client and the fake cloud (`--release` when `release`), plus `extra` cargo arguments.
pub(crate) fn build(release: bool, extra: &[&str]) -> anyhow::Result<Bins> {
    // One package per cargo invocation: built together, cargo would unify their dependencies' features, and the
    // daemon would carry the fake cloud's (a multi-threaded tokio, axum's needs): bigger, and not what ships.
    for package in ["att-tokend", "fake-cloud"] {
        let mut command = plain_cargo();
        command.args(["build", "-p", package, "--bins"]);
        if release {
            command.arg("--release");
        }
        run_command(&mut command)?;
    }
    if !extra.is_empty() {
        let mut command = plain_cargo();
        command.arg("build").args(extra);
        if release {
            command.arg("--release");
        }
        run_command(&mut command)?;
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() { dir } else { workspace_root().join(dir) }
        }
        None => workspace_root().join("target"),
    };
    let profile_dir = target.join(if release { "release" } else { "debug" });
    let bins = Bins {
        tokend: profile_dir.join("att-tokend"),
        token: profile_dir.join("att-token"),
        fake: profile_dir.join("att-fake-cloud"),
        profile_dir,
    };
    for path in [&bins.tokend, &bins.token, &bins.fake] {
        if !path.is_file() {
            bail!(
                "{} was not built; if build.target-dir is set in a cargo config, set CARGO_TARGET_DIR instead",
                path.display()
            );
        }
    }
    Ok(bins)
}

/// Runs a cargo command to completion, showing its arguments (not its environment).
fn run_command(command: &mut Command) -> anyhow::Result<()> {
    let args: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let shown = format!("cargo {}", args.join(" "));
    eprintln!("xtask: running {shown}");
    let status = command.status().with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// `cargo` without the per-package variables `cargo run` gave xtask: build scripts that watch them would
/// otherwise rebuild here, and again on the next plain `cargo build`.
fn plain_cargo() -> Command {
    let mut command = cargo();
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let per_package =
            ["CARGO_PKG_", "CARGO_BIN_", "CARGO_CFG_", "CARGO_MANIFEST_"].iter().any(|p| key.starts_with(p));
        if per_package || ["CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "OUT_DIR"].contains(&key.as_ref()) {
            command.env_remove(key.as_ref());
        }
    }
    command
}

/// A private directory under the system's temp dir, removed on drop.
pub(crate) struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Creates `<tmp>/att-<label>-<pid>` (mode 0700), first removing such directories left by runs that are gone.
    pub(crate) fn new(label: &str) -> anyhow::Result<Scratch> {
        let tmp = std::env::temp_dir();
        let prefix = format!("att-{label}-");
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(pid) = name.strip_prefix(&prefix) else { continue };
                if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let path = tmp.join(format!("{prefix}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).with_context(|| format!("could not create {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        Ok(Scratch { path })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a file in the directory with `mode` and returns its path.
    pub(crate) fn write(&self, name: &str, contents: &str, mode: u32) -> anyhow::Result<PathBuf> {
        let path = self.path.join(name);
        std::fs::write(&path, contents).with_context(|| format!("could not write {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A child process, stopped and reaped on drop. Its stderr goes to `<scratch>/<name>.stderr`.
pub(crate) struct Running {
    name: String,
    child: Child,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Running {
    /// Starts `command` with stdin closed, stdout discarded and stderr captured.
    pub(crate) fn spawn(name: &str, command: Command, scratch: &Scratch) -> anyhow::Result<Running> {
        Ok(Self::spawn_inner(name, command, scratch, false)?.0)
    }

    /// Starts `command`, handing every stdout line to the returned channel.
    pub(crate) fn spawn_lines(
        name: &str,
        command: Command,
        scratch: &Scratch,
    ) -> anyhow::Result<(Running, mpsc::Receiver<String>)> {
        let (running, lines) = Self::spawn_inner(name, command, scratch, true)?;
        Ok((running, lines.expect("stdout is piped")))
    }

    /// Starts `command` and waits for the first line it prints.
    pub(crate) fn spawn_first_line(
        name: &str,
        command: Command,
        scratch: &Scratch,
    ) -> anyhow::Result<(Running, String)> {
        let (mut running, lines) = Self::spawn_lines(name, command, scratch)?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            match lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => return Ok((running, line)),
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Some(status) = running.try_status() {
                        bail!("{name} exited with {status} before printing anything: {}", running.stderr_tail());
                    }
                }
                Err(_) => bail!("{name} printed nothing within {PATIENCE:?}: {}", running.stderr_tail()),
            }
        }
    }

    fn spawn_inner(
        name: &str,
        mut command: Command,
        scratch: &Scratch,
        lines: bool,
    ) -> anyhow::Result<(Running, Option<mpsc::Receiver<String>>)> {
        let stderr_path = scratch.path().join(format!("{name}.stderr"));
        let stderr =
            File::create(&stderr_path).with_context(|| format!("could not create {}", stderr_path.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(if lines { Stdio::piped() } else { Stdio::null() })
            .stderr(Stdio::from(stderr));
        let mut child = command.spawn().with_context(|| format!("could not start {name} ({command:?})"))?;
        let receiver = lines.then(|| {
            let stdout = child.stdout.take().expect("stdout is piped");
            let (sender, receiver) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = sender.send(line);
                }
            });
            receiver
        });
        Ok((Running { name: name.to_owned(), child, stderr_path, status: None }, receiver))
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if it has exited.
    pub(crate) fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// The last lines of the captured stderr, for error messages.
    pub(crate) fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        if tail.is_empty() {
            format!("({} wrote nothing on stderr)", self.name)
        } else {
            format!("{} stderr:\n{tail}", self.name)
        }
    }

    /// SIGTERM, up to 10 s to exit, then SIGKILL; reaps the child.
    pub(crate) fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.try_status() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
        self.status
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private `dbus-daemon` whose socket lives in the scratch directory.
pub(crate) struct Bus {
    /// The address to connect to.
    pub(crate) address: String,
    _running: Running,
}

impl Bus {
    /// Starts the bus and reads its address.
    pub(crate) fn start(scratch: &Scratch) -> anyhow::Result<Bus> {
        let mut command = Command::new("dbus-daemon");
        command
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!("--address=unix:path={}", scratch.path().join("bus.sock").display()));
        let (running, address) = Running::spawn_first_line("dbus-daemon", command, scratch)
            .context("could not start a private dbus-daemon; install the dbus-daemon package")?;
        Ok(Bus { address: address.trim().to_owned(), _running: running })
    }
}

/// Starts the fake cloud at `fake` with `args` and returns it with its base URL.
pub(crate) fn start_fake(fake: &Path, scratch: &Scratch, args: &[String]) -> anyhow::Result<(Running, String)> {
    let mut command = Command::new(fake);
    command.args(args);
    let (running, line) = Running::spawn_first_line("att-fake-cloud", command, scratch)?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("att-fake-cloud printed {line:?} instead of `listening on URL`"))?
        .to_owned();
    Ok((running, url))
}

/// An `att-token --bus <address>` command.
pub(crate) fn att_token(bins: &Bins, bus: &Bus) -> Command {
    let mut command = Command::new(&bins.token);
    command.arg("--bus").arg(&bus.address);
    command
}

/// Runs a command to completion with `stdin` as input, capturing its output.
pub(crate) fn output_with_stdin(mut command: Command, stdin: &str) -> anyhow::Result<Output> {
    use std::io::Write as _;
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().with_context(|| format!("could not start {command:?}"))?;
    child.stdin.take().expect("stdin is piped").write_all(stdin.as_bytes())?;
    Ok(child.wait_with_output()?)
}

/// Starts `att-tokend --config <config>` (with `env`) and waits until `att-token list` answers.
pub(crate) fn start_daemon(
    bins: &Bins,
    scratch: &Scratch,
    bus: &Bus,
    config: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<Running> {
    let mut command = Command::new(&bins.tokend);
    command.arg("--config").arg(config).env_remove("NOTIFY_SOCKET");
    for (key, value) in env {
        command.env(key, value);
    }
    let mut daemon = Running::spawn("att-tokend", command, scratch)?;
    wait_for_daemon(bins, bus, &mut daemon)?;
    Ok(daemon)
}

/// Waits until `att-token list` answers, failing if the daemon exits first.
pub(crate) fn wait_for_daemon(bins: &Bins, bus: &Bus, daemon: &mut Running) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = daemon.try_status() {
            bail!("att-tokend exited with {status}: {}", daemon.stderr_tail());
        }
        let out = att_token(bins, bus).arg("list").stdin(Stdio::null()).output()?;
        if out.status.success() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "att-tokend did not answer within {PATIENCE:?} ({}); {}",
                String::from_utf8_lossy(&out.stderr).trim(),
                daemon.stderr_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `POST <base>/_control/<path>` to the fake cloud with a JSON body; returns the reply body.
///
/// A minimal HTTP/1.1 exchange over loopback, so that xtask needs no HTTP client crate.
pub(crate) fn fake_control(base: &str, path: &str, json: &str) -> anyhow::Result<String> {
    fake_request("POST", base, path, json)
}

/// `GET <base>/_control/<path>` from the fake cloud (counters, clock); returns the reply body.
pub(crate) fn fake_get(base: &str, path: &str) -> anyhow::Result<String> {
    fake_request("GET", base, path, "")
}

fn fake_request(method: &str, base: &str, path: &str, json: &str) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let host = base
        .strip_prefix("http://")
        .with_context(|| format!("the fake cloud's URL {base:?} is not http://HOST:PORT"))?
        .trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host).with_context(|| format!("could not connect to {base}"))?;
    stream.set_read_timeout(Some(PATIENCE))?;
    write!(
        stream,
        "{method} /_control/{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).context("could not read the fake cloud's reply")?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((reply.as_str(), ""));
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") && !status.contains(" 204 ") {
        bail!("the fake cloud answered {status:?} to /_control/{path}: {body}");
    }
    Ok(body.to_owned())
}

/// The 6-digit code the authenticator app of `username` shows now, as the fake cloud computes it.
pub(crate) fn fake_totp(base: &str, username: &str) -> anyhow::Result<String> {
    let body = fake_control(base, "totp", &format!("{{\"username\":\"{username}\"}}"))?;
    let code = body
        .split("\"code\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .with_context(|| format!("the fake cloud's totp reply has no code: {body}"))?;
    Ok(code.to_owned())
}
