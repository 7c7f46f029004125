//! One bucket's epoch in position or vector mode: the key index turns the epoch's net
//! changes into one data file and deletes that name exact rows, all at paths chosen now.
//!
//! ```text
//!   changes (key → row | none) ──► BucketIndex::apply_epoch ──► rows (file order) + deleted (file, pos)
//!      position mode: a position-delete file per touched data file (`referenced_data_file`),
//!                     merging that file's small delete files past `max_delete_files`
//!      vector mode:   one Puffin file, a vector per touched data file (its whole deleted set),
//!                     each retiring that file's previous vector
//!      both:          delete files that name nothing live any more are retired
//! ```
//!
//! # Invariants
//! - Everything is decided synchronously, before any IO: the index already points at the
//!   new file's positions and vectors' offsets when the write job starts, so the next epoch
//!   can be staged while this one is written.
//! - Vector mode keeps at most one vector per data file in every snapshot: a new vector
//!   holds the file's whole deleted set and retires its predecessor in the same commit.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use floe_engine::deletion_vector::encode_u32;
use floe_engine::error::Result;
use floe_engine::manifests::FileRef;
use floe_engine::table_settings::DeleteMode;
use floe_engine::value::Row;
use iceberg::io::FileIO;
use iceberg::spec::{DataFile, PartitionKey, Struct};

use crate::arrow_rows::BatchBuilder;
use crate::delete_files::{Vector, vector_offsets, write_data_at, write_position_deletes, write_vectors};
use crate::key_index::{BucketIndex, FileId, IndexKey};
use crate::plan::Target;

/// The path of a new file of `target` in `partition`.
pub fn file_path(target: &Target, partition: &Struct, name: &str) -> String {
    let key = PartitionKey::new(target.spec.as_ref().clone(), Arc::clone(&target.schema), partition.clone());
    if target.spec.fields().is_empty() {
        format!("{}/data/{name}", target.location)
    } else {
        format!("{}/data/{}/{name}", target.location, key.to_path())
    }
}

/// Positions to delete, per data file path.
pub type PositionsByFile = Vec<(Arc<str>, Vec<u32>)>;

/// Deletes to write for a bucket, decided but not written.
#[derive(Debug, Default)]
pub enum DeleteWrite {
    /// Nothing to delete.
    #[default]
    None,
    /// Position-delete files: where, and per data file path the positions.
    Positions {
        /// The files.
        files: Vec<(String, PositionsByFile)>,
    },
    /// One Puffin file of deletion vectors.
    Vectors {
        /// Where.
        path: String,
        /// The vectors, in file order.
        vectors: Vec<Vector>,
    },
}

/// Decides how `positions` (per data file) are written, records the new delete file(s) in
/// the index, and returns what to write and what that retires. Vector mode writes each
/// touched file's whole deleted set.
pub fn plan_deletes(
    index: &mut BucketIndex,
    mode: DeleteMode,
    target: &Target,
    partition: &Struct,
    positions: &BTreeMap<FileId, Vec<u32>>,
    name: &str,
) -> (DeleteWrite, Vec<FileRef>) {
    if positions.is_empty() {
        return (DeleteWrite::None, Vec::new());
    }
    match mode {
        DeleteMode::Vector => {
            let path = file_path(target, partition, &format!("{name}-dv.puffin"));
            let mut vectors = Vec::with_capacity(positions.len());
            let mut ids = Vec::with_capacity(positions.len());
            for id in positions.keys() {
                let Some(f) = index.file(*id) else { continue };
                vectors.push(Vector {
                    data_file: Arc::clone(&f.path),
                    blob: encode_u32(&f.deleted),
                    cardinality: f.deleted.len(),
                });
                ids.push(*id);
            }
            let offsets = vector_offsets(vectors.iter().map(|v| v.blob.len()));
            let mut removes = Vec::new();
            for (id, offset) in ids.into_iter().zip(offsets) {
                let new = FileRef { path: path.clone(), content_offset: Some(offset) };
                removes.extend(index.set_vector(id, new));
            }
            (DeleteWrite::Vectors { path, vectors }, removes)
        }
        _ => {
            // One file per data file: readers open only the deletes of the file they read.
            let mut files = Vec::with_capacity(positions.len());
            for (id, ps) in positions {
                let Some(data) = index.file(*id).map(|f| Arc::clone(&f.path)) else { continue };
                let path = file_path(target, partition, &format!("{name}-f{id}-deletes.parquet"));
                index.add_position_deletes(FileRef::path(path.clone()), &BTreeMap::from([(*id, ps.clone())]));
                files.push((path, vec![(data, ps.clone())]));
            }
            (DeleteWrite::Positions { files }, Vec::new())
        }
    }
}

/// One bucket's epoch, decided.
#[derive(Debug)]
pub struct BucketWrite {
    /// The data file: id, path, rows.
    pub data: Option<(FileId, String, RecordBatch)>,
    /// Deletes.
    pub deletes: DeleteWrite,
    /// Entries retired with the epoch.
    pub removes: Vec<FileRef>,
    /// Rows written and rows deleted (for the metrics).
    pub counts: (u64, u64),
}

/// Applies an epoch's changes to a bucket and decides its files. `name` is unique per
/// (epoch, worker, bucket).
pub fn stage_bucket(
    index: &mut BucketIndex,
    mode: DeleteMode,
    max_delete_files: usize,
    target: &Target,
    partition: &Struct,
    name: &str,
    changes: Vec<(Row, Option<Row>)>,
) -> Result<BucketWrite> {
    let data_path = file_path(target, partition, &format!("{name}.parquet"));
    let delta = index.apply_epoch(&data_path, changes.into_iter().map(|(k, row)| (IndexKey::of(&k.0), row)))?;
    let data = match delta.file {
        Some(id) => {
            let arrow = Arc::new(iceberg::arrow::schema_to_arrow_schema(&target.schema)?);
            let mut batch = BatchBuilder::new(arrow, delta.rows.len())?;
            for row in &delta.rows {
                batch.append(row.0.iter())?;
            }
            Some((id, data_path, batch.finish()?))
        }
        None => None,
    };
    let deleted = delta.deleted.values().map(|p| p.len() as u64).sum();
    // Position mode: a data file past `max_delete_files` delete files gets its small ones
    // merged into this epoch's.
    let (positions, mut removes) = match mode {
        DeleteMode::Position => index.epoch_deletes(max_delete_files, &delta),
        _ => (delta.deleted.clone(), Vec::new()),
    };
    let (deletes, replaced) = plan_deletes(index, mode, target, partition, &positions, name);
    removes.extend(replaced);
    removes.extend(index.take_dangling(mode));
    Ok(BucketWrite { data, deletes, removes, counts: (delta.rows.len() as u64, deleted) })
}

/// Writes decided deletes; the files, in order.
pub async fn write_deletes(
    file_io: &FileIO,
    target: &Target,
    partition: Struct,
    deletes: DeleteWrite,
) -> Result<Vec<DataFile>> {
    Ok(match deletes {
        DeleteWrite::None => Vec::new(),
        DeleteWrite::Positions { files } => {
            let mut out = Vec::with_capacity(files.len());
            for (path, positions) in files {
                out.push(write_position_deletes(file_io, target, partition.clone(), &path, positions).await?);
            }
            out
        }
        DeleteWrite::Vectors { path, vectors } => write_vectors(file_io, target, partition, &path, vectors).await?,
    })
}

/// Writes a decided bucket epoch: its data file (if any), then its deletes.
pub async fn write_bucket(
    file_io: &FileIO,
    target: &Target,
    partition: Struct,
    write: BucketWrite,
) -> Result<(Option<DataFile>, Vec<DataFile>)> {
    let data = match write.data {
        Some((_, path, batch)) => Some(write_data_at(file_io, target, partition.clone(), &path, batch).await?),
        None => None,
    };
    let deletes = write_deletes(file_io, target, partition, write.deletes).await?;
    Ok((data, deletes))
}
