//! Writer leases: a run holds its tables' leases while it runs, so `floe maintain` (which
//! rewrites files) never runs beside the committer that owns them; it refuses instead.
//!
//! ```text
//!   floe run      ── take "pipeline:<id>" (waits while floe maintain holds a table) ── renew ─┐
//!                                                                                  release ◄─┘
//!   floe maintain ── take "maintain:<host>:<pid>" ── held by a pipeline? refuse, naming it
//!   floe erase    ── take "erase:<host>:<pid>"    ── (the same)
//! ```
//!
//! # Invariants
//! - A lease expires [`TTL`] after its last renewal, so a killed process blocks `floe
//!   maintain` for at most that long; a restarted pipeline takes its own lease back at once,
//!   and an offline command takes over one whose owner was a process of this host that is
//!   gone.
//! - Leases only guard file rewrites; the commit protocol's compare-and-swap still decides
//!   every commit.

use std::sync::Arc;
use std::time::Duration;

use floe_engine::catalog::{Lease, TableCatalog};
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::runtime::IoRuntime;
use iceberg::TableIdent;
use tracing::info;

/// How long a lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(30);

/// Leases held until dropped (then released), renewed in the background.
pub struct Held {
    catalog: Arc<dyn TableCatalog>,
    runtime: IoRuntime,
    tables: Vec<TableIdent>,
    owner: String,
    renewal: tokio::task::JoinHandle<()>,
}

impl Drop for Held {
    fn drop(&mut self) {
        // Stop renewing first, so nothing takes the lease back after the release.
        self.renewal.abort();
        let (catalog, tables, owner) = (Arc::clone(&self.catalog), self.tables.clone(), self.owner.clone());
        let _ = self.runtime.block_on(async move {
            for t in &tables {
                catalog.release(t, &owner).await?;
            }
            Ok::<_, Error>(())
        });
    }
}

fn describe(lease: &Lease) -> String {
    let until = chrono::DateTime::from_timestamp_millis(lease.expires_ms)
        .map(|t| t.format("%H:%M:%S UTC").to_string())
        .unwrap_or_default();
    format!("`{}` (lease until {until})", lease.owner)
}

/// Takes the leases of a run. A table held by `floe maintain` is waited for; one held by
/// another pipeline is an error.
pub fn take_for_run(
    catalog: Arc<dyn TableCatalog>,
    runtime: IoRuntime,
    tables: Vec<TableIdent>,
    owner: String,
) -> Result<Held> {
    for t in &tables {
        let mut told = false;
        loop {
            match runtime.block_on(catalog.lease(t, &owner, TTL))? {
                None => break,
                Some(l) if l.owner.starts_with("maintain:") => {
                    if !told {
                        info!(table = %t, holder = %l.owner, "waiting for floe maintain to finish with the table");
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                Some(l) => {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!("{t} is being written by {}; two pipelines must not write one table", describe(&l)),
                    ));
                }
            }
        }
    }
    Ok(renewed(catalog, runtime, tables, owner))
}

/// Takes the leases `floe maintain` needs, or says who writes the table.
pub fn take_for_maintain(catalog: Arc<dyn TableCatalog>, runtime: IoRuntime, tables: Vec<TableIdent>) -> Result<Held> {
    take_offline(catalog, runtime, tables, "floe maintain")
}

/// Takes the leases an offline command (`command`, e.g. "floe erase") needs, or says who
/// writes the table.
pub fn take_offline(
    catalog: Arc<dyn TableCatalog>,
    runtime: IoRuntime,
    tables: Vec<TableIdent>,
    command: &str,
) -> Result<Held> {
    try_take_offline(catalog, runtime, tables, command)?.map_err(|(t, l)| {
        Error::new(
            ErrorKind::Config,
            format!(
                "{t} is being written by {}: a running pipeline maintains its own tables ([tables.maintenance]); stop it to run {command}",
                describe(&l)
            ),
        )
    })
}

/// Takes the leases an offline command needs; or, if another process holds one, that
/// table and its lease (nothing is held then).
pub fn try_take_offline(
    catalog: Arc<dyn TableCatalog>,
    runtime: IoRuntime,
    tables: Vec<TableIdent>,
    command: &str,
) -> Result<std::result::Result<Held, (TableIdent, Lease)>> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let owner = format!("{}:{}:{}", command.trim_start_matches("floe "), host.trim(), std::process::id());
    let mut taken = Vec::new();
    for t in &tables {
        let mut refused = runtime.block_on(catalog.lease(t, &owner, TTL))?;
        if let Some(l) = &refused
            && dead_here(&l.owner, host.trim())
        {
            // An offline command on this machine that died (kill -9) holds it: no need to
            // wait out its lease.
            info!(table = %t, owner = %l.owner, "taking over the lease of a process that is gone");
            runtime.block_on(catalog.release(t, &l.owner))?;
            refused = runtime.block_on(catalog.lease(t, &owner, TTL))?;
        }
        if let Some(l) = refused {
            let held = renewed(Arc::clone(&catalog), runtime.clone(), taken, owner.clone());
            drop(held);
            return Ok(Err((t.clone(), l)));
        }
        taken.push(t.clone());
    }
    Ok(Ok(renewed(catalog, runtime, taken, owner)))
}

/// Whether `owner` (`<command>:<host>:<pid>`) is a process of this host that no longer runs.
fn dead_here(owner: &str, host: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (pid, owner_host) = (parts.next(), parts.next());
    parts.next().is_some()
        && owner_host == Some(host)
        && pid
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
}

fn renewed(catalog: Arc<dyn TableCatalog>, runtime: IoRuntime, tables: Vec<TableIdent>, owner: String) -> Held {
    let (c, t, o) = (Arc::clone(&catalog), tables.clone(), owner.clone());
    let renewal = runtime.spawn(async move {
        loop {
            tokio::time::sleep(TTL / 6).await;
            for table in &t {
                if let Err(e) = c.lease(table, &o, TTL).await {
                    tracing::warn!(table = %table, error = %e, "renewing the writer lease failed");
                }
            }
        }
    });
    Held { catalog, runtime, tables, owner, renewal }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_gone_process_of_this_host_loses_its_lease() {
        let me = std::process::id();
        assert!(!super::dead_here(&format!("erase:box:{me}"), "box"));
        assert!(super::dead_here(&format!("erase:box:{}", u32::MAX - 1), "box"));
        assert!(!super::dead_here(&format!("erase:other:{}", u32::MAX - 1), "box"));
        assert!(!super::dead_here("pipeline:erase", "box"));
    }
}
