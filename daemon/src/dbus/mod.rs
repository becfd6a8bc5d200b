//! The D-Bus face of the daemon: `io.allthingstalk.TokenAgent1` at `/io/allthingstalk/TokenAgent1`, one
//! `io.allthingstalk.TokenAgent1.Token` object per configured token, the errors, and who may ask.
//!
//! [`Service::serve`] builds a connection with every object served on it (a bus connection before the name is
//! requested, or one end of a peer-to-peer pair) and starts the task that turns engine [`Event`]s into
//! `TokenChanged`, `AttentionNeeded` and `PropertiesChanged` signals. No signal and no property carries a secret.

pub mod access;
pub mod error;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, btree_map};
use std::sync::Arc;

use serde::{Serialize, Serializer};
use token_model::ids::TokenName;
use token_model::secret::{ExposeSecret, MfaCode, Password};
use tokio::sync::broadcast;
use zbus::connection::Builder;
use zbus::message::Header;
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, Signature, Type, Variant, interface};

use self::access::{Caller, Credentials};
use self::error::ServiceError;
use crate::engine::{Engine, EngineError, Event, Served, Status, TokenValue};

/// The well-known bus name.
pub const BUS_NAME: &str = "io.allthingstalk.TokenAgent1";
/// The path of the main object.
pub const OBJECT_PATH: &str = "/io/allthingstalk/TokenAgent1";
/// The main interface.
pub const INTERFACE: &str = "io.allthingstalk.TokenAgent1";
/// The interface of the per-token objects.
pub const TOKEN_INTERFACE: &str = "io.allthingstalk.TokenAgent1.Token";

/// The object path of a token's object: `/io/allthingstalk/TokenAgent1/token/<escaped name>`.
pub fn token_path(name: &TokenName) -> String {
    format!("{OBJECT_PATH}/token/{}", crate::client::escape_path_element(name.as_str()))
}

/// A token on its way out in a reply: written straight from the secret into the message, with no
/// intermediate `String` copy.
#[derive(Debug)]
pub struct TokenReply(TokenValue);

impl Serialize for TokenReply {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.expose_secret())
    }
}

impl Type for TokenReply {
    const SIGNATURE: &'static Signature = &Signature::Str;
}

/// The main object: `io.allthingstalk.TokenAgent1`.
#[derive(Debug)]
pub struct Agent {
    engine: Engine,
    credentials: Arc<Credentials>,
}

impl Agent {
    async fn caller(&self, connection: &Connection, header: &Header<'_>) -> Result<Caller, ServiceError> {
        self.credentials
            .caller(connection, header.sender())
            .await
            .map_err(|e| ServiceError::from(EngineError::AccessDenied(e.to_string())))
    }

    async fn admin(&self, connection: &Connection, header: &Header<'_>, what: &str) -> Result<(), ServiceError> {
        let caller = self.caller(connection, header).await?;
        self.engine.require_admin(&caller, what)?;
        tracing::debug!(uid = caller.uid, "an admin asked to {what}");
        Ok(())
    }
}

fn reply(served: Served) -> (TokenReply, i64) {
    (TokenReply(served.token), served.expires_at)
}

/// Hands out AllThingsTalk tokens to local processes. Callers are identified by the bus (their uid and
/// groups); each token has readers, and admins may log in, refresh and log out.
#[interface(name = "io.allthingstalk.TokenAgent1")]
impl Agent {
    /// The token `name` as it is now, with its expiry (Unix seconds, 0 when it has none). Readers of `name`.
    #[zbus(out_args("token", "expires_at"))]
    async fn get_token(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(TokenReply, i64), ServiceError> {
        let caller = self.caller(connection, &header).await?;
        Ok(reply(self.engine.get_token(name, &caller)?))
    }

    /// The token `name`, valid for at least `seconds` from now, refreshing first if needed. Readers of `name`.
    #[zbus(out_args("token", "expires_at"))]
    async fn get_token_valid_for(
        &self,
        name: &str,
        seconds: u32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(TokenReply, i64), ServiceError> {
        let caller = self.caller(connection, &header).await?;
        Ok(reply(self.engine.get_token_valid_for(name, seconds, &caller).await?))
    }

    /// The least-privileged token the caller may read that may access the device: its device token, else a
    /// ground token whose ground holds it, else a user token.
    #[zbus(out_args("name", "token", "expires_at"))]
    async fn get_token_for_device(
        &self,
        device_id: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(String, TokenReply, i64), ServiceError> {
        let caller = self.caller(connection, &header).await?;
        let (name, served) = self.engine.get_token_for_device(device_id, &caller)?;
        let (token, expires_at) = reply(served);
        Ok((name.into(), token, expires_at))
    }

    /// The tokens the caller may read: name, kind (user/device/ground), expires_at, state, attention_needed.
    #[zbus(out_args("tokens"))]
    async fn list_tokens(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<(String, String, i64, String, bool)>, ServiceError> {
        let caller = self.caller(connection, &header).await?;
        Ok(self
            .engine
            .list(&caller)
            .into_iter()
            .map(|(name, kind, status)| {
                (
                    name.into(),
                    kind.as_str().to_owned(),
                    status.expires_at,
                    status.state.as_str().to_owned(),
                    status.attention_needed,
                )
            })
            .collect())
    }

    /// Logs the user token `name` in: password grant, then the MFA step with `code` (6 digits; empty when the
    /// account has no MFA). Admins.
    #[zbus(out_args("expires_at"))]
    async fn login(
        &self,
        name: &str,
        username: &str,
        password: &str,
        code: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<i64, ServiceError> {
        self.admin(connection, &header, "log in").await?;
        if username.trim().is_empty() {
            return Err(EngineError::InvalidArgs(
                "the username is empty; give the AllThingsTalk account's username".to_owned(),
            )
            .into());
        }
        if password.is_empty() {
            return Err(
                EngineError::InvalidArgs("the password is empty; give the account's password".to_owned()).into()
            );
        }
        let code = match code.trim() {
            "" => None,
            code => Some(MfaCode::parse(code).map_err(|e| EngineError::InvalidArgs(e.to_string()))?),
        };
        Ok(self.engine.login(name, username.trim().to_owned(), Password::new(password), code).await?)
    }

    /// Refreshes the user token `name` now. Admins.
    #[zbus(out_args("expires_at"))]
    async fn refresh(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<i64, ServiceError> {
        self.admin(connection, &header, "refresh").await?;
        Ok(self.engine.refresh(name).await?)
    }

    /// Forgets the user session `name`, also on disk. Admins.
    async fn logout(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), ServiceError> {
        self.admin(connection, &header, "log out").await?;
        Ok(self.engine.logout(name).await?)
    }

    /// A token changed: a new one is served, with this expiry (0 when none is served now). Never the token.
    #[zbus(signal)]
    async fn token_changed(emitter: &SignalEmitter<'_>, name: &str, expires_at: i64) -> zbus::Result<()>;

    /// A person must act on the token `name`; `reason` says what happened and what to do.
    #[zbus(signal)]
    async fn attention_needed(emitter: &SignalEmitter<'_>, name: &str, reason: &str) -> zbus::Result<()>;
}

/// One configured token: `io.allthingstalk.TokenAgent1.Token`. Its properties hold no secret.
#[derive(Debug)]
pub struct TokenObject {
    engine: Engine,
    name: TokenName,
}

impl TokenObject {
    fn status(&self) -> Status {
        self.engine.status(&self.name).map(|(_, s)| s).unwrap_or_else(|| Status {
            state: crate::engine::State::NeedsLogin,
            expires_at: 0,
            refresh_token_expires_at: 0,
            next_refresh_at: 0,
            attention_needed: false,
            last_error: "this token is no longer configured".to_owned(),
        })
    }
}

/// A configured token: its state and deadlines. Read-only; PropertiesChanged on change.
#[interface(name = "io.allthingstalk.TokenAgent1.Token")]
impl TokenObject {
    /// The token's name.
    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> String {
        self.name.as_str().to_owned()
    }

    /// `user`, `device` or `ground`.
    #[zbus(property(emits_changed_signal = "const"))]
    fn kind(&self) -> String {
        self.engine.status(&self.name).map_or("", |(kind, _)| kind.as_str()).to_owned()
    }

    /// `valid`, `refreshing`, `retrying`, `expired`, `needs-login` or `revoked`.
    #[zbus(property)]
    fn state(&self) -> String {
        self.status().state.as_str().to_owned()
    }

    /// When the served token expires, Unix seconds; 0 when it has no known expiry or none is served.
    #[zbus(property)]
    fn expires_at(&self) -> i64 {
        self.status().expires_at
    }

    /// When the refresh token lapses, Unix seconds; 0 when unknown or not a user token.
    #[zbus(property)]
    fn refresh_token_expires_at(&self) -> i64 {
        self.status().refresh_token_expires_at
    }

    /// When the next refresh is planned, Unix seconds; 0 when none is.
    #[zbus(property)]
    fn next_refresh_at(&self) -> i64 {
        self.status().next_refresh_at
    }

    /// Whether a person must act.
    #[zbus(property)]
    fn attention_needed(&self) -> bool {
        self.status().attention_needed
    }

    /// The last error (no secret), empty when the last attempt succeeded.
    #[zbus(property)]
    fn last_error(&self) -> String {
        self.status().last_error
    }
}

/// The installed service on one connection.
#[derive(Debug, Clone)]
pub struct Service {
    connection: Connection,
    engine: Engine,
}

impl Service {
    /// Builds the connection from `builder` with every object served on it, and starts forwarding engine
    /// events as signals. Give a bus builder before the name is requested, or one end of a peer-to-peer pair.
    ///
    /// The main object goes into the builder rather than onto a built connection: then zbus starts its method
    /// dispatcher before the connection reads its first message. An object added to a connection already
    /// reading can miss a call that arrives before the dispatcher has started; that call never gets a reply.
    pub async fn serve(builder: Builder<'_>, engine: Engine, credentials: Arc<Credentials>) -> zbus::Result<Self> {
        let events = engine.subscribe();
        let connection = builder.serve_at(OBJECT_PATH, Agent { engine: engine.clone(), credentials }).build().await?;
        let service = Service { connection, engine };
        let mut published = BTreeMap::new();
        service.sync_objects(&mut published).await?;
        tokio::spawn(service.clone().forward(events, published));
        Ok(service)
    }

    /// The connection the objects are served on.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Adds objects for new tokens, removes those of tokens no longer configured, and emits
    /// `PropertiesChanged` for every property that changed since it was last published.
    async fn sync_objects(&self, published: &mut BTreeMap<TokenName, Status>) -> zbus::Result<()> {
        let names = self.engine.names();
        let gone: Vec<TokenName> = published.keys().filter(|n| !names.contains(n)).cloned().collect();
        for name in gone {
            published.remove(&name);
            self.connection.object_server().remove::<TokenObject, _>(token_path(&name).as_str()).await?;
        }
        for name in names {
            if let btree_map::Entry::Vacant(slot) = published.entry(name.clone()) {
                let object = TokenObject { engine: self.engine.clone(), name: name.clone() };
                self.connection.object_server().at(token_path(&name).as_str(), object).await?;
                if let Some((_, status)) = self.engine.status(&name) {
                    slot.insert(status);
                }
            } else {
                self.publish_changes(&name, published).await?;
            }
        }
        Ok(())
    }

    async fn publish_changes(&self, name: &TokenName, published: &mut BTreeMap<TokenName, Status>) -> zbus::Result<()> {
        let Some((_, now)) = self.engine.status(name) else { return Ok(()) };
        let Some(before) = published.get_mut(name) else { return Ok(()) };
        let mut changed: HashMap<&str, Variant<'_>> = HashMap::new();
        if now.state != before.state {
            changed.insert("State", Variant::from(now.state.as_str()));
        }
        if now.expires_at != before.expires_at {
            changed.insert("ExpiresAt", Variant::from(now.expires_at));
        }
        if now.refresh_token_expires_at != before.refresh_token_expires_at {
            changed.insert("RefreshTokenExpiresAt", Variant::from(now.refresh_token_expires_at));
        }
        if now.next_refresh_at != before.next_refresh_at {
            changed.insert("NextRefreshAt", Variant::from(now.next_refresh_at));
        }
        if now.attention_needed != before.attention_needed {
            changed.insert("AttentionNeeded", Variant::from(now.attention_needed));
        }
        if now.last_error != before.last_error {
            changed.insert("LastError", Variant::from(now.last_error.as_str()));
        }
        if !changed.is_empty() {
            let emitter = SignalEmitter::new(&self.connection, token_path(name))?;
            zbus::fdo::Properties::properties_changed(
                &emitter,
                InterfaceName::from_static_str_unchecked(TOKEN_INTERFACE),
                changed,
                Cow::Borrowed(&[]),
            )
            .await?;
        }
        *before = now;
        Ok(())
    }

    async fn forward(self, mut events: broadcast::Receiver<Event>, mut published: BTreeMap<TokenName, Status>) {
        let Ok(emitter) = SignalEmitter::new(&self.connection, OBJECT_PATH) else { return };
        loop {
            // The task ends with the connection: a peer-to-peer client that hung up leaves nothing behind.
            let event = tokio::select! {
                event = events.recv() => event,
                () = self.connection.closed() => break,
            };
            let result = match event {
                Ok(Event::TokenChanged { name, expires_at }) => {
                    Agent::token_changed(&emitter, name.as_str(), expires_at).await
                }
                Ok(Event::AttentionNeeded { name, reason }) => {
                    Agent::attention_needed(&emitter, name.as_str(), &reason).await
                }
                // Few tokens, rare events: compare everything, which also picks up reloads.
                Ok(Event::StatusChanged(_)) => self.sync_objects(&mut published).await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "signal forwarder lagged; publishing every token's state again");
                    self.sync_objects(&mut published).await
                }
                Err(broadcast::error::RecvError::Closed) => break,
            };
            if let Err(e) = result {
                if self.connection.is_closed() {
                    break;
                }
                tracing::warn!("could not emit a D-Bus signal: {e}");
            }
        }
    }

    /// The engine behind the service.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}
