//! The source boundary: what every source (replay log, Kafka) hands to the dataflow.
//!
//! # Invariants
//! - `table` indexes the pipeline's `[[tables]]` list (one topic per entry); sources drop
//!   records of topics the pipeline does not consume.
//! - Within one `(table, partition)`, a source emits records in offset order.
//! - `key` and `value` are the exact bytes the broker holds (`None` for a null key or a
//!   tombstone).

use serde::{Deserialize, Serialize};

/// One Kafka record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// Index of the table (topic) in the pipeline config.
    pub table: u32,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// Record key bytes.
    pub key: Option<Vec<u8>>,
    /// Record value bytes; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
}
