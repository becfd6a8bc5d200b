//! The vocabulary of `GetMetrics`: the label values both sides agree on and the shape of the reply.
//!
//! `GetMetrics() → (a(sst) calls, a(sst) cloud_requests, t budget_waits, a(sssxxxa(sst)) tokens)`: numbers only;
//! `att-token metrics` turns them into the Prometheus text format. Every caller gets the daemon-wide counters (they
//! name no token and no caller); `tokens` holds only the tokens the caller may read, as `ListTokens` does.

/// The methods whose calls are counted, as they appear in `calls` rows. `Properties` is a `Get` or `GetAll` of a
/// token object's properties.
pub const METHODS: [&str; 9] = [
    "GetToken",
    "GetTokenValidFor",
    "GetTokenForDevice",
    "ListTokens",
    "Login",
    "Refresh",
    "Logout",
    "GetMetrics",
    "Properties",
];

/// The first element of a `calls` row for calls that got their answer, per method ([`METHODS`]).
pub const SERVED: &str = "served";

/// The first element of a `calls` row for calls refused, per reason ([`REFUSALS`]).
pub const REFUSED: &str = "refused";

/// The reasons a call is refused: the last element of the error reply's name
/// (`org.freedesktop.DBus.Error.AccessDenied`, `io.allthingstalk.TokenAgent1.Error.NeedsLogin`, ...).
pub const REFUSALS: [&str; 11] = [
    "AccessDenied",
    "InvalidArgs",
    "UnknownToken",
    "NeedsLogin",
    "Unavailable",
    "Revoked",
    "LoginFailed",
    "MfaRequired",
    "MfaFailed",
    "NoTokenForDevice",
    "Failed",
];

/// The kinds of request sent to the cloud, in `cloud_requests` rows: a refresh, a login (password grant and its MFA
/// step), a token check (health probe), a ground's device list.
pub const REQUESTS: [&str; 4] = ["refresh", "login", "check", "ground_devices"];

/// How a request to the cloud ended: answered with success, failed for a transient reason (network, 5xx, 429, an
/// unreadable reply: retried), or refused by the cloud (a verdict: a person must act, or the configuration).
pub const OUTCOMES: [&str; 3] = ["success", "transient", "refused"];

/// The attempts counted per token, in each token's rows: (`refresh` or `login`, outcome, count). A refresh's
/// outcome is one of [`OUTCOMES`] or `rejected` (the cloud refused the refresh token itself: the session ended).
pub const ATTEMPTS: [&str; 2] = ["refresh", "login"];

/// A refresh whose refresh token the cloud refused: the session is over.
pub const REJECTED: &str = "rejected";

/// Counter rows: (name, label, count), e.g. `("served", "GetToken", 12)`, `("refused", "AccessDenied", 1)`,
/// `("refresh", "success", 3)`.
pub type Rows = Vec<(String, String, u64)>;

/// One token's figures: name, kind (`user`/`device`/`ground`), state (as `ListTokens`), expires_at and
/// refresh_token_expires_at (Unix seconds, 0 when none is known), last_success_at (Unix seconds of the last
/// refresh or login that succeeded since the daemon started, 0 when none), and its attempts ([`ATTEMPTS`] rows).
pub type TokenFigures = (String, String, String, i64, i64, i64, Rows);

/// The whole reply of `GetMetrics`: calls, cloud_requests, budget_waits, tokens.
pub type Metrics = (Rows, Rows, u64, Vec<TokenFigures>);
