//! The daemon's clocks: the boot-time clock that deadlines live on, timers on it, and whether anything confirms
//! the wall clock.
//!
//! Deadlines are measured on `CLOCK_BOOTTIME`, the monotonic clock that keeps counting while the machine is
//! suspended (a paused VM, a laptop-class gateway that sleeps). `CLOCK_MONOTONIC`, which tokio's timers use,
//! stops during a suspend: a token checked against it could be served after its life has passed in real elapsed
//! time. Every serving decision reads [`boot_now`], and the session tasks sleep with [`sleep_until`], a
//! `timerfd` on the boot-time clock that fires as soon as the machine resumes when its deadline passed meanwhile,
//! so an overdue refresh happens at once after a resume.
//!
//! On a gateway without a real-time clock, the wall clock at boot is the last time saved to disk: plausible and
//! wrong. A restored access token is served only once the time is confirmed: the system says an NTP client has
//! synchronised the clock, unless `[daemon] trust_kernel_time_sync = false`. The daemon asks systemd's timedated
//! on the bus ([`ask_timedated`], its `NTPSynchronized`, which is what `timedatectl` shows as "System clock
//! synchronized"), since the shipped unit's sandbox forbids the `adjtimex` call that reads the kernel's flag.
//! Otherwise the restored token is refreshed first, and the cloud's reply (with its `Date`) gives a fresh one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::time::{ClockId as PosixClock, clock_gettime};
use token_model::time::MonoTime;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

/// Time added to the boot-time clock by [`simulate_suspend`] (nanoseconds); zero outside tests.
static SUSPENDED_NANOS: AtomicU64 = AtomicU64::new(0);
/// Wakes every [`sleep_until`] when [`simulate_suspend`] moves the clock.
static RESUMED: Notify = Notify::const_new();

/// The boot-time clock as read by the kernel, without any simulated suspend.
fn kernel_boot_time() -> Duration {
    // CLOCK_BOOTTIME exists on every Linux the daemon supports; reading it cannot fail with a valid id.
    clock_gettime(PosixClock::CLOCK_BOOTTIME).map_or(Duration::ZERO, Duration::from)
}

/// Now, on the boot-time clock: time since boot, including time spent suspended.
pub fn boot_now() -> MonoTime {
    MonoTime::from_origin(kernel_boot_time() + Duration::from_nanos(SUSPENDED_NANOS.load(Ordering::Acquire)))
}

/// Moves the daemon's boot-time clock forward by `slept`, as if the machine had been suspended that long, and
/// wakes every sleeper so it can look at the new time. For tests of the daemon's core, which cannot suspend
/// the machine; the daemon itself never calls it.
#[doc(hidden)]
pub fn simulate_suspend(slept: Duration) {
    let nanos = u64::try_from(slept.as_nanos()).unwrap_or(u64::MAX);
    SUSPENDED_NANOS.fetch_add(nanos, Ordering::AcqRel);
    RESUMED.notify_waiters();
}

/// Sleeps until `at` on the boot-time clock ([`boot_now`]). Returns at once when `at` has passed. A suspend
/// that carries the clock past `at` ends the sleep as soon as the machine resumes. For one sleep; a task that
/// sleeps again and again keeps a [`Sleeper`].
pub async fn sleep_until(at: MonoTime) {
    Sleeper::new().until(at).await;
}

/// Sleeps on the boot-time clock again and again with one `timerfd`, armed anew for each sleep.
pub struct Sleeper {
    /// `None` when no timer could be made: then the monotonic clock, woken by [`simulate_suspend`] only.
    timer: Option<BootTimer>,
}

impl Sleeper {
    /// A sleeper with its timer (falls back to the monotonic clock, with a debug line, if none can be made).
    pub fn new() -> Self {
        let timer = match BootTimer::new() {
            Ok(timer) => Some(timer),
            Err(e) => {
                tracing::debug!("no boot-time timer ({e}); sleeping on the monotonic clock");
                None
            }
        };
        Sleeper { timer }
    }

    /// Sleeps until `at` on the boot-time clock, as [`sleep_until`] does.
    pub async fn until(&mut self, at: MonoTime) {
        loop {
            let resumed = RESUMED.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            let now = boot_now();
            if now >= at {
                return;
            }
            let left = at.saturating_since(now);
            match self.timer.as_mut() {
                Some(timer) => tokio::select! {
                    () = timer.fire_after(left) => {}
                    () = &mut resumed => {}
                },
                None => tokio::select! {
                    () = tokio::time::sleep(left) => {}
                    () = &mut resumed => {}
                },
            }
        }
    }
}

impl Default for Sleeper {
    fn default() -> Self {
        Sleeper::new()
    }
}

/// A `timerfd` on `CLOCK_BOOTTIME`, read through tokio's reactor.
struct BootTimer {
    fd: AsyncFd<Timer>,
}

/// The timer as tokio's reactor wants it (a raw descriptor).
struct Timer(TimerFd);

impl std::os::fd::AsRawFd for Timer {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd as _;
        self.0.as_fd().as_raw_fd()
    }
}

impl BootTimer {
    #[allow(unsafe_code)]
    fn new() -> std::io::Result<Self> {
        let timer = TimerFd::new(ClockId::CLOCK_BOOTTIME, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)?;
        // SAFETY: `Timer` owns the descriptor (an `OwnedFd` inside `TimerFd`): it stays open, and `as_raw_fd`
        // returns the same one, for as long as the `AsyncFd` that owns the `Timer` lives.
        let fd = unsafe { AsyncFd::register(Timer(timer)) }?;
        Ok(BootTimer { fd })
    }

    /// Waits until `left` has passed on the boot-time clock (suspended time counts).
    async fn fire_after(&mut self, left: Duration) {
        // At least a microsecond: a zero expiry would disarm the timer.
        let left = left.max(Duration::from_micros(1));
        let target = timer_expiry(kernel_boot_time(), left);
        if let Err(e) = self.fd.get_ref().0.set(Expiration::OneShot(target), TimerSetTimeFlags::TFD_TIMER_ABSTIME) {
            tracing::debug!("could not arm the boot-time timer ({e}); sleeping on the monotonic clock");
            tokio::time::sleep(left).await;
            return;
        }
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                tokio::time::sleep(left).await;
                return;
            };
            let mut expirations = [0u8; 8];
            match nix::unistd::read(&self.fd.get_ref().0, &mut expirations) {
                Ok(_) => return,
                Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                Err(_) => return,
            }
        }
    }
}

/// The absolute expiry, on the boot-time clock, of a timer armed at `now` to fire after `left`, as the kernel's
/// `timespec`. Saturates at the largest `time_t` instead of wrapping: on 32-bit targets (armhf) `time_t` holds
/// about 68 years of seconds, and `TimeSpec::from_duration` casts with `as`, which would turn a far deadline into
/// a negative expiry (refused by the kernel) or a near one (a timer that fires again and again).
fn timer_expiry(now: Duration, left: Duration) -> TimeSpec {
    let latest = Duration::from_secs(u64::try_from(nix::libc::time_t::MAX).unwrap_or(u64::MAX));
    TimeSpec::from_duration(now.saturating_add(left).min(latest))
}

/// The service on the system bus that says whether the wall clock is synchronised: systemd's timedated, whose
/// `NTPSynchronized` property is what `timedatectl` shows as "System clock synchronized".
pub const TIMEDATED: &str = "org.freedesktop.timedate1";
/// timedated's object.
const TIMEDATED_PATH: &str = "/org/freedesktop/timedate1";

/// Asks timedated on `connection`'s bus whether the system clock is synchronised (its `NTPSynchronized`).
///
/// The daemon's sandbox (`ProtectClock=yes`, `SystemCallFilter=~@privileged`) forbids reading the kernel's flag
/// with `adjtimex`, even read-only; timedated reads it with the privileges of its own unit, and any bus client
/// may read its properties. The daemon's connections bound every call (`BUS_CALL_TIMEOUT`), timedated
/// started on demand included. The error says why there is no answer (no timedated on the bus, no answer in time,
/// an unexpected reply).
pub async fn ask_timedated(connection: &zbus::Connection) -> Result<bool, String> {
    let reply = connection
        .call_method(
            Some(TIMEDATED),
            TIMEDATED_PATH,
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &(TIMEDATED, "NTPSynchronized"),
        )
        .await
        .map_err(|e| format!("could not ask {TIMEDATED} (systemd-timedated): {e}"))?;
    let body = reply.body();
    match body.deserialize::<zbus::Variant<'_>>() {
        Ok(zbus::Variant::Bool(synchronised)) => Ok(synchronised),
        Ok(_) => Err(format!("{TIMEDATED}'s NTPSynchronized is not a boolean")),
        Err(e) => Err(format!("{TIMEDATED} sent an unexpected reply: {e}")),
    }
}

/// Whether the daemon counts the wall clock as confirmed: `[daemon] trust_kernel_time_sync`, and what the
/// system said when last asked ([`ask_timedated`], at start and at each reload). Clones share what was said.
#[derive(Debug, Clone)]
pub struct ClockPolicy {
    /// Believe the system's "synchronised" flag (`[daemon] trust_kernel_time_sync`).
    pub trust_kernel_time_sync: bool,
    /// What the system said when last asked; false until it said otherwise.
    synchronised: Arc<AtomicBool>,
}

impl Default for ClockPolicy {
    fn default() -> Self {
        ClockPolicy::new(true)
    }
}

impl ClockPolicy {
    /// The policy of `[daemon] trust_kernel_time_sync`; the clock is not synchronised until [`Self::set_synchronised`]
    /// says so.
    pub fn new(trust_kernel_time_sync: bool) -> Self {
        ClockPolicy { trust_kernel_time_sync, synchronised: Arc::new(AtomicBool::new(false)) }
    }

    /// Records what the system said: whether the clock is synchronised.
    pub fn set_synchronised(&self, synchronised: bool) {
        self.synchronised.store(synchronised, Ordering::Release);
    }

    /// Whether the wall clock is confirmed now.
    pub fn confirmed(&self) -> bool {
        self.trust_kernel_time_sync && self.synchronised.load(Ordering::Acquire)
    }
}

/// Asks the system whether the wall clock is synchronised ([`ask_timedated`], bounded by the connection's method
/// timeout) on `connection`, records the answer in `clock` and logs it. Without a connection (the bus is lost) the
/// last answer stands: timedated lives on that bus. Nothing is asked under `[daemon] trust_kernel_time_sync =
/// false`.
pub async fn check_clock(clock: &ClockPolicy, connection: Option<&zbus::Connection>) {
    if !clock.trust_kernel_time_sync {
        return;
    }
    let Some(connection) = connection else {
        tracing::debug!("the bus is lost: the wall clock stays as timedated last said");
        return;
    };
    record_clock(clock, ask_timedated(connection).await);
}

/// Records timedated's answer (or why there is none) in `clock`, and logs what it means.
pub fn record_clock(clock: &ClockPolicy, answer: Result<bool, String>) {
    let synchronised = answer.as_ref().is_ok_and(|yes| *yes);
    let was = clock.confirmed();
    clock.set_synchronised(synchronised);
    let said = match answer {
        Ok(true) if was => return,
        Ok(true) => "the wall clock is confirmed: timedated reports it synchronised".to_owned(),
        Ok(false) => "the wall clock is not confirmed: timedated reports it not synchronised (timedatectl: System \
                      clock synchronized: no), so a saved access token is refreshed before it is served; enable an \
                      NTP client (timedatectl set-ntp true)"
            .to_owned(),
        Err(e) => format!(
            "the wall clock is not confirmed: {e}; a saved access token is refreshed before it is served \
             (systemd-timedated answers on the system bus where systemd runs)"
        ),
    };
    tracing::info!("{said}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_boot_time_sleep_ends_at_its_deadline_and_at_once_for_a_past_one() {
        let start = boot_now();
        sleep_until(start + Duration::from_millis(150)).await;
        let slept = boot_now().saturating_since(start);
        assert!(slept >= Duration::from_millis(150) && slept < Duration::from_secs(5), "{slept:?}");
        let before = boot_now();
        sleep_until(start).await;
        assert!(boot_now().saturating_since(before) < Duration::from_millis(100), "a past deadline returns at once");
    }

    #[test]
    fn distrusting_the_system_never_confirms_and_clones_share_what_it_said() {
        let trusting = ClockPolicy::new(true);
        let clone = trusting.clone();
        assert!(!trusting.confirmed(), "not confirmed before the system was asked");
        clone.set_synchronised(true);
        assert!(trusting.confirmed(), "a clone shares what the system said");
        trusting.set_synchronised(false);
        assert!(!clone.confirmed());
        let distrusting = ClockPolicy::new(false);
        distrusting.set_synchronised(true);
        assert!(!distrusting.confirmed());
    }

    /// The seconds a timer armed at `now` for `left` must expire at: the exact sum, or the largest `time_t`
    /// when that does not hold it (32-bit targets such as armhf).
    fn expected_seconds(now: u64, left: u64) -> i128 {
        (i128::from(now) + i128::from(left)).min(i128::from(nix::libc::time_t::MAX))
    }

    #[test]
    fn a_far_timer_expiry_is_neither_truncated_nor_wrapped() {
        let now = Duration::from_secs(1_000);
        let sixty_days = 60 * 86_400;
        let expiry = timer_expiry(now, Duration::from_secs(sixty_days) + Duration::from_millis(250));
        assert_eq!(i128::from(expiry.tv_sec()), 1_000 + i128::from(sixty_days));
        assert_eq!(i128::from(expiry.tv_nsec()), 250_000_000);

        // Past what a signed 32-bit time_t holds: `as` would make it negative there, and the kernel would refuse
        // the timer.
        let past_i32 = u64::from(i32::MAX.unsigned_abs()) + 1;
        let expiry = timer_expiry(now, Duration::from_secs(past_i32));
        assert_eq!(i128::from(expiry.tv_sec()), expected_seconds(1_000, past_i32));
        assert!(expiry.tv_sec() > 0 && i128::from(expiry.tv_nsec()) == 0);

        // Past 2^32 seconds: `as` would wrap to a small positive value there, a timer that fires almost at once,
        // again and again.
        let past_u32 = u64::from(u32::MAX) + 10;
        let expiry = timer_expiry(now, Duration::from_secs(past_u32));
        assert_eq!(i128::from(expiry.tv_sec()), expected_seconds(1_000, past_u32));
        assert!(i128::from(expiry.tv_sec()) > 1_000 + i128::from(sixty_days));

        // The longest wait there is.
        let expiry = timer_expiry(now, Duration::MAX);
        assert_eq!(expiry.tv_sec(), nix::libc::time_t::MAX);
    }
}
