//! The vocabulary of `GetMetrics`: the label values both sides agree on and the shape of the reply.
//!
//! `GetMetrics() → (at served, at refused, at cloud_requests, t budget_waits, a(sxat) tokens)`: counts only, each
//! array in the order of its list here ([`METHODS`], [`REFUSALS`], [`REQUESTS`] × [`OUTCOMES`], [`TOKEN_COUNTS`]),
//! so the reply carries no names the two sides already share. A list only grows at its end: a client reads the
//! counts it knows and ignores any after them. `att-token metrics` turns them into the Prometheus text format, with
//! each token's state and deadlines from `ListTokens` and the token's object, read at the same time.
//!
//! Every caller gets the daemon-wide counts (they name no token and no caller); `tokens` holds only the tokens the
//! caller may read, as `ListTokens` does.

/// The methods whose calls are counted, in the order of `served`. `Properties` is a `Get` or `GetAll` of a token
/// object's properties.
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

/// The reasons a call is refused, in the order of `refused`: the last element of the error reply's name
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

/// The kinds of request sent to the cloud: a refresh, a login (password grant and its MFA step), a token check
/// (health probe), a ground's device list. `cloud_requests` holds, for each kind in this order, a count per
/// outcome ([`OUTCOMES`]).
pub const REQUESTS: [&str; 4] = ["refresh", "login", "check", "ground_devices"];

/// How a request to the cloud ended: answered with success, failed for a transient reason (network, 5xx, 429, an
/// unreadable reply: retried), or refused by the cloud (a verdict: a person must act, or the configuration).
pub const OUTCOMES: [&str; 3] = ["success", "transient", "refused"];

/// What is counted per token, in the order of a token's counts: (`refresh` or `login`, outcome). A refresh's
/// outcome is one of [`OUTCOMES`] or `rejected`: the cloud refused the refresh token itself, and the session ended.
pub const TOKEN_COUNTS: [(&str, &str); 7] = [
    ("refresh", "success"),
    ("refresh", "transient"),
    ("refresh", "refused"),
    ("refresh", "rejected"),
    ("login", "success"),
    ("login", "transient"),
    ("login", "refused"),
];

/// One token's counts: its name, when its last refresh or login succeeded since the daemon started (Unix seconds, 0
/// for never), and its counts in the order of [`TOKEN_COUNTS`].
pub type TokenCounts = (String, i64, Vec<u64>);

/// The whole reply of `GetMetrics`: served, refused, cloud_requests, budget_waits, tokens.
pub type Metrics = (Vec<u64>, Vec<u64>, Vec<u64>, u64, Vec<TokenCounts>);
