//! Argument parsing and help texts of `att-token`, the exit-status table and object path escaping.

use att_token::cli::{
    CheckArgs, ForDeviceArgs, GetArgs, ListArgs, LoginArgs, MetricsArgs, NameArg, TokenArgs, TokenCommand,
    token_command,
};
use clap::Parser;
use clap::error::ErrorKind;
use proptest::prelude::*;
use token_agent::{Bus, Exit, escape_path_element, token_object_path, unescape_path_element};

fn token(args: &[&str]) -> Result<TokenArgs, clap::Error> {
    TokenArgs::try_parse_from(std::iter::once("att-token").chain(args.iter().copied()))
}

#[test]
fn every_subcommand_parses() {
    let cases: Vec<(Vec<&str>, TokenCommand)> = vec![
        (vec!["get", "main"], TokenCommand::Get(GetArgs { name: "main".into(), min_valid: None })),
        (
            vec!["get", "main", "--min-valid", "600"],
            TokenCommand::Get(GetArgs { name: "main".into(), min_valid: Some(600) }),
        ),
        (
            vec!["for-device", "abcdefghijklmnopqrstuvwx"],
            TokenCommand::ForDevice(ForDeviceArgs { device_id: "abcdefghijklmnopqrstuvwx".into() }),
        ),
        (vec!["list"], TokenCommand::List(ListArgs { json: false })),
        (vec!["list", "--json"], TokenCommand::List(ListArgs { json: true })),
        (
            vec!["login", "main"],
            TokenCommand::Login(LoginArgs { name: "main".into(), username: None, password_stdin: false, code: None }),
        ),
        (
            vec!["login", "main", "--username", "a@b.c", "--password-stdin", "--code", "123456"],
            TokenCommand::Login(LoginArgs {
                name: "main".into(),
                username: Some("a@b.c".into()),
                password_stdin: true,
                code: Some("123456".into()),
            }),
        ),
        (vec!["refresh", "main"], TokenCommand::Refresh(NameArg { name: "main".into() })),
        (vec!["logout", "main"], TokenCommand::Logout(NameArg { name: "main".into() })),
        (vec!["watch"], TokenCommand::Watch),
        (vec!["check"], TokenCommand::Check(CheckArgs { names: vec![], warn: 7, timeout: 10 })),
        (
            vec!["check", "main", "site-a", "--warn", "14", "-t", "5"],
            TokenCommand::Check(CheckArgs { names: vec!["main".into(), "site-a".into()], warn: 14, timeout: 5 }),
        ),
    ];
    for (argv, expected) in cases {
        let mut with_bus = vec!["--bus", "system"];
        with_bus.extend(&argv);
        let parsed = token(&with_bus).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        assert_eq!(parsed.command, expected, "{argv:?}");
        assert_eq!(parsed.bus, Bus::System);
    }
}

#[test]
fn bus_option_is_global_and_validated() {
    let parsed = token(&["list", "--bus", "session"]).unwrap();
    assert_eq!(parsed.bus, Bus::Session);
    let parsed = token(&["--bus", "unix:path=/run/x/bus", "watch"]).unwrap();
    assert_eq!(parsed.bus, Bus::Address("unix:path=/run/x/bus".into()));
    let error = token(&["--bus", "sytem", "list"]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ValueValidation);
    assert!(error.to_string().contains("\"system\", \"session\" or a D-Bus address"), "{error}");
}

#[test]
fn usage_errors() {
    assert_eq!(token(&["--bus", "system"]).unwrap_err().kind(), ErrorKind::MissingSubcommand);
    assert_eq!(token(&["--bus", "system", "get"]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
    assert_eq!(
        token(&["--bus", "system", "get", "main", "--min-valid", "-5"]).unwrap_err().kind(),
        ErrorKind::UnknownArgument
    );
    assert_eq!(
        token(&["--bus", "system", "get", "main", "--min-valid", "soon"]).unwrap_err().kind(),
        ErrorKind::ValueValidation
    );
    assert_eq!(token(&["--bus", "system", "frobnicate"]).unwrap_err().kind(), ErrorKind::InvalidSubcommand);
    // clap's usage errors exit with 2, as documented.
    assert_eq!(token(&["--bus", "system", "get"]).unwrap_err().exit_code(), 2);
}

#[test]
fn help_texts_explain_usage_and_exit_status() {
    let help = token_command().render_long_help().to_string();
    for needle in [
        "att-tokend",
        "Examples:",
        "$(att-token get main)",
        "--bus",
        "ATT_TOKEN_BUS",
        "EXIT STATUS:",
        "get",
        "for-device",
        "list",
        "login",
        "refresh",
        "logout",
        "watch",
        "check",
    ] {
        assert!(help.contains(needle), "att-token --help lacks {needle:?}:\n{help}");
    }
    for (exit, meaning) in Exit::TABLE {
        assert!(help.contains(&format!("  {}  {meaning}", exit.code())), "exit {} missing:\n{help}", exit.code());
    }
    let mut command = token_command();
    let login = command.find_subcommand_mut("login").unwrap().render_long_help().to_string();
    for needle in ["--password-stdin", "--code", "--username", "MFA", "without echo"] {
        assert!(login.contains(needle), "login --help lacks {needle:?}:\n{login}");
    }
    let exec = command.find_subcommand_mut("exec").unwrap().render_long_help().to_string();
    for needle in ["--env", "--on-change", "restart", "signal:SIG", "att-token get NAME", "128+N", "127", "PROGRAM"] {
        assert!(exec.contains(needle), "exec --help lacks {needle:?}:\n{exec}");
    }
    let proxy = command.find_subcommand_mut("proxy").unwrap().render_long_help().to_string();
    for needle in [
        "--listen",
        "unix:PATH",
        "403",
        "CONNECT",
        "Host header",
        "64 KiB",
        "ATT_TOKEN_PROXY_LISTEN",
        "ATT_TOKEN_PROXY_SOCKET_MODE",
    ] {
        assert!(proxy.contains(needle), "proxy --help lacks {needle:?}:\n{proxy}");
    }
    let metrics = command.find_subcommand_mut("metrics").unwrap().render_long_help().to_string();
    for needle in ["--textfile", "att_token.prom", "Prometheus", "# EOF", "att-token-metrics.timer", "readers"] {
        assert!(metrics.contains(needle), "metrics --help lacks {needle:?}:\n{metrics}");
    }
}

#[test]
fn metrics_takes_a_textfile_directory() {
    let args = TokenArgs::try_parse_from(["att-token", "metrics", "--textfile", "/tmp/x"]).unwrap();
    let TokenCommand::Metrics(metrics) = args.command else { panic!("metrics") };
    assert_eq!(metrics.textfile.as_deref(), Some(std::path::Path::new("/tmp/x")));
    let args = TokenArgs::try_parse_from(["att-token", "metrics"]).unwrap();
    assert_eq!(args.command, TokenCommand::Metrics(MetricsArgs { textfile: None }));
}

#[test]
fn exit_status_table_matches_the_error_names() {
    let table = [
        ("io.allthingstalk.TokenAgent1.Error.UnknownToken", Exit::UnknownToken),
        ("io.allthingstalk.TokenAgent1.Error.NoTokenForDevice", Exit::UnknownToken),
        ("io.allthingstalk.TokenAgent1.Error.NeedsLogin", Exit::NeedsLogin),
        ("io.allthingstalk.TokenAgent1.Error.LoginFailed", Exit::NeedsLogin),
        ("io.allthingstalk.TokenAgent1.Error.MfaRequired", Exit::NeedsLogin),
        ("io.allthingstalk.TokenAgent1.Error.MfaFailed", Exit::NeedsLogin),
        ("io.allthingstalk.TokenAgent1.Error.Unavailable", Exit::Unavailable),
        ("org.freedesktop.DBus.Error.AccessDenied", Exit::AccessDenied),
        ("org.freedesktop.DBus.Error.InvalidArgs", Exit::Usage),
        ("org.freedesktop.DBus.Error.ServiceUnknown", Exit::NoDaemon),
        ("org.freedesktop.DBus.Error.NoReply", Exit::NoDaemon),
        ("org.freedesktop.DBus.Error.Failed", Exit::Other),
        ("io.allthingstalk.TokenAgent1.Error.Revoked", Exit::Revoked),
    ];
    for (name, exit) in table {
        assert_eq!(Exit::for_error_name(name), exit, "{name}");
    }
    let codes: Vec<u8> = Exit::TABLE.iter().map(|(exit, _)| exit.code()).collect();
    assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
}

#[test]
fn object_paths_of_tokens() {
    assert_eq!(token_object_path("main"), "/io/allthingstalk/TokenAgent1/token/main");
    assert_eq!(token_object_path("sensor-7"), "/io/allthingstalk/TokenAgent1/token/sensor_2d7");
    assert_eq!(token_object_path("site_a"), "/io/allthingstalk/TokenAgent1/token/site_5fa");
}

proptest! {
    #[test]
    fn path_escaping_round_trips(name in "[A-Za-z0-9_-]{1,64}") {
        let element = escape_path_element(&name);
        prop_assert!(element.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        prop_assert_eq!(unescape_path_element(&element), Some(name));
    }
}
