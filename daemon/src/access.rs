//! Who may do what: the reader and admin rules, and the resolved principals they are decided on.
//!
//! A [`Caller`] is a uid and its groups, as the transport reported them (the D-Bus side looks them up:
//! `crate::dbus::callers`); [`Principals`] are users and groups resolved to numeric ids (the config names them:
//! `crate::config` resolves the names). The rules are two: root and the admins administer ([`is_admin`]), and root,
//! the admins and a token's readers read it ([`may_read`]). The engine, the D-Bus side and the token files all
//! decide with these, and this module imports none of them.

use std::collections::BTreeSet;
use std::sync::Arc;

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

    /// The superuser, who is always a reader and an admin (and so sees every token).
    pub fn root() -> Self {
        Self::new(0, [])
    }

    /// Whether this is the superuser, who is always a reader and an admin.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// A set of users and groups by numeric id (names already resolved): a token's readers, or the admins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principals {
    /// User ids.
    pub uids: BTreeSet<u32>,
    /// Group ids: any member is admitted.
    pub gids: BTreeSet<u32>,
}

impl Principals {
    /// These users and groups.
    pub fn new(uids: impl IntoIterator<Item = u32>, gids: impl IntoIterator<Item = u32>) -> Self {
        Self { uids: uids.into_iter().collect(), gids: gids.into_iter().collect() }
    }

    /// Whether `caller` is one of these users or in one of these groups.
    pub fn admits(&self, caller: &Caller) -> bool {
        self.uids.contains(&caller.uid) || caller.groups.iter().any(|group| self.gids.contains(group))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_always_admin_and_reader() {
        let nobody = Principals::default();
        let root = Caller::root();
        assert!(root.is_root());
        assert!(is_admin(&nobody, &root));
        assert!(may_read(&nobody, &nobody, &root));
    }

    #[test]
    fn readers_by_user_or_group() {
        let readers = Principals::new([1000], [50]);
        let admins = Principals::new([], [60]);
        assert!(may_read(&readers, &admins, &Caller::new(1000, [100])));
        assert!(may_read(&readers, &admins, &Caller::new(1001, [100, 50])));
        assert!(!may_read(&readers, &admins, &Caller::new(1001, [100])));
        assert!(!is_admin(&admins, &Caller::new(1000, [100])));
        // Admins read every token.
        assert!(may_read(&readers, &admins, &Caller::new(1002, [60])));
    }
}
