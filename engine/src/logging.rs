//! `tracing` setup for binaries: structured logs to stderr, filtered by `RUST_LOG`.
//!
//! # Invariants
//! - Without `RUST_LOG`, floe logs lifecycle events (`info`) of its own crates and
//!   warnings from everything else.
//! - Installing twice is harmless (tests call it from many places).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("warn,floe_engine=info,floe_operators=info,floe_pipelines=info,floe_harness=info")
    });
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}
