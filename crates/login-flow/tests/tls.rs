//! The HTTPS transport verifies certificates: a server with a self-signed certificate for `localhost`
//! (checked in under `tests/data/`, test-only) is refused in the handshake, and the error is transient.

use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::mpsc;

use login_flow::{ApiConfig, Credentials, LoginClient, LoginError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use token_model::secret::Password;

const CERT: &[u8] = include_bytes!("data/self-signed.crt");
const KEY: &[u8] = include_bytes!("data/self-signed.key");

/// Serves TLS with the self-signed certificate on one connection; reports how the handshake ended.
fn self_signed_server() -> (u16, mpsc::Receiver<Result<(), String>>) {
    let cert = CertificateDer::from_pem_slice(CERT).expect("the test certificate parses");
    let key = PrivateKeyDer::from_pem_slice(KEY).expect("the test key parses");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("a usable certificate");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("address").port();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((socket, _)) = listener.accept() else { return };
        let connection = rustls::ServerConnection::new(Arc::new(config)).expect("a server connection");
        let mut stream = rustls::StreamOwned::new(connection, socket);
        let mut buffer = [0u8; 1024];
        let outcome = stream.read(&mut buffer).map(drop).map_err(|error| error.to_string());
        let _ = sender.send(outcome);
    });
    (port, receiver)
}

#[tokio::test]
async fn a_certificate_no_trusted_root_signed_is_refused() {
    for host in ["localhost", "127.0.0.1"] {
        let (port, handshake) = self_signed_server();
        let client = LoginClient::new(ApiConfig::new(&format!("https://{host}:{port}")).expect("an https URL"))
            .expect("the client builds");
        let error =
            client.login_with_code(&Credentials::new("bob@example.com", Password::new("pw")), None).await.unwrap_err();
        match &error {
            LoginError::Network { detail } => {
                // Refused because no trusted root issued it, not for some incidental reason.
                assert!(detail.contains("certificate") && detail.contains("UnknownIssuer"), "{host}: {detail}");
            }
            other => panic!("{host}: expected a network error, got {other:?}"),
        }
        assert!(error.is_transient());
        let outcome = handshake.recv_timeout(std::time::Duration::from_secs(30)).expect("the server saw the client");
        assert!(outcome.is_err(), "{host}: the handshake must not complete");
    }
}
