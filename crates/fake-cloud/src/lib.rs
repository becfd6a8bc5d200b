//! A faithful fake of the AllThingsTalk cloud, for tests and the demo.
//!
//! It implements `crates/login-flow/PROTOCOL.md` on its own (it shares no code with the client), so a client mistake
//! shows up as a failed test: `POST /login` with the password grant, the MFA step and the refresh grant,
//! refresh token rotation (sliding, fixed, omitted), the error table, and the token-check endpoints
//! `GET /me/grounds`, `GET /device/{id}` and `GET /ground/{id}/devices`. Every reply carries a `Date` header
//! from the server's (shiftable) clock.
//!
//! ```no_run
//! # async fn demo() {
//! use fake_cloud::{FakeCloud, FakeConfig, FakeUser, Fault, FaultKind};
//! let cloud = FakeCloud::start(
//!     FakeConfig::default().with_user(FakeUser::new("alice@example.com", "s3cret").with_totp_seed("JBSWY3DPEHPK3PXP")),
//! )
//! .await;
//! let base_url = cloud.url(); // "http://127.0.0.1:PORT"
//! let code = cloud.control().current_totp("alice@example.com");
//! cloud.control().inject_fault(Fault::new(FaultKind::ServiceUnavailable).times(2).on_path("/login"));
//! # }
//! ```
//!
//! # Control over HTTP
//! The binary `att-fake-cloud` serves the [`Control`] operations as JSON under `/_control/`
//! (not subject to faults, not counted):
//!
//! | route | body | reply |
//! |---|---|---|
//! | `POST /_control/faults` | a [`Fault`], e.g. `{"kind":"reset","times":1,"path":"/login"}` | 204 |
//! | `DELETE /_control/faults` | | 204 |
//! | `POST /_control/revoke` | `{"token":…}` | `{"revoked":bool}` |
//! | `POST /_control/revoke-user` | `{"username":…}` | `{"revoked":n}` |
//! | `POST /_control/expire` | `{"token":…}` | `{"expired":bool}` |
//! | `POST /_control/expire-all` | `{"access":bool,"refresh":bool}` | `{"access":n,"refresh":n}` |
//! | `GET /_control/clock` | | `{"offset_secs":n,"now":"<HTTP-date>"}` |
//! | `POST /_control/clock` | `{"offset_secs":n}` and/or `{"advance_secs":n}` | as `GET` |
//! | `POST /_control/rotation` | `{"rotation":"sliding"\|"fixed"\|"omit"}` | 204 |
//! | `POST /_control/mfa-shape` | `{"shape":1\|2\|3}` | 204 |
//! | `POST /_control/mfa-fields` | `{"grant_type":…,"uid_field":…,"user_field":…,"code_field":…}` (each optional, default `mfa`, `mfa_uid`, `user_id`, `code`) | 204 |
//! | `POST /_control/lifetimes` | `{"access_secs":n,"refresh_secs":n,"challenge_secs":n}` (each optional) | 204 |
//! | `GET /_control/counters` | | [`Counters`] as JSON |
//! | `POST /_control/counters/reset` | | 204 |
//! | `POST /_control/access-token-valid` | `{"token":…}` | `{"valid":bool}` |
//! | `POST /_control/refresh-token-valid` | `{"token":…}` | `{"valid":bool}` |
//! | `POST /_control/users` | `{"username":…,"password":…,"totp_seed":…?}` | 204, or 400 for a bad seed |
//! | `POST /_control/device-tokens` | `{"token":…,"device_id":…}` | 204 |
//! | `POST /_control/ground-tokens` | `{"token":…,"ground_id":…,"device_ids":[…]}` | 204 |
//! | `POST /_control/totp` | `{"username":…}` | `{"code":"123456"}`, or 404 |
//!
//! # What the fake decides where the protocol is silent
//! - A user token may read every device and every ground the fake knows (from its ground tokens).
//! - A wrong MFA code leaves the challenge usable until it expires; a successful step uses it up.
//! - The MFA step is taken under one grant type and set of field names ([`Control::set_mfa_fields`]); another
//!   grant type gets `unsupported_grant_type`, a missing field `invalid_request` naming it, and neither touches
//!   the challenge.
//! - After a sliding rotation the previous access token stays valid until it expires.
//! - TOTP codes are checked against the shifted server clock, and `current_totp` gives the code of that time:
//!   the user's authenticator app agrees with the cloud, as a phone with network time would.
//! - `client_id` is checked before `grant_type`.

mod config;
mod control;
mod error;
mod fault;
mod http_control;
mod server;
mod state;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub use config::{DEFAULT_CLIENT_IDS, DeviceToken, FakeConfig, FakeUser, GroundToken, MfaFields, MfaShape, Rotation};
pub use control::Control;
pub use error::FakeCloudError;
pub use fault::{Fault, FaultKind};
pub use state::Counters;

/// How the server runs: on the caller's runtime, or on a thread of its own.
enum Runner {
    Task { stop: watch::Sender<bool>, task: Option<JoinHandle<()>> },
    Thread { stop: Option<oneshot::Sender<()>>, thread: Option<std::thread::JoinHandle<()>> },
}

/// A running fake cloud on loopback. Dropping it stops it.
#[must_use = "the fake cloud stops when dropped"]
pub struct FakeCloud {
    addr: SocketAddr,
    control: Control,
    runner: Runner,
}

impl std::fmt::Debug for FakeCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeCloud").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl FakeCloud {
    /// Starts a fake cloud on `127.0.0.1` at a free port, on the current tokio runtime.
    ///
    /// The server runs on that runtime's threads: a test that blocks them (a blocking HTTP client, a
    /// `std::thread::sleep` on a current-thread runtime) starves it. Use [`FakeCloud::start_blocking`] then.
    ///
    /// # Panics
    /// When the configuration is invalid (a TOTP seed that is not base32) or no loopback port can be bound;
    /// use [`FakeCloud::bind`] to get these as errors.
    pub async fn start(config: FakeConfig) -> Self {
        match Self::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await {
            Ok(cloud) => cloud,
            Err(error) => panic!("the fake cloud could not start: {error}"),
        }
    }

    /// Starts a fake cloud on `addr`, on the current tokio runtime.
    ///
    /// # Errors
    /// [`FakeCloudError::InvalidTotpSeed`] for a bad seed, [`FakeCloudError::Bind`] when `addr` is taken.
    pub async fn bind(addr: SocketAddr, config: FakeConfig) -> Result<Self, FakeCloudError> {
        let state = state::State::new(config)?;
        let (listener, local) = server::bind(addr).await.map_err(|source| FakeCloudError::Bind { addr, source })?;
        let (stop, stopped) = server::shutdown_switch();
        let shared = Arc::new(control::Shared::new(state, stopped));
        let app = server::router(shared.clone());
        let task = tokio::spawn(server::accept_loop(listener, app, shared.clone()));
        Ok(Self { addr: local, control: Control { shared }, runner: Runner::Task { stop, task: Some(task) } })
    }

    /// Starts a fake cloud on `127.0.0.1` at a free port, on a thread with its own runtime: for tests that
    /// are not async, or whose runtime is busy.
    ///
    /// # Panics
    /// As [`FakeCloud::start`]; use [`FakeCloud::bind_blocking`] to get errors instead.
    pub fn start_blocking(config: FakeConfig) -> Self {
        match Self::bind_blocking(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config) {
            Ok(cloud) => cloud,
            Err(error) => panic!("the fake cloud could not start: {error}"),
        }
    }

    /// Starts a fake cloud on `addr`, on a thread with its own runtime.
    ///
    /// # Errors
    /// As [`FakeCloud::bind`], plus [`FakeCloudError::Runtime`] when the thread cannot start.
    pub fn bind_blocking(addr: SocketAddr, config: FakeConfig) -> Result<Self, FakeCloudError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-cloud".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(FakeCloudError::Runtime(error)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Self::bind(addr, config).await {
                        Ok(cloud) => {
                            let _ = ready_tx.send(Ok((cloud.addr, cloud.control.clone())));
                            // Either an explicit stop or the handle being dropped ends the server.
                            let _ = stop_rx.await;
                            cloud.shutdown().await;
                        }
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                        }
                    }
                });
            })
            .map_err(FakeCloudError::Runtime)?;
        let (addr, control) = ready_rx
            .recv()
            .map_err(|_| FakeCloudError::Runtime(std::io::Error::other("the fake cloud's thread ended early")))??;
        Ok(Self { addr, control, runner: Runner::Thread { stop: Some(stop_tx), thread: Some(thread) } })
    }

    /// The base URL, like `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle to inspect and steer it; clones share the same server.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Stops accepting, closes every connection (hung requests included) and waits until the server is gone.
    pub async fn shutdown(mut self) {
        match &mut self.runner {
            Runner::Task { stop, task } => {
                stop.send_replace(true);
                if let Some(task) = task.take() {
                    let _ = task.await;
                }
            }
            Runner::Thread { stop, thread } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                if let Some(thread) = thread.take() {
                    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
                }
            }
        }
    }
}

impl Drop for FakeCloud {
    fn drop(&mut self) {
        match &mut self.runner {
            Runner::Task { stop, .. } => {
                stop.send_replace(true);
            }
            Runner::Thread { stop, thread } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}
