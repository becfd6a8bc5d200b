//! The daemon's counters, read by `GetMetrics`: numbers only. `att-token metrics` writes the Prometheus text
//! format from them; the daemon formats no text and serves no HTTP.
//!
//! - Daemon-wide: calls served per method and refused per reason (counted at the D-Bus edge, where `dbus/error.rs`
//!   makes each refusal), requests to the cloud per kind and outcome (counted in `engine/cloud.rs`, where every request
//!   is sent), and budget waits (requests that waited for the daemon-wide request budget; nothing waits for one yet,
//!   so it stays 0).
//! - Per token: refreshes and logins per outcome, and when the last one succeeded (counted by the session task).
//!   A token's state and deadlines are not counted here: `GetMetrics` reads them from the engine's status.
//!
//! One process-wide set ([`counters`], and [`tokens`] per token): counts are facts about the process, made in the engine, its cloud client
//! and the D-Bus edge, and a static needs no handle carried through all of them. Counting a call is one relaxed
//! atomic increment, so `GetToken` costs the same; per-token counts take a short lock, at most once per request to
//! the cloud. The labels are token-agent's (`token_agent::metrics`), which `att-token` reads too. Imports nothing of
//! the crate, so the engine and the D-Bus side both use it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use token_agent::metrics::{METHODS, OUTCOMES, REFUSALS, REQUESTS, TOKEN_COUNTS};
use token_model::ids::TokenName;

/// A method of the service whose calls are counted (the index of its name in `token_agent::metrics::METHODS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GetToken`.
    GetToken,
    /// `GetTokenValidFor`.
    GetTokenValidFor,
    /// `GetTokenForDevice`.
    GetTokenForDevice,
    /// `ListTokens`.
    ListTokens,
    /// `Login`.
    Login,
    /// `Refresh`.
    Refresh,
    /// `Logout`.
    Logout,
    /// `GetMetrics`.
    GetMetrics,
    /// `Get` or `GetAll` of a token object's properties.
    Properties,
}

/// Why a call was refused: the last element of its error's name (`token_agent::metrics::REFUSALS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `org.freedesktop.DBus.Error.AccessDenied`.
    AccessDenied,
    /// `org.freedesktop.DBus.Error.InvalidArgs`.
    InvalidArgs,
    /// `…Error.UnknownToken`.
    UnknownToken,
    /// `…Error.NeedsLogin`.
    NeedsLogin,
    /// `…Error.Unavailable`.
    Unavailable,
    /// `…Error.Revoked`.
    Revoked,
    /// `…Error.LoginFailed`.
    LoginFailed,
    /// `…Error.MfaRequired`.
    MfaRequired,
    /// `…Error.MfaFailed`.
    MfaFailed,
    /// `…Error.NoTokenForDevice`.
    NoTokenForDevice,
    /// Any other error.
    Failed,
}

/// A kind of request to the cloud (`token_agent::metrics::REQUESTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// A refresh.
    Refresh,
    /// A login: the password grant and its MFA step.
    Login,
    /// A token check (health probe).
    Check,
    /// A ground's device list.
    GroundDevices,
}

/// How a request to the cloud ended (`token_agent::metrics::OUTCOMES`, and `rejected` for a refresh).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Answered with success.
    Success,
    /// Failed for a transient reason; retried.
    Transient,
    /// Refused by the cloud (a verdict).
    Refused,
    /// A refresh whose refresh token the cloud refused: the session ended. A `Refused` among the cloud's requests.
    Rejected,
}

impl Ended {
    fn index(self) -> usize {
        // Rejected is a refusal among the cloud's requests; per token it has a row of its own.
        (self as usize).min(OUTCOMES.len() - 1)
    }
}

const N_METHODS: usize = METHODS.len();
const N_REFUSALS: usize = REFUSALS.len();
const N_OUTCOMES: usize = OUTCOMES.len();
/// Per token: refresh outcomes (with `rejected`), then login outcomes (`TOKEN_COUNTS`).
const N_ATTEMPTS: usize = TOKEN_COUNTS.len();

/// One token's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TokenCounts {
    attempts: [u64; N_ATTEMPTS],
    /// Unix seconds of the last success; 0 when none.
    last_success_at: i64,
}

/// The daemon-wide counters. [`counters`] is the daemon's; tests make their own with [`Counters::new`].
#[derive(Debug)]
pub struct Counters {
    served: [AtomicU64; N_METHODS],
    refused: [AtomicU64; N_REFUSALS],
    cloud: [[AtomicU64; N_OUTCOMES]; REQUESTS.len()],
    budget_waits: AtomicU64,
}

/// The per-token counts. [`tokens`] is the daemon's; tests make their own with [`Tokens::new`].
#[derive(Debug)]
pub struct Tokens(Mutex<Vec<(TokenName, TokenCounts)>>);

// Atomics alone, all zero: in .bss, no bytes in the executable (the tokens' list is not all zero bytes).
static COUNTERS: Counters = Counters::new();
static TOKENS: Tokens = Tokens::new();

/// The daemon's daemon-wide counters.
pub fn counters() -> &'static Counters {
    &COUNTERS
}

/// The daemon's per-token counts.
pub fn tokens() -> &'static Tokens {
    &TOKENS
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

impl Counters {
    /// Every count at zero.
    pub const fn new() -> Self {
        Self {
            served: [const { AtomicU64::new(0) }; N_METHODS],
            refused: [const { AtomicU64::new(0) }; N_REFUSALS],
            cloud: [const { [const { AtomicU64::new(0) }; N_OUTCOMES] }; REQUESTS.len()],
            budget_waits: AtomicU64::new(0),
        }
    }

    /// A call of `method` answered.
    pub fn served(&self, method: Method) {
        bump(&self.served[method as usize]);
    }

    /// A call refused, for `reason`.
    pub fn refused(&self, reason: Refusal) {
        bump(&self.refused[reason as usize]);
    }

    /// A request of kind `request` sent to the cloud, ended with `outcome`.
    pub fn cloud_request(&self, request: Request, outcome: Ended) {
        bump(&self.cloud[request as usize][outcome.index()]);
    }

    /// A request to the cloud waited for the daemon-wide request budget.
    pub fn budget_waited(&self) {
        bump(&self.budget_waits);
    }

    /// Calls served, per method in the order of `token_agent::metrics::METHODS`.
    pub fn served_counts(&self) -> Vec<u64> {
        self.served.iter().map(get).collect()
    }

    /// Calls refused, per reason in the order of `token_agent::metrics::REFUSALS`.
    pub fn refused_counts(&self) -> Vec<u64> {
        self.refused.iter().map(get).collect()
    }

    /// Requests to the cloud, per kind (`REQUESTS`) and, within a kind, per outcome (`OUTCOMES`).
    pub fn cloud_requests(&self) -> Vec<u64> {
        self.cloud.iter().flatten().map(get).collect()
    }

    /// How many requests waited for the request budget.
    pub fn budget_waits(&self) -> u64 {
        get(&self.budget_waits)
    }
}

impl Tokens {
    /// No token counted yet.
    pub const fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }

    /// A refresh (`login` false) or a login (`login` true) of `token` ended with `outcome`; at Unix second `now`.
    pub fn attempt(&self, token: &TokenName, login: bool, outcome: Ended, now: i64) {
        let column = if login { N_OUTCOMES + 1 + outcome.index() } else { outcome as usize };
        let mut tokens = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let at = match tokens.iter().position(|(name, _)| name == token) {
            Some(at) => at,
            None => {
                tokens.push((token.clone(), TokenCounts::default()));
                tokens.len() - 1
            }
        };
        let counts = &mut tokens[at].1;
        counts.attempts[column] += 1;
        if outcome == Ended::Success {
            counts.last_success_at = now;
        }
    }

    /// A token's counts, in the order of `token_agent::metrics::TOKEN_COUNTS` (every one, also at 0), and when the
    /// last refresh or login succeeded (Unix seconds, 0 for never).
    pub fn token(&self, token: &TokenName) -> (Vec<u64>, i64) {
        let tokens = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let counts = tokens.iter().find(|(name, _)| name == token).map(|(_, counts)| *counts).unwrap_or_default();
        (counts.attempts.to_vec(), counts.last_success_at)
    }
}

impl Default for Tokens {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(name: &str) -> TokenName {
        TokenName::new(name).unwrap()
    }

    /// The count at the place of `name` in `names`.
    fn count<T: PartialEq>(counts: &[u64], names: &[T], name: T) -> u64 {
        counts[names.iter().position(|n| *n == name).unwrap()]
    }

    #[test]
    fn the_enums_follow_the_contract_names() {
        assert_eq!(METHODS[Method::GetToken as usize], "GetToken");
        assert_eq!(METHODS[Method::Properties as usize], "Properties");
        assert_eq!(METHODS.len(), Method::Properties as usize + 1);
        assert_eq!(REFUSALS[Refusal::AccessDenied as usize], "AccessDenied");
        assert_eq!(REFUSALS[Refusal::NoTokenForDevice as usize], "NoTokenForDevice");
        assert_eq!(REFUSALS.len(), Refusal::Failed as usize + 1);
        assert_eq!(REQUESTS[Request::GroundDevices as usize], "ground_devices");
        assert_eq!(OUTCOMES[Ended::Refused as usize], "refused");
        assert_eq!(OUTCOMES.len(), Ended::Refused as usize + 1);
        assert_eq!(TOKEN_COUNTS[Ended::Rejected as usize], ("refresh", "rejected"));
        assert_eq!(TOKEN_COUNTS[OUTCOMES.len() + 1], ("login", "success"));
    }

    #[test]
    fn calls_are_counted_per_method_and_reason() {
        let counters = Counters::new();
        assert_eq!(counters.served_counts(), [0; METHODS.len()], "every method has a count from the start");
        assert_eq!(counters.refused_counts(), [0; REFUSALS.len()], "and every reason");
        counters.served(Method::GetToken);
        counters.served(Method::GetToken);
        counters.served(Method::ListTokens);
        counters.refused(Refusal::AccessDenied);
        counters.refused(Refusal::MfaFailed);
        counters.refused(Refusal::MfaFailed);
        let served = counters.served_counts();
        assert_eq!(count(&served, &METHODS, "GetToken"), 2);
        assert_eq!(count(&served, &METHODS, "ListTokens"), 1);
        assert_eq!(count(&served, &METHODS, "Login"), 0);
        let refused = counters.refused_counts();
        assert_eq!(count(&refused, &REFUSALS, "AccessDenied"), 1);
        assert_eq!(count(&refused, &REFUSALS, "MfaFailed"), 2);
        assert_eq!(count(&refused, &REFUSALS, "InvalidArgs"), 0);
    }

    #[test]
    fn cloud_requests_and_budget_waits_are_counted() {
        let counters = Counters::new();
        assert_eq!(counters.cloud_requests(), [0; REQUESTS.len() * OUTCOMES.len()]);
        counters.cloud_request(Request::Refresh, Ended::Success);
        counters.cloud_request(Request::Refresh, Ended::Rejected);
        counters.cloud_request(Request::Check, Ended::Transient);
        let pairs: Vec<(&str, &str)> =
            REQUESTS.iter().flat_map(|kind| OUTCOMES.iter().map(move |outcome| (*kind, *outcome))).collect();
        let counts = counters.cloud_requests();
        assert_eq!(count(&counts, &pairs, ("refresh", "success")), 1);
        assert_eq!(count(&counts, &pairs, ("refresh", "refused")), 1, "a rejected refresh token is a refusal");
        assert_eq!(count(&counts, &pairs, ("check", "transient")), 1);
        assert_eq!(count(&counts, &pairs, ("login", "success")), 0);
        assert_eq!(counters.budget_waits(), 0);
        counters.budget_waited();
        assert_eq!(counters.budget_waits(), 1);
    }

    #[test]
    fn each_token_has_its_attempts_and_last_success() {
        let tokens = Tokens::new();
        let (main, other) = (name("main"), name("other"));
        assert_eq!(tokens.token(&main), (vec![0; TOKEN_COUNTS.len()], 0), "every count, at zero; no success yet");
        tokens.attempt(&main, false, Ended::Success, 100);
        tokens.attempt(&main, false, Ended::Transient, 150);
        tokens.attempt(&main, false, Ended::Rejected, 160);
        tokens.attempt(&main, true, Ended::Success, 170);
        tokens.attempt(&main, true, Ended::Refused, 180);
        tokens.attempt(&other, false, Ended::Refused, 190);
        let (counts, last) = tokens.token(&main);
        assert_eq!(last, 170, "the last success, a refresh or a login");
        assert_eq!(count(&counts, &TOKEN_COUNTS, ("refresh", "success")), 1);
        assert_eq!(count(&counts, &TOKEN_COUNTS, ("refresh", "transient")), 1);
        assert_eq!(count(&counts, &TOKEN_COUNTS, ("refresh", "rejected")), 1);
        assert_eq!(count(&counts, &TOKEN_COUNTS, ("refresh", "refused")), 0);
        assert_eq!(count(&counts, &TOKEN_COUNTS, ("login", "success")), 1);
        assert_eq!(count(&counts, &TOKEN_COUNTS, ("login", "refused")), 1);
        let (counts, last) = tokens.token(&other);
        assert_eq!((count(&counts, &TOKEN_COUNTS, ("refresh", "refused")), last), (1, 0));
    }
}
