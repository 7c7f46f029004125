//! The decode core: one Kafka record in, one typed change event (or a dead letter) out.
//! No timely here; the `decode` operator is a thin shell around [`TableDecoder`].
//!
//! ```text
//!   SourceRecord ──► tombstone? ──► skip
//!        │
//!        ├─ fast path (`payload_parser`, no serde): the cached `{"schema":S,"payload":`
//!        │             prefix → read only the payload; else any layout of a known S
//!        │             (whitespace, field order, payload first); else a schemaless
//!        │             envelope with declared columns. Refused → the slow path decides.
//!        └─ slow path (serde_json): find schema S and payload; S → RowLayout (cached by S's bytes)
//!                      → parse payload; remember the prefix for the fast path
//!                      S differs from the table? decide under the table's policy:
//!                      evolve (new schema version, then lay out) │ pause (hold the record)
//!        ▼
//!   Envelope ──► validate op / images / NOT NULL ──► user transform ──► key ──► Event
//!        └─────────────── any failure ──────────────────────────────────────► DeadLetter
//! ```
//!
//! # Invariants
//! - Every record yields exactly one of: an event, a skipped tombstone, a dead letter, or
//!   (its table paused at or before its epoch) a held record that is not written and whose
//!   offset is not committed. A dead letter keeps the record's exact key and value bytes
//!   and says why. Schema drift is never a dead letter: it evolves or pauses the table.
//! - A new schema version is registered before the first row laid out under it leaves the
//!   decoder (the zero-gap rule of `crate::schema_versions`). Layouts are rebuilt whenever
//!   the decoder adopts a newer version, so every row has the width of the version it was
//!   decoded under.
//! - The fast path is an optimisation only: when it fails, the slow path decides. Both
//!   give the same result for every input (the fuzzer checks it), so a dead letter's reason
//!   never depends on the path.
//! - Events carry rows in the table's column order, with NOT NULL columns non-null in the
//!   after image and the key columns non-null in the key.

use std::sync::Arc;

use floe_engine::epoch::Epoch;
use floe_engine::record::SourceRecord;
use floe_engine::schema::TableSchema;
use floe_engine::schema_audit::now_ms;
use floe_engine::schema_drift::{Decision, Observed, SchemaPolicy, SourceShape, decide, writable};
use floe_engine::value::Row;
use serde::de::DeserializeSeed;
use serde::{Deserialize, Serialize};

use super::connect_schema::{ConnectSchema, Conversion, record_key_fields, row_fields};
use super::dead_reason::DeadReason;
use super::envelope::{
    ConnectMessage, Envelope, EnvelopeSeed, FieldSlot, Op, RowLayout, adopt_if_same, payload_of_tail, schema_prefix,
};
use super::payload_parser::{self, KnownSchema, MessageContext};
use super::record_key::{KeyColumn, KeyParser, describe};
use crate::plan::RowTransform;
use crate::row_view::RowMut;
use crate::schema_versions::{FirstSeen, Version, VersionsRef};

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
pub fn image_digest(raw: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(raw)
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
    pub reason: DeadReason,
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
    /// Its table is paused at or before the record's epoch: not written, not committed.
    Held,
    /// The pipeline cannot go on (a transform's row type no longer matches the table).
    Fatal(String),
}

/// Why a record did not become an event.
enum Fail {
    Dead(DeadReason),
    Held,
    Fatal(String),
}

impl From<DeadReason> for Fail {
    fn from(reason: DeadReason) -> Fail {
        Fail::Dead(reason)
    }
}

const MAX_CACHED_SCHEMAS: usize = 8;

/// Decoder for one table (topic).
pub struct TableDecoder {
    table: u32,
    topic: String,
    versions: VersionsRef,
    version: Arc<Version>,
    policy: SchemaPolicy,
    declared: Option<Arc<RowLayout>>,
    plans: Vec<KnownSchema>,
    fast: Option<(Arc<[u8]>, Arc<RowLayout>)>,
    transform: Option<RowTransform>,
    not_null: Vec<usize>,
    /// The layout of each partition's previous record: a partition whose fields shrink
    /// dropped the missing ones.
    previous: Vec<(i32, Arc<RowLayout>)>,
    /// Per version, the lowest epoch already reported as needing it.
    used: Vec<u64>,
    /// The columns the transform was written for, if it declared them.
    row_type: Option<Vec<String>>,
    /// Record keys, parsed to check them against the row image.
    keys: KeyParser,
    /// The key columns as the last layout converts them.
    key_columns: Option<(Arc<RowLayout>, Arc<[KeyColumn]>)>,
    /// Whether the specialised parser runs before serde_json.
    fast_path: bool,
    /// Records the fast path read.
    fast_hits: u64,
    /// The layout of the last record read: the guess when `payload` precedes `schema`.
    last_layout: Option<Arc<RowLayout>>,
}

impl TableDecoder {
    /// A decoder producing rows of the table's latest schema version; `declared` enables
    /// payload-only records; `policy` says what schema drift does.
    pub fn new(
        table: u32,
        topic: &str,
        versions: VersionsRef,
        declared: bool,
        policy: SchemaPolicy,
        transform: Option<RowTransform>,
    ) -> TableDecoder {
        let version = versions.latest();
        let declared = declared.then(|| {
            let fields = version
                .schema
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| FieldSlot {
                    name: c.name.clone(),
                    conversion: Conversion::for_declared(c.ty),
                    position: i,
                })
                .collect();
            Arc::new(RowLayout::new(version.schema.columns.len(), fields))
        });
        let not_null = not_null(&version.schema);
        TableDecoder {
            table,
            topic: topic.to_string(),
            versions,
            version,
            policy,
            declared,
            plans: Vec::new(),
            fast: None,
            transform,
            not_null,
            previous: Vec::new(),
            used: Vec::new(),
            row_type: None,
            keys: KeyParser::default(),
            key_columns: None,
            fast_path: true,
            fast_hits: 0,
            last_layout: None,
        }
    }

    fn schema(&self) -> &TableSchema {
        &self.version.schema
    }

    /// Declares the columns the transform was written for.
    pub fn with_row_type(mut self, row_type: Option<Vec<String>>) -> TableDecoder {
        self.row_type = row_type;
        self
    }

    /// Switches to a newer version: cached layouts were built for the old width. A
    /// transform written for a fixed row type must still match it.
    fn adopt(&mut self, version: Arc<Version>) -> Result<(), Fail> {
        if let Some(expected) = &self.row_type {
            let now: Vec<&str> = version.schema.columns.iter().map(|c| c.name.as_str()).collect();
            if expected.iter().map(String::as_str).ne(now.iter().copied()) {
                return Err(Fail::Fatal(format!(
                    "the schema of `{}` evolved to {now:?}, but its transform is written for {expected:?}; update the transform's row type and restart (nothing after this is committed)",
                    self.topic
                )));
            }
        }
        if version.number != self.version.number {
            self.not_null = not_null(&version.schema);
            self.version = version;
            self.plans.clear();
            self.fast = None;
            self.last_layout = None;
        }
        Ok(())
    }

    /// Decodes one record of epoch `epoch`.
    pub fn decode(&mut self, record: SourceRecord, epoch: Epoch) -> Decoded {
        if self.versions.is_paused_at(epoch) {
            return Decoded::Held;
        }
        let Some(tail) = record.value.as_deref() else {
            return Decoded::Tombstone;
        };
        // A hint left over from an earlier record must not label this record's errors.
        let _ = super::dead_reason::take_hint();
        let result = {
            let whole;
            let fast = if self.fast_path { self.parse_fast(&record, tail) } else { None };
            let parsed = match fast {
                Some(fast) => {
                    self.fast_hits += 1;
                    Ok(fast)
                }
                None => {
                    whole = record.value_bytes().unwrap_or_default();
                    self.parse_slow(&whole, &record, epoch)
                }
            };
            parsed.and_then(|(env, layout)| {
                if !self.last_layout.as_ref().is_some_and(|l| Arc::ptr_eq(l, &layout)) {
                    self.last_layout = Some(Arc::clone(&layout));
                }
                self.check_drops(&record, &layout, epoch)?;
                if layout.version > 0 {
                    self.note_use(layout.version, epoch);
                }
                self.event_of(&record, env, &layout).map_err(Fail::Dead)
            })
        };
        match result {
            Ok(event) => Decoded::Event(event),
            Err(Fail::Held) => Decoded::Held,
            Err(Fail::Fatal(reason)) => Decoded::Fatal(reason),
            Err(Fail::Dead(reason)) => {
                let (partition, offset) = (record.partition, record.offset);
                let (key, value) = record.into_parts();
                Decoded::Dead(DeadLetter { table: self.table, partition, offset, key, value, reason })
            }
        }
    }

    /// Whether a source's shared value prefix is the schema prefix we have a layout for;
    /// adopts the source's allocation so later checks are a pointer comparison.
    fn shared_prefix_matches(&mut self, shared: &Arc<[u8]>) -> bool {
        self.fast.as_mut().is_some_and(|(mine, _)| adopt_if_same(mine, shared))
    }

    /// The fast path: the compact `{"schema":S,"payload":` prefix of the last schema (a
    /// pointer comparison when the source shares it), else any layout of a known schema.
    fn parse_fast<'v>(&mut self, record: &SourceRecord, tail: &'v [u8]) -> Option<(Envelope<'v>, Arc<RowLayout>)> {
        match &record.value_prefix {
            Some(shared) => self.shared_prefix_matches(shared).then(|| self.parse_payload(tail)).flatten(),
            None => match self.fast.as_ref().and_then(|(p, _)| tail.strip_prefix(&p[..])) {
                Some(rest) => self.parse_payload(rest),
                None => {
                    let cx = MessageContext {
                        known: &self.plans,
                        last: self.last_layout.as_ref(),
                        declared: self.declared.as_ref(),
                    };
                    payload_parser::message(tail, &cx).ok().or_else(|| self.parse_schemaless(tail))
                }
            },
        }
    }

    /// A schemaless envelope (`schemas.enable=false`) with the declared columns. The serde
    /// path reads a value without `schema` and `payload` keys as the envelope itself; a
    /// value that could spell either key (even escaped) is left to it.
    fn parse_schemaless<'v>(&self, value: &'v [u8]) -> Option<(Envelope<'v>, Arc<RowLayout>)> {
        let layout = self.declared.as_ref()?;
        let spells = |needle: &[u8]| memchr::memmem::find(value, needle).is_some();
        if spells(b"\"payload\"") || spells(b"\"schema\"") || spells(b"\\u") {
            return None;
        }
        let env = payload_parser::envelope(value, layout).ok()?;
        env.looks_like_envelope.then(|| (env, Arc::clone(layout)))
    }

    /// Parses `payload}` (what follows the schema prefix) with the cached layout.
    fn parse_payload<'v>(&self, rest: &'v [u8]) -> Option<(Envelope<'v>, Arc<RowLayout>)> {
        let (_, layout) = self.fast.as_ref()?;
        let env = payload_parser::envelope(payload_of_tail(rest)?, layout).ok()?;
        env.looks_like_envelope.then(|| (env, Arc::clone(layout)))
    }

    /// Turns the fast path off (benchmarks and differential tests use the serde path alone).
    pub fn with_fast_path(mut self, on: bool) -> TableDecoder {
        self.fast_path = on;
        self
    }

    /// How many records the fast path read (the rest went through serde_json).
    pub fn fast_hits(&self) -> u64 {
        self.fast_hits
    }

    /// A raw image typed with `layout`, by the fast path unless it is off.
    fn parse_image(&self, layout: &RowLayout, raw: &[u8]) -> Result<Option<Row>, DeadReason> {
        if self.fast_path { layout.parse(raw) } else { layout.parse_slow(raw) }
    }

    fn parse_slow<'v>(
        &mut self,
        value: &'v [u8],
        record: &SourceRecord,
        epoch: Epoch,
    ) -> Result<(Envelope<'v>, Arc<RowLayout>), Fail> {
        let top: ConnectMessage<'_> = serde_json::from_slice(value).map_err(|e| match DeadReason::of_json(&e) {
            deep @ DeadReason::NestingTooDeep(_) => deep,
            _ => DeadReason::Unparseable(format!("unparseable JSON: {e}")),
        })?;
        let (payload, layout): (&[u8], Arc<RowLayout>) = match (top.schema, top.payload) {
            (Some(schema), Some(payload)) if schema.get() != "null" => {
                let layout = self.layout_for(schema.get().as_bytes(), record, epoch)?;
                let prefix = schema_prefix(schema);
                if value.starts_with(&prefix) {
                    self.fast = Some((Arc::from(prefix), Arc::clone(&layout)));
                }
                (payload.get().as_bytes(), layout)
            }
            (_, Some(payload)) => (payload.get().as_bytes(), self.declared_layout()?),
            (_, None) => (value, self.declared_layout()?),
        };
        let mut de = serde_json::Deserializer::from_slice(payload);
        let env = EnvelopeSeed { layout: &layout }.deserialize(&mut de).map_err(|e| DeadReason::of_json(&e))?;
        de.end().map_err(|e| DeadReason::of_json(&e))?;
        if !env.looks_like_envelope {
            return Err(Fail::Dead(DeadReason::Unparseable(
                "not a Debezium change event: no `op`, `before` or `after`".to_string(),
            )));
        }
        Ok((env, layout))
    }

    fn declared_layout(&self) -> Result<Arc<RowLayout>, DeadReason> {
        self.declared.clone().ok_or_else(|| {
            DeadReason::Unparseable(format!(
                "record of `{}` carries no schema and the pipeline declares no `columns` for it",
                self.topic
            ))
        })
    }

    fn layout_for(&mut self, schema_json: &[u8], record: &SourceRecord, epoch: Epoch) -> Result<Arc<RowLayout>, Fail> {
        if let Some((_, plan)) = self.plans.iter().find(|(raw, _)| raw.as_ref() == schema_json) {
            return plan.clone().map_err(Fail::Dead);
        }
        let plan = match self.build_layout(schema_json, record, epoch) {
            Ok(layout) => Ok(Arc::new(layout)),
            Err(Fail::Dead(reason)) => Err(reason),
            Err(Fail::Held) => return Err(Fail::Held),
            Err(Fail::Fatal(reason)) => return Err(Fail::Fatal(reason)),
        };
        if self.plans.len() >= MAX_CACHED_SCHEMAS {
            // The compact prefix stands for a cached plan: it goes with it, so a schema
            // seen again is decided again on both paths alike.
            if let (_, Ok(evicted)) = self.plans.remove(0)
                && self.fast.as_ref().is_some_and(|(_, l)| Arc::ptr_eq(l, &evicted))
            {
                self.fast = None;
            }
        }
        self.plans.push((schema_json.into(), plan.clone()));
        plan.map_err(Fail::Dead)
    }

    /// Notices a partition whose records stopped carrying fields they had: those columns were
    /// dropped upstream, and that is a schema change (never a silent null).
    fn check_drops(&mut self, record: &SourceRecord, layout: &Arc<RowLayout>, epoch: Epoch) -> Result<(), Fail> {
        let slot = self.previous.iter().position(|(p, _)| *p == record.partition);
        let observed = match slot {
            Some(i) if Arc::ptr_eq(&self.previous[i].1, layout) => return Ok(()),
            Some(i) => {
                let before = &self.previous[i].1;
                let mut observed = Observed::default();
                for (f, was) in before.fields.iter().zip(&before.source_types) {
                    match layout.fields.iter().position(|g| g.name == f.name) {
                        None => {
                            observed.dropped.insert(f.name.clone());
                        }
                        Some(j) if layout.source_types[j] != *was && writable(*was, layout.source_types[j]) => {
                            observed.narrowed.insert(f.name.clone());
                        }
                        Some(_) => {}
                    }
                }
                observed
            }
            None => Observed::default(),
        };
        match slot {
            Some(i) => self.previous[i].1 = Arc::clone(layout),
            None => self.previous.push((record.partition, Arc::clone(layout))),
        }
        if observed == Observed::default() {
            return Ok(());
        }
        let shape = SourceShape {
            columns: layout
                .fields
                .iter()
                .zip(&layout.source_types)
                .map(|(f, ty)| {
                    let column = &self.schema().columns[f.position];
                    floe_engine::schema::Column { name: f.name.clone(), ty: *ty, nullable: column.nullable }
                })
                .collect(),
            key: None,
        };
        let (version, evolved) = self.resolve(&shape, &observed, record, epoch)?;
        if evolved {
            // Positions are unchanged by retiring, so this record's layout stays valid; its
            // epoch needs the version (the column may have become optional).
            self.note_use(version.number, epoch);
            self.adopt(version)?;
            self.previous.retain(|(p, _)| *p != record.partition);
            self.previous.push((record.partition, Arc::clone(layout)));
        }
        Ok(())
    }

    /// Decides `shape` (with what was `observed`) against the newest version under the
    /// table's policy: returns that version, or the one this call evolved it to (`true`);
    /// or pauses the table at `epoch`. If another decoder evolves the table between the
    /// decision and the registration, decides again.
    fn resolve(
        &mut self,
        shape: &SourceShape,
        observed: &Observed,
        record: &SourceRecord,
        epoch: Epoch,
    ) -> Result<(Arc<Version>, bool), Fail> {
        let first = FirstSeen {
            topic: self.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            detected: "push".into(),
            at_ms: now_ms(),
        };
        loop {
            let latest = self.versions.latest();
            let (changes, evolved) = match decide(&latest.schema, &latest.retired, shape, observed, self.policy) {
                Decision::Unchanged => return Ok((latest, false)),
                Decision::Evolve { schema, retired, changes } => {
                    let described: Vec<String> = changes.iter().map(ToString::to_string).collect();
                    (described, self.versions.evolve(&latest, Arc::new(schema), retired, changes, first.clone()))
                }
                Decision::Pause { changes } => {
                    let described: Vec<String> = changes.iter().map(ToString::to_string).collect();
                    tracing::error!(
                        topic = %self.topic, partition = record.partition, offset = record.offset,
                        changes = %described.join("; "), policy = ?self.policy,
                        "schema change is not additive: the table is paused here"
                    );
                    self.versions.pause(epoch, changes, first);
                    return Err(Fail::Held);
                }
            };
            if let Some(next) = evolved {
                tracing::info!(
                    topic = %self.topic, partition = record.partition, offset = record.offset,
                    version = next.number, changes = %changes.join("; "), "schema change applied"
                );
                return Ok((next, true));
            }
        }
    }

    /// The source's shape: the value schema's row fields, and the key schema's fields.
    fn shape(schema: &ConnectSchema, record: &SourceRecord) -> Option<(SourceShape, Vec<(String, Conversion)>)> {
        let fields = row_fields(schema)?;
        let key = record.key_bytes().and_then(|k| record_key_fields(&k));
        let conversions = fields.iter().map(|(c, conv)| (c.name.clone(), *conv)).collect();
        let columns = fields.into_iter().map(|(c, _)| c).collect();
        Some((SourceShape { columns, key }, conversions))
    }

    fn build_layout(&mut self, schema_json: &[u8], record: &SourceRecord, epoch: Epoch) -> Result<RowLayout, Fail> {
        let schema: ConnectSchema = serde_json::from_slice(schema_json)
            .map_err(|e| DeadReason::Unparseable(format!("unreadable Connect schema: {e}")))?;
        let (shape, conversions) = Self::shape(&schema, record)
            .ok_or_else(|| DeadReason::Unparseable("the value schema has no `after` or `before` struct".to_string()))?;
        let (version, _) = self.resolve(&shape, &Observed::default(), record, epoch)?;
        self.adopt(version)?;
        // The oldest version this record fits: its rows are typed for it, and it is the
        // version the record's epoch needs (see `note_use`).
        let versions = self.versions.all();
        let fits = |v: &Version| {
            shape.columns.iter().all(|c| {
                v.schema.position(&c.name).is_some_and(|p| {
                    let col = &v.schema.columns[p];
                    writable(col.ty, c.ty) && (col.nullable || !c.nullable || v.schema.key.contains(&p))
                })
            })
        };
        let needed = versions.iter().find(|v| fits(v)).unwrap_or(&self.version);
        let (needed_number, target) = (needed.number, Arc::clone(&needed.schema));
        let table = self.schema();
        let mut slots = Vec::with_capacity(conversions.len());
        let mut source_types = Vec::with_capacity(conversions.len());
        for (name, conversion) in conversions {
            let position = table.position(&name).ok_or_else(|| {
                DeadReason::TypeMismatch(format!(
                    "field `{name}` of `{}` is not a column of the table (schema drift)",
                    self.topic
                ))
            })?;
            let table_ty = target.columns.get(position).map_or(table.columns[position].ty, |c| c.ty);
            if !writable(table_ty, conversion.column_type()) {
                return Err(Fail::Dead(DeadReason::TypeMismatch(format!(
                    "field `{name}` of `{}` is {} in the record but {table_ty} in the table (schema drift)",
                    self.topic,
                    conversion.column_type()
                ))));
            }
            source_types.push(conversion.column_type());
            slots.push(FieldSlot { name, conversion: conversion.widened_to(table_ty), position });
        }
        let mut layout = RowLayout::new(table.columns.len(), slots);
        layout.source_types = source_types;
        layout.version = needed_number;
        Ok(layout)
    }

    /// Tells the versions that a row of `epoch` needs `version` (once per lower epoch).
    fn note_use(&mut self, version: u32, epoch: Epoch) {
        let slot = version as usize;
        if self.used.len() <= slot {
            self.used.resize(slot + 1, u64::MAX);
        }
        if epoch < self.used[slot] {
            self.used[slot] = epoch;
            self.versions.used_at(version, epoch);
        }
    }

    fn event_of(
        &mut self,
        record: &SourceRecord,
        env: Envelope<'_>,
        layout: &Arc<RowLayout>,
    ) -> Result<Event, DeadReason> {
        let op_text = env.op.as_deref().ok_or_else(|| DeadReason::UnknownOp("missing `op`".to_string()))?;
        let op = Op::parse(op_text).ok_or_else(|| DeadReason::UnknownOp(format!("unknown op `{op_text}`")))?;
        let Envelope { before: before_raw, after: after_raw, after_row, source_ts_ms, .. } = env;
        let (before_raw, after_raw) = match op {
            Op::Create | Op::Read | Op::Update if after_raw.is_none() => {
                return Err(DeadReason::Unparseable(format!("op `{}` without an after image", op.as_str())));
            }
            Op::Create | Op::Read => (None, after_raw),
            Op::Delete => (before_raw, None),
            Op::Update => (before_raw, after_raw),
        };
        let mut after = match (after_raw, after_row) {
            (Some(_), Some(typed)) => typed,
            (Some(raw), None) => self.parse_image(layout, raw)?,
            (None, _) => None,
        };
        // Typed before images are needed only by deletes (the CDC table's image).
        let mut before = match (op, before_raw) {
            (Op::Delete, Some(raw)) => self.parse_image(layout, raw)?,
            _ => None,
        };
        // Strict keys: a record key must parse and equal the image's key columns (an
        // update's before image has the after image's key, so the after image decides).
        let record_key = self.record_key(record, layout)?;
        if let Some(given) = &record_key
            && let Some(image) = after.as_ref().or(before.as_ref())
        {
            let from_image = image.project(&self.schema().key);
            if from_image.0.iter().all(|v| !v.is_null()) && from_image != *given {
                let columns = self.key_columns(layout);
                return Err(DeadReason::KeyMismatch {
                    record: describe(&columns, given),
                    image: describe(&columns, &from_image),
                });
            }
        }
        // An unchanged image proves an update is a no-op only if the image covers every
        // column of the table: a column the source dropped may still hold an older value.
        let covers = layout.fields.len() >= layout.width;
        let before_digest = before_raw.filter(|_| covers).map(image_digest);
        let mut after_digest = after_raw.map(image_digest);
        if let Some(row) = &after {
            self.check_not_null(row, "after image")?;
        }
        if let Some(t) = &self.transform {
            if let Some(row) = after.as_mut() {
                if !t(&mut RowMut::new(&self.version.schema, row)) {
                    after = None;
                    after_digest = None;
                } else {
                    self.check_not_null(row, "after image (after the transform)")?;
                }
            }
            if let Some(row) = before.as_mut()
                && !t(&mut RowMut::new(&self.version.schema, row))
            {
                before = None;
            }
        }
        let key = match (&after, &before, op, before_raw) {
            // An update's before image is not decoded; its key equals the after image's.
            (None, None, Op::Update, Some(raw)) => self.key_of(record_key, self.parse_image(layout, raw)?.as_ref())?,
            _ => self.key_of(record_key, after.as_ref().or(before.as_ref()))?,
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

    fn check_not_null(&self, row: &Row, what: &str) -> Result<(), DeadReason> {
        for &i in &self.not_null {
            if row.0[i].is_null() {
                return Err(DeadReason::NotNullViolated(format!(
                    "{what}: column `{}` is NULL but the table requires a value",
                    self.schema().columns[i].name
                )));
            }
        }
        Ok(())
    }

    /// The key columns, each converted as `layout` converts the row image's column
    /// (cached per layout).
    fn key_columns(&mut self, layout: &Arc<RowLayout>) -> Arc<[KeyColumn]> {
        if let Some((cached, columns)) = &self.key_columns
            && Arc::ptr_eq(cached, layout)
        {
            return Arc::clone(columns);
        }
        let schema = self.schema();
        let columns: Arc<[KeyColumn]> = schema
            .key
            .iter()
            .map(|&pos| {
                let column = &schema.columns[pos];
                let conversion = layout
                    .slot_named(&column.name)
                    .map_or_else(|| Conversion::for_declared(column.ty), |slot| slot.conversion);
                KeyColumn { name: column.name.clone(), conversion }
            })
            .collect();
        self.key_columns = Some((Arc::clone(layout), Arc::clone(&columns)));
        columns
    }

    /// The record key's values, if the record has a key.
    fn record_key(&mut self, record: &SourceRecord, layout: &Arc<RowLayout>) -> Result<Option<Row>, DeadReason> {
        let Some(tail) = record.key.as_deref() else { return Ok(None) };
        let columns = self.key_columns(layout);
        self.keys.parse(record.key_prefix.as_ref(), tail, &columns).map(Some)
    }

    /// The event's key: the (transformed) image's key columns, else the record key.
    fn key_of(&self, record_key: Option<Row>, image: Option<&Row>) -> Result<Row, DeadReason> {
        if let Some(row) = image {
            let key = row.project(&self.schema().key);
            if key.0.iter().all(|v| !v.is_null()) {
                return Ok(key);
            }
        }
        record_key.ok_or_else(|| {
            DeadReason::MissingKey("missing key: no record key and no image with the key columns".to_string())
        })
    }
}

/// Positions that must be non-null in an after image: NOT NULL columns and the key.
fn not_null(schema: &TableSchema) -> Vec<usize> {
    schema.columns.iter().enumerate().filter(|(i, c)| !c.nullable || schema.key.contains(i)).map(|(i, _)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema_versions::SchemaVersions;
    use floe_engine::schema::{Column, ColumnType, TableSchema, TableSchemaRef};
    use floe_engine::value::Value;
    use std::collections::BTreeSet;

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

    /// A decoder of table 0 (`id`, `name`) under the additive policy; `declared` accepts
    /// payload-only records.
    fn decoder(declared: bool) -> TableDecoder {
        TableDecoder::new(
            0,
            "t",
            SchemaVersions::new(schema(), BTreeSet::new()),
            declared,
            SchemaPolicy::Additive,
            None,
        )
    }

    /// A decoder over shared `versions`, to watch what it evolves.
    fn decoder_over(versions: &VersionsRef) -> TableDecoder {
        TableDecoder::new(0, "t", Arc::clone(versions), false, SchemaPolicy::Additive, None)
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
        let mut d = decoder(false);
        let first =
            d.decode(record(0, r#"{"before":null,"after":{"id":1,"name":"a"},"op":"c","source":{"ts_ms":5}}"#), 0);
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
            matches!(d.decode(split, 0), Decoded::Event(ref e) if e.after.as_ref().is_some_and(|a| a.0[1] == Value::String("z".into())))
        );
        let second = d.decode(record(1, r#"{"before":{"id":1,"name":"a"},"after":{"id":1,"name":"b"},"op":"u"}"#), 0);
        match second {
            Decoded::Event(e) => {
                assert_eq!(e.op, Op::Update);
                assert_eq!(e.after, Some(Row::new(vec![Value::Long(1), Value::String("b".into())])));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_layout_decodes_alike_on_both_paths() {
        let payload = r#"{"before":{"id":1,"name":"a"},"after":{"id":1,"name":"b\u00e9"},"source":{"db":"x","ts_ms":9},"op":"u","ts_ms":10}"#;
        let reordered = r#"{"ts_ms":10,"op":"u","source":{"ts_ms":9,"db":"x"},"after":{"id":1,"name":"b\u00e9"},"before":{"id":1,"name":"a"}}"#;
        let spaced = |t: &str| t.replace("\":", "\": ").replace(",\"", ", \"");
        let layouts = [
            format!(r#"{{"schema":{SCHEMA},"payload":{payload}}}"#),
            spaced(&format!(r#"{{"schema":{SCHEMA},"payload":{payload}}}"#)),
            format!(r#"{{"schema":{SCHEMA},"payload":{reordered}}}"#),
            spaced(&format!("{{\n  \"payload\":{reordered},\n  \"schema\":{SCHEMA}\n}}\n")),
        ];
        let expected = Row::new(vec![Value::Long(1), Value::String("bé".into())]);
        let (mut fast, mut slow) = (decoder(false), decoder(false).with_fast_path(false));
        for (round, value) in layouts.iter().cycle().take(2 * layouts.len()).enumerate() {
            let record =
                SourceRecord::new(0, 0, round as i64, Some(br#"{"id":1}"#.to_vec()), Some(value.clone().into_bytes()));
            let (a, b) = (fast.decode(record.clone(), 0), slow.decode(record, 0));
            assert_eq!(a, b, "{value}");
            match a {
                Decoded::Event(e) => {
                    assert_eq!(
                        (e.op, e.source_ts_ms, e.after.as_ref()),
                        (Op::Update, Some(9), Some(&expected)),
                        "{value}"
                    );
                }
                other => panic!("{value}: {other:?}"),
            }
        }
        // Each layout's first record teaches the slow path its schema text; every other
        // record takes the fast path.
        assert_eq!((fast.fast_hits(), slow.fast_hits()), (2 * layouts.len() as u64 - 2, 0));
    }

    #[test]
    fn bad_records_become_dead_letters_with_reasons() {
        let mut d = decoder(false);
        let cases = [
            (r#"{"after":{"id":1},"op":"x"}"#.to_string(), "unknown op `x`", "unknown_op"),
            (r#"{"after":{"id":1}}"#.to_string(), "missing `op`", "unknown_op"),
            (r#"{"after":{"id":"one"},"op":"c"}"#.to_string(), "column `id`", "type_mismatch"),
            (r#"{"after":{"id":1.5e300},"op":"c"}"#.to_string(), "column `id`", "type_mismatch"),
            (r#"{"after":{"id":1,"name":7},"op":"c"}"#.to_string(), "column `name`", "type_mismatch"),
            (r#"{"after":{"id":null},"op":"c"}"#.to_string(), "`id` is NULL", "not_null_violated"),
            (r#"{"before":null,"op":"c"}"#.to_string(), "without an after image", "unparseable"),
        ];
        for (payload, reason, kind) in cases {
            match d.decode(record(0, &payload), 0) {
                Decoded::Dead(dl) => {
                    assert!(dl.reason.to_string().contains(reason), "{payload}: {}", dl.reason);
                    assert_eq!(dl.reason.kind(), kind, "{payload}: {}", dl.reason);
                    assert!(dl.value.is_some());
                }
                other => panic!("{payload}: {other:?}"),
            }
        }
        let garbage = SourceRecord::new(0, 0, 9, None, Some(b"{not json".to_vec()));
        assert!(matches!(d.decode(garbage, 0), Decoded::Dead(ref dl)
            if dl.reason.to_string().contains("unparseable JSON") && dl.reason.kind() == "unparseable"));
    }

    #[test]
    fn a_record_key_must_parse_and_equal_the_image_key() {
        let mut d = decoder(false);
        let keyed = |offset: i64, key: &[u8], payload: &str| {
            SourceRecord::new(
                0,
                0,
                offset,
                Some(key.to_vec()),
                Some(format!(r#"{{"schema":{SCHEMA},"payload":{payload}}}"#).into_bytes()),
            )
        };
        let insert = r#"{"before":null,"after":{"id":1,"name":"a"},"op":"c"}"#;
        let delete = r#"{"before":{"id":1,"name":"a"},"after":null,"op":"d"}"#;
        // Agreeing keys, in every form a producer writes them.
        let with_schema = br#"{"schema":{"type":"struct","fields":[{"type":"int64","optional":false,"field":"id"}],"optional":false,"name":"k"},"payload":{"id":1}}"#;
        for key in [&br#"{"id":1}"#[..], b"1", br#"{ "id" : 1 }"#, with_schema, with_schema] {
            assert!(
                matches!(d.decode(keyed(0, key, insert), 0), Decoded::Event(_)),
                "{}",
                String::from_utf8_lossy(key)
            );
            assert!(matches!(d.decode(keyed(1, key, delete), 0), Decoded::Event(_)));
        }
        // A key that disagrees names both values.
        for (key, payload) in [
            (&br#"{"id":2}"#[..], insert),
            (br#"{"id":2}"#, delete),
            (&with_schema[..], &insert.replace("\"id\":1", "\"id\":3")[..]),
        ] {
            match d.decode(keyed(2, key, payload), 0) {
                Decoded::Dead(dl) => {
                    assert_eq!(dl.reason.kind(), "key_mismatch", "{}", dl.reason);
                    let text = dl.reason.to_string();
                    assert!(
                        text.contains("id=") && text.contains("record key") && text.contains("row image"),
                        "{text}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        // An unparseable key, and one without the key column.
        for (key, kind) in
            [(&b"{id:"[..], "unparseable"), (br#"{"other":1}"#, "missing_key"), (br#"{"id":"x"}"#, "type_mismatch")]
        {
            match d.decode(keyed(3, key, insert), 0) {
                Decoded::Dead(dl) => assert_eq!(dl.reason.kind(), kind, "{}", dl.reason),
                other => panic!("{other:?}"),
            }
        }
        // Tombstones are skipped whatever their key.
        assert_eq!(d.decode(SourceRecord::new(0, 0, 4, Some(b"{bad".to_vec()), None), 0), Decoded::Tombstone);
    }

    #[test]
    fn tombstones_are_skipped_and_key_falls_back_to_record_key() {
        let mut d = decoder(false);
        let tomb = SourceRecord::new(0, 0, 3, Some(b"{}".to_vec()), None);
        assert_eq!(d.decode(tomb, 0), Decoded::Tombstone);
        let del = d.decode(record(4, r#"{"before":null,"after":null,"op":"d"}"#), 0);
        assert!(matches!(del, Decoded::Event(ref e) if e.key == Row::new(vec![Value::Long(1)])), "{del:?}");
    }

    #[test]
    fn schemaless_needs_declared_columns() {
        let mut strict = decoder(false);
        let rec = SourceRecord::new(0, 0, 0, None, Some(br#"{"after":{"id":2},"op":"r"}"#.to_vec()));
        assert!(
            matches!(strict.decode(rec.clone(), 0), Decoded::Dead(ref dl) if dl.reason.to_string().contains("declares no `columns`"))
        );
        let mut lenient = decoder(true);
        assert!(matches!(lenient.decode(rec, 0), Decoded::Event(ref e) if e.key == Row::new(vec![Value::Long(2)])));
    }

    fn record_with(partition: i32, offset: i64, schema: &str, payload: &str) -> SourceRecord {
        SourceRecord::new(
            0,
            partition,
            offset,
            None,
            Some(format!(r#"{{"schema":{schema},"payload":{payload}}}"#).into_bytes()),
        )
    }

    #[test]
    fn a_new_field_evolves_the_table_before_its_first_row() {
        let versions = SchemaVersions::new(schema(), BTreeSet::new());
        let mut d = decoder_over(&versions);
        let drifted = SCHEMA.replace(
            r#""field":"name"}],"optional":true,"field":"after""#,
            r#""field":"name"},{"type":"int32","optional":true,"field":"qty"}],"optional":true,"field":"after""#,
        );
        let new = d.decode(record_with(0, 0, &drifted, r#"{"after":{"id":1,"qty":3},"op":"c"}"#), 4);
        let Decoded::Event(e) = new else { panic!("{new:?}") };
        assert_eq!(e.after.expect("after").0.len(), 3, "the row has the new column");
        let latest = versions.latest();
        assert_eq!((latest.number, latest.schema.columns[2].name.as_str()), (1, "qty"));
        // A record of a partition still on the old schema is not a drop: it decodes.
        let old = d.decode(record_with(1, 0, SCHEMA, r#"{"after":{"id":2,"name":"x"},"op":"c"}"#), 4);
        assert!(matches!(old, Decoded::Event(_)), "{old:?}");
        assert!(!versions.is_paused_at(4));
    }

    #[test]
    fn a_partition_that_drops_a_field_pauses_the_table_from_that_epoch() {
        let versions = SchemaVersions::new(schema(), BTreeSet::new());
        let mut d = decoder_over(&versions);
        let first = d.decode(record_with(0, 0, SCHEMA, r#"{"after":{"id":1,"name":"a"},"op":"c"}"#), 2);
        assert!(matches!(first, Decoded::Event(_)));
        let dropped = SCHEMA.replace(
            r#"{"type":"int64","optional":false,"field":"id"},{"type":"string","optional":true,"field":"name"}],"optional":true,"field":"after""#,
            r#"{"type":"int64","optional":false,"field":"id"}],"optional":true,"field":"after""#,
        );
        let held = d.decode(record_with(0, 1, &dropped, r#"{"after":{"id":1},"op":"u"}"#), 3);
        assert_eq!(held, Decoded::Held);
        let pause = versions.pause_state().expect("paused");
        assert_eq!((pause.from_epoch, pause.first.offset), (3, 1));
        assert!(pause.changes.iter().any(|c| c.to_string().contains("`name` was dropped")), "{pause:?}");
        // Later records of the table are held too; earlier epochs (a lagging partition) are not.
        assert_eq!(d.decode(record_with(1, 7, SCHEMA, r#"{"after":{"id":5,"name":"b"},"op":"c"}"#), 3), Decoded::Held);
        assert!(matches!(
            d.decode(record_with(1, 6, SCHEMA, r#"{"after":{"id":4,"name":"b"},"op":"c"}"#), 2),
            Decoded::Event(_)
        ));
    }
}
