//! Where and how to talk to AllThingsTalk: base URL, client id, the MFA step's names, timeouts and size cap.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use token_model::ids::ClientId;
use url::{Host, Url};

use crate::error::LoginError;

/// The default REST base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.allthingstalk.io";
/// The default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default limit on a whole request, connection to last byte.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The default cap on a reply body: 64 KiB.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 64 * 1024;

/// The names the MFA completion step uses (configuration `[api.mfa]`): nothing public fixes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaFields {
    /// The `grant_type` value of the MFA step (default `mfa`).
    pub grant_type: String,
    /// The form field carrying the challenge's `MfaUid` (default `mfa_uid`).
    pub uid_field: String,
    /// The form field carrying the challenge's `UserId` (default `user_id`).
    pub user_field: String,
    /// The form field carrying the 6-digit code (default `code`).
    pub code_field: String,
}

impl MfaFields {
    /// The four names as `[api.mfa]` lines would set them: `grant_type = "mfa", uid_field = "mfa_uid", …`.
    pub fn as_setting(&self) -> String {
        format!(
            "grant_type = {:?}, uid_field = {:?}, user_field = {:?}, code_field = {:?}",
            self.grant_type, self.uid_field, self.user_field, self.code_field
        )
    }
}

impl Default for MfaFields {
    fn default() -> Self {
        Self {
            grant_type: "mfa".to_owned(),
            uid_field: "mfa_uid".to_owned(),
            user_field: "user_id".to_owned(),
            code_field: "code".to_owned(),
        }
    }
}

/// Everything the login flow needs to know about the cloud it talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiConfig {
    base_url: Url,
    /// The OAuth2 `client_id` (default `web`).
    pub client_id: ClientId,
    /// The MFA step's grant type and field names.
    pub mfa: MfaFields,
    /// How long to wait for a connection (default 5 s).
    pub connect_timeout: Duration,
    /// How long a whole request may take, connection to last byte (default 15 s).
    pub request_timeout: Duration,
    /// The largest reply body accepted (default 64 KiB); a bigger reply is refused while streaming.
    pub max_reply_bytes: usize,
}

impl ApiConfig {
    /// A configuration with the given base URL and every other setting at its default.
    ///
    /// The URL must be `https://`, except for loopback hosts (`localhost`, `127.0.0.0/8`, `[::1]`) where
    /// `http://` is allowed for tests and local fakes.
    pub fn new(base_url: &str) -> Result<Self, LoginError> {
        Ok(Self {
            base_url: parse_base_url(base_url)?,
            client_id: ClientId::default(),
            mfa: MfaFields::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
        })
    }

    /// The validated base URL.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// Whether the base URL names this machine (loopback), where plain HTTP is allowed.
    pub fn is_loopback(&self) -> bool {
        is_loopback(&self.base_url)
    }

    /// The full URL of a request path such as `/login` (the base URL's own path, if any, is kept as a prefix).
    pub fn url_for(&self, path: &str) -> Url {
        let mut url = self.base_url.clone();
        let joined = format!("{}/{}", url.path().trim_end_matches('/'), path.trim_start_matches('/'));
        url.set_path(&joined);
        url
    }

    /// Checks the settings that are public fields: timeouts, size cap and MFA names.
    pub fn validate(&self) -> Result<(), LoginError> {
        let bad = |problem: &str| Err(LoginError::BadConfig { problem: problem.to_owned() });
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return bad("the connect and request timeouts must be longer than zero: use values like 5 s and 15 s");
        }
        if self.max_reply_bytes < 1024 {
            return bad("the reply size cap must be at least 1024 bytes: the default of 65536 fits every reply");
        }
        let names = [&self.mfa.grant_type, &self.mfa.uid_field, &self.mfa.user_field, &self.mfa.code_field];
        if names.iter().any(|name| name.trim().is_empty() || name.chars().any(char::is_control)) {
            return bad(
                "[api.mfa] grant_type, uid_field, user_field and code_field must be non-empty names without control \
                 characters: remove them from the configuration to use the defaults (mfa, mfa_uid, user_id, code)",
            );
        }
        Ok(())
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        #[allow(clippy::expect_used)]
        Self::new(DEFAULT_BASE_URL).expect("the default base URL is a valid https URL")
    }
}

/// Parses and checks a base URL: https (or http on loopback), a host, no credentials, query or fragment.
pub fn parse_base_url(text: &str) -> Result<Url, LoginError> {
    let bad = |problem: String| LoginError::BadConfig { problem };
    let url = Url::parse(text.trim()).map_err(|error| {
        bad(format!(
            "api.url {text:?} is not a valid URL ({error}): use the form https://api.allthingstalk.io or \
             https://<instance>.allthingstalk.io"
        ))
    })?;
    if url.host().is_none() {
        return Err(bad(format!("api.url {text:?} has no host name: use the form https://api.allthingstalk.io")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("api.url must not carry a user name or password: remove the `user:password@` part".to_owned()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(format!("api.url {text:?} must not have a query or fragment: remove the part after ? or #")));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(bad(format!(
            "api.url {text:?} uses plain http, which would send passwords and tokens unencrypted: use https:// \
             (plain http is allowed only for localhost, 127.0.0.0/8 and [::1])"
        ))),
        other => Err(bad(format!("api.url {text:?} has scheme {other:?}: use https://"))),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(address)) => address.is_loopback(),
        Some(Host::Ipv6(address)) => {
            address == Ipv6Addr::LOCALHOST || address.to_ipv4_mapped().is_some_and(|v4| Ipv4Addr::is_loopback(&v4))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_base_urls() {
        for url in [
            "https://api.allthingstalk.io",
            "https://also.allthingstalk.io/",
            "https://example.com:8443/prefix",
            "http://127.0.0.1:8080",
            "http://127.9.9.9",
            "http://localhost:1234",
            "http://[::1]:99",
        ] {
            assert!(parse_base_url(url).is_ok(), "{url}");
        }
        assert_eq!(ApiConfig::default().base_url().as_str(), "https://api.allthingstalk.io/");
    }

    #[test]
    fn refused_base_urls_say_why() {
        for (url, expected) in [
            ("http://api.allthingstalk.io", "unencrypted"),
            ("http://10.0.0.1", "unencrypted"),
            ("http://localhost.example.com", "unencrypted"),
            ("ftp://api.allthingstalk.io", "scheme"),
            ("api.allthingstalk.io", "not a valid URL"),
            ("https://user:pw@api.allthingstalk.io", "user name or password"),
            ("https://api.allthingstalk.io/?x=1", "query"),
            ("unix:/run/x", "no host"),
        ] {
            let message = parse_base_url(url).unwrap_err().to_string();
            assert!(message.contains(expected), "{url}: {message}");
            assert!(!message.contains("pw@"), "{message}");
        }
    }

    #[test]
    fn urls_for_paths() {
        let config = ApiConfig::new("https://api.allthingstalk.io").unwrap();
        assert_eq!(config.url_for("/login").as_str(), "https://api.allthingstalk.io/login");
        let prefixed = ApiConfig::new("http://127.0.0.1:9/api/").unwrap();
        assert_eq!(prefixed.url_for("/me/grounds").as_str(), "http://127.0.0.1:9/api/me/grounds");
        assert!(prefixed.is_loopback());
        assert!(!config.is_loopback());
    }

    #[test]
    fn validation_of_settings() {
        let mut config = ApiConfig::default();
        assert!(config.validate().is_ok());
        config.request_timeout = Duration::ZERO;
        assert!(config.validate().unwrap_err().to_string().contains("timeouts"));
        let mut config = ApiConfig::default();
        config.mfa.code_field = " ".to_owned();
        assert!(config.validate().unwrap_err().to_string().contains("[api.mfa]"));
        let config = ApiConfig { max_reply_bytes: 10, ..ApiConfig::default() };
        assert!(config.validate().is_err());
    }
}
