//! What the engine tells the world: [`Event`]s, what a subscriber reads again after each ([`Reread`]), and a
//! [`Tally`] of the tokens that need attention kept from them.
//!
//! An event about a token names it, and a subscriber that mirrors tokens' state reads that one token again; only
//! [`Event::Reconfigured`] (a configuration applied, once per start or reload) or events missed by a subscriber
//! that lagged make it read every token. So the cost of an event does not grow with the number of tokens.

use std::collections::BTreeSet;

use token_model::ids::TokenName;
use tokio::sync::broadcast;

use super::Engine;
use crate::access::Caller;

/// A change worth telling the world about. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new token is served (or none is, with `expires_at` 0).
    TokenChanged {
        /// The token.
        name: TokenName,
        /// The new expiry, Unix seconds.
        expires_at: i64,
    },
    /// A person must act.
    AttentionNeeded {
        /// The token.
        name: TokenName,
        /// What happened and what to do.
        reason: String,
    },
    /// The token's [`Status`](super::Status) may have changed.
    StatusChanged(TokenName),
    /// A configuration was applied (at start and on each reload): tokens may have come or gone, and any token's
    /// readers, files, value or status may have changed. The one event after which every token is read again.
    Reconfigured,
}

/// What a subscriber reads again after an event ([`Event::rereads`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reread<'a> {
    /// Nothing: the event changes no token's state (`AttentionNeeded`), or the channel closed.
    Nothing,
    /// The one token the event names.
    Token(&'a TokenName),
    /// Every token: a configuration was applied, or the subscriber missed events.
    Every,
}

impl Event {
    /// What a subscriber that mirrors tokens' state must read again after `received` (an event, or the
    /// channel's report that events were missed).
    pub fn rereads(received: &Result<Event, broadcast::error::RecvError>) -> Reread<'_> {
        match received {
            Ok(Event::TokenChanged { name, .. } | Event::StatusChanged(name)) => Reread::Token(name),
            Ok(Event::AttentionNeeded { .. }) | Err(broadcast::error::RecvError::Closed) => Reread::Nothing,
            Ok(Event::Reconfigured) | Err(broadcast::error::RecvError::Lagged(_)) => Reread::Every,
        }
    }
}

/// The tokens configured and those that need attention (`AttentionNeeded` is true), kept up to date from events:
/// each event about a token reads that token's status only (for the service's status line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    tokens: usize,
    needing: BTreeSet<TokenName>,
}

impl Tally {
    /// Counts every token of `engine` now.
    pub fn new(engine: &Engine) -> Self {
        let list = engine.list(&Caller::root());
        let needing = list.iter().filter(|(_, _, status)| status.attention_needed).map(|(name, ..)| name.clone());
        Self { tokens: list.len(), needing: needing.collect() }
    }

    /// Takes `received` into account: the token it names is read again, or every token after a reload.
    pub fn follow(&mut self, engine: &Engine, received: &Result<Event, broadcast::error::RecvError>) {
        match Event::rereads(received) {
            Reread::Nothing => {}
            Reread::Token(name) => match engine.status(name) {
                Some((_, status)) if status.attention_needed => {
                    self.needing.insert(name.clone());
                }
                _ => {
                    self.needing.remove(name);
                }
            },
            Reread::Every => *self = Self::new(engine),
        }
    }

    /// How many tokens are configured.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// How many of them need attention.
    pub fn needing_attention(&self) -> usize {
        self.needing.len()
    }
}
