//! Unit tests of the config: parsing, validation and the messages, without a file system (`tests/config_files.rs`
//! reads real files).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use token_model::ids::TokenKind;

use super::*;

const FILE: &str = "/etc/att-tokend/config.toml";
const DEV: &str = "abcdefghijklmnopqrstuvwx";
const GROUND: &str = "ABCDEFGHIJKLMNOPQRSTUVWX";

fn parse_ok(text: &str) -> Config {
    parse(text, Path::new(FILE)).unwrap_or_else(|e| panic!("{e}"))
}

/// Parses `text`, expects an error at `line`, and checks the message has every one of `words`.
fn expect_error(text: &str, line: usize, words: &[&str]) -> String {
    let error = parse(text, Path::new(FILE)).expect_err("config should be rejected");
    let message = error.to_string();
    assert!(message.starts_with(&format!("{FILE}:{line}: ")), "wrong file/line: {message}");
    for word in words {
        assert!(message.contains(word), "missing {word:?} in: {message}");
    }
    message
}

#[test]
fn token_files_are_checked_where_they_are_written() {
    let user = |files: &str| format!("[[token]]\nname = \"main\"\nkind = \"user\"\nfiles = {files}\n");
    let config = parse_ok(&format!(
        "{}\n[[token]]\nname = \"d\"\nkind = \"device\"\ndevice_id = \"{DEV}\"\ntoken_file = \"/t\"\nfiles = [\"/srv/d.token\"]\n",
        user("[\"/run/att-tokend/main.token\", \"/run/telegraf/att.token\"]")
    ));
    assert_eq!(config.tokens[0].files, [Path::new("/run/att-tokend/main.token"), Path::new("/run/telegraf/att.token")]);
    assert_eq!(config.tokens[1].files, [Path::new("/srv/d.token")], "any kind of token may have files");
    assert_eq!(config.tokens[0].line_of("files"), 4);
    assert!(parse_ok(&user("[]")).tokens[0].files.is_empty());

    expect_error(&user("[\"main.token\"]"), 4, &["\"main.token\"", "absolute path", "/run/att-tokend/"]);
    expect_error(&user("[\"/run/att-tokend/\"]"), 4, &["names a directory"]);
    expect_error(&user("[\"/run/att-tokend/../x\"]"), 4, &["without \".\", \"..\""]);
    expect_error(&user("[\"/run/./x\"]"), 4, &["\"..\""]);
    expect_error(&user("[\"/run/a\", \"/run/a\"]"), 4, &["named twice"]);
    expect_error(&user("[\"/run/a\\nb\"]"), 4, &["control character"]);
    expect_error(&user("\"/run/a\""), 4, &["expected a sequence"]);
    let many: Vec<String> = (0..=MAX_FILES_PER_TOKEN).map(|i| format!("\"/run/att-tokend/{i}\"")).collect();
    expect_error(&user(&format!("[{}]", many.join(", "))), 4, &["9 files", "more than the 8"]);
    expect_error(&user("[\"/var/lib/att-tokend/main.token\"]"), 4, &["inside the state directory", "/run/att-tokend/"]);
    expect_error(
        &format!("[daemon]\nstate_dir = \"/srv/state\"\n{}", user("[\"/srv/state/x/main.token\"]")),
        6,
        &["inside the state directory \"/srv/state\""],
    );
    // Across tokens, and against the files the daemon reads.
    expect_error(
        &format!(
            "{}\n[[token]]\nname = \"d\"\nkind = \"device\"\ndevice_id = \"{DEV}\"\ntoken_file = \"/t\"\nfiles = [\"/run/a\"]\n",
            user("[\"/run/a\"]")
        ),
        11,
        &["[[token]] \"d\"", "also a file of token \"main\"", "its own files"],
    );
    expect_error(
        &format!(
            "[[token]]\nname = \"d\"\nkind = \"device\"\ndevice_id = \"{DEV}\"\ntoken_file = \"/t\"\nfiles = [\"/t\"]\n"
        ),
        6,
        &["is a token_file, which the daemon reads"],
    );
    expect_error(&user(&format!("[\"{FILE}\"]")), 4, &["the config file itself"]);
}

#[test]
fn empty_config_gets_the_contract_defaults() {
    let config = parse_ok("");
    assert_eq!(config.api.url(), "https://api.allthingstalk.io");
    assert_eq!(config.api.client_id.as_str(), "web");
    assert_eq!(config.api.mfa, MfaFields::default());
    assert_eq!(config.api.mfa.uid_field, "mfa_uid");
    assert_eq!(config.daemon.bus, Bus::System);
    assert_eq!(config.daemon.state_dir, Path::new("/var/lib/att-tokend"));
    assert_eq!(config.refresh.refresh_token_lifetime, Duration::from_secs(60 * 86400));
    assert_eq!(config.refresh.safety_margin, Duration::from_secs(60));
    assert_eq!(config.refresh.warn_before, vec![Duration::from_secs(7 * 86400), Duration::from_secs(86400)]);
    assert_eq!(config.maintenance, MaintenanceConfig::default());
    assert!(config.tokens.is_empty());
}

#[test]
fn the_contract_example_parses() {
    let text = format!(
        r#"
[api]
url = "https://api.allthingstalk.io"
client_id = "web"

[api.mfa]
grant_type = "mfa"

[daemon]
bus = "system"
state_dir = "/var/lib/att-tokend"
admins = {{ users = [], groups = [] }}

[refresh]
refresh_token_lifetime = "60d"

[[token]]
name = "main"
kind = "user"
readers = {{ users = ["nodered", 1001], groups = ["att-tokens"] }}
username = "alice@example.com"
password_file = "/etc/att-tokend/main.password"
totp_secret_file = "/etc/att-tokend/main.totp"

[[token]]
name = "sensor-7"
kind = "device"
device_id = "{DEV}"
token_file = "/etc/att-tokend/sensor-7.token"

[[token]]
name = "site-a"
kind = "ground"
ground_id = "{GROUND}"
credential = "site-a"
devices = ["{DEV}"]
"#
    );
    let config = parse_ok(&text);
    assert_eq!(config.tokens.len(), 3);
    let main = &config.tokens[0];
    assert_eq!(main.kind(), TokenKind::User);
    assert_eq!(main.line, 18);
    assert_eq!(main.readers.users, vec![Principal::Name("nodered".into()), Principal::Id(1001)]);
    assert_eq!(main.readers.groups, vec![Principal::Name("att-tokens".into())]);
    let TokenSpec::User(user) = &main.spec else { panic!("user expected") };
    assert_eq!(user.username.as_deref(), Some("alice@example.com"));
    assert!(
        matches!(&config.tokens[1].spec, TokenSpec::Device { device_id, secret: SecretSource::File(_) } if device_id.as_str() == DEV)
    );
    let TokenSpec::Ground { devices, secret, .. } = &config.tokens[2].spec else { panic!("ground expected") };
    assert_eq!(devices.as_ref().map(Vec::len), Some(1));
    assert_eq!(secret, &SecretSource::Credential("site-a".into()));
    assert_eq!(config.token("site-a").map(TokenConfig::kind), Some(TokenKind::Ground));
}

#[test]
fn unknown_key_names_line_table_and_valid_keys() {
    let text = "[[token]]\nname = \"main\"\nkind = \"user\"\nusename = \"x\"\n";
    let message = expect_error(
        text,
        4,
        &["unknown key \"usename\"", "[[token]] \"main\"", "valid keys are", "username", "did you mean \"username\""],
    );
    assert!(!message.contains('`'), "{message}");
}

#[test]
fn unknown_key_in_a_plain_table_and_at_top_level() {
    expect_error(
        "[daemon]\nbus = \"system\"\nstatedir = \"/x\"\n",
        3,
        &["unknown key \"statedir\"", "[daemon]", "state_dir"],
    );
    expect_error("tokens = []\n", 1, &["unknown key \"tokens\"", "top level", "token"]);
    expect_error("[api.mfa]\nuid = \"x\"\n", 2, &["unknown key \"uid\"", "[api.mfa]", "uid_field"]);
    expect_error("[deamon]\n", 1, &["unknown key \"deamon\"", "daemon"]);
}

#[test]
fn bad_durations_name_the_format() {
    for bad in ["\"90\"", "\"1.5h\"", "\"60 d\"", "\"10w\"", "\"\"", "\"d\"", "\"-5s\""] {
        expect_error(
            &format!("[refresh]\n\nrefresh_token_lifetime = {bad}\n"),
            3,
            &["not a duration", "\"90s\"", "\"60d\""],
        );
    }
    expect_error("[refresh]\nsafety_margin = 60\n", 2, &["need a unit", "\"60s\""]);
    expect_error("[api]\nrequest_timeout = \"5x\"\n", 2, &["not a duration"]);
    expect_error("[refresh]\nrefresh_token_lifetime = \"30m\"\n", 2, &["at least \"1h\""]);
    expect_error("[refresh]\nretry_initial = \"10m\"\nretry_max = \"1m\"\n", 3, &["retry_max", "at least as long"]);
}

#[test]
fn every_duration_has_an_upper_bound_so_no_deadline_can_overflow() {
    // (section, key, the largest value accepted, the same plus one unit)
    let cases = [
        ("api", "connect_timeout = ", "\"5m\"", "\"301s\""),
        ("api", "request_timeout = ", "\"10m\"", "\"601s\""),
        ("refresh", "refresh_token_lifetime = ", "\"3650d\"", "\"3651d\""),
        ("refresh", "safety_margin = ", "\"1d\"", "\"25h\""),
        ("refresh", "warn_before = ", "[\"3650d\"]", "[\"1d\", \"3651d\"]"),
        ("refresh", "retry_initial = ", "\"1d\"", "\"25h\""),
        ("refresh", "retry_max = ", "\"7d\"", "\"8d\""),
    ];
    for (section, key, most, too_long) in cases {
        parse_ok(&format!("[{section}]\n{key}{most}\n"));
        let name = key.trim_end_matches(" = ");
        let message = expect_error(
            &format!("[{section}]\n{key}{too_long}\n"),
            2,
            &[name, "must be at most", most.trim_matches(['[', ']'])],
        );
        assert!(message.contains(&format!("[{section}]")), "{message}");
    }
    // The value that used to abort the daemon at its first retry.
    expect_error("[refresh]\nretry_max = \"99999999999d\"\n", 2, &["retry_max", "must be at most \"7d\""]);
}

#[test]
fn durations_parse_strictly() {
    assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("45m"), Ok(Duration::from_secs(2700)));
    assert_eq!(parse_duration("36h"), Ok(Duration::from_secs(129_600)));
    assert_eq!(parse_duration("60d"), Ok(Duration::from_secs(5_184_000)));
    assert!(parse_duration("99999999999999999999d").is_err());
    assert!(parse_duration("5S").is_err());
    let config = parse_ok("[refresh]\nwarn_before = [\"1d\", \"14d\", \"1d\"]\n");
    assert_eq!(config.refresh.warn_before, vec![Duration::from_secs(14 * 86400), Duration::from_secs(86400)]);
}

#[test]
fn duplicate_names_point_at_both() {
    let text = format!(
        "[[token]]\nname = \"main\"\nkind = \"user\"\n\n[[token]]\nname = \"main\"\nkind = \"device\"\ndevice_id = \"{DEV}\"\ntoken_file = \"/t\"\n"
    );
    expect_error(&text, 6, &["\"main\" is already used", "line 2", "unique name"]);
}

#[test]
fn bad_names_ids_and_kinds() {
    expect_error("[[token]]\nname = \"my token\"\nkind = \"user\"\n", 2, &["A-Z, a-z, 0-9"]);
    expect_error(
        "[[token]]\nname = \"x\"\nkind = \"admin\"\n",
        3,
        &["\"admin\"", "\"user\", \"device\" or \"ground\""],
    );
    expect_error(
        "[[token]]\nname = \"x\"\nkind = \"device\"\ndevice_id = \"short\"\ntoken_file = \"/t\"\n",
        4,
        &["device id", "24"],
    );
    expect_error("[[token]]\nkind = \"user\"\n", 2, &["no name", "add name"]);
    expect_error("[[token]]\nname = \"x\"\n", 2, &["no kind", "kind = \"user\""]);
    expect_error("[api]\nclient_id = \"we b\"\n", 2, &["client id", "\"web\""]);
}

#[test]
fn kind_specific_keys() {
    // A device key on a user token.
    expect_error(
        &format!("[[token]]\nname = \"u\"\nkind = \"user\"\ndevice_id = \"{DEV}\"\n"),
        4,
        &["\"device_id\" does not apply to a user token", "remove it"],
    );
    // Device without an id.
    expect_error(
        "[[token]]\nname = \"d\"\nkind = \"device\"\ntoken_file = \"/t\"\n",
        2,
        &["no device_id", "add device_id"],
    );
    // Device without a secret, and with both.
    expect_error(
        &format!("[[token]]\nname = \"d\"\nkind = \"device\"\ndevice_id = \"{DEV}\"\n"),
        2,
        &["neither token_file nor credential", "token_file = \"/etc/att-tokend/d.token\""],
    );
    expect_error(
        &format!(
            "[[token]]\nname = \"d\"\nkind = \"device\"\ndevice_id = \"{DEV}\"\ntoken_file = \"/t\"\ncredential = \"d\"\n"
        ),
        6,
        &["keep exactly one"],
    );
    // Ground without an id; devices on a device token.
    expect_error("[[token]]\nname = \"g\"\nkind = \"ground\"\ntoken_file = \"/t\"\n", 2, &["no ground_id"]);
    expect_error(
        &format!(
            "[[token]]\nname = \"d\"\nkind = \"device\"\ndevice_id = \"{DEV}\"\ntoken_file = \"/t\"\ndevices = []\n"
        ),
        6,
        &["\"devices\" does not apply to a device token", "ground"],
    );
    // User: password_file needs username, totp needs password.
    expect_error(
        "[[token]]\nname = \"u\"\nkind = \"user\"\npassword_file = \"/p\"\n",
        4,
        &["password_file needs username", "add username"],
    );
    expect_error(
        "[[token]]\nname = \"u\"\nkind = \"user\"\nusername = \"a\"\ntotp_secret_file = \"/s\"\n",
        5,
        &["totp_secret_file needs", "password_file"],
    );
    // A device listed twice in a ground.
    expect_error(
        &format!(
            "[[token]]\nname = \"g\"\nkind = \"ground\"\nground_id = \"{GROUND}\"\ntoken_file = \"/t\"\ndevices = [\"{DEV}\", \"{DEV}\"]\n"
        ),
        6,
        &["appears twice in devices", "remove the repeat"],
    );
    // Relative paths.
    expect_error(
        "[[token]]\nname = \"u\"\nkind = \"user\"\nusername = \"a\"\npassword_file = \"p.txt\"\n",
        5,
        &["absolute path"],
    );
    expect_error(
        "[[token]]\nname = \"d\"\nkind = \"device\"\ndevice_id = \"abcdefghijklmnopqrstuvwx\"\ncredential = \"../x\"\n",
        5,
        &["LoadCredential"],
    );
}

#[test]
fn bus_values() {
    assert_eq!(parse_ok("[daemon]\nbus = \"session\"\n").daemon.bus, Bus::Session);
    assert_eq!(parse_ok("[daemon]\nbus = \"unix:path=/run/x\"\n").daemon.bus, Bus::Address("unix:path=/run/x".into()));
    expect_error("[daemon]\nbus = \"sytem\"\n", 2, &["\"sytem\"", "\"system\", \"session\" or a D-Bus address"]);
}

#[test]
fn principals_and_url_and_mfa() {
    expect_error("[daemon]\nadmins = { users = [\"a b\"] }\n", 2, &["not a user or group name", "numeric id"]);
    expect_error("[daemon]\nadmins = { users = [-1] }\n", 2, &["not a uid or gid"]);
    expect_error("[daemon]\nadmins = { people = [] }\n", 2, &["unknown key \"people\"", "users, groups"]);
    expect_error("[api]\nurl = \"api.allthingstalk.io\"\n", 2, &["not a base URL", "https://"]);
    expect_error("[api.mfa]\ncode_field = \"\"\n", 2, &["code_field", "non-empty"]);
    assert_eq!(parse_ok("[api]\nurl = \"http://127.0.0.1:8080/\"\n").api.url(), "http://127.0.0.1:8080");
}

#[test]
fn an_api_url_the_client_would_refuse_is_refused_with_its_line() {
    // Plain http to the cloud would send passwords in clear: the client refuses it, so the config does, at once.
    expect_error("\n[api]\nurl = \"http://api.allthingstalk.io\"\n", 3, &["plain http", "use https://"]);
    expect_error("[api]\nurl = \"https://user:pw@api.allthingstalk.io\"\n", 2, &["user name or password"]);
    expect_error("[api]\nurl = \"https://api.allthingstalk.io/?x=1\"\n", 2, &["query or fragment"]);
    assert_eq!(parse_ok("[api]\nurl = \"http://localhost:8080\"\n").api.url(), "http://localhost:8080");
}

#[test]
fn api_settings_the_client_would_refuse_are_refused_at_their_line() {
    // login-flow checks its own settings; the config says so where the key is written, not the start without a line.
    expect_error(
        "[api]\nurl = \"https://x.allthingstalk.io\"\nconnect_timeout = \"0s\"\n",
        3,
        &["[api]", "longer than zero"],
    );
    expect_error("[api]\nrequest_timeout = \"0s\"\n", 2, &["longer than zero"]);
    expect_error("[api.mfa]\n\ngrant_type = \"a\\u0001b\"\n", 3, &["[api.mfa]", "control characters"]);
}

#[test]
fn maintenance_schedules() {
    let config =
        parse_ok("[maintenance]\ntoken_health = \"*/10 * * * *\"\nground_sync = false\nlapse_review = \"off\"\n");
    assert_eq!(config.maintenance.token_health, Schedule::Cron("0 */10 * * * *".into()));
    assert_eq!(config.maintenance.ground_sync, Schedule::Off);
    assert_eq!(config.maintenance.lapse_review, Schedule::Off);
    expect_error("[maintenance]\n\ntoken_health = \"every hour\"\n", 3, &["not a cron expression", "\"off\""]);
    expect_error("[maintenance]\nground_sync = \"0 99 * * * *\"\n", 2, &["not a cron expression"]);
    expect_error("[maintenance]\nlapse_review = true\n", 2, &["false / \"off\""]);
    for default in [&MaintenanceConfig::default().token_health, &MaintenanceConfig::default().ground_sync] {
        let Schedule::Cron(expr) = default else { panic!("default on") };
        assert_eq!(parse_cron(expr).as_deref(), Ok(expr.as_str()));
    }
}

#[test]
fn syntax_errors_have_a_line() {
    expect_error("[daemon]\nbus = system\n", 2, &["TOML"]);
    expect_error("[token]\nname = \"x\"\n", 1, &["[[token]]"]);
}

#[test]
fn root_resolves_and_unknown_names_fail_clearly() {
    let config = parse_ok(
        "[daemon]\nadmins = { users = [\"root\", 4242], groups = [\"root\"] }\n[[token]]\nname = \"main\"\nkind = \"user\"\nreaders = { users = [\"no-such-user-att\"] }\n",
    );
    let admins = config.daemon.admins.resolve(&config.path, "admins").unwrap();
    assert_eq!(admins.uids, BTreeSet::from([0, 4242]));
    assert_eq!(admins.gids, BTreeSet::from([0]));
    let message = resolve_principals(&config).unwrap_err().to_string();
    assert!(message.starts_with(&format!("{FILE}:6: ")), "{message}");
    assert!(message.contains("no user named \"no-such-user-att\"") && message.contains("useradd"), "{message}");
    let groups = Principals { groups: vec![Principal::Name("no-such-group-att".into())], ..Default::default() };
    let message = groups.resolve(Path::new(FILE), "admins").unwrap_err().to_string();
    assert!(message.contains("groupadd"), "{message}");
}

#[test]
fn credentials_need_the_directory() {
    let source = SecretSource::Credential("site-a".into());
    let message = source.resolve_in(None).unwrap_err();
    assert!(message.contains("LoadCredential=site-a") && message.contains("token_file"), "{message}");
    assert_eq!(source.resolve_in(Some(Path::new("/run/c"))).unwrap(), Path::new("/run/c/site-a"));
}

#[test]
fn a_margin_shorter_than_one_request_is_advised_against() {
    assert!(parse_ok("").advice().is_empty(), "the defaults need no advice");
    assert!(parse_ok("[daemon]\ntrust_kernel_time_sync = false\n").advice().is_empty());
    let advice = parse_ok("[refresh]\nsafety_margin = \"10s\"\n").advice();
    assert_eq!(advice.len(), 1, "{advice:?}");
    assert!(advice[0].contains("safety_margin (10 s)") && advice[0].contains("\"20s\""), "{advice:?}");
    let fitted =
        parse_ok("[api]\nconnect_timeout = \"2s\"\nrequest_timeout = \"5s\"\n[refresh]\nsafety_margin = \"10s\"\n");
    assert!(fitted.advice().is_empty(), "shorter timeouts fit the margin");
}

#[test]
fn a_name_inside_a_multi_line_string_is_text_not_the_tables_name() {
    // Found by the config fuzz target: the error named the table after a line inside a string value.
    let text = "[[token]]\npassword = \"\"\"\nname = \"s3cret-Passw0rd\"\n\"\"\"\nkind = \"user\"\n";
    let message = parse(text, Path::new("/etc/att-tokend/config.toml")).unwrap_err().to_string();
    assert!(!message.contains("s3cret"), "{message}");
    assert!(message.contains("unknown key \"password\""), "{message}");
    let named = "[[token]]\nname = \"main\"\nkind = \"user\"\nbogus = 1\n";
    let message = parse(named, Path::new("/etc/att-tokend/config.toml")).unwrap_err().to_string();
    assert!(message.contains("[[token]] \"main\""), "{message}");
}

#[test]
fn fleet_settings_have_defaults_and_bad_values_say_the_range() {
    let config = parse_ok("");
    assert_eq!(config.fleet, FleetConfig::default());
    assert_eq!(config.fleet.maintenance_spread, Duration::from_secs(15 * 60));
    assert_eq!(config.fleet.startup_spread, Duration::from_secs(120));
    assert_eq!((config.fleet.request_burst, config.fleet.requests_per_minute), (10, 30));
    let off = parse_ok("[daemon]\nmaintenance_spread = \"0s\"\nstartup_spread = \"0s\"\nrequest_burst = 1000\n");
    assert_eq!((off.fleet.maintenance_spread, off.fleet.startup_spread), (Duration::ZERO, Duration::ZERO));
    assert_eq!(off.fleet.request_burst, 1000);
    expect_error("[daemon]\nrequest_burst = 0\n", 2, &["[daemon]", "from 1 to 60000", "remove the key"]);
    expect_error("\n[daemon]\nrequests_per_minute = -3\n", 3, &["-3 is not a count of requests", "from 1 to 60000"]);
    expect_error("[daemon]\nrequests_per_minute = 60001\n", 2, &["from 1 to 60000"]);
    expect_error("[daemon]\nrequest_burst = \"10\"\n", 2, &["a whole number of requests"]);
    expect_error("[daemon]\nstartup_spread = 120\n", 2, &["need a unit", "\"120s\""]);
    parse_ok("[daemon]\nmaintenance_spread = \"6h\"\nstartup_spread = \"6h\"\n");
    for key in ["maintenance_spread", "startup_spread"] {
        expect_error(&format!("[daemon]\n{key} = \"361m\"\n"), 2, &["[daemon]", "at most \"6h\"", "\"0s\" for none"]);
    }
}
