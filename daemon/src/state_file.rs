//! The format of the files in the state directory ([`crate::state_dir`]): what a session file and a hold file
//! hold, how they are written ([`encode`], [`encode_hold`]) and read back ([`parse`], [`parse_hold`]), all pure.
//!
//! A session file, `<name>.json`, is one [`SessionRecord`] as pretty JSON ([`FORMAT_VERSION`]; sealed with the
//! state key when one is configured, see [`crate::seal`]): the refresh and access tokens, the planner's durable
//! facts ([`PersistedSession`]: wall-clock deadlines, rotation, warnings given, clock trust), the cloud instance
//! and client it was made with ([`Origin`]), and whether a refresh was on its way, which is all a restart needs
//! to carry on, even after `kill -9`. The planner's part is stored whole, exactly as `token_model` hands it out,
//! so nothing it needs after a restart is lost in translation. The session task builds the record and the state
//! directory writes it as it is: one shape from the plan to the disk.
//!
//! A file that cannot be read as a record says why ([`Parsed::Unusable`]) in at most [`REASON_MAX_CHARS`]
//! characters and without quoting the file, since a damaged file may hold anything, a token included.
//!
//! A hold file, `<name>.hold`, is a [`HoldRecord`] in a few lines of text: what the daemon learned about a token's
//! unattended login that must outlive a restart.

#[cfg(test)]
pub(crate) mod tests;

use serde::{Deserialize, Serialize};
use serde_json::error::Category;
use token_model::ids::{ClientId, TokenName};
use token_model::plan::PersistedSession;
use token_model::secret::{AccessToken, RefreshToken};
use zeroize::Zeroizing;

/// The format version written by this build. Files with a higher version are left alone.
pub const FORMAT_VERSION: u32 = 2;

/// The cloud instance and OAuth2 client sessions are made with: a session is only sent to the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The base URL requests are sent to, without a trailing `/`, e.g. `https://api.allthingstalk.io`. The
    /// daemon takes it from `[api] url` parsed as the HTTP client does ([`crate::prepare::Prepared::origin`]:
    /// scheme and host in lower case, a default port dropped), so spelling differences in the config do not count
    /// as another instance.
    pub api_url: String,
    /// The `[api] client_id`.
    pub client_id: ClientId,
}

impl Origin {
    /// An origin from the base URL requests are sent to (its trailing `/` dropped) and a client id.
    pub fn new(api_url: &str, client_id: ClientId) -> Self {
        Self { api_url: api_url.trim_end_matches('/').to_owned(), client_id }
    }
}

/// One user session, from the session task that keeps it to the file that stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Format version ([`FORMAT_VERSION`] when written by this build).
    pub version: u32,
    /// The token name; must match the file name.
    pub name: TokenName,
    /// The account the session belongs to.
    pub username: String,
    /// The client id used at login; refreshes must use the same.
    pub client_id: ClientId,
    /// The `[api] url` (as [`Origin::api_url`]) the session was made with; refreshes go to the same instance.
    /// Absent in files written before it was recorded, which are taken to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The newest refresh token.
    #[serde(with = "token_model::secret::persist")]
    pub refresh_token: RefreshToken,
    /// The newest access token.
    #[serde(with = "token_model::secret::persist")]
    pub access_token: AccessToken,
    /// The planner's durable facts, stored whole: deadlines, rotation, warnings given, clock trust.
    pub session: PersistedSession,
    /// Unix seconds when a refresh with `refresh_token` was sent whose answer is not saved yet. Written before
    /// the refresh is sent and gone once its answer is saved, so after a crash it tells that the cloud may have
    /// replaced the refresh token already. Absent in files that never had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_sent_at: Option<i64>,
}

impl SessionRecord {
    /// The session of `name`, made for `origin` by `username`, in this build's format, with no refresh on its way
    /// (set [`SessionRecord::refresh_sent_at`] when one is).
    pub fn new(
        name: TokenName,
        origin: &Origin,
        username: String,
        refresh_token: RefreshToken,
        access_token: AccessToken,
        session: PersistedSession,
    ) -> Self {
        Self {
            version: FORMAT_VERSION,
            name,
            username,
            client_id: origin.client_id.clone(),
            api_url: Some(origin.api_url.clone()),
            refresh_token,
            access_token,
            session,
            refresh_sent_at: None,
        }
    }

    /// Whether the session may be sent to `origin`: the same client id, and the same instance unless the file
    /// predates recording it.
    pub fn made_for(&self, origin: &Origin) -> bool {
        let same_url = self.api_url.as_ref().is_none_or(|url| *url == origin.api_url);
        same_url && self.client_id == origin.client_id
    }
}

/// The longest reason [`parse`] gives for an unusable file, in characters: serde's messages may quote a value
/// from the file (an invalid name, a string where a number belongs), which must not make a log line unbounded.
pub const REASON_MAX_CHARS: usize = 240;

/// What the bytes of a session file hold, read by [`parse`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Parsed {
    /// A session record for the expected name.
    Record(Box<SessionRecord>),
    /// A file written by a newer att-tokend ([`FORMAT_VERSION`] is lower than `version`).
    TooNew {
        /// The version found.
        version: u32,
    },
    /// Not a usable session of this name: why, in at most [`REASON_MAX_CHARS`] characters, never with a secret.
    Unusable {
        /// Why.
        reason: String,
    },
}

/// Reads the bytes of the session file of `name`. Pure: [`crate::state_dir::StateDir::load`] reads the file and
/// acts on the answer.
pub fn parse(bytes: &[u8], name: &TokenName) -> Parsed {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    if let Ok(Version { version }) = serde_json::from_slice::<Version>(bytes)
        && version > FORMAT_VERSION
    {
        return Parsed::TooNew { version };
    }
    let reason = match serde_json::from_slice::<SessionRecord>(bytes) {
        Ok(record) if record.name == *name => return Parsed::Record(Box::new(record)),
        Ok(record) => format!("it holds the session of {:?}, not {:?}", record.name.as_str(), name.as_str()),
        Err(error) => format!("it is not a valid session file ({})", describe(&error)),
    };
    Parsed::Unusable { reason: truncate_chars(&reason, REASON_MAX_CHARS) }
}

/// What is wrong with a session file, without quoting it: serde's messages quote the offending value
/// (`invalid type: string "…"`), and in a damaged file that value may be anything, a token included. The file
/// is set aside with its bytes intact for whoever wants to look.
fn describe(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(head, _)| head);
    let what = match error.classify() {
        Category::Syntax => "it is not valid JSON",
        Category::Eof => "it ends too early",
        Category::Io => "it could not be read",
        // Names of the record's own fields are safe to repeat.
        Category::Data if message.starts_with("missing field `") || message.starts_with("duplicate field `") => message,
        Category::Data => match message.rsplit_once(", expected ") {
            Some((_, expected)) => {
                return format!(
                    "a value of the wrong kind, expected {expected}, at line {}, column {}",
                    error.line(),
                    error.column()
                );
            }
            None => "a value that is not valid",
        },
    };
    format!("{what} at line {}, column {}", error.line(), error.column())
}

/// The bytes a clear session file holds for `record` (pretty JSON); [`parse`] reads them back to the same record.
pub fn encode(record: &SessionRecord) -> Result<Zeroizing<Vec<u8>>, serde_json::Error> {
    serde_json::to_vec_pretty(record).map(Zeroizing::new)
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The first line of a hold file; a file starting otherwise is not read.
const HOLD_HEADER: &str = "att-tokend hold 1";

/// Why the daemon does not log a token in by itself until a person acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    /// The cloud refused the configured credentials: sending them again would only count towards a lockout.
    Refused,
    /// An admin logged the token out.
    LoggedOut,
}

impl HoldReason {
    /// The reason as a hold file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::Refused => "refused",
            HoldReason::LoggedOut => "logged-out",
        }
    }
}

/// What the daemon learned about a token's unattended login that must outlive a restart (`<name>.hold` in the state
/// directory): the cloud refused its configured credentials, or an admin logged it out. The credentials are named
/// by a salted fingerprint only (HMAC-SHA-256 keyed with a random salt), never stored: the hold applies while the
/// configured credentials still have that fingerprint, and a `Login` or other credentials lift it.
///
/// On disk it is a few lines of text ([`encode_hold`], read by [`parse_hold`]), like the token files' manifest:
/// the header, then `name`, `reason`, `since` (Unix seconds), `salt` and `fingerprint` (hex) and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRecord {
    /// The token name; must match the file name.
    pub name: TokenName,
    /// Why unattended login is held.
    pub reason: HoldReason,
    /// Unix seconds when it began.
    pub since: i64,
    /// The salt of [`HoldRecord::fingerprint`], hex.
    pub salt: String,
    /// HMAC-SHA-256 of the configured username, password and TOTP seed under the salt, hex.
    pub fingerprint: String,
    /// What the daemon said then (the cloud's refusal as login-flow words it); never a secret. One line.
    pub message: String,
}

/// The text of a hold file. Line breaks in the message become spaces.
pub fn encode_hold(hold: &HoldRecord) -> String {
    format!(
        "{HOLD_HEADER}\nname {}\nreason {}\nsince {}\nsalt {}\nfingerprint {}\nmessage {}\n",
        hold.name.as_str(),
        hold.reason.as_str(),
        hold.since,
        hold.salt,
        hold.fingerprint,
        hold.message.replace(['\n', '\r'], " ")
    )
}

/// Reads the bytes of the hold file of `name` ([`encode_hold`]'s text). The error says what is wrong in at most
/// [`REASON_MAX_CHARS`] characters, without quoting the file.
pub fn parse_hold(bytes: &[u8], name: &TokenName) -> Result<HoldRecord, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "it is not text".to_owned())?;
    let mut lines = text.lines();
    if lines.next() != Some(HOLD_HEADER) {
        return Err(format!("it does not start with {HOLD_HEADER:?}"));
    }
    let mut field = |key: &str| -> Result<&str, String> {
        lines
            .next()
            .and_then(|line| line.strip_prefix(key))
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or_else(|| format!("its line {key:?} is missing"))
    };
    let hex = |value: &str| !value.is_empty() && value.bytes().all(|b| b.is_ascii_hexdigit());
    let named = field("name")?;
    if named != name.as_str() {
        return Err("it is the hold of another token".to_owned());
    }
    let reason = match field("reason")? {
        "refused" => HoldReason::Refused,
        "logged-out" => HoldReason::LoggedOut,
        _ => return Err("its reason is neither refused nor logged-out".to_owned()),
    };
    let since = field("since")?.parse().map_err(|_| "its time is not a number".to_owned())?;
    let salt = field("salt")?.to_owned();
    let fingerprint = field("fingerprint")?.to_owned();
    if !hex(&salt) || !hex(&fingerprint) {
        return Err("its salt or fingerprint is not hex".to_owned());
    }
    let message = truncate_chars(field("message")?, 4 * REASON_MAX_CHARS);
    Ok(HoldRecord { name: name.clone(), reason, since, salt, fingerprint, message })
}
