//! Per-table write and maintenance settings of a `[[tables]]` entry: how the base table
//! names the rows it deletes, and when floe compacts it.
//!
//! ```toml
//! [[tables]]
//! topic = "shop.inventory.orders"
//! base = "base.orders"
//! deletes = "position"          # default; or "vector" (Iceberg v3), "equality"
//!
//! [tables.maintenance]
//! compaction = true             # default
//! target_file_size = "128MiB"   # files a rewrite writes
//! max_data_files = 3            # per bucket: more data files than this starts a rewrite
//! max_delete_files = 1          # per data file; equality mode: 2 per bucket (more: a rewrite)
//! max_delete_ratio = 0.2        # a data file with this share of its rows deleted is rewritten
//! cdc_max_files = 16            # per CDC partition: more small files than this are merged
//! expiry = true                 # expire snapshots (then clean up files) every `expire_every` commits
//! keep_snapshots = 5            # never fewer than this many
//! snapshot_max_age = "24h"      # older snapshots beyond keep_snapshots are expired
//! expire_every = 16             # commits of the table between two expiry runs
//! cleanup = true                # delete files no retained snapshot references
//! orphan_min_age = "1h"         # unreferenced files younger than this are left (commits in flight)
//! ```
//!
//! # Invariants
//! - Every value is validated here, and an invalid one is an error naming the key
//!   (`tables[0].maintenance.max_data_files`); unknown keys are errors.
//! - The defaults keep a base table's read cost flat: every bucket holds at most
//!   `max_data_files` data files (a few more while a rewrite runs), each with at most
//!   `max_delete_files` delete files.

use serde::Deserialize;

/// How a base table records that a row was replaced or deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeleteMode {
    /// Iceberg v2 position-delete files naming `(file_path, pos)` of exact rows, found through
    /// floe's key index. Every engine reads them cheaply.
    #[default]
    Position,
    /// Iceberg v3 deletion vectors (Puffin `deletion-vector-v1`), one per data file, merged
    /// with that file's earlier vector. The table is format version 3.
    Vector,
    /// Equality deletes on the primary key: the cheapest write, the most expensive read.
    Equality,
}

impl DeleteMode {
    /// Parses the setting's value.
    pub fn parse(text: &str) -> Option<DeleteMode> {
        match text {
            "position" => Some(DeleteMode::Position),
            "vector" => Some(DeleteMode::Vector),
            "equality" => Some(DeleteMode::Equality),
            _ => None,
        }
    }

    /// The setting's value.
    pub fn name(self) -> &'static str {
        match self {
            DeleteMode::Position => "position",
            DeleteMode::Vector => "vector",
            DeleteMode::Equality => "equality",
        }
    }

    /// Whether the mode names exact rows (and so needs the key index).
    pub fn uses_index(self) -> bool {
        !matches!(self, DeleteMode::Equality)
    }
}

impl std::fmt::Display for DeleteMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `[tables.maintenance]`: when floe rewrites a table's files.
#[derive(Clone, Debug, PartialEq)]
pub struct MaintenanceSettings {
    /// Whether `floe run` compacts at all (`floe maintain` always does).
    pub compaction: bool,
    /// Size of the files a rewrite writes, in bytes (compressed Parquet).
    pub target_file_size: u64,
    /// Per bucket: more data files than this start a rewrite of the small ones.
    pub max_data_files: usize,
    /// Position mode: per data file, more position-delete files than this are merged
    /// (size-tiered) into the next one; equality mode: per bucket, more equality-delete
    /// files than this start a rewrite of the bucket.
    pub max_delete_files: usize,
    /// A data file with at least this share of its rows deleted is rewritten.
    pub max_delete_ratio: f64,
    /// Per CDC table partition: more small files than this are merged.
    pub cdc_max_files: usize,
    /// Whether `floe run` expires snapshots.
    pub expiry: bool,
    /// Snapshots kept whatever their age.
    pub keep_snapshots: usize,
    /// Snapshots younger than this are kept.
    pub snapshot_max_age: std::time::Duration,
    /// Commits of a table between two expiry runs.
    pub expire_every: usize,
    /// Whether expiry is followed by deleting unreferenced files.
    pub cleanup: bool,
    /// Unreferenced files younger than this are not orphans yet.
    pub orphan_min_age: std::time::Duration,
}

impl Default for MaintenanceSettings {
    fn default() -> Self {
        MaintenanceSettings {
            compaction: true,
            target_file_size: 128 << 20,
            max_data_files: 3,
            max_delete_files: 1,
            max_delete_ratio: 0.2,
            cdc_max_files: 16,
            expiry: true,
            keep_snapshots: 5,
            snapshot_max_age: std::time::Duration::from_secs(24 * 3600),
            expire_every: 16,
            cleanup: true,
            orphan_min_age: std::time::Duration::from_secs(3600),
        }
    }
}

impl MaintenanceSettings {
    /// The defaults for a table in `mode`: one position-delete file per data file (its
    /// positions are merged each epoch, as a deletion vector is, so a reader opens one delete
    /// file per data file), two equality-delete files per bucket (a third starts a rewrite).
    pub fn for_mode(mode: DeleteMode) -> Self {
        let max_delete_files = match mode {
            DeleteMode::Position | DeleteMode::Vector => 1,
            DeleteMode::Equality => 2,
        };
        MaintenanceSettings { max_delete_files, ..MaintenanceSettings::default() }
    }

    /// A data file smaller than this is "small": a candidate for merging.
    pub fn small_file_size(&self) -> u64 {
        self.target_file_size / 4 * 3
    }
}

/// `[tables.maintenance]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMaintenance {
    compaction: Option<bool>,
    target_file_size: Option<Size>,
    max_data_files: Option<i64>,
    max_delete_files: Option<i64>,
    max_delete_ratio: Option<f64>,
    cdc_max_files: Option<i64>,
    expiry: Option<bool>,
    keep_snapshots: Option<i64>,
    snapshot_max_age: Option<String>,
    expire_every: Option<i64>,
    cleanup: Option<bool>,
    orphan_min_age: Option<String>,
}

/// A size: bytes, or a string such as `"128MiB"`, `"64 MB"`, `"1g"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(i64),
    Text(String),
}

/// Parses `"128MiB"`, `"64 MB"`, `"1g"`, `"4096"` (units are powers of 1024).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    (number >= 0.0).then_some((number * scale as f64) as u64)
}

/// Parses `"24h"`, `"90m"`, `"30s"`, `"7d"`, `"500ms"`, `"0s"`.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" => 0.001,
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return None,
    };
    (number >= 0.0).then(|| std::time::Duration::from_secs_f64(number * seconds))
}

impl RawMaintenance {
    /// Validates; `err(key, message)` builds the error for a key under the table's path.
    pub(crate) fn validate<E>(
        self,
        mode: DeleteMode,
        err: impl Fn(&str, String) -> E,
    ) -> Result<MaintenanceSettings, E> {
        let d = MaintenanceSettings::for_mode(mode);
        let count = |key: &str, v: Option<i64>, default: usize, min: i64| -> Result<usize, E> {
            match v {
                None => Ok(default),
                Some(n) if n >= min => Ok(n as usize),
                Some(n) => Err(err(key, format!("{n} is too small (at least {min})"))),
            }
        };
        let target_file_size = match self.target_file_size {
            None => d.target_file_size,
            Some(Size::Bytes(n)) if n >= 1 << 20 => n as u64,
            Some(Size::Bytes(n)) => return Err(err("target_file_size", format!("{n} bytes is below 1 MiB"))),
            Some(Size::Text(t)) => match parse_size(&t) {
                Some(n) if n >= 1 << 20 => n,
                Some(_) => return Err(err("target_file_size", format!("`{t}` is below 1 MiB"))),
                None => {
                    return Err(err("target_file_size", format!("`{t}` is not a size (e.g. \"128MiB\", \"1g\")")));
                }
            },
        };
        let max_delete_ratio = match self.max_delete_ratio {
            None => d.max_delete_ratio,
            Some(r) if r > 0.0 && r <= 1.0 => r,
            Some(r) => return Err(err("max_delete_ratio", format!("{r} is not in (0, 1]"))),
        };
        let duration = |key: &str, v: Option<String>, default| match v {
            None => Ok(default),
            Some(t) => parse_duration(&t)
                .ok_or_else(|| err(key, format!("`{t}` is not a duration (e.g. \"24h\", \"30m\", \"10s\")"))),
        };
        Ok(MaintenanceSettings {
            expiry: self.expiry.unwrap_or(d.expiry),
            keep_snapshots: count("keep_snapshots", self.keep_snapshots, d.keep_snapshots, 1)?,
            snapshot_max_age: duration("snapshot_max_age", self.snapshot_max_age, d.snapshot_max_age)?,
            expire_every: count("expire_every", self.expire_every, d.expire_every, 1)?,
            cleanup: self.cleanup.unwrap_or(d.cleanup),
            orphan_min_age: duration("orphan_min_age", self.orphan_min_age, d.orphan_min_age)?,
            compaction: self.compaction.unwrap_or(d.compaction),
            target_file_size,
            max_data_files: count("max_data_files", self.max_data_files, d.max_data_files, 1)?,
            max_delete_files: count("max_delete_files", self.max_delete_files, d.max_delete_files, 0)?,
            max_delete_ratio,
            cdc_max_files: count("cdc_max_files", self.cdc_max_files, d.cdc_max_files, 1)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("128MiB"), Some(128 << 20));
        assert_eq!(parse_size("64 MB"), Some(64 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1.5k"), Some(1536));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("12 parsecs"), None);
    }

    #[test]
    fn modes_round_trip_their_names() {
        for m in [DeleteMode::Position, DeleteMode::Vector, DeleteMode::Equality] {
            assert_eq!(DeleteMode::parse(m.name()), Some(m));
        }
        assert_eq!(DeleteMode::default(), DeleteMode::Position);
        assert_eq!(DeleteMode::parse("soft"), None);
    }

    #[test]
    fn durations_parse_with_units() {
        use std::time::Duration;
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("24"), None, "a unit is required");
        assert_eq!(parse_duration("soon"), None);
        let err = |k: &str, m: String| format!("{k}: {m}");
        let raw = RawMaintenance { snapshot_max_age: Some("a day".into()), ..Default::default() };
        assert!(raw.validate(DeleteMode::Position, err).expect_err("age").starts_with("snapshot_max_age"));
        let raw = RawMaintenance { keep_snapshots: Some(0), ..Default::default() };
        assert!(raw.validate(DeleteMode::Position, err).expect_err("keep").starts_with("keep_snapshots"));
    }

    #[test]
    fn invalid_values_name_their_key() {
        let err = |k: &str, m: String| format!("{k}: {m}");
        let raw = RawMaintenance { max_delete_ratio: Some(1.5), ..Default::default() };
        assert!(raw.validate(DeleteMode::Position, err).expect_err("ratio").starts_with("max_delete_ratio"));
        let raw = RawMaintenance { target_file_size: Some(Size::Text("10k".into())), ..Default::default() };
        assert!(raw.validate(DeleteMode::Position, err).expect_err("size").contains("below 1 MiB"));
        let raw = RawMaintenance { max_data_files: Some(0), ..Default::default() };
        assert!(raw.validate(DeleteMode::Position, err).expect_err("files").starts_with("max_data_files"));
        let ok = RawMaintenance::default().validate(DeleteMode::Position, err).expect("defaults");
        assert_eq!(ok, MaintenanceSettings::default());
        let equality = RawMaintenance::default().validate(DeleteMode::Equality, err).expect("defaults");
        assert_eq!(equality.max_delete_files, 2);
        let set = RawMaintenance { max_delete_files: Some(4), ..Default::default() };
        assert_eq!(set.validate(DeleteMode::Equality, err).expect("set").max_delete_files, 4);
    }
}
