//! The kernel's "clock synchronised" state, as an NTP client sets it and systemd's timedated reports it
//! (`NTPSynchronized`, what `timedatectl` shows as "System clock synchronized": no `STA_UNSYNC` and a maximum error
//! below 16 s). For the system test, which runs as root on the host whose kernel the container shares: it makes the
//! clock count as synchronised or not by setting both, as an NTP client does after each update, and puts back what
//! it found. The kernel itself lets the maximum error grow by 500 µs a second and sets `STA_UNSYNC` again at 16 s,
//! so a clock left "synchronised" returns to unsynchronised within about 9 hours even if nothing puts it back.

use anyhow::bail;
use nix::libc;

/// The maximum error (µs) at and beyond which the clock counts as unsynchronised (the kernel's `NTP_PHASE_LIMIT`).
const UNSYNCHRONISED_MAXERROR: libc::c_long = 16_000_000;

/// The kernel's clock state that this module changes, to put it back.
#[derive(Debug, Clone, Copy)]
pub struct KernelClock {
    maxerror: libc::c_long,
    esterror: libc::c_long,
    status: libc::c_int,
}

impl KernelClock {
    /// Reads the kernel's maximum and estimated errors.
    pub fn read() -> anyhow::Result<KernelClock> {
        let timex = adjtimex(0, 0, 0, 0)?;
        Ok(KernelClock { maxerror: timex.maxerror, esterror: timex.esterror, status: timex.status })
    }

    /// Whether timedated reports this state as synchronised.
    pub fn synchronised(&self) -> bool {
        self.maxerror < UNSYNCHRONISED_MAXERROR && self.status & libc::STA_UNSYNC == 0
    }

    /// Makes the clock count as synchronised (a maximum error of 10 ms, as after an NTP update) or not (16 s).
    /// Needs `CAP_SYS_TIME` (root on the host).
    pub fn set_synchronised(synchronised: bool) -> anyhow::Result<()> {
        let status = KernelClock::read()?.status;
        let (maxerror, esterror, status) = if synchronised {
            (10_000, 1_000, status & !libc::STA_UNSYNC)
        } else {
            (UNSYNCHRONISED_MAXERROR, 0, status | libc::STA_UNSYNC)
        };
        adjtimex(libc::ADJ_MAXERROR | libc::ADJ_ESTERROR | libc::ADJ_STATUS, maxerror, esterror, status).map(drop)
    }

    /// Puts back the state read by [`KernelClock::read`].
    pub fn restore(&self) -> anyhow::Result<()> {
        let modes = libc::ADJ_MAXERROR | libc::ADJ_ESTERROR | libc::ADJ_STATUS;
        adjtimex(modes, self.maxerror, self.esterror, self.status).map(drop)
    }
}

/// `adjtimex(2)` with `modes` (0: read only).
#[allow(unsafe_code)]
fn adjtimex(
    modes: libc::c_uint,
    maxerror: libc::c_long,
    esterror: libc::c_long,
    status: libc::c_int,
) -> anyhow::Result<libc::timex> {
    // SAFETY: `timex` is plain old data and zeroed is a valid value; the pointer is valid for the call, which
    // writes only into that struct.
    let (state, timex) = unsafe {
        let mut timex: libc::timex = std::mem::zeroed();
        timex.modes = modes;
        timex.maxerror = maxerror;
        timex.esterror = esterror;
        timex.status = status;
        let state = libc::adjtimex(&mut timex);
        (state, timex)
    };
    if state == -1 {
        let error = std::io::Error::last_os_error();
        bail!("adjtimex failed: {error}; setting the kernel's clock state needs root (CAP_SYS_TIME) on the host");
    }
    Ok(timex)
}
