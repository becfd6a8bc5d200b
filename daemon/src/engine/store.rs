//! User sessions kept in the state directory ([`crate::state`]), as the engine's [`SessionStore`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use token_model::ids::{ClientId, TokenName};
use token_model::plan::Rotation;

use super::session::{SavedSession, SessionStore};
use crate::state::{FORMAT_VERSION, LoadOutcome, RotationMode, SessionRecord, StateDir};

/// The state directory as a session store.
#[derive(Debug)]
pub struct StateStore {
    dir: StateDir,
    client_id: ClientId,
}

impl StateStore {
    /// Wraps an opened state directory; `client_id` is recorded with every session.
    pub fn new(dir: StateDir, client_id: ClientId) -> Self {
        Self { dir, client_id }
    }
}

fn to_unix(time: SystemTime) -> i64 {
    super::unix_seconds(time)
}

fn from_unix(seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// 0 stands for "unknown" in a record.
fn from_unix_known(seconds: i64) -> Option<SystemTime> {
    (seconds > 0).then(|| from_unix(seconds))
}

impl SessionStore for StateStore {
    fn load(&self, name: &TokenName) -> Result<Option<SavedSession>, String> {
        match self.dir.load(name, to_unix(SystemTime::now())) {
            LoadOutcome::Missing => Ok(None),
            LoadOutcome::Loaded(record) => {
                if record.refresh_started_at.is_some() {
                    tracing::info!(
                        token = %name,
                        "the daemon stopped during a refresh; the saved refresh token is tried again"
                    );
                }
                Ok(Some(SavedSession {
                    username: record.username.clone(),
                    refresh_token: record.refresh_token.clone(),
                    refresh_expires: from_unix_known(record.refresh_token_expires_at),
                    access_token: record.access_token.clone(),
                    access_obtained: from_unix(record.obtained_at),
                    access_expires: from_unix(record.access_token_expires_at),
                    rotation: match record.rotation {
                        RotationMode::Unknown => Rotation::Unknown,
                        RotationMode::Rotating => Rotation::Sliding,
                        RotationMode::Fixed => Rotation::Fixed,
                    },
                    known_good: from_unix_known(record.last_good_wall_clock),
                }))
            }
            LoadOutcome::SetAside { reason, moved_to } => Err(format!(
                "the saved session was unreadable ({reason}) and was moved to {}; log in again",
                moved_to.display()
            )),
            LoadOutcome::TooNew { version } => Err(format!(
                "the saved session was written by a newer att-tokend (format {version}); upgrade att-tokend or log in again"
            )),
            LoadOutcome::Failed(e) => Err(e.to_string()),
        }
    }

    fn save(&self, name: &TokenName, session: &SavedSession) -> Result<(), String> {
        let now = to_unix(SystemTime::now());
        let record = SessionRecord {
            version: FORMAT_VERSION,
            name: name.clone(),
            username: session.username.clone(),
            client_id: self.client_id.clone(),
            refresh_token: session.refresh_token.clone(),
            refresh_token_expires_at: session.refresh_expires.map_or(0, to_unix),
            access_token: session.access_token.clone(),
            access_token_expires_at: to_unix(session.access_expires),
            logged_in_at: to_unix(session.access_obtained),
            obtained_at: to_unix(session.access_obtained),
            rotation: match session.rotation {
                Rotation::Unknown => RotationMode::Unknown,
                Rotation::Sliding => RotationMode::Rotating,
                Rotation::Fixed => RotationMode::Fixed,
            },
            last_good_wall_clock: session.known_good.map_or(now, to_unix).max(now),
            server_clock_offset: None,
            refresh_started_at: None,
        };
        self.dir.save(&record).map_err(|e| e.to_string())
    }

    fn remove(&self, name: &TokenName) -> Result<(), String> {
        self.dir.remove(name).map(|_| ()).map_err(|e| e.to_string())
    }
}
