//! Argument parsing and help text of `att-tokend` (`att-token`'s are tested in its own package).

use std::path::PathBuf;

use att_tokend::cli::{TokendArgs, tokend_command};
use clap::Parser;
use clap::error::ErrorKind;

#[test]
fn tokend_arguments() {
    let args = TokendArgs::try_parse_from(["att-tokend"]).unwrap();
    assert_eq!(
        args,
        TokendArgs {
            config: PathBuf::from("/etc/att-tokend/config.toml"),
            check_config: false,
            skip_secrets: false,
            rekey: None,
            old_key_file: None
        }
    );
    let args = TokendArgs::try_parse_from(["att-tokend", "--config", "/tmp/c.toml", "--check-config"]).unwrap();
    assert_eq!(
        args,
        TokendArgs {
            config: PathBuf::from("/tmp/c.toml"),
            check_config: true,
            skip_secrets: false,
            rekey: None,
            old_key_file: None
        }
    );
    let args = TokendArgs::try_parse_from(["att-tokend", "--check-config", "--skip-secrets"]).unwrap();
    assert!(args.check_config && args.skip_secrets);
    assert!(
        TokendArgs::try_parse_from(["att-tokend", "--skip-secrets"]).is_err(),
        "--skip-secrets needs --check-config"
    );
    let args = TokendArgs::try_parse_from(["att-tokend", "--rekey", "/run/new.key", "--old-key-file", "/run/old.key"])
        .unwrap();
    assert_eq!(args.rekey, Some(PathBuf::from("/run/new.key")));
    assert_eq!(args.old_key_file, Some(PathBuf::from("/run/old.key")));
    for wrong in [&["--old-key-file", "/run/old.key"][..], &["--rekey", "/run/new.key", "--check-config"]] {
        let args = std::iter::once("att-tokend").chain(wrong.iter().copied());
        assert!(TokendArgs::try_parse_from(args).is_err(), "{wrong:?} is refused");
    }
    assert_eq!(TokendArgs::try_parse_from(["att-tokend", "--bogus"]).unwrap_err().kind(), ErrorKind::UnknownArgument);
}

#[test]
fn tokend_help_explains_usage_and_exit_status() {
    let tokend = tokend_command().render_long_help().to_string();
    for needle in ["--config", "/etc/att-tokend/config.toml", "--check-config", "RUST_LOG", "EXIT STATUS:"] {
        assert!(tokend.contains(needle), "att-tokend --help lacks {needle:?}:\n{tokend}");
    }
}
