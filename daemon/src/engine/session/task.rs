//! The session task's loop: what the plan says is due, when to wake, and what the entry shows.

use token_model::plan::{self, Action, Attempt, TokenState};
use token_model::time::{self, MonoTime};
use tokio::sync::mpsc;

use super::{Command, SessionTask, clock_pair, human, now, same_credentials};
use crate::engine::{Event, State, TokenValue, write};

impl SessionTask {
    /// The task's loop. `_owner` is this token's ownership, released when the task ends (after its last save).
    pub(super) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        _owner: tokio::sync::OwnedMutexGuard<()>,
    ) {
        let mut told: Option<Action> = None;
        // One boot-time timer for the task's life, armed anew for each wait.
        let mut sleeper = crate::clock::Sleeper::new();
        loop {
            let now = now();
            let (action, wake) = self.next(now);
            // Each new decision of the plan is in the journal at debug level (never a secret).
            if told != Some(action) {
                tracing::debug!(token = %self.name, "plan: {}", self.describe(action, now));
                told = Some(action);
            }
            tokio::select! {
                command = rx.recv() => match command {
                    None => break,
                    Some(Command::Shutdown(reply)) => {
                        let _ = reply.send(());
                        break;
                    }
                    Some(command) => self.handle(command).await,
                },
                // A boot-time timer: a suspend that carries the clock past `wake` ends the sleep at the resume.
                () = sleeper.until(wake.unwrap_or(now)), if wake.is_some() => self.on_due().await,
            }
        }
        tracing::debug!(token = %self.name, "session task stopped");
    }

    /// The plan's next action, and when to wake for it or for the end of the serving window.
    fn next(&self, now: MonoTime) -> (Action, Option<MonoTime>) {
        let action = plan::plan(self.plan.as_ref(), self.policy(), now);
        let mut wake = action.at();
        if self.plan.is_none() && self.unattended.is_some() && self.hold.is_none() {
            wake = Some(self.login_retry_at.unwrap_or(now));
        }
        if let Some(end) = self.serve_until().filter(|end| *end > now) {
            wake = Some(wake.map_or(end, |w| w.min(end)));
        }
        (action, wake)
    }

    /// The instant the served token stops being served (its expiry less the safety margin).
    pub(super) fn serve_until(&self) -> Option<MonoTime> {
        self.access.as_ref()?;
        self.plan.as_ref()?.serve_until(self.policy())
    }

    /// One plan decision in words, with its time as a date.
    fn describe(&self, action: Action, now: MonoTime) -> String {
        let pair = clock_pair();
        let date = |at: MonoTime| {
            let in_s = at.saturating_since(now).as_secs();
            format!("{} (in {in_s} s)", pair.wall_at(at))
        };
        match action {
            Action::Refresh { at, reason } => format!("next refresh at {} ({reason:?})", date(at)),
            Action::Retry { at, attempt, failures } => format!(
                "{attempt:?} retry at {} after {failures} transient failure(s) in a row (backoff, with jitter, \
                 never before the refresh floor)",
                date(at)
            ),
            Action::ReLogin { at } => format!("unattended login at {}", date(at)),
            Action::WarnLapse { at, lapses_at } => format!(
                "lapse warning at {}; the refresh token lapses at {}",
                date(at),
                time::rfc3339(lapses_at.expires_at())
            ),
            Action::NeedsLogin { reason } => format!("nothing until a login ({reason:?})"),
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::EnsureValidFor { wanted, uid, reply } => {
                let result = self.ensure_valid_for(wanted, uid).await;
                let _ = reply.send(result);
            }
            Command::Nudge { uid } => {
                self.nudged.store(false, std::sync::atomic::Ordering::Release);
                self.nudge(uid).await;
            }
            Command::Login { username, password, code, reply } => {
                let result = self.human_login(username, password, code).await;
                let _ = reply.send(result);
            }
            Command::Refresh(reply) => {
                let result = match self.refresh.is_some() {
                    true => self.admin_refresh().await,
                    false => Err(self.needs_login_error()),
                };
                let _ = reply.send(result);
            }
            Command::Logout(reply) => {
                let result = self.logout().await;
                let _ = reply.send(result);
            }
            Command::Probe(reply) => {
                self.probe().await;
                let _ = reply.send(());
            }
            Command::Reconfigure(unattended) => {
                if let Some(plan) = &mut self.plan {
                    plan.set_unattended_relogin(unattended.is_some());
                }
                // Only new credentials are a new chance: a reload that changes nothing does not retry credentials
                // the cloud refused, nor end a logout's suspension.
                if !same_credentials(self.unattended.as_ref(), unattended.as_ref()) {
                    if unattended.is_some() {
                        tracing::debug!(token = %self.name, "new credentials for unattended login");
                    }
                    self.login_failures = 0;
                    self.login_retry_at = None;
                    self.lift_hold().await;
                    if let Some(plan) = &mut self.plan {
                        plan.credentials_changed();
                    }
                }
                self.unattended = unattended;
            }
            Command::Policy(policy) => {
                self.settings.policy = policy;
                self.publish(false);
            }
            Command::Rebind(entry) => {
                self.entry = entry;
                self.publish(false);
            }
            Command::Shutdown(_) => {}
        }
    }

    /// Does what the plan says is due now.
    async fn on_due(&mut self) {
        let now = now();
        let (action, _) = self.next(now);
        if self.plan.is_none() {
            if self.unattended.is_some() && self.hold.is_none() && self.login_retry_at.is_none_or(|at| at <= now) {
                self.login_unattended().await;
            }
            return;
        }
        match action {
            Action::Refresh { at, .. } | Action::Retry { at, attempt: Attempt::Refresh, .. } if at <= now => {
                let _ = self.refresh_now().await;
            }
            Action::Retry { at, attempt: Attempt::Login, .. } | Action::ReLogin { at } if at <= now => {
                self.login_unattended().await;
            }
            Action::WarnLapse { at, lapses_at } if at <= now => {
                let left = lapses_at.remaining(now);
                let reason = format!(
                    "the session of {:?} lapses in {} (at {}) and cannot be renewed without a login; run \
                     `att-token login {}` before then",
                    self.name.as_str(),
                    human(left),
                    time::rfc3339(lapses_at.expires_at()),
                    self.name.as_str()
                );
                tracing::warn!(token = %self.name, "{reason}");
                if let Some(plan) = &mut self.plan {
                    plan.record_warning(now, &self.settings.policy);
                }
                // Keep the warning on disk, so a restart does not give it again.
                if let (Some(access), Some(refresh)) = (self.saved_access.clone(), self.refresh.clone()) {
                    self.save(&access, &refresh, clock_pair()).await;
                }
                self.engine.emit(Event::AttentionNeeded { name: self.name.clone(), reason });
                self.publish(false);
            }
            _ => {
                // The end of the serving window: the token is no longer handed out.
                if self.serve_until().is_some_and(|end| end <= now) {
                    self.access = None;
                    self.publish(true);
                }
            }
        }
    }

    /// Copies the session's view into the entry and tells the world. `token_changed`: the served token changed.
    pub(super) fn publish(&mut self, token_changed: bool) {
        let Some(entry) = self.entry.upgrade() else { return };
        let now = now();
        let policy = self.policy();
        let pair = clock_pair();
        let (state, attention, next_refresh_at, refresh_expires_at) = match &self.plan {
            Some(plan) => {
                let state = match plan.state(now, policy) {
                    TokenState::Valid => State::Valid,
                    TokenState::Retrying => State::Retrying,
                    TokenState::Expired => State::Expired,
                    TokenState::NeedsLogin => State::NeedsLogin,
                };
                let next = match plan.plan(policy, now) {
                    Action::Refresh { at, .. } | Action::Retry { at, .. } | Action::ReLogin { at } => {
                        pair.wall_at(at).unix_seconds()
                    }
                    Action::WarnLapse { .. } | Action::NeedsLogin { .. } => 0,
                };
                let refresh = time::expires_at(plan.refresh_deadline().as_ref());
                (state, plan.attention_needed(now, policy), next, refresh)
            }
            None => (State::NeedsLogin, true, 0, 0),
        };
        let state = if self.busy { State::Refreshing } else { state };
        let expires_at = if self.access.is_some() { self.expires_at() } else { 0 };
        {
            let mut live = write(&entry.live);
            live.token = self.access.as_ref().map(|a| TokenValue::Access(a.clone()));
            live.serve_until = self.serve_until();
            let status = &mut live.status;
            status.state = state;
            status.expires_at = expires_at;
            status.refresh_token_expires_at = refresh_expires_at;
            status.next_refresh_at = next_refresh_at;
            status.attention_needed = attention;
            status.last_error.clone_from(&self.last_error);
        }
        self.engine.emit(Event::StatusChanged(self.name.clone()));
        if token_changed {
            self.engine.emit(Event::TokenChanged { name: self.name.clone(), expires_at });
        }
    }
}
