//! End to end, as separate processes: the refresh path under pressure. Short grants, readers hammering
//! `GetTokenValidFor`, refused unattended credentials, outages with long backoffs, refused refresh tokens with and
//! without a lost answer, `Logout`, a clock that cannot be confirmed, and a token removed and re-added while its
//! refresh is on its way.

use std::time::{Duration, Instant};

use serde_json::json;

use testbed::{ConfigText, PATIENCE};

use crate::support::world::{TOTP_SEED, USERNAME};
use crate::support::{World, bins, describe, exit, wait_until};

/// `[refresh]` retrying after 1 s, then every 2 s, and the user token `main`.
fn quick_retries() -> ConfigText {
    ConfigText::new().refresh(&[("retry_initial", "1s"), ("retry_max", "2s")]).user("main")
}

/// Runs `calls` against the daemon's main object on this world's bus, over one connection, from this process
/// (root): `f` gets the proxy and the call's index.
fn hammer<F, Fut>(world: &World, calls: usize, f: F) -> Vec<Result<(String, i64), String>>
where
    F: Fn(token_agent::TokenAgentProxy<'static>, usize) -> Fut,
    Fut: std::future::Future<Output = zbus::Result<(String, i64)>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(async {
        let connection = zbus::connection::Builder::address(world.bus.address.as_str())
            .build()
            .await
            .expect("connect to the test bus");
        let proxy = token_agent::TokenAgentProxy::new(&connection).await.expect("a proxy");
        let mut results = Vec::with_capacity(calls);
        for n in 0..calls {
            let result = f(proxy.clone(), n).await;
            results.push(result.map_err(|e| token_agent::error_message(&e)));
        }
        results
    })
}

/// Writes the generated config with `rest`, replaces `from` by `to` in it (for keys of the generated `[api]` and
/// `[daemon]` tables), and starts the daemon at debug level.
fn start_patched(world: &mut World, rest: &str, from: &str, to: &str) {
    world.write_config(rest);
    let path = world.config.clone().expect("a config was written");
    let text = std::fs::read_to_string(&path).expect("read the config");
    assert!(text.contains(from), "the generated config has {from:?}: {text}");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write the config");
    world.log = "debug".to_owned();
    world.restart_daemon();
}

/// Unix seconds now.
fn unix_now() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    i64::try_from(now.as_secs()).expect("fits")
}

/// Whether `text` holds an RFC 3339 UTC date right after `marker` (`2026-11-29T16:40:00Z`).
fn date_after(text: &str, marker: &str) -> bool {
    let Some(at) = text.find(marker) else { return false };
    let date: Vec<char> = text[at + marker.len()..].chars().take(20).collect();
    date.len() == 20
        && date.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == '-',
            10 => *c == 'T',
            13 | 16 => *c == ':',
            19 => *c == 'Z',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn a_refused_refresh_token_blames_a_lost_answer_only_when_one_was_lost() {
    let mut world = World::new("verdicts", &["--access-lifetime", "3600s"]);
    let config = quick_retries();
    // A request timeout of 2 s makes the lost reply quick.
    start_patched(&mut world, &config, "[api]\n", "[api]\nrequest_timeout = \"2s\"\n");
    world.login_ok("main");

    // Revoked at the cloud ("log out everywhere"): refused, and no lost answer is blamed, since none was lost.
    assert!(world.fake.api().revoke_user_sessions(USERNAME).unwrap() >= 2);
    let out = world.att_token(&["refresh", "main"]);
    assert_eq!(out.status.code(), Some(exit::NEEDS_LOGIN), "{}", describe(&out));
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(said.contains("refused the refresh token"), "the verdict is told: {said}");
    assert!(!said.contains("Most likely cause") && !said.contains("carried out"), "no lost answer is blamed: {said}");

    // The cloud carries a refresh out and its reply is lost: the daemon times out (transient), and when the cloud
    // then refuses the rotated-away token, the lost answer is named, with its date.
    world.login_ok("main");
    world.fake.api().inject_fault(json!({"kind": "lost_reply", "times": 1, "path": "/login"})).unwrap();
    let out = world.att_token(&["refresh", "main"]);
    assert_eq!(out.status.code(), Some(exit::UNAVAILABLE), "a lost reply is transient: {}", describe(&out));
    let out = world.att_token(&["refresh", "main"]);
    assert_eq!(out.status.code(), Some(exit::NEEDS_LOGIN), "{}", describe(&out));
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(said.contains("Most likely cause") && said.contains("lost on the way"), "the lost answer: {said}");
    assert!(date_after(&said, "a refresh sent at "), "the time is an RFC 3339 date: {said}");
    assert!(!said.contains("Unix time"), "no Unix seconds in messages: {said}");
    assert_eq!(world.fake.api().counter("refresh_reuses").unwrap(), 1);
}

#[test]
fn callers_cannot_spend_the_session() {
    // 120 s tokens (expires_in 119) and a 10 s margin: asking for life - margin - 1 = 108 s is possible only
    // with a token at most about a second old.
    let mut world = World::new("callers", &["--access-lifetime", "120s"]);
    world.start_daemon(&ConfigText::new().refresh(&[("safety_margin", "10s")]).user("main"), "debug");
    world.login_ok("main");
    std::thread::sleep(Duration::from_millis(1500));
    let before = world.fake.api().counters().unwrap();
    let results = hammer(&world, 1000, |proxy, _| async move { proxy.get_token_valid_for("main", 108).await });
    let after = world.fake.api().counters().unwrap();
    let requests = after["requests_total"].as_u64().unwrap_or(0) - before["requests_total"].as_u64().unwrap_or(0);
    let served = results.iter().filter(|r| r.is_ok()).count();
    let refused: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    eprintln!(
        "1,000 GetTokenValidFor(main, 108): {served} served, {} refused, {requests} cloud requests",
        refused.len()
    );
    assert!(requests <= 2, "at most 2 cloud requests for 1,000 calls, not {requests}: {after}");
    assert_eq!(after["password_grants"], before["password_grants"], "no login for a reader");
    let first = refused.first().expect("a token a second old cannot serve 108 s more, and no refresh is spent");
    assert!(first.contains("at most") || first.contains("valid for"), "the refusal says what it can give: {first}");

    // The journal shows the caller-triggered decisions with the caller's uid, at debug.
    let logs = world.daemon_logs();
    assert!(logs.contains("uid=0") || logs.contains("uid 0"), "the caller is named in the debug log");
    assert!(logs.contains("plan: next refresh at 20"), "the plan's decisions, with dates, are in the debug log");
    let info: Vec<&str> = logs.lines().filter(|l| l.contains(" INFO ")).collect();
    assert!(info.len() < 10, "info stays quiet while readers call (state changes only): {info:#?}");
}

#[test]
fn a_retry_after_is_a_floor_that_no_reader_moves() {
    // 20 s tokens: within the window below the token passes half its life (a reader may ask for a refresh) and
    // then its serving window ends (a reader's GetToken nudges the session).
    let mut world = World::new("retry-after", &["--access-lifetime", "20s"]);
    world.start_daemon(&quick_retries(), "debug");
    world.login_ok("main");
    world
        .fake
        .api()
        .inject_fault(json!({"kind": "too_many_requests", "retry_after_secs": 600, "times": 1, "path": "/login"}))
        .unwrap();
    let out = world.att_token(&["refresh", "main"]);
    assert!(!out.status.success(), "the refresh meets the 429: {}", describe(&out));
    let before = world.fake.api().counter("requests_total").unwrap();
    // A reader asks every second, for 30 s, alternately for any token and for one valid 10 s.
    for n in 0..30 {
        let args: &[&str] = if n % 2 == 0 { &["get", "main"] } else { &["get", "main", "--min-valid", "10"] };
        let _ = world.att_token(args);
        std::thread::sleep(Duration::from_secs(1));
    }
    let out = world.att_token(&["refresh", "main"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && said.contains("Retry-After"), "an admin's refresh is refused too: {said}");
    let extra = world.fake.api().counter("requests_total").unwrap() - before;
    eprintln!("a 600 s Retry-After, 30 reader calls and an admin's refresh over 30 s: {extra} requests to the cloud");
    assert_eq!(extra, 0, "no request before the Retry-After, whoever asks");
}

#[test]
fn a_refused_unattended_password_is_not_retried_for_readers() {
    // The refused password is not sent again, whatever readers do (nor after a restart: e2e_lockout).
    let mut world = World::new("refused-password", &["--access-lifetime", "60s"]);
    let password = world.secret_file("password", "not-the-password\n");
    let seed = world.secret_file("totp-seed", &format!("{TOTP_SEED}\n"));
    let config = ConfigText::new().refresh(&[("retry_max", "1h")]).unattended_user("main", USERNAME, &password, &seed);
    world.start_daemon(&config, "debug");
    wait_until("the daemon's own login attempt", PATIENCE, || {
        let n = world.fake.api().counter("password_grants").unwrap();
        if n >= 1 { Ok(()) } else { Err(format!("{n} password grants")) }
    });
    let results = hammer(&world, 300, |proxy, n| async move {
        if n % 2 == 0 { proxy.get_token("main").await } else { proxy.get_token_valid_for("main", 30).await }
    });
    assert!(results.iter().all(Result::is_err), "no token without a session");
    // A reload that changes nothing is not a new chance either.
    world.reload_daemon(&config);
    std::thread::sleep(Duration::from_secs(2));
    let results = hammer(&world, 100, |proxy, _| async move { proxy.get_token_valid_for("main", 30).await });
    assert!(results.iter().all(Result::is_err));
    assert_eq!(
        world.fake.api().counter("password_grants").unwrap(),
        1,
        "one login request in all, whatever readers do"
    );
    assert_eq!(world.listed("main")["state"], "needs-login");
}

#[test]
fn logout_suspends_unattended_login_until_a_login_or_new_credentials() {
    const BOB: &str = "bob@example.com";
    const BOB_PASSWORD: &str = "b0b's=password";
    let mut world = World::new("logout", &["--access-lifetime", "60s", "--user", &format!("{BOB}:{BOB_PASSWORD}")]);
    let bob_password = world.secret_file("bob-password", &format!("{BOB_PASSWORD}\n"));
    let refresh = ConfigText::new().refresh(&[("safety_margin", "5s"), ("retry_initial", "1s"), ("retry_max", "2s")]);
    let alice = world.unattended_user(refresh.clone(), "main");
    world.start_daemon(&alice, "debug");
    wait_until("the unattended login", PATIENCE, || world.get("main").map_err(|o| describe(&o)));
    assert_eq!(world.fake.api().counter("password_grants").unwrap(), 1);

    let out = world.att_token(&["logout", "main"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = world.att_token(&["get", "main", "--min-valid", "10"]);
    assert_eq!(out.status.code(), Some(exit::NEEDS_LOGIN), "a reader gets no login after a logout: {}", describe(&out));
    world.reload_daemon(&alice);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        world.fake.api().counter("password_grants").unwrap(),
        1,
        "logged out stays logged out, across a plain reload"
    );
    assert_eq!(world.listed("main")["state"], "needs-login");

    // A human's login ends the suspension: after the next lost session the daemon logs in by itself again.
    world.login_ok("main");
    assert!(world.fake.api().revoke_user_sessions(USERNAME).unwrap() >= 2);
    let out = world.att_token(&["refresh", "main"]);
    assert!(out.status.success(), "the refused refresh token is replaced by an unattended login: {}", describe(&out));
    wait_until("the unattended login after a rejected refresh", PATIENCE, || {
        let n = world.fake.api().counter("password_grants_ok").unwrap();
        if n >= 3 { Ok(()) } else { Err(format!("{n} logins")) }
    });

    // Logged out again; a reload with other credentials (bob's) logs in with them.
    let out = world.att_token(&["logout", "main"]);
    assert!(out.status.success(), "{}", describe(&out));
    let grants = world.fake.api().counter("password_grants").unwrap();
    let bob = refresh
        .user("main")
        .line(&format!("username = \"{BOB}\""))
        .line(&format!("password_file = \"{}\"", bob_password.display()));
    world.reload_daemon(&bob);
    let token =
        wait_until("the login with the new credentials", PATIENCE, || world.get("main").map_err(|o| describe(&o)));
    assert!(world.fake.api().is_access_token_valid(&token).unwrap());
    assert_eq!(world.fake.api().counter("password_grants").unwrap(), grants + 1);
}

#[test]
fn short_grants_are_served_and_never_cause_a_storm() {
    // 20 s tokens (expires_in 19) against the default 60 s safety margin.
    let mut world = World::new("short-grants", &["--access-lifetime", "20s"]);
    world.start_daemon(&ConfigText::new().user("main"), "debug");
    world.login_ok("main");
    let token = world.get("main").unwrap_or_else(|o| panic!("a 19 s token is served: {}", describe(&o)));
    assert!(world.fake.api().is_access_token_valid(&token).unwrap());
    let start = Instant::now();
    let before = world.fake.api().counter("refreshes").unwrap();
    std::thread::sleep(Duration::from_secs(20));
    let refreshes = world.fake.api().counter("refreshes").unwrap() - before;
    eprintln!("19 s grants: {refreshes} refreshes in {:?}", start.elapsed());
    assert!((1..=3).contains(&refreshes), "about one refresh per 15 s, not {refreshes}");
    let token = world.get("main").unwrap_or_else(|o| panic!("still served: {}", describe(&o)));
    assert!(world.fake.api().is_access_token_valid(&token).unwrap());

    // Grants of 1 s cannot be served at all: a transient failure with backoff, logged once, never a storm.
    world.fake.api().post("lifetimes", json!({"access_secs": 2})).unwrap();
    let before = world.fake.api().counter("refreshes").unwrap();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    let refreshes = world.fake.api().counter("refreshes").unwrap() - before;
    eprintln!("1 s grants: {refreshes} refreshes in {:?}", start.elapsed());
    assert!(refreshes <= 30 / 5 + 1, "at most one refresh per 5 s, not {refreshes}");
    let logs = world.daemon_logs();
    let warned = logs.lines().filter(|l| l.contains("WARN") && l.contains("too short")).count();
    assert_eq!(warned, 1, "the too-short grant is logged once at warn:\n{logs}");
    // The session survives: with normal grants again it recovers by itself.
    world.fake.api().post("lifetimes", json!({"access_secs": 60})).unwrap();
    let token = wait_until("a servable token again", PATIENCE, || world.get("main").map_err(|o| describe(&o)));
    assert!(world.fake.api().is_access_token_valid(&token).unwrap());
    assert_eq!(world.fake.api().counter("password_grants").unwrap(), 1, "no new login");
}

#[test]
fn a_caller_brings_service_back_soon_after_an_outage() {
    // 20 s tokens, refreshed 15-16 s in and served until 17 s; the backoff starts at 30 s, so after the second
    // failure (about 18 s in) the planned retry is 30-60 s away, long after the 25 s outage has ended.
    let mut world = World::new("recovery", &["--access-lifetime", "20s"]);
    world.start_daemon(
        &ConfigText::new()
            .refresh(&[("safety_margin", "2s"), ("retry_initial", "30s"), ("retry_max", "5m")])
            .user("main"),
        "debug",
    );
    world.login_ok("main");
    let outage = Duration::from_secs(25);
    world
        .fake
        .api()
        .inject_fault(json!({"kind": "server_error", "duration_ms": outage.as_millis() as u64, "path": "/login"}))
        .unwrap();
    let outage_ends = Instant::now() + outage;
    world.wait_for_state("main", "expired");
    // A reader keeps asking, once a second, during the outage and after it.
    let mut during = 0;
    let recovered = loop {
        let out = world.att_token(&["get", "main", "--min-valid", "5"]);
        if out.status.success() {
            break Instant::now();
        }
        if Instant::now() < outage_ends {
            during += 1;
        }
        assert!(Instant::now() < outage_ends + Duration::from_secs(60), "no recovery a minute after the outage");
        std::thread::sleep(Duration::from_secs(1));
    };
    let late = recovered.saturating_duration_since(outage_ends);
    let attempts = world.fake.api().counter("faults_applied").unwrap();
    eprintln!("service back {late:?} after the outage; {attempts} attempts during it ({during} reader calls)");
    assert!(late <= Duration::from_secs(12), "a reader's request brings service back within seconds: {late:?}");
    assert!(attempts <= outage.as_secs() / 10 + 3, "at most one early attempt per 10 s: {attempts} attempts");
    assert_eq!(world.fake.api().counter("password_grants").unwrap(), 1, "no new login");
}

#[test]
fn a_restored_token_is_served_only_once_the_time_is_confirmed() {
    let mut world = World::new("rtc-less", &["--access-lifetime", "3600s"]);
    // As on a gateway without a real-time clock whose time is not synchronised yet.
    let config = quick_retries();
    start_patched(&mut world, &config, "[daemon]\n", "[daemon]\ntrust_kernel_time_sync = false\n");
    world.login_ok("main");
    let old = world.get("main").expect("a token");
    let status = world.stop_daemon();
    assert!(status.success());
    // Two hours pass in the real world while this gateway is off; it boots with its last saved time.
    world.fake.api().post("clock", json!({"advance_secs": 7200})).unwrap();
    assert!(!world.fake.api().is_access_token_valid(&old).unwrap(), "the saved token has expired in real time");
    world.fake.api().inject_fault(json!({"kind": "hang", "duration_ms": 8000, "path": "/login"})).unwrap();
    world.restart_daemon();
    let out = world.att_token(&["get", "main"]);
    assert_eq!(out.status.code(), Some(exit::UNAVAILABLE), "the restored token is not served: {}", describe(&out));
    // Once the cloud answers, its time confirms the clock and a fresh token is served.
    let token = wait_until("a fresh token", PATIENCE, || world.get("main").map_err(|o| describe(&o)));
    assert_ne!(token, old);
    assert!(world.fake.api().is_access_token_valid(&token).unwrap());
    assert_eq!(world.fake.api().counter("password_grants").unwrap(), 1, "no new login");
}

#[test]
fn a_token_removed_and_re_added_during_its_refresh_keeps_one_refresh_token_owner() {
    let mut world = World::new("re-add", &["--access-lifetime", "3600s"]);
    let config = quick_retries();
    world.start_daemon(&config, "debug");
    world.login_ok("main");
    world.fake.api().inject_fault(json!({"kind": "slow", "delay_ms": 3000, "times": 1, "path": "/login"})).unwrap();
    let mut refresh = bins()
        .att_token(&world.bus.address)
        .args(["refresh", "main"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start att-token refresh");
    wait_until("the refresh to reach the cloud", PATIENCE, || {
        let n = world.fake.api().counter("faults_applied").unwrap();
        if n >= 1 { Ok(()) } else { Err(format!("{n} faults applied")) }
    });
    // Two quick reloads: the token goes, then comes back, while its refresh is on its way.
    world.reload_daemon("");
    wait_until("main to go", PATIENCE, || {
        let list = world.list_json();
        if list.to_string().contains("\"main\"") { Err(list.to_string()) } else { Ok(()) }
    });
    world.reload_daemon(&config);
    let _ = refresh.wait();
    wait_until("main to be back", PATIENCE, || {
        let entry = world.listed("main");
        if entry["state"] == "valid" { Ok(()) } else { Err(entry.to_string()) }
    });
    let out = world.att_token(&["refresh", "main"]);
    assert!(out.status.success(), "the session survived: {}", describe(&out));
    assert_eq!(world.fake.api().counter("refresh_reuses").unwrap(), 0, "no refresh token was presented twice");
    let token = world.get("main").expect("a token");
    assert!(world.fake.api().is_access_token_valid(&token).unwrap());
    assert!(unix_now() > 0);
}

#[test]
fn unattended_login_follows_the_clouds_clock() {
    // The cloud's clock is 10 minutes ahead of this gateway's: codes from the local clock would be refused.
    let mut world = World::new("totp-skew", &["--access-lifetime", "120s", "--clock-offset", "600s"]);
    let config = world.unattended_user(ConfigText::new(), "main");
    world.start_daemon(&config, "debug");
    let token = wait_until("the unattended login", PATIENCE, || world.get("main").map_err(|o| describe(&o)));
    assert!(world.fake.api().is_access_token_valid(&token).unwrap());
    assert_eq!(
        world.fake.api().counter("mfa_steps_ok").unwrap(),
        1,
        "the first code, computed from the cloud's time, was accepted"
    );
}
