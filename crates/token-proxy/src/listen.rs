//! Where the proxy listens: a loopback TCP address or a unix socket, never anything the network can reach.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// A listen address: `127.0.0.1:PORT`, `[::1]:PORT`, `localhost:PORT` or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A loopback TCP address (port 0 picks a free port).
    Tcp(SocketAddr),
    /// A unix stream socket at this path.
    Unix(PathBuf),
}

/// A listen address that was refused, with what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenError(String);

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ListenError {}

impl FromStr for Listen {
    type Err = ListenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() || !path.starts_with('/') {
                return Err(ListenError(format!(
                    "{text:?}: a unix socket needs an absolute path, like unix:/run/att-token-proxy/main.sock"
                )));
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        let address = match text.strip_prefix("localhost:") {
            Some(port) => port.parse::<u16>().ok().map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
            None => text.parse::<SocketAddr>().ok(),
        };
        let Some(address) = address else {
            return Err(ListenError(format!(
                "{text:?} is not a listen address; write 127.0.0.1:PORT, [::1]:PORT, localhost:PORT or unix:PATH"
            )));
        };
        if !address.ip().is_loopback() {
            return Err(ListenError(format!(
                "{text:?} is not a loopback address: the proxy adds the token to every request, so anyone who can \
                 reach it could use the token; listen on 127.0.0.1:PORT or [::1]:PORT, or on unix:PATH"
            )));
        }
        Ok(Listen::Tcp(address))
    }
}

/// Whether a TCP peer may use the proxy: loopback only (127.0.0.0/8, `::1`, and 127.0.0.0/8 mapped into IPv6).
/// A loopback listener is not enough on its own: with `net.ipv4.conf.*.route_localnet=1` a host on the LAN can
/// reach 127.0.0.1.
pub(crate) fn peer_is_loopback(peer: IpAddr) -> bool {
    match peer {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|ip| ip.is_loopback()),
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(address) => write!(f, "http://{address}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_unix_are_accepted() {
        assert_eq!("127.0.0.1:8080".parse::<Listen>().unwrap(), Listen::Tcp("127.0.0.1:8080".parse().unwrap()));
        assert_eq!("[::1]:0".parse::<Listen>().unwrap(), Listen::Tcp("[::1]:0".parse().unwrap()));
        assert_eq!("localhost:9".parse::<Listen>().unwrap(), Listen::Tcp("127.0.0.1:9".parse().unwrap()));
        assert_eq!("127.1.2.3:80".parse::<Listen>().unwrap(), Listen::Tcp("127.1.2.3:80".parse().unwrap()));
        assert_eq!("unix:/run/p.sock".parse::<Listen>().unwrap(), Listen::Unix("/run/p.sock".into()));
    }

    #[test]
    fn only_loopback_peers_are_accepted() {
        let table = [
            ("127.0.0.1", true),
            ("127.0.0.2", true),
            ("127.255.255.254", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:127.1.2.3", true),
            ("192.168.1.7", false),
            ("10.0.0.1", false),
            ("0.0.0.0", false),
            ("169.254.1.1", false),
            ("128.0.0.1", false),
            ("126.255.255.255", false),
            ("::", false),
            ("::2", false),
            ("fe80::1", false),
            ("::ffff:192.168.1.7", false),
            ("::127.0.0.1", false),
            ("::ffff:0.0.0.1", false),
            ("2001:db8::1", false),
        ];
        for (text, expected) in table {
            assert_eq!(peer_is_loopback(text.parse().unwrap()), expected, "{text}");
        }
    }

    #[test]
    fn anything_the_network_reaches_is_refused_with_a_reason() {
        for text in ["0.0.0.0:8080", "[::]:8080", "192.168.1.5:80", "10.0.0.1:1"] {
            let error = text.parse::<Listen>().unwrap_err().to_string();
            assert!(error.contains("not a loopback address"), "{text}: {error}");
        }
        for text in ["8080", "localhost", "example.com:80", "unix:", "unix:relative.sock", ""] {
            let error = text.parse::<Listen>().unwrap_err().to_string();
            assert!(error.contains("127.0.0.1:PORT") || error.contains("absolute path"), "{text}: {error}");
        }
    }
}
