//! The files in `daemon/data/` that ship in the package, checked by the real tools that read them:
//! `systemd-analyze` (verify, security), `systemd-sysusers`, `dbus-daemon`, `sh`, the daemon's config
//! parser, and the man page and completion generator.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use testbed::workspace_root;

/// Highest `systemd-analyze security` exposure the unit may have (0 = locked down, 10 = exposed).
const MAX_EXPOSURE: f64 = 2.0;

fn data(name: &str) -> PathBuf {
    workspace_root().join("daemon/data").join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn output(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().unwrap_or_else(|error| {
        panic!("could not start {command:?}: {error}; install it (apt-get install systemd dbus-daemon)")
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A copy of the shipped unit whose `ExecStart=` and `ExecReload=` name an executable that exists (verify checks it),
/// in a fresh directory, under the shipped file name.
fn unit_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let stub = dir.path().join("att-tokend");
    std::fs::write(&stub, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let unit = read(&data("att-tokend.service"));
    assert!(
        unit.contains("ExecStart=/usr/bin/att-tokend "),
        "the unit must start /usr/bin/att-tokend, where the package installs it"
    );
    let unit = unit
        .replace("ExecStart=/usr/bin/att-tokend ", &format!("ExecStart={} ", stub.display()))
        .replace("ExecReload=/usr/bin/att-tokend ", &format!("ExecReload={} ", stub.display()));
    let path = dir.path().join("att-tokend.service");
    std::fs::write(&path, unit).unwrap();
    (dir, path)
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let (_dir, unit) = unit_copy();
    // The man pages named in Documentation= exist only once the package is installed;
    // `cargo xtask install-test` runs verify with them.
    let out = output(Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&unit));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify is not clean:\n{said}");
}

/// The `VAR=value` lines of the environment file the proxy's unit documents for a unix socket (for the instance
/// `main`), as its comments show them.
fn unix_socket_env_in_the_proxy_unit(unit: &str) -> Vec<String> {
    let env: Vec<String> = unit
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(str::trim)
        .filter(|line| line.starts_with("ATT_TOKEN_PROXY_"))
        .map(str::to_owned)
        .collect();
    let unix: Vec<String> = env.into_iter().filter(|line| !line.starts_with("ATT_TOKEN_PROXY_LISTEN=127.")).collect();
    assert!(
        unix.iter().any(|line| line.starts_with("ATT_TOKEN_PROXY_LISTEN=unix:")),
        "the proxy's unit documents how to listen on a unix socket: {unix:?}"
    );
    unix
}

/// A copy of the proxy's unit template as the instance `main`, with `ExecStart=` naming an executable that exists
/// and the environment file it reads: the one its comments show for a unix socket.
fn proxy_unit_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let stub = dir.path().join("att-token");
    std::fs::write(&stub, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = dir.path().join("main.env");
    let unix = unix_socket_env_in_the_proxy_unit(&read(&data("att-token-proxy@.service")));
    std::fs::write(&env, unix.join("\n") + "\n").unwrap();
    let unit = read(&data("att-token-proxy@.service"));
    for line in ["ExecStart=/usr/bin/att-token --bus system proxy %i", "EnvironmentFile=/etc/att-tokend/proxy/%i.env"] {
        assert!(unit.contains(line), "the proxy's unit must keep {line:?}");
    }
    let unit = unit
        .replace("ExecStart=/usr/bin/att-token ", &format!("ExecStart={} ", stub.display()))
        .replace("EnvironmentFile=/etc/att-tokend/proxy/%i.env", &format!("EnvironmentFile={}", env.display()));
    let path = dir.path().join("att-token-proxy@main.service");
    std::fs::write(&path, unit).unwrap();
    (dir, path)
}

#[test]
fn the_proxy_unit_template_passes_verify_and_is_hardened() {
    let (_dir, unit) = proxy_unit_copy();
    let out = output(Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&unit));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify is not clean:\n{said}");
    let out = output(Command::new("systemd-analyze").args(["security", "--offline=true", "--no-pager"]).arg(&unit));
    let report = text(&out.stdout);
    let exposure: f64 = report
        .lines()
        .find(|line| line.contains("Overall exposure level"))
        .and_then(|line| line.rsplit_once(": "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|figure| figure.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level:\n{report}{}", text(&out.stderr)));
    println!("att-token-proxy@.service: systemd-analyze security exposure {exposure:.1} (at most {MAX_EXPOSURE})");
    assert!(exposure <= MAX_EXPOSURE, "exposure {exposure} is above {MAX_EXPOSURE}:\n{report}");
    let shipped = read(&data("att-token-proxy@.service"));
    let dist = read(&workspace_root().join("xtask/src/dist.rs"));
    assert!(dist.contains("\"att-token-proxy@.service\""), "the package installs the template");
    for setting in [
        "User=att-token-proxy",
        "SupplementaryGroups=att-tokens",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "LimitCORE=0\n",
        "MemorySwapMax=0\n",
    ] {
        assert!(shipped.contains(setting), "the proxy's unit lost {setting:?}");
    }
}

/// The overall exposure `systemd-analyze security --offline` gives `unit`.
fn exposure_of(unit: &Path) -> f64 {
    let out = output(Command::new("systemd-analyze").args(["security", "--offline=true", "--no-pager"]).arg(unit));
    let report = text(&out.stdout);
    report
        .lines()
        .find(|line| line.contains("Overall exposure level"))
        .and_then(|line| line.rsplit_once(": "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|figure| figure.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level:\n{report}{}", text(&out.stderr)))
}

#[test]
fn the_metrics_timer_and_service_pass_verify_are_hardened_and_ship_disabled() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let stub = dir.path().join("att-token");
    std::fs::write(&stub, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let service = read(&data("att-token-metrics.service"));
    let exec = "ExecStart=/usr/bin/att-token --bus system metrics --textfile /var/lib/prometheus/node-exporter\n";
    assert!(service.contains(exec), "the service writes node_exporter's textfile directory");
    assert!(service.contains("ReadWritePaths=/var/lib/prometheus/node-exporter\n"), "and may write there only");
    let unit = dir.path().join("att-token-metrics.service");
    std::fs::write(&unit, service.replace("ExecStart=/usr/bin/att-token ", &format!("ExecStart={} ", stub.display())))
        .unwrap();
    let timer = dir.path().join("att-token-metrics.timer");
    std::fs::copy(data("att-token-metrics.timer"), &timer).unwrap();
    let out = output(Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&unit).arg(&timer));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify is not clean:\n{said}");
    let exposure = exposure_of(&unit);
    println!("att-token-metrics.service: systemd-analyze security exposure {exposure:.1} (at most {MAX_EXPOSURE})");
    assert!(exposure <= MAX_EXPOSURE, "exposure {exposure} is above {MAX_EXPOSURE}");
    let dist = read(&workspace_root().join("xtask/src/dist.rs"));
    for file in ["\"att-token-metrics.service\"", "\"att-token-metrics.timer\""] {
        assert!(dist.contains(file), "the package installs {file}");
    }
    let postinst = read(&data("debian/postinst"));
    assert!(!postinst.contains("att-token-metrics"), "the timer is off until an administrator enables it");
}

#[test]
fn the_proxy_unit_gives_a_unix_socket_a_directory_its_group_can_reach() {
    let unit = read(&data("att-token-proxy@.service"));
    let setting = |name: &str| -> String {
        let values: Vec<&str> = unit.lines().filter_map(|line| line.strip_prefix(name)).collect();
        assert_eq!(values.len(), 1, "the proxy's unit sets {name} once: {values:?}");
        values[0].to_owned()
    };
    // /run is read-only under ProtectSystem=strict: the socket needs a runtime directory of its own.
    let runtime = setting("RuntimeDirectory=");
    assert_eq!(runtime, "att-token-proxy/%i", "one directory per instance");
    let mode = u32::from_str_radix(&setting("RuntimeDirectoryMode="), 8).expect("an octal mode");
    assert_eq!(mode, 0o750, "the proxy's user and group may enter it, nobody else");
    assert_eq!(setting("Group="), "att-token-proxy", "the group that owns the directory and the socket");

    let env = unix_socket_env_in_the_proxy_unit(&unit);
    let value = |name: &str| env.iter().find_map(|line| line.strip_prefix(name)).map(str::to_owned);
    let listen = value("ATT_TOKEN_PROXY_LISTEN=unix:").expect("a unix listen address");
    let socket = Path::new(&listen);
    let directory = Path::new("/run").join(runtime.replace("%i", "main"));
    assert_eq!(socket.parent(), Some(directory.as_path()), "the documented socket lies in the runtime directory");
    let socket_mode = value("ATT_TOKEN_PROXY_SOCKET_MODE=").expect("the socket's mode");
    assert_eq!(socket_mode, "660", "the group att-token-proxy may connect");
    let readme = read(&workspace_root().join("README.md"));
    for line in &env {
        assert!(readme.contains(line.as_str()), "README shows the unit's {line:?}");
    }
}

#[test]
fn the_unit_exposure_is_at_most_two() {
    let (_dir, unit) = unit_copy();
    let out = output(Command::new("systemd-analyze").args(["security", "--offline=true", "--no-pager"]).arg(&unit));
    let report = text(&out.stdout);
    let line = report
        .lines()
        .find(|line| line.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("systemd-analyze security printed no overall level:\n{report}{}", text(&out.stderr)));
    let exposure: f64 = line
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|figure| figure.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure figure in {line:?}"));
    println!("att-tokend.service: systemd-analyze security exposure {exposure:.1} (at most {MAX_EXPOSURE})");
    assert!(exposure <= MAX_EXPOSURE, "exposure {exposure} is above {MAX_EXPOSURE}; the failing checks:\n{report}");
    // What the brief asks for by name, so that a later edit cannot drop it for another.
    let unit = read(&data("att-tokend.service"));
    for setting in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "User=att-tokend",
        "StateDirectory=att-tokend",
        "StateDirectoryMode=0700",
        "RuntimeDirectory=att-tokend",
        "RuntimeDirectoryMode=0711",
        "RuntimeDirectoryPreserve=restart",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "UMask=0077",
        "After=network-online.target",
        "Wants=network-online.target",
        "After=time-set.target",
        "MemoryMax=",
        "TasksMax=",
        "LimitNOFILE=",
        "LimitCORE=0\n",
        "MemorySwapMax=0\n",
    ] {
        assert!(unit.contains(setting), "the unit lost {setting:?}");
    }
}

#[test]
fn sysusers_creates_the_service_user_and_the_readers_group() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let out = output(
        Command::new("systemd-sysusers")
            .arg(format!("--root={}", root.path().display()))
            .arg(data("att-tokend.sysusers")),
    );
    assert!(out.status.success(), "systemd-sysusers failed: {}", text(&out.stderr));
    let passwd = read(&root.path().join("etc/passwd"));
    let group = read(&root.path().join("etc/group"));
    let user: Vec<&str> =
        passwd.lines().find(|line| line.starts_with("att-tokend:")).expect("a user att-tokend").split(':').collect();
    assert_eq!(user[5], "/var/lib/att-tokend", "home is the state directory");
    assert!(user[6].ends_with("nologin"), "the service user cannot log in: {user:?}");
    assert!(user[2].parse::<u32>().unwrap() < 1000, "a system uid: {user:?}");
    assert!(group.lines().any(|line| line.starts_with("att-tokens:")), "a group att-tokens:\n{group}");
    assert!(group.lines().any(|line| line.starts_with("att-tokend:")), "the user's own group:\n{group}");
    // att-token-proxy@.service runs as a user in the user database, in att-tokens: the system bus reads a
    // caller's groups from there (a DynamicUser= is unknown to it without nss-systemd, and is disconnected).
    let proxy: Vec<&str> = passwd
        .lines()
        .find(|line| line.starts_with("att-token-proxy:"))
        .expect("a user att-token-proxy")
        .split(':')
        .collect();
    assert!(proxy[6].ends_with("nologin"), "the proxy's user cannot log in: {proxy:?}");
    assert!(proxy[2].parse::<u32>().unwrap() < 1000, "a system uid: {proxy:?}");
    let readers = group.lines().find(|line| line.starts_with("att-tokens:")).unwrap();
    assert!(
        readers.rsplit(':').next().unwrap().split(',').any(|member| member == "att-token-proxy"),
        "att-token-proxy is a member of att-tokens: {readers}"
    );
}

/// A `dbus-daemon` with the system bus's default policy, the shipped policy and the activation file, stopped on
/// drop.
struct PolicyBus {
    bus: testbed::Bus,
    _scratch: testbed::Scratch,
}

impl PolicyBus {
    fn start() -> PolicyBus {
        let scratch = testbed::Scratch::new("packaging-bus").unwrap();
        let services = scratch.join("services");
        std::fs::create_dir(&services).unwrap();
        std::fs::copy(
            data("io.allthingstalk.TokenAgent1.service"),
            services.join("io.allthingstalk.TokenAgent1.service"),
        )
        .unwrap();
        let extra = format!(
            "  <servicedir>{}</servicedir>\n  <include>{}</include>",
            services.display(),
            data("io.allthingstalk.TokenAgent1.conf").display()
        );
        let bus = testbed::Bus::start_like_system(&scratch, &extra)
            .unwrap_or_else(|e| panic!("dbus-daemon refused the shipped policy or activation file: {e:#}"));
        PolicyBus { bus, _scratch: scratch }
    }

    fn call(&self, args: &[&str]) -> Output {
        output(
            Command::new("busctl")
                .arg(format!("--address={}", self.bus.address))
                .args(["call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus"])
                .args(args),
        )
    }
}

#[test]
fn dbus_daemon_loads_the_policy_and_lists_the_activatable_name() {
    let bus = PolicyBus::start();
    let names = bus.call(&["ListActivatableNames"]);
    assert!(names.status.success(), "ListActivatableNames failed: {}", text(&names.stderr));
    assert!(
        text(&names.stdout).contains("\"io.allthingstalk.TokenAgent1\""),
        "the activation file was not taken: {}",
        text(&names.stdout)
    );

    // Only root and att-tokend may own the name; this process is one or the other kind of caller.
    let uid = nix::unistd::getuid();
    // dbus-send prints the error's name and message, which tell the bus policy's refusal apart.
    let own = output(
        Command::new("dbus-send")
            .arg(format!("--bus={}", bus.bus.address))
            .args(["--print-reply", "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus"])
            .args(["org.freedesktop.DBus.RequestName", "string:io.allthingstalk.TokenAgent1", "uint32:0"]),
    );
    let is_service_user = nix::unistd::User::from_uid(uid).ok().flatten().is_some_and(|user| user.name == "att-tokend");
    if uid.is_root() || is_service_user {
        assert!(own.status.success(), "uid {uid} may own the name but was refused: {}", text(&own.stderr));
        assert!(
            text(&own.stdout).trim().ends_with("uint32 1"),
            "RequestName did not make it the primary owner: {}",
            text(&own.stdout)
        );
    } else {
        assert!(!own.status.success(), "uid {uid} owned io.allthingstalk.TokenAgent1 against the policy");
        let said = text(&own.stderr);
        assert!(
            said.contains("org.freedesktop.DBus.Error.AccessDenied") && said.contains("not allowed to own"),
            "refused for another reason: {said}"
        );
    }
}

#[test]
fn the_policy_denies_by_default_and_lets_root_and_att_tokens_in() {
    let policy = read(&data("io.allthingstalk.TokenAgent1.conf"));
    let context = |opening: &str| -> String {
        let start = policy.find(opening).unwrap_or_else(|| panic!("the policy has no {opening}"));
        let end = policy[start..].find("</policy>").unwrap() + start;
        policy[start..end].to_owned()
    };
    let default = context("<policy context=\"default\">");
    for rule in
        ["<deny own=\"io.allthingstalk.TokenAgent1\"/>", "<deny send_destination=\"io.allthingstalk.TokenAgent1\"/>"]
    {
        assert!(default.contains(rule), "the default context lacks {rule}");
    }
    assert!(!default.contains("<allow"), "the default context allows something:\n{default}");
    for opening in ["<policy user=\"root\">", "<policy group=\"att-tokens\">", "<policy user=\"att-tokend\">"] {
        assert!(context(opening).contains("<allow send_destination=\"io.allthingstalk.TokenAgent1\"/>"), "{opening}");
    }
    assert!(!context("<policy group=\"att-tokens\">").contains("own="), "readers must not own the name");
    let activation = read(&data("io.allthingstalk.TokenAgent1.service"));
    for line in ["Exec=/bin/false", "User=att-tokend", "SystemdService=att-tokend.service"] {
        assert!(activation.lines().any(|l| l == line), "the activation file lacks {line}");
    }
}

#[test]
fn maintainer_scripts_are_valid_posix_shell() {
    for script in ["postinst", "prerm", "postrm"] {
        let path = data("debian").join(script);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{script} is not executable");
        let out = output(Command::new("sh").arg("-n").arg(&path));
        assert!(out.status.success(), "{script} is not valid sh: {}", text(&out.stderr));
        let body = read(&path);
        assert!(body.starts_with("#!/bin/sh\n") && body.contains("\nset -e\n"), "{script}: #!/bin/sh and set -e");
    }
    let postrm = read(&data("debian/postrm"));
    assert!(postrm.contains("rm -rf /var/lib/att-tokend"), "purge removes the state directory");
}

/// The paths README says `apt purge` deletes, from its line "`apt purge att-tokend` deletes `...` and `...`".
fn purged_paths_in_readme() -> Vec<String> {
    let readme = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"));
    let line = readme
        .lines()
        .find(|line| line.contains("`apt purge att-tokend` deletes"))
        .expect("README says what `apt purge att-tokend` deletes");
    let after = line.split_once("deletes").map_or("", |(_, rest)| rest);
    let paths: Vec<String> =
        after.split('`').skip(1).step_by(2).filter(|p| p.starts_with('/')).map(str::to_owned).collect();
    assert!(!paths.is_empty(), "README's purge line names no path: {line}");
    paths
}

#[test]
fn purge_removes_every_path_readme_says_it_removes() {
    let postrm = read(&data("debian/postrm"));
    // The commands run on purge: the body of `if [ "$1" = purge ]; then ... fi`.
    let purge = postrm
        .split_once("if [ \"$1\" = purge ]; then")
        .and_then(|(_, rest)| rest.split("\nfi\n").next())
        .expect("postrm has a purge branch");
    let paths = purged_paths_in_readme();
    for path in &paths {
        assert!(
            purge.lines().any(|line| line.trim() == format!("rm -rf {path}")),
            "README says purge deletes {path}, but postrm's purge branch does not remove it:\n{purge}"
        );
    }
    // Everything of ours that may hold a secret is among them.
    for secret in ["/etc/att-tokend", "/var/lib/att-tokend"] {
        assert!(paths.iter().any(|p| p == secret), "README's purge line does not list {secret}: {paths:?}");
    }
}

#[test]
fn the_conffile_parses_and_shows_the_real_defaults() {
    let path = Path::new("/etc/att-tokend/config.toml");
    let shipped = read(&data("config.toml"));
    let defaults = att_tokend::config::parse("", path).expect("an empty config is valid");
    let parsed = att_tokend::config::parse(&shipped, path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(parsed, defaults, "the shipped config sets something; it only documents the defaults");

    // Uncomment every documented setting above the token examples: the values shown must be the
    // daemon's defaults, so the result is still the default configuration.
    let settings = shipped.split("\n# Tokens:").next().unwrap();
    let uncommented: String = settings
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("# ")?;
            let is_header = rest.starts_with('[') && rest.ends_with(']');
            let is_setting = rest
                .split_once(" = ")
                .is_some_and(|(key, _)| !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            (is_header || is_setting).then_some(rest)
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(uncommented.lines().count() >= 20, "the defaults are documented:\n{uncommented}");
    let mut documented = att_tokend::config::parse(&uncommented, path)
        .unwrap_or_else(|error| panic!("the documented defaults do not parse: {error}\n{uncommented}"));
    // Where admins were written is kept for messages; only the value matters here.
    documented.daemon.admins.line = 0;
    // state_key_file has no default (the key comes as a credential); the example names a file.
    assert!(documented.daemon.state_key_file.is_some(), "state_key_file is documented with an example");
    documented.daemon.state_key_file = None;
    assert_eq!(documented, defaults, "a documented default differs from the daemon's:\n{uncommented}");
}

#[test]
fn gen_assets_writes_man_pages_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = testbed::cargo();
    let out = output(command.args(["run", "--quiet", "-p", "gen-assets", "--"]).arg(dir.path()));
    assert!(out.status.success(), "gen-assets failed: {}", text(&out.stderr));
    let pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".1") || name.ends_with(".8"))
        .collect();
    for name in ["att-tokend.8", "att-token.1", "att-token-get.1", "att-token-login.1"] {
        assert!(pages.iter().any(|page| page == name), "no {name} among {pages:?}");
    }
    for name in &pages {
        let page = dir.path().join(name);
        let roff = read(&page);
        assert!(roff.contains(".SH NAME") && roff.contains(".SH SYNOPSIS"), "{name} lacks NAME or SYNOPSIS");
        // groff reports what man would render wrongly.
        let check = output(Command::new("groff").args(["-man", "-ww", "-z", "-Tutf8"]).arg(&page));
        assert!(check.status.success() && check.stderr.is_empty(), "groff warns about {name}: {}", text(&check.stderr));
    }
    let token_page = read(&dir.path().join("att-token.1"));
    for subcommand in ["for-device", "login", "watch", "exec", "proxy"] {
        // roff escapes hyphens.
        let escaped = format!("att\\-token\\-{}", subcommand.replace('-', "\\-"));
        assert!(token_page.contains(&escaped), "att-token(1) does not name {escaped}");
        // Every page the SUBCOMMANDS section names is generated.
        assert!(pages.contains(&format!("att-token-{subcommand}.1")), "no page for att-token {subcommand}");
    }
    assert!(token_page.contains(".SH \"EXIT STATUS\""), "att-token(1) lists its exit statuses");
    assert!(!pages.iter().any(|page| page.contains("-help.")), "no page for the help subcommand");
    for (file, marker) in [
        ("att-token.bash", "for-device"),
        ("_att-token", "for-device"),
        ("att-token.fish", "for-device"),
        ("att-tokend.bash", "check-config"),
        ("_att-tokend", "check-config"),
        ("att-tokend.fish", "check-config"),
    ] {
        assert!(read(&dir.path().join(file)).contains(marker), "{file} does not complete {marker}");
    }
}

#[test]
fn every_key_the_daemon_knows_is_documented_in_the_conffile() {
    let shipped = read(&data("config.toml"));
    let path = Path::new("/etc/att-tokend/config.toml");
    // The parser names the valid keys of a table when it meets an unknown one.
    for (section, header) in [
        ("", ""),
        ("api", "[api]\n"),
        ("api.mfa", "[api.mfa]\n"),
        ("daemon", "[daemon]\n"),
        ("refresh", "[refresh]\n"),
        ("maintenance", "[maintenance]\n"),
        ("token", "[[token]]\n"),
    ] {
        let error = att_tokend::config::parse(&format!("{header}not_a_key = 1\n"), path)
            .expect_err("an unknown key is refused")
            .to_string();
        let (_, keys) = error
            .split_once("valid keys are ")
            .unwrap_or_else(|| panic!("the message for an unknown key in [{section}] lists no valid keys: {error}"));
        for key in keys.split(", ").map(str::trim) {
            let table = if section.is_empty() { key.to_owned() } else { format!("{section}.{key}") };
            let documented = shipped.contains(&format!("# {key} = "))
                || shipped.contains(&format!("# [{table}]"))
                || shipped.contains(&format!("# [[{table}]]"));
            assert!(
                documented,
                "config.toml does not document {key:?} of [{section}]; add it, commented out, with its default"
            );
        }
    }
}

/// The unit's `LoadCredentialEncrypted=` of the state key: (credential name, path).
fn state_key_credential() -> (String, String) {
    let unit = read(&data("att-tokend.service"));
    let specs: Vec<&str> = unit.lines().filter_map(|l| l.strip_prefix("LoadCredentialEncrypted=")).collect();
    assert_eq!(specs.len(), 1, "the shipped unit loads exactly one credential, the state key: {specs:?}");
    let (name, path) = specs[0].split_once(':').expect("LoadCredentialEncrypted=NAME:PATH");
    (name.to_owned(), path.to_owned())
}

#[test]
fn the_unit_loads_the_state_key_that_postinst_creates_once() {
    let (name, path) = state_key_credential();
    assert_eq!(name, att_tokend::seal::CREDENTIAL_NAME, "the daemon reads the credential the unit loads");
    assert!(path.starts_with("/etc/credstore.encrypted/"), "{path}");

    // Run postinst's key step as written, with its directory moved into a scratch one and a stand-in for
    // systemd-creds that records its arguments and writes what it is given.
    let postinst = read(&data("debian/postinst"));
    let start = postinst.find(&format!("    state_key={path}\n")).expect("postinst sets state_key to the unit's path");
    let end = start + postinst[start..].find("\n    fi\n").expect("the step ends with its fi") + "\n    fi\n".len();
    let scratch = tempfile::tempdir().unwrap();
    let store = scratch.path().join("credstore.encrypted");
    let step = postinst[start..end].replace("/etc/credstore.encrypted", &store.display().to_string());
    let bin = scratch.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("systemd-creds");
    let args_log = scratch.path().join("args");
    // `has-tpm2` answers as $TPM2 says (0: a chip); `encrypt` records its arguments and writes what it is given.
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nif [ \"$1\" = has-tpm2 ]; then exit \"$TPM2\"; fi\necho \"$@\" > {}\ncat > \"$5\"\n",
            args_log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run_with = |tpm2: &str| {
        let path_var = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let out = output(Command::new("sh").args(["-e", "-c", &step]).env("PATH", path_var).env("TPM2", tpm2));
        assert!(out.status.success(), "postinst's key step failed: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let run = || run_with("1");
    let said = run();
    assert!(said.contains("host key only") && said.contains("not a copy of the whole storage"), "{said}");
    let key_file = store.join(Path::new(&path).file_name().unwrap());
    let key = std::fs::read(&key_file).expect("postinst created the key");
    assert_eq!(key.len(), att_tokend::seal::KEY_LEN, "32 random bytes");
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&store).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(read(&args_log).trim(), format!("encrypt --with-key=auto --name={name} - {}.new", key_file.display()));
    run();
    assert_eq!(std::fs::read(&key_file).unwrap(), key, "an existing key is never overwritten");
    // With a TPM2 chip, postinst says the key is bound to it.
    std::fs::remove_file(&key_file).unwrap();
    let said = run_with("0");
    assert!(said.contains("TPM2 chip: a copy of its storage cannot open the sessions"), "{said}");
}
