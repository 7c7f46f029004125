//! The seeded workload generator: a deterministic stream of Debezium change events over
//! the [`crate::tables`] tables, with the reference model updated as events are emitted.
//!
//! A workload includes, by construction:
//! - an initial snapshot (`r`), then inserts, updates and deletes;
//! - re-inserts of deleted keys, and bursts of updates to a few hot keys (many changes of
//!   one key inside one epoch);
//! - composite keys, NULLs, unicode, every mapped type;
//! - tombstones after deletes, updates without a before image, and redelivered events;
//! - optionally, bad records (unparseable JSON, unknown ops, values that do not fit).
//!
//! # Invariants
//! - Same spec and seed ⇒ byte-identical records and the same model.
//! - A key always maps to the same partition, so per-key order is offset order.

use std::collections::{HashMap, VecDeque};

use indexmap::IndexMap;

use floe_engine::value::{Row, Value};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value as Json, json};

use crate::columns::{GenColumn, GenType};
use crate::model::{Change, Model, TableModel};
use crate::tables::GenTable;

/// One Kafka record as a broker (or kcat) would hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes (JSON text).
    pub key: Option<String>,
    /// Value bytes (JSON text); `None` is a tombstone.
    pub value: Option<String>,
    /// Record timestamp (ms).
    pub timestamp_ms: i64,
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    /// Seed of every random choice.
    pub seed: u64,
    /// Records to emit (tombstones and bad records included).
    pub events: u64,
    /// Partitions per topic.
    pub partitions: i32,
    /// Initial snapshot rows per table.
    pub snapshot_rows: u64,
    /// Tables.
    pub tables: Vec<GenTable>,
    /// Tables (by index) written without schemas (JsonConverter `schemas.enable=false`).
    pub schemaless: Vec<usize>,
    /// Probability of an update (vs insert/delete) once rows exist.
    pub p_update: f64,
    /// Probability of a delete.
    pub p_delete: f64,
    /// Probability that an insert re-inserts a deleted key.
    pub p_reinsert: f64,
    /// Probability that an update targets a hot key.
    pub p_hot: f64,
    /// Probability that an update carries no before image.
    pub p_no_before: f64,
    /// Probability that a delete is followed by a tombstone.
    pub p_tombstone: f64,
    /// Probability that an event is delivered twice.
    pub p_duplicate: f64,
    /// Probability of a bad record.
    pub p_bad: f64,
    /// Upstream schema changes, applied when that many records have been emitted.
    pub schema_steps: Vec<SchemaStep>,
}

/// An upstream DDL in the middle of a workload.
#[derive(Clone, Debug)]
pub struct SchemaStep {
    /// Records emitted before it.
    pub at: u64,
    /// Table index.
    pub table: usize,
    /// What changes.
    pub edit: SchemaEdit,
}

impl SchemaStep {
    /// `ALTER TABLE … ADD COLUMN name ty NULL` on table `table` after `at` records.
    pub fn add_column(at: u64, table: usize, name: &'static str, ty: GenType) -> SchemaStep {
        SchemaStep { at, table, edit: SchemaEdit::AddColumn(GenColumn { name, ty, optional: true }) }
    }
}

/// What an upstream DDL does.
#[derive(Clone, Debug)]
pub enum SchemaEdit {
    /// `ADD COLUMN` (nullable): existing rows read null.
    AddColumn(GenColumn),
    /// Widen a column's type (e.g. int32 → int64).
    Widen(&'static str, GenType),
    /// `DROP COLUMN`: messages stop carrying it.
    Drop(&'static str),
}

impl WorkloadSpec {
    /// The benchmark workload: one 11-column table, ~60% updates, ~25% inserts, ~15%
    /// deletes (each followed by a tombstone half the time), a few hot keys, 4 partitions.
    pub fn bench(seed: u64, events: u64, initial_rows: u64) -> WorkloadSpec {
        WorkloadSpec {
            seed,
            events,
            partitions: 4,
            snapshot_rows: initial_rows,
            tables: vec![GenTable::accounts()],
            schemaless: Vec::new(),
            p_update: 0.6,
            p_delete: 0.15,
            p_reinsert: 0.2,
            p_hot: 0.05,
            p_no_before: 0.0,
            p_tombstone: 0.5,
            p_duplicate: 0.0,
            p_bad: 0.0,
            schema_steps: Vec::new(),
        }
    }

    /// The standard oracle workload: both tables, every feature, no bad records.
    pub fn standard(seed: u64, events: u64) -> WorkloadSpec {
        WorkloadSpec {
            seed,
            events,
            partitions: 4,
            snapshot_rows: (events / 20).clamp(1, 5_000),
            tables: vec![GenTable::orders(), GenTable::order_lines()],
            schemaless: Vec::new(),
            p_update: 0.55,
            p_delete: 0.15,
            p_reinsert: 0.3,
            p_hot: 0.2,
            p_no_before: 0.1,
            p_tombstone: 0.5,
            p_duplicate: 0.02,
            p_bad: 0.0,
            schema_steps: Vec::new(),
        }
    }
}

/// A live row: its typed values and its JSON image. The image is kept as compact text, not
/// as a `Map` (a third of the memory at 10M rows); it is parsed back only when an update,
/// delete or DDL needs it (`serde_json` round-trips it exactly: `float_roundtrip` and
/// `preserve_order` are on).
struct Live {
    json: Box<str>,
    row: Row,
}

impl Live {
    fn new(json: Map<String, Json>, row: Row) -> Live {
        Live { json: Json::Object(json).to_string().into_boxed_str(), row }
    }

    fn json(&self) -> Map<String, Json> {
        match serde_json::from_str(&self.json) {
            Ok(Json::Object(map)) => map,
            _ => unreachable!("a live image is the text of a JSON object"),
        }
    }

    fn edit_json(&mut self, edit: impl FnOnce(&mut Map<String, Json>)) {
        let mut json = self.json();
        edit(&mut json);
        self.json = Json::Object(json).to_string().into_boxed_str();
    }
}

struct TableState {
    table: GenTable,
    live: IndexMap<Row, Live>,
    deleted: Vec<Row>,
    hot: Vec<Row>,
    next_id: i64,
    offsets: HashMap<i32, i64>,
    snapshot_left: u64,
    last: Option<KafkaRecord>,
}

/// The generator: an iterator of records; [`Generator::model`] is the oracle so far.
pub struct Generator {
    spec: WorkloadSpec,
    rng: ChaCha8Rng,
    tables: Vec<TableState>,
    clock_ms: i64,
    emitted: u64,
    pending: VecDeque<KafkaRecord>,
    model: Model,
}

const REGIONS: &[&str] = &["eu-west", "us-east", "ap-südost", "中国-北", "sa-east"];

impl Generator {
    /// A generator for `spec`.
    pub fn new(spec: WorkloadSpec) -> Generator {
        let rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let tables = spec
            .tables
            .iter()
            .map(|t| TableState {
                table: t.clone(),
                live: IndexMap::new(),
                deleted: Vec::new(),
                hot: Vec::new(),
                next_id: 1,
                offsets: HashMap::new(),
                snapshot_left: spec.snapshot_rows,
                last: None,
            })
            .collect();
        let model = Model { tables: spec.tables.iter().map(|t| TableModel::new(&t.topic, t.table_schema())).collect() };
        Generator { spec, rng, tables, clock_ms: 1_700_000_000_000, emitted: 0, pending: VecDeque::new(), model }
    }

    /// The model of everything emitted so far.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Consumes the generator, returning the model.
    pub fn into_model(self) -> Model {
        self.model
    }

    fn partition_of(&self, key_text: &str) -> i32 {
        // FNV-1a: a stable partitioner, like Kafka's, independent of floe.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in key_text.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        (h % self.spec.partitions.max(1) as u64) as i32
    }

    fn new_key(&mut self, t: usize) -> (Row, Map<String, Json>) {
        let state = &mut self.tables[t];
        let id = state.next_id;
        state.next_id += 1;
        let mut json = Map::new();
        let mut values = Vec::new();
        for (n, &k) in state.table.key.iter().enumerate() {
            let c = &state.table.columns[k];
            let (j, v) = match c.ty {
                GenType::Int64 => {
                    (json!(id * 7919 % 1_000_003 + id * 1_000_003), Value::Long(id * 7919 % 1_000_003 + id * 1_000_003))
                }
                GenType::Int32 => (json!(id as i32), Value::Int(id as i32)),
                GenType::Str => {
                    let s = REGIONS[(id as usize + n) % REGIONS.len()].to_string();
                    (json!(s), Value::String(s))
                }
                other => other.generate(&mut self.rng),
            };
            json.insert(c.name.to_string(), j);
            values.push(v);
        }
        (Row::new(values), json)
    }

    fn key_json(table: &GenTable, row_json: &Map<String, Json>) -> Map<String, Json> {
        table
            .key
            .iter()
            .map(|&k| {
                let name = table.columns[k].name;
                (name.to_string(), row_json.get(name).cloned().unwrap_or(Json::Null))
            })
            .collect()
    }

    fn random_row(&mut self, t: usize, key: &Row, key_json: &Map<String, Json>) -> Live {
        let table = self.tables[t].table.clone();
        let mut json = Map::new();
        let mut values = Vec::with_capacity(table.columns.len());
        for (i, c) in table.columns.iter().enumerate() {
            if table.dropped.contains(&i) {
                values.push(Value::Null);
            } else if let Some(kpos) = table.key.iter().position(|&k| k == i) {
                json.insert(c.name.to_string(), key_json.get(c.name).cloned().unwrap_or(Json::Null));
                values.push(key.0[kpos].clone());
            } else if c.optional && self.rng.random_bool(0.1) {
                json.insert(c.name.to_string(), Json::Null);
                values.push(Value::Null);
            } else {
                let (j, v) = c.ty.generate(&mut self.rng);
                json.insert(c.name.to_string(), j);
                values.push(v);
            }
        }
        Live::new(json, Row::new(values))
    }

    fn mutate(&mut self, t: usize, live: &Live) -> Live {
        let table = self.tables[t].table.clone();
        let mut json = live.json();
        let mut values = live.row.0.to_vec();
        let candidates: Vec<usize> =
            (0..table.columns.len()).filter(|i| !table.key.contains(i) && !table.dropped.contains(i)).collect();
        let changes = self.rng.random_range(1..=3.min(candidates.len().max(1)));
        for _ in 0..changes {
            let Some(&i) = candidates.get(self.rng.random_range(0..candidates.len().max(1))) else { break };
            let c = &table.columns[i];
            if c.optional && self.rng.random_bool(0.15) {
                json.insert(c.name.to_string(), Json::Null);
                values[i] = Value::Null;
            } else {
                let (j, v) = c.ty.generate(&mut self.rng);
                json.insert(c.name.to_string(), j);
                values[i] = v;
            }
        }
        Live::new(json, Row::new(values))
    }

    fn source(&self, table: &str, snapshot: bool) -> Json {
        json!({
            "version": "2.7.0.Final", "connector": "mysql", "name": "shop", "ts_ms": self.clock_ms,
            "snapshot": if snapshot { "true" } else { "false" }, "db": "inventory", "sequence": null,
            "table": table, "server_id": 223344, "gtid": null, "file": "mysql-bin.000003",
            "pos": 154 + self.emitted as i64 * 3, "row": 0, "thread": 7, "query": null
        })
    }

    fn push(&mut self, t: usize, key_json: &Map<String, Json>, value: Option<String>) -> (i32, i64) {
        self.push_keyed(t, key_json, None, value)
    }

    /// As `push`, with the record key's text given (else made from `key_json`, which also
    /// picks the partition).
    fn push_keyed(
        &mut self,
        t: usize,
        key_json: &Map<String, Json>,
        key_text: Option<String>,
        value: Option<String>,
    ) -> (i32, i64) {
        let schemaless = self.spec.schemaless.contains(&t);
        let table = &self.tables[t].table;
        let key_text = key_text.unwrap_or_else(|| {
            if schemaless { Json::Object(key_json.clone()).to_string() } else { table.key_message(key_json) }
        });
        let partition = self.partition_of(&Json::Object(key_json.clone()).to_string());
        let topic = table.topic.clone();
        let offset = {
            let o = self.tables[t].offsets.entry(partition).or_insert(0);
            let v = *o;
            *o += 1;
            v
        };
        let record = KafkaRecord { topic, partition, offset, key: Some(key_text), value, timestamp_ms: self.clock_ms };
        self.tables[t].last = Some(record.clone());
        self.pending.push_back(record);
        self.emitted += 1;
        (partition, offset)
    }

    // One argument per part of a Debezium event; bundling them would only rename them.
    #[allow(clippy::too_many_arguments)]
    fn emit_change(
        &mut self,
        t: usize,
        op: &str,
        key: Row,
        key_json: Map<String, Json>,
        before: Option<&Live>,
        after: Option<&Live>,
        drop_before: bool,
    ) {
        let snapshot = op == "r";
        let payload = json!({
            "before": if drop_before { Json::Null } else { before.map(|b| Json::Object(b.json())).unwrap_or(Json::Null) },
            "after": after.map(|a| Json::Object(a.json())).unwrap_or(Json::Null),
            "source": self.source(&self.tables[t].table.table, snapshot),
            "op": op,
            "ts_ms": self.clock_ms + 3,
            "transaction": null,
        });
        let value = if self.spec.schemaless.contains(&t) {
            self.tables[t].table.schemaless_message(&payload)
        } else {
            self.tables[t].table.value_message(&payload)
        };
        let (partition, offset) = self.push(t, &key_json, Some(value));
        let before_row = if drop_before { None } else { before.map(|b| &b.row) };
        self.model.tables[t].apply(Change {
            partition,
            offset,
            op,
            source_ts_ms: Some(self.clock_ms),
            key,
            before: before_row,
            after: after.map(|a| &a.row),
        });
    }

    fn apply_schema_steps(&mut self) {
        // `>=`: one step may emit two records (a delete and its tombstone).
        if self.spec.schema_steps.iter().all(|s| s.at > self.emitted) {
            return;
        }
        let (due, later): (Vec<SchemaStep>, Vec<SchemaStep>) =
            std::mem::take(&mut self.spec.schema_steps).into_iter().partition(|s| s.at <= self.emitted);
        self.spec.schema_steps = later;
        for step in due {
            let t = step.table;
            match step.edit {
                SchemaEdit::AddColumn(column) => {
                    let name = column.name;
                    self.tables[t].table.columns.push(column.clone());
                    for live in self.tables[t].live.values_mut() {
                        // Debezium's images carry the new column from the DDL on.
                        live.edit_json(|j| {
                            j.insert(name.to_string(), Json::Null);
                        });
                        let mut values = live.row.0.to_vec();
                        values.push(Value::Null);
                        live.row = Row::new(values);
                    }
                    let m = &mut self.model.tables[t];
                    m.schema.columns.push(floe_engine::schema::Column {
                        name: name.to_string(),
                        ty: column.ty.column_type(),
                        nullable: true,
                    });
                    for row in m.rows.values_mut() {
                        let mut values = row.0.to_vec();
                        values.push(Value::Null);
                        *row = Row::new(values);
                    }
                }
                SchemaEdit::Widen(name, ty) => {
                    let table = &mut self.tables[t].table;
                    let Some(p) = table.columns.iter().position(|c| c.name == name) else { continue };
                    table.columns[p].ty = ty;
                    let widen = |v: &Value| match v {
                        Value::Int(x) => Value::Long(i64::from(*x)),
                        Value::Float(x) => Value::Double(ordered_float::OrderedFloat(f64::from(x.0))),
                        other => other.clone(),
                    };
                    for live in self.tables[t].live.values_mut() {
                        let mut values = live.row.0.to_vec();
                        values[p] = widen(&values[p]);
                        live.row = Row::new(values);
                    }
                    let m = &mut self.model.tables[t];
                    m.schema.columns[p].ty = ty.column_type();
                    for row in m.rows.values_mut() {
                        let mut values = row.0.to_vec();
                        values[p] = widen(&values[p]);
                        *row = Row::new(values);
                    }
                }
                SchemaEdit::Drop(name) => {
                    let table = &mut self.tables[t].table;
                    let Some(p) = table.columns.iter().position(|c| c.name == name) else { continue };
                    table.dropped.insert(p);
                    for live in self.tables[t].live.values_mut() {
                        live.edit_json(|j| {
                            j.remove(name);
                        });
                        let mut values = live.row.0.to_vec();
                        values[p] = Value::Null;
                        live.row = Row::new(values);
                    }
                    // The model keeps the column (as `lenient` or an approval does): null from now on.
                    self.model.tables[t].schema.columns[p].nullable = true;
                }
            }
            self.tables[t].table.rebuild();
        }
    }

    fn step(&mut self) {
        self.apply_schema_steps();
        self.clock_ms += self.rng.random_range(0..40);
        let t = self.rng.random_range(0..self.tables.len());
        if self.spec.p_bad > 0.0 && self.rng.random_bool(self.spec.p_bad) {
            return self.bad_record(t);
        }
        if self.spec.p_duplicate > 0.0
            && self.rng.random_bool(self.spec.p_duplicate)
            && let Some(last) = self.tables[t].last.clone()
            && last.value.is_some()
        {
            return self.redeliver(t, last);
        }
        if self.tables[t].snapshot_left > 0 {
            self.tables[t].snapshot_left -= 1;
            let (key, kj) = self.new_key(t);
            let row = self.random_row(t, &key, &kj);
            self.emit_change(t, "r", key.clone(), kj, None, Some(&row), false);
            self.tables[t].live.insert(key, row);
            return;
        }
        let roll: f64 = self.rng.random();
        let has_rows = !self.tables[t].live.is_empty();
        if has_rows && roll < self.spec.p_update {
            self.update(t);
        } else if has_rows && roll < self.spec.p_update + self.spec.p_delete {
            self.delete(t);
        } else {
            self.insert(t);
        }
    }

    fn pick_live(&mut self, t: usize) -> Option<Row> {
        let state = &self.tables[t];
        if !state.hot.is_empty() && self.rng.random_bool(self.spec.p_hot) {
            let k = state.hot[self.rng.random_range(0..state.hot.len())].clone();
            if state.live.contains_key(&k) {
                return Some(k);
            }
        }
        let n = state.live.len();
        if n == 0 {
            return None;
        }
        let pick = self.rng.random_range(0..n);
        state.live.get_index(pick).map(|(k, _)| k.clone())
    }

    fn insert(&mut self, t: usize) {
        let reuse = !self.tables[t].deleted.is_empty() && self.rng.random_bool(self.spec.p_reinsert);
        let (key, kj) = if reuse {
            let i = self.rng.random_range(0..self.tables[t].deleted.len());
            let key = self.tables[t].deleted.swap_remove(i);
            let kj = self.key_json_of(t, &key);
            (key, kj)
        } else {
            self.new_key(t)
        };
        let row = self.random_row(t, &key, &kj);
        self.emit_change(t, "c", key.clone(), kj, None, Some(&row), false);
        if self.tables[t].hot.len() < 4 {
            self.tables[t].hot.push(key.clone());
        }
        self.tables[t].live.insert(key, row);
    }

    fn key_json_of(&self, t: usize, key: &Row) -> Map<String, Json> {
        // Rebuild the key JSON from the deleted key's values (keys are ints or strings).
        let table = &self.tables[t].table;
        table
            .key
            .iter()
            .zip(key.0.iter())
            .map(|(&k, v)| {
                let j = match v {
                    Value::Long(x) => json!(x),
                    Value::Int(x) => json!(x),
                    Value::String(s) => json!(s),
                    _ => Json::Null,
                };
                (table.columns[k].name.to_string(), j)
            })
            .collect()
    }

    fn update(&mut self, t: usize) {
        let Some(key) = self.pick_live(t) else { return self.insert(t) };
        let Some(old) = self.tables[t].live.swap_remove(&key) else { return };
        let new = self.mutate(t, &old);
        let kj = Self::key_json(&self.tables[t].table, &old.json());
        let drop_before = self.rng.random_bool(self.spec.p_no_before);
        self.emit_change(t, "u", key.clone(), kj, Some(&old), Some(&new), drop_before);
        self.tables[t].live.insert(key, new);
    }

    fn delete(&mut self, t: usize) {
        let Some(key) = self.pick_live(t) else { return };
        let Some(old) = self.tables[t].live.swap_remove(&key) else { return };
        let kj = Self::key_json(&self.tables[t].table, &old.json());
        self.emit_change(t, "d", key.clone(), kj.clone(), Some(&old), None, false);
        if self.rng.random_bool(self.spec.p_tombstone) {
            self.push(t, &kj, None);
        }
        self.tables[t].deleted.push(key);
    }

    fn redeliver(&mut self, t: usize, last: KafkaRecord) {
        // At-least-once delivery: the same message again, at a new offset.
        let offset = {
            let o = self.tables[t].offsets.entry(last.partition).or_insert(0);
            let v = *o;
            *o += 1;
            v
        };
        let mut again = last.clone();
        again.offset = offset;
        // Find the original event in the model and replay its effect (idempotent).
        let m = &mut self.model.tables[t];
        if let Some(fp) = m.cdc.get(&(last.partition, last.offset)).copied() {
            m.cdc.insert((last.partition, offset), fp);
        }
        if let Some(key) = m.cdc_keys.get(&(last.partition, last.offset)).cloned() {
            m.cdc_keys.insert((last.partition, offset), key);
        }
        if let Some(kind) = m.dead_kinds.get(&(last.partition, last.offset)).copied() {
            m.dead_letter(last.partition, offset, kind);
        }
        self.pending.push_back(again.clone());
        self.tables[t].last = Some(again);
        self.emitted += 1;
    }

    fn bad_record(&mut self, t: usize) {
        let (key, kj) = self.new_key(t);
        let kind = self.rng.random_range(0..6);
        let table = self.tables[t].table.clone();
        let source = self.source(&table.table, false);
        let mut key_text = None;
        let (value, reason) = match kind {
            0 => ("{\"schema\":{\"type\":\"struct\"".to_string(), "unparseable"),
            1 => {
                (table.value_message(&json!({"before": null, "after": {}, "op": "x", "source": source})), "unknown_op")
            }
            2 => {
                let mut after = Map::new();
                for c in &table.columns {
                    after.insert(c.name.to_string(), json!("not-a-number"));
                }
                (
                    table.value_message(&json!({"before": null, "after": after, "op": "c", "source": source})),
                    "type_mismatch",
                )
            }
            3 => (
                table.value_message(&json!({"before": null, "after": null, "op": "c", "source": source})),
                "unparseable",
            ),
            // A well-formed insert whose record key names another row (a misrouted record).
            4 => {
                let row = self.random_row(t, &key, &kj);
                let (_, other) = self.new_key(t);
                key_text = Some(table.key_message(&other));
                let after = Json::Object(row.json());
                (
                    table.value_message(&json!({"before": null, "after": after, "op": "c", "source": source})),
                    "key_mismatch",
                )
            }
            // A well-formed insert whose record key is not JSON.
            _ => {
                let row = self.random_row(t, &key, &kj);
                key_text = Some("{\"id\":".to_string());
                let after = Json::Object(row.json());
                (
                    table.value_message(&json!({"before": null, "after": after, "op": "c", "source": source})),
                    "unparseable",
                )
            }
        };
        let (partition, offset) = self.push_keyed(t, &kj, key_text, Some(value));
        self.model.tables[t].dead_letter(partition, offset, reason);
    }
}

impl Iterator for Generator {
    type Item = KafkaRecord;

    fn next(&mut self) -> Option<KafkaRecord> {
        while self.pending.is_empty() {
            if self.emitted >= self.spec.events {
                return None;
            }
            self.step();
        }
        self.pending.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_records() {
        let a: Vec<_> = Generator::new(WorkloadSpec::standard(7, 500)).collect();
        let b: Vec<_> = Generator::new(WorkloadSpec::standard(7, 500)).collect();
        assert_eq!(a, b);
        assert!(a.len() >= 500);
        let c: Vec<_> = Generator::new(WorkloadSpec::standard(8, 500)).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn offsets_increase_per_partition() {
        let mut last: HashMap<(String, i32), i64> = HashMap::new();
        for r in Generator::new(WorkloadSpec::standard(3, 2_000)) {
            let prev = last.insert((r.topic.clone(), r.partition), r.offset);
            assert_eq!(prev.map(|p| p + 1).unwrap_or(0), r.offset);
        }
    }
}
