//! `cargo xtask bench`: figures for the daemon's cost on a gateway, printed as a table against their targets.
//!
//! Runs the release build on a private bus against the fake cloud with ten tokens (one logged-in user, five device
//! tokens, four ground tokens) and measures: `GetToken` against `org.freedesktop.DBus.Peer.Ping` to the same service
//! (by `daemon/examples/bench-client.rs`), idle RSS, context switches over 30 s idle with the maintenance jobs off and
//! on, and the time from spawn to `READY=1` on `NOTIFY_SOCKET`; the time to save one session through the
//! daemon's write path, sealed and clear (by `daemon/examples/save-cost.rs`); `GET /me/grounds` through
//! `att-token proxy` against the fake directly, on one keep-alive connection each, in the same run; the time from
//! exec to `READY=1` (sent once the bus name is owned) with 10 and with 1,000 device tokens, and their ratio; and
//! the size of the stripped `att-tokend` it built, as it ships. It prints figures; it is not a test.
//! `cargo xtask bench --save-cost` prints the save figures alone, `cargo xtask bench --startup` the start-up ones.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::procs::{self, Bins, Bus, Running, Scratch};

const USERNAME: &str = "bench@example.com";
const PASSWORD: &str = "bench-password";
/// Calls of each kind made by the benchmark client.
const CALLS: &str = "20000";
/// How long each idle measurement lasts.
const IDLE: Duration = Duration::from_secs(30);
/// Saves of each kind timed by the save-cost example.
const SAVES: &str = "200";

/// Runs the benchmark: everything, or with `--save-cost` the save figures alone.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let (save_cost_only, startup_only) = match args {
        [] => (false, false),
        [flag] if flag == "--save-cost" => (true, false),
        [flag] if flag == "--startup" => (false, true),
        _ => bail!("usage: cargo xtask bench [--save-cost | --startup]"),
    };
    let bins = procs::build(true, &["-p", "att-tokend", "--example", "bench-client", "--example", "save-cost"])?;
    let client = bins.profile_dir.join("examples").join("bench-client");
    if startup_only {
        let scratch = Scratch::new("bench")?;
        let bus = Bus::start(&scratch)?;
        let (_fake, url) = procs::start_fake(&bins.fake, &scratch, &[])?;
        print_table(&startup_rows(&bins, &scratch, &bus, &url)?);
        return Ok(());
    }
    eprintln!("bench: saving one session {SAVES} times, sealed and clear");
    let saves = save_rows(&bins)?;
    if save_cost_only {
        print_table(&saves);
        return Ok(());
    }
    let scratch = Scratch::new("bench")?;
    let bus = Bus::start(&scratch)?;

    let mut fake_args =
        vec!["--user".to_owned(), format!("{USERNAME}:{PASSWORD}"), "--access-lifetime".to_owned(), "3600s".to_owned()];
    let mut tokens = String::new();
    for n in 0..5 {
        let device = id24("BenchDevice", n);
        let token = format!("maker:4BenchDeviceToken{n}");
        let file = scratch.write(&format!("device-{n}.token"), &token, 0o600)?;
        fake_args.extend(["--device-token".to_owned(), format!("{token}={device}")]);
        tokens.push_str(&format!(
            "\n[[token]]\nname = \"device-{n}\"\nkind = \"device\"\ndevice_id = \"{device}\"\ntoken_file = \"{}\"\n",
            file.display()
        ));
    }
    for n in 0..4 {
        let ground = id24("BenchGround", n);
        let token = format!("maker:4BenchGroundToken{n}");
        let file = scratch.write(&format!("ground-{n}.token"), &token, 0o600)?;
        fake_args.extend(["--ground-token".to_owned(), format!("{token}={ground}:{}", id24("BenchGroundDev", n))]);
        tokens.push_str(&format!(
            "\n[[token]]\nname = \"ground-{n}\"\nkind = \"ground\"\nground_id = \"{ground}\"\ntoken_file = \"{}\"\n",
            file.display()
        ));
    }
    let (_fake, url) = procs::start_fake(&bins.fake, &scratch, &fake_args)?;
    let quiet = write_config(&scratch, &bus, &url, &tokens, false)?;
    let busy = write_config(&scratch, &bus, &url, &tokens, true)?;

    eprintln!("bench: starting att-tokend (maintenance jobs off)");
    let (mut daemon, ready_off) = start_measuring_ready(&bins, &scratch, &bus, &quiet)?;
    login(&bins, &bus)?;
    std::thread::sleep(Duration::from_secs(2));
    let rss_idle = rss_kib(daemon.pid())?;
    let threads = status_field(daemon.pid(), "Threads:")?;
    let rss_anon = status_field(daemon.pid(), "RssAnon:")?;
    let rss_file = status_field(daemon.pid(), "RssFile:")?;
    eprintln!("bench: counting context switches for {} s (jobs off)", IDLE.as_secs());
    let switches_off = context_switches_over(daemon.pid(), IDLE)?;
    eprintln!("bench: GetToken against Ping, {CALLS} calls each");
    let figures = run_client(&client, &bus)?;
    eprintln!("bench: GET /me/grounds through att-token proxy and directly, {PROXY_REQUESTS} requests each");
    let proxy_rows = proxy_rows(&bins, &scratch, &bus, &url)?;
    let rss_after = rss_kib(daemon.pid())?;
    let _ = daemon.stop();

    eprintln!("bench: restarting att-tokend (maintenance jobs on)");
    let (daemon, ready_on) = start_measuring_ready(&bins, &scratch, &bus, &busy)?;
    std::thread::sleep(Duration::from_secs(2));
    eprintln!("bench: counting context switches for {} s (jobs on)", IDLE.as_secs());
    let switches_on = context_switches_over(daemon.pid(), IDLE)?;
    drop(daemon);
    let startup_rows = startup_rows(&bins, &scratch, &bus, &url)?;

    let ratio = figures.get_p50 / figures.ping_p50;
    // The release profile strips, and the daemon was built alone: this is the file that ships.
    let size =
        std::fs::metadata(&bins.tokend).with_context(|| format!("could not stat {}", bins.tokend.display()))?.len();
    let rows = [
        row(
            "att-tokend size, stripped",
            format!("{} B ({:.2} MiB)", thousands(size), size as f64 / MIB as f64),
            "≤ 4,194,304 B (4 MiB)".into(),
            Some(size <= 4 * MIB),
        ),
        row("GetToken calls/s", format!("{:.0}", figures.get_rate), "(figure)".into(), None),
        row("Ping calls/s (same service)", format!("{:.0}", figures.ping_rate), "(figure)".into(), None),
        row(
            "GetToken p50 / p99",
            format!("{:.0} / {:.0} µs", figures.get_p50, figures.get_p99),
            "(figure)".into(),
            None,
        ),
        row("Ping p50 / p99", format!("{:.0} / {:.0} µs", figures.ping_p50, figures.ping_p99), "(figure)".into(), None),
        row("GetToken p50 ÷ Ping p50", format!("{ratio:.2}×"), "≤ 1.15×".into(), Some(ratio <= 1.15)),
        row("GetToken p99 ÷ Ping p99", format!("{:.2}×", figures.get_p99 / figures.ping_p99), "(figure)".into(), None),
        row("idle RSS, 10 tokens", mib(rss_idle), "≤ 6 MiB".into(), Some(rss_idle <= 6 * 1024)),
        row("  of which anonymous / file", format!("{} / {}", mib(rss_anon), mib(rss_file)), "(figure)".into(), None),
        row("RSS after the calls", mib(rss_after), "(figure)".into(), None),
        row("threads, idle", threads.to_string(), "(figure)".into(), None),
        row(
            "ctx switches, 30 s idle, jobs off",
            switches_off.to_string(),
            "≤ 30 (no refresh-path wakeups)".into(),
            Some(switches_off <= 30),
        ),
        row("ctx switches, 30 s idle, jobs on", switches_on.to_string(), "(figure)".into(), None),
        row(
            "spawn → READY=1 (jobs off)",
            millis(ready_off),
            "≤ 1000 ms".into(),
            Some(ready_off <= Duration::from_secs(1)),
        ),
        row(
            "spawn → READY=1 (jobs on)",
            millis(ready_on),
            "≤ 1000 ms".into(),
            Some(ready_on <= Duration::from_secs(1)),
        ),
    ];
    let rows: Vec<Row> = rows.into_iter().chain(startup_rows).chain(proxy_rows).chain(saves).collect();
    print_table(&rows);
    Ok(())
}

/// The larger number of tokens start-up is timed with; the smaller is a hundredth of it.
const MANY: usize = 1000;
/// Starts timed with each number of tokens (the median is shown).
const STARTS: usize = 7;

/// The start-up rows: the median time from exec to `READY=1` (which follows the bus name) with 10 and with 1,000
/// device tokens read from files, started in turns so that a busy machine slows both alike, and their ratio.
fn startup_rows(bins: &Bins, scratch: &Scratch, bus: &Bus, url: &str) -> anyhow::Result<Vec<Row>> {
    eprintln!("bench: start-up with {} and with {MANY} device tokens, {STARTS} starts each", MANY / 100);
    let mut tokens = String::new();
    let mut configs = Vec::new();
    for n in 0..MANY {
        let file = scratch.write(&format!("startup-{n}.token"), format!("maker:4StartupToken{n}"), 0o600)?;
        tokens.push_str(&format!(
            "\n[[token]]\nname = \"device-{n}\"\nkind = \"device\"\ndevice_id = \"{}\"\ntoken_file = \"{}\"\n",
            id24("StartupDevice", n),
            file.display()
        ));
        if n + 1 == MANY / 100 || n + 1 == MANY {
            let state = scratch.path().join(format!("startup-state-{}", n + 1));
            let config = format!(
                "# Generated by `cargo xtask bench`.\n[api]\nurl = \"{url}\"\n\n[daemon]\nbus = \"{}\"\nstate_dir = \
                 \"{}\"\n\n[maintenance]\ntoken_health = \"off\"\nground_sync = \"off\"\nlapse_review = \"off\"\n{tokens}",
                bus.address,
                state.display()
            );
            configs.push(scratch.write(&format!("config-startup-{}.toml", n + 1), &config, 0o600)?);
        }
    }
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..STARTS {
        for (config, times) in configs.iter().zip(&mut times) {
            let (mut daemon, ready) = start_measuring_ready(bins, scratch, bus, config)?;
            times.push(ready);
            let _ = daemon.stop();
        }
    }
    let [few, many] = times.map(|mut times| {
        times.sort_unstable();
        times[times.len() / 2]
    });
    let ratio = many.as_secs_f64() / few.as_secs_f64();
    Ok(vec![
        row(
            "exec → READY=1, 10 device tokens",
            format!("{:.1} ms", few.as_secs_f64() * 1000.0),
            "(figure)".into(),
            None,
        ),
        row(
            "exec → READY=1, 1,000 device tokens",
            format!("{:.1} ms", many.as_secs_f64() * 1000.0),
            "(figure)".into(),
            None,
        ),
        row("  1,000 ÷ 10 tokens", format!("{ratio:.1}×"), "(figure; aim ≤ 2×)".into(), None),
    ])
}

/// Requests of each kind timed through the proxy and directly.
const PROXY_REQUESTS: usize = 5000;

/// One HTTP/1.1 keep-alive connection, reading each response by its `Content-Length`.
struct KeepAlive {
    stream: std::io::BufReader<std::net::TcpStream>,
    host: String,
}

impl KeepAlive {
    fn connect(base: &str) -> anyhow::Result<KeepAlive> {
        let host = base.strip_prefix("http://").with_context(|| format!("{base} is not an http:// URL"))?.to_owned();
        let stream = std::net::TcpStream::connect(&host).with_context(|| format!("cannot connect to {host}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(KeepAlive { stream: std::io::BufReader::new(stream), host })
    }

    /// Sends `GET path` (with `extra` header lines) and returns the status once the whole body is read.
    fn get(&mut self, path: &str, extra: &str) -> anyhow::Result<u16> {
        use std::io::{BufRead as _, Read as _, Write as _};
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{extra}\r\n", self.host);
        self.stream.get_mut().write_all(request.as_bytes())?;
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        let status: u16 =
            line.split(' ').nth(1).and_then(|s| s.parse().ok()).with_context(|| format!("bad status line {line:?}"))?;
        let mut length = 0_usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().context("a bad Content-Length")?;
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body)?;
        Ok(status)
    }
}

/// Latencies in µs of `count` sequential requests on one connection, after a warm-up; fails on any non-200.
fn time_requests(base: &str, extra: &str, count: usize) -> anyhow::Result<(f64, Vec<f64>)> {
    let mut connection = KeepAlive::connect(base)?;
    for _ in 0..200 {
        connection.get("/me/grounds", extra)?;
    }
    let mut latencies = Vec::with_capacity(count);
    let started = Instant::now();
    for n in 0..count {
        let sent = Instant::now();
        let status = connection.get("/me/grounds", extra)?;
        if status != 200 {
            bail!("request {n} to {base} answered {status}");
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1e6);
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok((rate, latencies))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The proxy rows: `GET /me/grounds` through `att-token proxy main` and straight to the fake with the same
/// token, one keep-alive connection each.
fn proxy_rows(bins: &Bins, scratch: &Scratch, bus: &Bus, fake_url: &str) -> anyhow::Result<Vec<Row>> {
    let out = procs::att_token(bins, bus).args(["get", "main"]).stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("att-token get main failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let token = String::from_utf8(out.stdout)?.trim().to_owned();
    let mut command = procs::att_token(bins, bus);
    command.args(["proxy", "main", "--listen", "127.0.0.1:0"]);
    let (mut proxy, line) = Running::spawn_first_line("att-token-proxy", command, scratch, testbed::PATIENCE)?;
    let address =
        line.trim().strip_prefix("listening on ").with_context(|| format!("the proxy printed {line:?}"))?.to_owned();
    let (direct_rate, direct) = time_requests(fake_url, &format!("Authorization: Bearer {token}\r\n"), PROXY_REQUESTS)?;
    let (proxied_rate, proxied) = time_requests(&address, "", PROXY_REQUESTS)?;
    let _ = proxy.stop();
    let added_p50 = percentile(&proxied, 0.5) - percentile(&direct, 0.5);
    let added_p99 = percentile(&proxied, 0.99) - percentile(&direct, 0.99);
    Ok(vec![
        row("proxy requests/s (one connection)", format!("{proxied_rate:.0}"), "(figure)".into(), None),
        row("fake directly requests/s", format!("{direct_rate:.0}"), "(figure)".into(), None),
        row(
            "proxy p50 / p99",
            format!("{:.0} / {:.0} µs", percentile(&proxied, 0.5), percentile(&proxied, 0.99)),
            "(figure)".into(),
            None,
        ),
        row(
            "fake directly p50 / p99",
            format!("{:.0} / {:.0} µs", percentile(&direct, 0.5), percentile(&direct, 0.99)),
            "(figure)".into(),
            None,
        ),
        row("proxy adds (p50)", format!("{added_p50:.0} µs"), "< 500 µs".into(), Some(added_p50 < 500.0)),
        row("proxy adds (p99)", format!("{added_p99:.0} µs"), "(figure)".into(), None),
    ])
}

/// The save-cost rows: p50 and p99 of one save, sealed and clear, and what sealing adds. The saves go to a
/// directory on the build's disk (not a tmpfs), as a gateway's state directory is on its SD card.
fn save_rows(bins: &Bins) -> anyhow::Result<Vec<Row>> {
    let program = bins.profile_dir.join("examples").join("save-cost");
    let out = Command::new(&program).arg(&bins.profile_dir).arg(SAVES).stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("save-cost failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let json = String::from_utf8(out.stdout)?;
    let field = |section: &str, key: &str| json_field(&json, section, key);
    let (sealed_p50, clear_p50) = (field("sealed", "p50_us")?, field("clear", "p50_us")?);
    let added = sealed_p50 - clear_p50;
    Ok(vec![
        row(
            "save one session, sealed p50 / p99",
            format!("{sealed_p50:.0} / {:.0} µs", field("sealed", "p99_us")?),
            "(figure)".into(),
            None,
        ),
        row(
            "save one session, clear p50 / p99",
            format!("{clear_p50:.0} / {:.0} µs", field("clear", "p99_us")?),
            "(figure)".into(),
            None,
        ),
        row("sealing adds (p50)", format!("{added:.0} µs"), "< 1000 µs".into(), Some(added < 1000.0)),
    ])
}

/// A number from the flat JSON the examples print: `"section":{..."key":N...}`.
pub(crate) fn json_field(json: &str, section: &str, key: &str) -> anyhow::Result<f64> {
    let start = json.find(&format!("\"{section}\"")).with_context(|| format!("no {section} in {json}"))?;
    let rest = &json[start..];
    let at = rest.find(&format!("\"{key}\":")).with_context(|| format!("no {section}.{key} in {json}"))?;
    let value = &rest[at + key.len() + 3..];
    let end = value.find([',', '}']).unwrap_or(value.len());
    value[..end].trim().parse().with_context(|| format!("{section}.{key} is not a number in {json}"))
}

/// A 24-character alphanumeric id made from a stem and a number.
fn id24(stem: &str, n: usize) -> String {
    let mut id = format!("{stem}{n}");
    while id.len() < 24 {
        id.push('x');
    }
    id
}

fn write_config(scratch: &Scratch, bus: &Bus, url: &str, tokens: &str, jobs: bool) -> anyhow::Result<PathBuf> {
    let state = scratch.path().join("state");
    // Sealed sessions, as under systemd: a 0600 file of 32 random bytes as the state key (the same for both runs).
    let key = scratch.path().join("state.key");
    if !key.exists() {
        let mut bytes = [0_u8; 32];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)
            .context("could not read 32 random bytes from /dev/urandom for the state key")?;
        std::fs::write(&key, bytes).with_context(|| format!("could not write {}", key.display()))?;
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    }
    let maintenance = if jobs {
        ""
    } else {
        "\n[maintenance]\ntoken_health = \"off\"\nground_sync = \"off\"\nlapse_review = \"off\"\n"
    };
    let config = format!(
        "# Generated by `cargo xtask bench`.\n[api]\nurl = \"{url}\"\n\n[daemon]\nbus = \"{}\"\nstate_dir = \"{}\"\nstate_key_file = \"{}\"\n{maintenance}\n[[token]]\nname = \"main\"\nkind = \"user\"\n{tokens}",
        bus.address,
        state.display(),
        key.display(),
    );
    let name = if jobs { "config-jobs-on.toml" } else { "config-jobs-off.toml" };
    scratch.write(name, &config, 0o600)
}

/// Starts the daemon with `NOTIFY_SOCKET` bound here; returns it and the time from spawn to `READY=1`.
fn start_measuring_ready(
    bins: &Bins,
    scratch: &Scratch,
    bus: &Bus,
    config: &Path,
) -> anyhow::Result<(Running, Duration)> {
    let socket_path = scratch.path().join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let socket = UnixDatagram::bind(&socket_path).context("could not bind the notify socket")?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut command = Command::new(&bins.tokend);
    command.arg("--config").arg(config).env("NOTIFY_SOCKET", &socket_path).env("RUST_LOG", "warn");
    let started = Instant::now();
    let mut daemon = Running::spawn("att-tokend", command, scratch)?;
    let mut buffer = [0_u8; 4096];
    let ready = loop {
        match socket.recv(&mut buffer) {
            Ok(n) if String::from_utf8_lossy(&buffer[..n]).lines().any(|line| line == "READY=1") => {
                break started.elapsed();
            }
            Ok(_) => {}
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(error) => return Err(error).context("could not read the notify socket"),
        }
        if let Some(status) = daemon.try_status() {
            bail!("att-tokend exited with {status} before READY=1: {}", daemon.stderr_tail());
        }
        if started.elapsed() > procs::PATIENCE {
            bail!("att-tokend sent no READY=1 within {:?}: {}", procs::PATIENCE, daemon.stderr_tail());
        }
    };
    procs::wait_for_daemon(bins, bus, &mut daemon)?;
    Ok((daemon, ready))
}

fn login(bins: &Bins, bus: &Bus) -> anyhow::Result<()> {
    let mut command = procs::att_token(bins, bus);
    command.args(["login", "main", "--username", USERNAME, "--password-stdin"]);
    let out = procs::output_with_stdin(command, &format!("{PASSWORD}\n"))?;
    if !out.status.success() {
        bail!("att-token login failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_field(pid, "VmRSS:")
}

/// A numeric field of /proc/PID/status (a trailing `kB` is dropped).
fn status_field(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status_value(&status, field).with_context(|| format!("no {field} line in /proc/{pid}/status"))
}

/// A numeric field (`VmRSS:`) of a `/proc/PID/status` text, a trailing `kB` dropped; `None` when absent.
pub(crate) fn status_value(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Voluntary plus involuntary context switches of every thread of a process.
fn context_switches(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else { continue };
        for line in status.lines() {
            if let Some(rest) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += rest.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(total)
}

fn context_switches_over(pid: u32, span: Duration) -> anyhow::Result<u64> {
    let before = context_switches(pid)?;
    std::thread::sleep(span);
    Ok(context_switches(pid)?.saturating_sub(before))
}

struct Figures {
    get_rate: f64,
    get_p50: f64,
    get_p99: f64,
    ping_rate: f64,
    ping_p50: f64,
    ping_p99: f64,
}

fn run_client(client: &Path, bus: &Bus) -> anyhow::Result<Figures> {
    let out = Command::new(client).args([bus.address.as_str(), "main", CALLS]).stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("bench-client failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let json = String::from_utf8(out.stdout)?;
    let field = |section: &str, key: &str| json_field(&json, section, key);
    Ok(Figures {
        get_rate: field("get_token", "calls_per_sec")?,
        get_p50: field("get_token", "p50_us")?,
        get_p99: field("get_token", "p99_us")?,
        ping_rate: field("ping", "calls_per_sec")?,
        ping_p50: field("ping", "p50_us")?,
        ping_p99: field("ping", "p99_us")?,
    })
}

struct Row {
    what: &'static str,
    value: String,
    target: String,
    pass: Option<bool>,
}

fn row(what: &'static str, value: String, target: String, pass: Option<bool>) -> Row {
    Row { what, value, target, pass }
}

/// Bytes in a MiB.
const MIB: u64 = 1024 * 1024;

/// `n` with a comma every three digits.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mib(kib: u64) -> String {
    format!("{:.2} MiB", kib as f64 / 1024.0)
}

fn millis(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

fn print_table(rows: &[Row]) {
    let width = |f: fn(&Row) -> usize| rows.iter().map(f).max().unwrap_or(0);
    let w_what = width(|r| r.what.chars().count()).max("figure".len());
    let w_value = width(|r| r.value.chars().count()).max("value".len());
    let w_target = width(|r| r.target.chars().count()).max("target".len());
    println!("{:<w_what$}  {:>w_value$}  {:<w_target$}  result", "figure", "value", "target");
    println!("{}", "-".repeat(w_what + w_value + w_target + 12));
    for r in rows {
        let mark = match r.pass {
            Some(true) => "✔ pass",
            Some(false) => "✘ FAIL",
            None => "",
        };
        let pad_value = w_value - r.value.chars().count();
        let pad_target = w_target - r.target.chars().count();
        println!(
            "{:<w_what$}  {}{}  {}{}  {mark}",
            r.what,
            " ".repeat(pad_value),
            r.value,
            r.target,
            " ".repeat(pad_target)
        );
    }
}
