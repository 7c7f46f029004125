//! The Kafka source: each worker reads the partitions assigned to it (`assign`, never group
//! rebalancing) from the offsets the tables recorded, and emits records at their epochs,
//! with progress statements, like the replay source.
//!
//! ```text
//!   partitions (round-robin over workers) ──► BaseConsumer::poll (non-blocking)
//!        ──► SourceClock (epoch per record, progress per partition and epoch)
//!        ──► records @e, SourceProgress @e        capability = clock frontier
//!   until-caught-up: a partition finishes at the high watermark seen at start
//!   continuous:      an epoch open longer than commit_interval is closed where each
//!                    partition stands; SIGINT/SIGTERM finish every partition
//! ```
//!
//! # Invariants
//! - Correctness never depends on consumer-group state: start offsets come from the
//!   tables; the group's offsets are committed after the tables commit, for dashboards.
//! - Broker errors are retried with backoff and logged; only lost offsets and failed
//!   authorization stop the pipeline.
//! - In until-caught-up mode no record at or past the start-time high watermark is
//!   emitted, so the run's commits are a function of the offsets alone.
//! - Epochs are closed by time only while the source may read (not throttled by the
//!   in-flight window): otherwise a worker ahead of the others would stay ahead, and
//!   throttled, forever (a livelock seen with two workers and a slow catalog).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use floe_engine::config::KafkaConfig;
use floe_engine::epoch::Epoch;
use floe_engine::metrics::Metrics;
use floe_engine::record::SourceRecord;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::{Scope, Stream};
use tracing::{info, warn};

use crate::committer::SourceProgress;
use crate::kafka_client::{FloeConsumer, consumer, describe, is_fatal};
use crate::plan::PlanRef;
use crate::replay_source::{SourceItem, split};
use crate::source_clock::{ClockProgress, SourceClock};

/// One partition a run reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaAssignment {
    /// Table index.
    pub table: u32,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset to read.
    pub start: i64,
    /// Where the partition's epoch grid starts (the resume offset, or `start`).
    pub origin: i64,
    /// Until-caught-up: stop before this offset (the high watermark at start).
    pub end: Option<i64>,
}

/// What the Kafka source reads and how.
#[derive(Clone, Debug)]
pub struct KafkaSourceSpec {
    /// Client settings.
    pub config: KafkaConfig,
    /// Every partition of the run, in a fixed order (worker `i % peers` reads entry `i`).
    pub assignments: Vec<KafkaAssignment>,
    /// Whether the run ends at the start-time high watermarks.
    pub until_caught_up: bool,
    /// Set to stop a continuous run (SIGINT/SIGTERM).
    pub stop: Arc<AtomicBool>,
    /// Set to end this round of a continuous run the same way (it is planned again, e.g.
    /// to resume an approved table).
    pub drain: Arc<AtomicBool>,
}

/// `(topic, partition, next offset)` to commit to the consumer group.
type GroupOffset = (String, i32, i64);

/// Records per activation before yielding.
const BATCH: usize = 4096;

fn progress_item(p: ClockProgress) -> (Epoch, SourceItem) {
    (
        p.epoch,
        SourceItem::Progress(SourceProgress { table: p.table, partition: p.partition, next_offset: p.next_offset }),
    )
}

/// The Kafka-source operator. `committed` probes the committer's output.
pub fn kafka_source<'s>(
    scope: Scope<'s, Epoch>,
    spec: Arc<KafkaSourceSpec>,
    plan: PlanRef,
    committed: ProbeHandle<Epoch>,
) -> (Stream<'s, Epoch, Vec<SourceRecord>>, Stream<'s, Epoch, Vec<SourceProgress>>) {
    let (worker, peers) = (scope.index(), scope.peers());
    let items = source::<_, timely::container::CapacityContainerBuilder<Vec<SourceItem>>, _, _>(
        scope,
        "KafkaSource",
        move |cap, info| {
            let activator = scope.activator_for(info.address);
            let mine: Vec<KafkaAssignment> = spec
                .assignments
                .iter()
                .enumerate()
                .filter(|(i, _)| i % peers == worker)
                .map(|(_, a)| a.clone())
                .collect();
            let mut clock = SourceClock::new(plan.epochs);
            let mut tables: HashMap<String, u32> = HashMap::new();
            let mut ends: HashMap<(u32, i32), i64> = HashMap::new();
            let mut tpl = TopicPartitionList::new();
            for a in &mine {
                clock.add(a.table, a.partition, a.origin, a.start);
                tables.insert(a.topic.clone(), a.table);
                if let Some(end) = a.end {
                    ends.insert((a.table, a.partition), end);
                    if a.start >= end {
                        clock.finish(a.table, a.partition);
                        continue;
                    }
                }
                if let Err(e) = tpl.add_partition_offset(&a.topic, a.partition, Offset::Offset(a.start)) {
                    plan.failure.record(format!("assigning {}/{}: {}", a.topic, a.partition, describe(&e)));
                }
            }
            let consumer: Option<FloeConsumer> = if tpl.count() == 0 {
                None
            } else {
                match consumer(&spec.config) {
                    Ok(c) => match c.assign(&tpl) {
                        Ok(()) => {
                            info!(worker, partitions = tpl.count(), "reading Kafka partitions");
                            Some(c)
                        }
                        Err(e) => {
                            plan.failure.record(format!("assigning Kafka partitions: {}", describe(&e)));
                            None
                        }
                    },
                    Err(e) => {
                        plan.failure.record(e);
                        None
                    }
                }
            };
            let mut cap: Option<Capability<Epoch>> = clock.frontier().map(|f| {
                let mut c = cap;
                c.downgrade(&f);
                c
            });
            let mut open_since = (cap.as_ref().map(|c| *c.time()), Instant::now());
            let mut backoff = Duration::from_millis(100);
            let mut last_warning: Option<Instant> = None;
            let mut last_tick = Instant::now();
            let mut paused: HashSet<(u32, i32)> = HashSet::new();
            let mut group_commits: VecDeque<(Epoch, Vec<GroupOffset>)> = VecDeque::new();
            let topic_of: HashMap<u32, String> = tables.iter().map(|(t, i)| (*i, t.clone())).collect();
            activator.activate();

            move |output| {
                let Some(held) = cap.as_mut() else { return };
                if plan.failure.get().is_some() {
                    return;
                }
                let mut items: Vec<(Epoch, SourceItem)> = Vec::new();
                let stopping = spec.stop.load(Ordering::Relaxed) || spec.drain.load(Ordering::Relaxed);
                let frontier = *held.time();
                let throttled = plan.must_wait(frontier, &committed);
                let mut read = 0u64;
                let mut more = false;
                if stopping {
                    items.extend(clock.finish_all().into_iter().map(progress_item));
                } else if let (Some(consumer), false) = (&consumer, throttled) {
                    for _ in 0..BATCH {
                        match consumer.poll(Duration::ZERO) {
                            None => break,
                            Some(Ok(m)) => {
                                backoff = Duration::from_millis(100);
                                let Some(&table) = tables.get(m.topic()) else { continue };
                                let (partition, offset) = (m.partition(), m.offset());
                                let end = ends.get(&(table, partition)).copied();
                                if end.is_some_and(|e| offset >= e) || clock.is_finished(table, partition) {
                                    // Past the start-time high watermark: not this run's.
                                    let _ = consumer.pause(&single(m.topic(), partition));
                                    continue;
                                }
                                let Some((epoch, progress)) = clock.observe(table, partition, offset) else { continue };
                                items.extend(progress.into_iter().flatten().map(progress_item));
                                items.push((
                                    epoch,
                                    SourceItem::Record(SourceRecord::new(
                                        table,
                                        partition,
                                        offset,
                                        m.key().map(<[u8]>::to_vec),
                                        m.payload().map(<[u8]>::to_vec),
                                    )),
                                ));
                                read += 1;
                                if end.is_some_and(|e| offset + 1 >= e) {
                                    items.extend(clock.finish(table, partition).map(progress_item));
                                    let _ = consumer.pause(&single(m.topic(), partition));
                                }
                                more = true;
                            }
                            Some(Err(e)) if is_fatal(&e) => {
                                plan.failure.record(format!("reading from Kafka: {}", describe(&e)));
                                return;
                            }
                            Some(Err(e)) => {
                                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                                    warn!(error = %describe(&e), "Kafka read failed; retrying with backoff");
                                    last_warning = Some(Instant::now());
                                }
                                activator.activate_after(backoff);
                                backoff = (backoff * 2).min(Duration::from_secs(5));
                                more = false;
                                break;
                            }
                        }
                    }
                }

                // Continuous runs let no partition hold the others back for long: one that
                // is caught up joins the leading epoch, and an epoch open longer than the
                // commit interval is closed where each partition stands. High watermarks
                // come with the client's statistics, once a second: read them then (and
                // when finishing), for the lag and to find caught-up partitions.
                if let Some(consumer) = &consumer
                    && (last_tick.elapsed() >= Duration::from_secs(1) || clock.frontier().is_none())
                {
                    last_tick = Instant::now();
                    tracing::debug!(worker, frontier = ?clock.frontier(), held = frontier, throttled, paused = ?paused, positions = ?mine.iter().map(|a| (a.table, a.partition, clock.position(a.table, a.partition), clock.epoch(a.table, a.partition))).collect::<Vec<_>>(), "source tick");
                    let lift_to = if spec.until_caught_up || stopping { None } else { clock.leader() };
                    // A run that ends before the first statistics (a stop within a second
                    // of the start) asks the broker, so that the summary still reports the
                    // lag at exit; after one failed ask it stops asking (broker down).
                    let mut ask_broker = clock.frontier().is_none();
                    for a in &mine {
                        let mut high = consumer.context().high_watermark(&a.topic, a.partition);
                        if high.is_none() && ask_broker {
                            match consumer.fetch_watermarks(&a.topic, a.partition, Duration::from_secs(2)) {
                                Ok((_, h)) => high = Some(h),
                                Err(_) => ask_broker = false,
                            }
                        }
                        let (Some(high), Some(pos)) = (high, clock.position(a.table, a.partition)) else {
                            continue;
                        };
                        plan.metrics.set_lag(&a.topic, a.partition, (high - pos).max(0));
                        if let Some(leader) = lift_to.filter(|_| pos >= high) {
                            items.extend(clock.lift(a.table, a.partition, leader).map(progress_item));
                        }
                    }
                }
                // Not while throttled: that is waiting for commits, not idling. A worker
                // that closed epochs by time while throttled would stay ahead of the others
                // by as much as it started, and so throttled, for good.
                if !spec.until_caught_up
                    && !stopping
                    && !throttled
                    && let Some(f) = clock.frontier()
                {
                    if open_since.0 != Some(f) {
                        open_since = (Some(f), Instant::now());
                    } else if open_since.1.elapsed() >= spec.config.commit_interval {
                        items.extend(clock.close(f).into_iter().map(progress_item));
                    }
                }

                // Bounded memory: a partition more than the in-flight window ahead of the
                // frontier waits for the others.
                if let (Some(consumer), Some(f)) = (&consumer, clock.frontier()) {
                    for a in &mine {
                        let ahead = clock.epoch(a.table, a.partition).is_some_and(|e| e > f + plan.max_inflight_epochs);
                        let key = (a.table, a.partition);
                        if clock.is_finished(a.table, a.partition) {
                            continue;
                        }
                        if ahead && paused.insert(key) {
                            tracing::debug!(topic = %a.topic, partition = a.partition, epoch = ?clock.epoch(a.table, a.partition), frontier = f, "pausing a partition ahead of the others");
                            let _ = consumer.pause(&single(&a.topic, a.partition));
                        } else if !ahead && paused.remove(&key) {
                            tracing::debug!(topic = %a.topic, partition = a.partition, frontier = f, "resuming a partition");
                            let _ = consumer.resume(&single(&a.topic, a.partition));
                        }
                    }
                }

                // Emit, grouped by epoch (none before the held capability).
                items.sort_by_key(|(e, _)| *e);
                let mut items = items.into_iter().peekable();
                while let Some((first_epoch, first)) = items.next() {
                    let epoch = first_epoch.max(*held.time());
                    let at = held.delayed(&epoch);
                    let mut session = output.session(&at);
                    let mut progress: Vec<GroupOffset> = Vec::new();
                    let mut give = |item: SourceItem| {
                        if let SourceItem::Progress(p) = &item
                            && let Some(t) = topic_of.get(&p.table)
                        {
                            progress.push((t.clone(), p.partition, p.next_offset));
                        }
                        session.give(item);
                    };
                    give(first);
                    while let Some((_, item)) = items.next_if(|(e, _)| (*e).max(epoch) == epoch) {
                        give(item);
                    }
                    if !progress.is_empty() {
                        group_commits.push_back((epoch, progress));
                    }
                }
                Metrics::add(&plan.metrics.records_in, read);

                // Consumer-group offsets (dashboards only) once the tables committed.
                if let Some(consumer) = &consumer {
                    while let Some((epoch, _)) = group_commits.front() {
                        if committed.less_equal(epoch) {
                            break;
                        }
                        let Some((_, offsets)) = group_commits.pop_front() else { break };
                        let mut list = TopicPartitionList::new();
                        for (t, p, o) in offsets {
                            let _ = list.add_partition_offset(&t, p, Offset::Offset(o));
                        }
                        let _ = consumer.commit(&list, CommitMode::Async);
                    }
                }

                match clock.frontier() {
                    Some(f) => {
                        held.downgrade(&f.max(*held.time()));
                        if more {
                            activator.activate();
                        } else if !stopping {
                            activator.activate_after(Duration::from_millis(10));
                        }
                    }
                    None => cap = None,
                }
            }
        },
    );
    split(items)
}

fn single(topic: &str, partition: i32) -> TopicPartitionList {
    let mut l = TopicPartitionList::new();
    l.add_partition(topic, partition);
    l
}
