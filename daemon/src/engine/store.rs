//! User sessions kept in the state directory ([`crate::state`]), as the engine's [`SessionStore`].

use std::time::SystemTime;

use token_model::ids::TokenName;

use super::session::{SavedSession, SessionStore};
use crate::state::{FORMAT_VERSION, HoldRecord, LoadOutcome, Origin, SessionRecord, StateDir};

/// The state directory as a session store, for one cloud instance and client.
#[derive(Debug)]
pub struct StateStore {
    dir: StateDir,
    origin: Origin,
}

impl StateStore {
    /// Wraps an opened state directory; `origin` (the configured `[api] url` and `client_id`) is recorded with
    /// every session, and a saved session made with another one is set aside rather than loaded.
    pub fn new(dir: StateDir, origin: Origin) -> Self {
        Self { dir, origin }
    }
}

/// `"client_id \"web\" at https://api.allthingstalk.io"`, or without the instance when it is not recorded.
fn describe_origin(url: Option<&str>, client_id: &str) -> String {
    match url {
        Some(url) => format!("client_id {client_id:?} at {url}"),
        None => format!("client_id {client_id:?}"),
    }
}

impl SessionStore for StateStore {
    fn load(&self, name: &TokenName) -> Result<Option<SavedSession>, String> {
        match self.dir.load(name, &self.origin, super::unix_seconds(SystemTime::now())) {
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
            LoadOutcome::OtherOrigin { saved_url, saved_client_id, moved_to } => {
                let saved = describe_origin(saved_url.as_deref(), saved_client_id.as_str());
                let configured = describe_origin(Some(&self.origin.api_url), self.origin.client_id.as_str());
                let other_url = saved_url.as_ref().is_some_and(|url| *url != self.origin.api_url);
                let other_client = saved_client_id != self.origin.client_id;
                let saved_url = saved_url.unwrap_or_default();
                let saved_client = saved_client_id.as_str();
                let setting = match (other_url, other_client) {
                    (true, true) => format!("[api] url back to {saved_url:?} and client_id back to {saved_client:?}"),
                    (true, false) => format!("[api] url back to {saved_url:?}"),
                    (false, _) => format!("[api] client_id back to {saved_client:?}"),
                };
                Err(format!(
                    "the saved session was made with {saved}, but the config now names {configured}, so it was not \
                     sent there; it was moved to {}. Log in again with att-token login {name}, or set {setting}, \
                     move the file back to {} and restart att-tokend",
                    moved_to.display(),
                    self.dir.file_of(name).display()
                ))
            }
            LoadOutcome::SealedWithoutKey { found } => Err(format!(
                "the saved session in {file} is sealed (state key {key}) but att-tokend has no state key, so it was \
                 left as it is: restore the key (the state-key credential, /etc/credstore.encrypted/att-tokend.state-key \
                 under systemd, or [daemon] state_key_file) and restart att-tokend, or log in again with att-token \
                 login {name} (the sealed file is then kept as {name}.json.other-key-<time>)",
                file = self.dir.file_of(name).display(),
                key = found.map_or_else(|| "unknown".to_owned(), |id| id.to_string()),
            )),
            LoadOutcome::OtherKey { found, configured } => Err(format!(
                "the saved session in {file} was sealed with another state key ({found}) than the configured one \
                 ({configured}), so it was left as it is: put back the key it was sealed with and restart att-tokend \
                 (README, \"Sealed sessions\"), or log in again with att-token login {name} (the sealed file is then \
                 kept as {name}.json.other-key-<time>)",
                file = self.dir.file_of(name).display(),
            )),
            LoadOutcome::Unsealed { moved_to } => Err(format!(
                "a session file in clear was found at {file} although a state key is configured, so it was not used \
                 (whoever can write the state directory could have put it there to make apps use their account) and \
                 was moved to {moved}. If it is this gateway's own (written before the key was set up), stop \
                 att-tokend, move it back to {file} and seal it with att-tokend --rekey (README, \"Sealed sessions\"); \
                 otherwise log in again with att-token login {name}",
                file = self.dir.file_of(name).display(),
                moved = moved_to.display(),
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
            client_id: self.origin.client_id.clone(),
            api_url: Some(self.origin.api_url.clone()),
            refresh_token: saved.refresh_token.clone(),
            access_token: saved.access_token.clone(),
            session: saved.session.clone(),
            refresh_sent_at: saved.refresh_sent_at,
        };
        self.dir.save(&record).map_err(|e| e.to_string())
    }

    fn storage(&self) -> &'static str {
        if self.dir.key().is_some() { "sealed" } else { "unsealed" }
    }

    fn remove(&self, name: &TokenName) -> Result<(), String> {
        self.dir.remove(name).map(|_| ()).map_err(|e| e.to_string())
    }

    fn load_hold(&self, name: &TokenName) -> Result<Option<HoldRecord>, String> {
        self.dir.load_hold(name, super::unix_seconds(SystemTime::now()))
    }

    fn save_hold(&self, hold: &HoldRecord) -> Result<(), String> {
        self.dir.save_hold(hold).map_err(|e| e.to_string())
    }

    fn remove_hold(&self, name: &TokenName) -> Result<(), String> {
        self.dir.remove_hold(name).map(|_| ()).map_err(|e| e.to_string())
    }
}
