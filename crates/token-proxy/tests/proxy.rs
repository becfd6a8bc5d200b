//! The proxy over real loopback HTTP against the fake cloud, with a scripted token source: a 401 brings one
//! retry with a fresh token, a client's own Authorization never reaches the cloud, and refusals are what the
//! docs say.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fake_cloud::{FakeCloud, FakeConfig};
use token_proxy::{Fetched, Limits, Listen, Proxy, SourceError, TokenCache, TokenSource, Upstream};
use zeroize::Zeroizing;

const DEVICE: &str = "ProxyDevice0000000000001";
const OLD: &str = "maker:4ProxyOldDeviceToken";
const NEW: &str = "maker:4ProxyNewDeviceToken";
const OTHER_DEVICE: &str = "ProxyDevice0000000000002";
const OTHER: &str = "maker:4ProxyOtherDeviceToken";

/// Hands out the tokens in order, the last one forever, and counts the fetches.
struct Script {
    tokens: Mutex<Vec<Result<&'static str, SourceError>>>,
    fetches: AtomicUsize,
}

#[async_trait::async_trait]
impl TokenSource for Script {
    async fn fetch(&self) -> Result<Fetched, SourceError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let mut tokens = self.tokens.lock().unwrap();
        let next = if tokens.len() > 1 { tokens.remove(0) } else { tokens[0].clone() };
        next.map(|token| Fetched { token: Zeroizing::new(token.to_owned()), expires_at: 0 })
    }
}

struct Running {
    address: std::net::SocketAddr,
    script: Arc<Script>,
    logs: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(cloud: &FakeCloud, tokens: Vec<Result<&'static str, SourceError>>) -> Running {
    start_at(&cloud.url(), tokens, Limits::default()).await
}

/// A proxy on 127.0.0.1 that forwards to `api_url` with `limits`.
async fn start_at(api_url: &str, tokens: Vec<Result<&'static str, SourceError>>, limits: Limits) -> Running {
    let script = Arc::new(Script { tokens: Mutex::new(tokens), fetches: AtomicUsize::new(0) });
    let cache = Arc::new(TokenCache::new(script.clone()));
    let upstream = Upstream::parse(api_url).unwrap();
    // The API is plain HTTP on loopback here: a configuration that trusts no root will do.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let proxy = Proxy::bind(&"127.0.0.1:0".parse().unwrap(), upstream, cache, limits, 0o600, tls).await.unwrap();
    let Listen::Tcp(address) = proxy.local().clone() else { panic!("a TCP address") };
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = logs.clone();
    let proxy = proxy.on_request(move |line| sink.lock().unwrap().push(line.to_string()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(proxy.run(async {
        let _ = stopped.await;
    }));
    Running { address, script, logs, stop: Some(stop), task }
}

/// Sends raw request bytes and returns the status and the whole response text.
async fn raw(address: std::net::SocketAddr, request: String) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, text)
    })
    .await
    .unwrap()
}

fn get(address: std::net::SocketAddr, path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{extra}Connection: close\r\n\r\n")
}

/// An API stand-in on loopback that records the head of every request it gets and answers each with `reply`
/// (then closes), or, with `None`, reads whatever comes and never answers.
struct Canned {
    url: String,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Canned {
    async fn start(reply: Option<&'static str>) -> Canned {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let mut recorded = false;
                    loop {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                        if recorded {
                            continue;
                        }
                        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        seen.lock().unwrap().push(String::from_utf8_lossy(&buffer[..end]).into_owned());
                        recorded = true;
                        if let Some(reply) = reply {
                            let _ = stream.write_all(reply.as_bytes()).await;
                            let _ = stream.shutdown().await;
                            return;
                        }
                    }
                });
            }
        });
        Canned { url, heads }
    }

    /// The request lines it got, e.g. `GET /api/v1/me HTTP/1.1`.
    fn request_lines(&self) -> Vec<String> {
        self.heads.lock().unwrap().iter().map(|head| head.lines().next().unwrap_or("").to_owned()).collect()
    }
}

/// What an API that allows any web page (CORS) would answer.
const CORS_REPLY: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                          Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Credentials: true\r\n\
                          Access-Control-Allow-Headers: authorization\r\nAccess-Control-Allow-Methods: GET\r\n\
                          Access-Control-Expose-Headers: x-total\r\nAccess-Control-Max-Age: 600\r\n\
                          X-Total: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";

async fn cloud() -> FakeCloud {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cloud = FakeCloud::start(FakeConfig::default()).await;
    for (token, device) in [(OLD, DEVICE), (NEW, DEVICE), (OTHER, OTHER_DEVICE)] {
        cloud.control().add_device_token(token, device);
    }
    cloud
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_brings_one_retry_with_a_fresh_token() {
    let cloud = cloud().await;
    let mut proxy = start(&cloud, vec![Ok(OLD), Ok(NEW)]).await;
    let (status, _) = raw(proxy.address, get(proxy.address, &format!("/device/{DEVICE}"), "")).await;
    assert_eq!(status, 200, "the first token works");
    assert!(cloud.control().revoke(OLD));
    let (status, text) = raw(proxy.address, get(proxy.address, &format!("/device/{DEVICE}"), "")).await;
    assert_eq!(status, 200, "after the 401 the proxy fetched the new token and retried: {text}");
    assert_eq!(proxy.script.fetches.load(Ordering::SeqCst), 2, "one fetch for the retry");
    assert!(proxy.logs.lock().unwrap().iter().any(|l| l.contains("retried after 401")), "{:?}", proxy.logs);

    // The source still serves the new token; once the cloud refuses it too, the 401 goes back as it is.
    assert!(cloud.control().revoke(NEW));
    let (status, text) = raw(proxy.address, get(proxy.address, &format!("/device/{DEVICE}"), "")).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("Authorization has been denied"), "the cloud's own answer: {text}");
    let _ = proxy.stop.take().unwrap().send(());
    proxy.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_authorization_is_replaced_and_open_proxy_requests_are_refused() {
    let cloud = cloud().await;
    let mut proxy = start(&cloud, vec![Ok(OLD)]).await;
    // The client's own (valid, other device's) token is dropped: with it the cloud would answer 403.
    let header = format!("Authorization: Bearer {OTHER}\r\nProxy-Authorization: Bearer {OTHER}\r\n");
    let (status, text) = raw(proxy.address, get(proxy.address, &format!("/device/{DEVICE}"), &header)).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = raw(proxy.address, get(proxy.address, &format!("/device/{OTHER_DEVICE}"), &header)).await;
    assert_eq!(status, 403, "the proxy's token, not the client's, reached the cloud: {text}");

    let absolute =
        format!("GET {}/device/{DEVICE} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", cloud.url(), proxy.address);
    let (status, text) = raw(proxy.address, absolute).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("not an open proxy"), "{text}");
    let connect = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n".to_owned();
    let (status, text) = raw(proxy.address, connect).await;
    assert_eq!(status, 405, "{text}");
    let foreign = format!(
        "GET /device/{DEVICE} HTTP/1.1\r\nHost: rebind.example:{}\r\nConnection: close\r\n\r\n",
        proxy.address.port()
    );
    let (status, text) = raw(proxy.address, foreign).await;
    assert_eq!(status, 421, "{text}");
    assert!(text.contains("Host header"), "{text}");
    let huge = format!("X-Big: {}\r\n", "a".repeat(64 * 1024));
    let (status, _) = raw(proxy.address, get(proxy.address, "/me/grounds", &huge)).await;
    assert_eq!(status, 431, "an oversized head is refused");
    let logs = proxy.logs.lock().unwrap().join("\n");
    assert!(!logs.contains(OLD) && !logs.contains(OTHER), "no token in the log: {logs}");
    let _ = proxy.stop.take().unwrap().send(());
    proxy.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_client_gets_the_sources_reason() {
    let cloud = cloud().await;
    let denied = SourceError::Denied("you may not read the token main; ask an admin".into());
    let proxy = start(&cloud, vec![Err(denied)]).await;
    let (status, text) = raw(proxy.address, get(proxy.address, "/me/grounds", "")).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("you may not read the token main"), "{text}");
    let gone = start(&cloud, vec![Err(SourceError::Unreachable("att-tokend cannot be reached".into()))]).await;
    let (status, text) = raw(gone.address, get(gone.address, "/me/grounds", "")).await;
    assert_eq!(status, 502, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_in_a_browser_cannot_use_the_token() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = Canned::start(Some(CORS_REPLY)).await;
    let mut proxy = start_at(&api.url, vec![Ok(OLD)], Limits::default()).await;
    let address = proxy.address;

    // A page's fetch() carries Origin; a navigation or form post from another site carries Sec-Fetch-Site.
    for (extra, why) in [
        ("Origin: http://attacker.example\r\n", "Origin"),
        ("Origin: null\r\n", "Origin"),
        ("Sec-Fetch-Site: cross-site\r\n", "Sec-Fetch-Site"),
        ("Sec-Fetch-Site: same-site\r\n", "Sec-Fetch-Site"),
        ("Sec-Fetch-Site: whatever\r\n", "Sec-Fetch-Site"),
    ] {
        let (status, text) = raw(address, get(address, "/me", extra)).await;
        assert_eq!(status, 403, "{extra:?} is refused: {text}");
        assert!(text.contains(why) && text.contains("browser"), "says why and what to do: {text}");
        assert_eq!(text.trim_end().lines().last().map(|l| l.starts_with("att-token proxy: ")), Some(true), "{text}");
    }
    // A CORS preflight (it always has Origin) is refused, and never forwarded.
    let preflight = format!(
        "OPTIONS /me HTTP/1.1\r\nHost: {address}\r\nOrigin: http://attacker.example\r\n\
         Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: x-a\r\nConnection: close\r\n\r\n"
    );
    let (status, text) = raw(address, preflight).await;
    assert_eq!(status, 403, "a preflight is refused: {text}");
    assert!(!text.to_ascii_lowercase().contains("access-control-"), "no CORS header: {text}");
    // OPTIONS without Origin is answered by the proxy itself.
    let options = format!("OPTIONS /me HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let (status, text) = raw(address, options).await;
    assert_eq!(status, 204, "{text}");
    assert!(text.contains("\r\nallow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n"), "{text}");
    assert!(api.request_lines().is_empty(), "nothing was forwarded: {:?}", api.request_lines());

    // A request the user typed in the address bar (Sec-Fetch-Site: none) or an app's passes; the reply loses
    // every CORS header, so no page could read it even if a request got through.
    for extra in ["Sec-Fetch-Site: none\r\n", "Sec-Fetch-Site: same-origin\r\n", ""] {
        let (status, text) = raw(address, get(address, "/me", extra)).await;
        assert_eq!(status, 200, "{extra:?}: {text}");
        assert!(!text.to_ascii_lowercase().contains("access-control-"), "CORS headers stripped: {text}");
        assert!(text.to_ascii_lowercase().contains("x-total: 1"), "other headers pass: {text}");
    }
    assert_eq!(api.request_lines(), ["GET /me HTTP/1.1"; 3], "only the three were forwarded");
    let logs = proxy.logs.lock().unwrap().join("\n");
    assert!(logs.contains("GET /me 403") && logs.contains("OPTIONS /me 204"), "{logs}");
    let _ = proxy.stop.take().unwrap().send(());
    proxy.task.await.unwrap().unwrap();
}

/// How long a test waits for an answer that must come; far longer than any deadline the proxy is given.
const PATIENCE: Duration = Duration::from_secs(60);

/// Reads from `stream` until `done` says the text is complete, the peer closes, or [`PATIENCE`] runs out.
async fn read_until(stream: &mut tokio::net::TcpStream, done: impl Fn(&str) -> bool) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let _ = tokio::time::timeout(PATIENCE, async {
        while !done(&String::from_utf8_lossy(&bytes)) {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Opens a connection, sends `head` (with a body announced and not sent) and `partial`, and returns it with the
/// proxy's first answer: `100 Continue` once it reads the body, when the head asked for it.
async fn stall(address: std::net::SocketAddr, head: &str, partial: &str) -> (tokio::net::TcpStream, String) {
    use tokio::io::AsyncWriteExt as _;
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(partial.as_bytes()).await.unwrap();
    let first = if head.contains("Expect: 100-continue") {
        read_until(&mut stream, |t| t.contains("\r\n\r\n")).await
    } else {
        String::new()
    };
    (stream, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_hold_no_slot_and_get_408() {
    let cloud = cloud().await;
    let limits = Limits { max_in_flight: 2, body_timeout: Duration::from_secs(3), ..Limits::default() };
    let mut proxy = start_at(&cloud.url(), vec![Ok(OLD)], limits).await;
    let address = proxy.address;
    // Twice as many as may be in flight announce a 10-byte body and send none; each waits until the proxy reads.
    let head = format!(
        "POST /device/{DEVICE} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: 10\r\nExpect: 100-continue\r\n\r\n"
    );
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stall(address, &head, "").await);
    }
    let told: Vec<String> = stalled.iter().map(|(_, first)| first.lines().next().unwrap_or("").to_owned()).collect();

    let started = Instant::now();
    let (status, text) = raw(address, get(address, &format!("/device/{DEVICE}"), "")).await;
    let waited = started.elapsed();
    println!(
        "a normal request while 4 connections stall their bodies (max_in_flight 2): {status} after {:.1} ms",
        waited.as_secs_f64() * 1000.0
    );
    assert_eq!(status, 200, "a normal client is served while bodies stall: {text}\nthe stalled were told {told:?}");
    for line in &told {
        assert_eq!(line, "HTTP/1.1 100 Continue", "the proxy was reading every stalled body: {told:?}");
    }
    for (mut stream, _) in stalled {
        let answer = read_until(&mut stream, |_| false).await;
        assert!(answer.contains("HTTP/1.1 408 "), "a stalled body gets 408: {answer:?}");
        assert!(answer.contains("within 3 s"), "says how long it waited and what to do: {answer}");
    }
    let logs = proxy.logs.lock().unwrap().join("\n");
    assert_eq!(logs.matches(" 408 ").count(), 4, "{logs}");
    let _ = proxy.stop.take().unwrap().send(());
    proxy.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_streamed_body_gets_408_and_frees_its_slot() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // An API that reads whatever comes and never answers: only the proxy's own deadlines end a request.
    let api = Canned::start(None).await;
    let limits = Limits {
        max_in_flight: 1,
        body_timeout: Duration::from_secs(1),
        upstream_timeout: Duration::from_secs(20),
        ..Limits::default()
    };
    let mut proxy = start_at(&api.url, vec![Ok(OLD)], limits).await;
    let address = proxy.address;
    // Bodies the proxy streams: of unknown length, and longer than it holds. Each sends a little and stalls; the
    // second can only be forwarded once the first let go of the one slot.
    for (framing, partial) in [("Transfer-Encoding: chunked", "5\r\nhello\r\n"), ("Content-Length: 100000", "hello")] {
        let head = format!("POST /upload HTTP/1.1\r\nHost: {address}\r\n{framing}\r\n\r\n");
        let (mut stream, _) = stall(address, &head, partial).await;
        let started = Instant::now();
        let answer = read_until(&mut stream, |_| false).await;
        println!("{framing}: answered after {:.1} s", started.elapsed().as_secs_f64());
        assert!(answer.contains("HTTP/1.1 408 "), "{framing}: a stalled stream gets 408: {answer:?}");
        assert!(answer.contains("1 s"), "{framing}: says how long it waited and what to do: {answer}");
    }
    assert_eq!(api.request_lines(), ["POST /upload HTTP/1.1"; 2], "both were streamed to the API");
    let _ = proxy.stop.take().unwrap().send(());
    proxy.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_never_leaves_the_api_base_path() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = Canned::start(Some("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")).await;
    let mut proxy = start_at(&format!("{}/api/v1", api.url), vec![Ok(OLD)], Limits::default()).await;
    let address = proxy.address;
    for path in ["/x\\..\\..\\secret", "/x%5c..%5c..%5csecret", "/x%5C..%5C..%5Csecret"] {
        let (status, text) = raw(address, get(address, path, "")).await;
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains("backslash"), "{path}: says why: {text}");
    }
    let (status, text) = raw(address, get(address, "/me", "")).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(api.request_lines(), ["GET /api/v1/me HTTP/1.1"], "only the request under the base path went out");
    let _ = proxy.stop.take().unwrap().send(());
    proxy.task.await.unwrap().unwrap();
}
