//! The Kafka record key, parsed into the table's key columns so the decoder can check it
//! against the row image.
//!
//! ```text
//!   key bytes ─┬─ starts with the cached `{"schema":K,"payload":` ──► parse only `payload}`
//!              └─ otherwise: find schema and payload (or take the bytes as the payload),
//!                 remember the prefix for the next key
//!   payload: {"id": 7, "region": "eu"}  (or a bare 7 for a one-column key)
//!        ──► each key column converted as the value layout converts it ──► Row
//! ```
//!
//! # Invariants
//! - A key column is converted by the same [`Conversion`] as the row image's column, so
//!   equal source values give equal key values (a millisecond timestamp stays one).
//! - Fields of the key that are not key columns are ignored; a key column the key lacks,
//!   or holds as NULL, is a missing key.
//! - The fast path is an optimisation only: when it fails, the slow path decides.

use std::fmt;
use std::sync::Arc;

use floe_engine::value::{Row, Value};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::connect_schema::Conversion;
use super::convert::ValueSeed;
use super::dead_reason::{DeadReason, has_hint};
use super::envelope::{ConnectMessage, adopt_if_same, payload_of_tail, schema_prefix};

/// One key column: its name and how its JSON converts.
#[derive(Clone, Debug)]
pub struct KeyColumn {
    /// Column name.
    pub name: String,
    /// Conversion (the value layout's for the column).
    pub conversion: Conversion,
}

/// Parses record keys of one table; remembers the schema prefix of the last key with one.
#[derive(Default)]
pub struct KeyParser {
    prefix: Option<Arc<[u8]>>,
}

impl KeyParser {
    /// The key columns' values in `key`: the whole key's bytes, or (with `shared`) the
    /// tail after a prefix the source shares between records.
    pub fn parse(&mut self, shared: Option<&Arc<[u8]>>, tail: &[u8], columns: &[KeyColumn]) -> Result<Row, DeadReason> {
        if let (Some(shared), Some(mine)) = (shared, self.prefix.as_mut())
            && adopt_if_same(mine, shared)
            && let Some(row) = payload_of_tail(tail).and_then(|p| parse_payload(p, columns).ok())
        {
            return Ok(row);
        }
        let whole;
        let bytes = match shared {
            Some(p) => {
                whole = [&p[..], tail].concat();
                &whole[..]
            }
            None => tail,
        };
        if let Some(mine) = &self.prefix
            && let Some(rest) = bytes.strip_prefix(&mine[..])
            && let Some(row) = payload_of_tail(rest).and_then(|p| parse_payload(p, columns).ok())
        {
            return Ok(row);
        }
        self.parse_slow(bytes, columns)
    }

    fn parse_slow(&mut self, bytes: &[u8], columns: &[KeyColumn]) -> Result<Row, DeadReason> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| DeadReason::Unparseable(format!("unparseable key: not UTF-8 ({e})")))?;
        let payload = match serde_json::from_str::<ConnectMessage<'_>>(text) {
            Ok(ConnectMessage { schema: Some(schema), payload: Some(payload) }) => {
                let prefix = schema_prefix(schema);
                if bytes.starts_with(&prefix) {
                    self.prefix = Some(Arc::from(prefix));
                }
                payload.get().as_bytes()
            }
            // An object without the envelope, or a scalar: the key itself is the payload.
            _ => bytes,
        };
        parse_payload(payload, columns)
    }
}

fn parse_payload(payload: &[u8], columns: &[KeyColumn]) -> Result<Row, DeadReason> {
    let values = match super::payload_parser::key_values(payload, columns) {
        Ok(values) => values,
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(payload);
            KeySeed { columns }.deserialize(&mut de).and_then(|v| de.end().map(|()| v)).map_err(|e| {
                match (has_hint(), DeadReason::of_json(&e)) {
                    // A column refused its value: say which (type or range).
                    (true, reason) | (false, reason @ DeadReason::NestingTooDeep(_)) => reason,
                    // Not JSON, or not shaped like a key.
                    (false, _) => DeadReason::Unparseable(format!("unparseable key: {e}")),
                }
            })?
        }
    };
    let mut row = Vec::with_capacity(columns.len());
    for (column, value) in columns.iter().zip(values) {
        match value {
            None => return Err(DeadReason::MissingKey(format!("missing key: record key has no `{}`", column.name))),
            Some(Value::Null) => {
                return Err(DeadReason::MissingKey(format!("missing key: key column `{}` is null", column.name)));
            }
            Some(v) => row.push(v),
        }
    }
    Ok(Row::new(row))
}

/// Key payload → one value (or `None`: absent) per key column.
struct KeySeed<'c> {
    columns: &'c [KeyColumn],
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Vec<Option<Value>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match self.columns {
            // A one-column key may be a bare value; `deserialize_any` sees which.
            [only] => d.deserialize_any(SingleOrMap { only, columns: self.columns }),
            _ => d.deserialize_map(self),
        }
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Vec<Option<Value>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        key_map(self.columns, map)
    }
}

fn key_map<'de, A: MapAccess<'de>>(columns: &[KeyColumn], mut map: A) -> Result<Vec<Option<Value>>, A::Error> {
    let mut out = vec![None; columns.len()];
    while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
        match columns.iter().position(|c| c.name == name) {
            Some(i) => {
                out[i] = Some(map.next_value_seed(ValueSeed { conversion: columns[i].conversion, column: &name })?)
            }
            None => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(out)
}

/// A one-column key: an object holding the column, or the bare value.
struct SingleOrMap<'c> {
    only: &'c KeyColumn,
    columns: &'c [KeyColumn],
}

impl<'de> Visitor<'de> for SingleOrMap<'_> {
    type Value = Vec<Option<Value>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a key object or a bare `{}` value", self.only.name)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        key_map(self.columns, map)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(vec![Some(Value::Null)])
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.bare(de::value::BoolDeserializer::new(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.bare(de::value::I64Deserializer::new(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.bare(de::value::U64Deserializer::new(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.bare(de::value::F64Deserializer::new(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.bare(de::value::StrDeserializer::new(v))
    }
}

impl SingleOrMap<'_> {
    fn bare<'de, E: de::Error, D: Deserializer<'de, Error = E>>(self, d: D) -> Result<Vec<Option<Value>>, E> {
        let v = ValueSeed { conversion: self.only.conversion, column: &self.only.name }.deserialize(d)?;
        Ok(vec![Some(v)])
    }
}

/// `(a=1, b="x")`: key values by column, for messages.
pub fn describe(columns: &[KeyColumn], row: &Row) -> String {
    let parts: Vec<String> = columns.iter().zip(row.0.iter()).map(|(c, v)| format!("{}={v}", c.name)).collect();
    format!("({})", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(names: &[&str]) -> Vec<KeyColumn> {
        names
            .iter()
            .map(|n| KeyColumn {
                name: n.to_string(),
                conversion: if *n == "id" { Conversion::Long } else { Conversion::String },
            })
            .collect()
    }

    const WITH_SCHEMA: &str = r#"{"schema":{"type":"struct","fields":[{"type":"int64","optional":false,"field":"id"}],"optional":false,"name":"k"},"payload":{"id":7}}"#;

    #[test]
    fn keys_with_and_without_schema_and_bare_values() {
        let id = columns(&["id"]);
        let mut p = KeyParser::default();
        let seven = Row::new(vec![Value::Long(7)]);
        assert_eq!(p.parse(None, WITH_SCHEMA.as_bytes(), &id), Ok(seven.clone()));
        // Now the prefix is cached: the next key parses only its payload.
        assert!(p.prefix.is_some());
        let next = WITH_SCHEMA.replace(r#"{"id":7}"#, r#"{"id":8}"#);
        assert_eq!(p.parse(None, next.as_bytes(), &id), Ok(Row::new(vec![Value::Long(8)])));
        assert_eq!(p.parse(None, br#"{"id":7}"#, &id), Ok(seven.clone()));
        assert_eq!(p.parse(None, b"7", &id), Ok(seven.clone()));
        assert_eq!(p.parse(None, br#"{ "id" : 7 , "other": [1, 2] }"#, &id), Ok(seven));
    }

    #[test]
    fn a_shared_prefix_is_recognised() {
        let id = columns(&["id"]);
        let mut p = KeyParser::default();
        p.parse(None, WITH_SCHEMA.as_bytes(), &id).expect("learn");
        let cut = WITH_SCHEMA.find(r#"{"id":7}"#).expect("payload");
        let shared: Arc<[u8]> = Arc::from(&WITH_SCHEMA.as_bytes()[..cut]);
        let tail = &WITH_SCHEMA.as_bytes()[cut..];
        assert_eq!(p.parse(Some(&shared), tail, &id), Ok(Row::new(vec![Value::Long(7)])));
    }

    #[test]
    fn composite_keys_and_failures() {
        let cols = columns(&["id", "region"]);
        let mut p = KeyParser::default();
        assert_eq!(
            p.parse(None, br#"{"region":"eu","id":1}"#, &cols),
            Ok(Row::new(vec![Value::Long(1), Value::String("eu".into())]))
        );
        let kind = |bytes: &[u8], p: &mut KeyParser| p.parse(None, bytes, &cols).expect_err("bad").kind();
        assert_eq!(kind(br#"{"id":1}"#, &mut p), "missing_key");
        assert_eq!(kind(br#"{"id":null,"region":"eu"}"#, &mut p), "missing_key");
        assert_eq!(kind(br#"{"id":"x","region":"eu"}"#, &mut p), "type_mismatch");
        assert_eq!(kind(br#"{"id":1,"#, &mut p), "unparseable");
        assert_eq!(kind(b"\xff\xfe", &mut p), "unparseable");
        assert_eq!(kind(b"7", &mut p), "unparseable");
    }

    #[test]
    fn describes_keys_by_column() {
        let cols = columns(&["id", "region"]);
        let row = Row::new(vec![Value::Long(1), Value::String("eu".into())]);
        assert_eq!(describe(&cols, &row), r#"(id=1, region="eu")"#);
    }
}
