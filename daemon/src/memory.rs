//! What becomes of the process's memory: no core dumps of it, and memory the daemon gives back.
//!
//! The daemon and `att-token` hold tokens, and the daemon the state key and refresh tokens, in clear in memory. A
//! crash (`panic = "abort"`, the watchdog's SIGABRT) would otherwise write that memory to disk wherever the system
//! collects core dumps (systemd-coredump, apport, a `core` file), and another process of the same user could read
//! it through ptrace or `/proc/PID/mem`. [`keep_out_of_core_dumps`] closes both at start; the units add
//! `LimitCORE=0`, and `MemorySwapMax=0` so that none of it is written to swap either.
//!
//! Memory the daemon gives back. A caller may send a message of many MiB (the bus allows 32 MiB by default); the
//! daemon refuses it at once, but glibc's malloc would by default keep the freed buffer in its heap for reuse, so
//! that each hostile message size would stay resident for the daemon's life.

/// Marks the process undumpable (`PR_SET_DUMPABLE` 0): the kernel writes no core dump of it, whatever the core
/// pattern, the `ulimit -c` or `fs.suid_dumpable` say, its `/proc/PID` files belong to root, and processes of the
/// same user may not ptrace it or read its memory. With `no_core_limit`, the core file size limit is also set to 0
/// (soft and hard), which children would inherit: the daemon, which starts none, sets it; `att-token exec` does
/// not, since its program's own limits are its business (the mark is not inherited across `execve`).
///
/// Returns what could not be done, for the caller to say once; on Linux neither call fails.
pub fn keep_out_of_core_dumps(no_core_limit: bool) -> Result<(), String> {
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("could not mark the process undumpable: {e}"))?;
    if no_core_limit {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
            .map_err(|e| format!("could not set the core file size limit to 0: {e}"))?;
    }
    Ok(())
}

/// Tunes glibc's malloc for a daemon that mostly waits. Every allocation of [`MMAP_THRESHOLD`] bytes or more gets a
/// mapping of its own, unmapped when freed, whatever sizes came before. (Left alone, glibc raises that threshold to
/// the largest block freed so far, up to 32 MiB, and then keeps such blocks in the heap.) And all threads share one
/// heap: the runtime thread does the work, and a short job on the blocking pool (a reload, an fsync, a DNS lookup)
/// would otherwise leave the pages it touched in an arena of its own for the daemon's life. Call it once at start,
/// before other threads exist. Does nothing on other C libraries.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let threshold = nix::libc::c_int::try_from(MMAP_THRESHOLD).unwrap_or(nix::libc::c_int::MAX);
        for (option, value, what) in [
            (nix::libc::M_MMAP_THRESHOLD, threshold, "a fixed mmap threshold; large freed buffers may stay resident"),
            (nix::libc::M_ARENA_MAX, 1, "a single arena; threads of the blocking pool may keep heaps of their own"),
        ] {
            // SAFETY: `mallopt` only sets one of malloc's tunables, under malloc's own lock; it touches no memory of
            // ours, and a refusal (return 0) leaves malloc as it was.
            #[allow(unsafe_code)]
            let set = unsafe { nix::libc::mallopt(option, value) };
            if set == 0 {
                tracing::debug!("glibc refused {what}");
            }
        }
    }
}

/// Returns the heap's free pages to the system (glibc's `malloc_trim`), for after a burst of work the daemon will not
/// repeat soon: start-up and a reload parse the config, read the files and restore the sessions, and free most of what
/// that took. Cheap on the daemon's small heap. Does nothing on other C libraries.
pub fn give_back_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` walks malloc's own free lists under its locks and only advises the kernel about free
        // pages; it touches no memory of ours.
        #[allow(unsafe_code)]
        unsafe {
            nix::libc::malloc_trim(0);
        }
    }
}

/// Allocations at least this large get a mapping of their own (glibc's default starting threshold).
pub const MMAP_THRESHOLD: usize = 128 * 1024;

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    /// Anonymous resident memory of this process, in KiB.
    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable");
        status
            .lines()
            .find_map(|line| line.strip_prefix("RssAnon:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("/proc/self/status has RssAnon")
    }

    #[test]
    fn free_heap_pages_below_a_live_block_go_back_to_the_system() {
        // 8 MiB in small blocks, then one block above them that stays: without a trim, the freed pages stay resident,
        // since malloc only gives back the top of a heap by itself.
        let blocks: Vec<Box<[u8; 1024]>> = (0..8 * 1024).map(|n| Box::new([n as u8; 1024])).collect();
        let above = Box::new([1_u8; 1024]);
        drop(blocks);
        let before = rss_anon_kib();
        super::give_back_free_pages();
        let after = rss_anon_kib();
        assert!(std::hint::black_box(&above)[0] == 1);
        println!("anonymous resident memory: {before} KiB before the trim, {after} KiB after");
        assert!(
            before.saturating_sub(after) >= 4 * 1024,
            "the trim gave back {} KiB of 8 MiB freed ({before} KiB before, {after} KiB after)",
            before.saturating_sub(after)
        );
    }
}
