//! The client's zbus proxies of the main interface and of the per-token objects. The daemon serves the
//! interface without them; callers (`att-token`, tests) use them.

/// The main interface: methods and signals of the contract.
#[zbus::proxy(
    interface = "io.allthingstalk.TokenAgent1",
    default_service = "io.allthingstalk.TokenAgent1",
    default_path = "/io/allthingstalk/TokenAgent1"
)]
pub trait TokenAgent {
    /// `GetToken(s name) → (s token, x expires_at)`.
    fn get_token(&self, name: &str) -> zbus::Result<(String, i64)>;

    /// `GetTokenValidFor(s name, u seconds) → (s token, x expires_at)`.
    fn get_token_valid_for(&self, name: &str, seconds: u32) -> zbus::Result<(String, i64)>;

    /// `GetTokenForDevice(s device_id) → (s name, s token, x expires_at)`.
    fn get_token_for_device(&self, device_id: &str) -> zbus::Result<(String, String, i64)>;

    /// `ListTokens() → a(ssxsb)`: name, kind, expires_at, state, attention_needed.
    fn list_tokens(&self) -> zbus::Result<Vec<(String, String, i64, String, bool)>>;

    /// `Login(s name, s username, s password, s code) → (x expires_at)`.
    fn login(&self, name: &str, username: &str, password: &str, code: &str) -> zbus::Result<i64>;

    /// `Refresh(s name) → (x expires_at)`.
    fn refresh(&self, name: &str) -> zbus::Result<i64>;

    /// `Logout(s name) → ()`.
    fn logout(&self, name: &str) -> zbus::Result<()>;

    /// `GetMetrics() → (at served, at refused, at cloud_requests, t budget_waits, a(sxat) tokens)`: the daemon's
    /// counts, and those of the tokens the caller may read (see [`crate::metrics`]).
    fn get_metrics(&self) -> zbus::Result<crate::metrics::Metrics>;

    /// `SessionStorage s`: `sealed`, `unsealed` (no state key: sessions on disk in clear) or `memory`.
    #[zbus(property)]
    fn session_storage(&self) -> zbus::Result<String>;

    /// `ApiUrl s`: the REST base URL the daemon talks to, without a trailing slash.
    #[zbus(property)]
    fn api_url(&self) -> zbus::Result<String>;

    /// `TokenChanged(s name, x expires_at)`.
    #[zbus(signal)]
    fn token_changed(&self, name: String, expires_at: i64) -> zbus::Result<()>;

    /// `AttentionNeeded(s name, s reason)`.
    #[zbus(signal)]
    fn attention_needed(&self, name: String, reason: String) -> zbus::Result<()>;
}

/// A per-token object, `/io/allthingstalk/TokenAgent1/token/<escaped name>` (see [`crate::token_object_path`]).
#[zbus::proxy(interface = "io.allthingstalk.TokenAgent1.Token", default_service = "io.allthingstalk.TokenAgent1")]
pub trait Token {
    /// `Name s`.
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    /// `Kind s`: `user`, `device` or `ground`.
    #[zbus(property)]
    fn kind(&self) -> zbus::Result<String>;
    /// `State s`: `valid`, `refreshing`, `retrying`, `expired`, `needs-login` or `revoked`.
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    /// `ExpiresAt x`: Unix seconds, 0 when unknown.
    #[zbus(property)]
    fn expires_at(&self) -> zbus::Result<i64>;
    /// `RefreshTokenExpiresAt x`: Unix seconds, 0 when none.
    #[zbus(property)]
    fn refresh_token_expires_at(&self) -> zbus::Result<i64>;
    /// `NextRefreshAt x`: Unix seconds, 0 when none is planned.
    #[zbus(property)]
    fn next_refresh_at(&self) -> zbus::Result<i64>;
    /// `AttentionNeeded b`.
    #[zbus(property)]
    fn attention_needed(&self) -> zbus::Result<bool>;
    /// `LastError s`: empty when none.
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;
}

#[cfg(test)]
mod tests {
    use zbus::proxy::Defaults as _;

    use super::*;

    #[test]
    fn the_proxies_use_the_contract_names() {
        let name = |value: &Option<zbus::names::InterfaceName<'static>>| value.as_ref().map(|n| n.to_string());
        assert_eq!(name(TokenAgentProxy::INTERFACE).as_deref(), Some(crate::INTERFACE));
        assert_eq!(name(TokenProxy::INTERFACE).as_deref(), Some(crate::TOKEN_INTERFACE));
        let destination = TokenAgentProxy::DESTINATION.as_ref().map(ToString::to_string);
        assert_eq!(destination.as_deref(), Some(crate::BUS_NAME));
        assert_eq!(TokenProxy::DESTINATION.as_ref().map(ToString::to_string).as_deref(), Some(crate::BUS_NAME));
        let path = TokenAgentProxy::PATH.as_ref().map(ToString::to_string);
        assert_eq!(path.as_deref(), Some(crate::OBJECT_PATH));
    }
}
