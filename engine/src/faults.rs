//! Fault injection for fault tests: crash the process at a named point.
//!
//! `FLOE_FAULTS="point:n[,point:n...]"` makes the n-th time (1-based) the process reaches
//! `point` abort it on the spot, like `kill -9`: no destructor runs, nothing is flushed.
//! Without the variable every point is a relaxed atomic load.
//!
//! Points:
//! - `files-written`: an epoch's data files exist, the committer has not seen them;
//! - `commit-before-swap`: manifests, manifest list and metadata file are written, the
//!   catalog pointer is not moved;
//! - `commit-after-swap`: the pointer moved, the committer has not learned it (a lost
//!   commit response).
//! - `schema-commit-before-swap` / `schema-commit-after-swap`: the same two moments, counted
//!   only for commits that also evolve the table's schema.
//! - `schema-before-swap` / `schema-after-swap`: the same for metadata-only schema commits
//!   (at start, or by `floe schema approve`).
//! - `erase-rewritten`: `floe erase` wrote a table's rewritten files, not yet committed;
//!   `erase-before-proof`: it expired and cleaned up, the proof has not run.
//!
//! # Invariants
//! - Inert unless `FLOE_FAULTS` is set; never used by the pipeline's logic.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::OnceLock;

fn plan() -> &'static Option<Mutex<HashMap<String, u64>>> {
    static PLAN: OnceLock<Option<Mutex<HashMap<String, u64>>>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let text = std::env::var("FLOE_FAULTS").ok()?;
        let map = text
            .split(',')
            .filter_map(|p| {
                let (name, n) = p.trim().split_once(':')?;
                Some((name.to_string(), n.trim().parse().ok()?))
            })
            .collect();
        Some(Mutex::new(map))
    })
}

/// Aborts the process if `FLOE_FAULTS` says this is the time `point` must crash.
pub fn point(name: &str) {
    let Some(plan) = plan() else { return };
    let mut plan = plan.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(left) = plan.get_mut(name) {
        *left = left.saturating_sub(1);
        if *left == 0 {
            eprintln!("floe: fault injection: crashing at `{name}`");
            std::process::abort();
        }
    }
}
