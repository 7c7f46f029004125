//! Source progress: the next offset to read per topic-partition, and how it is recorded in
//! (and recovered from) Iceberg snapshot summaries.
//!
//! Every snapshot floe commits carries, in its summary:
//!
//! | key                 | value                                                        |
//! |---------------------|--------------------------------------------------------------|
//! | `floe.pipeline-id`  | the pipeline that wrote it                                   |
//! | `floe.offsets`      | `{"topic": {"partition": next_offset, ...}, ...}` (JSON)     |
//! | `floe.epoch`        | the epoch number inside the run that committed it            |
//! | `floe.format`       | version of this summary layout (`1`)                         |
//!
//! # Invariants
//! - `floe.offsets` is cumulative: the newest floe snapshot alone says where to resume,
//!   for every partition the table has ever consumed.
//! - A record at `(topic, partition, offset)` is in a table iff `offset < next_offset`
//!   recorded by the table's newest floe snapshot (exactly-once).

use std::collections::BTreeMap;

use iceberg::spec::TableMetadata;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// Summary key holding the pipeline id.
pub const SUMMARY_PIPELINE_ID: &str = "floe.pipeline-id";
/// Summary key holding the offsets JSON.
pub const SUMMARY_OFFSETS: &str = "floe.offsets";
/// Summary key holding the epoch.
pub const SUMMARY_EPOCH: &str = "floe.epoch";
/// Summary key holding the summary layout version.
pub const SUMMARY_FORMAT: &str = "floe.format";
/// Current summary layout version.
pub const SUMMARY_FORMAT_VERSION: &str = "1";

/// Next offset to read, per topic and partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceOffsets(pub BTreeMap<String, BTreeMap<i32, i64>>);

impl SourceOffsets {
    /// The next offset for a partition, if any was recorded.
    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.0.get(topic).and_then(|p| p.get(&partition)).copied()
    }

    /// Records `next` for a partition, keeping the larger value.
    pub fn advance(&mut self, topic: &str, partition: i32, next: i64) {
        let slot = self.0.entry(topic.to_string()).or_default().entry(partition).or_insert(next);
        if *slot < next {
            *slot = next;
        }
    }

    /// Merges another progress map, keeping the larger offset per partition.
    pub fn merge(&mut self, other: &SourceOffsets) {
        for (topic, parts) in &other.0 {
            for (&p, &o) in parts {
                self.advance(topic, p, o);
            }
        }
    }

    /// Whether this progress is at or beyond `other` on every partition `other` names.
    pub fn covers(&self, other: &SourceOffsets) -> bool {
        other
            .0
            .iter()
            .all(|(topic, parts)| parts.iter().all(|(&p, &o)| self.get(topic, p).is_some_and(|mine| mine >= o)))
    }

    /// The subset for the given topics.
    pub fn restrict<'a>(&self, topics: impl IntoIterator<Item = &'a str>) -> SourceOffsets {
        let mut out = SourceOffsets::default();
        for t in topics {
            if let Some(parts) = self.0.get(t) {
                out.0.insert(t.to_string(), parts.clone());
            }
        }
        out
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.0.values().all(|p| p.is_empty())
    }

    /// JSON form stored under [`SUMMARY_OFFSETS`].
    pub fn to_json(&self) -> String {
        // Partition keys become JSON strings; serde_json handles integer map keys.
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_string())
    }

    /// Parses the JSON form.
    pub fn from_json(text: &str) -> Result<SourceOffsets> {
        serde_json::from_str(text).map(SourceOffsets).map_err(|e| {
            Error::new(ErrorKind::Data, format!("unreadable {SUMMARY_OFFSETS} in snapshot summary")).with_source(e)
        })
    }
}

/// What the newest floe snapshot of a table says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedProgress {
    /// The pipeline that wrote it.
    pub pipeline_id: String,
    /// Resume offsets.
    pub offsets: SourceOffsets,
    /// Snapshot id that recorded them.
    pub snapshot_id: i64,
}

/// Walks the current snapshot's ancestry and returns the newest floe progress, if any.
///
/// Snapshots written by other tools (compaction, a Spark job) carry no floe keys and are
/// skipped, so maintenance never hides a pipeline's progress.
pub fn committed_progress(metadata: &TableMetadata) -> Result<Option<CommittedProgress>> {
    let mut next = metadata.current_snapshot_id();
    while let Some(id) = next {
        let Some(snapshot) = metadata.snapshot_by_id(id) else { break };
        let props = &snapshot.summary().additional_properties;
        if let (Some(pipeline), Some(offsets)) = (props.get(SUMMARY_PIPELINE_ID), props.get(SUMMARY_OFFSETS)) {
            return Ok(Some(CommittedProgress {
                pipeline_id: pipeline.clone(),
                offsets: SourceOffsets::from_json(offsets)?,
                snapshot_id: id,
            }));
        }
        next = snapshot.parent_snapshot_id();
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_cover() {
        let mut a = SourceOffsets::default();
        a.advance("t", 0, 10);
        a.advance("t", 1, 5);
        a.advance("t", 1, 3);
        assert_eq!(a.get("t", 1), Some(5));
        let text = a.to_json();
        assert_eq!(text, r#"{"t":{"0":10,"1":5}}"#);
        let b = SourceOffsets::from_json(&text).expect("parse");
        assert_eq!(a, b);
        let mut c = SourceOffsets::default();
        c.advance("t", 0, 10);
        assert!(a.covers(&c));
        c.advance("t", 2, 1);
        assert!(!a.covers(&c));
    }
}
