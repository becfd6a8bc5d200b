//! One preparation of a configuration, the same for the start, a reload and `att-tokend --check-config`: the
//! secret files and the state key, each read once; users and groups resolved; the engine's view of the tokens;
//! the advice to log; and the origin sessions are stored for. Everything here may block (files, NSS behind LDAP),
//! so the daemon calls it on the blocking pool, never on its runtime thread.
//!
//! The machine id (`/etc/machine-id`) is read here too, once, and only hashed into a
//! [`MachineKey`]: the per-machine offsets of the periodic requests derive from it; it is never sent or logged.
//!
//! The HTTPS client ([`cloud`]) is set up apart: the start and `--check-config` need it, a reload keeps the
//! running one (`[api]` changes take effect after a restart), and setting it up reads the system's CA roots
//! (a few milliseconds, on a thread started before the config is parsed).

use std::sync::Arc;

use std::io::Read as _;
use std::path::Path;

use anyhow::Context as _;
use token_model::fleet::{Budget, MachineKey};
use token_model::plan::Policy;

use crate::config::{self, Config, RefreshConfig, ResolvedAccess, TokenSecrets, TokenSpec as ConfigTokenSpec};
use crate::engine::{Cloud, EngineConfig, Provision, TokenSpec, Unattended};
use crate::seal::{KeySource, StateKey};
use crate::state_file::Origin;

/// A configuration prepared to run: what [`prepare`] read and derived from it.
#[derive(Debug)]
pub struct Prepared {
    /// The configuration itself.
    pub config: Config,
    /// Settings that work but should change ([`Config::advice`]), for the caller to log or print.
    pub advice: Vec<String>,
    /// What the engine is given: principals resolved to ids, secrets read from their files.
    pub engine: EngineConfig,
    /// The state key that seals session files, and where it came from; `None` when none is configured.
    pub state_key: Option<(Arc<StateKey>, KeySource)>,
    /// The cloud instance and client sessions are stored for (`[api] url` as requests are sent, `client_id`).
    pub origin: Origin,
    /// This machine's key for the offsets of periodic requests (`/etc/machine-id`, hashed).
    pub machine: MachineKey,
}

/// Prepares `config`: reads the state key and every secret file once (checking each is private and well formed),
/// resolves admins and readers through NSS, and builds the engine's configuration from them. Credentials are
/// looked up in `$CREDENTIALS_DIRECTORY`. Blocking: call it off the runtime thread.
pub fn prepare(config: Config) -> anyhow::Result<Prepared> {
    let secrets = config.read_secrets()?;
    let access = config::resolve_principals(&config)?;
    let engine = engine_config(&config, &access, secrets.tokens);
    let origin = Origin::new(config.api.url(), config.api.client_id.clone());
    let mut advice = config.advice();
    let machine = match machine_key(Path::new(config::DEFAULT_MACHINE_ID_FILE)) {
        Ok(key) => key,
        Err(why) => {
            advice.push(why);
            MachineKey::fallback()
        }
    };
    Ok(Prepared { config, advice, engine, state_key: secrets.state_key, origin, machine })
}

/// Reads the machine id from `path` (at most 256 bytes) and hashes it at once; why it cannot be used, as advice
/// that says what to do, otherwise. Blocks on the file system.
fn machine_key(path: &Path) -> Result<MachineKey, String> {
    let mut id = Vec::with_capacity(40);
    let problem = match std::fs::File::open(path).and_then(|file| file.take(256).read_to_end(&mut id)) {
        Err(e) => e.to_string(),
        Ok(_) if id.trim_ascii().is_empty() || id.trim_ascii() == b"uninitialized" => "no machine id yet".to_owned(),
        Ok(_) => String::new(),
    };
    let key = MachineKey::from_machine_id(&id);
    id.fill(0);
    match problem.is_empty() {
        true => Ok(key),
        false => Err(format!(
            "could not read the machine id from {} ({problem}): the cloud requests of every gateway without one are \
             spread alike; create it with `systemd-machine-id-setup` (or `dbus-uuidgen --ensure={0}`)",
            path.display()
        )),
    }
}

/// What `--check-config --skip-secrets` checks of a preparation: users and groups resolve; no secret file is read.
pub fn check_without_secrets(config: &Config) -> anyhow::Result<()> {
    config::resolve_principals(config)?;
    Ok(())
}

/// The cloud client from `[api]` and `[daemon]`, with the TLS configuration set up by `tls` (started with
/// [`login_flow::tls::in_background`] before the config was parsed: the system's CA roots are read and parsed
/// meanwhile, on another core). It may wait for that thread: call it off the runtime thread.
///
/// Every request it sends keeps within the request budget of `[daemon]`, shared by all its clones.
pub fn cloud(config: &Config, tls: login_flow::tls::Background) -> anyhow::Result<Cloud> {
    let context = "could not set up the HTTPS client for [api]";
    let tls = tls.wait().context(context)?;
    let client = login_flow::LoginClient::with_tls(config.api.client().clone(), tls).context(context)?;
    let budget = Budget::per_minute(config.fleet.request_burst, config.fleet.requests_per_minute);
    Ok(Cloud::new(client, budget))
}

/// The planner's policy from `[refresh]`.
pub fn policy(refresh: &RefreshConfig) -> Policy {
    Policy {
        safety_margin: refresh.safety_margin,
        backoff_initial: refresh.retry_initial,
        backoff_max: refresh.retry_max,
        refresh_token_lifetime: refresh.refresh_token_lifetime,
        lapse_warnings: refresh.warn_before.clone(),
        ..Policy::default()
    }
}

/// The engine's view of the tokens: each with its resolved readers and the secrets read for it (`secrets` in the
/// order of `config.tokens`).
fn engine_config(config: &Config, access: &ResolvedAccess, secrets: Vec<TokenSecrets>) -> EngineConfig {
    let tokens = config
        .tokens
        .iter()
        .zip(secrets)
        .map(|(token, secrets)| {
            let readers = access.readers.get(&token.name).cloned().unwrap_or_default();
            let provision = match (&token.spec, secrets) {
                (ConfigTokenSpec::User(user), TokenSecrets::User { password, totp_seed }) => {
                    Provision::User(match (&user.username, password) {
                        (Some(username), Some(password)) => {
                            Some(Unattended { username: username.clone(), password, totp_seed })
                        }
                        _ => None,
                    })
                }
                (ConfigTokenSpec::Device { device_id, .. }, TokenSecrets::Static(token)) => {
                    Provision::Device { device: device_id.clone(), token }
                }
                (ConfigTokenSpec::Ground { ground_id, devices, .. }, TokenSecrets::Static(token)) => {
                    Provision::Ground { ground: ground_id.clone(), devices: devices.clone(), token }
                }
                (_, _) => unreachable!("Config::read_secrets reads each token's secrets after its kind"),
            };
            TokenSpec { name: token.name.clone(), readers, provision, files: token.files.clone() }
        })
        .collect();
    EngineConfig { admins: access.admins.clone(), tokens }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn origin_of(url: &str) -> Origin {
        let config = config::parse(&format!("[api]\nurl = \"{url}\"\nclient_id = \"mobile\"\n"), Path::new("t.toml"))
            .expect("a valid config");
        prepare(config).expect("nothing to read").origin
    }

    #[test]
    fn the_machine_id_is_read_hashed_and_a_missing_one_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("machine-id");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(machine_key(&path).unwrap(), MachineKey::from_machine_id(b"0123456789abcdef0123456789abcdef"));
        for content in ["", "uninitialized\n"] {
            std::fs::write(&path, content).unwrap();
            let why = machine_key(&path).unwrap_err();
            assert!(why.contains("(no machine id yet)") && why.contains("systemd-machine-id-setup"), "{why}");
        }
        let why = machine_key(&dir.path().join("gone")).unwrap_err();
        assert!(
            why.starts_with("could not read the machine id from ") && why.contains("dbus-uuidgen --ensure="),
            "{why}"
        );
    }

    #[test]
    fn the_origin_is_the_url_as_requests_are_sent_so_spellings_of_one_instance_match() {
        let plain = origin_of("https://api.allthingstalk.io");
        assert_eq!(plain.api_url, "https://api.allthingstalk.io");
        assert_eq!(plain.client_id.as_str(), "mobile");
        assert_eq!(origin_of("https://API.AllThingsTalk.io:443/"), plain);
        assert_ne!(origin_of("https://also.allthingstalk.io"), plain);
    }
}
