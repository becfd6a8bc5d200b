//! What the daemon knows about the wall clock: whether something confirms it.
//!
//! On a gateway without a real-time clock, the wall clock at boot is the last time saved to disk: plausible and
//! wrong. A restored access token is served only once the time is confirmed: the kernel says an NTP client has
//! synchronised the clock (the adjtimex status that `timedatectl` shows as "System clock synchronized"), unless
//! `[daemon] trust_kernel_time_sync = false`. Otherwise the restored token is refreshed first, and the cloud's
//! reply (with its `Date`) gives a fresh one.

/// Whether the kernel reports the system clock synchronised (by NTP, PTP, ...).
///
/// `adjtimex(2)` with no modes only reads: it returns `TIME_ERROR` while the clock is not synchronised, and sets
/// `STA_UNSYNC` in the status. There is no wrapper in the crates the daemon uses, so this is the one place the
/// daemon calls the C library itself.
#[allow(unsafe_code)]
pub fn kernel_reports_synchronised() -> bool {
    use nix::libc;
    // SAFETY: `timex` is plain old data, zeroed is a valid value (modes = 0: read only), and the pointer is valid
    // for the duration of the call, which writes only into that struct.
    let (state, status) = unsafe {
        let mut timex: libc::timex = std::mem::zeroed();
        let state = libc::adjtimex(&mut timex);
        (state, timex.status)
    };
    state != -1 && state != libc::TIME_ERROR && status & libc::STA_UNSYNC == 0
}

/// How the daemon decides whether the wall clock is confirmed at start.
#[derive(Debug, Clone, Copy)]
pub struct ClockPolicy {
    /// Believe the kernel's "synchronised" flag (`[daemon] trust_kernel_time_sync`).
    pub trust_kernel_time_sync: bool,
    /// Reads the kernel's flag: [`kernel_reports_synchronised`], or a stand-in where the process's own clock
    /// state must not decide (tests of the daemon's core).
    pub kernel_synchronised: fn() -> bool,
}

impl Default for ClockPolicy {
    fn default() -> Self {
        ClockPolicy { trust_kernel_time_sync: true, kernel_synchronised: kernel_reports_synchronised }
    }
}

impl ClockPolicy {
    /// The policy of `[daemon] trust_kernel_time_sync`, reading the kernel's flag.
    pub fn new(trust_kernel_time_sync: bool) -> Self {
        ClockPolicy { trust_kernel_time_sync, ..ClockPolicy::default() }
    }

    /// Whether the wall clock is confirmed now.
    pub fn confirmed(&self) -> bool {
        self.trust_kernel_time_sync && (self.kernel_synchronised)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distrusting_the_kernel_never_confirms() {
        assert!(!ClockPolicy { trust_kernel_time_sync: false, kernel_synchronised: || true }.confirmed());
        assert!(ClockPolicy { trust_kernel_time_sync: true, kernel_synchronised: || true }.confirmed());
        assert!(!ClockPolicy { trust_kernel_time_sync: true, kernel_synchronised: || false }.confirmed());
        // Whatever this machine's state, the call answers without failing, and the default policy follows it.
        assert_eq!(ClockPolicy::default().confirmed(), kernel_reports_synchronised());
    }
}
