//! Memory the daemon gives back. A caller may send a message of many MiB (the bus allows 32 MiB by default); the
//! daemon refuses it at once, but glibc's malloc would by default keep the freed buffer in its heap for reuse, so
//! that each hostile message size would stay resident for the daemon's life.

/// Makes glibc's malloc serve every allocation of [`MMAP_THRESHOLD`] bytes or more from a mapping of its own,
/// unmapped when freed, whatever sizes came before. (Left alone, glibc raises that threshold to the largest block
/// freed so far, up to 32 MiB, and then keeps such blocks in the heap.) Call it once at start, before other
/// threads exist. Does nothing on other C libraries.
pub fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let threshold = nix::libc::c_int::try_from(MMAP_THRESHOLD).unwrap_or(nix::libc::c_int::MAX);
        // SAFETY: `mallopt` only sets one of malloc's tunables, under malloc's own lock; it touches no memory of
        // ours, and a refusal (return 0) leaves malloc as it was.
        #[allow(unsafe_code)]
        let set = unsafe { nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, threshold) };
        if set == 0 {
            tracing::debug!("glibc refused a fixed mmap threshold; large freed buffers may stay resident");
        }
    }
}

/// Allocations at least this large get a mapping of their own (glibc's default starting threshold).
pub const MMAP_THRESHOLD: usize = 128 * 1024;
