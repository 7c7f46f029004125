//! The source boundary: what every source (replay log, Kafka) hands to the dataflow.
//!
//! # Invariants
//! - `table` indexes the pipeline's `[[tables]]` list (one topic per entry); sources drop
//!   records of topics the pipeline does not consume.
//! - Within one `(table, partition)`, a source emits records in offset order.
//! - `key` and `value` are the exact bytes the broker holds (`None` for a null key or a
//!   tombstone), except that a source may split off a prefix shared by many records
//!   (`key_prefix`/`value_prefix`, e.g. a Debezium schema): the value is then
//!   `value_prefix ++ value`, and likewise for the key.

use std::borrow::Cow;
use std::sync::Arc;

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
    /// Record key bytes (after `key_prefix`, if any).
    pub key: Option<Vec<u8>>,
    /// A prefix of the key shared with other records of the same source.
    pub key_prefix: Option<Arc<[u8]>>,
    /// Record value bytes (after `value_prefix`, if any); `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// A prefix of the value shared with other records of the same source.
    pub value_prefix: Option<Arc<[u8]>>,
}

impl SourceRecord {
    /// A record whose value is contiguous.
    pub fn new(table: u32, partition: i32, offset: i64, key: Option<Vec<u8>>, value: Option<Vec<u8>>) -> SourceRecord {
        SourceRecord { table, partition, offset, key, key_prefix: None, value, value_prefix: None }
    }

    /// The whole key.
    pub fn key_bytes(&self) -> Option<Cow<'_, [u8]>> {
        join(&self.key_prefix, self.key.as_deref())
    }

    /// The whole value.
    pub fn value_bytes(&self) -> Option<Cow<'_, [u8]>> {
        join(&self.value_prefix, self.value.as_deref())
    }

    /// The whole key and value, owned.
    pub fn into_parts(self) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let own = |prefix: Option<Arc<[u8]>>, tail: Option<Vec<u8>>| {
            let tail = tail?;
            Some(match prefix {
                None => tail,
                Some(p) => [&p[..], &tail[..]].concat(),
            })
        };
        (own(self.key_prefix, self.key), own(self.value_prefix, self.value))
    }
}

fn join<'a>(prefix: &Option<Arc<[u8]>>, tail: Option<&'a [u8]>) -> Option<Cow<'a, [u8]>> {
    let tail = tail?;
    Some(match prefix {
        None => Cow::Borrowed(tail),
        Some(p) => Cow::Owned([&p[..], tail].concat()),
    })
}
