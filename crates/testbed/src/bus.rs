//! A private `dbus-daemon`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, ensure};

use crate::{PATIENCE, Proc};

/// A private `dbus-daemon` listening on `<dir>/bus.sock`, stopped on drop. Never the machine's own bus.
#[derive(Debug)]
pub struct Bus {
    /// The address clients connect to (`unix:path=…,guid=…`).
    pub address: String,
    /// The `dbus-daemon` process.
    pub proc: Proc,
    /// What the config holds besides `<listen>` and `<auth>`, kept for [`Bus::restart`].
    body: String,
}

/// A session-type bus that every local uid may connect to, own names on, send anything to and eavesdrop on.
const OPEN: &str = r#"  <type>session</type>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
"#;

/// The default policy of Debian's `/usr/share/dbus-1/system.conf`: nobody owns a name or calls a method unless
/// a policy file allows it.
const SYSTEM: &str = r#"  <type>system</type>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.systemd1.Activator"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.systemd1.Activator"/>
  </policy>
"#;

impl Bus {
    /// Starts an open bus: session-type, every local uid may connect, own any name, call anything and eavesdrop.
    pub fn start(dir: &Path) -> anyhow::Result<Bus> {
        Self::with_body(dir, OPEN.to_owned())
    }

    /// Starts a bus with the system bus's default policy (Debian's `system.conf`), followed by `extra` config
    /// elements: the policy files to apply (`<include>FILE</include>`, `<includedir>DIR</includedir>`) and
    /// where activatable services are (`<servicedir>DIR</servicedir>`).
    pub fn start_like_system(dir: &Path, extra: &str) -> anyhow::Result<Bus> {
        Self::with_body(dir, format!("{SYSTEM}{extra}\n"))
    }

    fn with_body(dir: &Path, body: String) -> anyhow::Result<Bus> {
        let (proc, address) = spawn(dir, &body)?;
        Ok(Bus { address, proc, body })
    }

    /// Kills this `dbus-daemon` (SIGKILL: every connection drops at once, as when the bus crashes) and starts a
    /// new one with the same config on the same socket, as a restarted system bus does. Returns once it listens.
    pub fn restart(&mut self, dir: &Path) -> anyhow::Result<()> {
        self.proc.kill9()?;
        let _ = std::fs::remove_file(dir.join("bus.sock"));
        let (proc, address) = spawn(dir, &self.body)?;
        ensure!(
            address.split(',').next() == self.address.split(',').next(),
            "the restarted bus listens on {address}, not on the same socket as {}",
            self.address
        );
        self.proc = proc;
        self.address = address;
        Ok(())
    }
}

/// Writes `<dir>/bus.conf` and starts `dbus-daemon` with it; the process and the address it printed.
fn spawn(dir: &Path, body: &str) -> anyhow::Result<(Proc, String)> {
    let socket = dir.join("bus.sock");
    let config = format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
{body}</busconfig>
"#,
        socket.display()
    );
    let config_path = dir.join("bus.conf");
    std::fs::write(&config_path, config).with_context(|| format!("could not write {}", config_path.display()))?;
    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o644))?;
    let mut command = Command::new("dbus-daemon");
    command
        .args(["--nofork", "--nopidfile", "--print-address=1"])
        .arg(format!("--config-file={}", config_path.display()));
    let (proc, address) = Proc::spawn_first_line("dbus-daemon", command, dir, PATIENCE)
        .context("a private dbus-daemon did not start (install it with `apt-get install dbus-daemon`)")?;
    // Other uids need write access to the socket to connect, whatever the umask made it.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777))
        .with_context(|| format!("could not chmod {}", socket.display()))?;
    Ok((proc, address.trim().to_owned()))
}
