//! The AllThingsTalk `/login` protocol: password grant, MFA step, refresh, token checks and error
//! classification.
//!
//! Each protocol step is a pure function that builds a [`Request`] ([`wire`]), one call of a [`Transport`],
//! and a pure function that reads the [`Response`] with [`token_model::reply`]. [`LoginClient`] ties them to
//! an [`ApiConfig`] and the HTTPS transport ([`HttpTransport`]).
//!
//! The login is typed: [`Credentials`] give a [`PasswordOutcome`]: tokens, or an [`MfaPending`] which alone
//! accepts a code. Every failure is a [`LoginError`], whose [`LoginError::is_transient`] answers the one
//! question the daemon asks: retry later, or stop and ask a human. The MFA step's names are not public:
//! [`variants`] lists the known ones and decides when the next may be tried.
//!
//! The wire protocol itself, in the project's words and with where each fact comes from, is [`protocol`]
//! (`crates/login-flow/PROTOCOL.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), login_flow::LoginError> {
//! use login_flow::{ApiConfig, Credentials, LoginClient};
//! use token_model::secret::{MfaCode, Password};
//!
//! let client = LoginClient::new(ApiConfig::default())?;
//! let credentials = Credentials::new("alice@example.com", Password::new("correct horse"));
//! let code = MfaCode::parse("123456").expect("six digits");
//! let grant = client.login_with_code(&credentials, Some(&code)).await?;
//! let renewed = client.refresh(grant.refresh_token.as_ref().expect("a refresh token")).await?;
//! # drop(renewed);
//! # Ok(())
//! # }
//! ```

pub mod client;
#[doc = include_str!("../PROTOCOL.md")]
pub mod protocol {}
pub mod config;
pub mod error;
pub mod http;
pub mod steps;
pub mod tls;
pub mod totp;
pub mod transport;
pub mod variants;
pub mod wire;

pub use client::{LoginClient, LoginGrant};
pub use config::{ApiConfig, MfaFields};
pub use error::{LoginError, Step};
pub use http::HttpTransport;
pub use steps::{Credentials, MfaPending, PasswordOutcome};
pub use tls::TlsSetupError;
pub use token_model::reply::{MfaChallenge, TokenGrant};
pub use totp::{TotpGenerator, totp_code};
pub use transport::{Method, Request, Response, SecretText, Transport, TransportError};
