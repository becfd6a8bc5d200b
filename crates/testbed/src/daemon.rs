//! The daemon as a child process.

use std::path::Path;
use std::process::Command;

use anyhow::bail;

use crate::{Bins, PATIENCE, Proc, poll};

/// `att-tokend --config <file>` running on a private bus, stopped on drop.
#[derive(Debug)]
pub struct Daemon {
    /// The process.
    pub proc: Proc,
}

impl Daemon {
    /// The command that runs `bins.tokend --config <config>`, with `env` set and without systemd's
    /// `NOTIFY_SOCKET` (so a harness run under systemd does not confuse the two).
    pub fn command(bins: &Bins, config: &Path, env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(&bins.tokend);
        command.arg("--config").arg(config).env_remove("NOTIFY_SOCKET");
        for (key, value) in env {
            command.env(key, value);
        }
        command
    }

    /// Starts the daemon with `config` (whose `[daemon] bus` is `bus_address`) and `env` (e.g. `RUST_LOG`), its
    /// output captured in `dir`, and returns once `att-token list` answers on the bus.
    pub fn start(
        bins: &Bins,
        dir: &Path,
        bus_address: &str,
        config: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Daemon> {
        let mut proc = Proc::spawn("att-tokend", Self::command(bins, config, env), dir)?;
        wait_served(&bins.token, bus_address, &mut proc)?;
        Ok(Daemon { proc })
    }
}

/// Waits until `att-token list` (the `att_token` program, as this process's user) answers on `bus_address`;
/// fails if `daemon` exits first or after [`PATIENCE`].
pub fn wait_served(att_token: &Path, bus_address: &str, daemon: &mut Proc) -> anyhow::Result<()> {
    let mut exited = None;
    let waited = poll("att-tokend to answer `att-token list` on the bus", PATIENCE, || {
        if let Some(status) = daemon.try_status() {
            exited = Some(status);
            return Ok(());
        }
        let out = Command::new(att_token)
            .args(["--bus", bus_address, "list"])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("could not run {}: {e}", att_token.display()))?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()) }
    });
    if let Some(status) = exited {
        bail!("{} exited early with {status}; {}", daemon.name(), daemon.stderr_tail());
    }
    waited.map_err(|error| error.context(daemon.stderr_tail()))
}
