//! The real transport: HTTPS with reqwest and the TLS configuration of [`crate::tls`] (rustls on the ring
//! provider, verified against the system's roots, no client certificate).
//!
//! Connect and whole-request timeouts, no redirects, a `User-Agent` of `att-tokend/<version>`, and a reply
//! size cap enforced while streaming: the body is read chunk by chunk and refused as soon as it would pass
//! the cap, so a hostile or broken server cannot make the daemon buffer more than the cap.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, DATE, HeaderValue, RETRY_AFTER};
use token_model::secret::ExposeSecret;
use url::Url;
use zeroize::Zeroizing;

use crate::config::ApiConfig;
use crate::error::LoginError;
use crate::tls::TlsSetupError;
use crate::transport::{Method, Request, Response, Transport, TransportError};

/// The `User-Agent` sent with every request.
pub const USER_AGENT: &str = concat!("att-tokend/", env!("CARGO_PKG_VERSION"));

/// HTTPS transport to the configured AllThingsTalk instance.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    config: Arc<ApiConfig>,
}

impl HttpTransport {
    /// Builds the HTTP client for `config` (validated first), with the TLS configuration of [`crate::tls`].
    pub fn new(config: &ApiConfig) -> Result<Self, LoginError> {
        config.validate()?;
        let tls = crate::tls::client_config().map_err(|error| LoginError::BadConfig { problem: error.to_string() })?;
        Self::with_tls(config, tls)
    }

    /// [`HttpTransport::new`] with a TLS configuration already set up (by [`crate::tls::in_background`], say).
    pub fn with_tls(config: &ApiConfig, tls: rustls::ClientConfig) -> Result<Self, LoginError> {
        config.validate()?;
        let bad = |error: TlsSetupError| LoginError::BadConfig { problem: error.to_string() };
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .referer(false)
            .https_only(!config.is_loopback());
        if config.is_loopback() {
            // A proxy from the environment must not intercept a local fake.
            builder = builder.no_proxy();
        }
        let client = builder.build().map_err(|error| bad(TlsSetupError::new("HTTP client", &error)))?;
        Ok(Self { client, config: Arc::new(config.clone()) })
    }

    fn url(&self, path: &str) -> Url {
        self.config.url_for(path)
    }

    async fn exchange(&self, request: Request) -> Result<Response, TransportError> {
        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
        };
        let mut builder = self.client.request(method, self.url(&request.path)).header(ACCEPT, "application/json");
        if let Some(token) = &request.bearer {
            let text = Zeroizing::new(format!("Bearer {}", token.expose_secret()));
            let mut value = HeaderValue::from_str(&text).map_err(|_| {
                TransportError::InvalidRequest("the token has characters not allowed in an HTTP header")
            })?;
            value.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, value);
        }
        if let Some(form) = &request.form {
            builder = builder
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form.expose_secret().as_bytes().to_vec());
        }
        let mut response = builder.send().await.map_err(|error| self.classify(&error))?;
        let header =
            |name| response.headers().get(name).and_then(|value: &HeaderValue| value.to_str().ok()).map(str::to_owned);
        let date = header(DATE);
        let retry_after = header(RETRY_AFTER);
        let status = response.status().as_u16();
        let cap = self.config.max_reply_bytes;
        if response.content_length().is_some_and(|length| length > cap as u64) {
            return Err(TransportError::TooLarge(cap));
        }
        let mut body = Vec::with_capacity(response.content_length().map_or(1024, |length| length as usize).min(cap));
        while let Some(chunk) = response.chunk().await.map_err(|error| self.classify(&error))? {
            if body.len() + chunk.len() > cap {
                return Err(TransportError::TooLarge(cap));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response { status, date, retry_after, body, received_at: SystemTime::now() })
    }

    fn classify(&self, error: &reqwest::Error) -> TransportError {
        if error.is_timeout() {
            return TransportError::Timeout(self.config.request_timeout);
        }
        let detail = describe(error);
        if error.is_connect() { TransportError::Connect(detail) } else { TransportError::Io(detail) }
    }
}

/// The error and its causes in one line, without the URL.
fn describe(error: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut current: Option<&dyn std::error::Error> = error.source();
    while let Some(cause) = current {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause.to_string());
        current = cause.source();
    }
    if text.is_empty() { "request failed".to_owned() } else { text }
}

impl Transport for HttpTransport {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        // reqwest's own timeout covers the body too; this bound also covers anything around it.
        let limit = self.config.request_timeout + Duration::from_millis(250);
        match tokio::time::timeout(limit, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout(self.config.request_timeout)),
        }
    }
}
