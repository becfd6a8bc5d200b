//! What a caller can make the daemon hold is bounded: callers waiting on one session, calls waiting in the
//! engine, and the per-caller credentials cache. Each excess is refused at once with a message saying so.

use std::time::Duration;

use crate::core_support::*;
use att_tokend::engine::{MAX_WAITING_CALLS, MAX_WAITING_PER_SESSION};
use fake_cloud::{Fault, FaultKind};

/// A slow `/login` for the next `times` requests: the first login of each session holds its task that long.
fn slow_logins(cloud: &fake_cloud::FakeCloud, times: u32) {
    cloud.control().inject_fault(Fault::new(FaultKind::Slow { delay_ms: 4000 }).times(times).on_path("/login"));
}

/// Fires `per_token` wrong-password `Login` calls at each of `tokens` at once; returns (refused with
/// `Unavailable`, other answers, the `Unavailable` messages).
async fn logins_at_once(harness: &Harness, tokens: &[String], per_token: usize) -> (usize, usize, Vec<String>) {
    let agent = harness.agent().await;
    let calls = tokens.iter().flat_map(|name| {
        (0..per_token).map({
            let agent = agent.clone();
            move |_| {
                let agent = agent.clone();
                let name = name.clone();
                async move { agent.login(&name, USER, "wrong password", "").await }
            }
        })
    });
    let results = step("the logins to be answered", futures_util::future::join_all(calls)).await;
    let mut refused = Vec::new();
    let mut other = 0;
    for result in &results {
        match result {
            Err(e) if error_name(result) == "io.allthingstalk.TokenAgent1.Error.Unavailable" => {
                refused.push(token_agent::error_message(e));
            }
            _ => other += 1,
        }
    }
    (refused.len(), other, refused)
}

core_test!(callers_waiting_on_one_session_are_bounded, callers_waiting_on_one_session_are_bounded_body);

async fn callers_waiting_on_one_session_are_bounded_body() {
    let (cloud, harness) = started(Duration::from_secs(3600)).await;
    slow_logins(&cloud, 1);
    let extra = 20;
    let (refused, other, messages) =
        logins_at_once(&harness, &["main".to_owned()], MAX_WAITING_PER_SESSION + extra).await;
    println!("one session: {other} calls waited and were answered, {refused} were refused at once");
    assert!(refused >= 1, "callers beyond {MAX_WAITING_PER_SESSION} waiting on one session are refused");
    assert!(refused <= extra, "no caller within the bound is refused ({refused} refused, {extra} over the bound)");
    for message in &messages {
        assert!(
            message.contains("callers are already waiting on this token") && message.contains("try again"),
            "the refusal says why and what to do: {message}"
        );
    }
    harness.stop().await;
}

core_test!(calls_waiting_in_the_engine_are_bounded, calls_waiting_in_the_engine_are_bounded_body);

async fn calls_waiting_in_the_engine_are_bounded_body() {
    let cloud = fake_cloud(Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Enough user tokens that calls below the per-session bound on each add up to more than the engine's bound.
    let per_token = MAX_WAITING_PER_SESSION - 2;
    let count = MAX_WAITING_CALLS / per_token + 2;
    let tokens: Vec<String> = (0..count).map(|n| format!("user-{n}")).collect();
    let extra: String = tokens
        .iter()
        .map(|name| {
            format!("\n[[token]]\nname = \"{name}\"\nkind = \"user\"\nreaders = {{ users = [{}] }}\n", my_uid())
        })
        .collect();
    let text = config_text(dir.path(), &cloud.url(), &extra);
    let harness = Harness::start(dir, &text, att_tokend::dbus::callers::Callers::peer()).await;
    slow_logins(&cloud, u32::try_from(count).expect("a few tokens"));
    let (refused, other, messages) = logins_at_once(&harness, &tokens, per_token).await;
    println!("{count} sessions: {other} calls waited and were answered, {refused} were refused at once");
    assert!(refused >= 1, "calls beyond {MAX_WAITING_CALLS} waiting in the engine are refused");
    let over = count * per_token - MAX_WAITING_CALLS;
    assert!(refused <= over, "no call within the bound is refused ({refused} refused, {over} over the bound)");
    for message in &messages {
        assert!(
            message.contains("calls that wait") && message.contains("try again"),
            "the refusal says why and what to do: {message}"
        );
    }
    harness.stop().await;
}
