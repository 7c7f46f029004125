//! `floe maintain PIPELINE.toml [--table T] [--orphan-min-age D]`: compacts a pipeline's
//! tables while no pipeline writes them, then expires their snapshots and deletes the files
//! no retained snapshot references. Every base-table bucket with more than one data file or
//! any delete is rewritten with its deletes applied; every CDC partition's small files are
//! merged.
//!
//! ```text
//!   leases (refuse if a pipeline holds one) ─► per table: compact_table(Due::All)
//!     ─► one `replace` snapshot per partition (data sequence number of the snapshot read)
//!     ─► expire_and_clean (keep_snapshots, snapshot_max_age; orphans past the window)
//!     ─► report: partitions, files before → after, bytes, MB/s, expired, cleaned
//! ```
//!
//! # Invariants
//! - It never runs beside a pipeline's committer: a running pipeline compacts its own tables
//!   (`[tables.maintenance]`), and `floe maintain` refuses, naming the pipeline that holds
//!   the table. A pipeline that starts meanwhile waits for it.
//! - After it, a pipeline rebuilds its key index from the rewritten table: nothing else to
//!   reconcile.

use std::sync::Arc;
use std::time::Instant;

use floe_engine::catalog::{SqlTableCatalog, TableCatalog, ident};
use floe_engine::config::{PipelineConfig, TableName};
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::metrics::human_bytes;
use floe_engine::runtime::IoRuntime;
use floe_operators::erase::{Committed, commit_rewrites, last_commit};
use floe_operators::files::Dest;
use floe_operators::key_index_rebuild::KeyShape;
use floe_operators::plan::Target;
use floe_operators::snapshot_rewrite::{Due, Layout, compact_table};

/// What `floe maintain` did to one table.
#[derive(Clone, Debug, Default)]
pub struct Maintained {
    /// The table.
    pub table: String,
    /// Partitions rewritten.
    pub partitions: usize,
    /// Data files before and after.
    pub data_files: (usize, usize),
    /// Delete files before and after.
    pub delete_files: (usize, usize),
    /// Bytes of data files read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Wall seconds of the compaction.
    pub seconds: f64,
    /// Expiry and cleanup after the compaction.
    pub expiry: floe_engine::expiry::ExpiryReport,
}

/// What `floe maintain` did.
#[derive(Clone, Debug, Default)]
pub struct MaintainReport {
    /// Per table.
    pub tables: Vec<Maintained>,
}

impl std::fmt::Display for MaintainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<28} {:>10} {:>16} {:>16} {:>10} {:>10} {:>8} {:>9} {:>8} {:>8}",
            "table",
            "partitions",
            "data files",
            "delete files",
            "read",
            "written",
            "seconds",
            "MB/s read",
            "expired",
            "cleaned"
        )?;
        for t in &self.tables {
            writeln!(
                f,
                "{:<28} {:>10} {:>16} {:>16} {:>10} {:>10} {:>8.2} {:>9.1} {:>8} {:>8}",
                t.table,
                t.partitions,
                format!("{} -> {}", t.data_files.0, t.data_files.1),
                format!("{} -> {}", t.delete_files.0, t.delete_files.1),
                human_bytes(t.bytes_read),
                human_bytes(t.bytes_written),
                t.seconds,
                t.bytes_read as f64 / 1e6 / t.seconds.max(1e-9),
                t.expiry.snapshots_expired,
                t.expiry.cleanup.files(),
            )?;
        }
        Ok(())
    }
}

/// Compacts the tables of `config` (or only those `table` names: a base or CDC table
/// name, or a topic), then expires snapshots and cleans up files; `orphan_min_age`
/// overrides the tables' safety window for unreferenced files (no commit is in flight
/// while the leases are held).
pub fn maintain(
    config: &PipelineConfig,
    table: Option<&str>,
    orphan_min_age: Option<std::time::Duration>,
) -> Result<MaintainReport> {
    let runtime = IoRuntime::new(2)?;
    let catalog: Arc<dyn TableCatalog> = Arc::new(runtime.block_on(SqlTableCatalog::open(&config.catalog))?);
    let mut work: Vec<(TableName, bool, floe_engine::table_settings::MaintenanceSettings)> = Vec::new();
    for t in &config.tables {
        // A table name selects that table; a topic selects both of its tables.
        let wanted = |n: &TableName| match table {
            None => true,
            Some(x) => n.to_string() == x || t.topic == x,
        };
        work.extend(t.base.clone().filter(wanted).map(|n| (n, false, t.maintenance.clone())));
        work.extend(t.cdc.clone().filter(wanted).map(|n| (n, true, t.maintenance.clone())));
    }
    if work.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            format!("{}: no table is named `{}`", config.file.display(), table.unwrap_or_default()),
        ));
    }
    let idents = work.iter().map(|(n, _, _)| ident(n)).collect();
    let _leases = crate::leases::take_for_maintain(Arc::clone(&catalog), runtime.clone(), idents)?;
    let mut report = MaintainReport::default();
    for (name, cdc, settings) in work {
        let started = Instant::now();
        let Some(state) = runtime.block_on(catalog.load(&ident(&name)))? else { continue };
        let metadata = &state.metadata;
        let before = runtime.block_on(count_files(catalog.as_ref(), metadata))?;
        let (layout, dest) = match cdc {
            true => (Layout::Cdc, Dest::Cdc(0)),
            false => (Layout::Buckets(KeyShape::from_schema(metadata.current_schema())?), Dest::Base(0)),
        };
        let target = target_of(&name, &state);
        let (pipeline_id, epoch) = last_commit(metadata, &config.pipeline.id)?;
        let name_prefix = format!("m{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let bundles = runtime.block_on(compact_table(
            catalog.as_ref(),
            dest,
            &target,
            &layout,
            &settings,
            Due::All,
            epoch,
            &name_prefix,
        ))?;
        let committed = commit_bundles(&runtime, catalog.as_ref(), &target, &pipeline_id, epoch, bundles)?;
        let (read, written, partitions) = (committed.bytes_read, committed.bytes_written, committed.partitions);
        let seconds = started.elapsed().as_secs_f64();
        let policy = floe_engine::expiry::ExpiryPolicy::of(&settings);
        let expiry = runtime.block_on(floe_engine::expiry::expire_and_clean(
            catalog.as_ref(),
            &state.ident,
            policy,
            chrono::Utc::now().timestamp_millis(),
            true,
            orphan_min_age.unwrap_or(settings.orphan_min_age),
        ))?;
        let after = match runtime.block_on(catalog.load(&ident(&name)))? {
            Some(s) => runtime.block_on(count_files(catalog.as_ref(), &s.metadata))?,
            None => (0, 0),
        };
        report.tables.push(Maintained {
            table: name.to_string(),
            partitions,
            data_files: (before.0, after.0),
            delete_files: (before.1, after.1),
            bytes_read: read,
            bytes_written: written,
            seconds,
            expiry,
        });
    }
    Ok(report)
}

/// Commits offline rewrites (no pipeline writes the table): see [`commit_rewrites`].
pub fn commit_bundles(
    runtime: &IoRuntime,
    catalog: &dyn TableCatalog,
    target: &Target,
    pipeline_id: &str,
    epoch: u64,
    bundles: Vec<floe_operators::files::RewriteBundle>,
) -> Result<Committed> {
    runtime.block_on(commit_rewrites(catalog, target, pipeline_id, epoch, bundles))
}

/// The rewrite target of a table as it is now.
pub fn target_of(name: &TableName, state: &floe_engine::catalog::TableState) -> Target {
    let metadata = &state.metadata;
    Target {
        name: name.clone(),
        ident: state.ident.clone(),
        schema: Arc::clone(metadata.current_schema()),
        spec: Arc::clone(metadata.default_partition_spec()),
        location: metadata.location().to_string(),
        committed: Default::default(),
        properties: metadata.properties().clone(),
        sequence_number: metadata.last_sequence_number(),
    }
}

/// `(data files, delete files)` of a table's current snapshot.
async fn count_files(catalog: &dyn TableCatalog, metadata: &iceberg::spec::TableMetadata) -> Result<(usize, usize)> {
    let files = floe_engine::table_files::snapshot_files(
        catalog.file_io(),
        metadata,
        floe_engine::manifests::ManifestCache::global(),
    )
    .await?;
    Ok(files.partitions.iter().fold((0, 0), |(d, x), p| (d + p.data.len(), x + p.deletes.len())))
}
