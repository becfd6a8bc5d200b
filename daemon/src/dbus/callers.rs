//! Who is calling: callers' credentials from the bus (or the peer socket), cached per connection. What a caller
//! may then do is decided by the rules in `crate::access`.
//!
//! The caller's uid and groups always come from the transport, never from method arguments:
//! - on a message bus, from `org.freedesktop.DBus.GetConnectionCredentials` (`UnixUserID`, `UnixGroupIDs`),
//!   falling back to the user's groups from the system database when the bus does not report groups;
//! - on a peer-to-peer connection, from the socket's peer credentials.
//!
//! With the identity comes the systemd unit of the caller's process, for the audit trail (`dbus/audit.rs`): the
//! bus reports the pid that opened the connection (`ProcessID`), and systemd's `GetUnitByPID` names its unit,
//! once per lookup, cached with the caller. systemd is asked rather than `/proc/PID/cgroup` because the shipped
//! unit hides other users' processes from the daemon (`ProtectProc=invisible`). The unit is `None` when the bus
//! reports no pid, no systemd answers on that bus within [`UNIT_LOOKUP_TIMEOUT`], or the process is in no unit.
//!
//! Bus credentials are cached per unique name; [`Callers::watch_bus`] drops an entry as soon as its
//! name leaves the bus, also when it leaves while its lookup is in flight (the answer is then not cached), so no
//! entry outlives its caller. The cache holds at most [`MAX_CACHED_CALLERS`] entries and at most
//! [`MAX_LOOKUPS_IN_FLIGHT`] lookups run at once; a call beyond that is refused at once.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use zbus::names::UniqueName;
use zbus::{Connection, DeserializeDict, MatchRule, MessageStream, Type};

use crate::access::Caller;

/// The bus's own name, also the interface of `GetConnectionCredentials` and `NameOwnerChanged`.
const BUS: &str = "org.freedesktop.DBus";
/// The bus's object path.
const BUS_PATH: &str = "/org/freedesktop/DBus";

/// The two entries of a `GetConnectionCredentials` reply the daemon reads; the bus may send more (process id,
/// security label, a pidfd), which are skipped. Read directly from the reply rather than through a bus proxy,
/// whose generic machinery (a properties cache, signal streams, every credential's decoder) the daemon would
/// otherwise carry for two integers.
#[derive(Debug, Default, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
struct BusCredentials {
    #[zbus(rename = "UnixUserID")]
    unix_user_id: Option<u32>,
    #[zbus(rename = "UnixGroupIDs")]
    unix_group_ids: Option<Vec<u32>>,
    #[zbus(rename = "ProcessID")]
    process_id: Option<u32>,
}

/// A caller as looked up: its identity, and the systemd unit of its process when it has one.
#[derive(Debug, Clone)]
pub struct Known {
    /// Who the caller is, for the access rules.
    pub caller: Caller,
    /// The systemd unit of the caller's process (`nodered.service`), for the audit trail.
    pub unit: Option<Arc<str>>,
}

/// Why the caller's identity could not be established.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallerLookupError {
    /// The message carried no sender on a bus connection.
    #[error("the call carries no sender, so the caller cannot be identified; call through the message bus")]
    NoSender,
    /// The bus or the socket did not report a user id.
    #[error("the bus did not report the caller's user id; run a D-Bus daemon that supports GetConnectionCredentials")]
    NoUid,
    /// Asking the bus or the socket failed.
    #[error("could not ask the bus who the caller is ({0}); try again, and check that the message bus is running")]
    Bus(String),
    /// Too many lookups are under way.
    #[error(
        "the daemon is already asking the bus who {MAX_LOOKUPS_IN_FLIGHT} other callers are; try again in a moment"
    )]
    Busy,
}

/// Where callers' identities come from.
#[derive(Debug)]
enum Source {
    /// The message bus, asked per unique name (cached).
    Bus,
    /// The peer of a peer-to-peer socket.
    Peer,
    /// Always the same identity (tests that exercise access control over a peer-to-peer pair).
    Fixed(Caller),
}

/// How many callers' identities the bus cache holds at most. A caller beyond it is still answered, its
/// identity asked of the bus on each call rather than kept.
pub const MAX_CACHED_CALLERS: usize = 1024;

/// How many identity lookups (`GetConnectionCredentials`) may be in flight at once. A call beyond it is refused
/// at once (the bus itself also limits the replies a connection may await).
pub const MAX_LOOKUPS_IN_FLIGHT: usize = 64;

/// The cache and the lookups under way, behind one lock so that a name that leaves during its lookup is seen.
#[derive(Debug, Default)]
struct Cache {
    callers: HashMap<Box<str>, Known>,
    /// Unique names with a lookup in flight: how many, and whether the name left the bus meanwhile.
    in_flight: HashMap<Box<str>, (usize, bool)>,
    /// Lookups in flight over all names.
    lookups: usize,
}

/// A lookup under way for one unique name; dropping it (a call abandoned mid-lookup) ends it uncached.
#[derive(Debug)]
struct Lookup<'a> {
    callers: &'a Callers,
    name: Box<str>,
    done: bool,
}

impl Lookup<'_> {
    /// Ends the lookup with its answer, which is cached unless the name left the bus meanwhile or the cache is
    /// full.
    fn finish(mut self, caller: &Known) {
        self.done = true;
        let mut cache = self.callers.lock();
        let left = end_lookup(&mut cache, &self.name);
        if !left && cache.callers.len() < MAX_CACHED_CALLERS {
            cache.callers.insert(self.name.clone(), caller.clone());
        }
    }
}

impl Drop for Lookup<'_> {
    fn drop(&mut self) {
        if !self.done {
            end_lookup(&mut self.callers.lock(), &self.name);
        }
    }
}

/// Removes one lookup of `name` from the books; whether the name left the bus during it.
fn end_lookup(cache: &mut Cache, name: &str) -> bool {
    cache.lookups = cache.lookups.saturating_sub(1);
    let Some((count, left)) = cache.in_flight.get_mut(name) else { return false };
    let left = *left;
    *count -= 1;
    if *count == 0 {
        cache.in_flight.remove(name);
    }
    left
}

/// Resolves and caches the identity of callers.
#[derive(Debug)]
pub struct Callers {
    source: Source,
    cache: std::sync::Mutex<Cache>,
}

impl Callers {
    /// Identities from the message bus (`GetConnectionCredentials`), cached per unique name.
    pub fn bus() -> Self {
        Self::with_source(Source::Bus)
    }

    /// Identities from the peer's socket credentials, for one peer-to-peer connection (use one instance per
    /// connection: the peer's identity is asked once and kept).
    pub fn peer() -> Self {
        Self::with_source(Source::Peer)
    }

    /// Every caller has this identity. Meant for tests of access control over peer-to-peer connections,
    /// where the real peer is the test process itself.
    pub fn fixed(caller: Caller) -> Self {
        Self::with_source(Source::Fixed(caller))
    }

    fn with_source(source: Source) -> Self {
        Self { source, cache: std::sync::Mutex::new(Cache::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a lookup of `name`, unless [`MAX_LOOKUPS_IN_FLIGHT`] are under way.
    fn begin_lookup(&self, name: &str) -> Result<Lookup<'_>, CallerLookupError> {
        let mut cache = self.lock();
        if cache.lookups >= MAX_LOOKUPS_IN_FLIGHT {
            return Err(CallerLookupError::Busy);
        }
        cache.lookups += 1;
        cache.in_flight.entry(name.into()).or_insert((0, false)).0 += 1;
        Ok(Lookup { callers: self, name: name.into(), done: false })
    }

    /// The identity of the sender of a call received on `connection`, with its process's systemd unit.
    pub async fn caller(
        &self,
        connection: &Connection,
        sender: Option<&UniqueName<'_>>,
    ) -> Result<Known, CallerLookupError> {
        match &self.source {
            Source::Fixed(caller) => Ok(Known { caller: caller.clone(), unit: None }),
            Source::Peer => {
                // One peer per connection: ask the socket once.
                if let Some(caller) = self.cached("") {
                    return Ok(caller);
                }
                let creds = connection.peer_creds().await.map_err(|e| CallerLookupError::Bus(e.to_string()))?;
                let caller = from_credentials(creds.unix_user_id(), creds.unix_group_ids().cloned()).await?;
                let caller = Known { caller, unit: None };
                self.lock().callers.insert("".into(), caller.clone());
                Ok(caller)
            }
            Source::Bus => {
                let sender = sender.ok_or(CallerLookupError::NoSender)?;
                if let Some(caller) = self.cached(sender.as_str()) {
                    return Ok(caller);
                }
                // Under way before the question is sent: a name that leaves from now on is noticed.
                let lookup = self.begin_lookup(sender.as_str())?;
                let reply = connection
                    .call_method(Some(BUS), BUS_PATH, Some(BUS), "GetConnectionCredentials", &(sender.as_str(),))
                    .await
                    .map_err(|e| CallerLookupError::Bus(e.to_string()))?;
                let creds: BusCredentials =
                    reply.body().deserialize().map_err(|e| CallerLookupError::Bus(e.to_string()))?;
                let caller = from_credentials(creds.unix_user_id, creds.unix_group_ids).await?;
                let caller = Known { caller, unit: unit_of_process(connection, creds.process_id).await };
                lookup.finish(&caller);
                Ok(caller)
            }
        }
    }

    fn cached(&self, sender: &str) -> Option<Known> {
        self.lock().callers.get(sender).cloned()
    }

    /// Forgets a unique name that left the bus, also one whose lookup is still in flight (its answer is then
    /// not cached).
    pub fn forget(&self, unique_name: &str) {
        let mut cache = self.lock();
        cache.callers.remove(unique_name);
        if let Some((_, left)) = cache.in_flight.get_mut(unique_name) {
            *left = true;
        }
    }

    /// Forgets every cached caller (after a reconnection to the bus, where unique names are new).
    pub fn forget_all(&self) {
        self.lock().callers.clear();
    }

    /// How many callers are cached (for tests and the status line).
    pub fn cached_callers(&self) -> usize {
        self.lock().callers.len()
    }

    /// Subscribes to `NameOwnerChanged` on the bus and returns the task, to be spawned, that forgets every
    /// unique name that leaves it; the task ends with the connection. The subscription is in place when this
    /// returns, so no caller leaves unnoticed. `None` for sources that keep no cache.
    pub async fn watch_bus(
        self: Arc<Self>,
        connection: &Connection,
    ) -> zbus::Result<Option<impl Future<Output = ()> + Send + 'static>> {
        if !matches!(self.source, Source::Bus) {
            return Ok(None);
        }
        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(BUS)
            .path(BUS_PATH)
            .interface(BUS)
            .member("NameOwnerChanged")
            .build()?;
        let mut changes = MessageStream::for_match_rule(rule, connection, None).await?;
        Ok(Some(async move {
            while let Some(signal) = changes.next().await {
                let Ok(signal) = signal else { continue };
                // (name, old owner, new owner); an empty new owner means the name left the bus.
                let body = signal.body();
                let Ok((name, _, new_owner)) = body.deserialize::<(&str, &str, &str)>() else { continue };
                if name.starts_with(':') && new_owner.is_empty() {
                    self.forget(name);
                }
            }
        }))
    }
}

/// A caller from the credentials a bus or socket reported; groups from the system database when absent.
async fn from_credentials(uid: Option<u32>, groups: Option<Vec<u32>>) -> Result<Caller, CallerLookupError> {
    let uid = uid.ok_or(CallerLookupError::NoUid)?;
    let groups = match groups {
        Some(groups) => groups,
        // The user database may sit behind the network (LDAP, SSSD): ask it on the blocking pool.
        None => tokio::task::spawn_blocking(move || groups_of(uid)).await.unwrap_or_default(),
    };
    Ok(Caller::new(uid, groups))
}

/// How long systemd may take to name a caller's unit before the caller is taken as having none.
pub const UNIT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The systemd unit of process `pid`, as systemd's manager on the same bus names it (`GetUnitByPID`); `None`
/// without a pid, a manager, an answer in time or a unit.
async fn unit_of_process(connection: &Connection, pid: Option<u32>) -> Option<Arc<str>> {
    let pid = pid.filter(|pid| *pid > 0)?;
    let pid = (pid,);
    let call = connection.call_method(
        Some("org.freedesktop.systemd1"),
        "/org/freedesktop/systemd1",
        Some("org.freedesktop.systemd1.Manager"),
        "GetUnitByPID",
        &pid,
    );
    let reply = tokio::time::timeout(UNIT_LOOKUP_TIMEOUT, call).await.ok()?.ok()?;
    let body = reply.body();
    let path: zbus::ObjectPath<'_> = body.deserialize().ok()?;
    super::audit::unit_from_path(path.as_str()).map(Arc::from)
}

/// The groups of `uid` from the system database (primary and supplementary); empty if the user is unknown.
fn groups_of(uid: u32) -> Vec<u32> {
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return Vec::new();
    };
    let Ok(name) = CString::new(user.name.as_bytes()) else {
        return vec![user.gid.as_raw()];
    };
    match nix::unistd::getgrouplist(&name, user.gid) {
        Ok(groups) => groups.into_iter().map(|gid| gid.as_raw()).collect(),
        Err(_) => vec![user.gid.as_raw()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_that_leaves_during_its_lookup_is_not_cached() {
        let callers = Callers::bus();
        let caller = Known { caller: Caller::new(1000, [1000]), unit: None };
        let lookup = callers.begin_lookup(":1.7").expect("a lookup");
        // NameOwnerChanged arrives while GetConnectionCredentials is on its way.
        callers.forget(":1.7");
        lookup.finish(&caller);
        assert_eq!(callers.cached_callers(), 0, "a name that left is not cached");
        // A caller that stays is cached, and forgotten when it leaves.
        callers.begin_lookup(":1.8").expect("a lookup").finish(&caller);
        assert_eq!(callers.cached_callers(), 1);
        callers.forget(":1.8");
        assert_eq!(callers.cached_callers(), 0);
        // A lookup abandoned midway leaves nothing behind.
        drop(callers.begin_lookup(":1.9").expect("a lookup"));
        callers.begin_lookup(":1.9").expect("a lookup").finish(&caller);
        assert_eq!(callers.cached_callers(), 1, "an abandoned lookup does not mark the name as gone");
    }

    #[test]
    fn the_cache_and_the_lookups_in_flight_are_bounded() {
        let callers = Callers::bus();
        let caller = Known { caller: Caller::new(1000, [1000]), unit: None };
        for n in 0..MAX_CACHED_CALLERS + 10 {
            callers.begin_lookup(&format!(":1.{n}")).expect("a lookup").finish(&caller);
        }
        assert_eq!(callers.cached_callers(), MAX_CACHED_CALLERS, "the cache stops growing at its bound");
        let under_way: Vec<Lookup<'_>> = (0..MAX_LOOKUPS_IN_FLIGHT)
            .map(|n| callers.begin_lookup(&format!(":2.{n}")).expect("a lookup within the bound"))
            .collect();
        let refused = callers.begin_lookup(":3.0").expect_err("one lookup too many is refused");
        assert!(refused.to_string().contains("try again"), "{refused}");
        drop(under_way);
        assert!(callers.begin_lookup(":3.0").is_ok(), "lookups that ended free their places");
    }

    #[test]
    fn groups_of_root_include_its_primary_group() {
        assert!(groups_of(0).contains(&0));
    }
}
