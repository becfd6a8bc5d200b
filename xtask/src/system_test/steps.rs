//! The steps of the system test, each a method of [`Test`], which they share with the later steps
//! ([`super::lifecycle`]) and the figures ([`super::figures`]): apt install, sealed credentials and `Type=notify`,
//! the bus policy with real users and a token file's ACL, and the `att-token-proxy@` template on loopback and on
//! a unix socket.

use super::*;

/// The steps, sharing the container, the fake cloud's URL and every secret the journal must not hold.
pub(super) struct Test<'a> {
    pub(super) c: &'a Guest,
    pub(super) url: String,
    /// The conffile as the package installed it.
    pub(super) shipped: String,
    pub(super) secrets: Vec<String>,
    /// The Debian architecture under test, for the figures.
    pub(super) arch: &'static str,
}

impl Test<'_> {
    /// Runs one step; a failure carries the unit's last journal lines.
    pub(super) fn step(
        &mut self,
        title: &str,
        body: impl FnOnce(&mut Self) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        println!("system-test: step {title}");
        let started = Instant::now();
        match body(self) {
            Ok(()) => {
                println!("system-test: step {title}: passed ({:.1} s)", started.elapsed().as_secs_f64());
                Ok(())
            }
            Err(error) => Err(anyhow::anyhow!(
                "step {title} failed: {error:#}\n\natt-tokend's last journal lines:\n{}\n\nWhat to do: the check above \
                 names what differs from the expectation; the journal lines say what the daemon and systemd did",
                self.c.journal_tail()
            )),
        }
    }

    pub(super) fn att_token(&self, user: Option<&str>, args: &[&str]) -> anyhow::Result<Output> {
        let mut all = vec!["att-token"];
        all.extend_from_slice(args);
        let mut command = match user {
            Some(user) => self.c.as_user(user, &all),
            None => self.c.command(&all),
        };
        command.output().with_context(|| format!("could not run att-token in {}", self.c.name()))
    }

    /// `att-token get NAME` as `user`, which must work; returns the token.
    pub(super) fn get(&mut self, user: Option<&str>, name: &str) -> anyhow::Result<String> {
        let out = self.att_token(user, &["get", name])?;
        ensure!(
            out.status.success(),
            "att-token get {name} as {} failed: {}",
            user.unwrap_or("root"),
            text(&out.stderr)
        );
        let token = text(&out.stdout);
        ensure!(!token.is_empty(), "att-token get {name} printed nothing");
        if !self.secrets.contains(&token) {
            self.secrets.push(token.clone());
        }
        Ok(token)
    }

    /// Polls `att-token get NAME` as `user` until it works.
    pub(super) fn wait_get(&mut self, user: Option<&str>, name: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + self.c.patience();
        loop {
            match self.get(user, name) {
                Ok(token) => return Ok(token),
                Err(error) if Instant::now() >= deadline => return Err(error),
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// Waits until the service is active with a main pid other than `old`; returns the new pid.
    pub(super) fn wait_restarted(&self, old: u32, patience: Duration) -> anyhow::Result<u32> {
        let deadline = Instant::now() + patience;
        loop {
            let pid = self.c.main_pid()?;
            let state = self.c.property("ActiveState")?;
            if pid != 0 && pid != old && state == "active" {
                return Ok(pid);
            }
            ensure!(
                Instant::now() < deadline,
                "att-tokend was not running again within {patience:?} (state {state}, main pid {pid}, before {old})"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub(super) fn installed(&self, package: &str) -> bool {
        self.c
            .output(&["dpkg-query", "-W", "-f=${Status}", package])
            .is_ok_and(|out| text(&out.stdout) == "install ok installed")
    }

    /// Step 1: apt pulls the dependencies, the service runs, the accounts and bus files exist.
    pub(super) fn install(&mut self, deb: &str) -> anyhow::Result<()> {
        // The dependencies the minimal root lacks (the emulated machine's image has procps, which openssh-server
        // pulls in); apt must pull in every one of them.
        let missing: Vec<&str> =
            ["ca-certificates", "procps"].into_iter().filter(|package| !self.installed(package)).collect();
        ensure!(
            missing.contains(&"ca-certificates"),
            "the minimal root already has ca-certificates; delete the cached root or image to rebuild it"
        );
        self.c.check(&["apt-get", "update", "-qq"]).context("apt-get update failed; check the network")?;
        let out = self.c.output(&["apt-get", "install", "-y", "-q", "--no-install-recommends", deb])?;
        ensure!(out.status.success(), "apt-get install {deb} failed: {}\n{}", text(&out.stdout), text(&out.stderr));
        for package in ["att-tokend", "ca-certificates", "procps"] {
            ensure!(self.installed(package), "after apt-get install, {package} is not installed");
        }
        // The container has no TPM2 chip: postinst says what the seal is then worth.
        let said = text(&out.stdout);
        let binding = said.lines().find(|line| line.contains("created the state key")).unwrap_or_default();
        ensure!(
            binding.contains("host key only"),
            "postinst did not say the state key is bound to the host key only: {said}"
        );
        println!("system-test:   postinst: {binding}");
        println!(
            "system-test:   apt-get install ./{} pulled {}",
            deb.rsplit('/').next().unwrap_or(deb),
            missing.join(" and ")
        );
        // curl reaches the proxy template's unix socket in step 3 (not a dependency of the package).
        self.c.check(&["apt-get", "install", "-y", "-q", "--no-install-recommends", "curl"])?;
        let state = self.c.output(&["systemctl", "is-active", "att-tokend.service"])?;
        ensure!(
            text(&state.stdout) == "active",
            "after installation att-tokend is {}, not active",
            text(&state.stdout)
        );
        ensure!(
            self.c.check(&["systemctl", "is-enabled", "att-tokend.service"])? == "enabled",
            "the service is not enabled"
        );
        let user = self.c.check(&["getent", "passwd", "att-tokend"])?;
        let group = self.c.check(&["getent", "group", "att-tokens"])?;
        println!("system-test:   the service is enabled and active; user {user}; group {group}");
        for path in [
            "/usr/share/dbus-1/system.d/io.allthingstalk.TokenAgent1.conf",
            "/usr/share/dbus-1/system-services/io.allthingstalk.TokenAgent1.service",
            "/usr/share/dbus-1/interfaces/io.allthingstalk.TokenAgent1.xml",
            "/etc/att-tokend/config.toml",
        ] {
            self.c.check(&["test", "-f", path]).with_context(|| format!("{path} is not installed"))?;
        }
        let names = self.c.check(&["busctl", "--system", "--no-pager", "--no-legend", "--activatable", "list"])?;
        ensure!(names.contains(BUS_NAME), "the system bus does not list {BUS_NAME} as activatable: {names}");
        let owned = self.c.check(&["busctl", "--system", "--no-pager", "--no-legend", "list"])?;
        ensure!(
            owned.lines().any(|line| line.starts_with(BUS_NAME) && line.contains("att-tokend")),
            "{BUS_NAME} is not owned by the att-tokend service on the system bus"
        );
        println!(
            "system-test:   policy and activation files in place; {BUS_NAME} is owned on the system bus and activatable"
        );
        Ok(())
    }

    /// Step 2: sealed credentials in a drop-in; the config names them; restart reaches running.
    pub(super) fn credentials(&mut self) -> anyhow::Result<()> {
        self.c.check(&["install", "-d", "-m", "0700", "/etc/credstore.encrypted"])?;
        for (name, secret) in
            [("sensor-7", DEVICE_TOKEN), ("auto-password", AUTO_PASSWORD), ("auto-totp", AUTO_TOTP_SEED)]
        {
            let path = format!("/etc/credstore.encrypted/att-tokend.{name}");
            let command = self.c.command(&["systemd-creds", "encrypt", &format!("--name={name}"), "-", &path]);
            let out = crate::procs::output_with_stdin(command, secret)?;
            ensure!(out.status.success(), "systemd-creds encrypt {name} failed: {}", text(&out.stderr));
            let sealed = self.c.output(&["cat", &path])?.stdout;
            ensure!(!String::from_utf8_lossy(&sealed).contains(secret), "{path} holds the secret in clear text");
        }
        self.c.write(
            "/etc/systemd/system/att-tokend.service.d/50-credentials.conf",
            "[Service]\n\
             LoadCredentialEncrypted=sensor-7:/etc/credstore.encrypted/att-tokend.sensor-7\n\
             LoadCredentialEncrypted=auto-password:/etc/credstore.encrypted/att-tokend.auto-password\n\
             LoadCredentialEncrypted=auto-totp:/etc/credstore.encrypted/att-tokend.auto-totp\n",
            "0644",
            "root",
        )?;
        self.c.write(
            "/etc/systemd/system/att-tokend.service.d/60-debug.conf",
            "[Service]\nEnvironment=RUST_LOG=debug\n",
            "0644",
            "root",
        )?;
        for (user, groups) in [(READER, Some("att-tokens")), (OUTSIDER, None)] {
            let mut args = vec!["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"];
            if let Some(groups) = groups {
                args.extend(["--groups", groups]);
            }
            args.push(user);
            self.c.check(&args)?;
        }
        self.shipped = self.c.check(&["cat", "/etc/att-tokend/config.toml"])?;
        let config = self.config(false);
        self.c.write("/etc/att-tokend/config.toml", &config, "0644", "root")?;
        self.c.check(&["systemctl", "daemon-reload"])?;
        self.c.check(&["systemctl", "restart", "att-tokend.service"])?;
        let shown = self.c.check(&[
            "systemctl",
            "show",
            "--property=Type,ActiveState,SubState,NotifyAccess,WatchdogUSec,StatusText",
            "att-tokend.service",
        ])?;
        for expected in ["Type=notify", "ActiveState=active", "SubState=running", "WatchdogUSec=30s"] {
            ensure!(shown.lines().any(|line| line == expected), "after restart the unit shows no {expected}:\n{shown}");
        }
        let status = shown.lines().find_map(|line| line.strip_prefix("StatusText=")).unwrap_or_default();
        ensure!(!status.is_empty(), "the daemon sent no STATUS= (notify protocol) after restart");
        println!("system-test:   3 secrets sealed with systemd-creds (host key), loaded with LoadCredentialEncrypted=");
        println!(
            "system-test:   systemctl restart returned at READY=1: active (running), Type=notify; status {status:?}"
        );
        let token = self.wait_get(None, "sensor-7")?;
        ensure!(token == DEVICE_TOKEN, "the device token served is not the sealed one");
        self.wait_get(None, "auto")?;
        println!(
            "system-test:   the sealed device token is served; `auto` logged in on its own with the sealed password and TOTP seed"
        );
        Ok(())
    }

    /// The installed conffile with the fake cloud and the test's tokens; `second` adds `sensor-8`
    /// from a token file.
    pub(super) fn config(&self, second: bool) -> String {
        let shipped = &self.shipped;
        // att-tokens as a reader group lets the att-token-proxy@ template (user att-token-proxy, in att-tokens) in.
        let readers = format!("readers = {{ users = [\"{READER}\", \"{OUTSIDER}\"], groups = [\"att-tokens\"] }}");
        let mut config = format!(
            "{shipped}\n\n# Added by cargo xtask system-test.\n[api]\nurl = \"{url}\"\n\n\
             # The steps restart the daemon and ask for tokens at once; the spread is tested in core_fleet.rs.\n\
             [daemon]\nstartup_spread = \"0s\"\n\n\
             [[token]]\nname = \"sensor-7\"\nkind = \"device\"\ndevice_id = \"{DEVICE_ID}\"\ncredential = \"sensor-7\"\n\
             files = [\"{TOKEN_FILE}\"]\n{readers}\n\n\
             [[token]]\nname = \"main\"\nkind = \"user\"\nfiles = [\"{MAIN_FILE}\"]\n{readers}\n\n\
             [[token]]\nname = \"auto\"\nkind = \"user\"\nusername = \"{AUTO_USERNAME}\"\n\
             password_file = \"{CREDENTIALS_DIR}/auto-password\"\ntotp_secret_file = \"{CREDENTIALS_DIR}/auto-totp\"\n{readers}\n",
            url = self.url
        );
        if second {
            config.push_str(&format!(
                "\n[[token]]\nname = \"sensor-8\"\nkind = \"device\"\ndevice_id = \"{DEVICE2_ID}\"\n\
                 token_file = \"/etc/att-tokend/sensor-8.token\"\n{readers}\n"
            ));
        }
        config
    }

    /// Step 3: the real system bus with real users; a login with MFA as root.
    pub(super) fn bus_access(&mut self) -> anyhow::Result<()> {
        let token = self.get(Some(READER), "sensor-7")?;
        ensure!(token == DEVICE_TOKEN, "{READER} got a different device token");
        let busctl = self
            .c
            .as_user(READER, &["busctl", "--system", "call", BUS_NAME, OBJECT, BUS_NAME, "GetToken", "s", "sensor-7"])
            .output()?;
        ensure!(busctl.status.success(), "busctl GetToken as {READER} failed: {}", text(&busctl.stderr));
        ensure!(
            text(&busctl.stdout).starts_with(&format!("sx \"{DEVICE_TOKEN}\"")),
            "busctl GetToken as {READER} answered something else than the device token"
        );
        self.get(Some(READER), "auto")?;
        println!(
            "system-test:   {READER} (in att-tokens, a listed reader) gets sensor-7 and auto with att-token and busctl"
        );

        let refused = self
            .c
            .as_user(
                OUTSIDER,
                &[
                    "dbus-send",
                    "--system",
                    "--print-reply",
                    &format!("--dest={BUS_NAME}"),
                    OBJECT,
                    &format!("{BUS_NAME}.GetToken"),
                    "string:sensor-7",
                ],
            )
            .output()?;
        crate::util::refused_by_bus_policy(&refused, OUTSIDER)?;
        let client = self.att_token(Some(OUTSIDER), &["get", "sensor-7"])?;
        ensure!(!client.status.success(), "att-token get sensor-7 as {OUTSIDER} succeeded");
        println!(
            "system-test:   {OUTSIDER} (listed as a reader, not in att-tokens) is refused by the bus policy: AccessDenied, \"Rejected send message\""
        );

        let patience = self.c.patience() / 6;
        let deadline = Instant::now() + patience;
        while !self.c.output(&["test", "-f", TOKEN_FILE])?.status.success() {
            ensure!(Instant::now() < deadline, "{TOKEN_FILE} did not appear within {patience:?} of the start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let file = self.c.as_user(READER, &["cat", TOKEN_FILE]).output()?;
        ensure!(
            file.status.success() && file.stdout == DEVICE_TOKEN.as_bytes(),
            "{READER} could not read {TOKEN_FILE} or it does not hold exactly sensor-7's token: {}",
            text(&file.stderr)
        );
        let stranger = self.c.as_account("nobody", "nogroup", testbed::Groups::None, &["cat", TOKEN_FILE]).output()?;
        ensure!(
            !stranger.status.success() && text(&stranger.stderr).contains("Permission denied"),
            "{STRANGER} (no reader of sensor-7) could read {TOKEN_FILE}, or failed for another reason: {}",
            text(&stranger.stderr)
        );
        let acl = self.c.check(&["stat", "-c", "%a %U", TOKEN_FILE])?;
        println!(
            "system-test:   {TOKEN_FILE} ({acl}, with the readers' ACL on tmpfs) holds exactly the token for {READER}; {STRANGER} gets Permission denied"
        );

        let code = crate::procs::fake_totp(&self.url, USERNAME)?;
        let login = self.c.command(&[
            "att-token",
            "login",
            "main",
            "--username",
            USERNAME,
            "--password-stdin",
            "--code",
            &code,
        ]);
        let out = crate::procs::output_with_stdin(login, &format!("{PASSWORD}\n"))?;
        ensure!(out.status.success(), "att-token login main as root failed: {}", text(&out.stderr));
        self.get(Some(READER), "main")?;
        println!(
            "system-test:   att-token login main as root with a TOTP code against the fake cloud; {READER} gets the user token"
        );
        self.proxy_template()
    }

    /// The shipped `att-token-proxy@.service` for `auto`: started by systemd as a dynamic user in att-tokens, it
    /// answers on loopback with the daemon's token added, and its journal holds no token.
    pub(super) fn proxy_template(&mut self) -> anyhow::Result<()> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        self.c.reach_guest(port)?;
        self.c.write(
            "/etc/att-tokend/proxy/auto.env",
            &format!("ATT_TOKEN_PROXY_LISTEN=127.0.0.1:{port}\n"),
            "0644",
            "root",
        )?;
        self.c.check(&["systemctl", "start", "att-token-proxy@auto.service"])?;
        let token = self.get(Some(READER), "auto")?;
        // Asked from here (the container shares the host's network; the emulated machine's port is forwarded),
        // once the proxy listens.
        let deadline = Instant::now() + self.c.patience() / 6;
        let proxy = format!("http://127.0.0.1:{port}");
        let (status, body) = loop {
            match testbed::http(&proxy, "GET", "/me/grounds", "", "") {
                Ok(reply) => break reply,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                Err(e) => {
                    let journal =
                        self.c.output(&["journalctl", "-u", "att-token-proxy@auto", "--no-pager", "-n", "20"])?;
                    bail!("att-token-proxy@auto does not answer on 127.0.0.1:{port}: {e:#}\n{}", text(&journal.stdout));
                }
            }
        };
        ensure!(status == 200, "GET /me/grounds through att-token-proxy@auto answered {status}: {body}");
        let user = self.c.check(&["systemctl", "show", "-P", "User", "att-token-proxy@auto.service"])?;
        let journal = self.c.check(&["journalctl", "-u", "att-token-proxy@auto", "--no-pager", "--output=cat"])?;
        ensure!(journal.contains("/me/grounds"), "the proxy logged no line for the request:\n{journal}");
        ensure!(!journal.contains(&token), "the proxy's journal holds the token");
        println!(
            "system-test:   att-token-proxy@auto (as {user}, in att-tokens) answered GET /me/grounds on 127.0.0.1:{port} \
             with 200 from the fake cloud; its journal logs the request without the token"
        );
        self.proxy_unix_socket()
    }

    /// The template on a unix socket in its runtime directory, as README recommends: members of the group
    /// att-token-proxy get through, others cannot connect, and a web page's request (with `Origin`) is refused.
    pub(super) fn proxy_unix_socket(&mut self) -> anyhow::Result<()> {
        const SOCKET: &str = "/run/att-token-proxy/auto/http.sock";
        self.c.write(
            "/etc/att-tokend/proxy/auto.env",
            &format!("ATT_TOKEN_PROXY_LISTEN=unix:{SOCKET}\nATT_TOKEN_PROXY_SOCKET_MODE=660\n"),
            "0644",
            "root",
        )?;
        self.c.check(&["usermod", "-aG", "att-token-proxy", READER])?;
        self.c.check(&["systemctl", "restart", "att-token-proxy@auto.service"])?;
        let patience = self.c.patience() / 6;
        let deadline = Instant::now() + patience;
        while !self.c.output(&["test", "-S", SOCKET])?.status.success() {
            ensure!(Instant::now() < deadline, "{SOCKET} did not appear within {patience:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let modes = self.c.check(&["stat", "-c", "%a %U %G", "/run/att-token-proxy/auto", SOCKET])?;
        ensure!(
            modes.lines().collect::<Vec<_>>()
                == ["750 att-token-proxy att-token-proxy", "660 att-token-proxy att-token-proxy"],
            "the runtime directory and socket are not 750 and 660 of att-token-proxy: {modes}"
        );
        let curl = |user: Option<&str>, extra: &[&str]| -> anyhow::Result<Output> {
            let mut args = vec!["curl", "-sS", "--unix-socket", SOCKET, "-o", "/dev/null", "-w", "%{http_code}"];
            args.extend_from_slice(extra);
            args.push("http://localhost/me/grounds");
            let mut command = match user {
                Some(user) => self.c.as_user(user, &args),
                None => self.c.command(&args),
            };
            command.output().with_context(|| format!("could not run curl in {}", self.c.name()))
        };
        let ok = curl(Some(READER), &[])?;
        ensure!(
            ok.status.success() && text(&ok.stdout) == "200",
            "GET /me/grounds through {SOCKET} as {READER} (in att-token-proxy) answered {}: {}",
            text(&ok.stdout),
            text(&ok.stderr)
        );
        let page = curl(Some(READER), &["-H", "Origin: http://attacker.example"])?;
        ensure!(text(&page.stdout) == "403", "a request with Origin through {SOCKET} answered {}", text(&page.stdout));
        let stranger = self
            .c
            .as_account(
                "nobody",
                "nogroup",
                testbed::Groups::None,
                &["curl", "-sS", "--unix-socket", SOCKET, "http://localhost/me/grounds"],
            )
            .output()?;
        ensure!(
            stranger.status.code() == Some(7),
            "{STRANGER} (not in att-token-proxy) could connect to {SOCKET}, or failed otherwise: {}",
            text(&stranger.stderr)
        );
        let pid = self.c.check(&["systemctl", "show", "-P", "MainPID", "att-token-proxy@auto.service"])?;
        self.undumpable("att-token-proxy@auto.service", &pid, "att-token-proxy")?;
        println!(
            "system-test:   att-token-proxy@auto on {SOCKET} (dir 750, socket 660): {READER}, in att-token-proxy, gets 200; \
             a request with Origin gets 403; {STRANGER} cannot connect (left running for the purge)"
        );
        Ok(())
    }
}
