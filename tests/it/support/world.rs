//! One end-to-end world: a scratch directory, a private bus, the fake cloud and (once configured) the daemon.
//! Fields drop in order: the daemon stops first, the scratch directory goes last.

use std::path::PathBuf;
use std::process::Output;

use testbed::{Bus, ConfigText, Daemon, Fake, PATIENCE, Scratch};

use super::{bins, describe, wait_until};

/// The user every world knows, with MFA.
pub(crate) const USERNAME: &str = "alice@example.com";
/// Her password: with characters that need URL encoding.
pub(crate) const PASSWORD: &str = "s3cret&pass=word+Q";
/// Her TOTP seed (base32).
pub(crate) const TOTP_SEED: &str = "KRSXG5CTMVRXEZLUKN2XAZLSKNSWG4TFOQ";

/// A running bus + fake cloud (+ daemon).
pub(crate) struct World {
    /// The daemon, once started.
    pub(crate) daemon: Option<Daemon>,
    /// The fake cloud.
    pub(crate) fake: Fake,
    /// The private bus.
    pub(crate) bus: Bus,
    /// The daemon's config file, once written.
    pub(crate) config: Option<PathBuf>,
    /// `RUST_LOG` for the daemon.
    pub(crate) log: String,
    /// Where everything lives.
    pub(crate) scratch: Scratch,
}

impl World {
    /// Starts a bus and the fake cloud with `fake_args` (the user with MFA is always added).
    pub(crate) fn new(label: &str, fake_args: &[&str]) -> World {
        let scratch = Scratch::new(&format!("e2e-{label}")).unwrap();
        let bus = Bus::start(&scratch).unwrap();
        let mut args = vec!["--user".to_owned(), format!("{USERNAME}:{PASSWORD}:{TOTP_SEED}")];
        args.extend(fake_args.iter().map(|a| (*a).to_owned()));
        let fake = Fake::start(&bins().fake, &scratch, &args).unwrap();
        World { daemon: None, fake, bus, config: None, log: "debug".to_owned(), scratch }
    }

    /// The state directory the generated config names.
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.scratch.path().join("state")
    }

    /// Writes a secret file (mode 0600) and returns its path.
    pub(crate) fn secret_file(&self, name: &str, contents: &str) -> PathBuf {
        self.scratch.write(name, contents, 0o600).unwrap()
    }

    /// Writes [`USERNAME`]'s password and TOTP seed to secret files (`password`, `totp-seed`) for unattended
    /// logins; returns their paths.
    pub(crate) fn credential_files(&self) -> (PathBuf, PathBuf) {
        (
            self.secret_file("password", &format!("{PASSWORD}\n")),
            self.secret_file("totp-seed", &format!("{TOTP_SEED}\n")),
        )
    }

    /// A user token `name` that the daemon logs in by itself as [`USERNAME`], from [`World::credential_files`].
    pub(crate) fn unattended_user(&self, config: ConfigText, name: &str) -> ConfigText {
        let (password, seed) = self.credential_files();
        config.unattended_user(name, USERNAME, &password, &seed)
    }

    /// Writes the config (`[api]` and `[daemon]` generated, then `rest`), starts the daemon and waits for it.
    pub(crate) fn start_daemon(&mut self, rest: &str, log: &str) {
        self.write_config(rest);
        self.log = log.to_owned();
        self.restart_daemon();
    }

    /// The config's text: `[api]` (this world's fake cloud) and `[daemon]` (its bus and state directory, and
    /// [`testbed::FLEET_AT_ONCE`]: these tests expect requests at once), then `rest`.
    pub(crate) fn config_text(&self, rest: &str) -> String {
        let head = ConfigText::new().api(&self.fake.url).daemon(&self.bus.address, &self.state_dir()).fleet_at_once();
        format!("{head}\n{rest}")
    }

    /// Writes the config file: [`World::config_text`] with `rest`.
    pub(crate) fn write_config(&mut self, rest: &str) {
        let config = self.config_text(rest);
        self.config = Some(self.scratch.write("config.toml", &config, 0o600).unwrap());
    }

    /// Starts the daemon again with the same config (after [`World::kill9_daemon`] or a stop).
    pub(crate) fn restart_daemon(&mut self) {
        let config = self.config.clone().expect("start_daemon wrote a config");
        self.daemon = None;
        let env = [("RUST_LOG", self.log.as_str())];
        self.daemon = Some(Daemon::start(bins(), &self.scratch, &self.bus.address, &config, &env).unwrap());
    }

    /// Stops the daemon with SIGTERM (SIGKILL after a grace period) and returns how it exited.
    pub(crate) fn stop_daemon(&mut self) -> std::process::ExitStatus {
        let mut daemon = self.daemon.take().expect("the daemon is running");
        daemon.proc.stop().unwrap()
    }

    /// Rewrites the config (`[api]` and `[daemon]` as before, then `rest`) and sends the daemon SIGHUP.
    pub(crate) fn reload_daemon(&mut self, rest: &str) {
        self.write_config(rest);
        self.daemon.as_mut().expect("the daemon is running").proc.signal(nix::sys::signal::Signal::SIGHUP).unwrap();
    }

    /// SIGKILLs the daemon (no chance to clean up) and reaps it.
    pub(crate) fn kill9_daemon(&mut self) {
        let daemon = self.daemon.as_mut().expect("the daemon is running");
        daemon.proc.kill9().unwrap();
    }

    /// Everything the daemon wrote on stderr, across restarts.
    pub(crate) fn daemon_logs(&self) -> String {
        let mut all = String::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(self.scratch.path())
            .expect("list the scratch dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("att-tokend")))
            .collect();
        entries.sort();
        for path in entries {
            all.push_str(&std::fs::read_to_string(path).unwrap_or_default());
        }
        all
    }

    /// `att-token <args>` on this world's bus.
    pub(crate) fn att_token(&self, args: &[&str]) -> Output {
        bins().att_token(&self.bus.address).args(args).output().expect("run att-token")
    }

    /// `att-token get NAME`: the token, or the failed output.
    pub(crate) fn get(&self, name: &str) -> Result<String, Output> {
        let out = self.att_token(&["get", name]);
        if out.status.success() {
            Ok(String::from_utf8(out.stdout.clone()).expect("tokens are UTF-8").trim_end_matches('\n').to_owned())
        } else {
            Err(out)
        }
    }

    /// `att-token list --json`, parsed.
    pub(crate) fn list_json(&self) -> serde_json::Value {
        let out = self.att_token(&["list", "--json"]);
        assert!(out.status.success(), "att-token list --json failed: {}", describe(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("att-token list --json printed no JSON ({e}): {}", describe(&out)))
    }

    /// One token's entry of `att-token list --json`.
    pub(crate) fn listed(&self, name: &str) -> serde_json::Value {
        let list = self.list_json();
        let entries = list.as_array().cloned().or_else(|| list["tokens"].as_array().cloned()).unwrap_or_default();
        entries
            .into_iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("att-token list --json has no token {name:?}: {list}"))
    }

    /// Waits until `name`'s listed state is `state`.
    pub(crate) fn wait_for_state(&self, name: &str, state: &str) -> serde_json::Value {
        wait_until(&format!("{name} to be {state}"), PATIENCE, || {
            let entry = self.listed(name);
            if entry["state"] == state { Ok(entry) } else { Err(format!("listed as {entry}")) }
        })
    }

    /// Logs `name` in as [`USERNAME`] with the current TOTP code; returns the code used and the output.
    pub(crate) fn login(&self, name: &str) -> (String, Output) {
        let code = self.fake.api().current_totp(USERNAME).unwrap();
        let mut command = bins().att_token(&self.bus.address);
        command.args(["login", name, "--username", USERNAME, "--password-stdin", "--code", &code]);
        let out = testbed::output_with_stdin(command, &format!("{PASSWORD}\n")).unwrap();
        (code, out)
    }

    /// Logs in and asserts it worked; returns the code used.
    pub(crate) fn login_ok(&self, name: &str) -> String {
        let (code, out) = self.login(name);
        assert!(out.status.success(), "att-token login failed: {}", describe(&out));
        code
    }
}
