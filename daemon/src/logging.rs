//! Logging for `att-tokend`: one event a line on stderr, level from `RUST_LOG` (default `info`).
//!
//! - Under systemd (`JOURNAL_STREAM` set) lines are plain: no colours, no timestamps (journald adds its own).
//! - Dependencies that could print message or request bodies (`zbus`, `reqwest`, `hyper`, `h2`, `rustls`,
//!   and the HTTP stack below them) are capped at `info` whatever `RUST_LOG` asks: the caps are added after
//!   the user's directives, and a directive for a target replaces an earlier one for the same target.
//! - The daemon's own code never logs a secret at any level; secrets are types whose `Debug` is redacted.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Targets capped at `info`, whatever `RUST_LOG` says: they could log bodies or headers at debug/trace.
pub const CAPPED_TARGETS: &[&str] = &["zbus", "zbus_names", "reqwest", "hyper", "hyper_util", "h2", "rustls"];

/// Targets that are merely chatty at `info`: quieted to `warn` unless `RUST_LOG` names them.
pub const QUIET_TARGETS: &[&str] = &["tokio_cron_scheduler"];

/// The filter for `rust_log` (the value of `RUST_LOG`, or `None`): the user's `target=level` directives, default
/// `info`, with [`CAPPED_TARGETS`] capped at `info`.
///
/// User directives that would open a capped target below `info` (`zbus=trace`, `zbus::connection=debug`) or
/// that filter on spans (`[span]=trace`) are dropped, and the returned warning says so; an unreadable
/// `RUST_LOG` is reported there too and the default is used.
pub fn filter(rust_log: Option<&str>) -> (Targets, Option<String>) {
    let spec = rust_log.map(str::trim).unwrap_or_default();
    let mut dropped = Vec::new();
    let kept: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .filter(|d| {
            let keep = allowed(d);
            if !keep {
                dropped.push(*d);
            }
            keep
        })
        .collect();
    let mut warnings = Vec::new();
    if !dropped.is_empty() {
        warnings.push(format!(
            "RUST_LOG directives {dropped:?} were ignored: dependencies that could print message or request bodies \
             never log below info, and spans are not filtered on"
        ));
    }
    let default = Targets::new().with_default(LevelFilter::INFO);
    let parsed = if kept.is_empty() { Ok(Targets::new()) } else { kept.join(",").parse::<Targets>() };
    let mut filter = match parsed {
        // Without a bare level among them, everything else stays at info.
        Ok(user) if user.default_level().is_none() => default.with_targets(user),
        Ok(user) => user,
        Err(e) => {
            warnings.push(format!(
                "RUST_LOG={spec:?} is not valid ({e}); using \"info\". Write directives like \"debug\" or \
                 \"att_tokend=trace,info\""
            ));
            default
        }
    };
    for target in CAPPED_TARGETS {
        // Keep a stricter user choice (e.g. `zbus=warn`); otherwise cap at info.
        let stricter = kept.iter().any(|d| {
            d.split_once('=').is_some_and(|(t, level)| t == *target && matches!(level, "off" | "error" | "warn"))
        });
        if !stricter {
            filter = filter.with_target(*target, LevelFilter::INFO);
        }
    }
    for target in QUIET_TARGETS {
        let named = kept.iter().any(|d| d.split('=').next() == Some(*target));
        if !named {
            filter = filter.with_target(*target, LevelFilter::WARN);
        }
    }
    (filter, (!warnings.is_empty()).then(|| warnings.join("; ")))
}

/// Whether a user directive may stay: not a span filter for every target, and not a capped target opened
/// below `info`.
fn allowed(directive: &str) -> bool {
    if directive.starts_with('[') {
        return false;
    }
    let (target, level) = match directive.split_once('=') {
        Some((target, level)) => (target, level.trim()),
        // A bare level, or a bare target (which means "trace" for it).
        None if directive.parse::<tracing::Level>().is_ok() || directive.eq_ignore_ascii_case("off") => return true,
        None => (directive, "trace"),
    };
    let target = target.split('[').next().unwrap_or(target);
    let capped = CAPPED_TARGETS.iter().any(|c| target == *c || target.starts_with(&format!("{c}::")));
    !capped || matches!(level.to_ascii_lowercase().as_str(), "off" | "error" | "warn" | "info")
}

/// Installs the global subscriber for the daemon. Reads `RUST_LOG` and `JOURNAL_STREAM`.
pub fn init() {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, warning) = filter(rust_log.as_deref());
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    // The builder's own level filter (info unless told) would drop what `filter` lets through: let `filter`
    // alone decide.
    let builder =
        tracing_subscriber::fmt().with_max_level(LevelFilter::TRACE).with_writer(std::io::stderr).with_target(true);
    let result = if journal {
        builder.with_ansi(false).without_time().finish().with(filter).try_init()
    } else {
        builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).finish().with(filter).try_init()
    };
    if result.is_ok()
        && let Some(warning) = warning
    {
        tracing::warn!("{warning}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_are_capped_whatever_rust_log_says() {
        for spec in [Some("trace"), Some("zbus=trace,reqwest=trace,trace"), Some("debug"), None] {
            let (filter, warning) = filter(spec);
            assert_eq!(warning.is_some(), spec.is_some_and(|s| s.contains("zbus=")), "{spec:?}: {warning:?}");
            let text = filter.to_string();
            for target in CAPPED_TARGETS {
                assert!(text.contains(&format!("{target}=info")), "{spec:?}: {text}");
            }
        }
    }

    #[test]
    fn stricter_user_caps_are_kept() {
        let (filter, _) = filter(Some("zbus=warn,debug"));
        let text = filter.to_string();
        assert!(text.contains("zbus=warn"), "{text}");
        assert!(!text.contains("zbus=info"), "{text}");
    }

    #[test]
    fn capped_targets_cannot_be_opened_by_more_specific_directives() {
        let (filter, warning) = filter(Some("zbus::connection=trace,[request]=trace,att_tokend=trace"));
        let text = filter.to_string();
        assert!(!text.contains("zbus::connection"), "{text}");
        assert!(!text.contains("[request]"), "{text}");
        assert!(text.contains("att_tokend=trace"), "{text}");
        assert!(warning.expect("a warning").contains("zbus::connection=trace"));
    }

    #[test]
    fn user_levels_apply_and_everything_else_stays_at_info() {
        let (filter, warning) = filter(Some("att_tokend=trace"));
        assert_eq!(warning, None);
        assert!(filter.would_enable("att_tokend::engine", &tracing::Level::TRACE));
        assert!(filter.would_enable("login_flow", &tracing::Level::INFO));
        assert!(!filter.would_enable("login_flow", &tracing::Level::DEBUG));
        let (filter, _) = filter_of("debug");
        assert!(filter.would_enable("login_flow", &tracing::Level::DEBUG));
        assert!(!filter.would_enable("zbus::connection", &tracing::Level::DEBUG), "capped");
        assert!(!filter.would_enable("tokio_cron_scheduler", &tracing::Level::INFO), "quieted");
        let (filter, _) = filter_of("att_tokend");
        assert!(filter.would_enable("att_tokend", &tracing::Level::TRACE), "a bare target means all its levels");
        let (filter, _) = super::filter(None);
        assert!(filter.would_enable("att_tokend", &tracing::Level::INFO));
        assert!(!filter.would_enable("att_tokend", &tracing::Level::DEBUG));
    }

    fn filter_of(spec: &str) -> (Targets, Option<String>) {
        filter(Some(spec))
    }

    #[test]
    fn bad_rust_log_falls_back_to_info_with_a_message() {
        let (_, warning) = filter(Some("att_tokend=loud"));
        let warning = warning.expect("a warning");
        assert!(warning.contains("RUST_LOG") && warning.contains("info"), "{warning}");
    }
}
