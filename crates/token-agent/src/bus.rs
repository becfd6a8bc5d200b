//! Which bus the service is on: the system bus (where it runs as a system service), a session bus or an explicit
//! address, as written in the daemon's `[daemon] bus` and in `att-token --bus`.

use std::fmt;
use std::str::FromStr;

/// A D-Bus bus: `"system"`, `"session"` or an address such as `unix:path=/run/x/bus`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Bus {
    /// The system bus.
    #[default]
    System,
    /// The caller's session bus.
    Session,
    /// A bus at an explicit D-Bus address.
    Address(String),
}

impl FromStr for Bus {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "system" => Ok(Bus::System),
            "session" => Ok(Bus::Session),
            other if other.contains(':') && !other.trim().is_empty() => Ok(Bus::Address(other.to_owned())),
            other => Err(format!(
                "bus {other:?} is not valid: use \"system\", \"session\" or a D-Bus address such as \"unix:path=/run/dbus/system_bus_socket\""
            )),
        }
    }
}

impl fmt::Display for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bus::System => f.write_str("system"),
            Bus::Session => f.write_str("session"),
            Bus::Address(address) => f.write_str(address),
        }
    }
}

/// Connects to the given bus (system, session or an explicit address).
#[cfg(feature = "client")]
pub async fn connect(bus: &Bus) -> zbus::Result<zbus::Connection> {
    match bus {
        Bus::System => zbus::Connection::system().await,
        Bus::Session => zbus::Connection::session().await,
        Bus::Address(address) => zbus::connection::Builder::address(address.as_str()).build().await,
    }
}
