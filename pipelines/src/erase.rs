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

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_engine::catalog::{SqlTableCatalog, TableCatalog, ident};
use floe_engine::config::{PipelineConfig, TableName};
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::runtime::IoRuntime;
use floe_operators::erase::{EraseKeys, erase_table, expire_prove_record};
use floe_operators::erase_proof::Proof;
use floe_operators::erasure_requests::{KIND, Payload};
use floe_operators::files::Dest;
use floe_operators::key_index_rebuild::KeyShape;
use floe_operators::snapshot_rewrite::Layout;

use crate::maintain::{commit_bundles, target_of};
use floe_operators::erase::last_commit;

/// Hands the erasure to the pipeline that holds `table` (through the catalog) and waits up
/// to `wait` for its answer.
#[allow(clippy::too_many_arguments)]
fn erase_online(
    catalog: &dyn TableCatalog,
    runtime: &IoRuntime,
    base: &iceberg::TableIdent,
    held: &iceberg::TableIdent,
    owner: &str,
    keys: Vec<String>,
    wait: Duration,
    started: Instant,
) -> Result<EraseReport> {
    let count = keys.len();
    let payload = Payload { keys, requested_ms: chrono::Utc::now().timestamp_millis() };
    let payload = serde_json::to_string(&payload)
        .map_err(|e| Error::new(ErrorKind::Internal, "encoding the request").with_source(e))?;
    let id = runtime.block_on(catalog.submit_request(base, KIND, &payload))?;
    eprintln!("floe erase: `{owner}` writes {held}; its committer carries out request {id}");
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let Some(request) = runtime.block_on(catalog.request(&id))? else {
            return Err(Error::new(ErrorKind::Catalog, format!("request {id} vanished from the catalog")));
        };
        match request.state.as_str() {
            "done" => return answer_report(&request.result, count, started),
            "failed" => {
                return Err(Error::new(ErrorKind::Data, format!("the pipeline could not erase: {}", request.result)));
            }
            _ if started.elapsed() > wait => {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "request {id} was not answered within {wait:?}; it stays queued, and the pipeline carries it out when it runs"
                    ),
                ));
            }
            _ => {}
        }
    }
}

/// The report of a pipeline's answer (`{"property": .., "tables": {name: audit entry}}`).
fn answer_report(result: &str, keys: usize, started: Instant) -> Result<EraseReport> {
    let answer: serde_json::Value = serde_json::from_str(result)
        .map_err(|e| Error::new(ErrorKind::Data, format!("the pipeline's answer cannot be read: {e}: {result}")))?;
    let property = answer["property"].as_str().unwrap_or_default().to_string();
    let mut report = EraseReport { keys, ..Default::default() };
    for (table, entry) in answer["tables"].as_object().into_iter().flatten() {
        let n = |k: &str| entry[k].as_u64().unwrap_or_default();
        report.tables.push(ErasedTable {
            table: table.clone(),
            files_with_keys: n("files_rewritten"),
            rows: n("rows_erased"),
            partitions: 0,
            snapshots_expired: n("snapshots_expired"),
            files_deleted: n("files_deleted"),
            proof: Proof {
                files: n("files_scanned"),
                rows_found: n("rows_found"),
                bounds_found: n("bounds_found"),
                ..Default::default()
            },
            audit_key: property.clone(),
            audit: entry.to_string(),
        });
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The error of a proof that found something.
fn unclean(table: &TableName, proof: &Proof) -> Error {
    Error::new(
        ErrorKind::Data,
        format!(
            "{table}: the erasure proof found {} row(s) and {} manifest bound(s) of the keys, in {}",
            proof.rows_found,
            proof.bounds_found,
            proof.holders.join(", ")
        ),
    )
}

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
pub fn erase(config: &PipelineConfig, table: &str, keys: &[String], wait: Duration) -> Result<EraseReport> {
    let keys_text = keys;
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
    let mut names: Vec<(TableName, bool)> = vec![(base.clone(), false)];
    names.extend(source.cdc.clone().map(|n| (n, true)));
    let idents = names.iter().map(|(n, _)| ident(n)).collect();
    let _leases = match crate::leases::try_take_offline(Arc::clone(&catalog), runtime.clone(), idents, "floe erase")? {
        Ok(held) => held,
        Err((table, lease)) if lease.owner.starts_with("pipeline:") => {
            // A pipeline writes the table: its committer erases, while it goes on ingesting.
            let texts: Vec<String> = keys_text.to_vec();
            return erase_online(catalog.as_ref(), &runtime, &ident(&base), &table, &lease.owner, texts, wait, started);
        }
        Err((table, lease)) => {
            return Err(Error::new(
                ErrorKind::Config,
                format!("{table} is being changed by `{}`; run floe erase when it is done", lease.owner),
            ));
        }
    };
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
        // No window for orphans: the lease keeps every other writer out.
        let requested = chrono::Utc::now().timestamp_millis();
        let audit = runtime.block_on(expire_prove_record(
            catalog.as_ref(),
            &target,
            &keys,
            &filter,
            &id,
            Some((files_with_keys, rows)),
            Duration::ZERO,
            requested,
        ))?;
        if !audit.proof.clean() {
            return Err(unclean(&name, &audit.proof));
        }
        report.tables.push(ErasedTable {
            table: name.to_string(),
            files_with_keys,
            rows,
            partitions: committed.partitions,
            snapshots_expired: audit.expiry.snapshots_expired,
            files_deleted: audit.expiry.cleanup.files() + audit.stray_holders,
            proof: audit.proof,
            audit_key: audit.key,
            audit: audit.entry,
        });
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
