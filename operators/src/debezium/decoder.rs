//! The decode core: one Kafka record in, one typed change event (or a dead letter) out.
//! No timely here; the `decode` operator is a thin shell around [`TableDecoder`].
//!
//! ```text
//!   SourceRecord ──► tombstone? ──► skip
//!        │
//!        ├─ fast path: value starts with the cached `{"schema":S,"payload":` prefix
//!        │             → parse only the payload
//!        └─ slow path: find schema S and payload; S → RowLayout (cached by S's bytes)
//!                      → parse payload; remember the prefix for the fast path
//!        ▼
//!   Envelope ──► validate op / images / NOT NULL ──► user transform ──► key ──► Event
//!        └─────────────── any failure ──────────────────────────────────────► DeadLetter
//! ```
//!
//! # Invariants
//! - Every record yields exactly one of: an event, a skipped tombstone, a dead letter. A
//!   dead letter keeps the record's exact key and value bytes and says why.
//! - The fast path is an optimisation only: when it fails, the slow path decides.
//! - Events carry rows in the table's column order, with NOT NULL columns non-null in the
//!   after image and the key columns non-null in the key.

use std::sync::Arc;

use floe_engine::record::SourceRecord;
use floe_engine::schema::TableSchemaRef;
use floe_engine::value::{Row, Value};
use serde::de::DeserializeSeed;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::connect_schema::{ConnectSchema, Conversion, row_fields};
use super::convert::ValueSeed;
use super::envelope::{Envelope, EnvelopeSeed, FieldSlot, Op, RowLayout};
use crate::plan::RowTransform;
use crate::row_view::RowMut;

/// A decoded change event.
///
/// The typed `before` image is decoded only for deletes (the CDC table records it); an
/// update's before image travels as `before_digest`, a 128-bit digest of its JSON text,
/// which is all the base table needs to recognise an epoch whose changes cancel out.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Event {
    /// Table index.
    pub table: u32,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// Debezium op.
    pub op: Op,
    /// `source.ts_ms`.
    pub source_ts_ms: Option<i64>,
    /// Primary-key values.
    pub key: Row,
    /// Before image (deletes only).
    pub before: Option<Row>,
    /// After image.
    pub after: Option<Row>,
    /// Digest of the before image's JSON text, when the event has one.
    pub before_digest: Option<u128>,
    /// Digest of the after image's JSON text, when the event has one.
    pub after_digest: Option<u128>,
}

/// Digest of a row image's JSON text: equal texts (the source writes both images of a row
/// the same way) mean equal rows.
pub fn image_digest(raw: &RawValue) -> u128 {
    xxhash_rust::xxh3::xxh3_128(raw.get().as_bytes())
}

/// A record that could not be decoded, with everything needed to replay it by hand.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Table index.
    pub table: u32,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// Raw key bytes.
    pub key: Option<Vec<u8>>,
    /// Raw value bytes.
    pub value: Option<Vec<u8>>,
    /// Why it was rejected.
    pub reason: String,
}

/// What one record became.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// A change event.
    Event(Event),
    /// A tombstone (null value), skipped.
    Tombstone,
    /// A bad record.
    Dead(DeadLetter),
}

const MAX_CACHED_SCHEMAS: usize = 8;

/// A value schema's JSON text and the layout (or the reason there is none) built from it.
type CachedLayout = (Box<[u8]>, Result<Arc<RowLayout>, String>);

/// Decoder for one table (topic).
pub struct TableDecoder {
    table: u32,
    topic: String,
    schema: TableSchemaRef,
    declared: Option<Arc<RowLayout>>,
    plans: Vec<CachedLayout>,
    fast: Option<(Arc<[u8]>, Arc<RowLayout>)>,
    transform: Option<RowTransform>,
    not_null: Vec<usize>,
}

#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow, default)]
    schema: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

impl TableDecoder {
    /// A decoder producing rows of `schema`; `declared` enables payload-only records.
    pub fn new(
        table: u32,
        topic: &str,
        schema: TableSchemaRef,
        declared: bool,
        transform: Option<RowTransform>,
    ) -> TableDecoder {
        let declared = declared.then(|| {
            let fields = schema
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| FieldSlot {
                    name: c.name.clone(),
                    conversion: Conversion::for_declared(c.ty),
                    position: i,
                })
                .collect();
            Arc::new(RowLayout::new(schema.columns.len(), fields))
        });
        let not_null = schema
            .columns
            .iter()
            .enumerate()
            .filter(|(i, c)| !c.nullable || schema.key.contains(i))
            .map(|(i, _)| i)
            .collect();
        TableDecoder {
            table,
            topic: topic.to_string(),
            schema,
            declared,
            plans: Vec::new(),
            fast: None,
            transform,
            not_null,
        }
    }

    /// Decodes one record.
    pub fn decode(&mut self, record: SourceRecord) -> Decoded {
        let Some(tail) = record.value.as_deref() else {
            return Decoded::Tombstone;
        };
        let result = {
            let whole;
            let fast = match &record.value_prefix {
                Some(shared) => {
                    self.shared_prefix_matches(shared).then_some(tail).and_then(|rest| self.parse_payload(rest))
                }
                None => self
                    .fast
                    .as_ref()
                    .and_then(|(p, _)| tail.strip_prefix(&p[..]))
                    .and_then(|rest| self.parse_payload(rest)),
            };
            let parsed = match fast {
                Some(fast) => Ok(fast),
                None => {
                    whole = record.value_bytes().unwrap_or_default();
                    self.parse_slow(&whole)
                }
            };
            parsed.and_then(|(env, layout)| self.to_event(&record, env, &layout))
        };
        match result {
            Ok(event) => Decoded::Event(event),
            Err(reason) => {
                let (partition, offset) = (record.partition, record.offset);
                let (key, value) = record.into_parts();
                Decoded::Dead(DeadLetter { table: self.table, partition, offset, key, value, reason })
            }
        }
    }

    /// Whether a source's shared value prefix is the schema prefix we have a layout for;
    /// adopts the source's allocation so later checks are a pointer comparison.
    fn shared_prefix_matches(&mut self, shared: &Arc<[u8]>) -> bool {
        match &mut self.fast {
            Some((mine, _)) if Arc::ptr_eq(mine, shared) => true,
            Some((mine, _)) if mine[..] == shared[..] => {
                *mine = Arc::clone(shared);
                true
            }
            _ => false,
        }
    }

    /// Parses `payload}` (what follows the schema prefix) with the cached layout.
    fn parse_payload<'v>(&self, rest: &'v [u8]) -> Option<(Envelope<'v>, Arc<RowLayout>)> {
        let (_, layout) = self.fast.as_ref()?;
        let trimmed = rest.trim_ascii_end();
        let payload = trimmed.strip_suffix(b"}")?;
        let mut de = serde_json::Deserializer::from_slice(payload);
        let env = EnvelopeSeed { layout }.deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some((env, Arc::clone(layout)))
    }

    fn parse_slow<'v>(&mut self, value: &'v [u8]) -> Result<(Envelope<'v>, Arc<RowLayout>), String> {
        let top: Top<'_> = serde_json::from_slice(value).map_err(|e| format!("unparseable JSON: {e}"))?;
        let (payload, layout): (&[u8], Arc<RowLayout>) = match (top.schema, top.payload) {
            (Some(schema), Some(payload)) if schema.get() != "null" => {
                let layout = self.layout_for(schema.get().as_bytes())?;
                let prefix = [b"{\"schema\":".as_slice(), schema.get().as_bytes(), b",\"payload\":"].concat();
                if value.starts_with(&prefix) {
                    self.fast = Some((Arc::from(prefix), Arc::clone(&layout)));
                }
                (payload.get().as_bytes(), layout)
            }
            (_, Some(payload)) => (payload.get().as_bytes(), self.declared_layout()?),
            (_, None) => (value, self.declared_layout()?),
        };
        let mut de = serde_json::Deserializer::from_slice(payload);
        let env = EnvelopeSeed { layout: &layout }.deserialize(&mut de).map_err(|e| e.to_string())?;
        de.end().map_err(|e| e.to_string())?;
        if !env.looks_like_envelope {
            return Err("not a Debezium change event: no `op`, `before` or `after`".to_string());
        }
        Ok((env, layout))
    }

    fn declared_layout(&self) -> Result<Arc<RowLayout>, String> {
        self.declared.clone().ok_or_else(|| {
            format!("record of `{}` carries no schema and the pipeline declares no `columns` for it", self.topic)
        })
    }

    fn layout_for(&mut self, schema_json: &[u8]) -> Result<Arc<RowLayout>, String> {
        if let Some((_, plan)) = self.plans.iter().find(|(raw, _)| raw.as_ref() == schema_json) {
            return plan.clone();
        }
        let plan = self.build_layout(schema_json).map(Arc::new);
        if self.plans.len() >= MAX_CACHED_SCHEMAS {
            drop(self.plans.remove(0));
        }
        self.plans.push((schema_json.into(), plan.clone()));
        plan
    }

    fn build_layout(&self, schema_json: &[u8]) -> Result<RowLayout, String> {
        let schema: ConnectSchema =
            serde_json::from_slice(schema_json).map_err(|e| format!("unreadable Connect schema: {e}"))?;
        let fields =
            row_fields(&schema).ok_or_else(|| "the value schema has no `after` or `before` struct".to_string())?;
        let mut slots = Vec::with_capacity(fields.len());
        for (column, conversion) in fields {
            let position = self.schema.position(&column.name).ok_or_else(|| {
                format!("field `{}` of `{}` is not a column of the table (schema drift)", column.name, self.topic)
            })?;
            let table_ty = self.schema.columns[position].ty;
            if table_ty != column.ty {
                return Err(format!(
                    "field `{}` of `{}` is {} in the record but {} in the table (schema drift)",
                    column.name, self.topic, column.ty, table_ty
                ));
            }
            slots.push(FieldSlot { name: column.name, conversion, position });
        }
        Ok(RowLayout::new(self.schema.columns.len(), slots))
    }

    fn to_event(&self, record: &SourceRecord, env: Envelope<'_>, layout: &RowLayout) -> Result<Event, String> {
        let op_text = env.op.as_deref().ok_or_else(|| "missing `op`".to_string())?;
        let op = Op::parse(op_text).ok_or_else(|| format!("unknown op `{op_text}`"))?;
        let Envelope { before: before_raw, after: after_raw, source_ts_ms, .. } = env;
        let (before_raw, after_raw) = match op {
            Op::Create | Op::Read | Op::Update if after_raw.is_none() => {
                return Err(format!("op `{}` without an after image", op.as_str()));
            }
            Op::Create | Op::Read => (None, after_raw),
            Op::Delete => (before_raw, None),
            Op::Update => (before_raw, after_raw),
        };
        let mut after = match after_raw {
            Some(raw) => layout.parse(raw)?,
            None => None,
        };
        // Typed before images are needed only by deletes (the CDC table's image).
        let mut before = match (op, before_raw) {
            (Op::Delete, Some(raw)) => layout.parse(raw)?,
            _ => None,
        };
        let before_digest = before_raw.map(image_digest);
        let mut after_digest = after_raw.map(image_digest);
        if let Some(row) = &after {
            self.check_not_null(row, "after image")?;
        }
        if let Some(t) = &self.transform {
            if let Some(row) = after.as_mut() {
                if !t(&mut RowMut::new(&self.schema, row)) {
                    after = None;
                    after_digest = None;
                } else {
                    self.check_not_null(row, "after image (after the transform)")?;
                }
            }
            if let Some(row) = before.as_mut()
                && !t(&mut RowMut::new(&self.schema, row))
            {
                before = None;
            }
        }
        let key = match (&after, &before, op, before_raw) {
            // An update's before image is not decoded; its key equals the after image's.
            (None, None, Op::Update, Some(raw)) => self.key_of(record, layout.parse(raw)?.as_ref())?,
            _ => self.key_of(record, after.as_ref().or(before.as_ref()))?,
        };
        Ok(Event {
            table: self.table,
            partition: record.partition,
            offset: record.offset,
            op,
            source_ts_ms,
            key,
            before,
            after,
            before_digest,
            after_digest,
        })
    }

    fn check_not_null(&self, row: &Row, what: &str) -> Result<(), String> {
        for &i in &self.not_null {
            if row.0[i].is_null() {
                return Err(format!(
                    "{what}: column `{}` is NULL but the table requires a value",
                    self.schema.columns[i].name
                ));
            }
        }
        Ok(())
    }

    fn key_of(&self, record: &SourceRecord, image: Option<&Row>) -> Result<Row, String> {
        if let Some(row) = image {
            let key = row.project(&self.schema.key);
            if key.0.iter().all(|v| !v.is_null()) {
                return Ok(key);
            }
        }
        let bytes = record
            .key_bytes()
            .ok_or_else(|| "missing key: no record key and no image with the key columns".to_string())?;
        let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| format!("unparseable key: {e}"))?;
        let payload = match &json {
            serde_json::Value::Object(m) if m.contains_key("payload") && m.contains_key("schema") => &m["payload"],
            other => other,
        };
        let mut values = Vec::with_capacity(self.schema.key.len());
        for &pos in &self.schema.key {
            let column = &self.schema.columns[pos];
            let raw = match payload {
                serde_json::Value::Object(m) => m.get(&column.name).cloned(),
                scalar if self.schema.key.len() == 1 => Some(scalar.clone()),
                _ => None,
            }
            .ok_or_else(|| format!("missing key: record key has no `{}`", column.name))?;
            let conversion = Conversion::for_declared(column.ty);
            let v = ValueSeed { conversion, column: &column.name }.deserialize(raw).map_err(|e| e.to_string())?;
            if v == Value::Null {
                return Err(format!("missing key: key column `{}` is null", column.name));
            }
            values.push(v);
        }
        Ok(Row::new(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_engine::schema::{Column, ColumnType, TableSchema};

    fn schema() -> TableSchemaRef {
        Arc::new(
            TableSchema::new(
                vec![
                    Column { name: "id".into(), ty: ColumnType::Long, nullable: false },
                    Column { name: "name".into(), ty: ColumnType::String, nullable: true },
                ],
                &["id".to_string()],
            )
            .expect("schema"),
        )
    }

    const SCHEMA: &str = r#"{"type":"struct","fields":[{"type":"struct","fields":[{"type":"int64","optional":false,"field":"id"},{"type":"string","optional":true,"field":"name"}],"optional":true,"field":"before"},{"type":"struct","fields":[{"type":"int64","optional":false,"field":"id"},{"type":"string","optional":true,"field":"name"}],"optional":true,"field":"after"},{"type":"string","optional":false,"field":"op"}],"optional":false,"name":"x.Envelope"}"#;

    fn record(offset: i64, payload: &str) -> SourceRecord {
        SourceRecord::new(
            0,
            0,
            offset,
            Some(br#"{"id":1}"#.to_vec()),
            Some(format!(r#"{{"schema":{SCHEMA},"payload":{payload}}}"#).into_bytes()),
        )
    }

    #[test]
    fn decodes_and_then_takes_the_fast_path() {
        let mut d = TableDecoder::new(0, "t", schema(), false, None);
        let first = d.decode(record(0, r#"{"before":null,"after":{"id":1,"name":"a"},"op":"c","source":{"ts_ms":5}}"#));
        assert!(
            matches!(first, Decoded::Event(ref e) if e.key == Row::new(vec![Value::Long(1)]) && e.source_ts_ms == Some(5)),
            "{first:?}"
        );
        assert!(d.fast.is_some(), "prefix cached");
        // A source that splits the shared prefix off hits the same fast path.
        let prefix: Arc<[u8]> = Arc::from(format!(r#"{{"schema":{SCHEMA},"payload":"#).into_bytes());
        let split = SourceRecord {
            value_prefix: Some(prefix),
            value: Some(br#"{"after":{"id":1,"name":"z"},"op":"r"}}"#.to_vec()),
            ..SourceRecord::new(0, 0, 2, None, None)
        };
        assert!(
            matches!(d.decode(split), Decoded::Event(ref e) if e.after.as_ref().is_some_and(|a| a.0[1] == Value::String("z".into())))
        );
        let second = d.decode(record(1, r#"{"before":{"id":1,"name":"a"},"after":{"id":1,"name":"b"},"op":"u"}"#));
        match second {
            Decoded::Event(e) => {
                assert_eq!(e.op, Op::Update);
                assert_eq!(e.after, Some(Row::new(vec![Value::Long(1), Value::String("b".into())])));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_records_become_dead_letters_with_reasons() {
        let mut d = TableDecoder::new(0, "t", schema(), false, None);
        let cases = [
            (r#"{"after":{"id":1},"op":"x"}"#, "unknown op `x`"),
            (r#"{"after":{"id":"one"},"op":"c"}"#, "column `id`"),
            (r#"{"after":{"id":null},"op":"c"}"#, "`id` is NULL"),
            (r#"{"before":null,"op":"c"}"#, "without an after image"),
        ];
        for (payload, reason) in cases {
            match d.decode(record(0, payload)) {
                Decoded::Dead(dl) => {
                    assert!(dl.reason.contains(reason), "{payload}: {}", dl.reason);
                    assert!(dl.value.is_some());
                }
                other => panic!("{payload}: {other:?}"),
            }
        }
        let garbage = SourceRecord::new(0, 0, 9, None, Some(b"{not json".to_vec()));
        assert!(matches!(d.decode(garbage), Decoded::Dead(ref dl) if dl.reason.contains("unparseable JSON")));
    }

    #[test]
    fn tombstones_are_skipped_and_key_falls_back_to_record_key() {
        let mut d = TableDecoder::new(0, "t", schema(), false, None);
        let tomb = SourceRecord::new(0, 0, 3, Some(b"{}".to_vec()), None);
        assert_eq!(d.decode(tomb), Decoded::Tombstone);
        let del = d.decode(record(4, r#"{"before":null,"after":null,"op":"d"}"#));
        assert!(matches!(del, Decoded::Event(ref e) if e.key == Row::new(vec![Value::Long(1)])), "{del:?}");
    }

    #[test]
    fn schemaless_needs_declared_columns() {
        let mut strict = TableDecoder::new(0, "t", schema(), false, None);
        let rec = SourceRecord::new(0, 0, 0, None, Some(br#"{"after":{"id":2},"op":"r"}"#.to_vec()));
        assert!(
            matches!(strict.decode(rec.clone()), Decoded::Dead(ref dl) if dl.reason.contains("declares no `columns`"))
        );
        let mut lenient = TableDecoder::new(0, "t", schema(), true, None);
        assert!(matches!(lenient.decode(rec), Decoded::Event(ref e) if e.key == Row::new(vec![Value::Long(2)])));
    }

    #[test]
    fn drift_is_a_dead_letter() {
        let mut d = TableDecoder::new(0, "t", schema(), false, None);
        let drifted = SCHEMA.replace(
            r#""field":"name"}],"optional":true,"field":"after""#,
            r#""field":"name"},{"type":"int32","optional":true,"field":"qty"}],"optional":true,"field":"after""#,
        );
        let rec = SourceRecord::new(
            0,
            0,
            0,
            None,
            Some(format!(r#"{{"schema":{drifted},"payload":{{"after":{{"id":1,"qty":3}},"op":"c"}}}}"#).into_bytes()),
        );
        assert!(matches!(d.decode(rec), Decoded::Dead(ref dl) if dl.reason.contains("schema drift")));
    }
}
