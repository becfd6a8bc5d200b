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

use token_agent::metrics::{ATTEMPTS, METHODS, OUTCOMES, REFUSALS, REFUSED, REJECTED, REQUESTS, SERVED};
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
/// Per token: refresh outcomes (with `rejected`), then login outcomes.
const N_ATTEMPTS: usize = N_OUTCOMES + 1 + N_OUTCOMES;

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

/// Daemon-wide counts as `GetMetrics` sends them: (name, label, count) rows.
pub type Rows = Vec<(&'static str, &'static str, u64)>;

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

    /// Calls served per method, then calls refused per reason, every one (also at 0): (`served`, method, count)
    /// and (`refused`, reason, count).
    pub fn calls(&self) -> Rows {
        let served = METHODS.iter().zip(&self.served).map(|(method, n)| (SERVED, *method, get(n)));
        let refused = REFUSALS.iter().zip(&self.refused).map(|(reason, n)| (REFUSED, *reason, get(n)));
        served.chain(refused).collect()
    }

    /// Requests to the cloud per kind and outcome, every pair (also at 0): (kind, outcome, count).
    pub fn cloud_requests(&self) -> Rows {
        let mut rows = Rows::new();
        for (request, outcomes) in REQUESTS.iter().zip(&self.cloud) {
            for (outcome, n) in OUTCOMES.iter().zip(outcomes) {
                rows.push((*request, *outcome, get(n)));
            }
        }
        rows
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

    /// A token's attempts, every pair (also at 0): (`refresh` or `login`, outcome, count); and when the last one
    /// succeeded (Unix seconds, 0 for never).
    pub fn token(&self, token: &TokenName) -> (Rows, i64) {
        let counts = {
            let tokens = self.0.lock().unwrap_or_else(|e| e.into_inner());
            tokens.iter().find(|(name, _)| name == token).map(|(_, counts)| *counts).unwrap_or_default()
        };
        let refresh = OUTCOMES.iter().chain([&REJECTED]).map(|outcome| (ATTEMPTS[0], *outcome));
        let login = OUTCOMES.iter().map(|outcome| (ATTEMPTS[1], *outcome));
        let rows = refresh.chain(login).zip(counts.attempts).map(|((kind, outcome), n)| (kind, outcome, n)).collect();
        (rows, counts.last_success_at)
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

    fn count(rows: &Rows, name: &str, label: &str) -> Option<u64> {
        rows.iter().find(|(n, l, _)| *n == name && *l == label).map(|(_, _, count)| *count)
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
    }

    #[test]
    fn calls_are_counted_per_method_and_reason() {
        let counters = Counters::new();
        assert_eq!(count(&counters.calls(), SERVED, "GetToken"), Some(0), "every method has a row from the start");
        assert_eq!(count(&counters.calls(), REFUSED, "AccessDenied"), Some(0), "and every reason");
        counters.served(Method::GetToken);
        counters.served(Method::GetToken);
        counters.served(Method::ListTokens);
        counters.refused(Refusal::AccessDenied);
        counters.refused(Refusal::MfaFailed);
        counters.refused(Refusal::MfaFailed);
        let calls = counters.calls();
        assert_eq!(count(&calls, SERVED, "GetToken"), Some(2));
        assert_eq!(count(&calls, SERVED, "ListTokens"), Some(1));
        assert_eq!(count(&calls, SERVED, "Login"), Some(0));
        assert_eq!(count(&calls, REFUSED, "AccessDenied"), Some(1));
        assert_eq!(count(&calls, REFUSED, "MfaFailed"), Some(2));
        assert_eq!(count(&calls, REFUSED, "InvalidArgs"), Some(0));
        assert_eq!(calls.len(), METHODS.len() + REFUSALS.len());
    }

    #[test]
    fn cloud_requests_and_budget_waits_are_counted() {
        let counters = Counters::new();
        assert_eq!(counters.cloud_requests().len(), REQUESTS.len() * OUTCOMES.len());
        assert!(counters.cloud_requests().iter().all(|(_, _, n)| *n == 0));
        counters.cloud_request(Request::Refresh, Ended::Success);
        counters.cloud_request(Request::Refresh, Ended::Rejected);
        counters.cloud_request(Request::Check, Ended::Transient);
        let rows = counters.cloud_requests();
        assert_eq!(count(&rows, "refresh", "success"), Some(1));
        assert_eq!(count(&rows, "refresh", "refused"), Some(1), "a rejected refresh token is a refusal");
        assert_eq!(count(&rows, "check", "transient"), Some(1));
        assert_eq!(count(&rows, "login", "success"), Some(0));
        assert_eq!(counters.budget_waits(), 0);
        counters.budget_waited();
        assert_eq!(counters.budget_waits(), 1);
    }

    #[test]
    fn each_token_has_its_attempts_and_last_success() {
        let counters = Tokens::new();
        let (main, other) = (name("main"), name("other"));
        let (rows, last) = counters.token(&main);
        assert_eq!((rows.len(), last), (N_ATTEMPTS, 0), "every pair, at zero, and no success yet");
        counters.attempt(&main, false, Ended::Success, 100);
        counters.attempt(&main, false, Ended::Transient, 150);
        counters.attempt(&main, false, Ended::Rejected, 160);
        counters.attempt(&main, true, Ended::Success, 170);
        counters.attempt(&main, true, Ended::Refused, 180);
        counters.attempt(&other, false, Ended::Refused, 190);
        let (rows, last) = counters.token(&main);
        assert_eq!(last, 170, "the last success, a refresh or a login");
        assert_eq!(count(&rows, "refresh", "success"), Some(1));
        assert_eq!(count(&rows, "refresh", "transient"), Some(1));
        assert_eq!(count(&rows, "refresh", "rejected"), Some(1));
        assert_eq!(count(&rows, "refresh", "refused"), Some(0));
        assert_eq!(count(&rows, "login", "success"), Some(1));
        assert_eq!(count(&rows, "login", "refused"), Some(1));
        assert_eq!(count(&rows, "login", "rejected"), None, "a login has no rejected refresh token");
        let (rows, last) = counters.token(&other);
        assert_eq!((count(&rows, "refresh", "refused"), last), (Some(1), 0));
    }
}
