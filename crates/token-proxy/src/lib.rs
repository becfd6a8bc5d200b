//! A local HTTP proxy that adds a bearer token: apps on a gateway send plain HTTP to a loopback address or a
//! unix socket, and the proxy forwards each request to one configured API base URL with
//! `Authorization: Bearer <token>`.
//!
//! It is never an open proxy: only origin-form targets (`GET /me/grounds`) are accepted and joined to the base
//! URL's path; absolute-form targets are refused (400), `CONNECT` too (405), and so is a `Host` header that is
//! not the proxy's own loopback name (421, a defence against DNS rebinding from a browser on the same machine).
//! A path with a backslash (raw or `%5C`), a `.` or `..` segment (raw or `%2E`) or an encoded slash (`%2F`) is
//! refused (400), and so is one whose joined URL is not under the base URL's path, on its scheme, host and port.
//! The client's own `Authorization`, `Proxy-Authorization` and hop-by-hop headers are dropped.
//!
//! On TCP it serves loopback peers only (127.0.0.0/8, `::1`, and 127.0.0.0/8 mapped into IPv6): with
//! `route_localnet=1` a host on the network can reach 127.0.0.1, so a connection from any other address is
//! closed at once, with one line to [`Proxy::on_notice`].
//!
//! A web page in a browser can never use it: a request with an `Origin` header, or with a `Sec-Fetch-Site`
//! other than `none` or `same-origin`, is refused (403); `OPTIONS` is answered by the proxy itself (204 with
//! `Allow`) and never forwarded, so a CORS preflight, which always has `Origin`, gets 403; and every
//! `Access-Control-*` header is dropped from the API's replies, so no browser lets a page read one.
//!
//! A slow client holds a connection, never a slot among [`Limits::max_in_flight`]: a body the proxy holds is read
//! before the request takes a slot, and must arrive within [`Limits::body_timeout`]; a streamed body may pause
//! no longer than that; either gets 408 otherwise.
//!
//! The crate knows nothing of where tokens come from: the caller implements [`TokenSource`] (att-token asks
//! att-tokend over D-Bus) and tells the [`TokenCache`] when the token changed. Tokens are cached in memory,
//! zeroized when dropped, and fetched again when the cache is told, when they are about to lapse, or once after
//! a 401 from the cloud; a request whose body the proxy still holds (at most [`Limits::retry_body_bytes`]) is
//! then sent again with the new token.

mod cache;
mod listen;
mod serve;
mod target;

pub use cache::{Fetched, SourceError, TokenCache, TokenSource};
pub use listen::{Listen, ListenError};
pub use serve::{Limits, Proxy, RequestLog};
pub use target::{Upstream, UpstreamError};
