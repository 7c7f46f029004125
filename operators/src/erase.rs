//! Compliance erasure at a snapshot: the rows of given primary keys removed physically from
//! a base table and its CDC table, by rewriting the files that hold them.
//!
//! ```text
//!   --key text ─► EraseKeys (typed by the base table's identifier fields)
//!     base table: partition holds the key (a data file's or an equality delete's rows)
//!                 ─► every data file of it rewritten, deletes applied, the keys' rows
//!                    dropped; every delete file of it retired
//!     CDC table:  each data file holding the key ─► rewritten without those rows
//!   ─► RewriteBundle per partition (data sequence number of the snapshot read)
//! ```
//!
//! # Invariants
//! - A base-table partition that holds a key is rewritten whole, so no delete file of it
//!   (an equality delete names the key; a position delete names a retired file) survives,
//!   and no row of the key, live or deleted, is carried over.
//! - Outputs keep the data sequence number of the snapshot read, as compaction's do, so
//!   deletes committed after it still apply.
//! - Keys are matched as the key index matches them ([`IndexKey`]): the typed values of the
//!   identifier fields, in field-id order; the CDC table's columns are found by name.
//! - What this leaves behind (older snapshots, the retired files, DELETED manifest entries'
//!   metrics) is the caller's to expire and delete; [`crate::erase_proof`] checks the result.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, StringArray};
use arrow_schema::DataType;
use floe_engine::arrow_value::value_at;
use floe_engine::catalog::TableCatalog;
use floe_engine::cleanup::{list_files, local_path, remove, retained};
use floe_engine::commit::{CommitOutcome, CommitRequest, RetryPolicy, RewriteCommit, commit, commit_metadata};
use floe_engine::epoch::Epoch;
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::expiry::{ExpiryPolicy, ExpiryReport, expire_and_clean};
use floe_engine::manifests::ManifestCache;
use floe_engine::schema::ColumnType;
use floe_engine::table_files::{PartitionFiles, read_columns};
use floe_engine::table_settings::MaintenanceSettings;
use floe_engine::value::Value;
use iceberg::spec::{DataContentType, DataFile, Datum, Schema};
use sha2::Digest;

use crate::erase_proof::{Proof, prove_erased};
use crate::files::{Dest, RewriteBase, RewriteBundle};
use crate::key_index::IndexKey;
use crate::key_index_rebuild::KeyShape;
use crate::plan::Target;
use crate::snapshot_rewrite::{KeyFilter, Layout, at_snapshot, rewrite_partition, snapshot_bundle};

/// The keys to erase, typed by a base table's identifier fields.
#[derive(Clone, Debug)]
pub struct EraseKeys {
    /// Key column names, in key (field-id) order.
    pub names: Vec<String>,
    /// Each key's values, in key order.
    pub values: Vec<Vec<Value>>,
    /// The base table's key shape.
    pub shape: KeyShape,
    /// The key columns' types.
    pub types: Vec<ColumnType>,
}

impl EraseKeys {
    /// Parses `texts`: one value per key for a one-column key; a JSON array of the values
    /// (in `names` order) for a composite key.
    pub fn parse(base: &Schema, texts: &[String]) -> Result<EraseKeys> {
        let shape = KeyShape::from_schema(base)?;
        let mut names = Vec::new();
        let mut types = Vec::new();
        for (id, _) in &shape.fields {
            let field = base.field_by_id(*id).ok_or_else(|| Error::new(ErrorKind::Data, "key field vanished"))?;
            names.push(field.name.clone());
            let ty = match field.field_type.as_ref() {
                iceberg::spec::Type::Primitive(p) => ColumnType::from_iceberg(p),
                _ => None,
            };
            types.push(ty.ok_or_else(|| {
                Error::new(ErrorKind::Data, format!("key column `{}` has a type floe cannot erase by", field.name))
            })?);
        }
        let mut values = Vec::with_capacity(texts.len());
        for text in texts {
            let parts: Vec<String> = match shape.fields.len() {
                1 => vec![text.clone()],
                n => {
                    let parsed: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| {
                        Error::new(
                            ErrorKind::Config,
                            format!(
                                "key `{text}`: the key has {n} columns ({}); give a JSON array: {e}",
                                names.join(", ")
                            ),
                        )
                    })?;
                    if parsed.len() != n {
                        return Err(Error::new(
                            ErrorKind::Config,
                            format!("key `{text}` has {} values; the key has {n} ({})", parsed.len(), names.join(", ")),
                        ));
                    }
                    parsed
                        .into_iter()
                        .map(|v| match v {
                            serde_json::Value::String(s) => s,
                            other => other.to_string(),
                        })
                        .collect()
                }
            };
            let mut key = Vec::with_capacity(parts.len());
            for ((part, (_, ty)), name) in parts.iter().zip(&shape.fields).zip(&names) {
                key.push(typed(part, ty).map_err(|e| {
                    Error::new(
                        ErrorKind::Config,
                        format!("key `{text}`: `{part}` is not a {ty} for column `{name}`: {e}"),
                    )
                })?);
            }
            values.push(key);
        }
        Ok(EraseKeys { names, values, shape, types })
    }

    /// The filter over a table whose key columns are `fields` (by id, in key order).
    pub fn filter(&self, fields: Vec<(i32, DataType)>) -> KeyFilter {
        KeyFilter {
            fields,
            int_keys: self.shape.int_keys,
            keys: self.values.iter().map(|v| IndexKey::of(v)).collect::<HashSet<_>>(),
        }
    }

    /// The filter over the base table.
    pub fn base_filter(&self) -> KeyFilter {
        self.filter(self.shape.fields.clone())
    }

    /// The filter over a CDC table: its columns named like the key.
    pub fn cdc_filter(&self, cdc: &Schema) -> Result<KeyFilter> {
        let arrow = iceberg::arrow::schema_to_arrow_schema(cdc)?;
        let mut fields = Vec::new();
        for name in &self.names {
            let field = cdc
                .field_by_name(name)
                .ok_or_else(|| Error::new(ErrorKind::Data, format!("the CDC table has no key column `{name}`")))?;
            let ty = arrow.field_with_name(name).map(|f| f.data_type().clone()).map_err(|_| {
                Error::new(ErrorKind::Data, format!("the CDC table's column `{name}` has no Arrow type"))
            })?;
            fields.push((field.id, ty));
        }
        Ok(self.filter(fields))
    }

    /// Each key as Iceberg values (what manifest bounds hold), in key order.
    pub fn datums(&self) -> Vec<Vec<Option<Datum>>> {
        self.values
            .iter()
            .map(|key| key.iter().zip(&self.types).map(|(v, ty)| crate::bucket::datum(v, *ty)).collect())
            .collect()
    }

    /// A digest of the keys (SHA-256 over their sorted canonical text), for the audit entry:
    /// it identifies the request without writing the keys into the table's metadata.
    pub fn digest(&self) -> String {
        let mut texts: Vec<String> = self.values.iter().map(|k| format!("{k:?}")).collect();
        texts.sort();
        let mut hasher = sha2::Sha256::new();
        for t in texts {
            hasher.update(t.as_bytes());
            hasher.update(b"\n");
        }
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// `text` as a value of Arrow type `ty`.
fn typed(text: &str, ty: &DataType) -> Result<Value> {
    let strings: ArrayRef = Arc::new(StringArray::from(vec![text]));
    let options = arrow_cast::CastOptions { safe: false, ..Default::default() };
    let cast = arrow_cast::cast_with_options(&strings, ty, &options)
        .map_err(|e| Error::new(ErrorKind::Config, e.to_string()))?;
    if cast.is_null(0) {
        return Err(Error::new(ErrorKind::Config, "a key value cannot be null"));
    }
    value_at(cast.as_ref(), 0)
}

/// What an erasure rewrote in one table.
#[derive(Clone, Debug, Default)]
pub struct Erased {
    /// One bundle per partition rewritten, to commit as `replace` snapshots.
    pub bundles: Vec<RewriteBundle>,
    /// Files that held a row of a key.
    pub files_with_keys: u64,
    /// Rows of the keys dropped (live or deleted ones).
    pub rows: u64,
}

/// Rewrites the files of `target` (its current snapshot) that hold rows of `filter`'s keys:
/// in a base table (`layout` [`Layout::Buckets`]) every partition holding one, whole; in a
/// CDC table each file holding one. Bundles are committed with `epoch`.
#[allow(clippy::too_many_arguments)]
pub async fn erase_table(
    catalog: &dyn TableCatalog,
    dest: Dest,
    target: &Target,
    layout: &Layout,
    filter: &KeyFilter,
    settings: &MaintenanceSettings,
    epoch: Epoch,
    name: &str,
) -> Result<Erased> {
    let (files, target) = at_snapshot(catalog, target).await?;
    let file_io = catalog.file_io();
    let mut out = Erased::default();
    for (n, part) in files.partitions.iter().enumerate() {
        let (hit_data, hit_deletes) = holders(file_io, part, layout, filter).await?;
        out.files_with_keys += (hit_data.len() + hit_deletes.len()) as u64;
        let (inputs, retired): (Vec<&DataFile>, Vec<&DataFile>) = match layout {
            _ if hit_data.is_empty() && hit_deletes.is_empty() => continue,
            Layout::Buckets(_) => {
                (part.data.iter().map(|f| &f.file).collect(), part.deletes.iter().map(|f| &f.file).collect())
            }
            Layout::Cdc => (hit_data, Vec::new()),
        };
        let name = format!("{name}-p{n}");
        let (outputs, bytes_read, rows) =
            rewrite_partition(file_io, &target, part, &inputs, layout, settings, Some(filter), &name).await?;
        out.rows += rows;
        let retired = inputs.iter().chain(&retired).copied();
        out.bundles.push(snapshot_bundle(dest, epoch, &target, files.sequence_number, outputs, retired, bytes_read)?);
    }
    Ok(out)
}

/// The data files of a partition, and (base tables) its equality-delete files, holding a
/// row of a key.
async fn holders<'a>(
    file_io: &iceberg::io::FileIO,
    part: &'a PartitionFiles,
    layout: &Layout,
    filter: &KeyFilter,
) -> Result<(Vec<&'a DataFile>, Vec<&'a DataFile>)> {
    let mut data = Vec::new();
    for f in &part.data {
        if file_holds(file_io, f.file.file_path(), filter).await? > 0 {
            data.push(&f.file);
        }
    }
    let mut deletes = Vec::new();
    if let Layout::Buckets(_) = layout {
        for f in part.deletes.iter().filter(|d| d.file.content_type() == DataContentType::EqualityDeletes) {
            if file_holds(file_io, f.file.file_path(), filter).await? > 0 {
                deletes.push(&f.file);
            }
        }
    }
    Ok((data, deletes))
}

/// How many rows of the Parquet file at `path` hold one of `filter`'s keys (a file without
/// the key columns holds none).
pub async fn file_holds(file_io: &iceberg::io::FileIO, path: &str, filter: &KeyFilter) -> Result<u64> {
    let mut hits = 0;
    for batch in read_columns(file_io, path, &filter.fields).await? {
        if batch.columns().iter().all(|c| c.null_count() == c.len()) {
            continue;
        }
        hits += filter.hits(&batch)?.iter().filter(|h| **h).count() as u64;
    }
    Ok(hits)
}

/// What [`commit_rewrites`] committed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Committed {
    /// Partitions whose rewrite is in the table.
    pub partitions: usize,
    /// Bytes the rewrites read.
    pub bytes_read: u64,
    /// Bytes they wrote.
    pub bytes_written: u64,
}

/// Commits rewrites made at a snapshot (by [`erase_table`] or
/// [`crate::snapshot_rewrite::compact_table`]) where no other commit races them: one
/// `replace` snapshot per bundle, with the data sequence number of the snapshot it read and
/// the parent's offsets.
pub async fn commit_rewrites(
    catalog: &dyn TableCatalog,
    target: &Target,
    pipeline_id: &str,
    epoch: Epoch,
    bundles: Vec<RewriteBundle>,
) -> Result<Committed> {
    let mut out = Committed::default();
    for bundle in bundles {
        let RewriteBase::Sequence(seq) = bundle.base else { continue };
        let mut request = CommitRequest::epoch(target.ident.clone(), pipeline_id, epoch, Default::default());
        request.removed = bundle.removed;
        for f in &bundle.added {
            out.bytes_written += f.bytes;
            request.data_files.push(f.data_file(target)?);
        }
        request.data_sequence_numbers = vec![Some(seq); request.data_files.len()];
        request.rewrite = Some(RewriteCommit { id: bundle.id.clone(), strict: false });
        out.bytes_read += bundle.bytes_read;
        if let CommitOutcome::Committed { .. } | CommitOutcome::AlreadyCommitted { .. } =
            commit(catalog, &request, RetryPolicy::default()).await?
        {
            out.partitions += 1;
        }
    }
    Ok(out)
}

/// The audit of one table's erasure: what was rewritten, expired, deleted and proven.
#[derive(Clone, Debug, Default)]
pub struct Audit {
    /// Expiry and cleanup.
    pub expiry: ExpiryReport,
    /// Unreferenced files holding a key that were deleted (older than the request).
    pub stray_holders: u64,
    /// The proof.
    pub proof: Proof,
    /// The table property it was recorded under.
    pub key: String,
    /// The entry (JSON).
    pub entry: String,
}

/// After a table's rewrites are committed: expires every snapshot but the current one,
/// deletes what they alone referenced (and orphans older than `orphan_min_age`, and
/// unreferenced files holding a key that were written before `requested_ms`), proves that
/// no file under the table's location holds a key, and records the audit entry
/// `floe.erasure.<id>` in the table's properties.
#[allow(clippy::too_many_arguments)]
pub async fn expire_prove_record(
    catalog: &dyn TableCatalog,
    target: &Target,
    keys: &EraseKeys,
    filter: &KeyFilter,
    id: &str,
    erased: Option<(u64, u64)>,
    orphan_min_age: std::time::Duration,
    requested_ms: i64,
) -> Result<Audit> {
    let file_io = catalog.file_io();
    let everything = ExpiryPolicy { keep_snapshots: 1, max_age_ms: 0 };
    let now = chrono::Utc::now().timestamp_millis();
    let expiry = expire_and_clean(catalog, &target.ident, everything, now, true, orphan_min_age).await?;
    // Files nothing references that hold a key, written before the request: a crash's
    // leftovers. (Younger ones may be a commit in flight; the proof reports them.)
    let mut stray_holders = 0;
    if let Some(state) = catalog.load(&target.ident).await? {
        let keep = retained(file_io, &state.metadata, &state.metadata_location, ManifestCache::global()).await?;
        for (path, modified, _) in list_files(std::path::Path::new(local_path(&target.location))) {
            let text = path.to_string_lossy().to_string();
            let modified_ms = modified.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
            if keep.contains(&text) || !text.ends_with(".parquet") || modified_ms >= requested_ms {
                continue;
            }
            if file_holds(file_io, &text, filter).await? > 0 {
                remove(file_io, &text).await?;
                stray_holders += 1;
            }
        }
    }
    floe_engine::faults::point("erase-before-proof");
    let proof = prove_erased(file_io, &target.location, filter, &keys.datums()).await?;
    let entry = serde_json::json!({
        "at_ms": chrono::Utc::now().timestamp_millis(),
        "keys": keys.values.len(),
        "keys_sha256": keys.digest(),
        // Unknown here when the bucket writers rewrote the table (indexed modes).
        "rows_erased": erased.map(|e| e.1),
        "files_rewritten": erased.map(|e| e.0),
        "snapshots_expired": expiry.snapshots_expired,
        "files_deleted": expiry.cleanup.files() + stray_holders,
        "files_scanned": proof.files,
        "rows_found": proof.rows_found,
        "bounds_found": proof.bounds_found,
        "clean": proof.clean(),
    })
    .to_string();
    let key = format!("{PROPERTY_ERASURE_PREFIX}{id}");
    let set = std::collections::HashMap::from([(key.clone(), entry.clone())]);
    commit_metadata(catalog, &target.ident, None, set, &[]).await?;
    Ok(Audit { expiry, stray_holders, proof, key, entry })
}

/// The pipeline id and epoch a table's rewrites made outside an epoch are committed under:
/// those of its last commit.
pub fn last_commit(metadata: &iceberg::spec::TableMetadata, fallback_id: &str) -> Result<(String, u64)> {
    let pipeline_id =
        floe_engine::offsets::committed_progress(metadata)?.map(|p| p.pipeline_id).unwrap_or(fallback_id.to_string());
    let epoch: u64 = metadata
        .current_snapshot()
        .and_then(|s| {
            s.summary().additional_properties.get(floe_engine::offsets::SUMMARY_EPOCH).and_then(|e| e.parse().ok())
        })
        .unwrap_or_default();
    Ok((pipeline_id, epoch))
}

/// Table property prefix of erasure audit entries: `floe.erasure.<id>`.
pub const PROPERTY_ERASURE_PREFIX: &str = "floe.erasure.";

#[cfg(test)]
mod tests {
    use super::*;
    use iceberg::spec::{NestedField, PrimitiveType, Type};

    fn schema(composite: bool) -> Schema {
        let mut fields = vec![
            Arc::new(NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long))),
            Arc::new(NestedField::optional(2, "name", Type::Primitive(PrimitiveType::String))),
        ];
        let mut ids = vec![1];
        if composite {
            fields.push(Arc::new(NestedField::required(3, "region", Type::Primitive(PrimitiveType::String))));
            ids.push(3);
        }
        Schema::builder().with_fields(fields).with_identifier_field_ids(ids).build().expect("schema")
    }

    #[test]
    fn keys_are_typed_by_the_identifier_fields() {
        let keys = EraseKeys::parse(&schema(false), &["42".into(), "7".into()]).expect("keys");
        assert_eq!(keys.values, vec![vec![Value::Long(42)], vec![Value::Long(7)]]);
        assert!(keys.base_filter().keys.contains(&IndexKey::of(&[Value::Long(42)])));
        let composite = EraseKeys::parse(&schema(true), &[r#"[42, "eu"]"#.into()]).expect("keys");
        assert_eq!(composite.names, vec!["id", "region"]);
        assert_eq!(composite.values, vec![vec![Value::Long(42), Value::String("eu".into())]]);
    }

    #[test]
    fn a_bad_key_names_the_value_and_the_column() {
        let e = EraseKeys::parse(&schema(false), &["forty-two".into()]).expect_err("not a long");
        assert!(e.to_string().contains("`forty-two`") && e.to_string().contains("`id`"), "{e}");
        let e = EraseKeys::parse(&schema(true), &["42".into()]).expect_err("composite needs an array");
        assert!(e.to_string().contains("JSON array"), "{e}");
        let e = EraseKeys::parse(&schema(true), &["[42]".into()]).expect_err("one value short");
        assert!(e.to_string().contains("has 1 values"), "{e}");
    }

    #[test]
    fn the_digest_ignores_order_and_hides_the_keys() {
        let a = EraseKeys::parse(&schema(false), &["1".into(), "2".into()]).expect("keys");
        let b = EraseKeys::parse(&schema(false), &["2".into(), "1".into()]).expect("keys");
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.digest().len(), 64);
        assert!(!a.digest().contains("Long"));
    }
}
