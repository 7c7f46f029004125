//! Streaming parse of a Debezium payload (`before`, `after`, `source`, `op`) straight into
//! typed rows.
//!
//! ```text
//!   {"before": {...}|null, "after": {...}|null, "source": {..., "ts_ms": n, ...}, "op": "u", ...}
//!        │                   │                          │                          │
//!     raw JSON            raw JSON               `"ts_ms"` lookup               op string
//!        ▼                   ▼                          ▼
//!   RowSeed (if needed)  RowSeed                Option<source ts>
//! ```
//!
//! # Invariants
//! - A row has exactly `layout.width` values; columns the image does not mention are NULL.
//! - A field the layout does not know is an error (it would be silently lost otherwise).
//! - Unknown envelope keys (`transaction`, `ts_ms`, ...) are skipped without allocation.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use floe_engine::value::{Row, Value};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::connect_schema::Conversion;
use super::convert::ValueSeed;
use super::dead_reason::DeadReason;

/// Where each source field of a row image lands in the table row.
#[derive(Clone, Debug)]
pub struct RowLayout {
    /// Columns in the table row.
    pub width: usize,
    /// Source fields in the order the schema lists them.
    pub fields: Vec<FieldSlot>,
    /// The type the source declares for each field (before any widening to the table's).
    pub source_types: Vec<floe_engine::schema::ColumnType>,
    /// The schema version the rows are typed for (the oldest one the source fits).
    pub version: u32,
    index: HashMap<String, usize>,
}

/// One source field.
#[derive(Clone, Debug)]
pub struct FieldSlot {
    /// Field (and column) name.
    pub name: String,
    /// JSON → value conversion.
    pub conversion: Conversion,
    /// Position in the table row.
    pub position: usize,
}

impl RowLayout {
    /// A layout of `fields` into rows of `width` columns.
    pub fn new(width: usize, fields: Vec<FieldSlot>) -> RowLayout {
        let index = fields.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
        let source_types = fields.iter().map(|f| f.conversion.column_type()).collect();
        RowLayout { width, fields, source_types, version: 0, index }
    }

    /// The slot for a field name; `hint` is where the field usually is.
    pub(crate) fn slot(&self, name: &str, hint: usize) -> Option<&FieldSlot> {
        match self.fields.get(hint) {
            Some(f) if f.name == name => Some(f),
            _ => self.index.get(name).map(|&i| &self.fields[i]),
        }
    }

    /// The slot of a column by name.
    pub fn slot_named(&self, name: &str) -> Option<&FieldSlot> {
        self.index.get(name).map(|&i| &self.fields[i])
    }
}

/// The Debezium op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// `c`: insert.
    Create,
    /// `u`: update.
    Update,
    /// `d`: delete.
    Delete,
    /// `r`: snapshot read.
    Read,
}

impl Op {
    /// Parses the one-letter op.
    pub fn parse(s: &str) -> Option<Op> {
        match s {
            "c" => Some(Op::Create),
            "u" => Some(Op::Update),
            "d" => Some(Op::Delete),
            "r" => Some(Op::Read),
            _ => None,
        }
    }

    /// The one-letter op.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
        }
    }
}

/// A parsed payload. The images stay raw JSON (borrowed from the input) until the decoder
/// knows which it needs typed: updates keep only a digest of their before image. The fast
/// path types the after image as it reads it (`after_row`).
#[derive(Clone, Debug, Default)]
pub struct Envelope<'de> {
    /// Before image, as JSON text (`null` → `None`).
    pub before: Option<&'de [u8]>,
    /// After image, as JSON text (`null` → `None`).
    pub after: Option<&'de [u8]>,
    /// The after image already typed by the fast path (`Some(None)`: it was `null`).
    pub after_row: Option<Option<Row>>,
    /// The op text as found (validated by the decoder).
    pub op: Option<Cow<'de, str>>,
    /// `source.ts_ms`.
    pub source_ts_ms: Option<i64>,
    /// Whether any envelope key (`op`, `before`, `after`) was present.
    pub looks_like_envelope: bool,
}

/// Map key that borrows when the input allows.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}

/// Parses one row image (`null` → `None`).
#[derive(Clone, Copy)]
pub struct RowSeed<'a> {
    /// The layout.
    pub layout: &'a RowLayout,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Option<Row>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = Option<Row>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row object or null")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut values = vec![Value::Null; self.layout.width];
        let mut i = 0;
        while let Some(name) = map.next_key_seed(KeySeed)? {
            let slot = self
                .layout
                .slot(&name, i)
                .ok_or_else(|| de::Error::custom(format!("field `{name}` is not a column of the table")))?;
            values[slot.position] =
                map.next_value_seed(ValueSeed { conversion: slot.conversion, column: &slot.name })?;
            i += 1;
        }
        Ok(Some(Row::new(values)))
    }
}

/// `ts_ms` of a `source` block, found by its key rather than by parsing every field: the
/// block is flat (Debezium's source struct), and inside JSON strings a quote is always
/// escaped, so the bytes `"ts_ms"` followed by `:` can only be that key.
pub(crate) fn source_ts_ms(text: &[u8]) -> Option<i64> {
    let at = memchr::memmem::find(text, b"\"ts_ms\"")? + 7;
    let rest = text[at..].trim_ascii_start().strip_prefix(b":")?.trim_ascii_start();
    let end = rest.iter().position(|b| !(b.is_ascii_digit() || *b == b'-')).unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// A Kafka Connect JsonConverter message, `{"schema": S, "payload": P}`, either part absent
/// in schemaless messages. Values and keys share it.
#[derive(serde::Deserialize)]
pub(crate) struct ConnectMessage<'a> {
    #[serde(borrow, default)]
    pub schema: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub payload: Option<&'a RawValue>,
}

/// `{"schema":S,"payload":`: what every compact message with schema `S` starts with, and
/// what the fast paths skip.
pub(crate) fn schema_prefix(schema: &RawValue) -> Vec<u8> {
    [b"{\"schema\":".as_slice(), schema.get().as_bytes(), b",\"payload\":"].concat()
}

/// `payload}` (what follows a schema prefix) → `payload`.
pub(crate) fn payload_of_tail(tail: &[u8]) -> Option<&[u8]> {
    tail.trim_ascii_end().strip_suffix(b"}")
}

/// Whether a source's `shared` prefix is the prefix in `mine`; adopts the source's
/// allocation, so later checks are a pointer comparison.
pub(crate) fn adopt_if_same(mine: &mut Arc<[u8]>, shared: &Arc<[u8]>) -> bool {
    if Arc::ptr_eq(mine, shared) {
        return true;
    }
    if mine[..] == shared[..] {
        *mine = Arc::clone(shared);
        return true;
    }
    false
}

/// Parses a payload object into an [`Envelope`].
#[derive(Clone, Copy)]
pub struct EnvelopeSeed<'a> {
    /// Layout of both images (kept for symmetry with [`RowSeed`]; images are parsed later).
    pub layout: &'a RowLayout,
}

impl RowLayout {
    /// Parses a raw row image into a typed row: the fast path, else serde_json (which
    /// decides every rejection and its reason).
    pub fn parse(&self, raw: &[u8]) -> Result<Option<Row>, DeadReason> {
        super::payload_parser::row(raw, self).or_else(|_| self.parse_slow(raw))
    }

    /// Parses a raw row image with serde_json only.
    pub fn parse_slow(&self, raw: &[u8]) -> Result<Option<Row>, DeadReason> {
        let mut de = serde_json::Deserializer::from_slice(raw);
        RowSeed { layout: self }
            .deserialize(&mut de)
            .and_then(|row| de.end().map(|()| row))
            .map_err(|e| DeadReason::of_json(&e))
    }
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = Envelope<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = Envelope<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Debezium payload object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut env = Envelope::default();
        while let Some(name) = map.next_key_seed(KeySeed)? {
            match name.as_ref() {
                "before" => {
                    env.before = map.next_value::<Option<&'de RawValue>>()?.map(|r| r.get().as_bytes());
                    env.looks_like_envelope = true;
                }
                "after" => {
                    env.after = map.next_value::<Option<&'de RawValue>>()?.map(|r| r.get().as_bytes());
                    env.looks_like_envelope = true;
                }
                "op" => {
                    env.op = map.next_value::<Option<String>>()?.map(Cow::Owned);
                    env.looks_like_envelope = true;
                }
                "source" => env.source_ts_ms = source_ts_ms(map.next_value::<&'de RawValue>()?.get().as_bytes()),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> RowLayout {
        RowLayout::new(
            3,
            vec![
                FieldSlot { name: "id".into(), conversion: Conversion::Long, position: 0 },
                FieldSlot { name: "name".into(), conversion: Conversion::String, position: 2 },
            ],
        )
    }

    #[test]
    fn parses_images_into_positions() {
        let l = layout();
        let json = r#"{"before":null,"after":{"name":"é\"x","id":7},"source":{"db":"x","ts_ms":42},"op":"c","transaction":null}"#;
        let mut de = serde_json::Deserializer::from_str(json);
        let env = EnvelopeSeed { layout: &l }.deserialize(&mut de).expect("parse");
        let after = l.parse(env.after.expect("after")).expect("row");
        assert_eq!(after, Some(Row::new(vec![Value::Long(7), Value::Null, Value::String("é\"x".into())])));
        assert!(env.before.is_none());
        assert_eq!(env.op.as_deref(), Some("c"));
        assert_eq!(env.source_ts_ms, Some(42));
    }

    #[test]
    fn source_timestamp_lookup() {
        let ts = |json: &str| source_ts_ms(json.as_bytes());
        assert_eq!(ts(r#"{"db":"x","query":"a \"ts_ms\" b","ts_ms" : -5,"row":0}"#), Some(-5));
        assert_eq!(ts(r#"{"db":"x"}"#), None);
        assert_eq!(ts("null"), None);
    }

    #[test]
    fn unknown_field_is_an_error() {
        let l = layout();
        let json = r#"{"after":{"id":1,"extra":2},"op":"c"}"#;
        let mut de = serde_json::Deserializer::from_str(json);
        let env = EnvelopeSeed { layout: &l }.deserialize(&mut de).expect("envelope");
        let err = l.parse(env.after.expect("after")).expect_err("unknown");
        assert!(err.to_string().contains("field `extra`"), "{err}");
    }

    #[test]
    fn nesting_too_deep_is_its_own_reason() {
        let l = RowLayout::new(
            2,
            vec![
                FieldSlot { name: "id".into(), conversion: Conversion::Long, position: 0 },
                FieldSlot { name: "doc".into(), conversion: Conversion::JsonText, position: 1 },
            ],
        );
        assert!(l.parse(br#"{"id":1,"doc":[[1]]}"#).is_ok());
        let deep = format!(r#"{{"id":1,"doc":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        assert_eq!(l.parse(deep.as_bytes()).expect_err("too deep").kind(), "nesting_too_deep");
    }
}
