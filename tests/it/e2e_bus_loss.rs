//! End to end: losing the bus is not losing the session. The private `dbus-daemon` is killed while a refresh is
//! on its way to the cloud and a new one starts on the same socket path; the refresh finishes and is saved, and
//! the daemon serves its objects and name on the new bus.

use serde_json::json;

use testbed::{ConfigText, PATIENCE};

use crate::support::{World, bins, describe, wait_until};

#[test]
fn the_bus_restarts_during_a_refresh_and_the_daemon_serves_the_refreshed_session_on_the_new_bus() {
    let mut world = World::new("bus-loss", &["--access-lifetime", "3600s"]);
    world.start_daemon(&ConfigText::new().user("main"), "debug");
    world.login_ok("main");
    let before = world.get("main").expect("a token after the login");
    let logins = world.fake.api().counter("password_grants_ok").unwrap();

    // The next refresh takes 6 s at the cloud; the bus goes away while it is on its way.
    world.fake.api().inject_fault(json!({ "kind": "slow", "delay_ms": 6000, "times": 1, "path": "/login" })).unwrap();
    let mut refresh =
        bins().att_token(&world.bus.address).args(["refresh", "main"]).spawn().expect("start att-token refresh");
    world.wait_for_state("main", "refreshing");
    world.bus.restart(&world.scratch).unwrap();
    let _ = refresh.wait();

    // The daemon is still running, and serves the refreshed token on the new bus.
    let after = wait_until("att-tokend to serve the refreshed token on the new bus", PATIENCE, || {
        if let Some(status) = world.daemon.as_mut().expect("the daemon was started").proc.try_status() {
            panic!("att-tokend exited when the bus went away ({status})");
        }
        match world.get("main") {
            Ok(token) if token != before => Ok(token),
            Ok(_) => Err("still the token from before the refresh".to_owned()),
            Err(out) => Err(describe(&out)),
        }
    });
    assert!(
        world.fake.api().is_access_token_valid(&after).unwrap(),
        "the token served after the bus came back is the cloud's"
    );
    let entry = world.listed("main");
    assert_eq!(entry["state"], "valid", "att-token list works on the new bus: {entry}");
    assert_eq!(world.fake.api().counter("refresh_reuses").unwrap(), 0, "no refresh token was presented twice");
    assert_eq!(world.fake.api().counter("password_grants_ok").unwrap(), logins, "the session survived: no new login");
    assert_eq!(world.fake.api().counter("refreshes_ok").unwrap(), 1, "the refresh in flight finished once");

    assert!(world.daemon_logs().contains("reconnected to the"), "the log says the daemon reconnected");

    // The refreshed session was saved: a restarted daemon serves from it without a login (the refresh token of
    // the refresh done during the bus loss, so no reuse either).
    world.stop_daemon();
    world.write_config(&ConfigText::new().user("main")); // the new bus's address
    world.restart_daemon();
    // Unless the kernel reports the clock synchronised, the restored access token is refreshed before it is
    // served, so the first answer may be Unavailable for the moment that takes.
    let restored =
        wait_until("a token after the restart", PATIENCE, || world.get("main").map_err(|out| describe(&out)));
    assert!(world.fake.api().is_access_token_valid(&restored).unwrap(), "the restored session serves a valid token");
    assert_eq!(world.fake.api().counter("refresh_reuses").unwrap(), 0, "the saved refresh token is the rotated one");
    assert_eq!(world.fake.api().counter("password_grants_ok").unwrap(), logins, "no new login after the restart");
}
