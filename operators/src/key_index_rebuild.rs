//! Rebuilding a base table's key index from the table itself, at start: for each bucket,
//! read the key columns of every live data file, apply every delete by the spec's rules,
//! and index the rows that remain. Buckets are rebuilt in parallel.
//!
//! ```text
//!   current snapshot ─► live files of bucket b ─┬─ position deletes, vectors ─► deleted positions
//!                                               ├─ equality deletes (seq > data seq) ─► deleted keys
//!                                               └─ data files: key columns ─► key → (file, pos)
//! ```
//!
//! # Invariants
//! - The index equals the table's current snapshot: it is built from nothing else, so a
//!   crash at any moment (files written but not committed, a commit whose response was
//!   lost) leaves nothing for a restart to reconcile.
//! - A key live in two files (only possible in a table another writer touched) is indexed
//!   at the later one; the other row is deleted with the bucket's next epoch.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Int32Type, Int64Type, Time64MicrosecondType, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use floe_engine::arrow_value::value_at;
use floe_engine::catalog::TableCatalog;
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::manifests::{FileRef, ManifestCache};
use floe_engine::table_files::{PartitionFiles, is_deletion_vector, positional_deletes, read_columns, snapshot_files};
use floe_engine::value::Value;
use futures::StreamExt;
use iceberg::io::FileIO;
use iceberg::spec::DataContentType;
use roaring::RoaringBitmap;

use crate::key_index::{BucketIndex, IndexKey, Loc};
use crate::plan::{TablePlan, Target};

/// The key columns of a table: field ids (key order) and Arrow types.
#[derive(Clone, Debug)]
pub struct KeyShape {
    /// `(field id, Arrow type)` per key column.
    pub fields: Vec<(i32, DataType)>,
    /// Whether keys are stored unboxed.
    pub int_keys: bool,
}

impl KeyShape {
    /// The key of a table plan's base table.
    pub fn of(table: &TablePlan, target: &Target) -> Result<KeyShape> {
        let arrow = iceberg::arrow::schema_to_arrow_schema(&target.schema)?;
        let fields = table
            .equality_ids
            .iter()
            .map(|id| {
                let name = target.schema.field_by_id(*id).map(|f| f.name.clone()).unwrap_or_default();
                let ty = arrow.field_with_name(&name).map(|f| f.data_type().clone()).map_err(|_| {
                    Error::new(ErrorKind::Internal, format!("key field {id} is not in {}", target.name))
                })?;
                Ok((*id, ty))
            })
            .collect::<Result<Vec<_>>>()?;
        let types: Vec<_> = table.schema.key.iter().map(|&p| table.schema.columns[p].ty).collect();
        Ok(KeyShape { fields, int_keys: BucketIndex::int_keys(&types) })
    }
}

impl KeyShape {
    /// The key of a base table from its schema's identifier fields, in field-id order (the
    /// order only has to agree between a table's data and delete files).
    pub fn from_schema(schema: &iceberg::spec::Schema) -> Result<KeyShape> {
        let arrow = iceberg::arrow::schema_to_arrow_schema(schema)?;
        let mut fields = Vec::new();
        let mut types = Vec::new();
        let mut ids: Vec<i32> = schema.identifier_field_ids().collect();
        ids.sort_unstable();
        for id in ids {
            let field = schema
                .field_by_id(id)
                .ok_or_else(|| Error::new(ErrorKind::Data, format!("identifier field {id} is not in the schema")))?;
            let ty = arrow.field_with_name(&field.name).map(|f| f.data_type().clone()).map_err(|_| {
                Error::new(ErrorKind::Data, format!("identifier field `{}` has no Arrow type", field.name))
            })?;
            if let iceberg::spec::Type::Primitive(p) = field.field_type.as_ref() {
                types.extend(floe_engine::schema::ColumnType::from_iceberg(p));
            }
            fields.push((id, ty));
        }
        if fields.is_empty() {
            return Err(Error::new(ErrorKind::Data, "the table has no identifier fields (no primary key)"));
        }
        Ok(KeyShape { int_keys: types.len() == fields.len() && BucketIndex::int_keys(&types), fields })
    }
}

/// The keys of a batch of key columns, row by row.
pub fn batch_keys(batch: &RecordBatch, int_keys: bool) -> Result<Vec<IndexKey>> {
    if int_keys && batch.num_columns() == 1 {
        let c = batch.column(0);
        let ints: Option<Vec<i64>> = match c.data_type() {
            DataType::Int64 => Some(c.as_primitive::<Int64Type>().values().to_vec()),
            DataType::Int32 => Some(c.as_primitive::<Int32Type>().values().iter().map(|v| *v as i64).collect()),
            DataType::Date32 => Some(c.as_primitive::<Date32Type>().values().iter().map(|v| *v as i64).collect()),
            DataType::Time64(TimeUnit::Microsecond) => {
                Some(c.as_primitive::<Time64MicrosecondType>().values().to_vec())
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Some(c.as_primitive::<TimestampMicrosecondType>().values().to_vec())
            }
            _ => None,
        };
        if let Some(ints) = ints
            && c.null_count() == 0
        {
            return Ok(ints.into_iter().map(IndexKey::Int).collect());
        }
    }
    let mut out = Vec::with_capacity(batch.num_rows());
    let mut values: Vec<Value> = Vec::with_capacity(batch.num_columns());
    for i in 0..batch.num_rows() {
        values.clear();
        for c in batch.columns() {
            values.push(value_at(c.as_ref(), i)?);
        }
        out.push(IndexKey::of(&values));
    }
    Ok(out)
}

/// Rebuilds one bucket from its live files (`None`: the bucket has none).
pub async fn rebuild_bucket(file_io: &FileIO, part: Option<&PartitionFiles>, shape: &KeyShape) -> Result<BucketIndex> {
    let mut index = BucketIndex::new(shape.int_keys);
    let Some(part) = part else { return Ok(index) };
    let positional = positional_deletes(file_io, part).await?;
    // Equality deletes: (sequence number, deleted keys).
    let mut equality: Vec<(i64, HashSet<IndexKey>)> = Vec::new();
    for d in part.deletes.iter().filter(|d| d.file.content_type() == DataContentType::EqualityDeletes) {
        let ids = d.file.equality_ids().unwrap_or_default();
        let wanted: Vec<i32> = shape.fields.iter().map(|(id, _)| *id).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        let mut key_ids = wanted.clone();
        key_ids.sort_unstable();
        if sorted != key_ids {
            return Err(Error::new(
                ErrorKind::Data,
                format!(
                    "{} deletes by field ids {ids:?}, not by the key {wanted:?}; floe cannot index this table",
                    d.file.file_path()
                ),
            ));
        }
        let mut keys = HashSet::new();
        for batch in read_columns(file_io, d.file.file_path(), &shape.fields).await? {
            keys.extend(batch_keys(&batch, shape.int_keys)?);
        }
        equality.push((d.seq, keys));
        index.add_delete_file(FileRef::of(&d.file), std::iter::empty::<(&str, RoaringBitmap)>(), true);
    }
    for data in &part.data {
        let path = data.file.file_path();
        let deleted: RoaringBitmap = match positional.by_file.get(path) {
            Some(v) => v.iter().filter_map(|p| u32::try_from(p).ok()).collect(),
            None => RoaringBitmap::new(),
        };
        let id = index.add_file(path, data.file.record_count(), data.file.file_size_in_bytes(), deleted.clone())?;
        let applicable: Vec<&HashSet<IndexKey>> =
            equality.iter().filter(|(seq, _)| *seq > data.seq).map(|(_, k)| k).collect();
        let mut pos: u32 = 0;
        let mut newly_deleted = Vec::new();
        for batch in read_columns(file_io, path, &shape.fields).await? {
            for key in batch_keys(&batch, shape.int_keys)? {
                if !deleted.contains(pos) {
                    if applicable.iter().any(|set| set.contains(&key)) {
                        newly_deleted.push(pos);
                    } else {
                        index.add_live(key, Loc { file: id, pos });
                    }
                }
                pos += 1;
            }
        }
        index.mark_deleted(id, &newly_deleted);
    }
    for (file, names) in &positional.names {
        let named = names.iter().map(|(path, positions)| {
            (path.as_str(), positions.iter().filter_map(|p| u32::try_from(p).ok()).collect::<RoaringBitmap>())
        });
        index.add_delete_file(file.clone(), named, false);
    }
    for d in part.deletes.iter().filter(|d| is_deletion_vector(&d.file)) {
        if let Some(id) = d.file.referenced_data_file().and_then(|p| index.file_id(&p)) {
            index.set_vector(id, FileRef::of(&d.file));
        }
    }
    Ok(index)
}

/// A rebuilt table: its buckets, and what it took.
#[derive(Debug, Default)]
pub struct Rebuilt {
    /// Bucket number → index.
    pub buckets: HashMap<u32, BucketIndex>,
    /// Live keys.
    pub keys: u64,
    /// Data files read.
    pub files: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Rebuilds the buckets `owned` selects of `table`'s base table, `parallel` at a time.
pub async fn rebuild_table(
    catalog: &dyn TableCatalog,
    table: &TablePlan,
    owned: impl Fn(u32) -> bool,
    parallel: usize,
) -> Result<Rebuilt> {
    let started = Instant::now();
    let Some(target) = &table.base else { return Ok(Rebuilt::default()) };
    let shape = Arc::new(KeyShape::of(table, target)?);
    let state = catalog
        .load(&target.ident)
        .await?
        .ok_or_else(|| Error::new(ErrorKind::Catalog, format!("{} does not exist", target.ident)))?;
    let files = Arc::new(snapshot_files(catalog.file_io(), &state.metadata, ManifestCache::global()).await?);
    let buckets: Vec<u32> = (0..table.buckets).filter(|b| owned(*b)).collect();
    let file_io = catalog.file_io().clone();
    let results: Vec<Result<(u32, BucketIndex)>> =
        futures::stream::iter(buckets)
            .map(|b| {
                let (file_io, files, shape) = (file_io.clone(), Arc::clone(&files), Arc::clone(&shape));
                // A task per bucket: decoding keys is CPU work, spread over the IO threads.
                let task = tokio::spawn(async move {
                    let index = rebuild_bucket(&file_io, files.bucket(b as i32), &shape)
                        .await
                        .map_err(|e| e.context(format!("rebuilding the key index of bucket {b}")))?;
                    Ok((b, index))
                });
                async move {
                    task.await.map_err(|e| Error::new(ErrorKind::Internal, format!("a rebuild task failed: {e}")))?
                }
            })
            .buffer_unordered(parallel.max(1))
            .collect()
            .await;
    let mut out = Rebuilt::default();
    for r in results {
        let (b, index) = r.map_err(|e| e.context(format!("{}", target.name)))?;
        let stats = index.stats();
        out.keys += stats.keys;
        out.files += stats.data_files;
        out.buckets.insert(b, index);
    }
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}
