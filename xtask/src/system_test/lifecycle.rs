//! The later steps of the system test, on the running service: the sandbox as systemd builds it (undumpable
//! processes, core limit 0, no swap, the exposure figure), the wall clock as timedated reports it, reload (and a
//! failed one), `kill -9`, the watchdog and D-Bus activation, a journal at debug level free of secrets, and purge.

use super::*;

impl Test<'_> {
    /// No core dump and no swap for `unit`'s main process `pid` (running as `user`): it marked itself undumpable (the
    /// kernel then gives the files in its `/proc/PID`, but the directory, to root), its core size limit is 0, and
    /// the unit keeps it out of swap.
    pub(super) fn undumpable(&self, unit: &str, pid: &str, user: &str) -> anyhow::Result<()> {
        let owners =
            self.c.check(&["stat", "-c", "%U", &format!("/proc/{pid}/status"), &format!("/proc/{pid}/mem")])?;
        ensure!(
            owners.lines().all(|owner| owner == "root"),
            "/proc/{pid}/status and mem of {unit} (running as {user}) belong to {owners:?}, not root: the process is \
             dumpable, so an abort would write its memory to a core dump"
        );
        let limits = self.c.check(&["cat", &format!("/proc/{pid}/limits")])?;
        let core = limits.lines().find(|line| line.starts_with("Max core file size")).unwrap_or_default();
        ensure!(
            core.split_whitespace().skip(4).take(2).all(|figure| figure == "0"),
            "{unit}'s core file size limit is not 0: {core}"
        );
        let shown = self.c.check(&["systemctl", "show", "--property=LimitCORE,MemorySwapMax", unit])?;
        for expected in ["LimitCORE=0", "MemorySwapMax=0"] {
            ensure!(shown.lines().any(|line| line == expected), "{unit} shows no {expected}:\n{shown}");
        }
        println!(
            "system-test:   {unit}: undumpable (/proc/{pid}/status and mem belong to root, the process to {user}), \
             core limit 0, LimitCORE=0, MemorySwapMax=0"
        );
        Ok(())
    }

    /// Step 4: the daemon's user, its view of the file system, its state, its exposure.
    pub(super) fn sandbox(&mut self) -> anyhow::Result<()> {
        let pid = self.c.main_pid()?.to_string();
        let uid = self.c.check(&["id", "-u", "att-tokend"])?;
        let status = self.c.check(&["cat", &format!("/proc/{pid}/status")])?;
        let uids = status.lines().find_map(|line| line.strip_prefix("Uid:")).unwrap_or_default();
        ensure!(
            uids.split_whitespace().all(|id| id == uid),
            "the daemon runs with uids {uids}, not only att-tokend's {uid}"
        );
        let caps = status.lines().find_map(|line| line.strip_prefix("CapEff:")).unwrap_or_default().trim().to_owned();
        ensure!(caps.trim_start_matches('0').is_empty(), "the daemon has effective capabilities {caps}");
        println!("system-test:   the daemon (pid {pid}) runs as att-tokend (uid {uid}) with no capabilities");
        self.undumpable("att-tokend.service", &pid, "att-tokend")?;

        self.c.write("/root/att-system-test-marker", "root's file\n", "0600", "root")?;
        self.c.write("/home/someone/att-system-test-marker", "someone's file\n", "0600", "root")?;
        for dir in ["/root", "/home"] {
            let view = format!("/proc/{pid}/root{dir}");
            let listing = self.c.output(&["ls", "-A", &view])?;
            let mode = self.c.check(&["stat", "-c", "%a", &view])?;
            ensure!(
                text(&listing.stdout).is_empty() && mode == "0",
                "the daemon sees {dir} (mode {mode}): {}",
                text(&listing.stdout)
            );
            // As the daemon's user, in its mount namespace.
            let out = self.c.as_user("att-tokend", &["ls", "-A", &view]).output()?;
            ensure!(!out.status.success(), "att-tokend may list {dir} as the daemon sees it: {}", text(&out.stdout));
        }
        println!(
            "system-test:   in the daemon's mount namespace /root and /home are empty and mode 000 (the container's are not)"
        );

        let state = self.c.check(&["stat", "-c", "%a %U %G", "/var/lib/att-tokend"])?;
        ensure!(state == "700 att-tokend att-tokend", "/var/lib/att-tokend is {state}, not 700 att-tokend att-tokend");
        let files = self.c.check(&["find", "/var/lib/att-tokend", "-mindepth", "1", "-printf", "%y %m %u %p\\n"])?;
        ensure!(!files.is_empty(), "no session is saved in /var/lib/att-tokend");
        for line in files.lines() {
            ensure!(
                line.starts_with("f 600 att-tokend "),
                "in the state directory, not a 0600 att-tokend file: {line}"
            );
        }
        // Sessions are sealed with the state key postinst created with systemd-creds (host key here).
        let storage =
            self.c.check(&["busctl", "--system", "get-property", BUS_NAME, OBJECT, BUS_NAME, "SessionStorage"])?;
        ensure!(
            storage == "s \"sealed\"",
            "SessionStorage is {storage}, not sealed: the state-key credential was not used"
        );
        let mut sealed = 0;
        for session in ["main.json", "auto.json"] {
            let path = format!("/var/lib/att-tokend/{session}");
            let head = self.c.check(&["head", "-c", "17", &path])?;
            ensure!(head == "ATT-TOKEND SEALED", "{path} is not sealed: it starts with {head:?}");
            sealed += 1;
        }
        let credentials = self.c.check(&["find", CREDENTIALS_DIR, "-mindepth", "1", "-printf", "%y %m %u %p\\n"])?;
        println!(
            "system-test:   state: /var/lib/att-tokend 700, {} files 0600 att-tokend, {sealed} sessions sealed (SessionStorage sealed); credentials: {}",
            files.lines().count(),
            credentials.lines().map(|line| line.rsplit('/').next().unwrap_or(line)).collect::<Vec<_>>().join(", ")
        );

        let live = exposure(&self.c.check(&["systemd-analyze", "security", "--no-pager", "att-tokend.service"])?)?;
        let offline = exposure(&self.c.check(&[
            "systemd-analyze",
            "security",
            "--offline=true",
            "--no-pager",
            "/lib/systemd/system/att-tokend.service",
        ])?)?;
        ensure!(
            live == offline,
            "systemd-analyze security: the live unit's exposure is {live}, the offline figure {offline}"
        );
        println!("system-test:   systemd-analyze security on the live unit: {live}, as offline");
        Ok(())
    }

    /// Step 5: the daemon's view of the wall clock is the system's (`timedatectl`), under the shipped unit's sandbox;
    /// with the clock synchronised, a restart serves the saved user token at once, with no refresh and the token
    /// file untouched. The clock is made synchronised or not the way an NTP client does (the maximum error that
    /// timedated reads): in the host's kernel, which the container shares, putting back what was there afterwards;
    /// in the emulated machine's own kernel.
    pub(super) fn clock(&mut self) -> anyhow::Result<()> {
        let Guest::Container(_) = self.c else {
            // The emulated machine's kernel is its own, thrown away with the machine.
            return self.clock_cases();
        };
        let host = testbed::KernelClock::read()?;
        let result = self.clock_cases();
        let restored = host.restore();
        result?;
        restored.context("could not put back the host kernel's clock state")?;
        println!(
            "system-test:   the host kernel's clock state is back as it was (synchronised: {})",
            host.synchronised()
        );
        Ok(())
    }

    pub(super) fn clock_cases(&mut self) -> anyhow::Result<()> {
        for synchronised in [false, true] {
            self.c.set_clock_synchronised(synchronised)?;
            let system = self.c.check(&["timedatectl", "show", "--property=NTPSynchronized", "--value"])?;
            ensure!(
                system == if synchronised { "yes" } else { "no" },
                "timedatectl says NTPSynchronized={system} after the kernel's clock was made synchronised={synchronised}"
            );
            let before = refreshes(&self.url)?;
            let token = self.get(Some(READER), "main")?;
            let file = self.c.check(&["stat", "-c", "%i %y", MAIN_FILE])?;
            self.c.check(&["systemctl", "restart", "att-tokend.service"])?;
            let seen =
                self.c.check(&["busctl", "--system", "get-property", BUS_NAME, OBJECT, BUS_NAME, "ClockConfirmed"])?;
            let daemon = match seen.as_str() {
                "b true" => "yes",
                "b false" => "no",
                other => bail!("ClockConfirmed is {other:?}, not a boolean"),
            };
            ensure!(
                daemon == system,
                "the daemon's ClockConfirmed is {daemon}, timedatectl's NTPSynchronized {system}"
            );
            if synchronised {
                // Served at once: the first call after the restart, before any refresh could have been answered.
                let served = self.get(Some(READER), "main")?;
                ensure!(served == token, "with a confirmed clock the restart did not serve the saved access token");
                std::thread::sleep(Duration::from_secs(2));
                ensure!(refreshes(&self.url)? == before, "with a confirmed clock the restart refreshed a saved token");
                let after = self.c.check(&["stat", "-c", "%i %y", MAIN_FILE])?;
                ensure!(after == file, "the restart rewrote {MAIN_FILE} (inode and time were {file}, now {after})");
                println!(
                    "system-test:   synchronised: timedatectl NTPSynchronized=yes, ClockConfirmed true; after a restart the \
                     saved token of main was served at once, no refresh, {MAIN_FILE} untouched ({file})"
                );
            } else {
                let fresh = self.wait_get(Some(READER), "main")?;
                ensure!(fresh != token, "with an unconfirmed clock the restart served the saved access token");
                ensure!(refreshes(&self.url)? > before, "with an unconfirmed clock no refresh followed the restart");
                println!(
                    "system-test:   not synchronised: timedatectl NTPSynchronized=no, ClockConfirmed false; after a restart \
                     the saved token of main was refreshed before it was served"
                );
            }
        }
        Ok(())
    }

    /// Step 6: reload (good and broken), kill -9, the watchdog, D-Bus activation.
    pub(super) fn lifecycle(&mut self) -> anyhow::Result<()> {
        // Reload: a new token from a file appears without a restart.
        let pid = self.c.main_pid()?;
        self.c.write("/etc/att-tokend/sensor-8.token", DEVICE2_TOKEN, "0600", "att-tokend")?;
        let config = self.config(true);
        self.c.write("/etc/att-tokend/config.toml", &config, "0644", "root")?;
        self.c
            .check(&["systemctl", "reload", "att-tokend.service"])
            .context("systemctl reload of a good config failed")?;
        let token = self.wait_get(Some(READER), "sensor-8")?;
        ensure!(token == DEVICE2_TOKEN, "after reload sensor-8 serves another token");
        ensure!(self.c.main_pid()? == pid, "the reload restarted the daemon");
        println!(
            "system-test:   systemctl reload applied a new token (sensor-8, from a token file) in the same process"
        );

        let broken = format!("{config}\n[[token]]\nname = \"broken\"\nkind = \"device\"\n");
        self.c.write("/etc/att-tokend/config.toml", &broken, "0644", "root")?;
        let before = self.journal_lines()?.len();
        let out = self.c.output(&["systemctl", "reload", "att-tokend.service"])?;
        ensure!(!out.status.success(), "systemctl reload of a broken config succeeded");
        ensure!(self.c.property("ActiveState")? == "active", "after a failed reload the service is not active");
        ensure!(self.c.main_pid()? == pid, "after a failed reload the daemon is another process");
        self.get(Some(READER), "sensor-8")?;
        let said = self.journal_lines()?.split_off(before).join("\n");
        ensure!(
            said.contains("config.toml") && said.contains("broken"),
            "the journal does not say what is wrong with the broken config:\n{said}"
        );
        println!(
            "system-test:   a broken config: systemctl reload fails ({}); the daemon keeps running and serving; the journal names the problem",
            text(&out.stderr).lines().next().unwrap_or_default()
        );
        self.c.write("/etc/att-tokend/config.toml", &config, "0644", "root")?;
        self.c.check(&["systemctl", "reload", "att-tokend.service"])?;

        // kill -9: restarted, and the sessions come back from the state directory without a login.
        let grants = password_grants(&self.url)?;
        let restarts = self.c.property("NRestarts")?;
        self.c.check(&["kill", "-KILL", &pid.to_string()])?;
        let started = Instant::now();
        let pid = self.wait_restarted(pid, self.c.patience())?;
        self.wait_get(Some(READER), "main")?;
        self.get(Some(READER), "auto")?;
        ensure!(
            password_grants(&self.url)? == grants,
            "after kill -9 the daemon logged in again instead of keeping its sessions"
        );
        ensure!(self.c.property("NRestarts")? != restarts, "systemd did not count a restart");
        let file = self.c.as_user(READER, &["cat", TOKEN_FILE]).output()?;
        ensure!(
            file.status.success() && file.stdout == DEVICE_TOKEN.as_bytes(),
            "after kill -9 and the restart, {READER} cannot read {TOKEN_FILE}: {}",
            text(&file.stderr)
        );
        println!(
            "system-test:   kill -9: restarted after {} s (RestartSec=5s); main and auto served from the saved sessions, no new login; the token file is there",
            started.elapsed().as_secs()
        );

        // The watchdog: a stopped daemon sends no WATCHDOG=1; systemd aborts it after 30 s and restarts it.
        self.c.check(&["kill", "-STOP", &pid.to_string()])?;
        let started = Instant::now();
        let new = self.wait_restarted(pid, Duration::from_secs(60) + self.c.patience())?;
        let waited = started.elapsed().as_secs();
        let journal =
            self.c.check(&["journalctl", "--unit=att-tokend.service", "--no-pager", "--output=cat", "--lines=60"])?;
        ensure!(journal.contains("Watchdog timeout"), "the restart was not the watchdog's:\n{journal}");
        ensure!(waited >= 25, "the daemon came back after {waited} s, before the watchdog's 30 s could have passed");
        self.wait_get(Some(READER), "main")?;
        println!(
            "system-test:   SIGSTOP: systemd reported a watchdog timeout and the daemon ran again (pid {new}) after {waited} s"
        );

        // D-Bus activation: a call to a stopped service starts it.
        self.c.check(&["systemctl", "stop", "att-tokend.service"])?;
        let state = self.c.output(&["systemctl", "is-active", "att-tokend.service"])?;
        ensure!(text(&state.stdout) == "inactive", "after systemctl stop the service is {}", text(&state.stdout));
        let token = self.get(Some(READER), "sensor-7")?;
        ensure!(token == DEVICE_TOKEN, "the activated daemon serves another device token");
        ensure!(self.c.property("ActiveState")? == "active", "the bus call did not leave the service active");
        println!(
            "system-test:   after systemctl stop, {READER}'s att-token get started the service through D-Bus activation"
        );
        Ok(())
    }

    /// Every line of the unit's journal, without metadata.
    pub(super) fn journal_lines(&self) -> anyhow::Result<Vec<String>> {
        let out = self.c.output(&["journalctl", "--unit=att-tokend.service", "--no-pager", "--output=cat"])?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect())
    }

    /// Step 7: the whole run's journal, at debug level, holds none of the secrets.
    pub(super) fn journal(&mut self) -> anyhow::Result<()> {
        let journal = self.journal_lines()?.join("\n");
        ensure!(journal.contains("DEBUG"), "the journal has no debug lines; the RUST_LOG=debug drop-in did not apply");
        let leaked: Vec<usize> = (0..self.secrets.len()).filter(|i| journal.contains(&self.secrets[*i])).collect();
        ensure!(
            leaked.is_empty(),
            "the journal holds {} of the {} secrets (numbers {leaked:?} in the test's list): find the log line and redact it",
            leaked.len(),
            self.secrets.len()
        );
        println!(
            "system-test:   {} journal lines at RUST_LOG=debug; none holds any of {} secrets (device tokens, passwords, seeds, access tokens)",
            journal.lines().count(),
            self.secrets.len()
        );
        Ok(())
    }

    /// Step 8: `apt purge` leaves no file of the package, no state, no credentials of ours.
    pub(super) fn purge(&mut self) -> anyhow::Result<()> {
        let listing = self.c.check(&["dpkg", "-L", "att-tokend"])?;
        // Directories dpkg lists that other packages own too (/usr, /etc) stay: only files count.
        let mut find = vec!["find"];
        find.extend(listing.lines().filter(|path| path.starts_with('/')));
        find.extend(["-maxdepth", "0", "-type", "f"]);
        let files = self.c.check(&find)?;
        ensure!(!files.is_empty(), "dpkg -L att-tokend lists no file");
        self.c.check(&["apt-get", "purge", "-y", "-q", "att-tokend"])?;
        let status = self.c.output(&["dpkg-query", "-W", "-f=${Status}", "att-tokend"])?;
        ensure!(
            !text(&status.stdout).contains("installed") && !text(&status.stdout).contains("config-files"),
            "dpkg still knows att-tokend: {}",
            text(&status.stdout)
        );
        let mut gone: Vec<&str> = files.lines().collect();
        gone.extend([
            "/etc/att-tokend",
            "/var/lib/att-tokend",
            "/etc/credstore.encrypted/att-tokend.sensor-7",
            "/etc/credstore.encrypted/att-tokend.auto-password",
            "/etc/credstore.encrypted/att-tokend.auto-totp",
            CREDENTIALS_DIR,
            "/run/att-tokend",
            "/etc/systemd/system/multi-user.target.wants/att-tokend.service",
            "/var/lib/systemd/deb-systemd-helper-enabled/att-tokend.service.dsh-also",
            "/var/lib/systemd/deb-systemd-helper-masked/att-tokend.service",
        ]);
        let mut ls = vec!["ls", "-d", "--"];
        ls.extend(gone);
        let left = self.c.output(&ls)?;
        ensure!(text(&left.stdout).is_empty(), "left after apt purge:\n{}", text(&left.stdout));
        let owned = self.c.check(&["find", "/", "-xdev", "-user", "att-tokend"])?;
        ensure!(owned.is_empty(), "files owned by att-tokend are left after purge:\n{owned}");
        let active = self.c.output(&["systemctl", "is-active", "att-tokend.service"])?;
        ensure!(text(&active.stdout) != "active", "att-tokend still runs after purge");
        let proxy = self.c.output(&["systemctl", "is-active", "att-token-proxy@auto.service"])?;
        ensure!(text(&proxy.stdout) != "active", "att-token-proxy@auto still runs after purge");
        println!(
            "system-test:   apt purge removed the package's {} files, /etc/att-tokend, /var/lib/att-tokend, the sealed att-tokend.* credentials \
             and the service's credentials; att-token-proxy@auto was stopped; no file owned by att-tokend is left (the user and group stay, as Debian does; the \
             administrator's drop-ins stay)",
            files.lines().count()
        );
        Ok(())
    }
}

/// `Overall exposure level for att-tokend.service: 1.2 OK` → `1.2 OK`.
pub(super) fn exposure(report: &str) -> anyhow::Result<String> {
    report
        .lines()
        .find_map(|line| line.split_once("Overall exposure level for att-tokend.service:"))
        .map(|(_, figure)| figure.trim().to_owned())
        .context("systemd-analyze security printed no overall exposure level")
}

/// The fake cloud's count of refreshes asked for.
pub(super) fn refreshes(url: &str) -> anyhow::Result<u64> {
    testbed::FakeControl::new(url).counter("refreshes")
}

/// The fake cloud's count of password grants.
pub(super) fn password_grants(url: &str) -> anyhow::Result<u64> {
    testbed::FakeControl::new(url).counter("password_grants")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposure_figure_is_read_from_the_report() {
        let report = "  NAME  DESCRIPTION  EXPOSURE\n→ Overall exposure level for att-tokend.service: 1.4 OK 🙂\n";
        assert_eq!(exposure(report).unwrap(), "1.4 OK 🙂");
        assert!(exposure("nothing").is_err());
    }
}
