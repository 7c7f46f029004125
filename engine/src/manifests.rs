//! The manifests of a new snapshot: those a commit adds, and those it rewrites because they
//! list files the commit retires.
//!
//! ```text
//!   parent's manifest list ──┬─ lists no retired file ──────────────► carried as is
//!                            ├─ lists a retired file ──► rewritten, all such manifests of a
//!                            │                           kind into one: retired → DELETED,
//!                            │                           other live entries → EXISTING
//!                            └─ lists no live file (only DELETED) ──► dropped
//!   added data files ──► new data manifest (inherited or explicit data sequence number)
//!   added delete files ──► new delete manifest (inherited sequence number)
//!   more than MERGE_AFTER manifests of a kind ──► the small ones merged into one
//! ```
//!
//! # Invariants
//! - A rewritten entry keeps its snapshot id, data sequence number and file sequence
//!   number, so the spec's delete rules see the same file after the rewrite as before.
//! - An entry is identified by [`FileRef`]: its path, and for a deletion vector also the
//!   blob's offset (many vectors share one Puffin file).
//! - Manifests are immutable, so [`ManifestCache`] may keep parsed ones for as long as it
//!   likes; it forgets everything when it grows past its bound.
//! - Every manifest a commit writes, new, rewritten or merged, is written under the schema
//!   the snapshot carries, with that schema's id ([`ManifestTarget::schema`]). Schemas
//!   only grow (additive changes, promotions), so it covers every entry moved into it.
//!   (Choosing the newest of the inputs' schemas by id went wrong: manifests written with
//!   a schema change carried id 0, so an int-typed input could win and long bounds were
//!   listed under it, which no reader can parse.)
//! - Every bound a manifest holds is of its schema's type for that field. A file written
//!   before a promotion (int → long, float → double, a wider decimal) keeps bounds of the
//!   narrower type; an entry moved or added under the wider schema has them promoted
//!   ([`fit_bounds`]). Java and iceberg-rust widen a 4-byte long bound when they read one,
//!   but a bound the width of its manifest's type is what every reader expects.
//! - The opposite, a bound wider than the manifest's type (a long listed under an int
//!   schema), cannot be read at all; it is prevented upstream: a snapshot never lists a
//!   file written under a schema newer than its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use iceberg::io::FileIO;
use iceberg::spec::{
    DataFile, DataFileBuilder, Datum, FormatVersion, Manifest, ManifestContentType, ManifestEntry, ManifestFile,
    ManifestWriter, ManifestWriterBuilder, PartitionSpec, PrimitiveLiteral, PrimitiveType, Schema, SchemaRef, Type,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// One file entry of a table: a data or delete file, and for a deletion vector which blob.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileRef {
    /// The file's path.
    pub path: String,
    /// A deletion vector's blob offset in its Puffin file.
    pub content_offset: Option<i64>,
}

impl FileRef {
    /// The entry of `file`.
    pub fn of(file: &DataFile) -> FileRef {
        FileRef { path: file.file_path().to_string(), content_offset: file.content_offset() }
    }

    /// A plain file (data, position or equality deletes) by path.
    pub fn path(path: impl Into<String>) -> FileRef {
        FileRef { path: path.into(), content_offset: None }
    }
}

impl std::fmt::Display for FileRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.content_offset {
            Some(o) => write!(f, "{}@{o}", self.path),
            None => f.write_str(&self.path),
        }
    }
}

/// Parsed manifests by path, shared by every commit of the process.
#[derive(Debug)]
pub struct ManifestCache {
    map: Mutex<(HashMap<String, Arc<Manifest>>, usize)>,
    max_entries: usize,
}

impl ManifestCache {
    /// A cache holding up to about `max_entries` manifest entries.
    pub fn new(max_entries: usize) -> ManifestCache {
        ManifestCache { map: Mutex::new((HashMap::new(), 0)), max_entries }
    }

    /// The process's cache: 200,000 entries. An entry with column metrics for a dozen
    /// columns takes one to two KB, so a million (the earlier bound) held gigabytes in a
    /// long run; this holds a few hundred MB at most.
    pub fn global() -> &'static ManifestCache {
        static CACHE: std::sync::OnceLock<ManifestCache> = std::sync::OnceLock::new();
        CACHE.get_or_init(|| ManifestCache::new(200_000))
    }

    /// The manifest `file` names, parsed (with inherited sequence numbers filled in).
    pub async fn load(&self, file_io: &FileIO, file: &ManifestFile) -> Result<Arc<Manifest>> {
        if let Some(m) = self.lock().0.get(&file.manifest_path) {
            return Ok(Arc::clone(m));
        }
        let manifest = Arc::new(
            file.load_manifest(file_io)
                .await
                .map_err(|e| Error::from(e).context(format!("reading manifest {}", file.manifest_path)))?,
        );
        let mut guard = self.lock();
        let (map, entries) = &mut *guard;
        if *entries + manifest.entries().len() > self.max_entries {
            map.clear();
            *entries = 0;
        }
        *entries += manifest.entries().len();
        map.insert(file.manifest_path.clone(), Arc::clone(&manifest));
        Ok(manifest)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, Arc<Manifest>>, usize)> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The parent's manifests after retiring files.
#[derive(Debug, Default)]
pub struct Retired {
    /// The manifests the new snapshot lists (carried and rewritten).
    pub manifests: Vec<ManifestFile>,
    /// The entries retired, as they were.
    pub removed: Vec<ManifestEntry>,
    /// Refs asked for that no live entry matches.
    pub missing: Vec<FileRef>,
}

/// Where a commit writes its manifests, and under which snapshot.
#[derive(Clone, Debug)]
pub struct ManifestTarget<'a> {
    /// File access.
    pub file_io: &'a FileIO,
    /// `<table location>/metadata`.
    pub metadata_dir: String,
    /// Unique per commit attempt, e.g. `<commit uuid>-<attempt>`.
    pub prefix: String,
    /// The snapshot being built.
    pub snapshot_id: i64,
    /// The table's format version.
    pub format_version: FormatVersion,
    /// The schema the snapshot carries, with its id: every manifest the commit writes is
    /// written under it (new ones, rewritten ones and merged ones alike).
    pub schema: SchemaRef,
}

impl ManifestTarget<'_> {
    /// A writer for a manifest holding entries of `like` (same spec and content).
    fn rewriter(&self, name: &str, like: &Manifest) -> Result<EntryWriter> {
        let meta = like.metadata();
        self.writer(name, meta.partition_spec().clone(), *meta.content())
    }

    fn writer(&self, name: &str, spec: PartitionSpec, content: ManifestContentType) -> Result<EntryWriter> {
        let schema = Arc::clone(&self.schema);
        let path = format!("{}/{}-{name}.avro", self.metadata_dir, self.prefix);
        let spec_id = spec.spec_id();
        let builder = ManifestWriterBuilder::new(
            self.file_io.new_output(&path)?,
            Some(self.snapshot_id),
            Arc::clone(&schema),
            spec,
        );
        let inner = match (self.format_version, content) {
            (FormatVersion::V3, ManifestContentType::Data) => builder.build_v3_data(),
            (FormatVersion::V3, ManifestContentType::Deletes) => builder.build_v3_deletes(),
            (_, ManifestContentType::Data) => builder.build_v2_data(),
            (_, ManifestContentType::Deletes) => builder.build_v2_deletes(),
        };
        Ok(EntryWriter { inner, schema, spec_id })
    }

    /// A new manifest of `files`; each with its data sequence number, or `None` to inherit
    /// the snapshot's.
    pub async fn write_new(
        &self,
        name: &str,
        spec: PartitionSpec,
        content: ManifestContentType,
        files: Vec<(DataFile, Option<i64>)>,
    ) -> Result<Option<ManifestFile>> {
        if files.is_empty() {
            return Ok(None);
        }
        let mut writer = self.writer(name, spec, content)?;
        for (file, seq) in files {
            writer.add_file(file, seq.unwrap_or(-1))?;
        }
        Ok(Some(writer.finish().await?))
    }
}

/// A manifest writer that fits every entry's bounds to the manifest's schema.
struct EntryWriter {
    inner: ManifestWriter,
    schema: SchemaRef,
    spec_id: i32,
}

impl EntryWriter {
    fn add_file(&mut self, file: DataFile, seq: i64) -> Result<()> {
        let file = fit_bounds(file, &self.schema, self.spec_id)?;
        Ok(self.inner.add_file(file, seq)?)
    }

    fn add_existing_file(&mut self, file: DataFile, snapshot_id: i64, seq: i64, file_seq: i64) -> Result<()> {
        let file = fit_bounds(file, &self.schema, self.spec_id)?;
        Ok(self.inner.add_existing_file(file, snapshot_id, seq, Some(file_seq))?)
    }

    /// A DELETED entry: it keeps no metrics, so there is nothing to fit.
    fn add_delete_file(&mut self, file: DataFile, seq: i64, file_seq: i64) -> Result<()> {
        Ok(self.inner.add_delete_file(file, seq, Some(file_seq))?)
    }

    async fn finish(self) -> Result<ManifestFile> {
        Ok(self.inner.write_manifest_file().await?)
    }
}

/// `file` with each bound of the type `schema` gives its field: a bound of a narrower type
/// (written before a promotion) is promoted. Unchanged, and not copied, when every bound
/// already fits; bounds of fields `schema` does not know are left as they are.
pub fn fit_bounds(file: DataFile, schema: &Schema, spec_id: i32) -> Result<DataFile> {
    let promoted = |id: &i32, d: &Datum| -> Option<Datum> {
        let Type::Primitive(want) = schema.field_by_id(*id)?.field_type.as_ref() else { return None };
        if d.data_type() == want {
            return None;
        }
        match (d.literal(), want) {
            (PrimitiveLiteral::Int(v), PrimitiveType::Long) => Some(Datum::long(*v)),
            (PrimitiveLiteral::Float(v), PrimitiveType::Double) => Some(Datum::double(f64::from(v.0))),
            (PrimitiveLiteral::Int128(_), PrimitiveType::Decimal { .. }) => {
                d.clone().to(&Type::Primitive(want.clone())).ok()
            }
            _ => None,
        }
    };
    let fits = |bounds: &HashMap<i32, Datum>| bounds.iter().all(|(id, d)| promoted(id, d).is_none());
    if fits(file.lower_bounds()) && fits(file.upper_bounds()) {
        return Ok(file);
    }
    let fit = |bounds: &HashMap<i32, Datum>| -> HashMap<i32, Datum> {
        bounds.iter().map(|(id, d)| (*id, promoted(id, d).unwrap_or_else(|| d.clone()))).collect()
    };
    let (lower, upper) = (fit(file.lower_bounds()), fit(file.upper_bounds()));
    rebuild(&file, file.first_row_id(), spec_id, Some((lower, upper)))
}

/// A kind of manifest: whether it lists data files, and its partition spec id.
type ManifestKind = (bool, i32);

/// Retires `refs` from the parent's manifests (see the module docs). With nothing to
/// retire, no manifest is read. The manifests that list a retired file are rewritten
/// together, one manifest per kind (content and partition spec), not one per manifest: an
/// epoch that retires the delete files of the last few epochs then writes one file, and the
/// next commit has one to read.
pub async fn retire(
    target: &ManifestTarget<'_>,
    parent: Vec<ManifestFile>,
    refs: &BTreeSet<FileRef>,
    cache: &ManifestCache,
) -> Result<Retired> {
    let mut out = Retired::default();
    let mut hit: BTreeMap<ManifestKind, Vec<(ManifestFile, Arc<Manifest>)>> = BTreeMap::new();
    for file in parent {
        let live = file.added_files_count.unwrap_or(1) + file.existing_files_count.unwrap_or(1);
        if live == 0 {
            // Only DELETED entries: they belonged to the parent's snapshot.
            continue;
        }
        if refs.is_empty() {
            out.manifests.push(file);
            continue;
        }
        let manifest = cache.load(target.file_io, &file).await?;
        if manifest.entries().iter().any(|e| e.is_alive() && refs.contains(&FileRef::of(e.data_file()))) {
            hit.entry((file.content == ManifestContentType::Data, file.partition_spec_id))
                .or_default()
                .push((file, manifest));
        } else {
            out.manifests.push(file);
        }
    }
    let mut found: BTreeSet<FileRef> = BTreeSet::new();
    for ((data, spec), group) in hit {
        let Some((_, template)) = group.first() else { continue };
        let kind = if data { "data" } else { "deletes" };
        let mut writer = target.rewriter(&format!("retired-{kind}-{spec}"), template)?;
        for (file, manifest) in &group {
            for (entry, data_file) in with_row_ids(file, manifest)? {
                if refs.contains(&FileRef::of(entry.data_file())) {
                    found.insert(FileRef::of(entry.data_file()));
                    out.removed.push((*entry).clone());
                    let (seq, file_seq) = sequence_numbers(&entry)?;
                    // A DELETED entry keeps no column metrics: no reader plans with it, and
                    // its bounds would keep values of rows an erasure removed.
                    writer.add_delete_file(without_metrics(&data_file, file.partition_spec_id)?, seq, file_seq)?;
                } else {
                    add_existing(&mut writer, &entry, data_file, file.added_snapshot_id)?;
                }
            }
        }
        out.manifests.push(writer.finish().await?);
    }
    out.missing = refs.iter().filter(|r| !found.contains(*r)).cloned().collect();
    Ok(out)
}

/// How many manifests of one kind (content and partition spec) a snapshot may list before
/// its small ones are merged.
pub const MERGE_AFTER: usize = 16;
/// Manifests at least this large are left alone by merging.
pub const MERGE_TARGET_BYTES: i64 = 8 << 20;

/// Merges the small manifests of each kind (data or deletes, and partition spec) once there
/// are more than `MERGE_AFTER` of it, as Iceberg's own commits do, so a reader plans over a
/// bounded number of manifests however many commits ran; size-tiered, so an entry is
/// rewritten a logarithmic number of times. Entries keep their snapshot ids
/// and sequence numbers (they become EXISTING); DELETED entries of earlier snapshots go.
/// Manifests this snapshot added (its own entries) are not merged.
pub async fn merge_small(
    target: &ManifestTarget<'_>,
    manifests: Vec<ManifestFile>,
    cache: &ManifestCache,
) -> Result<Vec<ManifestFile>> {
    let mut groups: BTreeMap<(bool, i32), Vec<ManifestFile>> = BTreeMap::new();
    for m in manifests {
        groups.entry((m.content == ManifestContentType::Data, m.partition_spec_id)).or_default().push(m);
    }
    let mergeable =
        |m: &ManifestFile| m.manifest_length < MERGE_TARGET_BYTES && m.added_snapshot_id != target.snapshot_id;
    let mut out = Vec::new();
    for ((data, spec), group) in groups {
        if group.len() <= MERGE_AFTER || group.iter().filter(|m| mergeable(m)).count() < 2 {
            out.extend(group);
            continue;
        }
        let (mut merge, keep): (Vec<ManifestFile>, Vec<ManifestFile>) = group.into_iter().partition(|m| mergeable(m));
        out.extend(keep);
        // Size-tiered: a manifest four times the size of the smaller ones together stays,
        // so an entry is rewritten a logarithmic number of times.
        merge.sort_by_key(|m| std::cmp::Reverse(m.manifest_length));
        while merge.len() >= 2 {
            let rest: i64 = merge[1..].iter().map(|m| m.manifest_length).sum();
            if merge[0].manifest_length < 4 * rest {
                break;
            }
            out.push(merge.remove(0));
        }
        if merge.len() < 2 {
            out.extend(merge);
            continue;
        }
        let mut loaded = Vec::with_capacity(merge.len());
        for file in &merge {
            loaded.push(cache.load(target.file_io, file).await?);
        }
        let Some(template) = loaded.first() else { continue };
        // One file per kind: data and delete manifests of a spec must not share a name.
        let kind = if data { "data" } else { "deletes" };
        let mut writer = target.rewriter(&format!("merged-{kind}-{spec}"), template)?;
        for (file, manifest) in merge.iter().zip(&loaded) {
            for (entry, data_file) in with_row_ids(file, manifest)? {
                add_existing(&mut writer, &entry, data_file, file.added_snapshot_id)?;
            }
        }
        out.push(writer.finish().await?);
    }
    Ok(out)
}

/// A manifest's live entries, each with its data file carrying an explicit first_row_id
/// when the manifest assigns row ids by inheritance (v3 row lineage: a data file without
/// its own inherits the manifest's, advanced by the rows of the live files before it; the
/// value must be written out before the entry moves to another manifest).
fn with_row_ids(file: &ManifestFile, manifest: &Manifest) -> Result<Vec<(Arc<ManifestEntry>, DataFile)>> {
    let mut next_row_id = file.first_row_id;
    let mut out = Vec::with_capacity(manifest.entries().len());
    for entry in manifest.entries() {
        if !entry.is_alive() {
            continue;
        }
        let mut data_file = entry.data_file().clone();
        if let Some(next) = next_row_id.as_mut()
            && file.content == ManifestContentType::Data
            && data_file.first_row_id().is_none()
        {
            data_file = with_first_row_id(&data_file, *next as i64, file.partition_spec_id)?;
            *next += data_file.record_count();
        }
        out.push((Arc::clone(entry), data_file));
    }
    Ok(out)
}

fn add_existing(writer: &mut EntryWriter, entry: &ManifestEntry, file: DataFile, added_by: i64) -> Result<()> {
    let (seq, file_seq) = sequence_numbers(entry)?;
    writer.add_existing_file(file, entry.snapshot_id().unwrap_or(added_by), seq, file_seq)
}

/// `file` without its column metrics (sizes, counts, bounds): what a DELETED entry keeps.
/// `spec_id` is the partition spec of the manifest that lists it.
pub fn without_metrics(file: &DataFile, spec_id: i32) -> Result<DataFile> {
    rebuild(file, file.first_row_id(), spec_id, None)
}

/// The bounds a rebuilt file gets: (lower, upper).
type Bounds = (HashMap<i32, Datum>, HashMap<i32, Datum>);

/// `file` with an explicit `first_row_id` (the struct's fields are crate-private upstream).
fn with_first_row_id(file: &DataFile, first_row_id: i64, spec_id: i32) -> Result<DataFile> {
    let bounds = (file.lower_bounds().clone(), file.upper_bounds().clone());
    rebuild(file, Some(first_row_id), spec_id, Some(bounds))
}

/// `file` with `first_row_id` and `spec_id`; with its metrics and these bounds, or without
/// metrics when `bounds` is `None`.
fn rebuild(file: &DataFile, first_row_id: Option<i64>, spec_id: i32, bounds: Option<Bounds>) -> Result<DataFile> {
    let mut b = DataFileBuilder::default();
    b.content(file.content_type())
        .file_path(file.file_path().to_string())
        .file_format(file.file_format())
        .partition(file.partition().clone())
        .record_count(file.record_count())
        .file_size_in_bytes(file.file_size_in_bytes())
        .key_metadata(file.key_metadata().map(<[u8]>::to_vec))
        .split_offsets(file.split_offsets().map(<[i64]>::to_vec))
        .equality_ids(file.equality_ids())
        .first_row_id(first_row_id)
        .partition_spec_id(spec_id)
        .referenced_data_file(file.referenced_data_file())
        .content_offset(file.content_offset())
        .content_size_in_bytes(file.content_size_in_bytes());
    if let Some((lower, upper)) = bounds {
        b.column_sizes(file.column_sizes().clone())
            .value_counts(file.value_counts().clone())
            .null_value_counts(file.null_value_counts().clone())
            .nan_value_counts(file.nan_value_counts().clone())
            .lower_bounds(lower)
            .upper_bounds(upper);
    }
    if let Some(id) = file.sort_order_id() {
        b.sort_order_id(id);
    }
    b.build().map_err(|e| Error::new(ErrorKind::Internal, format!("rebuilding {}: {e}", file.file_path())))
}

fn sequence_numbers(entry: &ManifestEntry) -> Result<(i64, i64)> {
    let seq = entry
        .sequence_number()
        .ok_or_else(|| Error::new(ErrorKind::Iceberg, format!("{} has no data sequence number", entry.file_path())))?;
    Ok((seq, entry.file_sequence_number.unwrap_or(seq)))
}

/// Every live entry of a snapshot's manifests (data and deletes).
pub async fn live_entries(
    file_io: &FileIO,
    manifests: &[ManifestFile],
    cache: &ManifestCache,
) -> Result<Vec<Arc<ManifestEntry>>> {
    let mut out = Vec::new();
    for file in manifests {
        let manifest = cache.load(file_io, file).await?;
        out.extend(manifest.entries().iter().filter(|e| e.is_alive()).cloned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use iceberg::io::{FileIOBuilder, MemoryStorageFactory};
    use iceberg::spec::{DataContentType, DataFileFormat, NestedField, Struct};

    use super::*;

    fn schema(id: i32, qty: PrimitiveType) -> SchemaRef {
        Arc::new(
            Schema::builder()
                .with_schema_id(id)
                .with_fields(vec![
                    Arc::new(NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long))),
                    Arc::new(NestedField::optional(2, "qty", Type::Primitive(qty))),
                    Arc::new(NestedField::optional(3, "price", Type::Primitive(PrimitiveType::Float))),
                ])
                .build()
                .expect("schema"),
        )
    }

    fn file(name: &str, qty: Datum, price: Datum) -> DataFile {
        let bounds = HashMap::from([(1, Datum::long(7)), (2, qty), (3, price)]);
        DataFileBuilder::default()
            .content(DataContentType::Data)
            .file_path(format!("memory:///t/data/{name}.parquet"))
            .file_format(DataFileFormat::Parquet)
            .partition(Struct::empty())
            .record_count(1)
            .file_size_in_bytes(10)
            .lower_bounds(bounds.clone())
            .upper_bounds(bounds)
            .build()
            .expect("file")
    }

    /// Manifests of two schema versions (`qty` int, then long) that both lose a file are
    /// rewritten as one, under the snapshot's schema: the long bound beyond the int range
    /// reads back, and the int file's bounds are promoted. Both input manifests say schema
    /// id 0, as manifests written with a schema change used to, and the int one comes last:
    /// picking "the newest input schema by id" chose the int schema here, and the rewritten
    /// manifest could not be read ("failed to convert byte slice to array").
    #[tokio::test]
    async fn manifests_of_two_schema_versions_are_rewritten_under_the_snapshots_schema() {
        let io = FileIOBuilder::new(Arc::new(MemoryStorageFactory)).build();
        let (v0, v1_unnumbered, v1) =
            (schema(0, PrimitiveType::Int), schema(0, PrimitiveType::Long), schema(1, PrimitiveType::Long));
        let spec = PartitionSpec::unpartition_spec();
        let target = |prefix: &str, snapshot_id, schema: &SchemaRef| ManifestTarget {
            file_io: &io,
            metadata_dir: "memory:///t/metadata".into(),
            prefix: prefix.into(),
            snapshot_id,
            format_version: FormatVersion::V2,
            schema: Arc::clone(schema),
        };
        let old = file("old", Datum::int(3), Datum::float(1.5));
        let gone = file("gone", Datum::int(4), Datum::float(1.5));
        let new = file("new", Datum::long(5_000_000_000_i64), Datum::float(2.5));
        let gone2 = file("gone2", Datum::long(4), Datum::float(1.5));
        let m0 = target("a", 1, &v0)
            .write_new("m", spec.clone(), ManifestContentType::Data, vec![(old, Some(1)), (gone, Some(1))])
            .await
            .expect("write v0")
            .expect("manifest");
        let m1 = target("b", 2, &v1_unnumbered)
            .write_new("m", spec.clone(), ManifestContentType::Data, vec![(new, Some(2)), (gone2, Some(2))])
            .await
            .expect("write v1")
            .expect("manifest");
        let cache = ManifestCache::new(1000);
        let refs = BTreeSet::from([
            FileRef::path("memory:///t/data/gone.parquet"),
            FileRef::path("memory:///t/data/gone2.parquet"),
        ]);
        let retired = retire(&target("c", 3, &v1), vec![m1, m0], &refs, &cache).await.expect("retire");
        assert_eq!(retired.manifests.len(), 1, "{:?}", retired.manifests);
        let manifest = retired.manifests[0].load_manifest(&io).await.expect("the rewritten manifest reads back");
        assert_eq!(manifest.metadata().schema().schema_id(), 1, "the snapshot's schema, by its id");
        let live = |name: &str| {
            let path = format!("memory:///t/data/{name}.parquet");
            let entry = manifest.entries().iter().find(|e| e.is_alive() && e.file_path() == path);
            entry.unwrap_or_else(|| panic!("{name} stays live")).data_file().clone()
        };
        assert_eq!(live("old").lower_bounds().get(&2), Some(&Datum::long(3)));
        assert_eq!(live("old").upper_bounds().get(&3), Some(&Datum::float(1.5)), "float stays float");
        assert_eq!(live("new").upper_bounds().get(&2), Some(&Datum::long(5_000_000_000_i64)));
        assert_eq!(manifest.entries().iter().filter(|e| !e.is_alive()).count(), 2, "two retired");
    }

    #[test]
    fn bounds_that_fit_are_left_alone_and_promotions_widen() {
        let v1 = schema(1, PrimitiveType::Long);
        let f = file("x", Datum::long(3), Datum::float(1.0));
        assert_eq!(fit_bounds(f.clone(), &v1, 0).expect("fit"), f);
        let doubles = Arc::new(
            Schema::builder()
                .with_fields(vec![Arc::new(NestedField::optional(3, "price", Type::Primitive(PrimitiveType::Double)))])
                .build()
                .expect("schema"),
        );
        let fit = fit_bounds(file("y", Datum::int(1), Datum::float(1.5)), &doubles, 0).expect("fit");
        assert_eq!(fit.lower_bounds().get(&3), Some(&Datum::double(1.5)));
        assert_eq!(fit.lower_bounds().get(&2), Some(&Datum::int(1)), "a field the schema lacks is left alone");
    }
}
