//! Writing deletes that name exact rows: Iceberg v2 position-delete files and v3 deletion
//! vectors, and the data files they pair with, each at a path chosen before it is written
//! (the key index records positions in it as soon as the epoch is staged).
//!
//! ```text
//!   (data path, positions)... ──sort by path, pos──► Parquet (file_path, pos) ──► DataFile content=1
//!   (data path, vector)...    ──► Puffin: "PFA1" | blob | blob | ... | footer ──► DataFile per blob
//!                                  blob i at offset 4 + Σ len(blob < i)           (content_offset/size)
//! ```
//!
//! # Invariants
//! - A position-delete file's rows are sorted by `file_path`, then `pos` (the spec's order);
//!   a file naming one data file also says so in `referenced_data_file`.
//! - A deletion vector blob lies at exactly the offset [`vector_offsets`] computes, so the
//!   location recorded when the epoch was staged is where readers find it; its manifest
//!   entry's record count is its cardinality.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use floe_engine::deletion_vector::{BLOB_TYPE, CARDINALITY, POS_FIELD_ID, REFERENCED_DATA_FILE};
use floe_engine::error::{Error, ErrorKind, Result};
use iceberg::io::FileIO;
use iceberg::metadata_columns::{delete_file_path_field, delete_file_pos_field};
use iceberg::puffin::{Blob, CompressionCodec, PuffinWriter};
use iceberg::spec::{DataContentType, DataFile, DataFileBuilder, DataFileFormat, Schema, Struct};
use iceberg::writer::file_writer::{FileWriter, FileWriterBuilder, ParquetWriterBuilder};

use crate::plan::Target;

/// Writes `batch` (in `target`'s Arrow schema) as one data file at `path`.
pub async fn write_data_at(
    file_io: &FileIO,
    target: &Target,
    partition: Struct,
    path: &str,
    batch: RecordBatch,
) -> Result<DataFile> {
    let builder = ParquetWriterBuilder::new(
        crate::files::writer_properties(target, Some(&batch), batch.num_rows()),
        Arc::clone(&target.schema),
    );
    let mut writer = builder.build(file_io.new_output(path)?).await?;
    writer.write(&batch).await?;
    let mut built = writer.close().await?;
    let Some(mut file) = built.pop() else {
        return Err(Error::new(ErrorKind::Internal, format!("{path}: an empty batch writes no data file")));
    };
    file.content(DataContentType::Data).partition(partition).partition_spec_id(target.spec.spec_id());
    file.build().map_err(|e| Error::new(ErrorKind::Internal, format!("{path}: {e}")))
}

/// The schema of a position-delete file.
pub fn position_delete_schema() -> Result<Schema> {
    Ok(Schema::builder()
        .with_fields([Arc::clone(delete_file_path_field()), Arc::clone(delete_file_pos_field())])
        .build()?)
}

/// Writes a position-delete file at `path` naming `positions` of each data file.
pub async fn write_position_deletes(
    file_io: &FileIO,
    target: &Target,
    partition: Struct,
    path: &str,
    mut positions: Vec<(Arc<str>, Vec<u32>)>,
) -> Result<DataFile> {
    positions.sort_by(|a, b| a.0.cmp(&b.0));
    let rows: usize = positions.iter().map(|(_, p)| p.len()).sum();
    let mut paths = Vec::with_capacity(rows);
    let mut pos = Vec::with_capacity(rows);
    for (file, ps) in &positions {
        let mut ps = ps.clone();
        ps.sort_unstable();
        for p in ps {
            paths.push(&**file);
            pos.push(p as i64);
        }
    }
    let schema = Arc::new(position_delete_schema()?);
    let arrow = Arc::new(iceberg::arrow::schema_to_arrow_schema(&schema)?);
    let columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(paths)), Arc::new(Int64Array::from(pos))];
    let batch = RecordBatch::try_new(arrow, columns)
        .map_err(|e| Error::new(ErrorKind::Internal, "building a position-delete batch").with_source(e))?;
    let mut writer =
        ParquetWriterBuilder::new(crate::files::writer_properties(target, Some(&batch), batch.num_rows()), schema)
            .build(file_io.new_output(path)?)
            .await?;
    writer.write(&batch).await?;
    let mut built = writer.close().await?;
    let Some(mut file) = built.pop() else {
        return Err(Error::new(ErrorKind::Internal, format!("{path}: a position-delete file needs rows")));
    };
    file.content(DataContentType::PositionDeletes).partition(partition).partition_spec_id(target.spec.spec_id());
    if let [(only, _)] = positions.as_slice() {
        file.referenced_data_file(Some(only.to_string()));
    }
    file.build().map_err(|e| Error::new(ErrorKind::Internal, format!("{path}: {e}")))
}

/// Where each blob of a Puffin file lands: after the 4-byte header, back to back.
pub fn vector_offsets(lengths: impl IntoIterator<Item = usize>) -> Vec<i64> {
    let mut at = 4i64;
    lengths
        .into_iter()
        .map(|len| {
            let offset = at;
            at += len as i64;
            offset
        })
        .collect()
}

/// One deletion vector to write: the data file it applies to, its encoded blob, and how
/// many positions it holds.
#[derive(Clone, Debug)]
pub struct Vector {
    /// The data file.
    pub data_file: Arc<str>,
    /// `deletion_vector::encode` output.
    pub blob: Vec<u8>,
    /// Deleted positions.
    pub cardinality: u64,
}

/// Writes `vectors` into one Puffin file at `path`; one `DataFile` per vector, in order.
pub async fn write_vectors(
    file_io: &FileIO,
    target: &Target,
    partition: Struct,
    path: &str,
    vectors: Vec<Vector>,
) -> Result<Vec<DataFile>> {
    let offsets = vector_offsets(vectors.iter().map(|v| v.blob.len()));
    let output = file_io.new_output(path)?;
    let properties = HashMap::from([("created-by".to_string(), format!("floe {}", env!("CARGO_PKG_VERSION")))]);
    let mut writer = PuffinWriter::new(&output, properties, false).await?;
    let mut entries = Vec::with_capacity(vectors.len());
    for (v, offset) in vectors.into_iter().zip(offsets) {
        let size = v.blob.len() as i64;
        let blob = Blob::builder()
            .r#type(BLOB_TYPE.to_string())
            .fields(vec![POS_FIELD_ID])
            .snapshot_id(-1)
            .sequence_number(-1)
            .data(v.blob)
            .properties(HashMap::from([
                (REFERENCED_DATA_FILE.to_string(), v.data_file.to_string()),
                (CARDINALITY.to_string(), v.cardinality.to_string()),
            ]))
            .build();
        writer.add(blob, CompressionCodec::None).await?;
        entries.push((v.data_file, v.cardinality, offset, size));
    }
    writer.close().await?;
    let file_size = file_io.new_input(path)?.metadata().await?.size;
    entries
        .into_iter()
        .map(|(data_file, cardinality, offset, size)| {
            DataFileBuilder::default()
                .content(DataContentType::PositionDeletes)
                .file_path(path.to_string())
                .file_format(DataFileFormat::Puffin)
                .partition(partition.clone())
                .partition_spec_id(target.spec.spec_id())
                .record_count(cardinality)
                .file_size_in_bytes(file_size)
                .referenced_data_file(Some(data_file.to_string()))
                .content_offset(Some(offset))
                .content_size_in_bytes(Some(size))
                .build()
                .map_err(|e| Error::new(ErrorKind::Internal, format!("{path}: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_engine::deletion_vector::{decode, encode_u32};
    use iceberg::io::FileIOBuilder;
    use iceberg::puffin::PuffinReader;

    #[test]
    fn vectors_land_where_their_offsets_say_and_read_back() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("dir");
        let file_io = FileIOBuilder::new(std::sync::Arc::new(iceberg::io::LocalFsStorageFactory)).build();
        let target = crate::plan::test_target(dir.path());
        let path = format!("{}/v.puffin", dir.path().display());
        let sets: Vec<roaring::RoaringBitmap> = vec![(0..5u32).collect(), [7u32, 70_000].into_iter().collect()];
        let vectors: Vec<Vector> = sets
            .iter()
            .enumerate()
            .map(|(i, s)| Vector {
                data_file: Arc::from(format!("d{i}.parquet")),
                blob: encode_u32(s),
                cardinality: s.len(),
            })
            .collect();
        let files = rt.block_on(write_vectors(&file_io, &target, Struct::empty(), &path, vectors)).expect("write");
        let footer = rt.block_on(async {
            let reader = PuffinReader::new(file_io.new_input(&path).expect("input"));
            reader.file_metadata().await.expect("footer").blobs().to_vec()
        });
        for ((file, blob), set) in files.iter().zip(&footer).zip(&sets) {
            assert_eq!(file.content_offset(), Some(blob.offset() as i64));
            assert_eq!(file.content_size_in_bytes(), Some(blob.length() as i64));
            assert_eq!(file.record_count(), set.len());
            let read = rt.block_on(floe_engine::table_files::read_deletion_vector(&file_io, file)).expect("read");
            assert_eq!(read.iter().map(|p| p as u32).collect::<roaring::RoaringBitmap>(), *set);
            assert_eq!(blob.properties()[REFERENCED_DATA_FILE], file.referenced_data_file().expect("ref"));
        }
        assert!(decode(&[0u8; 3]).is_err());
    }

    #[test]
    fn position_deletes_are_sorted_by_path_then_position() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("dir");
        let file_io = FileIOBuilder::new(std::sync::Arc::new(iceberg::io::LocalFsStorageFactory)).build();
        let target = crate::plan::test_target(dir.path());
        let path = format!("{}/d.parquet", dir.path().display());
        let positions = vec![(Arc::from("b"), vec![9, 2]), (Arc::from("a"), vec![5, 1])];
        let file =
            rt.block_on(write_position_deletes(&file_io, &target, Struct::empty(), &path, positions)).expect("write");
        assert_eq!(file.record_count(), 4);
        assert_eq!(file.referenced_data_file(), None);
        let rows = rt.block_on(floe_engine::table_files::read_position_deletes(&file_io, &file)).expect("read");
        let expected: Vec<(String, i64)> =
            [("a", 1), ("a", 5), ("b", 2), ("b", 9)].iter().map(|(p, i)| (p.to_string(), *i)).collect();
        assert_eq!(rows, expected);
    }
}
