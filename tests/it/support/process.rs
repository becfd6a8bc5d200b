//! Child processes that are always stopped and reaped: SIGTERM, then SIGKILL, on drop, even when a test panics.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a child gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(10);

/// A running child whose stderr (and stdout, unless read by the caller) goes to files in the test's directory.
pub(crate) struct Proc {
    name: String,
    child: Child,
    stderr_path: PathBuf,
    stdout_path: PathBuf,
    reaped: Option<ExitStatus>,
}

impl Proc {
    /// Starts `command` with stdin closed, stderr to `<dir>/<name>.stderr` and stdout to `<dir>/<name>.stdout`.
    pub(crate) fn spawn(name: &str, command: Command, dir: &Path) -> Proc {
        Self::spawn_inner(name, command, dir, None).0
    }

    /// Starts `command` like [`Proc::spawn`] and waits (up to `timeout`) for the first line it prints on stdout.
    /// Later stdout lines are copied to `<dir>/<name>.stdout`.
    pub(crate) fn spawn_reading_first_line(
        name: &str,
        command: Command,
        dir: &Path,
        timeout: Duration,
    ) -> (Proc, String) {
        let (proc, lines) = Self::spawn_inner(name, command, dir, Some(()));
        let lines = lines.expect("stdout is piped");
        match lines.recv_timeout(timeout) {
            Ok(line) => (proc, line),
            Err(_) => panic!(
                "{name} printed no first line on stdout within {timeout:?}; its stderr follows:\n{}",
                proc.stderr()
            ),
        }
    }

    /// Starts `command`, streaming every stdout line through the returned channel (and to `<dir>/<name>.stdout`).
    pub(crate) fn spawn_streaming(name: &str, command: Command, dir: &Path) -> (Proc, mpsc::Receiver<String>) {
        let (proc, lines) = Self::spawn_inner(name, command, dir, Some(()));
        (proc, lines.expect("stdout is piped"))
    }

    fn spawn_inner(
        name: &str,
        mut command: Command,
        dir: &Path,
        stream: Option<()>,
    ) -> (Proc, Option<mpsc::Receiver<String>>) {
        let stderr_path = unique_path(dir, name, "stderr");
        let stdout_path = unique_path(dir, name, "stdout");
        let stderr = File::create(&stderr_path).expect("create a stderr capture file in the test directory");
        command.stdin(Stdio::null()).stderr(Stdio::from(stderr));
        if stream.is_some() {
            command.stdout(Stdio::piped());
        } else {
            let stdout = File::create(&stdout_path).expect("create a stdout capture file in the test directory");
            command.stdout(Stdio::from(stdout));
        }
        let mut child = command.spawn().unwrap_or_else(|error| panic!("could not start {name} ({command:?}): {error}"));
        let receiver = stream.map(|()| {
            let stdout = child.stdout.take().expect("stdout is piped");
            let (sender, receiver) = mpsc::channel();
            let mut copy = File::create(&stdout_path).expect("create a stdout capture file in the test directory");
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = writeln!(copy, "{line}");
                    // The receiver may be gone; keep draining so the child never blocks on a full pipe.
                    let _ = sender.send(line);
                }
            });
            receiver
        });
        let proc = Proc { name: name.to_owned(), child, stderr_path, stdout_path, reaped: None };
        (proc, receiver)
    }

    /// The child's process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the child wrote on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Everything the child wrote on stdout so far (when stdout was not read by the caller, or after the first line).
    pub(crate) fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// The exit status, if the child has exited (reaping it).
    pub(crate) fn try_status(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            self.reaped = self.child.try_wait().ok().flatten();
        }
        self.reaped
    }

    /// Sends `signal` to the running child.
    pub(crate) fn signal(&mut self, signal: Signal) {
        assert!(self.try_status().is_none(), "{} has exited; cannot send it {signal}", self.name);
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pids fit in i32"));
        kill(pid, signal).unwrap_or_else(|e| panic!("send {signal} to {}: {e}", self.name));
    }

    /// Sends SIGKILL and reaps the child.
    pub(crate) fn kill9(&mut self) -> ExitStatus {
        if let Some(status) = self.try_status() {
            return status;
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("reap a killed child");
        self.reaped = Some(status);
        status
    }

    /// Sends SIGTERM, waits up to [`TERM_GRACE`], then SIGKILL; reaps the child and returns its status.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.try_status() {
            return status;
        }
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pids fit in i32"));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = self.try_status() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate();
        if std::thread::panicking() {
            eprintln!("----- {} stderr ({}) -----\n{}", self.name, self.stderr_path.display(), tail(&self.stderr()));
            let stdout = self.stdout();
            if !stdout.is_empty() {
                eprintln!("----- {} stdout -----\n{}", self.name, tail(&stdout));
            }
            eprintln!("----- end of {} -----", self.name);
        }
    }
}

/// `<dir>/<name>.<ext>`, or `<dir>/<name>-2.<ext>` and so on when that file already exists (a restarted child).
fn unique_path(dir: &Path, name: &str, ext: &str) -> PathBuf {
    let first = dir.join(format!("{name}.{ext}"));
    if !first.exists() {
        return first;
    }
    (2..).map(|n| dir.join(format!("{name}-{n}.{ext}"))).find(|path| !path.exists()).expect("some free name")
}

/// The last lines of a capture (the whole file stays in the scratch directory while the test runs).
fn tail(text: &str) -> String {
    const LINES: usize = 60;
    let lines: Vec<&str> = text.lines().collect();
    let skipped = lines.len().saturating_sub(LINES);
    let shown = lines[skipped..].join("\n");
    if skipped == 0 { shown } else { format!("[{skipped} earlier lines]\n{shown}") }
}
