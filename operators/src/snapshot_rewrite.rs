//! Compaction at a snapshot, for tables no writer holds a key index of: CDC tables (small
//! files merged), equality-mode base tables (a bucket rewritten with its deletes applied),
//! and `floe maintain` (any table, while no pipeline writes it).
//!
//! ```text
//!   current snapshot S ─► partitions due ─► live rows (position deletes, vectors, and
//!                                            equality deletes by the spec's sequence rules)
//!                       ─► files of the target size ─► RewriteBundle { base: S's sequence
//!                          number, removed: the inputs (and, for a bucket, its deletes) }
//! ```
//!
//! # Invariants
//! - Outputs keep S's data sequence number, so equality deletes committed after S still
//!   apply to them, and those committed at or before S (already applied) do not.
//! - A bucket rewrite takes every data file of the partition at S, so every delete file of
//!   the partition at S is applied and retired with it. A CDC merge takes only small files
//!   and retires nothing else (CDC tables have no deletes).
//! - Bundles are lenient: if a retired file is gone by the time of the commit (it cannot be
//!   while floe is the table's one writer), the rewrite is dropped, never half-applied.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::{BooleanArray, RecordBatch};
use floe_engine::catalog::TableCatalog;
use floe_engine::epoch::Epoch;
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::manifests::{FileRef, ManifestCache};
use floe_engine::table_files::{PartitionFiles, positional_deletes, read_columns, snapshot_files};
use floe_engine::table_settings::MaintenanceSettings;
use iceberg::io::FileIO;
use iceberg::spec::{DataContentType, DataFile};

use crate::delete_files::write_data_at;
use crate::files::{Dest, RewriteBase, RewriteBundle, WrittenFile, conform_batch};
use crate::key_index::IndexKey;
use crate::key_index_rebuild::{KeyShape, batch_keys};
use crate::plan::Target;

/// What kind of table is compacted.
#[derive(Clone, Debug)]
pub enum Layout {
    /// A CDC table: append-only; small files are merged.
    Cdc,
    /// A base table: a bucket's files are rewritten with its deletes applied.
    Buckets(KeyShape),
}

/// Which partitions are rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Those past the table's thresholds.
    Thresholds,
    /// Every partition with more than one data file or any delete (`floe maintain`).
    All,
}

/// Rewrites the partitions of `target` that are due, at its current snapshot; returns one
/// bundle per partition, to commit with `epoch`.
#[allow(clippy::too_many_arguments)]
pub async fn compact_table(
    catalog: &dyn TableCatalog,
    dest: Dest,
    target: &Target,
    layout: &Layout,
    settings: &MaintenanceSettings,
    due: Due,
    epoch: Epoch,
    name: &str,
) -> Result<Vec<RewriteBundle>> {
    let (files, target) = at_snapshot(catalog, target).await?;
    let file_io = catalog.file_io();
    let mut out = Vec::new();
    for (n, part) in files.partitions.iter().enumerate() {
        let Some((inputs, retired_deletes)) = choose(part, layout, settings, due) else { continue };
        let name = format!("{name}-p{n}");
        let (outputs, bytes_read, _) =
            rewrite_partition(file_io, &target, part, &inputs, layout, settings, None, &name).await?;
        let retired = inputs.iter().chain(&retired_deletes).copied();
        out.push(snapshot_bundle(dest, epoch, &target, files.sequence_number, outputs, retired, bytes_read)?);
    }
    Ok(out)
}

/// A lenient rewrite made at a snapshot of data sequence number `sequence_number`: it adds
/// `outputs` and retires `retired`.
pub(crate) fn snapshot_bundle<'a>(
    dest: Dest,
    epoch: Epoch,
    target: &Target,
    sequence_number: i64,
    outputs: Vec<DataFile>,
    retired: impl Iterator<Item = &'a DataFile>,
    bytes_read: u64,
) -> Result<RewriteBundle> {
    let added =
        outputs.into_iter().map(|f| WrittenFile::new(dest, epoch, target, f, None)).collect::<Result<Vec<_>>>()?;
    Ok(RewriteBundle {
        dest,
        epoch,
        id: uuid::Uuid::new_v4().to_string(),
        after_epoch: None,
        base: RewriteBase::Sequence(sequence_number),
        strict: false,
        added,
        removed: retired.map(FileRef::of).collect(),
        bytes_read,
    })
}

/// The live files of `target`'s current snapshot, and the target with the table's current
/// schema (rewritten files are written under it).
pub(crate) async fn at_snapshot(
    catalog: &dyn TableCatalog,
    target: &Target,
) -> Result<(floe_engine::table_files::SnapshotFiles, Target)> {
    let state = catalog
        .load(&target.ident)
        .await?
        .ok_or_else(|| Error::new(ErrorKind::Catalog, format!("{} does not exist", target.ident)))?;
    let files = snapshot_files(catalog.file_io(), &state.metadata, ManifestCache::global()).await?;
    Ok((files, Target { schema: Arc::clone(state.metadata.current_schema()), ..target.clone() }))
}

/// The inputs and retired delete files of a partition, if it is due.
fn choose<'a>(
    part: &'a PartitionFiles,
    layout: &Layout,
    settings: &MaintenanceSettings,
    due: Due,
) -> Option<(Vec<&'a DataFile>, Vec<&'a DataFile>)> {
    match layout {
        Layout::Cdc => {
            let mut small: Vec<&DataFile> = part
                .data
                .iter()
                .map(|f| &f.file)
                .filter(|f| f.file_size_in_bytes() < settings.small_file_size())
                .collect();
            let wanted = match due {
                Due::Thresholds => small.len() > settings.cdc_max_files,
                Due::All => small.len() > 1,
            };
            if due == Due::Thresholds {
                // Size-tiered: a file four times the size of the smaller ones together
                // stays, so a row is rewritten a logarithmic number of times.
                small.sort_by_key(|f| std::cmp::Reverse(f.file_size_in_bytes()));
                while small.len() >= 2 {
                    let rest: u64 = small[1..].iter().map(|f| f.file_size_in_bytes()).sum();
                    if small[0].file_size_in_bytes() < 4 * rest {
                        break;
                    }
                    small.remove(0);
                }
            }
            (wanted && small.len() >= 2).then_some((small, Vec::new()))
        }
        Layout::Buckets(_) => {
            let wanted = match due {
                Due::Thresholds => {
                    part.data.len() > settings.max_data_files || part.deletes.len() > settings.max_delete_files
                }
                Due::All => part.data.len() > 1 || !part.deletes.is_empty(),
            };
            wanted
                .then(|| (part.data.iter().map(|f| &f.file).collect(), part.deletes.iter().map(|f| &f.file).collect()))
        }
    }
}

/// Rows a rewrite drops whatever their deletes say: the keys an erasure removes.
#[derive(Clone, Debug)]
pub struct KeyFilter {
    /// The key columns, `(field id, Arrow type)` in key order.
    pub fields: Vec<(i32, arrow_schema::DataType)>,
    /// Whether keys are stored unboxed ([`KeyShape::int_keys`]).
    pub int_keys: bool,
    /// The keys.
    pub keys: HashSet<IndexKey>,
}

impl KeyFilter {
    /// Which rows of a batch of the key columns (in `fields` order) hold one of the keys.
    pub fn hits(&self, keys: &RecordBatch) -> Result<Vec<bool>> {
        Ok(batch_keys(keys, self.int_keys)?.iter().map(|k| self.keys.contains(k)).collect())
    }
}

/// Reads the live rows of `inputs` (less the rows `erase` names) and writes them in files
/// of the target size; the files, the bytes read and the rows erased.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn rewrite_partition(
    file_io: &FileIO,
    target: &Target,
    part: &PartitionFiles,
    inputs: &[&DataFile],
    layout: &Layout,
    settings: &MaintenanceSettings,
    erase: Option<&KeyFilter>,
    name: &str,
) -> Result<(Vec<DataFile>, u64, u64)> {
    let arrow = Arc::new(iceberg::arrow::schema_to_arrow_schema(&target.schema)?);
    let fields = floe_engine::table_files::schema_fields(&target.schema)?;
    let positional = match layout {
        Layout::Cdc => Default::default(),
        Layout::Buckets(_) => positional_deletes(file_io, part).await?,
    };
    // Equality deletes: (sequence number, keys), and where the key columns sit.
    let mut equality: Vec<(i64, HashSet<IndexKey>)> = Vec::new();
    let mut key_at: Vec<usize> = Vec::new();
    if let Layout::Buckets(shape) = layout {
        key_at =
            shape.fields.iter().map(|(id, _)| fields.iter().position(|(f, _)| f == id).unwrap_or_default()).collect();
        for d in part.deletes.iter().filter(|d| d.file.content_type() == DataContentType::EqualityDeletes) {
            let mut keys = HashSet::new();
            for batch in read_columns(file_io, d.file.file_path(), &shape.fields).await? {
                keys.extend(batch_keys(&batch, shape.int_keys)?);
            }
            equality.push((d.seq, keys));
        }
    }
    let erase_at: Vec<usize> = erase
        .map(|e| e.fields.iter().map(|(id, _)| fields.iter().position(|(f, _)| f == id).unwrap_or_default()).collect())
        .unwrap_or_default();
    let mut erased = 0u64;
    let seq_of = |path: &str| part.data.iter().find(|f| f.file.file_path() == path).map_or(0, |f| f.seq);
    let rows: u64 = inputs.iter().map(|f| f.record_count()).sum();
    let bytes: u64 = inputs.iter().map(|f| f.file_size_in_bytes()).sum();
    let per_file = (settings.target_file_size as u128 * rows.max(1) as u128 / bytes.max(1) as u128).max(1) as usize;
    let mut outputs = Vec::new();
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0usize;
    for input in inputs {
        let deleted = positional.by_file.get(input.file_path());
        let applicable: Vec<&HashSet<IndexKey>> =
            equality.iter().filter(|(s, _)| *s > seq_of(input.file_path())).map(|(_, k)| k).collect();
        let mut pos: u64 = 0;
        for batch in read_columns(file_io, input.file_path(), &fields).await? {
            let n = batch.num_rows();
            let keys = match (&layout, applicable.is_empty()) {
                (Layout::Buckets(shape), false) => {
                    let key_batch = batch
                        .project(&key_at)
                        .map_err(|e| Error::new(ErrorKind::Internal, "projecting key columns").with_source(e))?;
                    Some(batch_keys(&key_batch, shape.int_keys)?)
                }
                _ => None,
            };
            let erasing = match erase {
                Some(filter) => Some(
                    filter.hits(
                        &batch
                            .project(&erase_at)
                            .map_err(|e| Error::new(ErrorKind::Internal, "projecting key columns").with_source(e))?,
                    )?,
                ),
                None => None,
            };
            let keep: BooleanArray = (0..n)
                .map(|i| {
                    let gone = deleted.is_some_and(|d| d.contains(pos + i as u64))
                        || keys.as_ref().is_some_and(|k| applicable.iter().any(|set| set.contains(&k[i])));
                    let erased_here = erasing.as_ref().is_some_and(|hits| hits[i]);
                    erased += erased_here as u64;
                    Some(!gone && !erased_here)
                })
                .collect();
            pos += n as u64;
            let kept = arrow_select::filter::filter_record_batch(&batch, &keep)
                .map_err(|e| Error::new(ErrorKind::Internal, "filtering deleted rows").with_source(e))?;
            if kept.num_rows() > 0 {
                pending_rows += kept.num_rows();
                pending.push(conform_batch(kept, &arrow)?);
            }
            while pending_rows >= per_file {
                outputs.push(
                    write_next(file_io, target, part, &arrow, &mut pending, per_file, name, outputs.len()).await?,
                );
                pending_rows -= per_file;
            }
        }
    }
    if pending_rows > 0 {
        outputs.push(write_next(file_io, target, part, &arrow, &mut pending, pending_rows, name, outputs.len()).await?);
    }
    Ok((outputs, bytes, erased))
}

#[allow(clippy::too_many_arguments)]
async fn write_next(
    file_io: &FileIO,
    target: &Target,
    part: &PartitionFiles,
    arrow: &arrow_schema::SchemaRef,
    pending: &mut Vec<RecordBatch>,
    rows: usize,
    name: &str,
    n: usize,
) -> Result<DataFile> {
    let head = crate::files::take_rows(arrow, pending, rows)?;
    let path = crate::base_index::file_path(target, &part.partition, &format!("{name}-{n}.parquet"));
    write_data_at(file_io, target, part.partition.clone(), &path, head).await
}
