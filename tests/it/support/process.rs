//! Child processes that are always stopped and reaped (SIGTERM, then SIGKILL) on drop, even when a test panics:
//! [`testbed::Proc`], with the start-up and signals that the tests expect to work failing the test instead.

use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::mpsc;

use nix::sys::signal::Signal;

use super::fail;

/// A running child whose stderr and stdout go to files in the test's directory.
#[derive(Debug)]
pub(crate) struct Proc(pub(crate) testbed::Proc);

impl Proc {
    /// Starts `command` with stdin closed, stderr to `<dir>/<name>.stderr` and stdout to `<dir>/<name>.stdout`.
    pub(crate) fn spawn(name: &str, command: Command, dir: &Path) -> Proc {
        Proc(testbed::Proc::spawn(name, command, dir).unwrap_or_else(fail))
    }

    /// Starts `command`, streaming every stdout line through the returned channel (and to `<dir>/<name>.stdout`).
    pub(crate) fn spawn_streaming(name: &str, command: Command, dir: &Path) -> (Proc, mpsc::Receiver<String>) {
        let (proc, lines) = testbed::Proc::spawn_lines(name, command, dir).unwrap_or_else(fail);
        (Proc(proc), lines)
    }

    /// Starts `command` and waits up to `patience` for its first stdout line (an address, a ready line).
    pub(crate) fn spawn_reading_first_line(
        name: &str,
        command: Command,
        dir: &Path,
        patience: std::time::Duration,
    ) -> (Proc, String) {
        let (proc, line) = testbed::Proc::spawn_first_line(name, command, dir, patience).unwrap_or_else(fail);
        (Proc(proc), line)
    }

    /// The child's process id.
    pub(crate) fn id(&self) -> u32 {
        self.0.pid()
    }

    /// Sends `signal` to the running child.
    pub(crate) fn signal(&mut self, signal: Signal) {
        self.0.signal(signal).unwrap_or_else(fail);
    }

    /// Sends SIGKILL and reaps the child.
    pub(crate) fn kill9(&mut self) -> ExitStatus {
        self.0.kill9().unwrap_or_else(fail)
    }

    /// Sends SIGTERM, waits up to 10 s, then SIGKILL; reaps the child and returns its status.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        self.0.stop().unwrap_or_else(fail)
    }
}

impl std::ops::Deref for Proc {
    type Target = testbed::Proc;

    fn deref(&self) -> &testbed::Proc {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut testbed::Proc {
        &mut self.0
    }
}
