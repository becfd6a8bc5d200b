//! The test's remote control: faults, revocation, clock, protocol variants, counters and inspection.
//!
//! Every method is synchronous and cheap, so it can be called from async and blocking tests alike; the same
//! operations are served over HTTP under `/_control/` for tests that run the `att-fake-cloud` binary.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::config::{DeviceToken, FakeUser, GroundToken, MfaFields, MfaShape, Rotation};
use crate::error::FakeCloudError;
use crate::fault::Fault;
use crate::state::{Counters, State};

/// What the server tasks and the control handles share.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Shared {
    pub(crate) fn new(state: State, shutdown: watch::Receiver<bool>) -> Self {
        Self { state: Mutex::new(state), shutdown }
    }

    /// The state; a panic elsewhere while holding the lock does not make it unusable.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves once the fake cloud is shutting down.
    pub(crate) async fn shutting_down(&self) {
        let mut rx = self.shutdown.clone();
        // An error means the sender is gone, which also means shutdown.
        let _ = rx.wait_for(|down| *down).await;
    }
}

/// A handle on a running fake cloud; clone it freely.
#[derive(Clone)]
pub struct Control {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

impl Control {
    /// Injects a fault (see [`Fault`]); faults are tried in injection order.
    pub fn inject_fault(&self, fault: Fault) {
        self.shared.lock().inject(fault);
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        self.shared.lock().clear_faults();
    }

    /// Revokes a token of any kind (access, refresh, device, ground); `false` when the fake never issued or
    /// knew it. A revoked access, device or ground token gets 401; a revoked refresh token `invalid_grant`.
    pub fn revoke(&self, token: &str) -> bool {
        self.shared.lock().revoke(token)
    }

    /// Revokes every access and refresh token of a user ("log out everywhere"); returns how many were live.
    pub fn revoke_user_sessions(&self, username: &str) -> usize {
        self.shared.lock().revoke_user(username)
    }

    /// Makes an access or refresh token expire now; `false` when unknown.
    pub fn expire_token(&self, token: &str) -> bool {
        self.shared.lock().expire(token)
    }

    /// Makes every access token expire now; returns how many were still valid.
    pub fn expire_all_access_tokens(&self) -> usize {
        self.shared.lock().expire_all_access_tokens()
    }

    /// Makes every refresh token expire now; returns how many were still valid.
    pub fn expire_all_refresh_tokens(&self) -> usize {
        self.shared.lock().expire_all_refresh_tokens()
    }

    /// Sets how many seconds the server's clock runs ahead (negative: behind) of this machine's. It shifts
    /// `Date`, `.issued`, `.expires`, the fake's notion of expiry and the time TOTP codes are checked against
    /// (and [`Control::current_totp`] computed at).
    pub fn set_clock_offset_secs(&self, offset: i64) {
        self.shared.lock().settings.clock_offset_secs = offset;
    }

    /// Moves the server's clock forward by `by`, so tokens expire as if that much time had passed.
    pub fn advance_clock(&self, by: Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        let mut state = self.shared.lock();
        state.settings.clock_offset_secs = state.settings.clock_offset_secs.saturating_add(secs);
    }

    /// The server clock's current offset in seconds.
    pub fn clock_offset_secs(&self) -> i64 {
        self.shared.lock().settings.clock_offset_secs
    }

    /// The server's clock right now.
    pub fn server_now(&self) -> SystemTime {
        self.shared.lock().server_now()
    }

    /// Switches what a refresh does with the refresh token, from the next refresh on.
    pub fn set_rotation(&self, rotation: Rotation) {
        self.shared.lock().settings.rotation = rotation;
    }

    /// Switches how MFA challenges are announced, from the next password grant on.
    pub fn set_mfa_shape(&self, shape: MfaShape) {
        self.shared.lock().settings.mfa_shape = shape;
    }

    /// Switches the MFA step's grant type and field names (the one variant the fake accepts), from the next
    /// MFA step on; any other grant type gets `unsupported_grant_type`, other field names `invalid_request`.
    pub fn set_mfa_fields(&self, fields: MfaFields) {
        self.shared.lock().settings.mfa_fields = fields;
    }

    /// Sets the lifetime of access tokens issued from now on.
    pub fn set_access_lifetime(&self, lifetime: Duration) {
        self.shared.lock().settings.access_lifetime = lifetime;
    }

    /// Sets the lifetime of refresh tokens issued from now on.
    pub fn set_refresh_lifetime(&self, lifetime: Duration) {
        self.shared.lock().settings.refresh_lifetime = lifetime;
    }

    /// Sets the lifetime of MFA challenges issued from now on.
    pub fn set_challenge_lifetime(&self, lifetime: Duration) {
        self.shared.lock().settings.challenge_lifetime = lifetime;
    }

    /// What the fake has counted so far.
    pub fn counters(&self) -> Counters {
        self.shared.lock().counters
    }

    /// Sets every counter back to zero.
    pub fn reset_counters(&self) {
        self.shared.lock().counters = Counters::default();
    }

    /// Whether `token` is an access token the cloud accepts right now (issued, not expired, not revoked).
    pub fn is_access_token_valid(&self, token: &str) -> bool {
        self.shared.lock().is_access_token_valid(token)
    }

    /// Whether `token` is a refresh token a refresh would accept right now (issued, live, not rotated away,
    /// not expired, not revoked).
    pub fn is_refresh_token_valid(&self, token: &str) -> bool {
        self.shared.lock().is_refresh_token_valid(token)
    }

    /// Adds an account, or replaces the one with the same (case-insensitive) username.
    ///
    /// # Errors
    /// [`FakeCloudError::InvalidTotpSeed`] when the seed is not base32.
    pub fn add_user(&self, user: FakeUser) -> Result<(), FakeCloudError> {
        self.shared.lock().add_user(user)
    }

    /// Adds a device token for `device_id`.
    pub fn add_device_token(&self, token: impl Into<String>, device_id: impl Into<String>) {
        self.shared.lock().add_device_token(DeviceToken { token: token.into(), device_id: device_id.into() });
    }

    /// Adds a ground token for `ground_id` whose ground holds `device_ids`.
    pub fn add_ground_token<I, S>(&self, token: impl Into<String>, ground_id: impl Into<String>, device_ids: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.shared.lock().add_ground_token(GroundToken {
            token: token.into(),
            ground_id: ground_id.into(),
            device_ids: device_ids.into_iter().map(Into::into).collect(),
        });
    }

    /// The 6-digit code the user's authenticator app shows right now (at the server's clock), or `None` for an
    /// unknown user or one without MFA.
    pub fn current_totp(&self, username: &str) -> Option<String> {
        self.shared.lock().current_totp(username)
    }
}
