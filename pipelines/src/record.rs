//! `floe record`: capture an offset range of Kafka topics as a replay log, in the form
//! `kcat -C -J` prints, so a test can replay exactly what a live run read.
//!
//! # Invariants
//! - Every record in `[from, to)` of every partition is written once, each partition in
//!   offset order (partitions interleave as they arrive, as with kcat);
//!   the range ends at the high watermark read at start unless `--to` says otherwise.
//! - A record whose key or value is not UTF-8 is an error naming it (the replay format
//!   carries text), never silently altered.
//! - Gaps in offsets (transaction markers, compaction) are not waited for: a partition is
//!   done once the consumer's position reaches `to`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use floe_engine::config::{KafkaConfig, Secrets, StartPosition};
use floe_engine::error::{Error, ErrorKind, Result};
use floe_engine::replay_format::kcat_json_line;
use floe_operators::kafka_client::{consumer, describe, is_fatal, topics, watermarks};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Message, Timestamp};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

/// What to record.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Topics.
    pub topics: Vec<String>,
    /// First offsets (default: each partition's earliest).
    pub from: Option<OffsetSpec>,
    /// End offsets, exclusive (default: the high watermarks at start).
    pub to: Option<OffsetSpec>,
    /// librdkafka properties (`-X key=value`).
    pub properties: Vec<(String, String)>,
}

/// `--from`/`--to`: one offset for every partition (`100`) or per partition (`0:100,1:250`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The same offset for every partition.
    All(i64),
    /// Per partition; partitions not named use the default.
    Each(BTreeMap<i32, i64>),
}

impl OffsetSpec {
    /// Parses the flag's value.
    pub fn parse(s: &str) -> std::result::Result<OffsetSpec, String> {
        let bad = || format!("`{s}` is not OFFSET or PARTITION:OFFSET[,PARTITION:OFFSET...]");
        if let Ok(o) = s.trim().parse::<i64>() {
            return if o >= 0 { Ok(OffsetSpec::All(o)) } else { Err(bad()) };
        }
        let mut each = BTreeMap::new();
        for part in s.split(',') {
            let (p, o) = part.split_once(':').ok_or_else(bad)?;
            let (p, o) = (p.trim().parse::<i32>().map_err(|_| bad())?, o.trim().parse::<i64>().map_err(|_| bad())?);
            if p < 0 || o < 0 {
                return Err(bad());
            }
            each.insert(p, o);
        }
        Ok(OffsetSpec::Each(each))
    }

    fn get(&self, partition: i32) -> Option<i64> {
        match self {
            OffsetSpec::All(o) => Some(*o),
            OffsetSpec::Each(m) => m.get(&partition).copied(),
        }
    }
}

/// Records the ranges to `out`; returns the number of records written.
pub fn record<W: Write>(options: &RecordOptions, out: &mut W) -> Result<u64> {
    let stop = Arc::new(AtomicBool::new(false));
    crate::signals::stop_on_signals(&stop)?;
    let kafka = KafkaConfig {
        brokers: options.brokers.clone(),
        topics: Some(options.topics.clone()),
        topic_pattern: None,
        start: StartPosition::Earliest,
        group_id: "floe-record".to_string(),
        properties: Secrets(options.properties.iter().cloned().collect()),
        commit_interval: Duration::from_secs(5),
        schema_pull_interval: None,
    };
    let client = consumer(&kafka)?;
    let all = topics(&client, &stop)?;
    let mut list = TopicPartitionList::new();
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for topic in &options.topics {
        let Some((_, partitions)) = all.iter().find(|(t, _)| t == topic) else {
            return Err(Error::new(
                ErrorKind::Config,
                format!("--topic: `{topic}` does not exist on {}", options.brokers),
            ));
        };
        for &p in partitions {
            let (low, high) = watermarks(&client, topic, p, &stop)?;
            let from = options.from.as_ref().and_then(|f| f.get(p)).unwrap_or(low).max(low);
            let to = options.to.as_ref().and_then(|t| t.get(p)).unwrap_or(high).min(high);
            if from < to {
                list.add_partition_offset(topic, p, Offset::Offset(from))
                    .map_err(|e| Error::new(ErrorKind::Source, describe(&e)))?;
                ends.insert((topic.clone(), p), to);
            }
            info!(topic = %topic, partition = p, from, to, "recording");
        }
    }
    if ends.is_empty() {
        return Ok(0);
    }
    client.assign(&list).map_err(|e| Error::new(ErrorKind::Source, format!("assigning: {}", describe(&e))))?;
    let mut written = 0u64;
    let mut last_check = Instant::now();
    while !ends.is_empty() {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::new(ErrorKind::Source, "interrupted; the log is incomplete".to_string()));
        }
        match client.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = (m.topic().to_string(), m.partition());
                let Some(&to) = ends.get(&key) else { continue };
                if m.offset() < to {
                    let text = |b: Option<&[u8]>, what: &str| -> Result<Option<String>> {
                        b.map(|b| {
                            String::from_utf8(b.to_vec()).map_err(|_| {
                                Error::new(
                                    ErrorKind::Source,
                                    format!(
                                        "{}/{} offset {}: the {what} is not UTF-8 text, which the replay format cannot carry",
                                        key.0,
                                        key.1,
                                        m.offset()
                                    ),
                                )
                            })
                        })
                        .transpose()
                    };
                    let (k, v) = (text(m.key(), "key")?, text(m.payload(), "value")?);
                    let ts = match m.timestamp() {
                        Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => Some(t),
                        Timestamp::NotAvailable => None,
                    };
                    let line = kcat_json_line(m.topic(), m.partition(), m.offset(), ts, k.as_deref(), v.as_deref());
                    writeln!(out, "{line}").map_err(|e| Error::new(ErrorKind::Io, format!("writing the log: {e}")))?;
                    written += 1;
                }
                if m.offset() + 1 >= to {
                    ends.remove(&key);
                }
            }
            Some(Err(e)) if is_fatal(&e) => return Err(Error::new(ErrorKind::Source, describe(&e))),
            Some(Err(e)) => warn!(error = %describe(&e), "read failed; retrying"),
            None => {}
        }
        if last_check.elapsed() > Duration::from_millis(500) {
            last_check = Instant::now();
            if let Ok(positions) = client.position() {
                for e in positions.elements() {
                    if let (Offset::Offset(pos), Some(&to)) =
                        (e.offset(), ends.get(&(e.topic().to_string(), e.partition())))
                        && pos >= to
                    {
                        ends.remove(&(e.topic().to_string(), e.partition()));
                    }
                }
            }
        }
    }
    out.flush().map_err(|e| Error::new(ErrorKind::Io, format!("writing the log: {e}")))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_specs() {
        assert_eq!(OffsetSpec::parse("100"), Ok(OffsetSpec::All(100)));
        assert_eq!(OffsetSpec::parse("0:5, 3:7"), Ok(OffsetSpec::Each(BTreeMap::from([(0, 5), (3, 7)]))));
        assert!(OffsetSpec::parse("-1").is_err());
        assert!(OffsetSpec::parse("0:x").expect_err("bad").contains("PARTITION:OFFSET"));
        assert_eq!(OffsetSpec::parse("0:5").expect("ok").get(1), None);
    }
}
