//! `cargo xtask install-test`: the Debian package on a real Debian system, as root.
//!
//! Installs the `.deb` with `dpkg -i` and checks the installed files and unit, then runs the
//! installed daemon as the `att-tokend` user (under strace) against the fake cloud, on a private
//! `dbus-daemon` configured like the system bus (it includes `/usr/share/dbus-1/system.d/`, so the
//! installed policy applies). It calls the daemon as root, as a reader in the group `att-tokens` and
//! as a user outside it (refused by the bus; the trace shows the daemon never read the call), logs a
//! user in with MFA, refreshes, reloads with SIGHUP, and checks every system call, socket and mapping
//! of the daemon against the unit's sandbox. Finally `dpkg --purge` and a check that nothing is left
//! but the system user and group, which Debian keeps.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::procs::{Bus, Running, Scratch};
use crate::sys;
use crate::util::{cargo, run as run_command, text};

/// Help for `cargo xtask install-test`.
pub(crate) const HELP: &str = "\
cargo xtask install-test [--deb PATH]

As root on Debian: installs the package (built by `cargo xtask dist` unless --deb is given),
runs the installed daemon (under strace) on a private system-like bus against the fake cloud,
checks that root and a member of att-tokens get tokens and that another user is refused by the
bus, logs in with MFA, refreshes, reloads, checks the daemon's system calls against the unit's
sandbox, then purges the package and checks what is left. Creates and removes the users att-it-reader and
att-it-outsider, and removes the package's att-tokend user and att-tokens group again if they
did not exist before. Refuses to run when att-tokend is already installed.
";

const READER: &str = "att-it-reader";
const OUTSIDER: &str = "att-it-outsider";
const DEVICE_ID: &str = "InstallTestDevice7aaaaaa";
const DEVICE_TOKEN: &str = "maker:4InstallTestDeviceToken7";
const BUS_NAME: &str = "io.allthingstalk.TokenAgent1";
const USERNAME: &str = "gateway@example.com";
const PASSWORD: &str = "install test & more = fun";
/// The account's TOTP seed (base32): it asks for an MFA code.
const TOTP_SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs `cargo xtask install-test`.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let deb = match args {
        [] => None,
        [flag] if flag == "-h" || flag == "--help" => {
            print!("{HELP}");
            return Ok(());
        }
        [flag, path] if flag == "--deb" => Some(std::path::absolute(path)?),
        _ => bail!("usage:\n{HELP}"),
    };
    preflight()?;
    let deb = match deb {
        Some(deb) => deb,
        None => crate::dist::dist(None)?.deb,
    };
    let fake = build_fake_cloud()?;

    let mut guard = Guard {
        users: vec![READER, OUTSIDER],
        accounts: !user_exists("att-tokend") && !group_exists("att-tokens"),
        ..Guard::default()
    };
    println!("install-test: dpkg -i {}", deb.display());
    run_command(Command::new("dpkg").arg("-i").arg(&deb))?;
    guard.installed = true;
    let files = installed_files()?;
    check_installation(&files)?;
    exercise(&fake)?;

    guard.installed = false;
    println!("install-test: dpkg --purge att-tokend");
    run_command(Command::new("dpkg").args(["--purge", "att-tokend"]))?;
    check_purged(&files)?;
    drop(guard);
    println!("install-test: passed");
    Ok(())
}

/// Root, Debian, the tools, and no att-tokend installed yet.
fn preflight() -> anyhow::Result<()> {
    let uid = sys::capture(Command::new("id").arg("-u"))?;
    ensure!(uid.trim() == "0", "install-test installs a package and creates users: run it as root");
    ensure!(
        Path::new("/etc/debian_version").exists(),
        "install-test needs Debian (or a derivative): dpkg installs the package"
    );
    sys::require(&[
        ("dpkg", "dpkg"),
        ("dbus-daemon", "dbus-daemon"),
        ("dbus-send", "dbus-bin"),
        ("setpriv", "util-linux"),
        ("useradd", "passwd"),
        ("systemd-analyze", "systemd"),
        ("strace", "strace"),
    ])?;
    for dependency in ["dbus", "systemd"] {
        ensure!(
            package_status(dependency).contains("installed") && !package_status(dependency).contains("not-installed"),
            "the package depends on {dependency}, which is not installed; run `apt-get install {dependency}` first"
        );
    }
    let status = package_status("att-tokend");
    ensure!(
        !status.contains(" installed") && !status.contains("config-files"),
        "att-tokend is already on this machine ({status}); this test installs and purges it, so remove it first: dpkg --purge att-tokend"
    );
    Ok(())
}

fn package_status(package: &str) -> String {
    sys::capture(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .unwrap_or_else(|_| "not-installed".to_owned())
}

fn build_fake_cloud() -> anyhow::Result<PathBuf> {
    let target_dir = sys::target_dir()?;
    run_command(cargo().env("CARGO_TARGET_DIR", &target_dir).args([
        "build",
        "--locked",
        "-p",
        "fake-cloud",
        "--bin",
        "att-fake-cloud",
    ]))?;
    Ok(target_dir.join("debug").join("att-fake-cloud"))
}

/// Purges the package and removes the test users if a step failed half-way.
#[derive(Default)]
struct Guard {
    installed: bool,
    users: Vec<&'static str>,
    /// The package's system user and group, when this run created them (the package keeps them on
    /// purge, as Debian does; a test machine gets them removed again).
    accounts: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.installed {
            eprintln!("install-test: cleaning up: dpkg --purge att-tokend");
            let _ = Command::new("dpkg").args(["--purge", "att-tokend"]).stdout(Stdio::null()).status();
        }
        for user in &self.users {
            if user_exists(user) {
                let _ = Command::new("userdel").arg(user).status();
            }
        }
        if self.accounts {
            if user_exists("att-tokend") {
                let _ = Command::new("userdel").arg("att-tokend").status();
            }
            if group_exists("att-tokens") {
                let _ = Command::new("groupdel").arg("att-tokens").status();
            }
        }
    }
}

fn user_exists(name: &str) -> bool {
    Command::new("getent").args(["passwd", name]).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn group_exists(name: &str) -> bool {
    Command::new("getent").args(["group", name]).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// The package's files (not directories), from `dpkg -L`.
fn installed_files() -> anyhow::Result<Vec<PathBuf>> {
    let listing = sys::capture(Command::new("dpkg").args(["-L", "att-tokend"]))?;
    Ok(listing.lines().map(PathBuf::from).filter(|path| path.is_file()).collect())
}

/// What the package put on the machine, and the unit as systemd sees it there.
fn check_installation(files: &[PathBuf]) -> anyhow::Result<()> {
    let expected = [
        "/usr/bin/att-tokend",
        "/usr/bin/att-token",
        "/lib/systemd/system/att-tokend.service",
        "/usr/lib/sysusers.d/att-tokend.conf",
        "/usr/share/dbus-1/system.d/io.allthingstalk.TokenAgent1.conf",
        "/usr/share/dbus-1/system-services/io.allthingstalk.TokenAgent1.service",
        "/usr/share/dbus-1/interfaces/io.allthingstalk.TokenAgent1.xml",
        "/etc/att-tokend/config.toml",
        "/usr/share/man/man1/att-token.1.gz",
        "/usr/share/man/man8/att-tokend.8.gz",
        "/usr/share/doc/att-tokend/copyright",
    ];
    for path in expected {
        ensure!(files.iter().any(|file| file == Path::new(path)), "the package did not install {path}");
    }
    ensure!(user_exists("att-tokend"), "postinst did not create the user att-tokend");
    ensure!(group_exists("att-tokens"), "postinst did not create the group att-tokens");
    let state = sys::capture(Command::new("stat").args(["-c", "%a %U %G", "/var/lib/att-tokend"]))?;
    ensure!(
        state.trim() == "700 att-tokend att-tokend",
        "/var/lib/att-tokend is {}, not 700 att-tokend att-tokend",
        state.trim()
    );

    // With the man pages installed, verify runs in full: Documentation= must resolve too.
    let verify = Command::new("systemd-analyze").args(["verify", "att-tokend.service"]).output()?;
    let said = String::from_utf8_lossy(&verify.stderr);
    ensure!(verify.status.success() && said.trim().is_empty(), "systemd-analyze verify of the installed unit: {said}");
    let security = sys::capture(Command::new("systemd-analyze").args([
        "security",
        "--offline=true",
        "--no-pager",
        "/lib/systemd/system/att-tokend.service",
    ]))?;
    let overall = security.lines().find(|line| line.contains("Overall exposure level")).unwrap_or("(no figure)");
    println!("install-test: installed files present; verify clean; {}", overall.trim());
    Ok(())
}

/// Runs the installed daemon and calls it as three different users.
fn exercise(fake: &Path) -> anyhow::Result<()> {
    let scratch = Scratch::new("install-test")?;
    // The daemon and the test users must reach the bus socket and the config inside.
    sys::set_mode(scratch.path(), 0o755)?;
    create_user(READER, Some("att-tokens"))?;
    create_user(OUTSIDER, None)?;

    // The system bus's policy, with the installed policy files applied.
    let bus = Bus::start_like_system(
        &scratch,
        "  <includedir>/usr/share/dbus-1/system.d</includedir>\n  <includedir>/etc/dbus-1/system.d</includedir>",
    )
    .context("the private system-like dbus-daemon did not start")?;
    let address = bus.address.clone();
    let fake_args = [
        "--device-token".to_owned(),
        format!("{DEVICE_TOKEN}={DEVICE_ID}"),
        "--user".to_owned(),
        format!("{USERNAME}:{PASSWORD}:{TOTP_SEED}"),
    ];
    let (_fake, url) = crate::procs::start_fake(fake, &scratch, &fake_args)?;

    // The device token reaches the daemon as a systemd credential would: a file only att-tokend reads.
    let credentials = scratch.path().join("credentials");
    std::fs::create_dir(&credentials)?;
    sys::write(&credentials.join("sensor-7"), DEVICE_TOKEN, 0o400)?;
    run_command(Command::new("chown").args(["-R", "att-tokend:att-tokend"]).arg(&credentials))?;
    sys::set_mode(&credentials, 0o500)?;

    // The installed conffile, with the fake cloud, the private bus and one token added.
    let config_path = Path::new("/etc/att-tokend/config.toml");
    let mut config = std::fs::read_to_string(config_path)?;
    config.push_str(&format!(
        "\n# Added by install-test.\n[api]\nurl = \"{url}\"\n\n[daemon]\nbus = \"{address}\"\n\n\
         [[token]]\nname = \"sensor-7\"\nkind = \"device\"\ndevice_id = \"{DEVICE_ID}\"\n\
         readers = {{ groups = [\"att-tokens\"] }}\ncredential = \"sensor-7\"\n\n\
         [[token]]\nname = \"main\"\nkind = \"user\"\nreaders = {{ groups = [\"att-tokens\"] }}\n"
    ));
    std::fs::write(config_path, config)?;
    // A token file an operator put next to the config (not a conffile, so dpkg does not know it): the purge at
    // the end must remove it with /etc/att-tokend (check_purged).
    sys::write(Path::new("/etc/att-tokend/operator.token"), DEVICE_TOKEN, 0o600)?;

    let check = as_user("att-tokend", "/usr/bin/att-tokend")
        .arg("--check-config")
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .output()?;
    ensure!(check.status.success(), "att-tokend --check-config refused the installed config: {}", text(&check.stderr));

    // The daemon runs under strace from its first instruction: its reads show which calls reach
    // it, and its system calls, sockets and mappings are checked against the unit's sandbox.
    let trace = Trace { file: scratch.path().join("att-tokend.strace") };
    // The trace holds what the daemon reads, test secrets included: root only.
    sys::write(&trace.file, "", 0o600)?;
    let mut daemon_command = Command::new("strace");
    daemon_command
        .args(["-f", "-qq", "-y", "-s", "65536", "-o"])
        .arg(&trace.file)
        .arg("--")
        .args(testbed::setpriv_args("att-tokend", "att-tokend", testbed::Groups::Theirs))
        .arg("/usr/bin/att-tokend")
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .env("RUST_LOG", "trace")
        .env_remove("NOTIFY_SOCKET");
    let mut daemon = Running::spawn("att-tokend", daemon_command, &scratch)?;
    let log = scratch.path().join("att-tokend.stderr");
    testbed::wait_served(Path::new("/usr/bin/att-token"), &address, &mut daemon)?;
    println!("install-test: the installed att-tokend serves {BUS_NAME} as user att-tokend");

    let root = att_token(&address, None).args(["get", "sensor-7"]).output()?;
    ensure!(root.status.success(), "root could not get the token: {}", text(&root.stderr));
    ensure!(text(&root.stdout) == DEVICE_TOKEN, "root got a different token than the configured one");
    println!("install-test: root gets the token");

    let reader = att_token(&address, Some(READER)).args(["get", "sensor-7"]).output()?;
    ensure!(reader.status.success(), "{READER} (in att-tokens) could not get the token: {}", text(&reader.stderr));
    ensure!(text(&reader.stdout) == DEVICE_TOKEN, "{READER} got a different token than the configured one");
    println!("install-test: {READER}, a member of att-tokens, gets the token");

    // A user session: MFA login as root (an admin), a reader gets the access token, a forced
    // refresh replaces it, and the session is saved in the state directory, 0600.
    let code = crate::procs::fake_totp(&url, USERNAME)?;
    let mut login = att_token(&address, None);
    login.args(["login", "main", "--username", USERNAME, "--password-stdin", "--code", &code]);
    let login = crate::procs::output_with_stdin(login, &format!("{PASSWORD}\n"))?;
    ensure!(login.status.success(), "att-token login main failed: {}", text(&login.stderr));
    let first = att_token(&address, Some(READER)).args(["get", "main"]).output()?;
    ensure!(first.status.success() && !first.stdout.is_empty(), "{READER} got no user token: {}", text(&first.stderr));
    let refresh = att_token(&address, None).args(["refresh", "main"]).output()?;
    ensure!(refresh.status.success(), "att-token refresh main failed: {}", text(&refresh.stderr));
    let second = att_token(&address, Some(READER)).args(["get", "main"]).output()?;
    ensure!(
        second.status.success() && second.stdout != first.stdout,
        "the refresh did not hand out a new access token"
    );
    let saved =
        sys::capture(Command::new("find").args(["/var/lib/att-tokend", "-type", "f", "-printf", "%m %u %p\\n"]))?;
    ensure!(!saved.trim().is_empty(), "the session was not saved in /var/lib/att-tokend");
    for line in saved.lines() {
        ensure!(line.starts_with("600 att-tokend "), "a state file is not 0600 att-tokend: {line}");
    }
    println!("install-test: MFA login, a reader gets the user token, refresh replaces it; session saved 0600");

    // systemctl reload sends SIGHUP (ExecReload=): the daemon re-reads its config and keeps serving.
    let pid = traced_child(daemon.pid())?;
    run_command(Command::new("kill").args(["-HUP", &pid.to_string()]))?;
    let deadline = Instant::now() + PATIENCE;
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("reloaded") {
        ensure!(Instant::now() < deadline, "att-tokend did not log a reload after SIGHUP: {}", daemon.stderr_tail());
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = att_token(&address, Some(READER)).args(["get", "main"]).output()?;
    ensure!(after.status.success(), "after SIGHUP the session is gone: {}", text(&after.stderr));
    println!("install-test: SIGHUP reloads the configuration; the session survives");

    // The same raw call as a reader and as an outsider, with the daemon's reads traced: the
    // reader's call must show up in what the daemon reads, the outsider's must not, and the bus
    // itself must refuse it. A second reader call afterwards bounds the wait: the bus delivers to
    // the daemon in order, so once it is read, anything the bus had passed on before would be too.
    let first = dbus_send(&address, READER, "reader-probe-1")?;
    ensure!(
        text(&first.stderr).contains("io.allthingstalk.TokenAgent1.Error.UnknownToken"),
        "{READER}'s call did not reach the daemon (expected UnknownToken from it): {}",
        text(&first.stderr)
    );
    trace.wait_for("reader-probe-1")?;
    let log_before = log_lines(&log);
    let refused = dbus_send(&address, OUTSIDER, "outsider-probe")?;
    crate::util::refused_by_bus_policy(&refused, OUTSIDER)?;
    let client = att_token(&address, Some(OUTSIDER)).args(["get", "sensor-7"]).output()?;
    ensure!(!client.status.success(), "att-token get as {OUTSIDER} succeeded");
    dbus_send(&address, READER, "reader-probe-2")?;
    trace.wait_for("reader-probe-2")?;
    ensure!(!trace.contains("outsider-probe")?, "the daemon read {OUTSIDER}'s call although the bus refused it");
    ensure!(
        log_lines(&log) == log_before,
        "the daemon logged something while the bus refused {OUTSIDER}: {}",
        daemon.stderr_tail()
    );
    println!(
        "install-test: {OUTSIDER} is refused by the bus itself (AccessDenied, \"Rejected send message\"); the daemon \
         neither read the call nor logged anything (its reads were traced; {READER}'s calls before and after show up)"
    );

    run_command(Command::new("kill").args(["-TERM", &pid.to_string()]))?;
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = daemon.try_status() {
            break status;
        }
        ensure!(
            Instant::now() < deadline,
            "att-tokend did not stop within {PATIENCE:?} of SIGTERM: {}",
            daemon.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(status.success(), "att-tokend did not stop cleanly on SIGTERM ({status}): {}", daemon.stderr_tail());
    check_sandbox(&trace.file)?;
    Ok(())
}

/// Nothing of the package is left after the purge, except what Debian keeps: the system user and group.
fn check_purged(files: &[PathBuf]) -> anyhow::Result<()> {
    let left: Vec<_> = files.iter().filter(|path| path.exists()).collect();
    ensure!(left.is_empty(), "files left after dpkg --purge: {left:?}");
    for path in [
        "/etc/att-tokend",
        "/var/lib/att-tokend",
        "/usr/share/doc/att-tokend",
        "/etc/systemd/system/multi-user.target.wants/att-tokend.service",
        "/var/lib/systemd/deb-systemd-helper-enabled/att-tokend.service.dsh-also",
        "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/att-tokend.service",
        "/var/lib/systemd/deb-systemd-helper-masked/att-tokend.service",
    ] {
        ensure!(!Path::new(path).exists(), "{path} is left after dpkg --purge");
    }
    let status = package_status("att-tokend");
    ensure!(
        !status.contains(" installed") && !status.contains("config-files"),
        "dpkg still knows att-tokend: {status}"
    );
    let kept: Vec<_> =
        [("user", "att-tokend", user_exists("att-tokend")), ("group", "att-tokens", group_exists("att-tokens"))]
            .into_iter()
            .filter(|(_, _, exists)| *exists)
            .map(|(kind, name, _)| format!("{kind} {name}"))
            .collect();
    println!("install-test: purged; nothing left but {} (system accounts stay, as Debian does)", kept.join(" and "));
    Ok(())
}

fn create_user(name: &str, group: Option<&str>) -> anyhow::Result<()> {
    if user_exists(name) {
        run_command(Command::new("userdel").arg(name))?;
    }
    let mut command = Command::new("useradd");
    command.args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]);
    if let Some(group) = group {
        command.args(["--groups", group]);
    }
    run_command(command.arg(name))
}

/// `program` run as `user` with that user's groups.
fn as_user(user: &str, program: &str) -> Command {
    let args = testbed::setpriv_args(user, user, testbed::Groups::Theirs);
    let mut command = Command::new(&args[0]);
    command.args(&args[1..]).arg(program);
    command
}

fn att_token(address: &str, user: Option<&str>) -> Command {
    let mut command = match user {
        Some(user) => as_user(user, "/usr/bin/att-token"),
        None => Command::new("/usr/bin/att-token"),
    };
    command.arg("--bus").arg(address).stdin(Stdio::null());
    command
}

/// `dbus-send --print-reply` as `user`: GetToken(`name`) on the daemon.
fn dbus_send(address: &str, user: &str, name: &str) -> anyhow::Result<Output> {
    Ok(as_user(user, "dbus-send")
        .arg(format!("--bus={address}"))
        .args(["--print-reply", &format!("--dest={BUS_NAME}"), "/io/allthingstalk/TokenAgent1"])
        .arg(format!("{BUS_NAME}.GetToken"))
        .arg(format!("string:{name}"))
        .stdin(Stdio::null())
        .output()?)
}

/// The strace output of the daemon's run.
struct Trace {
    file: PathBuf,
}

impl Trace {
    fn contains(&self, needle: &str) -> anyhow::Result<bool> {
        let bytes = std::fs::read(&self.file).unwrap_or_default();
        Ok(String::from_utf8_lossy(&bytes).contains(needle))
    }

    fn wait_for(&self, needle: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        while !self.contains(needle)? {
            ensure!(Instant::now() < deadline, "the daemon's traced reads never showed {needle:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

/// The process strace started (setpriv, which became att-tokend).
fn traced_child(strace: u32) -> anyhow::Result<u32> {
    let children = std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children"))
        .context("cannot read the children of strace")?;
    children.split_whitespace().next().and_then(|pid| pid.parse().ok()).context("strace has no child process")
}

/// Checks what the daemon did, as strace saw it after `execve("/usr/bin/att-tokend")`, against the
/// shipped unit: every system call allowed by its SystemCallFilter=, sockets only of the families
/// in RestrictAddressFamilies=, no mapping both writable and executable (MemoryDenyWriteExecute=),
/// and file accesses the file-system sandbox allows ([`path_misfits`]).
fn check_sandbox(trace: &Path) -> anyhow::Result<()> {
    let unit = std::fs::read_to_string("/lib/systemd/system/att-tokend.service")?;
    let text = String::from_utf8_lossy(&std::fs::read(trace)?).into_owned();
    let used = sandbox_misfits(&unit, &text)?;
    println!(
        "install-test: the daemon's {used} distinct system calls, its sockets, mappings and file accesses all fit the unit's sandbox"
    );
    Ok(())
}

/// The checks of [`check_sandbox`] on the text of a unit and of a trace; returns how many distinct
/// system calls the daemon made.
fn sandbox_misfits(unit: &str, text: &str) -> anyhow::Result<usize> {
    let (allowed, denied) = syscall_filter(unit)?;
    let families: Vec<&str> = unit
        .lines()
        .filter_map(|line| line.strip_prefix("RestrictAddressFamilies="))
        .flat_map(str::split_whitespace)
        .collect();
    ensure!(unit.contains("\nMemoryDenyWriteExecute=yes\n"), "the unit lost MemoryDenyWriteExecute=yes");
    let start = text
        .lines()
        .position(|line| line.contains("execve(\"/usr/bin/att-tokend\""))
        .context("the trace has no execve of /usr/bin/att-tokend")?;
    // The daemon's own process and thread ids: it may look at those in /proc.
    let pids: std::collections::BTreeSet<&str> =
        text.lines().skip(start).filter_map(|line| line.split_whitespace().next()).collect();
    let mut used = std::collections::BTreeSet::new();
    let mut problems = Vec::new();
    for line in text.lines().skip(start + 1) {
        let Some((_, call)) = line.split_once(' ') else { continue };
        let call = call.trim_start().strip_prefix("<... ").unwrap_or(call.trim_start());
        let name: String = call.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if name.is_empty() {
            continue; // signals, exits
        }
        if let Some(rest) = call.strip_prefix("socket(") {
            let family = rest.split([',', ' ']).next().unwrap_or_default();
            if !families.contains(&family) {
                problems.push(format!("a socket of family {family}, outside RestrictAddressFamilies="));
            }
        }
        if (name == "mmap" || name == "mprotect") && call.contains("PROT_WRITE|PROT_EXEC") {
            problems.push(format!("a writable and executable mapping, which MemoryDenyWriteExecute= forbids: {call}"));
        }
        if !call.contains(" = -1 ") && !call.contains("<unfinished") {
            problems.extend(path_misfits(&name, call, &pids));
        }
        used.insert(name);
    }
    for name in &used {
        if !allowed.contains(name) || denied.contains(name) {
            problems.push(format!("system call {name}, which SystemCallFilter= does not allow"));
        }
    }
    problems.dedup();
    ensure!(problems.is_empty(), "under the shipped unit att-tokend would be refused:\n  {}", problems.join("\n  "));
    Ok(used.len())
}

/// What the unit's file-system sandbox would refuse in one successful call (as `strace -y` shows it):
/// home directories (ProtectHome=), other processes and kernel files in /proc (ProtectProc=invisible,
/// ProcSubset=pid), and writing anywhere but the state and runtime directories, /tmp and /dev
/// (ProtectSystem=strict, StateDirectory=, RuntimeDirectory=, PrivateTmp=).
fn path_misfits(name: &str, call: &str, pids: &std::collections::BTreeSet<&str>) -> Vec<String> {
    let writes_always = ["mkdir", "mkdirat", "unlink", "unlinkat", "rename", "renameat", "renameat2", "rmdir", "creat"];
    let opens = ["open", "openat", "openat2"];
    if !opens.contains(&name) && !writes_always.contains(&name) {
        return Vec::new();
    }
    let write = writes_always.contains(&name)
        || ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"].iter().any(|flag| call.contains(flag));
    let mut problems = Vec::new();
    for path in call_paths(call) {
        let under = |dir: &str| path == dir.trim_end_matches('/') || path.starts_with(dir);
        if under("/home/") || under("/root/") || under("/run/user/") {
            problems.push(format!("{path}: a home directory, hidden by ProtectHome="));
        }
        if let Some(rest) = path.strip_prefix("/proc/") {
            let first = rest.split('/').next().unwrap_or_default();
            if !(first == "self" || first == "thread-self" || pids.contains(first)) {
                problems.push(format!("{path}: hidden by ProcSubset=pid / ProtectProc=invisible"));
            }
        }
        if write
            && !(under("/var/lib/att-tokend/")
                || under("/run/att-tokend/")
                || under("/tmp/")
                || under("/var/tmp/")
                || under("/dev/"))
        {
            problems.push(format!("{path}: written, but read-only under ProtectSystem=strict"));
        }
    }
    problems
}

/// The absolute paths a call names: its quoted arguments, joined to the directory of the
/// descriptor before them when `strace -y` shows one (`5</var/lib/att-tokend>, "x.tmp"`).
fn call_paths(call: &str) -> Vec<String> {
    let Some((_, args)) = call.split_once('(') else { return Vec::new() };
    let args = args.rsplit_once(") = ").map_or(args, |(args, _)| args);
    let mut paths = Vec::new();
    let mut dir: Option<&str> = None;
    let mut rest = args;
    while let Some(at) = rest.find(['"', '<']) {
        let quote = rest.as_bytes()[at];
        let tail = &rest[at + 1..];
        let close = if quote == b'"' { '"' } else { '>' };
        let Some(end) = tail.find(close) else { break };
        let value = &tail[..end];
        if quote == b'<' {
            dir = Some(value);
        } else if value.starts_with('/') {
            paths.push(value.to_owned());
        } else if let Some(dir) = dir.filter(|dir| dir.starts_with('/')) {
            paths.push(format!("{}/{value}", dir.trim_end_matches('/')));
        }
        rest = &tail[end + 1..];
    }
    paths
}

/// The system calls the unit's `SystemCallFilter=` lines allow and deny, groups expanded.
fn syscall_filter(
    unit: &str,
) -> anyhow::Result<(std::collections::BTreeSet<String>, std::collections::BTreeSet<String>)> {
    let mut allowed = std::collections::BTreeSet::new();
    let mut denied = std::collections::BTreeSet::new();
    for value in unit.lines().filter_map(|line| line.strip_prefix("SystemCallFilter=")) {
        let (set, value) = match value.strip_prefix('~') {
            Some(rest) => (&mut denied, rest),
            None => (&mut allowed, value),
        };
        for item in value.split_whitespace() {
            expand(item, set)?;
        }
    }
    ensure!(!allowed.is_empty(), "the unit has no SystemCallFilter= allow list");
    Ok((allowed, denied))
}

/// Adds a system call, or every call of an `@group` (as `systemd-analyze syscall-filter` lists it), to `set`.
fn expand(item: &str, set: &mut std::collections::BTreeSet<String>) -> anyhow::Result<()> {
    if !item.starts_with('@') {
        set.insert(item.to_owned());
        return Ok(());
    }
    let listing = sys::capture(Command::new("systemd-analyze").args(["syscall-filter", item]))?;
    for line in listing.lines().skip(1).map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        expand(line, set)?;
    }
    Ok(())
}

fn log_lines(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |text| text.lines().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = include_str!("../../daemon/data/att-tokend.service");

    fn trace(after_exec: &str) -> String {
        format!(
            "100 setresuid(994, 994, 994) = 0\n\
             100 execve(\"/usr/bin/att-tokend\", [\"/usr/bin/att-tokend\"], 0x7ffd /* 9 vars */) = 0\n\
             100 brk(NULL) = 0x5581\n\
             100 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f00\n\
             101 epoll_wait(3, <unfinished ...>\n\
             100 socket(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC, 0) = 4\n\
             101 <... epoll_wait resumed>[], 1024, -1) = 1\n\
             100 --- SIGTERM {{si_signo=SIGTERM}} ---\n\
             {after_exec}\
             100 +++ exited with 0 +++\n"
        )
    }

    #[test]
    fn a_trace_within_the_sandbox_passes_and_setpriv_before_exec_does_not_count() {
        assert_eq!(
            sandbox_misfits(UNIT, &trace("")).unwrap(),
            4,
            "brk, mmap, epoll_wait and socket; nothing before execve"
        );
    }

    #[test]
    fn state_files_proc_self_and_reads_of_etc_fit() {
        let fine = "100 openat(AT_FDCWD</>, \"/etc/att-tokend/config.toml\", O_RDONLY|O_CLOEXEC) = 7</etc/att-tokend/config.toml>\n\
                    101 openat(AT_FDCWD</>, \"/proc/self/cgroup\", O_RDONLY) = 8\n\
                    101 openat(AT_FDCWD</>, \"/proc/101/stat\", O_RDONLY) = 8\n\
                    100 openat(5</var/lib/att-tokend>, \"main.json.tmp\", O_WRONLY|O_CREAT|O_TRUNC, 0600) = 9\n\
                    100 renameat(5</var/lib/att-tokend>, \"main.json.tmp\", 5</var/lib/att-tokend>, \"main.json\") = 0\n\
                    100 openat(AT_FDCWD</>, \"/etc/shadow\", O_RDONLY) = -1 EACCES (Permission denied)\n";
        if let Err(error) = sandbox_misfits(UNIT, &trace(fine)) {
            panic!("{error:#}");
        }
        assert_eq!(
            call_paths("renameat(5</var/lib/att-tokend>, \"a.tmp\", 5</var/lib/att-tokend>, \"a\") = 0"),
            ["/var/lib/att-tokend/a.tmp", "/var/lib/att-tokend/a"]
        );
    }

    #[test]
    fn calls_outside_the_sandbox_are_named() {
        for (line, expected) in [
            ("100 setuid(0) = -1 EPERM\n", "system call setuid"),
            ("100 setrlimit(RLIMIT_NOFILE, {rlim_cur=1024}) = 0\n", "system call setrlimit"),
            ("100 socket(AF_NETLINK, SOCK_RAW, 0) = 5\n", "family AF_NETLINK"),
            ("100 mprotect(0x7f00, 4096, PROT_READ|PROT_WRITE|PROT_EXEC) = 0\n", "writable and executable"),
            (
                "100 openat(AT_FDCWD</>, \"/etc/att-tokend/x.tmp\", O_WRONLY|O_CREAT, 0600) = 7</etc/att-tokend/x.tmp>\n",
                "ProtectSystem=strict",
            ),
            ("100 openat(AT_FDCWD</>, \"/root/secret\", O_RDONLY) = 7</root/secret>\n", "ProtectHome="),
            ("100 openat(AT_FDCWD</>, \"/proc/4242/status\", O_RDONLY) = 7</proc/4242/status>\n", "ProcSubset=pid"),
            ("100 renameat2(5</etc>, \"a\", 5</etc>, \"b\", 0) = 0\n", "/etc/b: written"),
        ] {
            let error = sandbox_misfits(UNIT, &trace(line)).unwrap_err();
            assert!(format!("{error:#}").contains(expected), "{line}: {error:#}");
        }
    }
}
