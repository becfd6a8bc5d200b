//! User sessions kept in the state directory ([`crate::state`]), as the engine's [`SessionStore`].

use std::time::SystemTime;

use token_model::ids::{ClientId, TokenName};

use super::session::{SavedSession, SessionStore};
use crate::state::{FORMAT_VERSION, LoadOutcome, SessionRecord, StateDir};

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

impl SessionStore for StateStore {
    fn load(&self, name: &TokenName) -> Result<Option<SavedSession>, String> {
        match self.dir.load(name, super::unix_seconds(SystemTime::now())) {
            LoadOutcome::Missing => Ok(None),
            LoadOutcome::Loaded(record) => Ok(Some(SavedSession {
                username: record.username.clone(),
                refresh_token: record.refresh_token.clone(),
                access_token: record.access_token.clone(),
                session: record.session.clone(),
                refresh_sent_at: record.refresh_sent_at,
            })),
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

    fn save(&self, name: &TokenName, saved: &SavedSession) -> Result<(), String> {
        let record = SessionRecord {
            version: FORMAT_VERSION,
            name: name.clone(),
            username: saved.username.clone(),
            client_id: self.client_id.clone(),
            refresh_token: saved.refresh_token.clone(),
            access_token: saved.access_token.clone(),
            session: saved.session.clone(),
            refresh_sent_at: saved.refresh_sent_at,
        };
        self.dir.save(&record).map_err(|e| e.to_string())
    }

    fn remove(&self, name: &TokenName) -> Result<(), String> {
        self.dir.remove(name).map(|_| ()).map_err(|e| e.to_string())
    }
}
