//! The reference model (the oracle): what every table must hold after a run.
//!
//! It is driven by the same events the generator emits, applied in source order with
//! plain `BTreeMap` semantics, independently of floe's code paths:
//! - base table: `key → row` (insert/update set the after image, delete removes);
//! - CDC table: one fingerprint per `(partition, offset)`;
//! - dead letters: the `(partition, offset)` of every bad record.
//!
//! # Invariants
//! - Applying the same event twice (a redelivery) leaves the base model unchanged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use floe_engine::schema::TableSchema;
use floe_engine::value::{Row, Value};

/// One change event, as the model applies it.
#[derive(Clone, Debug)]
pub struct Change<'a> {
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// Debezium op (c, u, d, r).
    pub op: &'a str,
    /// `source.ts_ms`.
    pub source_ts_ms: Option<i64>,
    /// Primary-key values.
    pub key: Row,
    /// Before image (what the CDC table records for a delete).
    pub before: Option<&'a Row>,
    /// After image.
    pub after: Option<&'a Row>,
}

/// Expected state of one source table's tables.
#[derive(Clone, Debug)]
pub struct TableModel {
    /// Topic.
    pub topic: String,
    /// Column model floe should create.
    pub schema: TableSchema,
    /// Base table: key → row.
    pub rows: BTreeMap<Row, Row>,
    /// CDC table: (partition, offset) → fingerprint of (op, source ts, image).
    pub cdc: HashMap<(i32, i64), u64>,
    /// The key of each CDC event: what an erasure removes.
    pub cdc_keys: HashMap<(i32, i64), Row>,
    /// Dead letters: (partition, offset).
    pub dead_letters: BTreeSet<(i32, i64)>,
    /// The reason kind of each dead letter (`DeadReason::kind`).
    pub dead_kinds: BTreeMap<(i32, i64), &'static str>,
}

/// A ledger fingerprint: stable across runs and processes, and across schema evolution: an
/// image recorded before columns were added (trailing nulls) or widened (int → long,
/// float → double) has the fingerprint of the same image read back under the new schema.
pub fn fingerprint(op: &str, source_ts_ms: Option<i64>, image: &[Value]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    op.hash(&mut h);
    source_ts_ms.map(|ms| ms * 1000).hash(&mut h);
    let used = image.iter().rposition(|v| !v.is_null()).map_or(0, |p| p + 1);
    for v in &image[..used] {
        match v {
            Value::Int(x) => Value::Long(i64::from(*x)).hash(&mut h),
            Value::Float(x) => Value::Double(ordered_float::OrderedFloat(f64::from(x.0))).hash(&mut h),
            other => other.hash(&mut h),
        }
    }
    h.finish()
}

impl TableModel {
    /// An empty model for a table.
    pub fn new(topic: &str, schema: TableSchema) -> TableModel {
        TableModel {
            topic: topic.to_string(),
            schema,
            rows: BTreeMap::new(),
            cdc: HashMap::new(),
            cdc_keys: HashMap::new(),
            dead_letters: BTreeSet::new(),
            dead_kinds: BTreeMap::new(),
        }
    }

    /// Applies a change event.
    pub fn apply(&mut self, change: Change<'_>) {
        let Change { partition, offset, op, source_ts_ms, key, before, after } = change;
        self.cdc_keys.insert((partition, offset), key.clone());
        match after {
            Some(row) if op != "d" => {
                self.rows.insert(key, row.clone());
            }
            _ => {
                self.rows.remove(&key);
            }
        }
        let image: &[Value] = after.or(before).map(|r| &r.0[..]).unwrap_or(&[]);
        self.cdc.insert((partition, offset), fingerprint(op, source_ts_ms, image));
    }

    /// Forgets every row and event of `keys` (a compliance erasure).
    pub fn erase(&mut self, keys: &BTreeSet<Row>) {
        self.rows.retain(|k, _| !keys.contains(k));
        let gone: Vec<(i32, i64)> =
            self.cdc_keys.iter().filter(|(_, k)| keys.contains(*k)).map(|(at, _)| *at).collect();
        for at in gone {
            self.cdc.remove(&at);
            self.cdc_keys.remove(&at);
        }
    }

    /// Records a bad record, and the kind of reason it must be given.
    pub fn dead_letter(&mut self, partition: i32, offset: i64, kind: &'static str) {
        self.dead_letters.insert((partition, offset));
        self.dead_kinds.insert((partition, offset), kind);
    }
}

/// Expected state of every table of a workload.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// One model per source table.
    pub tables: Vec<TableModel>,
}

impl Model {
    /// The model of a topic.
    pub fn table(&self, topic: &str) -> Option<&TableModel> {
        self.tables.iter().find(|t| t.topic == topic)
    }

    /// Events applied in total.
    pub fn events(&self) -> usize {
        self.tables.iter().map(|t| t.cdc.len()).sum()
    }
}
