//! 180 days in virtual time: the planner against a small model of the cloud, with outages, reboots and wall
//! clocks that jump by years; then the refresh path under pressure: short access tokens (20 s, and 3 s which
//! is too short to serve), suspends (a boot-time clock jumps forward) and reboots without a real-time clock.
//! Then a fleet of 10,000 gateways powered on in the same second after a power cut. Run with `--nocapture` to
//! see the figures.
//!
//! `model` holds the clock units, the seeded random numbers and the model of the cloud; `long_run` the 180 days;
//! `pressure` the refresh path under pressure.

mod fleet;
mod long_run;
mod model;
mod pressure;
