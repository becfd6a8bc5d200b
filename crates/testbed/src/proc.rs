//! Child processes that are always stopped and reaped.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a child gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(10);

/// A running child with stdin closed, its stderr in `<dir>/<name>.stderr` and its stdout in `<dir>/<name>.stdout`
/// (copied there line by line when the caller reads the lines too). A restarted child of the same name gets
/// `<name>-2.stderr` and so on.
///
/// On drop it is stopped (SIGTERM, then SIGKILL after 10 s) and reaped; when the thread is panicking (a failed
/// test), the last lines of its stderr and stdout are printed.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    stderr_path: PathBuf,
    stdout_path: PathBuf,
    reaped: Option<ExitStatus>,
}

impl Proc {
    /// Starts `command` as `name`, its output captured in `dir`.
    pub fn spawn(name: &str, command: Command, dir: &Path) -> anyhow::Result<Proc> {
        Ok(Self::spawn_inner(name, command, dir, false)?.0)
    }

    /// Starts `command` like [`Proc::spawn`], also handing every stdout line to the returned channel.
    pub fn spawn_lines(name: &str, command: Command, dir: &Path) -> anyhow::Result<(Proc, mpsc::Receiver<String>)> {
        let (proc, lines) = Self::spawn_inner(name, command, dir, true)?;
        Ok((proc, lines.context("stdout is piped")?))
    }

    /// Starts `command` like [`Proc::spawn`] and waits up to `timeout` for the first line it prints on stdout
    /// (an address, a URL); fails if it exits first or prints nothing in time.
    pub fn spawn_first_line(
        name: &str,
        command: Command,
        dir: &Path,
        timeout: Duration,
    ) -> anyhow::Result<(Proc, String)> {
        let (mut proc, lines) = Self::spawn_lines(name, command, dir)?;
        let deadline = Instant::now() + timeout;
        loop {
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => return Ok((proc, line)),
                // Its stdout closed without a line: it is exiting, or closed stdout and runs on.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    while proc.try_status().is_none() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    match proc.try_status() {
                        Some(status) => {
                            bail!("{name} exited with {status} before printing a line; {}", proc.stderr_tail())
                        }
                        None => bail!("{name} closed its stdout without printing a line; {}", proc.stderr_tail()),
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("{name} printed no line within {timeout:?}; {}", proc.stderr_tail())
                }
            }
        }
    }

    fn spawn_inner(
        name: &str,
        mut command: Command,
        dir: &Path,
        lines: bool,
    ) -> anyhow::Result<(Proc, Option<mpsc::Receiver<String>>)> {
        let stderr_path = unique_path(dir, name, "stderr");
        let stdout_path = unique_path(dir, name, "stdout");
        let create = |path: &Path| File::create(path).with_context(|| format!("could not create {}", path.display()));
        command.stdin(Stdio::null()).stderr(Stdio::from(create(&stderr_path)?));
        let copy = create(&stdout_path)?;
        if lines {
            command.stdout(Stdio::piped());
        } else {
            command.stdout(Stdio::from(copy.try_clone()?));
        }
        let mut child = command.spawn().with_context(|| format!("could not start {name} ({command:?})"))?;
        let receiver = match child.stdout.take() {
            Some(stdout) if lines => {
                let (sender, receiver) = mpsc::channel();
                let mut copy = copy;
                std::thread::spawn(move || {
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        let _ = writeln!(copy, "{line}");
                        // The receiver may be gone; keep draining so the child never blocks on a full pipe.
                        let _ = sender.send(line);
                    }
                });
                Some(receiver)
            }
            _ => None,
        };
        let proc = Proc { name: name.to_owned(), child, stderr_path, stdout_path, reaped: None };
        Ok((proc, receiver))
    }

    /// The name it was started as.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Everything it wrote on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// The last 15 lines of its stderr, introduced by its name, for error messages.
    pub fn stderr_tail(&self) -> String {
        let tail = tail(&self.stderr(), 15);
        if tail.is_empty() {
            format!("{} wrote nothing on stderr", self.name)
        } else {
            format!("{} stderr:\n{tail}", self.name)
        }
    }

    /// Its exit status, if it has exited (reaping it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            self.reaped = self.child.try_wait().ok().flatten();
        }
        self.reaped
    }

    /// Sends `signal`; fails if it has exited.
    pub fn signal(&mut self, signal: Signal) -> anyhow::Result<()> {
        if let Some(status) = self.try_status() {
            bail!("{} has exited ({status}); cannot send it {signal}", self.name);
        }
        kill(self.nix_pid(), signal).with_context(|| format!("could not send {signal} to {}", self.name))
    }

    /// Sends SIGKILL (no chance to clean up) and reaps it; its exit status.
    pub fn kill9(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.try_status() {
            return Ok(status);
        }
        let _ = self.child.kill();
        let status = self.child.wait().with_context(|| format!("could not reap {}", self.name))?;
        self.reaped = Some(status);
        Ok(status)
    }

    /// Sends SIGTERM, waits up to 10 s for it to exit, then SIGKILL; reaps it and returns its exit status.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.try_status() {
            return Ok(status);
        }
        let _ = kill(self.nix_pid(), Signal::SIGTERM);
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = self.try_status() {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9()
    }

    fn nix_pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.stop();
        if std::thread::panicking() {
            let name = &self.name;
            eprintln!("----- {name} stderr ({}) -----\n{}", self.stderr_path.display(), tail(&self.stderr(), 60));
            let stdout = self.stdout();
            if !stdout.is_empty() {
                eprintln!("----- {name} stdout -----\n{}", tail(&stdout, 60));
            }
            eprintln!("----- end of {name} -----");
        }
    }
}

/// `<dir>/<name>.<ext>`, or `<dir>/<name>-2.<ext>` and so on when that file already exists (a restarted child).
fn unique_path(dir: &Path, name: &str, ext: &str) -> PathBuf {
    let first = dir.join(format!("{name}.{ext}"));
    if !first.exists() {
        return first;
    }
    (2..).map(|n| dir.join(format!("{name}-{n}.{ext}"))).find(|path| !path.exists()).unwrap_or(first)
}

/// The last `lines` lines of a capture, saying how many came before.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let skipped = all.len().saturating_sub(lines);
    let shown = all[skipped..].join("\n");
    if skipped == 0 { shown } else { format!("[{skipped} earlier lines]\n{shown}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_lines_are_read_and_an_early_exit_is_reported() {
        let dir = crate::Scratch::new("testbed-proc").unwrap();
        let mut echo = Command::new("echo");
        echo.arg("listening on http://127.0.0.1:1");
        let (_echo, line) = Proc::spawn_first_line("echo", echo, &dir, crate::PATIENCE).unwrap();
        assert_eq!(line, "listening on http://127.0.0.1:1");

        let error = Proc::spawn_first_line("true", Command::new("true"), &dir, crate::PATIENCE).unwrap_err();
        assert!(format!("{error:#}").contains("true exited with exit status: 0 before printing a line"), "{error:#}");
    }

    #[test]
    fn stop_ends_a_running_child_and_a_second_child_gets_its_own_files() {
        let dir = crate::Scratch::new("testbed-proc").unwrap();
        let mut sleep = Command::new("sleep");
        sleep.arg("600");
        let mut first = Proc::spawn("sleep", sleep, &dir).unwrap();
        assert!(first.try_status().is_none());
        first.signal(Signal::SIGTERM).unwrap();
        let status = first.stop().unwrap();
        assert!(!status.success(), "sleep ended by SIGTERM reports failure: {status}");
        assert!(first.signal(Signal::SIGTERM).is_err(), "a signal to an exited child is refused");
        let second = Proc::spawn("sleep", Command::new("true"), &dir).unwrap();
        drop(second);
        assert!(dir.join("sleep.stderr").exists() && dir.join("sleep-2.stderr").exists());
    }
}
