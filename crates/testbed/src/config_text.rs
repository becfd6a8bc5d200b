//! The text of an `att-tokend` config as the tests and tools write it, built table by table, so that each
//! caller names only what its case is about (a fast refresh, a device token, a reader) instead of spelling
//! the TOML again.

use std::fmt;
use std::path::Path;

/// `[daemon]` lines that turn the fleet behaviour's waits off: no spread of periodic or first requests, and a
/// request budget no test reaches. Tests that expect refreshes, probes and syncs at once add them to their
/// `[daemon]` table ([`ConfigText::fleet_at_once`]); a test of the fleet behaviour writes its own.
pub const FLEET_AT_ONCE: &str =
    "maintenance_spread = \"0s\"\nstartup_spread = \"0s\"\nrequest_burst = 60000\nrequests_per_minute = 60000\n";

/// An `att-tokend` config file's text, built table by table: each method adds one table (a blank line before
/// it), and [`ConfigText::line`] adds a line to the table added last. It dereferences to the text.
///
/// ```
/// # use std::path::Path;
/// let config = testbed::ConfigText::new().fast_refresh().user("main").device("sensor", "d", Path::new("/t"));
/// assert!(config.starts_with("[refresh]\nsafety_margin = \"2s\"\n"));
/// assert!(config.contains("\n\n[[token]]\nname = \"main\"\nkind = \"user\"\n\n[[token]]\nname = \"sensor\"\n"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigText {
    text: String,
}

impl ConfigText {
    /// An empty config (every key at its default).
    pub fn new() -> ConfigText {
        ConfigText::default()
    }

    /// Adds the table `[header]` (`[[token]]` for a header `[token]`) with `entries` as string values.
    pub fn table(mut self, header: &str, entries: &[(&str, &str)]) -> ConfigText {
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(&format!("[{header}]\n"));
        entries.iter().fold(self, |config, (key, value)| config.line(&format!("{key} = \"{value}\"")))
    }

    /// Adds `line` (and a newline) to the table added last: `readers = { users = [...] }`, `files = [...]`,
    /// or any key the other methods do not write.
    pub fn line(mut self, line: &str) -> ConfigText {
        self.text.push_str(line);
        self.text.push('\n');
        self
    }

    /// `[api]` naming the cloud at `url`.
    pub fn api(self, url: &str) -> ConfigText {
        self.table("api", &[("url", url)])
    }

    /// `[daemon]` serving on `bus` (`session`, `system` or an address) and keeping its state in `state_dir`.
    pub fn daemon(self, bus: &str, state_dir: &Path) -> ConfigText {
        self.table("daemon", &[("bus", bus), ("state_dir", &state_dir.display().to_string())])
    }

    /// `[refresh]` with `entries` (`safety_margin`, `retry_initial`, ... as durations).
    pub fn refresh(self, entries: &[(&str, &str)]) -> ConfigText {
        self.table("refresh", entries)
    }

    /// `[refresh]` for access tokens of a few seconds (the fake's `--access-lifetime 8s`): a 2 s margin, so the
    /// daemon refreshes about every 5 s, and retries after 1 s, then every 2 s.
    pub fn fast_refresh(self) -> ConfigText {
        self.refresh(&[("safety_margin", "2s"), ("retry_initial", "1s"), ("retry_max", "2s")])
    }

    /// `[maintenance]` with the three schedules (cron lines, or `off`).
    pub fn maintenance(self, token_health: &str, ground_sync: &str, lapse_review: &str) -> ConfigText {
        self.table(
            "maintenance",
            &[("token_health", token_health), ("ground_sync", ground_sync), ("lapse_review", lapse_review)],
        )
    }

    /// `[maintenance]` with nothing scheduled: the daemon sends nothing to the cloud by itself but refreshes.
    pub fn maintenance_off(self) -> ConfigText {
        self.maintenance("off", "off", "off")
    }

    /// [`FLEET_AT_ONCE`] added to the table added last, which must be `[daemon]`: no spreads, and a request
    /// budget no test reaches.
    pub fn fleet_at_once(self) -> ConfigText {
        FLEET_AT_ONCE.lines().fold(self, |config, line| config.line(line))
    }

    /// A `[[token]]` of kind `user` named `name`, logged in by a person.
    pub fn user(self, name: &str) -> ConfigText {
        self.table("[token]", &[("name", name), ("kind", "user")])
    }

    /// A `[[token]]` of kind `user` named `name` that the daemon logs in by itself as `username`, with the
    /// password and the TOTP seed in files.
    pub fn unattended_user(self, name: &str, username: &str, password_file: &Path, totp_file: &Path) -> ConfigText {
        self.table(
            "[token]",
            &[
                ("name", name),
                ("kind", "user"),
                ("username", username),
                ("password_file", &password_file.display().to_string()),
                ("totp_secret_file", &totp_file.display().to_string()),
            ],
        )
    }

    /// A `[[token]]` of kind `device` named `name`, for device `device_id`, its token in `token_file`.
    pub fn device(self, name: &str, device_id: &str, token_file: &Path) -> ConfigText {
        self.static_token(name, "device", device_id, token_file)
    }

    /// A `[[token]]` of kind `ground` named `name`, for ground `ground_id`, its token in `token_file`.
    pub fn ground(self, name: &str, ground_id: &str, token_file: &Path) -> ConfigText {
        self.static_token(name, "ground", ground_id, token_file)
    }

    fn static_token(self, name: &str, kind: &str, id: &str, token_file: &Path) -> ConfigText {
        let file = token_file.display().to_string();
        self.table("[token]", &[("name", name), ("kind", kind), (&format!("{kind}_id"), id), ("token_file", &file)])
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::ops::Deref for ConfigText {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for ConfigText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<ConfigText> for String {
    fn from(config: ConfigText) -> String {
        config.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_apart_and_lines_join_the_table_added_last() {
        let text = ConfigText::new()
            .api("http://127.0.0.1:1")
            .daemon("session", Path::new("/s"))
            .maintenance_off()
            .ground("site", "G", Path::new("/g.token"))
            .line("readers = { users = [\"a\"] }")
            .unattended_user("main", "u@x", Path::new("/pw"), Path::new("/seed"));
        assert_eq!(
            text.as_str(),
            "[api]\nurl = \"http://127.0.0.1:1\"\n\n[daemon]\nbus = \"session\"\nstate_dir = \"/s\"\n\n\
             [maintenance]\ntoken_health = \"off\"\nground_sync = \"off\"\nlapse_review = \"off\"\n\n\
             [[token]]\nname = \"site\"\nkind = \"ground\"\nground_id = \"G\"\ntoken_file = \"/g.token\"\n\
             readers = { users = [\"a\"] }\n\n\
             [[token]]\nname = \"main\"\nkind = \"user\"\nusername = \"u@x\"\npassword_file = \"/pw\"\n\
             totp_secret_file = \"/seed\"\n"
        );
        let daemon = ConfigText::new().daemon("session", Path::new("/s")).fleet_at_once();
        assert_eq!(daemon.as_str(), format!("[daemon]\nbus = \"session\"\nstate_dir = \"/s\"\n{FLEET_AT_ONCE}"));
    }
}
