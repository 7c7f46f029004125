//! File cleanup: deletes what no retained snapshot references.
//!
//! Two kinds of garbage:
//! - **Known**: the files the snapshots an expiry removed could reach (manifest lists,
//!   manifests, data and delete files) and no retained snapshot reaches. They are deleted at
//!   once: no reader planning from the current metadata can reach them.
//! - **Orphans**: files under the table's `data/` and `metadata/` folders that nothing
//!   references (left by a crash between writing and committing, or by an expiry whose
//!   cleanup did not run). They are deleted only once older than the safety window, so a
//!   commit still in flight (its files written, its snapshot not yet swapped in) keeps its
//!   files.
//!
//! # Invariants
//! - Never deleted: the current metadata file, the metadata files its log lists, and every
//!   file any snapshot of the current metadata references (each snapshot's manifest list,
//!   its manifests and their live entries: data files, delete files, deletion-vector
//!   Puffin files), statistics files.
//! - A metadata file that fell off the metadata log is garbage once older than the oldest
//!   logged one; other unreferenced files are orphans (safety window).
//! - The metadata the caller passes must be the table's current one: cleanup runs where no
//!   commit races it (the table's one committer, or `floe maintain` under the writer lease).
//! - Only local (`file:`) warehouses are listed for orphans; on object storage only the
//!   known garbage is deleted (`FileIO` cannot list).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use iceberg::io::FileIO;
use iceberg::spec::{ManifestList, ManifestStatus, SnapshotRef, TableMetadata};

use crate::error::Result;
use crate::manifests::ManifestCache;

/// What a cleanup removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CleanupReport {
    /// Files only expired snapshots referenced.
    pub expired_files: u64,
    /// Unreferenced files older than the safety window.
    pub orphans: u64,
    /// Metadata files that fell off the metadata log.
    pub metadata_files: u64,
    /// Bytes freed.
    pub bytes: u64,
}

impl CleanupReport {
    /// Files removed in all.
    pub fn files(&self) -> u64 {
        self.expired_files + self.orphans + self.metadata_files
    }
}

/// A file path as a local path: `file:` prefixes dropped.
pub fn local_path(path: &str) -> &str {
    path.strip_prefix("file://").or_else(|| path.strip_prefix("file:")).unwrap_or(path)
}

/// Every file the `snapshots` of `metadata` reference: manifest lists, manifests and their
/// live entries' files (local form, see [`local_path`]).
pub async fn reachable(
    file_io: &FileIO,
    metadata: &TableMetadata,
    snapshots: &[SnapshotRef],
    cache: &ManifestCache,
) -> Result<HashSet<String>> {
    let mut out = HashSet::new();
    let mut manifests_seen = HashSet::new();
    for snapshot in snapshots {
        let list_path = snapshot.manifest_list();
        if !out.insert(local_path(list_path).to_string()) {
            continue;
        }
        let bytes = match file_io.new_input(list_path)?.read().await {
            Ok(bytes) => bytes,
            // A list a crashed cleanup already removed: its files are orphans now.
            Err(_) if !file_io.exists(list_path).await.unwrap_or(true) => continue,
            Err(e) => return Err(e.into()),
        };
        let list = ManifestList::parse_with_version(&bytes, metadata.format_version())?;
        for m in list.entries() {
            if !manifests_seen.insert(m.manifest_path.clone()) {
                continue;
            }
            out.insert(local_path(&m.manifest_path).to_string());
            let manifest = cache.load(file_io, m).await?;
            for entry in manifest.entries() {
                if entry.status() != ManifestStatus::Deleted {
                    out.insert(local_path(entry.file_path()).to_string());
                }
            }
        }
    }
    Ok(out)
}

/// Everything the current table keeps: metadata files, statistics and every file a
/// snapshot of it reaches.
pub async fn retained(
    file_io: &FileIO,
    metadata: &TableMetadata,
    metadata_location: &str,
    cache: &ManifestCache,
) -> Result<HashSet<String>> {
    let all: Vec<SnapshotRef> = metadata.snapshots().cloned().collect();
    let mut keep = reachable(file_io, metadata, &all, cache).await?;
    keep.insert(local_path(metadata_location).to_string());
    keep.extend(metadata.metadata_log().iter().map(|l| local_path(&l.metadata_file).to_string()));
    keep.extend(metadata.statistics_iter().map(|s| local_path(&s.statistics_path).to_string()));
    keep.extend(metadata.partition_statistics_iter().map(|s| local_path(&s.statistics_path).to_string()));
    Ok(keep)
}

/// Deletes the garbage of `table` (current metadata `metadata` at `metadata_location`):
/// what the snapshots `expired_from` listed and `metadata` no longer does could reach,
/// and, in a local warehouse, unreferenced files older than `orphan_age`.
pub async fn cleanup(
    file_io: &FileIO,
    metadata: &TableMetadata,
    metadata_location: &str,
    expired_from: Option<&TableMetadata>,
    orphan_age: Duration,
) -> Result<CleanupReport> {
    let cache = ManifestCache::global();
    let keep = retained(file_io, metadata, metadata_location, cache).await?;
    let mut report = CleanupReport::default();
    if let Some(before) = expired_from {
        let gone: Vec<SnapshotRef> =
            before.snapshots().filter(|s| metadata.snapshot_by_id(s.snapshot_id()).is_none()).cloned().collect();
        let known = reachable(file_io, before, &gone, cache).await?;
        let mut known: Vec<String> = known.into_iter().filter(|p| !keep.contains(p)).collect();
        known.sort();
        for path in known {
            report.bytes += remove(file_io, &path).await?;
            report.expired_files += 1;
            if report.expired_files == 1 {
                crate::faults::point("cleanup-midway");
            }
        }
    }
    let location = local_path(metadata.location());
    if metadata.location().contains("://") && !metadata.location().starts_with("file:") {
        return Ok(report);
    }
    let oldest_logged = metadata
        .metadata_log()
        .iter()
        .map(|l| l.timestamp_ms)
        .min()
        .unwrap_or(i64::MAX)
        .min(metadata.last_updated_ms());
    let now = SystemTime::now();
    for dir in ["data", "metadata"] {
        for (path, modified, len) in list_files(&Path::new(location).join(dir)) {
            let text = path.to_string_lossy().to_string();
            if keep.contains(&text) {
                continue;
            }
            let age = now.duration_since(modified).unwrap_or_default();
            let modified_ms = modified.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
            if dir == "metadata" && text.ends_with(".metadata.json") && modified_ms < oldest_logged {
                report.bytes += remove_local(&path, len)?;
                report.metadata_files += 1;
            } else if age >= orphan_age {
                report.bytes += remove_local(&path, len)?;
                report.orphans += 1;
            }
        }
    }
    Ok(report)
}

/// Deletes `path` (a local file directly, anything else through `file_io`); its length.
pub async fn remove(file_io: &FileIO, path: &str) -> Result<u64> {
    let local = Path::new(local_path(path));
    if local.is_absolute() {
        let len = std::fs::metadata(local).map(|m| m.len()).unwrap_or(0);
        return remove_local(local, len);
    }
    file_io.delete(path).await?;
    Ok(0)
}

fn remove_local(path: &Path, len: u64) -> Result<u64> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(len),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => {
            Err(crate::error::Error::new(crate::error::ErrorKind::Io, format!("removing {}: {e}", path.display())))
        }
    }
}

/// Regular files below `dir`, recursively and sorted, with their modification time and
/// length (nothing for a folder that does not exist).
pub fn list_files(dir: &Path) -> Vec<(PathBuf, SystemTime, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                out.push((e.path(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len()));
            }
        }
    }
    out.sort();
    out
}
