//! `att-tokend --rekey`: every session file in the state directory sealed again under a new state key.

use std::fs;

use token_model::ids::TokenName;
use zeroize::Zeroizing;

use super::{StateDir, StateError, io_error};
use crate::seal::{self, StateKey};
use crate::state_file::SessionRecord;

/// What [`StateDir::rekey`] did, file by file (token names; never a secret).
#[derive(Debug, Default)]
pub struct RekeyReport {
    /// Sealed files opened with the old key and sealed again with the new one.
    pub resealed: Vec<String>,
    /// Clear files sealed with the new key.
    pub sealed: Vec<String>,
    /// Files already sealed with the new key (a rekey run again after an interruption).
    pub already: Vec<String>,
    /// Files left as they were, each with why and what to do.
    pub failed: Vec<String>,
}

impl StateDir {
    /// Seals every session file (`<name>.json`) with `new`: a file sealed with `old` is opened and sealed again,
    /// a clear one is sealed, one already sealed with `new` is left alone (so an interrupted run can be run again).
    /// Each file is replaced atomically; a file that cannot be opened is left as it is and listed in
    /// [`RekeyReport::failed`]. Set-aside files are not touched.
    pub fn rekey(&self, old: Option<&StateKey>, new: &StateKey) -> Result<RekeyReport, StateError> {
        let mut report = RekeyReport::default();
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.path).map_err(io_error("list", &self.path))? {
            let entry = entry.map_err(io_error("list", &self.path))?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = file_name.strip_suffix(".json").and_then(|stem| TokenName::new(stem).ok()) {
                names.push(name);
            }
        }
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        for name in names {
            let file = self.file_of(&name);
            let bytes = Zeroizing::new(fs::read(&file).map_err(io_error("read", &file))?);
            let plaintext = if seal::is_sealed(&bytes) {
                if seal::key_id_of(&bytes) == Some(new.id()) {
                    report.already.push(name.to_string());
                    continue;
                }
                let Some(old) = old else {
                    report.failed.push(format!(
                        "{}: it is sealed (key {}) and no current key was given; give the key it was sealed with \
                         (--old-key-file, [daemon] state_key_file or the state-key credential)",
                        file.display(),
                        seal::key_id_of(&bytes).map_or_else(|| "unknown".to_owned(), |id| id.to_string())
                    ));
                    continue;
                };
                match seal::open(old, name.as_str(), &bytes) {
                    Ok(plaintext) => plaintext,
                    Err(error) => {
                        report.failed.push(format!("{}: {error}; it was left as it is", file.display()));
                        continue;
                    }
                }
            } else {
                match serde_json::from_slice::<SessionRecord>(&bytes) {
                    Ok(record) if record.name == name => bytes.clone(),
                    _ => {
                        report.failed.push(format!(
                            "{}: it is not a valid session file of {name}; it was left as it is (the daemon sets it \
                             aside at start)",
                            file.display()
                        ));
                        continue;
                    }
                }
            };
            let sealed = seal::seal(new, name.as_str(), &plaintext);
            self.write_atomic(&file, &sealed, |_| Ok(()))?;
            if seal::is_sealed(&bytes) { &mut report.resealed } else { &mut report.sealed }.push(name.to_string());
        }
        Ok(report)
    }
}
