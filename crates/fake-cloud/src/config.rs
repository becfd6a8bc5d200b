//! What the fake cloud knows at start: users, accepted client ids, token lifetimes and protocol variants.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The client ids the real cloud accepts (`crates/login-flow/PROTOCOL.md`), the fake's default list.
pub const DEFAULT_CLIENT_IDS: [&str; 4] = ["web", "mobile", "postman", "maker"];

/// How the fake answers a password grant for an account with MFA (PROTOCOL.md, step 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum MfaShape {
    /// Shape 1: HTTP 200 with a top-level `{"MfaUid":…,"UserId":…}`.
    #[default]
    TopLevel,
    /// Shape 2: HTTP 400 `{"error":"mfa_required","error_description":"{\"MfaUid\":…,\"UserId\":…}"}`.
    ErrorDescription,
    /// Shape 1 sent with HTTP 400 instead of 200 (PROTOCOL.md allows either status): number 3.
    TopLevelBadRequest,
}

impl TryFrom<u8> for MfaShape {
    type Error = String;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            1 => Ok(Self::TopLevel),
            2 => Ok(Self::ErrorDescription),
            3 => Ok(Self::TopLevelBadRequest),
            other => Err(format!(
                "unknown MFA shape {other}: use 1 (top-level, HTTP 200), 2 (inside error_description) or 3 (top-level, HTTP 400)"
            )),
        }
    }
}

impl From<MfaShape> for u8 {
    fn from(shape: MfaShape) -> Self {
        match shape {
            MfaShape::TopLevel => 1,
            MfaShape::ErrorDescription => 2,
            MfaShape::TopLevelBadRequest => 3,
        }
    }
}

/// What a successful refresh does with the refresh token (PROTOCOL.md, "Refresh").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rotation {
    /// A new refresh token with a fresh lifetime; the old one stops working at once.
    #[default]
    Sliding,
    /// The reply repeats the old refresh token, whose deadline stands.
    Fixed,
    /// The reply has no `refresh_token` field; the old one keeps working until its deadline.
    Omit,
}

impl std::str::FromStr for Rotation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sliding" => Ok(Self::Sliding),
            "fixed" => Ok(Self::Fixed),
            "omit" => Ok(Self::Omit),
            other => Err(format!("unknown rotation {other:?}: use sliding, fixed or omit")),
        }
    }
}

/// The MFA step's `grant_type` value and form field names (PROTOCOL.md, step 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MfaFields {
    /// The `grant_type` value of the MFA step; default `mfa`.
    pub grant_type: String,
    /// The field carrying `MfaUid`; default `mfa_uid`.
    pub uid_field: String,
    /// The field carrying `UserId`; default `user_id`.
    pub user_field: String,
    /// The field carrying the 6-digit code; default `code`.
    pub code_field: String,
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

/// An account the fake cloud accepts.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeUser {
    /// The login name, matched case-insensitively (e.g. `alice@example.com`).
    pub username: String,
    /// The password, matched exactly.
    pub password: String,
    /// The base32 TOTP seed; `Some` means the account asks for an MFA code.
    #[serde(default)]
    pub totp_seed: Option<String>,
}

impl FakeUser {
    /// An account without MFA.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self { username: username.into(), password: password.into(), totp_seed: None }
    }

    /// The same account, now asking for a TOTP code generated from this base32 seed.
    #[must_use]
    pub fn with_totp_seed(mut self, seed: impl Into<String>) -> Self {
        self.totp_seed = Some(seed.into());
        self
    }
}

impl fmt::Debug for FakeUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeUser")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("totp_seed", &self.totp_seed.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// A device token the fake cloud accepts for one device.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceToken {
    /// The bearer token (e.g. `maker:4AbCd…`).
    pub token: String,
    /// The device it may access.
    pub device_id: String,
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceToken").field("token", &"[redacted]").field("device_id", &self.device_id).finish()
    }
}

/// A ground token the fake cloud accepts for one ground and its devices.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroundToken {
    /// The bearer token.
    pub token: String,
    /// The ground it may access.
    pub ground_id: String,
    /// The devices in that ground.
    #[serde(default)]
    pub device_ids: Vec<String>,
}

impl fmt::Debug for GroundToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroundToken")
            .field("token", &"[redacted]")
            .field("ground_id", &self.ground_id)
            .field("device_ids", &self.device_ids)
            .finish()
    }
}

/// Everything the fake cloud starts with. `FakeConfig::default()` accepts the four usual client ids,
/// hands out one-hour access tokens and 60-day sliding refresh tokens, and knows no user yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeConfig {
    /// Accounts that may log in.
    pub users: Vec<FakeUser>,
    /// Accepted `client_id` values; default `web`, `mobile`, `postman`, `maker`.
    pub client_ids: Vec<String>,
    /// How an MFA challenge is announced.
    pub mfa_shape: MfaShape,
    /// The MFA step's grant type and field names.
    pub mfa_fields: MfaFields,
    /// How long an MFA challenge may be completed; default 5 minutes.
    pub challenge_lifetime: Duration,
    /// Access token lifetime; default 3600 s, announced as `expires_in` = lifetime - 1.
    pub access_lifetime: Duration,
    /// Refresh token lifetime; default 60 days.
    pub refresh_lifetime: Duration,
    /// What a refresh does with the refresh token.
    pub rotation: Rotation,
    /// Seconds the server's clock runs ahead (negative: behind) of this machine's.
    pub clock_offset_secs: i64,
    /// Device tokens the cloud accepts.
    pub device_tokens: Vec<DeviceToken>,
    /// Ground tokens the cloud accepts.
    pub ground_tokens: Vec<GroundToken>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            client_ids: DEFAULT_CLIENT_IDS.iter().map(|c| (*c).to_owned()).collect(),
            mfa_shape: MfaShape::default(),
            mfa_fields: MfaFields::default(),
            challenge_lifetime: Duration::from_secs(5 * 60),
            access_lifetime: Duration::from_secs(3600),
            refresh_lifetime: Duration::from_secs(60 * 24 * 3600),
            rotation: Rotation::default(),
            clock_offset_secs: 0,
            device_tokens: Vec::new(),
            ground_tokens: Vec::new(),
        }
    }
}

impl FakeConfig {
    /// Adds an account.
    #[must_use]
    pub fn with_user(mut self, user: FakeUser) -> Self {
        self.users.push(user);
        self
    }

    /// Adds a device token for `device_id`.
    #[must_use]
    pub fn with_device_token(mut self, token: impl Into<String>, device_id: impl Into<String>) -> Self {
        self.device_tokens.push(DeviceToken { token: token.into(), device_id: device_id.into() });
        self
    }

    /// Adds a ground token for `ground_id` whose ground holds `device_ids`.
    #[must_use]
    pub fn with_ground_token<I, S>(
        mut self,
        token: impl Into<String>,
        ground_id: impl Into<String>,
        device_ids: I,
    ) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.ground_tokens.push(GroundToken {
            token: token.into(),
            ground_id: ground_id.into(),
            device_ids: device_ids.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// Sets the MFA reply shape.
    #[must_use]
    pub fn with_mfa_shape(mut self, shape: MfaShape) -> Self {
        self.mfa_shape = shape;
        self
    }

    /// Sets the refresh rotation mode.
    #[must_use]
    pub fn with_rotation(mut self, rotation: Rotation) -> Self {
        self.rotation = rotation;
        self
    }

    /// Sets the access token lifetime.
    #[must_use]
    pub fn with_access_lifetime(mut self, lifetime: Duration) -> Self {
        self.access_lifetime = lifetime;
        self
    }

    /// Sets the refresh token lifetime.
    #[must_use]
    pub fn with_refresh_lifetime(mut self, lifetime: Duration) -> Self {
        self.refresh_lifetime = lifetime;
        self
    }

    /// Sets the MFA challenge lifetime.
    #[must_use]
    pub fn with_challenge_lifetime(mut self, lifetime: Duration) -> Self {
        self.challenge_lifetime = lifetime;
        self
    }

    /// Sets how far the server's clock runs ahead (negative: behind) of this machine's.
    #[must_use]
    pub fn with_clock_offset_secs(mut self, offset: i64) -> Self {
        self.clock_offset_secs = offset;
        self
    }

    /// Replaces the accepted client ids.
    #[must_use]
    pub fn with_client_ids<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.client_ids = ids.into_iter().map(Into::into).collect();
        self
    }

    /// Replaces the MFA step's grant type and field names.
    #[must_use]
    pub fn with_mfa_fields(mut self, fields: MfaFields) -> Self {
        self.mfa_fields = fields;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let config = FakeConfig::default()
            .with_user(FakeUser::new("alice", "pa55word").with_totp_seed("JBSWY3DPEHPK3PXP"))
            .with_device_token("maker:devsecret", "D1")
            .with_ground_token("maker:grdsecret", "G1", ["D1"]);
        let text = format!("{config:?}");
        for secret in ["pa55word", "JBSWY3DPEHPK3PXP", "maker:devsecret", "maker:grdsecret"] {
            assert!(!text.contains(secret), "{secret} leaks into {text}");
        }
        assert!(text.contains("alice") && text.contains("G1"), "non-secrets stay visible: {text}");
    }

    #[test]
    fn shapes_and_rotations_have_stable_names() {
        assert_eq!(serde_json::to_string(&MfaShape::ErrorDescription).expect("serialisable"), "2");
        assert_eq!(serde_json::from_str::<MfaShape>("3").expect("valid"), MfaShape::TopLevelBadRequest);
        assert!(serde_json::from_str::<MfaShape>("0").is_err());
        assert_eq!(serde_json::to_string(&Rotation::Omit).expect("serialisable"), "\"omit\"");
        assert_eq!("fixed".parse::<Rotation>(), Ok(Rotation::Fixed));
    }
}
