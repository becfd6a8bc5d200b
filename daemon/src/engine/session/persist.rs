//! What a session keeps in the state directory: restore at start, saves, holds of unattended login.
//!
//! Every file operation (reads, writes with their fsyncs, renames of files set aside) runs on tokio's blocking
//! pool through [`on_blocking_pool`], never on the runtime thread: the session task waits for it, the rest of the
//! daemon does not.

use std::sync::Arc;
use std::time::SystemTime;

use token_model::ids::TokenName;
use token_model::secret::{AccessToken, RefreshToken};
use token_model::time::{self, ClockPair};

use super::{SessionTask, Unattended, clock_pair, hex};
use crate::engine::{Event, StateStore, unix_seconds};
use crate::state_file::{HoldReason, HoldRecord, SessionRecord};

/// One state-directory operation of a session, for [`on_blocking_pool`].
enum StoreOp {
    /// Reads what a new task starts from ([`Saved`]); a saved hold made for other credentials than these is
    /// removed.
    Restore(Option<Unattended>),
    Save(Box<SessionRecord>),
    Remove,
    SaveHold(Box<HoldRecord>),
    RemoveHold,
}

/// What a session task starts from, as read from the state directory.
struct Saved {
    /// The hold of unattended login that still applies to the configured credentials.
    hold: Option<HoldRecord>,
    /// The saved session, or why it could not be used.
    session: Result<Option<Box<SessionRecord>>, String>,
}

/// Runs a store operation on tokio's blocking pool (file reads and writes with fsync must not hold up the runtime
/// thread). One operation type for every kind: the pool's task machinery is built once (each closure type would add
/// its own). Only [`StoreOp::Restore`] finds something; the others answer `Ok(None)` when done.
async fn on_blocking_pool(
    store: Arc<StateStore>,
    name: TokenName,
    operation: StoreOp,
) -> Result<Option<Saved>, String> {
    tokio::task::spawn_blocking(move || match operation {
        StoreOp::Restore(unattended) => {
            let hold = restore_hold(&store, &name, unattended.as_ref());
            Ok(Some(Saved { hold, session: store.load(&name) }))
        }
        StoreOp::Save(record) => store.save(&record).map(|()| None),
        StoreOp::Remove => store.remove(&name).map(|()| None),
        StoreOp::SaveHold(hold) => store.save_hold(&hold).map(|()| None),
        StoreOp::RemoveHold => store.remove_hold(&name).map(|()| None),
    })
    .await
    .unwrap_or_else(|e| Err(format!("the state writer stopped: {e}")))
}

/// At start: a saved hold applies while the configured credentials are the ones it was made for; otherwise
/// (other credentials, or none any more) it is removed. Blocks on the file system.
fn restore_hold(store: &StateStore, name: &TokenName, unattended: Option<&Unattended>) -> Option<HoldRecord> {
    let hold = match store.load_hold(name) {
        Ok(Some(hold)) => hold,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(token = %name, "{e}; unattended login is not held");
            return None;
        }
    };
    let salt: Option<Vec<u8>> = (0..hold.salt.len())
        .step_by(2)
        .map(|i| hold.salt.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect();
    let same = match (unattended, salt) {
        (Some(unattended), Some(salt)) => unattended.fingerprint(&salt) == hold.fingerprint,
        _ => false,
    };
    if !same {
        tracing::info!(token = %name, "the credentials changed since unattended login was held ({:?} at {}); it is tried again", hold.reason, time::rfc3339(hold.since));
        if let Err(e) = store.remove_hold(name) {
            tracing::error!(token = %name, "could not remove the saved hold of unattended login: {e}");
        }
        return None;
    }
    Some(hold)
}

impl SessionTask {
    /// Takes up the saved session and hold, read on the blocking pool, and publishes what the entry serves.
    pub(super) async fn restore(&mut self) {
        let Some(store) = self.settings.store.clone() else {
            self.publish(false);
            return;
        };
        let read = on_blocking_pool(store, self.name.clone(), StoreOp::Restore(self.unattended.clone())).await;
        let saved = match read {
            Ok(saved) => saved.unwrap_or(Saved { hold: None, session: Ok(None) }),
            Err(e) => Saved { hold: None, session: Err(e) },
        };
        if let Some(hold) = saved.hold {
            self.hold = Some(hold.reason);
            self.last_error = format!("{} (since {})", hold.message, time::rfc3339(hold.since));
            tracing::warn!(token = %self.name, "unattended login is held: {}", self.last_error);
        }
        match saved.session {
            Ok(Some(saved)) => self.take_up(*saved),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(token = %self.name, "could not restore the saved session: {e}");
                self.last_error = e;
            }
        }
        self.publish(true);
    }

    /// Takes up a saved session: the plan decides what it needs now.
    fn take_up(&mut self, saved: SessionRecord) {
        let pair = clock_pair();
        let mut trust = time::check_wall_clock(saved.session.known_good, pair.wall);
        if !trust.is_trusted() {
            tracing::warn!(token = %self.name, "the wall clock is behind the last known good time; the saved access token is not trusted and will be refreshed");
        } else if !self.settings.clock.confirmed() {
            // Plausible is not confirmed: without a real-time clock the time at boot is the last saved one.
            trust = time::WallClockTrust::Untrusted(time::UntrustedReason::Unconfirmed);
            tracing::info!(token = %self.name, "the wall clock is not confirmed (the system does not report it synchronised: timedatectl shows NTPSynchronized=no, or timedated did not answer); the saved access token is refreshed before it is served");
        }
        // The plan decides what the restored session needs; a refresh-token deadline that seems past
        // by the local clock is not a verdict (only the cloud's answer is).
        let mut restored = saved.session.restore(pair, trust, self.unattended.is_some(), Self::jitter());
        // A fleet that starts in the same second (after a power cut) spreads its first requests.
        let startup = self.settings.startup;
        let offset = startup.offset(self.name.as_str(), token_model::fleet::STARTUP_JOB);
        // The plan's next request (in the journal at debug level) shows the wait.
        restored.spread_start(pair.mono, offset, startup.window(), self.policy());
        let access = Arc::new(saved.access_token);
        self.access = restored.access_deadline().map(|_| access.clone());
        self.saved_access = Some(access);
        self.refresh_sent_at = saved.refresh_sent_at;
        // A refresh whose answer was never saved: its outcome is in doubt.
        self.in_doubt_since = saved.refresh_sent_at;
        if let Some(at) = saved.refresh_sent_at {
            tracing::warn!(
                token = %self.name,
                "att-tokend stopped while a refresh sent at {} was unanswered; the next refresh shows whether \
                 the cloud had already replaced the refresh token",
                time::rfc3339(at)
            );
        }
        self.refresh = Some(saved.refresh_token);
        self.username = saved.username;
        self.plan = Some(restored);
        tracing::info!(token = %self.name, "restored the saved session");
    }

    /// Writes the session (these tokens and the planner's durable facts) to the store; a failure is logged
    /// and raised as `AttentionNeeded`, since the session would not survive a restart. The write (with its
    /// fsyncs) runs on the blocking pool; the session waits for it, the rest of the daemon does not.
    pub(super) async fn save(&self, access: &AccessToken, refresh: &RefreshToken, pair: ClockPair) {
        if let (Some(store), Some(plan)) = (self.settings.store.clone(), &self.plan) {
            let record = SessionRecord {
                refresh_sent_at: self.refresh_sent_at,
                ..SessionRecord::new(
                    self.name.clone(),
                    store.origin(),
                    self.username.clone(),
                    refresh.clone(),
                    access.clone(),
                    plan.to_persisted(pair),
                )
            };
            let result = on_blocking_pool(store, self.name.clone(), StoreOp::Save(Box::new(record))).await;
            if let Err(e) = result {
                let reason = format!(
                    "the session of {:?} could not be saved ({e}); it will not survive a restart: check the state \
                     directory's permissions and free space",
                    self.name.as_str()
                );
                tracing::error!(token = %self.name, "{reason}");
                self.engine.emit(Event::AttentionNeeded { name: self.name.clone(), reason });
            }
        }
    }

    /// Removes the saved session from the store, if there is one (a session in memory only has nothing to remove).
    pub(super) async fn remove_saved(&self) -> Result<(), String> {
        match self.settings.store.clone() {
            Some(store) => on_blocking_pool(store, self.name.clone(), StoreOp::Remove).await.map(|_| ()),
            None => Ok(()),
        }
    }

    pub(super) async fn forget_saved(&self) {
        if let Err(e) = self.remove_saved().await {
            tracing::error!(token = %self.name, "could not remove the saved session: {e}");
        }
    }

    /// Holds unattended login for `reason` and saves the hold (with a fingerprint of the configured credentials, never
    /// the credentials) so that a restart keeps it. A failed save is logged: the hold then lasts until a restart.
    pub(super) async fn set_hold(&mut self, reason: HoldReason) {
        self.hold = Some(reason);
        let (Some(store), Some(unattended)) = (self.settings.store.clone(), self.unattended.as_ref()) else { return };
        let mut salt = [0_u8; 16];
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt).is_err() {
            tracing::warn!(token = %self.name, "no random salt for the hold's fingerprint; the hold is not saved");
            return;
        }
        let record = HoldRecord {
            name: self.name.clone(),
            reason,
            since: unix_seconds(SystemTime::now()),
            salt: hex(&salt),
            fingerprint: unattended.fingerprint(&salt),
            message: self.last_error.clone(),
        };
        if let Err(e) = on_blocking_pool(store, self.name.clone(), StoreOp::SaveHold(Box::new(record))).await {
            tracing::error!(token = %self.name, "could not save that unattended login is held ({e}); a restart would try the credentials again");
        }
    }

    /// Ends a hold of unattended login, on disk too.
    pub(super) async fn lift_hold(&mut self) {
        if self.hold.take().is_none() {
            return;
        }
        tracing::info!(token = %self.name, "unattended login is no longer held");
        if let Some(store) = self.settings.store.clone()
            && let Err(e) = on_blocking_pool(store, self.name.clone(), StoreOp::RemoveHold).await
        {
            tracing::error!(token = %self.name, "could not remove the saved hold of unattended login: {e}");
        }
    }
}
