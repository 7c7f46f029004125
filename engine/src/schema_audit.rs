//! The durable record of schema changes, kept in the table's own metadata so that it commits
//! atomically with the change and survives snapshot expiry:
//!
//! ```text
//!   floe.schema-history   JSON array of AuditEntry, oldest first (every applied change)
//!   floe.schema-pending   JSON PendingChange (a table paused by a change awaiting approval)
//!   floe.retired-columns  comma-separated columns kept after the source dropped them
//! ```
//!
//! Spark shows them with `SHOW TBLPROPERTIES`; `floe schema history` prints them.
//!
//! # Invariants
//! - An entry is identified by where its change first showed (topic, partition, offset)
//!   and what changed; merging the same entry twice (a retried or replayed commit) keeps one.
//! - The history is append-only: entries are never rewritten or dropped.

use std::collections::{BTreeSet, HashMap};

use iceberg::spec::TableMetadata;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::schema_drift::{Change, SchemaPolicy};

/// Table property: the history.
pub const HISTORY_PROPERTY: &str = "floe.schema-history";
/// Table property: the change a paused table waits on.
pub const PENDING_PROPERTY: &str = "floe.schema-pending";
/// Table property: retired columns.
pub const RETIRED_PROPERTY: &str = "floe.retired-columns";

/// Where a schema change first showed, and how it was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstSeen {
    /// Topic of the first record that carried it (or was checked).
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// `push` (a record carried it), `pull` (the newest record, checked at start) or
    /// `declared` (the pipeline file's columns).
    pub detected: String,
    /// When floe noticed, ms since the epoch.
    pub at_ms: i64,
}

/// One applied schema change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Schema id before.
    pub old_schema_id: i32,
    /// Schema id after.
    pub new_schema_id: i32,
    /// What changed.
    pub changes: Vec<Change>,
    /// Topic of the first record that carried the change (or was checked).
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// `push`, `pull` or `declared`.
    pub detected: String,
    /// When floe noticed, ms since the epoch.
    pub detected_at_ms: i64,
    /// When the change was committed, ms since the epoch.
    pub applied_at_ms: i64,
    /// `automatic (additive)`, `automatic (lenient)` or `approved by USER`.
    pub approval: String,
}

impl AuditEntry {
    /// The record of `changes`, first seen at `first`, approved as `approval`. Schema ids and
    /// the time it was applied are filled in by the commit that applies it.
    pub fn new(changes: Vec<Change>, first: &FirstSeen, approval: String) -> AuditEntry {
        AuditEntry {
            old_schema_id: 0,
            new_schema_id: 0,
            changes,
            topic: first.topic.clone(),
            partition: first.partition,
            offset: first.offset,
            detected: first.detected.clone(),
            detected_at_ms: first.at_ms,
            applied_at_ms: 0,
            approval,
        }
    }

    fn identity(&self) -> (&str, i32, i64, &[Change]) {
        (&self.topic, self.partition, self.offset, &self.changes)
    }
}

/// A change a paused table waits on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChange {
    /// What changed.
    pub changes: Vec<Change>,
    /// Topic of the first record that carried it.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// When floe noticed, ms since the epoch.
    pub detected_at_ms: i64,
    /// The table's policy when it paused.
    pub policy: String,
}

impl PendingChange {
    /// A change first seen at `first`, pausing a table under `policy`.
    pub fn new(changes: Vec<Change>, first: &FirstSeen, policy: SchemaPolicy) -> PendingChange {
        PendingChange {
            changes,
            topic: first.topic.clone(),
            partition: first.partition,
            offset: first.offset,
            detected_at_ms: first.at_ms,
            policy: policy.name().to_string(),
        }
    }

    /// Where the change first showed.
    pub fn first_seen(&self) -> FirstSeen {
        FirstSeen {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            detected: "push".into(),
            at_ms: self.detected_at_ms,
        }
    }
}

/// The history recorded in `metadata`.
pub fn history(metadata: &TableMetadata) -> Result<Vec<AuditEntry>> {
    match metadata.properties().get(HISTORY_PROPERTY) {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            Error::new(ErrorKind::Data, format!("unreadable `{HISTORY_PROPERTY}` property")).with_source(e)
        }),
    }
}

/// The pending change recorded in `metadata`.
pub fn pending(metadata: &TableMetadata) -> Result<Option<PendingChange>> {
    match metadata.properties().get(PENDING_PROPERTY) {
        None => Ok(None),
        Some(text) => serde_json::from_str(text).map(Some).map_err(|e| {
            Error::new(ErrorKind::Data, format!("unreadable `{PENDING_PROPERTY}` property")).with_source(e)
        }),
    }
}

/// The retired columns recorded in `metadata`.
pub fn retired(metadata: &TableMetadata) -> BTreeSet<String> {
    retired_from(metadata.properties())
}

/// The retired columns in a property map.
pub fn retired_from(properties: &HashMap<String, String>) -> BTreeSet<String> {
    properties
        .get(RETIRED_PROPERTY)
        .map(|v| v.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

/// `history` with `new` appended, skipping entries already present.
pub fn merged(mut history: Vec<AuditEntry>, new: &[AuditEntry]) -> Vec<AuditEntry> {
    for entry in new {
        if !history.iter().any(|h| h.identity() == entry.identity()) {
            history.push(entry.clone());
        }
    }
    history
}

/// The property value for a history.
pub fn history_json(history: &[AuditEntry]) -> String {
    serde_json::to_string(history).unwrap_or_else(|_| "[]".into())
}

/// The property value for retired columns.
pub fn retired_value(retired: &BTreeSet<String>) -> String {
    retired.iter().cloned().collect::<Vec<_>>().join(",")
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ColumnType;

    fn entry(offset: i64) -> AuditEntry {
        AuditEntry {
            old_schema_id: 0,
            new_schema_id: 1,
            changes: vec![Change::AddColumn { name: "x".into(), ty: ColumnType::Int }],
            topic: "t".into(),
            partition: 0,
            offset,
            detected: "push".into(),
            detected_at_ms: 1,
            applied_at_ms: 2,
            approval: "automatic (additive)".into(),
        }
    }

    #[test]
    fn merging_is_idempotent_and_append_only() {
        let h = merged(Vec::new(), &[entry(5)]);
        let mut again = entry(5);
        again.applied_at_ms = 99; // a retried commit
        let h = merged(h, &[again, entry(9)]);
        assert_eq!(h.iter().map(|e| e.offset).collect::<Vec<_>>(), vec![5, 9]);
        assert_eq!(h[0].applied_at_ms, 2);
        let back: Vec<AuditEntry> = serde_json::from_str(&history_json(&h)).expect("json");
        assert_eq!(back, h);
    }
}
