//! Parsing one `kcat -C -J` line into a Kafka record, fast.
//!
//! A Debezium message with schemas spends most of its bytes on the schema, and in a kcat
//! line that schema is an escaped JSON string (`{\"schema\":{\"type\":...`), identical from
//! one message of a topic to the next. Unescaping it every time dominated replay cost, so:
//!
//! ```text
//!   "payload":"{\"schema\":{...},\"payload\":{...}}"
//!              └──────── E (escaped prefix) ─────┘└ rest ┘
//!   E seen before?  value = U (its unescaped form, cached) ++ unescape(rest)
//!   otherwise       value = unescape(everything); remember (E, U) if the message has a schema
//! ```
//!
//! # Invariants
//! - The result is byte-identical to unescaping the whole string: `E` is exactly how this
//!   producer escaped `U` (checked against the line before caching), and escaping is
//!   context-free, so `E ++ rest` unescapes to `U ++ unescape(rest)`.
//! - Everything else about the line is parsed by serde_json (fields in any order, inline
//!   JSON values, `null`s); a malformed line is an error naming what is wrong.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

/// A parsed line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KcatRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
}

/// A line parser remembering one topic's escaped schema prefix.
#[derive(Default)]
pub struct KcatParser {
    prefix: Option<(Vec<u8>, Vec<u8>)>,
}

fn err(msg: impl Into<String>) -> String {
    msg.into()
}

impl KcatParser {
    /// A parser with an empty cache.
    pub fn new() -> KcatParser {
        KcatParser::default()
    }

    /// Parses one line (without its newline).
    pub fn parse(&mut self, line: &[u8]) -> Result<KcatRecord, String> {
        let mut i = skip_ws(line, 0);
        if line.get(i) != Some(&b'{') {
            return Err(err("a kcat -J line must be a JSON object"));
        }
        i = skip_ws(line, i + 1);
        let (mut topic, mut partition, mut offset, mut key, mut value) = (None, None, None, None, None);
        if line.get(i) == Some(&b'}') {
            i += 1;
        } else {
            loop {
                let (name, next) = self.read_json::<String>(line, i)?;
                i = skip_ws(line, next);
                if line.get(i) != Some(&b':') {
                    return Err(err(format!("expected `:` after field `{name}`")));
                }
                i = skip_ws(line, i + 1);
                match name.as_str() {
                    "topic" => {
                        let (t, next) = self.read_json::<String>(line, i)?;
                        topic = Some(t);
                        i = next;
                    }
                    "partition" => {
                        let (p, next) = self.read_json::<i32>(line, i)?;
                        partition = Some(p);
                        i = next;
                    }
                    "offset" => {
                        let (o, next) = self.read_json::<i64>(line, i)?;
                        offset = Some(o);
                        i = next;
                    }
                    "key" => {
                        let (k, next) = self.bytes(line, i, false)?;
                        key = k;
                        i = next;
                    }
                    "payload" => {
                        let (v, next) = self.bytes(line, i, true)?;
                        value = v;
                        i = next;
                    }
                    _ => {
                        let (_, next) = self.read_json::<IgnoredAny>(line, i)?;
                        i = next;
                    }
                }
                i = skip_ws(line, i);
                match line.get(i) {
                    Some(b',') => i = skip_ws(line, i + 1),
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => return Err(err("expected `,` or `}` between fields")),
                }
            }
        }
        if skip_ws(line, i) != line.len() {
            return Err(err("trailing characters after the record"));
        }
        Ok(KcatRecord {
            topic: topic.ok_or_else(|| err("missing `topic`"))?,
            partition: partition.ok_or_else(|| err("missing `partition`"))?,
            offset: offset.ok_or_else(|| err("missing `offset`"))?,
            key,
            value,
        })
    }

    /// Deserializes one JSON value starting at `at`; returns it and the index after it.
    fn read_json<T: for<'de> Deserialize<'de>>(&self, line: &[u8], at: usize) -> Result<(T, usize), String> {
        let mut stream = serde_json::Deserializer::from_slice(&line[at..]).into_iter::<T>();
        match stream.next() {
            Some(Ok(v)) => Ok((v, at + stream.byte_offset())),
            Some(Err(e)) => Err(e.to_string()),
            None => Err(err("unexpected end of line")),
        }
    }

    /// A `key`/`payload` value: a JSON string (the record bytes), `null`, or inline JSON.
    fn bytes(&mut self, line: &[u8], at: usize, cache: bool) -> Result<(Option<Vec<u8>>, usize), String> {
        match line.get(at) {
            Some(b'"') => {}
            Some(b'n') => {
                let (_, next) = self.read_json::<Option<IgnoredAny>>(line, at)?;
                return Ok((None, next));
            }
            _ => {
                let (raw, next) = self.read_json::<Box<RawValue>>(line, at)?;
                return Ok((Some(raw.get().as_bytes().to_vec()), next));
            }
        }
        let content = &line[at + 1..];
        if cache {
            if let Some((escaped, unescaped)) = &self.prefix {
                if content.starts_with(escaped) {
                    let mut value = Vec::with_capacity(unescaped.len() + content.len() - escaped.len());
                    value.extend_from_slice(unescaped);
                    if let Some(consumed) = unescape_into(&content[escaped.len()..], &mut value) {
                        return Ok((Some(value), at + 1 + escaped.len() + consumed));
                    }
                }
            }
        }
        let (text, next) = self.read_json::<String>(line, at)?;
        if cache {
            self.learn(content, &text);
        }
        Ok((Some(text.into_bytes()), next))
    }

    fn learn(&mut self, escaped_content: &[u8], value: &str) {
        #[derive(Deserialize)]
        struct Top<'a> {
            #[serde(borrow)]
            schema: Option<&'a RawValue>,
        }
        let Ok(top) = serde_json::from_str::<Top<'_>>(value) else { return };
        let Some(schema) = top.schema else { return };
        let unescaped = format!("{{\"schema\":{},\"payload\":", schema.get());
        if !value.starts_with(&unescaped) {
            return;
        }
        let Ok(quoted) = serde_json::to_string(&unescaped) else { return };
        let escaped = &quoted.as_bytes()[1..quoted.len() - 1];
        if escaped_content.starts_with(escaped) {
            self.prefix = Some((escaped.to_vec(), unescaped.into_bytes()));
        }
    }
}

/// Unescapes the body of a JSON string (after its opening quote) into `out`, up to the
/// closing quote; returns how many input bytes were consumed, closing quote included.
/// `None` on a malformed escape or a missing closing quote (the caller then falls back
/// to serde_json, which reports the error). UTF-8 is not validated here: the decoder
/// parses the value with serde_json, which does.
fn unescape_into(body: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let mut i = 0;
    loop {
        let k = memchr::memchr2(b'"', b'\\', &body[i..])?;
        out.extend_from_slice(&body[i..i + k]);
        i += k;
        if body[i] == b'"' {
            return Some(i + 1);
        }
        let esc = *body.get(i + 1)?;
        i += 2;
        let byte = match esc {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let hex = |at: usize| -> Option<u32> {
                    let h = body.get(at..at + 4)?;
                    u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
                };
                let first = hex(i)?;
                i += 4;
                let code = if (0xD800..0xDC00).contains(&first) {
                    // A high surrogate must be followed by `\u` and a low surrogate.
                    if body.get(i..i + 2)? != b"\\u" {
                        return None;
                    }
                    let second = hex(i + 2)?;
                    if !(0xDC00..0xE000).contains(&second) {
                        return None;
                    }
                    i += 6;
                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                } else {
                    first
                };
                let c = char::from_u32(code)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            _ => return None,
        };
        out.push(byte);
    }
}

fn skip_ws(line: &[u8], mut i: usize) -> usize {
    while line.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(payload: Option<&str>) -> String {
        let p = payload.map(|p| serde_json::to_string(p).expect("escape")).unwrap_or_else(|| "null".into());
        format!(r#"{{"topic":"t","partition":2,"offset":9,"tstype":"create","ts":1,"broker":-1,"headers":["a","b"],"key":"{{\"id\":1}}","payload":{p}}}"#)
    }

    #[test]
    fn cached_prefix_gives_identical_bytes() {
        let mut p = KcatParser::new();
        let messages = [
            r#"{"schema":{"type":"struct","name":"x"},"payload":{"op":"c","after":{"s":"é \" \\ \n"}}}"#,
            r#"{"schema":{"type":"struct","name":"x"},"payload":{"op":"u","after":{"s":"\u0001 🚀"}}}"#,
            r#"{"schema":{"type":"struct","name":"y"},"payload":{"op":"d"}}"#,
            r#"{"after":{"id":1},"op":"c"}"#,
        ];
        for (n, m) in messages.iter().enumerate() {
            let r = p.parse(line(Some(m)).as_bytes()).expect("parse");
            assert_eq!(r.value.as_deref(), Some(m.as_bytes()), "message {n}");
            assert_eq!(r.key.as_deref(), Some(br#"{"id":1}"#.as_slice()));
            assert_eq!((r.topic.as_str(), r.partition, r.offset), ("t", 2, 9));
            if n == 0 {
                assert!(p.prefix.is_some(), "learned the schema prefix");
            }
        }
    }

    #[test]
    fn unescape_agrees_with_serde_json() {
        let samples = ["plain", "q\" b\\ s/ \u{1}\u{1f}", "é 日本語 🚀 \u{10FFFF}", "\n\r\t\u{8}\u{c}", ""];
        for s in samples {
            let escaped = serde_json::to_string(s).expect("escape");
            let mut out = Vec::new();
            let used = unescape_into(&escaped.as_bytes()[1..], &mut out).expect("unescape");
            assert_eq!(out, s.as_bytes(), "{escaped}");
            assert_eq!(used, escaped.len() - 1);
        }
        let mut out = Vec::new();
        // \ud83d\ude80 is 🚀 as a surrogate pair; \/ is an allowed escape.
        assert_eq!(unescape_into(br#"\ud83d\ude80\/x""#, &mut out), Some(16));
        assert_eq!(out, "🚀/x".as_bytes());
        assert_eq!(unescape_into(br#"\ud83d x""#, &mut Vec::new()), None);
        assert_eq!(unescape_into(br#"\q""#, &mut Vec::new()), None);
        assert_eq!(unescape_into(b"no end", &mut Vec::new()), None);
    }

    #[test]
    fn nulls_inline_values_and_errors() {
        let mut p = KcatParser::new();
        assert_eq!(p.parse(line(None).as_bytes()).expect("tombstone").value, None);
        let inline = r#"{"topic":"t","partition":0,"offset":1,"payload":{"a":1}}"#;
        assert_eq!(p.parse(inline.as_bytes()).expect("inline").value.as_deref(), Some(br#"{"a":1}"#.as_slice()));
        assert!(p.parse(br#"{"topic":"t","partition":0}"#).expect_err("no offset").contains("offset"));
        assert!(p.parse(br#"{"topic":"t","partition":0,"offset":1} x"#).is_err());
    }
}
