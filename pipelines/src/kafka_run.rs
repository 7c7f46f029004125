//! Preparing a Kafka run: learn the cluster's topics and partitions (retrying while the
//! brokers are away), expand `[[tables]]` templates over them, sample topics whose tables
//! do not exist yet, and decide each partition's start (and end, for backfills).
//!
//! # Invariants
//! - A partition starts where its tables' latest snapshots say they committed; `start`
//!   (earliest or latest) applies only to partitions with no committed progress.
//! - A committed offset the broker no longer has (deleted by retention) or does not have
//!   yet (the topic was recreated) stops the run with an error naming table, partition and
//!   offsets: silently skipping or re-reading would lose or duplicate rows.
//! - Until-caught-up runs end each partition at the high watermark read here, before the
//!   dataflow starts, so what they commit is a function of the offsets alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use floe_engine::config::{KafkaConfig, PipelineConfig, StartPosition};
use floe_engine::error::{Error, ErrorKind, Result};
use floe_operators::kafka_client::{FloeConsumer, consumer, describe, topics, watermarks};
use floe_operators::kafka_source::KafkaAssignment;
use floe_operators::plan::PipelinePlan;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::info;

use crate::planner::{Sample, SchemaDiscovery};

/// A partition as the brokers described it when the run started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition id.
    pub partition: i32,
    /// Earliest offset the broker has.
    pub low: i64,
    /// High watermark (next offset to be written).
    pub high: i64,
}

/// The partitions of every topic the pipeline reads.
#[derive(Clone, Debug, Default)]
pub struct KafkaTopology {
    /// Topic → partitions.
    pub topics: BTreeMap<String, Vec<PartitionInfo>>,
}

/// Reads metadata and watermarks; returns the pipeline with templates expanded over the
/// cluster's topics, and the topology of the topics its tables read.
pub fn discover(
    config: &PipelineConfig,
    kafka: &KafkaConfig,
    stop: &Arc<AtomicBool>,
) -> Result<(PipelineConfig, KafkaTopology)> {
    let client = consumer(kafka)?;
    let all = topics(&client, stop)?;
    let names: Vec<String> = all.iter().map(|(t, _)| t.clone()).collect();
    let config = config.with_topics(&names)?;
    let mut topology = KafkaTopology::default();
    for table in &config.tables {
        let Some((_, partitions)) = all.iter().find(|(t, _)| *t == table.topic) else {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "[[tables]] topic `{}` does not exist on {} (create it, or fix the `topic` key)",
                    table.topic, kafka.brokers
                ),
            ));
        };
        let mut infos = Vec::with_capacity(partitions.len());
        for &partition in partitions {
            let (low, high) = watermarks(&client, &table.topic, partition, stop)?;
            infos.push(PartitionInfo { partition, low, high });
        }
        info!(topic = %table.topic, partitions = infos.len(), records = infos.iter().map(|p| p.high - p.low).sum::<i64>(), "Kafka topic");
        topology.topics.insert(table.topic.clone(), infos);
    }
    Ok((config, topology))
}

/// Each partition's start (and end) for this run.
pub fn assignments(
    plan: &PipelinePlan,
    topology: &KafkaTopology,
    start: StartPosition,
    until_caught_up: bool,
) -> Result<Vec<KafkaAssignment>> {
    let mut out = Vec::new();
    for table in &plan.tables {
        let partitions = topology.topics.get(&table.topic).map(Vec::as_slice).unwrap_or_default();
        for p in partitions {
            let begin = start_offset(plan.resume_offset(table.index, p.partition), p, start).map_err(|why| {
                Error::new(
                    ErrorKind::Source,
                    format!("partition {}/{}: {why}; re-bootstrap its tables", table.topic, p.partition),
                )
            })?;
            out.push(KafkaAssignment {
                table: table.index,
                topic: table.topic.clone(),
                partition: p.partition,
                start: begin,
                origin: begin,
                end: until_caught_up.then_some(p.high),
            });
        }
    }
    Ok(out)
}

/// Where a partition starts: its committed progress, or `start` without any.
pub fn start_offset(resume: Option<i64>, p: &PartitionInfo, start: StartPosition) -> std::result::Result<i64, String> {
    match resume {
        Some(next) if next < p.low => Err(format!(
            "committed up to offset {next}, but the broker's earliest offset is {}: records {next}..{} were deleted \
             (retention) before floe read them",
            p.low, p.low
        )),
        Some(next) if next > p.high => Err(format!(
            "committed up to offset {next}, but the partition ends at {} (was the topic recreated?)",
            p.high
        )),
        Some(next) => Ok(next),
        None => Ok(match start {
            StartPosition::Earliest => p.low,
            StartPosition::Latest => p.high,
        }),
    }
}

/// Samples for tables that do not exist yet: the first record with a value of each
/// partition, read from the broker.
pub struct KafkaDiscovery {
    /// Client settings.
    pub kafka: KafkaConfig,
    /// The topology read at start.
    pub topology: KafkaTopology,
    /// Topic of each table index.
    pub topics: Vec<String>,
    /// Ends retries and waits (the run is over).
    pub stop: Arc<AtomicBool>,
}

/// How long sampling a topic may wait for its records.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(60);

impl KafkaDiscovery {
    /// A consumer over every non-empty partition of table `table`'s topic, each assigned at
    /// `start(partition)`; `None` when the topic has no records.
    ///
    /// With `fresh`, the watermarks are read again (a pull during a run), else those read at
    /// start are used.
    fn reader(
        &self,
        table: u32,
        start: impl Fn(&PartitionInfo) -> i64,
        fresh: bool,
    ) -> Result<Option<(&str, Vec<PartitionInfo>, FloeConsumer)>> {
        let Some(topic) = self.topics.get(table as usize) else { return Ok(None) };
        let client: FloeConsumer = consumer(&self.kafka)?;
        let mut partitions: Vec<PartitionInfo> = self.topology.topics.get(topic).cloned().unwrap_or_default();
        if fresh {
            for p in &mut partitions {
                (p.low, p.high) = watermarks(&client, topic, p.partition, &self.stop)?;
            }
        }
        partitions.retain(|p| p.high > p.low);
        if partitions.is_empty() {
            return Ok(None);
        }
        let mut list = TopicPartitionList::new();
        for p in &partitions {
            list.add_partition_offset(topic, p.partition, Offset::Offset(start(p)))
                .map_err(|e| Error::new(ErrorKind::Source, describe(&e)))?;
        }
        client
            .assign(&list)
            .map_err(|e| Error::new(ErrorKind::Source, format!("reading `{topic}`: {}", describe(&e))))?;
        Ok(Some((topic.as_str(), partitions, client)))
    }
}

impl SchemaDiscovery for KafkaDiscovery {
    fn samples(&self, table: u32, limit: usize) -> Result<Vec<Sample>> {
        let Some((topic, partitions, client)) = self.reader(table, |p| p.low, false)? else { return Ok(Vec::new()) };
        let mut samples: BTreeMap<i32, Sample> = BTreeMap::new();
        let mut done: BTreeMap<i32, bool> = partitions.iter().map(|p| (p.partition, false)).collect();
        let started = Instant::now();
        while samples.len() < limit && done.values().any(|d| !d) {
            if started.elapsed() > SAMPLE_TIMEOUT {
                return Err(Error::new(
                    ErrorKind::Source,
                    format!(
                        "could not read a sample record of `{topic}` within {}s to learn its schema",
                        SAMPLE_TIMEOUT.as_secs()
                    ),
                ));
            }
            match client.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(e)) => {
                    tracing::warn!(topic = %topic, error = %describe(&e), "sampling: read failed, retrying")
                }
                Some(Ok(m)) => {
                    let end = partitions.iter().find(|p| p.partition == m.partition()).map_or(0, |p| p.high);
                    if done.get(&m.partition()).copied().unwrap_or(true) {
                        continue;
                    }
                    if let Some(v) = m.payload() {
                        samples.insert(m.partition(), (m.key().map(<[u8]>::to_vec), v.to_vec()));
                        done.insert(m.partition(), true);
                    } else if m.offset() + 1 >= end {
                        done.insert(m.partition(), true);
                    }
                }
            }
        }
        Ok(samples.into_values().collect())
    }

    fn newest(&self, table: u32) -> Result<Vec<(i32, i64, Sample)>> {
        /// How far back from the end to look for a record with a value (tombstones have none).
        const TAIL: i64 = 8;
        let Some((topic, partitions, client)) = self.reader(table, |p| (p.high - TAIL).max(p.low), true)? else {
            return Ok(Vec::new());
        };
        let mut newest: BTreeMap<i32, (i64, Sample)> = BTreeMap::new();
        let mut done: BTreeMap<i32, bool> = partitions.iter().map(|p| (p.partition, false)).collect();
        let started = Instant::now();
        while done.values().any(|d| !d) && started.elapsed() < SAMPLE_TIMEOUT && !self.stop.load(Ordering::Relaxed) {
            match client.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(e)) => tracing::warn!(topic = %topic, error = %describe(&e), "pull: read failed, retrying"),
                Some(Ok(m)) => {
                    let end = partitions.iter().find(|p| p.partition == m.partition()).map_or(0, |p| p.high);
                    if let Some(v) = m.payload() {
                        newest.insert(m.partition(), (m.offset(), (m.key().map(<[u8]>::to_vec), v.to_vec())));
                    }
                    if m.offset() + 1 >= end {
                        done.insert(m.partition(), true);
                    }
                }
            }
        }
        // Pull detection is best effort: a partition that did not answer in time is skipped.
        Ok(newest.into_iter().map(|(p, (o, sample))| (p, o, sample)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_progress_wins_and_gaps_are_errors() {
        let p = PartitionInfo { partition: 0, low: 5, high: 9 };
        assert_eq!(start_offset(None, &p, StartPosition::Earliest), Ok(5));
        assert_eq!(start_offset(None, &p, StartPosition::Latest), Ok(9));
        assert_eq!(start_offset(Some(7), &p, StartPosition::Latest), Ok(7));
        assert_eq!(start_offset(Some(9), &p, StartPosition::Earliest), Ok(9));
        let lost = start_offset(Some(3), &p, StartPosition::Earliest).expect_err("retention gap");
        assert!(lost.contains("records 3..5 were deleted"), "{lost}");
        assert!(start_offset(Some(10), &p, StartPosition::Earliest).expect_err("recreated").contains("recreated"));
    }
}
