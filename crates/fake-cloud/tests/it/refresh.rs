use std::time::Duration;

use fake_cloud::{FakeCloud, Fault, FaultKind, Rotation};
use reqwest::StatusCode;

use crate::support::{ALICE, ALICE_PASSWORD, Reply, client, config, password_login, refresh};

async fn login(client: &reqwest::Client, cloud: &FakeCloud) -> Reply {
    let reply = password_login(client, cloud, ALICE, ALICE_PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);
    reply
}

#[tokio::test]
async fn sliding_rotation_hands_out_a_new_token_and_rejects_the_old_one() {
    let cloud = FakeCloud::start(config().with_refresh_lifetime(Duration::from_secs(100))).await;
    let client = client();
    let first = login(&client, &cloud).await;
    let old = first.str("refresh_token");

    cloud.control().advance_clock(Duration::from_secs(60));
    let second = refresh(&client, &cloud, old, "web").await;
    assert_eq!(second.status, StatusCode::OK, "body: {}", second.body);
    let new = second.str("refresh_token");
    assert_ne!(new, old);
    assert_ne!(second.str("access_token"), first.str("access_token"));
    assert_eq!(second.body["expires_in"], 3599);
    assert!(!cloud.control().is_refresh_token_valid(old));

    // The old one is rejected with no description, and counted as a reuse.
    let reuse = refresh(&client, &cloud, old, "web").await;
    reuse.assert_error("invalid_grant");
    assert!(reuse.body.get("error_description").is_none(), "body: {}", reuse.body);

    // The new one has a fresh 100 s: it outlives the first login's deadline.
    cloud.control().advance_clock(Duration::from_secs(60));
    let third = refresh(&client, &cloud, new, "web").await;
    assert_eq!(third.status, StatusCode::OK, "body: {}", third.body);

    let counters = cloud.control().counters();
    assert_eq!((counters.refreshes, counters.refreshes_ok, counters.refresh_reuses), (3, 2, 1));
}

#[tokio::test]
async fn fixed_rotation_repeats_the_old_token_and_keeps_its_deadline() {
    let cloud =
        FakeCloud::start(config().with_rotation(Rotation::Fixed).with_refresh_lifetime(Duration::from_secs(100))).await;
    let client = client();
    let first = login(&client, &cloud).await;
    let token = first.str("refresh_token");
    cloud.control().advance_clock(Duration::from_secs(60));
    let second = refresh(&client, &cloud, token, "web").await;
    assert_eq!(second.status, StatusCode::OK, "body: {}", second.body);
    assert_eq!(second.str("refresh_token"), token);
    let third = refresh(&client, &cloud, token, "web").await;
    assert_eq!(third.status, StatusCode::OK, "the same token works again: {}", third.body);
    cloud.control().advance_clock(Duration::from_secs(41));
    refresh(&client, &cloud, token, "web").await.assert_error("invalid_grant");
    assert_eq!(cloud.control().counters().refresh_reuses, 0, "an expired token is no reuse");
}

#[tokio::test]
async fn omit_rotation_leaves_the_refresh_token_out() {
    let cloud = FakeCloud::start(config()).await;
    let client = client();
    let first = login(&client, &cloud).await;
    let token = first.str("refresh_token");
    cloud.control().set_rotation(Rotation::Omit);
    let second = refresh(&client, &cloud, token, "web").await;
    assert_eq!(second.status, StatusCode::OK, "body: {}", second.body);
    assert!(second.body.get("refresh_token").is_none(), "body: {}", second.body);
    assert!(cloud.control().is_access_token_valid(second.str("access_token")));
    assert!(cloud.control().is_refresh_token_valid(token));
    // Back to sliding at run time: the next refresh rotates.
    cloud.control().set_rotation(Rotation::Sliding);
    let third = refresh(&client, &cloud, token, "web").await;
    assert_ne!(third.str("refresh_token"), token);
}

#[tokio::test]
async fn refresh_is_bound_to_the_login_client_id() {
    let cloud = FakeCloud::start(config()).await;
    let client = client();
    let first = login(&client, &cloud).await;
    let token = first.str("refresh_token");
    refresh(&client, &cloud, token, "mobile").await.assert_error("invalid_clientId");
    refresh(&client, &cloud, token, "nonsense").await.assert_error("invalid_clientId");
    // A refused client id does not use the token up.
    let reply = refresh(&client, &cloud, token, "web").await;
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);
}

#[tokio::test]
async fn unknown_revoked_and_expired_refresh_tokens_are_invalid_grant() {
    let cloud = FakeCloud::start(config()).await;
    let client = client();
    refresh(&client, &cloud, "never-issued", "web").await.assert_error("invalid_grant");
    let revoked = login(&client, &cloud).await;
    assert!(cloud.control().revoke(revoked.str("refresh_token")));
    refresh(&client, &cloud, revoked.str("refresh_token"), "web").await.assert_error("invalid_grant");
    let expired = login(&client, &cloud).await;
    assert!(cloud.control().expire_token(expired.str("refresh_token")));
    refresh(&client, &cloud, expired.str("refresh_token"), "web").await.assert_error("invalid_grant");
    let late = login(&client, &cloud).await;
    cloud.control().advance_clock(Duration::from_secs(60 * 24 * 3600));
    refresh(&client, &cloud, late.str("refresh_token"), "web").await.assert_error("invalid_grant");
    assert_eq!(cloud.control().counters().refresh_reuses, 0);
}

#[tokio::test]
async fn racing_refreshes_are_counted_and_only_one_wins() {
    let cloud = FakeCloud::start(config()).await;
    let client = client();
    let first = login(&client, &cloud).await;
    let token = first.str("refresh_token");
    // Each request waits 3 s at the door, so the three overlap even on a loaded machine.
    cloud.control().inject_fault(Fault::new(FaultKind::Slow { delay_ms: 3000 }).times(3).on_path("/login"));
    let (a, b, c) = tokio::join!(
        refresh(&client, &cloud, token, "web"),
        refresh(&client, &cloud, token, "web"),
        refresh(&client, &cloud, token, "web"),
    );
    let ok = [&a, &b, &c].iter().filter(|r| r.status == StatusCode::OK).count();
    assert_eq!(ok, 1, "exactly one refresh wins");
    let counters = cloud.control().counters();
    assert_eq!(counters.max_concurrent_refreshes, 3);
    assert_eq!((counters.refreshes_ok, counters.refresh_reuses), (1, 2));
}

#[tokio::test]
async fn sequential_refreshes_never_overlap() {
    let cloud = FakeCloud::start(config()).await;
    let client = client();
    let mut token = login(&client, &cloud).await.str("refresh_token").to_owned();
    for _ in 0..3 {
        let reply = refresh(&client, &cloud, &token, "web").await;
        assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);
        token = reply.str("refresh_token").to_owned();
    }
    let counters = cloud.control().counters();
    assert_eq!((counters.max_concurrent_refreshes, counters.refreshes_ok), (1, 3));
}

#[tokio::test]
async fn access_lifetime_sets_expires_in_and_expiry() {
    let cloud = FakeCloud::start(config().with_access_lifetime(Duration::from_secs(30))).await;
    let client = client();
    let reply = login(&client, &cloud).await;
    assert_eq!(reply.body["expires_in"], 29);
    let access = reply.str("access_token");
    assert!(cloud.control().is_access_token_valid(access));
    cloud.control().advance_clock(Duration::from_secs(31));
    assert!(!cloud.control().is_access_token_valid(access));
    // Shortened at run time, for tokens issued from then on.
    cloud.control().set_access_lifetime(Duration::from_secs(5));
    let reply = refresh(&client, &cloud, reply.str("refresh_token"), "web").await;
    assert_eq!(reply.body["expires_in"], 4);
    assert_eq!(cloud.control().expire_all_access_tokens(), 1);
    assert!(!cloud.control().is_access_token_valid(reply.str("access_token")));
}
