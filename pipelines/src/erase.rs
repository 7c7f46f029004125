//! `floe erase PIPELINE.toml TABLE --key K... | --keys FILE`: removes the rows of primary
//! keys physically from a source table's base table and its CDC table, and proves it.
//!
//! ```text
//!   keys (typed by the base table's identifier fields)
//!   per table (base, then CDC), under the writer lease:
//!     erase_table ─► `replace` snapshots (files holding the keys rewritten without them)
//!     ─► expire every snapshot but the current one (they reference the old files)
//!     ─► delete what no retained snapshot references, orphans included (no window: the
//!        lease keeps every other writer out)
//!     ─► proof: every file under the location read; no row, no manifest bound of a key
//!     ─► audit entry `floe.erasure.<id>` in the table's properties (printed too)
//! ```
//!
//! # Invariants
//! - The current snapshot keeps the offsets a restart needs: a rewrite carries its parent's.
//! - The audit entry names the keys by digest and count, never by value: the table's
//!   metadata must not keep what was erased.
//! - A run that dies anywhere leaves the tables correct; running it again finishes the job
//!   (nothing left to rewrite, then expiry, cleanup and the proof).
//! - The proof failing is an error, and its audit entry says so.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_engine::catalog::{SqlTableCatalog, TableCatalog, ident};
use floe_engine::config::{PipelineConfig, TableName};
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::expiry::{ExpiryPolicy, expire_and_clean};
use floe_engine::runtime::IoRuntime;
use floe_operators::erase::{EraseKeys, erase_table};
use floe_operators::erase_proof::{Proof, prove_erased};
use floe_operators::files::Dest;
use floe_operators::key_index_rebuild::KeyShape;
use floe_operators::snapshot_rewrite::Layout;

use crate::maintain::{commit_bundles, last_commit, target_of};

/// Table property prefix of erasure audit entries: `floe.erasure.<id>`.
pub const PROPERTY_ERASURE_PREFIX: &str = "floe.erasure.";

/// What an erasure did to one table.
#[derive(Clone, Debug, Default)]
pub struct ErasedTable {
    /// The table.
    pub table: String,
    /// Files of the current snapshot that held a key.
    pub files_with_keys: u64,
    /// Rows of the keys removed.
    pub rows: u64,
    /// Partitions rewritten.
    pub partitions: usize,
    /// Snapshots expired.
    pub snapshots_expired: u64,
    /// Files deleted.
    pub files_deleted: u64,
    /// What the proof read and found.
    pub proof: Proof,
    /// The audit entry's property name.
    pub audit_key: String,
    /// The audit entry.
    pub audit: String,
}

/// What `floe erase` did.
#[derive(Clone, Debug, Default)]
pub struct EraseReport {
    /// Keys erased.
    pub keys: usize,
    /// Per table.
    pub tables: Vec<ErasedTable>,
    /// Wall seconds.
    pub seconds: f64,
}

impl std::fmt::Display for EraseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "erased {} key(s) in {:.2} s", self.keys, self.seconds)?;
        writeln!(
            f,
            "{:<28} {:>11} {:>8} {:>10} {:>8} {:>8} {:>8} {:>10} {:>6}",
            "table", "files held", "rows", "partitions", "expired", "deleted", "scanned", "rows found", "bounds"
        )?;
        for t in &self.tables {
            writeln!(
                f,
                "{:<28} {:>11} {:>8} {:>10} {:>8} {:>8} {:>8} {:>10} {:>6}",
                t.table,
                t.files_with_keys,
                t.rows,
                t.partitions,
                t.snapshots_expired,
                t.files_deleted,
                t.proof.files,
                t.proof.rows_found,
                t.proof.bounds_found
            )?;
        }
        for t in &self.tables {
            writeln!(f, "audit {}: {} = {}", t.table, t.audit_key, t.audit)?;
        }
        Ok(())
    }
}

/// The keys given on the command line and in a keys file (one per line; blank lines and
/// lines starting with `#` are skipped).
pub fn read_keys(keys: &[String], file: Option<&Path>) -> Result<Vec<String>> {
    let mut out: Vec<String> = keys.to_vec();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(ErrorKind::Config, format!("{}: cannot read the keys file: {e}", path.display()))
        })?;
        out.extend(
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(ToString::to_string),
        );
    }
    if out.is_empty() {
        return Err(Error::new(ErrorKind::Config, "no key to erase: give --key K... or --keys FILE"));
    }
    Ok(out)
}

/// Erases `keys` from the base and CDC tables of the source table `table` (its base or CDC
/// table name, or its topic) of `config`.
pub fn erase(config: &PipelineConfig, table: &str, keys: &[String]) -> Result<EraseReport> {
    let started = Instant::now();
    let source = config
        .tables
        .iter()
        .find(|t| {
            t.topic == table
                || t.base.as_ref().is_some_and(|n| n.to_string() == table)
                || t.cdc.as_ref().is_some_and(|n| n.to_string() == table)
        })
        .ok_or_else(|| {
            Error::new(ErrorKind::Config, format!("{}: no table is named `{table}`", config.file.display()))
        })?;
    let base = source.base.clone().ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!("{}: `{table}` has no base table, whose primary key the keys are typed by", config.file.display()),
        )
    })?;
    let runtime = IoRuntime::new(2)?;
    let catalog: Arc<dyn TableCatalog> = Arc::new(runtime.block_on(SqlTableCatalog::open(&config.catalog))?);
    let base_state = runtime
        .block_on(catalog.load(&ident(&base)))?
        .ok_or_else(|| Error::new(ErrorKind::Catalog, format!("{base} does not exist: nothing to erase")))?;
    let keys = EraseKeys::parse(base_state.metadata.current_schema(), keys)?;
    let mut names: Vec<(TableName, bool)> = vec![(base, false)];
    names.extend(source.cdc.clone().map(|n| (n, true)));
    let idents = names.iter().map(|(n, _)| ident(n)).collect();
    let _leases = crate::leases::take_offline(Arc::clone(&catalog), runtime.clone(), idents, "floe erase")?;
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let mut report = EraseReport { keys: keys.values.len(), ..Default::default() };
    for (name, cdc) in names {
        let Some(state) = runtime.block_on(catalog.load(&ident(&name)))? else { continue };
        let schema = state.metadata.current_schema();
        let (layout, dest, filter) = match cdc {
            true => (Layout::Cdc, Dest::Cdc(0), keys.cdc_filter(schema)?),
            false => (Layout::Buckets(KeyShape::from_schema(schema)?), Dest::Base(0), keys.base_filter()),
        };
        let target = target_of(&name, &state);
        let (pipeline_id, epoch) = last_commit(&state.metadata, &config.pipeline.id)?;
        let erased = runtime.block_on(erase_table(
            catalog.as_ref(),
            dest,
            &target,
            &layout,
            &filter,
            &source.maintenance,
            epoch,
            &format!("x{id}"),
        ))?;
        floe_engine::faults::point("erase-rewritten");
        let (files_with_keys, rows) = (erased.files_with_keys, erased.rows);
        let committed = commit_bundles(&runtime, catalog.as_ref(), &target, &pipeline_id, epoch, erased.bundles)?;
        // Every older snapshot may reference a file that held a key: only the current one
        // (which carries the offsets) stays.
        let everything = ExpiryPolicy { keep_snapshots: 1, max_age_ms: 0 };
        let now = chrono::Utc::now().timestamp_millis();
        let expiry = runtime.block_on(expire_and_clean(
            catalog.as_ref(),
            &state.ident,
            everything,
            now,
            true,
            Duration::ZERO,
        ))?;
        floe_engine::faults::point("erase-before-proof");
        let proof = runtime.block_on(prove_erased(catalog.file_io(), &target.location, &filter, &keys.datums()))?;
        let audit = serde_json::json!({
            "at_ms": chrono::Utc::now().timestamp_millis(),
            "keys": keys.values.len(),
            "keys_sha256": keys.digest(),
            "rows_erased": rows,
            "files_rewritten": files_with_keys,
            "snapshots_expired": expiry.snapshots_expired,
            "files_deleted": expiry.cleanup.files(),
            "files_scanned": proof.files,
            "rows_found": proof.rows_found,
            "bounds_found": proof.bounds_found,
            "clean": proof.clean(),
        })
        .to_string();
        let audit_key = format!("{PROPERTY_ERASURE_PREFIX}{id}");
        let set = HashMap::from([(audit_key.clone(), audit.clone())]);
        runtime.block_on(floe_engine::commit::commit_metadata(catalog.as_ref(), &state.ident, None, set, &[]))?;
        if !proof.clean() {
            return Err(Error::new(
                ErrorKind::Data,
                format!(
                    "{name}: the erasure proof found {} row(s) and {} manifest bound(s) of the keys, in {}",
                    proof.rows_found,
                    proof.bounds_found,
                    proof.holders.join(", ")
                ),
            ));
        }
        report.tables.push(ErasedTable {
            table: name.to_string(),
            files_with_keys,
            rows,
            partitions: committed.partitions,
            snapshots_expired: expiry.snapshots_expired,
            files_deleted: expiry.cleanup.files(),
            proof,
            audit_key,
            audit,
        });
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
