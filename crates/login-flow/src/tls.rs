//! The HTTPS client's TLS configuration, set up in one place for every client of the AllThingsTalk API: the
//! daemon's transport ([`crate::HttpTransport`]) and `att-token proxy`, which hands it to token-proxy.
//!
//! rustls on the ring provider, the platform's certificate verifier (the system's roots), safe protocol
//! versions, ALPN `http/1.1`, and no client certificate: the provider loads no private key (`NoClientKeys`),
//! so no signing code is built in.

use std::fmt;
use std::sync::Arc;

use rustls_platform_verifier::BuilderVerifierExt as _;

/// The key provider of a TLS client that presents no certificate: it loads no private key. rustls asks it only
/// for client authentication, which this configuration never sets up (`with_no_client_auth`); with ring's own
/// provider every RSA, ECDSA and Ed25519 signing routine would be linked for nothing (about 20 KiB).
#[derive(Debug)]
struct NoClientKeys;

impl rustls::crypto::KeyProvider for NoClientKeys {
    fn load_private_key(
        &self,
        _key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Err(rustls::Error::General("the AllThingsTalk client presents no TLS client certificate".to_owned()))
    }
}

/// The TLS client configuration could not be set up (the platform verifier found no usable roots, say). Its
/// message says what failed and what to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSetupError(String);

impl TlsSetupError {
    /// An error of setting up the HTTPS client: `what` failed with `error`. Also for a caller's own step of the
    /// same setup (building its HTTP client), so that every such failure reads the same.
    pub fn new(what: &str, error: &dyn fmt::Display) -> Self {
        TlsSetupError(format!(
            "the HTTPS client could not be set up ({what}: {error}); check that the system's CA certificates are \
             installed (e.g. the ca-certificates package)"
        ))
    }
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsSetupError {}

/// The TLS configuration of an HTTPS client of the API: verified against the platform's roots, presenting no
/// client certificate, speaking HTTP/1.1.
pub fn client_config() -> Result<rustls::ClientConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        key_provider: &NoClientKeys,
        ..rustls::crypto::ring::default_provider()
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsSetupError::new("TLS versions", &error))?
        .with_platform_verifier()
        .map_err(|error| TlsSetupError::new("certificate verifier", &error))?
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// The client TLS configuration being set up on a thread of its own ([`in_background`]): reading and parsing the
/// system's CA roots takes a few milliseconds (hundreds of certificates), which a program starting up can spend
/// on its own work meanwhile.
#[derive(Debug)]
pub struct Background(Setup);

#[derive(Debug)]
enum Setup {
    Running(std::thread::JoinHandle<Result<rustls::ClientConfig, TlsSetupError>>),
    /// No thread could be started: the setup runs in [`Background::wait`] instead.
    Later,
}

/// Starts [`client_config`] on a thread of its own; [`Background::wait`] takes its result.
pub fn in_background() -> Background {
    let thread = std::thread::Builder::new().name("tls-setup".to_owned()).spawn(client_config);
    Background(thread.map_or(Setup::Later, Setup::Running))
}

impl Background {
    /// The configuration, once the thread has set it up (or set up here when no thread could be started).
    pub fn wait(self) -> Result<rustls::ClientConfig, TlsSetupError> {
        match self.0 {
            Setup::Running(thread) => {
                thread.join().unwrap_or_else(|_| Err(TlsSetupError::new("TLS setup", &"the setup thread stopped")))
            }
            Setup::Later => client_config(),
        }
    }
}

#[cfg(test)]
mod tests {
    use rustls::crypto::KeyProvider as _;

    use super::*;

    #[test]
    fn the_transport_loads_no_client_key() {
        // Whatever the key, it is refused: the transport never authenticates as a client.
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(vec![0x30, 0x00].into());
        let error = NoClientKeys.load_private_key(key).expect_err("no key is ever loaded");
        assert!(error.to_string().contains("no TLS client certificate"), "{error}");
    }

    #[test]
    fn the_client_speaks_http1_and_presents_no_certificate() {
        let tls = client_config().expect("the platform verifier sets up");
        assert_eq!(tls.alpn_protocols, [b"http/1.1".to_vec()]);
        assert!(!tls.client_auth_cert_resolver.has_certs());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(vec![0u8; 8].into());
        assert!(tls.crypto_provider().key_provider.load_private_key(key).is_err(), "no private key is ever loaded");
    }

    #[test]
    fn a_setup_error_says_what_to_check() {
        let message = TlsSetupError::new("certificate verifier", &"no roots").to_string();
        assert!(message.contains("certificate verifier: no roots"), "{message}");
        assert!(message.contains("ca-certificates"), "{message}");
    }

    #[test]
    fn the_background_setup_gives_the_same_configuration() {
        let now = client_config().expect("the platform verifier sets up");
        let background = in_background().wait().expect("the platform verifier sets up on a thread");
        assert_eq!(background.alpn_protocols, now.alpn_protocols);
        assert_eq!(background.client_auth_cert_resolver.has_certs(), now.client_auth_cert_resolver.has_certs());
        assert_eq!(format!("{background:?}"), format!("{now:?}"));
    }
}
