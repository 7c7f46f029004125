//! The race workload W(R, C) of `floe bench spark`: R initial rows of the `accounts` table
//! (bigint `id`, ten mixed columns), then C change events, ~60% updates, ~25% inserts and
//! ~15% deletes, with a small set of hot keys that change many times.
//!
//! ```text
//!   RaceSpec ──► bootstrap.jsonl   R `r` events, payload-only JSON (plain inserts)
//!            └─► changes.jsonl     C Debezium events with schemas (+ tombstones after deletes)
//!            └─► RaceSummary       counts, offsets, and aggregates of the final table
//! ```
//!
//! # Invariants
//! - Memory is O(keys) integers, not O(rows): a row is a pure function of
//!   `(seed, id, version)`, so before images are regenerated instead of stored. That is what
//!   lets R reach 10M on a laptop.
//! - Same spec, same bytes. Offsets continue per partition from the bootstrap log into the
//!   change log, so a pipeline resumes from one into the other.
//! - The summary's aggregates are computed from the final versions, independent of floe.

use std::collections::BTreeMap;
use std::io::{self, Write};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};

use crate::KafkaRecord;
use crate::kcat::kcat_line;
use crate::tables::GenTable;

/// The size and seed of a race workload.
#[derive(Clone, Debug)]
pub struct RaceSpec {
    /// Seed of every random choice.
    pub seed: u64,
    /// Rows of the initial table (R).
    pub rows: u64,
    /// Change events after it (C), tombstones not counted.
    pub changes: u64,
    /// Partitions of the topic.
    pub partitions: i32,
}

/// What a race workload holds, for the report and for checking both contestants.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaceSummary {
    /// Records of the bootstrap log.
    pub bootstrap_records: u64,
    /// Records of the change log, tombstones included.
    pub change_records: u64,
    /// Inserts among the changes.
    pub inserts: u64,
    /// Updates among the changes.
    pub updates: u64,
    /// Deletes among the changes.
    pub deletes: u64,
    /// Distinct keys the changes touch.
    pub keys_changed: u64,
    /// The most changes any one key got.
    pub max_changes_per_key: u64,
    /// First offset of the change log per partition (= bootstrap records per partition).
    pub change_start: BTreeMap<i32, i64>,
    /// Rows of the final table.
    pub final_rows: u64,
    /// Sum of `id` over the final table.
    pub final_id_sum: i64,
    /// Sum of `visits` over the final table (nulls skipped).
    pub final_visits_sum: i64,
    /// Rows of the final table whose `email` is null.
    pub final_null_emails: u64,
}

/// Probability that an update goes to a hot key.
const P_HOT: f64 = 0.1;
/// Hot keys (among the first rows).
const HOT_KEYS: u64 = 1_000;
/// Probability that an insert brings back a deleted key.
const P_REINSERT: f64 = 0.2;
/// Probability that a delete is followed by a tombstone.
const P_TOMBSTONE: f64 = 0.5;

/// The topic of the race table.
pub fn race_table() -> GenTable {
    GenTable::accounts()
}

struct State {
    table: GenTable,
    seed: u64,
    /// Version per id (index = id); 0 = absent.
    versions: Vec<u32>,
    changes_per_key: Vec<u32>,
    deleted: Vec<i64>,
    live: u64,
    offsets: BTreeMap<i32, i64>,
    partitions: i32,
    clock_ms: i64,
}

impl State {
    fn partition(&self, id: i64) -> i32 {
        // FNV-1a of the key JSON, as the oracle generator partitions.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in format!("{{\"id\":{id}}}").bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        (h % self.partitions.max(1) as u64) as i32
    }

    /// The row of `id` at `version`: a pure function of the seed, id and version.
    fn row(&self, id: i64, version: u32) -> Map<String, Json> {
        let mix = self.seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((version as u64) << 40);
        let mut rng = ChaCha8Rng::seed_from_u64(mix);
        let mut row = Map::with_capacity(self.table.columns.len());
        for c in &self.table.columns {
            let value = if c.name == "id" {
                json!(id)
            } else if c.optional && rng.random_bool(0.1) {
                Json::Null
            } else {
                c.ty.generate(&mut rng).0
            };
            row.insert(c.name.to_string(), value);
        }
        row
    }

    fn record(&mut self, id: i64, value: Option<String>, schemaless: bool) -> KafkaRecord {
        let partition = self.partition(id);
        let offset = self.offsets.entry(partition).or_insert(0);
        let record = KafkaRecord {
            topic: self.table.topic.clone(),
            partition,
            offset: *offset,
            key: Some(if schemaless {
                format!("{{\"id\":{id}}}")
            } else {
                self.table.key_message(&Map::from_iter([("id".to_string(), json!(id))]))
            }),
            value,
            timestamp_ms: self.clock_ms,
        };
        *offset += 1;
        record
    }

    fn event(&mut self, id: i64, op: &str, before: Option<u32>, after: Option<u32>, schemaless: bool) -> KafkaRecord {
        self.clock_ms += 1;
        let image = |v: Option<u32>| v.map(|v| Json::Object(self.row(id, v))).unwrap_or(Json::Null);
        let payload = json!({
            "before": image(before),
            "after": image(after),
            "source": {
                "version": "2.7.0.Final", "connector": "mysql", "name": "shop", "ts_ms": self.clock_ms,
                "snapshot": if op == "r" { "true" } else { "false" }, "db": "inventory", "sequence": null,
                "table": "accounts", "server_id": 223344, "gtid": null, "file": "mysql-bin.000003",
                "pos": 154, "row": 0, "thread": 7, "query": null
            },
            "op": op,
            "ts_ms": self.clock_ms + 3,
            "transaction": null,
        });
        let value =
            if schemaless { self.table.schemaless_message(&payload) } else { self.table.value_message(&payload) };
        self.record(id, Some(value), schemaless)
    }

    fn random_live(&self, rng: &mut ChaCha8Rng) -> i64 {
        if rng.random_bool(P_HOT) {
            let hot = HOT_KEYS.min(self.versions.len() as u64 - 1).max(1);
            let id = rng.random_range(1..=hot) as i64;
            if self.versions[id as usize] > 0 {
                return id;
            }
        }
        // Rejection sampling: most ids are live (deletes are 15% of changes).
        loop {
            let id = rng.random_range(1..self.versions.len()) as i64;
            if self.versions[id as usize] > 0 {
                return id;
            }
        }
    }
}

/// Writes the bootstrap log and the change log of `spec`; returns the summary.
pub fn write_race(spec: &RaceSpec, bootstrap: &mut impl Write, changes: &mut impl Write) -> io::Result<RaceSummary> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut s = State {
        table: race_table(),
        seed: spec.seed,
        versions: vec![0; spec.rows as usize + 1],
        changes_per_key: Vec::new(),
        deleted: Vec::new(),
        live: 0,
        offsets: BTreeMap::new(),
        partitions: spec.partitions,
        clock_ms: 1_700_000_000_000,
    };
    let mut summary = RaceSummary::default();
    for id in 1..=spec.rows as i64 {
        s.versions[id as usize] = 1;
        s.live += 1;
        let record = s.event(id, "r", None, Some(1), true);
        writeln!(bootstrap, "{}", kcat_line(&record))?;
        summary.bootstrap_records += 1;
    }
    summary.change_start = (0..spec.partitions).map(|p| (p, s.offsets.get(&p).copied().unwrap_or(0))).collect();
    s.changes_per_key = vec![0; s.versions.len()];

    for _ in 0..spec.changes {
        let roll: f64 = rng.random();
        let (id, op, before, after) = if s.live > 0 && roll < 0.60 {
            let id = s.random_live(&mut rng);
            let v = s.versions[id as usize];
            (id, "u", Some(v), Some(v + 1))
        } else if s.live > 0 && roll < 0.75 {
            let id = s.random_live(&mut rng);
            (id, "d", Some(s.versions[id as usize]), None)
        } else if !s.deleted.is_empty() && rng.random_bool(P_REINSERT) {
            let i = rng.random_range(0..s.deleted.len());
            let id = s.deleted.swap_remove(i);
            (id, "c", None, Some(rng.random_range(1_000..u32::MAX / 2)))
        } else {
            let id = s.versions.len() as i64;
            s.versions.push(0);
            s.changes_per_key.push(0);
            (id, "c", None, Some(1))
        };
        match op {
            "u" => summary.updates += 1,
            "d" => summary.deletes += 1,
            _ => summary.inserts += 1,
        }
        let record = s.event(id, op, before, after, false);
        writeln!(changes, "{}", kcat_line(&record))?;
        summary.change_records += 1;
        match after {
            Some(v) => {
                if s.versions[id as usize] == 0 {
                    s.live += 1;
                }
                s.versions[id as usize] = v;
            }
            None => {
                s.versions[id as usize] = 0;
                s.live -= 1;
                s.deleted.push(id);
                if rng.random_bool(P_TOMBSTONE) {
                    let tombstone = s.record(id, None, false);
                    writeln!(changes, "{}", kcat_line(&tombstone))?;
                    summary.change_records += 1;
                }
            }
        }
        s.changes_per_key[id as usize] += 1;
    }

    summary.keys_changed = s.changes_per_key.iter().filter(|&&n| n > 0).count() as u64;
    summary.max_changes_per_key = s.changes_per_key.iter().copied().max().unwrap_or(0) as u64;
    for (id, &v) in s.versions.iter().enumerate().skip(1) {
        if v == 0 {
            continue;
        }
        let row = s.row(id as i64, v);
        summary.final_rows += 1;
        summary.final_id_sum += id as i64;
        summary.final_visits_sum += row.get("visits").and_then(Json::as_i64).unwrap_or(0);
        summary.final_null_emails += u64::from(row.get("email").is_none_or(Json::is_null));
    }
    Ok(summary)
}

/// The table's columns as a pipeline file declares them (the bootstrap log is payload-only).
pub fn race_columns_toml() -> String {
    let schema = race_table().table_schema();
    let mut out = String::from("key = [\"id\"]\ncolumns = [\n");
    for c in &schema.columns {
        out += &format!("  {{ name = \"{}\", type = \"{}\", nullable = {} }},\n", c.name, c.ty, c.nullable);
    }
    out += "]\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64) -> (Vec<u8>, Vec<u8>, RaceSummary) {
        let (mut b, mut c) = (Vec::new(), Vec::new());
        let spec = RaceSpec { seed, rows: 2_000, changes: 3_000, partitions: 4 };
        let summary = write_race(&spec, &mut b, &mut c).expect("write");
        (b, c, summary)
    }

    #[test]
    fn the_table_stays_readable_by_spark() {
        use crate::columns::GenType::*;
        // Spark 3.5 cannot read Iceberg `time` columns (apache/iceberg#9006).
        assert!(race_table().columns.iter().all(|c| !matches!(c.ty, DbzTime | MicroTime | NanoTime | ConnectTime)));
    }

    #[test]
    fn same_seed_same_bytes() {
        assert_eq!(run(3), run(3));
        assert_ne!(run(3).1, run(4).1);
    }

    #[test]
    fn the_mix_and_offsets_hold() {
        let (b, c, s) = run(9);
        assert_eq!(s.bootstrap_records, 2_000);
        assert_eq!(s.inserts + s.updates + s.deletes, 3_000);
        let share = |n: u64| n as f64 / 3_000.0;
        assert!((share(s.updates) - 0.60).abs() < 0.04, "{s:?}");
        assert!((share(s.deletes) - 0.15).abs() < 0.03, "{s:?}");
        assert!(s.max_changes_per_key >= 2, "hot keys change many times: {s:?}");
        assert_eq!(s.final_rows, 2_000 + s.inserts - s.deletes);
        // Offsets continue from the bootstrap log into the change log, per partition.
        let mut next: BTreeMap<i64, i64> = BTreeMap::new();
        for line in b.split(|&x| x == b'\n').chain(c.split(|&x| x == b'\n')).filter(|l| !l.is_empty()) {
            let v: Json = serde_json::from_slice(line).expect("json");
            let p = v["partition"].as_i64().expect("partition");
            let o = v["offset"].as_i64().expect("offset");
            let expected = next.entry(p).or_insert(0);
            assert_eq!(o, *expected);
            *expected += 1;
        }
        assert_eq!(s.change_start.values().sum::<i64>(), 2_000);
    }
}
