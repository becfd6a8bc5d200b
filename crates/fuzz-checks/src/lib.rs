//! What must hold for every input to a parser of hostile input, one `check_*` function per fuzz target.
//!
//! Each check takes the fuzzer's bytes, runs the parser and panics when a promise is broken: beyond "no
//! panic", output sizes stay bounded whatever the input's size, errors never carry a secret from the input, and
//! round trips are identities. The fuzz targets in `fuzz/` (nightly, `cargo xtask fuzz`) call these functions,
//! and `tests/corpus.rs` replays every committed corpus file through them on stable, so a finding, once its
//! input is in the corpus, stays fixed.
//!
//! Secrets are planted: the byte `0x01` in an input stands for [`LONG_SECRET`] (token-like) and `0x02` for
//! [`SHORT_SECRET`] (password-like), see [`plant`]. Where a check can tell that a planted secret sits only where
//! the protocol puts secrets (the value of `access_token`, `refresh_token`, `password`, `MfaUid`, ...), it
//! asserts that no error or `Debug` output shows it.

mod config;
mod ids;
mod login;
mod path;
mod secrets;
mod state;

pub use config::check_config;
pub use ids::check_dbus_args;
pub use login::check_login_reply;
pub use path::check_path_element;
pub use secrets::{LONG_SECRET, SHORT_SECRET, plant};
pub use state::check_state_file;

/// A check: panics when the input breaks a promise.
pub type Check = fn(&[u8]);

/// Every check by the name of its fuzz target (and corpus directory).
pub const TARGETS: &[(&str, Check)] = &[
    ("login_reply", check_login_reply),
    ("config", check_config),
    ("state_file", check_state_file),
    ("path_element", check_path_element),
    ("dbus_args", check_dbus_args),
];

/// Panics unless `text` is at most `max` bytes long.
fn assert_at_most(what: &str, text: &str, max: usize) {
    assert!(
        text.len() <= max,
        "{what} is {} bytes, more than {max}; it starts with {:?}",
        text.len(),
        text.chars().take(300).collect::<String>()
    );
}
