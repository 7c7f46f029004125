//! Replay logs: files of Kafka records, one JSON object per line, exactly as `kcat -C -J`
//! writes them (`topic`, `partition`, `offset`, `key`, `payload`; other fields ignored).
//!
//! A replay log stands in for Kafka with the same offsets. Reading one happens in two steps:
//!
//! ```text
//!   1. ReplayIndex::build   one pass: (topic, partition) → [(offset, byte position)]
//!   2. PartitionCursor      per partition, reads its lines from the mapped log and
//!                           parses them with KcatParser
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
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{Mmap, MmapOptions};

use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::record::SourceRecord;
use serde::Deserialize;

use crate::kcat_line::KcatParser;

/// The lines of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionIndex {
    /// Topic.
    pub topic: String,
    /// Table index of the topic, once [`ReplayIndex::assign`] mapped it.
    pub table: u32,
    /// Partition.
    pub partition: i32,
    /// `(offset, byte position of the line, line length)`, in offset order.
    pub entries: Vec<(i64, u64, u32)>,
}

/// Where every record of a replay log is.
#[derive(Clone, Debug)]
pub struct ReplayIndex {
    /// The log.
    pub path: PathBuf,
    /// The log, mapped.
    pub log: MappedLog,
    /// One entry per `(topic, partition)`, sorted.
    pub partitions: Vec<PartitionIndex>,
    /// Records of topics the pipeline does not consume.
    pub foreign_records: u64,
}

/// Topic ids as one scanning thread met them.
type LocalTopics = HashMap<Vec<u8>, u32>;

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    partition: i32,
    offset: i64,
}

/// A replay log mapped read-only into memory, shared by every reader of a run.
///
/// Mapping avoids copying each line out of the page cache (twice: once to index, once to
/// read), which dominated system time on multi-gigabyte logs.
#[derive(Clone)]
pub struct MappedLog(Arc<Mmap>);

impl std::fmt::Debug for MappedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedLog({} bytes)", self.0.len())
    }
}

impl MappedLog {
    /// Maps `path` read-only.
    pub fn open(path: &Path) -> Result<MappedLog> {
        let file = File::open(path).map_err(|e| {
            Error::new(ErrorKind::Source, format!("cannot open replay log {}", path.display())).with_source(e)
        })?;
        if file.metadata()?.len() == 0 {
            return Ok(MappedLog(Arc::new(MmapOptions::new().len(0).map_anon()?.make_read_only()?)));
        }
        // SAFETY: the mapping is read-only and private to this process. Its one hazard is
        // another process truncating the file while it is mapped (reads of the lost pages
        // then fault). A replay log is an input the run owns for its duration, as the
        // README states; floe never writes it.
        #[allow(unsafe_code)]
        let map = unsafe { MmapOptions::new().map(&file) }.map_err(|e| {
            Error::new(ErrorKind::Source, format!("cannot map replay log {}", path.display())).with_source(e)
        })?;
        Ok(MappedLog(Arc::new(map)))
    }

    /// The log's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A partition's line: offset, byte position, length.
pub type LineEntry = (i64, u64, u32);

/// One indexed line: topic id (per scanning thread), partition, offset, byte position, length.
type Entry = (u32, i32, i64, u64, u32);

/// What one thread found in its byte range of the log.
struct RangeScan {
    topics: LocalTopics,
    entries: Vec<Entry>,
    lines: u64,
    error: Option<(u64, String)>,
}

impl ReplayIndex {
    /// Scans a log. The file is split into one byte range per core, scanned in parallel,
    /// and merged in file order. Call [`ReplayIndex::assign`] to map topics to tables.
    pub fn build(path: &Path) -> Result<ReplayIndex> {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8);
        let small = std::fs::metadata(path).map(|m| m.len() < (16 << 20)).unwrap_or(true);
        Self::build_with(path, if small { 1 } else { threads })
    }

    /// The topics in the log.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.partitions.iter().map(|p| p.topic.clone()).collect();
        t.dedup();
        t
    }

    /// Keeps the partitions of topics the pipeline consumes (topic → table index).
    pub fn assign(&mut self, tables: &HashMap<String, u32>) {
        let (kept, dropped): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.partitions).into_iter().partition(|p| tables.contains_key(&p.topic));
        self.foreign_records += dropped.iter().map(|p| p.entries.len() as u64).sum::<u64>();
        self.partitions = kept
            .into_iter()
            .map(|mut p| {
                p.table = tables[&p.topic];
                p
            })
            .collect();
    }

    /// [`ReplayIndex::build`] with an explicit number of scanning threads.
    pub fn build_with(path: &Path, threads: usize) -> Result<ReplayIndex> {
        let log = MappedLog::open(path)?;
        let bytes = log.bytes();
        let len = bytes.len();
        let threads = threads.max(1);
        let bounds: Vec<usize> = (0..=threads).map(|i| len * i / threads).collect();
        let scans: Vec<RangeScan> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|i| {
                    let (from, to) = (bounds[i], bounds[i + 1]);
                    scope.spawn(move || scan_range(bytes, from, to))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| RangeScan {
                        topics: HashMap::new(),
                        entries: Vec::new(),
                        lines: 0,
                        error: Some((0, "index thread panicked".into())),
                    })
                })
                .collect()
        });
        let mut lines_before = 0;
        let mut parts: BTreeMap<(String, i32), Vec<LineEntry>> = BTreeMap::new();
        for scan in scans {
            if let Some((line, message)) = scan.error {
                return Err(Error::new(
                    ErrorKind::Source,
                    format!("{}:{}: {message}", path.display(), lines_before + line),
                ));
            }
            let names: HashMap<u32, String> =
                scan.topics.iter().map(|(name, id)| (*id, String::from_utf8_lossy(name).to_string())).collect();
            for (topic_id, partition, offset, pos, len) in scan.entries {
                let topic = &names[&topic_id];
                let entries = parts.entry((topic.clone(), partition)).or_default();
                if let Some(&(last, _, _)) = entries.last()
                    && offset <= last
                {
                    return Err(Error::new(
                        ErrorKind::Source,
                        format!(
                            "{}: offset {offset} of {topic}/{partition} (byte {pos}) does not follow offset {last}; a replay log must list each partition in offset order",
                            path.display()
                        ),
                    ));
                }
                entries.push((offset, pos, len));
            }
            lines_before += scan.lines;
        }
        let partitions = parts
            .into_iter()
            .map(|((topic, partition), entries)| PartitionIndex { topic, table: u32::MAX, partition, entries })
            .collect();
        Ok(ReplayIndex { path: path.to_path_buf(), log, partitions, foreign_records: 0 })
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

/// Indexes the lines that *start* in `[from, to)` of `bytes`.
fn scan_range(bytes: &[u8], from: usize, to: usize) -> RangeScan {
    let mut out = RangeScan { topics: HashMap::new(), entries: Vec::new(), lines: 0, error: None };
    let intern = |topics: &mut LocalTopics, name: &[u8]| -> u32 {
        if let Some(id) = topics.get(name) {
            return *id;
        }
        let id = topics.len() as u32;
        topics.insert(name.to_vec(), id);
        id
    };
    // A line starting before `from` belongs to the previous range.
    let mut at = if from == 0 {
        0
    } else {
        match memchr::memchr(b'\n', &bytes[from - 1..]) {
            Some(n) => from + n,
            None => return out,
        }
    };
    while at < to && at < bytes.len() {
        let end = memchr::memchr(b'\n', &bytes[at..]).map(|n| at + n).unwrap_or(bytes.len());
        let line = &bytes[at..end];
        out.lines += 1;
        if !line.trim_ascii().is_empty() {
            let header = match scan_header(line) {
                Some((t, p, o)) => Ok((intern(&mut out.topics, t), p, o)),
                None => serde_json::from_slice::<Header<'_>>(line.trim_ascii())
                    .map(|h| (intern(&mut out.topics, h.topic.as_bytes()), h.partition, h.offset))
                    .map_err(|e| format!("not a kcat -J record (topic, partition, offset): {e}")),
            };
            match header {
                Err(message) => {
                    out.error = Some((out.lines, message));
                    return out;
                }
                Ok((table, partition, offset)) => {
                    let Ok(len) = u32::try_from(line.trim_ascii_end().len()) else {
                        out.error = Some((out.lines, "a record longer than 4 GiB".into()));
                        return out;
                    };
                    out.entries.push((table, partition, offset, at as u64, len));
                }
            }
        }
        at = end + 1;
    }
    out
}

/// Fast header scan for lines that list `topic`, `partition` and `offset` before any
/// nested value (kcat does). Returns `None` when unsure; the caller then parses fully.
fn scan_header(line: &[u8]) -> Option<(&[u8], i32, i64)> {
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
                topic = Some(t);
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
        if let (Some(t), Some(p), Some(o)) = (topic, partition, offset) {
            return Some((t, p, o));
        }
        i = skip_ws(line, i);
        match line.get(i) {
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

/// Skips JSON whitespace (not form feed, which `is_ascii_whitespace` also counts).
fn skip_ws(line: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = line.get(i) {
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

/// Reads one partition's records in offset order, straight from the mapped log.
pub struct PartitionCursor {
    table: u32,
    partition: i32,
    entries: Vec<(i64, u64, u32)>,
    next: usize,
    log: MappedLog,
    parser: KcatParser,
    path: PathBuf,
}

impl PartitionCursor {
    /// A cursor over `index`'s partition `part`, starting at the first record at or
    /// after `start`.
    pub fn open(index: &ReplayIndex, part: &PartitionIndex, start: Option<i64>) -> PartitionCursor {
        let next = match start {
            Some(s) => part.entries.partition_point(|&(o, _, _)| o < s),
            None => 0,
        };
        PartitionCursor {
            table: part.table,
            partition: part.partition,
            entries: part.entries.clone(),
            next,
            log: index.log.clone(),
            parser: KcatParser::new(),
            path: index.path.clone(),
        }
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
        self.entries.get(self.next).map(|&(o, _, _)| o)
    }

    /// Reads the next record.
    pub fn read(&mut self) -> Result<Option<SourceRecord>> {
        let Some(&(offset, pos, len)) = self.entries.get(self.next) else { return Ok(None) };
        self.next += 1;
        let line = &self.log.bytes()[pos as usize..pos as usize + len as usize];
        let parsed = self.parser.parse(line).map_err(|e| {
            Error::new(
                ErrorKind::Source,
                format!("{}: record at byte {pos} is not a kcat -J record: {e}", self.path.display()),
            )
        })?;
        if parsed.offset != offset || parsed.partition != self.partition {
            return Err(Error::new(
                ErrorKind::Source,
                format!("{} changed while being read (byte {pos})", self.path.display()),
            ));
        }
        Ok(Some(SourceRecord {
            table: self.table,
            partition: self.partition,
            offset,
            key: parsed.key,
            key_prefix: parsed.key_prefix,
            value: parsed.value,
            value_prefix: parsed.value_prefix,
        }))
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
            assert_eq!(fast, (slow.topic.as_bytes(), slow.partition, slow.offset), "{l}");
        }
        assert_eq!(scan_header(br#"{"headers":["a","b"],"topic":"t","partition":0,"offset":1}"#), None);
    }

    #[test]
    fn index_and_cursor_read_interleaved_partitions() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("log.jsonl");
        let mut f = File::create(&path).expect("create");
        for (p, o) in [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)] {
            writeln!(f, r#"{{"topic":"t","partition":{p},"offset":{o},"key":null,"payload":"{{\"v\":{o}}}"}}"#)
                .expect("write");
        }
        writeln!(f, r#"{{"topic":"other","partition":0,"offset":0,"key":null,"payload":null}}"#).expect("write");
        drop(f);
        let mut index = ReplayIndex::build(&path).expect("index");
        assert_eq!(index.topics(), vec!["other".to_string(), "t".to_string()]);
        index.assign(&HashMap::from([("t".to_string(), 0u32)]));
        assert_eq!(index.len(), 5);
        assert_eq!(index.foreign_records, 1);
        let mut c = PartitionCursor::open(&index, &index.partitions[0], Some(1));
        let r = c.read().expect("read").expect("record");
        assert_eq!((r.partition, r.offset), (0, 1));
        assert_eq!(r.value_bytes().as_deref(), Some(br#"{"v":1}"#.as_slice()));
        assert_eq!(c.read().expect("read").map(|r| r.offset), Some(2));
        assert_eq!(c.read().expect("read"), None);
    }

    #[test]
    fn parallel_scan_matches_sequential_scan() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("log.jsonl");
        let mut f = File::create(&path).expect("create");
        for o in 0..500 {
            let pad = "x".repeat(o % 37);
            writeln!(f, r#"{{"topic":"t","partition":{},"offset":{o},"key":"{pad}","payload":null}}"#, o % 3)
                .expect("write");
            if o % 50 == 0 {
                writeln!(f).expect("blank line");
            }
        }
        drop(f);
        let one = ReplayIndex::build_with(&path, 1).expect("index");
        for threads in [2, 3, 7, 64] {
            let many = ReplayIndex::build_with(&path, threads).expect("index");
            assert_eq!(many.partitions, one.partitions, "{threads} threads");
        }
        assert_eq!(one.len(), 500);
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
        let err = ReplayIndex::build(&path).expect_err("order").to_string();
        assert!(err.contains("offset 4") && err.contains("offset order"), "{err}");
    }
}
