//! User sessions kept in the state directory ([`crate::state_dir`]) for one cloud instance and client: the engine's
//! one store, with the words a person reads when a saved session cannot be used.
//!
//! Every method blocks on the file system; the session tasks call them on the blocking pool.

use std::time::SystemTime;

use token_model::ids::TokenName;

use crate::state_dir::{LoadOutcome, StateDir};
use crate::state_file::{HoldRecord, Origin, SessionRecord};

/// The state directory as the engine's session store, for one cloud instance and client.
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

    /// The cloud instance and client every session of this store is made with.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// How sessions are kept at rest, as the `SessionStorage` property shows it: `sealed` (encrypted with the
    /// state key) or `unsealed` (in clear).
    pub fn storage(&self) -> &'static str {
        if self.dir.key().is_some() { "sealed" } else { "unsealed" }
    }

    /// The saved session of `name`, if any; a file that cannot be used says why and what to do.
    pub fn load(&self, name: &TokenName) -> Result<Option<Box<SessionRecord>>, String> {
        match self.dir.load(name, &self.origin, super::unix_seconds(SystemTime::now())) {
            LoadOutcome::Missing => Ok(None),
            LoadOutcome::Loaded(record) => Ok(Some(record)),
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

    /// Saves (atomically replaces) the session of `record.name`.
    pub fn save(&self, record: &SessionRecord) -> Result<(), String> {
        self.dir.save(record).map_err(|e| e.to_string())
    }

    /// Forgets the session of `name`.
    pub fn remove(&self, name: &TokenName) -> Result<(), String> {
        self.dir.remove(name).map(|_| ()).map_err(|e| e.to_string())
    }

    /// The unattended-login hold of `name`, if one was saved (see [`HoldRecord`]).
    pub fn load_hold(&self, name: &TokenName) -> Result<Option<HoldRecord>, String> {
        self.dir.load_hold(name, super::unix_seconds(SystemTime::now()))
    }

    /// Saves an unattended-login hold.
    pub fn save_hold(&self, hold: &HoldRecord) -> Result<(), String> {
        self.dir.save_hold(hold).map_err(|e| e.to_string())
    }

    /// Forgets the unattended-login hold of `name`.
    pub fn remove_hold(&self, name: &TokenName) -> Result<(), String> {
        self.dir.remove_hold(name).map(|_| ()).map_err(|e| e.to_string())
    }
}

/// `"client_id \"web\" at https://api.allthingstalk.io"`, or without the instance when it is not recorded.
fn describe_origin(url: Option<&str>, client_id: &str) -> String {
    match url {
        Some(url) => format!("client_id {client_id:?} at {url}"),
        None => format!("client_id {client_id:?}"),
    }
}
