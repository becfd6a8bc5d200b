//! The checks that look at the machine: secret files (each opened once: private, then read) and the state key,
//! and user and group names resolved through NSS. Each may block (a slow disk, NSS behind LDAP): the daemon runs
//! them on the blocking pool, never on its runtime thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use token_model::ids::TokenName;
use token_model::secret::{Password, StaticToken, TotpSeed};

use super::schema::{Config, ConfigError, Principal, Principals, SecretSource, TokenConfig, TokenSpec};
use crate::seal::{self, KeySource, StateKey};
use crate::secret_files::{PrivateFile, SecretFileError};

/// Principals resolved to numeric ids: the one resolved shape, which the access rules decide on.
pub type ResolvedPrincipals = crate::access::Principals;

/// Every principal of a config resolved: admins and the readers of each token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedAccess {
    /// `[daemon] admins`.
    pub admins: ResolvedPrincipals,
    /// `readers` of each token.
    pub readers: BTreeMap<TokenName, ResolvedPrincipals>,
}

impl Principals {
    /// Looks names up in the user and group databases; numeric ids are taken as they are.
    pub fn resolve(&self, config_path: &Path, what: &str) -> Result<ResolvedPrincipals, ConfigError> {
        let problem =
            |message: String| ConfigError::Reference { path: config_path.to_owned(), line: self.line, message };
        let user = |name: &str| nix::unistd::User::from_name(name).map(|found| found.map(|u| u.uid.as_raw()));
        let group = |name: &str| nix::unistd::Group::from_name(name).map(|found| found.map(|g| g.gid.as_raw()));
        let mut resolved = ResolvedPrincipals::default();
        for principal in &self.users {
            resolved.uids.insert(resolve_one(principal, Database::Users, user, what).map_err(problem)?);
        }
        for principal in &self.groups {
            resolved.gids.insert(resolve_one(principal, Database::Groups, group, what).map_err(problem)?);
        }
        Ok(resolved)
    }
}

/// The user or the group database.
#[derive(Clone, Copy)]
enum Database {
    Users,
    Groups,
}

/// One principal's numeric id: as written, or looked up by name with `lookup` in `database`.
fn resolve_one(
    principal: &Principal,
    database: Database,
    lookup: impl Fn(&str) -> nix::Result<Option<u32>>,
    what: &str,
) -> Result<u32, String> {
    let (kind, add, id) = match database {
        Database::Users => ("user", "useradd", "uid"),
        Database::Groups => ("group", "groupadd", "gid"),
    };
    match principal {
        Principal::Id(id) => Ok(*id),
        Principal::Name(name) => match lookup(name) {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err(format!(
                "{what}: there is no {kind} named {name:?} on this system; create it ({add}), fix the name, or write \
                 its numeric {id}"
            )),
            Err(error) => Err(format!(
                "{what}: cannot look up {kind} {name:?} ({error}); check /etc/nsswitch.conf or write the numeric {id}"
            )),
        },
    }
}

/// Resolves the admins and every token's readers to numeric ids (names must exist on this system).
pub fn resolve_principals(config: &Config) -> Result<ResolvedAccess, ConfigError> {
    let admins = config.daemon.admins.resolve(&config.path, "[daemon] admins")?;
    let mut readers = BTreeMap::new();
    for token in &config.tokens {
        let resolved = if token.readers.is_empty() {
            ResolvedPrincipals::default()
        } else {
            token.readers.resolve(&config.path, &format!("readers of [[token]] \"{}\"", token.name))?
        };
        readers.insert(token.name.clone(), resolved);
    }
    Ok(ResolvedAccess { admins, readers })
}

/// What a config's secret files hold, each file read once ([`Config::read_secrets_in`]).
#[derive(Debug)]
pub struct Secrets {
    /// The state key and where it came from; `None` when none is configured.
    pub state_key: Option<(Arc<StateKey>, KeySource)>,
    /// The secrets of each token, in the order of [`Config::tokens`].
    pub tokens: Vec<TokenSecrets>,
}

/// The secrets of one token.
#[derive(Debug)]
pub enum TokenSecrets {
    /// A user token: its password and TOTP seed when it is set up for unattended login.
    User {
        /// From `password_file`.
        password: Option<Password>,
        /// From `totp_secret_file`.
        totp_seed: Option<TotpSeed>,
    },
    /// A device or ground token: its static token, from `token_file` or `credential`.
    Static(StaticToken),
}

impl Config {
    /// Checks every secret file the config names: it exists, is a regular file, is readable, is neither group- nor
    /// world-readable, and holds one valid line. Credentials are looked up in `$CREDENTIALS_DIRECTORY`.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        self.read_secrets().map(drop)
    }

    /// [`Config::check_files`] with an explicit credentials directory (`None`: unset).
    pub fn check_files_in(&self, credentials_dir: Option<&Path>) -> Result<(), ConfigError> {
        self.read_secrets_in(credentials_dir).map(drop)
    }

    /// The checks of [`Config::check_files`], keeping what the files hold: the state key and every token's
    /// secrets, each file opened once. Credentials are looked up in `$CREDENTIALS_DIRECTORY`.
    pub fn read_secrets(&self) -> Result<Secrets, ConfigError> {
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        self.read_secrets_in(dir.as_deref())
    }

    /// [`Config::read_secrets`] with an explicit credentials directory (`None`: unset).
    pub fn read_secrets_in(&self, credentials_dir: Option<&Path>) -> Result<Secrets, ConfigError> {
        let state_key = seal::state_key_in(self.daemon.state_key_file.as_deref(), credentials_dir)
            .map_err(|message| ConfigError::Reference { path: self.path.clone(), line: 0, message })?;
        let tokens = self
            .tokens
            .iter()
            .map(|token| self.read_token_secrets(token, credentials_dir))
            .collect::<Result<_, _>>()?;
        Ok(Secrets { state_key, tokens })
    }

    /// Reads one token's secret files and checks its token files' paths.
    fn read_token_secrets(
        &self,
        token: &TokenConfig,
        credentials_dir: Option<&Path>,
    ) -> Result<TokenSecrets, ConfigError> {
        let problem = |key: &str, message: String| ConfigError::Reference {
            path: self.path.clone(),
            line: token.line_of(key),
            message: format!("[[token]] \"{}\": {message}", token.name),
        };
        let secrets = match &token.spec {
            TokenSpec::Device { secret, .. } | TokenSpec::Ground { secret, .. } => {
                let key = match secret {
                    SecretSource::File(_) => "token_file",
                    SecretSource::Credential(_) => "credential",
                };
                let file = secret.resolve_in(credentials_dir).map_err(|m| problem(key, m))?;
                TokenSecrets::Static(read_private(&file, PrivateFile::static_token).map_err(|m| problem(key, m))?)
            }
            TokenSpec::User(user) => TokenSecrets::User {
                password: user
                    .password_file
                    .as_deref()
                    .map(|file| read_private(file, PrivateFile::password).map_err(|m| problem("password_file", m)))
                    .transpose()?,
                totp_seed: user
                    .totp_secret_file
                    .as_deref()
                    .map(|file| read_private(file, PrivateFile::totp_seed).map_err(|m| problem("totp_secret_file", m)))
                    .transpose()?,
            },
        };
        if let Some(dir) = token.files.iter().find(|file| std::fs::symlink_metadata(file).is_ok_and(|m| m.is_dir())) {
            return Err(problem(
                "files",
                format!(
                    "file {dir:?} is a directory; name a file inside it, e.g. \"{}/{}.token\"",
                    dir.display(),
                    token.name
                ),
            ));
        }
        Ok(secrets)
    }
}

/// Opens a secret file once, checks it is private, and reads it with `read`; the error says what is wrong.
fn read_private<T>(file: &Path, read: fn(PrivateFile) -> Result<T, SecretFileError>) -> Result<T, String> {
    read(PrivateFile::open(file)?).map_err(|error| error.to_string())
}
