//! The fake cloud as a child process, and its control API.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::{PATIENCE, Proc};

/// `att-fake-cloud` listening on loopback, stopped on drop.
#[derive(Debug)]
pub struct Fake {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The process.
    pub proc: Proc,
}

impl Fake {
    /// Starts `program` (an `att-fake-cloud`) with `args` (`att-fake-cloud --help` lists them), its output
    /// captured in `dir`, and waits for its `listening on URL` line.
    pub fn start(program: &Path, dir: &Path, args: &[String]) -> anyhow::Result<Fake> {
        let mut command = Command::new(program);
        command.args(args);
        let (proc, line) = Proc::spawn_first_line("att-fake-cloud", command, dir, PATIENCE)?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("att-fake-cloud printed {line:?} instead of `listening on URL`"))?
            .to_owned();
        Ok(Fake { url, proc })
    }

    /// Its control API.
    pub fn api(&self) -> FakeControl {
        FakeControl::new(&self.url)
    }
}

/// The control API (`/_control/…`) of a fake cloud at a base URL: its clock, counters, faults, revocation.
#[derive(Debug, Clone)]
pub struct FakeControl {
    url: String,
}

impl FakeControl {
    /// The control API of the fake cloud at `url` (`http://127.0.0.1:PORT`).
    pub fn new(url: &str) -> FakeControl {
        FakeControl { url: url.to_owned() }
    }

    /// `POST /_control/<path>` with a JSON body; the JSON reply (`null` for an empty one).
    pub fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        request(&self.url, "POST", path, &body.to_string())
    }

    /// `GET /_control/<path>`; the JSON reply.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        request(&self.url, "GET", path, "")
    }

    /// The 6-digit code `username`'s authenticator app shows now.
    pub fn current_totp(&self, username: &str) -> anyhow::Result<String> {
        let reply = self.post("totp", json!({ "username": username }))?;
        reply["code"].as_str().map(str::to_owned).with_context(|| format!("the totp reply has no code: {reply}"))
    }

    /// Everything the fake has counted (`GET /_control/counters`).
    pub fn counters(&self) -> anyhow::Result<Value> {
        self.get("counters")
    }

    /// One counter, e.g. `password_grants_ok`.
    pub fn counter(&self, name: &str) -> anyhow::Result<u64> {
        let counters = self.counters()?;
        counters[name].as_u64().with_context(|| format!("no counter {name} in {counters}"))
    }

    /// Whether the cloud accepts `token` as an access token right now.
    pub fn is_access_token_valid(&self, token: &str) -> anyhow::Result<bool> {
        Ok(self.post("access-token-valid", json!({ "token": token }))?["valid"] == true)
    }

    /// Whether a refresh would accept `token` right now.
    pub fn is_refresh_token_valid(&self, token: &str) -> anyhow::Result<bool> {
        Ok(self.post("refresh-token-valid", json!({ "token": token }))?["valid"] == true)
    }

    /// Injects a fault, e.g. `{"kind":"server_error","duration_ms":20000,"path":"/login"}`.
    pub fn inject_fault(&self, fault: Value) -> anyhow::Result<()> {
        self.post("faults", fault).map(drop)
    }

    /// Revokes a token of any kind; whether the fake knew it.
    pub fn revoke(&self, token: &str) -> anyhow::Result<bool> {
        Ok(self.post("revoke", json!({ "token": token }))?["revoked"] == true)
    }

    /// Revokes every access and refresh token of a user; how many.
    pub fn revoke_user_sessions(&self, username: &str) -> anyhow::Result<u64> {
        Ok(self.post("revoke-user", json!({ "username": username }))?["revoked"].as_u64().unwrap_or(0))
    }
}

/// A control API call: [`http`], then the JSON of a 2xx reply.
fn request(base: &str, method: &str, path: &str, body: &str) -> anyhow::Result<Value> {
    let what = format!("{method} {base}/_control/{path}");
    let headers = format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    let (status, text) = http(base, method, &format!("/_control/{path}"), &headers, body)?;
    if !(200..300).contains(&status) {
        bail!("{what} answered {status}: {text}");
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).with_context(|| format!("{what} answered something that is not JSON: {text}"))
}

/// One HTTP/1.1 exchange over loopback (so that xtask needs no HTTP client crate): `method path` to `base`
/// (`http://HOST:PORT`) with `Host: HOST:PORT`, the `headers` lines (each ending in CRLF) and `body`, on a
/// connection closed after it. Returns the status and the body (de-chunked).
pub fn http(base: &str, method: &str, path: &str, headers: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let host = base
        .strip_prefix("http://")
        .with_context(|| format!("the URL {base:?} is not http://HOST:PORT"))?
        .trim_end_matches('/');
    let what = format!("{method} {base}{path}");
    let mut stream = std::net::TcpStream::connect(host).with_context(|| format!("{what}: could not connect"))?;
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.set_write_timeout(Some(PATIENCE))?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n{body}")
        .with_context(|| format!("{what}: could not send the request"))?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).with_context(|| format!("{what}: could not read the reply"))?;
    let reply = String::from_utf8_lossy(&reply);
    let (head, rest) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let line = head.lines().next().unwrap_or_default();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("{what} answered {line:?}, not an HTTP status line"))?;
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    Ok((status, if chunked { dechunk(rest) } else { rest.to_owned() }))
}

/// The body of a `Transfer-Encoding: chunked` reply.
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else { break };
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_body_is_joined_and_a_bad_url_is_named() {
        assert_eq!(dechunk("7\r\n{\"a\":1}\r\n3\r\n   \r\n0\r\n\r\n"), "{\"a\":1}   ");
        assert_eq!(dechunk("zz\r\n"), "");
        let error = FakeControl::new("https://example.com").counters().unwrap_err();
        assert!(format!("{error:#}").contains("is not http://HOST:PORT"), "{error:#}");
    }
}
