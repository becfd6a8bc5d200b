//! The daemon core over a peer-to-peer D-Bus pair, against the fake cloud on loopback: login with MFA,
//! refresh cycles, shared refreshes, outages, verdicts, revoked tokens, access control, restarts, and events per
//! token (a status event touches its token's state only; a reload is one event of its own).

use std::time::Duration;

use crate::core_support::*;
use att_tokend::access::Caller;
use att_tokend::dbus::callers::Callers;
use att_tokend::maintenance;
use att_tokend::prepare;
use fake_cloud::{Fault, FaultKind};
use futures_util::StreamExt;

const LONG: Duration = Duration::from_secs(60);

core_test!(
    static_tokens_are_served_to_readers_and_denied_to_others,
    static_tokens_are_served_to_readers_and_denied_to_others_body
);

async fn static_tokens_are_served_to_readers_and_denied_to_others_body() {
    let (_cloud, harness) = started(Duration::from_secs(3600)).await;
    let agent = harness.agent().await;

    let (token, expires_at) = agent.get_token("sensor-7").await.expect("a reader gets the device token");
    assert_eq!((token.as_str(), expires_at), (DEVICE_TOKEN, 0));
    assert_eq!(error_name(&agent.get_token("nope").await), "io.allthingstalk.TokenAgent1.Error.UnknownToken");
    assert_eq!(error_name(&agent.get_token("bad/name").await), "org.freedesktop.DBus.Error.InvalidArgs");
    assert_eq!(error_name(&agent.get_token("main").await), "io.allthingstalk.TokenAgent1.Error.NeedsLogin");
    assert_eq!(
        error_name(&agent.get_token_valid_for("sensor-7", 10_000_000).await),
        "org.freedesktop.DBus.Error.InvalidArgs"
    );
    assert_eq!(error_name(&agent.get_token_for_device("short").await), "org.freedesktop.DBus.Error.InvalidArgs");
    assert_eq!(
        error_name(&agent.get_token_for_device(OTHER_DEVICE).await),
        "io.allthingstalk.TokenAgent1.Error.NoTokenForDevice"
    );
    let (name, token, _) = agent.get_token_for_device(DEVICE).await.expect("the device token fits");
    assert_eq!((name.as_str(), token.as_str()), ("sensor-7", DEVICE_TOKEN));

    let list = agent.list_tokens().await.unwrap();
    let names: Vec<&str> = list.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(names, ["main", "sensor-7", "site-a"]);
    assert_eq!(list[0].3, "needs-login");
    assert!(list[0].4, "a session that needs a login needs attention");
    assert_eq!((list[1].1.as_str(), list[1].3.as_str()), ("device", "valid"));

    let sensor = harness.token("sensor-7").await;
    assert_eq!(sensor.kind().await.unwrap(), "device");
    assert_eq!(sensor.state().await.unwrap(), "valid");

    // The same service seen by a caller who is neither reader nor admin.
    let (_server, stranger) = pair(&harness.engine, Callers::fixed(Caller::new(4242, [4242]))).await;
    let stranger = agent_on(&stranger).await;
    let denied = stranger.get_token("sensor-7").await;
    assert_eq!(error_name(&denied), "org.freedesktop.DBus.Error.AccessDenied");
    let message = token_agent::error_message(&denied.unwrap_err());
    assert!(message.contains("readers"), "the message says what to do: {message}");
    assert!(stranger.list_tokens().await.unwrap().is_empty(), "a stranger sees no token");
    assert_eq!(
        error_name(&stranger.get_token_for_device(DEVICE).await),
        "io.allthingstalk.TokenAgent1.Error.NoTokenForDevice"
    );
    assert_eq!(error_name(&stranger.refresh("main").await), "org.freedesktop.DBus.Error.AccessDenied");
    assert_eq!(
        error_name(&stranger.login("main", USER, PASSWORD, "").await),
        "org.freedesktop.DBus.Error.AccessDenied"
    );
    harness.stop().await;
}

async fn agent_on(client: &zbus::Connection) -> token_agent::TokenAgentProxy<'static> {
    crate::core_support::agent(client).await
}

core_test!(login_with_mfa_then_tokens_survive_refresh_cycles, login_with_mfa_then_tokens_survive_refresh_cycles_body);

async fn login_with_mfa_then_tokens_survive_refresh_cycles_body() {
    // 12 s tokens: refreshed at 75-80 % of their life, with about 1.5 s before the 1 s margin, which a refresh
    // (HTTP round trip and an fsync'd state file) needs on a loaded machine.
    let (cloud, harness) = started(Duration::from_secs(12)).await;
    let agent = harness.agent().await;
    let mut changes = agent.receive_token_changed().await.unwrap();
    let main = harness.token("main").await;

    assert_eq!(
        error_name(&agent.login("main", USER, PASSWORD, "").await),
        "io.allthingstalk.TokenAgent1.Error.MfaRequired"
    );
    assert_eq!(
        error_name(&agent.login("main", USER, "wrong", "").await),
        "io.allthingstalk.TokenAgent1.Error.LoginFailed"
    );
    let good = cloud.control().current_totp(USER).unwrap();
    let bad = if good == "000000" { "111111" } else { "000000" };
    assert_eq!(
        error_name(&agent.login("main", USER, PASSWORD, bad).await),
        "io.allthingstalk.TokenAgent1.Error.MfaFailed"
    );
    assert_eq!(
        error_name(&agent.login("main", USER, PASSWORD, "12ab").await),
        "org.freedesktop.DBus.Error.InvalidArgs"
    );

    let expires_at = login(&harness, &cloud).await;
    assert!(expires_at > 0);
    let logins = cloud.control().counters().password_grants;
    let (first, _) = agent.get_token("main").await.expect("a token after login");
    assert!(cloud.control().is_access_token_valid(&first));
    let signal = changes.next().await.expect("TokenChanged after login");
    let args = signal.args().unwrap();
    assert_eq!(args.name, "main");
    assert!(!format!("{:?}", signal.message()).contains(&first), "signals never carry the token");
    assert_eq!(main.state().await.unwrap(), "valid");
    assert!(main.refresh_token_expires_at().await.unwrap() > expires_at);
    assert!(main.next_refresh_at().await.unwrap() >= expires_at - 5);

    // Two refresh cycles by plan; every token handed out is one the cloud accepts.
    let mut seen = vec![first];
    let started = std::time::Instant::now();
    while seen.len() < 3 {
        assert!(started.elapsed() < LONG, "timed out waiting for two planned refreshes");
        let (token, _) = agent.get_token("main").await.expect("the token stays available across refreshes");
        assert!(cloud.control().is_access_token_valid(&token), "a served token is valid at the cloud");
        if !seen.contains(&token) {
            seen.push(token);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counters = cloud.control().counters();
    assert!(counters.refreshes_ok >= 2, "{counters:?}");
    assert_eq!(counters.refresh_reuses, 0, "a refresh token is never used twice");
    assert_eq!(counters.password_grants, logins, "refreshes need no new login");
    harness.stop().await;
}

core_test!(concurrent_valid_for_calls_share_one_refresh, concurrent_valid_for_calls_share_one_refresh_body);

async fn concurrent_valid_for_calls_share_one_refresh_body() {
    let (cloud, harness) = started(Duration::from_secs(12)).await;
    let agent = harness.agent().await;
    login(&harness, &cloud).await;
    let (first, _) = agent.get_token("main").await.unwrap();
    // Let over half of the token's 11 s pass (a caller may make it refresh early only then) so that 5 more
    // seconds cannot be had without a refresh (the planned refresh is at 75-80 % of the life, later than this).
    tokio::time::sleep(Duration::from_secs(6)).await;
    cloud.control().reset_counters();
    let calls = (0..8).map(|_| {
        let agent = agent.clone();
        async move { agent.get_token_valid_for("main", 5).await }
    });
    let results = futures_util::future::join_all(calls).await;
    let tokens: Vec<String> = results.into_iter().map(|r| r.expect("a fresh token").0).collect();
    assert!(tokens.iter().all(|t| *t == tokens[0]), "every caller got the same fresh token");
    assert_ne!(tokens[0], first, "the token was refreshed");
    let counters = cloud.control().counters();
    assert_eq!(counters.refreshes, 1, "one refresh for eight concurrent calls: {counters:?}");
    assert_eq!(counters.max_concurrent_refreshes, 1);
    // A second call finds the fresh token without refreshing.
    agent.get_token_valid_for("main", 5).await.unwrap();
    assert_eq!(cloud.control().counters().refreshes, 1);
    // More than a fresh token lives (12 s, served until 1 s before expiry) is refused without a refresh.
    let too_long = agent.get_token_valid_for("main", 11).await;
    assert_eq!(error_name(&too_long), "org.freedesktop.DBus.Error.InvalidArgs");
    let message = token_agent::error_message(&too_long.unwrap_err());
    assert!(message.contains("access tokens live") && message.contains("ask for at most"), "{message}");
    assert_eq!(cloud.control().counters().refreshes, 1, "no refresh is spent on a wish no token can meet");
    harness.stop().await;
}

core_test!(
    outage_serves_last_good_token_then_unavailable_then_recovers,
    outage_serves_last_good_token_then_unavailable_then_recovers_body
);

async fn outage_serves_last_good_token_then_unavailable_then_recovers_body() {
    let (cloud, harness) = started(Duration::from_secs(8)).await;
    let agent = harness.agent().await;
    let main = harness.token("main").await;
    // Every State the object announces, in order (PropertiesChanged, so no state is missed by polling).
    let cached = harness.cached_token("main").await;
    let mut state_changes = cached.receive_state_changed().await;
    let states = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let recorder = states.clone();
    tokio::spawn(async move {
        while let Some(change) = state_changes.next().await {
            if let Ok(state) = change.get().await {
                recorder.lock().unwrap().push(state);
            }
        }
    });
    login(&harness, &cloud).await;
    let (good, expires_at) = agent.get_token("main").await.unwrap();
    cloud.control().inject_fault(
        Fault::new(FaultKind::ServiceUnavailable).for_duration(Duration::from_secs(16)).on_path("/login"),
    );

    // While the cloud is down the last good token is served: a failed refresh leaves it in service.
    eventually(LONG, "a failed refresh while the token is still served", || {
        let agent = agent.clone();
        let cloud = &cloud;
        let good = good.clone();
        async move {
            let failed = cloud.control().counters().faults_applied > 0;
            let (served, _) = agent.get_token("main").await.expect("the last good token is still served");
            assert_eq!(served, good);
            failed.then_some(())
        }
    })
    .await;
    // The cloud counts the fault before the daemon has read the failed reply: LastError follows shortly.
    eventually(LONG, "the failed refresh in LastError", || {
        let main = main.clone();
        async move { (!main.last_error().await.unwrap().is_empty()).then_some(()) }
    })
    .await;

    // Never after its safety margin: then Unavailable, state expired.
    let name = eventually(LONG, "Unavailable once the token lapsed", || {
        let agent = agent.clone();
        let good = good.clone();
        async move {
            match agent.get_token("main").await {
                Ok((token, _)) => {
                    assert_eq!(token, good);
                    None
                }
                Err(e) => Some(token_agent::error_name(&e).unwrap_or_default()),
            }
        }
    })
    .await;
    assert_eq!(name, "io.allthingstalk.TokenAgent1.Error.Unavailable");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(now >= expires_at - 2, "served until the margin (1 s), not earlier: now {now}, expiry {expires_at}");
    // GetToken refuses at the deadline itself; the session's timer publishes `expired` a moment later.
    eventually(LONG, "state expired once the token lapsed", || {
        let main = main.clone();
        async move { (main.state().await.ok()? == "expired").then_some(()) }
    })
    .await;

    // The outage ends; the daemon recovers by itself.
    let (fresh, _) = eventually(LONG, "recovery after the outage", || {
        let agent = agent.clone();
        async move { agent.get_token("main").await.ok() }
    })
    .await;
    assert_ne!(fresh, good);
    assert!(cloud.control().is_access_token_valid(&fresh));
    assert_eq!(main.state().await.unwrap(), "valid");
    assert_eq!(cloud.control().counters().password_grants, 1, "no new login was needed");
    let states = states.lock().unwrap().clone();
    let position = |state: &str| states.iter().position(|s| s == state);
    let (retrying, expired) = (position("retrying"), position("expired"));
    assert!(retrying.is_some() && expired.is_some() && retrying < expired, "states announced: {states:?}");
    harness.stop().await;
}

core_test!(
    rejected_refresh_token_needs_login_and_raises_attention,
    rejected_refresh_token_needs_login_and_raises_attention_body
);

async fn rejected_refresh_token_needs_login_and_raises_attention_body() {
    let (cloud, harness) = started(Duration::from_secs(3600)).await;
    let agent = harness.agent().await;
    let main = harness.token("main").await;
    let mut attention = agent.receive_attention_needed().await.unwrap();
    let cached = harness.cached_token("main").await;
    let mut state_changes = cached.receive_state_changed().await;
    login(&harness, &cloud).await;
    assert!(cloud.control().revoke_user_sessions(USER) > 0);

    let refused = step("Refresh with a rejected refresh token", agent.refresh("main")).await;
    assert_eq!(error_name(&refused), "io.allthingstalk.TokenAgent1.Error.NeedsLogin");
    let signal = step("AttentionNeeded after the verdict", attention.next()).await.expect("AttentionNeeded");
    let args = signal.args().unwrap();
    assert_eq!(args.name, "main");
    assert!(args.reason.contains("att-token login main"), "the reason says what to do: {}", args.reason);
    assert_eq!(main.state().await.unwrap(), "needs-login");
    assert!(main.attention_needed().await.unwrap());
    let mut states = Vec::new();
    while let Ok(Some(change)) = tokio::time::timeout(Duration::from_secs(5), state_changes.next()).await {
        let state = change.get().await.unwrap();
        states.push(state.clone());
        if state == "needs-login" {
            break;
        }
    }
    assert_eq!(states.last().map(String::as_str), Some("needs-login"), "PropertiesChanged announced it: {states:?}");

    // A new login clears it.
    login(&harness, &cloud).await;
    assert_eq!(main.state().await.unwrap(), "valid");
    assert!(!main.attention_needed().await.unwrap());
    agent.logout("main").await.unwrap();
    assert_eq!(error_name(&agent.get_token("main").await), "io.allthingstalk.TokenAgent1.Error.NeedsLogin");
    assert_eq!(error_name(&agent.logout("sensor-7").await), "org.freedesktop.DBus.Error.InvalidArgs");
    harness.stop().await;
}

core_test!(
    revoked_device_token_becomes_revoked_and_grounds_are_learned,
    revoked_device_token_becomes_revoked_and_grounds_are_learned_body
);

async fn revoked_device_token_becomes_revoked_and_grounds_are_learned_body() {
    let (cloud, harness) = started(Duration::from_secs(3600)).await;
    let agent = harness.agent().await;
    let api = prepare::cloud(&harness.config, login_flow::tls::in_background()).unwrap();

    // Until the ground's devices are known, its token reaches none of them.
    assert_eq!(
        error_name(&agent.get_token_for_device(GROUND_DEVICE).await),
        "io.allthingstalk.TokenAgent1.Error.NoTokenForDevice"
    );
    maintenance::sync_grounds(&harness.engine, &api).await;
    let (name, token, _) = agent.get_token_for_device(GROUND_DEVICE).await.expect("the ground token fits");
    assert_eq!((name.as_str(), token.as_str()), ("site-a", GROUND_TOKEN));

    let mut attention = agent.receive_attention_needed().await.unwrap();
    maintenance::check_token_health(&harness.engine, &api).await;
    assert_eq!(harness.token("sensor-7").await.state().await.unwrap(), "valid");
    assert!(cloud.control().revoke(DEVICE_TOKEN));
    maintenance::check_token_health(&harness.engine, &api).await;
    let sensor = harness.token("sensor-7").await;
    assert_eq!(sensor.state().await.unwrap(), "revoked");
    assert!(sensor.attention_needed().await.unwrap());
    let signal = attention.next().await.expect("AttentionNeeded for the revoked token");
    assert_eq!(signal.args().unwrap().name, "sensor-7");
    assert_eq!(error_name(&agent.get_token("sensor-7").await), "io.allthingstalk.TokenAgent1.Error.Revoked");
    // The revoked token is no longer a candidate for its device.
    assert_eq!(
        error_name(&agent.get_token_for_device(DEVICE).await),
        "io.allthingstalk.TokenAgent1.Error.NoTokenForDevice"
    );
    harness.stop().await;
}

core_test!(restart_resumes_from_state_dir_without_a_new_login, restart_resumes_from_state_dir_without_a_new_login_body);

async fn restart_resumes_from_state_dir_without_a_new_login_body() {
    let cloud = fake_cloud(Duration::from_secs(6)).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), &cloud.url(), "");
    let harness = Harness::start(dir, &text, Callers::peer()).await;
    login(&harness, &cloud).await;
    let (before, _) = harness.agent().await.get_token("main").await.unwrap();
    let state_file = harness.config.daemon.state_dir.join("main.json");
    let saved = std::fs::read_to_string(&state_file).expect("the session is saved");
    assert!(saved.contains(&before), "the state file holds the session");
    let dir = harness.stop().await;

    let logins = cloud.control().counters().password_grants;
    let harness = Harness::start(dir, &text, Callers::peer()).await;
    let agent = harness.agent().await;
    let (after, _) = agent.get_token("main").await.expect("the restored session serves at once");
    assert_eq!(after, before);
    // And keeps refreshing with the saved refresh token.
    eventually(LONG, "a refresh after the restart", || {
        let agent = agent.clone();
        let before = before.clone();
        async move { agent.get_token("main").await.ok().filter(|(t, _)| *t != before) }
    })
    .await;
    let counters = cloud.control().counters();
    assert_eq!(counters.password_grants, logins, "no new login after the restart");
    assert!(counters.refreshes_ok >= 1);
    harness.stop().await;
}

core_test!(unattended_login_with_totp_needs_nobody, unattended_login_with_totp_needs_nobody_body);

async fn unattended_login_with_totp_needs_nobody_body() {
    let cloud = fake_cloud(Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let password = secret_file(dir.path(), "password", PASSWORD);
    let seed = secret_file(dir.path(), "totp", SEED);
    let extra = format!(
        "username = \"{USER}\"\npassword_file = \"{}\"\ntotp_secret_file = \"{}\"",
        password.display(),
        seed.display()
    );
    let text = config_text(dir.path(), &cloud.url(), &extra);
    let harness = Harness::start(dir, &text, Callers::peer()).await;
    let agent = harness.agent().await;
    let (token, _) = eventually(LONG, "the daemon logs in by itself", || {
        let agent = agent.clone();
        async move { agent.get_token("main").await.ok() }
    })
    .await;
    assert!(cloud.control().is_access_token_valid(&token));

    // A rejected session is replaced by a new unattended login, without a person.
    cloud.control().revoke_user_sessions(USER);
    let expires = agent.refresh("main").await.expect("re-login after the refresh token was rejected");
    assert!(expires > 0);
    let (again, _) = agent.get_token("main").await.unwrap();
    assert_ne!(again, token);
    assert!(cloud.control().is_access_token_valid(&again));
    harness.stop().await;
}

/// The interfaces as served, in the form installed under `/usr/share/dbus-1/interfaces/`.
async fn served_interfaces(harness: &Harness) -> String {
    let introspect = |path: String| {
        let client = harness.client.clone();
        async move {
            // An Introspect call over the peer-to-peer pair now and then gets no reply (seen about once in
            // twenty runs, in zbus' own Introspectable handler); ask again rather than wait forever.
            let mut reply = None;
            for _ in 0..5 {
                let call = client.call_method(
                    Some(att_tokend::dbus::BUS_NAME),
                    path.as_str(),
                    Some("org.freedesktop.DBus.Introspectable"),
                    "Introspect",
                    &(),
                );
                if let Ok(answer) = tokio::time::timeout(Duration::from_secs(5), call).await {
                    reply = Some(answer.expect("introspection data"));
                    break;
                }
            }
            let reply = reply.expect("an answer to one of five Introspect calls");
            reply.body().deserialize::<String>().expect("introspection XML")
        }
    };
    let main = introspect(att_tokend::dbus::OBJECT_PATH.to_owned()).await;
    let token = introspect(token_agent::token_object_path("main")).await;
    let interface = |xml: &str, name: &str| -> String {
        let open = format!("<interface name=\"{name}\">");
        let start = xml.find(&open).unwrap_or_else(|| panic!("{name} is served:\n{xml}"));
        let end = start + xml[start..].find("</interface>").expect("a closed interface") + "</interface>".len();
        let line_start = xml[..start].rfind('\n').map_or(0, |i| i + 1);
        xml[line_start..end].to_owned()
    };
    format!(
        "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \
         \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node>\n{}\n{}\n</node>\n",
        interface(&main, att_tokend::dbus::INTERFACE),
        interface(&token, att_tokend::dbus::TOKEN_INTERFACE)
    )
}

core_test!(introspection_matches_the_committed_xml, introspection_matches_the_committed_xml_body);

async fn introspection_matches_the_committed_xml_body() {
    let (_cloud, harness) = started(Duration::from_secs(3600)).await;
    let served = step("introspecting", served_interfaces(&harness)).await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/io.allthingstalk.TokenAgent1.xml");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &served).expect("write the introspection XML");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} cannot be read ({e}); run UPDATE_SNAPSHOTS=1 cargo test -p att-tokend --test it -- core_service::introspection",
            path.display()
        )
    });
    assert_eq!(
        committed, served,
        "the introspection XML differs from the service; if the change is intended, run \
         UPDATE_SNAPSHOTS=1 cargo test -p att-tokend --test it -- core_service::introspection and commit the file"
    );
    for member in ["GetToken", "GetTokenValidFor", "GetTokenForDevice", "ListTokens", "Login", "Refresh", "Logout"] {
        assert!(served.contains(&format!("<method name=\"{member}\">")), "{member} is served");
    }
    for member in ["TokenChanged", "AttentionNeeded"] {
        assert!(served.contains(&format!("<signal name=\"{member}\">")), "{member} is served");
    }
    for property in
        ["Name", "Kind", "State", "ExpiresAt", "RefreshTokenExpiresAt", "NextRefreshAt", "AttentionNeeded", "LastError"]
    {
        assert!(served.contains(&format!("<property name=\"{property}\"")), "{property} is served");
    }
    harness.stop().await;
}

/// Everything logged by this test process, at every level the daemon's filter lets through for `trace`.
fn captured_logs() -> &'static std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        let (filter, _) = att_tokend::logging::filter(Some("trace"));
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish()
            .with(filter)
            .try_init()
            .expect("the only subscriber of this test binary");
        logs
    })
}

struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

core_test!(no_secret_is_logged_even_at_trace, no_secret_is_logged_even_at_trace_body);

async fn no_secret_is_logged_even_at_trace_body() {
    let logs = captured_logs();
    let (cloud, harness) = started(Duration::from_secs(3600)).await;
    let agent = harness.agent().await;
    let code = cloud.control().current_totp(USER).unwrap();
    agent.login("main", USER, PASSWORD, &code).await.unwrap();
    let (first, _) = agent.get_token("main").await.unwrap();
    agent.refresh("main").await.unwrap();
    let (second, _) = agent.get_token_valid_for("main", 60).await.unwrap();
    cloud.control().inject_fault(Fault::new(FaultKind::ServerError).times(1).on_path("/login"));
    let _ = agent.refresh("main").await;
    let saved = std::fs::read_to_string(harness.config.daemon.state_dir.join("main.json")).unwrap();
    let record: serde_json::Value = serde_json::from_str(&saved).unwrap();
    let refresh_token = record["refresh_token"].as_str().expect("the record holds the refresh token").to_owned();
    let (device, _) = agent.get_token("sensor-7").await.unwrap();
    harness.stop().await;

    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("logged in"), "the daemon logged what it did:\n{text}");
    assert!(text.contains("/login"), "requests are logged (without secrets):\n{text}");
    for (what, secret) in [
        ("access token", first.as_str()),
        ("refreshed access token", second.as_str()),
        ("refresh token", refresh_token.as_str()),
        ("password", PASSWORD),
        ("MFA code", code.as_str()),
        ("TOTP seed", SEED),
        ("device token", device.as_str()),
    ] {
        assert!(!text.contains(secret), "the {what} appears in the logs");
    }
}

/// A private `dbus-daemon` (session configuration, its own address, never the machine's bus); killed on drop.
struct PrivateBus {
    child: std::process::Child,
    address: String,
}

impl PrivateBus {
    fn start() -> PrivateBus {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("dbus-daemon must be installed for this test (apt-get install dbus-daemon)");
        // It prints its address once it listens.
        let mut address = String::new();
        let stdout = child.stdout.take().expect("stdout is piped");
        std::io::BufReader::new(stdout).read_line(&mut address).expect("dbus-daemon prints its address");
        assert!(!address.trim().is_empty(), "dbus-daemon exited without printing an address");
        PrivateBus { child, address: address.trim().to_owned() }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

core_test!(
    on_a_bus_callers_are_identified_by_the_bus_and_forgotten_when_they_leave,
    on_a_bus_callers_are_identified_by_the_bus_and_forgotten_when_they_leave_body
);

async fn on_a_bus_callers_are_identified_by_the_bus_and_forgotten_when_they_leave_body() {
    let cloud = fake_cloud(Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start();
    let text = config_text(dir.path(), &cloud.url(), "");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let config = att_tokend::config::load(&path).unwrap();
    let engine = start_engine(&config);

    let connect = || async { zbus::connection::Builder::address(bus.address.as_str()).build().await.unwrap() };
    let client = connect().await;
    let callers = std::sync::Arc::new(Callers::bus());
    let service = att_tokend::dbus::Service::serve(
        zbus::connection::Builder::address(bus.address.as_str()),
        engine.clone(),
        callers.clone(),
    )
    .await
    .unwrap();
    let service_connection = service.connection().clone();
    let forget_leavers = callers.clone().watch_bus(&service_connection).await.unwrap();
    tokio::spawn(forget_leavers.expect("a bus lookup keeps a cache"));
    att_tokend::bus_link::own_name(&service_connection).await.unwrap();

    let agent = token_agent::TokenAgentProxy::new(&client).await.unwrap();
    let (token, _) = agent.get_token("sensor-7").await.expect("the bus says who we are: a reader");
    assert_eq!(token, DEVICE_TOKEN);
    assert_eq!(callers.cached_callers(), 1, "the caller's credentials are cached");
    agent.get_token("sensor-7").await.unwrap();
    assert_eq!(callers.cached_callers(), 1, "one entry per connection");

    // A second owner of the name is refused while the daemon holds it.
    let rival = connect().await;
    assert!(att_tokend::bus_link::own_name(&rival).await.is_err(), "a second daemon cannot take the name");
    assert!(rival.request_name(att_tokend::dbus::BUS_NAME).await.is_err(), "nor can anyone force it away");

    drop(agent);
    client.graceful_shutdown().await;
    eventually(LONG, "the cache entry is dropped when the caller leaves the bus", || async {
        (callers.cached_callers() == 0).then_some(())
    })
    .await;
    engine.shutdown().await;
}

core_test!(
    the_first_call_on_a_freshly_served_connection_is_answered,
    the_first_call_on_a_freshly_served_connection_is_answered_body
);

/// zbus dispatches method calls from a task of its own. Objects added to a connection that is already reading
/// could miss a call that arrived before that task had started, and such a call never got a reply (about one
/// first call in eight on a loaded machine). `Service::serve` hands the main object to the connection builder,
/// which starts the dispatcher before the first read.
async fn the_first_call_on_a_freshly_served_connection_is_answered_body() {
    const PAIRS: usize = 300;
    let (_cloud, harness) = started(Duration::from_secs(3600)).await;
    for n in 1..=PAIRS {
        let (server, client) = pair(&harness.engine, Callers::peer()).await;
        let agent = agent_on(&client).await;
        let Ok(reply) = tokio::time::timeout(Duration::from_secs(5), agent.get_token("sensor-7")).await else {
            panic!("the first call on new connection {n} of {PAIRS} got no reply within 5 s");
        };
        assert_eq!(reply.expect("the device token").0, DEVICE_TOKEN);
        drop((agent, client, server));
    }
    harness.stop().await;
}

core_test!(
    a_refresh_whose_reply_is_lost_is_explained_when_the_cloud_then_refuses_the_token,
    a_refresh_whose_reply_is_lost_is_explained_when_the_cloud_then_refuses_the_token_body
);

async fn a_refresh_whose_reply_is_lost_is_explained_when_the_cloud_then_refuses_the_token_body() {
    let cloud = fake_cloud(Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), &cloud.url(), "").replace("[api]\n", "[api]\nrequest_timeout = \"2s\"\n");
    let harness = Harness::start(dir, &text, Callers::peer()).await;
    let agent = harness.agent().await;
    login(&harness, &cloud).await;
    let state_file = harness.dir.path().join("state").join("main.json");

    // The cloud carries the refresh out, but its reply never arrives: to the daemon, a timeout.
    cloud.control().inject_fault(Fault::new(FaultKind::LostReply).on_path("/login"));
    let lost = step("a refresh whose reply is lost", agent.refresh("main")).await;
    assert_eq!(error_name(&lost), "io.allthingstalk.TokenAgent1.Error.Unavailable", "a timeout is transient");
    assert_eq!(cloud.control().counters().refreshes_ok, 1, "the cloud did rotate the refresh token");
    let on_disk = std::fs::read_to_string(&state_file).unwrap();
    assert!(on_disk.contains("refresh_sent_at"), "the unanswered refresh is on record");

    // The next attempt presents the rotated-away token: refused, and the daemon says why.
    let refused = step("the refresh after the lost reply", agent.refresh("main")).await;
    assert_eq!(error_name(&refused), "io.allthingstalk.TokenAgent1.Error.NeedsLogin");
    let main = harness.token("main").await;
    assert_eq!(main.state().await.unwrap(), "needs-login");
    let last_error = main.last_error().await.unwrap();
    assert!(last_error.contains("Most likely cause") && last_error.contains("lost on the way"), "{last_error}");
    assert_eq!(cloud.control().counters().refresh_reuses, 1);
    harness.stop().await;
}

core_test!(
    a_suspend_past_the_tokens_life_is_noticed_at_the_resume,
    a_suspend_past_the_tokens_life_is_noticed_at_the_resume_body
);

/// The monotonic clock (tokio's timers) stops while the machine sleeps; the boot-time clock does not. After a
/// suspend longer than the token's life, the old token is never served, and the overdue refresh is done at once,
/// not an hour later when a monotonic timer would have fired.
async fn a_suspend_past_the_tokens_life_is_noticed_at_the_resume_body() {
    let (cloud, harness) = started(Duration::from_secs(3600)).await;
    let agent = harness.agent().await;
    login(&harness, &cloud).await;
    let (before, _) = agent.get_token("main").await.unwrap();
    let refreshed = cloud.control().counters().refreshes_ok;
    // Two hours asleep: the access token's life (an hour) has passed in real elapsed time.
    att_tokend::clock::simulate_suspend(Duration::from_secs(7200));
    match agent.get_token("main").await {
        Ok((token, _)) => assert_ne!(token, before, "a token whose life passed during the suspend is never served"),
        Err(e) => assert_eq!(
            token_agent::error_name(&e).as_deref(),
            Some("io.allthingstalk.TokenAgent1.Error.Unavailable"),
            "{e}"
        ),
    }
    let after = eventually(Duration::from_secs(10), "a refresh right after the resume", || {
        let agent = agent.clone();
        let before = before.clone();
        async move { agent.get_token("main").await.ok().map(|(t, _)| t).filter(|t| *t != before) }
    })
    .await;
    assert!(cloud.control().is_access_token_valid(&after));
    assert_eq!(cloud.control().counters().refreshes_ok, refreshed + 1, "one refresh at the resume");
    harness.stop().await;
}
