//! Allocator tuning for the `floe` binary (which uses mimalloc as its global allocator).
//!
//! Epochs allocate and free large buffers (Arrow builders, Parquet pages) in waves. With
//! mimalloc's default 10 ms purge delay those pages went back to the OS between waves and
//! came back zeroed, which cost ~15% of CPU in profiles. One second keeps them across
//! epochs and still returns memory promptly when a pipeline idles.
//!
//! # Invariants
//! - A `MIMALLOC_PURGE_DELAY` set by the user wins: the option is changed only while it
//!   holds mimalloc's documented default.

use std::os::raw::c_int;

/// `mi_option_purge_delay` in mimalloc v2's `mi_option_t` (not exported by the -sys crate).
const PURGE_DELAY: c_int = 15;
/// mimalloc's default for it, in milliseconds.
const DEFAULT_PURGE_DELAY_MS: std::os::raw::c_long = 10;

/// Applies floe's allocator settings.
pub fn tune() {
    // SAFETY: reading and setting a mimalloc option are plain calls into the allocator's
    // option table; they take no pointers and are thread-safe.
    #[allow(unsafe_code)]
    unsafe {
        if libmimalloc_sys::mi_option_get(PURGE_DELAY) == DEFAULT_PURGE_DELAY_MS {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 1000);
        }
    }
}
