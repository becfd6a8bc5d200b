//! Where the state key comes from: `[daemon] state_key_file`, else the systemd credential `state-key`, else none
//! (sessions are stored unsealed, which the daemon says at start).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{CREDENTIAL_NAME, StateKey};

/// Where the state key came from, for the start message and `--rekey`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `[daemon] state_key_file`.
    File(PathBuf),
    /// The systemd credential `state-key`.
    Credential(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(path) => write!(f, "[daemon] state_key_file {}", path.display()),
            KeySource::Credential(path) => {
                write!(f, "the systemd credential {} ({})", CREDENTIAL_NAME, path.display())
            }
        }
    }
}

/// The state key that seals session files: `state_key_file` (`[daemon] state_key_file`) when set, else the
/// credential `state-key` in `credentials_dir` (`$CREDENTIALS_DIRECTORY`) when there is one, else none (sessions
/// are stored unsealed). A key that is named but unusable is an error, never a silent fallback to clear files.
pub fn state_key_in(
    state_key_file: Option<&Path>,
    credentials_dir: Option<&Path>,
) -> Result<Option<(Arc<StateKey>, KeySource)>, String> {
    if let Some(file) = state_key_file {
        let key = StateKey::read(file, true).map_err(|e| format!("[daemon] state_key_file: {e}"))?;
        return Ok(Some((Arc::new(key), KeySource::File(file.to_owned()))));
    }
    let Some(file) = credentials_dir.map(|dir| dir.join(CREDENTIAL_NAME)).filter(|file| file.exists()) else {
        return Ok(None);
    };
    let key = StateKey::read(&file, false).map_err(|e| {
        format!(
            "the {CREDENTIAL_NAME} credential: {e}; make a new one with systemd-creds encrypt (README, \"Sealed sessions\")"
        )
    })?;
    Ok(Some((Arc::new(key), KeySource::Credential(file))))
}

/// [`state_key_in`] with this process's `$CREDENTIALS_DIRECTORY`.
pub fn state_key(state_key_file: Option<&Path>) -> Result<Option<(Arc<StateKey>, KeySource)>, String> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    state_key_in(state_key_file, dir.as_deref())
}
