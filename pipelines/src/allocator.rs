//! Allocator tuning for the `floe` binary (which uses mimalloc as its global allocator).
//!
//! Epochs allocate and free large buffers (Arrow builders, Parquet pages) in waves. With
//! mimalloc's default 10 ms purge delay those pages went back to the OS between waves and
//! came back zeroed, which cost ~15% of CPU in profiles. One second keeps them across
//! epochs and still returns memory promptly when a pipeline idles.
//!
//! Transparent huge pages are turned off for the process: with THP, every fresh arena page
//! faulted in a 2 MiB page that the kernel zeroed whole, ~10% of a run's CPU
//! (`clear_page_erms` under `do_huge_pmd_anonymous_page` in `perf`), while floe's buffers
//! are short-lived and gain little from huge TLB entries.
//!
//! # Invariants
//! - A `MIMALLOC_PURGE_DELAY` set by the user wins: the option is changed only while it
//!   holds mimalloc's documented default. Likewise `MIMALLOC_ALLOW_THP`, when set, wins.

use std::os::raw::c_int;

/// `mi_option_purge_delay` in mimalloc v2's `mi_option_t` (not exported by the -sys crate).
const PURGE_DELAY: c_int = 15;
/// mimalloc's default for it, in milliseconds.
const DEFAULT_PURGE_DELAY_MS: std::os::raw::c_long = 10;

/// `mi_option_allow_thp` in mimalloc v3's `mi_option_t`.
const ALLOW_THP: c_int = 43;

/// Applies floe's allocator settings.
pub fn tune() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: setting an allocator option takes no pointers; prctl(PR_SET_THP_DISABLE)
        // only flags this process's address space (existing and future mappings) so that
        // page faults map 4 KiB pages.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(ALLOW_THP, 0);
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
    // SAFETY: reading and setting a mimalloc option are plain calls into the allocator's
    // option table; they take no pointers and are thread-safe.
    #[allow(unsafe_code)]
    unsafe {
        if libmimalloc_sys::mi_option_get(PURGE_DELAY) == DEFAULT_PURGE_DELAY_MS {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 1000);
        }
    }
}
