//! What each kind of token may touch, and the least-privileged token for a device.
//!
//! This is the table from AllThingsTalk's authentication page as code:
//!
//! | token | may access | may not access |
//! |---|---|---|
//! | device | its own device and that device's assets | other devices, grounds, rules, user- and system-level resources |
//! | ground | every device (and its assets) in its ground, the ground's device list | rules, user- and system-level resources, devices outside the ground |
//! | user | devices, grounds, rules, user-level resources | system-level resources |
//!
//! A ground token only reaches the devices the daemon *knows* to be in its ground (from the config or from
//! `GET /ground/{id}/devices`); while that list is empty, the ground token reaches no device at all.
//!
//! [`least_privileged`] picks, among the tokens a caller may read, the narrowest one that may access a device:
//! a device token before a ground token before a user token.

use std::collections::BTreeSet;

use crate::ids::{AssetId, DeviceId, GroundId, TokenKind};

/// Something a token might be used to touch through the AllThingsTalk API.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Resource {
    /// A device: the device itself, its states and commands.
    Device(DeviceId),
    /// One asset of a device.
    Asset {
        /// The device the asset belongs to.
        device: DeviceId,
        /// The asset.
        asset: AssetId,
    },
    /// A ground's list of devices (`GET /ground/{id}/devices`).
    GroundDevices(GroundId),
    /// The user's rules.
    Rules,
    /// Any other user-level resource (profile, `GET /me/grounds`, ...).
    UserLevel,
    /// A system-level resource, which no token the daemon holds may touch.
    SystemLevel,
}

impl Resource {
    /// The device this resource belongs to, if it is a device or one of its assets.
    pub fn device(&self) -> Option<&DeviceId> {
        match self {
            Resource::Device(device) | Resource::Asset { device, .. } => Some(device),
            Resource::GroundDevices(_) | Resource::Rules | Resource::UserLevel | Resource::SystemLevel => None,
        }
    }
}

/// What one token may touch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scope {
    /// A device token: one device and its assets.
    Device(DeviceId),
    /// A ground token: the ground's device list, and every device (with its assets) known to be in the ground.
    Ground {
        /// The ground.
        ground: GroundId,
        /// The devices known to be in the ground; empty while not yet learned.
        devices: BTreeSet<DeviceId>,
    },
    /// A user token (OAuth2 access token): the user's devices, grounds, rules and user-level resources.
    User,
}

/// How much a token may touch, narrowest first: `Device < Ground < User`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Privilege {
    /// A device token's reach: one device.
    Device,
    /// A ground token's reach: the devices of one ground.
    Ground,
    /// A user token's reach: everything the user owns.
    User,
}

impl Scope {
    /// A ground scope with the devices known to be in the ground.
    pub fn ground(ground: GroundId, devices: impl IntoIterator<Item = DeviceId>) -> Self {
        Scope::Ground { ground, devices: devices.into_iter().collect() }
    }

    /// The kind of token that has this scope.
    pub fn kind(&self) -> TokenKind {
        match self {
            Scope::Device(_) => TokenKind::Device,
            Scope::Ground { .. } => TokenKind::Ground,
            Scope::User => TokenKind::User,
        }
    }

    /// How wide this scope is; used to order candidates, narrowest first.
    pub fn privilege(&self) -> Privilege {
        match self {
            Scope::Device(_) => Privilege::Device,
            Scope::Ground { .. } => Privilege::Ground,
            Scope::User => Privilege::User,
        }
    }

    /// Whether a token with this scope may touch `resource`. Same as [`permits`].
    pub fn permits(&self, resource: &Resource) -> bool {
        match (self, resource) {
            (_, Resource::SystemLevel) => false,
            (Scope::User, _) => true,
            (Scope::Device(own), Resource::Device(device) | Resource::Asset { device, .. }) => own == device,
            (Scope::Ground { devices, .. }, Resource::Device(device) | Resource::Asset { device, .. }) => {
                devices.contains(device)
            }
            (Scope::Ground { ground, .. }, Resource::GroundDevices(other)) => ground == other,
            (
                Scope::Device(_) | Scope::Ground { .. },
                Resource::GroundDevices(_) | Resource::Rules | Resource::UserLevel,
            ) => false,
        }
    }
}

/// Whether a token with `scope` may touch `resource`.
pub fn permits(scope: &Scope, resource: &Resource) -> bool {
    scope.permits(resource)
}

/// The key of the least-privileged candidate whose scope may access `device`, or `None` if none may.
///
/// A device token is preferred over a ground token, and a ground token over a user token. Among candidates
/// of the same [`Privilege`], the **smallest key** wins, so the result does not depend on the order of
/// `candidates` (the daemon passes token names, making the choice alphabetical).
pub fn least_privileged<'a, K: Ord>(
    candidates: impl IntoIterator<Item = (K, &'a Scope)>,
    device: &DeviceId,
) -> Option<K> {
    let resource = Resource::Device(device.clone());
    candidates
        .into_iter()
        .filter(|(_, scope)| scope.permits(&resource))
        .map(|(key, scope)| (scope.privilege(), key))
        .min()
        .map(|(_, key)| key)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn dev(n: usize) -> DeviceId {
        DeviceId::new(format!("device{n:018}")).unwrap()
    }

    fn grd(n: usize) -> GroundId {
        GroundId::new(format!("ground{n:018}")).unwrap()
    }

    fn asset(n: usize) -> AssetId {
        AssetId::new(format!("asset{n:019}")).unwrap()
    }

    #[test]
    fn access_table() {
        let device = Scope::Device(dev(1));
        let ground = Scope::ground(grd(1), [dev(1), dev(2)]);
        let user = Scope::User;
        // (resource, device token, ground token, user token)
        let table = [
            (Resource::Device(dev(1)), true, true, true),
            (Resource::Asset { device: dev(1), asset: asset(1) }, true, true, true),
            (Resource::Device(dev(2)), false, true, true),
            (Resource::Asset { device: dev(2), asset: asset(2) }, false, true, true),
            (Resource::Device(dev(3)), false, false, true),
            (Resource::Asset { device: dev(3), asset: asset(1) }, false, false, true),
            (Resource::GroundDevices(grd(1)), false, true, true),
            (Resource::GroundDevices(grd(2)), false, false, true),
            (Resource::Rules, false, false, true),
            (Resource::UserLevel, false, false, true),
            (Resource::SystemLevel, false, false, false),
        ];
        for (resource, by_device, by_ground, by_user) in table {
            assert_eq!(permits(&device, &resource), by_device, "device token on {resource:?}");
            assert_eq!(permits(&ground, &resource), by_ground, "ground token on {resource:?}");
            assert_eq!(permits(&user, &resource), by_user, "user token on {resource:?}");
        }
    }

    #[test]
    fn ground_with_unknown_members_reaches_no_device() {
        let ground = Scope::ground(grd(1), []);
        assert!(!ground.permits(&Resource::Device(dev(1))));
        assert!(ground.permits(&Resource::GroundDevices(grd(1))));
    }

    #[test]
    fn kinds_and_privileges() {
        let table = [
            (Scope::Device(dev(1)), TokenKind::Device, Privilege::Device),
            (Scope::ground(grd(1), [dev(1)]), TokenKind::Ground, Privilege::Ground),
            (Scope::User, TokenKind::User, Privilege::User),
        ];
        for (scope, kind, privilege) in table {
            assert_eq!(scope.kind(), kind);
            assert_eq!(scope.privilege(), privilege);
        }
        assert!(Privilege::Device < Privilege::Ground && Privilege::Ground < Privilege::User);
    }

    #[test]
    fn resource_device() {
        assert_eq!(Resource::Device(dev(1)).device(), Some(&dev(1)));
        assert_eq!(Resource::Asset { device: dev(2), asset: asset(1) }.device(), Some(&dev(2)));
        assert_eq!(Resource::GroundDevices(grd(1)).device(), None);
        assert_eq!(Resource::Rules.device(), None);
    }

    #[test]
    fn least_privileged_table() {
        let own = Scope::Device(dev(1));
        let other = Scope::Device(dev(2));
        let ground = Scope::ground(grd(1), [dev(1), dev(3)]);
        let ground_b = Scope::ground(grd(2), [dev(1)]);
        let user = Scope::User;
        let all = [("user", &user), ("gw-b", &ground_b), ("gw", &ground), ("other", &other), ("own", &own)];
        // (device, candidates, expected choice)
        type Candidates<'a> = &'a [(&'a str, &'a Scope)];
        let table: [(DeviceId, Candidates<'_>, Option<&str>); 8] = [
            (dev(1), &all, Some("own")),
            (dev(1), &all[..4], Some("gw")), // two ground tokens: smallest name
            (dev(1), &all[..2], Some("gw-b")),
            (dev(1), &all[..1], Some("user")),
            (dev(3), &all, Some("gw")),
            (dev(4), &all, Some("user")),
            (dev(4), &all[1..], None),
            (dev(1), &[], None),
        ];
        for (device, candidates, expected) in table {
            let chosen = least_privileged(candidates.iter().copied(), &device);
            assert_eq!(chosen, expected, "device {device}");
        }
    }

    #[test]
    fn same_level_tie_goes_to_smallest_key() {
        let a = Scope::Device(dev(1));
        let b = Scope::Device(dev(1));
        assert_eq!(least_privileged([("b", &b), ("a", &a)], &dev(1)), Some("a"));
        assert_eq!(least_privileged([("a", &a), ("b", &b)], &dev(1)), Some("a"));
        let u1 = Scope::User;
        assert_eq!(least_privileged([("z", &u1), ("m", &u1)], &dev(9)), Some("m"));
    }

    /// Ids from a small pool, so that scopes and resources often share them.
    fn any_device() -> impl Strategy<Value = DeviceId> {
        (0usize..6).prop_map(dev)
    }

    fn any_ground() -> impl Strategy<Value = GroundId> {
        (0usize..3).prop_map(grd)
    }

    fn any_scope() -> impl Strategy<Value = Scope> {
        prop_oneof![
            any_device().prop_map(Scope::Device),
            (any_ground(), prop::collection::btree_set(any_device(), 0..5))
                .prop_map(|(ground, devices)| Scope::Ground { ground, devices }),
            Just(Scope::User),
        ]
    }

    fn any_resource() -> impl Strategy<Value = Resource> {
        prop_oneof![
            any_device().prop_map(Resource::Device),
            (any_device(), (0usize..3).prop_map(asset)).prop_map(|(device, asset)| Resource::Asset { device, asset }),
            any_ground().prop_map(Resource::GroundDevices),
            Just(Resource::Rules),
            Just(Resource::UserLevel),
            Just(Resource::SystemLevel),
        ]
    }

    /// Candidates with distinct names, as the daemon has them.
    fn any_candidates() -> impl Strategy<Value = Vec<(String, Scope)>> {
        prop::collection::btree_map("[a-e]{1,2}", any_scope(), 0..8).prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        #[test]
        fn permits_is_monotone(
            own in any_device(),
            ground in any_ground(),
            others in prop::collection::btree_set(any_device(), 0..4),
            resource in any_resource(),
        ) {
            let device = Scope::Device(own.clone());
            let ground = Scope::ground(ground, others.into_iter().chain([own]));
            if device.permits(&resource) {
                prop_assert!(ground.permits(&resource), "ground token refused {:?}", resource);
            }
            if ground.permits(&resource) {
                prop_assert!(Scope::User.permits(&resource), "user token refused {:?}", resource);
            }
        }

        #[test]
        fn static_tokens_never_touch_rules_user_or_system(scope in any_scope()) {
            let allowed_above_user = scope.privilege() == Privilege::User;
            prop_assert_eq!(scope.permits(&Resource::Rules), allowed_above_user);
            prop_assert_eq!(scope.permits(&Resource::UserLevel), allowed_above_user);
            prop_assert!(!scope.permits(&Resource::SystemLevel));
        }

        #[test]
        fn device_token_touches_only_its_own_device(own in any_device(), resource in any_resource()) {
            let allowed = Scope::Device(own.clone()).permits(&resource);
            prop_assert_eq!(allowed, resource.device() == Some(&own));
        }

        #[test]
        fn least_privileged_choice_is_sound_and_narrowest(
            candidates in any_candidates(),
            device in any_device(),
        ) {
            let resource = Resource::Device(device.clone());
            let chosen = least_privileged(candidates.iter().map(|(k, s)| (k, s)), &device);
            match chosen {
                None => prop_assert!(candidates.iter().all(|(_, s)| !s.permits(&resource))),
                Some(name) => {
                    let scope = &candidates.iter().find(|(k, _)| k == name).unwrap().1;
                    prop_assert!(scope.permits(&resource));
                    for (other, s) in &candidates {
                        if s.permits(&resource) {
                            // Nothing that may access the device is narrower than the choice...
                            prop_assert!(s.privilege() >= scope.privilege(), "{} is narrower than {}", other, name);
                            // ...and among equals the smallest name wins.
                            if s.privilege() == scope.privilege() {
                                prop_assert!(other >= name);
                            }
                        }
                    }
                }
            }
        }

        #[test]
        fn least_privileged_ignores_candidate_order(
            (candidates, shuffled) in any_candidates().prop_flat_map(|c| (Just(c.clone()), Just(c).prop_shuffle())),
            device in any_device(),
        ) {
            let first = least_privileged(candidates.iter().map(|(k, s)| (k, s)), &device);
            let second = least_privileged(shuffled.iter().map(|(k, s)| (k, s)), &device);
            prop_assert_eq!(first, second);
        }
    }
}
