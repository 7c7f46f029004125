//! What a table's current snapshot holds, partition by partition: its live data and delete
//! files with their sequence numbers, and the row positions that position deletes and
//! deletion vectors remove from each data file.
//!
//! ```text
//!   current snapshot ─► manifest list ─► manifests (cached) ─► live entries
//!        ─► by partition: data files (data seq) + delete files (seq)
//!        ─► positional_deletes(partition): data path → deleted positions
//!              position-delete file (file_path, pos)  applies if delete seq ≥ data seq
//!              deletion vector (Puffin blob)          applies to its referenced file, same rule
//! ```
//!
//! # Invariants
//! - The spec's rules decide what applies, never floe's own bookkeeping: a position delete
//!   or vector applies to a data file whose data sequence number is at most its own;
//!   equality deletes (applied by the caller, which knows the key columns) to data files
//!   whose data sequence number is strictly below theirs.
//! - A deletion vector's blob is read at its manifest entry's `content_offset` and
//!   `content_size_in_bytes`, and checked (length, magic, CRC) before it is applied.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use iceberg::io::FileIO;
use iceberg::spec::{DataContentType, DataFile, DataFileFormat, ManifestList, Struct, TableMetadata};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use roaring::RoaringTreemap;

use crate::error::{Error, ErrorKind, Result};
use crate::manifests::{FileRef, ManifestCache, live_entries};

/// A live file with its (data) sequence number.
#[derive(Clone, Debug)]
pub struct LiveFile {
    /// The file.
    pub file: DataFile,
    /// Its data sequence number (for delete files: the sequence number deletes apply by).
    pub seq: i64,
}

/// The live files of one partition.
#[derive(Clone, Debug)]
pub struct PartitionFiles {
    /// The partition tuple.
    pub partition: Struct,
    /// Data files.
    pub data: Vec<LiveFile>,
    /// Delete files of every kind.
    pub deletes: Vec<LiveFile>,
}

impl PartitionFiles {
    /// The first partition field as an int: the bucket of a floe base table.
    pub fn bucket(&self) -> Option<i32> {
        bucket_of(&self.partition)
    }
}

/// The first partition field as an int (the bucket of a `bucket(N, key)` spec).
pub fn bucket_of(partition: &Struct) -> Option<i32> {
    match partition.fields().first()?.as_ref()? {
        iceberg::spec::Literal::Primitive(iceberg::spec::PrimitiveLiteral::Int(b)) => Some(*b),
        _ => None,
    }
}

/// A snapshot's live files by partition.
#[derive(Clone, Debug, Default)]
pub struct SnapshotFiles {
    /// The snapshot read (`None`: the table has none).
    pub snapshot_id: Option<i64>,
    /// Its sequence number (0 without a snapshot).
    pub sequence_number: i64,
    /// Partitions with at least one live file.
    pub partitions: Vec<PartitionFiles>,
}

impl SnapshotFiles {
    /// The partition whose bucket is `bucket`.
    pub fn bucket(&self, bucket: i32) -> Option<&PartitionFiles> {
        self.partitions.iter().find(|p| p.bucket() == Some(bucket))
    }
}

/// The live files of `metadata`'s current snapshot.
pub async fn snapshot_files(
    file_io: &FileIO,
    metadata: &TableMetadata,
    cache: &ManifestCache,
) -> Result<SnapshotFiles> {
    let Some(snapshot) = metadata.current_snapshot() else { return Ok(SnapshotFiles::default()) };
    let bytes = file_io.new_input(snapshot.manifest_list())?.read().await?;
    let list = ManifestList::parse_with_version(&bytes, metadata.format_version())?;
    let entries = live_entries(file_io, list.entries(), cache).await?;
    let mut by_partition: HashMap<Struct, PartitionFiles> = HashMap::new();
    for entry in entries {
        let seq = entry
            .sequence_number()
            .ok_or_else(|| Error::new(ErrorKind::Iceberg, format!("{} has no sequence number", entry.file_path())))?;
        let file = entry.data_file().clone();
        let part = by_partition.entry(file.partition().clone()).or_insert_with(|| PartitionFiles {
            partition: file.partition().clone(),
            data: Vec::new(),
            deletes: Vec::new(),
        });
        match file.content_type() {
            DataContentType::Data => part.data.push(LiveFile { file, seq }),
            _ => part.deletes.push(LiveFile { file, seq }),
        }
    }
    let mut partitions: Vec<PartitionFiles> = by_partition.into_values().collect();
    partitions.sort_by_key(|p| (p.bucket(), format!("{:?}", p.partition)));
    for p in &mut partitions {
        p.data.sort_by(|a, b| (a.seq, a.file.file_path()).cmp(&(b.seq, b.file.file_path())));
    }
    Ok(SnapshotFiles {
        snapshot_id: Some(snapshot.snapshot_id()),
        sequence_number: snapshot.sequence_number(),
        partitions,
    })
}

/// Whether a delete file is a deletion vector (a blob in a Puffin file).
pub fn is_deletion_vector(file: &DataFile) -> bool {
    file.content_type() == DataContentType::PositionDeletes && file.file_format() == DataFileFormat::Puffin
}

/// Reads a deletion vector's blob.
pub async fn read_deletion_vector(file_io: &FileIO, file: &DataFile) -> Result<RoaringTreemap> {
    let (Some(offset), Some(size)) = (file.content_offset(), file.content_size_in_bytes()) else {
        return Err(Error::new(
            ErrorKind::Iceberg,
            format!("deletion vector in {} has no content offset or size", file.file_path()),
        ));
    };
    let reader = file_io.new_input(file.file_path())?.reader().await?;
    let bytes = reader.read(offset as u64..(offset + size) as u64).await?;
    crate::deletion_vector::decode(&bytes).map_err(|e| e.context(format!("reading {}", file.file_path())))
}

/// Reads a position-delete file: `(file_path, pos)` rows.
pub async fn read_position_deletes(file_io: &FileIO, file: &DataFile) -> Result<Vec<(String, i64)>> {
    let bytes = file_io.new_input(file.file_path())?.read().await?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| Error::new(ErrorKind::Io, "reading a position-delete file").with_source(e))?;
        let (Some(paths), Some(pos)) = (batch.column_by_name("file_path"), batch.column_by_name("pos")) else {
            return Err(Error::new(ErrorKind::Data, format!("{} has no file_path and pos columns", file.file_path())));
        };
        let paths = paths.as_string::<i32>();
        let pos = pos.as_primitive::<Int64Type>();
        out.extend((0..batch.num_rows()).map(|i| (paths.value(i).to_string(), pos.value(i))));
    }
    Ok(out)
}

/// What the position deletes and deletion vectors of a partition remove.
#[derive(Debug, Default)]
pub struct PositionalDeletes {
    /// Deleted positions per data file path (files without deletes are absent).
    pub by_file: HashMap<String, RoaringTreemap>,
    /// Each position-delete file (not vectors) and the positions it names, per data file.
    pub names: Vec<(FileRef, BTreeMap<String, RoaringTreemap>)>,
}

/// The positions that position deletes and deletion vectors remove from each data file of
/// `part`.
pub async fn positional_deletes(file_io: &FileIO, part: &PartitionFiles) -> Result<PositionalDeletes> {
    let data_seq: HashMap<&str, i64> = part.data.iter().map(|f| (f.file.file_path(), f.seq)).collect();
    let mut out = PositionalDeletes::default();
    for delete in &part.deletes {
        if delete.file.content_type() != DataContentType::PositionDeletes {
            continue;
        }
        let applies = |path: &str| data_seq.get(path).is_some_and(|&s| s <= delete.seq);
        if is_deletion_vector(&delete.file) {
            let Some(target) = delete.file.referenced_data_file() else {
                return Err(Error::new(
                    ErrorKind::Iceberg,
                    format!("deletion vector in {} names no data file", delete.file.file_path()),
                ));
            };
            if applies(&target) {
                let v = read_deletion_vector(file_io, &delete.file).await?;
                *out.by_file.entry(target).or_default() |= v;
            }
            continue;
        }
        let mut names: BTreeMap<String, RoaringTreemap> = BTreeMap::new();
        for (path, pos) in read_position_deletes(file_io, &delete.file).await? {
            if pos >= 0 && applies(&path) {
                out.by_file.entry(path.clone()).or_default().insert(pos as u64);
            }
            if pos >= 0 {
                names.entry(path).or_default().insert(pos as u64);
            }
        }
        out.names.push((FileRef::of(&delete.file), names));
    }
    Ok(out)
}

/// Shared handle to what [`snapshot_files`] read.
pub type SnapshotFilesRef = Arc<SnapshotFiles>;

/// Every field of `schema` as (field id, Arrow type), in order: the `fields` argument of
/// [`read_columns`] for whole rows.
pub fn schema_fields(schema: &iceberg::spec::Schema) -> crate::Result<Vec<(i32, arrow_schema::DataType)>> {
    let arrow = iceberg::arrow::schema_to_arrow_schema(schema)?;
    Ok(schema.as_struct().fields().iter().zip(arrow.fields()).map(|(f, a)| (f.id, a.data_type().clone())).collect())
}

/// Reads the columns `fields` (field id, Arrow type) of a data file, in that order, as
/// batches; a field the file does not hold (added by a later schema) reads as nulls.
/// Only the requested column chunks are read.
pub async fn read_columns(
    file_io: &FileIO,
    path: &str,
    fields: &[(i32, arrow_schema::DataType)],
) -> Result<Vec<arrow_array::RecordBatch>> {
    use futures::TryStreamExt;
    use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};

    let input = file_io.new_input(path)?;
    let meta = input.metadata().await?;
    let reader = iceberg::arrow::ArrowFileReader::new(meta, input.reader().await?);
    let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
    let file_schema = Arc::clone(builder.schema());
    let id_of = |f: &arrow_schema::Field| {
        f.metadata().get(parquet::arrow::PARQUET_FIELD_ID_META_KEY).and_then(|v| v.parse::<i32>().ok())
    };
    // Root column index of each wanted field in the file.
    let found: Vec<Option<usize>> =
        fields.iter().map(|(id, _)| file_schema.fields().iter().position(|f| id_of(f) == Some(*id))).collect();
    let mut roots: Vec<usize> = found.iter().flatten().copied().collect();
    roots.sort_unstable();
    roots.dedup();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
    let stream = builder.with_projection(mask).with_batch_size(64 * 1024).build()?;
    let batches: Vec<arrow_array::RecordBatch> = stream.try_collect().await?;
    let mut out = Vec::with_capacity(batches.len());
    let schema = Arc::new(arrow_schema::Schema::new(
        fields
            .iter()
            .zip(&found)
            .map(|((id, ty), at)| {
                let ty = at.map(|i| file_schema.field(i).data_type().clone()).unwrap_or_else(|| ty.clone());
                arrow_schema::Field::new(format!("f{id}"), ty, true)
            })
            .collect::<Vec<_>>(),
    ));
    for batch in batches {
        let columns = fields
            .iter()
            .zip(&found)
            .map(|((_, ty), at)| match at {
                Some(root) => {
                    let i = roots.iter().position(|r| r == root).unwrap_or_default();
                    Arc::clone(batch.column(i))
                }
                None => arrow_array::new_null_array(ty, batch.num_rows()),
            })
            .collect();
        out.push(
            arrow_array::RecordBatch::try_new(Arc::clone(&schema), columns)
                .map_err(|e| Error::new(ErrorKind::Data, format!("reading {path}")).with_source(e))?,
        );
    }
    Ok(out)
}
