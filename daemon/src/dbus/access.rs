//! Who may ask: callers' credentials from the bus (or the peer socket), cached per connection, and the
//! reader/admin rules.
//!
//! The caller's uid and groups always come from the transport, never from method arguments:
//! - on a message bus, from `org.freedesktop.DBus.GetConnectionCredentials` (`UnixUserID`, `UnixGroupIDs`),
//!   falling back to the user's groups from the system database when the bus does not report groups;
//! - on a peer-to-peer connection, from the socket's peer credentials.
//!
//! Bus credentials are cached per unique name; [`Credentials::watch_bus`] drops an entry as soon as its
//! name leaves the bus, so the cache never grows without bound and never outlives its caller.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use zbus::Connection;
use zbus::fdo::{ConnectionCredentials, DBusProxy};
use zbus::names::{BusName, UniqueName};

/// The identity of a process calling the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller's user id.
    pub uid: u32,
    /// The caller's groups (primary and supplementary).
    pub groups: Arc<[u32]>,
}

impl Caller {
    /// A caller with the given uid and groups.
    pub fn new(uid: u32, groups: impl IntoIterator<Item = u32>) -> Self {
        Self { uid, groups: groups.into_iter().collect() }
    }

    /// Whether this is the superuser, who is always a reader and an admin.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// A set of users and groups (numeric ids, already resolved from names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principals {
    /// User ids.
    pub users: Vec<u32>,
    /// Group ids: any member is admitted.
    pub groups: Vec<u32>,
}

impl Principals {
    /// Whether `caller` is one of these users or in one of these groups.
    pub fn admits(&self, caller: &Caller) -> bool {
        self.users.contains(&caller.uid) || caller.groups.iter().any(|group| self.groups.contains(group))
    }
}

/// Whether `caller` may administer the daemon (Login, Refresh, Logout): root or one of `admins`.
pub fn is_admin(admins: &Principals, caller: &Caller) -> bool {
    caller.is_root() || admins.admits(caller)
}

/// Whether `caller` may read a token whose readers are `readers`: root, an admin or one of `readers`.
pub fn may_read(readers: &Principals, admins: &Principals, caller: &Caller) -> bool {
    is_admin(admins, caller) || readers.admits(caller)
}

/// Why the caller's identity could not be established.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The message carried no sender on a bus connection.
    #[error("the call carries no sender, so the caller cannot be identified; call through the message bus")]
    NoSender,
    /// The bus or the socket did not report a user id.
    #[error("the bus did not report the caller's user id; run a D-Bus daemon that supports GetConnectionCredentials")]
    NoUid,
    /// Asking the bus or the socket failed.
    #[error("could not ask the bus who the caller is ({0}); try again, and check that the message bus is running")]
    Bus(String),
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

/// Resolves and caches the identity of callers.
#[derive(Debug)]
pub struct Credentials {
    source: Source,
    cache: RwLock<HashMap<Box<str>, Caller>>,
}

impl Credentials {
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
        Self { source, cache: RwLock::new(HashMap::new()) }
    }

    /// The identity of the sender of a call received on `connection`.
    pub async fn caller(
        &self,
        connection: &Connection,
        sender: Option<&UniqueName<'_>>,
    ) -> Result<Caller, CredentialsError> {
        match &self.source {
            Source::Fixed(caller) => Ok(caller.clone()),
            Source::Peer => {
                // One peer per connection: ask the socket once.
                if let Some(caller) = self.cached("") {
                    return Ok(caller);
                }
                let creds = connection.peer_creds().await.map_err(|e| CredentialsError::Bus(e.to_string()))?;
                let caller = from_credentials(creds).await?;
                self.cache.write().unwrap_or_else(|e| e.into_inner()).insert("".into(), caller.clone());
                Ok(caller)
            }
            Source::Bus => {
                let sender = sender.ok_or(CredentialsError::NoSender)?;
                if let Some(caller) = self.cached(sender.as_str()) {
                    return Ok(caller);
                }
                let proxy = DBusProxy::new(connection).await.map_err(|e| CredentialsError::Bus(e.to_string()))?;
                let creds = proxy
                    .get_connection_credentials(BusName::Unique(sender.clone()))
                    .await
                    .map_err(|e| CredentialsError::Bus(e.to_string()))?;
                let caller = from_credentials(&creds).await?;
                self.cache.write().unwrap_or_else(|e| e.into_inner()).insert(sender.as_str().into(), caller.clone());
                Ok(caller)
            }
        }
    }

    fn cached(&self, sender: &str) -> Option<Caller> {
        self.cache.read().unwrap_or_else(|e| e.into_inner()).get(sender).cloned()
    }

    /// Forgets a unique name that left the bus.
    pub fn forget(&self, unique_name: &str) {
        self.cache.write().unwrap_or_else(|e| e.into_inner()).remove(unique_name);
    }

    /// How many callers are cached (for tests and the status line).
    pub fn cached_callers(&self) -> usize {
        self.cache.read().unwrap_or_else(|e| e.into_inner()).len()
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
        let proxy = DBusProxy::new(connection).await?;
        let mut changes = proxy.receive_name_owner_changed().await?;
        Ok(Some(async move {
            while let Some(signal) = changes.next().await {
                let Ok(args) = signal.args() else { continue };
                if let BusName::Unique(name) = args.name()
                    && args.new_owner().is_none()
                {
                    self.forget(name.as_str());
                }
            }
            drop(proxy);
        }))
    }
}

/// A caller from the credentials a bus or socket reported; groups from the system database when absent.
async fn from_credentials(creds: &ConnectionCredentials) -> Result<Caller, CredentialsError> {
    let uid = creds.unix_user_id().ok_or(CredentialsError::NoUid)?;
    let groups = match creds.unix_group_ids() {
        Some(groups) => groups.to_vec(),
        // The user database may sit behind the network (LDAP, SSSD): ask it on the blocking pool.
        None => tokio::task::spawn_blocking(move || groups_of(uid)).await.unwrap_or_default(),
    };
    Ok(Caller::new(uid, groups))
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
    fn root_is_always_admin_and_reader() {
        let nobody = Principals::default();
        let root = Caller::new(0, []);
        assert!(is_admin(&nobody, &root));
        assert!(may_read(&nobody, &nobody, &root));
    }

    #[test]
    fn readers_by_user_or_group() {
        let readers = Principals { users: vec![1000], groups: vec![50] };
        let admins = Principals { users: vec![], groups: vec![60] };
        assert!(may_read(&readers, &admins, &Caller::new(1000, [100])));
        assert!(may_read(&readers, &admins, &Caller::new(1001, [100, 50])));
        assert!(!may_read(&readers, &admins, &Caller::new(1001, [100])));
        assert!(!is_admin(&admins, &Caller::new(1000, [100])));
        // Admins read every token.
        assert!(may_read(&readers, &admins, &Caller::new(1002, [60])));
    }

    #[test]
    fn groups_of_root_include_its_primary_group() {
        assert!(groups_of(0).contains(&0));
    }
}
