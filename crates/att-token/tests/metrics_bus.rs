//! `att-token metrics` against the real daemon on a private `dbus-daemon`, with the fake cloud on loopback: the
//! text parses as the Prometheus text format, counts what happened (a refresh, a refused call with its reason),
//! shows a token's figures to its readers only and the daemon's counters to anyone, and `--textfile` replaces the
//! file whole.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output, Stdio};

use prometheus_parse::{Scrape, Value};
use testbed::{Bins, Bus, ConfigText, Daemon, Fake, PATIENCE, Profile, Scratch};

const USERNAME: &str = "alice@example.com";
const PASSWORD: &str = "pw-of-alice";
const TOTP_SEED: &str = "KRSXG5CTMVRXEZLUKN2XAZLSKNSWG4TFOQ";
const DEVICE: &str = "SensorSevenDevice0000001";
const DEVICE_TOKEN: &str = "maker:4SensorSevenDeviceToken";
/// A reader of `sensor-7` only, and someone who reads no token: real accounts (the bus refuses unknown uids).
const READER: &str = "nobody";
const STRANGER: &str = "daemon";

/// Bus, fake cloud and daemon, dropped daemon first.
struct World {
    _daemon: Daemon,
    _fake: Fake,
    bus: Bus,
    scratch: Scratch,
    bins: Bins,
}

fn describe(output: &Output) -> String {
    format!(
        "status {}; stdout {:?}; stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

impl World {
    /// The user token `main` (logged in by the daemon itself, read by root alone) and the device token `sensor-7`
    /// (read by [`READER`]).
    fn start() -> World {
        let bins = Bins::build(Profile::Debug, &[]).unwrap_or_else(|e| panic!("{e:#}"));
        let scratch = Scratch::new("metrics-bus").unwrap();
        let bus = Bus::start(&scratch).unwrap();
        let args = [
            "--user".to_owned(),
            format!("{USERNAME}:{PASSWORD}:{TOTP_SEED}"),
            "--device-token".to_owned(),
            format!("{DEVICE_TOKEN}={DEVICE}"),
        ];
        let fake = Fake::start(&bins.fake, &scratch, &args).unwrap();
        let password = scratch.write("password", format!("{PASSWORD}\n"), 0o600).unwrap();
        let seed = scratch.write("totp-seed", format!("{TOTP_SEED}\n"), 0o600).unwrap();
        let device = scratch.write("sensor-7.token", DEVICE_TOKEN, 0o600).unwrap();
        let config = ConfigText::new()
            .api(&fake.url)
            .daemon(&bus.address, &scratch.path().join("state"))
            .fast_refresh()
            .unattended_user("main", USERNAME, &password, &seed)
            .device("sensor-7", DEVICE, &device)
            .line(&format!("readers = {{ users = [\"{READER}\"] }}"));
        let config = scratch.write("config.toml", config.as_str(), 0o600).unwrap();
        let daemon = Daemon::start(&bins, &scratch, &bus.address, &config, &[("RUST_LOG", "debug")]).unwrap();
        World { _daemon: daemon, _fake: fake, bus, scratch, bins }
    }

    /// `att-token <args>` as root.
    fn att_token(&self, args: &[&str]) -> Output {
        self.bins.att_token(&self.bus.address).args(args).output().expect("run att-token")
    }

    /// `att-token <args>` as `user`.
    fn att_token_as(&self, user: &str, args: &[&str]) -> Output {
        let mut command: Command = testbed::as_user(user, &self.bins.token).unwrap();
        command.arg("--bus").arg(&self.bus.address).args(args).stdin(Stdio::null());
        command.output().expect("run setpriv (util-linux)")
    }

    /// `att-token metrics` as `user` (root when `None`), parsed.
    fn metrics(&self, user: Option<&str>) -> Metrics {
        let out = match user {
            Some(user) => self.att_token_as(user, &["metrics"]),
            None => self.att_token(&["metrics"]),
        };
        assert!(out.status.success(), "att-token metrics failed: {}", describe(&out));
        Metrics::parse(&String::from_utf8(out.stdout).expect("UTF-8 text"))
    }
}

/// A scrape: the text and its samples by name and labels.
struct Metrics {
    text: String,
    samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
}

impl Metrics {
    /// Parses `text` with a Prometheus text-format parser, after checking what the format asks of every line.
    fn parse(text: &str) -> Metrics {
        assert!(text.ends_with("\n# EOF\n"), "the text ends with # EOF:\n{text}");
        let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("Prometheus text");
        let mut samples = BTreeMap::new();
        for sample in scrape.samples {
            assert!(sample.metric.starts_with("att_token_"), "{} is in the att_token_ namespace", sample.metric);
            assert!(scrape.docs.contains_key(&sample.metric), "{} has a HELP line", sample.metric);
            let value = match sample.value {
                Value::Counter(v) => {
                    assert!(sample.metric.ends_with("_total"), "a counter's name ends with _total: {}", sample.metric);
                    v
                }
                Value::Gauge(v) => v,
                other => panic!("{} is typed (counter or gauge): {other:?}", sample.metric),
            };
            let labels: BTreeMap<String, String> = sample.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            samples.insert((sample.metric, labels), value);
        }
        Metrics { text: text.to_owned(), samples }
    }

    /// The value of `name` with exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    /// Whether any sample names the token `token`.
    fn shows_token(&self, token: &str) -> bool {
        self.samples.keys().any(|(_, labels)| labels.get("token").is_some_and(|t| t == token))
    }
}

#[test]
fn metrics_count_what_happened_and_show_each_caller_its_own_tokens() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs att-token as other users with setpriv: run the test suite as root (CI does)"
    );
    let world = World::start();
    testbed::poll("main to be logged in", PATIENCE, || {
        let m = world.metrics(None);
        match m.get("att_token_state", &[("token", "main"), ("kind", "user"), ("state", "valid")]) {
            Some(1.0) => Ok(()),
            _ => Err(m.text),
        }
    })
    .unwrap();

    let before = world.metrics(None);
    let refreshes = |m: &Metrics| m.get("att_token_refreshes_total", &[("token", "main"), ("outcome", "success")]);
    let cloud_refreshes =
        |m: &Metrics| m.get("att_token_cloud_requests_total", &[("kind", "refresh"), ("outcome", "success")]);
    assert_eq!(
        before.get("att_token_logins_total", &[("token", "main"), ("outcome", "success")]),
        Some(1.0),
        "the daemon's own login is counted:\n{}",
        before.text
    );
    assert!(before.get("att_token_last_success_timestamp_seconds", &[("token", "main")]).is_some_and(|t| t > 0.0));
    let left = before.get("att_token_access_token_remaining_seconds", &[("token", "main")]).expect("main expires");
    assert!(left > 0.0, "a valid token has time left: {left}");
    assert!(before.get("att_token_refresh_token_remaining_seconds", &[("token", "main")]).is_some_and(|s| s > left));
    assert_eq!(
        before.get("att_token_state", &[("token", "sensor-7"), ("kind", "device"), ("state", "valid")]),
        Some(1.0)
    );
    assert_eq!(before.get("att_token_access_token_remaining_seconds", &[("token", "sensor-7")]), None, "no expiry");
    assert_eq!(before.get("att_token_budget_waits_total", &[]), Some(0.0));

    // A refresh: counted for the token and among the cloud's requests.
    let refreshed = world.att_token(&["refresh", "main"]);
    assert!(refreshed.status.success(), "{}", describe(&refreshed));
    let after = world.metrics(None);
    assert_eq!(refreshes(&after), Some(refreshes(&before).unwrap_or(0.0) + 1.0), "{}", after.text);
    assert_eq!(cloud_refreshes(&after), Some(cloud_refreshes(&before).unwrap_or(0.0) + 1.0), "{}", after.text);
    let served = |m: &Metrics, method| m.get("att_token_calls_served_total", &[("method", method)]).unwrap_or(0.0);
    assert_eq!(served(&after, "Refresh"), served(&before, "Refresh") + 1.0);
    assert_eq!(served(&after, "GetMetrics"), served(&before, "GetMetrics") + 1.0, "each GetMetrics is counted");

    // Refused calls: counted with their reasons.
    let denied = world.att_token_as(READER, &["get", "main"]);
    assert!(!denied.status.success(), "a reader of sensor-7 may not read main: {}", describe(&denied));
    let unknown = world.att_token(&["get", "no-such-token"]);
    assert!(!unknown.status.success(), "{}", describe(&unknown));
    let refused = world.metrics(None);
    let reason = |m: &Metrics, reason| m.get("att_token_calls_refused_total", &[("reason", reason)]).unwrap_or(0.0);
    assert_eq!(reason(&refused, "AccessDenied"), reason(&after, "AccessDenied") + 1.0, "{}", refused.text);
    assert_eq!(reason(&refused, "UnknownToken"), reason(&after, "UnknownToken") + 1.0, "{}", refused.text);

    // A reader sees its token's figures and the daemon's counters, not the other tokens.
    let reader = world.metrics(Some(READER));
    assert!(reader.shows_token("sensor-7") && !reader.shows_token("main"), "{}", reader.text);
    assert!(reader.get("att_token_calls_refused_total", &[("reason", "AccessDenied")]).is_some_and(|n| n > 0.0));
    // Someone who reads no token: the daemon's counters only.
    let stranger = world.metrics(Some(STRANGER));
    assert!(!stranger.shows_token("sensor-7") && !stranger.shows_token("main"), "{}", stranger.text);
    assert!(stranger.get("att_token_cloud_requests_total", &[("kind", "refresh"), ("outcome", "success")]).is_some());
    assert!(stranger.get("att_token_calls_served_total", &[("method", "GetMetrics")]).is_some_and(|n| n > 0.0));
}

#[test]
fn the_textfile_is_written_whole_for_node_exporter() {
    let world = World::start();
    let dir = world.scratch.path().join("node-exporter");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("att_token.prom"), "a file from before\n").unwrap();
    let out = world.att_token(&["metrics", "--textfile", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "nothing on stdout with --textfile: {}", describe(&out));
    let file = dir.join("att_token.prom");
    let metrics = Metrics::parse(&std::fs::read_to_string(&file).unwrap());
    assert!(metrics.shows_token("main") && metrics.shows_token("sensor-7"), "root sees every token");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o644, "node_exporter may read it");
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["att_token.prom"], "no temporary file is left");

    // A directory that is not there: a clear error, exit 1, nothing written.
    let missing = world.scratch.path().join("missing");
    let out = world.att_token(&["metrics", "--textfile", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("att_token.prom"), "{}", describe(&out));
    assert!(!missing.exists());
}
