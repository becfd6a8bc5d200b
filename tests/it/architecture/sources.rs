//! Scans of the sources: token-model reads no clock and does no I/O ([`scan_source`], tested on snippets), and
//! the daemon's rules (no trace-level events, no bus proxies on the serving side, never the proxy crate) are the
//! same scan with other patterns.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{rust_files, strip_comments, workspace_root};

// ---------------------------------------------------------------------------------------------------------------
// token-model's sources read no clock and do no I/O
// ---------------------------------------------------------------------------------------------------------------

/// What a pure crate's source must not contain: clock reads, files, sockets, processes, the environment,
/// sleeping, printing and async runtimes.
const IMPURE: &[&str] = &[
    "SystemTime::now",
    "Instant::now",
    "std::fs",
    "std::net",
    "std::process",
    "std::env",
    "std::io::stdin",
    "std::io::stdout",
    "std::io::stderr",
    "File::",
    "OpenOptions",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "UnixStream",
    "UnixListener",
    "Command::new",
    "std::thread::sleep",
    "thread::sleep",
    "tokio",
    "println!",
    "eprintln!",
];

/// Whether `pattern` occurs in `code` not as the tail of a longer identifier (`File::` does not match
/// `TokenFile::`).
fn contains_word(code: &str, pattern: &str) -> bool {
    code.match_indices(pattern).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// Every clock read or I/O in `source`, as `file:line: `pattern` in: code`.
fn scan_source(file: &str, source: &str) -> Vec<String> {
    scan_for(IMPURE, file, source)
}

/// Every occurrence of one of `patterns` in the code (not the comments) of `source`, as
/// `file:line: `pattern` in: code`.
fn scan_for(patterns: &[&str], file: &str, source: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_block = false;
    for (number, line) in source.lines().enumerate() {
        let code = strip_comments(line, &mut in_block);
        for pattern in patterns.iter().filter(|p| contains_word(&code, p)) {
            found.push(format!("{file}:{}: `{pattern}` in: {}", number + 1, line.trim()));
        }
    }
    found
}

#[test]
fn token_model_sources_read_no_clock_and_do_no_io() {
    let root = workspace_root();
    let mut files = Vec::new();
    rust_files(&root.join("crates/token-model/src"), &mut files);
    files.sort();
    assert!(files.iter().any(|f| f.ends_with("lib.rs")), "token-model's lib.rs not found in {files:?}");
    let mut report = String::new();
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let name = file.strip_prefix(&root).unwrap_or(file).display().to_string();
        for problem in scan_source(&name, &source) {
            writeln!(report, "- {problem}").unwrap();
        }
    }
    assert!(
        report.is_empty(),
        "token-model must read no clock and do no I/O, but:\n{report}Take `now` (or the value read) as a \
         parameter and do the I/O in login-flow or att-tokend."
    );
}

/// The daemon's sources that go into `att-tokend`: its library and its binary, and the D-Bus contract it links.
fn daemon_sources(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&root.join("daemon/src"), &mut files);
    rust_files(&root.join("crates/token-agent/src"), &mut files);
    files.sort();
    files
}

/// Lines of `source` (comments aside) that name the token-proxy crate.
fn names_token_proxy(file: &str, source: &str) -> Vec<String> {
    let mut in_block = false;
    let mut found = Vec::new();
    for (number, line) in source.lines().enumerate() {
        let code = strip_comments(line, &mut in_block);
        if contains_word(&code, "token_proxy") {
            found.push(format!("{file}:{}: {}", number + 1, line.trim()));
        }
    }
    found
}

#[test]
fn the_proxy_is_never_part_of_the_daemon() {
    let root = workspace_root();
    let files = daemon_sources(&root);
    assert!(files.iter().any(|f| f.ends_with("daemon/src/lib.rs")), "the daemon's lib.rs not found");
    assert!(files.iter().any(|f| f.ends_with("att-tokend.rs")), "att-tokend's main not found");
    assert!(files.iter().any(|f| f.ends_with("token-agent/src/lib.rs")), "the contract's lib.rs not found");
    assert!(!files.iter().any(|f| f.to_string_lossy().contains("att-token/")), "att-token is not the daemon");
    let mut report = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        report.extend(names_token_proxy(&file.strip_prefix(&root).unwrap_or(file).display().to_string(), &source));
    }
    assert!(
        report.is_empty(),
        "the HTTP proxy belongs to att-token alone; the daemon's library and att-tokend must not use token_proxy:\n{}",
        report.join("\n")
    );
    // And att-token does use it, so the check above is about a real crate name.
    let client = std::fs::read_to_string(root.join("crates/att-token/src/proxy.rs")).expect("att-token's proxy");
    assert!(!names_token_proxy("proxy.rs", &client).is_empty());
    assert_eq!(
        names_token_proxy("x.rs", "// token_proxy in a comment\nlet my_token_proxy = 1;\n"),
        Vec::<String>::new()
    );
}

#[test]
fn scanner_reports_file_and_line_of_a_violation() {
    let source =
        "//! Module.\nuse std::time::SystemTime;\n\nfn f() -> u64 {\n    let t = SystemTime::now();\n    0\n}\n";
    assert_eq!(scan_source("src/x.rs", source), ["src/x.rs:5: `SystemTime::now` in: let t = SystemTime::now();"]);
    let source = "fn g() { let _ = std::fs::read(\"a\"); }\nasync fn h() { tokio::time::sleep(d).await }\n";
    let found = scan_source("src/y.rs", source);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("src/y.rs:1: `std::fs`"), "{found:#?}");
    assert!(found[1].starts_with("src/y.rs:2: `tokio`"), "{found:#?}");
    let code_after_block = scan_source("z.rs", "/* c */ let f = File::open(p);");
    assert_eq!(code_after_block.len(), 1, "{code_after_block:#?}");
}

#[test]
fn scanner_ignores_comments_and_longer_identifiers() {
    let source = "//! Reads no clock: the caller passes `Instant::now()` in.\n\
                  /// Unlike `std::fs`, this is pure.\n\
                  fn f(now: u64) -> u64 { now } // not SystemTime::now\n\
                  /* a block comment about tokio\n   and std::net */\n\
                  struct TokenFile;\nimpl TokenFile { fn x() { TokenFile::y() } }\n";
    assert_eq!(scan_source("src/x.rs", source), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------------------------
// The daemon's sources: nothing that release builds drop silently, no bus proxy where the daemon serves
// ---------------------------------------------------------------------------------------------------------------

/// The `.rs` files under `dirs` (relative to the workspace root), as (name for messages, text).
fn sources_under(dirs: &[&str]) -> Vec<(String, String)> {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in dirs {
        rust_files(&root.join(dir), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            (file.strip_prefix(&root).unwrap_or(&file).display().to_string(), text)
        })
        .collect()
}

/// Trace-level events and spans: release builds compile them out (`tracing`'s `release_max_level_debug`,
/// which keeps the shipped binary under its size budget), so one written here would never print.
const TRACE_LEVEL: &[&str] = &["trace!", "trace_span!"];

#[test]
fn the_daemon_and_login_flow_log_nothing_at_trace_level() {
    let mut report = String::new();
    for (name, source) in sources_under(&[
        "daemon/src",
        "crates/token-agent/src",
        "crates/att-token/src",
        "crates/login-flow/src",
        "crates/token-model/src",
    ]) {
        for problem in scan_for(TRACE_LEVEL, &name, &source) {
            writeln!(report, "- {problem}").unwrap();
        }
    }
    assert!(
        report.is_empty(),
        "release builds compile trace-level events out, so these would never print:\n{report}Log at debug instead."
    );
}

/// zbus proxies: each one brings a properties cache, signal streams and a decoder for every field of every reply.
const PROXIES: &[&str] = &["DBusProxy", "zbus::proxy", "#[proxy", "Proxy::new", "Proxy::builder"];

/// What the daemon builds that may hold proxies (a file, or a directory ending in `/`): the contract's client
/// side, which the daemon links but never calls.
const CLIENT_SOURCES: &[&str] = &["crates/token-agent/src/proxy.rs"];

/// The sources that go into the serving daemon: its own and the D-Bus contract's.
const SERVING_SOURCES: &[&str] = &["daemon/src", "crates/token-agent/src"];

fn is_client_source(name: &str) -> bool {
    CLIENT_SOURCES.iter().any(|client| if client.ends_with('/') { name.starts_with(client) } else { name == *client })
}

#[test]
fn the_serving_daemon_asks_the_bus_without_proxies() {
    let mut report = String::new();
    for (name, source) in sources_under(SERVING_SOURCES) {
        if is_client_source(&name) {
            continue;
        }
        for problem in scan_for(PROXIES, &name, &source) {
            writeln!(report, "- {problem}").unwrap();
        }
    }
    assert!(
        report.is_empty(),
        "the daemon asks the bus with Connection::call_method and reads signals with MessageStream::for_match_rule \
         (see dbus/callers.rs); a zbus proxy would add about 140 KiB to the shipped binary:\n{report}"
    );
}

#[test]
fn the_daemon_rules_catch_what_they_are_for() {
    let logged = "fn f() {\n    tracing::trace!(\"x\");\n    // trace!(\"in a comment\")\n    debug!(\"y\");\n}\n";
    assert_eq!(scan_for(TRACE_LEVEL, "a.rs", logged), ["a.rs:2: `trace!` in: tracing::trace!(\"x\");"]);
    let proxied = "use zbus::fdo::DBusProxy;\nlet p = DBusProxy::new(&c).await?;\n#[zbus::proxy(interface = \"a.B\")]\n\
                   let r = c.call_method(d, p, i, m, &b);\n";
    let found = scan_for(PROXIES, "b.rs", proxied);
    assert_eq!(found.len(), 3, "one per line but the direct call: {found:#?}");
    assert!(found.iter().all(|f| !f.starts_with("b.rs:4")), "{found:#?}");
    let names: Vec<String> = sources_under(SERVING_SOURCES).into_iter().map(|(name, _)| name).collect();
    for client in CLIENT_SOURCES {
        assert!(
            names.iter().any(|n| is_client_source(n) && n.starts_with(client)),
            "{client} moved: update CLIENT_SOURCES ({names:?})"
        );
    }
    assert!(is_client_source("crates/token-agent/src/proxy.rs"));
    assert!(!is_client_source("crates/token-agent/src/lib.rs") && !is_client_source("daemon/src/bin/att-tokend.rs"));
}
