//! `att-tokend --rekey`: every session file in the state directory sealed again under a new state key. The key
//! files are read with the sealed format's own reader (`seal`), the files rewritten by the state directory
//! (`state_dir`), which holds the lock.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use crate::config::Config;
use crate::seal::{self, StateKey};
use crate::state_dir;

/// Seals every session file in `[daemon] state_dir` again under the key in `new_key_file`. The files' current key
/// is `old_key_file`, else the configured one ([`seal::state_key`]); clear files are sealed too. It takes the state
/// directory's lock, so it refuses to run beside the daemon. Returns a summary for the operator.
pub fn rekey(config: &Config, new_key_file: &Path, old_key_file: Option<&Path>) -> anyhow::Result<String> {
    let new = StateKey::read(new_key_file, true).context("--rekey: the new key")?;
    let old = match old_key_file {
        Some(file) => Some(Arc::new(StateKey::read(file, true).context("--old-key-file")?)),
        None => {
            seal::state_key(config.daemon.state_key_file.as_deref()).map_err(anyhow::Error::msg)?.map(|(key, _)| key)
        }
    };
    let dir = state_dir::StateDir::open(&config.daemon.state_dir)?;
    let report = dir.rekey(old.as_deref(), &new)?;
    let summary = format!(
        "{}: {} session files sealed again with the new key {}, {} clear ones sealed, {} already sealed with it",
        dir.path().display(),
        report.resealed.len(),
        new.id(),
        report.sealed.len(),
        report.already.len()
    );
    if !report.failed.is_empty() {
        anyhow::bail!(
            "{summary}; {} left as they were:\n  {}\nrun --rekey again with the right --old-key-file; files already \
             sealed with the new key are skipped",
            report.failed.len(),
            report.failed.join("\n  ")
        );
    }
    Ok(format!(
        "{summary}. Now install the new key where the daemon reads it (README, \"Sealed sessions\"), then start it"
    ))
}
