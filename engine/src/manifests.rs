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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use iceberg::io::FileIO;
use iceberg::spec::{
    DataFile, DataFileBuilder, FormatVersion, Manifest, ManifestContentType, ManifestEntry, ManifestFile,
    ManifestWriter, ManifestWriterBuilder, PartitionSpec, SchemaRef,
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
        let manifest = Arc::new(file.load_manifest(file_io).await?);
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
}

impl ManifestTarget<'_> {
    /// A writer for a manifest holding entries of `like` (same schema, spec and content).
    fn rewriter(&self, name: &str, like: &Manifest) -> Result<ManifestWriter> {
        let meta = like.metadata();
        self.writer(name, Arc::clone(meta.schema()), meta.partition_spec().clone(), *meta.content())
    }

    fn writer(
        &self,
        name: &str,
        schema: SchemaRef,
        spec: PartitionSpec,
        content: ManifestContentType,
    ) -> Result<ManifestWriter> {
        let path = format!("{}/{}-{name}.avro", self.metadata_dir, self.prefix);
        let builder = ManifestWriterBuilder::new(self.file_io.new_output(&path)?, Some(self.snapshot_id), schema, spec);
        Ok(match (self.format_version, content) {
            (FormatVersion::V3, ManifestContentType::Data) => builder.build_v3_data(),
            (FormatVersion::V3, ManifestContentType::Deletes) => builder.build_v3_deletes(),
            (_, ManifestContentType::Data) => builder.build_v2_data(),
            (_, ManifestContentType::Deletes) => builder.build_v2_deletes(),
        })
    }

    /// A new manifest of `files`; each with its data sequence number, or `None` to inherit
    /// the snapshot's.
    pub async fn write_new(
        &self,
        name: &str,
        schema: SchemaRef,
        spec: PartitionSpec,
        content: ManifestContentType,
        files: Vec<(DataFile, Option<i64>)>,
    ) -> Result<Option<ManifestFile>> {
        if files.is_empty() {
            return Ok(None);
        }
        let mut writer = self.writer(name, schema, spec, content)?;
        for (file, seq) in files {
            writer.add_file(file, seq.unwrap_or(-1))?;
        }
        Ok(Some(writer.write_manifest_file().await?))
    }
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
        // The newest schema among them: every entry's bounds are of fields it knows.
        let Some((_, template)) = group.iter().max_by_key(|(_, m)| m.metadata().schema().schema_id()) else {
            continue;
        };
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
                    writer.add_delete_file(
                        without_metrics(&data_file, file.partition_spec_id)?,
                        seq,
                        Some(file_seq),
                    )?;
                } else {
                    add_existing(&mut writer, &entry, data_file, file.added_snapshot_id)?;
                }
            }
        }
        out.manifests.push(writer.write_manifest_file().await?);
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
        // The newest schema among them: every entry's bounds are of fields it knows.
        let Some(template) = loaded.iter().max_by_key(|m| m.metadata().schema().schema_id()) else { continue };
        // One file per kind: data and delete manifests of a spec must not share a name.
        let kind = if data { "data" } else { "deletes" };
        let mut writer = target.rewriter(&format!("merged-{kind}-{spec}"), template)?;
        for (file, manifest) in merge.iter().zip(&loaded) {
            for (entry, data_file) in with_row_ids(file, manifest)? {
                add_existing(&mut writer, &entry, data_file, file.added_snapshot_id)?;
            }
        }
        out.push(writer.write_manifest_file().await?);
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

fn add_existing(writer: &mut ManifestWriter, entry: &ManifestEntry, file: DataFile, added_by: i64) -> Result<()> {
    let (seq, file_seq) = sequence_numbers(entry)?;
    writer.add_existing_file(file, entry.snapshot_id().unwrap_or(added_by), seq, Some(file_seq))?;
    Ok(())
}

/// `file` without its column metrics (sizes, counts, bounds): what a DELETED entry keeps.
/// `spec_id` is the partition spec of the manifest that lists it.
pub fn without_metrics(file: &DataFile, spec_id: i32) -> Result<DataFile> {
    rebuild(file, file.first_row_id(), spec_id, false)
}

/// `file` with an explicit `first_row_id` (the struct's fields are crate-private upstream).
fn with_first_row_id(file: &DataFile, first_row_id: i64, spec_id: i32) -> Result<DataFile> {
    rebuild(file, Some(first_row_id), spec_id, true)
}

fn rebuild(file: &DataFile, first_row_id: Option<i64>, spec_id: i32, metrics: bool) -> Result<DataFile> {
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
    if metrics {
        b.column_sizes(file.column_sizes().clone())
            .value_counts(file.value_counts().clone())
            .null_value_counts(file.null_value_counts().clone())
            .nan_value_counts(file.nan_value_counts().clone())
            .lower_bounds(file.lower_bounds().clone())
            .upper_bounds(file.upper_bounds().clone());
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
