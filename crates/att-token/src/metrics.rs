//! `att-token metrics`: the daemon's counts (`GetMetrics`) and its tokens' states and deadlines (`ListTokens`, each
//! token's `RefreshTokenExpiresAt`) in the Prometheus text format, on stdout or written atomically for
//! node_exporter's textfile collector (`--textfile DIR`).
//!
//! The daemon counts and this module writes the text: the daemon stays small and serves no HTTP. The text is the
//! Prometheus exposition format (version 0.0.4, which node_exporter's textfile collector reads) that OpenMetrics
//! parsers read as well: a `# HELP` and a `# TYPE` line per metric, counters named `*_total`, and `# EOF` last.
//! Every name is in the `att_token_` namespace; the labels are `token`, `kind`, `state`, `method`, `outcome` and
//! `reason`.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use token_agent::metrics::{METHODS, Metrics, OUTCOMES, REFUSALS, REQUESTS, TOKEN_COUNTS, TokenCounts};

/// The file `--textfile DIR` writes in DIR (the textfile collector reads `*.prom`).
pub(crate) const TEXTFILE: &str = "att_token.prom";

/// The states a token can be in, as `ListTokens` names them: each gets a sample of `att_token_state`.
const STATES: [&str; 6] = ["valid", "refreshing", "retrying", "expired", "needs-login", "revoked"];

/// A token as `ListTokens` and its object show it: name, kind, state, expires_at, refresh_token_expires_at (Unix
/// seconds, 0 when none is known).
pub(crate) type TokenState = (String, String, String, i64, i64);

/// A label value with `\`, `"` and line breaks escaped, as the text format asks.
fn escape(value: &str) -> String {
    value.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

/// The text being written: one metric family after the other.
struct Text(String);

impl Text {
    /// Starts a family: its `# HELP` and `# TYPE` lines.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample of `name` with `labels` (name, value pairs).
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.0, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// The metrics as text: the daemon's counts and, for each token in `tokens`, its state, the seconds left of its
/// deadlines (counted from `now`, Unix seconds) and its counts.
pub(crate) fn render(metrics: &Metrics, tokens: &[TokenState], now: i64) -> String {
    let (served, refused, cloud, budget_waits, counts) = metrics;
    let mut text = Text(String::new());

    let name = "att_token_calls_served_total";
    text.family(name, "counter", "Calls to att-tokend answered, by D-Bus method.");
    for (method, count) in METHODS.iter().zip(served) {
        text.sample(name, &[("method", method)], count);
    }
    let name = "att_token_calls_refused_total";
    text.family(name, "counter", "Calls to att-tokend refused, by reason (the D-Bus error's name).");
    for (reason, count) in REFUSALS.iter().zip(refused) {
        text.sample(name, &[("reason", reason)], count);
    }
    let name = "att_token_cloud_requests_total";
    text.family(name, "counter", "Requests att-tokend sent to the AllThingsTalk cloud, by kind and outcome.");
    let pairs = REQUESTS.iter().flat_map(|kind| OUTCOMES.iter().map(move |outcome| (kind, outcome)));
    for ((kind, outcome), count) in pairs.zip(cloud) {
        text.sample(name, &[("kind", kind), ("outcome", outcome)], count);
    }
    let name = "att_token_budget_waits_total";
    text.family(name, "counter", "Requests to the cloud that waited for att-tokend's request budget.");
    text.sample(name, &[], budget_waits);

    let name = "att_token_state";
    text.family(name, "gauge", "1 for the state each token is in, 0 for the others.");
    for (token, kind, state, ..) in tokens {
        for each in STATES {
            text.sample(name, &[("token", token), ("kind", kind), ("state", each)], u8::from(state == each));
        }
    }
    let lapses = [
        (
            "att_token_access_token_remaining_seconds",
            "Seconds until the token served now lapses (negative once lapsed); none when it has no known expiry.",
        ),
        (
            "att_token_refresh_token_remaining_seconds",
            "Seconds until a user token's refresh token lapses (negative once lapsed); none when unknown.",
        ),
    ];
    for (column, (name, help)) in lapses.into_iter().enumerate() {
        text.family(name, "gauge", help);
        for (token, _, _, expires_at, refresh_expires_at) in tokens {
            let at = if column == 0 { *expires_at } else { *refresh_expires_at };
            if at != 0 {
                text.sample(name, &[("token", token)], at.saturating_sub(now));
            }
        }
    }
    // Only user tokens are refreshed and logged in; a token the daemon sent no counts for has none yet.
    let users: Vec<(&String, Option<&TokenCounts>)> = tokens
        .iter()
        .filter(|(_, kind, ..)| kind == "user")
        .map(|(token, ..)| (token, counts.iter().find(|(name, ..)| name == token)))
        .collect();
    let attempts = [
        (
            "refresh",
            "att_token_refreshes_total",
            "Refreshes of a user token, by outcome (rejected: the session ended).",
        ),
        ("login", "att_token_logins_total", "Logins of a user token (by a person or unattended), by outcome."),
    ];
    for (attempt, name, help) in attempts {
        text.family(name, "counter", help);
        for (token, figures) in &users {
            let counts = figures.map_or(&[][..], |(_, _, counts)| counts.as_slice());
            for (i, (_, outcome)) in TOKEN_COUNTS.iter().enumerate().filter(|(_, (of, _))| *of == attempt) {
                text.sample(name, &[("token", token), ("outcome", outcome)], counts.get(i).copied().unwrap_or(0));
            }
        }
    }
    let name = "att_token_last_success_timestamp_seconds";
    text.family(
        name,
        "gauge",
        "Unix time of a user token's last successful refresh or login since att-tokend started.",
    );
    for (token, figures) in &users {
        if let Some((_, last_success_at, _)) = figures.filter(|(_, at, _)| *at != 0) {
            text.sample(name, &[("token", token)], last_success_at);
        }
    }
    text.0.push_str("# EOF\n");
    text.0
}

/// Writes `text` to `dir`/[`TEXTFILE`] atomically: a temporary file in `dir` (which the textfile collector skips:
/// not `*.prom`), flushed to disk, mode 0644, renamed over the file, then the directory flushed. A reader sees the
/// old file or the new one, never part of one; on failure the temporary file is removed.
pub(crate) fn write_textfile(dir: &Path, text: &str) -> anyhow::Result<PathBuf> {
    let target = dir.join(TEXTFILE);
    let temp = dir.join(format!(".{TEXTFILE}.{}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&temp)?;
        // The umask may have taken bits off: the collector's user must read it.
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, &target)?;
        fs::File::open(dir)?.sync_all()
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&temp);
        return Err(error).with_context(|| {
            format!(
                "cannot write {}; check that {} exists and that this user may write to it",
                target.display(),
                dir.display()
            )
        });
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon's counts: GetToken served 5 times, ListTokens once, AccessDenied twice, 3 refreshes and a
    /// transient one at the cloud; main refreshed 3 times and logged in once, last at 999000.
    fn sample() -> (Metrics, Vec<TokenState>) {
        let mut served = vec![0; METHODS.len()];
        served[0] = 5;
        served[3] = 1;
        let mut refused = vec![0; REFUSALS.len()];
        refused[0] = 2;
        let mut cloud = vec![0; REQUESTS.len() * OUTCOMES.len()];
        cloud[0] = 3;
        cloud[1] = 1;
        let counts = vec![("main".to_owned(), 999_000, vec![3, 0, 0, 0, 1, 0, 0])];
        let tokens = vec![
            ("main".to_owned(), "user".to_owned(), "valid".to_owned(), 1_000_600, 1_086_400),
            ("sensor-7".to_owned(), "device".to_owned(), "revoked".to_owned(), 0, 0),
        ];
        ((served, refused, cloud, 0, counts), tokens)
    }

    #[test]
    fn every_family_has_help_and_type_and_the_text_ends_with_eof() {
        let (metrics, tokens) = sample();
        let text = render(&metrics, &tokens, 1_000_000);
        assert!(text.ends_with("\n# EOF\n"), "{text}");
        let mut described = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                described.insert(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(name.starts_with("att_token_"), "{line}");
                assert!(described.contains(name), "{name} has no TYPE line before it:\n{text}");
            }
        }
        for line in [
            "att_token_calls_served_total{method=\"GetToken\"} 5",
            "att_token_calls_refused_total{reason=\"AccessDenied\"} 2",
            "att_token_cloud_requests_total{kind=\"refresh\",outcome=\"success\"} 3",
            "att_token_budget_waits_total 0",
            "att_token_state{token=\"main\",kind=\"user\",state=\"valid\"} 1",
            "att_token_state{token=\"main\",kind=\"user\",state=\"expired\"} 0",
            "att_token_state{token=\"sensor-7\",kind=\"device\",state=\"revoked\"} 1",
            "att_token_access_token_remaining_seconds{token=\"main\"} 600",
            "att_token_refresh_token_remaining_seconds{token=\"main\"} 86400",
            "att_token_refreshes_total{token=\"main\",outcome=\"success\"} 3",
            "att_token_logins_total{token=\"main\",outcome=\"success\"} 1",
            "att_token_refreshes_total{token=\"main\",outcome=\"rejected\"} 0",
            "att_token_calls_refused_total{reason=\"InvalidArgs\"} 0",
            "att_token_last_success_timestamp_seconds{token=\"main\"} 999000",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
        }
        assert!(!text.contains("remaining_seconds{token=\"sensor-7\"}"), "no expiry, no sample:\n{text}");
        assert!(!text.contains("refreshes_total{token=\"sensor-7\""), "device tokens are not refreshed:\n{text}");
    }

    #[test]
    fn the_text_parses_as_prometheus_text() {
        let (metrics, tokens) = sample();
        let text = render(&metrics, &tokens, 1_000_000);
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let served = scrape.samples.iter().find(|s| s.metric == "att_token_calls_served_total").unwrap();
        assert!(matches!(served.value, prometheus_parse::Value::Counter(v) if v == 5.0), "{served:?}");
        assert_eq!(served.labels.get("method"), Some("GetToken"));
        let state = scrape
            .samples
            .iter()
            .find(|s| s.metric == "att_token_state" && s.labels.get("state") == Some("valid"))
            .unwrap();
        assert!(matches!(state.value, prometheus_parse::Value::Gauge(v) if v == 1.0), "{state:?}");
        assert!(scrape.docs.contains_key("att_token_refreshes_total"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("a\nb"), r"a\nb");
    }

    #[test]
    fn the_textfile_is_replaced_whole_with_mode_644() {
        let dir = std::env::temp_dir().join(format!("att-token-metrics-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(TEXTFILE), "old\n").unwrap();
        let path = write_textfile(&dir, "new\n# EOF\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n# EOF\n");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        let left: Vec<_> = fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, [std::ffi::OsString::from(TEXTFILE)], "no temporary file is left");
        let missing = dir.join("missing");
        let error = format!("{:#}", write_textfile(&missing, "x").unwrap_err());
        assert!(error.contains("exists") && error.contains("missing"), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
