//! The health half of `floe status`: what each table costs its readers and its catalog,
//! and when maintenance last ran.
//!
//! # Invariants
//! - Read from the table's current metadata and snapshot only (no data file is opened):
//!   counts and sizes come from manifest entries, the metadata size from the current
//!   metadata file.
//! - Read amplification is delete entries per live row: position-delete rows and
//!   deletion-vector cardinalities count one per deleted row, equality-delete rows one per
//!   key (each applies to every older row of the bucket, so the real cost is higher).

use std::fmt::Write;

use floe_engine::catalog::TableState;
use floe_engine::error::Result;
use floe_engine::expiry::{PROPERTY_LAST_CLEANUP, PROPERTY_LAST_EXPIRY};
use floe_engine::manifests::ManifestCache;
use floe_engine::metrics::human_bytes;
use floe_engine::table_files::snapshot_files;
use iceberg::io::FileIO;
use iceberg::spec::DataContentType;

/// One table's figures.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Health {
    /// The table.
    pub table: String,
    /// Live data files.
    pub data_files: u64,
    /// Live delete files (deletion vectors count per data file they cover).
    pub delete_files: u64,
    /// Bytes of live data and delete files.
    pub bytes: u64,
    /// Snapshots the metadata holds.
    pub snapshots: u64,
    /// Size of the current metadata file.
    pub metadata_bytes: u64,
    /// Rows in live data files, before deletes.
    pub rows: u64,
    /// Delete entries (position rows, vector cardinalities, equality keys).
    pub delete_entries: u64,
    /// When the last compaction was committed (ms since the epoch).
    pub last_compaction_ms: Option<i64>,
    /// When the last expiry was committed.
    pub last_expiry_ms: Option<i64>,
    /// When the last cleanup removed files.
    pub last_cleanup_ms: Option<i64>,
}

impl Health {
    /// Delete entries per live row.
    pub fn read_amplification(&self) -> f64 {
        let live = self.rows.saturating_sub(self.delete_entries).max(1);
        self.delete_entries as f64 / live as f64
    }
}

/// The figures of `state`.
pub async fn health(file_io: &FileIO, state: &TableState) -> Result<Health> {
    let m = &state.metadata;
    let mut h = Health {
        table: state.ident.to_string(),
        snapshots: m.snapshots().len() as u64,
        metadata_bytes: file_io.new_input(&state.metadata_location)?.metadata().await?.size,
        ..Default::default()
    };
    let files = snapshot_files(file_io, m, ManifestCache::global()).await?;
    for part in &files.partitions {
        for d in &part.data {
            h.data_files += 1;
            h.rows += d.file.record_count();
            h.bytes += d.file.file_size_in_bytes();
        }
        for d in &part.deletes {
            h.delete_files += 1;
            h.delete_entries += d.file.record_count();
            if d.file.content_type() != DataContentType::PositionDeletes || d.file.content_offset().is_none() {
                h.bytes += d.file.file_size_in_bytes();
            } else {
                h.bytes += d.file.content_size_in_bytes().unwrap_or_default() as u64;
            }
        }
    }
    h.last_compaction_ms = m
        .snapshots()
        .filter(|s| s.summary().additional_properties.contains_key(floe_engine::commit::SUMMARY_REWRITE_ID))
        .map(|s| s.timestamp_ms())
        .max();
    let at = |key: &str| {
        m.properties()
            .get(key)
            .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
            .and_then(|v| v.get("at_ms").and_then(|a| a.as_i64()))
    };
    h.last_expiry_ms = at(PROPERTY_LAST_EXPIRY);
    h.last_cleanup_ms = at(PROPERTY_LAST_CLEANUP);
    Ok(h)
}

/// `ms` as "12s ago", "3.5h ago", or "never".
fn ago(ms: Option<i64>, now_ms: i64) -> String {
    let Some(ms) = ms else { return "never".into() };
    let s = (now_ms - ms).max(0) as f64 / 1000.0;
    match s {
        s if s < 120.0 => format!("{s:.0}s ago"),
        s if s < 7200.0 => format!("{:.0}m ago", s / 60.0),
        s if s < 172_800.0 => format!("{:.1}h ago", s / 3600.0),
        s => format!("{:.1}d ago", s / 86400.0),
    }
}

/// The table of figures, one line per table.
pub fn render(tables: &[Health], now_ms: i64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:>10} {:>12} {:>10} {:>9} {:>10} {:>12} {:>14} {:>14} {:>14}",
        "table",
        "data files",
        "delete files",
        "bytes",
        "snapshots",
        "metadata",
        "deletes/row",
        "compacted",
        "expired",
        "cleaned"
    );
    for h in tables {
        let _ = writeln!(
            out,
            "{:<28} {:>10} {:>12} {:>10} {:>9} {:>10} {:>12.4} {:>14} {:>14} {:>14}",
            h.table,
            h.data_files,
            h.delete_files,
            human_bytes(h.bytes),
            h.snapshots,
            human_bytes(h.metadata_bytes),
            h.read_amplification(),
            ago(h.last_compaction_ms, now_ms),
            ago(h.last_expiry_ms, now_ms),
            ago(h.last_cleanup_ms, now_ms),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_amplification_is_entries_per_live_row() {
        let h = Health { rows: 1200, delete_entries: 200, ..Default::default() };
        assert!((h.read_amplification() - 0.2).abs() < 1e-9);
        assert_eq!(Health::default().read_amplification(), 0.0);
        let text = render(&[h], 0);
        assert!(text.contains("0.2000"), "{text}");
        assert!(text.contains("never"), "{text}");
    }
}
