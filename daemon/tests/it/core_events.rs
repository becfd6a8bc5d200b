//! Events name their token: a status event makes its subscribers read that token again and no other, and a
//! configuration applied is one event of its own.

use std::time::Duration;

use crate::core_support::*;
use att_tokend::dbus::callers::Callers;
use att_tokend::engine::Event;
use att_tokend::prepare;
use token_model::ids::TokenName;
use token_model::secret::StaticToken;

const LONG: Duration = Duration::from_secs(60);

core_test!(
    a_status_event_writes_the_files_of_the_token_it_names_only,
    a_status_event_writes_the_files_of_the_token_it_names_only_body
);

/// Token files follow events per token: a write that failed (its directory was missing) is not tried again when
/// another token changes, only when its own token does (or at a reload).
async fn a_status_event_writes_the_files_of_the_token_it_names_only_body() {
    let cloud = fake_cloud(Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let (sensor_file, site_dir) = (dir.path().join("sensor.token"), dir.path().join("later"));
    let site_file = site_dir.join("site.token");
    let text = config_text(dir.path(), &cloud.url(), "")
        .replacen(
            &format!("device_id = \"{DEVICE}\"\n"),
            &format!("device_id = \"{DEVICE}\"\nfiles = [\"{}\"]\n", sensor_file.display()),
            1,
        )
        .replacen(
            &format!("ground_id = \"{GROUND}\"\n"),
            &format!("ground_id = \"{GROUND}\"\nfiles = [\"{}\"]\n", site_file.display()),
            1,
        );
    let harness = Harness::start(dir, &text, Callers::peer()).await;
    let manifest_dir = tempfile::tempdir().unwrap();
    let files_state = att_tokend::state_dir::StateDir::open(manifest_dir.path()).unwrap();
    att_tokend::token_files::spawn(harness.engine.clone(), files_state);
    eventually(LONG, "the device token's file", || async { sensor_file.exists().then_some(()) }).await;
    assert!(!site_file.exists(), "the ground token's directory is missing, so its file cannot be written");
    std::fs::create_dir(&site_dir).unwrap();

    // An event about sensor-7 alone: its file goes (revoked), site-a's is not looked at.
    let sensor = TokenName::new("sensor-7").unwrap();
    harness.engine.set_static_health(&sensor, &StaticToken::new(DEVICE_TOKEN), Err("revoked here".to_owned()));
    eventually(LONG, "the revoked token's file to go", || async { (!sensor_file.exists()).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!site_file.exists(), "an event about sensor-7 wrote site-a's file");

    // An event about site-a: now its file is written.
    let site = TokenName::new("site-a").unwrap();
    harness.engine.set_static_health(&site, &StaticToken::new(GROUND_TOKEN), Ok(()));
    eventually(LONG, "site-a's file after an event about it", || async { site_file.exists().then_some(()) }).await;
    assert_eq!(std::fs::read_to_string(&site_file).unwrap(), GROUND_TOKEN);
    harness.stop().await;
}

core_test!(
    a_reload_is_one_event_that_serves_the_new_set_of_tokens,
    a_reload_is_one_event_that_serves_the_new_set_of_tokens_body
);

/// A configuration applied is announced once (`Reconfigured`), not once per token, and the D-Bus side then serves
/// the new set of token objects.
async fn a_reload_is_one_event_that_serves_the_new_set_of_tokens_body() {
    let (cloud, harness) = started(Duration::from_secs(3600)).await;
    let mut events = harness.engine.subscribe();
    // The same config without site-a: static tokens have no session task, so nothing else speaks.
    let without_site = config_text(harness.dir.path(), &cloud.url(), "");
    let without_site = &without_site[..without_site.find("[[token]]\nname = \"site-a\"").unwrap()];
    let path = harness.dir.path().join("config.toml");
    std::fs::write(&path, without_site).unwrap();
    let config = att_tokend::config::load(&path).unwrap();
    harness.engine.apply(prepare::prepare(config.clone()).unwrap().engine);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut reconfigured = 0;
    while let Ok(event) = events.try_recv() {
        match event {
            Event::Reconfigured => reconfigured += 1,
            // The user token's session task speaks for itself (at its start, and when rebound by the reload).
            Event::StatusChanged(name) if name.as_str() == "main" => {}
            other => panic!("the reload announced itself with its own event only, not {other:?}"),
        }
    }
    assert_eq!(reconfigured, 1, "one event for the whole reload");
    let site_object = harness.token("site-a").await;
    eventually(LONG, "site-a's object to go", || {
        let site_object = site_object.clone();
        async move {
            let state = site_object.state().await;
            (state.is_err() && error_name(&state) == "org.freedesktop.DBus.Error.UnknownObject").then_some(())
        }
    })
    .await;
    let names: Vec<String> = harness.agent().await.list_tokens().await.unwrap().into_iter().map(|t| t.0).collect();
    assert_eq!(names, ["main", "sensor-7"]);
    harness.stop().await;
}
