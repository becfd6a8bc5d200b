//! The one seam between the pure protocol and the network: a [`Request`] goes out, a [`Response`] comes back.
//!
//! Requests are built and responses read by pure functions in [`crate::wire`]; [`Transport`] is the only
//! thing that does I/O, so tests can swap in their own.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime};

use token_model::secret::ExposeSecret;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// An HTTP method the protocol uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`, for token checks.
    Get,
    /// `POST`, for `/login`.
    Post,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// Text that carries a secret on the wire (a form body with a password, a bearer token): `Debug` prints
/// `[redacted]`, zeroized on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretText(String);

impl SecretText {
    /// Wraps secret text.
    pub fn new(value: String) -> Self {
        Self(value)
    }
}

impl ExposeSecret for SecretText {
    fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText([redacted])")
    }
}

/// One HTTP request of the protocol. The path holds no secret; the body and bearer token are [`SecretText`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The path below the base URL, starting with `/` (e.g. `/login`, `/device/{id}`).
    pub path: String,
    /// The bearer token for `Authorization: Bearer …`, if any.
    pub bearer: Option<SecretText>,
    /// An `application/x-www-form-urlencoded` body, if any.
    pub form: Option<SecretText>,
}

/// What came back: the parts of an HTTP response the protocol reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The `Date` header, as sent.
    pub date: Option<String>,
    /// The `Retry-After` header, as sent.
    pub retry_after: Option<String>,
    /// The body (at most the configured cap).
    pub body: Vec<u8>,
    /// The local wall-clock time the reply arrived, for reading a `Retry-After` date.
    pub received_at: SystemTime,
}

/// Why a request got no usable response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The request did not complete within the time limit.
    #[error("no complete answer within {} s", .0.as_secs_f32())]
    Timeout(Duration),
    /// No connection could be made (DNS, refused, TLS handshake).
    #[error("could not connect: {0}")]
    Connect(String),
    /// The connection failed after it was made (reset, closed early).
    #[error("the connection failed: {0}")]
    Io(String),
    /// The reply body was larger than the cap.
    #[error("the reply was larger than {0} bytes")]
    TooLarge(usize),
    /// The request could not be sent as built (a token with characters not allowed in a header).
    #[error("the request could not be sent: {0}")]
    InvalidRequest(&'static str),
}

/// Sends one request and returns the response. The only I/O of the login flow.
pub trait Transport: Send + Sync {
    /// Sends `request` and reads the whole response (bounded by the size cap and the time limit).
    fn send(&self, request: Request) -> impl Future<Output = Result<Response, TransportError>> + Send;
}
