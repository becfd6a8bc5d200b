//! The pure heart of att-tokend: everything about AllThingsTalk tokens that can be decided without I/O.
//!
//! This crate reads no clock, touches no file or socket and spawns nothing. Every function that depends on
//! time takes `now` as a parameter, and randomness (jitter) is passed in as a value, so every rule here is
//! testable with plain unit and property tests.
//!
//! - [`secret`]: access and refresh tokens, device and ground tokens, passwords, MFA codes and TOTP seeds as
//!   types that never print their value and are zeroized on drop.
//! - [`ids`]: validated token names, device and ground ids, token kinds and client ids.
//! - [`reply`]: reading `/login` replies (token grant, MFA challenge, OAuth2 error) from bytes.
//! - [`time`]: deadlines on a monotonic time line with a wall-clock mirror, and clock-offset estimation.
//! - [`plan`]: refresh planning, backoff, lapse warnings and the serving rule.
//! - [`fleet`]: per-machine offsets of periodic requests, the start-up spread and the request budget.
//! - [`scope`]: what each kind of token may touch, and the least-privileged choice for a device.

pub mod fleet;
pub mod ids;
pub mod plan;
pub mod reply;
pub mod scope;
pub mod secret;
pub mod time;
