//! `att-tokend --check-config` as a user runs it: each kind of mistake exits 1 with a message naming the file,
//! the line and the fix; a good config exits 0.

use std::process::Command;

use testbed::{ConfigText, Scratch};

use crate::support::bins;

const DEVICE: &str = "SensorSevenDevice0000001";

/// Runs `att-tokend --config <path> --check-config`.
fn check(path: &std::path::Path) -> std::process::Output {
    Command::new(&bins().tokend)
        .arg("--config")
        .arg(path)
        .arg("--check-config")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("run att-tokend --check-config")
}

/// The 1-based line of the first line containing `marker`.
fn line_of(text: &str, marker: &str) -> usize {
    text.lines().position(|l| l.contains(marker)).expect("marker in config") + 1
}

#[test]
fn each_kind_of_bad_config_is_named_with_file_line_and_fix() {
    let scratch = Scratch::new("e2e-config").unwrap();
    let good_secret = scratch.write("good.token", "maker:4GoodDeviceToken", 0o600).unwrap();
    let open_secret = scratch.write("open.token", "maker:4OpenDeviceToken", 0o644).unwrap();
    let missing_secret = scratch.path().join("missing.token");
    let device = |name: &str, file: &std::path::Path| ConfigText::new().device(name, DEVICE, file).to_string();
    let head = format!("{}\n", ConfigText::new().daemon("session", &scratch.path().join("state")));

    let good = format!("{head}[refresh]\nsafety_margin = \"90s\"\n\n{}", device("sensor-7", &good_secret));
    let good_path = scratch.write("good.toml", &good, 0o600).unwrap();
    let out = check(&good_path);
    assert!(out.status.success(), "a good config passes --check-config: {}", String::from_utf8_lossy(&out.stderr));

    // (what, config text, marker on the offending line, words of the fix that the message must hold)
    let cases: Vec<(&str, String, &str, &[&str])> = vec![
        ("unknown key", format!("{head}[refresh]\nsafety_marjin = \"90s\"\n"), "safety_marjin", &["safety_margin"]),
        ("bad duration", format!("{head}[refresh]\nsafety_margin = \"90 seconds\"\n"), "90 seconds", &["\"90s\""]),
        (
            "duration too long",
            format!("{head}[refresh]\nretry_max = \"99999999999d\"\n"),
            "99999999999d",
            &["retry_max", "must be at most \"7d\""],
        ),
        (
            "duplicate name",
            format!(
                "{head}{}\n{}",
                device("sensor-7", &good_secret),
                device("sensor-7", &good_secret).replace("[[token]]", "[[token]] # second")
            ),
            "# second",
            &["sensor-7"],
        ),
        ("world-readable secret file", format!("{head}{}", device("open", &open_secret)), "open.token", &["chmod 600"]),
        (
            "missing secret file",
            format!("{head}{}", device("gone", &missing_secret)),
            "missing.token",
            &["missing.token"],
        ),
        (
            "bad cron",
            format!("{head}[maintenance]\ntoken_health = \"every hour\"\n"),
            "every hour",
            &["sec min hour", "\"off\""],
        ),
        (
            "unknown reader",
            format!("{head}{}readers = {{ users = [\"no-such-user-e2e\"] }}\n", device("sensor-7", &good_secret)),
            "no-such-user-e2e",
            &["no-such-user-e2e"],
        ),
        (
            "bad device id",
            format!("{head}{}", device("sensor-7", &good_secret).replace(DEVICE, "too-short")),
            "too-short",
            &["24"],
        ),
    ];
    for (what, text, marker, fix) in cases {
        let path = scratch.write(&format!("{}.toml", what.replace(' ', "-")), &text, 0o600).unwrap();
        let out = check(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: --check-config exits 1; stderr: {stderr}");
        let mut expected_line = line_of(&text, marker);
        if what == "duplicate name" {
            // The second table's name is on the line after its header.
            expected_line += 1;
        }
        let place = format!("{}:{expected_line}", path.display());
        assert!(stderr.contains(&place), "{what}: the message names {place}; got: {stderr}");
        for word in fix {
            assert!(stderr.contains(word), "{what}: the message holds the fix ({word:?}); got: {stderr}");
        }
        assert!(!stderr.contains("maker:4"), "{what}: the message never shows a secret; got: {stderr}");
    }
}
