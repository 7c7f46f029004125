//! The Debezium-specialised fast path: a Connect message, its payload and its row images
//! read by one [`Cursor`] walk, with each field converted straight into its typed value.
//!
//! ```text
//!   {"schema": S, "payload": {"before": {...}, "after": {...}, "source": {...}, "op": "u"}}
//!              │                         │              │              │            │
//!   S's text is a known schema       skipped,      typed as read,   skipped,   borrowed
//!   (a memcmp against the cache)     span kept     span kept        ts_ms found
//!                                    (digest)      (digest)         in its span
//! ```
//!
//! Any layout of valid JSON reads here: whitespace anywhere, `payload` before `schema`
//! (parsed with the layout last used, re-parsed if the schema says otherwise), and fields
//! of `payload` and `source` in any order.
//!
//! # Invariants
//! - What this parser accepts, the serde path ([`super::envelope::EnvelopeSeed`] and
//!   [`super::envelope::RowSeed`]) accepts with the same result: the same spans, the same
//!   typed values (each converted by the same [`ValueSeed`] visitor), later duplicate keys
//!   winning. Anything else is [`Unsure`], and the serde path decides, so rejections and
//!   their reasons are the serde path's alone.
//! - No per-field serde machinery: scalars reach the visitor directly; only a nested JSON
//!   value (a JSON-text column) goes through serde_json, on its own span.

use std::borrow::Cow;
use std::sync::Arc;

use floe_engine::value::{Row, Value};
use serde::de::{DeserializeSeed, Visitor};

use super::convert::ValueSeed;
use super::dead_reason::{DeadReason, take_hint};
use super::envelope::{Envelope, RowLayout, source_ts_ms};
use super::json_scan::{Cursor, Number, Scan, Unsure};
use super::record_key::KeyColumn;

/// Nesting of a row image's fields in a Connect message (message, payload, image).
const IMAGE_DEPTH: usize = 3;

/// One known value schema: its exact JSON text and the layout built from it.
pub type KnownSchema = (Box<[u8]>, Result<Arc<RowLayout>, DeadReason>);

/// What a whole message is read with.
pub struct MessageContext<'c> {
    /// Schemas seen before, by their text (the slow path learns them).
    pub known: &'c [KnownSchema],
    /// The layout of the last record, tried first when `payload` comes before `schema`.
    pub last: Option<&'c Arc<RowLayout>>,
    /// The declared columns' layout, for messages without a schema.
    pub declared: Option<&'c Arc<RowLayout>>,
}

/// A payload's raw text, and its reading with the layout used (if it could be read yet).
type PayloadSeen<'v, 'c> = (&'v [u8], Option<(Envelope<'v>, &'c Arc<RowLayout>)>);

/// Reads a whole Connect message `{"schema": S, "payload": P}` (any order, any
/// whitespace, other keys skipped) whose schema is known, or null with declared columns.
pub fn message<'v>(bytes: &'v [u8], cx: &MessageContext<'_>) -> Scan<(Envelope<'v>, Arc<RowLayout>)> {
    let mut c = Cursor::new(bytes);
    c.ws();
    let mut schema: Option<Option<&Arc<RowLayout>>> = None;
    // The payload's span, and its reading with the layout it was read with (if any yet).
    let mut payload: Option<PayloadSeen<'v, '_>> = None;
    c.object(|c, name| {
        match name.as_ref() {
            // serde refuses a duplicate `schema` or `payload`.
            "schema" if schema.is_none() => schema = Some(schema_at(c, cx)?),
            "payload" if payload.is_none() => {
                let start = c.at;
                let guess = schema.map_or(cx.last, |s| s.or(cx.declared));
                let mut attempt = c.clone();
                let parsed = match guess.map(|layout| (envelope_at(&mut attempt, layout, 1), layout)) {
                    Some((Ok(env), layout)) => {
                        *c = attempt;
                        Some((env, layout))
                    }
                    Some((Err(Unsure), _)) if schema.is_some() => return Err(Unsure),
                    // No guess, or a wrong one: read it once the schema says how.
                    _ => {
                        c.skip(1)?;
                        None
                    }
                };
                payload = Some((&c.bytes[start..c.at], parsed));
            }
            "schema" | "payload" => return Err(Unsure),
            _ => c.skip(1)?,
        }
        Ok(())
    })?;
    if !c.at_end() {
        return Err(Unsure);
    }
    let layout = match schema {
        Some(Some(layout)) => layout,
        Some(None) | None => cx.declared.ok_or(Unsure)?,
    };
    let (span, parsed) = payload.ok_or(Unsure)?;
    let env = match parsed {
        Some((env, used)) if Arc::ptr_eq(used, layout) => env,
        // Read with another layout before the schema said which: read again.
        _ => envelope(span, layout)?,
    };
    if !env.looks_like_envelope {
        return Err(Unsure);
    }
    Ok((env, Arc::clone(layout)))
}

/// The layout of the schema at the cursor: `Some` for a known schema, `None` for `null`.
fn schema_at<'c>(c: &mut Cursor<'_>, cx: &MessageContext<'c>) -> Scan<Option<&'c Arc<RowLayout>>> {
    if c.peek() == Some(b'n') {
        c.literal(b"null")?;
        return Ok(None);
    }
    let rest = &c.bytes[c.at..];
    // A known text is one complete JSON value, so a prefix match is the whole value.
    let (text, layout) = cx
        .known
        .iter()
        .rev()
        .find(|(text, _)| rest.starts_with(text))
        .map(|(text, layout)| (text, layout.as_ref()))
        .ok_or(Unsure)?;
    c.at += text.len();
    layout.map(Some).map_err(|_| Unsure)
}

/// Reads a payload object that is all of `bytes` (whitespace aside).
pub fn envelope<'v>(bytes: &'v [u8], layout: &RowLayout) -> Scan<Envelope<'v>> {
    let mut c = Cursor::new(bytes);
    c.ws();
    let env = envelope_at(&mut c, layout, 1)?;
    if c.at_end() { Ok(env) } else { Err(Unsure) }
}

/// Reads the payload object at the cursor, nested at `depth`.
fn envelope_at<'v>(c: &mut Cursor<'v>, layout: &RowLayout, depth: usize) -> Scan<Envelope<'v>> {
    let mut env = Envelope::default();
    c.object(|c, name| {
        match name.as_ref() {
            "before" => {
                env.before = image_span(c, depth + 1)?;
                env.looks_like_envelope = true;
            }
            "after" => {
                let start = c.at;
                env.after_row = Some(row_at(c, layout, depth + 1)?);
                env.after = env.after_row.as_ref().and_then(Option::as_ref).map(|_| &c.bytes[start..c.at]);
                env.looks_like_envelope = true;
            }
            "op" => {
                env.op = if c.peek() == Some(b'n') {
                    c.literal(b"null")?;
                    None
                } else {
                    Some(c.string()?)
                };
                env.looks_like_envelope = true;
            }
            "source" => env.source_ts_ms = source_ts_ms(c.skip_span(depth + 1)?),
            _ => c.skip(depth + 1)?,
        }
        Ok(())
    })?;
    Ok(env)
}

/// A row image's raw text (`null` → `None`); only objects are vouched for.
fn image_span<'v>(c: &mut Cursor<'v>, depth: usize) -> Scan<Option<&'v [u8]>> {
    match c.peek() {
        Some(b'n') => c.literal(b"null").map(|()| None),
        Some(b'{') => c.skip_span(depth).map(Some),
        _ => Err(Unsure),
    }
}

/// Reads a row image that is all of `bytes` (whitespace aside); `null` → `None`.
pub fn row(bytes: &[u8], layout: &RowLayout) -> Scan<Option<Row>> {
    let mut c = Cursor::new(bytes);
    c.ws();
    let row = row_at(&mut c, layout, IMAGE_DEPTH - 1)?;
    if c.at_end() { Ok(row) } else { Err(Unsure) }
}

/// Reads the row image at the cursor (an object nested at `depth`, or `null`).
fn row_at(c: &mut Cursor<'_>, layout: &RowLayout, depth: usize) -> Scan<Option<Row>> {
    if c.peek() == Some(b'n') {
        return c.literal(b"null").map(|()| None);
    }
    let mut values = vec![Value::Null; layout.width];
    let mut i = 0;
    c.object(|c, name| {
        let slot = layout.slot(&name, i).ok_or(Unsure)?;
        values[slot.position] = value_at(c, ValueSeed { conversion: slot.conversion, column: &slot.name }, depth + 1)?;
        i += 1;
        Ok(())
    })?;
    Ok(Some(Row::new(values)))
}

/// A key payload: an object holding the key columns (others skipped), or, for a
/// one-column key, the bare value. One value (or `None`: absent) per column.
pub fn key_values(bytes: &[u8], columns: &[KeyColumn]) -> Scan<Vec<Option<Value>>> {
    let mut c = Cursor::new(bytes);
    c.ws();
    let mut out = vec![None; columns.len()];
    if c.peek() == Some(b'{') {
        c.object(|c, name| match columns.iter().position(|k| *k.name == *name) {
            Some(i) => {
                let seed = ValueSeed { conversion: columns[i].conversion, column: &columns[i].name };
                out[i] = Some(value_at(c, seed, 2)?);
                Ok(())
            }
            None => c.skip(2),
        })?;
    } else {
        let [only] = columns else { return Err(Unsure) };
        out[0] = Some(match c.peek() {
            Some(b'n') => c.literal(b"null").map(|()| Value::Null)?,
            Some(b'[') => return Err(Unsure),
            _ => value_at(&mut c, ValueSeed { conversion: only.conversion, column: &only.name }, 1)?,
        });
    }
    if c.at_end() { Ok(out) } else { Err(Unsure) }
}

/// One field's value, converted by `seed` exactly as serde_json would hand it over. A
/// refusal leaves no hint behind: the serde path that decides next sets its own.
fn value_at(c: &mut Cursor<'_>, seed: ValueSeed<'_>, depth: usize) -> Scan<Value> {
    let value = convert(c, seed, depth);
    if value.is_err() {
        let _ = take_hint();
    }
    value
}

fn convert(c: &mut Cursor<'_>, seed: ValueSeed<'_>, depth: usize) -> Scan<Value> {
    match c.peek().ok_or(Unsure)? {
        b'"' => match c.string()? {
            Cow::Borrowed(s) => seed.visit_str(s),
            Cow::Owned(s) => seed.visit_str(&s),
        },
        b'-' | b'0'..=b'9' => match c.number()? {
            Number::U64(v) => seed.visit_u64(v),
            Number::I64(v) => seed.visit_i64(v),
            Number::F64(v) => seed.visit_f64(v),
        },
        b'n' => c.literal(b"null").and_then(|()| seed.visit_unit()),
        b't' => c.literal(b"true").and_then(|()| seed.visit_bool(true)),
        b'f' => c.literal(b"false").and_then(|()| seed.visit_bool(false)),
        b'{' | b'[' => {
            let span = c.skip_span(depth)?;
            let mut de = serde_json::Deserializer::from_slice(span);
            seed.deserialize(&mut de).map_err(|_| Unsure)
        }
        _ => Err(Unsure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debezium::connect_schema::Conversion;
    use crate::debezium::envelope::{EnvelopeSeed, FieldSlot};

    fn layout() -> Arc<RowLayout> {
        Arc::new(RowLayout::new(
            4,
            vec![
                FieldSlot { name: "id".into(), conversion: Conversion::Long, position: 0 },
                FieldSlot { name: "name".into(), conversion: Conversion::String, position: 1 },
                FieldSlot { name: "score".into(), conversion: Conversion::Double, position: 2 },
                FieldSlot { name: "doc".into(), conversion: Conversion::JsonText, position: 3 },
            ],
        ))
    }

    /// A payload's after row, before text, op and source time.
    type Reading = (Option<Row>, Option<Vec<u8>>, Option<String>, Option<i64>);

    /// The serde path's reading of a payload, for comparison.
    fn slow(payload: &str, layout: &RowLayout) -> Option<Reading> {
        let mut de = serde_json::Deserializer::from_str(payload);
        let env = EnvelopeSeed { layout }.deserialize(&mut de).ok()?;
        de.end().ok()?;
        let after = match env.after {
            Some(raw) => layout.parse_slow(raw).ok()?,
            None => None,
        };
        Some((after, env.before.map(<[u8]>::to_vec), env.op.map(Cow::into_owned), env.source_ts_ms))
    }

    fn fast(payload: &str, layout: &RowLayout) -> Option<Reading> {
        let env = envelope(payload.as_bytes(), layout).ok()?;
        let after = env.after_row.clone().flatten();
        Some((after, env.before.map(<[u8]>::to_vec), env.op.map(Cow::into_owned), env.source_ts_ms))
    }

    #[test]
    fn agrees_with_the_serde_path() {
        let l = layout();
        let payloads = [
            r#"{"before":null,"after":{"id":1,"name":"a","score":1.5,"doc":{"k":[1,2]}},"source":{"ts_ms":5},"op":"c"}"#,
            r#"{ "op" : "u" , "source" : { "ts_ms" : 7, "db" : "x" }, "after" : { "name" : "é\"\u00e9", "id" : -3 }, "before" : {"id": -3} }"#,
            r#"{"after":{"id":1,"score":-0,"doc":"text"},"after":{"id":2,"score":3},"op":"r","transaction":{"id":"t","n":[1,{"a":null}]}}"#,
            r#"{"after":{"id":1,"name":null,"doc":null},"op":null}"#,
            r#"{"after":{"id":9223372036854775807,"score":1e308},"op":"d"}"#,
        ];
        for p in payloads {
            let (f, s) = (fast(p, &l), slow(p, &l));
            assert!(f.is_some(), "fast path refused {p}");
            assert_eq!(f, s, "{p}");
        }
        // What the fast path refuses, it leaves to the serde path.
        let refused = [
            r#"{"after":{"id":"x"},"op":"c"}"#,
            r#"{"after":{"id":1,"extra":2},"op":"c"}"#,
            r#"{"after":{"id":1.5},"op":"c"}"#,
            r#"{"after":{"id":18446744073709551616},"op":"c"}"#,
            r#"{"after":5,"op":"c"}"#,
            r#"{"op":7}"#,
            r#"{"after":{"id":1},"op":"c"} x"#,
            "{\"after\":{\"id\":1,\"name\":\"\u{1}\"},\"op\":\"c\"}",
        ];
        for p in refused {
            assert_eq!(fast(p, &l), None, "{p}");
        }
    }

    #[test]
    fn reads_whole_messages_in_any_layout() {
        let l = layout();
        let schema = r#"{"type":"struct","fields":[]}"#;
        let known: Vec<KnownSchema> = vec![(schema.as_bytes().into(), Ok(Arc::clone(&l)))];
        let cx = MessageContext { known: &known, last: None, declared: None };
        let payload = r#"{"after":{"id":4},"op":"c"}"#;
        for text in [
            format!(r#"{{"schema":{schema},"payload":{payload}}}"#),
            format!(" {{ \"payload\" : {payload} ,\n \"schema\" : {schema} }} "),
            format!(r#"{{"extra":[1],"payload":{payload},"schema":{schema}}}"#),
        ] {
            let (env, used) = message(text.as_bytes(), &cx).unwrap_or_else(|_| panic!("{text}"));
            assert!(Arc::ptr_eq(&used, &l));
            assert_eq!(env.after_row.flatten().map(|r| r.0[0].clone()), Some(Value::Long(4)), "{text}");
        }
        // Payload first, with a stale guess: read again with the schema's layout.
        let other = Arc::new(RowLayout::new(
            1,
            vec![FieldSlot { name: "id".into(), conversion: Conversion::Long, position: 0 }],
        ));
        let cx = MessageContext { known: &known, last: Some(&other), declared: None };
        let text = format!(r#"{{"payload":{payload},"schema":{schema}}}"#);
        let (env, used) = message(text.as_bytes(), &cx).expect("reparsed");
        assert!(Arc::ptr_eq(&used, &l));
        assert_eq!(env.after_row.flatten().map(|r| r.0.len()), Some(4));
        // An unknown schema, a missing payload or trailing bytes are for the slow path.
        let cx = MessageContext { known: &known, last: None, declared: None };
        for text in [
            format!(r#"{{"schema":{{"type":"int8"}},"payload":{payload}}}"#),
            format!(r#"{{"schema":{schema}}}"#),
            format!(r#"{{"schema":{schema},"payload":{payload}}}x"#),
            format!(r#"{{"schema":null,"payload":{payload}}}"#),
        ] {
            assert!(message(text.as_bytes(), &cx).is_err(), "{text}");
        }
    }
}
