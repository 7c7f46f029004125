//! The commit protocol: every change floe makes to a table is one compare-and-swap of the
//! table's metadata pointer, through one retry loop ([`cas_loop`]).
//!
//! iceberg-rust 0.10 has no public row-delta or rewrite action, so floe owns a small,
//! spec-compliant commit path built from iceberg's public pieces:
//!
//! ```text
//!   cas_loop: load ─► work(state) ─► Done ──────────────────────────────► (nothing written)
//!                          │
//!                          └──► Swap(new metadata) ─► vN+1.metadata.json ─► catalog CAS ─┐
//!                ▲                                                                      │
//!                └─────────────── conflict: back off, reload, run work again ◄──────────┘
//!
//!   work of a snapshot commit ([`commit`]):
//!     added data/deletes ──► new manifests ─┐
//!     retired files ──► rewritten manifests ┼─► manifest list ─► Snapshot (summary: totals,
//!     parent's other manifests ─────────────┘                     floe.offsets, floe.epoch)
//!   work of a metadata commit ([`commit_metadata`]): schema and properties only
//! ```
//!
//! # Invariants
//! - An epoch's new manifest entries inherit the snapshot's sequence number, so its data
//!   files and deletes share one sequence number: equality deletes only hit rows of earlier
//!   epochs, position deletes and deletion vectors name rows of earlier epochs' files (the
//!   semantics of Iceberg's `RowDelta`).
//! - A rewrite (compaction) adds its files with an explicit data sequence number, that of
//!   the snapshot it read: deletes committed after that still apply to the new files. It
//!   is committed as a `replace` snapshot that carries the parent's offsets, or together
//!   with the next epoch's changes of the table in that epoch's snapshot.
//! - Retiring a file that is not live is refused: for an epoch or a strict rewrite it is an
//!   error (the writer's view of the table is wrong, and a restart rebuilds it); a lenient
//!   rewrite is dropped instead.
//! - Idempotent: before every attempt the table is reloaded. An epoch whose offsets the
//!   newest floe snapshot already covers, or a rewrite whose id a snapshot since its read
//!   already carries, is reported `AlreadyCommitted` and nothing is written. This is what
//!   makes a lost commit response harmless.
//! - A table whose newest floe snapshot names another pipeline id is refused.
//! - Every attempt writes a fresh metadata file (next version, new UUID); the one the
//!   catalog points at is never overwritten.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use iceberg::spec::{
    DataContentType, DataFile, FormatVersion, MAIN_BRANCH, ManifestContentType, ManifestEntry, ManifestList,
    ManifestListWriter, Operation, Snapshot, SnapshotSummaryCollector, Summary, TableMetadata, TableMetadataBuilder,
};
use iceberg::{MetadataLocation, TableIdent};
use tracing::{debug, warn};

use crate::catalog::{TableCatalog, TableState};
use crate::epoch::Epoch;
use crate::error::{Error, ErrorKind, Result};
use crate::manifests::{FileRef, ManifestCache, ManifestTarget, merge_small, retire};
use crate::offsets::{
    SUMMARY_EPOCH, SUMMARY_FORMAT, SUMMARY_FORMAT_VERSION, SUMMARY_OFFSETS, SUMMARY_PIPELINE_ID, SourceOffsets,
    committed_progress,
};
pub use crate::schema_commit::{SchemaCommit, apply_schema_change, covers, snapshot_schema};

/// Summary key: the schema id this snapshot made current (present only on the snapshot that
/// evolved the schema).
pub const SUMMARY_SCHEMA_CHANGE: &str = "floe.schema-change";
/// Summary key: the id of the rewrite a `replace` snapshot commits.
pub const SUMMARY_REWRITE_ID: &str = "floe.rewrite-id";
/// Summary key: how many data files of the snapshot a compaction wrote (rows that keep an
/// older data sequence number), on `replace` snapshots and on epochs that carry a rewrite.
pub const SUMMARY_REWRITTEN: &str = "floe.rewritten-files";

/// Everything one commit contributes to one table.
#[derive(Clone, Debug)]
pub struct CommitRequest {
    /// Target table.
    pub table: TableIdent,
    /// Pipeline id recorded in the summary.
    pub pipeline_id: String,
    /// Epoch being committed (for a rewrite: the epoch it is committed with).
    pub epoch: Epoch,
    /// Source progress after this epoch, for the table's topics (unused by rewrites, which
    /// carry the parent's).
    pub offsets: SourceOffsets,
    /// New data files.
    pub data_files: Vec<DataFile>,
    /// Each data file's data sequence number, in the order of `data_files`: `None` to
    /// inherit the snapshot's (new rows), `Some` for rows a rewrite read from an older
    /// snapshot. Empty: every file inherits.
    pub data_sequence_numbers: Vec<Option<i64>>,
    /// New delete files (equality deletes, position deletes or deletion vectors).
    pub delete_files: Vec<DataFile>,
    /// Live files this commit retires (replaced deletion vectors, dangling deletes, the
    /// inputs of a rewrite).
    pub removed: Vec<FileRef>,
    /// Set for a compaction: committed as a `replace` snapshot.
    pub rewrite: Option<RewriteCommit>,
    /// The table's schema as of this epoch, when floe evolved it during the run.
    pub schema_change: Option<SchemaCommit>,
}

impl CommitRequest {
    /// An epoch's request with no files yet.
    pub fn epoch(table: TableIdent, pipeline_id: &str, epoch: Epoch, offsets: SourceOffsets) -> CommitRequest {
        CommitRequest {
            table,
            pipeline_id: pipeline_id.to_string(),
            epoch,
            offsets,
            data_files: Vec::new(),
            data_sequence_numbers: Vec::new(),
            delete_files: Vec::new(),
            removed: Vec::new(),
            rewrite: None,
            schema_change: None,
        }
    }

    /// Whether the request changes nothing.
    pub fn is_empty(&self) -> bool {
        self.data_files.is_empty() && self.delete_files.is_empty() && self.removed.is_empty()
    }
}

/// What makes a commit a rewrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RewriteCommit {
    /// Unique id, recorded in the summary (idempotency).
    pub id: String,
    /// Whether a retired file that is no longer live fails the commit (`true`: the key
    /// index depends on it) or drops the rewrite.
    pub strict: bool,
}

/// How a commit ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// A new snapshot is current.
    Committed {
        /// The new snapshot.
        snapshot_id: i64,
        /// Its sequence number.
        sequence_number: i64,
        /// Attempts it took (1 = no conflict).
        attempts: u32,
    },
    /// The table already holds this commit (a previous attempt or run committed it).
    AlreadyCommitted {
        /// The snapshot that covers it.
        snapshot_id: i64,
        /// Its sequence number.
        sequence_number: i64,
    },
    /// A lenient rewrite whose inputs changed meanwhile: nothing was written.
    Dropped {
        /// Why.
        reason: String,
    },
}

impl CommitOutcome {
    /// The snapshot and sequence number that hold the commit, if it is in the table.
    pub fn snapshot(&self) -> Option<(i64, i64)> {
        match self {
            CommitOutcome::Committed { snapshot_id, sequence_number, .. }
            | CommitOutcome::AlreadyCommitted { snapshot_id, sequence_number } => {
                Some((*snapshot_id, *sequence_number))
            }
            CommitOutcome::Dropped { .. } => None,
        }
    }
}

/// Retry schedule for conflicts and transient catalog errors.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// First backoff.
    pub initial_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 20,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// What one attempt decided, given the table as it is now.
// One value per attempt, moved once: boxing the metadata would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Attempt<T> {
    /// Nothing to write (already committed, or dropped).
    Done(T),
    /// Make `metadata` current. `points` prefix the fault-injection points around the
    /// swap (`<point>-before-swap`, `<point>-after-swap`).
    Swap {
        /// The new metadata.
        metadata: TableMetadata,
        /// What to report once it is current.
        outcome: T,
        /// Fault-injection point prefixes.
        points: Vec<&'static str>,
    },
}

/// The one compare-and-swap loop: reload the table, let `work` decide, write the new
/// metadata file, swap the pointer; on a conflict (or another retryable error) back off
/// and run `work` again on the table as it is then.
pub async fn cas_loop<'a, T>(
    catalog: &dyn TableCatalog,
    table: &TableIdent,
    retry: RetryPolicy,
    what: &str,
    mut work: impl FnMut(TableState, u32) -> BoxFuture<'a, Result<Attempt<T>>>,
) -> Result<T> {
    let mut backoff = retry.initial_backoff;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let state = catalog
            .load(table)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::Catalog, format!("{table} does not exist")))?;
        let result = match work(state.clone(), attempt).await {
            Ok(Attempt::Done(outcome)) => return Ok(outcome),
            Ok(Attempt::Swap { metadata, outcome, points }) => {
                swap(catalog, &state, metadata, &points).await.map(|()| outcome)
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(outcome) => return Ok(outcome),
            Err(e) if e.is_retryable() && attempt < retry.max_attempts => {
                if e.kind() == ErrorKind::CommitConflict {
                    debug!(table = %table, attempt, "commit conflict, reloading");
                } else {
                    warn!(table = %table, attempt, error = %e, "retryable commit error");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(retry.max_backoff);
            }
            Err(e) => return Err(e.context(format!("{what} {table}"))),
        }
    }
}

async fn swap(catalog: &dyn TableCatalog, state: &TableState, metadata: TableMetadata, points: &[&str]) -> Result<()> {
    let started = std::time::Instant::now();
    let location =
        MetadataLocation::from_str(&state.metadata_location)?.with_next_version().with_new_metadata(&metadata);
    metadata.write_to(catalog.file_io(), &location).await?;
    let written = started.elapsed().as_micros();
    for p in points {
        crate::faults::point(&format!("{p}-before-swap"));
    }
    catalog.swap_metadata(&state.ident, &state.metadata_location, &location.to_string()).await?;
    debug!(table = %state.ident, written, swapped = started.elapsed().as_micros(), "metadata swapped (µs)");
    // Moved, not cloned: the next load of this table reuses it.
    catalog.remember(&location.to_string(), Arc::new(metadata));
    for p in points {
        crate::faults::point(&format!("{p}-after-swap"));
    }
    Ok(())
}

/// Commits metadata only (no snapshot): a schema change made outside an epoch, e.g. at start
/// (pull detection, changed declared columns) or by `floe schema approve`; or, with
/// `schema` unset, just the table properties in `set` / `remove`.
pub async fn commit_metadata(
    catalog: &dyn TableCatalog,
    table: &TableIdent,
    change: Option<&SchemaCommit>,
    set: HashMap<String, String>,
    remove: &[String],
) -> Result<()> {
    cas_loop(catalog, table, RetryPolicy::default(), "changing the metadata of", |state, _| {
        let set = set.clone();
        async move {
            let mut builder = TableMetadataBuilder::new_from_metadata(
                (*state.metadata).clone(),
                Some(state.metadata_location.clone()),
            );
            if let Some(change) = change {
                builder = apply_schema_change(&state.metadata, builder, change)?.0;
            }
            if !set.is_empty() {
                builder = builder.set_properties(set.clone())?;
            }
            let removable: Vec<String> =
                remove.iter().filter(|k| state.metadata.properties().contains_key(*k)).cloned().collect();
            if !removable.is_empty() {
                builder = builder.remove_properties(&removable)?;
            }
            Ok(Attempt::Swap { metadata: builder.build()?.metadata, outcome: (), points: vec!["schema"] })
        }
        .boxed()
    })
    .await
}

/// Upgrades a table to format version 3 (deletion vectors need it); a no-op if it is.
pub async fn upgrade_to_v3(catalog: &dyn TableCatalog, table: &TableIdent) -> Result<bool> {
    cas_loop(catalog, table, RetryPolicy::default(), "upgrading to format version 3", |state, _| {
        async move {
            if state.metadata.format_version() >= FormatVersion::V3 {
                return Ok(Attempt::Done(false));
            }
            let metadata = TableMetadataBuilder::new_from_metadata(
                (*state.metadata).clone(),
                Some(state.metadata_location.clone()),
            )
            .upgrade_format_version(FormatVersion::V3)?
            .build()?
            .metadata;
            Ok(Attempt::Swap { metadata, outcome: true, points: vec!["upgrade"] })
        }
        .boxed()
    })
    .await
}

/// Commits one request as one snapshot, retrying conflicts. See the module docs.
pub async fn commit(catalog: &dyn TableCatalog, request: &CommitRequest, retry: RetryPolicy) -> Result<CommitOutcome> {
    let commit_uuid = uuid::Uuid::new_v4();
    let what = match &request.rewrite {
        Some(_) => "committing a rewrite to".to_string(),
        None => format!("committing epoch {} to", request.epoch),
    };
    cas_loop(catalog, &request.table, retry, &what, |state, attempt| {
        async move {
            let snapshot_id = new_snapshot_id(&state.metadata);
            if let Some(done) = already_committed(&state, request)? {
                return Ok(Attempt::Done(done));
            }
            stage(catalog, &state, request, snapshot_id, &format!("{commit_uuid}-{attempt}"), attempt).await
        }
        .boxed()
    })
    .await
}

/// `Some` if the table already holds the request.
fn already_committed(state: &TableState, request: &CommitRequest) -> Result<Option<CommitOutcome>> {
    let metadata = &state.metadata;
    let Some(progress) = committed_progress(metadata)? else { return Ok(None) };
    if progress.pipeline_id != request.pipeline_id {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "{} is written by pipeline `{}`, not `{}`; two pipelines must not write one table",
                request.table, progress.pipeline_id, request.pipeline_id
            ),
        ));
    }
    let seq_of = |id: i64| metadata.snapshot_by_id(id).map(|s| s.sequence_number()).unwrap_or_default();
    match &request.rewrite {
        None if !request.offsets.is_empty() && progress.offsets.covers(&request.offsets) => {
            debug!(table = %request.table, epoch = request.epoch, snapshot = progress.snapshot_id, "epoch already committed");
            Ok(Some(CommitOutcome::AlreadyCommitted {
                snapshot_id: progress.snapshot_id,
                sequence_number: seq_of(progress.snapshot_id),
            }))
        }
        None => Ok(None),
        Some(rewrite) => {
            // Walk back to the snapshot the rewrite read: a snapshot since carrying its id
            // means an earlier attempt landed.
            let mut at = metadata.current_snapshot();
            let oldest = request.data_sequence_numbers.iter().flatten().copied().min().unwrap_or_default();
            while let Some(s) = at.filter(|s| s.sequence_number() > oldest) {
                if s.summary().additional_properties.get(SUMMARY_REWRITE_ID) == Some(&rewrite.id) {
                    return Ok(Some(CommitOutcome::AlreadyCommitted {
                        snapshot_id: s.snapshot_id(),
                        sequence_number: s.sequence_number(),
                    }));
                }
                at = s.parent_snapshot_id().and_then(|p| metadata.snapshot_by_id(p));
            }
            Ok(None)
        }
    }
}

fn new_snapshot_id(metadata: &TableMetadata) -> i64 {
    loop {
        let (hi, lo) = uuid::Uuid::new_v4().as_u64_pair();
        let id = ((hi ^ lo) & (i64::MAX as u64)) as i64;
        if metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

/// One attempt's manifests, manifest list and metadata.
async fn stage(
    catalog: &dyn TableCatalog,
    state: &TableState,
    request: &CommitRequest,
    snapshot_id: i64,
    prefix: &str,
    attempt: u32,
) -> Result<Attempt<CommitOutcome>> {
    let metadata = &state.metadata;
    let file_io = catalog.file_io();
    let format = metadata.format_version();
    if format == FormatVersion::V1 {
        return Err(Error::new(
            ErrorKind::Iceberg,
            format!("{} is format version 1; floe writes format versions 2 and 3", request.table),
        ));
    }
    let sequence_number = metadata.next_sequence_number();
    let parent = metadata.current_snapshot();
    let target = ManifestTarget {
        file_io,
        metadata_dir: format!("{}/metadata", metadata.location()),
        prefix: prefix.to_string(),
        snapshot_id,
        format_version: format,
        schema: snapshot_schema(metadata, request.schema_change.as_ref())?,
    };

    let started = std::time::Instant::now();
    let mut phases = Vec::with_capacity(6);
    let mut lap = |name: &'static str| phases.push((name, started.elapsed().as_micros()));
    // 1. The parent's manifests, with the retired files marked DELETED.
    let parent_manifests = match parent {
        Some(p) => {
            let bytes = file_io.new_input(p.manifest_list())?.read().await?;
            ManifestList::parse_with_version(&bytes, format)?.consume_entries().into_iter().collect()
        }
        None => Vec::new(),
    };
    let refs: BTreeSet<FileRef> = request.removed.iter().cloned().collect();
    lap("read-list");
    let retired = retire(&target, parent_manifests, &refs, ManifestCache::global()).await?;
    lap("retire");
    if !retired.missing.is_empty() {
        let listed: Vec<String> = retired.missing.iter().take(5).map(ToString::to_string).collect();
        let reason = format!("{} file(s) to retire are not live, e.g. {}", retired.missing.len(), listed.join(", "));
        return match &request.rewrite {
            Some(r) if !r.strict => {
                warn!(table = %request.table, %reason, "rewrite dropped");
                Ok(Attempt::Done(CommitOutcome::Dropped { reason }))
            }
            _ => Err(Error::new(ErrorKind::Data, format!("{}: {reason}", request.table))),
        };
    }

    // 2. New manifests.
    let spec = metadata.default_partition_spec().as_ref().clone();
    let data_seqs: Vec<Option<i64>> = match request.data_sequence_numbers.len() {
        0 => vec![None; request.data_files.len()],
        n if n == request.data_files.len() => request.data_sequence_numbers.clone(),
        n => {
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "a commit to {} names {n} data sequence numbers for {} data files",
                    request.table,
                    request.data_files.len()
                ),
            ));
        }
    };
    let mut manifests = merge_small(&target, retired.manifests, ManifestCache::global()).await?;
    lap("merge");
    let added_data = request.data_files.iter().cloned().zip(data_seqs).collect();
    let added_deletes = request.delete_files.iter().map(|f| (f.clone(), None)).collect();
    for (name, content, files) in
        [("m0", ManifestContentType::Data, added_data), ("m1", ManifestContentType::Deletes, added_deletes)]
    {
        manifests.extend(target.write_new(name, spec.clone(), content, files).await?);
    }

    lap("new-manifests");
    // 3. Manifest list and snapshot.
    let list_path = format!("{}/metadata/snap-{snapshot_id}-{prefix}.avro", metadata.location());
    let writer = file_io.new_output(&list_path)?.writer().await?;
    let parent_id = parent.map(|p| p.snapshot_id());
    let first_row_id = metadata.next_row_id();
    let mut list = match format {
        FormatVersion::V3 => {
            ManifestListWriter::v3(writer, snapshot_id, parent_id, sequence_number, Some(first_row_id))
        }
        _ => ManifestListWriter::v2(writer, snapshot_id, parent_id, sequence_number),
    };
    list.add_manifests(manifests.into_iter())?;
    let next_row_id = list.next_row_id();
    list.close().await?;
    lap("list");

    let mut builder =
        TableMetadataBuilder::new_from_metadata((**metadata).clone(), Some(state.metadata_location.clone()));
    let mut schema_id = metadata.current_schema_id();
    if let Some(change) = &request.schema_change {
        (builder, schema_id) = apply_schema_change(metadata, builder, change)?;
    }
    let mut summary = build_summary(state, request, &retired.removed)?;
    if schema_id != metadata.current_schema_id() {
        summary.additional_properties.insert(SUMMARY_SCHEMA_CHANGE.to_string(), schema_id.to_string());
    }
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent_id)
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(chrono::Utc::now().timestamp_millis().max(metadata.last_updated_ms()))
        .with_manifest_list(list_path)
        .with_summary(summary)
        .with_schema_id(schema_id);
    let snapshot = match next_row_id {
        Some(next) if format == FormatVersion::V3 => snapshot.with_row_range(first_row_id, next - first_row_id).build(),
        _ => snapshot.build(),
    };
    let new_metadata = builder.set_branch_snapshot(snapshot, MAIN_BRANCH)?.build()?.metadata;
    lap("metadata");
    debug!(table = %request.table, phases = ?phases, "commit staged (µs since start)");
    let mut points = vec![if request.rewrite.is_some() { "rewrite" } else { "commit" }];
    if schema_id != metadata.current_schema_id() {
        points.push("schema-commit");
    }
    Ok(Attempt::Swap {
        metadata: new_metadata,
        outcome: CommitOutcome::Committed { snapshot_id, sequence_number, attempts: attempt },
        points,
    })
}

/// Snapshot summary: Iceberg's added/removed metrics, the running totals, and floe's keys.
fn build_summary(state: &TableState, request: &CommitRequest, removed: &[ManifestEntry]) -> Result<Summary> {
    let metadata = &state.metadata;
    let mut collector = SnapshotSummaryCollector::default();
    for file in request.data_files.iter().chain(&request.delete_files) {
        collector.add_file(file, Arc::clone(metadata.current_schema()), Arc::clone(metadata.default_partition_spec()));
    }
    for entry in removed {
        collector.remove_file(
            entry.data_file(),
            Arc::clone(metadata.current_schema()),
            Arc::clone(metadata.default_partition_spec()),
        );
    }
    let mut props: HashMap<String, String> = collector.build();
    let removes_data = removed.iter().any(|e| e.content_type() == DataContentType::Data);
    let operation = match (&request.rewrite, request.data_files.is_empty(), request.delete_files.is_empty()) {
        (Some(_), _, _) => Operation::Replace,
        (None, _, true) if !removes_data && request.removed.is_empty() => Operation::Append,
        (None, true, _) => Operation::Delete,
        (None, false, _) => Operation::Overwrite,
    };
    let get = |m: &HashMap<String, String>, k: &str| m.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let previous = metadata.current_snapshot().map(|s| s.summary().additional_properties.clone()).unwrap_or_default();
    for (total, added, gone) in [
        ("total-data-files", "added-data-files", "deleted-data-files"),
        ("total-delete-files", "added-delete-files", "removed-delete-files"),
        ("total-records", "added-records", "deleted-records"),
        ("total-files-size", "added-files-size", "removed-files-size"),
        ("total-position-deletes", "added-position-deletes", "removed-position-deletes"),
        ("total-equality-deletes", "added-equality-deletes", "removed-equality-deletes"),
    ] {
        let value = (get(&previous, total) + get(&props, added) - get(&props, gone)).max(0);
        props.insert(total.to_string(), value.to_string());
    }
    let rewritten = request.data_sequence_numbers.iter().filter(|s| s.is_some()).count();
    if rewritten > 0 {
        props.insert(SUMMARY_REWRITTEN.into(), rewritten.to_string());
    }
    props.insert(SUMMARY_PIPELINE_ID.into(), request.pipeline_id.clone());
    let offsets = match &request.rewrite {
        // A rewrite moves no source offsets: it carries the parent's.
        Some(rewrite) => {
            props.insert(SUMMARY_REWRITE_ID.into(), rewrite.id.clone());
            committed_progress(metadata)?.map(|p| p.offsets).unwrap_or_default()
        }
        None => request.offsets.clone(),
    };
    props.insert(SUMMARY_OFFSETS.into(), offsets.to_json());
    props.insert(SUMMARY_EPOCH.into(), request.epoch.to_string());
    props.insert(SUMMARY_FORMAT.into(), SUMMARY_FORMAT_VERSION.into());
    // Equality deletes are counted per file content; make sure the kinds are visible even
    // when the collector leaves a zero out.
    let eq_files = request.delete_files.iter().filter(|f| f.content_type() == DataContentType::EqualityDeletes).count();
    if eq_files > 0 {
        props.entry("added-equality-delete-files".into()).or_insert_with(|| eq_files.to_string());
    }
    Ok(Summary { operation, additional_properties: props })
}
