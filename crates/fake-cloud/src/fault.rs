//! Faults the fake cloud can inject into its replies: the transient failures a client must ride out.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What goes wrong with a faulted request.
///
/// Over HTTP (`POST /_control/faults`) it is written inline with the [`Fault`], e.g.
/// `{"kind":"too_many_requests","retry_after_secs":7,"times":2,"path":"/login"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 500 with a plain-text body.
    ServerError,
    /// HTTP 503 with an HTML body.
    ServiceUnavailable,
    /// HTTP 429 with a `Retry-After` header of this many seconds.
    TooManyRequests {
        /// The `Retry-After` value in seconds.
        retry_after_secs: u64,
    },
    /// HTTP 200 whose body is HTML, not JSON.
    NotJson,
    /// The request is read and never answered (until the fake shuts down).
    Hang,
    /// The connection is reset (closed with RST) without a reply.
    Reset,
    /// The request is carried out (a refresh rotates the refresh token) and its reply never sent: the server
    /// did its part and the client never learns the outcome (it times out, or is stopped while waiting).
    LostReply,
    /// HTTP 400 `{"error":"invalid_clientId"}`: the answer to a request whose client id the cloud does not accept
    /// (a refresh with another client id than its login's). A verdict about the configuration, not the token.
    InvalidClient,
    /// The request waits this long, then is answered normally.
    Slow {
        /// The delay in milliseconds.
        delay_ms: u64,
    },
}

/// A fault and which requests it hits: the next `times` requests (default 1), or every request for
/// `duration_ms`, optionally only those whose path is `path` (or lies under it when it ends with `/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// What goes wrong.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// How many matching requests it hits; ignored when `duration_ms` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    /// For how long (milliseconds from injection) it hits every matching request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Only requests to this path (e.g. `/login`); a path ending in `/` matches everything under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl Fault {
    /// A fault hitting the next request on any path.
    pub fn new(kind: FaultKind) -> Self {
        Self { kind, times: None, duration_ms: None, path: None }
    }

    /// Hits the next `n` matching requests.
    #[must_use]
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self.duration_ms = None;
        self
    }

    /// Hits every matching request for this long from injection.
    #[must_use]
    pub fn for_duration(mut self, duration: Duration) -> Self {
        self.duration_ms = Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        self.times = None;
        self
    }

    /// Hits only requests to `path` (e.g. `/login`), or under it when it ends with `/`.
    #[must_use]
    pub fn on_path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }
}

/// A fault once injected: counts down or runs out.
#[derive(Debug)]
pub(crate) struct ActiveFault {
    kind: FaultKind,
    path: Option<String>,
    remaining: Option<u32>,
    until: Option<Instant>,
}

impl ActiveFault {
    pub(crate) fn new(fault: Fault, now: Instant) -> Self {
        let until = fault.duration_ms.map(|ms| now + Duration::from_millis(ms));
        let remaining = if until.is_some() { None } else { Some(fault.times.unwrap_or(1)) };
        Self { kind: fault.kind, path: fault.path, remaining, until }
    }

    fn spent(&self, now: Instant) -> bool {
        self.remaining == Some(0) || self.until.is_some_and(|until| now >= until)
    }

    fn matches(&self, path: &str) -> bool {
        match &self.path {
            None => true,
            Some(p) if p.ends_with('/') => path.starts_with(p.as_str()),
            Some(p) => path == p,
        }
    }
}

/// Takes the first live fault matching `path`, counting it down; drops spent faults.
pub(crate) fn take(faults: &mut Vec<ActiveFault>, path: &str, now: Instant) -> Option<FaultKind> {
    faults.retain(|f| !f.spent(now));
    let fault = faults.iter_mut().find(|f| f.matches(path))?;
    if let Some(remaining) = fault.remaining.as_mut() {
        *remaining -= 1;
    }
    Some(fault.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_down_and_filters_by_path() {
        let now = Instant::now();
        let mut faults = vec![ActiveFault::new(Fault::new(FaultKind::Hang).times(2).on_path("/login"), now)];
        assert_eq!(take(&mut faults, "/me/grounds", now), None);
        assert_eq!(take(&mut faults, "/login", now), Some(FaultKind::Hang));
        assert_eq!(take(&mut faults, "/login", now), Some(FaultKind::Hang));
        assert_eq!(take(&mut faults, "/login", now), None);
        assert!(faults.is_empty());
    }

    #[test]
    fn duration_faults_run_out_and_prefixes_match() {
        let now = Instant::now();
        let fault = Fault::new(FaultKind::ServerError).for_duration(Duration::from_secs(10)).on_path("/device/");
        let mut faults = vec![ActiveFault::new(fault, now)];
        assert_eq!(take(&mut faults, "/device/abc", now), Some(FaultKind::ServerError));
        assert_eq!(take(&mut faults, "/device/abc", now + Duration::from_secs(9)), Some(FaultKind::ServerError));
        assert_eq!(take(&mut faults, "/ground/x/devices", now), None);
        assert_eq!(take(&mut faults, "/device/abc", now + Duration::from_secs(10)), None);
    }

    #[test]
    fn json_form_is_flat() {
        let fault: Fault =
            serde_json::from_str(r#"{"kind":"too_many_requests","retry_after_secs":7,"times":2,"path":"/login"}"#)
                .expect("valid fault JSON");
        assert_eq!(fault, Fault::new(FaultKind::TooManyRequests { retry_after_secs: 7 }).times(2).on_path("/login"));
        let back = serde_json::to_value(Fault::new(FaultKind::Slow { delay_ms: 5 })).expect("serialisable");
        assert_eq!(back, serde_json::json!({"kind":"slow","delay_ms":5}));
    }
}
