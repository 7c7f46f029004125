//! The commit protocol: one epoch's files become one atomic Iceberg snapshot.
//!
//! iceberg-rust 0.10 has no public row-delta action, so floe owns a small, spec-compliant
//! commit path built from iceberg's public pieces:
//!
//! ```text
//!   data files ──► ManifestWriter (v2 data)    ─┐
//!   eq-deletes ──► ManifestWriter (v2 deletes) ─┼─► ManifestListWriter (existing + new, seq = next)
//!                                               │        │
//!                                               │        ▼
//!                                               │   Snapshot (summary: totals + floe.offsets)
//!                                               │        │
//!                                               │        ▼
//!                                               └─► TableMetadataBuilder ──► vN+1.metadata.json
//!                                                                              │
//!                      catalog: UPDATE ... SET metadata_location = vN+1 WHERE = vN  (CAS)
//! ```
//!
//! # Invariants
//! - New manifest entries inherit the snapshot's sequence number (written as null), so data
//!   files and equality deletes of one epoch share one sequence number and the deletes only
//!   hit rows of earlier epochs: the semantics of Iceberg's `RowDelta`.
//! - Manifests are written once per request; a retry after a lost race rewrites only the
//!   manifest list and the metadata file, on top of the table's new state.
//! - Idempotent: before every attempt the table is reloaded, and if its newest floe snapshot
//!   already covers the request's offsets the epoch is reported `AlreadyCommitted` and
//!   nothing is written. This is what makes a lost commit response harmless.
//! - A table whose newest floe snapshot names another pipeline id is refused.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeSet;

use iceberg::spec::{
    DataContentType, DataFile, FormatVersion, MAIN_BRANCH, ManifestContentType, ManifestFile, ManifestList,
    ManifestListWriter, ManifestWriterBuilder, Operation, Schema, Snapshot, SnapshotSummaryCollector, Summary,
    TableMetadata, TableMetadataBuilder,
};
use iceberg::{MetadataLocation, TableIdent};
use tracing::{debug, warn};

use crate::catalog::{TableCatalog, TableState};
use crate::epoch::Epoch;
use crate::error::{Error, ErrorKind, Result};
use crate::offsets::{
    SUMMARY_EPOCH, SUMMARY_FORMAT, SUMMARY_FORMAT_VERSION, SUMMARY_OFFSETS, SUMMARY_PIPELINE_ID, SourceOffsets,
    committed_progress,
};
use crate::schema_audit::{
    AuditEntry, HISTORY_PROPERTY, PENDING_PROPERTY, RETIRED_PROPERTY, history, history_json, merged, now_ms,
    retired_from, retired_value,
};

/// Summary key: the schema id this snapshot made current (present only on the snapshot that
/// evolved the schema).
pub const SUMMARY_SCHEMA_CHANGE: &str = "floe.schema-change";

/// Everything one epoch contributes to one table.
#[derive(Clone, Debug)]
pub struct CommitRequest {
    /// Target table.
    pub table: TableIdent,
    /// Pipeline id recorded in the summary.
    pub pipeline_id: String,
    /// Epoch being committed.
    pub epoch: Epoch,
    /// Source progress after this epoch, for the table's topics.
    pub offsets: SourceOffsets,
    /// New data files.
    pub data_files: Vec<DataFile>,
    /// New equality-delete files.
    pub delete_files: Vec<DataFile>,
    /// The table's schema as of this epoch, when floe evolved it during the run.
    pub schema_change: Option<SchemaCommit>,
}

/// A schema the commit must make current (if it is not already), with its audit records.
#[derive(Clone, Debug)]
pub struct SchemaCommit {
    /// The new Iceberg schema (field ids fixed; its schema id is assigned at commit).
    pub schema: Schema,
    /// Columns kept after the source dropped them.
    pub retired: BTreeSet<String>,
    /// Changes to record (their schema ids are filled in at commit); entries already in the
    /// table's history are skipped.
    pub audit: Vec<AuditEntry>,
}

/// The id `schema` gets in `metadata`: an identical existing schema's, else a new one.
fn schema_id_for(metadata: &TableMetadata, schema: &Schema) -> (i32, bool) {
    for existing in metadata.schemas_iter() {
        if existing.as_struct() == schema.as_struct()
            && existing.identifier_field_ids().collect::<Vec<_>>() == schema.identifier_field_ids().collect::<Vec<_>>()
        {
            return (existing.schema_id(), false);
        }
    }
    (metadata.schemas_iter().map(|s| s.schema_id()).max().unwrap_or(0) + 1, true)
}

/// Whether `current` holds everything `proposed` does: each field (same id and name) at
/// least as wide and as optional, and the same identifier fields.
pub fn covers(current: &Schema, proposed: &Schema) -> bool {
    use iceberg::spec::{PrimitiveType as P, Type};
    let ids = |s: &Schema| s.identifier_field_ids().collect::<BTreeSet<_>>();
    let wider = |c: &Type, p: &Type| match (c, p) {
        (Type::Primitive(P::Long), Type::Primitive(P::Int)) => true,
        (Type::Primitive(P::Double), Type::Primitive(P::Float)) => true,
        (
            Type::Primitive(P::Decimal { precision: pc, scale: sc }),
            Type::Primitive(P::Decimal { precision: pp, scale: sp }),
        ) => sc == sp && pc >= pp,
        _ => c == p,
    };
    ids(current) == ids(proposed)
        && proposed.as_struct().fields().iter().all(|p| {
            current
                .field_by_id(p.id)
                .is_some_and(|c| c.name == p.name && (!c.required || p.required) && wider(&c.field_type, &p.field_type))
        })
}

/// Applies a schema change to a metadata builder: adds and selects the schema, records the
/// audit entries and retired columns, clears a pending change. Returns the builder and the
/// schema id that is current afterwards.
pub fn apply_schema_change(
    metadata: &TableMetadata,
    mut builder: TableMetadataBuilder,
    change: &SchemaCommit,
) -> Result<(TableMetadataBuilder, i32)> {
    let old_id = metadata.current_schema_id();
    // Schemas never move back: a table already past this change (a pulled version committed
    // before an epoch written under the version before it) keeps its schema.
    if covers(metadata.current_schema(), &change.schema)
        && metadata.current_schema().as_struct() != change.schema.as_struct()
        && retired_from(metadata.properties()).is_superset(&change.retired)
    {
        debug!(schema_id = old_id, "the table's schema is ahead of this commit's; kept");
        return Ok((builder, old_id));
    }
    let (new_id, is_new) = schema_id_for(metadata, &change.schema);
    if is_new || new_id != old_id {
        builder = builder.add_current_schema(change.schema.clone())?;
    }
    let now = now_ms();
    // A table already at the schema (and retired columns) records nothing: the change was
    // applied and audited before, perhaps found another way (a push before a crash, a pull
    // after it). Retiring a nullable column changes no schema, but is a change.
    let unchanged = new_id == old_id && retired_from(metadata.properties()) == change.retired;
    let entries: Vec<AuditEntry> = match unchanged {
        true => Vec::new(),
        false => change
            .audit
            .iter()
            .map(|e| AuditEntry { old_schema_id: old_id, new_schema_id: new_id, applied_at_ms: now, ..e.clone() })
            .collect(),
    };
    let history = merged(history(metadata)?, &entries);
    let mut props = HashMap::from([(HISTORY_PROPERTY.to_string(), history_json(&history))]);
    if !change.retired.is_empty() || metadata.properties().contains_key(RETIRED_PROPERTY) {
        props.insert(RETIRED_PROPERTY.to_string(), retired_value(&change.retired));
    }
    builder = builder.set_properties(props)?;
    if metadata.properties().contains_key(PENDING_PROPERTY) {
        builder = builder.remove_properties(&[PENDING_PROPERTY.to_string()])?;
    }
    Ok((builder, new_id))
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
    let retry = RetryPolicy::default();
    let mut backoff = retry.initial_backoff;
    for attempt in 1.. {
        let state = catalog
            .load(table)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::Catalog, format!("{table} does not exist")))?;
        let mut builder =
            TableMetadataBuilder::new_from_metadata((*state.metadata).clone(), Some(state.metadata_location.clone()));
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
        let new_metadata = builder.build()?.metadata;
        let location =
            MetadataLocation::from_str(&state.metadata_location)?.with_next_version().with_new_metadata(&new_metadata);
        new_metadata.write_to(catalog.file_io(), &location).await?;
        crate::faults::point("schema-before-swap");
        match catalog.swap_metadata(table, &state.metadata_location, &location.to_string()).await {
            Ok(()) => {
                crate::faults::point("schema-after-swap");
                return Ok(());
            }
            Err(e) if e.is_retryable() && attempt < retry.max_attempts => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(retry.max_backoff);
            }
            Err(e) => return Err(e.context(format!("changing the metadata of {table}"))),
        }
    }
    unreachable!("the retry loop returns")
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
    /// The table already holds this epoch (a previous attempt or run committed it).
    AlreadyCommitted {
        /// The snapshot that covers it.
        snapshot_id: i64,
    },
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

/// Commits one epoch to one table, retrying conflicts. See the module docs.
pub async fn commit(catalog: &dyn TableCatalog, request: &CommitRequest, retry: RetryPolicy) -> Result<CommitOutcome> {
    let commit_uuid = uuid::Uuid::new_v4();
    let mut snapshot_id = new_snapshot_id();
    let mut manifests: Option<Vec<ManifestFile>> = None;
    let mut backoff = retry.initial_backoff;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let state = catalog
            .load(&request.table)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::Catalog, format!("{} does not exist", request.table)))?;

        if let Some(progress) = committed_progress(&state.metadata)? {
            if progress.pipeline_id != request.pipeline_id {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "{} is written by pipeline `{}`, not `{}`; two pipelines must not write one table",
                        request.table, progress.pipeline_id, request.pipeline_id
                    ),
                ));
            }
            if !request.offsets.is_empty() && progress.offsets.covers(&request.offsets) {
                debug!(table = %request.table, epoch = request.epoch, snapshot = progress.snapshot_id, "epoch already committed");
                return Ok(CommitOutcome::AlreadyCommitted { snapshot_id: progress.snapshot_id });
            }
        }
        if state.metadata.snapshot_by_id(snapshot_id).is_some() {
            snapshot_id = new_snapshot_id();
            manifests = None;
        }
        if manifests.is_none() {
            manifests = Some(write_manifests(catalog, &state, request, snapshot_id, commit_uuid).await?);
        }
        let new_manifests = manifests.clone().unwrap_or_default();

        let attempt_result =
            stage_and_swap(catalog, &state, request, snapshot_id, commit_uuid, attempt, new_manifests).await;
        match attempt_result {
            Ok(sequence_number) => {
                return Ok(CommitOutcome::Committed { snapshot_id, sequence_number, attempts: attempt });
            }
            Err(e) if e.is_retryable() && attempt < retry.max_attempts => {
                if e.kind() == ErrorKind::CommitConflict {
                    debug!(table = %request.table, attempt, "commit conflict, reloading");
                } else {
                    warn!(table = %request.table, attempt, error = %e, "retryable commit error");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(retry.max_backoff);
            }
            Err(e) => return Err(e.context(format!("committing epoch {} to {}", request.epoch, request.table))),
        }
    }
}

fn new_snapshot_id() -> i64 {
    let (hi, lo) = uuid::Uuid::new_v4().as_u64_pair();
    ((hi ^ lo) & (i64::MAX as u64)) as i64
}

async fn write_manifests(
    catalog: &dyn TableCatalog,
    state: &TableState,
    request: &CommitRequest,
    snapshot_id: i64,
    commit_uuid: uuid::Uuid,
) -> Result<Vec<ManifestFile>> {
    let metadata = &state.metadata;
    if metadata.format_version() != FormatVersion::V2 {
        return Err(Error::new(
            ErrorKind::Iceberg,
            format!(
                "{} is format version {:?}; floe writes format version 2",
                request.table,
                metadata.format_version()
            ),
        ));
    }
    let mut out = Vec::new();
    for (n, (files, content)) in
        [(&request.data_files, ManifestContentType::Data), (&request.delete_files, ManifestContentType::Deletes)]
            .into_iter()
            .enumerate()
    {
        if files.is_empty() {
            continue;
        }
        let path = format!("{}/metadata/{commit_uuid}-m{n}.avro", metadata.location());
        let output = catalog.file_io().new_output(&path)?;
        let schema = match &request.schema_change {
            Some(change) => Arc::new(change.schema.clone()),
            None => Arc::clone(metadata.current_schema()),
        };
        let builder = ManifestWriterBuilder::new(
            output,
            Some(snapshot_id),
            schema,
            metadata.default_partition_spec().as_ref().clone(),
        );
        let mut writer = match content {
            ManifestContentType::Data => builder.build_v2_data(),
            ManifestContentType::Deletes => builder.build_v2_deletes(),
        };
        for file in files {
            // -1: inherit the sequence number of the snapshot that adds the manifest.
            writer.add_file(file.clone(), -1)?;
        }
        out.push(writer.write_manifest_file().await?);
    }
    Ok(out)
}

async fn stage_and_swap(
    catalog: &dyn TableCatalog,
    state: &TableState,
    request: &CommitRequest,
    snapshot_id: i64,
    commit_uuid: uuid::Uuid,
    attempt: u32,
    new_manifests: Vec<ManifestFile>,
) -> Result<i64> {
    let metadata = &state.metadata;
    let file_io = catalog.file_io();
    let sequence_number = metadata.next_sequence_number();
    let parent = metadata.current_snapshot();

    let mut manifest_files: Vec<ManifestFile> = Vec::new();
    if let Some(parent) = parent {
        let bytes = file_io.new_input(parent.manifest_list())?.read().await?;
        let list = ManifestList::parse_with_version(&bytes, metadata.format_version())?;
        manifest_files.extend(list.consume_entries());
    }
    manifest_files.extend(new_manifests);

    let list_path = format!("{}/metadata/snap-{snapshot_id}-{attempt}-{commit_uuid}.avro", metadata.location());
    let writer = file_io.new_output(&list_path)?.writer().await?;
    let mut list_writer = ManifestListWriter::v2(writer, snapshot_id, parent.map(|p| p.snapshot_id()), sequence_number);
    list_writer.add_manifests(manifest_files.into_iter())?;
    list_writer.close().await?;

    let mut builder =
        TableMetadataBuilder::new_from_metadata((*state.metadata).clone(), Some(state.metadata_location.clone()));
    let mut schema_id = metadata.current_schema_id();
    if let Some(change) = &request.schema_change {
        (builder, schema_id) = apply_schema_change(metadata, builder, change)?;
    }
    let mut summary = build_summary(state, request, parent.map(|p| p.summary()));
    if schema_id != metadata.current_schema_id() {
        summary.additional_properties.insert(SUMMARY_SCHEMA_CHANGE.to_string(), schema_id.to_string());
    }
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent.map(|p| p.snapshot_id()))
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(chrono::Utc::now().timestamp_millis().max(metadata.last_updated_ms()))
        .with_manifest_list(list_path)
        .with_summary(summary)
        .with_schema_id(schema_id)
        .build();

    let new_metadata = builder.set_branch_snapshot(snapshot, MAIN_BRANCH)?.build()?.metadata;
    // A fresh version and UUID: never overwrite the file the catalog points at.
    let location =
        MetadataLocation::from_str(&state.metadata_location)?.with_next_version().with_new_metadata(&new_metadata);
    new_metadata.write_to(file_io, &location).await?;
    let evolves = schema_id != metadata.current_schema_id();
    crate::faults::point("commit-before-swap");
    if evolves {
        crate::faults::point("schema-commit-before-swap");
    }
    catalog.swap_metadata(&request.table, &state.metadata_location, &location.to_string()).await?;
    crate::faults::point("commit-after-swap");
    if evolves {
        crate::faults::point("schema-commit-after-swap");
    }
    Ok(sequence_number)
}

/// Snapshot summary: Iceberg's added-* metrics for the new files, the running totals, and
/// floe's progress keys.
fn build_summary(state: &TableState, request: &CommitRequest, previous: Option<&Summary>) -> Summary {
    let metadata = &state.metadata;
    let mut collector = SnapshotSummaryCollector::default();
    for file in request.data_files.iter().chain(&request.delete_files) {
        collector.add_file(file, Arc::clone(metadata.current_schema()), Arc::clone(metadata.default_partition_spec()));
    }
    let mut props: HashMap<String, String> = collector.build();
    let operation = match (request.data_files.is_empty(), request.delete_files.is_empty()) {
        (_, true) => Operation::Append,
        (true, false) => Operation::Delete,
        (false, false) => Operation::Overwrite,
    };
    let get = |m: &HashMap<String, String>, k: &str| m.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let prev = previous.map(|s| &s.additional_properties);
    for (total, added) in [
        ("total-data-files", "added-data-files"),
        ("total-delete-files", "added-delete-files"),
        ("total-records", "added-records"),
        ("total-files-size", "added-files-size"),
        ("total-position-deletes", "added-position-deletes"),
        ("total-equality-deletes", "added-equality-deletes"),
    ] {
        let before = prev.map(|p| get(p, total)).unwrap_or(0);
        let value = before + get(&props, added);
        props.insert(total.to_string(), value.to_string());
    }
    props.insert(SUMMARY_PIPELINE_ID.into(), request.pipeline_id.clone());
    props.insert(SUMMARY_OFFSETS.into(), request.offsets.to_json());
    props.insert(SUMMARY_EPOCH.into(), request.epoch.to_string());
    props.insert(SUMMARY_FORMAT.into(), SUMMARY_FORMAT_VERSION.into());
    // Equality deletes are counted per file content; make sure the kinds are visible even
    // when the collector leaves a zero out.
    let eq_files = request.delete_files.iter().filter(|f| f.content_type() == DataContentType::EqualityDeletes).count();
    if eq_files > 0 {
        props.entry("added-equality-delete-files".into()).or_insert_with(|| eq_files.to_string());
    }
    Summary { operation, additional_properties: props }
}

#[cfg(test)]
mod tests {
    use iceberg::spec::{NestedField, PrimitiveType, Type};

    use super::*;

    fn schema(fields: &[(i32, &str, PrimitiveType, bool)]) -> Schema {
        let fields = fields
            .iter()
            .map(|(id, name, ty, required)| {
                Arc::new(NestedField::new(*id, *name, Type::Primitive(ty.clone()), *required))
            })
            .collect::<Vec<_>>();
        Schema::builder().with_fields(fields).with_identifier_field_ids([1]).build().expect("schema")
    }

    #[test]
    fn a_wider_schema_covers_the_ones_before_it_and_not_the_reverse() {
        use PrimitiveType::*;
        let v0 = schema(&[(1, "id", Long, true), (2, "qty", Int, true)]);
        let v1 = schema(&[(1, "id", Long, true), (2, "qty", Int, true), (3, "note", String, false)]);
        let v2 = schema(&[(1, "id", Long, true), (2, "qty", Long, false), (3, "note", String, false)]);
        assert!(covers(&v1, &v0) && covers(&v2, &v1) && covers(&v2, &v0) && covers(&v1, &v1));
        assert!(!covers(&v0, &v1), "a missing column");
        assert!(!covers(&v1, &v2), "narrower and required");
        let renamed = schema(&[(1, "id", Long, true), (2, "quantity", Int, true)]);
        assert!(!covers(&renamed, &v0));
        let dec = |p| schema(&[(1, "id", Long, true), (2, "d", Decimal { precision: p, scale: 2 }, false)]);
        assert!(covers(&dec(12), &dec(10)) && !covers(&dec(10), &dec(12)));
    }
}
