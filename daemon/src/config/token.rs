//! A `[[token]]` table: its raw shape, its validation (the keys each kind takes, its secret, its files) and the
//! checks across tokens (unique names, no file named twice or that the daemon reads). A new token key goes here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use token_model::ids::{DeviceId, GroundId, TokenKind, TokenName};
use toml::Spanned;

use super::raw::{Ctx, RawPrincipals, absolute, principals};
use super::schema::{Config, ConfigError, SecretSource, TokenConfig, TokenSpec, UserSpec};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    // Ids are read as text and checked in `validate`, with the same message at the same line: one string decoder
    // serves them all (a decoder per id type cost the stripped daemon about 14 KiB).
    name: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    readers: Option<Spanned<RawPrincipals>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
    totp_secret_file: Option<Spanned<PathBuf>>,
    device_id: Option<Spanned<String>>,
    ground_id: Option<Spanned<String>>,
    token_file: Option<Spanned<PathBuf>>,
    credential: Option<Spanned<String>>,
    devices: Option<Spanned<Vec<Spanned<String>>>>,
    files: Option<Spanned<Vec<Spanned<PathBuf>>>>,
}

/// An id written as text, checked by `new` (its error names the id and what a valid one is), at its line.
fn id<T>(
    value: Spanned<String>,
    new: fn(String) -> Result<T, token_model::ids::IdError>,
    ctx: &Ctx<'_>,
    section: &str,
) -> Result<T, ConfigError> {
    let span = value.span();
    new(value.into_inner()).map_err(|error| ctx.at(span, format!("in {section}: {error}")))
}

/// A kind-specific key: its name, where it was written (if it was) and the kinds it belongs to.
type KeyUse<'a> = (&'a str, Option<Range<usize>>, &'a [TokenKind]);

impl RawToken {
    /// One `[[token]]`, validated: its name, kind, the keys of its kind, its secret and its files.
    pub(super) fn validate(self, ctx: &Ctx<'_>) -> Result<TokenConfig, ConfigError> {
        let Some(name) = self.name else {
            let span = self.kind.as_ref().map(Spanned::span).unwrap_or(0..0);
            return Err(
                ctx.at(span, "a [[token]] has no name; add name = \"...\" (letters, digits, '_' and '-')".to_owned())
            );
        };
        let line = ctx.line(name.span());
        let name_span = name.span();
        let name = TokenName::new(name.into_inner())
            .map_err(|error| ctx.at(name_span.clone(), format!("in [[token]]: {error}")))?;
        let section = format!("[[token]] \"{name}\"");
        let Some(kind) = self.kind else {
            return Err(
                ctx.at(name_span, format!("{section} has no kind; add kind = \"user\", \"device\" or \"ground\""))
            );
        };
        let kind_span = kind.span();
        let kind: TokenKind =
            kind.into_inner().parse().map_err(|error| ctx.at(kind_span.clone(), format!("in {section}: {error}")))?;
        let readers = principals(self.readers, ctx);

        // Keys that belong to other kinds.
        let present: [KeyUse<'_>; 8] = [
            ("username", self.username.as_ref().map(Spanned::span), &[TokenKind::User]),
            ("password_file", self.password_file.as_ref().map(Spanned::span), &[TokenKind::User]),
            ("totp_secret_file", self.totp_secret_file.as_ref().map(Spanned::span), &[TokenKind::User]),
            ("device_id", self.device_id.as_ref().map(Spanned::span), &[TokenKind::Device]),
            ("ground_id", self.ground_id.as_ref().map(Spanned::span), &[TokenKind::Ground]),
            ("token_file", self.token_file.as_ref().map(Spanned::span), &[TokenKind::Device, TokenKind::Ground]),
            ("credential", self.credential.as_ref().map(Spanned::span), &[TokenKind::Device, TokenKind::Ground]),
            ("devices", self.devices.as_ref().map(Spanned::span), &[TokenKind::Ground]),
        ];
        let key_lines: BTreeMap<&'static str, usize> =
            present.iter().filter_map(|(key, span, _)| Some((*key, ctx.line(span.clone()?)))).collect();
        for (key, span, kinds) in present {
            if let Some(span) = span
                && !kinds.contains(&kind)
            {
                let owners: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                return Err(ctx.at(
                    span,
                    format!(
                        "in {section}: key \"{key}\" does not apply to a {kind} token (only to {} tokens); remove it or fix kind",
                        owners.join(" and ")
                    ),
                ));
            }
        }

        let spec = match kind {
            TokenKind::User => {
                if self.username.is_none()
                    && let Some(file) = &self.password_file
                {
                    return Err(ctx.at(
                        file.span(),
                        format!("in {section}: password_file needs username; add username = \"you@example.com\" or remove password_file"),
                    ));
                }
                if let Some(seed) = &self.totp_secret_file
                    && self.password_file.is_none()
                {
                    return Err(ctx.at(
                        seed.span(),
                        format!("in {section}: totp_secret_file needs username and password_file (the MFA step follows a password login); add them or remove totp_secret_file"),
                    ));
                }
                let username = match self.username {
                    None => None,
                    Some(user) => {
                        let span = user.span();
                        let user = user.into_inner();
                        if user.trim().is_empty() {
                            return Err(ctx.at(span, format!("in {section}: username is empty; write the account's e-mail or user name, or remove the key")));
                        }
                        Some(user)
                    }
                };
                let password_file =
                    self.password_file.map(|p| absolute(p, "password_file", ctx, &section)).transpose()?;
                let totp_secret_file =
                    self.totp_secret_file.map(|p| absolute(p, "totp_secret_file", ctx, &section)).transpose()?;
                TokenSpec::User(UserSpec { username, password_file, totp_secret_file })
            }
            TokenKind::Device | TokenKind::Ground => {
                let secret = match (self.token_file, self.credential) {
                    (Some(file), None) => SecretSource::File(absolute(file, "token_file", ctx, &section)?),
                    (None, Some(credential)) => {
                        let span = credential.span();
                        let credential = credential.into_inner();
                        if credential.is_empty() || credential.contains('/') || credential.starts_with('.') {
                            return Err(ctx.at(span, format!("in {section}: credential {credential:?} is not a credential name; use the name given to LoadCredential= (no '/')")));
                        }
                        SecretSource::Credential(credential)
                    }
                    (Some(_), Some(credential)) => {
                        return Err(ctx.at(
                            credential.span(),
                            format!("in {section}: both token_file and credential are set; keep exactly one of them"),
                        ));
                    }
                    (None, None) => {
                        return Err(ctx.at(
                            name_span,
                            format!("{section} says where its token is with neither token_file nor credential; add token_file = \"/etc/att-tokend/{name}.token\" or credential = \"{name}\""),
                        ));
                    }
                };
                if kind == TokenKind::Device {
                    let Some(device_id) = self.device_id else {
                        return Err(ctx.at(
                            name_span,
                            format!(
                                "{section} has no device_id; add device_id = \"<24-character id from the web UI>\""
                            ),
                        ));
                    };
                    TokenSpec::Device { device_id: id(device_id, DeviceId::new, ctx, &section)?, secret }
                } else {
                    let Some(ground_id) = self.ground_id else {
                        return Err(ctx.at(
                            name_span,
                            format!(
                                "{section} has no ground_id; add ground_id = \"<24-character id from the web UI>\""
                            ),
                        ));
                    };
                    let ground_id = id(ground_id, GroundId::new, ctx, &section)?;
                    let devices = match self.devices {
                        None => None,
                        Some(list) => {
                            let span = list.span();
                            let list = list
                                .into_inner()
                                .into_iter()
                                .map(|device| id(device, DeviceId::new, ctx, &section))
                                .collect::<Result<Vec<DeviceId>, ConfigError>>()?;
                            let mut seen = BTreeSet::new();
                            if let Some(repeat) = list.iter().find(|id| !seen.insert(id.as_str())) {
                                return Err(ctx.at(
                                    span,
                                    format!(
                                        "in {section}: device id {repeat} appears twice in devices; remove the repeat"
                                    ),
                                ));
                            }
                            Some(list)
                        }
                    };
                    TokenSpec::Ground { ground_id, secret, devices }
                }
            }
        };
        let mut key_lines = key_lines;
        let files = match self.files {
            None => Vec::new(),
            Some(list) => {
                key_lines.insert("files", ctx.line(list.span()));
                token_files(list, ctx, &section)?
            }
        };
        Ok(TokenConfig { name, readers, spec, files, line, key_lines })
    }
}

/// The most `files` one token may name.
pub const MAX_FILES_PER_TOKEN: usize = 8;

/// `files` of one token: absolute, clean (no `.` or `..`, no trailing `/`), at most [`MAX_FILES_PER_TOKEN`], each
/// once.
fn token_files(
    list: Spanned<Vec<Spanned<PathBuf>>>,
    ctx: &Ctx<'_>,
    section: &str,
) -> Result<Vec<PathBuf>, ConfigError> {
    let span = list.span();
    let list = list.into_inner();
    if list.len() > MAX_FILES_PER_TOKEN {
        return Err(ctx.at(
            span,
            format!(
                "in {section}: files names {} files, more than the {MAX_FILES_PER_TOKEN} a token may have; let the \
                 programs share a file",
                list.len()
            ),
        ));
    }
    let mut files: Vec<PathBuf> = Vec::with_capacity(list.len());
    for file in list {
        let span = file.span();
        let path = file.into_inner();
        let text = path.to_string_lossy();
        let problem = if !path.is_absolute() {
            Some("must be an absolute path; write it starting with /, e.g. \"/run/att-tokend/NAME.token\"")
        } else if text.ends_with('/') || path.file_name().is_none() {
            Some("names a directory; name the file itself, e.g. \"/run/att-tokend/NAME.token\"")
        } else if text.chars().any(char::is_control) {
            Some("holds a control character (a line break, a tab); name a plain file")
        } else if text.split('/').skip(1).any(|part| part.is_empty() || part == "." || part == "..") {
            Some("must be written plainly, without \".\", \"..\" or \"//\"; write the path it means")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(ctx.at(span, format!("in {section}: file {:?} {problem}", path)));
        }
        if files.contains(&path) {
            return Err(ctx.at(span, format!("in {section}: file {:?} is named twice; remove the repeat", path)));
        }
        files.push(path);
    }
    Ok(files)
}

/// Checks across tokens: no token file named by two tokens, none inside the state directory, none that is the
/// config file or a secret file the daemon reads.
pub(super) fn check_token_files(config: &Config, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
    let mut secrets: Vec<(&Path, &'static str)> = vec![(ctx.path, "the config file itself")];
    if let Some(key) = &config.daemon.state_key_file {
        secrets.push((key, "[daemon] state_key_file"));
    }
    for token in &config.tokens {
        match &token.spec {
            TokenSpec::User(user) => {
                secrets.extend(user.password_file.as_deref().map(|p| (p, "a password_file")));
                secrets.extend(user.totp_secret_file.as_deref().map(|p| (p, "a totp_secret_file")));
            }
            TokenSpec::Device { secret: SecretSource::File(file), .. }
            | TokenSpec::Ground { secret: SecretSource::File(file), .. } => secrets.push((file, "a token_file")),
            _ => {}
        }
    }
    let mut owners: HashMap<&Path, &TokenName> = HashMap::new();
    for token in &config.tokens {
        let line = token.line_of("files");
        let error = |message: String| ConfigError::Invalid { path: ctx.path.to_owned(), line, message };
        let section = format!("[[token]] \"{}\"", token.name);
        for file in &token.files {
            if let Some(other) = owners.insert(file, &token.name) {
                return Err(error(format!(
                    "in {section}: file {file:?} is also a file of token \"{other}\"; give each token its own files"
                )));
            }
            if file.starts_with(&config.daemon.state_dir) {
                return Err(error(format!(
                    "in {section}: file {file:?} is inside the state directory {:?}, which only the daemon may enter; \
                     put it under /run/att-tokend/",
                    config.daemon.state_dir
                )));
            }
            if let Some((_, what)) = secrets.iter().find(|(secret, _)| *secret == file.as_path()) {
                return Err(error(format!(
                    "in {section}: file {file:?} is {what}, which the daemon reads; name another file, e.g. \
                     \"/run/att-tokend/{}.token\"",
                    token.name
                )));
            }
        }
    }
    Ok(())
}
