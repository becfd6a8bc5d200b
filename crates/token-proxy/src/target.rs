//! The pure half of forwarding: which requests are accepted, where they go, and which headers pass.

use std::fmt;

use hyper::header::{self, HeaderMap, HeaderName};
use hyper::{Method, Uri};
use url::Url;

/// The one API base URL every request goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    base: Url,
}

/// An API base URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError(String);

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UpstreamError {}

impl Upstream {
    /// Parses an `http` or `https` base URL without query, fragment or credentials.
    pub fn parse(text: &str) -> Result<Upstream, UpstreamError> {
        let base = Url::parse(text).map_err(|e| UpstreamError(format!("the API URL {text:?} is not a URL ({e})")))?;
        let usable = matches!(base.scheme(), "http" | "https")
            && base.host().is_some()
            && base.query().is_none()
            && base.fragment().is_none()
            && base.username().is_empty()
            && base.password().is_none();
        if !usable {
            return Err(UpstreamError(format!(
                "the API URL {text:?} is not a base URL like https://api.allthingstalk.io; check [api] url in \
                 att-tokend's config"
            )));
        }
        Ok(Upstream { base })
    }

    /// The base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The upstream URL for an accepted origin-form target: the base URL's path, then the target's path and
    /// query.
    /// The result is refused (400) unless it is still under the base URL's path, on the same scheme, host and
    /// port: the URL parser reads `\\` as `/` and resolves dot segments, whatever [`check`] let through.
    pub(crate) fn url_for(&self, target: &Uri) -> Result<Url, Refusal> {
        let mut url = self.base.clone();
        let base_path = self.base.path().trim_end_matches('/');
        url.set_path(&format!("{base_path}{}", target.path()));
        url.set_query(target.query());
        let under = url.path() == base_path || url.path().starts_with(&format!("{base_path}/"));
        let same_origin = url.scheme() == self.base.scheme()
            && url.host() == self.base.host()
            && url.port_or_known_default() == self.base.port_or_known_default();
        if !under || !same_origin {
            return Err(refuse(
                400,
                format!(
                    "the path leaves the API's base path {}; send a path under it, like /me/grounds",
                    self.base.path()
                ),
            ));
        }
        Ok(url)
    }

    /// Whether requests go to a loopback host (plain http is then fine and no system proxy applies).
    pub(crate) fn is_loopback(&self) -> bool {
        match self.base.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        }
    }
}

/// Why a request is refused before anything is forwarded: the status and a text for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) message: String,
}

fn refuse(status: u16, message: impl Into<String>) -> Refusal {
    Refusal { status, message: message.into() }
}

/// What `Host` values a request may carry: the proxy's own names.
#[derive(Debug, Clone)]
pub(crate) enum HostRule {
    /// Listening on TCP: `localhost` or the address itself, with the port (or none when it is 80).
    Loopback { ip_text: String, port: u16 },
    /// Listening on a unix socket: a browser cannot reach one, so any `Host` is accepted.
    Any,
}

impl HostRule {
    fn allows(&self, host: &str) -> bool {
        match self {
            HostRule::Any => true,
            HostRule::Loopback { ip_text, port } => {
                let host = host.to_ascii_lowercase();
                let (name, given_port) = match host.rsplit_once(':') {
                    Some((name, p)) if !name.is_empty() && !p.contains(']') => (name.to_owned(), p.parse::<u16>().ok()),
                    _ => (host.clone(), Some(80)),
                };
                let Some(given_port) = given_port else { return false };
                (name == "localhost" || name == *ip_text) && given_port == *port
            }
        }
    }
}

/// What to do with a request that passed [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Forward it to the API.
    Forward,
    /// Answer it here: `OPTIONS`, which the API is never asked (a browser's CORS preflight is one, and carries
    /// `Origin`, so it never gets this far).
    Options,
}

/// The methods the proxy forwards, as its own `OPTIONS` answer lists them.
pub(crate) const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Checks a request before it is forwarded: no `CONNECT`, origin-form only, nothing a browser sends for a web
/// page, a `Host` that is the proxy's own, a path that stays under the API's base path; `OPTIONS` is answered
/// here.
pub(crate) fn check(method: &Method, uri: &Uri, headers: &HeaderMap, hosts: &HostRule) -> Result<Verdict, Refusal> {
    if method == Method::CONNECT {
        return Err(refuse(405, "CONNECT is refused: this proxy only forwards requests to the AllThingsTalk API"));
    }
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(refuse(
            400,
            "absolute-form targets are refused: this is not an open proxy; send the path alone, like \
             GET /me/grounds, and the proxy forwards it to the configured API",
        ));
    }
    check_not_a_web_page(headers)?;
    let hosts_given: Vec<_> = headers.get_all(header::HOST).iter().collect();
    match hosts_given.as_slice() {
        [] => {}
        [host] => {
            let allowed = host.to_str().is_ok_and(|h| hosts.allows(h));
            if !allowed {
                return Err(refuse(
                    421,
                    "the Host header names another host: this proxy answers only to its own loopback address \
                     (localhost or the address it listens on)",
                ));
            }
        }
        _ => return Err(refuse(400, "more than one Host header")),
    }
    if method == Method::OPTIONS && uri.path() == "*" {
        return Ok(Verdict::Options);
    }
    let path = uri.path();
    if !path.starts_with('/') {
        return Err(refuse(400, "the request target must be a path starting with /"));
    }
    let lower = path.to_ascii_lowercase();
    if path.contains('\\') || lower.contains("%5c") {
        return Err(refuse(
            400,
            "paths with a backslash (\\ or %5C) are refused: the API could read it as / and leave its base path; \
             write the path with / alone, like /me/grounds",
        ));
    }
    let dot_segment = lower.split('/').any(|segment| {
        let segment = segment.replace("%2e", ".");
        segment == "." || segment == ".."
    });
    if dot_segment || lower.contains("%2f") {
        return Err(refuse(
            400,
            "paths with . or .. segments or encoded slashes (%2F) are refused: they could leave the API's base \
             path; send the path as the API names it, like /me/grounds",
        ));
    }
    if method == Method::OPTIONS {
        return Ok(Verdict::Options);
    }
    Ok(Verdict::Forward)
}

/// Refuses what only a browser sends on behalf of a web page: any `Origin` (every cross-origin `fetch()`, every
/// CORS preflight, every form post) and a `Sec-Fetch-Site` other than `none` (typed in the address bar) or
/// `same-origin`. A web page on any site must never get a request sent with the token.
fn check_not_a_web_page(headers: &HeaderMap) -> Result<(), Refusal> {
    if headers.contains_key(header::ORIGIN) {
        return Err(refuse(
            403,
            "requests with an Origin header are refused: a web page in a browser must never use the proxy's \
             token; send the request from an app or script, which sends no Origin",
        ));
    }
    let same_site =
        headers.get_all(SEC_FETCH_SITE).iter().all(|value| matches!(value.as_bytes(), b"none" | b"same-origin"));
    if !same_site {
        return Err(refuse(
            403,
            "requests a browser sends for another site are refused (Sec-Fetch-Site other than none or \
             same-origin): a web page must never use the proxy's token; send the request from an app or script",
        ));
    }
    Ok(())
}

/// The fetch-metadata header browsers add to every request they send (not in `http`'s list of names).
const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// Headers that describe one connection, never forwarded (RFC 9110, section 7.6.1), and the credentials the proxy
/// replaces.
const DROPPED: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
    header::AUTHORIZATION,
    header::CONTENT_LENGTH,
];

/// Removes hop-by-hop headers (also those `Connection` names), `Host`, `Content-Length` (set again from the body)
/// and any `Authorization` or `Proxy-Authorization`.
pub(crate) fn strip_request_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    for name in DROPPED {
        headers.remove(name);
    }
}

/// Removes hop-by-hop headers from a response, and every CORS header (`Access-Control-*`: the `Allow-*` ones,
/// `Expose-Headers`, `Max-Age`), so that no browser ever lets a web page read a reply.
pub(crate) fn strip_response_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    for name in [header::CONNECTION, header::TE, header::TRAILER, header::TRANSFER_ENCODING, header::UPGRADE] {
        headers.remove(name);
    }
    let cors: Vec<HeaderName> =
        headers.keys().filter(|name| name.as_str().starts_with("access-control-")).cloned().collect();
    for name in cors {
        headers.remove(name);
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim).map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn rule() -> HostRule {
        HostRule::Loopback { ip_text: "127.0.0.1".into(), port: 8099 }
    }

    fn with_host(host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        headers
    }

    fn status(method: &str, target: &str, host: &str) -> Option<u16> {
        status_with(method, target, &with_host(host))
    }

    fn status_with(method: &str, target: &str, headers: &HeaderMap) -> Option<u16> {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let uri: Uri = target.parse().unwrap();
        check(&method, &uri, headers, &rule()).err().map(|r| r.status)
    }

    /// `Host: 127.0.0.1:8099` and the given headers.
    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = with_host("127.0.0.1:8099");
        for (name, value) in pairs {
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn origin_form_requests_to_our_own_name_pass() {
        assert_eq!(status("GET", "/me/grounds", "127.0.0.1:8099"), None);
        assert_eq!(status("GET", "/me/grounds?x=1", "localhost:8099"), None);
        assert_eq!(status("POST", "/device/x", "LOCALHOST:8099"), None);
        let none = check(&Method::GET, &"/x".parse().unwrap(), &HeaderMap::new(), &rule());
        assert_eq!(none, Ok(Verdict::Forward), "HTTP/1.0 without Host");
    }

    #[test]
    fn what_an_open_proxy_would_do_is_refused() {
        assert_eq!(status("CONNECT", "example.com:443", "example.com:443"), Some(405));
        assert_eq!(status("GET", "http://example.com/me/grounds", "127.0.0.1:8099"), Some(400));
        assert_eq!(status("GET", "/me/grounds", "example.com"), Some(421));
        assert_eq!(status("GET", "/me/grounds", "127.0.0.1:8098"), Some(421), "another port");
        assert_eq!(status("GET", "/me/grounds", "127.0.0.1"), Some(421), "port 80 is not ours");
        assert_eq!(status("GET", "/me/grounds", "attacker.example:8099"), Some(421), "DNS rebinding");
        assert_eq!(status("GET", "/../login", "127.0.0.1:8099"), Some(400));
        assert_eq!(status("GET", "/a/%2E%2e/login", "127.0.0.1:8099"), Some(400));
        assert_eq!(status("GET", "/a%2Fb", "127.0.0.1:8099"), Some(400));
        let any = HostRule::Any;
        assert_eq!(check(&Method::GET, &"/x".parse().unwrap(), &with_host("whatever"), &any), Ok(Verdict::Forward));
    }

    #[test]
    fn a_path_that_could_leave_the_base_path_is_refused() {
        // The url crate reads \\ as / in http and https URLs, and some servers decode %5C to \\ and then read it so.
        for target in [
            "/x\\..\\..\\secret",
            "/x%5c..%5c..%5csecret",
            "/x%5C..%5C..%5Csecret",
            "/x\\secret",
            "/..\\secret",
            "/a/%5c",
            "/a/.%2E/b",
            "/a/%2e%2e%2fb",
            "/a/b/..",
        ] {
            let refusal = check(&Method::GET, &target.parse().unwrap(), &headers(&[]), &rule()).unwrap_err();
            assert_eq!(refusal.status, 400, "{target}");
            assert!(refusal.message.contains("; "), "{target}: says what to do: {}", refusal.message);
        }
        for target in ["/a%5", "/a%5Cb?q=\\"] {
            let refused = check(&Method::GET, &target.parse().unwrap(), &headers(&[]), &rule()).is_err();
            assert_eq!(refused, target.contains("%5C"), "{target}");
        }
        for target in ["/me/grounds", "/a.b/c..d/.e", "/a/b?q=%5c..%2f", "/%7e/x"] {
            assert_eq!(status("GET", target, "127.0.0.1:8099"), None, "{target}");
        }
    }

    #[test]
    fn the_joined_url_stays_under_the_base_path() {
        // url_for is the last word, whatever check let through.
        let nested = Upstream::parse("http://127.0.0.1:9/api/v1/").unwrap();
        let table: &[(&str, Option<&str>)] = &[
            ("/me", Some("http://127.0.0.1:9/api/v1/me")),
            ("/", Some("http://127.0.0.1:9/api/v1/")),
            ("/a/b?c=d", Some("http://127.0.0.1:9/api/v1/a/b?c=d")),
            ("//evil.example/x", Some("http://127.0.0.1:9/api/v1//evil.example/x")),
            ("/a\\b", Some("http://127.0.0.1:9/api/v1/a/b")),
            ("/x\\..\\..\\secret", None),
            ("/a/%2e%2e/%2e%2e/x", None),
            ("/..", None),
            ("/../v1x", None),
            ("/../v1/me", Some("http://127.0.0.1:9/api/v1/me")),
        ];
        for (target, expected) in table {
            let url = nested.url_for(&target.parse().unwrap());
            assert_eq!(url.as_ref().ok().map(Url::as_str), *expected, "{target}");
            if let Err(refusal) = url {
                assert_eq!(refusal.status, 400, "{target}");
                assert!(refusal.message.contains("/api/v1"), "{target}: names the base path: {}", refusal.message);
            }
        }
        let plain = Upstream::parse("https://api.allthingstalk.io").unwrap();
        assert_eq!(plain.url_for(&"/a/../../x".parse().unwrap()).unwrap().as_str(), "https://api.allthingstalk.io/x");
    }

    #[test]
    fn what_a_browser_sends_for_a_web_page_is_refused() {
        type Headers = &'static [(&'static str, &'static str)];
        let table: &[(Headers, Option<u16>)] = &[
            (&[("origin", "http://attacker.example")], Some(403)),
            (&[("origin", "null")], Some(403)),
            (&[("origin", "http://127.0.0.1:8099")], Some(403)),
            (&[("sec-fetch-site", "cross-site")], Some(403)),
            (&[("sec-fetch-site", "same-site")], Some(403)),
            (&[("sec-fetch-site", "")], Some(403)),
            (&[("sec-fetch-site", "none"), ("sec-fetch-site", "cross-site")], Some(403)),
            (&[("sec-fetch-site", "none")], None),
            (&[("sec-fetch-site", "same-origin")], None),
            (&[("sec-fetch-mode", "navigate")], None),
            (&[], None),
        ];
        for (pairs, expected) in table {
            for method in ["GET", "POST", "DELETE"] {
                assert_eq!(status_with(method, "/me", &headers(pairs)), *expected, "{method} with {pairs:?}");
            }
        }
        let refusal =
            check(&Method::GET, &"/me".parse().unwrap(), &headers(&[("origin", "http://a.example")]), &rule())
                .unwrap_err();
        assert!(refusal.message.contains("Origin") && refusal.message.contains("app"), "{}", refusal.message);
        // Over a unix socket too: the rule does not depend on how the request came in.
        let any = check(&Method::GET, &"/me".parse().unwrap(), &headers(&[("origin", "null")]), &HostRule::Any);
        assert_eq!(any.map_err(|r| r.status), Err(403));
    }

    #[test]
    fn options_is_answered_by_the_proxy_and_a_preflight_is_refused() {
        let options = |target: &str, pairs: &[(&str, &str)]| {
            check(&Method::OPTIONS, &target.parse().unwrap(), &headers(pairs), &rule()).map_err(|r| r.status)
        };
        assert_eq!(options("/me", &[]), Ok(Verdict::Options));
        assert_eq!(options("*", &[]), Ok(Verdict::Options));
        let preflight = [("origin", "http://a.example"), ("access-control-request-method", "DELETE")];
        assert_eq!(options("/me", &preflight), Err(403));
        assert_eq!(options("/me", &[("sec-fetch-site", "cross-site")]), Err(403));
        assert_eq!(options("http://example.com/", &[]), Err(400), "still origin-form only");
    }

    #[test]
    fn targets_join_the_base_path() {
        let plain = Upstream::parse("https://api.allthingstalk.io").unwrap();
        assert_eq!(
            plain.url_for(&"/me/grounds?a=1".parse().unwrap()).unwrap().as_str(),
            "https://api.allthingstalk.io/me/grounds?a=1"
        );
        let nested = Upstream::parse("http://127.0.0.1:9/api/v1/").unwrap();
        assert_eq!(nested.url_for(&"/me".parse().unwrap()).unwrap().as_str(), "http://127.0.0.1:9/api/v1/me");
        assert!(nested.is_loopback() && !plain.is_loopback());
        for bad in ["ftp://x", "https://u:p@x", "https://x/?q", "not a url"] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer client-own"),
            ("proxy-authorization", "Basic x"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("host", "127.0.0.1:8099"),
            ("accept", "application/json"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        strip_request_headers(&mut headers);
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept"]);
    }

    #[test]
    fn no_cors_header_leaves_the_proxy() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("access-control-allow-origin", "*"),
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-headers", "authorization"),
            ("access-control-allow-methods", "GET, POST"),
            ("access-control-allow-private-network", "true"),
            ("access-control-expose-headers", "x-total"),
            ("access-control-max-age", "600"),
            ("content-type", "application/json"),
            ("x-total", "1"),
            ("vary", "Origin"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        strip_response_headers(&mut headers);
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "vary", "x-total"]);
    }
}
