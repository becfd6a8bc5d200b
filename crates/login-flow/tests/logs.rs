//! Trace-level logs of a whole session (login with MFA, refresh, token checks, a failed login) never show a
//! password, code or token. A binary of its own: tracing's per-callsite interest is process-wide, so a test
//! running in parallel without a subscriber could hide this test's events.

use std::sync::Arc;

use fake_cloud::{FakeCloud, FakeConfig, FakeUser};
use login_flow::{ApiConfig, Credentials, LoginClient};
use token_model::ids::DeviceId;
use token_model::secret::{ExposeSecret, MfaCode, Password, StaticToken};

const PLAIN: &str = "bob@example.com";
const MFA: &str = "alice@example.com";
const MFA_PASSWORD: &str = "s3cret pass&word=+";
const SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const DEVICE: &str = "abcdefghijklmnopqrstuvwx";
const DEVICE_TOKEN: &str = "maker:4DeviceTokenAbCd";

fn fake_config() -> FakeConfig {
    FakeConfig::default()
        .with_user(FakeUser::new(PLAIN, "right password"))
        .with_user(FakeUser::new(MFA, MFA_PASSWORD).with_totp_seed(SEED))
        .with_device_token(DEVICE_TOKEN, DEVICE)
}

fn client(cloud: &FakeCloud) -> LoginClient {
    LoginClient::new(ApiConfig::new(&cloud.url()).expect("loopback URL")).expect("the client builds")
}

fn mfa_user() -> Credentials {
    Credentials::new(MFA, Password::new(MFA_PASSWORD))
}

fn current_code(cloud: &FakeCloud) -> MfaCode {
    MfaCode::parse(cloud.control().current_totp(MFA).expect("the MFA user has a seed")).expect("six digits")
}

/// A `MakeWriter` collecting every log line in memory.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[test]
fn trace_logs_never_show_secrets() {
    // The fake runs on its own thread, so only this client's (and its HTTP stack's) events are captured.
    let cloud = FakeCloud::start_blocking(fake_config());
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let secrets = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let client = client(&cloud);
            let code = current_code(&cloud);
            let grant = client.login_with_code(&mfa_user(), Some(&code)).await.expect("login");
            let refresh = grant.refresh_token.clone().expect("refresh token");
            let renewed = client.refresh(&refresh).await.expect("refresh");
            client.check_user_token(&renewed.access_token).await.expect("valid");
            client
                .check_device_token(&StaticToken::new(DEVICE_TOKEN), &DeviceId::new(DEVICE).expect("id"))
                .await
                .expect("valid");
            let _ = client.login_with_code(&Credentials::new(PLAIN, Password::new("Wr0ng-Pa55word")), None).await;
            vec![
                MFA_PASSWORD.to_owned(),
                "Wr0ng-Pa55word".to_owned(),
                code.expose_secret().to_owned(),
                grant.access_token.expose_secret().to_owned(),
                refresh.expose_secret().to_owned(),
                renewed.access_token.expose_secret().to_owned(),
                renewed.refresh_token.as_ref().expect("rotated").expose_secret().to_owned(),
                DEVICE_TOKEN.to_owned(),
                // Form-encoded forms of the password, as they travel.
                "s3cret+pass%26word".to_owned(),
            ]
        })
    });
    let logs =
        String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned();
    assert!(
        logs.contains("AllThingsTalk request") && logs.contains("path=\"/login\"") && logs.contains("status=200"),
        "{logs}"
    );
    for secret in secrets {
        assert!(!logs.contains(&secret), "a secret appeared in the trace logs");
    }
}
