//! Stopping a continuous run: SIGINT or SIGTERM asks the source to finish where it stands
//! (what is closed gets committed, then the run exits 0); a second signal exits at once.
//!
//! # Invariants
//! - The first signal only sets the stop flag; nothing is torn down from a signal handler.
//! - A second signal terminates with status 130 without waiting: an operator who presses
//!   Ctrl-C twice means it. Exactly-once restarts make that safe.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use floe_engine::error::{Error, ErrorKind, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

/// Sets `stop` on the first SIGINT/SIGTERM; exits on the second.
pub fn stop_on_signals(stop: &Arc<AtomicBool>) -> Result<()> {
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as it was before this signal.
        flag::register_conditional_shutdown(signal, 130, Arc::clone(stop))
            .and_then(|_| flag::register(signal, Arc::clone(stop)))
            .map_err(|e| Error::new(ErrorKind::Internal, format!("installing the signal handler: {e}")))?;
    }
    Ok(())
}
