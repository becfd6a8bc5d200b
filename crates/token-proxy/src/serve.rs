//! The server: accepts connections, checks each request, adds the token, forwards it and streams the answer back.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use zeroize::Zeroizing;

use crate::cache::TokenCache;
use crate::listen::{self, Listen};
use crate::target::{self, HostRule, Upstream, Verdict};

/// How much the proxy takes on. Every figure bounds something a client could otherwise make it hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The read buffer of a client connection, which bounds a request's head (line and headers): beyond it the
    /// client gets 431. At least 8 KiB.
    pub max_header_bytes: usize,
    /// Requests forwarded at once; one more is answered 503 at once.
    pub max_in_flight: usize,
    /// Client connections open at once; one more is closed at once.
    pub max_connections: usize,
    /// How long one upstream request may take, its response body included; then 504 (or a cut body).
    pub upstream_timeout: Duration,
    /// How long a client connection may take to send a request head, also while idle between requests; then it
    /// is closed.
    pub idle_timeout: Duration,
    /// A request body up to this size is held, so that the request can be sent again after a 401; a larger one,
    /// or one of unknown length, is streamed and never retried.
    pub retry_body_bytes: usize,
    /// How long a client may take to send a body the proxy holds, and the longest pause within a streamed one;
    /// then 408.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_in_flight: 64,
            max_connections: 256,
            upstream_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
            retry_body_bytes: 64 * 1024,
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// What the proxy did with one request: the one log line it writes (method, path without query, status,
/// time to the response head, and a note). Never holds a token.
#[derive(Debug, Clone)]
pub struct RequestLog {
    /// The request's method.
    pub method: Method,
    /// The request's path, without the query string (which may hold ids an app considers private).
    pub path: String,
    /// The status sent to the client.
    pub status: u16,
    /// From the request head to the response head.
    pub duration: Duration,
    /// What happened besides forwarding: a refusal, a retry after 401, an upstream error.
    pub note: Option<String>,
}

impl fmt::Display for RequestLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path: String = self.path.chars().take(200).flat_map(char::escape_debug).collect();
        write!(f, "{} {path} {} {:.1} ms", self.method, self.status, self.duration.as_secs_f64() * 1000.0)?;
        if let Some(note) = &self.note {
            write!(f, " ({note})")?;
        }
        Ok(())
    }
}

type Log = Arc<dyn Fn(&RequestLog) + Send + Sync>;
type Notice = Arc<dyn Fn(&str) + Send + Sync>;

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Listener {
    /// The next connection, with its peer's address when it came over TCP.
    async fn accept(&self) -> io::Result<(Box<dyn Io>, Option<SocketAddr>)> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok((Box::new(stream), Some(peer)))
            }
            Listener::Unix(listener, _) => Ok((Box::new(listener.accept().await?.0), None)),
        }
    }
}

/// Shared by every request.
struct State {
    upstream: Upstream,
    cache: Arc<TokenCache>,
    client: reqwest::Client,
    hosts: HostRule,
    limits: Limits,
    in_flight: Arc<Semaphore>,
    log: Log,
    notice: Notice,
    /// Which TCP peers are served: [`listen::peer_is_loopback`]; a test may narrow it.
    peer_allowed: fn(IpAddr) -> bool,
}

/// A bound proxy, ready to [`run`](Proxy::run).
pub struct Proxy {
    listener: Listener,
    local: Listen,
    state: Arc<State>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy").field("local", &self.local).field("upstream", &self.state.upstream).finish()
    }
}

/// The HTTP client that forwards to `upstream`, on the caller's TLS configuration.
fn http_client(upstream: &Upstream, limits: &Limits, tls: rustls::ClientConfig) -> io::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10).min(limits.upstream_timeout))
        .timeout(limits.upstream_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .referer(false);
    if upstream.is_loopback() {
        builder = builder.no_proxy();
    }
    builder.build().map_err(|error| {
        io::Error::other(format!(
            "the HTTPS client could not be set up (HTTP client: {error}); check that the system's CA certificates are \
             installed (e.g. the ca-certificates package)"
        ))
    })
}

/// Binds a unix socket, replacing a stale one (a socket nobody listens on) but never another file or a live
/// socket.
fn bind_unix(path: &std::path::Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt as _;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::other(format!(
                "{} exists and is not a socket; remove it or choose another path",
                path.display()
            )));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "another process listens on {}; stop it or choose another path",
                    path.display()
                )));
            }
            Err(_) => std::fs::remove_file(path)
                .map_err(|e| io::Error::other(format!("cannot remove the stale socket {}: {e}", path.display())))?,
        }
    }
    UnixListener::bind(path).map_err(|e| io::Error::other(format!("cannot listen on {}: {e}", path.display())))
}

impl Proxy {
    /// Listens on `listen` (a unix socket gets `socket_mode`), ready to forward to `upstream` with tokens from
    /// `cache`, over HTTPS set up with `tls` (the caller's client configuration: att-token passes login-flow's,
    /// so the proxy and the daemon trust the same roots the same way). The socket's file is created with the
    /// process's umask, then set to `socket_mode`.
    pub async fn bind(
        listen: &Listen,
        upstream: Upstream,
        cache: Arc<TokenCache>,
        limits: Limits,
        socket_mode: u32,
        tls: rustls::ClientConfig,
    ) -> io::Result<Proxy> {
        let client = http_client(&upstream, &limits, tls)?;
        let (listener, local, hosts) = match listen {
            Listen::Tcp(address) => {
                let listener = TcpListener::bind(address).await.map_err(|e| {
                    io::Error::other(format!(
                        "cannot listen on {address}: {e}; choose another port, or stop what holds this one"
                    ))
                })?;
                let local = listener.local_addr()?;
                let ip_text = match local.ip() {
                    std::net::IpAddr::V4(ip) => ip.to_string(),
                    std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                };
                (Listener::Tcp(listener), Listen::Tcp(local), HostRule::Loopback { ip_text, port: local.port() })
            }
            Listen::Unix(path) => {
                use std::os::unix::fs::PermissionsExt as _;
                let listener = bind_unix(path)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(socket_mode)).map_err(|e| {
                    io::Error::other(format!(
                        "cannot set the mode of {}: {e}; check who owns it and its directory",
                        path.display()
                    ))
                })?;
                (Listener::Unix(listener, path.clone()), Listen::Unix(path.clone()), HostRule::Any)
            }
        };
        let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
        let log: Log = Arc::new(|_: &RequestLog| {});
        let notice: Notice = Arc::new(|_: &str| {});
        let peer_allowed = listen::peer_is_loopback;
        let state = State { upstream, cache, client, hosts, limits, in_flight, log, notice, peer_allowed };
        Ok(Proxy { listener, local, state: Arc::new(state) })
    }

    /// Where the proxy listens (with the real port when port 0 was asked for).
    pub fn local(&self) -> &Listen {
        &self.local
    }

    /// Calls `log` once per request, after the response head is known.
    pub fn on_request(mut self, log: impl Fn(&RequestLog) + Send + Sync + 'static) -> Self {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.log = Arc::new(log);
        }
        self
    }

    /// Calls `notice` with one line for each event that concerns no request: a connection refused because of its
    /// peer.
    pub fn on_notice(mut self, notice: impl Fn(&str) + Send + Sync + 'static) -> Self {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.notice = Arc::new(notice);
        }
        self
    }

    #[cfg(test)]
    fn with_peer_rule(mut self, rule: fn(IpAddr) -> bool) -> Self {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.peer_allowed = rule;
        }
        self
    }

    /// Serves until `shutdown` completes, then stops accepting, lets requests under way finish (10 s at most)
    /// and removes the unix socket.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Proxy { listener, state, .. } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let connections = Arc::new(Semaphore::new(state.limits.max_connections));
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => {
                    let io = match accepted {
                        Ok((_, Some(peer))) if !(state.peer_allowed)(peer.ip()) => {
                            (state.notice)(&format!(
                                "refused a connection from {peer}: only loopback peers may use the proxy; a host on \
                                 the network reaches 127.0.0.1 only with net.ipv4.conf.*.route_localnet=1, so turn \
                                 that off or firewall the port"
                            ));
                            continue;
                        }
                        Ok((io, _)) => io,
                        Err(_) => {
                            // Out of file descriptors or similar: wait a little rather than spin.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = connections.clone().try_acquire_owned() else { continue };
                    let state = state.clone();
                    let mut stop = stop_rx.clone();
                    tasks.spawn(async move {
                        let _permit = permit;
                        let idle = state.limits.idle_timeout;
                        let max_buf = state.limits.max_header_bytes.max(8192);
                        let service = service_fn(move |request| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(handle(&state, request).await) }
                        });
                        let mut builder = http1::Builder::new();
                        builder
                            .timer(TokioTimer::new())
                            .header_read_timeout(idle)
                            .max_buf_size(max_buf)
                            .keep_alive(true);
                        let connection = builder.serve_connection(TokioIo::new(io), service);
                        tokio::pin!(connection);
                        tokio::select! {
                            _ = connection.as_mut() => {}
                            _ = stop.changed() => {
                                connection.as_mut().graceful_shutdown();
                                let _ = connection.await;
                            }
                        }
                    });
                }
            }
        }
        let _ = stop_tx.send(true);
        let _ =
            tokio::time::timeout(Duration::from_secs(10), async { while tasks.join_next().await.is_some() {} }).await;
        tasks.abort_all();
        if let Listener::Unix(_, path) = &listener {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }
}

fn text(status: u16, message: &str) -> Response<reqwest::Body> {
    let mut response = Response::new(reqwest::Body::from(format!("att-token proxy: {message}\n")));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The proxy's own answer to `OPTIONS`: 204 with the methods it forwards, and no CORS header.
fn options() -> Response<reqwest::Body> {
    let mut response = Response::new(reqwest::Body::from(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(target::ALLOWED_METHODS));
    response
}

async fn handle(state: &State, request: Request<Incoming>) -> Response<reqwest::Body> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let (response, note) = respond(state, request).await;
    (state.log)(&RequestLog { method, path, status: response.status().as_u16(), duration: started.elapsed(), note });
    response
}

/// A request body: held (and so retryable) or streamed.
enum Held {
    Bytes(Bytes),
    Streamed(Incoming),
}

async fn respond(state: &State, request: Request<Incoming>) -> (Response<reqwest::Body>, Option<String>) {
    match target::check(request.method(), request.uri(), request.headers(), &state.hosts) {
        Ok(Verdict::Forward) => {}
        Ok(Verdict::Options) => return (options(), Some("answered here: OPTIONS is never forwarded".into())),
        Err(refusal) => {
            let note = format!("refused: {}", refusal.message.split(':').next().unwrap_or("refused"));
            return (text(refusal.status, &refusal.message), Some(note));
        }
    }
    let (mut parts, body) = request.into_parts();
    let url = match state.upstream.url_for(&parts.uri) {
        Ok(url) => url,
        Err(refusal) => return (text(refusal.status, &refusal.message), Some("refused: path outside the API".into())),
    };
    // A body the proxy holds is read before a slot is taken, within a deadline: a client that announces a body
    // and sends nothing holds a connection, never a slot.
    let body = match read_body(state, body).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        let message = format!("too many requests at once (at most {}); retry shortly", state.limits.max_in_flight);
        return (text(503, &message), Some("refused: too many in flight".into()));
    };
    let token = match state.cache.get().await {
        Ok(token) => token,
        Err(error) => return (text(error.status(), error.message()), Some("no token".into())),
    };
    target::strip_request_headers(&mut parts.headers);
    let held = match &body {
        Held::Bytes(bytes) => Some(bytes.clone()),
        Held::Streamed(_) => None,
    };
    // A streamed body that pauses longer than the body timeout ends the request, and so frees its slot.
    let stalled = Arc::new(AtomicBool::new(false));
    let first_body = match body {
        Held::Bytes(bytes) => reqwest::Body::from(bytes),
        Held::Streamed(incoming) => reqwest::Body::wrap(IdleBody::new(incoming, state.limits.body_timeout, &stalled)),
    };
    let Some(authorization) = bearer(&token) else { return (text(502, BAD_TOKEN), Some("bad token".into())) };
    let first = send(state, &parts.method, url.clone(), &parts.headers, first_body, authorization).await;
    if first.is_err() && stalled.load(Ordering::SeqCst) {
        return body_too_slow(state, "paused for more than");
    }
    match first {
        Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
            let Some(bytes) = held else {
                return (relay(response), Some("401 from the API; body streamed, not retried".into()));
            };
            match state.cache.after_unauthorized(&token).await {
                Ok(Some(fresh)) => {
                    let Some(authorization) = bearer(&fresh) else {
                        return (text(502, BAD_TOKEN), Some("bad token".into()));
                    };
                    let body = reqwest::Body::from(bytes);
                    match send(state, &parts.method, url, &parts.headers, body, authorization).await {
                        Ok(response) => (relay(response), Some("retried after 401 with a fresh token".into())),
                        Err(error) => upstream_failed(state, &error),
                    }
                }
                Ok(None) => (relay(response), Some("401 from the API; the daemon serves no newer token".into())),
                Err(error) => (text(error.status(), error.message()), Some("no token after a 401".into())),
            }
        }
        Ok(response) => (relay(response), None),
        Err(error) => upstream_failed(state, &error),
    }
}

/// Holds a body of known length up to [`Limits::retry_body_bytes`] (all of it, within
/// [`Limits::body_timeout`]), or leaves a larger one, or one of unknown length, to be streamed.
async fn read_body(state: &State, body: Incoming) -> Result<Held, (Response<reqwest::Body>, Option<String>)> {
    let limit = state.limits.retry_body_bytes;
    let small = body.is_end_stream() || body.size_hint().exact().is_some_and(|n| n <= limit as u64);
    if !small {
        return Ok(Held::Streamed(body));
    }
    match tokio::time::timeout(state.limits.body_timeout, http_body_util::Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(Held::Bytes(collected.to_bytes())),
        Ok(Err(_)) => Err((text(400, "the request body could not be read"), Some("bad body".into()))),
        Err(_) => Err(body_too_slow(state, "did not arrive within")),
    }
}

/// 408 for a body that did not come in time; the connection is closed, since the rest of the body may still
/// come.
fn body_too_slow(state: &State, what: &str) -> (Response<reqwest::Body>, Option<String>) {
    let message = format!(
        "the request body {what} {} s; send the whole body right after the request head, then retry",
        state.limits.body_timeout.as_secs_f64()
    );
    let mut response = text(408, &message);
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    (response, Some("request body too slow".into()))
}

/// A streamed request body that fails once the client sends nothing for `idle` (counted from the first time it
/// is asked for data, then from each frame), and says so in `stalled`.
struct IdleBody {
    inner: Incoming,
    idle: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    stalled: Arc<AtomicBool>,
}

impl IdleBody {
    fn new(inner: Incoming, idle: Duration, stalled: &Arc<AtomicBool>) -> Self {
        IdleBody { inner, idle, deadline: None, stalled: stalled.clone() }
    }
}

/// The error an [`IdleBody`] ends with.
#[derive(Debug)]
struct BodyStalled;

impl fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the client stopped sending the request body")
    }
}

impl std::error::Error for BodyStalled {}

impl hyper::body::Body for IdleBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.deadline = None;
            return Poll::Ready(frame.map(|result| result.map_err(Into::into)));
        }
        let idle = this.idle;
        let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if deadline.as_mut().poll(cx).is_ready() {
            this.stalled.store(true, Ordering::SeqCst);
            return Poll::Ready(Some(Err(Box::new(BodyStalled))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn upstream_failed(state: &State, error: &reqwest::Error) -> (Response<reqwest::Body>, Option<String>) {
    if error.is_timeout() {
        let message = format!(
            "the API did not answer within {} s; retry, or give the proxy a longer --timeout",
            state.limits.upstream_timeout.as_secs()
        );
        return (text(504, &message), Some("upstream timeout".into()));
    }
    let mut message = format!("the API at {} could not be reached", state.upstream.base());
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(cause) = source {
        if cause.source().is_none() {
            message.push_str(&format!(": {cause}"));
        }
        source = cause.source();
    }
    message.push_str("; check the gateway's network and [api] url in att-tokend's config");
    (text(502, &message), Some("upstream unreachable".into()))
}

/// `Bearer <token>` as a header value marked sensitive; `None` when the token holds characters no header may.
fn bearer(token: &Zeroizing<String>) -> Option<HeaderValue> {
    let text = Zeroizing::new(format!("Bearer {}", token.as_str()));
    let mut value = HeaderValue::from_str(&text).ok()?;
    value.set_sensitive(true);
    Some(value)
}

const BAD_TOKEN: &str = "the daemon's token has characters not allowed in an HTTP header; check the device \
                         or ground token's token_file or credential in att-tokend's config";

async fn send(
    state: &State,
    method: &Method,
    url: url::Url,
    headers: &HeaderMap,
    body: reqwest::Body,
    authorization: HeaderValue,
) -> Result<reqwest::Response, reqwest::Error> {
    state
        .client
        .request(method.clone(), url)
        .headers(headers.clone())
        .header(header::AUTHORIZATION, authorization)
        .body(body)
        .send()
        .await
}

fn relay(response: reqwest::Response) -> Response<reqwest::Body> {
    let status = response.status();
    let mut headers = response.headers().clone();
    target::strip_response_headers(&mut headers);
    let mut out = Response::new(reqwest::Body::from(response));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::cache::{Fetched, SourceError, TokenSource};

    struct NoToken;

    #[async_trait::async_trait]
    impl TokenSource for NoToken {
        async fn fetch(&self) -> Result<Fetched, SourceError> {
            Err(SourceError::NotServed("no token in this test".into()))
        }
    }

    /// A proxy on 127.0.0.1 with `rule` deciding its peers, its notices, and what stops it.
    async fn serve(
        rule: Option<fn(IpAddr) -> bool>,
    ) -> (SocketAddr, Arc<Mutex<Vec<String>>>, tokio::sync::oneshot::Sender<()>) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cache = Arc::new(TokenCache::new(Arc::new(NoToken)));
        let upstream = Upstream::parse("http://127.0.0.1:9").unwrap();
        let listen = "127.0.0.1:0".parse().unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut proxy = Proxy::bind(&listen, upstream, cache, Limits::default(), 0o600, tls).await.unwrap();
        if let Some(rule) = rule {
            proxy = proxy.with_peer_rule(rule);
        }
        let Listen::Tcp(address) = proxy.local().clone() else { panic!("a TCP address") };
        let notices = Arc::new(Mutex::new(Vec::new()));
        let sink = notices.clone();
        let proxy = proxy.on_notice(move |line| sink.lock().unwrap().push(line.to_owned()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(proxy.run(async {
            let _ = stopped.await;
        }));
        (address, notices, stop)
    }

    /// Sends `OPTIONS *` from `source` and returns whatever comes back before the connection closes.
    async fn options_from(source: Ipv4Addr, address: SocketAddr) -> String {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source.into(), 0)).unwrap();
        let mut stream = socket.connect(address).await.unwrap();
        let request = format!("OPTIONS * HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        // A refused peer may find the connection closed before it writes.
        let _ = stream.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the proxy neither answered nor closed the connection");
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_accepted_connection_is_checked_against_the_peer_rule() {
        // 127.0.0.2 stands for a LAN host: this rule lets 127.0.0.1 alone in.
        let (address, notices, stop) = serve(Some(|ip| ip == IpAddr::V4(Ipv4Addr::LOCALHOST))).await;
        let refused = options_from(Ipv4Addr::new(127, 0, 0, 2), address).await;
        assert_eq!(refused, "", "a refused peer's connection is closed without an answer");
        let served = options_from(Ipv4Addr::LOCALHOST, address).await;
        assert!(served.starts_with("HTTP/1.1 204 "), "{served}");
        let notices = notices.lock().unwrap().clone();
        assert_eq!(notices.len(), 1, "one line per refused connection: {notices:?}");
        assert!(notices[0].contains("127.0.0.2") && notices[0].contains("route_localnet"), "{notices:?}");
        let _ = stop.send(());

        // The shipped rule serves every loopback peer.
        let (address, notices, stop) = serve(None).await;
        let served = options_from(Ipv4Addr::new(127, 0, 0, 2), address).await;
        assert!(served.starts_with("HTTP/1.1 204 "), "{served}");
        assert!(notices.lock().unwrap().is_empty());
        let _ = stop.send(());
    }
}
