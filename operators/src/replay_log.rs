//! Replay logs: files of Kafka records, one JSON object per line, exactly as `kcat -C -J`
//! writes them (`topic`, `partition`, `offset`, `key`, `payload`; other fields ignored).
//!
//! A replay log stands in for Kafka with the same offsets. Reading one happens in two steps:
//!
//! ```text
//!   1. ReplayIndex::build   one pass: (topic, partition) → [(offset, byte position)]
//!   2. PartitionCursor      per partition, reads its lines in offset order by position
//! ```
//!
//! The index lets every worker read its partitions epoch by epoch, in step, whatever the
//! interleaving of partitions in the file, so memory stays bounded by the open epochs.
//!
//! # Invariants
//! - Within a partition, offsets must increase in file order (as kcat writes them);
//!   otherwise building the index fails, naming the line.
//! - A line that is not a kcat record (no topic, partition or offset) fails the index
//!   build, naming the line: a broken log is a source error. A well-formed line with a
//!   bad payload is a bad *record*, handled downstream as a dead letter.
//! - `key`/`payload` strings are the record bytes (JSON text of the Debezium message);
//!   `null` is a null key / tombstone.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::record::SourceRecord;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// The lines of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionIndex {
    /// Table (topic) index.
    pub table: u32,
    /// Partition.
    pub partition: i32,
    /// `(offset, byte position of the line)`, in offset order.
    pub entries: Vec<(i64, u64)>,
}

/// Where every record of a replay log is.
#[derive(Clone, Debug)]
pub struct ReplayIndex {
    /// The log.
    pub path: PathBuf,
    /// One entry per `(table, partition)`, sorted.
    pub partitions: Vec<PartitionIndex>,
    /// Records of topics the pipeline does not consume.
    pub foreign_records: u64,
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    partition: i32,
    offset: i64,
}

impl ReplayIndex {
    /// Scans a log, keeping the records of `topics` (topic → table index).
    pub fn build(path: &Path, topics: &HashMap<String, u32>) -> Result<ReplayIndex> {
        let file = File::open(path)
            .map_err(|e| Error::new(ErrorKind::Source, format!("cannot open replay log {}", path.display())).with_source(e))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut parts: BTreeMap<(u32, i32), Vec<(i64, u64)>> = BTreeMap::new();
        let mut foreign = 0;
        let mut line = Vec::with_capacity(8192);
        let mut pos: u64 = 0;
        let mut line_no = 0u64;
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(|e| {
                Error::new(ErrorKind::Source, format!("reading replay log {}", path.display())).with_source(e)
            })?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let start = pos;
            pos += n as u64;
            if line.trim_ascii().is_empty() {
                continue;
            }
            let (topic, partition, offset) = match scan_header(&line) {
                Some(h) => h,
                None => {
                    let h: Header<'_> = serde_json::from_slice(line.trim_ascii()).map_err(|e| {
                        Error::new(
                            ErrorKind::Source,
                            format!("{}:{line_no}: not a kcat -J record (topic, partition, offset): {e}", path.display()),
                        )
                    })?;
                    (h.topic.into_owned(), h.partition, h.offset)
                }
            };
            let Some(&table) = topics.get(&topic) else {
                foreign += 1;
                continue;
            };
            let entries = parts.entry((table, partition)).or_default();
            if let Some(&(last, _)) = entries.last() {
                if offset <= last {
                    return Err(Error::new(
                        ErrorKind::Source,
                        format!(
                            "{}:{line_no}: offset {offset} of {topic}/{partition} does not follow offset {last}; a replay log must list each partition in offset order",
                            path.display()
                        ),
                    ));
                }
            }
            entries.push((offset, start));
        }
        let partitions = parts
            .into_iter()
            .map(|((table, partition), entries)| PartitionIndex { table, partition, entries })
            .collect();
        Ok(ReplayIndex { path: path.to_path_buf(), partitions, foreign_records: foreign })
    }

    /// Records indexed.
    pub fn len(&self) -> usize {
        self.partitions.iter().map(|p| p.entries.len()).sum()
    }

    /// Whether nothing was indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Fast header scan for lines that list `topic`, `partition` and `offset` before any
/// nested value (kcat does). Returns `None` when unsure; the caller then parses fully.
fn scan_header(line: &[u8]) -> Option<(String, i32, i64)> {
    let mut i = skip_ws(line, 0);
    if line.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let (mut topic, mut partition, mut offset) = (None, None, None);
    loop {
        i = skip_ws(line, i);
        if line.get(i) != Some(&b'"') {
            return None;
        }
        let (name, next) = plain_string(line, i)?;
        i = skip_ws(line, next);
        if line.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(line, i + 1);
        match name {
            b"topic" => {
                let (t, next) = plain_string(line, i)?;
                topic = Some(std::str::from_utf8(t).ok()?.to_string());
                i = next;
            }
            b"partition" | b"offset" => {
                let end = i + line[i..].iter().position(|b| !(b.is_ascii_digit() || *b == b'-'))?;
                let v: i64 = std::str::from_utf8(&line[i..end]).ok()?.parse().ok()?;
                if name == b"partition" {
                    partition = Some(i32::try_from(v).ok()?);
                } else {
                    offset = Some(v);
                }
                i = end;
            }
            _ => i = skip_scalar(line, i)?,
        }
        if let (Some(t), Some(p), Some(o)) = (&topic, partition, offset) {
            return Some((t.clone(), p, o));
        }
        i = skip_ws(line, i);
        match line.get(i) {
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

fn skip_ws(line: &[u8], mut i: usize) -> usize {
    while line.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// A string without escapes starting at `i` (the opening quote): its bytes and the index
/// after the closing quote.
fn plain_string(line: &[u8], i: usize) -> Option<(&[u8], usize)> {
    if line.get(i) != Some(&b'"') {
        return None;
    }
    let rest = &line[i + 1..];
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    if rest[end] != b'"' {
        return None;
    }
    Some((&rest[..end], i + 1 + end + 1))
}

/// Skips a scalar (string with escapes, number, literal) at `i`; `None` for objects/arrays.
fn skip_scalar(line: &[u8], i: usize) -> Option<usize> {
    match line.get(i)? {
        b'"' => {
            let mut j = i + 1;
            loop {
                let k = memchr::memchr2(b'"', b'\\', &line[j..])?;
                if line[j + k] == b'\\' {
                    j += k + 2;
                } else {
                    return Some(j + k + 1);
                }
            }
        }
        b'{' | b'[' => None,
        _ => Some(i + line[i..].iter().position(|b| matches!(b, b',' | b'}' | b' ' | b'\t' | b'\r' | b'\n'))?),
    }
}

/// `key`/`payload`: a JSON string (the record bytes), `null`, or an inline JSON value.
struct RecordBytes(Option<Vec<u8>>);

impl<'de> Deserialize<'de> for RecordBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RecordBytes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, null, or a JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> std::result::Result<RecordBytes, E> {
                Ok(RecordBytes(None))
            }
            fn visit_none<E: de::Error>(self) -> std::result::Result<RecordBytes, E> {
                Ok(RecordBytes(None))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<RecordBytes, E> {
                Ok(RecordBytes(Some(v.as_bytes().to_vec())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<RecordBytes, E> {
                Ok(RecordBytes(Some(v.into_bytes())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<RecordBytes, A::Error> {
                let v: serde_json::Value = Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RecordBytes(Some(v.to_string().into_bytes())))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    partition: i32,
    offset: i64,
    #[serde(default)]
    key: Option<RecordBytes>,
    #[serde(default)]
    payload: Option<RecordBytes>,
}

/// Reads one partition's records in offset order.
pub struct PartitionCursor {
    table: u32,
    partition: i32,
    entries: Vec<(i64, u64)>,
    next: usize,
    reader: BufReader<File>,
    reader_pos: u64,
    line: Vec<u8>,
    path: PathBuf,
}

impl PartitionCursor {
    /// A cursor over `index`, starting at the first record at or after `start`.
    pub fn open(path: &Path, index: &PartitionIndex, start: Option<i64>) -> Result<PartitionCursor> {
        let file = File::open(path)
            .map_err(|e| Error::new(ErrorKind::Source, format!("cannot open replay log {}", path.display())).with_source(e))?;
        let next = match start {
            Some(s) => index.entries.partition_point(|&(o, _)| o < s),
            None => 0,
        };
        Ok(PartitionCursor {
            table: index.table,
            partition: index.partition,
            entries: index.entries.clone(),
            next,
            reader: BufReader::with_capacity(1 << 20, file),
            reader_pos: 0,
            line: Vec::with_capacity(8192),
            path: path.to_path_buf(),
        })
    }

    /// Table index.
    pub fn table(&self) -> u32 {
        self.table
    }

    /// Partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Offset of the next record, if any.
    pub fn peek_offset(&self) -> Option<i64> {
        self.entries.get(self.next).map(|&(o, _)| o)
    }

    /// Reads the next record.
    pub fn read(&mut self) -> Result<Option<SourceRecord>> {
        let Some(&(offset, pos)) = self.entries.get(self.next) else { return Ok(None) };
        let io = |e: std::io::Error| Error::new(ErrorKind::Source, format!("reading {}", self.path.display())).with_source(e);
        if pos != self.reader_pos {
            let delta = pos as i64 - self.reader_pos as i64;
            self.reader.seek_relative(delta).map_err(io)?;
            self.reader_pos = pos;
        }
        self.line.clear();
        let n = self.reader.by_ref().read_until(b'\n', &mut self.line).map_err(io)?;
        self.reader_pos += n as u64;
        self.next += 1;
        let parsed: Line<'_> = serde_json::from_slice(self.line.trim_ascii()).map_err(|e| {
            Error::new(ErrorKind::Source, format!("{}: record at byte {pos} is not a kcat -J record: {e}", self.path.display()))
        })?;
        if parsed.offset != offset || parsed.partition != self.partition {
            return Err(Error::new(ErrorKind::Source, format!("{} changed while being read (byte {pos})", self.path.display())));
        }
        let _ = parsed.topic;
        Ok(Some(SourceRecord {
            table: self.table,
            partition: self.partition,
            offset,
            key: parsed.key.and_then(|k| k.0),
            value: parsed.payload.and_then(|p| p.0),
        }))
    }

    /// Seeks the underlying file to the start (used by tests).
    pub fn rewind(&mut self) -> Result<()> {
        self.reader.seek(SeekFrom::Start(0))?;
        self.reader_pos = 0;
        self.next = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn header_scan_agrees_with_serde() {
        let lines = [
            r#"{"topic":"a.b","partition":3,"offset":17,"tstype":"create","ts":1,"broker":-1,"key":"{\"id\":1}","payload":null}"#,
            r#"{"key":"x\"y","payload":"{\"op\":\"c\"}","topic":"a.b","partition":0,"offset":-1}"#,
        ];
        for l in lines {
            let fast = scan_header(l.as_bytes()).expect("fast path");
            let slow: Header<'_> = serde_json::from_str(l).expect("serde");
            assert_eq!(fast, (slow.topic.to_string(), slow.partition, slow.offset), "{l}");
        }
        assert_eq!(scan_header(br#"{"headers":["a","b"],"topic":"t","partition":0,"offset":1}"#), None);
    }

    #[test]
    fn index_and_cursor_read_interleaved_partitions() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("log.jsonl");
        let mut f = File::create(&path).expect("create");
        for (p, o) in [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)] {
            writeln!(f, r#"{{"topic":"t","partition":{p},"offset":{o},"key":null,"payload":"{{\"v\":{o}}}"}}"#).expect("write");
        }
        writeln!(f, r#"{{"topic":"other","partition":0,"offset":0,"key":null,"payload":null}}"#).expect("write");
        drop(f);
        let topics = HashMap::from([("t".to_string(), 0u32)]);
        let index = ReplayIndex::build(&path, &topics).expect("index");
        assert_eq!(index.len(), 5);
        assert_eq!(index.foreign_records, 1);
        let mut c = PartitionCursor::open(&path, &index.partitions[0], Some(1)).expect("cursor");
        let r = c.read().expect("read").expect("record");
        assert_eq!((r.partition, r.offset), (0, 1));
        assert_eq!(r.value.as_deref(), Some(br#"{"v":1}"#.as_slice()));
        assert_eq!(c.read().expect("read").map(|r| r.offset), Some(2));
        assert_eq!(c.read().expect("read"), None);
    }

    #[test]
    fn out_of_order_offsets_name_the_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("log.jsonl");
        std::fs::write(
            &path,
            "{\"topic\":\"t\",\"partition\":0,\"offset\":5,\"payload\":null}\n{\"topic\":\"t\",\"partition\":0,\"offset\":4,\"payload\":null}\n",
        )
        .expect("write");
        let topics = HashMap::from([("t".to_string(), 0u32)]);
        let err = ReplayIndex::build(&path, &topics).expect_err("order").to_string();
        assert!(err.contains(":2:") && err.contains("offset order"), "{err}");
    }
}
