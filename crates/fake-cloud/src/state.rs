//! The fake cloud's memory and its protocol decisions: who may log in, which tokens live, what each grant answers.
//!
//! Everything here is synchronous and takes the server's `now`; the HTTP layer only moves bytes.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};
use totp_rs::{Algorithm, Secret, Totp};

use crate::config::{DeviceToken, FakeConfig, FakeUser, GroundToken, MfaFields, MfaShape, Rotation};
use crate::error::FakeCloudError;
use crate::fault::{self, ActiveFault, Fault, FaultKind};

/// What the fake has counted since start (or since the last reset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Counters {
    /// Requests to the cloud's endpoints (everything but `/_control`), faulted ones included.
    pub requests_total: u64,
    /// Password grants answered (any outcome).
    pub password_grants: u64,
    /// Password grants that returned tokens or an MFA challenge.
    pub password_grants_ok: u64,
    /// MFA steps answered (any outcome).
    pub mfa_steps: u64,
    /// MFA steps that returned tokens.
    pub mfa_steps_ok: u64,
    /// Refresh grants answered (any outcome).
    pub refreshes: u64,
    /// Refresh grants that returned tokens.
    pub refreshes_ok: u64,
    /// Refresh grants that presented a refresh token already rotated away.
    pub refresh_reuses: u64,
    /// The most refresh grants that were in flight at the same time.
    pub max_concurrent_refreshes: u64,
    /// Requests a fault was applied to.
    pub faults_applied: u64,
}

/// The settings that can change at run time.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) client_ids: Vec<String>,
    pub(crate) mfa_shape: MfaShape,
    pub(crate) mfa_fields: MfaFields,
    pub(crate) challenge_lifetime: Duration,
    pub(crate) access_lifetime: Duration,
    pub(crate) refresh_lifetime: Duration,
    pub(crate) rotation: Rotation,
    pub(crate) clock_offset_secs: i64,
}

struct UserRecord {
    username: String,
    password: String,
    totp: Option<Totp>,
    user_id: String,
}

struct Challenge {
    username: String,
    user_id: String,
    client_id: String,
    expires_at: SystemTime,
    used: bool,
}

struct AccessRecord {
    username: String,
    expires_at: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefreshStatus {
    Live,
    Rotated,
    Revoked,
}

struct RefreshRecord {
    username: String,
    client_id: String,
    expires_at: SystemTime,
    status: RefreshStatus,
}

struct GroundRecord {
    ground_id: String,
    device_ids: Vec<String>,
}

/// The answer to a `POST /login`.
#[derive(Debug)]
pub(crate) enum LoginOutcome {
    /// HTTP 200 with this token reply.
    Tokens(Value),
    /// The account asks for an MFA code.
    Mfa { mfa_uid: String, user_id: String },
    /// HTTP 400 with this error code and optional description.
    Error { code: &'static str, description: Option<String> },
}

impl LoginOutcome {
    fn error(code: &'static str, description: impl Into<String>) -> Self {
        Self::Error { code, description: Some(description.into()) }
    }
}

/// Who a bearer token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bearer {
    /// A user's access token.
    User,
    /// A device token for this device.
    Device(String),
    /// A ground token for this ground and its devices.
    Ground { ground_id: String, device_ids: Vec<String> },
}

/// The fake cloud's whole memory, behind one mutex.
pub(crate) struct State {
    pub(crate) settings: Settings,
    users: Vec<UserRecord>,
    challenges: HashMap<String, Challenge>,
    access: HashMap<String, AccessRecord>,
    refresh: HashMap<String, RefreshRecord>,
    devices: HashMap<String, String>,
    grounds: HashMap<String, GroundRecord>,
    faults: Vec<ActiveFault>,
    pub(crate) counters: Counters,
    refreshes_in_flight: u64,
}

const TOKEN_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random_string(alphabet: &[u8], len: usize) -> String {
    (0..len).map(|_| char::from(alphabet[fastrand::usize(..alphabet.len())])).collect()
}

/// A fresh opaque token: 43 to 64 base64url characters.
fn new_token() -> String {
    random_string(TOKEN_ALPHABET, fastrand::usize(43..=64))
}

/// A fresh 24-character id, the shape of the cloud's ids.
fn new_id() -> String {
    random_string(ID_ALPHABET, 24)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn build_totp(user: &FakeUser) -> Result<Option<Totp>, FakeCloudError> {
    let Some(seed) = &user.totp_seed else { return Ok(None) };
    let normalised: String =
        seed.chars().filter(|c| !c.is_whitespace() && *c != '=').map(|c| c.to_ascii_uppercase()).collect();
    let secret = Secret::try_from_base32(&normalised)
        .ok()
        .filter(|s| !s.as_bytes().is_empty())
        .ok_or_else(|| FakeCloudError::InvalidTotpSeed { username: user.username.clone() })?;
    Ok(Some(
        totp_rs::Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(6)
            .with_skew(1)
            .with_step_duration(30)
            .with_secret(secret)
            .build_noncompliant(),
    ))
}

impl State {
    /// Builds the memory from a configuration; fails on a TOTP seed that is not base32.
    pub(crate) fn new(config: FakeConfig) -> Result<Self, FakeCloudError> {
        let mut state = Self {
            settings: Settings {
                client_ids: config.client_ids,
                mfa_shape: config.mfa_shape,
                mfa_fields: config.mfa_fields,
                challenge_lifetime: config.challenge_lifetime,
                access_lifetime: config.access_lifetime,
                refresh_lifetime: config.refresh_lifetime,
                rotation: config.rotation,
                clock_offset_secs: config.clock_offset_secs,
            },
            users: Vec::new(),
            challenges: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            devices: HashMap::new(),
            grounds: HashMap::new(),
            faults: Vec::new(),
            counters: Counters::default(),
            refreshes_in_flight: 0,
        };
        for user in config.users {
            state.add_user(user)?;
        }
        for device in config.device_tokens {
            state.add_device_token(device);
        }
        for ground in config.ground_tokens {
            state.add_ground_token(ground);
        }
        Ok(state)
    }

    /// The server's clock: this machine's shifted by the configured offset.
    pub(crate) fn server_now(&self) -> SystemTime {
        let now = SystemTime::now();
        let offset = Duration::from_secs(self.settings.clock_offset_secs.unsigned_abs());
        if self.settings.clock_offset_secs >= 0 { now + offset } else { now - offset }
    }

    /// Adds (or replaces, by case-insensitive username) an account.
    pub(crate) fn add_user(&mut self, user: FakeUser) -> Result<(), FakeCloudError> {
        let totp = build_totp(&user)?;
        let record = UserRecord { username: user.username, password: user.password, totp, user_id: new_id() };
        self.users.retain(|u| !u.username.eq_ignore_ascii_case(&record.username));
        self.users.push(record);
        Ok(())
    }

    pub(crate) fn add_device_token(&mut self, device: DeviceToken) {
        self.devices.insert(device.token, device.device_id);
    }

    pub(crate) fn add_ground_token(&mut self, ground: GroundToken) {
        self.grounds.insert(ground.token, GroundRecord { ground_id: ground.ground_id, device_ids: ground.device_ids });
    }

    fn user(&self, username: &str) -> Option<&UserRecord> {
        self.users.iter().find(|u| u.username.eq_ignore_ascii_case(username))
    }

    /// The TOTP code a user's authenticator shows right now, if the user has MFA. The app agrees with the
    /// server's clock (shifted by the offset), as a phone with network time agrees with the real cloud.
    pub(crate) fn current_totp(&self, username: &str) -> Option<String> {
        let totp = self.user(username)?.totp.as_ref()?;
        Some(totp.generate(unix_secs(self.server_now())).to_string())
    }

    /// Answers a `POST /login` form.
    pub(crate) fn token_request(&mut self, form: &HashMap<String, String>) -> LoginOutcome {
        let now = self.server_now();
        let grant_type = form.get("grant_type").map(String::as_str);
        let is_mfa = grant_type == Some(self.settings.mfa_fields.grant_type.as_str());
        match grant_type {
            Some("password") => self.counters.password_grants += 1,
            Some("refresh_token") => self.counters.refreshes += 1,
            _ if is_mfa => self.counters.mfa_steps += 1,
            _ => {}
        }
        let client_id = match form.get("client_id") {
            Some(c) if self.settings.client_ids.iter().any(|known| known == c) => c.clone(),
            Some(_) => {
                return LoginOutcome::error(
                    "invalid_clientId",
                    format!("The client_id is unknown: use one of {}.", self.settings.client_ids.join(", ")),
                );
            }
            None => {
                return LoginOutcome::error(
                    "invalid_clientId",
                    format!(
                        "The client_id is missing: send one of {} in an application/x-www-form-urlencoded body.",
                        self.settings.client_ids.join(", ")
                    ),
                );
            }
        };
        match grant_type {
            Some("password") => self.password_grant(form, &client_id, now),
            Some("refresh_token") => self.refresh_grant(form, &client_id, now),
            Some(_) if is_mfa => self.mfa_step(form, &client_id, now),
            Some(other) => LoginOutcome::error(
                "unsupported_grant_type",
                format!("The grant_type {other:?} is not supported: use password, refresh_token or the MFA grant."),
            ),
            None => LoginOutcome::error("unsupported_grant_type", "The grant_type is missing."),
        }
    }

    fn password_grant(&mut self, form: &HashMap<String, String>, client_id: &str, now: SystemTime) -> LoginOutcome {
        let wrong = || LoginOutcome::error("invalid_grant", "The user name or password is incorrect.");
        let (Some(username), Some(password)) = (form.get("username"), form.get("password")) else {
            return wrong();
        };
        let Some(user) = self.user(username) else { return wrong() };
        if user.password != *password {
            return wrong();
        }
        let username = user.username.clone();
        let user_id = user.user_id.clone();
        let has_mfa = user.totp.is_some();
        self.counters.password_grants_ok += 1;
        if has_mfa {
            let mfa_uid = new_token();
            self.challenges.insert(
                mfa_uid.clone(),
                Challenge {
                    username,
                    user_id: user_id.clone(),
                    client_id: client_id.to_owned(),
                    expires_at: now + self.settings.challenge_lifetime,
                    used: false,
                },
            );
            return LoginOutcome::Mfa { mfa_uid, user_id };
        }
        LoginOutcome::Tokens(self.issue(&username, client_id, now, None))
    }

    fn mfa_step(&mut self, form: &HashMap<String, String>, client_id: &str, now: SystemTime) -> LoginOutcome {
        let fields = &self.settings.mfa_fields;
        let (Some(uid), Some(user_id), Some(code)) =
            (form.get(&fields.uid_field), form.get(&fields.user_field), form.get(&fields.code_field))
        else {
            // As an OAuth2 server answers a request it cannot read: nothing is checked, the challenge stays usable.
            let missing: Vec<&str> = [&fields.uid_field, &fields.user_field, &fields.code_field]
                .into_iter()
                .filter(|name| !form.contains_key(*name))
                .map(String::as_str)
                .collect();
            return LoginOutcome::error(
                "invalid_request",
                format!("The request is missing the required field {}.", missing.join(", ")),
            );
        };
        let Some(challenge) = self.challenges.get(uid) else {
            return LoginOutcome::error(
                "invalid_grant",
                "The MFA challenge is unknown: log in with the password again.",
            );
        };
        if challenge.used {
            return LoginOutcome::error(
                "invalid_grant",
                "The MFA challenge was already used: log in with the password again.",
            );
        }
        if now >= challenge.expires_at {
            return LoginOutcome::error(
                "invalid_grant",
                "The MFA challenge has expired: log in with the password again.",
            );
        }
        if challenge.user_id != *user_id {
            return LoginOutcome::error("invalid_grant", "The MFA challenge belongs to another user.");
        }
        if challenge.client_id != client_id {
            return LoginOutcome::error(
                "invalid_clientId",
                "The MFA step must use the client_id of the password grant.",
            );
        }
        let username = challenge.username.clone();
        // Codes are checked against the server's own clock, as a real cloud whose time differs from the
        // client's would.
        let server_secs = unix_secs(now);
        let code_ok = self
            .user(&username)
            .and_then(|u| u.totp.as_ref())
            .is_some_and(|totp| totp.check(code, server_secs).is_some());
        if !code_ok {
            return LoginOutcome::error(
                "invalid_grant",
                "The MFA code is wrong or expired: enter the current code from the authenticator app.",
            );
        }
        if let Some(challenge) = self.challenges.get_mut(uid) {
            challenge.used = true;
        }
        self.counters.mfa_steps_ok += 1;
        LoginOutcome::Tokens(self.issue(&username, client_id, now, None))
    }

    fn refresh_grant(&mut self, form: &HashMap<String, String>, client_id: &str, now: SystemTime) -> LoginOutcome {
        let rejected = LoginOutcome::Error { code: "invalid_grant", description: None };
        let Some(presented) = form.get("refresh_token") else { return rejected };
        let Some(record) = self.refresh.get(presented) else { return rejected };
        if record.client_id != client_id {
            return LoginOutcome::error(
                "invalid_clientId",
                "The refresh token was issued to another client_id: refresh with the client_id of the login.",
            );
        }
        match record.status {
            RefreshStatus::Rotated => {
                self.counters.refresh_reuses += 1;
                return rejected;
            }
            RefreshStatus::Revoked => return rejected,
            RefreshStatus::Live if now >= record.expires_at => return rejected,
            RefreshStatus::Live => {}
        }
        let username = record.username.clone();
        self.counters.refreshes_ok += 1;
        let reply = match self.settings.rotation {
            Rotation::Sliding => {
                if let Some(old) = self.refresh.get_mut(presented) {
                    old.status = RefreshStatus::Rotated;
                }
                self.issue(&username, client_id, now, None)
            }
            Rotation::Fixed => self.issue(&username, client_id, now, Some(Some(presented.clone()))),
            Rotation::Omit => self.issue(&username, client_id, now, Some(None)),
        };
        LoginOutcome::Tokens(reply)
    }

    /// Issues an access token; `keep_refresh` is `None` for a new refresh token, `Some(Some(old))` to repeat
    /// the old one, `Some(None)` to omit it from the reply.
    fn issue(
        &mut self,
        username: &str,
        client_id: &str,
        now: SystemTime,
        keep_refresh: Option<Option<String>>,
    ) -> Value {
        let access_token = new_token();
        let lifetime = self.settings.access_lifetime;
        let expires_at = now + lifetime;
        self.access.insert(access_token.clone(), AccessRecord { username: username.to_owned(), expires_at });
        let refresh_token = match keep_refresh {
            None => {
                let token = new_token();
                self.refresh.insert(
                    token.clone(),
                    RefreshRecord {
                        username: username.to_owned(),
                        client_id: client_id.to_owned(),
                        expires_at: now + self.settings.refresh_lifetime,
                        status: RefreshStatus::Live,
                    },
                );
                Some(token)
            }
            Some(kept) => kept,
        };
        let mut reply = json!({
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": lifetime.as_secs().saturating_sub(1),
            "as:client_id": client_id,
            "userName": username,
            ".issued": httpdate::fmt_http_date(now),
            ".expires": httpdate::fmt_http_date(expires_at),
        });
        if let (Some(token), Some(object)) = (refresh_token, reply.as_object_mut()) {
            object.insert("refresh_token".to_owned(), Value::String(token));
        }
        reply
    }

    /// Who `token` speaks for right now, or `None` when it is unknown, expired or revoked.
    pub(crate) fn bearer(&self, token: &str) -> Option<Bearer> {
        if let Some(record) = self.access.get(token) {
            return (self.server_now() < record.expires_at).then_some(Bearer::User);
        }
        if let Some(device_id) = self.devices.get(token) {
            return Some(Bearer::Device(device_id.clone()));
        }
        self.grounds
            .get(token)
            .map(|g| Bearer::Ground { ground_id: g.ground_id.clone(), device_ids: g.device_ids.clone() })
    }

    /// Every ground the fake knows of, with its devices.
    pub(crate) fn grounds(&self) -> Vec<(String, Vec<String>)> {
        let mut grounds: Vec<(String, Vec<String>)> =
            self.grounds.values().map(|g| (g.ground_id.clone(), g.device_ids.clone())).collect();
        grounds.sort();
        grounds.dedup_by(|a, b| a.0 == b.0);
        grounds
    }

    /// Whether `token` is an access token that works right now.
    pub(crate) fn is_access_token_valid(&self, token: &str) -> bool {
        self.access.get(token).is_some_and(|r| self.server_now() < r.expires_at)
    }

    /// Whether `token` is a refresh token a refresh would accept right now.
    pub(crate) fn is_refresh_token_valid(&self, token: &str) -> bool {
        self.refresh.get(token).is_some_and(|r| r.status == RefreshStatus::Live && self.server_now() < r.expires_at)
    }

    /// Revokes any kind of token; `true` when the token was known.
    pub(crate) fn revoke(&mut self, token: &str) -> bool {
        if self.access.remove(token).is_some() {
            return true;
        }
        if let Some(record) = self.refresh.get_mut(token) {
            record.status = RefreshStatus::Revoked;
            return true;
        }
        self.devices.remove(token).is_some() || self.grounds.remove(token).is_some()
    }

    /// Revokes every access and refresh token of a user; returns how many were live.
    pub(crate) fn revoke_user(&mut self, username: &str) -> usize {
        let before = self.access.len();
        self.access.retain(|_, r| !r.username.eq_ignore_ascii_case(username));
        let mut count = before - self.access.len();
        for record in self.refresh.values_mut() {
            if record.username.eq_ignore_ascii_case(username) && record.status == RefreshStatus::Live {
                record.status = RefreshStatus::Revoked;
                count += 1;
            }
        }
        count
    }

    /// Makes an access or refresh token expire now; `true` when the token was known.
    pub(crate) fn expire(&mut self, token: &str) -> bool {
        let now = self.server_now();
        if let Some(record) = self.access.get_mut(token) {
            record.expires_at = now;
            return true;
        }
        if let Some(record) = self.refresh.get_mut(token) {
            record.expires_at = now;
            return true;
        }
        false
    }

    /// Makes every access token expire now; returns how many were still valid.
    pub(crate) fn expire_all_access_tokens(&mut self) -> usize {
        let now = self.server_now();
        let mut count = 0;
        for record in self.access.values_mut() {
            if now < record.expires_at {
                count += 1;
            }
            record.expires_at = record.expires_at.min(now);
        }
        count
    }

    /// Makes every refresh token expire now; returns how many were still valid.
    pub(crate) fn expire_all_refresh_tokens(&mut self) -> usize {
        let now = self.server_now();
        let mut count = 0;
        for record in self.refresh.values_mut() {
            if record.status == RefreshStatus::Live && now < record.expires_at {
                count += 1;
            }
            record.expires_at = record.expires_at.min(now);
        }
        count
    }

    pub(crate) fn inject(&mut self, fault: Fault) {
        self.faults.push(ActiveFault::new(fault, Instant::now()));
    }

    pub(crate) fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// The fault to apply to a request on `path`, if any.
    pub(crate) fn take_fault(&mut self, path: &str) -> Option<FaultKind> {
        let kind = fault::take(&mut self.faults, path, Instant::now())?;
        self.counters.faults_applied += 1;
        Some(kind)
    }

    pub(crate) fn refresh_started(&mut self) {
        self.refreshes_in_flight += 1;
        self.counters.max_concurrent_refreshes = self.counters.max_concurrent_refreshes.max(self.refreshes_in_flight);
    }

    pub(crate) fn refresh_finished(&mut self) {
        self.refreshes_in_flight = self.refreshes_in_flight.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 appendix B, SHA1, T = 59 s: 94287082 (8 digits) ends in 287082 (6 digits).
        let user = FakeUser::new("a", "b").with_totp_seed("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let totp = build_totp(&user).expect("valid seed").expect("has MFA");
        assert_eq!(totp.generate(59).to_string(), "287082");
        assert!(totp.check("287082", 59 + 30).is_some(), "the neighbouring step is accepted");
        assert!(totp.check("287082", 59 + 60).is_none(), "two steps away is refused");
    }

    #[test]
    fn bad_seed_is_refused() {
        let user = FakeUser::new("a", "b").with_totp_seed("not base32!");
        assert!(matches!(
            State::new(FakeConfig::default().with_user(user)),
            Err(FakeCloudError::InvalidTotpSeed { .. })
        ));
    }

    #[test]
    fn expires_in_is_lifetime_minus_one() {
        let mut state = State::new(FakeConfig::default().with_user(FakeUser::new("u", "p"))).expect("config");
        let LoginOutcome::Tokens(reply) = state.token_request(&form(&[
            ("grant_type", "password"),
            ("username", "U"),
            ("password", "p"),
            ("client_id", "web"),
        ])) else {
            panic!("expected tokens");
        };
        assert_eq!(reply["expires_in"], 3599);
        assert_eq!(reply["userName"], "u");
    }
}
