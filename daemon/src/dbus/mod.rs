//! The D-Bus face of the daemon: `io.allthingstalk.TokenAgent1` at `/io/allthingstalk/TokenAgent1`, one
//! `io.allthingstalk.TokenAgent1.Token` object per configured token, the errors, and who may ask.
//!
//! [`Service::serve`] builds a connection with every object served on it (a bus connection before the name is
//! requested, or one end of a peer-to-peer pair) and starts the task that turns engine [`Event`]s into
//! `TokenChanged`, `AttentionNeeded` and `PropertiesChanged` signals. No signal and no property carries a secret.
//! An event about a token publishes that token's changes only; `Reconfigured` (or events missed) adds and removes
//! token objects and publishes every token's changes.
//!
//! Callers' arguments are checked by [`args`] before anything else, once, into the typed values the engine takes. A token object's properties are read by the
//! token's readers only ([`TokenObject`]); its `PropertiesChanged` names what changed without the values.
//! `LastError` holds no token, password, code or username: it is written from the engine's and login-flow's own
//! messages, which quote none of them and pass on only the cloud's `error_description`, redacted and cut short.
//!
//! Every call gets a reply: the main object is handed to the connection builder, so zbus starts its dispatcher
//! before the first message is read, and every message stream the daemon opens is read continuously (one left
//! unread stops the connection reading once its queue is full).
//!
//! Every call of the main interface, and every read of a token object's properties, is counted: as served here
//! ([`error::served`]), as refused where its error is made (`error.rs`); `GetMetrics` gives the counts to any
//! caller, with the figures of the tokens it may read.

pub mod args;
pub mod audit;
pub mod callers;
pub mod error;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, btree_map};
use std::sync::Arc;

use serde::{Serialize, Serializer};
use token_model::ids::TokenName;
use token_model::secret::{ExposeSecret, Password};
use tokio::sync::broadcast;
use zbus::connection::Builder;
use zbus::message::Header;
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, Signature, Type, Variant, interface};

use self::audit::{Audit, Who};
use self::callers::{Callers, Known};
use self::error::{ServiceError, served};
use crate::access::Caller;
use crate::engine::{Engine, EngineError, Event, Reread, Served, Status, TokenValue};
use crate::metrics::{self, Method};

/// The names of the contract, served here as `att-token` calls them: defined in token-agent.
pub use token_agent::{BUS_NAME, INTERFACE, OBJECT_PATH, TOKEN_INTERFACE};

/// The object path of a token's object: `/io/allthingstalk/TokenAgent1/token/<escaped name>`.
pub fn token_path(name: &TokenName) -> String {
    token_agent::token_object_path(name.as_str())
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
    callers: Arc<Callers>,
    audit: Arc<Audit>,
}

impl Agent {
    /// The caller of `method` with its unit; a caller who cannot be identified is refused, in the audit trail too.
    async fn identify(
        &self,
        connection: &Connection,
        header: &Header<'_>,
        method: &str,
        token: Option<&TokenName>,
    ) -> Result<Known, ServiceError> {
        let known = self.callers.caller(connection, header.sender()).await;
        known.map_err(|e| refused(&self.audit, method, token, None, e.into()))
    }

    /// A token call's outcome: the delivery or the refusal goes to the audit trail (and so would a call counter).
    fn served<T>(
        &self,
        method: &str,
        token: &TokenName,
        who: &Known,
        result: Result<T, EngineError>,
    ) -> Result<T, ServiceError> {
        match result {
            Ok(value) => {
                self.audit.delivered(token.as_str(), who_of(Some(who)));
                Ok(value)
            }
            Err(e) => Err(refused(&self.audit, method, Some(token), Some(who), e.into())),
        }
    }

    /// Whether the caller of `method` on `token` is an admin, who may `what`; a refusal goes to the audit trail.
    async fn admin(
        &self,
        connection: &Connection,
        header: &Header<'_>,
        method: &str,
        token: &TokenName,
        what: &str,
    ) -> Result<(), ServiceError> {
        let known = self.identify(connection, header, method, Some(token)).await?;
        let allowed = self.engine.require_admin(&known.caller, what);
        allowed.map_err(|e| refused(&self.audit, method, Some(token), Some(&known), e.into()))?;
        tracing::debug!(uid = known.caller.uid, "an admin asked to {what}");
        Ok(())
    }
}

/// Logs a refused call in the audit trail, with its D-Bus error's short name as the reason, and returns the error.
fn refused(
    audit: &Audit,
    method: &str,
    token: Option<&TokenName>,
    who: Option<&Known>,
    error: ServiceError,
) -> ServiceError {
    let name = zbus::DBusError::name(&error);
    let reason = name.as_str().rsplit('.').next().unwrap_or_default();
    audit.refused(method, token.map(TokenName::as_str), who_of(who), reason);
    error
}

/// The audit's view of a caller.
fn who_of(known: Option<&Known>) -> Who<'_> {
    Who { uid: known.map(|k| k.caller.uid), unit: known.and_then(|k| k.unit.as_deref()) }
}

fn reply(served: Served) -> (TokenReply, i64) {
    (TokenReply(served.token), served.expires_at)
}

/// One token's counts in a `GetMetrics` reply: name, last_success_at, counts (`token_agent::metrics`).
type TokenCounts = (String, i64, Vec<u64>);

/// What `GetMetrics` answers `caller`: the daemon-wide counts, and those of the tokens it may read.
fn metrics_for(engine: &Engine, caller: &Caller) -> (Vec<u64>, Vec<u64>, Vec<u64>, u64, Vec<TokenCounts>) {
    let (counters, counts) = (metrics::counters(), metrics::tokens());
    let tokens = engine
        .list(caller)
        .into_iter()
        .map(|(name, ..)| {
            let (attempts, last_success_at) = counts.token(&name);
            (name.into(), last_success_at, attempts)
        })
        .collect();
    (counters.served_counts(), counters.refused_counts(), counters.cloud_requests(), counters.budget_waits(), tokens)
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
        const METHOD: &str = "GetToken";
        let name = args::name(name).map_err(|e| refused(&self.audit, METHOD, None, None, e.into()))?;
        let who = self.identify(connection, &header, METHOD, Some(&name)).await?;
        let token = self.served(METHOD, &name, &who, self.engine.get_token(&name, &who.caller))?;
        served(Method::GetToken);
        Ok(reply(token))
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
        const METHOD: &str = "GetTokenValidFor";
        let checked = args::name(name).and_then(|name| Ok((name, args::seconds(seconds)?)));
        let (name, wanted) = checked.map_err(|e| refused(&self.audit, METHOD, None, None, e.into()))?;
        let who = self.identify(connection, &header, METHOD, Some(&name)).await?;
        let token = self.engine.get_token_valid_for(&name, wanted, &who.caller).await;
        let token = self.served(METHOD, &name, &who, token)?;
        served(Method::GetTokenValidFor);
        Ok(reply(token))
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
        const METHOD: &str = "GetTokenForDevice";
        let device = args::device_id(device_id).map_err(|e| refused(&self.audit, METHOD, None, None, e.into()))?;
        let who = self.identify(connection, &header, METHOD, None).await?;
        let found = self.engine.get_token_for_device(&device, &who.caller);
        let (name, token) = found.map_err(|e| refused(&self.audit, METHOD, None, Some(&who), e.into()))?;
        self.audit.delivered(name.as_str(), who_of(Some(&who)));
        served(Method::GetTokenForDevice);
        let (token, expires_at) = reply(token);
        Ok((name.into(), token, expires_at))
    }

    /// The tokens the caller may read: name, kind (user/device/ground), expires_at, state, attention_needed.
    #[zbus(out_args("tokens"))]
    async fn list_tokens(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<(String, String, i64, String, bool)>, ServiceError> {
        let caller = self.identify(connection, &header, "ListTokens", None).await?.caller;
        served(Method::ListTokens);
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

    /// The daemon's counts, and those of the tokens the caller may read (README, "Monitoring"). Any caller.
    #[zbus(out_args("served", "refused", "cloud_requests", "budget_waits", "tokens"))]
    async fn get_metrics(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(Vec<u64>, Vec<u64>, Vec<u64>, u64, Vec<TokenCounts>), ServiceError> {
        let caller = self.identify(connection, &header, "GetMetrics", None).await?.caller;
        served(Method::GetMetrics);
        Ok(metrics_for(&self.engine, &caller))
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
        let name = args::login(name, username, password, code)?;
        self.admin(connection, &header, "Login", &name, "log in").await?;
        let code = args::mfa_code(code)?;
        let expires_at = self.engine.login(&name, username.trim().to_owned(), Password::new(password), code).await?;
        served(Method::Login);
        Ok(expires_at)
    }

    /// Refreshes the user token `name` now. Admins.
    #[zbus(out_args("expires_at"))]
    async fn refresh(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<i64, ServiceError> {
        let name = args::name(name)?;
        self.admin(connection, &header, "Refresh", &name, "refresh").await?;
        let expires_at = self.engine.refresh(&name).await?;
        served(Method::Refresh);
        Ok(expires_at)
    }

    /// Forgets the user session `name`, also on disk. Admins.
    async fn logout(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), ServiceError> {
        let name = args::name(name)?;
        self.admin(connection, &header, "Logout", &name, "log out").await?;
        self.engine.logout(&name).await?;
        served(Method::Logout);
        Ok(())
    }

    /// How user sessions are kept at rest: `sealed` (encrypted with the state key), `unsealed` (no state key is
    /// configured: the refresh tokens are on disk in clear) or `memory` (not saved).
    #[zbus(property(emits_changed_signal = "const"))]
    fn session_storage(&self) -> String {
        self.engine.session_storage().to_owned()
    }

    /// The AllThingsTalk REST base URL the daemon talks to (`[api] url`, without a trailing slash), for clients
    /// such as `att-token proxy` that send API requests with its tokens. Not a secret: any caller may read it.
    #[zbus(property(emits_changed_signal = "const"))]
    fn api_url(&self) -> String {
        self.engine.api_url()
    }

    /// Whether the daemon counts the wall clock as confirmed, as it found when it last asked (at start and at each
    /// reload): systemd's timedated reports it synchronised (`timedatectl show -p NTPSynchronized`) and
    /// `[daemon] trust_kernel_time_sync` is on. While false, a saved access token is refreshed before it is served.
    #[zbus(property(emits_changed_signal = "false"))]
    fn clock_confirmed(&self) -> bool {
        self.engine.clock_confirmed()
    }

    /// A token changed: a new one is served, with this expiry (0 when none is served now). Never the token.
    #[zbus(signal)]
    async fn token_changed(emitter: &SignalEmitter<'_>, name: &str, expires_at: i64) -> zbus::Result<()>;

    /// A person must act on the token `name`; `reason` says what happened and what to do.
    #[zbus(signal)]
    async fn attention_needed(emitter: &SignalEmitter<'_>, name: &str, reason: &str) -> zbus::Result<()>;
}

/// The properties of one configured token, as zbus serves them. Only ever served inside a [`TokenObject`], which
/// lets readers of the token alone read them.
#[derive(Debug)]
struct TokenProperties {
    engine: Engine,
    name: TokenName,
}

impl TokenProperties {
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

/// A configured token: its state and deadlines. Read-only, and only by the token's readers (others get
/// `AccessDenied`); PropertiesChanged on change, naming the changed properties without their values.
#[interface(name = "io.allthingstalk.TokenAgent1.Token")]
impl TokenProperties {
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
    #[zbus(property(emits_changed_signal = "invalidates"))]
    fn state(&self) -> String {
        self.status().state.as_str().to_owned()
    }

    /// When the served token expires, Unix seconds; 0 when it has no known expiry or none is served.
    #[zbus(property(emits_changed_signal = "invalidates"))]
    fn expires_at(&self) -> i64 {
        self.status().expires_at
    }

    /// When the refresh token lapses, Unix seconds; 0 when unknown or not a user token.
    #[zbus(property(emits_changed_signal = "invalidates"))]
    fn refresh_token_expires_at(&self) -> i64 {
        self.status().refresh_token_expires_at
    }

    /// When the next refresh is planned, Unix seconds; 0 when none is.
    #[zbus(property(emits_changed_signal = "invalidates"))]
    fn next_refresh_at(&self) -> i64 {
        self.status().next_refresh_at
    }

    /// Whether a person must act.
    #[zbus(property(emits_changed_signal = "invalidates"))]
    fn attention_needed(&self) -> bool {
        self.status().attention_needed
    }

    /// The last error (no secret), empty when the last attempt succeeded.
    #[zbus(property(emits_changed_signal = "invalidates"))]
    fn last_error(&self) -> String {
        self.status().last_error
    }
}

/// One configured token's object: `io.allthingstalk.TokenAgent1.Token`, whose properties hold no secret and are
/// shown to the token's readers only (root, admins and its `readers`, as `GetToken` decides). `Get` and `GetAll`
/// from anyone else are refused with `AccessDenied`, before any property is read; so is a call the object cannot
/// tell the caller of. The object's path, and so the token's name, is visible to every caller in the tree.
#[derive(Debug)]
pub struct TokenObject {
    properties: TokenProperties,
    callers: Arc<Callers>,
}

impl TokenObject {
    /// Whether the sender of the call behind `header` may read this token; `AccessDenied` (or `UnknownToken` for a
    /// token no longer configured) when not. Counted as a call of `Properties`.
    async fn admit(&self, connection: &Connection, header: Option<&Header<'_>>) -> Result<(), ServiceError> {
        let Some(header) = header else {
            return Err(EngineError::AccessDenied(
                "the token's properties are read by D-Bus calls only; call org.freedesktop.DBus.Properties.Get"
                    .to_owned(),
            )
            .into());
        };
        let caller = self.callers.caller(connection, header.sender()).await.map_err(ServiceError::from)?.caller;
        self.properties.engine.may_read(&self.properties.name, &caller)?;
        served(Method::Properties);
        Ok(())
    }
}

#[async_trait::async_trait]
impl zbus::object_server::Interface for TokenObject {
    fn name() -> InterfaceName<'static> {
        <TokenProperties as zbus::object_server::Interface>::name()
    }

    fn spawn_tasks_for_methods(&self) -> bool {
        self.properties.spawn_tasks_for_methods()
    }

    async fn get(
        &self,
        property_name: &str,
        server: &zbus::ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<Result<zbus::OwnedVariant, zbus::BoxDBusError>> {
        if let Err(e) = self.admit(connection, header).await {
            return Some(Err(Box::new(e)));
        }
        self.properties.get(property_name, server, connection, header, emitter).await
    }

    async fn get_all(
        &self,
        server: &zbus::ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> zbus::fdo::Result<HashMap<String, zbus::OwnedVariant>> {
        self.admit(connection, header).await.map_err(|e| match e {
            ServiceError::Standard(e) => e,
            ServiceError::Agent(e) => zbus::fdo::Error::AccessDenied(e.to_string()),
        })?;
        self.properties.get_all(server, connection, header, emitter).await
    }

    fn set<'call>(
        &'call self,
        property_name: &'call str,
        value: &'call Variant<'_>,
        server: &'call zbus::ObjectServer,
        connection: &'call Connection,
        header: Option<&'call Header<'_>>,
        emitter: &'call SignalEmitter<'_>,
    ) -> zbus::object_server::DispatchResult<'call> {
        // Every property is read-only: zbus refuses the call whoever makes it.
        self.properties.set(property_name, value, server, connection, header, emitter)
    }

    async fn set_mut(
        &mut self,
        property_name: &str,
        value: &Variant<'_>,
        server: &zbus::ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<Result<(), zbus::BoxDBusError>> {
        self.properties.set_mut(property_name, value, server, connection, header, emitter).await
    }

    fn call<'call>(
        &'call self,
        server: &'call zbus::ObjectServer,
        connection: &'call Connection,
        message: &'call zbus::message::Message,
        name: zbus::names::MemberName<'call>,
    ) -> zbus::object_server::DispatchResult<'call> {
        self.properties.call(server, connection, message, name)
    }

    fn call_mut<'call>(
        &'call mut self,
        server: &'call zbus::ObjectServer,
        connection: &'call Connection,
        message: &'call zbus::message::Message,
        name: zbus::names::MemberName<'call>,
    ) -> zbus::object_server::DispatchResult<'call> {
        self.properties.call_mut(server, connection, message, name)
    }

    fn introspect_to_writer(&self, writer: &mut dyn std::fmt::Write, level: usize) {
        self.properties.introspect_to_writer(writer, level);
    }
}

/// The installed service on one connection.
#[derive(Debug, Clone)]
pub struct Service {
    connection: Connection,
    engine: Engine,
    callers: Arc<Callers>,
}

impl Service {
    /// Builds the connection from `builder` with every object served on it, and starts forwarding engine
    /// events as signals. Give a bus builder before the name is requested, or one end of a peer-to-peer pair.
    ///
    /// The main object goes into the builder rather than onto a built connection: then zbus starts its method
    /// dispatcher before the connection reads its first message. An object added to a connection already
    /// reading can miss a call that arrives before the dispatcher has started; that call never gets a reply.
    pub async fn serve(builder: Builder<'_>, engine: Engine, callers: Arc<Callers>) -> zbus::Result<Self> {
        let events = engine.subscribe();
        let audit = Arc::new(Audit::new());
        let agent = Agent { engine: engine.clone(), callers: callers.clone(), audit: audit.clone() };
        let connection = builder.serve_at(OBJECT_PATH, agent).build().await?;
        let service = Service { connection, engine, callers };
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
        let names: BTreeSet<TokenName> = self.engine.names().into_iter().collect();
        let gone: Vec<TokenName> = published.keys().filter(|n| !names.contains(*n)).cloned().collect();
        for name in gone {
            published.remove(&name);
            self.connection.object_server().remove::<TokenObject, _>(token_path(&name).as_str()).await?;
        }
        for name in names {
            if let btree_map::Entry::Vacant(slot) = published.entry(name.clone()) {
                let object = TokenObject {
                    properties: TokenProperties { engine: self.engine.clone(), name: name.clone() },
                    callers: self.callers.clone(),
                };
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
        // Names only: a signal reaches every process on the bus, and the values are for the token's readers.
        let mut invalidated: Vec<&str> = Vec::new();
        if now.state != before.state {
            invalidated.push("State");
        }
        if now.expires_at != before.expires_at {
            invalidated.push("ExpiresAt");
        }
        if now.refresh_token_expires_at != before.refresh_token_expires_at {
            invalidated.push("RefreshTokenExpiresAt");
        }
        if now.next_refresh_at != before.next_refresh_at {
            invalidated.push("NextRefreshAt");
        }
        if now.attention_needed != before.attention_needed {
            invalidated.push("AttentionNeeded");
        }
        if now.last_error != before.last_error {
            invalidated.push("LastError");
        }
        if !invalidated.is_empty() {
            let emitter = SignalEmitter::new(&self.connection, token_path(name))?;
            zbus::fdo::Properties::properties_changed(
                &emitter,
                InterfaceName::from_static_str_unchecked(TOKEN_INTERFACE),
                HashMap::new(),
                Cow::Borrowed(&invalidated),
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
            if let Err(broadcast::error::RecvError::Lagged(missed)) = event {
                tracing::debug!(missed, "signal forwarder lagged; publishing every token's state again");
            }
            let result = match &event {
                Ok(Event::TokenChanged { name, expires_at }) => {
                    Agent::token_changed(&emitter, name.as_str(), *expires_at).await
                }
                Ok(Event::AttentionNeeded { name, reason }) => {
                    Agent::attention_needed(&emitter, name.as_str(), reason).await
                }
                Err(broadcast::error::RecvError::Closed) => break,
                Ok(Event::StatusChanged(_) | Event::Reconfigured) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    Ok(())
                }
            };
            // The token the event names, or every token after a reload (or events missed).
            let result = match (result, Event::rereads(&event)) {
                (Ok(()), Reread::Token(name)) => self.publish_changes(name, &mut published).await,
                (Ok(()), Reread::Every) => self.sync_objects(&mut published).await,
                (result, _) => result,
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
