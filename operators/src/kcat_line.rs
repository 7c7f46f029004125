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

use std::sync::Arc;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

/// A parsed line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KcatRecord {
    /// Byte range of the topic name within the line (as written, between the quotes).
    pub topic: std::ops::Range<usize>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes (after `key_prefix`).
    pub key: Option<Vec<u8>>,
    /// The cached schema prefix of the key, shared by every record that starts with it.
    pub key_prefix: Option<Arc<[u8]>>,
    /// Value bytes (after `value_prefix`).
    pub value: Option<Vec<u8>>,
    /// The cached schema prefix of the value, shared by every record that starts with it.
    pub value_prefix: Option<Arc<[u8]>>,
}

/// One field's escaped-prefix cache: the escaped form as it appears in lines, and the
/// unescaped bytes it stands for.
#[derive(Default)]
struct PrefixCache(Option<(Vec<u8>, Arc<[u8]>)>);

/// A line parser remembering one topic's escaped schema prefixes (key and value).
#[derive(Default)]
pub struct KcatParser {
    key: PrefixCache,
    value: PrefixCache,
}

fn err(msg: impl Into<String>) -> String {
    msg.into()
}

/// Decoded `key`/`payload`: bytes after the shared prefix, and the prefix.
type Bytes = (Option<Vec<u8>>, Option<Arc<[u8]>>);

impl KcatParser {
    /// A parser with empty caches.
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
        let (mut topic, mut partition, mut offset) = (None, None, None);
        let (mut key, mut value): (Bytes, Bytes) = ((None, None), (None, None));
        if line.get(i) == Some(&b'}') {
            i += 1;
        } else {
            loop {
                let (name, next) = field_name(line, i)?;
                i = skip_ws(line, next);
                if line.get(i) != Some(&b':') {
                    return Err(err(format!("expected `:` after field `{}`", String::from_utf8_lossy(&name))));
                }
                i = skip_ws(line, i + 1);
                match name.as_ref() {
                    b"topic" => {
                        let (span, next) =
                            plain_string_span(line, i).ok_or_else(|| err("`topic` must be a plain string"))?;
                        topic = Some(span);
                        i = next;
                    }
                    b"partition" => {
                        let (p, next) = integer(line, i)?;
                        partition = Some(i32::try_from(p).map_err(|_| err("`partition` is out of range"))?);
                        i = next;
                    }
                    b"offset" => {
                        let (o, next) = integer(line, i)?;
                        offset = Some(o);
                        i = next;
                    }
                    b"key" => {
                        let (k, next) = bytes(line, i, &mut self.key)?;
                        key = k;
                        i = next;
                    }
                    b"payload" => {
                        let (v, next) = bytes(line, i, &mut self.value)?;
                        value = v;
                        i = next;
                    }
                    _ => i = skip_value(line, i)?,
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
            key: key.0,
            key_prefix: key.1,
            value: value.0,
            value_prefix: value.1,
        })
    }
}

/// Deserializes one JSON value starting at `at`; returns it and the index after it.
fn read_json<T: for<'de> Deserialize<'de>>(line: &[u8], at: usize) -> Result<(T, usize), String> {
    let mut stream = serde_json::Deserializer::from_slice(&line[at..]).into_iter::<T>();
    match stream.next() {
        Some(Ok(v)) => Ok((v, at + stream.byte_offset())),
        Some(Err(e)) => Err(e.to_string()),
        None => Err(err("unexpected end of line")),
    }
}

/// A field name: borrowed when it has no escapes (always, for kcat), else decoded.
fn field_name(line: &[u8], at: usize) -> Result<(std::borrow::Cow<'_, [u8]>, usize), String> {
    if let Some((span, next)) = plain_string_span(line, at) {
        return Ok((std::borrow::Cow::Borrowed(&line[span]), next));
    }
    let (name, next) = read_json::<String>(line, at)?;
    Ok((std::borrow::Cow::Owned(name.into_bytes()), next))
}

/// The content span of a string without escapes at `at` (its opening quote), and the
/// index after its closing quote.
fn plain_string_span(line: &[u8], at: usize) -> Option<(std::ops::Range<usize>, usize)> {
    if line.get(at) != Some(&b'"') {
        return None;
    }
    let start = at + 1;
    let end = start + memchr::memchr2(b'"', b'\\', &line[start..])?;
    let content = &line[start..end];
    // JSON strings hold no raw control characters and are UTF-8; the caller's fallback
    // (serde_json) reports what is wrong.
    let valid = !content.iter().any(|&b| b < 0x20) && (content.is_ascii() || std::str::from_utf8(content).is_ok());
    (valid && line[end] == b'"').then_some((start..end, end + 1))
}

/// A JSON integer at `at`.
fn integer(line: &[u8], at: usize) -> Result<(i64, usize), String> {
    let negative = line.get(at) == Some(&b'-');
    let digits_start = at + negative as usize;
    let digits_end = digits_start + line[digits_start..].iter().take_while(|b| b.is_ascii_digit()).count();
    // JSON forbids leading zeros (`07`); serde_json reports them.
    let leading_zero = line.get(digits_start) == Some(&b'0') && digits_end > digits_start + 1;
    let simple =
        digits_end > digits_start && !leading_zero && !matches!(line.get(digits_end), Some(b'.' | b'e' | b'E'));
    if simple && let Ok(v) = std::str::from_utf8(&line[at..digits_end]).unwrap_or("x").parse::<i64>() {
        return Ok((v, digits_end));
    }
    read_json::<i64>(line, at)
}

/// Skips any JSON value at `at`, checked as strictly as serde_json reads a document (kcat's
/// other fields, `tstype`, `ts`, `broker`, `headers`, are short). Not with `IgnoredAny`:
/// serde_json's skip does not check a string's UTF-8.
fn skip_value(line: &[u8], at: usize) -> Result<usize, String> {
    match line.get(at) {
        // A plain string is checked where it lies (UTF-8, no control characters).
        Some(b'"') if let Some((_, next)) = plain_string_span(line, at) => Ok(next),
        // An integer (`ts`, `broker`) without a deserializer.
        Some(b'-' | b'0'..=b'9') if let Ok((_, next)) = integer(line, at) => Ok(next),
        // Anything else as a `Value`: serde_json's skip also lets a float overflow
        // (`1e999`) through.
        _ => read_json::<serde_json::Value>(line, at).map(|(_, next)| next),
    }
}

/// A `key`/`payload` value: a JSON string (the record bytes), `null`, or inline JSON.
fn bytes(line: &[u8], at: usize, cache: &mut PrefixCache) -> Result<(Bytes, usize), String> {
    match line.get(at) {
        Some(b'"') => {}
        Some(b'n') => {
            let (_, next) = read_json::<Option<IgnoredAny>>(line, at)?;
            return Ok(((None, None), next));
        }
        _ => {
            let (raw, next) = read_json::<Box<RawValue>>(line, at)?;
            return Ok(((Some(raw.get().as_bytes().to_vec()), None), next));
        }
    }
    let content = &line[at + 1..];
    if let Some((escaped, unescaped)) = &cache.0
        && content.starts_with(escaped)
    {
        let mut rest = Vec::new();
        if let Some(consumed) = unescape_into(&content[escaped.len()..], &mut rest) {
            return Ok(((Some(rest), Some(Arc::clone(unescaped))), at + 1 + escaped.len() + consumed));
        }
    }
    let (text, next) = read_json::<String>(line, at)?;
    learn(cache, content, &text);
    Ok(((Some(text.into_bytes()), None), next))
}

/// Remembers `{"schema":S,"payload":` as a shared prefix, if `value` starts with it and
/// this producer escaped it the way serde_json does.
fn learn(cache: &mut PrefixCache, escaped_content: &[u8], value: &str) {
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
        cache.0 = Some((escaped.to_vec(), Arc::from(unescaped.into_bytes())));
    }
}

/// Unescapes the body of a JSON string (after its opening quote) into `out`, up to the
/// closing quote; returns how many input bytes were consumed, closing quote included.
/// `None` on a malformed escape or a missing closing quote (the caller then falls back
/// to serde_json, which reports the error), a raw control character, or bytes that are
/// not UTF-8, as in any JSON string.
fn unescape_into(body: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    // Escapes are dense in embedded JSON (every quote is one). Eight bytes at a time: find
    // the first quote or backslash in the word with a zero-byte test, copy the word, and
    // keep only the bytes before it.
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    // Flags bytes below 0x20 (raw control characters, which a JSON string may not hold).
    let control = |v: u64| v.wrapping_sub(ONES * 0x20) & !v & HIGHS;
    let base = out.len();
    out.reserve(body.len().min(4096));
    let mut i = 0;
    loop {
        if let Some(chunk) = body.get(i..i + 8) {
            let w =
                u64::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7]]);
            let hits = zero_byte(w ^ (ONES * b'"' as u64)) | zero_byte(w ^ (ONES * b'\\' as u64)) | control(w);
            // The lowest flagged byte is exact (borrows only disturb bytes above it).
            let clean = ((hits.trailing_zeros() / 8) as usize).min(8);
            // A fixed-size copy compiles to one store; then drop the bytes past the hit.
            out.extend_from_slice(&w.to_le_bytes());
            out.truncate(out.len() - (8 - clean));
            i += clean;
            if clean == 8 {
                continue;
            }
        }
        let Some(&b) = body.get(i) else {
            out.truncate(base);
            return None;
        };
        i += 1;
        match b {
            b'"' => {
                // One UTF-8 check of the whole result (ASCII runs through std's fast path).
                if std::str::from_utf8(&out[base..]).is_err() {
                    out.truncate(base);
                    return None;
                }
                return Some(i);
            }
            b'\\' => {
                let Some(&esc) = body.get(i) else {
                    out.truncate(base);
                    return None;
                };
                i += 1;
                let byte = match esc {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => match unicode_escape(body, i) {
                        Some((c, used)) => {
                            i += used;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        None => {
                            out.truncate(base);
                            return None;
                        }
                    },
                    _ => {
                        out.truncate(base);
                        return None;
                    }
                };
                out.push(byte);
            }
            _ if b < 0x20 => {
                out.truncate(base);
                return None;
            }
            _ => out.push(b),
        }
    }
}

/// The character of a `\uXXXX` escape (or a surrogate pair) whose hex digits start at
/// `at`, and how many bytes after `\u` it used.
fn unicode_escape(body: &[u8], at: usize) -> Option<(char, usize)> {
    let hex = |at: usize| -> Option<u32> {
        let h = body.get(at..at + 4)?;
        u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    };
    let first = hex(at)?;
    if (0xD800..0xDC00).contains(&first) {
        // A high surrogate must be followed by `\u` and a low surrogate.
        if body.get(at + 4..at + 6)? != b"\\u" {
            return None;
        }
        let second = hex(at + 6)?;
        if !(0xDC00..0xE000).contains(&second) {
            return None;
        }
        Some((char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))?, 10))
    } else {
        Some((char::from_u32(first)?, 4))
    }
}

/// Skips JSON whitespace (space, tab, newline, carriage return; not form feed, which
/// `is_ascii_whitespace` also counts).
fn skip_ws(line: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = line.get(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(payload: Option<&str>) -> String {
        let p = payload.map(|p| serde_json::to_string(p).expect("escape")).unwrap_or_else(|| "null".into());
        format!(
            r#"{{"topic":"t","partition":2,"offset":9,"tstype":"create","ts":1,"broker":-1,"headers":["a","b"],"key":"{{\"id\":1}}","payload":{p}}}"#
        )
    }

    /// Found by the cargo-fuzz target: lines that are not JSON must not parse. A field
    /// name or skipped value that is not UTF-8, a raw control character in a payload, a
    /// bare word where a value goes, a leading zero, a form feed as whitespace.
    #[test]
    fn a_line_that_is_not_json_is_refused() {
        let good = line(Some(r#"{"schema":null,"payload":{"a":"é"}}"#)).into_bytes();
        let mut p = KcatParser::new();
        assert!(p.parse(&good).is_ok());
        assert!(p.parse(&good).is_ok(), "and again, with the prefix cache warm");
        let bad_name: Vec<u8> =
            [&br#"{"topic":"t","partition":0,"offset":1,""#[..], &[0x97], br#"":1,"payload":null}"#].concat();
        let control = good.iter().map(|&b| if b == b'\xc3' { 0x01 } else { b }).collect::<Vec<u8>>();
        let not_utf8 = good.iter().map(|&b| if b == b'\xc3' { 0xff } else { b }).collect::<Vec<u8>>();
        let bare = br#"{"topic":"t","partition":0,"offset":1,"broker":nope,"payload":null}"#.to_vec();
        let skipped: Vec<u8> =
            [&br#"{"topic":"t","partition":0,"offset":1,"tstype":""#[..], &[0x8d], br#"","payload":null}"#].concat();
        let zero = br#"{"topic":"t","partition":0,"offset":07,"payload":null}"#.to_vec();
        let overflow = br#"{"topic":"t","partition":0,"offset":1,"ts":1e999,"payload":null}"#.to_vec();
        let form_feed = b"{\"topic\":\"t\",\"partition\":\x0c0,\"offset\":1,\"payload\":null}".to_vec();
        let cases = [
            ("name", bad_name),
            ("control", control),
            ("utf-8", not_utf8),
            ("bare word", bare),
            ("skipped", skipped),
            ("leading zero", zero),
            ("form feed", form_feed),
            ("float overflow", overflow),
        ];
        for (what, l) in cases {
            assert!(serde_json::from_slice::<serde_json::Value>(&l).is_err(), "{what}: the case must be invalid JSON");
            assert!(KcatParser::new().parse(&l).is_err(), "{what}: accepted cold");
            let mut warm = KcatParser::new();
            let _ = warm.parse(&good);
            assert!(warm.parse(&l).is_err(), "{what}: accepted with the cache warm");
        }
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
            let l = line(Some(m));
            let r = p.parse(l.as_bytes()).expect("parse");
            let whole =
                [r.value_prefix.as_deref().unwrap_or_default(), r.value.as_deref().unwrap_or_default()].concat();
            assert_eq!(whole, m.as_bytes(), "message {n}");
            assert_eq!(r.key.as_deref(), Some(br#"{"id":1}"#.as_slice()));
            assert_eq!((&l.as_bytes()[r.topic.clone()], r.partition, r.offset), (b"t".as_slice(), 2, 9));
            if n == 0 {
                assert!(p.value.0.is_some(), "learned the schema prefix");
            }
        }
    }

    #[test]
    fn unescape_agrees_with_serde_json() {
        let long: String = (0..200)
            .map(|i| {
                if i % 7 == 0 {
                    '"'
                } else if i % 11 == 0 {
                    '\\'
                } else {
                    (b'a' + (i % 26) as u8) as char
                }
            })
            .collect();
        let samples = [
            long.as_str(),
            "0123456\"",
            "01234567\"89",
            "plain",
            "q\" b\\ s/ \u{1}\u{1f}",
            "é 日本語 🚀 \u{10FFFF}",
            "\n\r\t\u{8}\u{c}",
            "",
        ];
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
        let shared = p.parse(line(Some(r#"{"schema":{"a":1},"payload":{"op":"c"}}"#)).as_bytes()).expect("learn");
        assert!(shared.value_prefix.is_none(), "the first record teaches the prefix");
        let next = p.parse(line(Some(r#"{"schema":{"a":1},"payload":{"op":"u"}}"#)).as_bytes()).expect("reuse");
        assert_eq!(next.value_prefix.as_deref(), Some(br#"{"schema":{"a":1},"payload":"#.as_slice()));
        assert_eq!(next.value.as_deref(), Some(br#"{"op":"u"}}"#.as_slice()));
        let inline = r#"{"topic":"t","partition":0,"offset":1,"payload":{"a":1}}"#;
        assert_eq!(p.parse(inline.as_bytes()).expect("inline").value.as_deref(), Some(br#"{"a":1}"#.as_slice()));
        assert!(p.parse(br#"{"topic":"t","partition":0}"#).expect_err("no offset").contains("offset"));
        assert!(p.parse(br#"{"topic":"t","partition":0,"offset":1} x"#).is_err());
    }
}
