//! Writing Parquet data and equality-delete files with iceberg's writers, and the message a
//! writer sends the committer about each file.
//!
//! ```text
//!   RecordBatch ──► DataFileWriter ─────────────┐
//!   (key batch) ──► EqualityDeleteFileWriter ───┴─► DataFile ──► WrittenFile (spec JSON) ──► committer
//! ```
//!
//! # Invariants
//! - Files are never overwritten: names carry the epoch, the writer and a per-run UUID.
//! - A file's partition tuple is set by iceberg's writer from the [`PartitionKey`] given.
//! - [`WrittenFile`] carries the `DataFile` in iceberg's own JSON form, so it crosses
//!   process boundaries and the committer rebuilds the exact struct.

use std::sync::Arc;

use arrow_array::RecordBatch;
use floe_engine::epoch::Epoch;
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::manifests::FileRef;
use iceberg::io::FileIO;
use iceberg::spec::{
    DataContentType, DataFile, DataFileFormat, FormatVersion, PartitionKey, Schema, Struct,
    deserialize_data_file_from_json, serialize_data_file_to_json,
};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::base_writer::equality_delete_writer::{
    EqualityDeleteFileWriterBuilder, EqualityDeleteWriterConfig,
};
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{DefaultFileNameGenerator, DefaultLocationGenerator};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::plan::Target;

/// Which table a file belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Dest {
    /// Base table of table index.
    Base(u32),
    /// CDC table of table index.
    Cdc(u32),
    /// Dead-letter table index.
    DeadLetters(u32),
}

/// A file written for an epoch, on its way to the committer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WrittenFile {
    /// Target table.
    pub dest: Dest,
    /// Epoch the file belongs to.
    pub epoch: Epoch,
    /// Whether it holds rows or deletes.
    pub deletes: bool,
    /// The file's path.
    pub path: String,
    /// The `DataFile` in iceberg's JSON form.
    pub data_file_json: String,
    /// Rows in the file.
    pub records: u64,
    /// File size.
    pub bytes: u64,
    /// Largest `source.ts_ms` among the events behind the file, for freshness.
    pub max_source_ts_ms: Option<i64>,
    /// The table schema version the file was written under (0: the run's starting schema).
    pub schema_version: u32,
    /// Entries this file supersedes in the same commit: a deletion vector's predecessor,
    /// delete files that name nothing live any more.
    pub removes: Vec<FileRef>,
}

/// What writers send the committer: an epoch's file, or a finished rewrite.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Written {
    /// A file of the epoch it is sent at.
    File(WrittenFile),
    /// A compaction of one partition, committed as one `replace` snapshot.
    Rewrite(RewriteBundle),
}

impl From<WrittenFile> for Written {
    fn from(f: WrittenFile) -> Written {
        Written::File(f)
    }
}

impl Written {
    /// The table it is for.
    pub fn dest(&self) -> Dest {
        match self {
            Written::File(f) => f.dest,
            Written::Rewrite(r) => r.dest,
        }
    }

    /// The epoch it is committed with.
    pub fn epoch(&self) -> Epoch {
        match self {
            Written::File(f) => f.epoch,
            Written::Rewrite(r) => r.epoch,
        }
    }
}

/// Which snapshot a rewrite read: its data files keep that snapshot's sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RewriteBase {
    /// The table as of this epoch of the run (`None`: as the run found it): the committer
    /// knows that snapshot's sequence number.
    Epoch(Option<Epoch>),
    /// A snapshot's sequence number, read from the table.
    Sequence(i64),
}

/// A finished compaction of one partition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RewriteBundle {
    /// The table.
    pub dest: Dest,
    /// The epoch it is sent (and committed) with.
    pub epoch: Epoch,
    /// Unique id (idempotency).
    pub id: String,
    /// The latest epoch whose changes the writer had applied when it finished the rewrite:
    /// the rewrite commits after that epoch's snapshot and before the next one's.
    pub after_epoch: Option<Epoch>,
    /// The snapshot it read.
    pub base: RewriteBase,
    /// Whether a retired file that is no longer live must fail the commit (the key index
    /// depends on the rewrite) rather than drop it.
    pub strict: bool,
    /// New data files and the deletes that go with them.
    pub added: Vec<WrittenFile>,
    /// Entries retired.
    pub removed: Vec<FileRef>,
    /// Bytes read.
    pub bytes_read: u64,
}

impl WrittenFile {
    /// Wraps a `DataFile` written for `target`.
    pub fn new(
        dest: Dest,
        epoch: Epoch,
        target: &Target,
        file: DataFile,
        max_source_ts_ms: Option<i64>,
    ) -> Result<WrittenFile> {
        let partition_type = target.spec.partition_type(&target.schema)?;
        let deletes = file.content_type() != DataContentType::Data;
        let records = file.record_count();
        let bytes = file.file_size_in_bytes();
        let path = file.file_path().to_string();
        let data_file_json = serialize_data_file_to_json(file, &partition_type, FormatVersion::V3)?;
        Ok(WrittenFile {
            dest,
            epoch,
            deletes,
            path,
            data_file_json,
            records,
            bytes,
            max_source_ts_ms,
            schema_version: 0,
            removes: Vec::new(),
        })
    }

    /// The file, superseding `removes` in its commit.
    pub fn removing(self, removes: Vec<FileRef>) -> WrittenFile {
        WrittenFile { removes, ..self }
    }

    /// The file, marked as written under schema version `version`.
    pub fn at_version(self, version: u32) -> WrittenFile {
        WrittenFile { schema_version: version, ..self }
    }

    /// The `DataFile` back, for the committer; `target` must be as of the file's
    /// `schema_version` (its field types decode the file's bounds).
    pub fn data_file(&self, target: &Target) -> Result<DataFile> {
        let partition_type = target.spec.partition_type(&target.schema)?;
        Ok(deserialize_data_file_from_json(
            &self.data_file_json,
            target.spec.spec_id(),
            &partition_type,
            &target.schema,
        )?)
    }
}

/// Files with fewer rows than this are written with Snappy when the table names no codec:
/// a zstd context costs more to set up (per column chunk) than such a file takes to
/// compress, and epoch files this small are compacted later anyway.
pub const SMALL_FILE_ROWS: usize = 4096;

/// Parquet codec from the table's `write.parquet.compression-codec` (and `-level`), as
/// Iceberg writers honour it; when unset, zstd (level 1, Iceberg's default codec), or Snappy
/// for a file of fewer than [`SMALL_FILE_ROWS`] rows.
pub fn compression(properties: &std::collections::HashMap<String, String>, rows: usize) -> Compression {
    let level = properties.get("write.parquet.compression-level").and_then(|l| l.parse::<i32>().ok());
    match properties.get("write.parquet.compression-codec").map(|c| c.to_ascii_lowercase()).as_deref() {
        Some("snappy") => Compression::SNAPPY,
        Some("gzip") => Compression::GZIP(level.and_then(|l| GzipLevel::try_new(l as u32).ok()).unwrap_or_default()),
        Some("lz4") => Compression::LZ4_RAW,
        Some("uncompressed" | "none") => Compression::UNCOMPRESSED,
        None if rows < SMALL_FILE_ROWS => Compression::SNAPPY,
        _ => Compression::ZSTD(ZstdLevel::try_new(level.unwrap_or(1)).unwrap_or_default()),
    }
}

/// Parquet writer settings for a file of `rows` rows of `target`; with a `sample` of the
/// rows, columns that would not shrink with a dictionary are written plain (see
/// [`crate::parquet_encoding`]).
pub(crate) fn writer_properties(target: &Target, sample: Option<&RecordBatch>, rows: usize) -> WriterProperties {
    let builder = WriterProperties::builder()
        .set_compression(compression(&target.properties, rows))
        .set_max_row_group_row_count(Some(1 << 20));
    match sample {
        Some(batch) => crate::parquet_encoding::choose_dictionaries(builder, batch),
        None => builder,
    }
    .build()
}

fn partition_key(target: &Target, schema: &Arc<Schema>, partition: Option<Struct>) -> Option<PartitionKey> {
    partition.map(|p| PartitionKey::new(target.spec.as_ref().clone(), Arc::clone(schema), p))
}

fn rolling(
    file_io: &FileIO,
    target: &Target,
    schema: Arc<Schema>,
    name_prefix: &str,
    sample: Option<&RecordBatch>,
    rows: usize,
) -> RollingFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator> {
    RollingFileWriterBuilder::new_with_default_file_size(
        ParquetWriterBuilder::new(writer_properties(target, sample, rows), schema),
        file_io.clone(),
        DefaultLocationGenerator::with_data_location(format!("{}/data", target.location)),
        DefaultFileNameGenerator::new(
            name_prefix.to_string(),
            Some(uuid::Uuid::new_v4().to_string()),
            DataFileFormat::Parquet,
        ),
    )
}

/// Writes `batches` (in `target`'s Arrow schema) as data file(s) of `target` in `partition`.
pub async fn write_data(
    file_io: &FileIO,
    target: &Target,
    partition: Option<Struct>,
    batches: Vec<RecordBatch>,
    name_prefix: &str,
) -> Result<Vec<DataFile>> {
    let schema = Arc::clone(&target.schema);
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    let mut writer =
        DataFileWriterBuilder::new(rolling(file_io, target, Arc::clone(&schema), name_prefix, batches.first(), rows))
            .build(partition_key(target, &schema, partition))
            .await?;
    for batch in batches {
        writer.write(batch).await?;
    }
    Ok(writer.close().await?)
}

/// The first `rows` rows of `pending` (batches in `arrow`) as one batch; `pending` keeps
/// the rest. How a rewrite cuts its output into files of a target size.
pub fn take_rows(arrow: &arrow_schema::SchemaRef, pending: &mut Vec<RecordBatch>, rows: usize) -> Result<RecordBatch> {
    let all = arrow_select::concat::concat_batches(arrow, pending.iter())
        .map_err(|e| Error::new(ErrorKind::Internal, "joining rewrite batches").with_source(e))?;
    let take = rows.min(all.num_rows());
    let rest = all.slice(take, all.num_rows() - take);
    *pending = if rest.num_rows() > 0 { vec![rest] } else { Vec::new() };
    Ok(all.slice(0, take))
}

/// `batch`, built under another schema version, in the Arrow schema `to`: columns match by
/// position (evolution only appends); a differing type is cast (widening, or narrowing back
/// values that came from the narrower type; an overflow is an error, never a silent null);
/// columns the batch lacks are null and columns `to` lacks are dropped (they hold only nulls:
/// no row of the epoch needed them).
pub fn conform_batch(batch: RecordBatch, to: &arrow_schema::SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == to.fields() {
        return Ok(batch);
    }
    let rows = batch.num_rows();
    let columns = to
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| match batch.columns().get(i) {
            Some(c) if c.data_type() == field.data_type() => Ok(Arc::clone(c)),
            Some(c) => arrow_cast::cast_with_options(
                c,
                field.data_type(),
                &arrow_cast::CastOptions { safe: false, ..Default::default() },
            )
            .map_err(|e| Error::new(ErrorKind::Internal, format!("widening `{}`", field.name())).with_source(e)),
            None => Ok(arrow_array::new_null_array(field.data_type(), rows)),
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(Arc::clone(to), columns)
        .map_err(|e| Error::new(ErrorKind::Internal, "conforming a batch to the epoch's schema").with_source(e))
}

/// Writes the key columns in `keys` as equality-delete file(s) of `target` on
/// `equality_ids`. `keys` must be in the schema [`key_schema`] returns.
pub async fn write_equality_deletes(
    file_io: &FileIO,
    target: &Target,
    equality_ids: &[i32],
    partition: Option<Struct>,
    keys: RecordBatch,
    name_prefix: &str,
) -> Result<Vec<DataFile>> {
    let key_schema = Arc::new(key_schema(&target.schema, equality_ids)?);
    let config = EqualityDeleteWriterConfig::new(equality_ids.to_vec(), Arc::clone(&key_schema))?;
    let builder = EqualityDeleteFileWriterBuilder::new(
        rolling(file_io, target, Arc::clone(&key_schema), name_prefix, Some(&keys), keys.num_rows()),
        config,
    );
    let mut writer = builder.build(partition_key(target, &target.schema, partition)).await?;
    writer.write(keys).await?;
    Ok(writer.close().await?)
}

/// The schema of an equality-delete file: the equality fields, with their table field ids.
pub fn key_schema(schema: &Schema, equality_ids: &[i32]) -> Result<Schema> {
    let fields = equality_ids
        .iter()
        .map(|id| {
            schema.field_by_id(*id).cloned().ok_or_else(|| {
                Error::new(ErrorKind::Internal, format!("equality field id {id} is not in the table schema"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Schema::builder().with_schema_id(schema.schema_id()).with_fields(fields).build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn small_files_get_snappy_unless_the_table_names_a_codec() {
        let unset = HashMap::new();
        assert_eq!(compression(&unset, 10), Compression::SNAPPY);
        assert_eq!(compression(&unset, SMALL_FILE_ROWS), Compression::ZSTD(ZstdLevel::try_new(1).expect("level")));
        let zstd = HashMap::from([("write.parquet.compression-codec".to_string(), "zstd".to_string())]);
        assert_eq!(compression(&zstd, 10), Compression::ZSTD(ZstdLevel::try_new(1).expect("level")));
        let gzip = HashMap::from([("write.parquet.compression-codec".to_string(), "GZIP".to_string())]);
        assert!(matches!(compression(&gzip, 1 << 20), Compression::GZIP(_)));
    }
}
